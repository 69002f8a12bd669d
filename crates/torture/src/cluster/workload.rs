//! The load a run puts on the cluster, and the history it records: every append invoked and
//! how it ended, every entry any read or watch saw, every tree head seen.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use converge_client::Client;
use converge_core::Hash;
use converge_ledger::{AppendRequest, GetRequest, LedgerApi as _, LedgerError, WatchRequest};
use futures_util::StreamExt as _;

use converge_storage::vfs::sim::Rng;

/// How an append ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Acknowledged: the entry's sequence and content hash.
    Ok(u64, Hash),
    /// Refused with an error that says nothing was written.
    Failed(String),
    /// No answer, or `UNAVAILABLE`: it may or may not have been written.
    Unknown(String),
}

/// One append of the history.
#[derive(Debug, Clone)]
pub(super) struct Op {
    /// The context.
    pub(super) context: String,
    /// Its append id (also its payload, so any entry names the op that made it).
    pub(super) append_id: String,
    /// How it ended.
    pub(super) outcome: Outcome,
    /// When it was first sent.
    pub(super) invoked: Instant,
    /// When its last attempt ended (for an acknowledged append: when it was acknowledged).
    pub(super) completed: Instant,
}

/// Entries a watcher received, in order, across its resumes.
#[derive(Debug, Clone, Default)]
pub(super) struct WatchLog {
    /// The context.
    pub(super) context: String,
    /// `(sequence, content hash)` as received.
    pub(super) entries: Vec<(u64, Hash)>,
    /// How many times it moved to another node.
    pub(super) resumes: u64,
}

/// One client's look at a context's size on one node: the session checks are made of these.
#[derive(Debug, Clone)]
pub(super) struct Read {
    /// Which client (a writer's number, or [`READER`]).
    pub(super) client: usize,
    /// The node's address and its incarnation there (a wiped node is a new one).
    pub(super) node: (String, u64),
    /// The context.
    pub(super) context: String,
    /// The tree size the node showed.
    pub(super) size: u64,
    /// The sequence this client had just been acknowledged by this node, if the read followed
    /// its own append (read-your-writes).
    pub(super) wrote: Option<u64>,
    /// When it was sent.
    pub(super) invoked: Instant,
    /// When it was answered.
    pub(super) completed: Instant,
}

/// The client number of the reader task.
pub(super) const READER: usize = usize::MAX;

/// What a run saw.
#[derive(Default)]
pub(super) struct History {
    /// Every append, once ended.
    pub(super) ops: Mutex<Vec<Op>>,
    /// Every `(context, sequence, hash)` a read returned.
    pub(super) seen: Mutex<Vec<(String, u64, Hash)>>,
    /// Every `(context, size, root)` a tree head showed.
    pub(super) heads: Mutex<Vec<(String, u64, Hash)>>,
    /// One log per watcher.
    pub(super) watches: Mutex<Vec<WatchLog>>,
    /// Every tree size a client read, for the session checks.
    pub(super) reads: Mutex<Vec<Read>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The servers clients may use now; the nemesis changes it as nodes come and go.
#[derive(Default)]
pub(super) struct Servers {
    list: Mutex<Vec<String>>,
    clients: Mutex<BTreeMap<String, Client>>,
    /// Per server, how many times a new node took its address (its data directory wiped).
    incarnations: Mutex<BTreeMap<String, u64>>,
}

impl Servers {
    /// Sets the servers in use.
    pub(super) fn set(&self, servers: Vec<String>) {
        *lock(&self.list) = servers;
    }

    /// A new node now answers at `server`: what its predecessor showed says nothing of it.
    pub(super) fn renew(&self, server: &str) {
        *lock(&self.incarnations).entry(server.to_string()).or_default() += 1;
    }

    fn incarnation(&self, server: &str) -> u64 {
        lock(&self.incarnations).get(server).copied().unwrap_or(0)
    }

    /// The size of `context` on `server` through `client`, recorded as `who`'s read (unless
    /// a new node took the address while it was asked).
    async fn read_size(
        &self,
        (who, server, client): (usize, &str, &Client),
        context: &str,
        wrote: Option<u64>,
        history: &History,
    ) -> Option<converge_ledger::TreeHead> {
        let incarnation = self.incarnation(server);
        let invoked = Instant::now();
        let head = tokio::time::timeout(Duration::from_secs(3), client.tree_head(context))
            .await
            .ok()?
            .ok()?;
        if self.incarnation(server) == incarnation {
            lock(&history.reads).push(Read {
                client: who,
                node: (server.to_string(), incarnation),
                context: context.to_string(),
                size: head.tree_size,
                wrote,
                invoked,
                completed: Instant::now(),
            });
        }
        Some(head)
    }

