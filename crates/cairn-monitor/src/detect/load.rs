//! Overload ("more offered than the node can persist") and latency SLOs.

use super::{baseline, finding, injected, num, peer_median, track};
use crate::config::MonitorConfig;
use crate::finding::{Evidence, Finding, Resource, Severity, Subject, codes};
use crate::history::Window;
use crate::sample::NodeSample;

fn rejections(cfg: &MonitorConfig, n: &NodeSample) -> f64 {
    cfg.overload
        .rejection_codes
        .iter()
        .filter_map(|c| n.errors_per_second.get(c))
        .sum()
}

/// Whether the queue-stage p99 grew in at least 3/4 of the steps over the
/// node's last `queue_growth_samples` answers up to round `i`, ending above
/// the floor and at least twice where it started. Returns (first, last).
fn queue_growth(w: &Window<'_>, cfg: &MonitorConfig, i: usize, node: u64) -> Option<(f64, f64)> {
    let c = &cfg.overload;
    let k = c.queue_growth_samples.max(2);
    let v = w.readings(i, node, k, |n| n.write.queue_p99_ms)?;
    let ups = v.windows(2).filter(|p| p[1] > p[0]).count();
    let (first, last) = (v[0], v[v.len() - 1]);
    (ups * 4 >= (k - 1) * 3 && last >= c.queue_floor_ms && last >= 2.0 * first)
        .then_some((first, last))
}

#[derive(Debug, Clone, Copy)]
struct Knee {
    p99: f64,
    base_p99: f64,
    rate: f64,
    base_rate: f64,
}

/// The node's write p99 and entries/s baselines.
fn knee_bases(w: &Window<'_>, cfg: &MonitorConfig, node: u64) -> Option<(f64, f64, f64)> {
    Some((
        baseline(w, cfg, node, |n| n.write.total_p99_ms)?,
        baseline(w, cfg, node, |n| Some(n.entries_per_second))?,
        baseline(w, cfg, node, |n| n.write.queue_p99_ms).unwrap_or(0.0),
    ))
}

/// Whether the node's own resources are what the time is spent on: its
/// CPU at half the warning share or more, its host's CPU past `critical`
/// (nodes sharing a saturated host are all beyond their knee), or its
/// write queue's p99 up 3× from its baseline (and ≥ 1 ms). Without this, slower
/// writes at flat throughput could be any cause — a slow link or a slow
/// peer's disk stretches the same p99 — and those have their own findings.
fn busy(cfg: &MonitorConfig, n: &crate::sample::NodeSample, base_queue: f64) -> bool {
    let cpu = (n.cpu_limit_cores > 0.0 && n.cpu_cores / n.cpu_limit_cores >= cfg.cpu.warning / 2.0)
        || n.host_cpu >= cfg.cpu.critical;
    let queue = n
        .write
        .queue_p99_ms
        .is_some_and(|q| q >= 1.0 && q >= 3.0 * base_queue);
    cpu || queue
}

fn knee(
    w: &Window<'_>,
    cfg: &MonitorConfig,
    bases: Option<(f64, f64, f64)>,
    i: usize,
    node: u64,
) -> Option<Knee> {
    let c = &cfg.overload;
    let n = w.present(i, node)?;
    let p99 = n.write.total_p99_ms?;
    let (base_p99, base_rate, base_queue) = bases?;
    let rate = n.entries_per_second;
    (busy(cfg, n, base_queue)
        && p99 >= c.floor_ms
        && p99 >= c.latency_ratio * base_p99
        && rate <= c.throughput_ratio * base_rate
        && rate > 0.0)
        .then_some(Knee {
            p99,
            base_p99,
            rate,
            base_rate,
        })
}

/// Writes piling up at round `i`: (in flight, its baseline, write p99 or
/// `None` when no write completed at all, its baseline) when the node
/// holds `in_flight_ratio` (8×) its usual number of unanswered client
/// writes, at least `in_flight_floor` (200), while its write p99 is
/// `latency_ratio` (5×) its baseline and ≥ `floor_ms`, or no write
/// completed in the interval, or the pile grew in each of the last 3
/// answers: offered load past what the node completes.
fn piling_up(
    w: &Window<'_>,
    cfg: &MonitorConfig,
    bases: Option<(f64, f64, f64)>,
    base_in_flight: Option<f64>,
    i: usize,
    node: u64,
) -> Option<(f64, f64, Option<f64>, f64)> {
    let c = &cfg.overload;
    let n = w.present(i, node)?;
    let p99 = n.write.total_p99_ms;
    // A young node has no baseline yet; a pile is news all the same.
    let base_p99 = bases.map_or(0.0, |b| b.0);
    let base = base_in_flight.unwrap_or(0.0);
    let in_flight = n.writes_in_flight as f64;
    // Answers lag the pile: the p99 of completed writes rises only as the
    // first queued ones complete, so a pile that grew in each of the
    // node's last 3 answers counts too.
    let rising = w
        .readings(i, node, 4, |n| Some(n.writes_in_flight as f64))
        .is_some_and(|v| v.windows(2).all(|p| p[1] > p[0]));
    // No write completed in the whole interval under such a pile: slower
    // than any p99 (there is none to compare).
    let slow = p99.is_none_or(|p| p >= c.floor_ms && p >= c.latency_ratio * base_p99);
    (in_flight >= c.in_flight_floor as f64
        && in_flight >= c.in_flight_ratio * base
        && (slow || rising))
        .then_some((in_flight, base, p99, base_p99))
}

