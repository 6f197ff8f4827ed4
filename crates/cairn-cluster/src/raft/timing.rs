//! Raft timings of a cluster, and how they map onto openraft 0.9.
//!
//! All nodes of a cluster should use the same values: a node whose
//! election timeout is shorter than its peers' heartbeat gaps disrupts
//! them, and one whose RPC timeouts are shorter than the links' round
//! trips can never replicate.
//!
//! # What openraft 0.9 does with its `Config`
//!
//! Read from openraft 0.9.25 (`replication/mod.rs`, `core/raft_core.rs`,
//! `raft/mod.rs`, `engine/engine_config.rs`):
//!
//! - `heartbeat_interval` is three things at once: the period of its own
//!   heartbeats, the tick period (×1.5, which also paces election checks),
//!   and the **hard deadline of every AppendEntries RPC** (replication and
//!   heartbeats alike wrap the network call in `timeout(heartbeat_interval)`
//!   and pass it as `RPCOption::hard_ttl`). With a 75 ms heartbeat a 100 ms
//!   round trip could therefore never succeed.
//! - `election_timeout_min` is the hard deadline of a vote RPC.
//! - a follower starts an election only after `election_timeout_max`
//!   (the leader lease) plus a random `[min, max)` election timeout
//!   without hearing from a leader.
//! - `install_snapshot_timeout` is the deadline of one snapshot RPC.
//!
//! So Cairn gives openraft `heartbeat_interval = rpc_timeout_max` (the
//! ceiling of one replication RPC) and sends the configured, shorter
//! heartbeats itself (`raft::leadership`). The actual deadline of each RPC
//! is chosen per peer from its measured round trips
//! ([`RaftTimings::rpc_timeout`]), between `rpc_timeout_floor` and that
//! ceiling.

use std::time::Duration;

/// Raft timings of one node; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftTimings {
    /// How often a leader sends heartbeats to its followers.
    pub heartbeat: Duration,
    /// Election timeout range (min, max). A follower that hears nothing
    /// campaigns after `max + random[min, max)`; a leader that hears no
    /// quorum for `max` steps down.
    pub election_timeout: (Duration, Duration),
    /// The shortest deadline of a replication or vote RPC, however fast
    /// the link looks.
    pub rpc_timeout_floor: Duration,
    /// The longest deadline of a replication RPC (openraft's
    /// `heartbeat_interval`); must be below the minimum election timeout.
    pub rpc_timeout_max: Duration,
    /// Deadline of one install-snapshot RPC.
    pub install_snapshot_timeout: Duration,
}

/// How many recent round trips the RPC deadline must cover.
pub const RTT_MULTIPLIER: u32 = 3;

impl Default for RaftTimings {
    /// Sane for links up to ~300 ms round trip (a replication RPC also
    /// waits for the follower's fsync), while a loopback cluster still
    /// fails over in 1.2–2.1 s (lease 800 ms + 400–800 ms election timeout
    /// + up to one 525 ms tick).
    fn default() -> Self {
        RaftTimings {
            heartbeat: Duration::from_millis(100),
            election_timeout: (Duration::from_millis(400), Duration::from_millis(800)),
            rpc_timeout_floor: Duration::from_millis(100),
            rpc_timeout_max: Duration::from_millis(350),
            install_snapshot_timeout: Duration::from_secs(30),
        }
    }
}

impl RaftTimings {
    /// Checks the relations openraft and the step-down rule need.
    pub fn validate(&self) -> Result<(), String> {
        let (min, max) = self.election_timeout;
        if self.heartbeat.is_zero() || self.rpc_timeout_floor.is_zero() {
            return Err("raft heartbeat and RPC timeouts must be positive".into());
        }
        if min >= max {
            return Err(format!(
                "raft election timeout min ({min:?}) must be below max ({max:?})"
            ));
        }
        if self.rpc_timeout_floor > self.rpc_timeout_max {
            return Err(format!(
                "raft RPC timeout floor ({:?}) must not exceed its max ({:?})",
                self.rpc_timeout_floor, self.rpc_timeout_max
            ));
        }
        // openraft requires heartbeat_interval (our RPC ceiling) < min.
        if self.rpc_timeout_max >= min {
            return Err(format!(
                "raft RPC timeout max ({:?}) must be below the minimum election timeout ({min:?})",
                self.rpc_timeout_max
            ));
        }
        if self.heartbeat >= min {
            return Err(format!(
                "raft heartbeat ({:?}) must be below the minimum election timeout ({min:?})",
                self.heartbeat
            ));
        }
        Ok(())
    }

