//! The model test: random operation sequences against the ledger and against a plain
//! in-memory `Vec` per context, in both storage modes, with checkpoints and reopens on disk.
#![allow(clippy::cast_possible_truncation, reason = "test sizes and indices are small")]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use converge_core::merkle::CompactTree;
use converge_core::{ContextId, Entry, Hash};
use converge_ledger::{AppendRequest, GetRequest, Ledger, LedgerApi, LedgerConfig, LedgerError};
use proptest::prelude::*;

const CONTEXTS: [&str; 3] = ["alpha", "beta", "gamma"];
const KEYS: [&str; 3] = ["facts", "intents", "traces"];

#[derive(Debug, Clone)]
enum Op {
    Append {
        ctx: usize,
        key: usize,
        payload: Vec<u8>,
        append_id: Option<u8>,
        received: Option<u64>,
    },
    Get {
        ctx: usize,
        after: u64,
        limit: u32,
        key: Option<usize>,
    },
    Prove {
        ctx: usize,
        seq: u64,
        size: u64,
    },
    Checkpoint,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, 0..3usize, prop::collection::vec(any::<u8>(), 0..48), prop::option::weighted(0.3, 0..4u8), prop::option::weighted(0.2, 0..60u64))
            .prop_map(|(ctx, key, payload, append_id, received)| Op::Append { ctx, key, payload, append_id, received }),
        3 => (0..3usize, 0..30u64, 0..8u32, prop::option::of(0..3usize)).prop_map(|(ctx, after, limit, key)| Op::Get { ctx, after, limit, key }),
        2 => (0..3usize, 0..40u64, 0..40u64).prop_map(|(ctx, seq, size)| Op::Prove { ctx, seq, size }),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Default)]
struct Model {
    entries: Vec<Arc<Entry>>,
    ids: HashMap<u8, usize>,
}

impl Model {
    fn root(&self, size: usize) -> Hash {
        let hashes: Vec<Hash> = self.entries[..size].iter().map(|e| e.content_hash()).collect();
        CompactTree::from_leaves(&hashes).root()
    }
}

async fn check_append(
    ledger: &Ledger,
    model: &mut Model,
    ctx: usize,
    key: usize,
    payload: Vec<u8>,
    append_id: Option<u8>,
    received: Option<u64>,
) -> Result<(), TestCaseError> {
    let mut req = AppendRequest::new(CONTEXTS[ctx], KEYS[key], payload.clone());
    req.append_id = append_id.map(|id| format!("id-{id}"));
    req.received_lamport_clock = received;
    let result = ledger.append(req).await;
    if let Some(i) = append_id.and_then(|id| model.ids.get(&id).copied()) {
        let recorded = &model.entries[i];
        if recorded.key().as_str() == KEYS[key] && recorded.payload()[..] == payload[..] {
            prop_assert_eq!(&result.unwrap(), recorded, "a retry returns the recorded entry");
        } else {
            prop_assert!(matches!(result, Err(LedgerError::AlreadyExists(_))), "{:?}", result);
        }
        return Ok(());
    }
    let entry = result.unwrap();
    let previous = model.entries.last();
    prop_assert_eq!(entry.sequence().0, model.entries.len() as u64 + 1);
    let base = previous.map_or(0, |p| p.lamport().0);
    prop_assert_eq!(entry.lamport().0, base.max(received.unwrap_or(0)) + 1);
    if let Some(p) = previous {
        prop_assert!(entry.appended_at() > p.appended_at());
    }
    prop_assert_eq!(entry.key().as_str(), KEYS[key]);
    prop_assert_eq!(&entry.payload()[..], &payload[..]);
    entry.verify(&ContextId::try_new(CONTEXTS[ctx]).unwrap()).unwrap();
    if let Some(id) = append_id {
        model.ids.insert(id, model.entries.len());
    }
    model.entries.push(entry);
    Ok(())
}

async fn check_get(
    ledger: &Ledger,
    model: &Model,
    ctx: usize,
    after: u64,
    limit: u32,
    key: Option<usize>,
) -> Result<(), TestCaseError> {
    let req = GetRequest {
        context_id: CONTEXTS[ctx].into(),
        key: key.map(|k| KEYS[k].to_string()),
        after_sequence: after,
        limit,
        before_sequence: 0,
        newest_first: false,
    };
    let got = ledger.get(req).await.unwrap();
    let expected: Vec<Arc<Entry>> = model
        .entries
        .iter()
        .filter(|e| e.sequence().0 > after && key.is_none_or(|k| e.key().as_str() == KEYS[k]))
        .take(if limit == 0 { usize::MAX } else { limit as usize })
        .cloned()
        .collect();
    prop_assert_eq!(got.entries, expected);
    prop_assert_eq!(got.latest_sequence, model.entries.len() as u64);
    Ok(())
}

async fn check_proofs(
    ledger: &Ledger,
    model: &Model,
    ctx: usize,
    seq: u64,
    size: u64,
) -> Result<(), TestCaseError> {
    let n = model.entries.len() as u64;
    let head = ledger.tree_head(CONTEXTS[ctx]).await.unwrap();
    prop_assert_eq!((head.tree_size, head.root_hash), (n, model.root(n as usize)));
    let result = ledger.prove_inclusion(CONTEXTS[ctx], seq, size).await;
    let effective = if size == 0 { n } else { size };
    if seq == 0 {
        prop_assert!(matches!(result, Err(LedgerError::InvalidArgument(_))), "{:?}", result);
    } else if n == 0 || effective > n || seq > effective {
        prop_assert!(matches!(result, Err(LedgerError::OutOfRange(_))), "{:?}", result);
    } else {
        let proof = result.unwrap();
        prop_assert_eq!(proof.root_hash, model.root(effective as usize));
        proof.verify(&model.entries[seq as usize - 1].content_hash()).unwrap();
        let proof = ledger.prove_consistency(CONTEXTS[ctx], seq, size).await.unwrap();
        proof.verify().unwrap();
        prop_assert_eq!(proof.from_root, model.root(seq as usize));
    }
    Ok(())
}

async fn run(ops: Vec<Op>, dir: Option<&Path>) -> Result<(), TestCaseError> {
    let open = || match dir {
        Some(d) => Ledger::open(LedgerConfig::disk(d)).unwrap(),
        None => Ledger::open(LedgerConfig::memory()).unwrap(),
    };
    let mut ledger = open();
    let mut models: Vec<Model> = (0..3).map(|_| Model::default()).collect();
    for op in ops {
        match op {
            Op::Append { ctx, key, payload, append_id, received } => {
                check_append(&ledger, &mut models[ctx], ctx, key, payload, append_id, received)
                    .await?;
            }
            Op::Get { ctx, after, limit, key } => {
                check_get(&ledger, &models[ctx], ctx, after, limit, key).await?;
            }
            Op::Prove { ctx, seq, size } => {
                check_proofs(&ledger, &models[ctx], ctx, seq, size).await?;
            }
            Op::Checkpoint => ledger.checkpoint().unwrap(),
            Op::Reopen => {
                if dir.is_some() {
                    ledger.close().await.unwrap();
                    drop(ledger);
                    ledger = open();
                }
            }
        }
    }
    ledger.close().await.unwrap();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn memory_mode_matches_the_model(ops in prop::collection::vec(op(), 1..120)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops, None))?;
    }

    #[test]
    fn disk_mode_matches_the_model(ops in prop::collection::vec(op(), 1..120)) {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops, Some(dir.path())))?;
    }
}
