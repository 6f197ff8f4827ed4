//! What the simulated clients record and the checks of their history
//! against the replicas (see `sim_faults.rs` for the rules): a write's
//! entries are messages `writer/seq/k`, so every entry in a log names the
//! attempt it came from.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail, ensure};
use cairn_cluster::controller::meta::StreamMeta;
use cairn_cluster::transport::NodeId;
use cairn_types::api::Consistency;
use cairn_types::{BatchBuilder, Entry, Level, RecordBatch};
use parking_lot::Mutex;
use tokio::time::Instant;

use super::SimCluster;

/// What became of one write a client attempted.
#[derive(Debug, Clone)]
pub enum Outcome {
    Pending,
    Acked {
        base: u64,
        count: u32,
        at: Instant,
    },
    /// Certainly not written ([`ClusterError::is_retryable`]).
    Refused(String),
    /// May or may not have been written.
    Ambiguous(String),
}

#[derive(Debug, Clone)]
pub struct Attempt {
    pub partition: u32,
    /// Entries (their messages) in order.
    pub entries: usize,
    pub invoked: Instant,
    pub outcome: Outcome,
}

/// Every write attempted, by (writer, sequence number).
pub type History = Arc<Mutex<HashMap<(u32, u32), Attempt>>>;

pub fn message(writer: u32, seq: u32, k: usize) -> String {
    format!("{writer}/{seq}/{k}")
}

pub fn parse_message(m: &str) -> Option<(u32, u32, usize)> {
    let mut it = m.split('/');
    let w = it.next()?.parse().ok()?;
    let s = it.next()?.parse().ok()?;
    let k = it.next()?.parse().ok()?;
    it.next().is_none().then_some((w, s, k))
}

pub fn batch(writer: u32, seq: u32, n: usize) -> RecordBatch {
    let mut b = BatchBuilder::new();
    for k in 0..n {
        b.push(&Entry {
            timestamp_us: i64::from(seq),
            level: Level::Info,
            source: format!("w{writer}"),
            message: message(writer, seq, k),
            attributes: BTreeMap::new(),
        })
        .expect("small entry");
    }
    b.finish()
}

/// A leader read served during a schedule.
#[derive(Debug, Clone)]
pub struct Read {
    pub partition: u32,
    pub via: NodeId,
    /// The end of the writes acknowledged before the read was sent: a
    /// leader read must reach it.
    pub need: u64,
    /// The committed end the answer reported, and its entries.
    pub end: u64,
    pub entries: Vec<(u64, String)>,
}

pub type Reads = Arc<Mutex<Vec<Read>>>;

/// Every leader read reached what was acknowledged before it was sent,
/// and returned what the log holds at those offsets.
pub fn check_reads(
    p: u32,
    replicas: &BTreeMap<NodeId, Vec<RecordBatch>>,
    reads: &[Read],
) -> Result<()> {
    let log: HashMap<u64, String> = replicas
        .values()
        .next()
        .context("no replicas")?
        .iter()
        .flat_map(|b| {
            b.entries()
                .filter_map(|e| e.ok().map(|(o, e)| (o, e.message.to_owned())))
                .collect::<Vec<_>>()
        })
        .collect();
    for r in reads.iter().filter(|r| r.partition == p) {
        ensure!(
            r.end >= r.need,
            "partition {p}: a leader read via node {} saw the log end at {} (or failed as out \
             of range), but writes up to {} had been acknowledged before it was sent (a stale read)",
            r.via,
            r.end,
            r.need
        );
        for (o, m) in &r.entries {
            ensure!(
                log.get(o) == Some(m),
                "partition {p}: a read via node {} returned {m:?} at offset {o}, the log holds {:?}",
                r.via,
                log.get(o)
            );
        }
    }
    Ok(())
}

