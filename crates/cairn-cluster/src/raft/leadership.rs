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
//! # Elections: this task campaigns, after a pre-vote
//!
//! openraft 0.9 draws its random election timeout *once* per `Raft`, only
//! checks it on its tick (every 1.5 × `heartbeat_interval`, 525 ms with
//! Cairn's defaults), and has no pre-vote. Two things went wrong with that:
//!
//! - the draw in 400..800 ms rounds to "one tick" or "two ticks", and the
//!   ticks of one group's replicas are in phase when the group was created
//!   on every node at once (a new stream): after the leader died, both
//!   survivors campaigned in the same millisecond every 1.05 s, each voting
//!   for itself, for up to 27 s (the kill -9 test);
//! - a node cut off from the others kept campaigning, raising its term, and
//!   on healing its higher term deposed a healthy leader.
//!
//! So openraft's own election timer is off (`runtime_config().elect(false)`)
//! and this task decides when a voter campaigns:
//!
//! 1. *When*: once the node's vote has been quiet — not refreshed by a
//!    leader's heartbeat, nor changed — for the lease (the maximum election
//!    timeout, when it follows a leader) plus a timeout drawn afresh each
//!    round from the election timeout range. The task sleeps until exactly
//!    that instant, not to a shared tick.
//! 2. *Pre-vote*: it asks the other voters ([`PRE_VOTE`], carrying its
//!    last log id) whether they would vote for it ([`answer_pre_vote`]): a
//!    leader, a follower its leader reached within the minimum election
//!    timeout, or a voter whose log is ahead of the candidate's (Raft's own
//!    vote rule: last term, then last index) says no. Only with a
//!    majority's yes (its own included) does it campaign
//!    (`Raft::trigger().elect()`, an ordinary Raft election). A node cut off
//!    from the majority therefore never raises its term, and one whose log
//!    is behind does not keep the up-to-date one from winning.
//! 3. *Behind*: a node whose vote requests were answered with a longer log
//!    cannot win, and each campaign of its own makes it refuse the
//!    up-to-date candidate's request for that term. openraft backs such a
//!    node off by 2 × the maximum election timeout; the group's network
//!    reports the sighting in [`ElectionHints`] and this task holds off as
//!    long (before this: a freshly restarted, lagging survivor kept a
//!    failover going for 7 s).
//!
//! Last log ids come from the group's log on disk ([`LastLog`]; openraft
//! 0.9 does not expose its own outside the core). A group with a single
//! voter elects itself at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use openraft::raft::VoteRequest;
use openraft::{CommittedLeaderId, LogId, Raft, RaftTypeConfig, ServerState, Vote};
use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::timing::RaftTimings;
use super::types::NodeInfo;
use crate::transport::{Network, NodeId};

/// Starts the leader duties of `raft` (named `name` in logs, e.g. "stream
/// app partition 4"); they end when the Raft stops or `shutdown` fires.
pub fn spawn<C>(raft: Raft<C>, duties: Duties, shutdown: CancellationToken)
where
    C: RaftTypeConfig<NodeId = NodeId, Node = NodeInfo>,
{
    // Elections are this task's (see the module docs).
    raft.runtime_config().elect(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = run(raft, duties) => {}
        }
    });
}

/// What a group's leadership task needs besides its Raft.
#[derive(Debug)]
pub struct Duties {
    pub timings: Arc<RaftTimings>,
    pub hints: Arc<ElectionHints>,
    /// This replica's last log id, for pre-votes.
    pub last_log: LastLog,
    /// For pre-votes: the transport and the group's id on it.
    pub transport: Network,
    pub group: u64,
    /// The group's name in logs, e.g. "stream app partition 4".
    pub name: String,
}

/// The last log id of a group's replica, read from its log.
#[derive(Clone)]
pub struct LastLog(Arc<dyn Fn() -> Option<LogId<NodeId>> + Send + Sync>);

