//! Where a request runs: controller commands and partition writes go to
//! their group's leader — run here when this node leads, forwarded over the
//! transport otherwise, after the coalescer of the partition's entry edge
//! (`coalesce`; skipped on the leader, whose proposal coalescer merges
//! anyway). A forward first checks that the target looks reachable, so a
//! dead leader costs a retry, not a deadline.

use super::*;

/// How long a join waits for the joining node to pass the transport
/// handshake (connect, TLS, proofs, a ping) when the cluster has a secret.
const JOIN_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Coalesced batches of one partition on their way to its leader at once.
pub(super) const MAX_ROUTED_IN_FLIGHT: usize = 8;

pub(super) fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(10))
}

pub(super) async fn backoff(fresh_hint: bool) {
    if !fresh_hint {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

impl Inner {
    pub(super) async fn propose_locally(
        &self,
        cmd: ControllerCommand,
    ) -> Result<ControllerResponse, ClusterError> {
        if self.controller().metrics().borrow().state != ServerState::Leader {
            return Err(ClusterError::NotLeader {
                group: error::GroupName::CONTROLLER,
                leader: self.controller().metrics().borrow().current_leader,
            });
        }
        match self.controller().client_write(cmd).await {
            Ok(r) => Ok(r.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ClusterError::Indeterminate(format!(
                    "controller leadership moved to {:?} during the command",
                    f.leader_id
                )))
            }
            Err(e) => Err(ClusterError::Indeterminate(e.to_string())),
        }
    }

    pub(super) async fn append_locally(
        &self,
        group: u64,
        batch: RecordBatch,
    ) -> Result<Appended, ClusterError> {
        let g = self.replicas.get(group);
        // The leader's disk takes the write first: below its reserve the
        // write is refused before anything is proposed (followers append
        // inside the reserve; see cairn_storage::space).
        if let Err(full) = self.data_dir.space().check() {
            return Err(ClusterError::Refused {
                code: cairn_types::ErrorCode::InsufficientStorage.number(),
                message: format!("node {}: {full}", self.me()),
            });
        }
        match g {
            Some(g) => g.append_as_leader(batch).await,
            None => Err(ClusterError::NoSuchGroup {
                group: self.group_name(group),
                node: self.me(),
            }),
        }
    }

    /// On the controller leader: adds a node as a learner of group 0 (so it
    /// receives the metadata) and registers it. An id already registered
    /// with other addresses is refused — another process claiming a live
    /// member's id would otherwise take its traffic — unless `replace` asks
    /// to take over a member this node's failure detector sees down.
    pub(super) async fn admit_locally(
        &self,
        id: NodeId,
        info: NodeInfo,
        replace: bool,
    ) -> Result<ControllerResponse, ClusterError> {
        if self.controller().metrics().borrow().state != ServerState::Leader {
            return Err(ClusterError::NotLeader {
                group: error::GroupName::CONTROLLER,
                leader: self.controller().metrics().borrow().current_leader,
            });
        }
        if let Some(member) = self.controller_sm.meta().nodes.get(&id)
            && member.info != info
        {
            let down = id != self.config.node_id
                && self.heartbeats.state(id) == Some(membership::NodeState::Down);
            if !(replace && down) {
                let why = if replace {
                    "it is not down (a replacement may take over only a member that is down)"
                } else {
                    "to take over a member that is down, join with replace (cairn node --replace)"
                };
                return Ok(ControllerResponse::Refused {
                    code: cairn_types::ErrorCode::Conflict.number(),
                    message: format!(
                        "node id {id} is already a member at raft {} / http {}; refused a join \
                         from raft {} / http {}: {why}",
                        member.info.raft_addr,
                        member.info.http_addr,
                        info.raft_addr,
                        info.http_addr
                    ),
                });
            }
            tracing::warn!(
                node = id,
                old_raft = %member.info.raft_addr,
                new_raft = %info.raft_addr,
                "a replacement takes over a member that is down"
            );
            // Raft must reach the replacement at its own address. The old
            // process is down, so pointing the id elsewhere splits nothing.
            if member.info.raft_addr != info.raft_addr {
                let nodes = BTreeMap::from([(id, info.clone())]);
                self.controller()
                    .change_membership(openraft::ChangeMembers::SetNodes(nodes), false)
                    .await
                    .map_err(|e| ClusterError::Indeterminate(e.to_string()))?;
            }
        }
        let known = self
            .controller()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .is_some();
        if !known && self.transport.has_secret() {
            // The joining node must pass the secret handshake before it is
            // a member: otherwise a process without the secret (which can
            // never take part) would be placed and waited for.
            if let Err(refusal) = self.check_joiner(id, &info).await {
                return Ok(refusal);
            }
        }
        if !known {
            self.controller()
                .add_learner(id, info.clone(), false)
                .await
                .map_err(|e| ClusterError::Indeterminate(e.to_string()))?;
        }
        self.propose_locally(ControllerCommand::RegisterNode { id, info })
            .await
    }

    /// Dials a joining node over the transport and pings it, so a node
    /// without the cluster secret (or at an address that is not a node)
    /// is refused before it becomes a member. The probe's peer entry is
    /// dropped again; membership adds it back once the node is admitted.
    pub(super) async fn check_joiner(
        &self,
        id: NodeId,
        info: &NodeInfo,
    ) -> Result<(), ControllerResponse> {
        let refused = |message: String| ControllerResponse::Refused {
            code: cairn_types::ErrorCode::Forbidden.number(),
            message,
        };
        let addr: SocketAddr = info.raft_addr.parse().map_err(|_| {
            refused(format!(
                "join of node {id}: raft address {} is not IP:PORT",
                info.raft_addr
            ))
        })?;
        let was_known = self.transport.peers().contains_key(&id);
        if !was_known {
            self.transport.set_peer(id, addr);
        }
        let result = self
            .transport
            .call(id, 0, kinds::PING, Bytes::new(), JOIN_CHECK_TIMEOUT)
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                if !was_known {
                    // Not a member: forget it (and its hellos) again.
                    self.transport.remove_peer(id);
                }
                tracing::warn!(node = id, raft = %addr, error = %e, "refused a join: the node did not pass the transport handshake");
                Err(refused(format!(
                    "node {id} at raft {addr} did not pass the node-to-node handshake, so it \
                     cannot be a member (give it this cluster's --cluster-secret-file, and \
                     TLS settings if the cluster uses TLS): {e}"
                )))
            }
        }
    }
}

