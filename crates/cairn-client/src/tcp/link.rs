//! One producer connection that reopens itself: the [`Link`] under
//! [`super::TcpProducer`] and under each of its per-node routes.
//!
//! A link owns one TCP (or TLS) connection at a time and two tasks: a
//! writer that sends queued request frames (many per flush when callers are
//! concurrent) and a reader that hands each response to the call waiting on
//! its correlation id. When the connection ends every waiting call fails
//! with [`TcpError::Closed`]; with [`TcpOptions::reconnect`] the next call
//! opens a new connection, trying the link's addresses in turn from the one
//! after the address that failed, backing off (50 ms doubling to 2 s) after
//! a failed attempt. Calls made during the back-off fail at once, before
//! anything is sent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cairn_types::protocol::{self, Op, Response, ResponseBody};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use super::{TcpError, TcpOptions};

type Reply = oneshot::Sender<Result<ResponseBody, TcpError>>;

/// Calls waiting for an answer, and why the connection ended, if it has.
#[derive(Debug, Default)]
struct State {
    pending: HashMap<u64, Reply>,
    closed: Option<String>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves a consistent map behind.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the connection for every waiting and future call (the first
    /// reason wins).
    fn close(&self, reason: String) {
        let pending = {
            let mut st = self.state();
            st.closed.get_or_insert(reason);
            std::mem::take(&mut st.pending)
        };
        let reason = self.state().closed.clone().unwrap_or_default();
        for (_, reply) in pending {
            let _ = reply.send(Err(TcpError::Closed(reason.clone())));
        }
    }
}

/// One connection: its writer's queue and the calls waiting on it.
#[derive(Debug)]
pub(super) struct Connection {
    frames: mpsc::Sender<Bytes>,
    shared: Arc<Shared>,
    peer: SocketAddr,
    /// Index of the address it was opened to.
    addr: usize,
}

impl Connection {
    fn closed(&self) -> Option<String> {
        self.shared.state().closed.clone()
    }
}

/// When the next reconnection may be tried, after failed ones.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    not_before: Option<tokio::time::Instant>,
    last_error: String,
}

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Connections to a list of addresses, one open at a time (see the
/// module docs). Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub(super) struct Link {
    conn: Arc<Mutex<Arc<Connection>>>,
    /// Held by the one caller that reconnects.
    reconnecting: Arc<tokio::sync::Mutex<Backoff>>,
    addrs: Arc<Vec<String>>,
    /// Shared by every link of a producer, so ids stay unique in its logs.
    next_id: Arc<AtomicU64>,
    options: Arc<TcpOptions>,
}

fn codec(max_frame_length: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(protocol::LENGTH_PREFIX_LEN)
        .little_endian()
        .max_frame_length(max_frame_length)
        .new_codec()
}

/// Request frames queued for the writer; callers wait here when the
/// connection is slower than they are.
const QUEUED_FRAMES: usize = 1024;
/// At most this many frames are written before one flush.
const MAX_FRAMES_PER_FLUSH: usize = 128;

