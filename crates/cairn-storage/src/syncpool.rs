//! The sync pool: a few threads beside a data directory's writer that run
//! the `fdatasync`s of a commit group side by side, and seal rolled
//! segments off the writer's path.
//!
//! A commit group touching several logs owes one `fdatasync` per log. Run
//! one after another on the writer thread they add up (eight partitions
//! cost eight device flushes in a row); the device, though, can work on
//! several flushes at once (virtio and NVMe queues, ext4's journal
//! batching the commits that arrive together), so the writer hands all but
//! one of a group's syncs to this pool, runs the last itself, and answers
//! each log's appends as soon as *its own* sync returns. Why a pool and not
//! a node-wide journal, with the numbers: `docs/design/group-commit.md`.
//!
//! The threads are persistent: spawning threads per group costs more than
//! the flush it would overlap. Jobs go in on one channel, shared by the
//! threads (whichever is free takes the next); results come back on one
//! channel only the writer reads, tagged with the job's slot, so the writer
//! knows exactly which log a success or a failure belongs to.
//!
//! The pool never touches a log's state: a failed sync is reported, and the
//! writer poisons that log (and only it). Injected fsync delays are slept
//! here, per sync, exactly as the writer sleeps them.
//!
//! Sealing a rolled segment (syncing its trimmed size, writing and syncing
//! two index files) is the other job: nothing an append waits for, so the
//! writer hands it over and carries on; see `state::roll_start` for why a
//! crash before it finishes loses nothing.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{IoContext, Result, StorageError};
use crate::fault::{DiskFaults, pause};
use crate::segment::Segment;
use crate::state::{LogInner, seal};

pub(crate) enum Job {
    /// `fdatasync` the segment; `slot` names the log in the writer's group.
    Sync { slot: usize, segment: Arc<Segment> },
    /// Finish the roll of `log` that sealed `segment` (see `state::seal`).
    Seal {
        log: Arc<LogInner>,
        segment: Arc<Segment>,
    },
}

pub(crate) enum Done {
    /// The sync's duration (injected delay included) or why it failed.
    Sync {
        slot: usize,
        result: Result<Duration>,
    },
    Seal {
        log: Arc<LogInner>,
        result: Result<()>,
    },
}

pub(crate) struct SyncPool {
    /// `None` once dropping: closing the channel stops the threads.
    jobs: Option<mpsc::Sender<Job>>,
    done: mpsc::Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
}

impl SyncPool {
    pub fn start(threads: usize, faults: Arc<DiskFaults>) -> Result<SyncPool> {
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let (done_tx, done) = mpsc::channel();
        let mut pool = SyncPool {
            jobs: Some(jobs_tx),
            done,
            threads: Vec::with_capacity(threads),
        };
        for i in 0..threads {
            let jobs = jobs_rx.clone();
            let done = done_tx.clone();
            let faults = faults.clone();
            let thread = std::thread::Builder::new()
                .name(format!("cairn-storage-sync-{i}"))
                .spawn(move || work(&jobs, &done, &faults))
                .ctx(|| "spawn storage sync thread".into())?;
            pool.threads.push(thread);
        }
        Ok(pool)
    }

    pub fn submit(&self, job: Job) {
        // The threads only stop when `jobs` is dropped, and a job that
        // panics is caught, so the channel is open while the pool lives.
        let sent = self.jobs.as_ref().map(|tx| tx.send(job));
        debug_assert!(matches!(sent, Some(Ok(()))), "sync pool stopped");
    }

    /// Waits for the next finished job.
    pub fn recv(&self) -> Option<Done> {
        self.done.recv().ok()
    }

    /// A finished job if one is waiting.
    pub fn try_recv(&self) -> Option<Done> {
        self.done.try_recv().ok()
    }
}

impl Drop for SyncPool {
    fn drop(&mut self) {
        self.jobs.take();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn work(jobs: &Mutex<mpsc::Receiver<Job>>, done: &mpsc::Sender<Done>, faults: &DiskFaults) {
    loop {
        // The lock is held only while waiting for a job, not while running it.
        let Ok(job) = jobs.lock().recv() else { return };
        let answer = match job {
            Job::Sync { slot, segment } => Done::Sync {
                slot,
                result: guarded(&segment, || sync_segment(faults, &segment)),
            },
            Job::Seal { log, segment } => Done::Seal {
                result: guarded(&segment, || seal(&segment)),
                log,
            },
        };
        if done.send(answer).is_err() {
            return;
        }
    }
}

/// Runs `f`, turning a panic into an error: the writer waits for every job
/// it handed out, so each must answer.
fn guarded<T>(segment: &Segment, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(StorageError::Io {
            context: format!("sync {}", segment.path.display()),
            source: std::io::Error::other("sync thread panicked"),
        })
    })
}

/// One `fdatasync` of a segment, after the injected delay if one is in
/// force; returns how long both took.
pub(crate) fn sync_segment(faults: &DiskFaults, segment: &Segment) -> Result<Duration> {
    let started = Instant::now();
    pause(faults.fsync_delay());
    #[cfg(test)]
    if inject::fails(&segment.path) {
        return Err(StorageError::Io {
            context: format!("fdatasync {}", segment.path.display()),
            source: std::io::Error::from_raw_os_error(5),
        });
    }
    segment
        .file
        .sync_data()
        .ctx(|| format!("fdatasync {}", segment.path.display()))?;
    Ok(started.elapsed())
}

/// Failing syncs on purpose: a real `fdatasync` failure needs a failing
/// device, which a unit test cannot have. Keyed by directory so tests
/// running in parallel do not see each other's failures.
#[cfg(test)]
pub(crate) mod inject {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    static FAILING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    static FAILING_SEALS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    /// Every later sync of a segment below `dir` fails with EIO.
    pub fn fail_syncs_under(dir: &Path) {
        FAILING.lock().unwrap().push(dir.to_path_buf());
    }

    /// Every later seal of a segment below `dir` fails with EIO.
    pub fn fail_seals_under(dir: &Path) {
        FAILING_SEALS.lock().unwrap().push(dir.to_path_buf());
    }

    pub(crate) fn fails(path: &Path) -> bool {
        FAILING.lock().unwrap().iter().any(|d| path.starts_with(d))
    }

    pub(crate) fn seal_fails(path: &Path) -> bool {
        FAILING_SEALS
            .lock()
            .unwrap()
            .iter()
            .any(|d| path.starts_with(d))
    }
}
