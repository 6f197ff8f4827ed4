//! One partition replica: its Raft group, its log, and (used while this
//! replica leads) the coalescer that turns concurrent writes into one Raft
//! entry each (see `coalesce`), at most [`MAX_PROPOSALS_IN_FLIGHT`] at a
//! time.
//!
//! # Replication telemetry
//!
//! Each group keeps a [`super::replication::GroupReplication`]: the batcher
//! tells it which Raft index and offsets every committed batch got (for lag
//! lookups), and a task follows openraft's metrics channel for leader
//! changes and quorum attribution.
//!
//! # Write stages
//! The proposal coalescer records each write's `linger` (waiting to be
//! proposed) and `replicate`: from this leader's own append of the batch
//! being durable until `client_write` returns, i.e. until a quorum has it
//! and the leader has applied it (applying only advances an offset). It is
//! 0 when the followers' acks arrived before the leader's own fsync. Both
//! count once per client request the write carries (see `coalesce`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::coalesce::{Coalescer, Delivered};
use super::error::{ClusterError, GroupName};
use crate::raft::ReplicaState;
use crate::raft::types::{Appended, PartitionPayload, PartitionRaftConfig};
use crate::transport::NodeId;
use cairn_storage::PartitionLog;
use cairn_types::batch::RecordBatch;
use cairn_types::clock::Clock;
use openraft::Raft;
use openraft::error::{ClientWriteError, RaftError};

/// Raft entries one partition leader has proposed but not yet seen commit.
pub const MAX_PROPOSALS_IN_FLIGHT: usize = 4;

/// Which partition a group is.
#[derive(Debug, Clone)]
pub(crate) struct GroupId {
    pub group: u64,
    pub stream: String,
    pub partition: u32,
}

/// How a group's leader takes writes: batch size, and what it needs to
/// time their cluster-side stages.
pub(crate) struct Proposals {
    /// Largest batch proposed as one Raft entry.
    pub max_batch_bytes: usize,
    /// Filled by the group's log store as indexes become durable.
    pub durable: Arc<crate::raft::log_store::DurableMarks>,
    pub observer: Option<super::StageObserver>,
    /// Stamps proposals, for lag ages.
    pub clock: Arc<dyn Clock>,
}

/// A running partition replica.
pub struct PartitionGroup {
    pub group: u64,
    pub stream: String,
    pub partition: u32,
    pub raft: Raft<PartitionRaftConfig>,
    pub log: PartitionLog,
    pub state: Arc<ReplicaState>,
    /// The group's `raft.json`, flushed when the group stops so the
    /// lazily written committed id survives a clean restart.
    pub(crate) meta: Arc<crate::raft::MetaFile>,
    node_id: NodeId,
    proposals: Coalescer,
    replication: Arc<super::replication::GroupReplication>,
    /// Why anti-entropy took this replica out of service for reads.
    quarantine: parking_lot::Mutex<Option<String>>,
    /// What the group's elections know (whether the leader is lost).
    election: Arc<crate::raft::leadership::ElectionHints>,
    /// Writes hold it shared from before they are proposed until they
    /// commit; a leader transfer takes it exclusively, so it starts once
    /// every proposed write has committed and new ones wait for its end
    /// (then find another leader) instead of failing half-way.
    handover: tokio::sync::RwLock<()>,
}

