//! Failure injection for tests: make the log's next write or fsync fail, as a dying disk would,
//! make the writer thread panic, as a bug would, or make checkpoints slow, as a busy index
//! would.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

/// Countdowns to injected failures. Zero means "never"; `n` means the `n`-th call from now
/// fails (and every later one succeeds again, as a flaky disk might — the log must still
/// refuse to acknowledge anything after the first failure).
#[derive(Debug, Default)]
pub struct Faults {
    sync_failure: AtomicU64,
    write_failure: AtomicU64,
    writer_panic: AtomicU64,
    checkpoint_delay_ms: AtomicU64,
}

impl Faults {
    /// Makes the `n`-th fsync from now fail.
    pub fn fail_sync(&self, n: u64) {
        self.sync_failure.store(n, Ordering::SeqCst);
    }

    /// Makes the `n`-th write from now fail.
    pub fn fail_write(&self, n: u64) {
        self.write_failure.store(n, Ordering::SeqCst);
    }

    /// Makes the writer panic just before its `n`-th write from now.
    pub fn panic_write(&self, n: u64) {
        self.writer_panic.store(n, Ordering::SeqCst);
    }

    /// Makes every checkpoint from now on take `delay` longer before it writes the index.
    pub fn delay_checkpoints(&self, delay: std::time::Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.checkpoint_delay_ms.store(ms, Ordering::SeqCst);
    }

    pub(crate) fn before_checkpoint_write(&self) {
        let ms = self.checkpoint_delay_ms.load(Ordering::SeqCst);
        if ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }

    pub(crate) fn before_sync(&self) -> io::Result<()> {
        countdown(&self.sync_failure, "injected fsync failure")
    }

    pub(crate) fn before_write(&self) -> io::Result<()> {
        assert!(countdown(&self.writer_panic, "").is_ok(), "injected panic in the log writer");
        countdown(&self.write_failure, "injected write failure")
    }
}

fn countdown(counter: &AtomicU64, what: &str) -> io::Result<()> {
    let hit = counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n > 0).then(|| n - 1))
        .is_ok_and(|before| before == 1);
    if hit { Err(io::Error::other(what.to_owned())) } else { Ok(()) }
}
