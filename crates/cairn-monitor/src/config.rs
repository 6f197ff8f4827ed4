//! The monitor's configuration: detector thresholds and alert rules.
//!
//! Every field has a built-in default (given in its doc comment, and all
//! together in [`DEFAULT_CONFIG_TOML`]); a TOML file only names what it
//! changes. Unknown keys are refused, so a typo is an error rather than a
//! silently ignored setting.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::finding::{Severity, codes};
use crate::history::Metric;

/// Why a configuration was refused.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("monitor config: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("monitor config: {0}")]
    Invalid(String),
}

/// Detector thresholds and alert rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    /// A condition becomes a finding when it holds in `trigger_samples` of
    /// the last `trigger_window` samples (1 s apart). Default 3 of 4: a
    /// fault is seen within 3–4 s, one odd sample is not.
    pub trigger_samples: usize,
    /// Default 4.
    pub trigger_window: usize,
    /// A finding clears once its condition has been false for this many
    /// samples in a row. Default 5.
    pub clear_samples: usize,
    /// How many earlier samples make a node's own baseline (their median).
    /// Default 60.
    pub baseline_samples: usize,
    pub slow_disk: SlowDiskConfig,
    pub slow_link: SlowLinkConfig,
    pub node: NodeConfig,
    pub cpu: CpuConfig,
    pub memory: MemoryConfig,
    pub overload: OverloadConfig,
    pub replication_lag: ReplicationLagConfig,
    pub hot_partition: HotPartitionConfig,
    pub leader_imbalance: LeaderImbalanceConfig,
    pub disk_full: DiskFullConfig,
    pub slo: SloConfig,
    /// Alert rules. Default: one per finding code (see
    /// [`AlertRule::defaults`]).
    pub rules: Vec<AlertRule>,
}

/// Slow disk: the disk probe's p99 or the write path's fsync p99 out of
/// line with the peers' median or the node's own baseline, the probe's
/// slow score, or a probe stuck in flight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlowDiskConfig {
    /// How many times the peers' median or the baseline. Default 4.
    pub ratio: f64,
    /// Below this p99 a disk is never slow. Default 5 ms.
    pub floor_ms: f64,
    /// A p99 above this is critical. Default 200 ms.
    pub critical_ms: f64,
    /// A probe slow score at or above this is slow. Default 20 (1 healthy …
    /// 100 unusable).
    pub slow_score: f64,
    /// A probe in flight this long is stuck (critical). Default 1,000 ms.
    pub in_flight_ms: f64,
}

/// Slow or lossy link, from the peer-probe RTT matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlowLinkConfig {
    /// How many times the healthiest other link or the link's baseline.
    /// Default 4.
    pub ratio: f64,
    /// Below this RTT p99 a link is never slow. Default 10 ms: Raft's
    /// catch-up after a fault briefly lifts a loopback link's p99 to a few
    /// ms, which is no news to an operator.
    pub floor_ms: f64,
    /// Above this it is critical. Default 200 ms.
    pub critical_ms: f64,
    /// Probe failures per second (either direction) that make a link lossy.
    /// Default 1.
    pub failures_per_second: f64,
}

/// Stalled, paused or down node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Consecutive rounds without a snapshot before the node is stalled
    /// (warning). Default 4: a restart costs up to 3 rounds and is silent.
    /// The peers' failure detectors must hold a suspect/down view one
    /// round longer.
    pub missing_rounds: usize,
    /// Consecutive rounds without a snapshot before the node is down
    /// (critical). Default 10.
    pub down_rounds: usize,
    /// Rounds a snapshot's own time may stand still while the collector
    /// gets it before the node counts as stalled. Default 3.
    pub stale_rounds: usize,
    /// Peers' median phi at or above which the node is suspect. Default 8.
    pub phi: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CpuConfig {
    /// Share of the CPU limit (or of the host) in use. Default 0.7.
    pub warning: f64,
    /// Default 0.9.
    pub critical: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Share of the memory limit held (RSS), or of host memory not
    /// available. Default 0.8.
    pub warning: f64,
    /// Default 0.95.
    pub critical: f64,
}

