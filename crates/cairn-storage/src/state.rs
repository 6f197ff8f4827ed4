//! A log's shared state and the steps that change it on disk, below both
//! the handle ([`crate::PartitionLog`], `log`) and the writer thread
//! (`writer`), and used by repair (`digest`) too: the segment map and write
//! head ([`LogInner`], [`ActiveState`]), the requests the handle sends the
//! writer ([`Command`]), and rolling, creating and deleting segments and
//! dropping purged ones. Keeping them here lets the handle, the writer and
//! repair each import the state without importing one another.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cairn_types::RecordBatch;
use cairn_types::batch::HEADER_LEN;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::config::LogConfig;
use crate::error::{IoContext, Result, StorageError};
use crate::fsutil::fsync_dir;
use crate::segment::{
    CursorError, IndexPoint, Segment, SegmentMeta, remove_index_files, segment_path,
    write_index_files,
};

/// A Raft log position: index and the term of the entry there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntryId {
    pub index: u64,
    pub term: u64,
}

/// Where an appended batch landed and where its time went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: u64,
    pub count: u32,
    /// The log index the batch was stored at.
    pub log_index: u64,
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

/// Called by the writer thread with the outcome of an append. Must be quick
/// and must not block: it runs on the thread every log of the data
/// directory shares.
pub type AppendCallback = Box<dyn FnOnce(Result<AppendInfo>) + Send>;

/// What a retention run deleted (or, planning only, would delete).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    /// The last entry of the segments deleted (or to delete): everything
    /// up to and including it goes. `None` when no segment qualifies.
    pub cut: Option<EntryId>,
}

/// How the writer answers an append: a channel the caller awaits, or a
/// callback it runs itself (so an async caller need not park a task per
/// append just to forward the answer).
pub(crate) enum Notify {
    Channel(oneshot::Sender<Result<AppendInfo>>),
    Callback(AppendCallback),
}

impl Notify {
    pub fn send(self, result: Result<AppendInfo>) {
        match self {
            Notify::Channel(tx) => {
                let _ = tx.send(result);
            }
            Notify::Callback(f) => f(result),
        }
    }
}

pub(crate) struct Waiter {
    pub notify: Notify,
    pub info: AppendInfo,
}

/// Where the next submitted append goes. See the module docs.
#[derive(Debug)]
pub(crate) struct Head {
    pub next_index: u64,
    pub next_offset: u64,
    /// The log holds no batch at all, so the next append may start at any
    /// index after the purged one (a fresh log, or one purged or truncated
    /// to nothing).
    pub empty: bool,
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
    /// The log index the next staged batch must have.
    pub next_index: u64,
    pub last_term: u64,
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
    /// The segment has been open longer than the log's `segment_ms`: it
    /// rolls on the next append, and retention treats it as closable.
    pub(crate) fn too_old(&self, cfg: &LogConfig) -> bool {
        cfg.segment_ms
            .is_some_and(|ms| self.opened_at.elapsed() >= Duration::from_millis(ms))
    }

    pub(crate) fn new(segment: Arc<Segment>, meta: &SegmentMeta, bytes_since_index: u64) -> Self {
        ActiveState {
            write_pos: meta.len,
            allocated: meta.len,
            next_offset: meta.next_offset,
            next_index: meta.next_index,
            last_term: meta.last_term,
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
        let meta = SegmentMeta::empty(segment.base_index, segment.base_offset);
        Self::new(segment, &meta, 0)
    }

    /// Rebuilds the state for `segment` as the active one, keeping the
    /// commit-group bookkeeping.
    pub fn replace(&mut self, segment: Arc<Segment>, meta: &SegmentMeta, bytes_since_index: u64) {
        let in_group = self.in_group;
        *self = ActiveState::new(segment, meta, bytes_since_index);
        self.in_group = in_group;
    }

    /// Bytes in the segment once the staged group is written.
    pub fn end_pos(&self) -> u64 {
        self.write_pos + self.staged.len() as u64
    }
}

pub(crate) struct LogInner {
    pub dir: PathBuf,
    pub config: LogConfig,
    /// Keyed by base log index.
    pub segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    pub active: Mutex<ActiveState>,
    pub head: Mutex<Head>,
    /// The last purged entry; everything at or below it is logically gone
    /// even while its segment still exists (purging deletes whole segments).
    pub purged: RwLock<Option<EntryId>>,
    /// `(purged index, offset of the entry after it)` once looked up: the
    /// log's start offset while its first segment still holds purged
    /// entries (see `PartitionLog::bounds`).
    pub start_after_purge: Mutex<Option<(u64, u64)>>,
    pub tx: mpsc::Sender<Command>,
}

impl LogInner {
    /// Publishes the writer's head as the submission head (after truncate,
    /// purge or a failed append, which move or invalidate it).
    pub fn reset_head(&self, st: &ActiveState) {
        let empty = st.end_pos() == 0 && self.segments.read().len() == 1;
        *self.head.lock() = Head {
            next_index: st.next_index,
            next_offset: st.next_offset,
            empty,
        };
    }
}

pub(crate) const PURGED_FILE: &str = "purged.json";

pub(crate) fn read_purged(dir: &Path) -> Result<Option<EntryId>> {
    let path = dir.join(PURGED_FILE);
    match fs::read(&path) {
        Ok(raw) => serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| StorageError::Io {
                context: format!("parse {}", path.display()),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).ctx(|| format!("read {}", path.display())),
    }
}

/// Opens a segment file; out of descriptors or space, retries for a while
/// (see `fsutil`): a failed open when a segment rolls would stop the
/// partition's Raft group. An open that failed that way created nothing,
/// so `create_new` is safe to repeat.
pub(crate) fn open_segment_file(path: &Path, create: bool) -> Result<File> {
    let what = || format!("open segment {}", path.display());
    crate::fsutil::retry_transient(what, || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(create)
            .open(path)
    })
    .ctx(what)
}

