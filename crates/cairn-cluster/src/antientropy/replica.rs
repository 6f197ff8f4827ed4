//! A replica's side of anti-entropy: answering the steps of a scan
//! (bounds, Merkle nodes over its digests, fetching and overwriting
//! batches, quarantine) and asking them of another replica, or of itself
//! in-process.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cairn_storage::{DigestMode, LeafDigests, PartitionLog};
use cairn_types::batch::RecordBatch;
use futures::future::BoxFuture;

use super::host::Host;
use super::tree::MerkleTree;
use super::wire::{AeRequest, AeResponse};
use crate::cluster::error::ClusterError;
use crate::transport::NodeId;

/// Deadline of one anti-entropy RPC (a digest request may read a lot under
/// the rate limit).
const RPC_DEADLINE: Duration = Duration::from_secs(600);

pub(super) async fn digests(
    rt: &dyn Host,
    log: &PartitionLog,
    range: Range<u64>,
    mode: DigestMode,
) -> Result<LeafDigests, ClusterError> {
    let log = log.clone();
    let limiter = rt.anti_entropy().limiter.clone();
    // Counted as it is read, so a long deep scan shows progress.
    let read = rt.anti_entropy().totals.bytes_read.clone();
    tokio::task::spawn_blocking(move || {
        log.leaf_digests(range, mode, &mut |n| {
            limiter.take_blocking(n);
            read.fetch_add(n, Ordering::Relaxed);
        })
    })
    .await
    .map_err(|e| ClusterError::Storage(format!("digest task: {e}")))?
    .map_err(storage_err)
}

pub(crate) async fn serve(
    rt: &Arc<dyn Host>,
    group: u64,
    request: AeRequest,
) -> Result<AeResponse, ClusterError> {
    // A replica whose Raft could not start (say, on a damaged batch it
    // must read at startup) is still compared and repaired.
    let (log, g) = match rt.replica(group) {
        Ok(g) => (g.log.clone(), Some(g)),
        Err(e) => match rt.stalled_log(group) {
            Some(log) => (log, None),
            None => return Err(e),
        },
    };
    match request {
        AeRequest::Bounds => {
            let (first, next) = log.index_bounds();
            Ok(AeResponse::Bounds {
                first,
                next,
                quarantined: g.is_some_and(|g| g.quarantined().is_some()),
            })
        }
        AeRequest::Nodes {
            range,
            mode,
            level,
            positions,
        } => {
            let digests = digests(rt.as_ref(), &log, range, mode).await?;
            let tree = MerkleTree::build(digests.leaves);
            let hashes = tree.nodes(level, &positions).ok_or_else(|| {
                ClusterError::Storage(format!(
                    "anti-entropy: no tree nodes {positions:?} at level {level} ({} leaves)",
                    tree.leaf_count()
                ))
            })?;
            Ok(AeResponse::Nodes {
                hashes,
                damaged: digests.damaged,
                bytes_read: digests.bytes_read,
            })
        }
        AeRequest::Fetch { range, max_bytes } => {
            let wanted = range.clone();
            let batches = tokio::task::spawn_blocking(move || {
                log.read_index_range(wanted, max_bytes as usize)
            })
            .await
            .map_err(|e| ClusterError::Storage(format!("fetch task: {e}")))?
            .map_err(storage_err)?;
            if batches.first().map(RecordBatch::log_index) != Some(range.start) {
                return Err(ClusterError::Storage(format!(
                    "anti-entropy: this replica cannot supply index {}",
                    range.start
                )));
            }
            let mut out = BytesMut::with_capacity(batches.iter().map(RecordBatch::len).sum());
            for b in &batches {
                out.extend_from_slice(b.as_bytes());
            }
            Ok(AeResponse::Batches(out.freeze()))
        }
        AeRequest::Repair { batches } => {
            let batches = RecordBatch::split_all(batches)
                .map_err(|e| ClusterError::Storage(format!("repair batches: {e}")))?;
            let outcome = log.repair(batches).await.map_err(storage_err)?;
            tracing::info!(
                group,
                batches = outcome.batches,
                bytes = outcome.bytes_written,
                "anti-entropy repaired this replica"
            );
            Ok(AeResponse::Repaired {
                batches: outcome.batches,
                bytes: outcome.bytes_written,
            })
        }
        AeRequest::Quarantine { reason } => {
            // A replica that did not start serves no reads anyway.
            let Some(g) = g else {
                return Ok(AeResponse::Done);
            };
            match &reason {
                Some(r) => {
                    tracing::error!(group, stream = %g.stream, partition = g.partition, reason = %r, "replica quarantined: it no longer serves reads")
                }
                None => {
                    tracing::info!(group, stream = %g.stream, partition = g.partition, "replica back in service")
                }
            }
            g.set_quarantine(reason);
            Ok(AeResponse::Done)
        }
        // A scan is run by the partition's leader (`scheduler::handle`),
        // never asked of a replica.
        AeRequest::Scan { .. } => Err(ClusterError::Storage(
            "anti-entropy: a scan request reached a replica's service".into(),
        )),
    }
}

/// Sends `request` to `node`'s replica (in-process for this node).
/// Boxed, so a scan can hold many at once (`join_all`) of one type.
pub(crate) fn ask(
    rt: &Arc<dyn Host>,
    node: NodeId,
    group: u64,
    request: AeRequest,
) -> BoxFuture<'static, Result<AeResponse, ClusterError>> {
    let this = rt.clone();
    Box::pin(async move {
        if node == this.me() {
            return serve(&this, group, request).await;
        }
        let payload = postcard::to_allocvec(&request)
            .map_err(|e| ClusterError::Storage(format!("encode: {e}")))?;
        let reply = this
            .call(node, group, Bytes::from(payload), RPC_DEADLINE)
            .await?;
        decode_reply(node, &reply)
    })
}

/// A peer's reply to an anti-entropy request: its `Result`, postcard-encoded.
pub(super) fn decode_reply(node: NodeId, reply: &[u8]) -> Result<AeResponse, ClusterError> {
    postcard::from_bytes::<Result<AeResponse, ClusterError>>(reply)
        .map_err(|e| ClusterError::Indeterminate(format!("bad reply from node {node}: {e}")))?
}

pub(super) fn storage_err(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Storage(e.to_string())
}
