//! Telemetry on every node: real, cheap, attributable measurements.
//!
//! - [`metrics::NodeMetrics`]: what the request paths record — per-stage
//!   latency histograms (lock-free, see [`histogram`]), throughput counters
//!   per API, operation and stream, failures per error code.
//! - [`resources`]: CPU, memory, disk, network, TCP retransmits and PSI from
//!   `/proc`, once a second, cgroup-aware.
//! - [`probe`]: a timed small write + fdatasync per data directory every
//!   100 ms (and, with a cluster, peer pings), feeding a TiKV-style slow score.
//!   The node hooks injected disk delays into the disk probes
//!   ([`Telemetry::set_disk_probe_delay`]) and lists injected faults in the
//!   snapshot ([`Telemetry::set_fault_lister`]).
//! - Exposition: [`Telemetry::encode_prometheus`] renders `/metrics` from an
//!   explicit per-node registry; [`Telemetry::snapshot`] is the compact JSON
//!   summary of the last interval.
//! - [`replication`]: per-partition replication state (leader, commit
//!   index, follower lag, quorum attribution) and per-peer replication RPC
//!   latency, read at scrape time from a [`replication::ReplicationSource`]
//!   the cluster runtime registers.
//! - [`antientropy`]: what the node's anti-entropy scans compared, found and
//!   repaired, part of the same report.
//!
//! One background thread ("cairn-telemetry") samples resources and turns
//! cumulative counters into the interval snapshot; each probe has its own
//! thread, so a hung disk stalls only its own probe (whose `in_flight_ms`
//! then shows it). Telemetry's own CPU time is measured with the per-thread
//! CPU clock and exported, as is the memory it holds.

pub mod antientropy;
mod families;
pub mod histogram;
pub mod metrics;
pub mod probe;
pub mod rate;
pub mod replication;
pub mod resources;
pub mod retention;
pub mod snapshot;

mod exposition;

pub use families::{Labels, family as encode_family};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use prometheus_client::registry::Registry;

use crate::histogram::{HistogramSnapshot, LatencyHistogram, LatencySummary};
use crate::metrics::{Api, NodeMetrics, Operation, ReadStage, WriteStage};
use crate::probe::{DelayHook, DiskProbe, Probe, SlowScore};
use crate::rate::counter_rate;
use crate::replication::{PeerSummary, ReplicationReport, ReplicationSource, ReplicationSummary};
use crate::resources::{RawSample, ResourceSampler, ResourceSnapshot};
use crate::snapshot::{
    DataDirSpace, InjectedFault, Overhead, ProbeSummary, StreamThroughput, TelemetrySnapshot,
    Throughput,
};

#[derive(Debug, Clone)]
pub struct TelemetryOptions {
    /// This node's name, as shown in snapshots.
    pub node: String,
    /// Data directories to probe.
    pub data_dirs: Vec<PathBuf>,
    pub sample_interval: Duration,
    pub probe_interval: Duration,
    /// A disk probe slower than this counts against the disk's slow score.
    pub disk_probe_timeout: Duration,
    /// Time for a slow score to fall from 100 back to 1 once probes are fast.
    pub slow_score_recovery: Duration,
}

impl Default for TelemetryOptions {
    fn default() -> Self {
        TelemetryOptions {
            node: "node".into(),
            data_dirs: Vec::new(),
            sample_interval: Duration::from_secs(1),
            probe_interval: Duration::from_millis(100),
            disk_probe_timeout: Duration::from_millis(50),
            slow_score_recovery: Duration::from_secs(30),
        }
    }
}

/// The state one probe thread shares with the sampler and the exporter.
#[derive(Debug)]
struct ProbeState {
    kind: &'static str,
    target: String,
    score: SlowScore,
    latency: LatencyHistogram,
    last: Option<Duration>,
    timeouts: u64,
    failures: u64,
    in_flight_since: Option<Instant>,
    last_error: Option<String>,
}

