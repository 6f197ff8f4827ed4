//! Partition placement: which nodes hold each partition's replicas, and which
//! of them should lead (DESIGN.md §2, "Placement").
//!
//! # The ring
//!
//! A [`HashRing`] puts every node on a 64-bit circle at
//! [`HashRing::DEFAULT_VNODES`] (64) pseudo-random points, its *virtual
//! nodes*. A partition hashes `(stream, partition)` to a point and takes as
//! replicas the first `replication_factor` **distinct** nodes found walking
//! clockwise from it. Many points per node make every node own many small
//! arcs instead of one large one: a node's share of the circle is then off
//! fair by about 1/√64 ≈ 12%, and the ring stays small (64 × nodes points,
//! binary search then a short walk).
//!
//! What the ring cannot remove is sampling noise: a stream's partitions are
//! independent draws, so with 64 partitions × RF 3 on 10 nodes (19 replicas
//! per node on average) the busiest node typically holds ~1.3× its fair
//! share and the worst of 100 streams ~1.6× (measured; 256 virtual nodes
//! measured no better). Bounded-load variants would cap that, at the price
//! of cascading moves on join/leave; if that trade is ever wanted it belongs
//! in the controller, which sees all streams.
//!
//! Why a ring rather than `hash mod n`: when a node joins, the only
//! partitions that change are those where one of its points now comes first
//! among the walked ones — it takes over roughly its fair share
//! (`replication_factor × partitions / nodes` replica slots) and nothing else
//! moves. When a node leaves, only the partitions that had it change, each
//! replacing it with the next distinct node on the ring. [`rebalance`]
//! reports exactly those moves.
//!
//! # Hashes
//!
//! Placement must come out the same on every node and every build, so it
//! uses no randomly seeded hasher: FNV-1a over the stream name, mixed with
//! the partition number and node ids through the SplitMix64 finalizer (a
//! bijection on `u64` with good avalanche). Both are a few lines, so no
//! dependency is needed. Changing them would move partitions on upgrade; the
//! controller stores assignments, so an old one stays valid regardless.
//!
//! # Preferred leaders
//!
//! Every replica can lead, but leadership costs (the leader takes the
//! writes), so per stream the preferred leaders are spread as evenly as the
//! replica sets allow. First a greedy pass: each partition in order picks,
//! among its replicas, the one leading the fewest partitions so far (ties go
//! to the replica first in ring order, which differs from partition to
//! partition). Greedy can still end unbalanced when late partitions only
//! offer busy nodes, so a second pass repeatedly looks for a chain
//! `u → p₁ → v₁ → p₂ → … → w`, where `u` leads `p₁`, `v₁` is a replica of
//! `p₁` and leads `p₂`, …, and `w` leads at least two fewer partitions than
//! `u`; shifting every leadership one step down the chain moves one unit of
//! load from `u` to `w` without changing anyone in between. When no chain
//! is left the leadership loads are optimal (this is the cost-reducing path
//! criterion for semi-matchings): the busiest node leads as few as possible
//! and max − min is 1 unless the replica sets themselves forbid it (a node
//! that holds few replicas cannot lead many).
//!
//! Balance is per stream; spreading leadership *across* streams is the
//! controller's job (it sees them all).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::transport::NodeId;

/// Why a placement cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlacementError {
    #[error(
        "replication factor {replication_factor} needs more than the {nodes} distinct nodes available"
    )]
    NotEnoughNodes {
        replication_factor: u32,
        nodes: usize,
    },
    #[error("replication factor must be at least 1")]
    ZeroReplicationFactor,
    #[error("a hash ring needs at least one virtual node per node")]
    ZeroVirtualNodes,
}

/// One partition's replicas, in ring order, and the one that should lead.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReplicaSet {
    pub replicas: Vec<NodeId>,
    /// Always one of `replicas`.
    pub preferred_leader: NodeId,
}

impl ReplicaSet {
    pub fn contains(&self, node: NodeId) -> bool {
        self.replicas.contains(&node)
    }
}

