//! Entries, their canonical leaf input and content hash, and their id (CONTRACT §3).
//!
//! ```text
//! leaf_input   = bytes("converge-ledger/entry/v1")
//!              ‖ bytes(context_id) ‖ bytes(key) ‖ bytes(payload)
//!              ‖ u64(sequence) ‖ u64(appended_at_ns) ‖ u64(lamport_clock)
//!              ‖ u32(n_metadata) ‖ for each pair sorted by key bytes: bytes(k) ‖ bytes(v)
//! content_hash = SHA-256(0x00 ‖ leaf_input)          -- the RFC 6962 leaf hash
//! id           = lowercase hex of content_hash[0..16]
//! ```
//!
//! Integers are big-endian; `bytes(x)` is a u32 length followed by the bytes. The context id
//! is part of the hash, so the same fields in another context hash differently; loading a
//! snapshot into another context re-hashes ([`Entry::rehash_for`]).
//!
//! The payload comes before every server-assigned field, so [`PartialContentHash`] lets a
//! writer hash the bulk of an entry before it takes the context's lock, and finish the last
//! few dozen bytes once the sequence, time and clock are known.

use std::fmt;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::hash::{Hash, LEAF_PREFIX, finish};
use crate::hex;
use crate::lamport::LamportTime;
use crate::seq::{Seq, Timestamp};
use crate::validate::{ContextId, Key, Metadata};

/// The domain tag that starts every leaf input; the `v1` names this encoding.
pub const LEAF_INPUT_TAG: &[u8] = b"converge-ledger/entry/v1";

/// Bytes of the content hash that make up an entry id.
pub const ID_BYTES: usize = 16;

/// Everything an entry holds except its content hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryParts {
    /// Position in the context, from 1.
    pub sequence: Seq,
    /// The engine's label for the kind of entry (facts, intents, traces, …).
    pub key: Key,
    /// Opaque bytes; the ledger never interprets them.
    pub payload: Bytes,
    /// When the ledger appended it.
    pub appended_at: Timestamp,
    /// Its Lamport time.
    pub lamport: LamportTime,
    /// Labels.
    pub metadata: Metadata,
}

/// An immutable entry of a context, with the content hash that binds all of its fields and its
/// context id together.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    parts: EntryParts,
    content_hash: Hash,
}

/// An entry's stored content hash does not match its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("entry {sequence} has content hash {stored} but its fields hash to {computed}")]
pub struct ContentHashMismatch {
    /// The entry's sequence.
    pub sequence: Seq,
    /// The hash it carried.
    pub stored: Hash,
    /// The hash of its fields.
    pub computed: Hash,
}

impl Entry {
    /// Seals `parts` as an entry of `context`, computing its content hash.
    pub fn seal(context: &ContextId, parts: EntryParts) -> Self {
        let content_hash = content_hash(context, &parts);
        Self { parts, content_hash }
    }

    /// An entry whose content hash was computed earlier and kept beside it (a log record
    /// whose checksum has been checked). Use [`verify`](Self::verify) where the pair might
    /// have been tampered with.
    pub fn from_trusted_parts(parts: EntryParts, content_hash: Hash) -> Self {
        Self { parts, content_hash }
    }

    /// An entry whose content hash must match its fields in `context`.
    pub fn try_from_parts(
        context: &ContextId,
        parts: EntryParts,
        content_hash: Hash,
    ) -> Result<Self, ContentHashMismatch> {
        let entry = Self { parts, content_hash };
        entry.verify(context)?;
        Ok(entry)
    }

    /// Recomputes the content hash for `context` and compares.
    pub fn verify(&self, context: &ContextId) -> Result<(), ContentHashMismatch> {
        let computed = content_hash(context, &self.parts);
        if computed == self.content_hash {
            Ok(())
        } else {
            Err(ContentHashMismatch {
                sequence: self.parts.sequence,
                stored: self.content_hash,
                computed,
            })
        }
    }

    /// The same fields, sealed for another context (their content hash changes).
    #[must_use]
    pub fn rehash_for(self, context: &ContextId) -> Self {
        Self::seal(context, self.parts)
    }

