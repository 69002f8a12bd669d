//! A failed write or fsync poisons the store: nothing more is acknowledged, nothing is retried,
//! and the data directory cannot be reopened in the same process (its page cache may hold bytes
//! the disk never got); a restart, or a power cut, recovers it.
#![allow(clippy::cast_possible_truncation, reason = "test sizes and indices are small")]

mod common;

use std::sync::Arc;

use common::*;
use converge_storage::fault::Faults;
use converge_storage::vfs::sim::{CrashPattern, Rng, SimDisk};
use converge_storage::{Error, Store, StoreConfig};

fn poisons(fail: impl Fn(&Faults, &SimDisk), restart: CrashPattern) {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new();
    let faults = Arc::new(Faults::default());
    let config = StoreConfig {
        faults: Arc::clone(&faults),
        vfs: Arc::new(disk.clone()),
        ..disk_config(dir.path())
    };
    let store = open(&config);
    let c = store.context(&ctx("c")).unwrap();
    let other = store.context(&ctx("other")).unwrap();
    let good: Vec<_> = (0..3).map(|i| append(&c, "k", &[i])).collect();

    fail(&faults, &disk);
    let err = append_full(&c, "k", b"doomed", None, 1).unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    // The disk works again, but nothing is acknowledged: no retry of the fsync.
    for context in [&c, &other] {
        let err = append_full(context, "k", b"later", None, 1).unwrap_err();
        assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    }
    assert!(store.poisoned().is_some());
    assert_eq!(read_all(&c), good, "durable entries are still readable");
    assert_eq!(c.tree_head().root.size.0, 3, "the tree head shows only durable entries");
    store.close().unwrap();
    drop((c, other, store));

    // Reopening in this process would read the page cache, which may hold the failed bytes.
    let err = Store::open(config.clone()).err().expect("an in-process reopen is refused");
    assert!(matches!(err, Error::SyncFailed(_)), "{err}");
    assert!(err.to_string().contains("restart the process"), "{err}");

    // A new process sees what the disk holds: after a restart (the page cache kept) or a
    // power cut (it lost).
    let after = disk.with_cut_point(|cut| cut.crash(&mut Rng::new(1), restart));
    let config = StoreConfig { vfs: Arc::new(after), faults: Arc::default(), ..config };
    let store = open(&config);
    assert!(store.poisoned().is_none());
    let c = store.context(&ctx("c")).unwrap();
    let found = read_all(&c);
    assert_eq!(found[..3], good[..], "every acknowledged entry survives");
    // The unacknowledged one may or may not have reached the disk; either way the context
    // stays gap-free and appends resume.
    assert!(found.len() <= 4);
    let next = append(&c, "k", b"after reopen");
    assert_eq!(next.sequence().0, found.len() as u64 + 1);
    store.close().unwrap();
}

fn disk_config(dir: &std::path::Path) -> StoreConfig {
    disk(dir)
}

#[test]
fn a_failed_fsync_poisons_until_restart() {
    for restart in [CrashPattern::KeepAll, CrashPattern::LoseAll] {
        poisons(|f, _| f.fail_sync(1), restart);
        poisons(|_, disk| disk.fail_sync(1), restart);
    }
}

#[test]
fn a_failed_write_poisons_until_restart() {
    for restart in [CrashPattern::KeepAll, CrashPattern::LoseAll] {
        poisons(|f, _| f.fail_write(1), restart);
        poisons(|_, disk| disk.set_capacity(Some(0)), restart);
    }
}

#[test]
fn the_real_file_system_refuses_an_in_process_reopen_after_a_failed_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let config = StoreConfig { faults: Arc::clone(&faults), ..disk(dir.path()) };
    let store = open(&config);
    let c = store.context(&ctx("c")).unwrap();
    append(&c, "k", b"ok");
    faults.fail_sync(1);
    assert!(append_full(&c, "k", b"doomed", None, 1).is_err());
    store.close().unwrap();
    drop((c, store));
    let err = Store::open(config).err().expect("refused");
    assert!(matches!(err, Error::SyncFailed(_)), "{err}");
}

#[test]
fn a_panic_on_the_writer_thread_fails_every_waiting_append_and_poisons() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new();
    let faults = Arc::new(Faults::default());
    let config =
        StoreConfig { faults: Arc::clone(&faults), vfs: Arc::new(disk), ..disk_config(dir.path()) };
    let store = open(&config);
    let c = store.context(&ctx("c")).unwrap();
    append(&c, "k", b"before");
    faults.panic_write(1);
    // Several appenders wait at once; each must hear back (append_full waits at most 30 s).
    let outcomes: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let c = Arc::clone(&c);
                scope.spawn(move || append_full(&c, "k", &[i], None, 1))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for outcome in outcomes {
        let err = outcome.unwrap_err();
        assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    }
    let err = store.poisoned().expect("the store is poisoned");
    assert!(err.to_string().contains("panicked"), "the cause is named: {err}");
    let err = append_full(&c, "k", b"later", None, 1).unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    assert_eq!(read_all(&c).len(), 1, "what was durable is still readable");
    store.close().unwrap();
}
