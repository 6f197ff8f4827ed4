//! Replication telemetry of one partition group, derived from what openraft
//! already publishes (its metrics watch channel) plus what the leader's
//! batcher learns when a batch commits. Nothing here sits on the write path
//! beyond one short lock per committed batch.
//!
//! # What is derived, and how exactly
//!
//! - **Leader changes**: every new `(current_leader, term)` seen on the
//!   metrics channel is one tenure. The channel keeps only the latest value,
//!   so a tenure that began and ended between two observations is missed
//!   (it would have had to last less than one metrics update).
//! - **Commit index** (leader): the highest index a majority of every voter
//!   set has matched — what openraft commits, except right after an
//!   election, when openraft waits for its term's first entry; never below
//!   the applied index. Followers report their applied index.
//! - **Quorum attribution**: when the quorum index advances between two
//!   observations, each newly committed index is credited to the one member
//!   that reached it in between (see
//!   [`cairn_telemetry::replication::attribute_commit`]). For RF 3 that is
//!   the faster follower, or the leader itself when its own fsync was last.
//!   Acks that land in one observation cannot be ordered and are counted as
//!   ambiguous; the first advance of each tenure is not attributed because
//!   its starting point is unknown.
//! - **Lag in entries**: the leader's committed end offset minus the end
//!   offset at the follower's matched index. Raft indexes map to offsets
//!   through the batches this node committed as leader (index → end offset,
//!   kept for the last [`MAX_TRACKED_BATCHES`]); a matched index outside
//!   that history gives an estimate (a lower bound where possible) flagged
//!   as inexact. Lag in Raft entries (batches) is always exact.
//! - **Lag in seconds**: now minus the time the leader proposed the first
//!   committed batch the follower lacks. When that batch is older than the
//!   tracked history, the oldest tracked batch's age (a lower bound); with
//!   nothing tracked, the time since this node became leader (the missing
//!   entries were committed before). Both compare wall clocks of one node.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Weak};

use cairn_telemetry::rate::{Lag, replication_lag};
use cairn_telemetry::replication::{
    FollowerReplication, PartitionReplication, QuorumCompleter, ReplicationReport,
    ReplicationSource, attribute_commit, quorum_index,
};
use cairn_types::clock::Clock;
use openraft::Raft;
use parking_lot::Mutex;

use super::{Inner, PartitionGroup};
use crate::raft::types::PartitionRaftConfig;
use crate::transport::NodeId;

/// Committed batches whose (index → offset, proposal time) a leader keeps
/// for lag lookups. History every member holds is dropped at once, so this
/// fills (to a few hundred KiB) only while a follower is behind; at 1,000
/// batches a second it is four seconds of history, beyond which lag is an
/// estimate.
pub const MAX_TRACKED_BATCHES: usize = 4096;

pub(crate) use super::observation::Observation;

/// Raft index → offsets and proposal times of batches this node committed
/// as leader. Committed entries never change, so points stay true across
/// leader changes; what is missing is only ever a gap.
#[derive(Debug, Default)]
struct OffsetTrack {
    /// Index → exclusive end offset of all entries up to that index. A
    /// batch at index `i` gives two points: `i - 1 → base`, `i → end`.
    ends: BTreeMap<u64, u64>,
    /// Index of a data batch → when its leader proposed it (µs).
    proposed: BTreeMap<u64, i64>,
}

impl OffsetTrack {
    fn record(&mut self, index: u64, base_offset: u64, count: u32, proposed_us: i64) {
        if let Some(before) = index.checked_sub(1) {
            self.ends.insert(before, base_offset);
        }
        self.ends.insert(index, base_offset + u64::from(count));
        self.proposed.insert(index, proposed_us);
        if self.proposed.len() > MAX_TRACKED_BATCHES
            && let Some((oldest, _)) = self.proposed.pop_first()
        {
            self.prune(oldest);
        }
    }

    /// Forgets what is at or below `index` (every member holds it), keeping
    /// the last offset point there as the floor for lookups.
    fn prune(&mut self, index: u64) {
        while self
            .proposed
            .first_key_value()
            .is_some_and(|(k, _)| *k <= index)
        {
            self.proposed.pop_first();
        }
        if let Some((&floor, _)) = self.ends.range(..=index).next_back() {
            while self.ends.first_key_value().is_some_and(|(k, _)| *k < floor) {
                self.ends.pop_first();
            }
        }
    }

