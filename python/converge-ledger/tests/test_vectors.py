"""The pure-Python hashing agrees with the repository's vectors: the entry-hash known answers
(CONTRACT §3) and the RFC 6962 conformance vectors the Rust core is tested against; and the
snapshot decoder reads the pinned format-1 fixture and refuses any changed byte."""

from __future__ import annotations

import json

import pytest

from converge_ledger import hashing
from converge_ledger.snapshot import SnapshotError, decode
from ledger_node import REPO

DATA = REPO / "crates" / "core" / "tests" / "data"


def load(name: str) -> dict:
    return json.loads((DATA / name / "vectors.json").read_text())


def h(x: str) -> bytes:
    return bytes.fromhex(x)


def test_entry_hashes_match_the_known_answers() -> None:
    vectors = load("entry-hash")
    hashes = []
    for v in vectors["entries"]:
        fields = (
            v["context_id"],
            v["key"],
            h(v["payload_hex"]),
            v["sequence"],
            v["appended_at_ns"],
            v["lamport_clock"],
            v["metadata"],
        )
        assert hashing.leaf_input(*fields).hex() == v["leaf_input_hex"]
        content = hashing.content_hash(*fields)
        assert content.hex() == v["content_hash_hex"]
        assert hashing.entry_id(content) == v["id"]
        hashes.append(content)
    assert len(hashes) >= 3
    assert hashing.root_of_leaves(hashes[:3]).hex() == vectors["root_of_first_three_hex"]


def test_hasher_and_reference_tree_roots() -> None:
    v = load("rfc6962")
    for case in v["hasher"]:
        if case["kind"] == "empty_root":
            assert hashing.EMPTY_ROOT.hex() == case["expected"]
        elif case["kind"] == "leaf":
            assert hashing.hash_leaf(h(case["input"])).hex() == case["expected"]
        elif case["kind"] == "node":
            assert hashing.hash_children(h(case["left"]), h(case["right"])).hex() == case["expected"]
    tree = v["reference_tree"]
    leaves = [hashing.hash_leaf(h(x)) for x in tree["leaf_inputs"]]
    assert [x.hex() for x in leaves] == tree["leaf_hashes"]
    assert len(tree["roots"]) == 9
    for root in tree["roots"]:
        n = root["tree_size"]
        assert hashing.root_of_leaves(leaves[:n]).hex() == root["root"], n


def _all_proofs(v: dict) -> tuple[list[dict], list[dict]]:
    return (
        v["inclusion_proofs"] + v["derived"]["inclusion_proofs"],
        v["consistency_proofs"] + v["derived"]["consistency_proofs"],
    )


def test_every_known_proof_verifies() -> None:
    inclusions, consistencies = _all_proofs(load("rfc6962"))
    assert len(inclusions) > 30 and len(consistencies) > 30
    for p in inclusions:
        hashing.verify_inclusion(
            h(p["leaf_hash"]), p["leaf_index"], p["tree_size"], [h(x) for x in p["proof"]], h(p["root"])
        )
    for p in consistencies:
        hashing.verify_consistency(
            p["size1"], h(p["root1"]), p["size2"], h(p["root2"]), [h(x) for x in p["proof"]]
        )


def _verdict(check) -> bool:
    try:
        check()
        return True
    except hashing.ProofError:
        return False


def test_inclusion_probes_get_the_strict_verdict() -> None:
    probes = load("rfc6962")["inclusion_probes"]
    valid = 0
    for p in probes:
        ok = _verdict(
            lambda: hashing.verify_inclusion(
                h(p["leaf_hash"]), p["leaf_index"], p["tree_size"], [h(x) for x in p["proof"]], h(p["root"])
            )
        )
        assert ok == p["expect_valid_strict"], (p["source_file"], p["desc"])
        valid += ok
    assert (len(probes), valid) == (98, 6)


def test_consistency_probes_get_the_strict_verdict() -> None:
    probes = load("rfc6962")["consistency_probes"]
    valid = 0
    for p in probes:
        ok = _verdict(
            lambda: hashing.verify_consistency(
                p["size1"], h(p["root1"]), p["size2"], h(p["root2"]), [h(x) for x in p["proof"]]
            )
        )
        assert ok == p["expect_valid_strict"], (p["source_file"], p["desc"])
        valid += ok
    assert (len(probes), valid) == (98, 5)


def test_the_format_1_snapshot_fixture_decodes_and_any_changed_byte_is_refused() -> None:
    blob = (REPO / "crates" / "core" / "tests" / "fixtures" / "snapshot-v1.bin").read_bytes()
    snap = decode(blob)
    assert snap.tree_size == len(snap.entries) > 0
    assert hashing.root_of_leaves([e.content_hash for e in snap.entries]) == snap.root_hash
    for at in range(0, len(blob), max(1, len(blob) // 97)):
        changed = bytearray(blob)
        changed[at] ^= 0x01
        with pytest.raises(SnapshotError):
            decode(bytes(changed))
    with pytest.raises(SnapshotError):
        decode(blob[:-1])
    with pytest.raises(SnapshotError):
        decode(blob + b"\x00")


def _mth(d: list[bytes]) -> bytes:
    return hashing.root_of_leaves(d)


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _path(m: int, d: list[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH, written from the RFC (test-only: the client only verifies)."""
    if len(d) <= 1:
        return []
    k = _split(len(d))
    if m < k:
        return _path(m, d[:k]) + [_mth(d[k:])]
    return _path(m - k, d[k:]) + [_mth(d[:k])]


def _proof(m: int, d: list[bytes], whole: bool = True) -> list[bytes]:
    """RFC 6962 §2.1.2 SUBPROOF(m, D, true)."""
    if m == len(d):
        return [] if whole else [_mth(d)]
    k = _split(len(d))
    if m <= k:
        return _proof(m, d[:k], whole) + [_mth(d[k:])]
    return _proof(m - k, d[k:], False) + [_mth(d[:k])]


def test_accumulated_digests_and_every_proof_up_to_130_leaves() -> None:
    """The draft's accumulated digests pin every root and inclusion path of trees up to 130
    leaves; every inclusion and consistency proof of those trees verifies here."""
    import hashlib

    acc = load("rfc6962")["accumulated"]
    n_max = acc["max_size"]
    d = [hashing.hash_leaf(bytes([i])) for i in range(n_max)]

    def valid(start: int, end: int) -> bool:
        width = end - start
        ceil = 1
        while ceil < width:
            ceil *= 2
        return start % ceil == 0

    roots = hashlib.sha256()
    paths = hashlib.sha256()
    for end in range(n_max + 1):
        for start in range(end + 1):
            if valid(start, end):
                roots.update(f"[{start}, {end}) {_mth(d[start:end]).hex()}\n".encode())
                for index in range(start, end):
                    line = f"{index} [{start}, {end})" + "".join(
                        " " + p.hex() for p in _path(index - start, d[start:end])
                    )
                    paths.update((line + "\n").encode())
    assert roots.hexdigest() == acc["subtree_hashes"]["expected"]
    assert paths.hexdigest() == acc["subtree_inclusion_proofs"]["expected"]
    for n in range(1, n_max + 1):
        root = _mth(d[:n])
        for i in range(n):
            hashing.verify_inclusion(d[i], i, n, _path(i, d[:n]), root)
        for m in range(1, n + 1):
            hashing.verify_consistency(m, _mth(d[:m]), n, root, _proof(m, d[:n]))
