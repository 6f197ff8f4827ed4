//! Streams as the API sees them, over the cluster's metadata.
//!
//! A stream exists once the controller has committed its creation; its
//! definition and placement come from the replicated metadata, and its data
//! from the partition groups (on this node when it holds a replica). This
//! module maps between the API's `StreamConfig` and the metadata, and
//! checks names and settings before anything is proposed.

use cairn_cluster::Cluster;
use cairn_types::api::{PartitionInfo, StreamConfig, StreamInfo};
use std::sync::Arc;

use cairn_cluster::controller::ClusterMeta;
use cairn_cluster::controller::meta::StreamMeta;
use cairn_storage::LogConfig;
use cairn_types::ErrorCode;

use crate::error::ApiError;

pub const MAX_PARTITIONS: u32 = 1024;
pub const MAX_NAME_LEN: usize = 128;
/// Most replicas a partition may have.
pub const MAX_REPLICATION_FACTOR: u32 = 7;

/// Checks a stream name: `[A-Za-z0-9._-]{1,128}`, not starting with a dot.
pub fn validate_name(name: &str) -> Result<(), ApiError> {
    let bad = |why: &str| {
        Err(ApiError::bad_request(format!(
            "invalid stream name {name:?}: {why}"
        )))
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return bad("must be 1 to 128 characters long");
    }
    if name.starts_with('.') {
        return bad("must not start with a dot");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("only letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// Checks a stream config and derives the settings of its partition logs.
pub fn log_config(config: &StreamConfig) -> Result<LogConfig, ApiError> {
    let invalid = |m: String| Err(ApiError::new(ErrorCode::InvalidStreamConfig, m));
    if !(1..=MAX_PARTITIONS).contains(&config.partitions) {
        return invalid(format!(
            "partitions must be between 1 and {MAX_PARTITIONS} (got {})",
            config.partitions
        ));
    }
    if let Some(rf) = config.replication_factor
        && !(1..=MAX_REPLICATION_FACTOR).contains(&rf)
    {
        return invalid(format!(
            "replication_factor must be between 1 and {MAX_REPLICATION_FACTOR} (got {rf})"
        ));
    }
    let log = LogConfig {
        segment_bytes: config.segment_bytes,
        retention_ms: config.retention_ms,
        retention_bytes: config.retention_bytes,
        durability: config.durability,
        ..LogConfig::default()
    };
    if let Err(m) = log.validate() {
        return invalid(m);
    }
    Ok(log)
}

/// The API config of a stream from its metadata.
pub fn stream_config(meta: &StreamMeta) -> StreamConfig {
    StreamConfig {
        partitions: meta.partitions.len() as u32,
        retention_ms: meta.log.retention_ms,
        retention_bytes: meta.log.retention_bytes,
        segment_bytes: meta.log.segment_bytes,
        durability: meta.log.durability,
        replication_factor: Some(meta.replication_factor),
    }
}

/// A stream as the API shows it; extents come from this node's replicas.
pub fn stream_info(cluster: &Cluster, meta: &StreamMeta) -> StreamInfo {
    let partitions = meta
        .partitions
        .iter()
        .enumerate()
        .map(|(p, pm)| {
            let mut info = PartitionInfo {
                partition: p as u32,
                start_offset: 0,
                end_offset: 0,
                size_bytes: 0,
                segments: 0,
                min_timestamp: None,
                max_timestamp: None,
                replicas: pm.replicas.clone(),
                leader: None,
            };
            if let Some(g) = cluster.group(pm.group) {
                let s = g.log.stats();
                info.start_offset = s.start_offset;
                info.end_offset = g.state.applied_end_offset().min(s.end_offset);
                info.size_bytes = s.size_bytes;
                info.segments = s.segments;
                info.min_timestamp = s.min_ts;
                info.max_timestamp = s.max_ts;
                info.leader = g.leader();
            }
            info
        })
        .collect();
    StreamInfo {
        name: meta.name.clone(),
        config: stream_config(meta),
        created_at: meta.created_us,
        partitions,
    }
}

/// A stream's metadata, borrowed from one snapshot of the cluster
/// metadata. Looking a stream up happens on every request: sharing the
/// snapshot avoids copying the stream's placement each time.
#[derive(Debug, Clone)]
pub struct StreamRef {
    meta: Arc<ClusterMeta>,
    name: String,
}

impl std::ops::Deref for StreamRef {
    type Target = StreamMeta;

    fn deref(&self) -> &StreamMeta {
        &self.meta.streams[&self.name]
    }
}

/// The stream's metadata, or 404.
pub fn lookup(cluster: &Cluster, name: &str) -> Result<StreamRef, ApiError> {
    let meta = cluster.meta();
    if !meta.streams.contains_key(name) {
        return Err(ApiError::stream_not_found(name));
    }
    Ok(StreamRef {
        meta,
        name: name.to_owned(),
    })
}

/// The group of partition `partition`, or 404.
pub fn partition_group(meta: &StreamMeta, partition: u32) -> Result<u64, ApiError> {
    meta.partitions
        .get(partition as usize)
        .map(|p| p.group)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::PartitionNotFound,
                format!(
                    "stream {:?} has no partition {partition} (it has {})",
                    meta.name,
                    meta.partitions.len()
                ),
            )
        })
}
