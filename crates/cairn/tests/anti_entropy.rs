//! Anti-entropy on a real 3-node cluster under write load: bytes flipped in
//! a follower's sealed segment, another partition's follower segment
//! truncated, and a third partition's leader losing a whole segment file
//! are each found by the periodic scan and repaired from the majority;
//! afterwards every replica's log is byte-identical per batch, reads during
//! the damage never returned wrong data, and a scan of the healthy cluster
//! copies nothing. The time from damage to repaired is printed.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cairn_client::{
    AntiEntropyStatus, Client, Consistency, QueryParams, ReadParams, ScanRequest, ScanResponse,
    StreamConfig,
};
use support::cluster::TestCluster;
use support::load::{Acked, Load, verify_acknowledged};

const STREAM: &str = "ae";
const PARTITIONS: u32 = 3;
/// Small segments, so a few seconds of load seal several per partition.
const SEGMENT_BYTES: u64 = 32 << 10;

/// Partition → (group id, leader node id).
async fn groups(c: &TestCluster) -> Result<BTreeMap<u32, (u64, u64)>> {
    let mut out = BTreeMap::new();
    for p in 0..PARTITIONS {
        let leader = c.leader_of(STREAM, p).await.context("partition leader")?;
        let view = c.view(0).await?;
        let g = view
            .groups
            .iter()
            .find(|g| g.stream == STREAM && g.partition == p)
            .context("group of partition")?;
        out.insert(p, (g.group, leader));
    }
    Ok(out)
}

/// A replica's segment files, oldest first.
fn segments(c: &TestCluster, node: u64, group: u64) -> Result<Vec<PathBuf>> {
    let dir = group_dir(c, node, group);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    Ok(files)
}

fn group_dir(c: &TestCluster, node: u64, group: u64) -> PathBuf {
    c.dir
        .path()
        .join(format!("node-{node}"))
        .join("groups")
        .join(format!("{group:016x}"))
}

