//! Merkle leaf digests over log-index ranges, and repair of damaged ranges:
//! the storage half of anti-entropy (the cluster compares replicas' leaves,
//! descends where they differ and repairs from a replica the majority
//! agrees with).
//!
//! # Leaves
//! Every batch is one Raft log entry, so replicas holding the same entries
//! hold byte-identical batches at the same log indexes — but not
//! necessarily in the same segments (segment sizes are per node, and a
//! repaired or truncated log splits differently). Leaves are therefore
//! defined over log indexes alone: leaf `k` covers `[k * LEAF_SPAN,
//! (k + 1) * LEAF_SPAN)`. Each verified batch at index `i` contributes
//!
//! ```text
//! h(i) = blake3(i u64 LE ‖ term u64 LE ‖ stored crc u32 LE ‖ batch_len u32 LE)
//! ```
//!
//! which needs only the header: the stored CRC-32C already covers the whole
//! batch (offsets, term, index and payload), and it is checked while
//! reading. A leaf adds its batches' hashes up as four wrapping `u64` lanes
//! plus a count, so sums from different segments combine in any order, and
//! its digest is `blake3("cairn-leaf" ‖ k ‖ count ‖ lanes)` (all LE). A
//! range that cuts a leaf counts only that leaf's batches inside the range.
//!
//! # What counts
//! Only batches read back and verified (CRC, and offsets and indexes in
//! sequence from the segment's name). Everything the log should hold in the
//! range but cannot vouch for is listed in `damaged` instead: corrupt
//! batches (one whose header is sane is skipped by its length when the next
//! batch verifies and takes the next index; otherwise the rest of the
//! segment is lost), bytes the file no longer has (cut short behind the
//! log's back), a segment whose file is gone from its path or replaced
//! (deleted behind the log's back: its open handle would still read, but a
//! restart would not), and indexes between segments that do not continue
//! each other (a segment deleted or cut short while the node was down).
//! Segment `s` is responsible for the indexes from its base up to the next
//! segment's base (the last one: up to the log's end), so a hole always
//! belongs to the segment before it. Indexes before the log's first index
//! (purged, or never held) or at its end are absent, not damaged.
//!
//! # Cache
//! Re-reading every segment each time would make periodic comparison cost a
//! full read of the log, so each [`Segment`] keeps what its last scan found
//! ([`DigestCache`]): per-leaf partial sums (with the lowest and highest
//! index that went into each), the verified index ranges, the bytes covered
//! and the file identity (device, inode, size, mtime, ctime) seen before
//! reading. In [`DigestMode::Cached`]:
//! - a sealed segment whose identity is unchanged is not read; any change
//!   (another process wrote or cut the file) means a full, verifying rescan;
//! - the active segment grows, so its size and mtime change with every
//!   append: it is extended from where the last scan stopped up to the
//!   published end. Only the same device and inode, and a size not below
//!   what was covered, are required (damage to the active segment is found
//!   by [`DigestMode::Deep`] or on read);
//! - rolling refreshes the recorded identity of the segment it seals (its
//!   trim and fsync change mtime and size), so sealing costs no re-read;
//! - truncation and repair invalidate (a counter, so a scan that started
//!   before cannot store a stale result afterwards).
//!
//! A leaf the range cuts (an edge leaf) cannot use a segment's partial sum
//! when that sum includes batches outside the range; those few batches are
//! read again from the nearest sparse index point, counting only indexes
//! the segment's scan verified, so the answer always equals a scan from
//! scratch. [`DigestMode::Deep`] ignores the cache, rescans every segment
//! the range touches and stores the result.
//!
//! Mtime granularity is the kernel's clock tick: a write landing in the
//! same tick as the recorded mtime, with the size unchanged, is only found
//! by a deep pass (ctime is in the identity too, so restoring mtime by hand
//! does not hide a change).
//!
//! # Repair
//! Writing the repaired batches back is `repair`'s (on the writer thread).

use std::fs::{self, File};
use std::io;
use std::ops::{ControlFlow, Range};
use std::sync::Arc;

use cairn_types::RecordBatch;
use cairn_types::batch::{BatchHeader, HEADER_LEN};
use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result, StorageError};
use crate::leaf::{CacheEntry, FileIdentity, LeafSum, Resume, absorb};
pub use crate::leaf::{Digest, LEAF_SPAN};
use crate::log::{PartitionLog, Pending};
use crate::segment::{READ_CHUNK, Segment, read_up_to};
use crate::state::Command;
pub use crate::state::RepairOutcome;

