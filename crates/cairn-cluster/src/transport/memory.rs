//! An in-memory node-to-node network, so a whole cluster can run in one
//! process without sockets (the `SimCluster` tests of `cairn-cluster`).
//!
//! # Shape
//!
//! A [`MemoryNetwork`] is a hub shared by the nodes of one simulated
//! cluster; [`MemoryNetwork::bind`] registers a node's [`Handler`] under its
//! id and returns that node's [`MemoryTransport`], which offers the
//! operations of the real [`Transport`](super::Transport) the runtime uses
//! (through [`Network`](super::Network)). A frame is a function call: a
//! request runs the receiving node's handler on a task of its own and the
//! answer comes back on a oneshot channel. Nothing is serialized beyond
//! what the caller already did (payloads are [`Bytes`]).
//!
//! # What it keeps of the real transport
//!
//! The contract callers rely on, so the runtime cannot tell the two apart:
//!
//! - Every frame (request, answer, one-way message) passes the sender's
//!   [`FaultFilter`] outbound and the receiver's inbound, exactly as on TCP:
//!   a dropped request or answer is never answered and the caller sees
//!   [`TransportError::Timeout`] at its deadline; delays add up; a delay
//!   past the deadline is a timeout at the deadline.
//! - One deadline covers everything, waiting for the peer included: a call
//!   to a node that is not running waits (for it to come up) until its
//!   deadline and fails with `Unreachable`; [`MemoryTransport::send`] fails
//!   with `Unreachable` at once.
//! - A node that stops (its transport shut down or dropped) is unreachable
//!   at once, and calls waiting on its answers fail with `ConnectionLost`,
//!   as when a process dies and its sockets close. Handler futures already
//!   running finish (their answers are discarded), as on TCP.
//! - The peer table: calls go only to peers set with `set_peer` or that
//!   called us (`UnknownPeer` otherwise); a removed peer's frames are
//!   refused until it is set again; a restarted node has a new incarnation.
//! - Handlers are invoked in the order frames were sent by one task and
//!   their futures run concurrently; a panic costs one answer
//!   (`HANDLER_PANICKED`), an answer over the frame limit is
//!   `RESPONSE_TOO_LARGE`.
//! - Per-peer metrics count calls, frames, bytes and fault actions.
//!
//! # What it leaves out
//!
//! Connections, handshakes (no secret, no TLS: `has_secret` and `has_tls`
//! are false), the inbound caps, write-queue back-pressure and
//! `max_inbound_in_flight`. Peer addresses are kept for the table but not
//! used to route: a frame goes to the node registered under the id. Those
//! are the real transport's own tests' business (`tests/transport.rs`,
//! `tests/transport_security.rs`, `tests/faults.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, sleep, sleep_until, timeout_at};
use tokio_util::sync::CancellationToken;

use super::fault::{Direction, FaultFilter};
use super::metrics::PeerMetrics;
use super::secure::SecurityMetrics;
use super::{
    ConnectionInfo, Handler, NodeId, PeerMetricsSnapshot, RemoteError, TransportConfig,
    TransportError,
};

/// Bytes counted per frame besides the payload, as the real framing's
/// length prefix and header would be.
const FRAME_OVERHEAD: usize = 4 + super::frame::HEADER_LEN;

/// The hub of one simulated cluster's nodes. Cheap to clone; all clones
/// are the same network.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    hub: Arc<Hub>,
}

#[derive(Default)]
struct Hub {
    /// The nodes running now, by id.
    nodes: RwLock<HashMap<NodeId, Arc<Endpoint>>>,
    /// Bumped when a node comes or goes, or a peer table changes, so calls
    /// waiting for a peer look again.
    changed: watch::Sender<()>,
}

impl fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<NodeId> = self.hub.nodes.read().keys().copied().collect();
        ids.sort_unstable();
        f.debug_struct("MemoryNetwork")
            .field("running", &ids)
            .finish()
    }
}

