//! Bounded resources: what clients, one or many, can hold of a node.
//!
//! A node must keep serving — and above all keep its Raft groups alive —
//! whatever a client does with its connections. Four bounds, each on
//! both client APIs (HTTP and the binary protocol):
//!
//! - **Connections** ([`ConnectionGate`], one per listener): at most
//!   [`Limits::max_connections`] open, and [`Limits::max_connections_per_ip`]
//!   from one client address. The caps are clamped at start so that both
//!   listeners together stay below the process's descriptor limit minus a
//!   reserve ([`Descriptors`]) for data files, Raft metadata and the
//!   node-to-node transport; and a connection is also refused while the
//!   process's open descriptors (sampled every second) eat into that
//!   reserve. A refused connection is answered, not just dropped: HTTP
//!   gets `503 {code: "unavailable", message}`, the binary protocol an
//!   ERROR frame `unavailable` with correlation id 0; then it is closed.
//!   The refusal is written at once, without reading the request; the
//!   node then waits (at most [`REFUSAL_TIME`], for at most
//!   [`MAX_REFUSALS_IN_PROGRESS`] connections at a time) for the client to
//!   close, so the answer is not lost to a reset.
//! - **Time**: nothing a client starts may stay half done. HTTP: a request
//!   head must be complete within the header timeout (counted from the
//!   connection's accept, or the first byte of a later request), a body
//!   within the body timeout (`408 request_timeout`), a connection with no
//!   request in progress and no bytes moving is closed after the idle
//!   timeout, and so is one whose response the client has not read for
//!   that long. Binary protocol: a frame begun must arrive whole within the
//!   frame timeout (ERROR `request_timeout`, then close), a connection
//!   with nothing in flight that sends no frame for the idle timeout is
//!   closed, and so is one that does not read its answers for the frame
//!   timeout.
//! - **Memory** ([`ReceiveBudget`]): bytes of request bodies and frames
//!   being received are charged, as they arrive, against one node-wide
//!   budget (a byte semaphore); a binary request keeps its charge until it
//!   is answered. A partial frame therefore holds what has arrived, never
//!   its declared size. When the budget is spent a read waits (at most
//!   [`BUDGET_WAIT`], and never past its own deadline) and then fails
//!   clearly: HTTP `503 unavailable`, binary ERROR `unavailable` and close.
//!   Bytes not yet read stay in the kernel's socket buffers, and TCP flow
//!   control slows the sender.
//! - **Descriptors** ([`Descriptors`]): `cairn node` raises its soft
//!   descriptor limit to the hard one at start ([`raise_fd_limit`]); the
//!   reserve is a quarter of the limit (at least [`MIN_FD_RESERVE`]).
//!   Should storage still run short, it retries for a while and a stopped
//!   Raft core is restarted (`cairn_storage::fsutil`, `cairn_cluster`).
//!
//! Every refusal and every connection closed for a limit is counted
//! (`cairn_connections_refused_total{api,reason}`,
//! `cairn_connections_closed_total{api,reason}`; see [`register_metrics`]).
//! A refusal also counts as the error the client sees, `unavailable`
//! (`cairn_errors_total`, and the snapshot's errors per second), so the
//! monitor sees load shed at the door as the overload it is.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use cairn_telemetry::metrics::Api;
use cairn_telemetry::{Labels, Telemetry, encode_family};
use cairn_types::ErrorCode;
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Default cap on the open connections of one listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default cap on the open connections of one listener from one address.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1024;
pub const DEFAULT_HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_HTTP_BODY_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_TCP_FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// Descriptors kept free for everything but client connections, at least.
pub const MIN_FD_RESERVE: u64 = 256;
/// A read waits at most this long for receive budget before it fails.
pub const BUDGET_WAIT: Duration = Duration::from_secs(5);
/// Refusals being written at once; more connections over a cap are closed
/// without an answer (an answer costs a task and a descriptor for a while).
pub const MAX_REFUSALS_IN_PROGRESS: usize = 64;
/// Time to write a refusal and see the client close.
pub const REFUSAL_TIME: Duration = Duration::from_secs(1);
/// The default receive budget is this fraction of memory...
const BUDGET_MEMORY_FRACTION: u64 = 16;
/// ...within these bounds.
const MIN_DEFAULT_BUDGET: u64 = 64 << 20;
const MAX_DEFAULT_BUDGET: u64 = 1 << 30;

