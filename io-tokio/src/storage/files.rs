//! File names in `<data dir>/raft/` and the few filesystem moves the data
//! dir is built from, each turning an `io::Error` into one naming the path.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use tern_core::{LogIndex, Term};

use super::StorageError;

pub(super) const HARDSTATE: &str = "hardstate";
const TMP_SUFFIX: &str = ".tmp";
const DIGITS: usize = 20;

/// What a file in the raft dir is, by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FileKind {
    HardState,
    Segment(LogIndex),
    Snapshot(LogIndex, Term),
    /// A `*.tmp` left by a crash before its rename: never part of the state.
    Tmp,
    /// Not ours; left alone.
    Other,
}

pub(super) fn segment_name(first: LogIndex) -> String {
    format!("log-{:020}.wal", first.0)
}

pub(super) fn snapshot_name(last_index: LogIndex, last_term: Term) -> String {
    format!("snapshot-{:020}-{:020}.snap", last_index.0, last_term.0)
}

pub(super) fn classify(name: &str) -> FileKind {
    if name == HARDSTATE {
        return FileKind::HardState;
    }
    if name.ends_with(TMP_SUFFIX) {
        return FileKind::Tmp;
    }
    if let Some(first) = name
        .strip_prefix("log-")
        .and_then(|s| s.strip_suffix(".wal"))
        .and_then(digits)
    {
        return FileKind::Segment(LogIndex(first));
    }
    let snapshot = name
        .strip_prefix("snapshot-")
        .and_then(|s| s.strip_suffix(".snap"))
        .and_then(|s| s.split_once('-'))
        .and_then(|(i, t)| Some((digits(i)?, digits(t)?)));
    match snapshot {
        Some((i, t)) => FileKind::Snapshot(LogIndex(i), Term(t)),
        None => FileKind::Other,
    }
}

/// Exactly [`DIGITS`] ASCII digits, as we write them.
fn digits(s: &str) -> Option<u64> {
    if s.len() != DIGITS || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

pub(super) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |error| StorageError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Makes creations, renames and deletions in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// Replaces `dir/name` with `bytes` so that a crash leaves either the old
/// file or the new one: write `name.tmp`, fsync it, rename it over `name`,
/// fsync the directory.
pub(super) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
    file.write_all(bytes).map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(io_error(&path))?;
    sync_dir(dir)
}

pub(super) fn remove(path: &Path) -> Result<(), StorageError> {
    fs::remove_file(path).map_err(io_error(path))
}

pub(super) fn read(path: &Path) -> Result<Vec<u8>, StorageError> {
    fs::read(path).map_err(io_error(path))
}

/// Opens an existing segment to append to it.
pub(super) fn open_append(path: &Path) -> Result<(File, u64), StorageError> {
    let file = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io_error(path))?;
    let len = file.metadata().map_err(io_error(path))?.len();
    Ok((file, len))
}

/// Creates a new, empty segment (refusing to reuse a name).
pub(super) fn create_new(path: &Path) -> Result<File, StorageError> {
    OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(path)
        .map_err(io_error(path))
}

/// The raft dir's entries, by what they are; names that are not UTF-8 are
/// not ours.
pub(super) fn list(dir: &Path) -> Result<Vec<(PathBuf, FileKind)>, StorageError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let kind = entry.file_name().to_str().map_or(FileKind::Other, classify);
        out.push((entry.path(), kind));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let seg = segment_name(LogIndex(42));
        assert_eq!(seg, "log-00000000000000000042.wal");
        assert_eq!(classify(&seg), FileKind::Segment(LogIndex(42)));
        let snap = snapshot_name(LogIndex(7), Term(u64::MAX));
        assert_eq!(
            classify(&snap),
            FileKind::Snapshot(LogIndex(7), Term(u64::MAX))
        );
        assert_eq!(classify("hardstate"), FileKind::HardState);
        assert_eq!(classify("hardstate.tmp"), FileKind::Tmp);
        assert_eq!(classify(&format!("{snap}.tmp")), FileKind::Tmp);
        for other in [
            "log-42.wal",
            "log-0000000000000000004x.wal",
            "LOCK",
            "snapshot-1-2.snap",
        ] {
            assert_eq!(classify(other), FileKind::Other, "{other}");
        }
    }
}
