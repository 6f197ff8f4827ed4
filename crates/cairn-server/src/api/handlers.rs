//! One function per route. Handlers check input, hand storage work to the
//! blocking pool, and shape the answer; the logic lives in `streams` and
//! `ingest`, and reads and queries are routed by the cluster
//! (`cairn_cluster::cluster::reads`).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_cluster::controller::{ControllerCommand, ControllerResponse};
use cairn_types::api::{
    CreateStream, Health, QueryParams, QueryResponse, ReadParams, ReadResponse, StreamInfo,
    StreamList,
};
use std::time::Instant;

use cairn_telemetry::metrics::{Api, Operation, ReadStage, WriteStage};
use cairn_types::ErrorCode;

use super::ApiError;
use super::extract::{ApiPath, ApiQuery, read_body, read_body_charged};
use crate::node::{Node, now_us};
use cairn_cluster::cluster::reads::QuerySpec;
use cairn_cluster::read::{self, Filter};

use crate::{ingest, streams};

/// How long a stream admin request waits for its change to reach this
/// node's copy of the metadata (normally a heartbeat or two).
const META_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

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
        streams: node.cluster().meta().streams.len(),
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
    let body = read_body(&node, body, MAX_ADMIN_BODY_BYTES).await?;
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
    streams::validate_name(&request.name)?;
    let log = streams::log_config(&request.config)?;
    // A stream created on a full disk could not take a single write.
    node.data_dir()
        .space()
        .check()
        .map_err(|full| ApiError::new(ErrorCode::InsufficientStorage, full.to_string()))?;
    let response = node
        .cluster()
        .command(ControllerCommand::CreateStream {
            name: request.name.clone(),
            partitions: request.config.partitions,
            replication_factor: request.config.replication_factor,
            log,
            created_us: now_us(),
        })
        .await?;
    let ControllerResponse::StreamCreated(meta) = response else {
        return Err(ApiError::internal(
            "controller answered create without a stream",
        ));
    };
    // Read-your-writes: the command may have been applied on the
    // controller leader only so far.
    let name = meta.name.clone();
    node.cluster()
        .wait_meta(META_WAIT, |m| m.streams.contains_key(&name))
        .await;
    Ok((
        StatusCode::CREATED,
        Json(streams::stream_info(node.cluster(), &meta)),
    ))
}

pub async fn list_streams(State(node): State<Node>) -> Json<StreamList> {
    node.telemetry()
        .metrics
        .count_request(Api::Http, Operation::Admin);
    let meta = node.cluster().meta();
    let streams = meta
        .streams
        .values()
        .map(|s| streams::stream_info(node.cluster(), s))
        .collect();
    Json(StreamList { streams })
}

pub async fn get_stream(
    State(node): State<Node>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<StreamInfo>> {
    node.telemetry()
        .metrics
        .count_request(Api::Http, Operation::Admin);
    let meta = streams::lookup(node.cluster(), &name)?;
    Ok(Json(streams::stream_info(node.cluster(), &meta)))
}

pub async fn delete_stream(
    State(node): State<Node>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    node.telemetry()
        .metrics
        .count_request(Api::Http, Operation::Admin);
    node.cluster()
        .command(ControllerCommand::DeleteStream { name: name.clone() })
        .await?;
    node.cluster()
        .wait_meta(META_WAIT, |m| !m.streams.contains_key(&name))
        .await;
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
    streams::lookup(node.cluster(), &name)?;
    // The charge stays until the entries are stored: they are the body's bytes.
    let (body, _charge) = read_body_charged(&node, body, node.config().max_body_bytes).await?;
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
pub async fn read(
    State(node): State<Node>,
    ApiPath((name, partition)): ApiPath<(String, u32)>,
    ApiQuery(params): ApiQuery<ReadParams>,
) -> ApiResult<Json<ReadResponse>> {
    let consistency = params.consistency.unwrap_or_default();
    let response = crate::read::read_partition(
        &node,
        Api::Http,
        &name,
        partition,
        params.offset,
        params.limit,
        consistency,
    )
    .await?;
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
    let limit = crate::read::check_limit(
        params.limit,
        read::DEFAULT_QUERY_LIMIT,
        read::MAX_QUERY_LIMIT,
    )?;
    let stream = streams::lookup(node.cluster(), &name)?;
    let wanted: Vec<u32> = match &params.partitions {
        None => (0..stream.partitions.len() as u32).collect(),
        Some(list) => list
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                let p: u32 = s.trim().parse().map_err(|_| {
                    ApiError::bad_request(format!("partitions: {s:?} is not a partition number"))
                })?;
                streams::partition_group(&stream, p)?;
                Ok(p)
            })
            .collect::<ApiResult<_>>()?,
    };
    let filter = Filter {
        start: params.start.unwrap_or(0),
        end: params.end.unwrap_or_else(now_us),
        level: params.level,
        source: params.source.clone(),
        contains: params.contains.clone(),
    };
    if filter.start > filter.end {
        return Err(ApiError::bad_request(format!(
            "start ({}) is after end ({})",
            filter.start, filter.end
        )));
    }
    let spec = QuerySpec {
        filter,
        limit,
        order: params.order.unwrap_or_default(),
        consistency: params.consistency.unwrap_or_default(),
    };
    let response = node.cluster().query(&stream, &wanted, spec).await;
    metrics.record_read(ReadStage::Total, started.elapsed());
    Ok(Json(response))
}