impl Cluster {
    /// Proposes a controller command on the controller leader (wherever it
    /// is), retrying while no leader is known, up to the request timeout.
    pub async fn propose(
        &self,
        cmd: ControllerCommand,
    ) -> Result<ControllerResponse, ClusterError> {
        let deadline = Instant::now() + self.inner.config.request_timeout;
        let mut hint = None;
        loop {
            let leader = hint
                .take()
                .or(self.inner.controller().metrics().borrow().current_leader);
            let result = match leader {
                Some(l) if l == self.node_id() => self.inner.propose_locally(cmd.clone()).await,
                Some(l) => {
                    let payload = encode(&cmd).map_err(|e| ClusterError::Storage(e.message))?;
                    self.inner
                        .call(l, 0, kinds::FORWARD_COMMAND, payload, remaining(deadline))
                        .await
                }
                None => Err(ClusterError::Unavailable(
                    "no controller leader known".into(),
                )),
            };
            match result {
                Err(ClusterError::NotLeader { leader, .. }) if Instant::now() < deadline => {
                    hint = leader;
                    backoff(leader.is_some()).await;
                }
                Err(e) if e.is_retryable() && Instant::now() < deadline => backoff(false).await,
                other => return other,
            }
        }
    }

    /// How many committed entries this node's replica of `group` lacks,
    /// asking the leader (within `timeout`); `None` if there is no replica
    /// here or the leader could not be asked. 0 when this node leads.
    pub async fn replica_lag(&self, group: u64, timeout: Duration) -> Option<u64> {
        self.inner.replica_lag(group, timeout).await
    }

