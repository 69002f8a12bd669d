//! A simulated disk for crash-consistency tests: every state a power cut can leave, on demand.
//!
//! The disk keeps, per file, the *durable* bytes (what survives a power cut for certain) apart
//! from the writes made since the file's last fsync, and per directory the durable entries
//! apart from the entries created, renamed or removed since its last fsync. A power cut
//! ([`CutPoint::crash`]) turns that into the state a real disk may be left in:
//!
//! - each unsynced write is lost, kept, or kept in part, in 512-byte sectors, each sector on
//!   its own (pages of one write reach the platter in any order);
//! - an unsynced size change (growth or truncation) is kept or lost, and a file's size may
//!   survive without its data (the tail then reads as zeros);
//! - each directory entry created, renamed or removed since the directory's last fsync is in
//!   its old state or its new one;
//! - directories themselves, once created, survive (storage creates its directories before it
//!   writes anything that must survive).
//!
//! It can also fail an fsync (the unsynced writes are then dropped from the disk while reads
//! still return them, as Linux does: "fsyncgate"), return `EIO` on a read, write short, and
//! run out of space. Operations are numbered, and a hook sees each one with the state after
//! it, so a test can cut power at every fsync boundary and anywhere between. Prior art:
//! `FoundationDB`'s simulated files, `TigerBeetle`'s storage simulator, ALICE and
//! `CrashMonkey`'s crash states, `LazyFS`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use super::{DirLock, OpenMode, Vfs, VfsFile};

/// The sector size: the unit a power cut keeps or loses.
pub const SECTOR_BYTES: u64 = 512;

/// A small, fast, seedable random number generator (`SplitMix64`), so a seed replays exactly.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        self.next_u64() % n
    }

    /// An index in `0..len` (`len > 0`).
    pub fn index(&mut self, len: usize) -> usize {
        // `len` fits u64, and the result is below it, so it fits usize again.
        usize::try_from(self.below(len as u64)).expect("below len")
    }

    /// One of `items` (not empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// How a power cut treats the unsynced writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPattern {
    /// Nothing unsynced reaches the disk.
    LoseAll,
    /// Everything written reached the disk (as if the cut came just after an fsync).
    KeepAll,
    /// Each sector, size change and directory entry independently, kept with even odds.
    Random,
    /// Unsynced sectors reach the disk in write order up to a random point (a classic torn
    /// write); size changes and directory entries as in `Random`.
    Prefix,
}

impl CrashPattern {
    /// Every pattern, for tests that try each.
    pub const ALL: [Self; 4] = [Self::LoseAll, Self::KeepAll, Self::Random, Self::Prefix];
}

/// What the last operation was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A file was created.
    Create,
    /// Bytes were written.
    Write,
    /// A file's size was set.
    SetLen,
    /// A file was fsynced.
    Sync,
    /// A directory was fsynced.
    SyncDir,
    /// A file was renamed.
    Rename,
    /// A file was removed.
    Remove,
}

/// Called after every operation that changes the disk.
pub type Hook = Box<dyn FnMut(Op, &CutPoint<'_>) + Send>;

#[derive(Clone)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Clone, Default)]
struct Inode {
    /// What survives a power cut.
    durable: Vec<u8>,
    /// What reads see.
    current: Vec<u8>,
    /// Changes since the last fsync, in order.
    pending: Vec<Pending>,
}

#[derive(Clone, Default)]
struct Dir {
    current: BTreeMap<OsString, u64>,
    durable: BTreeMap<OsString, u64>,
}

#[derive(Default)]
struct Faults {
    sync_in: u64,
    read_in: u64,
    short_writes: bool,
    capacity: Option<u64>,
}

#[derive(Default)]
struct State {
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    dirs: BTreeMap<PathBuf, Dir>,
    ops: u64,
    faults: Faults,
    hook: Option<Hook>,
    sync_failed: HashSet<PathBuf>,
    locks: HashSet<PathBuf>,
}

/// The disk as it is right after an operation: where a power cut can happen.
pub struct CutPoint<'a> {
    state: &'a State,
}

