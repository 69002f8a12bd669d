//! The checker: what the recorded history and the cluster's final state must satisfy.
//!
//! - every node holds byte-identical entries (equal content hashes, which cover every field)
//!   and equal tree heads;
//! - sequences are gap-free and every tree head's root recomputes from the entries;
//! - no acknowledged append is lost or moved (it is at its acknowledged sequence, with its
//!   acknowledged hash);
//! - each `append_id` is in the history at most once, and every entry was submitted;
//! - no append refused as failed was written;
//! - real-time order: an append acknowledged before another to the same context was first
//!   sent holds the lower sequence;
//! - every tree head seen during the run is the root of a prefix of the final history (so a
//!   consistency proof from it to the final head verifies: nothing was rewritten across
//!   failovers), and a consistency proof fetched from a node verifies for each context;
//! - every watcher received a gap-free, duplicate-free prefix of the final history;
//! - every entry any read returned is in the final history, unchanged (nothing seen was later
//!   gone);
//! - sessions: a client's view of a context on one node never shrinks (across that node's
//!   restarts; a wiped node is a new one), and a read on the node that just acknowledged the
//!   client's append shows that entry (read-your-writes).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use converge_core::Hash;
use converge_core::merkle::{CompactTree, RootHash, TreeSize, verify_consistency};

use super::workload::{History, Outcome};

/// One context as a node holds it at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Final {
    /// Content hash of entry `i + 1`.
    pub hashes: Vec<Hash>,
    /// Payload of entry `i + 1` (the append id that made it).
    pub payloads: Vec<String>,
    /// The node's tree head root.
    pub root: Hash,
}

/// What the checker found: empty means the run is correct.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Each violation, described.
    pub violations: Vec<String>,
    /// Acknowledged appends checked.
    pub acked: usize,
    /// Appends whose outcome was unknown, and how many of them were written.
    pub unknown: (usize, usize),
    /// Tree heads checked against the final history.
    pub heads: usize,
    /// Entries checked across all watchers.
    pub watched: usize,
    /// Session reads checked, and how many of them followed the client's own append.
    pub sessions: (usize, usize),
}

impl Verdict {
    fn violate(&mut self, what: String) {
        if self.violations.len() < 50 {
            self.violations.push(what);
        }
    }
}

/// Checks `history` against the final state of every node (`nodes[node][context]`), and the
/// consistency proofs fetched at the end (`proofs[context] = (from size, from root, proof)`).
pub(super) fn check(
    history: &Arc<History>,
    nodes: &[(String, BTreeMap<String, Final>)],
    proofs: &BTreeMap<String, (u64, Hash, Vec<Hash>)>,
) -> Verdict {
    let mut verdict = Verdict::default();
    let Some((_, reference)) = nodes.first() else {
        verdict.violate("no node could be read at the end".into());
        return verdict;
    };
    same_everywhere(&mut verdict, nodes);
    let written = trees_and_ids(&mut verdict, reference);
    appends(&mut verdict, history, reference, &written);
    real_time(&mut verdict, &history.ops.lock().expect("history"));
    heads(&mut verdict, history, reference, proofs);
    reads(&mut verdict, history, reference);
    sessions(&mut verdict, &history.reads.lock().expect("history"));
    verdict
}

type State = BTreeMap<String, Final>;

/// Every node holds the same entries and tree heads.
fn same_everywhere(verdict: &mut Verdict, nodes: &[(String, State)]) {
    let (first_name, reference) = &nodes[0];
    for (name, state) in &nodes[1..] {
        for (context, expected) in reference {
            match state.get(context) {
                Some(got) if got == expected => {}
                Some(got) => verdict.violate(format!(
                    "{context}: node {name} holds {} entries (root {}), node {first_name} {} (root {}): {}",
                    got.hashes.len(),
                    got.root.to_hex(),
                    expected.hashes.len(),
                    expected.root.to_hex(),
                    how_they_differ(&got.hashes, &expected.hashes)
                )),
                None => verdict.violate(format!("{context}: node {name} could not be read")),
            }
        }
    }
}

/// Whether one replica's entries are a prefix of the other's (one is behind: a liveness
/// failure) or they hold different entries at some sequence (diverged: a safety one).
fn how_they_differ(a: &[Hash], b: &[Hash]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!("DIVERGED: they hold different entries from sequence {}", i + 1),
        None if a.len() == b.len() => "same entries, different roots".into(),
        None => "the shorter is a prefix of the longer (a replica behind, not diverged)".into(),
    }
}

