//! A page of the contexts that exist, in byte order of their ids (CONTRACT §2 `ListContexts`).
//!
//! Every context with entries is in exactly one of two ordered places, or passing from the
//! first to the second: the store's set of contexts the cold index does not name yet (new
//! since the last checkpoint, or every context in memory mode), and the cold index's
//! `contexts` rows. A page takes up to `limit + 1` ids from each, in order, merges them, and
//! keeps the first `limit`: the work is a page, however many contexts exist. The set is read
//! before the index, and a checkpoint adds a context to the index before it leaves the set, so
//! a context passing between them during a page is seen at least once (and kept once).
//!
//! Each context's head comes from memory when it is resident (its latest durable state), or
//! else from the cold index, which then holds all of it: its head row and the frontier of its
//! tree, one node per level. Listing loads nothing into memory.

use std::ops::Bound;

use converge_core::{ContextId, Timestamp, TreeHead};

use crate::error::Result;
use crate::index::cold::Cold;
use crate::store::{Shared, cold_head};

/// A context as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextSummary {
    /// The context.
    pub id: ContextId,
    /// Its durable tree head.
    pub head: TreeHead,
    /// When its latest durable entry was appended.
    pub latest_appended_at: Timestamp,
}

/// One page of contexts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextPage {
    /// In byte order of their ids.
    pub contexts: Vec<ContextSummary>,
    /// Where the next page starts (after this id), or `None` if this was the last. A page may
    /// hold fewer than its limit and still have a next one (a context whose first entries are
    /// not durable yet is passed over).
    pub next: Option<ContextId>,
}

/// What a resident context shows, looked at without keeping it: `None` when it is not
/// resident, `Some(None)` when it is but holds no durable entry yet.
pub(crate) type Resident<'a> = dyn Fn(&ContextId) -> Option<Option<ContextSummary>> + 'a;

/// The page of contexts beginning with `prefix`, after `after` (or from the first), at most
/// `limit` (at least 1).
pub(crate) fn page(
    shared: &Shared,
    resident: &Resident<'_>,
    prefix: &str,
    after: Option<&ContextId>,
    limit: usize,
) -> Result<ContextPage> {
    let limit = limit.max(1);
    // After the token, or else from the prefix on: ids below it cannot begin with it.
    let prefix_id = (!prefix.is_empty()).then(|| ContextId::try_new(prefix)).and_then(Result::ok);
    let start = match (after, &prefix_id) {
        (Some(after), _) if after.as_str() >= prefix => Bound::Excluded(after),
        (_, Some(p)) => Bound::Included(p),
        _ => Bound::Unbounded,
    };
    let fresh = shared.unindexed_page(start, prefix, limit + 1);
    let cold = match shared.cold() {
        Some(cold) => cold.context_page(start, prefix, limit + 1)?,
        None => Vec::new(),
    };
    let candidates = merge(fresh, cold);
    // More candidates than the page holds: the next page starts after its last one.
    let next = candidates.get(limit).and(candidates.get(limit - 1)).map(|(id, _)| id.clone());
    let mut page = ContextPage { contexts: Vec::new(), next };
    for (id, number) in candidates.into_iter().take(limit) {
        if let Some(summary) = summarise(shared.cold(), resident, id, number)? {
            page.contexts.push(summary);
        }
    }
    Ok(page)
}

/// The two sorted runs as one, each id once (with its cold number when the index has it).
fn merge(fresh: Vec<ContextId>, cold: Vec<(ContextId, u64)>) -> Vec<(ContextId, Option<u64>)> {
    let mut out = Vec::with_capacity(fresh.len() + cold.len());
    let mut fresh = fresh.into_iter().peekable();
    let mut cold = cold.into_iter().peekable();
    loop {
        let next = match (fresh.peek(), cold.peek()) {
            (None, None) => return out,
            (Some(_), None) => fresh.next().map(|id| (id, None)),
            (None, Some(_)) => cold.next().map(|(id, n)| (id, Some(n))),
            (Some(f), Some((c, _))) => match f.cmp(c) {
                std::cmp::Ordering::Less => fresh.next().map(|id| (id, None)),
                std::cmp::Ordering::Greater => cold.next().map(|(id, n)| (id, Some(n))),
                std::cmp::Ordering::Equal => {
                    fresh.next();
                    cold.next().map(|(id, n)| (id, Some(n)))
                }
            },
        };
        out.extend(next);
    }
}

/// What context `id` shows: from memory if resident, else from the cold index.
fn summarise(
    cold: Option<&Cold>,
    resident: &Resident<'_>,
    id: ContextId,
    number: Option<u64>,
) -> Result<Option<ContextSummary>> {
    if let Some(shown) = resident(&id) {
        return Ok(shown);
    }
    let Some(cold) = cold else { return Ok(None) };
    let number = match number {
        Some(number) => number,
        // It left the set of unindexed contexts, and memory, since the page began.
        None => match cold.context_number(&id)? {
            Some(number) => number,
            None => return Ok(None),
        },
    };
    let Some((sequencer, tree)) = cold_head(cold, &id, number)? else { return Ok(None) };
    if sequencer.latest().0 == 0 {
        return Ok(None);
    }
    Ok(Some(ContextSummary {
        head: TreeHead { root: tree.root_hash(), lamport: sequencer.latest_lamport() },
        latest_appended_at: sequencer.latest_appended_at(),
        id,
    }))
}
