//! Errors of cluster operations, serializable so a forwarded request's
//! failure reaches the original caller intact.

use serde::{Deserialize, Serialize};

use crate::transport::NodeId;

/// A Raft group as people know it: `stream app partition 4`, or `the
/// controller` for group 0. Errors carry this, never a bare group id (the
/// id, `stream_id << 32 | partition`, means nothing to an operator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupName {
    pub group: u64,
    /// `None` if the stream was not in this node's metadata.
    pub stream: Option<String>,
    pub partition: u32,
}

impl GroupName {
    pub const CONTROLLER: GroupName = GroupName {
        group: 0,
        stream: None,
        partition: 0,
    };

    pub fn partition(group: u64, stream: impl Into<String>, partition: u32) -> GroupName {
        GroupName {
            group,
            stream: Some(stream.into()),
            partition,
        }
    }
}

impl std::fmt::Display for GroupName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (stream_id, partition) = crate::controller::meta::split_group(self.group);
        match &self.stream {
            _ if self.group == 0 => f.write_str("the controller"),
            Some(s) => write!(f, "stream {s} partition {}", self.partition),
            // The stream is gone or not known here yet: its id is all we have.
            None => write!(f, "partition {partition} of stream #{stream_id}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ClusterError {
    /// This node does not lead the group; nothing was proposed, so the
    /// caller may retry elsewhere. `leader` is the current leader if known.
    #[error("this node does not lead {group} (leader: {})", leader.map_or_else(|| "unknown".to_string(), |l| format!("node {l}")))]
    NotLeader {
        group: GroupName,
        leader: Option<NodeId>,
    },
    /// The group does not run on the node asked (not created yet, or moved).
    #[error("{group} does not run on node {node}")]
    NoSuchGroup { group: GroupName, node: NodeId },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_stream_and_partition() {
        let group = (3u64 << 32) | 4;
        let e = ClusterError::NotLeader {
            group: GroupName::partition(group, "app", 4),
            leader: Some(2),
        };
        assert_eq!(
            e.to_string(),
            "this node does not lead stream app partition 4 (leader: node 2)"
        );
        let e = ClusterError::NoSuchGroup {
            group: GroupName::CONTROLLER,
            node: 1,
        };
        assert_eq!(e.to_string(), "the controller does not run on node 1");
        let unknown = GroupName {
            group,
            stream: None,
            partition: 4,
        };
        assert_eq!(unknown.to_string(), "partition 4 of stream #3");
    }
}
