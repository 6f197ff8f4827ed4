//! What retention costs per deleted segment.
//!
//! `cargo bench -p cairn-storage --bench retention`. For each segment size,
//! a log of `SEGMENTS` sealed segments is written (not timed), then:
//! - `plan`: planning a cut (`plan_retention`, what every replica runs each
//!   check; reads segment metadata only, deletes nothing);
//! - `purge`: purging one segment at a time up to its last entry (what a
//!   replica runs for a committed cut: `purged.json` written atomically,
//!   the segment and its index files unlinked, the directory synced);
//! - `delete`: the old local retention deleting one segment (no purge
//!   point written), for comparison.
//!
//! `CAIRN_BENCH_DIR` picks the directory (default: a temp dir under the
//! current directory, so the disk under test is the project's).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use cairn_storage::{DataDir, DataDirOptions, EntryId, LogConfig, PartitionLog};
use cairn_types::{BatchBuilder, Entry, Level, RecordBatch};

const SEGMENTS: usize = 12;

fn batch() -> RecordBatch {
    let mut b = BatchBuilder::new();
    for i in 0..1000 {
        b.push(&Entry {
            timestamp_us: 1_700_000_000_000_000 + i,
            level: Level::Info,
            source: "checkout-svc".into(),
            message: "m".repeat(80),
            attributes: BTreeMap::new(),
        })
        .unwrap();
    }
    b.finish()
}

/// A log of `SEGMENTS` sealed segments (and an active one).
fn filled(dir: &DataDir, name: &str, config: LogConfig) -> PartitionLog {
    let log = dir.open_log(name, config).unwrap();
    let b = batch();
    while log.stats().segments <= SEGMENTS {
        log.append(b.clone()).wait().unwrap();
    }
    log
}

/// Base log indexes of the log's segments, in order.
fn segment_bases(dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".log")?;
            stem.split_once('-')?.0.parse().ok()
        })
        .collect();
    v.sort_unstable();
    v
}

fn stats(label: &str, segment_bytes: u64, mut t: Vec<Duration>) {
    t.sort();
    let mean = t.iter().sum::<Duration>() / t.len() as u32;
    println!(
        "{label:<8} segment {:>3} MiB: {} runs, mean {:>8.3} ms, p50 {:>8.3} ms, max {:>8.3} ms",
        segment_bytes >> 20,
        t.len(),
        mean.as_secs_f64() * 1e3,
        t[t.len() / 2].as_secs_f64() * 1e3,
        t[t.len() - 1].as_secs_f64() * 1e3,
    );
}

fn main() {
    let root = std::env::var("CAIRN_BENCH_DIR").unwrap_or_else(|_| ".".into());
    let filter = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    for segment_bytes in [1u64 << 20, 8 << 20, 64 << 20] {
        if filter
            .as_deref()
            .is_some_and(|f| !format!("{}mib", segment_bytes >> 20).contains(f))
        {
            continue;
        }
        let tmp = tempfile::tempdir_in(&root).unwrap();
        let dir = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap();
        let config = LogConfig {
            segment_bytes,
            retention_bytes: Some(segment_bytes),
            ..LogConfig::default()
        };

        // Cuts through purge, one segment each.
        let log = filled(&dir, "purge", config.clone());
        let mut plan = Vec::new();
        for _ in 0..20 {
            let started = Instant::now();
            let outcome = log.plan_retention(i64::MAX, None).wait().unwrap();
            plan.push(started.elapsed());
            assert!(outcome.cut.is_some());
        }
        stats("plan", segment_bytes, plan);
        let bases = segment_bases(&tmp.path().join("purge"));
        let mut purge = Vec::new();
        for next in &bases[1..bases.len() - 1] {
            let upto = EntryId {
                index: next - 1,
                term: 0,
            };
            let started = Instant::now();
            log.purge(upto).wait().unwrap();
            purge.push(started.elapsed());
        }
        assert_eq!(segment_bases(&tmp.path().join("purge")).len(), 2);
        stats("purge", segment_bytes, purge);

        // The old local retention, one segment per run.
        let log = filled(&dir, "delete", config.clone());
        let mut delete = Vec::new();
        loop {
            let before = log.stats().segments;
            let started = Instant::now();
            let outcome = log.enforce_retention(i64::MAX).wait().unwrap();
            let took = started.elapsed();
            if outcome.segments_deleted == 0 {
                break;
            }
            // `retention_bytes` of one segment deletes all but the newest
            // sealed one in the first run: count per segment.
            let per = took / outcome.segments_deleted as u32;
            delete.extend(std::iter::repeat_n(per, outcome.segments_deleted));
            assert!(log.stats().segments < before);
        }
        stats("delete", segment_bytes, delete);
        dir.shutdown().unwrap();
    }
}
