//! The gRPC shell of Converge Ledger.
//!
//! What it is: `ContextService` and `IntegrityService` (`converge.context.v1`) over the
//! embedded ledger, answering `grpc.health.v1` and server reflection, with explicit limits
//! (message sizes, concurrent streams, HTTP/2 reset limits, keepalive, connections and
//! handshake time), TLS and token authentication, handler panics turned
//! into `INTERNAL`, Prometheus metrics and a health check over HTTP, and a graceful shutdown.
//! [`run`](run::run) serves a ledger on listeners the caller binds, so tests and the binary
//! start it the same way.
//!
//! What it is not: it decides nothing. Every rule lives in the embedded ledger and the core;
//! every error is mapped to a status in `converge_proto::status`.

pub mod append_stream;
pub mod auth;
pub mod connections;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod receive;
pub mod run;
pub mod service;
mod watch_events;

pub use run::{Listeners, Replication, Security, ServeError, run, run_node};
