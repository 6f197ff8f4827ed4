//! The runtime side of anti-entropy (design in [`crate::antientropy`]): the
//! RPCs replicas answer, the scan a partition leader runs, the scheduler,
//! and the per-partition status.
//!
//! Every step of a scan is an [`AeRequest`] to a replica. The leader sends
//! them to itself too (answered in-process by the same code), so its own
//! replica is compared, repaired and quarantined exactly like a follower.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cairn_storage::{Digest, DigestMode, LEAF_SPAN, LeafDigests, PartitionLog};
use cairn_telemetry::antientropy::{AntiEntropyFigures, PartitionScanFigures, ScanCount};
use cairn_types::batch::RecordBatch;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::replication::Observation;
use super::{ClusterError, Inner, PartitionGroup, encode, kinds};
use crate::antientropy::throttle::RateLimiter;
use crate::antientropy::tree::{self, MerkleTree};
use crate::antientropy::{
    AntiEntropyConfig, DivergentRange, ScanOutcome, ScanReport, ScanTrigger, SkippedReplica,
    Version, right_version,
};
use crate::transport::{NodeId, RemoteError};

/// Most bytes of batches one repair request carries.
const REPAIR_CHUNK_BYTES: u64 = 4 << 20;
/// Deadline of one anti-entropy RPC (a digest request may read a lot under
/// the rate limit).
const RPC_DEADLINE: Duration = Duration::from_secs(600);
/// Deadline of a whole scan forwarded to a partition leader.
pub(crate) const SCAN_DEADLINE: Duration = Duration::from_secs(600);
/// A read that hits damage triggers at most one scan per partition per
/// this long.
const READ_TRIGGER_DEBOUNCE: Duration = Duration::from_secs(5);
/// How often the scheduler looks at the partitions this node leads.
const SCHEDULER_TICK: Duration = Duration::from_millis(500);

/// One step of a scan, asked of one replica.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum AeRequest {
    /// The replica's readable log indexes and whether it is quarantined.
    Bounds,
    /// The Merkle nodes at `level`, `positions` of the replica's tree over
    /// `range`, plus the damage it found itself.
    Nodes {
        range: Range<u64>,
        mode: DigestMode,
        level: u32,
        positions: Vec<u64>,
    },
    /// Batches from `range.start` on (up to `max_bytes`), concatenated.
    Fetch { range: Range<u64>, max_bytes: u64 },
    /// Overwrite the batches these (concatenated, contiguous) batches hold.
    Repair { batches: Bytes },
    /// Stop (`Some(reason)`) or resume (`None`) serving reads.
    Quarantine { reason: Option<String> },
    /// Scan this partition now (sent to its leader).
    Scan { deep: bool, trigger: ScanTrigger },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum AeResponse {
    Bounds {
        first: u64,
        next: u64,
        quarantined: bool,
    },
    Nodes {
        hashes: Vec<Digest>,
        damaged: Vec<Range<u64>>,
        bytes_read: u64,
    },
    Batches(Bytes),
    Repaired {
        batches: u64,
        bytes: u64,
    },
    Done,
    Scanned(Box<ScanReport>),
}

/// Counters since the node started, for `/metrics`.
#[derive(Debug, Default)]
struct Totals {
    scans: Mutex<BTreeMap<(ScanTrigger, ScanOutcome), u64>>,
    ranges_compared: AtomicU64,
    divergent_ranges: AtomicU64,
    repaired_ranges: AtomicU64,
    repaired_bytes: AtomicU64,
    bytes_read: Arc<AtomicU64>,
    failures: AtomicU64,
}

/// A node's anti-entropy state.
#[derive(Debug)]
pub(crate) struct AntiEntropy {
    pub config: AntiEntropyConfig,
    limiter: Arc<RateLimiter>,
    /// The last scan of each partition this node ran, by group.
    last: Mutex<HashMap<u64, ScanReport>>,
    /// The last of those scans that found replicas differing, by group.
    last_divergent: Mutex<HashMap<u64, ScanReport>>,
    totals: Totals,
    /// One scan at a time per node: scans share the disk and the rate.
    scan_lock: tokio::sync::Mutex<()>,
    read_triggers: Mutex<HashMap<u64, Instant>>,
}

impl AntiEntropy {
    pub fn new(config: AntiEntropyConfig) -> Self {
        AntiEntropy {
            limiter: Arc::new(RateLimiter::new(config.rate_bytes_per_sec)),
            config,
            last: Mutex::new(HashMap::new()),
            last_divergent: Mutex::new(HashMap::new()),
            totals: Totals::default(),
            scan_lock: tokio::sync::Mutex::new(()),
            read_triggers: Mutex::new(HashMap::new()),
        }
    }