/// Cumulative readings at the end of the previous interval.
#[derive(Debug, Default)]
struct Readings {
    at: Option<Instant>,
    requests: BTreeMap<String, u64>,
    entries: u64,
    bytes: u64,
    errors: BTreeMap<String, u64>,
    streams: BTreeMap<String, (u64, u64, u64)>,
    write_stages: Vec<HistogramSnapshot>,
    read_stages: Vec<HistogramSnapshot>,
    probes: Vec<HistogramSnapshot>,
    /// Per peer: cumulative replication RPC and ping probe histograms and
    /// transport bytes.
    replication_rpc: BTreeMap<u64, PeerReadings>,
    overhead_ns: u64,
}

/// Lists the faults injected into this node now.
pub type FaultLister = Arc<dyn Fn() -> Vec<InjectedFault> + Send + Sync>;

#[derive(Default)]
struct FaultSlot(RwLock<Option<FaultLister>>);

impl std::fmt::Debug for FaultSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultLister")
            .field("set", &self.0.read().is_some())
            .finish()
    }
}

/// The hook disk probes ask for extra delay (see [`probe`]); settable at any
/// time, so it is read through this shared slot on every probe.
#[derive(Default)]
struct DelaySlot(RwLock<Option<DelayHook>>);

impl DelaySlot {
    fn get(&self) -> Duration {
        let hook = self.0.read().clone();
        hook.map_or(Duration::ZERO, |h| h())
    }
}

impl std::fmt::Debug for DelaySlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskProbeDelay")
            .field("set", &self.0.read().is_some())
            .finish()
    }
}

/// Free space of the filesystem holding `dir`.
fn data_dir_space(dir: &std::path::Path) -> Option<DataDirSpace> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(DataDirSpace {
        path: dir.display().to_string(),
        free_bytes: st.f_bavail.saturating_mul(st.f_frsize),
        total_bytes: st.f_blocks.saturating_mul(st.f_frsize),
        free_inodes: st.f_favail,
        total_inodes: st.f_files,
    })
}

/// Cumulative per-peer figures at the end of the previous interval.
#[derive(Debug, Clone, Default)]
struct PeerReadings {
    rpc: HistogramSnapshot,
    probe: HistogramSnapshot,
    bytes_sent: u64,
    bytes_received: u64,
}

/// The registered replication source (a trait object has no `Debug`).
#[derive(Default)]
struct SourceSlot(RwLock<Option<Arc<dyn ReplicationSource>>>);

impl std::fmt::Debug for SourceSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationSource")
            .field("set", &self.0.read().is_some())
            .finish()
    }
}

#[derive(Debug)]
pub struct Telemetry {
    options: TelemetryOptions,
    pub metrics: NodeMetrics,
    registry: RwLock<Registry>,
    probes: RwLock<Vec<Arc<Mutex<ProbeState>>>>,
    replication: SourceSlot,
    faults: FaultSlot,
    disk_probe_delay: Arc<DelaySlot>,
    latest: Mutex<Option<TelemetrySnapshot>>,
    /// `latest` as JSON, encoded once per interval on the sampler thread:
    /// what the cluster monitor's peers ask for every second, served
    /// without work on the (possibly swamped) async runtime.
    latest_json: Mutex<Option<Arc<[u8]>>>,
    last_raw: Mutex<Option<RawSample>>,
    previous: Mutex<Readings>,
    overhead_cpu_ns: AtomicU64,
    stop: Arc<StopSignal>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    started: Instant,
}

/// CPU time this thread has used, from the per-thread CPU clock, in ns.
pub fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

impl Telemetry {
    pub fn new(options: TelemetryOptions) -> Arc<Telemetry> {
        Arc::new_cyclic(|weak: &Weak<Telemetry>| {
            let mut registry = Registry::default();
            registry.register_collector(Box::new(exposition::Exporter(weak.clone())));
            Telemetry {
                options,
                metrics: NodeMetrics::default(),
                registry: RwLock::new(registry),
                probes: RwLock::new(Vec::new()),
                replication: SourceSlot::default(),
                faults: FaultSlot::default(),
                disk_probe_delay: Arc::default(),
                latest: Mutex::new(None),
                latest_json: Mutex::new(None),
                last_raw: Mutex::new(None),
                previous: Mutex::new(Readings::default()),
                overhead_cpu_ns: AtomicU64::new(0),
                stop: Arc::new(StopSignal::default()),
                threads: Mutex::new(Vec::new()),
                started: Instant::now(),
            }
        })
    }

