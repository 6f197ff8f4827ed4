//! Remediation with real processes: a slow disk on the leader of several
//! partitions makes the monitor recommend moving them (with the predicted
//! commit p99); applied through the CLI, the action is carried out,
//! verified against the pre-fault baseline and recorded — no write fails
//! and none is lost. With `--remediate leaders` the same happens without
//! an operator.

mod support;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use support::cluster::TestCluster;
use support::load::{Load, verify_acknowledged};

const STREAM: &str = "app";
const PARTITIONS: u32 = 6;

/// A cluster under a steady writer, past its first minute of baseline
/// rounds... or at least 15 s of them, and green.
async fn loaded_cluster(flags: &[&str]) -> Result<(TestCluster, Load)> {
    let mut all = vec!["--ae-interval", "0"];
    all.extend_from_slice(flags);
    let c = TestCluster::start_with(3, &all).await?;
    c.create_stream(STREAM, PARTITIONS).await?;
    let load = Load::start(&c, STREAM, PARTITIONS);
    tokio::time::sleep(Duration::from_secs(15)).await;
    Ok((c, load))
}

async fn get(url: &str, path: &str) -> Result<Value> {
    Ok(cairn_client::http_client()
        .get(format!("{url}{path}"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// The node leading the most partitions, and how many.
async fn busiest_leader(c: &TestCluster) -> Result<(u64, usize)> {
    let view = c.view(0).await?;
    let mut count = std::collections::BTreeMap::<u64, usize>::new();
    for g in view.groups.iter().filter(|g| g.stream == STREAM) {
        *count.entry(g.leader.context("a leader")?).or_default() += 1;
    }
    count.into_iter().max_by_key(|(_, n)| *n).context("leaders")
}

async fn leads(c: &TestCluster, node: u64) -> Result<usize> {
    Ok(c.view(0)
        .await?
        .groups
        .iter()
        .filter(|g| g.stream == STREAM && g.leader == Some(node))
        .count())
}

async fn slow_disk(c: &TestCluster, node: u64) -> Result<()> {
    let url = c.url((node - 1) as usize).context("runs")?;
    let r = cairn_client::http_client()
        .post(format!("{url}/v1/faults/disk"))
        .json(&serde_json::json!({"fsync_delay_ms": 40, "ttl_ms": 120_000}))
        .send()
        .await?;
    ensure!(r.status().is_success(), "disk fault: {}", r.text().await?);
    Ok(())
}

/// Polls the recommendations until `id` is among them.
async fn wait_recommendation(url: &str, id: &str) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = get(url, "/v1/monitor/recommendations").await?;
        if let Some(r) = v["recommendations"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["id"] == id))
        {
            return Ok(r.clone());
        }
        if Instant::now() > deadline {
            let h = get(url, "/v1/health").await?;
            bail!("no {id} within 20 s: {v}\nhealth: {h}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls the action log until action `seq` (or the first action, with
/// `None`) is judged; the record.
async fn wait_judged(url: &str, seq: Option<u64>) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let v = get(url, "/v1/monitor/actions").await?;
        let found = v["actions"].as_array().and_then(|a| {
            a.iter()
                .find(|r| seq.is_none_or(|s| r["seq"] == s))
                .cloned()
        });
        if let Some(r) = &found
            && r["outcome"] != "applied"
        {
            return Ok(r.clone());
        }
        if Instant::now() > deadline {
            bail!("no judged action within 40 s: {v}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recommended_leader_move_off_a_slow_disk_is_applied_verified_and_recorded() -> Result<()>
{
    let (c, load) = loaded_cluster(&[]).await?;
    let (slow, led) = busiest_leader(&c).await?;
    ensure!(led >= 2, "node {slow} leads {led}");
    slow_disk(&c, slow).await?;
    let url = c.url(0).context("runs")?;
    let id = format!("transfer-leaders-off-node-{slow}");
    let rec = wait_recommendation(&url, &id).await?;
    println!("recommendation: {rec:#}");
    ensure!(rec["action"]["kind"] == "transfer_leaders", "{rec}");
    ensure!(rec["action"]["moves"].as_array().map(Vec::len) == Some(led));
    let effect = &rec["predicted_effect"];
    let (from, to) = (
        effect["from"].as_f64().unwrap_or(0.0),
        effect["to"].as_f64().unwrap_or(f64::MAX),
    );
    ensure!(
        from > 30.0 && to < from / 4.0,
        "a slow fsync leader's commit p99 is predicted to drop: {effect}"
    );
    ensure!(rec["automatic"] == true && rec["applicable"] == true);
    // `cairn status` says what to do beside why.
    let status = support::run(&["status", "--server", &url], "")?;
    ensure!(
        status.stdout.contains("what to do:")
            && status
                .stdout
                .contains(&format!("cairn recommend apply {id}")),
        "{}",
        status.stdout
    );

    // The operator applies it through node 3's API (the controller leader
    // runs it, wherever it is).
    let out = support::run_ok(
        &[
            "recommend",
            "apply",
            &id,
            "--server",
            &c.url(2).context("runs")?,
        ],
        "",
    )?;
    ensure!(
        out.stdout.contains("by operator: Applied"),
        "{}",
        out.stdout
    );
    ensure!(leads(&c, slow).await? == 0, "node {slow} still leads");
    let judged = wait_judged(&url, None).await?;
    println!("action: {judged:#}");
    ensure!(judged["outcome"] == "verified", "{judged}");
    ensure!(judged["by"] == "operator");
    let out = support::run_ok(&["recommend", "actions", "--server", &url], "")?;
    ensure!(out.stdout.contains("Verified"), "{}", out.stdout);
    // The performance report lists the action with its judgement.
    let report = support::run_ok(
        &[
            "report", "--window", "2m", "--format", "md", "--server", &url,
        ],
        "",
    )?;
    ensure!(
        report.stdout.contains(&format!("{id} (by operator)"))
            && report.stdout.contains("verified"),
        "{}",
        report.stdout
    );
    // A second apply of the same finding finds nothing left to move.
    let e = c
        .client(1)?
        .apply_recommendation(&id)
        .await
        .expect_err("nothing left to move");
    ensure!(e.to_string().contains("no recommendation"), "{e}");

    let (ok, failed, acked) = load.stop().await?;
    ensure!(failed == 0, "{failed} of {ok} writes failed");
    verify_acknowledged(&c, STREAM, PARTITIONS, &acked).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_automatic_remediation_the_leaders_leave_a_slow_disk_by_themselves() -> Result<()> {
    let (c, load) = loaded_cluster(&["--remediate", "leaders"]).await?;
    let (slow, led) = busiest_leader(&c).await?;
    ensure!(led >= 2, "node {slow} leads {led}");
    let url = c.url(0).context("runs")?;
    let faulted = Instant::now();
    slow_disk(&c, slow).await?;
    let judged = wait_judged(&url, None).await?;
    println!(
        "automatic action judged {:?} after the fault: {judged:#}",
        faulted.elapsed()
    );
    ensure!(judged["by"] == "auto", "{judged}");
    ensure!(
        judged["recommendation"] == format!("transfer-leaders-off-node-{slow}"),
        "{judged}"
    );
    ensure!(judged["outcome"] == "verified", "{judged}");
    ensure!(leads(&c, slow).await? == 0, "node {slow} still leads");
    let (ok, failed, acked) = load.stop().await?;
    ensure!(failed == 0, "{failed} of {ok} writes failed");
    verify_acknowledged(&c, STREAM, PARTITIONS, &acked).await?;
    Ok(())
}
