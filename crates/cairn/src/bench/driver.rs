//! The driver: turns schedules into requests against real nodes.
//!
//! One *writer* per `--connections`, each with its own client (HTTP, or
//! one binary-protocol connection with `--api binary`), its own
//! [`Schedule`] (its share of the rate, staggered or separately seeded) and
//! its own [`Recorder`]. A writer sleeps until a slot's intended time; if
//! fewer than `--max-in-flight` of its requests are outstanding it sends at
//! once, otherwise the slot is *backlogged* and sent as soon as a request
//! completes. Either way the request runs on its own task, so the writer is
//! back on its schedule immediately: many requests are in flight per
//! writer. (Over HTTP/1.1 each in-flight request needs its own keep-alive
//! socket, so a writer holds up to `--max-in-flight` of them; the binary
//! protocol multiplexes them on one TCP connection per writer.)
//!
//! Backlogged slots are served strictly in order, and a slot that comes due
//! while the writer still waits for an earlier one's free slot is
//! backlogged as well. Once the plan has ended and `--grace` has passed, the
//! writer stops waiting: slots still unsent are recorded as such (see
//! `recorder`), so a stalled server cannot keep the bench running forever.
//!
//! Reads (optional) follow the same rules with their own schedule and
//! recorders, one per read kind, so their latency is reported apart from the
//! writes'.
//!
//! A reporter task wakes every second, drains every recorder's interval
//! figures, and writes one row: to the interval log (CSV, flushed each
//! line, so a run can be plotted while it goes and survives a crash), to the
//! live progress line on a terminal, and into the final report.
//!
//! Pacing runs on plain threads (one per writer, from tokio's blocking
//! pool) sleeping with `std::thread::sleep`, not on tokio's timer: tokio's
//! timer wheel has millisecond ticks and rounds every sleep up to the next
//! one, which made sends ~1.2 ms late on average — as much as the server's
//! whole service time — and that lateness lands in the response time. A
//! thread's `nanosleep` is late by tens of microseconds. The pacing thread
//! builds each body *before* sleeping, then hands the request to the async
//! runtime; `sent` is taken when the request task starts, so the hand-off
//! counts as generator lag, not as server time. The recorder's timer-lag
//! histogram reports what remains.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cairn_client::{
    AppendResponse, Client, QueryParams, ReadParams, TcpError, TcpOptions, TcpProducer,
};
use cairn_types::RecordBatch;
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::interval::{IntervalRow, Live, interval_row, rate};
use super::payload::Payload;
use super::recorder::{Bucket, Completion, Outcome, Recorder};
use super::scenario::Phase;
use super::schedule::{PhaseRate, Schedule, Slot};
use super::verify::Ack;
use crate::cli::{Arrival, ProduceApi, ReadKind};

/// How the driver runs; fixed for the whole bench.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub targets: Vec<String>,
    pub api: ProduceApi,
    /// Binary-protocol addresses, for `ProduceApi::Binary`.
    pub tcp_targets: Vec<String>,
    pub leader_routing: bool,
    pub partition_in_flight: u32,
    pub streams: Vec<String>,
    pub connections: u32,
    pub max_in_flight: u32,
    pub arrival: Arrival,
    pub seed: u64,
    pub batch_size: u32,
    pub entry_size: usize,
    pub partitions: u32,
    pub read: Option<ReadLoad>,
    pub timeout: Duration,
    pub grace: Duration,
    /// Keep every ack for verification.
    pub keep_acks: bool,
    /// Bearer token for nodes with a token file.
    pub token: Option<String>,
    /// Trusted CAs for https:// and TLS on the binary protocol.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Reads beside the writes.
#[derive(Debug, Clone, Copy)]
pub struct ReadLoad {
    /// Requests per second.
    pub rate: f64,
    pub kind: ReadKind,
    pub limit: u32,
    pub window: Duration,
}

/// How a writer sends its appends.
#[derive(Debug)]
enum Sender {
    /// Clients for every target, starting with this writer's own; `current`
    /// moves on when a target cannot be connected to (nothing was sent, so
    /// the request is safely sent to the next).
    Http {
        clients: Vec<Client>,
        current: AtomicUsize,
    },
    /// Reconnects by itself, to the next target when its own is down.
    Binary(TcpProducer),
}

/// One request's entries, encoded for the writer's API.
enum Body {
    Ndjson(Vec<u8>),
    Batch(RecordBatch),
}

