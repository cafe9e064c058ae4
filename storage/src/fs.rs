//! The few filesystem moves the data dir is built from, as a trait: [`StdFs`]
//! does them on real files, [`crate::SimFs`] in memory with crashes and
//! injected faults. Paths name files; there are no handles, so a simulated
//! crash has nothing to invalidate.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Which move failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FsOp {
    Create,
    Write,
    Read,
    Sync,
    Rename,
    Remove,
    List,
    SyncDir,
    Truncate,
    CreateDir,
}

impl fmt::Display for FsOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FsOp::Create => "create",
            FsOp::Write => "write",
            FsOp::Read => "read",
            FsOp::Sync => "fsync",
            FsOp::Rename => "rename",
            FsOp::Remove => "remove",
            FsOp::List => "list",
            FsOp::SyncDir => "fsync of directory",
            FsOp::Truncate => "truncate",
            FsOp::CreateDir => "create directory",
        })
    }
}

/// A failed move: what, on which path, and the OS's kind and errno (the
/// simulated filesystem gives the errno it pretends: 5 for EIO, 28 for
/// ENOSPC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsError {
    pub op: FsOp,
    pub path: PathBuf,
    pub kind: io::ErrorKind,
    pub errno: Option<i32>,
    pub message: String,
}

/// Linux's errno for an I/O error.
pub const EIO: i32 = 5;
/// Linux's errno for a full device.
pub const ENOSPC: i32 = 28;

impl FsError {
    pub fn from_io(op: FsOp, path: &Path, e: &io::Error) -> FsError {
        FsError {
            op,
            path: path.to_path_buf(),
            kind: e.kind(),
            errno: e.raw_os_error(),
            message: e.to_string(),
        }
    }

    /// The device is full (ENOSPC): nothing is wrong with what is on disk.
    pub fn is_no_space(&self) -> bool {
        self.kind == io::ErrorKind::StorageFull || self.errno == Some(ENOSPC)
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == io::ErrorKind::NotFound
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.op, self.path.display(), self.message)?;
        match self.errno {
            Some(n) => write!(f, " (errno {n})"),
            None => write!(f, " ({:?})", self.kind),
        }
    }
}

impl std::error::Error for FsError {}

/// What the data dir needs of a filesystem. Every method names its file;
/// "durable" means it survives a crash. A directory's entries (a creation,
/// rename or removal) are durable only after [`Fs::sync_dir`] of it; a
/// file's bytes only after [`Fs::sync`] of it.
pub trait Fs {
    /// Creates `path` empty (replacing any file there).
    fn create(&mut self, path: &Path) -> Result<(), FsError>;
    /// Writes `bytes` at the end of `path`, which exists.
    fn append(&mut self, path: &Path, bytes: &[u8]) -> Result<(), FsError>;
    /// Writes `bytes` at `offset` of `path`, which exists, over what is
    /// there and past its end if they reach it (`offset` is at most the
    /// file's length: no holes). How a superseded snapshot file is reused
    /// for the next one, in place: no blocks freed and allocated again.
    fn write_at(&mut self, path: &Path, offset: u64, bytes: &[u8]) -> Result<(), FsError>;
    /// The whole file.
    fn read(&mut self, path: &Path) -> Result<Vec<u8>, FsError>;
    /// Up to `len` bytes from `offset` (fewer at the end of the file).
    fn read_range(&mut self, path: &Path, offset: u64, len: usize) -> Result<Vec<u8>, FsError>;
    /// Makes the file's bytes durable.
    fn sync(&mut self, path: &Path) -> Result<(), FsError>;
    /// Waits until the writeback started by the previous call on this file
    /// is done, then starts writing the bytes written since to the device
    /// without waiting for them and without making anything durable (only
    /// [`Fs::sync`] does). A large file written with this every megabyte
    /// reaches its `sync` with little left to write, so that fsync is short
    /// and does not hold other files' fsyncs behind one big journal commit
    /// (what RocksDB's `bytes_per_sync` does); and never has more than about
    /// one step queued at the device, where the log's small fsync writes
    /// would wait behind it (Linux's `sync_file_range` with
    /// `SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE`; without the
    /// wait, a 17.8 MB snapshot file was queued at once and every server's
    /// WAL fsync waited 20-27 ms behind it). A hint: a filesystem may do
    /// nothing.
    fn start_writeback(&mut self, path: &Path) -> Result<(), FsError>;
    /// Renames `from` over `to` (atomically replacing it).
    fn rename(&mut self, from: &Path, to: &Path) -> Result<(), FsError>;
    fn remove(&mut self, path: &Path) -> Result<(), FsError>;
    /// The names of the files in `dir` (names that are not UTF-8 are left
    /// out: they are not ours).
    fn list(&mut self, dir: &Path) -> Result<Vec<String>, FsError>;
    /// Makes the creations, renames and removals in `dir` durable.
    fn sync_dir(&mut self, dir: &Path) -> Result<(), FsError>;
    /// Cuts `path` to `len` bytes.
    fn truncate(&mut self, path: &Path, len: u64) -> Result<(), FsError>;
    /// Creates `dir` and its parents if absent; returns whether it created
    /// any (the caller then syncs the parent).
    fn create_dir_all(&mut self, dir: &Path) -> Result<bool, FsError>;
}