/// Trees recompute from the entries; each append id is written at most once. Returns where
/// each was written.
fn trees_and_ids<'a>(
    verdict: &mut Verdict,
    reference: &'a State,
) -> HashMap<&'a str, (&'a str, u64)> {
    let mut written: HashMap<&str, (&str, u64)> = HashMap::new();
    for (context, state) in reference {
        let root = CompactTree::from_leaves(&state.hashes).root();
        if root != state.root {
            verdict.violate(format!(
                "{context}: the tree head's root does not recompute from the entries"
            ));
        }
        for (i, payload) in state.payloads.iter().enumerate() {
            if let Some((other, seq)) =
                written.insert(payload.as_str(), (context.as_str(), i as u64 + 1))
            {
                verdict.violate(format!(
                    "append id {payload} is in the history twice: {other} #{seq} and {context} #{}",
                    i + 1
                ));
            }
        }
    }
    written
}

/// Every entry was submitted to its context; acknowledged appends are where they were
/// acknowledged; failed ones are absent.
fn appends(
    verdict: &mut Verdict,
    history: &History,
    reference: &State,
    written: &HashMap<&str, (&str, u64)>,
) {
    let ops = history.ops.lock().expect("history").clone();
    let submitted: HashMap<&str, &str> =
        ops.iter().map(|op| (op.append_id.as_str(), op.context.as_str())).collect();
    for (payload, (context, seq)) in written {
        match submitted.get(payload) {
            Some(c) if c == context => {}
            Some(c) => verdict
                .violate(format!("{payload} was submitted to {c} but is in {context} #{seq}")),
            // Appends still in flight when the run stopped are not in the history.
            None if payload.starts_with("op-") => {}
            None => verdict
                .violate(format!("{context} #{seq} holds {payload:?}, which nobody submitted")),
        }
    }
    // Acknowledged appends are where they were acknowledged; failed ones are absent.
    for op in &ops {
        let found = written.get(op.append_id.as_str());
        match &op.outcome {
            Outcome::Ok(seq, hash) => {
                verdict.acked += 1;
                let at = reference.get(&op.context).and_then(|s| {
                    usize::try_from(*seq).ok().and_then(|q| s.hashes.get(q.wrapping_sub(1)))
                });
                if at != Some(hash) {
                    verdict.violate(format!(
                        "acknowledged {} ({} #{seq}) is lost or moved (found at {found:?})",
                        op.append_id, op.context
                    ));
                }
            }
            Outcome::Failed(why) => {
                if found.is_some() {
                    verdict.violate(format!(
                        "{} failed ({why}) yet was written at {found:?}",
                        op.append_id
                    ));
                }
            }
            Outcome::Unknown(_) => {
                verdict.unknown.0 += 1;
                verdict.unknown.1 += usize::from(found.is_some());
            }
        }
    }
}

/// Real-time order per context: when an append was acknowledged before another was first
/// sent, it holds the lower sequence (appends are linearizable per context).
fn real_time(verdict: &mut Verdict, ops: &[super::workload::Op]) {
    let mut by_context: BTreeMap<&str, Vec<(&super::workload::Op, u64)>> = BTreeMap::new();
    for op in ops {
        if let Outcome::Ok(seq, _) = op.outcome {
            by_context.entry(op.context.as_str()).or_default().push((op, seq));
        }
    }
    for (context, mut acked) in by_context {
        // Sweep the appends in the order they were sent, keeping the highest sequence of
        // those acknowledged before each was sent.
        let mut done: Vec<(&super::workload::Op, u64)> = acked.clone();
        done.sort_by_key(|(op, _)| op.completed);
        acked.sort_by_key(|(op, _)| op.invoked);
        let (mut next, mut highest): (usize, Option<(&super::workload::Op, u64)>) = (0, None);
        for (op, seq) in acked {
            while let Some(&(earlier, earlier_seq)) = done.get(next)
                && earlier.completed < op.invoked
            {
                if highest.is_none_or(|(_, h)| earlier_seq > h) {
                    highest = Some((earlier, earlier_seq));
                }
                next += 1;
            }
            if let Some((earlier, earlier_seq)) = highest
                && earlier_seq >= seq
            {
                verdict.violate(format!(
                    "{context}: {} was acknowledged at #{earlier_seq} before {} was sent, which holds #{seq} (real-time order broken)",
                    earlier.append_id, op.append_id
                ));
            }
        }
    }
}

