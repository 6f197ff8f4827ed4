//! Recovery and corruption: torn tails are cut, stale or missing indexes are
//! rebuilt, corrupt sealed data is reported and never served.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use cairn_storage::{DataDir, DataDirOptions, LogConfig, StorageError};
use cairn_types::Level;
use common::{batch, entry, fill, read_all, small_segments};

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// The entry offset a segment starts at: the second part of its name
/// (`{base_index:020}-{base_offset:020}.log`).
fn base_offset_of(segment: &Path) -> u64 {
    let stem = segment.file_stem().unwrap().to_str().unwrap();
    stem.split_once('-').unwrap().1.parse().unwrap()
}

fn check_messages(entries: &[(u64, cairn_types::Entry)]) {
    for (offset, e) in entries {
        assert!(
            e.message.starts_with(&format!("m{offset}-")),
            "offset {offset}: {}",
            e.message
        );
    }
}

#[test]
fn given_a_torn_tail_when_reopened_should_cut_it_and_keep_appending() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap();
    let log = dir.open_log("p", small_segments()).unwrap();
    fill(&log, 3);
    assert_eq!(log.stats().segments, 1);
    let good_len = log.stats().size_bytes;
    drop(log);
    dir.shutdown().unwrap();
    drop(dir);

    // Simulate a write torn by power loss: half a batch, then zeros.
    let seg = segments(&tmp.path().join("p")).pop().unwrap();
    {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&seg)
            .unwrap();
        let one_batch = batch(&[entry(1, Level::Info, "svc", "torn".into())]).restamped(30, 0, 3);
        f.write_all_at(&one_batch.as_bytes()[..30], good_len)
            .unwrap();
    }

    let dir = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap();
    let log = dir.open_log("p", small_segments()).unwrap();
    assert_eq!(log.bounds(), (0, 30));
    assert_eq!(fs::metadata(&seg).unwrap().len(), good_len);
    fill(&log, 1); // messages restart at m0 but offsets continue at 30
    let all = read_all(&log, 0).unwrap();
    assert_eq!(all.len(), 40);
    check_messages(&all[..30]);
}

#[test]
fn given_garbage_after_valid_batches_when_reopened_should_truncate_to_last_valid_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let end;
    {
        let dir = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap();
        let log = dir.open_log("p", small_segments()).unwrap();
        fill(&log, 2);
        end = log.stats().size_bytes;
    }
    let seg = segments(&tmp.path().join("p")).pop().unwrap();
    let mut f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(end).unwrap();
    f.write_all_at(b"\x40\x00\x00\x00garbage that is not a batch", end)
        .unwrap();
    f.flush().unwrap();

    let dir = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap();
    let log = dir.open_log("p", small_segments()).unwrap();
    assert_eq!(log.bounds(), (0, 20));
    check_messages(&read_all(&log, 0).unwrap());
}

#[test]
fn given_a_flipped_byte_in_a_sealed_segment_reads_report_corruption_and_the_rest_stays_readable() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let dir = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap();
        let log = dir.open_log("p", small_segments()).unwrap();
        fill(&log, 40);
    }
    let segs = segments(&tmp.path().join("p"));
    assert!(segs.len() >= 3, "need several segments, got {}", segs.len());
    // Flip one byte in the middle of the second segment.
    let victim = &segs[1];
    let victim_base = base_offset_of(victim);
    let third_base = base_offset_of(&segs[2]);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(victim)
        .unwrap();
    let len = f.metadata().unwrap().len();
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, len / 2).unwrap();
    f.write_all_at(&[byte[0] ^ 0x10], len / 2).unwrap();

    let dir = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap();
    let log = dir.open_log("p", small_segments()).unwrap();
    let err = read_all(&log, victim_base).unwrap_err();
    assert!(matches!(err, StorageError::Corruption { .. }), "{err}");
    // The first segment and everything from the third on are intact.
    let mut first = Vec::new();
    log.scan_from(0, |b| {
        if b.base_offset() >= victim_base {
            return std::ops::ControlFlow::Break(());
        }
        first.extend(b.entries().map(|r| r.unwrap().1.to_owned()));
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(first.len() as u64, victim_base);
    let rest = read_all(&log, third_base).unwrap();
    assert_eq!(rest.len() as u64, 400 - third_base);
    check_messages(&rest);
}

#[test]
fn given_missing_or_stale_index_files_when_reopened_should_rebuild_them() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let dir = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap();
        let log = dir.open_log("p", small_segments()).unwrap();
        fill(&log, 30);
    }
    let pdir = tmp.path().join("p");
    let segs = segments(&pdir);
    assert!(segs.len() >= 3);
    fs::remove_file(segs[0].with_extension("index")).unwrap();
    // A stale index: describes a different segment length.
    fs::copy(
        segs[0].with_extension("timeindex"),
        segs[1].with_extension("timeindex"),
    )
    .unwrap();
    fs::remove_file(segs[0].with_extension("timeindex")).unwrap();

    let dir = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap();
    let log = dir.open_log("p", small_segments()).unwrap();
    let all = read_all(&log, 0).unwrap();
    assert_eq!(all.len(), 300);
    check_messages(&all);
    assert!(
        segs[0].with_extension("index").exists() && segs[0].with_extension("timeindex").exists()
    );
    // Reads from the middle land on the right entry through the rebuilt index.
    let mid = read_all(&log, 155).unwrap();
    assert_eq!(mid[0].0, 155);
}

