//! The Rust client of Converge Ledger.
//!
//! What it is: [`Client`] implements [`LedgerApi`], the same trait as the embedded ledger, over
//! gRPC: an engine written against the trait switches between in-process and remote by
//! changing the line that builds its ledger (see `examples/switch.rs`). Statuses come back as
//! typed [`LedgerError`]s; `watch` resumes after a dropped connection from the last sequence it
//! delivered, without gap or duplicate; in [verifying mode](ClientConfig::verify) every entry's
//! content hash is recomputed, every proof is checked, and the client pins the newest tree head
//! it has seen per context: a newer one is accepted only with a consistency proof from it, and
//! every root the server shows (tree heads, snapshots, proofs, a Get of a whole prefix) must be
//! consistent with it, so a server cannot rewrite or fork a history it has shown.
//!
//! What it is not: a second implementation of anything. Hashing and proof checks are the
//! core's; wire conversions are `converge-proto`'s.

mod connector;
mod nodes;
mod routes;
mod streams;
mod verify;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use converge_api::{
    AppendRequest, ConsistencyProof, GetRequest, GetResponse, InclusionProof, LedgerApi,
    LedgerError, ListContextsRequest, ListContextsResponse, LoadRequest, LoadResponse,
    PendingAppend, SnapshotResponse, TreeHead, WatchRequest, WatchStream,
};
use converge_core::Entry;
use converge_proto::cluster::admin_client::AdminClient;
use converge_proto::status::describe;
use converge_proto::v1::context_service_client::ContextServiceClient;
use converge_proto::v1::integrity_service_client::IntegrityServiceClient;
use converge_proto::{cluster, convert, status, v1};
use tonic::transport::{Channel, Endpoint};

/// Largest message the client sends or accepts by default: a snapshot of up to 256 MiB. A
/// server's own limits still apply.
pub const MESSAGE_BYTES_MAX_DEFAULT: usize = 256 * 1024 * 1024 + 256 * 1024;

/// How a client connects.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The server, e.g. `http://127.0.0.1:50051`, or several nodes of a cluster separated by
    /// commas (`http://a:50051,http://b:50051`): calls move to the next on `UNAVAILABLE`.
    pub server: String,
    /// Recompute every entry's content hash and check every proof against the tree head.
    pub verify: bool,
    /// How long to wait for the connection.
    pub connect_timeout: Duration,
    /// Largest message sent or accepted.
    pub message_bytes_max: usize,
    /// Longest wait between attempts when a watch resumes after a dropped connection.
    pub watch_retry_max: Duration,
    /// TLS: the CA to trust, and optionally a client certificate (for servers that ask).
    pub tls: Option<ClientTls>,
    /// A bearer token sent with every call.
    pub token: Option<String>,
    /// `AppendStream`s that concurrent appends share (0: every append is its own call).
    pub append_streams: usize,
}

/// TLS settings of a client: PEM bytes, as read from files.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The certificate authority that signed the server's certificate.
    pub ca_pem: Vec<u8>,
    /// The client's certificate and key, for servers that require client certificates.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name to expect in the server's certificate (default: the host of the address).
    pub domain: Option<String>,
}

impl ClientConfig {
    /// Defaults for `server`.
    pub fn new(server: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            verify: false,
            connect_timeout: Duration::from_secs(10),
            message_bytes_max: MESSAGE_BYTES_MAX_DEFAULT,
            watch_retry_max: Duration::from_secs(5),
            tls: None,
            token: None,
            append_streams: streams::LANES_DEFAULT,
        }
    }

    /// The servers: `server` split at commas (CONTRACT §5: a client may be given several
    /// nodes of a cluster).
    pub fn servers(&self) -> Vec<String> {
        self.server.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
    }

    /// Turns the verifying mode on.
    #[must_use]
    pub fn verifying(mut self) -> Self {
        self.verify = true;
        self
    }
}

/// Adds the bearer token, if any, to every call.
#[derive(Clone)]
pub struct TokenInterceptor(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub(crate) type Transport =
    tonic::service::interceptor::InterceptedService<Channel, TokenInterceptor>;

/// A connection to a Converge Ledger node. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Client {
    nodes: Arc<nodes::Nodes>,
    /// The append streams concurrent appends share.
    lanes: Arc<streams::Lanes>,
    config: Arc<ClientConfig>,
    /// The newest tree head seen per context (verifying mode).
    pins: Arc<verify::Pins>,
}

