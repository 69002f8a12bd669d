//! Load: verify the whole blob first, compare it with the context's history by Merkle
//! consistency, then append only the missing suffix as one atomic batch — or change nothing.

use std::sync::Arc;

use converge_api::{LedgerError, LoadRequest, LoadResponse};
use converge_core::limits::PAYLOAD_BYTES_MAX_CEILING;
use converge_core::merkle::CompactTree;
use converge_core::snapshot::{self, VerifiedSnapshot};
use converge_core::{AppendId, ContextId, Entry, Hash, Limits, Seq, TreeSize};
use converge_storage::{Context, Error as StorageError};

use crate::errors;
use crate::ledger::Inner;
use crate::request;

/// Attempts before giving up when appends race with a load into the same context.
const LOAD_ATTEMPTS_MAX: usize = 16;

pub(crate) async fn load(
    inner: &Arc<crate::ledger::Inner>,
    req: LoadRequest,
) -> Result<LoadResponse, LedgerError> {
    let target = request::context_id(&req.context_id)?;
    if inner.closing.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(LedgerError::Unavailable(
            "the ledger is shutting down; retry against a running node".into(),
        ));
    }
    // The blob is held until the load is durable: it counts against the append budget.
    let admitted = inner.admission.admit(req.snapshot.len()).await?;
    let inner = Arc::clone(inner);
    tokio::task::spawn_blocking(move || {
        let loaded = load_blocking(&inner, &target, &req, &inner.config.limits);
        drop(admitted);
        loaded
    })
    .await
    .map_err(|e| LedgerError::Internal(format!("load panicked: {e}")))?
}

/// Load for a replicated ledger's apply: no admission and no closing check (the log already
/// holds the request; refusing it here would make this replica differ from the others).
pub(crate) async fn apply(
    inner: &Arc<crate::ledger::Inner>,
    req: LoadRequest,
) -> Result<LoadResponse, LedgerError> {
    let target = request::context_id(&req.context_id)?;
    let inner = Arc::clone(inner);
    // The leader checked the blob against the cluster's limits before proposing; apply judges
    // only by the contract's constants, never by this node's configuration.
    let limits = Limits { payload_bytes_max: PAYLOAD_BYTES_MAX_CEILING, ..inner.config.limits };
    tokio::task::spawn_blocking(move || load_blocking(&inner, &target, &req, &limits))
        .await
        .map_err(|e| LedgerError::Internal(format!("load panicked: {e}")))?
}

/// Checks `req` as a load with `limits` would check it (the context id, and the whole blob:
/// format, integrity, every content hash and the root), without loading: what a replicated
/// ledger runs where a request enters, before it is proposed. What depends on the context's
/// state (`fail_if_exists`, a diverging history) is decided when it is applied.
pub fn check(req: &LoadRequest, limits: &Limits) -> Result<(), LedgerError> {
    request::context_id(&req.context_id)?;
    request::load_id(req.load_id.as_deref())?;
    verify(req, limits).map(drop)
}

/// The blob decoded and every hash checked, on two threads.
fn verify(req: &LoadRequest, limits: &Limits) -> Result<VerifiedSnapshot, LedgerError> {
    snapshot::decode_with(&req.snapshot, limits, |entries, check| {
        in_two(entries.split_at(entries.len() / 2), check);
    })
    .map_err(|e| errors::snapshot(&e))
}

