//! The node-to-node transport: one multiplexed, framed TCP connection per
//! node pair, carrying every Raft group's RPCs and the node-level messages.
//!
//! # Why one connection per pair
//!
//! A node hosts hundreds of Raft groups (one per partition, plus group 0, the
//! controller). A connection per group would multiply sockets, handshakes and
//! heartbeat traffic by the number of groups, and a cluster-wide event (a
//! node restart) would reconnect them all at once. Instead every frame names
//! its group in its header and all groups share one connection per peer. The
//! transport does not look inside payloads: callers serialize Raft RPCs into
//! [`Bytes`] and get [`Bytes`] back, so batches travel without re-encoding.
//!
//! # Frames
//!
//! `tokio-util`'s length-delimited framing with an explicit maximum
//! ([`TransportConfig::max_payload_len`], 64 MiB by default, plus the header),
//! then a 28-byte header — version, frame type (request, response, error,
//! one-way, hello, hello-ack, auth-challenge, auth-proof), kind, sender node id, group id, request id —
//! then the payload. See `frame.rs` for the byte layout. Requests carry a
//! per-connection request id; the answer carries the same id, so any number
//! of calls can be in flight on one connection and answers may come back in
//! any order (pipelining). Incoming requests are handled concurrently, each
//! on its own task, so a slow handler (a group stuck on a slow disk) holds up
//! nobody else.
//!
//! # Who dials: either side, and the lower id's dial wins
//!
//! Either node may dial the other, on demand (the first call) and again after
//! a connection drops. "Only the lower id dials" would be simpler, but a new
//! node that the cluster does not know yet could then never reach it. The
//! dialing side sends a hello first: its node id, the id it expects to
//! reach, and an *incarnation* (random per process start). The accepting
//! side answers with a hello-ack carrying its verdict and its own id and
//! incarnation. It decides:
//!
//! - a hello that names another node id is rejected (`WrongNode`): the peer
//!   table pointed at a stale address. The dialer also checks the id the
//!   acceptor answers with, and gives up on a node that is not the one it
//!   wanted. A hello alone is not authentication: with a cluster secret
//!   the hello carries a nonce and both sides prove the secret before the
//!   acceptor decides (see "Who may connect" below and `secure.rs`).
//! - from a **lower** id: always accepted, replacing any connection we had.
//!   The lower node dials only when it has no connection, so ours is dead or
//!   about to be.
//! - from a **higher** id: rejected (`Duplicate`) while our own dial to it is
//!   in flight (ours will win, on the same rule at its end), or while we hold
//!   a connection to the same incarnation; accepted otherwise — including
//!   when the incarnation differs, i.e. the peer restarted and our old
//!   connection is a corpse we have not noticed yet.
//!
//! So when two nodes dial each other at once, both keep the connection the
//! lower id dialed and only one connection is ever registered.
//!
//! # Deadlines, reconnects, failures
//!
//! Every [`Transport::call`] has a deadline covering everything: waiting for
//! a connection, the queue, the network and the remote handler. A call to a
//! peer without a connection starts a dial and waits, up to its deadline,
//! for a connection dialed by either side ([`TransportError::Unreachable`]
//! if none comes, with the last dial error as reason). When a connection
//! drops, every call in flight on it fails at once with
//! [`TransportError::ConnectionLost`] — not at its deadline — and a dialer
//! reconnects with exponential backoff and jitter (10 ms doubling to a 1 s
//! cap by default) for as long as the peer is in the table. Calls are never
//! retried by the transport: after `Timeout` or `ConnectionLost` the request
//! may or may not have been handled, and only the caller (Raft) knows whether
//! a retry is safe. A half-open connection (peer gone without a FIN) is not
//! detected by the transport itself: calls time out at their deadlines, and
//! the membership layer's heartbeats are what notice a dead peer.
//!
//! [`Transport::send`] is one-way (heartbeats): it never waits for a
//! connection (it fails with `Unreachable` and starts a dial), and success
//! means "queued for the socket", not "delivered".
//!
//! # Ordering
//!
//! Frames sent on one connection are written in the order they were queued
//! and read in the order written (TCP). There is no ordering across a
//! reconnect, and since requests are handled concurrently, two requests may
//! *complete* in either order; a caller that needs ordered handling must
//! wait for the first answer (as Raft does per group). A fault-filter delay
//! also breaks the write order (each frame is delayed on its own).
//!
//! # Fault filter
//!
//! Each transport has a [`FaultFilter`] ([`Transport::faults`]) whose rules
//! every traffic frame passes, outbound when sent and inbound when received:
//! delay (fixed + jitter), drop with probability `p` (seeded RNG), block (a
//! partition from a set of peers, or isolation from all), each optionally
//! limited to one direction, a group and a kind, with an id for removal and
//! an optional time to live. A dropped request is simply never answered, so
//! the caller sees `Timeout` at its deadline, as on a real network. Tests use
//! it now; the fault-injection admin API will drive it later.
//!
//! # Who may connect
//!
//! Optionally, a cluster secret and TLS (`secure.rs`): with a secret, a
//! challenge-response handshake inside the hello exchange admits only
//! processes that know it; with TLS, the socket is a TLS session first.
//! Always: at most [`TransportConfig::max_inbound_connections`] inbound
//! connections (and [`TransportConfig::max_inbound_connections_per_ip`]
//! from one address), the whole handshake — TLS, hello, proofs — within
//! [`TransportConfig::connect_timeout`], and a connection with no frame for
//! [`TransportConfig::idle_timeout`] is closed.
//!
//! # Metrics
//!
//! Per peer, atomics only ([`PeerMetrics`]): frames and bytes each way,
//! call outcomes, RPC latency, connections, dial failures, fault actions.
//! Node-wide ([`SecurityMetrics`]): failed handshakes by side and reason,
//! connections refused at the caps, idle closes.
//!
//! # The seam
//!
//! The cluster runtime does not hold a [`Transport`] but a [`Network`]:
//! this transport, or a node of an in-memory [`MemoryNetwork`] on which a
//! whole cluster runs in one process, with the same fault filter
//! (`memory.rs`; the simulated-cluster tests use it).

