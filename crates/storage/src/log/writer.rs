//! The log writer thread: group commit, segment rotation, and poisoning on failure.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use tracing::info;

use super::queue::{Item, Position};
use super::segment::{self, Digest, SEGMENT_HEADER_BYTES, SegmentHeader};
use super::{DiskLog, LogPoint, sync_dir};
use crate::error::{Error, Result};
use crate::record::{self, Header, RecordKind, Seal};
use crate::vfs::{OpenMode, VfsFile};

/// The segment being written.
pub(super) struct Active {
    pub(super) number: u32,
    pub(super) path: PathBuf,
    pub(super) file: Arc<dyn VfsFile>,
    /// Bytes of header and records: the next batch goes here.
    pub(super) len: u64,
    /// The file's length: zeros (see [`extend_ahead`]) follow the records up to here.
    pub(super) file_len: u64,
    /// The LSN of the last record written, or the one before the first.
    pub(super) last_lsn: u64,
    pub(super) digest: Digest,
}

/// Creates segment `number` with `header`, durably: the file and its directory are fsynced
/// before any record goes into it.
pub(super) fn create_segment(log: &DiskLog, header: &SegmentHeader) -> Result<Active> {
    let path = log.dir.join(segment::file_name(header.number));
    let file =
        log.vfs.open(&path, OpenMode::CreateNew).map_err(|e| Error::io("creating", &path, e))?;
    file.write_all_at(&header.encode(), 0).map_err(|e| Error::io("writing", &path, e))?;
    file.sync_all().map_err(|e| Error::io("fsyncing", &path, e))?;
    sync_dir(&*log.vfs, &log.dir)?;
    log.register_file(header.number, Arc::clone(&file));
    Ok(Active {
        number: header.number,
        path,
        file,
        len: SEGMENT_HEADER_BYTES as u64,
        file_len: SEGMENT_HEADER_BYTES as u64,
        last_lsn: header.first_lsn - 1,
        digest: Digest::default(),
    })
}

