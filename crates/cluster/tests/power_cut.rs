//! Simulated power cuts (the one fault the process-level suite cannot make: `kill -9` keeps
//! the page cache). Three nodes run in this process, each on its own simulated disk and its
//! own loopback address, talking gRPC. Appends go through all three while power is cut again
//! and again, under every pattern a cut can leave unsynced writes in, in turn: on the leader
//! of a shard, on a node chosen at random (clients write to every node, so often to the one
//! cut), on a node whose disk has begun to fail (an fsync or a read fails, or the disk fills),
//! and on all three at once. Each comes back on what its disk kept. The ledger's and the
//! Raft log's writes both go through the disk, so a cut can lose the tail of either. An
//! acknowledgement counts only if the node that gave it still had power when it arrived.
//!
//! A cut looks like one from outside: its disk is imaged at the instant of the cut, and from
//! then on nothing the node sends arrives and nothing reaches it (every connection with it
//! fails on its next read or write, and dies), while it goes on running against a disk that
//! is gone until it stops.
//!
//! At each cut of one node, its Raft log as the cut left it must hold every entry a leader
//! had its acknowledgement for. Then, once the cluster has settled, every node must hold
//! byte-identical entries and equal tree heads, gap-free; every acknowledged append must be
//! there at the sequence it was acknowledged with; no append may be there twice.
//!
//! `CONVERGE_POWER_CUT_MINUTES=N cargo test -p converge-cluster --release --test power_cut --
//! --ignored` runs cuts for N minutes (seed from `CONVERGE_POWER_CUT_SEED`, printed).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use converge_api::{AppendRequest, GetRequest, LedgerApi as _, LedgerError};
use converge_cluster::limits::ClusterLimits;
use converge_cluster::log_store::NodeLog;
use converge_cluster::state_machine::saved_position;
use converge_cluster::{Cluster, ClusterConfig, Start, Timing};
use converge_ledger::{Ledger, LedgerConfig};
use converge_storage::StoreConfig;
use converge_storage::vfs::sim::{CrashPattern, Rng, SimDisk};
use converge_storage::vfs::{OpenMode, Vfs};
use futures_util::StreamExt as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::{Connected, TcpIncoming};

const CONTEXTS: usize = 6;
const APPENDERS: usize = 6;

/// Which hosts have power: each node lives on its own loopback address (127.0.0.1, .2, .3),
/// listens and dials its peers from it, and each incarnation of a node gets a switch of its
/// own.
#[derive(Clone, Default)]
struct Mains(Arc<Mutex<HashMap<IpAddr, Arc<AtomicBool>>>>);

impl Mains {
    /// A new incarnation on `host`, with power.
    fn switch_on(&self, host: IpAddr) -> Arc<AtomicBool> {
        let switch = Arc::new(AtomicBool::new(true));
        self.0.lock().unwrap_or_else(PoisonError::into_inner).insert(host, Arc::clone(&switch));
        switch
    }

    /// The switch of the incarnation on `host` now (one that stays on for a host of none).
    fn switch_of(&self, host: IpAddr) -> Arc<AtomicBool> {
        let hosts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        hosts.get(&host).cloned().unwrap_or_else(|| Arc::new(AtomicBool::new(true)))
    }
}

/// A connection a node accepted, which works only while both ends have power: from the cut of
/// either on, every read and write fails, so the connection dies as it would with the machine
/// (a peer then connects again, to whatever listens on the address next). Both directions of
/// a cut node's traffic end so: what it serves, and what it sends to its peers.
struct Powered {
    stream: tokio::net::TcpStream,
    ends: [Arc<AtomicBool>; 2],
}

impl Powered {
    fn check(&self) -> std::io::Result<()> {
        if self.ends.iter().all(|end| end.load(Ordering::SeqCst)) {
            Ok(())
        } else {
            Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "the power is off"))
        }
    }
}

impl Connected for Powered {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl AsyncRead for Powered {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.check()?;
        let this = self.get_mut();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        // Checked again once read: bytes a cut node sent after its cut are never taken in,
        // however the reader's check and read interleave with the cut.
        this.check()?;
        read
    }
}

