//! The write-ahead log's record format, crash recovery, and replay.
//!
//! A record is `[payload_len: u32 LE][crc32c(payload): u32 LE][payload]`, the
//! payload being the codec's `[CODEC_VERSION][postcard(WalRecord)]`. The
//! driver appends records and fsyncs; after a crash the file may end in a
//! partial last write, which recovery finds and reports so the driver can
//! truncate it. Damage *before* the last write is corruption: recovery refuses
//! to guess, and the server does not start.

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::action::PersistOp;
use crate::ids::{LogIndex, Term};
use crate::raft::{Durable, Entry, HardState, Snapshot, SnapshotMeta};
use crate::wire::codec;

/// Bytes in a record header: payload length, then checksum.
pub const WAL_HEADER_LEN: usize = 8;

/// The largest payload a record may announce (256 MiB). A bigger length is
/// corruption, refused before anything is allocated.
pub const WAL_RECORD_BYTES_MAX: usize = 256 << 20;

/// How many payload bytes recovery may checksum while looking for an intact
/// record after a damaged one (see [`recover`]). Past it, recovery cannot tell
/// a torn tail from corruption, and says corrupt.
pub const WAL_SCAN_BYTES_MAX: usize = 64 << 20;

/// One durable write, mirroring [`PersistOp`].
///
/// Variants are only ever added at the end: data dirs written by older
/// builds hold the old ones, which still decode and replay (see
/// [`WalRecord::ops`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalRecord {
    /// Replace the hard state.
    HardState(HardState),
    /// Append entries. Written only as `PersistOp::Append` (starting right
    /// after the last index); a record from an older build may start at or
    /// below it, meaning "replace the log from here on" (see [`Self::ops`]).
    Append(Vec<Entry>),
    /// Older builds' snapshot record: store a snapshot, then drop entries up
    /// to `compact_to` inclusive, or the whole log for one installed from the
    /// leader. No longer written; replayed as the new ops (see [`Self::ops`]).
    Snapshot {
        snapshot: Snapshot,
        compact_to: LogIndex,
    },
    /// `PersistOp::TruncateFrom`.
    TruncateFrom(LogIndex),
    /// `PersistOp::SaveSnapshot`.
    SaveSnapshot(Snapshot),
    /// `PersistOp::PurgeUpTo`.
    PurgeUpTo(LogIndex),
    /// `PersistOp::InstallSnapshot`.
    InstallSnapshot(Snapshot),
    /// The first record of a snapshot file written in pieces: what the
    /// snapshot is (saved by this server, or installed from the leader), its
    /// size and the crc32c of all its bytes, which follow in
    /// `SnapshotPiece`s. A snapshot of any size is then a file of bounded
    /// records, never one record over [`WAL_RECORD_BYTES_MAX`]. Only in
    /// snapshot files, never in the log.
    SnapshotHeader {
        installed: bool,
        meta: SnapshotMeta,
        total_bytes: u64,
        crc32c: u32,
    },
    /// The next bytes of the snapshot a `SnapshotHeader` announced.
    SnapshotPiece(#[serde(with = "serde_bytes")] Vec<u8>),
}

impl From<PersistOp> for WalRecord {
    fn from(op: PersistOp) -> WalRecord {
        match op {
            PersistOp::HardState(h) => WalRecord::HardState(h),
            PersistOp::Append(entries) => WalRecord::Append(entries),
            PersistOp::TruncateFrom(at) => WalRecord::TruncateFrom(at),
            PersistOp::SaveSnapshot(s) => WalRecord::SaveSnapshot(s),
            PersistOp::PurgeUpTo(at) => WalRecord::PurgeUpTo(at),
            PersistOp::InstallSnapshot(s) => WalRecord::InstallSnapshot(s),
        }
    }
}

