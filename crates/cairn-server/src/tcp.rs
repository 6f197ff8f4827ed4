//! The binary ingest API: `cairn_types::protocol` over framed TCP.
//!
//! Per connection, three kinds of task:
//!
//! - the **reader** (the connection's own task) reads frames, decodes each
//!   request and spawns a handler for it. It takes an in-flight permit
//!   first, so once [`MAX_IN_FLIGHT_PER_CONNECTION`] requests are being
//!   handled it stops reading: the socket's buffers fill and the producer
//!   is pushed back by TCP itself, instead of the node queueing unbounded
//!   work;
//! - **handlers**, one per request, run concurrently: an APPEND is decoded
//!   (CRC, structure, limits) and handed to [`Node::append_entries`], the
//!   write path shared with HTTP; a READ goes to [`crate::read`], the read
//!   path shared with HTTP; each handler queues its encoded response
//!   and only then returns its permit;
//! - the **writer** sends responses in completion order (clients match
//!   them by correlation id), gathering whatever is queued into one flush.
//!
//! An AUTH frame is answered by the reader itself, before it reads on, so
//! the requests after it are judged by its outcome (see
//! `cairn_types::protocol` and [`crate::auth`]).
//!
//! A malformed frame with a readable correlation id is answered with an
//! error and the connection goes on. Anything that leaves the byte stream
//! out of step — a frame over the size limit, one too short to carry an
//! id — is answered with a connection-level error (correlation id 0), the
//! reason is logged, and the connection closes once its in-flight requests
//! are answered.
//!
//! Shutdown: the accept loop stops, every reader stops reading, in-flight
//! requests finish and their responses are written, then the sockets
//! close. Requests still unread in a socket's buffer are not answered;
//! the producer sees the connection close and knows they were not taken.
//!
//! Bounds (see [`crate::limits`]): a connection over the listener's caps
//! gets an ERROR `unavailable` (correlation id 0) and is closed, without
//! a task of its own. Frames are read by [`crate::frames`], which holds
//! only what has arrived and charges it to the node's receive budget; a
//! request keeps its charge until it is answered. A frame that does not
//! arrive whole within the frame timeout, or cannot get budget, closes the
//! connection with an ERROR `request_timeout` or `unavailable`; a
//! connection with nothing in flight and no frame for the idle timeout is
//! closed without one, and so is one whose client has not read its
//! answers for the frame timeout (its requests would hold their budget).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_cluster::tls::{self, WriteHalf};
use cairn_telemetry::metrics::{Api, Operation, WriteStage};
use cairn_types::ErrorCode;
use cairn_types::protocol::{
    self, AppendedPartition, Leaders, MalformedFrame, Op, Request, RequestBody, Response,
    ResponseBody,
};
use futures::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::codec::{FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Role, Verdict};
use crate::error::ApiError;
use crate::frames::{FrameReader, ReadError};
use crate::ingest;
use crate::limits::{Charge, Closed, ConnectionPermit, Refusal};
use crate::node::Node;
use crate::tls::NotTls;

/// Requests of one connection handled at once; beyond it the reader
/// stops reading. Enough to keep the storage writer's commit groups full
/// from one producer (group commit needs many appends in flight).
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 256;
/// APPEND payloads larger than this are decoded on the blocking pool.
const INLINE_DECODE_MAX_BYTES: usize = 64 * 1024;
/// At most this many queued responses are written before one flush.
const MAX_RESPONSES_PER_FLUSH: usize = 128;
/// Error messages are cut to this, so a response always fits a frame.
const MAX_ERROR_MESSAGE_BYTES: usize = 16 * 1024;

/// The length-prefix codec of both directions; see `cairn_types::protocol`.
pub fn codec(max_frame_length: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(protocol::LENGTH_PREFIX_LEN)
        .little_endian()
        .max_frame_length(max_frame_length)
        .new_codec()
}

