//! The replicas a node runs, in one table that owns its locks: the running
//! groups (a Raft core each), the logs of replicas whose Raft could not
//! start (kept open so anti-entropy can repair them; the next start
//! attempt closes and reopens them), and the pacing of restarts of groups
//! whose core stopped on an error. Reconciling (`lifecycle`) is the only
//! writer; everything else reads through [`Replicas::get`] and
//! [`Replicas::all`], so no caller holds a lock across an `await`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cairn_storage::PartitionLog;
use parking_lot::{Mutex, RwLock};
use tokio::time::Instant;

use super::{PartitionGroup, controller_group, error};

/// Longest pause between restarts of a group that keeps failing.
pub(super) const MAX_RESTART_PAUSE: Duration = Duration::from_secs(60);
/// A group that ran this long since its last restart starts its pacing
/// over.
pub(super) const RESTART_BACKOFF_RESET: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
pub(crate) struct Replicas {
    running: RwLock<HashMap<u64, Arc<PartitionGroup>>>,
    stalled: Mutex<HashMap<u64, PartitionLog>>,
    /// Per group restarted: when, and the pause before it may be again.
    restart_pacing: Mutex<HashMap<u64, (Instant, Duration)>>,
    /// Partition groups restarted after their Raft core stopped on an error.
    restarts: Arc<AtomicU64>,
}

impl Replicas {
    /// The running replica of `group`.
    pub(crate) fn get(&self, group: u64) -> Option<Arc<PartitionGroup>> {
        self.running.read().get(&group).cloned()
    }

    /// Every running replica.
    pub(crate) fn all(&self) -> Vec<Arc<PartitionGroup>> {
        self.running.read().values().cloned().collect()
    }

    pub(crate) fn is_running(&self, group: u64) -> bool {
        self.running.read().contains_key(&group)
    }

    /// Every group with a replica here, running or stalled.
    pub(crate) fn ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.running.read().keys().copied().collect();
        ids.extend(self.stalled.lock().keys().copied());
        ids
    }

    /// The log of this node's replica of `group` if its Raft could not
    /// start.
    pub(crate) fn stalled_log(&self, group: u64) -> Option<PartitionLog> {
        self.stalled.lock().get(&group).cloned()
    }

    pub(super) fn insert(&self, group: Arc<PartitionGroup>) {
        self.running.write().insert(group.group, group);
    }

    pub(super) fn remove(&self, group: u64) -> Option<Arc<PartitionGroup>> {
        self.running.write().remove(&group)
    }

    /// Keeps the log of a replica whose Raft did not start.
    pub(super) fn keep_stalled(&self, group: u64, log: PartitionLog) {
        self.stalled.lock().insert(group, log);
    }

    pub(super) fn take_stalled(&self, group: u64) -> Option<PartitionLog> {
        self.stalled.lock().remove(&group)
    }

    /// Groups whose Raft core stopped on an error (not a shutdown): to be
    /// restarted from disk, with their names and the error.
    pub(super) fn failed(&self) -> Vec<(u64, error::GroupName, String)> {
        self.running
            .read()
            .values()
            .filter_map(|g| {
                controller_group::stopped_on_error(&g.raft).map(|e| (g.group, g.name(), e))
            })
            .collect()
    }

    /// Whether `group` may be restarted now: at once the first time, then
    /// after a pause that doubles with each restart (1 s up to
    /// [`MAX_RESTART_PAUSE`]) while it keeps failing, so a disk that stays
    /// broken is not hammered; a group that ran for
    /// [`RESTART_BACKOFF_RESET`] starts over.
    pub(super) fn may_restart(&self, group: u64) -> bool {
        let now = Instant::now();
        let mut pacing = self.restart_pacing.lock();
        let pause = match pacing.get(&group) {
            Some(&(last, pause)) if now.duration_since(last) < RESTART_BACKOFF_RESET => {
                if now < last + pause {
                    return false;
                }
                (pause * 2).clamp(Duration::from_secs(1), MAX_RESTART_PAUSE)
            }
            _ => Duration::from_secs(1),
        };
        pacing.insert(group, (now, pause));
        true
    }

    pub(super) fn count_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// Restarts of partition groups since the node started.
    pub(crate) fn restarts(&self) -> Arc<AtomicU64> {
        self.restarts.clone()
    }
}
