//! The data directory and its group-commit writer thread.
//!
//! Every mutation of every log in a data directory goes through one thread,
//! fed by a channel. The thread takes whatever has queued up (one *commit
//! group*), stamps offsets and writes each log's share of the group with one
//! `pwrite`. Then the logs whose policy asks for it are made durable with
//! one `fdatasync` each, *side by side*: all but the first go to the data
//! directory's sync pool (`syncpool`, `sync_threads` persistent threads),
//! the writer syncs the first itself, and each log's new end is published
//! to readers and its appends answered as soon as its own sync returns. A
//! device works on concurrent flushes together, so a group touching eight
//! partitions no longer costs eight flushes in a row (the numbers, and why
//! not one node-wide journal instead: `docs/design/group-commit.md`).
//! While a group syncs, new appends queue up and form the next group, so
//! the cost of a sync is shared by everyone who arrived during the previous
//! one: throughput rises with concurrency while each append is still
//! acknowledged only after its own bytes are on disk. `sync_threads = 0`
//! keeps the older behaviour: every sync on the writer, one after another.
//!
//! Appends that would overflow the active segment (or find it too old) first
//! flush what is staged, then roll: on the writer, a lazily synced log's old
//! segment is synced, trimmed of its preallocated tail, and the new segment
//! is created (its name made durable) at the next log index (and offset).
//! *Sealing* the old segment — syncing its trimmed size and writing its two
//! index files, four more fsyncs — is handed to the sync pool, so it no
//! longer stalls every log's appends behind it; nothing waits for it but
//! the commands that may delete or rewrite sealed segments (everything but
//! appends, and a restart after a purge), which wait for seals in flight
//! first. A crash before a seal finishes leaves a segment without index
//! files and perhaps with its zero tail: recovery rebuilds the index from
//! the segment and trims the tail, as for any unsealed segment.
//!
//! Raft's log operations run here too, so they are ordered with appends:
//! `truncate` deletes later segments (last first, so a crash never leaves a
//! hole), cuts the segment holding the index and syncs it, and makes it the
//! active one; `purge` records the purged entry in `purged.json`, then
//! deletes the segments that hold nothing newer (a purge past the last entry
//! first starts a fresh, empty segment after it). Anti-entropy's `repair`
//! runs here too: it rolls the active segment if the range reaches it and
//! rewrites sealed segments (see `digest`).
//!
//! Injected disk faults (see `fault`) are applied here: the writer sleeps
//! before each log's group write, and whichever thread runs an append's
//! `fdatasync` sleeps before it, while a delay is in force, inside the
//! timed regions, so appends and their reported timings slow down as on a
//! slow device (concurrent syncs wait out their delays concurrently, as
//! on a device with a queue). It never injects failures.
//!
//! A failed write or sync *poisons* the log — that log only, whichever
//! thread ran its sync: after fsync fails the page cache cannot be trusted,
//! so the log refuses appends until it is reopened and recovered from what
//! is really on disk. A failed seal poisons its log too, as a failed roll
//! always did.
//!
//! One long file on purpose: the writer thread's loop and the log
//! mutations only that thread runs (restart, truncate, purge, poison)
//! share its invariants — who holds `ActiveState`, when a sync is owed,
//! what poisons — and read best side by side.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cairn_types::RecordBatch;
use cairn_types::batch::HEADER_LEN;
use parking_lot::Mutex;
use rustix::fs::{FallocateFlags, FlockOperation};

use crate::config::{DataDirOptions, Durability, LogConfig};
use crate::error::{IoContext, Result, StorageError};
use crate::fault::{DiskFaults, pause};
use crate::fsutil::{atomic_write, create_dir_durable, fsync_dir};
use crate::log::PartitionLog;
use crate::segment::{BatchCursor, IndexPoint, Segment, remove_index_files, scan_segment};
use crate::space::SpaceGuard;
use crate::state::{
    ActiveState, AppendInfo, Command, EntryId, LogInner, Notify, PURGED_FILE, RetentionOutcome,
    create_segment, delete_segment, drop_purged, roll_start, seal,
};
use crate::syncpool::{Done, Job, SyncPool, sync_segment};
use crate::trash::Trash;

/// One data directory: a lock file, the logs below it, and their writer.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    tx: mpsc::Sender<Command>,
    thread: Mutex<Option<JoinHandle<()>>>,
    open_logs: Mutex<HashSet<PathBuf>>,
    /// Held until shutdown (not drop): other components may keep the
    /// `DataDir` alive a little longer, and a restart in the same process
    /// must be able to take the lock as soon as shutdown returns.
    lock: Mutex<Option<File>>,
    /// Injected faults the writer applies; shared with the node's API.
    faults: Arc<DiskFaults>,
    space: Arc<SpaceGuard>,
    /// Where removed logs are deleted, off the writer thread.
    trash: Arc<Trash>,
}

