//! Positions and times of entries within one context: [`Seq`] and [`Timestamp`].

use std::fmt;

use crate::merkle::LeafIndex;

/// The position of an entry in its context: `1, 2, 3, …` with no gaps. `Seq(0)` means "before
/// the first entry" (an empty context's latest sequence, or "from the start" in a request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Seq(pub u64);

impl Seq {
    /// The sequence of a context's first entry.
    pub const FIRST: Self = Self(1);

    /// The sequence after this one, or `None` at `u64::MAX`.
    pub fn next(self) -> Option<Self> {
        self.0.checked_add(1).map(Self)
    }

    /// The Merkle leaf index of the entry with this sequence (`sequence − 1`), or `None` for
    /// `Seq(0)`, which names no entry.
    pub fn leaf_index(self) -> Option<LeafIndex> {
        self.0.checked_sub(1).map(LeafIndex)
    }

    /// The sequence of the entry at a Merkle leaf index (`index + 1`).
    pub fn from_leaf_index(index: LeafIndex) -> Option<Self> {
        index.0.checked_add(1).map(Self)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Wall-clock time in nanoseconds since the Unix epoch. The core never reads a clock: the
/// shell takes the time once per append and passes it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Nanoseconds since the Unix epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_and_leaf_index_are_off_by_one() {
        assert_eq!(Seq(0).leaf_index(), None);
        assert_eq!(Seq::FIRST.leaf_index(), Some(LeafIndex(0)));
        assert_eq!(Seq::from_leaf_index(LeafIndex(41)), Some(Seq(42)));
        assert_eq!(Seq::from_leaf_index(LeafIndex(u64::MAX)), None);
        assert_eq!(Seq(u64::MAX).next(), None);
    }
}
