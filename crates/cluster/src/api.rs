//! The replicated ledger behind the same [`LedgerApi`] as the embedded one: writes go through
//! the shard's Raft, reads come from this node's applied state (CONTRACT §5).

use std::sync::Arc;
use std::time::{Duration, Instant};

use converge_api::{
    AppendRequest, ConsistencyProof, GetRequest, GetResponse, InclusionProof, LedgerApi,
    LedgerError, ListContextsRequest, ListContextsResponse, LoadRequest, LoadResponse,
    PendingAppend, SnapshotResponse, TreeHead, WatchRequest, WatchStream,
};
use converge_core::Entry;
use converge_proto::cluster as pb;
use converge_proto::{convert, status};

use crate::node::Cluster;
use crate::state_machine::RESERVED_APPEND_ID_PREFIX;
use crate::types::shard_of;

/// What a write's outcome says, as the API answers it.
fn outcome_failure(outcome: &pb::Outcome) -> Option<LedgerError> {
    match &outcome.result {
        Some(pb::outcome::Result::Failure(f)) => Some(status::from_status(&tonic::Status::new(
            tonic::Code::from_i32(f.code),
            f.message.clone(),
        ))),
        None => Some(LedgerError::Internal("a write's outcome was empty".into())),
        _ => None,
    }
}

/// The command that appends `request` to its shard, with an `append_id` if it came without.
fn append_command(
    cluster: &Cluster,
    mut request: AppendRequest,
) -> Result<pb::Command, LedgerError> {
    match request.append_id.as_deref() {
        Some(id) if id.starts_with(RESERVED_APPEND_ID_PREFIX) => {
            return Err(LedgerError::InvalidArgument(format!(
                "append_id {id:?} begins with {RESERVED_APPEND_ID_PREFIX:?}, which a cluster reserves for its own ids; choose another append_id"
            )));
        }
        None | Some("") => request.append_id = Some(cluster.fresh_append_id()),
        Some(_) => {}
    }
    // Checked here, where it enters, against the cluster's limits: a request the ledger
    // refuses never enters the replicated log, and apply judges nothing.
    let shard = shard_of(&request.context_id, cluster.shard_count());
    cluster.limits(shard).check_append(&request)?;
    Ok(pb::Command {
        shard,
        op: Some(pb::command::Op::Append(pb::AppendCommand {
            request: Some(convert::append_request_to_wire(request)),
            now_ns: 0,
        })),
    })
}

/// The entry an append's outcome holds, or why it failed.
fn appended(outcome: pb::Outcome) -> Result<Arc<Entry>, LedgerError> {
    if let Some(failure) = outcome_failure(&outcome) {
        return Err(failure);
    }
    match outcome.result {
        Some(pb::outcome::Result::Entry(entry)) => convert::entry_from_wire(entry).map(Arc::new),
        _ => Err(LedgerError::Internal("an append's outcome held no entry".into())),
    }
}

/// How long a read waits, after an unclean restart, for its shard to apply again what the node
/// may have shown before (`crate::floor`); then it is refused with `UNAVAILABLE`, and the
/// client reads from another node.
const FLOOR_WAIT_MAX: Duration = Duration::from_secs(2);
/// How often a waiting read looks again.
const FLOOR_POLL: Duration = Duration::from_millis(20);

impl Cluster {
    /// Whether this node may answer a read of `context_id`: it is a member, and after an
    /// unclean restart, the context's shard has applied again what the node may have shown.
    async fn check_readable(&self, context_id: &str) -> Result<(), LedgerError> {
        self.check_shards_readable(&[shard_of(context_id, self.shard_count())]).await
    }

    /// As [`Self::check_readable`], for the contexts of every shard in `shards`.
    async fn check_shards_readable(&self, shards: &[u32]) -> Result<(), LedgerError> {
        self.check_member()?;
        let started = Instant::now();
        while let Some((shard, floor)) =
            shards.iter().find_map(|&s| self.floor_waiting(s).map(|floor| (s, floor)))
        {
            if started.elapsed() >= FLOOR_WAIT_MAX {
                return Err(LedgerError::Unavailable(format!(
                    "this node restarted after an unclean shutdown and has not yet applied shard {shard} again up to index {floor} (what it may have shown before); read from another node, or retry"
                )));
            }
            tokio::time::sleep(FLOOR_POLL).await;
        }
        Ok(())
    }
}

impl LedgerApi for Cluster {
    async fn append(&self, request: AppendRequest) -> Result<Arc<Entry>, LedgerError> {
        appended(self.write(append_command(self, request)?).await?)
    }

    async fn append_queued(&self, request: AppendRequest) -> PendingAppend {
        match append_command(self, request) {
            Ok(command) => {
                let wait = self.write_queued(command).await;
                Box::pin(async move { appended(wait.await?) })
            }
            Err(refused) => Box::pin(std::future::ready(Err(refused))),
        }
    }

    async fn get(&self, request: GetRequest) -> Result<GetResponse, LedgerError> {
        self.check_readable(&request.context_id).await?;
        self.ledger().get(request).await
    }

    async fn list_contexts(
        &self,
        request: ListContextsRequest,
    ) -> Result<ListContextsResponse, LedgerError> {
        // Contexts of every shard are listed: each must show what it may have shown before.
        let shards: Vec<u32> = (0..self.shard_count()).collect();
        self.check_shards_readable(&shards).await?;
        self.ledger().list_contexts(request).await
    }

    async fn snapshot(&self, context_id: &str) -> Result<SnapshotResponse, LedgerError> {
        self.check_readable(context_id).await?;
        self.ledger().snapshot(context_id).await
    }

    async fn load(&self, request: LoadRequest) -> Result<LoadResponse, LedgerError> {
        self.check_member()?;
        let shard = shard_of(&request.context_id, self.shard_count());
        // The whole blob is verified before it is proposed (hashing is most of a load's CPU).
        let limits = self.limits(shard);
        let checked = request.clone();
        tokio::task::spawn_blocking(move || limits.check_load(&checked))
            .await
            .map_err(|e| LedgerError::Internal(format!("checking a load panicked: {e}")))??;
        let command = pb::Command {
            shard,
            op: Some(pb::command::Op::Load(convert::load_request_to_wire(request))),
        };
        let outcome = self.write(command).await?;
        if let Some(failure) = outcome_failure(&outcome) {
            return Err(failure);
        }
        match outcome.result {
            Some(pb::outcome::Result::Load(response)) => {
                Ok(convert::load_response_from_wire(&response))
            }
            _ => Err(LedgerError::Internal("a load's outcome held no load response".into())),
        }
    }

    async fn watch(&self, request: WatchRequest) -> Result<WatchStream, LedgerError> {
        self.check_readable(&request.context_id).await?;
        self.ledger().watch(request).await
    }

    async fn tree_head(&self, context_id: &str) -> Result<TreeHead, LedgerError> {
        self.check_readable(context_id).await?;
        self.ledger().tree_head(context_id).await
    }

    async fn prove_inclusion(
        &self,
        context_id: &str,
        sequence: u64,
        tree_size: u64,
    ) -> Result<InclusionProof, LedgerError> {
        self.check_readable(context_id).await?;
        self.ledger().prove_inclusion(context_id, sequence, tree_size).await
    }

    async fn prove_consistency(
        &self,
        context_id: &str,
        from_size: u64,
        to_size: u64,
    ) -> Result<ConsistencyProof, LedgerError> {
        self.check_readable(context_id).await?;
        self.ledger().prove_consistency(context_id, from_size, to_size).await
    }
}
