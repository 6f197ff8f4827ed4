//! A node's cluster runtime: the transport, the controller group, and the
//! partition groups this node replicates, kept in step with the metadata.
//!
//! # Startup
//!
//! [`Cluster::start`] binds the transport, opens the controller group from
//! `controller/` in the data directory and, when given bootstrap peers,
//! initializes it with exactly those voters (every bootstrap node does the
//! same with the same list, which openraft allows). It then registers
//! itself (`RegisterNode`, with its HTTP address) and starts reconciling.
//!
//! # Reconciling
//!
//! One task watches the applied metadata. For every partition that lists
//! this node as a replica it opens the group's log (`groups/{id:016x}/`)
//! and starts its Raft. A new group is initialized with the creation-time
//! member set recorded in the metadata (the same on every replica): by its
//! preferred leader at once, by the other initial replicas only if no
//! leader shows up, so leadership starts out as placement spread it. Groups
//! of deleted streams, and of partitions moved away, are stopped and their
//! data removed. Peer addresses in the transport follow the metadata. The
//! controller leader also moves replicas when nodes join or drain
//! (`mover`).
//!
//! openraft stops a group's core for good on any storage error (a failed
//! append, vote or metadata write). Storage first retries the errors that
//! only mean "short of descriptors or space for a moment" (see
//! `cairn_storage::fsutil`); if one still reaches Raft, reconciling
//! notices the stopped core (within a second) and restarts the group from
//! its log on disk, as a node restart would: the log is closed, reopened
//! and recovered (which also lifts the refusal a failed write leaves on
//! it), and a new Raft core joins the group again. A restart that fails
//! is retried every second, like a group that could not start; a group
//! that keeps stopping is restarted after pauses doubling up to a minute.
//!
//! # Requests
//!
//! Controller commands and partition writes go to the group's leader: run
//! locally when this node leads, forwarded over the transport otherwise.
//! Writes are coalesced per partition twice (`coalesce`): on the node they
//! enter, before routing, and on the leader, before proposing. A request
//! is retried on another node only when it certainly did not take effect
//! ([`ClusterError::is_retryable`]); an ambiguous failure is reported as
//! such, so a retry can never duplicate an acknowledged write. Before a
//! request is forwarded, the target must look reachable (the failure
//! detector, then a short ping), so a dead leader costs a retry, not a
//! deadline.
//!
//! # Timings and leadership
//!
//! Every group (the controller too) runs with the node's
//! [`crate::raft::RaftTimings`] (see `raft::timing` for how they map onto
//! openraft 0.9, whose heartbeat interval is also its RPC deadline), RPC
//! deadlines follow each peer's measured round trips (`raft::network`),
//! and a per-group task heartbeats and makes a leader that has not heard
//! from a quorum for an election timeout step down (`raft::leadership`).
//! Errors name groups as `stream app partition 4` or `the controller`
//! ([`error::GroupName`]), never by their numeric id.
mod anti_entropy;
mod coalesce;
pub mod error;
pub mod group;
mod mover;
pub mod replication;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use cairn_storage::DataDir;
use cairn_telemetry::replication::{ReplicationReport, ReplicationSource};
use cairn_types::batch::RecordBatch;
use futures::future::BoxFuture;
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{Raft, ServerState};
use parking_lot::RwLock;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use coalesce::Coalescer;
pub use error::ClusterError;
pub use group::PartitionGroup;

use crate::controller::meta::{PartitionMeta, StreamMeta};
use crate::controller::{
    ClusterMeta, ControllerCommand, ControllerRaftConfig, ControllerResponse,
    ControllerStateMachine,
};
use crate::membership::{self, HeartbeatConfig, HeartbeatService, HeartbeatTask, PeerStatus};
use crate::raft::leadership;
use crate::raft::log_store::log_id as raft_log_id;
use crate::raft::network::{self, GroupNetworkFactory, serve_rpc};
use crate::raft::types::{Appended, NodeInfo, PartitionRaftConfig};
use crate::raft::{LogStore, LogStoreOptions, PartitionStateMachine};
use crate::transport::{Handler, NodeId, RemoteError, Transport, TransportConfig, TransportError};

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
    /// One step of an anti-entropy scan (`anti_entropy::AeRequest`).
    pub const ANTI_ENTROPY: u16 = 26;
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

/// Told a write stage's time and how many client requests spent it
/// (cluster-side stages; see `coalesce`).
pub type StageObserver =
    Arc<dyn Fn(cairn_telemetry::metrics::WriteStage, Duration, u32) + Send + Sync>;

