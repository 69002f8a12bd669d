//! End-to-end tests: the real `converge-ledger` binary on free loopback ports, driven over
//! gRPC and through its own client subcommands, the way an engine or an operator would.
#![allow(clippy::cast_possible_truncation, reason = "test sizes and indices are small")]
#![allow(missing_docs, unreachable_pub, reason = "test helpers")]

mod bounds;
mod cli;
mod cluster;
mod cluster_faults;
mod cluster_safety;
mod dashboard;
mod flood;
mod hardening;
mod lifecycle;
mod lying;
mod node;
mod rpc;
mod security;
mod stream;
mod watch;
mod wire;
