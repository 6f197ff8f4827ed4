//! `cairn bench` against a real node: a short steady run and a short sweep,
//! checking the JSON report, the interval log and the verification.
//! Rates are modest and runs last a few seconds, so this stays cheap on a
//! shared two-core machine.

mod support;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use support::{NodeProcess, run, run_ok};

fn read_json(path: &std::path::Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {path:?}"))?;
    serde_json::from_str(&text).context("the report is JSON")
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// The bench deletes its streams unless told to keep them.
fn no_bench_streams_left(url: &str) -> Result<()> {
    let out = run_ok(&["stream", "list", "--server", url], "")?;
    ensure!(
        !out.stdout.contains("bench-"),
        "left behind:\n{}",
        out.stdout
    );
    Ok(())
}

#[test]
fn bench_steady_writes_a_full_report_and_verifies_every_entry() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = NodeProcess::start(&dir.path().join("data"), &[])?;
    let json = dir.path().join("steady.json");
    let log = dir.path().join("steady.csv");
    let out = run_ok(
        &[
            "bench",
            "steady",
            "--server",
            &node.url,
            "--rate",
            "2000",
            "--duration",
            "2s",
            "--batch-size",
            "20",
            "--connections",
            "2",
            "--max-in-flight",
            "4",
            "--read-rate",
            "10",
            "--json",
            json.to_str().unwrap(),
            "--interval-log",
            log.to_str().unwrap(),
        ],
        "",
    )?;
    for line in ["cairn bench steady", "verification:", "-- OK", "bench CPU:"] {
        ensure!(out.stdout.contains(line), "{line:?} in:\n{}", out.stdout);
    }

    let r = read_json(&json)?;
    assert_eq!(r["format"], "cairn-bench/1");
    assert_eq!(r["scenario"], "steady");
    // The whole configuration is there, to compare runs.
    let c = &r["config"];
    assert_eq!(c["targets"][0], node.url.as_str());
    assert_eq!(
        (c["connections"].as_u64(), c["batch_size"].as_u64()),
        (Some(2), Some(20))
    );
    assert_eq!(f(&c["scenario"]["rate"]), 2000.0);
    assert_eq!(f(&c["scenario"]["duration_s"]), 2.0);
    assert_eq!(c["arrival"], "constant");

    // A constant schedule sends exactly rate × duration: 2 connections at
    // 50 requests/s of 20 entries for 2 s.
    let w = &r["writes"];
    assert_eq!(w["errors"], 0, "{w}");
    assert_eq!(w["unsent"], 0, "{w}");
    assert_eq!(w["requests"], 200, "{w}");
    assert_eq!(w["entries"], 4000, "{w}");
    // Response time includes service time for every request, so every
    // percentile of it is at least the service time's.
    for q in ["p50_ms", "p99_ms", "max_ms"] {
        ensure!(
            f(&w["response"][q]) >= f(&w["service"][q]),
            "{q}: response {} < service {}",
            w["response"][q],
            w["service"][q]
        );
    }
    ensure!(f(&w["response"]["p50_ms"]) > 0.0);
    let phases = r["phases"].as_array().context("phases")?;
    assert_eq!(phases.len(), 1);
    assert_eq!(phases[0]["name"], "steady");
    ensure!(
        (f(&phases[0]["achieved_entries_per_s"]) - 2000.0).abs() < 300.0,
        "{}",
        phases[0]
    );

    let reads = &r["reads"];
    let read_requests = reads["tail"]["requests"].as_u64().unwrap_or(0)
        + reads["query"]["requests"].as_u64().unwrap_or(0);
    ensure!(read_requests >= 15, "reads ran beside the writes: {reads}");

    let v = &r["verification"];
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(
        (v["acknowledged"].as_u64(), v["read_back"].as_u64()),
        (Some(4000), Some(4000))
    );
    assert_eq!(
        (v["missing"].as_u64(), v["duplicated"].as_u64()),
        (Some(0), Some(0))
    );

    ensure!(f(&r["bench_cpu"]["cores"]) > 0.0, "{}", r["bench_cpu"]);
    ensure!(f(&r["bench_cpu"]["cores_per_100k_entries_per_s"]) > 0.0);

    // One row per second, in the report and in the CSV written as it ran.
    let intervals = r["intervals"].as_array().context("intervals")?;
    ensure!(intervals.len() >= 2, "{intervals:?}");
    let csv = std::fs::read_to_string(&log)?;
    let lines: Vec<&str> = csv.lines().collect();
    ensure!(lines[0].starts_with("t_s,phase,"), "{csv}");
    assert_eq!(lines.len(), intervals.len() + 1, "{csv}");
    // The first second ran at the target rate.
    ensure!(f(&intervals[0]["entries_per_s"]) > 1000.0, "{csv}");
    assert_eq!(intervals[0]["phase"], "steady");

    no_bench_streams_left(&node.url)?;
    node.terminate()?;
    Ok(())
}

