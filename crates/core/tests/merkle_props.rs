//! Property tests: the fast tree and proofs agree with the naive reference implementation on
//! random trees of up to 2^16 leaves, proofs verify, and any damage to a proof is rejected.
#![allow(clippy::cast_possible_truncation, reason = "test sizes and indices are small")]

mod common;

use common::{StoredTree, leaves, reference};
use converge_core::hash::Hash;
use converge_core::merkle::{
    CompactTree, LeafIndex, RootHash, TreeSize, consistency_nodes, inclusion_nodes, root_of_leaves,
    verify_consistency, verify_inclusion,
};
use proptest::prelude::*;

const SIZE_MAX: usize = 1 << 16;

/// The leaves of the largest tree, built once; each case takes a prefix.
fn all_leaves() -> &'static [Hash] {
    static LEAVES: std::sync::OnceLock<Vec<Hash>> = std::sync::OnceLock::new();
    LEAVES.get_or_init(|| leaves(SIZE_MAX))
}

/// Sizes biased towards the interesting ones: tiny, powers of two and their neighbours, and
/// anything up to 2^16.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        1..=20usize,
        (0..=16u32, -1..=1isize)
            .prop_map(|(b, delta)| ((1usize << b).saturating_add_signed(delta)).clamp(1, SIZE_MAX)),
        1..=SIZE_MAX,
    ]
}

#[derive(Debug, Clone)]
enum Damage {
    FlipBit { element: usize, bit: u8 },
    Drop { element: usize },
    Insert { element: usize, hash: [u8; 32] },
    Swap { element: usize },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 0..=255u8).prop_map(|(element, bit)| Damage::FlipBit { element, bit }),
        any::<usize>().prop_map(|element| Damage::Drop { element }),
        (any::<usize>(), any::<[u8; 32]>())
            .prop_map(|(element, hash)| Damage::Insert { element, hash }),
        any::<usize>().prop_map(|element| Damage::Swap { element }),
    ]
}

/// Applies `damage`, or returns `None` if it would leave the proof unchanged.
fn apply(proof: &[Hash], damage: &Damage) -> Option<Vec<Hash>> {
    let mut p = proof.to_vec();
    match *damage {
        Damage::FlipBit { element, bit } => {
            let e = element.checked_rem(p.len())?;
            let mut bytes = *p[e].as_bytes();
            bytes[usize::from(bit / 8)] ^= 1 << (bit % 8);
            p[e] = Hash::from_bytes(bytes);
        }
        Damage::Drop { element } => {
            let e = element.checked_rem(p.len())?;
            p.remove(e);
        }
        Damage::Insert { element, hash } => {
            p.insert(element % (p.len() + 1), Hash::from_bytes(hash));
        }
        Damage::Swap { element } => {
            if p.len() < 2 {
                return None;
            }
            let e = element % (p.len() - 1);
            if p[e] == p[e + 1] {
                return None;
            }
            p.swap(e, e + 1);
        }
    }
    Some(p)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn roots_match_the_reference(n in size()) {
        let d = &all_leaves()[..n];
        let expected = reference::mth(d);
        prop_assert_eq!(root_of_leaves(d), expected);
        let stored = StoredTree::new(d);
        prop_assert_eq!(stored.tree.root(), expected);
        // A tree rebuilt from its frontier has the same root and keeps growing correctly.
        let mut rebuilt = CompactTree::from_frontier(stored.tree.size(), stored.tree.frontier().to_vec()).unwrap();
        prop_assert_eq!(rebuilt.root(), expected);
        if n < SIZE_MAX {
            rebuilt.push(all_leaves()[n]);
            prop_assert_eq!(rebuilt.root(), reference::mth(&all_leaves()[..=n]));
        }
    }

    #[test]
    fn inclusion_proofs_match_verify_and_resist_damage(
        n in size(), i in any::<prop::sample::Index>(), damage in damage(),
    ) {
        let d = &all_leaves()[..n];
        let i = i.index(n);
        let stored = StoredTree::new(d);
        let proof = stored.assemble(&inclusion_nodes(LeafIndex(i as u64), TreeSize(n as u64)).unwrap());
        prop_assert_eq!(&proof, &reference::path(i, d));
        let root = RootHash { size: TreeSize(n as u64), hash: stored.tree.root() };
        prop_assert_eq!(verify_inclusion(&d[i], LeafIndex(i as u64), &root, &proof), Ok(()));
        if let Some(bad) = apply(&proof, &damage) {
            prop_assert!(verify_inclusion(&d[i], LeafIndex(i as u64), &root, &bad).is_err());
        }
        // Another leaf at the same index never verifies.
        let other = d[(i + 1) % n];
        if other != d[i] {
            prop_assert!(verify_inclusion(&other, LeafIndex(i as u64), &root, &proof).is_err());
        }
    }

    #[test]
    fn consistency_proofs_match_verify_and_resist_damage(
        n in size(), m in any::<prop::sample::Index>(), damage in damage(),
    ) {
        let d = &all_leaves()[..n];
        let m = m.index(n) + 1;
        let stored = StoredTree::new(d);
        let plan = consistency_nodes(TreeSize(m as u64), TreeSize(n as u64)).unwrap();
        let proof = stored.assemble(&plan);
        prop_assert_eq!(&proof, &reference::proof(m, d));
        let old = RootHash { size: TreeSize(m as u64), hash: reference::mth(&d[..m]) };
        let new = RootHash { size: TreeSize(n as u64), hash: stored.tree.root() };
        prop_assert_eq!(verify_consistency(&old, &new, &proof), Ok(()));
        if let Some(bad) = apply(&proof, &damage) {
            prop_assert!(verify_consistency(&old, &new, &bad).is_err());
        }
        if m < n {
            // A different old tree of the same size is not a prefix.
            let mut forged = d[..m].to_vec();
            forged[m - 1] = all_leaves()[SIZE_MAX - 1 - (m % 7)];
            if forged[m - 1] != d[m - 1] {
                let forged_root = RootHash { size: old.size, hash: root_of_leaves(&forged) };
                prop_assert!(verify_consistency(&forged_root, &new, &proof).is_err());
            }
        }
    }
}
