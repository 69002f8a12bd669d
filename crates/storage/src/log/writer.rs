//! The log writer thread: group commit, segment rotation, and poisoning on failure.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info};

use super::queue::{Item, Position};
use super::segment::{self, Digest, SEGMENT_HEADER_BYTES, SegmentHeader};
use super::{DiskLog, LogPoint, sync_dir};
use crate::error::{Error, Result};
use crate::record::{self, Header, RecordKind, Seal};

/// The segment being written.
pub(super) struct Active {
    pub(super) number: u32,
    pub(super) path: PathBuf,
    pub(super) file: Arc<File>,
    /// Bytes in the file (header and records).
    pub(super) len: u64,
    /// The LSN of the last record written, or the one before the first.
    pub(super) last_lsn: u64,
    pub(super) digest: Digest,
}

/// Creates segment `number` with `header`, durably: the file and its directory are fsynced
/// before any record goes into it.
pub(super) fn create_segment(log: &DiskLog, header: &SegmentHeader) -> Result<Active> {
    let path = log.dir.join(segment::file_name(header.number));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::io("creating", &path, e))?;
    file.write_all_at(&header.encode(), 0).map_err(|e| Error::io("writing", &path, e))?;
    file.sync_all().map_err(|e| Error::io("fsyncing", &path, e))?;
    sync_dir(&log.dir)?;
    let file = Arc::new(file);
    log.register_file(header.number, Arc::clone(&file));
    Ok(Active {
        number: header.number,
        path,
        file,
        len: SEGMENT_HEADER_BYTES as u64,
        last_lsn: header.first_lsn - 1,
        digest: Digest::default(),
    })
}

/// Seals `active` and starts the next segment.
pub(super) fn rotate(log: &DiskLog, active: &mut Active) -> Result<()> {
    let seal = Seal {
        records: active.digest.records(),
        bytes: active.len,
        digest: active.digest.finish(),
    };
    let mut bytes = Vec::with_capacity(record::SEAL_RECORD_BYTES);
    // A seal repeats the LSN of the segment's last record: LSNs number data records only.
    let header =
        Header { kind: RecordKind::Seal, flags: 0, group: 0, term: 0, lsn: active.last_lsn };
    record::encode(&mut bytes, &header, |b| record::encode_seal_body(b, &seal));
    active
        .file
        .write_all_at(&bytes, active.len)
        .map_err(|e| Error::io("sealing", &active.path, e))?;
    log.faults.before_sync().map_err(|e| Error::io("fsyncing", &active.path, e))?;
    active.file.sync_data().map_err(|e| Error::io("fsyncing", &active.path, e))?;
    info!(sealed = %active.path.display(), records = seal.records, bytes = seal.bytes, "segment sealed");
    start_next(log, active, seal)
}

/// Creates the segment after the sealed `active`, chained to its `seal`.
pub(super) fn start_next(log: &DiskLog, active: &mut Active, seal: Seal) -> Result<()> {
    let next = SegmentHeader {
        number: active.number + 1,
        first_lsn: active.last_lsn + 1,
        node: log.node,
        previous: seal,
    };
    *active = create_segment(log, &next)?;
    Ok(())
}

/// Writes one group-commit batch; returns the offset it was written at.
fn write_batch(log: &DiskLog, active: &mut Active, buf: &[u8], items: &[Item]) -> Result<u64> {
    if active.len + buf.len() as u64 > log.segment_bytes && active.digest.records() > 0 {
        rotate(log, active)?;
    }
    let offset = active.len;
    log.faults.before_write().map_err(|e| Error::io("writing", &active.path, e))?;
    active.file.write_all_at(buf, offset).map_err(|e| Error::io("writing", &active.path, e))?;
    for item in items {
        active.digest.add(&buf[item.start..item.start + item.len]);
    }
    active.len += buf.len() as u64;
    if let Some(last) = items.last() {
        active.last_lsn = last.lsn;
    }
    if log.durability.syncs() {
        let started = Instant::now();
        log.faults.before_sync().map_err(|e| Error::io("fsyncing", &active.path, e))?;
        active.file.sync_data().map_err(|e| Error::io("fsyncing", &active.path, e))?;
        log.stats.record_sync(started.elapsed());
    }
    log.stats.record_batch(items.len(), buf.len());
    Ok(offset)
}

