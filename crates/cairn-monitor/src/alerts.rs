//! Alert rules turned into alerts: pending → firing (after the rule's
//! `for`) → resolved, Prometheus-style.
//!
//! An alert is one rule applied to one subject (a node, a link, a
//! partition). It is *pending* from the round its condition first holds,
//! *firing* once it has held `for_seconds`, and *resolved* the round it no
//! longer holds; a pending alert whose condition goes away just
//! disappears. Metric rules have hysteresis: active from above `above`
//! until below `clear_below`.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::config::AlertRule;
use crate::finding::{Finding, Subject};
use crate::history::{History, Metric};

/// Transitions kept in [`AlertEngine::history`].
pub const HISTORY_LIMIT: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Pending,
    Firing,
    Resolved,
}

/// One alert, Alertmanager-shaped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub state: AlertState,
    /// `alertname`, `severity`, and `node`, `link`, `stream`, `partition`
    /// where they apply.
    pub labels: BTreeMap<String, String>,
    /// `summary`.
    pub annotations: BTreeMap<String, String>,
    /// When the condition started to hold, ms since the Unix epoch.
    pub starts_at: u64,
    /// When it was resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<u64>,
}

/// An alert changing state at `at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertTransition {
    pub at: u64,
    pub alert: Alert,
}

/// An instance of a rule that holds this round.
struct Hit {
    key: String,
    labels: BTreeMap<String, String>,
    summary: String,
}

/// Evaluates the rules each round and keeps the alerts' states.
#[derive(Debug, Default)]
pub struct AlertEngine {
    rules: Vec<AlertRule>,
    /// By rule name + subject key.
    active: BTreeMap<String, Alert>,
    history: VecDeque<AlertTransition>,
}

fn subject_labels(s: &Subject, labels: &mut BTreeMap<String, String>) {
    match s {
        Subject::Node { node } => {
            labels.insert("node".into(), node.to_string());
        }
        Subject::Link { link: [a, b] } => {
            labels.insert("link".into(), format!("{a}-{b}"));
        }
        Subject::Partition {
            stream,
            partition,
            node,
        } => {
            labels.insert("stream".into(), stream.clone());
            labels.insert("partition".into(), partition.to_string());
            if let Some(n) = node {
                labels.insert("node".into(), n.to_string());
            }
        }
    }
}

fn render(template: &str, labels: &BTreeMap<String, String>, vars: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    for k in ["node", "link", "stream", "partition"] {
        out = out.replace(
            &format!("{{{k}}}"),
            labels.get(k).map(String::as_str).unwrap_or(""),
        );
    }
    out
}

impl AlertEngine {
    pub fn new(rules: Vec<AlertRule>) -> AlertEngine {
        AlertEngine {
            rules,
            ..AlertEngine::default()
        }
    }

    /// Alerts pending or firing now.
    pub fn active(&self) -> impl Iterator<Item = &Alert> {
        self.active.values()
    }

    /// The last [`HISTORY_LIMIT`] transitions, oldest first.
    pub fn history(&self) -> &VecDeque<AlertTransition> {
        &self.history
    }

    fn hits(&self, rule: &AlertRule, findings: &[Finding], history: &History) -> Vec<Hit> {
        let base = |extra: &mut BTreeMap<String, String>| {
            extra.insert("alertname".into(), rule.name.clone());
            extra.insert("severity".into(), rule.severity.as_str().into());
        };
        let mut out = Vec::new();
        if let Some(code) = &rule.finding {
            for f in findings
                .iter()
                .filter(|f| &f.code == code && f.severity >= rule.severity)
            {
                let mut labels = BTreeMap::new();
                base(&mut labels);
                subject_labels(&f.subject, &mut labels);
                let summary = render(
                    &rule.summary,
                    &labels,
                    &[
                        ("summary", f.summary.clone()),
                        ("subject", f.subject.to_string()),
                        (
                            "value",
                            f.evidence
                                .first()
                                .map_or(String::new(), |e| crate::detect::num(e.observed)),
                        ),
                    ],
                );
                out.push(Hit {
                    key: format!("{}|{}", rule.name, f.subject),
                    labels,
                    summary,
                });
            }
        } else if let (Some(metric), Some(above)) = (&rule.metric, rule.above) {
            let Ok(metric) = Metric::parse(metric) else {
                return out;
            };
            let clear_below = rule.clear_below.unwrap_or(above);
            let Some(latest) = history.latest() else {
                return out;
            };
            let mut points = Vec::new();
            metric.points(latest, None, &mut points);
            for p in points {
                let subject = match p.peer {
                    Some(peer) => format!("node {} to {peer}", p.node),
                    None => format!("node {}", p.node),
                };
                let key = format!("{}|{subject}", rule.name);
                let was_active = self.active.contains_key(&key);
                let holds = p.value > above || (was_active && p.value >= clear_below);
                if !holds {
                    continue;
                }
                let mut labels = BTreeMap::new();
                base(&mut labels);
                labels.insert("node".into(), p.node.to_string());
                if let Some(peer) = p.peer {
                    labels.insert("peer".into(), peer.to_string());
                }
                let value = crate::detect::num(p.value);
                let default = format!("{subject}: {metric} is {value} (above {above})");
                let summary = render(
                    &rule.summary,
                    &labels,
                    &[
                        ("summary", default),
                        ("subject", subject.clone()),
                        ("value", value),
                    ],
                );
                out.push(Hit {
                    key,
                    labels,
                    summary,
                });
            }
        }
        out
    }

