//! Writes: proposed on the shard's leader, forwarded there from any other node, answered only
//! once the node that answers has applied them (CONTRACT §5).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use converge_api::LedgerError;
use converge_proto::cluster as pb;
use converge_proto::status;

use crate::node::Cluster;
use crate::propose;
use crate::types::{NodeId, node_name, of_shard};

/// How long a write may look for a leader (an election takes about a second) before it
/// fails with `UNAVAILABLE`.
const LEADER_WAIT_MAX: Duration = Duration::from_secs(5);
/// How long the answering node waits to apply what the leader committed.
const APPLY_WAIT_MAX: Duration = Duration::from_secs(30);
/// Pause between looks for a leader.
const RETRY_PAUSE: Duration = Duration::from_millis(25);

/// Numbers the `append_id`s this node gives appends that came without one.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A status for a Raft error on a membership change or a forwarded call.
pub(crate) fn raft_status<E: std::fmt::Display>(e: &E) -> tonic::Status {
    tonic::Status::unavailable(e.to_string())
}

impl Cluster {
    /// An `append_id` unique in the cluster for an append that came without one, so that the
    /// node may send it again after a failover without appending it twice: this node's id,
    /// its incarnation, and a counter.
    pub(crate) fn fresh_append_id(&self) -> String {
        let incarnation = self.inner.ledger.open_report().node.map_or(0, |n| n.incarnation);
        format!(
            "{}{}:{incarnation}:{}",
            crate::state_machine::RESERVED_APPEND_ID_PREFIX,
            node_name(self.inner.id),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Writes `command` to its shard, wherever the leader is, and returns its outcome once
    /// this node has applied it.
    pub(crate) async fn write(&self, command: pb::Command) -> Result<pb::Outcome, LedgerError> {
        self.check_member()?;
        let shard = command.shard;
        let raft = self.raft(shard).map_err(|s| status::from_status(&s))?;
        let started = Instant::now();
        loop {
            if self.quorum_lost(shard).is_some() {
                // Check-quorum: a leader cut off from its majority answers at once rather than
                // keep the write waiting for a commit that cannot come.
                return Err(self.no_leader(shard).await);
            }
            let leader = raft.metrics().borrow().current_leader;
            let attempt = match leader {
                Some(leader) if leader == self.inner.id => {
                    self.propose(command.clone()).await.map_err(|s| status::from_status(&s))
                }
                Some(leader) => {
                    self.inner.forwarded.fetch_add(1, Ordering::Relaxed);
                    self.forward(leader, command.clone()).await
                }
                None => Err(LedgerError::Unavailable(String::new())),
            };
            match attempt {
                Ok(outcome) => {
                    self.until_shown_here(shard, outcome.log_index).await?;
                    return Ok(outcome);
                }
                // Definitely not written: no leader, or the node asked is not (or no longer) it.
                Err(LedgerError::Unavailable(why)) if started.elapsed() < LEADER_WAIT_MAX => {
                    tracing::debug!(shard, why, "no leader to write to yet; retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(LedgerError::Unavailable(_)) => return Err(self.no_leader(shard).await),
                Err(other) => return Err(other),
            }
        }
    }

    /// Queues an append on its shard in call order (on this node's proposer if it leads the
    /// shard, else on the forwarder to the leader) and returns the wait for its outcome once
    /// applied here. Appends queued one after another to a shard are written in that order
    /// unless the leader changes under them: an append whose route failed then goes through
    /// [`Self::write`] again, after the others.
    pub(crate) async fn write_queued(
        &self,
        command: pb::Command,
    ) -> Pin<Box<dyn Future<Output = Result<pb::Outcome, LedgerError>> + Send>> {
        let this = self.clone();
        let shard = command.shard;
        let queued = match (&command.op, self.check_member(), self.raft(shard)) {
            // A leader without its majority answers through `write`, at once.
            (Some(pb::command::Op::Append(append)), Ok(()), Ok(raft))
                if self.quorum_lost(shard).is_none() =>
            {
                let leader = raft.metrics().borrow().current_leader;
                let queue = match leader {
                    Some(leader) if leader == self.inner.id => {
                        of_shard(shard, &self.inner.proposers)
                    }
                    Some(_) => {
                        self.inner.forwarded.fetch_add(1, Ordering::Relaxed);
                        of_shard(shard, &self.inner.forwarders)
                    }
                    None => Err(tonic::Status::unavailable("no leader")),
                };
                match queue {
                    Ok(queue) => queue.enqueue(append.clone()).await.ok(),
                    Err(_) => None,
                }
            }
            _ => None,
        };
        Box::pin(async move {
            if let Some(wait) = queued {
                match wait.await {
                    Ok(outcome) => {
                        this.until_shown_here(shard, outcome.log_index).await?;
                        return Ok(outcome);
                    }
                    Err(status) if status.code() != tonic::Code::Unavailable => {
                        return Err(status::from_status(&status));
                    }
                    Err(_) => {}
                }
            }
            this.write(command).await
        })
    }

    /// Waits until this node has applied the write at `index` of `shard`, so a read here
    /// shows it.
    async fn until_shown_here(&self, shard: u32, index: u64) -> Result<(), LedgerError> {
        let mut shown =
            usize::try_from(shard).ok().and_then(|s| self.inner.shown.get(s)).cloned().ok_or_else(
                || LedgerError::Internal(format!("shard {shard} has no applied-position watch")),
            )?;
        let waited =
            tokio::time::timeout(APPLY_WAIT_MAX, shown.wait_for(|d| d.reached(index) != Ok(false)))
                .await;
        let not_yet = |why: &str| {
            LedgerError::Unavailable(format!(
                "the write was committed but this node has not applied it ({why}); read it from another node, or retry with the same append_id"
            ))
        };
        match waited {
            Ok(Ok(d)) => match d.reached(index) {
                Ok(_) => Ok(()),
                Err(failed) => Err(not_yet(&failed)),
            },
            Ok(Err(_)) => Err(not_yet("the shard stopped on this node")),
            Err(_) => Err(not_yet(&format!("not within {APPLY_WAIT_MAX:?}"))),
        }
    }

    /// Proposes `command` on this node, which must lead its shard: an append with whatever
    /// other appends are waiting for the shard (see [`crate::propose`]), anything else
    /// (appends forwarded together, a load) as it is.
    pub(crate) async fn propose(&self, command: pb::Command) -> Result<pb::Outcome, tonic::Status> {
        let shard = command.shard;
        if let Some(silent) = self.quorum_lost(shard) {
            return Err(tonic::Status::unavailable(format!(
                "shard {shard}: this node leads it but has heard from no majority of its voters for {silent:?}"
            )));
        }
        match command.op {
            Some(pb::command::Op::Append(append)) => {
                of_shard(shard, &self.inner.proposers)?.append(append).await
            }
            op => {
                let command = propose::stamped(pb::Command { shard, op });
                let gate = of_shard(shard, &self.inner.gates)?;
                let raft = self.raft(shard)?;
                propose::propose(shard, raft, gate, self.inner.quorum_lost_after, command).await
            }
        }
    }

    /// Sends `command` to the shard's leader `leader`: an append with whatever other appends
    /// are waiting to go there, anything else as it is.
    async fn forward(
        &self,
        leader: NodeId,
        command: pb::Command,
    ) -> Result<pb::Outcome, LedgerError> {
        let shard = command.shard;
        let answer = match command.op {
            Some(pb::command::Op::Append(append)) => {
                match of_shard(shard, &self.inner.forwarders) {
                    Ok(forwarder) => forwarder.append(append).await,
                    Err(e) => Err(e),
                }
            }
            op => match self.raft(shard) {
                Ok(raft) => {
                    let command = pb::Command { shard, op };
                    propose::forward(shard, raft, &self.inner.peers, leader, command).await
                }
                Err(e) => Err(e),
            },
        };
        answer.map_err(|s| status::from_status(&s))
    }

    pub(crate) fn address_of(&self, shard: u32, node: NodeId) -> Option<String> {
        let raft = self.raft(shard).ok()?;
        let metrics = raft.metrics().borrow().clone();
        metrics.membership_config.membership().get_node(&node).map(|n| n.addr.clone())
    }

    /// Fails a client call on a node that was removed from the cluster.
    pub(crate) fn check_member(&self) -> Result<(), LedgerError> {
        if self.is_removed() {
            return Err(LedgerError::FailedPrecondition(
                "not a member of the cluster: this node was removed; use another node".into(),
            ));
        }
        Ok(())
    }

    /// The error for a shard that has no leader or cannot commit: how many of its voters this
    /// node can reach.
    async fn no_leader(&self, shard: u32) -> LedgerError {
        let Ok(raft) = self.raft(shard) else {
            return LedgerError::Unavailable(format!("shard {shard} does not exist"));
        };
        let membership = raft.metrics().borrow().membership_config.membership().clone();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        // Probed together, so the answer comes within one probe's time.
        let probes = voters.iter().map(|voter| {
            let address = membership.get_node(voter).map(|n| n.addr.clone());
            async move {
                match address {
                    _ if *voter == self.inner.id => true,
                    Some(address) => self.probe(&address).await,
                    None => false,
                }
            }
        });
        let reachable =
            futures_util::future::join_all(probes).await.into_iter().filter(|r| *r).count();
        LedgerError::Unavailable(format!(
            "shard {shard} cannot commit: {reachable} of {} voters reachable from this node, a majority is needed; not acknowledged, retry with the same append_id",
            voters.len()
        ))
    }

    /// Whether the peer at `address` answers within a short time.
    pub(crate) async fn probe(&self, address: &str) -> bool {
        let Ok(mut client) = self.inner.peers.client(address) else { return false };
        client
            .status(self.inner.peers.request(pb::StatusRequest {}, Duration::from_millis(300)))
            .await
            .is_ok()
    }
}
