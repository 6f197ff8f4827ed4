//! Membership over real transports on loopback: heartbeats, conviction of
//! a stopped node, recovery after a restart, and a partition through the
//! fault filter. Timings are only ever "eventually, within a generous
//! bound", so a loaded machine slows the tests down without failing them.

mod common;

use std::time::Duration;

use bytes::Bytes;
use cairn_cluster::membership::{
    HeartbeatConfig, HeartbeatService, HeartbeatTask, NodeState, StateChange, is_heartbeat,
};
use cairn_cluster::transport::{
    FaultRule, NodeId, RemoteError, Transport, TransportConfig, handler_fn,
};
use common::{bounded, loopback};
use futures::FutureExt;
use tokio::sync::broadcast;

/// Conviction takes ~0.8 s of silence with the defaults; allow plenty.
const WITHIN: Duration = Duration::from_secs(8);

struct Node {
    t: Transport,
    hb: HeartbeatService,
    task: HeartbeatTask,
}

impl Node {
    async fn start(id: NodeId) -> Node {
        let hb = HeartbeatService::new(HeartbeatConfig::default());
        let receiver = hb.clone();
        let handler = handler_fn(move |from, group, kind, payload: Bytes| {
            let result = if is_heartbeat(group, kind) {
                receiver
                    .on_heartbeat(from, &payload)
                    .map(|()| Bytes::new())
                    .map_err(|e| RemoteError::new(1, e.to_string()))
            } else {
                Err(RemoteError::new(2, "not a heartbeat"))
            };
            async move { result }.boxed()
        });
        let mut config = TransportConfig::new(id, loopback());
        // A restarted peer should be redialed quickly.
        config.reconnect_backoff_max = Duration::from_millis(200);
        let t = Transport::bind(config, handler).await.expect("bind");
        let task = hb.start(t.clone());
        Node { t, hb, task }
    }

    fn id(&self) -> NodeId {
        self.t.node_id()
    }

    async fn stop(self) {
        self.task.stop().await;
        self.t.shutdown().await;
    }
}

fn mesh(nodes: &[&Node]) {
    for a in nodes {
        for b in nodes {
            a.t.set_peer(b.id(), b.t.local_addr());
        }
    }
}

/// Polls until `check` holds, up to [`WITHIN`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WITHIN;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {WITHIN:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn all_see_all_up(nodes: &[&Node]) {
    for a in nodes {
        for b in nodes {
            if a.id() != b.id() {
                let what = format!("node {} sees {} up", a.id(), b.id());
                eventually(&what, || a.hb.state(b.id()) == Some(NodeState::Up)).await;
            }
        }
    }
}

/// Collects `peer`'s state changes until it reaches `target`.
async fn changes_until(
    rx: &mut broadcast::Receiver<StateChange>,
    peer: NodeId,
    target: NodeState,
) -> Vec<(NodeState, NodeState)> {
    let mut seen = Vec::new();
    tokio::time::timeout(WITHIN, async {
        loop {
            let c = rx.recv().await.expect("event stream open, not lagging");
            if c.peer == peer {
                seen.push((c.from, c.to));
                if c.to == target {
                    return;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("peer {peer} did not reach {target} within {WITHIN:?}: {seen:?}"));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_three_nodes_when_one_stops_and_restarts_then_suspect_down_and_up_again() {
    bounded(async {
        let (n1, n2, n3) = (
            Node::start(1).await,
            Node::start(2).await,
            Node::start(3).await,
        );
        mesh(&[&n1, &n2, &n3]);
        all_see_all_up(&[&n1, &n2, &n3]).await;
        let view = n1.hb.view();
        assert_eq!(view.len(), 2);
        assert!(
            view.iter()
                .all(|p| p.phi < 5.0 && p.last_heartbeat_ago_ms.is_some())
        );

        let (mut rx1, mut rx2) = (n1.hb.subscribe(), n2.hb.subscribe());
        n3.stop().await;
        for rx in [&mut rx1, &mut rx2] {
            let seen = changes_until(rx, 3, NodeState::Down).await;
            assert_eq!(
                seen,
                vec![
                    (NodeState::Up, NodeState::Suspect),
                    (NodeState::Suspect, NodeState::Down)
                ]
            );
        }
        // The survivors still see each other.
        assert_eq!(n1.hb.state(2), Some(NodeState::Up));
        assert_eq!(n2.hb.state(1), Some(NodeState::Up));

        // Restart: a new process (new incarnation) on a new port.
        let n3 = Node::start(3).await;
        mesh(&[&n1, &n2, &n3]);
        for rx in [&mut rx1, &mut rx2] {
            let seen = changes_until(rx, 3, NodeState::Up).await;
            assert_eq!(seen, vec![(NodeState::Down, NodeState::Up)]);
        }
        all_see_all_up(&[&n1, &n2, &n3]).await;
        let inc = n1
            .hb
            .view()
            .into_iter()
            .find(|p| p.id == 3)
            .unwrap()
            .incarnation;
        assert_eq!(inc, Some(n3.t.incarnation()));

        for n in [n1, n2, n3] {
            n.stop().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_partition_between_two_nodes_when_lifted_then_down_then_up() {
    bounded(async {
        let (n1, n2, n3) = (
            Node::start(1).await,
            Node::start(2).await,
            Node::start(3).await,
        );
        mesh(&[&n1, &n2, &n3]);
        all_see_all_up(&[&n1, &n2, &n3]).await;

        let (mut rx1, mut rx3) = (n1.hb.subscribe(), n3.hb.subscribe());
        // Node 1 drops all traffic with node 3, both ways; 2 is unaffected.
        let rule = n1.t.faults().add(FaultRule::partition([3]));
        changes_until(&mut rx1, 3, NodeState::Down).await;
        changes_until(&mut rx3, 1, NodeState::Down).await;
        assert_eq!(n1.hb.state(2), Some(NodeState::Up));
        assert_eq!(n3.hb.state(2), Some(NodeState::Up));
        assert_eq!(n2.hb.state(1), Some(NodeState::Up));
        assert_eq!(n2.hb.state(3), Some(NodeState::Up));
        assert!(
            n1.t.is_connected(3),
            "a partition loses frames, not sockets"
        );

        assert!(n1.t.faults().remove(rule));
        assert_eq!(
            changes_until(&mut rx1, 3, NodeState::Up).await,
            vec![(NodeState::Down, NodeState::Up)]
        );
        changes_until(&mut rx3, 1, NodeState::Up).await;
        all_see_all_up(&[&n1, &n2, &n3]).await;

        for n in [n1, n2, n3] {
            n.stop().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_running_service_when_its_task_is_dropped_then_heartbeats_stop() {
    bounded(async {
        let (n1, n2) = (Node::start(1).await, Node::start(2).await);
        mesh(&[&n1, &n2]);
        all_see_all_up(&[&n1, &n2]).await;
        let mut rx1 = n1.hb.subscribe();
        // Dropping the task alone (transport still up) silences node 2.
        let Node {
            t: t2,
            hb: _hb2,
            task,
        } = n2;
        drop(task);
        changes_until(&mut rx1, 2, NodeState::Down).await;
        assert!(t2.is_connected(1));
        n1.stop().await;
        t2.shutdown().await;
    })
    .await;
}