/// Most leaves one digest request answers (32 MiB of digests), so a range
/// like `0..u64::MAX` is refused instead of allocating without bound.
const MAX_LEAVES: u64 = 1 << 20;

/// How much of the log a digest request re-reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DigestMode {
    /// Reuse per-segment digests cached from an earlier request while the
    /// segment file is unchanged; read only what is new or changed.
    #[default]
    Cached,
    /// Re-read and verify every batch in the range.
    Deep,
}

/// The Merkle leaves of one replica over a range of log indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafDigests {
    /// Leaf number of `leaves[0]` (`range.start / LEAF_SPAN`).
    pub first_leaf: u64,
    /// One digest per leaf overlapping the range, over that leaf's batches
    /// whose log indexes lie inside the range.
    pub leaves: Vec<Digest>,
    /// Log index ranges inside the range that this replica should hold but
    /// whose batches are corrupt, missing or unreadable; ascending, merged.
    pub damaged: Vec<Range<u64>>,
    /// Bytes read from segment files to answer.
    pub bytes_read: u64,
}

impl PartitionLog {
    /// The Merkle leaves of this log over the log indexes in `range`. See
    /// the module docs for what a leaf covers and what counts as damaged.
    ///
    /// At most 2^20 leaves (2^28 indexes) per request; a larger range is
    /// refused with [`StorageError::InvalidRequest`].
    ///
    /// `throttle` is called with the size of every chunk read from a
    /// segment file (it may sleep to rate-limit). Call this from a blocking
    /// thread: it reads files, but holds no lock the writer needs while
    /// doing so.
    pub fn leaf_digests(
        &self,
        range: Range<u64>,
        mode: DigestMode,
        throttle: &mut dyn FnMut(u64),
    ) -> Result<LeafDigests> {
        let first_leaf = range.start / LEAF_SPAN;
        let mut out = LeafDigests {
            first_leaf,
            leaves: Vec::new(),
            damaged: Vec::new(),
            bytes_read: 0,
        };
        if range.is_empty() {
            return Ok(out);
        }
        let last_leaf = (range.end - 1) / LEAF_SPAN;
        if last_leaf - first_leaf >= MAX_LEAVES {
            return Err(StorageError::InvalidRequest {
                path: self.inner.dir.clone(),
                reason: format!(
                    "digest of [{}, {}) would take more than {MAX_LEAVES} leaves; ask in parts",
                    range.start, range.end
                ),
            });
        }
        let mut sums = vec![LeafSum::default(); (last_leaf - first_leaf + 1) as usize];

        let purged = *self.inner.purged.read();
        let slots: Vec<Slot> = self
            .inner
            .segments
            .read()
            .values()
            .map(|seg| {
                let meta = seg.meta.read();
                Slot {
                    seg: seg.clone(),
                    len: meta.len,
                    next_index: meta.next_index,
                    next_offset: meta.next_offset,
                }
            })
            .collect();
        let end = slots.last().expect("a log always has a segment").next_index;
        let first = slots[0]
            .seg
            .base_index
            .max(purged.map_or(0, |p| p.index + 1))
            .min(end);
        let wanted = range.start.max(first)..range.end.min(end);

        let mut io = ReadStats { throttle, bytes: 0 };
        for (i, slot) in slots.iter().enumerate() {
            let next = slots.get(i + 1);
            // What this segment answers for: up to the next one's base, so
            // a hole between segments is this one's damage.
            let owned_end = next.map_or(slot.next_index, |n| n.seg.base_index);
            let span = slot.seg.base_index.max(wanted.start)..owned_end.min(wanted.end);
            if span.is_empty() {
                continue;
            }
            let active = next.is_none();
            let Some(entry) = segment_digest(&slot.seg, slot.len, active, mode, &mut io)? else {
                out.damaged.push(span);
                continue;
            };
            for k in span.start / LEAF_SPAN..=(span.end - 1) / LEAF_SPAN {
                let Some(partial) = entry.leaves.get(&k) else {
                    continue;
                };
                let part = (k * LEAF_SPAN).max(span.start)..((k + 1) * LEAF_SPAN).min(span.end);
                let sum = &mut sums[(k - first_leaf) as usize];
                if part.contains(&partial.first) && part.contains(&partial.last) {
                    sum.merge(&partial.sum);
                } else {
                    read_part(&slot.seg, &entry, part, sum, &mut io);
                }
            }
            subtract_into(&span, &entry.verified, &mut out.damaged);
            // Indexes continue but offsets do not: the next segment's first
            // batch cannot be trusted to be the entry the log had there
            // (reads refuse to cross this boundary too).
            if let Some(n) = next
                && slot.next_index == n.seg.base_index
                && slot.next_offset != n.seg.base_offset
                && wanted.contains(&n.seg.base_index)
            {
                out.damaged.push(n.seg.base_index..n.seg.base_index + 1);
            }
        }
        out.leaves = sums
            .iter()
            .enumerate()
            .map(|(i, s)| s.digest(first_leaf + i as u64))
            .collect();
        out.damaged = merge_ranges(std::mem::take(&mut out.damaged));
        out.bytes_read = io.bytes;
        Ok(out)
    }

