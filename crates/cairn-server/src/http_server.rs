//! Serving the HTTP API (HTTP/1.1) within the node's bounds (see
//! [`crate::limits`]), in place of `axum::serve`, which has no caps and
//! no timeouts.
//!
//! Each accepted connection first passes the listener's
//! [`ConnectionGate`](crate::limits::ConnectionGate); over a cap it is
//! answered `503 {code: "unavailable", message}` with `Connection: close`
//! and closed. An admitted one is served by hyper's HTTP/1 connection and
//! watched by a small per-connection state machine fed by the socket
//! wrapper ([`Watched`]) and the service (a request reached a handler, its
//! handler returned):
//!
//! - *waiting for a head* — from the accept, or from the first byte after
//!   the previous response: the head must be complete within the header
//!   timeout (slowloris);
//! - *in a handler* — no timeout of the connection's own: the body read
//!   has its own (in [`crate::api::extract`]), handlers theirs;
//! - *idle* — no request in a handler and no byte read or written: closed
//!   after the idle timeout (keep-alive);
//! - and at any time, a write the client has not let through (it does not
//!   read its responses) for the idle timeout closes the connection.
//!
//! hyper's own header timeout is not used: it runs from the moment hyper
//! waits for a head, so it would also be the keep-alive timeout.
//!
//! Shutdown: the accept loop stops, every connection is told to finish
//! (hyper closes idle ones at once and others after their response), and
//! `serve` returns once all are closed.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::limits::{Closed, ConnectionPermit, Guards, Refusal};

