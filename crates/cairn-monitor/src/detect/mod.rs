//! The detectors: pure functions of a [`Window`] of 1 s rounds and the
//! [`MonitorConfig`], each returning [`Finding`]s with evidence.
//!
//! Every detector follows the same recipe:
//!
//! 1. At each of the last [`MonitorConfig::eval_samples`] rounds it decides
//!    whether its condition holds for a subject, and how badly (a
//!    [`Severity`]). Conditions compare a node with its **peers** (the
//!    median of the other nodes at that round) and with its **own
//!    baseline** (the median of the `baseline_samples` rounds before the
//!    evaluated ones), and never fire below an **absolute floor**, so
//!    0.3 ms against 0.1 ms is not "3× slower".
//! 2. [`hysteresis`] turns that run of yes/no into a finding: raised when
//!    the condition held in `trigger_samples` of the last `trigger_window`
//!    rounds (default 3 of 4: seen within 4 s, a single odd sample is
//!    ignored), cleared once it has been false `clear_samples` rounds in a
//!    row (default 5).
//!
//! Because the rule is re-run over the window each round, a detector keeps
//! no state; [`crate::Monitor`] only carries a finding's `since` forward
//! once it is older than the window.

mod disk;
mod load;
mod network;
mod node;
mod partitions;
mod resources;
#[cfg(test)]
pub(crate) mod testkit;

pub(crate) use disk::decline_rate;
pub use disk::{disk_full, slow_disk};
pub use load::{latency_slo, overload};
pub use network::slow_link;
pub use node::stalled_node;
pub use partitions::{
    availability, catching_up_by_snapshot, hot_partition, leader_imbalance, replication_lag,
};
pub use resources::{cpu_saturation, memory_pressure};

use crate::config::MonitorConfig;
use crate::finding::{Evidence, Finding, Resource, Severity, Subject, codes};
use crate::history::Window;
use crate::sample::NodeSample;

/// Every detector, in order.
pub fn run_all(w: &Window<'_>, cfg: &MonitorConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    if w.is_empty() {
        return out;
    }
    out.extend(slow_disk(w, cfg));
    out.extend(slow_link(w, cfg));
    out.extend(stalled_node(w, cfg));
    out.extend(cpu_saturation(w, cfg));
    out.extend(memory_pressure(w, cfg));
    out.extend(overload(w, cfg));
    out.extend(replication_lag(w, cfg));
    out.extend(hot_partition(w, cfg));
    out.extend(leader_imbalance(w, cfg));
    out.extend(disk_full(w, cfg));
    out.extend(latency_slo(w, cfg));
    out.extend(availability(w, cfg));
    out.extend(catching_up_by_snapshot(w, cfg));
    explain(&mut out);
    out
}

/// Findings about a node's own load that make its probes look slow.
const BUSY: &[&str] = &[codes::OVERLOAD, codes::CPU_SATURATION, codes::NODE_STALLED];

/// Marks the findings that another one accounts for. Round trips are
/// measured by pinging a peer's process, so a node busy with a flood or
/// starved of CPU answers late and its links look slow from both ends —
/// the same picture as a slow network. Unless a network fault is injected
/// there, such a `slow_network` or `slow_link` is a consequence of the
/// busy node's own finding, and is shown as one rather than sending the
/// operator to look at cables.
fn explain(findings: &mut [Finding]) {
    let busy: Vec<(u64, String)> = findings
        .iter()
        .filter(|f| BUSY.contains(&f.code.as_str()))
        .filter_map(|f| match f.subject {
            Subject::Node { node } => Some((node, format!("{} on node {node}", f.code))),
            _ => None,
        })
        .collect();
    for f in findings.iter_mut() {
        if f.injected.is_some() {
            continue;
        }
        let nodes: Vec<u64> = match (&f.subject, f.code.as_str()) {
            (Subject::Node { node }, codes::SLOW_NETWORK) => vec![*node],
            (Subject::Link { link }, codes::SLOW_LINK) => link.to_vec(),
            _ => continue,
        };
        if let Some((_, cause)) = busy.iter().find(|(n, _)| nodes.contains(n)) {
            f.summary = format!(
                "{} — likely a consequence of {cause}: a busy node answers probes late",
                f.summary
            );
            f.explained_by = Some(cause.clone());
        }
    }
}

/// A condition that is active at the end of the evaluated rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Active {
    /// Index (into the conditions) of the first true round of the run that
    /// raised it.
    pub since: usize,
    /// The worst severity among the last `trigger_window` true rounds (the
    /// last true round's while clearing).
    pub severity: Severity,
    /// The last round the condition held: where evidence is read.
    pub last_true: usize,
}

