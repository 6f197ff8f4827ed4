//! Repair of a damaged range of a log, on the writer thread: the storage
//! half of an anti-entropy repair (the digests that find the range are in
//! `digest`).
//!
//! [`PartitionLog::repair`] replaces the batches at `[a, b)` with
//! byte-identical copies from a healthy replica, on the writer thread (so it
//! is ordered with appends and truncation). It refuses, changing nothing,
//! anything that would not splice into the local log: a non-contiguous or
//! unverifiable input, a range outside `[first index, next index)`, or
//! offsets that disagree with an intact local neighbour (batch `a`, batch
//! `a - 1`, the batch at `b`) or with a segment name at `a` or `b`.
//!
//! A range reaching into the active segment first rolls it (sealing it),
//! so only sealed segments are rewritten. Each segment whose range the
//! repair touches is rebuilt from the best source per index — the provided
//! batch inside `[a, b)`, else the local batch if it is intact (read through
//! the open handle, which works even for a file deleted behind the log) —
//! into a temp file that is fsynced and renamed over the segment's name.
//! Indexes no source has split the result: what follows a hole goes to a
//! new segment named by its first batch (rather than being dropped), and
//! the hole stays a gap for a later repair. A hole at the segment's very
//! start leaves the segment's file empty, so the log's first index does not
//! silently move. Provided batches for a gap between segments (beyond the
//! segment's own end) become a new segment named by their first batch. Each
//! new file is scanned and verified, its index files written, and a new
//! [`Segment`] replaces the old one in the map; readers that still hold the
//! old one keep reading its old file.
//!
//! Crash safety: the segment's index files are removed before its rename
//! (so a crash leaves them to be rebuilt, never stale), and a segment's own
//! file is renamed before the new files after a hole, so a crash can leave a
//! gap (found and repaired again) but never two segments claiming the same
//! index.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use cairn_types::RecordBatch;

use crate::digest::{ChunkReader, ReadStats, scan_batches, seek_index};
use crate::error::{IoContext, Result, StorageError};
use crate::fsutil::fsync_dir;
use crate::leaf::Resume;
use crate::segment::{Segment, remove_index_files, scan_segment, segment_path, write_index_files};
use crate::state::{ActiveState, LogInner, RepairOutcome, open_segment_file};

/// The intact local batch at `index`, if any, read through the segment's
/// open handle.
fn local_batch(segments: &[Arc<Segment>], index: u64) -> Option<RecordBatch> {
    let k = segments.partition_point(|s| s.base_index <= index);
    let seg = &segments[k.checked_sub(1)?];
    let len = {
        let meta = seg.meta.read();
        if index >= meta.next_index {
            return None;
        }
        meta.len
    };
    let start = seek_index(seg, index);
    let mut noop = |_: u64| {};
    let mut stats = ReadStats {
        throttle: &mut noop,
        bytes: 0,
    };
    let mut reader = ChunkReader::new(&seg.file, len, &mut stats);
    let mut found = None;
    scan_batches(&mut reader, start, len, &mut |h, bytes| {
        if h.log_index < index {
            return ControlFlow::Continue(());
        }
        if h.log_index == index {
            found = RecordBatch::from_bytes(Bytes::copy_from_slice(bytes)).ok();
        }
        ControlFlow::Break(())
    });
    found
}

/// Every intact batch of a segment, by index.
fn local_batches(seg: &Segment) -> BTreeMap<u64, RecordBatch> {
    let len = seg.meta.read().len;
    let mut noop = |_: u64| {};
    let mut stats = ReadStats {
        throttle: &mut noop,
        bytes: 0,
    };
    let mut reader = ChunkReader::new(&seg.file, len, &mut stats);
    let mut out = BTreeMap::new();
    let start = Resume {
        pos: 0,
        index: seg.base_index,
        offset: seg.base_offset,
    };
    scan_batches(&mut reader, start, len, &mut |h, bytes| {
        if let Ok(b) = RecordBatch::from_bytes(Bytes::copy_from_slice(bytes)) {
            out.insert(h.log_index, b);
        }
        ControlFlow::Continue(())
    });
    if let Some(e) = reader.failed {
        tracing::warn!(segment = %seg.path.display(), error = %e, "reading segment for repair failed; keeping what was read");
    }
    out
}

/// A segment file a repair writes.
struct NewFile {
    base_index: u64,
    base_offset: u64,
    batches: Vec<RecordBatch>,
    /// The segment it replaces (same name), if any.
    replaces: Option<Arc<Segment>>,
}

/// Splits batches (ascending by index) into runs that continue each other
/// in index and offset: what one segment file can hold.
fn runs(batches: impl IntoIterator<Item = RecordBatch>) -> Vec<Vec<RecordBatch>> {
    let mut out: Vec<Vec<RecordBatch>> = Vec::new();
    for b in batches {
        let continues = out.last().and_then(|r| r.last()).is_some_and(|p| {
            p.log_index() + 1 == b.log_index() && p.next_offset() == b.base_offset()
        });
        match out.last_mut() {
            Some(run) if continues => run.push(b),
            _ => out.push(vec![b]),
        }
    }
    out
}

