//! Node-to-node requests of the cluster runtime: the frame kinds, the
//! dispatcher that hands each incoming frame to its handler (Raft RPCs to
//! their group, forwarded commands and writes, joins, anti-entropy steps,
//! registered node-level services), and the calls this node makes, retried
//! on another node only when they certainly did not take effect.

use super::*;

/// How long a forwarded request waits for a connection to its target.
pub(super) const CONNECT_BUDGET: Duration = Duration::from_millis(300);

/// Frame kinds of node-level requests (Raft RPC kinds are in
/// [`network::kinds`]).
pub mod kinds {
    /// A controller command forwarded to the controller leader.
    pub const FORWARD_COMMAND: u16 = 20;
    /// A record batch forwarded to its partition leader (group in header).
    pub const FORWARD_APPEND: u16 = 21;
    /// A node asking the controller leader to add it (as a learner).
    pub const JOIN: u16 = 22;
    /// The controller leader asking a partition leader to change its
    /// replicas (add learners, then replace the voters).
    pub const CHANGE_REPLICAS: u16 = 23;
    /// Answered with nothing: establishes a connection before a request
    /// that must not be cut short by a dial.
    pub const PING: u16 = 24;
    /// A replica asking a partition leader for its committed end offset
    /// (to report how far behind a `consistency=any` read is).
    pub const COMMITTED_END: u16 = 25;
    /// One step of an anti-entropy scan (`antientropy::wire::AeRequest`).
    pub const ANTI_ENTROPY: u16 = 26;
    /// A request to hand a partition's leadership to the node in the
    /// payload, forwarded to the partition's leader (see `transfer`).
    pub const TRANSFER_LEADER: u16 = 27;
    /// A partition leader handing over to this replica: campaign now.
    pub const CAMPAIGN_NOW: u16 = 28;
    /// A read of one partition, answered by the receiving node's replica
    /// (`reads::ReadRequest`, JSON both ways).
    pub const READ: u16 = 29;
    /// Some partitions of a query, scanned by the receiving node's
    /// replicas (`reads::QueryRequest`, JSON both ways).
    pub const QUERY: u16 = 30;
    /// Kinds from here up belong to node-level services registered with
    /// [`super::Cluster::register_service`] (e.g. the cluster monitor).
    pub const SERVICE_MIN: u16 = 100;
}

/// A node-level service above the cluster runtime (the monitor, say) that
/// answers requests from peers over the transport: given the sender and the
/// payload, it returns the reply or an error message.
pub type ServiceHandler =
    Arc<dyn Fn(NodeId, Bytes) -> BoxFuture<'static, Result<Bytes, String>> + Send + Sync>;

/// A service request's failure, as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// The request was not delivered (no connection, node unknown).
    #[error("node {node} is unreachable: {message}")]
    Unreachable { node: NodeId, message: String },
    /// No answer in time.
    #[error("node {node} did not answer in time: {message}")]
    Timeout { node: NodeId, message: String },
    /// The service (or the node) answered with an error.
    #[error("node {node} answered: {message}")]
    Remote { node: NodeId, message: String },
}

/// Routes transport frames to the cluster once it exists (the transport
/// needs its handler before the cluster can be built).
#[derive(Debug, Default)]
pub(super) struct Dispatcher {
    pub(super) inner: OnceLock<Weak<Inner>>,
}

