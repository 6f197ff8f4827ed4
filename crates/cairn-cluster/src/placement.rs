//! Placeholder until the consistent-hash placement lands (same signature).
use crate::transport::NodeId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSet {
    pub replicas: Vec<NodeId>,
    pub preferred_leader: NodeId,
}

#[derive(Debug, thiserror::Error)]
#[error("replication factor {rf} needs at least {rf} nodes, have {nodes}")]
pub struct PlacementError {
    rf: u32,
    nodes: usize,
}

pub fn assign(
    _stream: &str,
    partitions: u32,
    rf: u32,
    nodes: &[NodeId],
) -> Result<Vec<ReplicaSet>, PlacementError> {
    if rf == 0 || rf as usize > nodes.len() {
        return Err(PlacementError {
            rf,
            nodes: nodes.len(),
        });
    }
    Ok((0..partitions as usize)
        .map(|p| {
            let replicas: Vec<_> = (0..rf as usize)
                .map(|i| nodes[(p + i) % nodes.len()])
                .collect();
            ReplicaSet {
                preferred_leader: replicas[0],
                replicas,
            }
        })
        .collect())
}