impl MemoryNetwork {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers node `config.node_id` with `handler` and returns its
    /// transport. `config.listen_addr` is the address it reports (nothing
    /// is bound); `fault_seed` and `max_payload_len` apply as on TCP, the
    /// rest is ignored. Fails with `AddrInUse` while a node with that id
    /// runs on this network.
    pub fn bind(
        &self,
        config: TransportConfig,
        handler: Arc<dyn Handler>,
    ) -> io::Result<MemoryTransport> {
        let ep = Arc::new(Endpoint {
            id: config.node_id,
            addr: config.listen_addr,
            // Zero is never used, as on TCP.
            incarnation: rand::random::<u64>() | 1,
            max_payload_len: config.max_payload_len,
            handler,
            hub: self.hub.clone(),
            peers: RwLock::new(HashMap::new()),
            removed: Mutex::new(HashSet::new()),
            faults: FaultFilter::new(config.fault_seed),
            shutdown: CancellationToken::new(),
            security: Arc::default(),
        });
        {
            let mut nodes = self.hub.nodes.write();
            if nodes.contains_key(&ep.id) {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("node {} already runs on this network", ep.id),
                ));
            }
            nodes.insert(ep.id, ep.clone());
        }
        self.hub.changed.send_replace(());
        Ok(MemoryTransport {
            handle: Arc::new(Handle { ep }),
        })
    }

    /// The ids of the nodes running now.
    pub fn running(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.hub.nodes.read().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Stops node `id`'s transport at once, as if its process died: it is
    /// unreachable from now on and calls waiting on it fail. False if it
    /// was not running.
    pub fn kill(&self, id: NodeId) -> bool {
        let ep = self.hub.nodes.read().get(&id).cloned();
        match ep {
            Some(ep) => {
                ep.stop();
                true
            }
            None => false,
        }
    }
}

/// One node's side of a [`MemoryNetwork`]. Cheap to clone; dropping the
/// last clone stops it (as [`MemoryTransport::shutdown`] does).
#[derive(Clone)]
pub struct MemoryTransport {
    handle: Arc<Handle>,
}

/// Owned by the user-facing clones only, as `Transport`'s is.
struct Handle {
    ep: Arc<Endpoint>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.ep.stop();
    }
}

impl fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryTransport")
            .field("node_id", &self.handle.ep.id)
            .field("addr", &self.handle.ep.addr)
            .finish_non_exhaustive()
    }
}

struct Endpoint {
    id: NodeId,
    addr: SocketAddr,
    incarnation: u64,
    max_payload_len: usize,
    handler: Arc<dyn Handler>,
    hub: Arc<Hub>,
    peers: RwLock<HashMap<NodeId, Peer>>,
    /// Removed peers: their frames are refused until they are set again.
    removed: Mutex<HashSet<NodeId>>,
    faults: FaultFilter,
    shutdown: CancellationToken,
    /// Always zero: there are no handshakes; kept so callers need not care.
    security: Arc<SecurityMetrics>,
}

struct Peer {
    /// `None`: it called us but is not in the table.
    addr: Option<SocketAddr>,
    metrics: Arc<PeerMetrics>,
}

type Reply = oneshot::Sender<Result<Bytes, TransportError>>;

impl Endpoint {
    fn stop(&self) {
        if self.shutdown.is_cancelled() {
            return;
        }
        self.shutdown.cancel();
        {
            let mut nodes = self.hub.nodes.write();
            // A restarted node may already have taken the id.
            if nodes
                .get(&self.id)
                .is_some_and(|e| std::ptr::eq(Arc::as_ptr(e), self))
            {
                nodes.remove(&self.id);
            }
        }
        self.hub.changed.send_replace(());
    }

    fn metrics(&self, peer: NodeId) -> Option<Arc<PeerMetrics>> {
        self.peers.read().get(&peer).map(|p| p.metrics.clone())
    }

    /// The metrics of a peer that sent us a frame, entered in the table if
    /// unknown; `None` if it was removed (its frames are refused).
    fn inbound_metrics(&self, from: NodeId) -> Option<Arc<PeerMetrics>> {
        if let Some(m) = self.metrics(from) {
            return Some(m);
        }
        let mut peers = self.peers.write();
        if self.removed.lock().contains(&from) {
            return None;
        }
        Some(
            peers
                .entry(from)
                .or_insert_with(|| Peer {
                    addr: None,
                    metrics: Arc::default(),
                })
                .metrics
                .clone(),
        )
    }