/// Overload (`overload`, subject the node, resource `load`): requests
/// rejected for load (`rejection_codes`, default `overloaded` and
/// `unavailable`, above `rejections_per_second`, 0/s); or the write queue's
/// p99 growing over `queue_growth_samples` (8) rounds to above
/// `queue_floor_ms` (20 ms); or "beyond the knee": write p99
/// `latency_ratio` (5×) its baseline and above `floor_ms` (20 ms) while
/// entries/s is at most `throughput_ratio` (1.5×) its baseline and the node
/// itself is busy (CPU or its write queue, see `busy`); or client writes
/// piling up (see `piling_up`). Critical when rejecting and the queue grows
/// at once.
pub fn overload(w: &Window<'_>, cfg: &MonitorConfig) -> Vec<Finding> {
    let c = &cfg.overload;
    let mut out = Vec::new();
    for node in w.node_ids() {
        let bases = knee_bases(w, cfg, node);
        let base_in_flight = baseline(w, cfg, node, |n| Some(n.writes_in_flight as f64));
        let piling = |i: usize| piling_up(w, cfg, bases, base_in_flight, i, node);
        let cond = |i: usize| {
            let n = w.present(i, node)?;
            let rejecting = rejections(cfg, n) > c.rejections_per_second;
            let growing = queue_growth(w, cfg, i, node).is_some();
            if rejecting && growing {
                Some(Severity::Critical)
            } else if rejecting
                || growing
                || knee(w, cfg, bases, i, node).is_some()
                || piling(i).is_some()
            {
                Some(Severity::Warning)
            } else {
                None
            }
        };
        let Some(t) = track(w, cfg, cond) else {
            continue;
        };
        let n = w.present(t.at, node).expect("held there");
        let rejected = rejections(cfg, n);
        let mut evidence = vec![Evidence::new(
            "rejections_per_second",
            rejected,
            None,
            c.rejections_per_second,
            "per_second",
        )];
        let mut parts = Vec::new();
        if rejected > c.rejections_per_second {
            parts.push(format!("rejecting {} requests/s", num(rejected)));
        }
        if let Some((first, last)) = queue_growth(w, cfg, t.at, node) {
            evidence.push(Evidence::new(
                "queue_p99_ms",
                last,
                Some(first),
                c.queue_floor_ms,
                "ms",
            ));
            parts.push(format!(
                "write queue p99 growing, {} ms from {} ms {} s ago",
                num(last),
                num(first),
                c.queue_growth_samples - 1
            ));
        }
        if let Some(k) = knee(w, cfg, bases, t.at, node) {
            evidence.push(Evidence::new(
                "write_p99_ms",
                k.p99,
                Some(k.base_p99),
                c.floor_ms.max(c.latency_ratio * k.base_p99),
                "ms",
            ));
            evidence.push(Evidence::new(
                "entries_per_second",
                k.rate,
                Some(k.base_rate),
                c.throughput_ratio * k.base_rate,
                "per_second",
            ));
            parts.push(format!(
                "beyond the knee, write p99 {} ms vs {} ms before at {} vs {} entries/s",
                num(k.p99),
                num(k.base_p99),
                num(k.rate),
                num(k.base_rate)
            ));
        }
        if let Some((in_flight, base, p99, base_p99)) = piling(t.at) {
            evidence.push(Evidence::new(
                "writes_in_flight",
                in_flight,
                Some(base),
                (c.in_flight_ratio * base).max(c.in_flight_floor as f64),
                "count",
            ));
            parts.push(match p99 {
                Some(p99) => format!(
                    "writes piling up, {} in flight vs {} usually, write p99 {} ms vs {} ms",
                    num(in_flight),
                    num(base),
                    num(p99),
                    num(base_p99)
                ),
                None => format!(
                    "writes piling up, {} in flight vs {} usually, none completed in the last interval",
                    num(in_flight),
                    num(base)
                ),
            });
        }
        if parts.is_empty() {
            parts.push("was overloaded moments ago".into());
        }
        out.push(finding(
            codes::OVERLOAD,
            t,
            Subject::Node { node },
            Resource::Load,
            format!("node {node} is overloaded: {}", parts.join("; ")),
            evidence,
            injected(w, node, Resource::Load, None),
        ));
    }
    out
}

