//! Coalescing concurrent writes of one partition into fewer, larger batches.
//!
//! Used twice on the write path: on every node, writes for a partition are
//! coalesced before they are routed (so a thousand 1-entry requests arriving
//! at a follower become a few forwarded frames, not a thousand), and on the
//! leader before they are proposed to Raft (one Raft entry per batch).
//!
//! Writes queue on one channel. At most `max_in_flight` merged batches are
//! handed to the sink at a time; whatever queued meanwhile becomes the next
//! batch (up to `max_batch_bytes`). Under light load a write goes out at
//! once (no timer, so no added latency); under heavy load batches grow by
//! themselves, which is what a linger timer approximates. A lone write's
//! batch is passed as is; several are merged by re-encoding their entries
//! (entries are delta-encoded, so payloads cannot be concatenated). Each
//! write learns its own offsets from the merged batch's base offset and its
//! position in it; a failure of the merged batch is every write's failure.
//!
//! A merged batch's header counts the client requests it carries (the sum
//! of its parts' counts; see `cairn_types::batch`), so a batch merged at a
//! forwarding node still stands for each of its requests at the leader and
//! in every replica's log.
//!
//! With a stage observer (the leader's proposal coalescer), each write's
//! wait from `submit` until its merged batch is handed to the sink is
//! recorded as the `linger` write stage, and the sink's replication time
//! (if it reports one) as `replicate`, each weighted by the requests the
//! write carries: one sample per client request, whether it came alone or
//! merged with others by a forwarding node.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_telemetry::metrics::WriteStage;

use cairn_types::batch::{BatchBuilder, RecordBatch};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::StageObserver;
use super::error::ClusterError;
use crate::raft::types::Appended;

/// What a sink answers: where the batch landed and, for a leader's
/// proposal, how long it took from durable here to committed.
pub(crate) type Delivered = (Appended, Option<Duration>);

/// A write waiting for its batch's outcome.
struct Pending {
    batch: RecordBatch,
    queued: Instant,
    reply: oneshot::Sender<Result<Appended, ClusterError>>,
}

/// The sending side of one coalescer; the task stops when it is dropped.
#[derive(Debug, Clone)]
pub(crate) struct Coalescer {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Coalescer {
    /// Starts a coalescer whose merged batches go to `sink`; `stages`
    /// is told each write's `linger` and `replicate` times.
    pub(crate) fn spawn<S, F>(
        max_in_flight: usize,
        max_batch_bytes: usize,
        stages: Option<StageObserver>,
        sink: S,
    ) -> Self
    where
        S: Fn(RecordBatch) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Delivered, ClusterError>> + Send + 'static,
    {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(
            rx,
            max_in_flight,
            max_batch_bytes,
            stages,
            Arc::new(sink),
        ));
        Coalescer { queue }
    }

    /// Queues `batch` and waits for the outcome of the batch it joined.
    pub(crate) async fn submit(&self, batch: RecordBatch) -> Result<Appended, ClusterError> {
        let (reply, rx) = oneshot::channel();
        self.queue
            .send(Pending {
                batch,
                queued: Instant::now(),
                reply,
            })
            .map_err(|_| ClusterError::ShuttingDown)?;
        rx.await.map_err(|_| ClusterError::ShuttingDown)?
    }
}

async fn run<S, F>(
    mut rx: mpsc::UnboundedReceiver<Pending>,
    max_in_flight: usize,
    max_batch_bytes: usize,
    stages: Option<StageObserver>,
    sink: Arc<S>,
) where
    S: Fn(RecordBatch) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Delivered, ClusterError>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let mut carry: Option<Pending> = None;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut bytes = first.batch.len();
        let mut writes = vec![first];
        while bytes < max_batch_bytes {
            match rx.try_recv() {
                Ok(p) if bytes + p.batch.len() > max_batch_bytes => {
                    carry = Some(p);
                    break;
                }
                Ok(p) => {
                    bytes += p.batch.len();
                    writes.push(p);
                }
                Err(_) => break,
            }
        }
        let (sink, stages) = (sink.clone(), stages.clone());
        tokio::spawn(async move {
            deliver(sink.as_ref(), stages.as_deref(), writes).await;
            drop(slot);
        });
    }
}

async fn deliver<S, F>(
    sink: &S,
    stages: Option<&(dyn Fn(WriteStage, Duration, u32) + Send + Sync)>,
    writes: Vec<Pending>,
) where
    S: Fn(RecordBatch) -> F,
    F: Future<Output = Result<Delivered, ClusterError>>,
{
    let merged = if writes.len() == 1 {
        Ok(writes[0].batch.clone())
    } else {
        merge(writes.iter().map(|w| &w.batch))
    };
    if let Some(record) = stages {
        let now = Instant::now();
        for w in &writes {
            let waited = now.saturating_duration_since(w.queued);
            record(WriteStage::Linger, waited, w.batch.header().requests());
        }
    }
    let result = match merged {
        Ok(batch) => sink(batch).await,
        Err(e) => Err(ClusterError::Storage(e)),
    };
    match result {
        Ok((appended, replicate)) => {
            if let (Some(record), Some(d)) = (stages, replicate) {
                let requests = writes.iter().map(|w| w.batch.header().requests()).sum();
                record(WriteStage::Replicate, d, requests);
            }
            let mut offset = appended.base_offset;
            for w in writes {
                let count = w.batch.count();
                let _ = w.reply.send(Ok(Appended {
                    base_offset: offset,
                    count,
                }));
                offset += u64::from(count);
            }
        }
        Err(e) => {
            for w in writes {
                let _ = w.reply.send(Err(e.clone()));
            }
        }
    }
}