/// The raise/clear rule over one subject's per-round conditions (`None`:
/// did not hold). Returns the finding's state after the last round.
///
/// Worked example with the defaults (3 of 4 to raise, 5 false to clear),
/// `x` = holds:
///
/// ```text
/// round  0 1 2 3 4 5 6 7 8 9 10 11
/// cond   . x . . x x x . . . .  .
/// state  . . . . . . A A A A A  .     raised at 6 (since = 4), cleared at 11
/// ```
pub fn hysteresis(conds: &[Option<Severity>], cfg: &MonitorConfig) -> Option<Active> {
    let mut since: Option<usize> = None;
    let mut false_run = 0usize;
    for i in 0..conds.len() {
        if conds[i].is_some() {
            false_run = 0;
        } else {
            false_run += 1;
        }
        match since {
            None => {
                let lo = (i + 1).saturating_sub(cfg.trigger_window);
                let hits = conds[lo..=i].iter().filter(|c| c.is_some()).count();
                if hits >= cfg.trigger_samples {
                    since = (lo..=i).find(|j| conds[*j].is_some());
                }
            }
            Some(_) if false_run >= cfg.clear_samples => since = None,
            Some(_) => {}
        }
    }
    let since = since?;
    let last_true = (since..conds.len()).rev().find(|j| conds[*j].is_some())?;
    let lo = conds.len().saturating_sub(cfg.trigger_window);
    let severity = conds[lo..]
        .iter()
        .flatten()
        .max()
        .copied()
        .or(conds[last_true])?;
    // Evidence comes from the latest round at that severity, so a critical
    // finding never quotes a warning-level number beside a critical
    // objective.
    let last_true = (lo..conds.len())
        .rev()
        .find(|j| conds[*j] == Some(severity))
        .unwrap_or(last_true);
    Some(Active {
        since,
        severity,
        last_true,
    })
}

/// The rounds a detector evaluates: the last `eval_samples` of the window.
pub(crate) fn eval_range(w: &Window<'_>, cfg: &MonitorConfig) -> std::ops::Range<usize> {
    w.len().saturating_sub(cfg.eval_samples())..w.len()
}

/// Runs `cond` at every evaluated round and the raise/clear rule over the
/// result; `Some((active, round index of last_true, round index of since))`.
pub(crate) fn track(
    w: &Window<'_>,
    cfg: &MonitorConfig,
    mut cond: impl FnMut(usize) -> Option<Severity>,
) -> Option<Tracked> {
    let range = eval_range(w, cfg);
    let start = range.start;
    let conds: Vec<Option<Severity>> = range.map(&mut cond).collect();
    let a = hysteresis(&conds, cfg)?;
    Some(Tracked {
        severity: a.severity,
        at: start + a.last_true,
        since_ms: w.get(start + a.since).unix_ms,
    })
}

/// An active condition, with window indexes resolved.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tracked {
    pub severity: Severity,
    /// The window round to read evidence from.
    pub at: usize,
    pub since_ms: u64,
}

/// Median of the values (sorts them); `None` when empty.
pub(crate) fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// The median of `f` over the nodes other than `node` at round `i`.
pub(crate) fn peer_median(
    w: &Window<'_>,
    i: usize,
    node: u64,
    f: impl Fn(&NodeSample) -> Option<f64>,
) -> Option<f64> {
    let mut v: Vec<f64> = w
        .get(i)
        .nodes
        .iter()
        .filter(|n| n.node != node && !n.is_missing())
        .filter_map(&f)
        .collect();
    median(&mut v)
}

/// Fewer baseline points than this and there is no baseline.
const MIN_BASELINE: usize = 5;

/// The median of `f` for `node` over the `baseline_samples` rounds before
/// the evaluated ones (so a fault that is just rising is not part of its
/// own baseline). One baseline serves every evaluated round, so it is
/// computed once per node and figure.
pub(crate) fn baseline(
    w: &Window<'_>,
    cfg: &MonitorConfig,
    node: u64,
    f: impl Fn(&NodeSample) -> Option<f64>,
) -> Option<f64> {
    baseline_by(w, cfg, |j| w.present(j, node).and_then(&f))
}

/// [`baseline`] over any per-round figure `f(round)`.
pub(crate) fn baseline_by(
    w: &Window<'_>,
    cfg: &MonitorConfig,
    f: impl Fn(usize) -> Option<f64>,
) -> Option<f64> {
    let end = eval_range(w, cfg).start;
    let start = end.saturating_sub(cfg.baseline_samples);
    let mut v: Vec<f64> = (start..end).filter_map(f).collect();
    if v.len() < MIN_BASELINE {
        return None;
    }
    median(&mut v)
}

/// Whether `value` is out of line: at or above the floor, and at least
/// `ratio` times the peers' median or the baseline.
///
/// With peers to compare to, only the peers count: a figure that is slow
/// on every node alike (nodes sharing a disk, a machine under load) is not
/// one node's problem, and the symptoms (latency objectives) still show.
/// A node with no peer figure is judged against its own past.
pub(crate) fn out_of_line(
    value: f64,
    peers: Option<f64>,
    baseline: Option<f64>,
    ratio: f64,
    floor: f64,
) -> bool {
    value >= floor
        && match peers {
            Some(p) => value >= ratio * p,
            None => baseline.is_some_and(|b| value >= ratio * b),
        }
}

