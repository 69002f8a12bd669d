//! `cluster-faults [--minutes N] [--seed S] [--binary PATH] [--faults KIND,…]`: the cluster
//! fault suite. Without `--minutes` it applies every fault once (the CI mode); with it, random
//! faults for that long (of the kinds `--faults` names, e.g. `kill-leader`, or all). Exits 1
//! on any checker violation, printing them and the seed to replay.

use std::path::PathBuf;
use std::process::ExitCode;

use converge_torture::cluster::{self, Config, Fault, Mode};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut minutes = None;
    let mut seed = None;
    let mut binary = None;
    let mut faults = None;
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--minutes" => minutes = Some(value().parse::<u64>().expect("--minutes N")),
            "--seed" => seed = Some(value().parse::<u64>().expect("--seed S")),
            "--binary" => binary = Some(PathBuf::from(value())),
            "--faults" => {
                let named: Option<Vec<Fault>> = value().split(',').map(Fault::named).collect();
                let Some(named) = named.filter(|n| !n.is_empty()) else {
                    eprintln!("--faults: unknown kind; the kinds: {:?}", Fault::ALL);
                    return ExitCode::from(2);
                };
                faults = Some(named);
            }
            other => {
                eprintln!(
                    "unknown argument {other}; usage: cluster-faults [--minutes N] [--seed S] [--binary PATH] [--faults KIND,…]"
                );
                return ExitCode::from(2);
            }
        }
    }
    let binary = binary.unwrap_or_else(|| {
        // Beside this binary: target/<profile>/converge-ledger.
        let me = std::env::current_exe().expect("this executable's path");
        me.with_file_name("converge-ledger")
    });
    assert!(
        binary.exists(),
        "{} does not exist: build it (cargo build -p converge-cli) or pass --binary",
        binary.display()
    );
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs() ^ u64::from(d.subsec_nanos()))
    });
    eprintln!(
        "cluster faults: seed {seed} (replay: cluster-faults --seed {seed}{})",
        minutes.map_or(String::new(), |m| format!(" --minutes {m}"))
    );
    let mut config = Config::ci(binary, seed);
    if let Some(m) = minutes {
        config.mode = Mode::Minutes(m);
    }
    if let Some(faults) = faults {
        if minutes.is_none() {
            eprintln!("--faults narrows a timed run: give --minutes too");
            return ExitCode::from(2);
        }
        config.faults = faults;
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    // Interrupted, the run is dropped: its nodes are killed and its namespaces removed.
    let report = runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            report = cluster::run(config) => Some(report),
            _ = tokio::signal::ctrl_c() => None,
            _ = term.recv() => None,
        }
    });
    let Some(report) = report else {
        eprintln!("cluster faults: interrupted; nodes stopped, namespaces removed");
        return ExitCode::from(130);
    };
    println!("{}", report.summary());
    if report.verdict.violations.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
