//! Node-level membership (DESIGN.md §5): who is alive, as this node sees it.
//!
//! # Pieces
//!
//! - [`phi`]: the phi-accrual failure detector, one per peer.
//! - [`Membership`]: pure state — per peer a detector, a liveness verdict
//!   and an optional administrative state; every method takes the current
//!   time, so tests drive it with synthetic clocks.
//! - [`HeartbeatService`]: the live part. Every [`HeartbeatConfig::interval`]
//!   it sends a one-way [`Heartbeat`] to every peer in the transport's table
//!   (group [`HEARTBEAT_GROUP`], kind [`HEARTBEAT_KIND`]) and re-evaluates
//!   every peer; the node's transport [`Handler`](crate::transport::Handler)
//!   passes incoming heartbeats to [`HeartbeatService::on_heartbeat`].
//!
//! # States
//!
//! A peer's [`NodeState`] combines two things:
//!
//! - **Liveness**, from the detector: `Up` on any heartbeat; `Suspect` once
//!   phi ≥ [`MembershipConfig::suspect_threshold`] (5: one chance in 10⁵
//!   that a live peer is this late); `Down` once phi ≥ the detector's
//!   threshold (8, the conviction level of DESIGN.md §5). Only a heartbeat
//!   leaves `Suspect` or `Down` (phi never falls without one). A peer just
//!   added starts `Suspect` — nothing has been heard yet — and its silence
//!   counts from when it was added, so a peer that is dead on arrival is
//!   convicted like any other.
//! - **Administrative state**, set by the controller with
//!   [`Membership::set_admin_state`]: `Joining` (catching up, not to be
//!   given work yet) or `Draining` (being decommissioned). Heartbeats do not
//!   override it.
//!
//! The reported state is `Down` if convicted (a dead node is dead whatever
//! its role, and the controller must know), else the administrative state if
//! any, else `Up`/`Suspect`. phi is always reported alongside, so a draining
//! node that is also suspect is still visible as such.
//!
//! Every change of the reported state is returned as a [`StateChange`] (and
//! broadcast by the service, see [`HeartbeatService::subscribe`]). A peer
//! always passes through `Suspect` on its way from `Up` to `Down`: phi is
//! continuous in time, so it did cross 5 before 8 even when one evaluation
//! saw both at once, and listeners get both steps in order.
//!
//! # Heartbeats
//!
//! Every 150 ms by default (DESIGN.md asks for 100–250 ms: fast enough to
//! convict in under a second, cheap enough — a frame of ~45 bytes (header
//! included) per peer — for hundreds of nodes). With the detector defaults (σ floor 37.5 ms,
//! acceptable pause 450 ms) a silent peer is `Suspect` after ~750 ms and
//! `Down` after ~800 ms; see [`phi`] for the arithmetic.
//!
//! A heartbeat ([`Heartbeat`], postcard) carries the sender's transport
//! incarnation (random per process start) and a send timestamp from the
//! sender's monotonic clock. A new incarnation means the peer restarted: its
//! detector history starts over (the old process's rhythm says nothing about
//! the new one). Within one incarnation, a heartbeat not newer than the last
//! one seen is dropped (a fault-filter delay or a reconnect can reorder
//! frames; counting a stale beat as fresh would hide a failure). The
//! timestamp is monotonic rather than wall-clock so that an NTP step on the
//! sender cannot make its heartbeats look stale.
//!
//! Sending is one-way and never waits for a connection
//! ([`Transport::send`](crate::transport::Transport::send) fails at once
//! with `Unreachable` and starts a dial), so a dead peer costs nothing but
//! a failed send per round. Each send is bounded by the interval, so one
//! peer's full write queue cannot delay the heartbeats of the others.
//!
//! The peers heartbeated are those with an address in the transport's table
//! (`set_peer` / `remove_peer` of [`crate::transport::Transport`]): one
//! source of truth, kept by whoever manages the cluster's nodes. A
//! heartbeat from a node not in it is ignored (a joining node is tracked
//! once it is added).

pub mod phi;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace};

use crate::transport::{Network, NodeId, TransportError};
pub use phi::{PhiAccrualDetector, PhiConfig};

