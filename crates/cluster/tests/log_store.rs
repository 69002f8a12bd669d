//! The node's Raft log on disk: what survives a reopen, a torn tail, and a restarted leader's
//! vote; shards sharing it, segments, and the per-shard logs of older data directories.

use converge_cluster::log_store::{LogStore, NodeLog};
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

/// How many segments the node log under the Raft directory `dir` has.
fn segments(dir: &std::path::Path) -> usize {
    let names = std::fs::read_dir(dir.join("log")).unwrap();
    names
        .filter(|n| n.as_ref().unwrap().file_name().to_string_lossy().starts_with("segment-"))
        .count()
}

/// Segment `n` of the node log under the Raft directory `dir`.
fn segment(dir: &std::path::Path, n: u32) -> std::path::PathBuf {
    dir.join("log").join(format!("segment-{n:010}"))
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
        assert_eq!(flushed.borrow().upto, Some(3), "a truncation takes back what it removed");
        log.blocking_append([blank(2, 4)]).await.unwrap();
        assert_eq!(flushed.borrow().upto, Some(4));
        log.save_vote(&Vote::new(2, 9)).await.unwrap();
    }
    // A torn write at the end: half a record's header.
    let path = segment(dir.path(), 1);
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
    let path = segment(dir.path(), 1);
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
async fn a_truncation_is_a_record_and_a_torn_write_after_it_is_cut_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    written_and_marked(dir.path()).await;
    let path = segment(dir.path(), 1);
    let written = std::fs::metadata(&path).unwrap().len();
    {
        let mut log = open(dir.path(), 1);
        // A new leader's entries replace 3.. : a record says so; nothing is cut or rewritten.
        log.truncate(LogId::new(CommittedLeaderId::new(1, 7), 3)).await.unwrap();
    }
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() as u64 > written, "the truncation was appended, not cut");
    let whole = bytes.len();
    // What a power cut can leave of a write after it, never fsynced: garbage.
    bytes.extend_from_slice(&[0xEE; 100]);
    std::fs::write(&path, &bytes).unwrap();

    let mut log = open(dir.path(), 1);
    let kept: Vec<u64> =
        log.try_get_log_entries(0..).await.unwrap().iter().map(|e| e.log_id.index).collect();
    assert_eq!(kept, [0, 1, 2], "the truncated entries stay gone, the torn tail was cut");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), whole as u64);
    // The next entry takes the truncated one's index.
    log.blocking_append([blank(2, 3)]).await.unwrap();
    drop(log);
    let mut log = open(dir.path(), 1);
    let ids: Vec<(u64, u64)> = log
        .try_get_log_entries(0..)
        .await
        .unwrap()
        .iter()
        .map(|e| (e.log_id.leader_id.term, e.log_id.index))
        .collect();
    assert_eq!(ids, [(1, 0), (1, 1), (1, 2), (2, 3)]);
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
    assert_eq!(std::fs::metadata(segment(dir.path(), 1)).unwrap().len(), 0);
}

#[tokio::test]
async fn shards_share_one_log_and_each_keeps_its_own_entries_votes_and_truncations() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = NodeLog::open(RealFs::shared(), dir.path(), 1, 3).unwrap();
        let (mut a, mut b) = (log.shard(0), log.shard(2));
        let flushed_b = b.flushed();
        // Interleaved, as shards write.
        for i in 0..10 {
            a.blocking_append([blank(1, i)]).await.unwrap();
            b.blocking_append([blank(4, i + 1)]).await.unwrap();
        }
        assert_eq!(flushed_b.borrow().upto, Some(10));
        a.truncate(LogId::new(CommittedLeaderId::new(1, 7), 6)).await.unwrap();
        a.save_vote(&Vote::new(3, 2)).await.unwrap();
        b.save_vote(&Vote::new_committed(4, 5)).await.unwrap();
        assert_eq!(flushed_b.borrow().upto, Some(10), "another shard's truncation is not b's");
    }
    assert_eq!(segments(dir.path()), 1, "one segment for all shards");
    let log = NodeLog::open(RealFs::shared(), dir.path(), 1, 3).unwrap();
    let (mut a, mut b, mut c) = (log.shard(0), log.shard(2), log.shard(1));
    let indexes = |entries: Vec<Entry>| entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>();
    assert_eq!(indexes(a.try_get_log_entries(..).await.unwrap()), (0..6).collect::<Vec<_>>());
    assert_eq!(indexes(b.try_get_log_entries(3..5).await.unwrap()), [3, 4]);
    assert_eq!(b.last_index(), Some(10));
    assert!(c.try_get_log_entries(..).await.unwrap().is_empty());
    assert_eq!(a.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
    assert_eq!(b.read_vote().await.unwrap(), Some(Vote::new_committed(4, 5)));
    assert_eq!(c.read_vote().await.unwrap(), None);
}

