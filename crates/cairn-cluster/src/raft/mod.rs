//! The openraft glue: type configurations of the two kinds of Raft group a
//! node runs, the log store on top of `cairn-storage`, the partition state
//! machine, and (added as they land) the network over the
//! [`crate::transport`].
//!
//! - Group 0 is the **controller**: cluster metadata (nodes, streams,
//!   placement), replicated on the voter nodes.
//! - Every partition replica is its own group whose log **is** the
//!   partition's data log: one Raft entry carries one record batch
//!   ([`log_store`]); applying an entry is bookkeeping ([`state_machine`]).
pub mod leadership;
pub mod log_store;
pub mod meta;
pub mod network;
pub mod state_machine;
pub mod timing;
pub mod types;

pub use log_store::{LogReader, LogStore, LogStoreConfig, LogStoreError, LogStoreOptions};
pub use meta::{MetaError, MetaFile, RaftMeta};
pub use state_machine::{PartitionStateMachine, ReplicaState};
pub use timing::RaftTimings;
pub use types::{Appended, NodeInfo, PartitionPayload, PartitionRaftConfig, RaftPayload};
