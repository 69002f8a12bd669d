"""The sync client against the real binary: every operation, its options, and its errors."""

from __future__ import annotations

import pathlib
import socket
import subprocess
import threading

import pytest

from converge_ledger import (
    AlreadyExists,
    AppendRequest,
    Client,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    hashing,
)
from ledger_node import Node, binary, cli


def test_every_operation_verified(node: Node) -> None:
    with Client(node.url, verify=True) as ledger:
        first = ledger.append("run-1", "facts", "market size: 2.4B", metadata={"agent": "a1"})
        assert (first.sequence, first.key, first.payload, dict(first.metadata)) == (
            1, "facts", b"market size: 2.4B", {"agent": "a1"},
        )
        assert first.content_hash == first.computed_hash("run-1")
        for i in range(2, 11):
            ledger.append("run-1", "plan" if i % 3 == 0 else "step", f"p{i}", received_lamport_clock=100)
        whole = ledger.get("run-1")
        assert [e.sequence for e in whole.entries] == list(range(1, 11))
        assert whole.latest_sequence == 10
        assert whole.entries[1].lamport_clock == 101, "max(previous, received) + 1"
        # Newest first, paged with `before`; the latest of a key; a key filter.
        assert [e.sequence for e in ledger.get("run-1", newest_first=True, limit=3).entries] == [10, 9, 8]
        assert [e.sequence for e in ledger.get("run-1", newest_first=True, before=8, limit=2).entries] == [7, 6]
        latest_plan = ledger.latest("run-1", key="plan")
        assert latest_plan is not None and latest_plan.sequence == 9
        assert [e.sequence for e in ledger.get("run-1", key="plan").entries] == [3, 6, 9]
        assert ledger.latest("nothing-here") is None
        # Tree head, proofs (checked here), snapshot and load.
        head = ledger.tree_head("run-1")
        assert head.tree_size == 10
        assert head.root_hash == hashing.root_of_leaves([e.content_hash for e in whole.entries])
        proof = ledger.prove_inclusion("run-1", 4)
        assert (proof.leaf_index, proof.tree_size) == (3, 10)
        consistency = ledger.prove_consistency("run-1", 3)
        assert (consistency.from_size, consistency.to_size) == (3, 10)
        snap = ledger.snapshot("run-1")
        assert (snap.entry_count, snap.merkle_root) == (10, head.root_hash)
        loaded = ledger.load("run-1-copy", snap.snapshot, fail_if_exists=True)
        assert (loaded.entries_restored, loaded.latest_sequence) == (10, 10)
        with pytest.raises(AlreadyExists):
            ledger.load("run-1-copy", snap.snapshot, fail_if_exists=True)
        copy = ledger.get("run-1-copy").entries
        # The same entries; their hashes differ, as each names its context (CONTRACT §3).
        assert [(e.key, e.payload, e.appended_at_ns) for e in copy] == [
            (e.key, e.payload, e.appended_at_ns) for e in whole.entries
        ]
        # Contexts, a page at a time.
        ledger.append("agent/2", "k", "x")
        ledger.append("agent/1", "k", "x")
        page = ledger.list_contexts(limit=2)
        assert [c.context_id for c in page.contexts] == ["agent/1", "agent/2"]
        assert page.next_page_token
        assert [c.context_id for c in ledger.contexts()] == ["agent/1", "agent/2", "run-1", "run-1-copy"]
        assert [(c.context_id, c.tree_size) for c in ledger.contexts("run-")] == [("run-1", 10), ("run-1-copy", 10)]


def test_append_many_rides_one_stream_and_reports_each_outcome(node: Node) -> None:
    with Client(node.url) as ledger:
        requests = [AppendRequest("many", "k", f"{i}") for i in range(500)]
        requests[250] = AppendRequest("many", "", "a key is required")
        outcomes = ledger.append_many(requests)
        assert isinstance(outcomes[250], InvalidArgument)
        sequences = [o.sequence for i, o in enumerate(outcomes) if i != 250]
        assert sequences == list(range(1, 500)), "the others in order, none lost"
        again = ledger.append_many([AppendRequest("many", "k", "once", append_id="import-1")] * 3)
        assert len({o.sequence for o in again}) == 1, "one append_id, one entry"


