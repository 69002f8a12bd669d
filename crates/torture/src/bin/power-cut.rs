//! Simulated power cuts for as long as asked: `power-cut [--minutes N] [--seed S]`.
//!
//! Runs seeds one after another (from `--seed`, or from the clock), each a workload over the
//! simulated disk cut at every fsync and between (see `converge_torture::power`), and stops at
//! the first violation with the seed that replays it (exit 1). `--seed S` alone runs that one
//! seed. Prints a summary line every ten seconds.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use converge_torture::power;

fn main() {
    let mut minutes: Option<f64> = None;
    let mut seed: Option<u64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next();
        match (arg.as_str(), value) {
            ("--minutes", Some(v)) => minutes = Some(v.parse().expect("--minutes takes a number")),
            ("--seed", Some(v)) => seed = Some(v.parse().expect("--seed takes an integer")),
            _ => {
                eprintln!("usage: power-cut [--minutes N] [--seed S]");
                std::process::exit(2);
            }
        }
    }
    let first = seed
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_secs()));
    let deadline = minutes.map(|m| Instant::now() + Duration::from_secs_f64(m * 60.0));
    let started = Instant::now();
    let mut last_print = Instant::now();
    let (mut seeds, mut cuts, mut ops, mut acked) = (0u64, 0u64, 0u64, 0u64);
    println!("power-cut: first seed {first}");
    for n in 0.. {
        let seed = first.wrapping_add(n);
        let work = tempfile::Builder::new()
            .prefix("power-cut-")
            .tempdir_in(power::work_root())
            .expect("a work directory");
        match power::run_seed(seed, work.path()) {
            Ok(report) => {
                seeds += 1;
                cuts += report.cuts;
                ops += report.ops;
                acked += report.acked;
            }
            Err(violation) => {
                eprintln!("VIOLATION {violation}");
                std::process::exit(1);
            }
        }
        if last_print.elapsed() >= Duration::from_secs(10) {
            last_print = Instant::now();
            println!(
                "{:.0}s: {seeds} seeds, {cuts} cuts checked, {ops} disk operations, {acked} acks, last seed {seed}",
                started.elapsed().as_secs_f64()
            );
        }
        // Without --minutes, one seed.
        if deadline.is_none_or(|deadline| Instant::now() >= deadline) {
            break;
        }
    }
    println!(
        "power-cut: {seeds} seeds, {cuts} cuts checked, {ops} disk operations, {acked} acks in {:.1}s, zero violations (seeds {first}..={})",
        started.elapsed().as_secs_f64(),
        first.wrapping_add(seeds.saturating_sub(1))
    );
}
