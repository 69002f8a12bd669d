//! Admission: bounds the bytes of appends and loads that are accepted but not yet durable, so
//! a burst of writers waits instead of queueing without bound in memory.
//!
//! A request takes permits for everything it will hold in memory (payload, key, metadata,
//! append id; a load's whole snapshot) and keeps them until its entries are durable or have
//! failed — not until the RPC returns: a caller that gives up early does not free memory that
//! the log still holds. A request larger than the whole budget takes the whole budget (it
//! runs alone), so no size can wait forever.

use std::sync::Arc;

use converge_api::LedgerError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes per permit: requests are admitted in KiB.
const PERMIT_BYTES: usize = 1024;

/// The budget of bytes in flight.
pub(crate) struct Admission {
    permits: Arc<Semaphore>,
    total: u32,
}

/// Held while a request's bytes are in flight; dropping it returns them.
pub(crate) type Admitted = OwnedSemaphorePermit;

impl Admission {
    /// A budget of `bytes`.
    pub(crate) fn new(bytes: usize) -> Self {
        let total = u32::try_from((bytes / PERMIT_BYTES).max(1)).unwrap_or(u32::MAX);
        Self { permits: Arc::new(Semaphore::new(total as usize)), total }
    }

    /// Waits until `bytes` fit in the budget (all of it, for a request larger than the
    /// budget), and takes them.
    pub(crate) async fn admit(&self, bytes: usize) -> Result<Admitted, LedgerError> {
        let wanted = u32::try_from(bytes.div_ceil(PERMIT_BYTES).max(1)).unwrap_or(u32::MAX);
        Arc::clone(&self.permits)
            .acquire_many_owned(wanted.min(self.total))
            .await
            .map_err(|_| LedgerError::Unavailable("the ledger is shutting down".into()))
    }

    /// Bytes free in the budget now (for tests and metrics).
    pub(crate) fn available_bytes(&self) -> usize {
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
