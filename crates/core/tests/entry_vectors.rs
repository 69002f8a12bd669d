//! CONTRACT §3 known answers: `tests/data/entry-hash/vectors.json`, computed by an independent
//! Python implementation, reproduced byte for byte.
#![allow(clippy::cast_possible_truncation, reason = "test sizes and indices are small")]

mod common;

use bytes::Bytes;
use common::{unhex, vectors};
use converge_core::merkle::root_of_leaves;
use converge_core::{
    ContextId, Entry, EntryParts, Hash, Key, LamportTime, Metadata, PartialContentHash, Seq,
    Timestamp,
};

fn entry_of(v: &vectors::EntryVector) -> (ContextId, Entry) {
    let context = ContextId::try_new(v.context_id.as_str()).unwrap();
    let parts = EntryParts {
        sequence: Seq(v.sequence),
        key: Key::try_new(v.key.as_str()).unwrap(),
        payload: Bytes::from(unhex(&v.payload_hex)),
        appended_at: Timestamp(v.appended_at_ns),
        lamport: LamportTime(v.lamport_clock),
        metadata: Metadata::try_from_pairs(v.metadata.clone()).unwrap(),
    };
    let entry = Entry::seal(&context, parts);
    (context, entry)
}

#[test]
fn leaf_input_content_hash_and_id_reproduce() {
    let doc = vectors::entry_hash();
    assert_eq!(doc.entries.len(), 4);
    for v in &doc.entries {
        let (context, entry) = entry_of(v);
        assert_eq!(
            converge_core::hex::encode(&entry.leaf_input(&context)),
            v.leaf_input_hex,
            "leaf input of {}/{}",
            v.context_id,
            v.sequence
        );
        assert_eq!(entry.content_hash().to_hex(), v.content_hash_hex);
        assert_eq!(entry.id().to_hex(), v.id);
    }
}

#[test]
fn partial_hash_equals_the_one_shot_hash() {
    for v in &vectors::entry_hash().entries {
        let (context, entry) = entry_of(v);
        let p = entry.parts();
        let partial = PartialContentHash::new(&context, &p.key, &p.payload);
        let finished = partial.finish(p.sequence, p.appended_at, p.lamport, &p.metadata);
        assert_eq!(finished, entry.content_hash());
    }
}

#[test]
fn root_of_the_first_three() {
    let doc = vectors::entry_hash();
    let hashes: Vec<Hash> = doc.entries[..3].iter().map(|v| entry_of(v).1.content_hash()).collect();
    assert_eq!(root_of_leaves(&hashes).to_hex(), doc.root_of_first_three_hex);
}
