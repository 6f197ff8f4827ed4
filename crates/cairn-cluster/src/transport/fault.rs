//! A composable fault filter: rules that delay, drop or block frames.
//!
//! Every traffic frame (request, response, error, one-way) passes through the
//! filter of the node that sends it (as [`Direction::Outbound`]) and of the node
//! that receives it (as [`Direction::Inbound`]). Handshake frames do not: a
//! partition is modelled as frames vanishing on an open connection, which is
//! what a real partition looks like until TCP gives up.
//!
//! Rules compose: all rules that match a frame apply. Any matching `Block`, or
//! any matching `Drop` whose coin comes up, drops the frame; the delays of all
//! matching `Delay` rules add up. A dropped request is never answered, so the
//! caller sees [`TransportError::Timeout`](super::TransportError::Timeout) at
//! its deadline, exactly as on a lossy network.
//!
//! Randomness (drop coins, delay jitter) comes from one RNG seeded at
//! construction, so a test that sends frames in a fixed order gets the same
//! drops every run. With concurrent senders the *number* of coins tossed is
//! still fixed, but which frame gets which coin depends on scheduling.
//!
//! Rules carry an id (for removal) and an optional time to live, so that an
//! admin API can inject a fault that heals itself even if nobody clears it.
//!
//! ```
//! use std::time::Duration;
//! use cairn_cluster::transport::{FaultFilter, FaultRule};
//!
//! let f = FaultFilter::new(7);
//! // Cut this node off from nodes 2 and 3, both directions, for 5 s.
//! let cut = f.add(FaultRule::partition([2, 3]).with_ttl(Duration::from_secs(5)));
//! // Lose 10 % of what we send in group 4, and delay it by 20 ms ± 5 ms.
//! f.add(FaultRule::drop(0.1).outbound_only().in_group(4));
//! f.add(FaultRule::delay(Duration::from_millis(20), Duration::from_millis(5)).in_group(4));
//! f.remove(cut);
//! ```

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::NodeId;
use super::metrics::PeerMetrics;

/// Identifies a rule within one [`FaultFilter`]; never reused by that filter.
pub type RuleId = u64;

/// The direction of one frame, seen from the node whose filter evaluates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Leaving this node.
    Outbound,
    /// Arriving at this node.
    Inbound,
}

/// Which directions a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directions {
    Both,
    Outbound,
    Inbound,
}

impl Directions {
    fn contains(self, d: Direction) -> bool {
        matches!(
            (self, d),
            (Directions::Both, _)
                | (Directions::Outbound, Direction::Outbound)
                | (Directions::Inbound, Direction::Inbound)
        )
    }
}

/// What a rule does to a matching frame.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultAction {
    /// Hold the frame for `fixed` plus a uniform random `0..=jitter`.
    /// Each frame is delayed on its own, so with jitter frames can overtake
    /// each other: the in-order guarantee does not hold under a delay rule.
    Delay { fixed: Duration, jitter: Duration },
    /// Drop the frame with this probability (clamped to 0..=1).
    Drop { probability: f64 },
    /// Drop every matching frame (a partition).
    Block,
}

/// One fault: an action and the frames it applies to.
///
/// Build with [`FaultRule::partition`], [`FaultRule::isolate`],
/// [`FaultRule::drop`] or [`FaultRule::delay`], then narrow with the
/// `outbound_only`/`inbound_only`/`to_peers`/`in_group`/`of_kind` methods.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    pub action: FaultAction,
    pub directions: Directions,
    /// Peers the rule applies to; `None` = every peer.
    pub peers: Option<BTreeSet<NodeId>>,
    /// Group the rule applies to; `None` = every group.
    pub group: Option<u64>,
    /// Frame kind the rule applies to; `None` = every kind.
    pub kind: Option<u16>,
    /// The rule removes itself this long after it was added.
    pub ttl: Option<Duration>,
}

impl FaultRule {
    fn new(action: FaultAction) -> Self {
        Self {
            action,
            directions: Directions::Both,
            peers: None,
            group: None,
            kind: None,
            ttl: None,
        }
    }

