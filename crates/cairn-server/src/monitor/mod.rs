//! The cluster monitor as a node runs it: collection, evaluation, alert
//! delivery and the answers behind `/v1/health` and `/v1/monitor/*`.
//!
//! # Collection
//!
//! Every node collects every member's telemetry snapshot once a second over
//! the cluster transport (service kind [`SNAPSHOT`]; the node's own is read
//! in place). The answer is the snapshot as the node's telemetry thread
//! last encoded it, so serving it costs no encoding on the async runtime
//! that a swamped node's writes are queued on. Requests outlive their
//! round: a late answer is used, stamped with when it arrived, and a
//! member's last answer is repeated while recent; only a member silent for
//! longer than [`collect::UNANSWERED_AFTER`] is `unanswered` — which is
//! itself evidence (a paused or hung node). See [`collect`]. The round
//! becomes one `ClusterSample` fed to this node's
//! [`cairn_monitor::Monitor`] (the pure core: rings, detectors, verdict,
//! alert states).
//!
//! # Authority
//!
//! Every node evaluates the same samples, so any node can answer, but the
//! controller leader's monitor is authoritative: API requests on another
//! node are forwarded to it over the transport ([`QUERY`]), falling back to
//! the local answer (marked `"authority": "local"`) when the leader cannot
//! be reached — exactly when an operator needs an answer most. Only the
//! controller leader delivers alerts, so a receiver hears each transition
//! once.
//!
//! # Reports
//!
//! Every `report_interval` the controller leader builds a performance
//! report over the interval just past from its monitor
//! ([`cairn_monitor::report`]) and saves it in the data directory
//! ([`reports`]); [`Query::Report`] reads one back and
//! [`Query::ReportNow`] builds one on demand over any window the rings
//! hold. Remediation's actions enter through [`MonitorService::actions`].
//!
//! # Cost
//!
//! One round is N small requests (a few KB of JSON each) and one `observe`
//! (microseconds). The CPU of evaluation is counted with the thread CPU
//! clock and exported as `cairn_monitor_evaluation_cpu_seconds_total`; the
//! whole monitor's cost (collection included) is measured by comparing a
//! node's CPU with `--monitor-interval 0` (docs/PERFORMANCE.md).

pub mod collect;
pub mod deliver;
mod metrics;
pub mod remedy;
pub mod reports;

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cairn_cluster::Cluster;
use cairn_monitor::{AlertState, ClusterSample, Monitor, MonitorConfig, NodeSample};
use cairn_telemetry::snapshot::TelemetrySnapshot;
use cairn_telemetry::{Telemetry, thread_cpu_ns};
use collect::Collector;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use deliver::{Delivery, OutgoingAlert, Receivers};

/// Service kind: "send me your latest telemetry snapshot" (JSON reply).
pub const SNAPSHOT: u16 = 100;
/// Service kind: a [`Query`] for the controller leader's monitor.
pub const QUERY: u16 = 101;
/// How long a forwarded query may take before the local answer is used.
const FORWARD_TIMEOUT: Duration = Duration::from_millis(1500);
/// Firing alerts are sent again this often (Alertmanager resolves alerts
/// it has not heard of for its `resolve_timeout`, 5 min by default).
const RESEND: Duration = Duration::from_secs(30);

/// How the node's monitor is set up.
#[derive(Debug, Clone)]
pub struct MonitorOptions {
    /// Collection period (1 s by default).
    pub interval: Duration,
    pub config: MonitorConfig,
    pub receivers: Receivers,
    /// Append every collected round to this file as NDJSON (for `cairn
    /// monitor replay`).
    pub record: Option<std::path::PathBuf>,
    /// What the controller leader's monitor applies by itself.
    pub remediate: remedy::RemediateMode,
    /// How often the controller leader saves a performance report over
    /// the interval just past (zero: never).
    pub report_interval: Duration,
    /// Where saved reports go (`DATA_DIR/reports`); `None`: not saved.
    pub report_dir: Option<std::path::PathBuf>,
}

impl Default for MonitorOptions {
    fn default() -> Self {
        MonitorOptions {
            interval: Duration::from_secs(1),
            config: MonitorConfig::default(),
            receivers: Receivers::default(),
            record: None,
            remediate: remedy::RemediateMode::Off,
            report_interval: DEFAULT_REPORT_INTERVAL,
            report_dir: None,
        }
    }
}

