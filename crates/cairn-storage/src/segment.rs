//! One segment: a `{base_index:020}-{base_offset:020}.log` file of batches
//! back to back, with a sparse in-memory index that is persisted beside it
//! when the segment is sealed.
//!
//! Segments are named (and ordered) by the Raft log index of their first
//! batch: control batches have no entries, so two segments may start at the
//! same entry offset, but never at the same log index. The name also carries
//! the entry offset the segment starts at, so an empty segment (a fresh log,
//! or one cut or purged to nothing) still knows where its offsets continue.
//!
//! The index has one point per `index_interval_bytes` of batches. Each point
//! names a batch start (log index and entry offset relative to the segment
//! base, byte position) and the largest timestamp of all batches *before*
//! it. Indexes and offsets grow with position, and so does that running
//! maximum, so every lookup is a binary search:
//! - index `i`: the last point with `rel_index <= i - base_index`.
//! - offset `o`: the last point with `rel_offset <= o - base_offset`.
//! - time `t`: the last point whose `max_ts_before < t`; every batch before it
//!   is older than `t`, so scanning starts there.
//!
//! On disk the points are split, Kafka style, into `.index` (rel offset, rel
//! index → position) and `.timeindex` (max ts → rel offset). Both carry a
//! header with the segment length they describe and a CRC, so a missing,
//! torn or stale index is noticed on open and rebuilt from the segment.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use cairn_types::batch::{BatchHeader, HEADER_LEN};
use cairn_types::{BatchError, RecordBatch};
use parking_lot::{Mutex, RwLock};

use crate::error::{IoContext, Result, StorageError};
use crate::fsutil::atomic_write;
use crate::leaf::DigestCache;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexPoint {
    pub rel_offset: u32,
    pub rel_index: u32,
    pub position: u32,
    pub max_ts_before: i64,
}

/// What readers may see of a segment. Published by the writer after each
/// commit; `len` never covers bytes that are not yet durable per policy.
#[derive(Debug, Clone)]
pub(crate) struct SegmentMeta {
    pub len: u64,
    pub next_offset: u64,
    /// The log index the next batch gets (base index when empty).
    pub next_index: u64,
    /// Term of the last batch; meaningless when empty.
    pub last_term: u64,
    pub min_ts: i64,
    pub max_ts: i64,
    pub index: Vec<IndexPoint>,
}

impl SegmentMeta {
    pub fn empty(base_index: u64, base_offset: u64) -> Self {
        SegmentMeta {
            len: 0,
            next_offset: base_offset,
            next_index: base_index,
            last_term: 0,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            index: Vec::new(),
        }
    }

    pub fn has_data(&self) -> bool {
        self.len > 0
    }

    /// Byte position to start scanning for `offset`.
    pub fn position_for_offset(&self, base_offset: u64, offset: u64) -> u64 {
        let rel = offset.saturating_sub(base_offset).min(u32::MAX as u64) as u32;
        let i = self.index.partition_point(|p| p.rel_offset <= rel);
        if i == 0 {
            0
        } else {
            u64::from(self.index[i - 1].position)
        }
    }

    /// Byte position to start scanning for log index `index`.
    pub fn position_for_index(&self, base_index: u64, index: u64) -> u64 {
        let rel = index.saturating_sub(base_index).min(u32::MAX as u64) as u32;
        let i = self.index.partition_point(|p| p.rel_index <= rel);
        if i == 0 {
            0
        } else {
            u64::from(self.index[i - 1].position)
        }
    }

    /// Byte position to start scanning for entries at or after `ts`.
    pub fn position_for_time(&self, ts: i64) -> u64 {
        let i = self.index.partition_point(|p| p.max_ts_before < ts);
        if i == 0 {
            0
        } else {
            u64::from(self.index[i - 1].position)
        }
    }
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub base_index: u64,
    pub base_offset: u64,
    pub path: PathBuf,
    pub file: File,
    pub meta: RwLock<SegmentMeta>,
    /// Digest partial sums of this segment's batches (see `digest`).
    pub digest: Mutex<DigestCache>,
}

impl Segment {
    pub fn new(
        base_index: u64,
        base_offset: u64,
        path: PathBuf,
        file: File,
        meta: SegmentMeta,
    ) -> Segment {
        Segment {
            base_index,
            base_offset,
            path,
            file,
            meta: RwLock::new(meta),
            digest: Mutex::new(DigestCache::default()),
        }
    }
}

