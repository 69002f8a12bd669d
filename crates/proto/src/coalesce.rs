//! Coalescing a connection's writes into fewer system calls.
//!
//! The HTTP/2 codec (h2) holds at most one DATA frame of more than 256 bytes at a time and
//! writes it out before it takes the next (hyperium/h2#902). With 1 KiB entries every response
//! is such a frame, so a group commit that completes 200 appends on one connection cost about
//! 200 `writev` calls: a fifth of the server's CPU under load. [`Coalesced`] sits under the
//! codec and copies its writes into a buffer. The first flush after a write does not go to the
//! socket: it wakes the connection's task and lets the other ready tasks (the rest of the
//! group commit's responses) run first. The buffer goes out, in one write, the next time the
//! task reads (h2 reads on every poll of the connection) or when it holds [`HOLD_MAX`] bytes.
//! The delay is one trip through the scheduler's queue, never a timer, so a lone request
//! is answered as soon as its connection task runs again.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most bytes held back before they are written regardless: about 27 responses of 1 KiB
/// entries, enough that the system call is a small share of their cost. It bounds what a
/// connection's buffer keeps allocated (one that never wrote keeps nothing), so even the
/// server's 10,000 connections hold at most 320 MiB here.
pub const HOLD_MAX: usize = 32 * 1024;

/// A stream whose writes are gathered and sent in as few system calls as the scheduler allows.
#[derive(Debug)]
pub struct Coalesced<S: AsyncWrite + Unpin> {
    inner: S,
    /// Bytes accepted from the writer and not yet written to `inner`, from `sent` on.
    held: Vec<u8>,
    sent: usize,
    /// A flush was answered without writing, and the task was woken to write on its next
    /// poll.
    deferred: bool,
}

impl<S: AsyncWrite + Unpin> Coalesced<S> {
    /// `inner`, with its writes coalesced.
    pub fn new(inner: S) -> Self {
        Self { inner, held: Vec::new(), sent: 0, deferred: false }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn holding(&self) -> usize {
        self.held.len() - self.sent
    }

    /// Writes out everything held.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.held.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.held.clear();
        self.sent = 0;
        self.deferred = false;
        if self.held.capacity() > HOLD_MAX {
            self.held.shrink_to(HOLD_MAX);
        }
        Poll::Ready(Ok(()))
    }

