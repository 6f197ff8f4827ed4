//! Slow disk and disk-full forecast.

use super::{Tracked, baseline, finding, injected, num, out_of_line, peer_median, track};
use crate::config::MonitorConfig;
use crate::finding::{Evidence, Finding, Resource, Severity, Subject, codes};
use crate::history::Window;

/// One node's disk figures at one round, against its peers and baseline.
#[derive(Debug, Clone, Copy)]
struct DiskMeasure {
    probe: Option<f64>,
    probe_peers: Option<f64>,
    probe_base: Option<f64>,
    fsync: Option<f64>,
    fsync_peers: Option<f64>,
    fsync_base: Option<f64>,
    score: f64,
    in_flight: Option<f64>,
    slow_probe: bool,
    slow_fsync: bool,
}

/// A node's baselines, computed once per window.
#[derive(Debug, Clone, Copy)]
struct DiskBases {
    load: Option<f64>,
    probe: Option<f64>,
    fsync: Option<f64>,
}

fn bases(w: &Window<'_>, cfg: &MonitorConfig, node: u64) -> DiskBases {
    DiskBases {
        load: baseline(w, cfg, node, |n| Some(n.entries_per_second)),
        probe: baseline(w, cfg, node, |n| n.disk_probe_p99_ms),
        fsync: baseline(w, cfg, node, |n| n.write.fsync_p99_ms),
    }
}

fn measure(
    w: &Window<'_>,
    cfg: &MonitorConfig,
    b: &DiskBases,
    i: usize,
    node: u64,
) -> Option<DiskMeasure> {
    let c = &cfg.slow_disk;
    let n = w.present(i, node)?;
    // Normalised by load: against its own past only when the node is not
    // doing much more work than it was then (a burst slows every fsync a
    // little; the peers' comparison still applies).
    let same_load = b
        .load
        .is_none_or(|l| n.entries_per_second <= cfg.overload.throughput_ratio * l + 10.0);
    let probe = n.disk_probe_p99_ms;
    let probe_peers = peer_median(w, i, node, |p| p.disk_probe_p99_ms);
    let probe_base = b.probe.filter(|_| same_load);
    let fsync = n.write.fsync_p99_ms;
    let fsync_peers = peer_median(w, i, node, |p| p.write.fsync_p99_ms);
    let fsync_base = b.fsync.filter(|_| same_load);
    Some(DiskMeasure {
        probe,
        probe_peers,
        probe_base,
        fsync,
        fsync_peers,
        fsync_base,
        // The slow score is absolute (probes over 50 ms): it speaks for
        // this node only when its peers' scores are not just as high.
        score: match peer_median(w, i, node, |p| Some(p.disk_slow_score)) {
            Some(peers) if peers >= c.slow_score => 1.0,
            _ => n.disk_slow_score,
        },
        in_flight: n.disk_probe_in_flight_ms,
        slow_probe: probe
            .is_some_and(|v| out_of_line(v, probe_peers, probe_base, c.ratio, c.floor_ms)),
        slow_fsync: fsync
            .is_some_and(|v| out_of_line(v, fsync_peers, fsync_base, c.ratio, c.floor_ms)),
    })
}

impl DiskMeasure {
    fn stuck(&self, cfg: &MonitorConfig) -> bool {
        self.in_flight
            .is_some_and(|ms| ms >= cfg.slow_disk.in_flight_ms)
    }

    fn severity(&self, cfg: &MonitorConfig) -> Option<Severity> {
        let c = &cfg.slow_disk;
        let scored = self.score >= c.slow_score;
        if !(self.slow_probe || self.slow_fsync || scored || self.stuck(cfg)) {
            return None;
        }
        let worst = [
            self.slow_probe.then_some(self.probe).flatten(),
            self.slow_fsync.then_some(self.fsync).flatten(),
        ]
        .into_iter()
        .flatten()
        .fold(0.0, f64::max);
        Some(
            if self.stuck(cfg) || worst >= c.critical_ms || self.score >= 80.0 {
                Severity::Critical
            } else {
                Severity::Warning
            },
        )
    }
}

