//! The verdict: one status for the cluster, the reasons behind it, and a
//! line per node and for the partitions.
//!
//! - **red**: data cannot be written or is damaged — a leaderless
//!   partition, a quarantined replica (unrepaired damage), a full disk;
//! - **yellow**: redundancy lost (a node down, an under-replicated
//!   partition, a replica catching up by snapshot) or any performance
//!   finding;
//! - **green**: no finding.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::finding::{Evidence, Finding, Severity, Subject, codes};
use crate::history::Window;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Green,
    Yellow,
    Red,
}

/// Why the status is not green: a finding, without its resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    pub code: String,
    pub severity: Severity,
    pub subject: Subject,
    pub summary: String,
    pub evidence: Vec<Evidence>,
    pub since: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injected: Option<String>,
}

impl From<&Finding> for Reason {
    fn from(f: &Finding) -> Reason {
        Reason {
            code: f.code.clone(),
            severity: f.severity,
            subject: f.subject.clone(),
            summary: f.summary.clone(),
            evidence: f.evidence.clone(),
            since: f.since,
            injected: f.injected.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    Up,
    /// Not answering for a round or two, or its peers suspect it.
    Suspect,
    Down,
    /// Answering, but its telemetry stands still.
    Paused,
}

/// One node's line: its state and a few figures from its last snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeHealth {
    pub node: u64,
    pub state: NodeState,
    /// The highest phi its peers report for it.
    pub phi: Option<f64>,
    /// CPU cores in use.
    pub cpu: Option<f64>,
    pub rss: Option<u64>,
    pub fsync_p99_ms: Option<f64>,
    pub free_bytes: Option<u64>,
    /// Partitions it leads.
    pub leaders: usize,
    /// Partition replicas it holds.
    pub partitions: usize,
    /// How old these figures are at the round, in ms: the time since the
    /// node's last answer arrived (a busy node answers late; its last
    /// answer is used while recent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionCounts {
    pub total: usize,
    pub leaderless: usize,
    pub under_replicated: usize,
    /// Replicas catching up by snapshot.
    #[serde(default)]
    pub catching_up: usize,
    /// Quarantined replicas over all nodes.
    pub quarantined: u64,
}

/// The cluster's health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub status: Status,
    /// Worst first, then oldest first.
    pub reasons: Vec<Reason>,
    pub nodes: Vec<NodeHealth>,
    pub partitions: PartitionCounts,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            status: Status::Green,
            reasons: Vec::new(),
            nodes: Vec::new(),
            partitions: PartitionCounts::default(),
        }
    }
}

/// Findings that make the cluster red.
const RED: &[&str] = &[
    codes::LEADERLESS_PARTITION,
    codes::QUARANTINED_REPLICA,
    codes::DISK_FULL,
];

/// Findings that are consequences rather than causes: a slow disk, link
/// or node shows up as missed latency objectives and lagging followers
/// too, and the operator should read the cause first.
const SYMPTOMS: &[&str] = &[
    codes::WRITE_LATENCY_SLO,
    codes::READ_LATENCY_SLO,
    codes::UNDER_REPLICATED,
    codes::REPLICATION_LAG,
];

/// Findings that report work under way rather than a fault: read last.
const PROGRESS: &[&str] = &[codes::CATCHING_UP];

/// What to read first: what makes the cluster red (and a node down, the
/// usual reason), then causes, then symptoms (and findings another one
/// explains), then work under way.
fn rank(f: &Finding) -> u8 {
    if RED.contains(&f.code.as_str()) || f.code == codes::NODE_DOWN {
        0
    } else if PROGRESS.contains(&f.code.as_str()) {
        3
    } else if SYMPTOMS.contains(&f.code.as_str()) || f.explained_by.is_some() {
        2
    } else {
        1
    }
}

/// Sorts findings red first, then causes before symptoms, each worst
/// first, then oldest first (then by code and subject, so the order is
/// stable).
pub fn sort_findings(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        rank(a)
            .cmp(&rank(b))
            .then(b.severity.cmp(&a.severity))
            .then(a.since.cmp(&b.since))
            .then_with(|| a.code.cmp(&b.code))
            .then_with(|| a.subject.cmp(&b.subject))
    });
}

