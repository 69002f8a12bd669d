//! The cluster fault suite: real `converge-ledger serve` processes, faults injected while a
//! workload appends, reads and watches, and a checker over the recorded history and the final
//! state of every node (see [`checker`]).
//!
//! A run starts three nodes (one bootstraps, two join), starts the workload, then applies
//! faults one after another: each is held for a while, healed, and followed by a pause in
//! which the cluster must recover. At the end every fault is healed, every node restarted, the
//! workload stopped, the nodes left to converge, and the checker reads every node.
//! [`Mode::Ci`] applies every fault once; [`Mode::Minutes`] random faults for as long as
//! asked. A run is replayed by its seed (the faults chosen and their targets; timing differs).

pub mod checker;
mod net;
mod nodes;
mod workload;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use converge_core::Hash;
use converge_ledger::{GetRequest, LedgerApi as _};
use converge_storage::vfs::sim::Rng;

use self::nodes::{Nodes, Start};
use self::workload::{Servers, Workload};

/// Every fault the suite applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL the leader of a shard under load, restart it after a while.
    KillLeader,
    /// SIGKILL a follower.
    KillFollower,
    /// SIGKILL every node at once, restart them all.
    KillAll,
    /// SIGSTOP the leader for longer than an election timeout, then SIGCONT.
    PauseLeader,
    /// Cut the leader off from the other nodes (clients still reach it).
    IsolateLeader,
    /// Split the nodes into a majority and a minority.
    MajorityMinority,
    /// Two nodes cannot reach each other; the third reaches both.
    Bridge,
    /// The leader hears nobody, while everybody hears it.
    OneWay,
    /// Every node loses a quarter of the packets it receives from other nodes.
    PacketLoss,
    /// A fourth node joins, then the leader is removed and stopped.
    AddNodeRemoveLeader,
    /// A follower's data directory is wiped: it is removed and rejoins as a new node.
    WipeFollower,
}

impl Fault {
    /// All of them, in the order the CI mode applies them.
    pub const ALL: [Self; 11] = [
        Self::KillLeader,
        Self::KillFollower,
        Self::PauseLeader,
        Self::IsolateLeader,
        Self::MajorityMinority,
        Self::Bridge,
        Self::OneWay,
        Self::PacketLoss,
        Self::KillAll,
        Self::WipeFollower,
        Self::AddNodeRemoveLeader,
    ];

    /// The fault named `name`, spelled as in the summary (`KillLeader`) or in kebab case
    /// (`kill-leader`), any case.
    pub fn named(name: &str) -> Option<Self> {
        let wanted: String = name.chars().filter(|c| *c != '-').collect();
        Self::ALL.into_iter().find(|f| format!("{f:?}").eq_ignore_ascii_case(&wanted))
    }

    fn needs_network(self) -> bool {
        matches!(
            self,
            Self::IsolateLeader
                | Self::MajorityMinority
                | Self::Bridge
                | Self::OneWay
                | Self::PacketLoss
        )
    }
}

/// How long a run goes on.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Every fault once.
    Ci,
    /// Random faults for this long.
    Minutes(u64),
}

/// A run's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `converge-ledger` binary.
    pub binary: PathBuf,
    /// Chooses the faults and their targets.
    pub seed: u64,
    /// How long it goes on.
    pub mode: Mode,
    /// Shards of the cluster.
    pub shards: u32,
    /// How long a fault is held.
    pub hold: Duration,
    /// How long the cluster gets to recover after each fault.
    pub recover: Duration,
    /// The faults a timed run picks from (all of them unless narrowed, to study one).
    pub faults: Vec<Fault>,
}

impl Config {
    /// The CI settings for `binary` and `seed`.
    pub fn ci(binary: PathBuf, seed: u64) -> Self {
        Self {
            binary,
            seed,
            mode: Mode::Ci,
            shards: 4,
            hold: Duration::from_secs(4),
            recover: Duration::from_secs(3),
            faults: Fault::ALL.to_vec(),
        }
    }
}

/// What a run did and found.
#[derive(Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Faults applied, in order.
    pub faults: Vec<Fault>,
    /// Faults skipped (no network namespaces).
    pub skipped: Vec<Fault>,
    /// The checker's verdict.
    pub verdict: checker::Verdict,
    /// Appends acknowledged.
    pub acked: u64,
    /// How long it took.
    pub took: Duration,
    /// Seconds from each leader kill to the next acknowledged append on that shard.
    pub failovers: Vec<Duration>,
}

