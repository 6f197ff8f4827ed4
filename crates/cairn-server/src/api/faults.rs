//! Fault injection (admin API, for testing): network, disk and CPU.
//!
//! - `POST /v1/faults/network` installs one rule on this node's cluster
//!   transport and answers its id; `GET` lists the rules; `DELETE` removes
//!   them all. Rules act on this node's frames only (both directions by
//!   default), so isolating a node needs one call to that node.
//! - `POST /v1/faults/disk` sets (replacing) this node's disk fault: write
//!   and fsync delays applied by the storage writer and felt by the disk
//!   probe, and an `error_rate` of refused client appends (see
//!   [`crate::write`] for why errors are not injected into storage itself).
//! - `POST /v1/faults/cpu` starts (replacing) a CPU burn in this process
//!   (see [`crate::faults`]).
//!
//! Disk and CPU faults always have a time to live (default 60 s, at most
//! 1 h), network rules may; so a forgotten fault heals by itself. Every
//! answer is plain JSON (durations in ms, expiry as ms since the Unix
//! epoch); bad bodies are 400 `{code, message}`. Once authentication lands,
//! these routes are admin-only.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use cairn_cluster::transport::FaultRule;
use cairn_storage::DiskFault;
use cairn_types::api::{
    CpuFaultRequest, CpuFaultStatus, CpuFaultView, DiskFaultRequest, DiskFaultStatus,
    DiskFaultView, NetworkFaultInstalled, NetworkFaultList, NetworkFaultRequest,
};
use serde::de::DeserializeOwned;

use super::ApiError;
use super::extract::read_body;
use crate::faults::{CpuBurner, DEFAULT_FAULT_TTL, MAX_FAULT_TTL, disk_view, network_views};
use crate::node::Node;

/// Reads and parses a fault body; any problem is a 400.
async fn parse<T: DeserializeOwned>(node: &Node, body: Body) -> Result<T, ApiError> {
    let body = read_body(node, body, 64 * 1024).await?;
    serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid fault: {e}")))
}

/// A disk or CPU fault's time to live: the default when absent, and
/// within 1 ms..=1 h.
fn ttl(ttl_ms: Option<u64>) -> Result<Duration, ApiError> {
    let Some(ms) = ttl_ms else {
        return Ok(DEFAULT_FAULT_TTL);
    };
    let ttl = Duration::from_millis(ms);
    if ttl.is_zero() || ttl > MAX_FAULT_TTL {
        return Err(ApiError::bad_request(format!(
            "ttl_ms must be within 1..={}",
            MAX_FAULT_TTL.as_millis()
        )));
    }
    Ok(ttl)
}

fn rule(f: NetworkFaultRequest) -> Result<FaultRule, ApiError> {
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
) -> Result<(StatusCode, Json<NetworkFaultInstalled>), ApiError> {
    let rule = rule(parse(&node, body).await?)?;
    tracing::warn!(?rule, "network fault installed");
    let id = node.cluster().transport().faults().add(rule);
    Ok((StatusCode::CREATED, Json(NetworkFaultInstalled { id })))
}

pub async fn list(State(node): State<Node>) -> Json<NetworkFaultList> {
    Json(NetworkFaultList {
        rules: network_views(node.cluster().transport().faults()),
    })
}

pub async fn clear(State(node): State<Node>) -> StatusCode {
    node.cluster().transport().faults().clear();
    tracing::warn!("network faults cleared");
    StatusCode::NO_CONTENT
}

pub async fn set_disk(
    State(node): State<Node>,
    body: Body,
) -> Result<(StatusCode, Json<DiskFaultView>), ApiError> {
    let req: DiskFaultRequest = parse(&node, body).await?;
    let ttl = ttl(req.ttl_ms)?;
    let fault = DiskFault {
        fsync_delay: Duration::from_millis(req.fsync_delay_ms.unwrap_or(0)),
        write_delay: Duration::from_millis(req.write_delay_ms.unwrap_or(0)),
        error_rate: req.error_rate.unwrap_or(0.0),
    };
    fault.validate().map_err(ApiError::bad_request)?;
    let faults = node.disk_faults();
    faults.set(fault, ttl);
    tracing::warn!(?fault, ?ttl, "disk fault injected");
    let view = disk_view(faults).ok_or_else(|| ApiError::internal("disk fault vanished"))?;
    Ok((StatusCode::CREATED, Json(view)))
}

pub async fn get_disk(State(node): State<Node>) -> Json<DiskFaultStatus> {
    Json(DiskFaultStatus {
        fault: disk_view(node.disk_faults()),
    })
}

pub async fn clear_disk(State(node): State<Node>) -> StatusCode {
    node.disk_faults().clear();
    tracing::warn!("disk fault cleared");
    StatusCode::NO_CONTENT
}

pub async fn set_cpu(
    State(node): State<Node>,
    body: Body,
) -> Result<(StatusCode, Json<CpuFaultView>), ApiError> {
    let req: CpuFaultRequest = parse(&node, body).await?;
    let ttl = ttl(req.ttl_ms)?;
    CpuBurner::validate(req.threads, req.duty_percent).map_err(ApiError::bad_request)?;
    // Starting joins the previous burn's threads: off the async workers.
    let burner = node.cpu_burner().clone();
    let view =
        tokio::task::spawn_blocking(move || burner.start(req.threads, req.duty_percent, ttl))
            .await?
            .map_err(|e| ApiError::internal(format!("start CPU burner threads: {e}")))?;
    tracing::warn!(
        threads = req.threads,
        duty_percent = req.duty_percent,
        ?ttl,
        "CPU burn started"
    );
    Ok((StatusCode::CREATED, Json(view)))
}

pub async fn get_cpu(State(node): State<Node>) -> Json<CpuFaultStatus> {
    Json(CpuFaultStatus {
        fault: node.cpu_burner().current(),
    })
}

pub async fn clear_cpu(State(node): State<Node>) -> Result<StatusCode, ApiError> {
    let burner = node.cpu_burner().clone();
    tokio::task::spawn_blocking(move || burner.stop()).await?;
    tracing::warn!("CPU burn stopped");
    Ok(StatusCode::NO_CONTENT)
}
