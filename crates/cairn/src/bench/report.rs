//! The end of a run: the JSON report (every figure plus the full
//! configuration, so two runs can be compared field by field) and the
//! human summary printed from the same data.
//!
//! Rates are entries per second unless a name says requests; latencies are
//! milliseconds; durations are seconds.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use super::driver::{PhaseResult, RunResult};
use super::interval::{IntervalRow, rate};
use super::recorder::{Bucket, Percentiles};
use super::scenario::StepFigures;
use super::verify::VerifyReport;
use crate::cli::{Arrival, ProduceApi, ReadKind};
use crate::format::{count, ms};

/// The configuration as run, in plain units.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub targets: Vec<String>,
    /// Binary-protocol addresses the writers used (`--api binary`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tcp_targets: Vec<String>,
    pub api: ProduceApi,
    /// `--api binary`: each partition's share sent to its leader.
    pub leader_routing: bool,
    /// `--api binary` with leader routing: requests on the wire per
    /// partition and writer before appends are merged.
    pub partition_in_flight: u32,
    pub connections: u32,
    pub max_in_flight: u32,
    pub arrival: Arrival,
    pub seed: u64,
    pub batch_size: u32,
    pub entry_size: usize,
    pub sources: u32,
    pub partitions: u32,
    pub streams: Vec<String>,
    pub durability: String,
    pub read_rate: f64,
    pub read_kind: ReadKind,
    pub read_limit: u32,
    pub read_window_s: f64,
    pub timeout_s: f64,
    pub grace_s: f64,
    pub threads: u32,
    pub verify: bool,
    pub keep_streams: bool,
    /// The scenario's own parameters.
    pub scenario: serde_json::Value,
}

/// Counts and latencies of one kind of request.
#[derive(Debug, Clone, Serialize)]
pub struct OpReport {
    pub requests: u64,
    /// Entries written (or returned, for reads) by successful requests.
    pub entries: u64,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub backlogged: u64,
    pub unsent: u64,
    /// From the intended send time: what a user feels.
    pub response: Percentiles,
    /// From the actual send: what the server did.
    pub service: Percentiles,
    /// How late the generator sent requests that were not backlogged.
    pub timer_lag: Percentiles,
}

