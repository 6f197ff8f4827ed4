//! `cairn bench faults`: the monitor's scorecard against injected faults.
//!
//! A 3-node cluster (started here as child processes, or given with
//! `--server`) takes a steady load (the demo's load generator: batches
//! timed from when they were due, so a stall shows in the p99). Then each
//! scenario runs `--runs` times, one run being:
//!
//! 1. a fault-free period (`--quiet`): every finding the monitor raises
//!    in it is a false alarm (findings already active when it starts are
//!    left over from the last fault, not new alarms), and the load's write
//!    p99 in it is the run's baseline;
//! 2. the fault, injected the way an operator would (`/v1/faults/*`,
//!    SIGSTOP, SIGKILL, a flood of load); the clock starts when it takes
//!    effect;
//! 3. polling the controller leader's findings (through a node the fault
//!    does not touch) until one has the scenario's code — detected, and
//!    whether its subject and resource are the expected ones. Without
//!    it, a new finding about the faulted node or link still counts as
//!    detected, under the name it was given;
//! 4. with `--remediate`, the fault stays on until the load's write p99
//!    is back within 2× the baseline (what remediation should achieve;
//!    until the nodes remediate, it usually is not);
//! 5. the fault lifted, and a wait until its findings have cleared.
//!
//! Which node each fault hits is fixed (see [`SCENARIOS`]), as in the
//! monitor's integration test, so runs compare.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cairn_client::{Client, StreamConfig};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::cli::{FaultsArgs, ProduceApi};
use crate::demo::load::{self, LoadConfig, LoadStats, Target};
use crate::demo::nodes::{self, DemoNode};

/// `cairn node` flags for `--remediate`. The nodes' remediation (moving
/// leaders off a slow node) is opt-in with `--remediate leaders`; add it
/// here once the node has the flag.
const REMEDIATE_NODE_FLAGS: &[&str] = &[];
const STREAM: &str = "scorecard";
const PARTITIONS: u32 = 6;
/// How long a fault may take to clear from the findings after it ends.
const CLEAR_TIMEOUT: Duration = Duration::from_secs(30);
/// How long, with `--remediate`, the write p99 has to come back.
const RECOVER_TIMEOUT: Duration = Duration::from_secs(60);
/// A flood's pile of writes is judged against the node's own last minute:
/// floods closer together than this become each other's "usual".
const OVERLOAD_APART: Duration = Duration::from_secs(75);
/// Every fault lifts by itself after this, should the scorecard die.
const FAULT_TTL_MS: u64 = 120_000;
const HOT_SOURCE: &str = "hot-service";
/// Load before the first fault: the detectors judge a node against its
/// own recent rounds, which must exist first.
const WARM_UP: Duration = Duration::from_secs(10);

/// One kind of fault: where it hits and what the monitor should say.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    name: &'static str,
    code: &'static str,
    resource: &'static str,
    /// The node the fault is injected on (an id, 1-based).
    node: u64,
    /// The node asked for findings: never the faulted one.
    observer: u64,
    /// Needs the node's process (signals): only on a cluster started here.
    needs_process: bool,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "slow-disk",
        code: "slow_disk",
        resource: "disk",
        node: 2,
        observer: 1,
        needs_process: false,
    },
    Scenario {
        name: "slow-link",
        code: "slow_link",
        resource: "network",
        node: 1,
        observer: 2,
        needs_process: false,
    },
    Scenario {
        name: "cpu",
        code: "cpu_saturation",
        resource: "cpu",
        node: 3,
        observer: 1,
        needs_process: false,
    },
    Scenario {
        name: "pause",
        code: "node_stalled",
        resource: "process",
        node: 2,
        observer: 1,
        needs_process: true,
    },
    Scenario {
        name: "overload",
        code: "overload",
        resource: "load",
        node: 1,
        observer: 3,
        needs_process: false,
    },
    Scenario {
        name: "hot-partition",
        code: "hot_partition",
        resource: "load",
        node: 1,
        observer: 2,
        needs_process: false,
    },
    Scenario {
        name: "node-kill",
        code: "node_down",
        resource: "availability",
        node: 3,
        observer: 1,
        needs_process: true,
    },
];

impl Scenario {
    fn subject(&self) -> Value {
        match self.name {
            "slow-link" => json!({"link": [1, 3]}),
            "hot-partition" => json!({
                "stream": STREAM,
                "partition": cairn_types::partition_for_source(HOT_SOURCE, PARTITIONS),
            }),
            _ => json!({"node": self.node}),
        }
    }

