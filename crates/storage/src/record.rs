//! Log records: the unit the log writes, checksums and replays.
//!
//! # Layout, record format version 1
//!
//! Integers are big-endian.
//!
//! ```text
//! offset size  field
//! 0      4     u32 crc32c   CRC-32C of bytes 4 .. 8+len (everything after this field)
//! 4      4     u32 len      bytes after this 8-byte prefix (24 + body length)
//! 8      1     u8  kind     1 entry · 2 context · 3 seal · 4 batch · 16 truncate-after (reserved) · 17 fence (reserved)
//! 9      1     u8  version  1
//! 10     2     u16 flags    bit 0: an atomic batch continues after this record
//! 12     4     u32 group    replication group (0 on a single node)
//! 16     8     u64 term     replication term or epoch (0 on a single node)
//! 24     8     u64 lsn      log sequence number: 1, 2, 3, … across all segments, no gaps
//! 32     …     body
//! ```
//!
//! Entry body (kind 1): `u64 context number ‖ [32] content hash ‖` [entry fields](encode_fields).
//! Context body (kind 2): `u64 context number ‖ u16 length ‖ context id` — written once, before
//! a context's first entry, so entry records can name their context in eight bytes.
//! Batch body (kind 4): `u64 synced lsn` — the first record of every group-commit batch: the
//! highest LSN that was on disk (fsynced) when the batch was written. Its header's LSN repeats
//! the LSN before the batch (LSNs number entry and context records only). Recovery uses it to
//! tell a torn write from damage: a bad record followed by a batch whose synced LSN covers the
//! bad record's LSN was damaged after it was durable; otherwise it was never acknowledged.
//! Seal body (kind 3): `u64 records ‖ u64 bytes ‖ [32] digest` — the last record of a sealed
//! segment (see `log::segment`).
//!
//! The header has room for replication (group, term, lsn, and the reserved kinds for
//! "truncate after" and "vote/fence" records) though a single node writes zeros there and never
//! writes the reserved kinds. Decoding checks the checksum first, then every length against
//! what is there, so a damaged record is an error, never a panic or an over-read.

use bytes::Bytes;
use converge_core::codec::{ReadError, Reader};
use converge_core::{
    AppendId, ContextId, Entry, EntryParts, Hash, Key, LamportTime, Metadata, Seq, Timestamp,
};

/// Bytes before the body: checksum, length and the fixed header fields.
pub const HEADER_BYTES: usize = 32;

/// The version of this record layout.
pub const RECORD_VERSION: u8 = 1;

/// Flag: more records of the same atomic batch follow this one.
pub const FLAG_BATCH_CONTINUES: u16 = 1;

/// The largest record the log accepts (a payload at the configurable ceiling plus metadata
/// and names, with room to spare). A length above this in a header is damage, not data.
pub const RECORD_BYTES_MAX: usize = 80 * 1024 * 1024;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// An entry of a context.
    Entry,
    /// The definition of a context number.
    Context,
    /// The seal that ends a segment.
    Seal,
    /// The start of a group-commit batch, with the LSN synced when it was written.
    Batch,
    /// Reserved for replication: discard log records after a position.
    TruncateAfter,
    /// Reserved for replication: a vote or a fencing record.
    Fence,
}

impl RecordKind {
    fn code(self) -> u8 {
        match self {
            Self::Entry => 1,
            Self::Context => 2,
            Self::Seal => 3,
            Self::Batch => 4,
            Self::TruncateAfter => 16,
            Self::Fence => 17,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::Entry,
            2 => Self::Context,
            3 => Self::Seal,
            4 => Self::Batch,
            16 => Self::TruncateAfter,
            17 => Self::Fence,
            _ => return None,
        })
    }
}

/// The fixed fields of a record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the record holds.
    pub kind: RecordKind,
    /// Flag bits ([`FLAG_BATCH_CONTINUES`]).
    pub flags: u16,
    /// Replication group; 0 on a single node.
    pub group: u32,
    /// Replication term; 0 on a single node.
    pub term: u64,
    /// Log sequence number.
    pub lsn: u64,
}

/// A record failed to decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Fewer bytes than the header or the length field promise.
    #[error("record is truncated")]
    Truncated,
    /// The length field is impossible.
    #[error("record length {0} is out of range")]
    BadLength(u32),
    /// The checksum does not match the bytes.
    #[error("record checksum mismatch")]
    Checksum,
    /// An unknown kind or version.
    #[error("unknown record kind {kind} or version {version}")]
    Unknown {
        /// The kind byte.
        kind: u8,
        /// The version byte.
        version: u8,
    },
    /// The body does not parse.
    #[error("record body is malformed: {0}")]
    Body(#[from] ReadError),
    /// A field of the body is invalid.
    #[error("record body holds an invalid field: {0}")]
    Field(String),
}

