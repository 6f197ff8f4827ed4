//! The transport's gatekeeping over real sockets on 127.0.0.1: the cluster
//! secret's handshake, TLS (certificates from rcgen), the inbound caps and
//! the idle timeout.

mod common;

use std::time::Duration;

use bytes::Bytes;
use cairn_cluster::tls::NodeTls;
use cairn_cluster::transport::{
    ClusterSecret, HandshakeFailure, Transport, TransportConfig, TransportError,
};
use common::*;

const SECOND: Duration = Duration::from_secs(1);

fn secret(s: &str) -> Option<ClusterSecret> {
    Some(ClusterSecret::new(s.as_bytes().to_vec()).unwrap())
}

async fn node(id: u64, configure: impl FnOnce(&mut TransportConfig)) -> Node {
    let mut config = TransportConfig::new(id, loopback());
    config.connect_timeout = SECOND;
    configure(&mut config);
    Node::start_with(config).await
}

fn pair(a: &Transport, b: &Transport) {
    a.set_peer(b.node_id(), b.local_addr());
    b.set_peer(a.node_id(), a.local_addr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_same_secret_when_calling_then_answered() {
    bounded(async {
        let a = node(1, |c| c.secret = secret("shared-secret-0123456789")).await;
        let b = node(2, |c| c.secret = secret("shared-secret-0123456789")).await;
        pair(&a.t, &b.t);
        let answer = a.t.call(2, 0, WHO, Bytes::new(), 5 * SECOND).await.unwrap();
        assert_eq!(answer, "node 2 from 1 group 0".as_bytes());
        // And the other way, on the same connection.
        let answer = b.t.call(1, 0, WHO, Bytes::new(), 5 * SECOND).await.unwrap();
        assert_eq!(answer, "node 1 from 2 group 0".as_bytes());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_other_or_missing_secret_when_calling_then_unreachable_with_reason_and_counted() {
    bounded(async {
        let a = node(1, |c| c.secret = secret("shared-secret-0123456789")).await;
        let wrong = node(2, |c| c.secret = secret("another-secret-012345678")).await;
        let none = node(3, |_| {}).await;
        pair(&a.t, &wrong.t);
        pair(&a.t, &none.t);
        let err = wrong
            .t
            .call(1, 0, WHO, Bytes::new(), SECOND)
            .await
            .unwrap_err();
        let TransportError::Unreachable { reason, .. } = &err else {
            panic!("{err}");
        };
        assert!(
            reason.contains("failed to prove the cluster secret"),
            "{reason}"
        );
        let err = none
            .t
            .call(1, 0, WHO, Bytes::new(), SECOND)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("requires a cluster secret"),
            "{err}"
        );
        let err = a.t.call(3, 0, WHO, Bytes::new(), SECOND).await.unwrap_err();
        assert!(err.to_string().contains("has no cluster secret"), "{err}");
        let err = a.t.call(2, 0, WHO, Bytes::new(), SECOND).await.unwrap_err();
        assert!(err.to_string().contains("failed to prove"), "{err}");
        let m = a.t.security_metrics();
        assert!(m.handshake_failures(true, HandshakeFailure::SecretMismatch) >= 1);
        assert!(m.handshake_failures(false, HandshakeFailure::BadProof) >= 1);
        assert!(!a.t.is_connected(2) && !a.t.is_connected(3));
    })
    .await;
}

fn tls_pair() -> (NodeTls, NodeTls) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(p("cert.pem"), cert.pem()).unwrap();
    std::fs::write(p("key.pem"), key.serialize_pem()).unwrap();
    let tls = NodeTls::load(&p("cert.pem"), &p("key.pem"), &p("ca.pem")).unwrap();
    // A CA the nodes' certificate is not signed by.
    let other_key = KeyPair::generate().unwrap();
    let mut other = CertificateParams::new(Vec::<String>::new()).unwrap();
    other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    std::fs::write(p("other.pem"), other.self_signed(&other_key).unwrap().pem()).unwrap();
    let untrusting = NodeTls::load(&p("cert.pem"), &p("key.pem"), &p("other.pem")).unwrap();
    (tls, untrusting)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_tls_and_secret_when_calling_then_answered_and_plaintext_or_untrusted_refused() {
    bounded(async {
        let (tls, untrusting) = tls_pair();
        let s = "shared-secret-0123456789";
        let a = node(1, |c| {
            c.tls = Some(tls.clone());
            c.secret = secret(s);
        })
        .await;
        let b = node(2, |c| {
            c.tls = Some(tls.clone());
            c.secret = secret(s);
        })
        .await;
        pair(&a.t, &b.t);
        let answer = a.t.call(2, 0, WHO, Bytes::new(), 5 * SECOND).await.unwrap();
        assert_eq!(answer, "node 2 from 1 group 0".as_bytes());
        assert!(a.t.has_tls() && a.t.has_secret());

        // A plaintext peer with the right secret is refused by TLS.
        let plain = node(3, |c| c.secret = secret(s)).await;
        pair(&a.t, &plain.t);
        let err = plain
            .t
            .call(1, 0, WHO, Bytes::new(), SECOND)
            .await
            .unwrap_err();
        assert!(matches!(err, TransportError::Unreachable { .. }), "{err}");
        // A dialer that does not trust the certificate refuses it.
        let doubtful = node(4, |c| {
            c.tls = Some(untrusting.clone());
            c.secret = secret(s);
        })
        .await;
        pair(&a.t, &doubtful.t);
        let err = doubtful
            .t
            .call(1, 0, WHO, Bytes::new(), SECOND)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("TLS handshake"), "{err}");
        assert!(
            a.t.security_metrics()
                .handshake_failures(true, HandshakeFailure::Tls)
                >= 1
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_inbound_caps_when_more_connections_come_then_closed_at_accept() {
    bounded(async {
        let a = node(1, |c| {
            c.max_inbound_connections = 3;
            c.max_inbound_connections_per_ip = 2;
        })
        .await;
        let addr = a.t.local_addr();
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        // Over the per-address cap: closed without a word.
        let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(SECOND, tokio::io::AsyncReadExt::read(&mut third, &mut buf))
            .await
            .expect("closed at once")
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert_eq!(a.t.inbound_connections(), 2);
        assert!(
            a.t.security_metrics()
                .connections_refused
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1
        );
        // Silent connections are dropped after the handshake timeout (1 s),
        // giving their places back.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(a.t.inbound_connections(), 0);
        drop(held);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_connection_without_frames_when_idle_timeout_passes_then_closed_and_redialed() {
    bounded(async {
        let idle = |c: &mut TransportConfig| c.idle_timeout = Duration::from_millis(300);
        let a = node(1, idle).await;
        let b = node(2, idle).await;
        pair(&a.t, &b.t);
        a.t.call(2, 0, WHO, Bytes::new(), 5 * SECOND).await.unwrap();
        let first = a.t.connection(2).unwrap();
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(
            a.t.security_metrics()
                .idle_closed
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1
                || b.t
                    .security_metrics()
                    .idle_closed
                    .load(std::sync::atomic::Ordering::Relaxed)
                    >= 1
        );
        // Calls still work: a new connection is dialed.
        a.t.call(2, 0, WHO, Bytes::new(), 5 * SECOND).await.unwrap();
        assert_ne!(a.t.connection(2).unwrap().local_addr, first.local_addr);
    })
    .await;
}
