//! The binary ingest protocol against a real `cairn node --tcp`: produce
//! over TCP and read back over HTTP, pipelined appends on one connection,
//! malformed frames and bad entries, and a short binary bench.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bytes::{Bytes, BytesMut};
use cairn_client::{Client, ReadParams, StreamConfig, TcpProducer};
use cairn_types::protocol::{self, Op, Response, ResponseBody};
use cairn_types::{BatchBuilder, Entry, ErrorCode, Level, NewEntry};
use serde_json::Value;
use support::{NodeProcess, run, run_ok};

fn start_node(dir: &std::path::Path) -> Result<NodeProcess> {
    NodeProcess::start(&dir.join("data"), &["--tcp", "127.0.0.1:0"])
}

/// Every (offset, message) stored in `stream`, per partition.
async fn read_all(client: &Client, stream: &str) -> Result<Vec<(u32, u64, String)>> {
    let info = client.get_stream(stream).await?;
    let mut out = Vec::new();
    for p in &info.partitions {
        let mut offset = p.start_offset;
        while offset < p.end_offset {
            let page = client
                .read(
                    stream,
                    p.partition,
                    ReadParams {
                        offset: Some(offset),
                        limit: Some(10_000),
                        consistency: None,
                    },
                )
                .await?;
            for e in &page.entries {
                out.push((p.partition, e.offset, e.entry.message.clone()));
            }
            offset = page.next_offset;
        }
    }
    Ok(out)
}

#[test]
fn produce_over_tcp_then_read_back_over_http() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start_node(dir.path())?;
    let tcp = node.tcp.clone().context("tcp address")?;
    run_ok(
        &[
            "stream",
            "create",
            "app",
            "--partitions",
            "1",
            "--server",
            &node.url,
        ],
        "",
    )?;
    let input = "first line\n{\"source\":\"api\",\"level\":\"error\",\"message\":\"boom\",\"attributes\":{\"k\":\"v\"}}\n\nthird\n";
    let out = run_ok(
        &[
            "produce",
            "--stream",
            "app",
            "--api",
            "binary",
            "--tcp",
            &tcp,
            "--server",
            &node.url,
            "--source",
            "cli",
            "--batch-size",
            "2",
        ],
        input,
    )?;
    ensure!(
        out.stderr.contains("produced 3 entries in 2 batches"),
        "{}",
        out.stderr
    );
    let out = run_ok(
        &[
            "read",
            "--stream",
            "app",
            "--partition",
            "0",
            "--server",
            &node.url,
        ],
        "",
    )?;
    let lines = out.json_lines()?;
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    assert_eq!(messages, ["first line", "boom", "third"]);
    assert_eq!(lines[0]["source"], "cli");
    assert_eq!(lines[1]["level"], "ERROR");
    assert_eq!(lines[1]["attributes"]["k"], "v");

    // A missing stream is refused before stdin is read, with HTTP's code.
    let out = run(
        &[
            "produce", "--stream", "nope", "--api", "binary", "--tcp", &tcp,
        ],
        "x\n",
    )?;
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    ensure!(out.stderr.contains("stream_not_found"), "{}", out.stderr);
    // Binary without an address is a usage error, not a silent HTTP run.
    let out = run(&["produce", "--stream", "app", "--api", "binary"], "x\n")?;
    ensure!(
        !out.status.success() && out.stderr.contains("--tcp"),
        "{}",
        out.stderr
    );
    node.terminate()?;
    Ok(())
}

#[test]
fn pipelined_appends_on_one_connection_are_all_stored_exactly_once() -> Result<()> {
    let whole = cairn_client::TcpOptions {
        route_to_leaders: false,
        ..Default::default()
    };
    pipelined_appends(whole, true)
}

/// The same through the producer's partition split and coalescing (one
/// request on the wire per partition, so nearly everything is merged):
/// each call still learns exactly where its own entries went.
#[test]
fn split_and_coalesced_appends_each_learn_their_own_offsets() -> Result<()> {
    let merged = cairn_client::TcpOptions {
        max_in_flight_per_partition: 1,
        ..Default::default()
    };
    pipelined_appends(merged, false)
}