impl OpReport {
    pub fn of(b: &Bucket) -> OpReport {
        OpReport {
            requests: b.requests,
            entries: b.items,
            errors: b.errors,
            error_kinds: b.error_kinds.clone(),
            backlogged: b.backlogged,
            unsent: b.unsent,
            response: Percentiles::of(&b.response),
            service: Percentiles::of(&b.service),
            timer_lag: Percentiles::of(&b.timer_lag),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub name: String,
    pub target_entries_per_s: f64,
    pub duration_s: f64,
    /// Entries acknowledged while the phase ran, per second of it.
    pub achieved_entries_per_s: f64,
    #[serde(flatten)]
    pub writes: OpReport,
}

impl PhaseReport {
    pub fn of(p: &PhaseResult) -> PhaseReport {
        PhaseReport {
            name: p.phase.name.clone(),
            target_entries_per_s: p.phase.entries_per_s,
            duration_s: p.phase.duration.as_secs_f64(),
            achieved_entries_per_s: p.achieved_entries_per_s(),
            writes: OpReport::of(&p.writes),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct WritesReport {
    pub achieved_entries_per_s: f64,
    pub seconds: f64,
    #[serde(flatten)]
    pub all: OpReport,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReadsReport {
    pub requests_per_s: f64,
    pub tail: OpReport,
    pub query: OpReport,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: usize,
    pub figures: StepFigures,
    pub passed: bool,
    /// Why the step failed; empty when it passed.
    pub reason: String,
    pub bench_cpu_cores: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    pub steps: Vec<StepReport>,
    /// The last step that passed; null when the first one failed.
    pub knee: Option<StepFigures>,
    pub stop_reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BurstReport {
    /// Seconds from the end of the burst until a whole second had no
    /// backlog and a response p99 within 2× (or +1 ms of) the baseline's;
    /// null if that never happened before the run ended.
    pub recovery_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    /// The generator's CPU time while load ran (all threads).
    pub cpu_s: f64,
    pub wall_s: f64,
    pub cores: f64,
    pub entries_per_s: f64,
    pub cores_per_100k_entries_per_s: f64,
}

impl CpuReport {
    pub fn new(cpu: Duration, wall: Duration, entries: u64) -> CpuReport {
        let cores = rate_of(cpu.as_secs_f64(), wall);
        let entries_per_s = rate(entries, wall);
        CpuReport {
            cpu_s: cpu.as_secs_f64(),
            wall_s: wall.as_secs_f64(),
            cores,
            entries_per_s,
            cores_per_100k_entries_per_s: if entries_per_s > 0.0 {
                cores / (entries_per_s / 100_000.0)
            } else {
                0.0
            },
        }
    }
}

fn rate_of(x: f64, over: Duration) -> f64 {
    if over.is_zero() {
        0.0
    } else {
        x / over.as_secs_f64()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub format: &'static str,
    pub run_id: String,
    pub started_at_unix_ms: u64,
    pub command: Vec<String>,
    pub scenario: &'static str,
    /// Cut short by Ctrl-C: the last phase ran only in part.
    pub interrupted: bool,
    pub config: Config,
    pub phases: Vec<PhaseReport>,
    pub writes: WritesReport,
    pub reads: Option<ReadsReport>,
    pub sweep: Option<SweepReport>,
    pub burst: Option<BurstReport>,
    pub verification: Option<VerifyReport>,
    pub bench_cpu: CpuReport,
    pub intervals: Vec<IntervalRow>,
}

impl Report {
    /// Everything but the scenario-specific parts, from the runs made.
    pub fn new(
        run_id: String,
        started_at_unix_ms: u64,
        scenario: &'static str,
        config: Config,
        runs: &[RunResult],
    ) -> Report {
        let phases: Vec<PhaseReport> = runs
            .iter()
            .flat_map(|r| r.phases.iter().map(PhaseReport::of))
            .collect();
        let (mut writes, mut tail, mut query) =
            (Bucket::default(), Bucket::default(), Bucket::default());
        let (mut wall, mut cpu) = (Duration::ZERO, Duration::ZERO);
        for run in runs {
            run.phases.iter().for_each(|p| writes.merge(&p.writes));
            tail.merge(&run.tail);
            query.merge(&run.query);
            wall += run.wall;
            cpu += run.cpu;
        }
        let reads = (config.read_rate > 0.0).then(|| ReadsReport {
            requests_per_s: rate(tail.requests + query.requests, wall),
            tail: OpReport::of(&tail),
            query: OpReport::of(&query),
        });
        Report {
            format: "cairn-bench/1",
            run_id,
            started_at_unix_ms,
            command: std::env::args().collect(),
            scenario,
            interrupted: false,
            phases,
            writes: WritesReport {
                achieved_entries_per_s: rate(writes.items, wall),
                seconds: wall.as_secs_f64(),
                all: OpReport::of(&writes),
            },
            reads,
            sweep: None,
            burst: None,
            verification: None,
            bench_cpu: CpuReport::new(cpu, wall, writes.items),
            intervals: runs.iter().flat_map(|r| r.intervals.clone()).collect(),
            config,
        }
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        let c = &self.config;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "cairn bench {}{} (run {}) against {}{}",
            self.scenario,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            },
            self.run_id,
            c.targets.join(", "),
            if c.tcp_targets.is_empty() {
                String::new()
            } else {
                format!(
                    ", appends over the binary protocol at {} ({})",
                    c.tcp_targets.join(", "),
                    if c.leader_routing {
                        format!(
                            "routed to partition leaders, {} in flight per partition",
                            c.partition_in_flight
                        )
                    } else {
                        "whole requests to each connection's node".to_string()
                    }
                )
            }
        );
        let _ = writeln!(
            s,
            "  {} connection(s) x {} in flight, {} arrivals, batches of {} entries of {} B, \
             {} stream(s) x {} partitions, {} sources, durability {}",
            c.connections,
            c.max_in_flight,
            format!("{:?}", c.arrival).to_lowercase(),
            c.batch_size,
            c.entry_size,
            c.streams.len(),
            c.partitions,
            c.sources,
            c.durability,
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<14} {:>10} {:>10} {:>9} {:>7} {:>8} | {:>8} {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8}",
            "phase",
            "target/s",
            "acked/s",
            "requests",
            "errors",
            "backlog",
            "resp p50",
            "p99",
            "p99.9",
            "max",
            "svc p50",
            "p99",
            "p99.9",
        );
        for p in &self.phases {
            let _ = writeln!(s, "{}", phase_line(p));
        }
        let w = &self.writes;
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "writes: {} entries in {:.1} s = {}/s; response p99 {}, service p99 {}; \
             {} errors, {} backlogged, {} unsent; generator timer lag p99 {}",
            count(w.all.entries as f64),
            w.seconds,
            count(w.achieved_entries_per_s),
            ms(w.all.response.p99_ms),
            ms(w.all.service.p99_ms),
            count(w.all.errors as f64),
            count(w.all.backlogged as f64),
            count(w.all.unsent as f64),
            ms(w.all.timer_lag.p99_ms),
        );
        if !w.all.error_kinds.is_empty() {
            let kinds: Vec<String> = w
                .all
                .error_kinds
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let _ = writeln!(s, "errors by kind: {}", kinds.join(", "));
        }
        if let Some(r) = &self.reads {
            for (name, op) in [("tail", &r.tail), ("query", &r.query)] {
                if op.requests + op.errors + op.unsent == 0 {
                    continue;
                }
                let _ = writeln!(
                    s,
                    "reads ({name}): {} requests, {} entries returned; response p50 {} p99 {} \
                     p99.9 {}; service p99 {}; {} errors, {} backlogged",
                    op.requests,
                    count(op.entries as f64),
                    ms(op.response.p50_ms),
                    ms(op.response.p99_ms),
                    ms(op.response.p999_ms),
                    ms(op.service.p99_ms),
                    op.errors,
                    op.backlogged,
                );
            }
        }
        if let Some(b) = &self.burst {
            let _ = match b.recovery_s {
                Some(t) => writeln!(s, "burst: recovered {t:.1} s after the burst ended"),
                None => writeln!(s, "burst: did not recover before the run ended"),
            };
        }
        if let Some(sw) = &self.sweep {
            let _ = match &sw.knee {
                Some(k) => writeln!(
                    s,
                    "sweep: knee at {} entries/s target ({} achieved, response p99 {})",
                    count(k.target_entries_per_s),
                    count(k.achieved_entries_per_s),
                    ms(k.response_p99_ms),
                ),
                None => writeln!(s, "sweep: no step passed"),
            };
            let _ = writeln!(s, "sweep stopped: {}", sw.stop_reason);
        }
        let _ = match &self.verification {
            Some(v) => writeln!(
                s,
                "verification: {} acknowledged entries, {} read back: {} missing, {} duplicated, \
                 {} misplaced, {} unacknowledged but present ({:.1} s) -- {}",
                count(v.acknowledged as f64),
                count(v.read_back as f64),
                v.missing,
                v.duplicated,
                v.misplaced,
                v.unacknowledged_present,
                v.seconds,
                if v.ok { "OK" } else { "FAILED" },
            ),
            None => writeln!(s, "verification: skipped (--no-verify)"),
        };
        if let Some(v) = &self.verification {
            for e in &v.examples {
                let _ = writeln!(s, "  {e}");
            }
        }
        let cpu = &self.bench_cpu;
        let _ = writeln!(
            s,
            "bench CPU: {:.2} cores ({:.3} cores per 100k entries/s)",
            cpu.cores, cpu.cores_per_100k_entries_per_s
        );
        s
    }
}

fn phase_line(p: &PhaseReport) -> String {
    let w = &p.writes;
    format!(
        "{:<14} {:>10} {:>10} {:>9} {:>7} {:>8} | {:>8} {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8}",
        p.name,
        count(p.target_entries_per_s),
        count(p.achieved_entries_per_s),
        count(w.requests as f64),
        count((w.errors + w.unsent) as f64),
        count(w.backlogged as f64),
        ms(w.response.p50_ms),
        ms(w.response.p99_ms),
        ms(w.response.p999_ms),
        ms(w.response.max_ms),
        ms(w.service.p50_ms),
        ms(w.service.p99_ms),
        ms(w.service.p999_ms),
    )
}

/// How long after the burst the run was back to its baseline behaviour.
pub fn burst_recovery(
    intervals: &[IntervalRow],
    burst_end_s: f64,
    baseline_p99_ms: f64,
) -> Option<f64> {
    let bound = (baseline_p99_ms * 2.0).max(baseline_p99_ms + 1.0);
    intervals
        .iter()
        .filter(|r| r.t_s > burst_end_s + 0.999)
        .find(|r| r.backlogged == 0 && r.unsent == 0 && r.response_p99_ms <= bound)
        // The row ends at t_s and covers the second before it.
        .map(|r| (r.t_s - 1.0 - burst_end_s).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(count(0.0), "0");
        assert_eq!(count(999.4), "999");
        assert_eq!(count(1_234_567.8), "1,234,568");
        assert_eq!(count(100_000.0), "100,000");
        assert_eq!(ms(0.1234), "0.12ms");
        assert_eq!(ms(12.34), "12.3ms");
        assert_eq!(ms(1234.6), "1235ms");
    }

    #[test]
    fn cpu_is_per_100k_entries_per_second() {
        let c = CpuReport::new(Duration::from_secs(2), Duration::from_secs(10), 5_000_000);
        assert!((c.cores - 0.2).abs() < 1e-9);
        assert!((c.entries_per_s - 500_000.0).abs() < 1e-6);
        assert!((c.cores_per_100k_entries_per_s - 0.04).abs() < 1e-9);
        let idle = CpuReport::new(Duration::ZERO, Duration::ZERO, 0);
        assert_eq!(idle.cores_per_100k_entries_per_s, 0.0);
    }

    fn row(t_s: f64, backlogged: u64, p99: f64) -> IntervalRow {
        IntervalRow {
            t_s,
            phase: String::new(),
            target_entries_per_s: 0.0,
            entries_per_s: 0.0,
            requests_per_s: 0.0,
            errors: 0,
            backlogged,
            unsent: 0,
            in_flight: 0,
            response_p50_ms: 0.0,
            response_p99_ms: p99,
            response_p999_ms: 0.0,
            service_p50_ms: 0.0,
            service_p99_ms: 0.0,
            service_p999_ms: 0.0,
            reads_per_s: 0.0,
            read_errors: 0,
            read_response_p99_ms: 0.0,
        }
    }

    #[test]
    fn burst_recovery_is_the_first_calm_second_after_the_burst() {
        // Burst ends at 7 s; baseline p99 2 ms, so calm is p99 <= 4 ms.
        let rows = [
            row(7.0, 50, 300.0),
            row(8.0, 10, 200.0),
            row(9.0, 0, 9.0),
            row(10.0, 0, 3.0),
            row(11.0, 0, 2.0),
        ];
        assert_eq!(burst_recovery(&rows, 7.0, 2.0), Some(2.0));
        assert_eq!(burst_recovery(&rows[..3], 7.0, 2.0), None);
    }
}
