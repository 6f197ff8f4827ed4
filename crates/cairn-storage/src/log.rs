//! A partition log: an ordered set of segments, the last one active.
//!
//! Readers and the writer thread share the log through two kinds of state:
//! - `segments` (a map from base offset to [`Segment`]) and each segment's
//!   published [`SegmentMeta`]: what readers may see. The writer publishes a
//!   commit group only after its durability policy is met, so a reader never
//!   sees an entry that a crash could take back (under `fsync`).
//! - [`ActiveState`]: the write head, touched only by the writer thread
//!   (behind a mutex that is therefore never contended).
//! - [`Head`]: where the next *submitted* append goes (log index and entry
//!   offset). Appends are stamped when they are submitted, under this lock,
//!   and sent to the writer in that order, so the caller gets the stamped
//!   batch back at once (the Raft log store caches it before it is durable)
//!   while the writer still checks every batch continues its log exactly.
//!
//! Every batch is one Raft log entry: it carries its log index and term, and
//! the log index is the primary key of the log (segments are named by it).
//! Entry offsets are still assigned by the log, `base_offset` = the previous
//! batch's end, so replicas that hold the same entries hold the same offsets.
//! A single-node caller uses [`PartitionLog::append`], which takes the next
//! index and term 0 itself.
//!
//! Reads take the segment map's read lock just long enough to clone the
//! segments they need, then read with `pread` outside any lock; a segment
//! deleted by retention meanwhile stays readable through its open handle.
//! A scan crossing into the next segment checks that it starts where the
//! previous one ends (index and offset): entries missing in between (a
//! segment file deleted or cut short behind the log) fail the scan with
//! [`StorageError::Missing`] instead of being skipped, so the caller can
//! repair the range (see `digest`) and serve it from another replica.

use std::future::Future;
use std::ops::ControlFlow;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use cairn_types::RecordBatch;
use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use crate::config::LogConfig;
use crate::error::{Result, StorageError};
use crate::fsutil::create_dir_durable;
pub use crate::install::InstallMode;
use crate::segment::{BatchCursor, Segment};
pub use crate::state::{AppendCallback, AppendInfo, AppendTimings, EntryId, RetentionOutcome};
use crate::state::{Command, Head, LogInner, Notify, cursor_error, read_purged};

/// A summary of a log's extent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogStats {
    /// The first offset still stored.
    pub start_offset: u64,
    /// The offset the next append gets (everything below it is readable).
    pub end_offset: u64,
    pub segments: usize,
    pub size_bytes: u64,
    /// Timestamp range of stored entries; `None` when empty.
    pub min_ts: Option<i64>,
    pub max_ts: Option<i64>,
}

/// What a scan read and where its time went (the caller's own work in
/// `visit` is not counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScanStats {
    /// Finding the start: segment map and sparse index lookups.
    pub index_lookup: Duration,
    /// Reading and verifying batches (pread + CRC).
    pub disk_read: Duration,
    /// Batches handed to `visit`, and their bytes.
    pub batches: u64,
    pub bytes: u64,
}

/// The answer to a request handed to the writer thread. Await it from async
/// code, or call [`Pending::wait`] from a plain thread.
#[derive(Debug)]
pub struct Pending<T> {
    rx: oneshot::Receiver<Result<T>>,
}

impl<T> Pending<T> {
    pub(crate) fn new(rx: oneshot::Receiver<Result<T>>) -> Self {
        Pending { rx }
    }

    pub(crate) fn failed(err: StorageError) -> Self {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Err(err));
        Pending { rx }
    }

    /// Blocks the current thread until the answer arrives. Must not be
    /// called from inside an async runtime (await the `Pending` there).
    pub fn wait(self) -> Result<T> {
        self.rx
            .blocking_recv()
            .unwrap_or(Err(StorageError::WriterStopped))
    }
}

impl<T> Future for Pending<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(StorageError::WriterStopped)))
    }
}

