//! Gossip encryption and keyring rotation on the in-memory network
//! (`tern_core::gossip::testnet`): memberlist's sealing rules (security.go:
//! seal with the primary, open with any installed key; `GossipVerifyIncoming`
//! / `GossipVerifyOutgoing` for a migration) and serf's key manager
//! (keymanager_test.go: install, use, remove across the pool, the primary
//! cannot be removed, no keyring without encryption).

use tern_core::gossip::packet::MemberInfo;
use tern_core::gossip::seal::{self, SEALED_VERSION, SEAL_OVERHEAD};
use tern_core::gossip::testnet::{address, lan_config, name, TestNet};
use tern_core::gossip::{
    encode_packet, Body, GossipAction, GossipConfig, GossipEvent, GossipInput, KeyOp, KeyReport,
    Keyring, Packet, Status, Tags, Update, Version,
};
use tern_core::rng::Rng;
use tern_core::{Duration, NodeId};

const A: [u8; 32] = [0xA1; 32];
const B: [u8; 16] = [0xB2; 16];
const C: [u8; 24] = [0xC3; 24];

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn keyed(i: usize, seed: u64, keys: &[&[u8]]) -> GossipConfig {
    let mut c = lan_config(i, seed);
    c.keyring = Keyring::new(keys.iter().map(|k| k.to_vec()).collect()).unwrap();
    c
}

/// `n` members with `keys`, joined through member 0 and converged.
fn encrypted(n: usize, seed: u64, keys: &[&[u8]]) -> TestNet {
    let mut net = TestNet::new((0..n).map(|i| keyed(i, seed, keys)).collect(), seed);
    net.join_all();
    let took = net.run_until(secs(30), TestNet::converged_alive);
    assert!(took.is_some(), "{n} encrypted members did not converge");
    net
}

fn sends(out: &[GossipAction]) -> Vec<&Vec<u8>> {
    out.iter()
        .filter_map(|a| match a {
            GossipAction::Send { bytes, .. } => Some(bytes),
            GossipAction::Event(_) => None,
        })
        .collect()
}

fn dropped(net: &TestNet, i: usize) -> usize {
    net.events(i)
        .iter()
        .filter(|(_, e)| matches!(e, GossipEvent::PacketDropped { .. }))
        .count()
}

/// The last `KeyringDone` member `i` reported.
fn report(net: &TestNet, i: usize) -> Option<KeyReport> {
    net.events(i).iter().rev().find_map(|(_, e)| match e {
        GossipEvent::KeyringDone(r) => Some(r.clone()),
        _ => None,
    })
}

fn keys_of(net: &TestNet, i: usize) -> Vec<Vec<u8>> {
    net.gossip(i).keyring().keys().to_vec()
}

/// An encrypted pool converges and detects a failure as a plain one does,
/// and every byte it sends, datagram or stream, is sealed.
#[test]
fn an_encrypted_pool_converges_and_sends_only_sealed_packets() {
    let mut net = encrypted(5, 1, &[&A]);
    let mut g = net.gossip(0).clone();
    let mut out = Vec::new();
    let mut t = net.now;
    for _ in 0..50 {
        t = g.poll_timeout().unwrap().max(t);
        g.handle(t, GossipInput::Tick, &mut out);
    }
    g.handle(t, GossipInput::Join(vec![address(3)]), &mut out);
    let sent = sends(&out);
    assert!(sent.len() > 10, "the pool kept talking: {}", sent.len());
    assert!(
        out.iter()
            .any(|a| matches!(a, GossipAction::Send { stream: true, .. })),
        "a stream (the join's push-pull) is among them"
    );
    for b in &sent {
        assert_eq!(b[0], SEALED_VERSION);
        assert!(seal::open(&[A.to_vec()], b).is_ok());
    }
    // A failure is still detected everywhere.
    net.kill(4);
    let took = net.run_until(secs(30), |n| n.all_agree(&[(4, Status::Failed)]));
    assert!(
        took.is_some(),
        "the killed member was not failed everywhere"
    );
}

