//! The binary ingest protocol: requests and responses on a framed TCP
//! connection, encoded and decoded without I/O so the server and the client
//! share one definition.
//!
//! # Framing
//!
//! A connection carries frames in both directions. Each frame is a `u32`
//! little-endian length followed by that many bytes (tokio-util's
//! `LengthDelimitedCodec` with `length_field_length(4)` and
//! `little_endian()`; see [`LENGTH_PREFIX_LEN`]). Both sides set an
//! explicit maximum frame length: the server's is its HTTP body limit plus
//! [`REQUEST_OVERHEAD`] (so `--max-body-bytes` bounds both APIs), and a
//! frame announcing more than that closes the connection — after a
//! connection-level error response (correlation id 0) saying why, since the
//! rest of the stream can no longer be trusted to be in step.
//!
//! Every integer below is little-endian, like the record batch.
//!
//! # Requests
//!
//! ```text
//! offset size field
//!  0     1    version         VERSION (1)
//!  1     1    op              1 = APPEND, 2 = PING, 3 = METADATA, 4 = AUTH, 5 = READ
//!  2     2    reserved        0
//!  4     8    correlation id  chosen by the client, non-zero, echoed in the response
//! 12     2    name length     n; 0 for PING
//! 14     n    stream name     UTF-8
//! 14+n   ..   payload         APPEND: one record batch; AUTH: the token; READ: see below;
//!                              METADATA: empty, or one byte 1 to ask for leaders; otherwise empty
//! ```
//!
//! A node started with a token file answers nothing but AUTH until an AUTH
//! succeeds on the connection (see `cairn-server`'s `auth` module): a
//! request before it, or an AUTH with an unknown token, gets `unauthorized`
//! and the connection closes; an APPEND on a connection whose token lacks the
//! `write` role gets `forbidden`. A node without a token file accepts AUTH
//! with any token, so a producer can always send it.
//!
//! The first 12 bytes keep this layout in every version, so a server can
//! always answer a frame it cannot otherwise understand (a newer version,
//! an unknown op) with an error carrying the right correlation id.
//!
//! The APPEND payload is exactly one record batch as [`BatchBuilder`]
//! produces it (see [`crate::batch`]): base offset and epoch 0, CRC-32C
//! valid. The server verifies the CRC and decodes and validates every entry
//! before anything is written; the entries are then routed to partitions by
//! source exactly as over HTTP. The batch format has no "absent" timestamp,
//! so a producer fills in its own clock for entries that lack one.
//!
//! The READ payload (17 bytes) asks for committed entries of one partition
//! of the stream, routed to the replica `consistency` names exactly as an
//! HTTP read is (the node forwards it over the cluster transport):
//!
//! ```text
//! offset size field
//!  0     4    partition
//!  4     8    offset          first offset to return; u64::MAX = the partition's start
//! 12     4    limit           1..=10,000 entries
//! 16     1    consistency     0 = leader, 1 = any
//! ```
//!
//! # Responses
//!
//! ```text
//! offset size field
//!  0     1    version         VERSION (1)
//!  1     1    status          0 = OK, 1 = ERROR
//!  2     1    op              the request's op; 0 on a connection-level error
//!  3     1    reserved        0
//!  4     8    correlation id  the request's; 0 = about the connection itself
//! 12     ..   body
//! ```
//!
//! | status, op | body |
//! |---|---|
//! | OK, APPEND | `u32` n, then n × (`u32` partition, `u64` base offset, `u32` count), in partition order |
//! | OK, PING | empty |
//! | OK, METADATA | `u32` partition count; when leaders were asked for, then `u64` the answering node's id and one `u64` per partition: the node id of its leader as the answering node knows it (0 = unknown) |
//! | OK, AUTH | empty |
//! | OK, READ | `u64` next offset, `u64` start offset, `u64` end offset, `u64` node that served it, `u8` 1 if that was the leader, `u64` entries it lacked (u64::MAX = unknown), then the entries as one record batch stamped with the first entry's offset (nothing when there are none) |
//! | ERROR, any | `u16` [`ErrorCode`] number (the same codes HTTP uses), then a UTF-8 message filling the rest |
//!
//! # Pipelining
//!
//! A client may send many requests without waiting. The server handles the
//! requests of one connection concurrently (up to a bound; beyond it, it
//! stops reading the socket) and answers each as soon as it is done, so
//! responses can come back in any order: match them by correlation id. Two
//! appends in flight at once are not ordered relative to each other; a
//! producer that needs one source's entries in order waits for the first
//! append's answer before sending the next (as with HTTP).
//!
//! # Malformed input
//!
//! A frame whose correlation id can be read (at least 12 bytes, id not 0)
//! but that is otherwise wrong gets an ERROR response with `bad_request`
//! (header, op, name) or `invalid_entry` (the batch: CRC, structure, entry
//! limits) and the connection stays usable. A frame too short to carry an
//! id, or one with id 0, closes the connection with a logged reason (and
//! a connection-level error response first).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::ErrorCode;

