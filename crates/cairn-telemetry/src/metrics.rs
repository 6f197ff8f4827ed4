//! The node's own counters and stage histograms: what the write and read
//! paths record. Label values are fixed enums (stages, APIs, operations,
//! error codes) plus stream names, which operators create and which are
//! therefore few, so every label set is bounded.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cairn_types::ErrorCode;
use parking_lot::RwLock;

use crate::histogram::LatencyHistogram;

macro_rules! label_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $label:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $label),* }
            }
        }
    };
}

label_enum!(
    /// Where a write's time goes, in order. `Total` is request arrival to
    /// response; the others are its parts. Every stage counts one sample
    /// per write request that went through it, with that request's time
    /// there, so stage percentiles compare side by side. Each is recorded
    /// on the node where it ran: decode, commit, respond and total on the
    /// node that received the request; linger and replicate on the
    /// partition leader that proposed it (cairn-cluster's coalescer);
    /// queue, append and fsync on every replica that appended it, leader
    /// and followers alike, a Raft batch's time once per request it
    /// carries (the count travels in the batch header). A request whose
    /// entries span several partitions goes through linger..replicate once
    /// per partition, and counts once per partition there.
    WriteStage {
        Decode => "decode",
        Queue => "queue",
        Linger => "linger",
        Append => "append",
        Fsync => "fsync",
        Replicate => "replicate",
        Commit => "commit",
        Respond => "respond",
        Total => "total",
    }
);

label_enum!(
    /// Where a read's time goes.
    ReadStage {
        Queue => "queue",
        IndexLookup => "index_lookup",
        DiskRead => "disk_read",
        Total => "total",
    }
);

label_enum!(
    /// The protocol a request came in on.
    Api {
        Http => "http",
        Tcp => "tcp",
    }
);

label_enum!(
    /// What a request did.
    Operation {
        Append => "append",
        Read => "read",
        Query => "query",
        Admin => "admin",
    }
);

/// Error code numbers are small and stable; this bounds the table.
const MAX_ERROR_CODE: usize = 64;

/// Per-stream throughput counters. Handlers keep the `Arc` to skip the map.
#[derive(Debug, Default)]
pub struct StreamCounters {
    pub entries: AtomicU64,
    pub bytes: AtomicU64,
    pub requests: AtomicU64,
}

/// All request-path metrics of one node.
#[derive(Debug)]
pub struct NodeMetrics {
    stage_timing: AtomicBool,
    write_stages: Vec<LatencyHistogram>,
    read_stages: Vec<LatencyHistogram>,
    requests: Vec<AtomicU64>,
    entries: Vec<AtomicU64>,
    bytes: Vec<AtomicU64>,
    errors: Vec<AtomicU64>,
    streams: RwLock<BTreeMap<String, Arc<StreamCounters>>>,
    /// Client writes (HTTP or binary) this node has received and not yet
    /// answered, counted from arrival (before the body is read): what piles
    /// up when offered load passes the node's knee.
    writes_in_flight: AtomicU64,
}

/// Counts one client write as in flight until dropped.
#[derive(Debug)]
pub struct InFlightWrite<'a>(&'a AtomicU64);

impl Drop for InFlightWrite<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for NodeMetrics {
    fn default() -> Self {
        let counters = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect();
        NodeMetrics {
            stage_timing: AtomicBool::new(true),
            write_stages: WriteStage::ALL
                .iter()
                .map(|_| LatencyHistogram::new())
                .collect(),
            read_stages: ReadStage::ALL
                .iter()
                .map(|_| LatencyHistogram::new())
                .collect(),
            requests: counters(Api::ALL.len() * Operation::ALL.len()),
            entries: counters(Api::ALL.len()),
            bytes: counters(Api::ALL.len()),
            errors: counters(MAX_ERROR_CODE),
            streams: RwLock::new(BTreeMap::new()),
            writes_in_flight: AtomicU64::new(0),
        }
    }
}

impl NodeMetrics {
    /// Turns per-stage timing on or off at run time (to measure its cost).
    /// Counters keep counting either way.
    pub fn set_stage_timing(&self, on: bool) {
        self.stage_timing.store(on, Ordering::Relaxed);
    }