impl Client {
    /// Connects to `server` with default settings.
    pub async fn connect(server: impl Into<String>) -> Result<Self, LedgerError> {
        Self::connect_with(ClientConfig::new(server)).await
    }

    /// Connects as `config` says. With several servers (`config.server` is `A,B,C`), it
    /// connects to the first that answers and moves to the next whenever one is unavailable.
    pub async fn connect_with(config: ClientConfig) -> Result<Self, LedgerError> {
        let servers = config.servers();
        let interceptor = interceptor(&config)?;
        let mut endpoints = Vec::with_capacity(servers.len());
        for server in &servers {
            endpoints.push(endpoint(server, &config)?);
        }
        // The first server that answers is where calls go first; the rest connect on use.
        let mut first = None;
        let mut failures = Vec::new();
        for (i, endpoint) in endpoints.iter().enumerate() {
            match endpoint.connect_with_connector(connector::Connector::new()).await {
                Ok(channel) => {
                    first = Some((i, channel));
                    break;
                }
                Err(e) => failures.push(format!("{}: {}", servers[i], describe(&e))),
            }
        }
        let Some((first, channel)) = first else {
            return Err(LedgerError::Unavailable(format!(
                "cannot connect to {}; is the ledger running there?",
                failures.join("; ")
            )));
        };
        let mut channel = Some(channel);
        let list = endpoints
            .iter()
            .enumerate()
            .map(|(i, endpoint)| {
                let channel = match channel.take_if(|_| i == first) {
                    Some(channel) => channel,
                    None => endpoint.connect_with_connector_lazy(connector::Connector::new()),
                };
                node(channel, &interceptor, config.message_bytes_max)
            })
            .collect();
        let nodes = Arc::new(nodes::Nodes::new(list, first));
        Ok(Self {
            lanes: Arc::new(streams::Lanes::new(
                config.append_streams,
                nodes.len(),
                &nodes.topology,
            )),
            nodes,
            config: Arc::new(config),
            pins: Arc::default(),
        })
    }

    /// A client over an existing channel.
    pub fn from_channel(channel: Channel, config: ClientConfig) -> Result<Self, LedgerError> {
        let interceptor = interceptor(&config)?;
        let node = node(channel, &interceptor, config.message_bytes_max);
        let nodes = Arc::new(nodes::Nodes::new(vec![node], 0));
        Ok(Self {
            lanes: Arc::new(streams::Lanes::new(
                config.append_streams,
                nodes.len(),
                &nodes.topology,
            )),
            nodes,
            config: Arc::new(config),
            pins: Arc::default(),
        })
    }

    /// The cluster as the node sees it (CONTRACT §5, `cluster status`). A node that runs
    /// alone answers `UNIMPLEMENTED`.
    pub async fn cluster_status(&self) -> Result<cluster::StatusResponse, LedgerError> {
        let response = self
            .nodes
            .call(cluster::StatusRequest {}, |n, r| {
                let mut admin = n.admin.clone();
                async move { admin.status(r).await }
            })
            .await
            .map_err(|s| status::from_status(&s))?;
        Ok(response.into_inner())
    }

    /// Removes node `node` from the cluster (CONTRACT §5, `cluster remove`; role admin).
    pub async fn cluster_remove(&self, node: u64) -> Result<(), LedgerError> {
        let request = cluster::RemoveRequest { node, shard: None, you_are_removed: false };
        self.nodes
            .call(request, |n, r| {
                let mut admin = n.admin.clone();
                async move { admin.remove(r).await }
            })
            .await
            .map_err(|s| status::from_status(&s))?;
        Ok(())
    }

    /// Changes the cluster-wide limits (CONTRACT §5, `cluster limits`; role admin): recorded
    /// in every shard's log, in force from there on.
    pub async fn cluster_set_limits(
        &self,
        limits: cluster::ClusterLimits,
    ) -> Result<(), LedgerError> {
        self.nodes
            .call(limits, |n, r| {
                let mut admin = n.admin.clone();
                async move { admin.set_limits(r).await }
            })
            .await
            .map_err(|s| status::from_status(&s))?;
        Ok(())
    }

    /// The settings this client was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The context service of the server calls go to now, and its index.
    pub(crate) fn context_service(&self) -> (usize, ContextServiceClient<Transport>) {
        let (i, node) = self.nodes.current();
        (i, node.context.clone())
    }

    /// After `UNAVAILABLE` from server `from`: calls go to the next one, if there are several,
    /// and appends no longer go to it by the shards' table.
    pub(crate) fn move_on(&self, from: usize) {
        self.nodes.move_on(from);
    }

