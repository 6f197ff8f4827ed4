//! The partition log as openraft's log: [`LogStore`] implements
//! `RaftLogStorage` and `RaftLogReader` on a `cairn-storage`
//! [`PartitionLog`], so the Raft log **is** the data log (no double write).
//!
//! # Mapping
//! - One Raft entry is one record batch, stamped with the entry's index
//!   (`log_index`) and term (`epoch`). With openraft's `single-term-leader`
//!   the committed leader id is the term alone, so a stored batch names its
//!   own log id and reading rebuilds the `Entry` from the header.
//! - A `Normal` payload whose [`RaftPayload::record_batch`] is `Some` is
//!   stored as that batch (the log assigns its entry offsets). Every other
//!   entry — `Blank`, `Membership`, or a payload without a batch (controller
//!   commands) — is a CONTROL batch (`count = 0`) holding the postcard
//!   encoding of its `EntryPayload`.
//! - `truncate` and `purge` are the storage log's own, run on its writer
//!   thread in order with appends; the purged id lives in the log directory
//!   (`purged.json`). Vote and committed id live in `raft.json` (see
//!   [`super::meta`]): the vote is durable before `save_vote` returns, the
//!   committed id is written lazily (it is only a hint).
//!
//! # Appends and durability
//! `append` stamps each batch at submission (index checked against the log's
//! last), puts the stamped entry in the tail cache — so it is readable as soon
//! as `append` returns — and hands it to the group-commit writer. The writer
//! thread itself calls openraft's `LogFlushed` once the last batch of the
//! call is durable per the log's durability policy; no tokio task waits on
//! it, and all partitions of the data directory still share its syncs.
//! When [`LogStoreOptions::durable`] is set, the writer also notes when
//! each index became durable, so the leader can time replication from its
//! own durable append to the commit.
//!
//! # Tail cache
//! The most recently appended entries are kept in memory (`Bytes` clones of
//! the stamped batch, no copy), bounded by bytes, so replication to followers
//! and apply do not go back to disk for fresh entries. An entry leaves the
//! cache only once it is readable from disk, so the bound may be exceeded
//! briefly by entries still being written.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_storage::{DataDir, EntryId, LogConfig, PartitionLog};
use cairn_types::RecordBatch;
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, CommittedLeaderId, Entry, EntryPayload, LogId, LogState, OptionalSend, RaftLogReader,
    RaftTypeConfig, StorageError, StorageIOError, Vote,
};
use parking_lot::Mutex;

use super::meta::{MetaError, MetaFile};
use super::types::{NodeInfo, RaftPayload};

/// Told where each durable append's time went (queue, write, sync) and
/// how many client requests the batch carries (its header's `requests`:
/// 0 for control entries), on the storage writer thread: must be quick
/// (telemetry records it).
pub type AppendObserver = Arc<dyn Fn(&cairn_storage::AppendTimings, u32) + Send + Sync>;

/// When each recently appended Raft index became durable on this replica,
/// for the `replicate` write stage. Bounded: marks nobody takes (follower
/// appends, control entries) are dropped oldest first.
#[derive(Debug, Default)]
pub struct DurableMarks {
    marks: Mutex<VecDeque<(u64, std::time::Instant)>>,
}

impl DurableMarks {
    /// Marks kept; far more than the proposals a leader has in flight.
    const MAX: usize = 1024;

    fn mark(&self, index: u64) {
        let mut marks = self.marks.lock();
        if marks.len() >= Self::MAX {
            marks.pop_front();
        }
        marks.push_back((index, std::time::Instant::now()));
    }

    /// When `index` became durable here, if it has (and was not taken yet).
    pub fn take(&self, index: u64) -> Option<std::time::Instant> {
        let mut marks = self.marks.lock();
        let at = marks.iter().rposition(|(i, _)| *i == index)?;
        marks.remove(at).map(|(_, t)| t)
    }
}

