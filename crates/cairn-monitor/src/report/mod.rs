//! Performance reports: what the cluster did over a window, built from the
//! monitor's own memory, and rendered as JSON, Markdown or HTML.
//!
//! A [`Report`] is built by [`build`] from a [`Monitor`] — its history
//! rings (the 1 s ring when it reaches back to the window's start, else
//! the 10 s ring, so a 24 h report reads 8,640 rounds, not 86,400), its
//! [`EventLog`] (verdict changes, finding episodes, knees) and its
//! alerts — plus what the node knows and the monitor does not: the
//! actions remediation took ([`ReportAction`]). It is plain data, so a
//! saved report renders again offline and serves as a baseline
//! ([`compare`]).
//!
//! What the figures mean:
//!
//! - Latencies are the nodes' per-interval percentiles (the telemetry's
//!   1 s histograms, or the worst second of each 10 s in the long ring).
//!   Percentiles cannot be merged, so a [`Stat`] over a window is the
//!   mean, median and max of those per-interval values: "write p99
//!   median 4 ms, max 30 ms" says a typical second had a p99 of 4 ms and
//!   the worst one 30 ms.
//! - Throughput is entries/s accepted, per node and per stream (summed
//!   over the nodes: each entry is accepted once).
//! - Latency is not measured per stream; a stream's line shows the write
//!   p99 of the nodes that led its partitions (1 s ring only).
//! - Capacity: the headroom to each node's last measured knee (the most
//!   entries/s it completed while overloaded, see [`events::Knee`]) and
//!   the disk's time to full from the free-space decline over the window,
//!   fitted the way the `disk_full_soon` detector fits it.

pub mod compare;
pub mod events;
pub mod render;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Monitor;
use crate::alerts::AlertTransition;
use crate::health::Status;
use crate::history::SHORT_RING;
use crate::sample::ClusterSample;
pub use compare::{Comparison, FigureChange};
pub use events::{EventLog, FindingEpisode, Knee, VerdictChange};

/// The `format` of a report's JSON.
pub const FORMAT: &str = "cairn-report/1";
/// Points per chart series at most: a day at 10 s is averaged (or, for
/// latencies, maxed) down to this.
pub const CHART_POINTS: usize = 120;

/// What the node adds to a report besides the monitor's memory.
#[derive(Debug, Clone, Default)]
pub struct ReportInput {
    pub id: String,
    /// When it was made (the window's end), ms since the Unix epoch.
    pub end_unix_ms: u64,
    pub window_ms: u64,
    /// Remediation's actions (the node's action log), any order.
    pub actions: Vec<ReportAction>,
}

/// One action remediation took, and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportAction {
    pub at_unix_ms: u64,
    pub action: String,
    pub subject: String,
    /// `applied`, `verified`, `not_effective`, `reverted` or `failed`.
    pub outcome: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`FORMAT`].
    pub format: String,
    pub id: String,
    pub generated_at_unix_ms: u64,
    pub window: ReportWindow,
    pub verdict: VerdictSummary,
    pub headline: Headline,
    pub nodes: Vec<NodeReport>,
    pub streams: Vec<StreamReport>,
    /// Finding episodes that overlap the window, oldest first.
    pub findings: Vec<FindingEpisode>,
    /// Alert transitions in the window, oldest first.
    pub alerts: Vec<AlertTransition>,
    pub actions: Vec<ReportAction>,
    pub capacity: Vec<NodeCapacity>,
    /// What the HTML charts draw.
    pub series: Vec<ReportSeries>,
    /// Against a baseline (`cairn report --baseline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparison: Option<Comparison>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReportWindow {
    pub start_unix_ms: u64,
    pub end_unix_ms: u64,
    /// Seconds between rounds read: 1 or 10.
    pub resolution_s: u64,
    /// Rounds the window held.
    pub rounds: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictSummary {
    /// At the window's end.
    pub now: Status,
    /// The worst status held at any time in the window.
    pub worst: Status,
    /// Seconds spent in each status within the window (only the time the
    /// monitor ran is counted).
    pub green_s: f64,
    pub yellow_s: f64,
    pub red_s: f64,
    /// Changes within the window (the first entry may be the one in force
    /// at its start), oldest first.
    pub changes: Vec<VerdictChange>,
}

/// The figures a comparison looks at. Each is the worst node's typical
/// value (a latency: the highest per-node median of the per-interval
/// percentile), the cluster's mean throughput and CPU, the worst lag.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Headline {
    pub entries_per_second: Option<f64>,
    pub write_p50_ms: Option<f64>,
    pub write_p99_ms: Option<f64>,
    pub read_p99_ms: Option<f64>,
    pub replicate_p99_ms: Option<f64>,
    pub replication_lag_seconds: Option<f64>,
    pub cpu_cores: Option<f64>,
}