    /// End offset of everything up to `matched`, and whether it is exact.
    /// Between two known points it is exact if they agree (no data entry in
    /// between); otherwise the next known point above is used (so the lag
    /// is a lower bound), else the one below. `None` when nothing is known.
    fn end_at(&self, matched: Option<u64>) -> Option<(u64, bool)> {
        let Some(m) = matched else {
            // Nothing confirmed in this term: the leader must assume the
            // follower holds nothing.
            return Some((0, false));
        };
        if let Some(end) = self.ends.get(&m) {
            return Some((*end, true));
        }
        let below = self.ends.range(..m).next_back().map(|(_, e)| *e);
        let above = self.ends.range(m + 1..).next().map(|(_, e)| *e);
        match (below, above) {
            (Some(b), Some(a)) => Some((a, a == b)),
            (_, Some(a)) => Some((a, false)),
            (Some(b), None) => Some((b, false)),
            (None, None) => None,
        }
    }

    /// When the first known data batch after `matched` was proposed.
    fn proposed_after(&self, matched: Option<u64>) -> Option<i64> {
        let from = matched.map_or(0, |m| m + 1);
        self.proposed.range(from..).next().map(|(_, t)| *t)
    }
}

#[derive(Debug, Default)]
struct State {
    offsets: OffsetTrack,
    tenure: Option<(NodeId, u64)>,
    leader_changes: u64,
    /// When this node became leader of the current tenure.
    leading_since_us: Option<i64>,
    /// Matched indexes at the previous observation of this tenure.
    previous_matched: BTreeMap<NodeId, u64>,
    quorum_acks: BTreeMap<NodeId, u64>,
    quorum_by_leader: u64,
    quorum_ambiguous: u64,
}

impl State {
    /// Lag of a follower that matched `matched`, against the committed
    /// (applied) entries: `applied` index, ending at `committed_end`.
    fn follower_lag(
        &self,
        matched: Option<u64>,
        applied: Option<u64>,
        committed_end: u64,
        now_us: i64,
    ) -> (Lag, bool) {
        let Some(applied) = applied else {
            return (Lag::default(), true);
        };
        if matched.is_some_and(|m| m >= applied) {
            return (Lag::default(), true);
        }
        let oldest = self
            .offsets
            .proposed_after(matched)
            .or(self.leading_since_us);
        match self.offsets.end_at(matched) {
            Some((end, exact)) => (replication_lag(committed_end, end, oldest, now_us), exact),
            // Behind, but by how many entries is unknown: only the age.
            None => (
                Lag {
                    entries: 0,
                    seconds: oldest.map_or(0.0, |t| now_us.saturating_sub(t).max(0) as f64 / 1e6),
                },
                false,
            ),
        }
    }
}

/// Replication bookkeeping of one partition group on this node.
#[derive(Debug)]
pub struct GroupReplication {
    me: NodeId,
    state: Mutex<State>,
}

impl GroupReplication {
    pub(crate) fn new(me: NodeId) -> Arc<Self> {
        Arc::new(GroupReplication {
            me,
            state: Mutex::new(State::default()),
        })
    }

    /// The leader's batcher saw the batch proposed at `proposed_us` commit
    /// as Raft entry `index`, holding offsets `base_offset..+count`.
    pub(crate) fn record_batch(&self, index: u64, base_offset: u64, count: u32, proposed_us: i64) {
        self.state
            .lock()
            .offsets
            .record(index, base_offset, count, proposed_us);
    }

    /// Takes in one reading of the group's Raft metrics.
    pub(crate) fn observe(&self, o: &Observation, now_us: i64) {
        let mut s = self.state.lock();
        let tenure = o.leader.map(|l| (l, o.term));
        if tenure.is_some() && tenure != s.tenure {
            s.tenure = tenure;
            s.leader_changes += 1;
            s.leading_since_us = None;
            // Matched indexes restart from nothing in a new term.
            s.previous_matched.clear();
        }
        if !o.is_leader {
            // Nobody prunes the history of a replica that does not lead:
            // free it (a new tenure as leader starts a fresh one).
            s.previous_matched.clear();
            s.offsets = OffsetTrack::default();
            return;
        }
        if s.leading_since_us.is_none() {
            s.leading_since_us = Some(now_us);
        }
        let matched = o.matched_known();
        if quorum_index(&s.previous_matched, &o.voter_sets).is_some() {
            for (who, batches) in attribute_commit(&s.previous_matched, &matched, &o.voter_sets) {
                match who {
                    QuorumCompleter::Node(n) if n == self.me => s.quorum_by_leader += batches,
                    QuorumCompleter::Node(n) => *s.quorum_acks.entry(n).or_default() += batches,
                    QuorumCompleter::Ambiguous => s.quorum_ambiguous += batches,
                }
            }
        }
        // What every member holds is no longer needed for lag lookups.
        if matched.len() == o.matched.len()
            && let Some(min) = matched.values().min()
        {
            s.offsets.prune(*min);
        }
        s.previous_matched = matched;
    }

