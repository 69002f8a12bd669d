//! Serving: the gRPC services with health, reflection and explicit limits on one listener,
//! metrics and health over HTTP on another, and a graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use converge_api::LedgerApi;
use converge_ledger::Ledger;
use converge_proto::v1::context_service_server::ContextServiceServer;
use converge_proto::v1::integrity_service_server::IntegrityServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;
use tracing::info;

use crate::http::{MetricsWriter, Readiness};
use crate::limits::{
    CONCURRENT_STREAMS_MAX, CONNECTION_WINDOW_BYTES, ENVELOPE_BYTES, HEADER_LIST_BYTES_MAX,
    KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, LOCAL_ERROR_RESETS_MAX, PENDING_ACCEPT_RESETS_MAX,
    STREAM_WINDOW_BYTES,
};
use crate::metrics::Metrics;
use crate::service::LedgerService;

/// Serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC server failed.
    #[error("the gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// Reflection could not be set up from the descriptors.
    #[error("server reflection could not be set up: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The HTTP server failed.
    #[error("the HTTP server failed: {0}")]
    Http(std::io::Error),
    /// Closing the ledger failed.
    #[error("closing the ledger failed: {0}")]
    Close(converge_api::LedgerError),
}

/// Who may connect and call: TLS (optionally with client certificates) and bearer tokens.
#[derive(Clone, Default)]
pub struct Security {
    /// TLS for the gRPC port.
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    /// Tokens; without them every call is allowed (fine on loopback, refused elsewhere by the
    /// binary unless the operator insists).
    pub tokens: Option<Arc<crate::auth::TokenStore>>,
}

/// Where the server listens.
pub struct Listeners {
    /// gRPC.
    pub grpc: TcpListener,
    /// Metrics and health over HTTP, if wanted.
    pub http: Option<TcpListener>,
}

impl Listeners {
    /// The gRPC address (useful when binding port 0).
    pub fn grpc_addr(&self) -> std::io::Result<SocketAddr> {
        self.grpc.local_addr()
    }

    /// The HTTP address, if any.
    pub fn http_addr(&self) -> std::io::Result<Option<SocketAddr>> {
        self.http.as_ref().map(TcpListener::local_addr).transpose()
    }
}

/// What a cluster node adds to serving: the server decides nothing about replication, it only
/// serves what it is given.
pub struct Replication {
    /// Adds more gRPC services on the same port (the cluster's internal and admin services).
    pub services: AddServices,
    /// Whether the node has joined and caught up: health is `NOT_SERVING` until it has.
    pub ready: Readiness,
    /// Appends the node's replication metrics to `/metrics`.
    pub metrics: MetricsWriter,
    /// Stops replication; awaited after requests drain and before the ledger closes.
    pub stop: Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// How often health follows a cluster node's readiness.
const READINESS_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Serves `ledger` until `shutdown` resolves, then shuts down gracefully: health turns
/// `NOT_SERVING`, new requests are refused, watch streams end with `UNAVAILABLE`, requests in
/// flight finish, the ledger flushes and closes. Returns when everything is closed.
pub async fn run(
    ledger: Ledger,
    listeners: Listeners,
    security: Security,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    run_node(ledger.clone(), ledger, None, listeners, security, shutdown).await
}

/// Serves a node: clients are answered by `api` (the embedded `ledger` itself, or a cluster
/// node's replicated ledger over it), with `replication`'s services beside. Shuts down as
/// [`run`] does, stopping replication before the ledger closes.
pub async fn run_node<L: LedgerApi + Clone + 'static>(
    ledger: Ledger,
    api: L,
    replication: Option<Replication>,
    listeners: Listeners,
    security: Security,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let metrics = Arc::new(Metrics::default());
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut service =
        LedgerService::new(api, Arc::clone(&metrics)).with_closing(closing_rx.clone());
    if replication.is_some() {
        service = service.in_cluster();
    }
    let limits = ledger.config().limits;
    let decode_max = limits.payload_bytes_max.max(limits.response_bytes_max) + ENVELOPE_BYTES;
    let encode_max = limits.response_bytes_max + ENVELOPE_BYTES;

