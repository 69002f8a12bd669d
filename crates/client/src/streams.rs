//! Concurrent appends ride a few shared `AppendStream`s (CONTRACT §2) instead of one HTTP/2
//! stream each; the engine still calls `append` and gets one entry back.
//!
//! A lane is one open stream: a request queue the stream reads from, and the answers it
//! owes, oldest first (the server answers in request order). Pushing the request and its
//! answer slot happens under one lock, so the two orders agree. A task per lane reads the
//! responses and hands each to the oldest slot; when the stream ends, every slot still
//! waiting gets the stream's status, and the next append opens a new lane.
//!
//! A lone append (nothing else in flight on the client) goes unary, as fast as before; from
//! the second concurrent append on, appends go to the lanes round robin. A server that does
//! not know `AppendStream` (an old one) answers `UNIMPLEMENTED`; the client then stays unary.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use converge_proto::v1;
use converge_proto::v1::context_service_client::ContextServiceClient;
use tokio::sync::{mpsc, oneshot};

use crate::Transport;
use crate::nodes::Topology;

/// Streams a client keeps open at most.
pub(crate) const LANES_DEFAULT: usize = 2;

/// One append's answer from a lane: the server's response, or how the stream ended.
pub(crate) type Answer = Result<v1::AppendStreamResponse, tonic::Status>;

/// The lanes of one client: the same number to each of its servers.
pub(crate) struct Lanes {
    /// Server `s`'s lanes are `open[s * per_server..(s + 1) * per_server]`.
    open: Vec<Mutex<Option<Lane>>>,
    per_server: usize,
    next: AtomicUsize,
    /// Appends in flight on the client, unary or streamed.
    in_flight: AtomicUsize,
    /// The server answered `UNIMPLEMENTED`: appends stay unary.
    unsupported: AtomicBool,
    /// Learns from each stream's answer whether the servers are a cluster.
    topology: Arc<Topology>,
}

/// One open stream.
struct Lane {
    /// The server it was opened on.
    server: usize,
    requests: mpsc::UnboundedSender<v1::AppendRequest>,
    waiting: Arc<Mutex<Waiting>>,
}

/// The answers a lane owes, oldest first, and whether its stream has ended (then nothing more
/// may wait on it). One lock covers both, so no answer is pushed after the last is failed.
#[derive(Default)]
struct Waiting {
    answers: VecDeque<oneshot::Sender<Answer>>,
    ended: bool,
}

/// Counts an append in flight until dropped.
pub(crate) struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Lanes {
    /// Up to `count` lanes to each of `servers` (0: always unary), telling `topology` what the
    /// servers are.
    pub(crate) fn new(count: usize, servers: usize, topology: &Arc<Topology>) -> Self {
        Self {
            open: (0..count * servers).map(|_| Mutex::new(None)).collect(),
            per_server: count,
            next: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            unsupported: AtomicBool::new(false),
            topology: Arc::clone(topology),
        }
    }

    /// Counts one more append in flight; whether it should ride a stream (others are in
    /// flight, and the server takes streams).
    pub(crate) fn start(&self) -> (InFlight<'_>, bool) {
        let before = self.in_flight.fetch_add(1, Ordering::Relaxed);
        let stream = before > 0 && self.usable();
        (InFlight(&self.in_flight), stream)
    }

    /// Sends `request` on a lane to server `server` (opening one through `context` if
    /// needed): lane `lane`, or the next one round robin. Requests sent on one lane are
    /// answered in the order sent. The answer comes through [`Self::answer`].
    pub(crate) fn send(
        &self,
        lane: Option<usize>,
        server: usize,
        context: &ContextServiceClient<Transport>,
        request: v1::AppendRequest,
    ) -> oneshot::Receiver<Answer> {
        let (answer, answered) = oneshot::channel();
        let lane = lane.unwrap_or_else(|| self.next.fetch_add(1, Ordering::Relaxed));
        let i = (server * self.per_server + lane % self.per_server) % self.open.len();
        let mut slot = self.open[i].lock().unwrap_or_else(PoisonError::into_inner);
        let mut pending = Some((request, answer));
        // A lane whose stream ended is replaced; if the new one has ended already too (its
        // server refused the stream at once), the append fails.
        for _ in 0..2 {
            let lane = match slot.take() {
                Some(l) if l.server == server => l,
                _ => Lane::open(server, context.clone(), Arc::clone(&self.topology)),
            };
            if let Some((request, answer)) = pending.take() {
                let mut waiting = lane.waiting.lock().unwrap_or_else(PoisonError::into_inner);
                if waiting.ended {
                    pending = Some((request, answer));
                } else {
                    match lane.requests.send(request) {
                        Ok(()) => waiting.answers.push_back(answer),
                        Err(mpsc::error::SendError(request)) => pending = Some((request, answer)),
                    }
                }
            }
            if pending.is_none() {
                *slot = Some(lane);
                return answered;
            }
        }
        if let Some((_, answer)) = pending {
            drop(answer.send(Err(tonic::Status::unavailable("the append stream closed"))));
        }
        answered
    }

    /// The answer to a request sent with [`Self::send`]. `None`: the server does not take
    /// streams (from now on, [`Self::start`] says so); send it unary.
    pub(crate) async fn answer(&self, answered: oneshot::Receiver<Answer>) -> Option<Answer> {
        match answered.await {
            Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
                self.unsupported.store(true, Ordering::Relaxed);
                None
            }
            Ok(answer) => Some(answer),
            Err(_) => Some(Err(tonic::Status::unavailable("the append stream closed"))),
        }
    }

    /// Whether appends may ride streams at all.
    pub(crate) fn usable(&self) -> bool {
        !self.open.is_empty() && !self.unsupported.load(Ordering::Relaxed)
    }
}

impl Lane {
    /// Opens a stream to server `server` and starts its reader.
    fn open(
        server: usize,
        mut context: ContextServiceClient<Transport>,
        topology: Arc<Topology>,
    ) -> Self {
        let (requests, queue) = mpsc::unbounded_channel();
        let waiting: Arc<Mutex<Waiting>> = Arc::default();
        let lane = Self { server, requests, waiting: Arc::clone(&waiting) };
        tokio::spawn(async move {
            let status = match context.append_stream(Queue(queue)).await {
                Ok(responses) => {
                    topology.learn(responses.metadata());
                    read(responses.into_inner(), &waiting).await
                }
                Err(status) => status,
            };
            let mut waiting = waiting.lock().unwrap_or_else(PoisonError::into_inner);
            waiting.ended = true;
            for answer in waiting.answers.drain(..) {
                let _ = answer.send(Err(status.clone()));
            }
        });
        lane
    }
}

/// Hands each response to the oldest waiting append; how the stream ended.
async fn read(
    mut responses: tonic::Streaming<v1::AppendStreamResponse>,
    waiting: &Mutex<Waiting>,
) -> tonic::Status {
    loop {
        let response = match responses.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return tonic::Status::unavailable("the server ended the append stream"),
            Err(status) => return status,
        };
        let oldest = waiting.lock().unwrap_or_else(PoisonError::into_inner).answers.pop_front();
        match oldest {
            Some(answer) => drop(answer.send(Ok(response))),
            None => {
                return tonic::Status::internal(
                    "the server answered more appends than were sent on the stream",
                );
            }
        }
    }
}

/// The request side of a lane, as the stream tonic sends.
struct Queue(mpsc::UnboundedReceiver<v1::AppendRequest>);

impl futures_core::Stream for Queue {
    type Item = v1::AppendRequest;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}