pub(crate) fn segment_path(dir: &Path, base_index: u64, base_offset: u64) -> PathBuf {
    dir.join(format!("{base_index:020}-{base_offset:020}.log"))
}

pub(crate) fn index_paths(log_path: &Path) -> (PathBuf, PathBuf) {
    (
        log_path.with_extension("index"),
        log_path.with_extension("timeindex"),
    )
}

fn parse_u64_20(s: &str) -> Option<u64> {
    if s.len() != 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses `{base_index:020}-{base_offset:020}.log`.
pub(crate) fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".log")?;
    let (index, offset) = stem.split_once('-')?;
    Some((parse_u64_20(index)?, parse_u64_20(offset)?))
}

/// True for a segment name of the first (pre-replication) format,
/// `{base_offset:020}.log`, whose batches this build cannot read.
pub(crate) fn is_v1_segment_name(name: &str) -> bool {
    name.strip_suffix(".log").and_then(parse_u64_20).is_some()
}

/// Reads verified batches from a byte range of a segment file in large
/// chunks. Stops at the first batch that is torn, corrupt or out of sequence.
pub(crate) struct BatchCursor<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
    buf: Bytes,
    buf_start: u64,
    /// (offset, index) the next batch must have, when checked.
    expected: Option<(u64, u64)>,
}

pub(crate) const READ_CHUNK: usize = 256 << 10;

/// Why a cursor stopped before its end position.
#[derive(Debug)]
pub(crate) enum CursorError {
    /// Reading at `position` failed (`UnexpectedEof`: the file is shorter
    /// than the range the cursor was given).
    Io {
        position: u64,
        source: std::io::Error,
    },
    Batch {
        position: u64,
        error: BatchError,
    },
}

impl<'a> BatchCursor<'a> {
    pub fn new(file: &'a File, start: u64, end: u64) -> Self {
        BatchCursor {
            file,
            pos: start,
            end,
            buf: Bytes::new(),
            buf_start: start,
            expected: None,
        }
    }

    /// Requires batches to follow each other without gaps in offsets and
    /// log indexes from `(offset, index)`.
    pub fn expect_sequence_from(mut self, offset: u64, index: u64) -> Self {
        self.expected = Some((offset, index));
        self
    }

    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Ensures `need` bytes from `self.pos` are buffered (or as many as exist
    /// before `end`).
    fn fill(&mut self, need: usize) -> std::io::Result<()> {
        let have_from = (self.pos - self.buf_start) as usize;
        if self.buf.len() >= have_from + need {
            return Ok(());
        }
        let want = need.max(READ_CHUNK).min((self.end - self.pos) as usize);
        let mut chunk = BytesMut::zeroed(want);
        // A file cut short behind the log fails only the batches it lost,
        // not every batch that shares a read chunk with them.
        let got = read_up_to(self.file, &mut chunk, self.pos)?;
        if got < need {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the file ends {got} bytes after it, {need} needed"),
            ));
        }
        chunk.truncate(got);
        self.buf = chunk.freeze();
        self.buf_start = self.pos;
        Ok(())
    }

    pub fn next_batch(&mut self) -> Option<Result<RecordBatch, CursorError>> {
        if self.pos >= self.end {
            return None;
        }
        let position = self.pos;
        let fail = |error| Some(Err(CursorError::Batch { position, error }));
        let remaining = (self.end - self.pos) as usize;
        if remaining < HEADER_LEN {
            return fail(BatchError::Truncated {
                needed: HEADER_LEN,
                available: remaining,
            });
        }
        if let Err(e) = self.fill(HEADER_LEN) {
            return Some(Err(CursorError::Io {
                position,
                source: e,
            }));
        }
        let at = (self.pos - self.buf_start) as usize;
        let header = match BatchHeader::parse(&self.buf[at..]) {
            Ok(h) => h,
            Err(e) => return fail(e),
        };
        let len = header.batch_len as usize;
        if len > remaining {
            return fail(BatchError::Truncated {
                needed: len,
                available: remaining,
            });
        }
        if let Err(e) = self.fill(len) {
            return Some(Err(CursorError::Io {
                position,
                source: e,
            }));
        }
        let at = (self.pos - self.buf_start) as usize;
        let batch = match RecordBatch::from_bytes(self.buf.slice(at..at + len)) {
            Ok(b) => b,
            Err(e) => return fail(e),
        };
        if let Some((offset, index)) = self.expected {
            if batch.base_offset() != offset {
                return fail(BatchError::Malformed("batch offset out of sequence"));
            }
            if batch.log_index() != index {
                return fail(BatchError::Malformed("batch log index out of sequence"));
            }
            self.expected = Some((batch.next_offset(), index + 1));
        }
        self.pos += len as u64;
        Some(Ok(batch))
    }
}

