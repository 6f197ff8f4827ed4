//! Anti-entropy, storage half: Merkle leaf digests that agree across
//! replicas however their segments are split, damage found (and never
//! skipped) when segment files are corrupted, cut or deleted behind the log,
//! and repair from a healthy replica that makes the replicas identical again.

mod common;

use std::fs::{self, OpenOptions};
use std::ops::{ControlFlow, Range};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_storage::{
    DataDir, DataDirOptions, DigestMode, EntryId, LEAF_SPAN, LeafDigests, LogConfig, PartitionLog,
    StorageError,
};
use cairn_types::{Level, RecordBatch};
use common::{batch, entry};

const N: u64 = 700;

/// A config whose segments hold about 20 of our batches.
fn small() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 512,
        ..LogConfig::default()
    }
}

/// One big segment for everything.
fn big() -> LogConfig {
    LogConfig {
        index_interval_bytes: 1024,
        ..LogConfig::default()
    }
}

/// The batch stored at log index `i`: mostly two entries, sometimes a
/// control batch (no offsets), terms rising every 100 entries.
fn batch_for(i: u64) -> (RecordBatch, EntryId) {
    let b = if i % 17 == 5 {
        RecordBatch::control(format!("ctl{i}").as_bytes()).unwrap()
    } else {
        batch(&[
            entry(
                i as i64 * 1000,
                Level::Info,
                "svc",
                format!("m{i}-a-{}", "p".repeat(40)),
            ),
            entry(i as i64 * 1000 + 1, Level::Warn, "svc", format!("m{i}-b")),
        ])
    };
    (
        b,
        EntryId {
            index: i,
            term: 1 + i / 100,
        },
    )
}

/// Appends entries `range` as Raft entries, waiting for all at the end.
fn append_range(log: &PartitionLog, range: Range<u64>) {
    let pending: Vec<_> = range
        .map(|i| {
            let (b, id) = batch_for(i);
            log.append_entry(b, id).unwrap().1
        })
        .collect();
    for p in pending {
        p.wait().unwrap();
    }
}

fn no_throttle() -> impl FnMut(u64) {
    |_| {}
}

fn digests(log: &PartitionLog, range: Range<u64>, mode: DigestMode) -> LeafDigests {
    log.leaf_digests(range, mode, &mut no_throttle()).unwrap()
}

/// The leaves computed straight from the spec over what the log reads back.
fn reference(log: &PartitionLog, range: Range<u64>) -> Vec<[u8; 32]> {
    if range.is_empty() {
        return Vec::new();
    }
    let first = range.start / LEAF_SPAN;
    let last = (range.end - 1) / LEAF_SPAN;
    let mut sums = vec![([0u64; 4], 0u64); (last - first + 1) as usize];
    for b in log.read_index_range(range.clone(), usize::MAX).unwrap() {
        let mut h = blake3::Hasher::new();
        h.update(&b.log_index().to_le_bytes());
        h.update(&b.term().to_le_bytes());
        h.update(&b.header().crc.to_le_bytes());
        h.update(&b.header().batch_len.to_le_bytes());
        let hash = h.finalize();
        let (lanes, count) = &mut sums[(b.log_index() / LEAF_SPAN - first) as usize];
        for (lane, chunk) in lanes.iter_mut().zip(hash.as_bytes().chunks_exact(8)) {
            *lane = lane.wrapping_add(u64::from_le_bytes(chunk.try_into().unwrap()));
        }
        *count += 1;
    }
    sums.iter()
        .enumerate()
        .map(|(k, (lanes, count))| {
            let mut h = blake3::Hasher::new();
            h.update(b"cairn-leaf");
            h.update(&(first + k as u64).to_le_bytes());
            h.update(&count.to_le_bytes());
            for lane in lanes {
                h.update(&lane.to_le_bytes());
            }
            *h.finalize().as_bytes()
        })
        .collect()
}

