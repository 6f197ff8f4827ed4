//! The demo's steady load: batches of realistic entries at a fixed rate,
//! sent round-robin through every live node (each forwards to the
//! partition leaders), over HTTP or the binary protocol.
//!
//! Up to 20 batches per second go out on a fixed schedule, each timed from
//! when it was *due*, not from when it left, so a stalled cluster shows up
//! in the p99 instead of silently slowing the generator (`cairn bench`
//! does the same, with much more care; the demo only needs an honest
//! number). When `MAX_IN_FLIGHT` requests are already outstanding, a due
//! batch is shed and counted rather than queued without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cairn_client::{Client, TcpOptions, TcpProducer};
use cairn_types::NewEntry;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio::sync::{Semaphore, watch};
use tokio::time::MissedTickBehavior;

use super::entries::EntryGenerator;
use crate::cli::ProduceApi;

const MAX_BATCHES_PER_SECOND: f64 = 20.0;
const MAX_IN_FLIGHT: usize = 64;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// After the load stops, how long requests in flight may take to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Counters and latency of the load, shared with the status display.
#[derive(Debug)]
pub struct LoadStats {
    pub acked_entries: AtomicU64,
    pub failed_requests: AtomicU64,
    pub shed_entries: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    /// Write latency (µs from the intended send time) since the last
    /// [`LoadStats::take_interval`].
    interval: Mutex<Histogram<u64>>,
    /// The same over the whole run.
    total: Mutex<Histogram<u64>>,
}

fn latency_histogram() -> Histogram<u64> {
    // 1 µs .. 1 h at 3 significant digits; cannot fail with these bounds.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

impl Default for LoadStats {
    fn default() -> Self {
        LoadStats {
            acked_entries: AtomicU64::new(0),
            failed_requests: AtomicU64::new(0),
            shed_entries: AtomicU64::new(0),
            last_error: Mutex::new(None),
            interval: Mutex::new(latency_histogram()),
            total: Mutex::new(latency_histogram()),
        }
    }
}

impl LoadStats {
    fn record(&self, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, 3_600_000_000);
        let _ = self.interval.lock().record(us);
        let _ = self.total.lock().record(us);
    }

    /// The write p99 (ms) since the previous call, if any write finished.
    pub fn take_interval_p99_ms(&self) -> Option<f64> {
        let mut h = self.interval.lock();
        let p99 = (!h.is_empty()).then(|| h.value_at_quantile(0.99) as f64 / 1e3);
        h.reset();
        p99
    }

    /// (p50, p99, max) in ms over the whole run.
    pub fn total_ms(&self) -> Option<(f64, f64, f64)> {
        let h = self.total.lock();
        (!h.is_empty()).then(|| {
            (
                h.value_at_quantile(0.5) as f64 / 1e3,
                h.value_at_quantile(0.99) as f64 / 1e3,
                h.max() as f64 / 1e3,
            )
        })
    }
}

/// Where the load goes.
#[derive(Debug, Clone)]
pub struct Target {
    pub http_url: String,
    pub tcp_addr: String,
    /// Cleared by the supervisor once the node's process has exited, so
    /// the load stops sending to it.
    pub alive: Arc<AtomicBool>,
}

#[derive(Debug)]
pub struct LoadConfig {
    pub stream: String,
    pub rate: f64,
    pub api: ProduceApi,
    pub targets: Vec<Target>,
}

/// One node's connection: an HTTP client, or a binary-protocol producer
/// (re-established after a failure).
#[derive(Debug)]
struct Sink {
    target: Target,
    http: Client,
    tcp: Mutex<Option<TcpProducer>>,
}

