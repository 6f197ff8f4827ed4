//! `cairn bench` against a real node and against a 3-node cluster: short
//! steady runs and sweeps, checking the JSON report, the interval log and
//! the verification (every acknowledged entry read back exactly once).
//! Rates are modest and runs last a few seconds, so this stays cheap on a
//! shared two-core machine.

mod support;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use support::cluster::TestCluster;
use support::{NodeProcess, Output, run, run_ok};

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
    // The rate is the bench's to measure, not this test's: on a loaded
    // 2-core machine a 2 s run ends with some requests still in flight.
    // It must be the right order and never above what was asked.
    let achieved = f(&phases[0]["achieved_entries_per_s"]);
    ensure!((1000.0..=2300.0).contains(&achieved), "{}", phases[0]);

    let reads = &r["reads"];
    let read_requests = reads["tail"]["requests"].as_u64().unwrap_or(0)
        + reads["query"]["requests"].as_u64().unwrap_or(0);
    ensure!(read_requests >= 15, "reads ran beside the writes: {reads}");

    verified(&r, 4000)?;

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

/// Runs `cairn ARGS` off the async runtime's threads and requires success.
async fn bench_ok(args: Vec<String>) -> Result<Output> {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_ok(&args, "")
    })
    .await?
}

/// The verification read back exactly the `acked` acknowledged entries.
fn verified(r: &Value, acked: u64) -> Result<()> {
    let v = &r["verification"];
    ensure!(v["ok"] == true, "{v}");
    ensure!(
        (v["acknowledged"].as_u64(), v["read_back"].as_u64()) == (Some(acked), Some(acked)),
        "{v}"
    );
    ensure!(
        (v["missing"].as_u64(), v["duplicated"].as_u64()) == (Some(0), Some(0)),
        "{v}"
    );
    Ok(())
}

/// Writes go through all three nodes over the binary protocol (each
/// forwarding to the partition leaders); every acknowledged entry is read
/// back from the replicated partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_steady_over_the_binary_protocol_against_a_3_node_cluster() -> Result<()> {
    let c = TestCluster::start_with_tcp(3).await?;
    let urls: Vec<String> = (0..3)
        .map(|i| c.url(i).context("up"))
        .collect::<Result<_>>()?;
    let tcps: Vec<String> = (0..3)
        .map(|i| c.tcp(i).context("--tcp"))
        .collect::<Result<_>>()?;
    let json = c.dir.path().join("steady.json");
    let args = [
        "bench",
        "steady",
        "--server",
        &urls.join(","),
        "--api",
        "binary",
        "--tcp",
        &tcps.join(","),
        "--rate",
        "2000",
        "--duration",
        "2s",
        "--batch-size",
        "20",
        "--connections",
        "3",
        "--max-in-flight",
        "4",
        "--json",
        json.to_str().context("utf-8 path")?,
    ];
    let out = bench_ok(args.iter().map(|s| s.to_string()).collect()).await?;
    ensure!(out.stdout.contains("-- OK"), "{}", out.stdout);

    let r = read_json(&json)?;
    assert_eq!(r["scenario"], "steady");
    let config = &r["config"];
    assert_eq!(config["api"], "binary");
    assert_eq!(
        config["targets"].as_array().map(Vec::len),
        Some(3),
        "{config}"
    );
    assert_eq!(
        config["tcp_targets"].as_array().map(Vec::len),
        Some(3),
        "{config}"
    );
    // 3 connections at 2000/3 entries/s in batches of 20 for 2 s.
    let w = &r["writes"];
    assert_eq!(w["errors"], 0, "{w}");
    assert_eq!(w["unsent"], 0, "{w}");
    let entries = w["entries"].as_u64().context("writes.entries")?;
    ensure!((3900..=4020).contains(&entries), "{w}");
    ensure!(
        f(&w["response"]["p99_ms"]) >= f(&w["service"]["p99_ms"]),
        "{w}"
    );
    verified(&r, entries)?;
    no_bench_streams_left(&urls[1])?;
    Ok(())
}

/// A sweep over HTTP through all three nodes: steps, a knee, and a clean
/// verification across every step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_sweep_against_a_3_node_cluster() -> Result<()> {
    let c = TestCluster::start(3).await?;
    let urls: Vec<String> = (0..3)
        .map(|i| c.url(i).context("up"))
        .collect::<Result<_>>()?;
    let json = c.dir.path().join("sweep.json");
    let args = [
        "bench",
        "sweep",
        "--server",
        &urls.join(","),
        "--start-rate",
        "1000",
        "--factor",
        "2",
        "--step-duration",
        "1s",
        "--max-steps",
        "2",
        "--max-p99",
        "10s",
        "--batch-size",
        "20",
        "--connections",
        "3",
        "--json",
        json.to_str().context("utf-8 path")?,
    ];
    let out = bench_ok(args.iter().map(|s| s.to_string()).collect()).await?;
    ensure!(out.stdout.contains("sweep: knee at"), "{}", out.stdout);

    let r = read_json(&json)?;
    assert_eq!(r["scenario"], "sweep");
    assert_eq!(r["config"]["targets"].as_array().map(Vec::len), Some(3));
    let sweep = &r["sweep"];
    let steps = sweep["steps"].as_array().context("steps")?;
    ensure!(!steps.is_empty() && steps.len() <= 2, "{sweep}");
    ensure!(
        steps[0]["passed"] == true,
        "1,000 entries/s must pass: {sweep}"
    );
    let last_pass = steps
        .iter()
        .rposition(|s| s["passed"] == true)
        .context("a pass")?;
    assert_eq!(sweep["knee"], steps[last_pass]["figures"], "{sweep}");
    ensure!(
        !sweep["stop_reason"].as_str().unwrap_or("").is_empty(),
        "{sweep}"
    );
    assert_eq!(r["phases"].as_array().map(Vec::len), Some(steps.len()));
    let entries = r["writes"]["entries"].as_u64().context("writes.entries")?;
    ensure!(entries > 0);
    verified(&r, entries)?;
    no_bench_streams_left(&urls[2])?;
    Ok(())
}
