//! Model-based property test: random appends, reads (by offset and by time),
//! segment rolls, retention and reopen, checked against a plain `Vec`.

mod common;

use std::ops::ControlFlow;

use cairn_storage::{DataDir, DataDirOptions, Durability, LogConfig, PartitionLog};
use cairn_types::{Entry, Level};
use common::{batch, entry, read_all};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Entries as (timestamp jitter, level, message length).
    Append(Vec<(i64, u8, usize)>),
    Read(u64),
    ReadTime(i64, i64),
    Retention,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec((-50i64..50, 0u8..6, 0usize..300), 1..40).prop_map(Op::Append),
        2 => any::<u64>().prop_map(Op::Read),
        2 => (0i64..20_000, 0i64..5_000).prop_map(|(a, w)| Op::ReadTime(a, a + w)),
        1 => Just(Op::Retention),
        1 => Just(Op::Reopen),
    ]
}

struct Harness {
    _tmp: tempfile::TempDir,
    dir: Option<DataDir>,
    log: Option<PartitionLog>,
    config: LogConfig,
    root: std::path::PathBuf,
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
                    model.extend(entries);
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
                Op::Reopen => h.reopen(),
            }
            let (s, e) = h.log().bounds();
            prop_assert_eq!((s, e), (start, model.len() as u64));
        }
    }
}