impl Link {
    /// Connects to the first of `addrs` that answers.
    pub(super) async fn connect_any(
        addrs: Vec<String>,
        options: Arc<TcpOptions>,
        next_id: Arc<AtomicU64>,
    ) -> Result<Link, TcpError> {
        if addrs.is_empty() {
            return Err(TcpError::Invalid("no address to connect to".into()));
        }
        let mut last = None;
        for i in 0..addrs.len() {
            match open(&addrs[i], i, &options, &next_id).await {
                Ok(conn) => {
                    return Ok(Link {
                        conn: Arc::new(Mutex::new(Arc::new(conn))),
                        reconnecting: Arc::default(),
                        addrs: Arc::new(addrs),
                        next_id,
                        options,
                    });
                }
                // A refusal (bad token) is the same on every node.
                Err(e @ TcpError::Api { .. }) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one address was tried"))
    }

    pub(super) fn peer_addr(&self) -> SocketAddr {
        self.current().peer
    }

    fn current(&self) -> Arc<Connection> {
        self.conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The open connection, reconnecting first if it has ended (see the
    /// module docs). An error here means nothing was sent.
    pub(super) async fn connection(&self) -> Result<Arc<Connection>, TcpError> {
        let conn = self.current();
        let Some(reason) = conn.closed() else {
            return Ok(conn);
        };
        if !self.options.reconnect {
            return Err(TcpError::Closed(reason));
        }
        let mut backoff = self.reconnecting.lock().await;
        // Someone else may have reconnected while this call waited.
        let conn = self.current();
        if conn.closed().is_none() {
            return Ok(conn);
        }
        if let Some(at) = backoff.not_before
            && tokio::time::Instant::now() < at
        {
            return Err(TcpError::Closed(format!(
                "{reason}; reconnecting: {}",
                backoff.last_error
            )));
        }
        let n = self.addrs.len();
        let mut last = String::new();
        for k in 1..=n {
            let i = (conn.addr + k) % n;
            match open(&self.addrs[i], i, &self.options, &self.next_id).await {
                Ok(fresh) => {
                    let fresh = Arc::new(fresh);
                    *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = fresh.clone();
                    *backoff = Backoff::default();
                    return Ok(fresh);
                }
                Err(e @ TcpError::Api { .. }) => return Err(e),
                Err(e) => last = e.to_string(),
            }
        }
        backoff.failures += 1;
        let delay = BACKOFF_MIN
            .saturating_mul(1 << backoff.failures.min(6))
            .min(BACKOFF_MAX);
        backoff.not_before = Some(tokio::time::Instant::now() + delay);
        backoff.last_error = last.clone();
        Err(TcpError::Closed(format!(
            "{reason}; reconnecting failed: {last}"
        )))
    }

    /// Sends one request and waits for its answer; an ERROR answer
    /// becomes [`TcpError::Api`].
    pub(super) async fn call(
        &self,
        op: Op,
        stream: &str,
        payload: &[u8],
    ) -> Result<ResponseBody, TcpError> {
        let conn = self.connection().await?;
        self.call_on(&conn, op, stream, payload).await
    }

    /// [`Link::call`] on a connection already taken from
    /// [`Link::connection`].
    pub(super) async fn call_on(
        &self,
        conn: &Connection,
        op: Op,
        stream: &str,
        payload: &[u8],
    ) -> Result<ResponseBody, TcpError> {
        call_on(conn, &self.next_id, &self.options, op, stream, payload).await
    }
}

/// Opens one connection to `addr` (number `index` of the producer's) and
/// authenticates it when a token is set.
async fn open(
    addr: &str,
    index: usize,
    options: &TcpOptions,
    next_id: &AtomicU64,
) -> Result<Connection, TcpError> {
    let failed = |source| TcpError::Connect {
        addr: addr.to_string(),
        source,
    };
    let socket = tokio::time::timeout(options.connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| failed(std::io::ErrorKind::TimedOut.into()))?
        .map_err(failed)?;
    // Requests are latency-bound and already batched by the writer.
    socket.set_nodelay(true).map_err(failed)?;
    let peer = socket.peer_addr().map_err(failed)?;
    let (read_half, write_half): (BoxRead, BoxWrite) = match &options.tls {
        None => {
            let (r, w) = socket.into_split();
            (Box::new(r), Box::new(w))
        }
        Some(config) => {
            let name = crate::tls::server_name(addr).ok_or_else(|| {
                failed(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{addr} has no host usable as a TLS server name"),
                ))
            })?;
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            let tls = tokio::time::timeout(options.connect_timeout, connector.connect(name, socket))
                .await
                .map_err(|_| failed(std::io::ErrorKind::TimedOut.into()))?
                .map_err(|e| {
                    failed(std::io::Error::new(
                        e.kind(),
                        format!("TLS handshake: {e} (does the node have TLS on, with a certificate for this address signed by the CA given?)"),
                    ))
                })?;
            let (r, w) = tokio::io::split(tls);
            (Box::new(r), Box::new(w))
        }
    };
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
    });
    let (frames, queued) = mpsc::channel(QUEUED_FRAMES);
    tokio::spawn(write_requests(
        write_half,
        queued,
        shared.clone(),
        options.max_frame_bytes,
    ));
    tokio::spawn(read_responses(read_half, shared.clone()));
    let conn = Connection {
        frames,
        shared,
        peer,
        addr: index,
    };
    if let Some(token) = &options.token {
        match call_on(&conn, next_id, options, Op::Auth, "", token.as_bytes()).await? {
            ResponseBody::Authenticated => {}
            other => return Err(TcpError::Unexpected(format!("{other:?} for an AUTH"))),
        }
    }
    Ok(conn)
}

/// Sends one request on `conn` and waits for its answer; an ERROR answer
/// becomes [`TcpError::Api`].
async fn call_on(
    conn: &Connection,
    next_id: &AtomicU64,
    options: &TcpOptions,
    op: Op,
    stream: &str,
    payload: &[u8],
) -> Result<ResponseBody, TcpError> {
    let id = next_id.fetch_add(1, Ordering::Relaxed);
    let mut frame = BytesMut::new();
    protocol::encode_request(id, op, stream, payload, &mut frame)
        .map_err(|e| TcpError::Invalid(e.reason))?;
    let max = options.max_frame_bytes;
    if frame.len() > max {
        return Err(TcpError::TooLarge {
            size: frame.len(),
            max,
        });
    }
    let (reply, answer) = oneshot::channel();
    {
        let mut st = conn.shared.state();
        if let Some(reason) = &st.closed {
            return Err(TcpError::Closed(reason.clone()));
        }
        st.pending.insert(id, reply);
    }
    // Whatever ends this call early (timeout, the caller dropping the
    // future) must not leave its entry behind.
    let guard = PendingGuard {
        shared: &conn.shared,
        id,
    };
    if conn.frames.send(frame.freeze()).await.is_err() {
        let reason = conn.shared.state().closed.clone();
        return Err(TcpError::Closed(
            reason.unwrap_or_else(|| "the writer stopped".into()),
        ));
    }
    let answer = match options.request_timeout {
        Some(t) => tokio::time::timeout(t, answer)
            .await
            .map_err(|_| TcpError::Timeout(t))?,
        None => answer.await,
    };
    drop(guard);
    let body = answer.map_err(|_| TcpError::Closed("the reader stopped".into()))??;
    match body {
        ResponseBody::Error { code, message, .. } => Err(TcpError::Api { code, message }),
        body => Ok(body),
    }
}

struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.state().pending.remove(&self.id);
    }
}

