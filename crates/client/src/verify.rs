//! The verifying mode: recompute what the ledger sends, with the core, before trusting it.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use converge_api::{
    AppendRequest, ConsistencyProof, GetRequest, InclusionProof, LedgerApi, LedgerError,
    ListContextsRequest, ListContextsResponse, SnapshotResponse,
};
use converge_core::limits::Limits;
use converge_core::merkle::root_of_leaves;
use converge_core::{ContextId, EMPTY_ROOT, Entry, Hash};

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

/// Entries of a Get: each hashes right, lies after `after` and before `before` (0: no bound),
/// and they ascend, or descend when the read was newest first.
pub(crate) fn entries(
    context_id: &str,
    (after, before): (u64, u64),
    newest_first: bool,
    entries: &[Arc<Entry>],
) -> Result<(), LedgerError> {
    let id = context(context_id)?;
    let mut previous: Option<u64> = None;
    for e in entries {
        entry(&id, e)?;
        let seq = e.sequence().0;
        if seq <= after || (before > 0 && seq >= before) {
            return Err(failed(format!(
                "entry {seq} is outside the range asked for (after {after}, before {before})"
            )));
        }
        if let Some(previous) = previous
            && (if newest_first { seq >= previous } else { seq <= previous })
        {
            let order = if newest_first { "newest" } else { "oldest" };
            return Err(failed(format!(
                "entry {seq} came after entry {previous} in a read {order} first"
            )));
        }
        previous = Some(seq);
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

/// Most contexts whose tree head a client pins; beyond it the pins start over (a pin only
/// ever adds protection, so forgetting one is safe, never wrong).
const PINNED_CONTEXTS_MAX: usize = 100_000;

/// The newest tree head the client has seen per context: what a Certificate Transparency
/// client keeps. A newer head is accepted only with a consistency proof from the pinned one,
/// and every root the server shows is checked against it, so a server cannot show this client
/// two different histories, or rewrite one it has already shown, without being caught.
#[derive(Debug, Default)]
pub(crate) struct Pins {
    heads: Mutex<HashMap<String, (u64, Hash)>>,
}

impl Pins {
    fn get(&self, context_id: &str) -> Option<(u64, Hash)> {
        self.lock().get(context_id).copied()
    }

    fn advance(&self, context_id: &str, size: u64, root: Hash) {
        let mut heads = self.lock();
        if heads.len() >= PINNED_CONTEXTS_MAX && !heads.contains_key(context_id) {
            heads.clear();
        }
        let pin = heads.entry(context_id.to_string()).or_insert((size, root));
        if size > pin.0 {
            *pin = (size, root);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Hash)>> {
        self.heads.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Checks that a page of contexts answers `request`: ids in strictly increasing byte order,
/// after the page token, beginning with the prefix, at most the page size, no empty context,
/// and a next-page token that does not go back.
pub(crate) fn listing(
    request: &ListContextsRequest,
    page: &ListContextsResponse,
) -> Result<(), LedgerError> {
    if page.contexts.len() > request.page_size() as usize {
        return Err(failed(format!(
            "a page of {} contexts, when at most {} were asked for",
            page.contexts.len(),
            request.page_size()
        )));
    }
    let mut previous = (!request.page_token.is_empty()).then_some(request.page_token.as_str());
    for info in &page.contexts {
        let id = info.context_id.as_str();
        context(id)?;
        if !id.starts_with(&request.prefix) {
            return Err(failed(format!("context {id:?} listed for prefix {:?}", request.prefix)));
        }
        if previous.is_some_and(|p| p >= id) {
            return Err(failed(format!(
                "context {id:?} listed after {:?}: out of order, repeated, or before the page token",
                previous.unwrap_or_default()
            )));
        }
        if info.head.tree_size == 0 {
            return Err(failed(format!("context {id:?} listed with no entries")));
        }
        previous = Some(id);
    }
    if !page.next_page_token.is_empty()
        && previous.is_some_and(|p| p > page.next_page_token.as_str())
    {
        return Err(failed("a next_page_token before the last context listed"));
    }
    Ok(())
}

/// The contexts of `page` whose heads this client has pinned (the ones it has read): each
/// listed head is checked against its pin like any other head the ledger shows.
pub(crate) async fn listed_heads(
    client: &Client,
    page: &ListContextsResponse,
) -> Result<(), LedgerError> {
    for info in &page.contexts {
        if client.pins.get(&info.context_id).is_some() {
            observe(client, &info.context_id, info.head.tree_size, info.head.root_hash).await?;
        }
    }
    Ok(())
}

/// Checks a head `(size, root)` the server showed for `context_id` against the pinned one,
/// with a consistency proof between them, and pins it if it is newer.
pub(crate) async fn observe(
    client: &Client,
    context_id: &str,
    size: u64,
    root: Hash,
) -> Result<(), LedgerError> {
    if size == 0 {
        // The empty tree is a prefix of every tree.
        return if root == EMPTY_ROOT {
            Ok(())
        } else {
            Err(failed(format!(
                "context {context_id}: an empty tree with a root other than the empty root"
            )))
        };
    }
    let Some((pinned, pinned_root)) = client.pins.get(context_id) else {
        client.pins.advance(context_id, size, root);
        return Ok(());
    };
    let fork = || {
        failed(format!(
            "context {context_id}: the ledger showed tree head {size}/{} that is not consistent with tree head {pinned}/{} it showed before: history was rewritten or forked",
            root.to_hex(),
            pinned_root.to_hex()
        ))
    };
    match size.cmp(&pinned) {
        Ordering::Equal if root == pinned_root => Ok(()),
        Ordering::Equal => Err(fork()),
        Ordering::Greater => {
            if !consistent(client, context_id, (pinned, pinned_root), (size, root)).await? {
                return Err(fork());
            }
            client.pins.advance(context_id, size, root);
            Ok(())
        }
        // An older head (a replica a little behind) must be a prefix of the pinned one.
        Ordering::Less => {
            if consistent(client, context_id, (size, root), (pinned, pinned_root)).await? {
                Ok(())
            } else {
                Err(fork())
            }
        }
    }
}

/// Whether the server proves the tree `older` (size, root) a prefix of the tree `newer`.
async fn consistent(
    client: &Client,
    context_id: &str,
    (older_size, older_root): (u64, Hash),
    (newer_size, newer_root): (u64, Hash),
) -> Result<bool, LedgerError> {
    let proof = client.fetch_consistency(context_id, older_size, newer_size).await?;
    Ok(proof.from_root == older_root && proof.to_root == newer_root && proof.verify().is_ok())
}

/// A Get from the start without a filter shows a prefix of the context (oldest first, or
/// newest first when it reaches entry 1 with none missing): its root is checked against the
/// pinned head like any other.
pub(crate) async fn prefix(
    client: &Client,
    context_id: &str,
    newest_first: bool,
    entries: &[Arc<Entry>],
) -> Result<(), LedgerError> {
    if entries.is_empty() {
        return Ok(());
    }
    if newest_first {
        let from_one = entries.last().is_some_and(|e| e.sequence().0 == 1)
            && entries.first().is_some_and(|e| e.sequence().0 == entries.len() as u64);
        if !from_one {
            return Ok(());
        }
    }
    let mut hashes: Vec<Hash> = entries.iter().map(|e| e.content_hash()).collect();
    if newest_first {
        hashes.reverse();
    }
    observe(client, context_id, hashes.len() as u64, root_of_leaves(&hashes)).await
}

/// An inclusion proof verifies for the entry at that sequence (fetched and checked too), and
/// its root is consistent with the pinned head.
pub(crate) async fn inclusion(
    client: &Client,
    context_id: &str,
    sequence: u64,
    proof: &InclusionProof,
) -> Result<(), LedgerError> {
    let get = GetRequest {
        context_id: context_id.to_string(),
        key: None,
        after_sequence: sequence - 1,
        limit: 1,
        before_sequence: 0,
        newest_first: false,
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
    observe(client, context_id, proof.tree_size, proof.root_hash).await
}

/// A consistency proof verifies, and both its roots are consistent with the pinned head.
pub(crate) async fn consistency(
    client: &Client,
    context_id: &str,
    proof: &ConsistencyProof,
) -> Result<(), LedgerError> {
    proof.verify().map_err(|e| failed(format!("consistency proof: {e}")))?;
    observe(client, context_id, proof.from_size, proof.from_root).await?;
    observe(client, context_id, proof.to_size, proof.to_root).await
}