    /// Block all traffic to and from these peers.
    pub fn partition(peers: impl IntoIterator<Item = NodeId>) -> Self {
        Self::new(FaultAction::Block).to_peers(peers)
    }

    /// Block all traffic to and from every peer.
    pub fn isolate() -> Self {
        Self::new(FaultAction::Block)
    }

    /// Drop frames with probability `probability` (all peers, both directions).
    pub fn drop(probability: f64) -> Self {
        Self::new(FaultAction::Drop { probability })
    }

    /// Delay frames by `fixed` + uniform `0..=jitter` (all peers, both directions).
    pub fn delay(fixed: Duration, jitter: Duration) -> Self {
        Self::new(FaultAction::Delay { fixed, jitter })
    }

    /// Apply only to frames this node sends.
    pub fn outbound_only(mut self) -> Self {
        self.directions = Directions::Outbound;
        self
    }

    /// Apply only to frames this node receives.
    pub fn inbound_only(mut self) -> Self {
        self.directions = Directions::Inbound;
        self
    }

    /// Apply only to frames to or from these peers.
    pub fn to_peers(mut self, peers: impl IntoIterator<Item = NodeId>) -> Self {
        self.peers = Some(peers.into_iter().collect());
        self
    }

    /// Apply only to frames of this Raft group.
    pub fn in_group(mut self, group: u64) -> Self {
        self.group = Some(group);
        self
    }

    /// Apply only to frames of this kind.
    pub fn of_kind(mut self, kind: u16) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Remove the rule automatically this long after it is added.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    fn matches(&self, d: Direction, peer: NodeId, group: u64, kind: u16) -> bool {
        self.directions.contains(d)
            && self.peers.as_ref().is_none_or(|p| p.contains(&peer))
            && self.group.is_none_or(|g| g == group)
            && self.kind.is_none_or(|k| k == kind)
    }
}

/// What the filter decided for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Delay(Duration),
    Drop,
}

/// A rule as installed: with its id and when it expires.
#[derive(Debug, Clone, PartialEq)]
pub struct InstalledRule {
    pub id: RuleId,
    pub rule: FaultRule,
    pub expires_at: Option<Instant>,
}

/// The set of fault rules of one transport. Cheap when empty: evaluation then
/// is one atomic load and takes no lock.
#[derive(Debug)]
pub struct FaultFilter {
    rules: RwLock<Vec<InstalledRule>>,
    /// Number of installed rules, read without the lock on the hot path.
    installed: AtomicUsize,
    next_id: AtomicU64,
    rng: Mutex<StdRng>,
}

