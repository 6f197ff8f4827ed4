//! The monitor's own metrics, registered in the node's registry beside the
//! telemetry collector and read from the last assessment at scrape time.
//!
//! Worth alerting on (the shipped `deploy/prometheus/rules.yml` does):
//! `cairn_health_status >= 1` (yellow) or `== 2` (red); any
//! `cairn_alert_firing`; `cairn_alert_deliveries_total{outcome="failed"}`
//! rising (the receiver is down, so alerts are not reaching anyone).
//! Label values come from bounded sets: detector codes, severities, the
//! cluster's node ids, operator-created streams and their partitions.

use std::sync::Weak;
use std::sync::atomic::Ordering;

use cairn_monitor::{AlertState, Status, Subject};
use cairn_telemetry::{Labels, Telemetry, encode_family};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::Inner;

#[derive(Debug)]
struct MonitorCollector(Weak<Inner>);

pub(super) fn register(telemetry: &Telemetry, inner: Weak<Inner>) {
    telemetry.with_registry(|r| r.register_collector(Box::new(MonitorCollector(inner))));
}

/// The labels of a finding's subject, always all present so every series
/// of the family has the same label names.
fn subject_labels(subject: &Subject) -> Labels {
    let (node, stream, partition, link) = match subject {
        Subject::Node { node } => (
            node.to_string(),
            String::new(),
            String::new(),
            String::new(),
        ),
        Subject::Link { link } => (
            String::new(),
            String::new(),
            String::new(),
            format!("{}-{}", link[0], link[1]),
        ),
        Subject::Partition {
            stream,
            partition,
            node,
        } => (
            node.map(|n| n.to_string()).unwrap_or_default(),
            stream.clone(),
            partition.to_string(),
            String::new(),
        ),
    };
    vec![
        ("node", node),
        ("stream", stream),
        ("partition", partition),
        ("link", link),
    ]
}

impl Collector for MonitorCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(inner) = self.0.upgrade() else {
            return Ok(());
        };
        let (c, g) = (MetricType::Counter, MetricType::Gauge);
        let (status, findings, firing) = {
            let m = inner.monitor.lock();
            let status: u64 = match m.last().health.status {
                Status::Green => 0,
                Status::Yellow => 1,
                Status::Red => 2,
            };
            let findings: Vec<(Labels, u64)> = m
                .last()
                .findings
                .iter()
                .map(|f| {
                    let mut l: Labels = vec![
                        ("detector", f.code.to_string()),
                        ("severity", f.severity.as_str().to_string()),
                    ];
                    l.extend(subject_labels(&f.subject));
                    (l, 1)
                })
                .collect();
            let firing: Vec<(Labels, u64)> = m
                .alerts()
                .active()
                .filter(|a| a.state == AlertState::Firing)
                .map(|a| {
                    let get = |k: &str| a.labels.get(k).cloned().unwrap_or_default();
                    (
                        vec![
                            ("alertname", get("alertname")),
                            ("severity", get("severity")),
                            ("node", get("node")),
                            ("stream", get("stream")),
                            ("partition", get("partition")),
                        ],
                        1,
                    )
                })
                .collect();
            (status, findings, firing)
        };
        encode_family(
            &mut enc,
            "cairn_health_status",
            "The cluster verdict as this node's monitor sees it: 0 green, 1 yellow, 2 red.",
            g,
            &[(Vec::new(), status)],
        )?;
        encode_family(
            &mut enc,
            "cairn_finding_active",
            "1 for each active monitor finding (detector, severity and subject as labels).",
            g,
            &findings,
        )?;
        encode_family(
            &mut enc,
            "cairn_alert_firing",
            "1 for each firing built-in alert (labels as delivered to Alertmanager).",
            g,
            &firing,
        )?;
        encode_family(
            &mut enc,
            "cairn_monitor_rounds",
            "Collection rounds this node's monitor has evaluated.",
            c,
            &[(Vec::new(), inner.rounds.load(Ordering::Relaxed))],
        )?;
        encode_family(
            &mut enc,
            "cairn_monitor_evaluation_cpu_seconds",
            "CPU time this node's monitor spent evaluating rounds (detectors, verdict, alerts).",
            c,
            &[(
                Vec::new(),
                inner.cpu_ns.load(Ordering::Relaxed) as f64 / 1e9,
            )],
        )?;
        let d = &inner.delivery.counters;
        let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let outcome = |receiver: &str, outcome: &str| -> Labels {
            vec![
                ("receiver", receiver.to_string()),
                ("outcome", outcome.to_string()),
            ]
        };
        encode_family(
            &mut enc,
            "cairn_alert_deliveries",
            "Alert batches posted to each receiver, by outcome (failed: after every retry); dropped: the queue was full.",
            c,
            &[
                (outcome("alertmanager", "ok"), r(&d.alertmanager_ok)),
                (outcome("alertmanager", "failed"), r(&d.alertmanager_failed)),
                (outcome("webhook", "ok"), r(&d.webhook_ok)),
                (outcome("webhook", "failed"), r(&d.webhook_failed)),
                (outcome("any", "dropped"), r(&d.dropped)),
            ],
        )?;
        Ok(())
    }
}
