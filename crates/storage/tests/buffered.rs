//! Buffered mode acknowledges after `write`, before `fsync`: a power cut may lose the last
//! moments, never more than about the sync interval, and a checkpoint never names log that a
//! cut could take away.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use converge_core::Timestamp;
use converge_storage::vfs::sim::SimDisk;
use converge_storage::{Durability, StoreConfig};

fn buffered(dir: &Path, sim: &SimDisk, sync_interval: Duration) -> StoreConfig {
    StoreConfig {
        durability: Durability::Buffered,
        sync_interval,
        vfs: Arc::new(sim.clone()),
        checkpoint_interval: Duration::from_secs(3600),
        ..disk(dir)
    }
}

fn segment(dir: &Path) -> std::path::PathBuf {
    dir.join("log").join("00000000000000000001.log")
}

#[test]
fn buffered_mode_syncs_the_log_within_the_sync_interval() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new();
    let store = open(&buffered(dir.path(), &disk, Duration::from_millis(50)));
    let c = store.context(&ctx("c")).unwrap();
    for i in 0..20u8 {
        append(&c, "k", &[i; 100]);
    }
    // The writer syncs once the interval has passed, load or no load.
    let deadline = Instant::now() + Duration::from_secs(10);
    while disk.unsynced_bytes(&segment(dir.path())) > 0 {
        assert!(Instant::now() < deadline, "the log was not synced within 10 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    store.close().unwrap();
}

/// A buffered store on `disk` in `dir` holding 20 appends acknowledged but not yet fsynced.
fn with_unsynced_appends(dir: &Path, disk: &SimDisk) -> converge_storage::Store {
    let store = open(&buffered(dir, disk, Duration::from_secs(3600)));
    let c = store.context(&ctx("c")).unwrap();
    for i in 0..20u8 {
        append(&c, "k", &[i; 100]);
    }
    assert!(disk.unsynced_bytes(&segment(dir)) > 2000, "acknowledged before fsync");
    store
}

#[test]
fn buffered_mode_does_not_sync_per_append_but_a_checkpoint_syncs_first() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new();
    let store = with_unsynced_appends(dir.path(), &disk);
    store.checkpoint().unwrap();
    assert_eq!(disk.unsynced_bytes(&segment(dir.path())), 0, "the checkpoint synced the log");
    store.close().unwrap();
}

#[test]
fn sync_makes_every_append_reported_so_far_durable() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new();
    let store = with_unsynced_appends(dir.path(), &disk);
    store.sync().unwrap();
    assert_eq!(disk.unsynced_bytes(&segment(dir.path())), 0, "sync fsynced the log");
    store.close().unwrap();
}

#[test]
fn sync_covers_an_append_from_the_moment_it_is_reported() {
    // A cluster node saves how far it applied once the ledger reported those appends and a
    // `sync` after that returned: called from the completion itself, `sync` must cover it.
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new();
    let store = open(&buffered(dir.path(), &disk, Duration::from_secs(3600)));
    let c = store.context(&ctx("c")).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (syncer, sim, file) = (store.clone(), disk.clone(), segment(dir.path()));
    let done = Box::new(move |appended: converge_storage::Result<_>| {
        appended.unwrap();
        syncer.sync().unwrap();
        tx.send(sim.unsynced_bytes(&file)).unwrap();
    });
    c.append(new_entry(c.id(), "k", &[7; 100], None), Timestamp(1_000), done).unwrap();
    let unsynced = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(unsynced, 0, "sync from the completion left the reported append unsynced");
    store.close().unwrap();
}
