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
//!   `append_id` (the client's, or `raft:SHARD:INDEX` from its log position), so applying it
//!   again returns the entry it made the first time; a load of what the context already holds
//!   adds nothing. The saved position is written only after the ledger made everything before
//!   it durable, so it is never ahead of the ledger.
//! - **Visible when applied.** The ledger shows an entry once it is durable, and its watch feed
//!   fires then; a shard's apply returns only after every entry it applied is durable.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

use crate::types::{Entry, NodeId, StorageError, TypeConfig};
use crate::wire;

/// How often the applied position is saved (more often means less to apply again after a
/// restart, and one more small fsync).
const SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// The prefix of the `append_id`s the cluster gives appends that came without one; clients
/// may not use it (CONTRACT §5).
pub const RESERVED_APPEND_ID_PREFIX: &str = "raft:";

/// One shard's state machine over the node's ledger.
pub struct StateMachine {
    shard: u32,
    ledger: Ledger,
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
    saved_at: Instant,
}

impl StateMachine {
    /// The state machine of `shard`, saving its applied position in `dir`.
    pub fn open(
        shard: u32,
        ledger: Ledger,
        vfs: Arc<dyn Vfs>,
        dir: &Path,
    ) -> std::io::Result<Self> {
        vfs.create_dir_all(dir)?;
        let (applied, membership) = read_applied(vfs.as_ref(), dir)?.unwrap_or_default();
        Ok(Self {
            shard,
            ledger,
            vfs,
            dir: dir.to_path_buf(),
            applied,
            membership,
            saved_at: Instant::now(),
        })
    }

    fn save(&mut self) -> Result<(), StorageError> {
        let state = pb::AppliedState {
            applied: self.applied.as_ref().map(wire::log_id_to),
            membership_log_id: self.membership.log_id().as_ref().map(wire::log_id_to),
            membership: Some(wire::membership_to(self.membership.membership())),
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
                let mut request =
                    convert::append_request_from_wire(append.request.unwrap_or_default());
                if request.append_id.as_deref().is_none_or(str::is_empty) {
                    request.append_id =
                        Some(format!("{RESERVED_APPEND_ID_PREFIX}{}:{index}", self.shard));
                }
                match self.ledger.apply_append(request, Timestamp(append.now_ns)) {
                    Ok(pending) => Ok(Applying::Append(Box::pin(pending))),
                    Err(e) => answer(&e).map(Applying::Done),
                }
            }
            Some(pb::command::Op::Load(load)) => {
                Ok(Applying::Load(convert::load_request_from_wire(load)))
            }
            None => Ok(Applying::Done(failure(&LedgerError::InvalidArgument(
                "a command with no operation".into(),
            )))),
        }
    }
}

type PendingAppend = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Arc<converge_core::Entry>, LedgerError>> + Send>,
>;

enum Applying {
    Done(pb::Outcome),
    Append(PendingAppend),
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
        let mut outcomes: Vec<pb::Outcome> = Vec::new();
        let mut pending: Vec<(usize, PendingAppend)> = Vec::new();
        let mut membership_changed = false;
        for entry in entries {
            let index = entry.log_id.index;
            match entry.payload {
                EntryPayload::Blank => outcomes.push(pb::Outcome::default()),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    membership_changed = true;
                    outcomes.push(pb::Outcome::default());
                }
                EntryPayload::Normal(command) => match self.start(index, command)? {
                    Applying::Done(outcome) => outcomes.push(outcome),
                    Applying::Append(future) => {
                        pending.push((outcomes.len(), future));
                        outcomes.push(pb::Outcome::default());
                    }
                    Applying::Load(request) => {
                        // A load compares with the context as it is: appends before it first.
                        settle(&mut pending, &mut outcomes).await?;
                        let outcome = match self.ledger.apply_load(request).await {
                            Ok(response) => pb::Outcome {
                                result: Some(pb::outcome::Result::Load(
                                    convert::load_response_to_wire(response),
                                )),
                                log_index: 0,
                            },
                            Err(e) => answer(&e)?,
                        };
                        outcomes.push(outcome);
                    }
                },
            }
            self.applied = Some(entry.log_id);
        }
        settle(&mut pending, &mut outcomes).await?;
        if membership_changed || self.saved_at.elapsed() >= SAVE_INTERVAL {
            self.save()?;
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

/// Waits for the appends handed to the ledger, in order, and fills in their outcomes.
async fn settle(
    pending: &mut Vec<(usize, PendingAppend)>,
    outcomes: &mut [pb::Outcome],
) -> Result<(), StorageError> {
    for (at, future) in pending.drain(..) {
        outcomes[at] = match future.await {
            Ok(entry) => entry_outcome(&entry),
            Err(e) => answer(&e)?,
        };
    }
    Ok(())
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

type Applied = (Option<LogId<NodeId>>, StoredMembership<NodeId, openraft::BasicNode>);

fn read_applied(vfs: &dyn Vfs, dir: &Path) -> std::io::Result<Option<Applied>> {
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
    Ok(Some((state.applied.as_ref().map(wire::log_id_from), membership)))
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