    fn record(&mut self, at: u64, alert: &Alert) {
        if self.history.len() == HISTORY_LIMIT {
            self.history.pop_front();
        }
        self.history.push_back(AlertTransition {
            at,
            alert: alert.clone(),
        });
    }

    /// Evaluates every rule at `now_ms` against this round's findings and
    /// the history's latest round (for metric rules); returns the
    /// transitions, in rule order.
    pub fn update(
        &mut self,
        now_ms: u64,
        findings: &[Finding],
        history: &History,
    ) -> Vec<AlertTransition> {
        let mut transitions = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        let rules = std::mem::take(&mut self.rules);
        for rule in &rules {
            for hit in self.hits(rule, findings, history) {
                seen.insert(hit.key.clone());
                let due =
                    |starts_at: u64| now_ms.saturating_sub(starts_at) >= rule.for_seconds * 1000;
                let changed = match self.active.get_mut(&hit.key) {
                    None => {
                        let state = if due(now_ms) {
                            AlertState::Firing
                        } else {
                            AlertState::Pending
                        };
                        let alert = Alert {
                            state,
                            labels: hit.labels,
                            annotations: BTreeMap::from([("summary".into(), hit.summary)]),
                            starts_at: now_ms,
                            ends_at: None,
                        };
                        self.active.insert(hit.key.clone(), alert.clone());
                        Some(alert)
                    }
                    Some(a) => {
                        a.annotations.insert("summary".into(), hit.summary);
                        if a.state == AlertState::Pending && due(a.starts_at) {
                            a.state = AlertState::Firing;
                            Some(a.clone())
                        } else {
                            None
                        }
                    }
                };
                if let Some(alert) = changed {
                    self.record(now_ms, &alert);
                    transitions.push(AlertTransition { at: now_ms, alert });
                }
            }
        }
        self.rules = rules;
        let gone: Vec<String> = self
            .active
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            let Some(mut alert) = self.active.remove(&key) else {
                continue;
            };
            if alert.state == AlertState::Firing {
                alert.state = AlertState::Resolved;
                alert.ends_at = Some(now_ms);
                self.record(now_ms, &alert);
                transitions.push(AlertTransition { at: now_ms, alert });
            }
        }
        transitions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::{Evidence, Resource, Severity, codes};
    use crate::sample::{ClusterSample, NodeSample};

    fn slow_disk(node: u64, severity: Severity) -> Finding {
        Finding {
            code: codes::SLOW_DISK.into(),
            severity,
            subject: Subject::Node { node },
            resource: Resource::Disk,
            summary: format!("node {node}'s disk is slow"),
            evidence: vec![Evidence::new("fsync_p99_ms", 48.0, Some(1.0), 5.0, "ms")],
            since: 0,
            injected: None,
            explained_by: None,
        }
    }

    fn rule(for_seconds: u64, severity: Severity) -> AlertRule {
        AlertRule {
            name: "CairnSlowDisk".into(),
            finding: Some(codes::SLOW_DISK.into()),
            metric: None,
            above: None,
            clear_below: None,
            for_seconds,
            severity,
            summary: "{summary} [{node}]".into(),
        }
    }

