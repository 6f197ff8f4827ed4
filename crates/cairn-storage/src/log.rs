//! A partition log: an ordered set of segments, the last one active.
//!
//! Readers and the writer thread share the log through two kinds of state:
//! - `segments` (a map from base offset to [`Segment`]) and each segment's
//!   published [`SegmentMeta`]: what readers may see. The writer publishes a
//!   commit group only after its durability policy is met, so a reader never
//!   sees an entry that a crash could take back (under `fsync`).
//! - [`ActiveState`]: the write head, touched only by the writer thread
//!   (behind a mutex that is therefore never contended).
//!
//! Reads take the segment map's read lock just long enough to clone the
//! segments they need, then read with `pread` outside any lock; a segment
//! deleted by retention meanwhile stays readable through its open handle.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use cairn_types::RecordBatch;
use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use crate::config::LogConfig;
use crate::error::{IoContext, Result, StorageError};
use crate::fsutil::{create_dir_durable, fsync_dir};
use crate::segment::{
    BatchCursor, CursorError, IndexPoint, Segment, SegmentMeta, load_index_files,
    parse_segment_name, remove_index_files, scan_segment, segment_path,
};
use crate::writer::Command;

/// Where an appended batch landed and where its time went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: u64,
    pub count: u32,
    pub timings: AppendTimings,
}

impl AppendInfo {
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.count)
    }
}

/// Stage timings of one append, for telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AppendTimings {
    /// From submission until the writer thread picked the append up.
    pub queued: Duration,
    /// Writing the commit group's bytes for this log.
    pub write: Duration,
    /// The `fdatasync` that made it durable (zero when the policy skips it).
    pub sync: Duration,
    /// Appends (from all logs of the data directory) in the same commit group.
    pub group_size: u32,
}

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

/// What a retention run deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
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

pub(crate) struct Waiter {
    pub reply: oneshot::Sender<Result<AppendInfo>>,
    pub info: AppendInfo,
}

/// The write head of a log. Only the writer thread touches it.
pub(crate) struct ActiveState {
    pub segment: Arc<Segment>,
    /// Bytes written to the segment file (staged bytes not included).
    pub write_pos: u64,
    /// Current file size, including the preallocated zero tail.
    pub allocated: u64,
    /// The offset the next staged batch gets.
    pub next_offset: u64,
    pub min_ts: i64,
    pub max_ts: i64,
    pub bytes_since_index: u64,
    pub opened_at: Instant,
    /// Batches of the current commit group, stamped, back to back.
    pub staged: Vec<u8>,
    pub staged_index: Vec<IndexPoint>,
    pub waiters: Vec<Waiter>,
    pub in_group: bool,
    /// Written since the last sync.
    pub dirty: bool,
    pub poisoned: Option<String>,
}

impl ActiveState {
    fn new(segment: Arc<Segment>, meta: &SegmentMeta, bytes_since_index: u64) -> Self {
        ActiveState {
            write_pos: meta.len,
            allocated: meta.len,
            next_offset: meta.next_offset,
            min_ts: meta.min_ts,
            max_ts: meta.max_ts,
            bytes_since_index,
            opened_at: Instant::now(),
            staged: Vec::new(),
            staged_index: Vec::new(),
            waiters: Vec::new(),
            in_group: false,
            dirty: false,
            poisoned: None,
            segment,
        }
    }

    pub fn fresh(segment: Arc<Segment>) -> Self {
        let meta = SegmentMeta::empty(segment.base_offset);
        Self::new(segment, &meta, 0)
    }

    /// Bytes in the segment once the staged group is written.
    pub fn end_pos(&self) -> u64 {
        self.write_pos + self.staged.len() as u64
    }
}

