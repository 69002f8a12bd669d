//! What an idle context really costs in memory, counted by the allocator: the memory budget
//! reckons [`CONTEXT_RESIDENT_BYTES`] per resident context, and that reckoning must not be
//! short of the truth, or a node holding the budget's worth of contexts outgrows its budget.
#![expect(unsafe_code, reason = "a global allocator wrapper is the only way to count allocations")]
#![allow(clippy::cast_possible_wrap, reason = "allocation sizes fit in an isize")]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::mpsc;

use common::*;
use converge_core::Timestamp;
use converge_storage::store::CONTEXT_RESIDENT_BYTES;
use converge_storage::{Durability, StoreConfig};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; the counter only adds.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's obligations are passed on as they are.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const CONTEXTS: usize = 100_000;

/// What an idle context with a short id may allocate (issue 24's target): it was 658 bytes
/// before a context's index of recent entries took two words while empty.
const IDLE_CONTEXT_BYTES_MAX: usize = 512;

/// Contexts named like an engine's runs (`run-00042`), each with three entries.
fn write_contexts(config: &StoreConfig) {
    let store = open(config);
    let mut pending = Vec::with_capacity(CONTEXTS * 3);
    for i in 0..CONTEXTS {
        let c = store.context(&ctx(&format!("run-{i:05}"))).unwrap();
        for step in 0..3 {
            let (tx, rx) = mpsc::channel();
            c.append(
                new_entry(c.id(), "step", format!("{i}/{step}").as_bytes(), None),
                Timestamp(1_000),
                Box::new(move |r| {
                    let _ = tx.send(r.map(|_| ()));
                }),
            )
            .unwrap();
            pending.push(rx);
        }
    }
    for rx in pending {
        rx.recv().unwrap().unwrap();
    }
    store.close().unwrap();
}

#[test]
fn an_idle_context_costs_no_more_than_the_budget_reckons() {
    let dir = tempfile::tempdir().unwrap();
    // A budget for every context, so nothing is evicted while they are counted.
    let config = StoreConfig {
        durability: Durability::Buffered,
        memory_budget: 4 * CONTEXTS * CONTEXT_RESIDENT_BYTES,
        ..disk(dir.path())
    };
    write_contexts(&config);

    // No checkpointer thread: contexts leave memory only when the test enforces the budget,
    // which holds one.
    let store =
        open(&StoreConfig { memory_budget: CONTEXT_RESIDENT_BYTES, manual: true, ..config });
    let ids: Vec<_> = (0..CONTEXTS).map(|i| ctx(&format!("run-{i:05}"))).collect();
    // A first pass fills the index's block cache and grows the map of resident contexts to
    // its size; neither is what one more idle context costs.
    for id in &ids {
        drop(store.find(id).unwrap().unwrap());
    }
    assert_eq!(store.stats().contexts, CONTEXTS);
    store.enforce_memory_budget();
    for id in &ids {
        drop(store.find(id).unwrap().unwrap());
    }
    let loaded = LIVE.load(Ordering::SeqCst);
    assert!(store.enforce_memory_budget());
    let evicted = CONTEXTS - store.stats().contexts;
    let freed = loaded - LIVE.load(Ordering::SeqCst);
    let per_context = usize::try_from(freed).expect("eviction frees memory") / evicted;
    println!(
        "{evicted} idle contexts evicted freed {freed} bytes: {per_context} bytes each \
         (the budget reckons {CONTEXT_RESIDENT_BYTES})"
    );
    assert!(evicted + 1 >= CONTEXTS, "{evicted} evicted");
    assert!(
        per_context <= CONTEXT_RESIDENT_BYTES,
        "an idle context costs {per_context} bytes, more than the {CONTEXT_RESIDENT_BYTES} the budget reckons"
    );
    assert!(per_context <= IDLE_CONTEXT_BYTES_MAX, "an idle context costs {per_context} bytes");
    // Each comes back from the index unchanged.
    let c = store.find(&ids[CONTEXTS / 2]).unwrap().unwrap();
    assert_eq!(read_all(&c).len(), 3);
    drop(c);
    store.close().unwrap();
}
