//! Every error the embedded ledger returns, mapped to the API's kinds in one place.

use converge_api::LedgerError;
use converge_core::head::StampError;
use converge_core::snapshot::SnapshotError;
use converge_core::validate::{PayloadTooLarge, ValidationError};
use converge_storage::Error as StorageError;

pub(crate) fn invalid(err: &ValidationError) -> LedgerError {
    LedgerError::InvalidArgument(err.to_string())
}

pub(crate) fn payload(err: &PayloadTooLarge) -> LedgerError {
    LedgerError::ResourceExhausted(format!(
        "{err}; send a smaller payload (the limit is the ledger's payload_bytes_max setting)"
    ))
}

pub(crate) fn snapshot(err: &SnapshotError) -> LedgerError {
    LedgerError::InvalidArgument(format!("invalid snapshot: {err}"))
}

pub(crate) fn storage(err: StorageError) -> LedgerError {
    match err {
        StorageError::Poisoned { .. } => {
            LedgerError::Unavailable(format!("{err}; the node must be restarted (check the disk)"))
        }
        StorageError::Closed => LedgerError::Unavailable(
            "the ledger is shutting down; retry against a running node".into(),
        ),
        StorageError::Io { .. } | StorageError::Locked(_) | StorageError::SyncFailed(_) => {
            LedgerError::Unavailable(format!("storage is unavailable: {err}"))
        }
        StorageError::Stamp(StampError::Clock(clock)) => {
            LedgerError::InvalidArgument(clock.to_string())
        }
        StorageError::Stamp(other) => LedgerError::FailedPrecondition(other.to_string()),
        StorageError::Order(order) => LedgerError::FailedPrecondition(order.to_string()),
        StorageError::Moved { .. } => LedgerError::FailedPrecondition(format!("{err}; retry")),
        StorageError::OutOfRange(message) => LedgerError::OutOfRange(message),
        StorageError::Corrupt { .. } | StorageError::Index(_) | StorageError::Config(_) => {
            LedgerError::Internal(format!("storage failure: {err}"))
        }
        other => LedgerError::Internal(format!("storage failure: {other}")),
    }
}
