//! Reading a partition by offset, and querying a stream by time and filters.
//!
//! Everything here is synchronous (storage reads are `pread`s) and works on
//! one replica's log: the read router (`cluster::reads`) decides which
//! replica answers and calls it from `spawn_blocking` on that node, one
//! task per partition for queries.
//!
//! # Query plan
//! Each partition is scanned with the log's time index (`scan_time`), and
//! entries are filtered in place without allocating ([`Filter::matches`]
//! works on borrowed entries). A partition keeps its `limit` best matches
//! in a bounded max-heap keyed by rank: (timestamp, offset) for
//! `order=oldest` (the earliest matches), the same key reversed for
//! `order=newest` (the latest ones). The partial results are then merged by
//! (timestamp, partition, offset), newest first for `newest`, and cut at
//! `limit`.
//!
//! For `oldest`, work per partition is capped by an early stop: once the
//! heap is full, the scan ends at the first batch whose smallest timestamp
//! is not earlier than the latest kept match, since offset order is nearly
//! time order within a partition. This is exact when a partition's timestamps do not go
//! backwards across batches; entries stamped earlier but stored after the
//! stop point (a producer replaying old logs) can be missed, and the
//! response then still says `truncated: true`. For `newest` no early stop
//! is possible: the scan runs forward in offset order, and any later batch
//! may hold a later match, so the whole time range of every partition is
//! read (narrow it with `start` to bound the work). Kept entries are also
//! capped in bytes ([`QUERY_MAX_BYTES`]), so a query cannot hold gigabytes of
//! 256 KiB messages in memory.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ops::ControlFlow;

use cairn_storage::{PartitionLog, ScanStats};
use cairn_types::api::{OffsetEntry, Order, QueryEntry, QueryResponse, ReadResponse};
use cairn_types::{BatchError, Entry, EntryRef, ErrorCode, Level, RecordBatch};
use serde::{Deserialize, Serialize};

pub const DEFAULT_READ_LIMIT: usize = 100;
pub const MAX_READ_LIMIT: usize = 10_000;
/// A read stops early (with fewer than `limit` entries) past this many
/// bytes of entries; `next_offset` says where to continue.
pub const READ_MAX_BYTES: usize = 16 << 20;
pub const DEFAULT_QUERY_LIMIT: usize = 1000;
pub const MAX_QUERY_LIMIT: usize = 100_000;
/// Bytes of matched entries a query keeps, per partition and in total.
pub const QUERY_MAX_BYTES: usize = 32 << 20;

/// Why a read or a query of a partition failed: a stable [`ErrorCode`]
/// and a message, plus the partition's leader when the answering node
/// knows it and the request was for the leader (a hint for the router).
/// Crosses the transport as JSON inside the read and query replies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{code}: {message}")]
pub struct ReadError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<u64>,
}

impl ReadError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ReadError {
            code,
            message: message.into(),
            leader: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
}

impl From<cairn_storage::StorageError> for ReadError {
    fn from(e: cairn_storage::StorageError) -> Self {
        ReadError::new(e.code(), e.to_string())
    }
}

/// A batch passed its checksum but its entries do not decode: the stored
/// data is wrong, so it is reported as corruption and never served.
fn corrupt(log: &PartitionLog, batch: &RecordBatch, e: BatchError) -> ReadError {
    ReadError::new(
        ErrorCode::Corruption,
        format!(
            "corrupt batch at offset {} in {}: {e}",
            batch.base_offset(),
            log.dir().display()
        ),
    )
}

/// Rough memory and wire size of an entry, for the byte caps.
fn entry_size(e: &EntryRef<'_>) -> usize {
    64 + e.source.len()
        + e.message.len()
        + e.attributes
            .iter()
            .map(|(k, v)| k.len() + v.len() + 8)
            .sum::<usize>()
}