fn load_blocking(
    inner: &Inner,
    target: &ContextId,
    req: &LoadRequest,
    limits: &Limits,
) -> Result<LoadResponse, LedgerError> {
    // Everything is verified before storage sees a byte.
    let load_id = request::load_id(req.load_id.as_deref())?.map(LoadIds::new);
    let verified = verify(req, limits)?;
    let verified = rehash(verified, target);
    let context = inner.store.context(target).map_err(errors::storage)?;
    for _ in 0..LOAD_ATTEMPTS_MAX {
        if let Some(ids) = &load_id
            && let Some(first) = context.sequence_of(&ids.first).map_err(errors::storage)?
        {
            return recorded(&context, &verified, ids, first);
        }
        let latest = context.latest();
        if latest.0 > 0 && req.fail_if_exists {
            return Err(LedgerError::AlreadyExists(format!(
                "context {target} already has {latest} entries; load with fail_if_exists = false to append only what the snapshot adds"
            )));
        }
        let n = verified.entries().len() as u64;
        check_prefix(&context, &verified, latest)?;
        // `latest < n`, a length of a slice in memory, so it fits usize.
        let Some(suffix) = usize::try_from(latest.0)
            .ok()
            .and_then(|l| verified.entries().get(l..))
            .filter(|s| !s.is_empty())
        else {
            return Ok(LoadResponse { entries_restored: 0, latest_sequence: latest.0 });
        };
        let mut suffix: Vec<(Entry, Option<AppendId>)> =
            suffix.iter().map(|e| (e.clone(), None)).collect();
        if let Some(ids) = &load_id {
            suffix[0].1 = Some(ids.first.clone());
            if let [_, .., last] = suffix.as_mut_slice() {
                last.1 = Some(ids.last.clone());
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        match context.append_verified(
            latest,
            suffix,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        ) {
            Ok(()) => {
                rx.recv()
                    .map_err(|_| LedgerError::Internal("the load's completion was dropped".into()))?
                    .map_err(errors::storage)?;
                return Ok(LoadResponse { entries_restored: n - latest.0, latest_sequence: n });
            }
            // Appends raced with the load: once they settle, compare again.
            Err(StorageError::Moved { .. }) => settled(&context),
            Err(other) => return Err(errors::storage(other)),
        }
    }
    Err(LedgerError::Unavailable(format!(
        "context {target} kept changing while the snapshot was being loaded; retry when appends to it pause"
    )))
}

/// What a load with a `load_id` records: the id on the first entry it restores, and an id
/// derived from it on the last (when there are two or more), so a retry can tell which entries
/// that load restored.
struct LoadIds {
    first: AppendId,
    last: AppendId,
}

impl LoadIds {
    fn new(id: AppendId) -> Self {
        let digest = converge_core::hash::leaf_hash(id.as_str().as_bytes()).to_hex();
        let last = AppendId::try_new(format!("load-end:{digest}"))
            .expect("73 bytes of ASCII is an append id");
        Self { first: id, last }
    }
}

/// A retried load: its id was recorded on entry `first`, where the first attempt's restored
/// entries began. Once that attempt is durable, it is answered as it was, if the blob is the
/// one it loaded: consistent with the context, and ending where those entries ended.
fn recorded(
    context: &Context,
    verified: &VerifiedSnapshot,
    ids: &LoadIds,
    first: Seq,
) -> Result<LoadResponse, LedgerError> {
    settled(context);
    let n = verified.entries().len() as u64;
    let end = context.sequence_of(&ids.last).map_err(errors::storage)?.unwrap_or(first);
    if end.0 != n || check_prefix(context, verified, context.latest()).is_err() {
        return Err(LedgerError::AlreadyExists(format!(
            "load_id {:?} was already used for the load that restored entries {first} to {end} of context {}, with a different snapshot; use a new load_id for a new load",
            ids.first.as_str(),
            context.id()
        )));
    }
    Ok(LoadResponse { entries_restored: n - first.0 + 1, latest_sequence: n })
}

/// Blocks until nothing is in flight in `context`.
fn settled(context: &Context) {
    let (tx, rx) = std::sync::mpsc::channel();
    context.when_settled(Box::new(move || {
        let _ = tx.send(());
    }));
    let _ = rx.recv();
}

/// The snapshot's entries hashed for `target`: the context id is part of every content hash.
fn rehash(verified: VerifiedSnapshot, target: &ContextId) -> VerifiedSnapshot {
    if verified.context() == target {
        return verified;
    }
    verified.rehash_for_with(target.clone(), |entries, rehash| {
        in_two(entries.split_at_mut(entries.len() / 2), rehash);
    })
}

/// Runs `work` on both halves at once, one on a second thread: hashing (checking a snapshot's
/// content hashes, rehashing it for another context) is most of a load's CPU.
fn in_two<S: Send>((left, right): (S, S), work: impl Fn(S) + Sync) {
    std::thread::scope(|scope| {
        scope.spawn(|| work(left));
        work(right);
    });
}

/// The context's first `min(latest, n)` entries must be the blob's: equal Merkle roots at that
/// size. Otherwise the histories diverge, and the error names the first sequence that differs.
fn check_prefix(
    context: &Context,
    verified: &VerifiedSnapshot,
    latest: Seq,
) -> Result<(), LedgerError> {
    let blob_hashes: Vec<Hash> = verified.entries().iter().map(Entry::content_hash).collect();
    let common_len =
        usize::try_from(latest.0).map_or(blob_hashes.len(), |l| l.min(blob_hashes.len()));
    let common = common_len as u64;
    if common == 0 {
        return Ok(());
    }
    let ours = context.root_at(TreeSize(common)).map_err(errors::storage)?;
    let theirs = CompactTree::from_leaves(&blob_hashes[..common_len]).root();
    if ours == theirs {
        return Ok(());
    }
    let existing = context.leaf_hashes(Seq(1), Seq(common)).map_err(errors::storage)?;
    let first = existing
        .iter()
        .zip(&blob_hashes)
        .position(|(a, b)| a != b)
        .map_or(common, |i| i as u64 + 1);
    Err(LedgerError::FailedPrecondition(format!(
        "the snapshot diverges from context {} at sequence {first}: entry {first} differs, and history is never rewritten",
        context.id()
    )))
}
