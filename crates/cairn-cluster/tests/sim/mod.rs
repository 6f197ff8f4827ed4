//! `SimCluster`: a whole Cairn cluster in one test process.
//!
//! N nodes run the real cluster runtime ([`Cluster`]: controller, partition
//! groups, Raft, leadership, membership, write routing, reads) on an
//! in-memory network ([`MemoryNetwork`]) instead of TCP, each with a real
//! data directory (real files, real fsync) in a temporary directory. The
//! harness creates streams, writes through any node as clients do
//! (`Cluster::append`), cuts and heals the network with each node's fault
//! filter (partitions, drops, delays), and stops and restarts nodes: a
//! stop makes the node unreachable at once (as a killed process's sockets
//! close), then shuts its runtime and storage down; a restart reopens its
//! data directory and starts a new runtime (a new incarnation) on it.
//!
//! What it cannot do is crash a process: a stop syncs the logs. Losing
//! what was never fsynced (kill -9), disks that fail or fill, and the
//! binaries themselves stay with the real-process tests
//! (`crates/cairn/tests`).
#![allow(dead_code)] // each test file uses a different subset

pub mod check;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use cairn_cluster::cluster::PartitionGroup;
use cairn_cluster::controller::meta::StreamMeta;
use cairn_cluster::controller::{ControllerCommand, ControllerResponse};
use cairn_cluster::raft::RaftTimings;
use cairn_cluster::transport::{FaultRule, MemoryNetwork, NodeId};
use cairn_cluster::{Cluster, ClusterConfig};
use cairn_storage::{DataDir, DataDirOptions, LogConfig};
use cairn_types::RecordBatch;
use cairn_types::clock::ManualClock;
use parking_lot::RwLock;
use tokio::time::Instant;

/// Raft timings of simulated clusters: faster than the defaults (which
/// allow 300 ms links), so a schedule's failovers take a few hundred ms.
pub fn sim_timings() -> RaftTimings {
    RaftTimings {
        heartbeat: Duration::from_millis(50),
        election_timeout: (Duration::from_millis(300), Duration::from_millis(600)),
        rpc_timeout_floor: Duration::from_millis(60),
        rpc_timeout_max: Duration::from_millis(250),
        install_snapshot_timeout: Duration::from_secs(10),
    }
}

/// The address node `id` reports (nothing listens there).
pub fn sim_addr(id: NodeId) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, id as u8], 7000))
}

/// The running nodes, shared with client tasks.
#[derive(Clone, Default)]
pub struct Running(Arc<RwLock<BTreeMap<NodeId, Cluster>>>);

impl Running {
    /// Node `id`'s runtime, while it runs.
    pub fn get(&self, id: NodeId) -> Option<Cluster> {
        self.0.read().get(&id).cloned()
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.0.read().keys().copied().collect()
    }

    /// Any running node's runtime.
    pub fn any(&self) -> Option<Cluster> {
        self.0.read().values().next().cloned()
    }
}

struct SimNode {
    dir: PathBuf,
    data_dir: Option<Arc<DataDir>>,
}

/// See the module docs.
pub struct SimCluster {
    pub net: MemoryNetwork,
    pub running: Running,
    nodes: BTreeMap<NodeId, SimNode>,
    /// Rules the harness installed, by node: a restarted node gets its own
    /// back (its new transport starts with an empty filter).
    faults: HashMap<NodeId, Vec<FaultRule>>,
    timings: RaftTimings,
    request_timeout: Duration,
    /// Every node's wall clock: it stands still unless a test moves it.
    pub clock: ManualClock,
    _tmp: tempfile::TempDir,
}

/// Where the nodes' wall clock starts: 2026-01-01T00:00:00Z.
pub const SIM_EPOCH: Duration = Duration::from_secs(1_767_225_600);

