//! `/metrics`: every telemetry figure in Prometheus text format.
//!
//! One collector reads the live counters, histograms and the last resource
//! sample at scrape time, so the hot path never touches prometheus-client.
//! Names follow Prometheus conventions: base units (`_seconds`, `_bytes`),
//! counters end in `_total` (the encoder appends it), and every label value
//! is drawn from a bounded set (stages, APIs, operations, error codes,
//! devices and interfaces of this host, operator-created streams, the
//! partitions of those streams and the cluster's node ids).
//!
//! One long file on purpose: every family's name, type and help text is
//! here and nowhere else, so names stay unique and consistent — the
//! dashboard, the alert rules (`deploy/prometheus`) and OPERATIONS.md key
//! on them, and a reviewer checks a new metric against its neighbours.

use std::sync::Weak;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use crate::Telemetry;
use crate::families::{Labels, family};
use crate::histogram::HistogramSnapshot;
use crate::metrics::{Api, Operation, ReadStage, WriteStage};
use crate::replication::ReplicationReport;

#[derive(Debug)]
pub(crate) struct Exporter(pub Weak<Telemetry>);

fn one<V: Clone>(v: V) -> Vec<(Labels, V)> {
    vec![(Vec::new(), v)]
}

impl Collector for Exporter {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(t) = self.0.upgrade() else {
            return Ok(());
        };
        let m = &t.metrics;
        let (c, g, h) = (
            MetricType::Counter,
            MetricType::Gauge,
            MetricType::Histogram,
        );

        // Request paths.
        let writes: Vec<(Labels, HistogramSnapshot)> = WriteStage::ALL
            .iter()
            .map(|s| {
                (
                    vec![("stage", s.as_str().to_string())],
                    m.write_stage(*s).snapshot(),
                )
            })
            .collect();
        family(
            &mut enc,
            "cairn_write_stage_seconds",
            "Time spent per write stage; alert on the total p99 and read the stages to see where it goes. \
             Every stage counts one sample per write request, with that request's time in the stage, \
             recorded on the node where the stage ran: decode, commit, respond and total on the node \
             that received the request; linger and replicate on the partition leader that proposed it; \
             queue, append and fsync on each replica that appended it (leader and followers), \
             a Raft batch's time once per request it carries. A request spanning several partitions \
             counts once per partition in linger, queue, append, fsync and replicate.",
            h,
            &writes,
        )?;
        let reads: Vec<(Labels, HistogramSnapshot)> = ReadStage::ALL
            .iter()
            .map(|s| {
                (
                    vec![("stage", s.as_str().to_string())],
                    m.read_stage(*s).snapshot(),
                )
            })
            .collect();
        family(
            &mut enc,
            "cairn_read_stage_seconds",
            "Time spent per read stage.",
            h,
            &reads,
        )?;
        let requests: Vec<(Labels, u64)> = Api::ALL
            .iter()
            .flat_map(|a| {
                Operation::ALL.iter().map(move |o| {
                    (
                        vec![
                            ("api", a.as_str().to_string()),
                            ("operation", o.as_str().to_string()),
                        ],
                        m.requests(*a, *o),
                    )
                })
            })
            .collect();
        family(
            &mut enc,
            "cairn_requests",
            "Requests served, by API and operation.",
            c,
            &requests,
        )?;
        let per_api = |f: &dyn Fn(Api) -> u64| -> Vec<(Labels, u64)> {
            Api::ALL
                .iter()
                .map(|a| (vec![("api", a.as_str().to_string())], f(*a)))
                .collect()
        };
        family(
            &mut enc,
            "cairn_ingest_entries",
            "Entries durably stored, by API.",
            c,
            &per_api(&|a| m.entries(a)),
        )?;
        family(
            &mut enc,
            "cairn_ingest_bytes",
            "Encoded bytes durably stored, by API.",
            c,
            &per_api(&|a| m.bytes(a)),
        )?;
        let (mut errors, mut rejections) = (Vec::new(), Vec::new());
        for (code, n) in m.error_counts() {
            let sample = (vec![("reason", code.as_str().to_string())], n);
            if code.http_status() >= 500 {
                errors.push(sample)
            } else {
                rejections.push(sample)
            }
        }
        family(
            &mut enc,
            "cairn_errors",
            "Requests that failed on our side (5xx), by reason; alert on any rate.",
            c,
            &errors,
        )?;
        family(
            &mut enc,
            "cairn_rejections",
            "Requests refused as invalid (4xx), by reason.",
            c,
            &rejections,
        )?;
        let streams = m.streams();
        let per_stream =
            |f: &dyn Fn(&crate::metrics::StreamCounters) -> u64| -> Vec<(Labels, u64)> {
                streams
                    .iter()
                    .map(|(n, s)| (vec![("stream", n.clone())], f(s)))
                    .collect()
            };
        family(
            &mut enc,
            "cairn_stream_entries",
            "Entries stored per stream.",
            c,
            &per_stream(&|s| s.entries.load(Ordering::Relaxed)),
        )?;
        family(
            &mut enc,
            "cairn_stream_bytes",
            "Encoded bytes stored per stream.",
            c,
            &per_stream(&|s| s.bytes.load(Ordering::Relaxed)),
        )?;
        family(
            &mut enc,
            "cairn_stream_append_requests",
            "Append requests per stream.",
            c,
            &per_stream(&|s| s.requests.load(Ordering::Relaxed)),
        )?;

