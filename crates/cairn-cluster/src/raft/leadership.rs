//! Per-group leader duties openraft 0.9 does not do for us: heartbeats at
//! the configured period, and stepping down when the quorum is gone.
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

use std::sync::Arc;
use std::time::Duration;

use openraft::raft::VoteRequest;
use openraft::{CommittedLeaderId, LogId, Raft, RaftTypeConfig, ServerState, Vote};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::timing::RaftTimings;
use super::types::NodeInfo;
use crate::transport::NodeId;

/// Starts the leader duties of `raft` (named `name` in logs, e.g. "stream
/// app partition 4"); they end when the Raft stops or `shutdown` fires.
pub fn spawn<C>(raft: Raft<C>, timings: Arc<RaftTimings>, name: String, shutdown: CancellationToken)
where
    C: RaftTypeConfig<NodeId = NodeId, Node = NodeInfo>,
{
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = run(raft, timings, name) => {}
        }
    });
}

async fn run<C>(raft: Raft<C>, timings: Arc<RaftTimings>, name: String)
where
    C: RaftTypeConfig<NodeId = NodeId, Node = NodeInfo>,
{
    let mut tick = tokio::time::interval(timings.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // (term, when this task first saw this node lead it): the quorum age
    // before the first ack of a new term.
    let mut leading_since: Option<(u64, Instant)> = None;
    loop {
        tick.tick().await;
        let (me, term, silent_ms, voters) = {
            let m = raft.metrics();
            let m = m.borrow();
            if m.running_state.is_err() {
                return;
            }
            if m.state != ServerState::Leader {
                leading_since = None;
                continue;
            }
            let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
            (m.id, m.current_term, m.millis_since_quorum_ack, voters)
        };
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
