//! Replication telemetry: plain report types filled in by the cluster layer,
//! and the pure math behind them (commit index from matched indexes, which
//! ack completed a quorum, which partitions count as under-replicated).
//!
//! This crate knows nothing of Raft: a [`ReplicationSource`] (the cluster
//! runtime) turns its groups' state into a [`ReplicationReport`] when
//! `/metrics` is scraped or a snapshot is taken. Node ids and log indexes
//! are plain `u64`s here.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::histogram::{HistogramSnapshot, LatencySummary};
use crate::rate::Lag;

/// A follower further behind than this (in seconds of the oldest entry it
/// lacks) no longer counts as in sync, so its partition is under-replicated.
/// Ten seconds rides out an fsync stall or a GC-like pause of a peer but not
/// a follower that stopped keeping up.
pub const IN_SYNC_MAX_LAG_SECONDS: f64 = 10.0;

/// Produces this node's replication report on demand (at scrape and
/// snapshot time). Must be cheap: no I/O, no waiting on Raft.
pub trait ReplicationSource: Send + Sync {
    fn report(&self) -> ReplicationReport;
}

/// Everything replication-related this node knows right now.
#[derive(Debug, Clone, Default)]
pub struct ReplicationReport {
    /// One per partition replica on this node.
    pub partitions: Vec<PartitionReplication>,
    /// Per peer node: latency of replication RPCs that carried entries. Kept
    /// per node pair, not per partition, because all groups share one
    /// connection per pair and per-partition histograms would multiply
    /// memory by the partition count.
    pub peers: Vec<PeerReplication>,
    /// What this node's anti-entropy scans compared, found and repaired.
    pub anti_entropy: crate::antientropy::AntiEntropyFigures,
    /// Retention cuts, snapshot catch-ups and orphan clean-up.
    pub retention: RetentionFigures,
}

/// One partition replica as this node sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PartitionReplication {
    pub stream: String,
    pub partition: u32,
    pub is_leader: bool,
    /// The leader this replica knows of; `None` while there is none.
    pub leader: Option<u64>,
    pub term: u64,
    /// Raft log index of the last committed entry, as far as this replica
    /// knows (on followers, the last applied one: a lower bound).
    pub commit_index: Option<u64>,
    /// Exclusive end offset of the committed entries.
    pub committed_end_offset: u64,
    /// Leadership tenures (leader, term) this replica has observed since it
    /// started, the first election included.
    pub leader_changes: u64,
    /// On the leader only: every other member of the group.
    pub followers: Vec<FollowerReplication>,
    /// Batches whose quorum was completed by the leader's own fsync (the
    /// followers had acked first).
    pub quorum_by_leader: u64,
    /// Batches whose completing ack could not be told apart because
    /// several acks arrived between two observations.
    pub quorum_ambiguous: u64,
    /// The replica set placement assigned (node ids), and the node that
    /// should lead when all are up: what leader balance is judged against.
    #[serde(default)]
    pub replicas: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_leader: Option<u64>,
    /// The first Raft index retention keeps on this replica (0 before any
    /// cut); the same on every replica once it applied the cut.
    #[serde(default)]
    pub log_start_index: u64,
    /// This replica is fetching a snapshot's data from its leader: it is
    /// catching up, not stuck.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub catching_up: bool,
    /// How far that catch-up is (set with `catching_up`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUpProgress>,
}

/// A replica's catch-up by snapshot: the Raft indexes it must fetch
/// (`first_index..=last_index`), the next one, and the bytes staged. The
/// total in bytes is not known until the end (the leader's snapshot
/// carries indexes only), so progress is measured in indexes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CatchUpProgress {
    pub first_index: u64,
    pub next_index: u64,
    pub last_index: u64,
    pub staged_bytes: u64,
}

impl CatchUpProgress {
    /// Share of the indexes fetched, 0..=1.
    pub fn fraction(&self) -> f64 {
        let total = (self.last_index + 1).saturating_sub(self.first_index);
        if total == 0 {
            return 1.0;
        }
        (self.next_index.saturating_sub(self.first_index) as f64 / total as f64).min(1.0)
    }

