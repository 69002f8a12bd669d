//! The internal service (`converge.cluster.v1.Peer`): Raft's messages, forwarded writes,
//! membership changes and status, served on the node's gRPC port.

use std::time::Duration;

use converge_proto::cluster as pb;
use converge_proto::cluster::admin_server::{Admin, AdminServer};
use converge_proto::cluster::peer_server::{Peer, PeerServer};
use openraft::ServerState;
use tonic::{Request, Response, Status};

use crate::limits::ClusterLimits;
use crate::node::Cluster;
use crate::types::{NodeId, node_name};
use crate::wire;

/// How long a membership change forwarded to a shard's leader may take (a learner catches up
/// first, which for a long log takes a while).
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(600);

impl Cluster {
    /// The internal service, to add to the node's gRPC server.
    pub fn peer_service(&self) -> PeerServer<Self> {
        PeerServer::new(self.clone())
            .max_decoding_message_size(crate::network::PEER_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(crate::network::PEER_MESSAGE_BYTES_MAX)
    }

    /// The operators' service, to add to the node's gRPC server.
    pub fn admin_service(&self) -> AdminServer<Self> {
        AdminServer::new(self.clone())
    }

    /// The status of the cluster as this node sees it (`cluster status`), with whether it
    /// reaches each node.
    pub async fn status(&self) -> pb::StatusResponse {
        let mut status = self.status_local();
        for node in &mut status.nodes {
            node.reachable = node.id == self.inner.id || self.probe(&node.address).await;
        }
        status
    }

    /// The status without asking anyone: only this node counts as reachable.
    pub(crate) fn status_local(&self) -> pb::StatusResponse {
        let mut shards = Vec::new();
        let mut members = std::collections::BTreeMap::<NodeId, (String, bool)>::new();
        for (shard, raft) in self.inner.shards.iter().enumerate() {
            let m = raft.metrics().borrow().clone();
            let membership = m.membership_config.membership();
            for (id, node) in membership.nodes() {
                // A voter only if it votes in every shard (promotions go shard by shard), and
                // in both halves of a membership change under way (a node being promoted
                // does not count yet, one being removed no longer).
                let voter = membership.get_joint_config().iter().all(|c| c.contains(id));
                members
                    .entry(*id)
                    .and_modify(|member| member.1 &= voter)
                    .or_insert_with(|| (node.addr.clone(), voter));
            }
            let role = match m.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            };
            let peers = m
                .replication
                .as_ref()
                .map(|r| {
                    r.iter()
                        .map(|(node, matched)| pb::PeerProgress {
                            node: *node,
                            matched: matched.map(|l| l.index),
                        })
                        .collect()
                })
                .unwrap_or_default();
            // Committed: the leader knows it; elsewhere, what this node has applied is a
            // committed prefix, so it is the best lower bound.
            let committed = m
                .replication
                .as_ref()
                .and_then(|r| {
                    let mut matched: Vec<u64> = membership
                        .voter_ids()
                        .map(|v| r.get(&v).copied().flatten().map_or(0, |l| l.index))
                        .collect();
                    matched.sort_unstable();
                    matched.get((matched.len().saturating_sub(1)) / 2).copied()
                })
                .or(m.last_applied.map(|l| l.index))
                .unwrap_or(0);
            shards.push(pb::ShardStatus {
                shard: u32::try_from(shard).expect("a shard number fits u32"),
                leader: m.current_leader,
                term: m.current_term,
                committed,
                applied: m.last_applied.map_or(0, |l| l.index),
                role: role.into(),
                peers,
            });
        }
        let nodes = members
            .into_iter()
            .map(|(id, (address, voter))| pb::NodeStatus {
                reachable: id == self.inner.id,
                id,
                address,
                voter,
            })
            .collect();
        pb::StatusResponse {
            node: self.inner.id,
            address: self.inner.address.clone(),
            nodes,
            limits: Some(self.limits(0).to_wire()),
            shards,
            voters_wanted: self.inner.voters_wanted,
            cluster_id: self.inner.cluster_id.clone(),
        }
    }

