//! Who may use the transport: the cluster secret's challenge-response
//! handshake, TLS on the socket, and caps on inbound connections.
//!
//! # The secret handshake
//!
//! With a cluster secret ([`TransportConfig::secret`](super::TransportConfig::secret)),
//! no frame but the handshake's is read or sent until both sides have
//! proved they know the secret, without ever sending it:
//!
//! ```text
//! dialer                                        acceptor
//!   HELLO {to, incarnation, nonce_d}      ──►
//!                                         ◄──   AUTH_CHALLENGE {nonce_a, proof_a}
//!   check proof_a, then
//!   AUTH_PROOF {proof_d}                  ──►
//!                                               check proof_d, then decide
//!                                         ◄──   HELLO_ACK {status, incarnation}
//! ```
//!
//! `proof = HMAC-SHA256(secret, LABEL ‖ role ‖ nonce_d ‖ nonce_a ‖ dialer
//! id ‖ acceptor id ‖ binding)`, 32-byte random nonces from each side, the
//! role (`dialer`/`acceptor`) so that one side's proof can never be
//! replayed as the other's (a reflection), both ids so a proof is good for
//! this pair only, and `binding` the TLS session's exported keying
//! material when TLS is on (empty otherwise), so a relay between two TLS
//! sessions cannot pass proofs along. Proofs are compared in constant time
//! (`hmac`'s `verify_slice`). The acceptor proves first, but only the
//! dialer's proof lets a connection in: an acceptor answering anyone's
//! hello with a proof gives out nothing reusable (fresh nonces, bound
//! roles). The dialer checks the acceptor's proof before sending its own,
//! so a process posing as a peer learns nothing either.
//!
//! A side with a secret refuses a side without one (`SecretRequired`), a
//! side without one refuses a side that offers one (`NoSecret`): a
//! misconfigured node is told, not half-admitted. Every refusal is logged
//! at warn with the peer's address and counted ([`SecurityMetrics`]).
//!
//! What the secret does not do: frames after the handshake carry no MAC,
//! so someone who can read and rewrite the traffic between two nodes (on
//! path) can take over a connection. TLS closes that gap.
//!
//! # TLS
//!
//! With [`TransportConfig::tls`](super::TransportConfig::tls) the dialer
//! runs a TLS client handshake (verifying the peer's certificate against
//! the configured CA, for the IP address it dialed) and the acceptor a TLS
//! server handshake, before the hello; both within the connect timeout.
//! Without TLS the socket is used as is: `tls::ReadHalf::Plain` and
//! `tls::WriteHalf::Plain` are tokio's own halves, with no lock between them.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::Sha256;

/// Bytes of a handshake nonce.
pub const NONCE_LEN: usize = 32;
/// Bytes of a proof (HMAC-SHA256).
pub const PROOF_LEN: usize = 32;
/// Shortest secret accepted: 128 bits of a random secret.
pub const MIN_SECRET_LEN: usize = 16;
/// Domain separation of the proofs: never the same MAC input as anything
/// else keyed with the same secret.
const LABEL: &[u8] = b"cairn transport handshake v1";

/// The shared secret of a cluster's nodes. Its `Debug` shows no byte of it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret(Arc<Vec<u8>>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterSecret({} bytes)", self.0.len())
    }
}

/// Why a secret file was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("read the cluster secret file {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error(
        "the cluster secret in {path} is {len} bytes; at least {MIN_SECRET_LEN} are needed \
         (e.g. `head -c 32 /dev/urandom | base64 > FILE`)"
    )]
    TooShort { path: String, len: usize },
}

