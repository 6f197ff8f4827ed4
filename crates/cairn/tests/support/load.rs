//! A writer that loads a cluster through its live nodes and records every
//! acknowledged entry, and the check that replicas kept all of them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use cairn_client::Client;
use cairn_types::{NewEntry, partition_for_source};
use parking_lot::Mutex;

use super::cluster::TestCluster;

pub fn entry(source: &str, message: String) -> NewEntry {
    NewEntry {
        timestamp: None,
        level: None,
        source: source.to_owned(),
        message,
        attributes: BTreeMap::new(),
    }
}

/// What the writer got acknowledged: (partition, offset) → message.
pub type Acked = Arc<Mutex<BTreeMap<(u32, u64), String>>>;

/// Writes batches of 5 entries through live nodes until `stop`, recording
/// every acknowledged entry at its offset.
async fn write_until(
    urls: Arc<Mutex<Vec<Option<String>>>>,
    stream: &'static str,
    partitions: u32,
    acked: Acked,
    stop: Arc<AtomicBool>,
) -> (u64, u64) {
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut seq = 0u64;
    let http = cairn_client::http_builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    while !stop.load(Ordering::Relaxed) {
        let live: Vec<String> = urls.lock().iter().flatten().cloned().collect();
        let Some(url) = live.get(seq as usize % live.len().max(1)).cloned() else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let entries: Vec<NewEntry> = (0..5)
            .map(|i| entry(&format!("svc-{}", (seq + i) % 11), format!("w{seq}-{i}")))
            .collect();
        seq += 1;
        let client = Client::with_http_client(&url, http.clone()).expect("url");
        match client.append(stream, &entries).await {
            Ok(r) => {
                ok += 1;
                let mut next: HashMap<u32, u64> = r
                    .partitions
                    .iter()
                    .map(|p| (p.partition, p.base_offset))
                    .collect();
                let mut acked = acked.lock();
                for e in entries {
                    let p = partition_for_source(&e.source, partitions);
                    let off = next.get_mut(&p).expect("partition in response");
                    acked.insert((p, *off), e.message);
                    *off += 1;
                }
            }
            Err(_) => {
                failed += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    (ok, failed)
}

/// A writer running through the cluster's live nodes.
pub struct Load {
    pub urls: Arc<Mutex<Vec<Option<String>>>>,
    pub acked: Acked,
    stop: Arc<AtomicBool>,
    writer: tokio::task::JoinHandle<(u64, u64)>,
}

impl Load {
    pub fn start(c: &TestCluster, stream: &'static str, partitions: u32) -> Load {
        let urls = Arc::new(Mutex::new(
            (0..c.nodes.len()).map(|i| c.url(i)).collect::<Vec<_>>(),
        ));
        let acked: Acked = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn(write_until(
            urls.clone(),
            stream,
            partitions,
            acked.clone(),
            stop.clone(),
        ));
        Load {
            urls,
            acked,
            stop,
            writer,
        }
    }

    /// Stops the writer: (acknowledged batches, failed requests, entries).
    pub async fn stop(self) -> Result<(u64, u64, BTreeMap<(u32, u64), String>)> {
        self.stop.store(true, Ordering::Relaxed);
        let (ok, failed) = self.writer.await?;
        let acked = self.acked.lock().clone();
        Ok((ok, failed, acked))
    }
}

/// Once replicas agree: offsets have no holes, every acknowledged entry is
/// at its offset, and no entry is stored twice.
pub async fn verify_acknowledged(
    c: &TestCluster,
    stream: &str,
    partitions: u32,
    acked: &BTreeMap<(u32, u64), String>,
) -> Result<()> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for p in 0..partitions {
        let log = c.converged(stream, p).await?;
        for (i, e) in log.iter().enumerate() {
            ensure!(
                e.offset == i as u64,
                "partition {p}: hole before offset {}",
                e.offset
            );
            *seen.entry(e.entry.message.clone()).or_default() += 1;
        }
        for ((_, off), message) in acked.range((p, 0)..(p + 1, 0)) {
            let stored = log
                .get(*off as usize)
                .with_context(|| format!("acknowledged {message} at {p}/{off} is missing"))?;
            ensure!(
                &stored.entry.message == message,
                "{p}/{off}: acknowledged {message}, stored {}",
                stored.entry.message
            );
        }
    }
    for (message, n) in &seen {
        ensure!(*n == 1, "{message} stored {n} times");
    }
    Ok(())
}