pub(crate) fn cursor_error(path: &Path, e: CursorError) -> StorageError {
    match e {
        CursorError::Io { position, source }
            if source.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            StorageError::ShortRead {
                path: path.to_path_buf(),
                position,
                source,
            }
        }
        CursorError::Io { source, .. } => StorageError::Io {
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

/// Creates a new, empty segment file (the caller fsyncs the directory).
pub(crate) fn create_segment(
    dir: &Path,
    base_index: u64,
    base_offset: u64,
) -> Result<Arc<Segment>> {
    let path = segment_path(dir, base_index, base_offset);
    let file = open_segment_file(&path, true)?;
    Ok(Arc::new(Segment::new(
        base_index,
        base_offset,
        path,
        file,
        SegmentMeta::empty(base_index, base_offset),
    )))
}

/// What a repair wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RepairOutcome {
    /// Provided batches written.
    pub batches: u64,
    /// Bytes of segment files written (rebuilt segments include the local
    /// batches they kept).
    pub bytes_written: u64,
    /// Segment files written (rebuilt ones and new ones).
    pub segments_rewritten: u32,
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T>>;

pub(crate) enum Command {
    /// `header` is the batch's header as stamped at submission; the writer
    /// checks `index`/`base_offset` continue the log before writing it.
    Append {
        log: Arc<LogInner>,
        batch: RecordBatch,
        header: [u8; HEADER_LEN],
        index: u64,
        base_offset: u64,
        notify: Notify,
        enqueued: Instant,
    },
    Truncate {
        log: Arc<LogInner>,
        from: u64,
        reply: Reply<()>,
    },
    Purge {
        log: Arc<LogInner>,
        upto: EntryId,
        reply: Reply<()>,
    },
    Register {
        log: Arc<LogInner>,
    },
    Retention {
        log: Arc<LogInner>,
        now_us: i64,
        /// False: only plan (and roll an old active segment); the caller
        /// cuts through Raft.
        delete: bool,
        /// Entries up to this index count as gone already (a cut decided
        /// but not yet purged).
        gone_upto: Option<u64>,
        reply: Reply<RetentionOutcome>,
    },
    /// Move a staged log's segments in (see `install`).
    Install {
        log: Arc<LogInner>,
        staged: PathBuf,
        mode: crate::install::InstallMode,
        reply: Reply<()>,
    },
    Sync {
        log: Arc<LogInner>,
        reply: Reply<()>,
    },
    /// Replace a damaged range with batches from another replica.
    Repair {
        log: Arc<LogInner>,
        batches: Vec<RecordBatch>,
        reply: Reply<RepairOutcome>,
    },
    // Close and Shutdown answer on a std channel: they are awaited by
    // blocking callers, possibly on an async runtime's thread (a Drop), where
    // a tokio oneshot's blocking_recv would panic.
    Close {
        log: Arc<LogInner>,
        delete: bool,
        reply: mpsc::Sender<Result<()>>,
    },
    Shutdown {
        reply: mpsc::Sender<Result<()>>,
    },
}

/// Seals the active segment and starts a new one at the next index, all
/// before returning (used where a roll is rare: retention, repair).
pub(crate) fn roll(log: &LogInner, st: &mut ActiveState) -> Result<()> {
    let old = roll_start(log, st)?;
    seal(&old)
}

/// The part of a roll appends must wait for: the old segment's data made
/// durable if a lazy policy left it dirty (so a crash cannot keep the new
/// segment's entries and lose older ones: a hole), its preallocated tail
/// trimmed, and the new segment created, its name durable in the directory,
/// and made the active one. Returns the old segment, which still needs
/// [`seal`]; until then a crash leaves it without index files and perhaps
/// with its zero tail, which recovery handles like any unsealed segment
/// (`recover::open_sealed` rebuilds the index and trims the tail).
pub(crate) fn roll_start(log: &LogInner, st: &mut ActiveState) -> Result<Arc<Segment>> {
    debug_assert!(st.staged.is_empty(), "roll with staged bytes");
    let old = st.segment.clone();
    if st.dirty {
        old.file
            .sync_data()
            .ctx(|| format!("fdatasync {}", old.path.display()))?;
        st.dirty = false;
    }
    if st.allocated > st.write_pos {
        old.file
            .set_len(st.write_pos)
            .ctx(|| format!("trim {}", old.path.display()))?;
    }
    // Trimming changed the file's size and mtime, not its batches: keep
    // its digest cache valid. (Syncing later changes neither.)
    old.digest.lock().refresh_identity(&old.file);
    let segment = create_segment(&log.dir, st.next_index, st.next_offset)?;
    fsync_dir(&log.dir)?;
    log.segments
        .write()
        .insert(segment.base_index, segment.clone());
    let in_group = st.in_group;
    *st = ActiveState::fresh(segment);
    st.in_group = in_group;
    Ok(old)
}

/// Finishes a roll: makes the old segment's trimmed size durable and
/// writes its index files. Nothing a reader needs waits for it (readers
/// use the in-memory index); it only spares the next open a rescan.
pub(crate) fn seal(old: &Segment) -> Result<()> {
    #[cfg(test)]
    if crate::syncpool::inject::seal_fails(&old.path) {
        return Err(StorageError::Io {
            context: format!("fsync {}", old.path.display()),
            source: std::io::Error::from_raw_os_error(5),
        });
    }
    // sync_all, not sync_data: the trimmed size must be durable before an
    // index file claims that length.
    old.file
        .sync_all()
        .ctx(|| format!("fsync {}", old.path.display()))?;
    let meta = old.meta.read().clone();
    write_index_files(&old.path, &meta)
}

/// Deletes the segments holding only entries at or below `upto`; if that is
/// every entry, first starts an empty segment at `upto + 1` so the log can
/// continue there. Also run on open, to finish a purge a crash interrupted.
pub(crate) fn drop_purged(log: &LogInner, st: &mut ActiveState, upto: u64) -> Result<()> {
    debug_assert!(st.staged.is_empty(), "purge with staged bytes");
    let fresh = st.end_pos() == 0 && st.segment.base_index == upto + 1;
    if st.next_index <= upto + 1 && !fresh {
        let segment = create_segment(&log.dir, upto + 1, st.next_offset)?;
        log.segments
            .write()
            .insert(segment.base_index, segment.clone());
        fsync_dir(&log.dir)?;
        st.replace(
            segment.clone(),
            &crate::segment::SegmentMeta::empty(segment.base_index, segment.base_offset),
            0,
        );
    }
    let segments: Vec<Arc<Segment>> = log.segments.read().values().cloned().collect();
    let mut deleted = false;
    for seg in segments {
        if seg.base_index == st.segment.base_index || seg.meta.read().next_index > upto + 1 {
            break;
        }
        delete_segment(log, &seg)?;
        deleted = true;
    }
    if deleted {
        fsync_dir(&log.dir)?;
    }
    Ok(())
}

/// The log's last entry as published (`None` if empty or purged).
pub(crate) fn last_entry(log: &LogInner) -> Option<EntryId> {
    let last = log.segments.read().values().rev().find_map(|s| {
        let meta = s.meta.read();
        meta.has_data().then(|| EntryId {
            index: meta.next_index - 1,
            term: meta.last_term,
        })
    })?;
    match *log.purged.read() {
        Some(p) if last.index <= p.index => None,
        _ => Some(last),
    }
}

/// Removes a segment from the map and deletes its files (the caller fsyncs
/// the directory). Readers holding it keep reading through their handle.
pub(crate) fn delete_segment(log: &LogInner, seg: &Segment) -> Result<()> {
    log.segments.write().remove(&seg.base_index);
    seg.digest.lock().invalidate();
    fs::remove_file(&seg.path).ctx(|| format!("delete {}", seg.path.display()))?;
    remove_index_files(&seg.path)
}
