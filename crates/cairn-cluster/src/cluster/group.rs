//! One partition replica: its Raft group, its log, and (used while this
//! replica leads) the batcher that coalesces concurrent writes.
//!
//! # Batching
//!
//! Writes for a partition queue on one channel. The batcher proposes at
//! most [`MAX_PROPOSALS_IN_FLIGHT`] Raft entries at a time; whatever queued
//! while those were in flight becomes the next entry (up to
//! `max_batch_bytes`). Under light load a write is proposed at once (no
//! timer, so no added latency); under heavy load batches grow by
//! themselves, which is what a linger timer approximates. A lone request's
//! batch is proposed as is; several are merged by re-encoding their entries
//! into one batch (entries are delta-encoded, so payloads cannot simply be
//! concatenated). Each request learns its own offsets from the merged
//! entry's base offset and its position in it.
//!
//! # Replication telemetry
//!
//! Each group keeps a [`super::replication::GroupReplication`]: the batcher
//! tells it which Raft index and offsets every committed batch got (for lag
//! lookups), and a task follows openraft's metrics channel for leader
//! changes and quorum attribution.

use std::sync::Arc;

use cairn_storage::PartitionLog;
use cairn_types::batch::{BatchBuilder, RecordBatch};
use openraft::Raft;
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::error::ClusterError;
use crate::raft::ReplicaState;
use crate::raft::types::{Appended, BatchPayload, PartitionRaftConfig};
use crate::transport::NodeId;

/// Raft entries one partition leader has proposed but not yet seen commit.
pub const MAX_PROPOSALS_IN_FLIGHT: usize = 4;

/// A write waiting for its batch to commit.
struct Pending {
    batch: RecordBatch,
    reply: oneshot::Sender<Result<Appended, ClusterError>>,
}

/// Which partition a group is.
#[derive(Debug, Clone)]
pub(crate) struct GroupId {
    pub group: u64,
    pub stream: String,
    pub partition: u32,
}

/// A running partition replica.
pub struct PartitionGroup {
    pub group: u64,
    pub stream: String,
    pub partition: u32,
    pub raft: Raft<PartitionRaftConfig>,
    pub log: PartitionLog,
    pub state: Arc<ReplicaState>,
    node_id: NodeId,
    queue: mpsc::UnboundedSender<Pending>,
    replication: Arc<super::replication::GroupReplication>,
}

impl PartitionGroup {
    pub(crate) fn new(
        node_id: NodeId,
        id: GroupId,
        raft: Raft<PartitionRaftConfig>,
        log: PartitionLog,
        state: Arc<ReplicaState>,
        max_batch_bytes: usize,
    ) -> Arc<Self> {
        let (queue, rx) = mpsc::unbounded_channel();
        let replication = super::replication::GroupReplication::new(node_id);
        super::replication::spawn_watcher(&raft, &replication);
        let group = Arc::new(Self {
            group: id.group,
            stream: id.stream,
            partition: id.partition,
            raft: raft.clone(),
            log,
            state,
            node_id,
            queue,
            replication: replication.clone(),
        });
        tokio::spawn(run_batcher(
            raft,
            group.group,
            rx,
            max_batch_bytes,
            replication,
        ));
        group
    }

    /// The leader of this group as this replica knows it.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.node_id)
    }

    /// This replica's replication state for telemetry. `reachable` says
    /// whether the failure detector considers a peer up.
    pub fn replication_report(
        &self,
        reachable: &dyn Fn(NodeId) -> bool,
        now_us: i64,
    ) -> cairn_telemetry::replication::PartitionReplication {
        let o = super::replication::Observation::of(&self.raft.metrics().borrow());
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
        if !self.is_leader() {
            return Err(ClusterError::NotLeader {
                group: self.group,
                leader: self.leader(),
            });
        }
        let (reply, rx) = oneshot::channel();
        self.queue
            .send(Pending { batch, reply })
            .map_err(|_| ClusterError::ShuttingDown)?;
        rx.await.map_err(|_| ClusterError::ShuttingDown)?
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

async fn run_batcher(
    raft: Raft<PartitionRaftConfig>,
    group: u64,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    max_batch_bytes: usize,
    replication: Arc<super::replication::GroupReplication>,
) {
    let slots = Arc::new(Semaphore::new(MAX_PROPOSALS_IN_FLIGHT));
    let mut carry: Option<Pending> = None;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut bytes = first.batch.len();
        let mut writes = vec![first];
        while bytes < max_batch_bytes {
            match rx.try_recv() {
                Ok(p) if bytes + p.batch.len() > max_batch_bytes => {
                    carry = Some(p);
                    break;
                }
                Ok(p) => {
                    bytes += p.batch.len();
                    writes.push(p);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        let replication = replication.clone();
        tokio::spawn(async move {
            propose(&raft, group, writes, &replication).await;
            drop(slot);
        });
    }
}

async fn propose(
    raft: &Raft<PartitionRaftConfig>,
    group: u64,
    writes: Vec<Pending>,
    replication: &super::replication::GroupReplication,
) {
    let merged = if writes.len() == 1 {
        Ok(writes[0].batch.clone())
    } else {
        merge(writes.iter().map(|w| &w.batch))
    };
    let merged = match merged {
        Ok(b) => b,
        Err(e) => {
            for w in writes {
                let _ = w.reply.send(Err(ClusterError::Storage(e.clone())));
            }
            return;
        }
    };
    let proposed_us = super::replication::now_us();
    let result = raft
        .client_write(BatchPayload(merged.as_bytes().clone()))
        .await;
    match result {
        Ok(resp) => {
            replication.record_batch(
                resp.log_id.index,
                resp.data.base_offset,
                resp.data.count,
                proposed_us,
            );
            let mut offset = resp.data.base_offset;
            for w in writes {
                let count = w.batch.count();
                let _ = w.reply.send(Ok(Appended {
                    base_offset: offset,
                    count,
                }));
                offset += u64::from(count);
            }
        }
        Err(e) => {
            // The entry was handed to Raft: unless Raft says it never took
            // it, it may still commit under a new leader.
            let err = match e {
                RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                    ClusterError::Indeterminate(format!(
                        "leadership of group {group} moved to {:?} during the write",
                        f.leader_id
                    ))
                }
                other => ClusterError::Indeterminate(other.to_string()),
            };
            for w in writes {
                let _ = w.reply.send(Err(err.clone()));
            }
        }
    }
}

/// Re-encodes several batches' entries into one.
fn merge<'a>(batches: impl Iterator<Item = &'a RecordBatch>) -> Result<RecordBatch, String> {
    let mut builder = BatchBuilder::new();
    for batch in batches {
        for entry in batch.entries() {
            let (_, entry) = entry.map_err(|e| e.to_string())?;
            builder.push_ref(&entry).map_err(|e| e.to_string())?;
        }
    }
    Ok(builder.finish())
}