    /// Recomputes the content hash in place for another context.
    pub fn reseal(&mut self, context: &ContextId) {
        self.content_hash = content_hash(context, &self.parts);
    }

    /// The canonical leaf input of CONTRACT §3.
    pub fn leaf_input(&self, context: &ContextId) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + context.as_str().len() + self.parts.payload.len());
        write_leaf_input(&mut out, context, &self.parts);
        out
    }

    /// All fields but the hash.
    pub fn parts(&self) -> &EntryParts {
        &self.parts
    }

    /// Splits the entry into its fields and hash.
    pub fn into_parts(self) -> (EntryParts, Hash) {
        (self.parts, self.content_hash)
    }

    /// The RFC 6962 leaf hash of the leaf input.
    pub fn content_hash(&self) -> Hash {
        self.content_hash
    }

    /// The entry id: lowercase hex of the first 16 bytes of the content hash.
    pub fn id(&self) -> EntryId {
        EntryId::of(&self.content_hash)
    }

    /// Position in the context.
    pub fn sequence(&self) -> Seq {
        self.parts.sequence
    }

    /// Key.
    pub fn key(&self) -> &Key {
        &self.parts.key
    }

    /// Payload.
    pub fn payload(&self) -> &Bytes {
        &self.parts.payload
    }

    /// Append time.
    pub fn appended_at(&self) -> Timestamp {
        self.parts.appended_at
    }

    /// Lamport time.
    pub fn lamport(&self) -> LamportTime {
        self.parts.lamport
    }

    /// Metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.parts.metadata
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("sequence", &self.parts.sequence.0)
            .field("key", &self.parts.key.as_str())
            .field("payload_len", &self.parts.payload.len())
            .field("appended_at", &self.parts.appended_at.0)
            .field("lamport", &self.parts.lamport.0)
            .field("metadata", &self.parts.metadata)
            .field("content_hash", &self.content_hash)
            .finish()
    }
}

/// An entry id: 32 lowercase hex digits, the first 16 bytes of its content hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryId([u8; ID_BYTES]);

impl EntryId {
    /// The id of the entry with this content hash.
    pub fn of(content_hash: &Hash) -> Self {
        let mut id = [0; ID_BYTES];
        id.copy_from_slice(&content_hash.as_bytes()[..ID_BYTES]);
        Self(id)
    }

    /// The id's text form.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }

    /// Whether `text` is this id as the wire writes it (lowercase hex).
    pub fn is_written_as(&self, text: &str) -> bool {
        hex::is_encoding_of(text, &self.0)
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryId({})", self.to_hex())
    }
}

/// The content hash of `parts` in `context`.
pub fn content_hash(context: &ContextId, parts: &EntryParts) -> Hash {
    PartialContentHash::new(context, &parts.key, &parts.payload).finish(
        parts.sequence,
        parts.appended_at,
        parts.lamport,
        &parts.metadata,
    )
}

/// A content hash with the context, key and payload already absorbed.
#[derive(Clone)]
pub struct PartialContentHash(Sha256);

impl PartialContentHash {
    /// Absorbs the leading fields, which do not depend on the context's state.
    pub fn new(context: &ContextId, key: &Key, payload: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update([LEAF_PREFIX]);
        write_prefix(&mut hasher, context, key, payload);
        Self(hasher)
    }

    /// Absorbs the server-assigned fields and the metadata, and returns the content hash.
    pub fn finish(
        mut self,
        sequence: Seq,
        appended_at: Timestamp,
        lamport: LamportTime,
        metadata: &Metadata,
    ) -> Hash {
        write_suffix(&mut self.0, sequence, appended_at, lamport, metadata);
        finish(self.0)
    }
}

/// Where leaf-input bytes go: a buffer (to show them) or a hasher (to hash them).
trait Sink {
    fn put(&mut self, bytes: &[u8]);

    fn put_u32(&mut self, value: u32) {
        self.put(&value.to_be_bytes());
    }

    fn put_u64(&mut self, value: u64) {
        self.put(&value.to_be_bytes());
    }

