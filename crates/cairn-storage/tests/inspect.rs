//! Read-only inspection: a healthy log verifies, a flipped byte in a sealed
//! segment and a torn active tail are reported where they are, and nothing
//! on disk changes.

mod common;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use cairn_storage::{DataDir, DataDirOptions, ProblemKind, inspect_log_dir, inspect_path};
use cairn_types::Level;
use common::{batch, entry, fill, small_segments};

/// A closed data directory with log `p` of `batches` batches.
fn build(batches: u64) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap();
    let log = dir.open_log("p", small_segments()).unwrap();
    fill(&log, batches);
    drop(log);
    dir.shutdown().unwrap();
    tmp
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// Every file below `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn given_a_healthy_log_when_inspected_should_count_every_batch_and_find_nothing() {
    let tmp = build(30);
    let log_dir = tmp.path().join("p");
    let before = snapshot(&log_dir);
    let report = inspect_log_dir(&log_dir).unwrap();
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(report.batches(), 30);
    assert!(report.segments.len() > 1, "small segments roll");
    let entries: u64 = report.segments.iter().map(|s| s.entries).sum();
    assert_eq!(entries, 300);

    let first = &report.segments[0];
    assert_eq!((first.base_index, first.base_offset), (0, 0));
    assert_eq!(first.first_index, Some(0));
    assert_eq!(first.min_ts, Some(0));
    let last = report.segments.last().unwrap();
    assert_eq!(last.last_index, Some(29));
    assert_eq!(last.end_offset, 300);
    assert_eq!(last.max_ts, Some(299_000));
    assert!(!last.sealed && last.index_files.is_none());
    for s in &report.segments[..report.segments.len() - 1] {
        let idx = s.index_files.unwrap();
        assert!(
            s.sealed && idx.index && idx.timeindex && idx.current,
            "{s:?}"
        );
        assert_eq!(s.data_bytes, s.size_bytes);
    }
    // Consecutive segments continue each other.
    for pair in report.segments.windows(2) {
        assert_eq!(pair[0].last_index.unwrap() + 1, pair[1].base_index);
        assert_eq!(pair[0].end_offset, pair[1].base_offset);
    }

    // The data directory form finds the same log.
    let whole = inspect_path(tmp.path()).unwrap();
    assert!(whole.is_clean());
    assert_eq!(
        whole.logs.len(),
        0,
        "only controller/log and groups/* count"
    );
    assert_eq!(snapshot(&log_dir), before, "inspection modifies nothing");
}

#[test]
fn given_a_preallocated_active_segment_when_inspected_should_call_the_zero_tail_normal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap();
    let log = dir.open_log("p", small_segments()).unwrap();
    fill(&log, 3);
    // Inspected while open: the active segment still has its zero tail.
    let report = inspect_log_dir(tmp.path().join("p")).unwrap();
    assert!(report.is_clean(), "{report:#?}");
    let seg = &report.segments[0];
    assert_eq!(seg.batches, 3);
    assert_eq!(seg.zero_tail_bytes, seg.size_bytes - seg.data_bytes);
    assert!(seg.zero_tail_bytes > 0, "{seg:?}");
    drop(log);
    dir.shutdown().unwrap();
}

#[test]
fn given_a_flipped_byte_in_a_sealed_segment_when_inspected_should_report_its_position() {
    let tmp = build(30);
    let log_dir = tmp.path().join("p");
    let segs = segments(&log_dir);
    assert!(segs.len() > 2);
    let victim = &segs[1];
    // Flip a payload byte of the third batch of the second segment.
    let (position, batch_len) = {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(victim)
            .unwrap();
        let len_at = |pos: u64| {
            let mut b = [0u8; 4];
            f.read_exact_at(&mut b, pos).unwrap();
            u64::from(u32::from_le_bytes(b))
        };
        let second = len_at(0);
        let third = second + len_at(second);
        (third, len_at(third))
    };
    {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(victim)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, position + 70).unwrap();
        b[0] ^= 0xff;
        f.write_all_at(&b, position + 70).unwrap();
    }
    let before = snapshot(&log_dir);

    let report = inspect_log_dir(&log_dir).unwrap();
    assert!(!report.is_clean());
    let bad: Vec<_> = report
        .segments
        .iter()
        .filter(|s| s.problem.is_some())
        .collect();
    assert_eq!(bad.len(), 1, "{report:#?}");
    let seg = bad[0];
    assert_eq!(seg.file_name, victim.file_name().unwrap().to_str().unwrap());
    let problem = seg.problem.as_ref().unwrap();
    assert_eq!(problem.kind, ProblemKind::Corruption);
    assert_eq!(problem.position, position);
    assert!(problem.reason.contains("checksum"), "{}", problem.reason);
    assert_eq!(problem.next_valid_at, Some(position + batch_len));
    assert_eq!(seg.batches, 2, "the verified prefix");
    assert_eq!(snapshot(&log_dir), before, "inspection modifies nothing");
}

#[test]
fn given_a_torn_tail_when_inspected_should_report_it_as_torn_and_leave_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap();
    let log = dir.open_log("p", small_segments()).unwrap();
    fill(&log, 3);
    let good_len = log.stats().size_bytes;
    drop(log);
    dir.shutdown().unwrap();
    drop(dir);

    // Half a batch after the last one of the active segment, as a write
    // torn by power loss leaves it.
    let seg = segments(&tmp.path().join("p")).pop().unwrap();
    {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&seg)
            .unwrap();
        let torn = batch(&[entry(1, Level::Info, "svc", "torn".into())]).restamped(30, 0, 3);
        f.write_all_at(&torn.as_bytes()[..40], good_len).unwrap();
    }
    let log_dir = tmp.path().join("p");
    let before = snapshot(&log_dir);

    let report = inspect_log_dir(&log_dir).unwrap();
    assert!(!report.is_clean());
    let s = &report.segments[0];
    assert_eq!(s.batches, 3);
    let problem = s.problem.as_ref().expect("torn tail reported");
    assert_eq!(problem.kind, ProblemKind::TornTail, "{problem:?}");
    assert_eq!(problem.position, good_len);
    assert_eq!(problem.next_valid_at, None);
    assert_eq!(snapshot(&log_dir), before, "the torn tail is not cut");
}

#[test]
fn given_a_flipped_byte_early_in_the_active_segment_when_inspected_should_call_it_corruption() {
    let tmp = build(3);
    let log_dir = tmp.path().join("p");
    let seg = segments(&log_dir).pop().unwrap();
    {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&seg)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, 100).unwrap();
        b[0] ^= 0x01;
        f.write_all_at(&b, 100).unwrap();
    }
    let report = inspect_log_dir(&log_dir).unwrap();
    let problem = report.segments[0].problem.as_ref().expect("reported");
    // Valid batches follow the bad one, so this is not a torn write.
    assert_eq!(problem.kind, ProblemKind::Corruption, "{problem:?}");
    assert_eq!(problem.position, 0);
    assert!(problem.next_valid_at.is_some());
}
