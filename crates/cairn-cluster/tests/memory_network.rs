//! The in-memory network (`transport::memory`) keeps the real transport's
//! contract: answers, unknown peers, panics, both sides' fault filters
//! (drops time out at the deadline, delays add up), stopped nodes
//! (unreachable, calls in flight lost), restarts and removed peers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_cluster::transport::{
    FaultRule, Handler, MemoryNetwork, MemoryTransport, NodeId, RemoteError, TransportConfig,
    TransportError, handler_fn,
};
use futures::FutureExt;
use tokio::time::{Instant, sleep};

const ECHO: u16 = 0;
const SLOW: u16 = 1;
const PANIC: u16 = 2;
const SECOND: Duration = Duration::from_secs(1);

fn handler() -> Arc<dyn Handler> {
    handler_fn(|_, _, kind, payload| {
        async move {
            match kind {
                SLOW => {
                    sleep(SECOND).await;
                    Ok(payload)
                }
                PANIC => panic!("asked to panic"),
                _ => Ok(payload),
            }
        }
        .boxed()
    })
}

fn addr(id: NodeId) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, id as u8], 7000))
}

fn bind(net: &MemoryNetwork, id: NodeId) -> MemoryTransport {
    net.bind(TransportConfig::new(id, addr(id)), handler())
        .unwrap()
}

/// Nodes 1..=n, each knowing every other.
fn nodes(net: &MemoryNetwork, n: u64) -> Vec<MemoryTransport> {
    let all: Vec<_> = (1..=n).map(|id| bind(net, id)).collect();
    for a in &all {
        for b in &all {
            a.set_peer(b.node_id(), b.local_addr());
        }
    }
    all
}

async fn echo(t: &MemoryTransport, to: NodeId) -> Result<Bytes, TransportError> {
    t.call(to, 0, ECHO, Bytes::from_static(b"hi"), SECOND).await
}

#[tokio::test(start_paused = true)]
async fn calls_are_answered_and_unknown_peers_refused() {
    let net = MemoryNetwork::new();
    let n = nodes(&net, 2);
    assert_eq!(echo(&n[0], 2).await.unwrap(), "hi");
    assert_eq!(
        echo(&n[0], 9).await,
        Err(TransportError::UnknownPeer { peer: 9 })
    );
    assert!(n[0].is_connected(2));
    // Node 2 learned of node 1 from its call, as from a connection.
    assert_eq!(n[1].metrics()[&1].frames_received, 1);
    let e = n[0].call(2, 0, PANIC, Bytes::new(), SECOND).await;
    assert!(
        matches!(&e, Err(TransportError::Remote { error, .. }) if error.code == RemoteError::HANDLER_PANICKED),
        "{e:?}"
    );
    assert!(
        net.bind(TransportConfig::new(1, addr(1)), handler())
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn faults_of_either_side_drop_and_delay_frames() {
    let net = MemoryNetwork::new();
    let n = nodes(&net, 3);
    // The sender's partition, and the receiver's inbound-only cut:
    // lost frames time out at the deadline.
    let cut = n[0].faults().add(FaultRule::partition([2]));
    let start = Instant::now();
    assert!(matches!(
        echo(&n[0], 2).await,
        Err(TransportError::Timeout { .. })
    ));
    assert_eq!(start.elapsed(), SECOND);
    assert!(matches!(
        echo(&n[1], 1).await,
        Err(TransportError::Timeout { .. })
    ));
    assert!(echo(&n[0], 3).await.is_ok());
    n[0].faults().remove(cut);
    n[2].faults().add(FaultRule::isolate().inbound_only());
    assert!(matches!(
        echo(&n[0], 3).await,
        Err(TransportError::Timeout { .. })
    ));
    assert!(echo(&n[0], 2).await.is_ok());
    n[2].faults().clear();
    // Delays on both sides add up, each way.
    n[0].faults()
        .add(FaultRule::delay(Duration::from_millis(100), Duration::ZERO));
    n[1].faults()
        .add(FaultRule::delay(Duration::from_millis(50), Duration::ZERO));
    let start = Instant::now();
    assert!(echo(&n[0], 2).await.is_ok());
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    let m = n[0].peer_metrics(2).unwrap().snapshot();
    assert_eq!((m.fault_dropped, m.fault_delayed), (2, 2));
    // A delay past the deadline is a timeout at the deadline.
    n[0].faults()
        .add(FaultRule::delay(5 * SECOND, Duration::ZERO));
    let start = Instant::now();
    assert!(matches!(
        echo(&n[0], 2).await,
        Err(TransportError::Timeout { .. })
    ));
    assert_eq!(start.elapsed(), SECOND);
}

#[tokio::test(start_paused = true)]
async fn a_stopped_node_is_unreachable_until_it_runs_again() {
    let net = MemoryNetwork::new();
    let n = nodes(&net, 2);
    let before = n[1].incarnation();
    // A call in flight when the node stops fails at once.
    let slow = {
        let a = n[0].clone();
        tokio::spawn(async move { a.call(2, 0, SLOW, Bytes::new(), 5 * SECOND).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(net.kill(2));
    assert_eq!(
        slow.await.unwrap(),
        Err(TransportError::ConnectionLost { peer: 2 })
    );
    assert!(!n[0].is_connected(2));
    assert!(matches!(
        n[0].send(2, 0, ECHO, Bytes::new()).await,
        Err(TransportError::Unreachable { .. })
    ));
    assert_eq!(
        n[1].send(1, 0, ECHO, Bytes::new()).await,
        Err(TransportError::Shutdown)
    );
    // A call waits for the node, up to its deadline.
    let start = Instant::now();
    assert!(matches!(
        echo(&n[0], 2).await,
        Err(TransportError::Unreachable { .. })
    ));
    assert_eq!(start.elapsed(), SECOND);
    let waiting = {
        let a = n[0].clone();
        tokio::spawn(async move { echo(&a, 2).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let again = bind(&net, 2);
    assert!(waiting.await.unwrap().is_ok());
    assert_ne!(again.incarnation(), before);
    assert_eq!(
        n[0].connection(2).unwrap().peer_incarnation,
        again.incarnation()
    );
    // A removed peer's frames are refused, as its hellos would be.
    again.remove_peer(1);
    assert!(matches!(
        n[0].send(2, 0, ECHO, Bytes::new()).await,
        Err(TransportError::Unreachable { .. })
    ));
    drop(again);
    assert!(net.running() == vec![1]);
}