/// The verdict for the window's last round, given the (sorted) findings.
pub fn assess(w: &Window<'_>, findings: &[Finding]) -> Health {
    let Some(last) = w.last() else {
        return Health::default();
    };
    let status = if findings.iter().any(|f| RED.contains(&f.code.as_str())) {
        Status::Red
    } else if findings.is_empty() {
        Status::Green
    } else {
        Status::Yellow
    };
    let has = |code: &str, node: u64| {
        findings
            .iter()
            .any(|f| f.code == code && f.subject == Subject::Node { node })
    };
    let nodes = w
        .node_ids()
        .into_iter()
        .map(|node| {
            let now = last.present(node);
            let known = w.iter().rev().find_map(|s| s.present(node));
            let mut phi: Option<f64> = None;
            let mut suspected = 0;
            let mut reporting = 0;
            for n in last
                .nodes
                .iter()
                .filter(|n| n.node != node && !n.is_missing())
            {
                if let Some(p) = n.peers.iter().find(|p| p.node == node) {
                    if let Some(v) = p.phi {
                        phi = Some(phi.map_or(v, |m| m.max(v)));
                    }
                    if let Some(s) = &p.state {
                        reporting += 1;
                        if s != "up" {
                            suspected += 1;
                        }
                    }
                }
            }
            let state = if has(codes::NODE_DOWN, node) {
                NodeState::Down
            } else if now.is_some() && has(codes::NODE_STALLED, node) {
                NodeState::Paused
            } else if now.is_none() || (reporting > 0 && suspected * 2 > reporting) {
                NodeState::Suspect
            } else {
                NodeState::Up
            };
            NodeHealth {
                node,
                state,
                phi,
                cpu: known.map(|n| n.cpu_cores),
                rss: known.map(|n| n.rss_bytes),
                fsync_p99_ms: known.and_then(|n| n.write.fsync_p99_ms),
                free_bytes: known.and_then(|n| (n.total_bytes > 0).then_some(n.free_bytes)),
                leaders: known.map_or(0, |n| n.leaders()),
                partitions: known.map_or(0, |n| n.replicas.len()),
                age_ms: known.map(|n| last.unix_ms.saturating_sub(n.unix_ms)),
            }
        })
        .collect();
    let total: BTreeSet<(&str, u32)> = last
        .nodes
        .iter()
        .filter(|n| !n.is_missing())
        .flat_map(|n| n.replicas.iter().map(|r| (r.stream.as_str(), r.partition)))
        .collect();
    let count = |code: &str| findings.iter().filter(|f| f.code == code).count();
    Health {
        status,
        reasons: findings.iter().map(Reason::from).collect(),
        nodes,
        partitions: PartitionCounts {
            total: total.len(),
            leaderless: count(codes::LEADERLESS_PARTITION),
            under_replicated: count(codes::UNDER_REPLICATED),
            catching_up: count(codes::CATCHING_UP),
            quarantined: last
                .nodes
                .iter()
                .filter(|n| !n.is_missing())
                .map(|n| n.quarantined_replicas)
                .sum(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Resource;

    fn f(code: &str, severity: Severity, since: u64) -> Finding {
        Finding {
            code: code.into(),
            severity,
            subject: Subject::Node { node: 1 },
            resource: Resource::Latency,
            summary: String::new(),
            evidence: Vec::new(),
            since,
            injected: None,
            explained_by: None,
        }
    }

    #[test]
    fn given_a_critical_symptom_and_a_warning_cause_when_sorted_should_put_the_cause_first() {
        let mut fs = vec![
            f(codes::WRITE_LATENCY_SLO, Severity::Critical, 1),
            f(codes::UNDER_REPLICATED, Severity::Warning, 1),
            f(codes::SLOW_LINK, Severity::Warning, 5),
            f(codes::LEADERLESS_PARTITION, Severity::Critical, 9),
        ];
        sort_findings(&mut fs);
        let order: Vec<&str> = fs.iter().map(|f| f.code.as_str()).collect();
        assert_eq!(
            order,
            [
                codes::LEADERLESS_PARTITION,
                codes::SLOW_LINK,
                codes::WRITE_LATENCY_SLO,
                codes::UNDER_REPLICATED
            ]
        );
    }
}