/// 300 concurrent appends of 1–3 entries of 7 sources on one producer:
/// every entry stored once, at the offset its call was answered with.
/// `one_request_each`: the server saw each call as one request.
fn pipelined_appends(options: cairn_client::TcpOptions, one_request_each: bool) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start_node(dir.path())?;
    let tcp = node.tcp.clone().context("tcp address")?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let client = Client::new(&node.url)?;
        let config = StreamConfig {
            partitions: 3,
            ..Default::default()
        };
        client.create_stream("pipe", config).await?;
        let producer = TcpProducer::connect_with(tcp.as_str(), options).await?;
        producer.ping().await?;
        assert_eq!(producer.partitions("pipe").await?, 3);

        const REQUESTS: usize = 300;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..REQUESTS {
            let producer = producer.clone();
            tasks.spawn(async move {
                let entries: Vec<NewEntry> = (0..1 + i % 3)
                    .map(|j| NewEntry {
                        timestamp: None,
                        level: None,
                        source: format!("src-{}", (i + j) % 7),
                        message: format!("m-{i}-{j}"),
                        attributes: Default::default(),
                    })
                    .collect();
                let ack = producer.append("pipe", &entries).await;
                (i, entries.len(), ack)
            });
        }
        // offset of each message per the acks.
        let mut acked: HashMap<(u32, u64), usize> = HashMap::new();
        let mut total = 0usize;
        while let Some(done) = tasks.join_next().await {
            let (i, n, ack) = done?;
            let ack = ack.with_context(|| format!("request {i}"))?;
            assert_eq!(ack.appended as usize, n);
            for p in &ack.partitions {
                for k in 0..u64::from(p.count) {
                    ensure!(
                        acked.insert((p.partition, p.base_offset + k), i).is_none(),
                        "offset acknowledged twice"
                    );
                }
            }
            total += n;
        }
        let stored = read_all(&client, "pipe").await?;
        assert_eq!(stored.len(), total);
        let mut seen = HashMap::new();
        for (p, offset, message) in &stored {
            *seen.entry(message.clone()).or_insert(0) += 1;
            let i: usize = message.split('-').nth(1).context("id")?.parse()?;
            assert_eq!(
                acked.get(&(*p, *offset)),
                Some(&i),
                "{message} at {p}/{offset}"
            );
        }
        ensure!(seen.values().all(|&n| n == 1), "a message stored twice");

        let metrics = cairn_client::http_client()
            .get(format!("{}/metrics", node.url))
            .send()
            .await?
            .text()
            .await?;
        let requests = support::sum_samples(
            &metrics,
            "cairn_requests_total{api=\"tcp\",operation=\"append\"}",
        ) as usize;
        if one_request_each {
            ensure!(requests == REQUESTS, "{requests} tcp appends counted");
        } else {
            println!("{REQUESTS} calls reached the node as {requests} requests");
            ensure!(requests > 0, "tcp appends counted");
        }
        let entries_line = metrics
            .lines()
            .find(|l| l.starts_with("cairn_ingest_entries_total{api=\"tcp\"}"))
            .context("tcp ingest counter")?;
        ensure!(
            entries_line.ends_with(&format!(" {total}")),
            "{entries_line}"
        );
        Ok::<_, anyhow::Error>(())
    })?;
    node.terminate()?;
    Ok(())
}

/// Sends one frame body with its length prefix.
fn send_frame(socket: &mut TcpStream, body: &[u8]) -> Result<()> {
    socket.write_all(&(body.len() as u32).to_le_bytes())?;
    socket.write_all(body)?;
    Ok(())
}

/// Reads one response; `None` at end of stream.
fn recv(socket: &mut TcpStream) -> Result<Option<Response>> {
    let mut len = [0u8; 4];
    match socket.read_exact(&mut len) {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        other => other?,
    }
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    socket.read_exact(&mut body)?;
    Ok(Some(Response::decode(Bytes::from(body))?))
}

