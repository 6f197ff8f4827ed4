//! Latency bookkeeping: what one worker saw, from three instants per request.
//!
//! Every request has an *intended* send time (from the schedule), the
//! instant it was actually *sent*, and the instant its answer was *done*:
//!
//! - **response time** = done − intended: what a user of the system feels,
//!   including any time the request spent waiting to be sent because the
//!   server was slow to free an in-flight slot. This is the honest figure.
//! - **service time** = done − sent: what the server did with the request
//!   once it had it. A closed-loop client can only measure this one, and a
//!   server stall then hides: only the few requests in flight during the
//!   stall see it, the ones that would have been sent are never sent.
//! - **timer lag** = sent − intended, for requests that were *not*
//!   backlogged: how late the generator itself was (timer granularity,
//!   CPU starvation). If it grows, the generator, not the server, is the
//!   bottleneck and the run should not be trusted.
//!
//! A request that could not be sent on time because the in-flight cap was
//! reached is *backlogged*: it is still sent (late) and still recorded, with
//! its response time from the intended instant. Requests still unsent when
//! the run gives up (a grace period after the plan's end) are counted as
//! *unsent* and their wait so far goes into the response histogram as a
//! lower bound — dropping them would understate exactly the worst cases.
//!
//! Failed requests are counted by kind and kept out of the latency
//! histograms (a fast error is not a fast answer); the report shows the
//! error count next to every percentile.
//!
//! A [`Recorder`] keeps one [`Bucket`] per plan phase (by intended time, so a
//! burst's backlog is charged to the burst) plus one for the current
//! interval (by completion, so the per-second log shows what happened in
//! that second). It has no clock and no I/O: the driver passes instants in,
//! and tests can pass made-up ones. Each worker owns one; they are merged at
//! the end (HDR histograms add exactly).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Histograms hold microseconds from 1 µs to one hour at 3 significant
/// digits; longer values are clamped to the top. Counts are `u32` (no
/// worker records four billion requests in one phase), which halves the
/// ~190 KB a histogram of this range takes with `u64` counts.
const MAX_US: u64 = 3_600_000_000;

fn histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged; `items` entries were written (or read).
    Ok { items: u64 },
    /// Failed; the kind is a short stable label (`timeout`, an API code…).
    Error(String),
}

/// One finished request, as the driver saw it.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The plan phase of the intended send time.
    pub phase: usize,
    pub intended: Instant,
    pub sent: Instant,
    pub done: Instant,
    /// No in-flight slot was free when the request was due.
    pub backlogged: bool,
    pub outcome: Outcome,
}

/// Counts and histograms for a set of requests.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// done − intended, µs, successful requests (and unsent ones, as a
    /// lower bound).
    pub response: Histogram<u32>,
    /// done − sent, µs, successful requests.
    pub service: Histogram<u32>,
    /// sent − intended, µs, requests that were not backlogged.
    pub timer_lag: Histogram<u32>,
    /// Successful requests.
    pub requests: u64,
    /// Entries carried by successful requests.
    pub items: u64,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub backlogged: u64,
    pub unsent: u64,
}

impl Default for Bucket {
    fn default() -> Self {
        Bucket {
            response: histogram(),
            service: histogram(),
            timer_lag: histogram(),
            requests: 0,
            items: 0,
            errors: 0,
            error_kinds: BTreeMap::new(),
            backlogged: 0,
            unsent: 0,
        }
    }
}

impl Bucket {
    fn record(&mut self, c: &Completion) {
        if c.backlogged {
            self.backlogged += 1;
        } else {
            self.timer_lag
                .saturating_record(micros(c.sent.saturating_duration_since(c.intended)));
        }
        match &c.outcome {
            Outcome::Ok { items } => {
                self.requests += 1;
                self.items += items;
                self.response
                    .saturating_record(micros(c.done.saturating_duration_since(c.intended)));
                self.service
                    .saturating_record(micros(c.done.saturating_duration_since(c.sent)));
            }
            Outcome::Error(kind) => {
                self.errors += 1;
                *self.error_kinds.entry(kind.clone()).or_default() += 1;
            }
        }
    }

    fn record_unsent(&mut self, waited: Duration) {
        self.unsent += 1;
        self.backlogged += 1;
        self.response.saturating_record(micros(waited));
    }

