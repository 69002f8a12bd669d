//! `serve`: open the ledger, bind, print `listening on ADDR`, serve until SIGINT or SIGTERM.

use std::io::Write as _;

use anyhow::Context as _;
use converge_ledger::{Durability, Ledger, LedgerConfig, StoreConfig};
use std::sync::Arc;

use converge_cluster::limits::ClusterLimits;
use converge_cluster::{Cluster, ClusterConfig, PeerTls, Start, Timing};
use converge_server::auth::TokenStore;
use converge_server::limits::HANDSHAKE_TIMEOUT;
use converge_server::run::Replication;
use converge_server::{Listeners, Security};
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tracing::{info, warn};

use crate::cli::{DurabilityArg, StorageArg};
use crate::config::ServeConfig;

pub async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    info!(
        listen = %config.listen,
        http = %config.http,
        data_dir = %config.data_dir.display(),
        storage = ?config.storage,
        durability = ?config.durability,
        sync_interval = ?config.sync_interval,
        memory_budget = config.memory_budget,
        payload_bytes_max = config.limits.payload_bytes_max,
        response_bytes_max = config.limits.response_bytes_max,
        watchers_max = config.watchers_max,
        "starting converge-ledger {}",
        env!("CARGO_PKG_VERSION")
    );
    let storage = match config.storage {
        StorageArg::Disk => StoreConfig {
            durability: match config.durability {
                DurabilityArg::Fsync => Durability::Fsync,
                DurabilityArg::Buffered => Durability::Buffered,
            },
            sync_interval: config.sync_interval,
            memory_budget: config.memory_budget,
            ..StoreConfig::disk(&config.data_dir)
        },
        StorageArg::Memory => {
            StoreConfig { memory_budget: config.memory_budget, ..StoreConfig::memory() }
        }
    };
    // A cluster node's ledger is fsynced through the shards' Raft logs (CONTRACT §5 still has
    // it run --durability fsync: acknowledged means fsynced on a majority).
    let storage = if start_of(&config).is_some() {
        converge_cluster::ledger_storage(storage)
    } else {
        storage
    };
    let ledger_config = LedgerConfig {
        limits: config.limits,
        watchers_max: config.watchers_max,
        ..LedgerConfig::with_storage(storage)
    };
    let data_dir = config.data_dir.clone();
    let ledger = tokio::task::spawn_blocking(move || Ledger::open(ledger_config))
        .await?
        .with_context(|| format!("cannot open the ledger in {}", data_dir.display()))?;
    let report = ledger.open_report();
    if report.unclean_shutdown {
        warn!(replayed = report.replayed_records, "recovered from an unclean shutdown");
    }
    info!(took_ms = report.took.as_millis(), replayed = report.replayed_records, "ledger open");
    let grpc = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", config.listen))?;
    let http = TcpListener::bind(config.http)
        .await
        .with_context(|| format!("cannot listen on {} (--http)", config.http))?;
    let listeners = Listeners { grpc, http: Some(http) };
    let grpc_addr = listeners.grpc_addr()?;
    let http_addr = listeners.http_addr()?.map(|a| a.to_string()).unwrap_or_default();
    info!(grpc = %grpc_addr, http = %http_addr, "serving");
    let security = security(&config)?;
    match start_of(&config) {
        None => {
            announce(grpc_addr);
            converge_server::run(ledger, listeners, security, shutdown_signal()).await?;
        }
        Some(start) => {
            let advertise = config.cluster.advertise.clone().unwrap_or(grpc_addr.to_string());
            serve_cluster(&config, start, advertise, ledger, listeners, security).await?;
        }
    }
    info!("stopped");
    Ok(())
}

/// Prints the one line that says the node accepts requests (CONTRACT §4).
fn announce(grpc_addr: std::net::SocketAddr) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening on {grpc_addr}");
    let _ = out.flush();
}

