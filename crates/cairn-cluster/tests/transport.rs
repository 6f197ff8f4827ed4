//! Transport behaviour over real sockets on 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use cairn_cluster::transport::frame::{
    Frame, FrameCodec, FrameType, HEADER_LEN, Header, Hello, HelloAck, HelloStatus,
};
use cairn_cluster::transport::{RemoteError, Transport, TransportConfig, TransportError};
use common::*;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{FramedRead, FramedWrite};

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_three_nodes_when_each_calls_the_others_then_every_call_is_answered_by_the_right_node()
 {
    bounded(async {
        let nodes = cluster(3).await;
        for a in &nodes {
            for b in &nodes {
                let (from, to) = (a.t.node_id(), b.t.node_id());
                if from == to {
                    continue;
                }
                let answer =
                    a.t.call(to, 7, WHO, Bytes::new(), 5 * SECOND)
                        .await
                        .unwrap();
                assert_eq!(answer, format!("node {to} from {from} group 7").as_bytes());
            }
        }
        // Every pair ended up with exactly one connection, agreed on by both ends.
        for a in &nodes {
            for b in &nodes {
                if a.t.node_id() < b.t.node_id() {
                    let ab = a.t.connection(b.t.node_id()).unwrap();
                    let ba = b.t.connection(a.t.node_id()).unwrap();
                    assert_eq!((ab.local_addr, ab.peer_addr), (ba.peer_addr, ba.local_addr));
                }
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_1000_concurrent_calls_when_multiplexed_then_all_answered_correctly_on_one_connection()
 {
    bounded(async {
        let nodes = cluster(2).await;
        let a = nodes[0].t.clone();
        let mut calls = Vec::new();
        for i in 0..1000u64 {
            let a = a.clone();
            calls.push(tokio::spawn(async move {
                let payload = Bytes::from(format!("request {i}"));
                let group = i % 17;
                let answer = a.call(2, group, ECHO, payload.clone(), 10 * SECOND).await;
                (payload, answer)
            }));
        }
        for c in calls {
            let (payload, answer) = c.await.unwrap();
            assert_eq!(answer.unwrap(), payload);
        }
        let ma = a.peer_metrics(2).unwrap().snapshot();
        let mb = nodes[1].t.peer_metrics(1).unwrap().snapshot();
        assert_eq!(ma.connections_established, 1);
        assert_eq!(mb.connections_established, 1);
        assert_eq!(ma.calls_ok, 1000);
        assert_eq!(ma.rpc_latency.count, 1000);
        assert_eq!(ma.frames_sent, 1000);
        assert_eq!(mb.frames_received, 1000);
        assert_eq!(mb.frames_sent, 1000);
        assert_eq!(ma.bytes_sent, mb.bytes_received);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_slow_handler_in_group_1_when_calling_group_2_then_group_2_is_not_delayed() {
    bounded(async {
        let nodes = cluster(2).await;
        let a = nodes[0].t.clone();
        let slow = {
            let a = a.clone();
            tokio::spawn(async move { a.call(2, 1, SLOW, millis(2000), 10 * SECOND).await })
        };
        // Let the slow request reach its handler first.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let start = Instant::now();
        for _ in 0..10 {
            a.call(2, 2, ECHO, Bytes::from_static(b"x"), 10 * SECOND)
                .await
                .unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "group 2 took {:?}",
            start.elapsed()
        );
        assert!(!slow.is_finished(), "group 1 should still be busy");
        assert_eq!(slow.await.unwrap().unwrap(), millis(2000));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_handler_slower_than_deadline_when_calling_then_timeout_at_the_deadline() {
    bounded(async {
        let nodes = cluster(2).await;
        let a = &nodes[0].t;
        a.call(2, 0, ECHO, Bytes::new(), 5 * SECOND).await.unwrap();
        let start = Instant::now();
        let err = a
            .call(2, 0, SLOW, millis(5000), Duration::from_millis(150))
            .await
            .unwrap_err();
        let took = start.elapsed();
        assert!(
            matches!(err, TransportError::Timeout { peer: 2, .. }),
            "{err}"
        );
        assert!(
            took >= Duration::from_millis(150) && took < SECOND,
            "{took:?}"
        );
        assert_eq!(a.peer_metrics(2).unwrap().snapshot().calls_timeout, 1);
        // The connection survives a timeout and the late answer is discarded.
        a.call(2, 0, ECHO, Bytes::new(), 5 * SECOND).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_peer_shut_down_when_calls_in_flight_then_they_fail_fast_and_calls_succeed_after_restart()
 {
    bounded(async {
        let nodes = cluster(2).await;
        let a = nodes[0].t.clone();
        let b_addr = nodes[1].t.local_addr();
        a.call(2, 0, ECHO, Bytes::new(), 5 * SECOND).await.unwrap();

        let in_flight: Vec<_> = (0..20)
            .map(|g| {
                let a = a.clone();
                tokio::spawn(async move { a.call(2, g, SLOW, millis(20_000), 30 * SECOND).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let start = Instant::now();
        nodes[1].t.shutdown().await;
        for c in in_flight {
            let err = c.await.unwrap().unwrap_err();
            assert!(
                matches!(err, TransportError::ConnectionLost { peer: 2 }),
                "{err}"
            );
        }
        assert!(start.elapsed() < 2 * SECOND, "took {:?}", start.elapsed());

        // While B is down, calls fail when their deadline passes, saying why.
        let err = a
            .call(2, 0, ECHO, Bytes::new(), Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(
            matches!(err, TransportError::Unreachable { peer: 2, .. }),
            "{err}"
        );
        drop(nodes);

        // A call made while B is down waits for the reconnect within its
        // deadline: B restarts on the same address (new incarnation) 300 ms
        // later, A's dialer gets through, and the call is answered.
        let waiting = {
            let a = a.clone();
            tokio::spawn(async move { a.call(2, 0, WHO, Bytes::new(), 5 * SECOND).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let b = Node::start_with(TransportConfig::new(2, b_addr)).await;
        b.t.set_peer(1, a.local_addr());
        let answer = waiting.await.unwrap().unwrap();
        assert_eq!(answer, "node 2 from 1 group 0".as_bytes());
        let m = a.peer_metrics(2).unwrap().snapshot();
        assert_eq!(m.connections_established, 2);
        assert_eq!(m.calls_connection_lost, 20);
        assert!(m.dial_failures >= 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_peer_transport_dropped_when_call_in_flight_then_connection_lost_promptly() {
    bounded(async {
        let mut nodes = cluster(2).await;
        let a = nodes[0].t.clone();
        a.call(2, 0, ECHO, Bytes::new(), 5 * SECOND).await.unwrap();
        let call = {
            let a = a.clone();
            tokio::spawn(async move { a.call(2, 0, SLOW, millis(20_000), 30 * SECOND).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let start = Instant::now();
        drop(nodes.pop()); // B's last handle: no explicit shutdown
        let err = call.await.unwrap().unwrap_err();
        assert!(
            matches!(err, TransportError::ConnectionLost { peer: 2 }),
            "{err}"
        );
        assert!(start.elapsed() < 2 * SECOND, "took {:?}", start.elapsed());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_wrong_node_at_the_address_when_calling_then_unreachable_naming_the_real_node() {
    bounded(async {
        let a = Node::start(1).await;
        let c = Node::start(3).await;
        // A believes node 2 lives where node 3 is.
        a.t.set_peer(2, c.t.local_addr());
        let err =
            a.t.call(2, 0, ECHO, Bytes::new(), Duration::from_millis(500))
                .await
                .unwrap_err();
        match &err {
            TransportError::Unreachable { peer: 2, reason } => {
                assert!(reason.contains("is node 3, not node 2"), "{reason}")
            }
            other => panic!("expected Unreachable, got {other}"),
        }
        assert!(!a.t.is_connected(2));
        assert!(!c.t.is_connected(1));
        assert!(a.t.peer_metrics(2).unwrap().snapshot().dial_failures >= 1);
    })
    .await;
}

async fn raw_handshake(
    addr: std::net::SocketAddr,
    from: u64,
    to: u64,
) -> (
    FramedRead<tokio::net::tcp::OwnedReadHalf, FrameCodec>,
    FramedWrite<tokio::net::tcp::OwnedWriteHalf, FrameCodec>,
    HelloAck,
) {
    let (r, w) = TcpStream::connect(addr).await.unwrap().into_split();
    let mut reader = FramedRead::new(r, FrameCodec::new(1 << 20));
    let mut writer = FramedWrite::new(w, FrameCodec::new(1 << 20));
    let hello = Hello {
        to,
        incarnation: 5,
        nonce: None,
    };
    writer
        .send(Frame {
            header: Header {
                frame_type: FrameType::Hello,
                kind: 0,
                from,
                group: 0,
                request_id: 0,
            },
            payload: hello.encode(),
        })
        .await
        .unwrap();
    let ack = reader.next().await.unwrap().unwrap();
    assert_eq!(ack.header.frame_type, FrameType::HelloAck);
    let ack = HelloAck::decode(ack.payload).unwrap();
    (reader, writer, ack)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_hello_for_another_node_id_when_connecting_then_rejected_and_closed() {
    bounded(async {
        let b = Node::start(2).await;
        let (mut reader, _w, ack) = raw_handshake(b.t.local_addr(), 9, 99).await;
        assert_eq!(ack.status, HelloStatus::WrongNode);
        assert!(reader.next().await.is_none(), "connection should be closed");
        assert!(!b.t.is_connected(9));
        // Claiming to be the acceptor itself is rejected too.
        let (_r, _w, ack) = raw_handshake(b.t.local_addr(), 2, 2).await;
        assert_eq!(ack.status, HelloStatus::InvalidId);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_frame_claiming_another_sender_after_hello_when_received_then_connection_dropped() {
    bounded(async {
        let b = Node::start(2).await;
        let (mut reader, mut writer, ack) = raw_handshake(b.t.local_addr(), 9, 2).await;
        assert_eq!(ack.status, HelloStatus::Accepted);
        writer
            .send(Frame {
                header: Header {
                    frame_type: FrameType::Request,
                    kind: ECHO,
                    from: 8, // not 9
                    group: 0,
                    request_id: 1,
                },
                payload: Bytes::new(),
            })
            .await
            .unwrap();
        assert!(reader.next().await.is_none(), "connection should be closed");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_oversize_payloads_when_calling_then_frame_too_large_and_connection_survives() {
    bounded(async {
        let mut nodes = Vec::new();
        for id in 1..=2 {
            let mut config = TransportConfig::new(id, loopback());
            config.max_payload_len = 1024;
            nodes.push(Node::start_with(config).await);
        }
        mesh(&nodes);
        let a = &nodes[0].t;
        // Our own request: refused before anything is sent.
        let err = a
            .call(2, 0, ECHO, Bytes::from(vec![0u8; 1025]), SECOND)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            TransportError::FrameTooLarge {
                len: 1025,
                max: 1024
            }
        );
        assert_eq!(
            a.send(2, 0, ECHO, Bytes::from(vec![0u8; 2000])).await,
            Err(TransportError::FrameTooLarge {
                len: 2000,
                max: 1024
            })
        );
        // Exactly the limit passes.
        let full = Bytes::from(vec![1u8; 1024]);
        assert_eq!(
            a.call(2, 0, ECHO, full.clone(), 5 * SECOND).await.unwrap(),
            full
        );
        // The peer's response over the limit: a remote error, not a dead connection.
        let err = a
            .call(2, 0, BIG, millis(4096), 5 * SECOND)
            .await
            .unwrap_err();
        match err {
            TransportError::Remote { peer: 2, error } => {
                assert_eq!(error.code, RemoteError::RESPONSE_TOO_LARGE)
            }
            other => panic!("expected Remote, got {other}"),
        }
        assert_eq!(
            a.peer_metrics(2)
                .unwrap()
                .snapshot()
                .connections_established,
            1
        );
        a.call(2, 0, ECHO, Bytes::new(), 5 * SECOND).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_length_prefix_over_the_limit_from_a_peer_when_received_then_connection_closed() {
    bounded(async {
        let mut config = TransportConfig::new(2, loopback());
        config.max_payload_len = 1024;
        let b = Node::start_with(config).await;
        let (r, w) = TcpStream::connect(b.t.local_addr())
            .await
            .unwrap()
            .into_split();
        let mut reader = FramedRead::new(r, FrameCodec::new(1 << 20));
        let mut writer = FramedWrite::new(w, FrameCodec::new(1 << 20));
        writer
            .send(Frame {
                header: Header {
                    frame_type: FrameType::Hello,
                    kind: 0,
                    from: 9,
                    group: 0,
                    request_id: 0,
                },
                payload: Hello {
                    to: 2,
                    incarnation: 1,
                    nonce: None,
                }
                .encode(),
            })
            .await
            .unwrap();
        assert!(reader.next().await.unwrap().is_ok());
        // A header that announces 10 MiB, far over B's 1 KiB limit.
        let mut raw = writer.into_inner();
        let mut prefix = BytesMut::new();
        prefix.put_u32((10 << 20) + HEADER_LEN as u32);
        raw.write_all(&prefix).await.unwrap();
        raw.write_all(&[0u8; 64]).await.unwrap();
        // B must close without waiting for (or allocating) the 10 MiB.
        let mut inner = reader.into_inner();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(2 * SECOND, inner.read(&mut buf))
            .await
            .expect("B should close the connection")
            .unwrap_or(0);
        assert_eq!(n, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_failing_and_panicking_handlers_when_calling_then_remote_errors_and_connection_survives()
 {
    bounded(async {
        let nodes = cluster(2).await;
        let a = &nodes[0].t;
        let err = a
            .call(2, 0, FAIL, Bytes::new(), 5 * SECOND)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            TransportError::Remote {
                peer: 2,
                error: RemoteError::new(1001, "asked to fail")
            }
        );
        // A generous deadline: the panic hook prints a symbolized
        // backtrace first (RUST_BACKTRACE in the suite), which can take
        // seconds in a debug binary on a loaded machine.
        let err = a
            .call(2, 3, PANIC, Bytes::new(), 25 * SECOND)
            .await
            .unwrap_err();
        match err {
            TransportError::Remote { error, .. } => {
                assert_eq!(error.code, RemoteError::HANDLER_PANICKED)
            }
            other => panic!("expected Remote, got {other}"),
        }
        a.call(2, 0, ECHO, Bytes::new(), 5 * SECOND).await.unwrap();
        let m = a.peer_metrics(2).unwrap().snapshot();
        assert_eq!((m.calls_ok, m.calls_remote_error), (1, 2));
        assert_eq!(m.connections_established, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_simultaneous_dials_when_both_nodes_call_at_once_then_one_connection_survives() {
    bounded(async {
        for round in 0..20 {
            let nodes = cluster(2).await;
            let (a, b) = (nodes[0].t.clone(), nodes[1].t.clone());
            let (ra, rb) = tokio::join!(
                a.call(2, 0, ECHO, Bytes::new(), 5 * SECOND),
                b.call(1, 0, ECHO, Bytes::new(), 5 * SECOND)
            );
            ra.unwrap();
            rb.unwrap();
            let ab = a.connection(2).unwrap();
            let ba = b.connection(1).unwrap();
            assert_eq!(
                (ab.local_addr, ab.peer_addr),
                (ba.peer_addr, ba.local_addr),
                "round {round}: the two ends hold different connections"
            );
            assert_ne!(ab.dialed_by_us, ba.dialed_by_us);
            let ea = a
                .peer_metrics(2)
                .unwrap()
                .snapshot()
                .connections_established;
            let eb = b
                .peer_metrics(1)
                .unwrap()
                .snapshot()
                .connections_established;
            assert_eq!((ea, eb), (1, 1), "round {round}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_node_not_in_our_table_when_it_dials_us_then_we_can_call_it_back() {
    bounded(async {
        let a = Node::start(1).await;
        let joiner = Node::start(7).await;
        joiner.t.set_peer(1, a.t.local_addr());
        joiner
            .t
            .call(1, 0, ECHO, Bytes::new(), 5 * SECOND)
            .await
            .unwrap();
        assert_eq!(a.t.peers().get(&7), Some(&None));
        let answer = a.t.call(7, 0, WHO, Bytes::new(), 5 * SECOND).await.unwrap();
        assert_eq!(answer, "node 7 from 1 group 0".as_bytes());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_one_way_send_when_connected_then_delivered_and_when_not_connected_then_unreachable()
{
    bounded(async {
        let mut nodes = cluster(2).await;
        let a = nodes[0].t.clone();
        let err = a
            .send(2, 4, ECHO, Bytes::from_static(b"hb"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, TransportError::Unreachable { peer: 2, .. }),
            "{err}"
        );
        // The failed send started a dial; soon a send goes through.
        let deadline = Instant::now() + 5 * SECOND;
        while a.send(2, 4, ECHO, Bytes::from_static(b"hb")).await.is_err() {
            assert!(Instant::now() < deadline, "never connected");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (from, group, _, payload) = nodes[1].expect_seen(ECHO, 5 * SECOND).await.unwrap();
        assert_eq!((from, group, &payload[..]), (1, 4, &b"hb"[..]));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_unknown_removed_or_shut_down_peer_when_calling_then_clear_errors() {
    bounded(async {
        let nodes = cluster(2).await;
        let a: Transport = nodes[0].t.clone();
        assert_eq!(
            a.call(9, 0, ECHO, Bytes::new(), SECOND).await,
            Err(TransportError::UnknownPeer { peer: 9 })
        );
        a.call(2, 0, ECHO, Bytes::new(), 5 * SECOND).await.unwrap();
        assert!(a.remove_peer(2));
        assert_eq!(
            a.call(2, 0, ECHO, Bytes::new(), SECOND).await,
            Err(TransportError::UnknownPeer { peer: 2 })
        );
        // Node 2 sees the connection close; it still knows node 1, but its
        // dials are refused now.
        let deadline = Instant::now() + 5 * SECOND;
        while nodes[1].t.is_connected(1) {
            assert!(Instant::now() < deadline, "node 2 never saw the close");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let err = nodes[1]
            .t
            .call(1, 0, ECHO, Bytes::new(), Duration::from_millis(300))
            .await
            .unwrap_err();
        match err {
            TransportError::Unreachable { peer: 1, reason } => {
                assert!(reason.contains("Removed"), "{reason}")
            }
            other => panic!("expected Unreachable, got {other}"),
        }
        assert_eq!(
            a.call(2, 0, ECHO, Bytes::new(), SECOND).await,
            Err(TransportError::UnknownPeer { peer: 2 })
        );
        // Adding it back lifts the ban.
        a.set_peer(2, nodes[1].t.local_addr());
        a.call(2, 0, ECHO, Bytes::new(), 5 * SECOND).await.unwrap();
        a.shutdown().await;
        assert_eq!(
            a.call(2, 0, ECHO, Bytes::new(), SECOND).await,
            Err(TransportError::Shutdown)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_peer_at_its_in_flight_limit_when_calling_then_overloaded_and_answers_still_flow() {
    bounded(async {
        let a = Node::start(1).await;
        let mut config = TransportConfig::new(2, loopback());
        config.max_inbound_in_flight = 2;
        let b = Node::start_with(config).await;
        let nodes = [a, b];
        mesh(&nodes);
        let a = nodes[0].t.clone();
        let slow: Vec<_> = (0..2)
            .map(|_| {
                let a = a.clone();
                tokio::spawn(async move { a.call(2, 1, SLOW, millis(500), 5 * SECOND).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let err = a
            .call(2, 2, ECHO, Bytes::new(), 5 * SECOND)
            .await
            .unwrap_err();
        match err {
            TransportError::Remote { error, .. } => assert_eq!(error.code, RemoteError::OVERLOADED),
            other => panic!("expected Remote, got {other}"),
        }
        // B's own calls to A are answered although B refuses A's requests.
        nodes[1]
            .t
            .call(1, 0, ECHO, Bytes::new(), 5 * SECOND)
            .await
            .unwrap();
        for c in slow {
            c.await.unwrap().unwrap();
        }
        a.call(2, 2, ECHO, Bytes::new(), 5 * SECOND).await.unwrap();
        let m = nodes[1].t.peer_metrics(1).unwrap().snapshot();
        assert_eq!(m.requests_rejected_overload, 1);
    })
    .await;
}
