//! Turning request strings and numbers into checked values, with errors a user can act on.

use std::collections::BTreeMap;

use converge_api::LedgerError;
use converge_core::{AppendId, ContextId, Key, LamportTime, Metadata};

use crate::errors::invalid;

pub(crate) fn context_id(text: &str) -> Result<ContextId, LedgerError> {
    ContextId::try_new(text).map_err(|e| invalid(&e))
}

/// An optional key filter: empty means "no filter", as on the wire.
pub(crate) fn key_filter(key: Option<&str>) -> Result<Option<Key>, LedgerError> {
    match key {
        None | Some("") => Ok(None),
        Some(k) => Key::try_new(k).map(Some).map_err(|e| invalid(&e)),
    }
}

pub(crate) fn key(text: String) -> Result<Key, LedgerError> {
    Key::try_new(text).map_err(|e| invalid(&e))
}

/// A context id taken by value (no copy of the text).
pub(crate) fn owned_context_id(text: String) -> Result<ContextId, LedgerError> {
    ContextId::try_new(text).map_err(|e| invalid(&e))
}

pub(crate) fn metadata(pairs: BTreeMap<String, String>) -> Result<Metadata, LedgerError> {
    Metadata::try_from_pairs(pairs).map_err(|e| invalid(&e))
}

/// An optional append id: empty means "none", as on the wire.
pub(crate) fn append_id(id: Option<String>) -> Result<Option<AppendId>, LedgerError> {
    match id {
        None => Ok(None),
        Some(id) if id.is_empty() => Ok(None),
        Some(id) => AppendId::try_new(id).map(Some).map_err(|e| invalid(&e)),
    }
}

/// An optional load id: empty means "none", as on the wire.
pub(crate) fn load_id(id: Option<&str>) -> Result<Option<AppendId>, LedgerError> {
    match id {
        None | Some("") => Ok(None),
        Some(id) => AppendId::try_new_load(id).map(Some).map_err(|e| invalid(&e)),
    }
}

/// The Lamport clock an append received, if any: below 2^62 (CONTRACT §2).
pub(crate) fn received(clock: Option<u64>) -> Result<Option<LamportTime>, LedgerError> {
    clock.map(converge_core::validate::check_lamport).transpose().map_err(|e| invalid(&e))
}