/// Caps and timeouts of a node's client APIs (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Open connections per listener (HTTP, binary protocol), at most;
    /// clamped at start to what the descriptor limit allows.
    pub max_connections: usize,
    /// Open connections per listener from one client address, at most.
    pub max_connections_per_ip: usize,
    /// HTTP: a request head must arrive within this.
    pub http_header_timeout: Duration,
    /// HTTP: a request body must arrive within this.
    pub http_body_timeout: Duration,
    /// HTTP: a connection with no request in progress and no bytes moving
    /// (or whose response is not read) is closed after this.
    pub http_idle_timeout: Duration,
    /// Binary protocol: a connection with nothing in flight that sends no
    /// frame for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Binary protocol: a frame begun must arrive whole within this.
    pub tcp_frame_timeout: Duration,
    /// Bytes of requests being received, node-wide; `None`: a sixteenth of
    /// the memory (cgroup limit or RAM), within 64 MiB..1 GiB.
    pub receive_budget_bytes: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            http_header_timeout: DEFAULT_HTTP_HEADER_TIMEOUT,
            http_body_timeout: DEFAULT_HTTP_BODY_TIMEOUT,
            http_idle_timeout: DEFAULT_HTTP_IDLE_TIMEOUT,
            tcp_idle_timeout: DEFAULT_TCP_IDLE_TIMEOUT,
            tcp_frame_timeout: DEFAULT_TCP_FRAME_TIMEOUT,
            receive_budget_bytes: None,
        }
    }
}

impl Limits {
    /// `max_request` is the largest request the node takes (a body or a
    /// frame): the budget must hold one.
    pub fn validate(&self, max_request: usize) -> Result<(), String> {
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return Err("max_connections and max_connections_per_ip must be at least 1".into());
        }
        for (name, d) in [
            ("http_header_timeout", self.http_header_timeout),
            ("http_body_timeout", self.http_body_timeout),
            ("http_idle_timeout", self.http_idle_timeout),
            ("tcp_idle_timeout", self.tcp_idle_timeout),
            ("tcp_frame_timeout", self.tcp_frame_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("{name} must be positive"));
            }
        }
        if let Some(b) = self.receive_budget_bytes
            && b < max_request
        {
            return Err(format!(
                "receive_budget_bytes ({b}) must hold the largest request ({max_request} bytes: \
                 max_body_bytes plus the frame header)"
            ));
        }
        Ok(())
    }

    /// The budget in force: the configured one, or the default from memory
    /// (never below two of the largest request).
    pub fn effective_budget(&self, max_request: usize) -> usize {
        self.receive_budget_bytes.unwrap_or_else(|| {
            let memory = memory_bytes().unwrap_or(4 << 30);
            let fraction =
                (memory / BUDGET_MEMORY_FRACTION).clamp(MIN_DEFAULT_BUDGET, MAX_DEFAULT_BUDGET);
            (fraction as usize).max(2 * max_request)
        })
    }
}

/// The process's memory: the cgroup (v2) limit if set, else physical RAM.
fn memory_bytes() -> Option<u64> {
    let ram = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    match (ram, cgroup) {
        (Some(r), Some(c)) => Some(r.min(c)),
        (r, c) => r.or(c),
    }
}

/// Raises the soft descriptor limit to the hard one (bounded, as an
/// unlimited hard limit cannot be taken literally); returns the soft limit
/// in force afterwards. Cheap, and makes the caps' headroom as large as
/// the administrator allows.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // The kernel refuses more than fs.nr_open (1 Mi by default).
    let target = limit.maximum.unwrap_or(1 << 20).min(1 << 20);
    if limit.current.is_some_and(|c| c < target) {
        let raised = Rlimit {
            current: Some(target),
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "could not raise the open-file limit");
        }
    }
    fd_limit()
}

/// The soft descriptor limit in force.
pub fn fd_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1 << 20)
}