mod accept;
mod conn;
mod dial;
pub mod error;
pub mod fault;
pub mod frame;
pub mod memory;
pub mod metrics;
mod network;
pub mod secure;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio::time::Instant;

use conn::Inner;
pub use error::{RemoteError, TransportError};
pub use fault::{
    Direction, Directions, FaultAction, FaultFilter, FaultRule, InstalledRule, RuleId, Verdict,
};
pub use memory::{MemoryNetwork, MemoryTransport};
pub use metrics::{LatencyHistogram, LatencySnapshot, PeerMetrics, PeerMetricsSnapshot};
pub use network::Network;
pub use secure::{ClusterSecret, HandshakeFailure, SecretError, SecurityMetrics};

/// A node's id in the cluster.
pub type NodeId = u64;

/// Serves the requests and one-way messages that peers send to this node.
///
/// Contract:
/// - `handle` is called on the connection's reader task and must return
///   quickly: do the work in the returned future, which the transport runs
///   on its own task. It must not block the thread.
/// - Requests run **concurrently**: many futures of one peer, one group,
///   even one kind may be live at once (bounded per connection by
///   [`TransportConfig::max_inbound_in_flight`]; past it requests are
///   refused with [`RemoteError::OVERLOADED`]). Handlers that need order
///   within a group must impose it themselves (Raft does: one RPC per
///   follower in flight, or its own sequencing).
/// - `handle` is called in the order frames arrived on a connection; the
///   futures may finish in any order.
/// - One-way messages ([`Transport::send`]) come through the same method;
///   their result is discarded (an error is logged at debug level).
/// - `Err(RemoteError)` reaches the caller as [`TransportError::Remote`]. A
///   response larger than the frame limit becomes a `RemoteError` with code
///   [`RemoteError::RESPONSE_TOO_LARGE`]; a panic, one with
///   [`RemoteError::HANDLER_PANICKED`] (the connection survives both).
/// - If the connection drops while a future runs, the future still runs to
///   completion; its answer is discarded. Work is therefore never cancelled
///   halfway by the transport.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        from: NodeId,
        group: u64,
        kind: u16,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, RemoteError>>;
}

