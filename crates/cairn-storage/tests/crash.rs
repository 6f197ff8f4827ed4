//! Crash test: a writer runs in a child process and is killed with SIGKILL at
//! a random moment; after each kill the log is reopened and every append the
//! child saw acknowledged must be present and intact, offsets without holes,
//! and nothing torn may be served.
//!
//! The child is this same test binary, re-run with `--exact crash_child` and
//! the data directory in an environment variable. It prints `ack P END` after
//! each acknowledged append (P = partition, END = next offset).
//!
//! SIGKILL loses the process, not the page cache, so this proves the
//! recovery path and that acknowledgements are never ahead of the log; it
//! cannot prove that fdatasync reached the platter (that needs power loss).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cairn_storage::{DataDir, DataDirOptions, LogConfig};
use cairn_types::Level;
use common::{batch, entry, read_all};
use rand::Rng;

const CHILD_ENV: &str = "CAIRN_CRASH_CHILD_DIR";
const PARTITIONS: u64 = 4;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 32 << 10,
        index_interval_bytes: 1024,
        ..LogConfig::default()
    }
}

/// Entry `offset` of partition `p` always carries the same message, so the
/// parent can check content without knowing what the child wrote.
fn message(p: u64, offset: u64) -> String {
    format!("p{p}-o{offset}-{}", "z".repeat((offset % 50) as usize))
}

#[test]
fn crash_child() {
    let Some(root) = std::env::var_os(CHILD_ENV) else {
        return; // Only does work when started by the parent test.
    };
    let dir = DataDir::open(&root, DataDirOptions::default()).unwrap();
    let stdout = std::sync::Mutex::new(std::io::stdout());
    std::thread::scope(|s| {
        for p in 0..PARTITIONS {
            let log = dir.open_log(format!("p{p}"), config()).unwrap();
            let stdout = &stdout;
            s.spawn(move || {
                let mut rng = rand::rng();
                loop {
                    let (_, end) = log.bounds();
                    let n = rng.random_range(1..20u64);
                    let entries: Vec<_> = (end..end + n)
                        .map(|o| entry(o as i64, Level::Info, "crash", message(p, o)))
                        .collect();
                    let info = log.append(batch(&entries)).wait().unwrap();
                    assert_eq!(info.base_offset, end, "one writer per partition");
                    let mut out = stdout.lock().unwrap();
                    writeln!(out, "ack {p} {}", info.next_offset()).unwrap();
                    out.flush().unwrap();
                }
            });
        }
    });
}

#[test]
fn acknowledged_appends_survive_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rng();
    let mut acked: HashMap<u64, u64> = HashMap::new();
    let rounds = 20;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, tmp.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut parts = line.split_whitespace();
                if parts.next() != Some("ack") {
                    continue;
                }
                let p: u64 = parts.next().unwrap().parse().unwrap();
                let end: u64 = parts.next().unwrap().parse().unwrap();
                if tx.send((p, end)).is_err() {
                    break;
                }
            }
        });
        // Wait for the first ack (the child is running), then kill at a random moment.
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("child acknowledged nothing");
        let kill_at = Instant::now() + Duration::from_millis(rng.random_range(5..150));
        let mut acks = vec![first];
        while Instant::now() < kill_at {
            if let Ok(a) = rx.recv_timeout(Duration::from_millis(1)) {
                acks.push(a);
            }
        }
        // SIGKILL: no destructor, no flush, no shutdown.
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        acks.extend(rx.try_iter());
        for (p, end) in acks {
            let e = acked.entry(p).or_default();
            *e = (*e).max(end);
        }

        let dir = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap();
        for p in 0..PARTITIONS {
            let Ok(log) = dir.open_log(format!("p{p}"), config()) else {
                panic!("round {round}: partition {p} did not reopen");
            };
            let want = acked.get(&p).copied().unwrap_or(0);
            let (start, end) = log.bounds();
            assert_eq!(start, 0);
            assert!(
                end >= want,
                "round {round}: partition {p} ends at {end} but {want} were acknowledged"
            );
            let all = read_all(&log, 0).unwrap();
            assert_eq!(
                all.len() as u64,
                end,
                "round {round}: holes in partition {p}"
            );
            for (i, (offset, e)) in all.iter().enumerate() {
                assert_eq!(*offset, i as u64);
                assert_eq!(
                    e.message,
                    message(p, *offset),
                    "round {round}: partition {p} offset {offset}"
                );
            }
        }
        drop(dir);
    }
    let total: u64 = acked.values().sum();
    assert!(total > 0);
    eprintln!("{rounds} kill -9 rounds, {total} acknowledged entries verified");
}