/// Settings of a partition's Raft log store.
#[derive(Clone)]
pub struct LogStoreOptions {
    /// Bytes of recently appended entries kept in memory.
    pub tail_cache_bytes: usize,
    /// How often, at most, the lazy parts of `raft.json` (committed id,
    /// applied state) are written.
    pub meta_flush_interval: Duration,
    pub on_append: Option<AppendObserver>,
    /// Noted with each index once it is durable.
    pub durable: Option<Arc<DurableMarks>>,
    /// A partition's data outlives openraft's purge: the data log is
    /// purged only up to the retention cut the state machine recorded
    /// (`raft.json`'s `cut`), never further, so a follower that installed
    /// a snapshot keeps the data it carried. Off (the controller, the
    /// storage suite): the data log is purged wherever openraft purges.
    pub data_follows_cut: bool,
}

impl Debug for LogStoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStoreOptions")
            .field("tail_cache_bytes", &self.tail_cache_bytes)
            .field("meta_flush_interval", &self.meta_flush_interval)
            .field("on_append", &self.on_append.is_some())
            .field("data_follows_cut", &self.data_follows_cut)
            .finish()
    }
}

impl Default for LogStoreOptions {
    fn default() -> Self {
        LogStoreOptions {
            tail_cache_bytes: 32 << 20,
            meta_flush_interval: Duration::from_secs(1),
            on_append: None,
            durable: None,
            data_follows_cut: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    #[error(transparent)]
    Storage(#[from] cairn_storage::StorageError),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// The `C` a [`LogStore`] works with: node ids are `u64`, nodes are
/// [`NodeInfo`], entries are openraft's own, and the payload says whether
/// it is a record batch.
pub trait LogStoreConfig:
    RaftTypeConfig<NodeId = u64, Node = NodeInfo, Entry = Entry<Self>, D: RaftPayload + Clone>
{
}

impl<C> LogStoreConfig for C where
    C: RaftTypeConfig<NodeId = u64, Node = NodeInfo, Entry = Entry<C>, D: RaftPayload + Clone>
{
}

pub(crate) fn log_id(id: EntryId) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(id.term, 0), id.index)
}

pub(crate) fn entry_id(id: &LogId<u64>) -> EntryId {
    EntryId {
        index: id.index,
        term: id.leader_id.term,
    }
}

fn read_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::read_logs(AnyError::error(e.to_string())).into()
}

fn write_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_logs(AnyError::error(e.to_string())).into()
}

/// Encodes an entry as the batch that stores it (log id not yet stamped).
pub(crate) fn encode_entry<C: LogStoreConfig>(entry: &Entry<C>) -> Result<RecordBatch, String> {
    if let EntryPayload::Normal(d) = &entry.payload
        && let Some(bytes) = d.record_batch()
    {
        let batch = RecordBatch::from_bytes(bytes.clone())
            .map_err(|e| format!("entry {}: payload is not a valid batch: {e}", entry.log_id))?;
        if batch.is_control() {
            return Err(format!(
                "entry {}: a data payload may not be a control batch",
                entry.log_id
            ));
        }
        return Ok(batch);
    }
    let payload = postcard::to_allocvec(&entry.payload)
        .map_err(|e| format!("entry {}: encode payload: {e}", entry.log_id))?;
    RecordBatch::control(&payload).map_err(|e| format!("entry {}: {e}", entry.log_id))
}

/// Rebuilds the entry a stored (stamped) batch is.
pub(crate) fn decode_entry<C: LogStoreConfig>(batch: &RecordBatch) -> Result<Entry<C>, String> {
    let id = log_id(EntryId {
        index: batch.log_index(),
        term: batch.term(),
    });
    let payload = if batch.is_control() {
        postcard::from_bytes::<EntryPayload<C>>(batch.payload())
            .map_err(|e| format!("entry {id}: decode control payload: {e}"))?
    } else {
        let d = C::D::from_record_batch(batch.as_bytes().clone()).ok_or_else(|| {
            format!("entry {id}: a data batch in a log whose payloads carry none")
        })?;
        EntryPayload::Normal(d)
    };
    Ok(Entry {
        log_id: id,
        payload,
    })
}