/// The process's descriptor limit, the share kept from client connections,
/// and the descriptors open (sampled by [`Descriptors::sample`]).
#[derive(Debug)]
pub struct Descriptors {
    limit: u64,
    reserve: u64,
    open_sampled: AtomicU64,
    /// Client connections now, and at the last sample: the estimate of
    /// open descriptors between samples follows connections.
    connections: AtomicU64,
    connections_at_sample: AtomicU64,
}

impl Descriptors {
    pub fn new(limit: u64) -> Self {
        Descriptors {
            limit,
            reserve: (limit / 4).max(MIN_FD_RESERVE),
            open_sampled: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            connections_at_sample: AtomicU64::new(0),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Descriptors kept from client connections.
    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    /// Counts the process's open descriptors (a directory listing of
    /// `/proc/self/fd`: blocking, about a millisecond per 10 000).
    pub fn sample(&self) {
        let connections = self.connections.load(Ordering::Relaxed);
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.open_sampled
                .store(dir.count() as u64, Ordering::Relaxed);
            self.connections_at_sample
                .store(connections, Ordering::Relaxed);
        }
    }

    /// Open descriptors: the last sample plus connections opened since.
    pub fn open_estimate(&self) -> u64 {
        let now = self.connections.load(Ordering::Relaxed);
        let then = self.connections_at_sample.load(Ordering::Relaxed);
        self.open_sampled.load(Ordering::Relaxed) + now.saturating_sub(then)
    }

    /// True when another connection would eat into the reserve's second
    /// half (the first half absorbs the sampling lag).
    fn short(&self) -> bool {
        self.open_estimate() + self.reserve / 2 >= self.limit
    }

    /// The cap each of `listeners` listeners gets at most.
    fn share(&self, listeners: usize) -> usize {
        let share = self.limit.saturating_sub(self.reserve) / listeners.max(1) as u64;
        usize::try_from(share).unwrap_or(usize::MAX).max(1)
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The listener holds `max_connections`.
    Connections,
    /// The client's address holds `max_connections_per_ip`.
    PerIp,
    /// The process is short of file descriptors.
    Descriptors,
}

impl Refusal {
    const ALL: [Refusal; 3] = [Refusal::Connections, Refusal::PerIp, Refusal::Descriptors];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Connections => "max_connections",
            Refusal::PerIp => "max_connections_per_ip",
            Refusal::Descriptors => "file_descriptors",
        }
    }
}

/// Why the node closed a connection for a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    HeaderTimeout,
    IdleTimeout,
    /// The client did not read a response for the idle timeout.
    WriteStalled,
    FrameTimeout,
    /// The receive budget stayed spent for [`BUDGET_WAIT`].
    Budget,
}

impl Closed {
    const ALL: [Closed; 5] = [
        Closed::HeaderTimeout,
        Closed::IdleTimeout,
        Closed::WriteStalled,
        Closed::FrameTimeout,
        Closed::Budget,
    ];

    /// The reasons that can close a connection of `api`.
    pub fn of(api: Api) -> &'static [Closed] {
        match api {
            Api::Http => &[
                Closed::HeaderTimeout,
                Closed::IdleTimeout,
                Closed::WriteStalled,
            ],
            Api::Tcp => &[
                Closed::IdleTimeout,
                Closed::FrameTimeout,
                Closed::Budget,
                Closed::WriteStalled,
            ],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => "header_timeout",
            Closed::IdleTimeout => "idle_timeout",
            Closed::WriteStalled => "write_stalled",
            Closed::FrameTimeout => "frame_timeout",
            Closed::Budget => "receive_budget",
        }
    }
}

#[derive(Debug, Default)]
struct GateState {
    open: usize,
    per_ip: HashMap<IpAddr, usize>,
    /// Refusals are logged at most once per [`REFUSAL_LOG_INTERVAL`].
    last_logged: Option<std::time::Instant>,
}

const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Admits a listener's connections within its caps.
#[derive(Debug)]
pub struct ConnectionGate {
    api: Api,
    max: usize,
    max_per_ip: usize,
    state: Mutex<GateState>,
    fds: Arc<Descriptors>,
    refused: [AtomicU64; Refusal::ALL.len()],
    closed: [AtomicU64; Closed::ALL.len()],
    /// Refusals being written now.
    refusing: Arc<Semaphore>,
    /// Where a refusal is also counted as the client sees it, a 503
    /// `unavailable`: load shed at the door is load shed all the same,
    /// and the monitor's overload detector reads these counts.
    errors: Option<Weak<Telemetry>>,
}

