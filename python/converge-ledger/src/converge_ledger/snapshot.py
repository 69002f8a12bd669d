"""The snapshot blob, format version 1 (``crates/core/src/snapshot``), decoded and verified in
pure Python: the checksum over every byte, then each entry's content hash, sequences 1..n,
and the Merkle root the blob names.

Layout (integers big-endian; ``bytes(x)`` = u32 length ‖ bytes)::

    magic "\\x89CVLSNP\\n" ‖ u32 version ‖ bytes(context_id) ‖ u64 entry_count ‖ u64 tree_size
    ‖ root[32] ‖ entries ‖ u32 CRC-32C of every byte before it

    entry = u64 sequence ‖ u64 appended_at_ns ‖ u64 lamport_clock ‖ bytes(key) ‖ bytes(payload)
            ‖ u32 n ‖ n × (bytes(k) ‖ bytes(v)) ‖ content_hash[32]
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .hashing import content_hash, entry_id, root_of_leaves
from .types import Entry

MAGIC = b"\x89CVLSNP\n"
FORMAT_VERSION = 1


class SnapshotError(ValueError):
    """A blob that is not a verifiable snapshot."""


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as the blob's trailer holds it."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int, what: str) -> bytes:
        if self.at + n > len(self.data):
            raise SnapshotError(f"the blob ends inside {what} at byte {self.at}")
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def u32(self, what: str) -> int:
        return int(struct.unpack(">I", self.take(4, what))[0])

    def u64(self, what: str) -> int:
        return int(struct.unpack(">Q", self.take(8, what))[0])

    def chunk(self, what: str) -> bytes:
        return self.take(self.u32(what), what)

    def text(self, what: str) -> str:
        try:
            return self.chunk(what).decode()
        except UnicodeDecodeError as e:
            raise SnapshotError(f"{what} is not UTF-8") from e


@dataclass(frozen=True)
class Snapshot:
    """A verified snapshot: the context, its entries, and its tree head."""

    context_id: str
    entries: list[Entry]
    tree_size: int
    root_hash: bytes


def decode(blob: bytes) -> Snapshot:
    """Decodes and verifies ``blob``; raises :class:`SnapshotError` on any defect."""
    blob = bytes(blob)
    if len(blob) < len(MAGIC) + 4 + 4 or blob[: len(MAGIC)] != MAGIC:
        raise SnapshotError("not a snapshot blob (bad magic or too short)")
    body, trailer = blob[:-4], blob[-4:]
    stored, computed = struct.unpack(">I", trailer)[0], crc32c(body)
    if stored != computed:
        raise SnapshotError(f"checksum mismatch: stored {stored:08x}, computed {computed:08x}")
    r = _Reader(body)
    r.take(len(MAGIC), "magic")
    version = r.u32("version")
    if version != FORMAT_VERSION:
        raise SnapshotError(f"format version {version}; this client reads {FORMAT_VERSION}")
    context_id = r.text("context_id")
    count, tree_size = r.u64("entry_count"), r.u64("tree_size")
    root = r.take(32, "root_hash")
    if count != tree_size:
        raise SnapshotError(f"{count} entries but a tree of {tree_size}")
    entries: list[Entry] = []
    for expected in range(1, count + 1):
        sequence = r.u64("entry sequence")
        if sequence != expected:
            raise SnapshotError(f"entry {sequence} where {expected} was due")
        appended_at_ns, lamport = r.u64("appended_at_ns"), r.u64("lamport_clock")
        key, payload = r.text("key"), r.chunk("payload")
        metadata = {}
        for _ in range(r.u32("metadata count")):
            k = r.text("metadata key")
            metadata[k] = r.text("metadata value")
        stored_hash = r.take(32, "content_hash")
        computed_hash = content_hash(
            context_id, key, payload, sequence, appended_at_ns, lamport, metadata
        )
        if stored_hash != computed_hash:
            raise SnapshotError(f"entry {sequence}: its content hash does not match its fields")
        entries.append(
            Entry(
                id=entry_id(computed_hash),
                key=key,
                payload=payload,
                sequence=sequence,
                appended_at_ns=appended_at_ns,
                metadata=metadata,
                lamport_clock=lamport,
                content_hash=computed_hash,
            )
        )
    if r.at != len(body):
        raise SnapshotError(f"{len(body) - r.at} bytes after the last entry")
    if root_of_leaves([e.content_hash for e in entries]) != root:
        raise SnapshotError("the entries' Merkle root is not the root the blob names")
    return Snapshot(context_id, entries, tree_size, root)