/// Real files (std::fs). Appends go through a cached handle per file, so the
/// hot path is one `write` syscall and one `fsync`.
#[derive(Debug, Default)]
pub struct StdFs {
    open: BTreeMap<PathBuf, File>,
}

/// Files kept open at once (the data dir appends to one segment at a time).
const OPEN_FILES_MAX: usize = 4;

impl StdFs {
    pub fn new() -> StdFs {
        StdFs::default()
    }

    fn handle(&mut self, path: &Path, op: FsOp) -> Result<&mut File, FsError> {
        if !self.open.contains_key(path) {
            if self.open.len() >= OPEN_FILES_MAX {
                self.open.clear();
            }
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(path)
                .map_err(|e| FsError::from_io(op, path, &e))?;
            self.open.insert(path.to_path_buf(), file);
        }
        Ok(self.open.get_mut(path).expect("inserted"))
    }
}

impl Fs for StdFs {
    fn create(&mut self, path: &Path) -> Result<(), FsError> {
        self.open.remove(path);
        let file = File::create(path).map_err(|e| FsError::from_io(FsOp::Create, path, &e))?;
        drop(file);
        Ok(())
    }

    fn append(&mut self, path: &Path, bytes: &[u8]) -> Result<(), FsError> {
        let file = self.handle(path, FsOp::Write)?;
        file.write_all(bytes)
            .map_err(|e| FsError::from_io(FsOp::Write, path, &e))
    }

    fn write_at(&mut self, path: &Path, offset: u64, bytes: &[u8]) -> Result<(), FsError> {
        use std::os::unix::fs::FileExt;
        // Not the cached handle: it appends (O_APPEND), and Linux's pwrite
        // on such a descriptor appends whatever the offset.
        let err = |e: io::Error| FsError::from_io(FsOp::Write, path, &e);
        let file = OpenOptions::new().write(true).open(path).map_err(err)?;
        file.write_all_at(bytes, offset).map_err(err)
    }

    fn read(&mut self, path: &Path) -> Result<Vec<u8>, FsError> {
        fs::read(path).map_err(|e| FsError::from_io(FsOp::Read, path, &e))
    }

    fn read_range(&mut self, path: &Path, offset: u64, len: usize) -> Result<Vec<u8>, FsError> {
        let err = |e: io::Error| FsError::from_io(FsOp::Read, path, &e);
        let mut file = File::open(path).map_err(err)?;
        file.seek(SeekFrom::Start(offset)).map_err(err)?;
        let mut out = Vec::new();
        file.take(len as u64).read_to_end(&mut out).map_err(err)?;
        Ok(out)
    }

