//! Synthetic clusters for detector tests: three healthy nodes, one round a
//! second, and a hook to bend any node's figures at any round.

use crate::config::MonitorConfig;
use crate::finding::Finding;
use crate::history::Window;
use crate::sample::{
    ClusterSample, FollowerLag, NodeSample, PeerSample, ReplicaSample, WriteLatency,
};

pub const T0: u64 = 1_750_000_000_000;
pub const NODES: [u64; 3] = [1, 2, 3];
/// Entries each partition's leader commits per second.
pub const PARTITION_RATE: u64 = 300;

/// A healthy node at round `r`: it leads partition `node - 1` of stream
/// `app` (its preferred leader) and follows the other two.
pub fn healthy(r: usize, node: u64) -> NodeSample {
    let unix_ms = T0 + r as u64 * 1000;
    NodeSample {
        node,
        unix_ms,
        error: None,
        unanswered: false,
        repeated: false,
        writes_in_flight: 2,
        snapshot_unix_ms: unix_ms - 200,
        uptime_seconds: 1_000.0 + r as f64,
        cpu_cores: 0.4,
        cpu_limit_cores: 2.0,
        host_cpu: 0.25,
        psi_cpu_some: Some(1.0),
        psi_io_some: Some(0.5),
        psi_memory_some: Some(0.0),
        rss_bytes: 1 << 30,
        memory_limit_bytes: 8 << 30,
        host_memory_total_bytes: 8 << 30,
        host_memory_available_bytes: 5 << 30,
        io_read_bytes_per_second: 0.0,
        io_write_bytes_per_second: 2e6,
        entries_per_second: 900.0,
        bytes_per_second: 90_000.0,
        stream_entries_per_second: [("app".to_string(), 900.0)].into_iter().collect(),
        write: WriteLatency {
            total_p50_ms: Some(2.0),
            total_p99_ms: Some(6.0),
            queue_p50_ms: Some(0.1),
            queue_p99_ms: Some(0.5),
            fsync_p50_ms: Some(0.5),
            fsync_p99_ms: Some(1.0),
            replicate_p50_ms: Some(1.0),
            replicate_p99_ms: Some(3.0),
            commit_p50_ms: Some(1.5),
            commit_p99_ms: Some(4.0),
        },
        read_p99_ms: Some(2.0),
        errors_per_second: Default::default(),
        disk_probe_p99_ms: Some(0.8),
        disk_probe_max_ms: Some(1.0),
        disk_slow_score: 1.0,
        disk_probe_in_flight_ms: None,
        free_bytes: 50_000_000_000,
        total_bytes: 100_000_000_000,
        free_inodes: 1_000_000,
        total_inodes: 2_000_000,
        peers: NODES
            .iter()
            .filter(|p| **p != node)
            .map(|p| PeerSample {
                node: *p,
                rtt_p50_ms: Some(0.15),
                rtt_p99_ms: Some(0.3),
                rpc_p99_ms: Some(1.0),
                probe_failures_total: 0,
                rpc_failures_total: 0,
                bytes_sent_per_second: 50_000.0,
                bytes_received_per_second: 50_000.0,
                state: Some("up".into()),
                phi: Some(0.5),
            })
            .collect(),
        replicas: (0..3u32)
            .map(|p| {
                let leader = u64::from(p) + 1;
                ReplicaSample {
                    stream: "app".into(),
                    partition: p,
                    is_leader: leader == node,
                    leader: Some(leader),
                    term: 1,
                    committed_end_offset: PARTITION_RATE * r as u64,
                    replicas: NODES.to_vec(),
                    preferred_leader: Some(leader),
                    catching_up: false,
                    catch_up: None,
                    followers: if leader == node {
                        NODES
                            .iter()
                            .filter(|f| **f != node)
                            .map(|f| FollowerLag {
                                node: *f,
                                voter: true,
                                entries: 0,
                                seconds: 0.0,
                                in_sync: true,
                            })
                            .collect()
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect(),
        quarantined_replicas: 0,
        faults: Vec::new(),
        rollup: None,
    }
}

/// `rounds` rounds of the healthy cluster, each node passed through
/// `tweak(round, node)` first.
pub fn scenario(
    rounds: usize,
    mut tweak: impl FnMut(usize, &mut NodeSample),
) -> Vec<ClusterSample> {
    (0..rounds)
        .map(|r| ClusterSample {
            unix_ms: T0 + r as u64 * 1000,
            nodes: NODES
                .iter()
                .map(|id| {
                    let mut n = healthy(r, *id);
                    tweak(r, &mut n);
                    n
                })
                .collect(),
        })
        .collect()
}

/// Node 3 installs a snapshot of app/0 (led by node 1) over rounds
/// 80..110: 120 MB in 3,000 entries, 4 MB/s. Its leader sees it far
/// behind and not in sync the whole time.
pub fn catching_up_scenario() -> Vec<ClusterSample> {
    scenario(140, |r, n| {
        if !(80..110).contains(&r) {
            return;
        }
        let done = (r - 79) as u64;
        for rep in n.replicas.iter_mut().filter(|rep| rep.partition == 0) {
            if n.node == 3 {
                rep.catching_up = true;
                rep.catch_up = Some(crate::sample::CatchUpProgress {
                    first_index: 1_001,
                    next_index: 1_001 + done * 100,
                    last_index: 4_000,
                    staged_bytes: done * 4_000_000,
                });
            }
            for f in rep.followers.iter_mut().filter(|f| f.node == 3) {
                f.seconds = 60.0 + done as f64;
                f.entries = 50_000;
                f.in_sync = false;
            }
        }
    })
}

/// Marks a node missing at a round (inside a `scenario` tweak).
pub fn make_missing(n: &mut NodeSample) {
    *n = NodeSample::missing(n.node, n.unix_ms, "connection refused");
}

/// Makes `node` answer only every `every`-th round of `rounds` (the first
/// included): in the others the collector repeats its last answer, as for
/// a busy node whose answers come late.
pub fn answer_every(
    samples: &mut [ClusterSample],
    node: u64,
    rounds: std::ops::Range<usize>,
    every: usize,
) {
    for r in rounds.clone() {
        if (r - rounds.start).is_multiple_of(every) {
            continue;
        }
        let mut last = samples[r - 1].node(node).expect("in the round").clone();
        last.repeated = true;
        let n = samples[r]
            .nodes
            .iter_mut()
            .find(|n| n.node == node)
            .expect("in the round");
        *n = last;
    }
}

/// What `detector` finds after each round, over the window a monitor with
/// the default config would pass it.
pub fn per_round(
    samples: &[ClusterSample],
    detector: fn(&Window<'_>, &MonitorConfig) -> Vec<Finding>,
) -> Vec<Vec<Finding>> {
    let cfg = MonitorConfig::default();
    let span = cfg.window_samples();
    (0..samples.len())
        .map(|r| {
            let lo = (r + 1).saturating_sub(span);
            detector(&Window::of(&samples[lo..=r]), &cfg)
        })
        .collect()
}

/// The first round at or after `fault_start` with a finding of `code`, and
/// the first round at or after `fault_end` without one (panics if either
/// never happens).
pub fn raised_and_cleared(
    rounds: &[Vec<Finding>],
    code: &str,
    fault_start: usize,
    fault_end: usize,
) -> (usize, usize) {
    let has = |r: usize| rounds[r].iter().any(|f| f.code == code);
    assert!(
        (0..fault_start).all(|r| !has(r)),
        "{code} raised before the fault: {:?}",
        (0..fault_start).find(|r| has(*r)).map(|r| &rounds[r])
    );
    let first = (fault_start..rounds.len())
        .find(|r| has(*r))
        .unwrap_or_else(|| panic!("{code} never raised"));
    let cleared = (fault_end..rounds.len())
        .find(|r| !has(*r))
        .unwrap_or_else(|| panic!("{code} never cleared"));
    (first, cleared)
}

/// Every finding of every detector after each round.
pub fn all_findings(samples: &[ClusterSample]) -> Vec<Vec<Finding>> {
    per_round(samples, super::run_all)
}

fn assert_quiet(samples: &[ClusterSample], what: &str) {
    for (r, f) in all_findings(samples).iter().enumerate() {
        assert!(f.is_empty(), "{what}: round {r}: {f:#?}");
    }
}

#[test]
fn given_a_healthy_cluster_when_watched_should_find_nothing() {
    assert_quiet(&scenario(150, |_, _| {}), "healthy");
}

#[test]
fn given_a_single_gc_like_spike_when_watched_should_find_nothing() {
    let samples = scenario(150, |r, n| {
        if r == 100 && n.node == 2 {
            let w = &mut n.write;
            for v in [
                &mut w.total_p99_ms,
                &mut w.total_p50_ms,
                &mut w.fsync_p99_ms,
                &mut w.queue_p99_ms,
                &mut w.commit_p99_ms,
                &mut w.replicate_p99_ms,
            ] {
                *v = v.map(|x| x * 50.0);
            }
            n.read_p99_ms = Some(100.0);
            n.disk_probe_p99_ms = Some(40.0);
            n.cpu_cores = 1.95;
            for p in &mut n.peers {
                p.rtt_p99_ms = Some(15.0);
            }
        }
    });
    assert_quiet(&samples, "spike");
}

#[test]
fn given_a_burst_of_load_within_capacity_when_watched_should_find_nothing() {
    let samples = scenario(150, |r, n| {
        if (90..120).contains(&r) {
            n.entries_per_second *= 3.0;
            n.bytes_per_second *= 3.0;
            n.cpu_cores = 1.0; // 50 % of the limit
            n.write.total_p99_ms = Some(15.0);
            n.write.queue_p99_ms = Some(2.0);
            n.write.fsync_p99_ms = Some(3.0);
            n.disk_probe_p99_ms = Some(2.0);
        }
    });
    assert_quiet(&samples, "burst");
}

#[test]
fn given_a_node_restart_when_watched_should_find_nothing() {
    // Node 3 misses two or three rounds, then comes back with its uptime
    // reset; meanwhile (and one round after) its peers suspect it.
    for missed in [2, 3] {
        let back = 100 + missed;
        let samples = scenario(150, |r, n| {
            if n.node == 3 {
                if (100..back).contains(&r) {
                    make_missing(n);
                } else if r >= back {
                    n.uptime_seconds = (r - back) as f64;
                }
            } else if (100..=back).contains(&r) {
                for p in &mut n.peers {
                    if p.node == 3 {
                        p.phi = Some(9.0 + r as f64 - 100.0);
                        p.state = Some("suspect".into());
                    }
                }
            }
        });
        assert_quiet(&samples, &format!("restart missing {missed} rounds"));
    }
}

#[test]
fn given_a_leader_election_when_watched_should_find_nothing() {
    // Partition 0 is leaderless for one round, then led by node 2; at the
    // same round node 1's leadership moves as well and comes back.
    let samples = scenario(150, |r, n| {
        if r == 100 {
            for rep in &mut n.replicas {
                if rep.partition == 0 {
                    rep.is_leader = false;
                    rep.leader = None;
                    rep.followers.clear();
                }
            }
        }
        if (101..110).contains(&r) {
            for rep in &mut n.replicas {
                if rep.partition == 0 {
                    rep.term = 2;
                    rep.leader = Some(2);
                    rep.is_leader = n.node == 2;
                    rep.followers = if n.node == 2 {
                        vec![
                            FollowerLag {
                                node: 1,
                                voter: true,
                                in_sync: true,
                                ..FollowerLag::default()
                            },
                            FollowerLag {
                                node: 3,
                                voter: true,
                                in_sync: true,
                                ..FollowerLag::default()
                            },
                        ]
                    } else {
                        Vec::new()
                    };
                }
            }
        }
    });
    assert_quiet(&samples, "election");
}