/// Sealed datagrams still fit memberlist's UDP budget: queued news fills a
/// packet up to `packet_bytes_max` including the 29 bytes sealing adds.
#[test]
fn sealed_datagrams_stay_within_the_packet_limit() {
    let net = encrypted(5, 2, &[&B]);
    let mut g = net.gossip(0).clone();
    // Plenty of news: 200 new members with small tags of varied sizes
    // arrive, each in a sealed packet of its own, and member 0 queues them
    // for gossip (small pieces pack a datagram to within a few bytes).
    let mut rng = Rng::new(2);
    let mut out = Vec::new();
    for k in 0..200u128 {
        let id = NodeId(100 + k);
        let mut tags = Tags(Default::default());
        tags.0.insert("x".into(), "y".repeat(k as usize % 7));
        let info = MemberInfo {
            name: format!("extra{k}"),
            node_id: id,
            address: format!("10.9.0.{}:8301", k + 1),
            tags,
            version: Version::default(),
        };
        let plain = encode_packet(&Packet {
            body: Body::Gossip,
            updates: vec![Update::Alive(info)],
        });
        let input = GossipInput::Packet {
            from: address(1),
            bytes: seal::seal(&B, seal::nonce(&mut rng), &plain),
        };
        g.handle(net.now, input, &mut out);
    }
    assert_eq!(g.members().len(), 205);
    out.clear();
    let mut t = net.now;
    for _ in 0..20 {
        t = g.poll_timeout().unwrap().max(t);
        g.handle(t, GossipInput::Tick, &mut out);
    }
    let mut largest = 0;
    for a in &out {
        if let GossipAction::Send {
            bytes,
            stream: false,
            ..
        } = a
        {
            assert_eq!(bytes[0], SEALED_VERSION);
            assert!(bytes.len() <= 1400, "a sealed datagram of {}", bytes.len());
            largest = largest.max(bytes.len());
        }
    }
    assert!(
        largest > 1380,
        "the news filled a packet: largest {largest}"
    );
    assert_eq!(SEAL_OVERHEAD, 29);
}

/// A member with another key, or with none, cannot join an encrypted pool:
/// its packets do not open, so it is never a member, and the pool's members
/// are untouched. A plain pool likewise refuses a sealed newcomer.
#[test]
fn a_member_with_the_wrong_key_or_none_cannot_join() {
    for (label, newcomer) in [
        ("another key", keyed(3, 3, &[&B])),
        ("no key", lan_config(3, 3)),
    ] {
        let mut net = encrypted(3, 3, &[&A]);
        let i = net.add(newcomer);
        net.input(i, GossipInput::Join(vec![address(0)]));
        net.run_for(secs(30));
        for j in 0..3 {
            assert!(net.view(j, i).is_none(), "{label}: member {j} knows it");
            assert_eq!(net.gossip(j).members().len(), 3, "{label}");
        }
        assert_eq!(net.gossip(i).members().len(), 1, "{label}: it knows nobody");
        assert!(
            dropped(&net, 0) > 0,
            "{label}: the refused packets were logged"
        );
        assert!(
            net.events(i)
                .iter()
                .all(|(_, e)| !matches!(e, GossipEvent::Joined { .. })),
            "{label}: its join never completed"
        );
    }
    // The reverse: a plain pool and a sealed newcomer.
    let mut net = TestNet::lan(3, 4);
    net.join_all();
    net.run_until(secs(30), TestNet::converged_alive).unwrap();
    let i = net.add(keyed(3, 4, &[&A]));
    net.input(i, GossipInput::Join(vec![address(0)]));
    net.run_for(secs(30));
    assert!(net.view(0, i).is_none());
    assert!(dropped(&net, 0) > 0);
}

