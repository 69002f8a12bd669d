//! openraft's storage conformance suite (`openraft::testing::Suite`) against our Raft log and
//! state machine: every case except those that need purging or snapshots, which our design
//! never does (a ledger keeps everything, so the log is never purged and a new member catches
//! up by replaying it). Left out for that reason:
//! - `purge_logs_upto_{0,5,20}`, `append_to_log`, `get_log_state`, `get_log_id`,
//!   `try_get_log_entry`, `get_initial_state_log_ids`: they purge the log;
//! - `get_initial_state_last_log_lt_sm`, `get_initial_state_membership_from_log_and_sm`: a state
//!   machine ahead of the log, which only a snapshot install leaves (openraft then purges and
//!   rebuilds a snapshot; our node refuses to start instead);
//! - `snapshot_meta`, `transfer_snapshot`: snapshots.

#![allow(clippy::result_large_err, reason = "the suite's cases return openraft's StorageError")]

use std::sync::Arc;

use converge_cluster::log_store::{Flushed, LogStore};
use converge_cluster::state_machine::StateMachine;
use converge_cluster::types::{StorageError, TypeConfig};
use converge_ledger::{Ledger, LedgerConfig};
use converge_storage::vfs::RealFs;
use openraft::testing::{StoreBuilder, Suite};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let vfs = RealFs::shared();
        let log =
            LogStore::open(Arc::clone(&vfs), &dir.path().join("raft"), 1).expect("the log opens");
        let ledger = Ledger::open(LedgerConfig::memory()).expect("a memory ledger opens");
        // The suite applies entries it never appended to the log: take them as flushed.
        let (_, flushed) =
            tokio::sync::watch::channel(Flushed { upto: Some(u64::MAX), failed: None });
        let sm = StateMachine::open(0, ledger, vfs, &dir.path().join("raft"), flushed)
            .expect("the state machine opens");
        Ok((dir, log, sm))
    }
}

type S = Suite<TypeConfig, LogStore, StateMachine, Builder, tempfile::TempDir>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() -> Result<(), StorageError> {
                let (_dir, log, sm) = Builder.build().await?;
                S::$name(log, sm).await
            }
        )*
    };
}

cases!(
    last_membership_in_log_initial,
    last_membership_in_log,
    last_membership_in_log_multi_step,
    get_membership_initial,
    get_membership_from_log_and_empty_sm,
    get_membership_from_empty_log_and_sm,
    get_membership_from_log_le_sm_last_applied,
    get_membership_from_log_gt_sm_last_applied_1,
    get_membership_from_log_gt_sm_last_applied_2,
    get_initial_state_without_init,
    get_initial_state_with_state,
    get_initial_state_last_log_gt_sm,
    get_initial_state_re_apply_committed,
    save_vote,
    get_log_entries,
    limited_get_log_entries,
    initial_logs,
    last_id_in_log,
    last_applied_state,
    delete_logs_since_11,
    delete_logs_since_0,
    apply_single,
    apply_multiple,
);
