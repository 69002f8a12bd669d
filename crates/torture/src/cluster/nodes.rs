//! The node processes of a run: started, killed, paused, wiped and restarted by slot.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use converge_client::{Client, ClientConfig};

use super::net::Net;

/// gRPC port of every node (each has its own address in its namespace; on loopback, ports
/// are chosen free).
const GRPC_PORT: u16 = 7000;
const HTTP_PORT: u16 = 9000;

/// How a node process starts.
pub(super) enum Start {
    /// `--bootstrap`.
    Bootstrap,
    /// `--join ADDR`.
    JoinVia(String),
    /// No cluster flag: its data directory says it is a member.
    Restart,
}

/// One node slot.
pub(super) struct Node {
    /// Its data directory.
    pub(super) dir: PathBuf,
    /// gRPC address.
    pub(super) addr: SocketAddr,
    http: SocketAddr,
    child: Option<Child>,
    paused: bool,
    /// Its id once known (`cluster status` names it).
    pub(super) id: Option<u64>,
    /// Removed from the cluster (the slot is not used again).
    pub(super) retired: bool,
}

/// Every node of a run.
pub(super) struct Nodes {
    binary: PathBuf,
    /// The network they are on.
    pub(super) net: Net,
    root: tempfile::TempDir,
    /// The slots.
    pub(super) slots: Vec<Node>,
    shards: u32,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Nodes {
    /// Slots for up to `slots` nodes of `binary`, with `shards` shards.
    pub(super) fn new(binary: PathBuf, slots: usize, shards: u32) -> Self {
        let net = Net::new(slots);
        let root = tempfile::Builder::new().prefix("cluster-faults").tempdir().expect("a temp dir");
        let nodes = (0..slots)
            .map(|i| {
                let ip = net.ip(i);
                let (grpc, http) = if net.can_partition() {
                    (GRPC_PORT, HTTP_PORT)
                } else {
                    (free_port(), free_port())
                };
                Node {
                    dir: root.path().join(format!("node-{}", i + 1)),
                    addr: SocketAddr::from((ip, grpc)),
                    http: SocketAddr::from((ip, http)),
                    child: None,
                    paused: false,
                    id: None,
                    retired: false,
                }
            })
            .collect();
        Self { binary, net, root, slots: nodes, shards }
    }

    /// Where node logs go.
    pub(super) fn log_path(&self, i: usize) -> PathBuf {
        self.root.path().join(format!("node-{}.log", i + 1))
    }

    /// `http://ADDR` of slot `i`.
    pub(super) fn server(&self, i: usize) -> String {
        format!("http://{}", self.slots[i].addr)
    }

    /// Whether slot `i` runs (and is not paused).
    pub(super) fn up(&self, i: usize) -> bool {
        self.slots[i].child.is_some() && !self.slots[i].paused && !self.slots[i].retired
    }

    /// Slots of members that are up.
    pub(super) fn live(&self) -> Vec<usize> {
        (0..self.slots.len()).filter(|i| self.up(*i)).collect()
    }

    /// Slots of members (up or down, not retired, started at least once).
    pub(super) fn members(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|i| !self.slots[*i].retired && self.slots[*i].id.is_some())
            .collect()
    }

