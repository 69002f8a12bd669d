//! One shard's state machine: the ledger. Applying a command runs the ledger's own append or
//! load, deterministically, so every replica that applies the same log holds byte-identical
//! entries and the same tree heads.
//!
//! - **Deterministic.** The leader stamped the command with its wall clock when it accepted
//!   it; the entry's time is `max(that, previous + 1)`, its sequence `previous + 1`, its
//!   Lamport time `max(previous, received) + 1`: functions of the command and of what the
//!   shard applied before, the same everywhere. Errors that depend only on those (a bad
//!   argument, an `append_id` reused with other content, a snapshot that diverges) are
//!   answers, the same on every replica; an error of this node alone (its disk) stops the
//!   shard here rather than let this replica differ.
//! - **Idempotent.** After a restart openraft applies again everything after the last applied
//!   position this node saved, some of which the ledger already holds. Every append carries an
//!   `append_id` (the client's, or `raft:SHARD:INDEX[:K]` from its log position), so applying it
//!   again returns the entry it made the first time; a load of what the context already holds
//!   adds nothing. The saved position is written only after an fsync of the ledger that
//!   covers everything before it, so it is never ahead of the ledger on disk, and only once
//!   the Raft log holds it on disk (openraft applies entries it has not flushed yet), so it is
//!   never ahead of the log: openraft takes the log to reach at least as far as the position
//!   a restart starts from.
//! - **Visible at commit.** A cluster node's ledger writes without an fsync of its own
//!   (buffered): the Raft log, fsynced on a majority before an entry commits, is the durable
//!   copy, and the ledger is fsynced only before an applied position is saved. Apply hands
//!   entries to the ledger once this node's own log holds them on disk, and returns without
//!   waiting for the ledger's write, so applying is pipelined with it. A settler task per
//!   shard follows the ledger's completions in log order and publishes the last position the
//!   ledger shows ([`Shown`]); a node answers a write once that position has reached it. A
//!   power cut can take the ledger's last writes: the node applies them again from its log,
//!   and its reads wait until it has (`crate::floor`), so its view never shrinks.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use converge_api::{LedgerError, LoadRequest};
use converge_core::Timestamp;
use converge_ledger::Ledger;
use converge_proto::cluster as pb;
use converge_proto::{convert, status};
use converge_storage::vfs::{OpenMode, Vfs};
use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageIOError,
    StoredMembership,
};
use prost::Message as _;

use crate::limits::ClusterLimits;
use crate::log_store::Flushed;
use crate::types::{Entry, NodeId, StorageError, TypeConfig};
use crate::wire;

/// How often the applied position is saved (more often means less to apply again after a
/// restart, and one more fsync of the ledger and of the small file that holds it).
const SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// Applied entries a shard's settler may be behind by: beyond it, apply waits for the ledger's
/// writes to catch up instead of queueing their waits without bound.
const SETTLING_MAX: usize = 4096;

/// The prefix of the `append_id`s the cluster gives appends that came without one; clients
/// may not use it (CONTRACT §5).
pub const RESERVED_APPEND_ID_PREFIX: &str = "raft:";

/// How far a shard's applied entries are written in the ledger, so shown by it (and in the
/// Raft log on disk: durable).
#[derive(Debug, Clone, Default)]
pub struct Shown {
    /// Every entry up to this log position is written (or was a no-op).
    pub upto: Option<LogId<NodeId>>,
    /// The ledger failed to write an applied entry: this shard stops here.
    pub failed: Option<String>,
}

impl Shown {
    /// Whether position `index` is shown (`Err` once the shard failed).
    pub fn reached(&self, index: u64) -> Result<bool, String> {
        match &self.failed {
            Some(failed) => Err(failed.clone()),
            None => Ok(self.upto.is_some_and(|l| l.index >= index)),
        }
    }
}

/// A log position, and the wait for the ledger's write of its entry if it appended one.
type Settling = (LogId<NodeId>, Option<PendingWrite>);
type PendingWrite =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), LedgerError>> + Send>>;

/// One shard's state machine over the node's ledger.
pub struct StateMachine {
    shard: u32,
    ledger: Ledger,
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
    saved_at: Instant,
    settling: mpsc::Sender<Settling>,
    shown: watch::Receiver<Shown>,
    /// How far the shard's Raft log is durable.
    log_flushed: watch::Receiver<Flushed>,
    /// The cluster-wide limits the log has set, as applied here.
    limits: watch::Sender<Option<ClusterLimits>>,
}

