"""The verifying mode's checks, as the Rust client makes them: pure functions over what the
ledger sent, and the tree heads pinned per context.

A pinned head is the newest the client has seen for a context, as a Certificate Transparency
client keeps one: a newer head is accepted only with a consistency proof from the pinned one,
an older one only with a proof that it is a prefix of it, and the same size only with the same
root. So a ledger cannot show this client two histories of a context, or rewrite one it has
shown, without being caught.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from . import hashing
from ._proto import context_pb2 as pb
from ._wire import entry as entry_from_wire
from ._wire import page_size
from .errors import LedgerError, VerificationError, from_wire_code
from .snapshot import SnapshotError, decode
from .types import ConsistencyProof, ContextPage, Entry, InclusionProof, SnapshotResult

#: Most contexts whose head a client pins; beyond it the pins start over (forgetting a pin
#: only gives up protection, never makes a wrong verdict).
PINNED_CONTEXTS_MAX = 100_000

def entry(context_id: str, e: Entry) -> None:
    """The entry's content hash and id match its fields in ``context_id``."""
    computed = e.computed_hash(context_id)
    if computed != e.content_hash:
        raise VerificationError(
            f"context {context_id}: entry {e.sequence} has content hash {e.content_hash.hex()} "
            f"but its fields hash to {computed.hex()}"
        )
    if e.id != hashing.entry_id(computed):
        raise VerificationError(f"context {context_id}: entry {e.sequence} has the wrong id")


def appended(
    context_id: str, key: str, payload: bytes, metadata: dict[str, str], got: Entry
) -> None:
    """The entry an append returned is the one sent, and hashes right."""
    entry(context_id, got)
    if (got.key, got.payload, dict(got.metadata)) != (key, payload, metadata):
        raise VerificationError(
            f"the ledger recorded entry {got.sequence} with other fields than were sent"
        )


def streamed(
    sent: pb.AppendRequest, answer: pb.AppendStreamResponse, verifying: bool
) -> Entry | LedgerError:
    """One answer of an ``AppendStream``: the entry (checked against what was sent when
    ``verifying``), or the error of that append alone."""
    if answer.HasField("error"):
        return from_wire_code(answer.error.code, answer.error.message)
    got = entry_from_wire(answer.entry)
    if verifying:
        appended(sent.context_id, sent.key, sent.payload, dict(sent.metadata), got)
    return got


def watched(context_id: str, key: str | None, last: int, got: Entry, verifying: bool) -> None:
    """The next entry of a watch comes after ``last`` (the very next one without a key
    filter: no gap, no duplicate), and hashes right when ``verifying``."""
    if got.sequence <= last or (not key and got.sequence != last + 1):
        raise VerificationError(
            f"context {context_id}: the watch gave entry {got.sequence} after {last}"
        )
    if verifying:
        entry(context_id, got)


def entries(
    context_id: str, after: int, before: int, newest_first: bool, got: Sequence[Entry]
) -> None:
    """Entries of a Get: each hashes right, lies in the range asked for, in the order asked."""
    previous: int | None = None
    for e in got:
        entry(context_id, e)
        seq = e.sequence
        if seq <= after or (before > 0 and seq >= before):
            raise VerificationError(
                f"entry {seq} is outside the range asked for (after {after}, before {before})"
            )
        if previous is not None and (seq >= previous if newest_first else seq <= previous):
            order = "newest" if newest_first else "oldest"
            raise VerificationError(f"entry {seq} came after entry {previous} in a read {order} first")
        previous = seq


def prefix_head(newest_first: bool, got: Sequence[Entry]) -> tuple[int, bytes] | None:
    """The head a Get from the start shows (entries 1..n, none missing), if it shows one."""
    if not got:
        return None
    ordered = list(reversed(got)) if newest_first else list(got)
    if any(e.sequence != i + 1 for i, e in enumerate(ordered)):
        return None
    return len(ordered), hashing.root_of_leaves([e.content_hash for e in ordered])


def listing(prefix: str, page_token: str, limit: int, page: ContextPage) -> None:
    """A page of contexts answers its request: in strictly increasing byte order of ids, after
    the token, with the prefix, at most the page size, none empty, the next token not behind."""
    if len(page.contexts) > page_size(limit):
        raise VerificationError(
            f"a page of {len(page.contexts)} contexts, when at most {page_size(limit)} were asked for"
        )
    previous = page_token.encode() if page_token else None
    for info in page.contexts:
        raw = info.context_id.encode()
        if not info.context_id.startswith(prefix):
            raise VerificationError(f"context {info.context_id!r} listed for prefix {prefix!r}")
        if previous is not None and raw <= previous:
            raise VerificationError(
                f"context {info.context_id!r} listed after {previous.decode()!r}: out of order, "
                "repeated, or before the page token"
            )
        if info.tree_size == 0:
            raise VerificationError(f"context {info.context_id!r} listed with no entries")
        previous = raw
    if page.next_page_token and previous is not None and page.next_page_token.encode() < previous:
        raise VerificationError("a next_page_token before the last context listed")


