//! Append: validate, hash the bulk of the entry outside any lock, hand it to the context's
//! single owner in storage, wait until durable.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use converge_api::{AppendRequest, LedgerError};
use converge_core::limits::PAYLOAD_BYTES_MAX_CEILING;
use converge_core::validate::check_payload;
use converge_core::{
    AppendId, ContextId, Entry, Key, LamportTime, Metadata, PartialContentHash, Timestamp,
};
use converge_storage::context::Context;
use converge_storage::{Appended, Completion, NewEntry};
use tokio::sync::oneshot;

use crate::admission::Admitted;
use crate::errors;
use crate::ledger::Inner;
use crate::request;

pub(crate) async fn append(inner: &Inner, req: AppendRequest) -> Result<Arc<Entry>, LedgerError> {
    queue(inner, req).await?.wait().await
}

/// Validates `req`, waits for room in the append budget, and hands it to its context: appends
/// queued one after another take sequences in that order. Returns before it is durable.
pub(crate) async fn queue(inner: &Inner, req: AppendRequest) -> Result<Queued, LedgerError> {
    queue_checked(inner, Checked::new(inner, req)?).await
}

async fn queue_checked(inner: &Inner, checked: Checked) -> Result<Queued, LedgerError> {
    closed(inner)?;
    // Admission: bound the bytes waiting for their fsync, held until durable or failed.
    let admitted = inner.admission.admit(checked.bytes).await?;
    let context = inner.store.context(&checked.context_id).map_err(errors::storage)?;
    room(inner, &context).await;
    enqueue(inner, &context, checked, inner.config.clock.now(), Some(admitted))
}

/// Waits, when `context` holds no entries that only memory holds, until the store has room for
/// one more context that does ([`converge_storage::store::Store::when_room`]): such a context
/// cannot be evicted until a checkpoint, so this keeps appends spread over very many contexts
/// within the memory budget, at the pace the checkpointer writes them.
async fn room(inner: &Inner, context: &Context) {
    if context.is_dirty() {
        return;
    }
    let (tx, mut rx) = oneshot::channel();
    inner.store.when_room(Box::new(move || {
        let _ = tx.send(());
    }));
    if let Err(oneshot::error::TryRecvError::Empty) = rx.try_recv() {
        inner.checkpoint_waits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // A dropped sender means the store let go of its waiters; the append meets its
        // refusal.
        let _ = rx.await;
    }
}

