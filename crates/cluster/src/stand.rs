//! Standing for election promptly when a shard's leader has gone silent (CONTRACT §5: appends
//! resume within 5 s of a leader's crash).
//!
//! openraft 0.9 lets a follower stand only once its leader's lease (the maximum election
//! timeout) and then its own election timeout have passed since the leader last spoke: 1.5 to
//! 2 s with the default timing. Each node draws its timeout once, so the follower that stands
//! first is a matter of chance; when its log is the shorter one, the other refuses it, and the
//! shard waits for the next round (measured here: 47 kills of a leader under load, 7 took over
//! 3 s and one 5.7 s; with this task, 72 kills, all within 1.23 s: ARCHITECTURE.md).
//!
//! So every voter also looks itself, every [`LOOK_EVERY`]: when it has heard nothing from the
//! shard's leader for longer than the lease, it asks the other voters how long their logs are
//! and whether they still hear a leader. If none does, and none that answered has a longer
//! log (or an equal one and a lower id), it stands at once. The one best placed to win stands
//! as soon as the lease allows, and only it. This is an ordinary Raft election, called a
//! little sooner than openraft's own timer would: votes, terms and logs decide as always, so
//! it can delay a shard, never make replicas differ.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openraft::ServerState;
use tracing::info;

use crate::log_store::LogStore;
use crate::node::Inner;
use crate::types::{NodeId, node_name};

/// How often a voter looks whether its shards' leaders went silent.
const LOOK_EVERY: Duration = Duration::from_millis(100);
/// How long the others get to answer (a frozen node never answers; it counts as away).
const ASK_TIMEOUT: Duration = Duration::from_millis(300);
/// Beyond the lease, so that the other voters' leases have run out too.
const MARGIN: Duration = Duration::from_millis(100);

/// When this node last heard each shard's leader (an accepted `AppendEntries`), as
/// milliseconds since the node started.
pub(crate) struct Heard {
    epoch: Instant,
    last: Vec<AtomicU64>,
}

impl Heard {
    /// Every shard of `shards` as heard from now (a node that just started gives the leader
    /// a lease's time to find it before it stands).
    pub(crate) fn new(shards: u32) -> Self {
        Self { epoch: Instant::now(), last: (0..shards).map(|_| AtomicU64::new(0)).collect() }
    }

    /// The leader of `shard` was heard just now.
    pub(crate) fn now(&self, shard: u32) {
        if let Some(last) = usize::try_from(shard).ok().and_then(|s| self.last.get(s)) {
            last.store(self.millis(), Ordering::Relaxed);
        }
    }