/// A partition whose replica set changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMove {
    pub partition: u32,
    /// The replicas before, as given.
    pub from: Vec<NodeId>,
    /// The replicas after, in ring order.
    pub to: Vec<NodeId>,
    /// Nodes that must receive a copy (in `to`, not in `from`), sorted.
    pub added: Vec<NodeId>,
    /// Nodes whose copy goes away (in `from`, not in `to`), sorted.
    pub removed: Vec<NodeId>,
}

/// The outcome of [`rebalance`]: the new assignment and what changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rebalance {
    /// One replica set per partition, index = partition.
    pub assignment: Vec<ReplicaSet>,
    /// Partitions whose replica *set* changed (order alone is not a move),
    /// ascending by partition.
    pub moves: Vec<PartitionMove>,
    /// Partitions whose preferred leader changed, ascending.
    pub leader_changes: Vec<u32>,
}

impl Rebalance {
    /// Replica copies to create: the sum of `added` over all moves.
    pub fn moved_replicas(&self) -> usize {
        self.moves.iter().map(|m| m.added.len()).sum()
    }
}

/// Consistent-hash ring of nodes with virtual nodes. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashRing {
    /// Sorted by point, then node (a tie between two nodes' points is
    /// astronomically unlikely, but must still resolve the same everywhere).
    points: Vec<(u64, NodeId)>,
    /// Distinct node ids, ascending.
    nodes: Vec<NodeId>,
    vnodes: u32,
}

impl HashRing {
    /// Virtual nodes per node unless told otherwise.
    pub const DEFAULT_VNODES: u32 = 64;

    /// A ring of `nodes` (duplicates ignored) with [`Self::DEFAULT_VNODES`].
    pub fn new(nodes: &[NodeId]) -> Self {
        Self::build(nodes, Self::DEFAULT_VNODES)
    }

    /// A ring with `vnodes` points per node.
    pub fn with_vnodes(nodes: &[NodeId], vnodes: u32) -> Result<Self, PlacementError> {
        if vnodes == 0 {
            return Err(PlacementError::ZeroVirtualNodes);
        }
        Ok(Self::build(nodes, vnodes))
    }

    fn build(nodes: &[NodeId], vnodes: u32) -> Self {
        let nodes: Vec<NodeId> = nodes
            .iter()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut points = Vec::with_capacity(nodes.len() * vnodes as usize);
        for &node in &nodes {
            let base = mix64(node ^ NODE_SALT);
            for v in 0..vnodes {
                points.push((mix64(base.wrapping_add(u64::from(v))), node));
            }
        }
        points.sort_unstable();
        Self {
            points,
            nodes,
            vnodes,
        }
    }

    /// The distinct nodes on the ring, ascending.
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    pub fn vnodes(&self) -> u32 {
        self.vnodes
    }

    /// The first `count` distinct nodes clockwise from `point` (a point
    /// equal to a node's point belongs to that node), in walk order.
    pub fn walk(&self, point: u64, count: usize) -> Result<Vec<NodeId>, PlacementError> {
        if count == 0 {
            return Err(PlacementError::ZeroReplicationFactor);
        }
        if count > self.nodes.len() {
            return Err(PlacementError::NotEnoughNodes {
                replication_factor: u32::try_from(count).unwrap_or(u32::MAX),
                nodes: self.nodes.len(),
            });
        }
        let start = self.points.partition_point(|&(p, _)| p < point);
        let mut found = Vec::with_capacity(count);
        // Terminates: all nodes appear on the ring and count <= nodes.
        for i in 0.. {
            let node = self.points[(start + i) % self.points.len()].1;
            if !found.contains(&node) {
                found.push(node);
                if found.len() == count {
                    break;
                }
            }
        }
        Ok(found)
    }

    /// The replicas (ring order) of one partition.
    pub fn replicas(
        &self,
        stream: &str,
        partition: u32,
        replication_factor: u32,
    ) -> Result<Vec<NodeId>, PlacementError> {
        self.walk(
            partition_point(stream, partition),
            replication_factor as usize,
        )
        .map_err(|e| match e {
            PlacementError::NotEnoughNodes { nodes, .. } => PlacementError::NotEnoughNodes {
                replication_factor,
                nodes,
            },
            other => other,
        })
    }