impl ConnectionGate {
    pub fn new(
        api: Api,
        max: usize,
        max_per_ip: usize,
        fds: Arc<Descriptors>,
        errors: Option<Weak<Telemetry>>,
    ) -> Arc<Self> {
        Arc::new(ConnectionGate {
            api,
            max,
            max_per_ip: max_per_ip.min(max),
            state: Mutex::default(),
            fds,
            refused: Default::default(),
            closed: Default::default(),
            refusing: Arc::new(Semaphore::new(MAX_REFUSALS_IN_PROGRESS)),
            errors,
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn max_per_ip(&self) -> usize {
        self.max_per_ip
    }

    pub fn open(&self) -> usize {
        self.state.lock().open
    }

    pub fn refused(&self, reason: Refusal) -> u64 {
        self.refused[reason as usize].load(Ordering::Relaxed)
    }

    pub fn closed(&self, reason: Closed) -> u64 {
        self.closed[reason as usize].load(Ordering::Relaxed)
    }

    /// Counts a connection the node closed for a limit.
    pub fn count_closed(&self, reason: Closed) {
        self.closed[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a place for a connection from `ip`, or says why not (and
    /// counts the refusal).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionPermit, Refusal> {
        let ip = ip.to_canonical();
        let refusal = {
            let mut st = self.state.lock();
            let from_ip = st.per_ip.get(&ip).copied().unwrap_or(0);
            let refusal = if st.open >= self.max {
                Some(Refusal::Connections)
            } else if from_ip >= self.max_per_ip {
                Some(Refusal::PerIp)
            } else if self.fds.short() {
                Some(Refusal::Descriptors)
            } else {
                st.open += 1;
                *st.per_ip.entry(ip).or_default() += 1;
                None
            };
            let log = refusal.is_some()
                && st
                    .last_logged
                    .is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL);
            if log {
                st.last_logged = Some(std::time::Instant::now());
            }
            refusal.map(|r| (r, log, st.open))
        };
        if let Some((r, log, open)) = refusal {
            self.refused[r as usize].fetch_add(1, Ordering::Relaxed);
            if let Some(t) = self.errors.as_ref().and_then(Weak::upgrade) {
                t.metrics.count_error(ErrorCode::Unavailable);
            }
            if log {
                tracing::warn!(
                    api = self.api.as_str(),
                    reason = r.as_str(),
                    %ip,
                    open,
                    max = self.max,
                    max_per_ip = self.max_per_ip,
                    open_fds = self.fds.open_estimate(),
                    fd_limit = self.fds.limit,
                    "refusing connections (logged at most every 10 s; see cairn_connections_refused_total)"
                );
            }
            return Err(r);
        }
        self.fds.connections.fetch_add(1, Ordering::Relaxed);
        Ok(ConnectionPermit {
            gate: self.clone(),
            ip,
        })
    }

    fn release(&self, ip: IpAddr) {
        let mut st = self.state.lock();
        st.open -= 1;
        if let Some(n) = st.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                st.per_ip.remove(&ip);
            }
        }
        self.fds.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Answers a refused connection with `answer` and closes it (see the
    /// module docs). The answer is written at once (it fits an empty send
    /// buffer); what follows, in a task, is reading until the client closes:
    /// closing with unread bytes would reset the connection, and a reset
    /// can destroy the answer before the client reads it. Without a free
    /// slot for that, the socket is closed right away.
    pub fn refuse(&self, socket: TcpStream, reason: Refusal, answer: Vec<u8>) {
        use std::io::Write;
        tracing::debug!(
            api = self.api.as_str(),
            reason = reason.as_str(),
            "refusing a connection"
        );
        let Ok(mut socket) = socket.into_std() else {
            return;
        };
        let _ = socket.write(&answer);
        let _ = socket.shutdown(std::net::Shutdown::Write);
        let Ok(permit) = self.refusing.clone().try_acquire_owned() else {
            return;
        };
        let Ok(mut socket) = TcpStream::from_std(socket) else {
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(REFUSAL_TIME, async {
                let mut sink = [0u8; 1024];
                while socket.read(&mut sink).await? > 0 {}
                Ok::<_, std::io::Error>(())
            })
            .await;
        });
    }
}

/// A connection's place in its listener's caps, given back on drop.
#[derive(Debug)]
pub struct ConnectionPermit {
    gate: Arc<ConnectionGate>,
    ip: IpAddr,
}

impl ConnectionPermit {
    pub fn gate(&self) -> &Arc<ConnectionGate> {
        &self.gate
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.gate.release(self.ip);
    }
}

/// The node-wide budget of bytes being received (see the module docs).
#[derive(Debug)]
pub struct ReceiveBudget {
    bytes: Arc<Semaphore>,
    capacity: usize,
    waits: AtomicU64,
    exhausted: AtomicU64,
}

/// Bytes charged against the [`ReceiveBudget`], given back on drop.
#[derive(Debug, Default)]
pub struct Charge(Option<OwnedSemaphorePermit>);

impl Charge {
    pub fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |p| p.num_permits())
    }

    fn add(&mut self, more: OwnedSemaphorePermit) {
        match &mut self.0 {
            Some(p) => p.merge(more),
            None => self.0 = Some(more),
        }
    }

    /// Moves `n` bytes (or all there are) of this charge into a new one.
    pub fn split(&mut self, n: usize) -> Charge {
        let n = n.min(self.bytes());
        if n == self.bytes() {
            return Charge(self.0.take());
        }
        Charge(self.0.as_mut().and_then(|p| p.split(n)))
    }
}

/// The budget stayed spent until the read's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the node's receive-memory budget ({capacity} bytes) is in use by other requests")]
pub struct BudgetExhausted {
    pub capacity: usize,
}

impl ReceiveBudget {
    pub fn new(capacity: usize) -> Self {
        ReceiveBudget {
            bytes: Arc::new(Semaphore::new(capacity.min(Semaphore::MAX_PERMITS))),
            capacity,
            waits: AtomicU64::new(0),
            exhausted: AtomicU64::new(0),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn in_use(&self) -> usize {
        self.capacity.saturating_sub(self.bytes.available_permits())
    }

    /// Adds `bytes` to `charge`, waiting for them until `deadline` (at most
    /// [`BUDGET_WAIT`]).
    pub async fn charge(
        &self,
        charge: &mut Charge,
        bytes: usize,
        deadline: Instant,
    ) -> Result<(), BudgetExhausted> {
        if bytes == 0 {
            return Ok(());
        }
        let exhausted = BudgetExhausted {
            capacity: self.capacity,
        };
        // More than the whole budget can never be had.
        let n = u32::try_from(bytes).map_err(|_| exhausted)?;
        if bytes > self.capacity {
            return Err(exhausted);
        }
        match self.bytes.clone().try_acquire_many_owned(n) {
            Ok(p) => {
                charge.add(p);
                return Ok(());
            }
            Err(_) => {
                self.waits.fetch_add(1, Ordering::Relaxed);
            }
        }
        let until = deadline.min(Instant::now() + BUDGET_WAIT);
        match tokio::time::timeout_at(until, self.bytes.clone().acquire_many_owned(n)).await {
            Ok(Ok(p)) => {
                charge.add(p);
                Ok(())
            }
            _ => {
                self.exhausted.fetch_add(1, Ordering::Relaxed);
                Err(exhausted)
            }
        }
    }
}

/// The node's guards, shared by both APIs.
#[derive(Debug)]
pub struct Guards {
    pub limits: Limits,
    pub http: Arc<ConnectionGate>,
    pub tcp: Arc<ConnectionGate>,
    pub budget: ReceiveBudget,
    pub fds: Arc<Descriptors>,
}

impl Guards {
    /// `listeners`: how many client listeners share the descriptors (1 for
    /// HTTP alone, 2 with the binary protocol). Logs caps it lowered.
    /// Refused connections are also counted in `errors`' error counters.
    pub fn new(
        limits: &Limits,
        max_request: usize,
        listeners: usize,
        errors: Option<Weak<Telemetry>>,
    ) -> Guards {
        let fds = Arc::new(Descriptors::new(fd_limit()));
        fds.sample();
        let share = fds.share(listeners);
        let max = limits.max_connections.min(share);
        if max < limits.max_connections {
            tracing::warn!(
                configured = limits.max_connections,
                effective = max,
                fd_limit = fds.limit(),
                reserved = fds.reserve(),
                "max_connections lowered to fit the open-file limit (raise `ulimit -n` for more)"
            );
        }
        let per_ip = limits.max_connections_per_ip.min(max);
        Guards {
            limits: limits.clone(),
            http: ConnectionGate::new(Api::Http, max, per_ip, fds.clone(), errors.clone()),
            tcp: ConnectionGate::new(Api::Tcp, max, per_ip, fds.clone(), errors),
            budget: ReceiveBudget::new(limits.effective_budget(max_request)),
            fds,
        }
    }

    pub fn gate(&self, api: Api) -> &Arc<ConnectionGate> {
        match api {
            Api::Http => &self.http,
            Api::Tcp => &self.tcp,
        }
    }
}

/// Samples open descriptors every second until the guards are dropped.
pub fn spawn_sampler(guards: Weak<Guards>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(g) = guards.upgrade() else { return };
            let fds = g.fds.clone();
            drop(g);
            if tokio::task::spawn_blocking(move || fds.sample())
                .await
                .is_err()
            {
                return;
            }
        }
    });
}

