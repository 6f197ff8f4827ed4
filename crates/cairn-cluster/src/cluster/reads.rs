//! Where a read or a query runs, routed like writes: over the transport,
//! so what is injected on the transport (a partition, a delay) reaches
//! reads too, and every API (HTTP, the binary protocol) reads through
//! this one path.
//!
//! **Choosing the replica.** `consistency=leader` reads the partition
//! leader's replica (this node's when it leads) once that leader is sure
//! to hold everything acknowledged: it has applied an entry of its own
//! term and heard from a quorum within the minimum election timeout
//! (`PartitionGroup::leader_read_refusal`; until then it answers
//! `unavailable` and the router asks again); `any` reads this node's
//! replica when it has one. A node without a replica asks the partition's
//! preferred leader, then its other replicas in turn. A replica that is
//! not the leader a `leader` read needs answers `unavailable` with the
//! leader it knows, which the next try goes to; with no leader known (an
//! election) or a replica still starting, the router waits and asks again,
//! for up to [`READ_WAIT`] — as writes do.
//!
//! **Damage.** A replica whose bytes fail their checksum, or that
//! anti-entropy quarantined, answers `corruption` (and reports the damage
//! for repair); the router then reads the other replicas' own copies
//! (`any`), the leader first, and answers from the first that can. A read
//! sent over the transport is served by the receiving node's replica or
//! refused, never forwarded again: a request crosses at most one hop per
//! try.
//!
//! **Queries** fan out: each partition goes to the replica that answers it
//! (several partitions per node in one request), each node scans its
//! partitions in parallel (`spawn_blocking`), and the answers are merged
//! by the query's order. A partition whose replica is damaged is asked of
//! another replica; partitions nobody could answer are listed as failed,
//! and the rest of the answer stands.
//!
//! Replies travel as JSON (entries flatten their fields, which postcard
//! cannot decode).

use cairn_types::ErrorCode;
use cairn_types::api::{Consistency, Order, PartitionFailure, QueryResponse, ReadResponse};
use serde::Deserialize;

use super::*;
use crate::controller::meta::PartitionMeta;
use crate::read::{self, Filter, ReadError};

/// How long a read waits for a replica that can answer it.
pub const READ_WAIT: Duration = Duration::from_secs(5);

/// How long a follower's read waits for the leader to say how far behind
/// it is (the read itself is answered regardless).
const LAG_QUERY_TIMEOUT: Duration = Duration::from_millis(200);

/// Between tries when no replica could answer and nobody named another.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Told a read stage's time (`queue`, `index_lookup`, `disk_read`) on the
/// node whose replica served it.
pub type ReadStageObserver =
    Arc<dyn Fn(cairn_telemetry::metrics::ReadStage, Duration) + Send + Sync>;

/// One partition read, as sent to the replica that answers it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(super) struct ReadRequest {
    partition: u32,
    offset: Option<u64>,
    limit: usize,
    consistency: Consistency,
}

/// What a query asks of every partition it reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuerySpec {
    pub filter: Filter,
    pub limit: usize,
    pub order: Order,
    pub consistency: Consistency,
}

/// Some partitions of one query, as sent to the node that answers them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct QueryRequest {
    spec: QuerySpec,
    /// (partition, group) pairs.
    partitions: Vec<(u32, u64)>,
}

/// Who answers a read of one partition now.
enum Target {
    Here,
    There(NodeId),
    /// Nobody yet (a leader election, or this node's replica is starting).
    Wait,
}

fn not_servable(partition: u32) -> ReadError {
    ReadError::new(
        ErrorCode::Unavailable,
        format!(
            "partition {partition}: no replica could answer within {READ_WAIT:?} (leader election in progress?)"
        ),
    )
}

fn quarantined(partition: u32, reason: &str) -> ReadError {
    ReadError::new(
        ErrorCode::Corruption,
        format!("this replica of partition {partition} is quarantined: {reason}"),
    )
}

