//! Collection: every member's latest snapshot once a round, without a slow
//! member holding up the round or being written off for answering late.
//!
//! Each round asks every peer for its snapshot (service [`SNAPSHOT`]) and
//! waits up to [`COLLECT_TIMEOUT`] for the answers, then is assessed with
//! what has arrived. Requests are not tied to their round: each may take
//! up to [`ANSWER_WITHIN`] (at most [`MAX_IN_FLIGHT`] per peer), and an
//! answer that comes after its round is kept for the next one, stamped
//! with when it arrived. A round takes each peer's freshest answer — new
//! since the last round, or the last one again
//! ([`NodeSample::repeated`]) while it is at most [`UNANSWERED_AFTER`]
//! old. Past that, a peer on an open connection is `unanswered` (paused,
//! hung, swamped); one that refused, could not be reached or dropped the
//! connection is missing with that reason, in the round it happened.
//!
//! Why: an overloaded node is exactly the one whose answer is late, and
//! its own figures are what say it is overloaded. With one deadline per
//! round it was recorded as missing and its overload went unnamed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_cluster::{Cluster, ServiceError};
use cairn_monitor::{ClusterSample, NodeSample};
use cairn_telemetry::Telemetry;
use cairn_telemetry::snapshot::TelemetrySnapshot;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::{SNAPSHOT, unix_ms};

/// How long a round waits for its answers before it is assessed with what
/// it has; later answers serve the next round.
pub const COLLECT_TIMEOUT: Duration = Duration::from_millis(700);
/// How long one request may wait for its answer on an open connection.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// A peer's last answer is used (repeated) while at most this old; after
/// that, with nothing refused, the peer is `unanswered`. Three rounds: a
/// paused node is still called stalled at its fourth silent round.
pub const UNANSWERED_AFTER: Duration = Duration::from_secs(3);
/// Requests in flight to one peer at most: a swamped node is not sent
/// more than it can be expected to answer.
pub const MAX_IN_FLIGHT: usize = 4;
/// The deadline for a peer this node holds no connection to: it refuses or
/// is being dialed, and the round should say so rather than wait.
const UNCONNECTED_WITHIN: Duration = Duration::from_millis(500);

/// What this node last heard from one peer.
#[derive(Debug, Default)]
struct Peer {
    /// The freshest answer, stamped (`unix_ms`) with when it arrived.
    answer: Option<NodeSample>,
    /// `answer` arrived after the last round took it.
    new: bool,
    /// Why the latest request failed outright (refused, unreachable,
    /// connection lost, a bad answer); cleared by the next answer.
    failed: Option<String>,
    in_flight: usize,
    /// When an answer or a failure last came back.
    heard_ms: u64,
}

/// The node's collector; rounds come from one task, answers from many.
#[derive(Debug)]
pub(super) struct Collector {
    node: u64,
    cluster: Cluster,
    telemetry: Arc<Telemetry>,
    peers: Mutex<HashMap<u64, Peer>>,
    heard: Notify,
}

impl Collector {
    pub fn new(cluster: Cluster, telemetry: Arc<Telemetry>) -> Collector {
        Collector {
            node: cluster.node_id(),
            cluster,
            telemetry,
            peers: Mutex::new(HashMap::new()),
            heard: Notify::new(),
        }
    }

    /// One round: asks every peer, waits up to [`COLLECT_TIMEOUT`] for
    /// their answers and returns every member's freshest figures.
    pub async fn round(self: &Arc<Self>) -> ClusterSample {
        let me = self.node;
        let mut members: Vec<u64> = self.cluster.meta().nodes.keys().copied().collect();
        if !members.contains(&me) {
            members.push(me);
        }
        let at = unix_ms();
        let asked: Vec<u64> = {
            let mut peers = self.peers.lock();
            peers.retain(|id, _| members.contains(id));
            members
                .iter()
                .copied()
                .filter(|id| *id != me)
                .filter(|id| {
                    let p = peers.entry(*id).or_default();
                    let ask = p.in_flight < MAX_IN_FLIGHT;
                    p.in_flight += usize::from(ask);
                    ask
                })
                .collect()
        };
        for id in asked {
            tokio::spawn(self.clone().ask(id));
        }
        let until = tokio::time::Instant::now() + COLLECT_TIMEOUT;
        loop {
            // Registered before looking, so an answer in between wakes us.
            let heard = self.heard.notified();
            tokio::pin!(heard);
            heard.as_mut().enable();
            let all_heard = {
                let peers = self.peers.lock();
                peers.values().all(|p| p.heard_ms >= at)
            };
            if all_heard || tokio::time::timeout_at(until, heard).await.is_err() {
                break;
            }
        }
        let mut peers = self.peers.lock();
        let nodes = members
            .iter()
            .map(|&id| {
                if id == me {
                    return match self.telemetry.snapshot() {
                        Some(s) => super::sample_of(id, at, &s),
                        None => NodeSample::missing(id, at, "no telemetry interval yet"),
                    };
                }
                let p = peers.entry(id).or_default();
                take(p, id, at)
            })
            .collect();
        ClusterSample { unix_ms: at, nodes }
    }

