//! Verification: read back what was written and check it against the acks.
//!
//! Every acknowledged append told us, per partition, `(base_offset, count)`
//! where its entries landed, in request order. After the load, every
//! partition of every bench stream is read from its first to its last
//! offset and each entry of this run (recognised by its id, see `payload`)
//! is checked:
//!
//! - **missing**: acknowledged, never read back — data loss.
//! - **duplicated**: read back more than once — e.g. a retried append.
//! - **misplaced**: found inside an acknowledged range but not the entry
//!   the ack said would be at that offset, or an acknowledged entry found
//!   outside every range its ack reported.
//! - **unacknowledged but present**: a request that failed (a timeout, say)
//!   may still have been stored; that is allowed, and only reported.
//!
//! The bookkeeping ([`Verifier`]) is pure — acks and observed entries in,
//! counts out — and is tested without a server; [`read_back`] feeds it from
//! the HTTP API. Memory is two bytes per entry written, so even a long run
//! of tens of millions of entries verifies in a few hundred MB at most.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cairn_client::{Client, PartitionAppend, ReadParams};
use cairn_types::partition_for_source;
use serde::Serialize;

use super::payload::Payload;

/// Largest page the server serves for one partition read.
const PAGE: usize = 10_000;
/// How many ids of each kind of problem the report names.
const EXAMPLES: usize = 5;

/// One acknowledged append request.
#[derive(Debug, Clone)]
pub struct Ack {
    /// Index of the stream in the bench's stream list.
    pub stream: usize,
    pub worker: u32,
    /// The request held entries `seq_start..seq_start + count`.
    pub seq_start: u64,
    pub count: u32,
    pub partitions: Vec<PartitionAppend>,
}

/// Where one acknowledged partition share landed.
#[derive(Debug, Clone, Copy)]
struct Range {
    count: u64,
    worker: u32,
    seq_start: u64,
    request_count: u32,
}

/// The outcome of a verification.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VerifyReport {
    /// Entries the server acknowledged.
    pub acknowledged: u64,
    /// Entries of this run found when reading back (copies included).
    pub read_back: u64,
    pub missing: u64,
    pub duplicated: u64,
    pub misplaced: u64,
    pub unacknowledged_present: u64,
    /// A few ids of each problem, for a human to look at.
    pub examples: Vec<String>,
    pub seconds: f64,
    /// No missing, duplicated or misplaced entry.
    pub ok: bool,
}

/// Checks observed entries against acknowledged appends.
#[derive(Debug)]
pub struct Verifier<'a> {
    payload: &'a Payload,
    partitions: u32,
    /// [worker][seq]: times the entry was read back (saturating).
    seen: Vec<Vec<u8>>,
    /// [worker][seq]: the entry was acknowledged.
    acked: Vec<Vec<bool>>,
    /// (stream, partition) → base offset → acknowledged range.
    ranges: HashMap<(usize, u32), BTreeMap<u64, Range>>,
    /// The seqs of the range last looked up, in offset order.
    expected: HashMap<(usize, u32), (u64, Vec<u64>)>,
    acknowledged: u64,
    read_back: u64,
    misplaced: u64,
    examples: Vec<String>,
}