    /// Replaces the batches at log indexes `[a, b)` — `a` the first given
    /// batch's index, the batches contiguous in index and offset — with
    /// these byte-identical copies from a healthy replica. See the module
    /// docs. Refused with [`StorageError::InvalidRequest`] (nothing changed)
    /// when they do not splice into the log.
    pub fn repair(&self, batches: Vec<RecordBatch>) -> Pending<RepairOutcome> {
        let log = self.inner.clone();
        self.request(|reply| Command::Repair {
            log,
            batches,
            reply,
        })
    }
}

/// One segment as seen at the start of a digest request.
struct Slot {
    seg: Arc<Segment>,
    len: u64,
    next_index: u64,
    next_offset: u64,
}

/// Counts what a request read and lets the caller throttle it.
pub(crate) struct ReadStats<'a> {
    pub(crate) throttle: &'a mut dyn FnMut(u64),
    pub(crate) bytes: u64,
}

/// Reads a segment file forward in chunks of up to [`READ_CHUNK`] bytes,
/// reading every byte at most once, and tolerating a file shorter than the
/// log thinks (bytes past its end are simply not there).
pub(crate) struct ChunkReader<'f, 's, 't> {
    file: &'f File,
    end: u64,
    buf: Vec<u8>,
    buf_start: u64,
    stats: &'s mut ReadStats<'t>,
    /// A read failed other than by reaching the end of the file.
    pub(crate) failed: Option<io::Error>,
}

impl<'f, 's, 't> ChunkReader<'f, 's, 't> {
    pub(crate) fn new(file: &'f File, end: u64, stats: &'s mut ReadStats<'t>) -> Self {
        ChunkReader {
            file,
            end,
            buf: Vec::new(),
            buf_start: 0,
            stats,
            failed: None,
        }
    }

    /// Bytes `[pos, pos + n)`, or `None` when they are not all there.
    /// Positions must not go backwards between calls.
    fn get(&mut self, pos: u64, n: usize) -> Option<&[u8]> {
        let need_end = pos + n as u64;
        if need_end > self.end || pos < self.buf_start {
            return None;
        }
        let have_end = self.buf_start + self.buf.len() as u64;
        if need_end > have_end {
            if pos >= have_end {
                self.buf.clear();
            } else {
                self.buf.drain(..(pos - self.buf_start) as usize);
            }
            self.buf_start = pos;
            let from = pos + self.buf.len() as u64;
            let want = (need_end - from)
                .max(READ_CHUNK as u64)
                .min(self.end - from) as usize;
            let old = self.buf.len();
            self.buf.resize(old + want, 0);
            let got = match read_up_to(self.file, &mut self.buf[old..], from) {
                Ok(got) => got,
                Err(e) => {
                    self.failed = Some(e);
                    0
                }
            };
            self.buf.truncate(old + got);
            if got > 0 {
                self.stats.bytes += got as u64;
                (self.stats.throttle)(got as u64);
            }
            if self.buf_start + (self.buf.len() as u64) < need_end {
                return None;
            }
        }
        let at = (pos - self.buf_start) as usize;
        Some(&self.buf[at..at + n])
    }
}

