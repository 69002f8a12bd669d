//! The state machine's saved position: a restart starts from it, and openraft takes the Raft
//! log to reach at least that far, so it is never saved past what the log holds on disk.

use std::collections::BTreeSet;
use std::time::Duration;

use converge_cluster::log_store::Flushed;
use converge_cluster::state_machine::{StateMachine, saved_position};
use converge_cluster::types::Entry;
use converge_ledger::{Ledger, LedgerConfig};
use converge_storage::vfs::RealFs;
use openraft::storage::RaftStateMachine as _;
use openraft::{CommittedLeaderId, EntryPayload, LogId, Membership};
use tokio::sync::watch;

/// A membership entry: applying one saves the applied position at once.
fn membership(index: u64) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1])], ())),
    }
}

fn open(dir: &std::path::Path) -> (StateMachine, watch::Sender<Flushed>) {
    let ledger = Ledger::open(LedgerConfig::memory()).expect("a memory ledger opens");
    let (log, flushed) = watch::channel(Flushed::default());
    let sm = StateMachine::open(0, ledger, RealFs::shared(), dir, flushed)
        .expect("the state machine opens");
    (sm, log)
}

#[tokio::test]
async fn the_applied_position_is_saved_only_once_the_log_holds_it_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sm, log) = open(dir.path());
    log.send_replace(Flushed { upto: Some(1), failed: None });
    sm.apply([membership(1)]).await.expect("entry 1 applies");
    assert_eq!(saved_position(&RealFs, dir.path()).unwrap().map(|l| l.index), Some(1));

    // openraft applies a committed entry its log has written but not yet flushed.
    let mut apply = Box::pin(sm.apply([membership(2)]));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut apply).await.is_err(),
        "applying entry 2 saved its position before the log flushed it"
    );
    assert_eq!(saved_position(&RealFs, dir.path()).unwrap().map(|l| l.index), Some(1));
    log.send_replace(Flushed { upto: Some(2), failed: None });
    apply.await.expect("entry 2 applies once flushed");
    assert_eq!(saved_position(&RealFs, dir.path()).unwrap().map(|l| l.index), Some(2));
}

#[tokio::test]
async fn a_log_that_failed_fails_the_save_instead_of_waiting_forever() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sm, log) = open(dir.path());
    let apply = sm.apply([membership(1)]);
    log.send_replace(Flushed { upto: None, failed: Some("fsync failed".into()) });
    let error = apply.await.expect_err("the save cannot wait for a log that stopped");
    assert!(error.to_string().contains("fsync failed"), "{error}");
    assert_eq!(saved_position(&RealFs, dir.path()).unwrap(), None);
}