    /// The bytes the whole range likely holds, extrapolated from what is
    /// staged (`None` before anything is).
    pub fn estimated_total_bytes(&self) -> Option<u64> {
        let f = self.fraction();
        (f > 0.0 && self.staged_bytes > 0).then(|| (self.staged_bytes as f64 / f) as u64)
    }
}

/// One follower, as its leader sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FollowerReplication {
    pub node: u64,
    /// Voters count towards the quorum; learners (catching up replicas)
    /// do not.
    pub voter: bool,
    /// Last log index the follower has confirmed to hold; `None` before its
    /// first confirmation in this leader's term.
    pub matched_index: Option<u64>,
    /// Raft entries (= batches) the leader holds beyond `matched_index`,
    /// committed or not.
    pub lag_batches: u64,
    /// Committed entries the follower lacks, and the age of the oldest.
    pub lag: Lag,
    /// False when `lag.entries` is a lower bound (the leader no longer, or
    /// not yet, knows the offset at `matched_index`).
    pub lag_exact: bool,
    /// False when the failure detector considers the node down.
    pub reachable: bool,
    /// Batches whose commit this follower's ack completed.
    pub quorum_acks: u64,
}

impl FollowerReplication {
    /// Whether the follower counts towards a healthy replica set: heard
    /// from, reachable, and not more than [`IN_SYNC_MAX_LAG_SECONDS`] behind.
    pub fn in_sync(&self) -> bool {
        self.reachable
            && self.matched_index.is_some()
            && self.lag.seconds <= IN_SYNC_MAX_LAG_SECONDS
    }
}

/// Replication RPCs to one peer node, over all groups.
#[derive(Debug, Clone, Default)]
pub struct PeerReplication {
    pub node: u64,
    /// AppendEntries RPCs that carried entries: send, follower append and
    /// fsync, ack.
    pub rpc: HistogramSnapshot,
    /// Such RPCs that got no answer (unreachable, timeout, unreadable reply).
    pub rpc_failures: u64,
    /// Ping probes (every 100 ms, round trip over the cluster transport).
    pub probe: HistogramSnapshot,
    /// Probes that got no answer within their deadline.
    pub probe_failures: u64,
    /// The link's slow score from the probes (1 healthy … 100 unusable).
    pub slow_score: f64,
    /// Transport bytes to and from this peer since start (all groups,
    /// heartbeats and forwarded requests included).
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Transport calls to this peer that got no answer by their deadline.
    pub calls_timed_out: u64,
    /// This node's failure detector's view of the peer (`up`, `suspect`,
    /// `down`, …) and its phi, if the peer is known to it.
    pub state: Option<String>,
    pub phi: Option<f64>,
}

/// How many partitions of this node are in each role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleCounts {
    pub led: u64,
    pub followed: u64,
    /// Led partitions with a voter that is not [in sync](FollowerReplication::in_sync).
    pub under_replicated: u64,
    /// Partitions whose replica here knows no leader.
    pub leaderless: u64,
}

impl ReplicationReport {
    pub fn role_counts(&self) -> RoleCounts {
        let mut c = RoleCounts::default();
        for p in &self.partitions {
            match (p.is_leader, p.leader) {
                (true, _) => {
                    c.led += 1;
                    if p.followers.iter().any(|f| f.voter && !f.in_sync()) {
                        c.under_replicated += 1;
                    }
                }
                (false, Some(_)) => c.followed += 1,
                (false, None) => c.leaderless += 1,
            }
        }
        c
    }
}