/// To 3 decimals (and never -0): a report's figures are read, not
/// computed with, and 0.4000000000000015 reads badly.
pub fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0 + 0.0
}

/// Mean, median and max of a figure's per-round values in the window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub mean: f64,
    pub p50: f64,
    pub max: f64,
}

impl Stat {
    /// `None` for no values.
    pub fn of(values: &[f64]) -> Option<Stat> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        Some(Stat {
            mean: round(v.iter().sum::<f64>() / v.len() as f64),
            p50: round(v[v.len() / 2]),
            max: round(v[v.len() - 1]),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    pub node: u64,
    /// Rounds in which the node answered.
    pub rounds: usize,
    pub entries_per_second: Option<Stat>,
    pub write_p50_ms: Option<Stat>,
    pub write_p99_ms: Option<Stat>,
    pub read_p99_ms: Option<Stat>,
    pub replicate_p99_ms: Option<Stat>,
    pub commit_p99_ms: Option<Stat>,
    pub fsync_p99_ms: Option<Stat>,
    pub disk_probe_p99_ms: Option<Stat>,
    pub cpu_cores: Option<Stat>,
    pub host_cpu: Option<Stat>,
    pub rss_bytes: Option<Stat>,
    /// The largest lag of a follower of a partition it leads.
    pub replication_lag_seconds: Option<Stat>,
    pub free_bytes: Option<u64>,
    /// Partitions it led at the end.
    pub leaders: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamReport {
    pub stream: String,
    /// Summed over the nodes per round.
    pub entries_per_second: Option<Stat>,
    /// Nodes that led one of its partitions in the window.
    pub leaders: Vec<u64>,
    /// The highest median write p99 among those nodes.
    pub leaders_write_p99_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeCapacity {
    pub node: u64,
    /// Mean over the window.
    pub entries_per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knee: Option<Knee>,
    /// The knee's rate ÷ the mean rate: 2 means twice today's load fits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headroom: Option<f64>,
    pub free_bytes: Option<u64>,
    /// Free space falling at this rate over the window (negative: growing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_bytes_decline_per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours_to_full: Option<f64>,
}

/// A chart's line: `node` `None` is the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportSeries {
    pub metric: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u64>,
    /// `[unix_ms, value]`.
    pub points: Vec<(u64, f64)>,
}

/// The rounds a window reads: the 1 s ring when it reaches back to the
/// start, else the 10 s ring.
fn rounds(m: &Monitor, start: u64, end: u64) -> (Vec<&ClusterSample>, u64) {
    let short = m.history().window(SHORT_RING);
    let in_window = |s: &&ClusterSample| s.unix_ms >= start && s.unix_ms <= end;
    let short_from = short.iter().next().map_or(u64::MAX, |f| f.unix_ms);
    let long_from = m
        .history()
        .long_ring()
        .next()
        .map_or(u64::MAX, |f| f.unix_ms);
    // The long ring only when it reaches further back than the short one.
    if short_from <= start || long_from >= short_from {
        (short.iter().filter(in_window).collect(), 1)
    } else {
        (m.history().long_ring().filter(in_window).collect(), 10)
    }
}

/// Builds the report for the window ending at `input.end_unix_ms`.
pub fn build(m: &Monitor, input: ReportInput) -> Report {
    let end = input.end_unix_ms;
    let start = end.saturating_sub(input.window_ms);
    let (rounds, resolution_s) = rounds(m, start, end);
    let node_ids: Vec<u64> = {
        let mut ids: Vec<u64> = rounds
            .iter()
            .flat_map(|s| s.nodes.iter().map(|n| n.node))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let nodes: Vec<NodeReport> = node_ids
        .iter()
        .map(|&id| node_report(&rounds, id))
        .collect();
    let streams = stream_reports(&rounds, &nodes);
    let headline = headline(&rounds, &nodes);
    let capacity = node_ids
        .iter()
        .map(|&id| capacity(m, &rounds, &nodes, id))
        .collect();
    let mut actions: Vec<ReportAction> = input
        .actions
        .into_iter()
        .filter(|a| a.at_unix_ms >= start && a.at_unix_ms <= end)
        .collect();
    actions.sort_by_key(|a| a.at_unix_ms);
    Report {
        format: FORMAT.to_string(),
        id: input.id,
        generated_at_unix_ms: end,
        window: ReportWindow {
            start_unix_ms: start,
            end_unix_ms: end,
            resolution_s,
            rounds: rounds.len(),
        },
        verdict: verdict(m, start, end),
        headline,
        nodes,
        streams,
        findings: m.events().episodes(start, end),
        alerts: m
            .alerts()
            .history()
            .iter()
            .filter(|t| t.at >= start && t.at <= end)
            .cloned()
            .collect(),
        actions,
        capacity,
        series: series(&rounds, &node_ids),
        comparison: None,
    }
}

fn verdict(m: &Monitor, start: u64, end: u64) -> VerdictSummary {
    let all: Vec<&VerdictChange> = m.events().verdicts().collect();
    // The change in force at the start, then those within.
    let first = all.iter().rposition(|v| v.at_unix_ms <= start).unwrap_or(0);
    let changes: Vec<VerdictChange> = all[first.min(all.len())..]
        .iter()
        .filter(|v| v.at_unix_ms <= end)
        .map(|v| (*v).clone())
        .collect();
    let mut secs = [0.0f64; 3];
    for (k, c) in changes.iter().enumerate() {
        let from = c.at_unix_ms.max(start);
        let to = changes.get(k + 1).map_or(end, |n| n.at_unix_ms).min(end);
        secs[c.status as usize] += to.saturating_sub(from) as f64 / 1000.0;
    }
    VerdictSummary {
        now: changes.last().map_or(Status::Green, |c| c.status),
        worst: changes
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(Status::Green),
        green_s: secs[Status::Green as usize],
        yellow_s: secs[Status::Yellow as usize],
        red_s: secs[Status::Red as usize],
        changes,
    }
}

fn node_report(rounds: &[&ClusterSample], id: u64) -> NodeReport {
    let present: Vec<&crate::sample::NodeSample> = rounds
        .iter()
        .filter_map(|s| s.present(id))
        .filter(|n| !n.repeated)
        .collect();
    let stat = |f: &dyn Fn(&crate::sample::NodeSample) -> Option<f64>| {
        Stat::of(&present.iter().filter_map(|n| f(n)).collect::<Vec<_>>())
    };
    let last = rounds.iter().rev().find_map(|s| s.present(id));
    NodeReport {
        node: id,
        rounds: present.len(),
        entries_per_second: stat(&|n| Some(n.entries_per_second)),
        write_p50_ms: stat(&|n| n.write.total_p50_ms),
        write_p99_ms: stat(&|n| n.write.total_p99_ms),
        read_p99_ms: stat(&|n| n.read_p99_ms),
        replicate_p99_ms: stat(&|n| n.write.replicate_p99_ms),
        commit_p99_ms: stat(&|n| n.write.commit_p99_ms),
        fsync_p99_ms: stat(&|n| n.write.fsync_p99_ms),
        disk_probe_p99_ms: stat(&|n| n.disk_probe_p99_ms),
        cpu_cores: stat(&|n| Some(n.cpu_cores)),
        host_cpu: stat(&|n| Some(n.host_cpu)),
        rss_bytes: stat(&|n| Some(n.rss_bytes as f64)),
        replication_lag_seconds: stat(&|n| Some(n.max_follower_lag_seconds())),
        free_bytes: last.and_then(|n| (n.total_bytes > 0).then_some(n.free_bytes)),
        leaders: last.map_or(0, |n| n.leaders()),
    }
}

fn stream_reports(rounds: &[&ClusterSample], nodes: &[NodeReport]) -> Vec<StreamReport> {
    let mut rates: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut leaders: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for s in rounds {
        let mut sums: BTreeMap<&str, f64> = BTreeMap::new();
        for n in s.nodes.iter().filter(|n| n.answered()) {
            for (stream, v) in &n.stream_entries_per_second {
                *sums.entry(stream).or_default() += v;
            }
            for r in n.replicas.iter().filter(|r| r.is_leader) {
                leaders.entry(&r.stream).or_default().push(n.node);
            }
        }
        for (stream, v) in sums {
            rates.entry(stream).or_default().push(v);
        }
    }
    let names: std::collections::BTreeSet<&str> =
        rates.keys().chain(leaders.keys()).copied().collect();
    names
        .into_iter()
        .map(|stream| {
            let mut led = leaders.remove(stream).unwrap_or_default();
            led.sort_unstable();
            led.dedup();
            let leaders_write_p99_ms = led
                .iter()
                .filter_map(|id| nodes.iter().find(|n| n.node == *id)?.write_p99_ms)
                .map(|s| s.p50)
                .max_by(f64::total_cmp);
            StreamReport {
                stream: stream.to_string(),
                entries_per_second: rates.get(stream).and_then(|v| Stat::of(v)),
                leaders: led,
                leaders_write_p99_ms,
            }
        })
        .collect()
}

fn headline(rounds: &[&ClusterSample], nodes: &[NodeReport]) -> Headline {
    let cluster_mean = |f: fn(&crate::sample::NodeSample) -> f64| {
        let per_round: Vec<f64> = rounds
            .iter()
            .filter(|s| s.nodes.iter().any(|n| n.answered()))
            .map(|s| s.nodes.iter().filter(|n| !n.is_missing()).map(f).sum())
            .collect();
        Stat::of(&per_round).map(|s| s.mean)
    };
    let worst = |f: fn(&NodeReport) -> Option<Stat>| {
        nodes
            .iter()
            .filter_map(|n| f(n).map(|s| s.p50))
            .max_by(f64::total_cmp)
    };
    Headline {
        entries_per_second: cluster_mean(|n| n.entries_per_second),
        write_p50_ms: worst(|n| n.write_p50_ms),
        write_p99_ms: worst(|n| n.write_p99_ms),
        read_p99_ms: worst(|n| n.read_p99_ms),
        replicate_p99_ms: worst(|n| n.replicate_p99_ms),
        replication_lag_seconds: nodes
            .iter()
            .filter_map(|n| n.replication_lag_seconds.map(|s| s.max))
            .max_by(f64::total_cmp),
        cpu_cores: cluster_mean(|n| n.cpu_cores),
    }
}

fn capacity(m: &Monitor, rounds: &[&ClusterSample], nodes: &[NodeReport], id: u64) -> NodeCapacity {
    let rate = nodes
        .iter()
        .find(|n| n.node == id)
        .and_then(|n| n.entries_per_second)
        .map(|s| s.mean);
    let knee = m.events().knees().get(&id).copied();
    let headroom = match (knee, rate) {
        (Some(k), Some(r)) if r > 0.0 => Some(round(k.entries_per_second / r)),
        _ => None,
    };
    // Seconds from the window's start keep the fit well conditioned.
    let t0 = rounds.first().map_or(0, |s| s.unix_ms);
    let free: Vec<Option<(f64, f64)>> = rounds
        .iter()
        .map(|s| {
            let n = s.present(id)?;
            (n.total_bytes > 0).then_some((
                n.unix_ms.saturating_sub(t0) as f64 / 1000.0,
                n.free_bytes as f64,
            ))
        })
        .collect();
    let last_free = rounds
        .iter()
        .rev()
        .find_map(|s| s.present(id).filter(|n| n.total_bytes > 0))
        .map(|n| n.free_bytes);
    let decline = free
        .len()
        .checked_sub(1)
        .and_then(|i| crate::detect::decline_rate(&free, free.len(), i))
        .map(|(rate, _)| round(rate));
    let hours_to_full = match (decline, last_free) {
        (Some(d), Some(f)) if d > 0.0 => Some(round(f as f64 / d / 3600.0)),
        _ => None,
    };
    NodeCapacity {
        node: id,
        entries_per_second: rate,
        knee,
        headroom,
        free_bytes: last_free,
        free_bytes_decline_per_second: decline,
        hours_to_full,
    }
}

/// Cluster entries/s, and per node write p99 and CPU, averaged (latency:
/// maxed) down to [`CHART_POINTS`].
fn series(rounds: &[&ClusterSample], node_ids: &[u64]) -> Vec<ReportSeries> {
    let per = rounds.len().div_ceil(CHART_POINTS).max(1);
    let line =
        |metric: &str, node: Option<u64>, max: bool, f: &dyn Fn(&ClusterSample) -> Option<f64>| {
            let points = rounds
                .chunks(per)
                .filter_map(|chunk| {
                    let vals: Vec<f64> = chunk.iter().filter_map(|s| f(s)).collect();
                    let stat = Stat::of(&vals)?;
                    Some((chunk[0].unix_ms, if max { stat.max } else { stat.mean }))
                })
                .collect();
            ReportSeries {
                metric: metric.to_string(),
                node,
                points,
            }
        };
    let mut out = vec![line("entries_per_second", None, false, &|s| {
        s.nodes
            .iter()
            .any(|n| n.answered())
            .then(|| s.nodes.iter().map(|n| n.entries_per_second).sum())
    })];
    for &id in node_ids {
        out.push(line("write_p99_ms", Some(id), true, &|s| {
            s.present(id)?.write.total_p99_ms
        }));
    }
    for &id in node_ids {
        out.push(line("cpu_cores", Some(id), false, &|s| {
            Some(s.present(id)?.cpu_cores)
        }));
    }
    out
}

#[cfg(test)]
mod tests;
