//! The snapshot codec: round trips, the golden v1 fixture, every refusal, and a bounded
//! arbitrary-bytes fuzz harness that runs with the normal tests.
#![allow(clippy::cast_possible_truncation, reason = "test sizes and indices are small")]

mod common;

use bytes::Bytes;
use common::entries::{build, context_inputs, golden};
use converge_core::limits::Limits;
use converge_core::snapshot::{self, FORMAT_VERSION, MAGIC, SnapshotEncoder, SnapshotError};
use converge_core::{ContextId, Entry, RootHash, Seq, TreeSize};
use proptest::prelude::*;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/snapshot-v1.bin");

fn decode(blob: &[u8]) -> Result<snapshot::VerifiedSnapshot, SnapshotError> {
    snapshot::decode(&Bytes::copy_from_slice(blob), &Limits::default())
}

/// Recomputes the trailing checksum, so a test can reach the checks behind it.
fn reseal(mut blob: Vec<u8>) -> Vec<u8> {
    blob.truncate(blob.len() - 4);
    let crc = crc32c::crc32c(&blob);
    blob.extend_from_slice(&crc.to_be_bytes());
    blob
}

fn golden_blob() -> (ContextId, Vec<Entry>, Vec<u8>) {
    let (context, entries) = golden();
    let blob = snapshot::encode(&context, &entries);
    (context, entries, blob)
}

/// Offset of the first entry in a blob of `context` (header layout of format v1).
fn first_entry_offset(context: &ContextId) -> usize {
    8 + 4 + 4 + context.as_str().len() + 8 + 8 + 32
}

#[test]
fn golden_v1_fixture_still_loads() {
    // Set CONVERGE_REGENERATE_FIXTURES=1 only when introducing a fixture, never to paper over
    // a change: format v1 must keep loading as it was first written.
    if std::env::var_os("CONVERGE_REGENERATE_FIXTURES").is_some() {
        std::fs::write(FIXTURE, golden_blob().2).unwrap();
    }
    let bytes = std::fs::read(FIXTURE).expect("the v1 fixture is committed");
    let snap = decode(&bytes).expect("the v1 fixture decodes and verifies");
    assert_eq!(snap.context().as_str(), "golden/snapshot-v1");
    assert_eq!(snap.entries().len(), 5);
    let head = snap.tree_head();
    assert_eq!(head.root.size, TreeSize(5));
    assert_eq!(
        head.root.hash.to_hex(),
        "9437fd23a1104bc75fcb806f40508508e186078a84d760b6f07c88fa81e5ad56",
        "root of the committed fixture (checked independently by fixtures/check_snapshot.py)"
    );
    assert_eq!(head.lamport.0, 45, "1, then 41 received gives 42, then 43, 44, 45");
    let e4 = &snap.entries()[3];
    assert_eq!(e4.key().as_str(), "évals");
    assert_eq!(e4.metadata().get("z"), Some("line one\nline two\ttabbed"));
    // While v1 is the current format, encoding is canonical: the same entries, the same bytes.
    let (_, _, blob) = golden_blob();
    assert_eq!(blob, bytes, "encoder output drifted from the committed v1 fixture");
}

#[test]
fn empty_context_round_trips() {
    let context = ContextId::try_new("empty").unwrap();
    let blob = snapshot::encode(&context, &[]);
    let snap = decode(&blob).unwrap();
    assert!(snap.entries().is_empty());
    assert_eq!(snap.tree_head().root.hash, converge_core::EMPTY_ROOT);
}

#[test]
fn rehash_for_another_context() {
    let (_, entries, blob) = golden_blob();
    let target = ContextId::try_new("restored-elsewhere").unwrap();
    let moved = decode(&blob).unwrap().rehash_for(target.clone());
    assert_eq!(moved.context(), &target);
    for (a, b) in entries.iter().zip(moved.entries()) {
        assert_eq!(a.parts(), b.parts(), "every field is kept");
        assert_ne!(a.content_hash(), b.content_hash(), "the hash binds the context");
        b.verify(&target).unwrap();
    }
    assert_ne!(moved.tree_head().root.hash, decode(&blob).unwrap().tree_head().root.hash);
    let again = decode(&snapshot::encode(&target, moved.entries())).unwrap();
    assert_eq!(again.tree_head(), moved.tree_head());
}

