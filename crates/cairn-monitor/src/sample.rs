//! What the monitor keeps of one node's telemetry snapshot, and of one
//! collection round.
//!
//! The history rings hold 900 rounds at 1 s and 8,640 at 10 s for every
//! node, so a [`NodeSample`] keeps only the figures the detectors and the
//! charts read: a few hundred bytes of scalars plus one entry per peer and
//! per partition replica. Latencies are in milliseconds, rates per second.

use std::collections::BTreeMap;

use cairn_telemetry::histogram::LatencySummary;
pub use cairn_telemetry::replication::CatchUpProgress;
use cairn_telemetry::snapshot::TelemetrySnapshot;
use serde::{Deserialize, Serialize};

use crate::MonitorError;

/// One collection round: every node's sample, taken at `unix_ms`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterSample {
    pub unix_ms: u64,
    pub nodes: Vec<NodeSample>,
}

impl ClusterSample {
    /// The sample of `node` in this round, if it was part of it (present
    /// or [missing](NodeSample::missing)).
    pub fn node(&self, node: u64) -> Option<&NodeSample> {
        self.nodes.iter().find(|n| n.node == node)
    }

    /// The sample of `node` if its snapshot was collected this round.
    pub fn present(&self, node: u64) -> Option<&NodeSample> {
        self.node(node).filter(|n| !n.is_missing())
    }
}

/// One node's figures at one collection round.
///
/// A node whose snapshot could not be collected is still listed, built by
/// [`NodeSample::missing`]: `error` says why and every figure is zero/empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeSample {
    pub node: u64,
    /// When the monitor received the snapshot, ms since the Unix epoch
    /// (for a missing node: the round's time). A late answer keeps the
    /// time it arrived, so a round can tell how old its figures are.
    pub unix_ms: u64,
    /// Why the snapshot could not be collected; `None` when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Missing because the requests went out on an open connection and no
    /// answer came for too long (see [`NodeSample::unanswered`]), as
    /// opposed to a node that refused or could not be reached.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unanswered: bool,
    /// No new answer came for this round: these are the figures of the
    /// node's last answer (received at `unix_ms`), used again while they
    /// are recent. A busy node answers late rather than not at all, and
    /// its figures are what says why. Trends skip repeated rounds (a
    /// repeat is no new point).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub repeated: bool,
    /// When the snapshot's interval ended (the node's clock): a paused or
    /// stuck node keeps serving the same, stale snapshot.
    pub snapshot_unix_ms: u64,
    /// Resets when the node restarts.
    pub uptime_seconds: f64,

    /// CPU cores this process used (1.0 = one full core).
    pub cpu_cores: f64,
    /// Cores available to the process (cgroup quota or host cores).
    pub cpu_limit_cores: f64,
    /// Busy share of all host cores, 0..=1.
    pub host_cpu: f64,
    /// PSI "some" shares over the last 10 s, in percent.
    pub psi_cpu_some: Option<f64>,
    pub psi_io_some: Option<f64>,
    pub psi_memory_some: Option<f64>,
    pub rss_bytes: u64,
    /// The cgroup memory limit, else the host's total memory.
    pub memory_limit_bytes: u64,
    pub host_memory_total_bytes: u64,
    pub host_memory_available_bytes: u64,
    /// This process's own disk I/O.
    pub io_read_bytes_per_second: f64,
    pub io_write_bytes_per_second: f64,

    pub entries_per_second: f64,
    pub bytes_per_second: f64,
    /// Entries per second by stream (what this node accepted): the
    /// per-stream throughput of performance reports.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub stream_entries_per_second: BTreeMap<String, f64>,
    /// Write stage percentiles, ms (`None`: no write in the interval).
    pub write: WriteLatency,
    pub read_p99_ms: Option<f64>,
    /// Failed requests per second by error code; only non-zero codes.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub errors_per_second: BTreeMap<String, f64>,
    /// Client writes accepted and not yet answered at the snapshot.
    pub writes_in_flight: u64,

    /// Disk probe (512-byte write + fdatasync) over all data dirs: the
    /// worst p99, max, slow score and in-flight time.
    pub disk_probe_p99_ms: Option<f64>,
    pub disk_probe_max_ms: Option<f64>,
    pub disk_slow_score: f64,
    pub disk_probe_in_flight_ms: Option<f64>,

    /// The data directory with the least free space.
    pub free_bytes: u64,
    pub total_bytes: u64,
    pub free_inodes: u64,
    pub total_inodes: u64,

    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PeerSample>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicaSample>,
    pub quarantined_replicas: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultSample>,
    /// Set when `replicas` was dropped to save memory (the 10 s ring):
    /// what the charts still need of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollup: Option<ReplicaRollup>,
}