pub(crate) struct LogInner {
    pub dir: PathBuf,
    pub config: LogConfig,
    pub segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    pub active: Mutex<ActiveState>,
    pub tx: mpsc::Sender<Command>,
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

pub(crate) fn open_segment_file(path: &Path, create: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(create)
        .open(path)
        .ctx(|| format!("open segment {}", path.display()))
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir` and recovers it: sealed segments
    /// get their index loaded or rebuilt; the active (last) segment is read
    /// in full, every batch verified, and a torn or corrupt tail truncated.
    pub(crate) fn open(
        dir: &Path,
        config: LogConfig,
        tx: mpsc::Sender<Command>,
    ) -> Result<PartitionLog> {
        create_dir_durable(dir)?;
        let mut bases = Vec::new();
        for item in fs::read_dir(dir).ctx(|| format!("list {}", dir.display()))? {
            let item = item.ctx(|| format!("list {}", dir.display()))?;
            let name = item.file_name();
            let name = name.to_string_lossy();
            if let Some(base) = parse_segment_name(&name) {
                bases.push(base);
            } else if name.ends_with(".tmp") {
                // A metadata write that did not reach its rename.
                let _ = fs::remove_file(item.path());
            }
        }
        bases.sort_unstable();

        let mut segments = BTreeMap::new();
        if bases.is_empty() {
            let path = segment_path(dir, 0);
            let file = open_segment_file(&path, true)?;
            fsync_dir(dir)?;
            bases.push(0);
            segments.insert(
                0,
                Arc::new(Segment {
                    base_offset: 0,
                    path,
                    file,
                    meta: RwLock::new(SegmentMeta::empty(0)),
                }),
            );
        } else {
            let last = *bases.last().expect("non-empty");
            let mut expected_base = None;
            for &base in &bases[..bases.len() - 1] {
                let seg = open_sealed(dir, base, &config)?;
                if let Some(expected) = expected_base
                    && expected != base
                {
                    tracing::warn!(dir = %dir.display(), expected, found = base, "gap between segments");
                }
                expected_base = Some(seg.meta.read().next_offset);
                segments.insert(base, Arc::new(seg));
            }
            let path = segment_path(dir, last);
            let file = open_segment_file(&path, false)?;
            segments.insert(
                last,
                Arc::new(Segment {
                    base_offset: last,
                    path,
                    file,
                    meta: RwLock::new(SegmentMeta::empty(last)),
                }),
            );
        }

        let active_seg = segments
            .values()
            .next_back()
            .expect("at least one segment")
            .clone();
        let outcome = scan_segment(
            &active_seg.file,
            active_seg.base_offset,
            config.index_interval_bytes,
        )?;
        let file_len = active_seg
            .file
            .metadata()
            .ctx(|| "stat segment".into())?
            .len();
        if let Some((position, reason)) = &outcome.stopped
            && !outcome.clean_tail
        {
            tracing::warn!(
                segment = %active_seg.path.display(),
                position,
                dropped_bytes = file_len - position,
                %reason,
                "truncating torn or corrupt tail of the active segment"
            );
        }
        if file_len != outcome.meta.len {
            active_seg
                .file
                .set_len(outcome.meta.len)
                .and_then(|()| active_seg.file.sync_all())
                .ctx(|| format!("truncate {}", active_seg.path.display()))?;
        }
        // The active segment's index lives in memory until it is sealed.
        remove_index_files(&active_seg.path)?;
        *active_seg.meta.write() = outcome.meta.clone();
        let active = ActiveState::new(active_seg, &outcome.meta, outcome.bytes_since_index);

        Ok(PartitionLog {
            inner: Arc::new(LogInner {
                dir: dir.to_path_buf(),
                config,
                segments: RwLock::new(segments),
                active: Mutex::new(active),
                tx,
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.inner.config
    }

    fn request<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Command) -> Pending<T> {
        let (tx, rx) = oneshot::channel();
        match self.inner.tx.send(make(tx)) {
            Ok(()) => Pending::new(rx),
            Err(_) => Pending::failed(StorageError::WriterStopped),
        }
    }

    /// Appends a batch at the end of the log. The log assigns its offsets.
    /// The answer arrives once the log's durability policy is met; only then
    /// do readers see the batch.
    pub fn append(&self, batch: RecordBatch) -> Pending<AppendInfo> {
        if batch.count() == 0 {
            return Pending::failed(StorageError::InvalidBatch(
                cairn_types::BatchError::Malformed("empty batch"),
            ));
        }
        let log = self.inner.clone();
        let enqueued = Instant::now();
        self.request(|reply| Command::Append {
            log,
            batch,
            reply,
            enqueued,
        })
    }

    /// Deletes whole segments from the start of the log per the retention
    /// settings, and rolls an active segment older than `segment_ms`.
    pub fn enforce_retention(&self, now_us: i64) -> Pending<RetentionOutcome> {
        let log = self.inner.clone();
        self.request(|reply| Command::Retention { log, now_us, reply })
    }

    /// Makes everything appended so far durable, whatever the policy.
    pub fn sync(&self) -> Pending<()> {
        let log = self.inner.clone();
        self.request(|reply| Command::Sync { log, reply })
    }

    /// `[start, end)`: the offsets currently readable.
    pub fn bounds(&self) -> (u64, u64) {
        let segments = self.inner.segments.read();
        let start = *segments.keys().next().expect("a log always has a segment");
        let end = segments
            .values()
            .next_back()
            .expect("non-empty")
            .meta
            .read()
            .next_offset;
        (start, end)
    }

    pub fn stats(&self) -> LogStats {
        let segments = self.inner.segments.read();
        let mut stats = LogStats {
            start_offset: *segments.keys().next().expect("a log always has a segment"),
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
            if meta.has_data() {
                stats.min_ts = Some(stats.min_ts.map_or(meta.min_ts, |t| t.min(meta.min_ts)));
                stats.max_ts = Some(stats.max_ts.map_or(meta.max_ts, |t| t.max(meta.max_ts)));
            }
        }
        stats
    }

    /// Calls `visit` with each batch that holds offsets at or after `from`,
    /// in offset order, until it breaks or the readable end is reached. The
    /// first batch may start before `from`.
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
        let segments: Vec<(Arc<Segment>, u64, u64)> = {
            let map = self.inner.segments.read();
            let first = map.range(..=from).next_back().map_or(start, |(b, _)| *b);
            map.range(first..)
                .map(|(_, s)| {
                    let meta = s.meta.read();
                    (
                        s.clone(),
                        meta.position_for_offset(s.base_offset, from),
                        meta.len,
                    )
                })
                .collect()
        };
        stats.index_lookup = lookup_started.elapsed();
        read_segments(segments, stats, |b| b.next_offset() > from, visit)
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
        let segments: Vec<(Arc<Segment>, u64, u64)> = self
            .inner
            .segments
            .read()
            .values()
            .filter_map(|seg| {
                let meta = seg.meta.read();
                if !meta.has_data() || meta.max_ts < start_us || meta.min_ts > end_us {
                    return None;
                }
                Some((seg.clone(), meta.position_for_time(start_us), meta.len))
            })
            .collect();
        stats.index_lookup = lookup_started.elapsed();
        let overlaps = |b: &RecordBatch| {
            let h = b.header();
            h.count > 0 && h.max_ts >= start_us && h.min_ts <= end_us
        };
        read_segments(segments, stats, overlaps, visit)
    }
}

/// Reads `(segment, from position, to position)` ranges in order, handing
/// `visit` every verified batch that `wanted` accepts, and times the reads.
fn read_segments(
    segments: Vec<(Arc<Segment>, u64, u64)>,
    mut stats: ScanStats,
    wanted: impl Fn(&RecordBatch) -> bool,
    mut visit: impl FnMut(RecordBatch) -> ControlFlow<()>,
) -> Result<ScanStats> {
    for (seg, pos, len) in segments {
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

fn cursor_error(path: &Path, e: CursorError) -> StorageError {
    match e {
        CursorError::Io(source) => StorageError::Io {
            context: format!("read {}", path.display()),
            source,
        },
        CursorError::Batch { position, error } => StorageError::Corruption {
            path: path.to_path_buf(),
            position,
            source: error,
        },
    }
}

/// Opens a sealed segment, loading its index or rebuilding a missing or
/// stale one. A preallocated zero tail left by a crash mid-roll is trimmed.
fn open_sealed(dir: &Path, base: u64, config: &LogConfig) -> Result<Segment> {
    let path = segment_path(dir, base);
    let file = open_segment_file(&path, false)?;
    let len = file
        .metadata()
        .ctx(|| format!("stat {}", path.display()))?
        .len();
    let meta = match load_index_files(&path, len) {
        Some(meta) => meta,
        None => {
            tracing::info!(segment = %path.display(), "rebuilding missing or stale index");
            let outcome = scan_segment(&file, base, config.index_interval_bytes)?;
            if let Some((position, reason)) = &outcome.stopped {
                if outcome.clean_tail {
                    file.set_len(outcome.meta.len)
                        .and_then(|()| file.sync_all())
                        .ctx(|| format!("trim {}", path.display()))?;
                } else {
                    // Not a torn write (sealed segments were synced before the
                    // roll): real corruption. Serve the verified prefix only.
                    tracing::error!(segment = %path.display(), position, %reason, "sealed segment is corrupt");
                }
            }
            crate::segment::write_index_files(&path, &outcome.meta)?;
            outcome.meta
        }
    };
    Ok(Segment {
        base_offset: base,
        path,
        file,
        meta: RwLock::new(meta),
    })
}
