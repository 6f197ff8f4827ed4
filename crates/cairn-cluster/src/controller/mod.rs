//! The controller: openraft group 0 over the voter nodes, replicating the
//! cluster metadata ([`meta::ClusterMeta`]: nodes, streams, placement).
//!
//! Commands ([`meta::ControllerCommand`]) are proposed on the controller
//! leader (other nodes forward them), and every replica applies them with
//! the same pure function, so placement is computed once per command, in
//! log order. Each node watches the applied metadata and reconciles its
//! partition groups with it (see `crate::cluster`).
pub mod meta;
pub mod state_machine;

use std::fmt;
use std::io::Cursor;

use bytes::Bytes;

pub use meta::{ClusterMeta, ControllerCommand, ControllerResponse, NodeAdminState};
pub use state_machine::ControllerStateMachine;

use crate::raft::types::{NodeInfo, RaftPayload};

impl fmt::Display for ControllerCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl RaftPayload for ControllerCommand {
    fn record_batch(&self) -> Option<&Bytes> {
        None
    }
    fn from_record_batch(_batch: Bytes) -> Option<Self> {
        None
    }
}

openraft::declare_raft_types!(
    /// Type configuration of the controller group (group 0).
    pub ControllerRaftConfig:
        D = ControllerCommand,
        R = ControllerResponse,
        NodeId = u64,
        Node = NodeInfo,
        Entry = openraft::Entry<ControllerRaftConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);
