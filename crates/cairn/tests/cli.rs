//! End-to-end tests of the real `cairn` binary: a node on loopback (port 0)
//! with a temporary data directory, driven over HTTP and through the CLI.

mod support;

use std::collections::BTreeMap;

use anyhow::{Context, Result, ensure};
use cairn_types::{Level, partition_for_source};
use serde_json::{Value, json};
use support::{ChildGuard, NodeProcess, TIMEOUT, run, run_ok};

/// One HTTP request with a bounded wait; answers (status, JSON body or Null).
async fn http(
    method: reqwest::Method,
    url: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Result<(u16, Value)> {
    let mut req = cairn_client::http_client()
        .request(method, url)
        .timeout(TIMEOUT)
        .body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req.send().await.with_context(|| format!("request {url}"))?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await?;
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .with_context(|| format!("not JSON: {}", String::from_utf8_lossy(&bytes)))?
    };
    Ok((status, value))
}

async fn get(url: &str) -> Result<(u16, Value)> {
    http(reqwest::Method::GET, url, None, Vec::new()).await
}

async fn post(
    url: &str,
    content_type: Option<&str>,
    body: impl Into<Vec<u8>>,
) -> Result<(u16, Value)> {
    http(reqwest::Method::POST, url, content_type, body.into()).await
}

/// Every entry of every partition, read through `cairn read`, keyed by
/// (partition, offset).
fn read_all(url: &str, stream: &str, partitions: u32) -> Result<BTreeMap<(u32, u64), Value>> {
    let mut all = BTreeMap::new();
    for p in 0..partitions {
        let out = run_ok(
            &[
                "read",
                "--server",
                url,
                "--stream",
                stream,
                "--partition",
                &p.to_string(),
                "--limit",
                "100000",
            ],
            "",
        )?;
        for (i, e) in out.json_lines()?.into_iter().enumerate() {
            let offset = e["offset"].as_u64().context("offset")?;
            ensure!(
                offset == i as u64,
                "partition {p}: offsets are contiguous from 0"
            );
            let source = e["source"].as_str().context("source")?;
            ensure!(
                partition_for_source(source, partitions) == p,
                "{source} is in partition {p}"
            );
            all.insert((p, offset), e);
        }
    }
    Ok(all)
}

/// Runs a `cairn query` and returns its entries.
fn query(url: &str, args: &[&str]) -> Result<Vec<Value>> {
    let mut full = vec!["query", "--server", url, "--stream", "app"];
    full.extend_from_slice(args);
    run_ok(&full, "")?.json_lines()
}

