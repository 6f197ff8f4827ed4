//! Storage append throughput and latency with group commit.
//!
//! `cargo bench -p cairn-storage --bench append` runs every scenario; pass a
//! substring to run only matching ones (`-- 64w`), and `CAIRN_BENCH_SECS` to
//! change the time per scenario (default 3 s). `CAIRN_BENCH_DIR` picks the
//! directory (default: a temp dir under the current directory, so the disk
//! under test is the project's, not tmpfs).
//!
//! Each writer is a thread with one append in flight: it appends a batch,
//! waits for the acknowledgement (durable per policy) and appends the next.
//! Batches are built once before the clock starts, so this measures the log,
//! not entry encoding (that is reported separately as `encode`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cairn_storage::{DataDir, DataDirOptions, Durability, LogConfig};
use cairn_types::{BatchBuilder, Entry, Level, RecordBatch};
use hdrhistogram::Histogram;

/// An entry whose encoded form is 100 bytes.
fn entry(i: u64) -> Entry {
    let mut e = Entry {
        timestamp_us: 1_700_000_000_000_000 + i as i64,
        level: Level::Info,
        source: "checkout-svc".into(),
        message: String::new(),
        attributes: BTreeMap::new(),
    };
    let overhead = encoded_len(&e);
    e.message = "m".repeat(100 - overhead);
    e
}

fn encoded_len(e: &Entry) -> usize {
    let mut b = BatchBuilder::new();
    b.push(e).unwrap();
    b.size() - cairn_types::batch::HEADER_LEN
}

fn make_batch(entries: usize) -> RecordBatch {
    let mut b = BatchBuilder::with_capacity(entries * 100);
    for i in 0..entries {
        b.push(&entry(i as u64)).unwrap();
    }
    b.finish()
}

struct Scenario {
    name: String,
    batch: usize,
    partitions: usize,
    writers: usize,
    durability: Durability,
}

fn run(s: &Scenario, secs: f64, root: &std::path::Path) {
    let tmp = tempfile::tempdir_in(root).unwrap();
    let dir = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap();
    let config = LogConfig {
        durability: s.durability,
        ..LogConfig::default()
    };
    let logs: Vec<_> = (0..s.partitions)
        .map(|p| dir.open_log(format!("p{p}"), config.clone()).unwrap())
        .collect();
    let batch = make_batch(s.batch);
    let batch_bytes = batch.len();
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let results: Vec<(u64, Histogram<u64>, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..s.writers)
            .map(|w| {
                let log = logs[w % logs.len()].clone();
                let batch = batch.clone();
                scope.spawn(move || {
                    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
                    let mut appends = 0u64;
                    let mut group_total = 0u64;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        let info = log.append(batch.clone()).wait().unwrap();
                        hist.record(t.elapsed().as_nanos() as u64).unwrap();
                        appends += 1;
                        group_total += u64::from(info.timings.group_size);
                    }
                    (appends, hist, group_total)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    let mut appends = 0;
    let mut group_total = 0;
    for (a, h, g) in &results {
        appends += a;
        hist.add(h).unwrap();
        group_total += g;
    }
    let entries = appends * s.batch as u64;
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{:<28} {:>12.0} {:>9.1} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>8.1}",
        s.name,
        entries as f64 / elapsed,
        (appends as f64 * batch_bytes as f64) / elapsed / 1e6,
        appends as f64 / elapsed,
        us(0.5),
        us(0.99),
        us(0.999),
        group_total as f64 / appends.max(1) as f64,
    );
    drop(logs);
    dir.shutdown().unwrap();
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let secs: f64 = std::env::var("CAIRN_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let root = std::env::var("CAIRN_BENCH_DIR")
        .map_or_else(|_| std::env::current_dir().unwrap(), Into::into);

    let mut scenarios = Vec::new();
    for partitions in [1, 8] {
        for batch in [1, 100, 1000] {
            scenarios.push(Scenario {
                name: format!("fsync b{batch} p{partitions} w{partitions}"),
                batch,
                partitions,
                writers: partitions,
                durability: Durability::Fsync,
            });
        }
    }
    scenarios.push(Scenario {
        name: "fsync b1 p8 w64".into(),
        batch: 1,
        partitions: 8,
        writers: 64,
        durability: Durability::Fsync,
    });
    scenarios.push(Scenario {
        name: "fsync b1000 p8 w16".into(),
        batch: 1000,
        partitions: 8,
        writers: 16,
        durability: Durability::Fsync,
    });
    scenarios.push(Scenario {
        name: "none b1000 p1 w1".into(),
        batch: 1000,
        partitions: 1,
        writers: 1,
        durability: Durability::None,
    });

    let selected =
        |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    if selected("encode") {
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed() < Duration::from_secs(1) {
            std::hint::black_box(make_batch(1000));
            n += 1000;
        }
        println!(
            "encode: {:.0} entries/s (100-byte entries, 1000 per batch)",
            n as f64 / t.elapsed().as_secs_f64()
        );
    }
    println!(
        "{:<28} {:>12} {:>9} {:>10} {:>9} {:>9} {:>9} {:>8}",
        "scenario", "entries/s", "MB/s", "appends/s", "p50 µs", "p99 µs", "p999 µs", "group"
    );
    for s in scenarios.iter().filter(|s| selected(&s.name)) {
        run(s, secs, &root);
    }
}
