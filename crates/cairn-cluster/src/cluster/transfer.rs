//! Leader transfer: handing a partition's leadership to a chosen replica
//! without failing a write, on openraft 0.9 (which has no transfer, and
//! whose lease makes `elect()` useless against a live leader).
//!
//! The leader runs it ([`Inner::transfer_locally`]; any node forwards the
//! request there, [`kinds::TRANSFER_LEADER`]):
//!
//! 1. **Hold the writes.** The group's write gate is taken exclusively
//!    (`PartitionGroup::hold_writes`): every write already proposed
//!    commits first, new ones wait. Proposing after the hand-over started
//!    would fail those writes as "leadership moved" with an unknown outcome.
//! 2. **Wait for the target to catch up**: its matched log id (openraft's
//!    replication metrics) equals the leader's last log id. Nothing new is
//!    proposed meanwhile, so this settles within a round trip or two.
//!    Before step 1, nothing is held while the target is more than
//!    [`CLOSE_ENOUGH`] entries behind (a lagging target is refused after
//!    [`NEAR_WITHIN`]) or the leader is within its lease (waited out), so
//!    writes pause only for the hand-over itself.
//! 3. **Step down for the target** ([`leadership::step_down`]): the leader
//!    votes for the target at term `T + 1` — exactly what it would do on
//!    hearing the target campaign — and becomes a follower. openraft
//!    refuses while the leader was elected less than a lease ago; the
//!    transfer then fails cleanly and nothing changed.
//! 4. **Tell the target to campaign now** ([`kinds::CAMPAIGN_NOW`]). Its
//!    request for `T + 1` carries a log as long as the old leader's, and the
//!    old leader's vote is already its own, so it is granted: with the
//!    target's own vote that is a majority of three. (With five replicas
//!    the other followers still hold the old leader's lease and refuse; the
//!    target then wins an ordinary election a lease later.)
//! 5. **Release the writes** once the target leads as this node sees it
//!    (its first heartbeat), or after [`ELECTED_WITHIN`]. The held writes
//!    find this node no longer leads and are routed to the new leader
//!    (`NotLeader` with the hint is retried by the router), so a client
//!    sees a pause, not an error.
//!
//! Safety is Raft's own: the only state changes are a vote (the same one a
//! candidate's request would cause) and an ordinary election. If the
//! target dies half-way, the group has no leader for one election timeout
//! and elects one as after any failure (the old leader, holding an
//! uncommitted vote, campaigns again after its drawn timeout).

use super::*;
use cairn_types::api::{LeaderMove, LeaderMoveOutcome, RebalanceResponse};

/// How long a transfer waits, before holding any write, for the target to
/// come within [`CLOSE_ENOUGH`] entries of the leader's log.
const NEAR_WITHIN: Duration = Duration::from_secs(2);
/// Entries the target may lag before the writes are held: what it catches
/// up on in a round trip or two.
const CLOSE_ENOUGH: u64 = 64;
/// How long a transfer waits for the writes already proposed to commit.
const DRAIN_WITHIN: Duration = Duration::from_secs(1);
/// How long it waits, writes held, for the target to have the whole log.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(1);
/// How long the target may take to win and announce itself.
pub(super) const ELECTED_WITHIN: Duration = Duration::from_secs(2);

