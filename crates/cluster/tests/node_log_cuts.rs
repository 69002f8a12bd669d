//! The node's Raft log under power cuts, on the simulated disk: shards write at once (appends,
//! truncations, votes) while the power goes at a random operation, under every crash pattern.
//! Afterwards the log must open, and each shard's log must be one its writer passed through,
//! no older than what was reported durable before the cut.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use converge_cluster::log_store::{LogStore, NodeLog};
use converge_cluster::types::{Entry, NodeId};
use converge_storage::vfs::sim::{CrashPattern, Rng, SimDisk};
use openraft::storage::{RaftLogReader as _, RaftLogStorage as _, RaftLogStorageExt as _};
use openraft::{CommittedLeaderId, LogId, Vote};

const SHARDS: u32 = 3;
const ROUNDS: u64 = 200;
const OPS_PER_SHARD: usize = 40;
/// Small segments, so cuts land while segments are sealed and begun.
const SEGMENT_BYTES: u64 = 2048;

/// A shard's log as its writer knows it: (term, index) of each entry, and the vote.
#[derive(Debug, Clone, Default, PartialEq)]
struct Shown {
    entries: Vec<(u64, u64)>,
    vote: Option<Vote<NodeId>>,
}

/// What one shard's writer went through: the state after each record it wrote (the first is
/// the empty log), and the last of them reported durable before the cut.
struct History {
    states: Vec<Shown>,
    durable: usize,
}

fn blank(term: u64, index: u64) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: openraft::EntryPayload::Blank,
    }
}

/// Writes random appends, truncations and votes to one shard until `OPS_PER_SHARD` are done.
async fn write(mut log: LogStore, seed: u64, cut: Arc<AtomicBool>) -> History {
    let mut rng = Rng::new(seed);
    let mut now = Shown::default();
    let mut history = History { states: vec![now.clone()], durable: 0 };
    let mut term = 1;
    for _ in 0..OPS_PER_SHARD {
        let roll = rng.below(100);
        let next = now.entries.last().map_or(0, |e| e.1 + 1);
        // Whether the operation, once done, says everything written so far is durable.
        let (done, syncs) = if roll < 70 || now.entries.is_empty() {
            let count = 1 + rng.below(4);
            let entries: Vec<Entry> = (next..next + count).map(|i| blank(term, i)).collect();
            let done = log.blocking_append(entries).await;
            for i in next..next + count {
                now.entries.push((term, i));
                history.states.push(now.clone());
            }
            (done.map(drop), true)
        } else if roll < 85 {
            let first = now.entries[0].1;
            let at = first + rng.below(next - first);
            let done = log.truncate(LogId::new(CommittedLeaderId::new(term, 1), at)).await;
            now.entries.retain(|e| e.1 < at);
            history.states.push(now.clone());
            term += 1;
            // A truncation is made durable by the next fsync, not by itself.
            (done, false)
        } else {
            term += 1;
            let vote = Vote::new(term, 1 + rng.below(3));
            let done = log.save_vote(&vote).await;
            now.vote = Some(vote);
            history.states.push(now.clone());
            (done, true)
        };
        if let Err(e) = done {
            panic!("a write failed (the simulated disk fails nothing here): {e}");
        }
        // Reported durable before the power went: the writer's records so far.
        if syncs && !cut.load(Ordering::SeqCst) {
            history.durable = history.states.len() - 1;
        }
    }
    history
}

/// What a reopened shard log shows.
async fn shown(mut log: LogStore) -> Shown {
    let entries = log.try_get_log_entries(..).await.unwrap();
    Shown {
        entries: entries.iter().map(|e| (e.log_id.leader_id.term, e.log_id.index)).collect(),
        vote: log.read_vote().await.unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_cut_each_shard_shows_a_state_it_passed_through_and_keeps_what_was_durable() {
    let dir = Path::new("/raft");
    let mut rng = Rng::new(0x5EED_C075);
    let mut cut_while_writing = 0;
    for round in 0..ROUNDS {
        let pattern = CrashPattern::ALL[usize::try_from(round % 4).unwrap()];
        let disk = SimDisk::new();
        let cut = Arc::new(AtomicBool::new(false));
        let crashed = Arc::new(Mutex::new(None::<SimDisk>));
        let target = 5 + rng.below(120);
        {
            let (cut, crashed) = (Arc::clone(&cut), Arc::clone(&crashed));
            let mut cut_rng = Rng::new(rng.next_u64());
            disk.set_hook(Box::new(move |_, point| {
                let mut slot = crashed.lock().unwrap_or_else(PoisonError::into_inner);
                if point.ops() >= target && slot.is_none() {
                    *slot = Some(point.crash(&mut cut_rng, pattern));
                    cut.store(true, Ordering::SeqCst);
                }
            }));
        }
        let log = NodeLog::open_with(Arc::new(disk.clone()), dir, 1, SHARDS, SEGMENT_BYTES)
            .expect("the log opens");
        let writers: Vec<_> = (0..SHARDS)
            .map(|s| tokio::spawn(write(log.shard(s), rng.next_u64(), Arc::clone(&cut))))
            .collect();
        let mut histories = Vec::new();
        for writer in writers {
            histories.push(writer.await.unwrap());
        }
        disk.clear_hook();
        drop(log);
        let crashed = crashed.lock().unwrap_or_else(PoisonError::into_inner).take();
        cut_while_writing += usize::from(crashed.is_some());
        let crashed =
            crashed.unwrap_or_else(|| disk.with_cut_point(|point| point.crash(&mut rng, pattern)));

        let reopened = NodeLog::open_with(Arc::new(crashed.clone()), dir, 1, SHARDS, SEGMENT_BYTES)
            .unwrap_or_else(|e| {
                panic!("round {round}, {pattern:?}: the log must open after a cut: {e}")
            });
        for (shard, history) in (0..SHARDS).zip(&histories) {
            let found = shown(reopened.shard(shard)).await;
            let at = history.states.iter().rposition(|s| *s == found);
            assert!(
                at.is_some_and(|at| at >= history.durable),
                "round {round}, {pattern:?}, shard {shard}: after the cut it shows {found:?}, which is not a state it passed through at or after state {}, reported durable (it went through {})",
                history.durable,
                history.states.len()
            );
        }
        // It goes on: a new entry in each shard survives another reopen.
        for shard in 0..SHARDS {
            let mut log = reopened.shard(shard);
            let next = log.last_index().map_or(0, |i| i + 1);
            log.blocking_append([blank(99, next)]).await.unwrap();
        }
        drop(reopened);
        let again = NodeLog::open_with(Arc::new(crashed), dir, 1, SHARDS, SEGMENT_BYTES).unwrap();
        for shard in 0..SHARDS {
            let last = again.shard(shard).last_log_id().unwrap();
            assert_eq!(last.leader_id.term, 99, "round {round}, shard {shard}");
        }
    }
    assert!(
        cut_while_writing >= 12,
        "most cuts land while the shards write: {cut_while_writing} of 24"
    );
}
