//! The server's explicit limits, each with why it has the value it has.

use std::time::Duration;

/// Room for a request's envelope beyond its payload: names (2 KiB), metadata (64 KiB), field
/// tags and lengths, with margin.
pub const ENVELOPE_BYTES: usize = 256 * 1024;

/// HTTP/2 streams one connection may have open at once. Enough for a busy engine's
/// pipelined appends and watches on one connection; more is a misbehaving client.
pub const CONCURRENT_STREAMS_MAX: u32 = 1024;

/// Streams a client may make the server reset (by sending bad frames) before the connection
/// is closed: bounds the "rapid reset" and "made-you-reset" attacks (CVE-2023-44487,
/// CVE-2025-8671).
pub const LOCAL_ERROR_RESETS_MAX: usize = 1024;

/// Streams a client may cancel before the server has accepted them, per connection.
pub const PENDING_ACCEPT_RESETS_MAX: usize = 100;

/// How often the server pings an idle connection, and how long it waits for the pong before
/// closing it: dead peers are noticed within a minute.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// See [`KEEPALIVE_INTERVAL`].
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Largest HTTP/2 header list a client may send (credentials and gRPC metadata fit easily).
pub const HEADER_LIST_BYTES_MAX: u32 = 64 * 1024;

/// HTTP/2 flow-control window per connection. Many appends in flight on one connection must
/// not stall on window updates: 256 in flight of 1 KiB each is 256 KiB, above the 64 KiB
/// protocol default. It is also what a connection's requests waiting for the receive budget
/// (`receive.rs`) can hold in HTTP/2's buffers: 64 streams' windows fit in it, so up to 64
/// waiting streams cannot keep a call that holds the budget on the same connection from
/// receiving the rest of its message.
pub const CONNECTION_WINDOW_BYTES: u32 = 16 * 1024 * 1024;

/// HTTP/2 flow-control window per stream: what one request may send before the node reads
/// it. Small enough that streams waiting for the receive budget hold little of their
/// connection's window; a large append goes in several windows (on loopback, a 4 MiB append in
/// 16 round trips).
pub const STREAM_WINDOW_BYTES: u32 = 256 * 1024;

/// Longest a client may take to start talking (its first bytes of HTTP/2, or of TLS) and to
/// finish the TLS handshake before the connection is closed: a slow or silent client must not
/// hold a connection slot.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most gRPC connections open at once; more are closed as they are accepted. Engines share a
/// few connections (HTTP/2 multiplexes), so this is far above any real deployment and far
/// below what would exhaust memory (each idle connection costs about 15 KiB). The process
/// also needs a file-descriptor limit above it (`ulimit -n`); where that is lower, accepts
/// fail first and the server backs off instead of spinning.
pub const CONNECTIONS_MAX: usize = 10_000;