/// Overload: rejections, a growing write queue, or write latency far above
/// its baseline while throughput is flat ("beyond the knee").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OverloadConfig {
    /// Error codes that mean "rejected for load". Default `overloaded`,
    /// `unavailable`.
    pub rejection_codes: Vec<String>,
    /// Rejections per second above which the node is overloaded. Default 0.
    pub rejections_per_second: f64,
    /// Write total p99 this many times its baseline… Default 5.
    pub latency_ratio: f64,
    /// …and above this floor… Default 20 ms.
    pub floor_ms: f64,
    /// …while entries/s is at most this many times its baseline. Default 1.5.
    pub throughput_ratio: f64,
    /// Samples over which the queue-stage p99 must keep growing. Default 8.
    pub queue_growth_samples: usize,
    /// The queue p99 must end above this. Default 20 ms.
    pub queue_floor_ms: f64,
    /// Writes piling up: client writes in flight at least this many times
    /// their baseline… Default 8.
    pub in_flight_ratio: f64,
    /// …and at least this many, while write p99 is `latency_ratio` its
    /// baseline and above `floor_ms`. Default 200.
    pub in_flight_floor: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationLagConfig {
    /// A follower this far behind (age of the oldest entry it lacks) lags.
    /// Default 5 s.
    pub seconds: f64,
    /// Critical above this. Default 30 s.
    pub critical_seconds: f64,
    /// Or: lag seconds grew in most of this many steps… Default 10.
    pub growth_samples: usize,
    /// …and ended above this. Default 1 s.
    pub growth_floor_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HotPartitionConfig {
    /// Append rate this many times the median of the stream's other
    /// partitions. Default 3.
    pub ratio: f64,
    /// And at least this many entries/s. Default 100.
    pub floor_entries_per_second: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeaderImbalanceConfig {
    /// A node leading this many more partitions than it is the preferred
    /// leader of. Default 2.
    pub excess: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiskFullConfig {
    /// Forecast time to full under this: warning. Default 24 h.
    pub warning_hours: f64,
    /// Under this: critical. Default 1 h.
    pub critical_hours: f64,
    /// The disk is full now below this share free… Default 0.01.
    pub full_fraction: f64,
    /// …or below this many bytes free. Default 256 MiB.
    pub reserve_bytes: u64,
    /// Samples the decline rate is fitted over (at least 10). Default 600
    /// (10 minutes at 1 s).
    pub forecast_samples: usize,
    /// A forecast is trusted only this many times as far ahead as the span
    /// it was fitted over (default 60: a 1-minute fit speaks for the next
    /// hour, 10 minutes for the next 10 h). A short fit on a disk shared
    /// with other writers is noise at a one-day horizon; slower filling is
    /// for `predict_linear` over 30 m in `deploy/prometheus/rules.yml`.
    pub horizon_factor: f64,
}

/// Latency SLOs on each node's p99.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SloConfig {
    /// Default 100 ms.
    pub write_p99_warning_ms: f64,
    /// Default 500 ms.
    pub write_p99_critical_ms: f64,
    /// Default 100 ms.
    pub read_p99_warning_ms: f64,
    /// Default 500 ms.
    pub read_p99_critical_ms: f64,
}

/// An alert rule: fires per subject while its condition holds for
/// `for_seconds`.
///
/// Either `finding` (a finding code: the rule is active for each subject
/// with a finding of that code and at least `severity`) or `metric` with
/// `above` and `clear_below` (active once a node's value goes above
/// `above`, until it drops below `clear_below`: hysteresis).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// The `alertname`, e.g. `CairnSlowDisk`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_below: Option<f64>,
    #[serde(default)]
    pub for_seconds: u64,
    pub severity: Severity,
    /// Template for the `summary` annotation: `{summary}` (the finding's),
    /// `{subject}`, `{node}`, `{stream}`, `{partition}`, `{value}`.
    #[serde(default = "default_summary")]
    pub summary: String,
}

fn default_summary() -> String {
    "{summary}".to_string()
}

impl AlertRule {
    fn on_finding(name: &str, code: &str, for_seconds: u64, severity: Severity) -> AlertRule {
        AlertRule {
            name: name.to_string(),
            finding: Some(code.to_string()),
            metric: None,
            above: None,
            clear_below: None,
            for_seconds,
            severity,
            summary: default_summary(),
        }
    }

    /// The built-in rules: one per finding code (warning and up), with the
    /// `for` durations an operator would page on.
    pub fn defaults() -> Vec<AlertRule> {
        use Severity::*;
        vec![
            Self::on_finding("CairnSlowDisk", codes::SLOW_DISK, 30, Warning),
            Self::on_finding("CairnSlowLink", codes::SLOW_LINK, 30, Warning),
            Self::on_finding("CairnSlowNetwork", codes::SLOW_NETWORK, 30, Warning),
            Self::on_finding("CairnNodeDown", codes::NODE_DOWN, 10, Critical),
            Self::on_finding("CairnNodeStalled", codes::NODE_STALLED, 15, Warning),
            Self::on_finding("CairnCpuSaturation", codes::CPU_SATURATION, 60, Warning),
            Self::on_finding("CairnMemoryPressure", codes::MEMORY_PRESSURE, 60, Warning),
            Self::on_finding("CairnOverload", codes::OVERLOAD, 30, Warning),
            Self::on_finding("CairnReplicationLag", codes::REPLICATION_LAG, 30, Warning),
            Self::on_finding("CairnHotPartition", codes::HOT_PARTITION, 300, Warning),
            Self::on_finding(
                "CairnLeaderImbalance",
                codes::LEADER_IMBALANCE,
                300,
                Warning,
            ),
            Self::on_finding("CairnDiskFullSoon", codes::DISK_FULL_SOON, 60, Warning),
            Self::on_finding("CairnDiskFull", codes::DISK_FULL, 0, Critical),
            Self::on_finding(
                "CairnWriteLatencySlo",
                codes::WRITE_LATENCY_SLO,
                60,
                Warning,
            ),
            Self::on_finding("CairnReadLatencySlo", codes::READ_LATENCY_SLO, 60, Warning),
            Self::on_finding(
                "CairnLeaderlessPartition",
                codes::LEADERLESS_PARTITION,
                5,
                Critical,
            ),
            Self::on_finding("CairnUnderReplicated", codes::UNDER_REPLICATED, 60, Warning),
            Self::on_finding(
                "CairnQuarantinedReplica",
                codes::QUARANTINED_REPLICA,
                0,
                Critical,
            ),
            // A catch-up is routine; one that runs for ten minutes is
            // worth a look (a slow --snapshot-rate, or restarting).
            Self::on_finding("CairnCatchingUp", codes::CATCHING_UP, 600, Warning),
        ]
    }

    fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        if name.is_empty() {
            return Err("an alert rule has an empty name".into());
        }
        match (&self.finding, &self.metric) {
            (Some(code), None) => {
                if !codes::ALL.contains(&code.as_str()) {
                    return Err(format!(
                        "rule {name}: unknown finding code {code:?}; valid: {}",
                        codes::ALL.join(", ")
                    ));
                }
                if self.above.is_some() || self.clear_below.is_some() {
                    return Err(format!(
                        "rule {name}: `above`/`clear_below` apply to metric rules only"
                    ));
                }
            }
            (None, Some(metric)) => {
                Metric::parse(metric).map_err(|e| format!("rule {name}: {e}"))?;
                let Some(above) = self.above else {
                    return Err(format!("rule {name}: a metric rule needs `above`"));
                };
                if self.clear_below.is_some_and(|c| c > above) {
                    return Err(format!(
                        "rule {name}: `clear_below` must not exceed `above`"
                    ));
                }
            }
            _ => {
                return Err(format!(
                    "rule {name}: set exactly one of `finding` and `metric`"
                ));
            }
        }
        Ok(())
    }
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            trigger_samples: 3,
            trigger_window: 4,
            clear_samples: 5,
            baseline_samples: 60,
            slow_disk: SlowDiskConfig::default(),
            slow_link: SlowLinkConfig::default(),
            node: NodeConfig::default(),
            cpu: CpuConfig::default(),
            memory: MemoryConfig::default(),
            overload: OverloadConfig::default(),
            replication_lag: ReplicationLagConfig::default(),
            hot_partition: HotPartitionConfig::default(),
            leader_imbalance: LeaderImbalanceConfig::default(),
            disk_full: DiskFullConfig::default(),
            slo: SloConfig::default(),
            rules: AlertRule::defaults(),
        }
    }
}

