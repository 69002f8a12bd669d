//! A deliberately naive RFC 6962 implementation, written straight from the RFC's recursive
//! definitions (§2.1 MTH, §2.1.1 PATH, §2.1.2 PROOF) and the subtree consistency proof of
//! draft-ietf-plants-merkle-tree-certs. It recomputes every subtree hash it needs, so it is
//! slow and obviously right; the fast implementation is checked against it.
#![allow(clippy::many_single_char_names, reason = "names follow the RFC's notation: m, n, k, D, b")]

use converge_core::hash::{EMPTY_ROOT, Hash, node_hash};

/// The largest power of two strictly below `n` (`n ≥ 2`).
pub fn k(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// MTH(D[n]) over leaf hashes.
pub fn mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => EMPTY_ROOT,
        1 => d[0],
        n => node_hash(&mth(&d[..k(n)]), &mth(&d[k(n)..])),
    }
}

/// PATH(m, D[n]).
pub fn path(m: usize, d: &[Hash]) -> Vec<Hash> {
    let n = d.len();
    assert!(m < n);
    if n == 1 {
        return vec![];
    }
    let k = k(n);
    if m < k {
        let mut p = path(m, &d[..k]);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = path(m - k, &d[k..]);
        p.push(mth(&d[..k]));
        p
    }
}

/// PROOF(m, D[n]) for `0 < m ≤ n`.
pub fn proof(m: usize, d: &[Hash]) -> Vec<Hash> {
    assert!(0 < m && m <= d.len());
    subproof(m, d, true)
}

fn subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { vec![] } else { vec![mth(d)] };
    }
    let k = k(n);
    if m <= k {
        let mut p = subproof(m, &d[..k], b);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = subproof(m - k, &d[k..], false);
        p.push(mth(&d[..k]));
        p
    }
}

/// The draft's `SUBTREE_PROOF(start, end, D[n])`; equals PROOF(end, D[n]) when `start = 0`.
pub fn subtree_proof(start: usize, end: usize, d: &[Hash]) -> Vec<Hash> {
    if start == end {
        return vec![];
    }
    subtree_subproof(start, end, d, true)
}

fn subtree_subproof(start: usize, end: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    let n = d.len();
    if start == 0 && end == n {
        return if b { vec![] } else { vec![mth(d)] };
    }
    let k = k(n);
    if end <= k {
        let mut p = subtree_subproof(start, end, &d[..k], b);
        p.push(mth(&d[k..]));
        p
    } else if k <= start {
        let mut p = subtree_subproof(start - k, end - k, &d[k..], b);
        p.push(mth(&d[..k]));
        p
    } else {
        assert_eq!(start, 0);
        let mut p = subtree_subproof(0, end - k, &d[k..], false);
        p.push(mth(&d[..k]));
        p
    }
}
