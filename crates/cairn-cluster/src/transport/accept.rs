//! Accepting a peer's connection: the accept loop (behind the inbound
//! caps), the inbound handshake (TLS, hello, the secret's challenge) and
//! the tie-break between two connections of one node pair
//! ([`accept_inbound`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep, timeout};
use tokio_util::codec::{FramedRead, FramedWrite};
use tracing::{debug, info, warn};

use super::NodeId;
use super::frame::{AuthChallenge, AuthProof, FrameCodec, FrameType, Hello, HelloAck, HelloStatus};
use super::secure::{self, HandshakeFailure, HandshakeInput, InboundPermit, Role};
use crate::tls::{self, ReadHalf, WriteHalf};

type Reader = FramedRead<ReadHalf, FrameCodec>;
type Writer = FramedWrite<WriteHalf, FrameCodec>;

use super::conn::Inner;

/// Inbound handshake failures are logged at warn at most this often (the
/// rest at debug; all are counted), so a misconfigured peer redialing
/// every second cannot flood the log.
const HANDSHAKE_WARN_INTERVAL: Duration = Duration::from_secs(5);

/// The tie-break for an inbound connection from `peer` (see the module docs
/// of `transport`): the connection dialed by the lower node id wins.
///
/// | peer vs me | our dial in flight | existing conn           | decision |
/// |------------|--------------------|-------------------------|----------|
/// | lower      | any                | any                     | accept (replaces ours) |
/// | higher     | yes                | any                     | reject: our dial wins  |
/// | higher     | no                 | same peer incarnation   | reject: duplicate      |
/// | higher     | no                 | other incarnation/none  | accept (peer restarted or new) |
pub(crate) fn accept_inbound(
    me: NodeId,
    peer: NodeId,
    dialing: bool,
    existing_incarnation: Option<u64>,
    peer_incarnation: u64,
) -> bool {
    if peer < me {
        return true;
    }
    !dialing && existing_incarnation != Some(peer_incarnation)
}

