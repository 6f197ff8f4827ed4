//! Replica moves: what makes node join and decommission work on a live
//! cluster.
//!
//! The controller leader compares each stream's placement with what the
//! consistent-hash ring says for the current set of active nodes
//! (`placement::rebalance`: only partitions the change touches move) and
//! moves one partition at a time:
//!
//! 1. record the union of old and new replicas (`SetReplicas`), so the
//!    added nodes start the (uninitialized) group and can receive entries;
//! 2. on the partition leader: add each new node as a learner and wait until
//!    it has caught up — its matched index (the leader's replication
//!    metrics) at the leader's committed index; a node that never answers
//!    never gets there and the move fails, to be planned again — then change
//!    the voter set to the new replicas (openraft's joint consensus keeps a
//!    majority of both sets in charge);
//! 3. record the new replicas; nodes no longer listed stop the group and
//!    delete its data.
//!
//! Joined nodes receive the metadata as learners of the controller group;
//! two caught-up learners at a time are promoted to voters, up to five, so
//! the voter set stays odd.
//!
//! A draining node is not in the active set, so its replicas move away;
//! once it holds none, it is removed from the metadata and from the
//! controller group. A move interrupted by a crash is simply planned again:
//! every step is idempotent.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};

use super::{Cluster, ClusterError, Inner, kinds};
use crate::controller::ControllerCommand;
use crate::controller::meta::{NodeAdminState, StreamMeta};
use crate::placement::{self, PartitionMove, ReplicaSet};
use crate::raft::types::NodeInfo;
use crate::transport::NodeId;

/// The request a partition leader gets in step 2.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChangeReplicas {
    pub target: BTreeMap<NodeId, NodeInfo>,
}

/// How long step 2 may take (a learner catching up with a large log).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(120);
/// The controller grows to this many voters at most (5 tolerate two
/// failures; more would only slow every metadata change).
pub const MAX_CONTROLLER_VOTERS: usize = 5;
/// How long a new replica may take to catch up before a move gives up
/// (and is planned again a second later).
const CAUGHT_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits until every node of `newcomers` has matched the leader's
/// committed index (as the leader's replication metrics say); the ones
/// still behind at `timeout`, if any.
async fn wait_caught_up<C>(
    raft: &openraft::Raft<C>,
    newcomers: &[NodeId],
    timeout: Duration,
) -> Result<(), Vec<NodeId>>
where
    C: openraft::RaftTypeConfig<NodeId = NodeId, Node = NodeInfo>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut metrics = raft.metrics();
    loop {
        let behind: Vec<NodeId> = {
            let m = metrics.borrow_and_update();
            let committed = m.last_applied.map(|l| l.index);
            newcomers
                .iter()
                .copied()
                .filter(|n| {
                    let matched = m
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(n).copied().flatten())
                        .map(|l| l.index);
                    matched < committed || matched.is_none()
                })
                .collect()
        };
        if behind.is_empty() {
            return Ok(());
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return Err(behind) },
            _ = tokio::time::sleep_until(deadline) => return Err(behind),
        }
    }
}

impl Inner {
    /// Step 2, on the partition leader.
    pub(crate) async fn change_replicas_locally(
        &self,
        group: u64,
        change: ChangeReplicas,
    ) -> Result<(), ClusterError> {
        let g = self.group_or_err(group)?;
        if !g.is_leader() {
            return Err(ClusterError::NotLeader {
                group: g.name(),
                leader: g.leader(),
            });
        }
        let current: BTreeSet<NodeId> = g
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect();
        for (id, info) in &change.target {
            if !current.contains(id) {
                g.raft
                    .add_learner(*id, info.clone(), true)
                    .await
                    .map_err(|e| ClusterError::Indeterminate(format!("add learner {id}: {e}")))?;
            }
        }
        let voters: BTreeSet<NodeId> = change.target.keys().copied().collect();
        // A new replica counts only once it holds what the group has
        // committed: a node that never answers (a dead address that joined)
        // must not take a real voter's place.
        let newcomers: Vec<NodeId> = voters
            .iter()
            .copied()
            .filter(|v| {
                !g.raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .any(|x| x == *v)
            })
            .collect();
        wait_caught_up(&g.raft, &newcomers, CAUGHT_UP_TIMEOUT)
            .await
            .map_err(|behind| {
                ClusterError::Unavailable(format!(
                    "{}: new replica(s) {behind:?} have not caught up within {CAUGHT_UP_TIMEOUT:?}; \
                     the voters stay as they are",
                    g.name()
                ))
            })?;
        g.raft
            .change_membership(ChangeMembers::ReplaceAllVoters(voters), false)
            .await
            .map_err(|e| ClusterError::Indeterminate(format!("change membership: {e}")))?;
        Ok(())
    }
}

