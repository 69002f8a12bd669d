//! Simulated power cuts in CI: seeds from the clock (or `POWER_CUT_SEED`), on two threads,
//! until at least `POWER_CUT_CUTS` crash states (default 10,000) have been reopened and
//! checked. A violation names the seed that replays it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use converge_torture::power;

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn every_state_a_power_cut_can_leave_opens_and_keeps_every_acknowledged_entry() {
    let want = env("POWER_CUT_CUTS").unwrap_or(10_000);
    let first = env("POWER_CUT_SEED")
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_secs()));
    println!("power cuts: first seed {first}");
    let next = AtomicU64::new(0);
    let cuts = AtomicU64::new(0);
    let totals = Mutex::new((0u64, 0u64, 0u64)); // seeds, acks, buffered seeds
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while cuts.load(Ordering::SeqCst) < want {
                    let seed = first.wrapping_add(next.fetch_add(1, Ordering::SeqCst));
                    let work = tempfile::Builder::new()
                        .prefix("power-cut-")
                        .tempdir_in(power::work_root())
                        .unwrap();
                    let report =
                        power::run_seed(seed, work.path()).unwrap_or_else(|v| panic!("{v}"));
                    assert!(report.acked > 0, "seed {seed}: the workload acknowledged nothing");
                    assert!(report.cuts > 0, "seed {seed}: no power cut was made");
                    cuts.fetch_add(report.cuts, Ordering::SeqCst);
                    let mut t = totals.lock().unwrap();
                    t.0 += 1;
                    t.1 += report.acked;
                    t.2 += u64::from(report.buffered);
                }
            });
        }
    });
    let (seeds, acks, buffered) = *totals.lock().unwrap();
    let cuts = cuts.load(Ordering::SeqCst);
    println!(
        "power cuts: {cuts} states checked over {seeds} seeds from {first} ({buffered} buffered), {acks} acks, zero violations"
    );
    assert!(cuts >= want);
    assert!(buffered > 0 && buffered < seeds, "both durability modes ran");
}