impl StateMachine {
    /// The state machine of `shard`, saving its applied position in `dir`; `log_flushed`
    /// follows the shard's Raft log ([`LogStore::flushed`](crate::log_store::LogStore::flushed)).
    pub fn open(
        shard: u32,
        ledger: Ledger,
        vfs: Arc<dyn Vfs>,
        dir: &Path,
        log_flushed: watch::Receiver<Flushed>,
    ) -> std::io::Result<Self> {
        vfs.create_dir_all(dir)?;
        let Saved { position: applied, membership, limits } =
            read_applied(vfs.as_ref(), dir)?.unwrap_or_default();
        let (settling, pending) = mpsc::channel(SETTLING_MAX);
        let (published, shown) = watch::channel(Shown { upto: applied, failed: None });
        tokio::spawn(settle(shard, pending, published));
        Ok(Self {
            shard,
            ledger,
            vfs,
            dir: dir.to_path_buf(),
            applied,
            membership,
            saved_at: Instant::now(),
            settling,
            shown,
            log_flushed,
            limits: watch::Sender::new(limits),
        })
    }

    /// The cluster-wide limits this shard's log has set, as applied here, as they change.
    pub fn limits(&self) -> watch::Receiver<Option<ClusterLimits>> {
        self.limits.subscribe()
    }

    /// How far this shard's applied entries are shown by the ledger, as it changes.
    pub fn shown(&self) -> watch::Receiver<Shown> {
        self.shown.clone()
    }

    /// Waits until the ledger shows every entry up to `index`.
    async fn until_shown(&mut self, index: u64) -> Result<(), StorageError> {
        let reached = self.shown.wait_for(|d| d.reached(index) != Ok(false)).await;
        match reached.map(|d| d.reached(index)) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(failed)) => {
                Err(StorageIOError::write_state_machine(AnyError::error(failed)).into())
            }
            Err(_) => {
                Err(StorageIOError::write_state_machine(AnyError::error("the settler stopped"))
                    .into())
            }
        }
    }

    /// Waits until the Raft log holds every entry up to `index` on disk.
    async fn until_flushed(&mut self, index: u64) -> Result<(), StorageError> {
        let flushed = self
            .log_flushed
            .wait_for(|f| f.failed.is_some() || f.upto >= Some(index))
            .await
            .map(|f| f.failed.clone());
        match flushed {
            Ok(None) => Ok(()),
            Ok(Some(failed)) => {
                Err(StorageIOError::write_state_machine(AnyError::error(failed)).into())
            }
            Err(_) => {
                Err(StorageIOError::write_state_machine(AnyError::error("the Raft log is closed"))
                    .into())
            }
        }
    }

    async fn settled(
        &self,
        log_id: LogId<NodeId>,
        pending: Option<PendingWrite>,
    ) -> Result<(), StorageError> {
        self.settling.send((log_id, pending)).await.map_err(|_| {
            StorageIOError::write_state_machine(AnyError::error("the settler stopped")).into()
        })
    }

    /// Saves `upto` (shown by the ledger) as the applied position, with the membership
    /// applied last, once the Raft log holds `upto` on disk.
    async fn save(&mut self, upto: Option<LogId<NodeId>>) -> Result<(), StorageError> {
        if let Some(upto) = upto {
            self.until_flushed(upto.index).await?;
        }
        // The ledger writes without its own fsync (the Raft log is the durable copy): a restart
        // must not start beyond what it holds on disk.
        self.ledger
            .sync()
            .await
            .map_err(|e| StorageIOError::write_state_machine(AnyError::error(e.to_string())))?;
        let state = pb::AppliedState {
            applied: upto.as_ref().map(wire::log_id_to),
            membership_log_id: self.membership.log_id().as_ref().map(wire::log_id_to),
            membership: Some(wire::membership_to(self.membership.membership())),
            limits: self.limits.borrow().map(ClusterLimits::to_wire),
        };
        write_applied(self.vfs.as_ref(), &self.dir, &state.encode_to_vec())
            .map_err(|e| StorageIOError::write_state_machine(AnyError::new(&e)))?;
        self.saved_at = Instant::now();
        Ok(())
    }

    /// Applies one command; `Err` is this node's own failure, `Ok(failure)` an answer.
    fn start(&self, index: u64, command: pb::Command) -> Result<Applying, StorageError> {
        match command.op {
            Some(pb::command::Op::Append(append)) => {
                let default_id = || format!("{RESERVED_APPEND_ID_PREFIX}{}:{index}", self.shard);
                Ok(match self.append(append, default_id)? {
                    (outcome, Some(written)) => Applying::Append(outcome, written),
                    (outcome, None) => Applying::Done(outcome),
                })
            }
            Some(pb::command::Op::Appends(batch)) => {
                let mut outcomes = Vec::with_capacity(batch.appends.len());
                let mut pending = Vec::with_capacity(batch.appends.len());
                for (k, append) in batch.appends.into_iter().enumerate() {
                    let default_id =
                        || format!("{RESERVED_APPEND_ID_PREFIX}{}:{index}:{k}", self.shard);
                    let (outcome, written) = self.append(append, default_id)?;
                    outcomes.push(outcome);
                    pending.extend(written);
                }
                let outcome = pb::Outcome {
                    result: Some(pb::outcome::Result::Outcomes(pb::Outcomes { outcomes })),
                    log_index: 0,
                };
                let written: PendingWrite = Box::pin(async move {
                    // The ledger completes in order: the last is written when all are, but
                    // each may carry its own failure.
                    for write in pending {
                        write.await?;
                    }
                    Ok(())
                });
                Ok(Applying::Append(outcome, written))
            }
            Some(pb::command::Op::Load(load)) => {
                Ok(Applying::Load(convert::load_request_from_wire(load)))
            }
            Some(pb::command::Op::Limits(limits)) => {
                // Checked before it was proposed; a node of another version that could not
                // read them keeps the ones it had, and answers so, as every replica does.
                Ok(Applying::Done(match ClusterLimits::from_wire(&limits) {
                    Ok(limits) => {
                        self.limits.send_replace(Some(limits));
                        pb::Outcome::default()
                    }
                    Err(why) => failure(&LedgerError::InvalidArgument(why)),
                }))
            }
            None => Ok(Applying::Done(failure(&LedgerError::InvalidArgument(
                "a command with no operation".into(),
            )))),
        }
    }

    /// Applies one append (`default_id` if it came without an `append_id`): its outcome, and
    /// the wait for its durability if it appended.
    fn append(
        &self,
        append: pb::AppendCommand,
        default_id: impl FnOnce() -> String,
    ) -> Result<(pb::Outcome, Option<PendingWrite>), StorageError> {
        let mut request = convert::append_request_from_wire(append.request.unwrap_or_default());
        if request.append_id.as_deref().is_none_or(str::is_empty) {
            request.append_id = Some(default_id());
        }
        match self.ledger.apply_append(request, Timestamp(append.now_ns)) {
            Ok((entry, written)) => Ok((entry_outcome(&entry), Some(Box::pin(written)))),
            Err(e) => Ok((answer(&e)?, None)),
        }
    }
}

