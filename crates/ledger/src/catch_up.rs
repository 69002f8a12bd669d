//! Entries read from storage for the watchers of a context that are catching up, shared by
//! them.
//!
//! A watcher that starts far back, or falls out of its context's live window, reads the
//! backlog from storage page by page. Watchers that fall behind together (many watchers of
//! one busy context on a loaded machine) would each decode the same entries from the log: in
//! the fan-out bench, a thousand watchers a few seconds behind spent a third of the server's
//! CPU doing that, which put them further behind. So the context keeps the last run of
//! entries its watchers read from storage; a watcher whose next entry is in it copies from it,
//! and one that reads past its end extends it for those behind.
//!
//! Bounded by [`CATCH_UP_ENTRIES`] and [`CATCH_UP_BYTES`] (the newest page always stays), and
//! emptied when no watcher of the context is catching up. Only watches without a key filter
//! use it: a filtered page is not a run of consecutive entries.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use converge_core::{Entry, Seq};

use crate::run::{Found, Run};

/// Entries kept for watchers catching up, per context.
pub(crate) const CATCH_UP_ENTRIES: usize = 4096;

/// Payload bytes kept for watchers catching up, per context.
pub(crate) const CATCH_UP_BYTES: usize = 16 * 1024 * 1024;

/// The entries a context's catching-up watchers last read from storage.
#[derive(Default)]
pub(crate) struct CatchUp {
    run: Mutex<Run>,
    /// Watchers of the context catching up now.
    readers: AtomicUsize,
}

impl CatchUp {
    /// Copies entries after `last` that the run holds into `out` (see [`Run::copy_after`]).
    pub(crate) fn read_after(
        &self,
        last: Seq,
        max: usize,
        bytes_max: usize,
        out: &mut VecDeque<Arc<Entry>>,
    ) -> usize {
        let run = self.run.lock().unwrap_or_else(PoisonError::into_inner);
        match run.copy_after(last, max, bytes_max, out) {
            Found::Copied(n) => n,
            Found::Lagged => 0,
        }
    }

    /// Keeps `page` (consecutive entries just read from storage) for the other readers.
    pub(crate) fn keep(&self, page: &[Arc<Entry>]) {
        let Some(first) = page.first() else { return };
        let mut run = self.run.lock().unwrap_or_else(PoisonError::into_inner);
        // A page that starts within the run, or right after it, extends it; any other
        // replaces it.
        let extends = run
            .first()
            .is_some_and(|front| front <= first.sequence() && first.sequence().0 <= run.next());
        if !extends {
            run.clear();
        }
        let next = run.next();
        for entry in page.iter().filter(|e| e.sequence().0 >= next) {
            run.push(entry);
        }
        run.trim(CATCH_UP_ENTRIES, CATCH_UP_BYTES, page.len());
    }

    /// A watcher of the context begins catching up.
    pub(crate) fn reader_started(&self) {
        self.readers.fetch_add(1, Ordering::SeqCst);
    }

    /// A watcher of the context stopped catching up; the last one empties the run.
    pub(crate) fn reader_done(&self) {
        if self.readers.fetch_sub(1, Ordering::SeqCst) == 1 {
            let mut run = self.run.lock().unwrap_or_else(PoisonError::into_inner);
            if self.readers.load(Ordering::SeqCst) == 0 {
                *run = Run::default();
            }
        }
    }

    #[cfg(test)]
    fn held(&self) -> (Option<u64>, usize) {
        let run = self.run.lock().unwrap();
        (run.first().map(|s| s.0), run.len())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use converge_core::{ContextId, EntryParts, Key, LamportTime, Metadata, Timestamp};

    use super::*;

    fn entries(seqs: std::ops::RangeInclusive<u64>, payload: usize) -> Vec<Arc<Entry>> {
        seqs.map(|seq| {
            let parts = EntryParts {
                sequence: Seq(seq),
                key: Key::try_new("k").unwrap(),
                payload: Bytes::from(vec![1; payload]),
                appended_at: Timestamp(seq),
                lamport: LamportTime(seq),
                metadata: Metadata::default(),
            };
            Arc::new(Entry::seal(&ContextId::try_new("c").unwrap(), parts))
        })
        .collect()
    }

    fn read(catch_up: &CatchUp, last: u64, max: usize) -> Vec<u64> {
        let mut out = VecDeque::new();
        catch_up.read_after(Seq(last), max, usize::MAX, &mut out);
        out.iter().map(|e| e.sequence().0).collect()
    }

    #[test]
    fn readers_behind_copy_what_the_first_one_read() {
        let catch_up = CatchUp::default();
        assert!(read(&catch_up, 0, 10).is_empty());
        catch_up.keep(&entries(1..=5, 8));
        assert_eq!(read(&catch_up, 0, 10), vec![1, 2, 3, 4, 5]);
        assert_eq!(read(&catch_up, 2, 2), vec![3, 4]);
        assert!(read(&catch_up, 5, 10).is_empty(), "past the end: read storage");
        // The next page extends the run; an overlapping one adds only what is new.
        catch_up.keep(&entries(6..=8, 8));
        catch_up.keep(&entries(7..=10, 8));
        assert_eq!(read(&catch_up, 4, 100), vec![5, 6, 7, 8, 9, 10]);
        // A page elsewhere starts a new run.
        catch_up.keep(&entries(50..=52, 8));
        assert_eq!(catch_up.held(), (Some(50), 3));
        assert!(read(&catch_up, 10, 10).is_empty(), "entries 11.. are not held");
        assert!(read(&catch_up, 60, 10).is_empty());
    }

    #[test]
    fn the_run_is_bounded_and_keeps_the_newest_page() {
        let catch_up = CatchUp::default();
        for start in (1..=10_000).step_by(250) {
            catch_up.keep(&entries(start..=start + 249, 8));
        }
        assert_eq!(catch_up.held(), (Some(10_000 - CATCH_UP_ENTRIES as u64 + 1), CATCH_UP_ENTRIES));
        let big = CatchUp::default();
        big.keep(&entries(1..=2, CATCH_UP_BYTES));
        big.keep(&entries(3..=3, CATCH_UP_BYTES));
        assert_eq!(big.held(), (Some(3), 1), "older entries go first, the newest page stays");
        big.keep(&entries(4..=5, CATCH_UP_BYTES));
        assert_eq!(big.held(), (Some(4), 2));
    }

    #[test]
    fn the_last_reader_to_finish_empties_it() {
        let catch_up = CatchUp::default();
        catch_up.reader_started();
        catch_up.reader_started();
        catch_up.keep(&entries(1..=3, 8));
        catch_up.reader_done();
        assert_eq!(catch_up.held().1, 3, "another reader still behind");
        catch_up.reader_done();
        assert_eq!(catch_up.held(), (None, 0));
    }
}