    fn record(&self, report: &ScanReport) {
        let t = &self.totals;
        *t.scans
            .lock()
            .entry((report.trigger, report.outcome))
            .or_default() += 1;
        t.ranges_compared
            .fetch_add(report.ranges_compared, Ordering::Relaxed);
        t.divergent_ranges
            .fetch_add(report.divergent.len() as u64, Ordering::Relaxed);
        t.repaired_ranges
            .fetch_add(report.repaired_ranges, Ordering::Relaxed);
        t.repaired_bytes
            .fetch_add(report.bytes_repaired, Ordering::Relaxed);
        t.failures
            .fetch_add(report.failures.len() as u64, Ordering::Relaxed);
        self.last.lock().insert(report.group, report.clone());
        if !report.divergent.is_empty() {
            self.last_divergent
                .lock()
                .insert(report.group, report.clone());
        }
    }

    /// The last scan of every partition this node ran, by stream and partition.
    pub fn reports(&self) -> Vec<ScanReport> {
        sorted(&self.last.lock())
    }

    /// The last scan of every partition this node ran that found
    /// divergence (whether or not it was repaired).
    pub fn divergent_reports(&self) -> Vec<ScanReport> {
        sorted(&self.last_divergent.lock())
    }

    pub fn figures(&self, quarantined_replicas: u64) -> AntiEntropyFigures {
        let t = &self.totals;
        let scans = t
            .scans
            .lock()
            .iter()
            .map(|((trigger, outcome), count)| ScanCount {
                trigger: trigger.as_str().into(),
                outcome: outcome.as_str().into(),
                count: *count,
            })
            .collect();
        let partitions = self
            .reports()
            .into_iter()
            .map(|r| PartitionScanFigures {
                stream: r.stream,
                partition: r.partition,
                last_scan_unix_seconds: r.started_at_unix_ms as f64 / 1e3,
                last_scan_duration_seconds: r.duration_ms / 1e3,
                last_divergent_ranges: r.divergent.len() as u64,
                last_ok: r.outcome != ScanOutcome::Failed,
            })
            .collect();
        AntiEntropyFigures {
            scans,
            ranges_compared: t.ranges_compared.load(Ordering::Relaxed),
            divergent_ranges: t.divergent_ranges.load(Ordering::Relaxed),
            repaired_ranges: t.repaired_ranges.load(Ordering::Relaxed),
            repaired_bytes: t.repaired_bytes.load(Ordering::Relaxed),
            bytes_read: t.bytes_read.load(Ordering::Relaxed),
            failures: t.failures.load(Ordering::Relaxed),
            quarantined_replicas,
            partitions,
        }
    }

    /// True if a read-triggered scan of `group` may start now.
    fn read_trigger_due(&self, group: u64) -> bool {
        let now = Instant::now();
        let mut triggers = self.read_triggers.lock();
        match triggers.get(&group) {
            Some(at) if now.duration_since(*at) < READ_TRIGGER_DEBOUNCE => false,
            _ => {
                triggers.insert(group, now);
                true
            }
        }
    }
}

fn sorted(reports: &HashMap<u64, ScanReport>) -> Vec<ScanReport> {
    let mut all: Vec<ScanReport> = reports.values().cloned().collect();
    all.sort_by(|a, b| (&a.stream, a.partition).cmp(&(&b.stream, b.partition)));
    all
}