def test_bad_input_gets_a_clear_error_and_writes_nothing(node: Node) -> None:
    with Client(node.url) as ledger:
        with pytest.raises(InvalidArgument) as e:
            ledger.append("", "k", "x")
        assert "context" in e.value.message
        with pytest.raises(InvalidArgument):
            ledger.list_contexts(page_token="bad\ntoken")
        assert list(ledger.contexts()) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_several_servers_move_on_from_one_that_is_down(node: Node) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"
    with Client([dead, node.url]) as ledger:
        entry = ledger.append("ctx", "k", "through the second server")
        assert entry.sequence == 1
        got = ledger.append_many([AppendRequest("ctx", "k", f"{i}") for i in range(20)])
        assert [e.sequence for e in got] == list(range(2, 22))
    with Client(f"{dead},{node.url}") as ledger:
        assert ledger.get("ctx").latest_sequence == 21


def test_tokens_and_roles(tmp_path: pathlib.Path) -> None:
    tokens = tmp_path / "tokens"
    writer = cli("token", "create", "--role", "writer", "--tokens", str(tokens)).strip()
    reader = cli("token", "create", "--role", "reader", "--tokens", str(tokens)).strip()
    n = Node(None, "--tokens", str(tokens))
    try:
        with Client(n.url, token=writer) as w:
            w.append("ctx", "k", "x")
        with Client(n.url, token=reader) as r:
            assert r.get("ctx").latest_sequence == 1
            assert [c.context_id for c in r.contexts()] == ["ctx"]
            with pytest.raises(PermissionDenied):
                r.append("ctx", "k", "a reader may not write")
        with Client(n.url) as anonymous, pytest.raises(Unauthenticated):
            anonymous.get("ctx")
    finally:
        n.stop()


def _certificates(dir: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    """A CA and a server certificate for 127.0.0.1 and localhost, made with openssl."""
    ca_key, ca, key, csr, cert = (dir / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
        "-subj", "/CN=test ca", "-keyout", str(ca_key), "-out", str(ca))
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=localhost",
        "-keyout", str(key), "-out", str(csr))
    ext = dir / "ext.cnf"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-days", "2", "-extfile", str(ext), "-out", str(cert))
    return ca, cert, key


@pytest.mark.skipif(subprocess.run(["which", "openssl"], capture_output=True).returncode != 0, reason="no openssl")
def test_tls(tmp_path: pathlib.Path) -> None:
    ca, cert, key = _certificates(tmp_path)
    n = Node(None, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        with Client(f"https://{n.address}", ca=ca, verify=True) as ledger:
            assert ledger.append("ctx", "k", "over tls").sequence == 1
            assert ledger.tree_head("ctx").tree_size == 1
        with Client(n.url, timeout=5) as plain, pytest.raises(Unavailable):
            plain.get("ctx")
    finally:
        n.stop()


def test_a_watch_resumes_after_the_node_restarts_without_gap_or_duplicate(disk_node: Node) -> None:
    with Client(disk_node.url, verify=True, watch_retry_max=0.2) as ledger:
        for i in range(5):
            ledger.append("live", "k", f"before {i}")
        seen: list[int] = []
        watch = ledger.watch("live")
        # A daemon, so a failure below cannot leave pytest waiting for a watch that retries.
        reader = threading.Thread(target=lambda: seen.extend(e.sequence for e in watch), daemon=True)
        reader.start()
        _wait(lambda: len(seen) == 5)
        assert disk_node.terminate() == 0
        restarted = disk_node.restart()
        try:
            # The node listens again at once; the client's channel may still be waiting out its
            # reconnect backoff, and a call in that window fails with Unavailable (safe to
            # retry). A read finds the node before the appends are sent.
            _wait(lambda: _reachable(ledger))
            for i in range(5):
                ledger.append("live", "k", f"after {i}")
            _wait(lambda: len(seen) == 10)
            watch.close()
            reader.join(timeout=10)
            assert seen == list(range(1, 11))
        finally:
            watch.close()
            restarted.stop()


def _reachable(ledger: Client) -> bool:
    try:
        ledger.get("live")
        return True
    except Unavailable:
        return False


def _wait(condition, seconds: float = 20) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_binary_is_the_one_under_test() -> None:
    assert pathlib.Path(binary()).exists()
