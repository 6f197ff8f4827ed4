//! `cairn demo`: a 3-node cluster on loopback, a demo stream, a steady
//! load of realistic log entries and a live status, in one command.
//!
//! The nodes are child processes of this binary (`nodes`), started with
//! free ports and data under a temporary directory (or `--data-dir`, which
//! is kept). Once every node sees a controller leader and all three
//! members, the demo creates its stream (6 partitions, replication factor
//! 3), waits until every partition has a leader, and starts the load
//! (`load`, in this process, through `cairn-client`). Every second it
//! samples each node and draws the status (`status`).
//!
//! Shutdown order matters and is the same for Ctrl-C, SIGTERM, the end of
//! `--duration` and a failed startup: stop the load and let its requests in
//! flight finish, then SIGTERM every node and wait for each (bounded, then
//! SIGKILL), then remove the temporary directory. Signal handlers are
//! installed before the first node starts, so there is no window in which
//! a Ctrl-C would kill the demo and leave its nodes and data behind.
//!
//! Exit status: 0 after a clean stop; 1 if startup failed, a node exited
//! while nobody asked it to, or a node had to be killed at shutdown — so a
//! CI job running `cairn demo --duration 30s` notices.

mod entries;
pub(crate) mod load;
pub(crate) mod nodes;
mod status;

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cairn_client::{Client, ClusterView, StreamConfig};
use cairn_types::ErrorCode;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

use crate::cli::{DemoArgs, ProduceApi};
use load::{LoadConfig, LoadStats, Target};
use nodes::DemoNode;
use status::{LoadRow, NodeProcessInfo, NodeSample, Status};

const NODES: usize = 3;
pub const STREAM: &str = "demo";
pub const PARTITIONS: u32 = 6;
const REPLICATION_FACTOR: u32 = 3;
/// Bound on forming the cluster and on leading the stream's partitions.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the nodes may take to stop after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the status waits for a node's answer.
const SAMPLE_TIMEOUT: Duration = Duration::from_millis(800);

pub fn run(args: DemoArgs) -> Result<()> {
    // The nodes log to their own files; the demo's terminal is the status.
    crate::node_cmd::init_logging("warn");
    // parse_rate already refuses negative and non-finite rates.
    if args.rate <= 0.0 {
        bail!("--rate must be above zero");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(demo(args))
}

/// SIGINT and SIGTERM, both meaning "stop the demo".
struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    fn install() -> Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("install the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("install the SIGTERM handler")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

/// Where the data lives, and whether to remove it at the end.
enum DataDir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl DataDir {
    fn path(&self) -> &Path {
        match self {
            DataDir::Temp(t) => t.path(),
            DataDir::Kept(p) => p,
        }
    }
}

async fn demo(args: DemoArgs) -> Result<()> {
    let mut signals = Signals::install()?;
    let data = match &args.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("create {dir:?}"))?;
            DataDir::Kept(std::path::absolute(dir).unwrap_or_else(|_| dir.clone()))
        }
        None => DataDir::Temp(
            tempfile::Builder::new()
                .prefix("cairn-demo-")
                .tempdir()
                .context("create a temporary data directory")?,
        ),
    };
    let tty = std::io::stdout().is_terminal();
    println!(
        "cairn demo: starting {NODES} nodes on loopback, data in {}",
        data.path().display()
    );

    let mut nodes: Vec<DemoNode> = Vec::new();
    let stats = Arc::new(LoadStats::default());
    let started = tokio::select! {
        r = start_cluster(data.path(), &mut nodes) => r.map(Some),
        s = signals.recv() => {
            println!("{s}: stopping before the demo started");
            Ok(None)
        }
    };
    let mut died = Vec::new();
    let outcome = match started {
        Ok(Some(())) => {
            run_load(
                &args,
                &data,
                &mut nodes,
                &stats,
                &mut signals,
                tty,
                &mut died,
            )
            .await
        }
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };

    // Whatever happened: stop the nodes, report, clean up.
    let stop_problems = stop_nodes(&mut nodes).await;
    match data {
        DataDir::Temp(t) => {
            let path = t.path().to_path_buf();
            match t.close() {
                Ok(()) => println!("removed {}", path.display()),
                Err(e) => eprintln!("warning: could not remove {}: {e}", path.display()),
            }
        }
        DataDir::Kept(p) => println!("data kept in {}", p.display()),
    }
    outcome?;
    if !died.is_empty() {
        bail!("{} during the demo", died.join("; "));
    }
    if !stop_problems.is_empty() {
        bail!("{}", stop_problems.join("; "));
    }
    Ok(())
}

