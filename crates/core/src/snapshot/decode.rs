//! Reading and verifying snapshot blobs (layout in the module above).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;

use crate::codec::{ReadError, Reader};
use crate::entry::{ContentHashMismatch, Entry, EntryParts};
use crate::limits::{Limits, METADATA_PAIRS_MAX};
use crate::merkle::{RootHash, TreeSize};
use crate::seq::{Seq, Timestamp};
use crate::validate::{ContextId, Key, Metadata, ValidationError};

use super::{
    CHECKSUM_BYTES, ENTRY_BYTES_MIN, FORMAT_VERSION, HEADER_BYTES_MIN, MAGIC, SnapshotError,
    VerifiedSnapshot,
};

/// Decodes and fully verifies a snapshot: magic, version, checksum, every field's limits,
/// sequences `1..n` without gaps, times and clocks increasing, every content hash, the tree
/// size and the root. Payloads share `blob`'s memory instead of being copied.
pub fn decode(blob: &Bytes, limits: &Limits) -> Result<VerifiedSnapshot, SnapshotError> {
    decode_with(blob, limits, |entries, check| check(entries))
}

/// [`decode`], letting the caller split the content-hash checks (most of the work) across
/// threads: `run` receives the parsed entries and a check for any slice of them, and must call
/// it on every entry exactly once (a shell can hand halves to two threads; the core spawns
/// none). With several mismatches, the error names the lowest sequence, however the work was
/// split.
///
/// # Panics
///
/// If `run` did not check as many entries as there are: a bug in the caller, which would
/// otherwise let an unchecked entry through.
pub fn decode_with(
    blob: &Bytes,
    limits: &Limits,
    run: impl FnOnce(&[Entry], &(dyn Fn(&[Entry]) + Sync)),
) -> Result<VerifiedSnapshot, SnapshotError> {
    let body = check_envelope(blob)?;
    let mut reader = Reader::new(body);
    reader.take(MAGIC.len() + 4, "magic and version")?;
    let context =
        ContextId::try_new(reader.text_u32("context_id")?).map_err(SnapshotError::Context)?;
    let claimed = reader.u64("entry_count")?;
    let tree_size = TreeSize(reader.u64("tree_size")?);
    let stored_root = RootHash { size: tree_size, hash: reader.hash("root_hash")? };
    let count = bounded_count(claimed, reader.remaining())?;
    if tree_size.0 != claimed {
        return Err(SnapshotError::TreeSize { tree_size, entries: claimed });
    }

    let mut entries = Vec::with_capacity(count);
    for i in 0..count {
        // `count` is below the number of bytes in the blob, so `i + 1` cannot overflow.
        entries.push(read_entry(&mut reader, blob, Seq(i as u64 + 1), limits)?);
    }
    if reader.remaining() > 0 {
        return Err(SnapshotError::TrailingBytes {
            offset: reader.offset(),
            count: reader.remaining(),
        });
    }
    check_content_hashes(&context, &entries, run)?;

    let snapshot = VerifiedSnapshot::from_entries(context, entries)?;
    let computed = snapshot.head().tree().root_hash();
    if computed != stored_root {
        return Err(SnapshotError::RootMismatch { stored: stored_root, computed });
    }
    Ok(snapshot)
}

/// Every entry's content hash, checked through `run` (see [`decode_with`]).
fn check_content_hashes(
    context: &ContextId,
    entries: &[Entry],
    run: impl FnOnce(&[Entry], &(dyn Fn(&[Entry]) + Sync)),
) -> Result<(), SnapshotError> {
    let checked = AtomicUsize::new(0);
    let first_mismatch: Mutex<Option<ContentHashMismatch>> = Mutex::new(None);
    let check = |slice: &[Entry]| {
        // Slices are in sequence order, so the first mismatch in one is its lowest.
        if let Some(found) = slice.iter().find_map(|entry| entry.verify(context).err()) {
            let mut first = first_mismatch.lock().unwrap_or_else(PoisonError::into_inner);
            if first.as_ref().is_none_or(|f| found.sequence < f.sequence) {
                *first = Some(found);
            }
        }
        checked.fetch_add(slice.len(), Ordering::Relaxed);
    };
    run(entries, &check);
    if let Some(mismatch) = first_mismatch.into_inner().unwrap_or_else(PoisonError::into_inner) {
        return Err(SnapshotError::ContentHash(mismatch));
    }
    assert_eq!(
        checked.into_inner(),
        entries.len(),
        "decode_with's caller must check every entry exactly once"
    );
    Ok(())
}