impl LastLog {
    pub fn new(f: impl Fn() -> Option<LogId<NodeId>> + Send + Sync + 'static) -> LastLog {
        LastLog(Arc::new(f))
    }

    pub fn get(&self) -> Option<LogId<NodeId>> {
        (self.0)()
    }
}

impl std::fmt::Debug for LastLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LastLog({:?})", self.get())
    }
}

/// Frame kind of a pre-vote request (beside `network::kinds`' Raft RPCs):
/// the candidate's last log id (postcard `Option<LogId>`); the reply is a
/// postcard `bool`.
pub const PRE_VOTE: u16 = 13;

/// A voter's answer to another's pre-vote: yes unless this node leads,
/// follows a leader whose heartbeat refreshed its vote within the minimum
/// election timeout, or holds a log ahead of the candidate's.
pub async fn answer_pre_vote<C>(
    raft: &Raft<C>,
    timings: &RaftTimings,
    candidate_last: Option<LogId<NodeId>>,
    my_last: Option<LogId<NodeId>>,
) -> bool
where
    C: RaftTypeConfig<NodeId = NodeId, Node = NodeInfo>,
{
    if raft.metrics().borrow().state == ServerState::Leader {
        return false;
    }
    // LogId orders by (term, leader, index) — Raft's "at least as up to date".
    if candidate_last < my_last {
        return false;
    }
    match vote_quiet(raft).await {
        Some((true, quiet)) => quiet >= timings.election_timeout.0,
        Some((false, _)) => true,
        None => false,
    }
}

/// Whether the node's vote is committed (it follows or is a leader), and
/// how long ago a heartbeat or a change last touched it — on a leader, how
/// long ago it was elected. `None` once the Raft has stopped.
pub(crate) async fn vote_quiet<C>(raft: &Raft<C>) -> Option<(bool, Duration)>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = NodeInfo>,
{
    raft.with_raft_state(|st| {
        let now =
            <<C::AsyncRuntime as openraft::AsyncRuntime>::Instant as openraft::Instant>::now();
        let quiet = st.vote_last_modified().map_or(Duration::MAX, |t| now - t);
        (st.vote_ref().is_committed(), quiet)
    })
    .await
    .ok()
}

async fn run<C>(raft: Raft<C>, duties: Duties)
where
    C: RaftTypeConfig<NodeId = NodeId, Node = NodeInfo>,
{
    let Duties {
        timings,
        hints,
        last_log,
        transport,
        group,
        name,
    } = duties;
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
                _ => Role::Other { me: m.id, voters },
            }
        };
        let (me, term, silent_ms, voters) = match view {
            Role::Leader {
                me,
                term,
                silent_ms,
                voters,
            } => (me, term, silent_ms, voters),
            Role::Other { me, voters } => {
                leading_since = None;
                if !voters.contains(&me) {
                    campaign = Campaign::default();
                    continue;
                }
                if voters.len() == 1 {
                    // Its own quorum: nothing to wait for.
                    if raft.trigger().elect().await.is_err() {
                        return;
                    }
                    continue;
                }
                // Nothing to decide before the scheduled look (asking the
                // Raft core costs a message; a heartbeat meanwhile only
                // pushes the schedule later, which the look will see).
                if campaign.next.is_some_and(|at| Instant::now() < at) {
                    continue;
                }
                let Some((following, quiet)) = vote_quiet(&raft).await else {
                    return;
                };
                hints.set_leader_lost(quiet >= timings.election_timeout.1);
                let behind = hints.greater_log_seen_within(2 * timings.election_timeout.1);
                if campaign.due(following, quiet, behind, &timings)
                    && pre_vote(&transport, group, me, &voters, &timings, last_log.get()).await
                    // While the pre-vote was out, a reply may have shown a
                    // longer log, or a new leader may have been elected.
                    && !hints.greater_log_seen_within(2 * timings.election_timeout.1)
                    && still_leaderless(&raft, &timings).await
                {
                    tracing::debug!(group = %name, "pre-vote won: campaigning");
                    if raft.trigger().elect().await.is_err() {
                        return;
                    }
                }
                continue;
            }
        };
        campaign = Campaign::default();
        hints.set_leader_lost(false);
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
        match step_down(&raft, me, term, target).await {
            Ok(true) => tracing::warn!(
                group = %name,
                term,
                silent_ms = silent.as_millis() as u64,
                "no quorum acknowledged this leader for longer than the election timeout: stepped down"
            ),
            // E.g. elected less than a lease ago: try again next tick.
            Ok(false) => tracing::debug!(group = %name, "step-down refused"),
            Err(()) => return,
        }
    }
}

