//! Admission: bounds the bytes of appends and loads that are accepted but not yet durable, so
//! a burst of writers waits instead of queueing without bound in memory. The same budget type
//! bounds a server's request bytes received but not yet answered (`converge_server::receive`).
//!
//! A request takes permits for everything it will hold in memory (payload, key, metadata,
//! append id; a load's whole snapshot) and keeps them until its entries are durable or have
//! failed — not until the RPC returns: a caller that gives up early does not free memory that
//! the log still holds. A request larger than the whole budget takes the whole budget (it
//! runs alone), so no size can wait forever.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use converge_api::LedgerError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes per permit: requests are admitted in KiB.
const PERMIT_BYTES: usize = 1024;

/// A budget of bytes held in memory.
#[derive(Debug)]
pub struct Admission {
    permits: Arc<Semaphore>,
    total: u32,
    /// Requests that found the budget full and waited.
    waits: AtomicU64,
}

/// Held while a request's bytes are in flight; dropping it returns them.
pub type Admitted = OwnedSemaphorePermit;

impl Admission {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        let total = u32::try_from((bytes / PERMIT_BYTES).max(1)).unwrap_or(u32::MAX);
        Self { permits: Arc::new(Semaphore::new(total as usize)), total, waits: AtomicU64::new(0) }
    }

    /// Permits for `bytes`: all of the budget for more than it holds.
    fn wanted(&self, bytes: usize) -> u32 {
        u32::try_from(bytes.div_ceil(PERMIT_BYTES).max(1)).unwrap_or(u32::MAX).min(self.total)
    }

    /// Waits until `bytes` fit in the budget (all of it, for a request larger than the
    /// budget), and takes them.
    pub async fn admit(&self, bytes: usize) -> Result<Admitted, LedgerError> {
        if let Some(admitted) = self.try_admit(bytes) {
            return Ok(admitted);
        }
        self.waits.fetch_add(1, Ordering::Relaxed);
        Arc::clone(&self.permits)
            .acquire_many_owned(self.wanted(bytes))
            .await
            .map_err(|_| LedgerError::Unavailable("the ledger is shutting down".into()))
    }

    /// Takes `bytes` if they fit in the budget now.
    pub fn try_admit(&self, bytes: usize) -> Option<Admitted> {
        Arc::clone(&self.permits).try_acquire_many_owned(self.wanted(bytes)).ok()
    }

    /// Requests that found the budget full and waited, so far.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// Bytes free in the budget now (for tests and metrics).
    pub fn available_bytes(&self) -> usize {
        self.permits.available_permits() * PERMIT_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_larger_than_the_budget_takes_all_of_it_and_does_not_hang() {
        let admission = Admission::new(10 * 1024);
        let all = admission.admit(1 << 30).await.unwrap();
        assert_eq!(admission.available_bytes(), 0);
        drop(all);
        assert_eq!(admission.available_bytes(), 10 * 1024);
        let one = admission.admit(1).await.unwrap();
        assert_eq!(admission.available_bytes(), 9 * 1024, "a byte costs a permit");
        let _rest = admission.admit(9 * 1024).await.unwrap();
        let waiting = admission.admit(1);
        tokio::pin!(waiting);
        assert!(
            futures_util::FutureExt::now_or_never(&mut waiting).is_none(),
            "a full budget makes callers wait"
        );
        drop(one);
        assert!(waiting.await.is_ok());
    }
}