    /// The server that leads the shard of `context_id`, when the client has several and has
    /// learned it (see `routes.rs`); starts learning it again in the background when due.
    fn route(&self, context_id: &str) -> Option<usize> {
        if self.nodes.len() < 2 || !self.nodes.topology.may_be_cluster() {
            return None;
        }
        if self.nodes.routes.claim_refresh() {
            let nodes = Arc::clone(&self.nodes);
            tokio::spawn(async move { routes::refresh(&nodes).await });
        }
        self.nodes.routes.server_for(context_id)
    }

    /// A consistency proof as the server sends it, checked by the caller.
    pub(crate) async fn fetch_consistency(
        &self,
        context_id: &str,
        from_size: u64,
        to_size: u64,
    ) -> Result<ConsistencyProof, LedgerError> {
        let req = v1::ConsistencyRequest { context_id: context_id.to_string(), from_size, to_size };
        let proof = self
            .nodes
            .call(req, |n, r| {
                let mut c = n.integrity.clone();
                async move { c.prove_consistency(r).await }
            })
            .await
            .map_err(|s| from_status(&s))?
            .into_inner();
        convert::consistency_from_wire(&proof)
    }
}

impl Client {
    /// One append as its own call, moving on to the next server on `UNAVAILABLE`.
    async fn append_unary(&self, request: v1::AppendRequest) -> Result<v1::Entry, LedgerError> {
        let topology = &self.nodes.topology;
        let leader = self.route(&request.context_id);
        let resp = self
            .nodes
            .call_at(leader, request, |n, r| {
                let mut c = n.context.clone();
                async move {
                    let answer = c.append(r).await;
                    if let Ok(response) = &answer {
                        topology.learn(response.metadata());
                    }
                    answer
                }
            })
            .await
            .map_err(|s| from_status(&s))?
            .into_inner();
        resp.entry.ok_or_else(|| {
            LedgerError::Verification("the ledger answered an append without the entry".into())
        })
    }

    /// One append on the next shared stream to its shard's leader (or the current server),
    /// round robin. Where a unary call would move on to another server (the stream's server is
    /// unavailable), it is sent again unary, with its `append_id`.
    async fn append_streamed(&self, request: v1::AppendRequest) -> Result<v1::Entry, LedgerError> {
        let (server, context) = match self.route(&request.context_id) {
            Some(leader) => (leader, self.nodes.node(leader).context.clone()),
            None => self.context_service(),
        };
        let sent = self.lanes.send(None, server, &context, request.clone());
        self.streamed_answer(server, sent, request).await
    }

    /// The entry for a request sent on a stream to `server`, or its error.
    async fn streamed_answer(
        &self,
        server: usize,
        sent: tokio::sync::oneshot::Receiver<streams::Answer>,
        request: v1::AppendRequest,
    ) -> Result<v1::Entry, LedgerError> {
        let answer = match self.lanes.answer(sent).await {
            None => return self.append_unary(request).await,
            Some(Ok(v1::AppendStreamResponse { error: Some(error), .. })) => {
                Err(tonic::Status::new(
                    tonic::Code::from(i32::try_from(error.code).unwrap_or(i32::MAX)),
                    error.message,
                ))
            }
            Some(Ok(v1::AppendStreamResponse { entry: Some(entry), error: None })) => Ok(entry),
            Some(Ok(_)) => {
                return Err(LedgerError::Verification(
                    "the ledger answered a streamed append with neither entry nor error".into(),
                ));
            }
            Some(Err(status)) => Err(status),
        };
        match answer {
            Ok(entry) => Ok(entry),
            Err(status) if self.nodes.len() > 1 && nodes::moves_on(&status) => {
                self.move_on(server);
                self.append_unary(request).await
            }
            Err(status) => Err(from_status(&status)),
        }
    }

    /// Whether a write may be sent twice: to another server, or again to a cluster node that
    /// could not confirm it.
    fn retries(&self) -> bool {
        self.nodes.len() > 1 || self.nodes.topology.may_be_cluster()
    }

    /// `request` as sent: with an `append_id` when it may be sent again to another server,
    /// and what to verify the answer against.
    fn prepared(&self, mut request: AppendRequest) -> (v1::AppendRequest, Option<AppendRequest>) {
        // With several servers an append may be sent again to another, and in a cluster an
        // append the node could not confirm may have been committed: an append_id makes a
        // retry return the entry the first attempt made instead of a second one.
        if self.retries() && request.append_id.as_deref().is_none_or(str::is_empty) {
            request.append_id = Some(fresh_id());
        }
        let sent = self.config.verify.then(|| request.clone());
        (convert::append_request_to_wire(request), sent)
    }
}

