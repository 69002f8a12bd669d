//! A cluster node: one Raft per shard over the node's ledger, started, joined and stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use converge_ledger::Ledger;
use converge_proto::cluster as pb;
use converge_storage::vfs::Vfs;
use converge_storage::{Durability, StoreConfig};
use openraft::{BasicNode, ChangeMembers, Config, ServerState, SnapshotPolicy};
use tracing::{info, warn};

use crate::limits::{ClusterLimits, InForce};
use crate::log_store::{LogStore, NodeLog};
use crate::network::{Network, PeerTls, Peers};
use crate::propose::{Gate, Proposer, Route};
use crate::spread::Spreader;
use crate::state_machine::StateMachine;
use crate::types::{NodeId, Raft, node_name};

/// How a node starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Create a cluster whose only voter is this node (once, on one node).
    Bootstrap {
        /// Shards, fixed for the cluster's life.
        shards: u32,
        /// How many voters the cluster aims for.
        voters: u32,
    },
    /// Ask a member (any of these addresses) to add this node.
    Join(Vec<String>),
    /// Restart as the member this data directory already is.
    Restart,
}

/// What a cluster node needs beyond its ledger.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The data directory (the ledger's): the Raft logs live under `raft/` in it.
    pub data_dir: PathBuf,
    /// The address peers and clients use to reach this node (`host:port`).
    pub advertise: String,
    /// How it starts.
    pub start: Start,
    /// The token this node presents to peers (role `peer`), if the cluster uses tokens.
    pub peer_token: Option<String>,
    /// TLS to peers, if the nodes serve TLS.
    pub peer_tls: Option<PeerTls>,
    /// The local address this node dials its peers from (a host with several addresses);
    /// `None` lets the operating system pick.
    pub peer_source: Option<IpAddr>,
    /// Raft timing.
    pub timing: Timing,
    /// The limits this node's flags describe: recorded in the log when it bootstraps, and
    /// what it checks requests against in a shard whose log has set none yet.
    pub limits: ClusterLimits,
}

/// Raft's clocks.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// A leader's heartbeat interval.
    pub heartbeat: Duration,
    /// A follower waits between these before it stands for election.
    pub election_min: Duration,
    /// See `election_min`.
    pub election_max: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(100),
            election_min: Duration::from_millis(500),
            election_max: Duration::from_secs(1),
        }
    }
}

/// Starting or running the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A file of the node's could not be used.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The configuration cannot work.
    #[error("{0}")]
    Config(String),
    /// Raft refused.
    #[error("Raft: {0}")]
    Raft(String),
}

/// What the data directory records about the cluster: written when the node first joins or
/// bootstraps, read on every restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Membership {
    pub(crate) shards: u32,
    pub(crate) voters: u32,
    /// The cluster's id: the hex identity of the node that bootstrapped it. None in a file
    /// written before clusters had ids.
    pub(crate) id: Option<String>,
}

impl Membership {
    const FILE: &'static str = "cluster";

    fn read(vfs: &dyn Vfs, dir: &Path) -> Result<Option<Self>, ClusterError> {
        let path = dir.join(Self::FILE);
        if !vfs.exists(&path)? {
            return Ok(None);
        }
        let file = vfs.open(&path, converge_storage::vfs::OpenMode::Existing)?;
        let mut bytes = vec![0; usize::try_from(file.len()?).map_err(std::io::Error::other)?];
        file.read_exact_at(&mut bytes, 0)?;
        let text = String::from_utf8_lossy(&bytes);
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.trim().parse::<u32>().ok())
                .ok_or_else(|| {
                    ClusterError::Config(format!("{}: no valid `{name}` line", path.display()))
                })
        };
        let id = text.lines().find_map(|line| Some(line.strip_prefix("id ")?.trim().to_string()));
        Ok(Some(Self { shards: field("shards ")?, voters: field("voters ")?, id }))
    }

    fn write(&self, vfs: &dyn Vfs, dir: &Path) -> Result<(), ClusterError> {
        let tmp = dir.join("cluster.tmp");
        let file = vfs.open(&tmp, converge_storage::vfs::OpenMode::CreateTruncate)?;
        let id = self.id.as_ref().map(|id| format!("id {id}\n")).unwrap_or_default();
        let text = format!("shards {}\nvoters {}\n{id}", self.shards, self.voters);
        file.write_all_at(text.as_bytes(), 0)?;
        file.sync_all()?;
        vfs.rename(&tmp, &dir.join(Self::FILE))?;
        vfs.sync_dir(dir)?;
        Ok(())
    }
}