    /// A client of a random server in use.
    async fn pick(&self, rng: &mut Rng) -> Option<(String, Client)> {
        let server = {
            let list = lock(&self.list);
            if list.is_empty() {
                return None;
            }
            list[rng.index(list.len())].clone()
        };
        if let Some(client) = lock(&self.clients).get(&server).cloned() {
            return Some((server, client));
        }
        let mut config = converge_client::ClientConfig::new(server.clone());
        config.connect_timeout = Duration::from_secs(1);
        config.watch_retry_max = Duration::ZERO;
        let client = tokio::time::timeout(Duration::from_secs(2), Client::connect_with(config))
            .await
            .ok()?
            .ok()?;
        lock(&self.clients).insert(server.clone(), client.clone());
        Some((server, client))
    }
}

/// A running workload.
pub(super) struct Workload {
    /// What it recorded.
    pub(super) history: Arc<History>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Appends acknowledged so far.
    pub(super) acked: Arc<AtomicU64>,
    /// When the latest-sent acknowledged append to the first context was sent (the nemesis
    /// times failovers of its shard by it: an append sent after a kill, acknowledged).
    pub(super) acked_first: Arc<Mutex<Option<Instant>>>,
}

/// The contexts a run writes.
pub(super) fn contexts(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("ctx-{i}")).collect()
}

/// How long one attempt of an append may take before it counts as unanswered.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(8);
/// An attempt slower than this is printed.
const SLOW_ATTEMPT: Duration = Duration::from_secs(3);
/// How many nodes an append tries before its outcome is unknown.
const ATTEMPTS: usize = 4;

impl Workload {
    /// Starts `writers` appenders over `contexts`, one reader, and a watcher per context.
    pub(super) fn start(
        seed: u64,
        writers: usize,
        contexts: &[String],
        servers: &Arc<Servers>,
    ) -> Self {
        let history = Arc::new(History::default());
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let acked_first: Arc<Mutex<Option<Instant>>> = Arc::default();
        let next_op = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for w in 0..writers {
            let acked_first = Arc::clone(&acked_first);
            let (history, stop, servers, acked, next_op) = (
                Arc::clone(&history),
                Arc::clone(&stop),
                Arc::clone(servers),
                Arc::clone(&acked),
                Arc::clone(&next_op),
            );
            let contexts = contexts.to_vec();
            let mut rng = Rng::new(seed ^ (w as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let id = next_op.fetch_add(1, Ordering::SeqCst);
                    let which = rng.index(contexts.len());
                    let context = contexts[which].clone();
                    let (op, answered) =
                        append(&servers, &mut rng, context.clone(), format!("op-{id}")).await;
                    // Read-your-writes, on the node that answered, for one append in four.
                    if let (Outcome::Ok(seq, _), Some((server, client))) = (&op.outcome, answered)
                        && rng.one_in(4)
                    {
                        let reader = (w, server.as_str(), &client);
                        servers.read_size(reader, &context, Some(*seq), &history).await;
                    }
                    if matches!(op.outcome, Outcome::Ok(..)) {
                        acked.fetch_add(1, Ordering::Relaxed);
                        if which == 0 {
                            let mut latest = lock(&acked_first);
                            *latest = (*latest).max(Some(op.invoked));
                        }
                    }
                    lock(&history.ops).push(op);
                }
            }));
        }
        {
            let (history, stop, servers) =
                (Arc::clone(&history), Arc::clone(&stop), Arc::clone(servers));
            let contexts = contexts.to_vec();
            let mut rng = Rng::new(seed ^ 0xA5A5);
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    read(&servers, &mut rng, &contexts, &history).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }));
        }
        for (w, context) in contexts.iter().enumerate() {
            let (history, stop, servers) =
                (Arc::clone(&history), Arc::clone(&stop), Arc::clone(servers));
            let context = context.clone();
            let mut rng = Rng::new(seed ^ 0x5A5A ^ w as u64);
            tasks.push(tokio::spawn(async move {
                let log = watch(&servers, &mut rng, &context, &stop).await;
                lock(&history.watches).push(log);
            }));
        }
        Self { history, stop, tasks, acked, acked_first }
    }

    /// Stops every task and waits for them (watchers record their logs).
    pub(super) async fn stop(self) -> Arc<History> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            let _ = task.await;
        }
        self.history
    }
}