/// The entry of an answered append, checked against what was sent in verifying mode.
fn answered(wire: v1::Entry, sent: Option<&AppendRequest>) -> Result<Arc<Entry>, LedgerError> {
    let entry = convert::entry_from_wire(wire)?;
    if let Some(sent) = sent {
        verify::appended(sent, &entry)?;
    }
    Ok(Arc::new(entry))
}

/// An `append_id` no other client will make: 128 bits from the OS's random hash keys, the time
/// and a counter.
fn fresh_id() -> String {
    use std::hash::{BuildHasher as _, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let state = RandomState::new();
    let (a, b) = (state.hash_one((n, nanos, 1u8)), state.hash_one((n, nanos, 2u8)));
    format!("client:{a:016x}{b:016x}")
}

/// The endpoint of `server` with the client's settings.
fn endpoint(server: &str, config: &ClientConfig) -> Result<Endpoint, LedgerError> {
    let mut endpoint = Endpoint::from_shared(server.to_string())
        .map_err(|e| LedgerError::InvalidArgument(format!("bad server address {server:?}: {e}")))?
        .connect_timeout(config.connect_timeout)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        // Many requests in flight on one connection must not stall on window updates.
        .initial_connection_window_size(8 * 1024 * 1024)
        .initial_stream_window_size(2 * 1024 * 1024);
    if let Some(tls) = &config.tls {
        let mut tls_config = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&tls.ca_pem));
        if let Some((cert, key)) = &tls.identity {
            tls_config = tls_config.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        if let Some(domain) = &tls.domain {
            tls_config = tls_config.domain_name(domain.clone());
        }
        endpoint = endpoint.tls_config(tls_config).map_err(|e| {
            LedgerError::InvalidArgument(format!("bad TLS settings: {}", describe(&e)))
        })?;
    }
    Ok(endpoint)
}

/// The interceptor that sends the configured token.
fn interceptor(config: &ClientConfig) -> Result<TokenInterceptor, LedgerError> {
    let token = match &config.token {
        Some(token) => Some(format!("Bearer {token}").parse().map_err(|_| {
            LedgerError::InvalidArgument("the token must be printable ASCII".into())
        })?),
        None => None,
    };
    Ok(TokenInterceptor(token))
}

/// The services of one server over `channel`.
fn node(channel: Channel, interceptor: &TokenInterceptor, max: usize) -> nodes::Node {
    nodes::Node {
        admin: AdminClient::with_interceptor(channel.clone(), interceptor.clone()),
        context: ContextServiceClient::with_interceptor(channel.clone(), interceptor.clone())
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        integrity: IntegrityServiceClient::with_interceptor(channel, interceptor.clone())
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
    }
}

fn from_status(status: &tonic::Status) -> LedgerError {
    status::from_status(status)
}

impl LedgerApi for Client {
    async fn append(&self, request: AppendRequest) -> Result<Arc<Entry>, LedgerError> {
        let (wire, sent) = self.prepared(request);
        let (_counted, stream) = self.lanes.start();
        let wire = if stream {
            self.append_streamed(wire).await?
        } else {
            self.append_unary(wire).await?
        };
        answered(wire, sent.as_ref())
    }

    /// Queues the append on the client's first stream: appends queued one after another are
    /// sent, and answered, in that order.
    async fn append_queued(&self, request: AppendRequest) -> PendingAppend {
        let (wire, sent) = self.prepared(request);
        if !self.lanes.usable() {
            let outcome = match self.append_unary(wire).await {
                Ok(wire) => answered(wire, sent.as_ref()),
                Err(e) => Err(e),
            };
            return Box::pin(std::future::ready(outcome));
        }
        let (server, context) = self.context_service();
        let queued = self.lanes.send(Some(0), server, &context, wire.clone());
        let client = self.clone();
        Box::pin(async move {
            let (_counted, _) = client.lanes.start();
            let wire = client.streamed_answer(server, queued, wire).await?;
            answered(wire, sent.as_ref())
        })
    }

