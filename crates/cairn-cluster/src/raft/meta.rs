//! `raft.json`: a partition replica's small Raft metadata file.
//!
//! Holds the vote, the committed log id and openraft's purge point (written
//! by the log store), and the last applied log id, the last applied
//! membership, the applied end offset and the retention cut (written by the
//! state machine). Both share one [`MetaFile`], so the
//! file always holds one consistent picture.
//!
//! Every write is atomic (temp file, fsync, rename, fsync directory). The
//! vote is written before `save_vote` returns, as Raft requires. Everything
//! else is a *hint* that only saves work on restart, so it is written lazily:
//! at most once per `flush_interval`, with the next vote, or on an explicit
//! [`MetaFile::flush`]. After a crash the hints may be older than the log:
//! openraft then re-applies committed entries from the older applied id,
//! which for a partition is only bookkeeping.
//!
//! The lazy write is due inside `apply` and `save_committed`, that is on
//! the path of a client's write; since nothing needs the hints durable, it
//! runs in the background ([`MetaFile::flush_in_background`]) and nobody
//! waits for it. One rewrite (two fsyncs) measured 0.9 ms typical on our
//! disk, 12 ms typical and up to 75 ms while it was busy
//! (`docs/PERFORMANCE.md`, issue 15): awaited, it held up every append of
//! that partition once a second. Writes that must
//! be durable before going on (the vote, the purge point, a snapshot's
//! state, shutdown) still await [`MetaFile::flush`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cairn_storage::atomic_write;
use openraft::{LogId, StoredMembership, Vote};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::types::NodeInfo;

pub(crate) const META_FILE: &str = "raft.json";

/// The content of `raft.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftMeta {
    pub vote: Option<Vote<u64>>,
    pub committed: Option<LogId<u64>>,
    pub last_applied: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, NodeInfo>,
    /// Exclusive upper bound of the entry offsets applied (committed).
    pub applied_end_offset: u64,
    /// The last entry retention cut (applied from the leader's `Cut`
    /// entry or a snapshot): every replica keeps data only after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut: Option<LogId<u64>>,
    /// The last entry openraft purged (after a snapshot install it can be
    /// past `cut`: the data the snapshot carried is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_purged: Option<LogId<u64>>,
}

#[derive(Debug)]
struct State {
    meta: RaftMeta,
    /// Bumped on every change; `written` is the version on disk.
    version: u64,
    last_write: Instant,
}

/// The shared, lazily written `raft.json` of one partition replica.
#[derive(Debug)]
pub struct MetaFile {
    path: PathBuf,
    flush_interval: Duration,
    state: Mutex<State>,
    /// Serializes writes, and remembers which version reached the disk, so a
    /// slower writer never replaces newer content with older.
    written: Mutex<u64>,
    /// A background write is queued or running: one is enough, as it
    /// writes whatever is newest when it runs.
    background: AtomicBool,
    /// Background writes spawned and not yet finished (queued ones too),
    /// for [`MetaFile::settle`].
    outstanding: std::sync::atomic::AtomicUsize,
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Write(#[from] cairn_storage::StorageError),
    #[error("raft.json writer task failed: {0}")]
    Task(String),
}

impl MetaFile {
    /// Loads `dir/raft.json`, or starts empty when it does not exist.
    pub fn open(dir: &Path, flush_interval: Duration) -> Result<Arc<MetaFile>, MetaError> {
        let path = dir.join(META_FILE);
        let meta = match std::fs::read(&path) {
            Ok(raw) => serde_json::from_slice(&raw).map_err(|source| MetaError::Parse {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RaftMeta::default(),
            Err(source) => return Err(MetaError::Read { path, source }),
        };
        Ok(Arc::new(MetaFile {
            path,
            flush_interval,
            state: Mutex::new(State {
                meta,
                version: 0,
                last_write: Instant::now(),
            }),
            written: Mutex::new(0),
            background: AtomicBool::new(false),
            outstanding: std::sync::atomic::AtomicUsize::new(0),
        }))
    }

    pub fn get(&self) -> RaftMeta {
        self.state.lock().meta.clone()
    }

    /// Changes the in-memory metadata; returns true when a lazy write is due.
    pub fn update(&self, change: impl FnOnce(&mut RaftMeta)) -> bool {
        let mut st = self.state.lock();
        change(&mut st.meta);
        st.version += 1;
        st.last_write.elapsed() >= self.flush_interval
    }

    /// Writes the current metadata if it changed since the last write, off
    /// the async worker threads. Returns once it is durable.
    pub async fn flush(self: &Arc<Self>) -> Result<(), MetaError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.flush_blocking())
            .await
            .map_err(|e| MetaError::Task(e.to_string()))?
    }

    /// Writes the current metadata like [`MetaFile::flush`], but in the
    /// background: for the lazy hints, which nothing waits for. A failure
    /// is logged; the next due write tries again. Needs a tokio runtime.
    pub fn flush_in_background(self: &Arc<Self>) {
        if self.background.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        tokio::task::spawn_blocking(move || {
            // Cleared before writing: a change after this point may start
            // the next background write, which then waits for `written`.
            this.background.store(false, Ordering::Release);
            if let Err(e) = this.flush_blocking() {
                tracing::warn!(path = %this.path.display(), error = %e, "lazy raft.json write failed; retrying with the next");
            }
            this.outstanding.fetch_sub(1, Ordering::AcqRel);
        });
    }

    /// Waits until no write of this file is queued or running (a
    /// background one started before may still be): before the directory
    /// is deleted, so no temp file lands in it afterwards.
    pub async fn settle(self: &Arc<Self>) {
        while self.outstanding.load(Ordering::Acquire) > 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || drop(this.written.lock())).await;
    }

    /// [`MetaFile::flush`] for a plain thread.
    pub fn flush_blocking(&self) -> Result<(), MetaError> {
        let mut written = self.written.lock();
        let (meta, version) = {
            let mut st = self.state.lock();
            st.last_write = Instant::now();
            (st.meta.clone(), st.version)
        };
        if version <= *written && self.path.exists() {
            return Ok(());
        }
        let json = serde_json::to_vec_pretty(&meta).expect("raft metadata serializes");
        atomic_write(&self.path, &json)?;
        *written = version;
        Ok(())
    }
}
