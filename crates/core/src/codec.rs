//! A cursor over untrusted bytes for the ledger's binary formats (snapshot blobs, log records):
//! every read is bounds-checked and a failure says where and what was expected, so no decoder
//! built on it can panic or over-read.

use crate::hash::Hash;

/// The bytes ended, or held something other than what was expected, at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed at byte {offset}: expected {what}")]
pub struct ReadError {
    /// Where reading stopped, from the start of the cursor's bytes.
    pub offset: usize,
    /// The field that could not be read.
    pub what: &'static str,
}

/// A forward-only cursor over a byte slice. Integers are big-endian.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, offset: 0 }
    }

    /// Bytes read so far.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.offset
    }

    /// The next `len` bytes.
    pub fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], ReadError> {
        if len > self.remaining() {
            return Err(ReadError { offset: self.offset, what });
        }
        let slice = &self.bytes[self.offset..self.offset + len];
        self.offset += len;
        Ok(slice)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], ReadError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    /// A byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, ReadError> {
        self.array::<1>(what).map(|[b]| b)
    }

    /// A big-endian u16.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, ReadError> {
        self.array(what).map(u16::from_be_bytes)
    }

    /// A big-endian u32.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, ReadError> {
        self.array(what).map(u32::from_be_bytes)
    }

    /// A big-endian u64.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, ReadError> {
        self.array(what).map(u64::from_be_bytes)
    }

    /// A 32-byte hash.
    pub fn hash(&mut self, what: &'static str) -> Result<Hash, ReadError> {
        self.array(what).map(Hash::from_bytes)
    }

    /// `len` bytes of UTF-8 text.
    pub fn text(&mut self, len: usize, what: &'static str) -> Result<&'a str, ReadError> {
        let start = self.offset;
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes).map_err(|_| ReadError { offset: start, what })
    }

    /// A u32 length, then that many bytes: checked against what is left, so a huge length is
    /// an error, not an allocation.
    pub fn bytes_u32(&mut self, what: &'static str) -> Result<&'a [u8], ReadError> {
        let len = self.u32(what)? as usize;
        self.take(len, what)
    }

    /// A u32 length, then that many bytes of UTF-8 text.
    pub fn text_u32(&mut self, what: &'static str) -> Result<&'a str, ReadError> {
        let len = self.u32(what)? as usize;
        self.text(len, what)
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_reports_where_it_stopped() {
        let bytes = [0, 0, 0, 2, b'h', b'i', 0xff];
        let mut r = Reader::new(&bytes);
        assert_eq!(r.text_u32("greeting"), Ok("hi"));
        assert_eq!(r.u8("tail"), Ok(0xff));
        assert!(r.is_empty());
        assert_eq!(r.u8("more"), Err(ReadError { offset: 7, what: "more" }));
    }

    #[test]
    fn huge_lengths_and_bad_utf8_are_errors() {
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 1]);
        assert_eq!(r.bytes_u32("blob"), Err(ReadError { offset: 4, what: "blob" }));
        let mut r = Reader::new(&[0, 0, 0, 1, 0xc3]);
        assert_eq!(r.text_u32("name"), Err(ReadError { offset: 4, what: "name" }));
    }
}