/// Recently appended entries, contiguous by index.
#[derive(Debug)]
struct TailCache<C: LogStoreConfig> {
    entries: VecDeque<(Entry<C>, usize)>,
    bytes: usize,
    max_bytes: usize,
}

impl<C: LogStoreConfig> TailCache<C> {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn push(&mut self, entry: Entry<C>, size: usize) {
        if let Some((last, _)) = self.entries.back()
            && last.log_id.index + 1 != entry.log_id.index
        {
            // Only after a purge emptied the log: start over.
            self.entries.clear();
            self.bytes = 0;
        }
        self.bytes += size;
        self.entries.push_back((entry, size));
    }

    /// Drops the oldest entries past the byte bound, but only those already
    /// readable from disk (below `durable_end`).
    fn evict(&mut self, durable_end: u64) {
        while self.bytes > self.max_bytes {
            match self.entries.front() {
                Some((e, size)) if e.log_id.index < durable_end => {
                    self.bytes -= size;
                    self.entries.pop_front();
                }
                _ => break,
            }
        }
    }

    fn truncate(&mut self, from: u64) {
        while let Some((e, size)) = self.entries.back() {
            if e.log_id.index < from {
                break;
            }
            self.bytes -= size;
            self.entries.pop_back();
        }
    }

    fn purge(&mut self, upto: u64) {
        while let Some((e, size)) = self.entries.front() {
            if e.log_id.index > upto {
                break;
            }
            self.bytes -= size;
            self.entries.pop_front();
        }
    }

    /// Clones of the cached entries in `[from, to)`.
    fn range(&self, from: u64, to: u64) -> Vec<Entry<C>> {
        let Some(first) = self.first_index() else {
            return Vec::new();
        };
        let skip = from.saturating_sub(first) as usize;
        self.entries
            .iter()
            .skip(skip)
            .take_while(|(e, _)| e.log_id.index < to)
            .map(|(e, _)| e.clone())
            .collect()
    }
}

/// Reads a partition's Raft log: the tail cache first, the disk for the rest.
/// Cheap to clone; replication tasks each hold one.
pub struct LogReader<C: LogStoreConfig> {
    log: PartitionLog,
    cache: Arc<Mutex<TailCache<C>>>,
}

impl<C: LogStoreConfig> Clone for LogReader<C> {
    fn clone(&self) -> Self {
        LogReader {
            log: self.log.clone(),
            cache: self.cache.clone(),
        }
    }
}

impl<C: LogStoreConfig> Debug for LogReader<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("dir", &self.log.dir())
            .finish()
    }
}

impl<C: LogStoreConfig> LogReader<C> {
    /// The entries with indexes in `[from, to)` that the log holds.
    pub fn read(&self, from: u64, to: u64) -> Result<Vec<Entry<C>>, String> {
        // Purged entries are gone, even where a cache or segment still has them.
        let from = from.max(self.log.purged().map_or(0, |p| p.index + 1));
        if from >= to {
            return Ok(Vec::new());
        }
        // Cache first: an entry leaves it only once it is on disk, so what
        // is below its first index now is readable from disk afterwards.
        let (cached, cache_first) = {
            let cache = self.cache.lock();
            (cache.range(from, to), cache.first_index())
        };
        let disk_to = cache_first.map_or(to, |f| f.min(to));
        let mut out = Vec::new();
        if from < disk_to {
            let batches = self
                .log
                .read_index_range(from..disk_to, usize::MAX)
                .map_err(|e| e.to_string())?;
            for b in &batches {
                out.push(decode_entry::<C>(b)?);
            }
        }
        out.extend(cached);
        Ok(out)
    }

    /// The same range read from disk only, bypassing the cache (for tests
    /// and verification).
    pub fn read_from_disk(&self, from: u64, to: u64) -> Result<Vec<Entry<C>>, String> {
        let batches = self
            .log
            .read_index_range(from..to, usize::MAX)
            .map_err(|e| e.to_string())?;
        batches.iter().map(decode_entry::<C>).collect()
    }
}