fn append_frame(id: u64, stream: &str, batch: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    protocol::encode_request(id, Op::Append, stream, batch, &mut out).unwrap();
    out.to_vec()
}

fn expect_error(r: Option<Response>, id: u64, code: ErrorCode, text: &str) -> Result<()> {
    let r = r.context("an answer")?;
    assert_eq!(r.correlation_id, id, "{r:?}");
    match r.body {
        ResponseBody::Error {
            code: got, message, ..
        } => {
            assert_eq!(got, code, "{message}");
            ensure!(message.contains(text), "{message:?} lacks {text:?}");
        }
        other => anyhow::bail!("expected an error, got {other:?}"),
    }
    Ok(())
}

#[test]
fn malformed_frames_and_bad_entries_are_answered_and_nothing_is_stored() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start_node(dir.path())?;
    let tcp = node.tcp.clone().context("tcp address")?;
    run_ok(&["stream", "create", "s", "--server", &node.url], "")?;
    let mut socket = TcpStream::connect(&tcp)?;
    socket.set_read_timeout(Some(Duration::from_secs(30)))?;

    let entry = |source: &str| Entry {
        timestamp_us: 1,
        level: Level::Info,
        source: source.into(),
        message: "m".into(),
        attributes: Default::default(),
    };
    let mut good = BatchBuilder::new();
    good.push(&entry("a"))?;
    let good = good.finish();

    // An unknown version: the id is readable, so it is answered.
    let mut frame = append_frame(11, "s", good.as_bytes());
    frame[0] = 9;
    send_frame(&mut socket, &frame)?;
    expect_error(recv(&mut socket)?, 11, ErrorCode::BadRequest, "version 9")?;

    // A flipped payload byte: the CRC catches it.
    let mut frame = append_frame(12, "s", good.as_bytes());
    let last = frame.len() - 1;
    frame[last] ^= 0x20;
    send_frame(&mut socket, &frame)?;
    expect_error(recv(&mut socket)?, 12, ErrorCode::InvalidEntry, "checksum")?;

    // A well-formed batch with one bad entry: the whole request is refused.
    let mut bad = BatchBuilder::new();
    bad.push(&entry("a"))?;
    bad.push(&entry(""))?;
    send_frame(&mut socket, &append_frame(13, "s", bad.finish().as_bytes()))?;
    expect_error(
        recv(&mut socket)?,
        13,
        ErrorCode::InvalidEntry,
        "entry 2: source",
    )?;

    send_frame(&mut socket, &append_frame(14, "missing", good.as_bytes()))?;
    expect_error(recv(&mut socket)?, 14, ErrorCode::StreamNotFound, "missing")?;

    // The connection is still usable.
    let mut ping = BytesMut::new();
    protocol::encode_request(15, Op::Ping, "", &[], &mut ping)?;
    send_frame(&mut socket, &ping)?;
    let pong = recv(&mut socket)?.context("pong")?;
    assert_eq!((pong.correlation_id, pong.body), (15, ResponseBody::Pong));

    // Too short to carry an id: a connection-level error, then close.
    send_frame(&mut socket, &[1, 1, 0])?;
    expect_error(
        recv(&mut socket)?,
        0,
        ErrorCode::BadRequest,
        "at least 12 bytes",
    )?;
    assert!(recv(&mut socket)?.is_none(), "the connection is closed");

    // A frame over the limit closes the connection without being read.
    let mut socket = TcpStream::connect(&tcp)?;
    socket.set_read_timeout(Some(Duration::from_secs(30)))?;
    socket.write_all(&(1u32 << 30).to_le_bytes())?;
    expect_error(recv(&mut socket)?, 0, ErrorCode::PayloadTooLarge, "limit")?;
    assert!(recv(&mut socket)?.is_none(), "the connection is closed");

    // Nothing of the refused requests was stored.
    let out = run_ok(&["stream", "list", "--server", &node.url], "")?;
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with("s "))
        .context("stream row")?;
    let entries: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(entries[2], "0", "{row}");

    // Refusals are counted per code, as over HTTP.
    let rt = tokio::runtime::Runtime::new()?;
    let text = rt.block_on(async {
        cairn_client::http_client()
            .get(format!("{}/metrics", node.url))
            .send()
            .await?
            .text()
            .await
    })?;
    for (reason, n) in [
        ("invalid_entry", 2),
        ("bad_request", 2),
        ("stream_not_found", 1),
        ("payload_too_large", 1),
    ] {
        let line = format!("cairn_rejections_total{{reason=\"{reason}\"}} {n}");
        ensure!(text.contains(&line), "{line} in /metrics");
    }
    node.terminate()?;
    Ok(())
}