/// The checks of the module docs on one partition's converged replicas;
/// returns how many entries it holds.
pub fn check_partition(
    p: u32,
    replicas: &BTreeMap<NodeId, Vec<RecordBatch>>,
    history: &HashMap<(u32, u32), Attempt>,
) -> Result<usize> {
    let (&first_node, first) = replicas.iter().next().context("no replicas")?;
    for (node, batches) in replicas {
        let same = batches.len() == first.len()
            && batches
                .iter()
                .zip(first)
                .all(|(a, b)| a.as_bytes() == b.as_bytes());
        ensure!(
            same,
            "partition {p}: node {node}'s batches differ from node {first_node}'s \
             ({} vs {} batches)",
            batches.len(),
            first.len()
        );
    }
    // (offset, writer, seq, k), in log order.
    let mut entries = Vec::new();
    for b in first {
        for item in b.entries() {
            let (offset, e) = item.map_err(|e| anyhow!("partition {p}: bad batch: {e}"))?;
            let (w, s, k) = parse_message(e.message).ok_or_else(|| {
                anyhow!(
                    "partition {p}: entry {offset} {:?} was never written",
                    e.message
                )
            })?;
            entries.push((offset, w, s, k));
        }
    }
    for (i, (offset, ..)) in entries.iter().enumerate() {
        ensure!(
            *offset == i as u64,
            "partition {p}: entry {i} has offset {offset} (offsets must be dense from 0)"
        );
    }
    // Where each write's entries are: consecutive, complete, once.
    let mut at: HashMap<(u32, u32), u64> = HashMap::new();
    let mut i = 0;
    while i < entries.len() {
        let (offset, w, s, k) = entries[i];
        let a = history.get(&(w, s)).ok_or_else(|| {
            anyhow!("partition {p}: offset {offset} holds write {w}/{s}, never attempted")
        })?;
        ensure!(
            a.partition == p && k == 0,
            "partition {p}: offset {offset} holds entry {k} of write {w}/{s} (of partition {}) \
             where a write must start",
            a.partition
        );
        for j in 0..a.entries {
            let e = entries.get(i + j);
            ensure!(
                e.is_some_and(|e| (e.1, e.2, e.3) == (w, s, j)),
                "partition {p}: write {w}/{s} starts at offset {offset} but entry {j} of it \
                 is not at {} (found {e:?})",
                offset + j as u64
            );
        }
        ensure!(
            at.insert((w, s), offset).is_none(),
            "partition {p}: write {w}/{s} appears twice (at {} and {offset})",
            at[&(w, s)]
        );
        i += a.entries;
    }
    // What each client was told.
    let mut order = Vec::new();
    for (&(w, s), a) in history.iter().filter(|(_, a)| a.partition == p) {
        let found = at.get(&(w, s)).copied();
        match (&a.outcome, found) {
            (Outcome::Acked { base, count, at: t }, Some(o)) => {
                ensure!(
                    *base == o && *count as usize == a.entries,
                    "partition {p}: write {w}/{s} was acknowledged at offsets {base}+{count} \
                     but is at {o}+{}",
                    a.entries
                );
                order.push((o, a.invoked, Some(*t), (w, s)));
            }
            (Outcome::Acked { base, .. }, None) => {
                bail!("partition {p}: acknowledged write {w}/{s} (offset {base}) is missing")
            }
            (Outcome::Refused(why), Some(o)) => bail!(
                "partition {p}: write {w}/{s} was refused as not written ({why}) but is at \
                 offset {o}"
            ),
            (Outcome::Pending, _) => bail!("write {w}/{s} never finished"),
            (_, Some(o)) => order.push((o, a.invoked, None, (w, s))),
            (_, None) => {}
        }
    }
    // Real-time order: scanning from the end, the earliest acknowledgement
    // among later offsets must not precede this write's invocation.
    order.sort_by_key(|x| x.0);
    let mut earliest_later: Option<(Instant, (u32, u32))> = None;
    for &(o, invoked, acked, id) in order.iter().rev() {
        if let Some((t, later)) = earliest_later {
            ensure!(
                t >= invoked,
                "partition {p}: write {}/{} (offset {o}) was sent after write {}/{} was \
                 acknowledged, yet comes first",
                id.0,
                id.1,
                later.0,
                later.1
            );
        }
        if let Some(t) = acked
            && earliest_later.is_none_or(|(e, _)| t < e)
        {
            earliest_later = Some((t, id));
        }
    }
    Ok(entries.len())
}

/// Reads partition `p` through the cluster's read router (leader
/// consistency) via a node, and compares with the replicas' entries.
pub async fn check_read_api(
    sim: &SimCluster,
    stream: &StreamMeta,
    p: u32,
    replicas: &BTreeMap<NodeId, Vec<RecordBatch>>,
) -> Result<()> {
    let want: Vec<(u64, String)> = replicas
        .values()
        .next()
        .context("no replicas")?
        .iter()
        .flat_map(|b| {
            b.entries()
                .map(|e| e.map(|(o, e)| (o, e.message.to_owned())))
                .collect::<Vec<_>>()
        })
        .collect::<Result<_, _>>()?;
    for id in sim.running.ids() {
        let c = sim.running.get(id).context("running")?;
        let mut got = Vec::new();
        let mut next = None;
        loop {
            let r = c
                .read(stream, p, next, 1000, Consistency::Leader)
                .await
                .map_err(|e| anyhow!("read of partition {p} via node {id}: {e:?}"))?;
            if r.entries.is_empty() {
                break;
            }
            got.extend(
                r.entries
                    .iter()
                    .map(|e| (e.offset, e.entry.message.clone())),
            );
            next = Some(r.next_offset);
        }
        ensure!(
            got == want,
            "partition {p} read via node {id}: {} entries, the replicas hold {}",
            got.len(),
            want.len()
        );
    }
    Ok(())
}
