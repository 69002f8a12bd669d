//! The head of a context: what its next append depends on, and the rules of CONTRACT §2 for
//! the fields the ledger assigns.
//!
//! [`ContextHead::stamp`] chooses the next sequence, time and Lamport time; [`ContextHead::apply`]
//! checks that an entry may follow the head (gap-free sequence, time and clock strictly
//! increasing) and extends the tree. Appends, recovery, snapshot verification and (later)
//! replication all go through `apply`, so no path can break the invariants.

use crate::entry::Entry;
use crate::hash::Hash;
use crate::lamport::{ClockOverflow, LamportClock, LamportTime};
use crate::merkle::{CompactTree, LeafIndex, NodeId, RootHash, TreeSize};
use crate::seq::{Seq, Timestamp};

/// The fields the ledger assigns to an appended entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// `previous + 1`.
    pub sequence: Seq,
    /// `max(previous + 1, now)`.
    pub appended_at: Timestamp,
    /// `max(previous, received) + 1`.
    pub lamport: LamportTime,
}

/// A context's tree head (CONTRACT §1 `TreeHead`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeHead {
    /// Size and root of the context's tree.
    pub root: RootHash,
    /// Lamport time of the latest entry (0 for an empty context).
    pub lamport: LamportTime,
}

/// The next entry cannot be stamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StampError {
    /// The context holds `2^64 − 1` entries.
    #[error("the context is full: it already holds 2^64 - 1 entries")]
    ContextFull,
    /// The latest entry's time is `u64::MAX`.
    #[error("the context's latest appended_at_ns is 2^64 - 1, so no later time exists")]
    TimeOverflow,
    /// The Lamport clock cannot move past the received time.
    #[error(transparent)]
    Clock(#[from] ClockOverflow),
}

/// An entry cannot follow the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Its sequence is not the next one.
    #[error("expected sequence {expected}, found {found}")]
    SequenceGap {
        /// The next sequence.
        expected: Seq,
        /// The entry's sequence.
        found: Seq,
    },
    /// Its time is not after the previous entry's.
    #[error(
        "entry {sequence} has appended_at_ns {found}, not after the previous entry's {previous}"
    )]
    TimeNotIncreasing {
        /// The entry's sequence.
        sequence: Seq,
        /// The previous entry's time.
        previous: Timestamp,
        /// The entry's time.
        found: Timestamp,
    },
    /// Its Lamport time is not after the previous entry's.
    #[error(
        "entry {sequence} has lamport_clock {found}, not after the previous entry's {previous}"
    )]
    ClockNotIncreasing {
        /// The entry's sequence.
        sequence: Seq,
        /// The previous entry's Lamport time.
        previous: LamportTime,
        /// The entry's Lamport time.
        found: LamportTime,
    },
}

/// A stored head does not hold together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a head at sequence {latest} must have a tree of the same size, got {tree_size}")]
pub struct HeadMismatch {
    /// The latest sequence.
    pub latest: Seq,
    /// The tree's size.
    pub tree_size: TreeSize,
}

/// The stamping half of a head: the latest sequence, time and Lamport time. Cheap to copy;
/// a writer keeps one to stamp appends before they are durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sequencer {
    latest: Seq,
    latest_appended_at: Timestamp,
    clock: LamportClock,
}

impl Sequencer {
    /// The state after an entry with these fields (or an empty context, with zeros).
    pub fn at(latest: Seq, latest_appended_at: Timestamp, latest_lamport: LamportTime) -> Self {
        Self { latest, latest_appended_at, clock: LamportClock::starting_at(latest_lamport) }
    }

    /// The latest sequence (0 when empty).
    pub fn latest(&self) -> Seq {
        self.latest
    }

    /// The latest entry's time (0 when empty).
    pub fn latest_appended_at(&self) -> Timestamp {
        self.latest_appended_at
    }

    /// The latest entry's Lamport time (0 when empty).
    pub fn latest_lamport(&self) -> LamportTime {
        self.clock.latest()
    }

    /// The fields of the next entry, appended at wall-clock time `now`, caused by a message
    /// stamped `received` if any.
    pub fn stamp(
        &self,
        now: Timestamp,
        received: Option<LamportTime>,
    ) -> Result<Stamp, StampError> {
        let sequence = self.latest.next().ok_or(StampError::ContextFull)?;
        let after_previous =
            self.latest_appended_at.0.checked_add(1).ok_or(StampError::TimeOverflow)?;
        let appended_at = Timestamp(now.0.max(after_previous));
        let lamport = self.clock.peek(received)?;
        Ok(Stamp { sequence, appended_at, lamport })
    }

    /// Checks that an entry with `stamp` may come next: sequence `latest + 1`, time and
    /// Lamport time strictly after the latest.
    pub fn check(&self, stamp: &Stamp) -> Result<(), ApplyError> {
        let sequence = stamp.sequence;
        if Some(sequence) != self.latest.next() {
            return Err(ApplyError::SequenceGap {
                expected: Seq(self.latest.0.wrapping_add(1)),
                found: sequence,
            });
        }
        if self.latest.0 > 0 && stamp.appended_at <= self.latest_appended_at {
            return Err(ApplyError::TimeNotIncreasing {
                sequence,
                previous: self.latest_appended_at,
                found: stamp.appended_at,
            });
        }
        if stamp.lamport <= self.clock.latest() {
            return Err(ApplyError::ClockNotIncreasing {
                sequence,
                previous: self.clock.latest(),
                found: stamp.lamport,
            });
        }
        Ok(())
    }

    /// Checks `stamp` and makes it the latest.
    pub fn advance(&mut self, stamp: &Stamp) -> Result<(), ApplyError> {
        self.check(stamp)?;
        *self = Self::at(stamp.sequence, stamp.appended_at, stamp.lamport);
        Ok(())
    }
}

