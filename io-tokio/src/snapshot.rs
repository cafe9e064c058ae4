//! Snapshot archives as Consul lays them out (`GET|PUT /v1/snapshot`,
//! `tern snapshot save|restore|inspect`): a gzipped tar holding
//! `meta.json` (hashicorp/raft's `SnapshotMeta` as JSON), `state.bin` (the
//! state) and `SHA256SUMS` (sha256sum lines for the other two), in that
//! order (Consul's snapshot/archive.go and snapshot/snapshot.go).
//!
//! `state.bin` is Tern's state machine encoding (`Fsm::snapshot`), not
//! Consul's: the tools that read the layout (tar, sha256sum, `inspect`)
//! work on either, but a Consul snapshot cannot be restored into Tern, and
//! reading one says so. `meta.json` carries `"TernStateFormat"` beside
//! raft's fields to tell them apart.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The largest `meta.json` or `SHA256SUMS` read back (they are a few
/// hundred bytes; a larger one is not a snapshot).
const SMALL_FILE_BYTES_MAX: u64 = 1 << 20;

/// hashicorp/raft's `SnapshotMeta` as Consul's archive stores it, plus the
/// Tern state format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ArchiveMeta {
    /// raft's snapshot version (1).
    pub version: u64,
    /// `<term>-<index>-<unix millis>`, as raft names snapshots.
    #[serde(rename = "ID")]
    pub id: String,
    pub index: u64,
    pub term: u64,
    #[serde(default)]
    pub configuration: Configuration,
    /// The size of `state.bin`.
    pub size: u64,
    /// The state format byte of `state.bin` (absent in Consul's snapshots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tern_state_format: Option<u8>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Configuration {
    #[serde(default)]
    pub servers: Option<Vec<ConfigServer>>,
}

/// A server of the Raft configuration: raft's `Server` (`Suffrage` 0 is a
/// voter, 1 a non-voter).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigServer {
    pub suffrage: u8,
    #[serde(rename = "ID")]
    pub id: String,
    pub address: String,
}

/// Why an archive could not be read. Each names what is wrong; nothing is
/// restored from an archive that gives one.
#[derive(Debug, PartialEq, Eq)]
pub struct ArchiveError(pub String);

impl std::fmt::Display for ArchiveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(s: impl Into<String>) -> ArchiveError {
    ArchiveError(s.into())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The archive of `state` (a `Fsm::snapshot` encoding) described by
/// `meta` (whose `size` is set here).
pub fn write_archive(meta: &ArchiveMeta, state: &[u8]) -> Vec<u8> {
    let mut meta = meta.clone();
    meta.size = state.len() as u64;
    meta.tern_state_format = state.first().copied();
    let mut meta_json = serde_json::to_vec(&meta).expect("metadata encodes");
    meta_json.push(b'\n');
    let sums = format!(
        "{}  meta.json\n{}  state.bin\n",
        hex(&Sha256::digest(&meta_json)),
        hex(&Sha256::digest(state)),
    );
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut add = |name: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o600);
        h.set_mtime(mtime);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, name, bytes)
            .expect("writing to memory cannot fail");
    };
    add("meta.json", &meta_json);
    add("state.bin", state);
    add("SHA256SUMS", sums.as_bytes());
    let gz = tar.into_inner().expect("writing to memory cannot fail");
    gz.finish().expect("writing to memory cannot fail")
}