#[tokio::test]
async fn segments_roll_over_and_damage_in_a_sealed_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let open_small = || NodeLog::open_with(RealFs::shared(), dir.path(), 1, 2, 2048);
    {
        let log = open_small().unwrap();
        let mut a = log.shard(1);
        for i in 0..200 {
            a.blocking_append([blank(1, i)]).await.unwrap();
        }
    }
    let segments = segments(dir.path());
    assert!(segments >= 3, "200 records of ~25 bytes fill several 2 KiB segments: {segments}");
    {
        let log = open_small().unwrap();
        let mut a = log.shard(1);
        let all = a.try_get_log_entries(..).await.unwrap();
        assert_eq!(all.len(), 200);
        assert!(all.iter().enumerate().all(|(i, e)| e.log_id.index == i as u64));
        a.blocking_append([blank(1, 200)]).await.unwrap();
    }
    // Damage in a sealed segment: it was fsynced before the next began, so it is refused.
    let path = segment(dir.path(), 2);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = record_offsets(&path)[1];
    bytes[at + 10] ^= 0xFF;
    std::fs::write(&path, &bytes).unwrap();
    let Err(refused) = open_small() else { panic!("a damaged sealed segment must not open") };
    let message = refused.to_string();
    assert!(message.contains(&path.display().to_string()), "names the file: {message}");
    assert!(message.contains(&format!("damaged at byte {at}")), "names the byte: {message}");
}

/// One record of the per-shard logs of older data directories.
fn legacy_record(out: &mut Vec<u8>, term: u64, index: u64) {
    use prost::Message as _;
    let entry = converge_proto::cluster::LogEntry {
        log_id: Some(converge_proto::cluster::LogId { term, node: 7, index }),
        payload: Some(converge_proto::cluster::log_entry::Payload::Blank(true)),
    };
    let body = entry.encode_to_vec();
    let len = u32::try_from(body.len()).unwrap().to_be_bytes();
    out.extend_from_slice(&crc32c::crc32c_append(crc32c::crc32c(&len), &body).to_be_bytes());
    out.extend_from_slice(&len);
    out.extend_from_slice(&body);
}

fn legacy_vote(term: u64, node: u64) -> Vec<u8> {
    use prost::Message as _;
    let body = converge_proto::cluster::Vote { term, node, committed: true }.encode_to_vec();
    let mut bytes = crc32c::crc32c(&body).to_be_bytes().to_vec();
    bytes.extend_from_slice(&body);
    bytes
}

#[tokio::test]
async fn the_per_shard_logs_of_an_older_directory_are_copied_in_once() {
    let dir = tempfile::tempdir().unwrap();
    for (shard, entries) in [(0u32, 0..5u64), (1, 0..3)] {
        let shard_dir = dir.path().join(format!("shard-{shard}"));
        std::fs::create_dir_all(&shard_dir).unwrap();
        let mut bytes = Vec::new();
        for i in entries {
            legacy_record(&mut bytes, 2, i);
        }
        // A torn tail, never fsynced: left behind.
        bytes.extend_from_slice(&[0xAB; 6]);
        std::fs::write(shard_dir.join("log"), bytes).unwrap();
        std::fs::write(shard_dir.join("vote"), legacy_vote(2, 7)).unwrap();
        std::fs::write(shard_dir.join("applied"), b"kept").unwrap();
    }
    // A copy cut short before: node-log files without the `copied` file are started over.
    std::fs::create_dir_all(dir.path().join("log")).unwrap();
    std::fs::write(segment(dir.path(), 1), [0x55; 40]).unwrap();

    let indexes = |entries: Vec<Entry>| entries.iter().map(|e| e.log_id.index).collect::<Vec<_>>();
    {
        let log = NodeLog::open(RealFs::shared(), dir.path(), 1, 2).unwrap();
        let (mut a, mut b) = (log.shard(0), log.shard(1));
        assert_eq!(indexes(a.try_get_log_entries(..).await.unwrap()), [0, 1, 2, 3, 4]);
        assert_eq!(indexes(b.try_get_log_entries(..).await.unwrap()), [0, 1, 2]);
        assert_eq!(a.read_vote().await.unwrap(), Some(Vote::new_committed(2, 7)));
        for shard in 0..2 {
            let shard_dir = dir.path().join(format!("shard-{shard}"));
            assert!(!shard_dir.join("log").exists() && !shard_dir.join("vote").exists());
            assert_eq!(std::fs::read(shard_dir.join("applied")).unwrap(), b"kept");
        }
        assert!(!dir.path().join("log").join("copied").exists());
        a.blocking_append([blank(3, 5)]).await.unwrap();
    }
    // The next open finds nothing to copy and keeps what was appended since.
    let log = NodeLog::open(RealFs::shared(), dir.path(), 1, 2).unwrap();
    assert_eq!(indexes(log.shard(0).try_get_log_entries(..).await.unwrap()), [0, 1, 2, 3, 4, 5]);
    assert_eq!(log.shard(1).last_index(), Some(2));
}