/// Serves a cluster node: its shards' Raft over `ledger`, the peer and admin services beside
/// the ledger's, health following its readiness.
async fn serve_cluster(
    config: &ServeConfig,
    start: Start,
    advertise: String,
    ledger: Ledger,
    listeners: Listeners,
    security: Security,
) -> anyhow::Result<()> {
    let peer_tls = peer_tls(config)?;
    let cluster = Cluster::start(
        ledger.clone(),
        ClusterConfig {
            data_dir: config.data_dir.clone(),
            advertise,
            start,
            peer_token: config.cluster.peer_token.clone(),
            peer_tls,
            peer_source: None,
            timing: Timing::default(),
            limits: ClusterLimits::of_node(&config.limits),
        },
    )
    .await
    .context("cannot start the cluster node")?;
    // Only now: a node that refuses its data directory or flags never says it listens.
    announce(listeners.grpc_addr()?);
    let replication = Replication {
        services: Box::new({
            let cluster = cluster.clone();
            move |routes: &mut tonic::service::RoutesBuilder| {
                routes.add_service(cluster.peer_service()).add_service(cluster.admin_service());
            }
        }),
        ready: Arc::new({
            let cluster = cluster.clone();
            move || cluster.ready()
        }),
        metrics: Arc::new({
            let cluster = cluster.clone();
            move |out: &mut String| cluster.render_metrics(out)
        }),
        stop: Box::pin({
            let cluster = cluster.clone();
            async move { cluster.shutdown().await }
        }),
    };
    converge_server::run_node(
        ledger,
        cluster,
        Some(replication),
        listeners,
        security,
        shutdown_signal(),
    )
    .await?;
    Ok(())
}

/// How this node speaks TLS to its peers: not at all without TLS; with TLS, trusting
/// `--peer-ca` and presenting its own certificate.
fn peer_tls(config: &ServeConfig) -> anyhow::Result<Option<PeerTls>> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else { return Ok(None) };
    let Some(ca) = &config.cluster.peer_ca else {
        anyhow::bail!(
            "a cluster node that serves TLS reaches its peers over TLS too: add --peer-ca FILE, \
             the CA (PEM) that signed the nodes' certificates"
        );
    };
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    Ok(Some(PeerTls { ca_pem: read(ca)?, identity: Some((read(cert)?, read(key)?)) }))
}

/// How the node starts: alone (`None`), or as a cluster node bootstrapping, joining, or
/// restarting (its data directory records the cluster it belongs to).
fn start_of(config: &ServeConfig) -> Option<Start> {
    let cluster = &config.cluster;
    if cluster.bootstrap {
        Some(Start::Bootstrap { shards: cluster.shards, voters: cluster.voters })
    } else if !cluster.join.is_empty() {
        Some(Start::Join(cluster.join.clone()))
    } else if config.cluster_directory() {
        Some(Start::Restart)
    } else {
        None
    }
}

/// TLS and tokens from the configured files; a task re-reads the tokens on SIGHUP.
fn security(config: &ServeConfig) -> anyhow::Result<Security> {
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))
    };
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let identity =
                Identity::from_pem(read(cert, "TLS certificate")?, read(key, "TLS key")?);
            let mut tls = ServerTlsConfig::new().identity(identity).timeout(HANDSHAKE_TIMEOUT);
            if let Some(ca) = &config.client_ca {
                tls = tls.client_ca_root(Certificate::from_pem(read(ca, "client CA")?));
            }
            info!(cert = %cert.display(), client_certificates = config.client_ca.is_some(), "TLS on");
            Some(tls)
        }
        _ => None,
    };
    let tokens = match &config.tokens {
        Some(path) => {
            let store = Arc::new(TokenStore::open(path)?);
            info!(file = %path.display(), tokens = store.len(), "token authentication on");
            spawn_reload_on_sighup(Arc::clone(&store));
            Some(store)
        }
        None => None,
    };
    Ok(Security { tls, tokens })
}

fn spawn_reload_on_sighup(store: Arc<TokenStore>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        warn!("cannot listen for SIGHUP; token file changes need a restart");
        return;
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match store.reload() {
                Ok(count) => info!(tokens = count, "SIGHUP: token file reloaded"),
                Err(err) => {
                    warn!(error = %err, "SIGHUP: token file not reloaded; the previous tokens stay in force");
                }
            }
        }
    });
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            warn!(error = %err, "cannot listen for SIGTERM; only SIGINT stops the node");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
        _ = term.recv() => info!("SIGTERM received"),
    }
}