/// Accepts connections until `stop` is cancelled, then waits for every
/// connection to finish its in-flight requests.
pub async fn serve(node: Node, listener: TcpListener, stop: CancellationToken) {
    let addr = listener.local_addr().ok();
    tracing::info!(?addr, "serving the binary protocol");
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((socket, peer)) => match node.guards().tcp.admit(peer.ip()) {
                Ok(permit) => {
                    connections.spawn(connection(node.clone(), socket, peer, stop.clone(), permit));
                }
                Err(reason) => {
                    let gate = &node.guards().tcp;
                    gate.refuse(
                        socket,
                        reason,
                        refusal_frame(reason, gate.max(), gate.max_per_ip()),
                    );
                }
            },
            Err(e) => {
                // Usually out of file descriptors: wait for some to close
                // rather than spin on the error.
                tracing::warn!(error = %e, "accepting a binary-protocol connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    connections.close();
    tracing::info!(
        open = connections.len(),
        "binary protocol: no longer accepting; finishing in-flight requests"
    );
    connections.wait().await;
}

/// The ERROR frame (correlation id 0, length prefix included) that
/// answers a connection refused for `reason`.
pub fn refusal_frame(reason: Refusal, max: usize, max_per_ip: usize) -> Vec<u8> {
    let message = match reason {
        Refusal::Connections => format!(
            "the node holds its maximum of {max} binary-protocol connections \
             (--max-connections); retry later or use another node"
        ),
        Refusal::PerIp => format!(
            "this address holds the maximum of {max_per_ip} binary-protocol connections \
             (--max-connections-per-ip); close some or retry later"
        ),
        Refusal::Descriptors => {
            "the node is short of file descriptors; retry later or use another node".to_string()
        }
    };
    let frame = Response::error(0, None, ErrorCode::Unavailable, message).encode();
    let mut out = Vec::with_capacity(protocol::LENGTH_PREFIX_LEN + frame.len());
    out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    out.extend_from_slice(&frame);
    out
}

/// The ERROR frame (correlation id 0, length prefix included) that
/// answers a plaintext client of a TLS listener.
fn plaintext_frame() -> Vec<u8> {
    let frame = Response::error(
        0,
        None,
        ErrorCode::BadRequest,
        "this node requires TLS on the binary protocol: connect with TLS (--tls-ca)".to_string(),
    )
    .encode();
    let mut out = Vec::with_capacity(protocol::LENGTH_PREFIX_LEN + frame.len());
    out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    out.extend_from_slice(&frame);
    out
}

/// Why a connection stops reading.
enum Close {
    /// The producer closed its side, or the node is shutting down.
    Quiet,
    /// The stream is out of step: answer with a connection-level error.
    Error(ErrorCode, String),
    /// Credentials were refused (the refusal is already answered).
    Refused(String),
    /// A limit closes it (counted), with a connection-level error or not.
    Limit(Closed, Option<(ErrorCode, String)>),
}

/// Answers an AUTH; on success `accepted` holds the token for the
/// connection's later requests. A refusal closes the connection.
fn authenticate(
    node: &Node,
    id: u64,
    token: &[u8],
    accepted: &mut Option<Vec<u8>>,
) -> (Response, Option<Close>) {
    let access = &node.config().access;
    match access.check(Some(token), Some(Role::Read)) {
        Verdict::Allowed => {
            *accepted = Some(token.to_vec());
            (
                Response {
                    correlation_id: id,
                    body: ResponseBody::Authenticated,
                },
                None,
            )
        }
        // Every known token has at least `read`: only an unknown one is here.
        Verdict::Unauthenticated | Verdict::Forbidden { .. } => {
            node.telemetry()
                .metrics
                .count_error(ErrorCode::Unauthorized);
            let message = "unknown token".to_string();
            (
                Response::error(id, Some(Op::Auth), ErrorCode::Unauthorized, message.clone()),
                Some(Close::Refused(message)),
            )
        }
    }
}

async fn connection(
    node: Node,
    socket: TcpStream,
    peer: SocketAddr,
    stop: CancellationToken,
    permit: ConnectionPermit,
) {
    // Responses are small and latency-bound: never wait for Nagle.
    let _ = socket.set_nodelay(true);
    let max_frame = node.config().max_body_bytes + protocol::REQUEST_OVERHEAD;
    let guards = node.guards().clone();
    let (read_half, write_half) = match node.tls_acceptor() {
        None => tls::split_plain(socket),
        Some(acceptor) => {
            // The handshake is held to the frame timeout, as a frame is.
            match crate::tls::accept(&acceptor, socket, guards.limits.tcp_frame_timeout).await {
                Ok(s) => tls::split_tls(tokio_rustls::TlsStream::Server(s)),
                Err(NotTls::Plaintext(socket)) => {
                    crate::tls::answer_plaintext(socket, &plaintext_frame()).await;
                    return;
                }
                Err(NotTls::Failed(e)) => {
                    tracing::debug!(%peer, error = %e, "binary-protocol TLS handshake failed");
                    return;
                }
            }
        }
    };
    let idle_timeout = guards.limits.tcp_idle_timeout;
    let mut frames = FrameReader::new(
        read_half,
        max_frame,
        guards.limits.tcp_frame_timeout,
        guards.clone(),
    );
    let (responses, queued) = mpsc::channel::<Bytes>(MAX_IN_FLIGHT_PER_CONNECTION);
    // Cancelled by the writer when the client stops reading its answers.
    let stalled = CancellationToken::new();
    let writer = tokio::spawn(write_responses(
        write_half,
        queued,
        peer,
        node.guards().limits.tcp_frame_timeout,
        stalled.clone(),
    ));
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT_PER_CONNECTION));
    let handlers = TaskTracker::new();
    let metrics = &node.telemetry().metrics;
    // The token an AUTH on this connection presented, once accepted.
    let mut accepted_token: Option<Vec<u8>> = None;
    tracing::debug!(%peer, "binary-protocol connection opened");

    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle);
    let close = loop {
        idle.as_mut()
            .reset(tokio::time::Instant::now() + idle_timeout);
        let frame = tokio::select! {
            // Shutdown wins over reading more: what is read gets answered.
            biased;
            _ = stop.cancelled() => break Close::Quiet,
            _ = stalled.cancelled() => break Close::Limit(Closed::WriteStalled, None),
            frame = frames.next() => frame,
            _ = &mut idle => {
                if frames.idle()
                    && permits.available_permits() == MAX_IN_FLIGHT_PER_CONNECTION
                {
                    break Close::Limit(Closed::IdleTimeout, None);
                }
                // Busy: judge again after another idle period.
                continue;
            }
        };
        let (frame, charge) = match frame {
            Ok(None) => break Close::Quiet,
            Ok(Some(f)) => (f.bytes, f.charge),
            Err(ReadError::TooLarge { .. }) => {
                break Close::Error(
                    ErrorCode::PayloadTooLarge,
                    format!("a frame exceeds the {max_frame}-byte limit"),
                );
            }
            Err(e @ ReadError::Timeout(_)) => {
                break Close::Limit(
                    Closed::FrameTimeout,
                    Some((
                        ErrorCode::RequestTimeout,
                        format!("{e} (--tcp-frame-timeout)"),
                    )),
                );
            }
            Err(ReadError::Budget(e)) => {
                break Close::Limit(
                    Closed::Budget,
                    Some((ErrorCode::Unavailable, format!("{e}; retry later"))),
                );
            }
            Err(ReadError::Io(e)) => {
                tracing::debug!(%peer, error = %e, "binary-protocol connection failed");
                break Close::Quiet;
            }
        };
        let permit = tokio::select! {
            biased;
            _ = stop.cancelled() => break Close::Quiet,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        match Request::decode(frame) {
            Ok(Request {
                correlation_id: id,
                body: RequestBody::Auth { token },
            }) => {
                // Inline, not in a handler: the requests read after it must
                // see its outcome.
                let (response, verdict) = authenticate(&node, id, &token, &mut accepted_token);
                let _ = responses.send(response.encode()).await;
                drop(permit);
                if let Some(close) = verdict {
                    break close;
                }
            }
            Ok(request) => {
                let access = &node.config().access;
                let needed = match request.body.op() {
                    Op::Append => Role::Write,
                    _ => Role::Read,
                };
                match access.check(accepted_token.as_deref(), Some(needed)) {
                    Verdict::Allowed => {
                        handlers.spawn(handle(
                            node.clone(),
                            request,
                            responses.clone(),
                            permit,
                            charge,
                        ));
                    }
                    Verdict::Unauthenticated => {
                        let message = "send an AUTH frame with a valid token first".to_string();
                        metrics.count_error(ErrorCode::Unauthorized);
                        let response = Response::error(
                            request.correlation_id,
                            Some(request.body.op()),
                            ErrorCode::Unauthorized,
                            message.clone(),
                        );
                        let _ = responses.send(response.encode()).await;
                        break Close::Refused(message);
                    }
                    Verdict::Forbidden { role, needed } => {
                        metrics.count_error(ErrorCode::Forbidden);
                        let op = request.body.op();
                        let response = Response::error(
                            request.correlation_id,
                            Some(op),
                            ErrorCode::Forbidden,
                            format!(
                                "{} needs the {needed} role; this token has {role}",
                                op.as_str()
                            ),
                        );
                        let _ = responses.send(response.encode()).await;
                    }
                }
            }
            Err(MalformedFrame {
                correlation_id: Some(id),
                reason,
            }) => {
                metrics.count_error(ErrorCode::BadRequest);
                tracing::debug!(%peer, correlation_id = id, %reason, "malformed request");
                let response = Response::error(id, None, ErrorCode::BadRequest, reason);
                let _ = responses.send(response.encode()).await;
            }
            Err(MalformedFrame { reason, .. }) => {
                break Close::Error(ErrorCode::BadRequest, reason);
            }
        }
    };
    // Stop reading; what was taken is still answered.
    drop(frames);
    handlers.close();
    handlers.wait().await;
    match close {
        Close::Error(code, reason) => {
            metrics.count_error(code);
            tracing::warn!(%peer, code = %code, %reason, "closing binary-protocol connection");
            let response = Response::error(0, None, code, reason);
            let _ = responses.send(response.encode()).await;
        }
        Close::Refused(reason) => {
            tracing::warn!(%peer, %reason, "binary-protocol credentials refused; closing");
        }
        Close::Limit(reason, answer) => {
            permit.gate().count_closed(reason);
            tracing::debug!(%peer, reason = reason.as_str(), "closing binary-protocol connection for a limit");
            if let Some((code, message)) = answer {
                metrics.count_error(code);
                let response = Response::error(0, None, code, message);
                let _ = responses.send(response.encode()).await;
            }
        }
        Close::Quiet => {}
    }
    drop(responses);
    let _ = writer.await;
    drop(permit);
    tracing::debug!(%peer, "binary-protocol connection closed");
}

