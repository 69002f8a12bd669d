//! Admission holds an append's bytes until they are durable or failed, counts every byte an
//! append holds, covers Load, and never makes an append wait forever.

mod common;

use std::time::Duration;

use bytes::Bytes;
use converge_ledger::{AppendRequest, Ledger, LedgerApi, LedgerConfig, LoadRequest, StoreConfig};
use futures_util::FutureExt as _;

const BUDGET: usize = 64 * 1024;

fn manual(dir: &std::path::Path) -> Ledger {
    let mut config =
        LedgerConfig::with_storage(StoreConfig { manual: true, ..StoreConfig::disk(dir) });
    config.append_bytes_in_flight_max = BUDGET;
    config.limits.payload_bytes_max = BUDGET;
    Ledger::open(config).unwrap()
}

#[tokio::test]
async fn a_cancelled_append_keeps_its_bytes_until_they_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let l = manual(dir.path());
    let req = AppendRequest::new("ctx", "k", vec![1u8; 10 * 1024])
        .with_metadata("agent", "x".repeat(3000));
    // Poll once: admitted and queued; then the caller gives up.
    let mut append = Box::pin(l.append(req));
    assert!((&mut append).now_or_never().is_none(), "waits for the fsync");
    drop(append);
    let held = BUDGET - l.append_bytes_free();
    assert!(held >= 13 * 1024, "payload and metadata are held after the cancel: {held}");
    assert!(l.store().step(), "the log writes the abandoned append");
    assert_eq!(l.append_bytes_free(), BUDGET, "released once durable");
    assert_eq!(l.tree_head("ctx").await.unwrap().tree_size, 1);
}

#[tokio::test]
async fn an_append_as_large_as_the_budget_does_not_wait_forever() {
    let dir = tempfile::tempdir().unwrap();
    // A budget that is not a whole number of admission units, and a payload at the limit:
    // rounding must not ask for more than the pool holds.
    let budget = BUDGET + 500;
    let mut config = LedgerConfig::disk(dir.path());
    config.append_bytes_in_flight_max = budget;
    config.limits.payload_bytes_max = budget;
    let l = Ledger::open(config).unwrap();
    let free = l.append_bytes_free();
    let req = AppendRequest::new("ctx", "k", vec![0u8; budget]).with_metadata("m", "v".repeat(500));
    let entry = tokio::time::timeout(Duration::from_secs(30), l.append(req)).await;
    assert!(entry.expect("never waits forever").is_ok());
    assert_eq!(l.append_bytes_free(), free);
}

#[tokio::test]
async fn load_is_admitted_and_releases_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let l = manual(dir.path());
    let source = common::memory();
    for i in 0..20 {
        source.append(AppendRequest::new("src", "k", vec![i; 1000])).await.unwrap();
    }
    let blob: Bytes = source.snapshot("src").await.unwrap().snapshot;
    let load = l.load(LoadRequest {
        load_id: None,
        context_id: "dst".into(),
        snapshot: blob.clone(),
        fail_if_exists: false,
    });
    let stepper = async {
        // The load runs on a blocking thread; write its batch once it is queued.
        loop {
            if l.store().step() {
                break;
            }
            assert!(
                BUDGET - l.append_bytes_free() >= blob.len() || l.append_bytes_free() == BUDGET,
                "while loading, the blob's bytes are held"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    let (loaded, ()) = tokio::join!(load, stepper);
    assert_eq!(loaded.unwrap().entries_restored, 20);
    assert_eq!(l.append_bytes_free(), BUDGET);
}
