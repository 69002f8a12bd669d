//! Durability levels: what an acknowledged append survives.

/// When an append is acknowledged, and so what it survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Acknowledged after the log bytes are written *and* `fdatasync`ed (group commit shares
    /// one fsync among every append queued meanwhile). Survives a process crash and a power
    /// loss or kernel crash. The default.
    #[default]
    Fsync,
    /// Acknowledged after the log bytes are handed to the operating system (`write`), without
    /// waiting for the disk. Survives a process crash (the kernel still holds the data) but not
    /// a power loss or kernel crash, which can lose the last few seconds of appends.
    Buffered,
}

impl Durability {
    /// Whether the writer must `fdatasync` before acknowledging.
    pub fn syncs(self) -> bool {
        matches!(self, Self::Fsync)
    }
}
