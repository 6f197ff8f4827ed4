//! Recovering a log directory: its segments loaded (sealed ones with their
//! indexes, rebuilt when missing or stale), the last one read in full as
//! the active segment and cut at a torn or corrupt tail. Used when a log is
//! opened and after a snapshot's segments are installed (`install`).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use crate::config::LogConfig;
use crate::error::{IoContext, Result, StorageError};
use crate::fsutil::fsync_dir;
use crate::segment::{
    Segment, SegmentMeta, is_v1_segment_name, load_index_files, parse_segment_name,
    remove_index_files, scan_segment, segment_path,
};
use crate::state::{ActiveState, EntryId, create_segment, open_segment_file};

/// Loads a log directory's segments: sealed ones with their indexes
/// (rebuilt when missing or stale), the last one as the active segment,
/// read in full and cut at a torn or corrupt tail. A directory without
/// segments gets an empty one after the purge point. Used on open and
/// after installing a snapshot's segments.
pub(crate) fn load_segments(
    dir: &Path,
    config: &LogConfig,
    purged: Option<EntryId>,
) -> Result<(BTreeMap<u64, Arc<Segment>>, ActiveState)> {
    let mut bases = Vec::new();
    for item in fs::read_dir(dir).ctx(|| format!("list {}", dir.display()))? {
        let item = item.ctx(|| format!("list {}", dir.display()))?;
        let name = item.file_name();
        let name = name.to_string_lossy();
        if let Some(base) = parse_segment_name(&name) {
            bases.push(base);
        } else if is_v1_segment_name(&name) {
            return Err(StorageError::UnsupportedFormat {
                path: item.path(),
                reason: "segments named by entry offset hold version 1 batches; \
                             this build needs version 2 (move the data away to start afresh)"
                    .into(),
            });
        } else if name.ends_with(".tmp") {
            // A metadata write that did not reach its rename.
            let _ = fs::remove_file(item.path());
        }
    }
    bases.sort_unstable();

    let mut segments = BTreeMap::new();
    if bases.is_empty() {
        let base_index = purged.map_or(0, |p| p.index + 1);
        let seg = create_segment(dir, base_index, 0)?;
        fsync_dir(dir)?;
        segments.insert(base_index, seg);
    } else {
        let (last_index, last_offset) = *bases.last().expect("non-empty");
        let mut expected = None;
        for &(base_index, base_offset) in &bases[..bases.len() - 1] {
            let seg = open_sealed(dir, base_index, base_offset, config)?;
            if let Some(expected) = expected
                && expected != (base_index, base_offset)
            {
                tracing::warn!(dir = %dir.display(), ?expected, found = ?(base_index, base_offset), "gap between segments");
            }
            let meta = seg.meta.read().clone();
            expected = Some((meta.next_index, meta.next_offset));
            segments.insert(base_index, Arc::new(seg));
        }
        let path = segment_path(dir, last_index, last_offset);
        let file = open_segment_file(&path, false)?;
        segments.insert(
            last_index,
            Arc::new(Segment::new(
                last_index,
                last_offset,
                path,
                file,
                SegmentMeta::empty(last_index, last_offset),
            )),
        );
    }

    let active_seg = segments
        .values()
        .next_back()
        .expect("at least one segment")
        .clone();
    let outcome = scan_segment(
        &active_seg.file,
        active_seg.base_index,
        active_seg.base_offset,
        config.index_interval_bytes,
    )?;
    let file_len = active_seg
        .file
        .metadata()
        .ctx(|| "stat segment".into())?
        .len();
    if let Some((position, reason)) = &outcome.stopped
        && !outcome.clean_tail
    {
        tracing::warn!(
            segment = %active_seg.path.display(),
            position,
            dropped_bytes = file_len - position,
            %reason,
            "truncating torn or corrupt tail of the active segment"
        );
    }
    if file_len != outcome.meta.len {
        active_seg
            .file
            .set_len(outcome.meta.len)
            .and_then(|()| active_seg.file.sync_all())
            .ctx(|| format!("truncate {}", active_seg.path.display()))?;
    }
    // The active segment's index lives in memory until it is sealed.
    remove_index_files(&active_seg.path)?;
    *active_seg.meta.write() = outcome.meta.clone();
    let active = ActiveState::new(active_seg, &outcome.meta, outcome.bytes_since_index);

    Ok((segments, active))
}

/// Opens a sealed segment, loading its index or rebuilding a missing or
/// stale one. A preallocated zero tail left by a crash mid-roll is trimmed.
pub(crate) fn open_sealed(
    dir: &Path,
    base_index: u64,
    base_offset: u64,
    config: &LogConfig,
) -> Result<Segment> {
    let path = segment_path(dir, base_index, base_offset);
    let file = open_segment_file(&path, false)?;
    let len = file
        .metadata()
        .ctx(|| format!("stat {}", path.display()))?
        .len();
    let meta = match load_index_files(&path, len) {
        Some(meta) => meta,
        None => {
            tracing::info!(segment = %path.display(), "rebuilding missing or stale index");
            let outcome =
                scan_segment(&file, base_index, base_offset, config.index_interval_bytes)?;
            if let Some((position, reason)) = &outcome.stopped {
                if outcome.clean_tail {
                    file.set_len(outcome.meta.len)
                        .and_then(|()| file.sync_all())
                        .ctx(|| format!("trim {}", path.display()))?;
                } else {
                    // Not a torn write (sealed segments were synced before the
                    // roll): real corruption. Serve the verified prefix only.
                    tracing::error!(segment = %path.display(), position, %reason, "sealed segment is corrupt");
                }
            }
            crate::segment::write_index_files(&path, &outcome.meta)?;
            outcome.meta
        }
    };
    Ok(Segment::new(base_index, base_offset, path, file, meta))
}
