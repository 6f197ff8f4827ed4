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
//! hyper answers a request head it cannot parse (a malformed head 400, a
//! URI over 64 KiB 414, a head over its buffer 431) by itself, with an
//! empty body, and closes. [`Watched`] recognises such an automatic answer
//! — one of those statuses with `content-length: 0` while no request is in
//! a handler; Cairn's handlers always send a JSON body — and writes
//! Cairn's `{code, message}` JSON answer in its place, so every error has
//! one shape.
//!
//! With TLS (`--tls-cert`), the handshake runs in the connection's task
//! before hyper sees it, within the header timeout (see [`crate::tls`]).
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
use crate::tls::NotTls;
use tokio_rustls::TlsAcceptor;

/// Serves `router` on `listener` until `stop` is cancelled, then waits for
/// the open connections to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    guards: Arc<Guards>,
    tls: Option<TlsAcceptor>,
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
                    connections.spawn(accepted_connection(
                        socket,
                        peer,
                        router.clone(),
                        guards.clone(),
                        tls.clone(),
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

/// Runs the TLS handshake when the listener has TLS (within the header
/// timeout: a TLS client's first bytes are its head's first bytes), then
/// serves the connection.
async fn accepted_connection(
    socket: TcpStream,
    peer: SocketAddr,
    router: Router,
    guards: Arc<Guards>,
    tls: Option<TlsAcceptor>,
    permit: ConnectionPermit,
    stop: CancellationToken,
) {
    let _ = socket.set_nodelay(true);
    let Some(acceptor) = tls else {
        return connection(socket, peer, router, guards, permit, stop).await;
    };
    match crate::tls::accept(&acceptor, socket, guards.limits.http_header_timeout).await {
        Ok(stream) => connection(stream, peer, router, guards, permit, stop).await,
        Err(NotTls::Plaintext(socket)) => {
            tracing::debug!(%peer, "plaintext HTTP on the TLS listener; answered 400");
            crate::tls::answer_plaintext(socket, &crate::tls::plaintext_http_answer()).await;
        }
        Err(NotTls::Failed(e)) => {
            permit.gate().count_closed(Closed::HeaderTimeout);
            tracing::debug!(%peer, error = %e, "HTTP TLS handshake failed");
        }
    }
}

async fn connection<S>(
    socket: S,
    peer: SocketAddr,
    router: Router,
    guards: Arc<Guards>,
    permit: ConnectionPermit,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let io = TokioIo::new(Watched {
        inner: socket,
        activity: activity.clone(),
        replacement: None,
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

/// The socket (or TLS session), telling [`Activity`] about every byte
/// that moves.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
    /// Cairn's answer in place of one of hyper's automatic error answers,
    /// and how much of it is written; hyper's own bytes are swallowed.
    replacement: Option<(Vec<u8>, usize)>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
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

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.replacement.is_none() {
            self.replace_automatic(buf);
        }
        if self.replacement.is_some() {
            ready_or_pending(self.as_mut().drain_replacement(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(&poll);
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.replacement.is_none()
            && let Some(first) = bufs.iter().find(|b| !b.is_empty())
        {
            self.replace_automatic(first);
        }
        if self.replacement.is_some() {
            ready_or_pending(self.as_mut().drain_replacement(cx))?;
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(&poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.as_mut().drain_replacement(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.as_mut().drain_replacement(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A write of the replacement that is still pending counts as done for
/// hyper (its bytes are swallowed either way); errors pass.
fn ready_or_pending(poll: Poll<io::Result<()>>) -> io::Result<()> {
    match poll {
        Poll::Ready(r) => r,
        Poll::Pending => Ok(()),
    }
}

impl<S: AsyncWrite + Unpin> Watched<S> {
    /// Writes what is left of the replacement answer, if any.
    fn drain_replacement(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some((bytes, written)) = &mut this.replacement else {
            return Poll::Ready(Ok(()));
        };
        while *written < bytes.len() {
            match std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, &bytes[*written..])) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    *written += n;
                    this.activity.wrote();
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// If `head` starts one of hyper's automatic error answers (see the
    /// module docs), arranges for Cairn's JSON answer to be sent instead.
    fn replace_automatic(&mut self, head: &[u8]) {
        if self.activity.in_handler.load(Ordering::Relaxed) != 0 {
            return;
        }
        if let Some(answer) = automatic_answer(head) {
            self.replacement = Some((answer, 0));
        }
    }
}

/// Cairn's answer for one of hyper's automatic error answers, if `head`
/// is one: `HTTP/1.1 400|414|431 ...` with `content-length: 0`.
fn automatic_answer(head: &[u8]) -> Option<Vec<u8>> {
    let rest = head.strip_prefix(b"HTTP/1.1 ")?;
    let status = rest.get(..3)?;
    let end = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(head.len());
    let empty_body = head[..end]
        .split(|b| *b == b'\n')
        .any(|line| line.eq_ignore_ascii_case(b"content-length: 0\r"));
    if !empty_body {
        return None;
    }
    let (code, reason, message) = match status {
        b"400" => (
            cairn_types::ErrorCode::BadRequest,
            "Bad Request",
            "the request head could not be parsed as HTTP/1.1",
        ),
        b"414" => (
            cairn_types::ErrorCode::UriTooLong,
            "URI Too Long",
            "the request URI is longer than 65534 bytes; send long filters in a body",
        ),
        b"431" => (
            cairn_types::ErrorCode::HeadersTooLarge,
            "Request Header Fields Too Large",
            "the request head is larger than the node accepts (about 400 KiB)",
        ),
        _ => return None,
    };
    let body = serde_json::json!({"code": code.as_str(), "message": message}).to_string();
    Some(
        format!(
            "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            code.http_status(),
            body.len()
        )
        .into_bytes(),
    )
}

impl<S> Watched<S> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_hypers_empty_414_when_checked_then_json_answer() {
        let head = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let answer = String::from_utf8(automatic_answer(head).unwrap()).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 414 URI Too Long\r\n"),
            "{answer}"
        );
        let body = answer.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "uri_too_long");
    }

    #[test]
    fn given_handler_answers_with_a_body_when_checked_then_left_alone() {
        let head = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 42\r\n\r\n";
        assert!(automatic_answer(head).is_none());
        assert!(automatic_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
    }
}
