//! Replicated retention on a real 3-node cluster: the leader's cuts go
//! through Raft so every replica's log starts at the same index; a
//! follower stopped while retention moved past everything it had catches
//! up by snapshot (the retained log fetched from the leader), serves the
//! same entries and holds the same batches byte for byte, and anti-entropy
//! finds nothing to repair; killing the leader and the receiving follower
//! in the middle of a transfer loses no acknowledged entry within
//! retention; the directory of a stream deleted while a node was down
//! is removed after the node restarts and the grace period passes; and,
//! before any cut, a replica further behind than the replay window
//! (`--snapshot-behind`) — a new one, or a node back from an outage —
//! arrives by snapshot too, the latter fetching only what it lacks, and
//! killing both ends of such a transfer loses nothing either.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cairn_client::{
    ClusterView, Consistency, GroupView, OffsetEntry, ReadParams, ScanRequest, StreamConfig,
};
use support::cluster::TestCluster;
use support::load::Load;

const STREAM: &str = "ret";
const SEGMENT_BYTES: u64 = 16 << 10;

async fn group_view(c: &TestCluster, i: usize) -> Result<GroupView> {
    let v: ClusterView = c.view(i).await?;
    v.groups
        .into_iter()
        .find(|g| g.stream == STREAM && g.partition == 0)
        .context("no replica of the partition on this node")
}

async fn create(c: &TestCluster, retention_bytes: u64) -> Result<()> {
    c.client(0)?
        .create_stream(
            STREAM,
            StreamConfig {
                partitions: 1,
                replication_factor: Some(3),
                segment_bytes: SEGMENT_BYTES,
                retention_bytes: Some(retention_bytes),
                ..StreamConfig::default()
            },
        )
        .await?;
    c.wait_groups(STREAM, 1).await
}

