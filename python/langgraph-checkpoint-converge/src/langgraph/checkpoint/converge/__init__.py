"""LangGraph checkpointers on Converge Ledger: ``ConvergeSaver`` (sync) and
``AsyncConvergeSaver`` (asyncio).

    from langgraph.checkpoint.converge import ConvergeSaver

    with ConvergeSaver.from_server("http://127.0.0.1:50051") as saver:
        graph = builder.compile(checkpointer=saver)

Every thread is one ledger context (``langgraph/thread/<thread_id>``): each checkpoint is
appended, after the channel values it changed, as the entry that commits it; nothing is ever
rewritten, so a thread's history is the ledger's append-only, hash-chained record, and any
observer can ``watch`` it live or check it with the ledger's proofs. ``delete_thread`` appends a
tombstone that reads start after; the bytes stay in the ledger (this is not erasure). How the
entries are laid out: :mod:`langgraph.checkpoint.converge._core`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from converge_ledger import AsyncClient, Client
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from ._core import DEFAULT_PREFIX, Core, adrive, adrive_items, drive, drive_items

__all__ = ["AsyncConvergeSaver", "ConvergeSaver", "DEFAULT_PREFIX"]


def _next_version(current: str | int | None) -> str:
    """Versions as zero-padded strings, so they compare in order as text too."""
    if current is None:
        n = 0
    elif isinstance(current, int):
        n = current
    else:
        n = int(str(current).split(".")[0])
    return f"{n + 1:032}"


class ConvergeSaver(BaseCheckpointSaver[str]):
    """A checkpointer over a :class:`converge_ledger.Client`.

    Build it with :meth:`from_server` (a context manager that closes the connection), or from a
    client you own: ``ConvergeSaver(Client(...))``. ``prefix`` names the contexts of threads.
    The async methods run the sync ones on a worker thread; for an event loop prefer
    :class:`AsyncConvergeSaver`.
    """

    def __init__(
        self,
        client: Client,
        *,
        prefix: str = DEFAULT_PREFIX,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde)
        self.client = client
        self._core = Core(self.serde, prefix)

    @classmethod
    @contextmanager
    def from_server(
        cls,
        address: str | Sequence[str] = "http://127.0.0.1:50051",
        *,
        token: str | None = None,
        ca: str | bytes | os.PathLike[str] | None = None,
        verify: bool = False,
        prefix: str = DEFAULT_PREFIX,
        **client_options: Any,
    ) -> Iterator[ConvergeSaver]:
        """A saver on a new connection to ``address`` (one node, or several of a cluster)."""
        with Client(address, token=token, ca=ca, verify=verify, **client_options) as client:
            yield cls(client, prefix=prefix)

    def __enter__(self) -> ConvergeSaver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def context_id(self, thread_id: str) -> str:
        """The ledger context that holds ``thread_id`` (to watch it, or check its proofs)."""
        return self._core.context(str(thread_id))

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return drive(self._core.get_tuple(config), self.client)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        yield from drive_items(self._core.listing(config, filter, before, limit), self.client)

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return drive(self._core.put(config, checkpoint, metadata, new_versions), self.client)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        drive(self._core.put_writes(config, writes, task_id, task_path), self.client)

    def delete_thread(self, thread_id: str) -> None:
        drive(self._core.delete_thread(thread_id), self.client)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        drive(self._core.copy_thread(source_thread_id, target_thread_id), self.client)

    def get_next_version(self, current: str | None, channel: None) -> str:
        return _next_version(current)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        found = await asyncio.to_thread(
            lambda: list(self.list(config, filter=filter, before=before, limit=limit))
        )
        for item in found:
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)


class AsyncConvergeSaver(BaseCheckpointSaver[str]):
    """A checkpointer over a :class:`converge_ledger.AsyncClient`, for graphs run with
    ``ainvoke``/``astream``. Build it with ``async with AsyncConvergeSaver.from_server(...)``.
    The sync methods may be called from other threads while its event loop runs (as LangGraph
    does for sync graph calls), never from the loop itself."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        prefix: str = DEFAULT_PREFIX,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde)
        self.client = client
        self._core = Core(self.serde, prefix)
        self.loop = asyncio.get_running_loop()

    @classmethod
    @asynccontextmanager
    async def from_server(
        cls,
        address: str | Sequence[str] = "http://127.0.0.1:50051",
        *,
        token: str | None = None,
        ca: str | bytes | os.PathLike[str] | None = None,
        verify: bool = False,
        prefix: str = DEFAULT_PREFIX,
        **client_options: Any,
    ) -> AsyncIterator[AsyncConvergeSaver]:
        """A saver on a new connection to ``address`` (one node, or several of a cluster)."""
        async with AsyncClient(address, token=token, ca=ca, verify=verify, **client_options) as client:
            yield cls(client, prefix=prefix)

    async def __aenter__(self) -> AsyncConvergeSaver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()

    def context_id(self, thread_id: str) -> str:
        """The ledger context that holds ``thread_id``."""
        return self._core.context(str(thread_id))

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await adrive(self._core.get_tuple(config), self.client)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        async for item in adrive_items(self._core.listing(config, filter, before, limit), self.client):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await adrive(self._core.put(config, checkpoint, metadata, new_versions), self.client)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await adrive(self._core.put_writes(config, writes, task_id, task_path), self.client)

    async def adelete_thread(self, thread_id: str) -> None:
        await adrive(self._core.delete_thread(thread_id), self.client)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await adrive(self._core.copy_thread(source_thread_id, target_thread_id), self.client)

    def get_next_version(self, current: str | None, channel: None) -> str:
        return _next_version(current)

    # Sync methods, for graphs called synchronously from another thread.

    def _run(self, coro: Any) -> Any:
        try:
            if asyncio.get_running_loop() is self.loop:
                coro.close()
                raise RuntimeError(
                    "AsyncConvergeSaver's sync methods block; from its event loop use the a* methods "
                    "(graph.ainvoke), or use ConvergeSaver"
                )
        except RuntimeError as e:
            if "no running event loop" not in str(e):
                raise
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._run(self.aget_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        async def collect() -> list[CheckpointTuple]:
            return [t async for t in self.alist(config, filter=filter, before=before, limit=limit)]

        yield from self._run(collect())

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._run(self.aput(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._run(self.aput_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._run(self.adelete_thread(thread_id))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._run(self.acopy_thread(source_thread_id, target_thread_id))

