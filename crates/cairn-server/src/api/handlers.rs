//! One function per route. Handlers check input, hand storage work to the
//! blocking pool, and shape the answer; the logic lives in `streams`,
//! `ingest` and `read`.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_client::{
    CreateStream, Health, QueryParams, QueryResponse, ReadParams, ReadResponse, StreamInfo,
    StreamList,
};
use std::time::Instant;

use cairn_telemetry::metrics::{Api, NodeMetrics, Operation, ReadStage, WriteStage};
use cairn_types::ErrorCode;

use super::ApiError;
use super::extract::{ApiPath, ApiQuery, read_body};
use crate::ingest;
use crate::node::{Node, now_us};
use crate::read::{self, Filter};

/// Stream-creation bodies are a handful of fields.
const MAX_ADMIN_BODY_BYTES: usize = 64 * 1024;

type ApiResult<T> = Result<T, ApiError>;

/// Runs blocking storage work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await?
}

pub async fn health(State(node): State<Node>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        streams: node.registry().len(),
        uptime_seconds: node.uptime().as_secs(),
    })
}

pub async fn create_stream(
    State(node): State<Node>,
    body: Body,
) -> ApiResult<(StatusCode, Json<StreamInfo>)> {
    node.telemetry()
        .metrics
        .count_request(Api::Http, Operation::Admin);
    let body = read_body(body, MAX_ADMIN_BODY_BYTES).await?;
    let request: CreateStream = serde_json::from_slice(&body).map_err(|e| {
        // Well-formed JSON with wrong fields is a config problem; anything
        // else is a malformed request.
        let code = if e.is_data() {
            ErrorCode::InvalidStreamConfig
        } else {
            ErrorCode::BadRequest
        };
        ApiError::new(code, format!("invalid stream definition: {e}"))
    })?;
    let stream = blocking(move || {
        node.registry()
            .create(&request.name, request.config, now_us())
    })
    .await?;
    Ok((StatusCode::CREATED, Json(stream.info())))
}

pub async fn list_streams(State(node): State<Node>) -> Json<StreamList> {
    node.telemetry()
        .metrics
        .count_request(Api::Http, Operation::Admin);
    let streams = node.registry().list().iter().map(|s| s.info()).collect();
    Json(StreamList { streams })
}

pub async fn get_stream(
    State(node): State<Node>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<StreamInfo>> {
    node.telemetry()
        .metrics
        .count_request(Api::Http, Operation::Admin);
    Ok(Json(node.registry().get(&name)?.info()))
}

pub async fn delete_stream(
    State(node): State<Node>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    node.telemetry()
        .metrics
        .count_request(Api::Http, Operation::Admin);
    let n = node.clone();
    let deleted = name.clone();
    blocking(move || n.registry().delete(&deleted)).await?;
    node.telemetry().metrics.forget_stream(&name);
    Ok(StatusCode::NO_CONTENT)
}

/// Parses and validates the whole body, then hands the entries to
/// [`Node::append_entries`], the write path shared with the binary
/// protocol.
pub async fn append(
    State(node): State<Node>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let metrics = &node.telemetry().metrics;
    metrics.count_request(Api::Http, Operation::Append);
    let started = metrics.start_timer();
    // Look the stream up first: a missing stream is a 404 whatever the body.
    node.registry().get(&name)?;
    let body = read_body(body, node.config().max_body_bytes).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let entries =
        blocking(move || ingest::parse_new_entries(&body, content_type.as_deref())).await?;
    if let Some(t) = started {
        metrics.record_write(WriteStage::Decode, t.elapsed());
    }
    let response = node.append_entries(&name, entries, Api::Http).await?;
    let encoding = metrics.start_timer();
    let response = Json(response).into_response();
    if let (Some(started), Some(encoding)) = (started, encoding) {
        metrics.record_write(WriteStage::Respond, encoding.elapsed());
        metrics.record_write(WriteStage::Total, started.elapsed());
    }
    Ok(response)
}

/// Records a read's stages; `queued` is the wait for a blocking thread.
fn record_read_stages(
    metrics: &NodeMetrics,
    queued: std::time::Duration,
    stats: &cairn_storage::ScanStats,
) {
    metrics.record_read(ReadStage::Queue, queued);
    metrics.record_read(ReadStage::IndexLookup, stats.index_lookup);
    metrics.record_read(ReadStage::DiskRead, stats.disk_read);
}

fn check_limit(limit: Option<usize>, default: usize, max: usize) -> ApiResult<usize> {
    match limit.unwrap_or(default) {
        0 => Err(ApiError::bad_request("limit must be at least 1")),
        l if l > max => Err(ApiError::bad_request(format!(
            "limit must be at most {max} (got {l})"
        ))),
        l => Ok(l),
    }
}

pub async fn read(
    State(node): State<Node>,
    ApiPath((name, partition)): ApiPath<(String, u32)>,
    ApiQuery(params): ApiQuery<ReadParams>,
) -> ApiResult<Json<ReadResponse>> {
    let metrics = &node.telemetry().metrics;
    metrics.count_request(Api::Http, Operation::Read);
    let started = Instant::now();
    let limit = check_limit(params.limit, read::DEFAULT_READ_LIMIT, read::MAX_READ_LIMIT)?;
    let stream = node.registry().get(&name)?;
    let log = stream.log(partition)?.clone();
    let submitted = Instant::now();
    let (response, stats, queued) = blocking(move || {
        let queued = submitted.elapsed();
        let (response, stats) = read::read_partition(&log, params.offset, limit)?;
        Ok((response, stats, queued))
    })
    .await?;
    record_read_stages(metrics, queued, &stats);
    metrics.record_read(ReadStage::Total, started.elapsed());
    Ok(Json(response))
}

pub async fn query(
    State(node): State<Node>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(params): ApiQuery<QueryParams>,
) -> ApiResult<Json<QueryResponse>> {
    let metrics = &node.telemetry().metrics;
    metrics.count_request(Api::Http, Operation::Query);
    let started = Instant::now();
    let limit = check_limit(
        params.limit,
        read::DEFAULT_QUERY_LIMIT,
        read::MAX_QUERY_LIMIT,
    )?;
    let stream = node.registry().get(&name)?;
    let filter = Filter {
        start: params.start.unwrap_or(0),
        end: params.end.unwrap_or_else(now_us),
        level: params.level,
        source: params.source,
        contains: params.contains,
    };
    if filter.start > filter.end {
        return Err(ApiError::bad_request(format!(
            "start ({}) is after end ({})",
            filter.start, filter.end
        )));
    }
    let filter = std::sync::Arc::new(filter);
    // One blocking task per partition, all running at once.
    let tasks: Vec<_> = stream
        .logs
        .iter()
        .enumerate()
        .map(|(p, log)| {
            let (log, filter) = (log.clone(), filter.clone());
            let submitted = Instant::now();
            tokio::task::spawn_blocking(move || {
                let queued = submitted.elapsed();
                read::query_partition(&log, p as u32, &filter, limit).map(|m| (m, queued))
            })
        })
        .collect();
    let mut parts = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (part, queued) = task.await??;
        record_read_stages(metrics, queued, &part.stats);
        parts.push(part);
    }
    let response = read::merge(parts, limit);
    metrics.record_read(ReadStage::Total, started.elapsed());
    Ok(Json(response))
}
