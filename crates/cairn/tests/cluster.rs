//! The replicated cluster with real processes on loopback: writes through
//! any node are readable through every node with identical replicas; no
//! acknowledged write is lost while leaders (or random nodes) are killed
//! with SIGKILL and restarted; an isolated leader cannot commit and its
//! uncommitted tail is discarded after healing; a leader without a quorum
//! steps down; a slow node does not stop writes. Failover times are printed.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use cairn_types::{NewEntry, partition_for_source};
use support::cluster::TestCluster;
use support::load::{Load, entry, verify_acknowledged};

/// A source whose entries land in `partition`.
fn source_for(partition: u32, partitions: u32) -> String {
    (0..)
        .map(|i| format!("svc-{i}"))
        .find(|s| partition_for_source(s, partitions) == partition)
        .expect("some source hashes to every partition")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_any_node_are_readable_through_every_node() -> Result<()> {
    let c = TestCluster::start(3).await?;
    c.create_stream("app", 4).await?;

    let mut expected: HashMap<u32, Vec<String>> = HashMap::new();
    for node in 0..3 {
        let client = c.client(node)?;
        let entries: Vec<NewEntry> = (0..30)
            .map(|i| entry(&format!("svc-{}", i % 9), format!("via node {node} #{i}")))
            .collect();
        let r = client.append("app", &entries).await?;
        ensure!(r.appended == 30, "{r:?}");
        for e in entries {
            expected
                .entry(partition_for_source(&e.source, 4))
                .or_default()
                .push(e.message);
        }
    }
    for p in 0..4u32 {
        let log = c.converged("app", p).await?;
        let messages: Vec<_> = log.iter().map(|e| e.entry.message.clone()).collect();
        let want = expected.get(&p).cloned().unwrap_or_default();
        ensure!(messages == want, "partition {p}: {messages:?} != {want:?}");
        let offsets: Vec<u64> = log.iter().map(|e| e.offset).collect();
        ensure!(offsets == (0..log.len() as u64).collect::<Vec<_>>());
    }
    // Caught-up replicas say so: a follower's read reports lag 0 (asked of
    // the leader), the leader's reports itself.
    for node in 0..3 {
        let r = c
            .client(node)?
            .read(
                "app",
                0,
                cairn_client::ReadParams {
                    offset: None,
                    limit: Some(1),
                    consistency: Some(cairn_client::Consistency::Any),
                },
            )
            .await?;
        ensure!(
            r.served_by == node as u64 + 1 && r.lag_entries == Some(0),
            "node {node}: served_by {} lag {:?}",
            r.served_by,
            r.lag_entries
        );
    }
    // A query through each node sees all 90 entries.
    for node in 0..3 {
        let r = c
            .client(node)?
            .query("app", &cairn_client::QueryParams::default())
            .await?;
        ensure!(
            r.entries.len() == 90 && r.failed_partitions.is_empty(),
            "node {node}: {} entries, failures {:?}",
            r.entries.len(),
            r.failed_partitions
        );
        // `order=newest` reaches the partitions other nodes lead too: the
        // latest five are the oldest-first answer's last five, reversed.
        let newest = c
            .client(node)?
            .query(
                "app",
                &cairn_client::QueryParams {
                    limit: Some(5),
                    order: Some(cairn_client::Order::Newest),
                    ..Default::default()
                },
            )
            .await?;
        let key = |e: &cairn_client::QueryEntry| (e.partition, e.offset);
        let want: Vec<_> = r.entries[85..].iter().rev().map(key).collect();
        let got: Vec<_> = newest.entries.iter().map(key).collect();
        ensure!(
            got == want && newest.truncated,
            "node {node}: newest {got:?} != {want:?}"
        );
    }
    Ok(())
}

/// Kills a node 10 times under load (the leader of partition 0, or a random
/// node), restarting it each time; then checks every acknowledged entry is
/// present exactly once at its offset and all replicas agree.
async fn kill_cycles(kill_leader: bool) -> Result<()> {
    const STREAM: &str = "kills";
    const PARTITIONS: u32 = 2;
    let mut c = TestCluster::start(3).await?;
    c.create_stream(STREAM, PARTITIONS).await?;
    let load = Load::start(&c, STREAM, PARTITIONS);
    let urls = load.urls.clone();
    let probe_source = source_for(0, PARTITIONS);
    let mut failovers = Vec::new();
    let mut rng_state = 0x9e3779b97f4a7c15u64;
    for cycle in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let victim = if kill_leader {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(l) = c.leader_of(STREAM, 0).await {
                    break (l - 1) as usize;
                }
                ensure!(
                    Instant::now() < deadline,
                    "cycle {cycle}: no leader of partition 0"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } else {
            rng_state ^= rng_state << 13;
            rng_state ^= rng_state >> 7;
            rng_state ^= rng_state << 17;
            (rng_state % 3) as usize
        };
        urls.lock()[victim] = None;
        let killed = Instant::now();
        c.kill(victim);
        // Failover: the first commit on partition 0 after the kill.
        let survivor = c.live()[0];
        let client = c.client(survivor)?;
        loop {
            let e = entry(&probe_source, format!("probe-{cycle}"));
            if client.append(STREAM, &[e]).await.is_ok() {
                break;
            }
            ensure!(
                killed.elapsed() < Duration::from_secs(30),
                "cycle {cycle}: no commit within 30 s of the kill"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        failovers.push(killed.elapsed());
        c.start_node(victim)?;
        urls.lock()[victim] = c.url(victim);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, failed, acked) = load.stop().await?;
    ensure!(
        ok > 20,
        "too few acknowledged writes ({ok}, {failed} failed) to mean anything"
    );
    verify_acknowledged(&c, STREAM, PARTITIONS, &acked).await?;
    failovers.sort();
    let ms: Vec<u128> = failovers.iter().map(Duration::as_millis).collect();
    println!(
        "kill_cycles(kill_leader={kill_leader}): {} acknowledged batches ({} entries), {failed} failed requests; \
         failover ms: min {} median {} max {} (all: {ms:?})",
        ok,
        acked.len(),
        ms[0],
        ms[ms.len() / 2],
        ms[ms.len() - 1]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_repeatedly_loses_no_acknowledged_write() -> Result<()> {
    kill_cycles(true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_random_nodes_repeatedly_loses_no_acknowledged_write() -> Result<()> {
    kill_cycles(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_cannot_commit_and_its_tail_is_discarded() -> Result<()> {
    const STREAM: &str = "iso";
    let c = TestCluster::start(3).await?;
    c.create_stream(STREAM, 1).await?;
    let before: Vec<NewEntry> = (0..10)
        .map(|i| entry("svc", format!("before-{i}")))
        .collect();
    c.client(0)?.append(STREAM, &before).await?;
    let old = c.leader_of(STREAM, 0).await.context("no leader")?;
    let old_i = (old - 1) as usize;
    let http = cairn_client::http_client();
    let url = c.url(old_i).expect("up");
    let r = http
        .post(format!("{url}/v1/faults/network"))
        .json(&serde_json::json!({"action": "isolate", "ttl_ms": 60_000}))
        .send()
        .await?;
    ensure!(r.status() == 201, "install fault: {}", r.text().await?);

    // Writes to the isolated leader cannot commit: they fail (after the
    // request timeout) instead of being acknowledged.
    let lost_client = c.client(old_i)?;
    let lost = tokio::spawn(async move {
        let entries: Vec<NewEntry> = (0..5).map(|i| entry("svc", format!("lost-{i}"))).collect();
        lost_client.append(STREAM, &entries).await
    });
    // The majority elects a new leader and goes on.
    let others: Vec<usize> = (0..3).filter(|i| *i != old_i).collect();
    let elected = Instant::now();
    let new = loop {
        let mut seen = None;
        for &i in &others {
            if let Ok(v) = c.view(i).await
                && let Some(l) = v
                    .groups
                    .iter()
                    .find(|g| g.stream == STREAM)
                    .and_then(|g| g.leader)
                && l != old
            {
                seen = Some(l);
            }
        }
        if let Some(l) = seen {
            break l;
        }
        ensure!(
            elected.elapsed() < Duration::from_secs(20),
            "majority elected no new leader"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let after: Vec<NewEntry> = (0..10)
        .map(|i| entry("svc", format!("after-{i}")))
        .collect();
    c.client((new - 1) as usize)?.append(STREAM, &after).await?;
    ensure!(
        lost.await?.is_err(),
        "a write to the isolated leader was acknowledged"
    );

    let r = http
        .delete(format!("{url}/v1/faults/network"))
        .send()
        .await?;
    ensure!(r.status() == 204);
    let log = c.converged(STREAM, 0).await?;
    let messages: Vec<String> = log.into_iter().map(|e| e.entry.message).collect();
    ensure!(
        !messages.iter().any(|m| m.starts_with("lost-")),
        "uncommitted entries survived: {messages:?}"
    );
    let expected: Vec<String> = before.into_iter().chain(after).map(|e| e.message).collect();
    ensure!(messages == expected, "{messages:?}");
    println!(
        "isolation: new leader {new} elected {} ms after isolating {old}",
        elected.elapsed().as_millis()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_and_another_is_decommissioned_under_load() -> Result<()> {
    const STREAM: &str = "grow";
    const PARTITIONS: u32 = 4;
    let mut c = TestCluster::start(3).await?;
    c.create_stream(STREAM, PARTITIONS).await?;
    let load = Load::start(&c, STREAM, PARTITIONS);
    let urls = load.urls.clone();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Node 4 joins; the ring gives it some replicas, which are copied to it.
    let joined = Instant::now();
    let new = c.join_node(0)?;
    c.wait_ready(4).await?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let v = c.view(new).await?;
        let led_or_followed = v.groups.iter().filter(|g| g.stream == STREAM).count();
        if led_or_followed > 0 {
            println!(
                "join: node 4 replicates {led_or_followed} partitions {} ms after starting",
                joined.elapsed().as_millis()
            );
            break;
        }
        ensure!(Instant::now() < deadline, "node 4 never received a replica");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    urls.lock().push(c.url(new));

    // Node 2 is decommissioned: its replicas move away, then it leaves.
    let decommissioned = Instant::now();
    let r = cairn_client::http_client()
        .post(format!(
            "{}/v1/cluster/nodes/2/decommission",
            c.url(0).expect("up")
        ))
        .send()
        .await?;
    ensure!(r.status() == 202, "decommission: {}", r.text().await?);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = c.view(0).await?;
        if !v.nodes.iter().any(|n| n.id == 2) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "node 2 still in the cluster: {:?}",
            v.nodes
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "decommission: node 2 left {} ms after the request",
        decommissioned.elapsed().as_millis()
    );
    let v2 = c.view(1).await?;
    ensure!(
        !v2.groups.iter().any(|g| g.stream == STREAM),
        "node 2 still runs groups: {:?}",
        v2.groups
    );
    urls.lock()[1] = None;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, failed, acked) = load.stop().await?;

    // Every acknowledged entry is on every replica, exactly once.
    c.kill(1);
    verify_acknowledged(&c, STREAM, PARTITIONS, &acked).await?;
    let view = c.view(0).await?;
    for g in view.groups.iter().filter(|g| g.stream == STREAM) {
        ensure!(
            !g.replicas.contains(&2),
            "partition {} still on node 2",
            g.partition
        );
    }
    println!("join+decommission: {ok} acknowledged batches, {failed} failed requests");
    Ok(())
}

/// Installs a network fault on node index `i` (see `POST /v1/faults/network`).
async fn inject(c: &TestCluster, i: usize, fault: serde_json::Value) -> Result<()> {
    let url = c.url(i).context("node is down")?;
    let r = cairn_client::http_client()
        .post(format!("{url}/v1/faults/network"))
        .json(&fault)
        .send()
        .await?;
    ensure!(r.status() == 201, "install fault: {}", r.text().await?);
    Ok(())
}

async fn clear_faults(c: &TestCluster, i: usize) -> Result<()> {
    let url = c.url(i).context("node is down")?;
    let r = cairn_client::http_client()
        .delete(format!("{url}/v1/faults/network"))
        .send()
        .await?;
    ensure!(r.status() == 204, "clear faults: {}", r.status());
    Ok(())
}

/// One writer per partition, through the nodes in turn, each batch of a
/// source that lands in its partition: (partition, offset) → message, and
/// the instant of every acknowledgement.
type PartitionAcks = Arc<parking_lot::Mutex<(BTreeMap<(u32, u64), String>, Vec<(u32, Instant)>)>>;

fn write_every_partition(
    c: &TestCluster,
    stream: &'static str,
    partitions: u32,
    stop: Arc<AtomicBool>,
) -> (PartitionAcks, Vec<tokio::task::JoinHandle<()>>) {
    let acks: PartitionAcks = Arc::default();
    let urls: Vec<String> = (0..c.nodes.len()).filter_map(|i| c.url(i)).collect();
    let tasks = (0..partitions)
        .map(|p| {
            let (acks, urls, stop) = (acks.clone(), urls.clone(), stop.clone());
            let source = source_for(p, partitions);
            tokio::spawn(async move {
                let http = cairn_client::http_builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("client");
                let mut seq = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let url = &urls[seq % urls.len()];
                    let e = entry(&source, format!("p{p}-w{seq}"));
                    seq += 1;
                    let client =
                        cairn_client::Client::with_http_client(url, http.clone()).expect("url");
                    match client.append(stream, std::slice::from_ref(&e)).await {
                        Ok(r) => {
                            let offset = r.partitions[0].base_offset;
                            let mut a = acks.lock();
                            a.0.insert((p, offset), e.message);
                            a.1.push((p, Instant::now()));
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        })
        .collect();
    (acks, tasks)
}

/// Under steady writes to every partition, `delay_ms` ± 5 ms is injected on
/// every link of node 3 (both directions, so round trips to it grow by
/// twice that) for 10 s. Every partition keeps acknowledging writes —
/// those node 3 led commit slower or move — and everything acknowledged is
/// readable afterwards.
async fn slow_node_keeps_writes_flowing(delay_ms: u64) -> Result<()> {
    const STREAM: &str = "slow";
    const PARTITIONS: u32 = 3;
    const FAULT: Duration = Duration::from_secs(10);
    let c = TestCluster::start(3).await?;
    c.create_stream(STREAM, PARTITIONS).await?;
    let mut led_by_3 = Vec::new();
    for p in 0..PARTITIONS {
        if c.leader_of(STREAM, p).await == Some(3) {
            led_by_3.push(p);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (acks, writers) = write_every_partition(&c, STREAM, PARTITIONS, stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;

    let started = Instant::now();
    inject(
        &c,
        2,
        serde_json::json!({"action": "delay", "delay_ms": delay_ms, "jitter_ms": 5,
                           "ttl_ms": FAULT.as_millis() as u64 + 5_000}),
    )
    .await?;
    tokio::time::sleep(FAULT).await;
    let ended = Instant::now();
    clear_faults(&c, 2).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await?;
    }

    let (acked, times) = acks.lock().clone();
    // Per partition: the longest stretch of the fault window without an
    // acknowledgement, and acknowledgements per second of the window.
    for p in 0..PARTITIONS {
        let mut at: Vec<Instant> = times
            .iter()
            .filter(|(q, t)| *q == p && *t >= started && *t <= ended)
            .map(|(_, t)| *t)
            .collect();
        at.sort();
        let mut edges = vec![started];
        edges.extend(at.iter().copied());
        edges.push(ended);
        let longest = edges
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        let per_sec: Vec<usize> = (0..FAULT.as_secs())
            .map(|s| {
                let from = started + Duration::from_secs(s);
                let to = from + Duration::from_secs(1);
                at.iter().filter(|t| **t >= from && **t < to).count()
            })
            .collect();
        println!(
            "delay {delay_ms} ms on node 3: partition {p} (led by node 3 before: {}): \
             acks/s {per_sec:?}, longest gap {} ms",
            led_by_3.contains(&p),
            longest.as_millis()
        );
        // "A couple of seconds": room for one failover, never the outage.
        ensure!(
            longest < Duration::from_secs(3),
            "partition {p} acknowledged nothing for {} ms under {delay_ms} ms delay",
            longest.as_millis()
        );
    }
    ensure!(
        acked.len() > 30,
        "too few acknowledged writes: {}",
        acked.len()
    );
    verify_acknowledged(&c, STREAM, PARTITIONS, &acked).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_keep_flowing_with_50ms_delay_on_one_node() -> Result<()> {
    slow_node_keeps_writes_flowing(50).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_keep_flowing_with_150ms_delay_on_one_node() -> Result<()> {
    slow_node_keeps_writes_flowing(150).await
}

/// A leader cut off from both followers stops claiming leadership within
/// two election timeouts (default 400..800 ms), as seen through its own
/// `GET /v1/cluster`, while the other two elect a leader and take writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_without_quorum_steps_down() -> Result<()> {
    const STREAM: &str = "stepdown";
    const ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(800);
    let c = TestCluster::start(3).await?;
    c.create_stream(STREAM, 1).await?;
    let before: Vec<NewEntry> = (0..5)
        .map(|i| entry("svc", format!("before-{i}")))
        .collect();
    c.client(0)?.append(STREAM, &before).await?;
    let old = c.leader_of(STREAM, 0).await.context("no leader")?;
    let old_i = (old - 1) as usize;
    let led_controller = c.view(old_i).await?.controller_leader == Some(old);

    let isolated = Instant::now();
    inject(
        &c,
        old_i,
        serde_json::json!({"action": "isolate", "ttl_ms": 60_000}),
    )
    .await?;
    let stepped_down = loop {
        let v = c.view(old_i).await?;
        let leads_partition = v
            .groups
            .iter()
            .any(|g| g.stream == STREAM && g.leader == Some(old));
        let leads_controller = led_controller && v.controller_leader == Some(old);
        if !leads_partition && !leads_controller {
            break isolated.elapsed();
        }
        ensure!(
            isolated.elapsed() < Duration::from_secs(10),
            "node {old} still leads after 10 s without a quorum"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "step-down: node {old} (controller leader: {led_controller}) let go {} ms after isolation",
        stepped_down.as_millis()
    );
    ensure!(
        stepped_down <= 2 * ELECTION_TIMEOUT_MAX,
        "step-down took {} ms, more than two election timeouts",
        stepped_down.as_millis()
    );

    // The other two elect a leader among themselves and accept writes.
    let others: Vec<usize> = (0..3).filter(|i| *i != old_i).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let new = loop {
        let v = c.view(others[0]).await?;
        if let Some(l) = v
            .groups
            .iter()
            .find(|g| g.stream == STREAM)
            .and_then(|g| g.leader)
            && l != old
        {
            break l;
        }
        ensure!(Instant::now() < deadline, "majority elected no new leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let after: Vec<NewEntry> = (0..5).map(|i| entry("svc", format!("after-{i}"))).collect();
    c.client((new - 1) as usize)?.append(STREAM, &after).await?;
    // Still isolated, the old leader does not take leadership back.
    let v = c.view(old_i).await?;
    ensure!(
        !v.groups.iter().any(|g| g.leader == Some(old)),
        "isolated node {old} leads again: {:?}",
        v.groups
    );

    clear_faults(&c, old_i).await?;
    let log = c.converged(STREAM, 0).await?;
    let messages: Vec<String> = log.into_iter().map(|e| e.entry.message).collect();
    let expected: Vec<String> = before.into_iter().chain(after).map(|e| e.message).collect();
    ensure!(messages == expected, "{messages:?}");
    Ok(())
}

/// A follower cut off for several election timeouts does not raise its
/// term (its pre-votes reach no one), so once healed it follows the leader
/// instead of deposing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healed_follower_does_not_depose_the_leader() -> Result<()> {
    const STREAM: &str = "heal";
    let c = TestCluster::start(3).await?;
    c.create_stream(STREAM, 1).await?;
    c.client(0)?
        .append(STREAM, &[entry("svc", "before".to_string())])
        .await?;
    let leader = c.leader_of(STREAM, 0).await.context("no leader")?;
    let term_of = |v: &cairn_client::ClusterView| {
        v.groups
            .iter()
            .find(|g| g.stream == STREAM)
            .map(|g| (g.leader, g.term))
    };
    let (_, term) = term_of(&c.view((leader - 1) as usize).await?).context("group")?;
    let follower = (0..3)
        .find(|i| *i as u64 + 1 != leader)
        .expect("a follower");
    let url = c.url(follower).expect("up");
    let http = cairn_client::http_client();
    let r = http
        .post(format!("{url}/v1/faults/network"))
        .json(&serde_json::json!({"action": "isolate", "ttl_ms": 60_000}))
        .send()
        .await?;
    ensure!(r.status() == 201, "install fault: {}", r.text().await?);
    // Many election timeouts (400–800 ms) without a leader's heartbeat.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (_, cut_off_term) = term_of(&c.view(follower).await?).context("group")?;
    let r = http
        .delete(format!("{url}/v1/faults/network"))
        .send()
        .await?;
    ensure!(r.status() == 204);
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.client(follower)?
        .append(STREAM, &[entry("svc", "after".to_string())])
        .await?;
    for i in 0..3 {
        let (l, t) = term_of(&c.view(i).await?).context("group")?;
        ensure!(
            l == Some(leader) && t == term,
            "node {}: leader {l:?} term {t}; before the isolation leader {leader} term {term} \
             (the cut-off follower reached term {cut_off_term})",
            i + 1
        );
    }
    ensure!(
        cut_off_term == term,
        "the cut-off follower raised its term to {cut_off_term} (was {term})"
    );
    Ok(())
}
