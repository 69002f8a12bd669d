//! The open segment files readers use: at most [`OPEN_SEGMENTS_MAX`] at once.
//!
//! A ledger may hold thousands of segments; keeping every one a reader ever touched open
//! would run the process out of descriptors. Files are opened on first use and the least
//! recently used is closed when the cache is full (a reader that still holds it keeps it open
//! until it is done). The writer keeps its own handle on the segment it appends to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::vfs::VfsFile;

/// The most segment files the cache keeps open. Reads mostly touch the newest segments, and
/// the rest of the process (sockets, the index) needs descriptors too.
pub const OPEN_SEGMENTS_MAX: usize = 64;

#[derive(Default)]
struct Entries {
    files: HashMap<u32, (Arc<dyn VfsFile>, u64)>,
    tick: u64,
}

/// The cache.
#[derive(Default)]
pub(super) struct OpenFiles {
    entries: Mutex<Entries>,
}

impl OpenFiles {
    /// Segment `number`'s file, if it is open.
    pub(super) fn get(&self, number: u32) -> Option<Arc<dyn VfsFile>> {
        let mut entries = self.lock();
        entries.tick += 1;
        let tick = entries.tick;
        let (file, used) = entries.files.get_mut(&number)?;
        *used = tick;
        Some(Arc::clone(file))
    }

    /// Keeps `file` open as segment `number`, closing the least recently used beyond the cap.
    pub(super) fn insert(&self, number: u32, file: Arc<dyn VfsFile>) {
        let mut entries = self.lock();
        entries.tick += 1;
        let tick = entries.tick;
        entries.files.insert(number, (file, tick));
        while entries.files.len() > OPEN_SEGMENTS_MAX {
            let oldest = entries.files.iter().min_by_key(|(_, (_, used))| *used).map(|(n, _)| *n);
            if let Some(oldest) = oldest {
                entries.files.remove(&oldest);
            }
        }
        debug_assert!(entries.files.len() <= OPEN_SEGMENTS_MAX);
    }

    /// Files open now.
    pub(super) fn len(&self) -> usize {
        self.lock().files.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