/// Checks length, magic, version and checksum; returns the bytes the checksum covers.
fn check_envelope(blob: &[u8]) -> Result<&[u8], SnapshotError> {
    let min = HEADER_BYTES_MIN + CHECKSUM_BYTES;
    if blob.len() < min {
        // Say "not a snapshot" rather than "too short" when even the magic is wrong.
        if blob.len() >= MAGIC.len() && blob[..MAGIC.len()] != MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        return Err(SnapshotError::TooShort { len: blob.len(), min });
    }
    if blob[..MAGIC.len()] != MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let mut version = [0; 4];
    version.copy_from_slice(&blob[MAGIC.len()..MAGIC.len() + 4]);
    let version = u32::from_be_bytes(version);
    if version != FORMAT_VERSION {
        return Err(SnapshotError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let (body, trailer) = blob.split_at(blob.len() - CHECKSUM_BYTES);
    let mut stored = [0; CHECKSUM_BYTES];
    stored.copy_from_slice(trailer);
    let stored = u32::from_be_bytes(stored);
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(SnapshotError::ChecksumMismatch { stored, computed });
    }
    Ok(body)
}

/// The claimed entry count, if the remaining bytes could hold that many entries. This is
/// what keeps a blob claiming 2^60 entries from reserving memory for them.
fn bounded_count(claimed: u64, remaining: usize) -> Result<usize, SnapshotError> {
    let possible = remaining / ENTRY_BYTES_MIN;
    match usize::try_from(claimed) {
        Ok(count) if count <= possible => Ok(count),
        _ => Err(SnapshotError::EntryCount { claimed, bytes: remaining, possible }),
    }
}

fn read_entry(
    reader: &mut Reader<'_>,
    blob: &Bytes,
    expected: Seq,
    limits: &Limits,
) -> Result<Entry, SnapshotError> {
    let sequence = Seq(reader.u64("entry sequence")?);
    if sequence != expected {
        return Err(SnapshotError::Order(crate::head::ApplyError::SequenceGap {
            expected,
            found: sequence,
        }));
    }
    let appended_at = Timestamp(reader.u64("entry appended_at_ns")?);
    let field = |source: ValidationError| SnapshotError::Field { sequence, source };
    let lamport =
        crate::validate::check_lamport(reader.u64("entry lamport_clock")?).map_err(field)?;
    let key = Key::try_new(reader.text_u32("entry key")?).map_err(field)?;

    let payload = reader.bytes_u32("entry payload")?;
    if payload.len() > limits.payload_bytes_max {
        return Err(SnapshotError::PayloadTooLarge {
            sequence,
            len: payload.len(),
            max: limits.payload_bytes_max,
        });
    }
    let payload = blob.slice_ref(payload);

    let pairs = reader.u32("metadata count")? as usize;
    if pairs > METADATA_PAIRS_MAX {
        return Err(field(ValidationError::MetadataPairs {
            count: pairs,
            max: METADATA_PAIRS_MAX,
        }));
    }
    let mut metadata = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        let offset = reader.offset();
        let k = reader.text_u32("metadata key")?;
        let v = reader.text_u32("metadata value")?;
        // Keys strictly ascending: one canonical encoding, and no key given twice.
        if metadata.last().is_some_and(|(prev, _): &(String, String)| prev.as_str() >= k) {
            return Err(SnapshotError::Malformed {
                offset,
                what: "metadata keys in ascending order",
            });
        }
        metadata.push((k.to_owned(), v.to_owned()));
    }
    let metadata = Metadata::try_from_pairs(metadata).map_err(field)?;
    let content_hash = reader.hash("entry content_hash")?;
    Ok(Entry::from_trusted_parts(
        EntryParts { sequence, key, payload, appended_at, lamport, metadata },
        content_hash,
    ))
}

impl From<ReadError> for SnapshotError {
    fn from(err: ReadError) -> Self {
        Self::Malformed { offset: err.offset, what: err.what }
    }
}
