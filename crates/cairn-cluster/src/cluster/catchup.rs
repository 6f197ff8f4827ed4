//! A follower catching up by snapshot: fetching a snapshot's data before
//! openraft installs it.
//!
//! A partition snapshot is metadata (`raft::state_machine`); its data is
//! the leader's log from its start (after the retention cut, if any) up to
//! the snapshot's last entry. When a leader sends a snapshot (the follower
//! lacks entries the leader's openraft purged: retention cut them, or the
//! follower is further behind than `--snapshot-behind`, see `retention`),
//! the follower's dispatcher does not hand it to openraft at once: unless
//! its log already holds that range, it starts a **catch-up task** and
//! answers "catching up" (the leader's openraft backs off and sends the
//! snapshot again). The task:
//!
//! - fetches only what the follower lacks when it can: if the leader's
//!   log holds the follower's last entry with the same term, Raft's Log
//!   Matching property says everything up to it is identical, and the
//!   staged log **continues** the follower's log (marked in the staging
//!   directory, installed by appending); otherwise (an empty replica, a
//!   diverging tail, a log that ends before the leader's start) the staged
//!   log **replaces** it;
//! - stages the range in `groups/{id:016x}.snap`, a log of its own that
//!   starts at the first index it needs **and the offset** the leader
//!   gives it;
//! - fetches batches from the leader in chunks (anti-entropy's `Fetch`
//!   request), paced by a node-wide rate limiter, and appends each with
//!   its Raft id; the staged copy must come out byte for byte as fetched
//!   (every batch's CRC, index, term and offsets are thereby checked
//!   end to end), and the last batch must be the snapshot's last entry;
//! - is **resumable**: the staged log is durable, so a new task (after a
//!   failure, a leader change, or a crash of either side) continues from
//!   the staged log's end; staged data that no longer fits (it starts
//!   after the new cut, or the source purged what it needs next) is
//!   dropped and fetched again.
//!
//! Once the staged log is complete and closed, the next snapshot request
//! goes through to openraft, whose install moves the staged segments into
//! the replica's log. A replica with a task running reports itself as
//! **catching up** (cluster view, telemetry), not as lagging.

use std::sync::atomic::{AtomicU64, Ordering};

use cairn_storage::{EntryId, PartitionLog};
use openraft::LogId;
use openraft::raft::InstallSnapshotRequest;

use super::*;
use crate::antientropy::replica::ask;
use crate::antientropy::throttle::RateLimiter;
use crate::antientropy::wire::{AeRequest, AeResponse};
use crate::raft::state_machine::{
    SnapshotSummary, holds_range, mark_staged_append, staged_append_after, staging_dir,
};

/// Bytes asked for per fetch.
const CHUNK_BYTES: u64 = 1 << 20;

/// Where a catch-up stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Progress {
    /// The next index to fetch.
    Fetching(u64),
    Ready,
    Failed(String),
}

#[derive(Debug)]
struct Task {
    /// The first index of the snapshot's data, and its last entry.
    target: (u64, LogId<NodeId>),
    progress: Arc<parking_lot::Mutex<Progress>>,
    /// Bytes in the staged log (resumed ones included), for progress.
    staged_bytes: Arc<AtomicU64>,
}

/// Catch-ups of this node's replicas, and their figures.
#[derive(Debug)]
pub(super) struct CatchUps {
    tasks: parking_lot::Mutex<HashMap<u64, Task>>,
    limiter: Arc<RateLimiter>,
    pub started: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub bytes_fetched: Arc<AtomicU64>,
}

/// A catch-up in progress, for status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchingUp {
    /// The first Raft index the snapshot needs (after the cut), the next
    /// one to fetch, and the last one.
    pub first_index: u64,
    pub next_index: u64,
    pub last_index: u64,
    /// Bytes staged so far (what an earlier, interrupted task staged too).
    pub staged_bytes: u64,
}

