//! Decoding allocates in proportion to its input, whatever the input claims: a counting global
//! allocator records the largest single allocation made while hostile blobs are decoded.
#![allow(clippy::cast_possible_truncation, reason = "test sizes and indices are small")]
#![expect(unsafe_code, reason = "a global allocator wrapper is the only way to count allocations")]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use converge_core::limits::Limits;
use converge_core::snapshot;

struct Counting;

static RECORDING: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers every call to the system allocator unchanged; only reads the layout's size.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if RECORDING.load(Ordering::Relaxed) {
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if RECORDING.load(Ordering::Relaxed) {
            LARGEST.fetch_max(new_size, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn reseal(mut blob: Vec<u8>) -> Vec<u8> {
    blob.truncate(blob.len() - 4);
    let crc = crc32c::crc32c(&blob);
    blob.extend_from_slice(&crc.to_be_bytes());
    blob
}

/// The largest single allocation made while decoding `blob`.
fn largest_allocation(blob: Vec<u8>) -> (usize, usize) {
    let len = blob.len();
    let blob = Bytes::from(blob);
    LARGEST.store(0, Ordering::SeqCst);
    RECORDING.store(true, Ordering::SeqCst);
    let result = snapshot::decode(&blob, &Limits::default());
    RECORDING.store(false, Ordering::SeqCst);
    assert!(result.is_err(), "hostile blobs are refused");
    (len, LARGEST.load(Ordering::SeqCst))
}

#[test]
fn hostile_claims_do_not_allocate() {
    let (context, entries) = common::entries::golden();
    let blob = snapshot::encode(&context, &entries);
    let count_at = 8 + 4 + 4 + context.as_str().len();
    let first = count_at + 48;

    let mut hostile = Vec::new();
    for claim in [1u64 << 60, u64::MAX, 1 << 32, 10_000] {
        let mut b = blob.clone();
        b[count_at..count_at + 8].copy_from_slice(&claim.to_be_bytes());
        b[count_at + 8..count_at + 16].copy_from_slice(&claim.to_be_bytes());
        hostile.push(reseal(b));
    }
    // The first key's length, then its payload length, then the metadata count, set huge.
    for at in [first + 24, first + 24 + 4 + 5, first + 24 + 4 + 5 + 4 + 17] {
        let mut b = blob.clone();
        b[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        hostile.push(reseal(b));
    }
    for blob in hostile {
        let (len, largest) = largest_allocation(blob);
        assert!(largest <= 4 * len + 4096, "decoding {len} bytes made a {largest}-byte allocation");
    }
}