impl Sender {
    fn body(
        &self,
        payload: &Payload,
        worker: u32,
        seq_start: u64,
        count: u32,
        size: usize,
    ) -> Body {
        match self {
            Sender::Http { .. } => {
                let mut body = Vec::with_capacity(count as usize * (size + 8));
                payload.build(worker, seq_start, count, &mut body);
                Body::Ndjson(body)
            }
            Sender::Binary(_) => {
                Body::Batch(payload.build_batch(worker, seq_start, count, now_us()))
            }
        }
    }

    /// Sends one append; a failure is reported as a short stable label.
    async fn append(&self, stream: &str, body: Body) -> Result<AppendResponse, String> {
        match (self, body) {
            (Sender::Http { clients, current }, Body::Ndjson(b)) => {
                // Cheap to clone for a second target.
                let b = bytes::Bytes::from(b);
                let mut attempt = 0;
                loop {
                    let i = current.load(Ordering::Relaxed) % clients.len();
                    match clients[i].append_ndjson(stream, b.clone()).await {
                        Err(cairn_client::Error::Transport(e))
                            if e.is_connect() && attempt + 1 < clients.len() =>
                        {
                            attempt += 1;
                            let _ = current.compare_exchange(
                                i,
                                (i + 1) % clients.len(),
                                Ordering::Relaxed,
                                Ordering::Relaxed,
                            );
                        }
                        other => return other.map_err(|e| error_kind(&e)),
                    }
                }
            }
            (Sender::Binary(p), Body::Batch(b)) => p
                .append_batch(stream, &b)
                .await
                .map_err(|e| tcp_error_kind(&e)),
            _ => unreachable!("bodies are built by the same sender"),
        }
    }
}

/// One writer connection; outlives the runs of a sweep, so ids stay unique.
#[derive(Debug)]
struct Writer {
    sender: Sender,
    next_seq: AtomicU64,
    acks: Mutex<Vec<Ack>>,
}

/// Set on Ctrl-C: writers stop taking new slots, what is in flight
/// finishes, and the bench still verifies and reports.
#[derive(Debug, Default)]
pub struct Interrupt {
    at: Mutex<Option<Instant>>,
}

impl Interrupt {
    pub fn trigger(&self) {
        self.at.lock().get_or_insert_with(Instant::now);
    }

    pub fn at(&self) -> Option<Instant> {
        *self.at.lock()
    }

    pub fn is_set(&self) -> bool {
        self.at().is_some()
    }
}

#[derive(Debug)]
struct Shared {
    cfg: DriverConfig,
    payload: Payload,
    writers: Vec<Writer>,
    readers: Vec<Client>,
    /// [stream][partition]: one past the highest acknowledged offset; tail
    /// reads aim just below it.
    acked_ends: Vec<Vec<AtomicU64>>,
    live: Live,
    interrupt: Arc<Interrupt>,
}

/// Runs plans against the targets. Cheap to share between runs.
#[derive(Debug)]
pub struct Driver {
    shared: Arc<Shared>,
}

/// What one run (one plan) measured.
#[derive(Debug)]
pub struct RunResult {
    /// When the plan started (its time zero).
    pub start: Instant,
    pub phases: Vec<PhaseResult>,
    pub tail: Bucket,
    pub query: Bucket,
    pub intervals: Vec<IntervalRow>,
    /// From the start to the last answer (at least the plan's length).
    pub wall: Duration,
    /// The generator's own CPU time over `wall`.
    pub cpu: Duration,
    /// Cut short by Ctrl-C.
    pub interrupted: bool,
}

/// One phase of a run: writes by intended time, throughput by completion.
#[derive(Debug)]
pub struct PhaseResult {
    pub phase: Phase,
    pub writes: Bucket,
    /// Entries acknowledged while this phase ran.
    pub completed_entries: u64,
    /// The phase's length; the last phase's stretches to the last answer.
    pub window: Duration,
}

impl PhaseResult {
    pub fn achieved_entries_per_s(&self) -> f64 {
        rate(self.completed_entries, self.window)
    }
}

/// The state of one run, shared by its tasks.
#[derive(Debug)]
struct Run {
    start: Instant,
    /// Slots still unsent by then are given up.
    deadline: Instant,
    plan: Vec<Phase>,
    in_flight: AtomicU64,
}

