//! Installing a snapshot's data: a log behind another replica gets that
//! replica's retained batches, staged in a log of their own, moved in —
//! replacing its segments, or appended after a prefix it already holds;
//! the result holds the same bytes, continues after them, survives a
//! reopen, and an install a crash interrupted is finished on open.

mod common;

use std::fs;
use std::path::Path;

use cairn_storage::{DataDir, DataDirOptions, EntryId, InstallMode, PartitionLog};
use common::{fill, small_segments};

const CUT: u64 = 19;
const END: u64 = 40;

fn segment_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log"))
        .collect();
    v.sort();
    v
}

/// A source log of `END` batches, a target holding 5 other batches, and
/// the source's batches after `CUT` staged in `dst.snap` (closed).
fn setup(data: &DataDir) -> (PartitionLog, PartitionLog) {
    let src = data.open_log("src", small_segments()).unwrap();
    fill(&src, END);
    let dst = data.open_log("dst", small_segments()).unwrap();
    fill(&dst, 5);
    let wanted = src.read_index_range(CUT + 1..END, usize::MAX).unwrap();
    let staged = data
        .open_log_at(
            "dst.snap",
            small_segments(),
            CUT + 1,
            wanted[0].header().base_offset,
        )
        .unwrap();
    for b in &wanted {
        let id = EntryId {
            index: b.log_index(),
            term: b.term(),
        };
        let (stamped, done) = staged.append_entry(b.clone(), id).unwrap();
        assert_eq!(stamped.as_bytes(), b.as_bytes(), "staged copy differs");
        done.wait().unwrap();
    }
    data.close_log(&staged).unwrap();
    (src, dst)
}

/// Leaves in `root` what a crash in the middle of installing `dst.snap`
/// into `dst` leaves: `install.json` (the staged segments, plus `mode`'s
/// fields) written and the first staged segment moved in.
fn crash_mid_install(root: &Path, mode: serde_json::Value) {
    let staged = root.join("dst.snap");
    let names = segment_names(&staged);
    assert!(names.len() > 1, "want several staged segments: {names:?}");
    let mut intent = serde_json::json!({"staged": staged, "segments": names});
    intent
        .as_object_mut()
        .unwrap()
        .extend(mode.as_object().unwrap().clone());
    fs::write(
        root.join("dst/install.json"),
        serde_json::to_vec(&intent).unwrap(),
    )
    .unwrap();
    fs::rename(staged.join(&names[0]), root.join("dst").join(&names[0])).unwrap();
}

fn assert_same_as_source(src: &PartitionLog, dst: &PartitionLog) {
    assert_eq!(dst.index_bounds(), (CUT + 1, END));
    let want = src.read_index_range(CUT + 1..END, usize::MAX).unwrap();
    let got = dst.read_index_range(CUT + 1..END, usize::MAX).unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.as_bytes(), w.as_bytes(), "index {}", w.log_index());
    }
    assert_eq!(dst.bounds().1, src.bounds().1, "end offsets");
}

#[test]
fn installed_segments_replace_the_log_and_it_continues_after_them() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap();
    let (src, dst) = setup(&data);
    dst.install(
        tmp.path().join("dst.snap"),
        InstallMode::Replace {
            purged: Some(EntryId {
                index: CUT,
                term: 0,
            }),
        },
    )
    .wait()
    .unwrap();
    assert_same_as_source(&src, &dst);
    assert!(segment_names(&tmp.path().join("dst.snap")).is_empty());
    assert_eq!(
        dst.purged(),
        Some(EntryId {
            index: CUT,
            term: 0
        })
    );

    // It continues after the installed entries, at the source's offsets.
    let next_offset = src.bounds().1;
    fill(&dst, 1);
    assert_eq!(dst.index_bounds(), (CUT + 1, END + 1));
    assert_eq!(dst.bounds().1, next_offset + 10);

    // And it reopens the same.
    data.close_log(&dst).unwrap();
    let dst = data.open_log("dst", small_segments()).unwrap();
    assert_eq!(dst.index_bounds(), (CUT + 1, END + 1));
    let got = dst.read_index_range(CUT + 1..END, usize::MAX).unwrap();
    assert_eq!(got.len() as u64, END - CUT - 1);
    data.shutdown().unwrap();
}

#[test]
fn an_install_interrupted_by_a_crash_is_finished_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap();
    let (src, dst) = setup(&data);
    data.close_log(&dst).unwrap();
    // The crash: the intent is written and one staged segment moved in;
    // the target's old segments are still there.
    crash_mid_install(
        tmp.path(),
        serde_json::json!({"purged": {"index": CUT, "term": 0}}),
    );

    let dst = data.open_log("dst", small_segments()).unwrap();
    assert_same_as_source(&src, &dst);
    assert!(!tmp.path().join("dst/install.json").exists());
    data.shutdown().unwrap();
}