/// A node's replicas, summed up: what is left of them in the 10 s ring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicaRollup {
    pub leaders: u32,
    pub replicas: u32,
    pub max_follower_lag_seconds: f64,
}

/// Write stage percentiles in ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WriteLatency {
    pub total_p50_ms: Option<f64>,
    pub total_p99_ms: Option<f64>,
    pub queue_p50_ms: Option<f64>,
    pub queue_p99_ms: Option<f64>,
    pub fsync_p50_ms: Option<f64>,
    pub fsync_p99_ms: Option<f64>,
    pub replicate_p50_ms: Option<f64>,
    pub replicate_p99_ms: Option<f64>,
    pub commit_p50_ms: Option<f64>,
    pub commit_p99_ms: Option<f64>,
}

impl WriteLatency {
    fn fields_mut(&mut self) -> [&mut Option<f64>; 10] {
        [
            &mut self.total_p50_ms,
            &mut self.total_p99_ms,
            &mut self.queue_p50_ms,
            &mut self.queue_p99_ms,
            &mut self.fsync_p50_ms,
            &mut self.fsync_p99_ms,
            &mut self.replicate_p50_ms,
            &mut self.replicate_p99_ms,
            &mut self.commit_p50_ms,
            &mut self.commit_p99_ms,
        ]
    }
}

/// One peer as this node sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerSample {
    pub node: u64,
    /// Ping probe round trips in the interval, ms.
    pub rtt_p50_ms: Option<f64>,
    pub rtt_p99_ms: Option<f64>,
    /// Replication RPCs that carried entries, ms.
    pub rpc_p99_ms: Option<f64>,
    /// Cumulative since the node started: probes and RPCs unanswered.
    pub probe_failures_total: u64,
    pub rpc_failures_total: u64,
    pub bytes_sent_per_second: f64,
    pub bytes_received_per_second: f64,
    /// This node's failure detector's view (`up`, `suspect`, `down`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phi: Option<f64>,
}

/// One partition replica on the node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicaSample {
    pub stream: String,
    pub partition: u32,
    pub is_leader: bool,
    pub leader: Option<u64>,
    pub term: u64,
    pub committed_end_offset: u64,
    pub replicas: Vec<u64>,
    pub preferred_leader: Option<u64>,
    /// On the leader only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub followers: Vec<FollowerLag>,
    /// This replica is fetching a snapshot's data from its leader: its
    /// lag is a catch-up under way, not a follower stuck behind.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub catching_up: bool,
    /// How far that catch-up is, when the node says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUpProgress>,
}

/// A follower's lag as its leader sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FollowerLag {
    pub node: u64,
    pub voter: bool,
    pub entries: u64,
    pub seconds: f64,
    pub in_sync: bool,
}

/// A fault injected into the node (fault-injection API).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultSample {
    /// `disk`, `cpu`, `network`, …
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<u64>,
    /// e.g. `fsync_delay_ms=50`.
    pub detail: String,
}

impl std::fmt::Display for FaultSample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.detail)?;
        if let Some(p) = self.peer {
            write!(f, " (to node {p})")?;
        }
        Ok(())
    }
}

