//! Simulated power cuts: a seeded workload runs on storage over the simulated disk, power is
//! cut after every fsync and at random points between, and every state a cut can leave is
//! reopened and checked.
//!
//! The workload drives storage directly, where every byte of IO happens (the embedded ledger
//! adds validation and admission on top, no IO): appends across several contexts with and
//! without `append_id` (retries included), atomic batches (`append_verified`, Load's path),
//! checkpoints, segment rotation, a clean close. The writer runs in manual mode on this thread,
//! so a seed replays exactly: the same operations, the same cuts, the same crash states.
//!
//! Each crash state must open without help, and then:
//! - every acknowledged entry is there and identical (every field and the content hash);
//! - each context is gap-free and holds only entries that were submitted, and an atomic batch
//!   is there whole or not at all;
//! - its tree head matches its entries;
//! - every acknowledged `append_id` is still recorded (a retry returns the first entry);
//! - the store takes new appends.
//!
//! In buffered mode an append is acknowledged before it is on disk, so what must survive is
//! what a checkpoint (which syncs the log first) covered.
//!
//! The index (fjall) is not on the simulated disk: it is written only by checkpoints, so each
//! crash state is paired with a copy of the index as the last completed checkpoint left it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use converge_core::merkle::root_of_leaves;
use converge_core::{
    AppendId, ContextId, Entry, Key, Metadata, PartialContentHash, Seq, Timestamp,
};
use converge_storage::vfs::sim::{CrashPattern, Op, Rng, SimDisk};
use converge_storage::{Appended, Context, Durability, NewEntry, ReadQuery, Store, StoreConfig};

/// What one seed did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Crash states reopened and checked.
    pub cuts: u64,
    /// Disk operations the workload did (each a place a cut can happen).
    pub ops: u64,
    /// Appends acknowledged.
    pub acked: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
    /// Whether the log was in buffered mode.
    pub buffered: bool,
}

/// A check failed: everything needed to replay it.
#[derive(Debug, Clone)]
pub struct Violation {
    /// The seed that replays it.
    pub seed: u64,
    /// Which cut (in the order they were made) and after which disk operation.
    pub cut: usize,
    /// The disk operation the cut followed.
    pub op: u64,
    /// How the cut treated unsynced writes.
    pub pattern: CrashPattern,
    /// What was wrong.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} cut {} (after disk operation {}, {:?}): {}\n  replay: cargo run --release -p converge-torture --bin power-cut -- --seed {}",
            self.seed, self.cut, self.op, self.pattern, self.message, self.seed
        )
    }
}

/// An acknowledged append.
#[derive(Debug, Clone)]
struct Ack {
    context: ContextId,
    seq: Seq,
    append_id: Option<AppendId>,
}

/// A state a power cut left.
struct Cut {
    disk: SimDisk,
    op: u64,
    pattern: CrashPattern,
    /// Acknowledged appends that must survive: the first `must` of the ack log.
    must: usize,
    /// The index snapshot to pair it with.
    epoch: usize,
}

/// What the workload submitted, acknowledged and checkpointed.
#[derive(Default)]
struct Model {
    /// Every entry submitted, per context, by sequence (index `seq − 1`).
    submitted: BTreeMap<ContextId, Vec<Arc<Entry>>>,
    /// Atomic batches: context, first and last sequence.
    batches: Vec<(ContextId, Seq, Seq)>,
    /// Appends with an `append_id`, and the entry recorded for each.
    with_ids: Vec<(ContextId, AppendId, Arc<Entry>)>,
}

