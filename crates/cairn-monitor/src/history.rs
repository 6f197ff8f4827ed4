//! The cluster's recent past: a 15-minute ring of 1 s rounds and a
//! 24-hour ring of 10 s rounds, and time series read from them.
//!
//! Every 10 s bucket (by `unix_ms / 10_000`) becomes one point of the long
//! ring when the next bucket starts: each node's **latest** sample of the
//! bucket, except that its latency percentiles (write stages, read p99,
//! disk probe, peer RTT and RPC) are the **max** over the bucket, so a slow
//! second is never averaged or sampled away. Rates and gauges are the
//! latest values. Long-ring points drop their per-replica detail (see
//! [`NodeSample::compact`]): they keep what the charts need.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::MonitorError;
use crate::sample::{ClusterSample, NodeSample};

/// Rounds kept at 1 s: 15 minutes.
pub const SHORT_RING: usize = 900;
/// Rounds kept at 10 s: 24 hours.
pub const LONG_RING: usize = 8_640;
const LONG_STEP_MS: u64 = 10_000;

/// A metric the history can chart (see [`Metric::ALL`] for the names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// CPU cores the node's process used.
    CpuCores,
    /// Host CPU utilisation, 0..=1.
    HostCpu,
    RssBytes,
    EntriesPerSecond,
    WriteP50Ms,
    WriteP99Ms,
    ReadP99Ms,
    FsyncP99Ms,
    QueueP99Ms,
    /// Leader to followers and back, and the wait for the quorum: the
    /// write stages the dashboard's node view shows beside queue and fsync.
    ReplicateP99Ms,
    CommitP99Ms,
    DiskProbeP99Ms,
    FreeBytes,
    /// One point per (measuring node, peer): `node` measured, `peer` the
    /// far end.
    PeerRttP99Ms,
    /// The largest lag of any follower of a partition the node leads.
    ReplicationLagSeconds,
    /// Partitions the node leads.
    Leaders,
}

