//! Installing a snapshot's data: the segments of a staged log (written by
//! another [`crate::PartitionLog`] from batches fetched from a replica that
//! has them, then closed) moved into a log, in one of two modes
//! ([`InstallMode`]):
//!
//! - **replace**: the staged segments replace every segment of the log
//!   (the log lacked the range, or its tail diverged);
//! - **append**: the staged segments continue the log after its last
//!   entry, which the caller names (the log holds a prefix of the range:
//!   a follower back from an outage fetches only what it lacks). The live
//!   active segment is sealed first and nothing is deleted.
//!
//! The files are moved, never copied, and the steps run on the writer
//! thread, ordered with appends. Crash safety comes from an intent file,
//! `install.json` in the log directory, naming the staged directory, the
//! staged segment files, the purge point and the mode:
//!
//! 1. write `install.json` (atomically);
//! 2. (replace only) delete every live segment that the staged set does
//!    not name;
//! 3. move each staged segment (with its index files) into the log
//!    directory, syncing both directories;
//! 4. (replace only) write `purged.json`, or remove it when the snapshot
//!    has no purge point;
//! 5. remove `install.json`.
//!
//! Opening a log whose directory still holds `install.json` runs steps 2–5
//! again first ([`finish_interrupted`]): every step is idempotent, so a
//! crash anywhere leaves either the old log (before step 1) or the new one.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result, StorageError};
use crate::fsutil::{atomic_write, fsync_dir};
use crate::recover::load_segments;
use crate::segment::{index_paths, parse_segment_name};
use crate::state::{ActiveState, EntryId, LogInner, PURGED_FILE, drop_purged, last_entry, seal};

const INTENT_FILE: &str = "install.json";

/// How staged segments join a log (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallMode {
    /// Replace every segment; the log's purge point becomes `purged`.
    Replace { purged: Option<EntryId> },
    /// Continue the log, whose last entry must be `after`.
    Append { after: EntryId },
}

/// What `install.json` records.
#[derive(Debug, Serialize, Deserialize)]
struct Intent {
    staged: PathBuf,
    /// File names of the staged segments.
    segments: Vec<String>,
    /// The purge point a replace sets (`None`: no purge point).
    purged: Option<EntryId>,
    /// Set for an append: the live log's last entry, which stays.
    #[serde(default)]
    append_after: Option<EntryId>,
}

/// The segment file names in `dir`, in index order.
fn segment_names(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<(u64, String)> = Vec::new();
    for item in fs::read_dir(dir).ctx(|| format!("list {}", dir.display()))? {
        let item = item.ctx(|| format!("list {}", dir.display()))?;
        let name = item.file_name().to_string_lossy().into_owned();
        if let Some((index, _)) = parse_segment_name(&name) {
            names.push((index, name));
        }
    }
    names.sort();
    Ok(names.into_iter().map(|(_, n)| n).collect())
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx(|| format!("delete {}", path.display())),
    }
}

/// Steps 2–5 of the module docs: idempotent.
fn carry_out(dir: &Path, intent: &Intent) -> Result<()> {
    let replace = intent.append_after.is_none();
    for name in segment_names(dir)? {
        if replace && !intent.segments.contains(&name) {
            let path = dir.join(&name);
            let (index, time) = index_paths(&path);
            remove_if_exists(&path)?;
            remove_if_exists(&index)?;
            remove_if_exists(&time)?;
        }
    }
    fsync_dir(dir)?;
    for name in &intent.segments {
        let from = intent.staged.join(name);
        if !from.exists() {
            // Moved before a crash.
            continue;
        }
        let to = dir.join(name);
        let (from_index, from_time) = index_paths(&from);
        let (to_index, to_time) = index_paths(&to);
        for (a, b) in [(&from_index, &to_index), (&from_time, &to_time)] {
            if a.exists() {
                fs::rename(a, b).ctx(|| format!("move {}", a.display()))?;
            } else {
                remove_if_exists(b)?;
            }
        }
        fs::rename(&from, &to).ctx(|| format!("move {}", from.display()))?;
    }
    fsync_dir(dir)?;
    if intent.staged.exists() {
        fsync_dir(&intent.staged)?;
    }
    if replace {
        match &intent.purged {
            Some(purged) => {
                let json = serde_json::to_vec(purged).expect("EntryId serializes");
                atomic_write(&dir.join(PURGED_FILE), &json)?;
            }
            None => {
                remove_if_exists(&dir.join(PURGED_FILE))?;
                fsync_dir(dir)?;
            }
        }
    }
    Ok(())
}

