//! Shared helpers for the transport tests: a test handler with a few
//! behaviours selected by `kind`, and nodes on 127.0.0.1 with port 0.
#![allow(dead_code)] // each test file uses a different subset

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_cluster::transport::{
    Handler, NodeId, RemoteError, Transport, TransportConfig, handler_fn,
};
use futures::FutureExt;
use tokio::sync::mpsc;

/// Answers with the payload.
pub const ECHO: u16 = 0;
/// Sleeps for the number of milliseconds in the payload (u64 BE), then echoes it.
pub const SLOW: u16 = 1;
/// Answers with `RemoteError { code: 1001, .. }`.
pub const FAIL: u16 = 2;
/// Answers with as many bytes as the payload says (u64 BE).
pub const BIG: u16 = 3;
/// Panics.
pub const PANIC: u16 = 4;
/// Answers "node {me} from {from} group {group}".
pub const WHO: u16 = 5;

/// Every test body runs under this bound.
pub const TEST_LIMIT: Duration = Duration::from_secs(30);

/// What a node's handler saw: (from, group, kind, payload).
pub type Seen = (NodeId, u64, u16, Bytes);

pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub fn millis(ms: u64) -> Bytes {
    Bytes::copy_from_slice(&ms.to_be_bytes())
}

fn read_u64(b: &Bytes) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(a)
}

pub fn test_handler(me: NodeId, seen: mpsc::UnboundedSender<Seen>) -> Arc<dyn Handler> {
    handler_fn(move |from, group, kind, payload: Bytes| {
        let _ = seen.send((from, group, kind, payload.clone()));
        async move {
            match kind {
                SLOW => {
                    tokio::time::sleep(Duration::from_millis(read_u64(&payload))).await;
                    Ok(payload)
                }
                FAIL => Err(RemoteError::new(1001, "asked to fail")),
                BIG => Ok(Bytes::from(vec![7u8; read_u64(&payload) as usize])),
                PANIC => panic!("asked to panic"),
                WHO => Ok(Bytes::from(format!("node {me} from {from} group {group}"))),
                _ => Ok(payload),
            }
        }
        .boxed()
    })
}

/// A transport plus what its handler received.
pub struct Node {
    pub t: Transport,
    pub seen: mpsc::UnboundedReceiver<Seen>,
}

impl Node {
    pub async fn start(id: NodeId) -> Node {
        Self::start_with(TransportConfig::new(id, loopback())).await
    }

    pub async fn start_with(mut config: TransportConfig) -> Node {
        // Tests run many reconnects; keep the cap low so they stay fast.
        config.reconnect_backoff_max = Duration::from_millis(200);
        let (tx, rx) = mpsc::unbounded_channel();
        let t = Transport::bind(config.clone(), test_handler(config.node_id, tx))
            .await
            .expect("bind");
        Node { t, seen: rx }
    }

    /// Waits up to `wait` for a message with this kind; skips others.
    pub async fn expect_seen(&mut self, kind: u16, wait: Duration) -> Option<Seen> {
        tokio::time::timeout(wait, async {
            loop {
                let s = self.seen.recv().await?;
                if s.2 == kind {
                    return Some(s);
                }
            }
        })
        .await
        .ok()
        .flatten()
    }
}

/// `n` nodes with ids 1..=n, each knowing every other's address.
pub async fn cluster(n: u64) -> Vec<Node> {
    let mut nodes = Vec::new();
    for id in 1..=n {
        nodes.push(Node::start(id).await);
    }
    mesh(&nodes);
    nodes
}

pub fn mesh(nodes: &[Node]) {
    for a in nodes {
        for b in nodes {
            a.t.set_peer(b.t.node_id(), b.t.local_addr());
        }
    }
}

/// Runs a test body under [`TEST_LIMIT`].
pub async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_LIMIT, f)
        .await
        .expect("test exceeded its time limit");
}
