//! The free-space reserve of a data directory.
//!
//! A log store that fills its disk to the last byte cannot compact, write
//! metadata or repair, and a write that fails half way on `ENOSPC` leaves
//! its caller unsure what was stored. So a data directory keeps a reserve:
//! new client writes are refused up front — nothing written, a clear
//! "insufficient storage" — once the filesystem's free bytes (as an
//! unprivileged user sees them, `statvfs` `f_bavail`) fall below
//! [`DataDirOptions::min_free_bytes`](crate::DataDirOptions). Replication,
//! compaction and repair go on inside the reserve. Writes resume by
//! themselves as soon as space is freed: nothing is latched.
//!
//! Checking costs one `statvfs` at most every [`RECHECK`]; in between the
//! last answer is reused (the write path calls this on every batch).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long one measurement of the free space is trusted.
pub const RECHECK: Duration = Duration::from_millis(100);

/// Why a write was refused: the reserve would be eaten into.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "insufficient storage: {free} bytes free on the filesystem of {path}, below the \
     {reserve}-byte reserve (--min-free-bytes); free space or add disk, and writes resume"
)]
pub struct InsufficientStorage {
    pub path: String,
    pub free: u64,
    pub reserve: u64,
}

#[derive(Debug)]
pub struct SpaceGuard {
    path: PathBuf,
    reserve: u64,
    born: Instant,
    /// Free bytes at the last check, and when (ms after `born`, +1; 0 =
    /// never).
    free: AtomicU64,
    checked_ms: AtomicU64,
}

impl SpaceGuard {
    pub fn new(path: PathBuf, reserve: u64) -> SpaceGuard {
        SpaceGuard {
            path,
            reserve,
            born: Instant::now(),
            free: AtomicU64::new(u64::MAX),
            checked_ms: AtomicU64::new(0),
        }
    }

    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    /// Free bytes on the filesystem, at most [`RECHECK`] old. `u64::MAX`
    /// when the filesystem cannot be asked (writes are then not refused:
    /// the reserve is a safety margin, not a gate on an unknown).
    pub fn free_bytes(&self) -> u64 {
        let now = self.born.elapsed().as_millis() as u64 + 1;
        let checked = self.checked_ms.load(Ordering::Relaxed);
        if checked == 0 || now.saturating_sub(checked) >= RECHECK.as_millis() as u64 {
            let free = rustix::fs::statvfs(&self.path)
                .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
                .unwrap_or(u64::MAX);
            self.free.store(free, Ordering::Relaxed);
            self.checked_ms.store(now, Ordering::Relaxed);
            return free;
        }
        self.free.load(Ordering::Relaxed)
    }

    /// Refuses when the free space is below the reserve.
    pub fn check(&self) -> Result<(), InsufficientStorage> {
        if self.reserve == 0 {
            return Ok(());
        }
        let free = self.free_bytes();
        if free < self.reserve {
            return Err(InsufficientStorage {
                path: self.path.display().to_string(),
                free,
                reserve: self.reserve,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_above_the_free_space_refuses_and_zero_never_does() {
        let dir = tempfile::tempdir().unwrap();
        let free = SpaceGuard::new(dir.path().into(), 0).free_bytes();
        assert!(free > 0 && free < u64::MAX);
        assert!(SpaceGuard::new(dir.path().into(), 0).check().is_ok());
        assert!(SpaceGuard::new(dir.path().into(), 1).check().is_ok());
        let err = SpaceGuard::new(dir.path().into(), u64::MAX - 1)
            .check()
            .unwrap_err();
        assert_eq!(err.reserve, u64::MAX - 1);
        assert!(err.to_string().contains("insufficient storage"));
    }
}
