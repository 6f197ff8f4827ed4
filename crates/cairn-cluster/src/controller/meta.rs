//! The controller's metadata: what the cluster agrees on through group 0.
//!
//! [`ClusterMeta::apply`] is a pure function of the current state and one
//! command, so every controller replica computes the same state from the
//! same log, and it can be tested without Raft. Placement is decided here
//! (on apply, from the node set at that point of the log), not by the
//! proposer, so concurrent proposals cannot produce two placements.

use std::collections::BTreeMap;

use cairn_storage::LogConfig;
use serde::{Deserialize, Serialize};

use crate::placement;
use crate::raft::types::NodeInfo;
use crate::transport::NodeId;

/// The administrative state of a node, as the controller records it.
/// (Liveness — up, suspect, down — is the membership layer's view, not
/// replicated.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeAdminState {
    /// Registered, takes new replicas.
    Active,
    /// Being decommissioned: takes no new replicas; its replicas move away.
    Draining,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    pub id: NodeId,
    pub info: NodeInfo,
    pub state: NodeAdminState,
}

/// One partition's replica set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMeta {
    /// Raft group id of this partition (unique in the cluster, never reused).
    pub group: u64,
    pub replicas: Vec<NodeId>,
    /// The replica that should lead when healthy (spreads leadership).
    pub preferred_leader: NodeId,
    /// The members the group was created with, as every initial replica
    /// initializes it (openraft requires the same config on each).
    pub initial_members: BTreeMap<NodeId, NodeInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMeta {
    pub id: u32,
    pub name: String,
    pub replication_factor: u32,
    pub log: LogConfig,
    /// Creation time (µs since the epoch, as proposed).
    pub created_us: i64,
    pub partitions: Vec<PartitionMeta>,
}

/// Everything group 0 replicates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMeta {
    pub nodes: BTreeMap<NodeId, NodeMeta>,
    pub streams: BTreeMap<String, StreamMeta>,
    /// Next stream id; ids are never reused, so neither are group ids.
    pub next_stream_id: u32,
}

/// A change to the metadata, proposed through the controller group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerCommand {
    /// Adds a node or updates its addresses.
    RegisterNode {
        id: NodeId,
        info: NodeInfo,
    },
    SetNodeState {
        id: NodeId,
        state: NodeAdminState,
    },
    /// Forgets a node (after its replicas have moved away).
    RemoveNode {
        id: NodeId,
    },
    CreateStream {
        name: String,
        partitions: u32,
        /// `None`: min(3, active nodes).
        replication_factor: Option<u32>,
        log: LogConfig,
        created_us: i64,
    },
    DeleteStream {
        name: String,
    },
    /// Records a completed replica move of one partition.
    SetReplicas {
        stream: String,
        partition: u32,
        replicas: Vec<NodeId>,
        preferred_leader: NodeId,
    },
}

/// The outcome of one command, returned to its proposer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerResponse {
    #[default]
    Ok,
    StreamCreated(StreamMeta),
    /// The command was valid Raft-wise but refused by the metadata rules;
    /// `code` is a `cairn_types::ErrorCode` number.
    Refused {
        code: u16,
        message: String,
    },
}

/// Group id of partition `partition` of stream `stream_id`. Group 0 is the
/// controller; stream ids start at 1.
pub fn partition_group(stream_id: u32, partition: u32) -> u64 {
    (u64::from(stream_id) << 32) | u64::from(partition)
}

/// The stream id and partition of a partition group id.
pub fn split_group(group: u64) -> (u32, u32) {
    ((group >> 32) as u32, group as u32)
}

