//! Property-based fuzzing of segment recovery: a log's active segment is
//! damaged as a crash or a bad disk might leave it — cut short anywhere,
//! bytes flipped anywhere, garbage appended — and reopened. Recovery must
//! never panic, must keep only entries that were written (a prefix of
//! them, each intact, at its offset: a damaged batch and everything after
//! it are cut), and the log must take appends again.
//!
//! `CAIRN_FUZZ_CASES` sets the number of cases; the default is 100,000.
//! Each case writes, reopens and appends to a segment file, so the cases
//! run in memory (`/dev/shm`) where the machine has it: recovery's logic
//! is under test here, not the disk (the crash tests use real files on
//! disk), and tmpfs makes 100,000 cases affordable in every run.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_storage::{DataDir, DataDirOptions, LogConfig};
use cairn_types::Level;
use common::{batch, entry, fill, read_all};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("CAIRN_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000),
        max_shrink_iters: 1024,
        ..ProptestConfig::default()
    }
}

fn options() -> DataDirOptions {
    // Small files: no preallocation.
    DataDirOptions {
        preallocate_bytes: 0,
        ..DataDirOptions::default()
    }
}

fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 20,
        ..LogConfig::default()
    }
}

/// A template log of 4 batches × 10 entries: its one segment's name and
/// bytes, and its entries.
struct Template {
    name: std::ffi::OsString,
    bytes: Vec<u8>,
    entries: Vec<(u64, cairn_types::Entry)>,
}

fn template(root: &Path) -> Template {
    let dir = DataDir::open(root.join("template"), options()).unwrap();
    let log = dir.open_log("t", log_config()).unwrap();
    fill(&log, 4);
    let entries = read_all(&log, 0).unwrap();
    dir.close_log(&log).unwrap();
    drop(log);
    dir.shutdown().unwrap();
    let seg = std::fs::read_dir(root.join("template/t"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .unwrap();
    Template {
        name: seg.file_name().unwrap().to_owned(),
        bytes: std::fs::read(&seg).unwrap(),
        entries,
    }
}

#[derive(Debug, Clone)]
enum Damage {
    Cut(usize),
    Flip(usize, u8),
    Garbage(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<usize>().prop_map(Damage::Cut),
        (any::<usize>(), 1u8..).prop_map(|(at, x)| Damage::Flip(at, x)),
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(Damage::Garbage),
    ]
}

#[test]
fn damaged_active_segments_recover_to_an_intact_prefix() {
    let shm = std::path::Path::new("/dev/shm");
    let root = if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("cairn-fuzz-recovery")
            .tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .unwrap();
    let t = template(root.path());
    let dir = DataDir::open(root.path().join("cases"), options()).unwrap();
    let case = AtomicU64::new(0);
    let mut runner = proptest::test_runner::TestRunner::new(config());
    runner
        .run(&proptest::collection::vec(damage(), 1..4), |damages| {
            let i = case.fetch_add(1, Ordering::Relaxed);
            let rel = format!("c{i}");
            let path = root.path().join("cases").join(&rel);
            std::fs::create_dir_all(&path).unwrap();
            let mut bytes = t.bytes.clone();
            for d in &damages {
                match d {
                    Damage::Cut(at) => bytes.truncate(at % (bytes.len() + 1)),
                    Damage::Flip(at, x) if !bytes.is_empty() => {
                        let n = bytes.len();
                        bytes[at % n] ^= x;
                    }
                    Damage::Garbage(g) => bytes.extend_from_slice(g),
                    Damage::Flip(..) => {}
                }
            }
            std::fs::write(path.join(&t.name), &bytes).unwrap();

            let log = dir.open_log(&rel, log_config());
            let log = match log {
                Ok(log) => log,
                // Refusing to open is allowed; panicking is not.
                Err(_) => {
                    let _ = std::fs::remove_dir_all(&path);
                    return Ok(());
                }
            };
            let got = read_all(&log, 0).unwrap_or_default();
            prop_assert!(got.len() <= t.entries.len());
            prop_assert_eq!(&got[..], &t.entries[..got.len()]);
            // Still a working log: the next append lands right after.
            let next = got.len() as u64;
            let appended = log
                .append(batch(&[entry(1, Level::Info, "s", "after".into())]))
                .wait();
            if let Ok(a) = appended {
                prop_assert_eq!(a.base_offset, next);
            }
            dir.remove_log(&log).unwrap();
            drop(log);
            let _ = std::fs::remove_dir_all(&path);
            Ok(())
        })
        .unwrap();
    dir.shutdown().unwrap();
}
