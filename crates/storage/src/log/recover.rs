//! Opening the log: check the segment chain, replay what the index has not seen, and cut a
//! torn tail — only of the newest segment, and only if nothing valid follows it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::warn;

use super::queue::Position;
use super::segment::{self, Digest, SEGMENT_HEADER_BYTES, SegmentHeader};
use super::writer::{self, Active};
use super::{DiskLog, LogPoint};
use crate::error::{Error, Result};
use crate::record::{self, FLAG_BATCH_CONTINUES, Header, RecordError, RecordKind, Seal};
use crate::vfs::VfsFile;

/// A record handed to the replay callback.
#[derive(Debug)]
pub struct Replayed<'a> {
    /// Its header.
    pub header: Header,
    /// Its body.
    pub body: &'a [u8],
    /// Where it is.
    pub position: Position,
    /// The segment file it is in (for error messages).
    pub path: &'a Path,
}

/// Bytes read at a time while scanning.
const SCAN_CHUNK_BYTES: usize = 1024 * 1024;

struct Segment {
    number: u32,
    path: PathBuf,
    len: u64,
    header: SegmentHeader,
    seal: Option<(Seal, u64)>,
}

/// Opens the log; returns the active segment and the end of the log.
pub(super) fn open(
    log: &DiskLog,
    from: LogPoint,
    replay: &mut dyn FnMut(Replayed<'_>) -> Result<()>,
) -> Result<(Active, LogPoint)> {
    let listed = segment::list(&*log.vfs, &log.dir)?;
    if listed.is_empty() {
        if from.lsn > 0 {
            return Err(Error::corrupt(
                &log.dir,
                0,
                format!(
                    "the index has seen records up to LSN {} but the log directory holds no segments",
                    from.lsn
                ),
            ));
        }
        return fresh(log);
    }
    let count = listed.len();
    let mut segments = Vec::with_capacity(count);
    for (i, (number, path)) in listed.into_iter().enumerate() {
        if number as usize != i + 1 {
            return Err(Error::corrupt(
                &path,
                0,
                format!("segment {} is missing: segments must run 1, 2, 3, … without gaps", i + 1),
            ));
        }
        if i + 1 == count && is_torn_creation(log, &path)? {
            // The writer stopped while creating this segment, before its header was fsynced
            // and so before any record could go into it.
            warn!(file = %path.display(), "removing a segment whose creation was cut short");
            log.vfs.remove_file(&path).map_err(|e| Error::io("removing", &path, e))?;
            super::sync_dir(&*log.vfs, &log.dir)?;
            continue;
        }
        segments.push(open_segment(log, number, path)?);
    }
    if segments.is_empty() {
        return fresh(log);
    }
    check_chain(log, &segments)?;

    let start = match from.lsn {
        0 => (1, SEGMENT_HEADER_BYTES as u64),
        _ => (from.segment, u64::from(from.offset)),
    };
    if start.0 == 0 || start.0 as usize > segments.len() {
        return Err(Error::corrupt(
            &log.dir,
            0,
            format!("the index points into segment {}, which does not exist", start.0),
        ));
    }
    let last_index = segments.len() - 1;
    let mut expected_lsn = from.lsn + 1;
    for segment in &segments[start.0 as usize - 1..last_index] {
        let offset = if segment.number == start.0 { start.1 } else { SEGMENT_HEADER_BYTES as u64 };
        expected_lsn = replay_sealed(log, segment, offset, expected_lsn, replay)?;
    }
    let last = segments.pop().expect("at least one segment");
    if last.number != start.0 && last.header.first_lsn != expected_lsn {
        return Err(Error::corrupt(
            &last.path,
            24,
            format!("expected LSN {expected_lsn}, found {}", last.header.first_lsn),
        ));
    }
    let (active, end_lsn) = replay_last(log, last, from.lsn, replay)?;
    let end = LogPoint {
        lsn: end_lsn,
        segment: active.number,
        offset: u32::try_from(active.len).map_err(|_| {
            Error::corrupt(&active.path, active.len, "segment is larger than 4 GiB")
        })?,
    };
    Ok((active, end))
}

fn fresh(log: &DiskLog) -> Result<(Active, LogPoint)> {
    let header = SegmentHeader { number: 1, first_lsn: 1, node: log.node, previous: Seal::zero() };
    let active = writer::create_segment(log, &header)?;
    Ok((active, LogPoint { lsn: 0, segment: 1, offset: SEGMENT_HEADER_BYTES as u32 }))
}

/// A segment whose header never became durable: no longer than a header, and the header does
/// not check out (a power cut kept its size but not its bytes, or nothing at all). Records are
/// written only after the header is fsynced, so such a segment holds nothing acknowledged.
fn is_torn_creation(log: &DiskLog, path: &Path) -> Result<bool> {
    let file = log.open_file(path)?;
    let len = file.len().map_err(|e| Error::io("reading metadata of", path, e))?;
    Ok(len <= SEGMENT_HEADER_BYTES as u64 && segment::read_header(&*file, path).is_err())
}

fn open_segment(log: &DiskLog, number: u32, path: PathBuf) -> Result<Segment> {
    // Opened only to read the header and seal: segments are opened one at a time, as needed,
    // since a log may hold far more of them than the process may have open files.
    let file = log.open_file(&path)?;
    let len = file.len().map_err(|e| Error::io("reading metadata of", &path, e))?;
    let header = segment::read_header(&*file, &path)?;
    if header.number != number {
        return Err(Error::corrupt(
            &path,
            16,
            format!(
                "the header says segment {} but the file name says {number}: was it renamed or swapped?",
                header.number
            ),
        ));
    }
    let seal = segment::read_seal(&*file, &path, len).ok();
    Ok(Segment { number, path, len, header, seal })
}

/// Every segment but the newest must be sealed, and each seal must match the next header.
fn check_chain(log: &DiskLog, segments: &[Segment]) -> Result<()> {
    let first = &segments[0];
    if first.header.first_lsn != 1 || first.header.previous != Seal::zero() {
        return Err(Error::corrupt(
            &first.path,
            24,
            "the first segment does not start the log at LSN 1",
        ));
    }
    for pair in segments.windows(2) {
        let (older, newer) = (&pair[0], &pair[1]);
        let (seal, seal_lsn) = match &older.seal {
            Some(seal) => *seal,
            // Read again for the precise error.
            None => segment::read_seal(&*log.open_file(&older.path)?, &older.path, older.len)?,
        };
        if newer.header.previous != seal {
            return Err(Error::corrupt(
                &newer.path,
                48,
                format!(
                    "this segment's header does not match the seal of {} (records {}, bytes {}): a segment was truncated, replaced or swapped",
                    older.path.display(),
                    seal.records,
                    seal.bytes
                ),
            ));
        }
        if newer.header.first_lsn != seal_lsn + 1 {
            return Err(Error::corrupt(
                &newer.path,
                24,
                format!(
                    "this segment starts at LSN {} but the previous one ends at LSN {seal_lsn}",
                    newer.header.first_lsn
                ),
            ));
        }
    }
    Ok(())
}

/// Told of each record a scan finds: its offset, header and bytes.
type OnRecord<'a> = dyn FnMut(u64, Header, &[u8]) -> Result<()> + 'a;

/// Where a scan of a segment stopped.
struct Scanned {
    /// The end of the last good record.
    good_end: u64,
    /// The LSN the next entry or context record must have.
    expected: u64,
    /// What stopped it before the end, if anything: the offset and why.
    bad: Option<(u64, String)>,
}

/// Scans the records in `[from, end)` of `segment`, checking each one's checksum and LSN
/// (entry and context records number the log `expected, expected + 1, …`; batch and seal
/// records repeat the LSN before them), and hands each to `each` with its offset.
fn scan(
    file: &dyn VfsFile,
    from: u64,
    end: u64,
    mut expected: u64,
    each: &mut OnRecord<'_>,
) -> Result<Scanned> {
    let mut scanner = Scanner::new(file, from, end);
    loop {
        let at = scanner.pos;
        let bad = |reason: String| Ok(Scanned { good_end: at, expected, bad: Some((at, reason)) });
        let (header, record) = match scanner.next() {
            Ok(None) => return Ok(Scanned { good_end: at, expected, bad: None }),
            Ok(Some(found)) => found,
            Err(err) => return bad(err.to_string()),
        };
        let numbered = !matches!(header.kind, RecordKind::Batch | RecordKind::Seal);
        let want = if numbered { expected } else { expected - 1 };
        if header.lsn != want {
            return bad(format!("expected LSN {want}, found {}", header.lsn));
        }
        each(at, header, record)?;
        expected += u64::from(numbered);
    }
}

/// Replays the records of a sealed segment from `offset`. Any damage is a hard error: a seal
/// is written only after everything before it was fsynced.
fn replay_sealed(
    log: &DiskLog,
    segment: &Segment,
    offset: u64,
    expected_lsn: u64,
    replay: &mut dyn FnMut(Replayed<'_>) -> Result<()>,
) -> Result<u64> {
    let (seal, _) = segment.seal.expect("checked by check_chain");
    let mut atomic = Atomic::default();
    let file = log.open_file(&segment.path)?;
    let scanned = scan(&*file, offset, seal.bytes, expected_lsn, &mut |at, header, record| {
        atomic.push(header, record, segment.number, at, &segment.path, replay)
    })?;
    if let Some((at, reason)) = scanned.bad {
        return Err(Error::corrupt(&segment.path, at, reason));
    }
    if atomic.is_open() {
        return Err(Error::corrupt(
            &segment.path,
            seal.bytes,
            "an atomic batch is cut off by the seal",
        ));
    }
    Ok(scanned.expected)
}

/// Scans the newest segment from its start (to rebuild its digest), replays records after
/// `replay_after`, cuts a torn tail, and returns it as the active segment.
fn replay_last(
    log: &DiskLog,
    segment: Segment,
    replay_after: u64,
    replay: &mut dyn FnMut(Replayed<'_>) -> Result<()>,
) -> Result<(Active, u64)> {
    let end = segment.seal.map_or(segment.len, |(seal, _)| seal.bytes);
    let file = log.open_file(&segment.path)?;
    let mut digest = Digest::default();
    let mut atomic = Atomic::default();
    // Where the open atomic batch started: its offset, the digest and LSN before it.
    let mut open_batch: Option<(u64, Digest, u64)> = None;
    let scanned = scan(
        &*file,
        SEGMENT_HEADER_BYTES as u64,
        end,
        segment.header.first_lsn,
        &mut |at, header, record| {
            let continues = header.flags & FLAG_BATCH_CONTINUES != 0;
            if continues && open_batch.is_none() {
                open_batch = Some((at, digest.clone(), header.lsn));
            }
            digest.add(record);
            if !continues {
                open_batch = None;
            }
            if header.lsn > replay_after || atomic.is_open() {
                atomic.push(header, record, segment.number, at, &segment.path, replay)?;
            }
            Ok(())
        },
    )?;
    let (mut good_end, mut expected) = (scanned.good_end, scanned.expected);
    if let Some((at, reason)) = scanned.bad {
        if segment.seal.is_some() {
            return Err(Error::corrupt(&segment.path, at, reason));
        }
        check_torn_tail(&segment, &*file, at, expected, &reason)?;
    }
    assert!(good_end <= segment.len, "a scan ends within the file");
    if let Some((at, before, lsn)) = open_batch {
        assert!(at <= good_end && lsn <= expected, "an open batch started before the scan's end");
        // An atomic batch whose last record never reached the disk was never acknowledged.
        warn!(file = %segment.path.display(), offset = at, "discarding an incomplete atomic batch at the tail");
        good_end = at;
        digest = before;
        expected = lsn;
    }
    if expected - 1 < replay_after {
        return Err(Error::corrupt(
            &segment.path,
            good_end,
            format!(
                "the log ends at LSN {} but the index has seen LSN {replay_after}: acknowledged records are missing",
                expected - 1
            ),
        ));
    }
    if let Some((seal, _)) = segment.seal {
        if seal.digest != digest.finish() || seal.records != digest.records() {
            return Err(Error::corrupt(
                &segment.path,
                seal.bytes,
                "the seal does not match the records before it",
            ));
        }
    } else {
        if good_end < segment.len {
            // Zeros alone are the length the writer keeps ahead of its records (or what a
            // power cut leaves of a write that never reached the disk): nothing to warn about.
            if !is_zeros(&*file, &segment.path, good_end, segment.len)? {
                warn!(file = %segment.path.display(), offset = good_end, cut = segment.len - good_end, "truncating a torn tail of the newest segment");
            }
            file.set_len(good_end).map_err(|e| Error::io("truncating", &segment.path, e))?;
        }
        // What this scan read may still be only in the page cache (an unsynced write before a
        // crash of the process, not the machine): put it on disk before building on it.
        file.sync_all().map_err(|e| Error::io("fsyncing", &segment.path, e))?;
    }
    assert!(expected >= segment.header.first_lsn, "LSNs only grow along a segment");
    log.register_file(segment.number, Arc::clone(&file));
    let mut active = Active {
        number: segment.number,
        path: segment.path,
        file,
        len: good_end,
        file_len: good_end,
        last_lsn: expected - 1,
        digest,
    };
    if let Some((seal, _)) = segment.seal {
        // The writer sealed this segment and stopped before creating the next one.
        writer::start_next(log, &mut active, seal)?;
    }
    let last_lsn = active.last_lsn;
    Ok((active, last_lsn))
}

/// A bad record at `at` in the newest, unsealed segment is a torn write unless something after
/// it proves it had been durable: a batch record, written later, whose synced LSN reaches
/// `expected_lsn` (the LSN the bad record should hold). Pages of one unsynced write reach the
/// disk in any order, so valid records after a hole prove nothing by themselves.
fn check_torn_tail(
    segment: &Segment,
    file: &dyn VfsFile,
    at: u64,
    expected_lsn: u64,
    reason: &str,
) -> Result<()> {
    let len = (segment.len - at) as usize;
    let mut rest = vec![0; len];
    file.read_exact_at(&mut rest, at).map_err(|e| Error::io("reading", &segment.path, e))?;
    let batch_len = ((record::BATCH_RECORD_BYTES - 8) as u32).to_be_bytes();
    for skip in 1..rest.len().saturating_sub(record::BATCH_RECORD_BYTES - 1) {
        let candidate = &rest[skip..];
        if candidate[4..8] != batch_len {
            continue;
        }
        if let Ok((header, body, _)) = record::decode(candidate)
            && header.kind == RecordKind::Batch
            && let Ok(synced) = record::decode_batch_body(body)
            && synced >= expected_lsn
        {
            return Err(Error::corrupt(
                &segment.path,
                at,
                format!(
                    "{reason}, yet a batch written at byte {} records that LSN {synced} was already on disk: this is damage to durable records, not a torn write",
                    at + skip as u64
                ),
            ));
        }
    }
    Ok(())
}

/// Whether bytes `[from, to)` of `file` are all zero.
fn is_zeros(file: &dyn VfsFile, path: &Path, from: u64, to: u64) -> Result<bool> {
    let mut buf = vec![0; SCAN_CHUNK_BYTES.min(usize::try_from(to - from).unwrap_or(usize::MAX))];
    let mut at = from;
    while at < to {
        let n = buf.len().min(usize::try_from(to - at).unwrap_or(usize::MAX));
        file.read_exact_at(&mut buf[..n], at).map_err(|e| Error::io("reading", path, e))?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// Holds the records of an atomic batch until its last record arrives.
#[derive(Default)]
struct Atomic {
    records: Vec<(Header, Vec<u8>, Position)>,
}

impl Atomic {
    fn is_open(&self) -> bool {
        !self.records.is_empty()
    }

    fn push(
        &mut self,
        header: Header,
        record: &[u8],
        segment: u32,
        at: u64,
        path: &Path,
        replay: &mut dyn FnMut(Replayed<'_>) -> Result<()>,
    ) -> Result<()> {
        match header.kind {
            RecordKind::Batch => return Ok(()),
            RecordKind::Seal => {
                return Err(Error::corrupt(path, at, "a seal record in the middle of a segment"));
            }
            _ => {}
        }
        let position = Position {
            segment,
            offset: u32::try_from(at)
                .map_err(|_| Error::corrupt(path, at, "offset beyond 4 GiB"))?,
            len: record.len() as u32,
        };
        if header.flags & FLAG_BATCH_CONTINUES != 0 || self.is_open() {
            self.records.push((header, record.to_vec(), position));
            if header.flags & FLAG_BATCH_CONTINUES != 0 {
                return Ok(());
            }
            for (header, record, position) in std::mem::take(&mut self.records) {
                let body = &record[record::HEADER_BYTES..];
                replay(Replayed { header, body, position, path })?;
            }
            return Ok(());
        }
        replay(Replayed { header, body: &record[record::HEADER_BYTES..], position, path })
    }
}

/// Reads records one after another from `[pos, end)` of a file, in large chunks.
struct Scanner<'f> {
    file: &'f dyn VfsFile,
    pos: u64,
    end: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

impl<'f> Scanner<'f> {
    fn new(file: &'f dyn VfsFile, pos: u64, end: u64) -> Self {
        Self { file, pos, end, buf: Vec::new(), buf_start: pos }
    }

    fn ensure(&mut self, len: usize) -> Result<bool, RecordError> {
        if self.pos + len as u64 > self.end {
            return Ok(false);
        }
        let have = self.buf_start + self.buf.len() as u64;
        if self.pos >= self.buf_start && self.pos + len as u64 <= have {
            return Ok(true);
        }
        let want = (len.max(SCAN_CHUNK_BYTES) as u64).min(self.end - self.pos) as usize;
        self.buf.resize(want, 0);
        self.file.read_exact_at(&mut self.buf, self.pos).map_err(|_| RecordError::Truncated)?;
        self.buf_start = self.pos;
        Ok(true)
    }

    fn next(&mut self) -> Result<Option<(Header, &[u8])>, RecordError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        if !self.ensure(8)? {
            return Err(RecordError::Truncated);
        }
        let at = (self.pos - self.buf_start) as usize;
        let total = record::peek_len(&self.buf[at..])?;
        if !self.ensure(total)? {
            return Err(RecordError::Truncated);
        }
        let at = (self.pos - self.buf_start) as usize;
        let record = &self.buf[at..at + total];
        let (header, _, _) = record::decode(record)?;
        self.pos += total as u64;
        Ok(Some((header, record)))
    }
}
