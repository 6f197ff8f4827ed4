//! The phi-accrual failure detector (Hayashibara, Défago, Yared, Katayama,
//! 2004), in the form Akka and Cassandra use.
//!
//! # Idea
//!
//! Instead of a yes/no timeout, the detector answers *how suspicious* the
//! current silence is. It keeps the recent inter-arrival times of a peer's
//! heartbeats, models them as a normal distribution with their mean `μ`
//! and standard deviation `σ`, and for a silence of `t` since the last
//! heartbeat returns
//!
//! ```text
//! phi(t) = −log10( P(next heartbeat arrives later than t) ) = −log10(1 − F(t))
//! ```
//!
//! `phi = 1` means a 10% chance that a live peer would be this late, `phi = 8`
//! one in 10⁸. A steady, fast network makes phi climb steeply after a missed
//! beat; a jittery one makes it climb slowly — the threshold adapts to what
//! the network has shown instead of being a guessed timeout.
//!
//! # The normal CDF, without `erf`
//!
//! `std` has no `erf`, so as Akka does we use the logistic approximation of
//! the standard normal CDF (Bowling et al., 2009; absolute error < 1.4·10⁻⁴):
//!
//! ```text
//! Φ(y) ≈ 1 / (1 + e^(−g(y))),   g(y) = 1.5976·y + 0.070566·y³,   y = (t − μ) / σ
//! ```
//!
//! so the tail is `1 − Φ(y) = 1 / (1 + e^(g))` and
//!
//! ```text
//! phi = −log10(1 / (1 + e^g)) = ln(1 + e^g) / ln 10 = softplus(g) / ln 10
//! ```
//!
//! Written as a softplus, phi is finite for any silence (Akka's form,
//! `−log10(e / (1 + e))` with `e = e^(−g)`, underflows to `+∞` once
//! `e^(−g)` does) and needs no branch on the sign of `y`: for large `g`,
//! `softplus(g) = g + ln(1 + e^(−g))`, which is how it is evaluated. `g` is
//! increasing in `y`, so phi grows monotonically with silence. The
//! approximation overstates the far tail a little (phi 8 is reached at
//! y ≈ 5.2 rather than the exact 5.6), which only makes conviction slightly
//! earlier than the nominal 10⁻⁸.
//!
//! # Guards (and the defaults, for a 150 ms heartbeat)
//!
//! - **Minimum σ** ([`PhiConfig::min_std_dev`], default interval / 4 =
//!   37.5 ms): on loopback the measured σ is a few ms, which would convict a
//!   peer over a single hiccup of a few σ. The floor sets the slope of phi.
//! - **Acceptable pause** ([`PhiConfig::acceptable_pause`], default
//!   3 × interval = 450 ms) is added to `μ`: silence that short is never
//!   suspicious (a GC-free process still meets scheduler stalls, a busy
//!   2-core box, a loaded disk blocking a thread).
//!   With both, steady heartbeats reach phi 5 after ~750 ms of silence and
//!   phi 8 after ~800 ms, well inside the 2 s the cluster wants.
//! - **Bounded window** ([`PhiConfig::max_samples`], default 1000, ~2.5 min
//!   at 150 ms): old behaviour ages out.
//! - **First heartbeat**: with no intervals yet, `μ` is
//!   [`PhiConfig::first_heartbeat_estimate`] (default: the interval) and
//!   `σ = μ / 4`, as Akka seeds it. Before any heartbeat, silence counts
//!   from the detector's creation, so a peer that never speaks is still
//!   convicted eventually.
//! - **Outages are not samples**: a heartbeat arriving when phi is already
//!   over the threshold ends an outage; that gap is not added to the
//!   history, which would otherwise inflate `μ` and `σ` and make the next
//!   failure slow to detect.
//!
//! The detector is pure: every method takes the current time, so tests
//! drive it with synthetic `Instant`s.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Settings of a [`PhiAccrualDetector`].
#[derive(Debug, Clone, PartialEq)]
pub struct PhiConfig {
    /// phi at or above which the peer is considered failed. Default 8.
    pub threshold: f64,
    /// Inter-arrival samples kept. Default 1000.
    pub max_samples: usize,
    /// Floor of the standard deviation used. Default interval / 4.
    pub min_std_dev: Duration,
    /// Added to the mean: silence this much longer than usual is normal.
    /// Default 3 × interval.
    pub acceptable_pause: Duration,
    /// Mean assumed before two heartbeats have arrived. Default the interval.
    pub first_heartbeat_estimate: Duration,
}