impl Sink {
    async fn append(
        &self,
        api: ProduceApi,
        stream: &str,
        entries: &[NewEntry],
    ) -> Result<u64, String> {
        match api {
            ProduceApi::Http => self
                .http
                .append(stream, entries)
                .await
                .map(|r| r.appended)
                .map_err(|e| error_chain(&e)),
            ProduceApi::Binary => {
                let existing = self.tcp.lock().clone();
                let producer = match existing {
                    Some(p) => p,
                    None => {
                        let options = TcpOptions {
                            request_timeout: Some(REQUEST_TIMEOUT),
                            connect_timeout: Duration::from_secs(2),
                            ..TcpOptions::default()
                        };
                        let p = TcpProducer::connect_with(self.target.tcp_addr.as_str(), options)
                            .await
                            .map_err(|e| error_chain(&e))?;
                        *self.tcp.lock() = Some(p.clone());
                        p
                    }
                };
                let result = producer.append(stream, entries).await;
                if result.as_ref().is_err_and(|e| e.code().is_none()) {
                    // A transport failure, not a refusal: reconnect next time.
                    *self.tcp.lock() = None;
                }
                result.map(|r| r.appended).map_err(|e| error_chain(&e))
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

use cairn_types::clock::unix_us as now_us;

/// Runs the load until `stop` turns true, then waits (bounded) for the
/// requests in flight.
pub async fn run(config: LoadConfig, stats: Arc<LoadStats>, mut stop: watch::Receiver<bool>) {
    let http = cairn_client::http_builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_idle_timeout(cairn_client::POOL_IDLE_TIMEOUT)
        .build()
        .expect("an HTTP client without TLS builds");
    let sinks: Arc<Vec<Sink>> = Arc::new(
        config
            .targets
            .iter()
            .map(|t| Sink {
                target: t.clone(),
                http: Client::with_http_client(&t.http_url, http.clone())
                    .expect("nodes announce valid http:// URLs"),
                tcp: Mutex::new(None),
            })
            .collect(),
    );
    let batches_per_s = config.rate.min(MAX_BATCHES_PER_SECOND);
    let per_batch = config.rate / batches_per_s;
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / batches_per_s));
    // After a stall, carry on from now: the missed batches are not sent
    // late in a burst, so the rate shown dips, which is what happened.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let stream: Arc<str> = config.stream.into();
    let mut generator = EntryGenerator::new(now_us() as u64);
    let mut carry = 0.0;
    let mut next_node = 0usize;
    loop {
        let due = tokio::select! {
            due = ticks.tick() => due,
            _ = stop.wait_for(|s| *s) => break,
        };
        carry += per_batch;
        let count = carry.floor();
        carry -= count;
        let count = count as usize;
        if count == 0 {
            continue;
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            stats
                .shed_entries
                .fetch_add(count as u64, Ordering::Relaxed);
            continue;
        };
        // Round-robin over the nodes still running.
        let n = sinks.len();
        let Some(node) = (0..n)
            .map(|k| (next_node + k) % n)
            .find(|&i| sinks[i].target.alive.load(Ordering::Relaxed))
        else {
            stats
                .shed_entries
                .fetch_add(count as u64, Ordering::Relaxed);
            continue;
        };
        next_node = node + 1;
        let entries = generator.batch(count, now_us());
        let (sinks, stats, stream, api) =
            (sinks.clone(), stats.clone(), stream.clone(), config.api);
        tokio::spawn(async move {
            let result = sinks[node].append(api, &stream, &entries).await;
            match result {
                Ok(appended) => {
                    stats.record(due.elapsed());
                    stats.acked_entries.fetch_add(appended, Ordering::Relaxed);
                }
                Err(e) => {
                    stats.failed_requests.fetch_add(1, Ordering::Relaxed);
                    *stats.last_error.lock() = Some(format!("node {}: {e}", node + 1));
                }
            }
            drop(permit);
        });
    }
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, in_flight.acquire_many(MAX_IN_FLIGHT as u32)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_kept_per_interval_and_in_total() {
        let s = LoadStats::default();
        for ms in [1, 2, 3, 100] {
            s.record(Duration::from_millis(ms));
        }
        let p99 = s.take_interval_p99_ms().unwrap();
        assert!((99.0..=101.0).contains(&p99), "{p99}");
        assert_eq!(s.take_interval_p99_ms(), None, "the interval was reset");
        let (p50, p99, max) = s.total_ms().unwrap();
        assert!((1.9..=3.1).contains(&p50), "{p50}");
        assert!(p99 >= 99.0 && max >= 99.0);
    }
}
