//! A run of consecutive entries of one context and the payload bytes they hold: a context's
//! live watch window (`watch.rs`) and the entries its catching-up watchers last read from
//! storage (`catch_up.rs`). Watchers copy entries out of a run by sequence.

use std::collections::VecDeque;
use std::sync::Arc;

use converge_core::{Entry, Seq};

/// What a reader found in a run.
pub(crate) enum Found {
    /// Copied this many entries that follow the reader's last one.
    Copied(usize),
    /// The entries after the reader's last one are older than the run.
    Lagged,
}

/// Consecutive entries, oldest first, and their payload bytes.
#[derive(Default)]
pub(crate) struct Run {
    entries: VecDeque<Arc<Entry>>,
    bytes: usize,
}

impl Run {
    pub(crate) fn with_capacity(entries: usize) -> Self {
        Self { entries: VecDeque::with_capacity(entries), bytes: 0 }
    }

    /// The oldest entry's sequence.
    pub(crate) fn first(&self) -> Option<Seq> {
        self.entries.front().map(|e| e.sequence())
    }

    /// The sequence the next entry would have (0 when empty).
    pub(crate) fn next(&self) -> u64 {
        self.entries.back().map_or(0, |e| e.sequence().0 + 1)
    }

    /// Adds `entry`, which follows the newest one.
    pub(crate) fn push(&mut self, entry: &Arc<Entry>) {
        self.bytes += entry.payload().len();
        self.entries.push_back(Arc::clone(entry));
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Drops the oldest entries while more than `entries_max` entries or `bytes_max` payload
    /// bytes are held, always keeping the newest `keep`.
    pub(crate) fn trim(&mut self, entries_max: usize, bytes_max: usize, keep: usize) {
        while self.entries.len() > keep
            && (self.entries.len() > entries_max || self.bytes > bytes_max)
        {
            let dropped = self.entries.pop_front().expect("longer than keep");
            self.bytes -= dropped.payload().len();
        }
    }

    /// Copies up to `max` entries and about `bytes_max` payload bytes (at least one entry)
    /// that follow `last` into `out`.
    pub(crate) fn copy_after(
        &self,
        last: Seq,
        max: usize,
        bytes_max: usize,
        out: &mut VecDeque<Arc<Entry>>,
    ) -> Found {
        let (Some(front), Some(back)) = (self.entries.front(), self.entries.back()) else {
            return Found::Copied(0);
        };
        if back.sequence() <= last {
            return Found::Copied(0);
        }
        let Some(skip) =
            last.0.checked_add(1).and_then(|next| next.checked_sub(front.sequence().0))
        else {
            return Found::Lagged;
        };
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        let (mut bytes, mut copied) = (0, 0);
        for entry in self.entries.iter().skip(skip).take(max) {
            if bytes > 0 && bytes + entry.payload().len() > bytes_max {
                break;
            }
            bytes += entry.payload().len().max(1);
            out.push_back(Arc::clone(entry));
            copied += 1;
        }
        Found::Copied(copied)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}
