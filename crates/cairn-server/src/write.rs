//! The write path after parsing: the one place where validated entries
//! become stored ones, whichever API they came in on.
//!
//! HTTP (`api::handlers::append`) and the binary protocol (`tcp`) parse
//! their own wire formats into [`NewEntry`]s and then call
//! [`Node::append_entries`]. Keeping everything after parsing behind this
//! one function means the storage route (today: one local batch per
//! partition; later: the partition leader through Raft) changes in one
//! place, and both APIs keep identical semantics — validation, partition
//! routing, the response, and the ingest counters.

use cairn_client::{AppendResponse, PartitionAppend};
use cairn_telemetry::metrics::{Api, NodeMetrics, WriteStage};
use cairn_types::{Entry, ErrorCode, NewEntry};

use crate::api::ApiError;
use crate::ingest;
use crate::node::{Node, now_us};

/// Requests with more entries than this are encoded into batches on the
/// blocking pool: ~100 µs of CPU per 1000 entries would stall an async
/// worker, while for a handful of entries the hand-off costs more than the
/// work.
const INLINE_ENCODE_MAX_ENTRIES: usize = 256;

impl Node {
    /// Appends `entries` to `stream` and answers where they landed.
    ///
    /// Entries are checked again against the ingest limits (callers check
    /// first to give better messages, e.g. NDJSON line numbers; the check
    /// here is cheap and keeps the invariant for every caller). Missing
    /// timestamps become the arrival time, missing levels `INFO`. Entries
    /// are grouped by partition (hash of the source, request order kept)
    /// into one batch each, and all batches are submitted before any is
    /// awaited, so they share the storage writer's commit groups. Answers
    /// once every batch is durable per the stream's policy.
    ///
    /// Partitions are independent logs: if one append fails after others
    /// succeeded, those stay stored and the error is returned.
    ///
    /// Counts the entries and bytes ingested under `api` and records the
    /// storage stages; the caller counts the request and times parsing.
    pub async fn append_entries(
        &self,
        stream: &str,
        entries: Vec<NewEntry>,
        api: Api,
    ) -> Result<AppendResponse, ApiError> {
        let metrics = &self.telemetry().metrics;
        let stream = self.registry().get(stream)?;
        if entries.is_empty() {
            return Err(ApiError::bad_request("the request holds no entries"));
        }
        if entries.len() > ingest::MAX_ENTRIES {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the request holds {} entries; at most {} are accepted per request",
                    entries.len(),
                    ingest::MAX_ENTRIES
                ),
            ));
        }
        for (i, e) in entries.iter().enumerate() {
            ingest::validate(e).map_err(|why| {
                ApiError::new(ErrorCode::InvalidEntry, format!("entry {}: {why}", i + 1))
            })?;
        }
        let partitions = stream.partitions();
        let inline = entries.len() <= INLINE_ENCODE_MAX_ENTRIES;
        let now = now_us();
        let encode = move || {
            let entries: Vec<Entry> = entries.into_iter().map(|e| e.into_entry(now)).collect();
            ingest::build_batches(&entries, partitions)
        };
        let batches = if inline {
            encode()?
        } else {
            tokio::task::spawn_blocking(encode).await??
        };

        let mut bytes = 0u64;
        let pending: Vec<_> = batches
            .into_iter()
            .map(|(p, batch)| {
                bytes += batch.len() as u64;
                Ok((p, stream.log(p)?.append(batch)))
            })
            .collect::<Result<_, ApiError>>()?;
        let mut response = AppendResponse {
            appended: 0,
            partitions: Vec::with_capacity(pending.len()),
        };
        for (partition, pending) in pending {
            let info = pending.await?;
            record_append_stages(metrics, &info.timings);
            response.appended += u64::from(info.count);
            response.partitions.push(PartitionAppend {
                partition,
                base_offset: info.base_offset,
                count: info.count,
            });
        }
        metrics.count_ingest(api, &metrics.stream(&stream.name), response.appended, bytes);
        Ok(response)
    }
}

fn record_append_stages(metrics: &NodeMetrics, t: &cairn_storage::AppendTimings) {
    metrics.record_write(WriteStage::Queue, t.queued);
    metrics.record_write(WriteStage::Append, t.write);
    if !t.sync.is_zero() {
        metrics.record_write(WriteStage::Fsync, t.sync);
    }
}