/// Consul's migration to encryption: with `encrypt_verify_incoming` and
/// `encrypt_verify_outgoing` off, members that hold the key talk in the
/// clear and take sealed packets too, so they form one pool with members
/// that have no key yet; with outgoing on, they seal, and a member with
/// the key and incoming off still takes both.
#[test]
fn verify_flags_off_let_a_cluster_migrate_to_encryption() {
    let migrating = |i: usize, outgoing: bool| {
        let mut c = keyed(i, 5, &[&A]);
        c.encrypt_verify_incoming = false;
        c.encrypt_verify_outgoing = outgoing;
        c
    };
    // Step 1: two plain members and two with the key, flags off.
    let configs = vec![
        lan_config(0, 5),
        migrating(1, false),
        lan_config(2, 5),
        migrating(3, false),
    ];
    let mut net = TestNet::new(configs, 5);
    net.join_all();
    assert!(
        net.run_until(secs(30), TestNet::converged_alive).is_some(),
        "plain and keyed members with the flags off form one pool"
    );
    // Step 2: every member has the key; two seal what they send; incoming
    // still accepts both.
    let configs = vec![
        migrating(0, true),
        migrating(1, false),
        migrating(2, true),
        migrating(3, false),
    ];
    let mut net = TestNet::new(configs, 6);
    net.join_all();
    assert!(net.run_until(secs(30), TestNet::converged_alive).is_some());
    assert_eq!(dropped(&net, 1), 0);
}

/// A keyring operation must arrive sealed: a plain `KeyRequest` is dropped
/// and answered with nothing, even by a member that takes plain packets.
#[test]
fn a_plain_keyring_request_is_dropped() {
    let mut c = keyed(0, 7, &[&A]);
    c.encrypt_verify_incoming = false;
    let mut net = TestNet::new(vec![c, keyed(1, 7, &[&A])], 7);
    net.join_all();
    net.run_until(secs(10), TestNet::converged_alive).unwrap();
    let mut g = net.gossip(0).clone();
    let bytes = encode_packet(&Packet {
        body: Body::KeyRequest {
            seq: 1,
            op: KeyOp::Install(B.to_vec()),
        },
        updates: vec![],
    });
    let mut out = Vec::new();
    g.handle(
        net.now,
        GossipInput::Packet {
            from: address(1),
            bytes,
        },
        &mut out,
    );
    assert!(sends(&out).is_empty());
    assert_eq!(g.keyring().keys(), &[A.to_vec()]);
    assert!(matches!(
        &out[..],
        [GossipAction::Event(GossipEvent::PacketDropped { error, .. })] if error.contains("not encrypted")
    ));
}

/// Bad sealed input: a flipped bit, a truncation, another key's seal, a
/// sealed packet to a pool without keys, a plain one to a pool that wants
/// sealed ones. Each is dropped, changes no member, sends nothing, and the
/// log line is rate limited.
#[test]
fn packets_that_do_not_open_change_nothing() {
    let net = encrypted(3, 8, &[&A]);
    let mut g = net.gossip(0).clone();
    let before = g.members();
    let ping = encode_packet(&Packet {
        body: Body::Ping {
            seq: 1,
            target: name(0),
        },
        updates: vec![],
    });
    let mut rng = Rng::new(9);
    let good = seal::seal(&A, seal::nonce(&mut rng), &ping);
    let mut flipped = good.clone();
    flipped[20] ^= 0x40;
    let bad = [
        flipped,
        good[..good.len() - 1].to_vec(),
        good[..SEAL_OVERHEAD - 1].to_vec(),
        seal::seal(&B, seal::nonce(&mut rng), &ping),
        ping.clone(),
        vec![SEALED_VERSION],
        vec![SEALED_VERSION; 6 << 20],
    ];
    let mut out = Vec::new();
    for (k, bytes) in bad.iter().enumerate() {
        let input = GossipInput::Packet {
            from: "10.6.6.6:1".into(),
            bytes: bytes.clone(),
        };
        g.handle(net.now, input, &mut out);
        assert_eq!(g.members(), before, "bad packet {k} changed a member");
    }
    assert!(sends(&out).is_empty(), "nothing answered");
    assert_eq!(out.len(), 1, "one log line per interval");
    // The good one is answered, sealed.
    out.clear();
    let input = GossipInput::Packet {
        from: address(1),
        bytes: good,
    };
    g.handle(net.now + secs(1), input, &mut out);
    let answer = sends(&out);
    assert_eq!(answer.len(), 1);
    assert_eq!(answer[0][0], SEALED_VERSION);

    // A pool with no keyring drops a sealed packet.
    let mut net = TestNet::lan(2, 10);
    net.join_all();
    net.run_until(secs(10), TestNet::converged_alive).unwrap();
    let mut g = net.gossip(0).clone();
    let mut out = Vec::new();
    let input = GossipInput::Packet {
        from: address(1),
        bytes: seal::seal(&A, seal::nonce(&mut rng), &ping),
    };
    g.handle(net.now, input, &mut out);
    assert!(matches!(
        &out[..],
        [GossipAction::Event(GossipEvent::PacketDropped { error, .. })] if error.contains("encryption is not configured")
    ));
}