/// Checks one entry at a time, last first, each on its own thread: the most scrambled split.
fn check_backwards(entries: &[Entry], check: &(dyn Fn(&[Entry]) + Sync)) {
    std::thread::scope(|scope| {
        for i in (0..entries.len()).rev() {
            scope.spawn(move || check(&entries[i..=i]));
        }
    });
}

#[test]
fn split_checks_verify_the_same_and_name_the_lowest_mismatch() {
    let (_, entries, blob) = golden_blob();
    assert!(entries.len() >= 3);
    let bytes = Bytes::from(blob.clone());
    let whole = snapshot::decode(&bytes, &Limits::default()).unwrap();
    let split = snapshot::decode_with(&bytes, &Limits::default(), check_backwards).unwrap();
    assert_eq!(split.tree_head(), whole.tree_head());
    assert_eq!(split.entries(), whole.entries());

    // Forge the stored hashes of the second and the last entry.
    let mut forged = blob;
    for entry in [&entries[1], &entries[entries.len() - 1]] {
        let hash = entry.content_hash();
        let at = forged.windows(32).position(|w| w == hash.as_bytes()).unwrap();
        forged[at] ^= 0x01;
    }
    let forged = Bytes::from(reseal(forged));
    let err = snapshot::decode_with(&forged, &Limits::default(), check_backwards).unwrap_err();
    assert!(matches!(err, SnapshotError::ContentHash(ref m) if m.sequence == Seq(2)), "{err}");
}

#[test]
#[should_panic(expected = "must check every entry")]
fn a_split_that_skips_entries_is_a_bug_not_a_pass() {
    let (_, _, blob) = golden_blob();
    let _ = snapshot::decode_with(&Bytes::from(blob), &Limits::default(), |entries, check| {
        check(&entries[1..]);
    });
}

#[test]
fn every_single_byte_change_loss_or_addition_is_refused() {
    let (_, _, blob) = golden_blob();
    for i in 0..blob.len() {
        let mut changed = blob.clone();
        changed[i] ^= 0x01;
        assert!(decode(&changed).is_err(), "flipped byte {i} accepted");
        let mut lost = blob.clone();
        lost.remove(i);
        assert!(decode(&lost).is_err(), "removed byte {i} accepted");
        let mut added = blob.clone();
        added.insert(i, 0x00);
        assert!(decode(&added).is_err(), "inserted byte at {i} accepted");
    }
    let mut longer = blob.clone();
    longer.push(0);
    assert!(decode(&longer).is_err());
}

#[test]
fn refusals_name_what_is_wrong() {
    let (context, _, blob) = golden_blob();
    assert!(matches!(decode(&[]), Err(SnapshotError::TooShort { len: 0, .. })));
    assert_eq!(
        decode(b"PK\x03\x04 definitely a zip file, not a snapshot at all..."),
        Err(SnapshotError::BadMagic)
    );

    let mut v2 = blob.clone();
    v2[8..12].copy_from_slice(&2u32.to_be_bytes());
    assert_eq!(
        decode(&reseal(v2)),
        Err(SnapshotError::UnsupportedVersion { found: 2, supported: FORMAT_VERSION })
    );

    let mut damaged = blob.clone();
    let last = damaged.len() - 10;
    damaged[last] ^= 0xff;
    let err = decode(&damaged).unwrap_err();
    assert!(matches!(err, SnapshotError::ChecksumMismatch { .. }));
    assert!(err.to_string().contains("damaged or truncated"), "{err}");

    // Past the checksum: a forged blob whose checksum was recomputed.
    let start = first_entry_offset(&context);
    let mut gap = blob.clone();
    gap[start..start + 8].copy_from_slice(&2u64.to_be_bytes());
    assert!(matches!(decode(&reseal(gap)), Err(SnapshotError::Order(_))));

    let mut payload = blob.clone();
    let p = start + 24 + 4 + "facts".len() + 4; // first payload byte
    payload[p] ^= 0x20;
    let err = decode(&reseal(payload)).unwrap_err();
    assert!(matches!(err, SnapshotError::ContentHash(ref m) if m.sequence == Seq(1)), "{err}");

    let mut root = blob.clone();
    let r = start - 32;
    root[r] ^= 0x01;
    assert!(matches!(decode(&reseal(root)), Err(SnapshotError::RootMismatch { .. })));

    let mut size = blob.clone();
    size[start - 40..start - 32].copy_from_slice(&4u64.to_be_bytes());
    assert!(matches!(decode(&reseal(size)), Err(SnapshotError::TreeSize { .. })));

    let mut trailing = blob.clone();
    let at = trailing.len() - 4;
    trailing.splice(at..at, [0u8; 3]);
    assert!(matches!(
        decode(&reseal(trailing)),
        Err(SnapshotError::TrailingBytes { count: 3, .. })
    ));

    let small = Limits { payload_bytes_max: 100, ..Limits::default() };
    let err = snapshot::decode(&Bytes::from(blob.clone()), &small).unwrap_err();
    assert!(
        matches!(err, SnapshotError::PayloadTooLarge { sequence: Seq(3), len: 256, max: 100 }),
        "{err}"
    );
}