/// Reads up to `limit` entries of one partition from `from` (default: the
/// partition's start), never at or past `committed_end` (entries there may
/// still be discarded by Raft).
pub fn read_partition(
    log: &PartitionLog,
    from: Option<u64>,
    limit: usize,
    committed_end: u64,
) -> Result<(ReadResponse, ScanStats), ReadError> {
    let (start, end) = log.bounds();
    let end = end.min(committed_end);
    let from = from.unwrap_or(start);
    // `scan_from` checks too, but racing retention could move `start`
    // between the two calls; both paths yield the same 416.
    if from < start || from > end {
        return Err(cairn_storage::StorageError::OffsetOutOfRange {
            requested: from,
            start,
            end,
        }
        .into());
    }
    let mut entries = Vec::with_capacity(limit.min(1024));
    let mut bytes = 0;
    let mut failure = None;
    let stats = log.scan_from_timed(from, |batch| {
        for item in batch.entries() {
            let (offset, e) = match item {
                Ok(v) => v,
                Err(err) => {
                    failure = Some(corrupt(log, &batch, err));
                    return ControlFlow::Break(());
                }
            };
            if offset < from {
                continue;
            }
            if offset >= end {
                return ControlFlow::Break(());
            }
            bytes += entry_size(&e);
            entries.push(OffsetEntry {
                offset,
                entry: e.to_owned(),
            });
            if entries.len() >= limit || bytes >= READ_MAX_BYTES {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    let next_offset = entries.last().map_or(from, |e| e.offset + 1);
    // The start the read was judged against, not a fresh one: retention
    // may have moved it since, past entries this answer already holds.
    let (_, end_offset) = log.bounds();
    let response = ReadResponse {
        entries,
        next_offset,
        start_offset: start,
        end_offset: end_offset.min(committed_end),
        served_by: 0,
        from_leader: false,
        lag_entries: None,
    };
    Ok((response, stats))
}

/// What a query matches. Time bounds are inclusive.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Filter {
    pub start: i64,
    pub end: i64,
    /// At or above this level.
    pub level: Option<Level>,
    /// Exactly this source.
    pub source: Option<String>,
    /// Substring of the message (case-sensitive).
    pub contains: Option<String>,
}

impl Filter {
    pub fn matches(&self, e: &EntryRef<'_>) -> bool {
        e.timestamp_us >= self.start
            && e.timestamp_us <= self.end
            && self.level.is_none_or(|l| e.level >= l)
            && self.source.as_deref().is_none_or(|s| e.source == s)
            && self
                .contains
                .as_deref()
                .is_none_or(|c| e.message.contains(c))
    }
}

/// Where a match sorts in a query's order, smallest first: (timestamp,
/// partition, offset), bitwise-negated for `newest` (`!x` reverses the
/// order of integers without overflowing, unlike `-x`).
fn rank(order: Order, ts: i64, partition: u32, offset: u64) -> (i64, u32, u64) {
    match order {
        Order::Oldest => (ts, partition, offset),
        Order::Newest => (!ts, !partition, !offset),
    }
}

/// A match kept by a partition scan; the heap orders by rank (see [`rank`]),
/// so its top is the worst match kept.
#[derive(Debug)]
struct Kept {
    rank: (i64, u32, u64),
    ts: i64,
    offset: u64,
    size: usize,
    entry: Entry,
}

impl Kept {
    fn key(&self) -> (i64, u32, u64) {
        self.rank
    }
}

impl PartialEq for Kept {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Kept {}

impl PartialOrd for Kept {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Kept {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// The best matches of one partition in the query's order.
#[derive(Debug)]
pub struct PartitionMatches {
    pub partition: u32,
    /// Best first: (timestamp, offset) order, reversed for `newest`.
    entries: Vec<Kept>,
    /// More matches may exist than `entries` holds.
    pub more: bool,
    /// Where the partition's scan spent its time.
    pub stats: ScanStats,
}

impl PartitionMatches {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Finds the (up to) `limit` earliest (or, for `newest`, latest) matches of
/// one partition; see the module docs for where the scan stops.
pub fn query_partition(
    log: &PartitionLog,
    partition: u32,
    filter: &Filter,
    limit: usize,
    committed_end: u64,
    order: Order,
) -> Result<PartitionMatches, ReadError> {
    let mut heap: BinaryHeap<Kept> = BinaryHeap::new();
    let mut cap = limit;
    let mut bytes = 0usize;
    let mut more = false;
    let mut failure = None;
    if limit == 0 || filter.start > filter.end {
        return Ok(PartitionMatches {
            partition,
            entries: Vec::new(),
            more: false,
            stats: ScanStats::default(),
        });
    }
    let stats = log.scan_time_timed(filter.start, filter.end, |batch| {
        if order == Order::Oldest && heap.len() >= cap {
            let latest = heap.peek().expect("cap > 0, heap is full").ts;
            if batch.header().min_ts >= latest {
                more = true;
                return ControlFlow::Break(());
            }
        }
        for item in batch.entries() {
            let (offset, e) = match item {
                Ok(v) => v,
                Err(err) => {
                    failure = Some(corrupt(log, &batch, err));
                    return ControlFlow::Break(());
                }
            };
            if offset >= committed_end {
                return ControlFlow::Break(());
            }
            if !filter.matches(&e) {
                continue;
            }
            let rank = rank(order, e.timestamp_us, partition, offset);
            if heap.len() >= cap {
                more = true;
                let worst = heap.peek().expect("heap is full").key();
                if rank >= worst {
                    continue;
                }
                if let Some(evicted) = heap.pop() {
                    bytes -= evicted.size;
                }
            }
            let size = entry_size(&e);
            bytes += size;
            heap.push(Kept {
                rank,
                ts: e.timestamp_us,
                offset,
                size,
                entry: e.to_owned(),
            });
            // Over the byte budget: drop the worst matches and keep fewer
            // from now on, so the kept set stays the best one.
            while bytes > QUERY_MAX_BYTES && heap.len() > 1 {
                let evicted = heap.pop().expect("non-empty");
                bytes -= evicted.size;
                cap = heap.len();
                more = true;
            }
        }
        ControlFlow::Continue(())
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(PartitionMatches {
        partition,
        entries: heap.into_sorted_vec(),
        more,
        stats,
    })
}

/// Merges answers that each cover some partitions (local scans and peers'
/// answers) into the best `limit` matches overall, in `order`.
pub fn merge_responses(parts: Vec<QueryResponse>, limit: usize, order: Order) -> QueryResponse {
    let mut truncated = parts.iter().any(|p| p.truncated);
    let mut failed_partitions = Vec::new();
    let mut entries = Vec::new();
    for p in parts {
        entries.extend(p.entries);
        failed_partitions.extend(p.failed_partitions);
    }
    entries.sort_unstable_by_key(|e| rank(order, e.entry.timestamp_us, e.partition, e.offset));
    if entries.len() > limit {
        entries.truncate(limit);
        truncated = true;
    }
    failed_partitions.sort_unstable_by_key(|f: &cairn_types::api::PartitionFailure| f.partition);
    QueryResponse {
        entries,
        truncated,
        failed_partitions,
    }
}

/// Merges per-partition matches in the order they were queried with (see
/// [`rank`]) and keeps the best `limit` (and at most [`QUERY_MAX_BYTES`]).
pub fn merge(parts: Vec<PartitionMatches>, limit: usize) -> QueryResponse {
    let mut truncated = parts.iter().any(|p| p.more);
    let mut all: Vec<(u32, Kept)> = parts
        .into_iter()
        .flat_map(|p| {
            let partition = p.partition;
            p.entries.into_iter().map(move |k| (partition, k))
        })
        .collect();
    // Every kept rank already carries its partition.
    all.sort_unstable_by_key(|(_, k)| k.key());
    if all.len() > limit {
        truncated = true;
        all.truncate(limit);
    }
    let mut bytes = 0;
    let mut entries = Vec::with_capacity(all.len());
    for (partition, k) in all {
        bytes += k.size;
        if bytes > QUERY_MAX_BYTES && !entries.is_empty() {
            truncated = true;
            break;
        }
        entries.push(QueryEntry {
            partition,
            offset: k.offset,
            entry: k.entry,
        });
    }
    QueryResponse {
        entries,
        truncated,
        failed_partitions: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cairn_storage::{DataDir, DataDirOptions, LogConfig};
    use cairn_types::BatchBuilder;

    use super::*;

    fn entry(ts: i64, level: Level, source: &str, message: &str) -> Entry {
        Entry {
            timestamp_us: ts,
            level,
            source: source.into(),
            message: message.into(),
            attributes: Default::default(),
        }
    }

    fn append(log: &PartitionLog, entries: &[Entry]) {
        let mut b = BatchBuilder::new();
        for e in entries {
            b.push(e).unwrap();
        }
        log.append(b.finish()).wait().unwrap();
    }

    struct Fixture {
        _tmp: tempfile::TempDir,
        dd: Arc<DataDir>,
        logs: Vec<PartitionLog>,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = self.dd.shutdown();
        }
    }

    fn fixture(partitions: u32) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dd = Arc::new(DataDir::open(tmp.path(), DataDirOptions::default()).unwrap());
        let config = LogConfig {
            durability: cairn_storage::Durability::None,
            ..LogConfig::default()
        };
        let logs = (0..partitions)
            .map(|p| dd.open_log(p.to_string(), config.clone()).unwrap())
            .collect();
        Fixture {
            _tmp: tmp,
            dd,
            logs,
        }
    }

    #[test]
    fn reads_respect_offset_limit_and_bounds() {
        let f = fixture(1);
        let log = &f.logs[0];
        append(
            log,
            &(0..5)
                .map(|i| entry(i, Level::Info, "a", "m"))
                .collect::<Vec<_>>(),
        );
        append(
            log,
            &(5..9)
                .map(|i| entry(i, Level::Info, "a", "m"))
                .collect::<Vec<_>>(),
        );

        let r = read_partition(log, Some(3), 4, u64::MAX).unwrap().0;
        let offsets: Vec<u64> = r.entries.iter().map(|e| e.offset).collect();
        assert_eq!(offsets, [3, 4, 5, 6]);
        assert_eq!((r.next_offset, r.start_offset, r.end_offset), (7, 0, 9));

        let r = read_partition(log, None, 100, u64::MAX).unwrap().0;
        assert_eq!(r.entries.len(), 9);
        let r = read_partition(log, Some(9), 100, u64::MAX).unwrap().0;
        assert!(r.entries.is_empty());
        assert_eq!(r.next_offset, 9);
        let e = read_partition(log, Some(10), 100, u64::MAX).unwrap_err();
        assert_eq!(e.code, ErrorCode::OffsetOutOfRange);
    }

    #[test]
    fn filters_match_level_source_text_and_time() {
        let f = Filter {
            start: 10,
            end: 20,
            level: Some(Level::Warn),
            source: Some("api".into()),
            contains: Some("disk".into()),
        };
        assert!(f.matches(&entry(10, Level::Error, "api", "disk full").as_ref()));
        assert!(f.matches(&entry(20, Level::Warn, "api", "the disk").as_ref()));
        assert!(!f.matches(&entry(21, Level::Warn, "api", "disk").as_ref()));
        assert!(!f.matches(&entry(15, Level::Info, "api", "disk").as_ref()));
        assert!(!f.matches(&entry(15, Level::Warn, "api2", "disk").as_ref()));
        assert!(!f.matches(&entry(15, Level::Warn, "api", "Disk").as_ref()));
    }

    #[test]
    fn queries_merge_partitions_in_time_order_and_truncate() {
        let f = fixture(3);
        // Interleaved timestamps across partitions, each partition in order.
        for p in 0..3u32 {
            let entries: Vec<Entry> = (0..10)
                .map(|i| {
                    entry(
                        i64::from(i * 3 + p as i32),
                        Level::Info,
                        "s",
                        &format!("p{p} i{i}"),
                    )
                })
                .collect();
            append(&f.logs[p as usize], &entries[..5]);
            append(&f.logs[p as usize], &entries[5..]);
        }
        let filter = Filter {
            start: 0,
            end: i64::MAX,
            ..Filter::default()
        };
        let parts = |limit| {
            (0..3)
                .map(|p| {
                    query_partition(
                        &f.logs[p as usize],
                        p,
                        &filter,
                        limit,
                        u64::MAX,
                        Order::Oldest,
                    )
                    .unwrap()
                })
                .collect::<Vec<_>>()
        };
        let all = merge(parts(1000), 1000);
        assert!(!all.truncated);
        let ts: Vec<i64> = all.entries.iter().map(|e| e.entry.timestamp_us).collect();
        assert_eq!(ts, (0..30).collect::<Vec<_>>());
        assert_eq!((all.entries[4].partition, all.entries[4].offset), (1, 1));

        let some = merge(parts(7), 7);
        assert!(some.truncated);
        let ts: Vec<i64> = some.entries.iter().map(|e| e.entry.timestamp_us).collect();
        assert_eq!(ts, (0..7).collect::<Vec<_>>());

        let window = Filter {
            start: 5,
            end: 9,
            ..Filter::default()
        };
        let r = merge(
            (0..3)
                .map(|p| {
                    query_partition(
                        &f.logs[p as usize],
                        p,
                        &window,
                        100,
                        u64::MAX,
                        Order::Oldest,
                    )
                    .unwrap()
                })
                .collect(),
            100,
        );
        let ts: Vec<i64> = r.entries.iter().map(|e| e.entry.timestamp_us).collect();
        assert_eq!(ts, [5, 6, 7, 8, 9]);
    }

    #[test]
    fn a_partition_keeps_its_earliest_matches_even_out_of_order() {
        let f = fixture(1);
        let log = &f.logs[0];
        // One batch with timestamps out of order inside it.
        append(
            log,
            &[50, 10, 40, 20, 30].map(|ts| entry(ts, Level::Info, "s", "m")),
        );
        let m = query_partition(
            log,
            0,
            &Filter {
                start: 0,
                end: 100,
                ..Filter::default()
            },
            2,
            u64::MAX,
            Order::Oldest,
        )
        .unwrap();
        assert!(m.more);
        let ts: Vec<i64> = m.entries.iter().map(|k| k.ts).collect();
        assert_eq!(ts, [10, 20]);
    }

    #[test]
    fn newest_keeps_each_partitions_latest_matches_and_merges_newest_first() {
        let f = fixture(3);
        // Interleaved timestamps, several batches per partition, one batch
        // out of order inside: the latest matches sit in the last batches,
        // past where an `oldest` scan would stop.
        for p in 0..3u32 {
            let entries: Vec<Entry> = (0..10)
                .map(|i| entry(i64::from(i * 3 + p as i32), Level::Info, "s", "m"))
                .collect();
            append(&f.logs[p as usize], &entries[..4]);
            append(&f.logs[p as usize], &entries[4..8]);
            let mut last = entries[8..].to_vec();
            last.reverse();
            append(&f.logs[p as usize], &last);
        }
        let filter = Filter {
            start: 0,
            end: i64::MAX,
            ..Filter::default()
        };
        let parts = |limit, order| {
            (0..3)
                .map(|p| {
                    query_partition(&f.logs[p as usize], p, &filter, limit, u64::MAX, order)
                        .unwrap()
                })
                .collect::<Vec<_>>()
        };
        let one = query_partition(&f.logs[0], 0, &filter, 2, u64::MAX, Order::Newest).unwrap();
        assert!(one.more);
        let ts: Vec<i64> = one.entries.iter().map(|k| k.ts).collect();
        assert_eq!(ts, [27, 24]);

        let some = merge(parts(4, Order::Newest), 4);
        assert!(some.truncated);
        let ts: Vec<i64> = some.entries.iter().map(|e| e.entry.timestamp_us).collect();
        assert_eq!(ts, [29, 28, 27, 26]);

        // With everything returned, `newest` is exactly `oldest` reversed.
        let key = |e: &QueryEntry| (e.entry.timestamp_us, e.partition, e.offset);
        let newest = merge(parts(100, Order::Newest), 100);
        let mut oldest: Vec<_> = merge(parts(100, Order::Oldest), 100)
            .entries
            .iter()
            .map(key)
            .collect();
        oldest.reverse();
        assert!(!newest.truncated);
        assert_eq!(newest.entries.iter().map(key).collect::<Vec<_>>(), oldest);

        // Answers from peers merge the same way.
        let mut first = parts(3, Order::Newest);
        let rest = first.split_off(1);
        let halves = vec![merge(first, 3), merge(rest, 3)];
        let ts: Vec<i64> = merge_responses(halves, 3, Order::Newest)
            .entries
            .iter()
            .map(|e| e.entry.timestamp_us)
            .collect();
        assert_eq!(ts, [29, 28, 27]);
    }
}