#[test]
fn bench_sweep_reports_steps_and_the_knee() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = NodeProcess::start(&dir.path().join("data"), &[])?;
    let json = dir.path().join("sweep.json");
    let out = run_ok(
        &[
            "bench",
            "sweep",
            "--server",
            &node.url,
            "--start-rate",
            "1000",
            "--factor",
            "2",
            "--step-duration",
            "1s",
            "--max-steps",
            "3",
            "--max-p99",
            "10s",
            "--batch-size",
            "20",
            "--connections",
            "2",
            "--arrival",
            "poisson",
            "--seed",
            "42",
            "--json",
            json.to_str().unwrap(),
        ],
        "",
    )?;
    ensure!(out.stdout.contains("sweep: knee at"), "{}", out.stdout);
    ensure!(out.stderr.contains("sweep step 1:"), "{}", out.stderr);

    let r = read_json(&json)?;
    assert_eq!(r["scenario"], "sweep");
    assert_eq!(r["config"]["arrival"], "poisson");
    let sweep = &r["sweep"];
    let steps = sweep["steps"].as_array().context("steps")?;
    ensure!(!steps.is_empty() && steps.len() <= 3, "{sweep}");
    ensure!(f(&steps[0]["figures"]["target_entries_per_s"]) == 1000.0);
    // Steps pass until the first that fails; the knee is the last pass.
    let passed: Vec<bool> = steps.iter().map(|s| s["passed"] == true).collect();
    let first_fail = passed.iter().position(|p| !p).unwrap_or(passed.len());
    ensure!(passed[first_fail..].len() <= 1, "{sweep}");
    ensure!(first_fail >= 1, "1,000 entries/s must pass: {sweep}");
    assert_eq!(sweep["knee"], steps[first_fail - 1]["figures"], "{sweep}");
    ensure!(!sweep["stop_reason"].as_str().unwrap_or("").is_empty());
    if first_fail == steps.len() {
        assert_eq!(sweep["stop_reason"], "reached --max-steps 3");
        assert_eq!(f(&sweep["knee"]["target_entries_per_s"]), 4000.0);
    }
    assert_eq!(r["phases"].as_array().map(Vec::len), Some(steps.len()));

    let v = &r["verification"];
    assert_eq!(v["ok"], true, "{v}");
    ensure!(v["acknowledged"].as_u64() > Some(0));
    assert_eq!(v["acknowledged"], v["read_back"], "{v}");
    assert_eq!(v["acknowledged"], r["writes"]["entries"]);

    no_bench_streams_left(&node.url)?;
    node.terminate()?;
    Ok(())
}

#[test]
fn bench_refuses_what_it_cannot_do() -> Result<()> {
    let out = run(
        &[
            "bench",
            "steady",
            "--rate",
            "10",
            "--api",
            "binary",
            "--server",
            "http://127.0.0.1:1",
        ],
        "",
    )?;
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    ensure!(
        out.stderr.contains("--api binary needs --tcp"),
        "{}",
        out.stderr
    );
    let out = run(
        &[
            "bench",
            "steady",
            "--rate",
            "0",
            "--server",
            "http://127.0.0.1:1",
        ],
        "",
    )?;
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    ensure!(
        out.stderr.contains("--rate must be above zero"),
        "{}",
        out.stderr
    );
    Ok(())
}
