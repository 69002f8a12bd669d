//! Listing contexts: every context with entries, once, in byte order of its id, with its
//! current head, whether it is resident, evicted, checkpointed or only in the log after a
//! reopen; paged by any limit, filtered by any prefix; and a context only looked at never.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use converge_core::{ContextId, Timestamp, TreeHead};
use converge_storage::store::CONTEXT_RESIDENT_BYTES;
use converge_storage::{ContextSummary, StorageMode, Store, StoreConfig};

/// What the model says each context shows.
type Model = BTreeMap<String, (TreeHead, Timestamp)>;

/// Every page of `prefix` at `limit`, joined.
fn list_all(store: &Store, prefix: &str, limit: usize) -> Vec<ContextSummary> {
    let mut out = Vec::new();
    let mut after: Option<ContextId> = None;
    let mut pages = 0;
    loop {
        let page = store.list_contexts(prefix, after.as_ref(), limit).unwrap();
        assert!(page.contexts.len() <= limit, "a page holds at most its limit");
        out.extend(page.contexts);
        pages += 1;
        assert!(pages < 10_000, "paging does not end");
        match page.next {
            Some(next) => {
                assert!(after.as_ref() < Some(&next), "the token moves forward");
                after = Some(next);
            }
            None => return out,
        }
    }
}

fn check(store: &Store, model: &Model) {
    for prefix in ["", "a", "a/", "ab", "b/1", "zz", "c", "d/"] {
        let expected: Vec<(&String, &(TreeHead, Timestamp))> =
            model.iter().filter(|(id, _)| id.starts_with(prefix)).collect();
        for limit in [1, 2, 7, 1000] {
            let listed = list_all(store, prefix, limit);
            let got: Vec<(&str, (TreeHead, Timestamp))> =
                listed.iter().map(|s| (s.id.as_str(), (s.head, s.latest_appended_at))).collect();
            let want: Vec<(&str, (TreeHead, Timestamp))> =
                expected.iter().map(|(id, head)| (id.as_str(), **head)).collect();
            assert_eq!(got, want, "prefix {prefix:?}, limit {limit}");
        }
    }
}

/// A deterministic stream of choices (xorshift).
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % n as u64).expect("below n")
    }
}

const NAMES: [&str; 12] =
    ["a", "a/1", "a/2", "a/10", "ab", "ab/x", "b/1", "b/10", "b/2", "c", "ü", "a/1/deep"];

fn exercise(config: &StoreConfig, reopen: bool) {
    let mut store = open(config);
    let mut model = Model::new();
    let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
    check(&store, &model);
    for round in 0..400 {
        let name = NAMES[dice.below(NAMES.len())];
        match dice.below(10) {
            0 => {
                // Only looked at: nothing to list.
                let _ = store.context(&ctx(&format!("watched-{name}"))).unwrap();
            }
            1 if !store.is_memory() => store.checkpoint().unwrap(),
            2 => {
                store.enforce_memory_budget();
            }
            3 if reopen && round % 50 == 3 => {
                store.close().unwrap();
                drop(store);
                store = open(config);
            }
            _ => {
                let context = store.context(&ctx(name)).unwrap();
                let entry = append(&context, "k", format!("{round}").as_bytes());
                model.insert(name.to_string(), (context.tree_head(), entry.appended_at()));
            }
        }
        if round % 20 == 0 {
            check(&store, &model);
        }
    }
    check(&store, &model);
    if let (true, StorageMode::Disk(live)) = (reopen, &config.mode) {
        // Opened from a crash image: what only the log holds, after the last checkpoint, is
        // listed too.
        for name in ["d/new", "a/new"] {
            let context = store.context(&ctx(name)).unwrap();
            let entry = append(&context, "k", b"after the last checkpoint");
            model.insert(name.to_string(), (context.tree_head(), entry.appended_at()));
        }
        let image = live.with_extension("image");
        copy_dir(live, &image);
        store.close().unwrap();
        drop(store);
        let store = open(&StoreConfig { mode: StorageMode::Disk(image), ..config.clone() });
        assert!(store.open_report().unclean_shutdown);
        check(&store, &model);
        store.checkpoint().unwrap();
        assert!(store.enforce_memory_budget());
        check(&store, &model);
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

#[test]
fn memory_mode_lists_every_context_in_order() {
    exercise(&StoreConfig::memory(), false);
}

#[test]
fn disk_mode_lists_resident_evicted_and_replayed_contexts() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let config = StoreConfig { memory_budget: 3 * CONTEXT_RESIDENT_BYTES, ..disk(&live) };
    exercise(&config, true);
}

#[test]
fn a_page_starts_after_its_token_wherever_the_token_lies() {
    let store = open(&StoreConfig::memory());
    for name in ["a/1", "a/2", "b/1"] {
        append(&store.context(&ctx(name)).unwrap(), "k", b"x");
    }
    let ids = |page: converge_storage::ContextPage| {
        page.contexts.into_iter().map(|s| s.id.as_str().to_string()).collect::<Vec<_>>()
    };
    // A token before the prefix starts at the prefix; one after everything ends the listing.
    assert_eq!(ids(store.list_contexts("b/", Some(&ctx("a/1")), 10).unwrap()), ["b/1"]);
    assert_eq!(ids(store.list_contexts("a/", Some(&ctx("a/1")), 10).unwrap()), ["a/2"]);
    let last = store.list_contexts("", Some(&ctx("b/1")), 10).unwrap();
    assert!(last.contexts.is_empty() && last.next.is_none());
    // A full page says where the next begins; the last page says there is none.
    let first = store.list_contexts("", None, 2).unwrap();
    assert_eq!(first.next.as_ref().map(ContextId::as_str), Some("a/2"));
    let exact = store.list_contexts("", None, 3).unwrap();
    assert!(exact.next.is_none(), "three contexts fit a page of three");
}
