//! Nodes that stopped answering, stalled or are down.
//!
//! Three signals: the monitor's own collection (no snapshot this round),
//! the snapshot's own clock (a node whose telemetry stopped keeps serving
//! the same snapshot), and the peers' failure detectors (phi and state).
//! A restart is none of these for long: one or two rounds missed, then a
//! snapshot with its uptime reset, which is not a finding by itself.

use super::{Tracked, finding, injected, median, num, track};
use crate::config::MonitorConfig;
use crate::finding::{Evidence, Finding, Resource, Severity, Subject, codes};
use crate::history::Window;

/// Consecutive rounds, ending with the last, in which `holds(round)`.
fn run_of(w: &Window<'_>, holds: impl Fn(usize) -> bool) -> usize {
    (0..w.len()).rev().take_while(|i| holds(*i)).count()
}

/// The peers' view of `node` at round `i`: median phi, and how many of
/// those that report a state say suspect / down, out of how many report.
fn peers_view(w: &Window<'_>, i: usize, node: u64) -> (Option<f64>, usize, usize, usize) {
    let mut phis = Vec::new();
    let (mut suspect, mut down, mut reporting) = (0, 0, 0);
    for n in w
        .get(i)
        .nodes
        .iter()
        .filter(|n| n.node != node && !n.is_missing())
    {
        if let Some(p) = n.peers.iter().find(|p| p.node == node) {
            phis.extend(p.phi);
            if let Some(s) = &p.state {
                reporting += 1;
                match s.as_str() {
                    "suspect" => suspect += 1,
                    "down" | "dead" => down += 1,
                    _ => {}
                }
            }
        }
    }
    (median(&mut phis), suspect, down, reporting)
}

/// Whether `node`'s snapshot time stood still over the last `stale_rounds`
/// rounds while another node's advanced: the node answered at both ends
/// (a repeated round in between repeats the same snapshot and proves
/// nothing by itself).
fn stale(w: &Window<'_>, cfg: &MonitorConfig, i: usize, node: u64) -> Option<u64> {
    let k = cfg.node.stale_rounds;
    if i < k {
        return None;
    }
    let now = w.present(i, node).filter(|n| !n.repeated)?;
    w.present(i - k, node).filter(|n| !n.repeated)?;
    for j in i - k..i {
        if w.present(j, node)?.snapshot_unix_ms != now.snapshot_unix_ms {
            return None;
        }
    }
    let others_advance = w.get(i).nodes.iter().any(|o| {
        o.node != node
            && !o.is_missing()
            && w.present(i - k, o.node)
                .is_some_and(|then| o.snapshot_unix_ms > then.snapshot_unix_ms)
    });
    others_advance.then(|| now.unix_ms.saturating_sub(now.snapshot_unix_ms))
}

