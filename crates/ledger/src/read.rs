//! Get, Snapshot, `ListContexts` and the integrity queries: everything that reads.

use converge_api::{
    ConsistencyProof, ContextInfo, GetRequest, GetResponse, InclusionProof, LedgerError,
    ListContextsRequest, ListContextsResponse, SnapshotResponse, TreeHead,
};
use converge_core::merkle::{consistency_nodes, inclusion_nodes};
use converge_core::snapshot::{FORMAT_VERSION, SnapshotEncoder};
use converge_core::{EMPTY_ROOT, LeafIndex, RootHash, Seq, TreeSize};
use converge_storage::{Context, ReadQuery};

use crate::errors;
use crate::ledger::Inner;
use crate::request;

/// Gets of at most this many entries read inline; larger ones move to a blocking thread so a
/// big read from disk never stalls the async runtime.
const INLINE_READ_ENTRIES_MAX: u32 = 1024;

/// Entries read per page while building a snapshot.
const SNAPSHOT_PAGE_ENTRIES: usize = 4096;

pub(crate) async fn get(inner: &Inner, req: GetRequest) -> Result<GetResponse, LedgerError> {
    let context_id = request::context_id(&req.context_id)?;
    let key = request::key_filter(req.key.as_deref())?;
    let Some(context) = inner.store.find(&context_id).map_err(errors::storage)? else {
        return Ok(GetResponse::default());
    };
    let bytes_max = inner.config.limits.response_bytes_max;
    let query = ReadQuery {
        after: Seq(req.after_sequence),
        before: (req.before_sequence > 0).then_some(Seq(req.before_sequence)),
        newest_first: req.newest_first,
        limit: if req.limit == 0 { usize::MAX } else { req.limit as usize },
        key,
        bytes_max,
    };
    let result = if req.limit == 0 || req.limit > INLINE_READ_ENTRIES_MAX {
        tokio::task::spawn_blocking(move || context.read(&query))
            .await
            .map_err(|e| LedgerError::Internal(format!("read panicked: {e}")))?
    } else {
        context.read(&query)
    }
    .map_err(errors::storage)?;
    if result.over_budget {
        let (which, page) = match (req.newest_first, req.before_sequence) {
            (true, 0) => ("newest entries".to_string(), "before_sequence"),
            (true, before) => {
                (format!("newest entries before sequence {before}"), "before_sequence")
            }
            (false, _) => {
                (format!("entries after sequence {}", req.after_sequence), "after_sequence")
            }
        };
        return Err(LedgerError::ResourceExhausted(format!(
            "the {which} would make a response larger than {bytes_max} bytes; page with {page} and a smaller limit (returned entries so far: {}), or raise the ledger's response_bytes_max setting",
            result.entries.len()
        )));
    }
    Ok(GetResponse { entries: result.entries, latest_sequence: result.latest.0 })
}

pub(crate) async fn snapshot(
    inner: &Inner,
    context_id: &str,
) -> Result<SnapshotResponse, LedgerError> {
    let context_id = request::context_id(context_id)?;
    let context = inner.store.find(&context_id).map_err(errors::storage)?;
    let bytes_max = inner.config.limits.response_bytes_max;
    let created_at_ns = inner.config.clock.now().0;
    let (blob, root) =
        tokio::task::spawn_blocking(move || encode(&context_id, context.as_deref(), bytes_max))
            .await
            .map_err(|e| LedgerError::Internal(format!("snapshot panicked: {e}")))??;
    Ok(SnapshotResponse {
        snapshot: blob.into(),
        sequence: root.size.0,
        created_at_ns,
        entry_count: root.size.0,
        version: FORMAT_VERSION,
        merkle_root: root.hash,
    })
}