mod metrics;
pub use metrics::{ClusterCounters, register_metrics, register_transport_metrics};

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max: usize, per_ip: usize) -> Arc<ConnectionGate> {
        ConnectionGate::new(
            Api::Tcp,
            max,
            per_ip,
            Arc::new(Descriptors::new(1 << 20)),
            None,
        )
    }

    #[test]
    fn caps_apply_per_listener_and_per_address_and_free_on_drop() {
        let g = gate(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = g.admit(a).unwrap();
        let _p2 = g.admit(a).unwrap();
        assert_eq!(g.admit(a).unwrap_err(), Refusal::PerIp);
        let _p3 = g.admit(b).unwrap();
        assert_eq!(g.admit(b).unwrap_err(), Refusal::Connections);
        drop(p1);
        let _p4 = g.admit(b).unwrap();
        assert_eq!(g.open(), 3);
        assert_eq!(g.refused(Refusal::PerIp), 1);
        assert_eq!(g.refused(Refusal::Connections), 1);
    }

    #[test]
    fn an_ipv4_mapped_address_counts_as_the_ipv4_one() {
        let g = gate(10, 1);
        let _p = g.admit("10.0.0.1".parse().unwrap()).unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(g.admit(mapped).unwrap_err(), Refusal::PerIp);
    }

    #[test]
    fn connections_are_refused_while_descriptors_are_short() {
        let fds = Arc::new(Descriptors::new(1000));
        fds.open_sampled.store(900, Ordering::Relaxed);
        let g = ConnectionGate::new(Api::Http, 100, 100, fds.clone(), None);
        // 900 open + half the 256 reserve >= 1000.
        assert_eq!(
            g.admit("10.0.0.1".parse().unwrap()).unwrap_err(),
            Refusal::Descriptors
        );
        fds.open_sampled.store(100, Ordering::Relaxed);
        assert!(g.admit("10.0.0.1".parse().unwrap()).is_ok());
        // The caps never exceed the limit minus the reserve.
        assert_eq!(fds.share(2), (1000 - 256) / 2);
    }

    #[tokio::test]
    async fn the_budget_charges_splits_and_gives_back() {
        let budget = ReceiveBudget::new(100);
        let mut charge = Charge::default();
        let deadline = Instant::now() + Duration::from_millis(50);
        budget.charge(&mut charge, 60, deadline).await.unwrap();
        budget.charge(&mut charge, 30, deadline).await.unwrap();
        assert_eq!(budget.in_use(), 90);
        let err = budget.charge(&mut charge, 20, deadline).await.unwrap_err();
        assert_eq!(err.capacity, 100);
        let part = charge.split(50);
        assert_eq!((part.bytes(), charge.bytes()), (50, 40));
        drop(part);
        assert_eq!(budget.in_use(), 40);
        budget.charge(&mut charge, 20, deadline).await.unwrap();
        drop(charge);
        assert_eq!(budget.in_use(), 0);
        assert!(
            budget
                .charge(&mut Charge::default(), 101, deadline)
                .await
                .is_err()
        );
    }
}
