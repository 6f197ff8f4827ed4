//! A report against a baseline: every headline figure's change, and the
//! changes for the worse beyond noise called out as regressions.
//!
//! The baseline is a [`Headline`] — from a saved report, or from a `cairn
//! bench` run (the CLI reads its JSON and fills what a bench measures:
//! throughput and write latency). Figures missing on either side are
//! listed without a change.
//!
//! A change is a regression when it is for the worse by more than the
//! figure's tolerance, relative *and* absolute, so 0.2 ms → 0.3 ms is not
//! "50 % slower": throughput −10 %; latencies +25 % and +1 ms; CPU +25 %
//! and +0.1 core; replication lag +1 s.

use serde::{Deserialize, Serialize};

use super::Headline;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// What the baseline was (a file name, a report id).
    pub baseline: String,
    pub figures: Vec<FigureChange>,
    pub regressions: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FigureChange {
    pub name: String,
    pub unit: String,
    pub baseline: Option<f64>,
    pub current: Option<f64>,
    /// current ÷ baseline − 1; `None` when either is missing or the
    /// baseline is 0.
    pub change: Option<f64>,
    pub regression: bool,
}

/// Which way is worse, and how far counts.
struct Rule {
    name: &'static str,
    unit: &'static str,
    get: fn(&Headline) -> Option<f64>,
    /// True when a higher value is better (throughput).
    higher_is_better: bool,
    relative: f64,
    absolute: f64,
}

const RULES: &[Rule] = &[
    Rule {
        name: "entries_per_second",
        unit: "per_second",
        get: |h| h.entries_per_second,
        higher_is_better: true,
        relative: 0.10,
        absolute: 0.0,
    },
    Rule {
        name: "write_p50_ms",
        unit: "ms",
        get: |h| h.write_p50_ms,
        higher_is_better: false,
        relative: 0.25,
        absolute: 1.0,
    },
    Rule {
        name: "write_p99_ms",
        unit: "ms",
        get: |h| h.write_p99_ms,
        higher_is_better: false,
        relative: 0.25,
        absolute: 1.0,
    },
    Rule {
        name: "read_p99_ms",
        unit: "ms",
        get: |h| h.read_p99_ms,
        higher_is_better: false,
        relative: 0.25,
        absolute: 1.0,
    },
    Rule {
        name: "replicate_p99_ms",
        unit: "ms",
        get: |h| h.replicate_p99_ms,
        higher_is_better: false,
        relative: 0.25,
        absolute: 1.0,
    },
    Rule {
        name: "replication_lag_seconds",
        unit: "seconds",
        get: |h| h.replication_lag_seconds,
        higher_is_better: false,
        relative: 0.0,
        absolute: 1.0,
    },
    Rule {
        name: "cpu_cores",
        unit: "cores",
        get: |h| h.cpu_cores,
        higher_is_better: false,
        relative: 0.25,
        absolute: 0.1,
    },
];

/// Every headline figure of `current` against `baseline`.
pub fn compare(current: &Headline, baseline: &Headline, label: &str) -> Comparison {
    let figures: Vec<FigureChange> = RULES
        .iter()
        .map(|r| {
            let (b, c) = ((r.get)(baseline), (r.get)(current));
            let change = match (b, c) {
                (Some(b), Some(c)) if b != 0.0 => Some(c / b - 1.0),
                _ => None,
            };
            let regression = match (b, c) {
                (Some(b), Some(c)) => {
                    let worse = if r.higher_is_better { b - c } else { c - b };
                    worse > r.absolute && worse > r.relative * b.abs()
                }
                _ => false,
            };
            FigureChange {
                name: r.name.to_string(),
                unit: r.unit.to_string(),
                baseline: b,
                current: c,
                change,
                regression,
            }
        })
        .collect();
    Comparison {
        baseline: label.to_string(),
        regressions: figures.iter().filter(|f| f.regression).count(),
        figures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_slower_writes_and_less_throughput_when_compared_should_call_out_both() {
        let base = Headline {
            entries_per_second: Some(10_000.0),
            write_p99_ms: Some(8.0),
            write_p50_ms: Some(0.2),
            cpu_cores: Some(1.0),
            ..Headline::default()
        };
        let now = Headline {
            entries_per_second: Some(8_000.0),
            write_p99_ms: Some(12.0),
            write_p50_ms: Some(0.3),
            cpu_cores: Some(1.05),
            read_p99_ms: Some(3.0),
            ..Headline::default()
        };
        let c = compare(&now, &base, "before.json");
        let get = |n: &str| c.figures.iter().find(|f| f.name == n).unwrap();
        assert!(get("entries_per_second").regression);
        assert!(get("write_p99_ms").regression);
        assert!(!get("write_p50_ms").regression, "+0.1 ms is noise");
        assert!(!get("cpu_cores").regression);
        assert!(!get("read_p99_ms").regression, "no baseline to compare");
        assert_eq!(get("read_p99_ms").change, None);
        assert_eq!(c.regressions, 2);
        assert!((get("write_p99_ms").change.unwrap() - 0.5).abs() < 1e-9);
    }
}