/// Reads into `buf` from `pos` until it is full or the file ends; returns
/// the bytes read.
pub(crate) fn read_up_to(file: &File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The result of reading a segment from the start to learn its contents.
pub(crate) struct ScanOutcome {
    pub meta: SegmentMeta,
    /// Where and why the scan stopped early, if it did.
    pub stopped: Option<(u64, String)>,
    /// True when the bytes after the valid prefix are all zero (the
    /// preallocated tail), i.e. nothing was lost.
    pub clean_tail: bool,
    pub bytes_since_index: u64,
}

/// Scans a whole segment file, verifying every batch, and rebuilds its meta
/// and index. Used for the active segment on open and for sealed segments
/// whose index files are missing or stale.
pub(crate) fn scan_segment(
    file: &File,
    base_index: u64,
    base_offset: u64,
    index_interval: u32,
) -> Result<ScanOutcome> {
    let file_len = file.metadata().ctx(|| "stat segment".into())?.len();
    let mut meta = SegmentMeta::empty(base_index, base_offset);
    let mut bytes_since_index = 0u64;
    let mut cursor =
        BatchCursor::new(file, 0, file_len).expect_sequence_from(base_offset, base_index);
    let mut stopped = None;
    while let Some(item) = cursor.next_batch() {
        match item {
            Ok(batch) => {
                let position = cursor.position() - batch.len() as u64;
                if meta.index.is_empty() || bytes_since_index >= u64::from(index_interval) {
                    meta.index.push(IndexPoint {
                        rel_offset: (batch.base_offset() - base_offset) as u32,
                        rel_index: (batch.log_index() - base_index) as u32,
                        position: position as u32,
                        max_ts_before: meta.max_ts,
                    });
                    bytes_since_index = 0;
                }
                bytes_since_index += batch.len() as u64;
                if batch.count() > 0 {
                    meta.min_ts = meta.min_ts.min(batch.header().min_ts);
                    meta.max_ts = meta.max_ts.max(batch.header().max_ts);
                }
                meta.next_offset = batch.next_offset();
                meta.next_index = batch.log_index() + 1;
                meta.last_term = batch.term();
                meta.len = cursor.position();
            }
            Err(CursorError::Io { source: e, .. }) => {
                return Err(StorageError::Io {
                    context: "read segment".into(),
                    source: e,
                });
            }
            Err(CursorError::Batch { position, error }) => {
                stopped = Some((position, error.to_string()));
                break;
            }
        }
    }
    let clean_tail = match stopped {
        None => true,
        Some((pos, _)) => tail_is_zero(file, pos, file_len)?,
    };
    Ok(ScanOutcome {
        meta,
        stopped,
        clean_tail,
        bytes_since_index,
    })
}

pub(crate) fn tail_is_zero(file: &File, mut pos: u64, end: u64) -> Result<bool> {
    let mut buf = vec![0u8; 1 << 20];
    while pos < end {
        let n = ((end - pos) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], pos)
            .ctx(|| "read segment tail".into())?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(true)
}

const INDEX_MAGIC: &[u8; 4] = b"CIX2";
const TIME_INDEX_MAGIC: &[u8; 4] = b"CTX2";
/// magic, crc, covered segment length, point count, next offset, min ts, max
/// ts, next index, last term.
const INDEX_HEADER_LEN: usize = 4 + 4 + 8 + 4 + 8 + 8 + 8 + 8 + 8;
const OFFSET_POINT_LEN: usize = 12;
const TIME_POINT_LEN: usize = 12;

fn encode_index_file(magic: &[u8; 4], meta: &SegmentMeta, points: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(INDEX_HEADER_LEN + points.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&meta.len.to_le_bytes());
    out.extend_from_slice(&(meta.index.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta.next_offset.to_le_bytes());
    out.extend_from_slice(&meta.min_ts.to_le_bytes());
    out.extend_from_slice(&meta.max_ts.to_le_bytes());
    out.extend_from_slice(&meta.next_index.to_le_bytes());
    out.extend_from_slice(&meta.last_term.to_le_bytes());
    out.extend_from_slice(points);
    let crc = crc32c_of(&out[8..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

fn crc32c_of(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// Writes the segment's index files atomically (done when it is sealed).
pub(crate) fn write_index_files(log_path: &Path, meta: &SegmentMeta) -> Result<()> {
    let (index_path, time_path) = index_paths(log_path);
    let mut offsets = Vec::with_capacity(meta.index.len() * OFFSET_POINT_LEN);
    let mut times = Vec::with_capacity(meta.index.len() * TIME_POINT_LEN);
    for p in &meta.index {
        offsets.extend_from_slice(&p.rel_offset.to_le_bytes());
        offsets.extend_from_slice(&p.rel_index.to_le_bytes());
        offsets.extend_from_slice(&p.position.to_le_bytes());
        times.extend_from_slice(&p.max_ts_before.to_le_bytes());
        times.extend_from_slice(&p.rel_offset.to_le_bytes());
    }
    atomic_write(&index_path, &encode_index_file(INDEX_MAGIC, meta, &offsets))?;
    atomic_write(
        &time_path,
        &encode_index_file(TIME_INDEX_MAGIC, meta, &times),
    )
}

pub(crate) fn remove_index_files(log_path: &Path) -> Result<()> {
    let (index_path, time_path) = index_paths(log_path);
    for p in [index_path, time_path] {
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).ctx(|| format!("remove {}", p.display())),
        }
    }
    Ok(())
}

struct IndexFile {
    covered_len: u64,
    count: usize,
    next_offset: u64,
    min_ts: i64,
    max_ts: i64,
    next_index: u64,
    last_term: u64,
    points: Vec<u8>,
}

fn read_index_file(path: &Path, magic: &[u8; 4], point_len: usize) -> Option<IndexFile> {
    let raw = fs::read(path).ok()?;
    if raw.len() < INDEX_HEADER_LEN || &raw[0..4] != magic {
        return None;
    }
    let stored_crc = u32::from_le_bytes(raw[4..8].try_into().ok()?);
    if crc32c_of(&raw[8..]) != stored_crc {
        return None;
    }
    let u64_at = |i: usize| u64::from_le_bytes(raw[i..i + 8].try_into().expect("8 bytes"));
    let count = u32::from_le_bytes(raw[16..20].try_into().ok()?) as usize;
    let points = raw[INDEX_HEADER_LEN..].to_vec();
    if points.len() != count * point_len {
        return None;
    }
    Some(IndexFile {
        covered_len: u64_at(8),
        count,
        next_offset: u64_at(20),
        min_ts: u64_at(28) as i64,
        max_ts: u64_at(36) as i64,
        next_index: u64_at(44),
        last_term: u64_at(52),
        points,
    })
}

/// Loads a sealed segment's index if both files exist, are intact and
/// describe exactly `segment_len` bytes; `None` means "rebuild it".
pub(crate) fn load_index_files(log_path: &Path, segment_len: u64) -> Option<SegmentMeta> {
    let (index_path, time_path) = index_paths(log_path);
    let offsets = read_index_file(&index_path, INDEX_MAGIC, OFFSET_POINT_LEN)?;
    let times = read_index_file(&time_path, TIME_INDEX_MAGIC, TIME_POINT_LEN)?;
    if offsets.covered_len != segment_len
        || times.covered_len != segment_len
        || offsets.count != times.count
        || offsets.next_offset != times.next_offset
        || offsets.next_index != times.next_index
    {
        return None;
    }
    let mut index = Vec::with_capacity(offsets.count);
    for (o, t) in offsets
        .points
        .chunks_exact(OFFSET_POINT_LEN)
        .zip(times.points.chunks_exact(TIME_POINT_LEN))
    {
        let rel_offset = u32::from_le_bytes(o[0..4].try_into().ok()?);
        if rel_offset != u32::from_le_bytes(t[8..12].try_into().ok()?) {
            return None;
        }
        index.push(IndexPoint {
            rel_offset,
            rel_index: u32::from_le_bytes(o[4..8].try_into().ok()?),
            position: u32::from_le_bytes(o[8..12].try_into().ok()?),
            max_ts_before: i64::from_le_bytes(t[0..8].try_into().ok()?),
        });
    }
    Some(SegmentMeta {
        len: segment_len,
        next_offset: offsets.next_offset,
        next_index: offsets.next_index,
        last_term: offsets.last_term,
        min_ts: offsets.min_ts,
        max_ts: offsets.max_ts,
        index,
    })
}
