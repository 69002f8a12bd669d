//! The segmented append-only log shared by all contexts: the data path.
//!
//! - [`queue`]: the group-commit queue appenders encode their records into.
//! - `writer`: the thread that writes and fsyncs each batch, rotates and seals segments, and
//!   poisons the log when a write or fsync fails.
//! - [`segment`]: segment headers, seals and the hash chain.
//! - `recover`: opening the log: checking the chain, replaying records after the index's
//!   watermark, and truncating a torn tail of the newest segment.
//!
//! Readers `pread` records by [`Position`] from the same files; every record read is checked
//! against its checksum.

mod files;
pub mod queue;
mod recover;
pub mod segment;
mod stats;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use bytes::Bytes;
use tracing::error;

pub use files::OPEN_SEGMENTS_MAX;
pub use queue::{LogSink, Position, RecordSink};
pub use recover::Replayed;
pub use stats::{BATCH_BUCKETS, LogStats, LogStatsSnapshot};

use crate::durability::Durability;
use crate::error::{Error, Result};
use crate::fault::Faults;
use crate::vfs::{Vfs, VfsFile};
use queue::Queue;

/// A point in the log: the last durable LSN and where the log ends after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogPoint {
    /// The LSN of the last record before this point (0: none).
    pub lsn: u64,
    /// The segment the point is in.
    pub segment: u32,
    /// The byte offset in that segment.
    pub offset: u32,
}

/// How the log is set up.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// The directory of segment files.
    pub dir: PathBuf,
    /// The node identity written into segment headers.
    pub node: [u8; 16],
    /// Segments are sealed once they pass this size.
    pub segment_bytes: u64,
    /// When appends are acknowledged.
    pub durability: Durability,
    /// The longest the writer lingers for appenders to come back (0: never).
    pub linger_max: std::time::Duration,
    /// Failures to inject, in tests.
    pub faults: Arc<Faults>,
    /// The file system the segments live on.
    pub vfs: Arc<dyn Vfs>,
    /// Buffered mode: the longest a written record waits for an fsync.
    pub sync_interval: std::time::Duration,
    /// No writer thread: queued records are written only when [`DiskLog::step`] is called
    /// (deterministic tests).
    pub manual: bool,
}

/// The log. Appenders call [`append`](Self::append); a writer thread does the IO.
pub struct DiskLog {
    dir: PathBuf,
    node: [u8; 16],
    segment_bytes: u64,
    durability: Durability,
    linger_max: std::time::Duration,
    sync_interval: std::time::Duration,
    faults: Arc<Faults>,
    vfs: Arc<dyn Vfs>,
    /// The highest LSN known to be on disk (fsynced).
    synced: AtomicU64,
    /// The writer's state in manual mode.
    manual: Mutex<Option<writer::Writer>>,
    queue: Mutex<Queue>,
    wake: Condvar,
    files: files::OpenFiles,
    durable: Mutex<LogPoint>,
    /// The end of what the writer has written, set before it tells the records' sinks.
    written: Mutex<LogPoint>,
    writer: Mutex<Option<JoinHandle<()>>>,
    stats: LogStats,
}