/// Appends a record with `header` and the body written by `body` to `out`, filling in the
/// length and checksum. Returns the record's length.
pub fn encode(out: &mut Vec<u8>, header: &Header, body: impl FnOnce(&mut Vec<u8>)) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    out.push(header.kind.code());
    out.push(RECORD_VERSION);
    out.extend_from_slice(&header.flags.to_be_bytes());
    out.extend_from_slice(&header.group.to_be_bytes());
    out.extend_from_slice(&header.term.to_be_bytes());
    out.extend_from_slice(&header.lsn.to_be_bytes());
    body(out);
    let len = out.len() - start;
    // Bodies are bounded by the entry limits, far below 4 GiB.
    let after_prefix = u32::try_from(len - 8).expect("records are smaller than 4 GiB");
    out[start + 4..start + 8].copy_from_slice(&after_prefix.to_be_bytes());
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_be_bytes());
    len
}

/// Sets the LSN of an encoded record in place and recomputes its checksum.
pub fn set_lsn(record: &mut [u8], lsn: u64) {
    record[24..32].copy_from_slice(&lsn.to_be_bytes());
    let crc = crc32c::crc32c(&record[4..]);
    record[..4].copy_from_slice(&crc.to_be_bytes());
}

/// The total length of the record starting at `bytes`, from its length field, if the prefix is
/// there and the length is plausible.
pub fn peek_len(bytes: &[u8]) -> Result<usize, RecordError> {
    let prefix: [u8; 8] =
        bytes.get(..8).and_then(|b| b.try_into().ok()).ok_or(RecordError::Truncated)?;
    let len = u32::from_be_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
    let total = 8 + len as usize;
    if !(HEADER_BYTES..=RECORD_BYTES_MAX).contains(&total) {
        return Err(RecordError::BadLength(len));
    }
    Ok(total)
}

/// The record's checksum and length prefix, which the segment digest chains.
pub fn prefix(record: &[u8]) -> [u8; 8] {
    let mut out = [0; 8];
    out.copy_from_slice(&record[..8]);
    out
}

/// Checks the checksum of the record at the start of `bytes` and splits it into its header
/// and body. Returns the record's total length too.
pub fn decode(bytes: &[u8]) -> Result<(Header, &[u8], usize), RecordError> {
    let total = peek_len(bytes)?;
    let record = bytes.get(..total).ok_or(RecordError::Truncated)?;
    let stored = u32::from_be_bytes([record[0], record[1], record[2], record[3]]);
    if crc32c::crc32c(&record[4..]) != stored {
        return Err(RecordError::Checksum);
    }
    let mut r = Reader::new(&record[8..HEADER_BYTES]);
    let kind = r.u8("kind")?;
    let version = r.u8("version")?;
    let flags = r.u16("flags")?;
    let group = r.u32("group")?;
    let term = r.u64("term")?;
    let lsn = r.u64("lsn")?;
    let kind = match RecordKind::from_code(kind) {
        Some(kind) if version == RECORD_VERSION => kind,
        _ => return Err(RecordError::Unknown { kind, version }),
    };
    Ok((Header { kind, flags, group, term, lsn }, &record[HEADER_BYTES..], total))
}

