//! Every vector and probe of `tests/data/rfc6962/vectors.json` (RFC 6962 / RFC 9162
//! conformance data, see its README), against the fast tree, the proof plans and the
//! verifiers. The probes use the strict verdict: every hash must be exactly 32 bytes.
#![allow(clippy::cast_possible_truncation, reason = "test sizes and indices are small")]

mod common;

use std::fmt::Write as _;

use common::{StoredTree, hash, reference, unhex, vectors};
use converge_core::hash::{Hash, leaf_hash};
use converge_core::merkle::{
    CompactTree, ConsistencyError, InclusionError, LeafIndex, NodeId, RootHash, TreeSize,
    consistency_nodes, fold_range, inclusion_nodes, range_nodes, verify_consistency,
    verify_inclusion,
};
use sha2::{Digest, Sha256};

fn hashes(texts: &[String]) -> Option<Vec<Hash>> {
    texts.iter().map(|t| hash(t)).collect()
}

fn reference_leaves() -> Vec<Hash> {
    let v = vectors::rfc6962();
    v.reference_tree.leaf_inputs.iter().map(|i| leaf_hash(&unhex(i))).collect()
}

/// Proof variants that must never verify (the same set as `check_vectors.py`).
fn mutations(proof: &[Hash]) -> Vec<(String, Vec<Hash>)> {
    let mut out = Vec::new();
    for j in 0..proof.len() {
        for bit in [0, 7] {
            let mut p = proof.to_vec();
            let mut bytes = *p[j].as_bytes();
            bytes[0] ^= 1 << bit;
            p[j] = Hash::from_bytes(bytes);
            out.push((format!("flip proof[{j}] bit {bit}"), p));
        }
        // And a bit in the last byte, which a prefix comparison would miss.
        let mut p = proof.to_vec();
        let mut bytes = *p[j].as_bytes();
        bytes[31] ^= 0x80;
        p[j] = Hash::from_bytes(bytes);
        out.push((format!("flip proof[{j}] last byte"), p));
    }
    if let (Some(first), Some(last)) = (proof.first(), proof.last()) {
        out.push(("drop last".into(), proof[..proof.len() - 1].to_vec()));
        out.push(("drop first".into(), proof[1..].to_vec()));
        let mut dup = proof.to_vec();
        dup.push(*last);
        out.push(("duplicate last".into(), dup));
        let mut dup = vec![*first];
        dup.extend_from_slice(proof);
        out.push(("duplicate first".into(), dup));
    }
    let reversed: Vec<Hash> = proof.iter().rev().copied().collect();
    if reversed != proof {
        out.push(("reversed".into(), reversed));
    }
    let mut extra = proof.to_vec();
    extra.push(Hash::default());
    out.push(("append zero hash".into(), extra));
    let mut extra = vec![Hash::default()];
    extra.extend_from_slice(proof);
    out.push(("prepend zero hash".into(), extra));
    out
}

#[test]
fn schema_is_the_one_this_test_reads() {
    assert_eq!(vectors::rfc6962().schema, "converge-ledger/rfc6962-vectors/v1");
}

#[test]
fn hasher_leaf_and_empty_vectors() {
    for v in vectors::rfc6962().hasher {
        let expected = hash(&v.expected).unwrap();
        match v.kind.as_str() {
            "empty_root" => assert_eq!(converge_core::EMPTY_ROOT, expected, "{}", v.desc),
            "leaf" => assert_eq!(leaf_hash(&unhex(&v.input)), expected, "{}", v.desc),
            // Node vectors with short children are checked by the unit test in `hash.rs`,
            // which can reach the slice form of the node hash.
            "node" => assert!(!v.left.is_empty() && !v.right.is_empty()),
            other => panic!("unknown hasher kind {other}"),
        }
    }
}