    fn sync(&mut self, path: &Path) -> Result<(), FsError> {
        let file = self.handle(path, FsOp::Sync)?;
        let result = file.sync_all();
        if result.is_err() {
            // Never fsync this handle again: after a failed fsync the kernel
            // may have dropped the dirty pages and a retry would "succeed".
            self.open.remove(path);
        }
        result.map_err(|e| FsError::from_io(FsOp::Sync, path, &e))
    }

    fn start_writeback(&mut self, path: &Path) -> Result<(), FsError> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let file = self.handle(path, FsOp::Write)?;
            // SAFETY: a plain syscall on a descriptor this handle owns; it
            // reads no memory of ours.
            let rc = unsafe {
                libc::sync_file_range(
                    file.as_raw_fd(),
                    0,
                    0,
                    libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE,
                )
            };
            if rc != 0 {
                let e = io::Error::last_os_error();
                return Err(FsError::from_io(FsOp::Write, path, &e));
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = path;
        Ok(())
    }

    fn rename(&mut self, from: &Path, to: &Path) -> Result<(), FsError> {
        self.open.remove(from);
        self.open.remove(to);
        fs::rename(from, to).map_err(|e| FsError::from_io(FsOp::Rename, to, &e))
    }

    fn remove(&mut self, path: &Path) -> Result<(), FsError> {
        self.open.remove(path);
        fs::remove_file(path).map_err(|e| FsError::from_io(FsOp::Remove, path, &e))
    }

    fn list(&mut self, dir: &Path) -> Result<Vec<String>, FsError> {
        let err = |e: io::Error| FsError::from_io(FsOp::List, dir, &e);
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).map_err(err)? {
            let entry = entry.map_err(err)?;
            if let Some(name) = entry.file_name().to_str() {
                out.push(name.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    fn sync_dir(&mut self, dir: &Path) -> Result<(), FsError> {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| FsError::from_io(FsOp::SyncDir, dir, &e))
    }

    fn truncate(&mut self, path: &Path, len: u64) -> Result<(), FsError> {
        let file = self.handle(path, FsOp::Truncate)?;
        file.set_len(len)
            .map_err(|e| FsError::from_io(FsOp::Truncate, path, &e))
    }

    fn create_dir_all(&mut self, dir: &Path) -> Result<bool, FsError> {
        if dir.is_dir() {
            return Ok(false);
        }
        fs::create_dir_all(dir).map_err(|e| FsError::from_io(FsOp::CreateDir, dir, &e))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the OS's temporary directory.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tern-fs-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// On real files, `write_at` overwrites in place (the same inode, as a
    /// reused snapshot file needs) and extends past the end, and the
    /// cached appending handle does not turn it into an append (Linux's
    /// pwrite on an O_APPEND descriptor appends).
    #[test]
    #[cfg(unix)]
    fn write_at_overwrites_in_place_and_extends() {
        use std::os::unix::fs::MetadataExt;
        let dir = scratch("write-at");
        let path = dir.join("f");
        let mut fs = StdFs::new();
        fs.create(&path).unwrap();
        fs.append(&path, b"0123456789").unwrap();
        fs.sync(&path).unwrap(); // the appending handle is now cached
        let inode = fs::metadata(&path).unwrap().ino();
        fs.write_at(&path, 2, b"ab").unwrap();
        assert_eq!(fs.read(&path).unwrap(), b"01ab456789");
        fs.write_at(&path, 8, b"XYZ").unwrap();
        assert_eq!(fs.read(&path).unwrap(), b"01ab4567XYZ");
        fs.truncate(&path, 4).unwrap();
        fs.sync(&path).unwrap();
        assert_eq!(fs.read(&path).unwrap(), b"01ab");
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode);
        let missing = fs.write_at(&dir.join("absent"), 0, b"x").unwrap_err();
        assert!(missing.is_not_found(), "{missing}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