impl FaultFilter {
    /// An empty filter whose random choices come from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rules: RwLock::new(Vec::new()),
            installed: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }

    /// Installs a rule; it applies to frames evaluated from now on.
    pub fn add(&self, rule: FaultRule) -> RuleId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let expires_at = rule.ttl.map(|ttl| Instant::now() + ttl);
        let mut rules = self.rules.write();
        purge_expired(&mut rules, Instant::now());
        rules.push(InstalledRule {
            id,
            rule,
            expires_at,
        });
        self.installed.store(rules.len(), Ordering::Release);
        id
    }

    /// Removes one rule; false if it was not installed (or already expired).
    pub fn remove(&self, id: RuleId) -> bool {
        let mut rules = self.rules.write();
        let before = rules.len();
        rules.retain(|r| r.id != id);
        purge_expired(&mut rules, Instant::now());
        self.installed.store(rules.len(), Ordering::Release);
        rules.len() < before
    }

    /// Removes every rule: the network heals at once.
    pub fn clear(&self) {
        let mut rules = self.rules.write();
        rules.clear();
        self.installed.store(0, Ordering::Release);
    }

    /// The rules in force now (expired ones are dropped first).
    pub fn rules(&self) -> Vec<InstalledRule> {
        let mut rules = self.rules.write();
        purge_expired(&mut rules, Instant::now());
        self.installed.store(rules.len(), Ordering::Release);
        rules.clone()
    }

    /// [`FaultFilter::evaluate`] counted in `metrics`, as both transports
    /// use it: `None` if the frame is lost, else the delay to hold it for
    /// (zero when nothing applies).
    pub(crate) fn judge(
        &self,
        direction: Direction,
        peer: NodeId,
        group: u64,
        kind: u16,
        metrics: &PeerMetrics,
    ) -> Option<Duration> {
        match self.evaluate(direction, peer, group, kind) {
            Verdict::Pass => Some(Duration::ZERO),
            Verdict::Drop => {
                PeerMetrics::inc(&metrics.fault_dropped);
                None
            }
            Verdict::Delay(d) => {
                PeerMetrics::inc(&metrics.fault_delayed);
                Some(d)
            }
        }
    }

    /// The outbound fate of a call's request: waits out an injected delay;
    /// a lost request, or one delayed past `deadline_at`, is known to the
    /// caller only at its deadline, so this waits for it and answers
    /// `Err(())` (a timeout).
    pub(crate) async fn delay_call(
        &self,
        peer: NodeId,
        group: u64,
        kind: u16,
        metrics: &PeerMetrics,
        deadline_at: Instant,
    ) -> Result<(), ()> {
        let Some(delay) = self.judge(Direction::Outbound, peer, group, kind, metrics) else {
            tokio::time::sleep_until(deadline_at).await;
            return Err(());
        };
        if delay.is_zero() {
            return Ok(());
        }
        let until = Instant::now() + delay;
        if until >= deadline_at {
            tokio::time::sleep_until(deadline_at).await;
            return Err(());
        }
        tokio::time::sleep_until(until).await;
        Ok(())
    }

    /// Decides the fate of one frame to/from `peer`.
    pub fn evaluate(&self, direction: Direction, peer: NodeId, group: u64, kind: u16) -> Verdict {
        if self.installed.load(Ordering::Acquire) == 0 {
            return Verdict::Pass;
        }
        let now = Instant::now();
        let rules = self.rules.read();
        let mut dropped = false;
        let mut delay = Duration::ZERO;
        // One lock for all coins of this frame keeps the number of draws per
        // frame fixed, which is what makes a seeded run reproducible.
        let mut rng = self.rng.lock();
        for r in rules.iter() {
            if r.expires_at.is_some_and(|t| t <= now)
                || !r.rule.matches(direction, peer, group, kind)
            {
                continue;
            }
            match &r.rule.action {
                FaultAction::Block => dropped = true,
                FaultAction::Drop { probability } => {
                    let p = probability.clamp(0.0, 1.0);
                    if rng.random::<f64>() < p {
                        dropped = true;
                    }
                }
                FaultAction::Delay { fixed, jitter } => {
                    let extra = if jitter.is_zero() {
                        Duration::ZERO
                    } else {
                        let nanos = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX);
                        Duration::from_nanos(rng.random_range(0..=nanos))
                    };
                    delay += *fixed + extra;
                }
            }
        }
        if dropped {
            Verdict::Drop
        } else if delay.is_zero() {
            Verdict::Pass
        } else {
            Verdict::Delay(delay)
        }
    }
}