/// A running cluster node. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) id: NodeId,
    pub(crate) address: String,
    pub(crate) ledger: Ledger,
    pub(crate) shards: Vec<Raft>,
    /// Per shard: the group commit of appends proposed here while this node leads it...
    pub(crate) proposers: Vec<Proposer>,
    /// ...and of appends forwarded from here to its leader.
    pub(crate) forwarders: Vec<Proposer>,
    /// Per shard: the gate proposals pass (closed while the shard's leadership is handed over).
    pub(crate) gates: Vec<Gate>,
    /// Per shard: how far its applied entries are shown here (a write is answered once this
    /// node's shown position has reached it).
    pub(crate) shown: Vec<tokio::sync::watch::Receiver<crate::state_machine::Shown>>,
    /// Per shard: how far it must apply before it answers reads after an unclean restart.
    pub(crate) floors: crate::floor::Floors,
    /// Per shard: the cluster-wide limits its log has set, as applied here.
    pub(crate) limits: Vec<InForce>,
    /// The limits of this node's own flags (see [`ClusterConfig::limits`]).
    pub(crate) own_limits: ClusterLimits,
    pub(crate) voters_wanted: u32,
    /// The cluster's id (empty for a cluster created before ids).
    pub(crate) cluster_id: String,
    pub(crate) peers: Peers,
    /// Set when this node learns it was removed from the cluster; kept on disk
    /// ([`REMOVED_FILE`]), so a restart on the same directory stays removed.
    pub(crate) removed: AtomicBool,
    /// The data directory.
    pub(crate) data_dir: PathBuf,
    /// Its file system.
    pub(crate) vfs: Arc<dyn Vfs>,
    /// A shard's leader that has heard from no majority for this long refuses writes and
    /// reports not ready (check-quorum): the election timeout, after which the others elect.
    pub(crate) quorum_lost_after: Duration,
    /// Per shard: the term this node was seen leading it in, and since when (check-quorum
    /// counts a leader with no acknowledgement yet as silent since then).
    pub(crate) leading_since: Vec<std::sync::Mutex<Option<(u64, Instant)>>>,
    /// Per shard: its Raft log (shared with its Raft), whose last entry elections compare.
    pub(crate) logs: Vec<LogStore>,
    /// When each shard's leader was last heard (see [`crate::stand`]).
    pub(crate) heard: crate::stand::Heard,
    /// Writes this node took for a shard another node leads and sent there (each attempt).
    pub(crate) forwarded: AtomicU64,
}

/// The file whose presence says this node was removed from the cluster.
pub(crate) const REMOVED_FILE: &str = "removed";
/// The file whose presence says a bootstrap began and has not finished bringing the data
/// directory's contexts into the log: the next start finishes it.
const BOOTSTRAP_PENDING_FILE: &str = "bootstrap-pending";

/// The Raft id of the node whose identity is `identity`: its first eight bytes.
pub fn node_id(identity: &[u8; 16]) -> NodeId {
    let mut first = [0; 8];
    first.copy_from_slice(&identity[..8]);
    u64::from_be_bytes(first)
}

/// The storage a cluster node's ledger opens with, from what a node alone would use: the
/// ledger writes without an fsync of its own before it shows an entry (buffered), since the
/// shards' Raft logs, fsynced on a majority before an entry commits, are the durable copy; it
/// is fsynced before a shard saves how far it applied ([`crate::state_machine`]).
pub fn ledger_storage(storage: StoreConfig) -> StoreConfig {
    StoreConfig { durability: Durability::Buffered, ..storage }
}

