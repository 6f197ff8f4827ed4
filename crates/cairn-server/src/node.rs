//! The node: one data directory, the cluster runtime (controller and
//! partition groups), the retention task and the HTTP and binary-protocol
//! servers, with an orderly shutdown.
//!
//! Shutdown order matters for durability: first stop accepting connections
//! and let in-flight requests finish (their appends are acknowledged only
//! once committed), then stop the retention task and the Raft groups, and
//! last shut the data directory down, which syncs every log whatever its
//! durability policy.
//!
//! Both client APIs are served within the node's bounds — connection caps,
//! timeouts, a receive-memory budget ([`crate::limits`]); the guards are
//! made here, shared by both, and their metrics registered.
//!
//! Injected faults (see [`crate::faults`]) are wired here: the data
//! directory's disk fault also delays telemetry's disk probe, and the
//! snapshot lists every fault in force (disk, CPU burn, network rules).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_cluster::{Cluster, ClusterConfig};
use cairn_storage::{DataDir, DataDirOptions};
use cairn_telemetry::metrics::WriteStage;
use cairn_telemetry::{Telemetry, TelemetryOptions};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::faults::CpuBurner;

/// Default cap on a request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 << 20;
/// The largest body cap accepted: one request's entries for one partition
/// must fit in a record batch (64 MiB), and the binary encoding is never
/// larger than the JSON it came from.
pub const MAX_MAX_BODY_BYTES: usize = 48 << 20;
pub const DEFAULT_RETENTION_CHECK: Duration = Duration::from_secs(10);

/// Settings of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// How often retention runs on every partition.
    pub retention_check: Duration,
    /// How long a group directory no partition on this node owns is kept
    /// before it is removed.
    pub orphan_grace: Duration,
    /// Most bytes per second this node fetches to catch replicas up by
    /// snapshot (0: unlimited).
    pub snapshot_rate_bytes_per_sec: u64,
    /// A follower further behind than this many bytes of log is caught up
    /// by snapshot (0: only past retention cuts).
    pub snapshot_behind_bytes: u64,
    /// The controller snapshots its state and purges its log every this
    /// many entries.
    pub controller_snapshot_every: u64,
    /// This node's name in telemetry.
    pub node_name: String,
    /// Sampling, probing and stage-timing settings (data dirs are filled in).
    pub telemetry: TelemetryOptions,
    /// Cluster identity and bootstrap.
    pub cluster: ClusterOptions,
    /// Scans for divergent replicas: interval, rate limit.
    pub anti_entropy: cairn_cluster::antientropy::AntiEntropyConfig,
    /// The cluster monitor: collection period (zero turns it off),
    /// thresholds and alert rules, alert receivers.
    pub monitor: crate::monitor::MonitorOptions,
    /// Who may do what (see [`crate::auth`]); the default allows everything.
    pub access: crate::auth::Access,
    /// Client writes and stream creation are refused (507) while the data
    /// directory's filesystem has less free space than this.
    pub min_free_bytes: u64,
    /// Connection caps, timeouts and the receive budget of the client APIs.
    pub limits: crate::limits::Limits,
    /// TLS on every listener (HTTP, binary protocol, transport) and on the
    /// node's own connections to its peers; `None`: plaintext.
    pub tls: Option<cairn_cluster::tls::NodeTls>,
}

/// How this node finds and forms its cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// This node's id: unique in the cluster, stable across restarts.
    pub node_id: u64,
    /// Where the node-to-node transport listens.
    pub raft_listen: SocketAddr,
    /// Initial controller voters (`id`, transport address), this node
    /// among them. Empty with no `join`: a single-node cluster of its own.
    pub peers: Vec<(u64, String)>,
    /// HTTP URL of a node of an existing cluster to join.
    pub join: Option<String>,
    /// With `join`: take over the id of a member that is down.
    pub replace: bool,
    /// Raft heartbeat, election and RPC timeouts; the same on every node
    /// of a cluster.
    pub raft: cairn_cluster::raft::RaftTimings,
    /// The secret every node-to-node connection must prove; the same on
    /// every node of a cluster. `None`: the transport admits anyone.
    pub secret: Option<cairn_cluster::transport::ClusterSecret>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            node_id: 1,
            raft_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            peers: Vec::new(),
            join: None,
            replace: false,
            raft: cairn_cluster::raft::RaftTimings::default(),
            secret: None,
        }
    }
}