fn ranges() -> Vec<Range<u64>> {
    vec![
        0..N,
        0..LEAF_SPAN,
        100..600,
        255..257,
        300..301,
        0..2000,
        650..650,
        513..N,
        LEAF_SPAN..2 * LEAF_SPAN,
        10..20,
    ]
}

/// Both logs agree with each other and with the reference, in both modes,
/// with nothing damaged, and read back byte-identical batches.
fn assert_same(a: &PartitionLog, b: &PartitionLog, range: Range<u64>) {
    let want = reference(b, range.clone());
    for mode in [DigestMode::Cached, DigestMode::Deep, DigestMode::Cached] {
        for (name, log) in [("a", a), ("b", b)] {
            let d = digests(log, range.clone(), mode);
            assert_eq!(d.first_leaf, range.start / LEAF_SPAN);
            assert_eq!(d.leaves, want, "{name} {mode:?} {range:?}");
            assert!(d.damaged.is_empty(), "{name} {mode:?}: {:?}", d.damaged);
        }
    }
    let xs = a.read_index_range(range.clone(), usize::MAX).unwrap();
    let ys = b.read_index_range(range, usize::MAX).unwrap();
    assert_eq!(xs.len(), ys.len());
    for (x, y) in xs.iter().zip(&ys) {
        assert_eq!(x.as_bytes(), y.as_bytes(), "index {}", x.log_index());
    }
}

/// A damaged replica `a` (small segments) and a healthy one `b` (one big
/// segment) with the same entries, in one data directory.
struct Pair {
    tmp: tempfile::TempDir,
    dir: Option<DataDir>,
    a: PartitionLog,
    b: PartitionLog,
}

impl Pair {
    fn new(n: u64) -> Pair {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap();
        let a = dir.open_log("a", small()).unwrap();
        let b = dir.open_log("b", big()).unwrap();
        append_range(&a, 0..n);
        append_range(&b, 0..n);
        Pair {
            tmp,
            dir: Some(dir),
            a,
            b,
        }
    }

    fn a_dir(&self) -> PathBuf {
        self.tmp.path().join("a")
    }

    /// Closes everything, runs `f` on the files, and opens again.
    fn reopen_with(&mut self, f: impl FnOnce(&Path)) {
        let dir = self.dir.take().unwrap();
        dir.close_log(&self.a).unwrap();
        dir.close_log(&self.b).unwrap();
        dir.shutdown().unwrap();
        drop(dir);
        f(&self.a_dir());
        let dir = DataDir::open(self.tmp.path(), DataDirOptions::default()).unwrap();
        self.a = dir.open_log("a", small()).unwrap();
        self.b = dir.open_log("b", big()).unwrap();
        self.dir = Some(dir);
    }

    /// `a`'s files verify from end to end: no corrupt bytes, no gaps.
    fn assert_a_files_clean(&self) {
        let report = cairn_storage::inspect_log_dir(self.a_dir()).unwrap();
        assert!(report.is_clean(), "{report:#?}");
    }

    /// Repairs every damaged range of `a` from `b`; returns them.
    fn repair(&self, range: Range<u64>) -> Vec<Range<u64>> {
        let damaged = digests(&self.a, range, DigestMode::Deep).damaged;
        for r in &damaged {
            let batches = self.b.read_index_range(r.clone(), usize::MAX).unwrap();
            assert_eq!(batches.len() as u64, r.end - r.start);
            let outcome = self.a.repair(batches).wait().unwrap();
            assert_eq!(outcome.batches, r.end - r.start);
            assert!(outcome.segments_rewritten >= 1);
        }
        damaged
    }
}

/// Segment files of a log dir, by base index.
fn segment_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .map(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
            (stem.split_once('-').unwrap().0.parse().unwrap(), p)
        })
        .collect();
    v.sort();
    v
}

