//! [`SimFs`]: an in-memory filesystem for the simulator and the property
//! tests, with the failure modes a real disk has. Synchronous and pure: the
//! randomness comes from a seed, and latency is a number the caller sleeps.
//!
//! # Fault model
//!
//! - A file's bytes are durable only up to its last successful
//!   [`Fs::sync`]; a directory's entries (creations, renames, removals) only
//!   as of its last [`Fs::sync_dir`].
//! - [`SimFs::crash`] keeps every durable byte plus a random prefix of the
//!   unsynced ones (which tears the last write anywhere, even mid-record);
//!   an unsynced truncation may be undone. Each directory entry changed
//!   since the directory was synced independently keeps its old or its new
//!   state: an unsynced creation, rename or removal may be lost.
//! - Faults, per op: a write or an fsync fails with EIO or ENOSPC
//!   ([`SimFs::fail_next`], or at random rates with [`SimFs::set_faults`]);
//!   a failed write may still land a prefix of its bytes, and a failed fsync
//!   makes nothing durable. A full device ([`SimFs::set_full`]) refuses
//!   every write with ENOSPC. [`SimFs::die_after`] fails every call after
//!   the next `n` with EIO (a crash in the middle of a multi-step write). A
//!   slow op adds latency that the caller takes
//!   with [`SimFs::take_latency_ns`] and sleeps.
//! - Directories are created durable (the data dir makes its one directory
//!   once, at start).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use tern_core::rng::Rng;

use crate::fs::{Fs, FsError, FsOp, EIO, ENOSPC};

#[derive(Clone, Debug, Default)]
struct Inode {
    /// What a reader sees now.
    data: Vec<u8>,
    /// What survives a crash.
    durable: Vec<u8>,
}

/// Random fault rates, each in parts per million of the ops it applies to.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultRates {
    pub write_eio_ppm: u64,
    pub write_enospc_ppm: u64,
    pub sync_eio_ppm: u64,
    /// A write or fsync that is slow, by `slow_ns` (lo, hi).
    pub slow_ppm: u64,
    pub slow_ns: (u64, u64),
}

/// What a crash did.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct CrashReport {
    /// Unsynced bytes that reached the disk anyway, and those lost.
    pub bytes_kept: u64,
    pub bytes_lost: u64,
    /// Directory entries that reverted to their last synced state.
    pub entries_reverted: u64,
}

/// Counters of what the filesystem was asked to do.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SimFsStats {
    pub writes: u64,
    pub bytes_written: u64,
    pub syncs: u64,
    pub dir_syncs: u64,
    pub renames: u64,
    pub removes: u64,
    /// [`Fs::start_writeback`] calls (they make nothing durable).
    pub writebacks: u64,
    pub faults: u64,
}

/// The in-memory filesystem (see the module docs for its fault model).
#[derive(Clone, Debug)]
pub struct SimFs {
    rng: Rng,
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    /// The namespace now, and as of each directory's last sync.
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    rates: FaultRates,
    /// One-shot faults: the next op of this kind fails with this errno.
    planned: Vec<(FsOp, i32)>,
    full: bool,
    /// Mutating calls left before the machine "dies": every call after
    /// that fails with EIO until [`SimFs::crash`].
    calls_left: Option<u64>,
    latency_ns: u64,
    stats: SimFsStats,
}

impl SimFs {
    pub fn new(seed: u64) -> SimFs {
        SimFs {
            rng: Rng::new(seed),
            inodes: BTreeMap::new(),
            next_inode: 1,
            names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
            dirs: BTreeSet::new(),
            rates: FaultRates::default(),
            planned: Vec::new(),
            full: false,
            calls_left: None,
            latency_ns: 0,
            stats: SimFsStats::default(),
        }
    }

    pub fn set_faults(&mut self, rates: FaultRates) {
        self.rates = rates;
    }

    /// The next op of kind `op` (`FsOp::Write`, `FsOp::Sync`,
    /// `FsOp::SyncDir` or `FsOp::Remove`) fails with `errno` ([`EIO`] or
    /// [`ENOSPC`]).
    pub fn fail_next(&mut self, op: FsOp, errno: i32) {
        self.planned.push((op, errno));
    }

    /// A full device: every write fails with ENOSPC until cleared.
    pub fn set_full(&mut self, full: bool) {
        self.full = full;
    }

    /// Lets `n` more mutating calls (create, write, fsync, rename, remove,
    /// truncate) through, then fails every call with EIO until
    /// [`SimFs::crash`]: a crash at any point inside a multi-step write.
    pub fn die_after(&mut self, n: u64) {
        self.calls_left = Some(n);
    }