/// Protocol version in every request and response header.
pub const VERSION: u8 = 1;
/// Bytes of the length prefix in front of every frame (`u32` LE).
pub const LENGTH_PREFIX_LEN: usize = 4;
/// Bytes of the fixed request and response headers.
pub const HEADER_LEN: usize = 12;
/// Longest stream name a request may carry (the server's own limit on
/// names is smaller; this only bounds the frame).
pub const MAX_STREAM_NAME_LEN: usize = 1024;
/// How much longer than its payload an APPEND frame may be: header, name
/// length and the longest name.
pub const REQUEST_OVERHEAD: usize = HEADER_LEN + 2 + MAX_STREAM_NAME_LEN;
/// The default largest payload (the server's default HTTP body limit, 8 MiB).
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 8 << 20;
/// The default maximum frame length of a request.
pub const DEFAULT_MAX_FRAME_BYTES: usize = DEFAULT_MAX_PAYLOAD_BYTES + REQUEST_OVERHEAD;
/// Longest token an AUTH frame may carry.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Largest response a client accepts: a READ answer carries at most the
/// server's 16 MiB of entries per read (plus the batch's framing); APPEND
/// answers and error messages are small.
pub const MAX_RESPONSE_FRAME_BYTES: usize = 24 << 20;
/// The METADATA payload that asks for the partitions' leaders.
pub const METADATA_WITH_LEADERS: [u8; 1] = [1];
/// Bytes of a READ request's payload.
pub const READ_REQUEST_LEN: usize = 17;
/// Bytes of a READ answer before its batch.
const READ_ANSWER_FIXED_LEN: usize = 8 * 4 + 1 + 8 + 1;

/// What a request asks for. The numbers are on the wire: never reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Op {
    Append = 1,
    Ping = 2,
    Metadata = 3,
    Auth = 4,
    Read = 5,
}

impl Op {
    pub fn from_u8(v: u8) -> Option<Op> {
        match v {
            1 => Some(Op::Append),
            2 => Some(Op::Ping),
            3 => Some(Op::Metadata),
            4 => Some(Op::Auth),
            5 => Some(Op::Read),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Append => "append",
            Op::Ping => "ping",
            Op::Metadata => "metadata",
            Op::Auth => "auth",
            Op::Read => "read",
        }
    }
}

const STATUS_OK: u8 = 0;
const STATUS_ERROR: u8 = 1;

/// A frame that is not a valid request or response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed frame: {reason}")]
pub struct MalformedFrame {
    /// The frame's correlation id, when it could be read and is not 0: the
    /// server answers such a frame with an error instead of closing.
    pub correlation_id: Option<u64>,
    pub reason: String,
}

fn malformed(correlation_id: Option<u64>, reason: impl Into<String>) -> MalformedFrame {
    MalformedFrame {
        correlation_id,
        reason: reason.into(),
    }
}

