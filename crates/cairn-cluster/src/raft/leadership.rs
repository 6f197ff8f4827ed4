//! Per-group duties openraft 0.9 does not do for us: heartbeats at the
//! configured period, stepping down when the quorum is gone, and breaking
//! split votes.
//!
//! # Heartbeats
//!
//! openraft's own heartbeat period is its `heartbeat_interval`, which is
//! also the deadline of every AppendEntries RPC (see [`super::timing`]).
//! Cairn sets that to the RPC ceiling and triggers heartbeats itself
//! (`Raft::trigger().heartbeat()`) every [`RaftTimings::heartbeat`], so
//! followers hear from the leader often while an RPC may still take longer
//! than one heartbeat period. Each trigger also makes the Raft core run a
//! loop and publish fresh metrics, which the step-down check reads.
//!
//! # Stepping down without a quorum
//!
//! Raft's safety does not need a leader to notice it lost its quorum — it
//! simply cannot commit — but Cairn routes writes to whoever claims
//! leadership, so a leader cut off from its followers (or too slow to reach
//! them) holds its partitions hostage until the network heals. openraft
//! 0.9 has no check-quorum. What it offers, read from 0.9.25:
//!
//! - `RaftMetrics::millis_since_quorum_ack`: on a leader, how long ago the
//!   latest heartbeat/append acknowledged by a quorum was sent (`None`
//!   before the first such ack). This tells us *when* to step down.
//! - `Raft::trigger().elect()`: a no-op on a leader (`ExternalCommand::Elect`
//!   ignores it while `engine.leader` is set). Useless here.
//! - `runtime_config().heartbeat(false)` / `elect(false)`: only stop
//!   timers; the node stays leader.
//! - Restarting the `Raft` would not help either: `Engine::startup`
//!   restores a node whose persisted vote is its own committed vote as
//!   leader at once.
//! - `Raft::vote(VoteRequest)`: the path by which a real candidate deposes
//!   a leader. `Engine::handle_vote_req` grants a higher vote once the
//!   leader's own lease (`election_timeout_max` since its vote last
//!   changed, i.e. since it was elected) has expired and the request's
//!   log is not behind; `update_vote` then moves the node to follower
//!   (`become_following`), which drops the leader state and fails its
//!   pending proposals with `ForwardToLeader`.
//!
//! So the step-down is a vote request handed to the leader's own Raft: term
//! `T + 1`, for another voter of the group. It is exactly what the leader
//! would do on hearing a candidate at `T + 1`, and keeps Raft's invariants:
//!
//! - one vote per term: the node records (durably, `SaveVote`) a vote for
//!   that voter at `T + 1` and can vote for no one else in that term, as if
//!   the voter had asked;
//! - the log check protects only *real* elections: the request carries a
//!   last-log id past anything this leader has (its own term, index
//!   `u64::MAX`) just so the local step-down is not refused; when the voter
//!   actually campaigns at `T + 1`, its request is checked against this
//!   node's log like any other;
//! - nothing committed changes: a vote changes who may lead, never the log;
//!   entries this leader appended without a quorum stay uncommitted (their
//!   writers got no acknowledgement) and are replaced or kept by the next
//!   leader by the usual Raft rules;
//! - a committed vote of the real next leader at `T + 1` is greater than
//!   this uncommitted one, so the node follows it normally.
//!
//! The leader steps down after [`RaftTimings::step_down_after`] (the
//! maximum election timeout) without a quorum ack. That is also openraft's
//! leader lease, so the vote is not refused by the lease; followers wait
//! lease + election timeout before campaigning, so the old leader has let
//! go before a new one can exist. Groups with a single voter never step
//! down (they are their own quorum).
//!
//! # Breaking split votes
//!
//! openraft 0.9 draws its random election timeout *once* per `Raft`, and
//! only checks it on its tick, every 1.5 × `heartbeat_interval` (525 ms with
//! Cairn's defaults). The draw in 400..800 ms therefore rounds to "one tick"
//! or "two ticks", and the ticks of one group's replicas are in phase when
//! the group was created on every node at once (a new stream). Seen in the
//! kill -9 test: after the leader died, both survivors campaigned at the same
//! instant every 1.05 s, each voting for itself and refusing the other, for
//! 22 s, until scheduling drift let one of them go first.
//!
//! So while a voter sees no leader, this task campaigns too, at a time
//! drawn afresh each round from the election timeout range and measured
//! from when the node lost its leader (the first drawn after openraft's own
//! first attempt at lease + timeout, so a healthy failover is unchanged).
//! Two survivors now meet in the same instant only by chance, and never
//! twice in a row for long. An extra campaign is an ordinary Raft election
//! (`Raft::trigger().elect()`, refused by openraft on a leader or learner):
//! it costs a term, never safety.
//!
//! A node whose log is behind cannot win, and each campaign of its own makes
//! it refuse the up-to-date candidate's request for that term. openraft backs
//! such a node off by 2 × the maximum election timeout once a vote reply
//! shows a greater log; the group's network reports the same sighting in
//! [`ElectionHints`], and the extra campaigns hold off just as long (seen
//! before this: a freshly restarted, lagging survivor kept a failover going
//! for 7 s).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::raft::VoteRequest;
use openraft::{CommittedLeaderId, LogId, Raft, RaftTypeConfig, ServerState, Vote};
use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::timing::RaftTimings;
use super::types::NodeInfo;
use crate::transport::NodeId;

