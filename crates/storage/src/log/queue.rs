//! The group-commit queue between appenders and the log writer.
//!
//! Appenders encode their records straight into the queue's buffer (one copy of the payload),
//! taking the next LSNs as they go; the writer swaps the whole buffer out, writes it with one
//! `write` and one `fdatasync`, and reports every record's position. Everything queued while
//! the previous fsync ran goes into the next one, so concurrent appends share fsyncs and
//! throughput grows with concurrency.

use std::sync::Arc;

use crate::error::Error;
use crate::record::{self, Header, RecordKind};

/// Where a record is stored: its segment, its offset there, and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    /// Segment number (memory mode: chunk number).
    pub segment: u32,
    /// Byte offset of the record in the segment.
    pub offset: u32,
    /// Length of the record in bytes.
    pub len: u32,
}

/// Told when a record it queued is durable, or that it never will be.
pub trait LogSink: Send + Sync {
    /// The record with `lsn` is durable at `position`. Called in LSN order, from the writer.
    fn durable(&self, lsn: u64, position: Position);
    /// Several consecutive records of this sink are durable (one call instead of many, so a
    /// sink can take its lock once).
    fn durable_many(&self, records: &[(u64, Position)]) {
        for &(lsn, position) in records {
            self.durable(lsn, position);
        }
    }
    /// The record will never be durable (the log is poisoned or closing).
    fn failed(&self, error: &Error);
}

/// A queued record.
pub(super) struct Item {
    pub(super) start: usize,
    pub(super) len: usize,
    pub(super) lsn: u64,
    pub(super) sink: Option<Arc<dyn LogSink>>,
}

/// Records waiting for the writer.
#[derive(Default)]
pub(super) struct Queue {
    pub(super) buf: Vec<u8>,
    pub(super) items: Vec<Item>,
    pub(super) next_lsn: u64,
    pub(super) closed: bool,
    pub(super) poisoned: Option<Error>,
    /// The writer is asleep waiting for records; the next appender must wake it. Appenders
    /// skip the wake-up otherwise (it is a system call).
    pub(super) writer_idle: bool,
    /// The writer is lingering until this many records are queued (0: it is not).
    pub(super) linger_target: usize,
}

impl Queue {
    /// Whether the appender that just queued must wake the writer (which then stops waiting).
    pub(super) fn take_wake(&mut self) -> bool {
        let lingered_enough = self.linger_target > 0 && self.items.len() >= self.linger_target;
        if self.writer_idle || lingered_enough {
            self.writer_idle = false;
            self.linger_target = 0;
            true
        } else {
            false
        }
    }
}

/// Encodes records into the queue; handed to the closure passed to `DiskLog::append`.
pub struct RecordSink<'a> {
    pub(super) queue: &'a mut Queue,
}

impl RecordSink<'_> {
    /// Queues one record whose body `body` writes; `sink` hears when it is durable. Returns
    /// the record's LSN.
    pub fn push(
        &mut self,
        kind: RecordKind,
        flags: u16,
        body: impl FnOnce(&mut Vec<u8>),
        sink: Option<Arc<dyn LogSink>>,
    ) -> u64 {
        let q = &mut *self.queue;
        if q.buf.is_empty() {
            // Room for the batch record the writer puts first (see `record`).
            q.buf.resize(record::BATCH_RECORD_BYTES, 0);
        }
        let lsn = q.next_lsn;
        assert!(q.items.last().is_none_or(|last| last.lsn + 1 == lsn), "queued LSNs have no gaps");
        q.next_lsn += 1;
        let start = q.buf.len();
        let header = Header { kind, flags, group: 0, term: 0, lsn };
        let len = record::encode(&mut q.buf, &header, body);
        assert_eq!(start + len, q.buf.len(), "a record is exactly the bytes it added");
        q.items.push(Item { start, len, lsn, sink });
        lsn
    }

    /// The LSN the next record will get.
    pub fn next_lsn(&self) -> u64 {
        self.queue.next_lsn
    }
}
