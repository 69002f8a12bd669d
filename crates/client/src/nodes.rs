//! The servers a client talks to: one, or several nodes of a cluster, where a call that finds
//! its node unavailable moves on to the next (CONTRACT §5).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use converge_proto::cluster::admin_client::AdminClient;
use converge_proto::v1::context_service_client::ContextServiceClient;
use converge_proto::v1::integrity_service_client::IntegrityServiceClient;

use crate::Transport;
use crate::routes::Routes;

/// Pause before going round the servers a second time.
const ROUND_PAUSE: Duration = Duration::from_millis(200);

/// One server's services.
pub(crate) struct Node {
    pub(crate) context: ContextServiceClient<Transport>,
    pub(crate) integrity: IntegrityServiceClient<Transport>,
    pub(crate) admin: AdminClient<Transport>,
}

/// The servers, and the one calls go to now.
pub(crate) struct Nodes {
    list: Vec<Node>,
    current: AtomicUsize,
    /// Whether they are a cluster, as their answers said.
    pub(crate) topology: Arc<Topology>,
    /// Which server leads each shard, as learned.
    pub(crate) routes: Routes,
}

/// Whether the servers are nodes of a cluster: unknown until one answers. A cluster node
/// marks its answers ([`converge_proto::CLUSTER_HEADER`]); where every append must carry an
/// `append_id` (CONTRACT §5), one is made for an append that has none while the servers may
/// be a cluster, so no retry can append twice.
#[derive(Debug, Default)]
pub(crate) struct Topology(AtomicU8);

// Unknown is 0 (the default); what is learned only rises: unknown, alone, cluster.
const ALONE: u8 = 1;
const CLUSTER: u8 = 2;

impl Topology {
    /// Learns from the metadata of a server's answer. A cluster, once seen, stays one.
    pub(crate) fn learn(&self, metadata: &tonic::metadata::MetadataMap) {
        let seen =
            if metadata.contains_key(converge_proto::CLUSTER_HEADER) { CLUSTER } else { ALONE };
        self.0.fetch_max(seen, Ordering::Relaxed);
    }

    /// Whether the servers may be a cluster (they are, or none has answered yet).
    pub(crate) fn may_be_cluster(&self) -> bool {
        self.0.load(Ordering::Relaxed) != ALONE
    }
}

/// Whether a status says "try another node": it is unavailable, or no longer a member.
pub(crate) fn moves_on(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable
        || (status.code() == tonic::Code::FailedPrecondition
            && status.message().contains("not a member of the cluster"))
}

impl Nodes {
    /// `list` (not empty), starting with `first`.
    pub(crate) fn new(list: Vec<Node>, first: usize) -> Self {
        assert!(!list.is_empty(), "a client has at least one server");
        Self {
            list,
            current: AtomicUsize::new(first),
            topology: Arc::default(),
            routes: Routes::default(),
        }
    }

    /// Server `i`'s services.
    pub(crate) fn node(&self, i: usize) -> &Node {
        &self.list[i % self.list.len()]
    }

    /// How many servers there are.
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// The server calls go to now, and its index.
    pub(crate) fn current(&self) -> (usize, &Node) {
        let i = self.current.load(Ordering::Relaxed) % self.list.len();
        (i, &self.list[i])
    }

    /// Calls go to the server after `from`, unless another call moved on already.
    pub(crate) fn move_on(&self, from: usize) {
        // Nor do appends go to it by the shards' table until that is learned again.
        self.routes.forget(from);
        let next = (from + 1) % self.list.len();
        let _ = self.current.compare_exchange(from, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Runs `call` on the current server; with several, moves on and tries again while the
    /// answer is `UNAVAILABLE` (twice round the list at most). Only safe for calls that may be
    /// repeated: reads, and appends that carry an `append_id`.
    pub(crate) async fn call<Req: Clone, T, Fut>(
        &self,
        request: Req,
        call: impl Fn(&Node, Req) -> Fut,
    ) -> Result<T, tonic::Status>
    where
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        self.call_at(None, request, call).await
    }

    /// As [`Self::call`], with the first attempt on server `first` if given (the leader of an
    /// append's shard): if that one is unavailable it is forgotten as a route, and the call
    /// goes on from the current server.
    pub(crate) async fn call_at<Req: Clone, T, Fut>(
        &self,
        first: Option<usize>,
        request: Req,
        call: impl Fn(&Node, Req) -> Fut,
    ) -> Result<T, tonic::Status>
    where
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        if self.list.len() == 1 {
            return call(&self.list[0], request).await;
        }
        let mut last = None;
        let mut routed = first.filter(|f| *f < self.list.len());
        for attempt in 0..2 * self.list.len() {
            if attempt == self.list.len() {
                tokio::time::sleep(ROUND_PAUSE).await;
            }
            let (i, node) = match routed {
                Some(f) => (f, &self.list[f]),
                None => self.current(),
            };
            match call(node, request.clone()).await {
                Err(status) if moves_on(&status) => {
                    tracing::debug!(server = i, %status, "server unavailable; trying the next");
                    routed = None;
                    self.move_on(i);
                    last = Some(status);
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| tonic::Status::unavailable("no server answered")))
    }
}