fn range_to_bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

impl<C: LogStoreConfig> RaftLogReader<C> for LogReader<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<C>>, StorageError<u64>> {
        let (from, to) = range_to_bounds(&range);
        self.read(from, to).map_err(read_err)
    }
}

/// A partition replica's Raft log on top of its [`PartitionLog`].
pub struct LogStore<C: LogStoreConfig> {
    reader: LogReader<C>,
    meta: Arc<MetaFile>,
    /// The last appended entry's id, durable or not.
    last_log_id: Option<LogId<u64>>,
    on_append: Option<AppendObserver>,
    durable: Option<Arc<DurableMarks>>,
    data_follows_cut: bool,
}

impl<C: LogStoreConfig> Debug for LogStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("dir", &self.reader.log.dir())
            .field("last_log_id", &self.last_log_id)
            .finish()
    }
}

impl<C: LogStoreConfig> LogStore<C> {
    /// Opens (creating and recovering) the partition log in `dir` below
    /// `data_dir`, and its `raft.json`.
    pub fn open(
        data_dir: &DataDir,
        dir: impl AsRef<Path>,
        config: LogConfig,
        options: LogStoreOptions,
    ) -> Result<LogStore<C>, LogStoreError> {
        let log = data_dir.open_log(dir, config)?;
        let meta = MetaFile::open(log.dir(), options.meta_flush_interval)?;
        let last_log_id = log.last_entry().map(log_id);
        Ok(LogStore {
            reader: LogReader {
                log,
                cache: Arc::new(Mutex::new(TailCache {
                    entries: VecDeque::new(),
                    bytes: 0,
                    max_bytes: options.tail_cache_bytes,
                })),
            },
            meta,
            last_log_id,
            on_append: options.on_append,
            durable: options.durable,
            data_follows_cut: options.data_follows_cut,
        })
    }

    /// The underlying data log (for readers of committed data).
    pub fn log(&self) -> &PartitionLog {
        &self.reader.log
    }

    /// The shared `raft.json` (the state machine writes it too).
    /// Whether the data log outlives openraft's purge (see
    /// [`LogStoreOptions::data_follows_cut`]): then a snapshot's data is
    /// the log from its start.
    pub fn data_follows_cut(&self) -> bool {
        self.data_follows_cut
    }

    pub fn meta(&self) -> &Arc<MetaFile> {
        &self.meta
    }

    /// A reader of this log (also what openraft's replication uses).
    pub fn reader(&self) -> LogReader<C> {
        self.reader.clone()
    }

    /// Writes the lazy parts of `raft.json` now (e.g. before shutdown).
    pub async fn flush_meta(&self) -> Result<(), MetaError> {
        self.meta.flush().await
    }

    /// openraft's purge point: what it purged, or what the data log has
    /// (an interrupted purge, or retention from before the two differed).
    fn last_purged(&self) -> Option<LogId<u64>> {
        self.reader
            .log
            .purged()
            .map(log_id)
            .max(self.meta.get().raft_purged)
    }
}

impl<C: LogStoreConfig> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<C>>, StorageError<u64>> {
        let (from, to) = range_to_bounds(&range);
        self.reader.read(from, to).map_err(read_err)
    }
}

