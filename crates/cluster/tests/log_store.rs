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

/// Where each record of the log file at `path` starts (records: crc, length, body).
fn record_offsets(path: &std::path::Path) -> Vec<usize> {
    let bytes = std::fs::read(path).unwrap();
    let (mut at, mut offsets) = (0, Vec::new());
    while at + 8 <= bytes.len() {
        offsets.push(at);
        at += 8 + u32::from_be_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
    }
    offsets
}

/// Writes entries `0..=5`, then (after the fsync mark's interval) one more, so the mark covers
/// the first six.
async fn written_and_marked(dir: &std::path::Path) {
    let mut log = open(dir, 1);
    log.blocking_append((0..=5).map(|i| blank(1, i))).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    log.blocking_append([blank(1, 6)]).await.unwrap();
}

#[tokio::test]
async fn damage_before_the_fsync_mark_is_refused_naming_file_and_byte() {
    let dir = tempfile::tempdir().unwrap();
    written_and_marked(dir.path()).await;
    let path = dir.path().join("log");
    let at = record_offsets(&path)[2];
    let mut bytes = std::fs::read(&path).unwrap();
    for byte in &mut bytes[at + 9..at + 17] {
        *byte ^= 0x5A;
    }
    std::fs::write(&path, &bytes).unwrap();

    let Err(refused) = LogStore::open(RealFs::shared(), dir.path(), 1) else {
        panic!("a log damaged before its fsync mark must not open");
    };
    let message = refused.to_string();
    assert!(message.contains(&path.display().to_string()), "names the file: {message}");
    assert!(message.contains(&format!("damaged at byte {at}")), "names the byte: {message}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing was cut");

    // A log cut short below its mark is refused too.
    std::fs::write(&path, &bytes[..at]).unwrap();
    let Err(refused) = LogStore::open(RealFs::shared(), dir.path(), 1) else {
        panic!("a log shorter than its fsync mark must not open");
    };
    assert!(refused.to_string().contains("shorter than"), "{refused}");
}

#[tokio::test]
async fn a_torn_write_after_a_truncation_below_the_mark_is_cut_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    written_and_marked(dir.path()).await;
    let path = dir.path().join("log");
    let at = record_offsets(&path)[3];
    {
        let mut log = open(dir.path(), 1);
        // A new leader's entries replace 3.. : the mark comes down to where the cut is.
        log.truncate(LogId::new(CommittedLeaderId::new(1, 7), 3)).await.unwrap();
    }
    // What a power cut can leave of a write that replaced them, never fsynced: garbage.
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), at, "the truncation cut the file");
    bytes.extend_from_slice(&[0xEE; 100]);
    std::fs::write(&path, &bytes).unwrap();

    let mut log = open(dir.path(), 1);
    let kept: Vec<u64> =
        log.try_get_log_entries(0..).await.unwrap().iter().map(|e| e.log_id.index).collect();
    assert_eq!(kept, [0, 1, 2], "the torn tail after the lowered mark was cut");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), at as u64);
}

#[tokio::test]
async fn an_entry_over_the_record_limit_is_refused_before_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), 1);
    let huge = converge_proto::cluster::Command {
        shard: 0,
        op: Some(converge_proto::cluster::command::Op::Load(converge_proto::v1::LoadRequest {
            load_id: String::new(),
            context_id: "c".into(),
            snapshot: vec![0; converge_cluster::log_store::RECORD_BYTES_MAX + 1].into(),
            fail_if_exists: false,
        })),
    };
    let entry = Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 7), 0),
        payload: openraft::EntryPayload::Normal(huge),
    };
    let refused = log.blocking_append([entry]).await;
    assert!(refused.is_err(), "a record recovery would call damage is never written");
    assert_eq!(std::fs::metadata(dir.path().join("log")).unwrap().len(), 0);
}
