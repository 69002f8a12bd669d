//! Helpers for the ledger tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use converge_core::Timestamp;
use converge_ledger::{Clock, Ledger, LedgerConfig, StoreConfig};

/// A clock the test moves by hand (it starts at a fixed instant and ticks 1 µs per reading).
#[derive(Debug, Default)]
pub struct TestClock(pub AtomicU64);

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        Timestamp(1_764_000_000_000_000_000 + self.0.fetch_add(1_000, Ordering::SeqCst))
    }
}

pub fn memory() -> Ledger {
    Ledger::open(LedgerConfig::memory()).unwrap()
}

pub fn disk(dir: &Path) -> Ledger {
    Ledger::open(LedgerConfig::disk(dir)).unwrap()
}

pub fn with_clock(storage: StoreConfig, clock: Arc<dyn Clock>) -> Ledger {
    Ledger::open(LedgerConfig { clock, ..LedgerConfig::with_storage(storage) }).unwrap()
}

/// Both modes, so every behaviour is checked in each.
pub fn both(dir: &Path) -> Vec<(&'static str, Ledger)> {
    vec![("memory", memory()), ("disk", disk(dir))]
}