/// Makes leader `me` of `term` step down by voting for `target` at
/// `term + 1` (see "Stepping down" in the module docs): `Ok(true)` once it
/// follows, `Ok(false)` if its Raft refused (elected less than a lease
/// ago, or the term moved on), `Err` once the Raft has stopped. Used when
/// the quorum is gone and to hand leadership over ([`crate::cluster`]'s
/// leader transfer), where `target` then campaigns at `term + 1` at once.
pub async fn step_down<C>(raft: &Raft<C>, me: NodeId, term: u64, target: NodeId) -> Result<bool, ()>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = NodeInfo>,
{
    let request = VoteRequest::new(
        Vote::new(term + 1, target),
        Some(LogId::new(CommittedLeaderId::new(term, me), u64::MAX)),
    );
    match raft.vote(request).await {
        Ok(r) => Ok(r.vote_granted),
        Err(_) => Err(()),
    }
}

/// What a group's Raft network learned that bears on elections.
#[derive(Debug)]
pub struct ElectionHints {
    born: std::time::Instant,
    /// Milliseconds after `born` (+1, 0 = never) when a vote reply last
    /// carried a longer log than this node's.
    greater_log_seen: AtomicU64,
    /// This follower has heard nothing from a leader for longer than the
    /// lease. openraft keeps reporting the last leader it knew until a new
    /// vote, and with pre-votes no vote happens while no majority is
    /// reachable: without this, a lone survivor would name a dead leader
    /// for ever.
    leader_lost: AtomicBool,
}

impl Default for ElectionHints {
    fn default() -> Self {
        ElectionHints {
            born: std::time::Instant::now(),
            greater_log_seen: AtomicU64::new(0),
            leader_lost: AtomicBool::new(false),
        }
    }
}

impl ElectionHints {
    /// A vote reply showed a peer's log is ahead of this node's.
    pub fn saw_greater_log(&self) {
        let ms = self.born.elapsed().as_millis() as u64 + 1;
        self.greater_log_seen.store(ms, Ordering::Relaxed);
    }

    /// Whether this replica has heard from no leader for longer than the
    /// lease (as of the leadership task's last look, at most an election
    /// timeout ago): the leader it last knew is not to be reported.
    pub fn leader_lost(&self) -> bool {
        self.leader_lost.load(Ordering::Relaxed)
    }

    fn set_leader_lost(&self, lost: bool) {
        self.leader_lost.store(lost, Ordering::Relaxed);
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
        me: NodeId,
        voters: Vec<NodeId>,
    },
}

/// Whether this node's vote is still quiet after a pre-vote: while it was
/// out, a new leader may have reached the node or it may have voted for
/// another candidate, and either deserves an election timeout's peace.
async fn still_leaderless<C>(raft: &Raft<C>, timings: &RaftTimings) -> bool
where
    C: RaftTypeConfig<NodeId = NodeId, Node = NodeInfo>,
{
    matches!(vote_quiet(raft).await, Some((_, quiet)) if quiet >= timings.election_timeout.0)
}

