"""Messages on the wire ⇄ the package's types, connection settings, and the choice of server:
everything the sync and async clients share that does no I/O."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import grpc

from ._proto import context_pb2 as pb
from .errors import VerificationError
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

#: Largest message sent or accepted: a full 256 MiB payload and its envelope.
MESSAGE_BYTES_MAX = 256 * 1024 * 1024 + 256 * 1024

#: A page of contexts asks for this many unless told otherwise (CONTRACT §2).
LIST_LIMIT_DEFAULT = 1000
#: The ledger takes a larger page size as this.
LIST_LIMIT_MAX = 10_000


def _read(source: str | bytes | os.PathLike[str] | None) -> bytes | None:
    """PEM given as bytes, or as a path to read."""
    if source is None or isinstance(source, bytes):
        return source
    with open(source, "rb") as f:
        return f.read()


@dataclass(frozen=True)
class Server:
    """One address: the gRPC target and whether it speaks TLS."""

    target: str
    tls: bool


def parse_servers(addresses: str | Sequence[str]) -> list[Server]:
    """``http://host:port`` (plain), ``https://host:port`` (TLS) or ``host:port``; several as a
    list or separated by commas (the nodes of one cluster)."""
    if isinstance(addresses, str):
        addresses = addresses.split(",")
    servers = []
    for raw in addresses:
        address = raw.strip()
        if not address:
            continue
        tls = address.startswith("https://")
        for scheme in ("http://", "https://"):
            if address.startswith(scheme):
                address = address[len(scheme) :]
        servers.append(Server(address.rstrip("/"), tls))
    if not servers:
        raise ValueError("no server address given")
    return servers


@dataclass(frozen=True)
class Settings:
    """How a client connects: its servers, TLS material, token and verifying mode."""

    servers: list[Server]
    token: str | None
    ca: bytes | None
    cert: bytes | None
    key: bytes | None
    server_name: str | None
    verify: bool
    timeout: float | None

    @classmethod
    def of(
        cls,
        addresses: str | Sequence[str],
        *,
        token: str | None,
        ca: str | bytes | os.PathLike[str] | None,
        cert: str | bytes | os.PathLike[str] | None,
        key: str | bytes | os.PathLike[str] | None,
        server_name: str | None,
        verify: bool,
        timeout: float | None,
    ) -> Settings:
        servers = parse_servers(addresses)
        ca_pem = _read(ca)
        if ca_pem is not None:
            servers = [Server(s.target, True) for s in servers]
        if (cert is None) != (key is None):
            raise ValueError("a client certificate needs both cert and key")
        return cls(
            servers, token, ca_pem, _read(cert), _read(key), server_name, verify, timeout
        )

    def options(self) -> list[tuple[str, object]]:
        opts: list[tuple[str, object]] = [
            ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
            ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
            # Reconnect soon after a node comes back (a watch resumes, a call moves on).
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
        if self.server_name:
            opts.append(("grpc.ssl_target_name_override", self.server_name))
        return opts

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    @property
    def retries(self) -> bool:
        """Whether a call moves on to another server (and appends carry an ``append_id``)."""
        return len(self.servers) > 1


class Rotation:
    """Which server calls go to: the current one, until it is unavailable."""

    def __init__(self, count: int) -> None:
        self._count, self._current, self._lock = count, 0, threading.Lock()

    def current(self) -> int:
        with self._lock:
            return self._current

    def move_on(self, failed: int) -> None:
        with self._lock:
            if self._current == failed:
                self._current = (failed + 1) % self._count


def moves_on(e: grpc.RpcError) -> bool:
    """A failure after which the call is certainly not done here: try another server."""
    return bool(e.code() == grpc.StatusCode.UNAVAILABLE)


def fresh_id() -> str:
    """A random ``append_id`` / ``load_id`` for retries that must not write twice."""
    return f"py-{uuid.uuid4().hex}"


def append_request(
    context_id: str,
    key: str,
    payload: bytes | str,
    metadata: Mapping[str, str] | None,
    received_lamport_clock: int | None,
    append_id: str | None,
) -> pb.AppendRequest:
    request = pb.AppendRequest(
        context_id=context_id,
        key=key,
        payload=payload.encode() if isinstance(payload, str) else bytes(payload),
        metadata=dict(metadata or {}),
        append_id=append_id or "",
    )
    if received_lamport_clock is not None:
        request.received_lamport_clock = received_lamport_clock
    return request


def from_append(request: AppendRequest) -> pb.AppendRequest:
    return append_request(
        request.context_id,
        request.key,
        request.payload,
        request.metadata,
        request.received_lamport_clock,
        request.append_id,
    )


def append_wires(requests: Iterable[AppendRequest], retries: bool) -> list[pb.AppendRequest]:
    """The wire requests of an ``append_many``, each with an ``append_id`` when calls move on
    between servers (so a resent one writes once)."""
    wires = []
    for r in requests:
        wire = from_append(r)
        if not wire.append_id and retries:
            wire.append_id = fresh_id()
        wires.append(wire)
    return wires


def get_request(
    context_id: str, key: str | None, after: int, limit: int, before: int, newest_first: bool
) -> pb.GetRequest:
    return pb.GetRequest(
        context_id=context_id,
        key=key or "",
        after_sequence=after,
        limit=limit,
        before_sequence=before,
        newest_first=newest_first,
    )


def _hash(b: bytes, what: str) -> bytes:
    if len(b) != 32:
        raise VerificationError(f"the ledger sent {what} of {len(b)} bytes, not 32")
    return bytes(b)


def entry(e: pb.Entry) -> Entry:
    return Entry(
        id=e.id,
        key=e.key,
        payload=bytes(e.payload),
        sequence=e.sequence,
        appended_at_ns=e.appended_at_ns,
        metadata=dict(e.metadata),
        lamport_clock=e.lamport_clock,
        content_hash=_hash(e.content_hash, "a content hash"),
    )


def get_result(r: pb.GetResponse) -> GetResult:
    return GetResult([entry(e) for e in r.entries], r.latest_sequence)


def tree_head(h: pb.TreeHead) -> TreeHead:
    return TreeHead(h.tree_size, _hash(h.root_hash, "a root"), h.lamport_clock)


def context_page(r: pb.ListContextsResponse) -> ContextPage:
    return ContextPage(
        [
            ContextInfo(
                c.context_id,
                c.tree_size,
                _hash(c.root_hash, "a context's root"),
                c.lamport_clock,
                c.latest_appended_at_ns,
            )
            for c in r.contexts
        ],
        r.next_page_token,
    )


def snapshot_result(r: pb.SnapshotResponse) -> SnapshotResult:
    m = r.metadata
    return SnapshotResult(
        bytes(r.snapshot),
        r.sequence,
        m.created_at_ns,
        m.entry_count,
        m.version,
        _hash(m.merkle_root, "a snapshot root"),
    )


def load_result(r: pb.LoadResponse) -> LoadResult:
    return LoadResult(r.entries_restored, r.latest_sequence)


def inclusion(p: pb.InclusionProof) -> InclusionProof:
    return InclusionProof(
        p.leaf_index,
        p.tree_size,
        [_hash(h, "a proof hash") for h in p.hashes],
        _hash(p.root_hash, "a root"),
    )


def consistency(p: pb.ConsistencyProof) -> ConsistencyProof:
    return ConsistencyProof(
        p.from_size,
        p.to_size,
        [_hash(h, "a proof hash") for h in p.hashes],
        _hash(p.from_root, "a root"),
        _hash(p.to_root, "a root"),
    )


def list_request(prefix: str, page_token: str, limit: int) -> pb.ListContextsRequest:
    return pb.ListContextsRequest(prefix=prefix, page_token=page_token, limit=limit)


def page_size(limit: int) -> int:
    """The page size the ledger takes ``limit`` as."""
    return LIST_LIMIT_DEFAULT if limit == 0 else min(limit, LIST_LIMIT_MAX)