    /// Adds another bucket's figures to this one.
    pub fn merge(&mut self, other: &Bucket) {
        // Same bounds on both sides, so adding cannot fail.
        self.response.add(&other.response).expect("same bounds");
        self.service.add(&other.service).expect("same bounds");
        self.timer_lag.add(&other.timer_lag).expect("same bounds");
        self.requests += other.requests;
        self.items += other.items;
        self.errors += other.errors;
        for (k, v) in &other.error_kinds {
            *self.error_kinds.entry(k.clone()).or_default() += v;
        }
        self.backlogged += other.backlogged;
        self.unsent += other.unsent;
    }

    /// Forgets everything, keeping the allocations.
    pub fn reset(&mut self) {
        self.response.reset();
        self.service.reset();
        self.timer_lag.reset();
        self.requests = 0;
        self.items = 0;
        self.errors = 0;
        self.error_kinds.clear();
        self.backlogged = 0;
        self.unsent = 0;
    }

    /// Every request the bucket knows of, whatever its fate.
    pub fn attempts(&self) -> u64 {
        self.requests + self.errors + self.unsent
    }

    /// Share of requests that failed or were never sent.
    pub fn failure_ratio(&self) -> f64 {
        match self.attempts() {
            0 => 0.0,
            n => (self.errors + self.unsent) as f64 / n as f64,
        }
    }
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u32>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// What one worker recorded over a run.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    /// End of each phase, as an offset from `start`.
    phase_ends: Vec<Duration>,
    /// By the phase of the intended send time; allocated on first use, so
    /// a long ramp or an idle reader does not hold empty histograms.
    phases: Vec<Option<Box<Bucket>>>,
    /// Items of successful requests by the phase of their completion, for
    /// throughput: what the server delivered during that phase.
    completed_items: Vec<u64>,
    /// Since the last [`Recorder::drain_interval_into`], by completion.
    interval: Bucket,
    last_done: Option<Instant>,
}

impl Recorder {
    pub fn new(start: Instant, phase_durations: &[Duration]) -> Recorder {
        let mut end = Duration::ZERO;
        let phase_ends = phase_durations
            .iter()
            .map(|d| {
                end += *d;
                end
            })
            .collect();
        Recorder {
            start,
            phase_ends,
            phases: phase_durations.iter().map(|_| None).collect(),
            completed_items: vec![0; phase_durations.len()],
            interval: Bucket::default(),
            last_done: None,
        }
    }

    /// The phase an instant falls in; past the end counts as the last one.
    fn phase_at(&self, t: Instant) -> usize {
        let offset = t.saturating_duration_since(self.start);
        self.phase_ends
            .iter()
            .position(|end| offset < *end)
            .unwrap_or(self.phase_ends.len().saturating_sub(1))
    }

    pub fn record(&mut self, c: &Completion) {
        if let Outcome::Ok { items } = c.outcome {
            let p = self.phase_at(c.done);
            if let Some(n) = self.completed_items.get_mut(p) {
                *n += items;
            }
        }
        if let Some(bucket) = self.phase_mut(c.phase) {
            bucket.record(c);
        }
        self.interval.record(c);
        self.last_done = Some(self.last_done.map_or(c.done, |t| t.max(c.done)));
    }

    /// A request that was due at `intended` but never sent: the run gave up
    /// on it at `abandoned`.
    pub fn record_unsent(&mut self, phase: usize, intended: Instant, abandoned: Instant) {
        let waited = abandoned.saturating_duration_since(intended);
        if let Some(bucket) = self.phase_mut(phase) {
            bucket.record_unsent(waited);
        }
        self.interval.record_unsent(waited);
    }

    /// Adds the current interval's figures to `into` and starts a new
    /// interval.
    pub fn drain_interval_into(&mut self, into: &mut Bucket) {
        into.merge(&self.interval);
        self.interval.reset();
    }

    fn phase_mut(&mut self, i: usize) -> Option<&mut Bucket> {
        self.phases
            .get_mut(i)
            .map(|b| &mut **b.get_or_insert_with(Box::default))
    }

    /// The figures of phase `i`; `None` if nothing was recorded in it.
    pub fn phase(&self, i: usize) -> Option<&Bucket> {
        self.phases.get(i)?.as_deref()
    }

