//! The seam between the cluster runtime and the node-to-node network: the
//! operations the runtime, the Raft network, leadership and membership use
//! (calls, one-way sends, the peer table, the fault filter, connection and
//! metrics queries), over either the real TCP [`Transport`] or the
//! in-memory [`MemoryTransport`] of simulated clusters.
//!
//! An enum rather than a trait object: there are exactly two networks, the
//! async methods need no boxed futures, and the real transport's calls
//! stay a match away from their code (no allocation, no indirect call on
//! the hot path). The methods keep the real transport's names and meaning,
//! so call sites read as before; see `transport` for the contract and
//! `memory` for what the in-memory network keeps of it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::memory::MemoryTransport;
use super::{
    ConnectionInfo, FaultFilter, NodeId, PeerMetrics, PeerMetricsSnapshot, SecurityMetrics,
    Transport, TransportError,
};

/// A node's node-to-node network. Cheap to clone.
#[derive(Clone, Debug)]
pub enum Network {
    /// Real connections ([`Transport`]).
    Tcp(Transport),
    /// A node of an in-process simulated cluster ([`super::memory`]).
    Memory(MemoryTransport),
}

impl From<Transport> for Network {
    fn from(t: Transport) -> Self {
        Network::Tcp(t)
    }
}

impl From<MemoryTransport> for Network {
    fn from(t: MemoryTransport) -> Self {
        Network::Memory(t)
    }
}

/// `$net.$method($args)` on whichever network it is.
macro_rules! either {
    ($net:expr, $t:ident => $e:expr) => {
        match $net {
            Network::Tcp($t) => $e,
            Network::Memory($t) => $e,
        }
    };
}

impl Network {
    /// The real transport, if this is one (for what only it has: listener
    /// counts, TLS).
    pub fn tcp(&self) -> Option<&Transport> {
        match self {
            Network::Tcp(t) => Some(t),
            Network::Memory(_) => None,
        }
    }

    pub fn node_id(&self) -> NodeId {
        either!(self, t => t.node_id())
    }

    pub fn local_addr(&self) -> SocketAddr {
        either!(self, t => t.local_addr())
    }

    pub fn incarnation(&self) -> u64 {
        either!(self, t => t.incarnation())
    }

    /// See [`Transport::set_peer`].
    pub fn set_peer(&self, id: NodeId, addr: SocketAddr) {
        either!(self, t => t.set_peer(id, addr))
    }

    /// See [`Transport::remove_peer`].
    pub fn remove_peer(&self, id: NodeId) -> bool {
        either!(self, t => t.remove_peer(id))
    }

    /// See [`Transport::peers`].
    pub fn peers(&self) -> BTreeMap<NodeId, Option<SocketAddr>> {
        either!(self, t => t.peers())
    }

    /// See [`Transport::call`].
    pub async fn call(
        &self,
        to: NodeId,
        group: u64,
        kind: u16,
        payload: Bytes,
        deadline: Duration,
    ) -> Result<Bytes, TransportError> {
        either!(self, t => t.call(to, group, kind, payload, deadline).await)
    }

    /// See [`Transport::send`].
    pub async fn send(
        &self,
        to: NodeId,
        group: u64,
        kind: u16,
        payload: Bytes,
    ) -> Result<(), TransportError> {
        either!(self, t => t.send(to, group, kind, payload).await)
    }

    /// The fault filter applied to this node's traffic.
    pub fn faults(&self) -> &FaultFilter {
        either!(self, t => t.faults())
    }

    pub fn is_connected(&self, peer: NodeId) -> bool {
        either!(self, t => t.is_connected(peer))
    }

    pub fn connection(&self, peer: NodeId) -> Option<ConnectionInfo> {
        either!(self, t => t.connection(peer))
    }

    pub fn peer_metrics(&self, peer: NodeId) -> Option<Arc<PeerMetrics>> {
        either!(self, t => t.peer_metrics(peer))
    }

    pub fn metrics(&self) -> BTreeMap<NodeId, PeerMetricsSnapshot> {
        either!(self, t => t.metrics())
    }

    /// Handshake failures and refusals (always zero in memory).
    pub fn security_metrics(&self) -> &Arc<SecurityMetrics> {
        either!(self, t => t.security_metrics())
    }

    /// Whether connections must prove a cluster secret (never in memory).
    pub fn has_secret(&self) -> bool {
        self.tcp().is_some_and(Transport::has_secret)
    }

    /// Whether connections use TLS (never in memory).
    pub fn has_tls(&self) -> bool {
        self.tcp().is_some_and(Transport::has_tls)
    }

    /// See [`Transport::shutdown`].
    pub async fn shutdown(&self) {
        either!(self, t => t.shutdown().await)
    }
}