    /// Marks a client write in flight until the guard is dropped.
    pub fn write_in_flight(&self) -> InFlightWrite<'_> {
        self.writes_in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightWrite(&self.writes_in_flight)
    }

    /// Client writes accepted and not yet answered.
    pub fn writes_in_flight(&self) -> u64 {
        self.writes_in_flight.load(Ordering::Relaxed)
    }

    pub fn stage_timing(&self) -> bool {
        self.stage_timing.load(Ordering::Relaxed)
    }

    /// `Some(now)` when stage timing is on: callers skip clock reads when off.
    #[inline]
    pub fn start_timer(&self) -> Option<Instant> {
        self.stage_timing().then(Instant::now)
    }

    /// Records one request's time in `stage`.
    #[inline]
    pub fn record_write(&self, stage: WriteStage, d: Duration) {
        if self.stage_timing() {
            self.write_stages[stage as usize].record(d);
        }
    }

    /// Records `d` once for each of `requests` requests that spent it in
    /// `stage` together (a batch's time, counted per request it carries).
    #[inline]
    pub fn record_write_n(&self, stage: WriteStage, d: Duration, requests: u32) {
        if self.stage_timing() {
            self.write_stages[stage as usize].record_n(d, u64::from(requests));
        }
    }

    #[inline]
    pub fn record_read(&self, stage: ReadStage, d: Duration) {
        if self.stage_timing() {
            self.read_stages[stage as usize].record(d);
        }
    }

    pub fn write_stage(&self, stage: WriteStage) -> &LatencyHistogram {
        &self.write_stages[stage as usize]
    }

    pub fn read_stage(&self, stage: ReadStage) -> &LatencyHistogram {
        &self.read_stages[stage as usize]
    }

    #[inline]
    pub fn count_request(&self, api: Api, op: Operation) {
        self.requests[api as usize * Operation::ALL.len() + op as usize]
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn requests(&self, api: Api, op: Operation) -> u64 {
        self.requests[api as usize * Operation::ALL.len() + op as usize].load(Ordering::Relaxed)
    }

    /// Counts stored entries and their encoded bytes, per node and stream.
    #[inline]
    pub fn count_ingest(&self, api: Api, stream: &StreamCounters, entries: u64, bytes: u64) {
        self.entries[api as usize].fetch_add(entries, Ordering::Relaxed);
        self.bytes[api as usize].fetch_add(bytes, Ordering::Relaxed);
        stream.entries.fetch_add(entries, Ordering::Relaxed);
        stream.bytes.fetch_add(bytes, Ordering::Relaxed);
        stream.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn entries(&self, api: Api) -> u64 {
        self.entries[api as usize].load(Ordering::Relaxed)
    }

    pub fn bytes(&self, api: Api) -> u64 {
        self.bytes[api as usize].load(Ordering::Relaxed)
    }

    /// Counts a failed request by its error code. 4xx codes are exported as
    /// rejections (the client's fault), 5xx as errors (ours).
    pub fn count_error(&self, code: ErrorCode) {
        if let Some(c) = self.errors.get(usize::from(code.number())) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every error code with a non-zero count.
    pub fn error_counts(&self) -> Vec<(ErrorCode, u64)> {
        (0..MAX_ERROR_CODE)
            .filter_map(|n| {
                let code = ErrorCode::from_number(n as u16)?;
                let v = self.errors[n].load(Ordering::Relaxed);
                (v > 0).then_some((code, v))
            })
            .collect()
    }

    /// The counters of `stream`, created on first use.
    pub fn stream(&self, name: &str) -> Arc<StreamCounters> {
        if let Some(c) = self.streams.read().get(name) {
            return c.clone();
        }
        self.streams
            .write()
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Drops a deleted stream's counters so its label disappears.
    pub fn forget_stream(&self, name: &str) {
        self.streams.write().remove(name);
    }

    pub fn streams(&self) -> Vec<(String, Arc<StreamCounters>)> {
        self.streams
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Bytes held by histograms and counters (for the overhead budget).
    pub fn memory_bytes(&self) -> usize {
        let hist: usize = self
            .write_stages
            .iter()
            .chain(&self.read_stages)
            .map(|h| h.memory_bytes())
            .sum();
        let streams = self.streams.read().len() * (std::mem::size_of::<StreamCounters>() + 64);
        hist + streams + (self.requests.len() + self.entries.len() * 2 + self.errors.len()) * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_timing_off_records_nothing_but_counters_still_count() {
        let m = NodeMetrics::default();
        m.set_stage_timing(false);
        assert!(m.start_timer().is_none());
        m.record_write(WriteStage::Fsync, Duration::from_micros(90));
        m.record_write_n(WriteStage::Fsync, Duration::from_micros(90), 3);
        assert_eq!(m.write_stage(WriteStage::Fsync).snapshot().count(), 0);
        let s = m.stream("app");
        m.count_ingest(Api::Http, &s, 10, 1000);
        assert_eq!(m.entries(Api::Http), 10);
        m.set_stage_timing(true);
        m.record_write(WriteStage::Fsync, Duration::from_micros(90));
        assert_eq!(m.write_stage(WriteStage::Fsync).snapshot().count(), 1);
        m.record_write_n(WriteStage::Fsync, Duration::from_micros(90), 3);
        assert_eq!(m.write_stage(WriteStage::Fsync).snapshot().count(), 4);
    }

    #[test]
    fn errors_are_counted_per_code() {
        let m = NodeMetrics::default();
        m.count_error(ErrorCode::InvalidEntry);
        m.count_error(ErrorCode::InvalidEntry);
        m.count_error(ErrorCode::Storage);
        assert_eq!(
            m.error_counts(),
            vec![(ErrorCode::InvalidEntry, 2), (ErrorCode::Storage, 1)]
        );
    }
}
