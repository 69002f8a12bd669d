//! The node's configuration, layered: defaults ← TOML file ← `CONVERGE_LEDGER_*` environment ←
//! flags, validated once.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::ArgMatches;
use clap::parser::ValueSource;
use converge_core::Limits;
use serde::Deserialize;

use crate::cli::{DurabilityArg, LogFormat, ServeArgs, StorageArg};

/// The settings a config file may hold: the flags' names with underscores.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    http: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    storage: Option<StorageArg>,
    durability: Option<DurabilityArg>,
    #[serde(default, deserialize_with = "duration")]
    sync_interval: Option<std::time::Duration>,
    #[serde(default, deserialize_with = "bytes")]
    memory_budget: Option<usize>,
    payload_bytes_max: Option<usize>,
    response_bytes_max: Option<usize>,
    watchers_max: Option<usize>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    tokens: Option<PathBuf>,
    insecure: Option<bool>,
}

/// A setting the file writes as text, read with its flag's own parser (`250ms`, `128MiB`).
fn parsed<'de, D, T>(
    deserializer: D,
    parse: fn(&str) -> Result<T, String>,
) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text = String::deserialize(deserializer)?;
    parse(&text).map(Some).map_err(serde::de::Error::custom)
}

fn duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<std::time::Duration>, D::Error> {
    parsed(deserializer, crate::cli::parse_duration)
}

fn bytes<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<usize>, D::Error> {
    parsed(deserializer, crate::cli::parse_bytes)
}

/// The resolved configuration of `serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub http: SocketAddr,
    pub data_dir: PathBuf,
    pub storage: StorageArg,
    pub durability: DurabilityArg,
    pub sync_interval: std::time::Duration,
    pub memory_budget: usize,
    pub limits: Limits,
    pub watchers_max: usize,
    pub log_format: LogFormat,
    pub log_level: String,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    pub tokens: Option<PathBuf>,
    pub insecure: bool,
    pub cluster: crate::cli::ClusterArgs,
}

/// Whether `name` was given on the command line or in the environment (not defaulted).
impl ServeConfig {
    /// Whether the data directory belongs to a cluster (it records one), so the node restarts
    /// as that cluster's member without --bootstrap or --join.
    pub fn cluster_directory(&self) -> bool {
        self.storage == StorageArg::Disk && self.data_dir.join("cluster").exists()
    }
}

fn explicit(matches: &ArgMatches, name: &str) -> bool {
    matches!(matches.value_source(name), Some(ValueSource::CommandLine | ValueSource::EnvVariable))
}

/// Resolves `args` (flags and environment, with clap's defaults) over the optional file.
pub fn resolve(args: ServeArgs, matches: &ArgMatches) -> anyhow::Result<ServeConfig> {
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the config file {}", path.display()))?;
            toml::from_str::<FileConfig>(&text)
                .with_context(|| format!("the config file {} is not valid", path.display()))?
        }
        None => FileConfig::default(),
    };
    let pick = |name: &str| explicit(matches, name);
    let listen = if pick("listen") {
        args.listen
    } else if let Some(listen) = file.listen {
        listen
    } else if let Ok(port) = std::env::var("GRPC_PORT") {
        let port: u16 = port
            .parse()
            .with_context(|| format!("GRPC_PORT must be a port number, got {port:?}"))?;
        SocketAddr::from(([127, 0, 0, 1], port))
    } else {
        args.listen
    };
    // A flag or environment variable wins, then the file, then the flag's default.
    macro_rules! layered {
        ($name:ident) => {
            if pick(stringify!($name)) { args.$name } else { file.$name.unwrap_or(args.$name) }
        };
    }
    let config = ServeConfig {
        listen,
        http: layered!(http),
        data_dir: layered!(data_dir),
        storage: layered!(storage),
        durability: layered!(durability),
        sync_interval: layered!(sync_interval),
        memory_budget: layered!(memory_budget),
        limits: Limits {
            payload_bytes_max: layered!(payload_bytes_max),
            response_bytes_max: layered!(response_bytes_max),
        },
        watchers_max: layered!(watchers_max),
        log_format: layered!(log_format),
        log_level: layered!(log_level),
        tls_cert: args.tls_cert.or(file.tls_cert),
        tls_key: args.tls_key.or(file.tls_key),
        client_ca: args.client_ca.or(file.client_ca),
        tokens: args.tokens.or(file.tokens),
        insecure: args.insecure || file.insecure.unwrap_or(false),
        cluster: args.cluster,
    };
    validate(&config)?;
    Ok(config)
}