    let (health, health_service) = tonic_health::server::health_reporter();
    let (ready, replication_metrics, stop_replication, extra_services) = match replication {
        Some(r) => (Some(r.ready), Some(r.metrics), Some(r.stop), Some(r.services)),
        None => (None, None, None, None),
    };
    match &ready {
        None => set_health(&health, true).await,
        Some(ready) => {
            set_health(&health, false).await;
            tokio::spawn(follow_readiness(health.clone(), Arc::clone(ready), closing_rx));
        }
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(converge_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let http = listeners.http.map(|listener| {
        let router = crate::http::router(
            ledger.clone(),
            Arc::clone(&metrics),
            crate::http::Extra { ready: ready.clone(), metrics: replication_metrics.clone() },
        );
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        })
    });

    let grpc_shutdown = {
        let ledger = ledger.clone();
        let health = health.clone();
        async move {
            shutdown.await;
            info!(
                "shutting down: refusing new requests, ending watch streams, finishing appends in flight"
            );
            let _ = closing_tx.send(true);
            set_health(&health, false).await;
            ledger.begin_close();
            let _ = stop_tx.send(true);
        }
    };
    let routes =
        routes(service, health_service, reflection, (decode_max, encode_max), extra_services);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = security.tls {
        builder = builder.tls_config(tls)?;
    }
    builder
        .layer(crate::auth::AuthLayer::new(security.tokens, Arc::clone(&metrics.auth)))
        .layer(crate::receive::ReceiveLayer::new(crate::receive::budget_of(&ledger)))
        .max_concurrent_streams(CONCURRENT_STREAMS_MAX)
        .http2_max_local_error_reset_streams(Some(LOCAL_ERROR_RESETS_MAX))
        .http2_max_pending_accept_reset_streams(Some(PENDING_ACCEPT_RESETS_MAX))
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .http2_max_header_list_size(HEADER_LIST_BYTES_MAX)
        .tcp_nodelay(true)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            // Accepted sockets get TCP_NODELAY and keepalive here: the builder's settings only
            // apply to listeners tonic binds itself. Without NODELAY, a lone request waits out
            // the peer's delayed ACK (40 ms).
            crate::connections::bounded(
                TcpIncoming::from(listeners.grpc)
                    .with_nodelay(Some(true))
                    .with_keepalive(Some(KEEPALIVE_INTERVAL)),
                crate::limits::CONNECTIONS_MAX,
                Arc::clone(&metrics.connections),
            ),
            grpc_shutdown,
        )
        .await?;
    if let Some(http) = http
        && let Ok(result) = http.await
    {
        result.map_err(ServeError::Http)?;
    }
    if let Some(stop) = stop_replication {
        stop.await;
    }
    ledger.close().await.map_err(ServeError::Close)?;
    info!("ledger closed cleanly");
    Ok(())
}

/// Sets every service's health (and the server's, `""`).
async fn set_health(health: &tonic_health::server::HealthReporter, serving: bool) {
    let status = if serving {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    };
    for service in converge_proto::SERVICES.iter().chain(&[""]) {
        health.set_service_status(*service, status).await;
    }
}

/// Keeps health in step with a cluster node's readiness until the server starts closing.
async fn follow_readiness(
    health: tonic_health::server::HealthReporter,
    ready: Readiness,
    mut closing: watch::Receiver<bool>,
) {
    let mut serving = false;
    loop {
        if *closing.borrow() {
            return;
        }
        let now = ready();
        if now != serving {
            set_health(&health, now).await;
            serving = now;
        }
        tokio::select! {
            () = tokio::time::sleep(READINESS_POLL) => {}
            _ = closing.changed() => return,
        }
    }
}

type AddServices = Box<dyn FnOnce(&mut tonic::service::RoutesBuilder) + Send>;

/// The gRPC services: health, reflection, the ledger's two, and a cluster node's.
fn routes<L: LedgerApi + Clone + 'static>(
    service: LedgerService<L>,
    health_service: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    reflection: tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    (decode_max, encode_max): (usize, usize),
    extra_services: Option<AddServices>,
) -> tonic::service::Routes {
    let mut routes = tonic::service::RoutesBuilder::default();
    routes
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            ContextServiceServer::new(service.clone())
                .max_decoding_message_size(decode_max)
                .max_encoding_message_size(encode_max),
        )
        .add_service(
            IntegrityServiceServer::new(service)
                .max_decoding_message_size(decode_max)
                .max_encoding_message_size(encode_max),
        );
    if let Some(add) = extra_services {
        add(&mut routes);
    }
    routes.routes()
}