        // Probes.
        let probes: Vec<_> = t
            .probes
            .read()
            .iter()
            .map(|p| {
                let s = p.lock();
                (
                    vec![("kind", s.kind.to_string()), ("target", s.target.clone())],
                    s.latency.snapshot(),
                    s.score.value(),
                    s.timeouts,
                    s.failures,
                )
            })
            .collect();
        let probe_hist: Vec<(Labels, HistogramSnapshot)> =
            probes.iter().map(|p| (p.0.clone(), p.1.clone())).collect();
        family(
            &mut enc,
            "cairn_probe_duration_seconds",
            "Latency of active probes (disk: 512 B write + fdatasync; peer: ping).",
            h,
            &probe_hist,
        )?;
        let score: Vec<(Labels, f64)> = probes.iter().map(|p| (p.0.clone(), p.2)).collect();
        family(
            &mut enc,
            "cairn_slow_score",
            "Slow score per probed resource, 1 (healthy) to 100; alert when above 50 for a minute.",
            g,
            &score,
        )?;
        let timeouts: Vec<(Labels, u64)> = probes.iter().map(|p| (p.0.clone(), p.3)).collect();
        family(
            &mut enc,
            "cairn_probe_timeouts",
            "Probes slower than their timeout.",
            c,
            &timeouts,
        )?;
        let failures: Vec<(Labels, u64)> = probes.iter().map(|p| (p.0.clone(), p.4)).collect();
        family(
            &mut enc,
            "cairn_probe_failures",
            "Probes that failed with an error.",
            c,
            &failures,
        )?;

        if let Some(report) = t.replication_report() {
            replication(&mut enc, &report)?;
            anti_entropy(&mut enc, &report.anti_entropy)?;
            crate::retention::encode(&mut enc, &report.retention, &report.partitions)?;
        }

