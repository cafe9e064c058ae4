//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/`) through the
//! fuzz targets' bodies, so every `cargo test` re-checks the inputs the
//! fuzzer found interesting, with no nightly and no cargo-fuzz.
//!
//! `seed-*` files are written by `write_seed_corpus` below (run it with
//! `--ignored` after a format change); `found-*` files are small inputs the
//! fuzzer produced, kept because they reached new code.

use std::path::{Path, PathBuf};

use tern_core::fsm::{Command, KvCommand, KvWrite};
use tern_core::raft::{
    AppendEntries, Entry, EntryPayload, HardState, RaftMessage, Snapshot, SnapshotMeta, VoteRequest,
};
use tern_core::rpc::{Op, ReadMode, Reply, ReplyBody, Request, Response, RpcError};
use tern_core::wire::{self, fuzz_check, WalRecord};
use tern_core::{Datacenter, LogIndex, Message, MessageBody, NodeId, Term};

/// A fuzz target's body.
type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 3] = [
    ("frame", fuzz_check::frame),
    ("message", fuzz_check::message),
    ("wal", fuzz_check::wal),
];

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

#[test]
fn the_fuzz_corpus_replays_cleanly() {
    for (target, check) in TARGETS {
        let dir = corpus_dir(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|f| f.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no corpus for the {target} target");
        for path in files {
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{target}: {} fails", path.display());
        }
    }
}

fn kv_set(key: &str, value: &[u8]) -> Command {
    Command::Kv(KvCommand::Set(KvWrite {
        key: key.into(),
        flags: 0,
        value: value.to_vec(),
    }))
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: EntryPayload::Command(kv_set(&format!("k{index}"), b"v")),
    }
}

fn messages() -> Vec<Vec<u8>> {
    let msg = |body| Message {
        from: NodeId(1),
        to: NodeId(2),
        body,
    };
    let request = Request {
        datacenter: Datacenter("dc1".into()),
        read_mode: ReadMode::Stale,
        blocking: None,
        op: Op::KvKeys {
            prefix: "a/".into(),
            separator: Some("/".into()),
        },
    };
    let ok: Response = Ok(Reply {
        index: 9,
        known_leader: true,
        last_contact_ms: 0,
        body: ReplyBody::Keys(vec!["a/b".into()]),
    });
    vec![
        wire::encode_message(&msg(MessageBody::Raft(RaftMessage::VoteRequest(
            VoteRequest {
                term: Term(2),
                last_log_index: LogIndex(5),
                last_log_term: Term(1),
                pre_vote: true,
                leadership_transfer: false,
            },
        )))),
        wire::encode_message(&msg(MessageBody::Raft(RaftMessage::AppendEntries(
            AppendEntries {
                term: Term(2),
                prev_log_index: LogIndex(5),
                prev_log_term: Term(1),
                entries: vec![entry(6, 2), entry(7, 2)],
                leader_commit: LogIndex(5),
                seq: 3,
            },
        )))),
        wire::encode_message(&msg(MessageBody::Forward {
            id: 4,
            request: request.clone(),
        })),
        wire::encode_message(&msg(MessageBody::ForwardReply {
            id: 4,
            response: Err(RpcError::NoLeader),
        })),
        wire::encode_request(&request),
        wire::encode_response(&ok),
        wire::encode_command(&kv_set("k", b"value")),
        wire::encode_command(&Command::Kv(KvCommand::DeleteTree {
            prefix: "a/".into(),
        })),
    ]
}

fn wal_records() -> Vec<WalRecord> {
    vec![
        WalRecord::HardState(HardState {
            term: Term(2),
            vote: Some(NodeId(1)),
        }),
        WalRecord::Append((1..=3).map(|i| entry(i, 1)).collect()),
        WalRecord::Append(vec![entry(3, 2)]),
        WalRecord::Snapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    last_index: LogIndex(2),
                    last_term: Term(1),
                    membership: Default::default(),
                },
                data: vec![1, 2, 3],
            },
            compact_to: LogIndex(2),
        },
    ]
}

fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();

    // frame: [limit][piece seed][stream]
    let mut stream = Vec::new();
    for p in [&b"hello"[..], b"", b"a longer frame payload"] {
        wire::encode_frame(p, &mut stream);
    }
    let mut partial = stream.clone();
    partial.extend_from_slice(&[0, 0, 0, 9, 1, 2]);
    let mut over = stream.clone();
    over.extend_from_slice(&[0, 0, 0, 63]);
    for (name, limit, bytes) in [
        ("three", 40u8, stream),
        ("partial", 40, partial),
        ("over-limit", 30, over),
    ] {
        let mut data = vec![limit, 7];
        data.extend_from_slice(&bytes);
        out.push(("frame", name.to_string(), data));
    }

    for (i, m) in messages().into_iter().enumerate() {
        out.push(("message", format!("{i}"), m));
    }

    // wal mode 0: a raw file; mode 1: checksummed [len: u8][payload] pieces.
    let mut file = Vec::new();
    for r in wal_records() {
        wire::encode_record(&r, &mut file);
    }
    let mut torn = file.clone();
    torn.truncate(file.len() - 5);
    // A flipped byte inside the second record, with intact records after it.
    let mut corrupt = file.clone();
    corrupt[30] ^= 0x10;
    let mut zero_tail = file.clone();
    zero_tail.extend_from_slice(&[0; 12]);
    let mut pieces = Vec::new();
    for r in wal_records() {
        let mut rec = Vec::new();
        wire::encode_record(&r, &mut rec);
        let payload = &rec[8..];
        pieces.push(u8::try_from(payload.len()).expect("seed payloads fit a u8 length"));
        pieces.extend_from_slice(payload);
    }
    for (name, mode, bytes) in [
        ("file", 0u8, file),
        ("torn", 0, torn),
        ("corrupt-middle", 0, corrupt),
        ("zero-tail", 0, zero_tail),
        ("pieces", 1, pieces),
    ] {
        let mut data = vec![mode];
        data.extend_from_slice(&bytes);
        out.push(("wal", name.to_string(), data));
    }
    out
}

#[test]
#[ignore = "writes fuzz/corpus/*/seed-*; run with --ignored to regenerate"]
fn write_seed_corpus() {
    for (target, name, data) in seeds() {
        assert!(data.len() < 4096, "{target}/{name} is too big for a seed");
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    }
}

#[test]
fn the_seeds_pass_their_targets() {
    for (target, name, data) in seeds() {
        let check = TARGETS.iter().find(|(t, _)| *t == target).unwrap().1;
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{target}/{name} fails");
    }
}
