//! Telemetry of a real node: `/metrics` counts exactly what was written,
//! stage histograms fill, `promtool` accepts the exposition, and a real
//! Prometheus server scraping the node sees a positive ingest rate.

mod support;

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use support::{NodeProcess, TIMEOUT};

fn client() -> reqwest::Client {
    cairn_client::http_builder()
        .timeout(TIMEOUT)
        .build()
        .expect("client")
}

async fn create_stream(url: &str, name: &str, partitions: u32) -> Result<()> {
    let resp = client()
        .post(format!("{url}/v1/streams"))
        .json(&json!({"name": name, "partitions": partitions}))
        .send()
        .await?;
    ensure!(
        resp.status() == 201,
        "create stream: {}",
        resp.text().await?
    );
    Ok(())
}

/// Appends `n` entries as NDJSON; returns the HTTP status.
async fn append(url: &str, stream: &str, first: usize, n: usize) -> Result<u16> {
    let body: String = (first..first + n)
        .map(|i| {
            format!(
                "{{\"source\":\"svc-{}\",\"message\":\"request {i} served\"}}\n",
                i % 7
            )
        })
        .collect();
    let resp = client()
        .post(format!("{url}/v1/streams/{stream}/entries"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await?;
    Ok(resp.status().as_u16())
}

/// How many of `partitions` partitions the sources `append` writes
/// (`svc-0`..`svc-6`) hash to: the partition batches each request makes.
fn partitions_of_sources(partitions: u32) -> usize {
    let mut seen: Vec<u32> = (0..7)
        .map(|i| cairn_types::partition_for_source(&format!("svc-{i}"), partitions))
        .collect();
    seen.sort_unstable();
    seen.dedup();
    seen.len()
}

/// Appends one entry from `source` (so the request writes one partition).
async fn append_one(url: &str, stream: &str, source: &str, i: usize) -> Result<u16> {
    let resp = client()
        .post(format!("{url}/v1/streams/{stream}/entries"))
        .header("content-type", "application/x-ndjson")
        .body(format!(
            "{{\"source\":\"{source}\",\"message\":\"request {i}\"}}\n"
        ))
        .send()
        .await?;
    Ok(resp.status().as_u16())
}

/// Count samples of every write stage.
fn stage_counts(m: &HashMap<String, f64>) -> Result<HashMap<&'static str, f64>> {
    WRITE_STAGES
        .iter()
        .map(|&stage| {
            let n = metric(
                m,
                &format!("cairn_write_stage_seconds_count{{stage=\"{stage}\"}}"),
            )?;
            Ok((stage, n))
        })
        .collect()
}

const WRITE_STAGES: [&str; 9] = [
    "decode",
    "queue",
    "linger",
    "append",
    "fsync",
    "replicate",
    "commit",
    "respond",
    "total",
];

/// Sum of `name{...}` over the series whose labels contain `label`.
fn sum_where(m: &HashMap<String, f64>, name: &str, label: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(&format!("{name}{{")) && k.contains(label))
        .map(|(_, v)| v)
        .sum()
}

