//! Monitor routes: the cluster's health verdict, findings, alerts and the
//! time series behind them. Each is answered by the controller leader's
//! monitor (forwarded over the transport), or by this node's own when the
//! leader cannot be reached or `?local=true` asks for it.

use axum::Json;
use axum::extract::State;
use cairn_types::ErrorCode;
use serde::Deserialize;

use super::ApiError;
use super::extract::{ApiPath, ApiQuery};
use crate::monitor::Query;
use crate::monitor::remedy::ApplyError;
use crate::node::Node;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Local {
    #[serde(default)]
    pub local: bool,
}

pub(super) async fn answer(
    node: &Node,
    q: Query,
    local: bool,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Some(monitor) = node.monitor() else {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "the monitor is off on this node (--monitor-interval 0)",
        ));
    };
    monitor
        .answer(&q, local)
        .await
        .map(Json)
        .map_err(|m| match q {
            Query::Series { .. } => ApiError::bad_request(m),
            _ => ApiError::new(ErrorCode::Unavailable, m),
        })
}

pub async fn health(
    State(node): State<Node>,
    params: ApiQuery<Local>,
) -> Result<Json<serde_json::Value>, ApiError> {
    answer(&node, Query::Health, params.0.local).await
}

pub async fn findings(
    State(node): State<Node>,
    params: ApiQuery<Local>,
) -> Result<Json<serde_json::Value>, ApiError> {
    answer(&node, Query::Findings, params.0.local).await
}

pub async fn alerts(
    State(node): State<Node>,
    params: ApiQuery<Local>,
) -> Result<Json<serde_json::Value>, ApiError> {
    answer(&node, Query::Alerts, params.0.local).await
}

pub async fn partitions(
    State(node): State<Node>,
    params: ApiQuery<Local>,
) -> Result<Json<serde_json::Value>, ApiError> {
    answer(&node, Query::Partitions, params.0.local).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesParams {
    pub metric: String,
    pub node: Option<u64>,
    /// ms since the Unix epoch; default: 15 minutes ago.
    pub since: Option<u64>,
    #[serde(default)]
    pub local: bool,
}

pub async fn series(
    State(node): State<Node>,
    params: ApiQuery<SeriesParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let p = params.0;
    answer(
        &node,
        Query::Series {
            metric: p.metric,
            node: p.node,
            since_ms: p.since,
        },
        p.local,
    )
    .await
}

/// `GET /v1/monitor/recommendations`: what to do about the active
/// findings, each with its predicted effect and risk.
pub async fn recommendations(
    State(node): State<Node>,
    params: ApiQuery<Local>,
) -> Result<Json<serde_json::Value>, ApiError> {
    answer(&node, Query::Recommendations, params.0.local).await
}

/// `GET /v1/monitor/actions`: the actions applied and their judgements.
pub async fn actions(
    State(node): State<Node>,
    params: ApiQuery<Local>,
) -> Result<Json<serde_json::Value>, ApiError> {
    answer(&node, Query::Actions, params.0.local).await
}

/// `POST /v1/monitor/recommendations/{id}/apply` (admin): carries the
/// recommendation out on the controller leader; the answer is the action
/// record, `applied` (or `failed`), judged over the next 15 s (watch
/// `GET /v1/monitor/actions`).
pub async fn apply(
    State(node): State<Node>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<cairn_monitor::ActionRecord>, ApiError> {
    let Some(monitor) = node.monitor() else {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "the monitor is off on this node (--monitor-interval 0)",
        ));
    };
    monitor.apply(&id, "operator").await.map(Json).map_err(|e| {
        let code = match e {
            ApplyError::NotFound { .. } => ErrorCode::NotFound,
            ApplyError::NotApplicable { .. } => ErrorCode::BadRequest,
            ApplyError::Busy { .. } => ErrorCode::Conflict,
            ApplyError::Unavailable(_) => ErrorCode::Unavailable,
        };
        ApiError::new(code, e.to_string())
    })
}