/// The entry fields, in the order they are stored:
///
/// ```text
/// u64 sequence ‖ u64 appended_at_ns ‖ u64 lamport_clock
/// u16 key length ‖ key
/// u32 payload length ‖ payload
/// u16 metadata pairs ‖ per pair: u32 key length ‖ key ‖ u32 value length ‖ value
/// u8 append_id length (0 = none) ‖ append_id
/// ```
///
/// The content hash is not here: entry records store it beside these fields, and memory mode
/// keeps it in the index.
pub fn encode_fields(out: &mut Vec<u8>, entry: &Entry, append_id: Option<&AppendId>) {
    let parts = entry.parts();
    out.extend_from_slice(&parts.sequence.0.to_be_bytes());
    out.extend_from_slice(&parts.appended_at.0.to_be_bytes());
    out.extend_from_slice(&parts.lamport.0.to_be_bytes());
    let key = parts.key.as_str().as_bytes();
    // Keys are at most KEY_BYTES_MAX (1 KiB), metadata at most 64 pairs and 64 KiB, append
    // ids at most 128 bytes: every length below fits its field.
    out.extend_from_slice(&u16::try_from(key.len()).expect("keys are at most 1 KiB").to_be_bytes());
    out.extend_from_slice(key);
    let payload_len = u32::try_from(parts.payload.len()).expect("payloads are below 4 GiB");
    out.extend_from_slice(&payload_len.to_be_bytes());
    out.extend_from_slice(&parts.payload);
    let pairs = u16::try_from(parts.metadata.len()).expect("at most 64 metadata pairs");
    out.extend_from_slice(&pairs.to_be_bytes());
    for (k, v) in parts.metadata.iter() {
        for text in [k, v] {
            let len = u32::try_from(text.len()).expect("metadata is at most 64 KiB");
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(text.as_bytes());
        }
    }
    match append_id {
        Some(id) => {
            let id = id.as_str().as_bytes();
            out.push(u8::try_from(id.len()).expect("append ids are at most 128 bytes"));
            out.extend_from_slice(id);
        }
        None => out.push(0),
    }
}

/// The number of bytes [`encode_fields`] writes.
pub fn fields_len(entry: &Entry, append_id: Option<&AppendId>) -> usize {
    let parts = entry.parts();
    let metadata: usize = parts.metadata.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    24 + 2
        + parts.key.as_str().len()
        + 4
        + parts.payload.len()
        + 2
        + metadata
        + 1
        + append_id.map_or(0, |id| id.as_str().len())
}

/// Entry fields decoded from storage.
#[derive(Debug, Clone)]
pub struct StoredFields {
    /// The entry's fields.
    pub parts: EntryParts,
    /// The append id recorded with it.
    pub append_id: Option<AppendId>,
}

/// What to do with a payload while decoding.
#[derive(Debug, Clone, Copy)]
pub enum PayloadMode<'a> {
    /// Share the buffer the record lies in (no copy).
    Share(&'a Bytes),
    /// Copy it.
    Copy,
    /// Leave it out (recovery needs every field but the payload).
    Skip,
}

/// Decodes [`encode_fields`] output. `source` is the buffer `bytes` lies in, so the payload can
/// share it instead of being copied.
pub fn decode_fields(bytes: &[u8], source: Option<&Bytes>) -> Result<StoredFields, RecordError> {
    decode_fields_with(bytes, source.map_or(PayloadMode::Copy, PayloadMode::Share))
}

/// Decodes [`encode_fields`] output, treating the payload as `mode` says.
pub fn decode_fields_with(
    bytes: &[u8],
    mode: PayloadMode<'_>,
) -> Result<StoredFields, RecordError> {
    let mut r = Reader::new(bytes);
    let sequence = Seq(r.u64("sequence")?);
    let appended_at = Timestamp(r.u64("appended_at_ns")?);
    let lamport = LamportTime(r.u64("lamport_clock")?);
    let key_len = usize::from(r.u16("key length")?);
    let key =
        Key::try_new(r.text(key_len, "key")?).map_err(|e| RecordError::Field(e.to_string()))?;
    let payload = r.bytes_u32("payload")?;
    let payload = match mode {
        PayloadMode::Share(buf) => buf.slice_ref(payload),
        PayloadMode::Copy => Bytes::copy_from_slice(payload),
        PayloadMode::Skip => Bytes::new(),
    };
    let pairs = usize::from(r.u16("metadata pairs")?);
    let mut metadata: Vec<(String, String)> =
        Vec::with_capacity(pairs.min(converge_core::limits::METADATA_PAIRS_MAX));
    for _ in 0..pairs {
        let k = r.text_u32("metadata key")?.to_owned();
        let v = r.text_u32("metadata value")?.to_owned();
        // Keys strictly ascending, as they are written: one encoding per entry.
        if metadata.last().is_some_and(|(prev, _)| *prev >= k) {
            return Err(RecordError::Field("metadata keys out of order".into()));
        }
        metadata.push((k, v));
    }
    let metadata =
        Metadata::try_from_pairs(metadata).map_err(|e| RecordError::Field(e.to_string()))?;
    let id_len = usize::from(r.u8("append_id length")?);
    let append_id = if id_len == 0 {
        None
    } else {
        let id = r.text(id_len, "append_id")?;
        Some(AppendId::try_new(id).map_err(|e| RecordError::Field(e.to_string()))?)
    };
    if !r.is_empty() {
        return Err(RecordError::Field(format!("{} bytes after the entry fields", r.remaining())));
    }
    Ok(StoredFields {
        parts: EntryParts { sequence, key, payload, appended_at, lamport, metadata },
        append_id,
    })
}