/// Parses Prometheus text format into `name{labels}` → value.
fn parse_metrics(text: &str) -> Result<HashMap<String, f64>> {
    let mut out = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (key, value) = line
            .rsplit_once(' ')
            .with_context(|| format!("bad line {line:?}"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .with_context(|| format!("bad value in {line:?}"))?,
        };
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

async fn scrape(url: &str) -> Result<String> {
    let resp = client().get(format!("{url}/metrics")).send().await?;
    ensure!(resp.status() == 200);
    let content_type = resp.headers()["content-type"].to_str()?.to_string();
    ensure!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "content type {content_type}"
    );
    Ok(resp.text().await?)
}

fn metric(m: &HashMap<String, f64>, key: &str) -> Result<f64> {
    m.get(key)
        .copied()
        .with_context(|| format!("metric {key} missing"))
}

#[tokio::test]
async fn metrics_count_exactly_what_was_written_and_promtool_accepts_them() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = NodeProcess::start(dir.path(), &["--name", "telemetry-test"])?;
    create_stream(&node.url, "app", 4).await?;
    for r in 0..10 {
        ensure!(append(&node.url, "app", r * 200, 200).await? == 200);
    }
    // One rejected body and one unknown stream: counted as rejections.
    let bad = client()
        .post(format!("{}/v1/streams/app/entries", node.url))
        .body("{\"source\":\"a\",\"message\":\"m\",\"level\":\"LOUD\"}\n")
        .send()
        .await?;
    ensure!(bad.status() == 400);
    ensure!(append(&node.url, "missing", 0, 1).await? == 404);
    let read = client()
        .get(format!(
            "{}/v1/streams/app/partitions/0/entries?limit=5",
            node.url
        ))
        .send()
        .await?;
    ensure!(read.status() == 200);

    let text = scrape(&node.url).await?;
    let m = parse_metrics(&text)?;
    ensure!(metric(&m, "cairn_ingest_entries_total{api=\"http\"}")? == 2000.0);
    ensure!(metric(&m, "cairn_stream_entries_total{stream=\"app\"}")? == 2000.0);
    ensure!(metric(&m, "cairn_stream_append_requests_total{stream=\"app\"}")? == 10.0);
    ensure!(
        metric(
            &m,
            "cairn_requests_total{api=\"http\",operation=\"append\"}"
        )? == 12.0
    );
    ensure!(metric(&m, "cairn_requests_total{api=\"http\",operation=\"read\"}")? == 1.0);
    ensure!(metric(&m, "cairn_rejections_total{reason=\"invalid_entry\"}")? == 1.0);
    ensure!(metric(&m, "cairn_rejections_total{reason=\"stream_not_found\"}")? == 1.0);
    ensure!(metric(&m, "cairn_ingest_bytes_total{api=\"http\"}")? > 2000.0 * 20.0);
    // Every stage counts per request: each successful append once in the
    // request stages, and once per partition it wrote to in the partition
    // stages (its entries come from 7 sources, spread over the 4 partitions).
    for stage in ["total", "decode", "commit", "respond"] {
        ensure!(
            metric(
                &m,
                &format!("cairn_write_stage_seconds_count{{stage=\"{stage}\"}}")
            )? == 10.0,
            "{stage}"
        );
    }
    let per_request = 10.0 * partitions_of_sources(4) as f64;
    for stage in ["linger", "queue", "append", "fsync", "replicate"] {
        let n = metric(
            &m,
            &format!("cairn_write_stage_seconds_count{{stage=\"{stage}\"}}"),
        )?;
        ensure!(n == per_request, "{stage}: {n}, expected {per_request}");
        let le_inf = metric(
            &m,
            &format!("cairn_write_stage_seconds_bucket{{stage=\"{stage}\",le=\"+Inf\"}}"),
        )?;
        ensure!(le_inf == n, "{stage}: +Inf bucket {le_inf} != count {n}");
    }
    ensure!(metric(&m, "cairn_read_stage_seconds_count{stage=\"disk_read\"}")? == 1.0);
    ensure!(metric(&m, "cairn_process_resident_memory_bytes")? > 0.0);
    ensure!(metric(&m, "cairn_telemetry_memory_bytes")? > 0.0);
    let probe_key = format!(
        "cairn_slow_score{{kind=\"disk\",target=\"{}\"}}",
        dir.path().display()
    );
    ensure!(metric(&m, &probe_key)? >= 1.0);

    match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("piped")
                .write_all(text.as_bytes())?;
            let out = child.wait_with_output()?;
            ensure!(
                out.status.success(),
                "promtool rejected /metrics:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) if std::env::var_os("CI").is_some() => bail!("promtool is required in CI: {e}"),
        Err(e) => {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: the promtool check (apt-get install prometheus; required when CI=true): {e}"
            );
        }
    }

    // The JSON snapshot summarises an interval once one has passed.
    let deadline = Instant::now() + TIMEOUT;
    let snapshot: Value = loop {
        let resp = client()
            .get(format!("{}/v1/telemetry/snapshot", node.url))
            .send()
            .await?;
        if resp.status() == 200 {
            let s: Value = resp.json().await?;
            if !s["resources"].is_null() {
                break s;
            }
        }
        ensure!(Instant::now() < deadline, "no telemetry snapshot");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(snapshot["node"] == "telemetry-test");
    ensure!(snapshot["probes"][0]["kind"] == "disk");
    ensure!(
        snapshot["resources"]["memory_total_bytes"]
            .as_u64()
            .unwrap_or(0)
            > 0
    );

    // Switching stage timing off stops the histograms but not the counters.
    let off = client()
        .put(format!("{}/v1/telemetry/stage-timing", node.url))
        .body(r#"{"enabled":false}"#)
        .send()
        .await?;
    ensure!(off.status() == 200);
    ensure!(append(&node.url, "app", 5000, 100).await? == 200);
    let m = parse_metrics(&scrape(&node.url).await?)?;
    ensure!(metric(&m, "cairn_write_stage_seconds_count{stage=\"total\"}")? == 10.0);
    ensure!(metric(&m, "cairn_ingest_entries_total{api=\"http\"}")? == 2100.0);
    ensure!(metric(&m, "cairn_telemetry_stage_timing_enabled")? == 0.0);

    node.terminate()?;
    Ok(())
}

/// The unit of every write stage is the request, also when requests share
/// Raft batches: a burst of one-partition requests against a slow disk is
/// merged into far fewer batches, yet each stage counts each request once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_stage_counts_each_request_once_when_batches_merge() -> Result<()> {
    const REQUESTS: usize = 120;
    let dir = tempfile::tempdir()?;
    let node = NodeProcess::start(dir.path(), &["--name", "per-request"])?;
    create_stream(&node.url, "merge", 2).await?;
    // One write per partition first, so both groups are up and the
    // baseline below includes their startup entries.
    for source in ["a", "b", "c", "d"] {
        ensure!(append_one(&node.url, "merge", source, 0).await? == 200);
    }
    // A slow fsync keeps proposals in flight, so the burst has to merge.
    let fault = client()
        .post(format!("{}/v1/faults/disk", node.url))
        .header("content-type", "application/json")
        .body(r#"{"fsync_delay_ms": 20, "ttl_ms": 60000}"#)
        .send()
        .await?;
    ensure!(
        fault.status() == 201,
        "inject fsync delay: {}",
        fault.status()
    );
    let before = parse_metrics(&scrape(&node.url).await?)?;
    let burst: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let url = node.url.clone();
            tokio::spawn(
                async move { append_one(&url, "merge", &format!("src-{}", i % 10), i).await },
            )
        })
        .collect();
    for r in burst {
        ensure!(r.await?? == 200);
    }
    // Every stage has recorded by the time its request is answered (one
    // node: the storage stages before commit, respond and total before
    // the response leaves).
    let after = parse_metrics(&scrape(&node.url).await?)?;
    let (b, a) = (stage_counts(&before)?, stage_counts(&after)?);
    for stage in WRITE_STAGES {
        let n = a[stage] - b[stage];
        ensure!(
            n == REQUESTS as f64,
            "{stage}: {n} samples for {REQUESTS} requests"
        );
    }
    // ... while the Raft batches were fewer: counted per batch, the
    // storage stages would have shown this many samples.
    let index = "cairn_partition_commit_index";
    let mut batches = 0.0;
    for _ in 0..50 {
        let m = parse_metrics(&scrape(&node.url).await?)?;
        let now = sum_where(&m, index, "stream=\"merge\"")
            - sum_where(&before, index, "stream=\"merge\"");
        if now == batches && now > 0.0 {
            break;
        }
        batches = now;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(
        batches > 0.0 && batches < REQUESTS as f64 / 2.0,
        "{batches} Raft batches for {REQUESTS} requests: nothing merged"
    );
    node.terminate()?;
    Ok(())
}