/// One request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Non-zero; echoed in the response.
    pub correlation_id: u64,
    pub body: RequestBody,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestBody {
    /// Append the entries of `batch` (one encoded record batch, unverified
    /// until the server checks it) to `stream`.
    Append { stream: String, batch: Bytes },
    /// Answered with an empty OK; for liveness and round-trip checks.
    Ping,
    /// Answered with the stream's partition count and, when `leaders` is
    /// set, who answers and which node leads each partition (what a
    /// leader-aware producer routes by).
    Metadata { stream: String, leaders: bool },
    /// Presents a bearer token for the rest of the connection.
    Auth { token: Bytes },
    /// Reads committed entries of one partition.
    Read { stream: String, read: ReadRequest },
}

/// What a READ asks for (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRequest {
    pub partition: u32,
    /// `None`: from the partition's start.
    pub offset: Option<u64>,
    pub limit: u32,
    pub consistency: crate::api::Consistency,
}

impl ReadRequest {
    pub fn encode(&self) -> [u8; READ_REQUEST_LEN] {
        let mut out = [0u8; READ_REQUEST_LEN];
        out[0..4].copy_from_slice(&self.partition.to_le_bytes());
        out[4..12].copy_from_slice(&self.offset.unwrap_or(u64::MAX).to_le_bytes());
        out[12..16].copy_from_slice(&self.limit.to_le_bytes());
        out[16] = match self.consistency {
            crate::api::Consistency::Leader => 0,
            crate::api::Consistency::Any => 1,
        };
        out
    }

    fn decode(id: Option<u64>, mut payload: Bytes) -> Result<ReadRequest, MalformedFrame> {
        if payload.len() != READ_REQUEST_LEN {
            return Err(malformed(
                id,
                format!(
                    "a READ payload is {READ_REQUEST_LEN} bytes; this one is {}",
                    payload.len()
                ),
            ));
        }
        let partition = payload.get_u32_le();
        let offset = payload.get_u64_le();
        let limit = payload.get_u32_le();
        let consistency = match payload.get_u8() {
            0 => crate::api::Consistency::Leader,
            1 => crate::api::Consistency::Any,
            other => return Err(malformed(id, format!("unknown READ consistency {other}"))),
        };
        Ok(ReadRequest {
            partition,
            offset: (offset != u64::MAX).then_some(offset),
            limit,
            consistency,
        })
    }
}

/// A READ's answer (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadAnswer {
    pub next_offset: u64,
    pub start_offset: u64,
    pub end_offset: u64,
    pub served_by: u64,
    pub from_leader: bool,
    pub lag_entries: Option<u64>,
    /// The entries, one record batch stamped with the first one's offset;
    /// `None` when there are none.
    pub batch: Option<crate::batch::RecordBatch>,
}

impl RequestBody {
    pub fn op(&self) -> Op {
        match self {
            RequestBody::Append { .. } => Op::Append,
            RequestBody::Ping => Op::Ping,
            RequestBody::Metadata { .. } => Op::Metadata,
            RequestBody::Auth { .. } => Op::Auth,
            RequestBody::Read { .. } => Op::Read,
        }
    }
}

fn put_header(out: &mut BytesMut, first: u8, second: u8, third: u8, correlation_id: u64) {
    out.put_u8(VERSION);
    out.put_u8(first);
    out.put_u8(second);
    out.put_u8(third);
    out.put_u64_le(correlation_id);
}

/// Appends a request frame body (without the length prefix) to `out`.
/// Taking the parts rather than a [`Request`] lets a client encode a batch
/// it holds by reference, copying it once, straight into the frame.
pub fn encode_request(
    correlation_id: u64,
    op: Op,
    stream: &str,
    payload: &[u8],
    out: &mut BytesMut,
) -> Result<(), MalformedFrame> {
    if stream.len() > MAX_STREAM_NAME_LEN {
        return Err(malformed(
            Some(correlation_id),
            format!("stream name is longer than {MAX_STREAM_NAME_LEN} bytes"),
        ));
    }
    out.reserve(HEADER_LEN + 2 + stream.len() + payload.len());
    put_header(out, op as u8, 0, 0, correlation_id);
    out.put_u16_le(stream.len() as u16);
    out.put_slice(stream.as_bytes());
    out.put_slice(payload);
    Ok(())
}

