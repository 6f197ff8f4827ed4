//! Cluster routes: the cluster as this node sees it, and node join.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use cairn_cluster::controller::{ControllerResponse, NodeAdminState};
use cairn_cluster::raft::NodeInfo;
use cairn_types::ErrorCode;
use cairn_types::api::{
    CatchUpView, ClusterView, GroupView, JoinRequest, LeaderMove, LeaderMoveOutcome,
    LeaderMoveRequest, NodeView, RebalanceResponse,
};

use super::ApiError;
use super::extract::{ApiPath, ApiQuery, read_body};
use crate::node::Node;

pub async fn view(State(node): State<Node>) -> Json<ClusterView> {
    let cluster = node.cluster();
    let meta = cluster.meta();
    let controller = cluster.controller().metrics().borrow().clone();
    let voters: Vec<u64> = controller
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    let peers: std::collections::HashMap<u64, _> = cluster
        .peer_status()
        .into_iter()
        .map(|p| (p.id, p))
        .collect();
    let nodes = meta
        .nodes
        .values()
        .map(|n| {
            let peer = peers.get(&n.id);
            // Liveness from this node's failure detector; a live node being
            // decommissioned shows as draining.
            let live = match peer {
                Some(p) => p.state.to_string(),
                None if n.id == cluster.node_id() => "up".into(),
                None => "joining".into(),
            };
            let state = match n.state {
                NodeAdminState::Draining if live == "up" => "draining".into(),
                _ => live,
            };
            NodeView {
                id: n.id,
                raft_addr: n.info.raft_addr.clone(),
                http_addr: n.info.http_addr.clone(),
                state,
                // Two decimals: phi near 0 is noise (2.02e-102 reads as a bug).
                phi: peer
                    .map(|p| (p.phi * 100.0).round() / 100.0)
                    .filter(|p| p.is_finite()),
                voter: voters.contains(&n.id),
            }
        })
        .collect();
    let mut groups: Vec<GroupView> = cluster
        .groups()
        .into_iter()
        .map(|g| {
            let m = g.raft.metrics().borrow().clone();
            GroupView {
                stream: g.stream.clone(),
                partition: g.partition,
                group: g.group,
                replicas: m.membership_config.membership().voter_ids().collect(),
                leader: m.current_leader,
                preferred_leader: meta
                    .streams
                    .get(&g.stream)
                    .and_then(|s| s.partitions.get(g.partition as usize))
                    .map(|p| p.preferred_leader),
                term: m.current_term,
                applied_index: m.last_applied.map(|l| l.index),
                committed_end_offset: g.state.applied_end_offset(),
                log_start_index: g.state.log_start_index(),
                start_offset: g.log.bounds().0,
                catching_up: cluster.catching_up(g.group).map(|c| CatchUpView {
                    next_index: c.next_index,
                    last_index: c.last_index,
                    first_index: c.first_index,
                    staged_bytes: c.staged_bytes,
                }),
            }
        })
        .collect();
    groups.sort_by(|a, b| (&a.stream, a.partition).cmp(&(&b.stream, b.partition)));
    Json(ClusterView {
        node_id: cluster.node_id(),
        controller_leader: controller.current_leader,
        nodes,
        groups,
    })
}

pub async fn join(State(node): State<Node>, body: Body) -> Result<StatusCode, ApiError> {
    let body = read_body(&node, body, 64 * 1024).await?;
    let request: JoinRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid join request: {e}")))?;
    if request.id == 0 {
        return Err(ApiError::bad_request("node id must be at least 1"));
    }
    let info = NodeInfo {
        raft_addr: request.raft_addr,
        http_addr: request.http_addr,
    };
    if let ControllerResponse::Refused { code, message } = node
        .cluster()
        .admit(request.id, info, request.replace)
        .await?
    {
        return Err(cairn_cluster::ClusterError::Refused { code, message }.into());
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `?force=true` drains a node even below a stream's replication factor
/// or the controller's majority.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecommissionParams {
    #[serde(default)]
    force: bool,
}

/// Starts decommissioning a node: its replicas move to the other nodes,
/// then it is removed from the cluster (watch `GET /v1/cluster`).
pub async fn decommission(
    State(node): State<Node>,
    ApiPath(id): ApiPath<u64>,
    ApiQuery(params): ApiQuery<DecommissionParams>,
) -> Result<StatusCode, ApiError> {
    node.cluster().decommission(id, params.force).await?;
    Ok(StatusCode::ACCEPTED)
}

/// `POST /v1/streams/{name}/partitions/{p}/leader {"to": N}`: hands the
/// partition's leadership to replica N (see `cairn_cluster`'s `transfer`).
/// Writes to the partition pause for the hand-over; none fail. A move that
/// was tried and did not happen is `409 conflict` with the reason.
pub async fn move_leader(
    State(node): State<Node>,
    ApiPath((name, partition)): ApiPath<(String, u32)>,
    body: Body,
) -> Result<Json<LeaderMove>, ApiError> {
    let body = read_body(&node, body, 4 * 1024).await?;
    let request: LeaderMoveRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid leader move (expected {{\"to\": NODE_ID}}): {e}"
        ))
    })?;
    let stream = crate::streams::lookup(node.cluster(), &name)?;
    let group = crate::streams::partition_group(&stream, partition)?;
    let moved = node.cluster().transfer_leader(group, request.to).await?;
    if moved.outcome == LeaderMoveOutcome::Failed {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "leadership of {name}/{partition} did not move to node {}: {}",
                request.to,
                moved.error.as_deref().unwrap_or("no reason given")
            ),
        ));
    }
    Ok(Json(moved))
}

/// `POST /v1/cluster/leaders/rebalance`: moves every partition back to its
/// preferred leader, one at a time; the answer lists each move.
pub async fn rebalance_leaders(State(node): State<Node>) -> Json<RebalanceResponse> {
    Json(node.cluster().rebalance_leaders().await)
}