impl AsyncWrite for Powered {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// One node of the cluster, on its own simulated disk.
struct Node {
    cluster: Cluster,
    ledger: Ledger,
    disk: SimDisk,
    dir: PathBuf,
    address: SocketAddr,
    power: Arc<AtomicBool>,
    server: tokio::task::JoinHandle<()>,
}

fn timing() -> Timing {
    Timing {
        heartbeat: Duration::from_millis(50),
        election_min: Duration::from_millis(300),
        election_max: Duration::from_millis(600),
    }
}

impl Node {
    /// Starts a node on `address` (a loopback address of its own, port 0 for any).
    async fn start(
        mains: &Mains,
        disk: SimDisk,
        dir: PathBuf,
        address: SocketAddr,
        start: Start,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind(address).await.expect("bind a loopback port");
        let address = listener.local_addr().expect("a bound address");
        let power = mains.switch_on(address.ip());
        let storage = converge_cluster::ledger_storage(StoreConfig {
            vfs: Arc::new(disk.clone()),
            // The index is on the real disk, written only by checkpoints: none are taken, so
            // every incarnation rebuilds it from the log on its simulated disk.
            checkpoint_interval: Duration::from_secs(24 * 3600),
            checkpoint_bytes: u64::MAX,
            ..StoreConfig::disk(&dir)
        });
        let ledger = Ledger::open(LedgerConfig::with_storage(storage)).expect("open the ledger");
        let config = ClusterConfig {
            data_dir: dir.clone(),
            advertise: address.to_string(),
            start,
            peer_token: None,
            peer_tls: None,
            peer_source: Some(address.ip()),
            timing: timing(),
            limits: ClusterLimits::of_node(&converge_core::Limits::default()),
        };
        let cluster = Cluster::start(ledger.clone(), config).await.expect("start the node");
        let (on, mains) = (Arc::clone(&power), mains.clone());
        let incoming = TcpIncoming::from(listener).map(move |stream| {
            stream.map(|stream| {
                let far = stream.peer_addr().map(|a| mains.switch_of(a.ip()));
                let far = far.unwrap_or_else(|_| Arc::new(AtomicBool::new(false)));
                Powered { stream, ends: [Arc::clone(&on), far] }
            })
        });
        let service = cluster.peer_service();
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        Self { cluster, ledger, disk, dir, address, power, server }
    }

    /// Cuts the power: from this instant the node takes in nothing and nothing it sends
    /// arrives, and its disk is what a cut now leaves under `pattern` (what is not yet synced
    /// may be lost). Then its Raft and ledger stop, writing to a disk that is gone. Returns
    /// the disk it comes back on.
    async fn cut(self, rng: &mut Rng, pattern: CrashPattern) -> Cut {
        self.power.store(false, Ordering::SeqCst);
        // At most what it showed when the power went: its ledger only grows until the cut.
        let shown = shown(&self.ledger).await;
        let kept = self.disk.with_cut_point(|at| at.crash(rng, pattern));
        self.server.abort();
        let _ = self.server.await;
        self.cluster.shutdown().await;
        let _ = self.ledger.close().await;
        Cut { disk: kept, dir: self.dir, address: self.address, shown }
    }

