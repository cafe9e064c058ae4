//! File names in `<data dir>/raft/`, and the multi-step moves built from
//! [`Fs`] calls.

use std::path::{Path, PathBuf};

use tern_core::{LogIndex, Term};

use crate::fs::{Fs, FsError};

pub(crate) const HARDSTATE: &str = "hardstate";
/// The newest `PurgeUpTo` (see `DataDir`).
pub(crate) const PURGED: &str = "purged";
const TMP_SUFFIX: &str = ".tmp";
const DIGITS: usize = 20;

/// What a file in the raft dir is, by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    HardState,
    Purged,
    Segment(LogIndex),
    Snapshot(LogIndex, Term),
    /// A `*.tmp` left by a crash before its rename: never part of the state.
    Tmp,
    /// Not ours; left alone.
    Other,
}

pub(crate) fn segment_name(first: LogIndex) -> String {
    format!("log-{:020}.wal", first.0)
}

pub(crate) fn snapshot_name(last_index: LogIndex, last_term: Term) -> String {
    format!("snapshot-{:020}-{:020}.snap", last_index.0, last_term.0)
}

pub(crate) fn classify(name: &str) -> FileKind {
    if name == HARDSTATE {
        return FileKind::HardState;
    }
    if name == PURGED {
        return FileKind::Purged;
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

/// Replaces `dir/name` with `bytes` so that a crash leaves either the old
/// file or the new one: write `name.tmp`, fsync it, rename it over `name`,
/// fsync the directory. On a failure the tmp file is removed if it can be
/// (it is never part of the state anyway: recovery deletes it).
pub(crate) fn write_atomically(
    fs: &mut impl Fs,
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<(), FsError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let result = (|| {
        fs.create(&tmp)?;
        fs.append(&tmp, bytes)?;
        fs.sync(&tmp)
    })();
    if let Err(e) = result {
        let _ = fs.remove(&tmp);
        return Err(e);
    }
    fs.rename(&tmp, &path)?;
    fs.sync_dir(dir)
}

/// As [`write_atomically`], for a file written as several pieces (each
/// written in turn, so no buffer holds the whole file). With `recycle`, a
/// file nothing needs any more (a superseded snapshot) is renamed to the
/// temporary name and overwritten in place rather than a new file created:
/// its blocks are not freed and allocated again, which on a filesystem
/// mounted with online discard (ext4's `discard`) costs a TRIM of the whole
/// file at the next journal commit, one that every other file's fsync
/// waits for. The rename is made durable before the first byte is written,
/// so a crash never shows the old name over new bytes: what a crash leaves
/// under the temporary name recovery deletes. A `recycle` that is gone
/// (not found) is no error: the file is created.
pub(crate) fn write_atomically_pieces<'a>(
    fs: &mut impl Fs,
    dir: &Path,
    name: &str,
    pieces: impl Iterator<Item = (Vec<u8>, &'a [u8])>,
    recycle: Option<&Path>,
) -> Result<(), FsError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let result = (|| {
        let reused = match recycle {
            Some(old) => match fs.rename(old, &tmp) {
                Ok(()) => {
                    fs.sync_dir(dir)?;
                    true
                }
                Err(e) if e.is_not_found() => false,
                Err(e) => return Err(e),
            },
            None => false,
        };
        if !reused {
            fs.create(&tmp)?;
        }
        // Each write at the offset it goes to: the end of a new file, or
        // over the spare's old bytes.
        let mut at = 0u64;
        let mut unflushed = 0;
        for (head, body) in pieces {
            fs.write_at(&tmp, at, &head)?;
            at += head.len() as u64;
            unflushed += head.len();
            // A piece is several MiB: its writeback goes out a step at a
            // time, so no more than about one step of this file is ever
            // queued at the device ahead of the log's fsyncs.
            for chunk in body.chunks(WRITEBACK_BYTES) {
                fs.write_at(&tmp, at, chunk)?;
                at += chunk.len() as u64;
                unflushed += chunk.len();
                if unflushed >= WRITEBACK_BYTES {
                    fs.start_writeback(&tmp)?;
                    unflushed = 0;
                }
            }
        }
        if reused {
            // The old file may have been longer.
            fs.truncate(&tmp, at)?;
        }
        fs.sync(&tmp)
    })();
    if let Err(e) = result {
        let _ = fs.remove(&tmp);
        return Err(e);
    }
    fs.rename(&tmp, &path)?;
    fs.sync_dir(dir)
}

/// How many bytes of a file written in pieces may wait in the page cache
/// before their writeback is started ([`Fs::start_writeback`]), which
/// first waits for the step before: so also about how much of the file is
/// ever in flight at the device (1 MiB: 2-3 ms of this VM's disk).
pub(crate) const WRITEBACK_BYTES: usize = 1 << 20;

/// The raft dir's files, by what they are.
pub(crate) fn list(fs: &mut impl Fs, dir: &Path) -> Result<Vec<(PathBuf, FileKind)>, FsError> {
    Ok(fs
        .list(dir)?
        .into_iter()
        .map(|name| (dir.join(&name), classify(&name)))
        .collect())
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
        assert_eq!(classify("purged"), FileKind::Purged);
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
