"""LangGraph's own conformance suite (langgraph-checkpoint-conformance) against both savers,
on the real binary. Every base capability must pass, and every extended one a saver
implements (copy_thread); delete_for_runs and prune are not implemented (a ledger never
removes entries) and are reported as not detected."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import BASE_CAPABILITIES

from converge_ledger import AsyncClient, Client
from langgraph.checkpoint.converge import AsyncConvergeSaver, ConvergeSaver
from ledger_node import Node


def _check(report, name: str) -> None:
    report.print_report()
    results = report.to_dict()
    out = os.environ.get("CONFORMANCE_REPORT_DIR")
    if out:
        with open(os.path.join(out, f"conformance-{name}.json"), "w") as f:
            json.dump(results, f, indent=2, default=str)
    assert report.passed_all_base(), results
    for cap, result in report.results.items():
        assert result.passed is not False, (cap, result.failures)
    for cap in BASE_CAPABILITIES:
        assert report.results[cap.value].tests_passed > 0, cap
    assert report.results["copy_thread"].passed is True


async def test_async_saver_passes_the_conformance_suite(node: Node) -> None:
    @checkpointer_test(name="AsyncConvergeSaver")
    async def saver() -> AsyncIterator[AsyncConvergeSaver]:
        async with AsyncClient(node.url) as client:
            yield AsyncConvergeSaver(client, prefix="conformance-async/")

    _check(await validate(saver), "async")


async def test_sync_saver_passes_the_conformance_suite(node: Node) -> None:
    @checkpointer_test(name="ConvergeSaver")
    async def saver() -> AsyncIterator[ConvergeSaver]:
        with Client(node.url) as client:
            yield ConvergeSaver(client, prefix="conformance-sync/")

    _check(await validate(saver), "sync")


@pytest.mark.parametrize("verify", [False, True])
def test_the_verifying_client_reads_what_the_saver_wrote(node: Node, verify: bool) -> None:
    from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_config, generate_metadata

    with ConvergeSaver.from_server(node.url, verify=verify, prefix=f"verify-{verify}/") as saver:
        config = generate_config("t")
        stored = saver.put(config, generate_checkpoint(channel_values={"a": 1}, channel_versions={"a": 1}), generate_metadata(), {"a": 1})
        got = saver.get_tuple(stored)
        assert got is not None and got.checkpoint["channel_values"] == {"a": 1}
        assert [t.config for t in saver.list(None)] == [stored]