fn leaf_range(first_leaf: u64, pos: u64, range: &Range<u64>) -> Range<u64> {
    let start = (first_leaf + pos) * LEAF_SPAN;
    start.max(range.start)..(start + LEAF_SPAN).min(range.end)
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

fn unexpected(what: &str, got: &AeResponse) -> ClusterError {
    ClusterError::Storage(format!("anti-entropy: expected {what}, got {got:?}"))
}

impl Inner {
    /// This node's replica of `group`, or `NoSuchGroup`.
    pub(super) fn group_or_err(&self, group: u64) -> Result<Arc<PartitionGroup>, ClusterError> {
        self.groups
            .read()
            .get(&group)
            .cloned()
            .ok_or_else(|| ClusterError::NoSuchGroup {
                group: self.group_name(group),
                node: self.me(),
            })
    }

    /// Serves an anti-entropy transport request.
    pub(super) async fn handle_anti_entropy(
        self: &Arc<Self>,
        group: u64,
        payload: &[u8],
    ) -> Result<Bytes, RemoteError> {
        let request: AeRequest = super::decode(payload)?;
        encode(&self.serve_anti_entropy(group, request).await)
    }

    async fn digests(
        &self,
        log: &PartitionLog,
        range: Range<u64>,
        mode: DigestMode,
    ) -> Result<LeafDigests, ClusterError> {
        let log = log.clone();
        let limiter = self.anti_entropy.limiter.clone();
        // Counted as it is read, so a long deep scan shows progress.
        let read = self.anti_entropy.totals.bytes_read.clone();
        tokio::task::spawn_blocking(move || {
            log.leaf_digests(range, mode, &mut |n| {
                limiter.take_blocking(n);
                read.fetch_add(n, Ordering::Relaxed);
            })
        })
        .await
        .map_err(|e| ClusterError::Storage(format!("digest task: {e}")))?
        .map_err(super::storage_err)
    }

    /// Answers one step of a scan for this node's replica of `group`.
    pub(super) async fn serve_anti_entropy(
        self: &Arc<Self>,
        group: u64,
        request: AeRequest,
    ) -> Result<AeResponse, ClusterError> {
        if let AeRequest::Scan { deep, trigger } = request {
            let report = self.clone().scan_as_leader(group, deep, trigger).await?;
            return Ok(AeResponse::Scanned(Box::new(report)));
        }
        // A replica whose Raft could not start (say, on a damaged batch it
        // must read at startup) is still compared and repaired.
        let (log, g) = match self.group_or_err(group) {
            Ok(g) => (g.log.clone(), Some(g)),
            Err(e) => match self.stalled.lock().get(&group) {
                Some(log) => (log.clone(), None),
                None => return Err(e),
            },
        };
        match request {
            AeRequest::Bounds => {
                let (first, next) = log.index_bounds();
                Ok(AeResponse::Bounds {
                    first,
                    next,
                    quarantined: g.is_some_and(|g| g.quarantined().is_some()),
                })
            }
            AeRequest::Nodes {
                range,
                mode,
                level,
                positions,
            } => {
                let digests = self.digests(&log, range, mode).await?;
                let tree = MerkleTree::build(digests.leaves);
                let hashes = tree.nodes(level, &positions).ok_or_else(|| {
                    ClusterError::Storage(format!(
                        "anti-entropy: no tree nodes {positions:?} at level {level} ({} leaves)",
                        tree.leaf_count()
                    ))
                })?;
                Ok(AeResponse::Nodes {
                    hashes,
                    damaged: digests.damaged,
                    bytes_read: digests.bytes_read,
                })
            }
            AeRequest::Fetch { range, max_bytes } => {
                let wanted = range.clone();
                let batches = tokio::task::spawn_blocking(move || {
                    log.read_index_range(wanted, max_bytes as usize)
                })
                .await
                .map_err(|e| ClusterError::Storage(format!("fetch task: {e}")))?
                .map_err(super::storage_err)?;
                if batches.first().map(RecordBatch::log_index) != Some(range.start) {
                    return Err(ClusterError::Storage(format!(
                        "anti-entropy: this replica cannot supply index {}",
                        range.start
                    )));
                }
                let mut out = BytesMut::with_capacity(batches.iter().map(RecordBatch::len).sum());
                for b in &batches {
                    out.extend_from_slice(b.as_bytes());
                }
                Ok(AeResponse::Batches(out.freeze()))
            }
            AeRequest::Repair { batches } => {
                let batches = RecordBatch::split_all(batches)
                    .map_err(|e| ClusterError::Storage(format!("repair batches: {e}")))?;
                let outcome = log.repair(batches).await.map_err(super::storage_err)?;
                tracing::info!(
                    group,
                    batches = outcome.batches,
                    bytes = outcome.bytes_written,
                    "anti-entropy repaired this replica"
                );
                Ok(AeResponse::Repaired {
                    batches: outcome.batches,
                    bytes: outcome.bytes_written,
                })
            }
            AeRequest::Quarantine { reason } => {
                // A replica that did not start serves no reads anyway.
                let Some(g) = g else {
                    return Ok(AeResponse::Done);
                };
                match &reason {
                    Some(r) => {
                        tracing::error!(group, stream = %g.stream, partition = g.partition, reason = %r, "replica quarantined: it no longer serves reads")
                    }
                    None => {
                        tracing::info!(group, stream = %g.stream, partition = g.partition, "replica back in service")
                    }
                }
                g.set_quarantine(reason);
                Ok(AeResponse::Done)
            }
            AeRequest::Scan { .. } => unreachable!("handled above"),
        }
    }

    /// Sends `request` to `node`'s replica (in-process for this node).
    /// Boxed: a scan asks [`Inner::serve_anti_entropy`] for the leader's own
    /// replica, and that function can run a scan.
    pub(super) fn ask(
        self: &Arc<Self>,
        node: NodeId,
        group: u64,
        request: AeRequest,
    ) -> BoxFuture<'static, Result<AeResponse, ClusterError>> {
        let this = self.clone();
        Box::pin(async move {
            if node == this.me() {
                return this.serve_anti_entropy(group, request).await;
            }
            let payload = postcard::to_allocvec(&request)
                .map_err(|e| ClusterError::Storage(format!("encode: {e}")))?;
            this.call(
                node,
                group,
                kinds::ANTI_ENTROPY,
                Bytes::from(payload),
                RPC_DEADLINE,
            )
            .await
        })
    }

    /// Runs a scan of `group`, which this node must lead; see the design in
    /// [`crate::antientropy`].
    pub(super) async fn scan_as_leader(
        self: Arc<Self>,
        group: u64,
        deep: bool,
        trigger: ScanTrigger,
    ) -> Result<ScanReport, ClusterError> {
        let _one_at_a_time = self.anti_entropy.scan_lock.lock().await;
        let g = self.group_or_err(group)?;
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
            leader: self.me(),
            trigger,
            deep,
            started_at_unix_ms: self.config.clock.unix_ms(),
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
        self.run_scan(&g, &o, &mut report).await;
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
        self.anti_entropy.record(&report);
        Ok(report)
    }

    async fn run_scan(
        self: &Arc<Self>,
        g: &PartitionGroup,
        o: &Observation,
        report: &mut ScanReport,
    ) {
        let group = g.group;
        let me = self.me();
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
            match self.ask(node, group, AeRequest::Bounds).await {
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
            self.ask(
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
        let (local, roots) = tokio::join!(self.digests(&g.log, range.clone(), mode), roots);
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
                let (this, range, extra) = (self.clone(), range.clone(), extra.clone());
                async move {
                    let prefetched = extra.lock().2.take();
                    let answer = match prefetched {
                        Some(root) => root?,
                        // The root request did any deep re-reading; the
                        // rest reuse what it cached.
                        None => {
                            this.ask(
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
                let result = match self.copy_range(group, span.clone(), source, target).await {
                    Ok(bytes) => {
                        entry.bytes_repaired += bytes;
                        self.verify_repair(group, &range, first_leaf, &span, source, target)
                            .await
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
            match self
                .ask(
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
        self.lift_quarantines(group, &quarantined, &healthy, report)
            .await;
    }

    /// Puts replicas that were quarantined and are now consistent back in service.
    async fn lift_quarantines(
        self: &Arc<Self>,
        group: u64,
        quarantined: &BTreeSet<NodeId>,
        healthy: &[NodeId],
        report: &mut ScanReport,
    ) {
        for node in healthy.iter().filter(|n| quarantined.contains(n)) {
            if let Err(e) = self
                .ask(*node, group, AeRequest::Quarantine { reason: None })
                .await
            {
                report
                    .failures
                    .push(format!("lifting the quarantine of node {node}: {e}"));
            }
        }
    }

    /// Copies the batches of `span` from `source`'s replica onto `target`'s,
    /// in chunks; answers the bytes copied.
    async fn copy_range(
        self: &Arc<Self>,
        group: u64,
        span: Range<u64>,
        source: NodeId,
        target: NodeId,
    ) -> Result<u64, ClusterError> {
        let mut at = span.start;
        let mut copied = 0;
        while at < span.end {
            let fetched = self
                .ask(
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
            match self
                .ask(
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

    /// Checks that `target`'s leaves over `span` now equal `source`'s.
    async fn verify_repair(
        self: &Arc<Self>,
        group: u64,
        range: &Range<u64>,
        first_leaf: u64,
        span: &Range<u64>,
        source: NodeId,
        target: NodeId,
    ) -> Result<(), ClusterError> {
        let positions: Vec<u64> = (span.start / LEAF_SPAN - first_leaf
            ..=(span.end - 1) / LEAF_SPAN - first_leaf)
            .collect();
        let mut answers = Vec::new();
        for node in [source, target] {
            let answer = self
                .ask(
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

    /// Scans `group` on its leader (here or remote), retrying while
    /// leadership is unsettled.
    pub(super) async fn scan_anywhere(
        self: &Arc<Self>,
        group: u64,
        deep: bool,
        trigger: ScanTrigger,
    ) -> Result<ScanReport, ClusterError> {
        let deadline = Instant::now() + self.config.request_timeout;
        // Without a running replica here (none, or one whose Raft did not
        // start), the partition's replicas are asked in turn; a follower's
        // refusal names the leader.
        let replicas: Vec<NodeId> = self
            .controller_sm
            .meta()
            .streams
            .values()
            .flat_map(|s| s.partitions.iter())
            .find(|p| p.group == group)
            .map(|p| p.replicas.clone())
            .unwrap_or_default();
        let (mut hint, mut attempt) = (None, 0usize);
        loop {
            let local_leader = self.group_or_err(group).ok().and_then(|g| g.leader());
            let target = local_leader
                .or(hint)
                .or_else(|| replicas.get(attempt % replicas.len().max(1)).copied());
            attempt += 1;
            let result = match target {
                Some(l) if l == self.me() => {
                    self.clone().scan_as_leader(group, deep, trigger).await
                }
                Some(l) => {
                    let payload = postcard::to_allocvec(&AeRequest::Scan { deep, trigger })
                        .map_err(|e| ClusterError::Storage(format!("encode: {e}")))?;
                    self.call::<AeResponse>(
                        l,
                        group,
                        kinds::ANTI_ENTROPY,
                        Bytes::from(payload),
                        SCAN_DEADLINE,
                    )
                    .await
                    .and_then(|r| match r {
                        AeResponse::Scanned(report) => Ok(*report),
                        other => Err(unexpected("a scan report", &other)),
                    })
                }
                None => Err(ClusterError::NoSuchGroup {
                    group: self.group_name(group),
                    node: self.me(),
                }),
            };
            match result {
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    hint = match e {
                        ClusterError::NotLeader { leader, .. } => leader,
                        _ => None,
                    };
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    /// A read of this node's replica of `group` hit damage: scan it (deep)
    /// on its leader soon, unless one was just triggered.
    pub(super) fn damage_found(self: &Arc<Self>, group: u64) {
        if !self.anti_entropy.read_trigger_due(group) {
            return;
        }
        tracing::warn!(group, "a read found damaged data; scanning the partition");
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this
                .scan_anywhere(group, true, ScanTrigger::ReadError)
                .await
            {
                tracing::warn!(group, error = %e, "read-triggered anti-entropy scan failed");
            }
        });
    }

    /// Scans the partitions this node leads: each shortly after it became
    /// leader and then every `interval`, jittered.
    pub(super) async fn anti_entropy_loop(self: Arc<Self>) {
        struct Schedule {
            term: u64,
            leader_since: Instant,
            scanned_this_term: bool,
            next_due: Instant,
            last_deep: Instant,
        }
        let config = self.anti_entropy.config.clone();
        let jittered = |interval: Duration| interval.mul_f64(rand::rng().random_range(0.8..1.2));
        let mut schedules: HashMap<u64, Schedule> = HashMap::new();
        let mut tick = tokio::time::interval(SCHEDULER_TICK);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let groups: Vec<Arc<PartitionGroup>> = self.groups.read().values().cloned().collect();
            schedules.retain(|id, _| groups.iter().any(|g| g.group == *id && g.is_leader()));
            for g in groups {
                if !g.is_leader() {
                    continue;
                }
                let now = Instant::now();
                let term = g.raft.metrics().borrow().current_term;
                let s = schedules.entry(g.group).or_insert_with(|| Schedule {
                    term,
                    leader_since: now,
                    scanned_this_term: false,
                    next_due: now + jittered(config.interval),
                    last_deep: now,
                });
                if s.term != term {
                    s.term = term;
                    s.leader_since = now;
                    s.scanned_this_term = false;
                }
                let trigger = if !s.scanned_this_term
                    && now.duration_since(s.leader_since) >= config.leader_change_delay
                {
                    ScanTrigger::LeaderChange
                } else if !config.interval.is_zero() && now >= s.next_due {
                    ScanTrigger::Periodic
                } else {
                    continue;
                };
                let deep = trigger == ScanTrigger::Periodic
                    && now.duration_since(s.last_deep) >= config.deep_interval;
                s.scanned_this_term = true;
                s.next_due = now + jittered(config.interval);
                if deep {
                    s.last_deep = now;
                }
                if let Err(e) = self.clone().scan_as_leader(g.group, deep, trigger).await {
                    tracing::debug!(group = g.group, error = %e, "scheduled anti-entropy scan did not run");
                }
            }
        }
    }
}
