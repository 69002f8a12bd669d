//! Appends spread over far more contexts than the memory budget holds stay within it while
//! they run: a context holding entries that only memory holds cannot be evicted, so appends
//! that would make one more of them wait for the next checkpoint, even when checkpoints are
//! slow.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use converge_ledger::{AppendRequest, Ledger, LedgerApi, LedgerConfig, StoreConfig};
use converge_storage::store::CONTEXT_RESIDENT_BYTES;

const CONTEXTS: usize = 12_000;
const APPENDERS: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_over_many_contexts_keep_resident_contexts_bounded_while_checkpoints_lag() {
    let dir = tempfile::tempdir().unwrap();
    let storage = StoreConfig {
        memory_budget: 1_000 * CONTEXT_RESIDENT_BYTES,
        // Only the dirty-contexts trigger runs checkpoints here.
        checkpoint_interval: Duration::from_secs(3600),
        checkpoint_bytes: u64::MAX / 2,
        ..StoreConfig::disk(dir.path())
    };
    storage.faults.delay_checkpoints(Duration::from_millis(300));
    let resident_max = storage.contexts_resident_max();
    let dirty_max = usize::try_from(storage.dirty_contexts_max()).unwrap();
    let ledger = Arc::new(Ledger::open(LedgerConfig::with_storage(storage)).unwrap());

    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (ledger, done, peak) = (Arc::clone(&ledger), Arc::clone(&done), Arc::clone(&peak));
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                peak.fetch_max(ledger.store().stats().contexts, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let appenders: Vec<_> = (0..APPENDERS)
        .map(|a| {
            let ledger = Arc::clone(&ledger);
            tokio::spawn(async move {
                for i in (a..CONTEXTS).step_by(APPENDERS) {
                    let req = AppendRequest::new(format!("ctx-{i}"), "k", vec![7u8; 64]);
                    ledger.append(req).await.expect("appended");
                }
            })
        })
        .collect();
    for appender in appenders {
        appender.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap();

    // Resident: the clean ones the budget holds, the dirty ones of the checkpoint being
    // written and of the next, and one per appender loaded while it waits for room.
    let bound = resident_max + 2 * dirty_max + APPENDERS;
    let peak = peak.load(Ordering::SeqCst);
    assert!(
        peak <= bound,
        "{peak} contexts resident at the peak, more than {bound} ({resident_max} clean, \
         {dirty_max} dirty per checkpoint)"
    );
    assert!(ledger.store().stats().checkpoints >= 2, "the dirty contexts triggered checkpoints");
    for i in [0, CONTEXTS / 2, CONTEXTS - 1] {
        let head = ledger.tree_head(&format!("ctx-{i}")).await.unwrap();
        assert_eq!(head.tree_size, 1, "ctx-{i} holds its append");
    }
    ledger.close().await.unwrap();
}
