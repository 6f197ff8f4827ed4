//! Recommendations: what to do about the active findings, computed from
//! the latest round's measurements, each with the effect it should have
//! (a number, and how it was worked out) and its risk; and the arithmetic
//! that later checks an applied action against its pre-fault baseline.
//!
//! Pure like the rest of the crate: the node applies an action (leader
//! moves through the cluster) and feeds the rounds after it to [`judge`].
//!
//! # Rules
//!
//! | finding (not a symptom) | recommendation | applied by the cluster |
//! |---|---|---|
//! | `slow_disk`, `cpu_saturation`, `overload`, `slow_network` on a node that leads partitions | transfer those leaders to the fastest in-sync replicas | yes (safe class) |
//! | `leader_imbalance` | move leaders back to their preferred (placement's) nodes | yes (safe class) |
//! | `slow_disk` on a node that leads nothing | move its replicas away (replace its disk or decommission it) | no, advice |
//! | `hot_partition` | a stream with more partitions | no: a stream's partition count is fixed |
//! | `overload`/`cpu_saturation` on every node, no slow disk to blame | add a node | no, advice |
//! | `disk_full_soon`/`disk_full` | free disk (lower retention) | no, advice |
//!
//! New leaders are in-sync replicas without a resource finding of their
//! own (slow disk, CPU, memory, down, stalled); `overload` and
//! `slow_network` do not rule a node out — a slow leader makes every node
//! look overloaded — except as the target of a move made for the same
//! reason.
//!
//! The "safe class" — leader moves — is what `--remediate leaders` may do
//! by itself: a hand-over changes no data and is undone by another.
//! Anti-entropy throttling is not recommended yet: no detector measures
//! its pressure on the foreground.
//!
//! # Predicted effects
//!
//! Moving leaders off a slow node: a write commits when the leader and one
//! follower have it durable, so the commit time of a partition led by a
//! healthy node `t` is about `t`'s fsync p99 plus the round trip to its
//! fastest other in-sync replica (which fsyncs in parallel). The
//! prediction is the worst of that over the planned targets, beside the
//! slow node's commit p99 now.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::finding::{Finding, Subject, codes};
use crate::partitions::{PartitionView, partitions};
use crate::sample::{ClusterSample, NodeSample};

/// One recommendation. `id` is stable while its cause lasts, so it can be
/// applied by name (`cairn recommend apply ID`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    pub id: String,
    pub action: Action,
    /// The finding behind it, as `code: summary`.
    pub reason: String,
    pub finding: Subject,
    /// When that finding began (ms since the Unix epoch): the baseline an
    /// applied action is judged against is the minute before.
    pub finding_since: u64,
    pub predicted_effect: PredictedEffect,
    pub risk: Risk,
    /// In the safe class `--remediate leaders` applies by itself.
    pub automatic: bool,
    /// The cluster can carry it out (`apply`); otherwise it is advice for
    /// the operator.
    pub applicable: bool,
}

/// What to do, machine-readable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Hand the leadership of these partitions to the named replicas.
    TransferLeaders {
        from: u64,
        moves: Vec<PlannedMove>,
    },
    /// Move leaders back to their preferred nodes.
    RebalanceLeaders {
        moves: Vec<PlannedMove>,
    },
    /// Move the node's replicas to other nodes (replace its disk, or
    /// `decommission` it).
    MoveReplicas {
        node: u64,
    },
    /// Give the stream more partitions (a new stream: the count is fixed).
    RaisePartitions {
        stream: String,
        partitions: u32,
        suggested: u32,
    },
    AddNode,
    /// Lower retention or add space on the node.
    FreeDisk {
        node: u64,
    },
}

/// One leader move of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedMove {
    pub stream: String,
    pub partition: u32,
    pub from: u64,
    pub to: u64,
}

/// What a recommendation should change: `metric` from `from` to `to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictedEffect {
    pub metric: String,
    pub from: f64,
    pub to: f64,
    pub unit: String,
    /// The arithmetic, in words and numbers.
    pub how: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Risk {
    pub level: RiskLevel,
    pub note: String,
}

