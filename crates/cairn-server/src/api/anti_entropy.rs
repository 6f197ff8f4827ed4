//! Anti-entropy routes: run a scan now, and the status of the last scans.
//!
//! Scans run on each partition's leader; this node forwards to it, one
//! partition at a time (scans share each node's read-rate limit anyway).
//! Each node keeps the reports of the scans it ran, so the status merges
//! every node's (`?local=true` asks one node for its own only).

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use cairn_types::api::{
    AntiEntropySettings, AntiEntropyStatus, QuarantinedReplica, ScanFailure, ScanReport,
    ScanRequest, ScanResponse,
};
use serde::Deserialize;

use super::ApiError;
use super::extract::{ApiQuery, read_body};
use crate::node::Node;
use crate::streams;

pub async fn scan(State(node): State<Node>, body: Body) -> Result<Json<ScanResponse>, ApiError> {
    let body = read_body(&node, body, 4096).await?;
    let request: ScanRequest = if body.is_empty() {
        ScanRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "expected {{\"stream\"?: name, \"partition\"?: n, \"deep\"?: bool}}: {e}"
            ))
        })?
    };
    if request.partition.is_some() && request.stream.is_none() {
        return Err(ApiError::bad_request("a partition needs its stream"));
    }
    let meta = node.cluster().meta();
    let mut targets = Vec::new();
    match &request.stream {
        Some(name) => {
            let stream = streams::lookup(node.cluster(), name)?;
            match request.partition {
                Some(p) => targets.push((name.clone(), p, streams::partition_group(&stream, p)?)),
                None => targets.extend(
                    stream
                        .partitions
                        .iter()
                        .enumerate()
                        .map(|(i, p)| (name.clone(), i as u32, p.group)),
                ),
            }
        }
        None => {
            for (name, stream) in &meta.streams {
                targets.extend(
                    stream
                        .partitions
                        .iter()
                        .enumerate()
                        .map(|(i, p)| (name.clone(), i as u32, p.group)),
                );
            }
        }
    }
    let mut response = ScanResponse {
        reports: Vec::new(),
        failed: Vec::new(),
    };
    for (stream, partition, group) in targets {
        match node.cluster().scan(group, request.deep).await {
            Ok(report) => response.reports.push(report),
            Err(e) => {
                let e = ApiError::from(e);
                response.failed.push(ScanFailure {
                    stream,
                    partition,
                    code: e.code.as_str().to_owned(),
                    message: e.message,
                });
            }
        }
    }
    Ok(Json(response))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusParams {
    /// Only this node's own reports and replicas.
    #[serde(default)]
    pub local: bool,
}

fn local_status(node: &Node) -> Result<AntiEntropyStatus, ApiError> {
    let cluster = node.cluster();
    let config = cluster.anti_entropy_config();
    let partitions = cluster.anti_entropy_reports();
    let last_divergent = cluster.anti_entropy_divergent_reports();
    let quarantined = cluster
        .groups()
        .into_iter()
        .filter_map(|g| {
            g.quarantined().map(|reason| QuarantinedReplica {
                stream: g.stream.clone(),
                partition: g.partition,
                node: cluster.node_id(),
                reason,
            })
        })
        .collect();
    Ok(AntiEntropyStatus {
        settings: AntiEntropySettings {
            interval_seconds: config.interval.as_secs_f64(),
            deep_interval_seconds: config.deep_interval.as_secs_f64(),
            rate_bytes_per_sec: config.rate_bytes_per_sec,
        },
        partitions,
        last_divergent,
        quarantined,
        unreachable_nodes: Vec::new(),
    })
}

pub async fn status(
    State(node): State<Node>,
    ApiQuery(params): ApiQuery<StatusParams>,
) -> Result<Json<AntiEntropyStatus>, ApiError> {
    let mut status = local_status(&node)?;
    if params.local {
        return Ok(Json(status));
    }
    let me = node.cluster().node_id();
    let peers: Vec<(u64, String)> = node
        .cluster()
        .meta()
        .nodes
        .values()
        .filter(|n| n.id != me && !n.info.http_addr.is_empty())
        .map(|n| (n.id, n.info.http_addr.clone()))
        .collect();
    let answers = futures::future::join_all(peers.into_iter().map(|(id, addr)| {
        let http = node.http().clone();
        let url = format!("{}/v1/anti-entropy/status?local=true", node.peer_url(&addr));
        async move {
            let answer = async {
                http.get(&url)
                    .send()
                    .await?
                    .error_for_status()?
                    .json::<AntiEntropyStatus>()
                    .await
            }
            .await;
            (id, answer)
        }
    }))
    .await;
    // The newest report of each partition wins: leadership moves, and the
    // node that scanned last knows best.
    let mut latest = Latest::default();
    let mut divergent = Latest::default();
    latest.add(std::mem::take(&mut status.partitions));
    divergent.add(std::mem::take(&mut status.last_divergent));
    for (id, answer) in answers {
        match answer {
            Ok(peer) => {
                status.quarantined.extend(peer.quarantined);
                latest.add(peer.partitions);
                divergent.add(peer.last_divergent);
            }
            Err(e) => {
                tracing::debug!(node = id, error = %e, "anti-entropy status of a peer");
                status.unreachable_nodes.push(id);
            }
        }
    }
    status.partitions = latest.0.into_values().collect();
    status.last_divergent = divergent.0.into_values().collect();
    status
        .quarantined
        .sort_by(|a, b| (&a.stream, a.partition, a.node).cmp(&(&b.stream, b.partition, b.node)));
    Ok(Json(status))
}

/// The newest report per partition.
#[derive(Default)]
struct Latest(BTreeMap<(String, u32), ScanReport>);

impl Latest {
    fn add(&mut self, reports: Vec<ScanReport>) {
        for r in reports {
            let key = (r.stream.clone(), r.partition);
            if self
                .0
                .get(&key)
                .is_none_or(|old| old.started_at_unix_ms < r.started_at_unix_ms)
            {
                self.0.insert(key, r);
            }
        }
    }
}
