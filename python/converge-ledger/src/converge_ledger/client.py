"""The synchronous client: the ledger's operations over gRPC, on one server or several nodes of
a cluster, optionally verifying everything it is sent (see :mod:`converge_ledger.verify`)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import grpc

from . import _wire
from . import verify as checks
from ._proto import context_pb2 as pb
from ._proto import context_pb2_grpc as rpc
from .errors import LedgerError, Unavailable, VerificationError, from_rpc_error
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

#: Pause before going round the servers a second time.
ROUND_PAUSE = 0.1


class Client:
    """A connection to a Converge Ledger node, or to several nodes of one cluster.

    ``Client("http://127.0.0.1:50051")``; ``https://`` (or ``ca=``) for TLS; several addresses as
    a list or comma-separated: a call that finds a node unavailable moves on to the next, and
    every append then carries an ``append_id`` so that a retry never writes twice.

    ``token``: a bearer token sent with every call. ``ca``, ``cert``, ``key``: PEM bytes or file
    paths (the CA that signed the server's certificate; a client certificate for servers that
    ask). ``verify``: recompute every entry's hash and check every proof and tree head the
    ledger sends, pinning each context's head (a lie raises :class:`VerificationError`).
    ``timeout``: seconds per call (watches excepted). Usable as a context manager.
    """

    def __init__(
        self,
        addresses: str | Sequence[str] = "http://127.0.0.1:50051",
        *,
        token: str | None = None,
        ca: str | bytes | os.PathLike[str] | None = None,
        cert: str | bytes | os.PathLike[str] | None = None,
        key: str | bytes | os.PathLike[str] | None = None,
        server_name: str | None = None,
        verify: bool = False,
        timeout: float | None = 30.0,
        watch_retry_max: float = 5.0,
    ) -> None:
        self._settings = _wire.Settings.of(
            addresses,
            token=token,
            ca=ca,
            cert=cert,
            key=key,
            server_name=server_name,
            verify=verify,
            timeout=timeout,
        )
        self._watch_retry_max = watch_retry_max
        self._rotation = _wire.Rotation(len(self._settings.servers))
        self._channels: list[grpc.Channel | None] = [None] * len(self._settings.servers)
        self._lock = threading.Lock()
        self._pins: checks.Pins | None = checks.Pins() if verify else None

    # -- connections --------------------------------------------------------------------

    def _channel(self, i: int) -> grpc.Channel:
        with self._lock:
            channel = self._channels[i]
            if channel is None:
                server, s = self._settings.servers[i], self._settings
                if server.tls:
                    channel = grpc.secure_channel(server.target, s.credentials(), s.options())
                else:
                    channel = grpc.insecure_channel(server.target, s.options())
                self._channels[i] = channel
            return channel

    def close(self) -> None:
        """Closes every connection."""
        with self._lock:
            for channel in self._channels:
                if channel is not None:
                    channel.close()
            self._channels = [None] * len(self._channels)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _invoke(self, i: int, integrity: bool, method: str, request: Any) -> Any:
        channel = self._channel(i)
        stub: Any = rpc.IntegrityServiceStub(channel) if integrity else rpc.ContextServiceStub(channel)
        return getattr(stub, method)(
            request, timeout=self._settings.timeout, metadata=self._settings.metadata()
        )

    def _call(self, method: str, request: Any, *, integrity: bool = False) -> Any:
        """One unary call on the current server, moving on while servers are unavailable."""
        count = len(self._settings.servers)
        last: grpc.RpcError | None = None
        for attempt in range(2 * count if count > 1 else 1):
            if attempt == count:
                time.sleep(ROUND_PAUSE)
            i = self._rotation.current()
            try:
                return self._invoke(i, integrity, method, request)
            except grpc.RpcError as e:
                if count > 1 and _wire.moves_on(e):
                    self._rotation.move_on(i)
                    last = e
                    continue
                raise from_rpc_error(e) from None
        assert last is not None
        raise from_rpc_error(last) from None

    # -- the operations -----------------------------------------------------------------

    def append(
        self,
        context_id: str,
        key: str,
        payload: bytes | str,
        *,
        metadata: Mapping[str, str] | None = None,
        received_lamport_clock: int | None = None,
        append_id: str | None = None,
    ) -> Entry:
        """Appends one entry; returns it once it is durable (in a cluster: committed)."""
        if append_id is None and self._settings.retries:
            append_id = _wire.fresh_id()
        request = _wire.append_request(
            context_id, key, payload, metadata, received_lamport_clock, append_id
        )
        got = _wire.entry(self._call("Append", request).entry)
        if self._pins is not None:
            checks.appended(context_id, key, request.payload, dict(request.metadata), got)
        return got

    def append_many(self, requests: Iterable[AppendRequest]) -> list[Entry | LedgerError]:
        """Appends many on one ``AppendStream``, all in flight at once; one outcome per request,
        in order (an entry, or the error of that append alone)."""
        wires = _wire.append_wires(requests, self._settings.retries)
        outcomes: list[Entry | LedgerError | None] = [None] * len(wires)
        done, count = 0, len(self._settings.servers)
        for attempt in range(2 * count if count > 1 else 1):
            i = self._rotation.current()
            try:
                answers = self._invoke_stream(i, iter(wires[done:]))
                for answer in answers:
                    outcomes[done] = checks.streamed(wires[done], answer, self._pins is not None)
                    done += 1
                if done == len(wires):
                    break
                raise LedgerError(f"the stream ended after {done} of {len(wires)} answers")
            except grpc.RpcError as e:
                if count > 1 and _wire.moves_on(e):
                    # The rest go again, elsewhere, with their append ids: none writes twice.
                    self._rotation.move_on(i)
                    if attempt + 1 == count:
                        time.sleep(ROUND_PAUSE)
                    continue
                failed = from_rpc_error(e)
                for k in range(done, len(wires)):
                    outcomes[k] = failed
                done = len(wires)
                break
        return [o if o is not None else Unavailable("no server answered") for o in outcomes]

    def _invoke_stream(self, i: int, requests: Iterator[pb.AppendRequest]) -> Any:
        stub = rpc.ContextServiceStub(self._channel(i))
        return stub.AppendStream(requests, metadata=self._settings.metadata())


    def get(
        self,
        context_id: str,
        *,
        key: str | None = None,
        after: int = 0,
        limit: int = 0,
        before: int = 0,
        newest_first: bool = False,
    ) -> GetResult:
        """Entries after ``after`` (and below ``before`` when > 0), of ``key`` when given, at
        most ``limit`` (0: all), oldest first or newest first."""
        request = _wire.get_request(context_id, key, after, limit, before, newest_first)
        got = _wire.get_result(self._call("Get", request))
        if self._pins is not None:
            checks.entries(context_id, after, before, newest_first, got.entries)
            if not key and after == 0:
                head = checks.prefix_head(newest_first, got.entries)
                if head is not None:
                    self._observe(context_id, *head)
        return got

    def latest(self, context_id: str, key: str | None = None) -> Entry | None:
        """The latest entry of the context (of ``key`` when given), or ``None``."""
        got = self.get(context_id, key=key, limit=1, newest_first=True).entries
        return got[0] if got else None

    def list_contexts(self, prefix: str = "", *, page_token: str = "", limit: int = 0) -> ContextPage:
        """One page of the contexts that exist, in byte order of their ids."""
        page = _wire.context_page(
            self._call("ListContexts", _wire.list_request(prefix, page_token, limit))
        )
        if self._pins is not None:
            checks.listing(prefix, page_token, limit, page)
            for info in page.contexts:
                if self._pins.get(info.context_id) is not None:
                    self._observe(info.context_id, info.tree_size, info.root_hash)
        return page

    def contexts(self, prefix: str = "") -> Iterator[ContextInfo]:
        """Every context whose id begins with ``prefix``, a page at a time."""
        token = ""
        while True:
            page = self.list_contexts(prefix, page_token=token)
            yield from page.contexts
            if not page.next_page_token:
                return
            token = page.next_page_token

    def snapshot(self, context_id: str) -> SnapshotResult:
        """The whole context as one verifiable blob."""
        got = _wire.snapshot_result(self._call("Snapshot", pb.SnapshotRequest(context_id=context_id)))
        if self._pins is not None:
            checks.snapshot(context_id, got)
            self._observe(context_id, got.entry_count, got.merkle_root)
        return got

    def load(
        self,
        context_id: str,
        snapshot: bytes,
        *,
        fail_if_exists: bool = False,
        load_id: str | None = None,
    ) -> LoadResult:
        """Restores a snapshot blob into ``context_id`` (verified by the ledger first)."""
        if load_id is None and self._settings.retries:
            load_id = _wire.fresh_id()
        request = pb.LoadRequest(
            context_id=context_id,
            snapshot=snapshot,
            fail_if_exists=fail_if_exists,
            load_id=load_id or "",
        )
        return _wire.load_result(self._call("Load", request))

    def watch(
        self, context_id: str, *, key: str | None = None, from_sequence: int = 0
    ) -> Watch:
        """Every entry after ``from_sequence``, then each new one as it is appended; after a
        dropped connection it resumes from the last entry it gave, without gap or duplicate.
        Iterate it; ``close()`` (or leaving a ``with`` block) ends it."""
        return Watch(self, context_id, key, from_sequence)

    def tree_head(self, context_id: str) -> TreeHead:
        """The context's tree head (size, root, latest Lamport time)."""
        head = _wire.tree_head(
            self._call("GetTreeHead", pb.TreeHeadRequest(context_id=context_id), integrity=True)
        )
        if self._pins is not None:
            self._observe(context_id, head.tree_size, head.root_hash)
        return head

    def prove_inclusion(self, context_id: str, sequence: int, tree_size: int = 0) -> InclusionProof:
        """An inclusion proof of entry ``sequence`` in the tree of ``tree_size`` (0: current)."""
        request = pb.InclusionRequest(context_id=context_id, sequence=sequence, tree_size=tree_size)
        proof = _wire.inclusion(self._call("ProveInclusion", request, integrity=True))
        if self._pins is not None:
            got = self.get(context_id, after=sequence - 1, limit=1).entries
            if not got:
                raise VerificationError(f"entry {sequence} cannot be read")
            checks.inclusion_proof(sequence, got[0], proof)
            self._observe(context_id, proof.tree_size, proof.root_hash)
        return proof

    def prove_consistency(self, context_id: str, from_size: int, to_size: int = 0) -> ConsistencyProof:
        """A consistency proof from ``from_size`` to ``to_size`` (0: current)."""
        proof = self._consistency(context_id, from_size, to_size)
        if self._pins is not None:
            checks.consistency_proof(proof)
            self._observe(context_id, proof.from_size, proof.from_root)
            self._observe(context_id, proof.to_size, proof.to_root)
        return proof

    def _consistency(self, context_id: str, from_size: int, to_size: int) -> ConsistencyProof:
        request = pb.ConsistencyRequest(context_id=context_id, from_size=from_size, to_size=to_size)
        return _wire.consistency(self._call("ProveConsistency", request, integrity=True))

    def _observe(self, context_id: str, size: int, root: bytes) -> None:
        """Checks a head the ledger showed against the pinned one (see :class:`checks.Pins`)."""
        assert self._pins is not None
        needed = self._pins.needs(context_id, size, root)
        if needed is not None:
            (older, _), (newer, _) = needed
            proof = self._consistency(context_id, older, newer)
            self._pins.settle(context_id, (size, root), needed, proof)