    async fn get(&self, request: GetRequest) -> Result<GetResponse, LedgerError> {
        let context_id = request.context_id.clone();
        let bounds = (request.after_sequence, request.before_sequence);
        let newest_first = request.newest_first;
        let filtered = request.key.as_deref().is_some_and(|k| !k.is_empty());
        let resp = self
            .nodes
            .call(convert::get_request_to_wire(request), |n, r| {
                let mut c = n.context.clone();
                async move { c.get(r).await }
            })
            .await
            .map_err(|s| from_status(&s))?
            .into_inner();
        let resp = convert::get_response_from_wire(resp)?;
        if self.config.verify {
            verify::entries(&context_id, bounds, newest_first, &resp.entries)?;
            if !filtered && bounds.0 == 0 {
                verify::prefix(self, &context_id, newest_first, &resp.entries).await?;
            }
        }
        Ok(resp)
    }

    async fn list_contexts(
        &self,
        request: ListContextsRequest,
    ) -> Result<ListContextsResponse, LedgerError> {
        let resp = self
            .nodes
            .call(convert::list_request_to_wire(request.clone()), |n, r| {
                let mut c = n.context.clone();
                async move { c.list_contexts(r).await }
            })
            .await
            .map_err(|s| from_status(&s))?
            .into_inner();
        let page = convert::list_response_from_wire(resp)?;
        if self.config.verify {
            verify::listing(&request, &page)?;
            verify::listed_heads(self, &page).await?;
        }
        Ok(page)
    }

    async fn snapshot(&self, context_id: &str) -> Result<SnapshotResponse, LedgerError> {
        let req = v1::SnapshotRequest { context_id: context_id.to_string() };
        let resp = self
            .nodes
            .call(req, |n, r| {
                let mut c = n.context.clone();
                async move { c.snapshot(r).await }
            })
            .await
            .map_err(|s| from_status(&s))?
            .into_inner();
        let resp = convert::snapshot_response_from_wire(resp)?;
        if self.config.verify {
            verify::snapshot(context_id, &resp)?;
            verify::observe(self, context_id, resp.entry_count, resp.merkle_root).await?;
        }
        Ok(resp)
    }

    async fn load(&self, mut request: LoadRequest) -> Result<LoadResponse, LedgerError> {
        // Sent again after an answer that never came, a load with its load_id is answered as
        // the first attempt was (not with "already exists", nor with nothing restored).
        if self.retries() && request.load_id.as_deref().is_none_or(str::is_empty) {
            request.load_id = Some(fresh_id());
        }
        let resp = self
            .nodes
            .call(convert::load_request_to_wire(request), |n, r| {
                let mut c = n.context.clone();
                async move { c.load(r).await }
            })
            .await
            .map_err(|s| from_status(&s))?
            .into_inner();
        Ok(convert::load_response_from_wire(&resp))
    }

    async fn watch(&self, request: WatchRequest) -> Result<WatchStream, LedgerError> {
        watch::watch(self.clone(), request).await
    }

    async fn tree_head(&self, context_id: &str) -> Result<TreeHead, LedgerError> {
        let req = v1::TreeHeadRequest { context_id: context_id.to_string() };
        let head = self
            .nodes
            .call(req, |n, r| {
                let mut c = n.integrity.clone();
                async move { c.get_tree_head(r).await }
            })
            .await
            .map_err(|s| from_status(&s))?
            .into_inner();
        let head = convert::tree_head_from_wire(&head)?;
        if self.config.verify {
            verify::observe(self, context_id, head.tree_size, head.root_hash).await?;
        }
        Ok(head)
    }

    async fn prove_inclusion(
        &self,
        context_id: &str,
        sequence: u64,
        tree_size: u64,
    ) -> Result<InclusionProof, LedgerError> {
        let req = v1::InclusionRequest { context_id: context_id.to_string(), sequence, tree_size };
        let proof = self
            .nodes
            .call(req, |n, r| {
                let mut c = n.integrity.clone();
                async move { c.prove_inclusion(r).await }
            })
            .await
            .map_err(|s| from_status(&s))?
            .into_inner();
        let proof = convert::inclusion_from_wire(&proof)?;
        if self.config.verify {
            verify::inclusion(self, context_id, sequence, &proof).await?;
        }
        Ok(proof)
    }

    async fn prove_consistency(
        &self,
        context_id: &str,
        from_size: u64,
        to_size: u64,
    ) -> Result<ConsistencyProof, LedgerError> {
        let proof = self.fetch_consistency(context_id, from_size, to_size).await?;
        if self.config.verify {
            verify::consistency(self, context_id, &proof).await?;
        }
        Ok(proof)
    }
}