/// The body of an entry record: context number, content hash, fields.
pub fn encode_entry_body(
    out: &mut Vec<u8>,
    context: u64,
    entry: &Entry,
    append_id: Option<&AppendId>,
) {
    out.extend_from_slice(&context.to_be_bytes());
    out.extend_from_slice(entry.content_hash().as_bytes());
    encode_fields(out, entry, append_id);
}

/// A decoded entry record body.
#[derive(Debug, Clone)]
pub struct EntryRecord {
    /// The context number.
    pub context: u64,
    /// The entry, with the content hash stored beside its fields.
    pub entry: Entry,
    /// The append id recorded with it.
    pub append_id: Option<AppendId>,
}

/// Decodes an entry record body.
pub fn decode_entry_body(body: &[u8], source: Option<&Bytes>) -> Result<EntryRecord, RecordError> {
    decode_entry_body_with(body, source.map_or(PayloadMode::Copy, PayloadMode::Share))
}

/// Decodes an entry record body, treating the payload as `mode` says.
pub fn decode_entry_body_with(
    body: &[u8],
    mode: PayloadMode<'_>,
) -> Result<EntryRecord, RecordError> {
    let mut r = Reader::new(body);
    let context = r.u64("context number")?;
    let content_hash: Hash = r.hash("content hash")?;
    let fields = decode_fields_with(&body[r.offset()..], mode)?;
    Ok(EntryRecord {
        context,
        entry: Entry::from_trusted_parts(fields.parts, content_hash),
        append_id: fields.append_id,
    })
}

/// The body of a context record.
pub fn encode_context_body(out: &mut Vec<u8>, context: u64, id: &ContextId) {
    out.extend_from_slice(&context.to_be_bytes());
    let id = id.as_str().as_bytes();
    out.extend_from_slice(
        &u16::try_from(id.len()).expect("context ids are at most 1 KiB").to_be_bytes(),
    );
    out.extend_from_slice(id);
}

/// Decodes a context record body.
pub fn decode_context_body(body: &[u8]) -> Result<(u64, ContextId), RecordError> {
    let mut r = Reader::new(body);
    let number = r.u64("context number")?;
    let len = usize::from(r.u16("context id length")?);
    let id = ContextId::try_new(r.text(len, "context id")?)
        .map_err(|e| RecordError::Field(e.to_string()))?;
    Ok((number, id))
}

/// The seal that ends a segment: how many records and bytes it holds before the seal, and the
/// digest that chains it to the next segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seal {
    /// Records in the segment, the seal excluded.
    pub records: u64,
    /// Bytes of the segment before the seal, header included.
    pub bytes: u64,
    /// SHA-256 over the checksum-and-length prefix of every record, in order.
    pub digest: Hash,
}

impl Seal {
    /// The "previous seal" of the first segment: nothing before it.
    pub const fn zero() -> Self {
        Self { records: 0, bytes: 0, digest: Hash::from_bytes([0; 32]) }
    }
}

/// Bytes of a seal record.
pub const SEAL_RECORD_BYTES: usize = HEADER_BYTES + 8 + 8 + 32;

/// The body of a seal record.
pub fn encode_seal_body(out: &mut Vec<u8>, seal: &Seal) {
    out.extend_from_slice(&seal.records.to_be_bytes());
    out.extend_from_slice(&seal.bytes.to_be_bytes());
    out.extend_from_slice(seal.digest.as_bytes());
}

/// Decodes a seal record body.
pub fn decode_seal_body(body: &[u8]) -> Result<Seal, RecordError> {
    let mut r = Reader::new(body);
    Ok(Seal { records: r.u64("records")?, bytes: r.u64("bytes")?, digest: r.hash("digest")? })
}

/// Bytes of a batch record.
pub const BATCH_RECORD_BYTES: usize = HEADER_BYTES + 8;

/// Encodes the batch record that starts a group-commit batch into `out` (exactly
/// [`BATCH_RECORD_BYTES`] long): `previous_lsn` is the LSN before the batch's first record,
/// `synced_lsn` the highest LSN fsynced when the batch is written.
pub fn encode_batch(out: &mut [u8], previous_lsn: u64, synced_lsn: u64) {
    assert!(
        synced_lsn <= previous_lsn,
        "synced LSN {synced_lsn} is beyond the log's end {previous_lsn}"
    );
    let mut bytes = Vec::with_capacity(BATCH_RECORD_BYTES);
    let header = Header { kind: RecordKind::Batch, flags: 0, group: 0, term: 0, lsn: previous_lsn };
    encode(&mut bytes, &header, |b| b.extend_from_slice(&synced_lsn.to_be_bytes()));
    out.copy_from_slice(&bytes);
}

