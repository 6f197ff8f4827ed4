//! The read path both APIs share: check the request, count it, and hand it
//! to the cluster's read router (`cairn_cluster::cluster::reads`), which
//! picks the replica and crosses the transport. HTTP answers the
//! [`ReadResponse`] as JSON; the binary protocol as a READ answer whose
//! entries are one record batch ([`to_answer`]).

use std::time::Instant;

use cairn_cluster::read::{DEFAULT_READ_LIMIT, MAX_READ_LIMIT};
use cairn_telemetry::metrics::{Api, Operation, ReadStage};
use cairn_types::api::{Consistency, ReadResponse};
use cairn_types::protocol::ReadAnswer;
use cairn_types::{BatchBuilder, ErrorCode};

use crate::error::ApiError;
use crate::node::Node;
use crate::streams;

/// `limit`, or `default`, checked against `1..=max`.
pub fn check_limit(limit: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
    match limit.unwrap_or(default) {
        0 => Err(ApiError::bad_request("limit must be at least 1")),
        l if l > max => Err(ApiError::bad_request(format!(
            "limit must be at most {max} (got {l})"
        ))),
        l => Ok(l),
    }
}

/// Reads committed entries of one partition for a client of `api`.
pub async fn read_partition(
    node: &Node,
    api: Api,
    stream: &str,
    partition: u32,
    offset: Option<u64>,
    limit: Option<usize>,
    consistency: Consistency,
) -> Result<ReadResponse, ApiError> {
    let metrics = &node.telemetry().metrics;
    metrics.count_request(api, Operation::Read);
    let started = Instant::now();
    let limit = check_limit(limit, DEFAULT_READ_LIMIT, MAX_READ_LIMIT)?;
    let stream = streams::lookup(node.cluster(), stream)?;
    streams::partition_group(&stream, partition)?;
    let response = node
        .cluster()
        .read(&stream, partition, offset, limit, consistency)
        .await?;
    metrics.record_read(ReadStage::Total, started.elapsed());
    Ok(response)
}

/// A read's answer in the binary protocol's form: the entries (consecutive
/// offsets) as one record batch stamped with the first one's offset.
pub fn to_answer(response: ReadResponse) -> Result<ReadAnswer, ApiError> {
    let batch = match response.entries.first() {
        None => None,
        Some(first) => {
            let base = first.offset;
            let mut builder = BatchBuilder::new();
            for (i, e) in response.entries.iter().enumerate() {
                if e.offset != base + i as u64 {
                    return Err(ApiError::internal(format!(
                        "read returned offset {} after {} (not consecutive)",
                        e.offset,
                        base + i as u64 - 1
                    )));
                }
                builder.push(&e.entry).map_err(|err| {
                    ApiError::new(ErrorCode::Internal, format!("encode the read: {err}"))
                })?;
            }
            Some(builder.finish().restamped(base, 0, 0))
        }
    };
    Ok(ReadAnswer {
        next_offset: response.next_offset,
        start_offset: response.start_offset,
        end_offset: response.end_offset,
        served_by: response.served_by,
        from_leader: response.from_leader,
        lag_entries: response.lag_entries,
        batch,
    })
}