impl DataDir {
    /// Opens `path` (creating it), takes an exclusive lock on it so no second
    /// process can write the same logs, and starts the writer thread.
    pub fn open(path: impl AsRef<Path>, options: DataDirOptions) -> Result<DataDir> {
        let path = path.as_ref().to_path_buf();
        create_dir_durable(&path)?;
        let lock_path = path.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .ctx(|| format!("open {}", lock_path.display()))?;
        rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive)
            .map_err(|_| StorageError::Locked(path.clone()))?;
        let trash = Arc::new(Trash::open(&path)?);
        let (tx, rx) = mpsc::channel();
        let faults = Arc::new(DiskFaults::new());
        let space = Arc::new(SpaceGuard::new(path.clone(), options.min_free_bytes));
        let pool = match options.sync_threads {
            0 => None,
            n => Some(SyncPool::start(n, faults.clone())?),
        };
        let writer = Writer {
            pool,
            seals_pending: 0,
            rx,
            faults: faults.clone(),
            preallocate_bytes: options.preallocate_bytes,
            options,
            logs: Vec::new(),
            group: Vec::new(),
            group_bytes: 0,
            group_appends: 0,
            next_interval_sync: None,
            trash: trash.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("cairn-storage-writer".into())
            .spawn(move || writer.run())
            .ctx(|| "spawn storage writer thread".into())?;
        Ok(DataDir {
            path,
            tx,
            thread: Mutex::new(Some(thread)),
            open_logs: Mutex::new(HashSet::new()),
            lock: Mutex::new(Some(lock)),
            faults,
            space,
            trash,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The disk faults injected into this directory's writer.
    pub fn faults(&self) -> &Arc<DiskFaults> {
        &self.faults
    }

    /// The free-space reserve client writes are checked against.
    pub fn space(&self) -> &SpaceGuard {
        &self.space
    }

    /// Opens (creating and recovering as needed) the log in `relative_dir`
    /// below the data directory. A log may be open once at a time.
    pub fn open_log(
        &self,
        relative_dir: impl AsRef<Path>,
        config: LogConfig,
    ) -> Result<PartitionLog> {
        config.validate().map_err(StorageError::InvalidConfig)?;
        let dir = self.path.join(relative_dir);
        if !self.open_logs.lock().insert(dir.clone()) {
            return Err(StorageError::InvalidConfig(format!(
                "log {} is already open",
                dir.display()
            )));
        }
        let opened = PartitionLog::open(&dir, config, self.tx.clone());
        match opened {
            Ok(log) => {
                let _ = self.tx.send(Command::Register {
                    log: log.inner.clone(),
                });
                Ok(log)
            }
            Err(e) => {
                self.open_logs.lock().remove(&dir);
                Err(e)
            }
        }
    }

    /// Opens the log in `relative_dir` like [`DataDir::open_log`]; a log
    /// created by this call starts at log index `first_index` and entry
    /// offset `first_offset` (a snapshot's data being staged continues
    /// another replica's log exactly).
    pub fn open_log_at(
        &self,
        relative_dir: impl AsRef<Path>,
        config: LogConfig,
        first_index: u64,
        first_offset: u64,
    ) -> Result<PartitionLog> {
        let dir = self.path.join(relative_dir.as_ref());
        if !dir.exists() {
            create_dir_durable(&dir)?;
            create_segment(&dir, first_index, first_offset)?;
            fsync_dir(&dir)?;
        }
        self.open_log(relative_dir, config)
    }

    /// Syncs and closes a log; further appends to it fail with `Closed`.
    pub fn close_log(&self, log: &PartitionLog) -> Result<()> {
        self.finish_log(log, false)
    }

    /// Closes a log and deletes its directory with all its data.
    pub fn remove_log(&self, log: &PartitionLog) -> Result<()> {
        self.finish_log(log, true)
    }

    fn finish_log(&self, log: &PartitionLog, delete: bool) -> Result<()> {
        let (reply, rx) = mpsc::channel();
        self.tx
            .send(Command::Close {
                log: log.inner.clone(),
                delete,
                reply,
            })
            .map_err(|_| StorageError::WriterStopped)?;
        let result = rx.recv().unwrap_or(Err(StorageError::WriterStopped));
        self.open_logs.lock().remove(log.dir());
        result
    }

    /// Makes everything appended to every log durable and stops the writer.
    /// Appends submitted afterwards fail with `WriterStopped`.
    pub fn shutdown(&self) -> Result<()> {
        let Some(thread) = self.thread.lock().take() else {
            return Ok(());
        };
        let (reply, rx) = mpsc::channel();
        let result = match self.tx.send(Command::Shutdown { reply }) {
            Ok(()) => rx.recv().unwrap_or(Err(StorageError::WriterStopped)),
            Err(_) => Err(StorageError::WriterStopped),
        };
        let _ = thread.join();
        // No half-deleted log stays behind a stopped data directory.
        self.trash.wait();
        // Every log is synced and the writer is gone: release the lock.
        self.lock.lock().take();
        result
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(path = %self.path.display(), error = %e, "data directory shutdown failed");
        }
    }
}

/// An append as the writer stages it.
struct Staged {
    batch: RecordBatch,
    header: [u8; HEADER_LEN],
    index: u64,
    base_offset: u64,
}

struct Writer {
    rx: mpsc::Receiver<Command>,
    faults: Arc<DiskFaults>,
    options: DataDirOptions,
    /// Set to 0 if the file system cannot preallocate.
    preallocate_bytes: u64,
    logs: Vec<Arc<LogInner>>,
    group: Vec<Arc<LogInner>>,
    group_bytes: usize,
    group_appends: u32,
    next_interval_sync: Option<Instant>,
    trash: Arc<Trash>,
    /// Runs a group's syncs beside this thread, and seals rolled segments;
    /// `None` when `sync_threads` is 0 (everything inline, one after another).
    pool: Option<SyncPool>,
    /// Seal jobs handed to the pool and not yet reported back.
    seals_pending: usize,
}

/// A log whose share of the group is written and awaits its `fdatasync`.
struct Unsynced {
    log: Arc<LogInner>,
    segment: Arc<Segment>,
    write: Duration,
}

enum Flow {
    Continue,
    Stop,
}

impl Writer {
    fn run(mut self) {
        loop {
            let timeout = self
                .next_interval_sync
                .map_or(Duration::from_secs(3600), |t| {
                    t.saturating_duration_since(Instant::now())
                });
            match self.rx.recv_timeout(timeout) {
                Ok(cmd) => {
                    if let Flow::Stop = self.handle(cmd) {
                        return;
                    }
                    while self.group_bytes < self.options.max_group_bytes {
                        let Ok(cmd) = self.rx.try_recv() else { break };
                        if let Flow::Stop = self.handle(cmd) {
                            return;
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.commit();
                    self.wait_seals();
                    // Every handle is gone: nobody is left to hear a failure; the
                    // poisoned log reports itself when reopened.
                    let _ = self.sync_everything();
                    return;
                }
            }
            self.commit();
            if self.next_interval_sync.is_some_and(|t| t <= Instant::now()) {
                self.next_interval_sync = None;
                for log in self.logs.clone() {
                    if log.config.durability == Durability::Interval {
                        let mut st = log.active.lock();
                        sync_if_dirty(&log, &mut st);
                    }
                }
            }
        }
    }

    fn handle(&mut self, cmd: Command) -> Flow {
        if let Command::Append {
            log,
            batch,
            header,
            index,
            base_offset,
            notify,
            enqueued,
        } = cmd
        {
            self.stage(
                log,
                Staged {
                    batch,
                    header,
                    index,
                    base_offset,
                },
                notify,
                enqueued,
            );
            return Flow::Continue;
        }
        // Everything else sees the effect of all appends before it, and
        // finds no seal in flight (truncate, purge, retention, repair and
        // install may delete or rewrite a sealed segment's files).
        self.commit();
        self.wait_seals();
        match cmd {
            Command::Append { .. } => unreachable!("handled above"),
            Command::Register { log } => self.logs.push(log),
            Command::Truncate { log, from, reply } => {
                let mut st = log.active.lock();
                let result = match &st.poisoned {
                    Some(reason) => Err(poisoned(&log, reason)),
                    None => truncate(&log, &mut st, from),
                };
                if let Err(e) = &result {
                    // The segment files may be half done: refuse further
                    // writes until a reopen recovers from what is on disk.
                    if !matches!(e, StorageError::InvalidRequest { .. }) && st.poisoned.is_none() {
                        poison(&log, &mut st, e.to_string());
                    }
                }
                log.reset_head(&st);
                let _ = reply.send(result);
            }
            Command::Purge { log, upto, reply } => {
                let mut st = log.active.lock();
                let result = match &st.poisoned {
                    Some(reason) => Err(poisoned(&log, reason)),
                    None => purge(&log, &mut st, upto),
                };
                if let Err(e) = &result
                    && st.poisoned.is_none()
                {
                    poison(&log, &mut st, e.to_string());
                }
                log.reset_head(&st);
                let _ = reply.send(result);
            }
            Command::Repair {
                log,
                batches,
                reply,
            } => {
                let mut st = log.active.lock();
                let result = match &st.poisoned {
                    Some(reason) => Err(poisoned(&log, reason)),
                    None => crate::repair::repair(&log, &mut st, batches),
                };
                if let Err(e) = &result {
                    // A refusal changed nothing; anything else may have left
                    // files half rewritten: reopen to recover.
                    if !matches!(e, StorageError::InvalidRequest { .. }) && st.poisoned.is_none() {
                        poison(&log, &mut st, e.to_string());
                    }
                }
                // No `reset_head`: unlike truncate and purge, a repair runs
                // while appends flow, and those already stamped and queued
                // behind it own the indexes after the writer's head. A
                // repair never moves the log's end.
                let _ = reply.send(result);
            }
            Command::Retention {
                log,
                now_us,
                delete,
                gone_upto,
                reply,
            } => {
                let _ = reply.send(self.retention(&log, now_us, delete, gone_upto));
            }
            Command::Install {
                log,
                staged,
                mode,
                reply,
            } => {
                let mut st = log.active.lock();
                let result = match &st.poisoned {
                    Some(reason) => Err(poisoned(&log, reason)),
                    None => crate::install::install(&log, &mut st, &staged, mode),
                };
                if let Err(e) = &result
                    && !matches!(e, StorageError::InvalidRequest { .. })
                    && st.poisoned.is_none()
                {
                    poison(&log, &mut st, e.to_string());
                }
                log.reset_head(&st);
                let _ = reply.send(result);
            }
            Command::Sync { log, reply } => {
                let mut st = log.active.lock();
                sync_if_dirty(&log, &mut st);
                let result = match &st.poisoned {
                    Some(reason) => Err(poisoned(&log, reason)),
                    None => Ok(()),
                };
                let _ = reply.send(result);
            }
            Command::Close { log, delete, reply } => {
                let _ = reply.send(self.close(&log, delete));
            }
            Command::Shutdown { reply } => {
                let result = self.sync_everything();
                let _ = reply.send(result);
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    fn stage(&mut self, log: Arc<LogInner>, item: Staged, notify: Notify, enqueued: Instant) {
        let picked = Instant::now();
        let mut st = log.active.lock();
        if let Some(reason) = &st.poisoned {
            notify.send(Err(poisoned(&log, reason)));
            return;
        }
        let Staged {
            batch,
            header,
            index,
            base_offset,
        } = item;
        let term = cairn_types::batch::BatchHeader::parse(&header).map_or(0, |h| h.epoch);
        if index != st.next_index && may_restart_at(&log, &st, index) {
            // A log holding nothing (or only purged entries) starts wherever
            // its next entry is: after a purge, or a follower's first append.
            self.flush(&log, &mut st);
            // It deletes the old segments: no seal may still be writing
            // their index files. Waited for without this log's lock: a
            // failed seal poisons its log, which may be this one.
            drop(st);
            self.wait_seals();
            st = log.active.lock();
            if st.poisoned.is_none()
                && let Err(e) = restart_at(&log, &mut st, index)
            {
                poison(&log, &mut st, e.to_string());
            }
            if let Some(reason) = &st.poisoned {
                notify.send(Err(poisoned(&log, reason)));
                return;
            }
        }
        if index != st.next_index || base_offset != st.next_offset {
            // Submission stamps batches in order, so this means a truncate or
            // purge raced with appends; the batch is refused, the log is fine.
            let err = StorageError::IndexOutOfSequence {
                path: log.dir.clone(),
                expected: st.next_index,
                got: index,
            };
            notify.send(Err(err));
            log.reset_head(&st);
            return;
        }
        let len = batch.len() as u64;
        let cfg = &log.config;
        if st.end_pos() > 0 && (st.end_pos() + len > cfg.segment_bytes || st.too_old(cfg)) {
            self.flush(&log, &mut st);
            self.roll(&log, &mut st);
            if let Some(reason) = &st.poisoned {
                notify.send(Err(poisoned(&log, reason)));
                return;
            }
        }
        let position = st.end_pos();
        if position == 0 || st.bytes_since_index >= u64::from(cfg.index_interval_bytes) {
            let point = IndexPoint {
                rel_offset: (base_offset - st.segment.base_offset) as u32,
                rel_index: (index - st.segment.base_index) as u32,
                position: position as u32,
                max_ts_before: st.max_ts,
            };
            st.staged_index.push(point);
            st.bytes_since_index = 0;
        }
        st.bytes_since_index += len;
        st.staged.extend_from_slice(&header);
        st.staged.extend_from_slice(batch.payload());
        st.next_offset += u64::from(batch.count());
        st.next_index = index + 1;
        st.last_term = term;
        if batch.count() > 0 {
            st.min_ts = st.min_ts.min(batch.header().min_ts);
            st.max_ts = st.max_ts.max(batch.header().max_ts);
        }
        st.waiters.push(crate::state::Waiter {
            notify,
            info: AppendInfo {
                base_offset,
                count: batch.count(),
                log_index: index,
                timings: crate::log::AppendTimings {
                    queued: picked.saturating_duration_since(enqueued),
                    ..Default::default()
                },
            },
        });
        if !st.in_group {
            st.in_group = true;
            self.group.push(log.clone());
        }
        self.group_bytes += len as usize;
        self.group_appends += 1;
    }

    /// Writes, syncs and publishes every log of the current group: each
    /// log's share is written first, then the logs that sync on every
    /// append are synced side by side (see `sync_group`).
    fn commit(&mut self) {
        self.reap_seals();
        let group = std::mem::take(&mut self.group);
        let group_size = self.group_appends.max(1);
        let mut unsynced = Vec::new();
        for log in group {
            let mut st = log.active.lock();
            st.in_group = false;
            let Some(write) = self.write_staged(&log, &mut st) else {
                continue;
            };
            if log.config.durability == Durability::Fsync {
                let segment = st.segment.clone();
                drop(st);
                unsynced.push(Unsynced {
                    log,
                    segment,
                    write,
                });
            } else {
                self.owe_sync(&log, &mut st);
                publish(&mut st, write, Duration::ZERO, group_size);
            }
        }
        self.sync_group(&unsynced, group_size);
        self.group_bytes = 0;
        self.group_appends = 0;
    }

    /// Syncs the written logs of a group and answers each log's appends
    /// once its own sync returned (or poisons it if that failed). With a
    /// pool and more than one log, all but the first go to the pool and
    /// the writer syncs the first itself meanwhile.
    fn sync_group(&mut self, unsynced: &[Unsynced], group_size: u32) {
        let pool = match &self.pool {
            Some(pool) if unsynced.len() > 1 => pool,
            _ => {
                for u in unsynced {
                    let synced = sync_segment(&self.faults, &u.segment);
                    finish_sync(u, synced, group_size);
                }
                return;
            }
        };
        for (slot, u) in unsynced.iter().enumerate().skip(1) {
            pool.submit(Job::Sync {
                slot,
                segment: u.segment.clone(),
            });
        }
        let synced = sync_segment(&self.faults, &unsynced[0].segment);
        finish_sync(&unsynced[0], synced, group_size);
        let mut left = unsynced.len() - 1;
        while left > 0 {
            match pool.recv() {
                Some(Done::Sync { slot, result }) => {
                    finish_sync(&unsynced[slot], result, group_size);
                    left -= 1;
                }
                Some(Done::Seal { log, result }) => {
                    sealed(&log, result);
                    self.seals_pending -= 1;
                }
                None => unreachable!("the sync pool lives as long as the writer"),
            }
        }
    }

    /// Writes one log's staged bytes, syncs them if its policy says so,
    /// publishes the new end to readers and answers the waiting appends.
    /// For a single log outside a group's commit (before a roll).
    fn flush(&mut self, log: &LogInner, st: &mut ActiveState) {
        let Some(write) = self.write_staged(log, st) else {
            return;
        };
        let group_size = self.group_appends.max(1);
        if log.config.durability != Durability::Fsync {
            self.owe_sync(log, st);
            publish(st, write, Duration::ZERO, group_size);
            return;
        }
        match sync_segment(&self.faults, &st.segment) {
            Ok(sync) => publish(st, write, sync, group_size),
            Err(e) => poison(log, st, e.to_string()),
        }
    }

    /// Writes one log's staged bytes with one `pwrite` and moves its write
    /// position past them; readers see nothing of them until `publish`.
    /// Returns how long the write took, or `None` when there was nothing to
    /// write or the write failed (the log is then poisoned).
    fn write_staged(&mut self, log: &LogInner, st: &mut ActiveState) -> Option<Duration> {
        if st.staged.is_empty() {
            return None;
        }
        let started = Instant::now();
        pause(self.faults.write_delay());
        let end = st.end_pos();
        let written = self.ensure_allocated(st, end).and_then(|()| {
            st.segment
                .file
                .write_all_at(&st.staged, st.write_pos)
                .ctx(|| format!("write {}", st.segment.path.display()))
        });
        if let Err(e) = written {
            poison(log, st, e.to_string());
            return None;
        }
        st.write_pos = end;
        st.allocated = st.allocated.max(end);
        st.staged.clear();
        if st.staged.capacity() > 4 << 20 {
            st.staged.shrink_to(1 << 20);
        }
        Some(started.elapsed())
    }

    /// Notes that a log with a lazy policy has unsynced bytes.
    fn owe_sync(&mut self, log: &LogInner, st: &mut ActiveState) {
        st.dirty = true;
        if log.config.durability == Durability::Interval && self.next_interval_sync.is_none() {
            self.next_interval_sync = Some(Instant::now() + self.options.sync_interval);
        }
    }

    /// Takes in the seals the pool finished meanwhile, without waiting.
    fn reap_seals(&mut self) {
        if self.seals_pending == 0 {
            return;
        }
        let Some(pool) = &self.pool else { return };
        while let Some(done) = pool.try_recv() {
            match done {
                Done::Seal { log, result } => {
                    sealed(&log, result);
                    self.seals_pending -= 1;
                }
                Done::Sync { .. } => unreachable!("no sync is in flight outside sync_group"),
            }
        }
    }

    /// Waits until every seal handed to the pool has finished.
    fn wait_seals(&mut self) {
        let Some(pool) = &self.pool else { return };
        while self.seals_pending > 0 {
            match pool.recv() {
                Some(Done::Seal { log, result }) => {
                    sealed(&log, result);
                    self.seals_pending -= 1;
                }
                Some(Done::Sync { .. }) => unreachable!("no sync is in flight outside sync_group"),
                None => unreachable!("the sync pool lives as long as the writer"),
            }
        }
    }

    /// Grows the active segment's preallocated region to cover `end`.
    fn ensure_allocated(&mut self, st: &mut ActiveState, end: u64) -> Result<()> {
        if self.preallocate_bytes == 0 || end <= st.allocated {
            return Ok(());
        }
        let new_len = end.div_ceil(self.preallocate_bytes) * self.preallocate_bytes;
        match rustix::fs::fallocate(
            &st.segment.file,
            FallocateFlags::empty(),
            st.allocated,
            new_len - st.allocated,
        ) {
            Ok(()) => {
                st.allocated = new_len;
                Ok(())
            }
            Err(rustix::io::Errno::OPNOTSUPP) | Err(rustix::io::Errno::NOSYS) => {
                tracing::info!("file system cannot preallocate; segments grow with each write");
                self.preallocate_bytes = 0;
                Ok(())
            }
            Err(e) => Err(e).ctx(|| format!("preallocate {}", st.segment.path.display())),
        }
    }

    /// Starts a new segment at the next offset and seals the old one: on
    /// the pool when there is one, so appends to every log of the data
    /// directory need not wait for its index files. Expects nothing staged.
    fn roll(&mut self, log: &Arc<LogInner>, st: &mut ActiveState) {
        let old = match roll_start(log, st) {
            Ok(old) => old,
            Err(e) => return poison(log, st, e.to_string()),
        };
        match &self.pool {
            Some(pool) => {
                pool.submit(Job::Seal {
                    log: log.clone(),
                    segment: old,
                });
                self.seals_pending += 1;
            }
            None => {
                if let Err(e) = seal(&old) {
                    poison(log, st, e.to_string());
                }
            }
        }
    }

    fn retention(
        &mut self,
        log: &Arc<LogInner>,
        now_us: i64,
        delete: bool,
        gone_upto: Option<u64>,
    ) -> Result<RetentionOutcome> {
        let mut st = log.active.lock();
        if let Some(reason) = &st.poisoned {
            return Err(poisoned(log, reason));
        }
        crate::retention::run(log, &mut st, now_us, delete, gone_upto)
    }

    fn close(&mut self, log: &Arc<LogInner>, delete: bool) -> Result<()> {
        self.logs.retain(|l| !Arc::ptr_eq(l, log));
        let mut st = log.active.lock();
        let result = if delete {
            // Unlinking a big log takes long: every other log's appends
            // would wait (see `trash`).
            self.trash.discard(&log.dir)
        } else {
            sync_if_dirty(log, &mut st);
            Ok(())
        };
        if st.poisoned.is_none() {
            st.poisoned = Some("closed".into());
        }
        result
    }

    fn sync_everything(&mut self) -> Result<()> {
        let mut first_error = None;
        for log in &self.logs {
            let mut st = log.active.lock();
            sync_if_dirty(log, &mut st);
            if let (Some(reason), None) = (&st.poisoned, &first_error) {
                first_error = Some(poisoned(log, reason));
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// True when the log may continue at `index` instead of its next index:
/// it holds no batch at all, or only purged ones and `index` is after the
/// purge point.
pub(crate) fn may_restart_at(log: &LogInner, st: &ActiveState, index: u64) -> bool {
    if st.end_pos() == 0 && log.segments.read().len() == 1 {
        return true;
    }
    log.purged
        .read()
        .is_some_and(|p| st.next_index <= p.index + 1 && index > p.index)
}

/// Replaces every segment by one empty segment starting at log index
/// `index`, keeping the offset the log continues at. Only for a log whose
/// entries are all purged (or that has none). Expects nothing staged.
fn restart_at(log: &LogInner, st: &mut ActiveState, index: u64) -> Result<()> {
    debug_assert!(st.staged.is_empty());
    let segment = create_segment(&log.dir, index, st.next_offset)?;
    let old: Vec<Arc<Segment>> = log.segments.read().values().cloned().collect();
    log.segments
        .write()
        .insert(segment.base_index, segment.clone());
    fsync_dir(&log.dir)?;
    for seg in old {
        delete_segment(log, &seg)?;
    }
    fsync_dir(&log.dir)?;
    st.replace(
        segment.clone(),
        &crate::segment::SegmentMeta::empty(segment.base_index, segment.base_offset),
        0,
    );
    Ok(())
}

/// Deletes every entry at index `from` and after. See the module docs.
fn truncate(log: &LogInner, st: &mut ActiveState, from: u64) -> Result<()> {
    debug_assert!(st.staged.is_empty(), "truncate with staged bytes");
    if from >= st.next_index {
        return Ok(());
    }
    let segments: Vec<Arc<Segment>> = log.segments.read().values().cloned().collect();
    let first = segments[0].base_index;
    if from < first {
        return Err(StorageError::InvalidRequest {
            path: log.dir.clone(),
            reason: format!("cannot truncate at index {from}: the log starts at {first}"),
        });
    }
    // The segment that keeps a prefix: the last one starting before `from`
    // (or the first one, cut to nothing).
    let keep = segments.partition_point(|s| s.base_index < from).max(1) - 1;
    let mut deleted = false;
    for seg in segments[keep + 1..].iter().rev() {
        delete_segment(log, seg)?;
        deleted = true;
    }
    if deleted {
        fsync_dir(&log.dir)?;
    }
    let target = segments[keep].clone();
    let cut = {
        let meta = target.meta.read().clone();
        if from <= target.base_index {
            0
        } else if from >= meta.next_index {
            meta.len
        } else {
            let start = meta.position_for_index(target.base_index, from);
            let mut cursor = BatchCursor::new(&target.file, start, meta.len);
            let mut cut = None;
            while let Some(item) = cursor.next_batch() {
                let batch = item.map_err(|e| crate::state::cursor_error(&target.path, e))?;
                if batch.log_index() >= from {
                    cut = Some(cursor.position() - batch.len() as u64);
                    break;
                }
            }
            cut.unwrap_or(meta.len)
        }
    };
    remove_index_files(&target.path)?;
    target
        .file
        .set_len(cut)
        .and_then(|()| target.file.sync_all())
        .ctx(|| format!("truncate {}", target.path.display()))?;
    let outcome = scan_segment(
        &target.file,
        target.base_index,
        target.base_offset,
        log.config.index_interval_bytes,
    )?;
    if let Some((position, reason)) = outcome.stopped {
        return Err(StorageError::Io {
            context: format!(
                "rescan {} after truncating it: stopped at byte {position}: {reason}",
                target.path.display()
            ),
            source: std::io::Error::other("segment does not verify after truncation"),
        });
    }
    *target.meta.write() = outcome.meta.clone();
    // After the new meta is published: a digest scan that began before
    // cannot store what it saw of the old contents.
    target.digest.lock().invalidate();
    st.replace(target, &outcome.meta, outcome.bytes_since_index);
    tracing::debug!(dir = %log.dir.display(), from, "truncated log");
    Ok(())
}

/// Records `upto` as purged and deletes what it covers. See the module docs.
fn purge(log: &LogInner, st: &mut ActiveState, upto: EntryId) -> Result<()> {
    let current = *log.purged.read();
    if current.is_some_and(|p| p.index >= upto.index) {
        return Ok(());
    }
    let path = log.dir.join(PURGED_FILE);
    let json = serde_json::to_vec(&upto).expect("EntryId serializes");
    atomic_write(&path, &json)?;
    *log.purged.write() = Some(upto);
    drop_purged(log, st, upto.index)
}

/// Answers a log's appends once its sync returned, or poisons the log (its
/// appends are refused) if the sync failed.
fn finish_sync(u: &Unsynced, synced: Result<Duration>, group_size: u32) {
    let mut st = u.log.active.lock();
    if st.poisoned.is_some() {
        // A failed seal poisoned it meanwhile and refused its appends.
        return;
    }
    match synced {
        Ok(sync) => publish(&mut st, u.write, sync, group_size),
        Err(e) => poison(&u.log, &mut st, e.to_string()),
    }
}

/// Publishes a log's written (and, per policy, synced) bytes to readers and
/// answers its waiting appends.
fn publish(st: &mut ActiveState, write: Duration, sync: Duration, group_size: u32) {
    {
        let mut meta = st.segment.meta.write();
        meta.len = st.write_pos;
        meta.next_offset = st.next_offset;
        meta.next_index = st.next_index;
        meta.last_term = st.last_term;
        meta.min_ts = st.min_ts;
        meta.max_ts = st.max_ts;
        meta.index.append(&mut st.staged_index);
    }
    for mut w in st.waiters.drain(..) {
        w.info.timings.write = write;
        w.info.timings.sync = sync;
        w.info.timings.group_size = group_size;
        w.notify.send(Ok(w.info));
    }
}

/// Takes in a finished seal: a failure poisons the log, as a failed roll
/// always has (the sealed segment's state on disk is uncertain). Locks the
/// log: the writer calls it holding no log's lock.
fn sealed(log: &LogInner, result: Result<()>) {
    if let Err(e) = result {
        let mut st = log.active.lock();
        if st.poisoned.is_none() {
            poison(log, &mut st, format!("seal after roll: {e}"));
        }
    }
}

fn sync_if_dirty(log: &LogInner, st: &mut ActiveState) {
    if !st.dirty || st.poisoned.is_some() {
        return;
    }
    match st.segment.file.sync_data() {
        Ok(()) => st.dirty = false,
        Err(e) => poison(
            log,
            st,
            format!("fdatasync {}: {e}", st.segment.path.display()),
        ),
    }
}

fn poisoned(log: &LogInner, reason: &str) -> StorageError {
    if reason == "closed" {
        return StorageError::Closed(log.dir.clone());
    }
    StorageError::Poisoned {
        path: log.dir.clone(),
        reason: reason.to_string(),
    }
}

fn poison(log: &LogInner, st: &mut ActiveState, reason: String) {
    tracing::error!(dir = %log.dir.display(), %reason, "log write failed; refusing further appends");
    st.staged.clear();
    st.staged_index.clear();
    for w in st.waiters.drain(..) {
        w.notify.send(Err(poisoned(log, &reason)));
    }
    st.poisoned = Some(reason);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use cairn_types::{BatchBuilder, Entry, Level};

    use super::*;
    use crate::fault::DiskFault;
    use crate::syncpool::inject;

    fn batch(message: &str) -> RecordBatch {
        let mut b = BatchBuilder::new();
        b.push(&Entry {
            timestamp_us: 1,
            level: Level::Info,
            source: "svc".into(),
            message: message.into(),
            attributes: BTreeMap::new(),
        })
        .unwrap();
        b.finish()
    }

    /// Sequentially (no pool) and with the pool: two logs whose appends
    /// share a commit group, one of whose `fdatasync` fails.
    #[test]
    fn a_failed_sync_poisons_its_log_only_and_the_rest_of_its_group_is_acknowledged() {
        for sync_threads in [0, 3] {
            let tmp = tempfile::tempdir().unwrap();
            let options = DataDirOptions {
                sync_threads,
                ..DataDirOptions::default()
            };
            let dir = DataDir::open(tmp.path(), options).unwrap();
            let stall = dir.open_log("stall", LogConfig::default()).unwrap();
            let good = dir.open_log("good", LogConfig::default()).unwrap();
            let bad = dir.open_log("bad", LogConfig::default()).unwrap();
            inject::fail_syncs_under(bad.dir());

            // Hold the writer in a slow sync of another log, so the next two
            // appends queue up behind it and form one group. (Were the
            // writer slower still to get there, all three would share a
            // group, which tests the same.)
            let delay = Duration::from_millis(300);
            dir.faults().set(
                DiskFault {
                    fsync_delay: delay,
                    ..DiskFault::default()
                },
                Duration::from_secs(60),
            );
            let stalled = stall.append(batch("stall"));
            std::thread::sleep(Duration::from_millis(50));
            let good_append = good.append(batch("good"));
            let bad_append = bad.append(batch("bad"));

            let acked = good_append.wait().unwrap();
            assert!(
                acked.timings.group_size >= 2,
                "sync_threads {sync_threads}: the two appends shared a group"
            );
            // The injected delay still applies to each sync, in the pool too.
            assert!(acked.timings.sync >= delay, "{:?}", acked.timings);
            assert!(matches!(
                bad_append.wait(),
                Err(StorageError::Poisoned { .. })
            ));
            stalled.wait().unwrap();
            dir.faults().clear();

            // Only the failed log refuses appends; what was acknowledged
            // is readable.
            assert!(matches!(
                bad.append(batch("after")).wait(),
                Err(StorageError::Poisoned { .. })
            ));
            let next = good.append(batch("after")).wait().unwrap();
            assert_eq!(next.base_offset, acked.next_offset());
            stall.append(batch("after")).wait().unwrap();
            assert_eq!(good.bounds().1, 2, "sync_threads {sync_threads}");
        }
    }

    /// A seal runs on the pool after appends moved on; if it fails, the
    /// log it belongs to is poisoned (as a failed inline roll always was),
    /// no other, and no later than the next command that waits for seals.
    #[test]
    fn a_failed_seal_poisons_its_log_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap();
        let small = LogConfig {
            segment_bytes: 4096,
            ..LogConfig::default()
        };
        let sealing = dir.open_log("sealing", small.clone()).unwrap();
        let other = dir.open_log("other", small).unwrap();
        inject::fail_seals_under(sealing.dir());
        let big = batch(&"x".repeat(1500));
        // Three batches fill a segment: the fourth rolls it.
        for _ in 0..4 {
            let _ = sealing.append(big.clone()).wait();
            other.append(big.clone()).wait().unwrap();
        }
        assert!(matches!(
            sealing.sync().wait(),
            Err(StorageError::Poisoned { .. })
        ));
        assert!(matches!(
            sealing.append(big.clone()).wait(),
            Err(StorageError::Poisoned { .. })
        ));
        other.sync().wait().unwrap();
        other.append(big).wait().unwrap();
    }
}
