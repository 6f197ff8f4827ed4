//! The once-a-second view of a run: one [`IntervalRow`] per second of the
//! writers' and readers' recorders (what the report's timeline and stall
//! detection read; the driver's reporter task drains them), and [`Live`],
//! which prints each row to the terminal and the interval log as the run
//! goes.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use parking_lot::Mutex;
use serde::Serialize;

use super::recorder::{Bucket, Percentiles};
use super::scenario::Phase;

/// `count` per second over `over` (0 over nothing).
pub fn rate(count: u64, over: Duration) -> f64 {
    if over.is_zero() {
        0.0
    } else {
        count as f64 / over.as_secs_f64()
    }
}

/// One second of a run (the last row of a run may be shorter).
#[derive(Debug, Clone, Serialize)]
pub struct IntervalRow {
    /// End of the interval, seconds since the bench started.
    pub t_s: f64,
    pub phase: String,
    pub target_entries_per_s: f64,
    pub entries_per_s: f64,
    pub requests_per_s: f64,
    pub errors: u64,
    pub backlogged: u64,
    pub unsent: u64,
    pub in_flight: u64,
    pub response_p50_ms: f64,
    pub response_p99_ms: f64,
    pub response_p999_ms: f64,
    pub service_p50_ms: f64,
    pub service_p99_ms: f64,
    pub service_p999_ms: f64,
    pub reads_per_s: f64,
    pub read_errors: u64,
    pub read_response_p99_ms: f64,
}

impl IntervalRow {
    const CSV_HEADER: &str = "t_s,phase,target_entries_per_s,entries_per_s,requests_per_s,\
        errors,backlogged,unsent,in_flight,response_p50_ms,response_p99_ms,response_p999_ms,\
        service_p50_ms,service_p99_ms,service_p999_ms,reads_per_s,read_errors,read_response_p99_ms";

    fn csv(&self) -> String {
        format!(
            "{:.3},{},{:.1},{:.1},{:.1},{},{},{},{},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.1},{},{:.3}",
            self.t_s,
            self.phase.replace(',', ";"),
            self.target_entries_per_s,
            self.entries_per_s,
            self.requests_per_s,
            self.errors,
            self.backlogged,
            self.unsent,
            self.in_flight,
            self.response_p50_ms,
            self.response_p99_ms,
            self.response_p999_ms,
            self.service_p50_ms,
            self.service_p99_ms,
            self.service_p999_ms,
            self.reads_per_s,
            self.read_errors,
            self.read_response_p99_ms,
        )
    }
}

/// The row of `[from, to)` of a run that started at `run_start` with
/// `plan`, from the writers' (`w`) and readers' (`r`) buckets.
pub(super) fn interval_row(
    live: &Live,
    run_start: Instant,
    plan: &[Phase],
    in_flight: u64,
    (from, to): (Instant, Instant),
    w: &Bucket,
    r: &Bucket,
) -> IntervalRow {
    // The phase the interval started in; past the plan, the drain.
    let offset = from.saturating_duration_since(run_start);
    let mut end = Duration::ZERO;
    let phase = plan.iter().find(|p| {
        end += p.duration;
        offset < end
    });
    let length = to - from;
    let resp = Percentiles::of(&w.response);
    let svc = Percentiles::of(&w.service);
    IntervalRow {
        t_s: to.saturating_duration_since(live.bench_start).as_secs_f64(),
        phase: phase.map_or_else(|| "drain".to_string(), |p| p.name.clone()),
        target_entries_per_s: phase.map_or(0.0, |p| p.entries_per_s),
        entries_per_s: rate(w.items, length),
        requests_per_s: rate(w.requests, length),
        errors: w.errors,
        backlogged: w.backlogged,
        unsent: w.unsent,
        in_flight,
        response_p50_ms: resp.p50_ms,
        response_p99_ms: resp.p99_ms,
        response_p999_ms: resp.p999_ms,
        service_p50_ms: svc.p50_ms,
        service_p99_ms: svc.p99_ms,
        service_p999_ms: svc.p999_ms,
        reads_per_s: rate(r.requests, length),
        read_errors: r.errors,
        read_response_p99_ms: Percentiles::of(&r.response).p99_ms,
    }
}

/// Where the per-second rows go while the bench runs: the interval log
/// and, on a terminal, a progress line that rewrites itself.
#[derive(Debug)]
pub struct Live {
    bench_start: Instant,
    log: Option<Mutex<BufWriter<File>>>,
    progress: bool,
}

impl Live {
    pub fn new(bench_start: Instant, log: Option<&Path>) -> Result<Live> {
        let log = match log {
            Some(path) => {
                let file = File::create(path)
                    .with_context(|| format!("create the interval log {}", path.display()))?;
                let mut w = BufWriter::new(file);
                writeln!(w, "{}", IntervalRow::CSV_HEADER)?;
                w.flush()?;
                Some(Mutex::new(w))
            }
            None => None,
        };
        Ok(Live {
            bench_start,
            log,
            progress: std::io::stderr().is_terminal(),
        })
    }

    pub(super) fn emit(&self, row: &IntervalRow) {
        if let Some(log) = &self.log {
            let mut log = log.lock();
            // A failing log must not kill the run; the report still has it.
            let _ = writeln!(log, "{}", row.csv()).and_then(|()| log.flush());
        }
        if self.progress {
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                // Kept under 100 columns: a wrapped line cannot be
                // rewritten in place.
                "\r\x1b[2K[{:>5.0}s] {} {}/s: acked {}/s | p99 resp {} svc {} | \
                 in flight {} backlog {} errors {}",
                row.t_s,
                row.phase,
                crate::format::count(row.target_entries_per_s),
                crate::format::count(row.entries_per_s),
                crate::format::ms(row.response_p99_ms),
                crate::format::ms(row.service_p99_ms),
                row.in_flight,
                row.backlogged,
                row.errors + row.unsent,
            );
            let _ = err.flush();
        }
    }

    /// Ends the progress line so the next output starts on a fresh one.
    pub fn finish_line(&self) {
        if self.progress {
            eprintln!();
        }
    }
}
