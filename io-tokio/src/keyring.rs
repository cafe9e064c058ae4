//! Gossip encryption on the agent: the `encrypt` key, the keyring files in
//! the data dir, and `tern keygen`'s keys.
//!
//! As Consul does (agent/keyring.go, agent/agent.go `setupKeyrings`; facts,
//! not code): each pool has a keyring file, `serf/local.keyring` for the
//! LAN and `serf/remote.keyring` for the WAN, a JSON list of base64 keys
//! with the primary first, written 0600. At start, `encrypt` creates the
//! file when there is none; a file that exists wins (it holds what
//! `keyring` operations made of the key, so a restart keeps a rotation),
//! and a file without the `encrypt` key is used with a warning. A file and
//! no `encrypt` still turns encryption on. Every keyring change a pool
//! reports is written back at once (tmp file, fsync, rename), before the
//! member answers the operation.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use tern_core::gossip::Keyring;

/// The LAN pool's keyring file inside the data dir (Consul's name).
pub const LAN_KEYRING: &str = "serf/local.keyring";
/// The WAN pool's keyring file inside the data dir.
pub const WAN_KEYRING: &str = "serf/remote.keyring";
/// The largest keyring file read: a few dozen base64 keys fit in 2 KiB.
const KEYRING_FILE_BYTES_MAX: u64 = 64 * 1024;
/// The bytes `tern keygen` makes (Consul's keygen: 32, AES-256).
pub const KEYGEN_BYTES: usize = 32;

/// The agent's gossip encryption settings (`encrypt`,
/// `encrypt_verify_incoming`, `encrypt_verify_outgoing`).
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptOptions {
    /// The decoded `encrypt` key, if set.
    pub key: Option<Vec<u8>>,
    pub verify_incoming: bool,
    pub verify_outgoing: bool,
}

impl Default for EncryptOptions {
    /// No key; both checks on (Consul's defaults).
    fn default() -> EncryptOptions {
        EncryptOptions {
            key: None,
            verify_incoming: true,
            verify_outgoing: true,
        }
    }
}

impl std::fmt::Debug for EncryptOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptOptions")
            .field("key", &self.key.as_ref().map(|_| "<set>"))
            .field("verify_incoming", &self.verify_incoming)
            .field("verify_outgoing", &self.verify_outgoing)
            .finish()
    }
}

/// Decodes a base64 key and checks its size; the error is the reason
/// alone, for the caller to prefix with where the key came from.
pub fn decode_key(text: &str) -> Result<Vec<u8>, String> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("not valid base64: {e}"))?;
    tern_core::gossip::keyring::validate_key(&key)
        .map_err(|e| format!("{e} (got {} bytes); make one with `tern keygen`", key.len()))?;
    Ok(key)
}

pub fn encode_key(key: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// A new key for `tern keygen`: 32 bytes from the OS's randomness.
pub fn keygen() -> std::io::Result<String> {
    let mut key = [0u8; KEYGEN_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key))?;
    Ok(encode_key(&key))
}

/// The keyring a pool starts with: from its file in the data dir (created
/// from `encrypt` when missing), or from `encrypt` alone without a data
/// dir. `None` for the file path when nothing is persisted.
pub fn setup(
    data_dir: Option<&Path>,
    file: &str,
    encrypt: &EncryptOptions,
) -> Result<(Keyring, Option<PathBuf>), String> {
    let Some(dir) = data_dir else {
        let keys = encrypt.key.iter().cloned().collect();
        let ring = Keyring::new(keys).map_err(|e| format!("encrypt: {e}"))?;
        return Ok((ring, None));
    };
    let path = dir.join(file);
    if path.exists() {
        let ring = load(&path)?;
        if let Some(k) = &encrypt.key {
            if !ring.contains(k) {
                tracing::warn!(
                    "agent: {} exists but does not contain the key given with encrypt; using the keyring file",
                    path.display()
                );
            }
        }
        return Ok((ring, Some(path)));
    }
    let Some(k) = &encrypt.key else {
        // No key and no file: no encryption; a later `encrypt` creates it.
        return Ok((Keyring::empty(), Some(path)));
    };
    let ring = Keyring::new(vec![k.clone()]).map_err(|e| format!("encrypt: {e}"))?;
    save(&path, &ring)?;
    Ok((ring, Some(path)))
}

