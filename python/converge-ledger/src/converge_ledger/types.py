"""The values the ledger's operations take and return (CONTRACT §1–§2), as plain dataclasses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from . import hashing


@dataclass(frozen=True)
class Entry:
    """One immutable entry of a context."""

    id: str
    key: str
    payload: bytes
    sequence: int
    appended_at_ns: int
    metadata: Mapping[str, str]
    lamport_clock: int
    content_hash: bytes

    def computed_hash(self, context_id: str) -> bytes:
        """The content hash recomputed from the fields, for ``context_id`` (CONTRACT §3)."""
        return hashing.content_hash(
            context_id,
            self.key,
            self.payload,
            self.sequence,
            self.appended_at_ns,
            self.lamport_clock,
            self.metadata,
        )

    def text(self) -> str:
        """The payload as UTF-8 text (raises ``UnicodeDecodeError`` if it is not)."""
        return self.payload.decode()


@dataclass(frozen=True)
class AppendRequest:
    """One append, for :meth:`Client.append_many`."""

    context_id: str
    key: str
    payload: bytes | str
    metadata: Mapping[str, str] = field(default_factory=dict)
    received_lamport_clock: int | None = None
    append_id: str | None = None


@dataclass(frozen=True)
class GetResult:
    """Entries of a Get, and the context's latest sequence whatever the filter."""

    entries: list[Entry]
    latest_sequence: int


@dataclass(frozen=True)
class TreeHead:
    """A context's tree head: size (its latest sequence), root and latest Lamport time."""

    tree_size: int
    root_hash: bytes
    lamport_clock: int


@dataclass(frozen=True)
class ContextInfo:
    """A context as ListContexts shows it."""

    context_id: str
    tree_size: int
    root_hash: bytes
    lamport_clock: int
    latest_appended_at_ns: int


@dataclass(frozen=True)
class ContextPage:
    """One page of contexts; ``next_page_token`` is empty on the last page."""

    contexts: list[ContextInfo]
    next_page_token: str


@dataclass(frozen=True)
class SnapshotResult:
    """A context's snapshot blob and what it holds."""

    snapshot: bytes
    sequence: int
    created_at_ns: int
    entry_count: int
    version: int
    merkle_root: bytes


@dataclass(frozen=True)
class LoadResult:
    """What a Load restored."""

    entries_restored: int
    latest_sequence: int


@dataclass(frozen=True)
class InclusionProof:
    """An RFC 6962 inclusion proof of one entry (``leaf_index`` = sequence − 1)."""

    leaf_index: int
    tree_size: int
    hashes: list[bytes]
    root_hash: bytes


@dataclass(frozen=True)
class ConsistencyProof:
    """An RFC 6962 consistency proof between two sizes of one context's tree."""

    from_size: int
    to_size: int
    hashes: list[bytes]
    from_root: bytes
    to_root: bytes