/// The compact form in the JSON snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicationSummary {
    pub roles: RoleCounts,
    pub partitions: Vec<PartitionReplication>,
    pub peers: Vec<PeerSummary>,
    /// Replicas on this node that anti-entropy quarantined (damage it
    /// could not repair): they serve no reads.
    #[serde(default)]
    pub quarantined_replicas: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerSummary {
    pub node: u64,
    /// Replication RPC latencies in the last interval.
    pub rpc: LatencySummary,
    pub rpc_failures_total: u64,
    /// Ping probe round trips in the last interval.
    pub probe: LatencySummary,
    pub probe_failures_total: u64,
    pub slow_score: f64,
    /// Transport bytes per second to / from the peer over the interval.
    #[serde(default)]
    pub bytes_sent_per_second: f64,
    #[serde(default)]
    pub bytes_received_per_second: f64,
    #[serde(default)]
    pub calls_timed_out_total: u64,
    /// This node's failure detector's view of the peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phi: Option<f64>,
}

/// The index a quorum of `voter_sets` has matched: for each set the
/// highest index a majority of its members hold, and the lowest of those
/// over the sets (a joint configuration needs a majority of both). `None`
/// until a majority of every set has confirmed something.
///
/// A member missing from `matched` has confirmed nothing.
pub fn quorum_index(matched: &BTreeMap<u64, u64>, voter_sets: &[Vec<u64>]) -> Option<u64> {
    let mut commit: Option<u64> = None;
    for set in voter_sets {
        if set.is_empty() {
            continue;
        }
        let mut held: Vec<u64> = set.iter().filter_map(|v| matched.get(v).copied()).collect();
        let majority = set.len() / 2 + 1;
        if held.len() < majority {
            return None;
        }
        held.sort_unstable_by(|a, b| b.cmp(a));
        let this = held[majority - 1];
        commit = Some(commit.map_or(this, |c| c.min(this)));
    }
    commit
}

/// Who completed the quorum for a run of batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuorumCompleter {
    /// This node's ack was the last one needed.
    Node(u64),
    /// Several nodes crossed the index between two observations; their
    /// order is unknown.
    Ambiguous,
}

