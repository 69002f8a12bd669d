//! A log of 10,000 segments opens and reads whole under `ulimit -n 1024`: recovery opens one
//! segment at a time, and readers keep at most `OPEN_SEGMENTS_MAX` open.
//!
//! Its own test binary: it lowers this process's open-file limit (with `prlimit`, from
//! util-linux), which would disturb other tests running beside it.

mod common;

use std::process::Command;

use common::*;
use converge_storage::StoreConfig;
use converge_storage::log::OPEN_SEGMENTS_MAX;

const SEGMENTS: usize = 10_000;

fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn ten_thousand_segments_read_fine_under_ulimit_1024() {
    // tmpfs when there is one: 10,000 segment creations cost 30,000 fsyncs.
    let root = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
    let dir = tempfile::tempdir_in(root).unwrap();
    let config = StoreConfig { segment_bytes: 4096, ..disk(dir.path()) };
    let store = open(&config);
    let c = store.context(&ctx("c")).unwrap();
    let payload = vec![7u8; 4000];
    for _ in 0..SEGMENTS {
        append(&c, "k", &payload);
    }
    store.close().unwrap();
    drop((c, store));
    let segments = std::fs::read_dir(dir.path().join("log")).unwrap().count();
    assert!(segments >= SEGMENTS, "{segments} segments");

    let pid = std::process::id().to_string();
    let status = Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=1024:1024"])
        .status()
        .expect("prlimit (util-linux) runs");
    assert!(status.success());
    let limit = std::fs::read_to_string("/proc/self/limits").unwrap();
    assert!(
        limit.lines().any(|l| l.starts_with("Max open files") && l.contains(" 1024 ")),
        "{limit}"
    );

    let store = open(&config);
    let c = store.find(&ctx("c")).unwrap().unwrap();
    let mut seen = 0;
    let mut after = converge_core::Seq(0);
    loop {
        let page = read(&c, after, 500, None);
        let Some(last) = page.last() else { break };
        assert!(page.iter().all(|e| e.payload().len() == 4000));
        seen += page.len();
        after = last.sequence();
        assert!(store.stats().open_segments <= OPEN_SEGMENTS_MAX);
    }
    assert_eq!(seen, SEGMENTS, "every entry read back");
    assert!(open_files() < 1024, "{} files open", open_files());
    store.close().unwrap();
}