/// Serves `router` on `listener` until `stop` is cancelled, then waits for
/// the open connections to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    guards: Arc<Guards>,
    stop: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((socket, peer)) => match guards.http.admit(peer.ip()) {
                Ok(permit) => {
                    connections.spawn(connection(
                        socket,
                        peer,
                        router.clone(),
                        guards.clone(),
                        permit,
                        stop.clone(),
                    ));
                }
                Err(reason) => {
                    let gate = &guards.http;
                    gate.refuse(
                        socket,
                        reason,
                        refusal_response(reason, gate.max(), gate.max_per_ip()),
                    );
                }
            },
            Err(e) => {
                // Usually out of file descriptors: wait for some to close
                // rather than spin on the error.
                tracing::warn!(error = %e, "accepting an HTTP connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    connections.close();
    tracing::info!(
        open = connections.len(),
        "HTTP: no longer accepting; finishing in-flight requests"
    );
    connections.wait().await;
}

/// The raw `503` answering a connection refused for `reason`.
pub fn refusal_response(reason: Refusal, max: usize, max_per_ip: usize) -> Vec<u8> {
    let message = match reason {
        Refusal::Connections => format!(
            "the node holds its maximum of {max} HTTP connections (--max-connections); \
             retry later or use another node"
        ),
        Refusal::PerIp => format!(
            "this address holds the maximum of {max_per_ip} HTTP connections \
             (--max-connections-per-ip); close some or retry later"
        ),
        Refusal::Descriptors => {
            "the node is short of file descriptors; retry later or use another node".to_string()
        }
    };
    let body = serde_json::json!({"code": "unavailable", "message": message}).to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Milliseconds since the connection was accepted; 0 means "not set".
#[derive(Debug)]
struct Activity {
    accepted: Instant,
    /// Requests in a handler now.
    in_handler: AtomicUsize,
    /// Last byte read or written.
    last_io: AtomicU64,
    /// First byte of a request head not yet handed to a handler.
    head_started: AtomicU64,
    /// A write has been waiting for the client since.
    write_blocked: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Activity {
            accepted: Instant::now(),
            in_handler: AtomicUsize::new(0),
            last_io: AtomicU64::new(1),
            // A new connection owes its first head from the accept on.
            head_started: AtomicU64::new(1),
            write_blocked: AtomicU64::new(0),
        })
    }

    /// Now, in this connection's milliseconds (never 0).
    fn now(&self) -> u64 {
        self.accepted.elapsed().as_millis() as u64 + 1
    }

    fn at(&self, ms: u64) -> Instant {
        self.accepted + Duration::from_millis(ms.saturating_sub(1))
    }

    fn read(&self) {
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        if self.in_handler.load(Ordering::Relaxed) == 0 {
            let _ =
                self.head_started
                    .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn wrote(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
        self.write_blocked.store(0, Ordering::Relaxed);
    }

    fn write_pending(&self) {
        let now = self.now();
        let _ = self
            .write_blocked
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn handler_started(&self) {
        self.in_handler.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
    }

    fn handler_done(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
        self.in_handler.fetch_sub(1, Ordering::Relaxed);
    }

    /// What closes the connection, and when, as things stand.
    fn next_deadline(&self, header: Duration, idle: Duration) -> (Instant, Closed) {
        let mut next = (Instant::now() + idle, Closed::IdleTimeout);
        let mut consider = |at: Instant, why: Closed| {
            if at < next.0 {
                next = (at, why);
            }
        };
        let blocked = self.write_blocked.load(Ordering::Relaxed);
        if blocked != 0 {
            consider(self.at(blocked) + idle, Closed::WriteStalled);
        }
        if self.in_handler.load(Ordering::Relaxed) == 0 {
            let head = self.head_started.load(Ordering::Relaxed);
            if head != 0 {
                consider(self.at(head) + header, Closed::HeaderTimeout);
            } else {
                consider(
                    self.at(self.last_io.load(Ordering::Relaxed)) + idle,
                    Closed::IdleTimeout,
                );
            }
        }
        next
    }
}

/// Sleeps until the connection is past one of its deadlines.
async fn watchdog(activity: &Activity, header: Duration, idle: Duration) -> Closed {
    loop {
        let (at, why) = activity.next_deadline(header, idle);
        if at <= Instant::now() {
            return why;
        }
        // Deadlines only move later, so waking at this one and judging
        // again is enough.
        tokio::time::sleep_until(at).await;
    }
}

async fn connection(
    socket: TcpStream,
    peer: SocketAddr,
    router: Router,
    guards: Arc<Guards>,
    permit: ConnectionPermit,
    stop: CancellationToken,
) {
    let _ = socket.set_nodelay(true);
    let activity = Activity::new();
    let io = TokioIo::new(Watched {
        inner: socket,
        activity: activity.clone(),
    });
    let service = Tracked {
        inner: TowerToHyperService::new(router),
        activity: activity.clone(),
    };
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    tokio::pin!(conn);
    let (header, idle) = (
        guards.limits.http_header_timeout,
        guards.limits.http_idle_timeout,
    );
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "HTTP connection failed");
                }
                break;
            }
            why = watchdog(&activity, header, idle) => {
                permit.gate().count_closed(why);
                tracing::debug!(%peer, reason = why.as_str(), "closing HTTP connection for a limit");
                break;
            }
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
    drop(permit);
}

/// The socket, telling [`Activity`] about every byte that moves.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        poll
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(&poll);
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(&poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Watched {
    fn note_write(&self, poll: &Poll<io::Result<usize>>) {
        match poll {
            Poll::Ready(Ok(n)) if *n > 0 => self.activity.wrote(),
            Poll::Pending => self.activity.write_pending(),
            _ => {}
        }
    }
}

/// The router, telling [`Activity`] when a request is in a handler.
#[derive(Clone)]
struct Tracked {
    inner: TowerToHyperService<Router>,
    activity: Arc<Activity>,
}

impl Service<Request<Incoming>> for Tracked {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let guard = InHandler::new(self.activity.clone());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            drop(guard);
            response
        })
    }
}

/// Counts a request as in a handler until dropped (also when the
/// connection is dropped mid-request).
struct InHandler(Arc<Activity>);

impl InHandler {
    fn new(activity: Arc<Activity>) -> Self {
        activity.handler_started();
        InHandler(activity)
    }
}

impl Drop for InHandler {
    fn drop(&mut self) {
        self.0.handler_done();
    }
}
