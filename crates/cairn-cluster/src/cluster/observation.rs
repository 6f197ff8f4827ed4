//! One reading of a partition group's Raft metrics in plain values (who
//! leads, in which term, what is applied, each member's matched index), so
//! the replication bookkeeping and anti-entropy's scan can work on it and
//! be tested without openraft types.

use std::collections::BTreeMap;

use openraft::{RaftMetrics, ServerState};

use crate::raft::types::NodeInfo;
use crate::transport::NodeId;

/// One reading of a group's Raft metrics, without openraft types, so the
/// bookkeeping can be tested with plain values.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Observation {
    pub leader: Option<NodeId>,
    pub term: u64,
    pub is_leader: bool,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    /// On the leader: each member's matched index, the leader included.
    pub matched: BTreeMap<NodeId, Option<u64>>,
    /// Voter sets of the effective membership (two while joint).
    pub voter_sets: Vec<Vec<NodeId>>,
}

impl Observation {
    pub fn of(m: &RaftMetrics<NodeId, NodeInfo>) -> Self {
        Observation {
            leader: m.current_leader,
            term: m.current_term,
            is_leader: m.state == ServerState::Leader,
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            matched: m
                .replication
                .as_ref()
                .map(|r| r.iter().map(|(id, l)| (*id, l.map(|l| l.index))).collect())
                .unwrap_or_default(),
            voter_sets: m
                .membership_config
                .membership()
                .get_joint_config()
                .iter()
                .map(|s| s.iter().copied().collect())
                .collect(),
        }
    }

    /// Members that have matched something, with their index.
    pub(crate) fn matched_known(&self) -> BTreeMap<NodeId, u64> {
        self.matched
            .iter()
            .filter_map(|(id, m)| Some((*id, (*m)?)))
            .collect()
    }
}