#[test]
fn reference_tree_leaves_nodes_and_roots() {
    let v = vectors::rfc6962();
    let leaves = reference_leaves();
    assert_eq!(leaves.len(), 8);
    for (leaf, expected) in leaves.iter().zip(&v.reference_tree.leaf_hashes) {
        assert_eq!(Some(*leaf), hash(expected));
    }
    let stored = StoredTree::new(&leaves);
    assert_eq!(stored.nodes.len(), 15, "8 leaves complete 15 nodes");
    for node in &v.reference_tree.complete_subtree_hashes {
        let id = NodeId { level: node.level, index: node.index };
        assert_eq!((id.first_leaf(), id.end_leaf()), (node.start, node.end));
        assert_eq!(Some(stored.nodes[&id]), hash(&node.hash), "node {id:?}");
    }
    for root in &v.reference_tree.roots {
        let n = root.tree_size as usize;
        let expected = hash(&root.root);
        assert_eq!(Some(CompactTree::from_leaves(&leaves[..n]).root()), expected, "size {n}");
        // The same root from stored nodes, as storage computes a historical root.
        let frontier: Vec<Hash> = range_nodes(0, n as u64).map(|id| stored.nodes[&id]).collect();
        assert_eq!(Some(fold_range(&frontier)), expected, "stored root of size {n}");
        assert_eq!(Some(reference::mth(&leaves[..n])), expected, "reference root of size {n}");
    }
}

fn check_inclusion_kat(stored: &StoredTree, kat: &vectors::InclusionKat) {
    let tag = format!("inclusion ({}, {})", kat.leaf_index, kat.tree_size);
    let (index, size) = (LeafIndex(kat.leaf_index), TreeSize(kat.tree_size));
    let expected = hashes(&kat.proof).unwrap();
    let plan = inclusion_nodes(index, size).unwrap();
    let proof = stored.assemble(&plan);
    assert_eq!(proof, expected, "{tag}: assembled proof");
    let leaf = hash(&kat.leaf_hash).unwrap();
    let root = RootHash { size, hash: hash(&kat.root).unwrap() };
    assert_eq!(verify_inclusion(&leaf, index, &root, &proof), Ok(()), "{tag}");
    for (what, bad) in mutations(&proof) {
        assert!(verify_inclusion(&leaf, index, &root, &bad).is_err(), "{tag}: accepted {what}");
    }
    for (i, n) in [
        (kat.leaf_index + 1, kat.tree_size),
        (kat.leaf_index ^ 1, kat.tree_size),
        (kat.leaf_index, kat.tree_size * 2),
    ] {
        if (i, n) != (kat.leaf_index, kat.tree_size) {
            let moved = RootHash { size: TreeSize(n), hash: root.hash };
            assert!(
                verify_inclusion(&leaf, LeafIndex(i), &moved, &proof).is_err(),
                "{tag}: accepted as ({i}, {n})"
            );
        }
    }
}

fn check_consistency_kat(stored: &StoredTree, kat: &vectors::ConsistencyKat) {
    let tag = format!("consistency ({}, {})", kat.size1, kat.size2);
    let (from, to) = (TreeSize(kat.size1), TreeSize(kat.size2));
    let expected = hashes(&kat.proof).unwrap();
    let plan = consistency_nodes(from, to).unwrap();
    let proof = stored.assemble(&plan);
    assert_eq!(proof, expected, "{tag}: assembled proof");
    let old = RootHash { size: from, hash: hash(&kat.root1).unwrap() };
    let new = RootHash { size: to, hash: hash(&kat.root2).unwrap() };
    assert_eq!(verify_consistency(&old, &new, &proof), Ok(()), "{tag}");
    if from < to {
        for (what, bad) in mutations(&proof) {
            assert!(verify_consistency(&old, &new, &bad).is_err(), "{tag}: accepted {what}");
        }
        let swapped = (RootHash { hash: new.hash, ..old }, RootHash { hash: old.hash, ..new });
        assert!(
            verify_consistency(&swapped.0, &swapped.1, &proof).is_err(),
            "{tag}: swapped roots"
        );
    }
}

