//! Authentication on real node processes: a 3-node cluster started with a
//! token file refuses unauthenticated and under-privileged calls on HTTP
//! and the binary protocol (changing nothing), serves the right roles,
//! forwards reads between nodes with its own token, and the CLI presents
//! `CAIRN_TOKEN`. A node without a token file refuses to listen beyond
//! loopback unless `--insecure`; a transport beyond loopback also needs
//! `--cluster-secret-file` (tokens do not cover it).

mod support;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use cairn_client::{TcpOptions, TcpProducer};
use cairn_types::{ErrorCode, NewEntry};
use serde_json::{Value, json};
use support::cluster::TestCluster;

const ADMIN: &str = "admin-token-0123456789abcdef";
const WRITE: &str = "write-token-0123456789abcdef";
const READ: &str = "read-token-0123456789abcdef";

fn token_file(dir: &std::path::Path) -> Result<std::path::PathBuf> {
    let path = dir.join("tokens");
    std::fs::write(
        &path,
        format!("# roles for the auth test\nadmin {ADMIN}\nwrite {WRITE}\nread {READ}\n"),
    )?;
    Ok(path)
}

/// `(status, body)` of one request with an optional bearer token.
async fn call(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<(u16, Value)> {
    let mut request = cairn_client::http_client()
        .request(method, url)
        .timeout(Duration::from_secs(10));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    if let Some(b) = body {
        request = request.json(&b);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok((status, body))
}

fn entry(message: &str) -> NewEntry {
    NewEntry {
        timestamp: None,
        level: None,
        source: "auth-test".into(),
        message: message.into(),
        attributes: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_every_api_and_refusals_change_nothing() -> Result<()> {
    let files = tempfile::tempdir()?;
    let tokens = token_file(files.path())?;
    let tokens = tokens.to_str().context("utf-8 path")?;
    let c = TestCluster::start_with_token(
        3,
        &["--auth-token-file", tokens, "--tcp", "127.0.0.1:0"],
        Some(ADMIN),
    )
    .await?;
    let url = c.url(0).context("up")?;
    use reqwest::Method;

    // The liveness probe stays open; everything else needs a token.
    let (status, _) = call(Method::GET, &format!("{url}/health"), None, None).await?;
    ensure!(status == 200, "GET /health without a token: {status}");
    let (status, body) = call(Method::GET, &format!("{url}/v1/streams"), None, None).await?;
    ensure!(
        status == 401 && body["code"] == "unauthorized",
        "GET /v1/streams without a token: {status} {body}"
    );
    let (status, _) = call(
        Method::GET,
        &format!("{url}/v1/streams"),
        Some("wrong-token-0123456789"),
        None,
    )
    .await?;
    ensure!(status == 401, "unknown token: {status}");

    // Admin calls without a token (or with a lower role) are refused and
    // change nothing.
    let create = json!({"name": "guarded", "partitions": 2});
    for token in [None, Some(READ), Some(WRITE)] {
        let (status, body) = call(
            Method::POST,
            &format!("{url}/v1/streams"),
            token,
            Some(create.clone()),
        )
        .await?;
        let want = if token.is_none() { 401 } else { 403 };
        ensure!(
            status == want,
            "create stream with {token:?}: {status} {body}"
        );
    }
    let admin = c.client(0)?;
    ensure!(
        admin.list_streams().await?.is_empty(),
        "a refused create made a stream"
    );
    let (status, body) = call(
        Method::POST,
        &format!("{url}/v1/streams"),
        Some(ADMIN),
        Some(create),
    )
    .await?;
    ensure!(status == 201, "create stream as admin: {status} {body}");

    let isolate = json!({"action": "isolate", "ttl_ms": 60_000});
    let (status, _) = call(
        Method::POST,
        &format!("{url}/v1/faults/network"),
        None,
        Some(isolate.clone()),
    )
    .await?;
    ensure!(status == 401, "fault without a token: {status}");
    let (status, _) = call(
        Method::POST,
        &format!("{url}/v1/faults/network"),
        Some(WRITE),
        Some(isolate),
    )
    .await?;
    ensure!(status == 403, "fault with the write role: {status}");
    let (status, body) = call(
        Method::GET,
        &format!("{url}/v1/faults/network"),
        Some(READ),
        None,
    )
    .await?;
    ensure!(status == 200, "list faults as read: {status} {body}");
    ensure!(
        body.to_string().matches("isolate").count() == 0,
        "a refused fault was installed: {body}"
    );
    let (status, _) = call(
        Method::POST,
        &format!("{url}/v1/cluster/join"),
        None,
        Some(json!({"id": 9, "raft_addr": "127.0.0.1:1", "http_addr": "127.0.0.1:2"})),
    )
    .await?;
    ensure!(status == 401, "join without a token: {status}");
    let (status, _) = call(
        Method::POST,
        &format!("{url}/v1/cluster/nodes/3/decommission"),
        Some(READ),
        None,
    )
    .await?;
    ensure!(status == 403, "decommission as read: {status}");
    let view = c.view(0).await?;
    ensure!(
        view.nodes.len() == 3 && view.nodes.iter().all(|n| n.id != 9),
        "a refused join or decommission changed membership: {:?}",
        view.nodes
    );
    let (status, _) = call(
        Method::DELETE,
        &format!("{url}/v1/streams/guarded"),
        Some(WRITE),
        None,
    )
    .await?;
    ensure!(status == 403, "delete stream as write: {status}");
    let (status, _) = call(
        Method::POST,
        &format!("{url}/v1/anti-entropy/scan"),
        Some(READ),
        Some(json!({})),
    )
    .await?;
    ensure!(status == 403, "anti-entropy scan as read: {status}");

    // Writes need `write`; reads need `read`, through any node, including
    // reads this node forwards to the partition's leader elsewhere.
    let entries = json!([{"source": "a", "message": "one"}, {"source": "b", "message": "two"}]);
    let (status, _) = call(
        Method::POST,
        &format!("{url}/v1/streams/guarded/entries"),
        Some(READ),
        Some(entries.clone()),
    )
    .await?;
    ensure!(status == 403, "append as read: {status}");
    let (status, body) = call(
        Method::POST,
        &format!("{url}/v1/streams/guarded/entries"),
        Some(WRITE),
        Some(entries),
    )
    .await?;
    ensure!(status == 200, "append as write: {status} {body}");
    for node in 0..3 {
        let u = c.url(node).context("up")?;
        for p in 0..2 {
            let (status, body) = call(
                Method::GET,
                &format!("{u}/v1/streams/guarded/partitions/{p}/entries?offset=0"),
                Some(READ),
                None,
            )
            .await?;
            ensure!(
                status == 200,
                "read p{p} via node {}: {status} {body}",
                node + 1
            );
        }
        let (status, body) = call(
            Method::GET,
            &format!("{u}/v1/streams/guarded/query"),
            Some(READ),
            None,
        )
        .await?;
        ensure!(
            status == 200 && body["entries"].as_array().map(Vec::len) == Some(2),
            "query via node {}: {status} {body}",
            node + 1
        );
    }
    let (status, _) = call(Method::GET, &format!("{url}/metrics"), None, None).await?;
    ensure!(status == 401, "metrics without a token: {status}");

    // The binary protocol: nothing before AUTH, roles after it.
    let tcp = c.tcp(0).context("tcp")?;
    let anonymous = TcpProducer::connect(tcp.as_str()).await?;
    match anonymous.append("guarded", &[entry("anonymous")]).await {
        Err(cairn_client::TcpError::Api {
            code: ErrorCode::Unauthorized,
            ..
        }) => {}
        other => anyhow::bail!("binary append without AUTH: {other:?}"),
    }
    let with = |token: &str| TcpOptions {
        token: Some(token.to_string()),
        ..TcpOptions::default()
    };
    match TcpProducer::connect_with(tcp.as_str(), with("wrong-token-0123456789")).await {
        Err(cairn_client::TcpError::Api {
            code: ErrorCode::Unauthorized,
            ..
        }) => {}
        other => anyhow::bail!("binary AUTH with an unknown token: {:?}", other.map(|_| ())),
    }
    let reader = TcpProducer::connect_with(tcp.as_str(), with(READ)).await?;
    ensure!(reader.partitions("guarded").await? == 2);
    match reader.append("guarded", &[entry("as reader")]).await {
        Err(cairn_client::TcpError::Api {
            code: ErrorCode::Forbidden,
            ..
        }) => {}
        other => anyhow::bail!("binary append as read: {other:?}"),
    }
    let writer = TcpProducer::connect_with(tcp.as_str(), with(WRITE)).await?;
    writer.append("guarded", &[entry("as writer")]).await?;
    let r = admin.query("guarded", &Default::default()).await?;
    let messages: Vec<&str> = r.entries.iter().map(|e| e.entry.message.as_str()).collect();
    ensure!(
        messages.len() == 3 && messages.contains(&"as writer"),
        "only authorized writes are stored: {messages:?}"
    );

    // The CLI presents CAIRN_TOKEN (or --token) and says what is missing.
    let out = support::run(&["stream", "list", "--server", &url], "")?;
    ensure!(
        !out.status.success() && out.stderr.contains("unauthorized"),
        "cli without a token: {} {}",
        out.status,
        out.stderr
    );
    let out = support::run_ok(&["stream", "list", "--server", &url, "--token", READ], "")?;
    ensure!(
        out.stdout.contains("guarded"),
        "cli with a token: {}",
        out.stdout
    );

    let (status, body) = call(
        Method::DELETE,
        &format!("{url}/v1/streams/guarded"),
        Some(ADMIN),
        None,
    )
    .await?;
    ensure!(status == 204, "delete as admin: {status} {body}");
    Ok(())
}

#[test]
fn a_node_without_tokens_stays_on_loopback_unless_insecure() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let refused = support::run(
        &[
            "node",
            "--data-dir",
            dir.path().join("a").to_str().context("utf-8")?,
            "--http",
            "0.0.0.0:0",
        ],
        "",
    )?;
    ensure!(
        !refused.status.success() && refused.stderr.contains("--auth-token-file"),
        "non-loopback without tokens: {} {}",
        refused.status,
        refused.stderr
    );
    // With --insecure it starts, and says so.
    let data = dir.path().join("b");
    let mut node = support::NodeProcess::start(&data, &["--http", "0.0.0.0:0", "--insecure"])?;
    ensure!(node.url.contains("0.0.0.0"), "{}", node.url);
    let log = node.kill_and_log();
    ensure!(log.contains("--insecure"), "no warning logged: {log}");
    Ok(())
}

#[test]
fn a_transport_beyond_loopback_needs_the_cluster_secret_unless_insecure() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let tokens = token_file(dir.path())?;
    let tokens = tokens.to_str().context("utf-8")?;
    // Tokens cover HTTP, not the transport: refused, naming the flag.
    let refused = support::run(
        &[
            "node",
            "--data-dir",
            dir.path().join("a").to_str().context("utf-8")?,
            "--http",
            "127.0.0.1:0",
            "--raft",
            "0.0.0.0:0",
            "--auth-token-file",
            tokens,
        ],
        "",
    )?;
    ensure!(
        !refused.status.success() && refused.stderr.contains("--cluster-secret-file"),
        "non-loopback transport without a secret: {} {}",
        refused.status,
        refused.stderr
    );
    // With the secret it starts without --insecure and says the transport
    // is authenticated.
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "a-cluster-secret-0123456789\n")?;
    let out = std::process::Command::new(support::BIN)
        .args(["node", "--data-dir"])
        .arg(dir.path().join("b"))
        .args(["--http", "127.0.0.1:0", "--raft", "0.0.0.0:0"])
        .args(["--auth-token-file", tokens, "--cluster-secret-file"])
        .arg(&secret)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut guard = support::ChildGuard(Some(out));
    let stdout = guard.child().stdout.take().context("piped")?;
    let mut said = String::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let line = line?;
        if line.starts_with("cairn node transport:") {
            said = line;
            break;
        }
    }
    ensure!(
        said.contains("cluster secret from"),
        "start line about the transport: {said:?}"
    );
    // A secret file that is too short is refused with the reason.
    std::fs::write(&secret, "short\n")?;
    let short = support::run(
        &[
            "node",
            "--data-dir",
            dir.path().join("c").to_str().context("utf-8")?,
            "--cluster-secret-file",
            secret.to_str().context("utf-8")?,
        ],
        "",
    )?;
    ensure!(
        !short.status.success() && short.stderr.contains("at least 16"),
        "short secret: {}",
        short.stderr
    );
    Ok(())
}
