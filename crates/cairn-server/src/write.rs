//! The write path after parsing: the one place where validated entries
//! become stored ones, whichever API they came in on.
//!
//! HTTP (`api::handlers::append`) and the binary protocol (`tcp`) parse
//! their own wire formats into [`NewEntry`]s and then call
//! [`Node::append_entries`]. Keeping everything after parsing behind this
//! one function means both APIs keep identical semantics — validation,
//! partition routing, the response, and the ingest counters — and the
//! route to storage (one batch per partition, sent to that partition's
//! Raft leader, here or on another node) lives in one place.
//!
//! # Injected append errors
//! A disk fault's `error_rate` (see `cairn_storage::fault`) is applied here,
//! at the entry point, and nowhere deeper: a storage error under a
//! partition's Raft log is fatal to openraft's core (the group would stop
//! for good) and poisons the log, so injecting it there would turn a test
//! fault into lasting damage. Instead, that fraction of client appends
//! received by this node is refused with 503 `unavailable` before anything
//! is parsed into batches or written: a refused append stored nothing and
//! may be retried. Appends forwarded by other nodes and replication to this
//! node are not affected.

use cairn_telemetry::metrics::{Api, WriteStage};
use cairn_types::api::{AppendResponse, PartitionAppend};
use cairn_types::batch::RecordBatch;
use cairn_types::{Entry, ErrorCode, NewEntry};

use crate::error::ApiError;
use crate::node::{Node, now_us};
use crate::{ingest, streams};

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
    /// into one batch each, and all batches are sent to their partition
    /// leaders at once (the leaders coalesce concurrent batches into one
    /// Raft entry). Answers once every batch is committed on a majority of
    /// its replicas.
    ///
    /// Partitions are independent logs: if one append fails after others
    /// succeeded, those stay stored and the error is returned.
    ///
    /// Counts the entries and bytes ingested under `api` and records the
    /// commit stage; the caller counts the request and times parsing.
    pub async fn append_entries(
        &self,
        stream: &str,
        entries: Vec<NewEntry>,
        api: Api,
    ) -> Result<AppendResponse, ApiError> {
        self.injected_append_error()?;
        let metrics = &self.telemetry().metrics;
        let stream = streams::lookup(self.cluster(), stream)?;
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
        let partitions = stream.partitions.len() as u32;
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
        let writes = batches.into_iter().map(|(p, batch)| {
            bytes += batch.len() as u64;
            let group = streams::partition_group(&stream, p);
            let cluster = self.cluster().clone();
            async move {
                let appended = cluster.append(group?, batch).await?;
                Ok::<_, ApiError>(PartitionAppend {
                    partition: p,
                    base_offset: appended.base_offset,
                    count: appended.count,
                })
            }
        });
        let committing = metrics.start_timer();
        let results = futures::future::join_all(writes).await;
        if let Some(t) = committing {
            metrics.record_write(WriteStage::Commit, t.elapsed());
        }
        let mut response = AppendResponse {
            appended: 0,
            partitions: Vec::with_capacity(results.len()),
        };
        for result in results {
            let part = result?;
            response.appended += u64::from(part.count);
            response.partitions.push(part);
        }
        metrics.count_ingest(api, &metrics.stream(&stream.name), response.appended, bytes);
        Ok(response)
    }

    /// Refuses this append if an injected disk fault's coin says so (see
    /// the module docs); nothing has been stored at that point.
    fn injected_append_error(&self) -> Result<(), ApiError> {
        if self.disk_faults().roll_error() {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "append refused by an injected disk fault (error_rate); nothing was stored",
            ));
        }
        Ok(())
    }

    /// Appends a producer's record batch, already checked with
    /// [`ingest::checked_batch`]. When all its entries belong to one
    /// partition (always for a one-entry batch) it is stored as sent:
    /// no decoding into entries and re-encoding per partition, which is
    /// most of a small request's cost. Otherwise it takes the general path.
    pub async fn append_batch(
        &self,
        stream: &str,
        batch: RecordBatch,
        api: Api,
    ) -> Result<AppendResponse, ApiError> {
        let meta = streams::lookup(self.cluster(), stream)?;
        let partitions = meta.partitions.len() as u32;
        let Some(partition) = batch.single_partition(partitions) else {
            let entries = ingest::entries_from_batch(batch.as_bytes().clone())?;
            return self.append_entries(stream, entries, api).await;
        };
        // Here, not first: the general path above tosses its own coin.
        self.injected_append_error()?;
        let metrics = &self.telemetry().metrics;
        let bytes = batch.len() as u64;
        let group = streams::partition_group(&meta, partition)?;
        let committing = metrics.start_timer();
        let appended = self.cluster().append(group, batch).await?;
        if let Some(t) = committing {
            metrics.record_write(WriteStage::Commit, t.elapsed());
        }
        metrics.count_ingest(
            api,
            &metrics.stream(stream),
            u64::from(appended.count),
            bytes,
        );
        Ok(AppendResponse {
            appended: u64::from(appended.count),
            partitions: vec![PartitionAppend {
                partition,
                base_offset: appended.base_offset,
                count: appended.count,
            }],
        })
    }
}
