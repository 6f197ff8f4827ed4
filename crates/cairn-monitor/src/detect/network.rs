//! Slow or lossy links, and nodes whose every link is slow.
//!
//! Every node pings every peer; the monitor sees the matrix of round trips
//! (`a` measures `b` and `b` measures `a`). A link's figure is the worse of
//! its two directions. One link out of line is the link's problem
//! (`slow_link`); when every link of one node is, measured from both ends,
//! the node's network is the problem (`slow_network`) and its links are not
//! reported separately.

use super::{Tracked, baseline_by, finding, injected, num, track};
use crate::config::MonitorConfig;
use crate::finding::{Evidence, Finding, Resource, Severity, Subject, codes};
use crate::history::Window;

/// A link's figures at one round.
#[derive(Debug, Clone, Copy, Default)]
struct LinkRound {
    /// Worse direction's probe RTT p99, ms.
    rtt: Option<f64>,
    /// Both directions measured and each at or above the floor.
    both_slow: bool,
    /// Probe failures per second, both directions summed.
    failures: f64,
}

fn rtt(w: &Window<'_>, i: usize, from: u64, to: u64) -> Option<f64> {
    w.present(i, from)?
        .peers
        .iter()
        .find(|p| p.node == to)?
        .rtt_p99_ms
}

fn failures_per_second(w: &Window<'_>, i: usize, from: u64, to: u64) -> f64 {
    if i == 0 {
        return 0.0;
    }
    let get = |j: usize| {
        let n = w.present(j, from)?;
        let p = n.peers.iter().find(|p| p.node == to)?;
        Some((n.unix_ms, p.probe_failures_total))
    };
    match (get(i - 1), get(i)) {
        (Some((t0, f0)), Some((t1, f1))) if t1 > t0 && f1 >= f0 => {
            (f1 - f0) as f64 / ((t1 - t0) as f64 / 1000.0)
        }
        _ => 0.0,
    }
}

fn link_round(w: &Window<'_>, cfg: &MonitorConfig, i: usize, a: u64, b: u64) -> LinkRound {
    // A link to a node that is not answering says nothing about the
    // network: the node detector names that node, and its peers' failed
    // pings would only repeat it as "loss".
    if w.present(i, a).is_none() || w.present(i, b).is_none() {
        return LinkRound::default();
    }
    let ab = rtt(w, i, a, b);
    let ba = rtt(w, i, b, a);
    let floor = cfg.slow_link.floor_ms;
    LinkRound {
        rtt: match (ab, ba) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, y) => x.or(y),
        },
        both_slow: ab.is_some_and(|v| v >= floor) && ba.is_some_and(|v| v >= floor),
        failures: failures_per_second(w, i, a, b) + failures_per_second(w, i, b, a),
    }
}

/// Per link condition at round `i`: the RTT's reference (the healthiest
/// other link, else the link's baseline) and the severity.
fn link_cond(
    cfg: &MonitorConfig,
    rounds: &[Vec<LinkRound>],
    base: Option<f64>,
    i: usize,
    l: usize,
) -> (Option<Severity>, Option<f64>) {
    let c = &cfg.slow_link;
    let me = rounds[i][l];
    let others = rounds[i]
        .iter()
        .enumerate()
        .filter(|(k, _)| *k != l)
        .filter_map(|(_, r)| r.rtt)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v))));
    let reference = others.or(base);
    // Against the healthiest other link when there is one: when every link
    // is slow alike (a saturated host, a loaded machine) no link is out of
    // line, and the cause is named by the CPU or load detectors. Only a
    // link with nothing to compare to is judged against its own past.
    let slow = me.rtt.is_some_and(|v| {
        v >= c.floor_ms
            && match others {
                Some(o) => v >= c.ratio * o,
                None => base.is_some_and(|b| v >= c.ratio * b),
            }
    });
    let lossy = me.failures >= c.failures_per_second;
    let sev = if (slow && me.rtt.is_some_and(|v| v >= c.critical_ms))
        || me.failures >= 10.0 * c.failures_per_second
    {
        Some(Severity::Critical)
    } else if slow || lossy {
        Some(Severity::Warning)
    } else {
        None
    };
    (sev, reference)
}