#[test]
fn a_blob_claiming_2_pow_60_entries_is_refused_without_allocating_for_them() {
    let (context, _, blob) = golden_blob();
    let count_at = first_entry_offset(&context) - 48;
    let mut huge = blob.clone();
    huge[count_at..count_at + 8].copy_from_slice(&(1u64 << 60).to_be_bytes());
    huge[count_at + 8..count_at + 16].copy_from_slice(&(1u64 << 60).to_be_bytes());
    let err = decode(&reseal(huge)).unwrap_err();
    assert!(
        matches!(err, SnapshotError::EntryCount { claimed, .. } if claimed == 1 << 60),
        "{err}"
    );
}

#[test]
fn invalid_fields_are_refused_even_with_good_hashes() {
    // A context id with a control character: the encoder does not check (it takes a checked
    // ContextId), so forge one by patching bytes of the same length and resealing.
    let (context, _, blob) = golden_blob();
    let mut bad = blob.clone();
    bad[16] = b'\n';
    let err = decode(&reseal(bad)).unwrap_err();
    assert!(matches!(err, SnapshotError::Context(_)), "{err}");
    assert!(err.to_string().contains("control character"), "{err}");
    let _ = context;
}

#[test]
fn the_encoder_refuses_a_wrong_entry_count() {
    let (context, entries) = golden();
    let root = RootHash { size: TreeSize(9), hash: converge_core::EMPTY_ROOT };
    let mut encoder = SnapshotEncoder::new(&context, root, 0);
    encoder.push(&entries[0]);
    assert!(encoder.finish().is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn round_trip((context, inputs) in context_inputs(40), start in 0..u64::MAX / 2) {
        let context = ContextId::try_new(context).unwrap();
        let entries = build(&context, &inputs, start);
        let blob = snapshot::encode(&context, &entries);
        prop_assert_eq!(&blob[..8], &MAGIC);
        let snap = decode(&blob).unwrap();
        prop_assert_eq!(snap.context(), &context);
        prop_assert_eq!(snap.entries(), &entries[..]);
        prop_assert_eq!(snap.tree_head().root.size, TreeSize(entries.len() as u64));
        prop_assert_eq!(snapshot::encode(&context, snap.entries()), blob);
    }
}

/// The fuzz harness: arbitrary bytes, and structure-aware mutations of valid blobs with the
/// checksum recomputed so they reach the parser behind it. Decoding must return (never
/// panic), and a changed blob must never verify as a different snapshot.
mod fuzz {
    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&bytes);
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
            with_magic.extend_from_slice(&bytes);
            let _ = decode(&reseal_if_long(with_magic));
        }

        #[test]
        fn mutated_blobs_never_panic(
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..6),
            fix_checksum in any::<bool>(),
        ) {
            let (_, _, blob) = golden_blob();
            let mut mutated = blob.clone();
            for (at, byte, kind) in edits {
                let i = at.index(mutated.len());
                match kind {
                    0 => mutated[i] = byte,
                    1 => { mutated.remove(i); }
                    _ => mutated.insert(i, byte),
                }
            }
            if fix_checksum {
                mutated = reseal_if_long(mutated);
            }
            if let Ok(snap) = decode(&mutated) {
                // Only an unchanged blob may verify.
                prop_assert_eq!(&mutated, &blob);
                prop_assert_eq!(snap.entries().len(), 5);
            }
        }
    }

    fn reseal_if_long(blob: Vec<u8>) -> Vec<u8> {
        if blob.len() >= 4 { reseal(blob) } else { blob }
    }
}