impl WalRecord {
    /// The ops this record stands for, replayed on a log whose last index
    /// is `last` and which holds term `term_at(i)` at index `i`. A record
    /// written by this build is exactly its op. The older records mean:
    ///
    /// - an `Append` starting at or below `last`: `TruncateFrom` its first
    ///   index, then the `Append`;
    /// - a `Snapshot { snapshot, compact_to }` with `compact_to` at or below
    ///   the snapshot's last index and its last entry in the log with its
    ///   term (a server's own snapshot): `SaveSnapshot`, then
    ///   `PurgeUpTo(compact_to)`; any other (one from the leader, which
    ///   dropped the whole log): `InstallSnapshot`.
    pub fn ops(
        &self,
        last: LogIndex,
        term_at: impl Fn(LogIndex) -> Option<Term>,
    ) -> Vec<PersistOp> {
        match self {
            WalRecord::HardState(h) => vec![PersistOp::HardState(h.clone())],
            WalRecord::Append(entries) => {
                let append = PersistOp::Append(entries.clone());
                match entries.first() {
                    Some(e) if e.index <= last && e.index != LogIndex::ZERO => {
                        vec![PersistOp::TruncateFrom(e.index), append]
                    }
                    _ => vec![append],
                }
            }
            WalRecord::Snapshot {
                snapshot,
                compact_to,
            } => {
                let meta = &snapshot.meta;
                let own = *compact_to <= meta.last_index
                    && term_at(meta.last_index) == Some(meta.last_term);
                if own {
                    vec![
                        PersistOp::SaveSnapshot(snapshot.clone()),
                        PersistOp::PurgeUpTo(*compact_to),
                    ]
                } else {
                    vec![PersistOp::InstallSnapshot(snapshot.clone())]
                }
            }
            WalRecord::TruncateFrom(at) => vec![PersistOp::TruncateFrom(*at)],
            WalRecord::SaveSnapshot(s) => vec![PersistOp::SaveSnapshot(s.clone())],
            WalRecord::PurgeUpTo(at) => vec![PersistOp::PurgeUpTo(*at)],
            WalRecord::InstallSnapshot(s) => vec![PersistOp::InstallSnapshot(s.clone())],
            // Parts of a snapshot file: the file as a whole is one
            // `SaveSnapshot` or `InstallSnapshot` (see the data dir).
            WalRecord::SnapshotHeader { .. } | WalRecord::SnapshotPiece(_) => Vec::new(),
        }
    }
}

/// The log cannot be trusted; the server must not start from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalError {
    /// The record starting at byte `offset` is damaged or does not fit.
    Corrupt { offset: u64, reason: String },
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalError::Corrupt { offset, reason } => {
                write!(f, "corrupt record at offset {offset}: {reason}")
            }
        }
    }
}

impl std::error::Error for WalError {}

/// A partial last write: bytes `offset..offset + len` (to the end of the
/// file) must be truncated before appending again.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub offset: u64,
    pub len: u64,
}

/// What [`recover`] found in a log file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Every intact record, in file order.
    pub records: Vec<WalRecord>,
    /// `offsets[i]` is the byte offset where `records[i]` starts (same
    /// length as `records`); [`replay`] names it in its errors.
    pub offsets: Vec<u64>,
    /// Bytes of the file that hold intact records: `offsets.last() + its
    /// record's length`, or 0. Equal to `torn_tail.offset` when there is one.
    pub valid_len: usize,
    pub torn_tail: Option<TornTail>,
}