    /// Latency the ops since the last call added, for the caller to sleep.
    pub fn take_latency_ns(&mut self) -> u64 {
        std::mem::take(&mut self.latency_ns)
    }

    pub fn stats(&self) -> SimFsStats {
        self.stats
    }

    /// Which file `path` names now (its inode number), if any: two names
    /// with the same number are one file, renamed or rewritten in place.
    pub fn inode_of(&self, path: &Path) -> Option<u64> {
        self.names.get(path).copied()
    }

    /// Bytes of every file that a crash keeps, and those written since
    /// their file's last fsync (which a crash may lose).
    pub fn byte_counts(&self) -> (u64, u64) {
        let mut durable = 0;
        let mut unsynced = 0;
        for ino in self.names.values() {
            let inode = &self.inodes[ino];
            durable += inode.durable.len() as u64;
            unsynced += inode.data.len().saturating_sub(inode.durable.len()) as u64;
        }
        (durable, unsynced)
    }

    /// The files (as readers see them now), by path.
    pub fn files(&self) -> Vec<PathBuf> {
        self.names.keys().cloned().collect()
    }

    /// A file's bytes as a reader sees them now.
    pub fn contents(&self, path: &Path) -> Option<&[u8]> {
        let ino = self.names.get(path)?;
        Some(&self.inodes[ino].data)
    }

    /// Overwrites the byte at `offset` of a file, durably (damage on the
    /// platter, for corruption tests). Returns whether the file had it.
    pub fn flip_byte(&mut self, path: &Path, offset: usize, mask: u8) -> bool {
        let Some(ino) = self.names.get(path) else {
            return false;
        };
        let inode = self.inodes.get_mut(ino).expect("linked");
        if offset >= inode.data.len() {
            return false;
        }
        inode.data[offset] ^= mask;
        if offset < inode.durable.len() {
            inode.durable[offset] ^= mask;
        }
        true
    }

    /// A power cut (see the module docs). Afterwards every file holds what
    /// survived, all of it durable.
    pub fn crash(&mut self) -> CrashReport {
        let mut report = CrashReport::default();
        let all: BTreeSet<PathBuf> = self
            .names
            .keys()
            .chain(self.durable_names.keys())
            .cloned()
            .collect();
        for name in all {
            let now = self.names.get(&name).copied();
            let then = self.durable_names.get(&name).copied();
            if now != then && self.rng.chance(1, 2) {
                report.entries_reverted += 1;
                match then {
                    Some(ino) => self.names.insert(name, ino),
                    None => self.names.remove(&name),
                };
            }
        }
        self.durable_names = self.names.clone();
        let linked: BTreeSet<u64> = self.names.values().copied().collect();
        self.inodes.retain(|ino, _| linked.contains(ino));
        for inode in self.inodes.values_mut() {
            let kept = if inode.data.starts_with(&inode.durable) {
                let extra = inode.data.len() - inode.durable.len();
                let keep = self.rng.range(0, extra as u64 + 1) as usize;
                report.bytes_kept += keep as u64;
                report.bytes_lost += (extra - keep) as u64;
                inode.data[..inode.durable.len() + keep].to_vec()
            } else if self.rng.chance(1, 2) {
                // An unsynced truncation (or rewrite) undone.
                inode.durable.clone()
            } else {
                let common = inode
                    .data
                    .iter()
                    .zip(&inode.durable)
                    .take_while(|(a, b)| a == b)
                    .count();
                let keep = self.rng.range(common as u64, inode.data.len() as u64 + 1) as usize;
                inode.data[..keep].to_vec()
            };
            inode.data = kept.clone();
            inode.durable = kept;
        }
        self.planned.clear();
        self.calls_left = None;
        self.latency_ns = 0;
        report
    }

    fn err(op: FsOp, path: &Path, kind: io::ErrorKind, errno: Option<i32>, msg: &str) -> FsError {
        FsError {
            op,
            path: path.to_path_buf(),
            kind,
            errno,
            message: msg.to_string(),
        }
    }

    fn errno_error(op: FsOp, path: &Path, errno: i32) -> FsError {
        match errno {
            ENOSPC => Self::err(
                op,
                path,
                io::ErrorKind::StorageFull,
                Some(ENOSPC),
                "No space left on device",
            ),
            n => Self::err(
                op,
                path,
                io::ErrorKind::Other,
                Some(n),
                "Input/output error",
            ),
        }
    }