/// Validates `req` and queues it, stamped at `now`, before returning: appends queued one after
/// another are stamped in that order. Returns the entry at once (its fields are fixed when it
/// is queued) and the wait for its durability. No admission and no closing check: a
/// replicated ledger applies what its log already holds.
pub(crate) fn apply(
    inner: &Inner,
    req: AppendRequest,
    now: Timestamp,
) -> Result<(Arc<Entry>, impl Future<Output = Result<(), LedgerError>> + Send + 'static), LedgerError>
{
    // The leader checked the payload against the cluster's limit before proposing; apply
    // judges only by the contract's constants, never by this node's configuration.
    let checked = Checked::within(req, PAYLOAD_BYTES_MAX_CEILING)?;
    let context = inner.store.context(&checked.context_id).map_err(errors::storage)?;
    let queued = enqueue(inner, &context, checked, now, None)?;
    if let Some(refused) = queued.refused {
        return Err(refused);
    }
    let Queued { entry, rx, .. } = queued;
    Ok((entry, until_durable(rx)))
}

/// Checks `req` as an append with payloads up to `payload_bytes_max` would be checked,
/// without appending: what a replicated ledger runs where a request enters, before it is
/// proposed, so that a request the ledger refuses never enters the replicated log.
pub fn check(req: &AppendRequest, payload_bytes_max: usize) -> Result<(), LedgerError> {
    Checked::within(req.clone(), payload_bytes_max).map(drop)
}

/// Waits for a completion, if there is one (memory mode has none: it is durable at once).
async fn until_durable(rx: Option<Durable>) -> Result<(), LedgerError> {
    match rx {
        None => Ok(()),
        rx => settled(rx).await.map(|_| ()),
    }
}

/// Most appends of one context `many` stamps under one lock and waits for with one wake-up.
const RUN_MAX: usize = 1024;

/// `append_many` on the embedded ledger: the appends of each context, in order, go in runs
/// (one admission, one lock, one atomic log batch and one wake-up per run); an append with an
/// `append_id` goes alone, after the run before it, since it may be a retry. One outcome per
/// request, in order; a refused request does not stop the others.
pub(crate) async fn many(
    inner: &Inner,
    requests: Vec<AppendRequest>,
) -> Vec<Result<Arc<Entry>, LedgerError>> {
    let mut outcomes: Vec<Option<Result<Arc<Entry>, LedgerError>>> =
        std::iter::repeat_with(|| None).take(requests.len()).collect();
    let mut waits: Vec<(Vec<usize>, Wait)> = Vec::new();
    let mut runs: std::collections::HashMap<String, Vec<(usize, Checked)>> =
        std::collections::HashMap::new();
    for (i, req) in requests.into_iter().enumerate() {
        let checked = match Checked::new(inner, req) {
            Ok(checked) => checked,
            Err(refused) => {
                outcomes[i] = Some(Err(refused));
                continue;
            }
        };
        if checked.append_id.is_some() {
            if let Some(run) = runs.remove(checked.context_id.as_str()) {
                waits.push(submit_run(inner, run).await);
            }
            waits.push((vec![i], Wait::One(queue_checked(inner, checked).await)));
            continue;
        }
        // The context's name is copied once per run, not once per append.
        let full = if let Some(run) = runs.get_mut(checked.context_id.as_str()) {
            run.push((i, checked));
            (run.len() >= RUN_MAX).then(|| run[0].1.context_id.as_str().to_owned())
        } else {
            runs.insert(checked.context_id.as_str().to_owned(), vec![(i, checked)]);
            None
        };
        if let Some(run) = full.and_then(|context| runs.remove(&context)) {
            waits.push(submit_run(inner, run).await);
        }
    }
    for (_, run) in runs {
        waits.push(submit_run(inner, run).await);
    }
    for (indexes, wait) in waits {
        match wait {
            Wait::One(queued) => {
                let outcome = match queued {
                    Ok(queued) => queued.wait().await,
                    Err(refused) => Err(refused),
                };
                outcomes[indexes[0]] = Some(outcome);
            }
            Wait::Run(Err(refused)) => {
                for i in indexes {
                    outcomes[i] = Some(Err(refused.clone()));
                }
            }
            Wait::Run(Ok((entries, rx))) => {
                let durable = until_durable(rx).await;
                for (i, entry) in indexes.into_iter().zip(entries) {
                    outcomes[i] = Some(durable.clone().map(|()| entry));
                }
            }
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(LedgerError::Internal("an append had no outcome".into()))))
        .collect()
}

/// What `many` waits for: one append, or a run of one context.
enum Wait {
    One(Result<Queued, LedgerError>),
    Run(Result<(Vec<Arc<Entry>>, Option<Durable>), LedgerError>),
}

/// The wait for an entry's durability (its completion).
type Durable = oneshot::Receiver<converge_storage::Result<Arc<Entry>>>;

/// Queues a run of one context's appends together.
async fn submit_run(inner: &Inner, run: Vec<(usize, Checked)>) -> (Vec<usize>, Wait) {
    let (indexes, checked): (Vec<usize>, Vec<Checked>) = run.into_iter().unzip();
    let submitted = async {
        closed(inner)?;
        let bytes = checked.iter().map(|c| c.bytes).sum();
        let admitted = inner.admission.admit(bytes).await?;
        let context = inner.store.context(&checked[0].context_id).map_err(errors::storage)?;
        room(inner, &context).await;
        let news = checked
            .into_iter()
            .map(|c| {
                let prefix = PartialContentHash::new(&c.context_id, &c.key, &c.payload);
                NewEntry {
                    key: c.key,
                    payload: c.payload,
                    metadata: c.metadata,
                    received: c.received,
                    append_id: None,
                    prefix,
                }
            })
            .collect();
        let (completion, rx) = completion(inner, Some(admitted));
        let entries = context
            .append_batch(news, inner.config.clock.now(), completion)
            .map_err(errors::storage)?;
        Ok((entries, rx))
    };
    (indexes, Wait::Run(submitted.await))
}

/// Refuses appends once the ledger is shutting down.
fn closed(inner: &Inner) -> Result<(), LedgerError> {
    if inner.closing.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(LedgerError::Unavailable(
            "the ledger is shutting down; retry against a running node".into(),
        ));
    }
    Ok(())
}

