//! Small, careful file-system helpers.
//!
//! # Transient errors
//! Running out of file descriptors (`EMFILE`, `ENFILE`) or of disk space
//! (`ENOSPC`) says nothing about the file at hand: another part of the
//! process (a flood of client connections) or of the host may give them
//! back a moment later. Under a partition's Raft log such an error is
//! fatal — openraft stops the group's core on any storage error — so the
//! operations that need a *new* descriptor or new blocks outside the
//! segment data path (opening a segment, `fsync` of a directory, the
//! atomic metadata write) retry those errors with backoff for up to
//! [`TRANSIENT_RETRY_BUDGET`] before failing. Each attempt starts over,
//! so a retry never builds on a half-done one. Writes of segment data are
//! not retried here: after a failed `fdatasync` the page cache cannot be
//! trusted, so the writer poisons the log instead (see `writer`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{IoContext, Result};

/// How long one file operation keeps retrying a transient error. Long
/// enough to ride out a burst (connections being closed by the node's
/// timeouts and caps), short enough that the data directory's single
/// writer thread, which waits meanwhile, is not stalled for long.
pub const TRANSIENT_RETRY_BUDGET: Duration = Duration::from_secs(2);

/// First and largest pause between attempts.
const RETRY_FIRST_PAUSE: Duration = Duration::from_millis(5);
const RETRY_MAX_PAUSE: Duration = Duration::from_millis(200);

/// Attempts that failed transiently and were retried, process-wide.
static TRANSIENT_RETRIES: AtomicU64 = AtomicU64::new(0);

/// True for errors that mean "short of a resource right now" rather than
/// "this file or disk is broken": out of file descriptors or of space.
pub fn is_transient(e: &io::Error) -> bool {
    use rustix::io::Errno;
    e.raw_os_error().is_some_and(|n| {
        let n = Errno::from_raw_os_error(n);
        n == Errno::MFILE || n == Errno::NFILE || n == Errno::NOSPC
    })
}

/// File operations retried after a transient error since the process
/// started (for telemetry).
pub fn transient_retries() -> u64 {
    TRANSIENT_RETRIES.load(Ordering::Relaxed)
}

/// Runs `op` until it succeeds, fails with a non-transient error, or
/// [`TRANSIENT_RETRY_BUDGET`] has passed. Blocks the calling thread while
/// it waits: call it where blocking is expected (the writer thread, the
/// blocking pool).
pub fn retry_transient<T>(
    what: impl Fn() -> String,
    op: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    retry_transient_for(TRANSIENT_RETRY_BUDGET, what, op)
}

pub(crate) fn retry_transient_for<T>(
    budget: Duration,
    what: impl Fn() -> String,
    mut op: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    let started = Instant::now();
    let mut pause = RETRY_FIRST_PAUSE;
    let mut attempts = 0u32;
    loop {
        match op() {
            Ok(v) => {
                if attempts > 0 {
                    tracing::info!(what = %what(), attempts, "file operation succeeded after transient errors");
                }
                return Ok(v);
            }
            Err(e) if is_transient(&e) && started.elapsed() + pause <= budget => {
                if attempts == 0 {
                    tracing::warn!(what = %what(), error = %e, "transient file-system error; retrying");
                }
                attempts += 1;
                TRANSIENT_RETRIES.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(pause);
                pause = (pause * 2).min(RETRY_MAX_PAUSE);
            }
            Err(e) => return Err(e),
        }
    }
}

/// The directory holding `path`'s entry (`.` for a bare relative name,
/// whose `parent()` is the empty path).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes a directory entry change (create, rename, unlink) durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let what = || format!("fsync directory {}", dir.display());
    retry_transient(what, || File::open(dir).and_then(|d| d.sync_all())).ctx(what)
}

/// Replaces `path` with `bytes` atomically: either the old or the new
/// content survives a crash, never a mix. Writes a temp file, fsyncs it,
/// renames it over `path`, then fsyncs the directory. Transient errors
/// (see the module docs) restart the whole sequence, for a bounded time.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent_dir(path);
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    // Which step failed, for the message (the error itself stays the OS
    // error, so its errno can be judged).
    let step = std::cell::Cell::new("create");
    let attempt = || -> io::Result<()> {
        step.set("create");
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        step.set("write");
        f.write_all(bytes)?;
        step.set("fsync");
        f.sync_all()?;
        drop(f);
        step.set("rename");
        fs::rename(&tmp, path)?;
        step.set("fsync the directory of");
        File::open(dir).and_then(|d| d.sync_all())
    };
    retry_transient(|| format!("write {}", path.display()), attempt)
        .ctx(|| format!("{} {}", step.get(), tmp.display()))
}

/// Creates `dir` (and parents) and makes its entry durable in its parent.
pub fn create_dir_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).ctx(|| format!("create directory {}", dir.display()))?;
    fsync_dir(parent_dir(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_relative_name_syncs_the_current_directory() {
        assert_eq!(parent_dir(Path::new("data")), Path::new("."));
        assert_eq!(parent_dir(Path::new("a/b")), Path::new("a"));
        assert_eq!(parent_dir(Path::new("/x")), Path::new("/"));
    }

    fn emfile() -> io::Error {
        io::Error::from_raw_os_error(rustix::io::Errno::MFILE.raw_os_error())
    }

    #[test]
    fn transient_errors_are_retried_until_the_operation_succeeds() {
        let mut calls = 0;
        let result = retry_transient(
            || "test".into(),
            || {
                calls += 1;
                if calls < 4 { Err(emfile()) } else { Ok(calls) }
            },
        );
        assert_eq!(result.unwrap(), 4);
    }

    #[test]
    fn other_errors_fail_at_once_and_transient_ones_after_the_budget() {
        let mut calls = 0;
        let result: io::Result<()> = retry_transient(
            || "test".into(),
            || {
                calls += 1;
                Err(io::Error::from(io::ErrorKind::PermissionDenied))
            },
        );
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(calls, 1);

        let started = Instant::now();
        let result: io::Result<()> = retry_transient_for(
            Duration::from_millis(100),
            || "test".into(),
            || Err(emfile()),
        );
        assert!(is_transient(&result.unwrap_err()));
        assert!(started.elapsed() <= Duration::from_millis(300));
    }

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.json");
        atomic_write(&path, b"one").unwrap();
        atomic_write(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("meta.json")]);
    }
}
