//! One function per route. Handlers check input, hand storage work to the
//! blocking pool, and shape the answer; the logic lives in `streams`,
//! `ingest` and `read`.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use cairn_cluster::controller::meta::StreamMeta;
use cairn_cluster::controller::{ControllerCommand, ControllerResponse};
use cairn_types::api::{
    Consistency, CreateStream, Health, PartitionFailure, QueryParams, QueryResponse, ReadParams,
    StreamInfo, StreamList,
};
use std::time::Instant;

use cairn_telemetry::metrics::{Api, NodeMetrics, Operation, ReadStage, WriteStage};
use cairn_types::ErrorCode;

use super::ApiError;
use super::extract::{ApiPath, ApiQuery, read_body, read_body_charged};
use crate::node::{FORWARDED, Node, now_us};
use crate::read::{self, Filter};
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

/// Who should answer a read of one partition.
enum ReadTarget {
    /// This node's replica.
    Local(std::sync::Arc<cairn_cluster::cluster::PartitionGroup>),
    /// Forward to this node.
    Remote(u64),
    /// Nobody yet (a leader election, or the replica is starting): wait.
    Wait,
}

fn read_target(
    node: &Node,
    stream: &StreamMeta,
    group: u64,
    partition: u32,
    consistency: Consistency,
) -> ReadTarget {
    let me = node.cluster().node_id();
    let p = &stream.partitions[partition as usize];
    let local = node.cluster().group(group);
    match (local, consistency) {
        (Some(g), Consistency::Any) => ReadTarget::Local(g),
        (Some(g), Consistency::Leader) => match g.leader() {
            Some(l) if l == me => ReadTarget::Local(g),
            Some(l) => ReadTarget::Remote(l),
            None => ReadTarget::Wait,
        },
        // A replica here that has not started yet: it will shortly.
        (None, _) if p.replicas.contains(&me) => ReadTarget::Wait,
        // Not a replica: ask the preferred leader, which knows the leader.
        (None, _) => ReadTarget::Remote(p.preferred_leader),
    }
}

/// Where node `to` serves its HTTP API, from the cluster metadata.
fn http_addr_of(node: &Node, to: u64) -> ApiResult<String> {
    node.cluster()
        .meta()
        .nodes
        .get(&to)
        .map(|n| n.info.http_addr.clone())
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unavailable,
                format!("node {to} has no known HTTP address"),
            )
        })
}

