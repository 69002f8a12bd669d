//! The node's identity and its unclean-shutdown marker.
//!
//! `node.id` (created once, fsynced, rewritten atomically on every open):
//!
//! ```text
//! 0   8   magic "\x89CVLNOD\n"
//! 8   4   u32 version 1
//! 12  16  node id (random at creation)
//! 28  8   u64 incarnation: 1 at creation, +1 on every open
//! 36  4   u32 crc32c of bytes 0..36
//! ```
//!
//! `RUNNING` exists while the node has the data directory open; a clean close removes it. If
//! it is there at open, the previous run crashed (or lost power), which the open report says.
//! Replication will use both: the id names the replica, the incarnation fences a restarted one.

use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::log::sync_dir;
use crate::vfs::{OpenMode, Vfs};

const MAGIC: [u8; 8] = *b"\x89CVLNOD\n";
const VERSION: u32 = 1;
const FILE_BYTES: usize = 40;

/// Who this node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeIdentity {
    /// Random at creation, never changed.
    pub id: [u8; 16],
    /// How many times the data directory has been opened.
    pub incarnation: u64,
}

impl NodeIdentity {
    /// The id in hex.
    pub fn id_hex(&self) -> String {
        converge_core::hex::encode(&self.id)
    }

    fn encode(&self) -> [u8; FILE_BYTES] {
        let mut out = [0; FILE_BYTES];
        out[..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&VERSION.to_be_bytes());
        out[12..28].copy_from_slice(&self.id);
        out[28..36].copy_from_slice(&self.incarnation.to_be_bytes());
        let crc = crc32c::crc32c(&out[..36]);
        out[36..].copy_from_slice(&crc.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8], path: &Path) -> Result<Self> {
        let bad = |why: &str| Error::corrupt(path, 0, format!("node identity file: {why}"));
        if bytes.len() != FILE_BYTES || bytes[..8] != MAGIC {
            return Err(bad("not a node identity file"));
        }
        let crc = u32::from_be_bytes([bytes[36], bytes[37], bytes[38], bytes[39]]);
        if crc32c::crc32c(&bytes[..36]) != crc {
            return Err(bad("checksum mismatch"));
        }
        if bytes[8..12] != VERSION.to_be_bytes() {
            return Err(bad("unsupported version"));
        }
        let mut id = [0; 16];
        id.copy_from_slice(&bytes[12..28]);
        let mut inc = [0; 8];
        inc.copy_from_slice(&bytes[28..36]);
        Ok(Self { id, incarnation: u64::from_be_bytes(inc) })
    }
}

/// A fresh random id: SHA-256 over keys the standard library draws from the operating
/// system's randomness (`RandomState`), the process id and the directory. No clock is read
/// (the ledger's `Clock` is the only reader of time) and no randomness crate is needed.
fn fresh_id(dir: &Path) -> [u8; 16] {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = Sha256::new();
    for round in 0..4u64 {
        let mut random = std::collections::hash_map::RandomState::new().build_hasher();
        random.write_u64(round);
        h.update(random.finish().to_be_bytes());
    }
    h.update(std::process::id().to_be_bytes());
    h.update(dir.as_os_str().as_encoded_bytes());
    let digest = h.finalize();
    let mut id = [0; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

/// Reads `node.id` in `dir` (creating it on first open) and bumps the incarnation, durably.
pub fn open_identity(vfs: &dyn Vfs, dir: &Path) -> Result<NodeIdentity> {
    let path = dir.join("node.id");
    let identity = match read_file(vfs, &path)? {
        Some(bytes) => {
            let old = NodeIdentity::decode(&bytes, &path)?;
            NodeIdentity { id: old.id, incarnation: old.incarnation + 1 }
        }
        None => NodeIdentity { id: fresh_id(dir), incarnation: 1 },
    };
    write_atomically(vfs, dir, "node.id", &identity.encode())?;
    Ok(identity)
}

/// The bytes of the small file at `path`, or `None` if there is none.
fn read_file(vfs: &dyn Vfs, path: &Path) -> Result<Option<Vec<u8>>> {
    let file = match vfs.open(path, OpenMode::Existing) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("opening", path, e)),
    };
    let len = file.len().map_err(|e| Error::io("reading", path, e))?;
    if len > 4096 {
        return Err(Error::corrupt(path, 0, format!("{len} bytes is too long for this file")));
    }
    let mut bytes = vec![0; len as usize];
    file.read_exact_at(&mut bytes, 0).map_err(|e| Error::io("reading", path, e))?;
    Ok(Some(bytes))
}

/// Writes `name` in `dir` via a temporary file, fsync, rename and directory fsync.
pub fn write_atomically(vfs: &dyn Vfs, dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let file =
        vfs.open(&tmp, OpenMode::CreateTruncate).map_err(|e| Error::io("creating", &tmp, e))?;
    file.write_all_at(bytes, 0).map_err(|e| Error::io("writing", &tmp, e))?;
    file.sync_all().map_err(|e| Error::io("fsyncing", &tmp, e))?;
    vfs.rename(&tmp, &path).map_err(|e| Error::io("renaming", &tmp, e))?;
    sync_dir(vfs, dir)
}

/// Creates the unclean-shutdown marker; returns whether it was already there (the previous
/// run did not close cleanly).
pub fn mark_running(vfs: &dyn Vfs, dir: &Path) -> Result<bool> {
    let path = dir.join("RUNNING");
    let was_there = vfs.exists(&path).map_err(|e| Error::io("looking for", &path, e))?;
    if !was_there {
        vfs.open(&path, OpenMode::CreateTruncate)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io("creating", &path, e))?;
        sync_dir(vfs, dir)?;
    }
    Ok(was_there)
}

/// Removes the marker after a clean close.
pub fn mark_stopped(vfs: &dyn Vfs, dir: &Path) -> Result<()> {
    let path = dir.join("RUNNING");
    match vfs.remove_file(&path) {
        Ok(()) => sync_dir(vfs, dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing", &path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::RealFs;

    #[test]
    fn identity_survives_and_counts_incarnations() {
        let dir = tempfile::tempdir().unwrap();
        let first = open_identity(&RealFs, dir.path()).unwrap();
        let second = open_identity(&RealFs, dir.path()).unwrap();
        assert_eq!(first.id, second.id);
        assert_eq!((first.incarnation, second.incarnation), (1, 2));
        let other = tempfile::tempdir().unwrap();
        assert_ne!(open_identity(&RealFs, other.path()).unwrap().id, first.id);
    }

    #[test]
    fn damaged_identity_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        open_identity(&RealFs, dir.path()).unwrap();
        let path = dir.path().join("node.id");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(open_identity(&RealFs, dir.path()), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn running_marker() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!mark_running(&RealFs, dir.path()).unwrap());
        assert!(
            mark_running(&RealFs, dir.path()).unwrap(),
            "a second open sees the first did not stop"
        );
        mark_stopped(&RealFs, dir.path()).unwrap();
        assert!(!mark_running(&RealFs, dir.path()).unwrap());
    }
}
