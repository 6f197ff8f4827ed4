//! Scenarios: the rate plans of `steady`, `burst` and `ramp`, and the
//! stopping rule of `sweep`.
//!
//! A plan is a list of [`Phase`]s run back to back by one driver run, so a
//! burst's backlog carries over into the recovery phase exactly as it would
//! for real clients. A sweep instead runs one single-phase plan per step and
//! decides after each whether to go on ([`judge_step`]): steps are judged on
//! their own, so one step's backlog must not leak into the next one's
//! figures. All of this is pure and unit-tested; the driver does the I/O.

use std::time::Duration;

use serde::Serialize;

/// One phase: a target rate in entries per second, held for `duration`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase {
    pub name: String,
    pub entries_per_s: f64,
    #[serde(serialize_with = "as_secs")]
    pub duration: Duration,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn phase(name: impl Into<String>, entries_per_s: f64, duration: Duration) -> Phase {
    Phase {
        name: name.into(),
        entries_per_s,
        duration,
    }
}

pub fn steady(rate: f64, duration: Duration) -> Vec<Phase> {
    vec![phase("steady", rate, duration)]
}

/// Baseline, `factor` × the baseline for `burst`, baseline again.
pub fn burst(rate: f64, factor: f64, baseline: Duration, burst: Duration) -> Vec<Phase> {
    vec![
        phase("baseline", rate, baseline),
        phase("burst", rate * factor, burst),
        phase("recovery", rate, baseline),
    ]
}

/// `steps` equal steps from `from` to `to`, both included; without `from`
/// the steps are `to/steps, 2·to/steps, …, to`.
pub fn ramp(from: Option<f64>, to: f64, steps: u32, step: Duration) -> Vec<Phase> {
    let steps = steps.max(1);
    let from = from.unwrap_or(to / f64::from(steps));
    (0..steps)
        .map(|i| {
            let rate = if steps == 1 {
                to
            } else {
                from + (to - from) * f64::from(i) / f64::from(steps - 1)
            };
            phase(format!("ramp {}", i + 1), rate, step)
        })
        .collect()
}

/// What a sweep looks at after each step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepFigures {
    pub target_entries_per_s: f64,
    pub achieved_entries_per_s: f64,
    pub response_p99_ms: f64,
    /// Failed or unsent requests over all requests.
    pub failure_ratio: f64,
}

/// When a sweep stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SweepLimits {
    /// The response-time p99 bound.
    pub max_p99: Duration,
    /// A step must deliver at least this share of its target rate.
    pub min_achieved: f64,
    /// Throughput must gain at least this share of the target's growth
    /// over the last step that passed (0.5: a target 50 % higher must give
    /// at least 25 % more throughput).
    pub min_growth: f64,
    /// At most this share of requests may fail.
    pub max_failure_ratio: f64,
}

/// Decides whether a step passes; `Err` says why it does not. A step that
/// fails ends the sweep, and the knee is the last step that passed.
pub fn judge_step(
    last_passed: Option<&StepFigures>,
    step: &StepFigures,
    limits: &SweepLimits,
) -> Result<(), String> {
    if step.failure_ratio > limits.max_failure_ratio {
        return Err(format!(
            "{:.2}% of requests failed (bound {:.2}%)",
            step.failure_ratio * 100.0,
            limits.max_failure_ratio * 100.0
        ));
    }
    let bound_ms = limits.max_p99.as_secs_f64() * 1000.0;
    if step.response_p99_ms > bound_ms {
        return Err(format!(
            "response p99 {:.1} ms exceeds {bound_ms:.1} ms",
            step.response_p99_ms
        ));
    }
    if step.achieved_entries_per_s < step.target_entries_per_s * limits.min_achieved {
        return Err(format!(
            "throughput {:.0} entries/s fell behind the target {:.0}",
            step.achieved_entries_per_s, step.target_entries_per_s
        ));
    }
    if let Some(last) = last_passed
        && last.target_entries_per_s > 0.0
        && step.achieved_entries_per_s
            < last.achieved_entries_per_s
                * (1.0
                    + limits.min_growth
                        * (step.target_entries_per_s / last.target_entries_per_s - 1.0))
    {
        return Err(format!(
            "throughput stopped growing: {:.0} entries/s after {:.0}",
            step.achieved_entries_per_s, last.achieved_entries_per_s
        ));
    }
    Ok(())
}

