//! Raft type configurations and the payloads they carry.
//!
//! openraft runs with `single-term-leader`: a committed log id is then
//! `(term, index)`, both of which fit the record-batch header (`epoch`,
//! `log_index`), so a stored batch names its own Raft entry.

use std::fmt;
use std::io::Cursor;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A node as Raft membership records it: where to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Cluster transport address (`host:port`).
    pub raft_addr: String,
    /// HTTP API address (`host:port`), for clients and forwarding.
    pub http_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} http={}", self.raft_addr, self.http_addr)
    }
}

/// How an application payload is stored in the partition log.
///
/// A payload that *is* a record batch is stored as that batch (restamped
/// with its Raft index and term; the log assigns offsets), so the Raft log is
/// the data log. Anything else (blank and membership entries, controller
/// commands) is stored as a control batch holding its serialized form.
pub trait RaftPayload: openraft::AppData {
    /// The encoded record batch this payload carries, if it is one.
    fn record_batch(&self) -> Option<&Bytes>;
    /// Rebuilds a payload from a stored data batch; `None` if this payload
    /// type never carries batches (then a data batch in its log is corrupt).
    fn from_record_batch(batch: Bytes) -> Option<Self>;
}

/// A partition group's normal entry: one encoded record batch, as the
/// leader built it (offsets in its header are assigned when it is
/// appended), or a retention cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartitionPayload {
    Batch(Bytes),
    /// The leader's retention decision: every entry up to and including
    /// this one is removed on every replica (see `state_machine`). Stored
    /// as a control batch, like blank and membership entries.
    Cut(openraft::LogId<u64>),
}

impl fmt::Display for PartitionPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionPayload::Batch(b) => write!(f, "batch({} bytes)", b.len()),
            PartitionPayload::Cut(id) => write!(f, "cut({id})"),
        }
    }
}

impl RaftPayload for PartitionPayload {
    fn record_batch(&self) -> Option<&Bytes> {
        match self {
            PartitionPayload::Batch(b) => Some(b),
            PartitionPayload::Cut(_) => None,
        }
    }
    fn from_record_batch(batch: Bytes) -> Option<Self> {
        Some(PartitionPayload::Batch(batch))
    }
}

/// What applying a partition entry answers: where its entries landed.
/// Blank and membership entries answer `count = 0`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    pub base_offset: u64,
    pub count: u32,
}

openraft::declare_raft_types!(
    /// Type configuration of a partition's Raft group.
    pub PartitionRaftConfig:
        D = PartitionPayload,
        R = Appended,
        NodeId = u64,
        Node = NodeInfo,
        Entry = openraft::Entry<PartitionRaftConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);