    /// Removes `node` from `shard` on the shard's leader (here, or sent there).
    async fn remove_via_leader(&self, shard: u32, node: NodeId) -> Result<(), Status> {
        self.on_leader(
            shard,
            |shard| {
                Change::Remove(pb::RemoveRequest {
                    node,
                    shard: Some(shard),
                    you_are_removed: false,
                })
            },
            || self.remove_from_shard(shard, node),
        )
        .await
    }

    /// Runs `change` on `shard`'s leader: here if this node leads it, else sent there.
    async fn on_leader<F, Fut>(
        &self,
        shard: u32,
        forward: impl Fn(u32) -> Change,
        here: F,
    ) -> Result<(), Status>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), Status>>,
    {
        let started = std::time::Instant::now();
        loop {
            let leader = self.raft(shard)?.metrics().borrow().current_leader;
            let result = match leader {
                Some(leader) if leader == self.inner.id => here().await,
                Some(leader) => {
                    let address = self
                        .address_of(shard, leader)
                        .ok_or_else(|| Status::unavailable("the leader has no known address"))?;
                    let mut client = self.inner.peers.client(&address)?;
                    match forward(shard) {
                        Change::Join(request) => client
                            .join(self.inner.peers.request(request, MEMBERSHIP_TIMEOUT))
                            .await
                            .map(|_| ()),
                        Change::Remove(request) => client
                            .remove(self.inner.peers.request(request, MEMBERSHIP_TIMEOUT))
                            .await
                            .map(|_| ()),
                    }
                }
                None => Err(Status::unavailable(format!("shard {shard} has no leader"))),
            };
            match result {
                Err(status)
                    if status.code() == tonic::Code::Unavailable
                        && started.elapsed() < Duration::from_secs(10) =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }
}

/// A membership change sent on to a shard's leader.
enum Change {
    Join(pb::JoinRequest),
    Remove(pb::RemoveRequest),
}

#[tonic::async_trait]
impl Peer for Cluster {
    async fn append_entries(
        &self,
        request: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        let request = request.into_inner();
        let shard = request.shard;
        let raft = self.raft(shard)?;
        let rpc = wire::append_entries_from(request)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let response =
            raft.append_entries(rpc).await.map_err(|e| Status::unavailable(e.to_string()))?;
        if !matches!(response, openraft::raft::AppendEntriesResponse::HigherVote(_)) {
            self.inner.heard.now(shard);
        }
        Ok(Response::new(wire::append_response_to(&response)))
    }

    async fn vote(
        &self,
        request: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        let request = request.into_inner();
        let raft = self.raft(request.shard)?;
        let rpc = wire::vote_request_from(&request)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let response = raft.vote(rpc).await.map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(wire::vote_response_to(&response)))
    }

    async fn forward(
        &self,
        request: Request<pb::Command>,
    ) -> Result<Response<pb::Outcome>, Status> {
        self.propose(request.into_inner()).await.map(Response::new)
    }

    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let request = request.into_inner();
        let mine = &self.inner.cluster_id;
        if !request.cluster_id.is_empty() && !mine.is_empty() && &request.cluster_id != mine {
            return Err(Status::failed_precondition(format!(
                "node {} holds the state of cluster {}, and this is cluster {mine}: it cannot join",
                node_name(request.node),
                request.cluster_id
            )));
        }
        let shards: Vec<u32> = match request.shard {
            Some(shard) => vec![shard],
            None => (0..self.shard_count()).collect(),
        };
        for shard in shards {
            let (node, address) = (request.node, request.address.clone());
            self.on_leader(
                shard,
                |shard| {
                    Change::Join(pb::JoinRequest {
                        node,
                        address: address.clone(),
                        shard: Some(shard),
                        cluster_id: String::new(),
                    })
                },
                || self.add_to_shard(shard, node, address.clone()),
            )
            .await?;
        }
        tracing::info!(node = %node_name(request.node), address = request.address, "a node joined");
        Ok(Response::new(pb::JoinResponse {
            shards: self.shard_count(),
            voters: self.inner.voters_wanted,
        }))
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveRequest>,
    ) -> Result<Response<pb::RemoveResponse>, Status> {
        let request = request.into_inner();
        if request.you_are_removed {
            if request.node == self.inner.id {
                self.mark_removed();
            }
            return Ok(Response::new(pb::RemoveResponse {}));
        }
        let shard = request
            .shard
            .ok_or_else(|| Status::invalid_argument("a peer removal names its shard"))?;
        self.remove_via_leader(shard, request.node).await?;
        Ok(Response::new(pb::RemoveResponse {}))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(self.status_local()))
    }

    async fn membership(
        &self,
        request: Request<pb::MembershipRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let request = request.into_inner();
        let shard = request.shard;
        let m = self.raft(shard)?.metrics().borrow().clone();
        let leader = m.state == ServerState::Leader;
        let log = crate::types::of_shard(shard, &self.inner.logs)?;
        let (last_log_term, last_log_index) = crate::stand::last_log(log);
        Ok(Response::new(pb::MembershipResponse {
            leader,
            member: m.membership_config.membership().get_node(&request.node).is_some(),
            config_index: m.membership_config.log_id().map_or(0, |l| l.index),
            hears_leader: leader || self.inner.heard.silence(shard) <= self.inner.quorum_lost_after,
            last_log_term,
            last_log_index,
        }))
    }

    async fn elect(
        &self,
        request: Request<pb::ElectRequest>,
    ) -> Result<Response<pb::ElectResponse>, Status> {
        let shard = request.into_inner().shard;
        self.raft(shard)?.trigger().elect().await.map_err(|e| crate::forward::raft_status(&e))?;
        Ok(Response::new(pb::ElectResponse {}))
    }
}

