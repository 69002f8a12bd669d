//! Idle contexts leave memory under the budget and come back from the index unchanged; a
//! context that was only looked at leaves at once; nothing that only memory holds is dropped.

mod common;

use std::sync::Arc;

use common::*;
use converge_core::merkle::root_of_leaves;
use converge_storage::store::CONTEXT_RESIDENT_BYTES;
use converge_storage::{Store, StoreConfig};

fn budget_for(contexts: usize) -> usize {
    contexts * CONTEXT_RESIDENT_BYTES
}

#[test]
fn idle_contexts_are_evicted_under_the_budget_and_reload_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { memory_budget: budget_for(10), ..disk(dir.path()) };
    let store = open(&config);
    let names: Vec<String> = (0..100).map(|i| format!("ctx-{i}")).collect();
    let mut heads = Vec::new();
    for name in &names {
        let c = store.context(&ctx(name)).unwrap();
        append(&c, "k", name.as_bytes());
        append(&c, "k", b"second");
        heads.push(c.tree_head());
    }
    // Nothing is evicted while its entries are only in memory.
    assert!(!store.enforce_memory_budget());
    assert_eq!(store.stats().contexts, 100);
    store.checkpoint().unwrap();
    assert!(store.enforce_memory_budget());
    let resident_max = config.contexts_resident_max();
    assert!(resident_max < 10, "the index takes its share of the budget");
    assert!(store.stats().contexts <= resident_max, "{} resident", store.stats().contexts);
    for (name, head) in names.iter().zip(&heads) {
        let c = store.find(&ctx(name)).unwrap().expect("reloaded from the index");
        assert_eq!(&c.tree_head(), head);
        let entries = read_all(&c);
        let hashes: Vec<_> = entries.iter().map(|e| e.content_hash()).collect();
        assert_eq!(root_of_leaves(&hashes), head.root.hash);
        assert_eq!(append(&c, "k", b"third").sequence().0, 3, "appends go on where they were");
        drop(c);
        store.enforce_memory_budget();
    }
    store.close().unwrap();
    drop(store);
    let store = open(&config);
    for name in &names {
        assert_eq!(read_all(&store.find(&ctx(name)).unwrap().unwrap()).len(), 3, "{name}");
    }
    store.close().unwrap();
}

#[test]
fn a_context_in_use_is_never_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&StoreConfig { memory_budget: budget_for(1), ..disk(dir.path()) });
    let held: Vec<_> = (0..5).map(|i| store.context(&ctx(&format!("held-{i}"))).unwrap()).collect();
    for c in &held {
        append(c, "k", b"x");
    }
    store.checkpoint().unwrap();
    store.enforce_memory_budget();
    assert_eq!(store.stats().contexts, 5, "every context is referenced, so none goes");
    // Two handles to one context never exist: the held one is the one found.
    for c in &held {
        assert!(Arc::ptr_eq(c, &store.context(c.id()).unwrap()));
    }
    store.close().unwrap();
}

#[test]
fn a_context_only_looked_at_is_released() {
    let store = Store::open(StoreConfig::memory()).unwrap();
    for i in 0..1000 {
        let id = ctx(&format!("unknown-{i}"));
        let c = store.context(&id).unwrap();
        drop(c);
        store.release(&id);
    }
    assert_eq!(store.stats().contexts, 0);
    // Written contexts stay, and in memory mode they are never evicted (memory is all they have).
    let c = store.context(&ctx("written")).unwrap();
    append(&c, "k", b"x");
    drop(c);
    store.release(&ctx("written"));
    store.enforce_memory_budget();
    assert_eq!(read_all(&store.find(&ctx("written")).unwrap().unwrap()).len(), 1);
}
