//! The machinery behind [`Transport`](super::Transport): the peer table
//! (a slot per peer holding its one connection), waiting for a
//! connection, registering one, and the per-connection reader and writer
//! loops with their fault filter. How a connection comes to be is in
//! `dial` (ours) and `accept` (theirs, with the tie-break); both extend
//! this file's `Inner`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, SinkExt, StreamExt};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::time::{Instant, sleep, sleep_until, timeout_at};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use super::fault::{Direction, FaultFilter};
use super::frame::{Frame, FrameCodec, FrameType, Header};
use super::metrics::PeerMetrics;
use super::secure::{InboundGate, SecurityMetrics};
use super::{Handler, NodeId, RemoteError, TransportConfig, TransportError};
use crate::tls::{ReadHalf, WriteHalf};

type Reader = FramedRead<ReadHalf, FrameCodec>;
type Writer = FramedWrite<WriteHalf, FrameCodec>;

type Reply = oneshot::Sender<Result<Bytes, TransportError>>;

/// Most frames the writer feeds before it flushes; bounds the latency a
/// flood of queued frames can add to the first of them.
const MAX_WRITE_BATCH: usize = 128;

/// State shared by a transport's handle and all of its tasks.
pub(crate) struct Inner {
    pub config: TransportConfig,
    pub local_addr: SocketAddr,
    /// Random per `bind`; sent in hellos so peers can tell a restart of this
    /// node from a second connection of the same run.
    pub incarnation: u64,
    pub handler: Arc<dyn Handler>,
    pub peers: RwLock<HashMap<NodeId, Arc<PeerSlot>>>,
    /// Peers removed from the table; their hellos are refused until they
    /// are added again, so a removed node cannot come back by dialing us.
    pub(super) removed: Mutex<HashSet<NodeId>>,
    pub faults: Arc<FaultFilter>,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    pub(super) next_conn_id: AtomicU64,
    /// Caps on inbound connections (see `secure.rs`).
    pub gate: Arc<InboundGate>,
    pub security: Arc<SecurityMetrics>,
    pub(super) tls_acceptor: Option<tokio_rustls::TlsAcceptor>,
    pub(super) tls_connector: Option<tokio_rustls::TlsConnector>,
    /// When an inbound handshake failure was last logged at warn.
    pub(super) last_handshake_warn: Mutex<Option<std::time::Instant>>,
}

/// Everything this node knows about one peer.
pub(crate) struct PeerSlot {
    pub id: NodeId,
    pub state: Mutex<SlotState>,
    /// Bumped on every change of `state.conn` (and removal), so callers
    /// waiting for a connection wake up without polling.
    pub changed: watch::Sender<()>,
    pub metrics: Arc<PeerMetrics>,
}

#[derive(Default)]
pub(crate) struct SlotState {
    /// Where to dial; `None` for a peer that dialed us but is not in the table.
    pub addr: Option<SocketAddr>,
    /// The one live connection, whichever side dialed it.
    pub conn: Option<Arc<Conn>>,
    /// A TCP connect + hello of ours to this peer is in flight (not the
    /// backoff sleep between attempts): the tie-break looks at this.
    pub dialing: bool,
    /// A dial loop task exists for this peer.
    pub dialer_running: bool,
    /// Removed from the peer table: stop dialing, refuse calls.
    pub removed: bool,
    /// Why the last dial failed, for `Unreachable` errors.
    pub last_error: Option<String>,
}

/// One established connection (after the handshake).
pub(crate) struct Conn {
    pub id: u64,
    pub peer: NodeId,
    pub peer_incarnation: u64,
    pub dialed_by_us: bool,
    pub local_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    /// Frames to write; the writer loop owns the receiving end.
    pub tx: mpsc::Sender<Frame>,
    /// Calls waiting for an answer, by request id. `None` once the connection
    /// is torn down, so a late registration fails at once instead of waiting
    /// for its deadline.
    pub(super) pending: Mutex<Option<HashMap<u64, Reply>>>,
    pub(super) next_request_id: AtomicU64,
    /// Cancelled to close this connection (replaced, peer removed, shutdown).
    pub cancel: CancellationToken,
    /// When the connection was installed, and the last frame read, in ms
    /// since then (for the idle timeout; an atomic store per frame).
    pub(super) started: Instant,
    pub(super) last_read_ms: AtomicU64,
}