    /// Makes room for `len` more bytes: writes out what is held if they would not fit.
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<()>> {
        if self.holding() + len > HOLD_MAX {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

/// What a task wrote and flushed must reach the peer even if the task drops the stream
/// without reading or shutting it down (a TLS alert before the connection is dropped): the
/// held bytes are written as far as the socket takes them without waiting.
impl<S: AsyncWrite + Unpin> Drop for Coalesced<S> {
    fn drop(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        while self.sent < self.held.len() {
            match Pin::new(&mut self.inner).poll_write(&mut cx, &self.held[self.sent..]) {
                Poll::Ready(Ok(n)) if n > 0 => self.sent += n,
                _ => break,
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // The task is back after a deferred flush: send what was gathered. If the socket is
        // full, its write readiness wakes the task to try again.
        if this.deferred
            && let Poll::Ready(Err(err)) = this.poll_drain(cx)
        {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_room(cx, buf.len()))?;
        if buf.len() >= HOLD_MAX {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        this.held.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let len = bufs.iter().map(|b| b.len()).sum();
        ready!(this.poll_room(cx, len))?;
        if len >= HOLD_MAX {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            this.held.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.holding() == 0 {
            return Pin::new(&mut this.inner).poll_flush(cx);
        }
        if !this.deferred {
            this.deferred = true;
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    use super::*;

    /// A stream that records every write call, and can be made to refuse writes.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        flushes: usize,
        shut: bool,
        full: bool,
        broken: bool,
    }

    impl Recorder {
        fn bytes(&self) -> Vec<u8> {
            self.writes.concat()
        }
    }

    impl AsyncRead for Recorder {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.broken {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            if self.full {
                return Poll::Pending;
            }
            self.writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut = true;
            Poll::Ready(Ok(()))
        }
    }

    /// Counts wakes.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    struct Harness {
        stream: Coalesced<Recorder>,
        wakes: Arc<Wakes>,
        waker: Waker,
    }

    impl Harness {
        fn new() -> Self {
            let counter = Arc::new(Wakes::default());
            let waker = Waker::from(Arc::clone(&counter));
            Self { stream: Coalesced::new(Recorder::default()), wakes: counter, waker }
        }

        fn wakes(&self) -> usize {
            self.wakes.0.load(Ordering::Relaxed)
        }

        fn write(&mut self, bytes: &[u8]) -> Poll<io::Result<usize>> {
            let mut cx = Context::from_waker(&self.waker);
            Pin::new(&mut self.stream).poll_write(&mut cx, bytes)
        }

        fn write_vectored(&mut self, parts: &[&[u8]]) -> Poll<io::Result<usize>> {
            let slices: Vec<_> = parts.iter().map(|p| io::IoSlice::new(p)).collect();
            let mut cx = Context::from_waker(&self.waker);
            Pin::new(&mut self.stream).poll_write_vectored(&mut cx, &slices)
        }

        fn flush(&mut self) -> Poll<io::Result<()>> {
            let mut cx = Context::from_waker(&self.waker);
            Pin::new(&mut self.stream).poll_flush(&mut cx)
        }

        /// A read, as the connection's task does on every poll.
        fn read(&mut self) -> Poll<io::Result<()>> {
            let mut cx = Context::from_waker(&self.waker);
            let mut space = [0_u8; 16];
            let mut buf = ReadBuf::new(&mut space);
            Pin::new(&mut self.stream).poll_read(&mut cx, &mut buf)
        }

        fn shutdown(&mut self) -> Poll<io::Result<()>> {
            let mut cx = Context::from_waker(&self.waker);
            Pin::new(&mut self.stream).poll_shutdown(&mut cx)
        }

        fn inner(&mut self) -> &mut Recorder {
            &mut self.stream.inner
        }
    }

    fn ok<T: std::fmt::Debug>(poll: Poll<io::Result<T>>) -> T {
        match poll {
            Poll::Ready(Ok(value)) => value,
            other => panic!("expected Ready(Ok), got {other:?}"),
        }
    }

    #[test]
    fn writes_flushed_in_one_poll_go_out_in_one_write_on_the_next() {
        let mut h = Harness::new();
        assert_eq!(ok(h.write(b"one ")), 4);
        ok(h.flush());
        assert_eq!(ok(h.write_vectored(&[b"two", b" "])), 4);
        ok(h.flush());
        assert_eq!(ok(h.write(b"three")), 5);
        ok(h.flush());
        assert!(h.inner().writes.is_empty(), "nothing is written before the task polls again");
        assert_eq!(h.wakes(), 1, "the first deferred flush wakes the task, once");

        assert!(h.read().is_pending());
        assert_eq!(h.inner().writes, vec![b"one two three".to_vec()]);
        ok(h.flush());
        assert_eq!(h.inner().flushes, 1, "with nothing held a flush reaches the stream");
        assert_eq!(h.wakes(), 1);
    }

    #[test]
    fn a_read_with_nothing_deferred_writes_nothing() {
        let mut h = Harness::new();
        assert!(h.read().is_pending());
        ok(h.write(b"held"));
        assert!(h.read().is_pending());
        assert!(h.inner().writes.is_empty(), "only a flush makes the next read write");
        ok(h.flush());
        assert!(h.read().is_pending());
        assert_eq!(h.inner().bytes(), b"held");
    }

    #[test]
    fn at_most_hold_max_bytes_are_held() {
        let mut h = Harness::new();
        let chunk = vec![7_u8; HOLD_MAX / 4 + 1];
        for _ in 0..3 {
            ok(h.write(&chunk));
        }
        assert!(h.inner().writes.is_empty());
        ok(h.write(&chunk));
        assert_eq!(h.inner().writes.len(), 1, "the fourth chunk would not fit: the held go out");
        assert_eq!(h.inner().bytes().len(), chunk.len() * 3);
        assert_eq!(h.stream.holding(), chunk.len());

        let big = vec![9_u8; HOLD_MAX];
        assert_eq!(ok(h.write(&big)), HOLD_MAX);
        assert_eq!(h.inner().writes.len(), 3, "held bytes first, then the big write directly");
        assert_eq!(h.inner().writes[2], big);
        assert_eq!(h.stream.holding(), 0);
    }

    #[test]
    fn a_full_stream_pushes_back_and_keeps_every_byte_in_order() {
        let mut h = Harness::new();
        ok(h.write(b"first"));
        ok(h.flush());
        h.inner().full = true;
        assert!(h.read().is_pending());
        assert!(h.inner().writes.is_empty());
        ok(h.write(b" second"));
        let fill = vec![1_u8; HOLD_MAX];
        assert!(h.write(&fill).is_pending(), "no room and no way to make it: push back");

        h.inner().full = false;
        assert!(h.read().is_pending());
        assert_eq!(h.inner().bytes(), b"first second");
        ok(h.write(b" third"));
        ok(h.shutdown());
        assert_eq!(h.inner().bytes(), b"first second third", "shutdown writes what is held");
        assert!(h.inner().shut);
    }

    #[test]
    fn a_write_error_surfaces_on_the_next_call() {
        let mut h = Harness::new();
        ok(h.write(b"lost"));
        ok(h.flush());
        h.inner().broken = true;
        assert!(matches!(h.read(), Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::BrokenPipe));
        let mut h = Harness::new();
        ok(h.write(b"lost"));
        h.inner().broken = true;
        assert!(h.shutdown().is_ready_and_err());
    }

    /// A stream whose written bytes outlive it.
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);

    impl AsyncWrite for Shared {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn dropping_the_stream_writes_what_is_held() {
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut stream = Coalesced::new(Shared(Arc::clone(&written)));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut stream).poll_write(&mut cx, b"alert").is_ready());
        assert!(Pin::new(&mut stream).poll_flush(&mut cx).is_ready());
        assert!(written.lock().unwrap().is_empty());
        drop(stream);
        assert_eq!(*written.lock().unwrap(), b"alert");
    }

    trait ReadyErr {
        fn is_ready_and_err(&self) -> bool;
    }

    impl<T> ReadyErr for Poll<io::Result<T>> {
        fn is_ready_and_err(&self) -> bool {
            matches!(self, Poll::Ready(Err(_)))
        }
    }

    /// Over a real socket, a writer that flushes after every message of sizes from 0 to 3000
    /// bytes (so both held and direct writes happen) and a reader on the far side: every byte
    /// arrives, in order.
    #[tokio::test]
    async fn every_byte_arrives_in_order_over_tcp() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut all = Vec::new();
            socket.read_to_end(&mut all).await.unwrap();
            all
        });
        let mut stream = Coalesced::new(tokio::net::TcpStream::connect(addr).await.unwrap());
        let mut sent = Vec::new();
        for i in 0..2000_u32 {
            let message: Vec<u8> = (0..(i % 3000)).map(|b| (b ^ i).to_le_bytes()[0]).collect();
            stream.write_all(&message).await.unwrap();
            stream.flush().await.unwrap();
            sent.extend_from_slice(&message);
        }
        stream.shutdown().await.unwrap();
        assert_eq!(reader.await.unwrap(), sent);
    }
}
