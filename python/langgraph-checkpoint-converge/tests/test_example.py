"""The human-in-the-loop example, as a user runs it: the graph stops for a human, its process
is killed (SIGKILL), a new process resumes it from the ledger at the exact checkpoint, a
watcher sees every entry live, and the audit proves the checkpoint in the thread's tree."""

from __future__ import annotations

import pathlib
import signal
import subprocess
import sys
import threading
import time
import uuid

from converge_ledger import Client
from ledger_node import Node

EXAMPLE = pathlib.Path(__file__).parents[1] / "examples" / "human_in_the_loop.py"


def run(node: Node, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(EXAMPLE), *args, "--server", node.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_killed_at_the_interrupt_and_resumed_in_a_new_process(node: Node) -> None:
    thread = f"hitl-{uuid.uuid4().hex[:8]}"
    watcher = run(node, "watch", "--thread", thread)
    seen: list[str] = []
    threading.Thread(target=lambda: seen.extend(watcher.stdout), daemon=True).start()

    first = run(node, "start", "--thread", thread)
    assert first.stdout is not None
    line = first.stdout.readline()
    assert line.startswith("interrupted at checkpoint "), line + first.stderr.read()
    interrupted_at = line.split()[-1]
    assert "waiting for a human" in first.stdout.readline()
    first.send_signal(signal.SIGKILL)
    assert first.wait(timeout=10) == -signal.SIGKILL

    second = run(node, "resume", "--thread", thread, "--answer", "approve")
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    lines = out.splitlines()
    assert lines[0] == f"resuming from checkpoint {interrupted_at}", "the exact checkpoint"
    assert lines[1] == "ran: research draft review publish", "nothing before the interrupt ran again"
    assert lines[2].startswith("published: A post on the ledger")

    audit = run(node, "audit", "--thread", thread)
    out, err = audit.communicate(timeout=60)
    assert audit.returncode == 0, err
    assert "verified" in out, out

    # The watcher saw each checkpoint entry as it landed, in order, with no gap.
    with Client(node.url) as client:
        head = client.tree_head(f"langgraph/thread/{thread}")
    deadline = time.monotonic() + 10
    while len(seen) < head.tree_size and time.monotonic() < deadline:
        time.sleep(0.05)
    watcher.kill()
    sequences = [int(s.split()[0][1:]) for s in seen]
    assert sequences == list(range(1, head.tree_size + 1))
    assert sum('["checkpoint",""]' in s for s in seen) >= 5