impl DiskLog {
    /// Opens the log in `config.dir` (creating it if needed), checks the segment chain, replays
    /// every record after `from` into `replay`, truncates a torn tail of the newest segment,
    /// and starts the writer.
    pub fn open(
        config: LogConfig,
        from: LogPoint,
        replay: &mut dyn FnMut(Replayed<'_>) -> Result<()>,
    ) -> Result<Arc<Self>> {
        config
            .vfs
            .create_dir_all(&config.dir)
            .map_err(|e| Error::io("creating", &config.dir, e))?;
        let log = Arc::new(Self {
            dir: config.dir,
            node: config.node,
            segment_bytes: config.segment_bytes,
            durability: config.durability,
            linger_max: config.linger_max,
            sync_interval: config.sync_interval,
            faults: config.faults,
            vfs: config.vfs,
            synced: AtomicU64::new(0),
            manual: Mutex::new(None),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            files: files::OpenFiles::default(),
            durable: Mutex::new(LogPoint::default()),
            written: Mutex::new(LogPoint::default()),
            writer: Mutex::new(None),
            stats: LogStats::default(),
        });
        let (active, end) = recover::open(&log, from, replay)?;
        log.lock_queue().next_lsn = end.lsn + 1;
        log.set_durable(end);
        log.set_written(end);
        // Recovery fsyncs the newest segment, so everything it found is on disk.
        log.set_synced_lsn(end.lsn);
        let writer = writer::Writer::new(active);
        if config.manual {
            *log.manual.lock().unwrap_or_else(PoisonError::into_inner) = Some(writer);
            return Ok(log);
        }
        let writer_log = Arc::clone(&log);
        let handle = std::thread::Builder::new()
            .name("converge-log-writer".into())
            .spawn(move || writer::run(&writer_log, writer))
            .map_err(|e| Error::io("starting the log writer for", &log.dir, e))?;
        *log.writer.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
        Ok(log)
    }

    /// Manual mode: writes (and in fsync mode syncs) everything queued, on this thread, and
    /// completes it; returns whether anything was queued. Without manual mode, does nothing.
    pub fn step(&self) -> bool {
        let mut manual = self.manual.lock().unwrap_or_else(PoisonError::into_inner);
        manual.as_mut().is_some_and(|writer| writer::step(self, writer))
    }

    /// The highest LSN known to be on disk.
    pub fn synced_lsn(&self) -> u64 {
        self.synced.load(Ordering::SeqCst)
    }

    fn set_synced_lsn(&self, lsn: u64) {
        self.synced.fetch_max(lsn, Ordering::SeqCst);
    }

    /// Makes every record up to `point` durable: buffered mode fsyncs the segment `point` is
    /// in (older segments were fsynced when they were sealed); fsync mode has done so already.
    /// A checkpoint calls this before its index names `point`.
    pub fn sync_through(&self, point: LogPoint) -> Result<()> {
        if point.lsn <= self.synced_lsn() {
            return Ok(());
        }
        let file = self.file(point.segment)?;
        self.fsync(&*file, &self.segment_path(point.segment), point.lsn)
            .map_err(|err| self.poison(err))
    }

    /// Fsyncs the segment `file` at `path` and records that every LSN up to `through` is on
    /// disk. The one place the log fsyncs records (injected failures included).
    fn fsync(&self, file: &dyn VfsFile, path: &Path, through: u64) -> Result<()> {
        self.faults.before_sync().map_err(|e| Error::io("fsyncing", path, e))?;
        file.sync_data().map_err(|e| Error::io("fsyncing", path, e))?;
        self.set_synced_lsn(through);
        Ok(())
    }

    /// Opens the existing segment file at `path`.
    fn open_file(&self, path: &Path) -> Result<Arc<dyn VfsFile>> {
        self.vfs
            .open(path, crate::vfs::OpenMode::Existing)
            .map_err(|e| Error::io("opening", path, e))
    }

    /// Poisons the log: nothing more is acknowledged, and (for a failed write or fsync) no
    /// store may reopen this directory in this process (see [`Vfs::mark_sync_failed`]).
    /// Returns the error every later write gets.
    pub(crate) fn poison(&self, err: Error) -> Error {
        let cause = match err {
            Error::Poisoned { .. } => err,
            other => {
                error!(error = %other, "log write failed; poisoning the store until the process restarts");
                self.vfs.mark_sync_failed(&self.dir);
                Error::Poisoned { cause: Arc::new(other) }
            }
        };
        self.lock_queue().poisoned.get_or_insert(cause).clone()
    }

    /// Queues the records `encode` pushes, in order, as one unit: no other appender's records
    /// come between them. Fails at once if the log is poisoned or closed.
    pub fn append<T>(&self, encode: impl FnOnce(&mut RecordSink<'_>) -> T) -> Result<T> {
        let mut q = self.lock_queue();
        if let Some(cause) = &q.poisoned {
            return Err(cause.clone());
        }
        if q.closed {
            return Err(Error::Closed);
        }
        let out = encode(&mut RecordSink { queue: &mut q });
        let wake = q.take_wake();
        drop(q);
        if wake {
            self.wake.notify_one();
        }
        Ok(out)
    }

    /// Reads the record at `position`, checked against its checksum.
    pub fn read(&self, position: Position) -> Result<Bytes> {
        let mut out = self.read_many(&[position])?;
        Ok(out.pop().unwrap_or_default())
    }

    /// Reads many records; records close together in one segment are read with one `pread`.
    pub fn read_many(&self, positions: &[Position]) -> Result<Vec<Bytes>> {
        /// Records closer than this are read together, gap included.
        const GAP_BYTES_MAX: u64 = 16 * 1024;
        /// One read covers at most this many bytes.
        const SPAN_BYTES_MAX: u64 = 4 * 1024 * 1024;
        let mut order: Vec<usize> = (0..positions.len()).collect();
        order.sort_unstable_by_key(|&i| positions[i]);
        let mut out = vec![Bytes::new(); positions.len()];
        let mut i = 0;
        while i < order.len() {
            let first = positions[order[i]];
            let start = u64::from(first.offset);
            let mut end = start + u64::from(first.len);
            let mut j = i + 1;
            while j < order.len() {
                let p = positions[order[j]];
                let (p_start, p_end) =
                    (u64::from(p.offset), u64::from(p.offset) + u64::from(p.len));
                if p.segment != first.segment
                    || p_start > end + GAP_BYTES_MAX
                    || p_end - start > SPAN_BYTES_MAX
                {
                    break;
                }
                end = end.max(p_end);
                j += 1;
            }
            let span = self.read_span(first.segment, start, end)?;
            for &k in &order[i..j] {
                let p = positions[k];
                let at = (u64::from(p.offset) - start) as usize;
                let record = span.slice(at..at + p.len as usize);
                crate::record::decode(&record).map_err(|e| {
                    Error::corrupt(self.segment_path(p.segment), u64::from(p.offset), e.to_string())
                })?;
                out[k] = record;
            }
            i = j;
        }
        Ok(out)
    }

    fn read_span(&self, segment: u32, start: u64, end: u64) -> Result<Bytes> {
        let file = self.file(segment)?;
        let mut buf = vec![0; (end - start) as usize];
        file.read_exact_at(&mut buf, start).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::corrupt(
                    self.segment_path(segment),
                    start,
                    "the segment ends before the record",
                )
            } else {
                Error::io("reading", self.segment_path(segment), e)
            }
        })?;
        Ok(Bytes::from(buf))
    }

    fn file(&self, segment: u32) -> Result<Arc<dyn VfsFile>> {
        if let Some(file) = self.files.get(segment) {
            return Ok(file);
        }
        let file = self.open_file(&self.segment_path(segment))?;
        self.register_file(segment, Arc::clone(&file));
        Ok(file)
    }

    fn register_file(&self, segment: u32, file: Arc<dyn VfsFile>) {
        self.files.insert(segment, file);
    }

    /// Segment files the read cache holds open now (at most [`OPEN_SEGMENTS_MAX`]).
    pub fn open_segments(&self) -> usize {
        self.files.len()
    }

    /// The path of segment `number`.
    pub fn segment_path(&self, number: u32) -> PathBuf {
        self.dir.join(segment::file_name(number))
    }

    /// The end of the durable log: every record up to it has been reported to its sink.
    pub fn durable(&self) -> LogPoint {
        *self.durable.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The end of what the writer has written: every record a sink has been told of is
    /// before it (unlike [`Self::durable`], which moves only after the sinks ran).
    pub fn written(&self) -> LogPoint {
        *self.written.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_written(&self, point: LogPoint) {
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        if written.lsn < point.lsn {
            *written = point;
        }
    }

    fn set_durable(&self, point: LogPoint) {
        let mut durable = self.durable.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(durable.lsn <= point.lsn, "the durable point only moves forward");
        *durable = point;
    }

    /// Whether a write or fsync has failed.
    pub fn poisoned(&self) -> Option<Error> {
        self.lock_queue().poisoned.clone()
    }

    /// Counters of the writer's work.
    pub fn stats(&self) -> &LogStats {
        &self.stats
    }

    /// Stops accepting records, lets the writer finish what is queued, and waits for it.
    pub fn close(&self) {
        self.lock_queue().closed = true;
        self.wake.notify_all();
        if let Some(writer) = self.manual.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
            while writer::step(self, writer) {}
            writer::finish(self, writer);
        }
        let handle = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Fsyncs a directory, so that files created or renamed in it survive a power loss.
pub fn sync_dir(vfs: &dyn Vfs, dir: &Path) -> Result<()> {
    vfs.sync_dir(dir).map_err(|e| Error::io("fsyncing the directory", dir, e))
}
