//! Node-to-node trust and TLS on real node processes:
//!
//! - a 3-node cluster with a cluster secret forms and serves writes; a raw
//!   TCP client that speaks the transport's frames without the secret (a
//!   hello, then a Raft vote) is answered `SecretRequired` and closed, and
//!   one that guesses a proof is answered `BadProof`; neither changes the
//!   controller leader or the members, and both are counted and logged;
//!   a node with another secret cannot join, one with the secret can;
//! - a 3-node cluster with TLS (certificates from rcgen) and a secret
//!   serves HTTPS to the CLI with `--tls-ca`, binary-protocol writes over
//!   TLS, and replicates (read back through another node); plaintext
//!   clients of its listeners get a clear answer, not a hang;
//! - a URI over hyper's limit gets a 414 with a `{code, message}` body.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use cairn_client::{Consistency, ReadParams, TcpOptions, TcpProducer};
use cairn_types::NewEntry;
use support::cluster::TestCluster;
use support::{NodeProcess, run, run_ok};

const SECRET: &str = "the-cluster-secret-0123456789abcdef";

fn entry(message: &str) -> NewEntry {
    NewEntry {
        timestamp: None,
        level: None,
        source: "transport-security-test".into(),
        message: message.into(),
        attributes: Default::default(),
    }
}

/// One transport frame: u32 BE length, then version 1, type, kind, from,
/// group, request id, payload (see `cairn_cluster::transport::frame`).
fn frame(
    frame_type: u8,
    kind: u16,
    from: u64,
    group: u64,
    request_id: u64,
    payload: &[u8],
) -> Vec<u8> {
    let mut body = vec![1u8, frame_type];
    body.extend_from_slice(&kind.to_be_bytes());
    body.extend_from_slice(&from.to_be_bytes());
    body.extend_from_slice(&group.to_be_bytes());
    body.extend_from_slice(&request_id.to_be_bytes());
    body.extend_from_slice(payload);
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

/// Reads frames until the peer closes (bounded); returns (type, payload) of each.
fn read_frames_until_close(socket: &mut TcpStream) -> Result<Vec<(u8, Vec<u8>)>> {
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match socket.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            // A reset after our unread vote also means "closed".
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => bail!("the node neither answered nor closed: {e}"),
        }
    }
    let mut frames = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 4 {
        let len = u32::from_be_bytes(rest[..4].try_into()?) as usize;
        ensure!(rest.len() >= 4 + len && len >= 28, "truncated frame");
        frames.push((rest[5], rest[32..4 + len].to_vec()));
        rest = &rest[4 + len..];
    }
    Ok(frames)
}

