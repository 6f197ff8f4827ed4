//! CPU saturation and memory pressure.
//!
//! These are capacities, so fixed shares decide (a node at 95 % of its
//! cores is saturated whatever its peers do); the peers' median and the
//! node's baseline go into the evidence so a reader sees whether it is
//! the node or the whole cluster.

use super::{baseline, finding, injected, num, peer_median, track};
use crate::config::MonitorConfig;
use crate::finding::{Evidence, Finding, Resource, Severity, Subject, codes};
use crate::history::Window;
use crate::sample::NodeSample;

fn level(v: f64, warning: f64, critical: f64) -> Option<Severity> {
    if v >= critical {
        Some(Severity::Critical)
    } else if v >= warning {
        Some(Severity::Warning)
    } else {
        None
    }
}

fn cpu_share(n: &NodeSample) -> Option<f64> {
    (n.cpu_limit_cores > 0.0).then(|| n.cpu_cores / n.cpu_limit_cores)
}

/// How saturated a node's CPU is: its own share of its limit, or the
/// host's utilisation when the host is past `critical` and this node is a
/// substantial consumer (at least half the warning share). Nodes that
/// share a host all see the same host figure, so a busy host alone (a
/// compile, another tenant, a neighbour node burning CPU) must not flag
/// every node on it: the one causing it is flagged by its own share.
fn cpu_used(n: &NodeSample, c: &crate::config::CpuConfig) -> Option<f64> {
    let own = cpu_share(n).unwrap_or(0.0);
    let host = if n.host_cpu >= c.critical && own >= c.warning / 2.0 {
        n.host_cpu
    } else {
        0.0
    };
    Some(own.max(host))
}

/// CPU saturation (`cpu_saturation`, subject the node, resource `cpu`):
/// the process's CPU as a share of its limit at or above `warning` (0.7) /
/// `critical` (0.9), or a host past `critical` on which this node is a
/// substantial consumer (see `cpu_used`). PSI cpu "some" and the host's
/// utilisation are evidence.
pub fn cpu_saturation(w: &Window<'_>, cfg: &MonitorConfig) -> Vec<Finding> {
    let c = &cfg.cpu;
    let mut out = Vec::new();
    for node in w.node_ids() {
        let Some(t) = track(w, cfg, |i| {
            level(cpu_used(w.present(i, node)?, c)?, c.warning, c.critical)
        }) else {
            continue;
        };
        let n = w.present(t.at, node).expect("held there");
        let own = cpu_share(n).unwrap_or(0.0);
        let threshold = if t.severity == Severity::Critical {
            c.critical
        } else {
            c.warning
        };
        let mut evidence = vec![
            Evidence::new(
                "cpu_share_of_limit",
                own,
                peer_median(w, t.at, node, cpu_share),
                threshold,
                "ratio",
            ),
            Evidence::new(
                "host_cpu",
                n.host_cpu,
                baseline(w, cfg, node, |n| Some(n.host_cpu)),
                threshold,
                "ratio",
            ),
        ];
        if let Some(psi) = n.psi_cpu_some {
            evidence.push(Evidence::new("psi_cpu_some", psi, None, 0.0, "percent"));
        }
        let summary = if own >= n.host_cpu {
            format!(
                "node {node} is CPU-saturated: {} of {} cores ({} %)",
                num(n.cpu_cores),
                num(n.cpu_limit_cores),
                num(own * 100.0)
            )
        } else {
            format!(
                "node {node}'s host CPU is saturated: {} % busy (the node itself uses {} cores)",
                num(n.host_cpu * 100.0),
                num(n.cpu_cores)
            )
        };
        out.push(finding(
            codes::CPU_SATURATION,
            t,
            Subject::Node { node },
            Resource::Cpu,
            summary,
            evidence,
            injected(w, node, Resource::Cpu, None),
        ));
    }
    out
}

fn rss_share(n: &NodeSample) -> Option<f64> {
    (n.memory_limit_bytes > 0).then(|| n.rss_bytes as f64 / n.memory_limit_bytes as f64)
}

fn host_used(n: &NodeSample) -> Option<f64> {
    (n.host_memory_total_bytes > 0)
        .then(|| 1.0 - n.host_memory_available_bytes as f64 / n.host_memory_total_bytes as f64)
}