    /// How long since the leader of `shard` was heard.
    pub(crate) fn silence(&self, shard: u32) -> Duration {
        let last = usize::try_from(shard)
            .ok()
            .and_then(|s| self.last.get(s))
            .map_or(0, |l| l.load(Ordering::Relaxed));
        Duration::from_millis(self.millis().saturating_sub(last))
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Looks every [`LOOK_EVERY`] whether to stand in a shard. Ends with the node.
pub(crate) async fn stand_promptly(inner: std::sync::Weak<Inner>, lease: Duration) {
    let mut stood: Vec<Option<Instant>> = Vec::new();
    loop {
        tokio::time::sleep(LOOK_EVERY).await;
        let Some(inner) = inner.upgrade() else { return };
        stood.resize(inner.shards.len(), None);
        for (shard, raft) in (0u32..).zip(&inner.shards) {
            let recently = stood[shard as usize].is_some_and(|t| t.elapsed() < lease);
            if recently || !should_look(&inner, shard, lease) {
                continue;
            }
            if best_placed(&inner, shard).await {
                let silent = inner.heard.silence(shard);
                info!(shard, ?silent, to = %node_name(inner.id), "the shard's leader is silent and no voter that answers holds a longer log; standing for election");
                stood[shard as usize] = Some(Instant::now());
                if let Err(e) = raft.trigger().elect().await {
                    info!(shard, error = %e, "standing for election failed");
                }
            }
        }
    }
}

/// Whether this node, a voter of `shard` that does not lead it, has not heard its leader for
/// longer than the lease.
fn should_look(inner: &Inner, shard: u32, lease: Duration) -> bool {
    let Some(raft) = usize::try_from(shard).ok().and_then(|s| inner.shards.get(s)) else {
        return false;
    };
    let m = raft.metrics().borrow().clone();
    if m.running_state.is_err() {
        // The shard's Raft stopped (a storage error): it cannot stand, and it says so itself.
        return false;
    }
    if m.state == ServerState::Leader {
        inner.heard.now(shard);
        return false;
    }
    let membership = m.membership_config.membership();
    let voters = membership.voter_ids().count();
    let voter = membership.voter_ids().any(|v| v == inner.id);
    let removed = inner.removed.load(Ordering::SeqCst);
    voter && voters > 1 && !removed && inner.heard.silence(shard) > lease + MARGIN
}

/// Whether no other voter of `shard` that answers still hears a leader or holds a longer log
/// (an equal one wins with a lower id).
async fn best_placed(inner: &Arc<Inner>, shard: u32) -> bool {
    let index = shard as usize;
    let (Some(raft), Some(log)) = (inner.shards.get(index), inner.logs.get(index)) else {
        return false;
    };
    let ours = last_log(log);
    let membership = raft.metrics().borrow().membership_config.membership().clone();
    let others = membership
        .voter_ids()
        .filter(|v| *v != inner.id)
        .filter_map(|v| membership.get_node(&v).map(|n| (v, n.addr.clone())))
        .collect();
    let answers: Vec<Answer> = inner
        .ask_membership(shard, others, ASK_TIMEOUT)
        .await
        .into_iter()
        .map(|(id, a)| Answer {
            id,
            hears_leader: a.hears_leader,
            last_log: (a.last_log_term, a.last_log_index),
        })
        .collect();
    should_stand(inner.id, ours, &answers)
}

/// What another voter answered: whether it still hears a leader, and its last log id.
#[derive(Clone, Copy, Debug)]
struct Answer {
    id: NodeId,
    hears_leader: bool,
    last_log: (u64, u64),
}

/// Whether node `me`, whose log ends at `ours`, is the one to stand: no voter that answered
/// still hears a leader, and none holds a longer log (on equal logs the lowest id stands).
/// Voters that did not answer are away: they could not vote against it either way.
fn should_stand(me: NodeId, ours: (u64, u64), answers: &[Answer]) -> bool {
    answers
        .iter()
        .all(|a| !a.hears_leader && (ours > a.last_log || (ours == a.last_log && me < a.id)))
}

/// `(term, index)` of the last entry of `log`: how elections compare logs (one leader per
/// term, so the term and the index say it all).
pub(crate) fn last_log(log: &LogStore) -> (u64, u64) {
    log.last_log_id().map_or((0, 0), |id| (id.leader_id.term, id.index))
}

#[cfg(test)]
mod tests {
    use super::{Answer, should_stand};

    fn answer(id: u64, hears_leader: bool, last_log: (u64, u64)) -> Answer {
        Answer { id, hears_leader, last_log }
    }

    #[test]
    fn the_longest_log_stands_and_the_others_wait() {
        let answers = [answer(2, false, (3, 40)), answer(3, false, (3, 38))];
        assert!(should_stand(1, (3, 41), &answers));
        assert!(!should_stand(3, (3, 38), &[answer(1, false, (3, 41)), answer(2, false, (3, 40))]));
    }

    #[test]
    fn a_later_term_beats_a_longer_log() {
        assert!(should_stand(2, (4, 10), &[answer(1, false, (3, 50))]));
        assert!(!should_stand(1, (3, 50), &[answer(2, false, (4, 10))]));
    }

    #[test]
    fn equal_logs_leave_it_to_the_lowest_id() {
        assert!(should_stand(1, (3, 40), &[answer(2, false, (3, 40))]));
        assert!(!should_stand(2, (3, 40), &[answer(1, false, (3, 40))]));
    }

    #[test]
    fn a_voter_that_still_hears_a_leader_stops_it() {
        assert!(!should_stand(1, (9, 99), &[answer(2, true, (1, 1)), answer(3, false, (1, 1))]));
    }

    #[test]
    fn with_no_answers_it_stands_as_raft_would() {
        assert!(should_stand(3, (1, 1), &[]));
    }
}