/// Findings that make a node a poor leader.
const SLOW_LEADER: &[&str] = &[
    codes::SLOW_DISK,
    codes::CPU_SATURATION,
    codes::OVERLOAD,
    codes::SLOW_NETWORK,
];
/// Findings that rule a node out as a new leader: its own resource is
/// short. Not `overload` or `slow_network`: a slow leader makes every node
/// look overloaded (writes through any node wait for it) and slow to
/// answer, and moving its leaders away is exactly the cure.
const UNFIT: &[&str] = &[
    codes::SLOW_DISK,
    codes::CPU_SATURATION,
    codes::NODE_DOWN,
    codes::NODE_STALLED,
    codes::MEMORY_PRESSURE,
    codes::DISK_FULL,
];

/// The recommendations for `findings` given the latest `round`.
pub fn recommend(round: &ClusterSample, findings: &[Finding]) -> Vec<Recommendation> {
    let parts = partitions(round);
    let causes: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.explained_by.is_none())
        .collect();
    let unfit: BTreeSet<u64> = causes
        .iter()
        .filter(|f| UNFIT.contains(&f.code.as_str()))
        .filter_map(|f| f.subject.node())
        .collect();
    // Busy or slow to answer: maybe a symptom, but not a better leader
    // for a node that is busy or slow the same way.
    let strained: BTreeSet<u64> = causes
        .iter()
        .filter(|f| f.code == codes::OVERLOAD || f.code == codes::SLOW_NETWORK)
        .filter_map(|f| f.subject.node())
        .collect();
    let mut out: Vec<Recommendation> = Vec::new();
    let mut push = |r: Recommendation| {
        if !out.iter().any(|o| o.id == r.id) {
            out.push(r);
        }
    };
    for f in &causes {
        let node = f.subject.node();
        match (f.code.as_str(), &f.subject) {
            (code, Subject::Node { node }) if SLOW_LEADER.contains(&code) => {
                let mut exclude = unfit.clone();
                if code == codes::OVERLOAD || code == codes::SLOW_NETWORK {
                    exclude.extend(strained.iter().copied());
                }
                if let Some(r) = transfer_off(round, &parts, f, *node, &exclude) {
                    push(r);
                } else if code == codes::SLOW_DISK && leads(&parts, *node) == 0 {
                    push(move_replicas(round, &parts, f, *node));
                }
            }
            (codes::LEADER_IMBALANCE, _) => {
                if let Some(r) = rebalance(round, &parts, f, &unfit) {
                    push(r);
                }
            }
            (codes::HOT_PARTITION, Subject::Partition { stream, .. }) => {
                push(raise_partitions(&parts, f, stream));
            }
            (codes::DISK_FULL_SOON | codes::DISK_FULL, _) => {
                if let Some(node) = node {
                    push(free_disk(round, f, node));
                }
            }
            _ => {}
        }
    }
    if let Some(r) = add_node(round, &causes) {
        push(r);
    }
    out.sort_by_key(|r| (!r.automatic, !r.applicable, r.risk.level));
    out
}

fn reason(f: &Finding) -> String {
    format!("{}: {}", f.code, f.summary)
}

fn leads(parts: &[PartitionView], node: u64) -> usize {
    parts.iter().filter(|p| p.leader == Some(node)).count()
}

fn fsync_p99(n: &NodeSample) -> Option<f64> {
    n.write.fsync_p99_ms.or(n.disk_probe_p99_ms)
}

/// Round trip p99 from `a` to `b` as `a` measured it.
fn rtt(round: &ClusterSample, a: u64, b: u64) -> Option<f64> {
    round
        .present(a)?
        .peers
        .iter()
        .find(|p| p.node == b)?
        .rtt_p99_ms
}

