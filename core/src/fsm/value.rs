//! [`Value`]: a KV value's bytes, shared rather than copied.
//!
//! A write's value travels from the client's request into a log entry (the
//! leader's, or the one a follower decodes), and from there into the table
//! when the entry is applied; a read hands it back out. Each of those used
//! to be its own copy, so every value in the log tail was held twice (once
//! by its entry, once by the table) and every read copied it. A `Value` is
//! one allocation with a reference count: applying an entry, reading a key
//! and taking a snapshot view share the bytes, and they are freed when the
//! last holder lets go.
//!
//! On the wire a `Value` is exactly a byte string (`serde_bytes`), so the
//! log, snapshots and messages of earlier builds decode unchanged.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Immutable, shared bytes of a KV value. Cloning is a reference-count
/// increment. Compares, hashes and prints as its bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value(Arc<[u8]>);

impl Value {
    /// The empty value.
    pub fn empty() -> Value {
        Value(Arc::from(&[][..]))
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// The bytes as a new `Vec` (a copy).
    pub fn to_vec(&self) -> Vec<u8> {
        self.0.to_vec()
    }

    /// Whether `self` and `other` are the same allocation (not merely
    /// equal bytes): what the tests of sharing check.
    pub fn shares_with(&self, other: &Value) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Default for Value {
    fn default() -> Value {
        Value::empty()
    }
}

impl Deref for Value {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Value {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Value {
        Value(Arc::from(v))
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Value {
        Value(Arc::from(v))
    }
}

impl<const N: usize> From<&[u8; N]> for Value {
    fn from(v: &[u8; N]) -> Value {
        Value(Arc::from(&v[..]))
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value(Arc::from(v.as_bytes()))
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::from(v.into_bytes())
    }
}

impl From<Value> for Vec<u8> {
    fn from(v: Value) -> Vec<u8> {
        v.to_vec()
    }
}

impl PartialEq<[u8]> for Value {
    fn eq(&self, other: &[u8]) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&[u8]> for Value {
    fn eq(&self, other: &&[u8]) -> bool {
        *self.0 == **other
    }
}

impl<const N: usize> PartialEq<[u8; N]> for Value {
    fn eq(&self, other: &[u8; N]) -> bool {
        *self.0 == other[..]
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for Value {
    fn eq(&self, other: &&[u8; N]) -> bool {
        *self.0 == other[..]
    }
}

impl PartialEq<Vec<u8>> for Value {
    fn eq(&self, other: &Vec<u8>) -> bool {
        *self.0 == other[..]
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // As the `Vec<u8>` it replaced printed, so logs and test failures
        // read the same.
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_bytes(ValueVisitor)
    }
}

/// One allocation, straight from the input: postcard hands out a borrowed
/// slice of the frame. A sequence of integers is accepted too, as the
/// `Vec<u8>` with `serde_bytes` that this replaced accepted it.
struct ValueVisitor;

impl<'de> serde::de::Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element()? {
            v.push(b);
        }
        Ok(Value::from(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_encodes_exactly_as_the_byte_vector_it_replaced() {
        #[derive(Serialize)]
        struct Old<'a> {
            #[serde(with = "serde_bytes")]
            v: &'a Vec<u8>,
        }
        for bytes in [
            vec![],
            vec![0u8],
            (0..=255u8).collect::<Vec<_>>(),
            vec![7; 70_000],
        ] {
            let old = postcard::to_allocvec(&Old { v: &bytes }).unwrap();
            let new = postcard::to_allocvec(&Value::from(bytes.clone())).unwrap();
            assert_eq!(old, new);
            let back: Value = postcard::from_bytes(&new).unwrap();
            assert_eq!(back, bytes);
        }
    }

    #[test]
    fn clones_share_one_allocation_and_compare_by_bytes() {
        let a = Value::from(b"abc");
        let b = a.clone();
        assert!(a.shares_with(&b));
        let c = Value::from(&b"abc"[..]);
        assert!(!a.shares_with(&c));
        assert_eq!(a, c);
        assert_eq!(a, b"abc");
        assert_eq!(format!("{a:?}"), format!("{:?}", b"abc".to_vec()));
        assert_eq!(Value::default().len(), 0);
    }
}