impl<'a> Verifier<'a> {
    /// `seq_ends[w]` is the number of entries worker `w` made.
    pub fn new(payload: &'a Payload, partitions: u32, seq_ends: &[u64]) -> Verifier<'a> {
        Verifier {
            payload,
            partitions,
            seen: seq_ends.iter().map(|n| vec![0; *n as usize]).collect(),
            acked: seq_ends.iter().map(|n| vec![false; *n as usize]).collect(),
            ranges: HashMap::new(),
            expected: HashMap::new(),
            acknowledged: 0,
            read_back: 0,
            misplaced: 0,
            examples: Vec::new(),
        }
    }

    /// Names a problem entry in the report, at most [`EXAMPLES`] per kind.
    fn example(&mut self, what: &str, worker: u32, seq: u64) {
        let prefix = format!("{what} ");
        if self
            .examples
            .iter()
            .filter(|e| e.starts_with(&prefix))
            .count()
            < EXAMPLES
        {
            let id = format!("bench:{}:{worker}:{seq}", self.payload.run_id());
            self.examples.push(format!("{prefix}{id}"));
        }
    }

    pub fn add_ack(&mut self, ack: &Ack) {
        let w = ack.worker as usize;
        let end = ack.seq_start + u64::from(ack.count);
        for seq in ack.seq_start..end {
            if let Some(a) = self.acked.get_mut(w).and_then(|v| v.get_mut(seq as usize)) {
                *a = true;
            }
        }
        self.acknowledged += u64::from(ack.count);
        for p in &ack.partitions {
            self.ranges
                .entry((ack.stream, p.partition))
                .or_default()
                .insert(
                    p.base_offset,
                    Range {
                        count: u64::from(p.count),
                        worker: ack.worker,
                        seq_start: ack.seq_start,
                        request_count: ack.count,
                    },
                );
        }
    }

    /// The seq that the acks say is at `offset`, if an ack covers it.
    fn expected_at(&mut self, stream: usize, partition: u32, offset: u64) -> Option<(u32, u64)> {
        let (base, range) = self
            .ranges
            .get(&(stream, partition))?
            .range(..=offset)
            .next_back()
            .map(|(b, r)| (*b, *r))?;
        if offset >= base + range.count {
            return None;
        }
        let cached = self.expected.get(&(stream, partition));
        if cached.is_none_or(|(b, _)| *b != base) {
            // The request's entries that hash to this partition, in order.
            let seqs = (range.seq_start..range.seq_start + u64::from(range.request_count))
                .filter(|s| {
                    partition_for_source(self.payload.source_of(*s), self.partitions) == partition
                })
                .collect();
            self.expected.insert((stream, partition), (base, seqs));
        }
        let (_, seqs) = &self.expected[&(stream, partition)];
        seqs.get((offset - base) as usize)
            .map(|seq| (range.worker, *seq))
    }

    /// One entry read back from `partition` of stream number `stream`.
    pub fn observe(&mut self, stream: usize, partition: u32, offset: u64, message: &str) {
        let expected = self.expected_at(stream, partition, offset);
        let Some((worker, seq)) = self.payload.parse_id(message) else {
            if let Some((w, s)) = expected {
                // Something else sits where an acked entry should be.
                self.misplaced += 1;
                self.example("misplaced", w, s);
            }
            return;
        };
        self.read_back += 1;
        let w = worker as usize;
        let Some(count) = self.seen.get_mut(w).and_then(|v| v.get_mut(seq as usize)) else {
            // An id this run never made.
            self.misplaced += 1;
            self.example("unknown", worker, seq);
            return;
        };
        *count = count.saturating_add(1);
        let acked = self.acked[w][seq as usize];
        if (acked || expected.is_some()) && expected != Some((worker, seq)) {
            self.misplaced += 1;
            self.example("misplaced", worker, seq);
        }
    }

    pub fn finish(mut self, seconds: f64) -> VerifyReport {
        let (mut missing, mut duplicated, mut unacked) = (0, 0, 0);
        let mut examples = Vec::new();
        for (w, (seen, acked)) in self.seen.iter().zip(&self.acked).enumerate() {
            for (seq, (n, a)) in seen.iter().zip(acked).enumerate() {
                match (*n, *a) {
                    (0, true) => {
                        missing += 1;
                        if missing <= EXAMPLES as u64 {
                            examples.push(("missing", w, seq));
                        }
                    }
                    (0, false) => {}
                    (1, a) => unacked += u64::from(!a),
                    (_, a) => {
                        duplicated += 1;
                        unacked += u64::from(!a);
                        if duplicated <= EXAMPLES as u64 {
                            examples.push(("duplicated", w, seq));
                        }
                    }
                }
            }
        }
        for (what, w, s) in examples {
            self.example(what, w as u32, s as u64);
        }
        VerifyReport {
            acknowledged: self.acknowledged,
            read_back: self.read_back,
            missing,
            duplicated,
            misplaced: self.misplaced,
            unacknowledged_present: unacked,
            ok: missing == 0 && duplicated == 0 && self.misplaced == 0,
            examples: self.examples,
            seconds,
        }
    }
}

/// Reads every partition of `streams` back through `client` and checks it.
/// Partitions are fetched concurrently (a few at a time) and fed to the
/// verifier in offset order per partition.
pub async fn read_back(
    client: &Client,
    streams: &[String],
    mut verifier: Verifier<'_>,
) -> Result<VerifyReport> {
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Page>>(16);
    let mut tasks = tokio::task::JoinSet::new();
    for (s, name) in streams.iter().enumerate() {
        let info = client
            .get_stream(name)
            .await
            .with_context(|| format!("verification: stream {name}"))?;
        for p in info.partitions {
            let (client, name, tx) = (client.clone(), name.clone(), tx.clone());
            tasks.spawn(async move {
                let mut offset = p.start_offset;
                while offset < p.end_offset {
                    let page = client
                        .read(
                            &name,
                            p.partition,
                            ReadParams {
                                offset: Some(offset),
                                limit: Some(PAGE),
                                consistency: None,
                            },
                        )
                        .await
                        .with_context(|| {
                            format!("verification: read {name}/{} at {offset}", p.partition)
                        });
                    let page = match page {
                        Ok(page) => page,
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    };
                    if page.entries.is_empty() {
                        break;
                    }
                    offset = page.next_offset;
                    let entries = page
                        .entries
                        .into_iter()
                        .map(|e| (e.offset, e.entry.message))
                        .collect();
                    let page = Page {
                        stream: s,
                        partition: p.partition,
                        entries,
                    };
                    if tx.send(Ok(page)).await.is_err() {
                        return;
                    }
                }
            });
        }
    }
    drop(tx);
    while let Some(page) = rx.recv().await {
        let page = page?;
        for (offset, message) in &page.entries {
            verifier.observe(page.stream, page.partition, *offset, message);
        }
    }
    while tasks.join_next().await.is_some() {}
    Ok(verifier.finish(secs(started.elapsed())))
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[derive(Debug)]
struct Page {
    stream: usize,
    partition: u32,
    entries: Vec<(u64, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARTITIONS: u32 = 3;

    /// Simulates a server: appends each request's entries to per-partition
    /// logs and answers with the ack the real server would give.
    #[derive(Default)]
    struct FakeServer {
        logs: HashMap<u32, Vec<String>>,
    }

    impl FakeServer {
        fn append(&mut self, payload: &Payload, worker: u32, seq_start: u64, count: u32) -> Ack {
            let mut shares: BTreeMap<u32, PartitionAppend> = BTreeMap::new();
            for seq in seq_start..seq_start + u64::from(count) {
                let p = partition_for_source(payload.source_of(seq), PARTITIONS);
                let log = self.logs.entry(p).or_default();
                let share = shares.entry(p).or_insert(PartitionAppend {
                    partition: p,
                    base_offset: log.len() as u64,
                    count: 0,
                });
                share.count += 1;
                log.push(format!("bench:{}:{worker}:{seq} pad", payload.run_id()));
            }
            Ack {
                stream: 0,
                worker,
                seq_start,
                count,
                partitions: shares.into_values().collect(),
            }
        }

        fn verify(&self, v: &mut Verifier<'_>) {
            for (p, log) in &self.logs {
                for (offset, message) in log.iter().enumerate() {
                    v.observe(0, *p, offset as u64, message);
                }
            }
        }
    }

    fn setup() -> (Payload, FakeServer, Vec<Ack>) {
        let payload = Payload::new("t", 7, 0);
        let mut server = FakeServer::default();
        let mut acks = Vec::new();
        for w in 0..2 {
            for r in 0..10 {
                acks.push(server.append(&payload, w, r * 20, 20));
            }
        }
        (payload, server, acks)
    }

    #[test]
    fn a_faithful_server_verifies_clean() {
        let (payload, server, acks) = setup();
        let mut v = Verifier::new(&payload, PARTITIONS, &[200, 200]);
        acks.iter().for_each(|a| v.add_ack(a));
        server.verify(&mut v);
        let r = v.finish(0.0);
        assert_eq!((r.acknowledged, r.read_back), (400, 400));
        assert!(r.ok, "{r:?}");
        assert_eq!(
            (
                r.missing,
                r.duplicated,
                r.misplaced,
                r.unacknowledged_present
            ),
            (0, 0, 0, 0)
        );
    }

    #[test]
    fn lost_duplicated_misplaced_and_unacked_entries_are_reported() {
        let (payload, mut server, mut acks) = setup();
        // A request that failed at the client but was stored anyway.
        server.append(&payload, 1, 200, 5);
        // A retried request: stored twice, acked once (the second time).
        server.append(&payload, 0, 200, 5);
        acks.push(server.append(&payload, 0, 200, 5));
        // Lose one acknowledged entry: blank it out.
        let log = server.logs.get_mut(&0).unwrap();
        log[3] = "something else".into();
        // Swap two entries of one partition: both are misplaced.
        let log = server.logs.get_mut(&1).unwrap();
        log.swap(0, 1);

        let mut v = Verifier::new(&payload, PARTITIONS, &[205, 205]);
        acks.iter().for_each(|a| v.add_ack(a));
        server.verify(&mut v);
        let r = v.finish(0.0);
        assert_eq!(r.missing, 1, "{r:?}");
        assert_eq!(r.duplicated, 5, "{r:?}");
        // The blanked slot, the two swapped entries, and the first copies of
        // the retried request (which sit outside every acked range).
        assert_eq!(r.misplaced, 1 + 2 + 5, "{r:?}");
        assert_eq!(r.unacknowledged_present, 5, "{r:?}");
        assert!(!r.ok);
        assert!(r.examples.iter().any(|e| e.starts_with("missing bench:t:")));
        assert!(
            r.examples
                .iter()
                .any(|e| e.starts_with("duplicated bench:t:0:2"))
        );
    }

    #[test]
    fn other_data_in_the_stream_is_ignored() {
        let (payload, server, acks) = setup();
        let mut v = Verifier::new(&payload, PARTITIONS, &[200, 200]);
        acks.iter().for_each(|a| v.add_ack(a));
        server.verify(&mut v);
        // After the acked ranges: another run's entry and plain text.
        v.observe(0, 0, 10_000, "bench:other:0:1");
        v.observe(0, 0, 10_001, "hello");
        let r = v.finish(0.0);
        assert!(r.ok, "{r:?}");
        assert_eq!(r.read_back, 400);
    }
}
