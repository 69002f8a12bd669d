//! The receive budget (CONTRACT §0.6): bytes of request messages a node has taken off the wire
//! and not yet finished with are bounded, whatever the number of connections and streams.
//!
//! HTTP/2 flow control bounds what a client may send before the server reads it (per stream and
//! per connection windows); once tonic reads a message it is in memory, decoded, and waits for
//! the ledger's admission, which counted nothing until then. This layer closes that gap: a
//! request body of a budgeted method is passed on only once the node has taken, from one budget
//! for the whole node, as many bytes as the message its bytes belong to (the gRPC length prefix
//! says how long it is, before any of it is read). A message larger than the whole budget takes
//! all of it, so no size waits for ever. While a body waits for the budget, its bytes stay in
//! HTTP/2's buffers and the client is held back by flow control.
//!
//! How long the bytes stay counted:
//! - a unary call (Append, Load, a forwarded write): until it is answered, so a request
//!   decoded and waiting for admission or for its fsync still counts;
//! - a stream (`AppendStream`): each message until the next one's prefix is read (the stream
//!   reads on only once the previous append was taken by the ledger, whose admission counts it
//!   from then on) or the stream ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::{Buf as _, Bytes};
use converge_ledger::{Admission, Admitted};
use http_body::Frame;
use tonic::codegen::http;

/// Bytes of a gRPC message's prefix: a compression flag and a u32 length.
const PREFIX_BYTES: usize = 5;
/// How long a message waits for the budget before its call fails with `UNAVAILABLE`. Waiting
/// bodies keep their bytes in HTTP/2's buffers, which count against their connection's window:
/// more of them on one connection than its window holds (see `CONNECTION_WINDOW_BYTES`) can
/// stop a call that holds the budget from receiving the rest of its message. Failing the
/// waiters gives their buffers and windows back, so the node always moves on; long enough that
/// a flood the node works through in its turn is not refused.
const BUDGET_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// Methods whose request messages count against the budget: every one that carries a payload
/// or a snapshot into the node.
const BUDGETED: [(&str, Kind); 4] = [
    ("/converge.context.v1.ContextService/Append", Kind::Unary),
    ("/converge.context.v1.ContextService/Load", Kind::Unary),
    ("/converge.context.v1.ContextService/AppendStream", Kind::Stream),
    ("/converge.cluster.v1.Peer/Forward", Kind::Unary),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unary,
    Stream,
}

/// The node's budget of received request bytes: the ledger's kind of budget (counted in KiB;
/// a message larger than all of it takes all of it).
pub type ReceiveBudget = Admission;

/// The receive budget of a node serving `ledger`. An append is held about three times over
/// while it is served (its message, its log record, its answer, which carries the entry), so
/// half of what the ledger admits.
pub fn budget_of(ledger: &converge_ledger::Ledger) -> Arc<ReceiveBudget> {
    Arc::new(Admission::new(ledger.config().append_bytes_in_flight_max / 2))
}

/// The tower layer that meters budgeted request bodies.
#[derive(Clone)]
pub struct ReceiveLayer {
    budget: Arc<ReceiveBudget>,
}

impl ReceiveLayer {
    /// Meters against `budget`.
    pub fn new(budget: Arc<ReceiveBudget>) -> Self {
        Self { budget }
    }
}

impl<S> tower_layer::Layer<S> for ReceiveLayer {
    type Service = Receive<S>;

    fn layer(&self, inner: S) -> Receive<S> {
        Receive { inner, budget: Arc::clone(&self.budget) }
    }
}

/// The service [`ReceiveLayer`] wraps around the routes.
#[derive(Clone)]
pub struct Receive<S> {
    inner: S,
    budget: Arc<ReceiveBudget>,
}

/// The permit of the message a body is receiving, shared by the body and the call.
type Held = Arc<Mutex<Option<Admitted>>>;

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower_service::Service<http::Request<B>> for Receive<S>
where
    S: tower_service::Service<http::Request<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let kind = BUDGETED.iter().find(|(path, _)| *path == request.uri().path()).map(|(_, k)| *k);
        let Some(kind) = kind else {
            return Box::pin(self.inner.call(request.map(tonic::body::Body::new)));
        };
        let held: Held = Arc::default();
        let (budget, shared) = (Arc::clone(&self.budget), Arc::clone(&held));
        let answered =
            self.inner
                .call(request.map(|inner| {
                    tonic::body::Body::new(Metered::new(inner, budget, shared, kind))
                }));
        Box::pin(async move {
            // A unary call's message counts until it is answered (or the call is dropped).
            let _until_answered = (kind == Kind::Unary).then_some(Release(held));
            answered.await
        })
    }
}

/// Returns the permit it holds when dropped.
struct Release(Held);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
    }
}

/// Where a body stands in the messages it carries.
struct Metered<B> {
    inner: B,
    budget: Arc<ReceiveBudget>,
    held: Held,
    kind: Kind,
    /// Bytes of the current message not yet seen.
    remaining: u64,
    /// The prefix of the next message, while it is incomplete: its bytes, and how many.
    prefix: ([u8; PREFIX_BYTES], usize),
    /// Data read but not yet passed on: it waits for `acquiring`.
    ready: Option<Bytes>,
    acquiring: Option<Pin<Box<dyn Future<Output = Acquired> + Send>>>,
}

/// The budget for a message, or why not.
enum Acquired {
    Permit(Admitted),
    Closed,
    TimedOut,
}

/// The error a body gives when its message waited too long for the budget: the call fails
/// with it (tonic takes a `Status` a body fails with as the call's status).
fn too_busy() -> tonic::Status {
    tonic::Status::unavailable(format!(
        "the node is receiving more request bytes than its budget allows and this request waited {BUDGET_WAIT_MAX:?}; nothing was appended, retry (with the same append_id)"
    ))
}