    /// One request to `id`; whatever comes back is kept for the rounds.
    async fn ask(self: Arc<Self>, id: u64) {
        let deadline = if self.cluster.transport().is_connected(id) {
            ANSWER_WITHIN
        } else {
            UNCONNECTED_WITHIN
        };
        let result = self
            .cluster
            .call_service(id, SNAPSHOT, Bytes::new(), deadline)
            .await;
        let now = unix_ms();
        {
            let mut peers = self.peers.lock();
            let Some(p) = peers.get_mut(&id) else {
                return; // no longer a member
            };
            p.in_flight = p.in_flight.saturating_sub(1);
            match result {
                Ok(bytes) => match serde_json::from_slice::<TelemetrySnapshot>(&bytes) {
                    Ok(s) => {
                        p.heard_ms = now;
                        p.failed = None;
                        // An answer overtaken by a fresher one is dropped.
                        if p.answer
                            .as_ref()
                            .is_none_or(|a| a.snapshot_unix_ms <= s.unix_ms)
                        {
                            p.answer = Some(super::sample_of(id, now, &s));
                            p.new = true;
                        }
                    }
                    Err(e) => {
                        p.heard_ms = now;
                        p.failed = Some(format!("bad snapshot: {e}"));
                    }
                },
                // Sent on an open connection, no answer: the silence goes on,
                // measured from the last answer, and an older refusal no
                // longer describes the node.
                Err(ServiceError::Timeout { .. }) => p.failed = None,
                Err(e) => {
                    p.heard_ms = now;
                    p.failed = Some(e.to_string());
                }
            }
        }
        self.heard.notify_waiters();
    }
}

/// The round's sample of peer `id` at `at` from what was heard of it.
fn take(p: &mut Peer, id: u64, at: u64) -> NodeSample {
    if let Some(e) = &p.failed {
        return NodeSample::missing(id, at, e.clone());
    }
    let limit = UNANSWERED_AFTER.as_millis() as u64;
    match &p.answer {
        Some(a) if at.saturating_sub(a.unix_ms) <= limit => {
            let mut s = a.clone();
            s.repeated = !std::mem::take(&mut p.new);
            s
        }
        Some(a) => NodeSample::unanswered(
            id,
            at,
            format!(
                "no answer for {:.1} s on an open connection",
                at.saturating_sub(a.unix_ms) as f64 / 1000.0
            ),
        ),
        None => NodeSample::unanswered(id, at, "no answer yet on an open connection"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(at: u64) -> Peer {
        Peer {
            answer: Some(NodeSample {
                node: 2,
                unix_ms: at,
                snapshot_unix_ms: at - 300,
                ..NodeSample::default()
            }),
            new: true,
            heard_ms: at,
            ..Peer::default()
        }
    }

    #[test]
    fn given_a_late_peer_when_rounds_are_taken_should_repeat_its_answer_then_call_it_unanswered() {
        let mut p = answered(10_000);
        let first = take(&mut p, 2, 10_100);
        assert!(first.answered(), "new this round: {first:?}");
        let again = take(&mut p, 2, 11_000);
        assert!(again.repeated && !again.is_missing());
        assert_eq!(again.unix_ms, 10_000, "keeps when it arrived");
        assert!(take(&mut p, 2, 13_000).repeated, "3 s old: still used");
        let silent = take(&mut p, 2, 14_000);
        assert!(silent.is_missing() && silent.unanswered, "{silent:?}");
        assert!(
            silent
                .error
                .as_deref()
                .unwrap()
                .contains("no answer for 4.0 s"),
            "{silent:?}"
        );
    }

    #[test]
    fn given_a_refusal_after_an_answer_when_taken_should_be_missing_at_once() {
        let mut p = answered(10_000);
        take(&mut p, 2, 10_100);
        p.failed = Some("node 2 is unreachable: connection refused".into());
        let s = take(&mut p, 2, 11_000);
        assert!(s.is_missing() && !s.unanswered, "{s:?}");
        assert!(s.error.unwrap().contains("refused"));
    }
}
