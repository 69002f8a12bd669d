//! Helpers for the storage tests: synchronous appends and reads.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use converge_core::{
    AppendId, ContextId, Entry, Key, Metadata, PartialContentHash, Seq, Timestamp,
};
use converge_storage::{Appended, Context, NewEntry, ReadQuery, Result, Store, StoreConfig};

pub fn ctx(name: &str) -> ContextId {
    ContextId::try_new(name).unwrap()
}

pub fn new_entry(
    context: &ContextId,
    key: &str,
    payload: &[u8],
    append_id: Option<&str>,
) -> NewEntry {
    let key = Key::try_new(key).unwrap();
    let payload = Bytes::copy_from_slice(payload);
    NewEntry {
        prefix: PartialContentHash::new(context, &key, &payload),
        key,
        payload,
        metadata: Metadata::new(),
        received: None,
        append_id: append_id.map(|id| AppendId::try_new(id).unwrap()),
    }
}

/// Appends and waits until durable; returns the entry and whether it was new.
pub fn append_full(
    context: &Arc<Context>,
    key: &str,
    payload: &[u8],
    append_id: Option<&str>,
    now: u64,
) -> Result<(Arc<Entry>, bool)> {
    let (tx, rx) = mpsc::channel();
    let outcome = context.append(
        new_entry(context.id(), key, payload, append_id),
        Timestamp(now),
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    )?;
    let durable = rx.recv_timeout(Duration::from_secs(30)).expect("completion called")?;
    let (entry, new) = match outcome {
        Appended::New(e) => (e, true),
        Appended::Recorded(e) => (e, false),
    };
    assert_eq!(entry, durable, "the completion reports the appended entry");
    Ok((entry, new))
}

pub fn append(context: &Arc<Context>, key: &str, payload: &[u8]) -> Arc<Entry> {
    append_full(context, key, payload, None, 1_000).unwrap().0
}

pub fn read_all(context: &Context) -> Vec<Arc<Entry>> {
    read(context, Seq(0), usize::MAX, None)
}

/// At most `limit` entries after `after` and before `before` (0: none), with `key` if given,
/// newest first if asked.
pub fn read_range(
    context: &Context,
    (after, before): (u64, u64),
    limit: usize,
    key: Option<&str>,
    newest_first: bool,
) -> Vec<Arc<Entry>> {
    let q = ReadQuery {
        after: Seq(after),
        before: (before > 0).then_some(Seq(before)),
        newest_first,
        limit,
        key: key.map(|k| Key::try_new(k).unwrap()),
        bytes_max: usize::MAX,
    };
    context.read(&q).unwrap().entries
}

pub fn read(context: &Context, after: Seq, limit: usize, key: Option<&str>) -> Vec<Arc<Entry>> {
    let q = ReadQuery {
        after,
        before: None,
        newest_first: false,
        limit,
        key: key.map(|k| Key::try_new(k).unwrap()),
        bytes_max: usize::MAX,
    };
    context.read(&q).unwrap().entries
}

pub fn disk(dir: &std::path::Path) -> StoreConfig {
    StoreConfig::disk(dir)
}

pub fn open(config: &StoreConfig) -> Store {
    Store::open(config.clone()).unwrap()
}
