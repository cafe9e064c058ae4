//! The simulated filesystem under each simulated node's data dir.
//!
//! `SimFs` itself lives in `tern-storage` (`tern_storage::sim_fs`, which
//! documents its fault model), beside the data dir it is built to break: it
//! is synchronous and pure (a seed in, latency out), so the storage crate's
//! own property tests crash and fault-inject the very same filesystem
//! without madsim. Here the world keeps one per server, outside the node so
//! it outlives a kill, and hands each incarnation of the node a
//! [`SharedFs`] through which the node's real data-dir code
//! (`tern_storage::DataDir`, the daemon's) reads and writes it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub use tern_storage::{
    read_snapshot_data, remove_superseded, write_snapshot_file, CrashReport, DataDir, FaultRates,
    Fs, FsError, FsOp, SimFs, SimFsStats, SnapshotLane, Storage, StorageError, EIO, ENOSPC,
};

/// Where a simulated server's data dir is, on its own `SimFs`.
pub const DATA_DIR: &str = "/data";

/// One server's filesystem, owned by the world, and the incarnation of the
/// node allowed to touch it: a crash moves the incarnation on, so a task of
/// a dead incarnation (a kill is only as prompt as the executor) gets EIO
/// instead of writing behind the new one's back.
#[derive(Clone, Debug)]
pub struct FsSlot {
    fs: Arc<Mutex<SimFs>>,
    incarnation: Arc<AtomicU64>,
}

impl FsSlot {
    pub fn new(seed: u64) -> FsSlot {
        FsSlot {
            fs: Arc::new(Mutex::new(SimFs::new(seed))),
            incarnation: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, SimFs> {
        self.fs.lock().unwrap()
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation.load(Ordering::SeqCst)
    }

    /// A power cut: the filesystem keeps what it keeps, and the current
    /// incarnation's handles stop working.
    pub fn crash(&self) -> CrashReport {
        self.incarnation.fetch_add(1, Ordering::SeqCst);
        self.lock().crash()
    }

    /// The handle the current incarnation of the node uses.
    pub fn handle(&self) -> SharedFs {
        SharedFs {
            slot: self.clone(),
            incarnation: self.incarnation(),
        }
    }
}

/// An incarnation's handle on its server's `SimFs`: the data dir's `Fs`.
#[derive(Debug)]
pub struct SharedFs {
    slot: FsSlot,
    incarnation: u64,
}

impl SharedFs {
    fn fs(&self, op: FsOp, path: &Path) -> Result<MutexGuard<'_, SimFs>, FsError> {
        if self.slot.incarnation() != self.incarnation {
            return Err(FsError {
                op,
                path: path.to_path_buf(),
                kind: std::io::ErrorKind::Other,
                errno: Some(EIO),
                message: "this incarnation of the node was killed".into(),
            });
        }
        Ok(self.slot.lock())
    }

    /// Takes the latency the filesystem's slow ops added, to sleep it.
    pub fn take_latency_ns(&self) -> u64 {
        self.slot.lock().take_latency_ns()
    }
}

impl Fs for SharedFs {
    fn create(&mut self, path: &Path) -> Result<(), FsError> {
        self.fs(FsOp::Create, path)?.create(path)
    }
    fn append(&mut self, path: &Path, bytes: &[u8]) -> Result<(), FsError> {
        self.fs(FsOp::Write, path)?.append(path, bytes)
    }
    fn write_at(&mut self, path: &Path, offset: u64, bytes: &[u8]) -> Result<(), FsError> {
        self.fs(FsOp::Write, path)?.write_at(path, offset, bytes)
    }
    fn read(&mut self, path: &Path) -> Result<Vec<u8>, FsError> {
        self.fs(FsOp::Read, path)?.read(path)
    }
    fn read_range(&mut self, path: &Path, offset: u64, len: usize) -> Result<Vec<u8>, FsError> {
        self.fs(FsOp::Read, path)?.read_range(path, offset, len)
    }
    fn sync(&mut self, path: &Path) -> Result<(), FsError> {
        self.fs(FsOp::Sync, path)?.sync(path)
    }
    fn start_writeback(&mut self, path: &Path) -> Result<(), FsError> {
        self.fs(FsOp::Write, path)?.start_writeback(path)
    }
    fn rename(&mut self, from: &Path, to: &Path) -> Result<(), FsError> {
        self.fs(FsOp::Rename, from)?.rename(from, to)
    }
    fn remove(&mut self, path: &Path) -> Result<(), FsError> {
        self.fs(FsOp::Remove, path)?.remove(path)
    }
    fn list(&mut self, dir: &Path) -> Result<Vec<String>, FsError> {
        self.fs(FsOp::List, dir)?.list(dir)
    }
    fn sync_dir(&mut self, dir: &Path) -> Result<(), FsError> {
        self.fs(FsOp::SyncDir, dir)?.sync_dir(dir)
    }
    fn truncate(&mut self, path: &Path, len: u64) -> Result<(), FsError> {
        self.fs(FsOp::Truncate, path)?.truncate(path, len)
    }
    fn create_dir_all(&mut self, dir: &Path) -> Result<bool, FsError> {
        self.fs(FsOp::CreateDir, dir)?.create_dir_all(dir)
    }
}

/// The log segments of a data dir on `fs`, oldest first.
pub fn segments(fs: &SimFs) -> Vec<PathBuf> {
    let raft = Path::new(DATA_DIR).join("raft");
    fs.files()
        .into_iter()
        .filter(|p| {
            p.parent() == Some(raft.as_path())
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("log-"))
        })
        .collect()
}
