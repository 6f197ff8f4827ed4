//! Alert delivery against live receivers: three real `cairn node`
//! processes post to a webhook the test serves itself (axum on a free
//! loopback port). A slow disk injected on node 2 must reach it as a firing
//! `CairnSlowDisk` alert with the right labels, and its resolution must
//! follow once the fault is cleared — while the nodes' Alertmanager is a
//! receiver that accepts connections and never answers, which must hold up
//! neither the webhook nor the monitor.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use axum::Json;
use axum::routing::post;
use parking_lot::Mutex;
use serde_json::{Value, json};

use support::cluster::TestCluster;

/// Every body the webhook received, in order.
type Received = Arc<Mutex<Vec<Value>>>;

/// Serves `POST /hook` on a free loopback port, recording each body.
async fn receiver() -> Result<(String, Received, tokio::task::JoinHandle<()>)> {
    let got: Received = Arc::default();
    let app = {
        let got = got.clone();
        axum::Router::new().route(
            "/hook",
            post(move |Json(body): Json<Value>| {
                got.lock().push(body);
                async { axum::http::StatusCode::OK }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, got, server))
}

/// The first `CairnSlowDisk` alert with `status` the webhook received, and
/// the body it came in; waits up to `limit`.
async fn wait_for(got: &Received, status: &str, limit: Duration) -> Result<(Value, Value)> {
    let deadline = Instant::now() + limit;
    loop {
        let found = got.lock().iter().find_map(|body| {
            body["alerts"]
                .as_array()?
                .iter()
                .find(|a| a["labels"]["alertname"] == "CairnSlowDisk" && a["status"] == status)
                .map(|a| (a.clone(), body.clone()))
        });
        if let Some(f) = found {
            return Ok(f);
        }
        if Instant::now() > deadline {
            bail!(
                "no {status} CairnSlowDisk within {limit:?}; received: {:?}",
                got.lock()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A counter from `url`'s `/metrics` (0 when absent).
async fn counter(http: &reqwest::Client, url: &str, series: &str) -> Result<f64> {
    let text = support::metrics(http, url).await?;
    Ok(support::sum_samples(&text, &format!("{series} ")))
}

/// Polls node `url`'s `/v1/health` until `done` says so (at most 30 s).
async fn wait_health(
    http: &reqwest::Client,
    url: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let h: Value = http
            .get(format!("{url}/v1/health"))
            .send()
            .await?
            .json()
            .await?;
        if done(&h) {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "{what}: {h}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_webhook_receives_the_alert_and_its_resolution_past_a_hung_alertmanager()
-> Result<()> {
    let (hook, got, server) = receiver().await?;
    // Accepts connections (the kernel's backlog) and never answers: each
    // POST to it hangs until its 2 s timeout, four times per batch.
    let hung = std::net::TcpListener::bind("127.0.0.1:0")?;
    let hung_url = format!("http://{}", hung.local_addr()?);
    // The slow-disk alert fires after 1 s instead of 30, and it is the only
    // rule, so nothing else reaches the receiver.
    let config_dir = tempfile::tempdir()?;
    let config = config_dir.path().join("monitor.toml");
    std::fs::write(
        &config,
        "[[rules]]\nname = \"CairnSlowDisk\"\nfinding = \"slow_disk\"\nfor_seconds = 1\n\
         severity = \"warning\"\nsummary = \"{summary}\"\n",
    )?;
    let config = config.display().to_string();
    let c = TestCluster::start_with(
        3,
        &[
            "--ae-interval",
            "0",
            "--monitor-config",
            &config,
            "--alert-webhook",
            &hook,
            "--alertmanager",
            &hung_url,
        ],
    )
    .await?;
    let http = cairn_client::http_builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let url = |i: usize| c.url(i).expect("node runs");

    // Settled: green before the fault, so the alert is the fault's.
    wait_health(&http, &url(0), "not green at start", |h| {
        h["status"] == "green"
    })
    .await?;

    let r = http
        .post(format!("{}/v1/faults/disk", url(1)))
        .json(&json!({"fsync_delay_ms": 40, "ttl_ms": 60000}))
        .send()
        .await?;
    ensure!(r.status().is_success(), "inject: {}", r.status());
    let injected = Instant::now();
    // Named in ~3 s on a quiet machine (later when other tests share the
    // cores: detection is the monitor test's to time, not this one's).
    wait_health(&http, &url(0), "slow disk not named", |h| {
        h["reasons"].as_array().is_some_and(|rs| {
            rs.iter()
                .any(|r| r["code"] == "slow_disk" && r["subject"]["node"] == 2)
        })
    })
    .await?;
    // Firing 1 s after it is named, delivered at once: the hung
    // Alertmanager must not delay it (its first batch alone takes ~10 s to
    // give up on).
    let (alert, body) = wait_for(&got, "firing", Duration::from_secs(6)).await?;
    eprintln!("webhook: firing after {:?}: {alert}", injected.elapsed());
    ensure!(body["source"] == "cairn", "{body}");
    ensure!(alert["labels"]["node"] == "2", "{alert}");
    ensure!(alert["labels"]["severity"] == "warning", "{alert}");
    ensure!(
        alert["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("node 2")),
        "{alert}"
    );
    ensure!(
        alert["startsAt"].is_string() && alert["endsAt"].is_null(),
        "{alert}"
    );
    // Only the controller leader delivers.
    let sender = body["node"].as_u64().context("body names its node")?;
    let leader = c.view(0).await?.controller_leader;
    ensure!(
        Some(sender) == leader,
        "sent by {sender}, leader {leader:?}"
    );
    ensure!(
        got.lock().iter().all(|b| b["node"] == sender),
        "one sender: {:?}",
        got.lock()
    );

    // Cleared at once: a longer fault would push the disk's slow score up,
    // and that takes its time to come down again.
    let sender_url = url(sender as usize - 1);
    let rounds = "cairn_monitor_rounds_total";
    let before = counter(&http, &sender_url, rounds).await?;
    let r = http
        .delete(format!("{}/v1/faults/disk", url(1)))
        .send()
        .await?;
    ensure!(r.status().is_success(), "clear: {}", r.status());
    let cleared = Instant::now();
    let (resolved, _) = wait_for(&got, "resolved", Duration::from_secs(20)).await?;
    eprintln!(
        "webhook: resolved {:?} after the fault ended",
        cleared.elapsed()
    );
    ensure!(
        resolved["labels"] == alert["labels"],
        "{resolved} vs {alert}"
    );
    ensure!(resolved["endsAt"].is_string(), "{resolved}");
    // The monitor kept its one round a second meanwhile.
    let after = counter(&http, &sender_url, rounds).await?;
    let secs = cleared.elapsed().as_secs_f64();
    ensure!(
        after - before >= (secs * 0.7).floor(),
        "rounds {before} → {after} in {secs:.1} s"
    );

    // Both receivers are accounted for: the webhook's posts succeeded,
    // the hung Alertmanager's first batch is counted as failed (after its
    // retries) rather than blocking anything.
    let ok = counter(
        &http,
        &sender_url,
        "cairn_alert_deliveries_total{receiver=\"webhook\",outcome=\"ok\"}",
    )
    .await?;
    ensure!(ok >= 2.0, "webhook deliveries ok: {ok}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let failed = counter(
            &http,
            &sender_url,
            "cairn_alert_deliveries_total{receiver=\"alertmanager\",outcome=\"failed\"}",
        )
        .await?;
        if failed >= 1.0 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the hung Alertmanager's batch never counted as failed"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(hung);
    server.abort();
    Ok(())
}