/// Writes responses as they are queued; ends when every sender is gone
/// (the reader and all handlers are done), then closes the socket.
async fn write_responses(
    socket: WriteHalf,
    mut queued: mpsc::Receiver<Bytes>,
    peer: SocketAddr,
    stall: Duration,
    stalled: CancellationToken,
) {
    let mut out = FramedWrite::new(socket, codec(protocol::MAX_RESPONSE_FRAME_BYTES));
    while let Some(frame) = queued.recv().await {
        let written = tokio::time::timeout(stall, async {
            let mut result = out.feed(frame).await;
            // Gather what else is ready: one flush (one syscall) for many
            // pipelined answers.
            for _ in 1..MAX_RESPONSES_PER_FLUSH {
                let Ok(frame) = queued.try_recv() else { break };
                if result.is_err() {
                    break;
                }
                result = out.feed(frame).await;
            }
            if result.is_ok() {
                result = SinkExt::<Bytes>::flush(&mut out).await;
            }
            result
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // The producer is gone; handlers' sends now fail and they stop.
                tracing::debug!(%peer, error = %e, "writing binary-protocol responses failed");
                return;
            }
            Err(_) => {
                // A client that does not read its answers would hold its
                // requests (and their receive budget) for ever.
                tracing::debug!(%peer, ?stall, "binary-protocol client stopped reading; closing");
                stalled.cancel();
                return;
            }
        }
    }
    let _ = out.into_inner().shutdown().await;
}