/// The segment file holding log index `index`, the byte position of its
/// batch there and the batch's length.
fn locate(dir: &Path, index: u64) -> (PathBuf, u64, u64) {
    let files = segment_files(dir);
    let (_, path) = files.iter().rev().find(|(base, _)| *base <= index).unwrap();
    let raw = fs::read(path).unwrap();
    let mut pos = 0usize;
    while pos + 56 <= raw.len() {
        let len = u32::from_le_bytes(raw[pos..pos + 4].try_into().unwrap()) as usize;
        assert!(len >= 56, "ran off the batches in {}", path.display());
        let i = u64::from_le_bytes(raw[pos + 48..pos + 56].try_into().unwrap());
        if i == index {
            return (path.clone(), pos as u64, len as u64);
        }
        pos += len;
    }
    panic!("index {index} not in {}", path.display());
}

/// Flips a payload byte of the batch at `index` through a separate handle.
fn flip(dir: &Path, index: u64) -> PathBuf {
    let (path, pos, len) = locate(dir, index);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let at = pos + 56 + (len - 56) / 2;
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, at).unwrap();
    f.write_all_at(&[byte[0] ^ 0x20], at).unwrap();
    f.sync_all().unwrap();
    path
}

/// mtime only moves once per kernel clock tick: let one pass so a change
/// right after a cached digest is seen as one.
fn next_tick() {
    std::thread::sleep(Duration::from_millis(30));
}

/// The index range a segment file covers (base up to the next file's base).
fn file_range(dir: &Path, path: &Path) -> Range<u64> {
    let files = segment_files(dir);
    let k = files.iter().position(|(_, p)| p == path).unwrap();
    files[k].0..files[k + 1].0
}

fn leaf_of(i: u64) -> usize {
    (i / LEAF_SPAN) as usize
}

#[test]
fn given_same_batches_in_different_segments_digests_are_identical_in_both_modes_and_after_reopen() {
    let mut pair = Pair::new(N);
    assert!(segment_files(&pair.a_dir()).len() > 20);
    assert_eq!(segment_files(&pair.tmp.path().join("b")).len(), 1);
    for r in ranges() {
        assert_same(&pair.a, &pair.b, r);
    }
    let d = digests(&pair.a, 100..600, DigestMode::Cached);
    assert_eq!(d.first_leaf, 0);
    assert_eq!(d.leaves.len(), 3);
    assert!(
        digests(&pair.a, 650..650, DigestMode::Cached)
            .leaves
            .is_empty()
    );
    // Leaves beyond the end exist and are empty.
    let past = digests(&pair.a, 0..2000, DigestMode::Cached);
    assert_eq!(past.leaves.len(), leaf_of(1999) + 1);
    let err = pair
        .a
        .leaf_digests(0..u64::MAX, DigestMode::Cached, &mut no_throttle())
        .unwrap_err();
    assert!(matches!(err, StorageError::InvalidRequest { .. }), "{err}");

    pair.reopen_with(|_| {});
    for r in ranges() {
        assert_same(&pair.a, &pair.b, r);
    }
}

#[test]
fn given_truncate_and_purge_cached_digests_match_a_fresh_computation() {
    let pair = Pair::new(N);
    digests(&pair.a, 0..N, DigestMode::Cached);
    // Raft conflict truncation, then a different suffix (new term) on both.
    for log in [&pair.a, &pair.b] {
        log.truncate(610).wait().unwrap();
        let pending: Vec<_> = (610..660)
            .map(|i| {
                let (b, _) = batch_for(i + 1);
                log.append_entry(b, EntryId { index: i, term: 9 })
                    .unwrap()
                    .1
            })
            .collect();
        pending.into_iter().for_each(|p| {
            p.wait().unwrap();
        });
        log.purge(EntryId { index: 99, term: 1 }).wait().unwrap();
    }
    assert_eq!(pair.a.index_bounds().1, 660);
    for r in [0..660, 0..N, 90..110, 600..660, 256..612] {
        assert_same(&pair.a, &pair.b, r.clone());
    }
    // Purged entries are absent, not damaged.
    let d = digests(&pair.a, 0..200, DigestMode::Deep);
    assert!(d.damaged.is_empty());
    assert_eq!(
        d.leaves,
        reference(&pair.b, 100..200).into_iter().collect::<Vec<_>>()
    );
}

