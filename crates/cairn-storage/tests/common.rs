//! Helpers shared by the storage integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use cairn_storage::PartitionLog;
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
