//! The record batch: Cairn's unit of storage and replication.
//!
//! ```text
//! offset size field
//!  0     4    batch_len    whole batch, header included (u32 LE)
//!  4     4    crc          CRC-32C (Castagnoli) over bytes [8, batch_len)
//!  8     1    magic        format version, currently 2
//!  9     1    flags        bit 0: CONTROL (see below); other bits 0
//! 10     2    requests     client write requests this batch carries (u16 LE)
//! 12     4    count        number of entries
//! 16     8    base_offset  offset of the first entry; entry i has base_offset + i
//! 24     8    min_ts       smallest entry timestamp (µs)
//! 32     8    max_ts       largest entry timestamp (µs)
//! 40     8    epoch        Raft term of the entry this batch is; 0 on a single node
//! 48     8    log_index    Raft log index of the entry this batch is
//! 56     ..   payload      `count` entries, back to back
//! ```
//!
//! One batch is one Raft log entry, so `(epoch, log_index)` is its log id.
//! A **control** batch ([`FLAG_CONTROL`]) has `count = 0` and an opaque
//! payload (e.g. a serialized blank or membership entry, or a controller
//! command); it occupies a log index but no entry offsets, so its
//! `base_offset` equals the next batch's.
//!
//! Version 1 (48-byte header, no `log_index`) predates replication and is
//! refused with [`BatchError::BadMagic`].
//!
//! `requests` is telemetry only: how many client write requests were merged
//! into this batch (by the coalescers on the way to Raft), so every replica
//! that appends the batch can count its write stages per request
//! (`cairn_write_stage_seconds`). It travels inside the batch, so followers
//! and re-reads from disk see the leader's figure with no side channel.
//! 0 (what [`BatchBuilder`] writes, what producers must send, and what
//! batches written before the field existed hold) means one; it saturates at
//! `u16::MAX`. The bytes were a reserved 0 before, so older data reads the
//! same.
//!
//! Each entry in the payload of a data batch is: timestamp as a zigzag varint delta from the
//! previous entry (the first from 0), level as one byte, then source and
//! message as (varint length, UTF-8 bytes), then a varint attribute count and
//! that many (key, value) strings in the same form.
//!
//! The CRC covers the header fields after itself, so a flipped offset, count or
//! timestamp is caught just like a flipped payload byte. Offsets are assigned
//! by the log when the batch is appended: [`RecordBatch::stamped_header`]
//! rewrites `base_offset`/`epoch`/`log_index` and the CRC without copying
//! the payload.

use bytes::Bytes;

use crate::entry::{Attributes, Entry, EntryRef, Level};
use crate::varint;

pub const HEADER_LEN: usize = 56;
pub const MAGIC: u8 = 2;
/// `flags` bit of a control batch: `count = 0`, the payload is opaque bytes.
pub const FLAG_CONTROL: u8 = 0x01;
/// Flag bits this version knows; a batch with any other bit set is refused.
const KNOWN_FLAGS: u8 = FLAG_CONTROL;
/// Upper bound on one batch, so a corrupt length field cannot make a reader
/// allocate gigabytes. Producers' requests are capped well below this.
pub const MAX_BATCH_LEN: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("batch length {0} is outside [{HEADER_LEN}, {MAX_BATCH_LEN}]")]
    BadLength(usize),
    #[error(
        "unsupported batch format version {0} (this build reads version {MAGIC}; version 1 data from before replication is not readable)"
    )]
    BadMagic(u8),
    #[error("unknown batch flags {0:#04x}")]
    BadFlags(u8),
    #[error("batch checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("malformed batch payload: {0}")]
    Malformed(&'static str),
    #[error("batch would exceed {MAX_BATCH_LEN} bytes")]
    TooLarge,
}

/// The decoded fixed header of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub batch_len: u32,
    pub crc: u32,
    pub magic: u8,
    pub flags: u8,
    /// Raw `requests` field; read it with [`BatchHeader::requests`].
    pub requests: u16,
    pub count: u32,
    pub base_offset: u64,
    pub min_ts: i64,
    pub max_ts: i64,
    pub epoch: u64,
    pub log_index: u64,
}