#[test]
fn given_a_flipped_byte_in_a_sealed_segment_cached_digest_notices_and_repair_restores_it() {
    let pair = Pair::new(N);
    let before = digests(&pair.a, 0..N, DigestMode::Cached);
    next_tick();
    let path = flip(&pair.a_dir(), 150);
    assert_ne!(
        segment_files(&pair.a_dir()).last().unwrap().1,
        path,
        "sealed"
    );

    let cached = digests(&pair.a, 0..N, DigestMode::Cached);
    assert_eq!(cached.damaged, vec![150..151]);
    assert_ne!(cached.leaves[0], before.leaves[0]);
    assert_eq!(cached.leaves[1..], before.leaves[1..]);
    assert!(cached.bytes_read > 0 && cached.bytes_read < before.bytes_read);
    let deep = digests(&pair.a, 0..N, DigestMode::Deep);
    assert_eq!(deep.leaves, cached.leaves);
    assert_eq!(deep.damaged, vec![150..151]);
    // Damage clipped to the asked range; a range without it is clean.
    assert_eq!(
        digests(&pair.a, 150..151, DigestMode::Cached).damaged,
        vec![150..151]
    );
    assert!(
        digests(&pair.a, 151..N, DigestMode::Cached)
            .damaged
            .is_empty()
    );
    let err = pair.a.read_index_range(140..160, usize::MAX).unwrap_err();
    assert!(err.is_damage(), "{err}");

    assert_eq!(pair.repair(0..N), vec![150..151]);
    assert_same(&pair.a, &pair.b, 0..N);
    pair.assert_a_files_clean();
    for r in ranges() {
        assert_same(&pair.a, &pair.b, r);
    }
}

#[test]
fn given_a_sealed_segment_cut_short_while_open_digest_reports_it_and_repair_restores_it() {
    let pair = Pair::new(N);
    digests(&pair.a, 0..N, DigestMode::Cached);
    next_tick();
    let (path, pos, _) = locate(&pair.a_dir(), 200);
    let owned = file_range(&pair.a_dir(), &path);
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(pos + 10)
        .unwrap();

    let d = digests(&pair.a, 0..N, DigestMode::Cached);
    assert_eq!(d.damaged, vec![200..owned.end]);
    assert_eq!(digests(&pair.a, 0..N, DigestMode::Deep).damaged, d.damaged);
    let err = pair.a.read_index_range(0..N, usize::MAX).unwrap_err();
    assert!(err.is_damage(), "{err}");
    assert!(matches!(err, StorageError::ShortRead { .. }), "{err}");
    // What the file still holds stays readable.
    assert_eq!(
        pair.a
            .read_index_range(owned.start..200, usize::MAX)
            .unwrap()
            .len() as u64,
        200 - owned.start
    );

    pair.repair(0..N);
    assert_same(&pair.a, &pair.b, 0..N);
    pair.assert_a_files_clean();
    assert!(fs::metadata(&path).unwrap().len() > pos + 10);
}

#[test]
fn given_a_sealed_segment_cut_short_while_closed_the_gap_is_damage_and_repair_fills_it() {
    let mut pair = Pair::new(N);
    let mut cut = 0..0;
    pair.reopen_with(|dir| {
        let (path, pos, _) = locate(dir, 300);
        cut = 300..file_range(dir, &path).end;
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(pos + 100)
            .unwrap();
    });
    let d = digests(&pair.a, 0..N, DigestMode::Cached);
    assert_eq!(d.damaged, vec![cut.clone()]);
    assert_eq!(digests(&pair.a, 0..N, DigestMode::Deep).damaged, d.damaged);

    pair.repair(0..N);
    assert_same(&pair.a, &pair.b, 0..N);
    pair.assert_a_files_clean();
    // The repaired log survives a restart as it is.
    pair.reopen_with(|_| {});
    assert_same(&pair.a, &pair.b, 0..N);
    pair.assert_a_files_clean();
}

