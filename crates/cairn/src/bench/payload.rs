//! What the bench writes: NDJSON entries whose messages carry a unique id.
//!
//! Entry `seq` of worker `w` in run `r` has the message `bench:r:w:seq`
//! followed by padding up to the requested line size, and the source
//! `bench-{seq mod sources}`. The id is what verification looks for when it
//! reads the data back; the source decides the partition
//! (`partition_for_source`), and because it is a function of `seq`,
//! verification can recompute which entries of a request went to which
//! partition, in which order, without having stored them.
//!
//! For the binary protocol the same entries are encoded as a record batch
//! (`build_batch`), so both APIs carry the same data and verify alike.
//!
//! Bodies are formatted by hand into a reused buffer rather than through
//! serde: the generator shares two cores with the node, and every
//! microsecond it spends per entry is one the node does not get. Every
//! field is plain ASCII that needs no JSON escaping, which a unit test
//! checks by parsing the output with serde.

use std::collections::BTreeMap;
use std::io::Write;

use cairn_types::{Attributes, BatchBuilder, EntryRef, Level, RecordBatch};

/// An NDJSON line is `LINE_START source LINE_MIDDLE message LINE_END`.
const LINE_START: &str = r#"{"source":""#;
const LINE_MIDDLE: &str = r#"","level":"INFO","message":""#;
const LINE_END: &str = "\"}\n";

/// Builds request bodies and recognises this run's ids.
#[derive(Debug, Clone)]
pub struct Payload {
    run_id: String,
    /// `"bench:{run_id}:"`, the prefix of every id of this run.
    prefix: String,
    sources: Vec<String>,
    /// Target NDJSON line length in bytes, newline included.
    entry_size: usize,
}

impl Payload {
    pub fn new(run_id: &str, sources: u32, entry_size: usize) -> Payload {
        assert!(sources > 0, "at least one source");
        Payload {
            run_id: run_id.to_string(),
            prefix: format!("bench:{run_id}:"),
            sources: (0..sources).map(|i| format!("bench-{i}")).collect(),
            entry_size,
        }
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The source of entry `seq` (of any worker).
    pub fn source_of(&self, seq: u64) -> &str {
        &self.sources[(seq % self.sources.len() as u64) as usize]
    }

    /// Appends `count` entries, `seq_start..seq_start + count` of `worker`,
    /// one JSON object per line.
    pub fn build(&self, worker: u32, seq_start: u64, count: u32, out: &mut Vec<u8>) {
        for seq in seq_start..seq_start + u64::from(count) {
            let source = self.source_of(seq);
            out.extend_from_slice(LINE_START.as_bytes());
            out.extend_from_slice(source.as_bytes());
            out.extend_from_slice(LINE_MIDDLE.as_bytes());
            self.message_into(worker, seq, out);
            out.extend_from_slice(LINE_END.as_bytes());
        }
    }

    /// The same entries as [`Payload::build`] (same sources, level and
    /// messages), as one record batch for the binary protocol, stamped
    /// with `timestamp_us`.
    pub fn build_batch(
        &self,
        worker: u32,
        seq_start: u64,
        count: u32,
        timestamp_us: i64,
    ) -> RecordBatch {
        let no_attributes = BTreeMap::new();
        let mut builder = BatchBuilder::with_capacity(count as usize * (self.entry_size + 8));
        let mut message = Vec::with_capacity(self.entry_size);
        for seq in seq_start..seq_start + u64::from(count) {
            message.clear();
            self.message_into(worker, seq, &mut message);
            let entry = EntryRef {
                timestamp_us,
                level: Level::Info,
                source: self.source_of(seq),
                message: std::str::from_utf8(&message).expect("messages are ASCII"),
                attributes: Attributes::Borrowed(&no_attributes),
            };
            // A request is bounded far below the batch limit by the CLI's
            // batch size and entry size ranges.
            builder
                .push_ref(&entry)
                .expect("a bench request fits a batch");
        }
        builder.finish()
    }

    /// The message of entry `seq` of `worker`: its id, then padding so the
    /// entry's NDJSON line is `entry_size` bytes long.
    fn message_into(&self, worker: u32, seq: u64, out: &mut Vec<u8>) {
        const PAD: &[u8] = &[b'x'; 256];
        let start = out.len();
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{}{worker}:{seq}", self.prefix);
        let line = LINE_START.len()
            + self.source_of(seq).len()
            + LINE_MIDDLE.len()
            + (out.len() - start)
            + LINE_END.len();
        // A space separates the id from the padding.
        let mut pad = self.entry_size.saturating_sub(line + 1);
        if pad > 0 {
            out.push(b' ');
            while pad > 0 {
                let n = pad.min(PAD.len());
                out.extend_from_slice(&PAD[..n]);
                pad -= n;
            }
        }
    }

    /// The (worker, seq) of a message written by this run, or `None` for
    /// anything else (another run's entries, foreign data).
    pub fn parse_id(&self, message: &str) -> Option<(u32, u64)> {
        let rest = message.strip_prefix(&self.prefix)?;
        let id = rest.split(' ').next()?;
        let (worker, seq) = id.split_once(':')?;
        Some((worker.parse().ok()?, seq.parse().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_types::NewEntry;

    #[test]
    fn bodies_are_valid_ndjson_of_the_requested_size_with_ids() {
        let p = Payload::new("r1", 3, 120);
        let mut body = Vec::new();
        p.build(2, 1_000_000, 5, &mut body);
        let text = std::str::from_utf8(&body).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5);
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(line.len() + 1, 120, "{line}");
            let e: NewEntry = serde_json::from_str(line).unwrap();
            let seq = 1_000_000 + i as u64;
            assert_eq!(e.source, p.source_of(seq));
            assert_eq!(p.parse_id(&e.message), Some((2, seq)));
        }
        // Too small a size still gives whole entries, just unpadded.
        let small = Payload::new("r1", 1, 10);
        let mut body = Vec::new();
        small.build(0, 7, 1, &mut body);
        let e: NewEntry = serde_json::from_slice(&body).unwrap();
        assert_eq!(e.message, "bench:r1:0:7");
        // Large sizes pad past the 256-byte chunk.
        let big = Payload::new("r1", 1, 1000);
        let mut body = Vec::new();
        big.build(0, 7, 1, &mut body);
        assert_eq!(body.len(), 1000);
    }

    #[test]
    fn batches_hold_the_same_entries_as_the_ndjson() {
        for size in [10, 120, 1000] {
            let p = Payload::new("r2", 5, size);
            let mut body = Vec::new();
            p.build(1, 40, 7, &mut body);
            let batch = p.build_batch(1, 40, 7, 99);
            batch.validate_entries().unwrap();
            let lines: Vec<NewEntry> = body
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice(l).unwrap())
                .collect();
            let entries: Vec<_> = batch.entries().map(|r| r.unwrap().1.to_owned()).collect();
            assert_eq!(lines.len(), entries.len());
            for (line, e) in lines.iter().zip(&entries) {
                assert_eq!((&line.source, &line.message), (&e.source, &e.message));
                assert_eq!((e.level, e.timestamp_us), (Level::Info, 99));
            }
        }
    }

    #[test]
    fn ids_of_other_runs_are_not_ours() {
        let p = Payload::new("abc", 1, 0);
        assert_eq!(p.parse_id("bench:abc:1:2 xxx"), Some((1, 2)));
        assert_eq!(p.parse_id("bench:abd:1:2"), None);
        assert_eq!(p.parse_id("bench:abc:1"), None);
        assert_eq!(p.parse_id("bench:abc:x:2"), None);
        assert_eq!(p.parse_id("hello"), None);
    }
}
