//! [`TcpProducer`]: appends over the binary ingest protocol
//! (`cairn_types::protocol`), many requests in flight on one connection.
//!
//! A producer owns one TCP connection and two tasks: a writer that sends
//! queued request frames (many per flush when callers are concurrent) and
//! a reader that decodes responses and hands each to the caller waiting on
//! its correlation id. Clones share the connection, so any number of tasks
//! can append at once; answers may arrive in any order.
//!
//! When the connection ends — the server closed it, a read or write
//! failed, the server sent a connection-level error — every waiting call
//! fails with [`TcpError::Closed`] carrying the reason: whether such an
//! append was stored is unknown, and only the caller can decide whether to
//! retry it. The producer itself never resends anything. With
//! [`TcpOptions::reconnect`] (the default) the next call opens a new
//! connection, trying the producer's addresses in turn from the one after
//! the address that failed (any node routes writes, so this re-routes
//! around a dead node) and presenting the token again; a failed attempt
//! backs off (50 ms doubling to 2 s), and calls made during the back-off
//! fail at once instead of queueing behind it.
//!
//! Must be used inside a tokio runtime. Dropping the last clone closes the
//! connection once the server has answered what it already took.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cairn_types::protocol::{self, Op, Response, ResponseBody};
use cairn_types::{
    Attributes, BatchBuilder, BatchError, EntryRef, ErrorCode, NewEntry, RecordBatch,
};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::types::{AppendResponse, PartitionAppend};

/// Why a binary-protocol call failed.
#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The server refused or failed the request; the code is the same the
    /// HTTP API would have used.
    #[error("{code}: {message}")]
    Api { code: ErrorCode, message: String },
    /// The connection is gone; the request may or may not have been
    /// carried out.
    #[error("connection closed: {0}")]
    Closed(String),
    /// No answer in time; the request may still be carried out.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Refused before sending: the frame would exceed the limit.
    #[error("the request is {size} bytes; the frame limit is {max}")]
    TooLarge { size: usize, max: usize },
    /// Refused before sending: the entries cannot be encoded.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The server answered with something that does not fit the request.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

impl TcpError {
    /// The server's error code, when the server answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            TcpError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Settings of a [`TcpProducer`].
#[derive(Debug, Clone)]
pub struct TcpOptions {
    /// Largest request frame sent; bigger requests fail with
    /// [`TcpError::TooLarge`] before they are sent (a frame over the
    /// server's limit would close the connection for everyone on it).
    /// The default matches a node's default `--max-body-bytes`.
    pub max_frame_bytes: usize,
    /// How long a call waits for its answer; `None`: forever.
    pub request_timeout: Option<Duration>,
    pub connect_timeout: Duration,
    /// Sent in an AUTH frame before anything else when set (a node with a
    /// token file answers nothing else first).
    pub token: Option<String>,
    /// Open a new connection for the next call once this one ended.
    pub reconnect: bool,
    /// Speak TLS, trusting this config's roots (see
    /// [`crate::tls::client_config`]); the server's certificate must name
    /// the host (IP or name) of the address dialed. `None`: plaintext.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for TcpOptions {
    fn default() -> Self {
        TcpOptions {
            max_frame_bytes: protocol::DEFAULT_MAX_FRAME_BYTES,
            request_timeout: Some(Duration::from_secs(60)),
            connect_timeout: Duration::from_secs(10),
            token: None,
            reconnect: true,
            tls: None,
        }
    }
}

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
struct Connection {
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

/// A pipelined binary-protocol producer on one connection at a time.
/// Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct TcpProducer {
    conn: Arc<Mutex<Arc<Connection>>>,
    /// Held by the one caller that reconnects.
    reconnecting: Arc<tokio::sync::Mutex<Backoff>>,
    addrs: Arc<Vec<String>>,
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

impl TcpProducer {
    /// Connects with default options.
    pub async fn connect(addr: impl ToSocketAddrs + std::fmt::Display) -> Result<Self, TcpError> {
        Self::connect_with(addr, TcpOptions::default()).await
    }

    pub async fn connect_with(
        addr: impl ToSocketAddrs + std::fmt::Display,
        options: TcpOptions,
    ) -> Result<Self, TcpError> {
        Self::connect_any(vec![addr.to_string()], options).await
    }

