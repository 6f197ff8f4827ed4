//! Retention by age and size: which whole sealed segments go, run on the
//! writer thread. A standalone log deletes them here; a replicated one
//! only plans (`delete = false`) and cuts through Raft, every replica then
//! purging the same prefix (see `cairn_cluster`'s `retention`).

use std::sync::Arc;

use crate::error::Result;
use crate::fsutil::fsync_dir;
use crate::segment::Segment;
use crate::state::{
    ActiveState, EntryId, LogInner, RetentionOutcome, delete_segment, drop_purged, roll,
};

/// Deletes (or, with `delete` false, only plans deleting) the oldest
/// sealed segments past the log's retention, after rolling an active
/// segment older than `segment_ms`. Entries up to `gone_upto` count as
/// deleted already. Expects nothing staged.
pub(crate) fn run(
    log: &Arc<LogInner>,
    st: &mut ActiveState,
    now_us: i64,
    delete: bool,
    gone_upto: Option<u64>,
) -> Result<RetentionOutcome> {
    let cfg = &log.config;
    if st.end_pos() > 0 && st.too_old(cfg) {
        roll(log, st)?;
    }
    // A segment that was active when a purge covered all its entries was
    // kept then; once rolled, nothing else deletes it before a reopen.
    let purged = *log.purged.read();
    if delete && let Some(p) = purged {
        drop_purged(log, st, p.index)?;
    }
    let mut outcome = RetentionOutcome::default();
    let purged_end = log
        .purged
        .read()
        .map(|p| p.index)
        .max(gone_upto)
        .map_or(0, |i| i + 1);
    // Segments holding only purged (or already cut) entries are on
    // their way out and count for nothing.
    let segments: Vec<Arc<Segment>> = log
        .segments
        .read()
        .values()
        .filter(|s| s.meta.read().next_index > purged_end || !s.meta.read().has_data())
        .cloned()
        .collect();
    let mut total: u64 = segments.iter().map(|s| s.meta.read().len).sum();
    let cutoff = cfg
        .retention_ms
        .map(|ms| now_us.saturating_sub((ms as i64).saturating_mul(1000)));
    for seg in segments
        .iter()
        .filter(|s| s.base_index != st.segment.base_index)
    {
        let (len, max_ts, has_data, last) = {
            let m = seg.meta.read();
            let last = m.has_data().then(|| EntryId {
                index: m.next_index - 1,
                term: m.last_term,
            });
            (m.len, m.max_ts, m.has_data(), last)
        };
        let expired = cutoff.is_some_and(|c| !has_data || max_ts < c);
        let over_size = cfg.retention_bytes.is_some_and(|limit| total > limit);
        if !expired && !over_size {
            break;
        }
        if delete {
            delete_segment(log, seg)?;
        }
        total -= len;
        outcome.segments_deleted += 1;
        outcome.bytes_deleted += len;
        outcome.cut = last.or(outcome.cut);
    }
    if delete && outcome.segments_deleted > 0 {
        fsync_dir(&log.dir)?;
        tracing::debug!(dir = %log.dir.display(), ?outcome, "retention deleted segments");
    }
    Ok(outcome)
}
