//! Real crash tests: a child process appends flat out and is killed with SIGKILL at random
//! moments, many times over the same data directory; after each kill the directory is reopened
//! and every acknowledged entry must be there, byte-identical (same content hash), with
//! sequences gap-free and every root recomputing from the entries.
#![allow(clippy::cast_possible_truncation, reason = "test sizes and indices are small")]

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use converge_core::ContextId;
use converge_core::merkle::CompactTree;
use converge_ledger::{GetRequest, Ledger, LedgerApi, LedgerConfig};
use converge_torture::Ack;

const KILLS: u64 = 12;

fn kill_after(dir: &std::path::Path, seed: u64, extra: &[&str], after: Duration) -> Vec<Ack> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
        .arg(dir)
        .arg(seed.to_string())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the writer");
    let stdout = child.stdout.take().expect("piped");
    let acks = Arc::new(Mutex::new(Vec::new()));
    let ready = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let reader = {
        let acks = Arc::clone(&acks);
        let ready = Arc::clone(&ready);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line == "READY" {
                    *ready.0.lock().unwrap() = true;
                    ready.1.notify_all();
                } else if let Some(ack) = Ack::parse(&line) {
                    acks.lock().unwrap().push(ack);
                }
            }
        })
    };
    {
        let guard = ready.0.lock().unwrap();
        let (guard, timeout) =
            ready.1.wait_timeout_while(guard, Duration::from_secs(60), |r| !*r).unwrap();
        assert!(*guard && !timeout.timed_out(), "the writer opened the store");
    }
    std::thread::sleep(after);
    child.kill().expect("SIGKILL the writer");
    child.wait().expect("reap the writer");
    reader.join().expect("reader thread");
    Arc::try_unwrap(acks).expect("reader done").into_inner().unwrap()
}

async fn check(dir: &std::path::Path, acked: &HashMap<(String, u64), String>) -> usize {
    let ledger = Ledger::open(LedgerConfig::disk(dir)).expect("reopen after SIGKILL");
    assert!(ledger.open_report().unclean_shutdown, "a killed writer leaves the marker");
    let mut total = 0;
    let mut contexts: Vec<&String> = acked.keys().map(|(c, _)| c).collect();
    contexts.sort();
    contexts.dedup();
    for context in contexts {
        let entries = ledger.get(GetRequest::all(context.as_str())).await.unwrap().entries;
        let id = ContextId::try_new(context.as_str()).unwrap();
        for (i, entry) in entries.iter().enumerate() {
            assert_eq!(entry.sequence().0, i as u64 + 1, "{context}: sequences are gap-free");
            entry.verify(&id).expect("every entry's content hash matches its bytes");
        }
        let hashes: Vec<_> = entries.iter().map(|e| e.content_hash()).collect();
        let head = ledger.tree_head(context).await.unwrap();
        assert_eq!(head.tree_size, entries.len() as u64);
        assert_eq!(
            head.root_hash,
            CompactTree::from_leaves(&hashes).root(),
            "{context}: the root recomputes"
        );
        for ((c, seq), hash) in acked.iter().filter(|((c, _), _)| c == context) {
            let entry = entries
                .get(*seq as usize - 1)
                .unwrap_or_else(|| panic!("acknowledged {c}/{seq} is lost"));
            assert_eq!(
                &entry.content_hash().to_hex(),
                hash,
                "acknowledged {c}/{seq} is byte-identical"
            );
        }
        total += entries.len();
    }
    ledger.close().await.unwrap();
    total
}

fn crash_loop(extra: &[&str], seed_base: u64) {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut acked: HashMap<(String, u64), String> = HashMap::new();
    let mut survived = 0;
    for round in 0..KILLS {
        let seed = seed_base + round;
        // Kill at pseudo-random moments between 20 and 420 ms after the writer is ready.
        let after = Duration::from_millis(20 + (seed.wrapping_mul(2_654_435_761) % 400));
        let acks = kill_after(dir.path(), seed, extra, after);
        for ack in acks {
            let previous =
                acked.insert((ack.context.clone(), ack.sequence), ack.content_hash.clone());
            assert!(previous.is_none(), "{}/{} acknowledged twice", ack.context, ack.sequence);
        }
        let found = rt.block_on(check(dir.path(), &acked));
        assert!(
            found >= acked.len(),
            "round {round}: {found} entries for {} acknowledgements",
            acked.len()
        );
        survived = found;
    }
    assert!(acked.len() > 100, "the writer made progress ({} acknowledged)", acked.len());
    eprintln!("{KILLS} kills, {} acknowledged appends, {survived} entries survived", acked.len());
}

#[test]
fn every_acknowledged_append_survives_sigkill() {
    crash_loop(&[], 1_000);
}

#[test]
fn sigkill_during_segment_rotation_and_checkpoints() {
    // Small segments and frequent checkpoints: kills land in rotations and checkpoints too.
    crash_loop(&["65536", "262144"], 2_000);
}
