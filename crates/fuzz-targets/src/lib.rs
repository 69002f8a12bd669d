//! Fuzz targets: each takes arbitrary bytes, feeds them to a parser of untrusted input, and
//! checks what must hold for any input — no panic, no over-allocation (the parsers bound what
//! they reserve by the input), and, where the input parses, that encoding it again gives the
//! same bytes. `fuzz/` runs them under libFuzzer; `tests/corpus.rs` replays the committed
//! corpus and every past finding, plus bounded mutations, in the normal test suite.
//!
//! A mutated input almost always fails its checksum first, so the decoders behind the
//! checksum would only ever see valid seeds. Each target therefore also runs on a copy whose
//! checksum (and, for records, length) is recomputed: the body decoders see hostile bytes.

use bytes::Bytes;
use converge_core::limits::Limits;
use converge_core::{AppendId, ContextId, Key, Metadata};
use converge_proto::{convert, v1};
use converge_storage::log::segment::SegmentHeader;
use converge_storage::record::{self, RecordKind};
use prost::Message as _;

/// A fuzz target: takes any bytes, panics only on a bug.
pub type Target = fn(&[u8]);

/// The targets, by name (the corpus directories are named after them).
pub const TARGETS: [(&str, Target); 4] = [
    ("snapshot", snapshot),
    ("record", log_record),
    ("segment_header", segment_header),
    ("request", request),
];

/// The snapshot decoder: any bytes decode and verify, or are refused; a snapshot that verifies
/// encodes back to exactly the same bytes. Also with the trailing CRC-32C made right.
pub fn snapshot(data: &[u8]) {
    snapshot_as_is(data);
    if let Some(body) = data.len().checked_sub(4) {
        let mut fixed = data.to_vec();
        let crc = crc32c::crc32c(&fixed[..body]);
        fixed[body..].copy_from_slice(&crc.to_be_bytes());
        snapshot_as_is(&fixed);
    }
}

fn snapshot_as_is(data: &[u8]) {
    let blob = Bytes::copy_from_slice(data);
    if let Ok(snap) = converge_core::snapshot::decode(&blob, &Limits::default()) {
        let again = converge_core::snapshot::encode(snap.context(), snap.entries());
        assert_eq!(again, data, "a verified snapshot has one encoding");
    }
}

/// A log record: the checksum, header and body decoders; an entry record that decodes
/// encodes back to the same bytes. Also with the length and checksum made right.
pub fn log_record(data: &[u8]) {
    log_record_as_is(data);
    if data.len() >= record::HEADER_BYTES {
        let mut fixed = data.to_vec();
        let len = u32::try_from(fixed.len() - 8).unwrap_or(u32::MAX);
        fixed[4..8].copy_from_slice(&len.to_be_bytes());
        let crc = crc32c::crc32c(&fixed[4..]);
        fixed[..4].copy_from_slice(&crc.to_be_bytes());
        log_record_as_is(&fixed);
    }
}

fn log_record_as_is(data: &[u8]) {
    let Ok((header, body, len)) = record::decode(data) else { return };
    assert!(len <= data.len());
    match header.kind {
        RecordKind::Entry => {
            if let Ok(rec) = record::decode_entry_body(body, None) {
                let mut again = Vec::new();
                record::encode(&mut again, &header, |b| {
                    record::encode_entry_body(b, rec.context, &rec.entry, rec.append_id.as_ref());
                });
                assert_eq!(again, data[..len], "an entry record has one encoding");
            }
        }
        RecordKind::Context => {
            let _ = record::decode_context_body(body);
        }
        RecordKind::Seal => {
            let _ = record::decode_seal_body(body);
        }
        RecordKind::Batch => {
            let _ = record::decode_batch_body(body);
        }
        RecordKind::TruncateAfter | RecordKind::Fence => {}
    }
}

/// A segment header. Also with its checksum made right.
pub fn segment_header(data: &[u8]) {
    segment_header_as_is(data);
    if data.len() >= 128 {
        let mut fixed = data[..128].to_vec();
        let crc = crc32c::crc32c(&fixed[..124]);
        fixed[124..].copy_from_slice(&crc.to_be_bytes());
        segment_header_as_is(&fixed);
    }
}

fn segment_header_as_is(data: &[u8]) {
    if let Ok(header) = SegmentHeader::decode(data, std::path::Path::new("fuzz")) {
        assert_eq!(header.encode()[..], data[..128], "a valid header has one encoding");
    }
}

/// Requests off the wire: protobuf decoding of each request message, then the checks the
/// ledger applies to their fields. The first byte picks the message.
pub fn request(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else { return };
    match which % 4 {
        0 => {
            if let Ok(req) = v1::AppendRequest::decode(bytes) {
                let req = convert::append_request_from_wire(req);
                let _ = ContextId::try_new(req.context_id);
                let _ = Key::try_new(req.key);
                let _ = Metadata::try_from_pairs(req.metadata);
                let _ = req.append_id.map(AppendId::try_new);
                let _ = converge_core::validate::check_payload(
                    req.payload.len(),
                    Limits::default().payload_bytes_max,
                );
            }
        }
        1 => {
            if let Ok(req) = v1::GetRequest::decode(bytes) {
                let req = convert::get_request_from_wire(req);
                let _ = ContextId::try_new(req.context_id);
                let _ = req.key.map(Key::try_new);
            }
        }
        2 => {
            if let Ok(req) = v1::LoadRequest::decode(bytes) {
                let req = convert::load_request_from_wire(req);
                if ContextId::try_new(req.context_id).is_ok() {
                    snapshot(&req.snapshot);
                }
            }
        }
        _ => {
            if let Ok(req) = v1::WatchRequest::decode(bytes) {
                let req = convert::watch_request_from_wire(req);
                let _ = ContextId::try_new(req.context_id);
                let _ = req.key.map(Key::try_new);
            }
        }
    }
}
