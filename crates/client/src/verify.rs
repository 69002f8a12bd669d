//! The verifying mode: recompute what the ledger sends, with the core, before trusting it.

use std::sync::Arc;

use converge_api::{
    AppendRequest, ConsistencyProof, GetRequest, InclusionProof, LedgerApi, LedgerError,
    SnapshotResponse,
};
use converge_core::limits::Limits;
use converge_core::{ContextId, Entry};

use crate::Client;

fn failed(what: impl std::fmt::Display) -> LedgerError {
    LedgerError::Verification(what.to_string())
}

fn context(id: &str) -> Result<ContextId, LedgerError> {
    ContextId::try_new(id).map_err(|e| LedgerError::InvalidArgument(e.to_string()))
}

/// An entry's content hash matches its fields in `context_id`.
pub(crate) fn entry(context_id: &ContextId, entry: &Entry) -> Result<(), LedgerError> {
    entry.verify(context_id).map_err(|e| failed(format!("context {context_id}: {e}")))
}

/// The entry an append returned is the one asked for, and hashes right.
pub(crate) fn appended(sent: &AppendRequest, got: &Entry) -> Result<(), LedgerError> {
    entry(&context(&sent.context_id)?, got)?;
    let same = got.key().as_str() == sent.key
        && got.payload() == &sent.payload
        && got.metadata().as_map() == &sent.metadata;
    if same {
        Ok(())
    } else {
        Err(failed(format!(
            "the ledger recorded entry {} with other fields than were sent",
            got.sequence()
        )))
    }
}

/// Entries of a Get: each hashes right and they ascend after `after`.
pub(crate) fn entries(
    context_id: &str,
    after: u64,
    entries: &[Arc<Entry>],
) -> Result<(), LedgerError> {
    let id = context(context_id)?;
    let mut previous = after;
    for e in entries {
        entry(&id, e)?;
        if e.sequence().0 <= previous {
            return Err(failed(format!("entry {} came after entry {previous}", e.sequence())));
        }
        previous = e.sequence().0;
    }
    Ok(())
}

/// A snapshot blob decodes and verifies, and carries the root the response names.
pub(crate) fn snapshot(context_id: &str, resp: &SnapshotResponse) -> Result<(), LedgerError> {
    let limits = Limits {
        payload_bytes_max: converge_core::limits::PAYLOAD_BYTES_MAX_CEILING,
        response_bytes_max: usize::MAX,
    };
    let snap = converge_core::snapshot::decode(&resp.snapshot, &limits)
        .map_err(|e| failed(format!("the snapshot does not verify: {e}")))?;
    if snap.context().as_str() != context_id {
        return Err(failed(format!(
            "the snapshot is of context {}, not {context_id}",
            snap.context()
        )));
    }
    let head = snap.tree_head();
    if head.root.hash != resp.merkle_root || head.root.size.0 != resp.entry_count {
        return Err(failed("the snapshot's tree head differs from the response's metadata"));
    }
    Ok(())
}

/// The context's tree head now, and the size a request's 0 stands for.
async fn head_for(
    client: &Client,
    context_id: &str,
    size: u64,
) -> Result<(u64, converge_core::Hash), LedgerError> {
    let head = client.tree_head(context_id).await?;
    Ok((if size == 0 { head.tree_size } else { size }, head.root_hash))
}

/// An inclusion proof verifies for the entry at that sequence (fetched and checked too), and
/// its root is the tree head's when it is for the current tree.
pub(crate) async fn inclusion(
    client: &Client,
    context_id: &str,
    sequence: u64,
    tree_size: u64,
    proof: &InclusionProof,
) -> Result<(), LedgerError> {
    let get = GetRequest {
        context_id: context_id.to_string(),
        key: None,
        after_sequence: sequence - 1,
        limit: 1,
    };
    let found = client.get(get).await?;
    let leaf = found
        .entries
        .first()
        .filter(|e| e.sequence().0 == sequence)
        .ok_or_else(|| failed(format!("entry {sequence} cannot be read")))?;
    proof
        .verify(&leaf.content_hash())
        .map_err(|e| failed(format!("inclusion proof of entry {sequence}: {e}")))?;
    let (size, root) = head_for(client, context_id, tree_size).await?;
    if size == proof.tree_size && tree_size == 0 && root != proof.root_hash {
        return Err(failed("the inclusion proof's root is not the tree head's"));
    }
    Ok(())
}

/// A consistency proof verifies, and its newer root is the tree head's when it is for the
/// current tree.
pub(crate) async fn consistency(
    client: &Client,
    context_id: &str,
    to_size: u64,
    proof: &ConsistencyProof,
) -> Result<(), LedgerError> {
    proof.verify().map_err(|e| failed(format!("consistency proof: {e}")))?;
    let (size, root) = head_for(client, context_id, to_size).await?;
    if to_size == 0 && size == proof.to_size && root != proof.to_root {
        return Err(failed("the consistency proof's newer root is not the tree head's"));
    }
    Ok(())
}