fn purge_expired(rules: &mut Vec<InstalledRule>, now: Instant) {
    rules.retain(|r| r.expires_at.is_none_or(|t| t > now));
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{Inbound, Outbound};

    #[test]
    fn given_no_rules_when_evaluating_then_pass() {
        let f = FaultFilter::new(1);
        assert_eq!(f.evaluate(Outbound, 2, 0, 0), Verdict::Pass);
    }

    #[test]
    fn given_partition_when_evaluating_then_only_listed_peers_blocked_both_ways() {
        let f = FaultFilter::new(1);
        f.add(FaultRule::partition([2]));
        assert_eq!(f.evaluate(Outbound, 2, 0, 0), Verdict::Drop);
        assert_eq!(f.evaluate(Inbound, 2, 5, 1), Verdict::Drop);
        assert_eq!(f.evaluate(Outbound, 3, 0, 0), Verdict::Pass);
    }

    #[test]
    fn given_one_direction_rule_when_evaluating_then_other_direction_passes() {
        let f = FaultFilter::new(1);
        f.add(FaultRule::isolate().outbound_only());
        assert_eq!(f.evaluate(Outbound, 2, 0, 0), Verdict::Drop);
        assert_eq!(f.evaluate(Inbound, 2, 0, 0), Verdict::Pass);
    }

    #[test]
    fn given_group_and_kind_scope_when_evaluating_then_others_pass() {
        let f = FaultFilter::new(1);
        f.add(FaultRule::isolate().in_group(1).of_kind(3));
        assert_eq!(f.evaluate(Outbound, 2, 1, 3), Verdict::Drop);
        assert_eq!(f.evaluate(Outbound, 2, 1, 4), Verdict::Pass);
        assert_eq!(f.evaluate(Outbound, 2, 2, 3), Verdict::Pass);
    }

    #[test]
    fn given_two_delay_rules_when_evaluating_then_delays_add() {
        let f = FaultFilter::new(1);
        f.add(FaultRule::delay(Duration::from_millis(10), Duration::ZERO));
        f.add(FaultRule::delay(Duration::from_millis(5), Duration::ZERO).in_group(1));
        assert_eq!(
            f.evaluate(Outbound, 2, 1, 0),
            Verdict::Delay(Duration::from_millis(15))
        );
        assert_eq!(
            f.evaluate(Outbound, 2, 0, 0),
            Verdict::Delay(Duration::from_millis(10))
        );
    }

    #[test]
    fn given_jitter_when_evaluating_then_delay_within_bounds() {
        let f = FaultFilter::new(1);
        f.add(FaultRule::delay(
            Duration::from_millis(10),
            Duration::from_millis(5),
        ));
        for _ in 0..1000 {
            let Verdict::Delay(d) = f.evaluate(Outbound, 2, 0, 0) else {
                panic!("expected a delay");
            };
            assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(15));
        }
    }

    #[test]
    fn given_block_and_delay_when_evaluating_then_drop_wins() {
        let f = FaultFilter::new(1);
        f.add(FaultRule::delay(Duration::from_millis(10), Duration::ZERO));
        f.add(FaultRule::partition([2]));
        assert_eq!(f.evaluate(Outbound, 2, 0, 0), Verdict::Drop);
    }

    #[test]
    fn given_seed_when_dropping_then_rate_close_to_p_and_reproducible() {
        let run = |seed| {
            let f = FaultFilter::new(seed);
            f.add(FaultRule::drop(0.3));
            (0..10_000)
                .map(|_| f.evaluate(Outbound, 2, 0, 0) == Verdict::Drop)
                .collect::<Vec<_>>()
        };
        let a = run(42);
        assert_eq!(a, run(42), "same seed, same drops");
        let rate = a.iter().filter(|d| **d).count() as f64 / a.len() as f64;
        assert!((0.27..0.33).contains(&rate), "rate {rate}");
    }

    #[test]
    fn given_rule_ids_when_removing_then_only_that_rule_goes() {
        let f = FaultFilter::new(1);
        let a = f.add(FaultRule::partition([2]));
        let b = f.add(FaultRule::partition([3]));
        assert!(f.remove(a));
        assert!(!f.remove(a));
        assert_eq!(f.evaluate(Outbound, 2, 0, 0), Verdict::Pass);
        assert_eq!(f.evaluate(Outbound, 3, 0, 0), Verdict::Drop);
        assert_eq!(f.rules().len(), 1);
        assert_eq!(f.rules()[0].id, b);
        f.clear();
        assert_eq!(f.evaluate(Outbound, 3, 0, 0), Verdict::Pass);
    }

    #[tokio::test(start_paused = true)]
    async fn given_ttl_when_it_passes_then_rule_no_longer_applies() {
        let f = FaultFilter::new(1);
        f.add(FaultRule::isolate().with_ttl(Duration::from_millis(100)));
        assert_eq!(f.evaluate(Outbound, 2, 0, 0), Verdict::Drop);
        tokio::time::advance(Duration::from_millis(101)).await;
        assert_eq!(f.evaluate(Outbound, 2, 0, 0), Verdict::Pass);
        assert!(f.rules().is_empty());
    }
}