impl Inner {
    /// Hands leadership of `group` to `to`; run on its leader.
    pub(super) async fn transfer_locally(
        &self,
        group: u64,
        to: NodeId,
    ) -> Result<LeaderMove, ClusterError> {
        let started = Instant::now();
        let g = self.group_or_err(group)?;
        let me = self.me();
        let done = |outcome, error: Option<String>| LeaderMove {
            stream: g.stream.clone(),
            partition: g.partition,
            from: Some(me),
            to,
            outcome,
            took_ms: started.elapsed().as_millis() as u64,
            error,
        };
        if !g.is_leader() {
            return Err(ClusterError::NotLeader {
                group: g.name(),
                leader: g.leader(),
            });
        }
        if to == me {
            return Ok(done(LeaderMoveOutcome::AlreadyLeader, None));
        }
        let voters: Vec<NodeId> = g
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        if !voters.contains(&to) {
            return Err(ClusterError::Refused {
                code: cairn_types::ErrorCode::BadRequest.number(),
                message: format!(
                    "node {to} is not a replica of {} (its replicas: {voters:?})",
                    g.name()
                ),
            });
        }

        // 0. Nothing is held while the target is far behind or the leader
        // is within its lease (openraft would refuse the step-down): the
        // lease is waited out, a lagging target refused.
        if let Some((_, elected_ago)) = leadership::vote_quiet(&g.raft).await {
            let lease = self.timings.election_timeout.1;
            if elected_ago < lease {
                tokio::time::sleep(lease - elected_ago + Duration::from_millis(20)).await;
            }
        }
        let near = g
            .raft
            .wait(Some(NEAR_WITHIN))
            .metrics(
                |m| {
                    let last = m.last_log_index.unwrap_or(0);
                    m.replication.as_ref().is_some_and(|r| {
                        r.get(&to).is_some_and(|matched| {
                            matched.map_or(0, |l| l.index) + CLOSE_ENOUGH >= last
                        })
                    })
                },
                "the target is close to the leader's log",
            )
            .await;
        if near.is_err() {
            let still = g.is_leader();
            return Ok(done(
                LeaderMoveOutcome::Failed,
                Some(if still {
                    format!(
                        "node {to} is more than {CLOSE_ENOUGH} entries behind the leader's log                          (for {NEAR_WITHIN:?}); let it catch up first"
                    )
                } else {
                    "this node lost the leadership meanwhile".into()
                }),
            ));
        }
        // 1. Hold the writes.
        let Some(held) = g.hold_writes(DRAIN_WITHIN).await else {
            return Ok(done(
                LeaderMoveOutcome::Failed,
                Some(format!(
                    "the writes in flight did not commit within {DRAIN_WITHIN:?}"
                )),
            ));
        };
        // 2. The target has everything this leader has.
        let caught_up = g
            .raft
            .wait(Some(CATCH_UP_WITHIN))
            .metrics(
                |m| {
                    let last = m.last_log_index;
                    m.state == ServerState::Leader
                        && m.replication.as_ref().is_some_and(|r| {
                            r.get(&to)
                                .is_some_and(|matched| matched.map(|l| l.index) == last)
                        })
                },
                "the target has the leader's whole log",
            )
            .await;
        let term = match caught_up {
            Ok(m) => m.current_term,
            Err(e) => {
                drop(held);
                let still = g.is_leader();
                return Ok(done(
                    LeaderMoveOutcome::Failed,
                    Some(if still {
                        format!("node {to} did not catch up with the log: {e}")
                    } else {
                        "this node lost the leadership meanwhile".into()
                    }),
                ));
            }
        };
        // 3. Step down for it.
        match leadership::step_down(&g.raft, me, term, to).await {
            Ok(true) => {}
            Ok(false) => {
                return Ok(done(
                    LeaderMoveOutcome::Failed,
                    Some(format!(
                        "the leader was elected less than a lease ({:?}) ago; try again",
                        self.timings.election_timeout.1
                    )),
                ));
            }
            Err(()) => return Err(ClusterError::ShuttingDown),
        }
        // 4. The target campaigns now.
        let told = self
            .call::<()>(to, group, kinds::CAMPAIGN_NOW, Bytes::new(), ELECTED_WITHIN)
            .await;
        // 5. Writes go on once it leads.
        let elected = g
            .raft
            .wait(Some(ELECTED_WITHIN))
            .metrics(|m| m.current_leader == Some(to), "the target leads")
            .await
            .is_ok();
        drop(held);
        let took_ms = started.elapsed().as_millis() as u64;
        if elected {
            tracing::info!(group = %g.name(), from = me, to, took_ms, "leadership transferred");
            return Ok(done(LeaderMoveOutcome::Moved, None));
        }
        let why = match told {
            Err(e) => format!("node {to} could not be told to campaign: {e}"),
            Ok(()) => format!("node {to} was not seen leading within {ELECTED_WITHIN:?}"),
        };
        tracing::warn!(group = %g.name(), to, %why, "leader transfer failed; the group elects a leader as usual");
        Ok(done(
            LeaderMoveOutcome::Failed,
            Some(format!(
                "{why}; this node stepped down, so the group elects a leader as after a failure"
            )),
        ))
    }

    /// On a replica told by its leader to campaign at once (step 4 above).
    pub(super) async fn campaign_now(&self, from: NodeId, group: u64) -> Result<(), ClusterError> {
        let g = self.group_or_err(group)?;
        // Only the leader this replica follows may start its election.
        if g.leader() != Some(from) {
            return Err(ClusterError::NotLeader {
                group: g.name(),
                leader: g.leader(),
            });
        }
        g.raft
            .trigger()
            .elect()
            .await
            .map_err(|_| ClusterError::ShuttingDown)
    }
}

impl Cluster {
    /// Hands leadership of `group` to replica `to`, on whichever node
    /// leads it now (see the module docs). An error if it cannot be asked
    /// (no leader reachable, `to` not a replica); a `Failed` outcome if it
    /// was tried and did not happen.
    pub async fn transfer_leader(
        &self,
        group: u64,
        to: NodeId,
    ) -> Result<LeaderMove, ClusterError> {
        let payload = encode(&to).map_err(|e| ClusterError::Storage(e.message))?;
        self.on_leader(group, kinds::TRANSFER_LEADER, payload, |_| {
            self.inner.transfer_locally(group, to)
        })
        .await
    }

    /// Moves every partition's leadership back to its preferred leader
    /// (placement's choice, which spreads leaders evenly), one partition
    /// at a time. Partitions whose preferred leader the failure detector
    /// does not see up are reported as failed and left alone.
    pub async fn rebalance_leaders(&self) -> RebalanceResponse {
        let meta = self.meta();
        let mut moves = Vec::new();
        let mut already_balanced = 0;
        for stream in meta.streams.values() {
            for (p, part) in stream.partitions.iter().enumerate() {
                let to = part.preferred_leader;
                let known = self.group(part.group).and_then(|g| g.leader());
                if known == Some(to) {
                    already_balanced += 1;
                    continue;
                }
                let failed = |error: String| LeaderMove {
                    stream: stream.name.clone(),
                    partition: p as u32,
                    from: known,
                    to,
                    outcome: LeaderMoveOutcome::Failed,
                    took_ms: 0,
                    error: Some(error),
                };
                let up = to == self.node_id()
                    || self.inner.heartbeats.state(to) == Some(membership::NodeState::Up);
                if !up {
                    moves.push(failed(format!("node {to} is not up")));
                    continue;
                }
                match self.transfer_leader(part.group, to).await {
                    Ok(m) if m.outcome == LeaderMoveOutcome::AlreadyLeader => already_balanced += 1,
                    Ok(m) => moves.push(m),
                    Err(e) => moves.push(failed(e.to_string())),
                }
            }
        }
        RebalanceResponse {
            moves,
            already_balanced,
        }
    }
}