impl<B> Metered<B> {
    fn new(inner: B, budget: Arc<ReceiveBudget>, held: Held, kind: Kind) -> Self {
        Self {
            inner,
            budget,
            held,
            kind,
            remaining: 0,
            prefix: ([0; PREFIX_BYTES], 0),
            ready: None,
            acquiring: None,
        }
    }

    /// Walks `data` through the messages it carries; the bytes of the messages that begin in
    /// it (0 if none does).
    fn scan(&mut self, data: &Bytes) -> u64 {
        let (mut rest, mut starting) = (data.clone(), 0u64);
        while rest.has_remaining() {
            if self.remaining > 0 {
                let n = self.remaining.min(rest.remaining() as u64);
                rest.advance(usize::try_from(n).unwrap_or(usize::MAX));
                self.remaining -= n;
                continue;
            }
            let (bytes, have) = &mut self.prefix;
            let take = (PREFIX_BYTES - *have).min(rest.remaining());
            bytes[*have..*have + take].copy_from_slice(&rest[..take]);
            *have += take;
            rest.advance(take);
            if *have == PREFIX_BYTES {
                let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
                *have = 0;
                self.remaining = u64::from(len);
                starting += PREFIX_BYTES as u64 + u64::from(len);
            }
        }
        starting
    }

    /// Takes the budget for messages of `bytes` that begin in the data now waiting, at once if
    /// it is free, else starts waiting for it. A stream gives back its previous message's bytes
    /// first (that message was passed on), so a stream waiting for the budget holds none of it
    /// and streams cannot wait on each other.
    fn acquire(&mut self, bytes: u64) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if self.kind == Kind::Stream {
            held.take();
        }
        let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        if let Some(permit) = self.budget.try_admit(bytes) {
            *held = Some(permit);
            return;
        }
        drop(held);
        let budget = Arc::clone(&self.budget);
        self.acquiring = Some(Box::pin(async move {
            match tokio::time::timeout(BUDGET_WAIT_MAX, budget.admit(bytes)).await {
                Ok(Ok(permit)) => Acquired::Permit(permit),
                Ok(Err(_)) => Acquired::Closed,
                Err(_) => Acquired::TimedOut,
            }
        }));
    }
}

impl<B> http_body::Body for Metered<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Data = Bytes;
    type Error = tonic::codegen::StdError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(acquiring) = &mut this.acquiring {
                let Poll::Ready(acquired) = acquiring.as_mut().poll(cx) else {
                    return Poll::Pending;
                };
                this.acquiring = None;
                let permit = match acquired {
                    Acquired::Permit(permit) => Some(permit),
                    Acquired::Closed => None,
                    Acquired::TimedOut => {
                        this.ready = None;
                        return Poll::Ready(Some(Err(Box::new(too_busy()))));
                    }
                };
                *this.held.lock().unwrap_or_else(PoisonError::into_inner) = permit;
            }
            if let Some(data) = this.ready.take() {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let starting = this.scan(&data);
                        this.ready = Some(data);
                        if starting > 0 {
                            this.acquire(starting);
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ready.is_none() && self.acquiring.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Metered<B> {
    fn drop(&mut self) {
        // A stream's last message counts until the stream's body is gone; a unary call's
        // until it is answered (its `Release`).
        if self.kind == Kind::Stream {
            self.held.lock().unwrap_or_else(PoisonError::into_inner).take();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gRPC message of `len` body bytes, prefix included.
    fn message(len: usize) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
        out.extend(std::iter::repeat_n(7u8, len));
        out
    }

    #[test]
    fn messages_are_found_across_and_within_frames() {
        let budget = Arc::new(ReceiveBudget::new(1 << 20));
        let mut body = Metered::new((), budget, Arc::default(), Kind::Stream);
        let mut wire = message(10);
        wire.extend(message(3));
        wire.extend(message(2000));
        // Frames cut anywhere, prefixes split included.
        let frames: Vec<Bytes> = [&wire[..3], &wire[3..17], &wire[17..24], &wire[24..]]
            .map(Bytes::copy_from_slice)
            .into();
        let starts: Vec<u64> = frames.iter().map(|f| body.scan(f)).collect();
        assert_eq!(starts, [0, 15, 8, 2005]);
        assert_eq!((body.remaining, body.prefix.1), (0, 0));
    }

    #[tokio::test]
    async fn a_body_waits_for_the_budget_and_a_unary_call_holds_it_until_answered() {
        use http_body_util::BodyExt as _;
        let budget = Arc::new(ReceiveBudget::new(8 * 1024));
        let held: Held = Arc::default();
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> =
            vec![Ok(Frame::data(Bytes::from(message(6 * 1024))))];
        let inner = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        let mut body = Metered::new(inner, Arc::clone(&budget), Arc::clone(&held), Kind::Unary);
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap().len(), 6 * 1024 + 5);
        assert_eq!(budget.available_bytes(), 1024, "7 KiB of 8 are counted");
        drop(body);
        assert_eq!(budget.available_bytes(), 1024, "a unary call counts until answered");
        drop(Release(held));
        assert_eq!(budget.available_bytes(), 8 * 1024);

        // A second body waits while the first holds the budget.
        let holder = budget.admit(8 * 1024).await.unwrap();
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> =
            vec![Ok(Frame::data(Bytes::from(message(10))))];
        let inner = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        let mut body = Metered::new(inner, Arc::clone(&budget), Arc::default(), Kind::Stream);
        let waiting = body.frame();
        tokio::pin!(waiting);
        assert!(
            futures_util::FutureExt::now_or_never(&mut waiting).is_none(),
            "no budget, no bytes"
        );
        drop(holder);
        assert!(waiting.await.is_some());
    }
}
