//! Injected disk faults on a real data directory: an fsync delay slows the
//! real group commit (and shows in its sync timing), lifts after its TTL or
//! when cleared, and never changes what is stored.

mod common;

use std::time::Duration;

use cairn_storage::{DataDir, DataDirOptions, DiskFault, LogConfig};
use cairn_types::Level;
use common::{batch, entry, read_all};

fn one(n: u64) -> cairn_types::RecordBatch {
    batch(&[entry(n as i64, Level::Info, "s", format!("m{n}"))])
}

#[test]
fn fsync_delay_slows_appends_until_cleared_or_expired() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap();
    let log = dir.open_log("p", LogConfig::default()).unwrap();
    let delay = Duration::from_millis(40);
    dir.faults().set(
        DiskFault {
            fsync_delay: delay,
            ..DiskFault::default()
        },
        Duration::from_secs(60),
    );
    let info = log.append(one(0)).wait().unwrap();
    assert!(
        info.timings.sync >= delay,
        "sync took {:?}",
        info.timings.sync
    );

    assert!(dir.faults().clear());
    let info = log.append(one(1)).wait().unwrap();
    assert!(dir.faults().current().is_none());
    // No lower bound to check here: only that the fault is gone.
    let _ = info;

    dir.faults().set(
        DiskFault {
            write_delay: delay,
            ..DiskFault::default()
        },
        Duration::from_millis(50),
    );
    let info = log.append(one(2)).wait().unwrap();
    assert!(
        info.timings.write >= delay,
        "write took {:?}",
        info.timings.write
    );
    std::thread::sleep(Duration::from_millis(60));
    assert!(dir.faults().current().is_none(), "lifted by its TTL");
    assert_eq!(dir.faults().write_delay(), Duration::ZERO);

    // The delays changed timing only: every entry is stored, in order.
    let stored: Vec<String> = read_all(&log, 0)
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.message)
        .collect();
    assert_eq!(stored, ["m0", "m1", "m2"]);
    dir.close_log(&log).unwrap();
    dir.shutdown().unwrap();
}