impl Driver {
    pub async fn new(
        cfg: DriverConfig,
        payload: Payload,
        live: Live,
        interrupt: Arc<Interrupt>,
    ) -> Result<Driver> {
        let auth = cairn_client::bearer_headers(cfg.token.as_deref())?;
        let http = |pool: usize| {
            let mut builder = cairn_client::http_builder();
            if let Some(tls) = &cfg.tls {
                builder = builder.tls_backend_preconfigured((**tls).clone());
            }
            builder
                .default_headers(auth.clone())
                .timeout(cfg.timeout)
                .connect_timeout(cfg.timeout)
                .pool_max_idle_per_host(pool)
                .pool_idle_timeout(cairn_client::POOL_IDLE_TIMEOUT)
                .tcp_nodelay(true)
                .build()
                .context("build the HTTP client")
        };
        let mut writers = Vec::with_capacity(cfg.connections as usize);
        for k in 0..cfg.connections as usize {
            let sender = match cfg.api {
                ProduceApi::Http => {
                    let n = cfg.targets.len();
                    let clients = (0..n)
                        .map(|j| {
                            let url = &cfg.targets[(k + j) % n];
                            Ok(Client::with_http_client(
                                url,
                                http(cfg.max_in_flight as usize)?,
                            )?)
                        })
                        .collect::<Result<Vec<_>>>()?;
                    Sender::Http {
                        clients,
                        current: AtomicUsize::new(0),
                    }
                }
                ProduceApi::Binary => {
                    let n = cfg.tcp_targets.len();
                    let addrs: Vec<String> = (0..n)
                        .map(|j| cfg.tcp_targets[(k + j) % n].clone())
                        .collect();
                    let addr = addrs[0].clone();
                    let options = TcpOptions {
                        request_timeout: Some(cfg.timeout),
                        connect_timeout: cfg.timeout,
                        token: cfg.token.clone(),
                        tls: cfg.tls.clone(),
                        route_to_leaders: cfg.leader_routing,
                        max_in_flight_per_partition: cfg.partition_in_flight as usize,
                        ..TcpOptions::default()
                    };
                    let producer = TcpProducer::connect_any(addrs, options)
                        .await
                        .with_context(|| format!("connect to the binary protocol at {addr}"))?;
                    Sender::Binary(producer)
                }
            };
            writers.push(Writer {
                sender,
                next_seq: AtomicU64::new(0),
                acks: Mutex::new(Vec::new()),
            });
        }
        let readers = cfg
            .targets
            .iter()
            .map(|url| {
                Ok(Client::with_http_client(
                    url,
                    http(cfg.max_in_flight as usize)?,
                )?)
            })
            .collect::<Result<_>>()?;
        let acked_ends = cfg
            .streams
            .iter()
            .map(|_| (0..cfg.partitions).map(|_| AtomicU64::new(0)).collect())
            .collect();
        Ok(Driver {
            shared: Arc::new(Shared {
                cfg,
                payload,
                writers,
                readers,
                acked_ends,
                live,
                interrupt,
            }),
        })
    }

    /// Entries made per writer so far (the id space to verify).
    pub fn seq_ends(&self) -> Vec<u64> {
        let w = &self.shared.writers;
        w.iter()
            .map(|w| w.next_seq.load(Ordering::Relaxed))
            .collect()
    }

    /// Every acknowledged append so far.
    pub fn take_acks(&self) -> Vec<Ack> {
        let w = &self.shared.writers;
        w.iter()
            .flat_map(|w| std::mem::take(&mut *w.acks.lock()))
            .collect()
    }

    pub fn payload(&self) -> &Payload {
        &self.shared.payload
    }

    pub fn live(&self) -> &Live {
        &self.shared.live
    }