const CONTEXTS: usize = 6;
const WRITERS: usize = 12;
const SLOTS: usize = 8;

/// Runs the suite.
pub async fn run(config: Config) -> Report {
    let started = Instant::now();
    let mut rng = Rng::new(config.seed);
    let mut nodes = Nodes::new(config.binary.clone(), SLOTS, config.shards);
    let contexts = workload::contexts(CONTEXTS);
    nodes.start(0, &Start::Bootstrap);
    nodes.await_member(0, Duration::from_secs(30)).await;
    let seed_addr = nodes.slots[0].addr.to_string();
    for i in 1..3 {
        nodes.start(i, &Start::JoinVia(seed_addr.clone()));
    }
    for i in 1..3 {
        nodes.await_member(i, Duration::from_secs(60)).await;
    }
    let servers = std::sync::Arc::new(Servers::default());
    servers.set(nodes.live().iter().map(|i| nodes.server(*i)).collect());
    let load = Workload::start(config.seed, WRITERS, &contexts, &servers);
    let mut nemesis = Nemesis {
        nodes,
        servers,
        rng: &mut rng,
        config: &config,
        failovers: Vec::new(),
        acked: std::sync::Arc::clone(&load.acked_first),
        shard: converge_cluster::shard_of(&contexts[0], config.shards),
    };
    let (mut faults, mut skipped) = (Vec::new(), Vec::new());
    let plan: Vec<Fault> = match config.mode {
        Mode::Ci => Fault::ALL.to_vec(),
        Mode::Minutes(_) => Vec::new(),
    };
    let deadline = match config.mode {
        Mode::Ci => None,
        Mode::Minutes(m) => Some(started + Duration::from_secs(m * 60)),
    };
    let mut next = 0;
    loop {
        let fault = match deadline {
            None if next < plan.len() => plan[next],
            Some(deadline) if Instant::now() < deadline => {
                *nemesis.rng.pick(&nemesis.config.faults)
            }
            _ => break,
        };
        next += 1;
        if fault.needs_network() && !nemesis.nodes.net.can_partition() {
            skipped.push(fault);
            continue;
        }
        eprintln!(
            "cluster faults: {fault:?} (acknowledged so far: {})",
            load.acked.load(std::sync::atomic::Ordering::Relaxed)
        );
        nemesis.apply(fault).await;
        faults.push(fault);
    }
    nemesis.heal_all().await;
    tokio::time::sleep(nemesis.config.recover).await;
    let acked = load.acked.load(std::sync::atomic::Ordering::Relaxed);
    let history = load.stop().await;
    let (finals, proofs) = nemesis.read_final(&contexts).await;
    let verdict = checker::check(&history, &finals, &proofs);
    let failovers = nemesis.failovers.clone();
    if !verdict.violations.is_empty() {
        let keep = nemesis.nodes.keep_logs();
        eprintln!("cluster faults: node logs kept in {}", keep.display());
    }
    Report {
        seed: config.seed,
        faults,
        skipped,
        verdict,
        acked,
        took: started.elapsed(),
        failovers,
    }
}

struct Nemesis<'a> {
    nodes: Nodes,
    servers: std::sync::Arc<Servers>,
    rng: &'a mut Rng,
    config: &'a Config,
    failovers: Vec<Duration>,
    /// When the latest-sent acknowledged append to the first context was sent.
    acked: std::sync::Arc<std::sync::Mutex<Option<Instant>>>,
    /// The first context's shard: the faults aim at its leader.
    shard: u32,
}