    /// The running node `to`, if it takes our frames (a node that removed
    /// us refuses them, as it would refuse our hello).
    fn reach(&self, to: NodeId) -> Option<Arc<Endpoint>> {
        let target = self.hub.nodes.read().get(&to).cloned()?;
        if target.shutdown.is_cancelled() || target.removed.lock().contains(&self.id) {
            return None;
        }
        Some(target)
    }

    /// Waits, up to `deadline_at`, for `to` to be reachable.
    async fn wait_for(
        &self,
        to: NodeId,
        deadline_at: Instant,
    ) -> Result<Arc<Endpoint>, TransportError> {
        let mut changed = self.hub.changed.subscribe();
        loop {
            if let Some(t) = self.reach(to) {
                return Ok(t);
            }
            if self.metrics(to).is_none() {
                return Err(TransportError::UnknownPeer { peer: to });
            }
            match timeout_at(deadline_at, changed.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => {
                    return Err(TransportError::Unreachable {
                        peer: to,
                        reason: "node is not running".to_owned(),
                    });
                }
            }
        }
    }

    /// Takes one frame from `from`: its inbound filter, then the handler —
    /// called here (so one sender's frames reach it in order) unless the
    /// frame is delayed — on a task of its own; `reply` gets the answer
    /// through both filters, or never if one drops it.
    fn receive(
        self: &Arc<Self>,
        from: &Arc<Endpoint>,
        group: u64,
        kind: u16,
        payload: Bytes,
        reply: Option<Reply>,
    ) {
        let Some(metrics) = self.inbound_metrics(from.id) else {
            return;
        };
        PeerMetrics::inc(&metrics.frames_received);
        PeerMetrics::add(&metrics.bytes_received, payload.len() + FRAME_OVERHEAD);
        let Some(delay) = self
            .faults
            .judge(Direction::Inbound, from.id, group, kind, &metrics)
        else {
            return;
        };
        let handled = if delay.is_zero() {
            Some(self.invoke(from.id, group, kind, payload.clone()))
        } else {
            None
        };
        let (me, from) = (self.clone(), from.clone());
        tokio::spawn(async move {
            let result = match handled {
                Some(fut) => fut.await,
                None => {
                    sleep(delay).await;
                    me.invoke(from.id, group, kind, payload).await
                }
            };
            let Some(reply) = reply else {
                if let Err(e) = result {
                    tracing::debug!(peer = from.id, group, kind, error = %e, "one-way handler failed");
                }
                return;
            };
            let max = me.max_payload_len;
            let too_large = |what: &str, len: usize| {
                RemoteError::new(
                    RemoteError::RESPONSE_TOO_LARGE,
                    format!("{what} of {len} bytes exceeds the frame limit of {max}"),
                )
            };
            let result = match result {
                Ok(b) if b.len() > max => Err(too_large("response", b.len())),
                other => other,
            };
            let len = result
                .as_ref()
                .map_or_else(|e| e.message.len() + 2, Bytes::len);
            // The answer travels back: our outbound filter, then theirs.
            let theirs = from.metrics(me.id).unwrap_or_default();
            let mut delay = Duration::ZERO;
            for (ep, direction, peer, m) in [
                (&me, Direction::Outbound, from.id, &metrics),
                (&from, Direction::Inbound, me.id, &theirs),
            ] {
                match ep.faults.judge(direction, peer, group, kind, m) {
                    None => return,
                    Some(d) => delay += d,
                }
            }
            if me.shutdown.is_cancelled() {
                return;
            }
            PeerMetrics::inc(&metrics.frames_sent);
            PeerMetrics::add(&metrics.bytes_sent, len + FRAME_OVERHEAD);
            if !delay.is_zero() {
                sleep(delay).await;
            }
            PeerMetrics::inc(&theirs.frames_received);
            PeerMetrics::add(&theirs.bytes_received, len + FRAME_OVERHEAD);
            let answer = result.map_err(|error| TransportError::Remote { peer: me.id, error });
            if reply.send(answer).is_err() {
                PeerMetrics::inc(&theirs.late_responses);
            }
        });
    }