fn op(net: &mut TestNet, at: usize, id: u64, op: KeyOp) -> KeyReport {
    net.input(at, GossipInput::Keyring { id, op });
    net.run_until(secs(10), |n| report(n, at).is_some_and(|r| r.id == id))
        .expect("the keyring operation completes");
    report(net, at).unwrap()
}

/// serf's `TestSerf_InstallKey` / `UseKey` / `RemoveKey`, one after the
/// other: a live pool rotates from key A to key B without a restart, every
/// member answering each step; it stays converged throughout, and
/// afterwards a newcomer with only B joins while one with only A cannot.
#[test]
fn a_live_pool_rotates_its_key_install_use_remove() {
    let mut net = encrypted(4, 11, &[&A]);
    let r = op(&mut net, 0, 1, KeyOp::Install(B.to_vec()));
    assert_eq!(r.num_nodes, 4);
    assert_eq!(r.responses.len(), 4, "every member answered: {r:?}");
    assert!(r.responses.values().all(|x| x.ok && x.keys.len() == 2));
    for i in 0..4 {
        assert_eq!(keys_of(&net, i), vec![A.to_vec(), B.to_vec()], "member {i}");
    }
    assert!(net
        .events(2)
        .iter()
        .any(|(_, e)| matches!(e, GossipEvent::KeyringChanged(k) if k.keys().len() == 2)));

    let r = op(&mut net, 1, 2, KeyOp::Use(B.to_vec()));
    assert!(
        r.responses.len() == 4 && r.responses.values().all(|x| x.ok),
        "{r:?}"
    );
    for i in 0..4 {
        assert_eq!(keys_of(&net, i), vec![B.to_vec(), A.to_vec()], "member {i}");
    }
    net.run_for(secs(5));
    assert!(
        net.converged_alive(),
        "the pool stays whole after the switch"
    );

    let r = op(&mut net, 2, 3, KeyOp::Remove(A.to_vec()));
    assert!(
        r.responses.len() == 4 && r.responses.values().all(|x| x.ok),
        "{r:?}"
    );
    for i in 0..4 {
        assert_eq!(keys_of(&net, i), vec![B.to_vec()], "member {i}");
    }
    let list = op(&mut net, 3, 4, KeyOp::List);
    assert!(list
        .responses
        .values()
        .all(|x| x.keys.len() == 1 && x.keys[0].0 == B.to_vec()));
    net.run_for(secs(10));
    assert!(net.converged_alive());
    assert_eq!(
        dropped(&net, 0),
        0,
        "no packet failed to open during the rotation"
    );

    // A newcomer with only A is refused; one with only B joins.
    let old = net.add(keyed(4, 11, &[&A]));
    net.input(old, GossipInput::Join(vec![address(0)]));
    let new = net.add(keyed(5, 11, &[&B]));
    net.input(new, GossipInput::Join(vec![address(1)]));
    net.run_for(secs(20));
    for i in 0..4 {
        assert!(
            net.view(i, old).is_none(),
            "member {i} knows the A-only newcomer"
        );
        assert_eq!(net.view(i, new).map(|m| m.status), Some(Status::Alive));
    }
}