impl ClusterMeta {
    /// Nodes that take new replicas.
    pub fn active_nodes(&self) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.state == NodeAdminState::Active)
            .map(|n| n.id)
            .collect()
    }

    /// Why draining node `id` would be unsafe, if it would: a stream whose
    /// replication factor the remaining active nodes cannot hold, or a
    /// controller (voters `voters`) left without a majority of its voters.
    pub fn decommission_refusal(&self, id: NodeId, voters: &[NodeId]) -> Option<String> {
        let remaining: Vec<NodeId> = self
            .active_nodes()
            .into_iter()
            .filter(|n| *n != id)
            .collect();
        if let Some(s) = self
            .streams
            .values()
            .filter(|s| s.replication_factor as usize > remaining.len())
            .min_by_key(|s| &s.name)
        {
            return Some(format!(
                "stream {:?} has replication factor {}, and only {} active node(s) would remain \
                 to hold its replicas: add a node first",
                s.name,
                s.replication_factor,
                remaining.len()
            ));
        }
        if voters.contains(&id) {
            let staying = voters.iter().filter(|v| remaining.contains(v)).count();
            let majority = voters.len() / 2 + 1;
            if staying < majority {
                return Some(format!(
                    "the controller has {} voters; without node {id} only {staying} active \
                     voter(s) would remain, short of the majority of {majority} it needs",
                    voters.len()
                ));
            }
        }
        None
    }

    pub fn stream_by_id(&self, id: u32) -> Option<&StreamMeta> {
        self.streams.values().find(|s| s.id == id)
    }

    /// The partition whose Raft group is `group`.
    pub fn partition_of_group(&self, group: u64) -> Option<&PartitionMeta> {
        let (stream_id, partition) = split_group(group);
        self.stream_by_id(stream_id)?
            .partitions
            .get(partition as usize)
    }

    /// Partition groups that have `node` among their replicas.
    pub fn groups_of(&self, node: NodeId) -> Vec<(&StreamMeta, u32, &PartitionMeta)> {
        self.streams
            .values()
            .flat_map(|s| {
                s.partitions
                    .iter()
                    .enumerate()
                    .filter(move |(_, p)| p.replicas.contains(&node))
                    .map(move |(i, p)| (s, i as u32, p))
            })
            .collect()
    }

    pub fn apply(&mut self, cmd: ControllerCommand) -> ControllerResponse {
        use cairn_types::ErrorCode;
        let refuse = |code: ErrorCode, message: String| ControllerResponse::Refused {
            code: code.number(),
            message,
        };
        match cmd {
            ControllerCommand::RegisterNode { id, info } => {
                let entry = self.nodes.entry(id).or_insert(NodeMeta {
                    id,
                    info: info.clone(),
                    state: NodeAdminState::Active,
                });
                entry.info = info;
                ControllerResponse::Ok
            }
            ControllerCommand::SetNodeState { id, state } => match self.nodes.get_mut(&id) {
                Some(n) => {
                    n.state = state;
                    ControllerResponse::Ok
                }
                None => refuse(ErrorCode::NotFound, format!("node {id} is not registered")),
            },
            ControllerCommand::RemoveNode { id } => {
                let still = self.groups_of(id).len();
                if still > 0 {
                    return refuse(
                        ErrorCode::Conflict,
                        format!("node {id} still holds {still} replicas"),
                    );
                }
                self.nodes.remove(&id);
                ControllerResponse::Ok
            }
            ControllerCommand::CreateStream {
                name,
                partitions,
                replication_factor,
                log,
                created_us,
            } => {
                if self.streams.contains_key(&name) {
                    return refuse(
                        ErrorCode::StreamExists,
                        format!("stream {name:?} already exists"),
                    );
                }
                let nodes = self.active_nodes();
                if nodes.is_empty() {
                    return refuse(
                        ErrorCode::Unavailable,
                        "no node has registered with the controller yet".into(),
                    );
                }
                let rf = replication_factor.unwrap_or_else(|| (nodes.len() as u32).min(3));
                let sets = match placement::assign(&name, partitions, rf, &nodes) {
                    Ok(sets) => sets,
                    Err(e) => return refuse(ErrorCode::InvalidStreamConfig, e.to_string()),
                };
                self.next_stream_id = self.next_stream_id.max(1);
                let id = self.next_stream_id;
                self.next_stream_id += 1;
                let stream = StreamMeta {
                    id,
                    name: name.clone(),
                    replication_factor: rf,
                    log,
                    created_us,
                    partitions: sets
                        .into_iter()
                        .enumerate()
                        .map(|(p, set)| PartitionMeta {
                            group: partition_group(id, p as u32),
                            initial_members: set
                                .replicas
                                .iter()
                                .map(|r| (*r, self.nodes[r].info.clone()))
                                .collect(),
                            replicas: set.replicas,
                            preferred_leader: set.preferred_leader,
                        })
                        .collect(),
                };
                self.streams.insert(name, stream.clone());
                ControllerResponse::StreamCreated(stream)
            }
            ControllerCommand::DeleteStream { name } => match self.streams.remove(&name) {
                Some(_) => ControllerResponse::Ok,
                None => refuse(
                    ErrorCode::StreamNotFound,
                    format!("stream {name:?} does not exist"),
                ),
            },
            ControllerCommand::SetReplicas {
                stream,
                partition,
                replicas,
                preferred_leader,
            } => {
                let Some(s) = self.streams.get_mut(&stream) else {
                    return refuse(
                        ErrorCode::StreamNotFound,
                        format!("stream {stream:?} does not exist"),
                    );
                };
                let Some(p) = s.partitions.get_mut(partition as usize) else {
                    return refuse(
                        ErrorCode::NotFound,
                        format!("stream {stream:?} has no partition {partition}"),
                    );
                };
                p.replicas = replicas;
                p.preferred_leader = preferred_leader;
                // The group runs: from now on members learn their config
                // from its leader, and nobody may initialize it again.
                p.initial_members.clear();
                ControllerResponse::Ok
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(nodes: u64, rf: Option<u32>) -> ClusterMeta {
        let mut meta = ClusterMeta::default();
        for id in 1..=nodes {
            let info = NodeInfo {
                raft_addr: format!("127.0.0.1:{}", 7100 + id),
                http_addr: format!("127.0.0.1:{}", 7000 + id),
            };
            assert_eq!(
                meta.apply(ControllerCommand::RegisterNode { id, info }),
                ControllerResponse::Ok
            );
        }
        let created = meta.apply(ControllerCommand::CreateStream {
            name: "app".into(),
            partitions: 2,
            replication_factor: rf,
            log: Default::default(),
            created_us: 0,
        });
        assert!(matches!(created, ControllerResponse::StreamCreated(_)));
        meta
    }

    #[test]
    fn decommission_below_the_replication_factor_or_the_controller_majority_is_refused() {
        // Three nodes, RF 3: no node can go.
        let meta = cluster(3, Some(3));
        let why = meta.decommission_refusal(3, &[1, 2, 3]).expect("refused");
        assert!(
            why.contains("replication factor 3") && why.contains("2 active"),
            "{why}"
        );

        // Four nodes, RF 3: one may go; then no other can.
        let mut meta = cluster(4, Some(3));
        assert_eq!(meta.decommission_refusal(4, &[1, 2, 3]), None);
        meta.apply(ControllerCommand::SetNodeState {
            id: 4,
            state: NodeAdminState::Draining,
        });
        assert!(meta.decommission_refusal(3, &[1, 2, 3]).is_some());

        // RF 1 streams do not hold anyone back, but the controller does:
        // two of three voters cannot both go.
        let mut meta = cluster(3, Some(1));
        assert_eq!(meta.decommission_refusal(3, &[1, 2, 3]), None);
        meta.apply(ControllerCommand::SetNodeState {
            id: 3,
            state: NodeAdminState::Draining,
        });
        let why = meta.decommission_refusal(2, &[1, 2, 3]).expect("refused");
        assert!(
            why.contains("controller") && why.contains("majority of 2"),
            "{why}"
        );
        // A learner (not a voter) is free to go as far as the controller is
        // concerned.
        assert_eq!(cluster(3, Some(1)).decommission_refusal(3, &[1, 2]), None);
    }
}
