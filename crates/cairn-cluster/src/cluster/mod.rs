//! A node's cluster runtime: the transport, the controller group, and the
//! partition groups this node replicates, kept in step with the metadata.
//!
//! # Startup
//!
//! [`Cluster::start`] binds the transport ([`Cluster::start_in_memory`]
//! joins an in-memory network instead, for simulated clusters), opens the
//! controller group from `controller/` in the data directory and, when
//! given bootstrap peers, initializes it with exactly those voters (every
//! bootstrap node does the same with the same list, which openraft
//! allows). It then registers itself (`RegisterNode`, with its HTTP
//! address) and starts reconciling.
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
//! The controller group is restarted the same way, in place
//! (`controller_group`): its live parts (Raft, log, leadership task) sit
//! behind a lock and are replaced whole, so callers take the current Raft
//! handle each time (`Inner::controller`). Its state machine stays one
//! object, reread from `controller.json`, so subscribers to the metadata
//! keep their channel, and the stopped core's handles are fenced off from
//! writing it. Restarts are counted apart from partition groups'
//! ([`Cluster::controller_restarts`]).
//!
//! # Layout
//!
//! This file holds the runtime's state ([`Cluster`], `Inner`), its start
//! and its accessors; `rpc` the frame kinds, the dispatcher and calls to
//! peers; `route` where commands and writes run; `reads` where reads and
//! queries run; `replicas` the table of the replicas this node runs (it
//! owns its locks: running groups, replicas whose Raft did not start,
//! restart pacing); `lifecycle` registering, probing, reconciling and
//! stopping groups; `controller_group` opening, restarting and stopping
//! the controller's Raft; `replication`, `mover`, `transfer`, `retention`
//! (cuts through Raft, orphan clean-up) and `catchup` (a follower fetching
//! a snapshot's data) their own concerns. State a concern alone uses is
//! its own type (`Replicas`, `Coalescer`, `RetentionCounters`, `CatchUps`,
//! `antientropy::AntiEntropy`); the files here extend `Inner`/`Cluster`
//! with `impl` blocks over the runtime's shared parts (transport,
//! controller, replicas). Anti-entropy, which needs only a few of them,
//! lives below, in [`crate::antientropy`], and sees the runtime through
//! the `Host` trait `Inner` implements (end of this file); `observation`
//! is a group's Raft metrics in plain values, shared by both.
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
mod catchup;
mod coalesce;
mod controller_group;
pub mod error;
pub mod group;
mod lifecycle;
mod mover;
pub(crate) mod observation;
pub mod reads;
mod replicas;
pub mod replication;
mod retention;
mod route;
mod rpc;
mod transfer;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use cairn_storage::DataDir;
use cairn_telemetry::replication::{ReplicationReport, ReplicationSource};
use cairn_types::batch::RecordBatch;
use cairn_types::clock::Clock;
use futures::future::BoxFuture;
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{Raft, ServerState};
use parking_lot::RwLock;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use catchup::CatchingUp;
use coalesce::Coalescer;
use controller_group::{ControllerDeps, ControllerGroup};
pub use error::ClusterError;
pub use group::PartitionGroup;
pub use retention::RetentionFigures;
use route::remaining;
use rpc::{Dispatcher, encode};
pub use rpc::{ServiceError, ServiceHandler, kinds};

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
use crate::transport::{
    Handler, MemoryNetwork, Network, NodeId, RemoteError, Transport, TransportConfig,
    TransportError,
};

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
    /// Told the read stages of reads and queries this node's replicas
    /// serve (for any node's client).
    pub on_read_stage: Option<reads::ReadStageObserver>,
    pub anti_entropy: crate::antientropy::AntiEntropyConfig,
    /// The cluster secret every transport connection must prove (see
    /// `transport::secure`); also required of a joining node.
    pub secret: Option<crate::transport::ClusterSecret>,
    /// TLS on every transport connection.
    pub tls: Option<crate::tls::NodeTls>,
    /// Most bytes per second a follower fetches to catch up by snapshot
    /// (all its replicas together); 0 is unlimited.
    pub snapshot_rate_bytes_per_sec: u64,
    /// A follower further behind than this many bytes of log is caught up
    /// by snapshot rather than entry by entry (see `retention`, the replay
    /// window); 0 only after retention cuts.
    pub snapshot_behind_bytes: u64,
    /// How long a group directory no partition on this node owns is kept
    /// before it is removed (see `retention`).
    pub orphan_grace: Duration,
    /// The controller snapshots its state and purges its log every this
    /// many entries (keeping the last [`CONTROLLER_LOG_KEPT`]).
    pub controller_snapshot_every: u64,
    /// Wall-clock time for the stamps the runtime makes: proposal times
    /// and lag ages (`replication`), anti-entropy reports. Timers and
    /// deadlines use tokio's clock. Default: the system clock.
    pub clock: Arc<dyn Clock>,
}