/// Waits until the leader's log start has moved past `index` and at
/// least `cuts` more times than when called; answers the leader's view.
async fn wait_for_cuts(
    c: &TestCluster,
    leader: usize,
    index: u64,
    cuts: usize,
) -> Result<GroupView> {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let g = group_view(c, leader).await?;
        seen.insert(g.log_start_index);
        if g.log_start_index > index && seen.len() > cuts {
            return Ok(g);
        }
        if Instant::now() > deadline {
            bail!(
                "retention did not cut past {index} {cuts} times within 180 s: {g:?}, starts seen {seen:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every node's replica reports the same log start (index and
/// offset), applied index and committed end, with nothing catching up;
/// answers the views. (A replica purges an applied cut on its next
/// retention pass, so the start offsets may differ for a moment.)
async fn wait_converged(c: &TestCluster) -> Result<Vec<GroupView>> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut views = Vec::new();
        for i in c.live() {
            if let Ok(g) = group_view(c, i).await {
                views.push(g);
            }
        }
        let same = views.len() == c.live().len()
            && views.windows(2).all(|w| {
                (
                    w[0].log_start_index,
                    w[0].start_offset,
                    w[0].applied_index,
                    w[0].committed_end_offset,
                ) == (
                    w[1].log_start_index,
                    w[1].start_offset,
                    w[1].applied_index,
                    w[1].committed_end_offset,
                )
            })
            && views.iter().all(|g| g.catching_up.is_none());
        if same {
            return Ok(views);
        }
        if Instant::now() > deadline {
            bail!("replicas did not converge within 120 s: {views:#?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every live replica reports the same log start, past 0
/// (writes may go on meanwhile); answers it.
async fn wait_same_log_start(c: &TestCluster) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut starts = Vec::new();
        for i in c.live() {
            if let Ok(g) = group_view(c, i).await {
                starts.push(g.log_start_index);
            }
        }
        if starts.len() == c.live().len()
            && starts[0] > 0
            && starts.windows(2).all(|w| w[0] == w[1])
        {
            return Ok(starts[0]);
        }
        if Instant::now() > deadline {
            bail!("replicas' log starts differ after 60 s: {starts:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every committed entry from `from` on, as node `i` serves it.
async fn read_from(c: &TestCluster, i: usize, from: u64) -> Result<Vec<OffsetEntry>> {
    let client = c.client(i)?;
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let page = client
            .read(
                STREAM,
                0,
                ReadParams {
                    offset: Some(offset),
                    limit: Some(10_000),
                    consistency: Some(Consistency::Any),
                },
            )
            .await?;
        let done = page.entries.is_empty() || page.next_offset >= page.end_offset;
        out.extend(page.entries);
        if done {
            return Ok(out);
        }
        offset = page.next_offset;
    }
}

/// Every node serves the same entries from the highest start offset on,
/// and every acknowledged entry at or after it is there.
async fn same_entries_everywhere(
    c: &TestCluster,
    views: &[GroupView],
    acked: &BTreeMap<(u32, u64), String>,
) -> Result<u64> {
    let from = views.iter().map(|g| g.start_offset).max().unwrap_or(0);
    let reference = read_from(c, c.live()[0], from).await?;
    ensure!(!reference.is_empty(), "nothing retained from offset {from}");
    for i in c.live().into_iter().skip(1) {
        let got = read_from(c, i, from).await?;
        ensure!(
            got == reference,
            "node {} serves {} entries from {from}, node {} {}",
            i + 1,
            got.len(),
            c.live()[0] + 1,
            reference.len()
        );
    }
    for ((_, off), message) in acked.range((0, from)..(1, 0)) {
        let e = reference
            .get((off - from) as usize)
            .with_context(|| format!("acknowledged {message} at offset {off} is missing"))?;
        ensure!(
            e.offset == *off && &e.entry.message == message,
            "offset {off}: acknowledged {message}, stored {:?}",
            e
        );
    }
    Ok(from)
}

/// A stopped node's (`node-N`) replica of `group`: its first and next
/// index and every batch between.
fn replica_batches(dir: &Path, node: usize, group: u64) -> Result<(u64, u64, Vec<bytes::Bytes>)> {
    let data = cairn_storage::DataDir::open(
        dir.join(format!("node-{node}")),
        cairn_storage::DataDirOptions::default(),
    )?;
    let log = data.open_log(
        format!("groups/{group:016x}"),
        cairn_storage::LogConfig::default(),
    )?;
    let (first, end) = log.index_bounds();
    let batches = log.read_index_range(first..end, usize::MAX)?;
    ensure!(
        batches.len() as u64 == end - first,
        "node {node}: {} batches in [{first}, {end})",
        batches.len()
    );
    data.close_log(&log)?;
    data.shutdown()?;
    Ok((
        first,
        end,
        batches.iter().map(|b| b.as_bytes().clone()).collect(),
    ))
}

/// The replicas' batches, read from the stopped nodes' data directories
/// (`node-N` for each N in `nodes`), are byte-identical from the highest
/// first index on.
fn batches_identical(dir: &Path, group: u64, nodes: &[usize]) -> Result<()> {
    let mut replicas = Vec::new();
    for &node in nodes {
        let (first, end, bytes) = replica_batches(dir, node, group)?;
        replicas.push((node, first, end, bytes));
    }
    let from = replicas.iter().map(|r| r.1).max().unwrap_or(0);
    let end = replicas[0].2;
    for (node, first, e, _) in &replicas {
        ensure!(
            *e == end,
            "node {node} ends at {e}, node {} at {end}",
            replicas[0].0
        );
        ensure!(*first <= from, "node {node} starts at {first}");
    }
    let at = |r: &(usize, u64, u64, Vec<bytes::Bytes>), i: u64| r.3[(i - r.1) as usize].clone();
    for i in from..end {
        let reference = at(&replicas[0], i);
        for r in &replicas[1..] {
            ensure!(
                at(r, i) == reference,
                "node {}'s batch at index {i} differs from node {}'s",
                r.0,
                replicas[0].0
            );
        }
    }
    ensure!(end > from, "no batch retained");
    Ok(())
}

async fn scan_clean(c: &TestCluster) -> Result<()> {
    let scan = c
        .client(c.live()[0])?
        .anti_entropy_scan(&ScanRequest {
            deep: true,
            ..ScanRequest::default()
        })
        .await?;
    ensure!(scan.failed.is_empty(), "not scanned: {:?}", scan.failed);
    for r in &scan.reports {
        ensure!(
            r.outcome == "clean" && r.divergent.is_empty() && r.bytes_repaired == 0,
            "not clean: {r:?}"
        );
        ensure!(r.replicas.len() == 3, "compared only {:?}", r.replicas);
    }
    Ok(())
}

/// Index (0-based) of a follower of the partition, and the leader's.
async fn roles(c: &TestCluster) -> Result<(usize, usize)> {
    let leader = c.leader_of(STREAM, 0).await.context("no leader")? as usize - 1;
    Ok(((leader + 1) % 3, leader))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_log_start_catches_up_by_snapshot() -> Result<()> {
    let mut c = TestCluster::start_with(3, &["--retention-check-ms", "200"]).await?;
    create(&c, 3 * SEGMENT_BYTES).await?;
    let load = Load::start(&c, STREAM, 1);
    let (follower, leader) = roles(&c).await?;

    // Retention runs on every replica and cuts the same prefix.
    wait_for_cuts(&c, leader, 0, 1).await?;
    wait_same_log_start(&c).await?;

    c.kill(follower);
    load.urls.lock()[follower] = None;
    // What the stopped follower may hold: its log can run past its applied
    // index, up to what the leader had appended — and a cut below its log
    // end is caught up on from the log, not a snapshot. The leader's
    // applied index a moment after the kill, plus the entries in flight,
    // bounds it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let behind = group_view(&c, leader).await?.applied_index.unwrap_or(0) + 64;
    // Two more cuts, the last past everything the stopped follower has:
    // only a snapshot can bring it back.
    let cut = wait_for_cuts(&c, leader, behind + 1, 2).await?;
    c.start_node(follower)?;
    load.urls.lock()[follower] = c.url(follower);

    // It catches up while the load goes on.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(g) = group_view(&c, follower).await
            && g.log_start_index >= cut.log_start_index
            && g.applied_index >= cut.applied_index
        {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the restarted follower did not catch up within 120 s: {:?}",
                group_view(&c, follower).await
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A cut past everything the install brought: the follower must then
    // start where the others do. (Its segments line up with the leader's
    // here — the install continues the last staged segment, and segments
    // roll by size alike — so a first segment straddling the cut is
    // tested in cairn-storage's tests/install.rs.)
    let installed_end = group_view(&c, follower).await?.applied_index.unwrap_or(0);
    wait_for_cuts(&c, leader, installed_end + 1, 1).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (ok, _, acked) = load.stop().await?;
    ensure!(ok > 0, "no write was acknowledged");

    // Converged includes the same start offset everywhere.
    let views = wait_converged(&c).await?;
    let from = same_entries_everywhere(&c, &views, &acked).await?;
    // Below the start every replica refuses alike.
    for i in c.live() {
        let below = c
            .client(i)?
            .read(
                STREAM,
                0,
                ReadParams {
                    offset: Some(from - 1),
                    limit: Some(1),
                    consistency: Some(Consistency::Any),
                },
            )
            .await;
        ensure!(
            below.is_err(),
            "node {} serves offset {} below the log start: {below:?}",
            i + 1,
            from - 1
        );
    }
    scan_clean(&c).await?;
    // It came back through a snapshot, not the log.
    let http = c.client_options().http_client()?;
    let text = support::metrics(&http, &c.url(follower).context("follower down")?).await?;
    ensure!(
        support::sum_samples(&text, "cairn_snapshot_catchups_completed_total") >= 1.0,
        "the follower completed no catch-up by snapshot"
    );
    ensure!(
        support::sum_samples(&text, "cairn_partition_log_start_index{") as u64
            == views[0].log_start_index,
        "the follower's log start metric disagrees with its view"
    );
    println!(
        "log start index {} (offset {from}) on every replica; {} batches written",
        views[0].log_start_index, ok
    );
    let group = views[0].group;
    for i in 0..3 {
        c.kill(i);
    }
    batches_identical(c.dir.path(), group, &[1, 2, 3])
}

/// Waits until the restarted `follower` reports a catch-up under way, then
/// SIGKILLs it and the `leader` and starts both again, the load writing
/// through them once more.
async fn kill_both_ends_mid_transfer(
    c: &mut TestCluster,
    load: &Load,
    leader: usize,
    follower: usize,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(g) = group_view(c, follower).await
            && let Some(progress) = g.catching_up
        {
            println!("transfer under way: {progress:?}");
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the follower never reported catching up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.kill(leader);
    c.kill(follower);
    load.urls.lock()[leader] = None;
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.start_node(leader)?;
    c.start_node(follower)?;
    load.urls.lock()[leader] = c.url(leader);
    load.urls.lock()[follower] = c.url(follower);
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_leader_and_follower_mid_transfer_loses_no_acknowledged_entry() -> Result<()> {
    // A slow transfer (64 kB/s) of a retained log of a few hundred kB.
    let mut c = TestCluster::start_with(
        3,
        &["--retention-check-ms", "200", "--snapshot-rate", "64k"],
    )
    .await?;
    create(&c, 16 * SEGMENT_BYTES).await?;
    let load = Load::start(&c, STREAM, 1);
    let (follower, leader) = roles(&c).await?;
    wait_for_cuts(&c, leader, 0, 1).await?;
    c.kill(follower);
    load.urls.lock()[follower] = None;
    // What the stopped follower may hold: its log can run past its applied
    // index, up to what the leader had appended — and a cut below its log
    // end is caught up on from the log, not a snapshot. The leader's
    // applied index a moment after the kill, plus the entries in flight,
    // bounds it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let behind = group_view(&c, leader).await?.applied_index.unwrap_or(0) + 64;
    wait_for_cuts(&c, leader, behind + 1, 1).await?;
    c.start_node(follower)?;

    kill_both_ends_mid_transfer(&mut c, &load, leader, follower).await?;
    let (ok, _, acked) = load.stop().await?;
    ensure!(ok > 0, "no write was acknowledged");
    let views = wait_converged(&c).await?;
    let from = same_entries_everywhere(&c, &views, &acked).await?;
    println!(
        "after the kills: log start index {} (offset {from}), {} acknowledged entries checked",
        views[0].log_start_index,
        acked.range((0, from)..(1, 0)).count()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_deleted_while_a_node_is_down_leaves_no_directory() -> Result<()> {
    const GRACE: Duration = Duration::from_secs(3);
    let mut c = TestCluster::start_with(3, &["--orphan-grace", "3s"]).await?;
    create(&c, 1 << 30).await?;
    let group = group_view(&c, 2).await?.group;
    let groups = c.dir.path().join("node-3").join("groups");
    let dir = groups.join(format!("{group:016x}"));
    ensure!(dir.exists(), "{} missing", dir.display());
    c.kill(2);
    c.client(0)?.delete_stream(STREAM).await?;
    // What a crash in the middle of removing a group, or of staging a
    // snapshot, leaves behind: directories no metadata names.
    let leftovers = [
        groups.join("00000fff00000000"),
        groups.join("00000fff00000001.snap"),
    ];
    for d in &leftovers {
        std::fs::create_dir_all(d)?;
        std::fs::write(d.join("00000000000000000000-00000000000000000000.log"), b"")?;
    }
    let restarted = Instant::now();
    c.start_node(2)?;
    c.wait_ready(3).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while dir.exists() || leftovers.iter().any(|d| d.exists()) {
        if Instant::now() > deadline {
            bail!("group directories still there 60 s after the restart");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Unowned directories are kept for the grace period first.
    ensure!(
        restarted.elapsed() >= GRACE,
        "removed {:?} after the restart, before the grace period",
        restarted.elapsed()
    );
    // The other nodes removed theirs when the stream was deleted.
    for node in ["node-1", "node-2"] {
        let other = c
            .dir
            .path()
            .join(node)
            .join("groups")
            .join(format!("{group:016x}"));
        ensure!(!other.exists(), "{} still exists", other.display());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_compacts_its_log_and_a_lagging_node_catches_up_from_its_snapshot()
-> Result<()> {
    let mut c = TestCluster::start_with(3, &["--controller-snapshot-every", "20"]).await?;
    c.kill(2);
    let client = c.client(0)?;
    // Each create and delete is a controller entry: well past the entries
    // a snapshot keeps, so node 3 cannot catch up from the log.
    for i in 0..80 {
        let name = format!("tmp-{i}");
        client
            .create_stream(
                &name,
                StreamConfig {
                    partitions: 1,
                    replication_factor: Some(1),
                    ..StreamConfig::default()
                },
            )
            .await?;
        client.delete_stream(&name).await?;
    }
    client
        .create_stream(
            "kept",
            StreamConfig {
                partitions: 1,
                replication_factor: Some(2),
                ..StreamConfig::default()
            },
        )
        .await?;
    let root = c.dir.path().to_path_buf();
    let purged = |node: &str| root.join(node).join("controller/log/purged.json").exists();
    // A leader purges once no replication stream reads the range (the
    // one to the stopped node retries): give it a moment.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(purged("node-1") && purged("node-2")) {
        ensure!(
            Instant::now() < deadline,
            "the controller log was not purged within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.start_node(2)?;
    c.wait_ready(3).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let streams = c.client(2)?.list_streams().await?;
        let names: Vec<&str> = streams.iter().map(|s| s.name.as_str()).collect();
        if names == ["kept"] {
            break;
        }
        if Instant::now() > deadline {
            bail!("node 3 sees streams {names:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(
        purged("node-3"),
        "node 3's controller log was not compacted"
    );
    Ok(())
}

/// A node joins (node 4) and `follower` is decommissioned, so its replica
/// moves to node 4; waits until the follower has left the cluster, the
/// load writing through node 4 instead. Answers node 4's index.
async fn move_follower_to_new_node(
    c: &mut TestCluster,
    load: &Load,
    follower: usize,
    leader: usize,
) -> Result<usize> {
    let new = c.join_node(0)?;
    c.wait_ready(4).await?;
    load.urls.lock().push(c.url(new));
    let r = c
        .client_options()
        .http_client()?
        .post(format!(
            "{}/v1/cluster/nodes/{}/decommission",
            c.url(leader).context("leader down")?,
            follower + 1
        ))
        .send()
        .await?;
    ensure!(r.status() == 202, "decommission: {}", r.text().await?);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = c.view(leader).await?;
        if !v.nodes.iter().any(|n| n.id == follower as u64 + 1) {
            break;
        }
        ensure!(Instant::now() < deadline, "the follower never left");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    load.urls.lock()[follower] = None;
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(new)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_moved_to_a_new_node_arrives_by_snapshot() -> Result<()> {
    let mut c = TestCluster::start_with(3, &["--retention-check-ms", "200"]).await?;
    create(&c, 3 * SEGMENT_BYTES).await?;
    let load = Load::start(&c, STREAM, 1);
    let (follower, leader) = roles(&c).await?;
    wait_for_cuts(&c, leader, 0, 1).await?;

    // Node 4 joins; a follower is decommissioned, so its replica moves to
    // node 4, which can only be given the retained log by a snapshot.
    let new = move_follower_to_new_node(&mut c, &load, follower, leader).await?;
    let (_, _, acked) = load.stop().await?;
    c.kill(follower);
    let views = wait_converged(&c).await?;
    ensure!(views.len() == 3, "replicas: {views:?}");
    same_entries_everywhere(&c, &views, &acked).await?;
    let http = c.client_options().http_client()?;
    let text = support::metrics(&http, &c.url(new).context("node 4 down")?).await?;
    ensure!(
        support::sum_samples(&text, "cairn_snapshot_catchups_completed_total") >= 1.0,
        "node 4 got its replica without a snapshot"
    );
    Ok(())
}

/// Flags for a cluster that cuts nothing but switches a follower more
/// than 64 KiB (four segments) behind to a snapshot.
const SMALL_WINDOW: [&str; 4] = ["--retention-check-ms", "200", "--snapshot-behind", "64k"];

/// Waits until the leader (index `leader`) has applied `index`.
async fn wait_applied(c: &TestCluster, leader: usize, index: u64) -> Result<GroupView> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let g = group_view(c, leader).await?;
        if g.applied_index.is_some_and(|a| a >= index) {
            return Ok(g);
        }
        ensure!(
            Instant::now() < deadline,
            "the leader did not apply index {index} within 120 s: {g:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn catchup_figures(c: &TestCluster, i: usize) -> Result<(f64, f64)> {
    let http = c.client_options().http_client()?;
    let text = support::metrics(&http, &c.url(i).context("node down")?).await?;
    Ok((
        support::sum_samples(&text, "cairn_snapshot_catchups_completed_total"),
        support::sum_samples(&text, "cairn_snapshot_catchup_bytes_total"),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_any_cut_a_replica_moved_to_a_new_node_arrives_by_snapshot() -> Result<()> {
    let mut c = TestCluster::start_with(3, &SMALL_WINDOW).await?;
    create(&c, 1 << 30).await?;
    let load = Load::start(&c, STREAM, 1);
    let (follower, leader) = roles(&c).await?;
    // Well past the window (about 170 kB in 1200 batches), and the
    // leader's openraft has purged up to it.
    wait_applied(&c, leader, 1200).await?;
    let http = c.client_options().http_client()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = support::metrics(&http, &c.url(leader).context("leader down")?).await?;
        if support::sum_samples(&text, "cairn_retention_purges_total") >= 1.0 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the leader never purged its Raft log to the window"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let new = move_follower_to_new_node(&mut c, &load, follower, leader).await?;
    let (_, _, acked) = load.stop().await?;
    c.kill(follower);
    let views = wait_converged(&c).await?;
    ensure!(views.len() == 3, "replicas: {views:?}");
    ensure!(
        views
            .iter()
            .all(|g| g.log_start_index == 0 && g.start_offset == 0),
        "nothing was cut, yet a log does not start at 0: {views:?}"
    );
    same_entries_everywhere(&c, &views, &acked).await?;
    let (completed, fetched) = catchup_figures(&c, new).await?;
    ensure!(
        completed >= 1.0,
        "node 4 got its replica entry by entry, not by snapshot"
    );
    println!("node 4 arrived by snapshot: {fetched} bytes fetched");
    let group = views[0].group;
    let kept: Vec<usize> = c.live().into_iter().map(|i| i + 1).collect();
    for i in c.live() {
        c.kill(i);
    }
    batches_identical(c.dir.path(), group, &kept)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_any_cut_a_follower_back_from_an_outage_fetches_only_what_it_lacks() -> Result<()> {
    const HELD: u64 = 300;
    let mut c = TestCluster::start_with(3, &SMALL_WINDOW).await?;
    create(&c, 1 << 30).await?;
    let load = Load::start(&c, STREAM, 1);
    let (follower, leader) = roles(&c).await?;
    // The follower holds at least the first HELD batches when it stops.
    wait_applied(&c, leader, HELD + 100).await?;
    c.kill(follower);
    load.urls.lock()[follower] = None;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped_at = group_view(&c, leader).await?.applied_index.unwrap_or(0) + 64;
    // Far more than the window written while it is down.
    let target = wait_applied(&c, leader, stopped_at + 500).await?;
    c.start_node(follower)?;
    load.urls.lock()[follower] = c.url(follower);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(g) = group_view(&c, follower).await
            && g.applied_index >= target.applied_index
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the restarted follower did not catch up within 120 s: {:?}",
            group_view(&c, follower).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, _, acked) = load.stop().await?;
    ensure!(ok > 0, "no write was acknowledged");
    let views = wait_converged(&c).await?;
    same_entries_everywhere(&c, &views, &acked).await?;
    scan_clean(&c).await?;
    let (completed, fetched) = catchup_figures(&c, follower).await?;
    ensure!(completed >= 1.0, "the follower came back entry by entry");
    let group = views[0].group;
    for i in 0..3 {
        c.kill(i);
    }
    // What it fetched is what it lacked: nothing of the batches it held.
    let (first, _, batches) = replica_batches(c.dir.path(), follower + 1, group)?;
    ensure!(first == 0, "the follower's log starts at {first}");
    let total: usize = batches.iter().map(|b| b.len()).sum();
    let held: usize = batches[..HELD as usize].iter().map(|b| b.len()).sum();
    println!("the follower fetched {fetched} bytes of a {total}-byte log; it held {held}+");
    ensure!(
        fetched as usize + held <= total,
        "fetched {fetched} bytes of a {total}-byte log, though it held the first {held}"
    );
    batches_identical(c.dir.path(), group, &[1, 2, 3])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_any_cut_killing_both_ends_mid_append_transfer_loses_nothing() -> Result<()> {
    // A slow transfer (64 kB/s) of what the follower lacks, no cut.
    let mut c = TestCluster::start_with(
        3,
        &[
            "--retention-check-ms",
            "200",
            "--snapshot-behind",
            "64k",
            "--snapshot-rate",
            "64k",
        ],
    )
    .await?;
    create(&c, 1 << 30).await?;
    let load = Load::start(&c, STREAM, 1);
    let (follower, leader) = roles(&c).await?;
    wait_applied(&c, leader, 200).await?;
    c.kill(follower);
    load.urls.lock()[follower] = None;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped_at = group_view(&c, leader).await?.applied_index.unwrap_or(0) + 64;
    wait_applied(&c, leader, stopped_at + 1500).await?;
    c.start_node(follower)?;
    kill_both_ends_mid_transfer(&mut c, &load, leader, follower).await?;
    let (ok, _, acked) = load.stop().await?;
    ensure!(ok > 0, "no write was acknowledged");
    let views = wait_converged(&c).await?;
    ensure!(
        views.iter().all(|g| g.log_start_index == 0),
        "nothing was cut, yet a log does not start at 0: {views:?}"
    );
    let from = same_entries_everywhere(&c, &views, &acked).await?;
    ensure!(from == 0, "entries served only from offset {from}");
    println!(
        "after the kills: {} acknowledged entries checked",
        acked.len()
    );
    let group = views[0].group;
    for i in 0..3 {
        c.kill(i);
    }
    batches_identical(c.dir.path(), group, &[1, 2, 3])
}