impl PhiConfig {
    /// The defaults for heartbeats sent every `interval` (see module docs).
    pub fn for_interval(interval: Duration) -> Self {
        Self {
            threshold: 8.0,
            max_samples: 1000,
            min_std_dev: interval / 4,
            acceptable_pause: interval * 3,
            first_heartbeat_estimate: interval,
        }
    }
}

impl Default for PhiConfig {
    /// [`PhiConfig::for_interval`] of 150 ms, the heartbeat default.
    fn default() -> Self {
        Self::for_interval(Duration::from_millis(150))
    }
}

/// One peer's phi-accrual detector. See the module docs.
#[derive(Debug, Clone)]
pub struct PhiAccrualDetector {
    config: PhiConfig,
    /// Inter-arrival times in µs, oldest first.
    intervals: VecDeque<u64>,
    /// Exact running sums over `intervals` (integers, so removing old
    /// samples never accumulates rounding error).
    sum: u128,
    sum_sq: u128,
    last: Option<Instant>,
    /// Creation time: silence is measured from here until a heartbeat.
    created: Instant,
}

impl PhiAccrualDetector {
    pub fn new(config: PhiConfig, now: Instant) -> Self {
        Self {
            config,
            intervals: VecDeque::new(),
            sum: 0,
            sum_sq: 0,
            last: None,
            created: now,
        }
    }

    pub fn config(&self) -> &PhiConfig {
        &self.config
    }

    /// Records a heartbeat that arrived at `now`.
    pub fn heartbeat(&mut self, now: Instant) {
        if let Some(last) = self.last {
            if now < last {
                return; // out-of-order timestamps: keep the later one
            }
            // Evaluated before `last` moves: was the peer already convicted?
            if self.phi(now) < self.config.threshold {
                let micros = u64::try_from((now - last).as_micros()).unwrap_or(u64::MAX);
                self.push(micros);
            }
        }
        self.last = Some(now);
    }

    fn push(&mut self, micros: u64) {
        if self.config.max_samples == 0 {
            return;
        }
        while self.intervals.len() >= self.config.max_samples {
            let old = self.intervals.pop_front().expect("non-empty");
            self.sum -= u128::from(old);
            self.sum_sq -= u128::from(old) * u128::from(old);
        }
        self.intervals.push_back(micros);
        self.sum += u128::from(micros);
        self.sum_sq += u128::from(micros) * u128::from(micros);
    }

    /// When the last heartbeat arrived.
    pub fn last_heartbeat(&self) -> Option<Instant> {
        self.last
    }

    /// Inter-arrival samples held.
    pub fn samples(&self) -> usize {
        self.intervals.len()
    }

    /// Mean and standard deviation of the history, in ms, before the
    /// guards (first-heartbeat estimate if there is no sample yet).
    pub fn stats_ms(&self) -> (f64, f64) {
        let n = self.intervals.len() as u128;
        if n == 0 {
            let mean = self.config.first_heartbeat_estimate.as_secs_f64() * 1e3;
            return (mean, mean / 4.0);
        }
        let mean_us = self.sum as f64 / n as f64;
        // n²·variance = n·Σx² − (Σx)², exact in integers (and never negative).
        let var_n2 = (n * self.sum_sq).saturating_sub(self.sum * self.sum);
        let std_us = (var_n2 as f64).sqrt() / n as f64;
        (mean_us / 1e3, std_us / 1e3)
    }