/// Starts the nodes, waits for the cluster, creates the demo stream and
/// waits until all of its partitions have leaders.
async fn start_cluster(dir: &Path, nodes: &mut Vec<DemoNode>) -> Result<()> {
    let peers = nodes::peers(dir, NODES)?;
    for id in 1..=NODES as u64 {
        nodes.push(DemoNode::start(id, &peers, dir).await?);
    }
    let http = cairn_client::http_client();
    let urls: Vec<String> = nodes.iter().map(|n| n.http_url.clone()).collect();
    let deadline = Instant::now() + READY_TIMEOUT;

    wait_for(nodes, &http, &urls, deadline, "form the cluster", |v| {
        v.controller_leader.is_some()
            && v.nodes.len() == NODES
            && v.nodes.iter().all(|n| !n.http_addr.is_empty())
    })
    .await?;

    // The controller may still be settling: retry until the deadline.
    let client = Client::new(&urls[0])?;
    let config = StreamConfig {
        partitions: PARTITIONS,
        replication_factor: Some(REPLICATION_FACTOR),
        ..StreamConfig::default()
    };
    // A stream kept from an earlier demo (`--data-dir`) is used as it is.
    // Reading it back may briefly say `stream_not_found`: the answering
    // node can be a step behind the controller's metadata.
    let info = loop {
        let result = match client.create_stream(STREAM, config.clone()).await {
            Err(e) if e.code() == Some(ErrorCode::StreamExists) => client.get_stream(STREAM).await,
            other => other,
        };
        match result {
            Ok(info) => break info,
            Err(e) if Instant::now() > deadline => {
                return Err(e).context(format!("create the {STREAM} stream"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let partitions = info.partitions.len();
    wait_for(
        nodes,
        &http,
        &urls,
        deadline,
        "lead every partition of the demo stream",
        |v| {
            let groups: Vec<_> = v.groups.iter().filter(|g| g.stream == STREAM).collect();
            groups.len() == partitions && groups.iter().all(|g| g.leader.is_some())
        },
    )
    .await
}

/// Polls every node's `/v1/cluster` until `ready` holds for all of them,
/// failing early if a node process exits.
async fn wait_for(
    nodes: &mut [DemoNode],
    http: &reqwest::Client,
    urls: &[String],
    deadline: Instant,
    what: &str,
    ready: impl Fn(&ClusterView) -> bool,
) -> Result<()> {
    loop {
        for n in nodes.iter_mut() {
            if let Some(status) = n.poll_exit() {
                bail!(
                    "node {} exited ({status}) while waiting to {what}; the end of its log:\n{}",
                    n.id,
                    nodes::log_tail(&n.log_path)
                );
            }
        }
        let mut all = true;
        for url in urls {
            let view: Option<ClusterView> = async {
                let r = http
                    .get(format!("{url}/v1/cluster"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .ok()?;
                r.error_for_status().ok()?.json().await.ok()
            }
            .await;
            if !view.as_ref().is_some_and(&ready) {
                all = false;
                break;
            }
        }
        if all {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the nodes did not {what} within {} s",
                READY_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Hands `url` to the desktop's opener (`xdg-open`, or `$BROWSER` when
/// set), without waiting for it: a browser may run for hours. Its output
/// goes nowhere, so it cannot tear the status display; a thread reaps it
/// and says so if it failed (`xdg-open` without a desktop exits non-zero).
fn open_in_browser(url: &str) -> Result<(), String> {
    let opener = std::env::var("BROWSER").unwrap_or_else(|_| "xdg-open".to_string());
    let mut child = std::process::Command::new(&opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                format!("`{opener}` is not installed (apt-get install xdg-utils, or set BROWSER)")
            }
            _ => format!("could not start `{opener}`: {e}"),
        })?;
    let url = url.to_string();
    std::thread::spawn(move || {
        if let Ok(status) = child.wait()
            && !status.success()
        {
            println!(
                "--open: `{opener}` failed ({status}): no desktop browser? open {url} yourself"
            );
        }
    });
    Ok(())
}

/// The lines printed once the cluster is up: what runs, and what to try.
fn header(args: &DemoArgs, data: &DataDir, nodes: &[DemoNode]) -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "cairn".to_string());
    let api = match args.api {
        ProduceApi::Binary => "the binary protocol",
        ProduceApi::Http => "HTTP",
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Dashboard: {}/ui/  (every node serves it; `--open` opens it)",
        nodes[0].http_url
    );
    let _ = writeln!(
        s,
        "Cairn demo: {NODES} nodes, stream {STREAM:?} ({PARTITIONS} partitions, replication \
         factor {REPLICATION_FACTOR}), {} entries/s of log entries over {api}",
        status::count(args.rate)
    );
    let kept = match data {
        DataDir::Temp(_) => "removed on exit",
        DataDir::Kept(_) => "kept",
    };
    let _ = writeln!(s, "data: {} ({kept})", data.path().display());
    let _ = writeln!(s);
    for n in nodes {
        let _ = writeln!(
            s,
            "  node {}  {}  binary {}  pid {}  log {}",
            n.id,
            n.http_url,
            n.tcp_addr,
            n.pid,
            n.log_path.display()
        );
    }
    let url = &nodes[0].http_url;
    let _ = writeln!(s);
    let _ = writeln!(s, "Try:");
    let _ = writeln!(
        s,
        "  {exe} query --server {url} --stream {STREAM} --since 1m --level ERROR --limit 5"
    );
    let _ = writeln!(
        s,
        "  {exe} stream list --server {}",
        nodes[nodes.len() - 1].http_url
    );
    let _ = writeln!(s, "  curl -s {url}/v1/cluster");
    let _ = writeln!(
        s,
        "  curl -s {url}/metrics | grep cairn_write_stage_seconds"
    );
    let _ = writeln!(s, "  curl -s {url}/v1/telemetry/snapshot");
    let _ = writeln!(s);
    let stop = match args.duration {
        Some(d) => format!("Stops by itself after {} s; Ctrl-C", d.as_secs_f64()),
        None => "Ctrl-C".to_string(),
    };
    let _ = writeln!(
        s,
        "{stop} stops the load, then the nodes{}.",
        match data {
            DataDir::Temp(_) => ", and removes the data",
            DataDir::Kept(_) => "",
        }
    );
    s
}

/// Runs the load and the status display until a signal or `--duration`.
#[allow(clippy::too_many_arguments)]
async fn run_load(
    args: &DemoArgs,
    data: &DataDir,
    nodes: &mut [DemoNode],
    stats: &Arc<LoadStats>,
    signals: &mut Signals,
    tty: bool,
    died: &mut Vec<String>,
) -> Result<()> {
    let header = header(args, data, nodes);
    print!("{header}");
    if !tty {
        println!();
    }
    if args.open {
        let url = format!("{}/ui/", nodes[0].http_url);
        if let Err(why) = open_in_browser(&url) {
            println!("--open: {why}; open {url} yourself");
        }
    }
    let _ = std::io::stdout().flush();

    let alive: Vec<Arc<AtomicBool>> = nodes
        .iter()
        .map(|_| Arc::new(AtomicBool::new(true)))
        .collect();
    let (stop_tx, stop_rx) = watch::channel(false);
    let load = tokio::spawn(load::run(
        LoadConfig {
            stream: STREAM.to_string(),
            rate: args.rate,
            api: args.api,
            targets: nodes
                .iter()
                .zip(&alive)
                .map(|(n, a)| Target {
                    http_url: n.http_url.clone(),
                    tcp_addr: n.tcp_addr.clone(),
                    alive: a.clone(),
                })
                .collect(),
        },
        stats.clone(),
        stop_rx,
    ));

    let http = cairn_client::http_client();
    let start = Instant::now();
    let end = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut previous = (Instant::now(), 0u64, 0u64);
    // The previous status, for per-partition rates.
    let mut last_status: Option<Status> = None;
    let reason = loop {
        tokio::select! {
            _ = tick.tick() => {}
            s = signals.recv() => break s.to_string(),
            () = async {
                match end {
                    Some(end) => tokio::time::sleep_until(end).await,
                    None => std::future::pending().await,
                }
            } => break format!("{} s elapsed", args.duration.unwrap_or_default().as_secs_f64()),
        }
        // Notice nodes that died, and stop sending to them.
        for (n, a) in nodes.iter_mut().zip(&alive) {
            if a.load(Ordering::Relaxed)
                && let Some(status) = n.poll_exit()
            {
                a.store(false, Ordering::Relaxed);
                died.push(format!("node {} exited unexpectedly ({status})", n.id));
            }
        }
        let samples = sample_all(&http, nodes).await;
        let now = Instant::now();
        let acked = stats.acked_entries.load(Ordering::Relaxed);
        let failed = stats.failed_requests.load(Ordering::Relaxed);
        let dt = now.duration_since(previous.0).as_secs_f64().max(1e-3);
        let load_row = LoadRow {
            target_per_s: args.rate,
            acked_per_s: (acked - previous.1) as f64 / dt,
            failed_per_s: (failed - previous.2) as f64 / dt,
            p99_ms: stats.take_interval_p99_ms(),
            acked_total: acked,
            shed_total: stats.shed_entries.load(Ordering::Relaxed),
        };
        previous = (now, acked, failed);
        let processes: Vec<NodeProcessInfo> = nodes
            .iter()
            .map(|n| {
                let gone = n.exited.map(|s| format!("exited unexpectedly ({s})"));
                (n.id, n.http_url.clone(), n.pid, gone)
            })
            .collect();
        let status = Status::build(
            start.elapsed(),
            STREAM,
            &processes,
            &samples,
            load_row,
            stats.last_error.lock().take(),
        )
        .with_rates(last_status.as_ref());
        let mut out = std::io::stdout().lock();
        if tty {
            // Redraw the whole screen: robust to lines the terminal wraps.
            let _ = write!(
                out,
                "\x1b[H\x1b[2J{header}\n{}\n",
                status.table().join("\n")
            );
        } else {
            let _ = writeln!(out, "{}", status.line());
        }
        let _ = out.flush();
        last_status = Some(status);
    };

    println!("\n{reason}: stopping the load...");
    let _ = stop_tx.send(true);
    let _ = load.await;
    let elapsed = start.elapsed().as_secs_f64();
    let acked = stats.acked_entries.load(Ordering::Relaxed);
    let failed = stats.failed_requests.load(Ordering::Relaxed);
    let mut summary = format!(
        "load: {} entries acknowledged in {elapsed:.1} s ({}/s), {} failed requests",
        status::count(acked as f64),
        status::count(acked as f64 / elapsed.max(1e-3)),
        status::count(failed as f64),
    );
    if let Some((p50, p99, max)) = stats.total_ms() {
        let _ = write!(
            summary,
            ", write latency p50 {} p99 {} max {}",
            status::ms(p50),
            status::ms(p99),
            status::ms(max)
        );
    }
    println!("{summary}");
    Ok(())
}

/// Samples every running node at once.
async fn sample_all(http: &reqwest::Client, nodes: &[DemoNode]) -> Vec<NodeSample> {
    let tasks: Vec<_> = nodes
        .iter()
        .map(|n| {
            let (http, url, running) = (http.clone(), n.http_url.clone(), n.exited.is_none());
            tokio::spawn(async move {
                if running {
                    status::sample(&http, &url, SAMPLE_TIMEOUT).await
                } else {
                    NodeSample::default()
                }
            })
        })
        .collect();
    let mut samples = Vec::with_capacity(tasks.len());
    for t in tasks {
        samples.push(t.await.unwrap_or_default());
    }
    samples
}

/// SIGTERMs every running node, then waits for all (bounded; SIGKILL after
/// that). Returns what went wrong, if anything.
async fn stop_nodes(nodes: &mut [DemoNode]) -> Vec<String> {
    let running: Vec<u64> = nodes
        .iter_mut()
        .filter_map(|n| n.poll_exit().is_none().then_some(n.id))
        .collect();
    if running.is_empty() {
        return Vec::new();
    }
    println!("stopping the nodes (SIGTERM)...");
    for n in nodes.iter_mut() {
        n.terminate();
    }
    let mut problems = Vec::new();
    // One deadline for all: they were all asked to stop at once.
    let deadline = Instant::now() + STOP_TIMEOUT;
    for n in nodes.iter_mut().filter(|n| running.contains(&n.id)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match n.wait_or_kill(left).await {
            Some(status) if status.success() => println!("node {} stopped", n.id),
            Some(status) => {
                println!("node {} stopped with {status}", n.id);
                problems.push(format!("node {} stopped with {status}", n.id));
            }
            None => {
                println!(
                    "node {} did not stop within {} s: killed",
                    n.id,
                    STOP_TIMEOUT.as_secs()
                );
                problems.push(format!("node {} had to be killed", n.id));
            }
        }
    }
    problems
}
