//! Segment files: header, naming, seal, and the hash chain that links them.
//!
//! # Layout, segment format version 1
//!
//! ```text
//! offset size  field
//! 0      8     magic              89 43 56 4C 53 45 47 0A  ("\x89CVLSEG\n")
//! 8      4     u32 version        1
//! 12     4     u32 header bytes   128
//! 16     8     u64 segment number 1, 2, 3, … (also the file name: 20 digits, ".log")
//! 24     8     u64 first lsn      the LSN of the segment's first record
//! 32     16    node id            the node that created it
//! 48     8     u64 previous segment's record count (0 for the first segment)
//! 56     8     u64 previous segment's bytes before its seal (0 for the first)
//! 64     32    previous segment's digest (zeros for the first)
//! 96     28    reserved, zero
//! 124    4     u32 crc32c of bytes 0..124
//! 128    …     records (see `record`), then, once sealed, one seal record
//! ```
//!
//! A segment is *sealed* when the writer moves to the next one: it appends a seal record
//! (record count, bytes, digest) and fsyncs it before creating the next segment, whose header
//! repeats those three values. The digest is SHA-256 over the 8-byte checksum-and-length prefix
//! of every record in order, so it commits to every record's checksum. At open, every sealed
//! segment must end in its seal and agree with the next segment's header: a truncated,
//! missing or swapped old segment is a hard error, never a silently shorter log. Only the
//! newest segment may end in a torn write.

use std::path::{Path, PathBuf};

use converge_core::Hash;
use converge_core::codec::Reader;

use crate::error::{Error, Result};
use crate::record::{self, RecordKind, SEAL_RECORD_BYTES, Seal};
use crate::vfs::{Vfs, VfsFile};

/// The eight bytes every segment starts with.
pub const SEGMENT_MAGIC: [u8; 8] = *b"\x89CVLSEG\n";

/// The segment format this code writes and reads.
pub const SEGMENT_VERSION: u32 = 1;

/// Bytes of the segment header; records start here.
pub const SEGMENT_HEADER_BYTES: usize = 128;

/// A segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's number.
    pub number: u32,
    /// The LSN of its first record.
    pub first_lsn: u64,
    /// The node that created it.
    pub node: [u8; 16],
    /// What the previous segment's seal says, or zeros for the first segment.
    pub previous: Seal,
}

impl SegmentHeader {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut out = [0; SEGMENT_HEADER_BYTES];
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..12].copy_from_slice(&SEGMENT_VERSION.to_be_bytes());
        out[12..16].copy_from_slice(&(SEGMENT_HEADER_BYTES as u32).to_be_bytes());
        out[16..24].copy_from_slice(&u64::from(self.number).to_be_bytes());
        out[24..32].copy_from_slice(&self.first_lsn.to_be_bytes());
        out[32..48].copy_from_slice(&self.node);
        out[48..56].copy_from_slice(&self.previous.records.to_be_bytes());
        out[56..64].copy_from_slice(&self.previous.bytes.to_be_bytes());
        out[64..96].copy_from_slice(self.previous.digest.as_bytes());
        let crc = crc32c::crc32c(&out[..124]);
        out[124..128].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parses and checks a header read from `path`.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<Self> {
        let corrupt = |reason: &str| Error::corrupt(path, 0, format!("segment header: {reason}"));
        if bytes.len() < SEGMENT_HEADER_BYTES {
            return Err(corrupt("shorter than 128 bytes"));
        }
        let bytes = &bytes[..SEGMENT_HEADER_BYTES];
        if bytes[..8] != SEGMENT_MAGIC {
            return Err(corrupt("not a Converge Ledger log segment (wrong magic bytes)"));
        }
        let stored = u32::from_be_bytes([bytes[124], bytes[125], bytes[126], bytes[127]]);
        if crc32c::crc32c(&bytes[..124]) != stored {
            return Err(corrupt("checksum mismatch"));
        }
        let mut r = Reader::new(&bytes[8..124]);
        let read = |e: converge_core::codec::ReadError| corrupt(e.what);
        let version = r.u32("version").map_err(read)?;
        if version != SEGMENT_VERSION {
            return Err(corrupt(&format!(
                "format version {version} is not supported (this build reads {SEGMENT_VERSION})"
            )));
        }
        let header_bytes = r.u32("header length").map_err(read)?;
        if header_bytes as usize != SEGMENT_HEADER_BYTES {
            return Err(corrupt("unexpected header length"));
        }
        let number = r.u64("segment number").map_err(read)?;
        let number = u32::try_from(number).map_err(|_| corrupt("segment number out of range"))?;
        let first_lsn = r.u64("first lsn").map_err(read)?;
        let node = r.array("node id").map_err(read)?;
        let previous = Seal {
            records: r.u64("previous records").map_err(read)?,
            bytes: r.u64("previous bytes").map_err(read)?,
            digest: r.hash("previous digest").map_err(read)?,
        };
        if bytes[96..124].iter().any(|b| *b != 0) {
            return Err(corrupt("reserved bytes are not zero"));
        }
        Ok(Self { number, first_lsn, node, previous })
    }
}