/// The writer seals a rolled segment (its trimmed size synced, its index
/// files written) on a sync thread after appends have moved on to the next
/// segment. A crash before that leaves sealed segments without index
/// files, still carrying their preallocated zero tail, perhaps with a
/// half-written temp index; nothing acknowledged may be lost.
#[test]
fn given_a_crash_after_rolls_before_sealing_when_reopened_should_keep_every_acknowledged_entry() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let dir = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap();
        let log = dir.open_log("p", small_segments()).unwrap();
        fill(&log, 30);
    }
    let pdir = tmp.path().join("p");
    let segs = segments(&pdir);
    assert!(segs.len() >= 3);
    let sealed = &segs[..segs.len() - 1];
    for seg in sealed {
        fs::remove_file(seg.with_extension("index")).unwrap();
        fs::remove_file(seg.with_extension("timeindex")).unwrap();
        let f = OpenOptions::new().write(true).open(seg).unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len + 64 * 1024).unwrap();
    }
    fs::write(sealed[0].with_extension("index.tmp"), b"CIX2 half").unwrap();

    let dir = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap();
    let log = dir.open_log("p", small_segments()).unwrap();
    let all = read_all(&log, 0).unwrap();
    assert_eq!(all.len(), 300);
    check_messages(&all);
    for seg in sealed {
        assert!(seg.with_extension("index").exists(), "{}", seg.display());
    }
    assert!(!sealed[0].with_extension("index.tmp").exists());
    // The log continues where the acknowledged entries end.
    let info = log
        .append(batch(&[entry(
            300_000,
            Level::Info,
            "svc",
            format!("m300-{}", "p".repeat(60)),
        )]))
        .wait()
        .unwrap();
    assert_eq!(info.base_offset, 300);
}

#[test]
fn retention_by_age_deletes_only_old_whole_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap();
    let config = LogConfig {
        retention_ms: Some(100), // 100 ms = 100_000 µs of entry time
        ..small_segments()
    };
    let log = dir.open_log("p", config).unwrap();
    fill(&log, 40); // timestamps 0..400_000 µs
    let before = log.stats();
    let outcome = log.enforce_retention(300_000).wait().unwrap();
    assert!(outcome.segments_deleted > 0);
    let after = log.stats();
    assert!(after.start_offset > 0 && after.segments < before.segments);
    // Everything at or after 200_000 µs (offset 200) must survive.
    assert!(
        after.start_offset <= 200,
        "deleted too much: start {}",
        after.start_offset
    );
    let rest = read_all(&log, after.start_offset).unwrap();
    assert_eq!(rest.last().unwrap().0, 399);
    assert!(
        read_all(&log, 0).is_err(),
        "offset 0 is gone and must be out of range"
    );
}

#[test]
fn a_second_process_cannot_open_a_locked_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let _dir = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap();
    let err = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap_err();
    assert!(matches!(err, StorageError::Locked(_)));
}

#[test]
fn group_commit_acknowledges_concurrent_appends_from_many_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap();
    let logs: Vec<_> = (0..4)
        .map(|p| dir.open_log(format!("p{p}"), LogConfig::default()).unwrap())
        .collect();
    std::thread::scope(|s| {
        for t in 0..16 {
            let log = logs[t % 4].clone();
            s.spawn(move || {
                for i in 0..50 {
                    log.append(batch(&[entry(i, Level::Info, "s", format!("t{t}-{i}"))]))
                        .wait()
                        .unwrap();
                }
            });
        }
    });
    for log in &logs {
        assert_eq!(log.bounds(), (0, 200));
        let all = read_all(log, 0).unwrap();
        let offsets: Vec<u64> = all.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, (0..200).collect::<Vec<_>>());
    }
}

#[test]
fn given_an_old_active_segment_the_next_append_rolls_to_a_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap();
    let config = LogConfig {
        segment_ms: Some(20),
        ..LogConfig::default()
    };
    let log = dir.open_log("p", config).unwrap();
    fill(&log, 1);
    fill(&log, 1);
    assert_eq!(log.stats().segments, 1, "young segment must not roll");
    std::thread::sleep(std::time::Duration::from_millis(30));
    fill(&log, 1);
    assert_eq!(log.stats().segments, 2);
    assert_eq!(segments(&tmp.path().join("p")).len(), 2);
    assert_eq!(read_all(&log, 0).unwrap().len(), 30);
}

#[test]
fn interval_durability_acknowledges_before_sync_and_syncs_on_close() {
    let tmp = tempfile::tempdir().unwrap();
    let options = DataDirOptions {
        sync_interval: std::time::Duration::from_millis(5),
        ..DataDirOptions::default()
    };
    {
        let dir = DataDir::open(tmp.path(), options.clone()).unwrap();
        let config = LogConfig {
            durability: cairn_storage::Durability::Interval,
            ..LogConfig::default()
        };
        let log = dir.open_log("p", config).unwrap();
        fill(&log, 5);
        let info = log
            .append(batch(&[entry(1, Level::Warn, "svc", "m50-x".into())]))
            .wait()
            .unwrap();
        assert_eq!(info.timings.sync, std::time::Duration::ZERO);
        dir.close_log(&log).unwrap();
        assert!(
            log.append(batch(&[entry(1, Level::Warn, "svc", "late".into())]))
                .wait()
                .is_err()
        );
    }
    let dir = DataDir::open(tmp.path(), options).unwrap();
    let log = dir.open_log("p", LogConfig::default()).unwrap();
    assert_eq!(log.bounds(), (0, 51));
}
