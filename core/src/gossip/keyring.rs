//! A gossip pool's encryption keyring, as memberlist keeps it: a list of
//! AES keys whose first is the primary. Packets are sealed with the primary
//! and opened with whichever key works, so a cluster rotates its key
//! without a moment where two members cannot talk: install the new key
//! everywhere, make it the primary everywhere, remove the old one.
//!
//! An empty keyring means encryption is off. The rules and their messages
//! follow memberlist's `keyring.go` (facts, not code): a key is 16, 24 or
//! 32 bytes (AES-128/192/256); installing a key already present does
//! nothing; only an installed key can become the primary; the primary
//! cannot be removed, and removing a key that is not there does nothing.

use serde::{Deserialize, Serialize};

/// Most keys one keyring holds: a rotation needs two; more than a few is an
/// operator who forgot to remove old ones, and every key costs a failed
/// open per packet sealed with another.
pub const KEYS_MAX: usize = 16;

/// Why a keyring change was refused. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyringError {
    /// Not 16, 24 or 32 bytes.
    KeySize(usize),
    /// `use` of a key that is not installed.
    NotInstalled,
    /// `remove` of the primary key.
    RemovePrimary,
    /// An install past [`KEYS_MAX`].
    Full,
}

impl core::fmt::Display for KeyringError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // memberlist's wording (keyring.go), which Consul's API passes on.
        match self {
            KeyringError::KeySize(_) => f.write_str("key size must be 16, 24 or 32 bytes"),
            KeyringError::NotInstalled => f.write_str("requested key is not in the keyring"),
            KeyringError::RemovePrimary => f.write_str("removing the primary key is not allowed"),
            KeyringError::Full => write!(f, "the keyring already holds {KEYS_MAX} keys"),
        }
    }
}

/// Checks a key's length: AES-128, AES-192 or AES-256.
pub fn validate_key(key: &[u8]) -> Result<(), KeyringError> {
    match key.len() {
        16 | 24 | 32 => Ok(()),
        n => Err(KeyringError::KeySize(n)),
    }
}

/// The keys of one pool; the first is the primary. Its `Debug` never shows
/// key bytes.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keyring {
    keys: Vec<Vec<u8>>,
}

impl core::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Keyring({} keys)", self.keys.len())
    }
}

impl Keyring {
    /// No keys: encryption off.
    pub fn empty() -> Keyring {
        Keyring::default()
    }

    /// A keyring of `keys`, the first the primary; duplicates are dropped.
    pub fn new(keys: Vec<Vec<u8>>) -> Result<Keyring, KeyringError> {
        let mut ring = Keyring::empty();
        for k in keys {
            ring.install(k)?;
        }
        Ok(ring)
    }

    /// Whether encryption is on.
    pub fn is_enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Every key, primary first.
    pub fn keys(&self) -> &[Vec<u8>] {
        &self.keys
    }

    pub fn primary(&self) -> Option<&[u8]> {
        self.keys.first().map(Vec::as_slice)
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.keys.iter().any(|k| k == key)
    }

    /// Adds a key (the primary if the ring was empty). Already there: nothing.
    pub fn install(&mut self, key: Vec<u8>) -> Result<(), KeyringError> {
        validate_key(&key)?;
        if self.contains(&key) {
            return Ok(());
        }
        if self.keys.len() >= KEYS_MAX {
            return Err(KeyringError::Full);
        }
        self.keys.push(key);
        Ok(())
    }

    /// Makes an installed key the primary.
    pub fn use_key(&mut self, key: &[u8]) -> Result<(), KeyringError> {
        let at = self
            .keys
            .iter()
            .position(|k| k == key)
            .ok_or(KeyringError::NotInstalled)?;
        let k = self.keys.remove(at);
        self.keys.insert(0, k);
        Ok(())
    }

    /// Removes a key that is not the primary. Not there: nothing.
    pub fn remove(&mut self, key: &[u8]) -> Result<(), KeyringError> {
        if self.primary() == Some(key) {
            return Err(KeyringError::RemovePrimary);
        }
        self.keys.retain(|k| k != key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8, len: usize) -> Vec<u8> {
        vec![b; len]
    }

    #[test]
    fn the_first_key_is_the_primary_and_sizes_are_aes_sizes() {
        let r = Keyring::new(vec![key(1, 16), key(2, 24), key(3, 32), key(1, 16)]).unwrap();
        assert_eq!(r.keys().len(), 3, "a duplicate is dropped");
        assert_eq!(r.primary(), Some(&key(1, 16)[..]));
        for bad in [0, 15, 17, 31, 33, 64] {
            assert_eq!(
                Keyring::new(vec![key(1, bad)]),
                Err(KeyringError::KeySize(bad))
            );
        }
        assert!(!Keyring::empty().is_enabled());
    }

    #[test]
    fn rotation_install_use_remove() {
        let (a, b) = (key(1, 32), key(2, 32));
        let mut r = Keyring::new(vec![a.clone()]).unwrap();
        assert_eq!(r.use_key(&b), Err(KeyringError::NotInstalled));
        r.install(b.clone()).unwrap();
        assert_eq!(
            r.primary(),
            Some(&a[..]),
            "install does not change the primary"
        );
        assert_eq!(r.remove(&a), Err(KeyringError::RemovePrimary));
        r.use_key(&b).unwrap();
        assert_eq!(r.keys(), &[b.clone(), a.clone()]);
        r.remove(&a).unwrap();
        assert_eq!(r.keys(), std::slice::from_ref(&b));
        r.remove(&a).unwrap();
        assert_eq!(r.keys(), &[b], "removing a missing key does nothing");
    }

    #[test]
    fn the_keyring_holds_at_most_keys_max() {
        let mut r = Keyring::empty();
        for i in 0..KEYS_MAX {
            r.install(key(i as u8, 16)).unwrap();
        }
        assert_eq!(r.install(key(200, 16)), Err(KeyringError::Full));
        r.install(key(0, 16)).unwrap();
        assert_eq!(r.keys().len(), KEYS_MAX);
        assert!(!format!("{r:?}").contains("[0"), "Debug shows no key bytes");
    }
}