    /// Runs one plan to its end (plus the drain of what is in flight).
    pub async fn run(&self, plan: &[Phase]) -> Result<RunResult> {
        let cfg = &self.shared.cfg;
        let cpu_before = process_cpu();
        // A little lead so every task is waiting before the first slot.
        let start = Instant::now() + Duration::from_millis(20);
        let durations: Vec<Duration> = plan.iter().map(|p| p.duration).collect();
        let plan_end: Duration = durations.iter().sum();
        let run = Arc::new(Run {
            start,
            deadline: start + plan_end + cfg.grace,
            plan: plan.to_vec(),
            in_flight: AtomicU64::new(0),
        });
        let recorder = || Arc::new(Mutex::new(Recorder::new(start, &durations)));
        let writes: Vec<_> = self.shared.writers.iter().map(|_| recorder()).collect();
        let (tail, query) = (recorder(), recorder());

        let mut tasks = tokio::task::JoinSet::new();
        let rt = Handle::current();
        for (k, rec) in writes.iter().enumerate() {
            let (shared, run, rec, rt) =
                (self.shared.clone(), run.clone(), rec.clone(), rt.clone());
            tasks.spawn_blocking(move || write_worker(shared, run, k, rec, rt));
        }
        if let Some(read) = cfg.read {
            let (shared, run, rt) = (self.shared.clone(), run.clone(), rt.clone());
            let (tail, query) = (tail.clone(), query.clone());
            tasks.spawn_blocking(move || read_worker(shared, run, read, tail, query, rt));
        }
        let (stop, stopped) = oneshot::channel();
        let reporter = tokio::spawn(reporter(
            self.shared.clone(),
            run.clone(),
            writes.clone(),
            vec![tail.clone(), query.clone()],
            stopped,
        ));
        while let Some(done) = tasks.join_next().await {
            done.context("a load task panicked")?;
        }
        let _ = stop.send(());
        let intervals = reporter.await.context("the reporter panicked")?;
        let cpu = process_cpu().saturating_sub(cpu_before);

        let last_done = writes
            .iter()
            .chain([&tail, &query])
            .filter_map(|r| r.lock().last_done())
            .max()
            .unwrap_or(start);
        // Where the plan ended: its end, or earlier if interrupted.
        let cut = self.shared.interrupt.at().map_or(plan_end, |t| {
            t.saturating_duration_since(start).min(plan_end)
        });
        let wall = last_done.saturating_duration_since(start).max(cut);
        let mut phase_start = Duration::ZERO;
        let mut last_ran = 0;
        let mut phases: Vec<PhaseResult> = plan
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let end = phase_start + p.duration;
                if phase_start < cut {
                    last_ran = i;
                }
                let window = end.min(cut).saturating_sub(phase_start);
                phase_start = end;
                PhaseResult {
                    phase: p.clone(),
                    writes: Bucket::default(),
                    completed_entries: 0,
                    window,
                }
            })
            .collect();
        for rec in &writes {
            let rec = rec.lock();
            for (i, result) in phases.iter_mut().enumerate() {
                if let Some(b) = rec.phase(i) {
                    result.writes.merge(b);
                }
                result.completed_entries += rec.completed_items()[i];
            }
        }
        // The last phase that ran also owns the drain after it.
        if let Some(last) = phases.get_mut(last_ran) {
            last.window += wall - cut;
        }
        let total = |rec: &Arc<Mutex<Recorder>>| {
            let mut all = Bucket::default();
            rec.lock().phases().for_each(|b| all.merge(b));
            all
        };
        Ok(RunResult {
            start,
            phases,
            tail: total(&tail),
            query: total(&query),
            intervals,
            wall,
            cpu,
            interrupted: cut < plan_end,
        })
    }
}

/// The generator's CPU time so far (all threads).
pub fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn schedule(arrival: Arrival, rates: &[PhaseRate], k: u64, of: u64, seed: u64) -> Schedule {
    match arrival {
        Arrival::Constant => Schedule::constant(rates, k as f64 / of as f64),
        Arrival::Poisson => Schedule::poisson(rates, seed.wrapping_add(k)),
    }
}

/// Admission of slots, on a pacing thread: waits for the intended time,
/// then for an in-flight permit, and says whether the slot was backlogged.
#[derive(Debug)]
struct Pacer {
    permits: Arc<Semaphore>,
    max: u32,
    /// When the last wait for a permit ended.
    waited_until: Option<Instant>,
    deadline: Instant,
    rt: Handle,
}

impl Pacer {
    fn new(max: u32, deadline: Instant, rt: Handle) -> Pacer {
        Pacer {
            permits: Arc::new(Semaphore::new(max as usize)),
            max,
            waited_until: None,
            deadline,
            rt,
        }
    }

    /// `None` once the deadline has passed without a free permit.
    fn admit(&mut self, intended: Instant) -> Option<(OwnedSemaphorePermit, bool)> {
        let now = Instant::now();
        if intended > now {
            std::thread::sleep(intended - now);
        }
        // Due while we were still waiting for an earlier slot's permit.
        let behind = self.waited_until.is_some_and(|w| w > intended);
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Some((permit, behind));
        }
        let wait = self.permits.clone().acquire_owned();
        let permit = self
            .rt
            .block_on(tokio::time::timeout_at(self.deadline.into(), wait))
            .ok()?;
        self.waited_until = Some(Instant::now());
        Some((permit.expect("the semaphore is never closed"), true))
    }

    /// Waits until every request sent has been answered. Each is bounded by
    /// the request timeout, so this ends.
    fn drain(&self) {
        let _ = self.rt.block_on(self.permits.acquire_many(self.max));
    }
}

