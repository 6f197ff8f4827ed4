//! The demo's once-a-second status: gathered from every node's
//! `/v1/cluster` and `/v1/telemetry/snapshot` plus the load's own figures,
//! then drawn as a table redrawn in place on a terminal, or as one plain
//! line per second otherwise (logs, CI, tests).
//!
//! Each node's `/v1/cluster` lists only the partition groups it
//! replicates, with its own committed end offset; a partition's lag is the
//! spread between its most and least advanced replica among the nodes that
//! answered, so it covers followers that are behind on replication or on
//! learning the commit index. A partition's rate is the growth of its
//! committed end offset between two statuses ([`Status::with_rates`]), so
//! load skewed across partitions shows.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use cairn_client::ClusterView;
use cairn_telemetry::snapshot::TelemetrySnapshot;

/// What one node said this second (`None`: it did not answer).
#[derive(Debug, Clone, Default)]
pub struct NodeSample {
    pub view: Option<ClusterView>,
    pub telemetry: Option<TelemetrySnapshot>,
    /// The node's `/v1/health` answer (the controller leader's verdict,
    /// forwarded, or its own when the leader did not answer).
    pub health: Option<serde_json::Value>,
}

/// Fetches one node's view and telemetry, each bounded by `timeout`.
pub async fn sample(http: &reqwest::Client, url: &str, timeout: Duration) -> NodeSample {
    async fn get<T: serde::de::DeserializeOwned>(
        http: &reqwest::Client,
        url: String,
        timeout: Duration,
    ) -> Option<T> {
        let r = http.get(url).timeout(timeout).send().await.ok()?;
        r.error_for_status().ok()?.json().await.ok()
    }
    let (view, telemetry, health) = tokio::join!(
        get(http, format!("{url}/v1/cluster"), timeout),
        get(http, format!("{url}/v1/telemetry/snapshot"), timeout),
        get(http, format!("{url}/v1/health"), timeout),
    );
    NodeSample {
        view,
        telemetry,
        health,
    }
}

/// One node's row.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    pub id: u64,
    pub url: String,
    pub pid: u32,
    /// `up`, `suspect`, `down`, … as the cluster sees it; or why the
    /// process is gone.
    pub state: String,
    /// Set when the process exited although nobody asked it to.
    pub died: bool,
    pub phi: Option<f64>,
    /// Demo partitions this node leads.
    pub leads: usize,
    pub ingest_per_s: Option<f64>,
    /// Server-side write latency p99 (`total` stage) in the last interval.
    pub write_p99_ms: Option<f64>,
}

/// One partition's row.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionRow {
    pub partition: u32,
    pub leader: Option<u64>,
    pub term: u64,
    /// The most advanced replica's committed end offset.
    pub committed: u64,
    /// Entries between the most and the least advanced answering replica.
    pub lag: u64,
    /// Replicas that answered, of those placed.
    pub reporting: usize,
    pub replicas: usize,
    /// Entries committed per second since the previous status.
    pub rate_per_s: Option<f64>,
}

/// The load's figures for the last interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadRow {
    pub target_per_s: f64,
    pub acked_per_s: f64,
    pub failed_per_s: f64,
    pub p99_ms: Option<f64>,
    pub acked_total: u64,
    pub shed_total: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub elapsed: Duration,
    pub stream: String,
    pub controller: Option<u64>,
    pub nodes: Vec<NodeRow>,
    pub partitions: Vec<PartitionRow>,
    pub load: LoadRow,
    pub last_error: Option<String>,
    /// The cluster verdict and its reasons, one line each (`None` while no
    /// node has answered `/v1/health`).
    pub health: Option<Verdict>,
}

/// The monitor's verdict as the demo shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// `GREEN`, `YELLOW` or `RED`.
    pub status: String,
    /// `SEVERITY code subject: summary`, most severe first.
    pub reasons: Vec<String>,
}