/// Slow disk (`slow_disk`, resource `disk`, subject the node): the disk
/// probe p99 or the write path's fsync p99 at least `ratio` (4×) the
/// peers' median (the node's baseline when it has no peers) and above
/// `floor_ms` (5 ms); or the probe's slow score ≥ `slow_score` (20) while
/// its peers' is not; or a probe in flight for
/// `in_flight_ms` (1 s). Critical from `critical_ms` (200 ms), a stuck
/// probe, or a score ≥ 80.
pub fn slow_disk(w: &Window<'_>, cfg: &MonitorConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    for node in w.node_ids() {
        let b = bases(w, cfg, node);
        let Some(t) = track(w, cfg, |i| {
            measure(w, cfg, &b, i, node).and_then(|m| m.severity(cfg))
        }) else {
            continue;
        };
        let Some(m) = measure(w, cfg, &b, t.at, node) else {
            continue;
        };
        out.push(slow_disk_finding(w, cfg, node, t, &m));
    }
    out
}

fn slow_disk_finding(
    w: &Window<'_>,
    cfg: &MonitorConfig,
    node: u64,
    t: Tracked,
    m: &DiskMeasure,
) -> Finding {
    let c = &cfg.slow_disk;
    let mut evidence = Vec::new();
    let mut summary = None;
    let mut add = |metric: &str,
                   label: &str,
                   v: Option<f64>,
                   peers: Option<f64>,
                   base: Option<f64>,
                   slow: bool| {
        let Some(v) = v else { return };
        let reference = peers.or(base);
        evidence.push(Evidence::new(
            metric,
            v,
            reference,
            c.floor_ms.max(c.ratio * reference.unwrap_or(0.0)),
            "ms",
        ));
        if slow && summary.is_none() {
            let against = match (peers, base) {
                (Some(p), _) => format!("{} ms on its peers", num(p)),
                (None, Some(b)) => format!("{} ms before", num(b)),
                (None, None) => "its usual".to_string(),
            };
            summary = Some(format!(
                "node {node}'s disk is slow: {label} p99 {} ms vs {against}",
                num(v)
            ));
        }
    };
    add(
        "fsync_p99_ms",
        "fsync",
        m.fsync,
        m.fsync_peers,
        m.fsync_base,
        m.slow_fsync,
    );
    add(
        "disk_probe_p99_ms",
        "disk probe",
        m.probe,
        m.probe_peers,
        m.probe_base,
        m.slow_probe,
    );
    evidence.push(Evidence::new(
        "disk_slow_score",
        m.score,
        None,
        c.slow_score,
        "score",
    ));
    if let Some(ms) = m.in_flight {
        evidence.push(Evidence::new(
            "disk_probe_in_flight_ms",
            ms,
            None,
            c.in_flight_ms,
            "ms",
        ));
    }
    let summary = if m.stuck(cfg) {
        format!(
            "node {node}'s disk is stuck: a probe has been waiting {} ms",
            num(m.in_flight.unwrap_or(0.0))
        )
    } else {
        summary.unwrap_or_else(|| {
            format!(
                "node {node}'s disk is slow: probe slow score {} (1 is healthy)",
                num(m.score)
            )
        })
    };
    finding(
        codes::SLOW_DISK,
        t,
        Subject::Node { node },
        Resource::Disk,
        summary,
        evidence,
        injected(w, node, Resource::Disk, None),
    )
}

/// Bytes in a short human form.
pub(crate) fn bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = v;
    let mut u = 0;
    while v.abs() >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    format!("{} {}", num(v), UNITS[u])
}

/// Rounds over which the disk must still be filling for a forecast to
/// stand: so a finished bulk load clears within seconds, not when it has
/// left the whole forecast span.
const STILL_FILLING: usize = 10;

/// The short fit, beside the configured long one: a minute of rounds.
const SHORT_FIT: usize = 60;