fn failure(partition: u32, e: &ReadError) -> PartitionFailure {
    PartitionFailure {
        partition,
        code: e.code.as_str().to_owned(),
        message: e.message.clone(),
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<Bytes, RemoteError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| RemoteError::new(network::BAD_RPC, format!("encode: {e}")))
}

fn from_json<T: DeserializeOwned>(payload: &[u8]) -> Result<T, RemoteError> {
    serde_json::from_slice(payload)
        .map_err(|e| RemoteError::new(network::BAD_RPC, format!("decode: {e}")))
}

impl Inner {
    /// Who should answer a read of `p` under `consistency`; `hint` is a
    /// leader some replica named, `attempt` rotates a node without a
    /// replica through the partition's replicas.
    fn read_target(
        &self,
        p: &PartitionMeta,
        consistency: Consistency,
        hint: Option<NodeId>,
        attempt: usize,
    ) -> Target {
        let me = self.me();
        let local = self.replicas.get(p.group);
        if let Some(h) = hint {
            return if h == me && local.is_some() {
                Target::Here
            } else {
                Target::There(h)
            };
        }
        match (local, consistency) {
            (Some(_), Consistency::Any) => Target::Here,
            (Some(g), Consistency::Leader) => match g.leader() {
                Some(l) if l == me => Target::Here,
                Some(l) => Target::There(l),
                None => Target::Wait,
            },
            // A replica here that has not started yet: it will shortly.
            (None, _) if p.replicas.contains(&me) => Target::Wait,
            // Not a replica: the preferred leader first (it usually leads,
            // and knows who does), then the others.
            (None, _) => {
                let mut order = vec![p.preferred_leader];
                order.extend(p.replicas.iter().filter(|r| **r != p.preferred_leader));
                Target::There(order[attempt % order.len()])
            }
        }
    }

