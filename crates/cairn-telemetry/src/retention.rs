//! Retention, snapshot catch-up and orphan clean-up figures of one node
//! (filled in by the cluster layer: `cairn_cluster`'s `retention` and
//! `catchup`) and their Prometheus families.

pub use crate::replication::RetentionFigures;

/// Writes the retention figures and each replica's log start and
/// catching-up flag as Prometheus families.
pub(crate) fn encode(
    enc: &mut prometheus_client::encoding::DescriptorEncoder,
    r: &RetentionFigures,
    partitions: &[crate::replication::PartitionReplication],
) -> Result<(), std::fmt::Error> {
    use prometheus_client::metrics::MetricType;

    use crate::families::{Labels, family};
    let (c, g) = (MetricType::Counter, MetricType::Gauge);
    let counters: [(&str, &str, u64); 10] = [
        (
            "cairn_retention_cuts",
            "Retention cuts this node proposed through Raft as a partition leader.",
            r.cuts_proposed,
        ),
        (
            "cairn_retention_cut_segments",
            "Segments the proposed cuts covered (the leader's log); divide the retention run time by this for the cost per segment.",
            r.cut_segments,
        ),
        (
            "cairn_retention_cut_bytes",
            "Bytes the proposed cuts covered (the leader's log).",
            r.cut_bytes,
        ),
        (
            "cairn_retention_purges",
            "Purges this node asked openraft for, up to an applied cut or the replay window (--snapshot-behind), or of the data log to a cut.",
            r.purges,
        ),
        (
            "cairn_retention_failures",
            "Retention runs that failed on a partition; alert on any increase.",
            r.failures,
        ),
        (
            "cairn_snapshot_catchups_started",
            "Catch-ups by snapshot of replicas on this node (the retained log fetched from the leader).",
            r.catchups_started,
        ),
        (
            "cairn_snapshot_catchups_completed",
            "Catch-ups by snapshot whose data was fully staged.",
            r.catchups_completed,
        ),
        (
            "cairn_snapshot_catchups_failed",
            "Catch-ups by snapshot that failed (retried by the next snapshot request); alert on a steady rise.",
            r.catchups_failed,
        ),
        (
            "cairn_snapshot_catchup_bytes",
            "Bytes of batches fetched to catch replicas up (rate-limited).",
            r.catchup_bytes,
        ),
        (
            "cairn_orphan_dirs_removed",
            "Group directories no partition on this node owned, removed after the grace period.",
            r.orphans_removed,
        ),
    ];
    for (name, help, value) in counters {
        family(enc, name, help, c, &[(Vec::new(), value)])?;
    }
    family(
        enc,
        "cairn_snapshot_catchups_in_progress",
        "Replicas on this node fetching a snapshot's data right now.",
        g,
        &[(Vec::new(), r.catchups_in_progress)],
    )?;
    family(
        enc,
        "cairn_orphan_dirs_pending",
        "Unowned group directories waiting out the grace period.",
        g,
        &[(Vec::new(), r.orphans_pending)],
    )?;
    let part = |p: &crate::replication::PartitionReplication| -> Labels {
        vec![
            ("stream", p.stream.clone()),
            ("partition", p.partition.to_string()),
        ]
    };
    let starts: Vec<(Labels, u64)> = partitions
        .iter()
        .map(|p| (part(p), p.log_start_index))
        .collect();
    family(
        enc,
        "cairn_partition_log_start_index",
        "The first Raft index retention keeps on this replica; the same on every replica of a partition once the cut is applied.",
        g,
        &starts,
    )?;
    let catching: Vec<(Labels, u64)> = partitions
        .iter()
        .map(|p| (part(p), u64::from(p.catching_up)))
        .collect();
    family(
        enc,
        "cairn_partition_catching_up",
        "1 while this replica fetches a snapshot's data from its leader.",
        g,
        &catching,
    )
}
