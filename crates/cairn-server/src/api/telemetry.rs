//! Telemetry routes: `/metrics` for Prometheus, the JSON snapshot for the
//! cluster monitor, and the run-time switch for per-stage timing.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use cairn_telemetry::snapshot::TelemetrySnapshot;
use cairn_types::ErrorCode;
use serde::{Deserialize, Serialize};

use super::ApiError;
use crate::node::Node;

pub async fn metrics(State(node): State<Node>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        node.telemetry().encode_prometheus(),
    )
}

pub async fn snapshot(State(node): State<Node>) -> Result<Json<TelemetrySnapshot>, ApiError> {
    node.telemetry().snapshot().map(Json).ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unavailable,
            "no telemetry interval has completed yet; retry in a second",
        )
    })
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageTiming {
    pub enabled: bool,
}

pub async fn get_stage_timing(State(node): State<Node>) -> Json<StageTiming> {
    Json(StageTiming {
        enabled: node.telemetry().metrics.stage_timing(),
    })
}

pub async fn set_stage_timing(
    State(node): State<Node>,
    body: axum::body::Body,
) -> Result<Json<StageTiming>, ApiError> {
    let body = super::extract::read_body(&node, body, 1024).await?;
    let request: StageTiming = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"enabled\": true|false}}: {e}")))?;
    node.telemetry().metrics.set_stage_timing(request.enabled);
    tracing::info!(enabled = request.enabled, "per-stage timing switched");
    Ok(Json(request))
}