impl Request {
    /// The frame body (without the length prefix).
    pub fn encode(&self) -> Result<Bytes, MalformedFrame> {
        let mut out = BytesMut::new();
        let read;
        let (stream, payload): (&str, &[u8]) = match &self.body {
            RequestBody::Append { stream, batch } => (stream, batch),
            RequestBody::Read { stream, read: r } => {
                read = r.encode();
                (stream, &read)
            }
            RequestBody::Ping => ("", &[]),
            RequestBody::Metadata { stream, leaders } => (
                stream,
                if *leaders {
                    &METADATA_WITH_LEADERS[..]
                } else {
                    &[]
                },
            ),
            RequestBody::Auth { token } => ("", token),
        };
        encode_request(
            self.correlation_id,
            self.body.op(),
            stream,
            payload,
            &mut out,
        )?;
        Ok(out.freeze())
    }

    /// Decodes one frame body. The APPEND payload is a slice of `frame`
    /// (no copy); its batch is not checked here.
    pub fn decode(mut frame: Bytes) -> Result<Request, MalformedFrame> {
        if frame.len() < HEADER_LEN {
            return Err(malformed(
                None,
                format!(
                    "a request is at least {HEADER_LEN} bytes; this one is {}",
                    frame.len()
                ),
            ));
        }
        let version = frame.get_u8();
        let op = frame.get_u8();
        let reserved = frame.get_u16_le();
        let correlation_id = frame.get_u64_le();
        if correlation_id == 0 {
            return Err(malformed(None, "correlation id 0 is reserved"));
        }
        let id = Some(correlation_id);
        if version != VERSION {
            return Err(malformed(
                id,
                format!("unsupported protocol version {version} (this server speaks {VERSION})"),
            ));
        }
        let op = Op::from_u8(op).ok_or_else(|| malformed(id, format!("unknown op {op}")))?;
        if reserved != 0 {
            return Err(malformed(id, "reserved header bytes must be 0"));
        }
        if frame.len() < 2 {
            return Err(malformed(id, "the stream name length is missing"));
        }
        let name_len = usize::from(frame.get_u16_le());
        if name_len > MAX_STREAM_NAME_LEN || name_len > frame.len() {
            return Err(malformed(
                id,
                format!("stream name length {name_len} runs past the frame"),
            ));
        }
        let name = frame.split_to(name_len);
        let stream = std::str::from_utf8(&name)
            .map_err(|_| malformed(id, "the stream name is not UTF-8"))?
            .to_string();
        let payload = frame;
        let body = match op {
            Op::Append => {
                if stream.is_empty() {
                    return Err(malformed(id, "APPEND needs a stream name"));
                }
                if payload.is_empty() {
                    return Err(malformed(id, "APPEND needs a record batch payload"));
                }
                RequestBody::Append {
                    stream,
                    batch: payload,
                }
            }
            Op::Ping => {
                if !stream.is_empty() || !payload.is_empty() {
                    return Err(malformed(id, "PING carries no stream name or payload"));
                }
                RequestBody::Ping
            }
            Op::Metadata => {
                if stream.is_empty() {
                    return Err(malformed(id, "METADATA needs a stream name"));
                }
                let leaders = match &payload[..] {
                    [] => false,
                    p if p == METADATA_WITH_LEADERS => true,
                    _ => {
                        return Err(malformed(
                            id,
                            "a METADATA payload is empty or the one byte 1 (with leaders)",
                        ));
                    }
                };
                RequestBody::Metadata { stream, leaders }
            }
            Op::Auth => {
                if !stream.is_empty() {
                    return Err(malformed(id, "AUTH carries no stream name"));
                }
                if payload.is_empty() || payload.len() > MAX_TOKEN_LEN {
                    return Err(malformed(
                        id,
                        format!("AUTH needs a token of 1 to {MAX_TOKEN_LEN} bytes"),
                    ));
                }
                RequestBody::Auth { token: payload }
            }
            Op::Read => {
                if stream.is_empty() {
                    return Err(malformed(id, "READ needs a stream name"));
                }
                RequestBody::Read {
                    stream,
                    read: ReadRequest::decode(id, payload)?,
                }
            }
        };
        Ok(Request {
            correlation_id,
            body,
        })
    }
}