/// A purge point inside the first segment (a replica whose segments do
/// not line up with the leader's keeps that segment): the log starts at
/// the entry after it all the same — reported, served and scanned.
#[test]
fn a_purge_inside_a_segment_starts_the_log_at_the_next_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap();
    let log = data.open_log("log", small_segments()).unwrap();
    fill(&log, 20);
    let second = segment_names(&tmp.path().join("log"))[1].clone();
    let (second_index, _) = second.split_once('-').unwrap();
    let second_index: u64 = second_index.parse().unwrap();
    assert!(second_index > 3, "want a first segment of several batches");
    let purged = EntryId {
        index: second_index + 1,
        term: 0,
    };
    log.purge(purged).wait().unwrap();
    let check = |log: &PartitionLog| {
        let next = log
            .read_index_range(purged.index + 1..purged.index + 2, 1)
            .unwrap();
        let start = next[0].header().base_offset;
        assert!(start > 0);
        assert_eq!(log.bounds().0, start);
        assert_eq!(log.stats().start_offset, start);
        assert!(
            common::read_all(log, start - 1).is_err(),
            "read below start"
        );
        let from_start = common::read_all(log, start).unwrap();
        assert_eq!(from_start[0].0, start);
        let mut first_scanned = None;
        log.scan_time(i64::MIN, i64::MAX, |b| {
            first_scanned = Some(b.header().base_offset);
            std::ops::ControlFlow::Break(())
        })
        .unwrap();
        assert_eq!(first_scanned, Some(start), "scan by time");
    };
    // The segment holding the purge point is still there.
    assert_eq!(segment_names(&tmp.path().join("log"))[0], second);
    check(&log);
    data.close_log(&log).unwrap();
    let log = data.open_log("log", small_segments()).unwrap();
    check(&log);
    data.shutdown().unwrap();
}

/// Copies `src`'s entries `range` into `log` (a replica's identical log).
fn copy_entries(src: &PartitionLog, log: &PartitionLog, range: std::ops::Range<u64>) {
    for b in src.read_index_range(range, usize::MAX).unwrap() {
        let id = EntryId {
            index: b.log_index(),
            term: b.term(),
        };
        let (stamped, done) = log.append_entry(b.clone(), id).unwrap();
        assert_eq!(stamped.as_bytes(), b.as_bytes(), "copy differs");
        done.wait().unwrap();
    }
}

/// A source log of `END` batches; a target holding its first `HELD`
/// (a follower back from an outage) and the rest staged in `dst.snap`.
fn setup_append(data: &DataDir) -> (PartitionLog, PartitionLog) {
    const HELD: u64 = 23;
    let src = data.open_log("src", small_segments()).unwrap();
    fill(&src, END);
    let dst = data.open_log("dst", small_segments()).unwrap();
    copy_entries(&src, &dst, 0..HELD);
    let first = src.read_index_range(HELD..HELD + 1, 1).unwrap();
    let staged = data
        .open_log_at(
            "dst.snap",
            small_segments(),
            HELD,
            first[0].header().base_offset,
        )
        .unwrap();
    copy_entries(&src, &staged, HELD..END);
    data.close_log(&staged).unwrap();
    (src, dst)
}

fn assert_whole_copy(src: &PartitionLog, dst: &PartitionLog) {
    assert_eq!(dst.index_bounds(), (0, END));
    let want = src.read_index_range(0..END, usize::MAX).unwrap();
    let got = dst.read_index_range(0..END, usize::MAX).unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.as_bytes(), w.as_bytes(), "index {}", w.log_index());
    }
    assert_eq!(dst.bounds(), src.bounds(), "offsets");
}

#[test]
fn staged_segments_append_after_the_prefix_a_log_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap();
    let (src, dst) = setup_append(&data);
    let after = dst.last_entry().unwrap();
    let staged = tmp.path().join("dst.snap");

    // Named wrongly, it is refused and changes nothing.
    let wrong = EntryId {
        index: after.index,
        term: after.term + 1,
    };
    let refused = dst
        .install(&staged, InstallMode::Append { after: wrong })
        .wait();
    assert!(refused.is_err(), "append after a wrong last entry");
    assert_eq!(dst.last_entry(), Some(after));

    dst.install(&staged, InstallMode::Append { after })
        .wait()
        .unwrap();
    assert_whole_copy(&src, &dst);
    assert!(segment_names(&staged).is_empty());
    assert_eq!(dst.purged(), None);

    // It continues after the appended entries, and reopens the same.
    fill(&dst, 1);
    assert_eq!(dst.index_bounds(), (0, END + 1));
    data.close_log(&dst).unwrap();
    let dst = data.open_log("dst", small_segments()).unwrap();
    assert_eq!(dst.index_bounds(), (0, END + 1));
    let got = dst.read_index_range(0..END, usize::MAX).unwrap();
    let want = src.read_index_range(0..END, usize::MAX).unwrap();
    assert!(
        got.iter()
            .zip(&want)
            .all(|(g, w)| g.as_bytes() == w.as_bytes())
    );
    data.shutdown().unwrap();
}

#[test]
fn an_append_install_interrupted_by_a_crash_is_finished_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap();
    let (src, dst) = setup_append(&data);
    let after = dst.last_entry().unwrap();
    let held = segment_names(&tmp.path().join("dst"));
    data.close_log(&dst).unwrap();
    // The crash: the intent is written and one staged segment moved in.
    crash_mid_install(
        tmp.path(),
        serde_json::json!({"purged": null, "append_after": after}),
    );

    let dst = data.open_log("dst", small_segments()).unwrap();
    assert_whole_copy(&src, &dst);
    assert!(!tmp.path().join("dst/install.json").exists());
    let now = segment_names(&tmp.path().join("dst"));
    assert!(
        held.iter().all(|n| now.contains(n)),
        "the held segments stay"
    );
    data.shutdown().unwrap();
}
