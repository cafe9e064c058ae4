//! Sealed gossip packets: AES-GCM as memberlist encrypts (security.go, read
//! for facts): a version byte, a 12-byte nonce, then the ciphertext with its
//! 16-byte tag; sealed with the keyring's primary key, opened by trying
//! every installed key.
//!
//! ```text
//! [SEALED_VERSION][nonce: 12][ciphertext][tag: 16]
//! ```
//!
//! Two choices of ours:
//!
//! - **The version byte is `0xE1`**, not memberlist's `1`: a plain packet
//!   starts with the codec's version byte (`1`), and a receiver that allows
//!   plain packets (`encrypt_verify_incoming = false`, while a cluster
//!   migrates) tells the two apart by the first byte instead of trying
//!   every key on every plain packet. The byte is also the authenticated
//!   data, so it cannot be changed in flight.
//! - **Nonces come from the pool's seeded RNG** ([`crate::rng::Rng`], a
//!   stream of its own), because the core has no OS randomness. GCM needs
//!   nonces that never repeat under one key, not unpredictable ones (they
//!   travel in the clear anyway): the daemon seeds each pool from OS
//!   randomness on every start, and the simulator from its seeded world, so
//!   two senders share a nonce stream only if they share a 64-bit seed.
//!   96 random bits per packet keep the chance of a repeat within one
//!   stream at the birthday bound (2^48 packets per key).

use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm};

use crate::rng::Rng;

/// The first byte of a sealed packet.
pub const SEALED_VERSION: u8 = 0xE1;
pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
/// What sealing adds to a packet (memberlist's `encryptOverhead`, 29).
pub const SEAL_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

type Aes192Gcm = AesGcm<aes_gcm::aes::Aes192, aes_gcm::aead::consts::U12>;

/// Why a sealed packet did not open. The sender's fault (or an attacker's);
/// nothing changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// Shorter than a version byte, a nonce and a tag.
    TooShort(usize),
    /// No installed key authenticates it (memberlist: "no installed keys
    /// could decrypt the message").
    NoKey,
}

impl core::fmt::Display for OpenError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            OpenError::TooShort(n) => write!(f, "sealed packet of {n} bytes is too short"),
            OpenError::NoKey => f.write_str("no installed key could decrypt the packet"),
        }
    }
}

/// Whether `bytes` is a sealed packet (by its first byte).
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.first() == Some(&SEALED_VERSION)
}

/// A fresh nonce from `rng`.
pub fn nonce(rng: &mut Rng) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    n[8..].copy_from_slice(&rng.next_u64().to_le_bytes()[..4]);
    n
}

/// Seals `plain` with `key` (16, 24 or 32 bytes) and `nonce`.
///
/// # Panics
/// If `key` is not an AES key size: keys are validated when they enter a
/// keyring ([`super::keyring::validate_key`]).
pub fn seal(key: &[u8], nonce: [u8; NONCE_LEN], plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plain.len() + SEAL_OVERHEAD);
    out.push(SEALED_VERSION);
    out.extend_from_slice(&nonce);
    let payload = Payload {
        msg: plain,
        aad: &[SEALED_VERSION],
    };
    let n = GenericArray::from_slice(&nonce);
    let sealed = match key.len() {
        16 => Aes128Gcm::new_from_slice(key).map(|c| c.encrypt(n, payload)),
        24 => Aes192Gcm::new_from_slice(key).map(|c| c.encrypt(n, payload)),
        32 => Aes256Gcm::new_from_slice(key).map(|c| c.encrypt(n, payload)),
        len => panic!("a keyring key of {len} bytes"),
    };
    let sealed = sealed
        .expect("the key length was checked")
        .expect("AES-GCM seals any packet under 64 GiB");
    out.extend_from_slice(&sealed);
    out
}

/// Opens a sealed packet with the first of `keys` that authenticates it.
pub fn open(keys: &[Vec<u8>], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
    if sealed.len() < SEAL_OVERHEAD || !is_sealed(sealed) {
        return Err(OpenError::TooShort(sealed.len()));
    }
    let n = GenericArray::from_slice(&sealed[1..1 + NONCE_LEN]);
    let body = &sealed[1 + NONCE_LEN..];
    for key in keys {
        let payload = Payload {
            msg: body,
            aad: &[SEALED_VERSION],
        };
        let plain = match key.len() {
            16 => Aes128Gcm::new_from_slice(key).map(|c| c.decrypt(n, payload)),
            24 => Aes192Gcm::new_from_slice(key).map(|c| c.decrypt(n, payload)),
            32 => Aes256Gcm::new_from_slice(key).map(|c| c.decrypt(n, payload)),
            _ => continue,
        };
        if let Ok(Ok(p)) = plain {
            return Ok(p);
        }
    }
    Err(OpenError::NoKey)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_with_any_aes_size_opens_with_the_same_key_only() {
        let mut rng = Rng::new(1);
        for len in [16, 24, 32] {
            let key = vec![7u8; len];
            let other = vec![8u8; len];
            let s = seal(&key, nonce(&mut rng), b"hello gossip");
            assert_eq!(s.len(), 12 + SEAL_OVERHEAD);
            assert!(is_sealed(&s));
            assert_eq!(
                open(std::slice::from_ref(&key), &s).unwrap(),
                b"hello gossip"
            );
            assert_eq!(
                open(&[other.clone(), key.clone()], &s).unwrap(),
                b"hello gossip",
                "every installed key is tried"
            );
            assert_eq!(open(&[other], &s), Err(OpenError::NoKey));
            assert_eq!(open(&[], &s), Err(OpenError::NoKey));
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_fails_to_open() {
        let key = vec![3u8; 16];
        let s = seal(&key, nonce(&mut Rng::new(2)), b"payload");
        for i in 1..s.len() {
            let mut t = s.clone();
            t[i] ^= 1;
            assert_eq!(
                open(std::slice::from_ref(&key), &t),
                Err(OpenError::NoKey),
                "byte {i}"
            );
        }
        let mut t = s.clone();
        t[0] = 1;
        assert_eq!(
            open(std::slice::from_ref(&key), &t),
            Err(OpenError::TooShort(t.len()))
        );
        assert_eq!(
            open(&[key], &s[..SEAL_OVERHEAD - 1]),
            Err(OpenError::TooShort(SEAL_OVERHEAD - 1))
        );
    }

    #[test]
    fn nonces_from_one_stream_do_not_repeat() {
        let mut rng = Rng::new(3);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(nonce(&mut rng)));
        }
    }
}