        // Resources: cumulative counters from the last raw sample, rates and
        // levels from the last interval.
        let raw = t.last_raw.lock().clone();
        family(
            &mut enc,
            "cairn_writes_in_flight",
            "Client writes (HTTP and binary) accepted and not yet answered; growing while latency rises: offered load is past the node's knee.",
            g,
            &one(m.writes_in_flight()),
        )?;
        let snap = t.latest.lock().as_ref().and_then(|s| s.resources.clone());
        let dirs = t
            .latest
            .lock()
            .as_ref()
            .map(|s| s.data_dirs.clone())
            .unwrap_or_default();
        let per_dir = |f: &dyn Fn(&crate::snapshot::DataDirSpace) -> u64| -> Vec<(Labels, u64)> {
            dirs.iter()
                .map(|d| (vec![("path", d.path.clone())], f(d)))
                .collect()
        };
        family(
            &mut enc,
            "cairn_data_dir_free_bytes",
            "Bytes still free for this node on the filesystem of each data directory (statvfs); alert before it reaches 0.",
            g,
            &per_dir(&|d| d.free_bytes),
        )?;
        family(
            &mut enc,
            "cairn_data_dir_size_bytes",
            "Size of the filesystem holding each data directory.",
            g,
            &per_dir(&|d| d.total_bytes),
        )?;
        family(
            &mut enc,
            "cairn_data_dir_free_inodes",
            "Inodes still free on the filesystem of each data directory.",
            g,
            &per_dir(&|d| d.free_inodes),
        )?;
        if let Some(raw) = &raw {
            let ticks = procfs::ticks_per_second() as f64;
            family(
                &mut enc,
                "cairn_process_cpu_seconds",
                "CPU time used by this process.",
                c,
                &one(raw.process_cpu_ticks as f64 / ticks),
            )?;
            family(
                &mut enc,
                "cairn_process_resident_memory_bytes",
                "Resident memory of this process.",
                g,
                &one(raw.process_rss_bytes),
            )?;
            if let Some(io) = raw.process_io {
                family(
                    &mut enc,
                    "cairn_process_read_bytes",
                    "Bytes this process caused to be read from storage (/proc/self/io): tells apart nodes sharing a disk.",
                    c,
                    &one(io.read_bytes),
                )?;
                family(
                    &mut enc,
                    "cairn_process_write_bytes",
                    "Bytes this process caused to be written to storage (/proc/self/io).",
                    c,
                    &one(io.write_bytes),
                )?;
                family(
                    &mut enc,
                    "cairn_process_io_syscalls",
                    "Read and write system calls of this process (/proc/self/io).",
                    c,
                    &[
                        (vec![("op", "read".to_string())], io.read_syscalls),
                        (vec![("op", "write".to_string())], io.write_syscalls),
                    ],
                )?;
            }
            family(
                &mut enc,
                "cairn_host_memory_total_bytes",
                "Host memory.",
                g,
                &one(raw.memory_total_bytes),
            )?;
            family(
                &mut enc,
                "cairn_host_memory_available_bytes",
                "Host memory available without swapping; alert when low.",
                g,
                &one(raw.memory_available_bytes),
            )?;
            if let Some(limit) = raw.cgroup.memory_limit_bytes {
                family(
                    &mut enc,
                    "cairn_cgroup_memory_limit_bytes",
                    "Memory limit of our cgroup.",
                    g,
                    &one(limit),
                )?;
            }
            if let Some(cores) = raw.cgroup.cpu_cores {
                family(
                    &mut enc,
                    "cairn_cgroup_cpu_limit_cores",
                    "CPU quota of our cgroup, in cores.",
                    g,
                    &one(cores),
                )?;
            }
            let disk = |f: &dyn Fn(&crate::resources::DiskCounters) -> f64| -> Vec<(Labels, f64)> {
                raw.disks
                    .iter()
                    .map(|(d, v)| (vec![("device", d.clone())], f(v)))
                    .collect()
            };
            family(
                &mut enc,
                "cairn_disk_reads_completed",
                "Reads completed per block device.",
                c,
                &disk(&|d| d.reads as f64),
            )?;
            family(
                &mut enc,
                "cairn_disk_writes_completed",
                "Writes completed per block device.",
                c,
                &disk(&|d| d.writes as f64),
            )?;
            family(
                &mut enc,
                "cairn_disk_read_bytes",
                "Bytes read per block device.",
                c,
                &disk(&|d| (d.sectors_read * 512) as f64),
            )?;
            family(
                &mut enc,
                "cairn_disk_written_bytes",
                "Bytes written per block device.",
                c,
                &disk(&|d| (d.sectors_written * 512) as f64),
            )?;
            family(
                &mut enc,
                "cairn_disk_io_time_seconds",
                "Time with I/O in flight per block device (rate = utilisation).",
                c,
                &disk(&|d| d.busy_ms as f64 / 1e3),
            )?;
            let net = |f: &dyn Fn(&crate::resources::NetCounters) -> u64| -> Vec<(Labels, u64)> {
                raw.networks
                    .iter()
                    .map(|(i, v)| (vec![("interface", i.clone())], f(v)))
                    .collect()
            };
            family(
                &mut enc,
                "cairn_network_receive_bytes",
                "Bytes received per interface.",
                c,
                &net(&|n| n.rx_bytes),
            )?;
            family(
                &mut enc,
                "cairn_network_transmit_bytes",
                "Bytes sent per interface.",
                c,
                &net(&|n| n.tx_bytes),
            )?;
            if let Some(r) = raw.tcp_retransmits {
                family(
                    &mut enc,
                    "cairn_tcp_retransmitted_segments",
                    "TCP segments retransmitted by the host; a rising rate points at a lossy link.",
                    c,
                    &one(r),
                )?;
            }
            if let Some(p) = raw.pressure {
                let psi: Vec<(Labels, f64)> = [
                    ("cpu", "some", p.cpu_some),
                    ("io", "some", p.io_some),
                    ("io", "full", p.io_full),
                    ("memory", "some", p.memory_some),
                    ("memory", "full", p.memory_full),
                ]
                .into_iter()
                .map(|(r, k, v)| {
                    (
                        vec![("resource", r.to_string()), ("kind", k.to_string())],
                        v / 100.0,
                    )
                })
                .collect();
                family(
                    &mut enc,
                    "cairn_pressure_stall_ratio",
                    "PSI: share of the last 10 s with tasks stalled on the resource.",
                    g,
                    &psi,
                )?;
            }
        }
        if let Some(s) = &snap {
            family(
                &mut enc,
                "cairn_host_cpu_utilization_ratio",
                "Busy share of all host cores over the last interval.",
                g,
                &one(s.host_cpu_utilization),
            )?;
            family(
                &mut enc,
                "cairn_cpu_limit_cores",
                "Cores available to this process (cgroup quota or host cores).",
                g,
                &one(s.cpu_limit_cores),
            )?;
            let util: Vec<(Labels, f64)> = s
                .disks
                .iter()
                .map(|d| (vec![("device", d.device.clone())], d.utilization))
                .collect();
            family(
                &mut enc,
                "cairn_disk_utilization_ratio",
                "Share of the last interval with I/O in flight, per device.",
                g,
                &util,
            )?;
            let await_s: Vec<(Labels, f64)> = s
                .disks
                .iter()
                .filter_map(|d| Some((vec![("device", d.device.clone())], d.await_ms? / 1e3)))
                .collect();
            family(
                &mut enc,
                "cairn_disk_await_seconds",
                "Average time per I/O over the last interval, per device.",
                g,
                &await_s,
            )?;
        }

