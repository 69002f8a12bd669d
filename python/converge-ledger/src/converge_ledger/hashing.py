"""CONTRACT §3 in pure Python (hashlib only): entry hashes, RFC 6962 Merkle trees and proofs.

Everything a verifying client recomputes lives here, free of any network code, so that it can
be checked against the repository's vectors and read beside the contract:

- ``leaf_input`` / ``content_hash`` / ``entry_id``: an entry's canonical bytes and hashes;
- ``root_of_leaves``: the RFC 6962 §2.1 Merkle Tree Hash of a list of leaf hashes;
- ``verify_inclusion`` / ``verify_consistency``: RFC 9162 §2.1.3.2 and §2.1.4.2 verifiers, with
  the policy outside the RFC's domain that the Rust core uses (a proof from the empty tree
  proves nothing; equal sizes need an empty proof and equal roots).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence

HASH_BYTES = 32
ENTRY_DOMAIN = b"converge-ledger/entry/v1"
EMPTY_ROOT = hashlib.sha256(b"").digest()


def _bytes(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def leaf_input(
    context_id: str,
    key: str,
    payload: bytes,
    sequence: int,
    appended_at_ns: int,
    lamport_clock: int,
    metadata: Mapping[str, str],
) -> bytes:
    """The canonical bytes of an entry (CONTRACT §3): metadata pairs sorted by key bytes."""
    out = [
        _bytes(ENTRY_DOMAIN),
        _bytes(context_id.encode()),
        _bytes(key.encode()),
        _bytes(bytes(payload)),
        struct.pack(">QQQ", sequence, appended_at_ns, lamport_clock),
        struct.pack(">I", len(metadata)),
    ]
    for k, v in sorted(((k.encode(), v.encode()) for k, v in metadata.items())):
        out.append(_bytes(k) + _bytes(v))
    return b"".join(out)


def hash_leaf(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 ‖ data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node: SHA-256(0x01 ‖ left ‖ right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def content_hash(
    context_id: str,
    key: str,
    payload: bytes,
    sequence: int,
    appended_at_ns: int,
    lamport_clock: int,
    metadata: Mapping[str, str],
) -> bytes:
    """An entry's content hash: the leaf hash of its canonical bytes."""
    return hash_leaf(
        leaf_input(context_id, key, payload, sequence, appended_at_ns, lamport_clock, metadata)
    )


def entry_id(content: bytes) -> str:
    """An entry's id: lowercase hex of the first 16 bytes of its content hash."""
    return content[:16].hex()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (n ≥ 2)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def root_of_leaves(leaves: Sequence[bytes]) -> bytes:
    """The Merkle Tree Hash of ``leaves`` (already leaf hashes), without recursion."""
    if not leaves:
        return EMPTY_ROOT
    # Fold from the left as complete subtrees form, like a compact tree: O(n) hashes.
    stack: list[tuple[int, bytes]] = []  # (size, hash) of complete subtrees, sizes decreasing
    for leaf in leaves:
        size, node = 1, leaf
        while stack and stack[-1][0] == size:
            left_size, left = stack.pop()
            size, node = left_size + size, hash_children(left, node)
        stack.append((size, node))
    size, node = stack.pop()
    while stack:
        _, left = stack.pop()
        node = hash_children(left, node)
    return node


class ProofError(ValueError):
    """A proof that does not check out."""


def _check_hashes(*hashes: bytes) -> None:
    for h in hashes:
        if len(h) != HASH_BYTES:
            raise ProofError(f"a hash of {len(h)} bytes, not {HASH_BYTES}")


def verify_inclusion(
    leaf_hash: bytes, leaf_index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Checks that ``leaf_hash`` is leaf ``leaf_index`` (0-based) of the tree of ``tree_size``
    with ``root`` (RFC 9162 §2.1.3.2); raises :class:`ProofError` if not."""
    _check_hashes(leaf_hash, root, *proof)
    if leaf_index >= tree_size:
        raise ProofError(f"leaf index {leaf_index} is not below tree size {tree_size}")
    fn, sn = leaf_index, tree_size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofError("the inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = hash_children(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = hash_children(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the inclusion proof is shorter than the tree is deep")
    if r != root:
        raise ProofError("the inclusion proof leads to another root")


def verify_consistency(
    size1: int, root1: bytes, size2: int, root2: bytes, proof: Sequence[bytes]
) -> None:
    """Checks that the tree (``size1``, ``root1``) is a prefix of (``size2``, ``root2``)
    (RFC 9162 §2.1.4.2); raises :class:`ProofError` if not."""
    _check_hashes(root1, root2, *proof)
    if size1 == 0:
        raise ProofError("a consistency proof from the empty tree proves nothing")
    if size1 > size2:
        raise ProofError(f"tree size {size1} is beyond tree size {size2}")
    if size1 == size2:
        if proof:
            raise ProofError("a consistency proof between equal sizes must be empty")
        if root1 != root2:
            raise ProofError("two different roots for the same tree size")
        return
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # a power of two: the old root is the first node
        path.insert(0, root1)
    if not path:
        raise ProofError("an empty consistency proof")
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = hash_children(c, fr)
            sr = hash_children(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = hash_children(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the consistency proof is shorter than the tree is deep")
    if fr != root1:
        raise ProofError("the consistency proof does not lead to the older root")
    if sr != root2:
        raise ProofError("the consistency proof does not lead to the newer root")