enum Applying {
    Done(pb::Outcome),
    Append(pb::Outcome, PendingWrite),
    Load(LoadRequest),
}

fn failure(e: &LedgerError) -> pb::Outcome {
    let status = status::to_status(e);
    pb::Outcome {
        result: Some(pb::outcome::Result::Failure(pb::Failure {
            code: status.code() as i32,
            message: status.message().to_string(),
        })),
        log_index: 0,
    }
}

/// An error as a replicated answer if every replica would give it, else this node's failure.
fn answer(e: &LedgerError) -> Result<pb::Outcome, StorageError> {
    match e {
        LedgerError::Unavailable(_) | LedgerError::Internal(_) | LedgerError::Verification(_) => {
            Err(StorageIOError::write_state_machine(AnyError::error(e.to_string())).into())
        }
        _ => Ok(failure(e)),
    }
}

fn entry_outcome(entry: &converge_core::Entry) -> pb::Outcome {
    pb::Outcome {
        result: Some(pb::outcome::Result::Entry(convert::entry_to_wire(entry))),
        log_index: 0,
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = NoSnapshots;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, openraft::BasicNode>), StorageError>
    {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<pb::Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        // Shown only once this node's own log holds them on disk, so that what a node showed
        // before a power cut is in its log after it (see `crate::floor`). openraft hands over
        // entries a majority flushed, not always this node: its flush usually ended first.
        let entries: Vec<Entry> = entries.into_iter().collect();
        if let Some(last) = entries.last() {
            self.until_flushed(last.log_id.index).await?;
        }
        let mut outcomes: Vec<pb::Outcome> = Vec::with_capacity(entries.len());
        // A new membership or new limits are saved at once, with a position that includes
        // them.
        let mut membership_changed = false;
        let limits_before = *self.limits.borrow();
        for entry in entries {
            let (log_id, index) = (entry.log_id, entry.log_id.index);
            let (outcome, pending) = match entry.payload {
                EntryPayload::Blank => (pb::Outcome::default(), None),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(log_id), m);
                    membership_changed = true;
                    (pb::Outcome::default(), None)
                }
                EntryPayload::Normal(command) => match self.start(index, command)? {
                    Applying::Done(outcome) => (outcome, None),
                    Applying::Append(outcome, written) => (outcome, Some(written)),
                    Applying::Load(request) => {
                        // A load compares with the context as it is: appends before it first.
                        if let Some(previous) = self.applied {
                            self.until_shown(previous.index).await?;
                        }
                        let outcome = match self.ledger.apply_load(request).await {
                            Ok(response) => pb::Outcome {
                                result: Some(pb::outcome::Result::Load(
                                    convert::load_response_to_wire(response),
                                )),
                                log_index: 0,
                            },
                            Err(e) => answer(&e)?,
                        };
                        (outcome, None)
                    }
                },
            };
            self.settled(log_id, pending).await?;
            outcomes.push(outcome);
            self.applied = Some(log_id);
        }
        if membership_changed || *self.limits.borrow() != limits_before {
            // The membership and limits are saved with a position that includes them.
            if let Some(applied) = self.applied {
                self.until_shown(applied.index).await?;
            }
            self.save(self.applied).await?;
        } else if self.saved_at.elapsed() >= SAVE_INTERVAL {
            let upto = self.shown.borrow().upto;
            // The membership saved must be the one in force at `upto`.
            if self.membership.log_id().as_ref().map(|l| l.index) <= upto.map(|l| l.index) {
                self.save(upto).await?;
            }
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        NoSnapshots
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Err(no_snapshots())
    }

    async fn install_snapshot(
        &mut self,
        _meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        _snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        Err(no_snapshots())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(None)
    }
}

