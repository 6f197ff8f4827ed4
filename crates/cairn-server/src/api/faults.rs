//! Network fault injection on this node's cluster transport (admin API).
//!
//! `POST /v1/faults/network` installs one rule and answers its id;
//! `GET` lists the rules; `DELETE` removes them all. Rules act on this
//! node's frames only (both directions by default), so isolating a node
//! needs one call to that node. Every rule may carry a time to live, so a
//! forgotten fault heals by itself.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use cairn_cluster::transport::FaultRule;
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::extract::read_body;
use crate::node::Node;

/// A rule as the API takes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkFault {
    /// `partition` (block `peers`), `isolate` (block everyone), `delay`,
    /// or `drop`.
    pub action: String,
    /// Peers the rule applies to; default all.
    #[serde(default)]
    pub peers: Option<Vec<u64>>,
    /// `both` (default), `inbound` or `outbound`.
    #[serde(default)]
    pub direction: Option<String>,
    #[serde(default)]
    pub delay_ms: Option<u64>,
    #[serde(default)]
    pub jitter_ms: Option<u64>,
    #[serde(default)]
    pub probability: Option<f64>,
    /// Remove the rule by itself after this long.
    #[serde(default)]
    pub ttl_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct InstalledFault {
    pub id: u64,
}

#[derive(Debug, Serialize)]
pub struct FaultList {
    pub rules: Vec<String>,
}

fn rule(f: NetworkFault) -> Result<FaultRule, ApiError> {
    let mut rule = match f.action.as_str() {
        "partition" => {
            let peers = f.peers.clone().filter(|p| !p.is_empty()).ok_or_else(|| {
                ApiError::bad_request("a partition needs a non-empty `peers` list")
            })?;
            FaultRule::partition(peers)
        }
        "isolate" => FaultRule::isolate(),
        "delay" => FaultRule::delay(
            Duration::from_millis(
                f.delay_ms
                    .ok_or_else(|| ApiError::bad_request("a delay needs `delay_ms`"))?,
            ),
            Duration::from_millis(f.jitter_ms.unwrap_or(0)),
        ),
        "drop" => {
            let p = f
                .probability
                .ok_or_else(|| ApiError::bad_request("a drop needs `probability`"))?;
            if !(0.0..=1.0).contains(&p) {
                return Err(ApiError::bad_request("probability must be within 0..=1"));
            }
            FaultRule::drop(p)
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown action {other:?}: use partition, isolate, delay or drop"
            )));
        }
    };
    if f.action != "partition"
        && let Some(peers) = f.peers
    {
        rule = rule.to_peers(peers);
    }
    rule = match f.direction.as_deref() {
        None | Some("both") => rule,
        Some("inbound") => rule.inbound_only(),
        Some("outbound") => rule.outbound_only(),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown direction {other:?}: use both, inbound or outbound"
            )));
        }
    };
    if let Some(ttl) = f.ttl_ms {
        rule = rule.with_ttl(Duration::from_millis(ttl));
    }
    Ok(rule)
}

pub async fn add(
    State(node): State<Node>,
    body: Body,
) -> Result<(StatusCode, Json<InstalledFault>), ApiError> {
    let body = read_body(body, 64 * 1024).await?;
    let fault: NetworkFault = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid fault: {e}")))?;
    let rule = rule(fault)?;
    tracing::warn!(?rule, "network fault installed");
    let id = node.cluster().transport().faults().add(rule);
    Ok((StatusCode::CREATED, Json(InstalledFault { id })))
}

pub async fn list(State(node): State<Node>) -> Json<FaultList> {
    let rules = node
        .cluster()
        .transport()
        .faults()
        .rules()
        .into_iter()
        .map(|r| format!("{:?}", r))
        .collect();
    Json(FaultList { rules })
}

pub async fn clear(State(node): State<Node>) -> StatusCode {
    node.cluster().transport().faults().clear();
    tracing::warn!("network faults cleared");
    StatusCode::NO_CONTENT
}
