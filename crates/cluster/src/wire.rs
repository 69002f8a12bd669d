//! openraft's messages to and from `converge.cluster.v1`: the peer service carries them, and
//! the Raft log stores entries in the same encoding.

use std::collections::{BTreeMap, BTreeSet};

use converge_proto::cluster as pb;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest, VoteResponse};
use openraft::{BasicNode, CommittedLeaderId, EntryPayload, LogId, Membership, Vote};

use crate::types::{Entry, NodeId, TypeConfig};

/// A message from a peer did not hold what it must.
#[derive(Debug, thiserror::Error)]
#[error("a peer sent a malformed {0}")]
pub(crate) struct Malformed(pub(crate) &'static str);

pub(crate) fn log_id_to(id: &LogId<NodeId>) -> pb::LogId {
    pb::LogId { term: id.leader_id.term, node: id.leader_id.node_id, index: id.index }
}

pub(crate) fn log_id_from(id: &pb::LogId) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(id.term, id.node), id.index)
}

fn opt_log_id_from(id: Option<&pb::LogId>) -> Option<LogId<NodeId>> {
    id.map(log_id_from)
}

pub(crate) fn vote_to(vote: &Vote<NodeId>) -> pb::Vote {
    pb::Vote { term: vote.leader_id.term, node: vote.leader_id.node_id, committed: vote.committed }
}

pub(crate) fn vote_from(vote: Option<&pb::Vote>) -> Result<Vote<NodeId>, Malformed> {
    let vote = vote.ok_or(Malformed("vote"))?;
    Ok(if vote.committed {
        Vote::new_committed(vote.term, vote.node)
    } else {
        Vote::new(vote.term, vote.node)
    })
}

pub(crate) fn membership_to(m: &Membership<NodeId, BasicNode>) -> pb::Membership {
    pb::Membership {
        configs: m
            .get_joint_config()
            .iter()
            .map(|set| pb::VoterSet { voters: set.iter().copied().collect() })
            .collect(),
        nodes: m
            .nodes()
            .map(|(id, node)| pb::Member { id: *id, address: node.addr.clone() })
            .collect(),
    }
}

pub(crate) fn membership_from(m: &pb::Membership) -> Membership<NodeId, BasicNode> {
    let configs: Vec<BTreeSet<NodeId>> =
        m.configs.iter().map(|set| set.voters.iter().copied().collect()).collect();
    let nodes: BTreeMap<NodeId, BasicNode> =
        m.nodes.iter().map(|n| (n.id, BasicNode { addr: n.address.clone() })).collect();
    Membership::new(configs, nodes)
}

pub(crate) fn entry_to(entry: &Entry) -> pb::LogEntry {
    let payload = match &entry.payload {
        EntryPayload::Blank => pb::log_entry::Payload::Blank(true),
        EntryPayload::Normal(command) => pb::log_entry::Payload::Normal(command.clone()),
        EntryPayload::Membership(m) => pb::log_entry::Payload::Membership(membership_to(m)),
    };
    pb::LogEntry { log_id: Some(log_id_to(&entry.log_id)), payload: Some(payload) }
}

pub(crate) fn entry_from(entry: pb::LogEntry) -> Result<Entry, Malformed> {
    let log_id = log_id_from(entry.log_id.as_ref().ok_or(Malformed("log entry id"))?);
    let payload = match entry.payload.ok_or(Malformed("log entry payload"))? {
        pb::log_entry::Payload::Blank(_) => EntryPayload::Blank,
        pb::log_entry::Payload::Normal(command) => EntryPayload::Normal(command),
        pb::log_entry::Payload::Membership(m) => EntryPayload::Membership(membership_from(&m)),
    };
    Ok(Entry { log_id, payload })
}

pub(crate) fn append_entries_to(
    shard: u32,
    rpc: &AppendEntriesRequest<TypeConfig>,
) -> pb::AppendEntriesRequest {
    pb::AppendEntriesRequest {
        shard,
        vote: Some(vote_to(&rpc.vote)),
        prev_log_id: rpc.prev_log_id.as_ref().map(log_id_to),
        entries: rpc.entries.iter().map(entry_to).collect(),
        leader_commit: rpc.leader_commit.as_ref().map(log_id_to),
    }
}

pub(crate) fn append_entries_from(
    rpc: pb::AppendEntriesRequest,
) -> Result<AppendEntriesRequest<TypeConfig>, Malformed> {
    Ok(AppendEntriesRequest {
        vote: vote_from(rpc.vote.as_ref())?,
        prev_log_id: opt_log_id_from(rpc.prev_log_id.as_ref()),
        entries: rpc.entries.into_iter().map(entry_from).collect::<Result<_, _>>()?,
        leader_commit: opt_log_id_from(rpc.leader_commit.as_ref()),
    })
}

pub(crate) fn append_response_to(
    resp: &AppendEntriesResponse<NodeId>,
) -> pb::AppendEntriesResponse {
    use pb::append_entries_response::Result as R;
    let result = match resp {
        AppendEntriesResponse::Success => R::Success(true),
        AppendEntriesResponse::PartialSuccess(matching) => {
            R::PartialSuccess(pb::PartialSuccess { matching: matching.as_ref().map(log_id_to) })
        }
        AppendEntriesResponse::Conflict => R::Conflict(true),
        AppendEntriesResponse::HigherVote(vote) => R::HigherVote(vote_to(vote)),
    };
    pb::AppendEntriesResponse { result: Some(result) }
}

pub(crate) fn append_response_from(
    resp: pb::AppendEntriesResponse,
) -> Result<AppendEntriesResponse<NodeId>, Malformed> {
    use pb::append_entries_response::Result as R;
    Ok(match resp.result.ok_or(Malformed("append-entries response"))? {
        R::Success(_) => AppendEntriesResponse::Success,
        R::PartialSuccess(p) => {
            AppendEntriesResponse::PartialSuccess(opt_log_id_from(p.matching.as_ref()))
        }
        R::Conflict(_) => AppendEntriesResponse::Conflict,
        R::HigherVote(vote) => AppendEntriesResponse::HigherVote(vote_from(Some(&vote))?),
    })
}

pub(crate) fn vote_request_to(shard: u32, rpc: &VoteRequest<NodeId>) -> pb::VoteRequest {
    pb::VoteRequest {
        shard,
        vote: Some(vote_to(&rpc.vote)),
        last_log_id: rpc.last_log_id.as_ref().map(log_id_to),
    }
}

pub(crate) fn vote_request_from(rpc: &pb::VoteRequest) -> Result<VoteRequest<NodeId>, Malformed> {
    Ok(VoteRequest {
        vote: vote_from(rpc.vote.as_ref())?,
        last_log_id: opt_log_id_from(rpc.last_log_id.as_ref()),
    })
}

pub(crate) fn vote_response_to(resp: &VoteResponse<NodeId>) -> pb::VoteResponse {
    pb::VoteResponse {
        vote: Some(vote_to(&resp.vote)),
        vote_granted: resp.vote_granted,
        last_log_id: resp.last_log_id.as_ref().map(log_id_to),
    }
}

pub(crate) fn vote_response_from(
    resp: &pb::VoteResponse,
) -> Result<VoteResponse<NodeId>, Malformed> {
    Ok(VoteResponse {
        vote: vote_from(resp.vote.as_ref())?,
        vote_granted: resp.vote_granted,
        last_log_id: opt_log_id_from(resp.last_log_id.as_ref()),
    })
}