fn timestamps(entries: &[Value]) -> Vec<i64> {
    entries
        .iter()
        .map(|e| e["timestamp"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn produce_read_query_restart_and_delete() -> Result<()> {
    let data = tempfile::tempdir()?;
    let node = NodeProcess::start(data.path(), &[])?;
    let url = node.url.clone();

    let out = run_ok(
        &[
            "stream",
            "create",
            "app",
            "--partitions",
            "3",
            "--server",
            &url,
        ],
        "",
    )?;
    assert!(
        out.stdout.contains("created stream app (3 partitions"),
        "{}",
        out.stdout
    );
    let out = run_ok(&["stream", "list", "--server", &url], "")?;
    assert!(
        out.stdout.lines().any(|l| l.starts_with("app ")),
        "{}",
        out.stdout
    );

    // Entries with explicit timestamps, to check the query's merge order:
    // (timestamp, level, source, message).
    let mut expected: Vec<(i64, Level, String, String)> = Vec::new();

    // A JSON array.
    let levels = [Level::Info, Level::Warn, Level::Error, Level::Debug];
    let array: Vec<Value> = (0..12)
        .map(|i| {
            let (ts, level) = (1_000_000 + i * 10, levels[i as usize % 4]);
            let (source, message) = (format!("s{}", i % 6), format!("json {i}"));
            expected.push((ts, level, source.clone(), message.clone()));
            json!({"timestamp": ts, "level": level, "source": source, "message": message,
                   "attributes": {"i": i.to_string()}})
        })
        .collect();
    let (status, body) = post(
        &format!("{url}/v1/streams/app/entries"),
        Some("application/json"),
        serde_json::to_vec(&array)?,
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["appended"], 12);
    let counts: u64 = body["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counts, 12);

    // NDJSON, interleaved in time with the array.
    let mut ndjson = String::new();
    for i in 0..6 {
        let (ts, level) = (
            1_000_005 + i * 10,
            if i % 2 == 0 { Level::Warn } else { Level::Info },
        );
        let (source, message) = (format!("n{}", i % 3), format!("ndjson {i} disk"));
        expected.push((ts, level, source.clone(), message.clone()));
        ndjson.push_str(
            &json!({"timestamp": ts, "level": level, "source": source, "message": message})
                .to_string(),
        );
        ndjson.push('\n');
    }
    let (status, body) = post(
        &format!("{url}/v1/streams/app/entries"),
        Some("application/x-ndjson"),
        ndjson,
    )
    .await?;
    assert_eq!(
        (status, body["appended"].as_u64()),
        (200, Some(6)),
        "{body}"
    );

    // `cairn produce` from stdin: plain lines and JSON lines.
    let stdin = "plain one\n{\"source\":\"api\",\"message\":\"json line\",\"timestamp\":1000001}\n\nplain two\n";
    expected.push((1_000_001, Level::Warn, "api".into(), "json line".into()));
    let out = run_ok(
        &[
            "produce", "--server", &url, "--stream", "app", "--source", "cli", "--level", "warn",
        ],
        stdin,
    )?;
    assert!(
        out.stderr.contains("produced 3 entries in 1 batches"),
        "{}",
        out.stderr
    );
    let stdin: String = (0..5).map(|i| format!("line {i}\n")).collect();
    let out = run_ok(
        &[
            "produce",
            "--server",
            &url,
            "--stream",
            "app",
            "--batch-size",
            "2",
        ],
        &stdin,
    )?;
    assert!(
        out.stderr.contains("produced 5 entries in 3 batches"),
        "{}",
        out.stderr
    );

    // Read back by partition.
    let before = read_all(&url, "app", 3)?;
    assert_eq!(before.len(), 12 + 6 + 3 + 5);
    let partitions_used: std::collections::BTreeSet<u32> = before.keys().map(|(p, _)| *p).collect();
    assert!(partitions_used.len() > 1, "entries spread over partitions");
    let plain: Vec<&Value> = before.values().filter(|e| e["source"] == "stdin").collect();
    assert_eq!(plain.len(), 5);
    assert!(plain.iter().all(|e| e["level"] == "INFO"));
    let one = before.values().find(|e| e["message"] == "json 3").unwrap();
    assert_eq!(one["attributes"]["i"], "3");

    // Query: merged across partitions in timestamp order, filters applied.
    let window = ["--start", "1000000", "--end", "1000200"];
    let all = query(&url, &window)?;
    let mut want: Vec<i64> = expected.iter().map(|e| e.0).collect();
    want.sort();
    assert_eq!(timestamps(&all), want);
    let parts: std::collections::BTreeSet<u64> = all
        .iter()
        .map(|e| e["partition"].as_u64().unwrap())
        .collect();
    assert!(parts.len() > 1, "the query merged several partitions");

    let warn = query(&url, &[&window[..], &["--level", "warn"]].concat())?;
    let mut want: Vec<i64> = expected
        .iter()
        .filter(|e| e.1 >= Level::Warn)
        .map(|e| e.0)
        .collect();
    want.sort();
    assert_eq!(timestamps(&warn), want);
    assert!(
        warn.iter()
            .all(|e| e["level"] == "WARN" || e["level"] == "ERROR")
    );

    let disk = query(
        &url,
        &[&window[..], &["--source", "n1", "--contains", "disk"]].concat(),
    )?;
    let mut want: Vec<i64> = expected
        .iter()
        .filter(|e| e.2 == "n1" && e.3.contains("disk"))
        .map(|e| e.0)
        .collect();
    want.sort();
    assert_eq!(timestamps(&disk), want);
    assert_eq!(disk.len(), 2);

    let out = run_ok(
        &[
            "query", "--server", &url, "--stream", "app", "--start", "1000000", "--limit", "3",
        ],
        "",
    )?;
    assert_eq!(
        timestamps(&out.json_lines()?),
        [1_000_000, 1_000_001, 1_000_005]
    );
    assert!(out.stderr.contains("more match"), "{}", out.stderr);

    // `--newest`: the latest matches, newest first.
    let newest = query(&url, &[&window[..], &["--limit", "3", "--newest"]].concat())?;
    assert_eq!(timestamps(&newest), [1_000_110, 1_000_100, 1_000_090]);
    let mut all_newest = query(&url, &[&window[..], &["--newest"]].concat())?;
    all_newest.reverse();
    assert_eq!(all_newest, all, "newest first is oldest first reversed");

    let recent = query(&url, &["--since", "10m"])?;
    assert_eq!(
        recent.len(),
        7,
        "only the entries stamped on arrival are recent"
    );

    // Unknown stream: 404 over HTTP, exit 1 with the code from the CLI.
    let (status, body) = get(&format!("{url}/v1/streams/nope")).await?;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("stream_not_found"))
    );
    let (status, body) = post(
        &format!("{url}/v1/streams/nope/entries"),
        None,
        "{\"source\":\"a\",\"message\":\"m\"}",
    )
    .await?;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("stream_not_found"))
    );
    let out = run(
        &[
            "read",
            "--server",
            &url,
            "--stream",
            "nope",
            "--partition",
            "0",
        ],
        "",
    )?;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        out.stderr.trim(),
        "error: stream_not_found: stream \"nope\" does not exist"
    );

    // SIGTERM: graceful exit 0; a restart serves the same entries at the
    // same offsets.
    let status = node.terminate()?;
    assert_eq!(status.code(), Some(0), "{status}");
    let node = NodeProcess::start(data.path(), &[])?;
    let url = node.url.clone();
    assert_eq!(read_all(&url, "app", 3)?, before);
    let (status, health) = get(&format!("{url}/health")).await?;
    assert_eq!(
        (
            status,
            health["status"].as_str(),
            health["streams"].as_u64()
        ),
        (200, Some("ok"), Some(1))
    );

    // Deleting the stream removes its data (each partition is a Raft group
    // with its log under `groups/`; the node removes them once the
    // deletion is applied).
    let groups = |dir: &std::path::Path| -> usize {
        std::fs::read_dir(dir.join("groups")).map_or(0, |d| d.count())
    };
    assert_eq!(groups(data.path()), 3);
    let out = run_ok(&["stream", "delete", "app", "--server", &url], "")?;
    assert!(out.stdout.contains("deleted stream app"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while groups(data.path()) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "partition data not removed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, _) = get(&format!("{url}/v1/streams/app")).await?;
    assert_eq!(status, 404);
    let out = run(&["stream", "delete", "app", "--server", &url], "")?;
    assert_eq!(out.status.code(), Some(1));

    assert_eq!(node.terminate()?.code(), Some(0));
    Ok(())
}

#[tokio::test]
async fn malformed_and_oversized_bodies_store_nothing() -> Result<()> {
    let data = tempfile::tempdir()?;
    let node = NodeProcess::start(data.path(), &[])?;
    let url = node.url.clone();
    let (status, body) = post(
        &format!("{url}/v1/streams"),
        Some("application/json"),
        r#"{"name":"app","partitions":2,"durability":"none"}"#,
    )
    .await?;
    assert_eq!(status, 201, "{body}");
    let entries = format!("{url}/v1/streams/app/entries");
    let good = "{\"source\":\"a\",\"message\":\"fine\"}\n";

    // Bad JSON on line 3.
    let body = format!("{good}{good}{{\"source\":\"a\",\"message\":\n{good}");
    let (status, err) = post(&entries, Some("application/x-ndjson"), body).await?;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("invalid_entry")),
        "{err}"
    );
    assert!(
        err["message"].as_str().unwrap().starts_with("line 3:"),
        "{err}"
    );

    // Unknown level.
    let body = format!("{good}{{\"source\":\"a\",\"message\":\"m\",\"level\":\"LOUD\"}}\n");
    let (status, err) = post(&entries, None, body).await?;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("invalid_entry")),
        "{err}"
    );
    assert!(
        err["message"].as_str().unwrap().contains("unknown level"),
        "{err}"
    );

    // Missing source, in an array.
    let body = r#"[{"source":"a","message":"m"},{"message":"no source"}]"#;
    let (status, err) = post(&entries, Some("application/json"), body).await?;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("invalid_entry")),
        "{err}"
    );
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("entry 2: missing field `source`"),
        "{err}"
    );

    // Empty source, an empty body.
    let (status, err) = post(&entries, None, "{\"source\":\"\",\"message\":\"m\"}").await?;
    assert_eq!(status, 400, "{err}");
    let (status, err) = post(&entries, None, "").await?;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("bad_request")),
        "{err}"
    );

    // Oversized: a valid 9 MiB body against the default 8 MiB limit.
    let big = good.repeat(9 * 1024 * 1024 / good.len());
    let (status, err) = post(&entries, Some("application/x-ndjson"), big).await?;
    assert_eq!(
        (status, err["code"].as_str()),
        (413, Some("payload_too_large")),
        "{err}"
    );

    let (status, info) = get(&format!("{url}/v1/streams/app")).await?;
    assert_eq!(status, 200);
    for p in info["partitions"].as_array().unwrap() {
        assert_eq!(p["end_offset"], 0, "nothing was stored: {info}");
    }

    // A second node cannot take the same data directory.
    let dir = data.path().to_str().unwrap();
    let out = run(&["node", "--data-dir", dir, "--http", "127.0.0.1:0"], "")?;
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("locked"), "{}", out.stderr);

    // The node still works after all that.
    let (status, body) = post(&entries, None, good).await?;
    assert_eq!(
        (status, body["appended"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    assert_eq!(node.terminate()?.code(), Some(0));
    Ok(())
}

#[tokio::test]
async fn produce_sends_a_partial_batch_when_stdin_goes_quiet() -> Result<()> {
    use std::io::Write;

    let data = tempfile::tempdir()?;
    let node = NodeProcess::start(data.path(), &[])?;
    let url = node.url.clone();
    run_ok(&["stream", "create", "tail", "--server", &url], "")?;
    let mut producer = ChildGuard::spawn(&["produce", "--server", &url, "--stream", "tail"])?;
    let stdin = producer.child().stdin.as_mut().expect("piped");
    stdin.write_all(b"first line\n")?;
    stdin.flush()?;

    // stdin stays open: the entry must arrive anyway.
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let (_, info) = get(&format!("{url}/v1/streams/tail")).await?;
        let total: u64 = info["partitions"]
            .as_array()
            .context("partitions")?
            .iter()
            .map(|p| p["end_offset"].as_u64().unwrap_or(0))
            .sum();
        if total == 1 {
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "the entry never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let out = producer.finish()?;
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stderr.contains("produced 1 entries in 1 batches"),
        "{}",
        out.stderr
    );
    assert_eq!(node.terminate()?.code(), Some(0));
    Ok(())
}

#[tokio::test]
async fn tail_prints_the_newest_entries_in_time_order_and_follows() -> Result<()> {
    use std::io::BufRead;

    let data = tempfile::tempdir()?;
    let node = NodeProcess::start(data.path(), &[])?;
    let url = node.url.clone();
    run_ok(
        &[
            "stream",
            "create",
            "app",
            "--partitions",
            "3",
            "--server",
            &url,
        ],
        "",
    )?;
    // Timestamps interleave across partitions: the newest three come from
    // several partitions' tails.
    let stdin: String = (0..9)
        .map(|i| {
            format!(
                "{{\"source\":\"s{i}\",\"message\":\"m{i}\",\"timestamp\":{}}}\n",
                1000 + i
            )
        })
        .collect();
    run_ok(&["produce", "--server", &url, "--stream", "app"], &stdin)?;
    let tail = ["tail", "--server", &url, "--stream", "app"];
    let out = run_ok(&[&tail[..], &["--lines", "3"]].concat(), "")?;
    let last = out.json_lines()?;
    assert_eq!(timestamps(&last), [1006, 1007, 1008]);
    assert!(
        last.iter()
            .all(|e| e["partition"].is_u64() && e["offset"].is_u64())
    );
    let partitions: std::collections::BTreeSet<u64> = last
        .iter()
        .map(|e| e["partition"].as_u64().unwrap())
        .collect();
    assert!(partitions.len() > 1, "merged across partitions: {last:?}");

    // --follow: after the newest existing entry, what is produced later.
    let mut follower = ChildGuard::spawn(
        &[
            &tail[..],
            &["--lines", "1", "--follow", "--interval", "100ms"],
        ]
        .concat(),
    )?;
    let stdout = follower.child().stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_line = || -> Result<Value> {
        let line = rx
            .recv_timeout(TIMEOUT)
            .context("tail --follow printed nothing")?;
        Ok(serde_json::from_str(&line)?)
    };
    assert_eq!(next_line()?["timestamp"], 1008);
    let stdin: String = (0..3)
        .map(|i| {
            format!(
                "{{\"source\":\"n{i}\",\"message\":\"new {i}\",\"timestamp\":{}}}\n",
                2000 + i
            )
        })
        .collect();
    run_ok(&["produce", "--server", &url, "--stream", "app"], &stdin)?;
    let new: Vec<Value> = (0..3).map(|_| next_line()).collect::<Result<_>>()?;
    assert_eq!(timestamps(&new), [2000, 2001, 2002]);
    drop(follower);
    assert_eq!(node.terminate()?.code(), Some(0));
    Ok(())
}

#[test]
fn usage_and_connection_errors_have_distinct_exit_codes() -> Result<()> {
    let out = run(&["query", "--server", "http://127.0.0.1:1"], "")?;
    assert_eq!(
        out.status.code(),
        Some(2),
        "missing --stream is a usage error"
    );
    let out = run(&["no-such-command"], "")?;
    assert_eq!(out.status.code(), Some(2));
    let out = run(
        &["query", "--stream", "a", "--since", "5m", "--start", "1"],
        "",
    )?;
    assert_eq!(out.status.code(), Some(2), "--since conflicts with --start");

    let out = run(
        &[
            "node",
            "--data-dir",
            "/nonexistent/never",
            "--max-body-bytes",
            "0",
        ],
        "",
    )?;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("max_body_bytes"), "{}", out.stderr);

    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?.to_string();
    let dir = tempfile::tempdir()?;
    let out = run(
        &[
            "node",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--http",
            &addr,
        ],
        "",
    )?;
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("bind {addr}")),
        "{}",
        out.stderr
    );

    // Nothing listens on port 1.
    let out = run(&["stream", "list", "--server", "http://127.0.0.1:1"], "")?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.starts_with("error: HTTP request failed"),
        "{}",
        out.stderr
    );
    Ok(())
}