impl Conn {
    pub(super) fn register(
        &self,
    ) -> Result<(u64, oneshot::Receiver<Result<Bytes, TransportError>>), TransportError> {
        let id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        match self.pending.lock().as_mut() {
            Some(map) => {
                map.insert(id, tx);
                Ok((id, rx))
            }
            None => Err(TransportError::ConnectionLost { peer: self.peer }),
        }
    }

    /// Hands an answer to its call; false if nobody waits for it any more.
    pub(super) fn complete(&self, id: u64, result: Result<Bytes, TransportError>) -> bool {
        let reply = self.pending.lock().as_mut().and_then(|m| m.remove(&id));
        match reply {
            Some(tx) => tx.send(result).is_ok(),
            None => false,
        }
    }

    pub(super) fn forget(&self, id: u64) {
        if let Some(m) = self.pending.lock().as_mut() {
            m.remove(&id);
        }
    }

    /// Fails every pending call now and refuses new ones.
    pub(super) fn fail_all(&self, err: &TransportError) {
        let pending = self.pending.lock().take();
        for (_, tx) in pending.into_iter().flatten() {
            let _ = tx.send(Err(err.clone()));
        }
    }
}

pub(super) fn new_slot(id: NodeId) -> Arc<PeerSlot> {
    Arc::new(PeerSlot {
        id,
        state: Mutex::new(SlotState::default()),
        changed: watch::Sender::new(()),
        metrics: Arc::new(PeerMetrics::default()),
    })
}

/// Removes a call's pending entry however the call ends (answer, timeout,
/// or the caller's future being dropped), so the map never leaks.
struct PendingGuard<'a> {
    conn: &'a Conn,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.conn.forget(self.id);
    }
}

impl Inner {
    pub fn new(config: TransportConfig, local_addr: SocketAddr, handler: Arc<dyn Handler>) -> Self {
        let faults = Arc::new(FaultFilter::new(config.fault_seed));
        let gate = InboundGate::new(
            config.max_inbound_connections,
            config.max_inbound_connections_per_ip,
        );
        let tls_acceptor = config
            .tls
            .as_ref()
            .map(|t| tokio_rustls::TlsAcceptor::from(t.server.clone()));
        let tls_connector = config
            .tls
            .as_ref()
            .map(|t| tokio_rustls::TlsConnector::from(t.client.clone()));
        Self {
            gate,
            security: Arc::default(),
            tls_acceptor,
            tls_connector,
            last_handshake_warn: Mutex::new(None),
            config,
            local_addr,
            // Zero is never used so that a zeroed hello cannot match.
            incarnation: rand::random::<u64>() | 1,
            handler,
            peers: RwLock::new(HashMap::new()),
            removed: Mutex::new(HashSet::new()),
            faults,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            next_conn_id: AtomicU64::new(1),
        }
    }

    pub(super) fn codec(&self) -> FrameCodec {
        FrameCodec::new(self.config.max_payload_len)
    }

    pub fn slot(&self, id: NodeId) -> Option<Arc<PeerSlot>> {
        self.peers.read().get(&id).cloned()
    }

    pub(super) fn slot_or_insert(&self, id: NodeId) -> Arc<PeerSlot> {
        if let Some(s) = self.slot(id) {
            return s;
        }
        self.peers
            .write()
            .entry(id)
            .or_insert_with(|| new_slot(id))
            .clone()
    }

    /// The slot for a peer that dialed us, created if unknown; `None` if the
    /// peer was removed. Checked under the table lock (see `remove_peer`).
    pub(super) fn slot_for_inbound(&self, id: NodeId) -> Option<Arc<PeerSlot>> {
        let peers = self.peers.read();
        if self.removed.lock().contains(&id) {
            return None;
        }
        if let Some(s) = peers.get(&id) {
            return Some(s.clone());
        }
        drop(peers);
        let mut peers = self.peers.write();
        if self.removed.lock().contains(&id) {
            return None;
        }
        Some(peers.entry(id).or_insert_with(|| new_slot(id)).clone())
    }