impl CatchUps {
    pub fn new(rate_bytes_per_sec: u64) -> Self {
        CatchUps {
            tasks: Default::default(),
            limiter: Arc::new(RateLimiter::new(rate_bytes_per_sec)),
            started: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            bytes_fetched: Arc::default(),
        }
    }

    /// Whether a task works on the group named `id` (16 hex digits).
    pub fn busy_with(&self, id: &str) -> bool {
        u64::from_str_radix(id, 16).is_ok_and(|g| {
            self.tasks
                .lock()
                .get(&g)
                .is_some_and(|t| matches!(*t.progress.lock(), Progress::Fetching(_)))
        })
    }

    pub fn catching_up(&self, group: u64) -> Option<CatchingUp> {
        let tasks = self.tasks.lock();
        let t = tasks.get(&group)?;
        match *t.progress.lock() {
            Progress::Fetching(next) => Some(CatchingUp {
                first_index: t.target.0,
                next_index: next,
                last_index: t.target.1.index,
                staged_bytes: t.staged_bytes.load(Ordering::Relaxed),
            }),
            _ => None,
        }
    }

    pub fn in_progress(&self) -> u64 {
        self.tasks
            .lock()
            .values()
            .filter(|t| matches!(*t.progress.lock(), Progress::Fetching(_)))
            .count() as u64
    }
}

impl Inner {
    /// Decides whether a snapshot request from `from` may go to openraft
    /// now (see the module docs): `Err` with the reason while its data is
    /// being fetched.
    pub(super) fn snapshot_data_ready(
        self: &Arc<Self>,
        g: &Arc<PartitionGroup>,
        from: NodeId,
        payload: &[u8],
    ) -> Result<(), String> {
        let req: InstallSnapshotRequest<PartitionRaftConfig> =
            postcard::from_bytes(payload).map_err(|e| format!("undecodable snapshot: {e}"))?;
        // Our snapshots are one small chunk; anything else is openraft's.
        if req.offset != 0 || !req.done {
            return Ok(());
        }
        let summary = SnapshotSummary::decode(&req.data)
            .map_err(|e| format!("undecodable snapshot summary: {e}"))?;
        let (Some(first), Some(last)) = (summary.data_first_index(), req.meta.last_log_id) else {
            return Ok(());
        };
        if last.index < first || holds_range(&g.log, first, last) {
            return Ok(());
        }
        let mut tasks = self.catchups.tasks.lock();
        if let Some(t) = tasks.get(&g.group) {
            let progress = t.progress.lock().clone();
            match progress {
                Progress::Fetching(next) => {
                    return Err(format!(
                        "{} is catching up: fetched up to index {} of {}",
                        g.name(),
                        next.saturating_sub(1),
                        t.target.1.index
                    ));
                }
                Progress::Ready if t.target == (first, last) && staged_continues_log(&g.log) => {
                    tasks.remove(&g.group);
                    return Ok(());
                }
                // Ready for an older snapshot (resumed from there), staged
                // to continue a log that has changed since (refetched), or
                // failed (retried, resuming what is staged).
                Progress::Ready | Progress::Failed(_) => {}
            }
        }
        let progress = Arc::new(parking_lot::Mutex::new(Progress::Fetching(first)));
        let staged_bytes = Arc::new(AtomicU64::new(0));
        tasks.insert(
            g.group,
            Task {
                target: (first, last),
                progress: progress.clone(),
                staged_bytes: staged_bytes.clone(),
            },
        );
        drop(tasks);
        self.catchups.started.fetch_add(1, Ordering::Relaxed);
        tracing::info!(group = %g.name(), source = from, first, last = %last, "catching up by snapshot: fetching the retained log");
        let name = g.name();
        let (this, g) = (self.clone(), g.clone());
        tokio::spawn(async move {
            let outcome = tokio::select! {
                r = this.fetch_snapshot_data(&g, from, first, last, &progress, &staged_bytes) => r,
                _ = this.shutdown.cancelled() => Err("node shutting down".into()),
            };
            match outcome {
                Ok(()) => {
                    this.catchups.completed.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(group = %g.name(), last = %last, "catch-up data staged; installing the snapshot");
                    *progress.lock() = Progress::Ready;
                }
                Err(e) => {
                    this.catchups.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(group = %g.name(), error = %e, "catch-up by snapshot failed; the next snapshot request retries");
                    *progress.lock() = Progress::Failed(e);
                }
            }
        });
        Err(format!("{name} started catching up by snapshot"))
    }

