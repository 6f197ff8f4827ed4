//! When scans run: the scheduler scans each partition this node leads
//! shortly after it became leader and then every interval (jittered, deep
//! every `deep_interval`); a read that hits damage asks for a deep scan;
//! an operator's scan goes to the partition's leader wherever it is.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use tokio::time::Instant;

use super::host::Host;
use super::replica::{decode_reply, serve};
use super::scan::{as_leader, unexpected};
use super::wire::{AeRequest, AeResponse};
use super::{ScanReport, ScanTrigger};
use crate::cluster::error::ClusterError;
use crate::raft::network::BAD_RPC;
use crate::transport::RemoteError;

/// Deadline of a whole scan forwarded to a partition leader.
const SCAN_DEADLINE: Duration = Duration::from_secs(600);
/// How often the scheduler looks at the partitions this node leads.
const SCHEDULER_TICK: Duration = Duration::from_millis(500);

/// Scans `group` on its leader (here or remote), retrying while
/// leadership is unsettled.
pub(crate) async fn scan_anywhere(
    rt: &Arc<dyn Host>,
    group: u64,
    deep: bool,
    trigger: ScanTrigger,
) -> Result<ScanReport, ClusterError> {
    let deadline = Instant::now() + rt.request_timeout();
    // Without a running replica here (none, or one whose Raft did not
    // start), the partition's replicas are asked in turn; a follower's
    // refusal names the leader.
    let replicas = rt.placed_on(group);
    let (mut hint, mut attempt) = (None, 0usize);
    loop {
        let local_leader = rt.replica(group).ok().and_then(|g| g.leader());
        let target = local_leader
            .or(hint)
            .or_else(|| replicas.get(attempt % replicas.len().max(1)).copied());
        attempt += 1;
        let result = match target {
            Some(l) if l == rt.me() => as_leader(rt.clone(), group, deep, trigger).await,
            Some(l) => {
                let payload = postcard::to_allocvec(&AeRequest::Scan { deep, trigger })
                    .map_err(|e| ClusterError::Storage(format!("encode: {e}")))?;
                rt.call(l, group, Bytes::from(payload), SCAN_DEADLINE)
                    .await
                    .and_then(|reply| decode_reply(l, &reply))
                    .and_then(|r| match r {
                        AeResponse::Scanned(report) => Ok(*report),
                        other => Err(unexpected("a scan report", &other)),
                    })
            }
            None => Err(ClusterError::NoSuchGroup {
                group: rt.group_name(group),
                node: rt.me(),
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
pub(crate) fn damage_found(rt: &Arc<dyn Host>, group: u64) {
    if !rt.anti_entropy().read_trigger_due(group) {
        return;
    }
    tracing::warn!(group, "a read found damaged data; scanning the partition");
    let this = rt.clone();
    tokio::spawn(async move {
        if let Err(e) = scan_anywhere(&this, group, true, ScanTrigger::ReadError).await {
            tracing::warn!(group, error = %e, "read-triggered anti-entropy scan failed");
        }
    });
}

/// Scans the partitions this node leads: each shortly after it became
/// leader and then every `interval`, jittered.
pub(crate) async fn run(rt: Arc<dyn Host>) {
    struct Schedule {
        term: u64,
        leader_since: Instant,
        scanned_this_term: bool,
        next_due: Instant,
        last_deep: Instant,
    }
    let config = rt.anti_entropy().config.clone();
    let jittered = |interval: Duration| interval.mul_f64(rand::rng().random_range(0.8..1.2));
    let mut schedules: HashMap<u64, Schedule> = HashMap::new();
    let mut tick = tokio::time::interval(SCHEDULER_TICK);
    loop {
        tokio::select! {
            _ = rt.shutdown().cancelled() => return,
            _ = tick.tick() => {}
        }
        let groups = rt.replicas();
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
            if let Err(e) = as_leader(rt.clone(), g.group, deep, trigger).await {
                tracing::debug!(group = g.group, error = %e, "scheduled anti-entropy scan did not run");
            }
        }
    }
}

/// Serves an anti-entropy request from a peer: a scan (this node leads the
/// partition) or one step of a scan for this node's replica.
pub(crate) async fn handle(
    rt: &Arc<dyn Host>,
    group: u64,
    payload: &[u8],
) -> Result<Bytes, RemoteError> {
    let request: AeRequest = postcard::from_bytes(payload)
        .map_err(|e| RemoteError::new(BAD_RPC, format!("decode: {e}")))?;
    let answer = match request {
        AeRequest::Scan { deep, trigger } => as_leader(rt.clone(), group, deep, trigger)
            .await
            .map(|report| AeResponse::Scanned(Box::new(report))),
        step => serve(rt, group, step).await,
    };
    postcard::to_allocvec(&answer)
        .map(Bytes::from)
        .map_err(|e| RemoteError::new(BAD_RPC, format!("encode: {e}")))
}
