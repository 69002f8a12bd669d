"""put / put_writes / get_tuple / list per second and p99, for the same LangGraph workload on
ConvergeSaver and on LangGraph's own SqliteSaver (and PostgresSaver with --postgres DSN), in
one run, interleaved round by round.

    python bench/savers.py [--threads 20] [--steps 10] [--rounds 3] [--postgres DSN]

The workload is recorded once from a real graph (a loop that appends a ~1 KiB message per
step, with an InMemorySaver), then replayed call by call on each saver, so every saver stores
exactly the same checkpoints. The ledger node is started here (``CONVERGE_LEDGER_BIN``, else
``target/release/converge-ledger``), durable, on disk, in a temporary directory like SQLite's
file. Reports medians over the rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import operator
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

REPO = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "python" / "converge-ledger" / "tests"))


class State(TypedDict, total=False):
    messages: Annotated[list[str], operator.add]
    count: int


class Recorder(InMemorySaver):
    """An InMemorySaver that keeps every put and put_writes it was given, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def put(self, config, checkpoint, metadata, new_versions):  # type: ignore[no-untyped-def]
        self.calls.append(("put", (config, checkpoint, metadata, new_versions)))
        return super().put(config, checkpoint, metadata, new_versions)

    def put_writes(self, config, writes, task_id, task_path=""):  # type: ignore[no-untyped-def]
        self.calls.append(("put_writes", (config, writes, task_id, task_path)))
        return super().put_writes(config, writes, task_id, task_path)


def record(threads: int, steps: int) -> list[tuple[str, tuple[Any, ...]]]:
    def agent(state: State) -> State:
        n = state.get("count", 0) + 1
        return {"messages": [f"step {n}: " + "x" * 1000], "count": n}

    builder = StateGraph(State)
    builder.add_node("agent", agent)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", lambda s: END if s["count"] >= steps else "agent")
    recorder = Recorder()
    graph = builder.compile(checkpointer=recorder)
    for t in range(threads):
        graph.invoke({"messages": [], "count": 0}, {"configurable": {"thread_id": f"t{t}"}})
    return recorder.calls


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def run_on(saver: Any, calls: list[tuple[str, tuple[Any, ...]]], tag: str, threads: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"put": [], "put_writes": [], "get_tuple": [], "list": []}
    retag = lambda c: {"configurable": {**c["configurable"], "thread_id": f"{tag}-{c['configurable']['thread_id']}"}}  # noqa: E731
    for name, args in calls:
        args = (retag(args[0]), *args[1:])
        out[name].append(timed(lambda: getattr(saver, name)(*args)))
    for t in range(threads):
        config = {"configurable": {"thread_id": f"{tag}-t{t}", "checkpoint_ns": ""}}
        for _ in range(5):
            out["get_tuple"].append(timed(lambda: saver.get_tuple(config)))
            out["list"].append(timed(lambda: list(saver.list(config, limit=10))))
    return out


@contextlib.contextmanager
def converge(tmp: pathlib.Path) -> Iterator[Any]:
    from ledger_node import Node

    from langgraph.checkpoint.converge import ConvergeSaver

    node = Node(tmp / "ledger")
    try:
        with ConvergeSaver.from_server(node.url) as saver:
            yield saver
    finally:
        node.stop()


@contextlib.contextmanager
def sqlite(tmp: pathlib.Path) -> Iterator[Any]:
    from langgraph.checkpoint.sqlite import SqliteSaver

    with SqliteSaver.from_conn_string(str(tmp / "checkpoints.sqlite")) as saver:
        yield saver


def postgres(dsn: str) -> Callable[[pathlib.Path], Any]:
    @contextlib.contextmanager
    def open_saver(_tmp: pathlib.Path) -> Iterator[Any]:
        from langgraph.checkpoint.postgres import PostgresSaver

        with PostgresSaver.from_conn_string(dsn) as saver:
            saver.setup()
            yield saver

    return open_saver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", help="a DSN; PostgresSaver joins the comparison")
    args = parser.parse_args()
    calls = record(args.threads, args.steps)
    savers: dict[str, Callable[[pathlib.Path], Any]] = {"converge": converge, "sqlite": sqlite}
    if args.postgres:
        savers["postgres"] = postgres(args.postgres)
    rates: dict[tuple[str, str], list[float]] = {}
    p99s: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        for name, make in savers.items():
            with tempfile.TemporaryDirectory() as tmp, make(pathlib.Path(tmp)) as saver:
                times = run_on(saver, calls, f"r{r}-{time.time_ns()}", args.threads)
            for op, samples in times.items():
                rates.setdefault((name, op), []).append(len(samples) / sum(samples))
                p99s.setdefault((name, op), []).append(sorted(samples)[int(len(samples) * 0.99) - 1] * 1e3)
    puts = sum(1 for n, _ in calls if n == "put")
    print(f"workload: {args.threads} threads x {args.steps} steps ({puts} puts, {len(calls) - puts} put_writes); "
          f"medians of {args.rounds} rounds")
    print(f"{'op':<11}" + "".join(f"{n + ' /s':>14}{n + ' p99':>16}" for n in savers) + "".join(
        f"{'converge÷' + n:>18}" for n in savers if n != "converge"))
    for op in ["put", "put_writes", "get_tuple", "list"]:
        row = f"{op:<11}"
        for n in savers:
            row += f"{statistics.median(rates[(n, op)]):>14.0f}{statistics.median(p99s[(n, op)]):>13.2f} ms"
        for n in savers:
            if n != "converge":
                ratios = [c / o for c, o in zip(rates[("converge", op)], rates[(n, op)])]
                row += f"{statistics.median(ratios):>18.2f}"
        print(row)


if __name__ == "__main__":
    main()