/// Asks the other voters whether they would let this node campaign; true
/// with a majority's yes, its own included.
async fn pre_vote(
    transport: &Network,
    group: u64,
    me: NodeId,
    voters: &[NodeId],
    timings: &RaftTimings,
    last: Option<LogId<NodeId>>,
) -> bool {
    let Ok(payload) = postcard::to_allocvec(&last) else {
        return false;
    };
    let payload = Bytes::from(payload);
    let asks = voters.iter().filter(|v| **v != me).map(|v| {
        let payload = payload.clone();
        async move {
            match transport
                .call(*v, group, PRE_VOTE, payload, timings.rpc_timeout_max)
                .await
            {
                Ok(reply) => postcard::from_bytes::<bool>(&reply).unwrap_or(false),
                Err(_) => false,
            }
        }
    });
    let yes = 1 + futures::future::join_all(asks)
        .await
        .into_iter()
        .filter(|granted| *granted)
        .count();
    yes > voters.len() / 2
}

/// When a voter campaigns next (see "Elections" in the module docs).
#[derive(Default)]
struct Campaign {
    /// This round's drawn timeout, past the lease when following.
    draw: Option<Duration>,
    /// The instant the task next looks (sleeps until then).
    next: Option<Instant>,
}

impl Campaign {
    /// Whether to try a campaign now (pre-vote first), given whether the
    /// node follows a leader, how long its vote has been quiet, and whether
    /// a peer recently showed a longer log. Draws a new timeout whenever a
    /// round falls due, and sets when to look next.
    fn due(
        &mut self,
        following: bool,
        quiet: Duration,
        behind: bool,
        timings: &RaftTimings,
    ) -> bool {
        let (min, max) = timings.election_timeout;
        let draw = *self
            .draw
            .get_or_insert_with(|| rand::rng().random_range(min..max));
        let threshold = if following { max + draw } else { draw };
        let now = Instant::now();
        if quiet < threshold {
            self.next = Some(now + (threshold - quiet));
            return false;
        }
        if self.next.is_some_and(|at| now < at) {
            return false;
        }
        // A round: whatever comes of it, the next one is a fresh draw away.
        let next = rand::rng().random_range(min..max);
        self.draw = Some(next);
        self.next = Some(now + next);
        !behind
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
    async fn a_voter_campaigns_after_the_lease_and_a_fresh_random_timeout() {
        let timings = RaftTimings::default();
        let (min, max) = timings.election_timeout;
        let mut campaign = Campaign::default();

        // Following a leader heard from just now: wait at least the lease
        // plus the minimum timeout, at most the lease plus the maximum.
        assert!(!campaign.due(true, Duration::ZERO, false, &timings));
        let wait = campaign.next.expect("scheduled") - Instant::now();
        assert!(wait >= max + min && wait < max + max, "{wait:?}");

        // Without a leader (a candidate that lost), only the drawn timeout.
        let mut campaign = Campaign::default();
        assert!(!campaign.due(false, Duration::ZERO, false, &timings));
        let wait = campaign.next.expect("scheduled") - Instant::now();
        assert!(wait >= min && wait < max, "{wait:?}");

        // Once quiet long enough it is due, and each round draws afresh.
        let mut gaps = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let at = campaign.next.expect("scheduled");
            tokio::time::advance(at - Instant::now()).await;
            assert!(campaign.due(false, max, false, &timings));
            let next = campaign.next.expect("rescheduled");
            assert!(next >= at + min && next < at + max);
            gaps.insert(next - at);
            // Not again before the next round, however quiet.
            assert!(!campaign.due(false, max * 10, false, &timings));
        }
        assert!(gaps.len() > 10, "{gaps:?}");

        // A node shown a longer log holds off when a round falls due.
        let at = campaign.next.expect("scheduled");
        tokio::time::advance(at - Instant::now()).await;
        assert!(!campaign.due(false, max, true, &timings));
        assert!(campaign.next.expect("rescheduled") > at);
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