    fn not_found(op: FsOp, path: &Path) -> FsError {
        Self::err(
            op,
            path,
            io::ErrorKind::NotFound,
            Some(2),
            "No such file or directory",
        )
    }

    fn inode(&self, op: FsOp, path: &Path) -> Result<u64, FsError> {
        self.names
            .get(path)
            .copied()
            .ok_or_else(|| Self::not_found(op, path))
    }

    /// Counts a mutating call; EIO once the machine is dead.
    fn alive(&mut self, op: FsOp, path: &Path) -> Result<(), FsError> {
        match &mut self.calls_left {
            Some(0) => Err(Self::errno_error(op, path, EIO)),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// A planned fault for this op, if one is due.
    fn planned_fault(&mut self, op: FsOp, path: &Path) -> Result<(), FsError> {
        if let Some(i) = self.planned.iter().position(|(o, _)| *o == op) {
            let (_, errno) = self.planned.remove(i);
            self.stats.faults += 1;
            return Err(Self::errno_error(op, path, errno));
        }
        Ok(())
    }

    /// A planned or random fault for this op, and any slowness.
    fn fault(&mut self, op: FsOp, path: &Path) -> Result<(), FsError> {
        self.planned_fault(op, path)?;
        if self.rates.slow_ppm > 0 && self.rng.chance(self.rates.slow_ppm, 1_000_000) {
            let (lo, hi) = self.rates.slow_ns;
            self.latency_ns += self.rng.range(lo, hi.max(lo) + 1);
        }
        let errno = match op {
            FsOp::Write if self.full => Some(ENOSPC),
            FsOp::Write if self.rng.chance(self.rates.write_eio_ppm, 1_000_000) => Some(EIO),
            FsOp::Write if self.rng.chance(self.rates.write_enospc_ppm, 1_000_000) => Some(ENOSPC),
            FsOp::Sync if self.rng.chance(self.rates.sync_eio_ppm, 1_000_000) => Some(EIO),
            _ => None,
        };
        match errno {
            Some(n) => {
                self.stats.faults += 1;
                Err(Self::errno_error(op, path, n))
            }
            None => Ok(()),
        }
    }

    fn parent_exists(&self, op: FsOp, path: &Path) -> Result<(), FsError> {
        match path.parent() {
            Some(p) if self.dirs.contains(p) => Ok(()),
            _ => Err(Self::not_found(op, path)),
        }
    }
}

impl Fs for SimFs {
    fn create(&mut self, path: &Path) -> Result<(), FsError> {
        self.alive(FsOp::Create, path)?;
        self.parent_exists(FsOp::Create, path)?;
        if let Some(ino) = self.names.get(path) {
            self.inodes.get_mut(ino).expect("linked").data.clear();
            return Ok(());
        }
        let ino = self.next_inode;
        self.next_inode += 1;
        self.inodes.insert(ino, Inode::default());
        self.names.insert(path.to_path_buf(), ino);
        Ok(())
    }

    fn append(&mut self, path: &Path, bytes: &[u8]) -> Result<(), FsError> {
        self.alive(FsOp::Write, path)?;
        let ino = self.inode(FsOp::Write, path)?;
        self.stats.writes += 1;
        if let Err(e) = self.fault(FsOp::Write, path) {
            // A failed write may still have landed some of its bytes.
            let landed = self.rng.range(0, bytes.len() as u64 + 1) as usize;
            let inode = self.inodes.get_mut(&ino).expect("linked");
            inode.data.extend_from_slice(&bytes[..landed]);
            return Err(e);
        }
        self.stats.bytes_written += bytes.len() as u64;
        let inode = self.inodes.get_mut(&ino).expect("linked");
        inode.data.extend_from_slice(bytes);
        Ok(())
    }

    fn write_at(&mut self, path: &Path, offset: u64, bytes: &[u8]) -> Result<(), FsError> {
        self.alive(FsOp::Write, path)?;
        let ino = self.inode(FsOp::Write, path)?;
        let len = self.inodes[&ino].data.len();
        let start = match usize::try_from(offset) {
            Ok(start) if start <= len => start,
            _ => {
                return Err(Self::err(
                    FsOp::Write,
                    path,
                    io::ErrorKind::InvalidInput,
                    None,
                    "write past the end of the file",
                ))
            }
        };
        self.stats.writes += 1;
        let failed = self.fault(FsOp::Write, path);
        // A failed write may still have landed some of its bytes.
        let landed = match failed {
            Ok(()) => bytes.len(),
            Err(_) => self.rng.range(0, bytes.len() as u64 + 1) as usize,
        };
        if failed.is_ok() {
            self.stats.bytes_written += bytes.len() as u64;
        }
        let data = &mut self.inodes.get_mut(&ino).expect("linked").data;
        let end = start + landed;
        if end > data.len() {
            data.resize(end, 0);
        }
        data[start..end].copy_from_slice(&bytes[..landed]);
        failed
    }

    fn read(&mut self, path: &Path) -> Result<Vec<u8>, FsError> {
        let ino = self.inode(FsOp::Read, path)?;
        Ok(self.inodes[&ino].data.clone())
    }

    fn read_range(&mut self, path: &Path, offset: u64, len: usize) -> Result<Vec<u8>, FsError> {
        let ino = self.inode(FsOp::Read, path)?;
        let data = &self.inodes[&ino].data;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let end = start.saturating_add(len).min(data.len());
        Ok(data[start..end].to_vec())
    }

    fn sync(&mut self, path: &Path) -> Result<(), FsError> {
        self.alive(FsOp::Sync, path)?;
        let ino = self.inode(FsOp::Sync, path)?;
        self.stats.syncs += 1;
        self.fault(FsOp::Sync, path)?;
        let inode = self.inodes.get_mut(&ino).expect("linked");
        inode.durable = inode.data.clone();
        Ok(())
    }

    /// Makes nothing durable, as on Linux: a crash still keeps a random
    /// prefix of the unsynced bytes, whatever was started early.
    fn start_writeback(&mut self, path: &Path) -> Result<(), FsError> {
        self.alive(FsOp::Write, path)?;
        self.inode(FsOp::Write, path)?;
        self.stats.writebacks += 1;
        Ok(())
    }

    fn rename(&mut self, from: &Path, to: &Path) -> Result<(), FsError> {
        self.alive(FsOp::Rename, to)?;
        self.parent_exists(FsOp::Rename, to)?;
        let ino = self.inode(FsOp::Rename, from)?;
        self.stats.renames += 1;
        self.names.remove(from);
        self.names.insert(to.to_path_buf(), ino);
        Ok(())
    }

    fn remove(&mut self, path: &Path) -> Result<(), FsError> {
        self.alive(FsOp::Remove, path)?;
        self.inode(FsOp::Remove, path)?;
        self.planned_fault(FsOp::Remove, path)?;
        self.stats.removes += 1;
        self.names.remove(path);
        Ok(())
    }

    fn list(&mut self, dir: &Path) -> Result<Vec<String>, FsError> {
        if !self.dirs.contains(dir) {
            return Err(Self::not_found(FsOp::List, dir));
        }
        Ok(self
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    fn sync_dir(&mut self, dir: &Path) -> Result<(), FsError> {
        if !self.dirs.contains(dir) {
            return Err(Self::not_found(FsOp::SyncDir, dir));
        }
        self.alive(FsOp::SyncDir, dir)?;
        self.planned_fault(FsOp::SyncDir, dir)?;
        self.stats.dir_syncs += 1;
        self.durable_names.retain(|p, _| p.parent() != Some(dir));
        for (p, ino) in &self.names {
            if p.parent() == Some(dir) {
                self.durable_names.insert(p.clone(), *ino);
            }
        }
        Ok(())
    }

    fn truncate(&mut self, path: &Path, len: u64) -> Result<(), FsError> {
        self.alive(FsOp::Truncate, path)?;
        let ino = self.inode(FsOp::Truncate, path)?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        self.inodes
            .get_mut(&ino)
            .expect("linked")
            .data
            .resize(len, 0);
        Ok(())
    }

    fn create_dir_all(&mut self, dir: &Path) -> Result<bool, FsError> {
        let mut created = false;
        for a in dir.ancestors() {
            if a.as_os_str().is_empty() {
                continue;
            }
            created |= self.dirs.insert(a.to_path_buf());
        }
        Ok(created)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs() -> (SimFs, PathBuf) {
        let mut fs = SimFs::new(7);
        let dir = PathBuf::from("/d");
        fs.create_dir_all(&dir).unwrap();
        (fs, dir)
    }

    #[test]
    fn synced_bytes_and_entries_survive_every_crash() {
        for seed in 0..50 {
            let (mut fs, dir) = fs();
            fs.rng = Rng::new(seed);
            let f = dir.join("f");
            fs.create(&f).unwrap();
            fs.append(&f, b"hello").unwrap();
            fs.sync(&f).unwrap();
            fs.sync_dir(&dir).unwrap();
            fs.append(&f, b" world").unwrap();
            fs.crash();
            let got = fs.contents(&f).expect("a synced entry survives");
            assert!(got.starts_with(b"hello") && b"hello world".starts_with(got));
        }
    }

    /// `write_at` overwrites and extends, refuses a hole, and an unsynced
    /// overwrite is, after a crash, the synced bytes or the new ones cut
    /// somewhere past where they first differ: never anything else.
    #[test]
    fn an_overwrite_in_place_is_kept_in_part_or_undone_by_a_crash() {
        let mut outcomes = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let (mut fs, dir) = fs();
            fs.rng = Rng::new(seed);
            let f = dir.join("f");
            fs.create(&f).unwrap();
            fs.append(&f, b"0123456789").unwrap();
            fs.sync(&f).unwrap();
            fs.sync_dir(&dir).unwrap();
            fs.write_at(&f, 4, b"abcdefgh").unwrap();
            assert_eq!(fs.contents(&f).unwrap(), b"0123abcdefgh");
            assert!(fs.write_at(&f, 13, b"x").is_err(), "a hole");
            fs.crash();
            let got = fs.contents(&f).expect("synced entry").to_vec();
            assert!(
                got == b"0123456789" || (got.len() >= 4 && b"0123abcdefgh".starts_with(&got)),
                "seed {seed}: {got:?}"
            );
            outcomes.insert(got);
        }
        assert!(outcomes.len() > 2, "{outcomes:?}");
    }

    #[test]
    fn an_unsynced_creation_rename_or_removal_can_be_lost() {
        let mut lost = [false; 3];
        let mut kept = [false; 3];
        for seed in 0..64 {
            let (mut fs, dir) = fs();
            fs.rng = Rng::new(seed);
            let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c"));
            fs.create(&a).unwrap();
            fs.create(&c).unwrap();
            fs.sync_dir(&dir).unwrap();
            fs.rename(&a, &b).unwrap();
            fs.remove(&c).unwrap();
            fs.create(&dir.join("new")).unwrap();
            fs.crash();
            let names = fs.list(&dir).unwrap();
            for (i, (name, after)) in [("b", true), ("c", false), ("new", true)]
                .into_iter()
                .enumerate()
            {
                if names.iter().any(|n| n == name) == after {
                    kept[i] = true;
                } else {
                    lost[i] = true;
                }
            }
        }
        assert_eq!(lost, [true; 3], "each unsynced change is sometimes lost");
        assert_eq!(kept, [true; 3], "and sometimes kept");
    }

    #[test]
    fn a_crash_can_tear_the_last_write_anywhere() {
        let mut cuts = BTreeSet::new();
        for seed in 0..200 {
            let (mut fs, dir) = fs();
            fs.rng = Rng::new(seed);
            let f = dir.join("f");
            fs.create(&f).unwrap();
            fs.sync_dir(&dir).unwrap();
            fs.append(&f, b"0123456789").unwrap();
            fs.crash();
            cuts.insert(fs.contents(&f).unwrap().len());
        }
        assert_eq!(cuts, (0..=10).collect());
    }

    #[test]
    fn planned_faults_fail_the_next_write_or_fsync_with_their_errno() {
        let (mut fs, dir) = fs();
        let f = dir.join("f");
        fs.create(&f).unwrap();
        fs.fail_next(FsOp::Sync, EIO);
        fs.append(&f, b"x").unwrap();
        let e = fs.sync(&f).unwrap_err();
        assert_eq!(
            (e.op, e.errno, e.kind),
            (FsOp::Sync, Some(EIO), io::ErrorKind::Other)
        );
        fs.fail_next(FsOp::Write, ENOSPC);
        let e = fs.append(&f, b"y").unwrap_err();
        assert!(e.is_no_space());
        assert_eq!(e.path, f);
        fs.set_full(true);
        assert!(fs.append(&f, b"z").unwrap_err().is_no_space());
        fs.set_full(false);
        fs.append(&f, b"z").unwrap();
    }

    #[test]
    fn slow_ops_report_latency_for_the_caller_to_sleep() {
        let (mut fs, dir) = fs();
        fs.set_faults(FaultRates {
            slow_ppm: 1_000_000,
            slow_ns: (5_000, 5_000),
            ..FaultRates::default()
        });
        let f = dir.join("f");
        fs.create(&f).unwrap();
        fs.append(&f, b"x").unwrap();
        fs.sync(&f).unwrap();
        assert_eq!(fs.take_latency_ns(), 10_000);
        assert_eq!(fs.take_latency_ns(), 0);
    }
}
