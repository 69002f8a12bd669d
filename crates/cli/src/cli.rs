//! The command line (CONTRACT §4). Every flag also reads `CONVERGE_LEDGER_<FLAG>`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Converge Ledger: the memory of an agent-orchestration engine — append-only contexts,
/// durable, watchable, and provable.
#[derive(Debug, Parser)]
#[command(name = "converge-ledger", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node: gRPC on --listen, health and metrics over HTTP on --http.
    Serve(ServeArgs),
    /// Append one entry (payload from the argument, or stdin with `-`) and print it.
    Append(AppendArgs),
    /// Print entries of a context.
    Get(GetArgs),
    /// The contexts that exist, in byte order of their ids, with their tree heads.
    Contexts(ContextsArgs),
    /// Follow a context live.
    Watch(WatchArgs),
    /// Write a context's snapshot blob to a file.
    Snapshot(SnapshotArgs),
    /// Restore a snapshot blob into a context.
    Load(LoadArgs),
    /// Fetch every entry, recompute every hash and the root client side, and check them against
    /// the server's tree head. Exit 1 on any mismatch.
    Verify(VerifyArgs),
    /// Fetch and check an inclusion proof of one entry, client side. Exit 1 if it fails.
    Proof(ProofArgs),
    /// Load-test a node over gRPC (or one it starts itself) and print throughput and latency.
    Bench(crate::bench::BenchArgs),
    /// Manage the tokens a node accepts.
    #[command(subcommand)]
    Token(TokenCommand),
    /// See and change a cluster's membership.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// The nodes (id, address, voter or learner, reachable) and each shard's leader, term,
    /// committed index and how far this node has applied.
    Status(ClusterStatusArgs),
    /// Remove a node from every shard; it then refuses client calls.
    Remove(ClusterRemoveArgs),
    /// Change the cluster-wide limits that decide which appends and loads are accepted
    /// (recorded in every shard's log; `cluster status` shows them).
    Limits(ClusterLimitsArgs),
}