/// Heads seen during the run are roots of prefixes of the final history, and proofs from a
/// node to the final heads verify.
fn heads(
    verdict: &mut Verdict,
    history: &History,
    reference: &State,
    proofs: &BTreeMap<String, (u64, Hash, Vec<Hash>)>,
) {
    // Sorted by size per context, the prefix roots come from one pass of a growing tree.
    let mut heads = history.heads.lock().expect("history").clone();
    heads.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let mut tree: Option<(String, CompactTree)> = None;
    for (context, size, root) in heads {
        verdict.heads += 1;
        let Some(state) = reference.get(&context) else {
            verdict.violate(format!(
                "{context}: a head of size {size} was seen, but the context is gone"
            ));
            continue;
        };
        if usize::try_from(size).map_or(true, |s| s > state.hashes.len()) {
            verdict.violate(format!(
                "{context}: a head of size {size} was seen; the final history has only {}",
                state.hashes.len()
            ));
            continue;
        }
        if tree.as_ref().is_none_or(|(c, _)| *c != context) {
            tree = Some((context.clone(), CompactTree::new()));
        }
        let (_, growing) = tree.as_mut().expect("set above");
        while growing.size().0 < size {
            let next = usize::try_from(growing.size().0).expect("below the final length");
            growing.push(state.hashes[next]);
        }
        if growing.root() != root {
            verdict.violate(format!("{context}: the head of size {size} seen during the run is not a prefix of the final history (history was rewritten)"));
        }
    }
    for (context, (from, from_root, proof)) in proofs {
        let Some(state) = reference.get(context) else { continue };
        let to = state.hashes.len() as u64;
        let ok = verify_consistency(
            &RootHash { size: TreeSize(*from), hash: *from_root },
            &RootHash { size: TreeSize(to), hash: state.root },
            proof,
        )
        .is_ok();
        if !ok {
            verdict.violate(format!(
                "{context}: the consistency proof from size {from} to {to} does not verify"
            ));
        }
    }
}

/// Reads and watches saw only what stays, and watchers a gap-free, duplicate-free prefix.
fn reads(verdict: &mut Verdict, history: &History, reference: &State) {
    for (context, seq, hash) in history.seen.lock().expect("history").iter() {
        let at = reference
            .get(context)
            .and_then(|s| usize::try_from(*seq).ok().and_then(|q| s.hashes.get(q.wrapping_sub(1))));
        if at != Some(hash) {
            verdict.violate(format!(
                "{context} #{seq} was read during the run but is not in the final history"
            ));
        }
    }
    for log in history.watches.lock().expect("history").iter() {
        let Some(state) = reference.get(&log.context) else { continue };
        for (i, (seq, hash)) in log.entries.iter().enumerate() {
            verdict.watched += 1;
            if *seq != i as u64 + 1 {
                verdict.violate(format!(
                    "a watcher of {} received #{seq} as its entry {} (a gap or a duplicate, after {} resumes)",
                    log.context,
                    i + 1,
                    log.resumes
                ));
                break;
            }
            if state.hashes.get(i) != Some(hash) {
                verdict.violate(format!(
                    "a watcher of {} received #{seq} unlike the final history's",
                    log.context
                ));
                break;
            }
        }
    }
}