/// Where one partition's share of an APPEND landed: offsets
/// `base_offset..base_offset + count`, in request order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendedPartition {
    pub partition: u32,
    pub base_offset: u64,
    pub count: u32,
}

const APPENDED_PARTITION_LEN: usize = 16;

/// Who answered a METADATA and which node leads each partition, as the
/// answering node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaders {
    /// The answering node's id.
    pub node: u64,
    /// One per partition: its leader's node id, 0 when unknown.
    pub by_partition: Vec<u64>,
}

/// One response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The request's id, or 0 for an error about the connection as a whole
    /// (sent just before the server closes it).
    pub correlation_id: u64,
    pub body: ResponseBody,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseBody {
    Appended(Vec<AppendedPartition>),
    Pong,
    Metadata {
        partitions: u32,
        /// Present when the request asked for leaders.
        leaders: Option<Leaders>,
    },
    Authenticated,
    Read(ReadAnswer),
    /// `op` is the failed request's op, `None` when it was unreadable.
    Error {
        op: Option<Op>,
        code: ErrorCode,
        message: String,
    },
}

impl Response {
    pub fn error(correlation_id: u64, op: Option<Op>, code: ErrorCode, message: String) -> Self {
        Response {
            correlation_id,
            body: ResponseBody::Error { op, code, message },
        }
    }

