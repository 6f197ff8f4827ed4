//! The openraft glue: type configurations of the two kinds of Raft group a
//! node runs, and (added as they land) the log store on top of
//! `cairn-storage`, the state machines, and the network over the
//! [`crate::transport`].
//!
//! - Group 0 is the **controller**: cluster metadata (nodes, streams,
//!   placement), replicated on the voter nodes.
//! - Every partition replica is its own group whose log **is** the
//!   partition's data log: one Raft entry carries one record batch.
pub mod log_store;
pub mod network;
pub mod types;

pub use types::{Appended, BatchPayload, NodeInfo, PartitionRaftConfig, RaftPayload};
