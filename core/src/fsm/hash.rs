//! The hash behind `Fsm::state_hash`.
//!
//! Each item of replicated state (a KV entry, a tombstone, a table index) is
//! hashed on its own with a word-at-a-time FNV-1a variant over a canonical byte encoding (a domain
//! tag, then strings and byte strings length-prefixed, integers as 8
//! little-endian bytes), and the result is passed through the splitmix64
//! finalizer so that its bits are well mixed. A table keeps the wrapping sum
//! of its items' hashes, so adding or removing an item costs only that item's
//! hash, and the sum does not depend on the order the items arrived in.
//!
//! The constants are fixed here and nothing depends on the platform, so the
//! same state hashes to the same value on every machine and in every release
//! that keeps this file unchanged. The hash is for comparing replicas and
//! replays, not for security.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A running hash (FNV-1a style, 8 bytes at a time) over a canonical encoding of one item.
pub(crate) struct ItemHasher(u64);

impl ItemHasher {
    /// Starts an item of kind `domain` (so that items of different kinds
    /// with the same fields hash differently).
    pub(crate) fn new(domain: &str) -> ItemHasher {
        let mut h = ItemHasher(FNV_OFFSET);
        h.str(domain);
        h
    }

    fn raw(&mut self, bytes: &[u8]) {
        // Whole 8-byte words first (little-endian), multiply-xorshift mixed:
        // values are hashed on every apply, and byte-at-a-time FNV cost a
        // sixth of the commit benchmark. The tail is FNV-1a byte by byte.
        // Four independent lanes over 32-byte blocks keep the multiplier busy
        // (a single chain waits on each multiply), then fold into the state.
        let mut blocks = bytes.chunks_exact(32);
        if bytes.len() >= 32 {
            let mut lanes = [self.0, self.0 ^ 1, self.0 ^ 2, self.0 ^ 3];
            for b in &mut blocks {
                for (lane, c) in lanes.iter_mut().zip(b.chunks_exact(8)) {
                    let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                    *lane = (*lane ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    *lane ^= *lane >> 29;
                }
            }
            for lane in lanes {
                self.0 = (self.0 ^ lane).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                self.0 ^= self.0 >> 29;
            }
        }
        let mut chunks = blocks.remainder().chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            self.0 = (self.0 ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            self.0 ^= self.0 >> 29;
        }
        for &b in chunks.remainder() {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    pub(crate) fn u64(&mut self, x: u64) -> &mut ItemHasher {
        self.raw(&x.to_le_bytes());
        self
    }

    /// Length-prefixed, so `("ab", "c")` and `("a", "bc")` differ.
    pub(crate) fn bytes(&mut self, bytes: &[u8]) -> &mut ItemHasher {
        self.u64(bytes.len() as u64);
        self.raw(bytes);
        self
    }

    pub(crate) fn str(&mut self, s: &str) -> &mut ItemHasher {
        self.bytes(s.as_bytes())
    }

    pub(crate) fn finish(&self) -> u64 {
        mix(self.0)
    }
}

/// The splitmix64 finalizer.
fn mix(x: u64) -> u64 {
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The hash of the stored autopilot configuration (one item).
pub(crate) fn autopilot_hash(a: &super::StoredAutopilot) -> u64 {
    let c = &a.config;
    ItemHasher::new("autopilot")
        .u64(u64::from(c.cleanup_dead_servers))
        .u64(c.last_contact_threshold.as_nanos())
        .u64(c.max_trailing_logs)
        .u64(u64::from(c.min_quorum))
        .u64(c.server_stabilization_time.as_nanos())
        .str(&c.redundancy_zone_tag)
        .u64(u64::from(c.disable_upgrade_migration))
        .str(&c.upgrade_version_tag)
        .u64(a.create_index)
        .u64(a.modify_index)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_constants() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c (the reference test vector);
        // check the raw state before the finalizer.
        let mut h = ItemHasher(FNV_OFFSET);
        h.raw(b"a");
        assert_eq!(h.0, 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn length_prefix_separates_fields() {
        let ab_c = ItemHasher::new("t").str("ab").str("c").finish();
        let a_bc = ItemHasher::new("t").str("a").str("bc").finish();
        assert_ne!(ab_c, a_bc);
    }

    #[test]
    fn every_byte_of_a_long_value_counts() {
        let base: Vec<u8> = (0..100u8).collect();
        let h0 = ItemHasher::new("t").bytes(&base).finish();
        for i in 0..base.len() {
            let mut v = base.clone();
            v[i] ^= 0x40;
            assert_ne!(ItemHasher::new("t").bytes(&v).finish(), h0, "byte {i}");
        }
        // Lanes are not interchangeable: swapping two 8-byte words changes it.
        let mut swapped = base.clone();
        swapped[..8].copy_from_slice(&base[8..16]);
        swapped[8..16].copy_from_slice(&base[..8]);
        assert_ne!(ItemHasher::new("t").bytes(&swapped).finish(), h0);
    }

    #[test]
    fn the_hash_is_pinned() {
        // A change to the encoding or the constants changes every state
        // hash; this value pins it so such a change is deliberate.
        let h = ItemHasher::new("kv").str("k").u64(1).finish();
        assert_eq!(h, PINNED);
        assert_ne!(h, ItemHasher::new("kv").str("k").u64(2).finish());
    }

    const PINNED: u64 = 14762633748474623576;
}