/// A report every 5 minutes over the 5 minutes past.
pub const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_secs(300);
/// The longest window a report can cover: the 10 s ring's day.
pub const MAX_REPORT_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// What the API may ask a monitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "query", rename_all = "snake_case")]
pub enum Query {
    Health,
    Findings,
    Alerts,
    /// Every partition as the latest round shows it.
    Partitions,
    Series {
        metric: String,
        node: Option<u64>,
        since_ms: Option<u64>,
    },
    /// What to do about the active findings (see `remedy`).
    Recommendations,
    /// The actions applied and their judgements.
    Actions,
    /// The saved reports, newest first.
    Reports,
    /// A saved report: `{"report": REPORT}`, or `{"report": null}`.
    Report {
        id: String,
    },
    /// A report made now over the last `window_ms`.
    ReportNow {
        window_ms: u64,
    },
}

/// The node's monitor. Cheap to clone.
#[derive(Clone)]
pub struct MonitorService {
    inner: Arc<Inner>,
}

struct Inner {
    node: u64,
    cluster: Cluster,
    collector: Arc<Collector>,
    interval: Duration,
    monitor: Mutex<Monitor>,
    delivery: Delivery,
    generator_url: String,
    record: Option<Mutex<std::fs::File>>,
    cpu_ns: AtomicU64,
    rounds: AtomicU64,
    actions: Mutex<remedy::ActionLog>,
    remediate: remedy::RemediateMode,
    reports: Option<reports::ReportStore>,
    report_interval: Duration,
    /// When the last periodic report ended (ms since the Unix epoch).
    last_report: AtomicU64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for MonitorService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonitorService")
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

use cairn_types::clock::unix_ms;

impl MonitorService {
    /// Registers the monitor's transport services and starts collecting
    /// until `stop` is cancelled.
    pub fn start(
        options: MonitorOptions,
        cluster: Cluster,
        telemetry: Arc<Telemetry>,
        http: reqwest::Client,
        api_url: &str,
        stop: CancellationToken,
    ) -> std::io::Result<MonitorService> {
        let record = match &options.record {
            Some(path) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )),
            None => None,
        };
        let node = cluster.node_id();
        let service = MonitorService {
            inner: Arc::new(Inner {
                node,
                delivery: Delivery::start(options.receivers.clone(), node, http),
                generator_url: format!("{api_url}/v1/monitor/alerts"),
                cluster: cluster.clone(),
                collector: Arc::new(Collector::new(cluster.clone(), telemetry.clone())),
                interval: options.interval,
                monitor: Mutex::new(Monitor::new(options.config)),
                record,
                cpu_ns: AtomicU64::new(0),
                rounds: AtomicU64::new(0),
                actions: Mutex::new(remedy::ActionLog::default()),
                remediate: options.remediate,
                reports: options.report_dir.clone().map(reports::ReportStore::new),
                report_interval: options.report_interval,
                last_report: AtomicU64::new(unix_ms()),
            }),
        };
        let t = telemetry.clone();
        cluster.register_service(
            SNAPSHOT,
            Arc::new(move |_from, _payload| {
                // Already encoded: no work here but a reference count.
                let json = t.snapshot_json();
                Box::pin(async move {
                    json.map(Bytes::from_owner)
                        .ok_or_else(|| "no telemetry interval has completed yet".to_owned())
                })
            }),
        );
        let me = Arc::downgrade(&service.inner);
        cluster.register_service(
            QUERY,
            Arc::new(move |_from, payload| {
                let me = me.upgrade();
                Box::pin(async move {
                    let inner = me.ok_or("the monitor is stopping")?;
                    let q: Query = serde_json::from_slice(&payload).map_err(|e| e.to_string())?;
                    let answer = MonitorService { inner }.answer_locally(&q)?;
                    serde_json::to_vec(&answer)
                        .map(Bytes::from)
                        .map_err(|e| e.to_string())
                })
            }),
        );
        let me = Arc::downgrade(&service.inner);
        cluster.register_service(
            remedy::APPLY,
            Arc::new(move |_from, payload| {
                let me = me.upgrade();
                Box::pin(async move {
                    let inner = me.ok_or("the monitor is stopping")?;
                    let (id, by): (String, String) =
                        serde_json::from_slice(&payload).map_err(|e| e.to_string())?;
                    let answer = MonitorService { inner }.apply_locally(&id, &by).await;
                    serde_json::to_vec(&answer)
                        .map(Bytes::from)
                        .map_err(|e| e.to_string())
                })
            }),
        );
        metrics::register(&telemetry, Arc::downgrade(&service.inner));
        tokio::spawn(service.clone().run(stop));
        Ok(service)
    }

    async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.inner.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_resend = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let sample = self.inner.collector.round().await;
            let cpu_before = thread_cpu_ns();
            self.observe(sample, &mut last_resend);
            self.inner.cpu_ns.fetch_add(
                thread_cpu_ns().saturating_sub(cpu_before),
                Ordering::Relaxed,
            );
            self.save_report_when_due().await;
        }
    }

    /// On the controller leader, once `report_interval` has passed since
    /// the last report: builds one over the interval and saves it.
    async fn save_report_when_due(&self) {
        let inner = &self.inner;
        let interval_ms = inner.report_interval.as_millis() as u64;
        let now = unix_ms();
        let last = inner.last_report.load(Ordering::Relaxed);
        let Some(store) = inner.reports.clone() else {
            return;
        };
        if interval_ms == 0 || now < last + interval_ms {
            return;
        }
        inner.last_report.store(now, Ordering::Relaxed);
        if inner.cluster.controller_leader() != Some(inner.node) {
            return;
        }
        let report = self.report(now, interval_ms);
        let saved = tokio::task::spawn_blocking(move || store.save(&report)).await;
        match saved {
            Ok(Ok(())) => tracing::debug!(id = now, "performance report saved"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not save the performance report"),
            Err(e) => tracing::warn!(error = %e, "the report writer panicked"),
        }
    }

    /// Remediation's actions (this node's log: the controller leader's is
    /// the one that applies them), for reports.
    pub fn actions(&self) -> Vec<cairn_monitor::report::ReportAction> {
        self.inner
            .actions
            .lock()
            .records()
            .iter()
            .map(remedy::report_action)
            .collect()
    }

    /// A report over the `window_ms` up to `end` from this node's monitor.
    pub fn report(&self, end: u64, window_ms: u64) -> cairn_monitor::report::Report {
        let input = cairn_monitor::report::ReportInput {
            id: end.to_string(),
            end_unix_ms: end,
            window_ms,
            actions: self.actions(),
        };
        cairn_monitor::report::build(&self.inner.monitor.lock(), input)
    }

    fn observe(&self, sample: ClusterSample, last_resend: &mut tokio::time::Instant) {
        if let Some(file) = &self.inner.record
            && let Ok(line) = serde_json::to_string(&sample)
        {
            let _ = writeln!(file.lock(), "{line}");
        }
        self.inner.rounds.fetch_add(1, Ordering::Relaxed);
        let leader = self.inner.cluster.controller_leader() == Some(self.inner.node);
        let mut monitor = self.inner.monitor.lock();
        let assessment = monitor.observe(sample);
        for t in &assessment.transitions {
            // One structured line per transition; every node logs its own
            // view, the leader's is the one delivered.
            tracing::info!(
                target: "cairn::alert",
                alertname = %t.alert.labels.get("alertname").map_or("", |s| s.as_str()),
                state = ?t.alert.state,
                severity = %t.alert.labels.get("severity").map_or("", |s| s.as_str()),
                summary = %t.alert.annotations.get("summary").map_or("", |s| s.as_str()),
                authoritative = leader,
                "alert {:?}", t.alert.state
            );
        }
        if !leader {
            return;
        }
        self.remediate(&monitor);
        let assessment = monitor.last();
        if !self.inner.delivery.enabled() {
            return;
        }
        let mut outgoing: Vec<OutgoingAlert> = assessment
            .transitions
            .iter()
            .filter(|t| t.alert.state != AlertState::Pending)
            .map(|t| self.outgoing(&t.alert))
            .collect();
        if last_resend.elapsed() >= RESEND {
            *last_resend = tokio::time::Instant::now();
            outgoing.extend(
                monitor
                    .alerts()
                    .active()
                    .filter(|a| a.state == AlertState::Firing)
                    .map(|a| self.outgoing(a)),
            );
        }
        drop(monitor);
        self.inner.delivery.send(outgoing);
    }

    /// On the controller leader, each round: judges the action being
    /// judged (undoing it if it made things worse) and, in automatic mode,
    /// starts the next one (see `remedy`).
    fn remediate(&self, monitor: &Monitor) {
        let now = unix_ms();
        let mut log = self.inner.actions.lock();
        if let Some(undo) = remedy::judge_round(monitor, &mut log, now) {
            let cluster = self.inner.cluster.clone();
            tokio::spawn(async move {
                let undone = remedy::run_moves(&cluster, &undo).await;
                tracing::warn!(target: "cairn::remedy", undone = %undone.lines.join("; "), "undid an action that made things worse");
            });
        }
        if self.inner.remediate != remedy::RemediateMode::Leaders {
            return;
        }
        if let Some(id) = remedy::auto_pick(monitor, &log, now) {
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.apply_locally(&id, "auto").await {
                    tracing::debug!(target: "cairn::remedy", %id, error = %e, "automatic action not applied");
                }
            });
        }
    }

    /// Applies recommendation `id` on the controller leader (forwarded
    /// there if it is another node); `by` is `operator` or `auto`.
    pub async fn apply(
        &self,
        id: &str,
        by: &str,
    ) -> Result<cairn_monitor::ActionRecord, remedy::ApplyError> {
        let me = self.inner.node;
        match self.inner.cluster.controller_leader() {
            Some(l) if l != me => {
                let payload = serde_json::to_vec(&(id, by))
                    .map_err(|e| remedy::ApplyError::Unavailable(e.to_string()))?;
                let reply = self
                    .inner
                    .cluster
                    .call_service(
                        l,
                        remedy::APPLY,
                        Bytes::from(payload),
                        remedy::APPLY_TIMEOUT,
                    )
                    .await
                    .map_err(|e| {
                        remedy::ApplyError::Unavailable(format!(
                            "the controller leader (node {l}) applies actions: {e}"
                        ))
                    })?;
                serde_json::from_slice(&reply).map_err(|e| {
                    remedy::ApplyError::Unavailable(format!("bad answer from node {l}: {e}"))
                })?
            }
            Some(_) => self.apply_locally(id, by).await,
            None => Err(remedy::ApplyError::Unavailable(
                "no controller leader: actions wait until the cluster has one".into(),
            )),
        }
    }

    async fn apply_locally(
        &self,
        id: &str,
        by: &str,
    ) -> Result<cairn_monitor::ActionRecord, remedy::ApplyError> {
        let (rec, baseline, before) = {
            let monitor = self.inner.monitor.lock();
            let mut log = self.inner.actions.lock();
            remedy::begin(&monitor, &mut log, id)?
        };
        let moves = match &rec.action {
            cairn_monitor::recommend::Action::TransferLeaders { moves, .. }
            | cairn_monitor::recommend::Action::RebalanceLeaders { moves } => moves.clone(),
            _ => Vec::new(),
        };
        let done = remedy::run_moves(&self.inner.cluster, &moves).await;
        let mut log = self.inner.actions.lock();
        Ok(remedy::record(
            &mut log,
            rec,
            by,
            unix_ms(),
            (baseline, before),
            done,
        ))
    }

    fn outgoing(&self, a: &cairn_monitor::Alert) -> OutgoingAlert {
        OutgoingAlert {
            labels: a.labels.clone(),
            annotations: a.annotations.clone(),
            starts_at: rfc3339(a.starts_at),
            ends_at: a.ends_at.map(rfc3339),
            generator_url: self.inner.generator_url.clone(),
        }
    }

    /// Saved reports and reports made now.
    fn answer_report(&self, q: &Query) -> Result<serde_json::Value, String> {
        match q {
            Query::Reports => {
                let list = match &self.inner.reports {
                    Some(store) => store.list().map_err(|e| e.to_string())?,
                    None => Vec::new(),
                };
                Ok(serde_json::json!({ "reports": list }))
            }
            Query::Report { id } => {
                let report = match &self.inner.reports {
                    Some(store) => store.get(id).map_err(|e| e.to_string())?,
                    None => None,
                };
                Ok(serde_json::json!({ "report": report }))
            }
            Query::ReportNow { window_ms } => {
                let window = (*window_ms).min(MAX_REPORT_WINDOW.as_millis() as u64);
                serde_json::to_value(self.report(unix_ms(), window)).map_err(|e| e.to_string())
            }
            _ => Err(format!("not a report query: {q:?}")),
        }
    }

    /// The answer to `q` from this node's own monitor.
    pub fn answer_locally(&self, q: &Query) -> Result<serde_json::Value, String> {
        let monitor = self.inner.monitor.lock();
        let value = match q {
            Query::Health => serde_json::to_value(&monitor.last().health),
            Query::Findings => serde_json::to_value(&monitor.last().findings),
            Query::Partitions => serde_json::to_value(serde_json::json!({
                "partitions": monitor
                    .history()
                    .latest()
                    .map(cairn_monitor::partitions::partitions)
                    .unwrap_or_default(),
            })),
            Query::Alerts => serde_json::to_value(serde_json::json!({
                "active": monitor.alerts().active().collect::<Vec<_>>(),
                "history": monitor.alerts().history(),
            })),
            Query::Recommendations => serde_json::to_value(serde_json::json!({
                "recommendations": remedy::current(&monitor),
                "remediate": self.inner.remediate,
            })),
            Query::Actions => serde_json::to_value(serde_json::json!({
                "actions": self.inner.actions.lock().records(),
            })),
            Query::Series {
                metric,
                node,
                since_ms,
            } => {
                let since = since_ms.unwrap_or_else(|| unix_ms().saturating_sub(15 * 60_000));
                if metric.contains(',') {
                    // Several metrics in one answer: what a dashboard
                    // polling every second asks for, one request instead
                    // of one per chart.
                    let mut metrics = serde_json::Map::new();
                    for m in metric.split(',').filter(|m| !m.is_empty()) {
                        let points = monitor
                            .history()
                            .series(m, *node, since)
                            .map_err(|e| e.to_string())?;
                        metrics.insert(
                            m.to_string(),
                            serde_json::to_value(points).map_err(|e| e.to_string())?,
                        );
                    }
                    serde_json::to_value(serde_json::json!({ "metrics": metrics }))
                } else {
                    let points = monitor
                        .history()
                        .series(metric, *node, since)
                        .map_err(|e| e.to_string())?;
                    serde_json::to_value(serde_json::json!({ "metric": metric, "points": points }))
                }
            }
            Query::Reports | Query::Report { .. } | Query::ReportNow { .. } => {
                // Reports read files and lock the monitor themselves.
                drop(monitor);
                return self.answer_report(q);
            }
        };
        value.map_err(|e| e.to_string())
    }

    /// The answer to `q` from the controller leader's monitor, or this
    /// node's own when the leader cannot answer (or `local` is asked for).
    /// The reply says whose it is: `"authority": "leader"|"local"` and
    /// `"answered_by": node`.
    pub async fn answer(&self, q: &Query, local: bool) -> Result<serde_json::Value, String> {
        let me = self.inner.node;
        let leader = self.inner.cluster.controller_leader();
        let (mut value, authority, by) = match leader {
            Some(l) if l != me && !local => {
                let payload = Bytes::from(serde_json::to_vec(q).map_err(|e| e.to_string())?);
                match self
                    .inner
                    .cluster
                    .call_service(l, QUERY, payload, FORWARD_TIMEOUT)
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
                {
                    Ok(v) => (v, "leader", l),
                    Err(e) => {
                        tracing::debug!(leader = l, error = %e, "monitor query answered locally");
                        (self.answer_locally(q)?, "local", me)
                    }
                }
            }
            Some(l) if l == me => (self.answer_locally(q)?, "leader", me),
            _ => (self.answer_locally(q)?, "local", me),
        };
        if let Some(obj) = value.as_object_mut() {
            obj.insert("authority".into(), authority.into());
            obj.insert("answered_by".into(), by.into());
        }
        Ok(value)
    }

    /// CPU seconds this node has spent collecting and evaluating.
    pub fn cpu_seconds(&self) -> f64 {
        self.inner.cpu_ns.load(Ordering::Relaxed) as f64 / 1e9
    }
}

/// The monitor's sample of node `id`'s snapshot, received at `at`; a
/// snapshot it cannot read counts as missing, with the reason.
fn sample_of(id: u64, at: u64, s: &TelemetrySnapshot) -> NodeSample {
    NodeSample::from_snapshot(s, Some(id), at)
        .unwrap_or_else(|e| NodeSample::missing(id, at, e.to_string()))
}

/// `unix_ms` as an RFC 3339 UTC timestamp (what Alertmanager expects).
pub fn rfc3339(unix_ms: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(unix_ms as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
