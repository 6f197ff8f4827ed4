//! Merkle leaves and the per-segment digest cache: the arithmetic of
//! anti-entropy's leaves (see `digest` for the design) and what a segment
//! remembers of its last scan. Below the segments (each holds a
//! [`DigestCache`]) and above nothing but the batch header, so the segment
//! files and the digests over them do not import each other.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::ops::Range;
use std::os::unix::fs::MetadataExt;

use cairn_types::batch::BatchHeader;

/// Log indexes per Merkle leaf: leaf `k` covers `[k * LEAF_SPAN, (k + 1) * LEAF_SPAN)`.
pub const LEAF_SPAN: u64 = 256;

/// A blake3 hash.
pub type Digest = [u8; 32];

/// Wrapping sums of batch hashes, and how many went in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LeafSum {
    pub(crate) lanes: [u64; 4],
    pub(crate) count: u64,
}

impl LeafSum {
    pub(crate) fn add(&mut self, header: &BatchHeader) {
        let mut h = blake3::Hasher::new();
        h.update(&header.log_index.to_le_bytes());
        h.update(&header.epoch.to_le_bytes());
        h.update(&header.crc.to_le_bytes());
        h.update(&header.batch_len.to_le_bytes());
        let hash = h.finalize();
        for (lane, chunk) in self.lanes.iter_mut().zip(hash.as_bytes().chunks_exact(8)) {
            *lane = lane.wrapping_add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        self.count += 1;
    }

    pub(crate) fn merge(&mut self, other: &LeafSum) {
        for (lane, o) in self.lanes.iter_mut().zip(other.lanes) {
            *lane = lane.wrapping_add(o);
        }
        self.count += other.count;
    }

    pub(crate) fn digest(&self, leaf: u64) -> Digest {
        let mut h = blake3::Hasher::new();
        h.update(b"cairn-leaf");
        h.update(&leaf.to_le_bytes());
        h.update(&self.count.to_le_bytes());
        for lane in self.lanes {
            h.update(&lane.to_le_bytes());
        }
        *h.finalize().as_bytes()
    }
}

/// One segment's share of one leaf, with the lowest and highest index in
/// it (to tell whether a range that cuts the leaf can use it whole).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PartialLeaf {
    pub(crate) sum: LeafSum,
    pub(crate) first: u64,
    pub(crate) last: u64,
}

/// What identifies a file's contents cheaply: a change to any of these
/// means it may have been written, cut or replaced since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileIdentity {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) len: u64,
    pub(crate) mtime: (i64, i64),
    pub(crate) ctime: (i64, i64),
}

impl FileIdentity {
    pub(crate) fn of(m: &fs::Metadata) -> FileIdentity {
        FileIdentity {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    pub(crate) fn same_file(&self, other: &FileIdentity) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
    }
}

/// Where a scan of a segment continues: a byte position and the log index
/// and offset the batch there must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resume {
    pub(crate) pos: u64,
    pub(crate) index: u64,
    pub(crate) offset: u64,
}

/// What a segment scan found. See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct CacheEntry {
    /// Seen before the scan read the file.
    pub(crate) identity: FileIdentity,
    /// Bytes `[0, covered)` were examined.
    pub(crate) covered: u64,
    /// Where to continue once the segment grows; `None` when the scan
    /// stopped at damage it cannot get past.
    pub(crate) resume: Option<Resume>,
    /// Indexes of the verified batches: merged, ascending.
    pub(crate) verified: Vec<Range<u64>>,
    pub(crate) leaves: BTreeMap<u64, PartialLeaf>,
}

impl CacheEntry {
    /// Nothing examined yet of a segment whose first batch has log index
    /// `base_index` and entry offset `base_offset`.
    pub(crate) fn new(identity: FileIdentity, base_index: u64, base_offset: u64) -> CacheEntry {
        CacheEntry {
            identity,
            covered: 0,
            resume: Some(Resume {
                pos: 0,
                index: base_index,
                offset: base_offset,
            }),
            verified: Vec::new(),
            leaves: BTreeMap::new(),
        }
    }
}

/// Adds a verified batch to a segment's partial leaves and verified set.
pub(crate) fn absorb(
    leaves: &mut BTreeMap<u64, PartialLeaf>,
    verified: &mut Vec<Range<u64>>,
    header: &BatchHeader,
) {
    let i = header.log_index;
    let leaf = leaves.entry(i / LEAF_SPAN).or_insert(PartialLeaf {
        sum: LeafSum::default(),
        first: i,
        last: i,
    });
    leaf.sum.add(header);
    leaf.first = leaf.first.min(i);
    leaf.last = leaf.last.max(i);
    match verified.last_mut() {
        Some(r) if r.end == i => r.end = i + 1,
        _ => verified.push(i..i + 1),
    }
}

/// A segment's digest state, shared by every request. `epoch` counts
/// invalidations: a scan stores its result only if none happened since it
/// looked, so a truncate or repair racing with it cannot be undone.
#[derive(Debug, Default)]
pub(crate) struct DigestCache {
    pub(crate) epoch: u64,
    pub(crate) entry: Option<CacheEntry>,
}

impl DigestCache {
    /// Forgets what was cached (the segment's bytes changed under the log's
    /// own hand: truncated, repaired, deleted).
    pub(crate) fn invalidate(&mut self) {
        self.entry = None;
        self.epoch += 1;
    }

    /// Re-records the file's identity after the writer changed it without
    /// changing the batches (sealing trims the preallocated tail and
    /// fsyncs), so the sealed segment is not read again for that.
    pub(crate) fn refresh_identity(&mut self, file: &File) {
        if let Some(entry) = &mut self.entry {
            match file.metadata() {
                Ok(m) => entry.identity = FileIdentity::of(&m),
                Err(_) => self.invalidate(),
            }
        }
    }
}
