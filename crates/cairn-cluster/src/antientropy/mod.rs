//! Anti-entropy: proving that a partition's replicas hold the same committed
//! log, and repairing the ones that do not (DESIGN.md §5).
//!
//! Raft keeps committed logs identical only while disks tell the truth. A
//! flipped bit, a truncated or deleted segment file, or a bug leaves a
//! replica that silently differs; this module finds and repairs it.
//!
//! # Digests
//! Each replica summarizes a range of log indexes as Merkle leaves of
//! `cairn_storage::LEAF_SPAN` indexes each, derived from the per-batch CRCs
//! the log already stores (see `cairn_storage::PartitionLog::leaf_digests`:
//! segments read once are cached until their file changes; a deep scan
//! re-reads and re-verifies everything). [`tree::MerkleTree`] hashes the
//! leaves up to a root with a fan-out of 16.
//!
//! # A scan (run by the partition's leader)
//! 1. The range: from the highest first index of the replicas to the lowest
//!    of the leader's applied index and each follower's matched index, so
//!    only committed entries every replica should hold are compared.
//! 2. The leader builds its tree; for each follower it compares roots and
//!    descends only into differing subtrees ([`tree::descend`]).
//! 3. For every differing leaf, each replica's digest is gathered and the
//!    right one decided ([`right_version`]): never one a replica found
//!    damaged itself (corrupt or missing batches); of the others, the only
//!    one, the one a majority holds, or else the leader's.
//! 4. Each replica in the minority gets the leaf's batches from one in the
//!    majority, byte for byte, and rewrites its segment files
//!    (`PartitionLog::repair`); its leaves are then compared again. A
//!    replica that cannot be repaired is **quarantined**: it stops serving
//!    reads (they go to a healthy replica) until a later scan repairs it.
//!
//! Scans run every `interval` (jittered, so leaders do not scan in step),
//! shortly after a replica becomes leader, on request
//! (`POST /v1/anti-entropy/scan`) and when a read hits a checksum error.
//! Every node's anti-entropy reading shares one byte-rate limit
//! ([`throttle::RateLimiter`]).
//!
//! # Files
//! `tree` and `throttle` know nothing of the node. `wire` holds a scan's
//! messages; `replica` answers the steps of a scan for this node's
//! replicas (and asks them of others, or of itself in-process); `scan` is
//! the leader's scan; `scheduler` decides when scans run and serves the
//! transport kind; `state` is what the node keeps between scans
//! ([`AntiEntropy`]: reports, counters, the shared rate limit). They see
//! the node only through [`host::Host`] (its replicas, placement, a call
//! to a peer, shutdown), which the cluster runtime implements: this
//! module sits below `cluster`, which starts it and forwards to it.

pub(crate) mod host;
pub(crate) mod replica;
mod scan;
pub(crate) mod scheduler;
mod state;
pub mod throttle;
pub mod tree;
pub(crate) mod wire;

pub(crate) use state::AntiEntropy;

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_storage::Digest;

use crate::transport::NodeId;

/// Settings of a node's anti-entropy.
#[derive(Debug, Clone)]
pub struct AntiEntropyConfig {
    /// How often each partition leader scans; zero turns periodic scans
    /// off (requested and read-triggered scans still run).
    pub interval: Duration,
    /// How often a periodic scan is deep (re-reads every byte) instead of
    /// reusing cached digests of unchanged segments.
    pub deep_interval: Duration,
    /// Bytes per second this node may read for anti-entropy; 0: unlimited.
    pub rate_bytes_per_sec: u64,
    /// How long a new leader waits before its first scan, so followers can
    /// catch up with the entries it just committed.
    pub leader_change_delay: Duration,
}

impl Default for AntiEntropyConfig {
    fn default() -> Self {
        AntiEntropyConfig {
            interval: Duration::from_secs(60),
            deep_interval: Duration::from_secs(24 * 3600),
            rate_bytes_per_sec: 16_000_000,
            leader_change_delay: Duration::from_secs(2),
        }
    }
}