impl<C: LogStoreConfig> RaftLogStorage<C> for LogStore<C> {
    type LogReader = LogReader<C>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<u64>> {
        let last_purged_log_id = self.last_purged();
        let last_log_id = match (self.last_log_id, last_purged_log_id) {
            (Some(last), Some(purged)) if last.index <= purged.index => Some(purged),
            (None, purged) => purged,
            (last, _) => last,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        self.meta.update(|m| m.vote = Some(*vote));
        self.meta
            .flush()
            .await
            .map_err(|e| StorageIOError::write_vote(AnyError::error(e.to_string())).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        Ok(self.meta.get().vote)
    }

    /// Lazy: the committed id is a restart hint, so it is written at most
    /// once per flush interval (and with every vote), never synced per call,
    /// and in the background (see `meta`).
    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        if self.meta.update(|m| m.committed = committed) {
            self.meta.flush_in_background();
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(self.meta.get().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut entries = entries.into_iter().peekable();
        if entries.peek().is_none() {
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        // The writer answers the batches of one call in order, so the last
        // one's answer comes after every other's; earlier failures are
        // collected here and reported with it.
        let failed: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let mut callback = Some(callback);
        let observe = self.on_append.clone();
        while let Some(entry) = entries.next() {
            let id = entry_id(&entry.log_id);
            let (index, durable) = (id.index, self.durable.clone());
            let batch = encode_entry(&entry).map_err(write_err)?;
            // Read here, not in the callback: a follower learns it from the
            // leader's batch, so both count the same requests.
            let requests = batch.header().requests();
            let failed = failed.clone();
            let stamped = if entries.peek().is_none() {
                let callback = callback.take().expect("one last entry");
                let observe = observe.clone();
                self.reader
                    .log
                    .append_entry_then(batch, id, move |result| {
                        if let (Some(observe), Ok(info)) = (&observe, &result) {
                            observe(&info.timings, requests);
                        }
                        if let (Some(durable), Ok(_)) = (&durable, &result) {
                            durable.mark(index);
                        }
                        let earlier = failed.lock().take();
                        let outcome = match (earlier, result) {
                            (Some(e), _) => Err(io::Error::other(e)),
                            (None, Err(e)) => Err(io::Error::other(e.to_string())),
                            (None, Ok(_)) => Ok(()),
                        };
                        callback.log_io_completed(outcome);
                    })
                    .map_err(write_err)?
            } else {
                self.reader
                    .log
                    .append_entry_then(batch, id, {
                        let observe = observe.clone();
                        move |result| match result {
                            Ok(info) => {
                                if let Some(observe) = &observe {
                                    observe(&info.timings, requests);
                                }
                                if let Some(durable) = &durable {
                                    durable.mark(index);
                                }
                            }
                            Err(e) => {
                                failed.lock().get_or_insert_with(|| e.to_string());
                            }
                        }
                    })
                    .map_err(write_err)?
            };
            let size = stamped.len();
            let cached = match entry.payload {
                EntryPayload::Normal(_) if !stamped.is_control() => Entry {
                    log_id: entry.log_id,
                    payload: EntryPayload::Normal(
                        C::D::from_record_batch(Bytes::clone(stamped.as_bytes()))
                            .ok_or_else(|| write_err("payload cannot be rebuilt from its batch"))?,
                    ),
                },
                payload => Entry {
                    log_id: entry.log_id,
                    payload,
                },
            };
            let durable_end = self.reader.log.index_bounds().1;
            let mut cache = self.reader.cache.lock();
            cache.push(cached, size);
            cache.evict(durable_end);
            drop(cache);
            self.last_log_id = Some(entry.log_id);
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.reader.cache.lock().truncate(log_id.index);
        self.reader
            .log
            .truncate(log_id.index)
            .await
            .map_err(write_err)?;
        self.last_log_id = self.reader.log.last_entry().map(self::log_id);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        // openraft purges only applied entries; make the applied state on
        // disk cover them first, or a restart would look for them.
        self.meta
            .update(|m| m.raft_purged = m.raft_purged.max(Some(log_id)));
        self.meta.flush().await.map_err(write_err)?;
        self.reader.cache.lock().purge(log_id.index);
        let data_upto = if self.data_follows_cut {
            self.meta.get().cut.map(|cut| {
                if cut.index < log_id.index {
                    cut
                } else {
                    log_id
                }
            })
        } else {
            Some(log_id)
        };
        if let Some(upto) = data_upto {
            self.reader
                .log
                .purge(entry_id(&upto))
                .await
                .map_err(write_err)?;
        }
        if self.last_log_id.is_some_and(|l| l.index <= log_id.index) {
            self.last_log_id = None;
        }
        Ok(())
    }
}