/// Decodes a batch record body: the synced LSN.
pub fn decode_batch_body(body: &[u8]) -> Result<u64, RecordError> {
    Ok(Reader::new(body).u64("synced lsn")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(append: bool) -> (Entry, Option<AppendId>) {
        let ctx = ContextId::try_new("ctx").unwrap();
        let entry = Entry::seal(
            &ctx,
            EntryParts {
                sequence: Seq(3),
                key: Key::try_new("facts").unwrap(),
                payload: Bytes::from_static(b"payload bytes"),
                appended_at: Timestamp(42),
                lamport: LamportTime(7),
                metadata: Metadata::try_from_pairs([("a".into(), "b\nc".into())]).unwrap(),
            },
        );
        (entry, append.then(|| AppendId::try_new("retry-1").unwrap()))
    }

    fn header(kind: RecordKind) -> Header {
        Header { kind, flags: 0, group: 0, term: 0, lsn: 9 }
    }

    #[test]
    fn entry_record_round_trip() {
        for with_id in [false, true] {
            let (entry, id) = entry(with_id);
            let mut out = Vec::new();
            let len = encode(&mut out, &header(RecordKind::Entry), |b| {
                encode_entry_body(b, 5, &entry, id.as_ref());
            });
            assert_eq!(len, out.len());
            let (h, body, total) = decode(&out).unwrap();
            assert_eq!((h, total), (header(RecordKind::Entry), len));
            let rec = decode_entry_body(body, None).unwrap();
            assert_eq!((rec.context, &rec.entry, rec.append_id), (5, &entry, id));
        }
    }

    #[test]
    fn fields_len_is_exact() {
        for with_id in [false, true] {
            let (entry, id) = entry(with_id);
            let mut out = Vec::new();
            encode_fields(&mut out, &entry, id.as_ref());
            assert_eq!(out.len(), fields_len(&entry, id.as_ref()));
        }
    }

    #[test]
    fn set_lsn_keeps_the_record_valid() {
        let (entry, _) = entry(false);
        let mut out = Vec::new();
        encode(&mut out, &header(RecordKind::Entry), |b| encode_entry_body(b, 1, &entry, None));
        set_lsn(&mut out, 77);
        assert_eq!(decode(&out).unwrap().0.lsn, 77);
    }

    #[test]
    fn damage_is_detected() {
        let (entry, _) = entry(false);
        let mut out = Vec::new();
        encode(&mut out, &header(RecordKind::Entry), |b| encode_entry_body(b, 1, &entry, None));
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "flip at {i} accepted");
        }
        assert_eq!(decode(&out[..out.len() - 1]).unwrap_err(), RecordError::Truncated);
        assert_eq!(decode(&out[..5]).unwrap_err(), RecordError::Truncated);
    }

    #[test]
    fn context_and_seal_round_trip() {
        let id = ContextId::try_new("growth-strategy-001").unwrap();
        let mut out = Vec::new();
        encode(&mut out, &header(RecordKind::Context), |b| encode_context_body(b, 12, &id));
        let (_, body, _) = decode(&out).unwrap();
        assert_eq!(decode_context_body(body).unwrap(), (12, id));
        let seal = Seal { records: 3, bytes: 4096, digest: Hash::from_bytes([7; 32]) };
        let mut out = Vec::new();
        let len = encode(&mut out, &header(RecordKind::Seal), |b| encode_seal_body(b, &seal));
        assert_eq!(len, SEAL_RECORD_BYTES);
        let (_, body, _) = decode(&out).unwrap();
        assert_eq!(decode_seal_body(body).unwrap(), seal);
    }

    #[test]
    fn reserved_kinds_round_trip_but_unknown_ones_do_not() {
        let mut out = Vec::new();
        encode(&mut out, &header(RecordKind::Fence), |_| {});
        assert_eq!(decode(&out).unwrap().0.kind, RecordKind::Fence);
        out[8] = 99;
        set_lsn(&mut out, 9);
        assert_eq!(decode(&out).unwrap_err(), RecordError::Unknown { kind: 99, version: 1 });
    }
}