async fn wait_for_segments(
    c: &TestCluster,
    groups: &BTreeMap<u32, (u64, u64)>,
    n: usize,
) -> Result<()> {
    // Generous: on a loaded 2-core machine the load fills segments slowly.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let mut fewest = usize::MAX;
        for (group, _) in groups.values() {
            for node in 1..=3 {
                fewest = fewest.min(segments(c, node, *group)?.len());
            }
        }
        if fewest >= n {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "replicas did not reach {n} segments (fewest {fewest})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn flip_bytes(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let len = file.metadata()?.len();
    let at = len / 2;
    let mut buf = [0u8; 16];
    file.read_exact_at(&mut buf, at)?;
    for b in &mut buf {
        *b ^= 0x5A;
    }
    file.write_all_at(&buf, at)?;
    Ok(())
}

/// Rewrites the third batch of a segment file into a different batch that
/// still verifies: one payload byte changed, the CRC recomputed. Nothing
/// but a comparison with the other replicas can tell it from the truth.
fn rewrite_a_batch_validly(path: &Path) -> Result<u64> {
    let mut bytes = std::fs::read(path)?;
    let mut at = 0usize;
    for _ in 0..2 {
        at += u32::from_le_bytes(bytes[at..at + 4].try_into()?) as usize;
    }
    let len = u32::from_le_bytes(bytes[at..at + 4].try_into()?) as usize;
    let index = u64::from_le_bytes(bytes[at + 48..at + 56].try_into()?);
    // The last byte of the last entry's message: an ASCII digit or letter
    // stays one with its low bit flipped, so the entry still decodes.
    bytes[at + len - 2] ^= 0x01;
    let crc = crc32c::crc32c(&bytes[at + 8..at + len]);
    bytes[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all_at(&bytes[at..at + len], at as u64)?;
    Ok(index)
}

/// Reads every partition through every node, both consistencies, and
/// queries the stream through every node, until
/// `stop`; counts entries whose acknowledged message differs from what a
/// read returned (must stay 0) and reads that failed.
async fn read_while_damaged(
    urls: Vec<String>,
    acked: Acked,
    stop: Arc<AtomicBool>,
    wrong: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    served: Arc<AtomicU64>,
) {
    while !stop.load(Ordering::Relaxed) {
        for url in &urls {
            let client = Client::new(url).expect("url");
            for p in 0..PARTITIONS {
                for consistency in [Consistency::Any, Consistency::Leader] {
                    let page = client
                        .read(
                            STREAM,
                            p,
                            ReadParams {
                                offset: Some(0),
                                limit: Some(10_000),
                                consistency: Some(consistency),
                            },
                        )
                        .await;
                    match page {
                        Ok(page) => {
                            served.fetch_add(1, Ordering::Relaxed);
                            let acked = acked.lock();
                            for e in &page.entries {
                                if acked
                                    .get(&(p, e.offset))
                                    .is_some_and(|m| *m != e.entry.message)
                                {
                                    wrong.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            // A query fans out over the partitions; each replica answers
            // from its own copy.
            let query = client
                .query(
                    STREAM,
                    &QueryParams {
                        limit: Some(10_000),
                        consistency: Some(Consistency::Any),
                        ..QueryParams::default()
                    },
                )
                .await;
            match query {
                Ok(r) if r.failed_partitions.is_empty() => {
                    served.fetch_add(1, Ordering::Relaxed);
                    let acked = acked.lock();
                    for e in &r.entries {
                        if acked
                            .get(&(e.partition, e.offset))
                            .is_some_and(|m| *m != e.entry.message)
                        {
                            wrong.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                _ => {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn status(c: &TestCluster) -> Result<AntiEntropyStatus> {
    Ok(c.client(0)?.anti_entropy_status().await?)
}

fn assert_clean(scan: &ScanResponse, what: &str) -> Result<()> {
    ensure!(
        scan.failed.is_empty(),
        "{what}: not scanned: {:?}",
        scan.failed
    );
    ensure!(
        scan.reports.len() == PARTITIONS as usize,
        "{what}: {scan:?}"
    );
    for r in &scan.reports {
        ensure!(
            r.outcome == "clean" && r.divergent.is_empty() && r.bytes_repaired == 0,
            "{what}: partition {} not clean: {r:?}",
            r.partition
        );
        ensure!(r.replicas.len() == 3, "{what}: compared {:?}", r.replicas);
        ensure!(r.to_index > r.from_index, "{what}: empty range {r:?}");
    }
    Ok(())
}

/// Waits until the status shows, for each of `partitions`, a scan started
/// after `damaged_at_ms` that found and repaired divergence, followed by a
/// clean scan; answers per partition the ms from damage to repaired.
async fn wait_repaired(
    c: &TestCluster,
    partitions: &[u32],
    damaged_at_ms: u64,
) -> Result<HashMap<u32, u64>> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let s = status(c).await?;
        let mut done = HashMap::new();
        for &p in partitions {
            let repaired = s.last_divergent.iter().find(|r| {
                r.stream == STREAM
                    && r.partition == p
                    && r.started_at_unix_ms >= damaged_at_ms
                    && r.outcome == "repaired"
            });
            let clean_after = s.partitions.iter().any(|r| {
                r.stream == STREAM
                    && r.partition == p
                    && r.outcome == "clean"
                    && repaired.is_some_and(|d| r.started_at_unix_ms > d.started_at_unix_ms)
            });
            if let (Some(d), true) = (repaired, clean_after) {
                let repaired_at = d.started_at_unix_ms + d.duration_ms as u64;
                done.insert(p, repaired_at.saturating_sub(damaged_at_ms));
            }
        }
        if done.len() == partitions.len() {
            return Ok(done);
        }
        if Instant::now() > deadline {
            bail!(
                "not repaired within 90 s: last divergent {:#?}\nlast scans {:#?}",
                s.last_divergent,
                s.partitions
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every replica of every partition holds the same batches, byte for byte
/// (read straight from the stopped nodes' data directories).
fn batches_identical(dir: &Path, groups: &BTreeMap<u32, (u64, u64)>) -> Result<()> {
    for (p, (group, _)) in groups {
        let mut replicas = Vec::new();
        for node in 1..=3 {
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
                "partition {p} node {node}: {} batches in [{first}, {end})",
                batches.len()
            );
            let bytes: Vec<bytes::Bytes> = batches.iter().map(|b| b.as_bytes().clone()).collect();
            data.close_log(&log)?;
            data.shutdown()?;
            replicas.push((node, first, bytes));
        }
        let (_, first0, ref reference) = replicas[0];
        for (node, first, bytes) in &replicas[1..] {
            ensure!(
                *first == first0 && bytes.len() == reference.len(),
                "partition {p}: node {node} holds [{first}, +{}), node 1 [{first0}, +{})",
                bytes.len(),
                reference.len()
            );
            if let Some(i) = (0..bytes.len()).find(|&i| bytes[i] != reference[i]) {
                bail!(
                    "partition {p}: node {node}'s batch at index {} differs from node 1's",
                    first + i as u64
                );
            }
        }
    }
    Ok(())
}

/// A 3-node cluster (nodes started with `flags`) with the test stream
/// under write load until every replica has `segments` segment files.
async fn loaded_cluster(
    flags: &[&str],
    segments: usize,
) -> Result<(TestCluster, BTreeMap<u32, (u64, u64)>, Load)> {
    let c = TestCluster::start_with(3, flags).await?;
    c.client(0)?
        .create_stream(
            STREAM,
            StreamConfig {
                partitions: PARTITIONS,
                replication_factor: Some(3),
                segment_bytes: SEGMENT_BYTES,
                ..StreamConfig::default()
            },
        )
        .await?;
    c.wait_groups(STREAM, PARTITIONS as usize).await?;
    let load = Load::start(&c, STREAM, PARTITIONS);
    let groups = groups(&c).await?;
    wait_for_segments(&c, &groups, segments).await?;
    Ok((c, groups, load))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_replicas_are_found_and_repaired_from_the_majority() -> Result<()> {
    let (mut c, groups, load) =
        loaded_cluster(&["--ae-interval", "1s", "--ae-rate", "0"], 6).await?;

    // A scan of the healthy cluster compares everything and copies nothing.
    let client = c.client(1)?;
    let clean = client
        .anti_entropy_scan(&ScanRequest {
            deep: true,
            ..ScanRequest::default()
        })
        .await?;
    assert_clean(&clean, "scan before damage")?;

    // Damage three partitions' replicas while the load goes on.
    let followers = |p: u32| -> Vec<u64> { (1..=3).filter(|n| *n != groups[&p].1).collect() };
    let (g0, g1, g2) = (groups[&0].0, groups[&1].0, groups[&2].0);
    let flipped = segments(&c, followers(0)[0], g0)?[1].clone();
    let truncated = segments(&c, followers(1)[1], g1)?[2].clone();
    let deleted = segments(&c, groups[&2].1, g2)?[2].clone();
    let damaged_at_ms = cairn_types::clock::unix_ms();
    flip_bytes(&flipped)?;
    let len = std::fs::metadata(&truncated)?.len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated)?
        .set_len(len / 2)?;
    std::fs::remove_file(&deleted)?;
    eprintln!(
        "damaged: flipped 16 bytes of {}, truncated {} to {} bytes, deleted {}",
        flipped.display(),
        truncated.display(),
        len / 2,
        deleted.display()
    );

    let urls: Vec<String> = (0..3).filter_map(|i| c.url(i)).collect();
    let (stop_reads, wrong, failed_reads, served) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let reader = tokio::spawn(read_while_damaged(
        urls,
        load.acked.clone(),
        stop_reads.clone(),
        wrong.clone(),
        failed_reads.clone(),
        served.clone(),
    ));

    let repair_ms = wait_repaired(&c, &[0, 1, 2], damaged_at_ms).await?;
    for (p, ms) in &repair_ms {
        eprintln!("partition {p}: damage to repaired in {ms} ms");
    }
    stop_reads.store(true, Ordering::Relaxed);
    reader.await?;
    let (ok, failed, acked) = load.stop().await?;
    eprintln!(
        "load: {ok} batches acknowledged, {failed} failed; reads during damage: {} served, {} failed, {} wrong",
        served.load(Ordering::Relaxed),
        failed_reads.load(Ordering::Relaxed),
        wrong.load(Ordering::Relaxed)
    );
    ensure!(
        wrong.load(Ordering::Relaxed) == 0,
        "a read returned data that differs from what was acknowledged"
    );
    // Damaged replicas hand their reads to healthy ones: a read may fail
    // in passing (a leader busy repairing), but not as a rule.
    let (served, failed_reads) = (
        served.load(Ordering::Relaxed),
        failed_reads.load(Ordering::Relaxed),
    );
    ensure!(
        served > 0 && failed_reads * 20 <= served,
        "{failed_reads} reads failed, {served} served"
    );
    if let Err(e) = verify_acknowledged(&c, STREAM, PARTITIONS, &acked).await {
        // The nodes' errors say why a replica stopped (e.g. its Raft quit).
        for (i, node) in c.nodes.iter_mut().enumerate() {
            if let Some(n) = node.as_mut() {
                let log = n.kill_and_log();
                let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
                eprintln!("node {} errors (last 20):", i + 1);
                for line in &errors[errors.len().saturating_sub(20)..] {
                    eprintln!("  {line}");
                }
            }
        }
        return Err(e);
    }

    // Healthy again: a deep scan copies nothing, and the repairs show in
    // the metrics and the CLI.
    let after = client
        .anti_entropy_scan(&ScanRequest {
            deep: true,
            ..ScanRequest::default()
        })
        .await?;
    assert_clean(&after, "scan after repair")?;
    let mut repaired_total = 0.0;
    for url in (0..3).filter_map(|i| c.url(i)) {
        let metrics = cairn_client::http_client()
            .get(format!("{url}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        repaired_total += metrics
            .lines()
            .find_map(|l| l.strip_prefix("cairn_anti_entropy_repaired_ranges_total "))
            .context("repaired ranges metric")?
            .parse::<f64>()?;
    }
    ensure!(
        repaired_total >= 3.0,
        "repaired ranges in /metrics: {repaired_total}"
    );
    let url = c.url(2).context("node 3")?;
    let scan_out = support::run_ok(&["anti-entropy", "scan", "--server", &url], "")?;
    let table = &scan_out.stdout;
    ensure!(
        table.matches(" clean ").count() == PARTITIONS as usize,
        "{table}"
    );
    let status_out = support::run_ok(&["anti-entropy", "status", "--server", &url], "")?;
    let text = &status_out.stdout;
    ensure!(text.contains("differed on node"), "{text}");

    // Byte for byte, per batch, on disk.
    for i in 0..3 {
        if let Some(node) = c.nodes[i].take() {
            node.terminate()?;
        }
    }
    batches_identical(c.dir.path(), &groups)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_different_but_intact_batches_is_repaired_from_the_majority() -> Result<()> {
    let (mut c, groups, load) = loaded_cluster(&["--ae-interval", "0"], 4).await?;
    let (_, _, acked) = load.stop().await?;
    verify_acknowledged(&c, STREAM, PARTITIONS, &acked).await?;

    let (group, leader) = groups[&0];
    let follower = (1..=3).find(|n| *n != leader).context("a follower")?;
    let index = rewrite_a_batch_validly(&segments(&c, follower, group)?[1])?;
    let scan = c
        .client(0)?
        .anti_entropy_scan(&ScanRequest {
            stream: Some(STREAM.into()),
            partition: Some(0),
            deep: false,
        })
        .await?;
    let report = scan.reports.first().context("a report")?;
    eprintln!("{report:#?}");
    ensure!(report.outcome == "repaired", "{report:?}");
    ensure!(
        report.divergent.len() == 1
            && report.divergent[0].bad_replicas == vec![follower]
            && report.divergent[0].from_index <= index
            && index < report.divergent[0].to_index
            && report.bytes_repaired > 0,
        "{report:?}"
    );
    let again = c
        .client(0)?
        .anti_entropy_scan(&ScanRequest::default())
        .await?;
    assert_clean(&again, "scan after repair")?;

    for i in 0..3 {
        if let Some(node) = c.nodes[i].take() {
            node.terminate()?;
        }
    }
    batches_identical(c.dir.path(), &groups)
}

/// `chattr +i` on a directory while alive: nothing can be created in it,
/// not even by root. Cleared on drop, so the test's files can be removed.
struct Immutable(PathBuf);

impl Immutable {
    fn set(dir: &Path) -> Option<Immutable> {
        let ok = std::process::Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Immutable(dir.to_path_buf()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_cannot_be_repaired_is_quarantined_and_its_reads_go_elsewhere() -> Result<()>
{
    let probe = tempfile::tempdir()?;
    let can_freeze = Immutable::set(probe.path()).is_some();
    if !can_freeze {
        eprintln!("skipped: `chattr +i` is not available here");
        return Ok(());
    }
    let (mut c, groups, load) = loaded_cluster(&["--ae-interval", "0"], 4).await?;
    let (_, _, acked) = load.stop().await?;
    verify_acknowledged(&c, STREAM, PARTITIONS, &acked).await?;

    // A damaged follower whose directory refuses the repaired files.
    let (group, leader) = groups[&0];
    let follower = (1..=3).find(|n| *n != leader).context("a follower")?;
    flip_bytes(&segments(&c, follower, group)?[1])?;
    let frozen = Immutable::set(&group_dir(&c, follower, group)).context("chattr +i")?;
    let scan_p0 = ScanRequest {
        stream: Some(STREAM.into()),
        partition: Some(0),
        deep: false,
    };
    let scan = c.client(0)?.anti_entropy_scan(&scan_p0).await?;
    let report = scan.reports.first().context("a report")?;
    ensure!(
        report.outcome == "failed" && report.quarantined == vec![follower],
        "{report:?}"
    );
    let now = status(&c).await?;
    ensure!(
        now.quarantined
            .iter()
            .any(|q| q.partition == 0 && q.node == follower),
        "{now:?}"
    );

    // Its reads are answered by a healthy replica, with the right data.
    let i = (follower - 1) as usize;
    let page = c
        .client(i)?
        .read(
            STREAM,
            0,
            ReadParams {
                offset: Some(0),
                limit: Some(10_000),
                consistency: Some(Consistency::Any),
            },
        )
        .await?;
    ensure!(
        page.served_by != follower,
        "served by the quarantined replica"
    );
    for e in &page.entries {
        if let Some(m) = acked.get(&(0, e.offset)) {
            ensure!(*m == e.entry.message, "offset {}: wrong entry", e.offset);
        }
    }

    // Once the disk takes writes again and the node restarts, a scan
    // repairs the replica and it serves again. (If its Raft must read the
    // damaged batch to start, the replica stays stalled but repairable, and
    // starts once repaired. If recovery cut the damaged tail instead, the
    // leader re-replicates it and the first scan already finds every
    // replica in agreement: healed just the same.)
    drop(frozen);
    c.kill(i);
    c.start_node(i)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Asked through the restarted node itself, which routes the scan to
        // the leader even while its own replica has not started.
        let scan = c.client(i)?.anti_entropy_scan(&scan_p0).await?;
        if scan.reports.first().is_some_and(|r| {
            r.quarantined.is_empty()
                && (r.outcome == "repaired"
                    || (r.outcome == "clean" && r.skipped.is_empty() && r.replicas.len() == 3))
        }) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "not repaired after restart: {scan:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    c.wait_groups(STREAM, PARTITIONS as usize).await?;
    ensure!(status(&c).await?.quarantined.is_empty());
    let clean = c
        .client(0)?
        .anti_entropy_scan(&ScanRequest::default())
        .await?;
    assert_clean(&clean, "scan after the restart")
}
