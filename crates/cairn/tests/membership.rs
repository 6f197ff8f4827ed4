//! Membership safety on real node processes: a join that claims a live
//! member's id is refused and reads stay correct; a restarted member that
//! was started with `--join` comes back (with a new HTTP port) without
//! being taken for an impostor; decommissioning below a stream's
//! replication factor is refused with the reason.

mod support;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cairn_client::{Consistency, ReadParams, StreamConfig};
use cairn_types::NewEntry;
use serde_json::{Value, json};
use support::NodeProcess;
use support::cluster::TestCluster;

async fn post(url: &str, body: Option<Value>) -> Result<(u16, Value)> {
    let mut request = cairn_client::http_client()
        .post(url)
        .timeout(Duration::from_secs(20));
    if let Some(b) = body {
        request = request.json(&b);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impostor_joins_and_unsafe_decommissions_are_refused() -> Result<()> {
    let c = TestCluster::start(3).await?;
    let client = c.client(0)?;
    client
        .create_stream(
            "m",
            StreamConfig {
                partitions: 3,
                replication_factor: Some(3),
                ..StreamConfig::default()
            },
        )
        .await?;
    let entries: Vec<NewEntry> = (0..30)
        .map(|i| NewEntry {
            timestamp: None,
            level: None,
            source: format!("s{i}"),
            message: format!("m{i}"),
            attributes: Default::default(),
        })
        .collect();
    client.append("m", &entries).await?;
    let url = c.url(0).context("up")?;
    let before = c.view(0).await?;
    let node2 = before
        .nodes
        .iter()
        .find(|n| n.id == 2)
        .context("node 2")?
        .clone();

    // Another process claiming node 2's id is refused, replace or not
    // (node 2 is alive).
    for replace in [false, true] {
        let (status, body) = post(
            &format!("{url}/v1/cluster/join"),
            Some(json!({"id": 2, "raft_addr": "127.0.0.1:9", "http_addr": "127.0.0.1:10", "replace": replace})),
        )
        .await?;
        ensure!(
            status == 409 && body["code"] == "conflict",
            "impostor join (replace {replace}): {status} {body}"
        );
    }
    let after = c.view(0).await?;
    let still = after.nodes.iter().find(|n| n.id == 2).context("node 2")?;
    ensure!(
        still.raft_addr == node2.raft_addr && still.http_addr == node2.http_addr,
        "node 2's addresses changed: {still:?}"
    );
    // Reads through node 1 of every partition (forwarded to leaders,
    // node 2 among them) still return the real entries.
    let mut total = 0;
    for p in 0..3 {
        let r = client
            .read(
                "m",
                p,
                ReadParams {
                    offset: Some(0),
                    limit: Some(100),
                    consistency: Some(Consistency::Leader),
                },
            )
            .await?;
        total += r.entries.len();
    }
    ensure!(total == 30, "reads after the refused join: {total} entries");

    // Decommissioning any node would leave the RF-3 stream on two nodes.
    let (status, body) = post(&format!("{url}/v1/cluster/nodes/3/decommission"), None).await?;
    ensure!(
        status == 409
            && body["message"]
                .as_str()
                .is_some_and(|m| m.contains("replication factor 3")),
        "decommission below RF: {status} {body}"
    );
    let view = c.view(0).await?;
    ensure!(
        view.nodes.iter().all(|n| n.state != "draining"),
        "a refused decommission drained a node: {:?}",
        view.nodes
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_node_restarts_with_a_new_http_port() -> Result<()> {
    let mut c = TestCluster::start(3).await?;
    let joined = c.join_node(0)?;
    c.wait_ready(4).await?;
    let first = c.view(0).await?;
    let me = first
        .nodes
        .iter()
        .find(|n| n.id == 4)
        .context("node 4")?
        .clone();
    c.kill(joined);

    // Same data, same transport address, HTTP on a new port, --join again.
    let seed = c.url(0).context("up")?;
    let data = c.dir.path().join("node-4");
    let mut node = NodeProcess::start(
        &data,
        &[
            "--id",
            "4",
            "--name",
            "node-4",
            "--raft",
            &me.raft_addr,
            "--join",
            &seed,
        ],
    )?;
    let new_http = node.url.trim_start_matches("http://").to_string();
    ensure!(new_http != me.http_addr, "the test needs a new port");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let view = c.view(0).await?;
        if view
            .nodes
            .iter()
            .any(|n| n.id == 4 && n.http_addr == new_http && n.state == "up")
        {
            break;
        }
        if Instant::now() > deadline {
            let log = node.kill_and_log();
            bail!(
                "node 4 did not come back at {new_http}: {:?}\n{log}",
                view.nodes
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = node.kill_and_log();
    ensure!(
        log.contains("already a member"),
        "the restarted node joined again: {log}"
    );
    Ok(())
}

/// A node that joins from an address nobody answers at never takes a real
/// voter's place: every partition keeps its three real replicas, so it
/// still commits with one of them killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_that_joins_never_replaces_a_real_voter() -> Result<()> {
    let mut c = TestCluster::start(3).await?;
    let client = c.client(0)?;
    client
        .create_stream(
            "d",
            StreamConfig {
                partitions: 4,
                replication_factor: Some(3),
                ..StreamConfig::default()
            },
        )
        .await?;
    let url = c.url(0).context("up")?;
    let dead = support::cluster::free_port()?;
    let (status, body) = post(
        &format!("{url}/v1/cluster/join"),
        Some(
            json!({"id": 4, "raft_addr": format!("127.0.0.1:{dead}"), "http_addr": "127.0.0.1:9"}),
        ),
    )
    .await?;
    ensure!(status == 204, "join: {status} {body}");
    // Long enough for the mover to try (it moves within a second or two).
    tokio::time::sleep(Duration::from_secs(6)).await;
    for i in 0..3 {
        for g in c.view(i).await?.groups.iter().filter(|g| g.stream == "d") {
            ensure!(
                g.replicas.len() == 3 && !g.replicas.contains(&4),
                "node {}: partition {} has voters {:?}",
                i + 1,
                g.partition,
                g.replicas
            );
        }
    }
    // Every partition still has a majority of real replicas without node 3.
    c.kill(2);
    for p in 0..4u32 {
        let source = (0..)
            .map(|k| format!("src-{k}"))
            .find(|s| cairn_types::partition_for_source(s, 4) == p)
            .expect("a source for every partition");
        let entry = NewEntry {
            timestamp: None,
            level: None,
            source,
            message: format!("p{p}"),
            attributes: Default::default(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match client.append("d", std::slice::from_ref(&entry)).await {
                Ok(_) => break,
                // Elections after the kill: retry for a while.
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => bail!("partition {p} cannot commit with node 3 down: {e}"),
            }
        }
    }
    Ok(())
}

/// Two nodes joining a 3-node cluster become controller voters together
/// (five voters survive two failures); one alone stays a learner, which
/// keeps the voter set odd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_nodes_become_controller_voters_in_pairs() -> Result<()> {
    let mut c = TestCluster::start(3).await?;
    c.join_node(0)?;
    c.wait_ready(4).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let voters = |v: &cairn_client::ClusterView| {
        v.nodes
            .iter()
            .filter(|n| n.voter)
            .map(|n| n.id)
            .collect::<Vec<_>>()
    };
    let v = c.view(0).await?;
    ensure!(
        voters(&v) == vec![1, 2, 3],
        "one joined node: {:?}",
        v.nodes
    );
    c.join_node(0)?;
    c.wait_ready(5).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = c.view(0).await?;
        if voters(&v) == vec![1, 2, 3, 4, 5] {
            break;
        }
        ensure!(Instant::now() < deadline, "voters stayed {:?}", voters(&v));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