/// Shared with the disk hook and the completions.
#[derive(Default)]
struct Live {
    acks: Mutex<Vec<Ack>>,
    /// How many acks are covered by a completed checkpoint (buffered mode's guarantee).
    checkpointed: AtomicUsize,
    /// Index snapshots taken so far minus one: the current epoch.
    epoch: AtomicUsize,
    cuts: Mutex<Vec<Cut>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs seed `seed` in `work` (an empty directory, ideally on tmpfs): the workload, then every
/// cut. Returns what it did, or the first violation.
pub fn run_seed(seed: u64, work: &Path) -> Result<Report, Violation> {
    let mut rng = Rng::new(seed);
    let buffered = rng.one_in(4);
    let data = work.join("data");
    let snapshots = work.join("index-snapshots");
    std::fs::create_dir_all(&data).expect("create the work directory");
    std::fs::create_dir_all(&snapshots).expect("create the work directory");
    let disk = SimDisk::new();
    let live = Arc::new(Live::default());
    install_hook(&disk, &live, rng.next_u64(), buffered);
    let config = StoreConfig {
        vfs: Arc::new(disk.clone()),
        manual: true,
        durability: if buffered { Durability::Buffered } else { Durability::Fsync },
        segment_bytes: *rng.pick(&[4096, 8192, 32 * 1024]),
        ..StoreConfig::disk(&data)
    };
    let violation = |cut: usize, message: String| Violation {
        seed,
        cut,
        op: 0,
        pattern: CrashPattern::KeepAll,
        message,
    };
    let store =
        Store::open(config.clone()).map_err(|e| violation(0, format!("first open: {e}")))?;
    snapshot_index(&data, &snapshots, 0);
    let mut model = Model::default();
    let mut report = Report { buffered, ..Report::default() };
    let steps = 20 + rng.below(40);
    let mut clock = 1_000_000u64;
    for step in 0..steps {
        match rng.below(10) {
            0 => {
                checkpoint(&store, &data, &snapshots, &live)
                    .map_err(|e| violation(0, format!("step {step}: checkpoint: {e}")))?;
                report.checkpoints += 1;
            }
            1 => load(&store, &mut model, &live, &mut rng, &mut clock, step)
                .map_err(|e| violation(0, format!("step {step}: load: {e}")))?,
            _ => appends(&store, &mut model, &live, &mut rng, &mut clock)
                .map_err(|e| violation(0, format!("step {step}: appends: {e}")))?,
        }
    }
    // A clean close: drains, syncs, writes a final checkpoint, removes the marker.
    let before_close = lock(&live.acks).len();
    store.close().map_err(|e| violation(0, format!("close: {e}")))?;
    drop(store);
    live.checkpointed.store(before_close, Ordering::SeqCst);
    disk.clear_hook();
    report.ops = disk.ops();
    report.acked = before_close as u64;

    let cuts = std::mem::take(&mut *lock(&live.cuts));
    let acks = lock(&live.acks).clone();
    for (i, cut) in cuts.into_iter().enumerate() {
        let (op, pattern) = (cut.op, cut.pattern);
        check_cut(&cut, &config, &data, &snapshots, &model, &acks, clock)
            .map_err(|message| Violation { seed, cut: i, op, pattern, message })?;
        report.cuts += 1;
    }
    Ok(report)
}

/// Cuts power after every fsync and after about one in four other operations, with a pattern
/// drawn from `seed`.
fn install_hook(disk: &SimDisk, live: &Arc<Live>, seed: u64, buffered: bool) {
    let live = Arc::clone(live);
    let mut rng = Rng::new(seed);
    disk.set_hook(Box::new(move |op, at| {
        let boundary = matches!(op, Op::Sync | Op::SyncDir);
        if !boundary && !rng.one_in(4) {
            return;
        }
        let pattern = match rng.below(20) {
            0..=2 => CrashPattern::LoseAll,
            3..=5 => CrashPattern::KeepAll,
            6..=12 => CrashPattern::Random,
            _ => CrashPattern::Prefix,
        };
        let must = if buffered {
            live.checkpointed.load(Ordering::SeqCst)
        } else {
            lock(&live.acks).len()
        };
        let epoch = live.epoch.load(Ordering::SeqCst);
        let crashed = at.crash(&mut rng, pattern);
        lock(&live.cuts).push(Cut { disk: crashed, op: at.ops(), pattern, must, epoch });
    }));
}

fn snapshot_index(data: &Path, snapshots: &Path, epoch: usize) {
    copy_dir(&data.join("index"), &snapshots.join(epoch.to_string()));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create a directory");
    for entry in std::fs::read_dir(from).expect("list a directory") {
        let entry = entry.expect("list a directory");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.path().extension().is_some_and(|e| e == "jnl") {
            // fjall preallocates 64 MiB journals; past the last entry they hold only zeros,
            // which fjall's recovery reads as the end. Copying just the entries makes a cut
            // cost milliseconds instead of tens of them.
            let bytes = std::fs::read(entry.path()).expect("read a journal");
            let end =
                bytes.iter().rposition(|b| *b != 0).map_or(0, |i| (i + 1).next_multiple_of(4096));
            std::fs::write(&target, &bytes[..end.min(bytes.len())]).expect("write a journal");
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

fn checkpoint(store: &Store, data: &Path, snapshots: &Path, live: &Live) -> Result<(), String> {
    let covered = lock(&live.acks).len();
    store.checkpoint().map_err(|e| e.to_string())?;
    let epoch = live.epoch.load(Ordering::SeqCst) + 1;
    snapshot_index(data, snapshots, epoch);
    live.epoch.store(epoch, Ordering::SeqCst);
    live.checkpointed.store(covered, Ordering::SeqCst);
    Ok(())
}

fn context_id(rng: &mut Rng) -> ContextId {
    ContextId::try_new(format!("ctx-{}", rng.below(6))).expect("a valid id")
}

fn new_entry(context: &ContextId, rng: &mut Rng, append_id: Option<AppendId>) -> NewEntry {
    let key = Key::try_new(*rng.pick(&["facts", "intents", "traces"])).expect("key");
    let len = *rng.pick(&[0, 10, 300, 700, 1500]);
    let fill = rng.next_u64().to_be_bytes();
    let payload: Bytes = (0..len).map(|i| fill[i % 8]).collect::<Vec<u8>>().into();
    let mut metadata = Metadata::new();
    if rng.one_in(3) {
        metadata = Metadata::try_from_pairs([("agent".to_owned(), format!("a{}", rng.below(9)))])
            .expect("valid metadata");
    }
    NewEntry {
        prefix: PartialContentHash::new(context, &key, &payload),
        key,
        payload,
        metadata,
        received: rng.one_in(4).then(|| converge_core::LamportTime(rng.below(1000))),
        append_id,
    }
}

/// A completion that logs the ack.
fn on_ack(live: &Arc<Live>, ack: Ack) -> converge_storage::Completion {
    let live = Arc::clone(live);
    Box::new(move |result| {
        if result.is_ok() {
            lock(&live.acks).push(ack);
        }
    })
}

/// Between one and eight appends, some with append ids, some retrying one; then the writer
/// writes them all.
fn appends(
    store: &Store,
    model: &mut Model,
    live: &Arc<Live>,
    rng: &mut Rng,
    clock: &mut u64,
) -> Result<(), String> {
    for _ in 0..=rng.below(8) {
        *clock += rng.below(3);
        if !model.with_ids.is_empty() && rng.one_in(6) {
            // A retry: the same id and content; must append nothing.
            let (id, append_id, entry) = rng.pick(&model.with_ids).clone();
            let context = store.context(&id).map_err(|e| e.to_string())?;
            let again = NewEntry {
                prefix: PartialContentHash::new(&id, entry.key(), entry.payload()),
                key: entry.key().clone(),
                payload: entry.payload().clone(),
                metadata: entry.metadata().clone(),
                received: None,
                append_id: Some(append_id),
            };
            match context.append(again, Timestamp(*clock), Box::new(|_| {})) {
                Ok(Appended::Recorded(found)) if found == entry => {}
                other => {
                    return Err(format!("a retry of {id} did not return its entry: {other:?}"));
                }
            }
            continue;
        }
        let id = context_id(rng);
        let append_id = rng.one_in(3).then(|| {
            AppendId::try_new(format!("id-{}", rng.next_u64())).expect("a valid append id")
        });
        let context = store.context(&id).map_err(|e| e.to_string())?;
        let new = new_entry(&id, rng, append_id.clone());
        // The ack is logged with the sequence once `append` has returned it.
        let slot = Arc::new(Mutex::new(None::<Ack>));
        let done = {
            let (live, slot) = (Arc::clone(live), Arc::clone(&slot));
            Box::new(move |result: converge_storage::Result<Arc<Entry>>| {
                if let (Ok(entry), Some(ack)) = (result, lock(&slot).take()) {
                    debug_assert_eq!(ack.seq, entry.sequence());
                    lock(&live.acks).push(ack);
                }
            })
        };
        let entry = match context.append(new, Timestamp(*clock), done) {
            Ok(Appended::New(entry)) => entry,
            other => return Err(format!("an append to {id} returned {other:?}")),
        };
        *lock(&slot) =
            Some(Ack { context: id.clone(), seq: entry.sequence(), append_id: append_id.clone() });
        record(model, &id, &entry)?;
        if let Some(append_id) = append_id {
            model.with_ids.push((id, append_id, entry));
        }
    }
    while store.step() {}
    Ok(())
}

fn record(model: &mut Model, id: &ContextId, entry: &Arc<Entry>) -> Result<(), String> {
    let list = model.submitted.entry(id.clone()).or_default();
    if entry.sequence().0 != list.len() as u64 + 1 {
        return Err(format!("{id}: sequence {} after {}", entry.sequence(), list.len()));
    }
    list.push(Arc::clone(entry));
    Ok(())
}

/// A Load into a new context: entries made elsewhere, appended as one atomic batch.
fn load(
    store: &Store,
    model: &mut Model,
    live: &Arc<Live>,
    rng: &mut Rng,
    clock: &mut u64,
    step: u64,
) -> Result<(), String> {
    let id = ContextId::try_new(format!("load-{step}")).expect("a valid id");
    let source = Store::open(StoreConfig::memory()).map_err(|e| e.to_string())?;
    let made = source.context(&id).map_err(|e| e.to_string())?;
    let mut entries = Vec::new();
    for _ in 0..=rng.below(6) {
        *clock += 1;
        match made.append(new_entry(&id, rng, None), Timestamp(*clock), Box::new(|_| {})) {
            Ok(Appended::New(entry)) => entries.push((*entry).clone()),
            other => return Err(format!("making the snapshot: {other:?}")),
        }
    }
    let last = entries.last().map_or(Seq(0), Entry::sequence);
    let context = store.context(&id).map_err(|e| e.to_string())?;
    let ack = Ack { context: id.clone(), seq: last, append_id: None };
    context
        .append_verified(
            Seq(0),
            entries.iter().cloned().map(|e| (e, None)).collect(),
            on_ack(live, ack),
        )
        .map_err(|e| e.to_string())?;
    for entry in &entries {
        record(model, &id, &Arc::new(entry.clone()))?;
    }
    model.batches.push((id, Seq(1), last));
    while store.step() {}
    Ok(())
}

/// Reopens a crash state and checks it.
fn check_cut(
    cut: &Cut,
    config: &StoreConfig,
    data: &Path,
    snapshots: &Path,
    model: &Model,
    acks: &[Ack],
    clock: u64,
) -> Result<(), String> {
    let index = data.join("index");
    if index.exists() {
        std::fs::remove_dir_all(&index).map_err(|e| e.to_string())?;
    }
    copy_dir(&snapshots.join(cut.epoch.to_string()), &index);
    let config = StoreConfig { vfs: Arc::new(cut.disk.clone()), ..config.clone() };
    let store = Store::open(config).map_err(|e| format!("the node does not open: {e}"))?;
    let mut must: BTreeMap<&ContextId, Seq> = BTreeMap::new();
    for ack in &acks[..cut.must] {
        let seq = must.entry(&ack.context).or_default();
        *seq = (*seq).max(ack.seq);
    }
    for (id, submitted) in &model.submitted {
        let found = match store.find(id).map_err(|e| format!("{id}: {e}"))? {
            Some(context) => check_context(&context, submitted)?,
            None => 0,
        };
        let need = must.get(id).map_or(0, |s| s.0);
        if found < need {
            return Err(format!(
                "{id}: acknowledged entries up to {need} but only {found} survived"
            ));
        }
        for (batch, first, last) in model.batches.iter().filter(|(b, _, _)| b == id) {
            if found >= first.0 && found < last.0 {
                return Err(format!(
                    "{batch}: {found} of the atomic batch {first}..={last} survived"
                ));
            }
        }
    }
    for ack in &acks[..cut.must] {
        let Some(append_id) = &ack.append_id else { continue };
        let index = usize::try_from(ack.seq.0 - 1).expect("sequences of a test fit usize");
        let entry = &model.submitted[&ack.context][index];
        check_recorded(&store, &ack.context, append_id, entry, clock)?;
    }
    // The node takes new appends after recovery.
    let id = ContextId::try_new("after-the-cut").expect("a valid id");
    let context = store.context(&id).map_err(|e| e.to_string())?;
    let done = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&done);
    let new = new_entry(&id, &mut Rng::new(0), None);
    context
        .append(new, Timestamp(clock + 1), Box::new(move |r| *lock(&slot) = Some(r.is_ok())))
        .map_err(|e| format!("an append after recovery: {e}"))?;
    while store.step() {}
    if *lock(&done) != Some(true) {
        return Err("an append after recovery did not complete".into());
    }
    store.close().map_err(|e| format!("closing after recovery: {e}"))?;
    Ok(())
}

/// Checks one context against what was submitted; returns how many entries it holds.
fn check_context(context: &Context, submitted: &[Arc<Entry>]) -> Result<u64, String> {
    let id = context.id();
    let query = ReadQuery {
        after: Seq(0),
        before: None,
        newest_first: false,
        limit: usize::MAX,
        key: None,
        bytes_max: usize::MAX,
    };
    let found = context.read(&query).map_err(|e| format!("{id}: reading: {e}"))?;
    if found.latest.0 != found.entries.len() as u64 {
        return Err(format!("{id}: latest {} but {} entries", found.latest, found.entries.len()));
    }
    for (i, entry) in found.entries.iter().enumerate() {
        match submitted.get(i) {
            Some(expected) if expected == entry => {}
            Some(expected) => {
                return Err(format!("{id}: entry {} differs: {entry:?} vs {expected:?}", i + 1));
            }
            None => return Err(format!("{id}: entry {} was never submitted", i + 1)),
        }
    }
    let head = context.tree_head();
    let hashes: Vec<_> = found.entries.iter().map(|e| e.content_hash()).collect();
    if head.root.size.0 != hashes.len() as u64 || head.root.hash != root_of_leaves(&hashes) {
        return Err(format!("{id}: the tree head {} does not match its entries", head.root));
    }
    Ok(found.entries.len() as u64)
}

fn check_recorded(
    store: &Store,
    id: &ContextId,
    append_id: &AppendId,
    entry: &Arc<Entry>,
    clock: u64,
) -> Result<(), String> {
    let context = store.context(id).map_err(|e| e.to_string())?;
    let retry = NewEntry {
        prefix: PartialContentHash::new(id, entry.key(), entry.payload()),
        key: entry.key().clone(),
        payload: entry.payload().clone(),
        metadata: entry.metadata().clone(),
        received: None,
        append_id: Some(append_id.clone()),
    };
    match context.append(retry, Timestamp(clock), Box::new(|_| {})) {
        Ok(Appended::Recorded(found)) if &found == entry => Ok(()),
        other => Err(format!("{id}: append_id {append_id} is no longer recorded: {other:?}")),
    }
}

/// Where to put work directories: tmpfs when there is one (fsync there is free).
pub fn work_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() }
}