/// Seals `active` and starts the next segment.
pub(super) fn rotate(log: &DiskLog, active: &mut Active) -> Result<()> {
    // A seal ends its file (recovery reads it from there), so the length kept ahead is cut
    // first, durably: else a power cut could keep the seal but lose the shorter length.
    cut_ahead(active)?;
    // Everything before the seal is on disk before the seal is written, so a seal on disk
    // vouches for every record before it (buffered mode has not synced them yet).
    if log.synced_lsn() < active.last_lsn {
        sync_active(log, active)?;
    }
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
    sync_active(log, active)?;
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

/// How far ahead of its records the writer keeps a segment's length.
const AHEAD_BYTES: u64 = 1024 * 1024;

/// Before a batch that ends at `end` is written: unless the file is already that long, sets
/// its length [`AHEAD_BYTES`] further (never past the segment's size; the new bytes read as
/// zeros and take no disk space), so the batches after it do not grow the file. Their
/// `fdatasync` then flushes only their data, not the file's new size too: on ext4 that is a
/// second synchronous write saved, and a quarter to a third of a small append's fsync time.
/// The length reaches the disk with the next fsync. To recovery, zeros after the last record
/// are a tail to cut, as a torn write would leave.
fn extend_ahead(log: &DiskLog, active: &mut Active, end: u64) -> Result<()> {
    if end <= active.file_len {
        return Ok(());
    }
    let to = (end + AHEAD_BYTES).min(log.segment_bytes);
    if to > end {
        active.file.set_len(to).map_err(|e| Error::io("extending", &active.path, e))?;
    }
    active.file_len = to.max(end);
    Ok(())
}

/// Cuts the length kept ahead of the records, durably (before a seal, and at a clean close,
/// so a closed segment is exactly its records).
fn cut_ahead(active: &mut Active) -> Result<()> {
    if active.file_len > active.len {
        let path = &active.path;
        active.file.set_len(active.len).map_err(|e| Error::io("truncating", path, e))?;
        active.file.sync_all().map_err(|e| Error::io("fsyncing", path, e))?;
        active.file_len = active.len;
    }
    Ok(())
}

/// What the writer keeps between batches.
pub(super) struct Writer {
    pub(super) active: Active,
    spare_buf: Vec<u8>,
    spare_items: Vec<Item>,
    /// Records in the last batch (the linger target).
    previous: usize,
    /// How long the last write and fsync took.
    last_batch: Duration,
    /// When the log was last fsynced (buffered mode syncs at least every `sync_interval`).
    last_sync: Instant,
}

impl Writer {
    pub(super) fn new(active: Active) -> Self {
        Self {
            active,
            spare_buf: Vec::new(),
            spare_items: Vec::new(),
            previous: 0,
            last_batch: Duration::ZERO,
            last_sync: Instant::now(),
        }
    }
}

/// Writes one group-commit batch; returns the offset it was written at.
fn write_batch(log: &DiskLog, active: &mut Active, buf: &mut [u8], items: &[Item]) -> Result<u64> {
    debug_assert!(!items.is_empty(), "a batch holds at least one record");
    debug_assert_eq!(items[0].start, record::BATCH_RECORD_BYTES, "the batch record comes first");
    if active.len + buf.len() as u64 > log.segment_bytes && active.digest.records() > 0 {
        rotate(log, active)?;
    }
    let synced = log.synced_lsn();
    assert!(synced <= active.last_lsn, "nothing past the log's end is synced");
    record::encode_batch(&mut buf[..record::BATCH_RECORD_BYTES], active.last_lsn, synced);
    let offset = active.len;
    assert!(offset >= super::segment::SEGMENT_HEADER_BYTES as u64, "records follow the header");
    let end = items.last().map_or(0, |i| i.start + i.len);
    assert_eq!(end, buf.len(), "the batch is exactly its records");
    log.faults.before_write().map_err(|e| Error::io("writing", &active.path, e))?;
    extend_ahead(log, active, offset + buf.len() as u64)?;
    active.file.write_all_at(buf, offset).map_err(|e| Error::io("writing", &active.path, e))?;
    active.digest.add(&buf[..record::BATCH_RECORD_BYTES]);
    for item in items {
        active.digest.add(&buf[item.start..item.start + item.len]);
    }
    active.len += buf.len() as u64;
    let last = items.last().expect("checked above");
    debug_assert_eq!(last.lsn, active.last_lsn + items.len() as u64, "LSNs have no gaps");
    active.last_lsn = last.lsn;
    log.set_written(end_of(active));
    if log.durability.syncs() {
        let started = Instant::now();
        sync_active(log, active)?;
        log.stats.record_sync(started.elapsed());
    }
    log.stats.record_batch(items.len(), buf.len());
    Ok(offset)
}

/// Fsyncs the active segment and records that everything written to it is on disk.
fn sync_active(log: &DiskLog, active: &Active) -> Result<()> {
    log.fsync(&*active.file, &active.path, active.last_lsn)
}

/// The writer thread: take everything queued, write it, fsync once, report, repeat.
///
/// Appenders that wait for their fsync come back with their next append only after it
/// completes. If the writer started its next batch at once it would catch the first one or two
/// of them and leave the rest for the fsync after, halving the batch. So when fewer records
/// are queued than the last batch held, it lingers until that many are queued — at most half
/// an fsync, and never more than the configured `linger_max` — as the `commit_delay` of
/// `PostgreSQL` does. A single appender (a batch of one) never waits.
pub(super) fn run(log: &DiskLog, mut writer: Writer) {
    while let Some(batch) = take(log, &mut writer, true) {
        write_and_report(log, &mut writer, batch);
    }
    finish(log, &mut writer);
}

/// At close: a buffered log syncs what it wrote, so a clean stop loses nothing, and the length
/// kept ahead is cut.
pub(super) fn finish(log: &DiskLog, writer: &mut Writer) {
    if log.poisoned().is_some() {
        return;
    }
    let active = &mut writer.active;
    let synced = if log.synced_lsn() < active.last_lsn { sync_active(log, active) } else { Ok(()) };
    if let Err(err) = synced.and_then(|()| cut_ahead(active)) {
        log.poison(err);
    }
}

/// Writes what is queued, on the calling thread; returns whether there was anything.
pub(super) fn step(log: &DiskLog, writer: &mut Writer) -> bool {
    let Some(batch) = take(log, writer, false) else { return false };
    write_and_report(log, writer, batch);
    true
}

struct Batch {
    buf: Vec<u8>,
    items: Vec<Item>,
    poisoned: Option<Error>,
}

/// Takes everything queued. With `wait`, sleeps until something is (syncing a buffered log
/// that has been idle for `sync_interval`) and lingers as `run` explains; returns `None` once
/// the log is closed and drained.
fn take(log: &DiskLog, writer: &mut Writer, wait: bool) -> Option<Batch> {
    let mut q = log.lock_queue();
    while wait && q.items.is_empty() && !q.closed {
        q.writer_idle = true;
        if log.durability.syncs() || log.synced_lsn() == writer.active.last_lsn {
            q = log.wake.wait(q).unwrap_or_else(PoisonError::into_inner);
        } else {
            let (guard, timeout) =
                log.wake.wait_timeout(q, log.sync_interval).unwrap_or_else(PoisonError::into_inner);
            q = guard;
            if timeout.timed_out() && q.items.is_empty() {
                drop(q);
                sync_buffered(log, writer);
                q = log.lock_queue();
            }
        }
    }
    q.writer_idle = false;
    if q.items.is_empty() {
        return None;
    }
    let linger = (writer.last_batch / 2).min(log.linger_max);
    if wait
        && writer.previous > 1
        && q.items.len() < writer.previous
        && !linger.is_zero()
        && log.durability.syncs()
    {
        let deadline = Instant::now() + linger;
        q.linger_target = writer.previous;
        while q.linger_target > 0 && !q.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            q = log.wake.wait_timeout(q, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        q.linger_target = 0;
    }
    let buf = std::mem::replace(&mut q.buf, std::mem::take(&mut writer.spare_buf));
    let items = std::mem::replace(&mut q.items, std::mem::take(&mut writer.spare_items));
    Some(Batch { buf, items, poisoned: q.poisoned.clone() })
}

/// Fsyncs a buffered log whose last sync is `sync_interval` old (Redis's `everysec`).
fn sync_buffered(log: &DiskLog, writer: &mut Writer) {
    if log.durability.syncs()
        || log.synced_lsn() == writer.active.last_lsn
        || writer.last_sync.elapsed() < log.sync_interval
    {
        return;
    }
    writer.last_sync = Instant::now();
    if let Err(err) = sync_active(log, &writer.active) {
        log.poison(err);
    }
}

/// Writes a batch and completes or fails its records. A panic here (a bug) poisons the log
/// and fails every record not yet completed, so no appender waits forever.
fn write_and_report(log: &DiskLog, writer: &mut Writer, batch: Batch) {
    let Batch { mut buf, mut items, poisoned } = batch;
    writer.previous = items.len();
    let started = Instant::now();
    let mut reported = 0;
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let written = match poisoned {
            Some(cause) => Err(cause),
            None => write_batch(log, &mut writer.active, &mut buf, &items),
        };
        writer.last_batch = started.elapsed();
        match written {
            Ok(offset) => complete(log, &writer.active, offset, &items, &mut reported),
            Err(err) => {
                fail(log, err, &items);
                reported = items.len();
            }
        }
    }));
    if let Err(panic) = outcome {
        let what = panic
            .downcast_ref::<&str>()
            .map(ToString::to_string)
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        let err = Error::io(
            "writing the log in",
            &log.dir,
            std::io::Error::other(format!("the log writer panicked: {what}")),
        );
        fail(log, err, &items[reported.min(items.len())..]);
    }
    sync_buffered(log, writer);
    buf.clear();
    items.clear();
    writer.spare_buf = buf;
    writer.spare_items = items;
}

/// Reports a written batch's records durable. `reported` counts the records whose sinks have
/// been told, so a panic in a sink leaves the rest to be failed.
fn complete(log: &DiskLog, active: &Active, offset: u64, items: &[Item], reported: &mut usize) {
    let position = |item: &Item| Position {
        segment: active.number,
        // Offsets fit u32: segments are capped at 1 GiB plus one batch.
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
            *reported = i;
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
        *reported = i;
    }
    // Published after every sink has run, so whoever reads the durable point knows those
    // records are in the in-memory index.
    log.set_durable(end_of(active));
}

/// The point just after the last record written to `active`.
fn end_of(active: &Active) -> LogPoint {
    let offset = u32::try_from(active.len).expect("segment offsets fit u32");
    LogPoint { lsn: active.last_lsn, segment: active.number, offset }
}

/// Poisons the log with `err` and tells every sink of `items` that its record failed.
fn fail(log: &DiskLog, err: Error, items: &[Item]) {
    let cause = log.poison(err);
    for item in items {
        if let Some(sink) = &item.sink {
            sink.failed(&cause);
        }
    }
}