impl Cluster {
    fn is_controller_leader(&self) -> bool {
        self.inner.controller().metrics().borrow().current_leader == Some(self.node_id())
    }

    /// Runs on every node; acts while this node leads the controller.
    pub(crate) async fn mover_loop(self) {
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if !self.is_controller_leader() {
                continue;
            }
            if let Err(e) = self.rebalance_once().await {
                tracing::warn!(error = %e, "replica move failed; will retry");
            }
        }
    }

    /// Plans against the current metadata and performs the first move (one
    /// at a time bounds the copy load), or removes a drained node.
    async fn rebalance_once(&self) -> Result<(), ClusterError> {
        let meta = self.meta();
        let active = meta.active_nodes();
        if active.is_empty() {
            return Ok(());
        }
        for stream in meta.streams.values() {
            let rf = stream.replication_factor.min(active.len() as u32);
            let old: Vec<ReplicaSet> = stream
                .partitions
                .iter()
                .map(|p| ReplicaSet {
                    replicas: p.replicas.clone(),
                    preferred_leader: p.preferred_leader,
                })
                .collect();
            let plan = match placement::rebalance(&stream.name, &old, rf, &active) {
                Ok(plan) => plan,
                Err(e) => {
                    tracing::debug!(stream = %stream.name, error = %e, "no placement");
                    continue;
                }
            };
            if let Some(mv) = plan.moves.first() {
                let preferred = plan.assignment[mv.partition as usize].preferred_leader;
                return self.move_partition(stream, mv, preferred).await;
            }
        }
        for node in meta.nodes.values() {
            if node.state == NodeAdminState::Draining && meta.groups_of(node.id).is_empty() {
                self.forget_node(node.id).await?;
            }
        }
        self.grow_controller(&active).await
    }

    /// Promotes caught-up learners of the controller group to voters, two
    /// at a time, while that keeps the voter set odd and at most
    /// [`MAX_CONTROLLER_VOTERS`]: a cluster grown from 3 to 5 nodes then
    /// survives two failures instead of one. An even set tolerates no more
    /// failures than the odd one below it, so a lone learner waits for a
    /// second.
    async fn grow_controller(&self, active: &[NodeId]) -> Result<(), ClusterError> {
        let controller = self.inner.controller();
        let (voters, learners) = {
            let m = controller.metrics();
            let m = m.borrow();
            let membership = m.membership_config.membership();
            let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
            let learners: Vec<NodeId> = membership
                .learner_ids()
                .filter(|l| active.contains(l))
                .collect();
            (voters, learners)
        };
        if voters.len() + 2 > MAX_CONTROLLER_VOTERS || learners.len() < 2 {
            return Ok(());
        }
        let up: Vec<NodeId> = learners
            .into_iter()
            .filter(|l| self.inner.heartbeats.state(*l) == Some(crate::membership::NodeState::Up))
            .take(2)
            .collect();
        if up.len() < 2 {
            return Ok(());
        }
        if wait_caught_up(&controller, &up, Duration::from_secs(5))
            .await
            .is_err()
        {
            return Ok(());
        }
        tracing::info!(promoted = ?up, voters = voters.len() + 2, "controller: learners become voters");
        controller
            .change_membership(ChangeMembers::AddVoterIds(up.into_iter().collect()), false)
            .await
            .map_err(|e| ClusterError::Indeterminate(format!("promote controller voters: {e}")))?;
        Ok(())
    }

    async fn move_partition(
        &self,
        stream: &StreamMeta,
        mv: &PartitionMove,
        preferred: NodeId,
    ) -> Result<(), ClusterError> {
        let meta = self.meta();
        let p = &stream.partitions[mv.partition as usize];
        tracing::info!(
            stream = %stream.name, partition = mv.partition, from = ?mv.from, to = ?mv.to,
            "moving partition replicas"
        );
        let mut union = mv.from.clone();
        for n in &mv.added {
            if !union.contains(n) {
                union.push(*n);
            }
        }
        if p.replicas != union {
            self.set_replicas(stream, mv.partition, union, p.preferred_leader)
                .await?;
        }
        let target: BTreeMap<NodeId, NodeInfo> = mv
            .to
            .iter()
            .map(|id| {
                meta.nodes
                    .get(id)
                    .map(|n| (*id, n.info.clone()))
                    .ok_or_else(|| {
                        ClusterError::Unavailable(format!("node {id} is not registered"))
                    })
            })
            .collect::<Result<_, _>>()?;
        let change = postcard::to_allocvec(&ChangeReplicas { target })
            .map_err(|e| ClusterError::Storage(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + CHANGE_TIMEOUT;
        let mut attempt = 0;
        loop {
            let leader = self
                .leader_guess(p.group, attempt)
                .ok_or_else(|| ClusterError::Unavailable("no replica to ask".into()))?;
            attempt += 1;
            let result: Result<(), ClusterError> = if leader == self.node_id() {
                let change = postcard::from_bytes(&change).expect("just encoded");
                self.inner.change_replicas_locally(p.group, change).await
            } else {
                self.inner
                    .call(
                        leader,
                        p.group,
                        kinds::CHANGE_REPLICAS,
                        change.clone().into(),
                        super::remaining(deadline),
                    )
                    .await
            };
            match result {
                Ok(()) => break,
                Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
        self.set_replicas(stream, mv.partition, mv.to.clone(), preferred)
            .await?;
        tracing::info!(stream = %stream.name, partition = mv.partition, to = ?mv.to, "partition moved");
        Ok(())
    }

    async fn set_replicas(
        &self,
        stream: &StreamMeta,
        partition: u32,
        replicas: Vec<NodeId>,
        preferred_leader: NodeId,
    ) -> Result<(), ClusterError> {
        let preferred_leader = if replicas.contains(&preferred_leader) {
            preferred_leader
        } else {
            replicas[0]
        };
        self.command(ControllerCommand::SetReplicas {
            stream: stream.name.clone(),
            partition,
            replicas,
            preferred_leader,
        })
        .await?;
        Ok(())
    }

    /// Removes a drained node from the controller group and the metadata.
    async fn forget_node(&self, id: NodeId) -> Result<(), ClusterError> {
        let (in_group, voters) = {
            let metrics = self.inner.controller().metrics();
            let metrics = metrics.borrow();
            let membership = metrics.membership_config.membership();
            (
                membership.get_node(&id).is_some(),
                membership.voter_ids().collect::<BTreeSet<NodeId>>(),
            )
        };
        if in_group {
            let change = if voters.contains(&id) {
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            } else {
                ChangeMembers::RemoveNodes(BTreeSet::from([id]))
            };
            self.inner
                .controller()
                .change_membership(change, false)
                .await
                .map_err(|e| {
                    ClusterError::Indeterminate(format!(
                        "remove node {id} from the controller: {e}"
                    ))
                })?;
        }
        self.command(ControllerCommand::RemoveNode { id }).await?;
        tracing::info!(node = id, "decommissioned node removed from the cluster");
        Ok(())
    }

    /// Marks node `id` draining: its replicas move away, then it leaves.
    /// Refused (`Refused`, 409) when that would leave a stream below its
    /// replication factor or the controller without a majority, unless
    /// `force`.
    pub async fn decommission(&self, id: NodeId, force: bool) -> Result<(), ClusterError> {
        if !force {
            let voters: Vec<NodeId> = self
                .inner
                .controller()
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .voter_ids()
                .collect();
            if let Some(reason) = self.meta().decommission_refusal(id, &voters) {
                return Err(ClusterError::Refused {
                    code: cairn_types::ErrorCode::Conflict.number(),
                    message: format!(
                        "decommissioning node {id} refused: {reason} (force to override)"
                    ),
                });
            }
        }
        self.command(ControllerCommand::SetNodeState {
            id,
            state: NodeAdminState::Draining,
        })
        .await?;
        Ok(())
    }
}