#[test]
fn bench_over_the_binary_protocol_verifies_every_entry() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start_node(dir.path())?;
    let tcp = node.tcp.clone().context("tcp address")?;
    let json = dir.path().join("binary.json");
    let out = run_ok(
        &[
            "bench",
            "steady",
            "--api",
            "binary",
            "--tcp",
            &tcp,
            "--server",
            &node.url,
            "--rate",
            "2000",
            "--duration",
            "2s",
            "--batch-size",
            "1",
            "--connections",
            "2",
            "--max-in-flight",
            "32",
            "--json",
            json.to_str().unwrap(),
        ],
        "",
    )?;
    ensure!(out.stdout.contains("-- OK"), "{}", out.stdout);
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    assert_eq!(r["config"]["api"], "binary");
    assert_eq!(r["config"]["tcp_targets"][0], tcp.as_str());
    let w = &r["writes"];
    assert_eq!(
        (w["errors"].as_u64(), w["unsent"].as_u64()),
        (Some(0), Some(0)),
        "{w}"
    );
    assert_eq!(w["entries"], 4000, "{w}");
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
    node.terminate()?;
    Ok(())
}

#[test]
fn shutdown_answers_what_it_took_and_keeps_every_acknowledged_append() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let node = NodeProcess::start(&data, &["--tcp", "127.0.0.1:0"])?;
    let tcp = node.tcp.clone().context("tcp address")?;
    let url = node.url.clone();
    let rt = tokio::runtime::Runtime::new()?;
    let acked: Vec<String> = rt.block_on(async {
        Client::new(&url)?
            .create_stream("s", StreamConfig::default())
            .await?;
        let producer = TcpProducer::connect(tcp.as_str()).await?;
        // 32 callers append back to back on one connection until the
        // node goes away under them.
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..32 {
            let producer = producer.clone();
            tasks.spawn(async move {
                let mut acked = Vec::new();
                for i in 0.. {
                    let message = format!("w{w}-{i}");
                    let entry = NewEntry {
                        timestamp: None,
                        level: None,
                        source: format!("s{w}"),
                        message: message.clone(),
                        attributes: Default::default(),
                    };
                    match producer.append("s", &[entry]).await {
                        Ok(_) => acked.push(message),
                        Err(cairn_client::TcpError::Closed(_)) => break,
                        Err(e) => panic!("unexpected failure: {e}"),
                    }
                }
                acked
            });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = tokio::task::spawn_blocking(move || node.terminate()).await??;
        ensure!(status.success(), "node exit: {status}");
        let mut acked = Vec::new();
        while let Some(done) = tasks.join_next().await {
            acked.extend(done?);
        }
        Ok::<_, anyhow::Error>(acked)
    })?;
    ensure!(
        acked.len() > 32,
        "appends ran before the shutdown: {}",
        acked.len()
    );

    let node = NodeProcess::start(&data, &[])?;
    let stored = rt.block_on(async { read_all(&Client::new(&node.url)?, "s").await })?;
    let stored: std::collections::HashSet<String> = stored.into_iter().map(|(_, _, m)| m).collect();
    for m in &acked {
        ensure!(stored.contains(m), "acknowledged {m} was lost");
    }
    node.terminate()?;
    Ok(())
}