    /// Replica sets and balanced preferred leaders for all partitions of a
    /// stream. See the free function [`assign`].
    pub fn assign(
        &self,
        stream: &str,
        partitions: u32,
        replication_factor: u32,
    ) -> Result<Vec<ReplicaSet>, PlacementError> {
        let replicas = self.all_replicas(stream, partitions, replication_factor)?;
        let leaders = choose_leaders(&replicas, &vec![None; replicas.len()]);
        Ok(zip_sets(replicas, leaders))
    }

    /// Moves from `old` to this ring's placement. See the free function
    /// [`rebalance`].
    pub fn rebalance(
        &self,
        stream: &str,
        old: &[ReplicaSet],
        replication_factor: u32,
    ) -> Result<Rebalance, PlacementError> {
        let partitions = u32::try_from(old.len()).expect("partition count fits u32");
        let replicas = self.all_replicas(stream, partitions, replication_factor)?;
        // Keep the old leader wherever it still holds a replica: leadership
        // changes cost an election, so only balance forces them.
        let hints: Vec<Option<NodeId>> = old.iter().map(|s| Some(s.preferred_leader)).collect();
        let leaders = choose_leaders(&replicas, &hints);
        let assignment = zip_sets(replicas, leaders);
        let mut moves = Vec::new();
        let mut leader_changes = Vec::new();
        for (p, (before, after)) in old.iter().zip(&assignment).enumerate() {
            let p = p as u32;
            let from: BTreeSet<NodeId> = before.replicas.iter().copied().collect();
            let to: BTreeSet<NodeId> = after.replicas.iter().copied().collect();
            if from != to {
                moves.push(PartitionMove {
                    partition: p,
                    from: before.replicas.clone(),
                    to: after.replicas.clone(),
                    added: to.difference(&from).copied().collect(),
                    removed: from.difference(&to).copied().collect(),
                });
            }
            if before.preferred_leader != after.preferred_leader {
                leader_changes.push(p);
            }
        }
        Ok(Rebalance {
            assignment,
            moves,
            leader_changes,
        })
    }

    fn all_replicas(
        &self,
        stream: &str,
        partitions: u32,
        replication_factor: u32,
    ) -> Result<Vec<Vec<NodeId>>, PlacementError> {
        (0..partitions)
            .map(|p| self.replicas(stream, p, replication_factor))
            .collect()
    }
}

/// Places a stream's partitions on `nodes` (a ring with
/// [`HashRing::DEFAULT_VNODES`]): index `p` of the result is partition `p`.
/// Deterministic: the same inputs give the same answer on every node.
pub fn assign(
    stream: &str,
    partitions: u32,
    replication_factor: u32,
    nodes: &[NodeId],
) -> Result<Vec<ReplicaSet>, PlacementError> {
    HashRing::new(nodes).assign(stream, partitions, replication_factor)
}

/// What changes when a stream placed as `old` moves to the node set `nodes`
/// (a node joined, or one is being decommissioned): the new assignment,
/// the partitions whose replica sets change (on a ring, only those the
/// change touches), and which preferred leaders change (old leaders are
/// kept where they still hold a replica and balance allows).
pub fn rebalance(
    stream: &str,
    old: &[ReplicaSet],
    replication_factor: u32,
    nodes: &[NodeId],
) -> Result<Rebalance, PlacementError> {
    HashRing::new(nodes).rebalance(stream, old, replication_factor)
}

/// Where partition `partition` of `stream` sits on the ring.
pub fn partition_point(stream: &str, partition: u32) -> u64 {
    mix64(fnv1a64(stream.as_bytes()) ^ mix64(u64::from(partition) ^ PARTITION_SALT))
}

/// Keeps node points and partition points from sharing structure (node 0
/// and partition 0 would otherwise hash from the same input).
const NODE_SALT: u64 = 0x6e6f_6465_5f72_696e; // "node_rin"
const PARTITION_SALT: u64 = 0x7061_7274_6974_696f; // "partitio"

/// SplitMix64's finalizer: a bijection on u64 with full avalanche.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a, 64-bit: stable across platforms and releases (unlike std's
/// `DefaultHasher`, whose algorithm is unspecified).
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn zip_sets(replicas: Vec<Vec<NodeId>>, leaders: Vec<NodeId>) -> Vec<ReplicaSet> {
    replicas
        .into_iter()
        .zip(leaders)
        .map(|(replicas, preferred_leader)| ReplicaSet {
            replicas,
            preferred_leader,
        })
        .collect()
}

