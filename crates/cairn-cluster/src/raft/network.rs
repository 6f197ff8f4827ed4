//! Raft RPCs over the node transport.
//!
//! Every group's RPCs share the one connection per node pair: the frame
//! header names the group and the kind ([`kinds`]), the payload is the
//! postcard-encoded openraft request. Entries hold their batches as
//! [`bytes::Bytes`], so a batch is copied into the frame once and not
//! re-encoded.
//!
//! Transport failures map onto openraft's retry semantics: a peer we
//! cannot reach (or whose connection dropped) is `Unreachable` (openraft
//! backs off), a deadline is `Timeout`, and a Raft error raised by the
//! remote handler comes back as `RemoteError`.
//!
//! Every AppendEntries RPC that carries entries is timed per target node
//! into the node's [`ReplicationStats`] (send, follower append and fsync,
//! ack): heartbeats are left out so the histogram shows what writes wait
//! for, not idle round trips.
//!
//! # RPC deadlines
//!
//! openraft hands each call an [`RPCOption`] whose `hard_ttl` is the most
//! it will wait (the RPC ceiling for AppendEntries, the minimum election
//! timeout for votes; see [`super::timing`]). Within that, the deadline of
//! a replication or vote RPC follows the target's recent round trips:
//! every answered call and every ping probe of the link goes into a small
//! window per peer ([`RecentRtt`]); a call that timed out counts as a round
//! trip of its whole deadline, so after a timeout the next deadline is
//! larger (×[`super::timing::RTT_MULTIPLIER`]) until it reaches the
//! ceiling. [`super::timing::RaftTimings::rpc_timeout`] has the formula and
//! a worked example.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_telemetry::histogram::LatencyHistogram;
use cairn_telemetry::probe::SlowScore;
use cairn_telemetry::replication::PeerReplication;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError as RaftRemoteError,
    Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{Raft, RaftTypeConfig};
use parking_lot::RwLock;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::raft::leadership::ElectionHints;
use crate::raft::timing::RaftTimings;
use crate::raft::types::NodeInfo;
use crate::transport::{Network, NodeId, RemoteError, TransportError};

/// Frame kinds of Raft RPCs (the group id is in the frame header).
pub mod kinds {
    pub const APPEND_ENTRIES: u16 = 10;
    pub const VOTE: u16 = 11;
    pub const INSTALL_SNAPSHOT: u16 = 12;
}

/// Remote error code for a payload the handler could not decode.
pub const BAD_RPC: u16 = 400;
/// Remote error code for a group this node does not run (yet, or any more).
pub const NO_SUCH_GROUP: u16 = 404;
/// A follower is fetching the data of the snapshot it was sent (see
/// `cluster::catchup`); the leader backs off and sends it again.
pub const CATCHING_UP: u16 = 503;

/// Replication RPCs to one peer node, over all of this node's groups, and
/// the ping probes of the link to it.
#[derive(Debug)]
pub struct PeerRpcStats {
    /// AppendEntries RPCs with entries that got an answer.
    pub latency: LatencyHistogram,
    /// Such RPCs that got none (unreachable, timeout, undecodable reply).
    pub failures: AtomicU64,
    /// Ping probe round trips that got an answer.
    pub probe: LatencyHistogram,
    /// Probes that got none within their deadline.
    pub probe_failures: AtomicU64,
    /// The link's slow score from the probes.
    pub slow: parking_lot::Mutex<SlowScore>,
    /// Recent round trips (probes and Raft RPCs), for RPC deadlines.
    pub recent: RecentRtt,
}

/// The last [`RecentRtt::WINDOW`] round trips to one peer. At one probe per
/// 100 ms plus the Raft RPCs, the window covers the last few seconds, so a
/// link that slows down (or heals) shows within about a second.
#[derive(Debug, Default)]
pub struct RecentRtt {
    samples: parking_lot::Mutex<std::collections::VecDeque<Duration>>,
}

impl RecentRtt {
    pub const WINDOW: usize = 64;

    pub fn record(&self, rtt: Duration) {
        let mut s = self.samples.lock();
        if s.len() == Self::WINDOW {
            s.pop_front();
        }
        s.push_back(rtt);
    }

    /// The 99th percentile (nearest rank) of the window; `None` when empty.
    /// Over 64 samples that is the slowest one: deadlines err long.
    pub fn p99(&self) -> Option<Duration> {
        let mut v: Vec<Duration> = self.samples.lock().iter().copied().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let rank = (v.len() * 99).div_ceil(100);
        Some(v[rank.saturating_sub(1)])
    }
}