    /// The frame body (without the length prefix).
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        let id = self.correlation_id;
        match &self.body {
            ResponseBody::Appended(parts) => {
                out.reserve(HEADER_LEN + 4 + parts.len() * APPENDED_PARTITION_LEN);
                put_header(&mut out, STATUS_OK, Op::Append as u8, 0, id);
                out.put_u32_le(parts.len() as u32);
                for p in parts {
                    out.put_u32_le(p.partition);
                    out.put_u64_le(p.base_offset);
                    out.put_u32_le(p.count);
                }
            }
            ResponseBody::Pong => put_header(&mut out, STATUS_OK, Op::Ping as u8, 0, id),
            ResponseBody::Authenticated => put_header(&mut out, STATUS_OK, Op::Auth as u8, 0, id),
            ResponseBody::Metadata {
                partitions,
                leaders,
            } => {
                put_header(&mut out, STATUS_OK, Op::Metadata as u8, 0, id);
                out.put_u32_le(*partitions);
                if let Some(l) = leaders {
                    out.put_u64_le(l.node);
                    for leader in &l.by_partition {
                        out.put_u64_le(*leader);
                    }
                }
            }
            ResponseBody::Read(a) => {
                let batch = a.batch.as_ref().map_or(&[][..], |b| b.as_bytes());
                out.reserve(HEADER_LEN + READ_ANSWER_FIXED_LEN + batch.len());
                put_header(&mut out, STATUS_OK, Op::Read as u8, 0, id);
                out.put_u64_le(a.next_offset);
                out.put_u64_le(a.start_offset);
                out.put_u64_le(a.end_offset);
                out.put_u64_le(a.served_by);
                out.put_u8(u8::from(a.from_leader));
                out.put_u64_le(a.lag_entries.unwrap_or(u64::MAX));
                // Said, not implied by an empty rest: a frame cut before
                // its batch must not read as an answer without entries.
                out.put_u8(u8::from(a.batch.is_some()));
                out.put_slice(batch);
            }
            ResponseBody::Error { op, code, message } => {
                out.reserve(HEADER_LEN + 2 + message.len());
                put_header(&mut out, STATUS_ERROR, op.map_or(0, |o| o as u8), 0, id);
                out.put_u16_le(code.number());
                out.put_slice(message.as_bytes());
            }
        }
        out.freeze()
    }

    /// Decodes one frame body.
    pub fn decode(mut frame: Bytes) -> Result<Response, MalformedFrame> {
        if frame.len() < HEADER_LEN {
            return Err(malformed(
                None,
                format!(
                    "a response is at least {HEADER_LEN} bytes; this one is {}",
                    frame.len()
                ),
            ));
        }
        let version = frame.get_u8();
        let status = frame.get_u8();
        let op = frame.get_u8();
        let _reserved = frame.get_u8();
        let correlation_id = frame.get_u64_le();
        let id = Some(correlation_id);
        if version != VERSION {
            return Err(malformed(
                id,
                format!("unsupported protocol version {version}"),
            ));
        }
        let body = match status {
            STATUS_OK => match Op::from_u8(op) {
                Some(Op::Append) => {
                    if frame.len() < 4 {
                        return Err(malformed(id, "APPEND answer without partition count"));
                    }
                    let n = frame.get_u32_le() as usize;
                    if frame.len() != n.saturating_mul(APPENDED_PARTITION_LEN) {
                        return Err(malformed(
                            id,
                            format!("APPEND answer for {n} partitions has the wrong length"),
                        ));
                    }
                    let parts = (0..n)
                        .map(|_| AppendedPartition {
                            partition: frame.get_u32_le(),
                            base_offset: frame.get_u64_le(),
                            count: frame.get_u32_le(),
                        })
                        .collect();
                    ResponseBody::Appended(parts)
                }
                Some(Op::Ping) if frame.is_empty() => ResponseBody::Pong,
                Some(Op::Auth) if frame.is_empty() => ResponseBody::Authenticated,
                Some(Op::Metadata) if frame.len() >= 4 => {
                    let partitions = frame.get_u32_le();
                    let leaders = if frame.is_empty() {
                        None
                    } else if frame.len() == 8 * (1 + partitions as usize) {
                        Some(Leaders {
                            node: frame.get_u64_le(),
                            by_partition: (0..partitions).map(|_| frame.get_u64_le()).collect(),
                        })
                    } else {
                        return Err(malformed(
                            id,
                            format!(
                                "METADATA answer for {partitions} partitions has the wrong length"
                            ),
                        ));
                    };
                    ResponseBody::Metadata {
                        partitions,
                        leaders,
                    }
                }
                Some(Op::Read) if frame.len() >= READ_ANSWER_FIXED_LEN => {
                    let next_offset = frame.get_u64_le();
                    let start_offset = frame.get_u64_le();
                    let end_offset = frame.get_u64_le();
                    let served_by = frame.get_u64_le();
                    let from_leader = frame.get_u8() == 1;
                    let lag = frame.get_u64_le();
                    let has_batch = frame.get_u8();
                    let batch = if has_batch == 0 && frame.is_empty() {
                        None
                    } else if has_batch != 1 {
                        return Err(malformed(
                            id,
                            "READ answer: bad batch flag or trailing bytes",
                        ));
                    } else {
                        Some(
                            crate::batch::RecordBatch::from_bytes(frame)
                                .map_err(|e| malformed(id, format!("READ answer's batch: {e}")))?,
                        )
                    };
                    ResponseBody::Read(ReadAnswer {
                        next_offset,
                        start_offset,
                        end_offset,
                        served_by,
                        from_leader,
                        lag_entries: (lag != u64::MAX).then_some(lag),
                        batch,
                    })
                }
                _ => return Err(malformed(id, format!("bad OK answer for op {op}"))),
            },
            STATUS_ERROR => {
                if frame.len() < 2 {
                    return Err(malformed(id, "error answer without a code"));
                }
                let number = frame.get_u16_le();
                let message = String::from_utf8_lossy(&frame).into_owned();
                // A newer server may know codes we do not: keep its message
                // and the number rather than failing the whole connection.
                let (code, message) = match ErrorCode::from_number(number) {
                    Some(code) => (code, message),
                    None => (
                        ErrorCode::Internal,
                        format!("(unknown error code {number}) {message}"),
                    ),
                };
                ResponseBody::Error {
                    op: Op::from_u8(op),
                    code,
                    message,
                }
            }
            other => return Err(malformed(id, format!("unknown status {other}"))),
        };
        Ok(Response {
            correlation_id,
            body,
        })
    }
}

#[cfg(test)]
mod tests;