    pub fn set_peer(&self, id: NodeId, addr: SocketAddr) {
        self.removed.lock().remove(&id);
        let slot = self.slot_or_insert(id);
        slot.state.lock().addr = Some(addr);
        // A waiting call may now be able to dial.
        slot.changed.send_replace(());
    }

    pub fn remove_peer(&self, id: NodeId) -> bool {
        let slot = {
            // Ban and removal under the table lock, so that an inbound
            // hello either finds the old slot (marked removed below) or
            // the ban: never a fresh slot.
            let mut peers = self.peers.write();
            self.removed.lock().insert(id);
            peers.remove(&id)
        };
        let Some(slot) = slot else {
            return false;
        };
        let conn = {
            let mut st = slot.state.lock();
            st.removed = true;
            st.conn.take()
        };
        if let Some(c) = conn {
            c.cancel.cancel();
        }
        slot.changed.send_replace(());
        true
    }

    /// Returns the live connection to `slot`, starting a dialer and waiting
    /// for one (dialed by either side) until `deadline_at`.
    pub async fn wait_for_conn(
        self: &Arc<Self>,
        slot: &Arc<PeerSlot>,
        deadline_at: Instant,
    ) -> Result<Arc<Conn>, TransportError> {
        // Subscribe before looking, so a change between the look and the
        // wait is not missed.
        let mut changed = slot.changed.subscribe();
        loop {
            {
                let st = slot.state.lock();
                if let Some(c) = &st.conn {
                    return Ok(c.clone());
                }
                if st.removed {
                    return Err(TransportError::UnknownPeer { peer: slot.id });
                }
            }
            self.ensure_dialer(slot);
            match timeout_at(deadline_at, changed.changed()).await {
                Ok(Ok(())) => continue,
                // The sender lives in the slot we hold, so Ok(Err) cannot
                // happen; treat it like the deadline rather than spin.
                Ok(Err(_)) | Err(_) => {
                    let reason = slot
                        .state
                        .lock()
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "not connected yet".to_owned());
                    return Err(TransportError::Unreachable {
                        peer: slot.id,
                        reason,
                    });
                }
            }
        }
    }

    /// Starts the dial loop for `slot` unless one runs, a connection exists,
    /// or there is nothing to dial.
    pub fn ensure_dialer(self: &Arc<Self>, slot: &Arc<PeerSlot>) {
        {
            let mut st = slot.state.lock();
            if st.dialer_running
                || st.conn.is_some()
                || st.addr.is_none()
                || st.removed
                || self.shutdown.is_cancelled()
            {
                return;
            }
            st.dialer_running = true;
        }
        self.tasks.spawn(self.clone().dial_loop(slot.clone()));
    }

    pub(super) fn handshake_frame(&self, frame_type: FrameType, payload: Bytes) -> Frame {
        Frame {
            header: Header {
                frame_type,
                kind: 0,
                from: self.config.node_id,
                group: 0,
                request_id: 0,
            },
            payload,
        }
    }

    /// Registers a new connection as the peer's one connection, replacing
    /// (and closing) any previous one. Called with the slot locked, so the
    /// decision and the registration are one atomic step.
    pub(super) fn install_conn(
        &self,
        slot: &PeerSlot,
        st: &mut SlotState,
        peer_incarnation: u64,
        dialed_by_us: bool,
        local_addr: SocketAddr,
        peer_addr: SocketAddr,
    ) -> (Arc<Conn>, mpsc::Receiver<Frame>) {
        let (tx, rx) = mpsc::channel(self.config.write_queue_len.max(1));
        let conn = Arc::new(Conn {
            id: self.next_conn_id.fetch_add(1, Ordering::Relaxed),
            peer: slot.id,
            peer_incarnation,
            dialed_by_us,
            local_addr,
            peer_addr,
            tx,
            pending: Mutex::new(Some(HashMap::new())),
            next_request_id: AtomicU64::new(1),
            cancel: self.shutdown.child_token(),
            started: Instant::now(),
            last_read_ms: AtomicU64::new(0),
        });
        if let Some(old) = st.conn.replace(conn.clone()) {
            old.cancel.cancel();
        }
        PeerMetrics::inc(&slot.metrics.connections_established);
        slot.changed.send_replace(());
        (conn, rx)
    }

    /// Runs one connection until it fails or is closed, then tears it down:
    /// unregister, fail pending calls at once, and start reconnecting.
    pub(super) async fn run_conn(
        self: Arc<Self>,
        slot: Arc<PeerSlot>,
        conn: Arc<Conn>,
        reader: Reader,
        writer: Writer,
        rx: mpsc::Receiver<Frame>,
    ) {
        debug!(
            me = self.config.node_id,
            peer = conn.peer,
            conn = conn.id,
            dialed_by_us = conn.dialed_by_us,
            "connection established"
        );
        let outcome = tokio::select! {
            _ = conn.cancel.cancelled() => Ok(()),
            r = self.read_loop(&slot, &conn, reader) => r,
            r = write_loop(&slot.metrics, writer, rx) => r,
            idle = idle_watch(&conn, self.config.idle_timeout) => {
                self.security.idle_closed.fetch_add(1, Ordering::Relaxed);
                Err(format!("no frame received for {idle:?} (idle timeout)"))
            }
        };
        // Both socket halves are dropped here, so the peer sees the close now.
        match &outcome {
            Ok(()) => debug!(peer = conn.peer, conn = conn.id, "connection closed"),
            Err(e) => info!(peer = conn.peer, conn = conn.id, error = %e, "connection failed"),
        }
        let redial = {
            let mut st = slot.state.lock();
            if st.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn)) {
                st.conn = None;
                slot.changed.send_replace(());
            }
            st.conn.is_none() && !st.removed
        };
        conn.cancel.cancel();
        let err = if self.shutdown.is_cancelled() {
            TransportError::Shutdown
        } else {
            TransportError::ConnectionLost { peer: conn.peer }
        };
        conn.fail_all(&err);
        if redial {
            self.ensure_dialer(&slot);
        }
    }

    pub(super) async fn read_loop(
        &self,
        slot: &Arc<PeerSlot>,
        conn: &Arc<Conn>,
        mut reader: Reader,
    ) -> Result<(), String> {
        let metrics = &slot.metrics;
        // Bounds the handler tasks of this connection; past it requests are
        // refused with OVERLOADED (see below).
        let permits = Arc::new(Semaphore::new(self.config.max_inbound_in_flight.max(1)));
        while let Some(item) = reader.next().await {
            let frame = item.map_err(|e| e.to_string())?;
            conn.last_read_ms
                .store(conn.started.elapsed().as_millis() as u64, Ordering::Relaxed);
            PeerMetrics::inc(&metrics.frames_received);
            PeerMetrics::add(&metrics.bytes_received, frame.wire_len());
            let h = frame.header;
            if h.from != conn.peer {
                return Err(format!(
                    "frame claims to be from node {} on the connection with node {}",
                    h.from, conn.peer
                ));
            }
            let Some(delay) =
                self.faults
                    .judge(Direction::Inbound, conn.peer, h.group, h.kind, metrics)
            else {
                continue;
            };
            match h.frame_type {
                FrameType::Request | FrameType::OneWay => match permits.clone().try_acquire_owned()
                {
                    Ok(permit) => self.spawn_handler(conn, metrics, frame, delay, permit),
                    Err(_) => {
                        // Refuse rather than stop reading: a blocked reader
                        // would also hold up the answers to our own calls on
                        // this connection, and two nodes whose handlers call
                        // each other could deadlock until their deadlines.
                        PeerMetrics::inc(&metrics.requests_rejected_overload);
                        if h.frame_type == FrameType::Request {
                            let err = RemoteError::new(
                                RemoteError::OVERLOADED,
                                format!(
                                    "node {} has {} requests of this connection in flight",
                                    self.config.node_id, self.config.max_inbound_in_flight
                                ),
                            );
                            let reply = Frame {
                                header: Header {
                                    frame_type: FrameType::Error,
                                    from: self.config.node_id,
                                    ..h
                                },
                                payload: err.encode(),
                            };
                            // Never wait on the write queue from the reader.
                            let _ = conn.tx.try_send(reply);
                        }
                    }
                },
                FrameType::Response | FrameType::Error => {
                    if delay.is_zero() {
                        complete_call(conn, metrics, frame);
                    } else {
                        let (conn, metrics) = (conn.clone(), metrics.clone());
                        tokio::spawn(async move {
                            sleep(delay).await;
                            complete_call(&conn, &metrics, frame);
                        });
                    }
                }
                FrameType::Hello
                | FrameType::HelloAck
                | FrameType::AuthChallenge
                | FrameType::AuthProof => {
                    return Err("handshake frame after the handshake".to_owned());
                }
            }
        }
        Ok(())
    }

    /// Runs the handler for one request on its own task, so a slow request
    /// (or a slow group) never holds up the reader or other requests.
    pub(super) fn spawn_handler(
        &self,
        conn: &Arc<Conn>,
        metrics: &Arc<PeerMetrics>,
        frame: Frame,
        delay: Duration,
        permit: OwnedSemaphorePermit,
    ) {
        let handler = self.handler.clone();
        let faults = self.faults.clone();
        let (conn, metrics) = (conn.clone(), metrics.clone());
        let me = self.config.node_id;
        let max = self.config.max_payload_len;
        tokio::spawn(async move {
            let _permit = permit;
            if !delay.is_zero() {
                sleep(delay).await;
            }
            let h = frame.header;
            let panicked = || {
                Err(RemoteError::new(
                    RemoteError::HANDLER_PANICKED,
                    format!("handler panicked on group {} kind {}", h.group, h.kind),
                ))
            };
            // A panicking handler must cost one answer, not the connection.
            let result = match std::panic::catch_unwind(AssertUnwindSafe(|| {
                handler.handle(conn.peer, h.group, h.kind, frame.payload)
            })) {
                Ok(fut) => AssertUnwindSafe(fut)
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| panicked()),
                Err(_) => panicked(),
            };
            if h.frame_type == FrameType::OneWay {
                if let Err(e) = result {
                    debug!(peer = conn.peer, group = h.group, kind = h.kind, error = %e, "one-way handler failed");
                }
                return;
            }
            let too_large = |what: &str, len: usize| {
                RemoteError::new(
                    RemoteError::RESPONSE_TOO_LARGE,
                    format!("{what} of {len} bytes exceeds the frame limit of {max}"),
                )
                .encode()
            };
            let (frame_type, payload) = match result {
                Ok(b) if b.len() > max => (FrameType::Error, too_large("response", b.len())),
                Ok(b) => (FrameType::Response, b),
                Err(e) => {
                    let p = e.encode();
                    if p.len() > max {
                        (FrameType::Error, too_large("error message", p.len()))
                    } else {
                        (FrameType::Error, p)
                    }
                }
            };
            let reply = Frame {
                header: Header {
                    frame_type,
                    kind: h.kind,
                    from: me,
                    group: h.group,
                    request_id: h.request_id,
                },
                payload,
            };
            send_filtered(&faults, &conn, &metrics, reply).await;
        });
    }

    /// The body of `Transport::call` once the peer slot is known.
    pub async fn call_on(
        self: &Arc<Self>,
        slot: &Arc<PeerSlot>,
        group: u64,
        kind: u16,
        payload: Bytes,
        deadline: Duration,
        deadline_at: Instant,
    ) -> Result<Bytes, TransportError> {
        let peer = slot.id;
        let timed_out = TransportError::Timeout { peer, deadline };
        let conn = self.wait_for_conn(slot, deadline_at).await?;
        // Lost or late on the "wire": the caller learns only from its deadline.
        if self
            .faults
            .delay_call(peer, group, kind, &slot.metrics, deadline_at)
            .await
            .is_err()
        {
            return Err(timed_out);
        }
        let (request_id, rx) = conn.register()?;
        let _guard = PendingGuard {
            conn: &conn,
            id: request_id,
        };
        let frame = Frame {
            header: Header {
                frame_type: FrameType::Request,
                kind,
                from: self.config.node_id,
                group,
                request_id,
            },
            payload,
        };
        match timeout_at(deadline_at, conn.tx.send(frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(TransportError::ConnectionLost { peer }),
            Err(_) => return Err(timed_out),
        }
        match timeout_at(deadline_at, rx).await {
            Ok(Ok(result)) => result,
            // The reply sender was dropped without an answer: torn down.
            Ok(Err(_)) => Err(TransportError::ConnectionLost { peer }),
            Err(_) => Err(timed_out),
        }
    }

    /// The body of `Transport::send`: never waits for a connection.
    pub async fn send_on(
        self: &Arc<Self>,
        slot: &Arc<PeerSlot>,
        group: u64,
        kind: u16,
        payload: Bytes,
    ) -> Result<(), TransportError> {
        let conn = slot.state.lock().conn.clone();
        let Some(conn) = conn else {
            self.ensure_dialer(slot);
            let reason = slot
                .state
                .lock()
                .last_error
                .clone()
                .unwrap_or_else(|| "not connected".to_owned());
            return Err(TransportError::Unreachable {
                peer: slot.id,
                reason,
            });
        };
        let frame = Frame {
            header: Header {
                frame_type: FrameType::OneWay,
                kind,
                from: self.config.node_id,
                group,
                request_id: 0,
            },
            payload,
        };
        match self
            .faults
            .judge(Direction::Outbound, slot.id, group, kind, &slot.metrics)
        {
            None => Ok(()),
            Some(d) if d.is_zero() => conn
                .tx
                .send(frame)
                .await
                .map_err(|_| TransportError::ConnectionLost { peer: slot.id }),
            Some(d) => {
                // The sender does not wait for an injected delay, as it would
                // not wait for a slow network.
                tokio::spawn(async move {
                    sleep(d).await;
                    let _ = conn.tx.send(frame).await;
                });
                Ok(())
            }
        }
    }
}