#[tokio::test]
async fn inspect_verifies_a_stopped_nodes_data_dir_without_changing_it() -> Result<()> {
    let data = tempfile::tempdir()?;
    let node = NodeProcess::start(data.path(), &[])?;
    let url = node.url.clone();
    run_ok(
        &[
            "stream",
            "create",
            "app",
            "--partitions",
            "2",
            "--server",
            &url,
        ],
        "",
    )?;
    let lines: String = (0..50).map(|i| format!("line {i}\n")).collect();
    run_ok(&["produce", "--server", &url, "--stream", "app"], &lines)?;
    assert_eq!(node.terminate()?.code(), Some(0));

    let dir = data.path().to_str().context("utf-8 path")?;
    let lock = data.path().join("LOCK");
    let lock_before = std::fs::read(&lock).ok();
    let out = run_ok(&["inspect", dir], "")?;
    assert!(out.stdout.contains("controller/log"), "{}", out.stdout);
    assert!(out.stdout.contains("groups/"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("00000000000000000000-00000000000000000000.log"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("all verified"), "{}", out.stdout);
    assert_eq!(std::fs::read(&lock).ok(), lock_before);

    let out = run_ok(&["inspect", "--json", dir], "")?;
    let report: Value = serde_json::from_str(&out.stdout)?;
    let logs = report["logs"].as_array().context("logs")?;
    ensure!(logs.len() >= 3, "controller + 2 partitions: {report}");
    let entries: u64 = logs
        .iter()
        .flat_map(|l| l["segments"].as_array().cloned().unwrap_or_default())
        .map(|s| s["entries"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(entries, 50);

    // A flipped byte in the first batch of a partition's segment.
    let log = logs
        .iter()
        .find(|l| l["path"].as_str().is_some_and(|p| p.contains("groups")))
        .context("a partition log")?;
    let seg = std::path::Path::new(log["path"].as_str().context("path")?)
        .join(log["segments"][0]["file_name"].as_str().context("file")?);
    let mut bytes = std::fs::read(&seg)?;
    bytes[60] ^= 0xff;
    std::fs::write(&seg, &bytes)?;
    let out = run(&["inspect", dir], "")?;
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("at byte 0"), "{}", out.stderr);
    assert!(
        out.stderr.contains(seg.to_str().context("utf-8")?),
        "{}",
        out.stderr
    );

    let out = run(&["inspect", "/nonexistent/never"], "")?;
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    Ok(())
}
