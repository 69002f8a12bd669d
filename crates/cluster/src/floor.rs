//! Reads after an unclean restart: a node's view of a context never shrinks (CONTRACT §5).
//!
//! A node shows an applied entry once its ledger has written it, without waiting for the
//! ledger's own fsync: the shard's Raft log, fsynced on a majority, is the durable copy, and
//! after a restart the node applies again what its ledger lost. Until it has, though, a power
//! cut that took the ledger's last writes would let the node show a context smaller than it
//! showed before the cut.
//!
//! So after an unclean shutdown each shard's reads wait for its **floor**: the last index of
//! the shard's Raft log when the node opened. Everything the node showed before was in that
//! log on disk (the state machine shows an entry only once the log has flushed it), so once
//! the shard has applied up to the floor the node shows at least what it showed before. A new
//! leader may cut uncommitted entries from the end of the log; what it cuts was never shown,
//! so the floor then falls to where the log ends. Once reached, a shard's floor is gone for
//! good. A clean shutdown made the ledger durable, so it leaves no floor.

use std::sync::{Mutex, PoisonError};

/// Per shard, the Raft log index its reads wait for, until reached.
pub(crate) struct Floors(Vec<Mutex<Option<u64>>>);

impl Floors {
    /// The floors of a node whose shards' Raft logs end at `last_indexes` (after an unclean
    /// shutdown), or none (after a clean one).
    pub(crate) fn new(last_indexes: impl IntoIterator<Item = Option<u64>>, unclean: bool) -> Self {
        Self(last_indexes.into_iter().map(|last| Mutex::new(last.filter(|_| unclean))).collect())
    }

    /// The index `shard`'s reads still wait for, given how far it has applied and where its
    /// log ends now; `None` once the floor is reached (and from then on).
    pub(crate) fn waiting(
        &self,
        shard: usize,
        applied: Option<u64>,
        log_end: Option<u64>,
    ) -> Option<u64> {
        let mut floor = self.0.get(shard)?.lock().unwrap_or_else(PoisonError::into_inner);
        let needed = (*floor)?.min(log_end.unwrap_or(0));
        if log_end.is_none() || applied.is_some_and(|applied| applied >= needed) {
            *floor = None;
            return None;
        }
        Some(needed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_shutdown_leaves_no_floor() {
        let floors = Floors::new([Some(10), None], false);
        assert_eq!(floors.waiting(0, None, Some(10)), None);
        assert_eq!(floors.waiting(1, None, None), None);
    }

    #[test]
    fn reads_wait_until_the_shard_applied_as_far_as_its_log_reached_at_the_restart() {
        let floors = Floors::new([Some(10)], true);
        assert_eq!(floors.waiting(0, None, Some(10)), Some(10));
        assert_eq!(floors.waiting(0, Some(9), Some(12)), Some(10));
        assert_eq!(floors.waiting(0, Some(10), Some(12)), None);
    }

    #[test]
    fn a_reached_floor_stays_reached() {
        let floors = Floors::new([Some(10)], true);
        assert_eq!(floors.waiting(0, Some(11), Some(11)), None);
        assert_eq!(floors.waiting(0, Some(3), Some(20)), None, "nothing brings a floor back");
    }

    #[test]
    fn a_log_cut_below_the_floor_lowers_it() {
        // Entries 8..=10 were never committed: a new leader cut them and wrote its own 8.
        let floors = Floors::new([Some(10)], true);
        assert_eq!(floors.waiting(0, Some(6), Some(8)), Some(8));
        assert_eq!(floors.waiting(0, Some(8), Some(8)), None);
    }

    #[test]
    fn an_empty_log_waits_for_nothing() {
        let floors = Floors::new([None, Some(3)], true);
        assert_eq!(floors.waiting(0, None, None), None);
        assert_eq!(floors.waiting(1, None, None), None, "a log with nothing left showed nothing");
    }

    #[test]
    fn a_shard_beyond_the_floors_waits_for_nothing() {
        let floors = Floors::new([Some(4)], true);
        assert_eq!(floors.waiting(7, None, None), None);
    }
}