/// Finishes an install a crash interrupted (see the module docs); nothing
/// to do when the directory holds no `install.json`.
pub(crate) fn finish_interrupted(dir: &Path) -> Result<()> {
    let path = dir.join(INTENT_FILE);
    let raw = match fs::read(&path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).ctx(|| format!("read {}", path.display())),
    };
    let intent: Intent = serde_json::from_slice(&raw).map_err(|e| StorageError::Io {
        context: format!("parse {}", path.display()),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    tracing::warn!(dir = %dir.display(), staged = %intent.staged.display(), "finishing a snapshot install a crash interrupted");
    carry_out(dir, &intent)?;
    fs::remove_file(&path).ctx(|| format!("delete {}", path.display()))?;
    fsync_dir(dir)
}

/// Moves the staged segments into `log` per `mode`; see the module docs.
/// Expects nothing staged in the commit group. A staged log that does not
/// fit (nothing staged; for an append, a log that does not end at `after`
/// or staged segments that do not start right after it) is refused with
/// [`StorageError::InvalidRequest`] and changes nothing.
pub(crate) fn install(
    log: &LogInner,
    st: &mut ActiveState,
    staged: &Path,
    mode: InstallMode,
) -> Result<()> {
    debug_assert!(st.staged.is_empty(), "install with staged bytes");
    let segments = segment_names(staged)?;
    let refuse = |reason: String| StorageError::InvalidRequest {
        path: log.dir.clone(),
        reason,
    };
    let Some(first) = segments.first() else {
        return Err(refuse(format!(
            "nothing to install: {} holds no segment",
            staged.display()
        )));
    };
    let (purged, append_after) = match mode {
        InstallMode::Replace { purged } => (purged, None),
        InstallMode::Append { after } => {
            let last = last_entry(log);
            if last != Some(after) {
                return Err(refuse(format!(
                    "cannot append staged segments after {after:?}: the log ends at {last:?}"
                )));
            }
            let base = parse_segment_name(first);
            if base != Some((st.next_index, st.next_offset)) {
                return Err(refuse(format!(
                    "staged segments start at {base:?}, the log continues at ({}, {})",
                    st.next_index, st.next_offset
                )));
            }
            // The active segment becomes a sealed one: durable, trimmed,
            // indexed. An empty one has the first staged segment's name
            // and is replaced by it.
            if st.end_pos() > 0 {
                let active = st.segment.clone();
                if st.allocated > st.write_pos {
                    active
                        .file
                        .set_len(st.write_pos)
                        .ctx(|| format!("trim {}", active.path.display()))?;
                }
                active.digest.lock().refresh_identity(&active.file);
                seal(&active)?;
                st.dirty = false;
            }
            (*log.purged.read(), Some(after))
        }
    };
    let intent = Intent {
        staged: staged.to_path_buf(),
        segments,
        purged,
        append_after,
    };
    let intent_path = log.dir.join(INTENT_FILE);
    atomic_write(
        &intent_path,
        &serde_json::to_vec(&intent).expect("intent serializes"),
    )?;
    if append_after.is_none() {
        // Readers holding the old segments keep reading them through their
        // open handles; from here on, new readers see the new set.
        for seg in log.segments.read().values() {
            seg.digest.lock().invalidate();
        }
    }
    carry_out(&log.dir, &intent)?;
    let (segments, active) = load_segments(&log.dir, &log.config, purged)?;
    *log.segments.write() = segments;
    *log.purged.write() = purged;
    let in_group = st.in_group;
    *st = active;
    st.in_group = in_group;
    if let Some(purged) = purged {
        drop_purged(log, st, purged.index)?;
    }
    fs::remove_file(&intent_path).ctx(|| format!("delete {}", intent_path.display()))?;
    fsync_dir(&log.dir)?;
    tracing::info!(dir = %log.dir.display(), staged = %staged.display(), ?mode, next_index = st.next_index, "installed a snapshot's segments");
    Ok(())
}