impl PartitionGroup {
    // One call site (the reconciler), which has each part at hand.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        node_id: NodeId,
        id: GroupId,
        raft: Raft<PartitionRaftConfig>,
        log: PartitionLog,
        state: Arc<ReplicaState>,
        meta: Arc<crate::raft::MetaFile>,
        stages: Proposals,
        election: Arc<crate::raft::leadership::ElectionHints>,
    ) -> Arc<Self> {
        let replication = super::replication::GroupReplication::new(node_id);
        super::replication::spawn_watcher(&raft, &replication, stages.clock.clone());
        let proposals = {
            let (raft, replication) = (raft.clone(), replication.clone());
            let name = GroupName::partition(id.group, &id.stream, id.partition);
            let (durable, clock) = (stages.durable, stages.clock);
            Coalescer::spawn(
                MAX_PROPOSALS_IN_FLIGHT,
                stages.max_batch_bytes,
                stages.observer,
                move |batch| {
                    let (raft, replication, durable, name) = (
                        raft.clone(),
                        replication.clone(),
                        durable.clone(),
                        name.clone(),
                    );
                    let proposed_us = clock.unix_us();
                    async move {
                        propose(&raft, &name, batch, &replication, &durable, proposed_us).await
                    }
                },
            )
        };
        Arc::new(Self {
            group: id.group,
            stream: id.stream,
            partition: id.partition,
            raft: raft.clone(),
            log,
            state,
            meta,
            node_id,
            proposals,
            replication,
            quarantine: parking_lot::Mutex::new(None),
            election,
            handover: tokio::sync::RwLock::new(()),
        })
    }

    /// How errors and logs name this group: `stream app partition 4`.
    pub fn name(&self) -> GroupName {
        GroupName::partition(self.group, &self.stream, self.partition)
    }

    /// The leader of this group as this replica knows it.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.node_id)
    }

    /// Why this replica, leading, may not serve a leader read yet: it must
    /// have applied an entry of its own term (before that it may not know
    /// everything its predecessors committed) and heard from a quorum
    /// within `lease` (a leader restored from its persisted vote at
    /// restart, or cut off, may have been deposed; followers elect another
    /// only after the lease). openraft 0.9 has no read index; this is the
    /// lease-based equivalent.
    pub(crate) fn leader_read_refusal(&self, lease: Duration) -> Option<String> {
        // Borrowed, not cloned: this runs on every leader read.
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let term = m.current_term;
        if m.last_applied.is_none_or(|l| l.leader_id.term != term) {
            return Some(format!("has applied no entry of its term {term} yet"));
        }
        if m.membership_config.membership().voter_ids().count() <= 1 {
            // Its own quorum: nobody else can lead.
            return None;
        }
        match m.millis_since_quorum_ack {
            Some(ms) if Duration::from_millis(ms) < lease => None,
            Some(ms) => Some(format!("has heard from no quorum for {ms} ms")),
            None => Some("has heard from no quorum in this term".to_owned()),
        }
    }

    /// `Some(reason)` while anti-entropy has taken this replica out of
    /// service: it holds data it could not repair, so it must not serve
    /// reads (Raft still runs, so a later scan can repair it).
    pub fn quarantined(&self) -> Option<String> {
        self.quarantine.lock().clone()
    }

    pub(crate) fn set_quarantine(&self, reason: Option<String>) {
        *self.quarantine.lock() = reason;
    }

    /// This replica's replication state for telemetry. `reachable` says
    /// whether the failure detector considers a peer up.
    pub fn replication_report(
        &self,
        reachable: &dyn Fn(NodeId) -> bool,
        now_us: i64,
    ) -> cairn_telemetry::replication::PartitionReplication {
        let mut o = super::replication::Observation::of(&self.raft.metrics().borrow());
        if !o.is_leader && self.election.leader_lost() {
            // Not heard from for longer than the lease: no leader known.
            o.leader = None;
        }
        self.replication.report(
            &o,
            &self.stream,
            self.partition,
            self.state.applied_end_offset(),
            reachable,
            now_us,
        )
    }

    /// Appends `batch` through Raft if this replica leads; answers once the
    /// batch is committed on a majority. `NotLeader` (retryable) if it does
    /// not lead at the time of the call.
    pub async fn append_as_leader(&self, batch: RecordBatch) -> Result<Appended, ClusterError> {
        let not_leader = || ClusterError::NotLeader {
            group: self.name(),
            leader: self.leader(),
        };
        if !self.is_leader() {
            return Err(not_leader());
        }
        // Waits only while a leader transfer runs; then, most likely, this
        // node no longer leads and the write goes to the one that does.
        let _writing = self.handover.read().await;
        if !self.is_leader() {
            return Err(not_leader());
        }
        self.proposals.submit(batch).await
    }

    /// Holds this group's writes for a leader transfer: waits (up to
    /// `within`) until every write proposed here has committed; new writes
    /// wait until the guard is dropped. `None` if they did not drain.
    pub(crate) async fn hold_writes(
        &self,
        within: Duration,
    ) -> Option<tokio::sync::RwLockWriteGuard<'_, ()>> {
        tokio::time::timeout(within, self.handover.write())
            .await
            .ok()
    }
}

impl std::fmt::Debug for PartitionGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionGroup")
            .field("group", &self.group)
            .field("stream", &self.stream)
            .field("partition", &self.partition)
            .finish_non_exhaustive()
    }
}

/// Proposes one (merged) batch through Raft on the leader.
async fn propose(
    raft: &Raft<PartitionRaftConfig>,
    name: &GroupName,
    batch: RecordBatch,
    replication: &super::replication::GroupReplication,
    durable: &crate::raft::log_store::DurableMarks,
    proposed_us: i64,
) -> Result<Delivered, ClusterError> {
    match raft
        .client_write(PartitionPayload::Batch(batch.as_bytes().clone()))
        .await
    {
        Ok(resp) => {
            replication.record_batch(
                resp.log_id.index,
                resp.data.base_offset,
                resp.data.count,
                proposed_us,
            );
            let replicate = durable.take(resp.log_id.index).map_or(Duration::ZERO, |t| {
                Instant::now().saturating_duration_since(t)
            });
            Ok((resp.data, Some(replicate)))
        }
        // The entry was handed to Raft: unless Raft says it never took it,
        // it may still commit under a new leader.
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(ClusterError::Indeterminate(format!(
                "leadership of {name} moved to {:?} during the write",
                f.leader_id
            )))
        }
        Err(other) => Err(ClusterError::Indeterminate(other.to_string())),
    }
}