impl Handler for Dispatcher {
    fn handle(
        &self,
        from: NodeId,
        group: u64,
        kind: u16,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, RemoteError>> {
        let inner = self.inner.get().and_then(Weak::upgrade);
        Box::pin(async move {
            let Some(inner) = inner else {
                return Err(RemoteError::new(network::NO_SUCH_GROUP, "node is starting"));
            };
            inner.handle(from, group, kind, payload).await
        })
    }
}

pub(super) fn encode<T: Serialize>(value: &T) -> Result<Bytes, RemoteError> {
    postcard::to_allocvec(value)
        .map(Bytes::from)
        .map_err(|e| RemoteError::new(network::BAD_RPC, format!("encode: {e}")))
}

pub(super) fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, RemoteError> {
    postcard::from_bytes(payload)
        .map_err(|e| RemoteError::new(network::BAD_RPC, format!("decode: {e}")))
}

impl Inner {
    pub(super) async fn handle(
        self: Arc<Self>,
        from: NodeId,
        group: u64,
        kind: u16,
        payload: Bytes,
    ) -> Result<Bytes, RemoteError> {
        if membership::is_heartbeat(group, kind) {
            if let Err(e) = self.heartbeats.on_heartbeat(from, &payload) {
                tracing::debug!(from, error = %e, "heartbeat refused");
            }
            return Ok(Bytes::new());
        }
        match kind {
            leadership::PRE_VOTE => {
                let candidate: Option<openraft::LogId<NodeId>> = decode(&payload)?;
                let granted = if group == 0 {
                    let mine = self.controller_log().last_entry().map(raft_log_id);
                    leadership::answer_pre_vote(&self.controller(), &self.timings, candidate, mine)
                        .await
                } else {
                    let g = self.replicas.get(group);
                    match g {
                        Some(g) => {
                            let mine = g.log.last_entry().map(raft_log_id);
                            leadership::answer_pre_vote(&g.raft, &self.timings, candidate, mine)
                                .await
                        }
                        None => {
                            return Err(RemoteError::new(
                                network::NO_SUCH_GROUP,
                                format!("{} is not running here", self.group_name(group)),
                            ));
                        }
                    }
                };
                encode(&granted)
            }
            network::kinds::APPEND_ENTRIES
            | network::kinds::VOTE
            | network::kinds::INSTALL_SNAPSHOT => {
                if group == 0 {
                    return serve_rpc(&self.controller(), kind, &payload).await;
                }
                let g = self.replicas.get(group);
                match g {
                    Some(g) if kind == network::kinds::INSTALL_SNAPSHOT => {
                        // The snapshot's data is fetched first (`catchup`).
                        match self.snapshot_data_ready(&g, from, &payload) {
                            Ok(()) => serve_rpc(&g.raft, kind, &payload).await,
                            Err(why) => Err(RemoteError::new(network::CATCHING_UP, why)),
                        }
                    }
                    Some(g) => serve_rpc(&g.raft, kind, &payload).await,
                    None => Err(RemoteError::new(
                        network::NO_SUCH_GROUP,
                        format!("{} is not running here", self.group_name(group)),
                    )),
                }
            }
            kinds::FORWARD_COMMAND => {
                let cmd: ControllerCommand = decode(&payload)?;
                encode(&self.propose_locally(cmd).await)
            }
            kinds::FORWARD_APPEND => {
                let result = match RecordBatch::from_bytes(payload) {
                    Ok(batch) => self.append_locally(group, batch).await,
                    Err(e) => Err(ClusterError::Storage(format!("forwarded batch: {e}"))),
                };
                encode(&result)
            }
            kinds::PING => Ok(Bytes::new()),
            kinds::COMMITTED_END => {
                let g = self.replicas.get(group);
                let answer = match g {
                    Some(g) if g.is_leader() => Ok(g.state.applied_end_offset()),
                    Some(g) => Err(ClusterError::NotLeader {
                        group: g.name(),
                        leader: g.leader(),
                    }),
                    None => Err(ClusterError::NoSuchGroup {
                        group: self.group_name(group),
                        node: self.me(),
                    }),
                };
                encode(&answer)
            }
            kinds::ANTI_ENTROPY => {
                crate::antientropy::scheduler::handle(&self.as_host(), group, &payload).await
            }
            kinds::TRANSFER_LEADER => {
                let to: NodeId = decode(&payload)?;
                encode(&self.transfer_locally(group, to).await)
            }
            kinds::CAMPAIGN_NOW => encode(&self.campaign_now(from, group).await),
            kinds::READ => self.handle_read(group, &payload).await,
            kinds::QUERY => self.handle_query(&payload).await,
            kinds::CHANGE_REPLICAS => {
                let change: mover::ChangeReplicas = decode(&payload)?;
                encode(&self.change_replicas_locally(group, change).await)
            }
            kinds::JOIN => {
                let (id, info, replace): (NodeId, NodeInfo, bool) = decode(&payload)?;
                encode(&self.admit_locally(id, info, replace).await)
            }
            service if service >= kinds::SERVICE_MIN => {
                let handler = self.services.read().get(&service).cloned();
                match handler {
                    Some(h) => h(from, payload)
                        .await
                        .map_err(|m| RemoteError::new(RemoteError::UNSUPPORTED, m)),
                    None => Err(RemoteError::new(
                        RemoteError::UNSUPPORTED,
                        format!("no service of kind {service} on this node"),
                    )),
                }
            }
            other => Err(RemoteError::new(
                network::BAD_RPC,
                format!("unknown request kind {other}"),
            )),
        }
    }