#[tonic::async_trait]
impl Admin for Cluster {
    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(Cluster::status(self).await))
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveRequest>,
    ) -> Result<Response<pb::RemoveResponse>, Status> {
        let node = request.into_inner().node;
        let known = self.inner.shards.iter().any(|raft| {
            raft.metrics().borrow().membership_config.membership().get_node(&node).is_some()
        });
        if !known {
            return Err(Status::not_found(format!(
                "node {} is not a member of the cluster",
                node_name(node)
            )));
        }
        // The removed node's address, to tell it afterwards.
        let address = self.address_of(0, node);
        for shard in 0..self.shard_count() {
            self.remove_via_leader(shard, node).await?;
        }
        if node == self.inner.id {
            self.mark_removed();
        } else if let Some(address) = address
            && let Ok(mut client) = self.inner.peers.client(&address)
        {
            let notice = pb::RemoveRequest { node, shard: None, you_are_removed: true };
            // Best effort: a node that is down learns it when it finds itself outside the
            // membership.
            let _ = client.remove(self.inner.peers.request(notice, Duration::from_secs(2))).await;
        }
        tracing::info!(node = %node_name(node), "a node was removed");
        Ok(Response::new(pb::RemoveResponse {}))
    }

    async fn set_limits(
        &self,
        request: Request<pb::ClusterLimits>,
    ) -> Result<Response<pb::SetLimitsResponse>, Status> {
        let limits = ClusterLimits::from_wire(&request.into_inner())
            .map_err(|why| Status::invalid_argument(format!("invalid cluster limits: {why}")))?;
        for shard in 0..self.shard_count() {
            self.record_limits(shard, limits)
                .await
                .map_err(|e| converge_proto::status::to_status(&e))?;
        }
        tracing::info!(?limits, "the cluster's limits changed");
        Ok(Response::new(pb::SetLimitsResponse {}))
    }
}