/// Re-encodes several batches' entries into one, which carries all their
/// requests.
fn merge<'a>(batches: impl Iterator<Item = &'a RecordBatch>) -> Result<RecordBatch, String> {
    let mut builder = BatchBuilder::new();
    let mut requests = 0u32;
    for batch in batches {
        requests = requests.saturating_add(batch.header().requests());
        builder.extend_from(batch).map_err(|e| e.to_string())?;
    }
    builder.set_requests(requests);
    Ok(builder.finish())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use cairn_types::NewEntry;

    use super::*;

    fn batch(n: usize, tag: &str) -> RecordBatch {
        let mut b = BatchBuilder::new();
        for i in 0..n {
            let e = NewEntry {
                timestamp: Some(1_000 + i as i64),
                level: None,
                source: "s".into(),
                message: format!("{tag}-{i}"),
                attributes: Default::default(),
            }
            .into_entry(0);
            b.push(&e).unwrap();
        }
        b.finish()
    }

    #[tokio::test]
    async fn concurrent_writes_are_merged_and_each_learns_its_offsets() {
        let next = Arc::new(AtomicU64::new(0));
        let calls = Arc::new(AtomicU64::new(0));
        let (n, c) = (next.clone(), calls.clone());
        let lingered = Arc::new(AtomicU64::new(0));
        let l = lingered.clone();
        let stages: StageObserver = Arc::new(move |stage, _, requests| {
            assert_eq!(stage, WriteStage::Linger);
            l.fetch_add(u64::from(requests), Ordering::Relaxed);
        });
        let coalescer = Coalescer::spawn(1, 1 << 20, Some(stages), move |b: RecordBatch| {
            let (n, c) = (n.clone(), c.clone());
            async move {
                c.fetch_add(1, Ordering::Relaxed);
                // A slow sink, so writes pile up behind the first.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                let base = n.fetch_add(u64::from(b.count()), Ordering::Relaxed);
                Ok((
                    Appended {
                        base_offset: base,
                        count: b.count(),
                    },
                    None,
                ))
            }
        });
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let c = coalescer.clone();
                tokio::spawn(async move { c.submit(batch(2, &format!("w{i}"))).await })
            })
            .collect();
        let mut offsets = Vec::new();
        for t in tasks {
            let a = t.await.unwrap().unwrap();
            assert_eq!(a.count, 2);
            offsets.push(a.base_offset);
        }
        offsets.sort_unstable();
        assert_eq!(offsets, (0..50).map(|i| i * 2).collect::<Vec<_>>());
        assert!(calls.load(Ordering::Relaxed) < 50, "nothing was merged");
        // One linger sample per write, not per merged batch.
        assert_eq!(lingered.load(Ordering::Relaxed), 50);
    }

    /// Writes that are already merges (from a forwarding node's coalescer)
    /// count once per request they carry, in the stages and in the merged
    /// batch the sink gets.
    #[tokio::test]
    async fn stages_and_merged_batches_count_every_request_carried() {
        let linger = Arc::new(AtomicU64::new(0));
        let replicate = Arc::new(AtomicU64::new(0));
        let proposed = Arc::new(AtomicU64::new(0));
        let (l, r, p) = (linger.clone(), replicate.clone(), proposed.clone());
        let stages: StageObserver = Arc::new(move |stage, _, requests| {
            let counter = match stage {
                WriteStage::Linger => &l,
                WriteStage::Replicate => &r,
                other => panic!("unexpected stage {other:?}"),
            };
            counter.fetch_add(u64::from(requests), Ordering::Relaxed);
        });
        let coalescer = Coalescer::spawn(1, 1 << 20, Some(stages), move |b: RecordBatch| {
            p.fetch_add(u64::from(b.header().requests()), Ordering::Relaxed);
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                Ok((
                    Appended {
                        base_offset: 0,
                        count: b.count(),
                    },
                    Some(std::time::Duration::from_micros(300)),
                ))
            }
        });
        let tasks: Vec<_> = (0..30u32)
            .map(|i| {
                let c = coalescer.clone();
                let mut b = BatchBuilder::new();
                for e in batch(1, &format!("w{i}")).entries() {
                    b.push_ref(&e.unwrap().1).unwrap();
                }
                // 1, 2 or 3 requests; 1 is also what a raw 0 means.
                b.set_requests(i % 3 + 1);
                let b = b.finish();
                tokio::spawn(async move { c.submit(b).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let requests: u64 = (0..30u64).map(|i| i % 3 + 1).sum();
        assert_eq!(linger.load(Ordering::Relaxed), requests);
        assert_eq!(replicate.load(Ordering::Relaxed), requests);
        assert_eq!(proposed.load(Ordering::Relaxed), requests);
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_write_in_it() {
        let coalescer = Coalescer::spawn(1, 1 << 20, None, |_b: RecordBatch| async {
            Err(ClusterError::Indeterminate("boom".into()))
        });
        let r = coalescer.submit(batch(1, "x")).await;
        assert!(matches!(r, Err(ClusterError::Indeterminate(_))));
    }
}
