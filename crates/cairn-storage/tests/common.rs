//! Helpers shared by the storage integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use cairn_storage::{LogConfig, PartitionLog};
use cairn_types::{BatchBuilder, Entry, Level, RecordBatch};

pub fn entry(ts: i64, level: Level, source: &str, message: String) -> Entry {
    Entry {
        timestamp_us: ts,
        level,
        source: source.to_string(),
        message,
        attributes: BTreeMap::new(),
    }
}

pub fn batch(entries: &[Entry]) -> RecordBatch {
    let mut b = BatchBuilder::new();
    for e in entries {
        b.push(e).unwrap();
    }
    b.finish()
}

/// Every entry at or after `from`, with its offset.
pub fn read_all(log: &PartitionLog, from: u64) -> cairn_storage::Result<Vec<(u64, Entry)>> {
    let mut out = Vec::new();
    log.scan_from(from, |b| {
        for item in b.entries() {
            let (offset, e) = item.expect("verified batch decodes");
            if offset >= from {
                out.push((offset, e.to_owned()));
            }
        }
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

/// Small segments and index intervals, so a few batches roll segments.
pub fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 8192,
        index_interval_bytes: 512,
        ..LogConfig::default()
    }
}

/// Appends `batches` batches of 10 entries; entry n has timestamp n * 1000
/// and message "m{n}-ppp…".
pub fn fill(log: &PartitionLog, batches: u64) {
    for b in 0..batches {
        let entries: Vec<_> = (0..10)
            .map(|i| {
                let n = b * 10 + i;
                entry(
                    n as i64 * 1000,
                    Level::Info,
                    "svc",
                    format!("m{n}-{}", "p".repeat(60)),
                )
            })
            .collect();
        log.append(batch(&entries)).wait().unwrap();
    }
}