impl CutPoint<'_> {
    /// How many operations the disk has done.
    pub fn ops(&self) -> u64 {
        self.state.ops
    }

    /// Cuts power here: a new disk holding one state a real disk may be left in, chosen by
    /// `rng` under `pattern`. The original disk is unchanged.
    pub fn crash(&self, rng: &mut Rng, pattern: CrashPattern) -> SimDisk {
        SimDisk::from_state(self.state.crash(rng, pattern))
    }
}

/// The simulated disk. Cheap to clone: clones share the disk.
#[derive(Clone, Default)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("SimDisk")
            .field("files", &state.inodes.len())
            .field("ops", &state.ops)
            .finish_non_exhaustive()
    }
}

fn decide(rng: &mut Rng, pattern: CrashPattern, budget: &mut u64) -> bool {
    match pattern {
        CrashPattern::LoseAll => false,
        CrashPattern::KeepAll => true,
        CrashPattern::Random => rng.one_in(2),
        CrashPattern::Prefix => {
            if *budget == 0 {
                return false;
            }
            *budget -= 1;
            true
        }
    }
}

impl State {
    fn crash(&self, rng: &mut Rng, pattern: CrashPattern) -> State {
        // Ordered maps throughout, so a seed replays exactly.
        let mut dirs = BTreeMap::new();
        let mut live = BTreeSet::new();
        let mut budget = u64::MAX;
        for (path, dir) in &self.dirs {
            let mut names = dir.durable.clone();
            let changed: BTreeSet<&OsString> =
                dir.current.keys().chain(dir.durable.keys()).collect();
            for name in changed {
                let (old, new) = (dir.durable.get(name), dir.current.get(name));
                if old == new || !decide(rng, pattern, &mut budget) {
                    continue;
                }
                match new {
                    Some(inode) => names.insert(name.clone(), *inode),
                    None => names.remove(name),
                };
            }
            live.extend(names.values().copied());
            dirs.insert(path.clone(), Dir { current: names.clone(), durable: names });
        }
        let mut inodes = BTreeMap::new();
        for number in live {
            let inode = &self.inodes[&number];
            let data = crash_file(inode, rng, pattern);
            inodes.insert(
                number,
                Inode { durable: data.clone(), current: data, pending: Vec::new() },
            );
        }
        State { inodes, next_inode: self.next_inode, dirs, ..State::default() }
    }

    fn bytes_used(&self) -> u64 {
        self.inodes.values().map(|i| i.current.len() as u64).sum()
    }

    fn after(&mut self, op: Op) {
        self.ops += 1;
        if let Some(mut hook) = self.hook.take() {
            hook(op, &CutPoint { state: self });
            self.hook = Some(hook);
        }
    }

    fn lookup(&self, path: &Path) -> io::Result<u64> {
        let (parent, name) = split(path)?;
        self.dirs
            .get(parent)
            .and_then(|d| d.current.get(name))
            .copied()
            .ok_or_else(|| not_found(path))
    }
}