        // Telemetry's own cost.
        family(
            &mut enc,
            "cairn_telemetry_cpu_seconds",
            "CPU time spent by telemetry (sampler, probes, /metrics encoding).",
            c,
            &one(t.overhead_cpu_seconds()),
        )?;
        family(
            &mut enc,
            "cairn_telemetry_memory_bytes",
            "Memory held by telemetry.",
            g,
            &one(t.memory_bytes()),
        )?;
        family(
            &mut enc,
            "cairn_telemetry_stage_timing_enabled",
            "1 when per-stage timing is on.",
            g,
            &one(u64::from(m.stage_timing())),
        )?;
        Ok(())
    }
}

/// Replication families: node roles, per partition, per follower of the
/// partitions this node leads, and per peer node.
fn replication(
    enc: &mut DescriptorEncoder,
    report: &ReplicationReport,
) -> Result<(), std::fmt::Error> {
    let (c, g, h) = (
        MetricType::Counter,
        MetricType::Gauge,
        MetricType::Histogram,
    );
    let roles = report.role_counts();
    let by_role: Vec<(Labels, u64)> = [
        ("led", roles.led),
        ("followed", roles.followed),
        ("under_replicated", roles.under_replicated),
        ("leaderless", roles.leaderless),
    ]
    .into_iter()
    .map(|(r, n)| (vec![("role", r.to_string())], n))
    .collect();
    family(
        enc,
        "cairn_partitions",
        "Partition replicas on this node by role (led, followed, under_replicated among led, leaderless); alert on leaderless or under_replicated above 0 for a minute.",
        g,
        &by_role,
    )?;

    let parts = &report.partitions;
    let part_labels = |p: &crate::replication::PartitionReplication| -> Labels {
        vec![
            ("stream", p.stream.clone()),
            ("partition", p.partition.to_string()),
        ]
    };
    let per_part = |f: &dyn Fn(&crate::replication::PartitionReplication) -> Option<u64>| {
        parts
            .iter()
            .filter_map(|p| Some((part_labels(p), f(p)?)))
            .collect::<Vec<(Labels, u64)>>()
    };
    family(
        enc,
        "cairn_partition_is_leader",
        "1 if this node leads the partition.",
        g,
        &per_part(&|p| Some(u64::from(p.is_leader))),
    )?;
    family(
        enc,
        "cairn_partition_leader_node",
        "Node id of the partition's leader as this replica knows it; 0 when it knows none.",
        g,
        &per_part(&|p| Some(p.leader.unwrap_or(0))),
    )?;
    family(
        enc,
        "cairn_partition_term",
        "Raft term of the partition's group on this replica.",
        g,
        &per_part(&|p| Some(p.term)),
    )?;
    family(
        enc,
        "cairn_partition_commit_index",
        "Raft log index of the last committed entry (followers: last applied, a lower bound).",
        g,
        &per_part(&|p| p.commit_index),
    )?;
    family(
        enc,
        "cairn_partition_committed_end_offset",
        "Exclusive end offset of the partition's committed entries on this replica.",
        g,
        &per_part(&|p| Some(p.committed_end_offset)),
    )?;
    family(
        enc,
        "cairn_partition_leader_changes",
        "Leadership tenures (leader, term) this replica observed; a steady rate means an unstable group.",
        c,
        &per_part(&|p| Some(p.leader_changes)),
    )?;
    family(
        enc,
        "cairn_quorum_leader_completions",
        "Batches whose quorum the leader's own fsync completed (its followers acked first).",
        c,
        &per_part(&|p| p.is_leader.then_some(p.quorum_by_leader)),
    )?;
    family(
        enc,
        "cairn_quorum_ambiguous",
        "Batches whose quorum-completing ack could not be told apart (acks observed together).",
        c,
        &per_part(&|p| p.is_leader.then_some(p.quorum_ambiguous)),
    )?;

    let followers: Vec<(Labels, &crate::replication::FollowerReplication)> = parts
        .iter()
        .flat_map(|p| {
            p.followers.iter().map(move |f| {
                let mut l = part_labels(p);
                l.push(("follower", f.node.to_string()));
                (l, f)
            })
        })
        .collect();
    let per_follower_u = |f: &dyn Fn(&crate::replication::FollowerReplication) -> Option<u64>| {
        followers
            .iter()
            .filter_map(|(l, x)| Some((l.clone(), f(x)?)))
            .collect::<Vec<(Labels, u64)>>()
    };
    family(
        enc,
        "cairn_replication_lag_entries",
        "Committed entries the follower lacks (leader side); see cairn_replication_lag_exact.",
        g,
        &per_follower_u(&|f| Some(f.lag.entries)),
    )?;
    let lag_seconds: Vec<(Labels, f64)> = followers
        .iter()
        .map(|(l, f)| (l.clone(), f.lag.seconds))
        .collect();
    family(
        enc,
        "cairn_replication_lag_seconds",
        "Age of the oldest committed entry the follower lacks; 0 when caught up. Alert when above 10 for a minute.",
        g,
        &lag_seconds,
    )?;
    family(
        enc,
        "cairn_replication_lag_batches",
        "Raft entries (batches) the leader holds beyond the follower's matched index, committed or not.",
        g,
        &per_follower_u(&|f| Some(f.lag_batches)),
    )?;
    family(
        enc,
        "cairn_replication_lag_exact",
        "1 when cairn_replication_lag_entries is exact, 0 when it is a lower bound.",
        g,
        &per_follower_u(&|f| Some(u64::from(f.lag_exact))),
    )?;
    family(
        enc,
        "cairn_replication_matched_index",
        "Raft log index the follower has confirmed to hold.",
        g,
        &per_follower_u(&|f| f.matched_index),
    )?;
    family(
        enc,
        "cairn_replication_follower_in_sync",
        "1 if the follower is reachable, has confirmed entries and lags at most 10 s.",
        g,
        &per_follower_u(&|f| Some(u64::from(f.in_sync()))),
    )?;
    family(
        enc,
        "cairn_quorum_acks",
        "Batches whose commit this follower's ack completed (the follower the write latency waited for).",
        c,
        &per_follower_u(&|f| Some(f.quorum_acks)),
    )?;

    let peer = |f: &dyn Fn(&crate::replication::PeerReplication) -> u64| -> Vec<(Labels, u64)> {
        report
            .peers
            .iter()
            .map(|p| (vec![("follower", p.node.to_string())], f(p)))
            .collect()
    };
    let rpc: Vec<(Labels, HistogramSnapshot)> = report
        .peers
        .iter()
        .map(|p| (vec![("follower", p.node.to_string())], p.rpc.clone()))
        .collect();
    family(
        enc,
        "cairn_replication_rpc_seconds",
        "AppendEntries RPCs carrying entries, per follower node: send, follower append and fsync, ack.",
        h,
        &rpc,
    )?;
    family(
        enc,
        "cairn_replication_rpc_failures",
        "Such RPCs that got no answer (unreachable, timed out, unreadable reply), per follower node.",
        c,
        &peer(&|p| p.rpc_failures),
    )?;
    let peer_label = |p: &crate::replication::PeerReplication| vec![("peer", p.node.to_string())];
    let probes: Vec<(Labels, HistogramSnapshot)> = report
        .peers
        .iter()
        .map(|p| (peer_label(p), p.probe.clone()))
        .collect();
    family(
        enc,
        "cairn_peer_probe_seconds",
        "Ping probes to each peer over the cluster transport (every 100 ms), round trip.",
        h,
        &probes,
    )?;
    let probe_failures: Vec<(Labels, u64)> = report
        .peers
        .iter()
        .map(|p| (peer_label(p), p.probe_failures))
        .collect();
    family(
        enc,
        "cairn_peer_probe_failures",
        "Ping probes to each peer that got no answer within their deadline.",
        c,
        &probe_failures,
    )?;
    let scores: Vec<(Labels, f64)> = report
        .peers
        .iter()
        .map(|p| (peer_label(p), p.slow_score))
        .collect();
    family(
        enc,
        "cairn_peer_slow_score",
        "Slow score of the link to each peer from its ping probes: 1 healthy, 100 unusable (TiKV-style).",
        g,
        &scores,
    )?;
    let per_peer = |f: &dyn Fn(&crate::replication::PeerReplication) -> u64| -> Vec<(Labels, u64)> {
        report.peers.iter().map(|p| (peer_label(p), f(p))).collect()
    };
    family(
        enc,
        "cairn_peer_bytes_sent",
        "Bytes this node sent to each peer over the cluster transport (all groups, heartbeats and forwarded requests).",
        c,
        &per_peer(&|p| p.bytes_sent),
    )?;
    family(
        enc,
        "cairn_peer_bytes_received",
        "Bytes this node received from each peer over the cluster transport.",
        c,
        &per_peer(&|p| p.bytes_received),
    )?;
    family(
        enc,
        "cairn_peer_calls_timed_out",
        "Transport calls to each peer that got no answer by their deadline; rising for one peer: a slow or lossy link.",
        c,
        &per_peer(&|p| p.calls_timed_out),
    )?;
    Ok(())
}

