//! Generated entries: well-formed contexts for round trips, and a deterministic one for the
//! golden fixture.

use bytes::Bytes;
use converge_core::{
    ContextHead, ContextId, Entry, EntryParts, Key, LamportTime, Metadata, Timestamp,
};
use proptest::prelude::*;

/// One entry's worth of client input plus the clock inputs the ledger would see.
#[derive(Debug, Clone)]
pub struct Input {
    pub key: String,
    pub payload: Vec<u8>,
    pub metadata: Vec<(String, String)>,
    pub now_step: u64,
    pub received: Option<u64>,
}

fn input() -> impl Strategy<Value = Input> {
    (
        "[a-z]{1,12}|[\\PC]{1,6}",
        prop::collection::vec(any::<u8>(), 0..300),
        prop::collection::vec(("[\\PC]{0,8}", "(?s).{0,16}"), 0..5),
        0..1_000_000u64,
        prop::option::of(0..1_000u64),
    )
        .prop_map(|(key, payload, metadata, now_step, received)| Input {
            key,
            payload,
            metadata,
            now_step,
            received,
        })
}

/// A context id and the inputs of up to `max` appends.
pub fn context_inputs(max: usize) -> impl Strategy<Value = (String, Vec<Input>)> {
    ("[a-zA-Z0-9._/-]{1,40}", prop::collection::vec(input(), 0..max))
}

/// Appends `inputs` as the ledger would, starting the wall clock at `start`.
pub fn build(context: &ContextId, inputs: &[Input], start: u64) -> Vec<Entry> {
    let mut head = ContextHead::new();
    let mut now = start;
    inputs
        .iter()
        .map(|input| {
            now += input.now_step;
            let stamp = head.stamp(Timestamp(now), input.received.map(LamportTime)).unwrap();
            let entry = Entry::seal(
                context,
                EntryParts {
                    sequence: stamp.sequence,
                    key: Key::try_new(input.key.as_str()).unwrap(),
                    payload: Bytes::from(input.payload.clone()),
                    appended_at: stamp.appended_at,
                    lamport: stamp.lamport,
                    metadata: Metadata::try_from_pairs(input.metadata.clone()).unwrap(),
                },
            );
            head.apply(&entry, |_, _| {}).unwrap();
            entry
        })
        .collect()
}

/// The entries of the golden fixture: fixed, covering every field shape (empty payload,
/// binary payload, non-ASCII text, metadata with an empty key and multi-line values, a
/// received Lamport clock).
pub fn golden() -> (ContextId, Vec<Entry>) {
    let context = ContextId::try_new("golden/snapshot-v1").unwrap();
    let inputs = [
        Input {
            key: "facts".into(),
            payload: b"market_size: 2.4B".to_vec(),
            metadata: vec![],
            now_step: 0,
            received: None,
        },
        Input {
            key: "intents".into(),
            payload: vec![],
            metadata: vec![
                ("agent_id".into(), "strategy-agent".into()),
                ("cycle".into(), "5".into()),
            ],
            now_step: 1_000,
            received: Some(41),
        },
        Input {
            key: "traces".into(),
            payload: (0..=255).collect(),
            metadata: vec![(String::new(), String::new())],
            now_step: 0,
            received: None,
        },
        Input {
            key: "évals".into(),
            payload: "ünïcode ✓".as_bytes().to_vec(),
            metadata: vec![
                ("z".into(), "line one\nline two\ttabbed".into()),
                ("a".into(), "first".into()),
            ],
            now_step: 7,
            received: Some(3),
        },
        Input {
            key: "facts".into(),
            payload: vec![0; 1024],
            metadata: vec![],
            now_step: 123_456_789,
            received: None,
        },
    ];
    let entries = build(&context, &inputs, 1_764_000_000_000_000_000);
    (context, entries)
}
