//! Dialing a peer: the dial loop (reconnects with exponential backoff and
//! jitter for as long as the peer is in the table) and one dial's
//! handshake — TLS, the hello with this node's id and incarnation, the
//! secret's proof — ending in a registered connection or a reason.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rand::Rng;
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};
use tokio_util::codec::{FramedRead, FramedWrite};
use tracing::{debug, warn};

use super::NodeId;
use super::frame::{
    AuthChallenge, AuthProof, Frame, FrameCodec, FrameType, Hello, HelloAck, HelloStatus,
};
use super::metrics::PeerMetrics;
use super::secure::{self, HandshakeFailure, HandshakeInput, Role};
use crate::tls::{self, ReadHalf, WriteHalf};

type Reader = FramedRead<ReadHalf, FrameCodec>;
type Writer = FramedWrite<WriteHalf, FrameCodec>;

use super::conn::{Inner, PeerSlot};

/// Delay before reconnect attempt `attempt` (0-based): exponential from
/// `initial`, capped at `max`, with "equal jitter" — half fixed, half random —
/// so that nodes that lost each other at the same instant spread their
/// retries but never retry with zero delay.
pub(crate) fn backoff_delay(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let base = initial.saturating_mul(1u32 << attempt.min(20)).min(max);
    let half = base / 2;
    let half_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(rand::rng().random_range(0..=half_nanos))
}

pub(super) enum DialError {
    /// The peer keeps another connection; not a failure.
    Duplicate,
    Failed(String),
    /// The peer failed (or refused) the TLS or secret handshake.
    Handshake(HandshakeFailure, String),
}

pub(super) struct Established {
    reader: Reader,
    writer: Writer,
    incarnation: u64,
    local_addr: SocketAddr,
    peer_addr: SocketAddr,
}

impl Inner {
    /// Dials until a connection to the peer exists (ours or theirs), with
    /// exponential backoff and jitter between attempts. Once its own dial
    /// succeeds, this task becomes that connection's task.
    pub(super) async fn dial_loop(self: Arc<Self>, slot: Arc<PeerSlot>) {
        let mut attempt = 0u32;
        loop {
            let addr = {
                let mut st = slot.state.lock();
                match st.addr {
                    Some(addr)
                        if st.conn.is_none() && !st.removed && !self.shutdown.is_cancelled() =>
                    {
                        st.dialing = true;
                        addr
                    }
                    _ => {
                        st.dialer_running = false;
                        return;
                    }
                }
            };
            let result = tokio::select! {
                _ = self.shutdown.cancelled() => Err(DialError::Failed("shutting down".into())),
                r = timeout(self.config.connect_timeout, self.dial_once(slot.id, addr)) => {
                    r.unwrap_or_else(|_| Err(DialError::Failed(format!(
                        "connect and hello to {addr} took longer than {:?}",
                        self.config.connect_timeout
                    ))))
                }
            };
            match result {
                Ok(est) => {
                    let installed = {
                        let mut st = slot.state.lock();
                        st.dialing = false;
                        st.dialer_running = false;
                        if st.removed || self.shutdown.is_cancelled() {
                            None
                        } else {
                            st.last_error = None;
                            // The acceptor has decided for this connection;
                            // anything we hold is older and is replaced.
                            Some(self.install_conn(
                                &slot,
                                &mut st,
                                est.incarnation,
                                true,
                                est.local_addr,
                                est.peer_addr,
                            ))
                        }
                    };
                    if let Some((conn, rx)) = installed {
                        self.run_conn(slot, conn, est.reader, est.writer, rx).await;
                    }
                    return;
                }
                Err(e) => {
                    let mut st = slot.state.lock();
                    st.dialing = false;
                    match e {
                        DialError::Duplicate => {}
                        DialError::Failed(reason) => {
                            debug!(peer = slot.id, %addr, %reason, "dial failed");
                            PeerMetrics::inc(&slot.metrics.dial_failures);
                            st.last_error = Some(reason);
                        }
                        DialError::Handshake(why, reason) => {
                            self.security.count(false, why);
                            PeerMetrics::inc(&slot.metrics.dial_failures);
                            // Once per streak: the dialer retries every
                            // second while the peer is in the table.
                            if st.last_error.as_deref() != Some(reason.as_str()) {
                                warn!(peer = slot.id, %addr, reason = why.as_str(), "transport handshake with a peer failed: {reason}");
                            } else {
                                debug!(peer = slot.id, %addr, %reason, "transport handshake failed again");
                            }
                            st.last_error = Some(reason);
                        }
                    }
                }
            }
            let delay = backoff_delay(
                attempt,
                self.config.reconnect_backoff_initial,
                self.config.reconnect_backoff_max,
            );
            attempt = attempt.saturating_add(1);
            tokio::select! {
                _ = self.shutdown.cancelled() => {}
                _ = sleep(delay) => {}
            }
        }
    }