/// A probe slower than this counts against the link's slow score. Loopback
/// and LAN round trips are well under a millisecond; 100 ms means the peer
/// or the link is in trouble.
pub const PEER_PROBE_TIMEOUT: Duration = Duration::from_millis(100);

impl Default for PeerRpcStats {
    fn default() -> Self {
        PeerRpcStats {
            latency: LatencyHistogram::default(),
            failures: AtomicU64::new(0),
            probe: LatencyHistogram::default(),
            probe_failures: AtomicU64::new(0),
            // Rounds of 10 probes (1 s at one per 100 ms); 30 s from the
            // worst score back to healthy, as for disks.
            slow: parking_lot::Mutex::new(SlowScore::new(
                PEER_PROBE_TIMEOUT,
                10,
                Duration::from_secs(1),
                Duration::from_secs(30),
            )),
            recent: RecentRtt::default(),
        }
    }
}

impl PeerRpcStats {
    /// Records one ping probe: its round trip, or `None` if it got no answer.
    pub fn record_probe(&self, took: Option<Duration>) {
        match took {
            Some(d) => {
                self.probe.record(d);
                self.recent.record(d);
            }
            None => {
                self.probe_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.slow.lock().record(took);
    }
}

/// Per-peer replication RPC statistics of one node, shared by every group's
/// network. Keyed by peer id only, so its size is bounded by the cluster.
#[derive(Debug, Default)]
pub struct ReplicationStats {
    peers: RwLock<BTreeMap<NodeId, Arc<PeerRpcStats>>>,
}

impl ReplicationStats {
    /// The statistics of `peer`, created on first use.
    pub fn peer(&self, peer: NodeId) -> Arc<PeerRpcStats> {
        if let Some(p) = self.peers.read().get(&peer) {
            return p.clone();
        }
        self.peers.write().entry(peer).or_default().clone()
    }

    /// Snapshots for the telemetry report, by peer id.
    pub fn report(&self) -> Vec<PeerReplication> {
        self.peers
            .read()
            .iter()
            .map(|(node, p)| PeerReplication {
                node: *node,
                rpc: p.latency.snapshot(),
                rpc_failures: p.failures.load(Ordering::Relaxed),
                probe: p.probe.snapshot(),
                probe_failures: p.probe_failures.load(Ordering::Relaxed),
                slow_score: p.slow.lock().value(),
                ..PeerReplication::default()
            })
            .collect()
    }
}

/// Makes a [`GroupNetwork`] per target for one Raft group.
#[derive(Debug, Clone)]
pub struct GroupNetworkFactory<C> {
    transport: Network,
    group: u64,
    stats: Arc<ReplicationStats>,
    timings: Arc<RaftTimings>,
    hints: Arc<ElectionHints>,
    _config: PhantomData<fn() -> C>,
}

impl<C> GroupNetworkFactory<C> {
    pub fn new(transport: impl Into<Network>, group: u64, stats: Arc<ReplicationStats>) -> Self {
        Self {
            transport: transport.into(),
            group,
            stats,
            timings: Arc::default(),
            hints: Arc::default(),
            _config: PhantomData,
        }
    }

    /// What this group's vote replies show, for its leadership task.
    pub fn election_hints(&self) -> Arc<ElectionHints> {
        self.hints.clone()
    }

    /// Deadlines from these timings instead of the defaults.
    pub fn with_timings(mut self, timings: Arc<RaftTimings>) -> Self {
        self.timings = timings;
        self
    }
}

impl<C> RaftNetworkFactory<C> for GroupNetworkFactory<C>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = NodeInfo>,
{
    type Network = GroupNetwork<C>;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Self::Network {
        // Membership is where addresses come from: keep the transport's peer
        // table in step with it (an unparsable address leaves the table as
        // is; calls then fail as unreachable and openraft retries).
        if let Ok(addr) = node.raft_addr.parse::<SocketAddr>()
            && self.transport.peers().get(&target).copied().flatten() != Some(addr)
        {
            self.transport.set_peer(target, addr);
        }
        GroupNetwork {
            transport: self.transport.clone(),
            group: self.group,
            target,
            stats: self.stats.peer(target),
            timings: self.timings.clone(),
            hints: self.hints.clone(),
            _config: PhantomData,
        }
    }
}

/// Sends one group's RPCs to one target node.
#[derive(Debug)]
pub struct GroupNetwork<C> {
    transport: Network,
    group: u64,
    target: NodeId,
    stats: Arc<PeerRpcStats>,
    timings: Arc<RaftTimings>,
    hints: Arc<ElectionHints>,
    _config: PhantomData<fn() -> C>,
}

impl<C> GroupNetwork<C>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = NodeInfo>,
{
    /// The deadline of a replication or vote RPC to this target: from its
    /// recent round trips, within what openraft allows (`option`).
    fn deadline(&self, option: &RPCOption) -> Duration {
        self.timings
            .rpc_timeout(self.stats.recent.p99(), option.hard_ttl())
    }

    /// Feeds one call's outcome into the target's recent round trips.
    fn observe<T, E>(
        &self,
        started: Instant,
        ttl: Duration,
        result: &Result<T, RPCError<NodeId, NodeInfo, E>>,
    ) where
        E: std::error::Error,
    {
        match result {
            Ok(_) | Err(RPCError::RemoteError(_)) => self.stats.recent.record(started.elapsed()),
            // At least this slow: the next deadline grows.
            Err(RPCError::Timeout(_)) => self.stats.recent.record(ttl),
            Err(_) => {}
        }
    }

    async fn rpc<Req, Resp, E>(
        &self,
        kind: u16,
        action: RPCTypes,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload = postcard::to_allocvec(req)
            .map(Bytes::from)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let reply = self
            .transport
            .call(self.target, self.group, kind, payload, ttl)
            .await
            .map_err(|e| match e {
                TransportError::Timeout { .. } => RPCError::Timeout(Timeout {
                    action,
                    id: self.transport.node_id(),
                    target: self.target,
                    timeout: ttl,
                }),
                other => RPCError::Unreachable(Unreachable::new(&other)),
            })?;
        let answer: Result<Resp, RaftError<NodeId, E>> =
            postcard::from_bytes(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        answer.map_err(|e| RPCError::RemoteError(RaftRemoteError::new(self.target, e)))
    }
}

impl<C> RaftNetwork<C> for GroupNetwork<C>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = NodeInfo>,
{
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        let carries_entries = !rpc.entries.is_empty();
        let started = Instant::now();
        let ttl = self.deadline(&option);
        let result = self
            .rpc(kinds::APPEND_ENTRIES, RPCTypes::AppendEntries, &rpc, ttl)
            .await;
        self.observe(started, ttl, &result);
        if carries_entries {
            match &result {
                // Any answer (also a conflict or a higher vote) is a
                // completed round trip through the follower's log.
                Ok(_) | Err(RPCError::RemoteError(_)) => {
                    self.stats.latency.record(started.elapsed())
                }
                Err(_) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        result
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc(
            kinds::INSTALL_SNAPSHOT,
            RPCTypes::InstallSnapshot,
            &rpc,
            option.hard_ttl(),
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        let started = Instant::now();
        let ttl = self.deadline(&option);
        let result: Result<VoteResponse<NodeId>, _> =
            self.rpc(kinds::VOTE, RPCTypes::Vote, &rpc, ttl).await;
        self.observe(started, ttl, &result);
        if let Ok(reply) = &result
            && reply.last_log_id > rpc.last_log_id
        {
            self.hints.saw_greater_log();
        }
        result
    }
}

/// Answers one Raft RPC frame addressed to `raft`'s group: decodes the
/// request, hands it to openraft and encodes its `Result` for the caller.
pub async fn serve_rpc<C>(raft: &Raft<C>, kind: u16, payload: &[u8]) -> Result<Bytes, RemoteError>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = NodeInfo>,
{
    fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, RemoteError> {
        postcard::from_bytes(payload)
            .map_err(|e| RemoteError::new(BAD_RPC, format!("undecodable raft rpc: {e}")))
    }
    fn encode<T: Serialize>(value: &T) -> Result<Bytes, RemoteError> {
        postcard::to_allocvec(value)
            .map(Bytes::from)
            .map_err(|e| RemoteError::new(BAD_RPC, format!("unencodable raft reply: {e}")))
    }
    match kind {
        kinds::APPEND_ENTRIES => encode(&raft.append_entries(decode(payload)?).await),
        kinds::VOTE => encode(&raft.vote(decode(payload)?).await),
        kinds::INSTALL_SNAPSHOT => encode(&raft.install_snapshot(decode(payload)?).await),
        other => Err(RemoteError::new(
            BAD_RPC,
            format!("unknown raft rpc kind {other}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use futures::FutureExt;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};

    use super::*;
    use crate::raft::types::PartitionRaftConfig;
    use crate::transport::{Transport, TransportConfig, handler_fn};

    const FOLLOWER_DELAY: Duration = Duration::from_millis(20);

    /// A follower that takes `FOLLOWER_DELAY` to "append and fsync" and
    /// then accepts every AppendEntries.
    async fn follower(id: NodeId) -> Transport {
        let handler = handler_fn(|_, _, _, _| {
            async {
                tokio::time::sleep(FOLLOWER_DELAY).await;
                let ok: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
                    Ok(AppendEntriesResponse::Success);
                Ok(Bytes::from(postcard::to_allocvec(&ok).unwrap()))
            }
            .boxed()
        });
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Transport::bind(TransportConfig::new(id, loopback), handler)
            .await
            .unwrap()
    }

    fn request(entries: u64) -> AppendEntriesRequest<PartitionRaftConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries: (0..entries)
                .map(|i| Entry {
                    log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
                    payload: EntryPayload::Blank,
                })
                .collect(),
            leader_commit: None,
        }
    }

    #[tokio::test]
    async fn only_rpcs_carrying_entries_are_timed_per_target() {
        let peer = follower(2).await;
        let leader = follower(1).await;
        let stats = Arc::new(ReplicationStats::default());
        let mut factory =
            GroupNetworkFactory::<PartitionRaftConfig>::new(leader.clone(), 7, stats.clone());
        let info = |addr: String| NodeInfo {
            raft_addr: addr,
            http_addr: String::new(),
        };
        let mut to_peer = factory
            .new_client(2, &info(peer.local_addr().to_string()))
            .await;
        let option = RPCOption::new(Duration::from_secs(5));
        // A heartbeat: not timed.
        to_peer
            .append_entries(request(0), option.clone())
            .await
            .unwrap();
        to_peer
            .append_entries(request(3), option.clone())
            .await
            .unwrap();
        // A peer with no usable address: the RPC fails and is counted.
        let mut to_nowhere = factory.new_client(3, &info("nowhere".into())).await;
        assert!(to_nowhere.append_entries(request(1), option).await.is_err());

        let report = stats.report();
        assert_eq!(report.len(), 2);
        let (two, three) = (&report[0], &report[1]);
        assert_eq!((two.node, two.rpc.count(), two.rpc_failures), (2, 1, 0));
        assert!(two.rpc.sum() >= FOLLOWER_DELAY, "{:?}", two.rpc.sum());
        assert_eq!(
            (three.node, three.rpc.count(), three.rpc_failures),
            (3, 0, 1)
        );
        peer.shutdown().await;
        leader.shutdown().await;
    }

    #[test]
    fn recent_rtt_p99_is_the_slowest_of_a_full_window() {
        let r = RecentRtt::default();
        assert_eq!(r.p99(), None);
        for ms in 1..=200u64 {
            r.record(Duration::from_millis(ms));
        }
        // Only the last 64 (137..=200 ms) are kept.
        assert_eq!(r.p99(), Some(Duration::from_millis(200)));
        r.record(Duration::from_millis(1));
        assert_eq!(r.p99(), Some(Duration::from_millis(200)));
    }

    #[tokio::test]
    async fn a_timed_out_rpc_lengthens_the_next_deadline_until_calls_succeed() {
        let peer = follower(2).await;
        let leader = follower(1).await;
        // A floor far below the follower's 20 ms: the first call times out.
        let timings = Arc::new(RaftTimings {
            rpc_timeout_floor: Duration::from_millis(5),
            ..RaftTimings::default()
        });
        let mut factory = GroupNetworkFactory::<PartitionRaftConfig>::new(
            leader.clone(),
            7,
            Arc::new(ReplicationStats::default()),
        )
        .with_timings(timings);
        let info = NodeInfo {
            raft_addr: peer.local_addr().to_string(),
            http_addr: String::new(),
        };
        let mut to_peer = factory.new_client(2, &info).await;
        let option = RPCOption::new(Duration::from_millis(350));
        let mut outcomes = Vec::new();
        for _ in 0..6 {
            let r = to_peer.append_entries(request(1), option.clone()).await;
            let ok = r.is_ok();
            outcomes.push(ok);
            if ok {
                break;
            }
            assert!(matches!(r, Err(RPCError::Timeout(_))), "{r:?}");
        }
        // 5 ms, then 15, 45, ... (3 × the timed-out deadline).
        assert_eq!(outcomes.first(), Some(&false), "{outcomes:?}");
        assert_eq!(outcomes.last(), Some(&true), "{outcomes:?}");
        peer.shutdown().await;
        leader.shutdown().await;
    }
}