    /// Reads this node's replica of `group`, or says why it cannot.
    pub(super) async fn read_here(
        self: &Arc<Self>,
        group: u64,
        req: ReadRequest,
    ) -> Result<ReadResponse, ReadError> {
        let partition = req.partition;
        let Some(g) = self.replicas.get(group) else {
            return Err(ReadError::new(
                ErrorCode::Unavailable,
                format!(
                    "node {} has no running replica of partition {partition}",
                    self.me()
                ),
            ));
        };
        let from_leader = g.is_leader();
        if req.consistency == Consistency::Leader && !from_leader {
            return Err(ReadError {
                leader: g.leader(),
                ..ReadError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "node {} does not lead partition {partition} (leader: {:?})",
                        self.me(),
                        g.leader()
                    ),
                )
            });
        }
        if req.consistency == Consistency::Leader
            && let Some(why) = g.leader_read_refusal(self.timings.election_timeout.0)
        {
            // Not sure yet that it has all that was acknowledged: the
            // router asks again (the leader may settle, or be replaced).
            return Err(ReadError::new(
                ErrorCode::Unavailable,
                format!("node {} leads partition {partition} but {why}", self.me()),
            ));
        }
        if let Some(reason) = g.quarantined() {
            return Err(quarantined(partition, &reason));
        }
        let (log, committed) = (g.log.clone(), g.state.applied_end_offset());
        let observe = self.config.on_read_stage.clone();
        let submitted = Instant::now();
        let read = tokio::task::spawn_blocking(move || {
            let queued = submitted.elapsed();
            let (response, stats) = read::read_partition(&log, req.offset, req.limit, committed)?;
            if let Some(observe) = observe {
                record_stages(&observe, queued, &stats);
            }
            Ok::<_, ReadError>(response)
        })
        .await
        .map_err(|e| ReadError::new(ErrorCode::Internal, format!("read task: {e}")))?;
        let mut response = match read {
            Ok(r) => r,
            Err(e) => {
                if e.code == ErrorCode::Corruption {
                    crate::antientropy::scheduler::damage_found(&self.as_host(), group);
                }
                return Err(e);
            }
        };
        response.served_by = self.me();
        response.from_leader = from_leader;
        response.lag_entries = if from_leader {
            Some(0)
        } else {
            self.replica_lag(group, LAG_QUERY_TIMEOUT).await
        };
        Ok(response)
    }

    /// Asks node `to` to read its replica of `group`.
    async fn read_there(
        &self,
        to: NodeId,
        group: u64,
        req: ReadRequest,
        deadline: Instant,
    ) -> Result<ReadResponse, ReadError> {
        let payload = to_json(&req).map_err(|e| ReadError::new(ErrorCode::Internal, e.message))?;
        let reply = self
            .call_bytes(to, group, kinds::READ, payload, route::remaining(deadline))
            .await
            .map_err(|e| ReadError::new(ErrorCode::Unavailable, format!("node {to}: {e}")))?;
        serde_json::from_slice::<Result<ReadResponse, ReadError>>(&reply).map_err(|e| {
            ReadError::new(
                ErrorCode::Unavailable,
                format!("bad read reply from node {to}: {e}"),
            )
        })?
    }

    /// Answers a read a replica could not serve (damaged or quarantined)
    /// from the other replicas' own copies, the leader first; `error` if
    /// none can.
    async fn read_elsewhere(
        self: &Arc<Self>,
        p: &PartitionMeta,
        req: ReadRequest,
        damaged: NodeId,
        error: ReadError,
    ) -> Result<ReadResponse, ReadError> {
        let me = self.me();
        let leader = self.replicas.get(p.group).and_then(|g| g.leader());
        let mut candidates: Vec<NodeId> = leader.into_iter().collect();
        candidates.extend(p.replicas.iter().copied().filter(|n| Some(*n) != leader));
        let req = ReadRequest {
            consistency: Consistency::Any,
            ..req
        };
        let deadline = Instant::now() + READ_WAIT;
        for to in candidates.into_iter().filter(|n| *n != damaged) {
            let answer = if to == me {
                // Only when the damaged copy was another node's.
                self.read_here(p.group, req).await
            } else {
                self.read_there(to, p.group, req, deadline).await
            };
            match answer {
                Ok(r) => {
                    tracing::info!(
                        group = p.group,
                        partition = req.partition,
                        served_by = to,
                        "read served by another replica"
                    );
                    return Ok(r);
                }
                Err(e) => tracing::debug!(to, error = %e, "replica could not serve the read"),
            }
        }
        Err(error)
    }

    /// Scans this node's replicas of `partitions` (in parallel) for one
    /// query; partitions it cannot answer are listed as failed.
    pub(super) async fn query_here(
        self: &Arc<Self>,
        partitions: Vec<(u32, u64)>,
        spec: &QuerySpec,
    ) -> QueryResponse {
        let filter = Arc::new(spec.filter.clone());
        let mut failed = Vec::new();
        let mut tasks = Vec::new();
        for (p, group) in partitions {
            let g = self.replicas.get(group);
            let g = match g {
                Some(g) if spec.consistency == Consistency::Any || g.is_leader() => g,
                Some(g) => {
                    failed.push(failure(
                        p,
                        &ReadError::new(
                            ErrorCode::Unavailable,
                            format!(
                                "node {} does not lead partition {p} (leader: {:?})",
                                self.me(),
                                g.leader()
                            ),
                        ),
                    ));
                    continue;
                }
                None => {
                    failed.push(failure(p, &not_servable(p)));
                    continue;
                }
            };
            let (log, committed, filter) =
                (g.log.clone(), g.state.applied_end_offset(), filter.clone());
            let quarantine = g.quarantined();
            let (limit, order) = (spec.limit, spec.order);
            let observe = self.config.on_read_stage.clone();
            let submitted = Instant::now();
            tasks.push((
                p,
                group,
                tokio::task::spawn_blocking(move || {
                    if let Some(reason) = quarantine {
                        return Err(quarantined(p, &reason));
                    }
                    let queued = submitted.elapsed();
                    let m = read::query_partition(&log, p, &filter, limit, committed, order)?;
                    if let Some(observe) = observe {
                        record_stages(&observe, queued, &m.stats);
                    }
                    Ok(m)
                }),
            ));
        }
        let mut parts = Vec::with_capacity(tasks.len());
        for (p, group, task) in tasks {
            match task.await {
                Ok(Ok(m)) => parts.push(m),
                Ok(Err(e)) => {
                    if e.code == ErrorCode::Corruption {
                        crate::antientropy::scheduler::damage_found(&self.as_host(), group);
                    }
                    failed.push(failure(p, &e));
                }
                Err(e) => failed.push(failure(
                    p,
                    &ReadError::new(ErrorCode::Internal, format!("query task: {e}")),
                )),
            }
        }
        let mut answer = read::merge(parts, spec.limit);
        answer.failed_partitions = failed;
        answer
    }

    /// Asks node `to` to scan its replicas of `partitions`; a failure to
    /// ask fails them all.
    async fn query_there(
        &self,
        to: NodeId,
        partitions: Vec<(u32, u64)>,
        spec: &QuerySpec,
        deadline: Instant,
    ) -> QueryResponse {
        let names: Vec<u32> = partitions.iter().map(|(p, _)| *p).collect();
        let request = QueryRequest {
            spec: spec.clone(),
            partitions,
        };
        let answer = async {
            let payload = to_json(&request).map_err(|e| e.message)?;
            let reply = self
                .call_bytes(to, 0, kinds::QUERY, payload, route::remaining(deadline))
                .await
                .map_err(|e| e.to_string())?;
            serde_json::from_slice::<QueryResponse>(&reply)
                .map_err(|e| format!("bad query reply: {e}"))
        }
        .await;
        answer.unwrap_or_else(|message| QueryResponse {
            entries: Vec::new(),
            truncated: false,
            failed_partitions: names
                .into_iter()
                .map(|p| PartitionFailure {
                    partition: p,
                    code: ErrorCode::Unavailable.as_str().to_owned(),
                    message: format!("query node {to}: {message}"),
                })
                .collect(),
        })
    }
}