    /// [`Cluster::propose`], with a refusal by the metadata rules (a
    /// stream that exists, a node that does not) as an error.
    pub async fn command(
        &self,
        cmd: ControllerCommand,
    ) -> Result<ControllerResponse, ClusterError> {
        match self.propose(cmd).await? {
            ControllerResponse::Refused { code, message } => {
                Err(ClusterError::Refused { code, message })
            }
            other => Ok(other),
        }
    }

    /// Appends `batch` to a partition group through its leader; answers once
    /// it is committed on a majority of the group's replicas. Concurrent
    /// appends to one partition through this node are coalesced first, so
    /// they travel to the leader as one batch (see `coalesce`).
    pub async fn append(&self, group: u64, batch: RecordBatch) -> Result<Appended, ClusterError> {
        // Here the leader's own coalescer merges concurrent writes: a pass
        // through the routing one first would only add a task hop (a
        // producer that routes by leader always lands here).
        if self.group(group).is_some_and(|g| g.is_leader()) {
            return self.append_routed(group, batch).await;
        }
        let edge = {
            let mut edges = self.inner.edges.lock();
            edges
                .entry(group)
                .or_insert_with(|| {
                    let inner = Arc::downgrade(&self.inner);
                    // Stages are recorded by the leader's coalescer only, so
                    // each write lingers once in the metrics; batches merged
                    // here carry their request count to it.
                    Coalescer::spawn(
                        MAX_ROUTED_IN_FLIGHT,
                        self.inner.config.max_batch_bytes,
                        None,
                        move |batch| {
                            let inner = inner.clone();
                            async move {
                                match inner.upgrade() {
                                    Some(inner) => Cluster { inner }
                                        .append_routed(group, batch)
                                        .await
                                        .map(|a| (a, None)),
                                    None => Err(ClusterError::ShuttingDown),
                                }
                            }
                        },
                    )
                })
                .clone()
        };
        edge.submit(batch).await
    }

    /// Sends one batch to the leader of `group` (here or forwarded),
    /// retrying on other nodes while nothing can have been written.
    pub(super) async fn append_routed(
        &self,
        group: u64,
        batch: RecordBatch,
    ) -> Result<Appended, ClusterError> {
        let payload = batch.as_bytes().clone();
        self.on_leader(group, kinds::FORWARD_APPEND, payload, |left| {
            let batch = batch.clone();
            async move {
                match tokio::time::timeout(left, self.inner.append_locally(group, batch)).await {
                    Ok(r) => r,
                    Err(_) => Err(ClusterError::Indeterminate(format!(
                        "{} did not commit within {:?} (no quorum?)",
                        self.inner.group_name(group),
                        self.inner.config.request_timeout
                    ))),
                }
            }
        })
        .await
    }