impl SimCluster {
    /// Starts nodes 1..=n, all bootstrap voters of the controller, and
    /// waits until every one is registered.
    pub async fn start(n: u64) -> Result<SimCluster> {
        let tmp = tempfile::tempdir()?;
        let nodes = (1..=n)
            .map(|id| {
                let dir = tmp.path().join(format!("node-{id}"));
                (
                    id,
                    SimNode {
                        dir,
                        data_dir: None,
                    },
                )
            })
            .collect();
        let mut sim = SimCluster {
            net: MemoryNetwork::new(),
            running: Running::default(),
            nodes,
            faults: HashMap::new(),
            timings: sim_timings(),
            request_timeout: Duration::from_secs(2),
            clock: ManualClock::new(SIM_EPOCH),
            _tmp: tmp,
        };
        for id in 1..=n {
            sim.boot(id).await?;
        }
        for id in 1..=n {
            let c = sim.running.get(id).expect("just started");
            if !c.wait_registered(Duration::from_secs(20)).await {
                bail!("node {id} did not register within 20 s");
            }
        }
        Ok(sim)
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn is_running(&self, id: NodeId) -> bool {
        self.running.get(id).is_some()
    }

    fn config(&self, id: NodeId) -> ClusterConfig {
        let mut c = ClusterConfig::new(id, sim_addr(id), format!("10.0.0.{id}:8000"));
        c.bootstrap = self
            .nodes
            .keys()
            .map(|&n| (n, sim_addr(n).to_string()))
            .collect();
        c.raft = self.timings.clone();
        c.request_timeout = self.request_timeout;
        c.clock = Arc::new(self.clock.clone());
        c
    }

    async fn boot(&mut self, id: NodeId) -> Result<()> {
        let node = self.nodes.get(&id).context("no such node")?;
        let dir = node.dir.clone();
        let data_dir = tokio::task::spawn_blocking(move || {
            DataDir::open(
                &dir,
                DataDirOptions {
                    preallocate_bytes: 256 << 10,
                    // Not what these tests are about: a busy CI disk must
                    // not refuse their writes.
                    min_free_bytes: 0,
                    ..DataDirOptions::default()
                },
            )
        })
        .await??;
        let data_dir = Arc::new(data_dir);
        let cluster = Cluster::start_in_memory(self.config(id), data_dir.clone(), &self.net)
            .await
            .with_context(|| format!("start node {id}"))?;
        for rule in self.faults.get(&id).into_iter().flatten() {
            cluster.transport().faults().add(rule.clone());
        }
        self.nodes.get_mut(&id).expect("checked").data_dir = Some(data_dir);
        self.running.0.write().insert(id, cluster);
        Ok(())
    }

    /// Stops node `id`: unreachable at once, then its runtime and storage
    /// shut down (logs synced). No-op if it is not running.
    pub async fn stop(&mut self, id: NodeId) {
        let Some(cluster) = self.running.0.write().remove(&id) else {
            return;
        };
        self.net.kill(id);
        cluster.shutdown().await;
        drop(cluster);
        if let Some(data_dir) = self.nodes.get_mut(&id).and_then(|n| n.data_dir.take()) {
            let _ = tokio::task::spawn_blocking(move || data_dir.shutdown()).await;
        }
    }

    /// Starts node `id` again from its data directory.
    pub async fn restart(&mut self, id: NodeId) -> Result<()> {
        if self.is_running(id) {
            return Ok(());
        }
        self.boot(id).await
    }

    /// Installs `rule` in node `on`'s fault filter (kept across restarts
    /// until [`SimCluster::heal`]).
    pub fn add_fault(&mut self, on: NodeId, rule: FaultRule) {
        if let Some(c) = self.running.get(on) {
            c.transport().faults().add(rule.clone());
        }
        self.faults.entry(on).or_default().push(rule);
    }

    /// Cuts `side` off from every other node, both ways.
    pub fn partition(&mut self, side: &[NodeId]) {
        let rest: Vec<NodeId> = self
            .ids()
            .into_iter()
            .filter(|n| !side.contains(n))
            .collect();
        for &a in side {
            self.add_fault(a, FaultRule::partition(rest.iter().copied()));
        }
        for &b in &rest {
            self.add_fault(b, FaultRule::partition(side.iter().copied()));
        }
    }

    /// Removes every fault rule the harness installed.
    pub fn heal(&mut self) {
        self.faults.clear();
        for id in self.running.ids() {
            if let Some(c) = self.running.get(id) {
                c.transport().faults().clear();
            }
        }
    }

    /// Creates a stream through any running node and waits until every
    /// running node has it and each partition has a leader.
    pub async fn create_stream(&self, name: &str, partitions: u32, rf: u32) -> Result<StreamMeta> {
        let c = self.running.any().context("no node runs")?;
        let response = c
            .command(ControllerCommand::CreateStream {
                name: name.to_owned(),
                partitions,
                replication_factor: Some(rf),
                log: LogConfig {
                    // Small segments, so schedules roll a few.
                    segment_bytes: 64 << 10,
                    ..LogConfig::default()
                },
                created_us: c.clock().unix_us(),
            })
            .await?;
        let ControllerResponse::StreamCreated(meta) = response else {
            bail!("create answered {response:?}");
        };
        for id in self.running.ids() {
            let c = self.running.get(id).expect("running");
            if !c
                .wait_meta(Duration::from_secs(10), |m| m.streams.contains_key(name))
                .await
            {
                bail!("node {id} did not learn of stream {name}");
            }
        }
        self.wait_leaders(&meta, Duration::from_secs(20)).await?;
        Ok(meta)
    }

    /// Waits until every partition of `stream` has a leader that its
    /// running replicas agree on.
    pub async fn wait_leaders(&self, stream: &StreamMeta, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let missing: Vec<u32> = (0..stream.partitions.len() as u32)
                .filter(|&p| self.agreed_leader(stream, p).is_none())
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("partitions {missing:?} of {} have no leader", stream.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The leader of partition `p` if every running replica names it and
    /// it runs and leads.
    pub fn agreed_leader(&self, stream: &StreamMeta, p: u32) -> Option<NodeId> {
        let meta = &stream.partitions[p as usize];
        let mut leader = None;
        for &r in &meta.replicas {
            let Some(c) = self.running.get(r) else {
                continue;
            };
            let l = c.group(meta.group)?.leader()?;
            if leader.is_some_and(|x| x != l) {
                return None;
            }
            leader = Some(l);
        }
        let l = leader?;
        self.running
            .get(l)?
            .group(meta.group)?
            .is_leader()
            .then_some(l)
    }

    /// Waits until every replica of partition `p` runs and holds the same
    /// log as its leader, all of it applied; then returns each replica's
    /// data batches (from the start up to the applied end), by node.
    pub async fn converged(
        &self,
        stream: &StreamMeta,
        p: u32,
        within: Duration,
    ) -> Result<BTreeMap<NodeId, Vec<RecordBatch>>> {
        let meta = &stream.partitions[p as usize];
        let deadline = Instant::now() + within;
        loop {
            let state = self.replica_states(meta.group, &meta.replicas);
            let why = match &state {
                Err(e) => e.clone(),
                Ok(states) => {
                    let first = states.values().next().expect("replicas");
                    if states.values().all(|s| s == first) && first.0 == first.1 {
                        break;
                    }
                    format!("replicas differ: {states:?}")
                }
            };
            if Instant::now() >= deadline {
                bail!(
                    "partition {p} of {} did not converge within {within:?}: {why}",
                    stream.name
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut out = BTreeMap::new();
        for &r in &meta.replicas {
            let g = self
                .running
                .get(r)
                .and_then(|c| c.group(meta.group))
                .ok_or_else(|| anyhow!("replica {r} went away"))?;
            out.insert(r, data_batches(&g)?);
        }
        Ok(out)
    }

    /// Per replica: (last log index, last applied index, applied end
    /// offset); an error naming what is not there yet.
    fn replica_states(
        &self,
        group: u64,
        replicas: &[NodeId],
    ) -> Result<BTreeMap<NodeId, (u64, u64, u64)>, String> {
        let mut out = BTreeMap::new();
        for &r in replicas {
            let c = self
                .running
                .get(r)
                .ok_or_else(|| format!("replica {r} is not running"))?;
            let g = c
                .group(group)
                .ok_or_else(|| format!("replica {r} does not run the group"))?;
            g.leader()
                .ok_or_else(|| format!("replica {r} knows no leader"))?;
            let last = g.log.last_index().unwrap_or(0);
            let applied = g
                .raft
                .metrics()
                .borrow()
                .last_applied
                .map_or(0, |l| l.index);
            out.insert(r, (last, applied, g.state.applied_end_offset()));
        }
        Ok(out)
    }

    /// Stops every node (and removes the data directories).
    pub async fn shutdown(mut self) {
        for id in self.ids() {
            self.stop(id).await;
        }
    }
}

/// A replica's data batches from the start of its log up to what it has
/// applied (what it may serve).
pub fn data_batches(g: &PartitionGroup) -> Result<Vec<RecordBatch>> {
    let end = g.state.applied_end_offset();
    let (start, _) = g.log.bounds();
    let mut out = Vec::new();
    g.log.scan_from(start, |b| {
        if b.base_offset() >= end {
            return std::ops::ControlFlow::Break(());
        }
        out.push(b);
        std::ops::ControlFlow::Continue(())
    })?;
    Ok(out)
}
