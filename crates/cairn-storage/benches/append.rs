//! Storage append throughput and latency with group commit.
//!
//! `cargo bench -p cairn-storage --bench append` runs every scenario; pass a
//! substring to run only matching ones (`-- 64w`), and `CAIRN_BENCH_SECS` to
//! change the time per scenario (default 3 s). `CAIRN_BENCH_DIR` picks the
//! directory (default: a temp dir under the current directory, so the disk
//! under test is the project's, not tmpfs).
//!
//! The `group` scenarios (issue 15) append 1-entry batches from one writer
//! per partition to 1, 4 and 8 partitions, once per number of sync threads
//! in `CAIRN_BENCH_SYNC_THREADS` (default `0,3`; 0 = the group's syncs one
//! after another on the writer thread), so sequential and concurrent syncs
//! are compared in the same run. The `roll` scenarios use 1 MiB segments,
//! so a partition rolls every ~100 appends and the cost of sealing shows in
//! the tail (p999, max) against the same load without rolls (`noroll`). `atomic-write` times the temp + fsync + rename +
//! directory fsync that each index file of a seal and every `raft.json`
//! rewrite cost on this disk.
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
    sync_threads: usize,
    segment_bytes: u64,
}

impl Scenario {
    fn fsync(name: String, batch: usize, partitions: usize, writers: usize) -> Scenario {
        Scenario {
            name,
            batch,
            partitions,
            writers,
            durability: Durability::Fsync,
            sync_threads: cairn_storage::DEFAULT_SYNC_THREADS,
            segment_bytes: LogConfig::default().segment_bytes,
        }
    }
}

fn run(s: &Scenario, secs: f64, root: &std::path::Path) {
    let tmp = tempfile::tempdir_in(root).unwrap();
    let options = DataDirOptions {
        sync_threads: s.sync_threads,
        ..DataDirOptions::default()
    };
    let dir = DataDir::open(tmp.path(), options).unwrap();
    let config = LogConfig {
        durability: s.durability,
        segment_bytes: s.segment_bytes,
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
        "{:<28} {:>12.0} {:>9.1} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>8.1}",
        s.name,
        entries as f64 / elapsed,
        (appends as f64 * batch_bytes as f64) / elapsed / 1e6,
        appends as f64 / elapsed,
        us(0.5),
        us(0.99),
        us(0.999),
        hist.max() as f64 / 1000.0,
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

    let sync_threads: Vec<usize> = std::env::var("CAIRN_BENCH_SYNC_THREADS")
        .unwrap_or_else(|_| "0,3".into())
        .split(',')
        .map(|t| t.trim().parse().expect("CAIRN_BENCH_SYNC_THREADS: numbers"))
        .collect();

    let mut scenarios = Vec::new();
    for partitions in [1, 8] {
        for batch in [1, 100, 1000] {
            scenarios.push(Scenario::fsync(
                format!("fsync b{batch} p{partitions} w{partitions}"),
                batch,
                partitions,
                partitions,
            ));
        }
    }
    scenarios.push(Scenario::fsync("fsync b1 p8 w64".into(), 1, 8, 64));
    scenarios.push(Scenario::fsync("fsync b1000 p8 w16".into(), 1000, 8, 16));
    scenarios.push(Scenario {
        durability: Durability::None,
        ..Scenario::fsync("none b1000 p1 w1".into(), 1000, 1, 1)
    });
    // Sequential and concurrent syncs side by side, each partition count
    // run once per sync-thread setting before moving on, so drifting disk
    // noise hits both alike.
    for partitions in [1, 4, 8] {
        for &t in &sync_threads {
            scenarios.push(Scenario {
                sync_threads: t,
                ..Scenario::fsync(
                    format!("group b1 p{partitions} w{partitions} t{t}"),
                    1,
                    partitions,
                    partitions,
                )
            });
        }
    }
    // The same load with and without rolls: with one partition a group
    // has one sync, so t0 against t3 isolates sealing on the writer thread
    // against sealing on the pool.
    for partitions in [1, 8] {
        for &t in &sync_threads {
            for (kind, segment_bytes) in [("noroll", 64 << 20), ("roll", 1 << 20)] {
                scenarios.push(Scenario {
                    sync_threads: t,
                    segment_bytes,
                    ..Scenario::fsync(
                        format!("{kind} b100 p{partitions} w{partitions} t{t}"),
                        100,
                        partitions,
                        partitions,
                    )
                });
            }
        }
    }

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
    if selected("atomic-write") {
        atomic_write_cost(&root);
    }
    println!(
        "{:<28} {:>12} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "scenario",
        "entries/s",
        "MB/s",
        "appends/s",
        "p50 µs",
        "p99 µs",
        "p999 µs",
        "max µs",
        "group"
    );
    for s in scenarios.iter().filter(|s| selected(&s.name)) {
        run(s, secs, &root);
    }
}

/// Times `atomic_write` of a `raft.json`-sized file (temp file, fsync,
/// rename, directory fsync): what each index file of a seal and each
/// `raft.json` rewrite cost on this disk, with nothing else running.
fn atomic_write_cost(root: &std::path::Path) {
    let tmp = tempfile::tempdir_in(root).unwrap();
    let path = tmp.path().join("raft.json");
    let body = vec![b'x'; 700];
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    for _ in 0..300 {
        let t = Instant::now();
        cairn_storage::atomic_write(&path, &body).unwrap();
        hist.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "atomic-write (700 B, 300 times): p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        us(0.5),
        us(0.99),
        hist.max() as f64 / 1000.0
    );
}