    /// Connects to the first of `addrs` (`host:port` of the nodes' binary
    /// protocol) that answers; reconnections go round the others.
    pub async fn connect_any(addrs: Vec<String>, options: TcpOptions) -> Result<Self, TcpError> {
        if addrs.is_empty() {
            return Err(TcpError::Invalid("no address to connect to".into()));
        }
        let mut last = None;
        for i in 0..addrs.len() {
            match open(&addrs[i], i, &options, &AtomicU64::new(1)).await {
                Ok(conn) => {
                    return Ok(TcpProducer {
                        conn: Arc::new(Mutex::new(Arc::new(conn))),
                        reconnecting: Arc::default(),
                        addrs: Arc::new(addrs),
                        // Ids restart per connection is fine, but one
                        // sequence for the producer keeps logs readable.
                        next_id: Arc::new(AtomicU64::new(2)),
                        options: Arc::new(options),
                    });
                }
                // A refusal (bad token) is the same on every node.
                Err(e @ TcpError::Api { .. }) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one address was tried"))
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.current().peer
    }

    fn current(&self) -> Arc<Connection> {
        self.conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The open connection, reconnecting first if it has ended (see the
    /// module docs).
    async fn connection(&self) -> Result<Arc<Connection>, TcpError> {
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

    /// Appends entries as one record batch. Missing timestamps are filled
    /// in with this machine's clock (the batch format has no "absent"),
    /// missing levels with `INFO`. All entries are validated by the server
    /// before any is stored.
    pub async fn append(
        &self,
        stream: &str,
        entries: &[NewEntry],
    ) -> Result<AppendResponse, TcpError> {
        let batch = encode_entries(entries)?;
        self.append_batch(stream, &batch).await
    }

    /// Appends a batch built with [`BatchBuilder`] (offsets unassigned).
    pub async fn append_batch(
        &self,
        stream: &str,
        batch: &RecordBatch,
    ) -> Result<AppendResponse, TcpError> {
        match self.call(Op::Append, stream, batch.as_bytes()).await? {
            ResponseBody::Appended(parts) => Ok(AppendResponse {
                appended: parts.iter().map(|p| u64::from(p.count)).sum(),
                partitions: parts
                    .into_iter()
                    .map(|p| PartitionAppend {
                        partition: p.partition,
                        base_offset: p.base_offset,
                        count: p.count,
                    })
                    .collect(),
            }),
            other => Err(TcpError::Unexpected(format!("{other:?} for an APPEND"))),
        }
    }

    /// A round trip to the server.
    pub async fn ping(&self) -> Result<(), TcpError> {
        match self.call(Op::Ping, "", &[]).await? {
            ResponseBody::Pong => Ok(()),
            other => Err(TcpError::Unexpected(format!("{other:?} for a PING"))),
        }
    }

    /// The partition count of `stream` (fails with `stream_not_found`).
    pub async fn partitions(&self, stream: &str) -> Result<u32, TcpError> {
        match self.call(Op::Metadata, stream, &[]).await? {
            ResponseBody::Metadata { partitions } => Ok(partitions),
            other => Err(TcpError::Unexpected(format!("{other:?} for a METADATA"))),
        }
    }

    /// Reads up to `limit` committed entries of one partition from
    /// `offset` (default: its start), from the replica `consistency` asks
    /// for; any node routes the read (see the protocol's READ).
    pub async fn read(
        &self,
        stream: &str,
        partition: u32,
        offset: Option<u64>,
        limit: u32,
        consistency: crate::types::Consistency,
    ) -> Result<crate::types::ReadResponse, TcpError> {
        let request = protocol::ReadRequest {
            partition,
            offset,
            limit,
            consistency,
        };
        let answer = match self.call(Op::Read, stream, &request.encode()).await? {
            ResponseBody::Read(answer) => answer,
            other => return Err(TcpError::Unexpected(format!("{other:?} for a READ"))),
        };
        let mut entries = Vec::new();
        if let Some(batch) = &answer.batch {
            for item in batch.entries() {
                let (offset, entry) = item.map_err(|e| {
                    TcpError::Unexpected(format!("a READ answer's entry does not decode: {e}"))
                })?;
                entries.push(crate::types::OffsetEntry {
                    offset,
                    entry: entry.to_owned(),
                });
            }
        }
        Ok(crate::types::ReadResponse {
            entries,
            next_offset: answer.next_offset,
            start_offset: answer.start_offset,
            end_offset: answer.end_offset,
            served_by: answer.served_by,
            from_leader: answer.from_leader,
            lag_entries: answer.lag_entries,
        })
    }

    /// Sends one request and waits for its answer; an ERROR answer
    /// becomes [`TcpError::Api`].
    async fn call(&self, op: Op, stream: &str, payload: &[u8]) -> Result<ResponseBody, TcpError> {
        let conn = self.connection().await?;
        call_on(&conn, &self.next_id, &self.options, op, stream, payload).await
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

/// Encodes entries into one batch, filling in what the producer left out.
pub fn encode_entries(entries: &[NewEntry]) -> Result<RecordBatch, TcpError> {
    let now = cairn_types::clock::unix_us();
    let size: usize = entries
        .iter()
        .map(|e| 16 + e.source.len() + e.message.len())
        .sum();
    let mut builder = BatchBuilder::with_capacity(size);
    for e in entries {
        builder
            .push_ref(&EntryRef {
                timestamp_us: e.timestamp.unwrap_or(now),
                level: e.level.unwrap_or_default(),
                source: &e.source,
                message: &e.message,
                attributes: Attributes::Borrowed(&e.attributes),
            })
            .map_err(|e| match e {
                BatchError::TooLarge => TcpError::TooLarge {
                    size: cairn_types::batch::MAX_BATCH_LEN + 1,
                    max: cairn_types::batch::MAX_BATCH_LEN,
                },
                other => TcpError::Invalid(other.to_string()),
            })?;
    }
    Ok(builder.finish())
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

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_types::Level;

    #[test]
    fn entries_get_defaults_when_encoded() {
        let entries = vec![
            NewEntry {
                timestamp: Some(5),
                level: Some(Level::Error),
                source: "a".into(),
                message: "x".into(),
                attributes: [("k".to_string(), "v".to_string())].into(),
            },
            NewEntry {
                timestamp: None,
                level: None,
                source: "b".into(),
                message: "y".into(),
                attributes: Default::default(),
            },
        ];
        let batch = encode_entries(&entries).unwrap();
        batch.validate_entries().unwrap();
        let got: Vec<_> = batch.entries().map(|r| r.unwrap().1.to_owned()).collect();
        assert_eq!((got[0].timestamp_us, got[0].level), (5, Level::Error));
        assert_eq!(got[0].attributes["k"], "v");
        assert_eq!(got[1].level, Level::Info);
        assert!(
            got[1].timestamp_us > 1_600_000_000_000_000,
            "filled with now"
        );
    }
}