/// The transport group heartbeats travel on: 0, the node/controller group.
pub const HEARTBEAT_GROUP: u64 = 0;
/// The message kind of a heartbeat on [`HEARTBEAT_GROUP`]. Group 0 also
/// carries the controller's Raft RPCs, whose kinds must not reuse it.
pub const HEARTBEAT_KIND: u16 = 1;

/// Whether a transport message is a heartbeat, for the node's handler.
pub fn is_heartbeat(group: u64, kind: u16) -> bool {
    group == HEARTBEAT_GROUP && kind == HEARTBEAT_KIND
}

/// A peer's state as this node reports it. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    Joining,
    Up,
    Suspect,
    Down,
    Draining,
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeState::Joining => "joining",
            NodeState::Up => "up",
            NodeState::Suspect => "suspect",
            NodeState::Down => "down",
            NodeState::Draining => "draining",
        })
    }
}

/// The states only the controller sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminState {
    Joining,
    Draining,
}

impl From<AdminState> for NodeState {
    fn from(a: AdminState) -> Self {
        match a {
            AdminState::Joining => NodeState::Joining,
            AdminState::Draining => NodeState::Draining,
        }
    }
}

/// What the detector alone says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Liveness {
    Up,
    Suspect,
    Down,
}

impl From<Liveness> for NodeState {
    fn from(l: Liveness) -> Self {
        match l {
            Liveness::Up => NodeState::Up,
            Liveness::Suspect => NodeState::Suspect,
            Liveness::Down => NodeState::Down,
        }
    }
}

/// Thresholds of a [`Membership`].
#[derive(Debug, Clone, PartialEq)]
pub struct MembershipConfig {
    /// phi at or above which an `Up` peer becomes `Suspect`. Default 5.
    pub suspect_threshold: f64,
    /// The detector settings; its `threshold` (default 8) convicts: `Down`.
    pub detector: PhiConfig,
}

impl MembershipConfig {
    /// Defaults for heartbeats every `interval`.
    pub fn for_interval(interval: Duration) -> Self {
        Self {
            suspect_threshold: 5.0,
            detector: PhiConfig::for_interval(interval),
        }
    }
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self::for_interval(HeartbeatConfig::DEFAULT_INTERVAL)
    }
}

/// One peer in [`Membership::view`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerStatus {
    pub id: NodeId,
    pub state: NodeState,
    pub phi: f64,
    /// `None` if nothing has been heard from it yet.
    pub last_heartbeat_ago_ms: Option<u64>,
    /// The incarnation of its last heartbeat.
    pub incarnation: Option<u64>,
}

/// A change of a peer's reported state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateChange {
    pub peer: NodeId,
    pub from: NodeState,
    pub to: NodeState,
    /// phi when it happened.
    pub phi: f64,
}

#[derive(Debug, Error)]
pub enum MembershipError {
    #[error("node {0} is not a known peer")]
    UnknownPeer(NodeId),
    #[error("malformed heartbeat: {0}")]
    Decode(#[from] postcard::Error),
}

/// The heartbeat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The sender's transport incarnation (changes when it restarts).
    pub incarnation: u64,
    /// The sender's monotonic clock at sending, in µs since an arbitrary
    /// per-process origin: comparable only within one incarnation.
    pub sent_at_micros: u64,
}

impl Heartbeat {
    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_stdvec(self).expect("a struct of integers serializes"))
    }

    /// Trailing bytes are ignored, so a later version may append fields.
    pub fn decode(payload: &[u8]) -> Result<Self, MembershipError> {
        Ok(postcard::from_bytes(payload)?)
    }
}

/// µs on this process's monotonic clock, for [`Heartbeat::sent_at_micros`].
fn monotonic_micros() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX)
}

#[derive(Debug)]
struct Peer {
    detector: PhiAccrualDetector,
    liveness: Liveness,
    admin: Option<AdminState>,
    /// (incarnation, sent_at) of the last heartbeat message accepted.
    last_msg: Option<(u64, u64)>,
}

impl Peer {
    fn state(&self) -> NodeState {
        match (self.liveness, self.admin) {
            (Liveness::Down, _) => NodeState::Down,
            (_, Some(admin)) => admin.into(),
            (l, None) => l.into(),
        }
    }
}

/// Per-peer liveness and administrative states. See the module docs.
#[derive(Debug)]
pub struct Membership {
    config: MembershipConfig,
    peers: BTreeMap<NodeId, Peer>,
}