/// The file name of segment `number`.
pub fn file_name(number: u32) -> String {
    format!("{number:020}.log")
}

/// The segment number a file name stands for, if it is a segment file.
pub fn parse_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments in `dir`, in order.
pub fn list(vfs: &dyn Vfs, dir: &Path) -> Result<Vec<(u32, PathBuf)>> {
    let mut out = Vec::new();
    for name in vfs.list(dir).map_err(|e| Error::io("listing", dir, e))? {
        if let Some(number) = name.to_str().and_then(parse_file_name) {
            out.push((number, dir.join(name)));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Reads and checks the header of the segment at `path`.
pub fn read_header(file: &dyn VfsFile, path: &Path) -> Result<SegmentHeader> {
    let mut bytes = [0; SEGMENT_HEADER_BYTES];
    let mut read = 0;
    while read < SEGMENT_HEADER_BYTES {
        match file.read_at(&mut bytes[read..], read as u64) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(Error::io("reading", path, e)),
        }
    }
    SegmentHeader::decode(&bytes[..read], path)
}

/// The seal a sealed segment of `len` bytes ends with.
pub fn read_seal(file: &dyn VfsFile, path: &Path, len: u64) -> Result<(Seal, u64)> {
    let min = (SEGMENT_HEADER_BYTES + SEAL_RECORD_BYTES) as u64;
    if len < min {
        return Err(Error::corrupt(
            path,
            len,
            "sealed segment is too short to hold its seal (truncated?)",
        ));
    }
    let at = len - SEAL_RECORD_BYTES as u64;
    let mut bytes = [0; SEAL_RECORD_BYTES];
    file.read_exact_at(&mut bytes, at).map_err(|e| Error::io("reading", path, e))?;
    let (header, body, _) = record::decode(&bytes).map_err(|e| {
        Error::corrupt(
            path,
            at,
            format!("sealed segment does not end in a seal ({e}); was it truncated?"),
        )
    })?;
    if header.kind != RecordKind::Seal {
        return Err(Error::corrupt(path, at, "sealed segment does not end in a seal record"));
    }
    let seal =
        record::decode_seal_body(body).map_err(|e| Error::corrupt(path, at, e.to_string()))?;
    if seal.bytes != at {
        return Err(Error::corrupt(
            path,
            at,
            format!(
                "seal says the segment holds {} bytes before it, but it holds {at}",
                seal.bytes
            ),
        ));
    }
    Ok((seal, header.lsn))
}

/// The running digest of a segment (see the module doc).
#[derive(Clone, Default)]
pub struct Digest {
    hasher: sha2::Sha256,
    records: u64,
}

impl Digest {
    /// Adds a record, given its bytes (only the 8-byte prefix is hashed).
    pub fn add(&mut self, record: &[u8]) {
        use sha2::Digest as _;
        self.hasher.update(record::prefix(record));
        self.records += 1;
    }

    /// Records added.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The digest so far.
    pub fn finish(&self) -> Hash {
        use sha2::Digest as _;
        Hash::from_bytes(self.hasher.clone().finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_damage() {
        let header = SegmentHeader {
            number: 7,
            first_lsn: 1234,
            node: [9; 16],
            previous: Seal { records: 10, bytes: 4096, digest: Hash::from_bytes([3; 32]) },
        };
        let bytes = header.encode();
        let path = Path::new("x.log");
        assert_eq!(SegmentHeader::decode(&bytes, path).unwrap(), header);
        for i in 0..bytes.len() {
            let mut bad = bytes;
            bad[i] ^= 1;
            assert!(SegmentHeader::decode(&bad, path).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn file_names() {
        assert_eq!(file_name(42), "00000000000000000042.log");
        assert_eq!(parse_file_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_file_name("42.log"), None);
        assert_eq!(parse_file_name("00000000000000000042.tmp"), None);
    }
}