/// Encodes the context as it is at its current tree head: entries are immutable, so reading
/// them after taking the head gives exactly that state, whatever is appended meanwhile.
fn encode(
    context_id: &converge_core::ContextId,
    context: Option<&Context>,
    bytes_max: usize,
) -> Result<(Vec<u8>, RootHash), LedgerError> {
    let root =
        context.map_or(RootHash { size: TreeSize(0), hash: EMPTY_ROOT }, |c| c.tree_head().root);
    let too_large = || {
        LedgerError::ResourceExhausted(format!(
            "a snapshot of context {context_id} ({} entries) would be larger than {bytes_max} bytes; page through it with Get, or raise the ledger's response_bytes_max setting",
            root.size
        ))
    };
    let mut encoder = SnapshotEncoder::new(context_id, root, 64 * 1024);
    let mut after = Seq(0);
    while after.0 < root.size.0 {
        let Some(context) = context else { break };
        let left = usize::try_from(root.size.0 - after.0).unwrap_or(usize::MAX);
        let limit = left.min(SNAPSHOT_PAGE_ENTRIES);
        let budget = bytes_max.saturating_sub(encoder.len());
        let page = context
            .read(&ReadQuery {
                after,
                before: None,
                newest_first: false,
                limit,
                key: None,
                bytes_max: budget,
            })
            .map_err(errors::storage)?;
        if page.over_budget || page.entries.is_empty() {
            return Err(too_large());
        }
        for entry in &page.entries {
            encoder.push(entry);
        }
        if encoder.len() > bytes_max {
            return Err(too_large());
        }
        after = page.entries.last().map_or(after, |e| e.sequence());
    }
    let blob = encoder.finish().map_err(|e| LedgerError::Internal(e.to_string()))?;
    if blob.len() > bytes_max {
        return Err(too_large());
    }
    Ok((blob, root))
}

pub(crate) fn tree_head(inner: &Inner, context_id: &str) -> Result<TreeHead, LedgerError> {
    let context_id = request::context_id(context_id)?;
    let head = inner.store.find(&context_id).map_err(errors::storage)?.map(|c| c.tree_head());
    Ok(match head {
        Some(head) => api_head(head),
        None => TreeHead { tree_size: 0, root_hash: EMPTY_ROOT, lamport_clock: 0 },
    })
}

/// A context's tree head as the API gives it.
fn api_head(head: converge_core::TreeHead) -> TreeHead {
    TreeHead {
        tree_size: head.root.size.0,
        root_hash: head.root.hash,
        lamport_clock: head.lamport.0,
    }
}

/// The context, its current size, and the size asked for (0: current), checked.
fn sized(
    inner: &Inner,
    context_id: &str,
    asked: u64,
) -> Result<(std::sync::Arc<Context>, TreeSize), LedgerError> {
    let id = request::context_id(context_id)?;
    let context = inner.store.find(&id).map_err(errors::storage)?.ok_or_else(|| {
        LedgerError::OutOfRange(format!(
            "context {id} has no entries, so there is nothing to prove"
        ))
    })?;
    let current = context.tree_head().root.size;
    let size = if asked == 0 { current } else { TreeSize(asked) };
    if size > current {
        return Err(LedgerError::OutOfRange(format!(
            "tree size {size} is beyond context {id}, which has {current} entries"
        )));
    }
    Ok((context, size))
}

pub(crate) fn prove_inclusion(
    inner: &Inner,
    context_id: &str,
    sequence: u64,
    tree_size: u64,
) -> Result<InclusionProof, LedgerError> {
    if sequence == 0 {
        return Err(LedgerError::InvalidArgument(
            "sequence 0 names no entry; sequences start at 1".into(),
        ));
    }
    let (context, size) = sized(inner, context_id, tree_size)?;
    if sequence > size.0 {
        return Err(LedgerError::OutOfRange(format!(
            "entry {sequence} is not in a tree of size {size}"
        )));
    }
    let index = LeafIndex(sequence - 1);
    let plan = inclusion_nodes(index, size).map_err(|e| LedgerError::OutOfRange(e.to_string()))?;
    let hashes = context.node_hashes(plan.ids()).map_err(errors::storage)?;
    let proof = plan.assemble(&hashes).map_err(|e| LedgerError::Internal(e.to_string()))?;
    let root_hash = context.root_at(size).map_err(errors::storage)?;
    Ok(InclusionProof { leaf_index: index.0, tree_size: size.0, hashes: proof, root_hash })
}