/// Answers one request; `charge` (the frame's receive budget) is held
/// until the answer is queued.
async fn handle(
    node: Node,
    request: Request,
    responses: mpsc::Sender<Bytes>,
    permit: OwnedSemaphorePermit,
    charge: Charge,
) {
    let metrics = &node.telemetry().metrics;
    let started = metrics.start_timer();
    let op = request.body.op();
    let _in_flight =
        matches!(request.body, RequestBody::Append { .. }).then(|| metrics.write_in_flight());
    let id = request.correlation_id;
    let result = process(&node, request.body).await;
    let encoding = metrics.start_timer();
    let ok = result.is_ok();
    let response = match result {
        Ok(body) => Response {
            correlation_id: id,
            body,
        },
        Err(e) => {
            metrics.count_error(e.code);
            if e.code.http_status() >= 500 {
                tracing::error!(code = %e.code, message = %e.message, "binary request failed");
            } else {
                tracing::debug!(code = %e.code, message = %e.message, "binary request rejected");
            }
            Response::error(id, Some(op), e.code, truncate(e.message))
        }
    };
    let _ = responses.send(response.encode()).await;
    if let (true, Op::Append, Some(started), Some(encoding)) = (ok, op, started, encoding) {
        metrics.record_write(WriteStage::Respond, encoding.elapsed());
        metrics.record_write(WriteStage::Total, started.elapsed());
    }
    drop(charge);
    drop(permit);
}