impl Stamp {
    /// The server-assigned fields of `entry`.
    pub fn of(entry: &Entry) -> Self {
        Self {
            sequence: entry.sequence(),
            appended_at: entry.appended_at(),
            lamport: entry.lamport(),
        }
    }
}

/// What the next append to a context depends on: its [`Sequencer`] and its tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextHead {
    sequencer: Sequencer,
    tree: CompactTree,
}

impl ContextHead {
    /// The head of an empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// A head rebuilt from stored state; the tree must have one leaf per entry.
    pub fn from_parts(sequencer: Sequencer, tree: CompactTree) -> Result<Self, HeadMismatch> {
        if tree.size().0 != sequencer.latest.0 {
            return Err(HeadMismatch { latest: sequencer.latest, tree_size: tree.size() });
        }
        Ok(Self { sequencer, tree })
    }

    /// The stamping state.
    pub fn sequencer(&self) -> &Sequencer {
        &self.sequencer
    }

    /// The latest sequence (0 when empty).
    pub fn latest(&self) -> Seq {
        self.sequencer.latest
    }

    /// The context's tree.
    pub fn tree(&self) -> &CompactTree {
        &self.tree
    }

    /// The tree head.
    pub fn tree_head(&self) -> TreeHead {
        TreeHead { root: self.tree.root_hash(), lamport: self.sequencer.latest_lamport() }
    }

    /// The fields of the next entry (see [`Sequencer::stamp`]).
    pub fn stamp(
        &self,
        now: Timestamp,
        received: Option<LamportTime>,
    ) -> Result<Stamp, StampError> {
        self.sequencer.stamp(now, received)
    }

    /// Checks that `entry` may follow this head and makes it the latest, reporting every
    /// tree node it completes.
    pub fn apply(
        &mut self,
        entry: &Entry,
        completed: impl FnMut(NodeId, Hash),
    ) -> Result<LeafIndex, ApplyError> {
        let stamp = Stamp::of(entry);
        self.sequencer.check(&stamp)?;
        // `check` proved the sequence is `latest + 1`, and the tree has `latest` leaves, so
        // it has room for one more.
        let index =
            self.tree.append(entry.content_hash(), completed).expect("sequence below 2^64 - 1");
        self.sequencer = Sequencer::at(stamp.sequence, stamp.appended_at, stamp.lamport);
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::entry::EntryParts;
    use crate::validate::{ContextId, Key, Metadata};

    fn entry(stamp: Stamp) -> Entry {
        let ctx = ContextId::try_new("ctx").unwrap();
        Entry::seal(
            &ctx,
            EntryParts {
                sequence: stamp.sequence,
                key: Key::try_new("k").unwrap(),
                payload: Bytes::new(),
                appended_at: stamp.appended_at,
                lamport: stamp.lamport,
                metadata: Metadata::new(),
            },
        )
    }

    #[test]
    fn stamps_follow_the_contract() {
        let mut head = ContextHead::new();
        let first = head.stamp(Timestamp(1000), None).unwrap();
        assert_eq!(
            first,
            Stamp { sequence: Seq(1), appended_at: Timestamp(1000), lamport: LamportTime(1) }
        );
        head.apply(&entry(first), |_, _| {}).unwrap();

        // The wall clock went backwards: time still moves forward by one nanosecond.
        let second = head.stamp(Timestamp(500), Some(LamportTime(41))).unwrap();
        assert_eq!(
            second,
            Stamp { sequence: Seq(2), appended_at: Timestamp(1001), lamport: LamportTime(42) }
        );
        head.apply(&entry(second), |_, _| {}).unwrap();
        assert_eq!(head.tree_head().lamport, LamportTime(42));
        assert_eq!(head.tree().size(), TreeSize(2));
    }

    #[test]
    fn apply_refuses_what_breaks_an_invariant() {
        let mut head = ContextHead::new();
        let first = head.stamp(Timestamp(10), None).unwrap();
        head.apply(&entry(first), |_, _| {}).unwrap();
        let gap = Stamp { sequence: Seq(3), appended_at: Timestamp(20), lamport: LamportTime(5) };
        assert!(matches!(head.apply(&entry(gap), |_, _| {}), Err(ApplyError::SequenceGap { .. })));
        let same_time =
            Stamp { sequence: Seq(2), appended_at: Timestamp(10), lamport: LamportTime(5) };
        assert!(matches!(
            head.apply(&entry(same_time), |_, _| {}),
            Err(ApplyError::TimeNotIncreasing { .. })
        ));
        let old_clock =
            Stamp { sequence: Seq(2), appended_at: Timestamp(11), lamport: LamportTime(1) };
        assert!(matches!(
            head.apply(&entry(old_clock), |_, _| {}),
            Err(ApplyError::ClockNotIncreasing { .. })
        ));
        assert_eq!(head.latest(), Seq(1), "a refused entry changes nothing");
    }

    #[test]
    fn overflow_is_reported() {
        let full = ContextHead::from_parts(
            Sequencer::at(Seq(3), Timestamp(u64::MAX), LamportTime(3)),
            CompactTree::from_leaves(&[Hash::default(); 3]),
        )
        .unwrap();
        assert_eq!(full.stamp(Timestamp(0), None), Err(StampError::TimeOverflow));
        let mismatch = ContextHead::from_parts(
            Sequencer::at(Seq(2), Timestamp(0), LamportTime(0)),
            CompactTree::new(),
        );
        assert_eq!(mismatch, Err(HeadMismatch { latest: Seq(2), tree_size: TreeSize(0) }));
    }
}