impl BatchHeader {
    /// Parses a header without checking the CRC (that needs the whole batch).
    /// Checks the length bounds and the magic, so a scanner can tell garbage
    /// (e.g. the zeroed, preallocated tail of a segment) from a batch.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < HEADER_LEN {
            return Err(BatchError::Truncated {
                needed: HEADER_LEN,
                available: buf.len(),
            });
        }
        let u16_at = |i: usize| u16::from_le_bytes(buf[i..i + 2].try_into().expect("2 bytes"));
        let u32_at = |i: usize| u32::from_le_bytes(buf[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(buf[i..i + 8].try_into().expect("8 bytes"));
        let header = BatchHeader {
            batch_len: u32_at(0),
            crc: u32_at(4),
            magic: buf[8],
            flags: buf[9],
            requests: u16_at(10),
            count: u32_at(12),
            base_offset: u64_at(16),
            min_ts: u64_at(24) as i64,
            max_ts: u64_at(32) as i64,
            epoch: u64_at(40),
            log_index: u64_at(48),
        };
        let len = header.batch_len as usize;
        if !(HEADER_LEN..=MAX_BATCH_LEN).contains(&len) {
            return Err(BatchError::BadLength(len));
        }
        if header.magic != MAGIC {
            return Err(BatchError::BadMagic(header.magic));
        }
        if header.flags & !KNOWN_FLAGS != 0 {
            return Err(BatchError::BadFlags(header.flags));
        }
        if header.is_control() && header.count != 0 {
            return Err(BatchError::Malformed("control batch with entries"));
        }
        Ok(header)
    }

    /// The offset after the last entry of this batch.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.count)
    }

    /// True for a control batch (no entries, opaque payload).
    pub fn is_control(&self) -> bool {
        self.flags & FLAG_CONTROL != 0
    }

    /// Client write requests this batch carries: 0 for a control batch,
    /// at least 1 for a data batch (a raw 0 means one).
    pub fn requests(&self) -> u32 {
        if self.is_control() {
            0
        } else {
            u32::from(self.requests.max(1))
        }
    }

    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&self.batch_len.to_le_bytes());
        h[4..8].copy_from_slice(&self.crc.to_le_bytes());
        h[8] = self.magic;
        h[9] = self.flags;
        h[10..12].copy_from_slice(&self.requests.to_le_bytes());
        h[12..16].copy_from_slice(&self.count.to_le_bytes());
        h[16..24].copy_from_slice(&self.base_offset.to_le_bytes());
        h[24..32].copy_from_slice(&self.min_ts.to_le_bytes());
        h[32..40].copy_from_slice(&self.max_ts.to_le_bytes());
        h[40..48].copy_from_slice(&self.epoch.to_le_bytes());
        h[48..56].copy_from_slice(&self.log_index.to_le_bytes());
        h
    }
}

fn checksum(header_tail: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(header_tail), payload)
}

/// Builds a batch from entries. The result has base offset 0 until the log
/// stamps it.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    requests: u16,
    count: u32,
    min_ts: i64,
    max_ts: i64,
    prev_ts: i64,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::with_capacity(4096)
    }
}

impl BatchBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER_LEN + bytes);
        buf.resize(HEADER_LEN, 0);
        BatchBuilder {
            buf,
            requests: 0,
            count: 0,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            prev_ts: 0,
        }
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Records that the batch carries `n` client write requests (when
    /// several are merged into one); saturates at `u16::MAX`.
    pub fn set_requests(&mut self, n: u32) {
        self.requests = u16::try_from(n).unwrap_or(u16::MAX);
    }

    /// Encoded size so far, header included.
    pub fn size(&self) -> usize {
        self.buf.len()
    }

    pub fn push(&mut self, entry: &Entry) -> Result<(), BatchError> {
        self.push_ref(&entry.as_ref())
    }

    pub fn push_ref(&mut self, e: &EntryRef<'_>) -> Result<(), BatchError> {
        let start = self.buf.len();
        varint::put_u64(
            &mut self.buf,
            varint::zigzag(e.timestamp_us.wrapping_sub(self.prev_ts)),
        );
        self.buf.push(e.level as u8);
        varint::put_str(&mut self.buf, e.source);
        varint::put_str(&mut self.buf, e.message);
        varint::put_u64(&mut self.buf, e.attributes.len() as u64);
        for (k, v) in e.attributes.iter() {
            varint::put_str(&mut self.buf, k);
            varint::put_str(&mut self.buf, v);
        }
        if self.buf.len() > MAX_BATCH_LEN || self.count == u32::MAX {
            self.buf.truncate(start);
            return Err(BatchError::TooLarge);
        }
        self.prev_ts = e.timestamp_us;
        self.min_ts = self.min_ts.min(e.timestamp_us);
        self.max_ts = self.max_ts.max(e.timestamp_us);
        self.count += 1;
        Ok(())
    }

    /// Appends every entry of `batch` (re-encoded: entries are delta
    /// encoded, so payloads cannot simply be concatenated). On an error
    /// some of its entries may already be in.
    pub fn extend_from(&mut self, batch: &RecordBatch) -> Result<(), BatchError> {
        for item in batch.entries() {
            let (_, entry) = item?;
            self.push_ref(&entry)?;
        }
        Ok(())
    }

    pub fn finish(self) -> RecordBatch {
        let mut buf = self.buf;
        let (min_ts, max_ts) = if self.count == 0 {
            (0, 0)
        } else {
            (self.min_ts, self.max_ts)
        };
        let mut header = BatchHeader {
            batch_len: buf.len() as u32,
            crc: 0,
            magic: MAGIC,
            flags: 0,
            requests: self.requests,
            count: self.count,
            base_offset: 0,
            min_ts,
            max_ts,
            epoch: 0,
            log_index: 0,
        };
        let encoded = header.encode();
        header.crc = checksum(&encoded[8..], &buf[HEADER_LEN..]);
        buf[..HEADER_LEN].copy_from_slice(&header.encode());
        RecordBatch {
            header,
            bytes: Bytes::from(buf),
        }
    }
}