/// Appends one record to `out`.
///
/// Panics if the record's payload is over [`WAL_RECORD_BYTES_MAX`]: the core
/// bounds entries and snapshots far below it, so that is a bug, not input.
pub fn encode_record(r: &WalRecord, out: &mut Vec<u8>) {
    let payload = codec::encode(r);
    assert!(
        payload.len() <= WAL_RECORD_BYTES_MAX,
        "WAL record of {} bytes is over WAL_RECORD_BYTES_MAX",
        payload.len()
    );
    let len = payload.len() as u32;
    out.reserve(WAL_HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// The bytes that go before `body` so that they and `body` together are
/// exactly `encode_record(&WalRecord::SnapshotPiece(body.to_vec()))`: the
/// record's length and checksum, the codec version, the variant and the
/// body's length. A snapshot file is written this way, the body straight from
/// the snapshot's bytes, so a state of many megabytes is not copied once more
/// per piece.
///
/// Panics, as [`encode_record`] does, if the record is over
/// [`WAL_RECORD_BYTES_MAX`].
pub fn snapshot_piece_header(body: &[u8]) -> Vec<u8> {
    snapshot_piece_header_for(body.len(), crc32c::crc32c(body))
}

/// [`snapshot_piece_header`] for a body of `body_len` bytes whose CRC-32C
/// the caller already has (`body_crc`, `crc32c::crc32c(body)`): a snapshot
/// file's writer checksums each piece once and combines those into the
/// whole snapshot's checksum, instead of a second pass over its bytes.
pub fn snapshot_piece_header_for(body_len: usize, body_crc: u32) -> Vec<u8> {
    // An empty piece encodes as [version, variant, 0]: the 0 is the length.
    let mut prefix = codec::encode(&WalRecord::SnapshotPiece(Vec::new()));
    let empty_len = prefix.pop();
    debug_assert_eq!(empty_len, Some(0));
    prefix = postcard::to_extend(&(body_len as u64), prefix).expect("a varint encodes");
    let len = prefix.len() + body_len;
    assert!(
        len <= WAL_RECORD_BYTES_MAX,
        "WAL record of {len} bytes is over WAL_RECORD_BYTES_MAX"
    );
    let crc = crc32c::crc32c_combine(crc32c::crc32c(&prefix), body_crc, body_len);
    let mut head = Vec::with_capacity(WAL_HEADER_LEN + prefix.len());
    head.extend_from_slice(&(len as u32).to_le_bytes());
    head.extend_from_slice(&crc.to_le_bytes());
    head.extend_from_slice(&prefix);
    head
}

/// How one record reads, before its payload is decoded.
enum Frame<'a> {
    /// A whole record whose checksum matches.
    Intact { payload: &'a [u8], end: usize },
    /// The header or payload runs past the end of the file.
    PastEof,
    /// The header announces more than [`WAL_RECORD_BYTES_MAX`].
    TooLong(u64),
    /// A zero-length payload (we never write one).
    Empty,
    /// A whole record whose checksum does not match.
    BadChecksum,
}

fn read_u32_le(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn frame_at(bytes: &[u8], offset: usize) -> Frame<'_> {
    let rest = &bytes[offset..];
    if rest.len() < WAL_HEADER_LEN {
        return Frame::PastEof;
    }
    let len = read_u32_le(rest, 0) as usize;
    if len > WAL_RECORD_BYTES_MAX {
        return Frame::TooLong(len as u64);
    }
    if len == 0 {
        return Frame::Empty;
    }
    if rest.len() - WAL_HEADER_LEN < len {
        return Frame::PastEof;
    }
    let payload = &rest[WAL_HEADER_LEN..WAL_HEADER_LEN + len];
    if crc32c::crc32c(payload) != read_u32_le(rest, 4) {
        return Frame::BadChecksum;
    }
    Frame::Intact {
        payload,
        end: offset + WAL_HEADER_LEN + len,
    }
}

/// Reads a log file: every intact record, and a torn tail if the file ends in
/// a partial write.
///
/// Total: any bytes give `Ok` or `Err`, never a panic, and no allocation
/// larger than the input. The rules, for the first record that is not intact:
///
/// - It runs past the end of the file (header or payload), or its checksum
///   fails, and **no intact record starts anywhere after it**: a torn tail.
///   A torn batched write can leave any garbage after its first damaged
///   record, but nothing that checksums, except by a 2^-32 chance.
/// - The same, but an intact record does start after it: `Corrupt`, at the
///   damaged record's offset. Truncating would throw away data that was
///   written after it and may have been acknowledged.
/// - Nothing but zero bytes from it to the end: a torn tail (a file extended
///   by the crash but never written).
/// - Its length is over [`WAL_RECORD_BYTES_MAX`], or zero, or its payload
///   checksums but does not decode: `Corrupt`.
pub fn recover(bytes: &[u8]) -> Result<Recovered, WalError> {
    let mut rec = Recovered::default();
    let mut offset = 0usize;
    while offset < bytes.len() {
        let corrupt = |reason: String| WalError::Corrupt {
            offset: offset as u64,
            reason,
        };
        let damage = match frame_at(bytes, offset) {
            Frame::Intact { payload, end } => {
                let record =
                    codec::decode::<WalRecord>(payload).map_err(|e| corrupt(e.to_string()))?;
                rec.records.push(record);
                rec.offsets.push(offset as u64);
                offset = end;
                continue;
            }
            _ if bytes[offset..].iter().all(|b| *b == 0) => None,
            Frame::TooLong(len) => {
                return Err(corrupt(format!(
                    "length {len} is over the limit of {WAL_RECORD_BYTES_MAX}"
                )))
            }
            Frame::Empty => return Err(corrupt("zero-length record".into())),
            Frame::PastEof => Some("runs past the end of the file"),
            Frame::BadChecksum => Some("checksum mismatch"),
        };
        if let Some(why) = damage {
            match intact_record_after(bytes, offset) {
                Ok(None) => {}
                Ok(Some(next)) => {
                    return Err(corrupt(format!(
                        "{why}, with an intact record after it at offset {next}"
                    )))
                }
                Err(()) => {
                    return Err(corrupt(format!(
                        "{why}, and the {} bytes after it are too many to scan",
                        bytes.len() - offset
                    )))
                }
            }
        }
        rec.torn_tail = Some(TornTail {
            offset: offset as u64,
            len: (bytes.len() - offset) as u64,
        });
        break;
    }
    rec.valid_len = offset;
    Ok(rec)
}

/// The first offset after `damaged` where an intact record starts, if any.
/// `Err` if the scan would checksum more than [`WAL_SCAN_BYTES_MAX`].
fn intact_record_after(bytes: &[u8], damaged: usize) -> Result<Option<usize>, ()> {
    let mut budget = WAL_SCAN_BYTES_MAX;
    for at in damaged + 1..bytes.len().saturating_sub(WAL_HEADER_LEN - 1) {
        let rest = &bytes[at..];
        let len = read_u32_le(rest, 0) as usize;
        // Cheap filters first: a plausible length, and our version byte.
        if len == 0 || len > WAL_RECORD_BYTES_MAX || rest.len() - WAL_HEADER_LEN < len {
            continue;
        }
        if rest[WAL_HEADER_LEN] != codec::CODEC_VERSION {
            continue;
        }
        budget = budget.checked_sub(len).ok_or(())?;
        if let Frame::Intact { .. } = frame_at(bytes, at) {
            return Ok(Some(at));
        }
    }
    Ok(None)
}

/// Folds recovered records into the state a server restarts from: each
/// record's ops ([`WalRecord::ops`]) applied with
/// [`Durable::apply`], the one interpreter of persist ops. A record it
/// refuses is `Corrupt`, at its offset.
pub fn replay(rec: &Recovered) -> Result<Durable, WalError> {
    let mut durable = Durable::default();
    for (i, record) in rec.records.iter().enumerate() {
        let offset = rec.offsets.get(i).copied().unwrap_or_default();
        for op in record.ops(durable.last_index(), |i| durable.term_at(i)) {
            durable.apply(&op).map_err(|e| WalError::Corrupt {
                offset,
                reason: e.to_string(),
            })?;
        }
    }
    Ok(durable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::{Command, KvCommand, KvWrite};
    use crate::ids::{NodeId, Term};
    use crate::raft::{EntryPayload, Membership};

    #[test]
    fn a_snapshot_piece_header_and_its_body_are_the_whole_record() {
        for n in [0usize, 1, 127, 128, 16_383, 16_384, (4 << 20) + 3] {
            let body: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let mut whole = Vec::new();
            encode_record(&WalRecord::SnapshotPiece(body.clone()), &mut whole);
            let mut split = snapshot_piece_header(&body);
            split.extend_from_slice(&body);
            assert_eq!(split, whole, "a piece of {n} bytes");
        }
    }

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::Command(std::sync::Arc::new(Command::Kv(KvCommand::Set(
                KvWrite {
                    key: format!("k{index}"),
                    flags: 0,
                    value: vec![index as u8; 3].into(),
                },
            )))),
        }
    }

    fn entries(range: core::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
        range.map(|i| entry(i, term)).collect()
    }

    fn snapshot(last_index: u64, last_term: u64) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                last_index: LogIndex(last_index),
                last_term: Term(last_term),
                membership: Membership::default(),
            },
            data: vec![1, 2, 3].into(),
        }
    }

    fn three_records() -> Vec<WalRecord> {
        vec![
            WalRecord::HardState(HardState {
                term: Term(2),
                vote: Some(NodeId(7)),
            }),
            WalRecord::Append(entries(1..=3, 2)),
            WalRecord::Snapshot {
                snapshot: snapshot(2, 2),
                compact_to: LogIndex(2),
            },
        ]
    }

    /// The file, and the offset where each record starts.
    fn file(records: &[WalRecord]) -> (Vec<u8>, Vec<u64>) {
        let mut out = Vec::new();
        let mut offsets = Vec::new();
        for r in records {
            offsets.push(out.len() as u64);
            encode_record(r, &mut out);
        }
        (out, offsets)
    }

    #[test]
    fn records_round_trip() {
        let records = three_records();
        let (bytes, offsets) = file(&records);
        let rec = recover(&bytes).unwrap();
        assert_eq!(rec.records, records);
        assert_eq!(rec.offsets, offsets);
        assert_eq!(rec.valid_len, bytes.len());
        assert_eq!(rec.torn_tail, None);
        assert_eq!(recover(&[]).unwrap(), Recovered::default());
    }

    #[test]
    fn a_torn_last_record_is_found_at_every_cut() {
        let records = three_records();
        let (bytes, offsets) = file(&records);
        let last = offsets[2] as usize;
        for cut in last + 1..bytes.len() {
            let rec = recover(&bytes[..cut]).unwrap();
            assert_eq!(rec.records, records[..2], "cut at {cut}");
            assert_eq!(rec.valid_len, last);
            assert_eq!(
                rec.torn_tail,
                Some(TornTail {
                    offset: last as u64,
                    len: (cut - last) as u64
                })
            );
        }
    }

    #[test]
    fn a_damaged_last_record_is_a_torn_tail() {
        let (mut bytes, offsets) = file(&three_records());
        let n = bytes.len();
        bytes[n - 1] ^= 0x40;
        let rec = recover(&bytes).unwrap();
        assert_eq!(rec.records.len(), 2);
        assert_eq!(rec.torn_tail.unwrap().offset, offsets[2]);
    }

    #[test]
    fn a_zero_filled_tail_is_a_torn_tail() {
        let (mut bytes, _) = file(&three_records());
        let n = bytes.len();
        bytes.extend_from_slice(&[0; 20]);
        let rec = recover(&bytes).unwrap();
        assert_eq!(rec.records.len(), 3);
        assert_eq!(
            rec.torn_tail,
            Some(TornTail {
                offset: n as u64,
                len: 20
            })
        );
    }

    #[test]
    fn any_flipped_byte_in_the_middle_record_is_corrupt_at_its_offset() {
        let (bytes, offsets) = file(&three_records());
        let (start, end) = (offsets[1] as usize, offsets[2] as usize);
        for at in start..end {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[at] ^= flip;
                match recover(&bad) {
                    Err(WalError::Corrupt { offset, .. }) => {
                        assert_eq!(offset, offsets[1], "byte {at} ^ {flip:#x}")
                    }
                    other => panic!("byte {at} ^ {flip:#x}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn an_oversized_length_is_corrupt() {
        let (mut bytes, _) = file(&three_records());
        bytes[..4].copy_from_slice(&(WAL_RECORD_BYTES_MAX as u32 + 1).to_le_bytes());
        let err = recover(&bytes).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("corrupt record at offset 0: length"));
    }

    #[test]
    fn a_checksummed_record_that_does_not_decode_is_corrupt() {
        let payload = [codec::CODEC_VERSION, 9]; // no WalRecord variant 9
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&2u32.to_le_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        assert!(matches!(
            recover(&bytes),
            Err(WalError::Corrupt { offset: 0, .. })
        ));
    }

    fn replayed(records: Vec<WalRecord>) -> Result<Durable, WalError> {
        let (bytes, _) = file(&records);
        replay(&recover(&bytes).unwrap())
    }

    #[test]
    fn replay_overwrites_a_conflicting_suffix() {
        let d = replayed(vec![
            WalRecord::Append(entries(1..=5, 1)),
            WalRecord::Append(entries(3..=4, 2)),
        ])
        .unwrap();
        let mut want = entries(1..=2, 1);
        want.extend(entries(3..=4, 2));
        assert_eq!(d.entries, want);
    }

    #[test]
    fn replay_keeps_the_last_hard_state() {
        let hs = |t| HardState {
            term: Term(t),
            vote: None,
        };
        let d = replayed(vec![
            WalRecord::HardState(hs(1)),
            WalRecord::HardState(hs(4)),
        ])
        .unwrap();
        assert_eq!(d.hard_state, hs(4));
    }

    #[test]
    fn replay_compacts_to_the_snapshot() {
        let d = replayed(vec![
            WalRecord::Append(entries(1..=5, 1)),
            WalRecord::Snapshot {
                snapshot: snapshot(4, 1),
                compact_to: LogIndex(3),
            },
            WalRecord::Append(entries(6..=6, 1)),
        ])
        .unwrap();
        assert_eq!(d.snapshot, Some(snapshot(4, 1)));
        assert_eq!(d.entries, entries(4..=6, 1));
    }

    #[test]
    fn a_snapshot_past_the_log_drops_it_all() {
        let d = replayed(vec![
            WalRecord::Append(entries(1..=5, 1)),
            WalRecord::Snapshot {
                snapshot: snapshot(9, 3),
                compact_to: LogIndex(5),
            },
            WalRecord::Append(entries(10..=11, 3)),
        ])
        .unwrap();
        assert_eq!(d.entries, entries(10..=11, 3));
    }

    #[test]
    fn a_gap_is_corrupt_at_the_record_that_makes_it() {
        let records = vec![
            WalRecord::Append(entries(1..=2, 1)),
            WalRecord::Append(entries(4..=4, 1)),
        ];
        let (_, offsets) = file(&records);
        let err = replayed(records).unwrap_err();
        assert_eq!(
            err,
            WalError::Corrupt {
                offset: offsets[1],
                reason: "an append at index 4 does not follow the last index 2".into()
            }
        );
        let err = replayed(vec![WalRecord::Append(entries(2..=3, 1))]).unwrap_err();
        assert!(matches!(err, WalError::Corrupt { offset: 0, .. }));
        let mut jumpy = entries(1..=2, 1);
        jumpy.push(entry(4, 1));
        assert!(replayed(vec![WalRecord::Append(jumpy)]).is_err());
    }

    #[test]
    fn an_old_snapshot_record_replays_as_save_and_purge_or_as_install() {
        // A server's own snapshot, compacted behind its last index: saved,
        // then purged up to `compact_to`.
        let d = replayed(vec![
            WalRecord::Append(entries(1..=10, 1)),
            WalRecord::Snapshot {
                snapshot: snapshot(8, 1),
                compact_to: LogIndex(5),
            },
        ])
        .unwrap();
        assert_eq!(d.snapshot, Some(snapshot(8, 1)));
        assert_eq!(d.entries, entries(6..=10, 1));
        // A leader's snapshot replacing a longer, conflicting log (the old
        // core compacted to the log's last index): installed, the log goes.
        let d = replayed(vec![
            WalRecord::Append(entries(1..=10, 1)),
            WalRecord::Snapshot {
                snapshot: snapshot(8, 2),
                compact_to: LogIndex(10),
            },
            WalRecord::Append(entries(9..=9, 2)),
        ])
        .unwrap();
        assert_eq!(d.entries, entries(9..=9, 2));
    }

    #[test]
    fn new_records_replay_through_the_interpreter() {
        let d = replayed(vec![
            WalRecord::Append(entries(1..=6, 1)),
            WalRecord::TruncateFrom(LogIndex(5)),
            WalRecord::Append(entries(5..=7, 2)),
            WalRecord::SaveSnapshot(snapshot(4, 1)),
            WalRecord::PurgeUpTo(LogIndex(3)),
        ])
        .unwrap();
        assert_eq!(d.snapshot, Some(snapshot(4, 1)));
        let mut want = entries(4..=4, 1);
        want.extend(entries(5..=7, 2));
        assert_eq!(d.entries, want);
        // §7: an installed snapshot that matches keeps the suffix after it.
        let d = replayed(vec![
            WalRecord::Append(entries(1..=6, 2)),
            WalRecord::InstallSnapshot(snapshot(4, 2)),
        ])
        .unwrap();
        assert_eq!(d.entries, entries(5..=6, 2));
    }

    #[test]
    fn a_new_record_outside_the_contract_is_corrupt_at_its_offset() {
        let records = vec![
            WalRecord::Append(entries(1..=4, 1)),
            WalRecord::SaveSnapshot(snapshot(2, 1)),
            WalRecord::PurgeUpTo(LogIndex(3)),
        ];
        let (_, offsets) = file(&records);
        let err = replayed(records).unwrap_err();
        assert_eq!(
            err,
            WalError::Corrupt {
                offset: offsets[2],
                reason: "a purge up to index 3 is past the saved snapshot's last index 2".into()
            }
        );
        let err = replayed(vec![
            WalRecord::Append(entries(1..=4, 1)),
            WalRecord::TruncateFrom(LogIndex(6)),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("past the last index 4"), "{err}");
    }

    #[test]
    fn indexes_at_the_top_of_the_range_do_not_overflow() {
        let top = |term| Entry {
            index: LogIndex(u64::MAX),
            ..entry(1, term)
        };
        let d = replayed(vec![
            WalRecord::Snapshot {
                snapshot: snapshot(u64::MAX - 1, 1),
                compact_to: LogIndex(u64::MAX - 1),
            },
            WalRecord::Append(vec![top(1)]),
            WalRecord::Append(vec![top(2)]),
        ])
        .unwrap();
        assert_eq!(d.entries, vec![top(2)]);
        let wraps = vec![top(1), entry(0, 1)];
        assert!(replayed(vec![WalRecord::Append(wraps)]).is_err());
    }

    #[test]
    fn each_op_is_written_as_a_record_that_replays_as_that_op() {
        let ops = vec![
            PersistOp::HardState(HardState::default()),
            PersistOp::Append(entries(5..=6, 1)),
            PersistOp::TruncateFrom(LogIndex(4)),
            PersistOp::SaveSnapshot(snapshot(3, 1)),
            PersistOp::PurgeUpTo(LogIndex(2)),
            PersistOp::InstallSnapshot(snapshot(9, 2)),
        ];
        for op in ops {
            let record = WalRecord::from(op.clone());
            assert_eq!(record.ops(LogIndex(4), |_| None), vec![op]);
        }
    }
}