/// Replicas of `p` other than `not` that its leader reports in sync and
/// that are present and fit to lead.
fn candidates(
    round: &ClusterSample,
    p: &PartitionView,
    not: u64,
    unfit: &BTreeSet<u64>,
) -> Vec<u64> {
    p.followers
        .iter()
        .filter(|f| f.voter && f.in_sync && f.node != not && !unfit.contains(&f.node))
        .filter(|f| round.present(f.node).is_some())
        .map(|f| f.node)
        .collect()
}

/// A partition led by `t` commits in about `t`'s fsync p99 plus the round
/// trip to its fastest other in-sync replica; `None` without figures.
fn commit_floor(round: &ClusterSample, p: &PartitionView, t: u64, slow: u64) -> Option<(f64, u64)> {
    let fsync = fsync_p99(round.present(t)?)?;
    p.replicas
        .iter()
        .copied()
        .filter(|r| *r != t && *r != slow)
        .filter_map(|r| rtt(round, t, r).map(|x| (x, r)))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(x, r)| (fsync + x, r))
}

fn transfer_off(
    round: &ClusterSample,
    parts: &[PartitionView],
    f: &Finding,
    node: u64,
    unfit: &BTreeSet<u64>,
) -> Option<Recommendation> {
    let slow = round.present(node)?;
    let mut load: BTreeMap<u64, usize> = BTreeMap::new();
    for p in parts {
        if let Some(l) = p.leader {
            *load.entry(l).or_default() += 1;
        }
    }
    let mut moves = Vec::new();
    let mut worst: Option<(f64, String)> = None;
    for p in parts.iter().filter(|p| p.leader == Some(node)) {
        // Fastest disk first, then the node leading fewest (planned
        // moves included), so leaders spread rather than pile up.
        let best = candidates(round, p, node, unfit)
            .into_iter()
            .filter_map(|t| commit_floor(round, p, t, node).map(|c| (t, c)))
            .min_by(|(a, (ca, _)), (b, (cb, _))| {
                ca.total_cmp(cb)
                    .then(load.get(a).unwrap_or(&0).cmp(load.get(b).unwrap_or(&0)))
            });
        let Some((to, (floor, via))) = best else {
            continue;
        };
        *load.entry(to).or_default() += 1;
        moves.push(PlannedMove {
            stream: p.stream.clone(),
            partition: p.partition,
            from: node,
            to,
        });
        if worst.as_ref().is_none_or(|(w, _)| floor > *w) {
            let t = round.present(to).expect("a candidate is present");
            let how = format!(
                "node {to}'s fsync p99 {} ms + round trip {to}↔{via} p99 {} ms",
                num(fsync_p99(t).unwrap_or(0.0)),
                num(rtt(round, to, via).unwrap_or(0.0))
            );
            worst = Some((floor, how));
        }
    }
    let (to, how) = worst?;
    let from = slow
        .write
        .commit_p99_ms
        .or(slow.write.total_p99_ms)
        .unwrap_or(0.0);
    let n = moves.len();
    Some(Recommendation {
        id: format!("transfer-leaders-off-node-{node}"),
        reason: reason(f),
        finding: f.subject.clone(),
        finding_since: f.since,
        predicted_effect: PredictedEffect {
            metric: format!("commit p99 of the partitions led by node {node}"),
            from,
            to,
            unit: "ms".into(),
            how: format!(
                "a write commits once the leader and one follower have it on disk: ≈ {how} = {} ms \
                 (worst of the {n} new leaders), vs node {node}'s commit p99 of {} ms now",
                num(to),
                num(from)
            ),
        },
        risk: Risk {
            level: RiskLevel::Low,
            note: format!(
                "writes to the {n} partition(s) pause for each hand-over (tens of ms); no data \
                 moves; node {node} keeps its replicas"
            ),
        },
        action: Action::TransferLeaders { from: node, moves },
        automatic: true,
        applicable: true,
    })
}