    /// Runs a request on the leader of `group`: `local` (given the time
    /// left) when this node leads, else `payload` as a `kind` frame to the
    /// leader. Retried — at the leader a refusal names, else at the
    /// replicas in turn — while the answer says nothing happened
    /// ([`ClusterError::is_retryable`]), up to the request timeout.
    pub(super) async fn on_leader<T, F, Fut>(
        &self,
        group: u64,
        kind: u16,
        payload: Bytes,
        local: F,
    ) -> Result<T, ClusterError>
    where
        T: DeserializeOwned,
        F: Fn(Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClusterError>>,
    {
        let deadline = Instant::now() + self.inner.config.request_timeout;
        let mut hint: Option<NodeId> = None;
        let mut attempt = 0usize;
        loop {
            let target = hint.take().or_else(|| self.leader_guess(group, attempt));
            attempt += 1;
            let result = match target {
                Some(t) if t == self.node_id() => local(remaining(deadline)).await,
                Some(t) => {
                    if kind == kinds::FORWARD_APPEND {
                        self.inner
                            .forwarded_writes
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    self.inner
                        .call(t, group, kind, payload.clone(), remaining(deadline))
                        .await
                }
                None => Err(ClusterError::Unavailable(format!(
                    "{} has no known replica",
                    self.inner.group_name(group)
                ))),
            };
            match result {
                Err(ClusterError::NotLeader { leader, .. }) if Instant::now() < deadline => {
                    let fresh = leader.is_some() && leader != target;
                    hint = leader.filter(|_| fresh);
                    backoff(fresh).await;
                }
                Err(e) if e.is_retryable() && Instant::now() < deadline => backoff(false).await,
                Err(e) if e.is_retryable() => {
                    return Err(ClusterError::Unavailable(format!(
                        "no leader of {} reachable in {:?}: {e}",
                        self.inner.group_name(group),
                        self.inner.config.request_timeout
                    )));
                }
                other => return other,
            }
        }
    }

    /// The node a write for `group` goes to first from here: the leader
    /// this node knows of, else the preferred leader. What the binary
    /// protocol's METADATA tells a producer that routes by leader.
    pub fn leader_hint(&self, group: u64) -> Option<NodeId> {
        self.leader_guess(group, 0)
    }

    /// Where to send a write for `group`: the leader this node knows of,
    /// else the replicas in turn, preferred leader first.
    pub(super) fn leader_guess(&self, group: u64, attempt: usize) -> Option<NodeId> {
        if let Some(g) = self.group(group)
            && let Some(l) = g.leader()
        {
            return Some(l);
        }
        let meta = self.meta();
        let p = meta.partition_of_group(group)?;
        let mut order = vec![p.preferred_leader];
        order.extend(
            p.replicas
                .iter()
                .copied()
                .filter(|r| *r != p.preferred_leader),
        );
        Some(order[attempt % order.len()])
    }

    /// Adds node `id` to the cluster (a learner of the controller group, so
    /// it receives the metadata, and a registered node, so it can take
    /// replicas). Run on the controller leader, wherever it is. A refusal
    /// by the metadata rules is an error.
    pub async fn admit(
        &self,
        id: NodeId,
        info: NodeInfo,
        replace: bool,
    ) -> Result<ControllerResponse, ClusterError> {
        let deadline = Instant::now() + self.inner.config.request_timeout;
        loop {
            let leader = self.inner.controller().metrics().borrow().current_leader;
            let result = match leader {
                Some(l) if l == self.node_id() => {
                    self.inner.admit_locally(id, info.clone(), replace).await
                }
                Some(l) => {
                    let payload = encode(&(id, info.clone(), replace))
                        .map_err(|e| ClusterError::Storage(e.message))?;
                    self.inner
                        .call(l, 0, kinds::JOIN, payload, remaining(deadline))
                        .await
                }
                None => Err(ClusterError::Unavailable(
                    "no controller leader known".into(),
                )),
            };
            match result {
                Err(e) if e.is_retryable() && Instant::now() < deadline => backoff(false).await,
                other => return other,
            }
        }
    }
}

impl Inner {
    /// See [`Cluster::replica_lag`].
    pub(super) async fn replica_lag(&self, group: u64, timeout: Duration) -> Option<u64> {
        let g = self.replicas.get(group)?;
        let local = g.state.applied_end_offset();
        let leader = g.leader()?;
        if leader == self.me() {
            return Some(0);
        }
        let leader_end: u64 = self
            .call(leader, group, kinds::COMMITTED_END, Bytes::new(), timeout)
            .await
            .ok()?;
        Some(leader_end.saturating_sub(local))
    }
}
