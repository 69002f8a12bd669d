//! Appends to a Converge Ledger data directory until killed, printing one line per
//! acknowledged append. Usage: `crash-writer DATA_DIR SEED [SEGMENT_BYTES CHECKPOINT_BYTES]`.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use converge_ledger::{AppendRequest, Ledger, LedgerApi, LedgerConfig, StoreConfig};
use converge_torture::Ack;
use tokio::sync::Mutex;

/// Appends in flight at once.
const CONCURRENCY: usize = 48;

/// Contexts written to.
const CONTEXTS: u64 = 7;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir =
        args.get(1).expect("usage: crash-writer DATA_DIR SEED [SEGMENT_BYTES CHECKPOINT_BYTES]");
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut storage = StoreConfig::disk(dir);
    if let Some(bytes) = args.get(3).and_then(|s| s.parse().ok()) {
        storage.segment_bytes = bytes;
    }
    if let Some(bytes) = args.get(4).and_then(|s| s.parse().ok()) {
        storage.checkpoint_bytes = bytes;
        storage.checkpoint_interval = Duration::from_millis(200);
    }
    let ledger = Ledger::open(LedgerConfig::with_storage(storage)).expect("open");
    println!("READY");
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let tasks = (0..CONCURRENCY as u64).map(|task| {
        let ledger = ledger.clone();
        let out = Arc::clone(&out);
        tokio::spawn(async move {
            let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(task);
            loop {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let context = format!("ctx-{}", (state >> 40) % CONTEXTS);
                let len = usize::try_from((state >> 33) % 2048).unwrap_or(0);
                let payload: Vec<u8> =
                    (0..len).map(|i| (state >> (i % 56)).to_le_bytes()[0]).collect();
                let req = AppendRequest::new(context.clone(), "k", payload)
                    .with_metadata("task", task.to_string());
                let entry = ledger.append(req).await.expect("append");
                let ack = Ack {
                    context,
                    sequence: entry.sequence().0,
                    content_hash: entry.content_hash().to_hex(),
                };
                let mut out = out.lock().await;
                let _ = writeln!(out, "{}", ack.line());
                let _ = out.flush();
            }
        })
    });
    futures_util::future::join_all(tasks).await;
}