fn record_stages(observe: &ReadStageObserver, queued: Duration, stats: &cairn_storage::ScanStats) {
    use cairn_telemetry::metrics::ReadStage;
    observe(ReadStage::Queue, queued);
    observe(ReadStage::IndexLookup, stats.index_lookup);
    observe(ReadStage::DiskRead, stats.disk_read);
}

/// The transport side: requests from a peer's router, answered by this
/// node's replicas only.
impl Inner {
    pub(super) async fn handle_read(
        self: &Arc<Self>,
        group: u64,
        payload: &[u8],
    ) -> Result<Bytes, RemoteError> {
        let req: ReadRequest = from_json(payload)?;
        to_json(&self.read_here(group, req).await)
    }

    pub(super) async fn handle_query(
        self: &Arc<Self>,
        payload: &[u8],
    ) -> Result<Bytes, RemoteError> {
        let req: QueryRequest = from_json(payload)?;
        to_json(&self.query_here(req.partitions, &req.spec).await)
    }
}

impl Cluster {
    /// Reads up to `limit` committed entries of `partition` from `offset`
    /// (default: the partition's start) from the replica `consistency`
    /// asks for, wherever it is; see the module docs.
    pub async fn read(
        &self,
        stream: &StreamMeta,
        partition: u32,
        offset: Option<u64>,
        limit: usize,
        consistency: Consistency,
    ) -> Result<ReadResponse, ReadError> {
        let p = stream.partitions.get(partition as usize).ok_or_else(|| {
            ReadError::new(
                ErrorCode::PartitionNotFound,
                format!(
                    "stream {:?} has no partition {partition} (it has {})",
                    stream.name,
                    stream.partitions.len()
                ),
            )
        })?;
        let req = ReadRequest {
            partition,
            offset,
            limit,
            consistency,
        };
        let inner = &self.inner;
        let deadline = Instant::now() + READ_WAIT;
        let mut hint = None;
        for attempt in 0.. {
            let (answer, by) = match inner.read_target(p, consistency, hint.take(), attempt) {
                Target::Here => (inner.read_here(p.group, req).await, inner.me()),
                Target::There(to) => (inner.read_there(to, p.group, req, deadline).await, to),
                Target::Wait => (Err(not_servable(partition)), inner.me()),
            };
            match answer {
                Ok(r) => return Ok(r),
                Err(e) if e.code == ErrorCode::Corruption => {
                    return inner.read_elsewhere(p, req, by, e).await;
                }
                Err(e) if e.code == ErrorCode::Unavailable && Instant::now() < deadline => {
                    hint = e.leader.filter(|l| *l != by);
                    if hint.is_none() {
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
                Err(e) if e.code == ErrorCode::Unavailable => {
                    tracing::debug!(partition, error = %e, "read gave up");
                    return Err(not_servable(partition));
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns")
    }

    /// Runs a query over `partitions` of `stream`: each partition on the
    /// replica that answers it, merged by the query's order; partitions
    /// nobody could answer are listed as failed (see the module docs).
    pub async fn query(
        &self,
        stream: &StreamMeta,
        partitions: &[u32],
        spec: QuerySpec,
    ) -> QueryResponse {
        let inner = &self.inner;
        let me = inner.me();
        let mut here = Vec::new();
        let mut there: std::collections::BTreeMap<NodeId, Vec<(u32, u64)>> = Default::default();
        let mut failed = Vec::new();
        let deadline = Instant::now() + READ_WAIT;
        for &partition in partitions {
            let Some(p) = stream.partitions.get(partition as usize) else {
                continue;
            };
            loop {
                match inner.read_target(p, spec.consistency, None, 0) {
                    Target::Here => here.push((partition, p.group)),
                    Target::There(to) => there.entry(to).or_default().push((partition, p.group)),
                    Target::Wait if Instant::now() < deadline => {
                        tokio::time::sleep(RETRY_PAUSE).await;
                        continue;
                    }
                    Target::Wait => failed.push(failure(partition, &not_servable(partition))),
                }
                break;
            }
        }
        // Who answered each partition, to ask another replica on damage.
        let mut asked: HashMap<u32, NodeId> = here.iter().map(|(p, _)| (*p, me)).collect();
        for (to, parts) in &there {
            asked.extend(parts.iter().map(|(p, _)| (*p, *to)));
        }
        let remote = futures::future::join_all(
            there
                .into_iter()
                .map(|(to, parts)| inner.query_there(to, parts, &spec, deadline)),
        );
        let (local, remote) = tokio::join!(inner.query_here(here, &spec), remote);
        let mut answers = vec![local];
        answers.extend(remote);
        answers.push(QueryResponse {
            entries: Vec::new(),
            truncated: false,
            failed_partitions: failed,
        });
        // Damaged (or quarantined) replicas: another replica's own copy.
        let corruption = ErrorCode::Corruption.as_str();
        let damaged: Vec<PartitionFailure> = answers
            .iter_mut()
            .flat_map(|a| {
                let (bad, rest) = std::mem::take(&mut a.failed_partitions)
                    .into_iter()
                    .partition(|f| f.code == corruption);
                a.failed_partitions = rest;
                bad
            })
            .collect();
        for f in damaged {
            let p = &stream.partitions[f.partition as usize];
            let any = QuerySpec {
                consistency: Consistency::Any,
                ..spec.clone()
            };
            let mut answer = None;
            for &to in p
                .replicas
                .iter()
                .filter(|n| asked.get(&f.partition) != Some(*n))
            {
                let r = if to == me {
                    inner.query_here(vec![(f.partition, p.group)], &any).await
                } else {
                    inner
                        .query_there(to, vec![(f.partition, p.group)], &any, deadline)
                        .await
                };
                if r.failed_partitions.is_empty() {
                    answer = Some(r);
                    break;
                }
            }
            answers.push(answer.unwrap_or(QueryResponse {
                entries: Vec::new(),
                truncated: false,
                failed_partitions: vec![f],
            }));
        }
        read::merge_responses(answers, spec.limit, spec.order)
    }
}