impl ClusterSecret {
    /// A secret from bytes; at least [`MIN_SECRET_LEN`] of them.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, SecretError> {
        let bytes = bytes.into();
        if bytes.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort {
                path: "(given)".into(),
                len: bytes.len(),
            });
        }
        Ok(Self(Arc::new(bytes)))
    }

    /// Reads a secret file. Leading and trailing whitespace is dropped, so
    /// a file written by `echo` or an editor (trailing newline) gives the
    /// same secret as one written by `printf`.
    pub fn load(path: &Path) -> Result<Self, SecretError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| SecretError::Read {
            path: shown.clone(),
            source,
        })?;
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort {
                path: shown,
                len: trimmed.len(),
            });
        }
        Ok(Self(Arc::new(trimmed.to_vec())))
    }

    fn mac(
        &self,
        role: Role,
        ids: (u64, u64),
        nonces: (&[u8], &[u8]),
        binding: &[u8],
    ) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(LABEL);
        mac.update(role.as_bytes());
        mac.update(nonces.0);
        mac.update(nonces.1);
        mac.update(&ids.0.to_be_bytes());
        mac.update(&ids.1.to_be_bytes());
        mac.update(&(binding.len() as u64).to_be_bytes());
        mac.update(binding);
        mac
    }

    /// The proof `role` sends on the connection between `dialer` and
    /// `acceptor` with these nonces (see the module docs).
    pub fn prove(&self, role: Role, hs: &HandshakeInput<'_>) -> [u8; PROOF_LEN] {
        self.mac(
            role,
            (hs.dialer, hs.acceptor),
            (hs.dialer_nonce, hs.acceptor_nonce),
            hs.binding,
        )
        .finalize()
        .into_bytes()
        .into()
    }

    /// Whether `proof` is `role`'s proof for this handshake; constant time.
    pub fn verify(&self, role: Role, hs: &HandshakeInput<'_>, proof: &[u8]) -> bool {
        self.mac(
            role,
            (hs.dialer, hs.acceptor),
            (hs.dialer_nonce, hs.acceptor_nonce),
            hs.binding,
        )
        .verify_slice(proof)
        .is_ok()
    }
}

/// Everything a proof covers but the secret and the role.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeInput<'a> {
    pub dialer: u64,
    pub acceptor: u64,
    pub dialer_nonce: &'a [u8],
    pub acceptor_nonce: &'a [u8],
    /// TLS exported keying material, or empty without TLS.
    pub binding: &'a [u8],
}

/// Which side of the handshake a proof is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Dialer,
    Acceptor,
}

impl Role {
    fn as_bytes(self) -> &'static [u8] {
        match self {
            Role::Dialer => b"dialer",
            Role::Acceptor => b"acceptor",
        }
    }
}

/// A fresh random nonce.
pub fn nonce() -> [u8; NONCE_LEN] {
    rand::random()
}

/// Why a connection did not get past the handshake, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The peer did not take part in the secret handshake (it has no
    /// secret, or we have none and it has one).
    SecretMismatch,
    /// The peer's proof was wrong: it has another secret (or none at all
    /// and is guessing).
    BadProof,
    /// The TLS handshake failed (plaintext peer, untrusted certificate...).
    Tls,
    /// Anything else: malformed or unexpected frames, the connect timeout.
    Protocol,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 4] = [
        HandshakeFailure::SecretMismatch,
        HandshakeFailure::BadProof,
        HandshakeFailure::Tls,
        HandshakeFailure::Protocol,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::SecretMismatch => "secret_mismatch",
            HandshakeFailure::BadProof => "bad_proof",
            HandshakeFailure::Tls => "tls",
            HandshakeFailure::Protocol => "protocol",
        }
    }
}

/// Node-level counters of the transport's gatekeeping (per peer they would
/// be meaningless: a refused process is no peer). Worth alerting on: any
/// `bad_proof` or `secret_mismatch` (a misconfigured node or a probe), and
/// `connections_refused` above zero (a flood on the transport port).
#[derive(Debug, Default)]
pub struct SecurityMetrics {
    /// Handshakes failed on connections peers dialed to us, by reason.
    inbound: [AtomicU64; HandshakeFailure::ALL.len()],
    /// Handshakes failed on connections we dialed, by reason.
    outbound: [AtomicU64; HandshakeFailure::ALL.len()],
    /// Inbound connections closed at accept for a cap.
    pub connections_refused: AtomicU64,
    /// Connections closed because no frame came for the idle timeout.
    pub idle_closed: AtomicU64,
}