class Watch:
    """A watch of one context: an iterator of entries that resumes after a dropped connection
    from the last entry it gave (CONTRACT §2 Watch: no gap, no duplicate)."""

    def __init__(self, client: Client, context_id: str, key: str | None, from_sequence: int) -> None:
        self._client, self._context_id, self._key = client, context_id, key
        self.last = from_sequence
        self._call: Any = None
        self._closed = False

    def __iter__(self) -> Iterator[Entry]:
        return self

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Ends the watch (a blocked ``next`` raises ``StopIteration``)."""
        self._closed = True
        if self._call is not None:
            self._call.cancel()

    def _open(self) -> Any:
        client = self._client
        i = client._rotation.current()
        stub = rpc.ContextServiceStub(client._channel(i))
        request = pb.WatchRequest(
            context_id=self._context_id, key=self._key or "", from_sequence=self.last
        )
        self._server = i
        return stub.Watch(request, metadata=client._settings.metadata())

    def __next__(self) -> Entry:
        pause = 0.05
        while not self._closed:
            if self._call is None:
                self._call = self._open()
            try:
                event = next(self._call)
            except StopIteration:
                self._call = None
                continue
            except grpc.RpcError as e:
                self._call = None
                if self._closed or e.code() == grpc.StatusCode.CANCELLED:
                    break
                if not _wire.moves_on(e):
                    raise from_rpc_error(e) from None
                # Dropped: resume after the last entry given, here or on the next server.
                self._client._rotation.move_on(self._server)
                time.sleep(pause)
                pause = min(pause * 2, self._client._watch_retry_max)
                continue
            got = _wire.entry(event.entry)
            checks.watched(self._context_id, self._key, self.last, got, self._client._pins is not None)
            self.last = got.sequence
            return got
        raise StopIteration