    /// The handler's future for one frame; a panic (building it or running
    /// it) becomes an error answer, as on TCP.
    fn invoke(
        &self,
        from: NodeId,
        group: u64,
        kind: u16,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, RemoteError>> {
        let panicked = move || {
            Err(RemoteError::new(
                RemoteError::HANDLER_PANICKED,
                format!("handler panicked on group {group} kind {kind}"),
            ))
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.handler.handle(from, group, kind, payload)
        })) {
            Ok(fut) => AssertUnwindSafe(fut)
                .catch_unwind()
                .map(move |r| r.unwrap_or_else(|_| panicked()))
                .boxed(),
            Err(_) => futures::future::ready(panicked()).boxed(),
        }
    }
}

impl MemoryTransport {
    fn ep(&self) -> &Arc<Endpoint> {
        &self.handle.ep
    }

    pub fn node_id(&self) -> NodeId {
        self.ep().id
    }

    /// The address it was bound with (nothing listens there).
    pub fn local_addr(&self) -> SocketAddr {
        self.ep().addr
    }

    /// This run's incarnation (new at every bind).
    pub fn incarnation(&self) -> u64 {
        self.ep().incarnation
    }

    /// As [`Transport::set_peer`](super::Transport::set_peer).
    pub fn set_peer(&self, id: NodeId, addr: SocketAddr) {
        let ep = self.ep();
        if id == ep.id {
            return;
        }
        {
            let mut peers = ep.peers.write();
            ep.removed.lock().remove(&id);
            peers
                .entry(id)
                .or_insert_with(|| Peer {
                    addr: None,
                    metrics: Arc::default(),
                })
                .addr = Some(addr);
        }
        ep.hub.changed.send_replace(());
    }

    /// As [`Transport::remove_peer`](super::Transport::remove_peer).
    pub fn remove_peer(&self, id: NodeId) -> bool {
        let ep = self.ep();
        let known = {
            let mut peers = ep.peers.write();
            ep.removed.lock().insert(id);
            peers.remove(&id).is_some()
        };
        ep.hub.changed.send_replace(());
        known
    }

    /// As [`Transport::peers`](super::Transport::peers).
    pub fn peers(&self) -> BTreeMap<NodeId, Option<SocketAddr>> {
        self.ep()
            .peers
            .read()
            .iter()
            .map(|(id, p)| (*id, p.addr))
            .collect()
    }

    fn check_payload(&self, len: usize) -> Result<(), TransportError> {
        let ep = self.ep();
        if ep.shutdown.is_cancelled() {
            return Err(TransportError::Shutdown);
        }
        if len > ep.max_payload_len {
            return Err(TransportError::FrameTooLarge {
                len,
                max: ep.max_payload_len,
            });
        }
        Ok(())
    }