/// The next sweep rate after `rate`, or `None` once `max` has been run.
pub fn next_sweep_rate(rate: f64, factor: f64, max: f64) -> Option<f64> {
    if rate >= max {
        None
    } else {
        Some((rate * factor).min(max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn plans_have_the_promised_shapes() {
        assert_eq!(steady(5.0, S), vec![phase("steady", 5.0, S)]);
        let b = burst(100.0, 4.0, S * 3, S);
        let rates: Vec<f64> = b.iter().map(|p| p.entries_per_s).collect();
        assert_eq!(rates, [100.0, 400.0, 100.0]);
        assert_eq!(b[1].duration, S);
        let r: Vec<f64> = ramp(None, 1000.0, 4, S)
            .iter()
            .map(|p| p.entries_per_s)
            .collect();
        assert_eq!(r, [250.0, 500.0, 750.0, 1000.0]);
        let r: Vec<f64> = ramp(Some(100.0), 300.0, 3, S)
            .iter()
            .map(|p| p.entries_per_s)
            .collect();
        assert_eq!(r, [100.0, 200.0, 300.0]);
        assert_eq!(ramp(Some(1.0), 9.0, 1, S)[0].entries_per_s, 9.0);
    }

    #[test]
    fn sweep_rates_grow_geometrically_up_to_the_cap() {
        let mut rates = vec![1000.0];
        while let Some(r) = next_sweep_rate(*rates.last().unwrap(), 2.0, 5000.0) {
            rates.push(r);
        }
        assert_eq!(rates, [1000.0, 2000.0, 4000.0, 5000.0]);
    }

    #[test]
    fn a_step_fails_on_errors_latency_lag_or_flat_throughput() {
        let limits = SweepLimits {
            max_p99: Duration::from_millis(50),
            min_achieved: 0.9,
            min_growth: 0.5,
            max_failure_ratio: 0.01,
        };
        let fig = |target: f64, achieved: f64, p99: f64, failures: f64| StepFigures {
            target_entries_per_s: target,
            achieved_entries_per_s: achieved,
            response_p99_ms: p99,
            failure_ratio: failures,
        };
        let first = fig(1000.0, 1000.0, 10.0, 0.0);
        assert_eq!(judge_step(None, &first, &limits), Ok(()));
        let good = fig(2000.0, 1990.0, 20.0, 0.001);
        assert_eq!(judge_step(Some(&first), &good, &limits), Ok(()));
        let slow = fig(2000.0, 2000.0, 51.0, 0.0);
        assert!(
            judge_step(Some(&first), &slow, &limits)
                .unwrap_err()
                .contains("p99")
        );
        let errors = fig(2000.0, 2000.0, 5.0, 0.02);
        assert!(
            judge_step(Some(&first), &errors, &limits)
                .unwrap_err()
                .contains("failed")
        );
        let behind = fig(2000.0, 1500.0, 5.0, 0.0);
        assert!(
            judge_step(Some(&first), &behind, &limits)
                .unwrap_err()
                .contains("behind")
        );
        // Twice the target, only 10 % more throughput: not behind by a
        // lenient bound, but the growth has stopped.
        let lenient = SweepLimits {
            min_achieved: 0.5,
            ..limits
        };
        let flat = fig(2000.0, 1100.0, 5.0, 0.0);
        let why = judge_step(Some(&first), &flat, &lenient).unwrap_err();
        assert!(why.contains("stopped growing"), "{why}");
        // A small last step (at the rate cap) needs only a small gain.
        let capped = fig(1050.0, 1030.0, 5.0, 0.0);
        assert_eq!(judge_step(Some(&first), &capped, &lenient), Ok(()));
    }
}