/// Settings of a node's cluster runtime.
#[derive(Clone)]
pub struct ClusterConfig {
    pub node_id: NodeId,
    /// Where the transport listens.
    pub raft_listen: SocketAddr,
    /// The transport address peers should use (defaults to the bound one).
    pub raft_advertise: Option<String>,
    /// The HTTP API address clients and peers should use.
    pub http_advertise: String,
    /// Initial controller voters (id, transport address), this node among
    /// them. Empty on a node that joins an existing cluster.
    pub bootstrap: Vec<(NodeId, String)>,
    /// With no bootstrap peers: form a single-node cluster of this node
    /// alone (if it has no cluster state yet). Without it, the node waits
    /// to be added to a cluster.
    pub solo: bool,
    /// Heartbeat, election and RPC timeouts of every Raft group of this
    /// node; all nodes of a cluster should use the same values.
    pub raft: crate::raft::RaftTimings,
    /// Largest batch one partition leader proposes as one Raft entry.
    pub max_batch_bytes: usize,
    /// How long a request may look for a leader before giving up.
    pub request_timeout: Duration,
    /// Told the storage stages of every durable partition append.
    pub on_append: Option<crate::raft::log_store::AppendObserver>,
    /// Told the `linger` and `replicate` stages of every write this node
    /// proposes as a partition leader (see `coalesce`).
    pub on_stage: Option<StageObserver>,
    pub anti_entropy: crate::antientropy::AntiEntropyConfig,
    /// The cluster secret every transport connection must prove (see
    /// `transport::secure`); also required of a joining node.
    pub secret: Option<crate::transport::ClusterSecret>,
    /// TLS on every transport connection.
    pub tls: Option<crate::tls::NodeTls>,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("node_id", &self.node_id)
            .field("raft_listen", &self.raft_listen)
            .field("bootstrap", &self.bootstrap)
            .field("solo", &self.solo)
            .finish_non_exhaustive()
    }
}

impl ClusterConfig {
    pub fn new(node_id: NodeId, raft_listen: SocketAddr, http_advertise: String) -> Self {
        Self {
            node_id,
            raft_listen,
            raft_advertise: None,
            http_advertise,
            bootstrap: Vec::new(),
            solo: false,
            raft: crate::raft::RaftTimings::default(),
            max_batch_bytes: 1 << 20,
            request_timeout: Duration::from_secs(5),
            on_append: None,
            on_stage: None,
            anti_entropy: crate::antientropy::AntiEntropyConfig::default(),
            secret: None,
            tls: None,
        }
    }
}

/// A node's cluster runtime. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClusterConfig,
    raft_addr: String,
    transport: Transport,
    data_dir: Arc<DataDir>,
    raft_config: Arc<openraft::Config>,
    controller: Raft<ControllerRaftConfig>,
    /// The controller's log on disk (its last log id, for pre-votes).
    controller_log: cairn_storage::PartitionLog,
    controller_sm: ControllerStateMachine,
    timings: Arc<crate::raft::RaftTimings>,
    groups: RwLock<HashMap<u64, Arc<PartitionGroup>>>,
    /// Logs of replicas whose Raft could not start (e.g. damaged batches
    /// where openraft reads at startup), kept open so anti-entropy can
    /// repair them; the next start attempt closes and reopens them.
    stalled: parking_lot::Mutex<HashMap<u64, cairn_storage::PartitionLog>>,
    /// Per partition, the coalescer of writes entering through this node.
    edges: parking_lot::Mutex<HashMap<u64, Coalescer>>,
    /// Replication RPC latency per peer, shared by every group's network.
    replication_stats: Arc<network::ReplicationStats>,
    heartbeats: HeartbeatService,
    heartbeat_task: parking_lot::Mutex<Option<HeartbeatTask>>,
    anti_entropy: anti_entropy::AntiEntropy,
    /// Handlers of node-level service kinds (≥ [`kinds::SERVICE_MIN`]).
    services: RwLock<HashMap<u16, ServiceHandler>>,
    shutdown: CancellationToken,
    /// Partition groups restarted after their Raft core stopped on an error.
    group_restarts: Arc<std::sync::atomic::AtomicU64>,
    /// Per group restarted: when, and the pause before it may be again.
    restart_backoff: parking_lot::Mutex<HashMap<u64, (Instant, Duration)>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.config.node_id)
            .field("raft_addr", &self.raft_addr)
            .finish_non_exhaustive()
    }
}