    pub fn options(&self) -> &TelemetryOptions {
        &self.options
    }

    /// Starts the sampler thread and one disk probe per data directory.
    pub fn start(self: &Arc<Self>) -> std::io::Result<()> {
        for dir in &self.options.data_dirs {
            let slot = self.disk_probe_delay.clone();
            let probe = DiskProbe::open(dir)?.with_extra_delay(Arc::new(move || slot.get()));
            self.add_probe(Box::new(probe), self.options.disk_probe_timeout)?;
        }
        let me = Arc::downgrade(self);
        let interval = self.options.sample_interval;
        let stop = self.stop.clone();
        let handle = std::thread::Builder::new()
            .name("cairn-telemetry".into())
            .spawn(move || {
                let mut sampler = ResourceSampler::new();
                let mut next = Instant::now();
                loop {
                    let Some(t) = me.upgrade() else { return };
                    let cpu_before = thread_cpu_ns();
                    let (resources, raw) = sampler.sample();
                    t.take_snapshot(resources, raw);
                    t.overhead_cpu_ns
                        .fetch_add(thread_cpu_ns() - cpu_before, Ordering::Relaxed);
                    drop(t);
                    // A fixed rate, not a fixed pause: on a starved machine
                    // the sampling itself takes a good part of a second, and
                    // snapshots every 2 s would hide exactly that node's
                    // state from the monitor. Sampling slower than the
                    // interval still pauses half of one, so the sampler
                    // never takes a whole core.
                    next += interval;
                    let now = Instant::now();
                    if next < now {
                        next = now + interval / 2;
                    }
                    if stop.wait(next - now) {
                        return;
                    }
                }
            })?;
        self.threads.lock().push(handle);
        Ok(())
    }

    /// Runs `probe` every probe interval on its own thread.
    pub fn add_probe(
        self: &Arc<Self>,
        mut probe: Box<dyn Probe>,
        timeout: Duration,
    ) -> std::io::Result<()> {
        let interval = self.options.probe_interval;
        let rounds = (Duration::from_secs(1).as_nanos() / interval.as_nanos().max(1)).max(1) as u32;
        let state = Arc::new(Mutex::new(ProbeState {
            kind: probe.kind(),
            target: probe.target(),
            score: SlowScore::new(
                timeout,
                rounds,
                Duration::from_secs(1),
                self.options.slow_score_recovery,
            ),
            latency: LatencyHistogram::new(),
            last: None,
            timeouts: 0,
            failures: 0,
            in_flight_since: None,
            last_error: None,
        }));
        self.probes.write().push(state.clone());
        let me = Arc::downgrade(self);
        let stop = self.stop.clone();
        let handle = std::thread::Builder::new()
            .name(format!("cairn-probe-{}", probe.kind()))
            .spawn(move || {
                loop {
                    let Some(t) = me.upgrade() else { return };
                    drop(t);
                    let cpu_before = thread_cpu_ns();
                    state.lock().in_flight_since = Some(Instant::now());
                    let result = probe.run();
                    {
                        let mut s = state.lock();
                        s.in_flight_since = None;
                        match &result {
                            Ok(d) => {
                                s.latency.record(*d);
                                s.last = Some(*d);
                                if *d > timeout {
                                    s.timeouts += 1;
                                }
                            }
                            Err(e) => {
                                s.failures += 1;
                                s.last_error = Some(e.to_string());
                            }
                        }
                        s.score.record(result.as_ref().ok().copied());
                    }
                    if let Some(t) = me.upgrade() {
                        t.overhead_cpu_ns
                            .fetch_add(thread_cpu_ns() - cpu_before, Ordering::Relaxed);
                    }
                    if stop.wait(interval) {
                        return;
                    }
                }
            })?;
        self.threads.lock().push(handle);
        Ok(())
    }