impl Cluster {
    /// Starts this node's shards over `ledger` (opened on `config.data_dir`), bootstrapping or
    /// joining as `config.start` says.
    pub async fn start(ledger: Ledger, config: ClusterConfig) -> Result<Self, ClusterError> {
        let identity = ledger.open_report().node.ok_or_else(|| {
            ClusterError::Config("a cluster node needs a data directory (disk mode)".into())
        })?;
        let id = node_id(&identity.id);
        // The Raft files live on the ledger's disk, beside its own.
        let vfs = Arc::clone(&ledger.store().config().vfs);
        let peers =
            Peers::new(config.peer_token.clone(), config.peer_tls.as_ref(), config.peer_source);
        let own_id = converge_core::hex::encode(&identity.id);
        let membership = membership(vfs.as_ref(), &config, &peers, &own_id).await?;
        check_directory(&ledger, vfs.as_ref(), &config, membership.shards)?;
        let bootstrapping = begin_bootstrap(vfs.as_ref(), &config, &membership)?;
        let raft_config = Arc::new(raft_config(config.timing)?);
        let (mut shards, mut shown, mut limits, mut logs, mut log_ends) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let node_log =
            NodeLog::open(Arc::clone(&vfs), &config.data_dir.join("raft"), id, membership.shards)?;
        for shard in 0..membership.shards {
            let dir = config.data_dir.join("raft").join(format!("shard-{shard}"));
            let log = node_log.shard(shard);
            log_ends.push(log.last_index());
            let sm =
                StateMachine::open(shard, ledger.clone(), Arc::clone(&vfs), &dir, log.flushed())?;
            shown.push(sm.shown());
            limits.push(sm.limits());
            logs.push(log.clone());
            let network = Network::new(shard, peers.clone());
            let raft = Raft::new(id, Arc::clone(&raft_config), network, log, sm)
                .await
                .map_err(|e| ClusterError::Raft(e.to_string()))?;
            shards.push(raft);
        }
        let floors = crate::floor::Floors::new(log_ends, ledger.open_report().unclean_shutdown);
        let gates: Vec<Gate> = shards.iter().map(|_| Gate::default()).collect();
        let proposers = (0..membership.shards)
            .zip(shards.iter().zip(&gates))
            .map(|(shard, (raft, gate))| {
                let route = Route::Lead(raft.clone(), Arc::clone(gate), config.timing.election_max);
                Proposer::start(shard, route)
            })
            .collect();
        let forwarders = (0..membership.shards)
            .zip(&shards)
            .map(|(shard, raft)| {
                let route = Route::Forward { raft: raft.clone(), peers: peers.clone(), me: id };
                Proposer::start(shard, route)
            })
            .collect();
        let inner = Arc::new(Inner {
            id,
            address: config.advertise.clone(),
            ledger,
            shards,
            proposers,
            forwarders,
            gates,
            shown,
            floors,
            limits,
            own_limits: config.limits,
            voters_wanted: membership.voters,
            cluster_id: membership.id.clone().unwrap_or_default(),
            peers,
            removed: AtomicBool::new(vfs.exists(&config.data_dir.join(REMOVED_FILE))?),
            data_dir: config.data_dir.clone(),
            vfs: Arc::clone(&vfs),
            quorum_lost_after: config.timing.election_max,
            leading_since: (0..membership.shards).map(|_| std::sync::Mutex::new(None)).collect(),
            logs,
            heard: crate::stand::Heard::new(membership.shards),
            forwarded: AtomicU64::new(0),
        });
        let cluster = Self { inner };
        if cluster.inner.removed.load(Ordering::SeqCst) {
            cluster.stand_down();
        }
        if bootstrapping {
            cluster.bootstrap().await?;
            vfs.remove_file(&config.data_dir.join(BOOTSTRAP_PENDING_FILE))?;
            vfs.sync_dir(&config.data_dir)?;
            info!("bootstrap finished");
        } else {
            membership.write(vfs.as_ref(), &config.data_dir)?;
        }
        tokio::spawn(watch_own_limits(cluster.clone()));
        if let Start::Join(seeds) = &config.start {
            let cluster = cluster.clone();
            let seeds = seeds.clone();
            tokio::spawn(async move { cluster.join(&seeds).await });
        }
        tokio::spawn(tend(Arc::downgrade(&cluster.inner)));
        tokio::spawn(spread_leaders(Arc::downgrade(&cluster.inner)));
        let lease = config.timing.election_max;
        tokio::spawn(crate::stand::stand_promptly(Arc::downgrade(&cluster.inner), lease));
        info!(node = %node_name(id), shards = membership.shards, voters = membership.voters, "cluster node started");
        Ok(cluster)
    }

    /// Makes this node the only voter of every shard not yet initialised, records its limits
    /// in every shard's log that has none, and brings the contexts the data directory already
    /// holds (a single node becoming a cluster) into their shards' logs, each as a load of its
    /// own snapshot: a no-op here, their whole history on every node that joins. Every step
    /// is idempotent, so a bootstrap a crash interrupted is finished by the next start
    /// ([`BOOTSTRAP_PENDING_FILE`]).
    async fn bootstrap(&self) -> Result<(), ClusterError> {
        let node = BasicNode { addr: self.inner.address.clone() };
        for raft in &self.inner.shards {
            if raft.is_initialized().await.map_err(|e| ClusterError::Raft(e.to_string()))? {
                continue;
            }
            raft.initialize(BTreeMap::from([(self.inner.id, node.clone())]))
                .await
                .map_err(|e| ClusterError::Raft(e.to_string()))?;
        }
        for shard in 0..self.shard_count() {
            if self.limits_set(shard).is_none() {
                self.record_limits(shard, self.inner.own_limits)
                    .await
                    .map_err(|e| ClusterError::Raft(format!("shard {shard}: {e}")))?;
            }
        }
        self.import().await
    }

    /// Brings every context of the ledger into its shard's log (see [`bootstrap`]).
    ///
    /// [`bootstrap`]: Self::bootstrap
    async fn import(&self) -> Result<(), ClusterError> {
        use converge_api::LedgerApi as _;
        let ids = self.inner.ledger.context_ids().map_err(|e| ClusterError::Raft(e.to_string()))?;
        for id in &ids {
            let snapshot = self.inner.ledger.snapshot(id).await.map_err(|e| {
                ClusterError::Config(format!(
                    "cannot bring context {id} into the cluster's log: {e}"
                ))
            })?;
            let request = converge_api::LoadRequest {
                load_id: None,
                context_id: id.clone(),
                snapshot: snapshot.snapshot,
                fail_if_exists: false,
            };
            let loaded = self.load(request).await.map_err(|e| {
                ClusterError::Raft(format!("cannot bring context {id} into the cluster's log: {e}"))
            })?;
            if loaded.entries_restored != 0 {
                return Err(ClusterError::Raft(format!(
                    "context {id} changed while it was brought into the cluster's log"
                )));
            }
        }
        if !ids.is_empty() {
            info!(contexts = ids.len(), "brought the data directory's contexts into the cluster");
        }
        Ok(())
    }

