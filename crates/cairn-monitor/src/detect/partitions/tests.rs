use super::super::testkit::*;
use super::*;

#[test]
fn given_a_follower_falling_behind_when_detected_should_name_partition_and_node() {
    let samples = scenario(140, |r, n| {
        if n.node == 1 && (80..110).contains(&r) {
            for rep in &mut n.replicas {
                for f in &mut rep.followers {
                    if f.node == 3 {
                        f.seconds = (r - 79) as f64 * 0.8;
                        f.entries = (r as u64 - 79) * 240;
                    }
                }
            }
        }
    });
    let rounds = per_round(&samples, replication_lag);
    let (first, cleared) = raised_and_cleared(&rounds, codes::REPLICATION_LAG, 80, 110);
    // Steady growth is seen once lag passes the 1 s floor (round 81)
    // and the growth window is full.
    assert!(first <= 92, "raised at {first}");
    assert!(cleared <= 125, "cleared at {cleared}");
    let f = &rounds[100][0];
    assert_eq!(
        f.subject,
        Subject::Partition {
            stream: "app".into(),
            partition: 0,
            node: Some(3)
        }
    );
    assert_eq!(f.resource, Resource::Replication);
    assert!((f.evidence[0].observed - 16.8).abs() < 1e-9);
    assert!(
        f.summary.contains("lags 16.8 s (5040 entries)"),
        "{}",
        f.summary
    );
}

#[test]
fn given_a_lag_over_the_threshold_when_detected_should_raise_within_5_rounds() {
    let samples = scenario(130, |r, n| {
        if n.node == 2 && (80..100).contains(&r) {
            for rep in &mut n.replicas {
                for f in &mut rep.followers {
                    if f.node == 1 {
                        f.seconds = 6.0;
                    }
                }
            }
        }
    });
    let rounds = per_round(&samples, replication_lag);
    let (first, cleared) = raised_and_cleared(&rounds, codes::REPLICATION_LAG, 80, 100);
    assert!(first <= 84 && cleared <= 115, "{first} {cleared}");
}

#[test]
fn given_a_follower_catching_up_by_snapshot_when_detected_should_not_call_it_lagging() {
    let samples = scenario(130, |r, n| {
        if (80..100).contains(&r) {
            for rep in &mut n.replicas {
                if n.node == 1 {
                    rep.catching_up = true;
                }
                for f in &mut rep.followers {
                    if f.node == 1 {
                        f.seconds = 60.0;
                    }
                }
            }
        }
    });
    let rounds = per_round(&samples, replication_lag);
    assert!(
        rounds
            .iter()
            .flatten()
            .all(|f| f.code != codes::REPLICATION_LAG),
        "a catching-up follower was called lagging"
    );
}

#[test]
fn given_a_follower_catching_up_by_snapshot_when_detected_should_report_its_progress() {
    let samples = catching_up_scenario();
    let rounds = per_round(&samples, catching_up_by_snapshot);
    let (first, cleared) = raised_and_cleared(&rounds, codes::CATCHING_UP, 80, 110);
    assert!(first <= 84 && cleared <= 115, "{first} {cleared}");
    let f = &rounds[89][0];
    assert_eq!(
        f.subject,
        Subject::Partition {
            stream: "app".into(),
            partition: 0,
            node: Some(3)
        }
    );
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.resource, Resource::Replication);
    // Round 89: 10 rounds in, 1,000 of 3,000 entries and 40 MB staged.
    assert_eq!(
        f.summary,
        "node 3 is catching up app/0 by snapshot: 40 MB of ~120 MB (33%, 1000 of 3000 entries)"
    );
    let ev = |m: &str| f.evidence.iter().find(|e| e.metric == m).unwrap();
    assert!((ev("catch_up_progress").observed - 1.0 / 3.0).abs() < 1e-9);
    assert_eq!(ev("catch_up_staged_bytes").observed, 40e6);
    assert_eq!(ev("catch_up_entries_left").observed, 2_000.0);
}