/// Attributes the commit advance between two observations of the matched
/// indexes to the node whose ack completed the quorum.
///
/// For each newly committed index `k` (in `(quorum_index(before),
/// quorum_index(after)]`), the nodes that reached `k` between the two
/// observations are the candidates: the quorum was missing exactly them.
/// With one candidate it is the completer; with several (acks coalesced
/// into one observation) the batch is [`QuorumCompleter::Ambiguous`].
/// Returns runs of consecutive indexes with the same completer, in index
/// order, as `(completer, batches)`.
///
/// This is exact when every ack is observed separately, which is the common
/// case for a leader's metrics; it cannot see the order of acks that land
/// together, and it treats matched indexes as monotone (callers reset
/// `before` on a new leader term, when they may restart from nothing).
pub fn attribute_commit(
    before: &BTreeMap<u64, u64>,
    after: &BTreeMap<u64, u64>,
    voter_sets: &[Vec<u64>],
) -> Vec<(QuorumCompleter, u64)> {
    let Some(new_commit) = quorum_index(after, voter_sets) else {
        return Vec::new();
    };
    // Everything up to the old commit was attributed already; with nothing
    // committed before, the first committed index is the lowest candidate.
    let old_commit = quorum_index(before, voter_sets);
    let first = old_commit.map_or(0, |c| c + 1);
    if new_commit < first {
        return Vec::new();
    }
    let voters: BTreeSet<u64> = voter_sets.iter().flatten().copied().collect();
    // The candidate set for index k changes only where some node's before
    // or after value is crossed: split (first..=new_commit) there.
    let mut cuts: BTreeSet<u64> = BTreeSet::from([first, new_commit + 1]);
    for v in &voters {
        for x in [before.get(v), after.get(v)].into_iter().flatten() {
            let next = x.saturating_add(1);
            if next > first && next <= new_commit {
                cuts.insert(next);
            }
        }
    }
    let cuts: Vec<u64> = cuts.into_iter().collect();
    let mut runs: Vec<(QuorumCompleter, u64)> = Vec::new();
    for w in cuts.windows(2) {
        let (lo, hi) = (w[0], w[1]);
        // Constant over [lo, hi): decide at lo.
        let crossed: Vec<u64> = voters
            .iter()
            .copied()
            .filter(|v| {
                before.get(v).is_none_or(|b| *b < lo) && after.get(v).is_some_and(|a| *a >= lo)
            })
            .collect();
        let who = match crossed.as_slice() {
            [one] => QuorumCompleter::Node(*one),
            _ => QuorumCompleter::Ambiguous,
        };
        match runs.last_mut() {
            Some((last, n)) if *last == who => *n += hi - lo,
            _ => runs.push((who, hi - lo)),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(u64, u64)]) -> BTreeMap<u64, u64> {
        pairs.iter().copied().collect()
    }

    const RF3: &[u64] = &[1, 2, 3];

    #[test]
    fn quorum_index_is_the_majority_th_highest() {
        let sets = vec![RF3.to_vec()];
        assert_eq!(quorum_index(&m(&[(1, 10), (2, 7), (3, 3)]), &sets), Some(7));
        assert_eq!(
            quorum_index(&m(&[(1, 10), (2, 10), (3, 3)]), &sets),
            Some(10)
        );
        // Only one member has confirmed anything: no quorum yet.
        assert_eq!(quorum_index(&m(&[(1, 10)]), &sets), None);
        assert_eq!(quorum_index(&m(&[]), &sets), None);
    }

    #[test]
    fn joint_configurations_need_both_majorities() {
        let sets = vec![vec![1, 2, 3], vec![3, 4, 5]];
        let matched = m(&[(1, 10), (2, 10), (3, 4), (4, 9), (5, 2)]);
        // Old set: 10; new set: 4.
        assert_eq!(quorum_index(&matched, &sets), Some(4));
    }

    #[test]
    fn the_faster_follower_completes_the_quorum_at_rf3() {
        let sets = vec![RF3.to_vec()];
        // Leader 1 has flushed 1..=10; commit at 5.
        let before = m(&[(1, 10), (2, 5), (3, 5)]);
        let after = m(&[(1, 10), (2, 10), (3, 5)]);
        assert_eq!(
            attribute_commit(&before, &after, &sets),
            vec![(QuorumCompleter::Node(2), 5)]
        );
        // The slower follower catching up later completes nothing.
        let later = m(&[(1, 10), (2, 10), (3, 10)]);
        assert!(attribute_commit(&after, &later, &sets).is_empty());
    }

    #[test]
    fn the_leaders_own_fsync_can_complete_the_quorum() {
        let sets = vec![RF3.to_vec()];
        let before = m(&[(1, 4), (2, 8), (3, 2)]);
        let after = m(&[(1, 8), (2, 8), (3, 2)]);
        assert_eq!(
            attribute_commit(&before, &after, &sets),
            vec![(QuorumCompleter::Node(1), 4)]
        );
    }

    #[test]
    fn coalesced_acks_are_ambiguous_only_where_they_overlap() {
        let sets = vec![RF3.to_vec()];
        // Commit 4 → 10. Indexes 5..=7: both followers crossed (ambiguous);
        // 8..=10: only follower 3 reached them.
        let before = m(&[(1, 10), (2, 4), (3, 4)]);
        let after = m(&[(1, 10), (2, 7), (3, 10)]);
        assert_eq!(
            attribute_commit(&before, &after, &sets),
            vec![
                (QuorumCompleter::Ambiguous, 3),
                (QuorumCompleter::Node(3), 3)
            ]
        );
    }

    #[test]
    fn the_first_commit_of_a_term_is_attributed_from_index_zero() {
        let sets = vec![RF3.to_vec()];
        let before = m(&[(1, 2)]);
        let after = m(&[(1, 2), (3, 2)]);
        assert_eq!(
            attribute_commit(&before, &after, &sets),
            vec![(QuorumCompleter::Node(3), 3)]
        );
    }

    #[test]
    fn no_advance_no_attribution_even_if_indexes_went_backwards() {
        let sets = vec![RF3.to_vec()];
        let before = m(&[(1, 10), (2, 10), (3, 10)]);
        let after = m(&[(1, 10), (2, 3), (3, 3)]);
        assert!(attribute_commit(&before, &after, &sets).is_empty());
        assert!(attribute_commit(&before, &m(&[]), &sets).is_empty());
    }

    #[test]
    fn single_node_groups_credit_the_leader() {
        let sets = vec![vec![1]];
        assert_eq!(
            attribute_commit(&m(&[(1, 3)]), &m(&[(1, 5)]), &sets),
            vec![(QuorumCompleter::Node(1), 2)]
        );
    }

    fn follower(
        node: u64,
        matched: Option<u64>,
        seconds: f64,
        reachable: bool,
    ) -> FollowerReplication {
        FollowerReplication {
            node,
            voter: true,
            matched_index: matched,
            lag: Lag {
                entries: if seconds > 0.0 { 1 } else { 0 },
                seconds,
            },
            lag_exact: true,
            reachable,
            ..FollowerReplication::default()
        }
    }

    #[test]
    fn roles_count_led_followed_leaderless_and_under_replicated() {
        let part = |is_leader: bool, leader: Option<u64>, followers| PartitionReplication {
            stream: "s".into(),
            is_leader,
            leader,
            followers,
            ..PartitionReplication::default()
        };
        let report = ReplicationReport {
            anti_entropy: Default::default(),
            retention: Default::default(),
            partitions: vec![
                part(
                    true,
                    Some(1),
                    vec![
                        follower(2, Some(5), 0.0, true),
                        follower(3, Some(5), 0.5, true),
                    ],
                ),
                part(
                    true,
                    Some(1),
                    vec![
                        follower(2, Some(5), 0.0, true),
                        follower(3, Some(1), 30.0, true),
                    ],
                ),
                part(true, Some(1), vec![follower(2, None, 0.0, true)]),
                part(true, Some(1), vec![follower(2, Some(5), 0.0, false)]),
                part(false, Some(2), vec![]),
                part(false, None, vec![]),
            ],
            peers: vec![],
        };
        assert_eq!(
            report.role_counts(),
            RoleCounts {
                led: 4,
                followed: 1,
                under_replicated: 3,
                leaderless: 1
            }
        );
    }

    #[test]
    fn a_lagging_learner_does_not_make_a_partition_under_replicated() {
        let mut learner = follower(4, Some(1), 600.0, true);
        learner.voter = false;
        let report = ReplicationReport {
            anti_entropy: Default::default(),
            retention: Default::default(),
            partitions: vec![PartitionReplication {
                is_leader: true,
                leader: Some(1),
                followers: vec![learner],
                ..PartitionReplication::default()
            }],
            peers: vec![],
        };
        assert_eq!(report.role_counts().under_replicated, 0);
    }
}

/// Retention, snapshot catch-up and orphan clean-up figures of one node,
/// filled in by the cluster layer (exported by `retention`). Counters are
/// totals since the node started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetentionFigures {
    /// Retention cuts this node proposed as a partition leader, and the
    /// segments and bytes of its own log they covered.
    pub cuts_proposed: u64,
    pub cut_segments: u64,
    pub cut_bytes: u64,
    /// Purges (snapshot, then purge up to a cut) this node asked for.
    pub purges: u64,
    /// Retention runs that failed on a partition.
    pub failures: u64,
    /// Catch-ups by snapshot of replicas on this node.
    pub catchups_started: u64,
    pub catchups_completed: u64,
    pub catchups_failed: u64,
    pub catchups_in_progress: u64,
    /// Bytes of batches fetched to catch replicas up.
    pub catchup_bytes: u64,
    /// Group directories no partition owns: removed, and waiting out the
    /// grace period.
    pub orphans_removed: u64,
    pub orphans_pending: u64,
}