impl Metric {
    pub const ALL: &'static [Metric] = &[
        Metric::CpuCores,
        Metric::HostCpu,
        Metric::RssBytes,
        Metric::EntriesPerSecond,
        Metric::WriteP50Ms,
        Metric::WriteP99Ms,
        Metric::ReadP99Ms,
        Metric::FsyncP99Ms,
        Metric::QueueP99Ms,
        Metric::ReplicateP99Ms,
        Metric::CommitP99Ms,
        Metric::DiskProbeP99Ms,
        Metric::FreeBytes,
        Metric::PeerRttP99Ms,
        Metric::ReplicationLagSeconds,
        Metric::Leaders,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::CpuCores => "cpu_cores",
            Metric::HostCpu => "host_cpu",
            Metric::RssBytes => "rss_bytes",
            Metric::EntriesPerSecond => "entries_per_second",
            Metric::WriteP50Ms => "write_p50_ms",
            Metric::WriteP99Ms => "write_p99_ms",
            Metric::ReadP99Ms => "read_p99_ms",
            Metric::FsyncP99Ms => "fsync_p99_ms",
            Metric::QueueP99Ms => "queue_p99_ms",
            Metric::ReplicateP99Ms => "replicate_p99_ms",
            Metric::CommitP99Ms => "commit_p99_ms",
            Metric::DiskProbeP99Ms => "disk_probe_p99_ms",
            Metric::FreeBytes => "free_bytes",
            Metric::PeerRttP99Ms => "peer_rtt_p99_ms",
            Metric::ReplicationLagSeconds => "replication_lag_seconds",
            Metric::Leaders => "leaders",
        }
    }

    /// The metric of that name; an unknown name is an error listing the
    /// valid ones.
    pub fn parse(name: &str) -> Result<Metric, MonitorError> {
        Metric::ALL
            .iter()
            .copied()
            .find(|m| m.as_str() == name)
            .ok_or_else(|| MonitorError::UnknownMetric {
                name: name.to_string(),
                valid: Metric::ALL
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The node's value, for per-node metrics (`None` for
    /// [`Metric::PeerRttP99Ms`] and for figures the sample lacks).
    pub fn value(self, n: &NodeSample) -> Option<f64> {
        if n.is_missing() {
            return None;
        }
        match self {
            Metric::CpuCores => Some(n.cpu_cores),
            Metric::HostCpu => Some(n.host_cpu),
            Metric::RssBytes => Some(n.rss_bytes as f64),
            Metric::EntriesPerSecond => Some(n.entries_per_second),
            Metric::WriteP50Ms => n.write.total_p50_ms,
            Metric::WriteP99Ms => n.write.total_p99_ms,
            Metric::ReadP99Ms => n.read_p99_ms,
            Metric::FsyncP99Ms => n.write.fsync_p99_ms,
            Metric::QueueP99Ms => n.write.queue_p99_ms,
            Metric::ReplicateP99Ms => n.write.replicate_p99_ms,
            Metric::CommitP99Ms => n.write.commit_p99_ms,
            Metric::DiskProbeP99Ms => n.disk_probe_p99_ms,
            Metric::FreeBytes => (n.total_bytes > 0).then_some(n.free_bytes as f64),
            Metric::PeerRttP99Ms => None,
            Metric::ReplicationLagSeconds => Some(n.max_follower_lag_seconds()),
            Metric::Leaders => Some(n.leaders() as f64),
        }
    }

    /// Every point of this metric in one round, for `node` or all nodes.
    pub fn points(self, sample: &ClusterSample, node: Option<u64>, out: &mut Vec<SeriesPoint>) {
        for n in &sample.nodes {
            if node.is_some_and(|id| id != n.node) {
                continue;
            }
            if self == Metric::PeerRttP99Ms {
                for p in &n.peers {
                    if let Some(v) = p.rtt_p99_ms {
                        out.push(SeriesPoint {
                            unix_ms: sample.unix_ms,
                            node: n.node,
                            peer: Some(p.node),
                            value: v,
                        });
                    }
                }
            } else if let Some(v) = self.value(n) {
                out.push(SeriesPoint {
                    unix_ms: sample.unix_ms,
                    node: n.node,
                    peer: None,
                    value: v,
                });
            }
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One point of a time series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    pub unix_ms: u64,
    pub node: u64,
    /// The far end, for per-link metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<u64>,
    pub value: f64,
}

/// The two rings. Pushing is O(nodes); nothing is cloned except the one
/// pending 10 s point.
#[derive(Debug, Default)]
pub struct History {
    short: VecDeque<ClusterSample>,
    long: VecDeque<ClusterSample>,
    /// The 10 s bucket being built.
    pending: Option<ClusterSample>,
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    /// Adds one round. Rounds should come in time order; one older than
    /// the latest is dropped.
    pub fn push(&mut self, sample: ClusterSample) {
        if self
            .short
            .back()
            .is_some_and(|last| sample.unix_ms < last.unix_ms)
        {
            return;
        }
        self.fold_into_long(&sample);
        if self.short.len() == SHORT_RING {
            self.short.pop_front();
        }
        self.short.push_back(sample);
    }

    fn fold_into_long(&mut self, sample: &ClusterSample) {
        let bucket = sample.unix_ms / LONG_STEP_MS;
        match &mut self.pending {
            Some(p) if p.unix_ms / LONG_STEP_MS == bucket => {
                let mut next = sample.clone();
                for n in &mut next.nodes {
                    if let Some(old) = p.node(n.node) {
                        n.fold_max_latency(old);
                    }
                }
                *p = next;
            }
            _ => {
                if let Some(mut done) = self.pending.replace(sample.clone()) {
                    done.nodes.iter_mut().for_each(NodeSample::compact);
                    if self.long.len() == LONG_RING {
                        self.long.pop_front();
                    }
                    self.long.push_back(done);
                }
            }
        }
    }

    /// The latest round.
    pub fn latest(&self) -> Option<&ClusterSample> {
        self.short.back()
    }

    /// Rounds in the 1 s ring.
    pub fn len(&self) -> usize {
        self.short.len()
    }

    pub fn is_empty(&self) -> bool {
        self.short.is_empty()
    }

    /// The last `last_n` rounds at 1 s, oldest first (borrowed, not copied).
    pub fn window(&self, last_n: usize) -> Window<'_> {
        let skip = self.short.len().saturating_sub(last_n);
        Window {
            samples: self.short.range(skip..).collect(),
        }
    }

    /// The 10 s ring, oldest first (the bucket being built is not in it).
    pub fn long_ring(&self) -> impl Iterator<Item = &ClusterSample> {
        self.long.iter()
    }

    /// The series of `metric` (by name) since `since_ms`, for one node or
    /// all, from the 1 s ring when it reaches back to `since_ms`, else
    /// from the 10 s ring.
    pub fn series(
        &self,
        metric: &str,
        node: Option<u64>,
        since_ms: u64,
    ) -> Result<Vec<SeriesPoint>, MonitorError> {
        let metric = Metric::parse(metric)?;
        let short_covers = self.short.front().is_some_and(|f| f.unix_ms <= since_ms);
        let ring = if short_covers || self.long.is_empty() {
            &self.short
        } else {
            &self.long
        };
        let mut out = Vec::new();
        for s in ring.iter().filter(|s| s.unix_ms >= since_ms) {
            metric.points(s, node, &mut out);
        }
        Ok(out)
    }
}

/// A borrowed run of consecutive 1 s rounds, oldest first: what the
/// detectors read.
#[derive(Debug, Clone)]
pub struct Window<'a> {
    samples: Vec<&'a ClusterSample>,
}

impl<'a> Window<'a> {
    /// A window over rounds held elsewhere (tests, replays).
    pub fn of(samples: &'a [ClusterSample]) -> Window<'a> {
        Window {
            samples: samples.iter().collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn get(&self, i: usize) -> &'a ClusterSample {
        self.samples[i]
    }

    pub fn last(&self) -> Option<&'a ClusterSample> {
        self.samples.last().copied()
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &'a ClusterSample> + '_ {
        self.samples.iter().copied()
    }

    /// Every node id seen in the window, ascending.
    pub fn node_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .samples
            .iter()
            .flat_map(|s| s.nodes.iter().map(|n| n.node))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// `node`'s sample at round `i` if its snapshot was collected (a
    /// [repeated](NodeSample::repeated) one included).
    pub fn present(&self, i: usize, node: u64) -> Option<&'a NodeSample> {
        self.samples[i].present(node)
    }

    /// `node`'s last `k` new readings of `f` up to round `i`, oldest
    /// first, looking back at most `2 * k` rounds: a repeated sample is
    /// skipped (it is no new point, and counted as flat it would hide a
    /// rise), a round without the node or without the figure ends the
    /// search. `None` when fewer than `k` are found.
    pub fn readings(
        &self,
        i: usize,
        node: u64,
        k: usize,
        f: impl Fn(&NodeSample) -> Option<f64>,
    ) -> Option<Vec<f64>> {
        let mut out = Vec::with_capacity(k);
        for j in (i.saturating_sub((2 * k).saturating_sub(1))..=i).rev() {
            let n = self.present(j, node)?;
            if n.repeated {
                continue;
            }
            out.push(f(n)?);
            if out.len() == k {
                out.reverse();
                return Some(out);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(t_s: u64, write_p99: f64) -> ClusterSample {
        ClusterSample {
            unix_ms: t_s * 1000,
            nodes: (1..=3)
                .map(|node| NodeSample {
                    node,
                    unix_ms: t_s * 1000,
                    cpu_cores: t_s as f64,
                    write: crate::sample::WriteLatency {
                        total_p99_ms: Some(write_p99),
                        ..Default::default()
                    },
                    ..NodeSample::default()
                })
                .collect(),
        }
    }

    #[test]
    fn given_rounds_when_pushed_should_ring_and_downsample_with_max_latency() {
        let mut h = History::new();
        for t in 0..1_000u64 {
            h.push(round(t, if t == 3 { 90.0 } else { 1.0 }));
        }
        assert_eq!(h.len(), SHORT_RING);
        assert_eq!(h.window(5).len(), 5);
        assert_eq!(h.window(5).get(4).unix_ms, 999_000);
        // 100 buckets started, the last one still pending.
        assert_eq!(h.long_ring().count(), 99);
        let first = h.long_ring().next().unwrap();
        let n = first.node(1).unwrap();
        assert_eq!(n.cpu_cores, 9.0, "latest of the bucket");
        assert_eq!(n.write.total_p99_ms, Some(90.0), "max of the bucket");
        assert!(n.replicas.is_empty() && n.rollup.is_some(), "compacted");
    }

    #[test]
    fn given_a_since_when_reading_a_series_should_pick_the_ring_that_covers_it() {
        let mut h = History::new();
        for t in 0..1_000u64 {
            h.push(round(t, 1.0));
        }
        let recent = h.series("cpu_cores", Some(2), 990_000).unwrap();
        assert_eq!(recent.len(), 10);
        assert!(recent.iter().all(|p| p.node == 2));
        let old = h.series("cpu_cores", None, 0).unwrap();
        assert_eq!(old.len(), 99 * 3, "10 s ring, all nodes");
        assert_eq!(old[1].unix_ms - old[0].unix_ms, 0);
        assert_eq!(old[3].unix_ms - old[0].unix_ms, 10_000);
    }

    #[test]
    fn given_peer_rtts_when_reading_the_link_series_should_name_both_ends() {
        let mut h = History::new();
        let mut r = round(1, 1.0);
        r.nodes[0].peers = vec![crate::sample::PeerSample {
            node: 3,
            rtt_p99_ms: Some(0.4),
            ..Default::default()
        }];
        h.push(r);
        let s = h.series("peer_rtt_p99_ms", None, 0).unwrap();
        assert_eq!(
            s,
            vec![SeriesPoint {
                unix_ms: 1000,
                node: 1,
                peer: Some(3),
                value: 0.4
            }]
        );
        let json = serde_json::to_string(&s[0]).unwrap();
        assert_eq!(json, r#"{"unix_ms":1000,"node":1,"peer":3,"value":0.4}"#);
    }

    #[test]
    fn given_an_unknown_metric_when_reading_should_list_the_valid_ones() {
        let h = History::new();
        let err = h.series("cpu", None, 0).unwrap_err().to_string();
        assert!(
            err.contains("cpu_cores") && err.contains("peer_rtt_p99_ms"),
            "{err}"
        );
    }
}