/// An append request whose fields passed validation.
struct Checked {
    context_id: ContextId,
    key: Key,
    payload: Bytes,
    metadata: Metadata,
    append_id: Option<AppendId>,
    received: Option<LamportTime>,
    /// What it holds against the append budget.
    bytes: usize,
}

impl Checked {
    fn new(inner: &Inner, req: AppendRequest) -> Result<Self, LedgerError> {
        Self::within(req, inner.config.limits.payload_bytes_max)
    }

    /// `req` checked, with payloads up to `payload_bytes_max`.
    fn within(req: AppendRequest, payload_bytes_max: usize) -> Result<Self, LedgerError> {
        let context_id = request::owned_context_id(req.context_id)?;
        let key = request::key(req.key)?;
        let metadata = request::metadata(req.metadata)?;
        let append_id = request::append_id(req.append_id)?;
        let received = request::received(req.received_lamport_clock)?;
        check_payload(req.payload.len(), payload_bytes_max).map_err(|e| errors::payload(&e))?;
        let bytes = req.payload.len()
            + key.as_str().len()
            + metadata.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
            + append_id.as_ref().map_or(0, |id| id.as_str().len());
        Ok(Self { context_id, key, payload: req.payload, metadata, append_id, received, bytes })
    }
}

/// An entry handed to its context: what it is, whether it was refused (an `append_id` reused
/// with other content), and the wait for its durability (`None` in memory mode).
pub(crate) struct Queued {
    entry: Arc<Entry>,
    refused: Option<LedgerError>,
    rx: Option<oneshot::Receiver<converge_storage::Result<Arc<Entry>>>>,
}

impl Queued {
    /// The entry once durable, or why not.
    pub(crate) async fn wait(self) -> Result<Arc<Entry>, LedgerError> {
        if let Some(refused) = self.refused {
            return Err(refused);
        }
        match self.rx {
            None => Ok(self.entry),
            rx => settled(rx).await,
        }
    }
}

/// Waits for an entry's completion (callers handle memory mode, which has none).
async fn settled(
    rx: Option<oneshot::Receiver<converge_storage::Result<Arc<Entry>>>>,
) -> Result<Arc<Entry>, LedgerError> {
    let Some(rx) = rx else {
        return Err(LedgerError::Internal("no completion to wait for".into()));
    };
    match rx.await {
        Ok(result) => result.map_err(errors::storage),
        Err(_) => Err(LedgerError::Internal("the append's completion was dropped".into())),
    }
}

/// Hands the entry to `context`, its context (which stamps it at `now`); `admitted` is
/// released when it is durable or has failed.
fn enqueue(
    inner: &Inner,
    context: &Arc<Context>,
    checked: Checked,
    now: Timestamp,
    admitted: Option<Admitted>,
) -> Result<Queued, LedgerError> {
    let Checked { context_id, key, payload, metadata, append_id, received, .. } = checked;
    let prefix = PartialContentHash::new(&context_id, &key, &payload);
    let new = NewEntry { key, payload, metadata, received, append_id, prefix };
    // What to compare a recorded entry with, if this append may be a retry.
    let requested = new
        .append_id
        .as_ref()
        .map(|id| (id.to_string(), new.key.clone(), new.payload.clone(), new.metadata.clone()));
    let (completion, rx) = completion(inner, admitted);
    let outcome = context.append(new, now, completion).map_err(errors::storage)?;
    let refused = match (&outcome, requested) {
        (Appended::Recorded(entry), Some((id, key, payload, metadata)))
            if entry.key() != &key
                || entry.payload() != &payload
                || entry.metadata() != &metadata =>
        {
            Some(LedgerError::AlreadyExists(format!(
                "append_id {id:?} was already used for entry {} of context {context_id} with a different key, payload or metadata; use a new append_id for a new entry",
                entry.sequence()
            )))
        }
        _ => None,
    };
    let (Appended::New(entry) | Appended::Recorded(entry)) = outcome;
    Ok(Queued { entry, refused, rx })
}

/// The completion of an append (or a run): releases `admitted` and, on disk, sends the
/// outcome to the returned wait. Memory mode completes before `append` returns, so it needs no
/// channel.
fn completion(inner: &Inner, admitted: Option<Admitted>) -> (Completion, Option<Durable>) {
    if inner.store.is_memory() {
        return (Box::new(move |_| drop(admitted)), None);
    }
    let (tx, rx) = oneshot::channel();
    let completion: Completion = Box::new(move |result| {
        drop(admitted);
        drop(tx.send(result));
    });
    (completion, Some(rx))
}