#[test]
fn given_a_sealed_segment_deleted_while_open_digest_reports_it_and_repair_recreates_it() {
    let pair = Pair::new(N);
    digests(&pair.a, 0..N, DigestMode::Cached);
    let (path, _, _) = locate(&pair.a_dir(), 400);
    let owned = file_range(&pair.a_dir(), &path);
    fs::remove_file(&path).unwrap();

    let d = digests(&pair.a, 0..N, DigestMode::Cached);
    assert_eq!(d.damaged, vec![owned.clone()]);
    assert_eq!(digests(&pair.a, 0..N, DigestMode::Deep).damaged, d.damaged);

    pair.repair(0..N);
    assert!(path.exists(), "recreated under its own name");
    assert_same(&pair.a, &pair.b, 0..N);
    pair.assert_a_files_clean();
}

#[test]
fn given_a_sealed_segment_deleted_while_closed_the_gap_is_damage_and_repair_recreates_it() {
    let mut pair = Pair::new(N);
    let mut gone = (PathBuf::new(), 0..0);
    pair.reopen_with(|dir| {
        let (path, _, _) = locate(dir, 400);
        gone = (path.clone(), file_range(dir, &path));
        fs::remove_file(&path).unwrap();
    });
    let d = digests(&pair.a, 0..N, DigestMode::Cached);
    assert_eq!(d.damaged, vec![gone.1.clone()]);

    pair.repair(0..N);
    assert!(gone.0.exists(), "recreated under its old name");
    assert_same(&pair.a, &pair.b, 0..N);
    pair.assert_a_files_clean();
    pair.reopen_with(|_| {});
    assert_same(&pair.a, &pair.b, 0..N);
    pair.assert_a_files_clean();
}

#[test]
fn given_damage_in_the_active_segment_repair_rolls_it_and_appends_continue() {
    let pair = Pair::new(N);
    let active = segment_files(&pair.a_dir()).last().unwrap().clone();
    assert!(active.0 < N - 3);
    let victim = N - 2;
    flip(&pair.a_dir(), victim);
    // Only a deep pass re-reads the active segment's old bytes.
    let d = digests(&pair.a, 0..N, DigestMode::Deep);
    assert_eq!(d.damaged, vec![victim..victim + 1]);

    let files_before = segment_files(&pair.a_dir()).len();
    pair.repair(0..N);
    assert_eq!(
        segment_files(&pair.a_dir()).len(),
        files_before + 1,
        "rolled"
    );
    assert_same(&pair.a, &pair.b, 0..N);
    pair.assert_a_files_clean();

    append_range(&pair.a, N..N + 60);
    append_range(&pair.b, N..N + 60);
    assert_eq!(pair.a.index_bounds(), (0, N + 60));
    for r in [0..N + 60, N - 10..N + 60, 600..N + 1] {
        assert_same(&pair.a, &pair.b, r);
    }
}

