"""A LangGraph graph that stops for a human, survives its process being killed, and resumes
from the ledger in a new process; with a live observer and an audit of the thread.

    python human_in_the_loop.py start  --thread T   # runs to the human review, then waits
    (kill it: kill -9, a crash, a deploy; the human takes a day)
    python human_in_the_loop.py resume --thread T --answer approve
    python human_in_the_loop.py watch  --thread T   # every entry of the thread as it lands
    python human_in_the_loop.py audit  --thread T   # tree head, and a checkpoint proven in it

``--server`` (default ``http://127.0.0.1:50051``, env ``CONVERGE_LEDGER_SERVER``) names the node.
"""

from __future__ import annotations

import argparse
import operator
import os
import sys
import time
from typing import Annotated, TypedDict

from converge_ledger import Client
from langgraph.checkpoint.converge import ConvergeSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt


class State(TypedDict, total=False):
    topic: str
    notes: str
    draft: str
    verdict: str
    published: str
    ran: Annotated[list[str], operator.add]


def research(state: State) -> State:
    return {"notes": f"three facts about {state['topic']}", "ran": ["research"]}


def draft(state: State) -> State:
    return {"draft": f"A post on {state['topic']}, from {state['notes']}", "ran": ["draft"]}


def review(state: State) -> State:
    # Stops the graph here until a human answers; the answer comes back on resume.
    verdict = interrupt({"question": "publish this draft?", "draft": state["draft"]})
    return {"verdict": verdict, "ran": ["review"]}


def publish(state: State) -> State:
    done = state["draft"] if state["verdict"] == "approve" else "(rejected)"
    return {"published": done, "ran": ["publish"]}


def graph(saver: ConvergeSaver):
    builder = StateGraph(State)
    for name, node in [("research", research), ("draft", draft), ("review", review), ("publish", publish)]:
        builder.add_node(name, node)
    builder.add_edge(START, "research")
    builder.add_edge("research", "draft")
    builder.add_edge("draft", "review")
    builder.add_edge("review", "publish")
    builder.add_edge("publish", END)
    return builder.compile(checkpointer=saver)


def say(*parts: object) -> None:
    print(*parts, flush=True)


def start(server: str, thread: str, topic: str) -> None:
    with ConvergeSaver.from_server(server) as saver:
        config = {"configurable": {"thread_id": thread}}
        graph(saver).invoke({"topic": topic}, config)
        at = saver.get_tuple(config)
        assert at is not None
        say(f"interrupted at checkpoint {at.config['configurable']['checkpoint_id']}")
        say(f"waiting for a human on thread {thread}; kill this process whenever you like")
        while True:
            time.sleep(3600)


def resume(server: str, thread: str, answer: str) -> None:
    with ConvergeSaver.from_server(server) as saver:
        config = {"configurable": {"thread_id": thread}}
        at = saver.get_tuple(config)
        if at is None:
            sys.exit(f"thread {thread} has no checkpoint: run `start` first")
        say(f"resuming from checkpoint {at.config['configurable']['checkpoint_id']}")
        state = graph(saver).invoke(Command(resume=answer), config)
        say(f"ran: {' '.join(state['ran'])}")
        say(f"published: {state['published']}")


def watch(server: str, thread: str) -> None:
    with Client(server) as client, ConvergeSaver(client) as saver:
        for entry in client.watch(saver.context_id(thread)):
            say(f"#{entry.sequence} {entry.key}")


def audit(server: str, thread: str) -> None:
    with Client(server, verify=True) as client:
        saver = ConvergeSaver(client)
        context = saver.context_id(thread)
        head = client.tree_head(context)
        say(f"context {context}: {head.tree_size} entries, root {head.root_hash.hex()}")
        latest = client.latest(context, key='["checkpoint",""]')
        if latest is None:
            sys.exit("no checkpoint to prove")
        # Checked here, in Python: the entry's hash, the proof, and the head it leads to.
        proof = client.prove_inclusion(context, latest.sequence)
        say(
            f"checkpoint {latest.metadata['checkpoint_id']} is entry {latest.sequence}, "
            f"proven in the tree of {proof.tree_size} with {len(proof.hashes)} hashes: verified"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["start", "resume", "watch", "audit"])
    parser.add_argument("--thread", required=True)
    parser.add_argument("--server", default=os.environ.get("CONVERGE_LEDGER_SERVER", "http://127.0.0.1:50051"))
    parser.add_argument("--topic", default="the ledger")
    parser.add_argument("--answer", default="approve")
    args = parser.parse_args()
    if args.command == "start":
        start(args.server, args.thread, args.topic)
    elif args.command == "resume":
        resume(args.server, args.thread, args.answer)
    elif args.command == "watch":
        watch(args.server, args.thread)
    else:
        audit(args.server, args.thread)


if __name__ == "__main__":
    main()
