//! Append: validate, hash the bulk of the entry outside any lock, hand it to the context's
//! single owner in storage, wait until durable.

use std::sync::Arc;

use converge_api::{AppendRequest, LedgerError};
use converge_core::validate::check_payload;
use converge_core::{Entry, PartialContentHash};
use converge_storage::{Appended, Completion, NewEntry};
use tokio::sync::oneshot;

use crate::errors;
use crate::ledger::Inner;
use crate::request;

pub(crate) async fn append(inner: &Inner, req: AppendRequest) -> Result<Arc<Entry>, LedgerError> {
    let context_id = request::owned_context_id(req.context_id)?;
    let key = request::key(req.key)?;
    let metadata = request::metadata(req.metadata)?;
    let append_id = request::append_id(req.append_id)?;
    let received = request::received(req.received_lamport_clock)?;
    check_payload(req.payload.len(), &inner.config.limits).map_err(|e| errors::payload(&e))?;
    if inner.closing.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(LedgerError::Unavailable(
            "the ledger is shutting down; retry against a running node".into(),
        ));
    }

    // Admission: bound the bytes waiting for their fsync, held until durable or failed.
    let bytes = req.payload.len()
        + key.as_str().len()
        + metadata.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
        + append_id.as_ref().map_or(0, |id| id.as_str().len());
    let admitted = inner.admission.admit(bytes).await?;

    let prefix = PartialContentHash::new(&context_id, &key, &req.payload);
    let context = inner.store.context(&context_id).map_err(errors::storage)?;
    let new = NewEntry { key, payload: req.payload, metadata, received, append_id, prefix };
    // What to compare a recorded entry with, if this append may be a retry.
    let requested = new
        .append_id
        .as_ref()
        .map(|id| (id.to_string(), new.key.clone(), new.payload.clone(), new.metadata.clone()));
    // Memory mode completes before `append` returns, so it needs no channel.
    let (completion, rx): (Completion, _) = if inner.store.is_memory() {
        (Box::new(move |_| drop(admitted)), None)
    } else {
        let (tx, rx) = oneshot::channel();
        (
            Box::new(move |result| {
                drop(admitted);
                drop(tx.send(result));
            }),
            Some(rx),
        )
    };
    let outcome =
        context.append(new, inner.config.clock.now(), completion).map_err(errors::storage)?;
    if let (Appended::Recorded(entry), Some((id, key, payload, metadata))) = (&outcome, requested)
        && (entry.key() != &key || entry.payload() != &payload || entry.metadata() != &metadata)
    {
        return Err(LedgerError::AlreadyExists(format!(
            "append_id {id:?} was already used for entry {} of context {context_id} with a different key, payload or metadata; use a new append_id for a new entry",
            entry.sequence()
        )));
    }
    let Some(rx) = rx else {
        let (Appended::New(entry) | Appended::Recorded(entry)) = outcome;
        return Ok(entry);
    };
    match rx.await {
        Ok(result) => result.map_err(errors::storage),
        Err(_) => Err(LedgerError::Internal("the append's completion was dropped".into())),
    }
}