/// Sends a frame through the outbound fault filter; a lost connection is
/// ignored here because the caller on the other side sees it.
pub(super) async fn send_filtered(
    faults: &FaultFilter,
    conn: &Conn,
    metrics: &PeerMetrics,
    frame: Frame,
) {
    let h = frame.header;
    let Some(delay) = faults.judge(Direction::Outbound, conn.peer, h.group, h.kind, metrics) else {
        return;
    };
    if !delay.is_zero() {
        sleep(delay).await;
    }
    let _ = conn.tx.send(frame).await;
}

pub(super) fn complete_call(conn: &Conn, metrics: &PeerMetrics, frame: Frame) {
    let result = match frame.header.frame_type {
        FrameType::Response => Ok(frame.payload),
        _ => Err(TransportError::Remote {
            peer: conn.peer,
            error: RemoteError::decode(frame.payload),
        }),
    };
    if !conn.complete(frame.header.request_id, result) {
        PeerMetrics::inc(&metrics.late_responses);
    }
}

/// Completes once `conn` has received no frame for `idle`; checks twice per
/// `idle` (the reader only stores a timestamp per frame, no timer).
pub(super) async fn idle_watch(conn: &Conn, idle: Duration) -> Duration {
    let idle = idle.max(Duration::from_millis(10));
    loop {
        let last = conn.started + Duration::from_millis(conn.last_read_ms.load(Ordering::Relaxed));
        let due = last + idle;
        if Instant::now() >= due {
            return idle;
        }
        sleep_until(due.min(Instant::now() + idle / 2)).await;
    }
}

/// Writes queued frames, feeding all that are ready before one flush, so a
/// burst of calls costs few syscalls.
pub(super) async fn write_loop(
    metrics: &PeerMetrics,
    mut writer: Writer,
    mut rx: mpsc::Receiver<Frame>,
) -> Result<(), String> {
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut batch = 0;
        while let Some(frame) = next {
            let len = frame.wire_len();
            writer.feed(frame).await.map_err(|e| e.to_string())?;
            PeerMetrics::inc(&metrics.frames_sent);
            PeerMetrics::add(&metrics.bytes_sent, len);
            batch += 1;
            next = if batch < MAX_WRITE_BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        writer.flush().await.map_err(|e| e.to_string())?;
    }
    Ok(())
}