impl Default for SlowDiskConfig {
    fn default() -> Self {
        SlowDiskConfig {
            ratio: 4.0,
            floor_ms: 5.0,
            critical_ms: 200.0,
            slow_score: 20.0,
            in_flight_ms: 1_000.0,
        }
    }
}

impl Default for SlowLinkConfig {
    fn default() -> Self {
        SlowLinkConfig {
            ratio: 4.0,
            floor_ms: 10.0,
            critical_ms: 200.0,
            failures_per_second: 1.0,
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            missing_rounds: 4,
            down_rounds: 10,
            stale_rounds: 3,
            phi: 8.0,
        }
    }
}

impl Default for CpuConfig {
    fn default() -> Self {
        CpuConfig {
            warning: 0.7,
            critical: 0.9,
        }
    }
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            warning: 0.8,
            critical: 0.95,
        }
    }
}

impl Default for OverloadConfig {
    fn default() -> Self {
        OverloadConfig {
            rejection_codes: vec!["overloaded".into(), "unavailable".into()],
            rejections_per_second: 0.0,
            latency_ratio: 5.0,
            floor_ms: 20.0,
            throughput_ratio: 1.5,
            queue_growth_samples: 8,
            queue_floor_ms: 20.0,
            in_flight_ratio: 8.0,
            in_flight_floor: 200,
        }
    }
}

