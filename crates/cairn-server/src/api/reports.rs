//! Performance reports: the saved ones (`GET /v1/reports`,
//! `GET /v1/reports/{id}`) and one made now over a window
//! (`GET /v1/reports/current?window_s=900`). Answered by the controller
//! leader's monitor like the other monitor routes; `?format=md|html`
//! renders a report (JSON by default).

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use cairn_monitor::report::{Report, render};
use cairn_types::ErrorCode;
use serde::Deserialize;

use super::ApiError;
use super::extract::{ApiPath, ApiQuery};
use super::monitor::answer;
use crate::monitor::{MAX_REPORT_WINDOW, Query};
use crate::node::Node;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Md,
    Html,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportParams {
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub local: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurrentParams {
    /// Seconds back from now: 1 to 86,400 (default 900).
    pub window_s: Option<u64>,
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub local: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    #[serde(default)]
    pub local: bool,
}

/// `value` (a report, perhaps with the answer's `authority` fields) in
/// the asked format.
fn respond(value: serde_json::Value, format: Format) -> Result<Response, ApiError> {
    let (content_type, draw): (&str, fn(&Report) -> String) = match format {
        Format::Json => return Ok(Json(value).into_response()),
        Format::Md => ("text/markdown; charset=utf-8", render::markdown),
        Format::Html => ("text/html; charset=utf-8", render::html),
    };
    let report: Report = serde_json::from_value(value)
        .map_err(|e| ApiError::internal(format!("not a report: {e}")))?;
    Ok(([(header::CONTENT_TYPE, content_type)], draw(&report)).into_response())
}

pub async fn list(
    State(node): State<Node>,
    params: ApiQuery<ListParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    answer(&node, Query::Reports, params.0.local).await
}

pub async fn get(
    State(node): State<Node>,
    ApiPath(id): ApiPath<String>,
    params: ApiQuery<ReportParams>,
) -> Result<Response, ApiError> {
    let p = params.0;
    let Json(mut value) = answer(&node, Query::Report { id: id.clone() }, p.local).await?;
    let report = value
        .get_mut("report")
        .map(serde_json::Value::take)
        .unwrap_or_default();
    if report.is_null() {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no report {id:?} (GET /v1/reports lists them)"),
        ));
    }
    respond(report, p.format)
}

pub async fn current(
    State(node): State<Node>,
    params: ApiQuery<CurrentParams>,
) -> Result<Response, ApiError> {
    let p = params.0;
    let window_s = p.window_s.unwrap_or(900);
    let max = MAX_REPORT_WINDOW.as_secs();
    if window_s == 0 || window_s > max {
        return Err(ApiError::bad_request(format!(
            "window_s must be 1 to {max} (the monitor keeps a day), not {window_s}"
        )));
    }
    let Json(value) = answer(
        &node,
        Query::ReportNow {
            window_ms: window_s * 1000,
        },
        p.local,
    )
    .await?;
    respond(value, p.format)
}