fn read_str<'a>(buf: &'a [u8], pos: &mut usize) -> Result<&'a str, BatchError> {
    varint::get_str(buf, pos).map_err(BatchError::Malformed)
}

/// A complete, checksum-verified batch held in shared bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBatch {
    header: BatchHeader,
    bytes: Bytes,
}

impl RecordBatch {
    /// Takes ownership of exactly one encoded batch and verifies it: length,
    /// version and CRC. The payload's entry structure is checked by
    /// [`RecordBatch::validate_entries`] (needed only for untrusted input).
    pub fn from_bytes(bytes: Bytes) -> Result<RecordBatch, BatchError> {
        let header = BatchHeader::parse(&bytes)?;
        let len = header.batch_len as usize;
        if bytes.len() < len {
            return Err(BatchError::Truncated {
                needed: len,
                available: bytes.len(),
            });
        }
        if bytes.len() > len {
            return Err(BatchError::Malformed("trailing bytes after batch"));
        }
        let computed = checksum(&bytes[8..HEADER_LEN], &bytes[HEADER_LEN..]);
        if computed != header.crc {
            return Err(BatchError::Checksum {
                stored: header.crc,
                computed,
            });
        }
        Ok(RecordBatch { header, bytes })
    }

    /// A control batch carrying `payload` (opaque to the log). Offsets, term
    /// and index are stamped when it is appended.
    pub fn control(payload: &[u8]) -> Result<RecordBatch, BatchError> {
        let len = HEADER_LEN + payload.len();
        if len > MAX_BATCH_LEN {
            return Err(BatchError::TooLarge);
        }
        let mut header = BatchHeader {
            batch_len: len as u32,
            crc: 0,
            magic: MAGIC,
            flags: FLAG_CONTROL,
            requests: 0,
            count: 0,
            base_offset: 0,
            min_ts: 0,
            max_ts: 0,
            epoch: 0,
            log_index: 0,
        };
        header.crc = checksum(&header.encode()[8..], payload);
        let mut buf = Vec::with_capacity(len);
        buf.extend_from_slice(&header.encode());
        buf.extend_from_slice(payload);
        Ok(RecordBatch {
            header,
            bytes: Bytes::from(buf),
        })
    }