    /// Stops the background threads and waits for them (a probe stuck in a
    /// hung disk is waited for too).
    pub fn stop(&self) {
        self.stop.set();
        for h in self.threads.lock().drain(..) {
            let _ = h.join();
        }
    }

    /// The summary of the last completed interval.
    pub fn snapshot(&self) -> Option<TelemetrySnapshot> {
        self.latest.lock().clone()
    }

    /// [`Telemetry::snapshot`] as JSON, already encoded: cheap to serve.
    pub fn snapshot_json(&self) -> Option<Arc<[u8]>> {
        self.latest_json.lock().clone()
    }

    /// Makes `source` the provider of replication figures for `/metrics`
    /// and the snapshot (replacing any earlier one).
    pub fn set_replication_source(&self, source: Arc<dyn ReplicationSource>) {
        *self.replication.0.write() = Some(source);
    }

    /// Makes `lister` the source of the injected faults shown in snapshots.
    pub fn set_fault_lister(&self, lister: FaultLister) {
        *self.faults.0.write() = Some(lister);
    }

    /// Makes the disk probes sleep what `hook` answers before each sync, so
    /// they feel an injected disk delay as the node's writes do.
    pub fn set_disk_probe_delay(&self, hook: DelayHook) {
        *self.disk_probe_delay.0.write() = Some(hook);
    }

    /// The faults injected into this node now.
    pub fn injected_faults(&self) -> Vec<InjectedFault> {
        let lister = self.faults.0.read().clone();
        lister.map(|l| l()).unwrap_or_default()
    }

    /// The replication report now, if a source is registered.
    pub fn replication_report(&self) -> Option<ReplicationReport> {
        // Clone the Arc out so a slow report never holds the slot's lock.
        let source = self.replication.0.read().clone();
        source.map(|s| s.report())
    }

