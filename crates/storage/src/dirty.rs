//! Contexts holding entries only memory holds ("dirty"), counted and bounded.
//!
//! A dirty context cannot be evicted until a checkpoint writes it to the index, so when appends
//! spread over more contexts than the checkpointer keeps up with, dirty contexts pile up past
//! the memory budget (and the next checkpoint grows with them). The count here triggers a
//! checkpoint, and a writer about to dirty one more context past the bound waits, through
//! [`Dirty::when_room`], until the next checkpoint begins: appends to new contexts then go at
//! the pace the checkpointer writes them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// Called once there is room (or the store closes).
pub(crate) type Waiter = Box<dyn FnOnce() + Send>;

#[derive(Default)]
pub(crate) struct Dirty {
    /// Contexts dirtied since the last checkpoint began (a context dirtied again after a
    /// checkpoint counts again; a trigger and a bound, not an exact count).
    count: AtomicU64,
    /// Writers waiting for the next checkpoint. The count is reset and the waiters taken
    /// under this lock, so a writer that saw the count full and queued cannot miss the reset.
    waiting: Mutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    waiters: Vec<Waiter>,
    /// No checkpoint will come: nobody waits any more.
    shut: bool,
}

impl Dirty {
    /// A context came to hold entries only memory holds.
    pub(crate) fn dirtied(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Calls `done` now if fewer than `max` contexts were dirtied since the last checkpoint
    /// began, else when the next one begins (or [`Dirty::shut`] runs).
    pub(crate) fn when_room(&self, max: u64, done: Waiter) {
        let mut waiting = self.lock();
        if waiting.shut || self.count() < max {
            drop(waiting);
            done();
        } else {
            waiting.waiters.push(done);
        }
    }

    /// A checkpoint begins: everything dirtied so far is in it. Lets the waiters go.
    pub(crate) fn checkpoint_begins(&self) {
        self.release(|_| self.count.store(0, Ordering::Relaxed));
    }

    /// No checkpoint may come (the store closes, or its log failed): lets the waiters go, to
    /// meet the store's own refusal, and nobody waits from now on.
    pub(crate) fn shut(&self) {
        self.release(|waiting| waiting.shut = true);
    }

    /// Applies `change` and takes the waiters under the lock, then lets them go outside it.
    fn release(&self, change: impl FnOnce(&mut Waiting)) {
        let waiters = {
            let mut waiting = self.lock();
            change(&mut waiting);
            std::mem::take(&mut waiting.waiters)
        };
        for done in waiters {
            done();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    fn counter() -> (Arc<AtomicUsize>, impl Fn() -> Waiter) {
        let called = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&called);
        (called, move || {
            let c = Arc::clone(&c);
            Box::new(move || {
                c.fetch_add(1, Ordering::SeqCst);
            })
        })
    }

    #[test]
    fn a_writer_waits_only_when_the_bound_is_reached_and_goes_when_a_checkpoint_begins() {
        let dirty = Dirty::default();
        let (called, waiter) = counter();
        dirty.dirtied();
        dirty.when_room(2, waiter());
        assert_eq!(called.load(Ordering::SeqCst), 1, "below the bound: at once");
        dirty.dirtied();
        dirty.when_room(2, waiter());
        dirty.when_room(2, waiter());
        assert_eq!(called.load(Ordering::SeqCst), 1, "at the bound: waits");
        dirty.checkpoint_begins();
        assert_eq!(called.load(Ordering::SeqCst), 3);
        assert_eq!(dirty.count(), 0);
        dirty.when_room(2, waiter());
        assert_eq!(called.load(Ordering::SeqCst), 4, "after the checkpoint began: room again");
    }

    #[test]
    fn shut_lets_waiters_go_and_nobody_waits_after_it() {
        let dirty = Dirty::default();
        let (called, waiter) = counter();
        dirty.dirtied();
        dirty.when_room(1, waiter());
        assert_eq!(called.load(Ordering::SeqCst), 0);
        dirty.shut();
        assert_eq!(called.load(Ordering::SeqCst), 1);
        dirty.when_room(1, waiter());
        assert_eq!(called.load(Ordering::SeqCst), 2, "the count is still full, but shut");
    }
}