#[derive(Debug, Args)]
pub struct ClusterLimitsArgs {
    /// Largest payload of an append, in bytes (e.g. 4MiB); unchanged if not given.
    #[arg(long, value_parser = parse_bytes)]
    pub payload_bytes_max: Option<usize>,
    /// Largest snapshot a Load may carry, in bytes; unchanged if not given.
    #[arg(long, value_parser = parse_bytes)]
    pub load_bytes_max: Option<usize>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ClusterStatusArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ClusterRemoveArgs {
    /// The node's id, as `cluster status` prints it (16 hex digits).
    pub node: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a new token, add its hash to the token file, and print the token (once: only its
    /// hash is kept).
    Create(TokenCreateArgs),
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// The role: reader (Get, Watch, Snapshot, proofs), writer (also Append, Load), admin,
    /// or peer (another cluster node: the internal service only).
    #[arg(long)]
    pub role: String,
    /// The token file to add it to (created if missing, readable only by its owner).
    #[arg(long, env = "CONVERGE_LEDGER_TOKENS")]
    pub tokens: PathBuf,
    /// A name to remember it by (kept in the file beside the hash).
    #[arg(long, default_value = "")]
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageArg {
    /// Durable, on disk in --data-dir.
    Disk,
    /// In memory only; nothing survives the process.
    Memory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityArg {
    /// Acknowledge after fsync: survives process crash and power loss.
    Fsync,
    /// Acknowledge after write: survives a process crash, not a power loss.
    Buffered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML file of settings (the same names as these flags, with underscores). Flags and
    /// environment variables override it.
    #[arg(long, env = "CONVERGE_LEDGER_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC address. `GRPC_PORT` sets the port on 127.0.0.1 when this is not given.
    #[arg(long, env = "CONVERGE_LEDGER_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Health and metrics address (HTTP: /healthz, /metrics).
    #[arg(long, env = "CONVERGE_LEDGER_HTTP", default_value = "127.0.0.1:9090")]
    pub http: SocketAddr,
    /// Data directory (disk storage).
    #[arg(long, env = "CONVERGE_LEDGER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Where entries are kept.
    #[arg(long, env = "CONVERGE_LEDGER_STORAGE", value_enum, default_value_t = StorageArg::Disk)]
    pub storage: StorageArg,
    /// When an append is acknowledged.
    #[arg(long, env = "CONVERGE_LEDGER_DURABILITY", value_enum, default_value_t = DurabilityArg::Fsync)]
    pub durability: DurabilityArg,
    /// With --durability buffered: the longest a written append waits for an fsync, so a
    /// power cut loses at most about this much (e.g. `1s`, `250ms`).
    #[arg(long, env = "CONVERGE_LEDGER_SYNC_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub sync_interval: std::time::Duration,
    /// Memory that idle contexts may take (e.g. `128MiB`, `1GiB`); beyond it the least
    /// recently used are evicted and reloaded from the index when next used.
    #[arg(long, env = "CONVERGE_LEDGER_MEMORY_BUDGET", default_value = "128MiB", value_parser = parse_bytes)]
    pub memory_budget: usize,
    /// Largest payload accepted, in bytes.
    #[arg(long, env = "CONVERGE_LEDGER_PAYLOAD_BYTES_MAX", default_value_t = converge_core::limits::PAYLOAD_BYTES_MAX_DEFAULT)]
    pub payload_bytes_max: usize,
    /// Largest Get or Snapshot response, in bytes.
    #[arg(long, env = "CONVERGE_LEDGER_RESPONSE_BYTES_MAX", default_value_t = converge_core::limits::RESPONSE_BYTES_MAX_DEFAULT)]
    pub response_bytes_max: usize,
    /// Most concurrent watch streams.
    #[arg(long, env = "CONVERGE_LEDGER_WATCHERS_MAX", default_value_t = converge_ledger::WATCHERS_MAX_DEFAULT)]
    pub watchers_max: usize,
    /// Log format.
    #[arg(long, env = "CONVERGE_LEDGER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter (tracing syntax, e.g. `info` or `converge_storage=debug`).
    #[arg(long, env = "CONVERGE_LEDGER_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// TLS certificate chain (PEM) for the gRPC port; needs --tls-key.
    #[arg(long, env = "CONVERGE_LEDGER_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "CONVERGE_LEDGER_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM); needs TLS.
    #[arg(long, env = "CONVERGE_LEDGER_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// Token file: `<sha256 hex> <reader|writer|admin> [name]` per line (see `token create`).
    /// Re-read on SIGHUP.
    #[arg(long, env = "CONVERGE_LEDGER_TOKENS")]
    pub tokens: Option<PathBuf>,
    /// Listen on a non-loopback address without TLS and tokens anyway.
    #[arg(long, env = "CONVERGE_LEDGER_INSECURE")]
    pub insecure: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Cluster flags (CONTRACT §5). Without --bootstrap or --join, and without a data directory
/// that already belongs to a cluster, the node runs alone.
#[derive(Debug, Args, Clone, Default)]
pub struct ClusterArgs {
    /// Create a cluster whose only voter is this node (once, on one node).
    #[arg(long, env = "CONVERGE_LEDGER_BOOTSTRAP", conflicts_with = "join")]
    pub bootstrap: bool,
    /// Join the cluster of any of these members (`host:port`, comma-separated; a name may
    /// resolve to several nodes). Needed only the first time.
    #[arg(long, env = "CONVERGE_LEDGER_JOIN", value_delimiter = ',', value_name = "ADDR")]
    pub join: Vec<String>,
    /// The address peers and clients use to reach this node (default: --listen).
    #[arg(long, env = "CONVERGE_LEDGER_ADVERTISE", value_name = "ADDR")]
    pub advertise: Option<String>,
    /// With --bootstrap: shards (Raft groups) contexts are spread over, fixed for the
    /// cluster's life.
    #[arg(long, env = "CONVERGE_LEDGER_SHARDS", default_value_t = 8)]
    pub shards: u32,
    /// With --bootstrap: how many voters the cluster aims for (joining nodes become voters
    /// until there are this many).
    #[arg(long, env = "CONVERGE_LEDGER_VOTERS", default_value_t = 3)]
    pub voters: u32,
    /// The token this node presents to its peers (role `peer`), when they require tokens.
    #[arg(long, env = "CONVERGE_LEDGER_PEER_TOKEN", hide_env_values = true)]
    pub peer_token: Option<String>,
    /// With TLS: the CA (PEM) that signed the cluster's node certificates. Nodes reach each
    /// other over TLS, verify the peer's certificate for the address it advertises, and
    /// present their own (--tls-cert) to peers that require client certificates.
    #[arg(long, env = "CONVERGE_LEDGER_PEER_CA", value_name = "FILE")]
    pub peer_ca: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// The node to talk to.
    #[arg(
        long,
        env = "CONVERGE_LEDGER_SERVER",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub server: String,
    /// Print JSON (one object per entry or result) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Trust this CA (PEM) for an `https://` server.
    #[arg(long, env = "CONVERGE_LEDGER_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// Present this certificate (PEM) to a server that requires client certificates.
    #[arg(long, env = "CONVERGE_LEDGER_CLIENT_CERT", global = true)]
    pub client_cert: Option<PathBuf>,
    /// The key (PEM) of --client-cert.
    #[arg(long, env = "CONVERGE_LEDGER_CLIENT_KEY", global = true)]
    pub client_key: Option<PathBuf>,
    /// Bearer token for servers that require one.
    #[arg(long, env = "CONVERGE_LEDGER_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Args)]
pub struct AppendArgs {
    /// Context id.
    pub context: String,
    /// Entry key.
    pub key: String,
    /// Payload; `-` or nothing reads it from stdin.
    pub payload: Option<String>,
    /// Metadata pair, `k=v` (repeatable).
    #[arg(long = "meta", value_name = "K=V")]
    pub meta: Vec<String>,
    /// Idempotency token: a retry with the same id returns the recorded entry.
    #[arg(long)]
    pub append_id: Option<String>,
    /// A Lamport time received with the message that caused this entry.
    #[arg(long)]
    pub received_lamport_clock: Option<u64>,
    /// Append many entries read from stdin, all on one stream, and print each: `lines` (one
    /// payload per line) or `framed` (each payload after its length as a 4-byte big-endian
    /// number). With --append-id ID, entry N gets `ID:N`, so running it again appends nothing
    /// new.
    #[arg(long, value_enum, conflicts_with = "payload")]
    pub many: Option<Framing>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// How `append --many` reads payloads from stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Framing {
    /// One payload per line (without its line ending).
    Lines,
    /// A 4-byte big-endian length, then that many bytes; repeated.
    Framed,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Context id.
    pub context: String,
    /// Only entries with this key.
    #[arg(long)]
    pub key: Option<String>,
    /// Entries after this sequence.
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    /// At most this many (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: u32,
    /// Only entries with a sequence below this one.
    #[arg(long, value_name = "SEQUENCE")]
    pub before: Option<u64>,
    /// Highest sequence first (`--limit 1`: the latest entry, of `--key` when given).
    #[arg(long)]
    pub newest_first: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ContextsArgs {
    /// Only contexts whose id begins with this.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// At most this many (0: all, fetched a page at a time).
    #[arg(long, default_value_t = 0)]
    pub limit: u64,
    /// Start after this context id (a `next_page_token`, or the last id printed).
    #[arg(long, value_name = "CONTEXT", default_value = "")]
    pub after: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Context id (it need not exist yet).
    pub context: String,
    /// Only entries with this key.
    #[arg(long)]
    pub key: Option<String>,
    /// Start after this sequence.
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Context id.
    pub context: String,
    /// Where to write the blob.
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Context id to load into.
    pub context: String,
    /// The snapshot blob.
    pub file: PathBuf,
    /// Refuse if the context already has entries.
    #[arg(long)]
    pub fail_if_exists: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Context id.
    pub context: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ProofArgs {
    /// Context id.
    pub context: String,
    /// The entry's sequence.
    pub sequence: u64,
    /// Prove against the tree of this size (0: current).
    #[arg(long, default_value_t = 0)]
    pub tree_size: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Parses a duration written as a number with `ms` or `s` (`250ms`, `1s`, `1.5s`).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let invalid = || format!("{text:?} is not a duration: write e.g. 250ms or 1s");
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else {
        return Err(invalid());
    };
    let value: f64 = number.trim().parse().map_err(|_| invalid())?;
    if !value.is_finite() || value <= 0.0 || value * scale > 86_400.0 {
        return Err(format!("{text:?} must be above zero and at most a day"));
    }
    Ok(std::time::Duration::from_secs_f64(value * scale))
}

/// Parses a size written as a number of bytes with an optional `KiB`, `MiB` or `GiB`.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let (number, unit) = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)]
        .iter()
        .find_map(|(suffix, unit)| text.strip_suffix(suffix).map(|n| (n, *unit)))
        .unwrap_or((text, 1));
    let value: usize = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a size: write e.g. 65536, 512KiB, 128MiB or 2GiB"))?;
    value.checked_mul(unit).ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{parse_bytes, parse_duration};

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert_eq!(parse_bytes("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_bytes("128MiB"), Ok(128 << 20));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        for bad in ["", "MiB", "1.5MiB", "-1", "12MB", "99999999999999999999GiB"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in ["", "1", "s", "0s", "-1s", "2d", "1e9s", "NaNs"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }
}