/// Free bytes falling at this many bytes/s: the least-squares slope over
/// the last `span` rounds up to `i` of `free` (seconds, free bytes per
/// round), and the seconds the fit covers; `None` without 10 points.
pub(crate) fn decline_rate(
    free: &[Option<(f64, f64)>],
    span: usize,
    i: usize,
) -> Option<(f64, f64)> {
    let lo = (i + 1).saturating_sub(span);
    let pts = || free[lo..=i].iter().flatten();
    let k = pts().count();
    if k < 10 {
        return None;
    }
    let first = pts().next()?.0;
    let last = pts().last()?.0;
    let k = k as f64;
    let mx = pts().map(|p| p.0).sum::<f64>() / k;
    let my = pts().map(|p| p.1).sum::<f64>() / k;
    let sxx: f64 = pts().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    let sxy: f64 = pts().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx <= 0.0 {
        return None;
    }
    Some((-sxy / sxx, last - first))
}

/// Disk full now (`disk_full`, critical): free below `full_fraction` (1 %)
/// of the data dir's filesystem or below `reserve_bytes` (256 MiB).
/// Disk full soon (`disk_full_soon`): free bytes ÷ the net decline rate
/// (fitted over the last minute and over `forecast_samples`, 600 rounds,
/// the sooner trusted forecast winning, and still falling over the last 10) under `warning_hours` (24 h), critical under `critical_hours`
/// (1 h) — and no further ahead than `horizon_factor` (60) × the span the
/// fit covers, so a minute of data never forecasts a day. Subject the node, resource `disk`.
pub fn disk_full(w: &Window<'_>, cfg: &MonitorConfig) -> Vec<Finding> {
    let c = &cfg.disk_full;
    let mut out = Vec::new();
    for node in w.node_ids() {
        let full_now = |i: usize| {
            let n = w.present(i, node)?;
            (n.total_bytes > 0
                && ((n.free_bytes as f64) < c.full_fraction * n.total_bytes as f64
                    || n.free_bytes < c.reserve_bytes))
                .then_some(Severity::Critical)
        };
        if let Some(t) = track(w, cfg, full_now) {
            let n = w.present(t.at, node).expect("condition held there");
            out.push(finding(
                codes::DISK_FULL,
                t,
                Subject::Node { node },
                Resource::Disk,
                format!(
                    "node {node}'s disk is full: {} free of {}",
                    bytes(n.free_bytes as f64),
                    bytes(n.total_bytes as f64)
                ),
                vec![Evidence::new(
                    "free_bytes",
                    n.free_bytes as f64,
                    None,
                    (c.full_fraction * n.total_bytes as f64).max(c.reserve_bytes as f64),
                    "bytes",
                )],
                injected(w, node, Resource::Disk, None),
            ));
            continue;
        }
        // Seconds relative to the window's start keep the fit well
        // conditioned.
        let t0 = w.get(0).unix_ms;
        let free: Vec<Option<(f64, f64)>> = (0..w.len())
            .map(|j| {
                let n = w.present(j, node)?;
                (n.total_bytes > 0).then_some((
                    n.unix_ms.saturating_sub(t0) as f64 / 1000.0,
                    n.free_bytes as f64,
                ))
            })
            .collect();
        let hours_left = |i: usize| -> Option<(f64, f64, f64)> {
            let n = w.present(i, node)?;
            let (recent, _) = decline_rate(&free, STILL_FILLING, i)?;
            if recent <= 0.0 {
                return None;
            }
            // A short fit sees a fast fill at once, a long one a slow fill
            // reliably; each speaks only within its own horizon.
            [STILL_FILLING, SHORT_FIT, c.forecast_samples]
                .into_iter()
                .filter_map(|span| {
                    let (rate, span_secs) = decline_rate(&free, span, i)?;
                    let hours = n.free_bytes as f64 / rate / 3600.0;
                    (rate > 0.0 && hours * 3600.0 <= c.horizon_factor * span_secs).then_some((
                        hours,
                        rate,
                        n.free_bytes as f64,
                    ))
                })
                .min_by(|a, b| a.0.total_cmp(&b.0))
        };
        let soon = |i: usize| {
            let (h, _, _) = hours_left(i)?;
            if h < c.critical_hours {
                Some(Severity::Critical)
            } else if h < c.warning_hours {
                Some(Severity::Warning)
            } else {
                None
            }
        };
        if let Some(t) = track(w, cfg, soon)
            && let Some((hours, rate, free)) = hours_left(t.at)
        {
            out.push(finding(
                codes::DISK_FULL_SOON,
                t,
                Subject::Node { node },
                Resource::Disk,
                format!(
                    "node {node}'s disk will be full in {} h at {}/s ({} free)",
                    num(hours),
                    bytes(rate),
                    bytes(free)
                ),
                vec![
                    Evidence::new(
                        "hours_to_full",
                        hours,
                        None,
                        if t.severity == Severity::Critical {
                            c.critical_hours
                        } else {
                            c.warning_hours
                        },
                        "hours",
                    ),
                    Evidence::new("free_bytes_decline", rate, None, 0.0, "bytes_per_second"),
                    Evidence::new("free_bytes", free, None, 0.0, "bytes"),
                ],
                injected(w, node, Resource::Disk, None),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use crate::sample::FaultSample;

    #[test]
    fn given_a_slow_fsync_on_one_node_when_detected_should_name_it_with_numbers() {
        let samples = scenario(120, |r, n| {
            if n.node == 2 && (80..100).contains(&r) {
                n.write.fsync_p99_ms = Some(48.0);
                n.faults.push(FaultSample {
                    kind: "disk".into(),
                    peer: None,
                    detail: "fsync_delay_ms=50".into(),
                });
            }
        });
        let rounds = per_round(&samples, slow_disk);
        let (first, cleared) = raised_and_cleared(&rounds, codes::SLOW_DISK, 80, 100);
        assert!(first <= 84, "raised at {first}");
        assert!(cleared <= 115, "cleared at {cleared}");
        let f = &rounds[90][0];
        assert_eq!(f.subject, Subject::Node { node: 2 });
        assert_eq!(f.resource, Resource::Disk);
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(f.evidence[0].metric, "fsync_p99_ms");
        assert_eq!(f.evidence[0].observed, 48.0);
        assert_eq!(f.evidence[0].baseline, Some(1.0));
        assert_eq!(f.injected.as_deref(), Some("disk fsync_delay_ms=50"));
        assert!(
            f.summary
                .starts_with("node 2's disk is slow: fsync p99 48 ms vs 1 ms on its peers"),
            "{}",
            f.summary
        );
        assert_eq!(f.since, samples[80].unix_ms);
    }

    #[test]
    fn given_a_stuck_probe_when_detected_should_be_critical() {
        let samples = scenario(100, |r, n| {
            if n.node == 3 && r >= 90 {
                n.disk_probe_in_flight_ms = Some(2_500.0);
            }
        });
        let rounds = per_round(&samples, slow_disk);
        let f = &rounds[99][0];
        assert_eq!(f.subject, Subject::Node { node: 3 });
        assert_eq!(f.severity, Severity::Critical);
        assert!(f.summary.contains("stuck"), "{}", f.summary);
    }

    #[test]
    fn given_a_slow_probe_and_a_rising_score_when_detected_should_report_both() {
        let samples = scenario(130, |r, n| {
            if n.node == 1 && (80..100).contains(&r) {
                n.disk_probe_p99_ms = Some(30.0);
                n.disk_slow_score = 2f64.powi((r - 79).min(7) as i32).min(100.0);
            }
        });
        let rounds = per_round(&samples, slow_disk);
        let (first, cleared) = raised_and_cleared(&rounds, codes::SLOW_DISK, 80, 100);
        assert!(first <= 84 && cleared <= 115, "{first} {cleared}");
        assert_eq!(rounds[85][0].severity, Severity::Warning, "score 64");
        let f = &rounds[90][0];
        assert_eq!(f.subject, Subject::Node { node: 1 });
        assert_eq!(f.severity, Severity::Critical, "score 100");
        let probe = f
            .evidence
            .iter()
            .find(|e| e.metric == "disk_probe_p99_ms")
            .unwrap();
        assert_eq!((probe.observed, probe.baseline), (30.0, Some(0.8)));
        assert!(
            f.summary.contains("disk probe p99 30 ms vs 0.8 ms"),
            "{}",
            f.summary
        );
    }

    #[test]
    fn given_tiny_fsync_times_when_tripled_should_not_be_slow() {
        let samples = scenario(100, |r, n| {
            if n.node == 1 && r >= 70 {
                n.write.fsync_p99_ms = Some(3.0); // 3× the others but under the floor
            }
        });
        assert!(per_round(&samples, slow_disk).iter().all(|f| f.is_empty()));
    }

    #[test]
    fn given_every_disk_slow_alike_when_detected_should_name_no_node() {
        // Nodes sharing one disk that slows down for 20 s: probe and fsync
        // 40 ms everywhere, slow scores high everywhere.
        let samples = scenario(130, |r, n| {
            if (80..100).contains(&r) {
                n.disk_probe_p99_ms = Some(40.0);
                n.write.fsync_p99_ms = Some(40.0);
                n.disk_slow_score = 60.0;
            }
        });
        let rounds = per_round(&samples, slow_disk);
        for (r, found) in rounds.iter().enumerate().skip(80) {
            assert!(found.is_empty(), "round {r}: {found:#?}");
        }
    }

    #[test]
    fn given_a_shrinking_disk_when_forecast_should_warn_then_call_it_full() {
        // 100 GB total, 50 GB free, losing 0.4 GB/s from round 20.
        let samples = scenario(160, |r, n| {
            if n.node == 1 && r >= 20 {
                let gone = (r as u64 - 20) * 400_000_000;
                n.free_bytes = n.free_bytes.saturating_sub(gone).max(100_000_000);
            }
        });
        let rounds = per_round(&samples, disk_full);
        let early = rounds[30].iter().find(|f| f.code == codes::DISK_FULL_SOON);
        assert!(early.is_some(), "forecast within 10 s of the decline");
        let soon = rounds[100]
            .iter()
            .find(|f| f.code == codes::DISK_FULL_SOON)
            .unwrap();
        assert_eq!(soon.subject, Subject::Node { node: 1 });
        assert_eq!(soon.severity, Severity::Critical);
        let rate = soon.evidence[1].observed;
        assert!((rate - 4e8).abs() < 1e3, "rate {rate}");
        assert!((soon.evidence[0].observed - 18e9 / 4e8 / 3600.0).abs() < 1e-6);
        let full = rounds[150]
            .iter()
            .find(|f| f.code == codes::DISK_FULL)
            .unwrap();
        assert_eq!(full.severity, Severity::Critical);
        assert!(full.summary.contains("full"), "{}", full.summary);
    }

    #[test]
    fn given_a_bulk_load_that_stops_when_forecast_should_clear_within_15_rounds() {
        let samples = scenario(160, |r, n| {
            if n.node == 3 {
                let filling = r.clamp(80, 100) as u64 - 80;
                n.free_bytes -= filling * 200_000_000;
            }
        });
        let rounds = per_round(&samples, disk_full);
        let (first, cleared) = raised_and_cleared(&rounds, codes::DISK_FULL_SOON, 80, 100);
        // The shortest fit (10 rounds) needs about half its span declining
        // before it sees the rate, then the usual 3 of 4.
        assert!(first <= 88 && cleared <= 115, "{first} {cleared}");
        assert_eq!(rounds[90][0].subject, Subject::Node { node: 3 });
    }

    #[test]
    fn given_a_slowly_filling_disk_when_forecast_should_warn_only_once_the_fit_spans_enough() {
        // 50 GB free losing 2 MB/s: ~6.9 h left. A 100 s fit may speak for
        // 100 min only; 10 minutes of decline speak for 10 h → warning.
        let samples = scenario(700, |r, n| {
            if n.node == 2 {
                n.free_bytes -= r as u64 * 2_000_000;
            }
        });
        let rounds = per_round(&samples, disk_full);
        assert!(rounds[100].is_empty(), "{:#?}", rounds[100]);
        let f = &rounds[699][0];
        assert_eq!(f.code, codes::DISK_FULL_SOON);
        assert_eq!(f.severity, Severity::Warning);
        let hours = f.evidence[0].observed;
        assert!((6.0..8.0).contains(&hours), "{hours}");
    }
}
