//! The cluster fault suite's CI mode against the real binary: every fault once, under load,
//! then the checker over the history and every node's final state (see
//! `converge_torture::cluster`). Seeded from the clock; `CLUSTER_FAULTS_SEED` replays one.

use std::path::PathBuf;

use converge_torture::cluster::{self, Config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_once_loses_nothing_acknowledged() {
    let seed = std::env::var("CLUSTER_FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs() ^ u64::from(d.subsec_nanos()))
        });
    eprintln!("cluster faults: seed {seed} (replay with CLUSTER_FAULTS_SEED={seed})");
    let report =
        cluster::run(Config::ci(PathBuf::from(env!("CARGO_BIN_EXE_converge-ledger")), seed)).await;
    eprintln!("{}", report.summary());
    assert!(
        report.verdict.violations.is_empty(),
        "the checker found violations (seed {seed}):\n{}",
        report.summary()
    );
    assert!(report.verdict.acked > 100, "the workload got appends through: {}", report.summary());
    assert!(!report.faults.is_empty(), "faults were applied");
    // A fault kind that could not run (partitions and packet loss need network namespaces
    // and nftables, as root: `.ci/run` installs them) is a failure, not a pass.
    assert!(
        report.skipped.is_empty(),
        "fault kinds were skipped, so they were not tested: {:?}
{}",
        report.skipped,
        report.summary()
    );
    assert!(report.verdict.watched > 0, "watchers saw entries");
    // CONTRACT §5: appends to a shard resume within 5 s of its leader's crash.
    assert!(
        report.failovers.iter().all(|took| *took <= std::time::Duration::from_secs(5)),
        "a failover took longer than 5 s: {:?}\n{}",
        report.failovers,
        report.summary()
    );
}