impl Inner {
    pub async fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                r = listener.accept() => r,
            };
            match accepted {
                Ok((stream, peer_addr)) => match self.gate.admit(peer_addr.ip()) {
                    Some(permit) => {
                        self.tasks
                            .spawn(self.clone().handle_inbound(stream, peer_addr, permit));
                    }
                    None => {
                        // Closed at once: a peer node redials with backoff,
                        // and a flood costs one accept per connection.
                        self.security
                            .connections_refused
                            .fetch_add(1, Ordering::Relaxed);
                        debug!(%peer_addr, open = self.gate.open(), "transport connection over the caps; closed");
                    }
                },
                Err(e) => {
                    // Typically EMFILE; back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Logs a failed inbound handshake (at warn, at most every
    /// [`HANDSHAKE_WARN_INTERVAL`]) and counts it.
    pub(super) fn inbound_refused(
        &self,
        peer_addr: SocketAddr,
        claimed: Option<NodeId>,
        why: HandshakeFailure,
        what: &str,
    ) {
        self.security.count(true, why);
        let warn_now = {
            let mut last = self.last_handshake_warn.lock();
            let due = last.is_none_or(|t| t.elapsed() >= HANDSHAKE_WARN_INTERVAL);
            if due {
                *last = Some(std::time::Instant::now());
            }
            due
        };
        if warn_now {
            warn!(%peer_addr, ?claimed, reason = why.as_str(), "refused a transport connection: {what} (logged at most every 5 s; see cairn_transport_handshake_failures_total)");
        } else {
            debug!(%peer_addr, ?claimed, reason = why.as_str(), "refused a transport connection: {what}");
        }
    }

    /// TLS (if configured), the hello and the secret handshake (if
    /// configured) of a connection a peer dialed. `Err` has been logged
    /// and counted; the connection is to be dropped.
    pub(super) async fn inbound_handshake(
        &self,
        stream: TcpStream,
        peer_addr: SocketAddr,
    ) -> Result<(Reader, Writer, NodeId, Hello), ()> {
        let ((r, w), binding) = match &self.tls_acceptor {
            None => (tls::split_plain(stream), Vec::new()),
            Some(acceptor) => {
                let tls = match acceptor.accept(stream).await {
                    Ok(t) => t,
                    Err(e) => {
                        self.inbound_refused(
                            peer_addr,
                            None,
                            HandshakeFailure::Tls,
                            &format!(
                                "TLS handshake failed: {e} (a peer without TLS, or not a node)"
                            ),
                        );
                        return Err(());
                    }
                };
                let tls = tokio_rustls::TlsStream::Server(tls);
                match tls::channel_binding(&tls) {
                    Ok(binding) => (tls::split_tls(tls), binding),
                    Err(e) => {
                        self.inbound_refused(
                            peer_addr,
                            None,
                            HandshakeFailure::Tls,
                            &e.to_string(),
                        );
                        return Err(());
                    }
                }
            }
        };
        let mut reader = FramedRead::new(r, self.codec());
        let mut writer = FramedWrite::new(w, self.codec());
        let (from, hello) = match reader.next().await {
            Some(Ok(f)) if f.header.frame_type == FrameType::Hello => {
                match Hello::decode(f.payload) {
                    Ok(h) => (f.header.from, h),
                    Err(e) => {
                        self.inbound_refused(
                            peer_addr,
                            Some(f.header.from),
                            HandshakeFailure::Protocol,
                            &format!("malformed hello: {e}"),
                        );
                        return Err(());
                    }
                }
            }
            other => {
                let what = match other {
                    Some(Ok(f)) => format!("a {:?} frame instead of a hello", f.header.frame_type),
                    Some(Err(e)) => format!("not a transport hello: {e}"),
                    None => "closed before its hello".to_owned(),
                };
                self.inbound_refused(peer_addr, None, HandshakeFailure::Protocol, &what);
                return Err(());
            }
        };
        let me = self.config.node_id;
        let refuse = |status: HelloStatus| {
            self.handshake_frame(
                FrameType::HelloAck,
                HelloAck {
                    status,
                    incarnation: self.incarnation,
                }
                .encode(),
            )
        };
        match (&self.config.secret, hello.nonce) {
            (None, None) => {}
            (None, Some(_)) => {
                self.inbound_refused(
                    peer_addr,
                    Some(from),
                    HandshakeFailure::SecretMismatch,
                    "the peer has a cluster secret and this node has none",
                );
                let _ = writer.send(refuse(HelloStatus::NoSecret)).await;
                return Err(());
            }
            (Some(_), None) => {
                self.inbound_refused(
                    peer_addr,
                    Some(from),
                    HandshakeFailure::SecretMismatch,
                    "the peer offered no cluster-secret handshake (no --cluster-secret-file?)",
                );
                let _ = writer.send(refuse(HelloStatus::SecretRequired)).await;
                return Err(());
            }
            (Some(secret), Some(their_nonce)) => {
                let our_nonce = secure::nonce();
                let input = HandshakeInput {
                    dialer: from,
                    acceptor: me,
                    dialer_nonce: &their_nonce,
                    acceptor_nonce: &our_nonce,
                    binding: &binding,
                };
                let challenge = AuthChallenge {
                    nonce: our_nonce,
                    proof: secret.prove(Role::Acceptor, &input),
                };
                if writer
                    .send(self.handshake_frame(FrameType::AuthChallenge, challenge.encode()))
                    .await
                    .is_err()
                {
                    return Err(());
                }
                let proof = match reader.next().await {
                    Some(Ok(f))
                        if f.header.frame_type == FrameType::AuthProof && f.header.from == from =>
                    {
                        AuthProof::decode(f.payload).ok()
                    }
                    _ => None,
                };
                let Some(proof) = proof else {
                    self.inbound_refused(
                        peer_addr,
                        Some(from),
                        HandshakeFailure::Protocol,
                        "no valid proof after the challenge",
                    );
                    return Err(());
                };
                if !secret.verify(Role::Dialer, &input, &proof.proof) {
                    self.inbound_refused(peer_addr, Some(from), HandshakeFailure::BadProof, "the peer failed to prove the cluster secret (another secret, or not a node of this cluster)");
                    let _ = writer.send(refuse(HelloStatus::BadProof)).await;
                    return Err(());
                }
            }
        }
        Ok((reader, writer, from, hello))
    }

    /// Handshake of a connection a peer dialed; runs it if accepted.
    pub(super) async fn handle_inbound(
        self: Arc<Self>,
        stream: TcpStream,
        peer_addr: SocketAddr,
        _permit: InboundPermit,
    ) {
        let _ = stream.set_nodelay(true);
        let Ok(local_addr) = stream.local_addr() else {
            return;
        };
        // The whole handshake — TLS, hello, proofs — within the connect
        // timeout, so half-open handshakes cannot pile up.
        let handshake = tokio::select! {
            _ = self.shutdown.cancelled() => return,
            r = timeout(self.config.connect_timeout, self.inbound_handshake(stream, peer_addr)) => r,
        };
        let (reader, mut writer, from, hello) = match handshake {
            Ok(Ok(h)) => h,
            Ok(Err(())) => return,
            Err(_) => {
                self.inbound_refused(
                    peer_addr,
                    None,
                    HandshakeFailure::Protocol,
                    &format!(
                        "handshake not done within {:?}",
                        self.config.connect_timeout
                    ),
                );
                return;
            }
        };
        let me = self.config.node_id;
        let mut installed = None;
        let status = if self.shutdown.is_cancelled() {
            HelloStatus::ShuttingDown
        } else if hello.to != me {
            HelloStatus::WrongNode
        } else if from == me {
            HelloStatus::InvalidId
        } else if let Some(slot) = self.slot_for_inbound(from) {
            let mut st = slot.state.lock();
            let existing = st.conn.as_ref().map(|c| c.peer_incarnation);
            if st.removed {
                // Raced with remove_peer; the slot is no longer in the table.
                HelloStatus::Removed
            } else if accept_inbound(me, from, st.dialing, existing, hello.incarnation) {
                let (conn, rx) = self.install_conn(
                    &slot,
                    &mut st,
                    hello.incarnation,
                    false,
                    local_addr,
                    peer_addr,
                );
                drop(st);
                installed = Some((slot, conn, rx));
                HelloStatus::Accepted
            } else {
                HelloStatus::Duplicate
            }
        } else {
            HelloStatus::Removed
        };
        match status {
            HelloStatus::Accepted => {}
            // Expected whenever both nodes dial at once.
            HelloStatus::Duplicate => {
                debug!(%peer_addr, peer = from, "refused duplicate connection")
            }
            _ => {
                info!(%peer_addr, claimed = from, wanted = hello.to, ?status, "rejected inbound hello")
            }
        }
        let ack = HelloAck {
            status,
            incarnation: self.incarnation,
        };
        let sent = writer
            .send(self.handshake_frame(FrameType::HelloAck, ack.encode()))
            .await;
        if let Some((slot, conn, rx)) = installed {
            if sent.is_err() {
                conn.cancel.cancel();
            }
            self.run_conn(slot, conn, reader, writer, rx).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_lower_peer_when_deciding_then_always_accept() {
        assert!(accept_inbound(5, 3, true, Some(1), 1));
        assert!(accept_inbound(5, 3, false, None, 1));
    }

    #[test]
    fn given_higher_peer_while_our_dial_in_flight_when_deciding_then_reject() {
        assert!(!accept_inbound(3, 5, true, None, 1));
    }

    #[test]
    fn given_higher_peer_with_same_incarnation_connected_when_deciding_then_reject() {
        assert!(!accept_inbound(3, 5, false, Some(7), 7));
    }

    #[test]
    fn given_higher_peer_restarted_when_deciding_then_accept() {
        assert!(accept_inbound(3, 5, false, Some(7), 8));
        assert!(accept_inbound(3, 5, false, None, 8));
    }
}
