//! Damage to the data directory: a torn tail of the newest segment is cut (at every byte offset
//! of the last records), zeroes and garbage at the tail are cut, and damage anywhere else is a
//! hard error naming the file and offset — never a silently shorter log.
//!
//! A "crash image" is a copy of a running store's directory taken while no write is in
//! flight, with checkpoints pushed far away so the records under test are after the index's
//! watermark, as they are after a crash.
#![allow(clippy::cast_possible_truncation, reason = "test sizes and indices are small")]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use converge_core::{Entry, Seq};
use converge_storage::log::{DiskLog, LogConfig, LogPoint};
use converge_storage::record::RecordKind;
use converge_storage::{Durability, Error, Store, StoreConfig};

fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        checkpoint_bytes: u64::MAX / 2,
        checkpoint_interval: Duration::from_secs(3600),
        ..disk(dir)
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A crash image of a store holding `count` entries of context "c" (and returns the entries
/// and the directory holding the image).
fn crash_image(count: usize, segment_bytes: u64) -> (tempfile::TempDir, PathBuf, Vec<Arc<Entry>>) {
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("live");
    let store = Store::open(StoreConfig { segment_bytes, ..config(&live) }).unwrap();
    let c = store.context(&ctx("c")).unwrap();
    let entries: Vec<_> =
        (0..count).map(|i| append(&c, "k", format!("entry number {i}").as_bytes())).collect();
    let image = tmp.path().join("image");
    copy_dir(&live, &image);
    store.close().unwrap();
    (tmp, image, entries)
}

fn newest_segment(dir: &Path) -> PathBuf {
    let mut segments: Vec<_> =
        std::fs::read_dir(dir.join("log")).unwrap().map(|e| e.unwrap().path()).collect();
    segments.sort();
    segments.pop().unwrap()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<_> =
        std::fs::read_dir(dir.join("log")).unwrap().map(|e| e.unwrap().path()).collect();
    segments.sort();
    segments
}

fn entries_after_open(dir: &Path) -> Result<Vec<Arc<Entry>>, Error> {
    let store = Store::open(config(dir))?;
    let found = match store.find(&ctx("c"))? {
        Some(c) => read_all(&c),
        None => Vec::new(),
    };
    store.close()?;
    Ok(found)
}

/// A record in a segment: where it starts and ends, and its kind byte.
#[derive(Debug, Clone, Copy)]
struct Rec {
    start: u64,
    end: u64,
    kind: u8,
}

/// Entry records are kind 1 (batch records, kind 4, start every group-commit batch).
const ENTRY: u8 = 1;

/// The records of a segment, in order (up to the zeros the writer writes ahead of them: no
/// record is empty).
fn records(path: &Path) -> Vec<Rec> {
    let bytes = std::fs::read(path).unwrap();
    let mut at = 128usize;
    let mut out = vec![];
    while at + 9 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        out.push(Rec { start: at as u64, end: (at + 8 + len) as u64, kind: bytes[at + 8] });
        at += 8 + len;
    }
    out
}

/// Where the entry records of a segment start.
fn entry_offsets(path: &Path) -> Vec<u64> {
    records(path).iter().filter(|r| r.kind == ENTRY).map(|r| r.start).collect()
}

/// After a cut at `cut`: the length recovery keeps (the end of the last whole record) and the
/// number of whole entry records.
fn whole_at(records: &[Rec], cut: u64) -> (u64, usize) {
    let kept = records.iter().filter(|r| r.end <= cut).map(|r| r.end).max().unwrap_or(128);
    let entries = records.iter().filter(|r| r.kind == ENTRY && r.end <= cut).count();
    (kept, entries)
}

/// Opens the log alone at `dir` and returns the bodies it replays from the start.
fn replay_log(dir: &Path) -> Result<Vec<Vec<u8>>, Error> {
    let config = LogConfig {
        dir: dir.to_path_buf(),
        node: [0; 16],
        segment_bytes: 64 * 1024 * 1024,
        durability: Durability::Fsync,
        linger_max: std::time::Duration::ZERO,
        faults: Arc::default(),
        vfs: converge_storage::vfs::RealFs::shared(),
        sync_interval: std::time::Duration::from_secs(1),
        manual: false,
    };
    let mut bodies = Vec::new();
    let log = DiskLog::open(config, LogPoint::default(), &mut |r| {
        bodies.push(r.body.to_vec());
        Ok(())
    })?;
    log.close();
    Ok(bodies)
}