/// Reads a keyring file: a JSON list of base64 keys, primary first.
pub fn load(path: &Path) -> Result<Keyring, String> {
    let fail = |why: String| format!("keyring file {}: {why}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if meta.len() > KEYRING_FILE_BYTES_MAX {
        return Err(fail(format!(
            "{} bytes is over the limit of {KEYRING_FILE_BYTES_MAX}",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let list: Vec<String> = serde_json::from_str(&text)
        .map_err(|e| fail(format!("not a JSON list of base64 keys: {e}")))?;
    if list.is_empty() {
        return Err(fail("no keys present in keyring".into()));
    }
    let keys = list
        .iter()
        .map(|k| decode_key(k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(fail)?;
    Keyring::new(keys).map_err(|e| fail(e.to_string()))
}

/// Writes a keyring file atomically: a temporary file written with mode
/// 0600 and fsynced, renamed over the old one, and the directory fsynced.
/// An empty keyring removes nothing and writes nothing.
pub fn save(path: &Path, ring: &Keyring) -> Result<(), String> {
    if !ring.is_enabled() {
        return Ok(());
    }
    let fail = |why: std::io::Error| format!("keyring file {}: {why}", path.display());
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(fail)?;
    let list: Vec<String> = ring.keys().iter().map(|k| encode_key(k)).collect();
    let text = serde_json::to_string_pretty(&list).expect("a list of strings encodes");
    let tmp = path.with_extension("keyring.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&tmp).map_err(fail)?;
    f.write_all(text.as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(fail)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tern-keyring-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn keys_decode_at_aes_sizes_only() {
        for len in [16, 24, 32] {
            let k = vec![9u8; len];
            assert_eq!(decode_key(&encode_key(&k)).unwrap(), k);
        }
        let e = decode_key(&encode_key(&[1; 20])).unwrap_err();
        assert!(
            e.starts_with("key size must be 16, 24 or 32 bytes (got 20 bytes)"),
            "{e}"
        );
        assert!(decode_key("not base64!")
            .unwrap_err()
            .starts_with("not valid base64"));
        let k = keygen().unwrap();
        assert_eq!(decode_key(&k).unwrap().len(), 32);
        assert_ne!(k, keygen().unwrap());
    }

    #[test]
    fn the_file_is_created_from_encrypt_and_then_wins() {
        let dir = temp("setup");
        let a = vec![1u8; 32];
        let b = vec![2u8; 16];
        let enc = EncryptOptions {
            key: Some(a.clone()),
            ..Default::default()
        };
        let (ring, path) = setup(Some(&dir), LAN_KEYRING, &enc).unwrap();
        let path = path.unwrap();
        assert_eq!(ring.keys(), std::slice::from_ref(&a));
        assert_eq!(path, dir.join("serf/local.keyring"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A rotation is saved; the next start keeps it, whatever encrypt says.
        let rotated = Keyring::new(vec![b.clone(), a.clone()]).unwrap();
        save(&path, &rotated).unwrap();
        let (ring, _) = setup(Some(&dir), LAN_KEYRING, &enc).unwrap();
        assert_eq!(ring, rotated);
        let (ring, _) = setup(Some(&dir), LAN_KEYRING, &EncryptOptions::default()).unwrap();
        assert_eq!(ring, rotated, "a file without encrypt still encrypts");
        // No key, no file: no encryption, and no file is written.
        let (ring, _) = setup(Some(&dir), WAN_KEYRING, &EncryptOptions::default()).unwrap();
        assert!(!ring.is_enabled());
        assert!(!dir.join(WAN_KEYRING).exists());
    }

    #[test]
    fn a_bad_keyring_file_is_an_error_naming_it() {
        let dir = temp("bad");
        let path = dir.join(LAN_KEYRING);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        for (text, want) in [
            ("[]", "no keys present in keyring"),
            ("{", "not a JSON list of base64 keys"),
            ("[\"AAAA\"]", "key size must be 16, 24 or 32 bytes"),
            ("[\"%%%\"]", "not valid base64"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = setup(Some(&dir), LAN_KEYRING, &EncryptOptions::default()).unwrap_err();
            assert!(
                e.starts_with(&format!("keyring file {}: ", path.display())),
                "{e}"
            );
            assert!(e.contains(want), "{text}: {e}");
        }
        std::fs::write(&path, vec![b' '; 70_000]).unwrap();
        let e = load(&path).unwrap_err();
        assert!(e.contains("over the limit"), "{e}");
    }
}