/// Whether an error leaves the append's fate open (or says the node could not take it).
fn unsure(e: &LedgerError) -> bool {
    // FAILED_PRECONDITION is a removed node refusing: nothing written there.
    matches!(
        e,
        LedgerError::Unavailable(_) | LedgerError::Internal(_) | LedgerError::FailedPrecondition(_)
    )
}

/// One append, tried on up to [`ATTEMPTS`] nodes; with the node that acknowledged it.
async fn append(
    servers: &Servers,
    rng: &mut Rng,
    context: String,
    append_id: String,
) -> (Op, Option<(String, Client)>) {
    let invoked = Instant::now();
    let op = |context, append_id, outcome| Op {
        context,
        append_id,
        outcome,
        invoked,
        completed: Instant::now(),
    };
    let mut last = String::from("no server to try");
    for _ in 0..ATTEMPTS {
        let Some((server, client)) = servers.pick(rng).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let request = AppendRequest::new(context.as_str(), "k", append_id.clone().into_bytes())
            .with_append_id(append_id.as_str());
        let tried = Instant::now();
        let answer = tokio::time::timeout(ATTEMPT_TIMEOUT, client.append(request)).await;
        if tried.elapsed() > SLOW_ATTEMPT {
            // Printed for the study of failover times: where an append waited, and for what.
            let how = match &answer {
                Ok(Ok(_)) => "acknowledged".to_string(),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer".to_string(),
            };
            eprintln!(
                "cluster faults: an append to {context} took {:.2}s on {server}: {how}",
                tried.elapsed().as_secs_f64()
            );
        }
        match answer {
            Ok(Ok(entry)) => {
                let acked = Outcome::Ok(entry.sequence().0, entry.content_hash());
                return (op(context, append_id, acked), Some((server, client)));
            }
            Ok(Err(e)) if unsure(&e) => last = format!("{server}: {e}"),
            Ok(Err(e)) => {
                return (op(context, append_id, Outcome::Failed(e.to_string())), None);
            }
            Err(_) => last = format!("{server}: no answer in {ATTEMPT_TIMEOUT:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (op(context, append_id, Outcome::Unknown(last)), None)
}

async fn read(servers: &Servers, rng: &mut Rng, contexts: &[String], history: &History) {
    let Some((server, client)) = servers.pick(rng).await else { return };
    let context = &contexts[rng.index(contexts.len())];
    let timeout = Duration::from_secs(3);
    let asked = (READER, server.as_str(), &client);
    if let Some(head) = servers.read_size(asked, context, None, history).await {
        lock(&history.heads).push((context.clone(), head.tree_size, head.root_hash));
        let request = GetRequest {
            context_id: context.clone(),
            after_sequence: head.tree_size.saturating_sub(64),
            ..GetRequest::default()
        };
        if let Ok(Ok(got)) = tokio::time::timeout(timeout, client.get(request)).await {
            let mut seen = lock(&history.seen);
            for entry in got.entries {
                seen.push((context.clone(), entry.sequence().0, entry.content_hash()));
            }
        }
    }
}

/// Follows `context`, moving to another node whenever a stream ends or fails, from the last
/// sequence received.
async fn watch(servers: &Servers, rng: &mut Rng, context: &str, stop: &AtomicBool) -> WatchLog {
    let mut log = WatchLog { context: context.to_string(), ..WatchLog::default() };
    let mut last = 0;
    while !stop.load(Ordering::SeqCst) {
        let Some((_, client)) = servers.pick(rng).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let request = WatchRequest {
            context_id: context.to_string(),
            from_sequence: last,
            ..WatchRequest::default()
        };
        let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(2), client.watch(request)).await
        else {
            log.resumes += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        loop {
            if stop.load(Ordering::SeqCst) {
                return log;
            }
            // A stream that goes quiet for long may be on a paused or cut-off node: move on.
            match tokio::time::timeout(Duration::from_secs(3), stream.next()).await {
                Ok(Some(Ok(entry))) => {
                    last = entry.sequence().0;
                    log.entries.push((last, entry.content_hash()));
                }
                Ok(Some(Err(_)) | None) => break,
                Err(_) => {
                    if rng.one_in(2) {
                        break;
                    }
                }
            }
        }
        log.resumes += 1;
    }
    log
}