/// Slow or lossy link (`slow_link`, subject `{link: [a, b]}`, resource
/// `network`): the link's probe RTT p99 at least `ratio` (4×) the
/// healthiest other link (its own baseline when it is the only link) and
/// above `floor_ms` (5 ms),
/// or probe failures at `failures_per_second` (1/s) or more. Critical from
/// `critical_ms` (200 ms) or 10× the failure rate (every probe lost).
///
/// Slow node network (`slow_network`, subject the node): every link of the
/// node (at least two) slow, measured slow from both ends.
pub fn slow_link(w: &Window<'_>, cfg: &MonitorConfig) -> Vec<Finding> {
    let ids = w.node_ids();
    let mut links: Vec<(u64, u64)> = Vec::new();
    for (k, a) in ids.iter().enumerate() {
        for b in &ids[k + 1..] {
            links.push((*a, *b));
        }
    }
    if links.is_empty() {
        return Vec::new();
    }
    let eval = super::eval_range(w, cfg);
    // Rounds needed: the evaluated ones and their baseline.
    let first = eval.start.saturating_sub(cfg.baseline_samples);
    let mut rounds: Vec<Vec<LinkRound>> = vec![Vec::new(); w.len()];
    for (i, r) in rounds.iter_mut().enumerate().skip(first) {
        *r = links
            .iter()
            .map(|(a, b)| link_round(w, cfg, i, *a, *b))
            .collect();
    }
    let bases: Vec<Option<f64>> = (0..links.len())
        .map(|l| baseline_by(w, cfg, |j| rounds[j][l].rtt))
        .collect();
    // conds[i][l]: link l's severity and reference at round i.
    let mut conds: Vec<Vec<(Option<Severity>, Option<f64>)>> = vec![Vec::new(); w.len()];
    for i in eval.clone() {
        conds[i] = (0..links.len())
            .map(|l| link_cond(cfg, &rounds, bases[l], i, l))
            .collect();
    }
    let mut out = Vec::new();
    let mut node_level = Vec::new();
    for node in &ids {
        let mine: Vec<usize> = (0..links.len())
            .filter(|l| links[*l].0 == *node || links[*l].1 == *node)
            .collect();
        if mine.len() < 2 {
            continue;
        }
        let cond = |i: usize| {
            let mut worst = None;
            for l in &mine {
                let sev = conds[i][*l].0;
                if sev.is_none() || !(rounds[i][*l].both_slow || rounds[i][*l].failures > 0.0) {
                    return None;
                }
                worst = worst.max(sev);
            }
            worst
        };
        if let Some(t) = track(w, cfg, cond) {
            node_level.push(*node);
            out.push(node_finding(
                w, cfg, &rounds, &conds, &links, &mine, *node, t,
            ));
        }
    }
    for (l, (a, b)) in links.iter().enumerate() {
        if node_level.contains(a) || node_level.contains(b) {
            continue;
        }
        let Some(t) = track(w, cfg, |i| conds[i][l].0) else {
            continue;
        };
        let reference = conds[t.at][l].1;
        let r = rounds[t.at][l];
        let mut evidence = Vec::new();
        if let Some(v) = r.rtt {
            evidence.push(Evidence::new(
                "peer_rtt_p99_ms",
                v,
                reference,
                cfg.slow_link
                    .floor_ms
                    .max(cfg.slow_link.ratio * reference.unwrap_or(0.0)),
                "ms",
            ));
        }
        evidence.push(Evidence::new(
            "probe_failures_per_second",
            r.failures,
            None,
            cfg.slow_link.failures_per_second,
            "per_second",
        ));
        let summary = if r.failures >= cfg.slow_link.failures_per_second {
            format!(
                "link {a}-{b} is losing pings: {} failed probes/s",
                num(r.failures)
            )
        } else {
            format!(
                "link {a}-{b} is slow: round trip p99 {} ms vs {} ms on the other links",
                num(r.rtt.unwrap_or(0.0)),
                num(reference.unwrap_or(0.0))
            )
        };
        let inj = injected(w, *a, Resource::Network, Some(*b))
            .or_else(|| injected(w, *b, Resource::Network, Some(*a)));
        out.push(finding(
            codes::SLOW_LINK,
            t,
            Subject::link(*a, *b),
            Resource::Network,
            summary,
            evidence,
            inj,
        ));
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn node_finding(
    w: &Window<'_>,
    cfg: &MonitorConfig,
    rounds: &[Vec<LinkRound>],
    conds: &[Vec<(Option<Severity>, Option<f64>)>],
    links: &[(u64, u64)],
    mine: &[usize],
    node: u64,
    t: Tracked,
) -> Finding {
    let mut evidence = Vec::new();
    let mut worst: f64 = 0.0;
    let mut refs = Vec::new();
    for l in mine {
        let (a, b) = links[*l];
        let r = rounds[t.at][*l];
        let reference = conds[t.at][*l].1;
        if let Some(v) = r.rtt {
            worst = worst.max(v);
            refs.extend(reference);
            evidence.push(Evidence::new(
                &format!("peer_rtt_p99_ms{{link=\"{a}-{b}\"}}"),
                v,
                reference,
                cfg.slow_link.floor_ms,
                "ms",
            ));
        }
        if r.failures > 0.0 {
            evidence.push(Evidence::new(
                &format!("probe_failures_per_second{{link=\"{a}-{b}\"}}"),
                r.failures,
                None,
                cfg.slow_link.failures_per_second,
                "per_second",
            ));
        }
    }
    let before = super::median(&mut refs);
    let summary = format!(
        "node {node}'s network is slow: round trips to and from all its peers up to {} ms{}",
        num(worst),
        before.map_or(String::new(), |b| format!(" vs {} ms before", num(b)))
    );
    finding(
        codes::SLOW_NETWORK,
        t,
        Subject::Node { node },
        Resource::Network,
        summary,
        evidence,
        injected(w, node, Resource::Network, None),
    )
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;

    fn set_rtt(n: &mut crate::sample::NodeSample, peer: u64, ms: f64) {
        for p in &mut n.peers {
            if p.node == peer {
                p.rtt_p99_ms = Some(ms);
            }
        }
    }

    #[test]
    fn given_every_link_slow_alike_or_a_silent_node_when_detected_should_name_no_link() {
        // A saturated host: every round trip 20 ms from round 80.
        let samples = scenario(130, |r, n| {
            if r >= 80 {
                for peer in 1..=3 {
                    set_rtt(n, peer, 20.0);
                }
            }
        });
        let rounds = per_round(&samples, slow_link);
        for (r, found) in rounds.iter().enumerate().skip(80) {
            assert!(found.is_empty(), "slow alike, round {r}: {found:#?}");
        }
        // Node 2 stops answering from round 80; its peers' pings fail.
        let samples = scenario(130, |r, n| {
            if n.node == 2 && r >= 80 {
                make_missing(n);
            }
            if n.node != 2 && r >= 80 {
                for p in &mut n.peers {
                    if p.node == 2 {
                        p.probe_failures_total += (r as u64 - 79) * 10;
                    }
                }
            }
        });
        let rounds = per_round(&samples, slow_link);
        for (r, found) in rounds.iter().enumerate().skip(80) {
            assert!(found.is_empty(), "silent node, round {r}: {found:#?}");
        }
    }

    #[test]
    fn given_one_slow_link_when_detected_should_name_the_link() {
        let samples = scenario(130, |r, n| {
            if (80..100).contains(&r) {
                match n.node {
                    1 => set_rtt(n, 3, 40.0),
                    3 => set_rtt(n, 1, 41.0),
                    _ => {}
                }
            }
        });
        let rounds = per_round(&samples, slow_link);
        let (first, cleared) = raised_and_cleared(&rounds, codes::SLOW_LINK, 80, 100);
        assert!(first <= 84 && cleared <= 115, "{first} {cleared}");
        let f = &rounds[90][0];
        assert_eq!(rounds[90].len(), 1);
        assert_eq!(f.subject, Subject::link(3, 1));
        assert_eq!(f.resource, Resource::Network);
        assert_eq!(f.evidence[0].observed, 41.0);
        assert_eq!(f.evidence[0].baseline, Some(0.3));
        assert!(f.summary.starts_with("link 1-3 is slow"), "{}", f.summary);
    }

    #[test]
    fn given_lost_probes_when_detected_should_call_the_link_lossy() {
        let samples = scenario(120, |r, n| {
            if n.node == 2 && r >= 90 {
                for p in &mut n.peers {
                    if p.node == 3 {
                        p.probe_failures_total = (r as u64 - 89) * 3;
                    }
                }
            }
        });
        let rounds = per_round(&samples, slow_link);
        let f = &rounds[100][0];
        assert_eq!(f.subject, Subject::link(2, 3));
        assert_eq!(f.evidence.last().unwrap().observed, 3.0);
        assert!(f.summary.contains("losing"), "{}", f.summary);
    }

    #[test]
    fn given_all_links_of_one_node_slow_when_detected_should_blame_the_node() {
        let samples = scenario(130, |r, n| {
            if (80..100).contains(&r) {
                if n.node == 2 {
                    set_rtt(n, 1, 30.0);
                    set_rtt(n, 3, 30.0);
                } else {
                    set_rtt(n, 2, 30.0);
                }
            }
        });
        let rounds = per_round(&samples, slow_link);
        let (first, cleared) = raised_and_cleared(&rounds, codes::SLOW_NETWORK, 80, 100);
        assert!(first <= 84 && cleared <= 115, "{first} {cleared}");
        assert_eq!(rounds[90].len(), 1, "{:#?}", rounds[90]);
        let f = &rounds[90][0];
        assert_eq!(f.subject, Subject::Node { node: 2 });
        assert_eq!(f.resource, Resource::Network);
        assert!(f.summary.contains("30 ms"), "{}", f.summary);
    }
}