pub(crate) fn prove_consistency(
    inner: &Inner,
    context_id: &str,
    from: u64,
    to: u64,
) -> Result<ConsistencyProof, LedgerError> {
    if from == 0 {
        return Err(LedgerError::InvalidArgument(
            "a consistency proof from size 0 proves nothing; from_size must be at least 1".into(),
        ));
    }
    let (context, to_size) = sized(inner, context_id, to)?;
    let from_size = TreeSize(from);
    if from_size > to_size {
        if to == 0 {
            return Err(LedgerError::OutOfRange(format!(
                "from_size {from} is beyond the context, which has {to_size} entries"
            )));
        }
        return Err(LedgerError::InvalidArgument(format!(
            "from_size {from} is larger than to_size {to}; a consistency proof goes from an older, smaller tree to a newer one"
        )));
    }
    let plan = consistency_nodes(from_size, to_size)
        .map_err(|e| LedgerError::InvalidArgument(e.to_string()))?;
    let hashes = context.node_hashes(plan.ids()).map_err(errors::storage)?;
    let proof = plan.assemble(&hashes).map_err(|e| LedgerError::Internal(e.to_string()))?;
    Ok(ConsistencyProof {
        from_size: from,
        to_size: to_size.0,
        hashes: proof,
        from_root: context.root_at(from_size).map_err(errors::storage)?,
        to_root: context.root_at(to_size).map_err(errors::storage)?,
    })
}

/// Bytes a listed context takes on the wire, beyond its id: the head's fields and framing.
const LISTED_CONTEXT_OVERHEAD: usize = 64;

/// A page of contexts (CONTRACT §2 `ListContexts`): at most the request's page size, and
/// within the response byte limit.
pub(crate) async fn list_contexts(
    inner: &Inner,
    req: ListContextsRequest,
) -> Result<ListContextsResponse, LedgerError> {
    if !req.prefix.is_empty() {
        // A prefix follows the rules of a context id: one that breaks them matches nothing.
        request::context_id(&req.prefix)
            .map_err(|e| LedgerError::InvalidArgument(format!("prefix: {e}")))?;
    }
    let after = match req.page_token.as_str() {
        "" => None,
        token => Some(request::context_id(token).map_err(|_| {
            LedgerError::InvalidArgument(
                "page_token is not a next_page_token this ledger gave; start again without one"
                    .into(),
            )
        })?),
    };
    let limit = req.page_size() as usize;
    let store = inner.store.clone();
    let prefix = req.prefix;
    let page =
        tokio::task::spawn_blocking(move || store.list_contexts(&prefix, after.as_ref(), limit))
            .await
            .map_err(|e| LedgerError::Internal(format!("listing panicked: {e}")))?
            .map_err(errors::storage)?;
    let bytes_max = inner.config.limits.response_bytes_max;
    let mut response = ListContextsResponse::default();
    let mut bytes = 0;
    for summary in page.contexts {
        bytes += summary.id.as_str().len() + LISTED_CONTEXT_OVERHEAD;
        if bytes > bytes_max
            && let Some(last) = response.contexts.last()
        {
            // The rest goes on the next page.
            response.next_page_token.clone_from(&last.context_id);
            return Ok(response);
        }
        response.contexts.push(ContextInfo {
            context_id: summary.id.into_string(),
            head: api_head(summary.head),
            latest_appended_at_ns: summary.latest_appended_at.0,
        });
    }
    response.next_page_token =
        page.next.map(converge_core::ContextId::into_string).unwrap_or_default();
    Ok(response)
}