    /// Stages entries `first ..= last` fetched from `source` (or only those
    /// after the follower's last entry, to be appended); see the module
    /// docs. The staged log is closed on every way out.
    async fn fetch_snapshot_data(
        self: &Arc<Self>,
        g: &PartitionGroup,
        source: NodeId,
        first: u64,
        last: LogId<NodeId>,
        progress: &parking_lot::Mutex<Progress>,
        staged_bytes: &AtomicU64,
    ) -> Result<(), String> {
        let dir = staging_dir(g.log.dir());
        let rel = dir
            .strip_prefix(self.data_dir.path())
            .map_err(|_| format!("{} is outside the data directory", dir.display()))?
            .to_path_buf();
        let append_after = self.append_point(g, source, first, last).await?;
        let need_from = append_after.map_or(first, |a| a.index + 1);
        let staged = if dir.exists() {
            let log = self
                .data_dir
                .open_log(&rel, g.log.config().clone())
                .map_err(|e| e.to_string())?;
            let (start, next) = log.index_bounds();
            let empty = log.last_entry().is_none();
            let same_mode = staged_append_after(&dir) == append_after;
            // Usable if staged for the same mode, it starts where that mode
            // needs (right after the live log, or at or before the first
            // entry), reaches it, and holds nothing past the snapshot's end
            // (which would sit in the log where openraft knows of no entry).
            let starts_right = match append_after {
                Some(_) => start == need_from,
                None => start <= first,
            };
            if !empty && same_mode && starts_right && next >= need_from && next <= last.index + 1 {
                Some(log)
            } else {
                tracing::info!(dir = %dir.display(), start, next, need_from, append = append_after.is_some(), "staged snapshot data does not fit; fetching again");
                self.remove_staged(log).await?;
                None
            }
        } else {
            None
        };
        let mut staged = staged;
        let mut at = staged.as_ref().map_or(need_from, |l| l.index_bounds().1);
        staged_bytes.store(
            staged.as_ref().map_or(0, |l| l.stats().size_bytes),
            Ordering::Relaxed,
        );
        if at > need_from {
            tracing::info!(group = %g.name(), resume_at = at, first, last = %last, "resuming a catch-up from the staged data");
        } else if let Some(after) = append_after {
            tracing::info!(group = %g.name(), after = ?after, first, last = %last, "the log holds a prefix of the snapshot: fetching only what follows it");
        }
        let result = async {
            while at <= last.index {
                *progress.lock() = Progress::Fetching(at);
                let bytes = self
                    .fetch_from(source, g.group, at..last.index + 1, CHUNK_BYTES)
                    .await?;
                let wait = self.catchups.limiter.take(bytes.len() as u64);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                let batches =
                    RecordBatch::split_all(bytes).map_err(|e| format!("fetched batches: {e}"))?;
                let mut pending = Vec::new();
                for batch in batches.into_iter().take_while(|b| b.log_index() <= last.index) {
                    if batch.log_index() != at {
                        return Err(format!(
                            "node {source} sent index {} where {at} was due",
                            batch.log_index()
                        ));
                    }
                    let log = match &staged {
                        Some(l) => l.clone(),
                        None => {
                            let base_offset = batch.header().base_offset;
                            if append_after.is_some() && base_offset != g.log.bounds().1 {
                                return Err(format!(
                                    "node {source} has index {at} at offset {base_offset}, this log continues at offset {}",
                                    g.log.bounds().1
                                ));
                            }
                            let l = self
                                .data_dir
                                .open_log_at(&rel, g.log.config().clone(), at, base_offset)
                                .map_err(|e| e.to_string())?;
                            staged = Some(l.clone());
                            if let Some(after) = append_after {
                                mark_staged_append(&dir, after).map_err(|e| e.to_string())?;
                            }
                            l
                        }
                    };
                    let id = EntryId {
                        index: at,
                        term: batch.term(),
                    };
                    let (stamped, done) = log
                        .append_entry(batch.clone(), id)
                        .map_err(|e| format!("stage index {at}: {e}"))?;
                    if stamped.as_bytes() != batch.as_bytes() {
                        return Err(format!(
                            "index {at} does not continue the staged log as fetched (offsets differ)"
                        ));
                    }
                    self.catchups
                        .bytes_fetched
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    staged_bytes.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    pending.push(done);
                    at += 1;
                }
                if pending.is_empty() {
                    return Err(format!("node {source} sent nothing for index {at}"));
                }
                for done in pending {
                    done.await.map_err(|e| format!("stage: {e}"))?;
                }
            }
            let log = staged.as_ref().ok_or("nothing staged")?;
            let end = log.last_entry();
            if end != Some(crate::raft::log_store::entry_id(&last)) {
                return Err(format!(
                    "staged log ends at {end:?}, the snapshot at {last}"
                ));
            }
            Ok(())
        }
        .await;
        if let Some(log) = staged {
            let data_dir = self.data_dir.clone();
            let closed = tokio::task::spawn_blocking(move || data_dir.close_log(&log))
                .await
                .map_err(|e| e.to_string())?;
            closed.map_err(|e| e.to_string())?;
        }
        result
    }