    /// Suspicion at `now`: 0 and up; see the module docs.
    pub fn phi(&self, now: Instant) -> f64 {
        let since = self.last.unwrap_or(self.created);
        let elapsed_ms = now.saturating_duration_since(since).as_secs_f64() * 1e3;
        let (mean, std) = self.stats_ms();
        let mean = mean + self.config.acceptable_pause.as_secs_f64() * 1e3;
        let std = std.max(self.config.min_std_dev.as_secs_f64() * 1e3);
        phi(elapsed_ms, mean, std)
    }

    /// Whether phi at `now` is below the threshold.
    pub fn is_available(&self, now: Instant) -> bool {
        self.phi(now) < self.config.threshold
    }
}

/// phi of a silence of `elapsed` given the mean and standard deviation of
/// inter-arrival times (all in the same unit; `std_dev` > 0).
pub fn phi(elapsed: f64, mean: f64, std_dev: f64) -> f64 {
    let y = (elapsed - mean) / std_dev;
    let g = y * (1.5976 + 0.070566 * y * y);
    // softplus(g) = ln(1 + e^g), evaluated so that e^x never overflows.
    let softplus = if g > 0.0 {
        g + (-g).exp().ln_1p()
    } else {
        g.exp().ln_1p()
    };
    softplus / std::f64::consts::LN_10
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const INTERVAL: Duration = Duration::from_millis(150);

    /// A detector fed `count` heartbeats at the given gaps (cycled),
    /// returning it and the time of the last heartbeat.
    fn fed(config: PhiConfig, gaps_ms: &[u64], count: usize) -> (PhiAccrualDetector, Instant) {
        let t0 = Instant::now();
        let mut d = PhiAccrualDetector::new(config, t0);
        let mut t = t0;
        d.heartbeat(t);
        for i in 0..count {
            t += MS * gaps_ms[i % gaps_ms.len()] as u32;
            d.heartbeat(t);
        }
        (d, t)
    }

    #[test]
    fn given_the_formula_when_compared_to_the_normal_tail_then_close() {
        // −log10(1 − Φ(y)) for y = 0, 1, 2, 3 (standard normal tables).
        let exact = [
            (0.0, std::f64::consts::LOG10_2),
            (1.0, 0.79955),
            (2.0, 1.64302),
            (3.0, 2.86967),
        ];
        for (y, want) in exact {
            let got = phi(y, 0.0, 1.0);
            let tol = if y < 2.5 { 0.01 } else { 0.05 };
            assert!((got - want).abs() < tol, "y={y}: {got} vs {want}");
        }
        // Far tail and far early: finite, never NaN.
        assert!(phi(1e12, 150.0, 10.0).is_finite());
        assert!(phi(1e12, 150.0, 10.0) > 1e6);
        let early = phi(0.0, 1e9, 1.0);
        assert!(early.is_finite() && (0.0..1e-6).contains(&early), "{early}");
    }

    #[test]
    fn given_steady_heartbeats_when_checking_on_time_then_phi_is_low() {
        let (d, last) = fed(PhiConfig::default(), &[150], 50);
        assert_eq!(d.samples(), 50);
        let (mean, std) = d.stats_ms();
        assert!((mean - 150.0).abs() < 1e-6 && std < 1e-6, "{mean} {std}");
        assert!(d.phi(last) < 0.1);
        assert!(d.phi(last + INTERVAL) < 0.5, "{}", d.phi(last + INTERVAL));
        assert!(d.phi(last + INTERVAL * 2) < 1.0);
        assert!(d.is_available(last + INTERVAL * 3));
    }

    #[test]
    fn given_silence_when_time_passes_then_phi_grows_monotonically_past_threshold() {
        // Default guards: convicted within ~6 intervals, not before 3.
        let (d, last) = fed(PhiConfig::default(), &[150], 50);
        let mut prev = 0.0;
        for ms in (0..3000).step_by(5) {
            let p = d.phi(last + MS * ms);
            assert!(p >= prev, "phi fell at {ms} ms: {p} < {prev}");
            prev = p;
        }
        assert!(d.phi(last + INTERVAL * 3) < 5.0);
        assert!(
            d.phi(last + INTERVAL * 6) >= 8.0,
            "{}",
            d.phi(last + INTERVAL * 6)
        );
        assert!(!d.is_available(last + INTERVAL * 6));

        // Without an acceptable pause: past 8 within 3 intervals.
        let config = PhiConfig {
            acceptable_pause: Duration::ZERO,
            ..PhiConfig::default()
        };
        let (d, last) = fed(config, &[150], 50);
        assert!(d.phi(last + INTERVAL * 3) >= 8.0);
    }

    #[test]
    fn given_jittery_history_when_silent_then_more_silence_tolerated() {
        let (steady, s_last) = fed(PhiConfig::default(), &[150], 100);
        // Same mean, σ = 100 ms.
        let (jittery, j_last) = fed(PhiConfig::default(), &[50, 250], 100);
        let (mean, std) = jittery.stats_ms();
        assert!((mean - 150.0).abs() < 1e-6 && (std - 100.0).abs() < 1e-6);
        let silence = (1..)
            .map(|k| MS * (10 * k))
            .find(|&s| steady.phi(s_last + s) >= 8.0);
        let silence = silence.unwrap();
        let j = jittery.phi(j_last + silence);
        assert!(j < 3.0, "jittery phi {j} after {silence:?}");
        // It still convicts, just later.
        assert!(jittery.phi(j_last + silence * 3) >= 8.0);
    }

    #[test]
    fn given_no_history_when_checking_then_sane_values() {
        let t0 = Instant::now();
        let mut d = PhiAccrualDetector::new(PhiConfig::default(), t0);
        // Never heard: silence counts from creation.
        assert!(d.phi(t0) < 0.1);
        assert!(d.phi(t0 + Duration::from_secs(5)) >= 8.0);
        // One heartbeat, no interval yet: the estimate stands in.
        let t1 = t0 + MS * 50;
        d.heartbeat(t1);
        assert_eq!(d.samples(), 0);
        assert_eq!(d.last_heartbeat(), Some(t1));
        assert!(d.phi(t1 + INTERVAL) < 1.0);
        let late = d.phi(t1 + Duration::from_secs(5));
        assert!(late >= 8.0 && late.is_finite(), "{late}");
        // A second one gives the first sample.
        d.heartbeat(t1 + INTERVAL);
        assert_eq!(d.samples(), 1);
    }

    #[test]
    fn given_many_heartbeats_when_window_full_then_oldest_age_out() {
        let config = PhiConfig {
            max_samples: 100,
            ..PhiConfig::default()
        };
        let (mut d, mut t) = fed(config, &[400], 100);
        assert!((d.stats_ms().0 - 400.0).abs() < 1e-6);
        for _ in 0..100 {
            t += MS * 100;
            d.heartbeat(t);
        }
        assert_eq!(d.samples(), 100);
        let (mean, std) = d.stats_ms();
        assert!((mean - 100.0).abs() < 1e-6 && std < 1e-6, "{mean} {std}");
    }

    #[test]
    fn given_an_outage_when_heartbeats_resume_then_gap_not_sampled() {
        let (mut d, last) = fed(PhiConfig::default(), &[150], 20);
        let before = d.stats_ms();
        let back = last + Duration::from_secs(30);
        d.heartbeat(back);
        assert_eq!(d.samples(), 20);
        assert_eq!(d.stats_ms(), before);
        assert!(d.phi(back + MS * 10) < 0.1);
        // A late but not convicting gap is a real sample.
        d.heartbeat(back + MS * 400);
        assert_eq!(d.samples(), 21);
    }
}
