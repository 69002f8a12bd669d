//! The vocabulary of Converge Ledger's five operations and its integrity queries, shared by the
//! embedded ledger (`converge-ledger`) and the remote client (`converge-client`).
//!
//! Both implement [`LedgerApi`], so an engine written against the trait switches between
//! running the ledger in-process and talking to a node by changing the one line that builds
//! it. Requests carry plain strings and numbers, as they arrive from a user or the wire; the
//! ledger validates them and answers with a [`LedgerError`] whose kind matches a gRPC status
//! and whose message says what to change.
//!
//! What it is not: it holds no logic beyond proof verification helpers, which call the core.
#![deny(clippy::unwrap_used)]

mod error;
mod proofs;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use converge_core::{Entry, Hash};

pub use error::LedgerError;
pub use proofs::{ConsistencyProof, InclusionProof};

/// Append one entry (CONTRACT §2 Append).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendRequest {
    /// The context to append to.
    pub context_id: String,
    /// The entry's key.
    pub key: String,
    /// Opaque payload.
    pub payload: Bytes,
    /// Labels.
    pub metadata: BTreeMap<String, String>,
    /// A Lamport time received with the message that caused this entry, if any.
    pub received_lamport_clock: Option<u64>,
    /// An idempotency token: a retry with the same token returns the recorded entry.
    pub append_id: Option<String>,
}

impl AppendRequest {
    /// An append of `payload` under `key` to `context_id`, with no metadata.
    pub fn new(
        context_id: impl Into<String>,
        key: impl Into<String>,
        payload: impl Into<Bytes>,
    ) -> Self {
        Self {
            context_id: context_id.into(),
            key: key.into(),
            payload: payload.into(),
            ..Self::default()
        }
    }

    /// Adds a metadata pair.
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets the append id.
    #[must_use]
    pub fn with_append_id(mut self, append_id: impl Into<String>) -> Self {
        self.append_id = Some(append_id.into());
        self
    }

    /// Sets the received Lamport time.
    #[must_use]
    pub fn with_received_lamport_clock(mut self, clock: u64) -> Self {
        self.received_lamport_clock = Some(clock);
        self
    }
}

/// Read entries (CONTRACT §2 Get).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetRequest {
    /// The context.
    pub context_id: String,
    /// Only entries with this key (`None` or empty: all).
    pub key: Option<String>,
    /// Entries after this sequence.
    pub after_sequence: u64,
    /// At most this many (0: no limit).
    pub limit: u32,
    /// Only entries with a sequence below this one (0: no bound).
    pub before_sequence: u64,
    /// Highest sequence first: the newest `limit` of those that match (so `limit` 1 is the
    /// latest entry, of `key` when it is set); page on with `before_sequence` = the last
    /// sequence returned.
    pub newest_first: bool,
}

impl GetRequest {
    /// Every entry of `context_id`.
    pub fn all(context_id: impl Into<String>) -> Self {
        Self { context_id: context_id.into(), ..Self::default() }
    }
}

/// Entries found by a Get.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetResponse {
    /// In sequence order (highest first when the request asked for newest first).
    pub entries: Vec<Arc<Entry>>,
    /// The context's latest sequence, whatever the filter.
    pub latest_sequence: u64,
}

/// List the contexts that exist (CONTRACT §2 `ListContexts`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListContextsRequest {
    /// Only contexts whose id begins with this (empty: all).
    pub prefix: String,
    /// The `next_page_token` of the page before (empty: the first page).
    pub page_token: String,
    /// At most this many ([`LIST_LIMIT_DEFAULT`] when 0, at most [`LIST_LIMIT_MAX`]).
    pub limit: u32,
}

/// Contexts a `ListContexts` page holds when its request names no limit.
pub const LIST_LIMIT_DEFAULT: u32 = 1_000;
/// The most contexts one `ListContexts` page holds (a larger limit is taken as this).
pub const LIST_LIMIT_MAX: u32 = 10_000;

impl ListContextsRequest {
    /// The first page of contexts whose id begins with `prefix`.
    pub fn prefix(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into(), ..Self::default() }
    }

    /// The page size this request asks for, as the ledger takes it.
    pub fn page_size(&self) -> u32 {
        match self.limit {
            0 => LIST_LIMIT_DEFAULT,
            n => n.min(LIST_LIMIT_MAX),
        }
    }
}

/// A context and its tree head, as `ListContexts` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextInfo {
    /// The context.
    pub context_id: String,
    /// Its tree head: size (its latest sequence), root and latest Lamport time.
    pub head: TreeHead,
    /// When its latest entry was appended (nanoseconds since the Unix epoch).
    pub latest_appended_at_ns: u64,
}

/// A page of contexts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListContextsResponse {
    /// In byte order of their ids.
    pub contexts: Vec<ContextInfo>,
    /// Continues after the last context of this page (empty: this was the last page).
    pub next_page_token: String,
}

/// A snapshot of a context (CONTRACT §2 Snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotResponse {
    /// The blob.
    pub snapshot: Bytes,
    /// The latest sequence it holds.
    pub sequence: u64,
    /// When it was made.
    pub created_at_ns: u64,
    /// Entries it holds.
    pub entry_count: u64,
    /// The blob format version.
    pub version: u32,
    /// The tree root it carries.
    pub merkle_root: Hash,
}