/// Reads an archive back: its metadata and `state.bin`, after checking
/// both against `SHA256SUMS` and the state's size against `state_max`.
pub fn read_archive(bytes: &[u8], state_max: u64) -> Result<(ArchiveMeta, Vec<u8>), ArchiveError> {
    let gz = flate2::read::GzDecoder::new(bytes);
    let mut tar = tar::Archive::new(gz);
    let entries = tar
        .entries()
        .map_err(|e| err(format!("failed reading snapshot: {e}")))?;
    let (mut meta_json, mut state, mut sums) = (None, None, None);
    for entry in entries {
        let mut entry = entry.map_err(|e| err(format!("failed reading snapshot: {e}")))?;
        let name = entry
            .path()
            .map_err(|e| err(format!("failed reading snapshot: {e}")))?
            .to_string_lossy()
            .into_owned();
        let size = entry.header().size().unwrap_or(u64::MAX);
        let (slot, max) = match name.as_str() {
            "meta.json" => (&mut meta_json, SMALL_FILE_BYTES_MAX),
            "state.bin" => (&mut state, state_max),
            "SHA256SUMS" => (&mut sums, SMALL_FILE_BYTES_MAX),
            other => return Err(err(format!("unexpected file {other:?} in snapshot"))),
        };
        if size > max {
            return Err(err(format!(
                "{name} in snapshot is {size} bytes, over the {max} byte limit"
            )));
        }
        if slot.is_some() {
            return Err(err(format!("{name} appears twice in snapshot")));
        }
        let mut buf = Vec::with_capacity(size as usize);
        (&mut entry)
            .take(max + 1)
            .read_to_end(&mut buf)
            .map_err(|e| err(format!("failed reading {name} from snapshot: {e}")))?;
        *slot = Some(buf);
    }
    let meta_json = meta_json.ok_or_else(|| err("file missing for \"meta.json\""))?;
    let state = state.ok_or_else(|| err("file missing for \"state.bin\""))?;
    let sums = sums.ok_or_else(|| err("file missing for \"SHA256SUMS\""))?;
    verify_sums(&sums, &[("meta.json", &meta_json), ("state.bin", &state)])
        .map_err(|e| err(format!("failed checking integrity of snapshot: {e}")))?;
    let meta: ArchiveMeta = serde_json::from_slice(&meta_json)
        .map_err(|e| err(format!("failed to decode snapshot metadata: {e}")))?;
    if meta.size != state.len() as u64 {
        return Err(err(format!(
            "snapshot metadata says {} bytes of state, state.bin has {}",
            meta.size,
            state.len()
        )));
    }
    Ok((meta, state))
}

/// Every file has a line, every line a file, and the sums match.
fn verify_sums(sums: &[u8], files: &[(&str, &[u8])]) -> Result<(), String> {
    let text = std::str::from_utf8(sums).map_err(|_| "SHA256SUMS is not text".to_string())?;
    let mut seen = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (sum, name) = line
            .split_once("  ")
            .ok_or_else(|| format!("malformed line in SHA256SUMS: {line:?}"))?;
        let Some((_, bytes)) = files.iter().find(|(n, _)| *n == name) else {
            return Err(format!("list missing hash for {name:?}"));
        };
        if !sum.eq_ignore_ascii_case(&hex(&Sha256::digest(bytes))) {
            return Err(format!("hash check failed for {name:?}"));
        }
        seen.push(name);
    }
    for (name, _) in files {
        if !seen.contains(name) {
            return Err(format!("file missing for {name:?}"));
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` as `tern snapshot save` does (and Consul's):
/// to `<path>.unverified` first, fsynced, then renamed into place.
pub fn write_file_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".unverified");
    let tmp = std::path::PathBuf::from(tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> ArchiveMeta {
        ArchiveMeta {
            version: 1,
            id: "2-5-1477944140022".into(),
            index: 5,
            term: 2,
            configuration: Configuration {
                servers: Some(vec![ConfigServer {
                    suffrage: 0,
                    id: "a".into(),
                    address: "127.0.0.1:8300".into(),
                }]),
            },
            size: 0,
            tern_state_format: None,
        }
    }

    #[test]
    fn an_archive_reads_back_what_was_written() {
        let state = b"\x04some state".to_vec();
        let bytes = write_archive(&meta(), &state);
        let (m, s) = read_archive(&bytes, 1 << 20).unwrap();
        assert_eq!(s, state);
        assert_eq!(m.size, state.len() as u64);
        assert_eq!(m.tern_state_format, Some(4));
        assert_eq!(m.index, 5);
    }

    #[test]
    fn a_changed_byte_anywhere_is_caught() {
        let state = vec![4u8; 4000];
        let bytes = write_archive(&meta(), &state);
        for i in (0..bytes.len()).step_by(7) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            // gzip's own CRC, tar's header checksum or SHA256SUMS: some
            // check refuses it, or the bytes it changed did not matter
            // (tar padding, gzip header fields), and the state is intact.
            if let Ok((_, s)) = read_archive(&bad, 1 << 20) {
                assert_eq!(s, state, "byte {i} changed the state unnoticed");
            }
        }
        assert!(read_archive(&bytes[..bytes.len() / 2], 1 << 20).is_err());
        assert!(read_archive(b"not a snapshot", 1 << 20).is_err());
    }

    #[test]
    fn state_over_the_limit_is_refused_before_it_is_read() {
        let state = vec![4u8; 1000];
        let bytes = write_archive(&meta(), &state);
        assert!(read_archive(&bytes, 1000).is_ok());
        let e = read_archive(&bytes, 999).unwrap_err();
        assert_eq!(
            e.0,
            "state.bin in snapshot is 1000 bytes, over the 999 byte limit"
        );
    }
}
