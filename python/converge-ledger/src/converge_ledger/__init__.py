"""Converge Ledger from Python: append-only, verifiable contexts for agent engines.

    from converge_ledger import Client

    with Client("http://127.0.0.1:50051", verify=True) as ledger:
        entry = ledger.append("run-42", "facts", b"market size: 2.4B")
        latest = ledger.latest("run-42")
        for e in ledger.watch("run-42"):
            ...

``Client`` is synchronous, ``AsyncClient`` the same over asyncio. With ``verify=True`` every
entry's content hash and every proof is recomputed here, in pure Python (:mod:`hashing`), and
each context's tree head is pinned, so a ledger that rewrites or forks a history it showed is
caught (:class:`VerificationError`).
"""

from .aio import AsyncClient, AsyncWatch
from .client import Client, Watch
from .errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    LedgerError,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    VerificationError,
)
from .types import (
    AppendRequest,
    ConsistencyProof,
    ContextInfo,
    ContextPage,
    Entry,
    GetResult,
    InclusionProof,
    LoadResult,
    SnapshotResult,
    TreeHead,
)

__all__ = [
    "AlreadyExists",
    "AppendRequest",
    "AsyncClient",
    "AsyncWatch",
    "Client",
    "ConsistencyProof",
    "ContextInfo",
    "ContextPage",
    "DeadlineExceeded",
    "Entry",
    "FailedPrecondition",
    "GetResult",
    "InclusionProof",
    "Internal",
    "InvalidArgument",
    "LedgerError",
    "LoadResult",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "SnapshotResult",
    "TreeHead",
    "Unauthenticated",
    "Unavailable",
    "VerificationError",
    "Watch",
]
