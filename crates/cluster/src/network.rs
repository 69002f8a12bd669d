//! The way out to other nodes: one HTTP/2 connection per peer address, shared by every shard's
//! Raft and by forwarding, and openraft's network over it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use converge_proto::cluster as pb;
use converge_proto::cluster::peer_client::PeerClient;
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use prost::Message as _;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::log_store::RECORD_BYTES_MAX;
use crate::types::{NodeId, TypeConfig};
use crate::wire;

/// How long a peer connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How a node speaks TLS to its peers (when the cluster's nodes serve TLS).
#[derive(Clone)]
pub struct PeerTls {
    /// The CA (PEM) that signed the nodes' certificates: a peer must present one it signed,
    /// for the host it is reached at.
    pub ca_pem: Vec<u8>,
    /// This node's certificate chain and key (PEM), presented to peers that ask for a client
    /// certificate.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls")
            .field("identity", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

/// Connections to peers, by address, and the token peers present.
#[derive(Clone, Default)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    token: Option<Arc<str>>,
    tls: Option<ClientTlsConfig>,
    source: Option<IpAddr>,
}

impl Peers {
    /// Connections that present `token` (role `peer`) if the cluster uses tokens, over TLS
    /// if `tls` is given, dialled from `source` if given.
    pub fn new(token: Option<String>, tls: Option<&PeerTls>, source: Option<IpAddr>) -> Self {
        let tls = tls.map(|tls| {
            let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
            match &tls.identity {
                Some((cert, key)) => config.identity(Identity::from_pem(cert, key)),
                None => config,
            }
        });
        Self { channels: Arc::default(), token: token.map(Arc::from), tls, source }
    }

    /// A client for the peer at `address` (`host:port`); connects lazily, once per address.
    pub fn client(&self, address: &str) -> Result<PeerClient<Channel>, tonic::Status> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let channel = if let Some(channel) = channels.get(address) {
            channel.clone()
        } else {
            let bad = |e: &dyn std::fmt::Display| {
                tonic::Status::invalid_argument(format!("{address:?} is not a peer address: {e}"))
            };
            let scheme = if self.tls.is_some() { "https" } else { "http" };
            let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
                .map_err(|e| bad(&e))?
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .local_address(self.source)
                .http2_keep_alive_interval(Duration::from_secs(1))
                .keep_alive_timeout(Duration::from_secs(2));
            if let Some(tls) = &self.tls {
                endpoint = endpoint.tls_config(tls.clone()).map_err(|e| bad(&e))?;
            }
            let channel = endpoint.connect_lazy();
            channels.insert(address.to_string(), channel.clone());
            channel
        };
        Ok(PeerClient::new(channel)
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX))
    }

    /// `message` as a request with the peer token and a deadline.
    pub fn request<T>(&self, message: T, timeout: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        if let Some(token) = &self.token
            && let Ok(value) = MetadataValue::try_from(format!("Bearer {token}"))
        {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }
}

/// The largest message between nodes, either way. One Raft entry is at most one record of
/// the Raft log ([`RECORD_BYTES_MAX`]); with the request around it this bounds what a peer
/// can make a node decode and hold.
pub const PEER_MESSAGE_BYTES_MAX: usize = RECORD_BYTES_MAX + (1 << 20);

/// What one `AppendEntries` carries at most, in bytes, when it has more than one entry: several
/// entries ride together up to this (a lone entry larger than it goes alone).
const APPEND_ENTRIES_BYTES_MAX: usize = 16 << 20;

/// How many of `entries`, from the first, fit in `bytes_max` (at least one).
fn fitting_entries(entries: &[pb::LogEntry], bytes_max: usize) -> u64 {
    let mut total = 0;
    let fit = entries
        .iter()
        .take_while(|entry| {
            total += entry.encoded_len() + 8;
            total <= bytes_max
        })
        .count();
    fit.max(1) as u64
}

/// openraft's view of the peers of one shard.
pub struct Network {
    shard: u32,
    peers: Peers,
}

impl Network {
    /// The network of `shard`.
    pub fn new(shard: u32, peers: Peers) -> Self {
        Self { shard, peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            shard: self.shard,
            target,
            address: node.addr.clone(),
            peers: self.peers.clone(),
        }
    }
}

/// A shard's connection to one peer.
pub struct Connection {
    shard: u32,
    target: NodeId,
    address: String,
    peers: Peers,
}

type RpcError<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

fn rpc_error<E: std::error::Error>(status: &tonic::Status) -> RpcError<E> {
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Failed(String);
    let failed = Failed(format!("{}: {}", status.code(), status.message()));
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            RPCError::Unreachable(Unreachable::new(&failed))
        }
        _ => RPCError::Network(NetworkError::new(&failed)),
    }
}

fn malformed<E: std::error::Error>(e: &wire::Malformed) -> RpcError<E> {
    RPCError::Network(NetworkError::new(e))
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        let request = wire::append_entries_to(self.shard, &rpc);
        let bytes = request.encoded_len();
        if bytes > APPEND_ENTRIES_BYTES_MAX && request.entries.len() > 1 {
            // openraft sends fewer entries at once after this (and goes back up later).
            let fit = fitting_entries(&request.entries, APPEND_ENTRIES_BYTES_MAX);
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(fit)));
        }
        let mut client = self.peers.client(&self.address).map_err(|s| rpc_error(&s))?;
        let response = client
            .append_entries(self.peers.request(request, option.hard_ttl()))
            .await
            .map_err(|s| rpc_error(&s))?;
        wire::append_response_from(response.into_inner()).map_err(|e| malformed(&e))
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcError<InstallSnapshotError>> {
        #[derive(Debug, thiserror::Error)]
        #[error("snapshots are not used: the Raft log is never purged (peer {0:016x})")]
        struct NoSnapshots(NodeId);
        Err(RPCError::Network(NetworkError::new(&NoSnapshots(self.target))))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        let request = wire::vote_request_to(self.shard, &rpc);
        let mut client = self.peers.client(&self.address).map_err(|s| rpc_error(&s))?;
        let response = client
            .vote(self.peers.request(request, option.hard_ttl()))
            .await
            .map_err(|s| rpc_error(&s))?;
        wire::vote_response_from(&response.into_inner()).map_err(|e| malformed(&e))
    }
}