/// The header and bytes of an intact batch at `pos` (ending by `end`).
fn intact_at<'r>(
    reader: &'r mut ChunkReader<'_, '_, '_>,
    pos: u64,
    end: u64,
) -> Option<(BatchHeader, &'r [u8])> {
    if end.saturating_sub(pos) < HEADER_LEN as u64 {
        return None;
    }
    let header = BatchHeader::parse(reader.get(pos, HEADER_LEN)?).ok()?;
    if pos + u64::from(header.batch_len) > end {
        return None;
    }
    let bytes = reader.get(pos, header.batch_len as usize)?;
    (crc32c::crc32c(&bytes[8..]) == header.crc).then_some((header, bytes))
}

/// Hands `visit` every verified batch from `at` up to byte `end`, in
/// sequence. A batch that fails its CRC but has a sane header is skipped
/// when the batch after it is intact and takes the next index; other damage
/// (garbage header, missing bytes, a batch out of sequence) ends the scan.
///
/// Returns where a later scan continues (after the end, or at a corrupt
/// last batch that may yet get a successor), or `None` after damage that
/// ends the segment. `visit` breaking ends the scan too.
pub(crate) fn scan_batches(
    reader: &mut ChunkReader<'_, '_, '_>,
    mut at: Resume,
    end: u64,
    visit: &mut dyn FnMut(&BatchHeader, &[u8]) -> ControlFlow<()>,
) -> Option<Resume> {
    loop {
        if at.pos >= end {
            return Some(at);
        }
        if end - at.pos < HEADER_LEN as u64 {
            return None;
        }
        let header = BatchHeader::parse(reader.get(at.pos, HEADER_LEN)?).ok()?;
        let len = u64::from(header.batch_len);
        if at.pos + len > end {
            return None;
        }
        let bytes = reader.get(at.pos, len as usize)?;
        if crc32c::crc32c(&bytes[8..]) == header.crc {
            if header.log_index != at.index || header.base_offset != at.offset {
                return None;
            }
            let next = Resume {
                pos: at.pos + len,
                index: at.index + 1,
                offset: header.next_offset(),
            };
            if visit(&header, bytes).is_break() {
                return Some(next);
            }
            at = next;
            continue;
        }
        let next_pos = at.pos + len;
        if next_pos >= end {
            // Nothing after it yet: whether it can be skipped is decided
            // when (if) the segment grows.
            return Some(at);
        }
        match intact_at(reader, next_pos, end) {
            Some((next, _)) if next.log_index == at.index + 1 && next.base_offset >= at.offset => {
                at = Resume {
                    pos: next_pos,
                    index: at.index + 1,
                    offset: next.base_offset,
                };
            }
            _ => return None,
        }
    }
}

/// Brings a segment's cache entry up to date (see the module docs) and
/// returns it; `None` when the segment's file is gone from its path.
fn segment_digest(
    seg: &Segment,
    len: u64,
    active: bool,
    mode: DigestMode,
    io: &mut ReadStats<'_>,
) -> Result<Option<CacheEntry>> {
    let on_path = match fs::metadata(&seg.path) {
        Ok(m) => FileIdentity::of(&m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).ctx(|| format!("stat {}", seg.path.display())),
    };
    let held = seg
        .file
        .metadata()
        .ctx(|| format!("stat {}", seg.path.display()))?;
    if !on_path.same_file(&FileIdentity::of(&held)) {
        // Another file took its name: what we would read is not what a
        // restart would find.
        return Ok(None);
    }
    let (epoch, cached) = {
        let cache = seg.digest.lock();
        (cache.epoch, cache.entry.clone())
    };
    let reusable = cached.filter(|e| {
        mode == DigestMode::Cached
            && e.covered <= len
            && if active {
                e.identity.same_file(&on_path) && on_path.len >= e.covered
            } else {
                e.identity == on_path
            }
    });
    let mut entry =
        reusable.unwrap_or_else(|| CacheEntry::new(on_path, seg.base_index, seg.base_offset));
    entry.identity = on_path;
    let mut failed = None;
    if entry.covered < len {
        if let Some(from) = entry.resume {
            let mut reader = ChunkReader::new(&seg.file, len, io);
            let (leaves, verified) = (&mut entry.leaves, &mut entry.verified);
            let resume = scan_batches(&mut reader, from, len, &mut |h, _| {
                absorb(leaves, verified, h);
                ControlFlow::Continue(())
            });
            entry.resume = resume;
            failed = reader.failed.take();
        }
        entry.covered = len;
    }
    match failed {
        // Counted as damage for this answer, but not remembered: the next
        // request tries again.
        Some(e) => {
            tracing::warn!(segment = %seg.path.display(), error = %e, "reading segment for digest failed");
        }
        None => {
            let mut cache = seg.digest.lock();
            if cache.epoch == epoch {
                cache.entry = Some(entry.clone());
            }
        }
    }
    Ok(Some(entry))
}

