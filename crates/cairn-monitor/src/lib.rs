//! The cluster monitor's pure core: what the cluster's telemetry says is
//! wrong, how sure we are, and which alerts that raises.
//!
//! This crate does no I/O, starts no threads and reads no clock: time is
//! always passed in as `unix_ms`. The node wires it up — it collects every
//! node's [`TelemetrySnapshot`](cairn_telemetry::snapshot::TelemetrySnapshot)
//! each second over the cluster transport, turns each into a
//! [`NodeSample`] (or [`NodeSample::missing`]), and hands the round to
//! [`Monitor::observe`]; it serves the returned [`Assessment`], the
//! [`History`] series and the [`AlertEngine`]'s alerts over HTTP, delivers
//! alert transitions, and exports what it likes to Prometheus.
//!
//! The flow of one round:
//!
//! 1. [`History::push`] keeps it in a 15-minute ring at 1 s and folds it
//!    into a 24-hour ring at 10 s.
//! 2. The [detectors](detect) read the last
//!    [`MonitorConfig::window_samples`] rounds (borrowed, not copied) and
//!    return [`Finding`]s. Each compares a node with its peers and with its
//!    own recent baseline above an absolute floor, and applies hysteresis
//!    (raise on 3 of the last 4 rounds, clear after 5 clean ones), so a
//!    fault is seen within 5 s and forgotten within 15 s of ending, and a
//!    single odd sample, a load burst within capacity, a restart or a
//!    leader election raise nothing.
//! 3. [`health::assess`] turns the findings into a [`Health`] verdict
//!    (green / yellow / red with reasons).
//! 4. The [`AlertEngine`] applies the [`AlertRule`]s: pending, firing
//!    after `for`, resolved.
//!
//! [`partitions::partitions`] lists every partition as the latest round
//! shows it (leader, replicas, followers' lag), for the dashboard.
//!
//! 5. The [`report::EventLog`] notes verdict changes, finding episodes
//!    and knees: what a [performance report](report) needs beyond the
//!    rings.
//!
//! [`replay`] runs the same over a recorded NDJSON file of
//! [`ClusterSample`]s (`cairn monitor replay FILE`).

pub mod alerts;
pub mod config;
pub mod detect;
pub mod finding;
pub mod health;
pub mod history;
pub mod partitions;
pub mod recommend;
pub mod report;
pub mod sample;

use std::collections::HashMap;
use std::io::BufRead;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use alerts::{Alert, AlertEngine, AlertState, AlertTransition};
pub use config::{AlertRule, ConfigError, DEFAULT_CONFIG_TOML, MonitorConfig};
pub use finding::{Evidence, Finding, Resource, Severity, Subject};
pub use health::{Health, NodeHealth, NodeState, PartitionCounts, Reason, Status};
pub use history::{History, Metric, SeriesPoint, Window};
pub use recommend::{ActionRecord, Outcome, Recommendation};
pub use sample::{ClusterSample, NodeSample};

/// Errors of this crate (config errors are [`ConfigError`]).
#[derive(Debug, Error)]
pub enum MonitorError {
    #[error("cannot tell the node id from node name {name:?}: pass it explicitly")]
    NodeId { name: String },
    #[error("unknown metric {name:?}; valid metrics: {valid}")]
    UnknownMetric { name: String, valid: String },
    #[error("line {line}: not a cluster sample: {source}")]
    Sample {
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("reading samples: {0}")]
    Io(#[from] std::io::Error),
}

/// What the monitor concluded after one round.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// The round's time, ms since the Unix epoch.
    pub at: u64,
    pub health: Health,
    /// Worst first, then oldest first.
    pub findings: Vec<Finding>,
    /// Alert transitions this round.
    pub transitions: Vec<AlertTransition>,
}

/// The monitor: history, detectors, verdict and alerts, fed one round at
/// a time.
#[derive(Debug)]
pub struct Monitor {
    config: MonitorConfig,
    history: History,
    alerts: AlertEngine,
    last: Assessment,
    /// When each active finding (code, subject) started: findings older
    /// than the window keep their first `since`.
    since: HashMap<(String, Subject), u64>,
    events: report::EventLog,
}

impl Monitor {
    pub fn new(config: MonitorConfig) -> Monitor {
        Monitor {
            alerts: AlertEngine::new(config.rules.clone()),
            config,
            history: History::new(),
            last: Assessment::default(),
            since: HashMap::new(),
            events: report::EventLog::default(),
        }
    }