    /// The batches of `group` with indexes in `range` that `source` holds
    /// (at least one if any, up to about `max_bytes`), as sent.
    async fn fetch_from(
        self: &Arc<Self>,
        source: NodeId,
        group: u64,
        range: std::ops::Range<u64>,
        max_bytes: u64,
    ) -> Result<bytes::Bytes, String> {
        let at = range.start;
        let fetched = ask(
            &self.as_host(),
            source,
            group,
            AeRequest::Fetch { range, max_bytes },
        )
        .await
        .map_err(|e| format!("fetch from node {source} at index {at}: {e}"))?;
        match fetched {
            AeResponse::Batches(bytes) => Ok(bytes),
            other => Err(format!("node {source} answered {other:?} to a fetch")),
        }
    }

    /// The follower's last entry, if the staged data can continue its log:
    /// it lies in the snapshot's range and `source` holds it with the same
    /// term (then, by Log Matching, everything up to it is identical).
    async fn append_point(
        self: &Arc<Self>,
        g: &PartitionGroup,
        source: NodeId,
        first: u64,
        last: LogId<NodeId>,
    ) -> Result<Option<EntryId>, String> {
        let Some(mine) = g.log.last_entry() else {
            return Ok(None);
        };
        if mine.index + 1 < first || mine.index >= last.index {
            return Ok(None);
        }
        let bytes = self
            .fetch_from(source, g.group, mine.index..mine.index + 1, 1)
            .await?;
        let batches = RecordBatch::split_all(bytes).map_err(|e| format!("fetched batch: {e}"))?;
        Ok(batches
            .first()
            .filter(|b| b.log_index() == mine.index && b.term() == mine.term)
            .map(|_| mine))
    }

    async fn remove_staged(&self, log: PartitionLog) -> Result<(), String> {
        let data_dir = self.data_dir.clone();
        tokio::task::spawn_blocking(move || data_dir.remove_log(&log))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }
}

/// Whether the data staged beside `log` may be installed on it now: it
/// replaces the log, or it continues the log's current last entry (a new
/// leader's entries may have moved it while the data was fetched).
fn staged_continues_log(log: &PartitionLog) -> bool {
    staged_append_after(&staging_dir(log.dir())).is_none_or(|after| log.last_entry() == Some(after))
}