/// Routes transport frames to the cluster once it exists (the transport
/// needs its handler before the cluster can be built).
#[derive(Debug, Default)]
struct Dispatcher {
    inner: OnceLock<Weak<Inner>>,
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

fn encode<T: Serialize>(value: &T) -> Result<Bytes, RemoteError> {
    postcard::to_allocvec(value)
        .map(Bytes::from)
        .map_err(|e| RemoteError::new(network::BAD_RPC, format!("encode: {e}")))
}

fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, RemoteError> {
    postcard::from_bytes(payload)
        .map_err(|e| RemoteError::new(network::BAD_RPC, format!("decode: {e}")))
}

fn storage_err(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Storage(e.to_string())
}

impl Inner {
    async fn handle(
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
                    let mine = self.controller_log.last_entry().map(raft_log_id);
                    leadership::answer_pre_vote(&self.controller, &self.timings, candidate, mine)
                        .await
                } else {
                    let g = self.groups.read().get(&group).cloned();
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
                    return serve_rpc(&self.controller, kind, &payload).await;
                }
                let g = self.groups.read().get(&group).cloned();
                match g {
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
                let g = self.groups.read().get(&group).cloned();
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
            kinds::ANTI_ENTROPY => self.handle_anti_entropy(group, &payload).await,
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

    fn me(&self) -> NodeId {
        self.config.node_id
    }

    /// How errors and logs name `group` (see [`error::GroupName`]).
    fn group_name(&self, group: u64) -> error::GroupName {
        if group == 0 {
            return error::GroupName::CONTROLLER;
        }
        if let Some(g) = self.groups.read().get(&group) {
            return g.name();
        }
        let (stream_id, partition) = crate::controller::meta::split_group(group);
        error::GroupName {
            group,
            stream: self
                .controller_sm
                .meta()
                .stream_by_id(stream_id)
                .map(|s| s.name.clone()),
            partition,
        }
    }

    async fn propose_locally(
        &self,
        cmd: ControllerCommand,
    ) -> Result<ControllerResponse, ClusterError> {
        if self.controller.metrics().borrow().state != ServerState::Leader {
            return Err(ClusterError::NotLeader {
                group: error::GroupName::CONTROLLER,
                leader: self.controller.metrics().borrow().current_leader,
            });
        }
        match self.controller.client_write(cmd).await {
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

    async fn append_locally(
        &self,
        group: u64,
        batch: RecordBatch,
    ) -> Result<Appended, ClusterError> {
        let g = self.groups.read().get(&group).cloned();
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
    async fn admit_locally(
        &self,
        id: NodeId,
        info: NodeInfo,
        replace: bool,
    ) -> Result<ControllerResponse, ClusterError> {
        if self.controller.metrics().borrow().state != ServerState::Leader {
            return Err(ClusterError::NotLeader {
                group: error::GroupName::CONTROLLER,
                leader: self.controller.metrics().borrow().current_leader,
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
                self.controller
                    .change_membership(openraft::ChangeMembers::SetNodes(nodes), false)
                    .await
                    .map_err(|e| ClusterError::Indeterminate(e.to_string()))?;
            }
        }
        let known = self
            .controller
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
            self.controller
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
    async fn check_joiner(&self, id: NodeId, info: &NodeInfo) -> Result<(), ControllerResponse> {
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

    /// Calls `kind` on `to` and decodes its `Result` reply. Transport
    /// failures before the request could have been handled are
    /// `Unavailable` (retryable); after, `Indeterminate`.
    async fn call<T: DeserializeOwned>(
        &self,
        to: NodeId,
        group: u64,
        kind: u16,
        payload: Bytes,
        deadline: Duration,
    ) -> Result<T, ClusterError> {
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
            Ok(reply) => postcard::from_bytes::<Result<T, ClusterError>>(&reply).map_err(|e| {
                ClusterError::Indeterminate(format!("bad reply from node {to}: {e}"))
            })?,
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
    /// Starts the runtime; see the module docs.
    pub async fn start(
        config: ClusterConfig,
        data_dir: Arc<DataDir>,
    ) -> Result<Cluster, ClusterError> {
        let dispatcher = Arc::new(Dispatcher::default());
        let mut transport_config = TransportConfig::new(config.node_id, config.raft_listen);
        transport_config.secret = config.secret.clone();
        transport_config.tls = config.tls.clone();
        let transport = Transport::bind(transport_config, dispatcher.clone())
            .await
            .map_err(|e| ClusterError::Unavailable(format!("bind {}: {e}", config.raft_listen)))?;
        let raft_addr = config
            .raft_advertise
            .clone()
            .unwrap_or_else(|| transport.local_addr().to_string());

        config
            .raft
            .validate()
            .map_err(|e| ClusterError::Unavailable(format!("raft timings: {e}")))?;
        let mut openraft_config = openraft::Config {
            cluster_name: "cairn".into(),
            // The log is the data: never snapshot to purge it.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: u64::MAX,
            max_payload_entries: 64,
            ..Default::default()
        };
        config.raft.apply(&mut openraft_config);
        let raft_config = Arc::new(
            openraft_config
                .validate()
                .map_err(|e| ClusterError::Unavailable(format!("raft config: {e}")))?,
        );
        let timings = Arc::new(config.raft.clone());

        let controller_dir = data_dir.path().join("controller");
        std::fs::create_dir_all(&controller_dir).map_err(storage_err)?;
        let controller_sm = ControllerStateMachine::open(controller_dir.join("controller.json"))
            .map_err(storage_err)?;
        let controller_log = LogStore::<ControllerRaftConfig>::open(
            &data_dir,
            "controller/log",
            cairn_storage::LogConfig::default(),
            LogStoreOptions::default(),
        )
        .map_err(storage_err)?;
        let replication_stats = Arc::new(network::ReplicationStats::default());
        let controller_network =
            GroupNetworkFactory::new(transport.clone(), 0, replication_stats.clone())
                .with_timings(timings.clone());
        let controller_hints = controller_network.election_hints();
        let controller_plog = controller_log.log().clone();
        let controller = Raft::new(
            config.node_id,
            raft_config.clone(),
            controller_network,
            controller_log,
            controller_sm.clone(),
        )
        .await
        .map_err(|e| ClusterError::Storage(format!("start controller: {e}")))?;

        let inner = Arc::new(Inner {
            config: config.clone(),
            raft_addr: raft_addr.clone(),
            transport: transport.clone(),
            data_dir,
            raft_config,
            controller: controller.clone(),
            controller_log: controller_plog,
            controller_sm,
            timings: timings.clone(),
            groups: RwLock::new(HashMap::new()),
            stalled: parking_lot::Mutex::new(HashMap::new()),
            edges: parking_lot::Mutex::new(HashMap::new()),
            replication_stats,
            heartbeats: HeartbeatService::new(HeartbeatConfig::default()),
            heartbeat_task: parking_lot::Mutex::new(None),
            anti_entropy: anti_entropy::AntiEntropy::new(config.anti_entropy.clone()),
            services: RwLock::new(HashMap::new()),
            shutdown: CancellationToken::new(),
            group_restarts: Arc::default(),
            restart_backoff: Default::default(),
        });
        let _ = dispatcher.inner.set(Arc::downgrade(&inner));
        leadership::spawn(
            controller,
            leadership::Duties {
                timings,
                hints: controller_hints,
                last_log: {
                    let log = inner.controller_log.clone();
                    leadership::LastLog::new(move || log.last_entry().map(raft_log_id))
                },
                transport: inner.transport.clone(),
                group: 0,
                name: error::GroupName::CONTROLLER.to_string(),
            },
            inner.shutdown.clone(),
        );
        let cluster = Cluster { inner };

        for (id, addr) in &config.bootstrap {
            if let Ok(addr) = addr.parse() {
                transport.set_peer(*id, addr);
            }
        }
        let mut bootstrap = config.bootstrap.clone();
        if bootstrap.is_empty() && config.solo {
            bootstrap.push((config.node_id, raft_addr.clone()));
        }
        if !bootstrap.is_empty() {
            let voters: BTreeMap<NodeId, NodeInfo> = bootstrap
                .iter()
                .map(|(id, addr)| {
                    (
                        *id,
                        NodeInfo {
                            raft_addr: addr.clone(),
                            http_addr: String::new(),
                        },
                    )
                })
                .collect();
            // On a restart the log already holds the membership: asking
            // again is refused, and openraft logs the refusal as an ERROR
            // that would alarm an operator for nothing.
            let initialized = cluster
                .inner
                .controller
                .is_initialized()
                .await
                .unwrap_or(false);
            let result = if initialized {
                Ok(())
            } else {
                cluster.inner.controller.initialize(voters).await
            };
            match result {
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => {
                    return Err(ClusterError::Unavailable(format!(
                        "initialize controller: {e}"
                    )));
                }
            }
        }
        // A restart: reach the peers and reopen the groups the metadata we
        // already have names, before serving anything.
        let meta = cluster.meta();
        cluster.sync_peers(&meta);
        cluster.reconcile(&meta).await;

        let task = cluster.inner.heartbeats.start(transport.clone());
        *cluster.inner.heartbeat_task.lock() = Some(task);
        tokio::spawn(cluster.clone().register_self());
        tokio::spawn(cluster.clone().reconcile_loop());
        tokio::spawn(cluster.clone().mover_loop());
        tokio::spawn(cluster.clone().probe_loop());
        tokio::spawn(cluster.inner.clone().anti_entropy_loop());
        Ok(cluster)
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.me()
    }

    /// Counts partition groups restarted after their Raft core stopped on
    /// an error (see the module docs); shared, for metrics.
    pub fn group_restarts(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.inner.group_restarts.clone()
    }

    /// Waits until this node's applied metadata satisfies `ready` (e.g. a
    /// stream created through another node has arrived here), so a client
    /// can read its own metadata writes from this node. False on timeout.
    pub async fn wait_meta(&self, timeout: Duration, ready: impl Fn(&ClusterMeta) -> bool) -> bool {
        let mut rx = self.subscribe();
        tokio::time::timeout(timeout, async {
            loop {
                if ready(&rx.borrow_and_update()) {
                    return;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await
        .is_ok()
    }

    /// Waits until this node's registration is in the applied metadata (it
    /// can then be given replicas); false if `timeout` passed first.
    pub async fn wait_registered(&self, timeout: Duration) -> bool {
        let me = self.node_id();
        self.wait_meta(timeout, |m| m.nodes.contains_key(&me)).await
    }

    pub fn transport(&self) -> &Transport {
        &self.inner.transport
    }

    /// This node's transport address as peers see it.
    pub fn raft_addr(&self) -> &str {
        &self.inner.raft_addr
    }

    /// The metadata as last applied on this node.
    pub fn meta(&self) -> Arc<ClusterMeta> {
        self.inner.controller_sm.meta()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterMeta>> {
        self.inner.controller_sm.subscribe()
    }

    pub fn controller(&self) -> &Raft<ControllerRaftConfig> {
        &self.inner.controller
    }

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

    /// The controller group's leader as this node knows it.
    pub fn controller_leader(&self) -> Option<NodeId> {
        self.inner.controller.metrics().borrow().current_leader
    }

    /// Liveness of the peers as this node's failure detector sees them.
    pub fn peer_status(&self) -> Vec<PeerStatus> {
        self.inner.heartbeats.view()
    }

    /// Replication state of every partition replica on this node and
    /// replication RPC latency per peer (see [`replication`]). The
    /// controller group is not included: it has no offsets, and its health
    /// shows in `GET /v1/cluster`.
    pub fn replication_report(&self) -> ReplicationReport {
        self.inner.replication_report()
    }

    /// A telemetry source reading [`Cluster::replication_report`]; it holds
    /// the runtime weakly, so telemetry never keeps a stopped cluster alive.
    pub fn replication_source(&self) -> Arc<dyn ReplicationSource> {
        Arc::new(replication::ClusterReplicationSource(Arc::downgrade(
            &self.inner,
        )))
    }

    /// Scans partition `group` for divergent replicas now, on its leader
    /// (here or forwarded), and repairs what differs; `deep` re-reads every
    /// byte instead of reusing cached digests of unchanged segments.
    pub async fn scan(
        &self,
        group: u64,
        deep: bool,
    ) -> Result<crate::antientropy::ScanReport, ClusterError> {
        self.inner
            .scan_anywhere(group, deep, crate::antientropy::ScanTrigger::Requested)
            .await
    }

    /// The last anti-entropy scan of each partition this node ran.
    pub fn anti_entropy_reports(&self) -> Vec<crate::antientropy::ScanReport> {
        self.inner.anti_entropy.reports()
    }

    /// The last scan of each partition this node ran that found replicas
    /// differing.
    pub fn anti_entropy_divergent_reports(&self) -> Vec<crate::antientropy::ScanReport> {
        self.inner.anti_entropy.divergent_reports()
    }

    pub fn anti_entropy_config(&self) -> &crate::antientropy::AntiEntropyConfig {
        &self.inner.anti_entropy.config
    }

    /// A read of this node's replica of `group` found damaged data: start a
    /// (deep) scan of the partition on its leader, at most once every few
    /// seconds per partition.
    pub fn report_damage(&self, group: u64) {
        self.inner.damage_found(group);
    }

    /// The partition groups running on this node.
    pub fn groups(&self) -> Vec<Arc<PartitionGroup>> {
        self.inner.groups.read().values().cloned().collect()
    }

    pub fn group(&self, group: u64) -> Option<Arc<PartitionGroup>> {
        self.inner.groups.read().get(&group).cloned()
    }

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
                .or(self.inner.controller.metrics().borrow().current_leader);
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
        let g = self.group(group)?;
        let local = g.state.applied_end_offset();
        let leader = g.leader()?;
        if leader == self.node_id() {
            return Some(0);
        }
        let leader_end: u64 = self
            .inner
            .call(leader, group, kinds::COMMITTED_END, Bytes::new(), timeout)
            .await
            .ok()?;
        Some(leader_end.saturating_sub(local))
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
    async fn append_routed(
        &self,
        group: u64,
        batch: RecordBatch,
    ) -> Result<Appended, ClusterError> {
        let deadline = Instant::now() + self.inner.config.request_timeout;
        let mut hint: Option<NodeId> = None;
        let mut attempt = 0usize;
        loop {
            let target = hint.take().or_else(|| self.leader_guess(group, attempt));
            attempt += 1;
            let result = match target {
                Some(t) if t == self.node_id() => {
                    match tokio::time::timeout(
                        remaining(deadline),
                        self.inner.append_locally(group, batch.clone()),
                    )
                    .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(ClusterError::Indeterminate(format!(
                            "{} did not commit within {:?} (no quorum?)",
                            self.inner.group_name(group),
                            self.inner.config.request_timeout
                        ))),
                    }
                }
                Some(t) => {
                    self.inner
                        .call(
                            t,
                            group,
                            kinds::FORWARD_APPEND,
                            batch.as_bytes().clone(),
                            remaining(deadline),
                        )
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

    /// Where to send a write for `group`: the leader this node knows of,
    /// else the replicas in turn, preferred leader first.
    fn leader_guess(&self, group: u64, attempt: usize) -> Option<NodeId> {
        if let Some(g) = self.group(group)
            && let Some(l) = g.leader()
        {
            return Some(l);
        }
        let meta = self.meta();
        let (stream_id, partition) = crate::controller::meta::split_group(group);
        let p = meta
            .stream_by_id(stream_id)?
            .partitions
            .get(partition as usize)?;
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
            let leader = self.inner.controller.metrics().borrow().current_leader;
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

    async fn register_self(self) {
        let info = NodeInfo {
            raft_addr: self.inner.raft_addr.clone(),
            http_addr: self.inner.config.http_advertise.clone(),
        };
        loop {
            if self.meta().nodes.get(&self.node_id()).map(|n| &n.info) == Some(&info) {
                return;
            }
            let cmd = ControllerCommand::RegisterNode {
                id: self.node_id(),
                info: info.clone(),
            };
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                r = self.propose(cmd) => match r {
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "registering with the controller; will retry"),
                },
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every 100 ms, a ping to each peer over the transport: the probes
    /// behind each link's round-trip histogram and slow score. A peer whose
    /// previous probe is still out is skipped (the probe then counts as
    /// failed when it times out), so a dead peer costs one task at a time.
    async fn probe_loop(self) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let outstanding: Arc<parking_lot::Mutex<std::collections::HashSet<NodeId>>> =
            Arc::default();
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let me = self.node_id();
            let peers: Vec<NodeId> = self
                .meta()
                .nodes
                .keys()
                .copied()
                .filter(|n| *n != me)
                .collect();
            for peer in peers {
                if !outstanding.lock().insert(peer) {
                    continue;
                }
                let (transport, stats, outstanding) = (
                    self.inner.transport.clone(),
                    self.inner.replication_stats.peer(peer),
                    outstanding.clone(),
                );
                tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    let deadline = network::PEER_PROBE_TIMEOUT * 10;
                    let took = transport
                        .call(peer, 0, kinds::PING, Bytes::new(), deadline)
                        .await
                        .ok()
                        .map(|_| started.elapsed());
                    stats.record_probe(took);
                    outstanding.lock().remove(&peer);
                });
            }
        }
    }

    fn sync_peers(&self, meta: &ClusterMeta) {
        let known = self.inner.transport.peers();
        for n in meta.nodes.values() {
            if let Ok(addr) = n.info.raft_addr.parse::<SocketAddr>()
                && known.get(&n.id).copied().flatten() != Some(addr)
            {
                self.inner.transport.set_peer(n.id, addr);
            }
        }
    }

    async fn reconcile_loop(self) {
        let mut rx = self.subscribe();
        loop {
            let meta = rx.borrow_and_update().clone();
            self.sync_peers(&meta);
            self.reconcile(&meta).await;
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                r = rx.changed() => if r.is_err() { return },
                // Retry groups that failed to start.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn reconcile(&self, meta: &ClusterMeta) {
        let me = self.node_id();
        let mut wanted = HashMap::new();
        for (stream, partition, p) in meta.groups_of(me) {
            wanted.insert(p.group, (stream, partition, p));
        }
        // Coalescers of partitions that no longer exist.
        let existing: std::collections::HashSet<u64> = meta
            .streams
            .values()
            .flat_map(|s| s.partitions.iter().map(|p| p.group))
            .collect();
        self.inner.edges.lock().retain(|g, _| existing.contains(g));
        let mut running: Vec<u64> = self.inner.groups.read().keys().copied().collect();
        running.extend(self.inner.stalled.lock().keys().copied());
        for group in running {
            if !wanted.contains_key(&group) {
                self.stop_group(group, true).await;
            }
        }
        for (group, name, error) in self.failed_groups() {
            if self.inner.shutdown.is_cancelled() || !self.may_restart(group) {
                continue;
            }
            tracing::error!(
                group = %name,
                %error,
                "the partition group's Raft stopped on an error; restarting it from its log on disk"
            );
            self.stop_group(group, false).await;
            self.inner
                .group_restarts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        for (group, (stream, partition, p)) in wanted {
            if self.inner.groups.read().contains_key(&group) {
                continue;
            }
            if let Err(e) = self.start_group(stream, partition, p).await {
                tracing::warn!(group, stream = %stream.name, partition, error = %e, "could not start partition group; will retry");
            }
        }
    }

    /// Groups whose Raft core stopped on an error (not a shutdown): to be
    /// restarted from disk (see the module docs), with their names and
    /// the error.
    fn failed_groups(&self) -> Vec<(u64, error::GroupName, String)> {
        let groups = self.inner.groups.read();
        groups
            .values()
            .filter_map(|g| {
                let metrics = g.raft.metrics();
                let state = &metrics.borrow().running_state;
                match state {
                    Err(openraft::error::Fatal::Stopped) | Ok(()) => None,
                    Err(e) => Some((g.group, g.name(), e.to_string())),
                }
            })
            .collect()
    }

    /// Whether `group` may be restarted now: at once the first time, then
    /// after a pause that doubles with each restart (1 s up to
    /// [`MAX_RESTART_PAUSE`]) while it keeps failing, so a disk that stays
    /// broken is not hammered; a group that ran for
    /// [`RESTART_BACKOFF_RESET`] starts over.
    fn may_restart(&self, group: u64) -> bool {
        let now = Instant::now();
        let mut backoff = self.inner.restart_backoff.lock();
        let pause = match backoff.get(&group) {
            Some(&(last, pause)) if now.duration_since(last) < RESTART_BACKOFF_RESET => {
                if now < last + pause {
                    return false;
                }
                (pause * 2).clamp(Duration::from_secs(1), MAX_RESTART_PAUSE)
            }
            _ => Duration::from_secs(1),
        };
        backoff.insert(group, (now, pause));
        true
    }

    async fn start_group(
        &self,
        stream: &StreamMeta,
        partition: u32,
        p: &PartitionMeta,
    ) -> Result<(), ClusterError> {
        let me = self.node_id();
        let dir = format!("groups/{:016x}", p.group);
        self.close_stalled(p.group, false).await;
        let durable = Arc::new(crate::raft::log_store::DurableMarks::default());
        let log_store = LogStore::<PartitionRaftConfig>::open(
            &self.inner.data_dir,
            &dir,
            stream.log.clone(),
            LogStoreOptions {
                on_append: self.inner.config.on_append.clone(),
                durable: Some(durable.clone()),
                ..LogStoreOptions::default()
            },
        )
        .map_err(storage_err)?;
        let log = log_store.log().clone();
        let raft_meta = log_store.meta().clone();
        let sm = PartitionStateMachine::new(&log_store);
        let state = sm.replica_state();
        let network = GroupNetworkFactory::new(
            self.inner.transport.clone(),
            p.group,
            self.inner.replication_stats.clone(),
        )
        .with_timings(self.inner.timings.clone());
        let hints = network.election_hints();
        let raft = Raft::new(me, self.inner.raft_config.clone(), network, log_store, sm)
            .await
            .map_err(|e| {
                self.inner.stalled.lock().insert(p.group, log.clone());
                ClusterError::Storage(format!(
                    "start {}: {e}",
                    error::GroupName::partition(p.group, &stream.name, partition)
                ))
            })?;
        if p.initial_members.contains_key(&me) {
            // The preferred leader initializes at once and, being first to
            // stand, wins the first election: leadership starts out spread
            // as placement planned. The other initial replicas step in
            // (with the same member set, which openraft allows) only if no
            // leader has appeared after a while, e.g. the preferred one is
            // down.
            let (raft, members, group) = (raft.clone(), p.initial_members.clone(), p.group);
            let delay = if me == p.preferred_leader {
                Duration::ZERO
            } else {
                INITIALIZE_FALLBACK
            };
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if !delay.is_zero() && raft.current_leader().await.is_some() {
                    return;
                }
                // Already initialized (a restart): see the controller's case.
                if raft.is_initialized().await.unwrap_or(false) {
                    return;
                }
                match raft.initialize(members).await {
                    Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                    Err(e) => tracing::warn!(group, error = %e, "initialize partition group"),
                }
            });
        }
        let group = PartitionGroup::new(
            me,
            group::GroupId {
                group: p.group,
                stream: stream.name.clone(),
                partition,
            },
            raft,
            log,
            state,
            raft_meta,
            group::Proposals {
                max_batch_bytes: self.inner.config.max_batch_bytes,
                durable,
                observer: self.inner.config.on_stage.clone(),
            },
        );
        leadership::spawn(
            group.raft.clone(),
            leadership::Duties {
                timings: self.inner.timings.clone(),
                hints,
                last_log: {
                    let log = group.log.clone();
                    leadership::LastLog::new(move || log.last_entry().map(raft_log_id))
                },
                transport: self.inner.transport.clone(),
                group: p.group,
                name: group.name().to_string(),
            },
            self.inner.shutdown.clone(),
        );
        self.inner.groups.write().insert(p.group, group);
        Ok(())
    }

    /// Closes a partition log, or removes it with its data. Closing syncs
    /// and removing deletes files: off the async workers.
    async fn finish_log(&self, group: u64, log: cairn_storage::PartitionLog, remove_data: bool) {
        let data_dir = self.inner.data_dir.clone();
        let result = tokio::task::spawn_blocking(move || {
            if remove_data {
                data_dir.remove_log(&log)
            } else {
                data_dir.close_log(&log)
            }
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(group, error = %e, "closing partition log"),
            Err(e) => tracing::warn!(group, error = %e, "closing partition log"),
        }
    }

    /// Closes (or removes) the log of a replica whose Raft did not start.
    async fn close_stalled(&self, group: u64, remove_data: bool) {
        let stalled = self.inner.stalled.lock().remove(&group);
        if let Some(log) = stalled {
            self.finish_log(group, log, remove_data).await;
        }
    }

    async fn stop_group(&self, group: u64, remove_data: bool) {
        self.close_stalled(group, remove_data).await;
        let Some(g) = self.inner.groups.write().remove(&group) else {
            return;
        };
        if let Err(e) = g.raft.shutdown().await {
            tracing::warn!(group, error = %e, "raft shutdown");
        }
        if !remove_data && let Err(e) = g.meta.flush().await {
            tracing::warn!(group, error = %e, "writing raft.json");
        }
        self.finish_log(group, g.log.clone(), remove_data).await;
    }

    /// Stops every group and the controller, then the transport. Logs are
    /// closed (synced) but kept.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.edges.lock().clear();
        let heartbeats = self.inner.heartbeat_task.lock().take();
        if let Some(task) = heartbeats {
            task.stop().await;
        }
        let mut groups: Vec<u64> = self.inner.groups.read().keys().copied().collect();
        groups.extend(self.inner.stalled.lock().keys().copied());
        for g in groups {
            self.stop_group(g, false).await;
        }
        let _ = self.inner.controller.shutdown().await;
        self.inner.transport.shutdown().await;
    }
}

/// The longest pause between restarts of a group that keeps failing.
const MAX_RESTART_PAUSE: Duration = Duration::from_secs(60);
/// A group restarted longer ago than this starts its backoff over.
const RESTART_BACKOFF_RESET: Duration = Duration::from_secs(600);

/// How long an initial replica other than the preferred leader waits for a
/// leader before initializing a new partition group itself.
const INITIALIZE_FALLBACK: Duration = Duration::from_secs(2);

/// Coalesced batches of one partition on their way to its leader at once.
const MAX_ROUTED_IN_FLIGHT: usize = 8;

/// How long a forwarded request waits for a connection to its target.
const CONNECT_BUDGET: Duration = Duration::from_millis(300);
/// How long a join waits for the joining node to pass the transport
/// handshake (connect, TLS, proofs, a ping) when the cluster has a secret.
const JOIN_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(10))
}

async fn backoff(fresh_hint: bool) {
    if !fresh_hint {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
