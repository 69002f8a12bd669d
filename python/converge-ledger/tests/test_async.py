"""The asyncio client against the real binary: the same operations and checks as the sync one."""

from __future__ import annotations

import asyncio

import pytest

from converge_ledger import AppendRequest, AsyncClient, InvalidArgument, Unavailable, hashing
from ledger_node import Node


async def test_every_operation_verified(node: Node) -> None:
    async with AsyncClient(node.url, verify=True) as ledger:
        for i in range(1, 11):
            entry = await ledger.append("run", "plan" if i % 3 == 0 else "step", f"p{i}")
            assert entry.sequence == i
        whole = await ledger.get("run")
        assert [e.sequence for e in whole.entries] == list(range(1, 11))
        newest = await ledger.get("run", newest_first=True, before=10, limit=2)
        assert [e.sequence for e in newest.entries] == [9, 8]
        latest = await ledger.latest("run", key="plan")
        assert latest is not None and latest.sequence == 9
        head = await ledger.tree_head("run")
        assert head.root_hash == hashing.root_of_leaves([e.content_hash for e in whole.entries])
        assert (await ledger.prove_inclusion("run", 7)).leaf_index == 6
        assert (await ledger.prove_consistency("run", 5)).to_size == 10
        snap = await ledger.snapshot("run")
        assert (await ledger.load("copy", snap.snapshot)).entries_restored == 10
        assert [c.context_id async for c in ledger.contexts()] == ["copy", "run"]
        page = await ledger.list_contexts(limit=1)
        assert [c.context_id for c in page.contexts] == ["copy"] and page.next_page_token == "copy"
        with pytest.raises(InvalidArgument):
            await ledger.append("run", "", "no key")


async def test_append_many_and_a_live_watch(node: Node) -> None:
    async with AsyncClient(node.url, verify=True) as ledger:
        outcomes = await ledger.append_many([AppendRequest("feed", "k", f"{i}") for i in range(300)])
        assert [o.sequence for o in outcomes] == list(range(1, 301))
        seen: list[int] = []

        async def follow() -> None:
            async with ledger.watch("feed", from_sequence=290) as watch:
                async for entry in watch:
                    seen.append(entry.sequence)
                    if entry.sequence == 305:
                        return

        follower = asyncio.create_task(follow())
        while len(seen) < 10:
            await asyncio.sleep(0.01)
        for i in range(5):
            await ledger.append("feed", "k", f"live {i}")
        await asyncio.wait_for(follower, 10)
        assert seen == list(range(291, 306))


async def test_an_async_watch_resumes_after_a_restart(disk_node: Node) -> None:
    async with AsyncClient(disk_node.url, watch_retry_max=0.2) as ledger:
        await ledger.append("live", "k", "before")
        watch = ledger.watch("live")
        assert (await watch.__anext__()).sequence == 1
        assert disk_node.terminate() == 0
        restarted = disk_node.restart()
        try:
            # As in the sync test: the channel may still be in its reconnect backoff.
            while True:
                try:
                    await ledger.get("live")
                    break
                except Unavailable:
                    await asyncio.sleep(0.02)
            await ledger.append("live", "k", "after")
            got = await asyncio.wait_for(watch.__anext__(), 20)
            assert (got.sequence, got.payload) == (2, b"after")
            await watch.close()
        finally:
            restarted.stop()