    #[test]
    fn given_a_finding_when_it_lasts_for_the_rules_for_should_go_pending_firing_resolved() {
        let h = History::new();
        let mut e = AlertEngine::new(vec![rule(10, Severity::Warning)]);
        let f = [slow_disk(2, Severity::Warning)];
        let t = e.update(1_000, &f, &h);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].alert.state, AlertState::Pending);
        assert_eq!(t[0].alert.labels["alertname"], "CairnSlowDisk");
        assert_eq!(t[0].alert.labels["node"], "2");
        assert_eq!(t[0].alert.labels["severity"], "warning");
        assert_eq!(
            t[0].alert.annotations["summary"],
            "node 2's disk is slow [2]"
        );
        assert!(e.update(10_000, &f, &h).is_empty(), "9 s: still pending");
        let t = e.update(11_000, &f, &h);
        assert_eq!(t[0].alert.state, AlertState::Firing);
        assert_eq!(t[0].alert.starts_at, 1_000);
        assert_eq!(e.active().count(), 1);
        let t = e.update(12_000, &[], &h);
        assert_eq!(t[0].alert.state, AlertState::Resolved);
        assert_eq!(t[0].alert.ends_at, Some(12_000));
        assert_eq!(e.active().count(), 0);
        assert_eq!(e.history().len(), 3);
    }

    #[test]
    fn given_a_pending_alert_when_the_finding_goes_should_vanish_without_resolving() {
        let h = History::new();
        let mut e = AlertEngine::new(vec![rule(10, Severity::Warning)]);
        e.update(0, &[slow_disk(1, Severity::Warning)], &h);
        assert!(e.update(1_000, &[], &h).is_empty());
        assert_eq!(e.active().count(), 0);
        assert_eq!(e.history().len(), 1);
    }

    #[test]
    fn given_a_critical_rule_when_the_finding_is_a_warning_should_not_fire() {
        let h = History::new();
        let mut e = AlertEngine::new(vec![rule(0, Severity::Critical)]);
        assert!(
            e.update(0, &[slow_disk(1, Severity::Warning)], &h)
                .is_empty()
        );
        let t = e.update(1_000, &[slow_disk(1, Severity::Critical)], &h);
        assert_eq!(t[0].alert.state, AlertState::Firing, "for 0: fires at once");
    }

    fn round(t: u64, rss: u64) -> ClusterSample {
        ClusterSample {
            unix_ms: t,
            nodes: vec![NodeSample {
                node: 1,
                unix_ms: t,
                rss_bytes: rss,
                ..NodeSample::default()
            }],
        }
    }

    #[test]
    fn given_a_metric_rule_when_the_value_hovers_should_hold_until_below_clear() {
        let rule = AlertRule {
            name: "BigRss".into(),
            finding: None,
            metric: Some("rss_bytes".into()),
            above: Some(100.0),
            clear_below: Some(80.0),
            for_seconds: 2,
            severity: Severity::Warning,
            summary: "{summary}".into(),
        };
        let mut e = AlertEngine::new(vec![rule]);
        let mut h = History::new();
        let mut states = Vec::new();
        for (t, rss) in [
            (0, 50),
            (1, 120),
            (2, 90),
            (3, 95),
            (4, 85),
            (5, 79),
            (6, 90),
        ] {
            h.push(round(t * 1000, rss));
            let tr = e.update(t * 1000, &[], &h);
            states.push((t, tr.first().map(|x| x.alert.state)));
        }
        assert_eq!(
            states,
            vec![
                (0, None),
                (1, Some(AlertState::Pending)),
                (2, None),
                (3, Some(AlertState::Firing)),
                (4, None),
                (5, Some(AlertState::Resolved)),
                (6, None),
            ]
        );
        assert_eq!(e.history()[0].alert.labels["node"], "1");
        assert!(
            e.history()[0].alert.annotations["summary"].contains("rss_bytes is 120"),
            "{:?}",
            e.history()[0].alert.annotations
        );
    }

    #[test]
    fn given_many_transitions_when_recorded_should_keep_the_last_thousand() {
        let h = History::new();
        let mut e = AlertEngine::new(vec![rule(0, Severity::Warning)]);
        for t in 0..1_500u64 {
            let f = if t % 2 == 0 {
                vec![slow_disk(1, Severity::Warning)]
            } else {
                vec![]
            };
            e.update(t * 1000, &f, &h);
        }
        assert_eq!(e.history().len(), HISTORY_LIMIT);
        assert_eq!(e.history().back().unwrap().at, 1_499_000);
    }
}