/// Controller entries kept after a snapshot, so a briefly lagging
/// controller follower catches up from the log, not a snapshot.
pub const CONTROLLER_LOG_KEPT: u64 = 100;

/// The default replay window (`ClusterConfig::snapshot_behind_bytes`): a
/// few default segments, so that a follower briefly behind is never
/// switched to a snapshot.
pub const DEFAULT_SNAPSHOT_BEHIND_BYTES: u64 = 256 << 20;

/// Segment size of the controller's log.
const CONTROLLER_SEGMENT_BYTES: u64 = 1 << 20;

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
            on_read_stage: None,
            anti_entropy: crate::antientropy::AntiEntropyConfig::default(),
            secret: None,
            tls: None,
            snapshot_rate_bytes_per_sec: 64_000_000,
            snapshot_behind_bytes: DEFAULT_SNAPSHOT_BEHIND_BYTES,
            orphan_grace: Duration::from_secs(600),
            controller_snapshot_every: 1000,
            clock: cairn_types::clock::system(),
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
    transport: Network,
    data_dir: Arc<DataDir>,
    raft_config: Arc<openraft::Config>,
    /// The controller's Raft and log as running now: replaced by a restart
    /// (read through `Inner::controller`, `Inner::controller_log`).
    controller_group: RwLock<ControllerGroup>,
    /// The controller's state: one across restarts, so its subscribers
    /// keep listening.
    controller_sm: ControllerStateMachine,
    controller_raft_config: Arc<openraft::Config>,
    /// Held by a controller restart and by shutdown's stop of it.
    controller_restart: tokio::sync::Mutex<()>,
    /// Controller restarts after its Raft core stopped on an error.
    controller_restarts: Arc<std::sync::atomic::AtomicU64>,
    /// Write batches this node sent on to another node's leader.
    forwarded_writes: Arc<std::sync::atomic::AtomicU64>,
    timings: Arc<crate::raft::RaftTimings>,
    replicas: replicas::Replicas,
    /// Per partition, the coalescer of writes entering through this node.
    edges: parking_lot::Mutex<HashMap<u64, Coalescer>>,
    /// Replication RPC latency per peer, shared by every group's network.
    replication_stats: Arc<network::ReplicationStats>,
    heartbeats: HeartbeatService,
    heartbeat_task: parking_lot::Mutex<Option<HeartbeatTask>>,
    anti_entropy: crate::antientropy::AntiEntropy,
    /// Handlers of node-level service kinds (≥ [`kinds::SERVICE_MIN`]).
    services: RwLock<HashMap<u16, ServiceHandler>>,
    shutdown: CancellationToken,
    retention: retention::RetentionCounters,
    catchups: catchup::CatchUps,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.config.node_id)
            .field("raft_addr", &self.raft_addr)
            .finish_non_exhaustive()
    }
}

fn storage_err(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Storage(e.to_string())
}

impl Inner {
    pub(crate) fn me(&self) -> NodeId {
        self.config.node_id
    }

    /// This node as anti-entropy sees it.
    pub(crate) fn as_host(self: &Arc<Self>) -> Arc<dyn crate::antientropy::host::Host> {
        self.clone()
    }

