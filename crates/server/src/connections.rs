//! Accepting gRPC connections with bounds: at most
//! [`CONNECTIONS_MAX`](crate::limits::CONNECTIONS_MAX) open at once (more are
//! closed on accept), a client that has not sent its first bytes of HTTP/2 (or TLS) within
//! [`HANDSHAKE_TIMEOUT`] is cut off, and a failing `accept` (out of file descriptors) backs off
//! instead of spinning.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use converge_proto::coalesce::Coalesced;
use futures_core::Stream;
use futures_util::StreamExt as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};
use tracing::warn;

use crate::limits::HANDSHAKE_TIMEOUT;

/// The HTTP/2 client preface is 24 bytes; a TLS `ClientHello` is longer. A client that has sent
/// this many bytes has started talking, and the protocol's own timeouts take over.
const OPENING_BYTES: usize = 24;

/// How long to wait before accepting again after `accept` failed (for example with `EMFILE`):
/// the listener stays readable, so retrying at once would spin a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What the connection bounds did, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    /// Connections closed on accept because the most were open.
    pub refused: AtomicU64,
    /// Connections closed because the client said nothing within [`HANDSHAKE_TIMEOUT`].
    pub silent: AtomicU64,
    /// Failed `accept` calls.
    pub accept_errors: AtomicU64,
}

/// Connections from `incoming`, at most `max` open at once (the server uses
/// [`CONNECTIONS_MAX`](crate::limits::CONNECTIONS_MAX)).
pub fn bounded(
    incoming: TcpIncoming,
    max: usize,
    counters: Arc<ConnectionCounters>,
) -> impl Stream<Item = io::Result<Guarded>> {
    let slots = Arc::new(Semaphore::new(max));
    futures_util::stream::unfold(
        (incoming, slots, counters),
        move |(mut incoming, slots, counters)| async move {
            loop {
                match incoming.next().await? {
                    Ok(stream) => match Arc::clone(&slots).try_acquire_owned() {
                        Ok(slot) => {
                            let guarded = Guarded::new(stream, slot, Arc::clone(&counters));
                            return Some((Ok(guarded), (incoming, slots, counters)));
                        }
                        Err(_) => {
                            if counters.refused.fetch_add(1, Ordering::Relaxed) % 1000 == 0 {
                                warn!(max, "connection refused: the most connections are open");
                            }
                        }
                    },
                    Err(err) => {
                        if counters.accept_errors.fetch_add(1, Ordering::Relaxed) % 1000 == 0 {
                            warn!(error = %err, "accepting a connection failed; backing off");
                        }
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                }
            }
        },
    )
}

/// An accepted connection holding one of the connection slots until it closes, and
/// failing its reads if the client says nothing in time.
pub struct Guarded {
    stream: Coalesced<TcpStream>,
    _slot: OwnedSemaphorePermit,
    /// Armed until the client has sent [`OPENING_BYTES`].
    opening: Option<Opening>,
    counters: Arc<ConnectionCounters>,
}

struct Opening {
    deadline: Pin<Box<Sleep>>,
    received: usize,
}

impl Guarded {
    fn new(
        stream: TcpStream,
        slot: OwnedSemaphorePermit,
        counters: Arc<ConnectionCounters>,
    ) -> Self {
        let deadline =
            Box::pin(tokio::time::sleep_until((Instant::now() + HANDSHAKE_TIMEOUT).into()));
        Self {
            stream: Coalesced::new(stream),
            _slot: slot,
            opening: Some(Opening { deadline, received: 0 }),
            counters,
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(opening) = &mut this.opening else {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        };
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                opening.received += buf.filled().len() - before;
                if opening.received >= OPENING_BYTES {
                    this.opening = None;
                }
            }
            Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
            // Nothing to read yet: the deadline decides (its waker is registered too).
            Poll::Pending => {
                ready!(opening.deadline.as_mut().poll(cx));
                this.counters.silent.fetch_add(1, Ordering::Relaxed);
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent nothing within the handshake timeout",
                )));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Connected for Guarded {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.get_ref().connect_info()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    async fn listen(
        max: usize,
    ) -> (std::net::SocketAddr, impl Stream<Item = io::Result<Guarded>>, Arc<ConnectionCounters>)
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(ConnectionCounters::default());
        (addr, Box::pin(bounded(TcpIncoming::from(listener), max, Arc::clone(&counters))), counters)
    }

    #[tokio::test]
    async fn connections_beyond_the_most_are_closed_until_a_slot_frees() {
        let (addr, mut incoming, counters) = listen(2).await;
        let _a = TcpStream::connect(addr).await.unwrap();
        let first = incoming.next().await.unwrap().unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let _second = incoming.next().await.unwrap().unwrap();
        let mut refused = TcpStream::connect(addr).await.unwrap();
        // The third is accepted and closed at once while the stream waits for a fourth.
        let waiting = tokio::spawn(async move { incoming.next().await.map(|c| c.is_ok()) });
        let mut byte = [0u8; 1];
        assert_eq!(refused.read(&mut byte).await.unwrap(), 0, "the third connection is closed");
        assert_eq!(counters.refused.load(Ordering::Relaxed), 1);
        drop(first);
        let _c = TcpStream::connect(addr).await.unwrap();
        assert_eq!(waiting.await.unwrap(), Some(true), "a freed slot takes the next connection");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_cut_off_and_a_talking_one_is_not() {
        let (addr, mut incoming, counters) = listen(10).await;
        let _silent = TcpStream::connect(addr).await.unwrap();
        let mut silent = incoming.next().await.unwrap().unwrap();
        let mut buf = [0u8; 64];
        let err = silent.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(counters.silent.load(Ordering::Relaxed), 1);

        // (With the clock paused, an idle runtime jumps to the next deadline: the client
        // writes before the server side exists so the bytes are there when it first reads.)
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        let mut talking = incoming.next().await.unwrap().unwrap();
        let mut preface = [0u8; OPENING_BYTES];
        talking.read_exact(&mut preface).await.unwrap();
        let idle = tokio::time::timeout(HANDSHAKE_TIMEOUT * 3, talking.read(&mut buf)).await;
        assert!(idle.is_err(), "after its opening bytes, a client may pause: {idle:?}");
        assert_eq!(counters.silent.load(Ordering::Relaxed), 1);
    }
}
