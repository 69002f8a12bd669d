//! The gRPC services: decode, call the embedded ledger, encode. Every handler runs under
//! [`LedgerService::call`], which maps errors to statuses (through `converge_proto::status`,
//! the one mapping), turns a panic into `INTERNAL` instead of a dead connection, and records
//! metrics.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use converge_api::{LedgerApi, LedgerError};
use converge_ledger::Ledger;
use converge_proto::v1::context_service_server::ContextService;
use converge_proto::v1::integrity_service_server::IntegrityService;
use converge_proto::{convert, status, v1};
use futures_util::FutureExt as _;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};
use tracing::error;

use crate::append_stream::AppendPipeline;
use crate::metrics::{Method, Metrics};
use crate::watch_events::{Encodings, WatchEventStream};

/// The message a client gets when a handler panicked. The panic itself is logged.
pub(crate) const PANIC_MESSAGE: &str = "the server failed internally while handling this request (logged); it was not applied unless a later read shows it";

/// Both services over one ledger: the embedded one, or a cluster node's replicated one.
#[derive(Clone)]
pub struct LedgerService<L = Ledger> {
    ledger: L,
    metrics: Arc<Metrics>,
    /// Turns true when the server begins to shut down (ends append streams).
    closing: Option<watch::Receiver<bool>>,
    /// Watch events encoded once for all watchers of a context.
    encodings: Arc<Encodings>,
    /// Whether answers carry [`converge_proto::CLUSTER_HEADER`] (a cluster node's do).
    cluster: bool,
}

impl<L: LedgerApi + Clone + 'static> LedgerService<L> {
    /// The services of `ledger`, counting into `metrics`.
    pub fn new(ledger: L, metrics: Arc<Metrics>) -> Self {
        Self { ledger, metrics, closing: None, encodings: Arc::default(), cluster: false }
    }

    /// The same services, answering as a cluster node: every answer carries
    /// [`converge_proto::CLUSTER_HEADER`].
    #[must_use]
    pub fn in_cluster(mut self) -> Self {
        self.cluster = true;
        self
    }

    /// Marks `metadata` as a cluster node's, if this is one.
    fn mark(&self, metadata: &mut tonic::metadata::MetadataMap) {
        if self.cluster {
            metadata.insert(
                converge_proto::CLUSTER_HEADER,
                tonic::metadata::MetadataValue::from_static("1"),
            );
        }
    }

    /// The same services, ending append streams once `closing` turns true.
    #[must_use]
    pub fn with_closing(mut self, closing: watch::Receiver<bool>) -> Self {
        self.closing = Some(closing);
        self
    }

    async fn call<T>(
        &self,
        method: Method,
        handler: impl Future<Output = Result<T, LedgerError>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let outcome = match AssertUnwindSafe(handler).catch_unwind().await {
            Ok(Ok(value)) => Ok(Response::new(value)),
            Ok(Err(err)) => Err(status::to_status(&err)),
            Err(panic) => {
                self.metrics.panicked();
                error!(rpc = ?method, panic = panic_text(panic.as_ref()), "handler panicked");
                Err(Status::internal(PANIC_MESSAGE))
            }
        };
        let code = outcome.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok);
        self.metrics.observe(method, started.elapsed(), code);
        let mut outcome = outcome;
        match &mut outcome {
            Ok(response) => self.mark(response.metadata_mut()),
            Err(status) => self.mark(status.metadata_mut()),
        }
        outcome
    }
}

pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// The Watch response stream.
pub type WatchEvents =
    Pin<Box<dyn futures_core::Stream<Item = Result<v1::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl<L: LedgerApi + Clone + 'static> ContextService for LedgerService<L> {
    async fn append(
        &self,
        request: Request<v1::AppendRequest>,
    ) -> Result<Response<v1::AppendResponse>, Status> {
        self.call(Method::Append, async {
            let req = convert::append_request_from_wire(request.into_inner());
            let bytes = req.payload.len();
            let entry = self.ledger.append(req).await?;
            self.metrics.appended(bytes);
            Ok(v1::AppendResponse { entry: Some(convert::entry_to_wire(&entry)) })
        })
        .await
    }

    async fn get(
        &self,
        request: Request<v1::GetRequest>,
    ) -> Result<Response<v1::GetResponse>, Status> {
        self.call(Method::Get, async {
            let resp =
                self.ledger.get(convert::get_request_from_wire(request.into_inner())).await?;
            Ok(convert::get_response_to_wire(&resp))
        })
        .await
    }

    async fn list_contexts(
        &self,
        request: Request<v1::ListContextsRequest>,
    ) -> Result<Response<v1::ListContextsResponse>, Status> {
        self.call(Method::ListContexts, async {
            let request = convert::list_request_from_wire(request.into_inner());
            Ok(convert::list_response_to_wire(self.ledger.list_contexts(request).await?))
        })
        .await
    }

    async fn snapshot(
        &self,
        request: Request<v1::SnapshotRequest>,
    ) -> Result<Response<v1::SnapshotResponse>, Status> {
        self.call(Method::Snapshot, async {
            let resp = self.ledger.snapshot(&request.into_inner().context_id).await?;
            Ok(convert::snapshot_response_to_wire(resp))
        })
        .await
    }

    async fn load(
        &self,
        request: Request<v1::LoadRequest>,
    ) -> Result<Response<v1::LoadResponse>, Status> {
        self.call(Method::Load, async {
            let resp =
                self.ledger.load(convert::load_request_from_wire(request.into_inner())).await?;
            Ok(convert::load_response_to_wire(resp))
        })
        .await
    }

    type AppendStreamStream = AppendPipeline<L>;

    async fn append_stream(
        &self,
        request: Request<Streaming<v1::AppendRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        self.metrics.observe(Method::AppendStream, std::time::Duration::ZERO, tonic::Code::Ok);
        let closing = self.closing.clone();
        let closing = Box::pin(async move {
            match closing {
                Some(mut closing) => drop(closing.wait_for(|c| *c).await),
                None => std::future::pending().await,
            }
        });
        let mut response = Response::new(AppendPipeline::new(
            self.ledger.clone(),
            Arc::clone(&self.metrics),
            request.into_inner(),
            closing,
        ));
        self.mark(response.metadata_mut());
        Ok(response)
    }

    type WatchStream = WatchEvents;

    async fn watch(
        &self,
        request: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let metrics = Arc::clone(&self.metrics);
        self.call(Method::Watch, async {
            let request = convert::watch_request_from_wire(request.into_inner());
            let context_id = request.context_id.clone();
            let entries = self.ledger.watch(request).await?;
            let recent = self.encodings.of(&context_id);
            Ok(Box::pin(WatchEventStream::new(entries, recent, metrics)) as WatchEvents)
        })
        .await
    }
}

#[tonic::async_trait]
impl<L: LedgerApi + Clone + 'static> IntegrityService for LedgerService<L> {
    async fn get_tree_head(
        &self,
        request: Request<v1::TreeHeadRequest>,
    ) -> Result<Response<v1::TreeHead>, Status> {
        self.call(Method::GetTreeHead, async {
            let head = self.ledger.tree_head(&request.into_inner().context_id).await?;
            Ok(convert::tree_head_to_wire(&head))
        })
        .await
    }

    async fn prove_inclusion(
        &self,
        request: Request<v1::InclusionRequest>,
    ) -> Result<Response<v1::InclusionProof>, Status> {
        self.call(Method::ProveInclusion, async {
            let req = request.into_inner();
            let proof =
                self.ledger.prove_inclusion(&req.context_id, req.sequence, req.tree_size).await?;
            Ok(convert::inclusion_to_wire(&proof))
        })
        .await
    }

    async fn prove_consistency(
        &self,
        request: Request<v1::ConsistencyRequest>,
    ) -> Result<Response<v1::ConsistencyProof>, Status> {
        self.call(Method::ProveConsistency, async {
            let req = request.into_inner();
            let proof =
                self.ledger.prove_consistency(&req.context_id, req.from_size, req.to_size).await?;
            Ok(convert::consistency_to_wire(&proof))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_answers_internal_and_is_counted() {
        let ledger = Ledger::open(converge_ledger::LedgerConfig::memory()).unwrap();
        let metrics = Arc::new(Metrics::default());
        let service = LedgerService::new(ledger.clone(), Arc::clone(&metrics));
        let answer: Result<Response<()>, Status> = service
            .call(Method::Append, async {
                if metrics.render(&ledger).is_empty() {
                    return Ok(());
                }
                panic!("a bug in a handler")
            })
            .await;
        let status = answer.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("a bug"), "no panic text leaks to the client");
        let text = metrics.render(&ledger);
        assert!(text.contains("converge_handler_panics_total 1"), "{text}");
        assert!(text.contains("converge_errors_total{code=\"INTERNAL\"} 1"), "{text}");
        // The service keeps answering.
        let ok = service.call(Method::Get, async { Ok::<_, LedgerError>(7) }).await.unwrap();
        assert_eq!(ok.into_inner(), 7);
    }
}