/// Repairs `[a, b)` with `batches`. See the module docs.
pub(crate) fn repair(
    log: &LogInner,
    st: &mut ActiveState,
    batches: Vec<RecordBatch>,
) -> Result<RepairOutcome> {
    let refuse = |reason: String| {
        Err(StorageError::InvalidRequest {
            path: log.dir.clone(),
            reason: format!("repair refused: {reason}"),
        })
    };
    let (Some(first_batch), Some(last_batch)) = (batches.first(), batches.last()) else {
        return refuse("no batches".into());
    };
    let (a, b) = (first_batch.log_index(), last_batch.log_index() + 1);
    for (i, batch) in batches.iter().enumerate() {
        // A RecordBatch was verified when built; check again rather than
        // write bytes we cannot vouch for into a log being repaired.
        let bytes = batch.as_bytes();
        if bytes.len() != batch.header().batch_len as usize
            || crc32c::crc32c(&bytes[8..]) != batch.header().crc
        {
            return refuse(format!("batch {} does not verify", batch.log_index()));
        }
        if i > 0 {
            let prev = &batches[i - 1];
            if batch.log_index() != prev.log_index() + 1 {
                return refuse(format!(
                    "batch index {} does not follow {}",
                    batch.log_index(),
                    prev.log_index()
                ));
            }
            if batch.base_offset() != prev.next_offset() {
                return refuse(format!(
                    "batch {} starts at offset {}, the batch before ends at {}",
                    batch.log_index(),
                    batch.base_offset(),
                    prev.next_offset()
                ));
            }
        }
    }
    let segments: Vec<Arc<Segment>> = log.segments.read().values().cloned().collect();
    let first = segments[0]
        .base_index
        .max(log.purged.read().map_or(0, |p| p.index + 1));
    if a < first || b > st.next_index {
        return refuse(format!(
            "[{a}, {b}) is not inside the log's [{first}, {})",
            st.next_index
        ));
    }
    // The offsets must splice into what is intact around the range.
    let mut anchors_a = Vec::new();
    if let Some(local) = local_batch(&segments, a) {
        anchors_a.push(("the local batch there", local.base_offset()));
    }
    if let Some(local) = a.checked_sub(1).and_then(|p| local_batch(&segments, p)) {
        anchors_a.push(("the local batch before ends there", local.next_offset()));
    }
    if let Some(seg) = segments.iter().find(|s| s.base_index == a) {
        anchors_a.push(("its segment's name", seg.base_offset));
    }
    for (what, offset) in anchors_a {
        if offset != first_batch.base_offset() {
            return refuse(format!(
                "batch {a} starts at offset {}, but {what} says {offset}",
                first_batch.base_offset()
            ));
        }
    }
    let mut anchors_b = Vec::new();
    if b < st.next_index
        && let Some(local) = local_batch(&segments, b)
    {
        anchors_b.push(("the local batch there", local.base_offset()));
    }
    if let Some(seg) = segments.iter().find(|s| s.base_index == b) {
        anchors_b.push(("its segment's name", seg.base_offset));
    }
    for (what, offset) in anchors_b {
        if offset != last_batch.next_offset() {
            return refuse(format!(
                "the repaired range ends at offset {}, but batch {b} starts at {offset} per {what}",
                last_batch.next_offset()
            ));
        }
    }

    // Only sealed segments are rewritten.
    if b > st.segment.base_index && st.end_pos() > 0 {
        crate::state::roll(log, st)?;
    }
    let segments: Vec<Arc<Segment>> = log.segments.read().values().cloned().collect();
    let active_base = st.segment.base_index;
    let mut provided: BTreeMap<u64, RecordBatch> =
        batches.into_iter().map(|b| (b.log_index(), b)).collect();
    let repaired_count = provided.len() as u64;

    let mut files: Vec<NewFile> = Vec::new();
    for pair in segments.windows(2) {
        let (seg, next) = (&pair[0], &pair[1]);
        if seg.base_index >= active_base {
            break;
        }
        let meta_next = seg.meta.read().next_index;
        // An empty segment owns the range up to the next one: new batches
        // at its base must go into its file, which holds that name.
        let own_end = if meta_next == seg.base_index {
            next.base_index
        } else {
            meta_next
        };
        let own = seg.base_index..own_end;
        let gap = own_end..next.base_index;
        if own.start < b && a < own.end {
            let mut sources = local_batches(seg);
            sources.retain(|i, _| own.contains(i));
            let mine: Vec<u64> = provided.range(own.clone()).map(|(i, _)| *i).collect();
            for i in mine {
                let batch = provided.remove(&i).expect("listed");
                sources.insert(i, batch);
            }
            let mut runs = runs(sources.into_values());
            // A run at the segment's base keeps its name: local batches there
            // were verified against the name's offset, and a provided one was
            // checked against it above. If the first entry is not to be had,
            // the file is left empty: the name (and so the log's start) stays,
            // the missing entries become a gap.
            let head = if runs
                .first()
                .is_some_and(|r| r[0].log_index() == seg.base_index)
            {
                runs.remove(0)
            } else {
                Vec::new()
            };
            files.push(NewFile {
                base_index: seg.base_index,
                base_offset: seg.base_offset,
                batches: head,
                replaces: Some(seg.clone()),
            });
            for run in runs {
                files.push(NewFile {
                    base_index: run[0].log_index(),
                    base_offset: run[0].base_offset(),
                    batches: run,
                    replaces: None,
                });
            }
        }
        if gap.start < b && a < gap.end {
            trim_unverified_tail(seg)?;
            let mine: Vec<RecordBatch> = {
                let keys: Vec<u64> = provided.range(gap.clone()).map(|(i, _)| *i).collect();
                keys.iter()
                    .map(|i| provided.remove(i).expect("listed"))
                    .collect()
            };
            for run in runs(mine) {
                files.push(NewFile {
                    base_index: run[0].log_index(),
                    base_offset: run[0].base_offset(),
                    batches: run,
                    replaces: None,
                });
            }
        }
    }
    debug_assert!(provided.is_empty(), "every repaired index has a segment");

    let mut outcome = RepairOutcome {
        batches: repaired_count,
        ..RepairOutcome::default()
    };
    // Replaced segments first, then new ones (see the module docs).
    files.sort_by_key(|f| f.replaces.is_none());
    let mut written = Vec::with_capacity(files.len());
    for f in &files {
        let path = segment_path(&log.dir, f.base_index, f.base_offset);
        outcome.bytes_written += write_segment_file(&path, &f.batches)?;
        outcome.segments_rewritten += 1;
        written.push(path);
    }
    fsync_dir(&log.dir)?;

    let mut fresh = Vec::with_capacity(files.len());
    for (f, path) in files.iter().zip(written) {
        let file = open_segment_file(&path, false)?;
        let scan = scan_segment(
            &file,
            f.base_index,
            f.base_offset,
            log.config.index_interval_bytes,
        )?;
        let expected_next = f.batches.last().map_or(f.base_index, |b| b.log_index() + 1);
        if scan.stopped.is_some() || scan.meta.next_index != expected_next {
            return Err(StorageError::Io {
                context: format!("verify {} after repairing it", path.display()),
                source: io::Error::other(format!(
                    "scan stopped at {:?}, reached index {} of {expected_next}",
                    scan.stopped, scan.meta.next_index
                )),
            });
        }
        write_index_files(&path, &scan.meta)?;
        fresh.push(Arc::new(Segment::new(
            f.base_index,
            f.base_offset,
            path,
            file,
            scan.meta,
        )));
    }
    {
        let mut map = log.segments.write();
        for seg in fresh {
            map.insert(seg.base_index, seg);
        }
    }
    for f in &files {
        if let Some(old) = &f.replaces {
            old.digest.lock().invalidate();
        }
    }
    tracing::info!(dir = %log.dir.display(), a, b, ?outcome, "repaired log range");
    Ok(outcome)
}