#[test]
fn given_a_gap_between_segments_scans_fail_with_damage_instead_of_skipping() {
    let mut pair = Pair::new(N);
    let mut gone = 0..0;
    pair.reopen_with(|dir| {
        let (path, _, _) = locate(dir, 400);
        gone = file_range(dir, &path);
        fs::remove_file(&path).unwrap();
    });
    let a = &pair.a;

    let mut seen = Vec::new();
    let err = a
        .scan_index_from(300, |b| {
            seen.push(b.log_index());
            ControlFlow::Continue(())
        })
        .unwrap_err();
    assert!(err.is_damage(), "{err}");
    assert!(
        matches!(err, StorageError::Missing { from_index, to_index, .. }
            if from_index == gone.start && to_index == gone.end),
        "{err}"
    );
    assert_eq!(
        seen,
        (300..gone.start).collect::<Vec<_>>(),
        "nothing skipped"
    );

    let mut last = None;
    let err = a
        .scan_from(0, |b| {
            last = Some(b.log_index());
            ControlFlow::Continue(())
        })
        .unwrap_err();
    assert!(err.is_damage(), "{err}");
    assert!(last.unwrap() < gone.start);

    let err = a.read_index_range(0..N, usize::MAX).unwrap_err();
    assert!(err.is_damage(), "{err}");
    let err = a
        .scan_time(0, i64::MAX, |_| ControlFlow::Continue(()))
        .unwrap_err();
    assert!(err.is_damage(), "{err}");
    // Reads that stay on one side of the gap are fine.
    assert_eq!(
        a.read_index_range(0..gone.start, usize::MAX).unwrap().len() as u64,
        gone.start
    );
    assert_eq!(
        a.read_index_range(gone.end..N, usize::MAX).unwrap().len() as u64,
        N - gone.end
    );
}

#[test]
fn given_batches_that_do_not_splice_repair_refuses_and_changes_nothing() {
    let pair = Pair::new(N);
    let (path, pos, _) = locate(&pair.a_dir(), 150);
    let owned = file_range(&pair.a_dir(), &path);
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(pos)
        .unwrap();
    let before = digests(&pair.a, 0..N, DigestMode::Deep);
    assert_eq!(before.damaged, vec![150..owned.end]);
    let files_before: Vec<(PathBuf, Vec<u8>)> = segment_files(&pair.a_dir())
        .into_iter()
        .map(|(_, p)| (p.clone(), fs::read(&p).unwrap()))
        .collect();
    let good = pair.b.read_index_range(150..owned.end, usize::MAX).unwrap();

    let shifted: Vec<RecordBatch> = good
        .iter()
        .map(|b| b.restamped(b.base_offset() + 1, b.term(), b.log_index()))
        .collect();
    let mut holey = good.clone();
    holey.remove(3);
    let mut swapped = good.clone();
    swapped.swap(1, 2);
    let past_end = pair.b.read_index_range(N - 5..N, usize::MAX).unwrap();
    let beyond: Vec<RecordBatch> = past_end
        .iter()
        .map(|b| b.restamped(b.base_offset() + 100, b.term(), b.log_index() + 5))
        .collect();
    // Right offsets at 150, but one batch too few: the batch after them
    // starts where the local one does not.
    let short = good[..good.len() - 1].to_vec();
    // Contiguous and right at 150, but the last batch holds more entries
    // than the healthy one, so the local batch after it does not follow.
    let mut wrong_tail = good.clone();
    let last = wrong_tail.pop().unwrap();
    let bigger = batch(&[
        entry(1, Level::Info, "x", "1".into()),
        entry(2, Level::Info, "x", "2".into()),
        entry(3, Level::Info, "x", "3".into()),
    ]);
    wrong_tail.push(bigger.restamped(last.base_offset(), last.term(), last.log_index()));

    for (name, batches) in [
        ("empty", Vec::new()),
        ("offset mismatch", shifted),
        ("not contiguous", holey),
        ("out of order", swapped),
        ("beyond the end", beyond),
        ("offset mismatch at the end", wrong_tail),
    ] {
        let err = pair.a.repair(batches).wait().unwrap_err();
        assert!(
            matches!(err, StorageError::InvalidRequest { .. }),
            "{name}: {err}"
        );
    }
    // `short` splices (the gap after it stays) — accepted; checked last.
    let after: Vec<(PathBuf, Vec<u8>)> = segment_files(&pair.a_dir())
        .into_iter()
        .map(|(_, p)| (p.clone(), fs::read(&p).unwrap()))
        .collect();
    assert_eq!(after, files_before, "refusals changed no file");
    assert_eq!(digests(&pair.a, 0..N, DigestMode::Deep), before);

    // Not poisoned: appends and a proper repair still work.
    append_range(&pair.a, N..N + 1);
    append_range(&pair.b, N..N + 1);
    pair.a.repair(short).wait().unwrap();
    assert_eq!(
        digests(&pair.a, 0..N, DigestMode::Deep).damaged,
        vec![owned.end - 1..owned.end]
    );
    pair.repair(0..N + 1);
    assert_same(&pair.a, &pair.b, 0..N + 1);
    pair.assert_a_files_clean();
}