/// The writer loop: take everything queued, write it, fsync once, report, repeat.
///
/// Appenders that wait for their fsync come back with their next append only after it
/// completes. If the writer started its next batch at once it would catch the first one or two
/// of them and leave the rest for the fsync after, halving the batch. So when fewer records
/// are queued than the last batch held, it lingers until that many are queued — at most half
/// an fsync, and never more than the configured `linger_max` — as the `commit_delay` of
/// `PostgreSQL` does. A single appender (a batch of one) never waits.
pub(super) fn run(log: &DiskLog, mut active: Active) {
    let mut spare_buf = Vec::new();
    let mut spare_items = Vec::new();
    let mut previous = 0;
    let mut last_sync = Duration::ZERO;
    loop {
        let (mut buf, mut items, poisoned) = {
            let mut q = log.lock_queue();
            while q.items.is_empty() && !q.closed {
                q.writer_idle = true;
                q = log.wake.wait(q).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            q.writer_idle = false;
            if q.items.is_empty() {
                break;
            }
            let linger = (last_sync / 2).min(log.linger_max);
            if previous > 1
                && q.items.len() < previous
                && !linger.is_zero()
                && log.durability.syncs()
            {
                let deadline = Instant::now() + linger;
                q.linger_target = previous;
                while q.linger_target > 0 && !q.closed {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    q = log
                        .wake
                        .wait_timeout(q, left)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0;
                }
                q.linger_target = 0;
            }
            let buf = std::mem::replace(&mut q.buf, std::mem::take(&mut spare_buf));
            let items = std::mem::replace(&mut q.items, std::mem::take(&mut spare_items));
            (buf, items, q.poisoned.clone())
        };
        previous = items.len();
        let started = Instant::now();
        let outcome = match poisoned {
            Some(cause) => Err(cause),
            None => write_batch(log, &mut active, &buf, &items),
        };
        last_sync = started.elapsed();
        match outcome {
            Ok(offset) => complete(log, &active, offset, &items),
            Err(err) => fail(log, err, &items),
        }
        buf.clear();
        items.clear();
        spare_buf = buf;
        spare_items = items;
    }
}

fn complete(log: &DiskLog, active: &Active, offset: u64, items: &[Item]) {
    let position = |item: &Item| Position {
        segment: active.number,
        // Offsets fit u32: segments are capped at 1 GiB plus one record.
        offset: u32::try_from(offset + item.start as u64).expect("segment offsets fit u32"),
        len: u32::try_from(item.len).expect("records are smaller than 4 GiB"),
    };
    // Consecutive records of one sink (an atomic batch, or one context's burst) complete in
    // one call.
    let mut run: Vec<(u64, Position)> = Vec::new();
    let mut i = 0;
    while i < items.len() {
        let Some(sink) = &items[i].sink else {
            i += 1;
            continue;
        };
        run.clear();
        while let Some(item) =
            items.get(i).filter(|it| it.sink.as_ref().is_some_and(|s| Arc::ptr_eq(s, sink)))
        {
            run.push((item.lsn, position(item)));
            i += 1;
        }
        if let [(lsn, p)] = run[..] {
            sink.durable(lsn, p);
        } else {
            sink.durable_many(&run);
        }
    }
    // Published after every sink has run, so whoever reads the durable point knows those
    // records are in the in-memory index.
    let end = u32::try_from(active.len).expect("segment offsets fit u32");
    log.set_durable(LogPoint { lsn: active.last_lsn, segment: active.number, offset: end });
}

fn fail(log: &DiskLog, err: Error, items: &[Item]) {
    let cause = match err {
        Error::Poisoned { .. } => err,
        other => {
            error!(error = %other, "log write failed; poisoning the store until it is reopened");
            Error::Poisoned { cause: Arc::new(other) }
        }
    };
    log.lock_queue().poisoned.get_or_insert_with(|| cause.clone());
    for item in items {
        if let Some(sink) = &item.sink {
            sink.failed(&cause);
        }
    }
}