/// Re-spreads the preferred leaders of an existing assignment (e.g. one
/// edited by hand), keeping current leaders where balance allows.
pub fn balance_leaders(sets: &mut [ReplicaSet]) {
    let replicas: Vec<Vec<NodeId>> = sets.iter().map(|s| s.replicas.clone()).collect();
    let hints: Vec<Option<NodeId>> = sets.iter().map(|s| Some(s.preferred_leader)).collect();
    for (set, leader) in sets.iter_mut().zip(choose_leaders(&replicas, &hints)) {
        set.preferred_leader = leader;
    }
}

/// One leader per partition, among its replicas, with loads balanced; see
/// the module docs. `hints[p]` is kept if it is a replica of `p` and no
/// cheaper balance exists through it. Every replica list must be non-empty.
fn choose_leaders(replicas: &[Vec<NodeId>], hints: &[Option<NodeId>]) -> Vec<NodeId> {
    let mut load: BTreeMap<NodeId, usize> = replicas.iter().flatten().map(|&n| (n, 0)).collect();
    let mut leader: Vec<Option<NodeId>> = vec![None; replicas.len()];
    for (p, hint) in hints.iter().enumerate() {
        if let Some(h) = hint.filter(|h| replicas[p].contains(h)) {
            leader[p] = Some(h);
            *load.get_mut(&h).expect("replica has a load entry") += 1;
        }
    }
    for (p, reps) in replicas.iter().enumerate() {
        if leader[p].is_none() {
            // min_by_key keeps the first minimum: ties go to ring order.
            let pick = *reps.iter().min_by_key(|n| load[n]).expect("non-empty");
            leader[p] = Some(pick);
            *load.get_mut(&pick).expect("replica has a load entry") += 1;
        }
    }
    let mut leader: Vec<NodeId> = leader.into_iter().map(|l| l.expect("set")).collect();
    // Each shift lowers the sum of squared loads (u loses 1, w gains 1,
    // with load(w) <= load(u) - 2), so this loop ends.
    while let Some(path) = find_shift(replicas, &leader, &load) {
        let (first, last) = (leader[path[0].0], path[path.len() - 1].1);
        for &(p, to) in &path {
            leader[p] = to;
        }
        *load.get_mut(&first).expect("known") -= 1;
        *load.get_mut(&last).expect("known") += 1;
    }
    leader
}