    /// The report of this replica from a fresh observation.
    pub(crate) fn report(
        &self,
        o: &Observation,
        stream: &str,
        partition: u32,
        committed_end: u64,
        reachable: &dyn Fn(NodeId) -> bool,
        now_us: i64,
    ) -> PartitionReplication {
        let s = self.state.lock();
        let commit_index = if o.is_leader {
            quorum_index(&o.matched_known(), &o.voter_sets).max(o.last_applied)
        } else {
            o.last_applied
        };
        let followers = if o.is_leader {
            o.matched
                .iter()
                .filter(|(id, _)| **id != self.me)
                .map(|(id, matched)| {
                    let (lag, lag_exact) =
                        s.follower_lag(*matched, o.last_applied, committed_end, now_us);
                    FollowerReplication {
                        node: *id,
                        voter: o.voter_sets.iter().any(|set| set.contains(id)),
                        matched_index: *matched,
                        lag_batches: match (o.last_log_index, matched) {
                            (Some(last), Some(m)) => last.saturating_sub(*m),
                            (Some(last), None) => last + 1,
                            (None, _) => 0,
                        },
                        lag,
                        lag_exact,
                        reachable: reachable(*id),
                        quorum_acks: s.quorum_acks.get(id).copied().unwrap_or(0),
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        PartitionReplication {
            stream: stream.to_string(),
            partition,
            is_leader: o.is_leader,
            leader: o.leader,
            term: o.term,
            commit_index,
            committed_end_offset: committed_end,
            leader_changes: s.leader_changes,
            followers,
            quorum_by_leader: s.quorum_by_leader,
            quorum_ambiguous: s.quorum_ambiguous,
            replicas: Vec::new(),
            preferred_leader: None,
            log_start_index: 0,
            catching_up: false,
            catch_up: None,
        }
    }
}

/// Feeds every change of `raft`'s metrics into `replication` until the
/// group stops (its metrics channel closes or the bookkeeping is dropped).
///
/// Lag ages are wall-clock ages, read from the runtime's `clock`.
pub(crate) fn spawn_watcher(
    raft: &Raft<PartitionRaftConfig>,
    replication: &Arc<GroupReplication>,
    clock: Arc<dyn Clock>,
) {
    let mut rx = raft.metrics();
    let replication: Weak<GroupReplication> = Arc::downgrade(replication);
    tokio::spawn(async move {
        loop {
            let o = Observation::of(&rx.borrow_and_update());
            let Some(r) = replication.upgrade() else {
                return;
            };
            r.observe(&o, clock.unix_us());
            drop(r);
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
}

impl Inner {
    pub(super) fn replication_report(&self) -> ReplicationReport {
        let now = self.config.clock.unix_us();
        let view = self.heartbeats.view();
        let down: HashSet<NodeId> = view
            .iter()
            .filter(|p| p.state == crate::membership::NodeState::Down)
            .map(|p| p.id)
            .collect();
        let reachable = |id: NodeId| !down.contains(&id);
        let groups: Vec<Arc<PartitionGroup>> = self.replicas.all();
        let meta = self.controller_sm.meta();
        let mut partitions: Vec<_> = groups
            .iter()
            .map(|g| {
                let mut r = g.replication_report(&reachable, now);
                if let Some(p) = meta
                    .streams
                    .get(&g.stream)
                    .and_then(|s| s.partitions.get(g.partition as usize))
                {
                    r.replicas = p.replicas.clone();
                    r.preferred_leader = Some(p.preferred_leader);
                }
                r.log_start_index = g.state.log_start_index();
                let c = self.catchups.catching_up(g.group);
                r.catching_up = c.is_some();
                r.catch_up = c.map(|c| cairn_telemetry::replication::CatchUpProgress {
                    first_index: c.first_index,
                    next_index: c.next_index,
                    last_index: c.last_index,
                    staged_bytes: c.staged_bytes,
                });
                r
            })
            .collect();
        partitions.sort_by(|a, b| (&a.stream, a.partition).cmp(&(&b.stream, b.partition)));
        let quarantined = groups.iter().filter(|g| g.quarantined().is_some()).count();
        // Transport counters and the failure detector's view, per peer.
        let transport = self.transport.metrics();
        let mut peers = self.replication_stats.report();
        for p in &mut peers {
            if let Some(t) = transport.get(&p.node) {
                p.bytes_sent = t.bytes_sent;
                p.bytes_received = t.bytes_received;
                p.calls_timed_out = t.calls_timeout;
            }
            if let Some(v) = view.iter().find(|v| v.id == p.node) {
                p.state = Some(v.state.to_string());
                p.phi = Some(v.phi);
            }
        }
        ReplicationReport {
            partitions,
            peers,
            anti_entropy: self.anti_entropy.figures(quarantined as u64),
            retention: self.retention_figures(),
        }
    }
}

/// The cluster runtime as telemetry's replication source.
#[derive(Debug)]
pub(super) struct ClusterReplicationSource(pub(super) Weak<Inner>);

impl ReplicationSource for ClusterReplicationSource {
    fn report(&self) -> ReplicationReport {
        self.0
            .upgrade()
            .map(|inner| inner.replication_report())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::NodeInfo;
    use openraft::{RaftMetrics, ServerState};

    const SEC: i64 = 1_000_000;

    /// Node 1 leading a 3-voter group at `term` with these matched indexes.
    fn leading(term: u64, matched: &[(NodeId, Option<u64>)], applied: u64) -> Observation {
        Observation {
            leader: Some(1),
            term,
            is_leader: true,
            last_log_index: matched.iter().filter_map(|(_, m)| *m).max(),
            last_applied: Some(applied),
            matched: matched.iter().copied().collect(),
            voter_sets: vec![vec![1, 2, 3]],
        }
    }

    fn follower(r: &PartitionReplication, node: NodeId) -> &FollowerReplication {
        r.followers.iter().find(|f| f.node == node).unwrap()
    }

    fn always(_: NodeId) -> bool {
        true
    }

    #[test]
    fn leader_changes_count_tenures_not_observations() {
        let g = GroupReplication::new(1);
        let follow = |leader, term| Observation {
            leader,
            term,
            ..Observation::default()
        };
        for o in [
            follow(None, 0),
            follow(Some(2), 1),
            follow(Some(2), 1),
            follow(None, 2),
            // Same node re-elected in a new term: a new tenure.
            follow(Some(2), 2),
            follow(Some(3), 3),
        ] {
            g.observe(&o, 0);
        }
        let r = g.report(&follow(Some(3), 3), "s", 0, 0, &always, 0);
        assert_eq!(r.leader_changes, 3);
        assert!(!r.is_leader);
        assert!(r.followers.is_empty());
    }

    #[test]
    fn lag_in_entries_and_seconds_from_the_matched_index() {
        let g = GroupReplication::new(1);
        // Batches at indexes 2..=5 hold 10 entries each (offsets 0..40),
        // proposed one second apart.
        for (i, index) in (2..=5u64).enumerate() {
            g.record_batch(index, i as u64 * 10, 10, i as i64 * SEC);
        }
        let o = leading(1, &[(1, Some(5)), (2, Some(5)), (3, Some(3))], 5);
        g.observe(&o, 0);
        let r = g.report(&o, "s", 0, 40, &always, 10 * SEC);
        assert_eq!(r.commit_index, Some(5));
        let caught_up = follower(&r, 2);
        assert_eq!(caught_up.lag, Lag::default());
        assert!(caught_up.lag_exact && caught_up.in_sync());
        // Node 3 holds up to index 3 (offsets < 20); index 4 (proposed at
        // 2 s) is the first it lacks.
        let behind = follower(&r, 3);
        assert_eq!(
            behind.lag,
            Lag {
                entries: 20,
                seconds: 8.0
            }
        );
        assert!(behind.lag_exact);
        assert_eq!(behind.lag_batches, 2);
        // Within the 10 s bound: still in sync.
        assert!(behind.in_sync());
    }

    #[test]
    fn control_entries_between_batches_keep_lag_exact() {
        let g = GroupReplication::new(1);
        // Index 2 is a batch (offsets 0..10); 3 is a membership entry; 4 is
        // the next batch (10..15).
        g.record_batch(2, 0, 10, 0);
        g.record_batch(4, 10, 5, SEC);
        let o = leading(1, &[(1, Some(4)), (2, Some(4)), (3, Some(3))], 4);
        let r = g.report(&o, "s", 0, 15, &always, 3 * SEC);
        let f = follower(&r, 3);
        assert_eq!(
            f.lag,
            Lag {
                entries: 5,
                seconds: 2.0
            }
        );
        assert!(f.lag_exact);
    }

    #[test]
    fn a_follower_behind_the_tracked_history_gets_an_inexact_lower_bound() {
        let g = GroupReplication::new(1);
        // This leader's tenure began at 5 s; it committed 20..=21.
        let mut o = leading(2, &[(1, Some(19)), (2, Some(19)), (3, Some(3))], 19);
        g.observe(&o, 5 * SEC);
        g.record_batch(20, 100, 10, 6 * SEC);
        g.record_batch(21, 110, 10, 7 * SEC);
        o = leading(2, &[(1, Some(21)), (2, Some(21)), (3, Some(3))], 21);
        let r = g.report(&o, "s", 0, 120, &always, 9 * SEC);
        let f = follower(&r, 3);
        // It lacks at least 100..120, and entries older than the oldest
        // tracked batch (proposed at 6 s): at least 3 s behind.
        assert_eq!(f.lag.entries, 20);
        assert!(!f.lag_exact);
        assert_eq!(f.lag.seconds, 3.0);
    }

    #[test]
    fn an_unconfirmed_follower_is_assumed_to_hold_nothing() {
        let g = GroupReplication::new(1);
        g.record_batch(1, 0, 10, 0);
        let o = leading(1, &[(1, Some(1)), (2, Some(1)), (3, None)], 1);
        g.observe(&o, 0);
        let r = g.report(&o, "s", 0, 10, &always, SEC);
        let f = follower(&r, 3);
        assert_eq!(f.lag.entries, 10);
        assert_eq!(f.lag_batches, 2);
        assert!(!f.lag_exact && !f.in_sync());
    }

    #[test]
    fn with_nothing_tracked_only_the_age_is_known() {
        let g = GroupReplication::new(1);
        let o = leading(4, &[(1, Some(9)), (2, Some(9)), (3, Some(2))], 9);
        g.observe(&o, 0);
        let r = g.report(&o, "s", 0, 500, &always, 3 * SEC);
        let f = follower(&r, 3);
        assert_eq!(
            f.lag,
            Lag {
                entries: 0,
                seconds: 3.0
            }
        );
        assert!(!f.lag_exact);
    }

    #[test]
    fn quorum_acks_credit_the_follower_that_completed_each_commit() {
        let g = GroupReplication::new(1);
        let steps = [
            // New tenure: the first quorum is a baseline, not attributed.
            leading(1, &[(1, Some(3)), (2, Some(3)), (3, None)], 3),
            // Follower 3 catches up to the commit: completes nothing.
            leading(1, &[(1, Some(3)), (2, Some(3)), (3, Some(3))], 3),
            // Leader flushed 4..=5, follower 3 acked them first.
            leading(1, &[(1, Some(5)), (2, Some(3)), (3, Some(3))], 3),
            leading(1, &[(1, Some(5)), (2, Some(3)), (3, Some(5))], 5),
            // Follower 2 acks 6 before the leader's own fsync of it: the
            // leader completes the quorum for 6.
            leading(1, &[(1, Some(5)), (2, Some(6)), (3, Some(5))], 5),
            leading(1, &[(1, Some(6)), (2, Some(6)), (3, Some(5))], 6),
            // Both followers ack 7..=8 in one observation.
            leading(1, &[(1, Some(8)), (2, Some(6)), (3, Some(5))], 6),
            leading(1, &[(1, Some(8)), (2, Some(8)), (3, Some(8))], 8),
        ];
        for o in &steps {
            g.observe(o, 0);
        }
        let r = g.report(steps.last().unwrap(), "s", 0, 0, &always, 0);
        assert_eq!(follower(&r, 3).quorum_acks, 2);
        assert_eq!(follower(&r, 2).quorum_acks, 0);
        assert_eq!(r.quorum_by_leader, 1);
        assert_eq!(r.quorum_ambiguous, 2);
        assert_eq!(r.leader_changes, 1);
    }

    #[test]
    fn a_new_term_restarts_attribution_without_crediting_old_entries() {
        let g = GroupReplication::new(1);
        g.observe(
            &leading(1, &[(1, Some(5)), (2, Some(5)), (3, Some(5))], 5),
            0,
        );
        // Re-elected in term 2: matched restart from nothing.
        g.observe(&leading(2, &[(1, Some(6)), (2, None), (3, None)], 5), 0);
        g.observe(&leading(2, &[(1, Some(6)), (2, Some(6)), (3, None)], 6), 0);
        let o = leading(2, &[(1, Some(6)), (2, Some(6)), (3, Some(6))], 6);
        g.observe(&o, 0);
        let r = g.report(&o, "s", 0, 0, &always, 0);
        assert_eq!(r.quorum_by_leader + r.quorum_ambiguous, 0);
        assert!(r.followers.iter().all(|f| f.quorum_acks == 0));
        assert_eq!(r.leader_changes, 2);
    }

    #[test]
    fn history_is_pruned_once_every_member_holds_it_and_bounded_anyway() {
        let g = GroupReplication::new(1);
        for i in 1..=10u64 {
            g.record_batch(i, (i - 1) * 2, 2, 0);
        }
        g.observe(
            &leading(1, &[(1, Some(10)), (2, Some(10)), (3, Some(8))], 10),
            0,
        );
        {
            let s = g.state.lock();
            assert_eq!(
                s.offsets.proposed.keys().copied().collect::<Vec<_>>(),
                vec![9, 10]
            );
            // The floor point at 8 stays, so a follower at 8 is exact.
            assert_eq!(s.offsets.end_at(Some(8)), Some((16, true)));
        }
        // With a follower that never confirms, the cap still holds.
        let g = GroupReplication::new(1);
        for i in 1..=(MAX_TRACKED_BATCHES as u64 + 100) {
            g.record_batch(i, i - 1, 1, 0);
        }
        let s = g.state.lock();
        assert_eq!(s.offsets.proposed.len(), MAX_TRACKED_BATCHES);
        assert!(s.offsets.ends.len() <= MAX_TRACKED_BATCHES + 2);
    }

    #[test]
    fn an_observation_reads_openraft_metrics() {
        use std::collections::BTreeSet;

        use openraft::{CommittedLeaderId, LogId, Membership, StoredMembership};

        let log_id = |i| LogId::new(CommittedLeaderId::new(2, 1), i);
        let mut m = RaftMetrics::<NodeId, NodeInfo>::new_initial(1);
        m.current_term = 2;
        m.current_leader = Some(1);
        m.state = ServerState::Leader;
        m.last_log_index = Some(9);
        m.last_applied = Some(log_id(8));
        // Voters 1..=3, node 4 a learner.
        m.membership_config = Arc::new(StoredMembership::new(
            Some(log_id(1)),
            Membership::new(vec![BTreeSet::from([1, 2, 3])], BTreeSet::from([4])),
        ));
        m.replication = Some(BTreeMap::from([
            (1, Some(log_id(9))),
            (2, Some(log_id(8))),
            (3, None),
            (4, Some(log_id(2))),
        ]));
        let o = Observation::of(&m);
        assert!(o.is_leader);
        assert_eq!((o.leader, o.term, o.last_applied), (Some(1), 2, Some(8)));
        assert_eq!(o.voter_sets, vec![vec![1, 2, 3]]);
        assert_eq!(o.matched.get(&3), Some(&None));
        let r = GroupReplication::new(1).report(&o, "s", 0, 0, &always, 0);
        assert_eq!(r.commit_index, Some(8));
        assert!(!follower(&r, 4).voter);
        assert_eq!(follower(&r, 4).lag_batches, 7);
    }

    #[test]
    fn an_unreachable_voter_is_out_of_sync() {
        let g = GroupReplication::new(1);
        let o = leading(1, &[(1, Some(3)), (2, Some(3)), (3, Some(3))], 3);
        let r = g.report(&o, "s", 0, 0, &|n| n != 3, 0);
        assert!(follower(&r, 2).in_sync());
        assert!(!follower(&r, 3).in_sync());
    }
}
