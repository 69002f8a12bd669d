"""The asyncio client: the same operations, options and checks as :class:`Client`, awaited."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import grpc
import grpc.aio

from . import _wire
from . import verify as checks
from ._proto import context_pb2 as pb
from ._proto import context_pb2_grpc as rpc
from .client import ROUND_PAUSE
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


class AsyncClient:
    """:class:`Client` for asyncio: ``await client.append(...)``, ``async for e in
    client.watch(...)``; ``async with AsyncClient(...) as client``. Same arguments."""

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
        self._channels: list[grpc.aio.Channel | None] = [None] * len(self._settings.servers)
        self._pins: checks.Pins | None = checks.Pins() if verify else None

    def _channel(self, i: int) -> grpc.aio.Channel:
        channel = self._channels[i]
        if channel is None:
            server, s = self._settings.servers[i], self._settings
            if server.tls:
                channel = grpc.aio.secure_channel(server.target, s.credentials(), s.options())
            else:
                channel = grpc.aio.insecure_channel(server.target, s.options())
            self._channels[i] = channel
        return channel

    async def close(self) -> None:
        """Closes every connection."""
        channels, self._channels = self._channels, [None] * len(self._channels)
        for channel in channels:
            if channel is not None:
                await channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method: str, request: Any, *, integrity: bool = False) -> Any:
        count = len(self._settings.servers)
        last: grpc.RpcError | None = None
        for attempt in range(2 * count if count > 1 else 1):
            if attempt == count:
                await asyncio.sleep(ROUND_PAUSE)
            i = self._rotation.current()
            channel = self._channel(i)
            stub: Any = rpc.IntegrityServiceStub(channel) if integrity else rpc.ContextServiceStub(channel)
            try:
                return await getattr(stub, method)(
                    request, timeout=self._settings.timeout, metadata=self._settings.metadata()
                )
            except grpc.RpcError as e:
                if count > 1 and _wire.moves_on(e):
                    self._rotation.move_on(i)
                    last = e
                    continue
                raise from_rpc_error(e) from None
        assert last is not None
        raise from_rpc_error(last) from None

    async def append(
        self,
        context_id: str,
        key: str,
        payload: bytes | str,
        *,
        metadata: Mapping[str, str] | None = None,
        received_lamport_clock: int | None = None,
        append_id: str | None = None,
    ) -> Entry:
        """See :meth:`Client.append`."""
        if append_id is None and self._settings.retries:
            append_id = _wire.fresh_id()
        request = _wire.append_request(
            context_id, key, payload, metadata, received_lamport_clock, append_id
        )
        got = _wire.entry((await self._call("Append", request)).entry)
        if self._pins is not None:
            checks.appended(context_id, key, request.payload, dict(request.metadata), got)
        return got

    async def append_many(self, requests: Iterable[AppendRequest]) -> list[Entry | LedgerError]:
        """See :meth:`Client.append_many`."""
        wires = _wire.append_wires(requests, self._settings.retries)
        outcomes: list[Entry | LedgerError | None] = [None] * len(wires)
        done, count = 0, len(self._settings.servers)
        for attempt in range(2 * count if count > 1 else 1):
            i = self._rotation.current()
            stub = rpc.ContextServiceStub(self._channel(i))
            try:
                call = stub.AppendStream(iter(wires[done:]), metadata=self._settings.metadata())
                async for answer in call:
                    outcomes[done] = checks.streamed(wires[done], answer, self._pins is not None)
                    done += 1
                if done == len(wires):
                    break
                raise LedgerError(f"the stream ended after {done} of {len(wires)} answers")
            except grpc.RpcError as e:
                if count > 1 and _wire.moves_on(e):
                    self._rotation.move_on(i)
                    if attempt + 1 == count:
                        await asyncio.sleep(ROUND_PAUSE)
                    continue
                failed = from_rpc_error(e)
                for k in range(done, len(wires)):
                    outcomes[k] = failed
                done = len(wires)
                break
        return [o if o is not None else Unavailable("no server answered") for o in outcomes]


    async def get(
        self,
        context_id: str,
        *,
        key: str | None = None,
        after: int = 0,
        limit: int = 0,
        before: int = 0,
        newest_first: bool = False,
    ) -> GetResult:
        """See :meth:`Client.get`."""
        request = _wire.get_request(context_id, key, after, limit, before, newest_first)
        got = _wire.get_result(await self._call("Get", request))
        if self._pins is not None:
            checks.entries(context_id, after, before, newest_first, got.entries)
            if not key and after == 0:
                head = checks.prefix_head(newest_first, got.entries)
                if head is not None:
                    await self._observe(context_id, *head)
        return got

    async def latest(self, context_id: str, key: str | None = None) -> Entry | None:
        """See :meth:`Client.latest`."""
        got = (await self.get(context_id, key=key, limit=1, newest_first=True)).entries
        return got[0] if got else None

    async def list_contexts(
        self, prefix: str = "", *, page_token: str = "", limit: int = 0
    ) -> ContextPage:
        """See :meth:`Client.list_contexts`."""
        page = _wire.context_page(
            await self._call("ListContexts", _wire.list_request(prefix, page_token, limit))
        )
        if self._pins is not None:
            checks.listing(prefix, page_token, limit, page)
            for info in page.contexts:
                if self._pins.get(info.context_id) is not None:
                    await self._observe(info.context_id, info.tree_size, info.root_hash)
        return page

    async def contexts(self, prefix: str = "") -> AsyncIterator[ContextInfo]:
        """See :meth:`Client.contexts`."""
        token = ""
        while True:
            page = await self.list_contexts(prefix, page_token=token)
            for info in page.contexts:
                yield info
            if not page.next_page_token:
                return
            token = page.next_page_token

    async def snapshot(self, context_id: str) -> SnapshotResult:
        """See :meth:`Client.snapshot`."""
        got = _wire.snapshot_result(
            await self._call("Snapshot", pb.SnapshotRequest(context_id=context_id))
        )
        if self._pins is not None:
            checks.snapshot(context_id, got)
            await self._observe(context_id, got.entry_count, got.merkle_root)
        return got

    async def load(
        self,
        context_id: str,
        snapshot: bytes,
        *,
        fail_if_exists: bool = False,
        load_id: str | None = None,
    ) -> LoadResult:
        """See :meth:`Client.load`."""
        if load_id is None and self._settings.retries:
            load_id = _wire.fresh_id()
        request = pb.LoadRequest(
            context_id=context_id,
            snapshot=snapshot,
            fail_if_exists=fail_if_exists,
            load_id=load_id or "",
        )
        return _wire.load_result(await self._call("Load", request))

    def watch(
        self, context_id: str, *, key: str | None = None, from_sequence: int = 0
    ) -> AsyncWatch:
        """See :meth:`Client.watch`: ``async for entry in client.watch(...)``."""
        return AsyncWatch(self, context_id, key, from_sequence)

    async def tree_head(self, context_id: str) -> TreeHead:
        """See :meth:`Client.tree_head`."""
        head = _wire.tree_head(
            await self._call("GetTreeHead", pb.TreeHeadRequest(context_id=context_id), integrity=True)
        )
        if self._pins is not None:
            await self._observe(context_id, head.tree_size, head.root_hash)
        return head

    async def prove_inclusion(
        self, context_id: str, sequence: int, tree_size: int = 0
    ) -> InclusionProof:
        """See :meth:`Client.prove_inclusion`."""
        request = pb.InclusionRequest(context_id=context_id, sequence=sequence, tree_size=tree_size)
        proof = _wire.inclusion(await self._call("ProveInclusion", request, integrity=True))
        if self._pins is not None:
            got = (await self.get(context_id, after=sequence - 1, limit=1)).entries
            if not got:
                raise VerificationError(f"entry {sequence} cannot be read")
            checks.inclusion_proof(sequence, got[0], proof)
            await self._observe(context_id, proof.tree_size, proof.root_hash)
        return proof

    async def prove_consistency(
        self, context_id: str, from_size: int, to_size: int = 0
    ) -> ConsistencyProof:
        """See :meth:`Client.prove_consistency`."""
        proof = await self._consistency(context_id, from_size, to_size)
        if self._pins is not None:
            checks.consistency_proof(proof)
            await self._observe(context_id, proof.from_size, proof.from_root)
            await self._observe(context_id, proof.to_size, proof.to_root)
        return proof

    async def _consistency(self, context_id: str, from_size: int, to_size: int) -> ConsistencyProof:
        request = pb.ConsistencyRequest(context_id=context_id, from_size=from_size, to_size=to_size)
        return _wire.consistency(await self._call("ProveConsistency", request, integrity=True))

    async def _observe(self, context_id: str, size: int, root: bytes) -> None:
        assert self._pins is not None
        needed = self._pins.needs(context_id, size, root)
        if needed is not None:
            (older, _), (newer, _) = needed
            proof = await self._consistency(context_id, older, newer)
            self._pins.settle(context_id, (size, root), needed, proof)


class AsyncWatch:
    """:class:`Watch` for asyncio: ``async for entry in watch``; ``await watch.close()``."""

    def __init__(
        self, client: AsyncClient, context_id: str, key: str | None, from_sequence: int
    ) -> None:
        self._client, self._context_id, self._key = client, context_id, key
        self.last = from_sequence
        self._call: Any = None
        self._server = 0
        self._closed = False

    def __aiter__(self) -> AsyncWatch:
        return self

    async def __aenter__(self) -> AsyncWatch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Ends the watch."""
        self._closed = True
        if self._call is not None:
            self._call.cancel()

    async def __anext__(self) -> Entry:
        pause = 0.05
        client = self._client
        while not self._closed:
            if self._call is None:
                self._server = client._rotation.current()
                stub = rpc.ContextServiceStub(client._channel(self._server))
                request = pb.WatchRequest(
                    context_id=self._context_id, key=self._key or "", from_sequence=self.last
                )
                self._call = stub.Watch(request, metadata=client._settings.metadata())
            try:
                event = await self._call.read()
            except grpc.RpcError as e:
                self._call = None
                if self._closed or e.code() == grpc.StatusCode.CANCELLED:
                    break
                if not _wire.moves_on(e):
                    raise from_rpc_error(e) from None
                client._rotation.move_on(self._server)
                await asyncio.sleep(pause)
                pause = min(pause * 2, client._watch_retry_max)
                continue
            except asyncio.CancelledError:
                await self.close()
                raise
            if event is grpc.aio.EOF:
                self._call = None
                continue
            got = _wire.entry(event.entry)
            checks.watched(self._context_id, self._key, self.last, got, client._pins is not None)
            self.last = got.sequence
            return got
        raise StopAsyncIteration