impl Nemesis<'_> {
    fn publish(&self) {
        self.servers.set(self.nodes.live().iter().map(|i| self.nodes.server(*i)).collect());
    }

    /// The slot leading the first context's shard, and the others.
    async fn leader_and_followers(&self) -> Option<(usize, Vec<usize>)> {
        let leader = self.nodes.slot_of(self.nodes.leader_of(self.shard).await?)?;
        let followers = self.nodes.members().into_iter().filter(|i| *i != leader).collect();
        Some((leader, followers))
    }

    /// Kills the leader of the first context's shard, times that shard's failover, and
    /// restarts it once the hold is over.
    async fn kill_leader(&mut self, leader: usize) {
        let hold = self.config.hold;
        let killed = Instant::now();
        self.nodes.kill(leader);
        self.publish();
        // The time to the first acknowledged append of the shard it led that was sent
        // after the kill (one sent before may have been committed before it).
        let acked_after = |acked: &std::sync::Mutex<Option<Instant>>| {
            acked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_some_and(|t| t > killed)
        };
        while !acked_after(&self.acked) && killed.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = killed.elapsed();
        eprintln!(
            "cluster faults: kill -9 of shard {}'s leader: an append sent after it acknowledged in {:.2}s",
            self.shard,
            took.as_secs_f64()
        );
        self.failovers.push(took);
        tokio::time::sleep(hold.saturating_sub(killed.elapsed())).await;
        self.nodes.start(leader, &Start::Restart);
    }

    async fn apply(&mut self, fault: Fault) {
        let Some((leader, followers)) = self.leader_and_followers().await else {
            eprintln!("cluster faults: no leader known; skipping {fault:?} this time");
            tokio::time::sleep(self.config.recover).await;
            return;
        };
        let hold = self.config.hold;
        match fault {
            Fault::KillLeader => self.kill_leader(leader).await,
            Fault::KillFollower => {
                let f = followers[self.rng.index(followers.len())];
                self.nodes.kill(f);
                self.publish();
                tokio::time::sleep(hold).await;
                self.nodes.start(f, &Start::Restart);
            }
            Fault::KillAll => {
                for i in self.nodes.members() {
                    self.nodes.kill(i);
                }
                self.publish();
                tokio::time::sleep(Duration::from_millis(500)).await;
                for i in self.nodes.members() {
                    self.nodes.start(i, &Start::Restart);
                }
            }
            Fault::PauseLeader => {
                self.nodes.pause(leader);
                tokio::time::sleep(hold).await;
                self.nodes.resume(leader);
            }
            Fault::IsolateLeader
            | Fault::MajorityMinority
            | Fault::Bridge
            | Fault::OneWay
            | Fault::PacketLoss => self.partition(fault, leader, &followers).await,
            Fault::WipeFollower => {
                let f = followers[self.rng.index(followers.len())];
                let old = self.nodes.slots[f].id.expect("a member has an id");
                self.nodes.kill(f);
                self.publish();
                self.nodes.wipe(f);
                self.servers.renew(&self.nodes.server(f));
                self.remove(old).await;
                let seed = self.nodes.slots[leader].addr.to_string();
                self.nodes.start(f, &Start::JoinVia(seed));
                self.nodes.await_member(f, Duration::from_secs(120)).await;
                // Promoted in every shard before the next fault (see AddNodeRemoveLeader).
                self.await_voters(3).await;
            }
            Fault::AddNodeRemoveLeader => {
                // A slot never used, or one whose node was removed (wiped: a new node there).
                let free = |retired: bool| {
                    (0..self.nodes.slots.len()).find(|i| {
                        let slot = &self.nodes.slots[*i];
                        slot.id.is_some() == retired
                            && slot.retired == retired
                            && !self.nodes.up(*i)
                    })
                };
                let Some(new) = free(false).or_else(|| free(true)) else {
                    eprintln!("cluster faults: no free slot to add a node; skipping");
                    return;
                };
                if self.nodes.slots[new].retired {
                    self.nodes.wipe(new);
                    self.servers.renew(&self.nodes.server(new));
                    self.nodes.slots[new].retired = false;
                }
                let seed = self.nodes.slots[followers[0]].addr.to_string();
                self.nodes.start(new, &Start::JoinVia(seed));
                self.nodes.await_member(new, Duration::from_secs(120)).await;
                self.publish();
                // Caught up, the new node takes the removed leader's place as a voter in the
                // same membership change.
                self.await_caught_up(new).await;
                let old = self.nodes.slots[leader].id.expect("a member has an id");
                self.remove(old).await;
                self.nodes.kill(leader);
                self.nodes.slots[leader].retired = true;
                self.publish();
                // The new node is promoted in every shard before the next fault: a shard left
                // with two voters could not lose one (that would be the fault suite's doing).
                self.await_voters(3).await;
            }
        }
        self.heal();
        tokio::time::sleep(self.config.recover).await;
    }

    /// Applies a network fault and holds it.
    async fn partition(&mut self, fault: Fault, leader: usize, followers: &[usize]) {
        let hold = self.config.hold;
        let net_error = |e: String| panic!("the test network failed: {e}");
        match fault {
            Fault::IsolateLeader => {
                self.nodes.net.block(leader, followers, true).unwrap_or_else(net_error);
                for f in followers {
                    self.nodes.net.block(*f, &[leader], true).unwrap_or_else(net_error);
                }
                tokio::time::sleep(hold).await;
            }
            Fault::MajorityMinority => {
                // The leader with one follower against the rest, or alone against the rest.
                let members = self.nodes.members();
                let cut = 1 + self.rng.index(members.len() / 2);
                let (minority, majority) = members.split_at(cut);
                for a in minority {
                    self.nodes.net.block(*a, majority, true).unwrap_or_else(net_error);
                }
                for b in majority {
                    self.nodes.net.block(*b, minority, true).unwrap_or_else(net_error);
                }
                tokio::time::sleep(hold).await;
            }
            Fault::Bridge => {
                if let [a, b, ..] = *followers {
                    // The leader bridges two followers that cannot reach each other, then the
                    // leader itself is one of the cut pair.
                    self.nodes.net.block(a, &[b], true).unwrap_or_else(net_error);
                    self.nodes.net.block(b, &[a], true).unwrap_or_else(net_error);
                    tokio::time::sleep(hold / 2).await;
                    self.nodes.net.heal().unwrap_or_else(net_error);
                    self.nodes.net.block(leader, &[a], true).unwrap_or_else(net_error);
                    self.nodes.net.block(a, &[leader], true).unwrap_or_else(net_error);
                    tokio::time::sleep(hold / 2).await;
                }
            }
            Fault::OneWay => {
                self.nodes.net.block(leader, followers, false).unwrap_or_else(net_error);
                tokio::time::sleep(hold).await;
            }
            Fault::PacketLoss => {
                for i in self.nodes.members() {
                    self.nodes.net.lose(i, 25).unwrap_or_else(net_error);
                }
                tokio::time::sleep(hold).await;
            }
            _ => unreachable!("not a network fault: {fault:?}"),
        }
    }

    /// Waits (up to two minutes) until node `i` has applied about what its shards committed.
    async fn await_caught_up(&self, i: usize) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(120) {
            if let Some(client) = self.nodes.client(i).await
                && let Ok(Ok(status)) =
                    tokio::time::timeout(Duration::from_secs(2), client.cluster_status()).await
                && !status.shards.is_empty()
                && status.shards.iter().all(|s| s.applied + 64 >= s.committed && s.committed > 0)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("cluster faults: node {} did not catch up in two minutes; going on", i + 1);
    }

    /// Waits (up to two minutes) until some live node sees `voters` voters.
    async fn await_voters(&self, voters: usize) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(120) {
            for i in self.nodes.live() {
                if let Some(client) = self.nodes.client(i).await
                    && let Ok(Ok(status)) =
                        tokio::time::timeout(Duration::from_secs(2), client.cluster_status()).await
                    && status.nodes.iter().filter(|n| n.voter).count() >= voters
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("cluster faults: fewer than {voters} voters after two minutes; going on");
    }

    /// `cluster remove ID` through some live node other than it, retried until it works.
    async fn remove(&self, id: u64) {
        let started = Instant::now();
        loop {
            for i in self.nodes.live() {
                if self.nodes.slots[i].id == Some(id) {
                    continue;
                }
                if let Some(client) = self.nodes.client(i).await
                    && let Ok(Ok(())) =
                        tokio::time::timeout(Duration::from_secs(60), client.cluster_remove(id))
                            .await
                {
                    return;
                }
            }
            if started.elapsed() > Duration::from_secs(120) {
                for i in self.nodes.live() {
                    let log = std::fs::read_to_string(self.nodes.log_path(i)).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(60).collect();
                    eprintln!("--- node {} (last lines) ---", i + 1);
                    for line in tail.iter().rev() {
                        eprintln!("{line}");
                    }
                }
                panic!("could not remove node {id:016x} (the live nodes' logs are above)");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The network whole, every member process running.
    fn heal(&mut self) {
        self.nodes.net.heal().expect("heal the network");
        for i in self.nodes.members() {
            self.nodes.resume(i);
        }
        self.publish();
    }

    async fn heal_all(&mut self) {
        self.heal();
        for i in self.nodes.members() {
            if !self.nodes.up(i) {
                self.nodes.start(i, &Start::Restart);
            }
        }
        for i in self.nodes.members() {
            self.nodes.await_member(i, Duration::from_secs(120)).await;
        }
        self.publish();
    }

    /// Every member's final state once they agree (or after a minute, as they are).
    async fn read_final(
        &self,
        contexts: &[String],
    ) -> (Vec<(String, BTreeMap<String, checker::Final>)>, BTreeMap<String, (u64, Hash, Vec<Hash>)>)
    {
        let started = Instant::now();
        loop {
            let mut finals = Vec::new();
            for i in self.nodes.members() {
                let mut state = BTreeMap::new();
                if let Some(client) = self.nodes.client(i).await {
                    for context in contexts {
                        if let Some(f) = read_context(&client, context).await {
                            state.insert(context.clone(), f);
                        }
                    }
                }
                finals.push((format!("node-{}", i + 1), state));
            }
            let agree = finals.windows(2).all(|w| w[0].1 == w[1].1)
                && finals.iter().all(|(_, s)| s.len() == contexts.len());
            if agree || started.elapsed() > Duration::from_secs(60) {
                let mut proofs = BTreeMap::new();
                if let Some(i) = self.nodes.members().first()
                    && let Some(client) = self.nodes.client(*i).await
                {
                    for context in contexts {
                        let size = finals[0].1.get(context).map_or(0, |f| f.hashes.len() as u64);
                        if size >= 2 {
                            let from = size / 2;
                            if let Ok(proof) = client.prove_consistency(context, from, size).await {
                                proofs
                                    .insert(context.clone(), (from, proof.from_root, proof.hashes));
                            }
                        }
                    }
                }
                return (finals, proofs);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

async fn read_context(client: &converge_client::Client, context: &str) -> Option<checker::Final> {
    let head = client.tree_head(context).await.ok()?;
    let mut hashes = Vec::new();
    let mut payloads = Vec::new();
    let mut after = 0;
    while after < head.tree_size {
        let got = client
            .get(GetRequest {
                context_id: context.to_string(),
                after_sequence: after,
                ..GetRequest::default()
            })
            .await
            .ok()?;
        if got.entries.is_empty() {
            break;
        }
        for entry in &got.entries {
            after = entry.sequence().0;
            if after > head.tree_size {
                break;
            }
            hashes.push(entry.content_hash());
            payloads.push(String::from_utf8_lossy(entry.payload()).into_owned());
        }
    }
    hashes.truncate(usize::try_from(head.tree_size).ok()?);
    payloads.truncate(hashes.len());
    Some(checker::Final { hashes, payloads, root: head.root_hash })
}

impl Report {
    /// A few lines for people: what ran, what was checked, what was found.
    pub fn summary(&self) -> String {
        let mut failovers = self.failovers.clone();
        failovers.sort();
        // The q-th quantile (per cent), nearest rank.
        let at = |q: usize| {
            let rank = (failovers.len() * q).div_ceil(100).max(1) - 1;
            failovers
                .get(rank)
                .map_or_else(|| "-".to_string(), |d| format!("{:.2}s", d.as_secs_f64()))
        };
        let mut out = format!(
            "seed {}: {} faults in {:.0}s ({} skipped: {:?})\n\
             appends acknowledged {}, checked {}; unknown outcome {} ({} of them written)\n\
             tree heads checked {}, entries watched {}, session reads checked {} ({} after the client's own append)\n\
             kill -9 of a shard's leader to that shard's next append sent and acknowledged: {} kills, p50 {}, p99 {}, max {}\n",
            self.seed,
            self.faults.len(),
            self.took.as_secs_f64(),
            self.skipped.len(),
            self.skipped,
            self.acked,
            self.verdict.acked,
            self.verdict.unknown.0,
            self.verdict.unknown.1,
            self.verdict.heads,
            self.verdict.watched,
            self.verdict.sessions.0,
            self.verdict.sessions.1,
            failovers.len(),
            at(50),
            at(99),
            at(100),
        );
        if self.verdict.violations.is_empty() {
            out.push_str("checker: no violations");
        } else {
            let _ = writeln!(out, "checker: {} VIOLATIONS", self.verdict.violations.len());
            for v in &self.verdict.violations {
                let _ = writeln!(out, "  - {v}");
            }
        }
        out
    }
}