fn ms(us: Option<f64>) -> Option<f64> {
    us.map(|v| v / 1000.0)
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Parses a node id from a node name: `3`, `node-3`, `n3` → 3.
pub fn parse_node_id(name: &str) -> Option<u64> {
    let digits = name.trim_start_matches(|c: char| !c.is_ascii_digit());
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl NodeSample {
    /// Whether the snapshot could not be collected this round.
    pub fn is_missing(&self) -> bool {
        self.error.is_some()
    }

    /// Whether the node answered for this round: present and not
    /// [repeated](NodeSample::repeated).
    pub fn answered(&self) -> bool {
        !self.is_missing() && !self.repeated
    }

    /// A node whose snapshot could not be collected at `unix_ms`.
    pub fn missing(node: u64, unix_ms: u64, error: impl Into<String>) -> NodeSample {
        NodeSample {
            node,
            unix_ms,
            error: Some(error.into()),
            ..NodeSample::default()
        }
    }

    /// A node that was reached but has not answered for too long: its
    /// connection is open yet nothing comes back — a paused (SIGSTOP),
    /// hung or swamped process rather than a dead one (a dead process's
    /// port refuses connections).
    pub fn unanswered(node: u64, unix_ms: u64, error: impl Into<String>) -> NodeSample {
        NodeSample {
            unanswered: true,
            ..NodeSample::missing(node, unix_ms, error)
        }
    }

    /// The monitor's sample of a node's snapshot, collected at
    /// `collected_unix_ms`. `node` overrides the id; without it the id is
    /// parsed from the snapshot's node name (`node-3` → 3).
    pub fn from_snapshot(
        snap: &TelemetrySnapshot,
        node: Option<u64>,
        collected_unix_ms: u64,
    ) -> Result<NodeSample, MonitorError> {
        let node = match node {
            Some(n) => n,
            None => parse_node_id(&snap.node).ok_or_else(|| MonitorError::NodeId {
                name: snap.node.clone(),
            })?,
        };
        let stage = |name: &str| snap.write_stages.get(name).copied().unwrap_or_default();
        let pair = |s: LatencySummary| (ms(s.p50_us), ms(s.p99_us));
        let (total_p50_ms, total_p99_ms) = pair(stage("total"));
        let (queue_p50_ms, queue_p99_ms) = pair(stage("queue"));
        let (fsync_p50_ms, fsync_p99_ms) = pair(stage("fsync"));
        let (replicate_p50_ms, replicate_p99_ms) = pair(stage("replicate"));
        let (commit_p50_ms, commit_p99_ms) = pair(stage("commit"));
        let mut s = NodeSample {
            node,
            unix_ms: collected_unix_ms,
            error: None,
            snapshot_unix_ms: snap.unix_ms,
            uptime_seconds: snap.uptime_seconds,
            entries_per_second: snap.throughput.entries_per_second,
            bytes_per_second: snap.throughput.bytes_per_second,
            write: WriteLatency {
                total_p50_ms,
                total_p99_ms,
                queue_p50_ms,
                queue_p99_ms,
                fsync_p50_ms,
                fsync_p99_ms,
                replicate_p50_ms,
                replicate_p99_ms,
                commit_p50_ms,
                commit_p99_ms,
            },
            stream_entries_per_second: snap
                .streams
                .iter()
                .map(|(name, t)| (name.clone(), t.entries_per_second))
                .collect(),
            read_p99_ms: snap.read_stages.get("total").and_then(|s| ms(s.p99_us)),
            writes_in_flight: snap.writes_in_flight,
            errors_per_second: snap
                .throughput
                .errors_per_second
                .iter()
                .filter(|(_, v)| **v > 0.0)
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            ..NodeSample::default()
        };
        if let Some(r) = &snap.resources {
            s.cpu_cores = r.process_cpu_cores;
            s.cpu_limit_cores = r.cpu_limit_cores;
            s.host_cpu = r.host_cpu_utilization;
            if let Some(p) = r.pressure {
                s.psi_cpu_some = Some(p.cpu_some);
                s.psi_io_some = Some(p.io_some);
                s.psi_memory_some = Some(p.memory_some);
            }
            s.rss_bytes = r.process_rss_bytes;
            s.memory_limit_bytes = r
                .cgroup
                .memory_limit_bytes
                .unwrap_or(r.memory_total_bytes)
                .min(r.memory_total_bytes.max(1));
            s.host_memory_total_bytes = r.memory_total_bytes;
            s.host_memory_available_bytes = r.memory_available_bytes;
            if let Some(io) = r.process_io {
                s.io_read_bytes_per_second = io.read_bytes_per_second;
                s.io_write_bytes_per_second = io.write_bytes_per_second;
            }
        }
        for p in snap.probes.iter().filter(|p| p.kind == "disk") {
            s.disk_probe_p99_ms = max_opt(s.disk_probe_p99_ms, ms(p.interval.p99_us));
            s.disk_probe_max_ms = max_opt(s.disk_probe_max_ms, ms(p.interval.max_us));
            s.disk_slow_score = s.disk_slow_score.max(p.slow_score);
            s.disk_probe_in_flight_ms = max_opt(s.disk_probe_in_flight_ms, p.in_flight_ms);
        }
        if let Some(d) = snap.data_dirs.iter().min_by_key(|d| d.free_bytes) {
            s.free_bytes = d.free_bytes;
            s.total_bytes = d.total_bytes;
            s.free_inodes = d.free_inodes;
            s.total_inodes = d.total_inodes;
        }
        if let Some(rep) = &snap.replication {
            s.quarantined_replicas = rep.quarantined_replicas;
            s.peers = rep
                .peers
                .iter()
                .map(|p| PeerSample {
                    node: p.node,
                    rtt_p50_ms: ms(p.probe.p50_us),
                    rtt_p99_ms: ms(p.probe.p99_us),
                    rpc_p99_ms: ms(p.rpc.p99_us),
                    probe_failures_total: p.probe_failures_total,
                    rpc_failures_total: p.rpc_failures_total,
                    bytes_sent_per_second: p.bytes_sent_per_second,
                    bytes_received_per_second: p.bytes_received_per_second,
                    state: p.state.clone(),
                    phi: p.phi,
                })
                .collect();
            s.replicas = rep
                .partitions
                .iter()
                .map(|p| ReplicaSample {
                    stream: p.stream.clone(),
                    partition: p.partition,
                    is_leader: p.is_leader,
                    leader: p.leader,
                    term: p.term,
                    committed_end_offset: p.committed_end_offset,
                    replicas: p.replicas.clone(),
                    preferred_leader: p.preferred_leader,
                    catching_up: p.catching_up,
                    catch_up: p.catch_up,
                    followers: p
                        .followers
                        .iter()
                        .map(|f| FollowerLag {
                            node: f.node,
                            voter: f.voter,
                            entries: f.lag.entries,
                            seconds: f.lag.seconds,
                            in_sync: f.in_sync(),
                        })
                        .collect(),
                })
                .collect();
        }
        s.faults = snap
            .faults
            .iter()
            .map(|f| FaultSample {
                kind: f.kind.clone(),
                peer: f.peer,
                detail: f.detail.clone(),
            })
            .collect();
        Ok(s)
    }

    /// Folds an earlier sample of the same 10 s bucket into this (later)
    /// one: `self` keeps its own figures except the latency percentiles,
    /// which become the max over both, so a 10 s point never hides a slow
    /// second.
    pub(crate) fn fold_max_latency(&mut self, earlier: &NodeSample) {
        if self.is_missing() || earlier.is_missing() {
            return;
        }
        let mut e = earlier.write;
        for (mine, theirs) in self.write.fields_mut().into_iter().zip(e.fields_mut()) {
            *mine = max_opt(*mine, *theirs);
        }
        self.read_p99_ms = max_opt(self.read_p99_ms, earlier.read_p99_ms);
        self.disk_probe_p99_ms = max_opt(self.disk_probe_p99_ms, earlier.disk_probe_p99_ms);
        self.disk_probe_max_ms = max_opt(self.disk_probe_max_ms, earlier.disk_probe_max_ms);
        for p in &mut self.peers {
            if let Some(q) = earlier.peers.iter().find(|q| q.node == p.node) {
                p.rtt_p50_ms = max_opt(p.rtt_p50_ms, q.rtt_p50_ms);
                p.rtt_p99_ms = max_opt(p.rtt_p99_ms, q.rtt_p99_ms);
                p.rpc_p99_ms = max_opt(p.rpc_p99_ms, q.rpc_p99_ms);
            }
        }
    }

    /// How many partitions this node leads.
    pub fn leaders(&self) -> usize {
        if let Some(r) = self.rollup {
            return r.leaders as usize;
        }
        self.replicas.iter().filter(|r| r.is_leader).count()
    }

    /// Drops the per-replica detail, keeping a [`ReplicaRollup`]: a node
    /// with a hundred replicas holds ~20 KB of them per sample, too much
    /// for 8,640 rounds.
    pub fn compact(&mut self) {
        if self.rollup.is_some() {
            return;
        }
        self.rollup = Some(ReplicaRollup {
            leaders: self.leaders() as u32,
            replicas: self.replicas.len() as u32,
            max_follower_lag_seconds: self.max_follower_lag_seconds(),
        });
        self.replicas = Vec::new();
    }

    /// The largest lag in seconds of any follower of a partition this
    /// node leads (0 when it leads none).
    pub fn max_follower_lag_seconds(&self) -> f64 {
        if let Some(r) = self.rollup {
            return r.max_follower_lag_seconds;
        }
        self.replicas
            .iter()
            .flat_map(|r| &r.followers)
            .map(|f| f.seconds)
            .fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_telemetry::replication::{
        FollowerReplication, PartitionReplication, PeerSummary, ReplicationSummary,
    };
    use cairn_telemetry::resources::ResourceSnapshot;
    use cairn_telemetry::snapshot::{DataDirSpace, InjectedFault, ProbeSummary};

    fn lat(p50_us: f64, p99_us: f64) -> LatencySummary {
        LatencySummary {
            count: 10,
            p50_us: Some(p50_us),
            p99_us: Some(p99_us),
            max_us: Some(p99_us),
            ..LatencySummary::default()
        }
    }

    #[test]
    fn given_a_snapshot_when_sampled_should_keep_the_figures_in_ms() {
        let mut snap = TelemetrySnapshot {
            node: "node-2".into(),
            unix_ms: 1_000,
            uptime_seconds: 12.0,
            ..TelemetrySnapshot::default()
        };
        snap.write_stages
            .insert("fsync".into(), lat(500.0, 48_000.0));
        snap.write_stages
            .insert("total".into(), lat(900.0, 60_000.0));
        snap.throughput
            .errors_per_second
            .insert("unavailable".into(), 2.0);
        snap.throughput
            .errors_per_second
            .insert("timeout".into(), 0.0);
        snap.resources = Some(ResourceSnapshot {
            process_cpu_cores: 1.5,
            cpu_limit_cores: 2.0,
            memory_total_bytes: 8 << 30,
            process_rss_bytes: 1 << 30,
            ..ResourceSnapshot::default()
        });
        snap.probes.push(ProbeSummary {
            kind: "disk".into(),
            slow_score: 3.0,
            interval: lat(100.0, 2_000.0),
            in_flight_ms: Some(7.0),
            ..ProbeSummary::default()
        });
        snap.data_dirs = vec![
            DataDirSpace {
                free_bytes: 10,
                total_bytes: 100,
                ..DataDirSpace::default()
            },
            DataDirSpace {
                free_bytes: 5,
                total_bytes: 50,
                ..DataDirSpace::default()
            },
        ];
        snap.replication = Some(ReplicationSummary {
            partitions: vec![PartitionReplication {
                stream: "app".into(),
                partition: 4,
                is_leader: true,
                leader: Some(2),
                committed_end_offset: 77,
                followers: vec![FollowerReplication {
                    node: 3,
                    voter: true,
                    matched_index: Some(1),
                    reachable: true,
                    ..FollowerReplication::default()
                }],
                ..PartitionReplication::default()
            }],
            peers: vec![PeerSummary {
                node: 3,
                probe: lat(200.0, 1_500.0),
                state: Some("up".into()),
                phi: Some(0.5),
                ..PeerSummary::default()
            }],
            quarantined_replicas: 1,
            ..ReplicationSummary::default()
        });
        snap.faults.push(InjectedFault {
            kind: "disk".into(),
            detail: "fsync_delay_ms=50".into(),
            ..InjectedFault::default()
        });
        let s = NodeSample::from_snapshot(&snap, None, 1_200).unwrap();
        assert_eq!(s.node, 2);
        assert_eq!((s.unix_ms, s.snapshot_unix_ms), (1_200, 1_000));
        assert_eq!(s.write.fsync_p99_ms, Some(48.0));
        assert_eq!(s.write.total_p50_ms, Some(0.9));
        assert_eq!(s.errors_per_second.len(), 1, "zero rates are dropped");
        assert_eq!(s.cpu_cores, 1.5);
        assert_eq!(s.memory_limit_bytes, 8 << 30);
        assert_eq!(s.disk_probe_p99_ms, Some(2.0));
        assert_eq!(s.disk_probe_in_flight_ms, Some(7.0));
        assert_eq!((s.free_bytes, s.total_bytes), (5, 50));
        assert_eq!(s.peers[0].rtt_p99_ms, Some(1.5));
        assert_eq!(s.replicas[0].followers[0].node, 3);
        assert!(s.replicas[0].followers[0].in_sync);
        assert_eq!(s.quarantined_replicas, 1);
        assert_eq!(s.faults[0].to_string(), "disk fsync_delay_ms=50");
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.len() < 1_500, "compact: {} bytes", json.len());
        assert_eq!(serde_json::from_str::<NodeSample>(&json).unwrap(), s);
    }

    #[test]
    fn given_an_unnumbered_name_when_sampled_should_need_an_explicit_id() {
        let snap = TelemetrySnapshot {
            node: "alpha".into(),
            ..TelemetrySnapshot::default()
        };
        assert!(NodeSample::from_snapshot(&snap, None, 0).is_err());
        assert_eq!(
            NodeSample::from_snapshot(&snap, Some(9), 0).unwrap().node,
            9
        );
        assert_eq!(parse_node_id("n12"), Some(12));
        assert_eq!(parse_node_id("node-1a"), None);
    }

    #[test]
    fn given_a_sample_when_compacted_should_keep_what_the_charts_need() {
        let mut n = crate::detect::testkit::healthy(5, 1);
        n.replicas[0].followers[0].seconds = 2.5;
        let (leaders, lag) = (n.leaders(), n.max_follower_lag_seconds());
        let before = serde_json::to_string(&n).unwrap().len();
        n.compact();
        assert!(n.replicas.is_empty());
        assert_eq!((n.leaders(), n.max_follower_lag_seconds()), (leaders, lag));
        assert_eq!((leaders, lag), (1, 2.5));
        let after = serde_json::to_string(&n).unwrap().len();
        assert!(after < before, "{after} < {before}");
    }
}