    /// Whether this node votes in every shard.
    async fn is_voter(&self) -> bool {
        let status = self.cluster.status().await;
        !status.shards.is_empty()
            && status.shards.iter().all(|s| s.role == "follower" || s.role == "leader")
    }
}

/// Copies the tree `from` to `to` on `disk` (a node comes back in a new directory: its index
/// lives on the real disk, and starts empty there).
/// A node whose power was cut: the disk it comes back on, and what it showed at the cut.
struct Cut {
    disk: SimDisk,
    dir: PathBuf,
    address: SocketAddr,
    /// Per context, the size of its tree as the node's ledger showed it.
    shown: BTreeMap<String, u64>,
}

/// Per context, the size of its tree as `ledger` shows it now.
async fn shown(ledger: &Ledger) -> BTreeMap<String, u64> {
    let mut sizes = BTreeMap::new();
    for c in 0..CONTEXTS {
        let context = format!("ctx-{c}");
        if let Ok(head) = ledger.tree_head(&context).await {
            sizes.insert(context, head.tree_size);
        }
    }
    sizes
}

/// Once `node` answers reads again after a cut, it shows every context at least as large as
/// it did at the cut: a node's view never shrinks (CONTRACT §5), though its ledger may have
/// lost its last writes (it writes them again from its Raft log before it answers).
async fn check_not_shrunk(node: &Node, before: &BTreeMap<String, u64>, pattern: CrashPattern) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for (context, &size) in before {
        loop {
            match node.cluster.tree_head(context).await {
                Ok(head) => {
                    assert!(
                        head.tree_size >= size,
                        "{pattern:?} cut: {} showed {context} at size {size}, after the restart at size {} (its view shrank)",
                        node.address,
                        head.tree_size
                    );
                    break;
                }
                Err(LedgerError::Unavailable(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!(
                    "{pattern:?} cut: {} showed {context} at size {size}, after the restart: {e}",
                    node.address
                ),
            }
        }
    }
}

fn copy_tree(disk: &SimDisk, from: &Path, to: &Path) -> std::io::Result<()> {
    disk.create_dir_all(to)?;
    for name in disk.list(from)? {
        if name == "index" {
            continue;
        }
        let (source, target) = (from.join(&name), to.join(&name));
        if disk.list(&source).is_ok() {
            copy_tree(disk, &source, &target)?;
        } else {
            let bytes = disk.read_file(&source)?;
            let file = disk.open(&target, OpenMode::CreateTruncate)?;
            file.write_all_at(&bytes, 0)?;
            file.sync_all()?;
        }
    }
    disk.sync_dir(to)
}

/// Removes the files of the tree `dir` on `disk`, so a long run holds the data of one
/// incarnation per node rather than of every one (the disk frees them at the next cut).
fn remove_tree(disk: &SimDisk, dir: &Path) -> std::io::Result<()> {
    for name in disk.list(dir)? {
        let path = dir.join(&name);
        if name == "index" {
            continue;
        }
        if disk.list(&path).is_ok() {
            remove_tree(disk, &path)?;
        } else {
            disk.remove_file(&path)?;
        }
    }
    disk.sync_dir(dir)
}

/// What the appenders saw acknowledged: per context, sequence → payload.
type Acked = Arc<Mutex<BTreeMap<String, BTreeMap<u64, Vec<u8>>>>>;

/// The nodes clients write to: each one's cluster and power switch, replaced as it comes
/// back from a cut.
type Doors = Arc<Mutex<Vec<(Cluster, Arc<AtomicBool>)>>>;

/// The doors of `nodes`.
fn doors_of(nodes: &[Node]) -> Vec<(Cluster, Arc<AtomicBool>)> {
    nodes.iter().map(|n| (n.cluster.clone(), Arc::clone(&n.power))).collect()
}

/// Appends through every node until `stop`, each append retried with its `append_id` on the
/// next node when one fails. An acknowledgement from a node whose power went off before it
/// arrived is not counted (a machine without power answers nothing).
fn appenders(
    doors: &Doors,
    stop: &Arc<AtomicBool>,
    acked: &Acked,
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..APPENDERS)
        .map(|task| {
            let (doors, stop, acked) = (Arc::clone(doors), Arc::clone(stop), Arc::clone(acked));
            tokio::spawn(async move {
                let mut done = 0;
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let context =
                        format!("ctx-{}", (task + usize::try_from(n).unwrap_or(0)) % CONTEXTS);
                    let id = format!("appender-{task}-{n}");
                    let payload = format!("{id} {}", "x".repeat(200)).into_bytes();
                    let request = AppendRequest::new(context.clone(), "fact", payload.clone())
                        .with_append_id(id);
                    let started = Instant::now();
                    let mut attempt = 0usize;
                    while started.elapsed() < Duration::from_secs(30) {
                        let (node, power) = {
                            let doors = doors.lock().unwrap_or_else(PoisonError::into_inner);
                            doors[(task + attempt) % doors.len()].clone()
                        };
                        attempt += 1;
                        let answer = tokio::time::timeout(
                            Duration::from_secs(5),
                            node.append(request.clone()),
                        )
                        .await;
                        if let Ok(Ok(entry)) = answer
                            && power.load(Ordering::SeqCst)
                        {
                            acked
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .entry(context.clone())
                                .or_default()
                                .insert(entry.sequence().0, payload.clone());
                            done += 1;
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                done
            })
        })
        .collect()
}

/// Every context as each node holds it, once all three agree (or the last look after 60 s).
async fn settled(nodes: &[&Node]) -> Vec<BTreeMap<String, Vec<Arc<converge_core::Entry>>>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut views = Vec::new();
        for node in nodes {
            let mut view = BTreeMap::new();
            for c in 0..CONTEXTS {
                let context = format!("ctx-{c}");
                let entries = node
                    .ledger
                    .get(GetRequest::all(context.clone()))
                    .await
                    .map(|r| r.entries)
                    .unwrap_or_default();
                view.insert(context, entries);
            }
            views.push(view);
        }
        if views.windows(2).all(|w| w[0] == w[1]) || Instant::now() > deadline {
            return views;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `cuts` power cuts (or cuts for `minutes`) with `seed`; panics on the first violation.
async fn run(seed: u64, cuts: Option<usize>, minutes: Option<u64>) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    println!("power cuts: seed {seed}");
    let mut rng = Rng::new(seed);
    let work = tempfile::tempdir().expect("a temporary directory");
    let disks: Vec<SimDisk> = (0..3).map(|_| SimDisk::new()).collect();
    let mains = Mains::default();
    let host = |n: u8| SocketAddr::from(([127, 0, 0, n], 0));
    let first = Node::start(
        &mains,
        disks[0].clone(),
        work.path().join("node1"),
        host(1),
        Start::Bootstrap { shards: 2, voters: 3 },
    )
    .await;
    let seeds = vec![first.address.to_string()];
    let second = Node::start(
        &mains,
        disks[1].clone(),
        work.path().join("node2"),
        host(2),
        Start::Join(seeds.clone()),
    )
    .await;
    let third = Node::start(
        &mains,
        disks[2].clone(),
        work.path().join("node3-0"),
        host(3),
        Start::Join(seeds),
    )
    .await;
    let joined = Instant::now();
    while !(third.is_voter().await && second.is_voter().await) {
        assert!(joined.elapsed() < Duration::from_secs(60), "nodes 2 and 3 did not become voters");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut nodes = vec![first, second, third];

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::default();
    let doors: Doors = Arc::new(Mutex::new(doors_of(&nodes)));
    let workers = appenders(&doors, &stop, &acked);
    let until = minutes.map(|m| Instant::now() + Duration::from_secs(m * 60));
    let mut made = 0usize;
    loop {
        let more = match (cuts, until) {
            (Some(n), _) => made < n,
            (None, Some(until)) => Instant::now() < until,
            (None, None) => false,
        };
        if !more {
            break;
        }
        // Let it run, then cut at a random moment under load.
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1200))).await;
        // Every pattern comes to every kind of target in turn.
        let pattern = CrashPattern::ALL[(made + made / 4) % CrashPattern::ALL.len()];
        made += 1;
        let dir = |i: usize| work.path().join(format!("node{}-{made}", i + 1));
        let (target, which) = aim(made, &nodes, &mut rng).await;
        if let [one] = which[..] {
            let node = nodes.remove(one);
            let others = [&nodes[0], &nodes[1]];
            let back = cut_and_restart(&mains, node, others, &mut rng, pattern, &dir(one)).await;
            nodes.insert(one, back);
        } else {
            nodes = cut_all_and_restart(&mains, nodes, &mut rng, pattern, dir).await;
        }
        *doors.lock().unwrap_or_else(PoisonError::into_inner) = doors_of(&nodes);
        println!("cut {made} of {target:?} (node {which:?}): {pattern:?}, back up");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let mut appended = 0;
    for worker in workers {
        appended += worker.await.expect("an appender panicked");
    }
    assert!(appended > 0, "no append was acknowledged");

    let views = check(&[&nodes[0], &nodes[1], &nodes[2]], &acked).await;
    println!(
        "{made} cuts, {appended} acknowledged appends, all on every node: {} entries in {} contexts",
        views[0].values().map(Vec::len).sum::<usize>(),
        views[0].len()
    );
}

/// The `made`-th cut's target, in turn: a shard's leader, any node, a node whose disk fails
/// first (the fault injected here, under load), all three; and the nodes it takes down.
async fn aim(made: usize, nodes: &[Node], rng: &mut Rng) -> (Target, Vec<usize>) {
    let target = match made % 4 {
        1 => Target::LeaderOf(u32::try_from(made / 4 % 2).expect("0 or 1")),
        2 => Target::Any(rng.index(3)),
        3 => Target::DiskFault(rng.index(3), DiskFault::ALL[made / 4 % 3]),
        _ => Target::All,
    };
    let which = match target {
        Target::All => (0..3).collect(),
        Target::Any(i) => vec![i],
        Target::DiskFault(i, fault) => {
            fault.inject(&nodes[i].disk, rng);
            // The node meets it under load, the others go on; then it goes down as a
            // machine with a failing disk would, and comes back on what the disk kept.
            tokio::time::sleep(Duration::from_millis(500 + rng.below(1500))).await;
            vec![i]
        }
        Target::LeaderOf(shard) => vec![leader_of(nodes, shard).await],
    };
    (target, which)
}

/// Whose power a cut takes.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// The node leading this shard.
    LeaderOf(u32),
    /// This node.
    Any(usize),
    /// All three at the same instant.
    All,
    /// This node, after its disk began to fail.
    DiskFault(usize, DiskFault),
}

/// How a disk fails before the cut.
#[derive(Debug, Clone, Copy)]
enum DiskFault {
    /// An fsync fails (`EIO`): what it was to sync never reaches the disk.
    Sync,
    /// The disk is full (`ENOSPC`) within 64 KiB.
    Full,
    /// A read fails (`EIO`).
    Read,
}

impl DiskFault {
    const ALL: [Self; 3] = [Self::Sync, Self::Full, Self::Read];