fn rebalance(
    round: &ClusterSample,
    parts: &[PartitionView],
    f: &Finding,
    unfit: &BTreeSet<u64>,
) -> Option<Recommendation> {
    let mut load: BTreeMap<u64, usize> = BTreeMap::new();
    for p in parts {
        if let Some(l) = p.leader {
            *load.entry(l).or_default() += 1;
        }
    }
    let before = load.values().copied().max().unwrap_or(0);
    let mut moves = Vec::new();
    for p in parts {
        let (Some(from), Some(to)) = (p.leader, p.preferred_leader) else {
            continue;
        };
        if from == to || !candidates(round, p, from, unfit).contains(&to) {
            continue;
        }
        *load.entry(from).or_default() -= 1;
        *load.entry(to).or_default() += 1;
        moves.push(PlannedMove {
            stream: p.stream.clone(),
            partition: p.partition,
            from,
            to,
        });
    }
    if moves.is_empty() {
        return None;
    }
    let after = load.values().copied().max().unwrap_or(0);
    let n = moves.len();
    Some(Recommendation {
        id: "rebalance-leaders".into(),
        reason: reason(f),
        finding: f.subject.clone(),
        finding_since: f.since,
        predicted_effect: PredictedEffect {
            metric: "most partitions led by one node".into(),
            from: before as f64,
            to: after as f64,
            unit: "count".into(),
            how: format!(
                "{n} partition(s) back to their preferred leader (placement spreads them): the \
                 busiest node leads {after} instead of {before}"
            ),
        },
        risk: Risk {
            level: RiskLevel::Low,
            note: format!(
                "writes to the {n} partition(s) pause for each hand-over (tens of ms); no data moves"
            ),
        },
        action: Action::RebalanceLeaders { moves },
        automatic: true,
        applicable: true,
    })
}

fn move_replicas(
    round: &ClusterSample,
    parts: &[PartitionView],
    f: &Finding,
    node: u64,
) -> Recommendation {
    let lag = parts
        .iter()
        .flat_map(|p| p.followers.iter())
        .filter(|l| l.node == node)
        .map(|l| l.seconds)
        .fold(0.0, f64::max);
    let fsync = round.present(node).and_then(fsync_p99).unwrap_or(0.0);
    Recommendation {
        id: format!("move-replicas-off-node-{node}"),
        reason: reason(f),
        finding: f.subject.clone(),
        finding_since: f.since,
        predicted_effect: PredictedEffect {
            metric: format!("replication lag of node {node}'s replicas"),
            from: lag,
            to: 0.0,
            unit: "seconds".into(),
            how: format!(
                "node {node} leads nothing, so its disk (fsync p99 {} ms) slows no commit today, \
                 but its replicas lag and a second failure would make writes wait for it; \
                 replicas on a healthy disk keep up",
                num(fsync)
            ),
        },
        risk: Risk {
            level: RiskLevel::Medium,
            note: "copies the node's partitions over the network (`cairn node decommission`, \
                   or replace the disk and let anti-entropy repair)"
                .into(),
        },
        action: Action::MoveReplicas { node },
        automatic: false,
        applicable: false,
    }
}

fn raise_partitions(parts: &[PartitionView], f: &Finding, stream: &str) -> Recommendation {
    let count = parts.iter().filter(|p| p.stream == stream).count().max(1) as u32;
    let suggested = (count * 2).min(1024);
    let (rate, others) = f
        .evidence
        .first()
        .map(|e| (e.observed, e.baseline.unwrap_or(0.0)))
        .unwrap_or((0.0, 0.0));
    let spread = rate * f64::from(count) / f64::from(suggested);
    Recommendation {
        id: format!("raise-partitions-{stream}"),
        reason: reason(f),
        finding: f.subject.clone(),
        finding_since: f.since,
        predicted_effect: PredictedEffect {
            metric: format!("entries/s of {stream}'s hottest partition"),
            from: rate,
            to: spread,
            unit: "per_second".into(),
            how: format!(
                "{} entries/s spread over {suggested} partitions instead of {count} (others carry \
                 {} entries/s) — only if the load comes from several sources: one source's \
                 entries always share a partition",
                num(rate),
                num(others)
            ),
        },
        risk: Risk {
            level: RiskLevel::Medium,
            note: "a stream's partition count is fixed: create a stream with more partitions \
                   and move producers to it"
                .into(),
        },
        action: Action::RaisePartitions {
            stream: stream.to_string(),
            partitions: count,
            suggested,
        },
        automatic: false,
        applicable: false,
    }
}

