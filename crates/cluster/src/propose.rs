//! Proposing on a shard's leader, and the group commit of appends: appends written to a shard
//! at about the same time ride one Raft entry, and one forwarded call to its leader.
//!
//! openraft 0.9 writes each proposal to its log and waits for that fsync before it takes the
//! next one, so one Raft entry per append would cost one fsync each on the leader, one after
//! another: about 2,500 appends/s per shard on this kind of disk whatever the load. A
//! proposer per shard instead gathers the appends waiting for it into one entry (`Appends`),
//! one entry in flight at a time, so the batch grows with the load and a lone append
//! still goes at once. Applying the entry applies its appends in order, one outcome each.
//!
//! A node that does not lead the shard gathers the same way before it forwards: one `Forward`
//! call carries what waited, the leader proposes it as one entry, and the outcomes come back
//! together.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use converge_proto::cluster as pb;
use openraft::error::{ClientWriteError, RaftError};
use prost::Message as _;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::network::Peers;
use crate::types::{NodeId, Raft, node_name};

/// How long a leader waits for a proposal to commit (a leader cut off from its majority cannot
/// commit; the write then fails with `UNAVAILABLE` and is not acknowledged).
const COMMIT_WAIT_MAX: Duration = Duration::from_secs(5);
/// Entries a shard's proposer has in flight at once: while one is written and replicated, the
/// next batch gathers (openraft writes proposals one at a time anyway). Measured on two cores
/// at 256 appends in flight: 1 gave 5.0–5.1k appends/s, 2 gave 4.2–4.5k, 4 gave 4.0–4.1k.
const IN_FLIGHT: usize = 1;
/// At most this many appends ride one entry...
const BATCH_MAX: usize = 1024;
/// ...and at most about this many bytes (an entry is sent to followers whole).
const BATCH_BYTES_MAX: usize = 4 << 20;
/// A forwarded write's deadline.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);
/// Appends waiting for a shard's proposer before callers wait to hand theirs over.
const QUEUE: usize = 4096;

/// The answer to one proposal: its outcome (with its log index), or why it was not written.
type Answer = Result<pb::Outcome, tonic::Status>;

/// Where a batch of appends goes.
#[derive(Clone)]
pub(crate) enum Route {
    /// Proposed to the shard's Raft on this node (its leader), stamped with this node's clock,
    /// through the shard's gate; given up once the leader has heard from no majority for the
    /// duration (check-quorum).
    Lead(Raft, Gate, Duration),
    /// Forwarded to the shard's leader, whoever it is when the batch leaves.
    Forward { raft: Raft, peers: Peers, me: NodeId },
}

/// One shard's group commit on this node, on one route.
pub(crate) struct Proposer {
    waiting: mpsc::Sender<(pb::AppendCommand, oneshot::Sender<Answer>)>,
}

impl Proposer {
    /// The group commit of `shard` along `route`.
    pub(crate) fn start(shard: u32, route: Route) -> Self {
        let (waiting, queue) = mpsc::channel(QUEUE);
        tokio::spawn(gather(shard, route, queue));
        Self { waiting }
    }

    /// Proposes `append` with whatever else is waiting; its outcome once committed and
    /// applied here.
    pub(crate) async fn append(&self, append: pb::AppendCommand) -> Answer {
        self.enqueue(append).await?.await
    }

    /// Queues `append` behind those queued before it (they ride the same or earlier entries,
    /// in order) and returns the wait for its outcome.
    pub(crate) async fn enqueue(
        &self,
        append: pb::AppendCommand,
    ) -> Result<impl Future<Output = Answer> + Send + 'static, tonic::Status> {
        let (answer, outcome) = oneshot::channel();
        self.waiting.send((append, answer)).await.map_err(|_| stopped())?;
        Ok(async move { outcome.await.map_err(|_| stopped())? })
    }
}

fn stopped() -> tonic::Status {
    tonic::Status::unavailable("this node's shard stopped; retry")
}

/// Takes what is waiting, up to a batch, whenever an in-flight slot is free.
async fn gather(
    shard: u32,
    route: Route,
    mut queue: mpsc::Receiver<(pb::AppendCommand, oneshot::Sender<Answer>)>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
        let Some(first) = queue.recv().await else { return };
        let mut bytes = first.0.encoded_len();
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX && bytes < BATCH_BYTES_MAX {
            let Ok(next) = queue.try_recv() else { break };
            bytes += next.0.encoded_len();
            batch.push(next);
        }
        let route = route.clone();
        tokio::spawn(async move {
            commit(shard, &route, batch).await;
            drop(slot);
        });
    }
}

