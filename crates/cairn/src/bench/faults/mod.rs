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
//! 4. with `--remediate` (the started nodes run `--remediate leaders`),
//!    the fault stays on until the load's write p99 is back within 2× the
//!    baseline — what moving leaders off a slow node achieves; a fault
//!    leaders cannot escape (a slow link, a paused node) may not come back;
//! 5. the fault lifted, and a wait until its findings have cleared.
//!
//! Which node each fault hits is fixed (see [`SCENARIOS`]), as in the
//! monitor's integration test, so runs compare.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cairn_client::{Client, StreamConfig};
use serde::Serialize;
use serde_json::{Value, json};

use crate::cli::FaultsArgs;
use harness::{Cluster, Steady, inject, lift};

mod harness;

/// `cairn node` flags for `--remediate`: the controller leader moves
/// leaders off a slow node by itself (and rebalances them), and the
/// scorecard times how long until the write p99 is back within 2× its
/// fault-free baseline while the fault is still on.
const REMEDIATE_NODE_FLAGS: &[&str] = &["--remediate", "leaders"];
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

fn key(f: &Value) -> String {
    format!("{} {}", f["code"].as_str().unwrap_or("?"), f["subject"])
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
