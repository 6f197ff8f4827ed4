//! The scan a partition's leader runs (design in [`crate::antientropy`]):
//! agree on a range with every replica, compare Merkle trees top down,
//! fetch the differing leaves, decide the right version, repair, verify,
//! and quarantine a replica that cannot be repaired.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::Arc;

use bytes::BytesMut;
use cairn_storage::{Digest, DigestMode, LEAF_SPAN};
use cairn_types::batch::RecordBatch;
use tokio::time::Instant;

use parking_lot::Mutex;

use super::host::Host;
use super::replica::{ask, digests};
use super::tree::{self, MerkleTree};
use super::wire::{AeRequest, AeResponse};
use super::{
    DivergentRange, ScanOutcome, ScanReport, ScanTrigger, SkippedReplica, Version, right_version,
};
use crate::cluster::error::ClusterError;
use crate::cluster::group::PartitionGroup;
use crate::cluster::observation::Observation;
use crate::transport::NodeId;

/// Most bytes of batches one repair request carries.
const REPAIR_CHUNK_BYTES: u64 = 4 << 20;

fn leaf_range(first_leaf: u64, pos: u64, range: &Range<u64>) -> Range<u64> {
    let start = (first_leaf + pos) * LEAF_SPAN;
    start.max(range.start)..(start + LEAF_SPAN).min(range.end)
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

pub(super) fn unexpected(what: &str, got: &AeResponse) -> ClusterError {
    ClusterError::Storage(format!("anti-entropy: expected {what}, got {got:?}"))
}

/// Runs a scan of `group`, which this node must lead; see the design in
/// [`crate::antientropy`].
pub(crate) async fn as_leader(
    rt: Arc<dyn Host>,
    group: u64,
    deep: bool,
    trigger: ScanTrigger,
) -> Result<ScanReport, ClusterError> {
    let _one_at_a_time = rt.anti_entropy().scan_lock.lock().await;
    let g = rt.replica(group)?;
    let o = Observation::of(&g.raft.metrics().borrow());
    if !o.is_leader {
        return Err(ClusterError::NotLeader {
            group: g.name(),
            leader: o.leader,
        });
    }
    let started = Instant::now();
    let mut report = ScanReport {
        stream: g.stream.clone(),
        partition: g.partition,
        group,
        leader: rt.me(),
        trigger,
        deep,
        started_at_unix_ms: rt.unix_ms(),
        duration_ms: 0.0,
        from_index: 0,
        to_index: 0,
        replicas: Vec::new(),
        skipped: Vec::new(),
        ranges_compared: 0,
        divergent_leaves: 0,
        divergent: Vec::new(),
        repaired_ranges: 0,
        bytes_repaired: 0,
        bytes_read: 0,
        failures: Vec::new(),
        quarantined: Vec::new(),
        outcome: ScanOutcome::Clean,
    };
    run(&rt, &g, &o, &mut report).await;
    report.duration_ms = started.elapsed().as_secs_f64() * 1e3;
    report.outcome = if !report.failures.is_empty() {
        ScanOutcome::Failed
    } else if report.divergent.is_empty() {
        ScanOutcome::Clean
    } else {
        ScanOutcome::Repaired
    };
    match report.outcome {
        ScanOutcome::Clean => {
            tracing::debug!(group, ?report.trigger, from = report.from_index, to = report.to_index, "anti-entropy scan clean")
        }
        _ => {
            tracing::warn!(group, stream = %report.stream, partition = report.partition, outcome = ?report.outcome, divergent = ?report.divergent, failures = ?report.failures, "anti-entropy scan found divergence")
        }
    }
    rt.anti_entropy().record(&report);
    Ok(report)
}

async fn run(rt: &Arc<dyn Host>, g: &PartitionGroup, o: &Observation, report: &mut ScanReport) {
    let group = g.group;
    let me = rt.me();
    let Some(applied) = o.last_applied else {
        return; // nothing committed yet
    };
    // Who to compare, and over which range.
    let mut to = applied + 1;
    let mut from = 0;
    let mut quarantined = BTreeSet::new();
    let mut members: Vec<(NodeId, Option<u64>)> = o
        .matched
        .iter()
        .filter(|(n, _)| **n != me)
        .map(|(n, m)| (*n, *m))
        .collect();
    members.insert(0, (me, Some(applied)));
    for (node, matched) in members {
        let Some(matched) = matched else {
            report.skipped.push(SkippedReplica {
                node,
                reason: "has not replicated anything yet".into(),
            });
            continue;
        };
        match ask(rt, node, group, AeRequest::Bounds).await {
            Ok(AeResponse::Bounds {
                first,
                next,
                quarantined: q,
            }) => {
                from = from.max(first);
                to = to.min(matched + 1).min(next);
                if q {
                    quarantined.insert(node);
                }
                report.replicas.push(node);
            }
            Ok(other) => report
                .failures
                .push(unexpected("bounds", &other).to_string()),
            Err(e) => report.skipped.push(SkippedReplica {
                node,
                reason: e.to_string(),
            }),
        }
    }
    if !report.replicas.contains(&me) {
        report
            .failures
            .push("the leader could not read its own replica".into());
        return;
    }
    report.from_index = from;
    report.to_index = to.max(from);
    // Nothing to compare: nothing proven either, so a quarantine stays.
    if from >= to || report.replicas.len() < 2 {
        return;
    }
    let range = from..to;
    let mode = if report.deep {
        DigestMode::Deep
    } else {
        DigestMode::Cached
    };
    let followers: Vec<NodeId> = report
        .replicas
        .iter()
        .copied()
        .filter(|n| *n != me)
        .collect();
    // Every replica builds its digests at once (the leader's own and
    // the followers' root requests run concurrently): in a deep scan
    // each reads its whole log, which should not happen one by one.
    let first_leaf = range.start / LEAF_SPAN;
    let top = MerkleTree::top_for((range.end - 1) / LEAF_SPAN + 1 - first_leaf);
    let roots = futures::future::join_all(followers.iter().map(|&node| {
        ask(
            rt,
            node,
            group,
            AeRequest::Nodes {
                range: range.clone(),
                mode,
                level: top,
                positions: vec![0],
            },
        )
    }));
    let (local, roots) = tokio::join!(digests(rt.as_ref(), &g.log, range.clone(), mode), roots);
    let local = match local {
        Ok(d) => d,
        Err(e) => {
            report.failures.push(format!("leader digests: {e}"));
            return;
        }
    };
    report.bytes_read += local.bytes_read;
    let mut damaged: BTreeMap<NodeId, Vec<Range<u64>>> = BTreeMap::new();
    damaged.insert(me, local.damaged.clone());
    let tree = MerkleTree::build(local.leaves);
    debug_assert_eq!(tree.top(), top);

    // Descend with each follower; remember where each one differs.
    let mut differing: BTreeMap<NodeId, BTreeMap<u64, Digest>> = BTreeMap::new();
    for (node, root) in followers.into_iter().zip(roots) {
        // (bytes read, damage the replica reported, the root's answer).
        let extra = Arc::new(Mutex::new((0u64, None::<Vec<Range<u64>>>, Some(root))));
        let descent = tree::descend(&tree, |level, positions| {
            let (this, range, extra) = (rt.clone(), range.clone(), extra.clone());
            async move {
                let prefetched = extra.lock().2.take();
                let answer = match prefetched {
                    Some(root) => root?,
                    // The root request did any deep re-reading; the
                    // rest reuse what it cached.
                    None => {
                        ask(
                            &this,
                            node,
                            group,
                            AeRequest::Nodes {
                                range,
                                mode: DigestMode::Cached,
                                level,
                                positions: positions.clone(),
                            },
                        )
                        .await?
                    }
                };
                match answer {
                    AeResponse::Nodes {
                        hashes,
                        damaged,
                        bytes_read,
                    } if hashes.len() == positions.len() => {
                        let mut e = extra.lock();
                        e.0 += bytes_read;
                        e.1.get_or_insert(damaged);
                        Ok(hashes)
                    }
                    other => Err(unexpected("tree nodes", &other)),
                }
            }
        })
        .await;
        let (bytes_read, their_damage, _) = std::mem::take(&mut *extra.lock());
        report.bytes_read += bytes_read;
        match descent {
            Ok(d) => {
                report.ranges_compared += d.nodes_compared;
                damaged.insert(node, their_damage.unwrap_or_default());
                differing.insert(node, d.leaves.into_iter().collect());
            }
            Err(e) => {
                report.replicas.retain(|n| *n != node);
                report.skipped.push(SkippedReplica {
                    node,
                    reason: e.to_string(),
                });
            }
        }
    }

    // Per differing leaf: every replica's digest (a follower that did not
    // differ there holds the leader's), and the value that is right.
    let leaves: BTreeSet<u64> = differing.values().flat_map(|m| m.keys().copied()).collect();
    report.divergent_leaves = leaves.len() as u64;
    // (bad replicas, good value holders) per leaf, merged into ranges.
    let mut plan: Vec<(Range<u64>, Vec<NodeId>, Vec<NodeId>)> = Vec::new();
    for pos in leaves {
        let span = leaf_range(first_leaf, pos, &range);
        let value = |node: NodeId| -> Digest {
            differing
                .get(&node)
                .and_then(|m| m.get(&pos))
                .copied()
                .unwrap_or_else(|| tree.node(0, pos).expect("leaf in tree"))
        };
        let versions: Vec<Version> = report
            .replicas
            .iter()
            .map(|&node| Version {
                node,
                digest: value(node),
                self_damaged: damaged
                    .get(&node)
                    .is_some_and(|d| d.iter().any(|r| overlaps(r, &span))),
            })
            .collect();
        let good = match right_version(&versions, me) {
            Ok(good) => good,
            Err(distinct) => {
                report.failures.push(format!(
                    "indexes [{}, {}): the leader's copy is damaged and the {distinct} versions of the others do not agree",
                    span.start, span.end,
                ));
                continue;
            }
        };
        let bad: Vec<NodeId> = report
            .replicas
            .iter()
            .copied()
            .filter(|n| !good.contains(n))
            .collect();
        match plan.last_mut() {
            Some((r, b, _)) if r.end == span.start && *b == bad => r.end = span.end,
            _ => plan.push((span, bad, good)),
        }
    }

    // Repair, then check the repaired leaves now match.
    let mut failed: BTreeMap<NodeId, String> = BTreeMap::new();
    for (span, bad, good) in plan {
        let source = if good.contains(&me) { me } else { good[0] };
        let mut entry = DivergentRange {
            from_index: span.start,
            to_index: span.end,
            bad_replicas: bad.clone(),
            source: Some(source),
            repaired: true,
            bytes_repaired: 0,
            error: None,
        };
        for &target in &bad {
            let result = match copy_range(rt, group, span.clone(), source, target).await {
                Ok(bytes) => {
                    entry.bytes_repaired += bytes;
                    verify_repair(rt, group, &range, first_leaf, &span, source, target).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                let message = format!(
                    "repairing node {target} at indexes [{}, {}) from node {source}: {e}",
                    span.start, span.end
                );
                entry.repaired = false;
                entry.error = Some(message.clone());
                report.failures.push(message.clone());
                failed.insert(target, message);
            }
        }
        report.bytes_repaired += entry.bytes_repaired;
        if entry.repaired {
            report.repaired_ranges += 1;
        }
        report.divergent.push(entry);
    }

    for (node, reason) in &failed {
        match ask(
            rt,
            node.to_owned(),
            group,
            AeRequest::Quarantine {
                reason: Some(reason.clone()),
            },
        )
        .await
        {
            Ok(_) => report.quarantined.push(*node),
            Err(e) => report
                .failures
                .push(format!("quarantining node {node}: {e}")),
        }
    }
    let healthy: Vec<NodeId> = report
        .replicas
        .iter()
        .copied()
        .filter(|n| !failed.contains_key(n))
        .collect();
    lift_quarantines(rt, group, &quarantined, &healthy, report).await;
}

/// Puts replicas that were quarantined and are now consistent back in service.
async fn lift_quarantines(
    rt: &Arc<dyn Host>,
    group: u64,
    quarantined: &BTreeSet<NodeId>,
    healthy: &[NodeId],
    report: &mut ScanReport,
) {
    for node in healthy.iter().filter(|n| quarantined.contains(n)) {
        if let Err(e) = ask(rt, *node, group, AeRequest::Quarantine { reason: None }).await {
            report
                .failures
                .push(format!("lifting the quarantine of node {node}: {e}"));
        }
    }
}

/// Copies the batches of `span` from `source`'s replica onto `target`'s,
/// in chunks; answers the bytes copied.
async fn copy_range(
    rt: &Arc<dyn Host>,
    group: u64,
    span: Range<u64>,
    source: NodeId,
    target: NodeId,
) -> Result<u64, ClusterError> {
    let mut at = span.start;
    let mut copied = 0;
    while at < span.end {
        let fetched = ask(
            rt,
            source,
            group,
            AeRequest::Fetch {
                range: at..span.end,
                max_bytes: REPAIR_CHUNK_BYTES,
            },
        )
        .await?;
        let AeResponse::Batches(bytes) = fetched else {
            return Err(unexpected("batches", &fetched));
        };
        let batches = RecordBatch::split_all(bytes.clone())
            .map_err(|e| ClusterError::Storage(format!("fetched batches: {e}")))?;
        // The source may hold more than asked for after the span's end.
        let keep: Vec<RecordBatch> = batches
            .into_iter()
            .take_while(|b| b.log_index() < span.end)
            .collect();
        let Some(last) = keep.last().map(RecordBatch::log_index) else {
            return Err(ClusterError::Storage(format!(
                "node {source} returned no batches for index {at}"
            )));
        };
        let mut payload = BytesMut::with_capacity(keep.iter().map(RecordBatch::len).sum());
        for b in &keep {
            payload.extend_from_slice(b.as_bytes());
        }
        let sent = payload.len() as u64;
        match ask(
            rt,
            target,
            group,
            AeRequest::Repair {
                batches: payload.freeze(),
            },
        )
        .await?
        {
            AeResponse::Repaired { .. } => {}
            other => return Err(unexpected("repaired", &other)),
        }
        copied += sent;
        at = last + 1;
    }
    Ok(copied)
}

async fn verify_repair(
    rt: &Arc<dyn Host>,
    group: u64,
    range: &Range<u64>,
    first_leaf: u64,
    span: &Range<u64>,
    source: NodeId,
    target: NodeId,
) -> Result<(), ClusterError> {
    let positions: Vec<u64> =
        (span.start / LEAF_SPAN - first_leaf..=(span.end - 1) / LEAF_SPAN - first_leaf).collect();
    let mut answers = Vec::new();
    for node in [source, target] {
        let answer = ask(
            rt,
            node,
            group,
            AeRequest::Nodes {
                range: range.clone(),
                mode: DigestMode::Cached,
                level: 0,
                positions: positions.clone(),
            },
        )
        .await?;
        match answer {
            AeResponse::Nodes { hashes, .. } => answers.push(hashes),
            other => return Err(unexpected("tree nodes", &other)),
        }
    }
    if answers[0] == answers[1] {
        Ok(())
    } else {
        Err(ClusterError::Storage(
            "the replica still differs after the repair".into(),
        ))
    }
}
