//! The client's TCP connector: tonic's, with writes coalesced
//! ([`Coalesced`](converge_proto::coalesce::Coalesced)), so many appends in flight on one
//! connection go out in a few system calls instead of one or two each. TLS, when configured,
//! is layered on top by tonic as usual.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use converge_proto::coalesce::Coalesced;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::codegen::Service;
use tonic::codegen::http::Uri;

/// Opens TCP connections with `TCP_NODELAY` whose writes are coalesced. (The connect timeout
/// is the endpoint's, which tonic wraps around any connector.)
#[derive(Clone)]
pub(crate) struct Connector {
    http: HttpConnector,
}

impl Connector {
    pub(crate) fn new() -> Self {
        let mut http = HttpConnector::new();
        // The scheme is tonic's business (it adds TLS for https); this only opens the socket.
        http.enforce_http(false);
        http.set_nodelay(true);
        Self { http }
    }
}

type Connecting = Pin<
    Box<
        dyn Future<
                Output = Result<
                    TokioIo<Coalesced<TcpStream>>,
                    Box<dyn std::error::Error + Send + Sync>,
                >,
            > + Send,
    >,
>;

impl Service<Uri> for Connector {
    type Response = TokioIo<Coalesced<TcpStream>>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.http.call(uri);
        Box::pin(async move {
            let stream = connecting.await?.into_inner();
            Ok(TokioIo::new(Coalesced::new(stream)))
        })
    }
}
