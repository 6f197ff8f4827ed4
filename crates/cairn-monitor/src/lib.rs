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
//! [`replay`] runs the same over a recorded NDJSON file of
//! [`ClusterSample`]s (`cairn monitor replay FILE`).

pub mod alerts;
pub mod config;
pub mod detect;
pub mod finding;
pub mod health;
pub mod history;
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
}

impl Monitor {
    pub fn new(config: MonitorConfig) -> Monitor {
        Monitor {
            alerts: AlertEngine::new(config.rules.clone()),
            config,
            history: History::new(),
            last: Assessment::default(),
            since: HashMap::new(),
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