#[test]
fn known_answer_proofs_are_assembled_and_verified() {
    let v = vectors::rfc6962();
    let stored = StoredTree::new(&reference_leaves());
    for kat in &v.inclusion_proofs {
        check_inclusion_kat(&stored, kat);
    }
    for kat in &v.consistency_proofs {
        check_consistency_kat(&stored, kat);
    }
}

#[test]
fn every_proof_of_the_reference_tree() {
    let v = vectors::rfc6962();
    let leaves = reference_leaves();
    // Proofs at size n use only nodes complete at size n: build the store at exactly n.
    for kat in &v.derived.inclusion_proofs {
        check_inclusion_kat(&StoredTree::new(&leaves[..kat.tree_size as usize]), kat);
    }
    for kat in &v.derived.consistency_proofs {
        check_consistency_kat(&StoredTree::new(&leaves[..kat.size2 as usize]), kat);
    }
    assert_eq!(v.derived.inclusion_proofs.len(), 36);
    assert_eq!(v.derived.consistency_proofs.len(), 36);
}

#[test]
fn inclusion_probes_get_the_strict_verdict() {
    let probes = vectors::rfc6962().inclusion_probes;
    assert_eq!(probes.len(), 98);
    let mut valid = 0;
    for p in &probes {
        let verdict = match (hash(&p.leaf_hash), hash(&p.root), hashes(&p.proof)) {
            (Some(leaf), Some(root), Some(proof)) => verify_inclusion(
                &leaf,
                LeafIndex(p.leaf_index),
                &RootHash { size: TreeSize(p.tree_size), hash: root },
                &proof,
            )
            .is_ok(),
            // A strict verifier never turns a wrong-length byte string into a hash.
            _ => false,
        };
        assert_eq!(verdict, p.expect_valid_strict, "{} [{}]", p.source_file, p.desc);
        valid += usize::from(verdict);
    }
    assert_eq!(valid, 6);
}

#[test]
fn consistency_probes_get_the_strict_verdict() {
    let probes = vectors::rfc6962().consistency_probes;
    assert_eq!(probes.len(), 98);
    let mut valid = 0;
    for p in &probes {
        let verdict = match (hash(&p.root1), hash(&p.root2), hashes(&p.proof)) {
            (Some(r1), Some(r2), Some(proof)) => verify_consistency(
                &RootHash { size: TreeSize(p.size1), hash: r1 },
                &RootHash { size: TreeSize(p.size2), hash: r2 },
                &proof,
            )
            .is_ok(),
            _ => false,
        };
        assert_eq!(verdict, p.expect_valid_strict, "{} [{}]", p.source_file, p.desc);
        valid += usize::from(verdict);
    }
    // Six are valid for a lenient verifier; one of those has 15-byte "roots".
    assert_eq!(valid, 5);
}

#[test]
fn verifier_errors_are_typed() {
    let leaves = reference_leaves();
    let root = RootHash { size: TreeSize(8), hash: CompactTree::from_leaves(&leaves).root() };
    assert!(matches!(
        verify_inclusion(&leaves[0], LeafIndex(8), &root, &[]),
        Err(InclusionError::IndexOutOfRange { .. })
    ));
    assert!(matches!(
        verify_inclusion(&leaves[0], LeafIndex(0), &root, &[]),
        Err(InclusionError::WrongLength { expected: 3, actual: 0, .. })
    ));
    let empty = RootHash { size: TreeSize(0), hash: converge_core::EMPTY_ROOT };
    assert_eq!(verify_consistency(&empty, &empty, &[]), Err(ConsistencyError::FromEmpty));
    assert_eq!(verify_consistency(&empty, &root, &[]), Err(ConsistencyError::FromEmpty));
    assert!(matches!(
        verify_consistency(&root, &RootHash { size: TreeSize(4), ..root }, &[]),
        Err(ConsistencyError::FromBeyondTo { .. })
    ));
    assert_eq!(verify_consistency(&root, &root, &[]), Ok(()));
    assert_eq!(
        verify_consistency(&root, &RootHash { hash: leaves[0], ..root }, &[]),
        Err(ConsistencyError::RootMismatch)
    );
}