/// The injected fault on `node` (as its latest sample in the window lists
/// them) that could cause a finding about `resource`; for network faults,
/// only one towards `peer` (or towards every peer).
pub(crate) fn injected(
    w: &Window<'_>,
    node: u64,
    resource: Resource,
    peer: Option<u64>,
) -> Option<String> {
    let n = w.iter().rev().find_map(|s| s.present(node))?;
    n.faults
        .iter()
        .find(|f| {
            let kind_matches = match f.kind.as_str() {
                "disk" => matches!(
                    resource,
                    Resource::Disk | Resource::Latency | Resource::Load
                ),
                "network" => matches!(resource, Resource::Network | Resource::Replication),
                "cpu" => matches!(
                    resource,
                    Resource::Cpu | Resource::Load | Resource::Latency | Resource::Process
                ),
                _ => matches!(resource, Resource::Process | Resource::Availability),
            };
            kind_matches && (peer.is_none() || f.peer.is_none() || f.peer == peer)
        })
        .map(|f| f.to_string())
}

/// Builds a finding; names the injected fault in the summary when there is
/// one.
#[allow(clippy::too_many_arguments)]
pub(crate) fn finding(
    code: &str,
    t: Tracked,
    subject: Subject,
    resource: Resource,
    summary: String,
    evidence: Vec<Evidence>,
    injected: Option<String>,
) -> Finding {
    let summary = match &injected {
        Some(f) => format!("{summary} (caused by an injected fault: {f})"),
        None => summary,
    };
    Finding {
        code: code.to_string(),
        severity: t.severity,
        subject,
        resource,
        summary,
        evidence,
        since: t.since_ms,
        injected,
        explained_by: None,
    }
}

/// Formats a number for a summary: few digits, no noise.
pub(crate) fn num(v: f64) -> String {
    let a = v.abs();
    let s = if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_finding(code: &str, node: u64, injected: Option<&str>) -> Finding {
        Finding {
            code: code.into(),
            severity: Severity::Warning,
            subject: Subject::Node { node },
            resource: Resource::Network,
            summary: format!("{code} on {node}"),
            evidence: Vec::new(),
            since: 0,
            injected: injected.map(str::to_owned),
            explained_by: None,
        }
    }

    #[test]
    fn given_an_overloaded_node_when_its_network_looks_slow_should_explain_it_by_the_overload() {
        let mut fs = vec![
            node_finding(codes::SLOW_NETWORK, 1, None),
            node_finding(codes::OVERLOAD, 1, None),
            node_finding(codes::SLOW_NETWORK, 2, None),
            Finding {
                subject: Subject::link(1, 3),
                ..node_finding(codes::SLOW_LINK, 0, None)
            },
        ];
        explain(&mut fs);
        assert_eq!(fs[0].explained_by.as_deref(), Some("overload on node 1"));
        assert!(
            fs[0]
                .summary
                .contains("likely a consequence of overload on node 1")
        );
        assert_eq!(fs[1].explained_by, None, "the cause stays a cause");
        assert_eq!(fs[2].explained_by, None, "node 2 is not busy");
        assert_eq!(fs[3].explained_by.as_deref(), Some("overload on node 1"));
    }

    #[test]
    fn given_an_injected_network_fault_on_a_busy_node_should_not_explain_it_away() {
        let mut fs = vec![
            node_finding(codes::SLOW_NETWORK, 3, Some("network delay_ms=50")),
            node_finding(codes::CPU_SATURATION, 3, None),
        ];
        explain(&mut fs);
        assert_eq!(fs[0].explained_by, None);
    }

    fn conds(s: &str) -> Vec<Option<Severity>> {
        s.chars()
            .map(|c| match c {
                'x' => Some(Severity::Warning),
                'C' => Some(Severity::Critical),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn given_the_worked_example_when_run_should_raise_and_clear_as_documented() {
        let cfg = MonitorConfig::default();
        let all = conds(".x..xxx.....");
        for end in 0..=all.len() {
            let got = hysteresis(&all[..end], &cfg).map(|a| a.since);
            let want = if (7..=11).contains(&end) {
                Some(4)
            } else {
                None
            };
            assert_eq!(got, want, "after {end} rounds");
        }
    }

    #[test]
    fn given_a_single_spike_when_run_should_not_raise() {
        let cfg = MonitorConfig::default();
        assert_eq!(hysteresis(&conds("....C...."), &cfg), None);
        assert_eq!(hysteresis(&conds("..x.x...x.x"), &cfg), None);
    }

    #[test]
    fn given_mixed_severities_when_raised_should_report_the_recent_worst() {
        let cfg = MonitorConfig::default();
        let a = hysteresis(&conds("xxCx"), &cfg).unwrap();
        assert_eq!(a.severity, Severity::Critical);
        assert_eq!(a.last_true, 2, "evidence from the critical round");
        let a = hysteresis(&conds("CCCxxxx"), &cfg).unwrap();
        assert_eq!(a.severity, Severity::Warning);
    }

    #[test]
    fn given_numbers_when_formatted_should_drop_noise() {
        assert_eq!(num(48.0), "48");
        assert_eq!(num(1.25), "1.2");
        assert_eq!(num(0.304), "0.3");
        assert_eq!(num(1234.5), "1234");
    }

    #[test]
    fn given_values_when_taking_the_median_should_handle_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }
}