fn crash_file(inode: &Inode, rng: &mut Rng, pattern: CrashPattern) -> Vec<u8> {
    let mut out = inode.durable.clone();
    let sectors: u64 = inode
        .pending
        .iter()
        .map(|p| match p {
            Pending::Write { offset, data } => {
                (offset + data.len() as u64).div_ceil(SECTOR_BYTES) - offset / SECTOR_BYTES
            }
            Pending::SetLen(_) => 1,
        })
        .sum();
    let mut budget = if sectors == 0 { 0 } else { rng.below(sectors + 1) };
    for change in &inode.pending {
        match change {
            Pending::SetLen(len) => {
                if decide(rng, pattern, &mut budget) {
                    out.resize(*len as usize, 0);
                }
            }
            Pending::Write { offset, data } => {
                let end = offset + data.len() as u64;
                let mut sector = offset / SECTOR_BYTES;
                while sector * SECTOR_BYTES < end {
                    let from = (sector * SECTOR_BYTES).max(*offset);
                    let to = ((sector + 1) * SECTOR_BYTES).min(end);
                    if decide(rng, pattern, &mut budget) {
                        if out.len() < to as usize {
                            out.resize(to as usize, 0);
                        }
                        out[from as usize..to as usize].copy_from_slice(
                            &data[(from - offset) as usize..(to - offset) as usize],
                        );
                    }
                    sector += 1;
                }
            }
        }
    }
    // The size in the file's metadata may have reached the disk without (all of) its data.
    let random = matches!(pattern, CrashPattern::Random | CrashPattern::Prefix);
    if out.len() != inode.current.len() && random && rng.one_in(4) {
        out.resize(inode.current.len(), 0);
    }
    out
}

fn split(path: &Path) -> io::Result<(&Path, &std::ffi::OsStr)> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a file path: {}", path.display()),
        )),
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}: no such file", path.display()))
}

fn countdown(counter: &mut u64) -> bool {
    if *counter == 0 {
        return false;
    }
    *counter -= 1;
    *counter == 0
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    fn from_state(state: State) -> Self {
        Self { state: Arc::new(Mutex::new(state)) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Calls `hook` after every operation that changes the disk (replacing any earlier hook).
    pub fn set_hook(&self, hook: Hook) {
        self.lock().hook = Some(hook);
    }

    /// Removes the hook.
    pub fn clear_hook(&self) {
        self.lock().hook = None;
    }

    /// Runs `f` on the disk as it is now (for a power cut between operations).
    pub fn with_cut_point<T>(&self, f: impl FnOnce(&CutPoint<'_>) -> T) -> T {
        let state = self.lock();
        f(&CutPoint { state: &state })
    }

    /// Operations done so far.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Makes the `n`-th fsync from now fail (`n ≥ 1`); its unsynced writes never reach the
    /// disk, though reads go on returning them.
    pub fn fail_sync(&self, n: u64) {
        self.lock().faults.sync_in = n;
    }

    /// Makes the `n`-th read from now fail with `EIO` (`n ≥ 1`).
    pub fn fail_read(&self, n: u64) {
        self.lock().faults.read_in = n;
    }

    /// Makes every write write at most half of what it is given (at least one byte).
    pub fn short_writes(&self, on: bool) {
        self.lock().faults.short_writes = on;
    }

    /// Limits the bytes all files may hold; a write past it fails with `ENOSPC`.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.lock().faults.capacity = bytes;
    }

    /// The bytes all files hold now (what [`Self::set_capacity`] limits).
    pub fn bytes_used(&self) -> u64 {
        self.lock().bytes_used()
    }

    /// Bytes written to `path` since its last fsync (0 if it does not exist).
    pub fn unsynced_bytes(&self, path: &Path) -> u64 {
        let state = self.lock();
        let Ok(inode) = state.lookup(path) else { return 0 };
        state.inodes[&inode]
            .pending
            .iter()
            .map(|p| match p {
                Pending::Write { data, .. } => data.len() as u64,
                Pending::SetLen(_) => 0,
            })
            .sum()
    }

    /// The bytes of `path` as reads see them (for tests that damage files).
    pub fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = self.lock();
        let inode = state.lookup(path)?;
        Ok(state.inodes[&inode].current.clone())
    }

    /// Replaces the bytes of `path`, durably (for tests that damage files).
    pub fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.lock();
        let inode = state.lookup(path)?;
        let inode = state.inodes.get_mut(&inode).expect("looked up");
        inode.current = bytes.to_vec();
        inode.durable = bytes.to_vec();
        inode.pending.clear();
        Ok(())
    }
}

struct SimFile {
    disk: Weak<Mutex<State>>,
    inode: u64,
}

