//! Append: validate, hash the bulk of the entry outside any lock, hand it to the context's
//! single owner in storage, wait until durable.

use std::sync::Arc;

use converge_api::{AppendRequest, LedgerError};
use converge_core::validate::check_payload;
use converge_core::{Entry, LamportTime, PartialContentHash};
use converge_storage::{Appended, NewEntry};
use tokio::sync::oneshot;

use crate::errors;
use crate::ledger::{Inner, PERMIT_BYTES};
use crate::request;

pub(crate) async fn append(inner: &Inner, req: AppendRequest) -> Result<Arc<Entry>, LedgerError> {
    let context_id = request::context_id(&req.context_id)?;
    let key = request::key(&req.key)?;
    let metadata = request::metadata(req.metadata)?;
    let append_id = request::append_id(req.append_id)?;
    check_payload(req.payload.len(), &inner.config.limits).map_err(|e| errors::payload(&e))?;
    if *inner.closing.borrow() {
        return Err(LedgerError::Unavailable(
            "the ledger is shutting down; retry against a running node".into(),
        ));
    }

    // Admission: bound the payload bytes waiting for their fsync.
    let permits =
        u32::try_from(req.payload.len().div_ceil(PERMIT_BYTES).max(1)).unwrap_or(u32::MAX);
    let _permit = inner
        .in_flight
        .acquire_many(permits)
        .await
        .map_err(|_| LedgerError::Unavailable("the ledger is shutting down".into()))?;

    let prefix = PartialContentHash::new(&context_id, &key, &req.payload);
    let context = inner.store.context(&context_id).map_err(errors::storage)?;
    let new = NewEntry {
        key,
        payload: req.payload,
        metadata,
        received: req.received_lamport_clock.map(LamportTime),
        append_id,
        prefix,
    };
    let (requested_key, requested_payload, requested_metadata) =
        (new.key.clone(), new.payload.clone(), new.metadata.clone());
    let requested_id = new.append_id.as_ref().map(ToString::to_string).unwrap_or_default();
    let (tx, rx) = oneshot::channel();
    let outcome = context
        .append(
            new,
            inner.config.clock.now(),
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        )
        .map_err(errors::storage)?;
    if let Appended::Recorded(entry) = &outcome {
        let same = entry.key() == &requested_key
            && entry.payload() == &requested_payload
            && entry.metadata() == &requested_metadata;
        if !same {
            return Err(LedgerError::AlreadyExists(format!(
                "append_id {:?} was already used for entry {} of context {} with a different key, payload or metadata; use a new append_id for a new entry",
                requested_id,
                entry.sequence(),
                context_id
            )));
        }
    }
    match rx.await {
        Ok(result) => result.map_err(errors::storage),
        Err(_) => Err(LedgerError::Internal("the append's completion was dropped".into())),
    }
}