def snapshot(context_id: str, got: SnapshotResult) -> None:
    """The blob decodes and verifies, is of ``context_id``, and carries the head it names."""
    try:
        snap = decode(got.snapshot)
    except SnapshotError as e:
        raise VerificationError(f"the snapshot does not verify: {e}") from e
    if snap.context_id != context_id:
        raise VerificationError(f"the snapshot is of context {snap.context_id}, not {context_id}")
    if (snap.tree_size, snap.root_hash) != (got.entry_count, got.merkle_root):
        raise VerificationError("the snapshot's tree head differs from the response's metadata")


def inclusion_proof(sequence: int, leaf: Entry, proof: InclusionProof) -> None:
    """``proof`` shows entry ``sequence`` (``leaf``) in the tree it names."""
    if leaf.sequence != sequence or proof.leaf_index != sequence - 1:
        raise VerificationError(f"the inclusion proof is not of entry {sequence}")
    try:
        hashing.verify_inclusion(
            leaf.content_hash, proof.leaf_index, proof.tree_size, proof.hashes, proof.root_hash
        )
    except hashing.ProofError as e:
        raise VerificationError(f"inclusion proof of entry {sequence}: {e}") from e


def consistency_proof(proof: ConsistencyProof) -> None:
    try:
        hashing.verify_consistency(
            proof.from_size, proof.from_root, proof.to_size, proof.to_root, proof.hashes
        )
    except hashing.ProofError as e:
        raise VerificationError(f"consistency proof: {e}") from e


def fork(context_id: str, shown: tuple[int, bytes], pinned: tuple[int, bytes]) -> VerificationError:
    return VerificationError(
        f"context {context_id}: the ledger showed tree head {shown[0]}/{shown[1].hex()} that is "
        f"not consistent with tree head {pinned[0]}/{pinned[1].hex()} it showed before: history "
        "was rewritten or forked"
    )


class Pins:
    """The newest tree head seen per context (thread-safe)."""

    def __init__(self) -> None:
        self._heads: dict[str, tuple[int, bytes]] = {}
        self._lock = threading.Lock()

    def get(self, context_id: str) -> tuple[int, bytes] | None:
        with self._lock:
            return self._heads.get(context_id)

    def advance(self, context_id: str, size: int, root: bytes) -> None:
        with self._lock:
            if len(self._heads) >= PINNED_CONTEXTS_MAX and context_id not in self._heads:
                self._heads.clear()
            pinned = self._heads.get(context_id)
            if pinned is None or size > pinned[0]:
                self._heads[context_id] = (size, root)

    def needs(
        self, context_id: str, size: int, root: bytes
    ) -> tuple[tuple[int, bytes], tuple[int, bytes]] | None:
        """What must be proven for head (``size``, ``root``) to be accepted: ``None`` if it is
        accepted as it is (and pinned if new), else the (older, newer) heads a consistency
        proof must join. Raises :class:`VerificationError` for a head that can never be."""
        if size == 0:
            if root != hashing.EMPTY_ROOT:
                raise VerificationError(
                    f"context {context_id}: an empty tree with a root other than the empty root"
                )
            return None
        pinned = self.get(context_id)
        if pinned is None:
            self.advance(context_id, size, root)
            return None
        if size == pinned[0]:
            if root != pinned[1]:
                raise fork(context_id, (size, root), pinned)
            return None
        if size > pinned[0]:
            return pinned, (size, root)
        return (size, root), pinned

    def settle(
        self,
        context_id: str,
        shown: tuple[int, bytes],
        needed: tuple[tuple[int, bytes], tuple[int, bytes]],
        proof: ConsistencyProof,
    ) -> None:
        """Accepts ``shown`` if ``proof`` joins the two heads ``needed`` names."""
        older, newer = needed
        joined = (proof.from_size, proof.from_root, proof.to_size, proof.to_root) == (
            older[0],
            older[1],
            newer[0],
            newer[1],
        )
        try:
            hashing.verify_consistency(older[0], older[1], newer[0], newer[1], proof.hashes)
        except hashing.ProofError:
            joined = False
        pinned = newer if shown == older else older
        if not joined:
            raise fork(context_id, shown, pinned)
        self.advance(context_id, shown[0], shown[1])