    /// Registers more metrics in this node's registry.
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(&mut self.registry.write())
    }

    /// Renders `/metrics` (Prometheus text format 0.0.4).
    pub fn encode_prometheus(&self) -> String {
        let cpu_before = thread_cpu_ns();
        let mut out = String::with_capacity(32 << 10);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry.read())
            .expect("writing to a String cannot fail");
        self.overhead_cpu_ns.fetch_add(
            thread_cpu_ns().saturating_sub(cpu_before),
            Ordering::Relaxed,
        );
        out
    }

    pub fn memory_bytes(&self) -> u64 {
        let probes = self.probes.read().len() * (LatencyHistogram::new().memory_bytes() + 256);
        let snapshot = std::mem::size_of::<TelemetrySnapshot>() + 4096;
        (self.metrics.memory_bytes() + probes + snapshot) as u64
    }

    pub fn overhead_cpu_seconds(&self) -> f64 {
        self.overhead_cpu_ns.load(Ordering::Relaxed) as f64 / 1e9
    }

    fn probe_summaries(
        &self,
        previous: &[HistogramSnapshot],
        now: Instant,
    ) -> (Vec<ProbeSummary>, Vec<HistogramSnapshot>) {
        let mut summaries = Vec::new();
        let mut current = Vec::new();
        for (i, p) in self.probes.read().iter().enumerate() {
            let s = p.lock();
            let snap = s.latency.snapshot();
            let interval = previous
                .get(i)
                .map_or_else(|| snap.clone(), |prev| snap.since(prev));
            summaries.push(ProbeSummary {
                kind: s.kind.to_string(),
                target: s.target.clone(),
                slow_score: s.score.value(),
                timeout_ms: s.score.timeout().as_secs_f64() * 1e3,
                last_us: s.last.map(|d| d.as_secs_f64() * 1e6),
                interval: LatencySummary::of(&interval),
                timeouts_total: s.timeouts,
                failures_total: s.failures,
                in_flight_ms: s
                    .in_flight_since
                    .map(|t| now.saturating_duration_since(t).as_secs_f64() * 1e3),
                last_error: s.last_error.clone(),
            });
            current.push(snap);
        }
        (summaries, current)
    }

    /// Turns cumulative counters into the interval snapshot.
    fn take_snapshot(&self, resources: Option<ResourceSnapshot>, raw: RawSample) {
        let now = Instant::now();
        let m = &self.metrics;
        let mut prev = self.previous.lock();
        let secs = prev
            .at
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        let rate = |a: u64, b: u64| counter_rate(a, b, secs).unwrap_or(0.0);

        let mut requests = BTreeMap::new();
        for api in Api::ALL {
            for op in Operation::ALL {
                requests.insert(
                    format!("{}.{}", api.as_str(), op.as_str()),
                    m.requests(*api, *op),
                );
            }
        }
        let entries: u64 = Api::ALL.iter().map(|a| m.entries(*a)).sum();
        let bytes: u64 = Api::ALL.iter().map(|a| m.bytes(*a)).sum();
        let errors: BTreeMap<String, u64> = m
            .error_counts()
            .into_iter()
            .map(|(c, n)| (c.as_str().to_string(), n))
            .collect();
        let streams: BTreeMap<String, (u64, u64, u64)> = m
            .streams()
            .into_iter()
            .map(|(name, c)| {
                let r = Ordering::Relaxed;
                (
                    name,
                    (c.entries.load(r), c.bytes.load(r), c.requests.load(r)),
                )
            })
            .collect();
        let write_stages: Vec<HistogramSnapshot> = WriteStage::ALL
            .iter()
            .map(|s| m.write_stage(*s).snapshot())
            .collect();
        let read_stages: Vec<HistogramSnapshot> = ReadStage::ALL
            .iter()
            .map(|s| m.read_stage(*s).snapshot())
            .collect();
        let summarize = |names: &mut dyn Iterator<Item = &'static str>,
                         cur: &[HistogramSnapshot],
                         old: &[HistogramSnapshot]| {
            names
                .zip(cur.iter().enumerate())
                .map(|(name, (i, h))| {
                    let interval = old.get(i).map_or_else(|| h.clone(), |o| h.since(o));
                    (name.to_string(), LatencySummary::of(&interval))
                })
                .collect::<BTreeMap<_, _>>()
        };
        let (probes, probe_hists) = self.probe_summaries(&prev.probes, now);
        let (replication, replication_rpc) = match self.replication_report() {
            Some(report) => {
                let (summary, rpc) = summarize_replication(report, &prev.replication_rpc, secs);
                (Some(summary), rpc)
            }
            None => (None, BTreeMap::new()),
        };
        let overhead_ns = self.overhead_cpu_ns.load(Ordering::Relaxed);

        let snapshot = TelemetrySnapshot {
            node: self.options.node.clone(),
            unix_ms: cairn_types::clock::unix_ms(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            interval_seconds: secs,
            stage_timing: m.stage_timing(),
            throughput: Throughput {
                entries_per_second: rate(prev.entries, entries),
                bytes_per_second: rate(prev.bytes, bytes),
                requests_per_second: requests
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            rate(prev.requests.get(k).copied().unwrap_or(0), *v),
                        )
                    })
                    .collect(),
                errors_per_second: errors
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            rate(prev.errors.get(k).copied().unwrap_or(0), *v),
                        )
                    })
                    .collect(),
            },
            streams: streams
                .iter()
                .map(|(name, (e, b, r))| {
                    let (pe, pb, pr) = prev.streams.get(name).copied().unwrap_or_default();
                    (
                        name.clone(),
                        StreamThroughput {
                            entries_per_second: rate(pe, *e),
                            bytes_per_second: rate(pb, *b),
                            requests_per_second: rate(pr, *r),
                        },
                    )
                })
                .collect(),
            write_stages: summarize(
                &mut WriteStage::ALL.iter().map(|s| s.as_str()),
                &write_stages,
                &prev.write_stages,
            ),
            read_stages: summarize(
                &mut ReadStage::ALL.iter().map(|s| s.as_str()),
                &read_stages,
                &prev.read_stages,
            ),
            resources,
            probes,
            replication,
            overhead: Overhead {
                cpu_seconds_total: overhead_ns as f64 / 1e9,
                cpu_cores: if secs > 0.0 {
                    overhead_ns.saturating_sub(prev.overhead_ns) as f64 / 1e9 / secs
                } else {
                    0.0
                },
                memory_bytes: self.memory_bytes(),
            },
            data_dirs: self
                .options
                .data_dirs
                .iter()
                .filter_map(|d| data_dir_space(d))
                .collect(),
            faults: self.injected_faults(),
            writes_in_flight: m.writes_in_flight(),
        };
        *prev = Readings {
            at: Some(now),
            requests,
            entries,
            bytes,
            errors,
            streams,
            write_stages,
            read_stages,
            probes: probe_hists,
            replication_rpc,
            overhead_ns,
        };
        drop(prev);
        *self.last_raw.lock() = Some(raw);
        let json = serde_json::to_vec(&snapshot).ok().map(Arc::from);
        *self.latest.lock() = Some(snapshot);
        *self.latest_json.lock() = json;
    }
}