#[test]
fn given_an_unchanged_log_a_cached_digest_reads_only_new_bytes_and_throttle_sees_every_read() {
    let pair = Pair::new(N);
    let size: u64 = pair.a.stats().size_bytes;
    let mut throttled = 0u64;
    let first = pair
        .a
        .leaf_digests(0..N, DigestMode::Cached, &mut |n| throttled += n)
        .unwrap();
    assert_eq!(first.bytes_read, size);
    assert_eq!(throttled, first.bytes_read);

    let again = digests(&pair.a, 0..N, DigestMode::Cached);
    assert_eq!(again.bytes_read, 0);
    assert_eq!(again.leaves, first.leaves);

    // New batches (rolling segments on the way) are all that is read.
    append_range(&pair.a, N..N + 50);
    append_range(&pair.b, N..N + 50);
    let grown = pair.a.stats().size_bytes - size;
    let mut throttled = 0u64;
    let d = pair
        .a
        .leaf_digests(0..N + 50, DigestMode::Cached, &mut |n| throttled += n)
        .unwrap();
    assert_eq!(d.bytes_read, grown);
    assert_eq!(throttled, grown);
    assert_eq!(d.leaves, reference(&pair.b, 0..N + 50));

    // A range cutting leaves reads only around its edges.
    let mut throttled = 0u64;
    let d = pair
        .a
        .leaf_digests(100..600, DigestMode::Cached, &mut |n| throttled += n)
        .unwrap();
    assert_eq!(throttled, d.bytes_read);
    assert!(
        d.bytes_read > 0 && d.bytes_read < size / 2,
        "{}",
        d.bytes_read
    );
    assert_eq!(d.leaves, reference(&pair.b, 100..600));

    // Deep reads everything again.
    let deep = digests(&pair.a, 0..N + 50, DigestMode::Deep);
    assert!(deep.bytes_read >= size + grown);
}

/// Repairs exactly `range` of `a` from `b`.
fn repair_exactly(pair: &Pair, range: Range<u64>) {
    let batches = pair.b.read_index_range(range, usize::MAX).unwrap();
    pair.a.repair(batches).wait().unwrap();
}

#[test]
fn given_holes_a_partial_repair_keeps_intact_local_batches_and_the_log_start() {
    let mut pair = Pair::new(N);
    // Two skippable corrupt batches in the first segment, at its very start
    // and a little later.
    let (first_seg, _, _) = locate(&pair.a_dir(), 0);
    let owned = file_range(&pair.a_dir(), &first_seg);
    assert!(owned.end > 6);
    flip(&pair.a_dir(), 0);
    flip(&pair.a_dir(), 4);
    assert_eq!(
        digests(&pair.a, 0..N, DigestMode::Deep).damaged,
        vec![0..1, 4..5]
    );

    // Repairing only 4 leaves 0 damaged: the first segment's file is left
    // empty (keeping the log's start), batches 1.. go to new segments.
    repair_exactly(&pair, 4..5);
    assert_eq!(pair.a.index_bounds(), (0, N));
    assert_eq!(
        digests(&pair.a, 0..N, DigestMode::Cached).damaged,
        vec![0..1]
    );
    assert_eq!(fs::metadata(&first_seg).unwrap().len(), 0);
    let err = pair.a.read_index_range(0..N, usize::MAX).unwrap_err();
    assert!(err.is_damage(), "{err}");
    assert_eq!(
        pair.a.read_index_range(1..N, usize::MAX).unwrap().len() as u64,
        N - 1
    );

    repair_exactly(&pair, 0..1);
    assert_same(&pair.a, &pair.b, 0..N);
    pair.assert_a_files_clean();
    pair.reopen_with(|_| {});
    assert_same(&pair.a, &pair.b, 0..N);
    pair.assert_a_files_clean();
}