/// A [`Handler`] made of a closure; see [`handler_fn`].
pub struct FnHandler<F>(F);

impl<F> fmt::Debug for FnHandler<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnHandler")
    }
}

impl<F> Handler for FnHandler<F>
where
    F: Fn(NodeId, u64, u16, Bytes) -> BoxFuture<'static, Result<Bytes, RemoteError>>
        + Send
        + Sync
        + 'static,
{
    fn handle(
        &self,
        from: NodeId,
        group: u64,
        kind: u16,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, RemoteError>> {
        (self.0)(from, group, kind, payload)
    }
}

/// Wraps a closure as an `Arc<dyn Handler>`.
pub fn handler_fn<F>(f: F) -> Arc<dyn Handler>
where
    F: Fn(NodeId, u64, u16, Bytes) -> BoxFuture<'static, Result<Bytes, RemoteError>>
        + Send
        + Sync
        + 'static,
{
    Arc::new(FnHandler(f))
}

/// Settings of one transport. [`TransportConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// This node's id; sent in every hello and frame header.
    pub node_id: NodeId,
    /// Where to listen (port 0 picks a free port; see [`Transport::local_addr`]).
    pub listen_addr: SocketAddr,
    /// Largest payload of one frame, both ways. Must be the same on all nodes
    /// (a larger frame from a peer closes the connection). Default 64 MiB.
    pub max_payload_len: usize,
    /// Limit for TCP connect plus hello exchange, each way. Default 2 s.
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles per failed attempt. Default 10 ms.
    pub reconnect_backoff_initial: Duration,
    /// Cap of the reconnect delay. Default 1 s.
    pub reconnect_backoff_max: Duration,
    /// Most requests of one connection being handled at once; beyond it a
    /// request is answered at once with [`RemoteError::OVERLOADED`] (and a
    /// one-way message dropped) without running the handler. Default 4096.
    pub max_inbound_in_flight: usize,
    /// Frames queued for one connection's writer before senders wait.
    /// Default 4096.
    pub write_queue_len: usize,
    /// Seed of the fault filter's RNG. Default 0.
    pub fault_seed: u64,
    /// The cluster secret: with it, every connection must pass the
    /// challenge-response handshake of `secure.rs` before any other frame.
    /// Default none (any process that reaches the port may connect).
    pub secret: Option<ClusterSecret>,
    /// TLS on every connection, both ways (see `secure.rs`). Default off.
    pub tls: Option<crate::tls::NodeTls>,
    /// Inbound connections open at once (handshaking or established), at
    /// most; more are closed at accept. Default 1024.
    pub max_inbound_connections: usize,
    /// Inbound connections open at once from one address, at most. Nodes
    /// sharing a host share an address. Default 256.
    pub max_inbound_connections_per_ip: usize,
    /// A connection that receives no frame for this long is closed (live
    /// peers heartbeat every 150 ms; see `membership`). Default 60 s.
    pub idle_timeout: Duration,
}

impl TransportConfig {
    /// Largest value accepted for `max_payload_len`: header and payload must
    /// fit the 4-byte length prefix.
    pub const MAX_PAYLOAD_LIMIT: usize = u32::MAX as usize - frame::HEADER_LEN;