    /// Calls `kind` on `to` and decodes its `Result` reply. Transport
    /// failures before the request could have been handled are
    /// `Unavailable` (retryable); after, `Indeterminate`.
    pub(super) async fn call<T: DeserializeOwned>(
        &self,
        to: NodeId,
        group: u64,
        kind: u16,
        payload: Bytes,
        deadline: Duration,
    ) -> Result<T, ClusterError> {
        let reply = self.call_bytes(to, group, kind, payload, deadline).await?;
        postcard::from_bytes::<Result<T, ClusterError>>(&reply)
            .map_err(|e| ClusterError::Indeterminate(format!("bad reply from node {to}: {e}")))?
    }

    /// [`Inner::call`] without decoding: the reply's bytes as they came.
    pub(super) async fn call_bytes(
        &self,
        to: NodeId,
        group: u64,
        kind: u16,
        payload: Bytes,
        deadline: Duration,
    ) -> Result<Bytes, ClusterError> {
        // A request sent to a dead node would wait its whole deadline for
        // a connection. Know the peer is reachable first, cheaply: the
        // failure detector's verdict, then a ping with a short budget.
        // Neither sends the request, so failing here is always retryable.
        if !self.transport.is_connected(to) {
            if self.heartbeats.state(to) == Some(membership::NodeState::Down) {
                return Err(ClusterError::Unavailable(format!("node {to} is down")));
            }
            let budget = deadline.min(CONNECT_BUDGET);
            if let Err(e) = self
                .transport
                .call(to, 0, kinds::PING, Bytes::new(), budget)
                .await
            {
                return Err(ClusterError::Unavailable(format!("node {to}: {e}")));
            }
        }
        match self
            .transport
            .call(to, group, kind, payload, deadline)
            .await
        {
            Ok(reply) => Ok(reply),
            Err(e @ (TransportError::Unreachable { .. } | TransportError::UnknownPeer { .. })) => {
                Err(ClusterError::Unavailable(e.to_string()))
            }
            Err(TransportError::Remote { error, .. }) if error.code == network::NO_SUCH_GROUP => {
                Err(ClusterError::NoSuchGroup {
                    group: self.group_name(group),
                    node: to,
                })
            }
            Err(e) => Err(ClusterError::Indeterminate(e.to_string())),
        }
    }
}

impl Cluster {
    /// Answers requests of `kind` (≥ [`kinds::SERVICE_MIN`]) from peers with
    /// `handler`, replacing any earlier handler of that kind.
    pub fn register_service(&self, kind: u16, handler: ServiceHandler) {
        assert!(
            kind >= kinds::SERVICE_MIN,
            "service kinds start at {}",
            kinds::SERVICE_MIN
        );
        self.inner.services.write().insert(kind, handler);
    }

    /// Calls a service of `kind` on node `to` (this node included, without
    /// the network) and returns its reply.
    pub async fn call_service(
        &self,
        to: NodeId,
        kind: u16,
        payload: Bytes,
        deadline: Duration,
    ) -> Result<Bytes, ServiceError> {
        if to == self.node_id() {
            let handler = self.inner.services.read().get(&kind).cloned();
            let Some(h) = handler else {
                return Err(ServiceError::Remote {
                    node: to,
                    message: format!("no service of kind {kind} on this node"),
                });
            };
            return match tokio::time::timeout(deadline, h(to, payload)).await {
                Ok(r) => r.map_err(|message| ServiceError::Remote { node: to, message }),
                Err(_) => Err(ServiceError::Timeout {
                    node: to,
                    message: format!("no answer within {deadline:?}"),
                }),
            };
        }
        match self
            .inner
            .transport
            .call(to, 0, kind, payload, deadline)
            .await
        {
            Ok(reply) => Ok(reply),
            Err(e @ (TransportError::Unreachable { .. } | TransportError::UnknownPeer { .. })) => {
                Err(ServiceError::Unreachable {
                    node: to,
                    message: e.to_string(),
                })
            }
            Err(TransportError::Remote { error, .. }) => Err(ServiceError::Remote {
                node: to,
                message: error.message,
            }),
            Err(e) => Err(ServiceError::Timeout {
                node: to,
                message: e.to_string(),
            }),
        }
    }
}
