//! The one error type of the ledger's API: a kind (which maps one to one onto a gRPC status,
//! CONTRACT §2 "errors") and a message that says what to change.

/// Why an operation failed. Each variant is one gRPC status; the message is for people.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// Bad context id, key, metadata, snapshot or proof coordinates (`INVALID_ARGUMENT`).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A payload over the limit, or a response too large to send (`RESOURCE_EXHAUSTED`).
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// Load into a non-empty context with `fail_if_exists`, or an append id reused for a
    /// different entry (`ALREADY_EXISTS`).
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// A snapshot that diverges from the context's history (`FAILED_PRECONDITION`).
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// A proof beyond the tree (`OUT_OF_RANGE`).
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// Storage unavailable or the ledger shutting down (`UNAVAILABLE`): retry elsewhere or later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// No or bad credentials (`UNAUTHENTICATED`).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The caller's role does not allow this (`PERMISSION_DENIED`).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// What the ledger sent does not verify against its own hashes or proofs (client side).
    #[error("verification failed: {0}")]
    Verification(String),
    /// A bug or an unexpected failure (`INTERNAL`).
    #[error("internal error: {0}")]
    Internal(String),
}

impl LedgerError {
    /// The message without the kind prefix.
    pub fn message(&self) -> &str {
        match self {
            Self::InvalidArgument(m)
            | Self::ResourceExhausted(m)
            | Self::AlreadyExists(m)
            | Self::FailedPrecondition(m)
            | Self::OutOfRange(m)
            | Self::Unavailable(m)
            | Self::Unauthenticated(m)
            | Self::PermissionDenied(m)
            | Self::Verification(m)
            | Self::Internal(m) => m,
        }
    }
}
