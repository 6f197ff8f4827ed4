//! What anti-entropy needs of the node it runs on, and nothing more: its
//! replicas, where placement puts a partition, a call to a peer's
//! anti-entropy service, and the node's shutdown. The cluster runtime
//! implements it (`cluster::Inner`); anti-entropy sits below the runtime
//! and never sees its fields.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_storage::PartitionLog;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::AntiEntropy;
use crate::cluster::error::{ClusterError, GroupName};
use crate::cluster::group::PartitionGroup;
use crate::transport::NodeId;

pub(crate) trait Host: Send + Sync + 'static {
    fn me(&self) -> NodeId;

    /// This node's anti-entropy state.
    fn anti_entropy(&self) -> &AntiEntropy;

    /// This node's running replica of `group`, or `NoSuchGroup`.
    fn replica(&self, group: u64) -> Result<Arc<PartitionGroup>, ClusterError>;

    /// The log of this node's replica of `group` if its Raft could not
    /// start (compared and repaired all the same).
    fn stalled_log(&self, group: u64) -> Option<PartitionLog>;

    /// Every replica this node runs.
    fn replicas(&self) -> Vec<Arc<PartitionGroup>>;

    /// The nodes the metadata places `group` on.
    fn placed_on(&self, group: u64) -> Vec<NodeId>;

    fn group_name(&self, group: u64) -> GroupName;

    /// How long a request may look for a leader.
    fn request_timeout(&self) -> Duration;

    fn shutdown(&self) -> &CancellationToken;

    /// Wall-clock milliseconds since the epoch, by the runtime's clock.
    fn unix_ms(&self) -> u64;

    /// Sends an anti-entropy request (postcard-encoded) to `node`; answers
    /// the reply's bytes.
    fn call(
        &self,
        node: NodeId,
        group: u64,
        payload: Bytes,
        deadline: Duration,
    ) -> BoxFuture<'_, Result<Bytes, ClusterError>>;
}