/// A producer given every node's address: when its node dies, the call in
/// flight fails (its outcome is the caller's to judge), and a later call
/// reconnects to another node and is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_reconnects_to_another_node_when_its_own_dies() -> Result<()> {
    let mut c = support::cluster::TestCluster::start_with_tcp(3).await?;
    c.client(0)?
        .create_stream(
            "re",
            StreamConfig {
                partitions: 2,
                replication_factor: Some(3),
                ..StreamConfig::default()
            },
        )
        .await?;
    let addrs: Vec<String> = (0..3).map(|i| c.tcp(i).expect("up")).collect();
    // The default link's own reconnection; routing by leader is tested
    // below.
    let whole = cairn_client::TcpOptions {
        route_to_leaders: false,
        ..Default::default()
    };
    let producer = TcpProducer::connect_any(addrs.clone(), whole).await?;
    let entry = |m: &str| NewEntry {
        timestamp: None,
        level: None,
        source: "r".into(),
        message: m.into(),
        attributes: Default::default(),
    };
    producer.append("re", &[entry("first")]).await?;
    let first_peer = producer.peer_addr().to_string();
    ensure!(first_peer == addrs[0], "connected to {first_peer}");
    c.kill(0);

    // Calls may fail while the death is noticed; the caller retries (each
    // message is distinct, so what is stored is checked below).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut failures = Vec::new();
    loop {
        match producer.append("re", &[entry("after")]).await {
            Ok(_) => break,
            Err(e) => failures.push(e.to_string()),
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "never reconnected: {failures:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let peer = producer.peer_addr().to_string();
    ensure!(
        peer != first_peer && addrs.contains(&peer),
        "reconnected to {peer}"
    );
    let stored = c
        .client(1)?
        .query("re", &Default::default())
        .await?
        .entries
        .into_iter()
        .map(|e| e.entry.message)
        .collect::<Vec<_>>();
    ensure!(
        stored.contains(&"first".to_string()) && stored.contains(&"after".to_string()),
        "stored: {stored:?}"
    );
    println!(
        "reconnected from {first_peer} to {peer} after {} failed call(s): {failures:?}",
        failures.len()
    );
    Ok(())
}

/// Reads go where writes go: over the cluster transport, through one
/// router, whichever API asks. A READ over the binary protocol through any
/// node returns what HTTP returns, from the leader (or, with `any`, from
/// the asked node's own replica); a node cut off by a network fault on the
/// transport no longer reads the leader's copy behind the fault's back
/// (reads used to cross to peers over HTTP, which the fault did not
/// touch) — it says `unavailable`, while `any` still serves its own copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_routed_over_the_transport_for_both_apis() -> Result<()> {
    use cairn_client::Consistency;
    let c = support::cluster::TestCluster::start_with_tcp(3).await?;
    c.create_stream("rd", 2).await?;
    let entries: Vec<NewEntry> = (0..60)
        .map(|i| NewEntry {
            timestamp: None,
            level: None,
            source: format!("s{}", i % 7),
            message: format!("m{i}"),
            attributes: [("k".to_string(), format!("{i}"))].into(),
        })
        .collect();
    c.client(0)?.append("rd", &entries).await?;
    for p in 0..2 {
        let leader = c.leader_of("rd", p).await.context("no leader")?;
        let by_http = c.client(0)?.read("rd", p, ReadParams::default()).await?;
        ensure!(!by_http.entries.is_empty(), "partition {p} holds nothing");
        for i in 0..3 {
            let producer = TcpProducer::connect(c.tcp(i).context("tcp")?).await?;
            let r = producer
                .read("rd", p, None, 1000, Consistency::Leader)
                .await?;
            ensure!(r.entries == by_http.entries, "node {i}, partition {p}");
            ensure!(r.served_by == leader && r.from_leader, "{r:?}");
            ensure!(r.next_offset == by_http.next_offset);
            // From an offset, and with `any`: the asked node's own copy.
            let from = by_http.entries[1].offset;
            let r = producer
                .read("rd", p, Some(from), 2, Consistency::Any)
                .await?;
            ensure!(r.entries == by_http.entries[1..3], "node {i}: {r:?}");
            ensure!(r.served_by == i as u64 + 1, "{r:?}");
        }
    }

    // Cut a follower of partition 0 off the transport.
    let leader = c.leader_of("rd", 0).await.context("no leader")?;
    let cut = (1..=3u64).find(|n| *n != leader).expect("a follower");
    let cut_i = (cut - 1) as usize;
    let http = cairn_client::http_client();
    let r = http
        .post(format!("{}/v1/faults/network", c.url(cut_i).expect("up")))
        .json(&serde_json::json!({"action": "isolate", "ttl_ms": 60_000}))
        .send()
        .await?;
    ensure!(r.status() == 201, "install fault: {}", r.text().await?);
    let client = c.client(cut_i)?;
    let producer = TcpProducer::connect(c.tcp(cut_i).context("tcp")?).await?;
    let over_http = client.read("rd", 0, ReadParams::default()).await;
    let over_tcp = producer.read("rd", 0, None, 100, Consistency::Leader).await;
    let own = producer.read("rd", 0, None, 100, Consistency::Any).await;
    http.delete(format!("{}/v1/faults/network", c.url(cut_i).expect("up")))
        .send()
        .await?;
    match over_http {
        Err(e) => ensure!(e.code() == Some(ErrorCode::Unavailable), "{e}"),
        Ok(r) => anyhow::bail!(
            "an isolated node read the leader's copy: served by {}",
            r.served_by
        ),
    }
    match over_tcp {
        Err(e) => ensure!(e.code() == Some(ErrorCode::Unavailable), "{e}"),
        Ok(r) => anyhow::bail!(
            "an isolated node read the leader's copy: served by {}",
            r.served_by
        ),
    }
    let own = own?;
    ensure!(own.served_by == cut && !own.from_leader, "{own:?}");
    ensure!(!own.entries.is_empty(), "the follower's own copy is empty");
    Ok(())
}