#[test]
fn given_a_follower_catching_up_by_snapshot_when_judging_availability_should_not_call_it_under_replicated()
 {
    let samples = catching_up_scenario();
    let rounds = per_round(&samples, availability);
    assert!(
        rounds
            .iter()
            .flatten()
            .all(|f| f.code != codes::UNDER_REPLICATED),
        "a catching-up voter was called under-replicated"
    );
    // Without its own word for it, the same follower is.
    let mut silent = samples.clone();
    for round in &mut silent {
        for n in &mut round.nodes {
            for rep in &mut n.replicas {
                rep.catching_up = false;
                rep.catch_up = None;
            }
        }
    }
    let rounds = per_round(&silent, availability);
    raised_and_cleared(&rounds, codes::UNDER_REPLICATED, 80, 110);
    let lag = per_round(&samples, replication_lag);
    assert!(
        lag.iter()
            .flatten()
            .all(|f| f.code != codes::REPLICATION_LAG)
    );
}

#[test]
fn given_one_partition_taking_most_appends_when_detected_should_call_it_hot() {
    let samples = scenario(130, |r, n| {
        let extra = 2_700 * (r.clamp(80, 100) as u64 - 80);
        for rep in &mut n.replicas {
            if rep.partition == 1 {
                rep.committed_end_offset += extra;
            }
        }
    });
    let rounds = per_round(&samples, hot_partition);
    let (first, cleared) = raised_and_cleared(&rounds, codes::HOT_PARTITION, 80, 100);
    assert!(first <= 84 && cleared <= 115, "{first} {cleared}");
    let f = &rounds[90][0];
    assert_eq!(
        f.subject,
        Subject::Partition {
            stream: "app".into(),
            partition: 1,
            node: None
        }
    );
    assert_eq!(f.evidence[0].observed, 3_000.0);
    assert_eq!(f.evidence[0].baseline, Some(300.0));
}

#[test]
fn given_leaders_piled_on_one_node_when_detected_should_report_imbalance() {
    let samples = scenario(130, |r, n| {
        if (80..100).contains(&r) {
            for rep in &mut n.replicas {
                rep.leader = Some(1);
                rep.is_leader = n.node == 1;
                if n.node != 1 {
                    rep.followers.clear();
                }
            }
        }
    });
    let rounds = per_round(&samples, leader_imbalance);
    let (first, cleared) = raised_and_cleared(&rounds, codes::LEADER_IMBALANCE, 80, 100);
    assert!(first <= 84 && cleared <= 115, "{first} {cleared}");
    let f = &rounds[90][0];
    assert_eq!(f.subject, Subject::Node { node: 1 });
    assert_eq!(f.resource, Resource::Placement);
    assert_eq!(
        (f.evidence[0].observed, f.evidence[0].baseline),
        (3.0, Some(1.0))
    );
}

#[test]
fn given_a_leaderless_partition_and_a_lagging_voter_when_detected_should_report_both() {
    let samples = scenario(130, |r, n| {
        if (80..100).contains(&r) {
            for rep in &mut n.replicas {
                if rep.partition == 2 {
                    rep.leader = None;
                    rep.is_leader = false;
                    rep.followers.clear();
                }
                for f in &mut rep.followers {
                    if rep.partition == 0 && f.node == 2 {
                        f.in_sync = false;
                    }
                }
            }
            if n.node == 3 {
                n.quarantined_replicas = 1;
            }
        }
    });
    let rounds = per_round(&samples, availability);
    for code in [
        codes::LEADERLESS_PARTITION,
        codes::UNDER_REPLICATED,
        codes::QUARANTINED_REPLICA,
    ] {
        let (first, cleared) = raised_and_cleared(&rounds, code, 80, 100);
        assert!(first <= 84 && cleared <= 115, "{code}: {first} {cleared}");
    }
    let leaderless = rounds[90]
        .iter()
        .find(|f| f.code == codes::LEADERLESS_PARTITION)
        .unwrap();
    assert_eq!(leaderless.severity, Severity::Critical);
    assert_eq!(
        leaderless.subject,
        Subject::Partition {
            stream: "app".into(),
            partition: 2,
            node: None
        }
    );
    let under = rounds[90]
        .iter()
        .find(|f| f.code == codes::UNDER_REPLICATED)
        .unwrap();
    assert!(under.summary.contains("app/0"), "{}", under.summary);
}
