//! Fault injection on a real node process: a disk fault slows the real
//! fsyncs and the disk probe and shows in the telemetry snapshot; an
//! `error_rate` refuses appends without storing anything; a CPU burn raises
//! the process's CPU use and stops on DELETE; `cairn fault` drives it all
//! by node id; bad bodies are 400 `{code, message}`.
//!
//! Timing checks are lower bounds only (a delay of 50 ms makes every sync
//! at least 50 ms) or waits with generous deadlines, never upper bounds.

mod support;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use support::{NodeProcess, TIMEOUT, run, run_ok};

fn http() -> reqwest::Client {
    cairn_client::http_builder()
        .timeout(TIMEOUT)
        .build()
        .expect("client")
}

async fn post(url: &str, path: &str, body: &str) -> Result<(u16, Value)> {
    let resp = http()
        .post(format!("{url}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

async fn get(url: &str, path: &str) -> Result<Value> {
    let resp = http().get(format!("{url}{path}")).send().await?;
    ensure!(resp.status() == 200, "GET {path}: {}", resp.status());
    Ok(resp.json().await?)
}

async fn delete(url: &str, path: &str) -> Result<()> {
    let resp = http().delete(format!("{url}{path}")).send().await?;
    ensure!(resp.status() == 204, "DELETE {path}: {}", resp.status());
    Ok(())
}

/// Appends `n` entries; returns the status and body.
async fn append(url: &str, n: usize) -> Result<(u16, Value)> {
    let entries: Vec<Value> = (0..n)
        .map(|i| json!({"source": "svc", "message": format!("entry {i}")}))
        .collect();
    post(
        url,
        "/v1/streams/f/entries",
        &serde_json::to_string(&entries)?,
    )
    .await
}

async fn end_offset(url: &str) -> Result<u64> {
    let s = get(url, "/v1/streams/f").await?;
    s["partitions"][0]["end_offset"]
        .as_u64()
        .context("partition end_offset")
}

/// Polls the snapshot until `done` accepts one (appending a little each
/// time, so write stages have samples), or fails at the deadline.
async fn wait_snapshot(
    url: &str,
    what: &str,
    append_each_time: bool,
    done: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if append_each_time {
            let (status, body) = append(url, 5).await?;
            ensure!(status == 200, "append under a disk delay: {status} {body}");
        }
        let s = get(url, "/v1/telemetry/snapshot").await?;
        if done(&s) {
            return Ok(s);
        }
        ensure!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last snapshot: {s}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn faults_of(s: &Value, kind: &str) -> Vec<Value> {
    s["faults"]
        .as_array()
        .map(|a| a.iter().filter(|f| f["kind"] == kind).cloned().collect())
        .unwrap_or_default()
}

fn disk_probe_p99_us(s: &Value) -> f64 {
    s["probes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["kind"] == "disk")
        .filter_map(|p| p["interval"]["p99_us"].as_f64())
        .fold(0.0, f64::max)
}

fn cpu_cores(s: &Value) -> Option<f64> {
    s["resources"]["process_cpu_cores"].as_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_cpu_and_network_faults_on_a_real_node() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = NodeProcess::start(&dir.path().join("n1"), &["--name", "faulty"])?;
    let url = node.url.clone();
    let (status, body) = post(&url, "/v1/streams", r#"{"name":"f","partitions":1}"#).await?;
    ensure!(status == 201, "create stream: {status} {body}");

    // --- Bad bodies: 400 with {code, message}.
    for (path, body) in [
        ("/v1/faults/disk", "{}"),
        ("/v1/faults/disk", r#"{"error_rate": 2}"#),
        ("/v1/faults/disk", r#"{"fsync_delay_ms": 50, "ttl_ms": 0}"#),
        ("/v1/faults/disk", r#"{"fsync_delay_ms": 999999}"#),
        ("/v1/faults/disk", r#"{"fsync_delay_ms": 5, "nope": 1}"#),
        ("/v1/faults/disk", "not json"),
        ("/v1/faults/cpu", r#"{"threads": 0, "duty_percent": 50}"#),
        ("/v1/faults/cpu", r#"{"threads": 65, "duty_percent": 50}"#),
        ("/v1/faults/cpu", r#"{"threads": 1, "duty_percent": 101}"#),
        ("/v1/faults/cpu", r#"{"threads": 1}"#),
        ("/v1/faults/network", r#"{"action": "explode"}"#),
    ] {
        let (status, err) = post(&url, path, body).await?;
        ensure!(status == 400, "{path} {body}: {status} {err}");
        ensure!(err["code"] == "bad_request", "{path} {body}: {err}");
        ensure!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{err}"
        );
    }

    // --- Disk: a 50 ms fsync delay slows real writes and the probe.
    let (status, view) = post(
        &url,
        "/v1/faults/disk",
        r#"{"fsync_delay_ms": 50, "ttl_ms": 120000}"#,
    )
    .await?;
    ensure!(status == 201, "{status} {view}");
    ensure!(view["fsync_delay_ms"] == 50 && view["expires_unix_ms"].is_u64());
    let (status, body) = append(&url, 10).await?;
    ensure!(status == 200, "append with a disk delay: {status} {body}");
    wait_snapshot(&url, "the disk fault in the snapshot", false, |s| {
        faults_of(s, "disk").iter().any(|f| {
            f["detail"]
                .as_str()
                .is_some_and(|d| d.contains("fsync_delay_ms=50"))
                && f["expires_unix_ms"].is_u64()
        })
    })
    .await?;
    wait_snapshot(&url, "a slow disk probe", false, |s| {
        disk_probe_p99_us(s) >= 40_000.0
    })
    .await?;
    wait_snapshot(&url, "a slow fsync write stage", true, |s| {
        s["write_stages"]["fsync"]["p99_us"]
            .as_f64()
            .is_some_and(|p| p >= 40_000.0)
    })
    .await?;
    delete(&url, "/v1/faults/disk").await?;
    ensure!(get(&url, "/v1/faults/disk").await?["fault"].is_null());
    wait_snapshot(&url, "the fault list to empty", false, |s| {
        s["faults"].as_array().is_some_and(|a| a.is_empty())
    })
    .await?;

    // --- Disk errors: refused before anything is stored, 503.
    let before = end_offset(&url).await?;
    let (status, _) = post(
        &url,
        "/v1/faults/disk",
        r#"{"error_rate": 1.0, "ttl_ms": 60000}"#,
    )
    .await?;
    ensure!(status == 201);
    let (status, err) = append(&url, 3).await?;
    ensure!(
        status == 503 && err["code"] == "unavailable",
        "{status} {err}"
    );
    ensure!(
        end_offset(&url).await? == before,
        "a refused append stored data"
    );
    delete(&url, "/v1/faults/disk").await?;
    let (status, body) = append(&url, 3).await?;
    ensure!(status == 200, "append after clearing: {status} {body}");
    ensure!(end_offset(&url).await? == before + 3);

    // --- CPU: one thread at 90 % shows in the process's CPU use.
    let (status, view) = post(
        &url,
        "/v1/faults/cpu",
        r#"{"threads": 1, "duty_percent": 90, "ttl_ms": 120000}"#,
    )
    .await?;
    ensure!(status == 201, "{status} {view}");
    ensure!(get(&url, "/v1/faults/cpu").await?["fault"]["threads"] == 1);
    wait_snapshot(&url, "the burn in the process CPU", false, |s| {
        cpu_cores(s).is_some_and(|c| c > 0.5) && !faults_of(s, "cpu").is_empty()
    })
    .await?;
    delete(&url, "/v1/faults/cpu").await?;
    ensure!(get(&url, "/v1/faults/cpu").await?["fault"].is_null());
    wait_snapshot(&url, "the process CPU to fall after DELETE", false, |s| {
        cpu_cores(s).is_some_and(|c| c < 0.3) && faults_of(s, "cpu").is_empty()
    })
    .await?;

    // --- Network: the list is plain JSON.
    let (status, _) = post(
        &url,
        "/v1/faults/network",
        r#"{"action": "delay", "delay_ms": 5, "peers": [2], "ttl_ms": 60000}"#,
    )
    .await?;
    ensure!(status == 201);
    let rules = get(&url, "/v1/faults/network").await?;
    let rule = &rules["rules"][0];
    ensure!(
        rule["action"] == "delay"
            && rule["delay_ms"] == 5
            && rule["peers"] == json!([2])
            && rule["direction"] == "both"
            && rule["expires_unix_ms"].is_u64(),
        "{rules}"
    );
    wait_snapshot(&url, "the network rule in the snapshot", false, |s| {
        faults_of(s, "network").iter().any(|f| f["peer"] == 2)
    })
    .await?;
    delete(&url, "/v1/faults/network").await?;

    // --- CLI: by node id, through GET /v1/cluster.
    let out = run_ok(
        &[
            "fault",
            "disk",
            "--server",
            &url,
            "--node",
            "1",
            "--fsync-delay-ms",
            "20",
            "--ttl-ms",
            "60000",
        ],
        "",
    )?;
    ensure!(out.stdout.contains("fsync_delay_ms=20"), "{}", out.stdout);
    let out = run_ok(&["fault", "list", "--server", &url, "--node", "1"], "")?;
    ensure!(
        out.stdout.contains("node 1: disk: fsync_delay_ms=20"),
        "{}",
        out.stdout
    );
    let out = run_ok(&["fault", "list", "--server", &url, "--json"], "")?;
    let listed: Value = serde_json::from_str(out.stdout.trim())?;
    ensure!(listed["disk"]["fsync_delay_ms"] == 20, "{listed}");
    run_ok(
        &[
            "fault",
            "cpu",
            "--server",
            &url,
            "--node",
            "1",
            "--threads",
            "1",
            "--duty-percent",
            "5",
        ],
        "",
    )?;
    run_ok(
        &[
            "fault",
            "network",
            "--server",
            &url,
            "--node",
            "1",
            "--action",
            "drop",
            "--peers",
            "3",
            "--probability",
            "0.5",
        ],
        "",
    )?;
    let out = run_ok(&["fault", "list", "--server", &url, "--node", "1"], "")?;
    ensure!(
        out.stdout.contains("cpu: threads=1 duty_percent=5")
            && out.stdout.contains("action=drop")
            && out.stdout.contains("peers=3"),
        "{}",
        out.stdout
    );
    run_ok(&["fault", "clear", "--server", &url, "--node", "1"], "")?;
    let out = run_ok(&["fault", "list", "--server", &url, "--node", "1"], "")?;
    ensure!(out.stdout.contains("no faults"), "{}", out.stdout);

    // CLI errors: exit code 1 and a clear message.
    let out = run(&["fault", "list", "--server", &url, "--node", "9"], "")?;
    ensure!(out.status.code() == Some(1), "{:?}", out.status);
    ensure!(
        out.stderr.contains("node 9 is not in the cluster"),
        "{}",
        out.stderr
    );
    let out = run(
        &["fault", "disk", "--server", &url, "--error-rate", "2"],
        "",
    )?;
    ensure!(out.status.code() == Some(1), "{:?}", out.status);
    ensure!(out.stderr.contains("bad_request"), "{}", out.stderr);

    node.terminate()?;
    Ok(())
}