fn truncate(mut message: String) -> String {
    if message.len() > MAX_ERROR_MESSAGE_BYTES {
        let mut end = MAX_ERROR_MESSAGE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    message
}

async fn process(node: &Node, body: RequestBody) -> Result<ResponseBody, ApiError> {
    let metrics = &node.telemetry().metrics;
    match body {
        RequestBody::Ping => {
            metrics.count_request(Api::Tcp, Operation::Admin);
            Ok(ResponseBody::Pong)
        }
        RequestBody::Metadata { stream, leaders } => {
            metrics.count_request(Api::Tcp, Operation::Admin);
            let meta = crate::streams::lookup(node.cluster(), &stream)?;
            let cluster = node.cluster();
            let leaders = leaders.then(|| Leaders {
                node: cluster.node_id(),
                by_partition: meta
                    .partitions
                    .iter()
                    .map(|p| cluster.leader_hint(p.group).unwrap_or(0))
                    .collect(),
            });
            Ok(ResponseBody::Metadata {
                partitions: meta.partitions.len() as u32,
                leaders,
            })
        }
        RequestBody::Read { stream, read } => {
            let response = crate::read::read_partition(
                node,
                Api::Tcp,
                &stream,
                read.partition,
                read.offset,
                Some(read.limit as usize),
                read.consistency,
            )
            .await?;
            Ok(ResponseBody::Read(crate::read::to_answer(response)?))
        }
        RequestBody::Auth { .. } => Err(ApiError::internal(
            "AUTH is answered by the connection's reader, never by a handler",
        )),
        RequestBody::Append { stream, batch } => {
            metrics.count_request(Api::Tcp, Operation::Append);
            let started = metrics.start_timer();
            // A missing stream is reported whatever the payload, as over HTTP.
            crate::streams::lookup(node.cluster(), &stream)?;
            let batch = if batch.len() <= INLINE_DECODE_MAX_BYTES {
                ingest::checked_batch(batch)?
            } else {
                tokio::task::spawn_blocking(move || ingest::checked_batch(batch)).await??
            };
            if let Some(t) = started {
                metrics.record_write(WriteStage::Decode, t.elapsed());
            }
            let response = node.append_batch(&stream, batch, Api::Tcp).await?;
            Ok(ResponseBody::Appended(
                response
                    .partitions
                    .iter()
                    .map(|p| AppendedPartition {
                        partition: p.partition,
                        base_offset: p.base_offset,
                        count: p.count,
                    })
                    .collect(),
            ))
        }
    }
}