    /// TCP connect, TLS if configured, send our hello, prove the secret if
    /// configured, read the peer's verdict.
    pub(super) async fn dial_once(
        &self,
        peer: NodeId,
        addr: SocketAddr,
    ) -> Result<Established, DialError> {
        let fail = |what: String| DialError::Failed(what);
        let refused = |why, what: String| DialError::Handshake(why, what);
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| fail(format!("connect to {addr}: {e}")))?;
        // Small RPCs (votes, heartbeats) must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let local_addr = stream.local_addr().map_err(|e| fail(e.to_string()))?;
        let ((r, w), binding) = match &self.tls_connector {
            None => (tls::split_plain(stream), Vec::new()),
            Some(connector) => {
                let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
                let tls = connector.connect(name, stream).await.map_err(|e| {
                    refused(
                        HandshakeFailure::Tls,
                        format!("TLS handshake with {addr}: {e} (is TLS on at the peer, and its certificate signed by --tls-ca for this IP?)"),
                    )
                })?;
                let tls = tokio_rustls::TlsStream::Client(tls);
                let binding = tls::channel_binding(&tls)
                    .map_err(|e| refused(HandshakeFailure::Tls, format!("TLS with {addr}: {e}")))?;
                (tls::split_tls(tls), binding)
            }
        };
        let mut reader = FramedRead::new(r, self.codec());
        let mut writer = FramedWrite::new(w, self.codec());
        let secret = self.config.secret.as_ref();
        let our_nonce = secret.map(|_| secure::nonce());
        let hello = Hello {
            to: peer,
            incarnation: self.incarnation,
            nonce: our_nonce,
        };
        writer
            .send(self.handshake_frame(FrameType::Hello, hello.encode()))
            .await
            .map_err(|e| fail(format!("send hello to {addr}: {e}")))?;
        let mut frame = read_handshake_frame(&mut reader, addr, "hello ack").await?;
        if frame.header.frame_type == FrameType::AuthChallenge {
            if frame.header.from != peer {
                return Err(fail(format!(
                    "{addr} is node {}, not node {peer}",
                    frame.header.from
                )));
            }
            let (Some(secret), Some(our_nonce)) = (secret, our_nonce) else {
                return Err(refused(
                    HandshakeFailure::SecretMismatch,
                    format!(
                        "{addr} requires a cluster secret and this node has none (--cluster-secret-file)"
                    ),
                ));
            };
            let challenge = AuthChallenge::decode(frame.payload)
                .map_err(|e| refused(HandshakeFailure::Protocol, format!("{addr}: {e}")))?;
            let input = HandshakeInput {
                dialer: self.config.node_id,
                acceptor: peer,
                dialer_nonce: &our_nonce,
                acceptor_nonce: &challenge.nonce,
                binding: &binding,
            };
            if !secret.verify(Role::Acceptor, &input, &challenge.proof) {
                // Our proof is not sent to a process that could not prove
                // itself: it might be an impostor at a stale address.
                return Err(refused(
                    HandshakeFailure::BadProof,
                    format!(
                        "{addr} (node {peer}?) failed to prove the cluster secret: the secrets differ, or it is not a node of this cluster"
                    ),
                ));
            }
            let proof = AuthProof {
                proof: secret.prove(Role::Dialer, &input),
            };
            writer
                .send(self.handshake_frame(FrameType::AuthProof, proof.encode()))
                .await
                .map_err(|e| fail(format!("send proof to {addr}: {e}")))?;
            frame = read_handshake_frame(&mut reader, addr, "hello ack").await?;
        } else if secret.is_some() && frame.header.frame_type == FrameType::HelloAck {
            // Only a refusal may skip the challenge; an acceptance without
            // a proof is a peer without the secret.
            if let Ok(ack) = HelloAck::decode(frame.payload.clone())
                && ack.status == HelloStatus::Accepted
            {
                return Err(refused(
                    HandshakeFailure::SecretMismatch,
                    format!(
                        "{addr} accepted us without the secret handshake: it has no cluster secret"
                    ),
                ));
            }
        }
        if frame.header.frame_type != FrameType::HelloAck {
            return Err(refused(
                HandshakeFailure::Protocol,
                format!(
                    "{addr} answered the hello with a {:?} frame",
                    frame.header.frame_type
                ),
            ));
        }
        // Check the id before the status: a node at a stale address says
        // WrongNode, and the error should name who is really there.
        if frame.header.from != peer {
            return Err(fail(format!(
                "{addr} is node {}, not node {peer}",
                frame.header.from
            )));
        }
        let ack = HelloAck::decode(frame.payload).map_err(|e| fail(e.to_string()))?;
        match ack.status {
            HelloStatus::Accepted => Ok(Established {
                reader,
                writer,
                incarnation: ack.incarnation,
                local_addr,
                peer_addr: addr,
            }),
            HelloStatus::Duplicate => Err(DialError::Duplicate),
            HelloStatus::SecretRequired => Err(refused(
                HandshakeFailure::SecretMismatch,
                format!(
                    "{addr} requires a cluster secret and this node has none (--cluster-secret-file)"
                ),
            )),
            HelloStatus::NoSecret => Err(refused(
                HandshakeFailure::SecretMismatch,
                format!(
                    "{addr} has no cluster secret and this node has one: give every node the same --cluster-secret-file"
                ),
            )),
            HelloStatus::BadProof => Err(refused(
                HandshakeFailure::BadProof,
                format!("{addr} rejected our proof: the cluster secrets differ"),
            )),
            other => Err(fail(format!("{addr} rejected our hello: {other:?}"))),
        }
    }
}

async fn read_handshake_frame(
    reader: &mut Reader,
    addr: SocketAddr,
    what: &str,
) -> Result<Frame, DialError> {
    match reader.next().await {
        Some(Ok(f)) => Ok(f),
        Some(Err(e)) => Err(DialError::Failed(format!("read {what} from {addr}: {e}"))),
        None => Err(DialError::Failed(format!(
            "{addr} closed the connection during the hello (if it has TLS on, this node needs it too)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_attempts_when_backing_off_then_grows_with_jitter_and_caps() {
        let initial = Duration::from_millis(10);
        let max = Duration::from_secs(1);
        for attempt in 0..40 {
            let d = backoff_delay(attempt, initial, max);
            let base = initial.saturating_mul(1 << attempt.min(20)).min(max);
            assert!(d >= base / 2 && d <= base, "attempt {attempt}: {d:?}");
        }
        assert!(backoff_delay(30, initial, max) >= Duration::from_millis(500));
    }
}