    /// Nodes a finding may name and still be about this fault.
    fn touches(&self, subject: &Value) -> bool {
        let nodes: Vec<u64> = match self.name {
            "slow-link" => vec![1, 3],
            _ => vec![self.node],
        };
        subject["node"].as_u64().is_some_and(|n| nodes.contains(&n))
            || subject["link"].as_array().is_some_and(|l| {
                l.iter()
                    .any(|n| n.as_u64().is_some_and(|n| nodes.contains(&n)))
            })
            || (self.name == "hot-partition" && subject == &self.subject())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunScore {
    pub run: u32,
    pub detected: bool,
    /// From the fault taking effect to the first finding about it.
    pub detect_s: Option<f64>,
    /// The finding that named it: `{code, subject, resource, summary}`.
    pub named: Option<Value>,
    pub right_code: bool,
    pub right_subject: bool,
    pub right_resource: bool,
    /// Findings raised in the fault-free period before it (`code subject`).
    pub false_alarms: Vec<String>,
    /// The load's median per-second write p99 in that period, ms.
    pub baseline_p99_ms: Option<f64>,
    /// With `--remediate`: from the fault taking effect until a second's
    /// write p99 was within 2× the baseline, the fault still on.
    pub recovered_s: Option<f64>,
    /// From the fault's end until no finding about it was left.
    pub cleared_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioScore {
    pub name: String,
    pub code: String,
    pub subject: Value,
    pub resource: String,
    /// Why it did not run (it needs processes this command started).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    pub runs: Vec<RunScore>,
    pub detected: usize,
    pub detect_median_s: Option<f64>,
    pub detect_max_s: Option<f64>,
    pub right_subject: usize,
    pub right_resource: usize,
    pub false_alarms: usize,
    pub recovered_median_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Scorecard {
    pub format: &'static str,
    pub started_at_unix_ms: u64,
    /// `started` (here) or `given` (--server).
    pub cluster: &'static str,
    pub rate: f64,
    pub runs: u32,
    pub quiet_s: f64,
    pub detect_timeout_s: f64,
    pub remediate: bool,
    pub scenarios: Vec<ScenarioScore>,
}

pub fn run(args: FaultsArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(scorecard(args))
}

fn pick(names: &[String]) -> Result<Vec<Scenario>> {
    if names.is_empty() {
        return Ok(SCENARIOS.to_vec());
    }
    names
        .iter()
        .map(|n| {
            SCENARIOS
                .iter()
                .find(|s| s.name == n.as_str())
                .copied()
                .with_context(|| {
                    format!(
                        "unknown scenario {n:?}; the scenarios: {}",
                        SCENARIOS
                            .iter()
                            .map(|s| s.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
        })
        .collect()
}

/// The cluster under test.
struct Cluster {
    http: reqwest::Client,
    /// Node id `i + 1`'s URL.
    urls: Vec<String>,
    /// The processes, when started here.
    started: Option<Started>,
    alive: Vec<Arc<AtomicBool>>,
}

struct Started {
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    peers: String,
    nodes: Vec<DemoNode>,
    flags: Vec<&'static str>,
}

impl Cluster {
    fn url(&self, node: u64) -> &str {
        &self.urls[node as usize - 1]
    }

    async fn start(args: &FaultsArgs, http: reqwest::Client) -> Result<Cluster> {
        let (dir, temp) = match &args.data_dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                (d.clone(), None)
            }
            None => {
                let t = tempfile::Builder::new().prefix("cairn-faults-").tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let peers = nodes::peers(&dir, 3)?;
        let mut flags = vec!["--ae-interval", "0"];
        if args.remediate {
            flags.extend_from_slice(REMEDIATE_NODE_FLAGS);
        }
        let mut started = Vec::new();
        for id in 1..=3 {
            started.push(DemoNode::start_with(id, &peers, &dir, &flags).await?);
        }
        let urls = started.iter().map(|n| n.http_url.clone()).collect();
        Ok(Cluster {
            http,
            urls,
            alive: (0..3).map(|_| Arc::new(AtomicBool::new(true))).collect(),
            started: Some(Started {
                dir,
                _temp: temp,
                peers,
                nodes: started,
                flags,
            }),
        })
    }

    /// The given nodes, by id, from the first one's cluster view.
    async fn given(urls: &[String], http: reqwest::Client) -> Result<Cluster> {
        let view = Client::with_http_client(&urls[0], http.clone())?
            .cluster()
            .await
            .with_context(|| format!("{} is not reachable", urls[0]))?;
        let scheme = if urls[0].starts_with("https") {
            "https"
        } else {
            "http"
        };
        let mut ids: Vec<(u64, String)> = view
            .nodes
            .iter()
            .map(|n| (n.id, format!("{scheme}://{}", n.http_addr)))
            .collect();
        ids.sort();
        ensure!(
            ids.len() >= 3
                && ids
                    .iter()
                    .take(3)
                    .enumerate()
                    .all(|(i, (id, _))| *id == i as u64 + 1),
            "the scorecard needs nodes 1, 2 and 3; the cluster has {:?}",
            ids.iter().map(|n| n.0).collect::<Vec<_>>()
        );
        Ok(Cluster {
            http,
            urls: ids.into_iter().take(3).map(|n| n.1).collect(),
            started: None,
            alive: (0..3).map(|_| Arc::new(AtomicBool::new(true))).collect(),
        })
    }

    fn pid(&self, node: u64) -> Result<rustix::process::Pid> {
        let s = self
            .started
            .as_ref()
            .context("not a cluster started here")?;
        rustix::process::Pid::from_raw(s.nodes[node as usize - 1].pid as i32).context("pid")
    }

    async fn stop(mut self) {
        if let Some(s) = &mut self.started {
            for n in &mut s.nodes {
                n.terminate();
            }
            for n in &mut s.nodes {
                n.wait_or_kill(Duration::from_secs(10)).await;
            }
        }
    }

    /// The active findings as `node` answers (the controller leader's).
    async fn findings(&self, node: u64) -> Result<Vec<Value>> {
        let r = self
            .http
            .get(format!("{}/v1/monitor/findings", self.url(node)))
            .timeout(Duration::from_secs(3))
            .send()
            .await?;
        ensure!(r.status().is_success(), "findings: {}", r.status());
        Ok(r.json().await?)
    }

    async fn post(&self, node: u64, path: &str, body: Value) -> Result<()> {
        let url = format!("{}{path}", self.url(node));
        let r = self.http.post(&url).json(&body).send().await?;
        ensure!(r.status().is_success(), "POST {url}: {}", r.status());
        Ok(())
    }

    async fn delete(&self, node: u64, path: &str) -> Result<()> {
        let url = format!("{}{path}", self.url(node));
        let r = self.http.delete(&url).send().await?;
        ensure!(r.status().is_success(), "DELETE {url}: {}", r.status());
        Ok(())
    }

    /// Node's writes in flight and connections refused so far, from its
    /// `/metrics`: the raw signs that a flood has begun.
    async fn flood_signals(&self, node: u64) -> Result<(f64, f64)> {
        let text = self
            .http
            .get(format!("{}/metrics", self.url(node)))
            .send()
            .await?
            .text()
            .await?;
        let sum = |prefix: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(prefix))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        Ok((
            sum("cairn_writes_in_flight "),
            sum("cairn_connections_refused_total{"),
        ))
    }
}

fn key(f: &Value) -> String {
    format!("{} {}", f["code"].as_str().unwrap_or("?"), f["subject"])
}

/// The steady load and its per-second write p99s.
struct Steady {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    sampler: tokio::task::JoinHandle<()>,
    /// (when, write p99 ms) each second.
    p99: Arc<parking_lot::Mutex<Vec<(Instant, f64)>>>,
}

impl Steady {
    fn start(c: &Cluster, rate: f64) -> Steady {
        let stats = Arc::new(LoadStats::default());
        let config = LoadConfig {
            stream: STREAM.into(),
            rate,
            api: ProduceApi::Http,
            targets: c
                .urls
                .iter()
                .zip(&c.alive)
                .map(|(u, a)| Target {
                    http_url: u.clone(),
                    tcp_addr: String::new(),
                    alive: a.clone(),
                })
                .collect(),
        };
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(load::run(config, stats.clone(), rx));
        let p99: Arc<parking_lot::Mutex<Vec<(Instant, f64)>>> = Default::default();
        let samples = p99.clone();
        let sampler = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if let Some(v) = stats.take_interval_p99_ms() {
                    samples.lock().push((Instant::now(), v));
                }
            }
        });
        Steady {
            stop,
            task,
            sampler,
            p99,
        }
    }

    fn median_since(&self, since: Instant) -> Option<f64> {
        let mut v: Vec<f64> = self
            .p99
            .lock()
            .iter()
            .filter(|(t, _)| *t >= since)
            .map(|(_, v)| *v)
            .collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    }

    /// The first second after `since` whose p99 was within `bound`.
    fn first_within(&self, since: Instant, bound: f64) -> Option<Instant> {
        self.p99
            .lock()
            .iter()
            .find(|(t, v)| *t > since && *v <= bound)
            .map(|(t, _)| *t)
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.sampler.abort();
    }
}

/// An injected fault, to be lifted.
enum Injected {
    Api(u64, &'static str),
    Paused(u64),
    Killed(u64),
    Flood(tokio::process::Child, String),
    Hot(Arc<AtomicBool>, Vec<tokio::task::JoinHandle<()>>),
}

async fn inject(c: &Cluster, s: &Scenario, run: u32) -> Result<(Injected, Instant)> {
    let ttl = FAULT_TTL_MS;
    let injected = match s.name {
        "slow-disk" => {
            c.post(
                s.node,
                "/v1/faults/disk",
                json!({"fsync_delay_ms": 40, "ttl_ms": ttl}),
            )
            .await?;
            Injected::Api(s.node, "/v1/faults/disk")
        }
        "slow-link" => {
            c.post(
                s.node,
                "/v1/faults/network",
                json!({"action": "delay", "peers": [3], "delay_ms": 60, "ttl_ms": ttl}),
            )
            .await?;
            Injected::Api(s.node, "/v1/faults/network")
        }
        "cpu" => {
            c.post(
                s.node,
                "/v1/faults/cpu",
                json!({"threads": 2, "duty_percent": 100, "ttl_ms": ttl}),
            )
            .await?;
            Injected::Api(s.node, "/v1/faults/cpu")
        }
        "pause" => {
            // The load stops sending to it, as a client would after its
            // timeouts; the monitor must still find it.
            c.alive[s.node as usize - 1].store(false, Ordering::Relaxed);
            rustix::process::kill_process(c.pid(s.node)?, rustix::process::Signal::STOP)?;
            Injected::Paused(s.node)
        }
        "node-kill" => {
            c.alive[s.node as usize - 1].store(false, Ordering::Relaxed);
            rustix::process::kill_process(c.pid(s.node)?, rustix::process::Signal::KILL)?;
            Injected::Killed(s.node)
        }
        "hot-partition" => {
            let stop = Arc::new(AtomicBool::new(false));
            let client = Client::with_http_client(c.url(s.node), c.http.clone())?;
            let tasks = (0..4)
                .map(|_| {
                    let (client, stop) = (client.clone(), stop.clone());
                    tokio::spawn(async move {
                        let entries: Vec<cairn_types::NewEntry> = (0..200)
                            .map(|i| cairn_types::NewEntry {
                                timestamp: None,
                                level: None,
                                source: HOT_SOURCE.into(),
                                message: format!("hot {i}"),
                                attributes: Default::default(),
                            })
                            .collect();
                        while !stop.load(Ordering::Relaxed) {
                            if client.append(STREAM, &entries).await.is_err() {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    })
                })
                .collect();
            Injected::Hot(stop, tasks)
        }
        "overload" => {
            // An open-loop flood far past what the node completes, all
            // through one node: it piles up writes and sheds connections
            // at its caps — the overload detector's signs.
            let prefix = format!("flood{run}-{:04x}", rand::random::<u16>());
            let (_, refused_before) = c.flood_signals(s.node).await?;
            let exe = std::env::current_exe()?;
            let child = tokio::process::Command::new(exe)
                .args([
                    "bench",
                    "steady",
                    "--server",
                    c.url(s.node),
                    "--api",
                    "http",
                ])
                .args([
                    "--rate",
                    "400000",
                    "--batch-size",
                    "20",
                    "--connections",
                    "64",
                ])
                .args(["--max-in-flight", "64", "--duration", "120s", "--no-verify"])
                .args(["--stream-prefix", &prefix])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("start the flood")?;
            // The clock starts when the flood does, as the node's own
            // counters show it, not when its process was started.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let (in_flight, refused) = c.flood_signals(s.node).await?;
                if in_flight >= 100.0 || refused > refused_before {
                    break;
                }
                ensure!(Instant::now() < deadline, "the flood never started");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Injected::Flood(child, prefix)
        }
        other => bail!("no way to inject {other}"),
    };
    Ok((injected, Instant::now()))
}

async fn lift(c: &mut Cluster, injected: Injected) -> Result<()> {
    match injected {
        Injected::Api(node, path) => c.delete(node, path).await?,
        Injected::Paused(node) => {
            rustix::process::kill_process(c.pid(node)?, rustix::process::Signal::CONT)?;
            c.alive[node as usize - 1].store(true, Ordering::Relaxed);
        }
        Injected::Killed(node) => {
            // Restarted on its data; it comes back on a new HTTP port,
            // which the load (built with the old one) no longer uses.
            let s = c.started.as_mut().context("started here")?;
            let i = node as usize - 1;
            s.nodes[i].wait_or_kill(Duration::from_secs(1)).await;
            let fresh = DemoNode::start_with(node, &s.peers, &s.dir, &s.flags).await?;
            c.urls[i] = fresh.http_url.clone();
            s.nodes[i] = fresh;
        }
        Injected::Flood(mut child, prefix) => {
            let _ = child.kill().await;
            // Its streams go too, or repeated floods fill the disk.
            let admin = Client::with_http_client(&c.urls[0], c.http.clone())?;
            for s in admin.list_streams().await? {
                if s.name.starts_with(&prefix) {
                    let _ = admin.delete_stream(&s.name).await;
                }
            }
        }
        Injected::Hot(stop, tasks) => {
            stop.store(true, Ordering::Relaxed);
            for t in tasks {
                let _ = t.await;
            }
        }
    }
    Ok(())
}

async fn one_run(
    c: &mut Cluster,
    load: &Steady,
    s: &Scenario,
    run: u32,
    args: &FaultsArgs,
) -> Result<RunScore> {
    // 1. Fault-free.
    let quiet_start = Instant::now();
    let before: BTreeSet<String> = c.findings(s.observer).await?.iter().map(key).collect();
    let mut false_alarms = BTreeSet::new();
    while quiet_start.elapsed() < args.quiet {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Ok(fs) = c.findings(s.observer).await {
            false_alarms.extend(fs.iter().map(key).filter(|k| !before.contains(k)));
        }
    }
    let baseline_p99_ms = load.median_since(quiet_start);
    let present: BTreeSet<String> = c.findings(s.observer).await?.iter().map(key).collect();

    // 2. The fault.
    let (injected, at) = inject(c, s, run).await?;

    // 3. Named?
    let mut fallback: Option<(Duration, Value)> = None;
    let mut exact: Option<(Duration, Value)> = None;
    while at.elapsed() < args.detect_timeout && exact.is_none() {
        if let Ok(fs) = c.findings(s.observer).await {
            let took = at.elapsed();
            // The expected code on the expected subject; or on another
            // one, if new (a finding of that code already active before
            // the fault, e.g. a slow disk elsewhere, is not the answer).
            exact = fs
                .iter()
                .find(|f| f["code"] == s.code && f["subject"] == s.subject())
                .or_else(|| {
                    fs.iter()
                        .find(|f| f["code"] == s.code && !present.contains(&key(f)))
                })
                .map(|f| (took, f.clone()));
            if fallback.is_none() {
                fallback = fs
                    .iter()
                    .find(|f| {
                        !present.contains(&key(f))
                            && f["explained_by"].is_null()
                            && s.touches(&f["subject"])
                    })
                    .map(|f| (took, f.clone()));
            }
        }
        if exact.is_none() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let named = exact.clone().or(fallback);
    let detected = named.is_some();
    let finding = named.as_ref().map(|(_, f)| f);

    // 4. With --remediate: until the load's p99 is within 2× baseline.
    let mut recovered_s = None;
    if args.remediate
        && detected
        && let Some(base) = baseline_p99_ms
    {
        let deadline = at + RECOVER_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(t) = load.first_within(at, 2.0 * base) {
                recovered_s = Some(t.duration_since(at).as_secs_f64());
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    // 5. Lifted; wait until the fault's own finding has cleared (its
    // symptoms, e.g. a lagging follower catching up, may take longer and
    // are the next quiet period's business: present at its start, they
    // are no alarms).
    lift(c, injected).await?;
    let lifted = Instant::now();
    let mut cleared_s = None;
    let mut left = String::new();
    while lifted.elapsed() < CLEAR_TIMEOUT {
        if let Ok(fs) = c.findings(s.observer).await {
            let about: Vec<String> = fs
                .iter()
                .filter(|f| !present.contains(&key(f)))
                .filter(|f| f["code"] == s.code || finding.is_some_and(|n| key(n) == key(f)))
                .map(key)
                .collect();
            if about.is_empty() {
                cleared_s = Some(lifted.elapsed().as_secs_f64());
                break;
            }
            left = about.join("; ");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if cleared_s.is_none() {
        eprintln!(
            "{} run {}: still active {CLEAR_TIMEOUT:?} after the fault ended: {left}",
            s.name,
            run + 1
        );
    }
    Ok(RunScore {
        run,
        detected,
        detect_s: named.as_ref().map(|(d, _)| d.as_secs_f64()),
        named: finding.map(|f| {
            json!({"code": f["code"], "subject": f["subject"], "resource": f["resource"],
                   "summary": f["summary"]})
        }),
        right_code: exact.is_some(),
        right_subject: finding.is_some_and(|f| f["subject"] == s.subject()),
        right_resource: finding.is_some_and(|f| f["resource"] == s.resource),
        false_alarms: false_alarms.into_iter().collect(),
        baseline_p99_ms,
        recovered_s,
        cleared_s,
    })
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

fn score(s: &Scenario, runs: Vec<RunScore>, skipped: Option<String>) -> ScenarioScore {
    let detect: Vec<f64> = runs.iter().filter_map(|r| r.detect_s).collect();
    ScenarioScore {
        name: s.name.into(),
        code: s.code.into(),
        subject: s.subject(),
        resource: s.resource.into(),
        skipped,
        detected: runs.iter().filter(|r| r.detected).count(),
        detect_median_s: median(detect.clone()),
        detect_max_s: detect.iter().copied().max_by(f64::total_cmp),
        right_subject: runs.iter().filter(|r| r.right_subject).count(),
        right_resource: runs.iter().filter(|r| r.right_resource).count(),
        false_alarms: runs.iter().map(|r| r.false_alarms.len()).sum(),
        recovered_median_s: median(runs.iter().filter_map(|r| r.recovered_s).collect()),
        runs,
    }
}

/// Polls until `node` answers a verdict with no finding (or `limit`).
async fn wait_green(c: &Cluster, node: u64, limit: Duration) -> Result<()> {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < limit {
        match c.findings(node).await {
            Ok(fs) if fs.is_empty() => return Ok(()),
            Ok(fs) => last = fs.iter().map(key).collect::<Vec<_>>().join("; "),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("the cluster did not settle to no findings within {limit:?}: {last}")
}

async fn scorecard(args: FaultsArgs) -> Result<()> {
    let scenarios = pick(&args.scenarios)?;
    let http = cairn_client::tls::http_builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let started_at_unix_ms = cairn_types::clock::unix_ms();
    let mut c = if args.server.is_empty() {
        Cluster::start(&args, http).await?
    } else {
        Cluster::given(&args.server, http).await?
    };
    let result = drive(&mut c, &scenarios, &args).await;
    let keep = c
        .started
        .as_ref()
        .filter(|s| s._temp.is_none())
        .map(|s| s.dir.clone());
    c.stop().await;
    if let Some(dir) = keep {
        eprintln!("nodes' data and logs kept in {}", dir.display());
    }
    let scores = result?;
    let card = Scorecard {
        format: "cairn-faults/1",
        started_at_unix_ms,
        cluster: if args.server.is_empty() {
            "started"
        } else {
            "given"
        },
        rate: args.rate,
        runs: args.runs,
        quiet_s: args.quiet.as_secs_f64(),
        detect_timeout_s: args.detect_timeout.as_secs_f64(),
        remediate: args.remediate,
        scenarios: scores,
    };
    print!("{}", table(&card));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&card)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

async fn drive(
    c: &mut Cluster,
    scenarios: &[Scenario],
    args: &FaultsArgs,
) -> Result<Vec<ScenarioScore>> {
    let admin = Client::with_http_client(&c.urls[0], c.http.clone())?;
    let config = StreamConfig {
        partitions: PARTITIONS,
        replication_factor: Some(3),
        ..StreamConfig::default()
    };
    // The controller may still be forming: retry for a while.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match admin.create_stream(STREAM, config.clone()).await {
            Ok(_) => break,
            Err(e) if e.code() == Some(cairn_types::ErrorCode::StreamExists) => break,
            Err(e) if Instant::now() > deadline => {
                return Err(e).context("create the scorecard stream");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
    let load = Steady::start(c, args.rate);
    let settle = Instant::now();
    tokio::time::sleep(WARM_UP).await;
    if let Err(e) = wait_green(c, 1, Duration::from_secs(60)).await {
        // Findings active from the start are not counted against any
        // fault; say so and go on.
        eprintln!("warning: {e}");
    }
    eprintln!(
        "cluster ready, load at {} entries/s, settled in {:.1}s",
        args.rate,
        settle.elapsed().as_secs_f64()
    );
    let mut out = Vec::new();
    let outcome: Result<()> = async {
        let mut last_flood: Option<Instant> = None;
        for s in scenarios {
            if s.needs_process && c.started.is_none() {
                out.push(score(
                    s,
                    Vec::new(),
                    Some("needs node processes this command started (no --server)".into()),
                ));
                continue;
            }
            let mut runs = Vec::new();
            for run in 0..args.runs {
                if s.name == "overload"
                    && let Some(t) = last_flood
                {
                    tokio::time::sleep(OVERLOAD_APART.saturating_sub(t.elapsed())).await;
                }
                let r = one_run(c, &load, s, run, args).await?;
                if s.name == "overload" {
                    last_flood = Some(Instant::now());
                }
                eprintln!(
                    "{} run {}: {}",
                    s.name,
                    run + 1,
                    match &r.named {
                        Some(n) => format!(
                            "named after {:.1}s: {} {} ({})",
                            r.detect_s.unwrap_or(0.0),
                            n["code"].as_str().unwrap_or(""),
                            n["subject"],
                            n["resource"].as_str().unwrap_or("")
                        ),
                        None => "not named".into(),
                    }
                );
                runs.push(r);
            }
            out.push(score(s, runs, None));
        }
        Ok(())
    }
    .await;
    load.stop().await;
    outcome?;
    Ok(out)
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.1}s"))
}

/// The scorecard as a table.
fn table(card: &Scorecard) -> String {
    let mut out = format!(
        "{:<14} {:>5} {:>9} {:>8} {:>8} {:>8} {:>9} {:>7}",
        "SCENARIO", "RUNS", "DETECTED", "MEDIAN", "MAX", "SUBJECT", "RESOURCE", "FALSE"
    );
    if card.remediate {
        out.push_str(&format!(" {:>10}", "P99 BACK"));
    }
    out.push('\n');
    for s in &card.scenarios {
        if let Some(why) = &s.skipped {
            out.push_str(&format!("{:<14} skipped: {why}\n", s.name));
            continue;
        }
        let n = s.runs.len();
        out.push_str(&format!(
            "{:<14} {:>5} {:>9} {:>8} {:>8} {:>8} {:>9} {:>7}",
            s.name,
            n,
            format!("{}/{n}", s.detected),
            secs(s.detect_median_s),
            secs(s.detect_max_s),
            format!("{}/{n}", s.right_subject),
            format!("{}/{n}", s.right_resource),
            s.false_alarms
        ));
        if card.remediate {
            out.push_str(&format!(" {:>10}", secs(s.recovered_median_s)));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_scenario_names_when_picked_should_accept_known_and_list_the_rest() {
        let picked = pick(&["slow-disk".into(), "node-kill".into()]).unwrap();
        assert_eq!(picked[1].code, "node_down");
        assert_eq!(pick(&[]).unwrap().len(), 7);
        let err = pick(&["disk".into()]).unwrap_err().to_string();
        assert!(err.contains("slow-disk, slow-link, cpu"), "{err}");
    }

    #[test]
    fn given_findings_when_matched_should_tell_the_faulted_subject() {
        let link = SCENARIOS[1];
        assert!(link.touches(&json!({"link": [1, 2]})));
        assert!(link.touches(&json!({"node": 3})));
        assert!(!link.touches(&json!({"node": 2})));
        assert_eq!(link.subject(), json!({"link": [1, 3]}));
        let hot = SCENARIOS[5];
        assert!(hot.touches(&hot.subject()));
    }
}