/// Restore a snapshot (CONTRACT §2 Load).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadRequest {
    /// The context to load into.
    pub context_id: String,
    /// The blob.
    pub snapshot: Bytes,
    /// Refuse if the context already has entries.
    pub fail_if_exists: bool,
    /// Idempotency token (1–128 bytes): a retry with the same id is answered as the first
    /// load was. Recorded as the append id of the first entry the load restores.
    pub load_id: Option<String>,
}

/// What a Load did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadResponse {
    /// Entries appended (0 if the blob was a prefix of the context).
    pub entries_restored: u64,
    /// The context's latest sequence afterwards.
    pub latest_sequence: u64,
}

/// Follow a context (CONTRACT §2 Watch).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchRequest {
    /// The context (it need not exist yet).
    pub context_id: String,
    /// Only entries with this key (`None` or empty: all).
    pub key: Option<String>,
    /// Start after this sequence.
    pub from_sequence: u64,
}

/// A context's tree head (CONTRACT §1 `TreeHead`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeHead {
    /// Entries in the tree.
    pub tree_size: u64,
    /// Its root.
    pub root_hash: Hash,
    /// The latest entry's Lamport time.
    pub lamport_clock: u64,
}

/// The entries of a watch, in sequence order, without gaps or duplicates.
pub type WatchStream =
    Pin<Box<dyn futures_core::Stream<Item = Result<Arc<Entry>, LedgerError>> + Send>>;

/// An append that was queued: resolves to its entry once durable, or to why it failed.
pub type PendingAppend = Pin<Box<dyn Future<Output = Result<Arc<Entry>, LedgerError>> + Send>>;

/// The operations an engine uses, implemented by the embedded ledger and by the client.
pub trait LedgerApi: Send + Sync {
    /// Appends one entry; returns it once it is durable.
    fn append(
        &self,
        request: AppendRequest,
    ) -> impl Future<Output = Result<Arc<Entry>, LedgerError>> + Send;

    /// Queues one append and returns, without waiting for its durability, the wait for it.
    /// Appends queued one after another to one context take sequences in that order, so a
    /// caller can keep many in flight and still know their order (`AppendStream`,
    /// `append_many`). A refusal (bad input, no room) is the wait's outcome.
    ///
    /// The default waits for each append before the next is queued: ordered, not pipelined.
    fn append_queued(&self, request: AppendRequest) -> impl Future<Output = PendingAppend> + Send {
        #[allow(clippy::async_yields_async, reason = "the wait for the append is the result")]
        async move {
            let outcome = self.append(request).await;
            Box::pin(std::future::ready(outcome)) as PendingAppend
        }
    }

    /// Appends `requests` in order, keeping them all in flight; one outcome per request, in
    /// the same order. A failed request does not stop the ones after it.
    fn append_many(
        &self,
        requests: Vec<AppendRequest>,
    ) -> impl Future<Output = Vec<Result<Arc<Entry>, LedgerError>>> + Send {
        async move {
            let mut pending = Vec::with_capacity(requests.len());
            for request in requests {
                pending.push(self.append_queued(request).await);
            }
            let mut outcomes = Vec::with_capacity(pending.len());
            for wait in pending {
                outcomes.push(wait.await);
            }
            outcomes
        }
    }

    /// Reads entries.
    fn get(
        &self,
        request: GetRequest,
    ) -> impl Future<Output = Result<GetResponse, LedgerError>> + Send;

    /// A page of the contexts that exist, in byte order of their ids.
    fn list_contexts(
        &self,
        request: ListContextsRequest,
    ) -> impl Future<Output = Result<ListContextsResponse, LedgerError>> + Send;

    /// Snapshots a whole context.
    fn snapshot(
        &self,
        context_id: &str,
    ) -> impl Future<Output = Result<SnapshotResponse, LedgerError>> + Send;

    /// Restores a snapshot.
    fn load(
        &self,
        request: LoadRequest,
    ) -> impl Future<Output = Result<LoadResponse, LedgerError>> + Send;

    /// Follows a context: existing entries first, then new ones as they are appended.
    fn watch(
        &self,
        request: WatchRequest,
    ) -> impl Future<Output = Result<WatchStream, LedgerError>> + Send;

    /// The context's tree head.
    fn tree_head(
        &self,
        context_id: &str,
    ) -> impl Future<Output = Result<TreeHead, LedgerError>> + Send;

    /// An inclusion proof of entry `sequence` in the tree of `tree_size` (0: current).
    fn prove_inclusion(
        &self,
        context_id: &str,
        sequence: u64,
        tree_size: u64,
    ) -> impl Future<Output = Result<InclusionProof, LedgerError>> + Send;

    /// A consistency proof from `from_size` to `to_size` (0: current).
    fn prove_consistency(
        &self,
        context_id: &str,
        from_size: u64,
        to_size: u64,
    ) -> impl Future<Output = Result<ConsistencyProof, LedgerError>> + Send;
}
