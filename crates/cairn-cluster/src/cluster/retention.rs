//! Retention of replicated partitions, decided by the leader and carried
//! out by Raft; and the clean-up of group directories nothing owns.
//!
//! # Retention
//! Every `retention_check` each replica plans retention on its own log
//! ([`cairn_storage::PartitionLog::plan_retention`]: by age and bytes per
//! the stream's config, whole sealed segments only, deleting nothing).
//! - The **leader** turns its plan into a decision: when the plan cuts
//!   past the last cut and the entries up to the cut are applied, it
//!   proposes a `Cut(last entry to remove)` entry through Raft.
//! - **Every replica** (the leader too), once it has applied a cut that
//!   openraft has not purged yet, has openraft build a snapshot (metadata
//!   only: cheap) and purge its log up to the cut. openraft purges on a
//!   leader only what no replication stream is reading, and a follower
//!   that needs purged entries is sent a snapshot (see `catchup`).
//!
//! So every replica purges the same prefix, only whole segments are
//! deleted (retained data is never rewritten), and a purge never passes
//! a follower behind Raft's back. The log store purges the data log no
//! further than the cut (`LogStoreOptions::data_follows_cut`).
//!
//! # The replay window
//! openraft sends a follower a snapshot only when entries it needs are
//! purged from openraft's log. So that a replica far behind — a new one
//! added by a join or a replica move, or a node back from a long outage —
//! is caught up by the snapshot path (bulk, paced by `--snapshot-rate`,
//! resumable; `catchup`) rather than entry by entry, even before any
//! retention cut, every replica also has openraft purge up to the end of
//! the newest sealed segment that has at least `--snapshot-behind` bytes
//! of log after it. The data log stays: openraft's purge moves it only to
//! the cut. A follower within the window gets entries as before; openraft
//! on a leader defers a purge a replication stream is still reading.
//!
//! # Orphans
//! A group directory (`groups/{id:016x}`, or its `.snap` staging beside
//! it) that no partition placed on this node owns — a stream deleted or a
//! replica moved away while this node was down — is removed once it has
//! been seen unowned for the grace period, on start and after every
//! metadata change (the reconcile loop). The grace period covers metadata
//! that is still catching up after a restart.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

pub use cairn_telemetry::retention::RetentionFigures;

use super::*;
use crate::raft::types::PartitionPayload;

/// Retention and orphan figures of one node (totals since it started).
#[derive(Debug, Default)]
pub(super) struct RetentionCounters {
    /// Cuts this node proposed as a partition leader.
    pub cuts_proposed: AtomicU64,
    /// Segments and bytes those cuts covered (the leader's own log).
    pub cut_segments: AtomicU64,
    pub cut_bytes: AtomicU64,
    /// Purges this node asked openraft for (one per replica and cut).
    pub purges: AtomicU64,
    pub failures: AtomicU64,
    pub orphans_removed: AtomicU64,
    /// Unowned directories first seen, waiting out the grace period.
    pub orphans_pending: parking_lot::Mutex<HashMap<PathBuf, Instant>>,
}

impl Cluster {
    /// Runs retention once on every partition replica of this node (see
    /// the module docs).
    pub async fn enforce_retention(&self, now_us: i64) {
        for g in self.groups() {
            if let Err(e) = self.inner.retain_group(&g, now_us).await {
                self.inner
                    .retention
                    .failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(group = %g.name(), error = %e, "retention failed");
            }
        }
    }

    /// Retention, catch-up and orphan figures (also in the replication
    /// report).
    pub fn retention_figures(&self) -> RetentionFigures {
        self.inner.retention_figures()
    }
}

impl Inner {
    pub(super) fn retention_figures(&self) -> RetentionFigures {
        let r = &self.retention;
        let c = &self.catchups;
        RetentionFigures {
            cuts_proposed: r.cuts_proposed.load(Ordering::Relaxed),
            cut_segments: r.cut_segments.load(Ordering::Relaxed),
            cut_bytes: r.cut_bytes.load(Ordering::Relaxed),
            purges: r.purges.load(Ordering::Relaxed),
            failures: r.failures.load(Ordering::Relaxed),
            catchups_started: c.started.load(Ordering::Relaxed),
            catchups_completed: c.completed.load(Ordering::Relaxed),
            catchups_failed: c.failed.load(Ordering::Relaxed),
            catchups_in_progress: c.in_progress(),
            catchup_bytes: c.bytes_fetched.load(Ordering::Relaxed),
            orphans_removed: r.orphans_removed.load(Ordering::Relaxed),
            orphans_pending: r.orphans_pending.lock().len() as u64,
        }
    }