    fn inject(self, disk: &SimDisk, rng: &mut Rng) {
        match self {
            Self::Sync => disk.fail_sync(1 + rng.below(4)),
            Self::Full => disk.set_capacity(Some(disk.bytes_used() + rng.below(64 << 10))),
            Self::Read => disk.fail_read(1 + rng.below(20)),
        }
    }
}

/// The index in `nodes` of the node leading `shard` (the first node while none is known).
async fn leader_of(nodes: &[Node], shard: u32) -> usize {
    let status = nodes[0].cluster.status().await;
    let leader = status.shards.iter().find(|s| s.shard == shard).and_then(|s| s.leader);
    leader.and_then(|id| nodes.iter().position(|n| n.cluster.id() == id)).unwrap_or(0)
}

/// Cuts the power of every node at one instant (under `pattern`), then brings each back in
/// `next(i)` on what its disk kept. What a majority had on disk was acknowledged: the final
/// check finds it.
async fn cut_all_and_restart(
    mains: &Mains,
    nodes: Vec<Node>,
    rng: &mut Rng,
    pattern: CrashPattern,
    next: impl Fn(usize) -> PathBuf,
) -> Vec<Node> {
    for node in &nodes {
        node.power.store(false, Ordering::SeqCst);
    }
    let mut kept = Vec::new();
    for node in nodes {
        kept.push(node.cut(rng, pattern).await);
    }
    tokio::time::sleep(Duration::from_millis(rng.below(800))).await;
    let mut back = Vec::new();
    let mut shown = Vec::new();
    for (i, Cut { disk, dir, address, shown: before }) in kept.into_iter().enumerate() {
        copy_tree(&disk, &dir, &next(i)).expect("copy the node's files to its new directory");
        remove_tree(&disk, &dir).expect("remove the node's old directory");
        back.push(Node::start(mains, disk, next(i), address, Start::Restart).await);
        shown.push(before);
    }
    for (node, before) in back.iter().zip(&shown) {
        check_not_shrunk(node, before, pattern).await;
    }
    back
}

/// Cuts `third`'s power under `pattern`, checks its Raft log kept what it acknowledged to the
/// leaders among `others`, and brings it back up in `next` on what its disk kept.
async fn cut_and_restart(
    mains: &Mains,
    third: Node,
    others: [&Node; 2],
    rng: &mut Rng,
    pattern: CrashPattern,
    next: &Path,
) -> Node {
    let id = third.cluster.id();
    let Cut { disk, dir, address, shown } = third.cut(rng, pattern).await;
    // Every shard, with what the other nodes, where they lead it, had from the cut node when
    // the power went (nothing it sent since arrives): it acknowledged those entries, so they
    // must be on the disk it comes back with. Where it led itself, nothing is known here (the
    // final check speaks), but its saved position is checked all the same.
    let mut acknowledged = BTreeMap::<u32, Option<u64>>::new();
    for other in others {
        for shard in other.cluster.status().await.shards {
            let matched = shard.peers.iter().find(|p| p.node == id).and_then(|p| p.matched);
            let known = acknowledged.entry(shard.shard).or_default();
            *known = (*known).max(matched);
        }
    }
    copy_tree(&disk, &dir, next).expect("copy the node's files to its new directory");
    remove_tree(&disk, &dir).expect("remove the node's old directory");
    let shards = u32::try_from(acknowledged.len()).expect("a few shards");
    let node_log = NodeLog::open(Arc::new(disk.clone()), &next.join("raft"), id, shards)
        .expect("open the cut node's Raft log");
    for (shard, matched) in acknowledged {
        let shard_dir = next.join("raft").join(format!("shard-{shard}"));
        let log = node_log.shard(shard);
        // What the node applied, it must still hold in its log: a restart starts from the
        // saved position, and openraft takes the log to reach at least that far.
        let applied = saved_position(&disk, &shard_dir).expect("read the applied position");
        assert!(
            applied.map(|a| a.index) <= log.last_index(),
            "{pattern:?} cut, shard {shard}: the state machine saved position {applied:?} but the log holds up to {:?} after the cut",
            log.last_index()
        );
        assert!(
            log.last_index() >= matched,
            "{pattern:?} cut, shard {shard}: the node acknowledged entries up to {matched:?} but its log holds up to {:?} after the cut",
            log.last_index()
        );
    }
    drop(node_log);
    // Dark for a while, as a machine that lost power is.
    tokio::time::sleep(Duration::from_millis(rng.below(800))).await;
    let back = Node::start(mains, disk, next.to_path_buf(), address, Start::Restart).await;
    check_not_shrunk(&back, &shown, pattern).await;
    back
}

/// Once the nodes agree (or after 60 s), checks what they hold against what was
/// acknowledged; returns each node's view.
async fn check(
    nodes: &[&Node],
    acked: &Acked,
) -> Vec<BTreeMap<String, Vec<Arc<converge_core::Entry>>>> {
    let views = settled(nodes).await;
    if views.windows(2).any(|w| w[0] != w[1]) {
        for node in nodes {
            println!(
                "{} ready {}: {:?}",
                node.address,
                node.cluster.ready(),
                node.cluster.status().await.shards
            );
        }
    }
    for (n, view) in views.iter().enumerate().skip(1) {
        for (context, entries) in view {
            assert!(
                entries == &views[0][context],
                "node {} holds {} entries of {context}, node 1 {}: the replicas differ",
                n + 1,
                entries.len(),
                views[0][context].len()
            );
        }
    }
    let acked = acked.lock().unwrap_or_else(PoisonError::into_inner).clone();
    for (context, entries) in &views[0] {
        let mut payloads = std::collections::BTreeSet::new();
        for (i, entry) in entries.iter().enumerate() {
            assert_eq!(entry.sequence().0, i as u64 + 1, "{context} has a gap");
            assert!(
                payloads.insert(entry.payload().clone()),
                "{context}: an append is there twice"
            );
        }
        for (seq, payload) in acked.get(context).into_iter().flatten() {
            let held = entries.get(usize::try_from(*seq - 1).expect("fits")).map(|e| e.payload());
            assert!(
                held.is_some_and(|p| p.as_ref() == payload.as_slice()),
                "{context}: the append acknowledged at {seq} is lost or moved"
            );
        }
        let heads: Vec<_> = nodes
            .iter()
            .map(|n| {
                let ledger = n.ledger.clone();
                let context = context.clone();
                async move { ledger.tree_head(&context).await.ok() }
            })
            .collect();
        let mut roots = Vec::new();
        for head in heads {
            roots.push(head.await.map(|h| (h.tree_size, h.root_hash)));
        }
        assert!(roots.windows(2).all(|w| w[0] == w[1]), "{context}: tree heads differ: {roots:?}");
    }
    views
}

fn seed() -> u64 {
    std::env::var("CONVERGE_POWER_CUT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(
        || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs())
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_that_loses_power_comes_back_with_everything_it_acknowledged() {
    run(seed(), Some(12), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long mode: CONVERGE_POWER_CUT_MINUTES=N"]
async fn power_cuts_for_minutes() {
    let minutes =
        std::env::var("CONVERGE_POWER_CUT_MINUTES").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    run(seed(), None, Some(minutes)).await;
}