/// Adds to `sum` the batches with indexes in `part` that the segment's scan
/// verified, reading from the sparse index point before `part.start`.
fn read_part(
    seg: &Segment,
    entry: &CacheEntry,
    part: Range<u64>,
    sum: &mut LeafSum,
    io: &mut ReadStats<'_>,
) {
    let start = seek_index(seg, part.start);
    let mut reader = ChunkReader::new(&seg.file, entry.covered, io);
    scan_batches(&mut reader, start, entry.covered, &mut |h, _| {
        if h.log_index >= part.end {
            return ControlFlow::Break(());
        }
        if h.log_index >= part.start && ranges_contain(&entry.verified, h.log_index) {
            sum.add(h);
        }
        ControlFlow::Continue(())
    });
}

/// Where to start reading a segment for log index `index`: the last sparse
/// index point at or before it.
pub(crate) fn seek_index(seg: &Segment, index: u64) -> Resume {
    let meta = seg.meta.read();
    let rel = index.saturating_sub(seg.base_index);
    let i = meta
        .index
        .partition_point(|p| u64::from(p.rel_index) <= rel);
    match i.checked_sub(1).map(|i| meta.index[i]) {
        Some(p) => Resume {
            pos: u64::from(p.position),
            index: seg.base_index + u64::from(p.rel_index),
            offset: seg.base_offset + u64::from(p.rel_offset),
        },
        None => Resume {
            pos: 0,
            index: seg.base_index,
            offset: seg.base_offset,
        },
    }
}

fn ranges_contain(ranges: &[Range<u64>], i: u64) -> bool {
    let k = ranges.partition_point(|r| r.end <= i);
    ranges.get(k).is_some_and(|r| r.contains(&i))
}

/// Pushes `span` minus the (ascending, disjoint) `have` ranges onto `out`.
fn subtract_into(span: &Range<u64>, have: &[Range<u64>], out: &mut Vec<Range<u64>>) {
    let mut at = span.start;
    for r in have {
        if r.end <= at {
            continue;
        }
        if r.start >= span.end {
            break;
        }
        if r.start > at {
            out.push(at..r.start);
        }
        at = at.max(r.end);
    }
    if at < span.end {
        out.push(at..span.end);
    }
}

/// Sorts and merges overlapping or touching ranges.
fn merge_ranges(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtract_leaves_the_holes() {
        let mut out = Vec::new();
        subtract_into(&(0..20), &[2..5, 7..8, 15..30], &mut out);
        assert_eq!(out, vec![0..2, 5..7, 8..15]);
        let mut out = Vec::new();
        subtract_into(&(10..12), &[0..5, 30..40], &mut out);
        assert_eq!(out, vec![10..12]);
    }

    #[test]
    fn merge_joins_touching_ranges() {
        assert_eq!(merge_ranges(vec![5..7, 0..2, 2..3, 6..9]), vec![0..3, 5..9]);
    }

    #[test]
    fn leaf_sums_combine_in_any_order() {
        let headers: Vec<BatchHeader> = (0..5)
            .map(|i| BatchHeader {
                batch_len: 100 + i,
                crc: i * 7,
                magic: 2,
                flags: 0,
                requests: 0,
                count: 1,
                base_offset: u64::from(i),
                min_ts: 0,
                max_ts: 0,
                epoch: 3,
                log_index: u64::from(i),
            })
            .collect();
        let mut whole = LeafSum::default();
        headers.iter().for_each(|h| whole.add(h));
        let (mut x, mut y) = (LeafSum::default(), LeafSum::default());
        headers[3..].iter().for_each(|h| x.add(h));
        headers[..3].iter().for_each(|h| y.add(h));
        x.merge(&y);
        assert_eq!(whole, x);
        assert_eq!(whole.digest(0), x.digest(0));
        assert_ne!(whole.digest(0), whole.digest(1));
    }
}