    async fn retain_group(&self, g: &PartitionGroup, now_us: i64) -> Result<(), ClusterError> {
        // Every replica plans: that also rolls an active segment past its
        // age, which the next plan can then cut.
        let plan = g
            .log
            .plan_retention(now_us, g.state.cut().map(|c| c.index))
            .await
            .map_err(storage_err)?;
        let (leads, last_applied) = {
            let m = g.raft.metrics();
            let m = m.borrow();
            (
                m.state == ServerState::Leader && m.current_leader == Some(self.me()),
                m.last_applied,
            )
        };
        if leads && let Some(cut) = plan.cut {
            let cut = raft_log_id(cut);
            let newer = g.state.cut().is_none_or(|c| c.index < cut.index);
            let applied = last_applied.is_some_and(|a| a.index >= cut.index);
            if newer && applied {
                g.raft
                    .client_write(PartitionPayload::Cut(cut))
                    .await
                    .map_err(|e| ClusterError::Indeterminate(format!("propose cut: {e}")))?;
                let r = &self.retention;
                r.cuts_proposed.fetch_add(1, Ordering::Relaxed);
                r.cut_segments
                    .fetch_add(plan.segments_deleted as u64, Ordering::Relaxed);
                r.cut_bytes.fetch_add(plan.bytes_deleted, Ordering::Relaxed);
                tracing::info!(
                    group = %g.name(),
                    cut = %cut,
                    segments = plan.segments_deleted,
                    bytes = plan.bytes_deleted,
                    "retention: cut committed"
                );
            }
        }
        self.purge_replica(g).await
    }

    /// Has openraft snapshot and purge its log up to the applied cut, or
    /// further, up to the replay window (see the module docs); and keeps
    /// the data log purged to the cut.
    async fn purge_replica(&self, g: &PartitionGroup) -> Result<(), ClusterError> {
        let cut = g.state.cut();
        let (purged, snapshot, applied) = {
            let m = g.raft.metrics();
            let m = m.borrow();
            (m.purged, m.snapshot, m.last_applied)
        };
        let behind = self.config.snapshot_behind_bytes;
        let window = (behind > 0)
            .then(|| g.log.index_before_tail(behind))
            .flatten()
            .zip(applied)
            .map(|(i, a)| i.min(a.index));
        let target = cut.map(|c| c.index).max(window);
        if let Some(target) = target
            && purged.is_none_or(|p| p.index < target)
        {
            let fatal = |e: openraft::error::Fatal<NodeId>| ClusterError::Storage(e.to_string());
            if snapshot.is_none_or(|s| s.index < target) {
                g.raft.trigger().snapshot().await.map_err(fatal)?;
                // Metadata only: it is built at once. If not, the next run
                // purges.
                let _ = g
                    .raft
                    .wait(Some(Duration::from_secs(2)))
                    .metrics(
                        |m| m.snapshot.is_some_and(|s| s.index >= target),
                        "snapshot covers the purge point",
                    )
                    .await;
            }
            // openraft's purge moves the data log too, but only to the cut
            // (`LogStoreOptions::data_follows_cut`).
            g.raft.trigger().purge_log(target).await.map_err(fatal)?;
            self.retention.purges.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(group = %g.name(), target, cut = ?cut, "retention: purge requested");
        }
        // openraft purged past this cut before the cut was applied (the
        // replay window, or a snapshot installed beyond it): the log store
        // purged the data only to the cut it knew then, and openraft will
        // not purge here again. Move the data log to the cut directly, or
        // this replica's start stays behind its peers' for good.
        if let Some(cut) = cut
            && purged.is_some_and(|p| p.index >= cut.index)
            && g.log.purged().is_none_or(|p| p.index < cut.index)
        {
            g.log
                .purge(crate::raft::log_store::entry_id(&cut))
                .await
                .map_err(storage_err)?;
            self.retention.purges.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Removes group directories no partition placed here owns, once they
    /// have been unowned for the grace period (see the module docs).
    pub(super) async fn clean_orphans(&self, meta: &ClusterMeta) {
        let me = self.me();
        let owned: std::collections::HashSet<String> = meta
            .groups_of(me)
            .into_iter()
            .map(|(_, _, p)| format!("{:016x}", p.group))
            .chain(self.replicas.ids().iter().map(|g| format!("{g:016x}")))
            .collect();
        let root = self.data_dir.path().join("groups");
        let Ok(entries) = std::fs::read_dir(&root) else {
            return;
        };
        let now = Instant::now();
        let grace = self.config.orphan_grace;
        let mut seen = std::collections::HashSet::new();
        let mut due = Vec::new();
        {
            let mut pending = self.retention.orphans_pending.lock();
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let id = name.strip_suffix(".snap").unwrap_or(&name);
                if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    continue;
                }
                if owned.contains(id) || self.catchups.busy_with(id) {
                    continue;
                }
                let path = entry.path();
                seen.insert(path.clone());
                let first = *pending.entry(path.clone()).or_insert_with(|| {
                    tracing::info!(dir = %path.display(), grace_s = grace.as_secs(), "group directory owned by no partition on this node; removing it after the grace period");
                    now
                });
                if now.duration_since(first) >= grace {
                    due.push(path);
                }
            }
            // Owned again (or gone): forget them.
            pending.retain(|p, _| seen.contains(p));
        }
        for path in due {
            let removed = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    std::fs::remove_dir_all(&path)
                        .and_then(|()| path.parent().map_or(Ok(()), fsync_parent))
                })
                .await
            };
            match removed {
                Ok(Ok(())) => {
                    self.retention.orphans_pending.lock().remove(&path);
                    self.retention
                        .orphans_removed
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(dir = %path.display(), "removed orphaned group directory");
                }
                Ok(Err(e)) => {
                    tracing::warn!(dir = %path.display(), error = %e, "removing orphaned group directory")
                }
                Err(e) => {
                    tracing::warn!(dir = %path.display(), error = %e, "removing orphaned group directory")
                }
            }
        }
    }
}

fn fsync_parent(dir: &std::path::Path) -> std::io::Result<()> {
    cairn_storage::fsync_dir(dir).map_err(std::io::Error::other)
}