/// Cuts bytes after a sealed segment's verified end: what is left of a batch
/// cut short while the node was down (open serves the verified prefix only
/// and keeps the bytes, so every open would complain about them again). Not
/// part of the log, and the gap after the segment is being filled now.
fn trim_unverified_tail(seg: &Segment) -> Result<()> {
    let verified = seg.meta.read().len;
    let len = seg
        .file
        .metadata()
        .ctx(|| format!("stat {}", seg.path.display()))?
        .len();
    if len <= verified {
        return Ok(());
    }
    tracing::info!(segment = %seg.path.display(), bytes = len - verified, "dropping unverified bytes after the segment's last batch");
    seg.file
        .set_len(verified)
        .and_then(|()| seg.file.sync_all())
        .ctx(|| format!("trim {}", seg.path.display()))?;
    seg.digest.lock().invalidate();
    Ok(())
}

/// Writes a segment file under `path` atomically (temp file, fsync,
/// rename; the caller fsyncs the directory). Removes the old file's index
/// files first, so a crash never pairs them with the new contents.
fn write_segment_file(path: &Path, batches: &[RecordBatch]) -> Result<u64> {
    let tmp = path.with_extension("log.tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .ctx(|| format!("create {}", tmp.display()))?;
    let mut len = 0u64;
    for b in batches {
        f.write_all(b.as_bytes())
            .ctx(|| format!("write {}", tmp.display()))?;
        len += b.len() as u64;
    }
    f.sync_all().ctx(|| format!("fsync {}", tmp.display()))?;
    drop(f);
    remove_index_files(path)?;
    fs::rename(&tmp, path).ctx(|| format!("rename {} to {}", tmp.display(), path.display()))?;
    Ok(len)
}