    /// Every phase that recorded something.
    pub fn phases(&self) -> impl Iterator<Item = &Bucket> {
        self.phases.iter().filter_map(|b| b.as_deref())
    }

    pub fn completed_items(&self) -> &[u64] {
        &self.completed_items
    }

    pub fn last_done(&self) -> Option<Instant> {
        self.last_done
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    use super::*;
    use crate::bench::schedule::{PhaseRate, Schedule, Slot};

    const MS: Duration = Duration::from_millis(1);

    fn ok(phase: usize, t0: Instant, intended: u64, sent: u64, done: u64) -> Completion {
        Completion {
            phase,
            intended: t0 + MS * intended as u32,
            sent: t0 + MS * sent as u32,
            done: t0 + MS * done as u32,
            backlogged: sent > intended,
            outcome: Outcome::Ok { items: 10 },
        }
    }

    #[test]
    fn response_is_from_intended_and_service_from_sent() {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0, &[Duration::from_secs(1), Duration::from_secs(1)]);
        // Due at 100 ms, sent at 400 ms (backlogged), done at 450 ms.
        r.record(&ok(0, t0, 100, 400, 450));
        // Due and sent at 900 ms, done at 1,200 ms: phase 0 by intent, its
        // entries count for phase 1's throughput.
        r.record(&ok(0, t0, 900, 900, 1200));
        r.record(&Completion {
            outcome: Outcome::Error("timeout".into()),
            ..ok(1, t0, 1100, 1100, 1300)
        });
        let p0 = r.phase(0).unwrap();
        assert_eq!((p0.requests, p0.items, p0.backlogged), (2, 20, 1));
        let resp = Percentiles::of(&p0.response);
        let svc = Percentiles::of(&p0.service);
        assert!((resp.max_ms - 350.0).abs() < 1.0, "{resp:?}");
        assert!((svc.p50_ms - 50.0).abs() < 0.1, "{svc:?}");
        assert!((svc.max_ms - 300.0).abs() < 1.0, "{svc:?}");
        // Only the request that was on time says anything about the timer.
        assert_eq!(p0.timer_lag.len(), 1);
        let p1 = r.phase(1).unwrap();
        assert_eq!((p1.requests, p1.errors), (0, 1));
        assert_eq!(p1.error_kinds.get("timeout"), Some(&1));
        assert!(p1.response.is_empty(), "errors stay out of the latencies");
        assert_eq!(r.completed_items(), &[10, 10]);
        assert_eq!(r.last_done(), Some(t0 + MS * 1300));

        let mut interval = Bucket::default();
        r.drain_interval_into(&mut interval);
        assert_eq!((interval.requests, interval.errors), (2, 1));
        let mut again = Bucket::default();
        r.drain_interval_into(&mut again);
        assert_eq!(again.attempts(), 0, "draining starts a new interval");
    }