/// Latency SLOs (`write_latency_slo`, `read_latency_slo`, subject the
/// node, resource `latency`): a node's write (total stage) or read p99 at
/// or above the warning (100 ms) / critical (500 ms) objective. Percentiles
/// of different nodes cannot be merged, so the SLO is judged per node (the
/// cluster meets it when every node does).
pub fn latency_slo(w: &Window<'_>, cfg: &MonitorConfig) -> Vec<Finding> {
    let c = &cfg.slo;
    let mut out = Vec::new();
    type Get = fn(&NodeSample) -> Option<f64>;
    let kinds: [(&str, &str, Get, f64, f64); 2] = [
        (
            codes::WRITE_LATENCY_SLO,
            "writes",
            |n| n.write.total_p99_ms,
            c.write_p99_warning_ms,
            c.write_p99_critical_ms,
        ),
        (
            codes::READ_LATENCY_SLO,
            "reads",
            |n| n.read_p99_ms,
            c.read_p99_warning_ms,
            c.read_p99_critical_ms,
        ),
    ];
    for (code, what, get, warn, crit) in kinds {
        for node in w.node_ids() {
            let Some(t) = track(w, cfg, |i| {
                let v = get(w.present(i, node)?)?;
                if v >= crit {
                    Some(Severity::Critical)
                } else if v >= warn {
                    Some(Severity::Warning)
                } else {
                    None
                }
            }) else {
                continue;
            };
            let v = w.present(t.at, node).and_then(get).unwrap_or(0.0);
            let objective = if t.severity == Severity::Critical {
                crit
            } else {
                warn
            };
            out.push(finding(
                code,
                t,
                Subject::Node { node },
                Resource::Latency,
                format!(
                    "{what} on node {node} miss the latency objective: p99 {} ms (objective {} ms)",
                    num(v),
                    num(objective)
                ),
                vec![Evidence::new(
                    if what == "writes" {
                        "write_p99_ms"
                    } else {
                        "read_p99_ms"
                    },
                    v,
                    peer_median(w, t.at, node, get),
                    objective,
                    "ms",
                )],
                injected(w, node, Resource::Latency, None),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;

    #[test]
    fn given_rejections_when_detected_should_report_overload() {
        let samples = scenario(130, |r, n| {
            if n.node == 2 && (80..100).contains(&r) {
                n.errors_per_second.insert("unavailable".into(), 12.0);
            }
        });
        let rounds = per_round(&samples, overload);
        let (first, cleared) = raised_and_cleared(&rounds, codes::OVERLOAD, 80, 100);
        assert!(first <= 84 && cleared <= 115, "{first} {cleared}");
        let f = &rounds[90][0];
        assert_eq!(f.subject, Subject::Node { node: 2 });
        assert_eq!(f.resource, Resource::Load);
        assert_eq!(f.evidence[0].observed, 12.0);
        assert!(
            f.summary.contains("rejecting 12 requests/s"),
            "{}",
            f.summary
        );
    }

    #[test]
    fn given_writes_piling_up_with_slow_answers_when_detected_should_call_it_overload() {
        let samples = scenario(130, |r, n| {
            if n.node == 3 && (80..100).contains(&r) {
                n.writes_in_flight = 1_500;
                n.write.total_p99_ms = Some(400.0);
                n.entries_per_second *= 4.0;
            }
        });
        let rounds = per_round(&samples, overload);
        let (first, cleared) = raised_and_cleared(&rounds, codes::OVERLOAD, 80, 100);
        assert!(first <= 84 && cleared <= 115, "{first} {cleared}");
        let f = &rounds[90][0];
        assert_eq!(f.subject, Subject::Node { node: 3 });
        assert!(
            f.summary.contains("piling up, 1500 in flight"),
            "{}",
            f.summary
        );
    }

    #[test]
    fn given_a_busy_node_that_answers_every_other_round_when_detected_should_still_call_it_overload()
     {
        // Its answers come late, so every other round repeats the last one;
        // a pile that keeps growing between answers counts as rising.
        let mut samples = scenario(130, |r, n| {
            if n.node == 1 && (80..100).contains(&r) {
                n.writes_in_flight = 300 + 100 * (r as u64 - 80);
                n.write.total_p99_ms = Some(15.0);
            }
        });
        answer_every(&mut samples, 1, 80..100, 2);
        let rounds = per_round(&samples, overload);
        let (first, cleared) = raised_and_cleared(&rounds, codes::OVERLOAD, 80, 100);
        assert!(first <= 87 && cleared <= 115, "{first} {cleared}");
        assert!(
            rounds[92][0].summary.contains("piling up"),
            "{:?}",
            rounds[92]
        );
        // Named at once when the answers are slow as well.
        let mut samples = scenario(130, |r, n| {
            if n.node == 1 && (80..100).contains(&r) {
                n.writes_in_flight = 1_500;
                n.write.total_p99_ms = Some(400.0);
            }
        });
        answer_every(&mut samples, 1, 80..100, 3);
        let rounds = per_round(&samples, overload);
        let (first, _) = raised_and_cleared(&rounds, codes::OVERLOAD, 80, 100);
        assert_eq!(first, 82, "third round of the pile");
    }

    #[test]
    fn given_a_pile_of_writes_none_of_which_complete_when_detected_should_call_it_overload() {
        // Swamped so badly that no write completes: no p99 at all.
        let samples = scenario(130, |r, n| {
            if n.node == 1 && (80..100).contains(&r) {
                n.writes_in_flight = 3_000;
                n.write = Default::default();
                n.entries_per_second = 0.0;
            }
        });
        let rounds = per_round(&samples, overload);
        let (first, cleared) = raised_and_cleared(&rounds, codes::OVERLOAD, 80, 100);
        assert!(first <= 83 && cleared <= 115, "{first} {cleared}");
        let f = &rounds[90][0];
        assert!(f.summary.contains("none completed"), "{}", f.summary);
    }

    #[test]
    fn given_a_growing_queue_with_repeated_rounds_when_detected_should_see_the_growth() {
        let mut samples = scenario(130, |r, n| {
            if n.node == 1 && (80..110).contains(&r) {
                let k = (r - 79) as f64;
                n.write.queue_p99_ms = Some(0.5 * 1.3f64.powf(k));
            }
        });
        answer_every(&mut samples, 1, 80..110, 2);
        let rounds = per_round(&samples, overload);
        let (first, _) = raised_and_cleared(&rounds, codes::OVERLOAD, 80, 110);
        assert!(first <= 100, "{first}");
        let f = &rounds[105][0];
        assert!(f.summary.contains("queue p99 growing"), "{}", f.summary);
    }

    #[test]
    fn given_a_growing_queue_and_flat_throughput_when_detected_should_say_beyond_the_knee() {
        let samples = scenario(130, |r, n| {
            if n.node == 1 && (80..100).contains(&r) {
                let k = (r - 79) as f64;
                n.write.queue_p99_ms = Some(0.5 * 1.5f64.powf(k));
                n.write.total_p99_ms = Some(6.0 + 10.0 * k);
            }
        });
        let rounds = per_round(&samples, overload);
        let (first, cleared) = raised_and_cleared(&rounds, codes::OVERLOAD, 80, 100);
        assert!(first <= 84 && cleared <= 115, "{first} {cleared}");
        let f = &rounds[95][0];
        assert!(f.summary.contains("queue p99 growing"), "{}", f.summary);
        assert!(f.summary.contains("beyond the knee"), "{}", f.summary);
        let knee = f
            .evidence
            .iter()
            .find(|e| e.metric == "write_p99_ms")
            .unwrap();
        assert_eq!(knee.observed, 166.0);
        assert_eq!(knee.baseline, Some(6.0));
    }

    #[test]
    fn given_slow_writes_when_detected_should_miss_the_slo() {
        let samples = scenario(130, |r, n| {
            if n.node == 3 && (80..100).contains(&r) {
                n.write.total_p99_ms = Some(if r < 90 { 240.0 } else { 800.0 });
            }
            if n.node == 1 && (80..100).contains(&r) {
                n.read_p99_ms = Some(150.0);
            }
        });
        let rounds = per_round(&samples, latency_slo);
        let (first, cleared) = raised_and_cleared(&rounds, codes::WRITE_LATENCY_SLO, 80, 100);
        assert!(first <= 84 && cleared <= 115, "{first} {cleared}");
        raised_and_cleared(&rounds, codes::READ_LATENCY_SLO, 80, 100);
        let w = rounds[85]
            .iter()
            .find(|f| f.code == codes::WRITE_LATENCY_SLO)
            .unwrap();
        assert_eq!(w.severity, Severity::Warning);
        assert_eq!(w.evidence[0].observed, 240.0);
        assert_eq!(w.evidence[0].baseline, Some(6.0));
        assert!(
            w.summary.contains("p99 240 ms (objective 100 ms)"),
            "{}",
            w.summary
        );
        let w = rounds[95]
            .iter()
            .find(|f| f.code == codes::WRITE_LATENCY_SLO)
            .unwrap();
        assert_eq!(w.severity, Severity::Critical);
        assert_eq!(w.subject, Subject::Node { node: 3 });
    }
}