    /// `bytes(x)`: a u32 length, then the bytes.
    fn put_bytes(&mut self, bytes: &[u8]) {
        // Names and metadata are bounded by their types, payloads by `Limits` (at most
        // `PAYLOAD_BYTES_MAX_CEILING`); a longer field is a bug in the caller.
        let len = u32::try_from(bytes.len()).expect("entry fields are shorter than 4 GiB");
        self.put_u32(len);
        self.put(bytes);
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

fn write_leaf_input(sink: &mut impl Sink, context: &ContextId, parts: &EntryParts) {
    write_prefix(sink, context, &parts.key, &parts.payload);
    write_suffix(sink, parts.sequence, parts.appended_at, parts.lamport, &parts.metadata);
}

fn write_prefix(sink: &mut impl Sink, context: &ContextId, key: &Key, payload: &[u8]) {
    sink.put_bytes(LEAF_INPUT_TAG);
    sink.put_bytes(context.as_str().as_bytes());
    sink.put_bytes(key.as_str().as_bytes());
    sink.put_bytes(payload);
}

fn write_suffix(
    sink: &mut impl Sink,
    sequence: Seq,
    appended_at: Timestamp,
    lamport: LamportTime,
    metadata: &Metadata,
) {
    sink.put_u64(sequence.0);
    sink.put_u64(appended_at.0);
    sink.put_u64(lamport.0);
    // At most METADATA_PAIRS_MAX pairs, by the type's invariant.
    sink.put_u32(u32::try_from(metadata.len()).expect("metadata has at most 64 pairs"));
    for (k, v) in metadata.iter() {
        sink.put_bytes(k.as_bytes());
        sink.put_bytes(v.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;

    fn parts() -> EntryParts {
        EntryParts {
            sequence: Seq(7),
            key: Key::try_new("facts").unwrap(),
            payload: Bytes::from_static(b"market_size: 2.4B"),
            appended_at: Timestamp(1_764_000_000_000_000_000),
            lamport: LamportTime(9),
            metadata: Metadata::try_from_pairs([
                ("b".into(), "2".into()),
                ("a".into(), "1".into()),
            ])
            .unwrap(),
        }
    }

    #[test]
    fn content_hash_is_leaf_hash_of_leaf_input() {
        let ctx = ContextId::try_new("c").unwrap();
        let entry = Entry::seal(&ctx, parts());
        assert_eq!(entry.content_hash(), leaf_hash(&entry.leaf_input(&ctx)));
        assert_eq!(entry.id().to_hex(), entry.content_hash().to_hex()[..32]);
        assert_eq!(entry.verify(&ctx), Ok(()));
    }

    #[test]
    fn hash_binds_context_and_every_field() {
        let ctx = ContextId::try_new("c").unwrap();
        let base = Entry::seal(&ctx, parts()).content_hash();
        let other_ctx = ContextId::try_new("d").unwrap();
        assert_ne!(Entry::seal(&other_ctx, parts()).content_hash(), base);
        let variants: [fn(&mut EntryParts); 6] = [
            |p| p.sequence = Seq(8),
            |p| p.key = Key::try_new("facts2").unwrap(),
            |p| p.payload = Bytes::from_static(b"market_size: 2.5B"),
            |p| p.appended_at = Timestamp(p.appended_at.0 + 1),
            |p| p.lamport = LamportTime(10),
            |p| p.metadata = Metadata::new(),
        ];
        for change in variants {
            let mut p = parts();
            change(&mut p);
            assert_ne!(Entry::seal(&ctx, p).content_hash(), base);
        }
    }

    #[test]
    fn verify_and_rehash() {
        let a = ContextId::try_new("a").unwrap();
        let b = ContextId::try_new("b").unwrap();
        let entry = Entry::seal(&a, parts());
        let err = entry.verify(&b).unwrap_err();
        assert_eq!(err.stored, entry.content_hash());
        let moved = entry.clone().rehash_for(&b);
        assert_eq!(moved.verify(&b), Ok(()));
        assert_eq!(moved.parts(), entry.parts());
        let (p, h) = entry.clone().into_parts();
        assert!(Entry::try_from_parts(&a, p.clone(), h).is_ok());
        assert!(Entry::try_from_parts(&b, p, h).is_err());
    }
}