    #[test]
    fn unsent_requests_count_with_their_wait_as_a_lower_bound() {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0, &[Duration::from_secs(1)]);
        r.record_unsent(0, t0, t0 + Duration::from_secs(5));
        let b = r.phase(0).unwrap();
        assert_eq!((b.unsent, b.backlogged, b.attempts()), (1, 1, 1));
        assert!((b.failure_ratio() - 1.0).abs() < 1e-9);
        assert!(Percentiles::of(&b.response).max_ms >= 4999.0);
    }

    #[test]
    fn merged_buckets_add_up() {
        let t0 = Instant::now();
        let mut a = Recorder::new(t0, &[Duration::from_secs(1)]);
        let mut b = Recorder::new(t0, &[Duration::from_secs(1)]);
        for i in 0..100 {
            a.record(&ok(0, t0, i, i, i + 1));
            b.record(&ok(0, t0, i, i, i + 100));
        }
        let mut all = Bucket::default();
        all.merge(a.phase(0).unwrap());
        all.merge(b.phase(0).unwrap());
        assert_eq!((all.requests, all.items), (200, 2000));
        let p = Percentiles::of(&all.service);
        assert!((p.p50_ms - 1.0).abs() < 0.01 && (p.max_ms - 100.0).abs() < 0.1);
    }

    /// A server that answers in 200 µs but stalls from 1 s to 2 s: anything
    /// it holds during the stall is answered at 2 s + 200 µs.
    fn stalled_server(sent: Duration) -> Duration {
        let service = Duration::from_micros(200);
        let (stall, resume) = (Duration::from_secs(1), Duration::from_secs(2));
        if sent >= stall && sent < resume {
            resume + service
        } else {
            sent + service
        }
    }

    /// Drives the schedule against a simulated server exactly as the driver
    /// does: a slot is sent when due if fewer than `cap` requests are
    /// outstanding; otherwise it is backlogged and sent when one completes.
    /// Sends are sequential, so a slot due while the worker still waits for
    /// an earlier one's free slot is backlogged too.
    fn open_loop(slots: impl Iterator<Item = Slot>, cap: usize, t0: Instant) -> Recorder {
        let phases = [Duration::from_secs(1); 3];
        let mut r = Recorder::new(t0, &phases);
        let mut in_flight: BinaryHeap<Reverse<Duration>> = BinaryHeap::new();
        let mut waited_until = Duration::ZERO;
        for slot in slots {
            let now = slot.at.max(waited_until);
            while in_flight.peek().is_some_and(|Reverse(done)| *done <= now) {
                in_flight.pop();
            }
            let mut backlogged = waited_until > slot.at;
            let sent = if in_flight.len() < cap {
                now
            } else {
                backlogged = true;
                let Reverse(free) = in_flight.pop().expect("cap > 0");
                waited_until = free;
                free
            };
            let done = stalled_server(sent);
            in_flight.push(Reverse(done));
            r.record(&Completion {
                phase: slot.phase,
                intended: t0 + slot.at,
                sent: t0 + sent,
                done: t0 + done,
                backlogged,
                outcome: Outcome::Ok { items: 1 },
            });
        }
        r
    }

    #[test]
    fn a_one_second_stall_shows_as_response_time_which_closed_loop_hides() {
        let t0 = Instant::now();
        // 1,000 requests per second for 3 s; phase 1 is the stall second.
        let plan = [PhaseRate {
            rate: 1000.0,
            duration: Duration::from_secs(1),
        }; 3];
        let r = open_loop(Schedule::constant(&plan, 0.0), 8, t0);
        let stall = r.phase(1).unwrap();
        let resp = Percentiles::of(&stall.response);
        let svc = Percentiles::of(&stall.service);
        // Requests scheduled during the stall waited for its end: evenly
        // spread from ~1 s (due at its start) to ~0 (due at its end).
        assert_eq!(stall.requests, 1000);
        assert!(resp.max_ms > 990.0 && resp.max_ms < 1100.0, "{resp:?}");
        assert!((resp.p50_ms - 500.0).abs() < 30.0, "{resp:?}");
        assert!((resp.mean_ms - 500.0).abs() < 30.0, "{resp:?}");
        assert!(stall.backlogged >= 990, "{}", stall.backlogged);
        // The server itself only held the 8 in-flight requests through the
        // stall: the service time hides the rest.
        assert!(svc.p50_ms < 1.0, "{svc:?}");
        let mut all = Bucket::default();
        for b in r.phases() {
            all.merge(b);
        }
        assert!(Percentiles::of(&all.response).p99_ms > 950.0);
        assert!(Percentiles::of(&all.service).p99_ms < 1.0);

        // A closed-loop client (next request when the previous answer is
        // in, latency from the actual send) over the same 3 s sees a single
        // slow request: p99 stays at the 200 µs service time.
        let mut closed = Recorder::new(t0, &[Duration::from_secs(3)]);
        let mut now = Duration::ZERO;
        while now < Duration::from_secs(3) {
            let done = stalled_server(now);
            closed.record(&Completion {
                phase: 0,
                intended: t0 + now,
                sent: t0 + now,
                done: t0 + done,
                backlogged: false,
                outcome: Outcome::Ok { items: 1 },
            });
            now = done;
        }
        let closed = Percentiles::of(&closed.phase(0).unwrap().response);
        assert!(
            closed.p99_ms < 1.0,
            "closed loop hides the stall: {closed:?}"
        );
        assert!(
            closed.max_ms > 990.0,
            "but saw one slow request: {closed:?}"
        );
    }
}