/// A handle to one partition's log. Cheap to clone; all clones share the log.
#[derive(Clone)]
pub struct PartitionLog {
    pub(crate) inner: Arc<LogInner>,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir` and recovers it: sealed segments
    /// get their index loaded or rebuilt; the active (last) segment is read
    /// in full, every batch verified, and a torn or corrupt tail truncated.
    /// Segments wholly at or below the recorded purge point are deleted
    /// (finishing a purge a crash interrupted).
    pub(crate) fn open(
        dir: &Path,
        config: LogConfig,
        tx: mpsc::Sender<Command>,
    ) -> Result<PartitionLog> {
        create_dir_durable(dir)?;
        crate::install::finish_interrupted(dir)?;
        let purged = read_purged(dir)?;
        let (segments, active) = crate::recover::load_segments(dir, &config, purged)?;
        let inner = Arc::new(LogInner {
            dir: dir.to_path_buf(),
            config,
            segments: RwLock::new(segments),
            head: Mutex::new(Head {
                next_index: active.next_index,
                next_offset: active.next_offset,
                empty: false,
            }),
            active: Mutex::new(active),
            purged: RwLock::new(purged),
            start_after_purge: Mutex::new(None),
            tx,
        });
        {
            let mut st = inner.active.lock();
            if let Some(purged) = purged {
                crate::state::drop_purged(&inner, &mut st, purged.index)?;
            }
            inner.reset_head(&st);
        }
        Ok(PartitionLog { inner })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.inner.config
    }

    pub(crate) fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> Command,
    ) -> Pending<T> {
        let (tx, rx) = oneshot::channel();
        match self.inner.tx.send(make(tx)) {
            Ok(()) => Pending::new(rx),
            Err(_) => Pending::failed(StorageError::WriterStopped),
        }
    }

    /// Appends a data batch at the end of the log, as the next log index
    /// with term 0 (single-node mode). The log assigns its offsets. The
    /// answer arrives once the log's durability policy is met; only then do
    /// readers see the batch.
    pub fn append(&self, batch: RecordBatch) -> Pending<AppendInfo> {
        if batch.count() == 0 || batch.is_control() {
            return Pending::failed(StorageError::InvalidBatch(
                cairn_types::BatchError::Malformed("empty batch"),
            ));
        }
        let (tx, rx) = oneshot::channel();
        match self.submit(batch, None, false, Notify::Channel(tx)) {
            Ok(_) => Pending::new(rx),
            Err(e) => Pending::failed(e),
        }
    }

    /// Appends `batch` (a data or a control batch) as Raft entry `id`.
    /// `id.index` must follow the log's last index; otherwise this fails at
    /// once with [`StorageError::IndexOutOfSequence`]. Exceptions: a log
    /// holding no batch starts at any index, and a log holding only purged
    /// entries continues at any index after the purge point (its old
    /// segments are then deleted). Returns the batch as
    /// stamped (offsets, term and index), byte for byte what is written, and
    /// the answer that arrives once it is durable per the policy.
    pub fn append_entry(
        &self,
        batch: RecordBatch,
        id: EntryId,
    ) -> Result<(RecordBatch, Pending<AppendInfo>)> {
        let (tx, rx) = oneshot::channel();
        let stamped = self.submit(batch, Some(id), true, Notify::Channel(tx))?;
        Ok((stamped.expect("stamped copy requested"), Pending::new(rx)))
    }

    /// [`PartitionLog::append_entry`], answering by calling `done` on the
    /// writer thread instead of through a [`Pending`]. `done` must be quick
    /// and must not block. If this returns an error, `done` is not called.
    pub fn append_entry_then(
        &self,
        batch: RecordBatch,
        id: EntryId,
        done: impl FnOnce(Result<AppendInfo>) + Send + 'static,
    ) -> Result<RecordBatch> {
        let stamped = self.submit(batch, Some(id), true, Notify::Callback(Box::new(done)))?;
        Ok(stamped.expect("stamped copy requested"))
    }

    fn submit(
        &self,
        batch: RecordBatch,
        id: Option<EntryId>,
        stamped_copy: bool,
        notify: Notify,
    ) -> Result<Option<RecordBatch>> {
        // The head lock is held across the send so that the order batches
        // are stamped in is the order the writer receives them in.
        let mut head = self.inner.head.lock();
        let index = id.map_or(head.next_index, |id| id.index);
        let term = id.map_or(0, |id| id.term);
        if index != head.next_index {
            // Mirrors the writer's `may_restart_at`, on the submission head.
            let purged = *self.inner.purged.read();
            let fresh_start = head.empty
                || purged.is_some_and(|p| head.next_index <= p.index + 1 && index > p.index);
            if !fresh_start {
                return Err(StorageError::IndexOutOfSequence {
                    path: self.inner.dir.clone(),
                    expected: head.next_index,
                    got: index,
                });
            }
        }
        let base_offset = head.next_offset;
        let count = batch.count();
        let (batch, stamped) = if stamped_copy {
            let stamped = batch.restamped(base_offset, term, index);
            (stamped.clone(), Some(stamped))
        } else {
            (batch, None)
        };
        let header = batch.stamped_header(base_offset, term, index);
        self.inner
            .tx
            .send(Command::Append {
                log: self.inner.clone(),
                batch,
                header,
                index,
                base_offset,
                notify,
                enqueued: Instant::now(),
            })
            .map_err(|_| StorageError::WriterStopped)?;
        head.next_index = index + 1;
        head.next_offset = base_offset + u64::from(count);
        head.empty = false;
        Ok(stamped)
    }

    /// Deletes every entry at log index `from` and after (Raft's conflict
    /// truncation): later segments are deleted, the segment holding `from`
    /// is cut and synced, and the log continues at `from`. Appends must not
    /// be submitted while a truncate is pending.
    pub fn truncate(&self, from: u64) -> Pending<()> {
        let log = self.inner.clone();
        self.request(|reply| Command::Truncate { log, from, reply })
    }

    /// Records `upto` as purged (durably) and deletes the segments that hold
    /// only entries at or below it. Entries at or below it are no longer
    /// read even while their segment still exists. Purging past the last
    /// entry empties the log; it then continues at `upto.index + 1`.
    pub fn purge(&self, upto: EntryId) -> Pending<()> {
        let log = self.inner.clone();
        self.request(|reply| Command::Purge { log, upto, reply })
    }

    /// Deletes whole segments from the start of the log per the retention
    /// settings, and rolls an active segment older than `segment_ms`.
    pub fn enforce_retention(&self, now_us: i64) -> Pending<RetentionOutcome> {
        let log = self.inner.clone();
        self.request(|reply| Command::Retention {
            log,
            now_us,
            delete: true,
            gone_upto: None,
            reply,
        })
    }

    /// What [`PartitionLog::enforce_retention`] would delete, deleting
    /// nothing (an active segment older than `segment_ms` is still rolled):
    /// for a replicated log, whose cut must go through Raft so that every
    /// replica purges the same prefix ([`PartitionLog::purge`]). Entries
    /// up to `gone_upto` (a cut already decided, its purge still to come)
    /// count as deleted.
    pub fn plan_retention(&self, now_us: i64, gone_upto: Option<u64>) -> Pending<RetentionOutcome> {
        let log = self.inner.clone();
        self.request(|reply| Command::Retention {
            log,
            now_us,
            delete: false,
            gone_upto,
            reply,
        })
    }

    /// Moves the segments of the closed log in `staged` (a snapshot's
    /// data, fetched from another replica) into this log, per `mode`:
    /// replacing every segment (the purge point becomes the mode's), or
    /// continuing after the log's last entry. The log then continues
    /// after the staged log's last entry. The staged files are moved, not
    /// copied; see `install` for the order of steps and recovery after a
    /// crash.
    pub fn install(&self, staged: impl Into<std::path::PathBuf>, mode: InstallMode) -> Pending<()> {
        let log = self.inner.clone();
        let staged = staged.into();
        self.request(|reply| Command::Install {
            log,
            staged,
            mode,
            reply,
        })
    }

    /// Makes everything appended so far durable, whatever the policy.
    pub fn sync(&self) -> Pending<()> {
        let log = self.inner.clone();
        self.request(|reply| Command::Sync { log, reply })
    }

    /// The last purged entry, if any.
    pub fn purged(&self) -> Option<EntryId> {
        *self.inner.purged.read()
    }

    /// The last index of the newest sealed segment that is followed by at
    /// least `tail_bytes` of log (`None` if the log is not that long): the
    /// point before which a replica more than `tail_bytes` behind is better
    /// sent the data in bulk than entry by entry.
    pub fn index_before_tail(&self, tail_bytes: u64) -> Option<u64> {
        let segments = self.inner.segments.read();
        let mut after = 0u64;
        for seg in segments.values().rev() {
            let meta = seg.meta.read();
            if after >= tail_bytes && meta.has_data() {
                return Some(meta.next_index - 1);
            }
            after += meta.len;
        }
        None
    }

    /// `[first, next)`: the log indexes currently readable.
    pub fn index_bounds(&self) -> (u64, u64) {
        let segments = self.inner.segments.read();
        let first = *segments.keys().next().expect("a log always has a segment");
        let end = segments
            .values()
            .next_back()
            .expect("non-empty")
            .meta
            .read()
            .next_index;
        let first = match *self.inner.purged.read() {
            Some(p) => first.max(p.index + 1),
            None => first,
        };
        (first.min(end), end)
    }

    /// Every segment in index order, each with where it must start to
    /// continue the one before it (see [`ReadSpan`]).
    fn segments_in_order(&self) -> Vec<(Arc<Segment>, Follows)> {
        let purged = *self.inner.purged.read();
        let map = self.inner.segments.read();
        let mut prev = None;
        map.values()
            .map(|s| {
                let follows = prev;
                let meta = s.meta.read();
                // Segments holding only purged entries are about to go (a
                // purge or a restart after one deletes them after starting
                // the new segment): nothing after them must continue them.
                prev = match purged {
                    Some(p) if meta.next_index <= p.index + 1 => None,
                    _ => Some((meta.next_index, meta.next_offset)),
                };
                (s.clone(), follows)
            })
            .collect()
    }

    /// The first readable log index, if the log holds any entry.
    pub fn first_index(&self) -> Option<u64> {
        let (first, end) = self.index_bounds();
        (first < end).then_some(first)
    }

    /// The last readable log index, if the log holds any entry.
    pub fn last_index(&self) -> Option<u64> {
        self.last_entry().map(|e| e.index)
    }

    /// The last readable entry (index and term), if the log holds any that
    /// is not purged.
    pub fn last_entry(&self) -> Option<EntryId> {
        crate::state::last_entry(&self.inner)
    }

    /// `[start, end)`: the offsets currently readable. `start` is the
    /// offset of the first entry after the purge point, also while the
    /// first segment still holds purged entries before it (purges delete
    /// whole segments, and segments need not line up across replicas): so
    /// every replica that purged the same prefix starts at the same offset.
    pub fn bounds(&self) -> (u64, u64) {
        let (first, end) = {
            let segments = self.inner.segments.read();
            let first = segments
                .values()
                .next()
                .expect("a log always has a segment");
            let end = segments
                .values()
                .next_back()
                .expect("non-empty")
                .meta
                .read()
                .next_offset;
            ((first.base_index, first.base_offset), end)
        };
        (self.start_offset(first.0, first.1), end)
    }

    /// The start offset, given the first segment's base index and offset
    /// (see [`PartitionLog::bounds`]).
    fn start_offset(&self, base_index: u64, base_offset: u64) -> u64 {
        let Some(purged) = *self.inner.purged.read() else {
            return base_offset;
        };
        if base_index > purged.index {
            return base_offset;
        }
        if let Some((at, offset)) = *self.inner.start_after_purge.lock()
            && at == purged.index
        {
            return offset;
        }
        // Read once per purge point. The first segment is kept only while
        // it holds an entry after the purge point, so there is one.
        let next = self.read_index_range(purged.index + 1..purged.index + 2, 1);
        match next.as_deref().map(<[RecordBatch]>::first) {
            Ok(Some(b)) => {
                let offset = b.header().base_offset;
                *self.inner.start_after_purge.lock() = Some((purged.index, offset));
                offset
            }
            _ => base_offset,
        }
    }

    pub fn stats(&self) -> LogStats {
        let start_offset = self.bounds().0;
        let segments = self.inner.segments.read();
        let mut stats = LogStats {
            start_offset,
            end_offset: 0,
            segments: segments.len(),
            size_bytes: 0,
            min_ts: None,
            max_ts: None,
        };
        for seg in segments.values() {
            let meta = seg.meta.read();
            stats.size_bytes += meta.len;
            stats.end_offset = meta.next_offset;
            if meta.has_data() && meta.min_ts <= meta.max_ts {
                stats.min_ts = Some(stats.min_ts.map_or(meta.min_ts, |t| t.min(meta.min_ts)));
                stats.max_ts = Some(stats.max_ts.map_or(meta.max_ts, |t| t.max(meta.max_ts)));
            }
        }
        stats
    }

    /// Calls `visit` with each batch that holds offsets at or after `from`,
    /// in offset order, until it breaks or the readable end is reached. The
    /// first batch may start before `from`. Control batches (no entries)
    /// are skipped.
    pub fn scan_from(
        &self,
        from: u64,
        visit: impl FnMut(RecordBatch) -> ControlFlow<()>,
    ) -> Result<()> {
        self.scan_from_timed(from, visit).map(|_| ())
    }

    /// [`PartitionLog::scan_from`], also reporting where the time went.
    pub fn scan_from_timed(
        &self,
        from: u64,
        visit: impl FnMut(RecordBatch) -> ControlFlow<()>,
    ) -> Result<ScanStats> {
        let mut stats = ScanStats::default();
        let lookup_started = Instant::now();
        let (start, end) = self.bounds();
        if from < start || from > end {
            return Err(StorageError::OffsetOutOfRange {
                requested: from,
                start,
                end,
            });
        }
        let segments: Vec<ReadSpan> = {
            let all = self.segments_in_order();
            // Base offsets never decrease along the log; a segment followed
            // by one with the same base offset holds no entries at all, so
            // the last segment starting at or before `from` is the one.
            let first = all.partition_point(|(s, _)| s.base_offset <= from).max(1) - 1;
            all[first..]
                .iter()
                .map(|(s, follows)| {
                    let meta = s.meta.read();
                    ReadSpan {
                        seg: s.clone(),
                        from: meta.position_for_offset(s.base_offset, from),
                        to: meta.len,
                        follows: *follows,
                    }
                })
                .collect()
        };
        stats.index_lookup = lookup_started.elapsed();
        read_segments(
            segments,
            stats,
            |b| !b.is_control() && b.next_offset() > from,
            visit,
        )
    }

    /// Reads batches from `from` until at least `max_bytes` are collected
    /// (always at least one batch if any exists).
    pub fn read(&self, from: u64, max_bytes: usize) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        let mut bytes = 0;
        self.scan_from(from, |batch| {
            bytes += batch.len();
            out.push(batch);
            if bytes >= max_bytes {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        Ok(out)
    }

    /// Calls `visit` with each batch (data and control) from log index
    /// `from` on, in index order, until it breaks or the readable end is
    /// reached. `from` must lie in [`PartitionLog::index_bounds`].
    pub fn scan_index_from(
        &self,
        from: u64,
        visit: impl FnMut(RecordBatch) -> ControlFlow<()>,
    ) -> Result<()> {
        let (start, end) = self.index_bounds();
        if from < start || from > end {
            return Err(StorageError::IndexOutOfRange {
                requested: from,
                start,
                end,
            });
        }
        let segments: Vec<ReadSpan> = {
            let all = self.segments_in_order();
            // The last segment starting at or before `from` holds it.
            let first = all.partition_point(|(s, _)| s.base_index <= from).max(1) - 1;
            all[first..]
                .iter()
                .map(|(s, follows)| {
                    let meta = s.meta.read();
                    ReadSpan {
                        seg: s.clone(),
                        from: meta.position_for_index(s.base_index, from),
                        to: meta.len,
                        follows: *follows,
                    }
                })
                .collect()
        };
        read_segments(
            segments,
            ScanStats::default(),
            |b| b.log_index() >= from,
            visit,
        )
        .map(|_| ())
    }

    /// The batches with log indexes in `range` (clamped to what is stored),
    /// stopping early once `max_bytes` are collected (always at least one
    /// batch if any is in range).
    pub fn read_index_range(
        &self,
        range: std::ops::Range<u64>,
        max_bytes: usize,
    ) -> Result<Vec<RecordBatch>> {
        let (start, end) = self.index_bounds();
        let from = range.start.max(start);
        let to = range.end.min(end);
        let mut out = Vec::new();
        if from >= to {
            return Ok(out);
        }
        let mut bytes = 0;
        self.scan_index_from(from, |batch| {
            if batch.log_index() >= to {
                return ControlFlow::Break(());
            }
            bytes += batch.len();
            let last = batch.log_index() + 1 >= to;
            out.push(batch);
            // Stop at the range's last batch rather than at the one after
            // it: the range may end right before damage.
            if bytes >= max_bytes || last {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        Ok(out)
    }

    /// Calls `visit` with every batch whose time range overlaps
    /// `[start_us, end_us]`, in offset order. Segments outside the range are
    /// skipped by their time bounds, and within a segment the time index
    /// skips batches that are all older than `start_us`.
    pub fn scan_time(
        &self,
        start_us: i64,
        end_us: i64,
        visit: impl FnMut(RecordBatch) -> ControlFlow<()>,
    ) -> Result<()> {
        self.scan_time_timed(start_us, end_us, visit).map(|_| ())
    }

    /// [`PartitionLog::scan_time`], also reporting where the time went.
    pub fn scan_time_timed(
        &self,
        start_us: i64,
        end_us: i64,
        visit: impl FnMut(RecordBatch) -> ControlFlow<()>,
    ) -> Result<ScanStats> {
        let mut stats = ScanStats::default();
        let lookup_started = Instant::now();
        let segments: Vec<ReadSpan> = self
            .segments_in_order()
            .into_iter()
            .filter_map(|(seg, follows)| {
                let meta = seg.meta.read();
                if !meta.has_data() || meta.max_ts < start_us || meta.min_ts > end_us {
                    return None;
                }
                Some(ReadSpan {
                    from: meta.position_for_time(start_us),
                    to: meta.len,
                    follows,
                    seg: seg.clone(),
                })
            })
            .collect();
        stats.index_lookup = lookup_started.elapsed();
        // Purged entries still in the first segment are gone to readers.
        let purged = self.purged().map(|p| p.index);
        let overlaps = |b: &RecordBatch| {
            let h = b.header();
            h.count > 0
                && h.max_ts >= start_us
                && h.min_ts <= end_us
                && purged.is_none_or(|p| b.log_index() > p)
        };
        read_segments(segments, stats, overlaps, visit)
    }
}

/// `(next index, next offset)` a segment must start at to continue the one
/// before it; `None` when there is nothing to continue.
type Follows = Option<(u64, u64)>;

/// One segment's share of a scan.
struct ReadSpan {
    seg: Arc<Segment>,
    /// Byte range to read.
    from: u64,
    to: u64,
    /// `(next index, next offset)` of the segment before this one in the
    /// map: where this one must start. `None` when there is nothing to
    /// continue (first segment, or the one before holds only purged entries).
    follows: Follows,
}

/// Reads spans in order, handing `visit` every verified batch that `wanted`
/// accepts, and times the reads. A span that does not continue the segment
/// before it (entries missing between them) fails the scan: a reader must
/// never be handed a log with a silent hole in it.
fn read_segments(
    segments: Vec<ReadSpan>,
    mut stats: ScanStats,
    wanted: impl Fn(&RecordBatch) -> bool,
    mut visit: impl FnMut(RecordBatch) -> ControlFlow<()>,
) -> Result<ScanStats> {
    for (
        i,
        ReadSpan {
            seg,
            from: pos,
            to: len,
            follows,
        },
    ) in segments.into_iter().enumerate()
    {
        // The first span's predecessor was not read, so its end is not ours
        // to check.
        if i > 0 {
            check_follows(&seg, follows)?;
        }
        let mut cursor = BatchCursor::new(&seg.file, pos, len);
        loop {
            let read_started = Instant::now();
            let item = cursor.next_batch();
            stats.disk_read += read_started.elapsed();
            let Some(item) = item else { break };
            let batch = item.map_err(|e| cursor_error(&seg.path, e))?;
            if !wanted(&batch) {
                continue;
            }
            stats.batches += 1;
            stats.bytes += batch.len() as u64;
            if visit(batch).is_break() {
                return Ok(stats);
            }
        }
    }
    Ok(stats)
}

/// Fails when `seg` does not start where the segment before it ends.
fn check_follows(seg: &Segment, follows: Follows) -> Result<()> {
    let Some((index, offset)) = follows else {
        return Ok(());
    };
    if (index, offset) == (seg.base_index, seg.base_offset) {
        return Ok(());
    }
    // Indexes missing, or (same index) the offsets do not splice: then the
    // segment's first entry is the one in doubt.
    let (from_index, to_index) = if index < seg.base_index {
        (index, seg.base_index)
    } else {
        (seg.base_index, seg.base_index + 1)
    };
    Err(StorageError::Missing {
        path: seg.path.clone(),
        from_index,
        to_index,
    })
}
