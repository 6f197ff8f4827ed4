//! Round-trip latency and calls/s of the transport over loopback.
//!
//! `cargo bench -p cairn-cluster --bench transport_rtt` runs the full
//! measurement (about 30 s); run without `--bench` (as `cargo test
//! --all-targets` does) it only makes a few calls, as a smoke test.
//! `CAIRN_BENCH_SECS` sets the seconds per throughput round (default 3).
//!
//! Both nodes live in this one process on a 2-worker runtime, so client and
//! server share the machine's cores: the numbers are a floor for what two
//! separate processes would do. Latency is closed-loop (one call in flight),
//! so coordinated omission does not arise there; the throughput rounds are
//! closed-loop too and report only calls/s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_cluster::transport::{Transport, TransportConfig, handler_fn};
use futures::FutureExt;

const DEADLINE: Duration = Duration::from_secs(10);

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let secs = std::env::var("CAIRN_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3u64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Run on a worker thread: `block_on`'s own thread is not a worker, and
    // every wake-up across it would add a thread hand-off to each sample.
    rt.block_on(async move { tokio::spawn(run(full, Duration::from_secs(secs))).await })
        .expect("bench task");
}

async fn start(id: u64) -> Transport {
    let echo = handler_fn(|_, _, _, payload| async move { Ok(payload) }.boxed());
    let addr = "127.0.0.1:0".parse().expect("addr");
    Transport::bind(TransportConfig::new(id, addr), echo)
        .await
        .expect("bind")
}

async fn run(full: bool, round: Duration) {
    let a = start(1).await;
    let b = start(2).await;
    a.set_peer(2, b.local_addr());
    b.set_peer(1, a.local_addr());
    a.call(2, 0, 0, Bytes::new(), DEADLINE)
        .await
        .expect("warm-up call");

    let n = if full { 20_000 } else { 100 };
    latency(&a, n, 64).await;
    if !full {
        println!("smoke run only; use `cargo bench` for numbers");
        return;
    }
    latency(&a, 5_000, 64 << 10).await;
    for concurrency in [1, 16, 64, 256] {
        throughput(&a, concurrency, 64, round).await;
    }
    for (concurrency, size) in [(16, 64 << 10), (4, 1 << 20)] {
        throughput(&a, concurrency, size, round).await;
    }
}

async fn latency(a: &Transport, n: usize, size: usize) {
    let payload = Bytes::from(vec![7u8; size]);
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        a.call(2, (i % 64) as u64, 0, payload.clone(), DEADLINE)
            .await
            .expect("call");
        samples.push(start.elapsed());
    }
    samples.sort();
    let q = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "round trip, {size} B payload, 1 in flight, {n} calls: p50 {:.1} µs  p90 {:.1} µs  p99 {:.1} µs  max {:.1} µs",
        us(q(0.50)),
        us(q(0.90)),
        us(q(0.99)),
        us(samples[samples.len() - 1]),
    );
}

async fn throughput(a: &Transport, concurrency: usize, size: usize, round: Duration) {
    let payload = Bytes::from(vec![7u8; size]);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let (a, payload, stop, done) = (a.clone(), payload.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    a.call(2, w as u64 % 64, 0, payload.clone(), DEADLINE)
                        .await
                        .expect("call");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let start = Instant::now();
    tokio::time::sleep(round).await;
    stop.store(true, Ordering::Relaxed);
    let calls = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    for w in workers {
        w.await.expect("worker");
    }
    let per_sec = calls as f64 / elapsed;
    println!(
        "throughput, {size} B payload, {concurrency} in flight: {per_sec:.0} calls/s  ({:.1} MiB/s each way)",
        per_sec * size as f64 / (1 << 20) as f64
    );
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
