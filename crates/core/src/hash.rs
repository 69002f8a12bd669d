//! SHA-256 digests and the two hashing primitives of RFC 6962 §2.1.
//!
//! Every hash in the ledger is a [`Hash`]: content hashes of entries are RFC 6962 leaf hashes
//! ([`leaf_hash`]), interior tree nodes are RFC 6962 node hashes ([`node_hash`]). The one-byte
//! prefixes (`0x00` for leaves, `0x01` for nodes) are the domain separation that keeps a leaf
//! from being passed off as an interior node.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::hex;

/// Length of every hash in the ledger, in bytes (SHA-256).
pub const HASH_BYTES: usize = 32;

/// RFC 6962 §2.1 prefix of a leaf hash input.
pub(crate) const LEAF_PREFIX: u8 = 0x00;

/// RFC 6962 §2.1 prefix of an interior node hash input.
const NODE_PREFIX: u8 = 0x01;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash([u8; HASH_BYTES]);

/// A byte string that should have been a hash was not 32 bytes long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a hash must be exactly {HASH_BYTES} bytes, got {actual}")]
pub struct HashLengthError {
    /// The length that was given.
    pub actual: usize,
}

/// A string that should have been a hex-encoded hash was not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseHashError {
    /// The text was not lowercase or uppercase hexadecimal.
    #[error(transparent)]
    Hex(#[from] hex::HexError),
    /// The decoded bytes were not 32 bytes long.
    #[error(transparent)]
    Length(#[from] HashLengthError),
}

impl Hash {
    /// The hash with the given bytes.
    pub const fn from_bytes(bytes: [u8; HASH_BYTES]) -> Self {
        Self(bytes)
    }

    /// The hash in `bytes`, which must be exactly 32 bytes (wire and disk input).
    pub fn try_from_slice(bytes: &[u8]) -> Result<Self, HashLengthError> {
        <[u8; HASH_BYTES]>::try_from(bytes)
            .map(Self)
            .map_err(|_| HashLengthError { actual: bytes.len() })
    }

    /// Parses 64 hexadecimal digits.
    pub fn from_hex(text: &str) -> Result<Self, ParseHashError> {
        Ok(Self::try_from_slice(&hex::decode(text)?)?)
    }

    /// The digest bytes.
    pub const fn as_bytes(&self) -> &[u8; HASH_BYTES] {
        &self.0
    }

    /// Lowercase hexadecimal, 64 digits.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }
}

impl AsRef<[u8]> for Hash {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

/// The root of the empty tree, `MTH({}) = SHA-256("")` (RFC 6962 §2.1). Not the hash of an
/// empty leaf, which is `SHA-256(0x00)`.
pub const EMPTY_ROOT: Hash = Hash([
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
]);

/// The RFC 6962 §2.1 leaf hash `SHA-256(0x00 ‖ input)`.
pub fn leaf_hash(input: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([LEAF_PREFIX]);
    hasher.update(input);
    finish(hasher)
}

/// The RFC 6962 §2.1 interior node hash `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    node_hash_of_slices(&left.0, &right.0)
}

/// [`node_hash`] over children of any length. RFC 6962 only ever combines 32-byte hashes; the
/// known-answer vectors also hash shorter children, which this lets the tests check.
pub(crate) fn node_hash_of_slices(left: &[u8], right: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([NODE_PREFIX]);
    hasher.update(left);
    hasher.update(right);
    finish(hasher)
}

/// Finalises a SHA-256 computation into a [`Hash`].
pub(crate) fn finish(hasher: Sha256) -> Hash {
    Hash(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(EMPTY_ROOT, finish(Sha256::new()));
        assert_ne!(EMPTY_ROOT, leaf_hash(b""), "the empty tree is not an empty leaf");
    }

    #[test]
    fn node_hash_matches_slice_form() {
        let a = leaf_hash(b"a");
        let b = leaf_hash(b"b");
        assert_eq!(node_hash(&a, &b), node_hash_of_slices(a.as_bytes(), b.as_bytes()));
        assert_ne!(node_hash(&a, &b), node_hash(&b, &a));
    }

    /// The `hasher` section of the RFC 6962 vectors, including node hashes over children that
    /// are not 32 bytes (which only the slice form can take).
    #[test]
    fn rfc6962_hasher_vectors() {
        let text = include_str!("../tests/data/rfc6962/vectors.json");
        let doc: serde_json::Value = serde_json::from_str(text).unwrap();
        let field = |v: &serde_json::Value, name: &str| {
            hex::decode(v[name].as_str().unwrap_or_default()).unwrap()
        };
        let checks = doc["hasher"].as_array().unwrap();
        assert_eq!(checks.len(), 4);
        for v in checks {
            let got = match v["kind"].as_str().unwrap() {
                "empty_root" => EMPTY_ROOT,
                "leaf" => leaf_hash(&field(v, "input")),
                "node" => node_hash_of_slices(&field(v, "left"), &field(v, "right")),
                other => panic!("unknown kind {other}"),
            };
            assert_eq!(got.as_bytes().as_slice(), field(v, "expected"), "{}", v["desc"]);
        }
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let h = leaf_hash(b"x");
        assert_eq!(Hash::from_hex(&h.to_hex()), Ok(h));
        assert_eq!(
            Hash::from_hex("abcd"),
            Err(ParseHashError::Length(HashLengthError { actual: 2 }))
        );
        assert!(matches!(Hash::from_hex("zz"), Err(ParseHashError::Hex(_))));
        assert_eq!(Hash::try_from_slice(&[0; 31]), Err(HashLengthError { actual: 31 }));
    }
}