/// Records every slot left in `schedule` (and `first`) as unsent.
fn give_up(rec: &Mutex<Recorder>, start: Instant, first: Slot, schedule: Schedule) {
    let now = Instant::now();
    let mut rec = rec.lock();
    for slot in std::iter::once(first).chain(schedule) {
        rec.record_unsent(slot.phase, start + slot.at, now);
    }
}

fn write_worker(
    shared: Arc<Shared>,
    run: Arc<Run>,
    k: usize,
    rec: Arc<Mutex<Recorder>>,
    rt: Handle,
) {
    let cfg = &shared.cfg;
    let per_request = f64::from(cfg.batch_size) * f64::from(cfg.connections);
    let rates: Vec<PhaseRate> = run
        .plan
        .iter()
        .map(|p| PhaseRate {
            rate: p.entries_per_s / per_request,
            duration: p.duration,
        })
        .collect();
    let of = u64::from(cfg.connections);
    let mut schedule = schedule(cfg.arrival, &rates, k as u64, of, cfg.seed);
    let mut pacer = Pacer::new(cfg.max_in_flight, run.deadline, rt.clone());
    let writer = &shared.writers[k];
    let mut n = 0u64;
    while let Some(slot) = schedule.next() {
        if shared.interrupt.is_set() {
            break;
        }
        let intended = run.start + slot.at;
        // The body is built before the wait, so building it does not make
        // the send late. (Ids given to a request that is then never sent
        // are simply never seen; verification does not mind.)
        let stream = ((n + k as u64) % cfg.streams.len() as u64) as usize;
        n += 1;
        let seq_start = writer
            .next_seq
            .fetch_add(u64::from(cfg.batch_size), Ordering::Relaxed);
        let body = writer.sender.body(
            &shared.payload,
            k as u32,
            seq_start,
            cfg.batch_size,
            cfg.entry_size,
        );
        let Some((permit, backlogged)) = pacer.admit(intended) else {
            give_up(&rec, run.start, slot, schedule);
            break;
        };
        run.in_flight.fetch_add(1, Ordering::Relaxed);
        let (shared, run, rec) = (shared.clone(), run.clone(), rec.clone());
        rt.spawn(async move {
            let sent = Instant::now();
            let writer = &shared.writers[k];
            let result = writer
                .sender
                .append(&shared.cfg.streams[stream], body)
                .await;
            let done = Instant::now();
            let outcome = match result {
                Ok(resp) => {
                    for p in &resp.partitions {
                        if let Some(end) = shared.acked_ends[stream].get(p.partition as usize) {
                            end.fetch_max(p.base_offset + u64::from(p.count), Ordering::Relaxed);
                        }
                    }
                    let items = resp.appended;
                    if shared.cfg.keep_acks {
                        writer.acks.lock().push(Ack {
                            stream,
                            worker: k as u32,
                            seq_start,
                            count: shared.cfg.batch_size,
                            partitions: resp.partitions,
                        });
                    }
                    Outcome::Ok { items }
                }
                Err(kind) => Outcome::Error(kind),
            };
            rec.lock().record(&Completion {
                phase: slot.phase,
                intended,
                sent,
                done,
                backlogged,
                outcome,
            });
            run.in_flight.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    pacer.drain();
}

fn read_worker(
    shared: Arc<Shared>,
    run: Arc<Run>,
    read: ReadLoad,
    tail: Arc<Mutex<Recorder>>,
    query: Arc<Mutex<Recorder>>,
    rt: Handle,
) {
    let cfg = &shared.cfg;
    // Reads hold their rate through every phase of the plan.
    let rates: Vec<PhaseRate> = run
        .plan
        .iter()
        .map(|p| PhaseRate {
            rate: read.rate,
            duration: p.duration,
        })
        .collect();
    // Another stream of randomness than any writer's (they use SEED + k).
    let seed = cfg.seed ^ 0x5eed_5eed_5eed_5eed;
    let mut schedule = schedule(cfg.arrival, &rates, 0, 1, seed);
    let mut pacer = Pacer::new(cfg.max_in_flight, run.deadline, rt.clone());
    let mut n = 0u64;
    while let Some(slot) = schedule.next() {
        if shared.interrupt.is_set() {
            break;
        }
        let is_tail = match read.kind {
            ReadKind::Tail => true,
            ReadKind::Query => false,
            ReadKind::Mixed => n.is_multiple_of(2),
        };
        let rec = if is_tail { &tail } else { &query };
        let intended = run.start + slot.at;
        let Some((permit, backlogged)) = pacer.admit(intended) else {
            give_up(rec, run.start, slot, schedule);
            break;
        };
        let streams = cfg.streams.len() as u64;
        let stream = (n % streams) as usize;
        let partition = ((n / streams) % u64::from(cfg.partitions)) as u32;
        let client = shared.readers[(n % shared.readers.len() as u64) as usize].clone();
        n += 1;
        let (shared, run, rec) = (shared.clone(), run.clone(), rec.clone());
        run.in_flight.fetch_add(1, Ordering::Relaxed);
        rt.spawn(async move {
            let sent = Instant::now();
            let name = &shared.cfg.streams[stream];
            let limit = read.limit as usize;
            let result = if is_tail {
                let end = shared.acked_ends[stream][partition as usize].load(Ordering::Relaxed);
                let params = ReadParams {
                    offset: Some(end.saturating_sub(limit as u64)),
                    limit: Some(limit),
                    consistency: None,
                };
                client
                    .read(name, partition, params)
                    .await
                    .map(|r| r.entries.len())
            } else {
                let now = now_us();
                let params = QueryParams {
                    start: Some(now - read.window.as_micros() as i64),
                    end: Some(now),
                    limit: Some(limit),
                    ..Default::default()
                };
                client.query(name, &params).await.map(|r| r.entries.len())
            };
            let done = Instant::now();
            let outcome = match result {
                Ok(items) => Outcome::Ok {
                    items: items as u64,
                },
                Err(e) => Outcome::Error(error_kind(&e)),
            };
            rec.lock().record(&Completion {
                phase: slot.phase,
                intended,
                sent,
                done,
                backlogged,
                outcome,
            });
            run.in_flight.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    pacer.drain();
}

use cairn_types::clock::unix_us as now_us;

/// A short stable label for a failed request.
fn error_kind(e: &cairn_client::Error) -> String {
    use cairn_client::Error;
    match e {
        Error::Api { code, .. } => code.clone(),
        Error::UnexpectedResponse { status, .. } => format!("http_{status}"),
        Error::Transport(e) if e.is_timeout() => "timeout".into(),
        Error::Transport(e) if e.is_connect() => "connect".into(),
        Error::Transport(_) => "transport".into(),
        Error::InvalidUrl { .. } => "invalid_url".into(),
        Error::InvalidToken => "invalid_token".into(),
    }
}

/// A short stable label for a failed binary-protocol request.
fn tcp_error_kind(e: &TcpError) -> String {
    match e {
        TcpError::Api { code, .. } => code.as_str().to_string(),
        TcpError::Timeout(_) => "timeout".into(),
        TcpError::Connect { .. } => "connect".into(),
        TcpError::Closed(_) => "connection_closed".into(),
        TcpError::TooLarge { .. } => "too_large".into(),
        TcpError::Invalid(_) => "invalid".into(),
        TcpError::Unexpected(_) => "unexpected_answer".into(),
    }
}

async fn reporter(
    shared: Arc<Shared>,
    run: Arc<Run>,
    writes: Vec<Arc<Mutex<Recorder>>>,
    reads: Vec<Arc<Mutex<Recorder>>>,
    mut stop: oneshot::Receiver<()>,
) -> Vec<IntervalRow> {
    let mut rows = Vec::new();
    let (mut w, mut r) = (Bucket::default(), Bucket::default());
    let mut from = run.start;
    loop {
        let tick = from + Duration::from_secs(1);
        let last = tokio::select! {
            _ = tokio::time::sleep_until(tick.into()) => false,
            _ = &mut stop => true,
        };
        let to = if last { Instant::now().max(from) } else { tick };
        w.reset();
        r.reset();
        writes
            .iter()
            .for_each(|rec| rec.lock().drain_interval_into(&mut w));
        reads
            .iter()
            .for_each(|rec| rec.lock().drain_interval_into(&mut r));
        let length = to - from;
        // The last, partial interval only if something happened in it.
        if !last || (w.attempts() + r.attempts() > 0 && length > Duration::from_millis(50)) {
            let row = interval_row(
                &shared.live,
                run.start,
                &run.plan,
                run.in_flight.load(Ordering::Relaxed),
                (from, to),
                &w,
                &r,
            );
            shared.live.emit(&row);
            rows.push(row);
        }
        if last {
            return rows;
        }
        from = tick;
    }
}