/// The connection's halves: tokio's owned halves of the socket, or of a
/// TLS session on it.
type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

async fn write_requests(
    socket: BoxWrite,
    mut queued: mpsc::Receiver<Bytes>,
    shared: Arc<Shared>,
    max_frame: usize,
) {
    let mut out = FramedWrite::new(socket, codec(max_frame));
    while let Some(frame) = queued.recv().await {
        let mut result = out.feed(frame).await;
        // Many callers at once: send what they queued with one flush.
        for _ in 1..MAX_FRAMES_PER_FLUSH {
            if result.is_err() {
                break;
            }
            let Ok(frame) = queued.try_recv() else { break };
            result = out.feed(frame).await;
        }
        if result.is_ok() {
            result = SinkExt::<Bytes>::flush(&mut out).await;
        }
        if let Err(e) = result {
            shared.close(format!("writing to the server failed: {e}"));
            return;
        }
    }
    // Every producer handle is gone: half-close, so the server answers
    // what it took and then closes, which ends the reader.
    let _ = out.into_inner().shutdown().await;
}

async fn read_responses(socket: BoxRead, shared: Arc<Shared>) {
    let mut frames = FramedRead::new(socket, codec(protocol::MAX_RESPONSE_FRAME_BYTES));
    let reason = loop {
        let frame = match frames.next().await {
            None => break "the server closed the connection".to_string(),
            Some(Err(e)) => break format!("reading from the server failed: {e}"),
            Some(Ok(frame)) => frame.freeze(),
        };
        let response = match Response::decode(frame) {
            Ok(r) => r,
            Err(e) => break format!("the server sent a malformed response: {}", e.reason),
        };
        if response.correlation_id == 0 {
            break match response.body {
                ResponseBody::Error { code, message, .. } => {
                    format!("the server closed the connection: {code}: {message}")
                }
                other => format!("the server sent {other:?} with correlation id 0"),
            };
        }
        let reply = shared.state().pending.remove(&response.correlation_id);
        // No one waiting: that call timed out or was dropped.
        if let Some(reply) = reply {
            let _ = reply.send(Ok(response.body));
        }
    };
    shared.close(reason);
}