impl SecurityMetrics {
    pub(crate) fn count(&self, inbound: bool, why: HandshakeFailure) {
        let side = if inbound {
            &self.inbound
        } else {
            &self.outbound
        };
        side[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Failed handshakes so far, of inbound (`true`) or outbound connections.
    pub fn handshake_failures(&self, inbound: bool, why: HandshakeFailure) -> u64 {
        let side = if inbound {
            &self.inbound
        } else {
            &self.outbound
        };
        side[why as usize].load(Ordering::Relaxed)
    }
}

/// The caps on inbound connections of one transport listener: handshaking
/// and established together, and per client address. Over either, a
/// connection is closed at once (a peer that is refused redials with
/// backoff, as after any failure).
#[derive(Debug)]
pub(crate) struct InboundGate {
    max: usize,
    max_per_ip: usize,
    state: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// A connection's place in the gate, given back on drop.
#[derive(Debug)]
pub(crate) struct InboundPermit {
    gate: Arc<InboundGate>,
    ip: IpAddr,
}

impl InboundGate {
    pub fn new(max: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            max_per_ip: max_per_ip.clamp(1, max.max(1)),
            state: Mutex::new((0, HashMap::new())),
        })
    }

    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<InboundPermit> {
        let ip = ip.to_canonical();
        let mut st = self.state.lock();
        let from_ip = st.1.get(&ip).copied().unwrap_or(0);
        if st.0 >= self.max || from_ip >= self.max_per_ip {
            return None;
        }
        st.0 += 1;
        *st.1.entry(ip).or_default() += 1;
        Some(InboundPermit {
            gate: self.clone(),
            ip,
        })
    }

    pub fn open(&self) -> usize {
        self.state.lock().0
    }
}

impl Drop for InboundPermit {
    fn drop(&mut self) {
        let mut st = self.gate.state.lock();
        st.0 -= 1;
        if let Some(n) = st.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                st.1.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(binding: &'a [u8]) -> HandshakeInput<'a> {
        HandshakeInput {
            dialer: 2,
            acceptor: 1,
            dialer_nonce: &[7; NONCE_LEN],
            acceptor_nonce: &[9; NONCE_LEN],
            binding,
        }
    }

    #[test]
    fn given_same_secret_when_proving_then_other_side_verifies() {
        let s = ClusterSecret::new(*b"0123456789abcdef").unwrap();
        let p = s.prove(Role::Dialer, &input(b""));
        assert!(s.verify(Role::Dialer, &input(b""), &p));
    }

    #[test]
    fn given_proof_when_checked_as_other_role_or_other_input_then_rejected() {
        let s = ClusterSecret::new(*b"0123456789abcdef").unwrap();
        let p = s.prove(Role::Acceptor, &input(b""));
        // A reflected proof (acceptor's offered as the dialer's) fails.
        assert!(!s.verify(Role::Dialer, &input(b""), &p));
        // Another TLS session, other ids: fail.
        assert!(!s.verify(Role::Acceptor, &input(b"session"), &p));
        let mut other = input(b"");
        other.dialer = 3;
        assert!(!s.verify(Role::Acceptor, &other, &p));
        assert!(!s.verify(Role::Acceptor, &input(b""), &p[..31]));
    }

    #[test]
    fn given_other_secret_when_verifying_then_rejected() {
        let a = ClusterSecret::new(*b"0123456789abcdef").unwrap();
        let b = ClusterSecret::new(*b"0123456789abcdeF").unwrap();
        assert!(!b.verify(
            Role::Dialer,
            &input(b""),
            &a.prove(Role::Dialer, &input(b""))
        ));
    }

    #[test]
    fn given_secret_file_with_newline_when_loaded_then_trimmed_and_short_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "0123456789abcdef\n").unwrap();
        let s = ClusterSecret::load(&path).unwrap();
        assert_eq!(s, ClusterSecret::new(*b"0123456789abcdef").unwrap());
        assert!(!format!("{s:?}").contains("0123"));
        std::fs::write(&path, "short\n").unwrap();
        assert!(matches!(
            ClusterSecret::load(&path),
            Err(SecretError::TooShort { len: 5, .. })
        ));
    }

    #[test]
    fn given_caps_when_admitting_then_total_and_per_ip_hold_and_release_on_drop() {
        let gate = InboundGate::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = gate.admit(a).unwrap();
        let _p2 = gate.admit(a).unwrap();
        assert!(gate.admit(a).is_none(), "per-ip cap");
        let _p3 = gate.admit(b).unwrap();
        assert!(gate.admit(b).is_none(), "total cap");
        drop(p1);
        assert!(gate.admit(a).is_some());
    }
}