/// The snapshot's replication section: roles, partitions as reported, and
/// per-peer RPC latency over the interval (against the cumulative
/// histograms of the previous interval, which are returned for next time).
fn summarize_replication(
    report: ReplicationReport,
    previous: &BTreeMap<u64, PeerReadings>,
    secs: f64,
) -> (ReplicationSummary, BTreeMap<u64, PeerReadings>) {
    let roles = report.role_counts();
    let mut current = BTreeMap::new();
    let peers = report
        .peers
        .into_iter()
        .map(|p| {
            let prev = previous.get(&p.node);
            let (interval, probe_interval) = match prev {
                Some(prev) => (p.rpc.since(&prev.rpc), p.probe.since(&prev.probe)),
                None => (p.rpc.clone(), p.probe.clone()),
            };
            let rate = |old: Option<u64>, new: u64| {
                old.and_then(|o| counter_rate(o, new, secs)).unwrap_or(0.0)
            };
            let summary = PeerSummary {
                node: p.node,
                rpc: LatencySummary::of(&interval),
                rpc_failures_total: p.rpc_failures,
                probe: LatencySummary::of(&probe_interval),
                probe_failures_total: p.probe_failures,
                slow_score: p.slow_score,
                bytes_sent_per_second: rate(prev.map(|r| r.bytes_sent), p.bytes_sent),
                bytes_received_per_second: rate(prev.map(|r| r.bytes_received), p.bytes_received),
                calls_timed_out_total: p.calls_timed_out,
                state: p.state,
                phi: p.phi,
            };
            current.insert(
                p.node,
                PeerReadings {
                    rpc: p.rpc,
                    probe: p.probe,
                    bytes_sent: p.bytes_sent,
                    bytes_received: p.bytes_received,
                },
            );
            summary
        })
        .collect();
    (
        ReplicationSummary {
            roles,
            partitions: report.partitions,
            peers,
            quarantined_replicas: report.anti_entropy.quarantined_replicas,
        },
        current,
    )
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop.set();
    }
}

/// Wakes sleeping background threads at once when telemetry stops.
#[derive(Debug, Default)]
struct StopSignal {
    stopped: Mutex<bool>,
    wake: parking_lot::Condvar,
}

impl StopSignal {
    fn set(&self) {
        *self.stopped.lock() = true;
        self.wake.notify_all();
    }

    /// Sleeps up to `timeout`; true if stopped.
    fn wait(&self, timeout: Duration) -> bool {
        let mut stopped = self.stopped.lock();
        if !*stopped {
            self.wake.wait_for(&mut stopped, timeout);
        }
        *stopped
    }
}

#[cfg(test)]
mod tests;
