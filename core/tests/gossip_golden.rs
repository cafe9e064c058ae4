//! Golden vectors for gossip packets: one fixed example of each packet body
//! and each update, encoded and compared byte for byte with the files in
//! `tests/golden_gossip/`, and each file decoded back to its value. A change
//! here is a wire-format change: members of different builds would stop
//! understanding each other. A sibling of `golden.rs`, with its own
//! directory. `TERN_BLESS=1 cargo test -p tern-core --test gossip_golden`
//! rewrites every file; a missing file fails the test after writing it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tern_core::gossip::packet::{KeyBytes, MemberInfo, PeerEntry, PeerState};
use tern_core::gossip::{
    decode_packet, encode_packet, Body, KeyOp, KeyResult, Packet, Tags, Update, Version,
    GOSSIP_VERSION,
};
use tern_core::NodeId;

const S1: NodeId = NodeId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);

fn info() -> MemberInfo {
    MemberInfo {
        name: "s1".into(),
        node_id: S1,
        address: "10.0.0.1:8301".into(),
        tags: Tags::server("dc1", 8300, S1, 3, "0.1.0"),
        version: Version {
            generation: 1_764_547_200_000,
            incarnation: 7,
        },
    }
}

fn updates() -> Vec<(&'static str, Update)> {
    let v = Version {
        generation: 3,
        incarnation: 300,
    };
    vec![
        ("alive", Update::Alive(info())),
        (
            "suspect",
            Update::Suspect {
                name: "s2".into(),
                version: v,
                from: "s1".into(),
            },
        ),
        (
            "dead",
            Update::Dead {
                name: "s2".into(),
                version: v,
                from: "s1".into(),
            },
        ),
        (
            "leave",
            Update::Dead {
                name: "s3".into(),
                version: v,
                from: "s3".into(),
            },
        ),
        (
            "prune",
            Update::Prune {
                name: "s3".into(),
                version: v,
                from: "s1".into(),
            },
        ),
    ]
}

fn packets() -> Vec<(String, Packet)> {
    let plain = |body| Packet {
        body,
        updates: Vec::new(),
    };
    let mut out = vec![
        (
            "ping".to_string(),
            plain(Body::Ping {
                seq: 1,
                target: "s2".into(),
            }),
        ),
        ("ack".into(), plain(Body::Ack { seq: 70_000 })),
        (
            "ping_req".into(),
            plain(Body::PingReq {
                seq: u32::MAX,
                target: "s3".into(),
                address: "10.0.0.3:8301".into(),
            }),
        ),
        ("nack".into(), plain(Body::Nack { seq: 2 })),
        (
            "push_pull".into(),
            plain(Body::PushPull {
                seq: 9,
                reply: true,
                join: true,
                members: vec![
                    PeerEntry {
                        info: info(),
                        state: PeerState::Alive,
                    },
                    PeerEntry {
                        info: MemberInfo {
                            name: "c1".into(),
                            node_id: NodeId(2),
                            address: "10.0.0.9:8301".into(),
                            tags: Tags::client("dc1", NodeId(2), "0.1.0"),
                            version: Version::default(),
                        },
                        state: PeerState::Suspect,
                    },
                    PeerEntry {
                        info: info(),
                        state: PeerState::Dead,
                    },
                    PeerEntry {
                        info: info(),
                        state: PeerState::Left,
                    },
                ],
            }),
        ),
    ];
    // Keyring operations (appended to `Body`; older files are unchanged).
    let key = vec![0x5a; 32];
    for (name, op) in [
        ("key_list", KeyOp::List),
        ("key_install", KeyOp::Install(key.clone())),
        ("key_use", KeyOp::Use(vec![0x11; 16])),
        ("key_remove", KeyOp::Remove(vec![0x22; 24])),
    ] {
        out.push((name.into(), plain(Body::KeyRequest { seq: 12, op })));
    }
    out.push((
        "key_response".into(),
        plain(Body::KeyResponse {
            seq: 12,
            result: KeyResult {
                ok: false,
                message: "removing the primary key is not allowed".into(),
                keys: vec![KeyBytes(key), KeyBytes(vec![0x11; 16])],
            },
        }),
    ));
    for (name, u) in updates() {
        out.push((
            format!("gossip_{name}"),
            Packet {
                body: Body::Gossip,
                updates: vec![u],
            },
        ));
    }
    // A ping carrying the news at once, as pools piggyback it (the four
    // kinds of the first version: the file predates `Prune`, which has a
    // file of its own).
    out.push((
        "ping_with_updates".into(),
        Packet {
            body: Body::Ping {
                seq: 5,
                target: "s2".into(),
            },
            updates: updates()
                .into_iter()
                .filter(|(name, _)| *name != "prune")
                .map(|(_, u)| u)
                .collect(),
        },
    ));
    out
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden_gossip")
}

#[test]
fn every_gossip_packet_matches_its_golden_file() {
    let bless = std::env::var("TERN_BLESS").is_ok_and(|v| v == "1");
    let mut seen = BTreeSet::new();
    let mut failures = Vec::new();
    for (name, packet) in packets() {
        let encoded = encode_packet(&packet);
        assert_eq!(encoded[0], GOSSIP_VERSION);
        let file = format!("{name}.bin");
        assert!(seen.insert(file.clone()), "two vectors named {name}");
        let path = dir().join(&file);
        match std::fs::read(&path) {
            Ok(_) if bless => std::fs::write(&path, &encoded).unwrap(),
            Ok(stored) => {
                if stored != encoded {
                    failures.push(format!("{file}: encoding differs"));
                }
                match decode_packet(&stored) {
                    Ok(p) if p == packet => {}
                    other => failures.push(format!("{file}: decodes to {other:?}")),
                }
            }
            Err(_) => {
                std::fs::create_dir_all(dir()).unwrap();
                std::fs::write(&path, &encoded).unwrap();
                if !bless {
                    failures.push(format!("{file}: was missing; written (commit it)"));
                }
            }
        }
    }
    for f in std::fs::read_dir(dir()).unwrap() {
        let name = f.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".bin") && !seen.contains(&name) {
            failures.push(format!("{name}: no vector claims this file; delete it"));
        }
    }
    assert!(
        failures.is_empty(),
        "gossip golden vectors differ (if intended, bump GOSSIP_VERSION and re-bless; \
         see tests/golden_gossip/README.md):\n{}",
        failures.join("\n")
    );
}

/// The decoder is strict: every truncation, any trailing byte, an unknown
/// version and an over-long varint are errors.
#[test]
fn the_gossip_codec_is_strict() {
    for (name, packet) in packets() {
        let b = encode_packet(&packet);
        for cut in 0..b.len() {
            assert!(decode_packet(&b[..cut]).is_err(), "{name}: prefix of {cut}");
        }
        let mut long = b.clone();
        long.push(0);
        assert!(decode_packet(&long).is_err(), "{name}: trailing byte");
        let mut v = b.clone();
        v[0] = GOSSIP_VERSION + 1;
        assert!(decode_packet(&v).is_err(), "{name}: unknown version");
    }
    // Nack { seq: 2 } is [version, body 3, seq 2, no updates]; spell the seq
    // 2 as the two-byte varint 0x82 0x00.
    let nack = encode_packet(&Packet {
        body: Body::Nack { seq: 2 },
        updates: vec![],
    });
    assert_eq!(nack, [GOSSIP_VERSION, 3, 2, 0]);
    assert!(decode_packet(&[GOSSIP_VERSION, 3, 0x82, 0x00, 0]).is_err());
}
