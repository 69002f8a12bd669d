//! `converge-ledger`: one binary that serves a node (`serve`) and talks to one (the client
//! subcommands). It parses, sets up logging and hands over to the libraries.
//!
//! Exit codes: 0 success, 1 a verification failed, 2 any error.

#![allow(
    unreachable_pub,
    reason = "a binary crate: `pub` marks what each module offers the others"
)]

mod bench;
mod cli;
mod cluster;
mod commands;
mod config;
mod many;
mod output;
mod serve;
mod skew;
mod token;

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, LogFormat};

fn init_logging(format: LogFormat, filter: &str) {
    // openraft narrates every vote and replication step at info; its warnings are what an
    // operator needs unless the filter asks for more.
    let filter = if filter.contains("openraft") {
        filter.to_string()
    } else {
        format!("{filter},openraft=warn")
    };
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn run() -> anyhow::Result<ExitCode> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Serve(args) => {
            let sub = matches.subcommand_matches("serve").expect("serve was parsed");
            let config = config::resolve(args, sub)?;
            init_logging(config.log_format, &config.log_level);
            runtime.block_on(serve::serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        command => {
            init_logging(
                LogFormat::Text,
                &std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            );
            runtime.block_on(async move {
                match command {
                    Command::Append(args) => commands::append(args).await,
                    Command::Get(args) => commands::get(args).await,
                    Command::Contexts(args) => commands::contexts(args).await,
                    Command::Watch(args) => commands::watch(args).await,
                    Command::Snapshot(args) => commands::snapshot(args).await,
                    Command::Load(args) => commands::load(args).await,
                    Command::Verify(args) => commands::verify(args).await,
                    Command::Proof(args) => commands::proof(args).await,
                    Command::Bench(args) => bench::bench(args).await,
                    Command::Token(cli::TokenCommand::Create(args)) => token::create(&args),
                    Command::Cluster(cli::ClusterCommand::Status(args)) => {
                        cluster::status(args).await
                    }
                    Command::Cluster(cli::ClusterCommand::Remove(args)) => {
                        cluster::remove(args).await
                    }
                    Command::Cluster(cli::ClusterCommand::Limits(args)) => {
                        cluster::limits(args).await
                    }
                    Command::Serve(_) => unreachable!("handled above"),
                }
            })
        }
    }
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            if matches!(err.downcast_ref(), Some(converge_api::LedgerError::Unavailable(_))) {
                eprintln!(
                    "hint: is a node running at the --server address? A node serving TLS needs an \
                     https:// address (and --ca if its certificate is not publicly trusted)"
                );
            }
            ExitCode::from(2)
        }
    }
}
