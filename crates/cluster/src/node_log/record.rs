//! The records of the node's Raft log, and a bounded reader of them.
//!
//! ```text
//! record    u32 crc32c (of the rest) ‖ u32 length ‖ body
//! body      u8 kind ‖ u32 shard ‖ payload
//!   kind 1  entry     LogEntry (protobuf)
//!   kind 2  vote      Vote (protobuf): the shard's vote from here on
//!   kind 3  truncate  u64 index: the shard's entries from `index` on are gone
//! ```

use std::io;

use converge_proto::cluster as pb;
use converge_storage::vfs::VfsFile;
use openraft::Vote;
use prost::Message as _;

use crate::types::{Entry, NodeId};
use crate::wire;

/// Bytes before a record's body: checksum and length.
pub(crate) const HEADER_BYTES: usize = 8;
/// Bytes of a body before its payload: kind and shard.
const BODY_HEADER_BYTES: usize = 5;
/// The largest record, written or read: an entry larger than this is refused before it is
/// written, and a length above it on recovery is damage. It holds a payload at its ceiling,
/// or a load at its ceiling ([`crate::limits::LOAD_BYTES_MAX_CEILING`]), with room for
/// the batch of appends around it.
pub const RECORD_BYTES_MAX: usize = 80 * 1024 * 1024;

const ENTRY: u8 = 1;
const VOTE: u8 = 2;
const TRUNCATE: u8 = 3;

/// What one record says about one shard.
#[derive(Debug)]
pub(crate) enum Record {
    Entry(Entry),
    Vote(Vote<NodeId>),
    Truncate(u64),
}

/// A record longer than recovery would accept.
#[derive(Debug, thiserror::Error)]
#[error("a Raft log record of {0} bytes is over the largest record ({RECORD_BYTES_MAX})")]
pub(crate) struct TooLarge(pub(crate) usize);

/// Appends `entry`'s record for `shard` to `out`; returns its length.
pub(crate) fn encode_entry(
    out: &mut Vec<u8>,
    shard: u32,
    entry: &Entry,
) -> Result<usize, TooLarge> {
    encode(out, ENTRY, shard, |out| wire::entry_to(entry).encode(out).expect("a Vec grows"))
}

/// Appends a vote record for `shard` to `out`; returns its length.
pub(crate) fn encode_vote(out: &mut Vec<u8>, shard: u32, vote: &Vote<NodeId>) -> usize {
    encode(out, VOTE, shard, |out| wire::vote_to(vote).encode(out).expect("a Vec grows"))
        .expect("a vote is small")
}

/// Appends a record for `shard` saying its entries from `index` on are gone.
pub(crate) fn encode_truncate(out: &mut Vec<u8>, shard: u32, index: u64) -> usize {
    encode(out, TRUNCATE, shard, |out| out.extend_from_slice(&index.to_be_bytes()))
        .expect("a truncation is small")
}

/// Writes the header, kind and shard, then the payload, into `out` in place (the payload is
/// encoded once, straight into the buffer written to the file); takes it back out if the
/// record is too long.
fn encode(
    out: &mut Vec<u8>,
    kind: u8,
    shard: u32,
    payload: impl FnOnce(&mut Vec<u8>),
) -> Result<usize, TooLarge> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    out.push(kind);
    out.extend_from_slice(&shard.to_be_bytes());
    payload(out);
    let len = out.len() - start - HEADER_BYTES;
    if len > RECORD_BYTES_MAX {
        out.truncate(start);
        return Err(TooLarge(len));
    }
    let len_bytes = u32::try_from(len).expect("RECORD_BYTES_MAX is below 4 GiB").to_be_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len_bytes), &out[start + HEADER_BYTES..]);
    out[start..start + 4].copy_from_slice(&crc.to_be_bytes());
    out[start + 4..start + HEADER_BYTES].copy_from_slice(&len_bytes);
    Ok(HEADER_BYTES + len)
}

/// The body of the record at the start of `bytes` and the record's length, if it is whole and
/// checks.
pub(crate) fn check(bytes: &[u8]) -> Option<(&[u8], usize)> {
    let header = bytes.get(..HEADER_BYTES)?;
    let crc = u32::from_be_bytes(header[..4].try_into().ok()?);
    let len = usize::try_from(u32::from_be_bytes(header[4..8].try_into().ok()?)).ok()?;
    if len > RECORD_BYTES_MAX {
        return None;
    }
    let body = bytes.get(HEADER_BYTES..HEADER_BYTES + len)?;
    (crc32c::crc32c_append(crc32c::crc32c(&header[4..8]), body) == crc)
        .then_some((body, HEADER_BYTES + len))
}

/// The shard and what a record's body says, if it decodes.
pub(crate) fn decode(body: &[u8]) -> Option<(u32, Record)> {
    let (&kind, rest) = body.split_first()?;
    let shard = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    let payload = body.get(BODY_HEADER_BYTES..)?;
    let record = match kind {
        ENTRY => Record::Entry(wire::entry_from(pb::LogEntry::decode(payload).ok()?).ok()?),
        VOTE => Record::Vote(wire::vote_from(Some(&pb::Vote::decode(payload).ok()?)).ok()?),
        TRUNCATE => Record::Truncate(u64::from_be_bytes(payload.try_into().ok()?)),
        _ => return None,
    };
    Some((shard, record))
}

/// A window of a file read at once, so recovery reads it in bounded chunks.
#[derive(Default)]
pub(crate) struct Chunk {
    start: u64,
    bytes: Vec<u8>,
}

/// How much of a file recovery reads at once.
const CHUNK_BYTES: usize = 1 << 20;

impl Chunk {
    /// The body of the record that starts at `at` of `file` (`len` bytes long) and the
    /// record's length, if it is whole and checks.
    pub(crate) fn record(
        &mut self,
        file: &dyn VfsFile,
        at: u64,
        len: u64,
    ) -> io::Result<Option<(&[u8], usize)>> {
        let Some(header) = self.bytes_at(file, at, HEADER_BYTES, len)? else {
            return Ok(None);
        };
        let body_len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if body_len > RECORD_BYTES_MAX {
            return Ok(None);
        }
        let Some(bytes) = self.bytes_at(file, at, HEADER_BYTES + body_len, len)? else {
            return Ok(None);
        };
        Ok(check(bytes))
    }

    /// The `n` bytes at `at`, reading the file from `at` on if the window does not hold them;
    /// `None` if the file (`len` bytes) ends first.
    fn bytes_at(
        &mut self,
        file: &dyn VfsFile,
        at: u64,
        n: usize,
        len: u64,
    ) -> io::Result<Option<&[u8]>> {
        if at + n as u64 > len {
            return Ok(None);
        }
        let held = at >= self.start && at + n as u64 <= self.start + self.bytes.len() as u64;
        if !held {
            let want = n.max(CHUNK_BYTES).min(usize::try_from(len - at).unwrap_or(n));
            self.bytes.resize(want, 0);
            file.read_exact_at(&mut self.bytes, at)?;
            self.start = at;
        }
        let from = usize::try_from(at - self.start).map_err(io::Error::other)?;
        Ok(self.bytes.get(from..from + n))
    }
}