    /// Splits a buffer holding batches back to back into verified batches.
    pub fn split_all(mut bytes: Bytes) -> Result<Vec<RecordBatch>, BatchError> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let header = BatchHeader::parse(&bytes)?;
            let len = header.batch_len as usize;
            if bytes.len() < len {
                return Err(BatchError::Truncated {
                    needed: len,
                    available: bytes.len(),
                });
            }
            out.push(RecordBatch::from_bytes(bytes.split_to(len))?);
        }
        Ok(out)
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    pub fn base_offset(&self) -> u64 {
        self.header.base_offset
    }

    pub fn count(&self) -> u32 {
        self.header.count
    }

    pub fn next_offset(&self) -> u64 {
        self.header.next_offset()
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.header.count == 0
    }

    pub fn is_control(&self) -> bool {
        self.header.is_control()
    }

    /// The Raft log index stamped on this batch.
    pub fn log_index(&self) -> u64 {
        self.header.log_index
    }

    /// The Raft term stamped on this batch (`epoch`).
    pub fn term(&self) -> u64 {
        self.header.epoch
    }

    /// The whole encoded batch, header included.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn payload(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..]
    }

    /// The header this batch gets when the log places it at `base_offset`
    /// as Raft entry `log_index` of term `epoch`; write it followed by
    /// [`RecordBatch::payload`]. Only the stamped fields and the CRC change.
    pub fn stamped_header(&self, base_offset: u64, epoch: u64, log_index: u64) -> [u8; HEADER_LEN] {
        let mut header = BatchHeader {
            base_offset,
            epoch,
            log_index,
            crc: 0,
            ..self.header
        };
        let encoded = header.encode();
        header.crc = checksum(&encoded[8..], self.payload());
        header.encode()
    }

    /// A copy placed at `base_offset` as entry `log_index` of term `epoch`.
    pub fn restamped(&self, base_offset: u64, epoch: u64, log_index: u64) -> RecordBatch {
        let mut buf = Vec::with_capacity(self.bytes.len());
        buf.extend_from_slice(&self.stamped_header(base_offset, epoch, log_index));
        buf.extend_from_slice(self.payload());
        RecordBatch::from_bytes(Bytes::from(buf)).expect("restamped batch is valid")
    }

    /// The one partition of a stream with `partitions` partitions that all
    /// entries hash to (by source), if there is one (always, for a
    /// one-entry batch): such a batch can be stored, or sent to that
    /// partition's leader, as it is. `None` also when an entry does not
    /// decode or there is none.
    pub fn single_partition(&self, partitions: u32) -> Option<u32> {
        let mut only = None;
        for item in self.entries() {
            let (_, e) = item.ok()?;
            let p = crate::entry::partition_for_source(e.source, partitions);
            match only {
                None => only = Some(p),
                Some(q) if q != p => return None,
                Some(_) => {}
            }
        }
        only
    }

    /// Iterates the entries with their offsets.
    pub fn entries(&self) -> EntryIter<'_> {
        EntryIter {
            payload: self.payload(),
            pos: 0,
            index: 0,
            count: self.header.count,
            base_offset: self.header.base_offset,
            prev_ts: 0,
        }
    }

    /// Decodes every entry and checks the payload is exactly `count` entries
    /// with timestamps inside the header's range. Use on untrusted batches.
    /// A control batch's payload is opaque, so it is always refused here:
    /// producers may not send one.
    pub fn validate_entries(&self) -> Result<(), BatchError> {
        if self.is_control() {
            return Err(BatchError::Malformed(
                "control batch where entries were expected",
            ));
        }
        let mut it = self.entries();
        for item in &mut it {
            let (_, e) = item?;
            if e.timestamp_us < self.header.min_ts || e.timestamp_us > self.header.max_ts {
                return Err(BatchError::Malformed(
                    "entry timestamp outside the header's range",
                ));
            }
        }
        if it.pos != it.payload.len() {
            return Err(BatchError::Malformed("trailing bytes after the last entry"));
        }
        Ok(())
    }
}

/// Yields `(offset, entry)` pairs; an `Err` ends the iteration.
#[derive(Debug)]
pub struct EntryIter<'a> {
    payload: &'a [u8],
    pos: usize,
    index: u32,
    count: u32,
    base_offset: u64,
    prev_ts: i64,
}

impl<'a> EntryIter<'a> {
    fn decode_next(&mut self) -> Result<EntryRef<'a>, BatchError> {
        let p = self.payload;
        let delta =
            varint::get_u64(p, &mut self.pos).ok_or(BatchError::Malformed("bad timestamp"))?;
        let timestamp_us = self.prev_ts.wrapping_add(varint::unzigzag(delta));
        let level = *p
            .get(self.pos)
            .ok_or(BatchError::Malformed("missing level"))?;
        let level = Level::from_u8(level).ok_or(BatchError::Malformed("unknown level"))?;
        self.pos += 1;
        let source = read_str(p, &mut self.pos)?;
        let message = read_str(p, &mut self.pos)?;
        let count = varint::get_u64(p, &mut self.pos)
            .ok_or(BatchError::Malformed("bad attribute count"))?;
        let attrs_start = self.pos;
        for _ in 0..count {
            read_str(p, &mut self.pos)?;
            read_str(p, &mut self.pos)?;
        }
        self.prev_ts = timestamp_us;
        Ok(EntryRef {
            timestamp_us,
            level,
            source,
            message,
            attributes: Attributes::Encoded {
                count: count as usize,
                raw: &p[attrs_start..self.pos],
            },
        })
    }
}

