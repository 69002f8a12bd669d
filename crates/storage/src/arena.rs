//! Memory mode's stand-in for the log: a context's entry fields packed into chunks.
//!
//! Chunks grow with the context (4 KiB up to 1 MiB), so a context of one entry costs a few
//! KiB and a large one wastes at most part of its last chunk; nothing is ever copied when
//! the arena grows.

use crate::log::Position;

/// The first chunk's size.
const CHUNK_BYTES_MIN: usize = 4 * 1024;

/// The largest chunk; bigger records get a chunk of their own size.
const CHUNK_BYTES_MAX: usize = 1024 * 1024;

/// Packed records of one context.
#[derive(Debug, Default)]
pub(crate) struct Arena {
    chunks: Vec<Vec<u8>>,
    total: usize,
}

impl Arena {
    /// Stores `len` bytes written by `write` and returns where they are.
    pub(crate) fn push(&mut self, len: usize, write: impl FnOnce(&mut Vec<u8>)) -> Position {
        let fits = self.chunks.last().is_some_and(|c| c.capacity() - c.len() >= len);
        if !fits {
            let size = self.total.clamp(CHUNK_BYTES_MIN, CHUNK_BYTES_MAX).max(len);
            self.chunks.push(Vec::with_capacity(size));
        }
        let index = self.chunks.len() - 1;
        let chunk = &mut self.chunks[index];
        let offset = chunk.len();
        write(chunk);
        debug_assert_eq!(chunk.len() - offset, len, "the record is as long as announced");
        self.total += len;
        // Chunk sizes and offsets stay far below 4 GiB (records are at most 80 MiB).
        Position {
            segment: u32::try_from(index).expect("fewer than 2^32 chunks"),
            offset: u32::try_from(offset).expect("chunks are smaller than 4 GiB"),
            len: u32::try_from(len).expect("records are smaller than 4 GiB"),
        }
    }

    /// The bytes at `position`.
    pub(crate) fn get(&self, position: Position) -> Option<&[u8]> {
        let chunk = self.chunks.get(position.segment as usize)?;
        let start = position.offset as usize;
        chunk.get(start..start + position.len as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_and_finds_records_across_chunks() {
        let mut arena = Arena::default();
        let mut positions = Vec::new();
        for i in 0..100u8 {
            let len = usize::from(i) * 97 + 1;
            positions.push((i, len, arena.push(len, |out| out.resize(out.len() + len, i))));
        }
        for (i, len, p) in positions {
            assert_eq!(arena.get(p), Some(&vec![i; len][..]));
        }
        let big = CHUNK_BYTES_MAX * 2;
        let p = arena.push(big, |out| out.resize(out.len() + big, 7));
        assert_eq!(arena.get(p).map(<[u8]>::len), Some(big));
    }
}
