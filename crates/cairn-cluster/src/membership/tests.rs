use super::*;

const MS: Duration = Duration::from_millis(1);
const BEAT: Duration = Duration::from_millis(150);

fn membership(peers: &[NodeId], t0: Instant) -> Membership {
    let mut m = Membership::new(MembershipConfig::default());
    for &p in peers {
        assert!(m.add_peer(p, t0));
    }
    m
}

/// Heartbeats from `peer` every 150 ms for `n` beats after `t`, ticking
/// after each; returns the time of the last one.
fn beat(m: &mut Membership, peer: NodeId, mut t: Instant, n: u32) -> Instant {
    for _ in 0..n {
        t += BEAT;
        m.record_heartbeat(peer, t).unwrap();
        m.tick(t);
    }
    t
}

fn states(changes: &[StateChange]) -> Vec<(NodeState, NodeState)> {
    changes.iter().map(|c| (c.from, c.to)).collect()
}

#[test]
fn given_a_new_peer_when_heard_then_up() {
    let t0 = Instant::now();
    let mut m = membership(&[2], t0);
    assert_eq!(m.state(2), Some(NodeState::Suspect));
    assert!(m.tick(t0 + BEAT).is_empty(), "no news is not a change");
    let c = m.record_heartbeat(2, t0 + BEAT).unwrap().unwrap();
    assert_eq!((c.from, c.to), (NodeState::Suspect, NodeState::Up));
    assert!(m.record_heartbeat(2, t0 + BEAT * 2).unwrap().is_none());
    assert!(matches!(
        m.record_heartbeat(9, t0),
        Err(MembershipError::UnknownPeer(9))
    ));
}

#[test]
fn given_an_up_peer_when_silent_then_suspect_then_down_then_up_on_heartbeat() {
    let t0 = Instant::now();
    let mut m = membership(&[2, 3], t0);
    let last = beat(&mut m, 2, t0, 20);
    m.record_heartbeat(3, last).unwrap();
    // Tick finely: both steps show, each once, in order.
    let mut seen = Vec::new();
    for ms in (0..2000).step_by(10) {
        let t = last + MS * ms;
        m.record_heartbeat(3, t).unwrap(); // 3 keeps beating
        seen.extend(m.tick(t));
    }
    assert_eq!(
        states(&seen),
        vec![
            (NodeState::Up, NodeState::Suspect),
            (NodeState::Suspect, NodeState::Down)
        ]
    );
    assert!(seen.iter().all(|c| c.peer == 2));
    assert!(seen[0].phi >= 5.0 && seen[1].phi >= 8.0);
    assert_eq!(m.state(3), Some(NodeState::Up));
    let back = m.record_heartbeat(2, last + MS * 3000).unwrap().unwrap();
    assert_eq!((back.from, back.to), (NodeState::Down, NodeState::Up));
}

#[test]
fn given_a_coarse_tick_when_both_thresholds_crossed_then_passes_through_suspect() {
    let t0 = Instant::now();
    let mut m = membership(&[2], t0);
    let last = beat(&mut m, 2, t0, 20);
    let changes = m.tick(last + Duration::from_secs(5));
    assert_eq!(
        states(&changes),
        vec![
            (NodeState::Up, NodeState::Suspect),
            (NodeState::Suspect, NodeState::Down)
        ]
    );
}

#[test]
fn given_a_peer_never_heard_when_time_passes_then_down() {
    let t0 = Instant::now();
    let mut m = membership(&[2], t0);
    let changes = m.tick(t0 + Duration::from_secs(3));
    assert_eq!(
        states(&changes),
        vec![(NodeState::Suspect, NodeState::Down)]
    );
    let v = m.view(t0 + Duration::from_secs(3));
    assert_eq!(v[0].last_heartbeat_ago_ms, None);
    assert_eq!(v[0].state, NodeState::Down);
}

