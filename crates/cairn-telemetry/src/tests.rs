use super::*;

#[test]
fn a_running_telemetry_exports_counters_histograms_probes_and_resources() {
    let dir = tempfile::tempdir().unwrap();
    let t = Telemetry::new(TelemetryOptions {
        node: "n1".into(),
        data_dirs: vec![dir.path().to_path_buf()],
        sample_interval: Duration::from_millis(50),
        probe_interval: Duration::from_millis(10),
        ..TelemetryOptions::default()
    });
    t.start().unwrap();
    let stream = t.metrics.stream("app");
    for _ in 0..10 {
        t.metrics.count_request(Api::Http, Operation::Append);
        t.metrics.count_ingest(Api::Http, &stream, 100, 10_000);
    }
    // Five Raft batches of two requests each: ten requests' fsyncs.
    for _ in 0..5 {
        t.metrics
            .record_write_n(WriteStage::Fsync, Duration::from_micros(120), 2);
    }
    t.metrics
        .count_error(cairn_types::ErrorCode::PayloadTooLarge);
    std::thread::sleep(Duration::from_millis(300));
    let text = t.encode_prometheus();
    for needle in [
        "cairn_ingest_entries_total{api=\"http\"} 1000",
        "cairn_stream_entries_total{stream=\"app\"} 1000",
        "cairn_requests_total{api=\"http\",operation=\"append\"} 10",
        "cairn_write_stage_seconds_count{stage=\"fsync\"} 10",
        "cairn_write_stage_seconds_bucket{stage=\"fsync\",le=\"0.00025\"} 10",
        "cairn_rejections_total{reason=\"payload_too_large\"} 1",
        "cairn_slow_score{kind=\"disk\"",
        "cairn_probe_duration_seconds_count{kind=\"disk\"",
        "cairn_process_cpu_seconds_total",
        "cairn_network_receive_bytes_total{interface=\"lo\"}",
        "cairn_telemetry_cpu_seconds_total",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    let snap = t.snapshot().unwrap();
    assert_eq!(snap.node, "n1");
    assert!(snap.resources.is_some());
    assert_eq!(snap.probes.len(), 1);
    assert!(snap.probes[0].slow_score >= 1.0);
    assert!(snap.overhead.cpu_seconds_total > 0.0);
    let json = t.snapshot_json().expect("encoded with the snapshot");
    let decoded: TelemetrySnapshot = serde_json::from_slice(&json).unwrap();
    assert_eq!(decoded.node, "n1");
    t.stop();
}

/// A cluster of three nodes as node 1 sees it: it leads `app/0` (node
/// 3 behind) and follows `app/1`; `app/2` has no leader.
#[derive(Debug)]
struct FakeCluster;

impl ReplicationSource for FakeCluster {
    fn report(&self) -> ReplicationReport {
        use crate::rate::Lag;
        use crate::replication::{FollowerReplication, PartitionReplication, PeerReplication};
        let rpc = LatencyHistogram::new();
        for us in [300, 450, 2_000] {
            rpc.record(Duration::from_micros(us));
        }
        let follower = |node, matched, entries, seconds| FollowerReplication {
            node,
            voter: true,
            matched_index: Some(matched),
            lag_batches: 12 - matched,
            lag: Lag { entries, seconds },
            lag_exact: true,
            reachable: true,
            quorum_acks: if node == 2 { 9 } else { 1 },
        };
        let part = |partition, is_leader, leader| PartitionReplication {
            stream: "app".into(),
            partition,
            is_leader,
            leader,
            term: 3,
            commit_index: Some(12),
            committed_end_offset: 1_200,
            leader_changes: 2,
            ..PartitionReplication::default()
        };
        ReplicationReport {
            anti_entropy: Default::default(),
            retention: Default::default(),
            partitions: vec![
                PartitionReplication {
                    followers: vec![follower(2, 12, 0, 0.0), follower(3, 7, 500, 12.5)],
                    quorum_by_leader: 1,
                    ..part(0, true, Some(1))
                },
                part(1, false, Some(2)),
                part(2, false, None),
            ],
            peers: [2, 3]
                .into_iter()
                .map(|node| PeerReplication {
                    node,
                    rpc: rpc.snapshot(),
                    rpc_failures: node - 2,
                    probe: rpc.snapshot(),
                    probe_failures: 0,
                    slow_score: 1.0,
                    ..PeerReplication::default()
                })
                .collect(),
        }
    }
}

#[test]
fn replication_is_exported_and_promtool_accepts_it() {
    let t = Telemetry::new(TelemetryOptions {
        node: "n1".into(),
        sample_interval: Duration::from_millis(20),
        ..TelemetryOptions::default()
    });
    assert!(t.replication_report().is_none());
    t.set_replication_source(Arc::new(FakeCluster));
    let text = t.encode_prometheus();
    for needle in [
        "cairn_partitions{role=\"led\"} 1",
        "cairn_partitions{role=\"followed\"} 1",
        "cairn_partitions{role=\"leaderless\"} 1",
        // Node 3 lags 12.5 s: out of sync, so app/0 is under-replicated.
        "cairn_partitions{role=\"under_replicated\"} 1",
        "cairn_partition_is_leader{stream=\"app\",partition=\"0\"} 1",
        "cairn_partition_leader_node{stream=\"app\",partition=\"2\"} 0",
        "cairn_partition_commit_index{stream=\"app\",partition=\"1\"} 12",
        "cairn_partition_leader_changes_total{stream=\"app\",partition=\"0\"} 2",
        "cairn_replication_lag_entries{stream=\"app\",partition=\"0\",follower=\"3\"} 500",
        "cairn_replication_lag_seconds{stream=\"app\",partition=\"0\",follower=\"3\"} 12.5",
        "cairn_replication_lag_batches{stream=\"app\",partition=\"0\",follower=\"3\"} 5",
        "cairn_replication_follower_in_sync{stream=\"app\",partition=\"0\",follower=\"2\"} 1",
        "cairn_quorum_acks_total{stream=\"app\",partition=\"0\",follower=\"2\"} 9",
        "cairn_quorum_leader_completions_total{stream=\"app\",partition=\"0\"} 1",
        "cairn_replication_rpc_seconds_count{follower=\"3\"} 3",
        "cairn_replication_rpc_seconds_bucket{follower=\"2\",le=\"0.0005\"} 2",
        "cairn_replication_rpc_failures_total{follower=\"3\"} 1",
        "cairn_peer_slow_score{peer=\"2\"} 1",
        "cairn_peer_probe_seconds_count{peer=\"3\"} 3",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    // Followers are listed by their leader only.
    assert!(!text.contains("partition=\"1\",follower="));
    promtool_check(&text);

    t.start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let snap = loop {
        if let Some(s) = t.snapshot() {
            break s;
        }
        assert!(Instant::now() < deadline, "no snapshot");
        std::thread::sleep(Duration::from_millis(10));
    };
    t.stop();
    let r = snap.replication.expect("replication section");
    assert_eq!(r.roles.under_replicated, 1);
    assert_eq!(r.partitions.len(), 3);
    assert_eq!(r.peers.len(), 2);
    assert_eq!(r.peers[0].rpc.count, 3);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(
        json["partitions"][0]["followers"][1]["lag"]["seconds"],
        12.5
    );
}

/// Runs `promtool check metrics` on `text` when promtool is installed
/// (required in CI), as the end-to-end telemetry test does.
fn promtool_check(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if std::env::var_os("CI").is_some() => panic!("promtool is required in CI: {e}"),
        Err(e) => {
            {
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: the promtool check (apt-get install prometheus; required when CI=true): {e}"
                );
            }
            return;
        }
    };
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool rejected the exposition:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
