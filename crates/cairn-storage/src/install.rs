//! Installing a snapshot's data: a log's segments replaced by those of a
//! staged log (written by another [`crate::PartitionLog`] from batches
//! fetched from a replica that has them, then closed).
//!
//! The files are moved, never copied, and the steps run on the writer
//! thread, ordered with appends. Crash safety comes from an intent file,
//! `install.json` in the log directory, naming the staged directory, the
//! staged segment files and the purge point:
//!
//! 1. write `install.json` (atomically);
//! 2. delete every live segment that the staged set does not name;
//! 3. move each staged segment (with its index files) into the log
//!    directory, syncing both directories;
//! 4. write `purged.json`;
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
use crate::state::{ActiveState, EntryId, LogInner, PURGED_FILE, drop_purged};

const INTENT_FILE: &str = "install.json";

/// What `install.json` records.
#[derive(Debug, Serialize, Deserialize)]
struct Intent {
    staged: PathBuf,
    /// File names of the staged segments.
    segments: Vec<String>,
    purged: EntryId,
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
    for name in segment_names(dir)? {
        if !intent.segments.contains(&name) {
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
    let json = serde_json::to_vec(&intent.purged).expect("EntryId serializes");
    atomic_write(&dir.join(PURGED_FILE), &json)?;
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

/// Replaces `log`'s segments by the staged ones; see the module docs.
/// Expects nothing staged in the commit group.
pub(crate) fn install(
    log: &LogInner,
    st: &mut ActiveState,
    staged: &Path,
    purged: EntryId,
) -> Result<()> {
    debug_assert!(st.staged.is_empty(), "install with staged bytes");
    let segments = segment_names(staged)?;
    if segments.is_empty() {
        return Err(StorageError::InvalidRequest {
            path: log.dir.clone(),
            reason: format!("nothing to install: {} holds no segment", staged.display()),
        });
    }
    let intent = Intent {
        staged: staged.to_path_buf(),
        segments,
        purged,
    };
    let intent_path = log.dir.join(INTENT_FILE);
    atomic_write(
        &intent_path,
        &serde_json::to_vec(&intent).expect("intent serializes"),
    )?;
    // Readers holding the old segments keep reading them through their
    // open handles; from here on, new readers see the new set.
    for seg in log.segments.read().values() {
        seg.digest.lock().invalidate();
    }
    carry_out(&log.dir, &intent)?;
    let (segments, active) = load_segments(&log.dir, &log.config, Some(purged))?;
    *log.segments.write() = segments;
    *log.purged.write() = Some(purged);
    let in_group = st.in_group;
    *st = active;
    st.in_group = in_group;
    drop_purged(log, st, purged.index)?;
    fs::remove_file(&intent_path).ctx(|| format!("delete {}", intent_path.display()))?;
    fsync_dir(&log.dir)?;
    tracing::info!(dir = %log.dir.display(), staged = %staged.display(), ?purged, next_index = st.next_index, "installed a snapshot's segments");
    Ok(())
}