// The reports are the HTTP API's own types: one definition for the
// cluster that makes them, the server that serves them and the client
// that reads them.
pub use cairn_types::api::{DivergentRange, ScanOutcome, ScanReport, ScanTrigger, SkippedReplica};

/// One replica's version of one Merkle leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub node: NodeId,
    pub digest: Digest,
    /// The replica itself found batches of this leaf corrupt or missing.
    pub self_damaged: bool,
}

/// The replicas holding the right version of a leaf on which replicas
/// differ. A version held by a replica that found batches of the leaf
/// corrupt or missing itself is known to be wrong, whoever else holds it.
/// Of the other versions: the only one, or the one more than half of all
/// replicas hold, or else the leader's (Raft's committed log is the
/// leader's; intact versions that differ come from a bug, not a disk).
/// `Err(distinct versions)` when none of that decides (the leader's own
/// copy is damaged and the others disagree).
///
/// ```text
/// (leader first; * = the replica found damage there itself)
/// A A B      → [n1, n2]           (majority)
/// A B        → [n1]               (the leader's)
/// A* B       → [n2]
/// A B* B*    → [n1]               (two replicas lost the same batches)
/// A B C      → [n1]               (the leader's)
/// A* B C     → Err(3)
/// ```
pub fn right_version(versions: &[Version], leader: NodeId) -> Result<Vec<NodeId>, usize> {
    let mut holders: BTreeMap<Digest, Vec<&Version>> = BTreeMap::new();
    for v in versions {
        holders.entry(v.digest).or_default().push(v);
    }
    let intact: Vec<&Vec<&Version>> = holders
        .values()
        .filter(|h| h.iter().all(|v| !v.self_damaged))
        .collect();
    let right = match intact.as_slice() {
        [only] => Some(*only),
        several => several
            .iter()
            .find(|h| h.len() * 2 > versions.len())
            .or_else(|| several.iter().find(|h| h.iter().any(|v| v.node == leader)))
            .copied(),
    };
    right
        .map(|h| h.iter().map(|v| v.node).collect())
        .ok_or(holders.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(node: NodeId, digest: u8, self_damaged: bool) -> Version {
        Version {
            node,
            digest: [digest; 32],
            self_damaged,
        }
    }

    #[test]
    fn the_majority_version_wins() {
        let versions = [v(1, 1, false), v(2, 1, false), v(3, 2, false)];
        assert_eq!(right_version(&versions, 1), Ok(vec![1, 2]));
        assert_eq!(right_version(&versions, 3), Ok(vec![1, 2]));
    }

    #[test]
    fn a_version_a_replica_found_damaged_never_wins() {
        assert_eq!(
            right_version(&[v(1, 1, true), v(2, 2, false)], 1),
            Ok(vec![2])
        );
        // Two replicas that lost the same batches agree, and are still wrong.
        let versions = [v(1, 2, false), v(2, 1, true), v(3, 1, true)];
        assert_eq!(right_version(&versions, 2), Ok(vec![1]));
    }

    #[test]
    fn without_a_majority_of_intact_replicas_the_leaders_version_wins() {
        assert_eq!(
            right_version(&[v(1, 1, false), v(2, 2, false)], 1),
            Ok(vec![1])
        );
        let versions = [v(1, 1, false), v(2, 2, false), v(3, 3, false)];
        assert_eq!(right_version(&versions, 2), Ok(vec![2]));
    }

    #[test]
    fn a_damaged_leader_and_disagreeing_followers_decide_nothing() {
        let versions = [v(1, 1, true), v(2, 2, false), v(3, 3, false)];
        assert_eq!(right_version(&versions, 1), Err(3));
        assert_eq!(right_version(&[v(1, 1, true), v(2, 2, true)], 1), Err(2));
    }
}
