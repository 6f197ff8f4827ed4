//! Every partition as the latest round shows it: leader, replicas, term,
//! committed end offset and each follower's lag in entries and seconds —
//! the dashboard's and `cairn top`'s partition view.
//!
//! Each node reports the replicas it holds; only a leader knows its
//! followers' lag. So a partition's line comes from the replica that claims
//! leadership with the highest term (after an election a deposed leader may
//! still claim the old term for a round), and without any leader from the
//! most advanced replica, marked leaderless. Nodes missing from the round
//! contribute nothing: a partition whose leader is down shows its
//! surviving replicas' view until a new leader reports.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::sample::{ClusterSample, FollowerLag};

/// One partition's line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionView {
    pub stream: String,
    pub partition: u32,
    /// `None`: no replica in the round claims leadership.
    pub leader: Option<u64>,
    pub term: u64,
    pub replicas: Vec<u64>,
    pub preferred_leader: Option<u64>,
    /// One past the last committed offset, on the reporting replica.
    pub committed_end_offset: u64,
    /// As the leader sees them (empty without a leader).
    pub followers: Vec<FollowerLag>,
    /// The replicas that reported this partition in the round.
    pub reporting: Vec<u64>,
    /// Replicas catching up by snapshot, as they report themselves (the
    /// leader only sees them as far behind).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub catching_up: Vec<ReplicaCatchUp>,
}

/// One replica catching up by snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaCatchUp {
    pub node: u64,
    /// Share of the snapshot's entries fetched, 0..=100 (`None`: the
    /// node did not say).
    pub percent: Option<f64>,
    pub staged_bytes: u64,
}

/// The partitions of `round`, ordered by stream and partition.
pub fn partitions(round: &ClusterSample) -> Vec<PartitionView> {
    let mut out: BTreeMap<(String, u32), PartitionView> = BTreeMap::new();
    for n in round.nodes.iter().filter(|n| !n.is_missing()) {
        for r in &n.replicas {
            let key = (r.stream.clone(), r.partition);
            let candidate = PartitionView {
                stream: r.stream.clone(),
                partition: r.partition,
                leader: r.is_leader.then_some(n.node),
                term: r.term,
                replicas: r.replicas.clone(),
                preferred_leader: r.preferred_leader,
                committed_end_offset: r.committed_end_offset,
                followers: if r.is_leader {
                    r.followers.clone()
                } else {
                    Vec::new()
                },
                reporting: vec![n.node],
                catching_up: Vec::new(),
            };
            let caught = r.catching_up.then(|| ReplicaCatchUp {
                node: n.node,
                percent: r.catch_up.map(|c| (c.fraction() * 100.0).floor()),
                staged_bytes: r.catch_up.map_or(0, |c| c.staged_bytes),
            });
            let have = match out.get_mut(&key) {
                None => {
                    out.insert(key.clone(), candidate);
                    out.get_mut(&key).expect("just inserted")
                }
                Some(have) => {
                    let mut reporting = std::mem::take(&mut have.reporting);
                    let catching = std::mem::take(&mut have.catching_up);
                    reporting.push(n.node);
                    // A leader beats a follower; of two leaders, the
                    // higher term; of two followers, the more advanced.
                    let better = match (candidate.leader, have.leader) {
                        (Some(_), None) => true,
                        (Some(_), Some(_)) => candidate.term > have.term,
                        (None, None) => candidate.committed_end_offset > have.committed_end_offset,
                        (None, Some(_)) => false,
                    };
                    if better {
                        *have = candidate;
                    }
                    have.reporting = reporting;
                    have.catching_up = catching;
                    have
                }
            };
            have.catching_up.extend(caught);
        }
    }
    out.into_values()
        .map(|mut p| {
            p.reporting.sort_unstable();
            p.catching_up.sort_by_key(|c| c.node);
            p
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{NodeSample, ReplicaSample};

    fn replica(partition: u32, leader: bool, term: u64, end: u64) -> ReplicaSample {
        ReplicaSample {
            stream: "app".into(),
            partition,
            is_leader: leader,
            leader: None,
            term,
            committed_end_offset: end,
            replicas: vec![1, 2, 3],
            preferred_leader: Some(1),
            catching_up: false,
            catch_up: None,
            followers: if leader {
                vec![FollowerLag {
                    node: 2,
                    voter: true,
                    entries: 7,
                    seconds: 0.5,
                    in_sync: true,
                }]
            } else {
                Vec::new()
            },
        }
    }

    fn node(id: u64, replicas: Vec<ReplicaSample>) -> NodeSample {
        NodeSample {
            node: id,
            unix_ms: 1_000,
            snapshot_unix_ms: 1_000,
            replicas,
            ..NodeSample::default()
        }
    }

    #[test]
    fn given_a_leader_and_followers_when_listing_should_take_the_leaders_view() {
        let round = ClusterSample {
            unix_ms: 1_000,
            nodes: vec![
                node(1, vec![replica(0, false, 3, 90)]),
                node(2, vec![replica(0, true, 3, 100)]),
                node(3, vec![replica(0, false, 3, 95)]),
            ],
        };
        let ps = partitions(&round);
        assert_eq!(ps.len(), 1);
        assert_eq!(ps[0].leader, Some(2));
        assert_eq!(ps[0].committed_end_offset, 100);
        assert_eq!(ps[0].followers[0].entries, 7);
        assert_eq!(ps[0].reporting, vec![1, 2, 3]);
    }

    #[test]
    fn given_a_replica_catching_up_when_listing_should_show_its_progress() {
        let mut catching = replica(0, false, 3, 10);
        catching.catching_up = true;
        catching.catch_up = Some(crate::sample::CatchUpProgress {
            first_index: 101,
            next_index: 141,
            last_index: 200,
            staged_bytes: 4_000,
        });
        let round = ClusterSample {
            unix_ms: 1_000,
            nodes: vec![
                node(3, vec![catching]),
                node(2, vec![replica(0, true, 3, 100)]),
            ],
        };
        let ps = partitions(&round);
        assert_eq!(ps[0].leader, Some(2), "the leader's view stands");
        assert_eq!(
            ps[0].catching_up,
            vec![ReplicaCatchUp {
                node: 3,
                percent: Some(40.0),
                staged_bytes: 4_000
            }]
        );
    }

    #[test]
    fn given_two_claimed_leaders_when_listing_should_trust_the_higher_term() {
        let round = ClusterSample {
            unix_ms: 1_000,
            nodes: vec![
                node(1, vec![replica(0, true, 4, 100)]),
                node(2, vec![replica(0, true, 3, 120)]),
            ],
        };
        assert_eq!(partitions(&round)[0].leader, Some(1));
    }

    #[test]
    fn given_no_leader_when_listing_should_show_the_most_advanced_replica_leaderless() {
        let round = ClusterSample {
            unix_ms: 1_000,
            nodes: vec![
                node(1, vec![replica(0, false, 3, 90)]),
                node(3, vec![replica(0, false, 3, 95), replica(1, false, 2, 5)]),
            ],
        };
        let ps = partitions(&round);
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].leader, None);
        assert_eq!(ps[0].committed_end_offset, 95);
        assert!(ps[0].followers.is_empty());
    }
}
