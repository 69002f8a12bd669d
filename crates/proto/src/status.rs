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
        // A transport failure (connection reset, stream broken, HTTP/2 spoken to a TLS port)
        // surfaces as UNKNOWN or INTERNAL made on this side, with the transport error as its
        // source (statuses from the server have none): unreachable, not broken.
        Code::Unknown | Code::Internal if std::error::Error::source(status).is_some() => {
            let cause = std::error::Error::source(status).map(describe).unwrap_or_default();
            let text = if cause.contains(&message) { cause } else { format!("{message}: {cause}") };
            LedgerError::Unavailable(format!("the connection to the ledger failed: {text}"))
        }
        _ => LedgerError::Internal(format!("{}: {message}", status.code().description())),
    }
}

/// An error with its chain of causes, `outer: inner: root`, skipping a cause whose message
/// its parent already shows. Transport errors say little at the top ("transport error") and
/// the actionable part (`invalid peer certificate: UnknownIssuer`) further down.
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        let part = inner.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = inner.source();
    }
    text
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

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn describe_shows_each_new_cause_once() {
        let root = Layer("invalid peer certificate: UnknownIssuer", None);
        let repeated = Layer("invalid peer certificate: UnknownIssuer", Some(Box::new(root)));
        let top = Layer("transport error", Some(Box::new(repeated)));
        assert_eq!(describe(&top), "transport error: invalid peer certificate: UnknownIssuer");
    }
}
