//! The Raft log on disk: what survives a reopen, a torn tail, and a restarted leader's vote.

use converge_cluster::log_store::LogStore;
use converge_cluster::types::{Entry, NodeId};
use converge_storage::vfs::RealFs;
use openraft::storage::{RaftLogReader as _, RaftLogStorage as _, RaftLogStorageExt as _};
use openraft::{CommittedLeaderId, LogId, Vote};

fn blank(term: u64, index: u64) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 7), index),
        payload: openraft::EntryPayload::Blank,
    }
}

fn open(dir: &std::path::Path, me: NodeId) -> LogStore {
    LogStore::open(RealFs::shared(), dir, me).expect("the log opens")
}

#[tokio::test]
async fn entries_and_votes_survive_a_reopen_and_a_torn_tail_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = open(dir.path(), 1);
        let flushed = log.flushed();
        log.blocking_append((0..=5).map(|i| blank(1, i))).await.unwrap();
        assert_eq!(flushed.borrow().upto, Some(5), "flushed entries are reported durable");
        log.truncate(LogId::new(CommittedLeaderId::new(1, 7), 4)).await.unwrap();
        assert_eq!(flushed.borrow().upto, Some(3), "a truncation takes back what it cut");
        log.blocking_append([blank(2, 4)]).await.unwrap();
        assert_eq!(flushed.borrow().upto, Some(4));
        log.save_vote(&Vote::new(2, 9)).await.unwrap();
    }
    // A torn write at the end: half a record's header.
    let path = dir.path().join("log");
    let mut bytes = std::fs::read(&path).unwrap();
    let whole = bytes.len();
    bytes.extend_from_slice(&[0xAB; 5]);
    std::fs::write(&path, &bytes).unwrap();

    let mut log = open(dir.path(), 1);
    let entries = log.try_get_log_entries(0..).await.unwrap();
    let ids: Vec<(u64, u64)> =
        entries.iter().map(|e| (e.log_id.leader_id.term, e.log_id.index)).collect();
    assert_eq!(ids, vec![(1, 0), (1, 1), (1, 2), (1, 3), (2, 4)], "truncated entries stay gone");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), whole as u64, "the torn tail was cut");
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(2, 9)));
    assert_eq!(log.get_log_state().await.unwrap().last_log_id.map(|l| l.index), Some(4));
    // New entries follow the recovered ones.
    log.blocking_append([blank(2, 5)]).await.unwrap();
    assert_eq!(log.try_get_log_entries(5..6).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_node_never_restarts_as_leader_of_its_old_term() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = open(dir.path(), 3);
        log.save_vote(&Vote::new_committed(5, 3)).await.unwrap();
        assert!(log.read_vote().await.unwrap().unwrap().is_committed());
    }
    let mut log = open(dir.path(), 3);
    let vote = log.read_vote().await.unwrap().unwrap();
    assert_eq!(vote, Vote::new(5, 3), "its own committed vote comes back uncommitted");
    assert!(!vote.is_committed());
    // Another node's committed vote (it followed that leader) is kept as it was.
    log.save_vote(&Vote::new_committed(6, 4)).await.unwrap();
    drop(log);
    let mut log = open(dir.path(), 3);
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new_committed(6, 4)));
}