    /// Starts slot `i` and waits until it listens.
    pub(super) fn start(&mut self, i: usize, how: &Start) {
        assert!(self.slots[i].child.is_none(), "slot {i} already runs");
        let node = &self.slots[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .expect("the node's log file");
        let prefix = self.net.prefix(i);
        let mut command = match prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        };
        command
            .arg("serve")
            .arg("--listen")
            .arg(node.addr.to_string())
            .arg("--http")
            .arg(node.http.to_string())
            .arg("--data-dir")
            .arg(&node.dir)
            .arg("--insecure")
            // `CONVERGE_FAULTS_NODE_LOG` (e.g. `warn,converge_cluster=info`) to study a run.
            .env(
                "CONVERGE_LEDGER_LOG_LEVEL",
                std::env::var("CONVERGE_FAULTS_NODE_LOG").unwrap_or_else(|_| "warn".into()),
            );
        match how {
            Start::Bootstrap => {
                command.arg("--bootstrap").arg("--shards").arg(self.shards.to_string());
            }
            Start::JoinVia(seed) => {
                command.arg("--join").arg(seed);
            }
            Start::Restart => {}
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let listening = lines.next().and_then(Result::ok).unwrap_or_default();
        assert!(
            listening.starts_with("listening on"),
            "node {} did not start (see {}): {listening:?}",
            i + 1,
            self.log_path(i).display()
        );
        // Keep draining stdout so the node never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        self.slots[i].child = Some(child);
        self.slots[i].paused = false;
    }

    /// SIGKILL slot `i` (and reap it).
    pub(super) fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.slots[i].child.take() {
            if self.slots[i].paused {
                signal(child.id(), "CONT");
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.slots[i].paused = false;
    }

    /// SIGSTOP slot `i`.
    pub(super) fn pause(&mut self, i: usize) {
        if let Some(child) = &self.slots[i].child {
            signal(child.id(), "STOP");
            self.slots[i].paused = true;
        }
    }

    /// SIGCONT slot `i`.
    pub(super) fn resume(&mut self, i: usize) {
        if let Some(child) = &self.slots[i].child
            && self.slots[i].paused
        {
            signal(child.id(), "CONT");
        }
        self.slots[i].paused = false;
    }

    /// Removes slot `i`'s data directory (it must be down).
    pub(super) fn wipe(&mut self, i: usize) {
        assert!(self.slots[i].child.is_none(), "wipe a stopped node only");
        let _ = std::fs::remove_dir_all(&self.slots[i].dir);
        self.slots[i].id = None;
    }

    /// A client of slot `i` that gives up quickly.
    pub(super) async fn client(&self, i: usize) -> Option<Client> {
        let mut config = ClientConfig::new(self.server(i));
        config.connect_timeout = Duration::from_secs(1);
        config.watch_retry_max = Duration::ZERO;
        tokio::time::timeout(Duration::from_secs(2), Client::connect_with(config))
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Waits until slot `i` reports itself a member with a leader for every shard; records
    /// its id. Panics after `limit`.
    pub(super) async fn await_member(&mut self, i: usize, limit: Duration) {
        let started = Instant::now();
        loop {
            if let Some(client) = self.client(i).await
                && let Ok(Ok(status)) =
                    tokio::time::timeout(Duration::from_secs(2), client.cluster_status()).await
            {
                let member = status.nodes.iter().any(|n| n.id == status.node);
                let led = status.shards.iter().all(|s| s.leader.is_some());
                if member && led && !status.shards.is_empty() {
                    self.slots[i].id = Some(status.node);
                    return;
                }
            }
            if started.elapsed() >= limit {
                // The node directories go with the process: keep the logs for the post-mortem.
                let kept = self.keep_logs();
                panic!(
                    "node {} did not become a member with leaders within {limit:?} (node logs kept in {})",
                    i + 1,
                    kept.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The node id that leads `shard`, as any live node says.
    pub(super) async fn leader_of(&self, shard: u32) -> Option<u64> {
        for i in self.live() {
            if let Some(client) = self.client(i).await
                && let Ok(Ok(status)) =
                    tokio::time::timeout(Duration::from_secs(2), client.cluster_status()).await
                && let Some(leader) =
                    status.shards.iter().find(|s| s.shard == shard).and_then(|s| s.leader)
            {
                return Some(leader);
            }
        }
        None
    }

    /// The slot of node id `id`.
    pub(super) fn slot_of(&self, id: u64) -> Option<usize> {
        self.slots.iter().position(|n| n.id == Some(id) && !n.retired)
    }

    /// Copies the node logs somewhere that outlives the run; returns where.
    pub(super) fn keep_logs(&self) -> PathBuf {
        let keep = std::env::temp_dir().join(format!("cluster-faults-logs-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&keep);
        for i in 0..self.slots.len() {
            let _ = std::fs::copy(self.log_path(i), keep.join(format!("node-{}.log", i + 1)));
        }
        keep
    }

    /// Stops every process (SIGKILL): the end of a run.
    pub(super) fn kill_all(&mut self) {
        for i in 0..self.slots.len() {
            self.kill(i);
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.kill_all();
    }
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status();
}
