//! Running out of file descriptors for a moment must not fail storage
//! operations that open files (a segment roll, an atomic metadata write):
//! they retry, and succeed once descriptors are free again.
//!
//! One test per file on purpose: it lowers the process's descriptor limit
//! and exhausts it, which would disturb other tests in the same process.

mod common;

use std::fs::File;
use std::thread;
use std::time::{Duration, Instant};

use cairn_storage::{DataDir, DataDirOptions};
use cairn_types::Level;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Opens `/dev/null` until the process is out of descriptors.
fn exhaust() -> Vec<File> {
    let mut hoard = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(f) => hoard.push(f),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::MFILE.raw_os_error()) => {
                return hoard;
            }
            Err(e) => panic!("unexpected error while exhausting descriptors: {e}"),
        }
    }
}

#[test]
fn storage_rides_out_a_moment_without_file_descriptors() {
    let limit = getrlimit(Resource::Nofile);
    // Low, so exhausting it is quick; the hard limit stays as it was.
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(512),
            maximum: limit.maximum,
        },
    )
    .expect("lower the descriptor limit");

    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open(dir.path(), DataDirOptions::default()).unwrap();
    let log = data.open_log("p0", common::small_segments()).unwrap();
    let entries: Vec<_> = (0..10)
        .map(|i| common::entry(i, Level::Info, "svc", "x".repeat(300)))
        .collect();
    let segments_before = log.stats().segments;

    let hoard = exhaust();
    assert!(
        File::open("/dev/null").is_err(),
        "descriptors are exhausted"
    );
    // Both need new descriptors: appends past 8 KiB roll to a new segment
    // file (and write its index files); the atomic write creates a temp file.
    let appender = {
        let log = log.clone();
        let batch = common::batch(&entries);
        thread::spawn(move || {
            for _ in 0..4 {
                log.append(batch.clone()).wait()?;
            }
            Ok::<_, cairn_storage::StorageError>(())
        })
    };
    let meta = dir.path().join("meta.json");
    let writer = {
        let meta = meta.clone();
        thread::spawn(move || cairn_storage::atomic_write(&meta, b"{}"))
    };
    thread::sleep(Duration::from_millis(400));
    let released = Instant::now();
    drop(hoard);

    appender
        .join()
        .unwrap()
        .expect("appends succeed once descriptors are back");
    writer
        .join()
        .unwrap()
        .expect("the atomic write succeeds once descriptors are back");
    assert!(released.elapsed() < Duration::from_secs(2));
    assert_eq!(std::fs::read(&meta).unwrap(), b"{}");
    assert!(log.stats().segments > segments_before, "the log rolled");
    // Not poisoned: it keeps taking appends.
    log.append(common::batch(&entries)).wait().unwrap();
    assert!(cairn_storage::fsutil::transient_retries() > 0);
    data.shutdown().unwrap();
}