/// Down (`node_down`, critical, resource `availability`): no snapshot for
/// `down_rounds` (10) rounds, or most peers' failure detectors saying down
/// for `missing_rounds + 1` (5) rounds in a row.
///
/// Stalled (`node_stalled`, warning, resource `process`): no snapshot for
/// `missing_rounds` (4) rounds in a row — for a node reached but silent,
/// no new answer for that many rounds, its last one
/// [repeated](crate::sample::NodeSample::repeated) at first and then
/// missing as unanswered; or the peers' median phi ≥ `phi`
/// (8), or most of them saying suspect, for `missing_rounds + 1` (5)
/// rounds in a row (both raised at once and cleared by the first round
/// that breaks the run: a fresh snapshot is hard evidence); or its
/// snapshot's time standing still for `stale_rounds` (3) while its peers'
/// advance (with the usual hysteresis).
///
/// A restart misses a round or three and leaves the peers' phi high
/// meanwhile: shorter than both runs, so it raises nothing.
pub fn stalled_node(w: &Window<'_>, cfg: &MonitorConfig) -> Vec<Finding> {
    let c = &cfg.node;
    let mut out = Vec::new();
    let Some(last) = w.last() else {
        return out;
    };
    for node in w.node_ids() {
        let run = run_of(w, |i| w.present(i, node).is_none());
        let run_start = w.len() - run;
        // Rounds without a new answer: missing, or the last answer repeated.
        let silent = run_of(w, |i| w.get(i).node(node).is_none_or(|n| !n.answered()));
        let silent_start = w.len() - silent;
        // A finding held by a run of `len` rounds that ends now.
        let run_t = |sev, len: usize| Tracked {
            severity: sev,
            at: w.len() - 1,
            since_ms: w.get((w.len() - len).min(w.len() - 1)).unix_ms,
        };
        let missing_t = |sev| run_t(sev, run);
        // The peers' failure detectors count only once they have held
        // their view for longer than a restart takes.
        let peers_rounds = c.missing_rounds + 1;
        let down_run = run_of(w, |i| {
            let (_, _, down, reporting) = peers_view(w, i, node);
            reporting > 0 && down * 2 > reporting
        });
        let suspect_run = run_of(w, |i| {
            let (phi, suspect, down, reporting) = peers_view(w, i, node);
            phi.is_some_and(|p| p >= c.phi) || (reporting > 0 && (suspect + down) * 2 > reporting)
        });
        let secs = run_start
            .checked_sub(1)
            .map(|j| last.unix_ms.saturating_sub(w.get(j).unix_ms) as f64 / 1000.0)
            .unwrap_or(run as f64);
        let error = last
            .node(node)
            .and_then(|n| n.error.clone())
            .unwrap_or_else(|| "not in the round".into());
        let said_down = (down_run >= peers_rounds).then(|| run_t(Severity::Critical, down_run));
        // Reached but silent for the whole run — its last answer repeated
        // while recent, then unanswered: a paused or hung process, not a
        // dead one, whatever the peers' heartbeats conclude. Counted from
        // the last answer, so repeating it costs no detection time.
        let unanswered = run > 0
            && (silent_start..w.len()).all(|i| {
                w.get(i)
                    .node(node)
                    .is_some_and(|n| n.unanswered || n.repeated)
            });
        if unanswered && silent >= c.missing_rounds {
            let severity = if silent >= c.down_rounds {
                Severity::Critical
            } else {
                Severity::Warning
            };
            // Since the last answer arrived (a repeated sample keeps its time).
            let quiet = silent_start
                .checked_sub(1)
                .and_then(|j| w.get(j).node(node))
                .map(|n| last.unix_ms.saturating_sub(n.unix_ms) as f64 / 1000.0)
                .unwrap_or(silent as f64);
            out.push(finding(
                codes::NODE_STALLED,
                run_t(severity, silent),
                Subject::Node { node },
                Resource::Process,
                format!(
                    "node {node} is not responding: connected but no answer for {} s — \
                     paused (SIGSTOP), hung or swamped ({error})",
                    num(quiet)
                ),
                vec![Evidence::new(
                    "missing_rounds",
                    silent as f64,
                    None,
                    c.missing_rounds as f64,
                    "count",
                )],
                injected(w, node, Resource::Process, None),
            ));
            continue;
        }
        if run >= c.down_rounds || said_down.is_some() {
            let (phi, _, down, reporting) = peers_view(w, w.len() - 1, node);
            let t = said_down.unwrap_or_else(|| missing_t(Severity::Critical));
            let summary = if run >= c.down_rounds {
                format!(
                    "node {node} is down: no snapshot for {} s ({error})",
                    num(secs)
                )
            } else {
                format!(
                    "node {node} is down: {down} of {reporting} peers' failure detectors say so"
                )
            };
            let mut evidence = vec![Evidence::new(
                "missing_rounds",
                run as f64,
                None,
                c.down_rounds as f64,
                "count",
            )];
            if let Some(phi) = phi {
                evidence.push(Evidence::new("peer_phi", phi, None, c.phi, "phi"));
            }
            out.push(finding(
                codes::NODE_DOWN,
                t,
                Subject::Node { node },
                Resource::Availability,
                summary,
                evidence,
                injected(w, node, Resource::Availability, None),
            ));
            continue;
        }
        let stalled = if run >= c.missing_rounds {
            Some((
                missing_t(Severity::Warning),
                format!(
                    "node {node} has not answered for {} s: paused, stalled or cut off ({error})",
                    num(secs)
                ),
                Evidence::new(
                    "missing_rounds",
                    run as f64,
                    None,
                    c.missing_rounds as f64,
                    "count",
                ),
            ))
        } else if let Some(t) = track(w, cfg, |i| {
            stale(w, cfg, i, node).map(|_| Severity::Warning)
        }) {
            let age = stale(w, cfg, t.at, node).unwrap_or(0) as f64 / 1000.0;
            Some((
                t,
                format!(
                    "node {node} is stalled: its telemetry snapshot is {} s old while its peers' advance",
                    num(age)
                ),
                Evidence::new(
                    "snapshot_age_seconds",
                    age,
                    None,
                    c.stale_rounds as f64,
                    "seconds",
                ),
            ))
        } else if suspect_run >= peers_rounds {
            let t = run_t(Severity::Warning, suspect_run);
            let (phi, suspect, down, reporting) = peers_view(w, t.at, node);
            Some((
                t,
                format!(
                    "node {node} is suspected by its peers: phi {} ({} of {reporting} say suspect or down)",
                    num(phi.unwrap_or(0.0)),
                    suspect + down
                ),
                Evidence::new("peer_phi", phi.unwrap_or(0.0), None, c.phi, "phi"),
            ))
        } else {
            None
        };
        if let Some((t, summary, evidence)) = stalled {
            out.push(finding(
                codes::NODE_STALLED,
                t,
                Subject::Node { node },
                Resource::Process,
                summary,
                vec![evidence],
                injected(w, node, Resource::Process, None),
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
    fn given_a_node_that_stops_answering_when_watched_should_stall_then_go_down() {
        let samples = scenario(140, |r, n| {
            if n.node == 3 && (80..110).contains(&r) {
                make_missing(n);
            }
        });
        let rounds = per_round(&samples, stalled_node);
        let (first, cleared) = raised_and_cleared(&rounds, codes::NODE_STALLED, 80, 85);
        assert_eq!(first, 83, "fourth missing round");
        assert_eq!(cleared, 89, "node_down replaces it");
        let stalled = &rounds[83][0];
        assert_eq!(stalled.subject, Subject::Node { node: 3 });
        assert_eq!(stalled.since, samples[80].unix_ms);
        assert!(stalled.summary.contains("4 s"), "{}", stalled.summary);
        let down = &rounds[95][0];
        assert_eq!(down.code, codes::NODE_DOWN);
        assert_eq!(down.severity, Severity::Critical);
        assert_eq!(down.resource, Resource::Availability);
        assert_eq!(down.since, samples[80].unix_ms);
        assert!(rounds[110].is_empty(), "back: {:#?}", rounds[110]);
    }

    #[test]
    fn given_a_node_that_is_reached_but_silent_when_watched_should_call_it_stalled_not_down() {
        let samples = scenario(140, |r, n| {
            if n.node == 2 && (80..110).contains(&r) {
                *n = crate::sample::NodeSample::unanswered(
                    n.node,
                    n.unix_ms,
                    "did not answer in time",
                );
            }
            // Its peers' failure detectors give up on it meanwhile.
            if n.node != 2 && (82..110).contains(&r) {
                for p in &mut n.peers {
                    if p.node == 2 {
                        p.state = Some("down".into());
                        p.phi = Some(30.0);
                    }
                }
            }
        });
        let rounds = per_round(&samples, stalled_node);
        let (first, cleared) = raised_and_cleared(&rounds, codes::NODE_STALLED, 80, 110);
        assert_eq!(first, 83, "fourth silent round");
        assert!(cleared <= 111, "{cleared}");
        for r in &rounds[83..110] {
            assert!(r.iter().all(|f| f.code != codes::NODE_DOWN), "{r:#?}");
        }
        let f = &rounds[100][0];
        assert_eq!(f.resource, Resource::Process);
        assert_eq!(f.severity, Severity::Critical, "silent past down_rounds");
        assert!(f.summary.contains("paused"), "{}", f.summary);
    }

    #[test]
    fn given_a_paused_node_whose_last_answer_is_repeated_when_watched_should_stall_as_fast() {
        // The collector repeats the last answer for up to 3 rounds, then
        // calls the node unanswered: stalled at the fourth silent round,
        // as if it had been missing from the first.
        let mut samples = scenario(140, |r, n| {
            if n.node == 2 && (83..110).contains(&r) {
                *n = crate::sample::NodeSample::unanswered(n.node, n.unix_ms, "no answer for 3 s");
            }
        });
        answer_every(&mut samples, 2, 79..83, 100);
        let rounds = per_round(&samples, stalled_node);
        let (first, cleared) = raised_and_cleared(&rounds, codes::NODE_STALLED, 80, 110);
        assert_eq!(first, 83, "fourth round without an answer");
        assert!(cleared <= 111, "{cleared}");
        let f = &rounds[83][0];
        assert_eq!(f.since, samples[80].unix_ms);
        assert!(f.summary.contains("no answer for 4 s"), "{}", f.summary);
    }

    #[test]
    fn given_a_busy_node_that_answers_late_when_watched_should_find_nothing() {
        // Every third round brings an answer; the others repeat it, with
        // the same snapshot time.
        let mut samples = scenario(140, |_, _| {});
        answer_every(&mut samples, 3, 80..120, 3);
        // Nor anything else: a repeat is not a flat or frozen figure.
        let rounds = all_findings(&samples);
        for (r, f) in rounds.iter().enumerate() {
            assert!(f.is_empty(), "round {r}: {f:#?}");
        }
    }

    #[test]
    fn given_a_frozen_snapshot_when_watched_should_call_the_node_stalled() {
        let samples = scenario(130, |r, n| {
            if n.node == 2 && (80..100).contains(&r) {
                n.snapshot_unix_ms = T0 + 79_800;
            }
        });
        let rounds = per_round(&samples, stalled_node);
        let (first, cleared) = raised_and_cleared(&rounds, codes::NODE_STALLED, 80, 100);
        assert!(first <= 85 && cleared <= 115, "{first} {cleared}");
        assert!(rounds[90][0].summary.contains("snapshot"));
    }

    #[test]
    fn given_peers_that_say_down_when_watched_should_call_it_down() {
        let samples = scenario(130, |r, n| {
            if n.node != 1 && (80..100).contains(&r) {
                for p in &mut n.peers {
                    if p.node == 1 {
                        p.state = Some("down".into());
                        p.phi = Some(20.0);
                    }
                }
            }
        });
        let rounds = per_round(&samples, stalled_node);
        let (first, cleared) = raised_and_cleared(&rounds, codes::NODE_DOWN, 80, 100);
        assert!(first <= 84 && cleared <= 115, "{first} {cleared}");
        assert_eq!(rounds[90][0].evidence[1].observed, 20.0);
    }

    #[test]
    fn given_peers_that_keep_suspecting_a_node_when_watched_should_call_it_stalled() {
        let samples = scenario(130, |r, n| {
            if n.node != 2 && (80..100).contains(&r) {
                for p in &mut n.peers {
                    if p.node == 2 {
                        p.state = Some("suspect".into());
                        p.phi = Some(11.0);
                    }
                }
            }
        });
        let rounds = per_round(&samples, stalled_node);
        let (first, cleared) = raised_and_cleared(&rounds, codes::NODE_STALLED, 80, 100);
        assert_eq!((first, cleared), (84, 100));
        let f = &rounds[90][0];
        assert_eq!(f.evidence[0].observed, 11.0);
        assert!(f.summary.contains("phi 11 (2 of 2"), "{}", f.summary);
        assert_eq!(f.since, samples[80].unix_ms);
    }
}