impl NodeConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        NodeConfig {
            data_dir: data_dir.into(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            retention_check: DEFAULT_RETENTION_CHECK,
            orphan_grace: Duration::from_secs(600),
            snapshot_rate_bytes_per_sec: 64_000_000,
            snapshot_behind_bytes: cairn_cluster::cluster::DEFAULT_SNAPSHOT_BEHIND_BYTES,
            controller_snapshot_every: 1000,
            node_name: "node-1".into(),
            telemetry: TelemetryOptions::default(),
            cluster: ClusterOptions::default(),
            anti_entropy: Default::default(),
            monitor: Default::default(),
            access: Default::default(),
            min_free_bytes: cairn_storage::DEFAULT_MIN_FREE_BYTES,
            limits: Default::default(),
            tls: None,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.max_body_bytes == 0 || self.max_body_bytes > MAX_MAX_BODY_BYTES {
            return Err(format!(
                "max_body_bytes must be between 1 and {MAX_MAX_BODY_BYTES} (got {})",
                self.max_body_bytes
            ));
        }
        self.limits
            .validate(self.max_body_bytes + cairn_types::protocol::REQUEST_OVERHEAD)?;
        if self.retention_check.is_zero() {
            return Err("retention_check must be positive".into());
        }
        if self.controller_snapshot_every == 0 {
            return Err("controller_snapshot_every must be positive".into());
        }
        let c = &self.cluster;
        if c.node_id == 0 {
            return Err("node id must be at least 1".into());
        }
        c.raft.validate()?;
        if !c.peers.is_empty() && !c.peers.iter().any(|(id, _)| *id == c.node_id) {
            return Err(format!(
                "peers must include this node (id {}) with its transport address",
                c.node_id
            ));
        }
        if !c.peers.is_empty() && c.join.is_some() {
            return Err("give either peers (bootstrap) or join, not both".into());
        }
        Ok(())
    }
}

/// Marks a request a node forwarded, so the receiver answers itself or
/// fails instead of forwarding again.
pub const FORWARDED: &str = "x-cairn-forwarded";

pub use cairn_types::clock::unix_us as now_us;

/// Shared state of a running node. Cheap to clone.
///
/// Stop it with [`Node::serve`]'s shutdown future (or
/// [`Node::shutdown_storage`]) before the last clone is dropped on an async
/// worker thread: dropping an open data directory there would block on its
/// writer thread.
#[derive(Debug, Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

#[derive(Debug)]
pub(crate) struct NodeInner {
    pub config: NodeConfig,
    pub data_dir: Arc<DataDir>,
    pub cluster: Cluster,
    pub telemetry: Arc<Telemetry>,
    /// The CPU fault's burner threads (idle unless a burn is injected).
    pub cpu: Arc<CpuBurner>,
    pub started: Instant,
    /// For requests forwarded to other nodes; marks them as forwarded.
    pub http: reqwest::Client,
    /// The cluster monitor (absent when turned off).
    pub monitor: Option<crate::monitor::MonitorService>,
    /// Stops the node's background tasks (the monitor) at shutdown.
    pub stop_tasks: CancellationToken,
    /// Connection caps, receive budget, descriptor headroom.
    pub guards: Arc<crate::limits::Guards>,
    /// The client listeners' TLS, when on.
    pub tls_server: Option<Arc<rustls::ServerConfig>>,
}