async fn metric(url: &str, name: &str, labels: &str) -> Result<f64> {
    let text = cairn_client::http_client()
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    text.lines()
        .find(|l| l.starts_with(name) && l.contains(labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {name}{{{labels}}} in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_cluster_serves_and_refuses_processes_without_the_secret() -> Result<()> {
    let files = tempfile::tempdir()?;
    let secret = files.path().join("secret");
    std::fs::write(&secret, format!("{SECRET}\n"))?;
    let secret = secret.to_str().context("utf-8")?;
    let mut c = TestCluster::start_with(3, &["--cluster-secret-file", secret]).await?;

    // It forms (start_with waited for a leader and 3 members) and writes.
    let client = c.client(0)?;
    client
        .create_stream(
            "s",
            cairn_client::StreamConfig {
                partitions: 1,
                ..Default::default()
            },
        )
        .await?;
    c.wait_groups("s", 1).await?;
    client.append("s", &[entry("with a secret")]).await?;
    let before = c.view(0).await?;
    let leader = before.controller_leader.context("a controller leader")?;

    // A process without the secret: a well-formed hello, then a vote.
    let target = c.raft_addr(0).to_string();
    let mut raw = TcpStream::connect(&target)?;
    let mut hello = 1u64.to_be_bytes().to_vec(); // to node 1
    hello.extend_from_slice(&7u64.to_be_bytes()); // incarnation
    raw.write_all(&frame(5, 0, 9, 0, 0, &hello))?;
    raw.write_all(&frame(1, 11, 9, 0, 1, b"{\"vote\":\"please\"}"))?;
    let frames = read_frames_until_close(&mut raw)?;
    ensure!(
        frames.len() == 1 && frames[0].0 == 6 && frames[0].1.first() == Some(&6),
        "expected one HELLO_ACK SecretRequired, then close; got {frames:?}"
    );

    // A process that offers the handshake and guesses a proof.
    let mut raw = TcpStream::connect(&target)?;
    let mut hello = 1u64.to_be_bytes().to_vec();
    hello.extend_from_slice(&7u64.to_be_bytes());
    hello.extend_from_slice(&[42u8; 32]); // nonce
    raw.write_all(&frame(5, 0, 9, 0, 0, &hello))?;
    raw.write_all(&frame(8, 0, 9, 0, 0, &[0u8; 32]))?; // AUTH_PROOF, guessed
    raw.write_all(&frame(1, 11, 9, 0, 1, b"vote"))?;
    let frames = read_frames_until_close(&mut raw)?;
    let types: Vec<u8> = frames.iter().map(|f| f.0).collect();
    ensure!(
        types == [7, 6] && frames[1].1.first() == Some(&8),
        "expected AUTH_CHALLENGE, HELLO_ACK BadProof, then close; got {frames:?}"
    );

    // Nothing changed; both were counted.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = c.view(0).await?;
    ensure!(
        after.controller_leader == Some(leader),
        "leader changed: {leader} -> {:?}",
        after.controller_leader
    );
    ensure!(after.nodes.len() == 3, "members changed: {:?}", after.nodes);
    let url = c.url(0).context("up")?;
    let required = metric(
        &url,
        "cairn_transport_handshake_failures_total",
        "reason=\"secret_mismatch\"",
    )
    .await;
    // Labels come in declaration order: direction, then reason.
    let required = match required {
        Ok(v) => v,
        Err(_) => {
            metric(
                &url,
                "cairn_transport_handshake_failures_total",
                "direction=\"inbound\",reason=\"secret_mismatch\"",
            )
            .await?
        }
    };
    let bad = metric(
        &url,
        "cairn_transport_handshake_failures_total",
        "direction=\"inbound\",reason=\"bad_proof\"",
    )
    .await?;
    ensure!(
        required >= 1.0 && bad >= 1.0,
        "secret_mismatch {required}, bad_proof {bad}"
    );

    // A node with another secret cannot join.
    let wrong = files.path().join("wrong");
    std::fs::write(&wrong, "another-secret-0123456789abcdef")?;
    let raft = format!("127.0.0.1:{}", support::cluster::free_port()?);
    let joined = NodeProcess::start(
        &c.dir.path().join("node-4"),
        &[
            "--id",
            "4",
            "--raft",
            &raft,
            "--join",
            &url,
            "--cluster-secret-file",
            wrong.to_str().context("utf-8")?,
        ],
    );
    match joined {
        Ok(_) => bail!("a node with the wrong secret joined"),
        Err(e) => {
            let e = format!("{e:#}");
            ensure!(
                e.contains("did not pass the node-to-node handshake"),
                "the refusal should say why: {e}"
            );
        }
    }
    let after = c.view(0).await?;
    ensure!(
        after.nodes.len() == 3,
        "a member was added: {:?}",
        after.nodes
    );
    ensure!(after.controller_leader == Some(leader), "leader changed");
    client.append("s", &[entry("still serving")]).await?;

    // The same node with the cluster's secret is admitted.
    let raft = format!("127.0.0.1:{}", support::cluster::free_port()?);
    let _joined = NodeProcess::start(
        &c.dir.path().join("node-4b"),
        &[
            "--id",
            "4",
            "--raft",
            &raft,
            "--join",
            &url,
            "--cluster-secret-file",
            secret,
        ],
    )
    .context("a node with the secret should join")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while c.view(0).await?.nodes.len() != 4 {
        ensure!(
            std::time::Instant::now() < deadline,
            "node 4 never became a member"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The refusals were logged at warn with the prober's address.
    let mut node = c.nodes[0].take().context("up")?;
    let log = node.kill_and_log();
    ensure!(
        log.contains("refused a transport connection") && log.contains("peer_addr=127.0.0.1:"),
        "no warn line naming the peer in node 1's log:\n{log}"
    );
    Ok(())
}

/// A CA and one certificate for 127.0.0.1 (all nodes share it), as PEM
/// files in `dir`: (ca, cert, key).
fn certificates(dir: &std::path::Path) -> Result<(String, String, String)> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "cairn test CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()])?;
    leaf.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse()?));
    let cert = leaf.signed_by(&key, &issuer)?;
    let paths = (
        dir.join("ca.pem"),
        dir.join("node.pem"),
        dir.join("node.key"),
    );
    std::fs::write(&paths.0, ca_cert.pem())?;
    std::fs::write(&paths.1, cert.pem())?;
    std::fs::write(&paths.2, key.serialize_pem())?;
    let s = |p: &std::path::Path| p.to_str().map(str::to_string).context("utf-8");
    Ok((s(&paths.0)?, s(&paths.1)?, s(&paths.2)?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cluster_serves_https_and_tls_binary_and_replicates() -> Result<()> {
    let files = tempfile::tempdir()?;
    let (ca, cert, key) = certificates(files.path())?;
    let secret = files.path().join("secret");
    std::fs::write(&secret, SECRET)?;
    let trust = cairn_client::tls::client_config(std::path::Path::new(&ca))?;
    let c = TestCluster::start_with_options(
        3,
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-ca",
            &ca,
            "--cluster-secret-file",
            secret.to_str().context("utf-8")?,
            "--tcp",
            "127.0.0.1:0",
            // Short, so the test can show an idle TLS connection is judged
            // by the idle timeout, not the frame timeout.
            "--tcp-frame-timeout",
            "2s",
        ],
        None,
        Some(trust.clone()),
    )
    .await?;
    let url = c.url(0).context("up")?;
    ensure!(url.starts_with("https://"), "announced {url}");

    // The CLI over https with --tls-ca.
    run_ok(
        &[
            "stream",
            "create",
            "--server",
            &url,
            "--tls-ca",
            &ca,
            "--partitions",
            "1",
            "t",
        ],
        "",
    )?;
    let listed = run_ok(&["stream", "list", "--server", &url, "--tls-ca", &ca], "")?;
    ensure!(
        listed.stdout.contains('t'),
        "stream list: {}",
        listed.stdout
    );
    // Without the CA the CLI fails (untrusted certificate), and says so.
    let untrusted = run(&["stream", "list", "--server", &url], "")?;
    ensure!(!untrusted.status.success(), "trusted an unknown CA");
    c.wait_groups("t", 1).await?;

    // Binary protocol over TLS, to node 1; read back through node 3.
    let producer = TcpProducer::connect_with(
        c.tcp(0).context("tcp")?.as_str(),
        TcpOptions {
            tls: Some(trust.clone()),
            reconnect: false,
            ..TcpOptions::default()
        },
    )
    .await?;
    let messages: Vec<String> = (0..20).map(|i| format!("tls entry {i}")).collect();
    let entries: Vec<NewEntry> = messages.iter().map(|m| entry(m)).collect();
    producer.append("t", &entries).await?;
    let other = c.client(2)?;
    let read = other
        .read(
            "t",
            0,
            ReadParams {
                offset: Some(0),
                limit: Some(100),
                consistency: Some(Consistency::Leader),
            },
        )
        .await?;
    let got: Vec<&str> = read
        .entries
        .iter()
        .map(|e| e.entry.message.as_str())
        .collect();
    ensure!(
        got == messages.iter().map(String::as_str).collect::<Vec<_>>(),
        "read back through node 3: {got:?}"
    );
    // Every replica has them (replication over the TLS transport).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for i in 0..3 {
        loop {
            let r = c
                .client(i)?
                .read(
                    "t",
                    0,
                    ReadParams {
                        offset: Some(0),
                        limit: Some(100),
                        consistency: Some(Consistency::Any),
                    },
                )
                .await?;
            if r.entries.len() == messages.len() {
                break;
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "node {} has {} entries",
                i + 1,
                r.entries.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // An idle TLS connection outlives the frame timeout (regression: the
    // reader started a frame's clock while waiting for the first byte).
    tokio::time::sleep(Duration::from_millis(3000)).await;
    producer
        .append("t", &[entry("after a pause")])
        .await
        .context("the TLS connection was closed while idle")?;

    // Plaintext HTTP against the TLS listener: a clear 400, not a hang.
    let plain_url = url.replace("https://", "http://");
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        cairn_client::http_client()
            .get(format!("{plain_url}/health"))
            .send(),
    )
    .await
    .context("plaintext HTTP hung")??;
    ensure!(
        answer.status().as_u16() == 400,
        "status {}",
        answer.status()
    );
    let body: serde_json::Value = answer.json().await?;
    ensure!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("HTTPS")),
        "body {body}"
    );
    // Plaintext binary protocol: the first call fails and says TLS.
    let plain = TcpProducer::connect_with(
        c.tcp(0).context("tcp")?.as_str(),
        TcpOptions {
            reconnect: false,
            request_timeout: Some(Duration::from_secs(10)),
            ..TcpOptions::default()
        },
    )
    .await?;
    let e = plain
        .append("t", &[entry("plaintext")])
        .await
        .err()
        .context("a plaintext append was accepted by a TLS listener")?;
    ensure!(e.to_string().contains("TLS"), "error does not say TLS: {e}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uri_over_the_limit_gets_414_with_a_json_body() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = NodeProcess::start(dir.path(), &[])?;
    // Raw: HTTP clients refuse to build a URI this long themselves.
    let addr = node.url.trim_start_matches("http://").to_string();
    let long = "a".repeat(70_000);
    let answer = tokio::task::spawn_blocking(move || -> Result<String> {
        let mut socket = TcpStream::connect(&addr)?;
        socket.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            socket,
            "GET /v1/streams/{long} HTTP/1.1\r\nhost: {addr}\r\n\r\n"
        )?;
        let mut answer = String::new();
        // The node closes after its answer; a reset once it is read is fine.
        let _ = socket.read_to_string(&mut answer);
        Ok(answer)
    })
    .await??;
    ensure!(answer.starts_with("HTTP/1.1 414 "), "answer: {answer:.200}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body: serde_json::Value =
        serde_json::from_str(body).with_context(|| format!("not JSON: {body:.200}"))?;
    ensure!(body["code"] == "uri_too_long", "body {body}");
    ensure!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "body {body}"
    );
    Ok(())
}
