//! Model-based property test: random appends (single-node and Raft style,
//! data and control batches), reads (by offset, by time and by log index),
//! segment rolls, retention, truncation, purging and reopen, checked against
//! plain `Vec`s.

mod common;

use std::ops::ControlFlow;

use cairn_storage::{DataDir, DataDirOptions, Durability, EntryId, LogConfig, PartitionLog};
use cairn_types::{Entry, Level, RecordBatch};
use common::{batch, entry, read_all};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Entries as (timestamp jitter, level, message length).
    Append(Vec<(i64, u8, usize)>),
    Read(u64),
    ReadTime(i64, i64),
    /// A control batch of this many payload bytes, appended as a Raft entry.
    Control(usize),
    /// Log index range, as seeds.
    ReadIndex(u64, u64),
    Truncate(u64),
    /// Purge up to a seed-chosen index, possibly past the last entry.
    Purge(u64),
    Retention,
    Reopen,
}

/// One stored batch as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stored {
    index: u64,
    term: u64,
    base_offset: u64,
    count: u32,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec((-50i64..50, 0u8..6, 0usize..300), 1..40).prop_map(Op::Append),
        2 => any::<u64>().prop_map(Op::Read),
        2 => (0i64..20_000, 0i64..5_000).prop_map(|(a, w)| Op::ReadTime(a, a + w)),
        2 => (0usize..400).prop_map(Op::Control),
        2 => (any::<u64>(), any::<u64>()).prop_map(|(a, b)| Op::ReadIndex(a, b)),
        1 => any::<u64>().prop_map(Op::Truncate),
        1 => any::<u64>().prop_map(Op::Purge),
        1 => Just(Op::Retention),
        1 => Just(Op::Reopen),
    ]
}

struct Harness {
    dir: Option<DataDir>,
    log: Option<PartitionLog>,
    config: LogConfig,
    root: std::path::PathBuf,
    /// Last: fields drop in order, and the data directory's sync pool may
    /// still be sealing a rolled segment (writing its index files) until
    /// the `DataDir` is shut down.
    _tmp: tempfile::TempDir,
}

impl Harness {
    fn open(&mut self) {
        let dir = DataDir::open(&self.root, DataDirOptions::default()).unwrap();
        self.log = Some(dir.open_log("p0", self.config.clone()).unwrap());
        self.dir = Some(dir);
    }

    fn reopen(&mut self) {
        self.log = None;
        self.dir.take().unwrap().shutdown().unwrap();
        self.open();
    }