/// Sends `batch` along `route` as one command and answers each of its appends.
async fn commit(
    shard: u32,
    route: &Route,
    batch: Vec<(pb::AppendCommand, oneshot::Sender<Answer>)>,
) {
    let (mut appends, answers): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    let op = match appends.pop() {
        Some(only) if appends.is_empty() => pb::command::Op::Append(only),
        Some(last) => {
            appends.push(last);
            pb::command::Op::Appends(pb::Appends { appends })
        }
        None => return,
    };
    let command = pb::Command { shard, op: Some(op) };
    let written = match route {
        Route::Lead(raft, gate, quorum_lost_after) => {
            propose(shard, raft, gate, *quorum_lost_after, stamped(command)).await
        }
        Route::Forward { raft, peers, me } => {
            let leader = raft.metrics().borrow().current_leader;
            match leader {
                Some(leader) if leader != *me => forward(shard, raft, peers, leader, command).await,
                _ => Err(tonic::Status::unavailable(format!(
                    "shard {shard} has no other node as leader to forward to; retry"
                ))),
            }
        }
    };
    match written {
        Ok(outcome) => {
            let index = outcome.log_index;
            let outcomes = match outcome.result {
                Some(pb::outcome::Result::Outcomes(many)) => many.outcomes,
                _ => vec![outcome],
            };
            if outcomes.len() != answers.len() {
                let wrong = tonic::Status::internal(format!(
                    "shard {shard}: {} appends proposed together came back with {} outcomes",
                    answers.len(),
                    outcomes.len()
                ));
                for answer in answers {
                    let _ = answer.send(Err(wrong.clone()));
                }
                return;
            }
            for (mut outcome, answer) in outcomes.into_iter().zip(answers) {
                outcome.log_index = index;
                let _ = answer.send(Ok(outcome));
            }
        }
        Err(status) => {
            for answer in answers {
                let _ = answer.send(Err(status.clone()));
            }
        }
    }
}

/// A shard's proposal gate: every proposal holds it open (shared) while it is in flight; a
/// leadership handover closes it (see `spread`).
pub(crate) type Gate = Arc<tokio::sync::RwLock<()>>;

/// Proposes `command` to `raft`, which this node must lead, once `gate` is open; its outcome,
/// with its log index, once committed and applied here. If the leader hears from no majority
/// for `quorum_lost_after` meanwhile, it answers `UNAVAILABLE` at once (check-quorum) instead
/// of waiting out the commit wait: not acknowledged, though it may still commit later.
pub(crate) async fn propose(
    shard: u32,
    raft: &Raft,
    gate: &Gate,
    quorum_lost_after: Duration,
    command: pb::Command,
) -> Answer {
    let _open = gate.read().await;
    let written = tokio::select! {
        written = tokio::time::timeout(COMMIT_WAIT_MAX, raft.client_write(command)) => written,
        silent = quorum_lost(raft, quorum_lost_after) => {
            return Err(tonic::Status::unavailable(format!(
                "shard {shard}: this node leads it but has heard from no majority of its voters for {silent:?}; not acknowledged, retry on another node with the same append_id"
            )));
        }
    };
    let Ok(written) = written else {
        return Err(tonic::Status::unavailable(format!(
            "shard {shard}: not committed within {COMMIT_WAIT_MAX:?} (is a majority of its voters reachable?); not acknowledged, retry with the same append_id"
        )));
    };
    match written {
        Ok(response) => {
            let mut outcome = response.data;
            outcome.log_index = response.log_id.index;
            Ok(outcome)
        }
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(tonic::Status::unavailable(format!(
                "this node does not lead the shard (leader: {})",
                f.leader_id.map_or_else(|| "unknown".into(), node_name)
            )))
        }
        Err(e) => Err(crate::forward::raft_status(&e)),
    }
}

/// How often a proposal in flight looks whether its leader still hears from a majority.
const QUORUM_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// How long the node whose Raft `m` describes, if it leads, has heard from no majority of
/// its voters (since `since` when none has answered since its election); `None` if it does
/// not lead. Check-quorum's one measure, for readiness, writes and proposals in flight.
pub(crate) fn silence(
    m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>,
    since: std::time::Instant,
) -> Option<Duration> {
    (m.state == openraft::ServerState::Leader)
        .then(|| m.millis_since_quorum_ack.map_or_else(|| since.elapsed(), Duration::from_millis))
}

/// Returns once this node, leading the shard of `raft`, has heard from no majority of its
/// voters for longer than `after` (counted from now if none has acknowledged yet): how long.
/// Never returns while it hears from one, or once it no longer leads (the write then fails on
/// its own).
async fn quorum_lost(raft: &Raft, after: Duration) -> Duration {
    let started = std::time::Instant::now();
    loop {
        tokio::time::sleep(QUORUM_CHECK_INTERVAL).await;
        if let Some(silent) = silence(&raft.metrics().borrow(), started).filter(|s| *s > after) {
            return silent;
        }
    }
}

/// `command` with the leader's wall clock stamped into its appends (the entries' times are
/// computed from it, the same on every replica).
pub(crate) fn stamped(mut command: pb::Command) -> pb::Command {
    let now = now_ns();
    match &mut command.op {
        Some(pb::command::Op::Append(append)) => append.now_ns = now,
        Some(pb::command::Op::Appends(batch)) => {
            for append in &mut batch.appends {
                append.now_ns = now;
            }
        }
        _ => {}
    }
    command
}

/// Sends `command` of `shard` to its leader `leader`. `UNAVAILABLE` only when it was certainly
/// not written (the peer refused it as not the leader, or could not be reached); every append
/// carries an `append_id`, so sending it again is safe in any case.
pub(crate) async fn forward(
    shard: u32,
    raft: &Raft,
    peers: &Peers,
    leader: NodeId,
    command: pb::Command,
) -> Answer {
    let address = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .get_node(&leader)
        .map(|n| n.addr.clone())
        .ok_or_else(|| {
            tonic::Status::unavailable(format!(
                "shard {shard}: the leader {} has no known address",
                node_name(leader)
            ))
        })?;
    let mut client = peers.client(&address)?;
    Ok(client.forward(peers.request(command, FORWARD_TIMEOUT)).await?.into_inner())
}

/// The leader's wall clock, stamped into the appends it proposes.
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