    /// This node's replica of `group`, or `NoSuchGroup`.
    pub(crate) fn group_or_err(&self, group: u64) -> Result<Arc<PartitionGroup>, ClusterError> {
        self.replicas
            .get(group)
            .ok_or_else(|| ClusterError::NoSuchGroup {
                group: self.group_name(group),
                node: self.me(),
            })
    }

    /// How errors and logs name `group` (see [`error::GroupName`]).
    pub(crate) fn group_name(&self, group: u64) -> error::GroupName {
        if group == 0 {
            return error::GroupName::CONTROLLER;
        }
        if let Some(g) = self.replicas.get(group) {
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
}

impl Cluster {
    /// Starts the runtime on a TCP transport bound to `raft_listen`; see
    /// the module docs.
    pub async fn start(
        config: ClusterConfig,
        data_dir: Arc<DataDir>,
    ) -> Result<Cluster, ClusterError> {
        Self::start_on(config, data_dir, None).await
    }

    /// Starts the runtime as a node of an in-memory network (a simulated
    /// cluster in one process; see `transport::memory`): `raft_listen` is
    /// only the address it reports, and `secret` and `tls` do not apply.
    pub async fn start_in_memory(
        config: ClusterConfig,
        data_dir: Arc<DataDir>,
        network: &MemoryNetwork,
    ) -> Result<Cluster, ClusterError> {
        Self::start_on(config, data_dir, Some(network)).await
    }

    async fn start_on(
        config: ClusterConfig,
        data_dir: Arc<DataDir>,
        memory: Option<&MemoryNetwork>,
    ) -> Result<Cluster, ClusterError> {
        let dispatcher = Arc::new(Dispatcher::default());
        let mut transport_config = TransportConfig::new(config.node_id, config.raft_listen);
        transport_config.secret = config.secret.clone();
        transport_config.tls = config.tls.clone();
        let bound = match memory {
            None => Transport::bind(transport_config, dispatcher.clone())
                .await
                .map(Network::from),
            Some(net) => net
                .bind(transport_config, dispatcher.clone())
                .map(Network::from),
        };
        let transport = bound
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
        // Unlike a partition's, the controller's state is small and its
        // snapshot carries all of it: compact its log like any Raft log.
        let controller_raft_config = Arc::new(
            openraft::Config {
                snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(
                    config.controller_snapshot_every,
                ),
                max_in_snapshot_log_to_keep: CONTROLLER_LOG_KEPT,
                ..(*raft_config).clone()
            }
            .validate()
            .map_err(|e| ClusterError::Unavailable(format!("controller raft config: {e}")))?,
        );

        let replication_stats = Arc::new(network::ReplicationStats::default());
        let shutdown = CancellationToken::new();
        let (controller, controller_sm) = ControllerGroup::open(
            ControllerDeps {
                node_id: config.node_id,
                data_dir: &data_dir,
                raft_config: &controller_raft_config,
                transport: &transport,
                replication_stats: &replication_stats,
                timings: &timings,
                shutdown: &shutdown,
            },
            None,
        )
        .await?;

        let inner = Arc::new(Inner {
            config: config.clone(),
            raft_addr: raft_addr.clone(),
            transport: transport.clone(),
            data_dir,
            raft_config,
            controller_group: RwLock::new(controller),
            controller_sm,
            controller_raft_config,
            controller_restart: tokio::sync::Mutex::new(()),
            controller_restarts: Arc::default(),
            forwarded_writes: Arc::default(),
            timings,
            replicas: replicas::Replicas::default(),
            edges: parking_lot::Mutex::new(HashMap::new()),
            replication_stats,
            heartbeats: HeartbeatService::new(HeartbeatConfig::default()),
            heartbeat_task: parking_lot::Mutex::new(None),
            anti_entropy: crate::antientropy::AntiEntropy::new(config.anti_entropy.clone()),
            services: RwLock::new(HashMap::new()),
            shutdown,
            retention: Default::default(),
            catchups: catchup::CatchUps::new(config.snapshot_rate_bytes_per_sec),
        });
        let _ = dispatcher.inner.set(Arc::downgrade(&inner));
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
            let controller = cluster.inner.controller();
            let initialized = controller.is_initialized().await.unwrap_or(false);
            let result = if initialized {
                Ok(())
            } else {
                controller.initialize(voters).await
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
        tokio::spawn(crate::antientropy::scheduler::run(cluster.inner.as_host()));
        Ok(cluster)
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.me()
    }

    /// The wall clock the runtime stamps time with ([`ClusterConfig::clock`]).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.config.clock
    }

    /// Counts partition groups restarted after their Raft core stopped on
    /// an error (see the module docs); shared, for metrics.
    pub fn group_restarts(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.inner.replicas.restarts()
    }

    /// Counts restarts of the controller group after its Raft core stopped
    /// on an error (see the module docs); shared, for metrics.
    pub fn controller_restarts(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.inner.controller_restarts.clone()
    }

    /// Counts write batches this node forwarded to a leader on another
    /// node (after coalescing); shared, for metrics. A producer that
    /// routes by leader keeps it still.
    pub fn forwarded_writes(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.inner.forwarded_writes.clone()
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

    /// The node-to-node network: the TCP transport, or a node of an
    /// in-memory network ([`Cluster::start_in_memory`]).
    pub fn transport(&self) -> &Network {
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

    /// The controller group's Raft as it runs now: a restart (see the
    /// module docs) replaces it, so hold the handle briefly.
    pub fn controller(&self) -> Raft<ControllerRaftConfig> {
        self.inner.controller()
    }

    /// The controller group's leader as this node knows it.
    pub fn controller_leader(&self) -> Option<NodeId> {
        self.inner.controller().metrics().borrow().current_leader
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
        crate::antientropy::scheduler::scan_anywhere(
            &self.inner.as_host(),
            group,
            deep,
            crate::antientropy::ScanTrigger::Requested,
        )
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
        crate::antientropy::scheduler::damage_found(&self.inner.as_host(), group);
    }

    /// The partition groups running on this node.
    pub fn groups(&self) -> Vec<Arc<PartitionGroup>> {
        self.inner.replicas.all()
    }

    pub fn group(&self, group: u64) -> Option<Arc<PartitionGroup>> {
        self.inner.replicas.get(group)
    }

    /// Where this node's replica of `group` stands in catching up by
    /// snapshot, while it does.
    pub fn catching_up(&self, group: u64) -> Option<CatchingUp> {
        self.inner.catchups.catching_up(group)
    }
}

/// What anti-entropy sees of the runtime (see [`crate::antientropy::host`]).
impl crate::antientropy::host::Host for Inner {
    fn me(&self) -> NodeId {
        self.config.node_id
    }

    fn anti_entropy(&self) -> &crate::antientropy::AntiEntropy {
        &self.anti_entropy
    }

    fn replica(&self, group: u64) -> Result<Arc<PartitionGroup>, ClusterError> {
        self.group_or_err(group)
    }

    fn stalled_log(&self, group: u64) -> Option<cairn_storage::PartitionLog> {
        self.replicas.stalled_log(group)
    }

    fn replicas(&self) -> Vec<Arc<PartitionGroup>> {
        self.replicas.all()
    }

    fn placed_on(&self, group: u64) -> Vec<NodeId> {
        self.controller_sm
            .meta()
            .partition_of_group(group)
            .map(|p| p.replicas.clone())
            .unwrap_or_default()
    }

    fn group_name(&self, group: u64) -> error::GroupName {
        Inner::group_name(self, group)
    }

    fn request_timeout(&self) -> Duration {
        self.config.request_timeout
    }

    fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    fn unix_ms(&self) -> u64 {
        self.config.clock.unix_ms()
    }

    fn call(
        &self,
        node: NodeId,
        group: u64,
        payload: Bytes,
        deadline: Duration,
    ) -> BoxFuture<'_, Result<Bytes, ClusterError>> {
        Box::pin(self.call_bytes(node, group, kinds::ANTI_ENTROPY, payload, deadline))
    }
}