fn validate(config: &ServeConfig) -> anyhow::Result<()> {
    config.limits.validate().map_err(|e| anyhow::anyhow!("invalid limits: {e}"))?;
    if config.memory_budget < converge_ledger::CONTEXT_RESIDENT_BYTES {
        bail!(
            "--memory-budget must be at least {} bytes (one context)",
            converge_ledger::CONTEXT_RESIDENT_BYTES
        );
    }
    if config.watchers_max == 0 {
        bail!("--watchers-max must be at least 1");
    }
    if config.listen == config.http && config.listen.port() != 0 {
        bail!("--listen and --http must be different addresses (both are {})", config.listen);
    }
    if config.tls_cert.is_some() != config.tls_key.is_some() {
        bail!("TLS needs both --tls-cert and --tls-key");
    }
    if config.client_ca.is_some() && config.tls_cert.is_none() {
        bail!("--client-ca (client certificates) needs TLS: add --tls-cert and --tls-key");
    }
    if config.cluster.shards == 0 || config.cluster.voters == 0 {
        bail!("--shards and --voters must be at least 1");
    }
    let clustered = config.cluster.bootstrap || !config.cluster.join.is_empty();
    if clustered && config.storage == StorageArg::Memory {
        bail!(
            "a cluster node keeps its Raft log on disk: --bootstrap and --join need --storage disk"
        );
    }
    if (clustered || config.cluster_directory()) && config.durability == DurabilityArg::Buffered {
        bail!(
            "a cluster node runs --durability fsync: with buffered, the node could acknowledge to its peers what a power cut then loses, and its replica would differ from the others. Drop --durability buffered (CONTRACT §5)"
        );
    }
    if config.cluster.peer_ca.is_some() && config.tls_cert.is_none() {
        bail!("--peer-ca is for nodes that serve TLS: add --tls-cert and --tls-key");
    }
    let secured = config.tls_cert.is_some() && config.tokens.is_some();
    if !config.listen.ip().is_loopback() && !secured && !config.insecure {
        bail!(
            "refusing to serve on {} without TLS and tokens: anyone who can reach it could read and append. \
             Add --tls-cert FILE --tls-key FILE and --tokens FILE (make tokens with `converge-ledger token create`), \
             listen on 127.0.0.1, or pass --insecure to accept the risk",
            config.listen
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, FromArgMatches as _};

    use super::*;
    use crate::cli::{Cli, Command};

    fn resolve_args(command_line: &[&str]) -> anyhow::Result<ServeConfig> {
        let matches = Cli::command().try_get_matches_from(command_line)?;
        let Command::Serve(args) = Cli::from_arg_matches(&matches)?.command else { unreachable!() };
        resolve(args, matches.subcommand_matches("serve").expect("serve"))
    }

    #[test]
    fn a_file_is_overridden_by_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:6000\"\nwatchers_max = 7\nstorage = \"memory\"\n",
        )
        .unwrap();
        let path = path.to_str().unwrap();
        let config = resolve_args(&["converge-ledger", "serve", "--config", path]).unwrap();
        assert_eq!(
            (config.listen.port(), config.watchers_max, config.storage),
            (6000, 7, StorageArg::Memory)
        );
        let config =
            resolve_args(&["converge-ledger", "serve", "--config", path, "--watchers-max", "9"])
                .unwrap();
        assert_eq!(config.watchers_max, 9, "a flag beats the file");
        assert_eq!(config.listen.port(), 6000, "the file beats the default");
    }

    #[test]
    fn a_public_address_needs_tls_and_tokens_or_insecure() {
        let err =
            resolve_args(&["converge-ledger", "serve", "--listen", "0.0.0.0:50051"]).unwrap_err();
        assert!(
            err.to_string().contains("--tls-cert") && err.to_string().contains("--insecure"),
            "{err}"
        );
        assert!(
            resolve_args(&["converge-ledger", "serve", "--listen", "0.0.0.0:50051", "--insecure"])
                .is_ok()
        );
        let secured = [
            "converge-ledger",
            "serve",
            "--listen",
            "0.0.0.0:50051",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tokens",
            "t",
        ];
        assert!(resolve_args(&secured).is_ok());
        assert!(resolve_args(&["converge-ledger", "serve"]).is_ok(), "loopback needs nothing");
        let half = resolve_args(&["converge-ledger", "serve", "--tls-cert", "c.pem"]).unwrap_err();
        assert!(half.to_string().contains("both"), "{half}");
    }

    #[test]
    fn bad_settings_are_refused_with_the_reason() {
        let err =
            resolve_args(&["converge-ledger", "serve", "--payload-bytes-max", "0"]).unwrap_err();
        assert!(err.to_string().contains("payload limit"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "no_such_setting = 1\n").unwrap();
        let err = resolve_args(&["converge-ledger", "serve", "--config", path.to_str().unwrap()])
            .unwrap_err();
        assert!(format!("{err:#}").contains("no_such_setting"), "{err:#}");
    }
}