    /// The openraft settings these timings stand for (see the module docs).
    pub fn apply(&self, config: &mut openraft::Config) {
        config.heartbeat_interval = self.rpc_timeout_max.as_millis() as u64;
        config.election_timeout_min = self.election_timeout.0.as_millis() as u64;
        config.election_timeout_max = self.election_timeout.1.as_millis() as u64;
        config.install_snapshot_timeout = self.install_snapshot_timeout.as_millis() as u64;
    }

    /// How long a leader may go without a quorum's acknowledgement before
    /// it steps down: the maximum election timeout, which is also
    /// openraft's leader lease, so the old leader has let go before the
    /// followers (who wait lease + election timeout) elect a new one.
    pub fn step_down_after(&self) -> Duration {
        self.election_timeout.1
    }

    /// The deadline of one replication or vote RPC to a peer whose recent
    /// round trips have a p99 of `recent_p99` (`None`: nothing measured
    /// yet), never above `ceiling` (what openraft allows for this RPC):
    ///
    /// `clamp(RTT_MULTIPLIER × recent_p99, rpc_timeout_floor, ceiling)`
    ///
    /// Three round trips leave room for a follower's fsync and for queueing
    /// behind other groups' frames on the shared connection; the floor
    /// keeps a fast link from timing out on a single slow fsync; the
    /// ceiling stays below the election timeout so a replication RPC ends
    /// (and is retried) before followers would give up on the leader.
    ///
    /// Worked example with the defaults (floor 100 ms, ceiling 350 ms): on
    /// loopback the p99 is ~2 ms, 3 × 2 = 6 ms, so the deadline is the 100 ms
    /// floor. With 50 ms ± 5 ms injected on each direction of a link, the
    /// p99 becomes ~110 ms and the deadline 330 ms, where the old fixed
    /// 75 ms failed every call. With 150 ms each way (300 ms round trips)
    /// 3 × 300 = 900 ms is capped at 350 ms, still above the round trip.
    pub fn rpc_timeout(&self, recent_p99: Option<Duration>, ceiling: Duration) -> Duration {
        let wanted = recent_p99.map_or(self.rpc_timeout_floor, |rtt| {
            (rtt * RTT_MULTIPLIER).max(self.rpc_timeout_floor)
        });
        wanted.min(ceiling)
    }
}

impl std::fmt::Display for RaftTimings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "raft_heartbeat_ms={} raft_election_timeout_ms={}..{} raft_rpc_timeout_ms={}..{} \
             raft_snapshot_timeout_ms={}",
            self.heartbeat.as_millis(),
            self.election_timeout.0.as_millis(),
            self.election_timeout.1.as_millis(),
            self.rpc_timeout_floor.as_millis(),
            self.rpc_timeout_max.as_millis(),
            self.install_snapshot_timeout.as_millis(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_map_onto_openraft() {
        let t = RaftTimings::default();
        t.validate().unwrap();
        let mut c = openraft::Config::default();
        t.apply(&mut c);
        let c = c.validate().unwrap();
        assert_eq!(c.heartbeat_interval, 350);
    }

    #[test]
    fn rpc_timeout_follows_the_round_trip_between_floor_and_ceiling() {
        let t = RaftTimings::default();
        let ceiling = t.rpc_timeout_max;
        let ms = Duration::from_millis;
        assert_eq!(t.rpc_timeout(None, ceiling), ms(100));
        assert_eq!(t.rpc_timeout(Some(ms(2)), ceiling), ms(100));
        assert_eq!(t.rpc_timeout(Some(ms(110)), ceiling), ms(330));
        assert_eq!(t.rpc_timeout(Some(ms(300)), ceiling), ms(350));
        // A smaller ceiling (e.g. openraft's vote deadline) wins.
        assert_eq!(t.rpc_timeout(Some(ms(300)), ms(50)), ms(50));
    }

    #[test]
    fn inconsistent_timings_are_refused() {
        let mut t = RaftTimings::default();
        t.rpc_timeout_max = t.election_timeout.0;
        assert!(t.validate().is_err());
        let mut t = RaftTimings::default();
        t.election_timeout = (t.election_timeout.1, t.election_timeout.1);
        assert!(t.validate().is_err());
        let mut t = RaftTimings::default();
        t.rpc_timeout_floor = t.rpc_timeout_max + Duration::from_millis(1);
        assert!(t.validate().is_err());
    }
}
