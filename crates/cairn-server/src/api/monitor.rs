//! Monitor routes: the cluster's health verdict, findings, alerts and the
//! time series behind them. Each is answered by the controller leader's
//! monitor (forwarded over the transport), or by this node's own when the
//! leader cannot be reached or `?local=true` asks for it.

use axum::Json;
use axum::extract::State;
use cairn_types::ErrorCode;
use serde::Deserialize;

use super::ApiError;
use super::extract::ApiQuery;
use crate::monitor::Query;
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