impl<'a> Iterator for EntryIter<'a> {
    type Item = Result<(u64, EntryRef<'a>), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.count {
            return None;
        }
        let offset = self.base_offset + u64::from(self.index);
        match self.decode_next() {
            Ok(e) => {
                self.index += 1;
                Some(Ok((offset, e)))
            }
            Err(err) => {
                self.index = self.count;
                Some(Err(err))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn arb_entry() -> impl Strategy<Value = Entry> {
        (
            any::<i64>(),
            0u8..6,
            ".{0,12}",
            ".{0,64}",
            proptest::collection::btree_map(".{0,6}", ".{0,10}", 0..4),
        )
            .prop_map(|(ts, level, source, message, attributes)| Entry {
                timestamp_us: ts,
                level: Level::from_u8(level).unwrap(),
                source,
                message,
                attributes,
            })
    }

    fn build(entries: &[Entry]) -> RecordBatch {
        let mut b = BatchBuilder::new();
        for e in entries {
            b.push(e).unwrap();
        }
        b.finish()
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips(entries in proptest::collection::vec(arb_entry(), 0..20),
                                     base in 0u64..u64::MAX / 2, epoch in any::<u64>(), index in any::<u64>()) {
            let batch = build(&entries).restamped(base, epoch, index);
            let decoded = RecordBatch::from_bytes(batch.as_bytes().clone()).unwrap();
            decoded.validate_entries().unwrap();
            prop_assert_eq!(decoded.base_offset(), base);
            prop_assert_eq!(decoded.header().epoch, epoch);
            prop_assert_eq!(decoded.log_index(), index);
            prop_assert!(!decoded.is_control());
            prop_assert_eq!(decoded.count() as usize, entries.len());
            let got: Vec<(u64, Entry)> = decoded.entries().map(|r| r.map(|(o, e)| (o, e.to_owned())).unwrap()).collect();
            for (i, ((offset, e), want)) in got.iter().zip(&entries).enumerate() {
                prop_assert_eq!(*offset, base + i as u64);
                prop_assert_eq!(e, want);
            }
            if !entries.is_empty() {
                prop_assert_eq!(decoded.header().min_ts, entries.iter().map(|e| e.timestamp_us).min().unwrap());
                prop_assert_eq!(decoded.header().max_ts, entries.iter().map(|e| e.timestamp_us).max().unwrap());
            }
        }

        #[test]
        fn any_flipped_byte_is_detected(entries in proptest::collection::vec(arb_entry(), 1..8),
                                        pos_seed in any::<usize>(), bit in 0u8..8) {
            let batch = build(&entries).restamped(17, 3, 9);
            let mut raw = batch.as_bytes().to_vec();
            let pos = pos_seed % raw.len();
            raw[pos] ^= 1 << bit;
            prop_assert!(RecordBatch::from_bytes(Bytes::from(raw)).is_err());
        }

        #[test]
        fn control_batches_round_trip_and_detect_flips(payload in proptest::collection::vec(any::<u8>(), 0..200),
                                                       base in 0u64..u64::MAX / 2, epoch in any::<u64>(), index in any::<u64>(),
                                                       pos_seed in any::<usize>(), bit in 0u8..8) {
            let batch = RecordBatch::control(&payload).unwrap().restamped(base, epoch, index);
            let decoded = RecordBatch::from_bytes(batch.as_bytes().clone()).unwrap();
            prop_assert!(decoded.is_control());
            prop_assert_eq!(decoded.count(), 0);
            prop_assert_eq!(decoded.next_offset(), base);
            prop_assert_eq!((decoded.term(), decoded.log_index()), (epoch, index));
            prop_assert_eq!(decoded.payload(), &payload[..]);
            prop_assert_eq!(decoded.entries().count(), 0);
            prop_assert!(decoded.validate_entries().is_err());
            let mut raw = batch.as_bytes().to_vec();
            let pos = pos_seed % raw.len();
            raw[pos] ^= 1 << bit;
            prop_assert!(RecordBatch::from_bytes(Bytes::from(raw)).is_err());
        }

        #[test]
        fn truncation_is_detected(entries in proptest::collection::vec(arb_entry(), 1..8), cut_seed in any::<usize>()) {
            let batch = build(&entries);
            let cut = cut_seed % batch.len();
            prop_assert!(RecordBatch::from_bytes(batch.as_bytes().slice(..cut)).is_err());
        }
    }

    #[test]
    fn split_all_reads_back_to_back_batches() {
        let e = Entry {
            timestamp_us: 5,
            level: Level::Error,
            source: "db".into(),
            message: "disk on fire".into(),
            attributes: BTreeMap::from([("host".into(), "a1".into())]),
        };
        let a = build(std::slice::from_ref(&e)).restamped(0, 0, 0);
        let b = build(&[e.clone(), e]).restamped(1, 0, 1);
        let mut all = a.as_bytes().to_vec();
        all.extend_from_slice(b.as_bytes());
        let batches = RecordBatch::split_all(Bytes::from(all)).unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[1].base_offset(), 1);
        let (offset, entry) = batches[1].entries().nth(1).unwrap().unwrap();
        assert_eq!(offset, 2);
        assert_eq!(entry.attributes.get("host"), Some("a1"));
    }

    #[test]
    fn the_request_count_survives_stamping_and_defaults_to_one() {
        let e = Entry {
            timestamp_us: 5,
            level: Level::Info,
            source: "db".into(),
            message: "m".into(),
            attributes: BTreeMap::new(),
        };
        // A producer's batch (raw 0) counts as one request.
        let single = build(std::slice::from_ref(&e));
        assert_eq!(single.header().requests, 0);
        assert_eq!(single.header().requests(), 1);
        let mut b = BatchBuilder::new();
        b.push(&e).unwrap();
        b.set_requests(7);
        let merged = b.finish();
        // Stamped by the log (as on disk and on a follower): still 7, CRC valid.
        let stamped = merged.restamped(10, 2, 3);
        assert_eq!(stamped.header().requests(), 7);
        let reread = RecordBatch::from_bytes(stamped.as_bytes().clone()).unwrap();
        assert_eq!(reread.header().requests(), 7);
        let mut huge = BatchBuilder::new();
        huge.push(&e).unwrap();
        huge.set_requests(1 << 20);
        assert_eq!(huge.finish().header().requests(), u32::from(u16::MAX));
        assert_eq!(RecordBatch::control(b"x").unwrap().header().requests(), 0);
    }

    #[test]
    fn version_1_batches_are_refused_by_name() {
        let mut raw = build(&[]).as_bytes().to_vec();
        raw[8] = 1;
        let err = BatchHeader::parse(&raw).unwrap_err();
        assert_eq!(err, BatchError::BadMagic(1));
        assert!(err.to_string().contains("version 1"), "{err}");
    }

    #[test]
    fn unknown_flags_and_control_batches_with_entries_are_refused() {
        let mut raw = build(&[]).as_bytes().to_vec();
        raw[9] = 0x80;
        assert_eq!(BatchHeader::parse(&raw), Err(BatchError::BadFlags(0x80)));
        let mut raw = RecordBatch::control(b"x").unwrap().as_bytes().to_vec();
        raw[12] = 1;
        assert!(matches!(
            BatchHeader::parse(&raw),
            Err(BatchError::Malformed(_))
        ));
    }

    #[test]
    fn zeroed_bytes_are_not_a_batch() {
        assert!(matches!(
            BatchHeader::parse(&[0u8; 64]),
            Err(BatchError::BadLength(0))
        ));
    }

    #[test]
    fn well_formed_crc_with_garbage_payload_fails_validation() {
        // A producer could send a batch whose CRC matches but whose payload
        // lies about its count: validate_entries must refuse it.
        let mut b = BatchBuilder::new();
        b.push(&Entry {
            timestamp_us: 1,
            level: Level::Info,
            source: "s".into(),
            message: "m".into(),
            attributes: BTreeMap::new(),
        })
        .unwrap();
        let batch = b.finish();
        let mut header = *batch.header();
        header.count = 2;
        let mut raw = header.encode().to_vec();
        raw.extend_from_slice(batch.payload());
        let crc = checksum(&raw[8..HEADER_LEN], &raw[HEADER_LEN..]);
        raw[4..8].copy_from_slice(&crc.to_le_bytes());
        let forged = RecordBatch::from_bytes(Bytes::from(raw)).unwrap();
        assert!(forged.validate_entries().is_err());
    }
}
