"""Errors, one class per gRPC status the ledger answers with (CONTRACT §2), and one for a
ledger caught lying."""

from __future__ import annotations

import grpc


class LedgerError(Exception):
    """Any error of an operation; ``code`` is the gRPC status, ``message`` the ledger's text."""

    code: grpc.StatusCode | None = None

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidArgument(LedgerError):
    """The request broke a rule; nothing was written."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(LedgerError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(LedgerError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(LedgerError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class OutOfRange(LedgerError):
    code = grpc.StatusCode.OUT_OF_RANGE


class ResourceExhausted(LedgerError):
    """Too large, or the ledger is full for now: retry later or send less."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(LedgerError):
    """Not done; safe to retry (an append with its ``append_id``)."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(LedgerError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(LedgerError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(LedgerError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Internal(LedgerError):
    code = grpc.StatusCode.INTERNAL


class VerificationError(LedgerError):
    """The ledger sent something that does not check out: a wrong hash, a proof that fails, or
    a history that is not consistent with one it showed before."""


_BY_CODE: dict[grpc.StatusCode, type[LedgerError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        OutOfRange,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Unauthenticated,
        PermissionDenied,
        Internal,
    )
    if cls.code is not None
}


def from_code(code: grpc.StatusCode, message: str) -> LedgerError:
    """The error for a gRPC status."""
    return _BY_CODE.get(code, LedgerError)(message, code)


def from_rpc_error(e: grpc.RpcError) -> LedgerError:
    """The error for a failed call."""
    code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
    details = e.details() if hasattr(e, "details") else str(e)
    return from_code(code, details or str(code))


def from_wire_code(code: int, message: str) -> LedgerError:
    """The error an AppendStream answer carries (a numeric gRPC status code)."""
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return from_code(status, message)
    return LedgerError(message)