    fn log(&self) -> &PartitionLog {
        self.log.as_ref().unwrap()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn log_behaves_like_a_vec(ops in proptest::collection::vec(op(), 1..60),
                              durability in prop_oneof![Just(Durability::Fsync), Just(Durability::Interval), Just(Durability::None)],
                              retention_bytes in 4096u64..40_000) {
        let tmp = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 4096,
            index_interval_bytes: 300,
            retention_bytes: Some(retention_bytes),
            durability,
            ..LogConfig::default()
        };
        let mut h = Harness { root: tmp.path().to_path_buf(), _tmp: tmp, dir: None, log: None, config };
        h.open();

        let mut model: Vec<Entry> = Vec::new(); // index = offset
        let mut batches: Vec<Stored> = Vec::new(); // stored batches, in index order
        let mut next_index = 0u64;
        let mut purged: Option<EntryId> = None;
        let mut term = 0u64;
        let mut start = 0u64;
        let mut clock = 0i64;
        for op in ops {
            match op {
                Op::Append(spec) => {
                    let entries: Vec<Entry> = spec.iter().map(|&(jitter, level, len)| {
                        clock += 10;
                        entry((clock + jitter).max(0), Level::from_u8(level).unwrap(), "src",
                              format!("{}:{}", model.len(), "x".repeat(len)))
                    }).collect();
                    let info = h.log().append(batch(&entries)).wait().unwrap();
                    prop_assert_eq!(info.base_offset, model.len() as u64);
                    prop_assert_eq!(info.count as usize, entries.len());
                    prop_assert_eq!(info.log_index, next_index);
                    batches.push(Stored { index: next_index, term: 0, base_offset: info.base_offset, count: info.count });
                    next_index += 1;
                    model.extend(entries);
                }
                Op::Control(len) => {
                    term += 1;
                    let id = EntryId { index: next_index, term };
                    let payload = vec![term as u8; len];
                    let (stamped, pending) = h.log().append_entry(RecordBatch::control(&payload).unwrap(), id).unwrap();
                    let info = pending.wait().unwrap();
                    prop_assert_eq!((info.base_offset, info.count, info.log_index), (model.len() as u64, 0, next_index));
                    prop_assert_eq!((stamped.log_index(), stamped.term()), (next_index, term));
                    // A wrong index is refused at once, naming both.
                    let wrong = EntryId { index: next_index + 2, term };
                    prop_assert!(h.log().append_entry(RecordBatch::control(b"x").unwrap(), wrong).is_err());
                    batches.push(Stored { index: next_index, term, base_offset: info.base_offset, count: 0 });
                    next_index += 1;
                }
                Op::ReadIndex(a, b) => {
                    let (first, end) = h.log().index_bounds();
                    let a = first + a % (end - first + 1);
                    let b = a + b % (end - a + 2);
                    let got: Vec<Stored> = h.log().read_index_range(a..b, usize::MAX).unwrap().iter()
                        .map(|x| Stored { index: x.log_index(), term: x.term(), base_offset: x.base_offset(), count: x.count() })
                        .collect();
                    let want: Vec<Stored> = batches.iter().copied().filter(|s| s.index >= a && s.index < b.min(end)).collect();
                    prop_assert_eq!(got, want);
                }
                Op::Truncate(seed) => {
                    let (first, end) = h.log().index_bounds();
                    let from = first + seed % (end - first + 1);
                    h.log().truncate(from).wait().unwrap();
                    if let Some(pos) = batches.iter().position(|s| s.index >= from) {
                        model.truncate(batches[pos].base_offset as usize);
                        batches.truncate(pos);
                    }
                    next_index = next_index.min(from);
                }
                Op::Purge(seed) => {
                    let low = purged.map_or(0, |p| p.index + 1);
                    let upto = low + seed % (next_index.saturating_sub(low) + 3);
                    let id = EntryId { index: upto, term };
                    h.log().purge(id).wait().unwrap();
                    purged = Some(id);
                    batches.retain(|s| s.index > upto);
                    next_index = next_index.max(upto + 1);
                    let stats = h.log().stats();
                    prop_assert!(stats.start_offset >= start);
                    start = stats.start_offset;
                }
                Op::Read(seed) => {
                    let end = model.len() as u64;
                    let from = start + seed % (end - start + 1);
                    let got = read_all(h.log(), from).unwrap();
                    prop_assert_eq!(got.len() as u64, end - from);
                    for (offset, e) in got {
                        prop_assert_eq!(&e, &model[offset as usize]);
                    }
                    prop_assert!(h.log().scan_from(end + 1, |_| ControlFlow::Continue(())).is_err());
                }
                Op::ReadTime(a, b) => {
                    let mut got = Vec::new();
                    h.log().scan_time(a, b, |batch| {
                        for item in batch.entries() {
                            let (offset, e) = item.unwrap();
                            if (a..=b).contains(&e.timestamp_us) {
                                got.push(offset);
                            }
                        }
                        ControlFlow::Continue(())
                    }).unwrap();
                    let want: Vec<u64> = (start..model.len() as u64)
                        .filter(|&o| (a..=b).contains(&model[o as usize].timestamp_us))
                        .collect();
                    prop_assert_eq!(got, want);
                }
                Op::Retention => {
                    h.log().enforce_retention(i64::MAX / 2).wait().unwrap();
                    let stats = h.log().stats();
                    prop_assert!(stats.start_offset >= start);
                    prop_assert!(stats.size_bytes <= retention_bytes || stats.segments == 1,
                        "{} bytes in {} segments after retention to {}", stats.size_bytes, stats.segments, retention_bytes);
                    start = stats.start_offset;
                }
                Op::Reopen => {
                    h.reopen();
                    // Opening finishes purges: segments holding only purged
                    // entries go, which may move the first readable offset.
                    let stats = h.log().stats();
                    prop_assert!(stats.start_offset >= start);
                    start = stats.start_offset;
                }
            }
            let (s, e) = h.log().bounds();
            prop_assert_eq!((s, e), (start, model.len() as u64));
            // Retention may have dropped whole segments from the front.
            let (first, end) = h.log().index_bounds();
            batches.retain(|s| s.index >= first);
            prop_assert_eq!(end, next_index);
            prop_assert_eq!(h.log().purged(), purged);
            prop_assert_eq!(h.log().last_entry(), batches.last().map(|s| EntryId { index: s.index, term: s.term }));
            prop_assert_eq!(h.log().first_index(), batches.first().map(|s| s.index));
        }
    }
}
