//! What a detector reports: a [`Finding`] about one subject (a node, a
//! link, a partition), with the numbers that support it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How bad a finding or an alert is. Ordered: `Warning < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// What a finding is about. Serialized as `{"node": 2}`,
/// `{"link": [1, 3]}` (lower id first) or
/// `{"stream": "app", "partition": 4}` (plus `"node"` when the finding is
/// about one replica of it, e.g. a lagging follower).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Subject {
    Link {
        link: [u64; 2],
    },
    Partition {
        stream: String,
        partition: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<u64>,
    },
    Node {
        node: u64,
    },
}

impl Subject {
    /// A link, its ends in order.
    pub fn link(a: u64, b: u64) -> Subject {
        Subject::Link {
            link: [a.min(b), a.max(b)],
        }
    }

    /// The node the subject names, if one (a partition's replica node).
    pub fn node(&self) -> Option<u64> {
        match self {
            Subject::Node { node } => Some(*node),
            Subject::Partition { node, .. } => *node,
            Subject::Link { .. } => None,
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Node { node } => write!(f, "node {node}"),
            Subject::Link { link: [a, b] } => write!(f, "link {a}-{b}"),
            Subject::Partition {
                stream,
                partition,
                node: None,
            } => write!(f, "{stream}/{partition}"),
            Subject::Partition {
                stream,
                partition,
                node: Some(n),
            } => write!(f, "{stream}/{partition} on node {n}"),
        }
    }
}

/// Which resource a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Disk,
    Network,
    Cpu,
    Memory,
    Process,
    Replication,
    Load,
    Placement,
    Latency,
    Availability,
}

/// One number behind a finding: what was observed, what it was compared
/// with (the peers' median or the node's own baseline), and the line it
/// crossed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub metric: String,
    pub observed: f64,
    pub baseline: Option<f64>,
    pub threshold: f64,
    /// `ms`, `ratio`, `bytes`, `seconds`, `per_second`, `count`, …
    pub unit: String,
}

impl Evidence {
    pub fn new(
        metric: &str,
        observed: f64,
        baseline: Option<f64>,
        threshold: f64,
        unit: &str,
    ) -> Self {
        Evidence {
            metric: metric.to_string(),
            observed,
            baseline,
            threshold,
            unit: unit.to_string(),
        }
    }
}

/// A detector's conclusion about one subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable snake_case code, e.g. `slow_disk`: see [`codes`].
    pub code: String,
    pub severity: Severity,
    pub subject: Subject,
    pub resource: Resource,
    /// One line in plain words, naming the subject and the number.
    pub summary: String,
    pub evidence: Vec<Evidence>,
    /// When the condition started to hold (ms since the Unix epoch).
    pub since: u64,
    /// The injected fault on the subject's node that matches, e.g.
    /// `disk fsync_delay_ms=50`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injected: Option<String>,
    /// Another active finding that accounts for this one, e.g.
    /// `overload on node 1` for that node's slow probe round trips: a
    /// busy node answers pings late. Such a finding is read as a symptom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explained_by: Option<String>,
}

impl Finding {
    /// The key that identifies "the same finding" from one round to the
    /// next (code and subject).
    pub fn key(&self) -> (String, Subject) {
        (self.code.clone(), self.subject.clone())
    }
}

/// Every finding code the detectors emit.
pub mod codes {
    pub const SLOW_DISK: &str = "slow_disk";
    pub const SLOW_LINK: &str = "slow_link";
    pub const SLOW_NETWORK: &str = "slow_network";
    pub const NODE_DOWN: &str = "node_down";
    pub const NODE_STALLED: &str = "node_stalled";
    pub const CPU_SATURATION: &str = "cpu_saturation";
    pub const MEMORY_PRESSURE: &str = "memory_pressure";
    pub const OVERLOAD: &str = "overload";
    pub const REPLICATION_LAG: &str = "replication_lag";
    pub const HOT_PARTITION: &str = "hot_partition";
    pub const LEADER_IMBALANCE: &str = "leader_imbalance";
    pub const DISK_FULL_SOON: &str = "disk_full_soon";
    pub const DISK_FULL: &str = "disk_full";
    pub const WRITE_LATENCY_SLO: &str = "write_latency_slo";
    pub const READ_LATENCY_SLO: &str = "read_latency_slo";
    pub const LEADERLESS_PARTITION: &str = "leaderless_partition";
    pub const UNDER_REPLICATED: &str = "under_replicated";
    pub const QUARANTINED_REPLICA: &str = "quarantined_replica";
    pub const CATCHING_UP: &str = "catching_up";

    /// All of them, in detector order.
    pub const ALL: &[&str] = &[
        SLOW_DISK,
        SLOW_LINK,
        SLOW_NETWORK,
        NODE_DOWN,
        NODE_STALLED,
        CPU_SATURATION,
        MEMORY_PRESSURE,
        OVERLOAD,
        REPLICATION_LAG,
        HOT_PARTITION,
        LEADER_IMBALANCE,
        DISK_FULL_SOON,
        DISK_FULL,
        WRITE_LATENCY_SLO,
        READ_LATENCY_SLO,
        LEADERLESS_PARTITION,
        UNDER_REPLICATED,
        QUARANTINED_REPLICA,
        CATCHING_UP,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_subjects_when_serialized_should_have_the_documented_shape() {
        let j = |s: &Subject| serde_json::to_string(s).unwrap();
        assert_eq!(j(&Subject::Node { node: 2 }), r#"{"node":2}"#);
        assert_eq!(j(&Subject::link(3, 1)), r#"{"link":[1,3]}"#);
        let p = Subject::Partition {
            stream: "app".into(),
            partition: 4,
            node: None,
        };
        assert_eq!(j(&p), r#"{"stream":"app","partition":4}"#);
        for s in [Subject::Node { node: 2 }, Subject::link(1, 3), p] {
            assert_eq!(serde_json::from_str::<Subject>(&j(&s)).unwrap(), s);
        }
        let with_node: Subject =
            serde_json::from_str(r#"{"stream":"a","partition":1,"node":3}"#).unwrap();
        assert_eq!(with_node.node(), Some(3));
    }
}