#[test]
fn an_inclusion_proof_does_not_authenticate_the_size() {
    // The (1, 5) path also verifies as (1, 6) against the size-5 root: sizes must come from a
    // trusted tree head. This pins the behaviour so nobody "fixes" the verifier into a false
    // sense of security.
    let leaves = reference_leaves();
    let stored = StoredTree::new(&leaves[..5]);
    let proof = stored.assemble(&inclusion_nodes(LeafIndex(1), TreeSize(5)).unwrap());
    let root5 = CompactTree::from_leaves(&leaves[..5]).root();
    let as_six = RootHash { size: TreeSize(6), hash: root5 };
    assert_eq!(verify_inclusion(&leaves[1], LeafIndex(1), &as_six, &proof), Ok(()));
}

fn valid_subtree(start: usize, end: usize) -> bool {
    start <= end && start.is_multiple_of((end - start).max(1).next_power_of_two())
}

#[test]
fn accumulated_digests_pin_the_reference_implementation() {
    let acc = vectors::rfc6962().accumulated;
    let n_max = acc.max_size;
    let d: Vec<Hash> = (0..n_max).map(|i| leaf_hash(&[i as u8])).collect();

    let mut digest = Sha256::new();
    for end in 0..=n_max {
        for start in 0..=end {
            if valid_subtree(start, end) {
                digest.update(format!("[{start}, {end}) {}\n", reference::mth(&d[start..end])));
            }
        }
    }
    assert_eq!(hex(digest), acc.subtree_hashes.expected);

    let mut digest = Sha256::new();
    for end in 0..=n_max {
        for start in 0..=end {
            if valid_subtree(start, end) {
                for index in start..end {
                    let mut line = format!("{index} [{start}, {end})");
                    for p in reference::path(index - start, &d[start..end]) {
                        let _ = write!(line, " {p}");
                    }
                    digest.update(line + "\n");
                }
            }
        }
    }
    assert_eq!(hex(digest), acc.subtree_inclusion_proofs.expected);

    let mut digest = Sha256::new();
    for n in 0..=n_max {
        for end in 0..=n {
            for start in 0..=end {
                if valid_subtree(start, end) {
                    let mut line = format!("[{start}, {end}) {n}");
                    for p in reference::subtree_proof(start, end, &d[..n]) {
                        let _ = write!(line, " {p}");
                    }
                    digest.update(line + "\n");
                }
            }
        }
    }
    assert_eq!(hex(digest), acc.subtree_consistency_proofs.expected);
}

#[test]
fn fast_implementation_equals_reference_for_every_tree_up_to_130() {
    let n_max = vectors::rfc6962().accumulated.max_size;
    let d: Vec<Hash> = (0..n_max).map(|i| leaf_hash(&[i as u8])).collect();
    for n in 1..=n_max {
        let stored = StoredTree::new(&d[..n]);
        let size = TreeSize(n as u64);
        assert_eq!(stored.tree.root(), reference::mth(&d[..n]), "root {n}");
        for i in 0..n {
            let plan = inclusion_nodes(LeafIndex(i as u64), size).unwrap();
            assert_eq!(stored.assemble(&plan), reference::path(i, &d[..n]), "path ({i}, {n})");
        }
        for m in 1..=n {
            let plan = consistency_nodes(TreeSize(m as u64), size).unwrap();
            let expected = reference::proof(m, &d[..n]);
            assert_eq!(stored.assemble(&plan), expected, "proof ({m}, {n})");
            assert_eq!(reference::subtree_proof(0, m, &d[..n]), expected, "draft = RFC ({m}, {n})");
        }
    }
}

fn hex(digest: Sha256) -> String {
    converge_core::hex::encode(&digest.finalize())
}