/// A free loopback port (released before use; a race is possible but rare).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Three nodes, written through each: a real Prometheus scraping all of
/// them sees a positive ingest rate on every node, and the partition
/// leaders export replication lag for their followers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_sees_a_positive_ingest_rate_on_every_node() -> Result<()> {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        if std::env::var_os("CI").is_some() {
            bail!("prometheus is required in CI (apt-get install prometheus)");
        }
        {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: the real-Prometheus test (apt-get install prometheus; required when CI=true)"
            );
        }
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let cluster = support::cluster::TestCluster::start(3).await?;
    let urls: Vec<String> = (0..3).map(|i| cluster.url(i).expect("up")).collect();
    create_stream(&urls[0], "app", 2).await?;
    cluster.wait_groups("app", 2).await?;
    let targets: Vec<String> = urls
        .iter()
        .map(|u| u.trim_start_matches("http://").to_string())
        .collect();

    let port = free_port()?;
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: cairn\n    static_configs:\n      - targets: ['{}']\n",
            targets.join("', '")
        ),
    )?;
    let prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start prometheus")?;
    let _prometheus = KillOnDrop(prometheus);

    // Write steadily while Prometheus scrapes, until it reports a rate.
    let promql = "rate(cairn_ingest_entries_total{api=\"http\"}[5s])";
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let query = format!("http://127.0.0.1:{port}/api/v1/query?query={encoded}");
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut written = 0;
    loop {
        for url in &urls {
            ensure!(append(url, "app", written, 50).await? == 200);
            written += 50;
        }
        let resp = client().get(&query).send().await;
        if let Ok(resp) = resp
            && let Ok(body) = resp.json::<Value>().await
            && let Some(results) = body["data"]["result"].as_array()
        {
            let rates: Vec<(String, f64)> = results
                .iter()
                .filter_map(|r| {
                    let instance = r["metric"]["instance"].as_str()?.to_string();
                    let value = r["value"][1].as_str()?.parse().ok()?;
                    Some((instance, value))
                })
                .collect();
            if targets
                .iter()
                .all(|t| rates.iter().any(|(i, v)| i == t && *v > 0.0))
            {
                eprintln!("prometheus rate(cairn_ingest_entries_total) = {rates:?}");
                break;
            }
        }
        ensure!(
            Instant::now() < deadline,
            "prometheus never saw a positive rate for every one of {targets:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Replication as the nodes export it: both partitions led somewhere,
    // and each leader reports lag for its two followers.
    let mut led = 0.0;
    let mut lag_series = 0;
    for url in &urls {
        let text = scrape(url).await?;
        let m = parse_metrics(&text)?;
        led += metric(&m, "cairn_partitions{role=\"led\"}")?;
        // Every node pings both peers every 100 ms.
        let probed = m
            .iter()
            .filter(|(k, v)| k.starts_with("cairn_peer_probe_seconds_count{") && **v > 0.0)
            .count();
        ensure!(probed == 2, "{url}: peers probed: {probed}");
        lag_series += text
            .lines()
            .filter(|l| l.starts_with("cairn_replication_lag_entries{"))
            .count();
    }
    ensure!(led == 2.0, "partitions led across the cluster: {led}");
    ensure!(lag_series == 4, "replication lag series: {lag_series}");
    Ok(())
}

/// In a 3-node cluster every write stage counts per request, each on the
/// node where it ran: `decode`..`total` on the node a request came in
/// through, `linger` and `replicate` on the partition's leader (also for
/// requests merged by a forwarding node), `queue`, `append` and `fsync` on
/// all three replicas (followers count the requests the leader's batch
/// carries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_counts_every_write_stage_per_request() -> Result<()> {
    let cluster = support::cluster::TestCluster::start(3).await?;
    let urls: Vec<String> = (0..3).map(|i| cluster.url(i).expect("up")).collect();
    create_stream(&urls[0], "app", 2).await?;
    cluster.wait_groups("app", 2).await?;
    // Concurrent, so forwarding nodes merge requests before sending them on.
    let mut writes = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        for round in 0..4 {
            let url = url.clone();
            writes.push(tokio::spawn(async move {
                append(&url, "app", (i * 4 + round) * 20, 20).await
            }));
        }
    }
    for w in writes {
        ensure!(w.await?? == 200);
    }
    // 12 requests of entries for both partitions: one sample each per
    // partition in the partition stages.
    let per_request = 12.0 * partitions_of_sources(2) as f64;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut totals: HashMap<&str, f64> = HashMap::new();
        let mut appended = Vec::new();
        for url in &urls {
            let counts = stage_counts(&parse_metrics(&scrape(url).await?)?)?;
            for (stage, n) in &counts {
                *totals.entry(stage).or_default() += n;
            }
            appended.push((counts["queue"], counts["append"], counts["fsync"]));
        }
        ensure!(totals["total"] == 12.0, "{totals:?}");
        ensure!(totals["commit"] == 12.0, "{totals:?}");
        ensure!(totals["decode"] == 12.0, "{totals:?}");
        ensure!(totals["linger"] == per_request, "{totals:?}");
        ensure!(totals["replicate"] == per_request, "{totals:?}");
        // Every node replicates both partitions; a follower may still be
        // appending the last batch when the client has its answer.
        let all = (per_request, per_request, per_request);
        if appended.iter().all(|a| *a == all) {
            break;
        }
        ensure!(
            appended
                .iter()
                .all(|a| a.0 <= per_request && a.1 <= per_request),
            "more storage samples than requests: {appended:?}, expected {per_request}"
        );
        ensure!(
            Instant::now() < deadline,
            "storage stages per node {appended:?}, expected {per_request} each"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