fn free_disk(round: &ClusterSample, f: &Finding, node: u64) -> Recommendation {
    let hours = f
        .evidence
        .iter()
        .find(|e| e.metric == "hours_to_full")
        .map(|e| e.observed);
    let decline = f
        .evidence
        .iter()
        .find(|e| e.metric == "free_bytes_decline")
        .map(|e| e.observed);
    let total = round.present(node).map_or(0, |n| n.total_bytes) as f64;
    // Freeing a fifth of the disk buys 0.2 · total / decline more.
    let (from, to, how) = match (hours, decline) {
        (Some(h), Some(d)) if d > 0.0 => {
            let gained = 0.2 * total / d / 3600.0;
            (
                h,
                h + gained,
                format!(
                    "freeing 20 % of the disk ({} GB, e.g. by lowering retention_bytes) at the \
                     present decline of {} MB/s adds {} h",
                    num(0.2 * total / 1e9),
                    num(d / 1e6),
                    num(gained)
                ),
            )
        }
        _ => (
            0.0,
            0.0,
            "the disk is full: writes are refused until space is freed".into(),
        ),
    };
    Recommendation {
        id: format!("free-disk-node-{node}"),
        reason: reason(f),
        finding: f.subject.clone(),
        finding_since: f.since,
        predicted_effect: PredictedEffect {
            metric: format!("hours until node {node}'s disk is full"),
            from,
            to,
            unit: "hours".into(),
            how,
        },
        risk: Risk {
            level: RiskLevel::Low,
            note: "lowering retention deletes the oldest entries for good".into(),
        },
        action: Action::FreeDisk { node },
        automatic: false,
        applicable: false,
    }
}

fn add_node(round: &ClusterSample, causes: &[&Finding]) -> Option<Recommendation> {
    let present: Vec<&NodeSample> = round.nodes.iter().filter(|n| !n.is_missing()).collect();
    let busy: BTreeSet<u64> = causes
        .iter()
        .filter(|f| f.code == codes::OVERLOAD || f.code == codes::CPU_SATURATION)
        .filter_map(|f| f.subject.node())
        .collect();
    // A slow disk anywhere explains a cluster-wide slowdown better than a
    // lack of nodes: its leaders hold every write up.
    let slow_disk = causes.iter().any(|f| f.code == codes::SLOW_DISK);
    if present.len() < 2 || slow_disk || !present.iter().all(|n| busy.contains(&n.node)) {
        return None;
    }
    let n = present.len() as f64;
    let rate: f64 = present.iter().map(|s| s.entries_per_second).sum();
    Some(Recommendation {
        id: "add-node".into(),
        reason: format!(
            "every node is overloaded or CPU-saturated (nodes {})",
            busy.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        finding: Subject::Node {
            node: *busy.iter().next().expect("non-empty"),
        },
        finding_since: causes
            .iter()
            .filter(|f| busy.contains(&f.subject.node().unwrap_or(0)))
            .map(|f| f.since)
            .max()
            .unwrap_or(round.unix_ms),
        predicted_effect: PredictedEffect {
            metric: "cluster entries/s at the same per-node load".into(),
            from: rate,
            to: rate * (n + 1.0) / n,
            unit: "per_second".into(),
            how: format!(
                "{} entries/s over {n} nodes; one more node carries its share once partitions \
                 are placed on it: × {}/{n}",
                num(rate),
                n + 1.0
            ),
        },
        risk: Risk {
            level: RiskLevel::Medium,
            note: "replicas move to the new node (network and disk traffic while they copy)".into(),
        },
        action: Action::AddNode,
        automatic: false,
        applicable: false,
    })
}

/// An applied action, as the node's action log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// Sequence number on the node that applied it.
    pub seq: u64,
    pub recommendation: String,
    pub action: Action,
    /// `operator` (`cairn recommend apply`) or `auto` (`--remediate`).
    pub by: String,
    pub applied_unix_ms: u64,
    pub outcome: Outcome,
    pub predicted: PredictedEffect,
    /// The cluster's write p99 before the fault (median of the minute
    /// before its finding began), when the action was applied, and when
    /// it was judged.
    pub baseline_p99_ms: Option<f64>,
    pub before_p99_ms: Option<f64>,
    pub after_p99_ms: Option<f64>,
    pub judged_unix_ms: Option<u64>,
    /// What was done (each move), and the judgement in words.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Carried out, not judged yet.
    Applied,
    /// The write p99 came back within 2× its baseline in time.
    Verified,
    /// It did not, but got no worse.
    NotEffective,
    /// It made things worse and was undone.
    Reverted,
    /// Could not be carried out.
    Failed,
}