    /// Asks the seeds, in turn and again until one answers, to add this node.
    async fn join(&self, seeds: &[String]) {
        let request = pb::JoinRequest {
            node: self.inner.id,
            address: self.inner.address.clone(),
            shard: None,
            cluster_id: self.inner.cluster_id.clone(),
        };
        loop {
            for seed in &resolve(seeds).await {
                let Ok(mut client) = self.inner.peers.client(seed) else { continue };
                match client
                    .join(self.inner.peers.request(request.clone(), Duration::from_secs(600)))
                    .await
                {
                    Ok(_) => {
                        info!(seed, "joined the cluster");
                        return;
                    }
                    Err(status) => warn!(seed, %status, "join failed; trying again"),
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The number of shards.
    pub fn shard_count(&self) -> u32 {
        u32::try_from(self.inner.shards.len()).expect("the shard count came from a u32")
    }

    /// The node's ledger (its applied state).
    pub fn ledger(&self) -> &Ledger {
        &self.inner.ledger
    }

    pub(crate) fn raft(&self, shard: u32) -> Result<&Raft, tonic::Status> {
        crate::types::of_shard(shard, &self.inner.shards)
    }

    /// The index `shard`'s reads still wait for after an unclean restart (`crate::floor`).
    pub(crate) fn floor_waiting(&self, shard: u32) -> Option<u64> {
        let s = usize::try_from(shard).ok()?;
        let applied = self.inner.shown.get(s)?.borrow().upto.map(|l| l.index);
        let log_end = self.inner.logs.get(s)?.last_index();
        self.inner.floors.waiting(s, applied, log_end)
    }

    /// Whether this node is a member that has caught up: it is in every shard's membership,
    /// every shard has a leader, it has applied what it holds, and no shard it leads has lost
    /// its majority. Health says `SERVING` then.
    pub fn ready(&self) -> bool {
        !self.inner.removed.load(Ordering::SeqCst)
            && (0..self.shard_count()).all(|shard| self.quorum_lost(shard).is_none())
            && self.inner.shards.iter().all(|raft| {
                let m = raft.metrics().borrow().clone();
                let member = m.membership_config.membership().get_node(&self.inner.id).is_some();
                let applied = m.last_applied.map(|l| l.index);
                member && m.current_leader.is_some() && applied >= m.last_log_index
            })
    }

    /// Check-quorum: if this node leads `shard` but has heard from no majority of its voters
    /// for longer than an election timeout (the others may have elected a leader since), how
    /// long it has been. Such a leader refuses writes at once and reports not ready.
    pub(crate) fn quorum_lost(&self, shard: u32) -> Option<Duration> {
        let raft = self.raft(shard).ok()?;
        let metrics = raft.metrics();
        let m = metrics.borrow();
        let mut since = crate::types::of_shard(shard, &self.inner.leading_since)
            .ok()?
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if m.state != ServerState::Leader {
            *since = None;
            return None;
        }
        // No acknowledgement counted since it was elected: silent since then (its election
        // was the last a majority said).
        let elected = match *since {
            Some((seen, at)) if seen == m.current_term => at,
            _ => since.insert((m.current_term, Instant::now())).1,
        };
        crate::propose::silence(&m, elected).filter(|s| *s > self.inner.quorum_lost_after)
    }

    /// The limits `shard`'s log has set, as applied here (`None`: none yet).
    pub(crate) fn limits_set(&self, shard: u32) -> Option<ClusterLimits> {
        crate::types::of_shard(shard, &self.inner.limits).ok().and_then(|l| *l.borrow())
    }

    /// The limits a request to `shard` is checked against where it enters: its log's, else
    /// this node's own (a shard whose log has set none yet).
    pub(crate) fn limits(&self, shard: u32) -> ClusterLimits {
        self.limits_set(shard).unwrap_or(self.inner.own_limits)
    }

    /// Records `limits` in `shard`'s log (wherever its leader is) and waits until applied here.
    pub(crate) async fn record_limits(
        &self,
        shard: u32,
        limits: ClusterLimits,
    ) -> Result<(), converge_api::LedgerError> {
        let command = pb::Command { shard, op: Some(pb::command::Op::Limits(limits.to_wire())) };
        let outcome = self.write(command).await?;
        match outcome.result {
            Some(pb::outcome::Result::Failure(f)) => {
                Err(converge_api::LedgerError::InvalidArgument(f.message))
            }
            _ => Ok(()),
        }
    }

    /// Records that this node was removed, durably: from now on, and after a restart on the
    /// same directory, it refuses client calls, and its open watches end now.
    pub(crate) fn mark_removed(&self) {
        let first = !self.inner.removed.swap(true, Ordering::SeqCst);
        if let Err(e) = converge_storage::node::write_atomically(
            self.inner.vfs.as_ref(),
            &self.inner.data_dir,
            REMOVED_FILE,
            b"this node was removed from the cluster\n",
        ) {
            warn!(error = %e, "could not record on disk that this node was removed");
        }
        if first {
            self.stand_down();
        }
    }

    /// What a removed node does: its watches end with UNAVAILABLE (their clients resume on
    /// another node), and its shards' Rafts stop, so it never stands for election in a
    /// cluster it no longer belongs to.
    fn stand_down(&self) {
        self.inner.ledger.begin_close();
        warn!("this node was removed from the cluster; refusing client calls");
        let cluster = self.clone();
        tokio::spawn(async move { cluster.shutdown().await });
    }

    /// Whether this node was removed from the cluster.
    pub fn is_removed(&self) -> bool {
        if self.inner.removed.load(Ordering::SeqCst) {
            return true;
        }
        // Removed = some shard's membership was once ours and no longer names us.
        let removed = self.inner.shards.iter().any(|raft| {
            let m = raft.metrics().borrow().clone();
            m.membership_config.log_id().is_some()
                && m.membership_config.membership().get_node(&self.inner.id).is_none()
                && m.state != ServerState::Learner
        });
        if removed {
            self.mark_removed();
        }
        removed
    }

    /// Adds `node` to `shard` (this node must lead it): as a learner, caught up, then as a
    /// voter while the shard has fewer voters than wanted.
    pub(crate) async fn add_to_shard(
        &self,
        shard: u32,
        node: NodeId,
        address: String,
    ) -> Result<(), tonic::Status> {
        let raft = self.raft(shard)?;
        raft.add_learner(node, BasicNode { addr: address }, true)
            .await
            .map_err(|e| crate::forward::raft_status(&e))?;
        let voters: BTreeSet<NodeId> =
            raft.metrics().borrow().membership_config.membership().voter_ids().collect();
        if !voters.contains(&node) && voters.len() < self.inner.voters_wanted as usize {
            let promote = ChangeMembers::AddVoterIds(BTreeSet::from([node]));
            change_within(shard, raft, promote, true).await?;
        }
        Ok(())
    }

    /// Removes `node` from `shard` (this node must lead it).
    pub(crate) async fn remove_from_shard(
        &self,
        shard: u32,
        node: NodeId,
    ) -> Result<(), tonic::Status> {
        let raft = self.raft(shard)?;
        let membership = raft.metrics().borrow().membership_config.membership().clone();
        let change = |members, retain| change_within(shard, raft, members, retain);
        if membership.voter_ids().any(|v| v == node) {
            // A learner takes the voter's place in the same change, so the shard never has
            // fewer voters than wanted (two voters survive no failure, and promoting a
            // learner later would pass through a configuration that needs both of them).
            let mut voters: BTreeSet<NodeId> = membership.voter_ids().collect();
            voters.remove(&node);
            if voters.len() < self.inner.voters_wanted as usize
                && let Some(learner) = replacement(raft, node)
            {
                voters.insert(learner);
            }
            change(ChangeMembers::ReplaceAllVoters(voters), true).await?;
        }
        if membership.get_node(&node).is_some() {
            change(ChangeMembers::RemoveNodes(BTreeSet::from([node])), false).await?;
        }
        Ok(())
    }

    /// Stops every shard's Raft (the ledger is closed by its owner afterwards).
    pub async fn shutdown(&self) {
        for raft in &self.inner.shards {
            if let Err(e) = raft.shutdown().await {
                warn!(error = %e, "a shard's Raft did not shut down cleanly");
            }
        }
    }
}

/// How long a membership change may take to commit before it fails with `UNAVAILABLE`.
const MEMBERSHIP_CHANGE_MAX: Duration = Duration::from_secs(20);

/// Changes `shard`'s membership on `raft` (this node must lead it). A change that cannot
/// commit (no majority) fails after [`MEMBERSHIP_CHANGE_MAX`] instead of waiting for ever and
/// holding up the changes behind it; asking again is safe.
async fn change_within(
    shard: u32,
    raft: &Raft,
    members: ChangeMembers<NodeId, BasicNode>,
    retain: bool,
) -> Result<(), tonic::Status> {
    tokio::time::timeout(MEMBERSHIP_CHANGE_MAX, raft.change_membership(members, retain))
        .await
        .map_err(|_| {
            tonic::Status::unavailable(format!(
                "shard {shard}: the membership change did not commit within {MEMBERSHIP_CHANGE_MAX:?} (is a majority of its voters reachable?); retry"
            ))
        })?
        .map(|_| ())
        .map_err(|e| crate::forward::raft_status(&e))
}
/// How often a leader looks for learners to promote, and for shards to hand over.
const TEND_INTERVAL: Duration = Duration::from_secs(1);
/// A learner this close to the leader's log counts as caught up.
const CAUGHT_UP_ENTRIES: u64 = 64;

/// Every second, on the shards this node leads, promotes learners while voters are short.
/// Ends with the node.
async fn tend(inner: std::sync::Weak<Inner>) {
    let mut leaderless = Vec::new();
    loop {
        tokio::time::sleep(TEND_INTERVAL).await;
        let Some(inner) = inner.upgrade() else { return };
        promote_learners(&inner).await;
        let cluster = Cluster { inner };
        record_missing_limits(&cluster).await;
        learn_removal(&cluster, &mut leaderless).await;
    }
}

/// How long a voter finds no leader for a shard before it asks the others whether it was
/// removed.
const LEADERLESS_BEFORE_ASKING: Duration = Duration::from_secs(5);

/// A node that was down while it was removed never received the change (a leader replicates
/// to members only), and its elections are refused: it would wait for ever. So a voter that
/// has found no leader for a shard for [`LEADERLESS_BEFORE_ASKING`] asks the others; when the
/// shard's leader answers from a later membership (a higher log index than this node's) that
/// does not hold it, a membership change removed it (a change that adds a node never drops
/// it), and it stays removed.
async fn learn_removal(cluster: &Cluster, leaderless: &mut Vec<Option<Instant>>) {
    let me = cluster.inner.id;
    leaderless.resize(cluster.inner.shards.len(), None);
    for (shard, raft) in (0u32..).zip(&cluster.inner.shards) {
        let m = raft.metrics().borrow().clone();
        let voter = m.membership_config.membership().voter_ids().any(|v| v == me);
        let since = &mut leaderless[shard as usize];
        if m.current_leader.is_some() || !voter || cluster.is_removed() {
            *since = None;
            continue;
        }
        if since.get_or_insert_with(Instant::now).elapsed() < LEADERLESS_BEFORE_ASKING {
            continue;
        }
        let mine = m.membership_config.log_id().map_or(0, |l| l.index);
        let others = m.membership_config.membership().nodes().filter(|(id, _)| **id != me);
        let others = others.map(|(id, node)| (*id, node.addr.clone())).collect();
        let answers = cluster.inner.ask_membership(shard, others, Duration::from_secs(2)).await;
        for (id, answer) in answers {
            if answer.leader && !answer.member && answer.config_index > mine {
                warn!(
                    shard,
                    leader = %node_name(id),
                    membership_index = answer.config_index,
                    own_membership_index = mine,
                    "the shard's leader no longer has this node as a member: it was removed while it was down"
                );
                cluster.mark_removed();
                return;
            }
        }
    }
}

impl Inner {
    /// Asks each of `others` (id, address) what it knows of `shard` (`Peer/Membership`), all
    /// at once, each within `timeout`; the answers of those that answered.
    pub(crate) async fn ask_membership(
        &self,
        shard: u32,
        others: Vec<(NodeId, String)>,
        timeout: Duration,
    ) -> Vec<(NodeId, pb::MembershipResponse)> {
        let asks = others.into_iter().map(|(id, address)| async move {
            let mut client = self.peers.client(&address).ok()?;
            let request =
                self.peers.request(pb::MembershipRequest { node: self.id, shard }, timeout);
            let answer = client.membership(request).await.ok()?.into_inner();
            Some((id, answer))
        });
        futures_util::future::join_all(asks).await.into_iter().flatten().collect()
    }
}

/// Says, at start and whenever they change, when the cluster's limits (as the first shard's
/// log has set them) differ from this node's own flags: the cluster's decide what is accepted.
async fn watch_own_limits(cluster: Cluster) {
    let own = cluster.inner.own_limits;
    let Some(mut limits) = cluster.inner.limits.first().cloned() else { return };
    let inner = Arc::downgrade(&cluster.inner);
    drop(cluster);
    loop {
        let current = *limits.borrow_and_update();
        if let Some(current) = current
            && current != own
        {
            warn!(
                cluster_payload_bytes_max = current.payload_bytes_max,
                cluster_load_bytes_max = current.load_bytes_max,
                own_payload_bytes_max = own.payload_bytes_max,
                own_load_bytes_max = own.load_bytes_max,
                "this node's --payload-bytes-max/--response-bytes-max differ from the cluster's limits; the cluster's decide what is accepted (see `converge-ledger cluster status`, change them with `converge-ledger cluster limits`)"
            );
        }
        if limits.changed().await.is_err() || inner.strong_count() == 0 {
            return;
        }
    }
}

/// On the shards this node leads whose log has set no limits (a cluster made before they
/// existed), records this node's own.
async fn record_missing_limits(cluster: &Cluster) {
    for shard in 0..cluster.shard_count() {
        let leads = cluster
            .raft(shard)
            .is_ok_and(|raft| raft.metrics().borrow().state == ServerState::Leader);
        if leads && cluster.limits_set(shard).is_none() {
            let limits = cluster.inner.own_limits;
            match tokio::time::timeout(TEND_INTERVAL * 5, cluster.record_limits(shard, limits))
                .await
            {
                Ok(Ok(())) => {
                    info!(shard, ?limits, "recorded the cluster's limits in the shard's log");
                }
                Ok(Err(e)) => {
                    warn!(shard, error = %e, "recording the cluster's limits failed; trying again later");
                }
                Err(_) => {
                    warn!(shard, "recording the cluster's limits timed out; trying again later");
                }
            }
        }
    }
}

/// Every second, hands over the shards this node leads that another node should lead
/// (`spread`). Apart from [`tend`]: a handover may take seconds, and promotions must not wait
/// for it. Ends with the node.
async fn spread_leaders(inner: std::sync::Weak<Inner>) {
    let mut spreader = Spreader::default();
    loop {
        tokio::time::sleep(TEND_INTERVAL).await;
        let Some(inner) = inner.upgrade() else { return };
        spreader.tend(&inner).await;
    }
}

/// While a shard this node leads has fewer voters than wanted, makes a caught-up learner a
/// voter (a node that joined while there were enough voters, once one is removed).
async fn promote_learners(inner: &Inner) {
    for (shard, raft) in (0u32..).zip(&inner.shards) {
        let m = raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            continue;
        }
        let membership = m.membership_config.membership();
        let voters = membership.voter_ids().count();
        if voters >= inner.voters_wanted as usize || membership.get_joint_config().len() > 1 {
            continue;
        }
        if let Some(learner) = caught_up_learner(raft, None) {
            info!(node = %node_name(learner), "promoting a caught-up learner to voter");
            let promote = ChangeMembers::AddVoterIds(BTreeSet::from([learner]));
            if let Err(e) = change_within(shard, raft, promote, true).await {
                warn!(shard, error = %e, "promoting a learner failed; trying again later");
            }
        }
    }
}

/// A learner of the shard `raft` leads (other than `except`) within `CAUGHT_UP_ENTRIES` of
/// its log, if there is one.
fn caught_up_learner(raft: &Raft, except: Option<NodeId>) -> Option<NodeId> {
    let m = raft.metrics().borrow().clone();
    let last = m.last_log_index.unwrap_or(0);
    let membership = m.membership_config.membership();
    membership.learner_ids().filter(|l| Some(*l) != except).find(|learner| {
        m.replication
            .as_ref()
            .and_then(|r| r.get(learner))
            .copied()
            .flatten()
            .is_some_and(|matched| matched.index + CAUGHT_UP_ENTRIES >= last)
    })
}

/// The learner to take voter `removed`'s place in the shard `raft` leads: a caught-up one,
/// else the one furthest along (the change commits with the remaining voters either way; a
/// lagging learner catches up as a voter). A learner the leader has never reached is not
/// chosen: it may be gone.
fn replacement(raft: &Raft, removed: NodeId) -> Option<NodeId> {
    if let Some(learner) = caught_up_learner(raft, Some(removed)) {
        return Some(learner);
    }
    let m = raft.metrics().borrow().clone();
    let replication = m.replication.as_ref()?;
    m.membership_config
        .membership()
        .learner_ids()
        .filter(|l| *l != removed)
        .filter_map(|l| replication.get(&l).copied().flatten().map(|matched| (matched.index, l)))
        .max()
        .map(|(_, l)| l)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Every address the seeds name: a DNS name may stand for several nodes. A seed that does
/// not resolve now is kept as it is (it may resolve later).
async fn resolve(seeds: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for seed in seeds {
        match tokio::net::lookup_host(seed.as_str()).await {
            Ok(addrs) => {
                let before = out.len();
                out.extend(addrs.map(|a| a.to_string()));
                if out.len() == before {
                    out.push(seed.clone());
                }
            }
            Err(_) => out.push(seed.clone()),
        }
    }
    out.dedup();
    out
}

/// Whether this start bootstraps (or finishes a bootstrap a crash interrupted). A bootstrap
/// is marked before it changes anything and unmarked once finished, and the cluster's shape is
/// recorded first, so a start after a crash in between (with or without --bootstrap) finishes
/// it.
fn begin_bootstrap(
    vfs: &dyn Vfs,
    config: &ClusterConfig,
    membership: &Membership,
) -> Result<bool, ClusterError> {
    let pending = vfs.exists(&config.data_dir.join(BOOTSTRAP_PENDING_FILE))?;
    let recorded = vfs.exists(&config.data_dir.join(Membership::FILE))?;
    let bootstrapping = pending || matches!(config.start, Start::Bootstrap { .. }) && !recorded;
    if bootstrapping {
        converge_storage::node::write_atomically(
            vfs,
            &config.data_dir,
            BOOTSTRAP_PENDING_FILE,
            b"a bootstrap began; the next start finishes it\n",
        )
        .map_err(|e| ClusterError::Config(e.to_string()))?;
        membership.write(vfs, &config.data_dir)?;
    }
    Ok(bootstrapping)
}

/// openraft's configuration for every shard.
fn raft_config(timing: Timing) -> Result<Config, ClusterError> {
    Config {
        cluster_name: "converge".into(),
        heartbeat_interval: millis(timing.heartbeat),
        election_timeout_min: millis(timing.election_min),
        election_timeout_max: millis(timing.election_max),
        // Never snapshot, never purge: a ledger keeps everything, and a new member catches up
        // by replaying the log.
        snapshot_policy: SnapshotPolicy::Never,
        replication_lag_threshold: u64::MAX,
        max_in_snapshot_log_to_keep: u64::MAX,
        max_payload_entries: 512,
        ..Config::default()
    }
    .validate()
    .map_err(|e| ClusterError::Config(e.to_string()))
}

/// Refuses a data directory this start would misuse (CONTRACT §5, safety rules): a node
/// joining with contexts of its own (the cluster's log would be replayed on top of entries no
/// other node has), or a member whose Raft state is gone while its identity remains (with no
/// log and no vote it could vote twice in one term, or for a leader missing what it had
/// acknowledged).
fn check_directory(
    ledger: &Ledger,
    vfs: &dyn Vfs,
    config: &ClusterConfig,
    shards: u32,
) -> Result<(), ClusterError> {
    let dir = &config.data_dir;
    let recorded = vfs.exists(&dir.join(Membership::FILE))?;
    let pending = vfs.exists(&dir.join(BOOTSTRAP_PENDING_FILE))?;
    if let Start::Join(_) = config.start
        && !recorded
    {
        if pending {
            return Err(ClusterError::Config(format!(
                "{} holds a cluster of its own whose bootstrap did not finish; it cannot join another. Start it with --bootstrap to finish, or join with an empty data directory",
                dir.display()
            )));
        }
        let contexts = ledger.context_ids().map_err(|e| ClusterError::Config(e.to_string()))?;
        if let Some(first) = contexts.first() {
            return Err(ClusterError::Config(format!(
                "{} holds {} contexts (the first: {first:?}); a node that joins takes the cluster's history and must start empty. Join with an empty --data-dir; to bring these contexts into a cluster, bootstrap one from this directory (--bootstrap) or load their snapshots into the cluster",
                dir.display(),
                contexts.len()
            )));
        }
    }
    let raft = dir.join("raft");
    if recorded && !pending && !NodeLog::exists(vfs, &raft)? {
        // A directory from before the node log has each shard's log instead (copied in at
        // open); either will do.
        let mut legacy = true;
        for shard in 0..shards {
            legacy &= vfs.exists(&raft.join(format!("shard-{shard}")).join("log"))?;
        }
        if !legacy {
            return Err(ClusterError::Config(format!(
                "the Raft log ({}) is missing while this node's identity remains: a node that lost its Raft state must not rejoin under the same identity (it could vote twice, or for a leader without what it acknowledged). Restore it, or wipe the whole data directory and join as a new node",
                raft.join("log").display()
            )));
        }
    }
    Ok(())
}

/// The cluster's shape: as this node recorded it, else as `config.start` says (bootstrapping,
/// or asked of a member when joining).
async fn membership(
    vfs: &dyn Vfs,
    config: &ClusterConfig,
    peers: &Peers,
    own_id: &str,
) -> Result<Membership, ClusterError> {
    let recorded = Membership::read(vfs, &config.data_dir)?;
    let membership = match (&config.start, recorded) {
        (Start::Join(seeds), Some(recorded)) => {
            same_cluster(&recorded, peers, seeds, &config.data_dir).await?;
            recorded
        }
        (_, Some(recorded)) => recorded,
        (Start::Bootstrap { shards, voters }, None) => {
            Membership { shards: *shards, voters: *voters, id: Some(own_id.to_string()) }
        }
        (Start::Join(seeds), None) => ask_membership(peers, seeds, ASK_ROUNDS).await?,
        (Start::Restart, None) => {
            return Err(ClusterError::Config(format!(
                "{} is not a cluster node's data directory: start it with --bootstrap (a new cluster) or --join ADDR (an existing one)",
                config.data_dir.display()
            )));
        }
    };
    if membership.shards == 0 || membership.voters == 0 {
        return Err(ClusterError::Config("shards and voters must be at least 1".into()));
    }
    Ok(membership)
}

/// How many rounds over the seeds a joining node asks before it gives up, a second apart.
const ASK_ROUNDS: u32 = 30;

/// A node restarted with `--join` whose directory already records a cluster: the seeds must
/// belong to that cluster. When none answers within a few seconds the node starts anyway (the
/// whole cluster may be restarting); its join requests carry the id, which a member of
/// another cluster refuses.
async fn same_cluster(
    recorded: &Membership,
    peers: &Peers,
    seeds: &[String],
    dir: &Path,
) -> Result<(), ClusterError> {
    let Some(ours) = &recorded.id else { return Ok(()) };
    let Ok(theirs) = ask_membership(peers, seeds, 3).await else { return Ok(()) };
    match theirs.id {
        Some(theirs) if &theirs != ours => Err(ClusterError::Config(format!(
            "{} belongs to cluster {ours}, but {} belongs to cluster {theirs}: a node holds one cluster's state and never joins another. Start it without --join to rejoin its own cluster, or with an empty --data-dir to join this one as a new node",
            dir.display(),
            seeds.join(",")
        ))),
        _ => Ok(()),
    }
}

/// The shard and voter counts and the id of the cluster the seeds belong to, asked for
/// `rounds` times over the seeds at most.
async fn ask_membership(
    peers: &Peers,
    seeds: &[String],
    rounds: u32,
) -> Result<Membership, ClusterError> {
    let mut last_error = String::from("no seed address given");
    for attempt in 0..rounds {
        for seed in &resolve(seeds).await {
            let Ok(mut client) = peers.client(seed) else { continue };
            match client.status(peers.request(pb::StatusRequest {}, Duration::from_secs(2))).await {
                Ok(response) => {
                    let status = response.into_inner();
                    let shards = u32::try_from(status.shards.len())
                        .map_err(|_| ClusterError::Config("too many shards".into()))?;
                    let id = Some(status.cluster_id).filter(|id| !id.is_empty());
                    return Ok(Membership { shards, voters: status.voters_wanted, id });
                }
                Err(e) => last_error = format!("{seed}: {}", e.message()),
            }
        }
        if attempt + 1 < rounds {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    Err(ClusterError::Config(format!("no member of the cluster answered: {last_error}")))
}
