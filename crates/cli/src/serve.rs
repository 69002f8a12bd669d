//! `serve`: open the ledger, bind, print `listening on ADDR`, serve until SIGINT or SIGTERM.

use std::io::Write as _;

use anyhow::Context as _;
use converge_ledger::{Durability, Ledger, LedgerConfig, StoreConfig};
use converge_server::Listeners;
use tokio::net::TcpListener;
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
            ..StoreConfig::disk(&config.data_dir)
        },
        StorageArg::Memory => StoreConfig::memory(),
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
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening on {grpc_addr}");
    let _ = out.flush();
    converge_server::run(ledger, listeners, shutdown_signal()).await?;
    info!("stopped");
    Ok(())
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
