//! Report building and rendering. The Markdown and JSON of one scenario
//! are compared with golden files (`golden/`); `CAIRN_UPDATE_GOLDEN=1`
//! rewrites them after a deliberate change (then read the diff).

use super::*;
use crate::MonitorConfig;
use crate::detect::testkit::{T0, scenario};
use crate::finding::{Evidence, Finding, Resource, Severity, Subject, codes};
use crate::health::Health;
use crate::sample::FaultSample;

/// 260 rounds: node 2's disk slow from round 80 to 200; node 3's disk
/// filling at 1 MB/s throughout.
fn monitor_with_a_slow_disk() -> Monitor {
    let mut m = Monitor::new(MonitorConfig::default());
    for s in scenario(260, |r, n| {
        if n.node == 2 && (80..200).contains(&r) {
            n.write.fsync_p99_ms = Some(48.0);
            n.write.total_p99_ms = Some(60.0);
            n.faults.push(FaultSample {
                kind: "disk".into(),
                peer: None,
                detail: "fsync_delay_ms=50".into(),
            });
        }
        if n.node == 3 {
            n.free_bytes -= r as u64 * 1_000_000;
        }
    }) {
        m.observe(s);
    }
    m
}

fn input() -> ReportInput {
    ReportInput {
        id: "r1".into(),
        end_unix_ms: T0 + 259_000,
        window_ms: 300_000,
        actions: vec![ReportAction {
            at_unix_ms: T0 + 120_000,
            action: "move_leaders".into(),
            subject: "node 2".into(),
            outcome: "verified".into(),
            detail: "write p99 60 ms → 6 ms".into(),
        }],
    }
}

fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/report/golden")
        .join(name);
    if std::env::var_os("CAIRN_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path:?}: {e} (CAIRN_UPDATE_GOLDEN=1 writes it)"));
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{name} differs from the golden file at line {}:\n  golden: {:?}\n  actual: {:?}\n(CAIRN_UPDATE_GOLDEN=1 rewrites it)",
            line + 1,
            expected.lines().nth(line),
            actual.lines().nth(line)
        );
    }
}

#[test]
fn given_a_slow_disk_when_reported_should_name_it_with_its_history_and_match_the_golden_files() {
    let m = monitor_with_a_slow_disk();
    let r = build(&m, input());
    assert_eq!(r.window.resolution_s, 1);
    assert_eq!(r.window.rounds, 260);
    assert_eq!(r.verdict.now, Status::Green);
    assert_eq!(r.verdict.worst, Status::Yellow);
    assert!(r.verdict.yellow_s >= 100.0, "{:?}", r.verdict);
    let disk = r
        .findings
        .iter()
        .find(|f| f.code == codes::SLOW_DISK)
        .expect("the slow disk is in the report");
    assert_eq!(disk.subject, Subject::Node { node: 2 });
    assert_eq!(disk.injected.as_deref(), Some("disk fsync_delay_ms=50"));
    assert!(disk.ended_unix_ms.is_some());
    let n2 = r.nodes.iter().find(|n| n.node == 2).unwrap();
    assert_eq!(n2.write_p99_ms.unwrap().max, 60.0);
    assert_eq!(r.nodes[0].cpu_cores.unwrap().mean, 0.4, "rounded");
    assert_eq!(r.streams[0].stream, "app");
    assert_eq!(r.streams[0].entries_per_second.unwrap().mean, 2_700.0);
    let c3 = r.capacity.iter().find(|c| c.node == 3).unwrap();
    let decline = c3.free_bytes_decline_per_second.unwrap();
    assert!((decline - 1e6).abs() < 1.0, "{decline}");
    assert!(c3.hours_to_full.is_some());
    assert!(
        r.capacity[0].hours_to_full.is_none(),
        "node 1 is not filling"
    );
    assert_eq!(r.actions.len(), 1);
    assert!(
        r.alerts
            .iter()
            .any(|t| t.alert.labels["alertname"] == "CairnSlowDisk")
    );

    let json = render::json(&r);
    let back: Report = serde_json::from_str(&json).unwrap();
    assert!(
        render::json(&back) == json,
        "a saved report reads back the same"
    );
    golden("report.json", &json);
    golden("report.md", &render::markdown(&r));
}

#[test]
fn given_a_report_when_rendered_as_html_should_be_one_offline_page_with_charts() {
    let r = build(&monitor_with_a_slow_disk(), input());
    let page = render::html(&r);
    assert!(page.starts_with("<!doctype html>"));
    assert_eq!(page.matches("<svg").count(), 3);
    assert!(page.contains("<polyline"));
    assert!(page.contains("slow_disk"));
    assert!(!page.contains("<script"), "no script");
    assert!(
        !page.contains("src=") && !page.contains("href="),
        "nothing fetched"
    );
}

