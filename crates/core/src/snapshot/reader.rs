//! A cursor over untrusted bytes: every read is bounds-checked and reports where it failed.

use crate::hash::Hash;

use super::SnapshotError;

pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, offset: 0 }
    }

    pub(super) fn offset(&self) -> usize {
        self.offset
    }

    pub(super) fn remaining(&self) -> usize {
        self.bytes.len() - self.offset
    }

    pub(super) fn take(
        &mut self,
        len: usize,
        what: &'static str,
    ) -> Result<&'a [u8], SnapshotError> {
        if len > self.remaining() {
            return Err(SnapshotError::Malformed { offset: self.offset, what });
        }
        let slice = &self.bytes[self.offset..self.offset + len];
        self.offset += len;
        Ok(slice)
    }

    pub(super) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], SnapshotError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(super) fn u32(&mut self, what: &'static str) -> Result<u32, SnapshotError> {
        self.array(what).map(u32::from_be_bytes)
    }

    pub(super) fn u64(&mut self, what: &'static str) -> Result<u64, SnapshotError> {
        self.array(what).map(u64::from_be_bytes)
    }

    pub(super) fn hash(&mut self, what: &'static str) -> Result<Hash, SnapshotError> {
        self.array(what).map(Hash::from_bytes)
    }

    /// `bytes(x)`: a u32 length, then that many bytes (checked against what is left, so a
    /// huge length is an error, not an allocation).
    pub(super) fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], SnapshotError> {
        let len = self.u32(what)? as usize;
        self.take(len, what)
    }

    /// `bytes(x)` holding UTF-8 text.
    pub(super) fn text(&mut self, what: &'static str) -> Result<&'a str, SnapshotError> {
        let start = self.offset;
        let bytes = self.bytes(what)?;
        std::str::from_utf8(bytes).map_err(|_| SnapshotError::Malformed { offset: start, what })
    }
}
