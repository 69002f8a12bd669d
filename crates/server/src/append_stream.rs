//! `AppendStream` (CONTRACT §2): many appends on one stream, one response per request in
//! request order, per-request errors in band.
//!
//! The response stream drives the whole call from the connection's own task, with no task of
//! its own: each poll takes every request the connection has already decoded, queues each on
//! the ledger in turn (so appends of one stream to one context take sequences in the order
//! sent), and hands back whichever answers are ready, oldest first. tonic encodes what one
//! poll yields into one write. At most [`IN_FLIGHT_MAX`] appends of a stream wait for their
//! fsync at once; beyond that the stream stops reading and HTTP/2 flow control holds the
//! client back.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use converge_api::{LedgerApi, PendingAppend};
use converge_proto::{convert, status, v1};
use futures_core::Stream;
use futures_util::stream::FuturesOrdered;
use tonic::{Status, Streaming};
use tracing::error;

use crate::metrics::{Method, Metrics};

/// Appends of one stream waiting for their fsync at once.
pub const IN_FLIGHT_MAX: usize = 1024;

/// A future boxed so the stream can hold it between polls.
type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The response stream of one `AppendStream` call.
pub struct AppendPipeline<L> {
    ledger: L,
    metrics: Arc<Metrics>,
    requests: Streaming<v1::AppendRequest>,
    /// The request being queued on the ledger (waiting for room in the append budget).
    queuing: Option<(Boxed<PendingAppend>, Instant, usize)>,
    /// Queued appends, oldest first, with when each arrived and its payload size.
    in_flight: FuturesOrdered<PendingAppend>,
    started: VecDeque<(Instant, usize)>,
    /// Resolves when the server begins to shut down.
    closing: Boxed<()>,
    /// No more requests will be taken: the client finished, or the server is closing.
    input_done: bool,
    /// Why the stream ends once the appends in flight are answered (a shutdown).
    end_with: Option<Status>,
    finished: bool,
}

impl<L: LedgerApi + Clone + 'static> AppendPipeline<L> {
    /// The pipeline of one call; `closing` resolves when the server begins to shut down.
    pub fn new(
        ledger: L,
        metrics: Arc<Metrics>,
        requests: Streaming<v1::AppendRequest>,
        closing: Boxed<()>,
    ) -> Self {
        Self {
            ledger,
            metrics,
            requests,
            queuing: None,
            in_flight: FuturesOrdered::new(),
            started: VecDeque::new(),
            closing,
            input_done: false,
            end_with: None,
            finished: false,
        }
    }

    /// Takes and queues requests until none is ready, the window is full, or the input ends.
    /// `Err` ends the stream: the request stream itself failed (a malformed frame, a reset).
    fn fill(&mut self, cx: &mut Context<'_>) -> Result<(), Status> {
        if !self.input_done && self.closing.as_mut().poll(cx).is_ready() {
            self.input_done = true;
            self.end_with = Some(Status::unavailable(
                "the server is shutting down; appends not answered on this stream were not taken: send them again, with their append_id, to another node",
            ));
        }
        loop {
            if let Some((queuing, arrived, bytes)) = &mut self.queuing {
                let Poll::Ready(pending) = queuing.as_mut().poll(cx) else { return Ok(()) };
                self.in_flight.push_back(pending);
                self.started.push_back((*arrived, *bytes));
                self.queuing = None;
            }
            if self.input_done || self.in_flight.len() >= IN_FLIGHT_MAX {
                return Ok(());
            }
            match Pin::new(&mut self.requests).poll_next(cx) {
                Poll::Ready(Some(Ok(request))) => {
                    let request = convert::append_request_from_wire(request);
                    let bytes = request.payload.len();
                    let ledger = self.ledger.clone();
                    #[allow(clippy::async_yields_async, reason = "the wait is what is queued")]
                    let queuing: Boxed<PendingAppend> =
                        Box::pin(async move { ledger.append_queued(request).await });
                    self.queuing = Some((queuing, Instant::now(), bytes));
                }
                Poll::Ready(Some(Err(status))) => return Err(status),
                Poll::Ready(None) => self.input_done = true,
                Poll::Pending => return Ok(()),
            }
        }
    }

    fn poll_response(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<v1::AppendStreamResponse, Status>>> {
        if self.finished {
            return Poll::Ready(None);
        }
        if let Err(status) = self.fill(cx) {
            self.finished = true;
            return Poll::Ready(Some(Err(status)));
        }
        match Pin::new(&mut self.in_flight).poll_next(cx) {
            Poll::Ready(Some(outcome)) => {
                let (arrived, bytes) = self.started.pop_front().unwrap_or((Instant::now(), 0));
                Poll::Ready(Some(Ok(self.answer(outcome, arrived, bytes))))
            }
            Poll::Ready(None) if self.input_done && self.queuing.is_none() => {
                self.finished = true;
                Poll::Ready(self.end_with.take().map(Err))
            }
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }

    /// The response for one append, counted as an `Append` in the metrics.
    fn answer(
        &self,
        outcome: Result<Arc<converge_core::Entry>, converge_api::LedgerError>,
        arrived: Instant,
        bytes: usize,
    ) -> v1::AppendStreamResponse {
        match outcome {
            Ok(entry) => {
                self.metrics.observe(Method::Append, arrived.elapsed(), tonic::Code::Ok);
                self.metrics.appended(bytes);
                v1::AppendStreamResponse {
                    entry: Some(convert::entry_to_wire(&entry)),
                    error: None,
                }
            }
            Err(err) => {
                let status = status::to_status(&err);
                self.metrics.observe(Method::Append, arrived.elapsed(), status.code());
                v1::AppendStreamResponse {
                    entry: None,
                    error: Some(v1::AppendError {
                        code: status.code() as u32,
                        message: status.message().to_owned(),
                    }),
                }
            }
        }
    }
}

impl<L: LedgerApi + Clone + 'static> Stream for AppendPipeline<L> {
    type Item = Result<v1::AppendStreamResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match std::panic::catch_unwind(AssertUnwindSafe(|| this.poll_response(cx))) {
            Ok(polled) => polled,
            Err(panic) => {
                this.finished = true;
                this.metrics.panicked();
                error!(
                    panic = crate::service::panic_text(panic.as_ref()),
                    "append stream panicked"
                );
                Poll::Ready(Some(Err(Status::internal(crate::service::PANIC_MESSAGE))))
            }
        }
    }
}

// No field is pinned structurally: the futures it polls are boxed, and `L` is only cloned.
impl<L> Unpin for AppendPipeline<L> {}
