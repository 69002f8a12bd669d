//! Spreading shard leaders over the nodes (CONTRACT §5). A shard's preferred leader is
//! `voters[shard mod n]`, the voters sorted by id. A leader that is not its shard's preferred
//! node hands the shard over once that node is a caught-up voter. openraft 0.9 has no
//! leadership transfer, so it is made of parts:
//!
//! 1. close the shard's proposal gate: no new entries, the ones in flight finish;
//! 2. wait until the preferred node holds the whole log;
//! 3. ask it to stand for election (`Elect`). It votes for itself, and the leader grants its
//!    vote: a leader's own lease ends one election timeout after it was elected, and the
//!    candidate's log is as long as its own. That is a majority of three voters;
//! 4. reopen the gate once leadership moved, or after a deadline. Writes held meanwhile are
//!    refused as "not the leader" and go to the new one.
//!
//! With more than three voters the other followers refuse while their lease holds, so a
//! handover may fail (the shard then elects someone); each shard waits before it tries again.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use converge_proto::cluster as pb;
use openraft::ServerState;
use tracing::{info, warn};

use crate::node::Inner;
use crate::types::{NodeId, node_name};

/// A leader hands a shard over only after leading it this long (its own lease has ended, and
/// leadership is not moving for another reason).
const STABLE_FOR: Duration = Duration::from_secs(3);
/// After a handover of a shard, successful or not, the next is tried no sooner than this.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// How long writes to the shard may be held while the preferred node catches up.
const CATCH_UP_MAX: Duration = Duration::from_secs(1);
/// How long the old leader waits for the new one.
const MOVE_MAX: Duration = Duration::from_secs(3);
/// The preferred node is not asked while it is further behind than this (it is down, or slow).
const BEHIND_MAX: u64 = 64;

/// The node that should lead `shard` among `voters`.
pub fn preferred(shard: u32, voters: &BTreeSet<NodeId>) -> Option<NodeId> {
    let n = usize::try_from(shard).ok()? % voters.len().max(1);
    voters.iter().nth(n).copied()
}

/// What the spreading remembers between rounds, per shard.
#[derive(Default)]
pub(crate) struct Spreader {
    /// Since when, and in which term, this node leads the shard.
    led_since: HashMap<u32, (u64, Instant)>,
    /// No handover of the shard before then.
    next_try: HashMap<u32, Instant>,
}

impl Spreader {
    /// Hands over, one after another, the shards this node leads but should not.
    pub(crate) async fn tend(&mut self, inner: &Arc<Inner>) {
        for (shard, raft) in (0..).zip(&inner.shards) {
            let m = raft.metrics().borrow().clone();
            if m.state != ServerState::Leader {
                self.led_since.remove(&shard);
                continue;
            }
            let since = self.led_since.entry(shard).or_insert((m.current_term, Instant::now()));
            if since.0 != m.current_term {
                *since = (m.current_term, Instant::now());
            }
            let ready = self.next_try.get(&shard).is_none_or(|t| Instant::now() >= *t);
            if since.1.elapsed() < STABLE_FOR || !ready {
                continue;
            }
            // Only a settled shard is handed over: all the voters it wants (no learner waiting
            // for promotion), no membership change under way. A handover costs an election;
            // while members come and go, availability comes first.
            let membership = m.membership_config.membership();
            let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
            let settled = membership.get_joint_config().len() == 1
                && voters.len() >= inner.voters_wanted as usize;
            if !settled {
                continue;
            }
            let Some(target) = preferred(shard, &voters).filter(|t| *t != inner.id) else {
                continue;
            };
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&target).copied().flatten())
                .map_or(0, |l| l.index);
            if matched + BEHIND_MAX < m.last_log_index.unwrap_or(0) {
                continue;
            }
            self.next_try.insert(shard, Instant::now() + RETRY_AFTER);
            let to = node_name(target);
            match hand_over(inner, shard, target).await {
                Ok(()) => info!(shard, to, "handed the shard's leadership over"),
                Err(why) => warn!(shard, to, why, "handing the shard over failed; will try again"),
            }
        }
    }
}

/// Hands `shard`, led here, over to `target` (steps in the module doc).
async fn hand_over(inner: &Arc<Inner>, shard: u32, target: NodeId) -> Result<(), String> {
    let index = usize::try_from(shard).map_err(|e| e.to_string())?;
    let (raft, gate) = (&inner.shards[index], &inner.gates[index]);
    let _closed = tokio::time::timeout(CATCH_UP_MAX, gate.write())
        .await
        .map_err(|_| "proposals in flight did not finish".to_string())?;
    let deadline = Instant::now() + CATCH_UP_MAX;
    let address = loop {
        let m = raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            return Err("this node stopped leading the shard meanwhile".into());
        }
        let matched = m.replication.as_ref().and_then(|r| r.get(&target).copied().flatten());
        if matched.map(|l| l.index) >= m.last_log_index {
            let node = m.membership_config.membership().get_node(&target).cloned();
            break node.ok_or("the node has no address")?.addr;
        }
        if Instant::now() > deadline {
            return Err(format!("the node did not catch up within {CATCH_UP_MAX:?}"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let mut client = inner.peers.client(&address).map_err(|s| s.message().to_string())?;
    client
        .elect(inner.peers.request(pb::ElectRequest { shard }, Duration::from_secs(1)))
        .await
        .map_err(|s| format!("it did not stand: {}", s.message()))?;
    raft.wait(Some(MOVE_MAX))
        .metrics(|m| m.current_leader != Some(inner.id), "leadership moves")
        .await
        .map(|_| ())
        .map_err(|e| format!("leadership did not move: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_go_round_the_voters_in_id_order() {
        let voters = BTreeSet::from([30, 10, 20]);
        let leaders: Vec<_> = (0..6).map(|s| preferred(s, &voters).unwrap()).collect();
        assert_eq!(leaders, [10, 20, 30, 10, 20, 30]);
        assert_eq!(preferred(3, &BTreeSet::new()), None);
    }
}