/// Follows the ledger's completions of one shard's applied entries, in log order, and
/// publishes how far the ledger shows them. A failure stops the shard on this node.
async fn settle(
    shard: u32,
    mut pending: mpsc::Receiver<Settling>,
    published: watch::Sender<Shown>,
) {
    while let Some((log_id, written)) = pending.recv().await {
        if let Some(written) = written
            && let Err(e) = written.await
        {
            tracing::error!(shard, error = %e, "the ledger did not write an applied entry; this shard stops on this node");
            published.send_modify(|d| d.failed = Some(format!("shard {shard}: {e}")));
            return;
        }
        published.send_modify(|d| d.upto = Some(log_id));
    }
}

/// Snapshots are never built: the log is never purged, so a new member catches up from it.
pub struct NoSnapshots;

fn no_snapshots() -> StorageError {
    StorageIOError::read_snapshot(
        None,
        AnyError::error("snapshots are not used: the Raft log is never purged"),
    )
    .into()
}

impl RaftSnapshotBuilder<TypeConfig> for NoSnapshots {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        Err(no_snapshots())
    }
}

/// What a shard's state machine saves: how far it applied, and the membership and limits in
/// force there.
#[derive(Default)]
struct Saved {
    position: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
    limits: Option<ClusterLimits>,
}

/// The applied position saved in `dir`: where the state machine of a node restarted on it
/// would say it stands.
pub fn saved_position(vfs: &dyn Vfs, dir: &Path) -> std::io::Result<Option<LogId<NodeId>>> {
    Ok(read_applied(vfs, dir)?.and_then(|saved| saved.position))
}

fn read_applied(vfs: &dyn Vfs, dir: &Path) -> std::io::Result<Option<Saved>> {
    let path = dir.join("applied");
    if !vfs.exists(&path)? {
        return Ok(None);
    }
    let file = vfs.open(&path, OpenMode::Existing)?;
    let mut buf = vec![0; usize::try_from(file.len()?).map_err(std::io::Error::other)?];
    file.read_exact_at(&mut buf, 0)?;
    // A file that does not check is as good as none: everything is applied again.
    let Some(body) = buf.get(4..).filter(|body| {
        buf.get(..4).and_then(|c| c.try_into().ok()).map(u32::from_be_bytes)
            == Some(crc32c::crc32c(body))
    }) else {
        tracing::warn!(path = %path.display(), "the applied-position file does not check; applying the whole log again");
        return Ok(None);
    };
    let Ok(state) = pb::AppliedState::decode(body) else { return Ok(None) };
    let membership = StoredMembership::new(
        state.membership_log_id.as_ref().map(wire::log_id_from),
        state.membership.as_ref().map(wire::membership_from).unwrap_or_default(),
    );
    // Limits that do not check are as good as none: the log sets them again.
    let limits = state.limits.as_ref().and_then(|l| ClusterLimits::from_wire(l).ok());
    let position = state.applied.as_ref().map(wire::log_id_from);
    Ok(Some(Saved { position, membership, limits }))
}

fn write_applied(vfs: &dyn Vfs, dir: &Path, body: &[u8]) -> std::io::Result<()> {
    let mut bytes = crc32c::crc32c(body).to_be_bytes().to_vec();
    bytes.extend_from_slice(body);
    let tmp = dir.join("applied.tmp");
    let file = vfs.open(&tmp, OpenMode::CreateTruncate)?;
    file.write_all_at(&bytes, 0)?;
    file.sync_all()?;
    vfs.rename(&tmp, &dir.join("applied"))
}