impl SimFile {
    fn state(&self) -> io::Result<Arc<Mutex<State>>> {
        self.disk.upgrade().ok_or_else(|| io::Error::other("the simulated disk is gone"))
    }
}

fn with_inode<T>(
    file: &SimFile,
    f: impl FnOnce(&mut State, u64) -> io::Result<T>,
) -> io::Result<T> {
    let disk = file.state()?;
    let mut state = disk.lock().unwrap_or_else(PoisonError::into_inner);
    if !state.inodes.contains_key(&file.inode) {
        return Err(io::Error::new(io::ErrorKind::NotFound, "the file was removed"));
    }
    f(&mut state, file.inode)
}

impl VfsFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        with_inode(self, |state, inode| {
            if countdown(&mut state.faults.read_in) {
                return Err(io::Error::from_raw_os_error(5));
            }
            let data = &state.inodes[&inode].current;
            let Some(rest) = usize::try_from(offset).ok().and_then(|o| data.get(o..)) else {
                return Ok(0);
            };
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            Ok(n)
        })
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        with_inode(self, |state, inode| {
            let n = if state.faults.short_writes { buf.len().div_ceil(2) } else { buf.len() };
            let end = offset + n as u64;
            let grows = end.saturating_sub(state.inodes[&inode].current.len() as u64);
            if let Some(capacity) = state.faults.capacity
                && state.bytes_used() + grows > capacity
            {
                return Err(io::Error::from_raw_os_error(28));
            }
            let file = state.inodes.get_mut(&inode).expect("checked");
            if file.current.len() < end as usize {
                file.current.resize(end as usize, 0);
            }
            file.current[offset as usize..end as usize].copy_from_slice(&buf[..n]);
            file.pending.push(Pending::Write { offset, data: buf[..n].to_vec() });
            state.after(Op::Write);
            Ok(n)
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        with_inode(self, |state, inode| {
            let failed = countdown(&mut state.faults.sync_in);
            let file = state.inodes.get_mut(&inode).expect("checked");
            let pending = std::mem::take(&mut file.pending);
            if failed {
                // Linux marks the pages clean: they are never written, yet reads return them.
                return Err(io::Error::from_raw_os_error(5));
            }
            for change in pending {
                match change {
                    Pending::SetLen(len) => file.durable.resize(len as usize, 0),
                    Pending::Write { offset, data } => {
                        let end = offset as usize + data.len();
                        if file.durable.len() < end {
                            file.durable.resize(end, 0);
                        }
                        file.durable[offset as usize..end].copy_from_slice(&data);
                    }
                }
            }
            state.after(Op::Sync);
            Ok(())
        })
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        with_inode(self, |state, inode| {
            let file = state.inodes.get_mut(&inode).expect("checked");
            file.current.resize(len as usize, 0);
            file.pending.push(Pending::SetLen(len));
            state.after(Op::SetLen);
            Ok(())
        })
    }

    fn len(&self) -> io::Result<u64> {
        with_inode(self, |state, inode| Ok(state.inodes[&inode].current.len() as u64))
    }
}

struct SimLock {
    disk: Weak<Mutex<State>>,
    dir: PathBuf,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        if let Some(disk) = self.disk.upgrade() {
            disk.lock().unwrap_or_else(PoisonError::into_inner).locks.remove(&self.dir);
        }
    }
}