#[test]
fn given_admin_states_when_heartbeats_and_silence_then_admin_kept_but_down_wins() {
    let t0 = Instant::now();
    let mut m = membership(&[2], t0);
    let last = beat(&mut m, 2, t0, 10);
    let c = m
        .set_admin_state(2, Some(AdminState::Draining), last)
        .unwrap()
        .unwrap();
    assert_eq!((c.from, c.to), (NodeState::Up, NodeState::Draining));
    let last = beat(&mut m, 2, last, 5);
    assert_eq!(m.state(2), Some(NodeState::Draining), "heartbeats keep it");
    // Suspicion does not hide the admin state; conviction does.
    let changes = m.tick(last + Duration::from_secs(5));
    assert_eq!(
        states(&changes),
        vec![(NodeState::Draining, NodeState::Down)]
    );
    let c = m
        .record_heartbeat(2, last + Duration::from_secs(6))
        .unwrap()
        .unwrap();
    assert_eq!((c.from, c.to), (NodeState::Down, NodeState::Draining));
    m.set_admin_state(2, Some(AdminState::Joining), last)
        .unwrap();
    assert_eq!(m.state(2), Some(NodeState::Joining));
    let c = m.set_admin_state(2, None, last).unwrap().unwrap();
    assert_eq!((c.from, c.to), (NodeState::Joining, NodeState::Up));
    assert!(m.set_admin_state(7, None, last).is_err());
}

#[test]
fn given_heartbeat_messages_when_stale_or_from_a_restart_then_handled() {
    let t0 = Instant::now();
    let mut m = membership(&[2], t0);
    let hb = |incarnation, sent_at_micros| Heartbeat {
        incarnation,
        sent_at_micros,
    };
    let mut t = t0;
    for i in 1..=10 {
        t += BEAT;
        m.record_heartbeat_msg(2, &hb(7, i * 150_000), t).unwrap();
    }
    let samples = |m: &Membership| m.peers[&2].detector.samples();
    assert_eq!(samples(&m), 9);
    // A duplicate or older beat is not news.
    m.record_heartbeat_msg(2, &hb(7, 5 * 150_000), t + BEAT)
        .unwrap();
    assert_eq!(samples(&m), 9);
    assert_eq!(m.view(t + BEAT)[0].last_heartbeat_ago_ms, Some(150));
    // A new incarnation starts a fresh history, whatever its clock says.
    m.record_heartbeat_msg(2, &hb(8, 1), t + BEAT).unwrap();
    assert_eq!(samples(&m), 0);
    assert_eq!(m.view(t + BEAT)[0].incarnation, Some(8));
    assert_eq!(m.state(2), Some(NodeState::Up));
}

#[test]
fn given_a_heartbeat_when_encoded_then_small_and_round_trips() {
    let hb = Heartbeat {
        incarnation: u64::MAX,
        sent_at_micros: 123_456_789,
    };
    let bytes = hb.encode();
    assert!(bytes.len() <= 16, "{} bytes", bytes.len());
    assert_eq!(Heartbeat::decode(&bytes).unwrap(), hb);
    assert!(matches!(
        Heartbeat::decode(&[0xff]),
        Err(MembershipError::Decode(_))
    ));
}

#[test]
fn given_states_when_serialized_then_snake_case() {
    let all = [
        NodeState::Joining,
        NodeState::Up,
        NodeState::Suspect,
        NodeState::Down,
        NodeState::Draining,
    ];
    let json = serde_json::to_string(&all).unwrap();
    assert_eq!(json, r#"["joining","up","suspect","down","draining"]"#);
    for s in all {
        assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
    }
    let status = PeerStatus {
        id: 2,
        state: NodeState::Suspect,
        phi: 5.5,
        last_heartbeat_ago_ms: Some(700),
        incarnation: None,
    };
    let v: serde_json::Value = serde_json::to_value(&status).unwrap();
    assert_eq!(v["state"], "suspect");
    assert_eq!(v["last_heartbeat_ago_ms"], 700);
}
