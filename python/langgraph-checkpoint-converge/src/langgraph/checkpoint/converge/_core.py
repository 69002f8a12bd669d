"""How LangGraph's checkpoints live in a ledger context, written once for both savers.

Each operation is a generator that yields the ledger calls it needs, ``("get", args, kwargs)``,
and receives their results; the sync saver drives it with a :class:`converge_ledger.Client`,
the async one with an :class:`converge_ledger.AsyncClient` (``drive`` / ``adrive``). Listing
also yields ``("item", tuple)`` for each checkpoint it finds.

One thread is one context, ``<prefix><thread_id>``. Its entries, by key (a JSON array, so no
namespace or channel name can make two keys collide):

- ``["namespace"]``: a namespace the thread has checkpoints in (once each, by ``append_id``);
- ``["blob", ns, channel]``: a channel value a checkpoint changed (``new_versions`` only); the
  entry's metadata holds its version and serializer type;
- ``["checkpoint", ns]``: a checkpoint, appended after its blobs: the **commit record**. It
  names the channels it changed (found at read time as the newest blob of that channel, of
  that version, before it) and the sequence of every blob it kept from earlier checkpoints.
  Blobs a crash left without their checkpoint entry are never read;
- ``["writes", ns, checkpoint_id]``: a pending write; a write with a task's own index carries
  an ``append_id`` from (ns, checkpoint, task, index), so a retry records it once;
- ``["tombstone"]``: ``delete_thread``. Reads start after the latest one. The bytes before it
  stay in the ledger, covered by its proofs: this is not erasure.

``copy_thread`` is the ledger's Snapshot of one context and Load into another, so sequences,
and so the blob references, carry over unchanged.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Generator, Mapping, Sequence
from typing import Any, cast

from converge_ledger import AlreadyExists, AppendRequest, Entry
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.base import writes_sort_key
from langgraph.checkpoint.serde.base import SerializerProtocol

#: A ledger call the driver makes, or a result the operation hands out.
Step = tuple[str, tuple[Any, ...], dict[str, Any]]
Op = Generator[Step, Any, Any]

DEFAULT_PREFIX = "langgraph/thread/"
#: Keys are at most 1 KiB; a longer one is replaced by its hash.
KEY_BYTES_MAX = 1000
#: Entries read per page when a checkpoint is looked for by id, or listed.
PAGE = 64
#: Newest entries read to find the latest checkpoint in one call.
RECENT = 8
#: Most entries a listing reads as one span around the checkpoints it shows.
SPAN_MAX = 512
#: Checkpoints whose position and blob references a saver remembers.
REMEMBERED = 4096


def key(*parts: str) -> str:
    text = json.dumps(list(parts), ensure_ascii=False, separators=(",", ":"))
    if len(text.encode()) <= KEY_BYTES_MAX:
        return text
    return json.dumps([parts[0], "sha256:" + hashlib.sha256(text.encode()).hexdigest()])


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def call(name: str, *args: Any, **kwargs: Any) -> Step:
    return (name, args, kwargs)


class Core:
    """The operations of both savers, over one serializer and context prefix."""

    def __init__(self, serde: SerializerProtocol, prefix: str) -> None:
        self.serde = serde
        self.prefix = prefix
        self._lock = threading.Lock()
        # (thread, ns, checkpoint id) → (sequence, {channel: (version, blob sequence)})
        self._remembered: OrderedDict[tuple[str, str, str], tuple[int, dict[str, tuple[str, int]]]] = (
            OrderedDict()
        )
        self._namespaces: set[tuple[str, str]] = set()

    # -- naming ---------------------------------------------------------------------------

    def context(self, thread_id: str) -> str:
        return f"{self.prefix}{thread_id}"

    def _remember(self, at: tuple[str, str, str], seq: int, refs: dict[str, tuple[str, int]]) -> None:
        with self._lock:
            self._remembered[at] = (seq, refs)
            self._remembered.move_to_end(at)
            while len(self._remembered) > REMEMBERED:
                self._remembered.popitem(last=False)

    def _recalled(self, at: tuple[str, str, str]) -> tuple[int, dict[str, tuple[str, int]]] | None:
        with self._lock:
            return self._remembered.get(at)

    def _forget_thread(self, thread_id: str) -> None:
        with self._lock:
            for at in [a for a in self._remembered if a[0] == thread_id]:
                del self._remembered[at]
            self._namespaces = {n for n in self._namespaces if n[0] != thread_id}

    # -- reading ----------------------------------------------------------------------------

    def _floor(self, ctx: str) -> Op:
        """The sequence reads start after: the latest tombstone's (0 if none)."""
        got = yield call("get", ctx, key=key("tombstone"), limit=1, newest_first=True)
        return got.entries[0].sequence if got.entries else 0

    def _decode(self, entry: Entry) -> dict[str, Any]:
        return self.serde.loads_typed((entry.metadata["type"], entry.payload))

    def _blob_refs(
        self, ctx: str, ns: str, cp: Entry, record: dict[str, Any], seen: dict[int, Entry]
    ) -> Op:
        """Every channel the checkpoint holds → (version, blob sequence)."""
        refs: dict[str, tuple[str, int]] = {ch: (v, s) for ch, (v, s) in record["kept"].items()}
        new: dict[str, str] = record["new"]
        if not new:
            return refs
        # Its own blobs were appended just before it: one read finds them all, unless another
        # namespace's entries came in between.
        low = max(cp.sequence - 1 - len(new), 0)
        if any(s not in seen for s in range(low + 1, cp.sequence)):
            window = yield call("get", ctx, after=low, before=cp.sequence)
            seen.update((e.sequence, e) for e in window.entries)
        for ch, version in new.items():
            wanted = key("blob", ns, ch)
            found = next(
                (
                    seen[s]
                    for s in range(cp.sequence - 1, low, -1)
                    if s in seen and seen[s].key == wanted
                ),
                None,
            )
            if found is None or found.metadata.get("version") != version:
                found = yield from self._find_blob(ctx, ns, ch, version, cp.sequence)
            if found is not None:
                refs[ch] = (version, found.sequence)
        return refs

    def _find_blob(self, ctx: str, ns: str, ch: str, version: str, below: int) -> Op:
        """The newest blob of ``ch`` at ``version`` below sequence ``below``."""
        while below > 1:
            got = yield call(
                "get", ctx, key=key("blob", ns, ch), before=below, limit=PAGE, newest_first=True
            )
            for e in got.entries:
                if e.metadata.get("version") == version:
                    return e
            if len(got.entries) < PAGE:
                return None
            below = got.entries[-1].sequence
        return None

    def _values(self, ctx: str, refs: Mapping[str, tuple[str, int]], seen: dict[int, Entry]) -> Op:
        """The channel values at these blob sequences (empty channels left out)."""
        missing = sorted({s for _, s in refs.values() if s not in seen})
        run: list[int] = []
        for s in missing + [0]:
            if run and (s != run[-1] + 1 or s == 0):
                got = yield call("get", ctx, after=run[0] - 1, limit=len(run))
                seen.update((e.sequence, e) for e in got.entries)
                run = []
            if s:
                run.append(s)
        values = {}
        for ch, (version, s) in refs.items():
            e = seen.get(s)
            if e is None or e.metadata.get("version") != version:
                raise ValueError(f"channel {ch!r}: blob {s} of version {version} is missing")
            if e.metadata["type"] != "empty":
                values[ch] = self.serde.loads_typed((e.metadata["type"], e.payload))
        return values

    def _writes(
        self, ctx: str, ns: str, checkpoint_id: str, floor: int, known: list[Entry] | None
    ) -> Op:
        """The pending writes of a checkpoint; ``known``: every entry after it, if already read."""
        wanted = key("writes", ns, checkpoint_id)
        if known is None:
            got = yield call("get", ctx, key=wanted, after=floor)
            entries = got.entries
        else:
            entries = sorted((e for e in known if e.key == wanted), key=lambda e: e.sequence)
        kept: dict[tuple[str, int], tuple[str, str, Any, str]] = {}
        for e in entries:
            m = e.metadata
            at = (m["task_id"], int(m["idx"]))
            # A task's own writes: the first recorded wins; special channels: the last.
            if at[1] >= 0 and at in kept:
                continue
            value = self.serde.loads_typed((m["type"], e.payload))
            kept[at] = (m["task_id"], m["channel"], value, m["task_path"])
        order = sorted(kept, key=lambda at: writes_sort_key(kept[at][3], *at))
        return [kept[at][:3] for at in order]

    def _tuple(
        self,
        thread_id: str,
        ns: str,
        ctx: str,
        cp: Entry,
        floor: int,
        seen: dict[int, Entry],
        after_it: list[Entry] | None = None,
    ) -> Op:
        record = self._decode(cp)
        refs = yield from self._blob_refs(ctx, ns, cp, record, seen)
        checkpoint_id = cp.metadata["checkpoint_id"]
        self._remember((thread_id, ns, checkpoint_id), cp.sequence, refs)
        values = yield from self._values(ctx, refs, seen)
        writes = yield from self._writes(ctx, ns, checkpoint_id, floor, after_it)
        parent = record["parent"]
        return CheckpointTuple(
            config=_config(thread_id, ns, checkpoint_id),
            checkpoint=cast(Checkpoint, {**record["checkpoint"], "channel_values": values}),
            metadata=record["metadata"],
            parent_config=_config(thread_id, ns, parent) if parent else None,
            pending_writes=writes,
        )

    def _checkpoint_entry(
        self, thread_id: str, ns: str, ctx: str, checkpoint_id: str, floor: int
    ) -> Op:
        """The checkpoint entry of ``checkpoint_id`` in ``ns`` after ``floor``, or ``None``."""
        remembered = self._recalled((thread_id, ns, checkpoint_id))
        if remembered is not None and remembered[0] > floor:
            got = yield call("get", ctx, after=remembered[0] - 1, limit=1)
            if got.entries and got.entries[0].metadata.get("checkpoint_id") == checkpoint_id:
                return got.entries[0]
        before = 0
        while True:
            got = yield call(
                "get", ctx, key=key("checkpoint", ns), before=before, limit=PAGE, newest_first=True
            )
            for e in got.entries:
                if e.sequence <= floor:
                    return None
                if e.metadata.get("checkpoint_id") == checkpoint_id:
                    return e
            if len(got.entries) < PAGE:
                return None
            before = got.entries[-1].sequence

    def get_tuple(self, config: RunnableConfig) -> Op:
        thread_id = str(config["configurable"]["thread_id"])
        ns = config["configurable"].get("checkpoint_ns", "")
        ctx = self.context(thread_id)
        seen: dict[int, Entry] = {}
        checkpoint_id = get_checkpoint_id(config)
        if not checkpoint_id:
            # The latest checkpoint is almost always among the newest few entries, with its
            # blobs just before it and its pending writes after: one read, no tombstone
            # lookup (a tombstone after it would be among them too).
            recent = yield call("get", ctx, limit=RECENT, newest_first=True)
            seen.update((e.sequence, e) for e in recent.entries)
            for i, e in enumerate(recent.entries):
                if e.key == key("tombstone"):
                    return None
                if e.key == key("checkpoint", ns):
                    return (yield from self._tuple(thread_id, ns, ctx, e, e.sequence, seen, recent.entries[:i]))
            if len(recent.entries) < RECENT:
                return None
        floor = yield from self._floor(ctx)
        if checkpoint_id:
            cp = yield from self._checkpoint_entry(thread_id, ns, ctx, checkpoint_id, floor)
        else:
            got = yield call("get", ctx, key=key("checkpoint", ns), limit=1, newest_first=True)
            cp = got.entries[0] if got.entries and got.entries[0].sequence > floor else None
        if cp is None:
            return None
        return (yield from self._tuple(thread_id, ns, ctx, cp, floor, seen))

    def listing(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> Op:
        if config is not None:
            threads: Any = [str(config["configurable"]["thread_id"])]
        else:
            threads = yield from self._threads()
        wanted_ns = config["configurable"].get("checkpoint_ns") if config else None
        wanted_id = get_checkpoint_id(config) if config else None
        before_id = get_checkpoint_id(before) if before else None
        left = limit
        for thread_id in threads:
            ctx = self.context(thread_id)
            floor = yield from self._floor(ctx)
            if wanted_ns is not None:
                namespaces = [wanted_ns]
            else:
                got = yield call("get", ctx, key=key("namespace"))
                namespaces = sorted({e.payload.decode() for e in got.entries})
            for ns in namespaces:
                page_before = 0
                while True:
                    got = yield call(
                        "get", ctx, key=key("checkpoint", ns), before=page_before, limit=PAGE, newest_first=True
                    )
                    chosen: list[Entry] = []
                    for cp in got.entries:
                        if cp.sequence <= floor:
                            break
                        cid = cp.metadata["checkpoint_id"]
                        if (wanted_id and cid != wanted_id) or (before_id and cid >= before_id):
                            continue
                        if filter:
                            md = self._decode(cp)["metadata"]
                            if not all(md.get(k) == v for k, v in filter.items()):
                                continue
                        if left is not None and len(chosen) >= left:
                            break
                        chosen.append(cp)
                    # The span the chosen checkpoints and their own blobs lie in, read at once.
                    seen = yield from self._span(ctx, chosen)
                    for cp in chosen:
                        found = yield from self._tuple(thread_id, ns, ctx, cp, floor, seen)
                        yield ("item", (found,), {})
                    if left is not None:
                        left -= len(chosen)
                        if left <= 0:
                            return None
                    if len(got.entries) < PAGE or (got.entries and got.entries[-1].sequence <= floor):
                        break
                    page_before = got.entries[-1].sequence
        return None

    def _span(self, ctx: str, checkpoints: list[Entry]) -> Op:
        """Every entry from the oldest checkpoint's blobs up to the newest checkpoint, if that
        span is at most a few pages; else nothing (each checkpoint then reads its own)."""
        seen: dict[int, Entry] = {}
        if not checkpoints:
            return seen
        low = min(self._first_blob(cp) for cp in checkpoints)
        high = max(cp.sequence for cp in checkpoints)
        if high - low > SPAN_MAX:
            return seen
        after = low - 1
        while after < high:
            got = yield call("get", ctx, after=after, before=high + 1, limit=PAGE)
            if not got.entries:
                break
            seen.update((e.sequence, e) for e in got.entries)
            after = got.entries[-1].sequence
        return seen

    def _first_blob(self, cp: Entry) -> int:
        new = int(cp.metadata.get("new", "0"))
        return max(cp.sequence - new, 1)

    def _threads(self) -> Op:
        """Every thread with a context under the prefix."""
        threads, token = [], ""
        while True:
            page = yield call("list_contexts", self.prefix, page_token=token)
            threads += [c.context_id[len(self.prefix) :] for c in page.contexts]
            if not page.next_page_token:
                return threads
            token = page.next_page_token

    # -- writing ----------------------------------------------------------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Op:
        thread_id = str(config["configurable"]["thread_id"])
        ns = config["configurable"].get("checkpoint_ns", "")
        parent = config["configurable"].get("checkpoint_id")
        ctx = self.context(thread_id)
        c = dict(checkpoint)
        values: dict[str, Any] = c.pop("channel_values", {})  # type: ignore[assignment]
        versions = {ch: str(v) for ch, v in checkpoint["channel_versions"].items()}
        new = {ch: str(v) for ch, v in new_versions.items()}
        kept: dict[str, tuple[str, int]] = {}
        unchanged = {ch: v for ch, v in versions.items() if ch not in new}
        if unchanged:
            parent_refs: dict[str, tuple[str, int]] = {}
            if parent:
                remembered = self._recalled((thread_id, ns, parent))
                if remembered is None:
                    floor = yield from self._floor(ctx)
                    cp = yield from self._checkpoint_entry(thread_id, ns, ctx, parent, floor)
                    if cp is not None:
                        parent_refs = yield from self._blob_refs(ctx, ns, cp, self._decode(cp), {})
                else:
                    parent_refs = remembered[1]
            for ch, version in unchanged.items():
                ref = parent_refs.get(ch)
                if ref is None or ref[0] != version:
                    found = yield from self._find_blob(ctx, ns, ch, version, 2**63)
                    ref = (version, found.sequence) if found is not None else None
                if ref is not None:
                    kept[ch] = ref
        requests = []
        if (thread_id, ns) not in self._namespaces:
            requests.append(
                AppendRequest(ctx, key("namespace"), ns.encode(), append_id=f"lg:ns:{_digest(ns)}")
            )
        for ch, version in new.items():
            kind, data = self.serde.dumps_typed(values[ch]) if ch in values else ("empty", b"")
            requests.append(
                AppendRequest(ctx, key("blob", ns, ch), data, metadata={"version": version, "type": kind})
            )
        record = {
            "checkpoint": c,
            "metadata": get_checkpoint_metadata(config, metadata),
            "parent": parent,
            "new": new,
            "kept": {ch: list(ref) for ch, ref in kept.items()},
        }
        kind, data = self.serde.dumps_typed(record)
        requests.append(
            AppendRequest(
                ctx,
                key("checkpoint", ns),
                data,
                metadata={
                    "checkpoint_id": checkpoint["id"],
                    "parent_checkpoint_id": parent or "",
                    "new": str(len(new)),
                    "type": kind,
                },
            )
        )
        outcomes = yield call("append_many", requests)
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome
        with self._lock:
            self._namespaces.add((thread_id, ns))
        written = outcomes[-1]
        refs = dict(kept)
        for ch, version in new.items():
            blob = next(o for o, r in zip(outcomes, requests) if r.key == key("blob", ns, ch))
            refs[ch] = (version, blob.sequence)
        self._remember((thread_id, ns, checkpoint["id"]), written.sequence, refs)
        return _config(thread_id, ns, checkpoint["id"])

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> Op:
        thread_id = str(config["configurable"]["thread_id"])
        ns = config["configurable"].get("checkpoint_ns", "")
        checkpoint_id = config["configurable"]["checkpoint_id"]
        ctx = self.context(thread_id)
        requests = []
        for i, (channel, value) in enumerate(writes):
            idx = WRITES_IDX_MAP.get(channel, i)
            kind, data = self.serde.dumps_typed(value)
            requests.append(
                AppendRequest(
                    ctx,
                    key("writes", ns, checkpoint_id),
                    data,
                    metadata={
                        "task_id": task_id,
                        "task_path": task_path,
                        "channel": channel,
                        "idx": str(idx),
                        "type": kind,
                    },
                    # A task's own writes are recorded once, however often they are retried.
                    append_id=f"lg:w:{_digest(ns, checkpoint_id, task_id, str(idx))}" if idx >= 0 else None,
                )
            )
        outcomes = yield call("append_many", requests)
        for outcome in outcomes:
            # The same task and index recorded before with another value: the first one stands.
            if isinstance(outcome, Exception) and not isinstance(outcome, AlreadyExists):
                raise outcome
        return None

    def delete_thread(self, thread_id: str) -> Op:
        ctx = self.context(str(thread_id))
        head = yield call("tree_head", ctx)
        self._forget_thread(str(thread_id))
        if head.tree_size > 0:
            yield call("append", ctx, key("tombstone"), b"delete_thread")
        return None

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> Op:
        source = self.context(str(source_thread_id))
        head = yield call("tree_head", source)
        if head.tree_size == 0:
            return None
        snap = yield call("snapshot", source)
        yield call("load", self.context(str(target_thread_id)), snap.snapshot, fail_if_exists=True)
        return None


def _config(thread_id: str, ns: str, checkpoint_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}}


def drive(op: Op, client: Any) -> Any:
    """Runs ``op`` with a sync client; returns its result (items are not expected)."""
    result = None
    while True:
        try:
            name, args, kwargs = op.send(result)
        except StopIteration as done:
            return done.value
        result = getattr(client, name)(*args, **kwargs)


def drive_items(op: Op, client: Any) -> Any:
    """Runs a listing ``op`` with a sync client, yielding its items."""
    result = None
    while True:
        try:
            name, args, kwargs = op.send(result)
        except StopIteration:
            return
        if name == "item":
            result = None
            yield args[0]
        else:
            result = getattr(client, name)(*args, **kwargs)


async def adrive(op: Op, client: Any) -> Any:
    """Runs ``op`` with an async client."""
    result = None
    while True:
        try:
            name, args, kwargs = op.send(result)
        except StopIteration as done:
            return done.value
        result = await getattr(client, name)(*args, **kwargs)


async def adrive_items(op: Op, client: Any) -> Any:
    """Runs a listing ``op`` with an async client, yielding its items."""
    result = None
    while True:
        try:
            name, args, kwargs = op.send(result)
        except StopIteration:
            return
        if name == "item":
            result = None
            yield args[0]
        else:
            result = await getattr(client, name)(*args, **kwargs)