    /// Takes one collection round and assesses the cluster at its time.
    pub fn observe(&mut self, sample: ClusterSample) -> &Assessment {
        let at = sample.unix_ms;
        self.history.push(sample);
        let window = self.history.window(self.config.window_samples());
        let mut findings = detect::run_all(&window, &self.config);
        let mut since = HashMap::with_capacity(findings.len());
        for f in &mut findings {
            let key = f.key();
            if let Some(first) = self.since.get(&key) {
                f.since = f.since.min(*first);
            }
            since.insert(key, f.since);
        }
        self.since = since;
        health::sort_findings(&mut findings);
        let health = health::assess(&window, &findings);
        let transitions = self.alerts.update(at, &findings, &self.history);
        if let Some(round) = self.history.latest() {
            self.events.record(at, &health, &findings, round);
        }
        self.last = Assessment {
            at,
            health,
            findings,
            transitions,
        };
        &self.last
    }

    pub fn config(&self) -> &MonitorConfig {
        &self.config
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    pub fn alerts(&self) -> &AlertEngine {
        &self.alerts
    }

    /// Verdict changes, finding episodes and knees (for reports).
    pub fn events(&self) -> &report::EventLog {
        &self.events
    }

    /// The assessment of the last round (empty before the first).
    pub fn last(&self) -> &Assessment {
        &self.last
    }
}

/// Runs a recorded NDJSON file (one [`ClusterSample`] per line; blank
/// lines are skipped) through a fresh [`Monitor`]; one assessment per
/// round.
pub fn replay(
    reader: impl BufRead,
    config: MonitorConfig,
) -> Result<Vec<Assessment>, MonitorError> {
    let mut monitor = Monitor::new(config);
    let mut out = Vec::new();
    for (k, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let sample: ClusterSample =
            serde_json::from_str(&line).map_err(|source| MonitorError::Sample {
                line: k + 1,
                source,
            })?;
        out.push(monitor.observe(sample).clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testkit::{T0, make_missing, scenario};
    use crate::finding::codes;
    use crate::sample::FaultSample;

    fn slow_disk_from(start: usize, end: usize) -> Vec<ClusterSample> {
        scenario(end + 30, |r, n| {
            if n.node == 2 && (start..end).contains(&r) {
                n.write.fsync_p99_ms = Some(48.0);
                n.faults.push(FaultSample {
                    kind: "disk".into(),
                    peer: None,
                    detail: "fsync_delay_ms=50".into(),
                });
            }
        })
    }

    #[test]
    fn given_a_slow_disk_when_observed_should_go_yellow_alert_and_recover() {
        let mut m = Monitor::new(MonitorConfig::default());
        let mut statuses = Vec::new();
        let mut transitions = Vec::new();
        for s in slow_disk_from(80, 200) {
            let a = m.observe(s);
            statuses.push(a.health.status);
            transitions.extend(a.transitions.iter().map(|t| (t.at, t.alert.state)));
        }
        assert!(statuses[..80].iter().all(|s| *s == Status::Green));
        assert_eq!(statuses[83], Status::Yellow);
        assert!(
            statuses[150] == Status::Yellow,
            "still slow after the baseline moved"
        );
        assert_eq!(statuses[229], Status::Green);
        let at = |r: u64| T0 + r * 1000;
        assert_eq!(transitions.len(), 3, "{transitions:?}");
        let (pending, firing, resolved) = (transitions[0], transitions[1], transitions[2]);
        assert_eq!(pending.1, AlertState::Pending);
        assert_eq!(firing, (pending.0 + 30_000, AlertState::Firing));
        assert_eq!(resolved.1, AlertState::Resolved);
        assert!(resolved.0 > at(200) && resolved.0 <= at(215));
        assert_eq!(m.alerts().history().len(), 3);
    }

    #[test]
    fn given_a_replica_catching_up_by_snapshot_when_observed_should_be_yellow_with_its_progress() {
        let mut m = Monitor::new(MonitorConfig::default());
        let mut at_95 = None;
        for (r, s) in detect::testkit::catching_up_scenario()
            .into_iter()
            .enumerate()
        {
            let a = m.observe(s);
            if r == 95 {
                at_95 = Some(a.health.clone());
            }
        }
        let h = at_95.unwrap();
        // Redundancy is reduced while it lasts (yellow), but the reason is
        // the catch-up with its progress, not an under-replicated
        // partition or a lagging follower.
        assert_eq!(h.status, Status::Yellow);
        let codes: Vec<&str> = h.reasons.iter().map(|r| r.code.as_str()).collect();
        assert_eq!(codes, [codes::CATCHING_UP], "{h:?}");
        assert!(h.reasons[0].summary.contains("(53%, 1600 of 3000 entries)"));
        assert_eq!(
            (h.partitions.catching_up, h.partitions.under_replicated),
            (1, 0)
        );
        assert_eq!(m.last().health.status, Status::Green);
    }

    #[test]
    fn given_a_fault_longer_than_the_window_when_observed_should_keep_its_first_since() {
        let mut m = Monitor::new(MonitorConfig::default());
        for s in slow_disk_from(80, 300).into_iter().take(290) {
            m.observe(s);
        }
        let f = &m.last().findings[0];
        assert_eq!(f.code, codes::SLOW_DISK);
        assert_eq!(f.since, T0 + 80_000);
        let reason = &m.last().health.reasons[0];
        assert_eq!(reason.injected.as_deref(), Some("disk fsync_delay_ms=50"));
    }

    #[test]
    fn given_a_leaderless_partition_and_a_down_node_when_observed_should_be_red_worst_first() {
        let samples = scenario(120, |r, n| {
            if r >= 80 && n.node == 3 {
                make_missing(n);
            }
            if r >= 95 {
                for rep in &mut n.replicas {
                    if rep.partition == 0 {
                        rep.leader = None;
                        rep.is_leader = false;
                        rep.followers.clear();
                    }
                }
            }
        });
        let mut m = Monitor::new(MonitorConfig::default());
        for s in samples {
            m.observe(s);
        }
        let h = &m.last().health;
        assert_eq!(h.status, Status::Red);
        assert_eq!(h.partitions.leaderless, 1);
        assert_eq!(h.partitions.total, 3);
        let severities: Vec<Severity> = h.reasons.iter().map(|r| r.severity).collect();
        let mut sorted = severities.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(severities, sorted);
        // Both critical; the node went down first, so it comes first.
        assert_eq!(h.reasons[0].code, codes::NODE_DOWN);
        assert_eq!(h.reasons[1].code, codes::LEADERLESS_PARTITION);
        let n3 = h.nodes.iter().find(|n| n.node == 3).unwrap();
        assert_eq!(n3.state, NodeState::Down);
        assert_eq!(n3.leaders, 1, "last known figures");
        let json = serde_json::to_value(h).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(keys, ["nodes", "partitions", "reasons", "status"]);
        assert_eq!(json["status"], "red");
        assert_eq!(json["nodes"][2]["state"], "down");
        assert_eq!(json["reasons"][1]["subject"]["stream"], "app");
    }

    #[test]
    fn given_a_restart_when_observed_should_stay_green() {
        let samples = scenario(130, |r, n| {
            if n.node == 1 {
                if (100..102).contains(&r) {
                    make_missing(n);
                } else if r >= 102 {
                    n.uptime_seconds = (r - 102) as f64;
                }
            }
        });
        let mut m = Monitor::new(MonitorConfig::default());
        for s in samples {
            let a = m.observe(s);
            assert_eq!(a.health.status, Status::Green, "{:#?}", a.findings);
            assert!(a.transitions.is_empty());
        }
    }

    #[test]
    fn given_an_ndjson_recording_when_replayed_should_match_live_observation() {
        let samples = slow_disk_from(80, 100);
        let mut file = String::new();
        for s in &samples {
            file.push_str(&serde_json::to_string(s).unwrap());
            file.push('\n');
        }
        file.push('\n');
        let replayed = replay(file.as_bytes(), MonitorConfig::default()).unwrap();
        assert_eq!(replayed.len(), samples.len());
        let mut live = Monitor::new(MonitorConfig::default());
        for (s, a) in samples.into_iter().zip(&replayed) {
            assert_eq!(live.observe(s), a);
        }
        assert_eq!(replayed[90].findings[0].code, codes::SLOW_DISK);

        let bad = format!(
            "{}\n{{\"unix_ms\": \"soon\"}}\n",
            file.lines().next().unwrap()
        );
        let err = replay(bad.as_bytes(), MonitorConfig::default()).unwrap_err();
        assert!(err.to_string().starts_with("line 2:"), "{err}");
    }

    #[test]
    fn given_1000_rounds_when_observed_should_be_cheap() {
        // Not a timing assertion: prints the cost per observe so a change
        // that makes it expensive is visible (`-- --nocapture`). The goal
        // is ≤ 1 % of a core at one round a second: ≤ 10 ms per observe.
        // Measured December 2026: ~3 ms in a debug build, ~115 µs in a
        // release build (0.01 % of a core).
        let samples = slow_disk_from(500, 980);
        let mut m = Monitor::new(MonitorConfig::default());
        let started = std::time::Instant::now();
        for s in samples.into_iter().take(1_000) {
            m.observe(s);
        }
        let per = started.elapsed().as_secs_f64() * 1e6 / 1_000.0;
        println!("observe: {per:.0} µs per round (3 nodes, 3 partitions)");
        assert_eq!(m.history().len(), 900);
    }
}