#[test]
fn the_log_cuts_a_torn_tail_at_every_byte_offset_of_the_last_records() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = tmp.path().join("pristine");
    let config = LogConfig {
        dir: pristine.clone(),
        node: [0; 16],
        segment_bytes: 64 * 1024 * 1024,
        durability: Durability::Fsync,
        linger_max: std::time::Duration::ZERO,
        faults: Arc::default(),
        vfs: converge_storage::vfs::RealFs::shared(),
        sync_interval: std::time::Duration::from_secs(1),
        manual: false,
    };
    let log = DiskLog::open(config, LogPoint::default(), &mut |_| Ok(())).unwrap();
    let bodies: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 20 + usize::from(i) * 13]).collect();
    for body in &bodies {
        log.append(|records| {
            records.push(RecordKind::Entry, 0, |b| b.extend_from_slice(body), None)
        })
        .unwrap();
    }
    log.close();
    drop(log);
    let segment = pristine.join("00000000000000000001.log");
    let layout = records(&segment);
    let original = std::fs::read(&segment).unwrap();
    let start = layout[layout.len() - 3].start; // the last three records
    for cut in start..=original.len() as u64 {
        let dir = tmp.path().join("cut");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("00000000000000000001.log"), &original[..cut as usize]).unwrap();
        let (kept, whole) = whole_at(&layout, cut);
        let replayed = replay_log(&dir).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(replayed, bodies[..whole], "cut at {cut}: every whole record survives");
        assert_eq!(
            std::fs::metadata(dir.join("00000000000000000001.log")).unwrap().len(),
            kept,
            "cut at {cut}: the torn part is removed"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn the_store_recovers_from_a_torn_tail() {
    let (tmp, image, entries) = crash_image(12, 64 * 1024 * 1024);
    let segment = newest_segment(&image);
    let layout = records(&segment);
    let last = layout[layout.len() - 1].start;
    let end = layout[layout.len() - 1].end;
    // A sample of cuts through the last record (every offset is covered at the log level).
    for cut in [last, last + 1, last + 7, last + 8, last + 31, last + 32, end - 1, end] {
        let dir = tmp.path().join(format!("cut-{cut}"));
        copy_dir(&image, &dir);
        let file = std::fs::OpenOptions::new().write(true).open(newest_segment(&dir)).unwrap();
        file.set_len(cut).unwrap();
        drop(file);
        let (_, whole) = whole_at(&layout, cut);
        let store = Store::open(config(&dir)).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert!(store.open_report().unclean_shutdown, "the image is of a running store");
        let c = store.context(&ctx("c")).unwrap();
        assert_eq!(read_all(&c), entries[..whole], "cut at {cut}: every whole record survives");
        // The store is usable: the next append takes the next sequence.
        assert_eq!(append(&c, "k", b"after").sequence(), Seq(whole as u64 + 1));
        store.close().unwrap();
    }
}

#[test]
fn zeroes_and_garbage_at_the_tail_are_cut() {
    let (tmp, image, entries) = crash_image(5, 64 * 1024 * 1024);
    let mut junk: Vec<u8> =
        (0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    junk[0] = 0xff; // an impossible length
    for (name, tail) in [("zeroes", vec![0u8; 8192]), ("garbage", junk)] {
        let dir = tmp.path().join(name);
        copy_dir(&image, &dir);
        let path = newest_segment(&dir);
        let clean_len = records(&path).last().unwrap().end as usize;
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(clean_len); // without the zeros written ahead: the tail under test
        bytes.extend_from_slice(&tail);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(entries_after_open(&dir).unwrap(), entries, "{name}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), clean_len as u64, "{name} cut off");
    }
}

/// The writer keeps the newest segment longer than its records (zeros, so that an fsync does
/// not also flush a new file size); a clean close cuts that, and so does recovery after a
/// crash, keeping every entry.
#[test]
fn the_length_kept_ahead_of_the_records_is_cut_at_close_and_after_a_crash() {
    let (tmp, image, entries) = crash_image(20, 64 * 1024 * 1024);
    let path = newest_segment(&image);
    let end = records(&path).last().unwrap().end;
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() as u64 > end, "a running store's segment reaches past its records");
    assert!(bytes[end as usize..].iter().all(|&b| b == 0), "and reads as zeros there");
    let closed = newest_segment(&tmp.path().join("live"));
    assert_eq!(std::fs::metadata(&closed).unwrap().len(), end, "a clean close cuts it");
    assert_eq!(entries_after_open(&image).unwrap(), entries, "recovery keeps every entry");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), end, "and cuts the zeros");
}