/// Anti-entropy families: totals of the scans this node ran as leader, and
/// the last scan of each partition it ran.
fn anti_entropy(
    enc: &mut DescriptorEncoder,
    ae: &crate::antientropy::AntiEntropyFigures,
) -> Result<(), std::fmt::Error> {
    let (c, g) = (MetricType::Counter, MetricType::Gauge);
    let scans: Vec<(Labels, u64)> = ae
        .scans
        .iter()
        .map(|s| {
            (
                vec![
                    ("trigger", s.trigger.clone()),
                    ("outcome", s.outcome.clone()),
                ],
                s.count,
            )
        })
        .collect();
    family(
        enc,
        "cairn_anti_entropy_scans",
        "Anti-entropy scans this node ran as partition leader, by trigger and outcome; alert on outcome=\"failed\".",
        c,
        &scans,
    )?;
    let totals: [(&str, &str, u64); 6] = [
        (
            "cairn_anti_entropy_ranges_compared",
            "Merkle tree nodes compared with followers.",
            ae.ranges_compared,
        ),
        (
            "cairn_anti_entropy_divergent_ranges",
            "Log index ranges on which a replica differed from the majority; any increase means a disk or bug lost or changed data.",
            ae.divergent_ranges,
        ),
        (
            "cairn_anti_entropy_repaired_ranges",
            "Divergent ranges repaired from a majority replica.",
            ae.repaired_ranges,
        ),
        (
            "cairn_anti_entropy_repaired_bytes",
            "Bytes of batches copied onto damaged replicas.",
            ae.repaired_bytes,
        ),
        (
            "cairn_anti_entropy_read_bytes",
            "Bytes of segment files read to build digests (rate-limited).",
            ae.bytes_read,
        ),
        (
            "cairn_anti_entropy_failures",
            "Ranges or replicas a scan could not compare or repair.",
            ae.failures,
        ),
    ];
    for (name, help, value) in totals {
        family(enc, name, help, c, &[(Vec::new(), value)])?;
    }
    family(
        enc,
        "cairn_anti_entropy_quarantined_replicas",
        "Partition replicas on this node taken out of service for reads because they could not be repaired; alert above 0.",
        g,
        &[(Vec::new(), ae.quarantined_replicas)],
    )?;
    let part = |p: &crate::antientropy::PartitionScanFigures| -> Labels {
        vec![
            ("stream", p.stream.clone()),
            ("partition", p.partition.to_string()),
        ]
    };
    let per_part = |f: &dyn Fn(&crate::antientropy::PartitionScanFigures) -> f64| {
        ae.partitions
            .iter()
            .map(|p| (part(p), f(p)))
            .collect::<Vec<(Labels, f64)>>()
    };
    family(
        enc,
        "cairn_anti_entropy_last_scan_timestamp_seconds",
        "When this node last scanned the partition (Unix time); alert if a led partition's is older than a few intervals.",
        g,
        &per_part(&|p| p.last_scan_unix_seconds),
    )?;
    family(
        enc,
        "cairn_anti_entropy_last_scan_duration_seconds",
        "How long the partition's last scan took.",
        g,
        &per_part(&|p| p.last_scan_duration_seconds),
    )?;
    family(
        enc,
        "cairn_anti_entropy_last_scan_divergent_ranges",
        "Divergent ranges the partition's last scan found.",
        g,
        &per_part(&|p| p.last_divergent_ranges as f64),
    )?;
    family(
        enc,
        "cairn_anti_entropy_last_scan_ok",
        "1 if the partition's last scan compared and repaired everything, 0 if it failed.",
        g,
        &per_part(&|p| f64::from(u8::from(p.last_ok))),
    )?;
    Ok(())
}
