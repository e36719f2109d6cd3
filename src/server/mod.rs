//! The accept loops: HTTP/1 connections on TCP or the Unix socket, each listener with its own
//! connection cap and idle timeout (idle connections give way, see [`connections`]), and a
//! graceful drain when told to stop.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tracing::{debug, warn};

use crate::config::Limits;
use crate::http::PeerUid;
use crate::metrics::Metrics;

mod connections;
mod unix;

use connections::{Busy, BusyBody, Closed, Connections, Place, Slot, WhileBusy};
pub(crate) use unix::{BoundSocket, bind_unix};

/// Pause after a failed `accept`, e.g. when the process is out of file descriptors.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The most a connection buffers of a request head: room for headers up to twice
/// `max_header_bytes` (at least 16 KiB, plus 4 KiB), so that headers over the limit are answered
/// by the handlers with JSON. A larger head gets hyper's bare 431, which openapi.yaml documents.
/// Kept this small because it bounds what a client holding every connection can pin (2,048 x
/// 20 KiB by default; glibc keeps most of it after they close).
fn read_buffer_bytes(max_header_bytes: usize) -> usize {
    (max_header_bytes * 2).max(16 * 1024) + 4096
}

/// A listener the accept loop can serve: TCP, or a Unix socket whose peers' uids are known.
pub(crate) trait Accept {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    async fn accept_one(&self) -> std::io::Result<(Self::Io, Option<PeerUid>)>;
}

impl Accept for TcpListener {
    type Io = tokio::net::TcpStream;

    async fn accept_one(&self) -> std::io::Result<(Self::Io, Option<PeerUid>)> {
        let (stream, _) = self.accept().await?;
        Ok((stream, None))
    }
}

impl Accept for &UnixListener {
    type Io = tokio::net::UnixStream;

    async fn accept_one(&self) -> std::io::Result<(Self::Io, Option<PeerUid>)> {
        let (stream, _) = self.accept().await?;
        let uid = stream.peer_cred()?.uid();
        Ok((stream, Some(PeerUid(uid))))
    }
}

/// What an accept loop needs to know of its listener: its limits and its connection table.
#[derive(Debug)]
pub(crate) struct Listener {
    limits: Limits,
    connections: Arc<Connections>,
}

impl Listener {
    /// The listener called `name` in the connection metrics, with `limits`.
    pub(crate) fn new(name: &'static str, limits: Limits, metrics: &Metrics) -> Self {
        let closed = |reason| {
            metrics
                .connections_closed
                .with_label_values(&[name, reason])
        };
        Self {
            limits,
            connections: Connections::new(
                limits.max_connections,
                metrics.connections_open.with_label_values(&[name]),
                Closed {
                    evicted: closed("idle_evicted"),
                    refused: closed("over_capacity"),
                    timed_out: closed("header_timeout"),
                },
            ),
        }
    }
}

/// Accepts HTTP/1 connections on `listener` until `stop` turns true, then closes the listener and
/// waits for the open connections to finish their requests. Past `max_connections` a new
/// connection takes the place of the one idle the longest, or is closed at once when all are
/// busy. Requests on a Unix socket carry their peer's uid as a [`PeerUid`] extension.
pub(crate) async fn serve<L, S>(
    listener: L,
    service: S,
    config: Listener,
    mut stop: watch::Receiver<bool>,
) where
    L: Accept,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send + 'static,
{
    let limits = config.limits;
    let mut http = http1::Builder::new();
    http
        // The connection table closes a connection idle for `header_read_timeout` (see
        // `connections`): hyper's own timer arms and cancels a timer for every request, 1,100
        // of a cache hit's 22,700 instructions and three clock reads (BENCHMARKS.md).
        .header_read_timeout(None)
        // Headers and body copied into one buffer and sent with one `write`, not a `writev` of
        // both: the bodies are small (credentials, a few hundred bytes), and side by side this
        // serves 4-9 % more cache hits at 16 and 64 connections (BENCHMARKS.md).
        .writev(false)
        .max_buf_size(read_buffer_bytes(limits.max_header_bytes));
    let mut open = tokio::task::JoinSet::new();
    let mut sweep = tokio::time::interval(Connections::sweep_every(limits.header_read_timeout));
    // Late ticks come late, never in a burst: an idle connection is never closed early.
    sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept_one() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Typically EMFILE: back off briefly instead of spinning.
                    warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            Some(_) = open.join_next() => continue,
            _ = sweep.tick() => {
                config.connections.sweep();
                continue;
            }
            () = stopped(&mut stop) => break,
        };
        // Every connection busy: closed at once rather than left waiting.
        let Some(place) = config.connections.admit() else {
            drop(stream);
            continue;
        };
        let slot = Arc::clone(&place.slot);
        let service = Tracked {
            inner: service.clone(),
            place,
            peer,
        };
        let connection = http.serve_connection(TokioIo::new(stream), service);
        open.spawn(run_connection(connection, slot, limits.header_read_timeout));
    }
    drop(listener);
    config.connections.close_all();
    while open.join_next().await.is_some() {}
}

/// Runs one connection until it ends: closed at once when idle for `idle_timeout`; when asked
/// to give up its place or when the listener stops, it finishes the request in progress (if
/// any) and closes, or is closed if it still sends no request head `idle_timeout` later.
async fn run_connection<I, S>(
    connection: http1::Connection<I, Tracked<S>>,
    slot: Arc<Slot>,
    idle_timeout: Duration,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
        > + Send
        + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send + 'static,
{
    let mut connection = std::pin::pin!(connection);
    let mut closing = false;
    // Armed once the connection is closing: it has left the table, which no longer sweeps it.
    let mut grace = std::pin::pin!(tokio::time::sleep(idle_timeout));
    loop {
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(err) = ended {
                    debug!(error = %err, "connection ended with an error");
                }
                return;
            }
            asked = slot.asked() => {
                // Checked here again: only this task starts and ends the connection's requests.
                if asked.to_expire() && slot.close_if_expired() {
                    debug!("closing a connection idle for server.header_read_timeout");
                    return;
                }
                if asked.to_close() && !closing {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                    grace.as_mut().reset(tokio::time::Instant::now() + idle_timeout);
                }
            }
            () = grace.as_mut(), if closing => {
                if slot.close_if_idle() {
                    debug!("closing a connection that sent no request head after it was asked to close");
                    return;
                }
                // A request in progress finishes first; hyper closes the connection after it.
                grace.as_mut().reset(tokio::time::Instant::now() + idle_timeout);
            }
        }
    }
}

/// The service of one connection: marks the connection busy while a request is in progress,
/// and gives Unix socket requests their peer's uid.
#[derive(Debug)]
struct Tracked<S> {
    inner: S,
    place: Place,
    peer: Option<PeerUid>,
}

impl<S> hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Tracked<S>
where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
        >,
{
    type Response = hyper::Response<BusyBody<axum::body::Body>>;
    type Error = S::Error;
    type Future = WhileBusy<S::Future>;

    fn call(&self, mut request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(peer);
        }
        let busy = Busy::enter(&self.place.slot);
        WhileBusy::new(self.inner.call(request), busy)
    }
}

/// Completes once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