impl Node {
    /// Opens the data directory (taking its lock), starts the cluster
    /// runtime (which reopens this node's partition groups) and telemetry.
    /// `http_advertise` is the address peers and clients reach the API at.
    pub async fn open(config: NodeConfig, http_advertise: String) -> Result<Node, ApiError> {
        config
            .validate()
            .map_err(|m| ApiError::new(cairn_types::ErrorCode::BadRequest, m))?;
        let path = config.data_dir.clone();
        let min_free_bytes = config.min_free_bytes;
        let data_dir = tokio::task::spawn_blocking(move || {
            DataDir::open(
                &path,
                DataDirOptions {
                    min_free_bytes,
                    ..DataDirOptions::default()
                },
            )
            .map(Arc::new)
        })
        .await??;
        let telemetry = Telemetry::new(TelemetryOptions {
            node: config.node_name.clone(),
            data_dirs: vec![config.data_dir.clone()],
            ..config.telemetry.clone()
        });
        // The probe must feel an injected fsync delay as real writes do: the
        // monitor's slow-disk detector reads the probe.
        let disk_faults = data_dir.faults().clone();
        telemetry.set_disk_probe_delay(Arc::new(move || disk_faults.fsync_delay()));
        let c = &config.cluster;
        let mut cluster_config =
            ClusterConfig::new(c.node_id, c.raft_listen, http_advertise.clone());
        cluster_config.bootstrap = c.peers.clone();
        cluster_config.raft = c.raft.clone();
        cluster_config.solo = c.peers.is_empty() && c.join.is_none();
        cluster_config.anti_entropy = config.anti_entropy.clone();
        cluster_config.orphan_grace = config.orphan_grace;
        cluster_config.snapshot_rate_bytes_per_sec = config.snapshot_rate_bytes_per_sec;
        cluster_config.snapshot_behind_bytes = config.snapshot_behind_bytes;
        cluster_config.controller_snapshot_every = config.controller_snapshot_every;
        cluster_config.secret = c.secret.clone();
        cluster_config.tls = config.tls.clone();
        let observed = telemetry.clone();
        // Storage stages count once per client request the Raft batch
        // carries (control entries carry none), as every other stage does.
        cluster_config.on_append = Some(Arc::new(
            move |t: &cairn_storage::AppendTimings, requests: u32| {
                if requests == 0 {
                    return;
                }
                let m = &observed.metrics;
                m.record_write_n(WriteStage::Queue, t.queued, requests);
                m.record_write_n(WriteStage::Append, t.write, requests);
                if !t.sync.is_zero() {
                    m.record_write_n(WriteStage::Fsync, t.sync, requests);
                }
            },
        ));
        let observed = telemetry.clone();
        cluster_config.on_stage = Some(Arc::new(move |stage, d, requests| {
            observed.metrics.record_write_n(stage, d, requests);
        }));
        let observed = telemetry.clone();
        cluster_config.on_read_stage = Some(Arc::new(move |stage, d| {
            observed.metrics.record_read(stage, d);
        }));
        let cluster = match Cluster::start(cluster_config, data_dir.clone()).await {
            Ok(c) => c,
            Err(e) => {
                let _ = tokio::task::spawn_blocking(move || {
                    telemetry.stop();
                    data_dir.shutdown()
                })
                .await;
                return Err(e.into());
            }
        };
        // Before start, so the first snapshot already has replication.
        telemetry.set_replication_source(cluster.replication_source());
        telemetry
            .start()
            .map_err(|e| ApiError::internal(format!("start telemetry: {e}")))?;
        let mut forwarding_headers = reqwest::header::HeaderMap::new();
        forwarding_headers.insert(
            reqwest::header::HeaderName::from_static(FORWARDED),
            reqwest::header::HeaderValue::from_static("1"),
        );
        if let Some(token) = config.access.forwarding_token() {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| {
                    ApiError::new(
                        cairn_types::ErrorCode::BadRequest,
                        "a token in the token file is not a valid HTTP header value",
                    )
                })?;
            value.set_sensitive(true);
            forwarding_headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut http = cairn_client::tls::http_builder();
        if let Some(tls) = &config.tls {
            // Peers are reached with https and checked against --tls-ca.
            http = http.tls_backend_preconfigured((*tls.client).clone());
        }
        let http = http
            .timeout(Duration::from_secs(10))
            // Below peers' HTTP idle timeout: never reuse a connection a
            // peer is closing.
            .pool_idle_timeout(cairn_types::api::POOL_IDLE_TIMEOUT)
            .default_headers(forwarding_headers)
            .build()
            .map_err(|e| ApiError::internal(format!("http client: {e}")))?;
        // Alert receivers are outside the cluster: they never see a token.
        let receivers_http = cairn_client::tls::http_builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ApiError::internal(format!("http client: {e}")))?;
        let stop_tasks = CancellationToken::new();
        let monitor = if config.monitor.interval.is_zero() {
            None
        } else {
            Some(
                crate::monitor::MonitorService::start(
                    config.monitor.clone(),
                    cluster.clone(),
                    telemetry.clone(),
                    receivers_http,
                    // This node's API, as alerts link to it.
                    &format!(
                        "{}://{http_advertise}",
                        if config.tls.is_some() {
                            "https"
                        } else {
                            "http"
                        }
                    ),
                    stop_tasks.clone(),
                )
                .map_err(|e| ApiError::internal(format!("start the monitor: {e}")))?,
            )
        };
        // Two client listeners at most (HTTP, binary protocol) share the
        // descriptors left for connections.
        let guards = Arc::new(crate::limits::Guards::new(
            &config.limits,
            config.max_body_bytes + cairn_types::protocol::REQUEST_OVERHEAD,
            2,
            Some(Arc::downgrade(&telemetry)),
        ));
        crate::limits::register_metrics(
            &telemetry,
            Arc::downgrade(&guards),
            crate::limits::ClusterCounters {
                partition_groups: cluster.group_restarts(),
                controller: cluster.controller_restarts(),
                forwarded_writes: cluster.forwarded_writes(),
            },
        );
        crate::limits::spawn_sampler(Arc::downgrade(&guards));
        crate::limits::register_transport_metrics(&telemetry, cluster.transport());
        let tls_server = config.tls.as_ref().map(|t| t.server.clone());
        let node = Node {
            inner: Arc::new(NodeInner {
                config,
                data_dir,
                cluster,
                telemetry,
                cpu: Arc::new(CpuBurner::default()),
                started: Instant::now(),
                http,
                monitor,
                stop_tasks,
                guards,
                tls_server,
            }),
        };
        // Weak: telemetry is owned by the node and must not keep it alive.
        let weak = Arc::downgrade(&node.inner);
        node.telemetry().set_fault_lister(Arc::new(move || {
            weak.upgrade().map_or_else(Vec::new, |n| {
                let network = crate::faults::network_views(n.cluster.transport().faults());
                crate::faults::list(n.data_dir.faults(), &n.cpu, &network)
            })
        }));
        // A restarted member has the metadata on disk and re-registers its
        // (possibly new) addresses over the transport by itself; joining
        // again through HTTP would be refused as a different process
        // claiming its id.
        let member = node
            .cluster()
            .meta()
            .nodes
            .contains_key(&node.cluster().node_id());
        match node.config().cluster.join.clone() {
            Some(_) if member => {
                tracing::info!("already a member of the cluster; not joining again")
            }
            Some(seed) => node.join(&seed, http_advertise).await?,
            None => {}
        }
        // A node on its own can serve at once: wait (briefly) until it has
        // registered, so a stream created right away has a node to live on.
        // Bootstrapping nodes cannot wait here: registration needs a
        // majority of them, and they start one after another.
        let c = &node.config().cluster;
        if (c.peers.is_empty() || c.join.is_some())
            && !node
                .cluster()
                .wait_registered(Duration::from_secs(10))
                .await
        {
            tracing::warn!("not registered with the controller after 10 s; continuing");
        }
        Ok(node)
    }

    /// Asks the cluster behind `seed` (an HTTP URL) to add this node,
    /// retrying for a while: the seed may be starting too.
    async fn join(&self, seed: &str, http_addr: String) -> Result<(), ApiError> {
        let request = cairn_types::api::JoinRequest {
            id: self.cluster().node_id(),
            raft_addr: self.cluster().raft_addr().to_owned(),
            http_addr,
            replace: self.config().cluster.replace,
        };
        let url = format!("{}/v1/cluster/join", seed.trim_end_matches('/'));
        let mut last = String::new();
        for _ in 0..50 {
            match self.inner.http.post(&url).json(&request).send().await {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(seed, "joined the cluster");
                    return Ok(());
                }
                // Refused for good (the id is a live member's; this node
                // failed the transport handshake: no or another secret).
                Ok(r)
                    if r.status() == reqwest::StatusCode::CONFLICT
                        || r.status() == reqwest::StatusCode::FORBIDDEN =>
                {
                    return Err(ApiError::new(
                        cairn_types::ErrorCode::Conflict,
                        format!(
                            "the cluster refused to admit this node: {}",
                            r.text().await.unwrap_or_default()
                        ),
                    ));
                }
                Ok(r) => last = format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(ApiError::new(
            cairn_types::ErrorCode::Unavailable,
            format!("could not join through {seed}: {last}"),
        ))
    }

    pub fn cluster(&self) -> &Cluster {
        &self.inner.cluster
    }

    pub fn data_dir(&self) -> &DataDir {
        &self.inner.data_dir
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.inner.telemetry
    }

    /// Connection caps, receive budget and descriptor headroom.
    pub fn guards(&self) -> &Arc<crate::limits::Guards> {
        &self.inner.guards
    }

    /// The client listeners' TLS, when on (an acceptor is an `Arc`).
    pub fn tls_acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.inner
            .tls_server
            .as_ref()
            .map(|c| tokio_rustls::TlsAcceptor::from(c.clone()))
    }

    /// The base URL of a peer's HTTP API at `http_addr` (`IP:PORT`): https
    /// when this node has TLS on (a cluster is all TLS or none).
    pub fn peer_url(&self, http_addr: &str) -> String {
        let scheme = if self.config().tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{http_addr}")
    }

    /// The cluster monitor, unless it is turned off.
    pub fn monitor(&self) -> Option<&crate::monitor::MonitorService> {
        self.inner.monitor.as_ref()
    }

    /// The disk fault injected into this node's data directory.
    pub fn disk_faults(&self) -> &Arc<cairn_storage::DiskFaults> {
        self.inner.data_dir.faults()
    }

    /// The CPU fault's burner.
    pub fn cpu_burner(&self) -> &Arc<CpuBurner> {
        &self.inner.cpu
    }

    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Stops the Raft groups and telemetry, syncs every log and stops the
    /// storage writer. Further appends fail.
    pub async fn shutdown_storage(&self) -> Result<(), ApiError> {
        self.inner.stop_tasks.cancel();
        self.inner.cluster.shutdown().await;
        let data_dir = self.inner.data_dir.clone();
        let telemetry = self.inner.telemetry.clone();
        let cpu = self.inner.cpu.clone();
        tokio::task::spawn_blocking(move || {
            cpu.stop();
            telemetry.stop();
            data_dir.shutdown()
        })
        .await??;
        Ok(())
    }

    /// Runs retention once on every partition replica of this node: the
    /// leaders decide cuts through Raft, every replica purges up to the
    /// cut it applied (see `cairn_cluster`'s `retention`).
    pub async fn enforce_retention(&self) {
        self.cluster().enforce_retention(now_us()).await;
    }
}

/// Enforces retention every `retention_check` until `stop` changes.
pub(crate) async fn retention_loop(node: Node, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(node.config().retention_check);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick fires at once; skip it so startup is not slowed.
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => node.enforce_retention().await,
            _ = stop.changed() => return,
        }
    }
}