#[test]
fn given_a_day_of_history_when_reported_should_read_the_10_s_ring() {
    let mut m = Monitor::new(MonitorConfig::default());
    for s in scenario(1_000, |_, _| {}) {
        m.observe(s);
    }
    let r = build(
        &m,
        ReportInput {
            id: "day".into(),
            end_unix_ms: T0 + 999_000,
            window_ms: 86_400_000,
            actions: Vec::new(),
        },
    );
    assert_eq!(r.window.resolution_s, 10);
    assert_eq!(r.window.rounds, 99);
    assert!(r.series[0].points.len() <= CHART_POINTS);
    assert_eq!(r.verdict.green_s, 999.0, "green from the first round on");
}

#[test]
fn given_an_overload_episode_when_recorded_should_keep_the_most_it_completed_as_the_knee() {
    let mut log = EventLog::default();
    let f = |since| Finding {
        code: codes::OVERLOAD.into(),
        severity: Severity::Warning,
        subject: Subject::Node { node: 1 },
        resource: Resource::Load,
        summary: "node 1 is overloaded".into(),
        evidence: vec![Evidence::new(
            "rejections_per_second",
            5.0,
            None,
            0.0,
            "per_second",
        )],
        since,
        injected: None,
        explained_by: None,
    };
    let round = |rate: f64| {
        let mut s = scenario(1, |_, _| {}).remove(0);
        s.nodes[0].entries_per_second = rate;
        s
    };
    let h = Health::default();
    log.record(1_000, &h, &[f(1_000)], &round(5_000.0));
    log.record(2_000, &h, &[f(1_000)], &round(7_000.0));
    log.record(3_000, &h, &[f(1_000)], &round(6_000.0));
    assert_eq!(log.knees()[&1].entries_per_second, 7_000.0);
    log.record(4_000, &h, &[], &round(100.0));
    let eps = log.episodes(0, 10_000);
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].ended_unix_ms, Some(4_000));
    // A later episode replaces the knee.
    log.record(9_000, &h, &[f(9_000)], &round(4_000.0));
    assert_eq!(log.knees()[&1].entries_per_second, 4_000.0);
    assert_eq!(
        log.episodes(5_000, 10_000).len(),
        1,
        "the ended one is before"
    );
}

/// Not a timing assertion: prints what a report over a full day costs
/// (docs/PERFORMANCE.md). Run with
/// `cargo test --release -p cairn-monitor report_over_a_day -- --ignored --nocapture`.
#[test]
#[ignore]
fn report_over_a_day_cost() {
    use crate::detect::testkit::{NODES, healthy};
    let mut m = Monitor::new(MonitorConfig::default());
    let rounds = 86_400 + 900;
    for r in 0..rounds {
        // Straight into the rings: the detectors' cost is not the report's.
        m.history.push(ClusterSample {
            unix_ms: T0 + r as u64 * 1000,
            nodes: NODES.iter().map(|n| healthy(r, *n)).collect(),
        });
    }
    // A few observed rounds, so the event log has a verdict.
    for r in rounds..rounds + 5 {
        m.observe(ClusterSample {
            unix_ms: T0 + r as u64 * 1000,
            nodes: NODES.iter().map(|n| healthy(r, *n)).collect(),
        });
    }
    let last = m.history.latest().cloned().unwrap();
    let t = std::time::Instant::now();
    let r = build(
        &m,
        ReportInput {
            id: "day".into(),
            end_unix_ms: last.unix_ms,
            window_ms: 86_400_000,
            actions: Vec::new(),
        },
    );
    let built = t.elapsed();
    let t = std::time::Instant::now();
    let json = render::json(&r);
    let j = t.elapsed();
    let t = std::time::Instant::now();
    let md = render::markdown(&r);
    let md_t = t.elapsed();
    let t = std::time::Instant::now();
    let html = render::html(&r);
    let h = t.elapsed();
    println!(
        "24 h report over {} rounds at {} s (3 nodes): build {built:?}, json {j:?} ({} KB), md {md_t:?} ({} KB), html {h:?} ({} KB)",
        r.window.rounds,
        r.window.resolution_s,
        json.len() / 1000,
        md.len() / 1000,
        html.len() / 1000
    );
    assert_eq!(r.window.resolution_s, 10);
    assert!(r.window.rounds >= 8_600, "{}", r.window.rounds);
}