#[test]
fn a_flipped_bit_before_valid_records_is_a_hard_error() {
    let (_tmp, image, _) = crash_image(10, 64 * 1024 * 1024);
    let path = newest_segment(&image);
    let offsets = entry_offsets(&path);
    let victim = offsets[4] + 40; // inside the body of a record in the middle
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[victim as usize] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    match entries_after_open(&image) {
        Err(Error::Corrupt { path: p, offset, reason }) => {
            assert_eq!(p, path, "names the file");
            assert_eq!(offset, offsets[4], "names the damaged record's offset");
            assert!(reason.contains("not a torn write"), "{reason}");
        }
        other => panic!("expected a hard error, got {other:?}"),
    }
}

#[test]
fn damage_in_checkpointed_sealed_segments_is_reported_when_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let store = Store::open(StoreConfig { segment_bytes: 4096, ..config(&dir) }).unwrap();
    let c = store.context(&ctx("c")).unwrap();
    for i in 0..100 {
        append(&c, "k", format!("entry {i}").as_bytes());
    }
    store.close().unwrap();
    drop((c, store));
    // The first segment is sealed and entirely before the checkpoint's watermark.
    let path = segments(&dir)[0].clone();
    let offsets = entry_offsets(&path);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[offsets[5] as usize + 50] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    // Opening does not rescan checkpointed sealed segments, but reading the entry checks it.
    let store = Store::open(config(&dir)).unwrap();
    let c = store.find(&ctx("c")).unwrap().unwrap();
    let q = converge_storage::ReadQuery {
        after: Seq(0),
        before: None,
        newest_first: false,
        limit: usize::MAX,
        key: None,
        bytes_max: usize::MAX,
    };
    match c.read(&q) {
        Err(Error::Corrupt { path: p, offset, .. }) => assert_eq!((p, offset), (path, offsets[5])),
        other => panic!("expected corruption, got {other:?}"),
    }
    assert_eq!(read(&c, Seq(0), 3, None).len(), 3, "undamaged entries still read");
    assert_eq!(read(&c, Seq(90), 100, None).len(), 10, "undamaged entries still read");
}

#[test]
fn a_truncated_swapped_or_missing_sealed_segment_is_a_hard_error() {
    let (tmp, image, _) = crash_image(200, 4096);
    let all = segments(&image);
    assert!(all.len() >= 4, "the image has several segments");

    let truncated = tmp.path().join("truncated");
    copy_dir(&image, &truncated);
    let second = &segments(&truncated)[1];
    let len = std::fs::metadata(second).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(second).unwrap().set_len(len - 10).unwrap();
    let err = entries_after_open(&truncated).unwrap_err();
    assert!(matches!(&err, Error::Corrupt { path, .. } if path == second), "{err}");

    let swapped = tmp.path().join("swapped");
    copy_dir(&image, &swapped);
    let s = segments(&swapped);
    std::fs::rename(&s[1], tmp.path().join("x")).unwrap();
    std::fs::rename(&s[2], &s[1]).unwrap();
    std::fs::rename(tmp.path().join("x"), &s[2]).unwrap();
    let err = entries_after_open(&swapped).unwrap_err();
    assert!(err.to_string().contains("renamed or swapped"), "{err}");

    let missing = tmp.path().join("missing");
    copy_dir(&image, &missing);
    std::fs::remove_file(&segments(&missing)[1]).unwrap();
    let err = entries_after_open(&missing).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn an_incomplete_atomic_batch_is_discarded_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("live");
    let store = Store::open(config(&live)).unwrap();
    let c = store.context(&ctx("c")).unwrap();
    let first = append(&c, "k", b"before the batch");
    // Build five entries that follow `first`, as a loaded snapshot's suffix would.
    let other = Store::open(StoreConfig::memory()).unwrap();
    let m = other.context(&ctx("c")).unwrap();
    append(&m, "k", b"before the batch");
    let batch: Vec<Entry> =
        (0..5).map(|i| (*append(&m, "k", format!("batch {i}").as_bytes())).clone()).collect();
    let (tx, rx) = std::sync::mpsc::channel();
    c.append_verified(
        Seq(1),
        batch.into_iter().map(|e| (e, None)).collect(),
        Box::new(move |r| tx.send(r).unwrap()),
    )
    .unwrap();
    rx.recv().unwrap().unwrap();
    assert_eq!(read_all(&c).len(), 6);
    let image = tmp.path().join("image");
    copy_dir(&live, &image);
    store.close().unwrap();

    let path = newest_segment(&image);
    let offsets = entry_offsets(&path);
    let cut = offsets[offsets.len() - 1] + 20; // inside the batch's last record
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(cut).unwrap();
    assert_eq!(entries_after_open(&image).unwrap(), vec![first], "none of the batch survives");
}