/// Per client, node and context: sizes never shrink from one read to a later one, and a read
/// after the client's own acknowledged append shows it.
fn sessions(verdict: &mut Verdict, reads: &[super::workload::Read]) {
    let mut sessions: BTreeMap<_, Vec<&super::workload::Read>> = BTreeMap::new();
    for read in reads {
        sessions.entry((read.client, &read.node, &read.context)).or_default().push(read);
        verdict.sessions.0 += 1;
        let Some(wrote) = read.wrote else { continue };
        verdict.sessions.1 += 1;
        if read.size < wrote {
            verdict.violate(format!(
                "{}: {} acknowledged #{wrote} to a client, then showed it size {} (read-your-writes broken)",
                read.context, read.node.0, read.size
            ));
        }
    }
    for ((_, (node, _), context), mut session) in sessions {
        session.sort_by_key(|r| r.invoked);
        let mut ended: Vec<&super::workload::Read> = session.clone();
        ended.sort_by_key(|r| r.completed);
        let (mut before, mut seen) = (0, 0);
        for read in session {
            // The largest size among reads answered before this one was sent.
            while before < ended.len() && ended[before].completed < read.invoked {
                seen = seen.max(ended[before].size);
                before += 1;
            }
            if read.size < seen {
                verdict.violate(format!(
                    "{context}: {node} showed a client size {seen}, later size {} (its view shrank)",
                    read.size
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Planted bad histories: the checker must report each.

    use std::time::{Duration, Instant};

    use super::super::workload::{Op, Read, WatchLog};
    use super::*;

    /// A stand-in content hash of entry `seq` of `context` made by `payload` (distinct for
    /// each; the checker compares hashes, it does not recompute them).
    fn hash(context: &str, seq: u64, payload: &str) -> Hash {
        converge_core::hash::leaf_hash(format!("{context}/{seq}/{payload}").as_bytes())
    }

    /// A context holding `payloads` in order.
    fn state(context: &str, payloads: &[&str]) -> Final {
        let hashes: Vec<Hash> =
            payloads.iter().enumerate().map(|(i, p)| hash(context, i as u64 + 1, p)).collect();
        Final {
            root: CompactTree::from_leaves(&hashes).root(),
            hashes,
            payloads: payloads.iter().map(|p| (*p).to_string()).collect(),
        }
    }

    /// An append of `id` to `c` sent at `t0 + sent` ms and ended at `t0 + ended` ms.
    fn op(t0: Instant, c: &str, id: &str, outcome: Outcome, sent: u64, ended: u64) -> Op {
        Op {
            context: c.into(),
            append_id: id.into(),
            outcome,
            invoked: t0 + Duration::from_millis(sent),
            completed: t0 + Duration::from_millis(ended),
        }
    }

    fn acked(c: &str, seq: u64, id: &str) -> Outcome {
        Outcome::Ok(seq, hash(c, seq, id))
    }

    /// The verdict of `ops` against every node holding `finals`.
    fn verdict(ops: Vec<Op>, finals: &[(&str, &[&str])], tweak: impl FnOnce(&History)) -> Verdict {
        let history = Arc::new(History::default());
        *history.ops.lock().unwrap() = ops;
        tweak(&history);
        let state: BTreeMap<String, Final> =
            finals.iter().map(|(c, p)| ((*c).to_string(), state(c, p))).collect();
        let nodes = vec![("n1".to_string(), state.clone()), ("n2".to_string(), state)];
        check(&history, &nodes, &BTreeMap::new())
    }

    fn reported(verdict: &Verdict, what: &str) -> bool {
        verdict.violations.iter().any(|v| v.contains(what))
    }

    #[test]
    fn a_correct_history_passes() {
        let t0 = Instant::now();
        let ops = vec![
            op(t0, "c", "op-1", acked("c", 1, "op-1"), 0, 10),
            op(t0, "c", "op-2", acked("c", 2, "op-2"), 5, 15),
            op(t0, "c", "op-3", Outcome::Unknown("timeout".into()), 20, 30),
        ];
        let v = verdict(ops, &[("c", &["op-1", "op-2", "op-3"])], |_| {});
        assert!(v.violations.is_empty(), "{:?}", v.violations);
        assert_eq!((v.acked, v.unknown), (2, (1, 1)));
    }

    #[test]
    fn lost_moved_duplicated_and_failed_but_written_appends_are_reported() {
        let t0 = Instant::now();
        let lost =
            verdict(vec![op(t0, "c", "op-1", acked("c", 1, "op-1"), 0, 1)], &[("c", &[])], |_| {});
        assert!(reported(&lost, "op-1 (c #1) is lost or moved"), "{:?}", lost.violations);
        let moved = verdict(
            vec![op(t0, "c", "op-1", acked("c", 1, "op-1"), 0, 1)],
            &[("c", &["op-9", "op-1"])],
            |_| {},
        );
        assert!(reported(&moved, "op-1 (c #1) is lost or moved"), "{:?}", moved.violations);
        let twice = verdict(
            vec![op(t0, "c", "op-1", acked("c", 1, "op-1"), 0, 1)],
            &[("c", &["op-1", "op-1"])],
            |_| {},
        );
        assert!(
            reported(&twice, "append id op-1 is in the history twice"),
            "{:?}",
            twice.violations
        );
        let failed = verdict(
            vec![op(t0, "c", "op-1", Outcome::Failed("refused".into()), 0, 1)],
            &[("c", &["op-1"])],
            |_| {},
        );
        assert!(
            reported(&failed, "op-1 failed (refused) yet was written"),
            "{:?}",
            failed.violations
        );
    }

    #[test]
    fn an_append_acknowledged_before_another_was_sent_must_hold_the_lower_sequence() {
        let t0 = Instant::now();
        // op-2 was acknowledged (at 10 ms) before op-1 was sent (at 20 ms), yet op-1 holds #1.
        let ops = vec![
            op(t0, "c", "op-2", acked("c", 2, "op-2"), 0, 10),
            op(t0, "c", "op-1", acked("c", 1, "op-1"), 20, 30),
        ];
        let v = verdict(ops, &[("c", &["op-1", "op-2"])], |_| {});
        assert!(reported(&v, "real-time order broken"), "{:?}", v.violations);
        // Overlapping appends may land in either order.
        let ops = vec![
            op(t0, "c", "op-2", acked("c", 2, "op-2"), 0, 30),
            op(t0, "c", "op-1", acked("c", 1, "op-1"), 10, 20),
        ];
        let v = verdict(ops, &[("c", &["op-1", "op-2"])], |_| {});
        assert!(v.violations.is_empty(), "{:?}", v.violations);
    }

    #[test]
    fn a_stale_or_vanished_read_a_rewritten_head_and_a_gapped_watch_are_reported() {
        let t0 = Instant::now();
        let ops = vec![op(t0, "c", "op-1", acked("c", 1, "op-1"), 0, 1)];
        let v = verdict(ops, &[("c", &["op-1"])], |history| {
            // A read saw #2, which the final history does not have.
            history.seen.lock().unwrap().push(("c".into(), 2, hash("c", 2, "op-2")));
            // A head of size 1 whose root is not the final history's prefix.
            history.heads.lock().unwrap().push(("c".into(), 1, hash("c", 1, "other")));
            // A watcher that received #2 first.
            history.watches.lock().unwrap().push(WatchLog {
                context: "c".into(),
                entries: vec![(2, hash("c", 2, "op-2"))],
                resumes: 1,
            });
        });
        assert!(
            reported(&v, "c #2 was read during the run but is not in the final history"),
            "{:?}",
            v.violations
        );
        assert!(reported(&v, "history was rewritten"), "{:?}", v.violations);
        assert!(reported(&v, "a gap or a duplicate"), "{:?}", v.violations);
    }

    #[test]
    fn a_shrinking_view_and_a_missing_own_write_are_reported() {
        let t0 = Instant::now();
        let read = |client, node: &str, incarnation, size, wrote, at: u64| Read {
            client,
            node: (node.into(), incarnation),
            context: "c".into(),
            size,
            wrote,
            invoked: t0 + Duration::from_millis(at),
            completed: t0 + Duration::from_millis(at + 1),
        };
        let ops = vec![op(t0, "c", "op-1", acked("c", 1, "op-1"), 0, 1)];
        let finals: &[(&str, &[&str])] = &[("c", &["op-1", "op-2"])];
        let with = |reads: Vec<Read>| {
            verdict(ops.clone(), finals, move |history| *history.reads.lock().unwrap() = reads)
        };
        // Another node behind, the same node after a wipe, another client: all allowed.
        let fine = with(vec![
            read(1, "n1", 0, 2, None, 0),
            read(1, "n2", 0, 1, None, 10),
            read(1, "n1", 1, 0, None, 20),
            read(2, "n1", 0, 1, Some(1), 30),
        ]);
        assert!(fine.violations.is_empty(), "{:?}", fine.violations);
        assert_eq!(fine.sessions, (4, 1));
        let shrank = with(vec![read(1, "n1", 0, 2, None, 0), read(1, "n1", 0, 1, None, 10)]);
        assert!(
            reported(&shrank, "n1 showed a client size 2, later size 1"),
            "{:?}",
            shrank.violations
        );
        let own = with(vec![read(1, "n1", 0, 1, Some(2), 0)]);
        assert!(reported(&own, "read-your-writes broken"), "{:?}", own.violations);
    }

    #[test]
    fn replicas_that_differ_are_reported() {
        let history = Arc::new(History::default());
        let nodes = vec![
            ("n1".to_string(), BTreeMap::from([("c".to_string(), state("c", &["op-1", "op-2"]))])),
            ("n2".to_string(), BTreeMap::from([("c".to_string(), state("c", &["op-1"]))])),
        ];
        let v = check(&history, &nodes, &BTreeMap::new());
        assert!(reported(&v, "node n2 holds 1 entries"), "{:?}", v.violations);
    }
    #[test]
    fn a_replica_behind_is_told_apart_from_one_that_diverged() {
        let a = state("c", &["op-1", "op-2", "op-3"]);
        let behind = state("c", &["op-1", "op-2"]);
        let diverged = state("c", &["op-1", "op-X", "op-3"]);
        let history = Arc::new(History::default());
        for (other, what) in [
            (behind, "a prefix of the longer"),
            (diverged, "DIVERGED: they hold different entries from sequence 2"),
        ] {
            let nodes = vec![
                ("n1".to_string(), BTreeMap::from([("c".to_string(), a.clone())])),
                ("n2".to_string(), BTreeMap::from([("c".to_string(), other)])),
            ];
            let v = check(&history, &nodes, &BTreeMap::new());
            assert!(reported(&v, what), "{:?}", v.violations);
        }
    }
}