/// A chain of leadership shifts, as `(partition, new leader)` steps, that
/// moves one unit of load from a node to one leading at least two fewer.
/// Sources are tried busiest first, then by id, so the result is
/// deterministic.
fn find_shift(
    replicas: &[Vec<NodeId>],
    leader: &[NodeId],
    load: &BTreeMap<NodeId, usize>,
) -> Option<Vec<(usize, NodeId)>> {
    let mut led: BTreeMap<NodeId, Vec<usize>> = BTreeMap::new();
    for (p, &l) in leader.iter().enumerate() {
        led.entry(l).or_default().push(p);
    }
    let mut sources: Vec<NodeId> = load.keys().copied().collect();
    sources.sort_by_key(|n| (std::cmp::Reverse(load[n]), *n));
    let min_load = load.values().copied().min().unwrap_or(0);
    for u in sources {
        if load[&u] < min_load + 2 {
            break; // nobody can take load from u or from anyone after it
        }
        // BFS over nodes; `via[v] = (partition, previous node)`.
        let mut via: BTreeMap<NodeId, (usize, NodeId)> = BTreeMap::new();
        let mut queue = VecDeque::from([u]);
        while let Some(x) = queue.pop_front() {
            for &p in led.get(&x).map(Vec::as_slice).unwrap_or(&[]) {
                for &y in &replicas[p] {
                    if y == u || via.contains_key(&y) {
                        continue;
                    }
                    via.insert(y, (p, x));
                    if load[&y] + 2 <= load[&u] {
                        let mut path = Vec::new();
                        let mut at = y;
                        while at != u {
                            let (p, prev) = via[&at];
                            path.push((p, at));
                            at = prev;
                        }
                        path.reverse();
                        return Some(path);
                    }
                    queue.push_back(y);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nodes(n: u64) -> Vec<NodeId> {
        (1..=n).collect()
    }

    fn replica_load(sets: &[ReplicaSet]) -> BTreeMap<NodeId, usize> {
        let mut load = BTreeMap::new();
        for s in sets {
            for &n in &s.replicas {
                *load.entry(n).or_default() += 1;
            }
        }
        load
    }

    fn leader_load(sets: &[ReplicaSet], nodes: &[NodeId]) -> BTreeMap<NodeId, usize> {
        let mut load: BTreeMap<NodeId, usize> = nodes.iter().map(|&n| (n, 0)).collect();
        for s in sets {
            *load.get_mut(&s.preferred_leader).unwrap() += 1;
        }
        load
    }

    #[test]
    fn given_same_inputs_when_assigning_then_same_result_regardless_of_node_order() {
        let a = assign("logs", 32, 3, &[1, 2, 3, 4, 5]).unwrap();
        let b = assign("logs", 32, 3, &[5, 3, 1, 4, 2, 2]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn given_known_inputs_when_hashing_then_values_are_stable() {
        // Pinned so that an accidental change of the hash (which would move
        // partitions on upgrade) fails loudly.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(mix64(0), 0);
        assert_eq!(mix64(1), 0x5692_161d_100b_05e5);
    }

    #[test]
    fn given_rf_above_node_count_when_assigning_then_clear_error() {
        let err = assign("s", 4, 4, &[1, 2, 3]).unwrap_err();
        assert_eq!(
            err,
            PlacementError::NotEnoughNodes {
                replication_factor: 4,
                nodes: 3
            }
        );
        assert!(err.to_string().contains("replication factor 4"));
        assert_eq!(
            assign("s", 4, 0, &[1]).unwrap_err(),
            PlacementError::ZeroReplicationFactor
        );
        assert_eq!(
            assign("s", 4, 1, &[]).unwrap_err(),
            PlacementError::NotEnoughNodes {
                replication_factor: 1,
                nodes: 0
            }
        );
        assert_eq!(
            HashRing::with_vnodes(&[1], 0).unwrap_err(),
            PlacementError::ZeroVirtualNodes
        );
    }

    #[test]
    fn given_zero_partitions_when_assigning_then_empty() {
        assert!(assign("s", 0, 3, &[1, 2, 3]).unwrap().is_empty());
    }

    #[test]
    fn given_rf_equal_to_nodes_when_assigning_then_every_node_everywhere_and_leaders_round_robin() {
        let sets = assign("s", 64, 3, &nodes(3)).unwrap();
        for s in &sets {
            let mut r = s.replicas.clone();
            r.sort();
            assert_eq!(r, nodes(3));
        }
        let leaders = leader_load(&sets, &nodes(3));
        assert!(leaders.values().all(|&l| l == 21 || l == 22), "{leaders:?}");
    }

    #[test]
    fn given_many_keys_when_walking_the_ring_then_ownership_is_near_fair() {
        // Ring quality without the noise of a small partition count: with
        // 64 virtual nodes a node's share should be within ~±35% of fair.
        for n in 3..=10u64 {
            let ring = HashRing::new(&nodes(n));
            let mut owned: BTreeMap<NodeId, usize> = BTreeMap::new();
            let keys = 20_000u32;
            for k in 0..keys {
                let first = ring.replicas("ownership", k, 1).unwrap()[0];
                *owned.entry(first).or_default() += 1;
            }
            let fair = f64::from(keys) / n as f64;
            for (&node, &c) in &owned {
                let ratio = c as f64 / fair;
                assert!(
                    (0.65..=1.35).contains(&ratio),
                    "n={n} node {node}: {ratio:.2}"
                );
            }
        }
    }

    #[test]
    fn given_one_node_joining_three_when_rebalancing_then_only_its_share_moves_to_it() {
        let old = assign("join", 64, 3, &nodes(3)).unwrap();
        let plan = rebalance("join", &old, 3, &nodes(4)).unwrap();
        // Fair share of the newcomer: 3 × 64 / 4 = 48 slots of 192.
        assert!(
            plan.moved_replicas() <= 48 + 12,
            "{}",
            plan.moved_replicas()
        );
        for m in &plan.moves {
            assert_eq!(m.added, vec![4], "only the newcomer receives copies");
            assert_eq!(m.removed.len(), 1);
        }
        assert_eq!(plan.assignment, {
            let mut fresh = assign("join", 64, 3, &nodes(4)).unwrap();
            // Same replica sets as a fresh placement; leaders may differ
            // (the plan keeps old leaders where it can).
            for (f, p) in fresh.iter_mut().zip(&plan.assignment) {
                f.preferred_leader = p.preferred_leader;
            }
            fresh
        });
    }

    #[test]
    fn given_unchanged_nodes_when_rebalancing_then_nothing_moves() {
        let old = assign("same", 50, 2, &nodes(6)).unwrap();
        let plan = rebalance("same", &old, 2, &nodes(6)).unwrap();
        assert!(plan.moves.is_empty());
        assert!(plan.leader_changes.is_empty());
        assert_eq!(plan.assignment, old);
    }

    #[test]
    fn given_hand_edited_leaders_when_balancing_then_spread_again() {
        let mut sets = assign("edit", 30, 3, &nodes(5)).unwrap();
        for s in sets.iter_mut() {
            s.preferred_leader = s.replicas[0].min(s.replicas[1]).min(s.replicas[2]);
        }
        balance_leaders(&mut sets);
        let loads = leader_load(&sets, &nodes(5));
        let (max, min) = (loads.values().max().unwrap(), loads.values().min().unwrap());
        assert!(max - min <= 1, "{loads:?}");
        assert!(sets.iter().all(|s| s.contains(s.preferred_leader)));
    }

    #[test]
    fn given_3_to_10_nodes_and_64_partitions_when_assigning_many_streams_then_replica_load_within_tolerance()
     {
        // Consistent hashing balances only statistically: 64 partitions ×
        // RF 3 are 192 independent draws, so a node's share is binomial
        // noise on top of its ring share (more virtual nodes do not help at
        // this size; measured). Over 100 stream names per cluster size the
        // busiest node held at most ~1.65× its fair share and the idlest at
        // least ~0.45×; the bounds leave a margin. Deterministic inputs, so
        // no flakiness.
        for n in 3..=10u64 {
            let all = nodes(n);
            let fair = 192.0 / n as f64;
            let mut sum_max = 0.0;
            for s in 0..100 {
                let sets = assign(&format!("stream-{s}"), 64, 3, &all).unwrap();
                let load = replica_load(&sets);
                let max = all
                    .iter()
                    .map(|n| load.get(n).copied().unwrap_or(0))
                    .max()
                    .unwrap();
                let min = all
                    .iter()
                    .map(|n| load.get(n).copied().unwrap_or(0))
                    .min()
                    .unwrap();
                assert!(
                    max as f64 <= 1.75 * fair,
                    "n={n} s={s}: max {max}, fair {fair:.1}"
                );
                assert!(
                    min as f64 >= 0.4 * fair,
                    "n={n} s={s}: min {min}, fair {fair:.1}"
                );
                sum_max += max as f64 / fair;
            }
            assert!(
                sum_max / 100.0 <= 1.4,
                "n={n}: mean busiest share {:.2}",
                sum_max / 100.0
            );
        }
    }

    #[test]
    fn given_3_nodes_when_a_4th_joins_then_about_a_quarter_of_replica_slots_move() {
        let mut total = 0usize;
        for s in 0..100 {
            let stream = format!("stream-{s}");
            let old = assign(&stream, 64, 3, &nodes(3)).unwrap();
            let plan = rebalance(&stream, &old, 3, &nodes(4)).unwrap();
            // 192 slots; the newcomer's fair share is 48 (1/4).
            assert!(
                plan.moved_replicas() <= 48 + 16,
                "{stream}: {}",
                plan.moved_replicas()
            );
            total += plan.moved_replicas();
        }
        let mean = total as f64 / 100.0 / 192.0;
        assert!((0.2..=0.3).contains(&mean), "mean moved fraction {mean:.3}");
    }

    /// Loads of a leader assignment that no shift chain can improve: each
    /// node leads at least `min(max, held) - 2`. (1 whenever every
    /// replica set spans all nodes; 2 seen with RF 2 on sparse rings.)
    fn assert_leaders_balanced(sets: &[ReplicaSet], all: &[NodeId]) -> Result<(), TestCaseError> {
        let held = replica_load(sets);
        let leaders = leader_load(sets, all);
        let max = *leaders.values().max().unwrap();
        for &node in all {
            let held = held.get(&node).copied().unwrap_or(0);
            prop_assert!(
                leaders[&node] + 2 >= max.min(held),
                "node {} leads {} of {} held, max {}: {:?}",
                node,
                leaders[&node],
                held,
                max,
                leaders
            );
        }
        Ok(())
    }

    proptest! {
        // Fixed seed: these check statistical bounds, which must not flake;
        // the structural checks below explore freely.
        #![proptest_config(ProptestConfig {
            cases: 64,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0xCA12),
            ..ProptestConfig::default()
        })]

        #[test]
        fn assignment_is_deterministic_distinct_and_leaders_balanced(
            stream in "[a-z0-9._-]{1,24}",
            n in 3u64..=10,
            rf in 1u32..=3,
            partitions in 16u32..=128,
        ) {
            let all = nodes(n);
            let sets = assign(&stream, partitions, rf, &all).unwrap();
            prop_assert_eq!(&sets, &assign(&stream, partitions, rf, &all).unwrap());
            prop_assert_eq!(sets.len(), partitions as usize);
            for s in &sets {
                prop_assert_eq!(s.replicas.len(), rf as usize);
                let distinct: BTreeSet<_> = s.replicas.iter().collect();
                prop_assert_eq!(distinct.len(), rf as usize);
                prop_assert!(s.contains(s.preferred_leader));
            }
            assert_leaders_balanced(&sets, &all)?;
            if rf == n as u32 {
                let leaders = leader_load(&sets, &all);
                let (max, min) = (leaders.values().max().unwrap(), leaders.values().min().unwrap());
                prop_assert!(max - min <= 1, "{:?}", leaders);
            }
        }

        #[test]
        fn adding_a_node_moves_copies_onto_it_only(
            stream in "[a-z]{1,12}",
            n in 3u64..=9,
            rf in 1u32..=3,
            partitions in 16u32..=128,
        ) {
            let old = assign(&stream, partitions, rf, &nodes(n)).unwrap();
            let plan = rebalance(&stream, &old, rf, &nodes(n + 1)).unwrap();
            for m in &plan.moves {
                prop_assert_eq!(&m.added, &vec![n + 1]);
                prop_assert_eq!(m.removed.len(), 1);
            }
            // So the moves are exactly the newcomer's new load: the least
            // that gives it any share at all.
            let newcomer = replica_load(&plan.assignment).get(&(n + 1)).copied().unwrap_or(0);
            prop_assert_eq!(plan.moved_replicas(), newcomer);
            assert_leaders_balanced(&plan.assignment, &nodes(n + 1))?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn removing_a_node_moves_only_partitions_that_had_it(
            stream in "[a-z]{1,12}",
            n in 4u64..=10,
            rf in 1u32..=3,
            partitions in 16u32..=128,
            gone_pick in 0u64..100,
        ) {
            let all = nodes(n);
            let gone = all[(gone_pick % n) as usize];
            let old = assign(&stream, partitions, rf, &all).unwrap();
            let rest: Vec<NodeId> = all.iter().copied().filter(|&x| x != gone).collect();
            let plan = rebalance(&stream, &old, rf, &rest).unwrap();
            let had: Vec<u32> = (0..partitions).filter(|&p| old[p as usize].contains(gone)).collect();
            let moved: Vec<u32> = plan.moves.iter().map(|m| m.partition).collect();
            prop_assert_eq!(moved, had);
            for m in &plan.moves {
                prop_assert_eq!(&m.removed, &vec![gone]);
                prop_assert_eq!(m.added.len(), 1);
            }
            for s in &plan.assignment {
                prop_assert!(!s.contains(gone));
                prop_assert!(s.contains(s.preferred_leader));
            }
            assert_leaders_balanced(&plan.assignment, &rest)?;
        }
    }
}