impl Default for ReplicationLagConfig {
    fn default() -> Self {
        ReplicationLagConfig {
            seconds: 5.0,
            critical_seconds: 30.0,
            growth_samples: 10,
            growth_floor_seconds: 1.0,
        }
    }
}

impl Default for HotPartitionConfig {
    fn default() -> Self {
        HotPartitionConfig {
            ratio: 3.0,
            floor_entries_per_second: 100.0,
        }
    }
}

impl Default for LeaderImbalanceConfig {
    fn default() -> Self {
        LeaderImbalanceConfig { excess: 2 }
    }
}

impl Default for DiskFullConfig {
    fn default() -> Self {
        DiskFullConfig {
            warning_hours: 24.0,
            critical_hours: 1.0,
            full_fraction: 0.01,
            reserve_bytes: 256 << 20,
            forecast_samples: 600,
            horizon_factor: 60.0,
        }
    }
}

impl Default for SloConfig {
    fn default() -> Self {
        SloConfig {
            write_p99_warning_ms: 100.0,
            write_p99_critical_ms: 500.0,
            read_p99_warning_ms: 100.0,
            read_p99_critical_ms: 500.0,
        }
    }
}

impl MonitorConfig {
    /// Parses and checks a TOML config; keys left out keep their defaults.
    pub fn from_toml(text: &str) -> Result<MonitorConfig, ConfigError> {
        let config: MonitorConfig = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.trigger_samples == 0 || self.trigger_samples > self.trigger_window {
            return bad(format!(
                "trigger_samples ({}) must be between 1 and trigger_window ({})",
                self.trigger_samples, self.trigger_window
            ));
        }
        if self.clear_samples == 0 || self.baseline_samples == 0 {
            return bad("clear_samples and baseline_samples must be at least 1".into());
        }
        if self.cpu.warning > self.cpu.critical || self.memory.warning > self.memory.critical {
            return bad("cpu/memory: warning must not exceed critical".into());
        }
        if self.disk_full.horizon_factor.is_nan() || self.disk_full.horizon_factor <= 0.0 {
            return bad("disk_full.horizon_factor must be positive".into());
        }
        if self.disk_full.forecast_samples < 10 {
            return bad("disk_full.forecast_samples must be at least 10".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for r in &self.rules {
            r.validate().map_err(ConfigError::Invalid)?;
            if !names.insert(&r.name) {
                return bad(format!("two alert rules are named {}", r.name));
            }
        }
        Ok(())
    }

    /// Samples the detectors look back over: the baseline plus the span in
    /// which findings are raised and cleared.
    pub fn window_samples(&self) -> usize {
        self.baseline_samples
            .max(self.disk_full.forecast_samples)
            // Trends look back up to twice as far past repeated rounds.
            .max(2 * self.overload.queue_growth_samples)
            .max(2 * self.replication_lag.growth_samples)
            + self.eval_samples()
    }

    /// The most recent samples each detector evaluates its condition at
    /// (enough to see it rise and clear).
    pub fn eval_samples(&self) -> usize {
        self.trigger_window + self.clear_samples + self.node.down_rounds + 2
    }
}

/// The built-in configuration as TOML: [`MonitorConfig::from_toml`] of
/// this string equals [`MonitorConfig::default`] (a test checks it).
///
#[doc = concat!("```toml\n", include_str!("default_config.toml"), "```")]
pub const DEFAULT_CONFIG_TOML: &str = include_str!("default_config.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_the_default_toml_when_parsed_should_equal_the_defaults() {
        let parsed = MonitorConfig::from_toml(DEFAULT_CONFIG_TOML).unwrap();
        assert_eq!(parsed, MonitorConfig::default());
        let written = toml::to_string(&MonitorConfig::default()).unwrap();
        assert_eq!(
            MonitorConfig::from_toml(&written).unwrap(),
            MonitorConfig::default()
        );
    }

    #[test]
    fn given_an_empty_toml_when_parsed_should_give_the_defaults() {
        assert_eq!(
            MonitorConfig::from_toml("").unwrap(),
            MonitorConfig::default()
        );
        let c = MonitorConfig::from_toml("[cpu]\nwarning = 0.5\n").unwrap();
        assert_eq!(c.cpu.warning, 0.5);
        assert_eq!(c.cpu.critical, 0.9);
    }

    #[test]
    fn given_an_unknown_key_when_parsed_should_refuse_it_by_name() {
        let err = MonitorConfig::from_toml("[slow_disk]\nratoi = 3.0\n").unwrap_err();
        assert!(err.to_string().contains("ratoi"), "{err}");
        let err = MonitorConfig::from_toml("colour = 1\n").unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn given_bad_rules_when_parsed_should_say_what_is_wrong() {
        let err = MonitorConfig::from_toml(
            "[[rules]]\nname = \"X\"\nfinding = \"slow_dsk\"\nseverity = \"warning\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("slow_dsk"), "{err}");
        let err = MonitorConfig::from_toml(
            "[[rules]]\nname = \"X\"\nmetric = \"rss\"\nabove = 1.0\nseverity = \"warning\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("rss_bytes"), "lists valid: {err}");
        let err = MonitorConfig::from_toml(
            "[[rules]]\nname = \"X\"\nmetric = \"rss_bytes\"\nseverity = \"warning\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("above"), "{err}");
        let ok = MonitorConfig::from_toml(
            "[[rules]]\nname = \"BigRss\"\nmetric = \"rss_bytes\"\nabove = 8e9\nclear_below = 7e9\nfor_seconds = 30\nseverity = \"warning\"\n",
        )
        .unwrap();
        assert_eq!(ok.rules.len(), 1, "a rules list replaces the defaults");
    }
}
