//! Deleting a log directory without holding up the writer.
//!
//! Removing a partition's directory (a stream deleted, a replica moved
//! away, a stale staged snapshot) unlinks every segment file, and freeing
//! gigabytes takes the file system a good part of a second. Done on the
//! writer thread, that stalled every append of every log in the data
//! directory meanwhile. So the writer only **renames** the directory into
//! `.trash/` beside the logs (one directory entry, same file system) and
//! syncs both parents; a background thread deletes it from there. The
//! log's path is free as soon as the rename returns.
//!
//! A crash leaves at most some directories in `.trash/`: opening the data
//! directory deletes whatever is there, in the background too. Shutdown
//! waits for the deletions under way, so a stopped data directory holds no
//! half-deleted files.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use parking_lot::Mutex;

use crate::error::{IoContext, Result};
use crate::fsutil::{create_dir_durable, fsync_dir};

/// The data directory's `.trash/` and the threads deleting from it.
#[derive(Debug)]
pub(crate) struct Trash {
    dir: PathBuf,
    deleting: Mutex<Vec<JoinHandle<()>>>,
    next: AtomicU64,
}

impl Trash {
    /// Opens `root/.trash`, starting the deletion of anything a crash
    /// left there.
    pub(crate) fn open(root: &Path) -> Result<Trash> {
        let dir = root.join(".trash");
        create_dir_durable(&dir)?;
        let trash = Trash {
            dir,
            deleting: Mutex::new(Vec::new()),
            next: AtomicU64::new(0),
        };
        let leftovers: Vec<PathBuf> = fs::read_dir(&trash.dir)
            .ctx(|| format!("list {}", trash.dir.display()))?
            .flatten()
            .map(|e| e.path())
            .collect();
        if !leftovers.is_empty() {
            tracing::info!(dir = %trash.dir.display(), count = leftovers.len(), "deleting what an interrupted deletion left");
            trash.delete_in_background(leftovers);
        }
        Ok(trash)
    }

    /// Moves the directory `path` into the trash (durably) and deletes it
    /// there in the background.
    pub(crate) fn discard(&self, path: &Path) -> Result<()> {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let to = self.dir.join(format!("{name}.{}.{n}", std::process::id()));
        fs::rename(path, &to).ctx(|| format!("move {} to {}", path.display(), to.display()))?;
        if let Some(parent) = path.parent() {
            fsync_dir(parent)?;
        }
        fsync_dir(&self.dir)?;
        self.delete_in_background(vec![to]);
        Ok(())
    }

    fn delete_in_background(&self, paths: Vec<PathBuf>) {
        let delete = move || {
            for path in paths {
                let removed = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                if let Err(e) = removed {
                    tracing::warn!(path = %path.display(), error = %e, "deleting from the trash");
                }
            }
        };
        let mut deleting = self.deleting.lock();
        deleting.retain(|h| !h.is_finished());
        match std::thread::Builder::new()
            .name("cairn-storage-trash".into())
            .spawn(delete)
        {
            Ok(handle) => deleting.push(handle),
            Err(e) => {
                // No thread to be had: the next open deletes it.
                tracing::warn!(error = %e, "cannot start a thread to empty the trash");
            }
        }
    }

    /// Waits until every deletion started so far has finished.
    pub(crate) fn wait(&self) {
        let handles: Vec<JoinHandle<()>> = std::mem::take(&mut *self.deleting.lock());
        for h in handles {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_dir(root: &Path, name: &str) -> PathBuf {
        let dir = root.join("groups").join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("00000000000000000000-00000000000000000000.log"),
            [0u8; 4096],
        )
        .unwrap();
        dir
    }

    #[test]
    fn a_discarded_directory_frees_its_path_at_once_and_is_deleted_in_the_background() {
        let tmp = tempfile::tempdir().unwrap();
        let trash = Trash::open(tmp.path()).unwrap();
        let dir = log_dir(tmp.path(), "a");
        trash.discard(&dir).unwrap();
        assert!(!dir.exists());
        // The same name can be used again right away, and discarded again.
        let again = log_dir(tmp.path(), "a");
        trash.discard(&again).unwrap();
        trash.wait();
        assert_eq!(fs::read_dir(tmp.path().join(".trash")).unwrap().count(), 0);
    }

    #[test]
    fn what_a_crash_left_in_the_trash_is_deleted_after_the_next_open() {
        let tmp = tempfile::tempdir().unwrap();
        let left = log_dir(tmp.path(), "b");
        fs::create_dir_all(tmp.path().join(".trash")).unwrap();
        fs::rename(&left, tmp.path().join(".trash/b.1.0")).unwrap();
        let trash = Trash::open(tmp.path()).unwrap();
        trash.wait();
        assert_eq!(fs::read_dir(tmp.path().join(".trash")).unwrap().count(), 0);
    }
}