impl Verdict {
    fn of(health: &serde_json::Value) -> Option<Verdict> {
        let status = health["status"].as_str()?.to_uppercase();
        let reasons = health["reasons"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .map(|r| {
                        format!(
                            "{} {} — {}",
                            r["severity"].as_str().unwrap_or("").to_uppercase(),
                            r["code"].as_str().unwrap_or(""),
                            r["summary"].as_str().unwrap_or(""),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Verdict { status, reasons })
    }
}

/// Per node: (id, HTTP URL, pid, `Some(why)` if its process is gone).
pub type NodeProcessInfo = (u64, String, u32, Option<String>);

impl Status {
    /// Builds the status from what each node said (`samples[i]` is node
    /// `processes[i]`'s).
    pub fn build(
        elapsed: Duration,
        stream: &str,
        processes: &[NodeProcessInfo],
        samples: &[NodeSample],
        load: LoadRow,
        last_error: Option<String>,
    ) -> Status {
        let views: Vec<&ClusterView> = samples.iter().filter_map(|s| s.view.as_ref()).collect();
        // Node states as the controller leader sees them, when it answered:
        // it is the one that acts on them.
        let controller = most_common(views.iter().filter_map(|v| v.controller_leader));
        let authority = views
            .iter()
            .find(|v| Some(v.node_id) == controller)
            .or(views.first());

        // Partition rows: per partition, every answering replica's group.
        let mut groups: BTreeMap<u32, Vec<(u64, &cairn_client::GroupView)>> = BTreeMap::new();
        for v in &views {
            for g in v.groups.iter().filter(|g| g.stream == stream) {
                groups.entry(g.partition).or_default().push((v.node_id, g));
            }
        }
        let partitions: Vec<PartitionRow> = groups
            .into_iter()
            .map(|(partition, replicas)| {
                let leader = most_common(replicas.iter().filter_map(|(_, g)| g.leader));
                let ends = replicas.iter().map(|(_, g)| g.committed_end_offset);
                let committed = ends.clone().max().unwrap_or(0);
                let least = ends.min().unwrap_or(0);
                PartitionRow {
                    partition,
                    leader,
                    term: replicas.iter().map(|(_, g)| g.term).max().unwrap_or(0),
                    committed,
                    lag: committed - least,
                    reporting: replicas.len(),
                    replicas: replicas
                        .iter()
                        .map(|(_, g)| g.replicas.len())
                        .max()
                        .unwrap_or(0),
                    rate_per_s: None,
                }
            })
            .collect();

        let nodes = processes
            .iter()
            .zip(samples)
            .map(|((id, url, pid, gone), s)| {
                let seen = authority.and_then(|v| v.nodes.iter().find(|n| n.id == *id));
                let state = match (gone, seen) {
                    (Some(why), _) => why.clone(),
                    (None, Some(n)) => n.state.clone(),
                    (None, None) if s.view.is_some() => "joining".to_string(),
                    (None, None) => "no answer".to_string(),
                };
                let telemetry = s.telemetry.as_ref();
                NodeRow {
                    id: *id,
                    url: url.clone(),
                    pid: *pid,
                    state,
                    died: gone.is_some(),
                    phi: seen.and_then(|n| n.phi),
                    leads: partitions.iter().filter(|p| p.leader == Some(*id)).count(),
                    ingest_per_s: telemetry.map(|t| t.throughput.entries_per_second),
                    write_p99_ms: telemetry
                        .and_then(|t| t.write_stages.get("total"))
                        .and_then(|l| l.p99_us)
                        .map(|us| us / 1e3),
                }
            })
            .collect();
        // The controller leader's verdict if any node relayed it, else the
        // first node's own.
        let health = samples
            .iter()
            .filter_map(|s| s.health.as_ref())
            .max_by_key(|h| h["authority"].as_str() == Some("leader"))
            .and_then(Verdict::of);
        Status {
            elapsed,
            stream: stream.to_string(),
            controller,
            nodes,
            partitions,
            load,
            last_error,
            health,
        }
    }

    /// Fills each partition's rate from how far its committed end moved
    /// since `previous` (no rate for a partition it did not have).
    pub fn with_rates(mut self, previous: Option<&Status>) -> Status {
        let Some(previous) = previous else {
            return self;
        };
        let dt = self.elapsed.saturating_sub(previous.elapsed).as_secs_f64();
        if dt <= 0.0 {
            return self;
        }
        for p in &mut self.partitions {
            p.rate_per_s = previous
                .partitions
                .iter()
                .find(|q| q.partition == p.partition)
                .map(|q| p.committed.saturating_sub(q.committed) as f64 / dt);
        }
        self
    }

    /// The table drawn on a terminal.
    pub fn table(&self) -> Vec<String> {
        let mut out = Vec::new();
        let l = &self.load;
        out.push(format!(
            "running {} | controller leader: {} | stream {:?}",
            clock(self.elapsed),
            self.controller
                .map_or_else(|| "none yet".to_string(), |c| format!("node {c}")),
            self.stream
        ));
        match &self.health {
            Some(v) => {
                out.push(format!(
                    "health: {}{}",
                    v.status,
                    v.reasons
                        .first()
                        .map_or_else(String::new, |r| format!(" — {r}"))
                ));
                for r in v.reasons.iter().skip(1).take(3) {
                    out.push(format!("        {r}"));
                }
                if v.reasons.len() > 4 {
                    out.push(format!(
                        "        (+{} more: cairn status)",
                        v.reasons.len() - 4
                    ));
                }
            }
            None => out.push("health: (no verdict yet)".into()),
        }
        out.push(String::new());
        out.push(format!(
            "{:<5} {:<24} {:>5} {:>8} {:>6} {:>11} {:>12}",
            "NODE", "STATE", "PHI", "PID", "LEADS", "INGEST/s", "WRITE p99"
        ));
        for n in &self.nodes {
            let state = if n.died {
                format!("!! {}", n.state)
            } else {
                n.state.clone()
            };
            out.push(format!(
                "{:<5} {:<24} {:>5} {:>8} {:>6} {:>11} {:>12}",
                n.id,
                state,
                n.phi.map_or_else(|| "-".to_string(), |p| format!("{p:.1}")),
                n.pid,
                n.leads,
                n.ingest_per_s.map_or_else(|| "-".to_string(), count),
                n.write_p99_ms.map_or_else(|| "-".to_string(), ms),
            ));
        }
        out.push(String::new());
        out.push(format!(
            "{:<10} {:>7} {:>6} {:>12} {:>8} {:>9} {:>9}",
            "PARTITION", "LEADER", "TERM", "COMMITTED", "LAG", "REPLICAS", "RATE/s"
        ));
        for p in &self.partitions {
            out.push(format!(
                "{:<10} {:>7} {:>6} {:>12} {:>8} {:>9} {:>9}",
                p.partition,
                p.leader
                    .map_or_else(|| "none".to_string(), |l| l.to_string()),
                p.term,
                count(p.committed as f64),
                count(p.lag as f64),
                format!("{}/{}", p.reporting, p.replicas),
                p.rate_per_s.map_or_else(|| "-".to_string(), count),
            ));
        }
        out.push(String::new());
        out.push(format!(
            "load: {} entries/s acknowledged (target {}), {} failed requests/s, write p99 {} \
             (from intended send) | {} entries in total{}",
            count(l.acked_per_s),
            count(l.target_per_s),
            count(l.failed_per_s),
            l.p99_ms.map_or_else(|| "-".to_string(), ms),
            count(l.acked_total as f64),
            if l.shed_total > 0 {
                format!(
                    ", {} shed (too many requests in flight)",
                    count(l.shed_total as f64)
                )
            } else {
                String::new()
            }
        ));
        if let Some(e) = &self.last_error {
            out.push(format!("last write error: {e}"));
        }
        for n in self.nodes.iter().filter(|n| n.died) {
            out.push(format!(
                "!! node {} {} — see its log; the others carry on",
                n.id, n.state
            ));
        }
        out
    }

    /// One plain line, for output that is not a terminal.
    pub fn line(&self) -> String {
        let mut s = format!(
            "[{}] health {}",
            clock(self.elapsed),
            self.health.as_ref().map_or("-", |v| v.status.as_str())
        );
        if let Some(r) = self.health.as_ref().and_then(|v| v.reasons.first()) {
            let _ = write!(s, " ({r})");
        }
        s.push_str(" | nodes");
        for n in &self.nodes {
            let _ = write!(s, " {}:{}", n.id, n.state.replace(' ', "-"));
        }
        let _ = write!(
            s,
            " | controller {} | leaders",
            self.controller
                .map_or_else(|| "-".to_string(), |c| c.to_string())
        );
        for p in &self.partitions {
            let _ = write!(
                s,
                " p{}:{}",
                p.partition,
                p.leader.map_or_else(|| "-".to_string(), |l| l.to_string())
            );
        }
        let l = &self.load;
        let _ = write!(
            s,
            " | {} entries/s acked, {} failed/s, p99 {} | lag max {} | committed {}",
            count(l.acked_per_s),
            count(l.failed_per_s),
            l.p99_ms.map_or_else(|| "-".to_string(), ms),
            count(self.partitions.iter().map(|p| p.lag).max().unwrap_or(0) as f64),
            count(self.partitions.iter().map(|p| p.committed).sum::<u64>() as f64),
        );
        for n in self.nodes.iter().filter(|n| n.died) {
            let _ = write!(s, " | NODE {} {}", n.id, n.state);
        }
        s
    }
}

/// The value most often seen (ties: the smallest).
fn most_common(values: impl Iterator<Item = u64>) -> Option<u64> {
    let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
    for v in values {
        *votes.entry(v).or_default() += 1;
    }
    let best = votes.values().copied().max()?;
    votes.into_iter().find(|(_, n)| *n == best).map(|(v, _)| v)
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

pub use crate::format::count;

pub fn ms(v: f64) -> String {
    // Below 9.95 one decimal still rounds under 10.
    if v < 9.95 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.0} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_client::{GroupView, NodeView};

    fn group(partition: u32, leader: u64, end: u64) -> GroupView {
        GroupView {
            stream: "demo".into(),
            partition,
            group: u64::from(partition) + 1,
            replicas: vec![1, 2, 3],
            leader: Some(leader),
            preferred_leader: Some(leader),
            term: 2,
            applied_index: Some(end),
            committed_end_offset: end,
            log_start_index: 0,
            start_offset: 0,
            catching_up: None,
        }
    }

    fn view(id: u64, groups: Vec<GroupView>) -> ClusterView {
        ClusterView {
            node_id: id,
            controller_leader: Some(2),
            nodes: (1..=3)
                .map(|n| NodeView {
                    id: n,
                    raft_addr: String::new(),
                    http_addr: String::new(),
                    state: if n == 3 { "suspect" } else { "up" }.into(),
                    phi: Some(n as f64),
                    voter: true,
                })
                .collect(),
            groups,
        }
    }

    fn processes() -> Vec<NodeProcessInfo> {
        (1..=3)
            .map(|i| (i, format!("http://n{i}"), 100 + i as u32, None))
            .collect()
    }

    #[test]
    fn lag_is_the_spread_of_committed_ends_and_leaders_are_counted() {
        let samples = vec![
            NodeSample {
                view: Some(view(1, vec![group(0, 1, 100), group(1, 2, 50)])),
                telemetry: None,
                health: None,
            },
            NodeSample {
                view: Some(view(2, vec![group(0, 1, 90), group(1, 2, 50)])),
                telemetry: None,
                health: None,
            },
            // Node 3 did not answer.
            NodeSample::default(),
        ];
        let s = Status::build(
            Duration::from_secs(5),
            "demo",
            &processes(),
            &samples,
            LoadRow::default(),
            None,
        );
        assert_eq!(s.controller, Some(2));
        assert_eq!(s.partitions.len(), 2);
        let p0 = &s.partitions[0];
        assert_eq!(
            (p0.leader, p0.committed, p0.lag, p0.reporting, p0.replicas),
            (Some(1), 100, 10, 2, 3)
        );
        assert_eq!(s.partitions[1].lag, 0);
        let leads: Vec<usize> = s.nodes.iter().map(|n| n.leads).collect();
        assert_eq!(leads, [1, 1, 0]);
        // States come from the controller leader's view.
        let states: Vec<&str> = s.nodes.iter().map(|n| n.state.as_str()).collect();
        assert_eq!(states, ["up", "up", "suspect"]);
        assert!(s.line().contains("lag max 10"), "{}", s.line());
    }

    #[test]
    fn a_dead_node_is_reported_as_such() {
        let mut procs = processes();
        procs[2].3 = Some("exited unexpectedly (signal 9)".into());
        let samples = vec![
            NodeSample {
                view: Some(view(1, vec![group(0, 1, 10)])),
                telemetry: None,
                health: None,
            },
            NodeSample::default(),
            NodeSample::default(),
        ];
        let s = Status::build(
            Duration::from_secs(65),
            "demo",
            &procs,
            &samples,
            LoadRow::default(),
            None,
        );
        assert!(s.nodes[2].died);
        let table = s.table().join("\n");
        assert!(table.contains("!! node 3 exited unexpectedly"), "{table}");
        assert!(table.contains("running 00:01:05"), "{table}");
        assert!(s.line().contains("NODE 3 exited unexpectedly"));
    }

    #[test]
    fn partition_rates_come_from_committed_ends_between_two_statuses() {
        let status = |secs, ends: [u64; 2]| {
            let samples = vec![NodeSample {
                view: Some(view(1, vec![group(0, 1, ends[0]), group(1, 1, ends[1])])),
                telemetry: None,
                health: None,
            }];
            Status::build(
                Duration::from_secs(secs),
                "demo",
                &processes()[..1],
                &samples,
                LoadRow::default(),
                None,
            )
        };
        let first = status(10, [100, 100]).with_rates(None);
        assert_eq!(first.partitions[0].rate_per_s, None);
        let second = status(12, [700, 160]).with_rates(Some(&first));
        let rates: Vec<Option<f64>> = second.partitions.iter().map(|p| p.rate_per_s).collect();
        assert_eq!(rates, [Some(300.0), Some(30.0)]);
        let table = second.table().join("\n");
        assert!(table.contains("RATE/s"), "{table}");
        let row = table.lines().find(|l| l.starts_with("0 ")).unwrap();
        assert!(row.trim_end().ends_with("300"), "{row}");
    }

    #[test]
    fn numbers_are_readable() {
        assert_eq!(count(1_234_567.4), "1,234,567");
        assert_eq!(count(999.0), "999");
        assert_eq!(count(0.0), "0");
        assert_eq!(ms(3.125), "3.1 ms");
        assert_eq!(ms(42.4), "42 ms");
        assert_eq!(ms(9.97), "10 ms");
    }
}