/// A producer given every node's address sends each partition's entries
/// straight to its leader: in a steady state no node forwards a write
/// (`cairn_writes_forwarded_total` stays still). After a leader moves, the
/// producer follows within its route refresh and the forwards stop again;
/// every acknowledged entry is where its answer said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_aware_producer_forwards_nothing_and_follows_a_leader_move() -> Result<()> {
    const STREAM: &str = "routed";
    const PARTITIONS: u32 = 4;
    let c = support::cluster::TestCluster::start_with_tcp(3).await?;
    c.create_stream(STREAM, PARTITIONS).await?;
    let addrs: Vec<String> = (0..3).map(|i| c.tcp(i).expect("up")).collect();
    let producer = TcpProducer::connect_any(addrs, cairn_client::TcpOptions::default()).await?;
    let http = cairn_client::http_client();
    let urls: Vec<String> = (0..3).map(|i| c.url(i).expect("up")).collect();
    let forwarded = || async {
        let mut total = 0.0;
        for url in &urls {
            let text = support::metrics(&http, url).await?;
            total += support::sum_samples(&text, "cairn_writes_forwarded_total");
        }
        Ok::<_, anyhow::Error>(total as u64)
    };
    let mut acked: HashMap<(u32, u64), String> = HashMap::new();
    let mut round = 0u32;
    // 40 concurrent appends of 8 entries over 16 sources: every partition
    // gets writes, and every append is split.
    let mut write = async |acked: &mut HashMap<(u32, u64), String>| -> Result<()> {
        round += 1;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..40u32 {
            let producer = producer.clone();
            let entries: Vec<NewEntry> = (0..8u32)
                .map(|j| NewEntry {
                    timestamp: None,
                    level: None,
                    source: format!("src-{}", (i + j) % 16),
                    message: format!("r{round}-{i}-{j}"),
                    attributes: Default::default(),
                })
                .collect();
            tasks.spawn(async move {
                let ack = producer.append(STREAM, &entries).await;
                (entries, ack)
            });
        }
        while let Some(done) = tasks.join_next().await {
            let (entries, ack) = done?;
            let ack = ack?;
            ensure!(ack.appended == 8, "{ack:?}");
            // Within a partition, a call's entries keep their order.
            for p in &ack.partitions {
                let mine = entries.iter().filter(|e| {
                    cairn_types::partition_for_source(&e.source, PARTITIONS) == p.partition
                });
                for (k, e) in mine.enumerate() {
                    let at = (p.partition, p.base_offset + k as u64);
                    ensure!(
                        acked.insert(at, e.message.clone()).is_none(),
                        "{at:?} acknowledged twice"
                    );
                }
            }
        }
        Ok(())
    };

    // The first append asks every node who leads what.
    write(&mut acked).await?;
    let before = forwarded().await?;
    for _ in 0..3 {
        write(&mut acked).await?;
    }
    let steady = forwarded().await? - before;
    ensure!(
        steady == 0,
        "{steady} write batches were forwarded in a steady state"
    );

    let from = c.leader_of(STREAM, 0).await.context("a leader")?;
    let to = from % 3 + 1;
    c.client(0)?.move_leader(STREAM, 0, to).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while c.leader_of(STREAM, 0).await != Some(to) {
        ensure!(std::time::Instant::now() < deadline, "leader never moved");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Writes go on through the move; within a few refreshes a round of
    // writes forwards nothing again.
    let moved_at = std::time::Instant::now();
    let mut rounds_forwarding = 0;
    loop {
        let before = forwarded().await?;
        write(&mut acked).await?;
        if forwarded().await? == before {
            break;
        }
        rounds_forwarding += 1;
        ensure!(
            moved_at.elapsed() < Duration::from_secs(10),
            "still forwarding {:?} after the leader moved",
            moved_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "partition 0 moved from node {from} to {to}; forwards stopped after {:?} \
         ({rounds_forwarding} round(s) forwarded)",
        moved_at.elapsed()
    );

    let stored = read_all(&c.client(0)?, STREAM).await?;
    ensure!(
        stored.len() == acked.len(),
        "{} stored, {} acknowledged",
        stored.len(),
        acked.len()
    );
    for (p, offset, message) in stored {
        ensure!(
            acked.get(&(p, offset)) == Some(&message),
            "{p}/{offset} holds {message}, acknowledged as {:?}",
            acked.get(&(p, offset))
        );
    }
    Ok(())
}

/// Appends merged into one request share its fate only when the server
/// stored it: a merged request refused for one call's bad entry is resent
/// call by call, so only that call fails.
#[test]
fn one_calls_bad_entry_does_not_fail_the_calls_merged_with_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start_node(dir.path())?;
    let tcp = node.tcp.clone().context("tcp address")?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let client = Client::new(&node.url)?;
        client.create_stream("bad", StreamConfig::default()).await?;
        let options = cairn_client::TcpOptions {
            max_in_flight_per_partition: 1,
            ..Default::default()
        };
        let producer = TcpProducer::connect_with(tcp.as_str(), options).await?;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..60usize {
            let producer = producer.clone();
            // Call 30 carries 65 attributes, one over the limit.
            let attributes = (0..if i == 30 { 65 } else { 1 })
                .map(|k| (format!("k{k}"), "v".to_string()))
                .collect();
            let entry = NewEntry {
                timestamp: None,
                level: None,
                source: "one-source".into(),
                message: format!("m-{i}"),
                attributes,
            };
            tasks.spawn(async move { (i, producer.append("bad", &[entry]).await) });
        }
        let mut ok = 0;
        while let Some(done) = tasks.join_next().await {
            match done? {
                (30, Err(e)) => ensure!(e.code() == Some(ErrorCode::InvalidEntry), "{e}"),
                (30, Ok(a)) => anyhow::bail!("the bad entry was stored: {a:?}"),
                (i, Err(e)) => anyhow::bail!("call {i} failed with the bad call: {e}"),
                (_, Ok(_)) => ok += 1,
            }
        }
        ensure!(ok == 59);
        let stored = read_all(&client, "bad").await?;
        ensure!(stored.len() == 59, "{} stored", stored.len());
        Ok::<_, anyhow::Error>(())
    })?;
    node.terminate()?;
    Ok(())
}