    /// As [`Transport::call`](super::Transport::call); see the module docs.
    pub async fn call(
        &self,
        to: NodeId,
        group: u64,
        kind: u16,
        payload: Bytes,
        deadline: Duration,
    ) -> Result<Bytes, TransportError> {
        let ep = self.ep();
        let start = Instant::now();
        self.check_payload(payload.len())?;
        let m = ep
            .metrics(to)
            .ok_or(TransportError::UnknownPeer { peer: to })?;
        let result = tokio::select! {
            biased;
            _ = ep.shutdown.cancelled() => Err(TransportError::Shutdown),
            r = self.call_on(to, &m, group, kind, payload, deadline, start + deadline) => r,
        };
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

    // The parts of one call, as `conn.rs`'s `call_on` takes them.
    #[allow(clippy::too_many_arguments)]
    async fn call_on(
        &self,
        to: NodeId,
        m: &PeerMetrics,
        group: u64,
        kind: u16,
        payload: Bytes,
        deadline: Duration,
        deadline_at: Instant,
    ) -> Result<Bytes, TransportError> {
        let ep = self.ep();
        let timed_out = TransportError::Timeout { peer: to, deadline };
        let target = ep.wait_for(to, deadline_at).await?;
        if ep
            .faults
            .delay_call(to, group, kind, m, deadline_at)
            .await
            .is_err()
        {
            return Err(timed_out);
        }
        if target.shutdown.is_cancelled() {
            return Err(TransportError::ConnectionLost { peer: to });
        }
        PeerMetrics::inc(&m.frames_sent);
        PeerMetrics::add(&m.bytes_sent, payload.len() + FRAME_OVERHEAD);
        let (tx, rx) = oneshot::channel();
        target.receive(ep, group, kind, payload, Some(tx));
        tokio::select! {
            biased;
            answer = timeout_at(deadline_at, rx) => match answer {
                Ok(Ok(result)) => result,
                // Dropped on the way (or refused): never answered.
                Ok(Err(_)) => {
                    sleep_until(deadline_at).await;
                    Err(timed_out)
                }
                Err(_) => Err(timed_out),
            },
            _ = target.shutdown.cancelled() => Err(TransportError::ConnectionLost { peer: to }),
        }
    }

    /// As [`Transport::send`](super::Transport::send): `Unreachable` at once
    /// if `to` is not running; `Ok` does not mean delivered.
    pub async fn send(
        &self,
        to: NodeId,
        group: u64,
        kind: u16,
        payload: Bytes,
    ) -> Result<(), TransportError> {
        let ep = self.ep();
        self.check_payload(payload.len())?;
        let m = ep
            .metrics(to)
            .ok_or(TransportError::UnknownPeer { peer: to })?;
        let Some(target) = ep.reach(to) else {
            return Err(TransportError::Unreachable {
                peer: to,
                reason: "node is not running".to_owned(),
            });
        };
        PeerMetrics::inc(&m.frames_sent);
        PeerMetrics::add(&m.bytes_sent, payload.len() + FRAME_OVERHEAD);
        match ep.faults.judge(Direction::Outbound, to, group, kind, &m) {
            None => {}
            Some(d) if d.is_zero() => target.receive(ep, group, kind, payload, None),
            Some(d) => {
                let ep = ep.clone();
                tokio::spawn(async move {
                    sleep(d).await;
                    // Lost with either end, as with a closed socket.
                    if !target.shutdown.is_cancelled() && !ep.shutdown.is_cancelled() {
                        target.receive(&ep, group, kind, payload, None);
                    }
                });
            }
        }
        Ok(())
    }

    /// The fault filter applied to this node's traffic.
    pub fn faults(&self) -> &FaultFilter {
        &self.ep().faults
    }

    /// Whether `peer` is known and running, and takes our frames (there
    /// are no connections: this is what one would be).
    pub fn is_connected(&self, peer: NodeId) -> bool {
        self.ep().metrics(peer).is_some() && self.ep().reach(peer).is_some()
    }

    /// What a connection to `peer` would be, while [`Self::is_connected`].
    pub fn connection(&self, peer: NodeId) -> Option<ConnectionInfo> {
        let ep = self.ep();
        ep.metrics(peer)?;
        let target = ep.reach(peer)?;
        Some(ConnectionInfo {
            local_addr: ep.addr,
            peer_addr: target.addr,
            dialed_by_us: ep.id < peer,
            peer_incarnation: target.incarnation,
        })
    }

    pub fn peer_metrics(&self, peer: NodeId) -> Option<Arc<PeerMetrics>> {
        self.ep().metrics(peer)
    }

    pub fn metrics(&self) -> BTreeMap<NodeId, PeerMetricsSnapshot> {
        self.ep()
            .peers
            .read()
            .iter()
            .map(|(id, p)| (*id, p.metrics.snapshot()))
            .collect()
    }

    /// Always zero (there are no handshakes).
    pub fn security_metrics(&self) -> &Arc<SecurityMetrics> {
        &self.ep().security
    }

    /// Stops this node's side: unreachable from now on, pending calls fail
    /// with `Shutdown`, peers' calls waiting on us with `ConnectionLost`.
    pub async fn shutdown(&self) {
        self.ep().stop();
    }
}