impl Membership {
    pub fn new(config: MembershipConfig) -> Self {
        Self {
            config,
            peers: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &MembershipConfig {
        &self.config
    }

    /// Starts tracking a peer (state `Suspect` until it is heard; silence
    /// counts from `now`). False if it was already tracked.
    pub fn add_peer(&mut self, id: NodeId, now: Instant) -> bool {
        if self.peers.contains_key(&id) {
            return false;
        }
        self.peers.insert(
            id,
            Peer {
                detector: PhiAccrualDetector::new(self.config.detector.clone(), now),
                liveness: Liveness::Suspect,
                admin: None,
                last_msg: None,
            },
        );
        true
    }

    /// Stops tracking a peer. False if it was unknown.
    pub fn remove_peer(&mut self, id: NodeId) -> bool {
        self.peers.remove(&id).is_some()
    }

    /// Tracked peers, ascending.
    pub fn peers(&self) -> Vec<NodeId> {
        self.peers.keys().copied().collect()
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.peers.contains_key(&id)
    }

    pub fn state(&self, id: NodeId) -> Option<NodeState> {
        self.peers.get(&id).map(Peer::state)
    }

    pub fn phi(&self, id: NodeId, now: Instant) -> Option<f64> {
        self.peers.get(&id).map(|p| p.detector.phi(now))
    }

    /// A heartbeat from `from` arrived at `now`: feeds the detector and
    /// brings the peer back `Up` (the reported state stays administrative
    /// if one is set). Returns the change of reported state, if any.
    pub fn record_heartbeat(
        &mut self,
        from: NodeId,
        now: Instant,
    ) -> Result<Option<StateChange>, MembershipError> {
        let peer = self
            .peers
            .get_mut(&from)
            .ok_or(MembershipError::UnknownPeer(from))?;
        let before = peer.state();
        peer.detector.heartbeat(now);
        peer.liveness = Liveness::Up;
        Ok(change(from, before, peer, now))
    }

    /// A decoded heartbeat message: like [`Self::record_heartbeat`], after
    /// handling restarts (new incarnation: history starts over) and stale
    /// messages (not newer than the last one: ignored, `Ok(None)`).
    pub fn record_heartbeat_msg(
        &mut self,
        from: NodeId,
        msg: &Heartbeat,
        now: Instant,
    ) -> Result<Option<StateChange>, MembershipError> {
        let config = self.config.detector.clone();
        let peer = self
            .peers
            .get_mut(&from)
            .ok_or(MembershipError::UnknownPeer(from))?;
        match peer.last_msg {
            Some((inc, sent)) if inc == msg.incarnation && msg.sent_at_micros <= sent => {
                trace!(peer = from, "stale heartbeat dropped");
                return Ok(None);
            }
            Some((inc, _)) if inc != msg.incarnation => {
                debug!(
                    peer = from,
                    old = inc,
                    new = msg.incarnation,
                    "peer restarted; detector history reset"
                );
                peer.detector = PhiAccrualDetector::new(config, now);
            }
            _ => {}
        }
        peer.last_msg = Some((msg.incarnation, msg.sent_at_micros));
        self.record_heartbeat(from, now)
    }

    /// Re-evaluates every peer at `now`; returns the state changes, in
    /// peer order (`Up → Suspect → Down` as two changes when both
    /// thresholds were crossed since the last tick).
    pub fn tick(&mut self, now: Instant) -> Vec<StateChange> {
        let suspect = self.config.suspect_threshold;
        let convict = self.config.detector.threshold;
        let mut changes = Vec::new();
        for (&id, peer) in self.peers.iter_mut() {
            let phi = peer.detector.phi(now);
            let mut steps = Vec::new();
            if phi >= suspect && peer.liveness == Liveness::Up {
                steps.push(Liveness::Suspect);
            }
            if phi >= convict && peer.liveness != Liveness::Down {
                steps.push(Liveness::Down);
            }
            for step in steps {
                let before = peer.state();
                peer.liveness = step;
                changes.extend(change(id, before, peer, now));
            }
        }
        changes
    }

    /// Sets (`Some`) or clears (`None`) a peer's administrative state.
    pub fn set_admin_state(
        &mut self,
        id: NodeId,
        admin: Option<AdminState>,
        now: Instant,
    ) -> Result<Option<StateChange>, MembershipError> {
        let peer = self
            .peers
            .get_mut(&id)
            .ok_or(MembershipError::UnknownPeer(id))?;
        let before = peer.state();
        peer.admin = admin;
        Ok(change(id, before, peer, now))
    }

    /// Every tracked peer as of `now`, ascending by id.
    pub fn view(&self, now: Instant) -> Vec<PeerStatus> {
        self.peers
            .iter()
            .map(|(&id, p)| PeerStatus {
                id,
                state: p.state(),
                phi: p.detector.phi(now),
                last_heartbeat_ago_ms: p.detector.last_heartbeat().map(|t| {
                    u64::try_from(now.saturating_duration_since(t).as_millis()).unwrap_or(u64::MAX)
                }),
                incarnation: p.last_msg.map(|(inc, _)| inc),
            })
            .collect()
    }
}

fn change(id: NodeId, before: NodeState, peer: &Peer, now: Instant) -> Option<StateChange> {
    let after = peer.state();
    (before != after).then(|| StateChange {
        peer: id,
        from: before,
        to: after,
        phi: peer.detector.phi(now),
    })
}

/// Settings of a [`HeartbeatService`].
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatConfig {
    /// Time between heartbeat rounds (and evaluations). Default 150 ms.
    pub interval: Duration,
    pub membership: MembershipConfig,
}

impl HeartbeatConfig {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(150);

    /// Heartbeats every `interval`, detector defaults scaled to it.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            membership: MembershipConfig::for_interval(interval),
        }
    }
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self::new(Self::DEFAULT_INTERVAL)
    }
}