    pub fn new(node_id: NodeId, listen_addr: SocketAddr) -> Self {
        Self {
            node_id,
            listen_addr,
            max_payload_len: 64 << 20,
            connect_timeout: Duration::from_secs(2),
            reconnect_backoff_initial: Duration::from_millis(10),
            reconnect_backoff_max: Duration::from_secs(1),
            max_inbound_in_flight: 4096,
            write_queue_len: 4096,
            fault_seed: 0,
            secret: None,
            tls: None,
            max_inbound_connections: 1024,
            max_inbound_connections_per_ip: 256,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Where a live connection to a peer runs, for diagnostics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub local_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    /// True if this node dialed it.
    pub dialed_by_us: bool,
    /// The peer's incarnation (changes when the peer restarts).
    pub peer_incarnation: u64,
}

/// A node's transport. Cheap to clone; all clones share the listener, the
/// connections and the fault filter. Dropping the last clone shuts it down
/// (as [`Transport::shutdown`] does, without waiting).
#[derive(Clone)]
pub struct Transport {
    handle: Arc<Handle>,
}

/// Owned by the user-facing clones only (tasks hold `Inner`), so that the
/// last user clone going away can stop the tasks.
struct Handle {
    inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.shutdown.cancel();
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.handle.inner;
        f.debug_struct("Transport")
            .field("node_id", &inner.config.node_id)
            .field("local_addr", &inner.local_addr)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Binds the listener and starts accepting peers. Peers are added with
    /// [`Transport::set_peer`]; a peer that dials us is served even if it is
    /// not in the table (a joining node), and we can call it back over that
    /// connection while it lasts.
    pub async fn bind(config: TransportConfig, handler: Arc<dyn Handler>) -> io::Result<Self> {
        if config.max_payload_len > TransportConfig::MAX_PAYLOAD_LIMIT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "max_payload_len {} exceeds {}",
                    config.max_payload_len,
                    TransportConfig::MAX_PAYLOAD_LIMIT
                ),
            ));
        }
        let listener = TcpListener::bind(config.listen_addr).await?;
        let local_addr = listener.local_addr()?;
        let inner = Arc::new(Inner::new(config, local_addr, handler));
        inner.tasks.spawn(inner.clone().accept_loop(listener));
        Ok(Self {
            handle: Arc::new(Handle { inner }),
        })
    }

    fn inner(&self) -> &Arc<Inner> {
        &self.handle.inner
    }

    pub fn node_id(&self) -> NodeId {
        self.inner().config.node_id
    }

    /// The address the listener is bound to (the real port if 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner().local_addr
    }

    /// This run's incarnation, as peers see it in our hello.
    pub fn incarnation(&self) -> u64 {
        self.inner().incarnation
    }

    /// Adds a peer (again: this lifts a [`Transport::remove_peer`]) or
    /// changes its address. An existing connection is kept
    /// (it still reaches the same node); the next dial uses the new address.
    /// Our own id is ignored.
    pub fn set_peer(&self, id: NodeId, addr: SocketAddr) {
        if id != self.node_id() {
            self.inner().set_peer(id, addr);
        }
    }

    /// Forgets a peer: closes its connection (calls in flight fail with
    /// `ConnectionLost`), stops dialing it, and refuses its hellos until it
    /// is added again with [`Transport::set_peer`] (so a removed node cannot
    /// reconnect on its own). Returns false if it was unknown.
    pub fn remove_peer(&self, id: NodeId) -> bool {
        self.inner().remove_peer(id)
    }

    /// Known peers and their addresses (`None`: connected to us, not in the table).
    pub fn peers(&self) -> BTreeMap<NodeId, Option<SocketAddr>> {
        self.inner()
            .peers
            .read()
            .iter()
            .map(|(id, s)| (*id, s.state.lock().addr))
            .collect()
    }

    /// Sends a request to `to` and waits for its answer, all within `deadline`.
    ///
    /// Safe to call concurrently from many tasks; all calls to one peer share
    /// its connection. See the module docs for what each error means.
    pub async fn call(
        &self,
        to: NodeId,
        group: u64,
        kind: u16,
        payload: Bytes,
        deadline: Duration,
    ) -> Result<Bytes, TransportError> {
        let inner = self.inner();
        let start = Instant::now();
        self.check_payload(payload.len())?;
        let slot = inner
            .slot(to)
            .ok_or(TransportError::UnknownPeer { peer: to })?;
        let result = tokio::select! {
            biased;
            _ = inner.shutdown.cancelled() => Err(TransportError::Shutdown),
            r = inner.call_on(&slot, group, kind, payload, deadline, start + deadline) => r,
        };
        let m = &slot.metrics;
        match &result {
            Ok(_) => {
                PeerMetrics::inc(&m.calls_ok);
                m.rpc_latency.record(start.elapsed());
            }
            Err(TransportError::Remote { .. }) => {
                PeerMetrics::inc(&m.calls_remote_error);
                m.rpc_latency.record(start.elapsed());
            }
            Err(TransportError::Timeout { .. }) => PeerMetrics::inc(&m.calls_timeout),
            Err(TransportError::Unreachable { .. }) => PeerMetrics::inc(&m.calls_unreachable),
            Err(TransportError::ConnectionLost { .. }) => {
                PeerMetrics::inc(&m.calls_connection_lost)
            }
            Err(_) => {}
        }
        result
    }

    /// Sends a one-way message (no answer). Fails with `Unreachable` at once
    /// if there is no connection (and starts dialing); `Ok` means queued for
    /// the socket, not delivered. Waits only if the write queue is full.
    pub async fn send(
        &self,
        to: NodeId,
        group: u64,
        kind: u16,
        payload: Bytes,
    ) -> Result<(), TransportError> {
        let inner = self.inner();
        self.check_payload(payload.len())?;
        let slot = inner
            .slot(to)
            .ok_or(TransportError::UnknownPeer { peer: to })?;
        tokio::select! {
            biased;
            _ = inner.shutdown.cancelled() => Err(TransportError::Shutdown),
            r = inner.send_on(&slot, group, kind, payload) => r,
        }
    }

    fn check_payload(&self, len: usize) -> Result<(), TransportError> {
        let inner = self.inner();
        if inner.shutdown.is_cancelled() {
            return Err(TransportError::Shutdown);
        }
        let max = inner.config.max_payload_len;
        if len > max {
            return Err(TransportError::FrameTooLarge { len, max });
        }
        Ok(())
    }

    /// Handshake failures, connections refused at the caps, idle closes.
    pub fn security_metrics(&self) -> &Arc<SecurityMetrics> {
        &self.inner().security
    }

    /// Inbound connections open now (handshaking or established).
    pub fn inbound_connections(&self) -> usize {
        self.inner().gate.open()
    }

    /// Whether connections are authenticated with a cluster secret.
    pub fn has_secret(&self) -> bool {
        self.inner().config.secret.is_some()
    }

    /// Whether connections use TLS.
    pub fn has_tls(&self) -> bool {
        self.inner().config.tls.is_some()
    }

    /// The fault filter applied to this node's traffic.
    pub fn faults(&self) -> &FaultFilter {
        &self.inner().faults
    }

    /// Whether a connection to `peer` is established now.
    pub fn is_connected(&self, peer: NodeId) -> bool {
        self.connection(peer).is_some()
    }

    /// The live connection to `peer`, if any.
    pub fn connection(&self, peer: NodeId) -> Option<ConnectionInfo> {
        let slot = self.inner().slot(peer)?;
        let st = slot.state.lock();
        st.conn.as_ref().map(|c| ConnectionInfo {
            local_addr: c.local_addr,
            peer_addr: c.peer_addr,
            dialed_by_us: c.dialed_by_us,
            peer_incarnation: c.peer_incarnation,
        })
    }

    /// The live metrics of one peer (kept across reconnects).
    pub fn peer_metrics(&self, peer: NodeId) -> Option<Arc<PeerMetrics>> {
        self.inner().slot(peer).map(|s| s.metrics.clone())
    }

    /// A snapshot of every known peer's metrics.
    pub fn metrics(&self) -> BTreeMap<NodeId, PeerMetricsSnapshot> {
        self.inner()
            .peers
            .read()
            .iter()
            .map(|(id, s)| (*id, s.metrics.snapshot()))
            .collect()
    }

    /// Stops listening, closes every connection (pending calls fail with
    /// `Shutdown`, peers see the connection drop) and waits until the
    /// listener and connection tasks are gone, so the address can be bound
    /// again. Handler futures already running are not waited for.
    pub async fn shutdown(&self) {
        let inner = self.inner();
        inner.shutdown.cancel();
        inner.tasks.close();
        inner.tasks.wait().await;
    }
}