/// How long an action has to show its effect.
pub const VERIFY_WITHIN_MS: u64 = 15_000;
/// Rounds in a row the p99 must stay within the target.
pub const VERIFY_ROUNDS: usize = 3;
/// Below this a p99 counts as restored whatever the baseline: a 2-core
/// machine's scheduling noise alone reaches a few ms.
pub const RESTORED_FLOOR_MS: f64 = 5.0;

/// The worst write p99 of the round's nodes (fresh answers only): what
/// clients writing anywhere see at worst.
pub fn cluster_write_p99(round: &ClusterSample) -> Option<f64> {
    round
        .nodes
        .iter()
        .filter(|n| n.answered())
        .filter_map(|n| n.write.total_p99_ms)
        .max_by(f64::total_cmp)
}

/// The median [`cluster_write_p99`] of the rounds in the minute before
/// `before_ms`: the baseline an action is judged against.
pub fn baseline_p99<'a>(
    rounds: impl Iterator<Item = &'a ClusterSample>,
    before_ms: u64,
) -> Option<f64> {
    let mut v: Vec<f64> = rounds
        .filter(|r| r.unix_ms < before_ms && r.unix_ms + 60_000 >= before_ms)
        .filter_map(cluster_write_p99)
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// The p99 an action must bring the cluster back under.
pub fn restored_below(baseline: Option<f64>) -> f64 {
    baseline.map_or(RESTORED_FLOOR_MS, |b| (2.0 * b).max(RESTORED_FLOOR_MS))
}

/// The judgement of an applied action from the `(unix_ms, p99)` of the
/// rounds since (oldest first) at `now_ms`: `None` while undecided, else
/// the outcome and the p99 it rests on. Worse means above the p99 when it
/// was applied by a fifth for the last [`VERIFY_ROUNDS`] rounds.
pub fn judge(
    record: &ActionRecord,
    since: &[(u64, f64)],
    now_ms: u64,
) -> Option<(Outcome, Option<f64>)> {
    let target = restored_below(record.baseline_p99_ms);
    let mut run = 0;
    for (_, p99) in since {
        run = if *p99 <= target { run + 1 } else { 0 };
        if run >= VERIFY_ROUNDS {
            return Some((Outcome::Verified, Some(*p99)));
        }
    }
    if now_ms < record.applied_unix_ms + VERIFY_WITHIN_MS {
        return None;
    }
    let tail: Vec<f64> = since
        .iter()
        .rev()
        .take(VERIFY_ROUNDS)
        .map(|(_, p)| *p)
        .collect();
    let last = tail.first().copied();
    let worse = record.before_p99_ms.is_some_and(|before| {
        tail.len() == VERIFY_ROUNDS && tail.iter().all(|p| *p > before * 1.2)
    });
    Some((
        if worse {
            Outcome::Reverted
        } else {
            Outcome::NotEffective
        },
        last,
    ))
}

fn num(v: f64) -> String {
    crate::detect::num(v)
}

#[cfg(test)]
mod tests;
