//! Errors of cluster operations, serializable so a forwarded request's
//! failure reaches the original caller intact.

use serde::{Deserialize, Serialize};

use crate::transport::NodeId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ClusterError {
    /// This node does not lead the group; nothing was proposed, so the
    /// caller may retry elsewhere. `leader` is the current leader if known.
    #[error("not the leader of group {group} (leader: {leader:?})")]
    NotLeader { group: u64, leader: Option<NodeId> },
    /// The group does not run on the node asked (not created yet, or moved).
    #[error("group {group} does not run on node {node}")]
    NoSuchGroup { group: u64, node: NodeId },
    /// The outcome is unknown (e.g. leadership changed or the connection
    /// dropped after the write was proposed): it may or may not commit.
    #[error("write outcome unknown: {0}")]
    Indeterminate(String),
    /// No leader could be reached before the deadline; nothing was written.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The metadata rules refused the command (`code` is an ErrorCode number).
    #[error("{message}")]
    Refused { code: u16, message: String },
    #[error("storage: {0}")]
    Storage(String),
    #[error("cluster is shutting down")]
    ShuttingDown,
}

impl ClusterError {
    /// True if the request certainly did not take effect, so retrying
    /// (on another node) cannot duplicate it.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClusterError::NotLeader { .. }
                | ClusterError::NoSuchGroup { .. }
                | ClusterError::Unavailable(_)
        )
    }

    /// The `cairn_types::ErrorCode` an API reports this as.
    pub fn error_code(&self) -> cairn_types::ErrorCode {
        use cairn_types::ErrorCode;
        match self {
            ClusterError::NotLeader { .. }
            | ClusterError::NoSuchGroup { .. }
            | ClusterError::Unavailable(_)
            | ClusterError::ShuttingDown => ErrorCode::Unavailable,
            ClusterError::Indeterminate(_) => ErrorCode::Timeout,
            ClusterError::Refused { code, .. } => {
                ErrorCode::from_number(*code).unwrap_or(ErrorCode::Internal)
            }
            ClusterError::Storage(_) => ErrorCode::Storage,
        }
    }
}