/// Starts the leader duties of `raft` (named `name` in logs, e.g. "stream
/// app partition 4"); they end when the Raft stops or `shutdown` fires.
pub fn spawn<C>(
    raft: Raft<C>,
    timings: Arc<RaftTimings>,
    hints: Arc<ElectionHints>,
    name: String,
    shutdown: CancellationToken,
) where
    C: RaftTypeConfig<NodeId = NodeId, Node = NodeInfo>,
{
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = run(raft, timings, hints, name) => {}
        }
    });
}

async fn run<C>(raft: Raft<C>, timings: Arc<RaftTimings>, hints: Arc<ElectionHints>, name: String)
where
    C: RaftTypeConfig<NodeId = NodeId, Node = NodeInfo>,
{
    let mut tick = tokio::time::interval(timings.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // (term, when this task first saw this node lead it): the quorum age
    // before the first ack of a new term.
    let mut leading_since: Option<(u64, Instant)> = None;
    let mut campaign = Campaign::default();
    loop {
        // The campaign wakes the task at its own drawn instant, not on a
        // heartbeat tick: replicas' ticks are in phase, which is the problem.
        let campaign_at = campaign.next;
        tokio::select! {
            _ = tick.tick() => {}
            _ = sleep_until_some(campaign_at) => {}
        }
        let view = {
            let m = raft.metrics();
            let m = m.borrow();
            if m.running_state.is_err() {
                return;
            }
            let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
            match m.state {
                ServerState::Leader => Role::Leader {
                    me: m.id,
                    term: m.current_term,
                    silent_ms: m.millis_since_quorum_ack,
                    voters,
                },
                _ => Role::Other {
                    leaderless: m.current_leader.is_none()
                        && voters.len() > 1
                        && voters.contains(&m.id),
                },
            }
        };
        let (me, term, silent_ms, voters) = match view {
            Role::Leader {
                me,
                term,
                silent_ms,
                voters,
            } => (me, term, silent_ms, voters),
            Role::Other { leaderless } => {
                leading_since = None;
                let behind = hints.greater_log_seen_within(2 * timings.election_timeout.1);
                if campaign.due(leaderless, behind, &timings)
                    && raft.trigger().elect().await.is_err()
                {
                    return;
                }
                continue;
            }
        };
        campaign = Campaign::default();
        let since = match leading_since {
            Some((t, at)) if t == term => at,
            _ => leading_since.insert((term, Instant::now())).1,
        };
        if raft.trigger().heartbeat().await.is_err() {
            return;
        }
        let Some(target) = voters.iter().copied().filter(|v| *v != me).min() else {
            continue;
        };
        let silent = silent_ms.map_or_else(|| since.elapsed(), Duration::from_millis);
        if silent <= timings.step_down_after() {
            continue;
        }
        let request = VoteRequest::new(
            Vote::new(term + 1, target),
            Some(LogId::new(CommittedLeaderId::new(term, me), u64::MAX)),
        );
        match raft.vote(request).await {
            Ok(r) if r.vote_granted => tracing::warn!(
                group = %name,
                term,
                silent_ms = silent.as_millis() as u64,
                "no quorum acknowledged this leader for longer than the election timeout: stepped down"
            ),
            // E.g. elected less than a lease ago: try again next tick.
            Ok(r) => tracing::debug!(group = %name, vote = %r.vote, "step-down refused"),
            Err(_) => return,
        }
    }
}

/// What a group's Raft network learned that bears on elections.
#[derive(Debug)]
pub struct ElectionHints {
    born: std::time::Instant,
    /// Milliseconds after `born` (+1, 0 = never) when a vote reply last
    /// carried a longer log than this node's.
    greater_log_seen: AtomicU64,
}

impl Default for ElectionHints {
    fn default() -> Self {
        ElectionHints {
            born: std::time::Instant::now(),
            greater_log_seen: AtomicU64::new(0),
        }
    }
}

impl ElectionHints {
    /// A vote reply showed a peer's log is ahead of this node's.
    pub fn saw_greater_log(&self) {
        let ms = self.born.elapsed().as_millis() as u64 + 1;
        self.greater_log_seen.store(ms, Ordering::Relaxed);
    }

    /// Whether [`Self::saw_greater_log`] happened within `window`.
    pub fn greater_log_seen_within(&self, window: Duration) -> bool {
        match self.greater_log_seen.load(Ordering::Relaxed) {
            0 => false,
            seen => {
                let now = self.born.elapsed().as_millis() as u64 + 1;
                now.saturating_sub(seen) < window.as_millis() as u64
            }
        }
    }
}

/// What the task reads from the Raft's metrics each round.
enum Role {
    Leader {
        me: NodeId,
        term: u64,
        silent_ms: Option<u64>,
        voters: Vec<NodeId>,
    },
    Other {
        leaderless: bool,
    },
}

/// When a voter without a leader campaigns next (see "Breaking split
/// votes" in the module docs).
#[derive(Default)]
struct Campaign {
    next: Option<Instant>,
}

impl Campaign {
    /// Whether to campaign now, given whether the node currently knows no
    /// leader and whether a peer recently showed a longer log; draws the
    /// next campaign's time whenever one falls due.
    fn due(&mut self, leaderless: bool, behind: bool, timings: &RaftTimings) -> bool {
        if !leaderless {
            self.next = None;
            return false;
        }
        let now = Instant::now();
        let (min, max) = timings.election_timeout;
        let draw = || rand::rng().random_range(min..max);
        match self.next {
            // The node knows no leader once openraft's own first campaign
            // began (lease + timeout after the last heartbeat); ours start
            // one drawn timeout later.
            None => {
                self.next = Some(now + draw());
                false
            }
            Some(at) if now >= at => {
                self.next = Some(now + draw());
                !behind
            }
            Some(_) => false,
        }
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_leaderless_voter_campaigns_at_fresh_random_times() {
        let timings = RaftTimings::default();
        let (min, max) = timings.election_timeout;
        let mut campaign = Campaign::default();
        assert!(!campaign.due(false, false, &timings));
        assert!(campaign.next.is_none());

        // Losing the leader only schedules the first campaign.
        let lost = Instant::now();
        assert!(!campaign.due(true, false, &timings));
        let first = campaign.next.expect("scheduled");
        assert!(first >= lost + min && first < lost + max);

        let mut gaps = std::collections::BTreeSet::new();
        let mut at = first;
        for _ in 0..20 {
            tokio::time::advance(at - Instant::now()).await;
            assert!(campaign.due(true, false, &timings));
            let next = campaign.next.expect("rescheduled");
            assert!(next >= at + min && next < at + max);
            gaps.insert(next - at);
            at = next;
        }
        // Drawn afresh each round, not once: that is what breaks the tie.
        assert!(gaps.len() > 10, "{gaps:?}");

        // A node shown a longer log holds off, but keeps its schedule.
        tokio::time::advance(at - Instant::now()).await;
        assert!(!campaign.due(true, true, &timings));
        assert!(campaign.next.expect("rescheduled") > at);

        // A leader heard of cancels the schedule.
        assert!(!campaign.due(false, false, &timings));
        assert!(campaign.next.is_none());
    }

    #[test]
    fn a_greater_log_is_remembered_for_a_while() {
        let hints = ElectionHints::default();
        assert!(!hints.greater_log_seen_within(Duration::from_secs(10)));
        hints.saw_greater_log();
        assert!(hints.greater_log_seen_within(Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!hints.greater_log_seen_within(Duration::from_millis(2)));
    }
}