#[test]
fn given_a_hole_inside_the_repaired_segment_the_batches_after_it_are_kept() {
    let pair = Pair::new(N);
    let (path, _, _) = locate(&pair.a_dir(), 120);
    let owned = file_range(&pair.a_dir(), &path);
    let (x, y) = (owned.start + 3, owned.start + 6);
    assert!(owned.end > y + 2, "{owned:?}");
    flip(&pair.a_dir(), x);
    flip(&pair.a_dir(), y);

    repair_exactly(&pair, x..x + 1);
    let d = digests(&pair.a, 0..N, DigestMode::Deep);
    assert_eq!(d.damaged, vec![y..y + 1]);
    // y + 1.. were kept from the local copy, in a segment of their own.
    assert!(
        segment_files(&pair.a_dir())
            .iter()
            .any(|(base, _)| *base == y + 1)
    );
    let tail = pair
        .a
        .read_index_range(y + 1..owned.end, usize::MAX)
        .unwrap();
    assert_eq!(tail.len() as u64, owned.end - y - 1);

    repair_exactly(&pair, y..y + 1);
    assert_same(&pair.a, &pair.b, 0..N);
    pair.assert_a_files_clean();
}

#[test]
fn given_a_garbage_header_the_rest_of_the_segment_is_damaged_and_repair_restores_it() {
    let pair = Pair::new(N);
    let (path, pos, _) = locate(&pair.a_dir(), 120);
    let owned = file_range(&pair.a_dir(), &path);
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .write_all_at(&[0xff; 8], pos)
        .unwrap();
    let d = digests(&pair.a, 0..N, DigestMode::Deep);
    assert_eq!(d.damaged, vec![120..owned.end]);

    // Repairing the first damaged batch alone cannot reach past it: the
    // local batches after garbage are not trusted.
    repair_exactly(&pair, 120..121);
    assert_eq!(
        digests(&pair.a, 0..N, DigestMode::Cached).damaged,
        vec![121..owned.end]
    );
    pair.repair(0..N);
    assert_same(&pair.a, &pair.b, 0..N);
    pair.assert_a_files_clean();
}

/// Regression: a repair reset the submission head to the writer's, so
/// appends already stamped and queued behind the repair were followed by
/// an "append out of sequence" refusal (which stopped a follower's Raft).
#[test]
fn given_appends_queued_behind_a_repair_they_and_later_appends_succeed() {
    let pair = Pair::new(N);
    let (path, _, _) = locate(&pair.a_dir(), 100);
    let range = file_range(&pair.a_dir(), &path);
    flip(&pair.a_dir(), range.start + 1);
    let batches = pair.b.read_index_range(range.clone(), usize::MAX).unwrap();
    // Queued at once, without waiting: the appends line up behind the repair.
    let repaired = pair.a.repair(batches);
    let queued: Vec<_> = (N..N + 50)
        .map(|i| {
            let (b, id) = batch_for(i);
            pair.a.append_entry(b, id).unwrap().1
        })
        .collect();
    repaired.wait().unwrap();
    for p in queued {
        p.wait().unwrap();
    }
    append_range(&pair.a, N + 50..N + 60);
    append_range(&pair.b, N..N + 60);
    assert_eq!(pair.a.index_bounds(), (0, N + 60));
    assert_same(&pair.a, &pair.b, 0..N + 60);
}
