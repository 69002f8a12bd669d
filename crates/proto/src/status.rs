//! `LedgerError` ⇄ gRPC status, in one place (CONTRACT §2 "errors"). The server maps errors to
//! statuses here; the client maps statuses back. Messages pass through unchanged: they were
//! written for people.

use converge_api::LedgerError;
use tonic::{Code, Status};

/// The status a ledger error is answered with.
pub fn to_status(err: &LedgerError) -> Status {
    let code = match err {
        LedgerError::InvalidArgument(_) => Code::InvalidArgument,
        LedgerError::ResourceExhausted(_) => Code::ResourceExhausted,
        LedgerError::AlreadyExists(_) => Code::AlreadyExists,
        LedgerError::FailedPrecondition(_) => Code::FailedPrecondition,
        LedgerError::OutOfRange(_) => Code::OutOfRange,
        LedgerError::Unavailable(_) => Code::Unavailable,
        LedgerError::Unauthenticated(_) => Code::Unauthenticated,
        LedgerError::PermissionDenied(_) => Code::PermissionDenied,
        LedgerError::Verification(_) | LedgerError::Internal(_) => Code::Internal,
        _ => Code::Unknown,
    };
    Status::new(code, err.message())
}

/// The ledger error a status stands for.
pub fn from_status(status: &Status) -> LedgerError {
    let message = status.message().to_string();
    match status.code() {
        Code::InvalidArgument => LedgerError::InvalidArgument(message),
        Code::ResourceExhausted => LedgerError::ResourceExhausted(message),
        Code::AlreadyExists => LedgerError::AlreadyExists(message),
        Code::FailedPrecondition => LedgerError::FailedPrecondition(message),
        Code::OutOfRange => LedgerError::OutOfRange(message),
        Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded | Code::Aborted => {
            LedgerError::Unavailable(if message.is_empty() {
                status.code().description().to_string()
            } else {
                message
            })
        }
        Code::Unauthenticated => LedgerError::Unauthenticated(message),
        Code::PermissionDenied => LedgerError::PermissionDenied(message),
        // A transport failure (connection reset, stream broken) surfaces as UNKNOWN with the
        // I/O error as its source: the node is unreachable, not broken.
        Code::Unknown if std::error::Error::source(status).is_some() => {
            LedgerError::Unavailable(format!("the connection to the ledger failed: {message}"))
        }
        _ => LedgerError::Internal(format!("{}: {message}", status.code().description())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        for err in [
            LedgerError::InvalidArgument("a".into()),
            LedgerError::ResourceExhausted("b".into()),
            LedgerError::AlreadyExists("c".into()),
            LedgerError::FailedPrecondition("d".into()),
            LedgerError::OutOfRange("e".into()),
            LedgerError::Unavailable("f".into()),
            LedgerError::Unauthenticated("g".into()),
            LedgerError::PermissionDenied("h".into()),
        ] {
            assert_eq!(from_status(&to_status(&err)), err);
        }
        assert_eq!(to_status(&LedgerError::Internal("x".into())).code(), Code::Internal);
    }
}
