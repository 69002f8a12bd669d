//! A watch that survives a dropped connection: when the stream breaks (connection lost, server
//! restarting or shutting down), it reconnects with backoff and asks again from the last
//! sequence it delivered, so its consumer sees no gap and no duplicate.

use std::sync::Arc;
use std::time::Duration;

use converge_api::{LedgerError, WatchRequest, WatchStream};
use converge_core::{ContextId, Entry};
use converge_proto::{convert, status, v1};
use tonic::Streaming;
use tracing::debug;

use crate::{Client, verify};

/// The first wait before reconnecting.
const RETRY_FIRST: Duration = Duration::from_millis(50);

pub(crate) async fn watch(
    client: Client,
    request: WatchRequest,
) -> Result<WatchStream, LedgerError> {
    let verify_in = if client.config.verify {
        Some(
            ContextId::try_new(request.context_id.as_str())
                .map_err(|e| LedgerError::InvalidArgument(e.to_string()))?,
        )
    } else {
        None
    };
    let last = request.from_sequence;
    // The first subscription is made now, so a bad request fails here, not in the stream.
    let stream = open(&client, &request, last).await?;
    let state = Resuming {
        client,
        request,
        last,
        stream: Some(stream),
        retry: RETRY_FIRST,
        verify_in,
        done: false,
    };
    Ok(Box::pin(futures_util::stream::unfold(state, |mut s| async move {
        let item = s.next().await?;
        Some((item, s))
    })))
}

async fn open(
    client: &Client,
    request: &WatchRequest,
    after: u64,
) -> Result<(usize, Streaming<v1::WatchEvent>), LedgerError> {
    let mut req = request.clone();
    req.from_sequence = after;
    let (server, mut service) = client.context_service();
    let response = service.watch(convert::watch_request_to_wire(req)).await;
    response.map(|r| (server, r.into_inner())).map_err(|s| {
        if crate::nodes::moves_on(&s) {
            client.move_on(server);
        }
        status::from_status(&s)
    })
}

/// Errors after which a watch reconnects instead of ending.
fn resumable(err: &LedgerError) -> bool {
    matches!(err, LedgerError::Unavailable(_))
}

struct Resuming {
    client: Client,
    request: WatchRequest,
    /// The last sequence delivered (or the one the watch started after).
    last: u64,
    /// The open stream and the server it comes from.
    stream: Option<(usize, Streaming<v1::WatchEvent>)>,
    retry: Duration,
    verify_in: Option<ContextId>,
    done: bool,
}

impl Resuming {
    async fn next(&mut self) -> Option<Result<Arc<Entry>, LedgerError>> {
        loop {
            if self.done {
                return None;
            }
            let Some((server, stream)) = &mut self.stream else {
                tokio::time::sleep(self.retry).await;
                self.retry = (self.retry * 2).min(self.client.config.watch_retry_max);
                match open(&self.client, &self.request, self.last).await {
                    Ok(stream) => self.stream = Some(stream),
                    Err(err) if resumable(&err) => {
                        debug!(error = %err, "watch still cannot reconnect");
                    }
                    Err(err) => return Some(Err(self.end(err))),
                }
                continue;
            };
            match stream.message().await {
                Ok(Some(event)) => match self.accept(event) {
                    Ok(Some(entry)) => return Some(Ok(entry)),
                    Ok(None) => {}
                    Err(err) => return Some(Err(self.end(err))),
                },
                // The server ended the stream (it is shutting down): resume, on another server
                // if there are several.
                Ok(None) => {
                    self.client.move_on(*server);
                    self.stream = None;
                }
                Err(status) => {
                    let err = status::from_status(&status);
                    if !resumable(&err) {
                        return Some(Err(self.end(err)));
                    }
                    debug!(error = %err, last = self.last, "watch dropped; resuming");
                    self.client.move_on(*server);
                    self.stream = None;
                }
            }
        }
    }

    fn end(&mut self, err: LedgerError) -> LedgerError {
        self.done = true;
        err
    }

    fn accept(&mut self, event: v1::WatchEvent) -> Result<Option<Arc<Entry>>, LedgerError> {
        let wire = event
            .entry
            .ok_or_else(|| LedgerError::Verification("a watch event without an entry".into()))?;
        let entry = convert::entry_from_wire(wire)?;
        let seq = entry.sequence().0;
        if seq <= self.last {
            // Already delivered before a reconnect.
            return Ok(None);
        }
        if let Some(id) = &self.verify_in {
            verify::entry(id, &entry)?;
            if self.request.key.is_none() && seq != self.last + 1 {
                return Err(LedgerError::Verification(format!(
                    "the watch skipped from entry {} to {seq}",
                    self.last
                )));
            }
        }
        self.last = seq;
        self.retry = RETRY_FIRST;
        Ok(Some(Arc::new(entry)))
    }
}