/// Memory pressure (`memory_pressure`, subject the node, resource
/// `memory`): RSS as a share of the memory limit (cgroup or host), or the
/// share of host memory not available, at or above `warning` (0.8) /
/// `critical` (0.95). PSI memory "some" is evidence.
pub fn memory_pressure(w: &Window<'_>, cfg: &MonitorConfig) -> Vec<Finding> {
    let c = &cfg.memory;
    let mut out = Vec::new();
    for node in w.node_ids() {
        let Some(t) = track(w, cfg, |i| {
            let n = w.present(i, node)?;
            let v = rss_share(n).unwrap_or(0.0).max(host_used(n).unwrap_or(0.0));
            level(v, c.warning, c.critical)
        }) else {
            continue;
        };
        let n = w.present(t.at, node).expect("held there");
        let rss = rss_share(n).unwrap_or(0.0);
        let host = host_used(n).unwrap_or(0.0);
        let threshold = if t.severity == Severity::Critical {
            c.critical
        } else {
            c.warning
        };
        let mut evidence = vec![
            Evidence::new(
                "rss_share_of_limit",
                rss,
                baseline(w, cfg, node, rss_share),
                threshold,
                "ratio",
            ),
            Evidence::new(
                "host_memory_used",
                host,
                peer_median(w, t.at, node, host_used),
                threshold,
                "ratio",
            ),
        ];
        if let Some(psi) = n.psi_memory_some {
            evidence.push(Evidence::new("psi_memory_some", psi, None, 0.0, "percent"));
        }
        let summary = if rss >= host {
            format!(
                "node {node} is short of memory: RSS {} of its {} limit ({} %)",
                super::disk::bytes(n.rss_bytes as f64),
                super::disk::bytes(n.memory_limit_bytes as f64),
                num(rss * 100.0)
            )
        } else {
            format!(
                "node {node}'s host is short of memory: {} available of {} ({} % used)",
                super::disk::bytes(n.host_memory_available_bytes as f64),
                super::disk::bytes(n.host_memory_total_bytes as f64),
                num(host * 100.0)
            )
        };
        out.push(finding(
            codes::MEMORY_PRESSURE,
            t,
            Subject::Node { node },
            Resource::Memory,
            summary,
            evidence,
            injected(w, node, Resource::Memory, None),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use crate::sample::FaultSample;

    #[test]
    fn given_a_busy_node_when_detected_should_grade_by_share_of_its_limit() {
        let samples = scenario(130, |r, n| {
            if n.node == 1 && (80..100).contains(&r) {
                n.cpu_cores = if r < 90 { 1.5 } else { 1.9 };
                n.psi_cpu_some = Some(40.0);
                n.faults.push(FaultSample {
                    kind: "cpu".into(),
                    peer: None,
                    detail: "burn_cores=2".into(),
                });
            }
        });
        let rounds = per_round(&samples, cpu_saturation);
        let (first, cleared) = raised_and_cleared(&rounds, codes::CPU_SATURATION, 80, 100);
        assert!(first <= 84 && cleared <= 115, "{first} {cleared}");
        let warn = &rounds[85][0];
        assert_eq!(warn.severity, Severity::Warning);
        assert_eq!(warn.evidence[0].observed, 0.75);
        assert_eq!(warn.evidence[0].baseline, Some(0.2), "peers' median");
        assert_eq!(warn.evidence[2].observed, 40.0);
        let crit = &rounds[95][0];
        assert_eq!(crit.severity, Severity::Critical);
        assert_eq!(crit.subject, Subject::Node { node: 1 });
        assert_eq!(crit.resource, Resource::Cpu);
        assert_eq!(crit.injected.as_deref(), Some("cpu burn_cores=2"));
        assert!(
            crit.summary.contains("1.9 of 2 cores (95 %)"),
            "{}",
            crit.summary
        );
    }

    #[test]
    fn given_a_growing_rss_when_detected_should_report_memory_pressure() {
        let samples = scenario(130, |r, n| {
            if n.node == 2 && (80..100).contains(&r) {
                n.rss_bytes = 7 << 30; // 87.5 % of 8 GiB
            }
        });
        let rounds = per_round(&samples, memory_pressure);
        let (first, cleared) = raised_and_cleared(&rounds, codes::MEMORY_PRESSURE, 80, 100);
        assert!(first <= 84 && cleared <= 115, "{first} {cleared}");
        let f = &rounds[90][0];
        assert_eq!(f.resource, Resource::Memory);
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(f.evidence[0].observed, 0.875);
        assert_eq!(f.evidence[0].baseline, Some(0.125));
    }
}