/// memberlist refuses to remove the primary key; every member says so and
/// keeps its keyring. `use` of a key that is not installed is refused too,
/// and a key that is not an AES size is refused before anyone is asked.
#[test]
fn refused_keyring_operations_change_no_keyring() {
    let mut net = encrypted(3, 12, &[&A, &C]);
    let r = op(&mut net, 0, 1, KeyOp::Remove(A.to_vec()));
    assert_eq!(r.responses.len(), 3);
    for x in r.responses.values() {
        assert!(!x.ok);
        assert_eq!(x.message, "removing the primary key is not allowed");
    }
    let r = op(&mut net, 0, 2, KeyOp::Use(B.to_vec()));
    assert!(r
        .responses
        .values()
        .all(|x| !x.ok && x.message == "requested key is not in the keyring"));
    let r = op(&mut net, 0, 3, KeyOp::Install(vec![1; 20]));
    assert_eq!(r.responses.len(), 1, "nobody else was asked");
    assert_eq!(
        r.responses[&name(0)].message,
        "key size must be 16, 24 or 32 bytes"
    );
    for i in 0..3 {
        assert_eq!(keys_of(&net, i), vec![A.to_vec(), C.to_vec()]);
    }
}

/// Without encryption there is no keyring to change, and no key is sent
/// in the clear: the operation ends at once with serf's message.
#[test]
fn keyring_operations_without_encryption_send_nothing() {
    let mut net = TestNet::lan(3, 13);
    net.join_all();
    net.run_until(secs(10), TestNet::converged_alive).unwrap();
    let mut g = net.gossip(0).clone();
    let mut out = Vec::new();
    let install = GossipInput::Keyring {
        id: 1,
        op: KeyOp::Install(A.to_vec()),
    };
    g.handle(net.now, install, &mut out);
    assert!(sends(&out).is_empty());
    let [GossipAction::Event(GossipEvent::KeyringDone(r))] = &out[..] else {
        panic!("{out:?}");
    };
    assert_eq!(r.num_nodes, 3);
    assert_eq!(
        r.responses[&name(0)].message,
        "No keyring to modify (encryption not enabled)"
    );
    out.clear();
    g.handle(
        net.now,
        GossipInput::Keyring {
            id: 2,
            op: KeyOp::List,
        },
        &mut out,
    );
    let [GossipAction::Event(GossipEvent::KeyringDone(r))] = &out[..] else {
        panic!("{out:?}");
    };
    assert_eq!(
        r.responses[&name(0)].message,
        "Keyring is empty (encryption not enabled)"
    );
}

/// A member that does not answer (it crashed) is missing from the report
/// once serf's query timeout passes, and counted in `num_nodes`.
#[test]
fn a_silent_member_is_missing_after_the_query_timeout() {
    let mut net = encrypted(4, 14, &[&A]);
    net.kill(3);
    net.input(
        0,
        GossipInput::Keyring {
            id: 7,
            op: KeyOp::Install(B.to_vec()),
        },
    );
    // LAN: 200 ms × 16 × ceil(log10(5)) = 3.2 s.
    net.run_for(Duration::from_millis(3100));
    assert!(report(&net, 0).is_none(), "not before the timeout");
    net.run_for(Duration::from_millis(200));
    let r = report(&net, 0).expect("done at the timeout");
    assert_eq!(r.num_nodes, 4);
    assert_eq!(r.responses.len(), 3);
    assert!(!r.responses.contains_key(&name(3)));
}
