//! [`TcpProducer`]: appends over the binary ingest protocol
//! (`cairn_types::protocol`), many requests in flight at once.
//!
//! # Connections
//!
//! A producer holds one connection to the node it was given first (the
//! *default link*, [`link`]) and, when it routes by leader (the default,
//! [`TcpOptions::route_to_leaders`]), one more to each of the addresses it
//! was given. Clones share them all, so any number of tasks can append at
//! once; answers may arrive in any order.
//!
//! # Routing by leader
//!
//! Every node accepts any write and forwards it to the partition's leader,
//! which costs a hop. To skip it, the producer asks every node it knows
//! (METADATA with leaders) who it is and whom it knows as each partition's
//! leader, splits each append by partition (the same hash of the source the
//! server uses), and sends each partition's entries straight to its
//! leader's connection. The answers are refreshed once a second in the
//! background, and at once after a failed send, so a leader change costs a
//! second of forwarded writes at most. A partition whose leader is unknown,
//! or is a node the producer was not given the address of, goes through
//! the default link and is forwarded as before: give the producer every
//! node's address to avoid forwards.
//!
//! # Coalescing
//!
//! Per partition at most [`TcpOptions::max_in_flight_per_partition`]
//! requests are on the wire; appends made meanwhile queue, and when one
//! request returns everything queued goes out as one request (as Kafka's
//! producer batches per partition, but without a timer, so a lone append is
//! never delayed). Each append learns its own offsets from the merged
//! request's answer (a partition's entries of one request are stored
//! consecutively). A merged request refused for its content
//! (`invalid_entry`, `bad_request`, `payload_too_large`: nothing was
//! stored) is resent as its parts, one request each, so one producer call's
//! bad entry never fails another call; any other failure is every part's.
//!
//! # Failures
//!
//! When a connection ends — the server closed it, a read or write failed,
//! the server sent a connection-level error — every call waiting on it
//! fails with [`TcpError::Closed`] carrying the reason: whether such an
//! append was stored is unknown, and only the caller can decide whether to
//! retry it. The producer itself never resends anything that may have been
//! stored. With [`TcpOptions::reconnect`] (the default) the next call opens
//! a new connection (see [`link`]); a send whose leader's connection cannot
//! be opened goes through the default link instead, which re-routes around
//! a dead node.
//!
//! Must be used inside a tokio runtime. Dropping the last clone closes the
//! connections once the server has answered what it already took.

mod link;
mod route;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use cairn_types::protocol::{self, Op, ResponseBody};
use cairn_types::{
    Attributes, BatchBuilder, BatchError, EntryRef, ErrorCode, NewEntry, RecordBatch,
};
use tokio::net::ToSocketAddrs;

use crate::types::{AppendResponse, PartitionAppend};
use link::Link;
use route::Router;

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
    /// Send each partition's entries straight to its leader (see the
    /// module docs). Off: every append goes to the default link whole.
    pub route_to_leaders: bool,
    /// With routing on: requests on the wire per partition before further
    /// appends to it wait and are sent together (see the module docs).
    pub max_in_flight_per_partition: usize,
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
            route_to_leaders: true,
            max_in_flight_per_partition: 2,
        }
    }
}

/// A pipelined binary-protocol producer. Cheap to clone; clones share the
/// connections.
#[derive(Debug, Clone)]
pub struct TcpProducer {
    /// Everything not routed by leader goes here.
    link: Link,
    router: Option<Arc<Router>>,
}

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
    /// protocol) that answers; reconnections go round the others. With
    /// routing by leader, the others are connected to when the first
    /// append of a stream asks who leads its partitions.
    pub async fn connect_any(addrs: Vec<String>, options: TcpOptions) -> Result<Self, TcpError> {
        let options = Arc::new(options);
        // One id sequence for all of the producer's connections keeps logs
        // readable.
        let next_id = Arc::new(AtomicU64::new(1));
        let link = Link::connect_any(addrs.clone(), options.clone(), next_id.clone()).await?;
        let router = options
            .route_to_leaders
            .then(|| Router::new(link.clone(), addrs, options.clone(), next_id));
        Ok(TcpProducer { link, router })
    }

    /// The address of the default link's node.
    pub fn peer_addr(&self) -> SocketAddr {
        self.link.peer_addr()
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
    /// Routed by leader, its entries are split by partition first; if one
    /// partition's share fails after others were stored, those stay
    /// stored and the error is returned (as the server does).
    pub async fn append_batch(
        &self,
        stream: &str,
        batch: &RecordBatch,
    ) -> Result<AppendResponse, TcpError> {
        match &self.router {
            Some(router) => router.append(stream, batch).await,
            None => Ok(to_response(append_on(&self.link, stream, batch).await?)),
        }
    }

    /// A round trip to the server.
    pub async fn ping(&self) -> Result<(), TcpError> {
        match self.link.call(Op::Ping, "", &[]).await? {
            ResponseBody::Pong => Ok(()),
            other => Err(TcpError::Unexpected(format!("{other:?} for a PING"))),
        }
    }

    /// The partition count of `stream` (fails with `stream_not_found`).
    pub async fn partitions(&self, stream: &str) -> Result<u32, TcpError> {
        match self.link.call(Op::Metadata, stream, &[]).await? {
            ResponseBody::Metadata { partitions, .. } => Ok(partitions),
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
        let answer = match self.link.call(Op::Read, stream, &request.encode()).await? {
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
}

/// One APPEND on `link`: where its entries landed, per partition.
async fn append_on(
    link: &Link,
    stream: &str,
    batch: &RecordBatch,
) -> Result<Vec<protocol::AppendedPartition>, TcpError> {
    match link.call(Op::Append, stream, batch.as_bytes()).await? {
        ResponseBody::Appended(parts) => Ok(parts),
        other => Err(TcpError::Unexpected(format!("{other:?} for an APPEND"))),
    }
}

fn to_response(parts: impl IntoIterator<Item = protocol::AppendedPartition>) -> AppendResponse {
    let mut partitions: Vec<PartitionAppend> = parts
        .into_iter()
        .map(|p| PartitionAppend {
            partition: p.partition,
            base_offset: p.base_offset,
            count: p.count,
        })
        .collect();
    partitions.sort_by_key(|p| p.partition);
    AppendResponse {
        appended: partitions.iter().map(|p| u64::from(p.count)).sum(),
        partitions,
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