/// State changes kept for slow subscribers before they lag.
const EVENT_CAPACITY: usize = 1024;

/// Membership kept live: sends heartbeats, receives them, evaluates peers.
///
/// Cheap to clone; clones share the state. It holds no [`Network`], so
/// the transport's handler can own a clone without a reference cycle (a
/// handler that held the transport would keep it alive forever); the
/// sending loop gets the transport in [`HeartbeatService::start`].
#[derive(Clone)]
pub struct HeartbeatService {
    shared: Arc<Shared>,
}

struct Shared {
    config: HeartbeatConfig,
    membership: Mutex<Membership>,
    events: broadcast::Sender<StateChange>,
}

impl fmt::Debug for HeartbeatService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeartbeatService")
            .field("config", &self.shared.config)
            // try_lock: formatting must not deadlock inside with_membership.
            .field(
                "peers",
                &self.shared.membership.try_lock().map(|m| m.peers()),
            )
            .finish()
    }
}

/// The clock the service uses: tokio's, so paused-time tests work too.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl HeartbeatService {
    pub fn new(config: HeartbeatConfig) -> Self {
        let membership = Membership::new(config.membership.clone());
        Self {
            shared: Arc::new(Shared {
                config,
                membership: Mutex::new(membership),
                events: broadcast::channel(EVENT_CAPACITY).0,
            }),
        }
    }

    pub fn config(&self) -> &HeartbeatConfig {
        &self.shared.config
    }

    /// Handles a heartbeat payload from `from`; the node's transport handler
    /// calls this for messages where [`is_heartbeat`] holds. Stale
    /// heartbeats are dropped silently; an unknown sender or a malformed
    /// payload is an error (worth a debug log, nothing more).
    pub fn on_heartbeat(&self, from: NodeId, payload: &[u8]) -> Result<(), MembershipError> {
        let msg = Heartbeat::decode(payload)?;
        let change = self
            .shared
            .membership
            .lock()
            .record_heartbeat_msg(from, &msg, now())?;
        self.publish(change);
        Ok(())
    }

    /// Every tracked peer now.
    pub fn view(&self) -> Vec<PeerStatus> {
        self.shared.membership.lock().view(now())
    }

    pub fn state(&self, peer: NodeId) -> Option<NodeState> {
        self.shared.membership.lock().state(peer)
    }

    /// See [`Membership::set_admin_state`]; the change is broadcast.
    pub fn set_admin_state(
        &self,
        peer: NodeId,
        admin: Option<AdminState>,
    ) -> Result<Option<StateChange>, MembershipError> {
        let change = self
            .shared
            .membership
            .lock()
            .set_admin_state(peer, admin, now())?;
        self.publish(change.clone());
        Ok(change)
    }

    /// State changes from now on. A receiver that falls more than 1024
    /// changes behind gets `Lagged` and should re-read [`Self::view`].
    pub fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.shared.events.subscribe()
    }

    /// Direct access to the membership state (e.g. to read phi, or in tests).
    pub fn with_membership<R>(&self, f: impl FnOnce(&mut Membership) -> R) -> R {
        f(&mut self.shared.membership.lock())
    }

    fn publish(&self, changes: impl IntoIterator<Item = StateChange>) {
        for c in changes {
            match c.to {
                NodeState::Down | NodeState::Up => {
                    info!(peer = c.peer, from = %c.from, to = %c.to, phi = c.phi, "peer state changed")
                }
                _ => {
                    debug!(peer = c.peer, from = %c.from, to = %c.to, phi = c.phi, "peer state changed")
                }
            }
            // No subscriber is fine: the view is always there to read.
            let _ = self.shared.events.send(c);
        }
    }

    /// Starts the heartbeat loop on `transport` (sending as its node id and
    /// incarnation). It runs until the returned task is stopped or dropped,
    /// or the transport shuts down. Must be called inside a tokio runtime.
    pub fn start(&self, transport: impl Into<Network>) -> HeartbeatTask {
        let cancel = CancellationToken::new();
        let handle = tokio::spawn(self.clone().run(transport.into(), cancel.clone()));
        HeartbeatTask {
            cancel,
            handle: Some(handle),
        }
    }

    async fn run(self, transport: Network, cancel: CancellationToken) {
        let interval = self.shared.config.interval;
        let mut ticker = tokio::time::interval(interval);
        // After a stall, carry on at the normal rhythm rather than bursting
        // the missed rounds (a burst would look like jitter to the peers).
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let peers = self.sync_peers(&transport);
            let payload = Heartbeat {
                incarnation: transport.incarnation(),
                sent_at_micros: monotonic_micros(),
            }
            .encode();
            let sends = peers.iter().map(|&peer| {
                let (transport, payload) = (&transport, payload.clone());
                async move {
                    let sent = tokio::time::timeout(
                        interval,
                        transport.send(peer, HEARTBEAT_GROUP, HEARTBEAT_KIND, payload),
                    )
                    .await;
                    (peer, sent)
                }
            });
            let results = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                r = futures::future::join_all(sends) => r,
            };
            for (peer, sent) in results {
                match sent {
                    Ok(Ok(())) => {}
                    // Expected while a peer is down; the send started a dial.
                    Ok(Err(TransportError::Unreachable { .. })) => {
                        trace!(peer, "heartbeat: peer unreachable")
                    }
                    Ok(Err(TransportError::Shutdown)) => return,
                    Ok(Err(e)) => debug!(peer, error = %e, "heartbeat not sent"),
                    Err(_) => debug!(peer, "heartbeat not sent: write queue full"),
                }
            }
            let changes = self.shared.membership.lock().tick(now());
            self.publish(changes);
        }
    }

    /// Tracks exactly the peers with an address in the transport's table;
    /// returns them.
    fn sync_peers(&self, transport: &Network) -> Vec<NodeId> {
        let wanted: BTreeSet<NodeId> = transport
            .peers()
            .into_iter()
            .filter_map(|(id, addr)| addr.map(|_| id))
            .collect();
        let mut m = self.shared.membership.lock();
        let now = now();
        for gone in m.peers().into_iter().filter(|p| !wanted.contains(p)) {
            m.remove_peer(gone);
        }
        for &id in &wanted {
            m.add_peer(id, now);
        }
        wanted.into_iter().collect()
    }
}

/// The running heartbeat loop. Dropping it stops the loop (without
/// waiting); [`HeartbeatTask::stop`] stops it and waits.
#[derive(Debug)]
pub struct HeartbeatTask {
    cancel: CancellationToken,
    handle: Option<JoinHandle<()>>,
}

impl HeartbeatTask {
    /// Stops the loop and waits until it has exited (no more heartbeats).
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(handle) = self.handle.take() {
            // A panic in the loop surfaces here rather than vanishing.
            if let Err(e) = handle.await
                && e.is_panic()
            {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }

    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for HeartbeatTask {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[cfg(test)]
mod tests;