impl Vfs for SimDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        for ancestor in dir.ancestors() {
            state.dirs.entry(ancestor.to_path_buf()).or_default();
        }
        Ok(())
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VfsFile>> {
        let mut state = self.lock();
        let (parent, name) = split(path)?;
        let existing = state.dirs.get(parent).and_then(|d| d.current.get(name)).copied();
        if !state.dirs.contains_key(parent) {
            return Err(not_found(parent));
        }
        let inode = match (existing, mode) {
            (Some(_), OpenMode::CreateNew) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    path.display().to_string(),
                ));
            }
            (Some(inode), OpenMode::Existing) => inode,
            (Some(inode), OpenMode::CreateTruncate) => {
                let file = state.inodes.get_mut(&inode).expect("linked");
                file.current.clear();
                file.pending.push(Pending::SetLen(0));
                state.after(Op::SetLen);
                inode
            }
            (None, OpenMode::Existing) => return Err(not_found(path)),
            (None, OpenMode::CreateNew | OpenMode::CreateTruncate) => {
                state.next_inode += 1;
                let inode = state.next_inode;
                state.inodes.insert(inode, Inode::default());
                let dir = state.dirs.get_mut(parent).expect("checked");
                dir.current.insert(name.to_os_string(), inode);
                state.after(Op::Create);
                inode
            }
        };
        Ok(Arc::new(SimFile { disk: Arc::downgrade(&self.state), inode }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        let state = self.lock();
        let entries = state.dirs.get(dir).ok_or_else(|| not_found(dir))?;
        let mut names: Vec<OsString> = entries.current.keys().cloned().collect();
        names.extend(
            state
                .dirs
                .keys()
                .filter(|p| p.parent() == Some(dir))
                .filter_map(|p| p.file_name())
                .map(ToOwned::to_owned),
        );
        Ok(names)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let state = self.lock();
        Ok(state.dirs.contains_key(path) || state.lookup(path).is_ok())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let (parent, name) = split(path)?;
        let removed = state.dirs.get_mut(parent).and_then(|d| d.current.remove(name));
        if removed.is_none() {
            return Err(not_found(path));
        }
        state.after(Op::Remove);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let inode = state.lookup(from)?;
        let (from_dir, from_name) = split(from)?;
        let (to_dir, to_name) = split(to)?;
        if !state.dirs.contains_key(to_dir) {
            return Err(not_found(to_dir));
        }
        state.dirs.get_mut(from_dir).expect("looked up").current.remove(from_name);
        state.dirs.get_mut(to_dir).expect("checked").current.insert(to_name.to_os_string(), inode);
        state.after(Op::Rename);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        if countdown(&mut state.faults.sync_in) {
            return Err(io::Error::from_raw_os_error(5));
        }
        let entries = state.dirs.get_mut(dir).ok_or_else(|| not_found(dir))?;
        entries.durable.clone_from(&entries.current);
        state.after(Op::SyncDir);
        Ok(())
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock> {
        let mut state = self.lock();
        if !state.locks.insert(dir.to_path_buf()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(Box::new(SimLock { disk: Arc::downgrade(&self.state), dir: dir.to_path_buf() }))
    }

    fn mark_sync_failed(&self, dir: &Path) {
        self.lock().sync_failed.insert(dir.to_path_buf());
    }

    fn sync_failed(&self, dir: &Path) -> bool {
        self.lock().sync_failed.contains(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(disk: &SimDisk, path: &str, mode: OpenMode) -> Arc<dyn VfsFile> {
        disk.open(Path::new(path), mode).unwrap()
    }

    fn contents(disk: &SimDisk, path: &str) -> Option<Vec<u8>> {
        disk.read_file(Path::new(path)).ok()
    }

    fn crash(disk: &SimDisk, seed: u64, pattern: CrashPattern) -> SimDisk {
        disk.with_cut_point(|cut| cut.crash(&mut Rng::new(seed), pattern))
    }

    #[test]
    fn synced_data_survives_and_unsynced_data_may_not() {
        let disk = SimDisk::new();
        disk.create_dir_all(Path::new("/d")).unwrap();
        let f = file(&disk, "/d/a", OpenMode::CreateNew);
        f.write_all_at(&[1; 1000], 0).unwrap();
        f.sync_data().unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        f.write_all_at(&[2; 2000], 1000).unwrap();
        let lost = crash(&disk, 1, CrashPattern::LoseAll);
        assert_eq!(contents(&lost, "/d/a").unwrap(), vec![1; 1000]);
        let kept = crash(&disk, 1, CrashPattern::KeepAll);
        assert_eq!(contents(&kept, "/d/a").unwrap().len(), 3000);
        let mut seen_partial = false;
        for seed in 0..64 {
            let data = contents(&crash(&disk, seed, CrashPattern::Random), "/d/a").unwrap();
            assert_eq!(data[..1000], [1; 1000], "synced bytes never change");
            for (i, b) in data.iter().enumerate().skip(1000) {
                assert!(*b == 2 || *b == 0, "byte {i} is {b}: neither written nor zero");
            }
            seen_partial |= data.len() > 1000 && data[1000..].contains(&0);
        }
        assert!(seen_partial, "some crash keeps part of a write");
    }

    #[test]
    fn unsynced_directory_entries_may_vanish() {
        let disk = SimDisk::new();
        disk.create_dir_all(Path::new("/d")).unwrap();
        let f = file(&disk, "/d/new", OpenMode::CreateNew);
        f.write_all_at(b"x", 0).unwrap();
        f.sync_all().unwrap();
        let lost = crash(&disk, 7, CrashPattern::LoseAll);
        assert!(!lost.exists(Path::new("/d/new")).unwrap(), "the file was never linked durably");
        disk.sync_dir(Path::new("/d")).unwrap();
        let kept = crash(&disk, 7, CrashPattern::LoseAll);
        assert_eq!(contents(&kept, "/d/new").unwrap(), b"x");
        disk.rename(Path::new("/d/new"), Path::new("/d/renamed")).unwrap();
        let before = crash(&disk, 7, CrashPattern::LoseAll);
        assert!(before.exists(Path::new("/d/new")).unwrap());
        assert!(!before.exists(Path::new("/d/renamed")).unwrap());
    }

    #[test]
    fn a_failed_fsync_drops_the_data_but_reads_still_see_it() {
        let disk = SimDisk::new();
        disk.create_dir_all(Path::new("/d")).unwrap();
        let f = file(&disk, "/d/a", OpenMode::CreateNew);
        disk.sync_dir(Path::new("/d")).unwrap();
        f.write_all_at(b"lost", 0).unwrap();
        disk.fail_sync(1);
        assert!(f.sync_data().is_err());
        f.sync_data().unwrap();
        assert_eq!(contents(&disk, "/d/a").unwrap(), b"lost", "the page cache still has it");
        let after = crash(&disk, 3, CrashPattern::KeepAll);
        assert_eq!(contents(&after, "/d/a").unwrap(), b"", "the disk never got it");
    }

    #[test]
    fn faults_read_short_write_and_full_disk() {
        let disk = SimDisk::new();
        disk.create_dir_all(Path::new("/d")).unwrap();
        let f = file(&disk, "/d/a", OpenMode::CreateNew);
        disk.short_writes(true);
        assert_eq!(f.write_at(&[9; 10], 0).unwrap(), 5);
        f.write_all_at(&[9; 10], 0).unwrap();
        disk.short_writes(false);
        disk.fail_read(1);
        let mut buf = [0; 4];
        assert_eq!(f.read_exact_at(&mut buf, 0).unwrap_err().raw_os_error(), Some(5));
        f.read_exact_at(&mut buf, 0).unwrap();
        disk.set_capacity(Some(12));
        assert_eq!(f.write_all_at(&[1; 8], 10).unwrap_err().raw_os_error(), Some(28));
    }

    #[test]
    fn a_seed_replays_exactly() {
        let disk = SimDisk::new();
        disk.create_dir_all(Path::new("/d")).unwrap();
        let f = file(&disk, "/d/a", OpenMode::CreateNew);
        for i in 0..20u8 {
            f.write_all_at(&[i + 1; 700], u64::from(i) * 700).unwrap();
        }
        let a = contents(&crash(&disk, 42, CrashPattern::Random), "/d/a");
        let b = contents(&crash(&disk, 42, CrashPattern::Random), "/d/a");
        assert_eq!(a, b);
    }
}
