//! The body of the `gossip` fuzz target: arbitrary bytes decoded as a gossip
//! packet and fed to a pool that knows a few members. Nothing may panic;
//! what decodes re-encodes to the same bytes; what does not decode changes
//! nothing and sends nothing.

use crate::clock::{Duration, Instant};

use super::packet::{decode_packet, encode_packet};
use super::pool::{Gossip, GossipAction, GossipInput};
use super::testnet::{address, lan_config, TestNet};

/// A pool of three that has converged: member 0 is the one under attack.
/// Built once and cloned for every input.
fn victim() -> Gossip {
    static VICTIM: std::sync::OnceLock<Gossip> = std::sync::OnceLock::new();
    VICTIM
        .get_or_init(|| {
            let mut net = TestNet::lan(3, 7);
            net.join_all();
            net.run_for(Duration::from_secs(3));
            assert!(net.converged_alive(), "the fuzz victim's pool converges");
            net.gossip(0).clone()
        })
        .clone()
}

pub fn gossip(data: &[u8]) {
    if let Ok(p) = decode_packet(data) {
        assert_eq!(
            encode_packet(&p),
            data,
            "a decoded packet re-encodes to its bytes"
        );
    }
    let mut g = victim();
    let now = Instant(0) + Duration::from_secs(3);
    let before = g.members();
    let mut out = Vec::new();
    let packet = GossipInput::Packet {
        from: address(9),
        bytes: data.to_vec(),
    };
    g.handle(now, packet, &mut out);
    if super::packet::decode_packet_bounded(data, &lan_config(0, 7)).is_err() {
        assert_eq!(g.members(), before, "a dropped packet changes no member");
        assert!(
            out.iter().all(|a| matches!(a, GossipAction::Event(_))),
            "a dropped packet is answered with nothing"
        );
    }
    // Then time passes and the pool keeps working with whatever it believed.
    let mut t = now;
    for _ in 0..20 {
        t = g.poll_timeout().unwrap_or(t).max(t);
        g.handle(t, GossipInput::Tick, &mut out);
    }
    // The same bytes split into pieces (a length byte, then the piece).
    let mut rest = data;
    while let [len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (piece, tail) = tail.split_at(n);
        let input = GossipInput::Packet {
            from: address(8),
            bytes: piece.to_vec(),
        };
        g.handle(t, input, &mut out);
        rest = tail;
    }
}

/// The key of the `gossip_sealed` target's victim pool.
pub const SEALED_VICTIM_KEY: [u8; 32] = [0x42; 32];

/// An encrypted pool of three that has converged; member 0 is the victim.
fn sealed_victim() -> Gossip {
    static VICTIM: std::sync::OnceLock<Gossip> = std::sync::OnceLock::new();
    VICTIM
        .get_or_init(|| {
            let configs = (0..3)
                .map(|i| {
                    let mut c = lan_config(i, 7);
                    c.keyring = super::keyring::Keyring::new(vec![SEALED_VICTIM_KEY.to_vec()])
                        .expect("an AES-256 key");
                    c
                })
                .collect();
            let mut net = TestNet::new(configs, 7);
            net.join_all();
            net.run_for(Duration::from_secs(3));
            assert!(
                net.converged_alive(),
                "the sealed fuzz victim's pool converges"
            );
            net.gossip(0).clone()
        })
        .clone()
}

/// The body of the `gossip_sealed` target: the sealed-packet opener and
/// everything behind it. The first byte chooses: odd, the rest is sealed
/// with the victim's key (so the fuzzer reaches every decoder and the
/// keyring operations behind a good seal), and sealing then opening gives
/// it back; even, the rest goes in as it is, and since it cannot carry a
/// valid seal, it changes no member, no key, and is answered with nothing.
pub fn sealed(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut g = sealed_victim();
    let now = Instant(0) + Duration::from_secs(3);
    let before = (g.members(), g.keyring().clone());
    let bytes = if mode & 1 == 1 {
        let mut rng = crate::rng::Rng::new(u64::from(mode));
        let sealed = super::seal::seal(&SEALED_VICTIM_KEY, super::seal::nonce(&mut rng), rest);
        assert_eq!(
            super::seal::open(&[SEALED_VICTIM_KEY.to_vec()], &sealed).as_deref(),
            Ok(rest),
            "a sealed packet opens to what was sealed"
        );
        sealed
    } else {
        rest.to_vec()
    };
    let mut out = Vec::new();
    let input = GossipInput::Packet {
        from: address(1),
        bytes: bytes.clone(),
    };
    g.handle(now, input, &mut out);
    if mode & 1 == 0 && super::seal::open(&[SEALED_VICTIM_KEY.to_vec()], &bytes).is_err() {
        assert_eq!(
            (g.members(), g.keyring().clone()),
            before,
            "an unopened packet changes nothing"
        );
        assert!(
            out.iter().all(|a| matches!(a, GossipAction::Event(_))),
            "an unopened packet is answered with nothing"
        );
    }
    let mut t = now;
    for _ in 0..20 {
        t = g.poll_timeout().unwrap_or(t).max(t);
        g.handle(t, GossipInput::Tick, &mut out);
    }
}