/// Sends a GET to node `to`'s HTTP API and relays its answer as is.
async fn forward_get(node: &Node, to: u64, path_and_query: &str) -> ApiResult<Response> {
    let http_addr = http_addr_of(node, to)?;
    let url = format!("{}{path_and_query}", node.peer_url(&http_addr));
    let reply =
        node.http().get(&url).send().await.map_err(|e| {
            ApiError::new(ErrorCode::Unavailable, format!("forward to node {to}: {e}"))
        })?;
    let status = StatusCode::from_u16(reply.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = reply
        .bytes()
        .await
        .map_err(|e| ApiError::new(ErrorCode::Unavailable, format!("forward to node {to}: {e}")))?;
    Ok((status, [(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// How long a follower's read waits for the leader to say how far behind
/// it is (the read itself is answered regardless).
const LAG_QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(200);

/// How long a read waits for a replica that can answer it.
const READ_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn not_servable(partition: u32) -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        format!(
            "partition {partition}: no replica could answer within {READ_WAIT:?} (leader election in progress?)"
        ),
    )
}

pub async fn read(
    State(node): State<Node>,
    ApiPath((name, partition)): ApiPath<(String, u32)>,
    headers: HeaderMap,
    uri: Uri,
    ApiQuery(params): ApiQuery<ReadParams>,
) -> ApiResult<Response> {
    let metrics = &node.telemetry().metrics;
    metrics.count_request(Api::Http, Operation::Read);
    let started = Instant::now();
    let limit = check_limit(params.limit, read::DEFAULT_READ_LIMIT, read::MAX_READ_LIMIT)?;
    let stream = streams::lookup(node.cluster(), &name)?;
    let group = streams::partition_group(&stream, partition)?;
    let consistency = params.consistency.unwrap_or_default();
    // A leader may be in election, or this node's replica still starting:
    // wait a little for one that can answer, as writes do.
    let deadline = Instant::now() + READ_WAIT;
    let g = loop {
        match read_target(&node, &stream, group, partition, consistency) {
            ReadTarget::Local(g) => break g,
            ReadTarget::Remote(to) if !headers.contains_key(FORWARDED) => {
                let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
                return forward_get(&node, to, path).await;
            }
            ReadTarget::Remote(_) | ReadTarget::Wait => {}
        }
        if Instant::now() >= deadline {
            return Err(not_servable(partition));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let forwarded = headers.contains_key(FORWARDED);
    if let Some(reason) = g.quarantined() {
        let e = quarantined(partition, &reason);
        return serve_elsewhere(
            &node, &stream, group, partition, &uri, &params, forwarded, e,
        )
        .await;
    }
    let (log, committed, from_leader) =
        (g.log.clone(), g.state.applied_end_offset(), g.is_leader());
    let submitted = Instant::now();
    let read = blocking(move || {
        let queued = submitted.elapsed();
        let (response, stats) = read::read_partition(&log, params.offset, limit, committed)?;
        Ok((response, stats, queued))
    })
    .await;
    let (mut response, stats, queued) = match read {
        Ok(answer) => answer,
        // Damaged bytes here: repair them, and answer from a healthy replica.
        Err(e) if e.code == ErrorCode::Corruption => {
            node.cluster().report_damage(group);
            return serve_elsewhere(
                &node, &stream, group, partition, &uri, &params, forwarded, e,
            )
            .await;
        }
        Err(e) => return Err(e),
    };
    response.served_by = node.cluster().node_id();
    response.from_leader = from_leader;
    response.lag_entries = if from_leader {
        Some(0)
    } else {
        node.cluster().replica_lag(group, LAG_QUERY_TIMEOUT).await
    };
    record_read_stages(metrics, queued, &stats);
    metrics.record_read(ReadStage::Total, started.elapsed());
    Ok(Json(response).into_response())
}

/// A replica anti-entropy took out of service is answered like damaged
/// data: another replica serves the read.
fn quarantined(partition: u32, reason: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Corruption,
        format!("this replica of partition {partition} is quarantined: {reason}"),
    )
}

/// Answers a read this node's replica cannot serve (damaged or
/// quarantined) from another replica of the partition: the leader first,
/// then the followers, each reading its own copy (`consistency=any`). A
/// read forwarded here already is not forwarded again; nor is one no other
/// replica answers: `error` is returned then.
#[allow(clippy::too_many_arguments)]
async fn serve_elsewhere(
    node: &Node,
    stream: &StreamMeta,
    group: u64,
    partition: u32,
    uri: &Uri,
    params: &ReadParams,
    forwarded: bool,
    error: ApiError,
) -> ApiResult<Response> {
    if forwarded {
        return Err(error);
    }
    let me = node.cluster().node_id();
    let leader = node.cluster().group(group).and_then(|g| g.leader());
    let mut candidates: Vec<u64> = leader.into_iter().filter(|l| *l != me).collect();
    candidates.extend(
        stream.partitions[partition as usize]
            .replicas
            .iter()
            .copied()
            .filter(|n| *n != me && Some(*n) != leader),
    );
    let mut query = vec!["consistency=any".to_owned()];
    if let Some(offset) = params.offset {
        query.push(format!("offset={offset}"));
    }
    if let Some(limit) = params.limit {
        query.push(format!("limit={limit}"));
    }
    let path = format!("{}?{}", uri.path(), query.join("&"));
    for to in candidates {
        match forward_get(node, to, &path).await {
            Ok(response) if response.status().is_success() => {
                tracing::info!(
                    group,
                    partition,
                    served_by = to,
                    "read served by another replica"
                );
                return Ok(response);
            }
            Ok(response) => {
                tracing::debug!(to, status = %response.status(), "replica could not serve the read")
            }
            Err(e) => tracing::debug!(to, error = %e.message, "replica could not serve the read"),
        }
    }
    Err(error)
}

pub async fn query(
    State(node): State<Node>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
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
    let consistency = params.consistency.unwrap_or_default();
    // Peers get `params` as is, so they keep the same end of the matches.
    let order = params.order.unwrap_or_default();
    let forwarded = headers.contains_key(FORWARDED);
    let mut local = Vec::new();
    let mut remote: std::collections::BTreeMap<u64, Vec<u32>> = Default::default();
    let mut failed = Vec::new();
    for p in wanted {
        let group = stream.partitions[p as usize].group;
        let deadline = Instant::now() + READ_WAIT;
        loop {
            match read_target(&node, &stream, group, p, consistency) {
                ReadTarget::Local(g) => local.push((p, g)),
                ReadTarget::Remote(_) if forwarded => failed.push(failure(p, &not_servable(p))),
                ReadTarget::Remote(to) => remote.entry(to).or_default().push(p),
                ReadTarget::Wait if Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
                ReadTarget::Wait => failed.push(failure(p, &not_servable(p))),
            }
            break;
        }
    }

    let filter = std::sync::Arc::new(filter);
    // One blocking task per local partition, all running at once.
    let tasks: Vec<_> = local
        .into_iter()
        .map(|(p, g)| {
            let (log, committed, filter) =
                (g.log.clone(), g.state.applied_end_offset(), filter.clone());
            let quarantine = g.quarantined();
            let submitted = Instant::now();
            (
                p,
                tokio::task::spawn_blocking(move || {
                    if let Some(reason) = quarantine {
                        return Err(quarantined(p, &reason));
                    }
                    let queued = submitted.elapsed();
                    read::query_partition(&log, p, &filter, limit, committed, order)
                        .map(|m| (m, queued))
                }),
            )
        })
        .collect();
    let peers = remote.into_iter().map(|(to, partitions)| {
        let node = node.clone();
        let mut params = params.clone();
        params.limit = Some(limit);
        params.partitions = Some(
            partitions
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
        let name = name.clone();
        async move {
            let answer = query_peer(&node, to, &name, &params).await;
            answer.map_err(|e| (partitions, e))
        }
    });
    let peer_answers = futures::future::join_all(peers).await;

    let mut parts = Vec::with_capacity(tasks.len());
    let mut damaged = Vec::new();
    for (p, task) in tasks {
        match task.await? {
            Ok((part, queued)) => {
                record_read_stages(metrics, queued, &part.stats);
                parts.push(part);
            }
            Err(e) if e.code == ErrorCode::Corruption => {
                node.cluster()
                    .report_damage(stream.partitions[p as usize].group);
                damaged.push((p, e));
            }
            Err(e) => failed.push(failure(p, &e)),
        }
    }
    let mut answers = vec![read::merge(parts, limit)];
    // Partitions whose replica here is damaged (or quarantined): ask the
    // other replicas, each reading its own copy.
    for (p, e) in damaged {
        let mut params = params.clone();
        params.limit = Some(limit);
        params.consistency = Some(Consistency::Any);
        params.partitions = Some(p.to_string());
        let me = node.cluster().node_id();
        let mut answer = None;
        if !forwarded {
            for &to in stream.partitions[p as usize]
                .replicas
                .iter()
                .filter(|n| **n != me)
            {
                if let Ok(r) = query_peer(&node, to, &name, &params).await
                    && r.failed_partitions.is_empty()
                {
                    answer = Some(r);
                    break;
                }
            }
        }
        match answer {
            Some(r) => answers.push(r),
            None => failed.push(failure(p, &e)),
        }
    }
    for answer in peer_answers {
        match answer {
            Ok(r) => answers.push(r),
            Err((partitions, e)) => failed.extend(partitions.into_iter().map(|p| failure(p, &e))),
        }
    }
    answers.push(QueryResponse {
        entries: Vec::new(),
        truncated: false,
        failed_partitions: failed,
    });
    let response = read::merge_responses(answers, limit, order);
    metrics.record_read(ReadStage::Total, started.elapsed());
    Ok(Json(response))
}

fn failure(partition: u32, e: &ApiError) -> PartitionFailure {
    PartitionFailure {
        partition,
        code: e.code.as_str().to_owned(),
        message: e.message.clone(),
    }
}

/// Runs the query for some partitions on node `to`.
async fn query_peer(
    node: &Node,
    to: u64,
    stream: &str,
    params: &QueryParams,
) -> ApiResult<QueryResponse> {
    let http_addr = http_addr_of(node, to)?;
    // Reads still cross to peers over HTTP (issue 13 moves them to the
    // cluster transport); this is the server's only use of the client.
    let client =
        cairn_client::Client::with_http_client(&node.peer_url(&http_addr), node.http().clone())
            .map_err(|e| ApiError::new(ErrorCode::Unavailable, format!("node {to}: {e}")))?;
    client.query(stream, params).await.map_err(|e| {
        let code = e.code().unwrap_or(ErrorCode::Unavailable);
        ApiError::new(code, format!("query node {to}: {e}"))
    })
}
