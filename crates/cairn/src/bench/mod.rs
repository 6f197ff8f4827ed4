//! `cairn bench`: an open-loop load generator that does not hide stalls.
//!
//! The design in one paragraph: every worker follows a *schedule* of
//! intended send times fixed before the run (`schedule`); latency is taken
//! from those times, not from when a request happened to leave, so a server
//! that stalls is charged for every request it delayed — including the ones
//! a closed-loop client would never have sent (`recorder`). Requests that
//! find the in-flight cap reached are backlogged, sent late, and still
//! counted. The driver (`driver`) runs one writer per connection — an HTTP
//! client, or with `--api binary` one pipelined binary-protocol
//! connection — with many requests in flight each, plus an optional read load; each writer keeps
//! its own HDR histograms, merged at the end, and a reporter writes one row
//! per second as the run goes. Every entry carries a unique id
//! (`payload`), so at the end `verify` reads back exactly what was
//! acknowledged and reports anything missing, duplicated or misplaced. The
//! report (`report`) carries every figure and the full configuration as
//! JSON, so two runs can be compared.
//!
//! Scenarios (`scenario`): `steady`, `burst` (baseline → N× → baseline),
//! `ramp` (equal steps up to a rate) and `sweep` (raise the rate until the
//! p99 bound breaks or throughput stops growing; report the knee).
//!
//! `cairn bench faults` (`faults`) is the monitor's scorecard: faults
//! injected under a steady load, and how well the monitor named them.
//!
//! The bench streams are created for the run (`PREFIX-RUNID-N`) and deleted
//! after it unless `--keep-streams`. Targets are a list of node URLs so the
//! same command will drive a cluster; streams are managed and verified
//! through the first.
//!
//! The generator's own CPU time is measured (process CPU clock) over the
//! load and reported per 100k entries/s, so readers know how much of the
//! machine it took from the node under test.

mod driver;
mod faults;
mod interval;
mod payload;
mod recorder;
mod report;
mod scenario;
mod schedule;
mod verify;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cairn_client::{Client, StreamConfig};

use crate::cli::{BenchArgs, BenchCommand, BenchOptions, BenchScenario, ProduceApi};
use driver::{Driver, DriverConfig, Interrupt, ReadLoad, RunResult};
use interval::Live;
use payload::Payload;
use recorder::Percentiles;
use report::{BurstReport, Config, Report, StepReport, SweepReport};
use scenario::{Phase, StepFigures, SweepLimits};
use verify::{Verifier, VerifyReport};

pub fn run(args: BenchArgs) -> Result<()> {
    crate::node_cmd::init_logging("warn");
    let scenario = match args.command {
        BenchCommand::Load(s) => s,
        BenchCommand::Faults(f) => return faults::run(f),
    };
    let threads = options(&scenario).threads as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(bench(scenario))
}

fn options(s: &BenchScenario) -> &BenchOptions {
    match s {
        BenchScenario::Steady(a) => &a.opts,
        BenchScenario::Burst(a) => &a.opts,
        BenchScenario::Ramp(a) => &a.opts,
        BenchScenario::Sweep(a) => &a.opts,
    }
}

fn check_rate(name: &str, rate: f64) -> Result<()> {
    ensure!(rate > 0.0, "{name} must be above zero");
    Ok(())
}

/// Rejects what would make a meaningless run, before anything is created.
fn validate(scenario: &BenchScenario) -> Result<()> {
    let opts = options(scenario);
    if opts.api == ProduceApi::Binary {
        ensure!(
            !opts.tcp.is_empty(),
            "--api binary needs --tcp: the nodes' binary protocol addresses (cairn node --tcp)"
        );
        // One request is one record batch (64 MiB at most); entries are
        // at least ~64 bytes once encoded.
        let request = u64::from(opts.batch_size) * opts.entry_size.max(64) as u64;
        ensure!(
            request <= 32 << 20,
            "--batch-size x --entry-size is {request} bytes: too large for one binary request"
        );
    }
    ensure!(
        !opts.server.is_empty(),
        "--server: give at least one node URL"
    );
    match scenario {
        BenchScenario::Steady(a) => check_rate("--rate", a.rate)?,
        BenchScenario::Burst(a) => {
            check_rate("--rate", a.rate)?;
            ensure!(a.factor > 0.0, "--factor must be above zero");
        }
        BenchScenario::Ramp(a) => {
            check_rate("--to", a.to)?;
            if let Some(from) = a.from {
                check_rate("--from", from)?;
            }
        }
        BenchScenario::Sweep(a) => {
            check_rate("--start-rate", a.start_rate)?;
            ensure!(a.factor > 1.0, "--factor must be above 1");
            ensure!(
                a.max_rate >= a.start_rate,
                "--max-rate is below --start-rate"
            );
        }
    }
    Ok(())
}

/// The scenario's parameters, for the report.
fn scenario_config(scenario: &BenchScenario) -> (&'static str, serde_json::Value) {
    use serde_json::json;
    let secs = |d: Duration| d.as_secs_f64();
    match scenario {
        BenchScenario::Steady(a) => (
            "steady",
            json!({"rate": a.rate, "duration_s": secs(a.duration)}),
        ),
        BenchScenario::Burst(a) => (
            "burst",
            json!({"rate": a.rate, "factor": a.factor, "baseline_s": secs(a.baseline),
                   "burst_s": secs(a.burst)}),
        ),
        BenchScenario::Ramp(a) => (
            "ramp",
            json!({"from": a.from, "to": a.to, "steps": a.steps,
                   "step_duration_s": secs(a.step_duration)}),
        ),
        BenchScenario::Sweep(a) => (
            "sweep",
            json!({"start_rate": a.start_rate, "factor": a.factor,
                   "step_duration_s": secs(a.step_duration), "max_p99_ms": secs(a.max_p99) * 1e3,
                   "min_achieved": a.min_achieved, "min_growth": a.min_growth,
                   "max_failure_ratio": a.max_failure_ratio, "max_rate": a.max_rate,
                   "max_steps": a.max_steps}),
        ),
    }
}

async fn bench(scenario: BenchScenario) -> Result<()> {
    validate(&scenario)?;
    let opts = options(&scenario).clone();
    let bench_start = Instant::now();
    let started_at_unix_ms = cairn_types::clock::unix_ms();
    let run_id = format!("{:08x}", rand::random::<u32>());
    let tls = crate::cli::load_tls_ca(opts.tls_ca.as_deref())?;
    let admin = Client::with_options(
        &opts.server[0],
        &cairn_client::ClientOptions {
            token: opts.token.clone(),
            tls_ca: tls.clone(),
        },
    )?;
    admin
        .health()
        .await
        .with_context(|| format!("node {} is not reachable", opts.server[0]))?;
    let streams: Vec<String> = (0..opts.streams)
        .map(|i| format!("{}-{run_id}-{i}", opts.stream_prefix))
        .collect();
    let (name, scenario_params) = scenario_config(&scenario);
    let config = Config {
        targets: opts.server.clone(),
        tcp_targets: match opts.api {
            ProduceApi::Binary => opts.tcp.clone(),
            ProduceApi::Http => Vec::new(),
        },
        api: opts.api,
        leader_routing: !opts.no_leader_routing,
        partition_in_flight: opts.partition_in_flight,
        connections: opts.connections,
        max_in_flight: opts.max_in_flight,
        arrival: opts.arrival,
        seed: opts.seed,
        batch_size: opts.batch_size,
        entry_size: opts.entry_size,
        sources: opts.sources,
        partitions: opts.partitions,
        streams: streams.clone(),
        durability: opts.durability.to_string(),
        read_rate: opts.read_rate,
        read_kind: opts.read_kind,
        read_limit: opts.read_limit,
        read_window_s: opts.read_window.as_secs_f64(),
        timeout_s: opts.timeout.as_secs_f64(),
        grace_s: opts.grace.as_secs_f64(),
        threads: opts.threads,
        verify: !opts.no_verify,
        keep_streams: opts.keep_streams,
        scenario: scenario_params,
    };
    eprintln!(
        "cairn bench config: {}",
        serde_json::to_string(&config).unwrap_or_default()
    );
    for stream in &streams {
        let stream_config = StreamConfig {
            partitions: opts.partitions,
            durability: opts.durability,
            segment_bytes: opts.segment_bytes,
            retention_bytes: opts.retention_bytes,
            ..Default::default()
        };
        admin
            .create_stream(stream, stream_config)
            .await
            .with_context(|| format!("create bench stream {stream}"))?;
    }
    // A new stream's partitions elect their leaders in a few hundred ms;
    // load sent before that would measure the election, not the system.
    for stream in &streams {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let info = admin.get_stream(stream).await?;
            if info.partitions.iter().all(|p| p.leader.is_some()) {
                break;
            }
            if Instant::now() > deadline {
                eprintln!(
                    "warning: {stream}: not every partition has a leader after 10 s; starting anyway"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Ctrl-C ends the load early but still verifies, cleans up and reports;
    // a second one quits at once.
    let interrupt = Arc::new(Interrupt::default());
    {
        let interrupt = interrupt.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            interrupt.trigger();
            eprintln!(
                "\ninterrupted: letting requests in flight finish, then verifying and \
                 reporting (Ctrl-C again to quit at once)"
            );
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        });
    }
    let driver = Driver::new(
        DriverConfig {
            targets: opts.server.clone(),
            api: opts.api,
            tcp_targets: opts.tcp.clone(),
            leader_routing: !opts.no_leader_routing,
            partition_in_flight: opts.partition_in_flight,
            streams: streams.clone(),
            connections: opts.connections,
            max_in_flight: opts.max_in_flight,
            arrival: opts.arrival,
            seed: opts.seed,
            batch_size: opts.batch_size,
            entry_size: opts.entry_size,
            partitions: opts.partitions,
            read: (opts.read_rate > 0.0).then_some(ReadLoad {
                rate: opts.read_rate,
                kind: opts.read_kind,
                limit: opts.read_limit,
                window: opts.read_window,
            }),
            timeout: opts.timeout,
            grace: opts.grace,
            keep_acks: !opts.no_verify,
            token: opts.token.clone(),
            tls,
        },
        Payload::new(&run_id, opts.sources, opts.entry_size),
        Live::new(bench_start, opts.interval_log.as_deref())?,
        interrupt.clone(),
    )
    .await?;

    // Load, then verification; the streams are deleted whatever happened.
    let outcome = async {
        let ran = run_scenario(&driver, &scenario, bench_start).await;
        driver.live().finish_line();
        let ran = ran?;
        let verification = if opts.no_verify {
            None
        } else {
            eprintln!("verifying: reading back what was acknowledged...");
            let mut verifier = Verifier::new(driver.payload(), opts.partitions, &driver.seq_ends());
            for ack in driver.take_acks() {
                verifier.add_ack(&ack);
            }
            Some(verify::read_back(&admin, &streams, verifier).await?)
        };
        Ok::<_, anyhow::Error>((ran, verification))
    }
    .await;
    if !opts.keep_streams {
        for stream in &streams {
            if let Err(e) = admin.delete_stream(stream).await {
                eprintln!("warning: could not delete bench stream {stream}: {e}");
            }
        }
    }
    let (ran, verification) = outcome?;

    let mut report = Report::new(run_id, started_at_unix_ms, name, config, &ran.runs);
    report.sweep = ran.sweep;
    report.burst = ran.burst;
    report.verification = verification.clone();
    report.interrupted = interrupt.is_set();
    print!("{}", report.summary());
    if let Some(path) = &opts.json {
        report.write_json(path)?;
    }
    match verification {
        Some(VerifyReport { ok: false, .. }) => bail!("verification failed"),
        _ if report.interrupted => bail!("interrupted"),
        _ => Ok(()),
    }
}

/// What a scenario ran.
struct Ran {
    runs: Vec<RunResult>,
    sweep: Option<SweepReport>,
    burst: Option<BurstReport>,
}

async fn run_scenario(
    driver: &Driver,
    scenario: &BenchScenario,
    bench_start: Instant,
) -> Result<Ran> {
    let plan = match scenario {
        BenchScenario::Steady(a) => scenario::steady(a.rate, a.duration),
        BenchScenario::Burst(a) => scenario::burst(a.rate, a.factor, a.baseline, a.burst),
        BenchScenario::Ramp(a) => scenario::ramp(a.from, a.to, a.steps, a.step_duration),
        BenchScenario::Sweep(a) => return sweep(driver, a).await,
    };
    let run = driver.run(&plan).await?;
    let burst = match scenario {
        BenchScenario::Burst(a) => {
            let burst_end = run.start.saturating_duration_since(bench_start) + a.baseline + a.burst;
            let baseline_p99 = Percentiles::of(&run.phases[0].writes.response).p99_ms;
            Some(BurstReport {
                recovery_s: report::burst_recovery(
                    &run.intervals,
                    burst_end.as_secs_f64(),
                    baseline_p99,
                ),
            })
        }
        _ => None,
    };
    Ok(Ran {
        runs: vec![run],
        sweep: None,
        burst,
    })
}

async fn sweep(driver: &Driver, a: &crate::cli::SweepArgs) -> Result<Ran> {
    let limits = SweepLimits {
        max_p99: a.max_p99,
        min_achieved: a.min_achieved,
        min_growth: a.min_growth,
        max_failure_ratio: a.max_failure_ratio,
    };
    let mut runs = Vec::new();
    let mut steps = Vec::new();
    let mut knee: Option<StepFigures> = None;
    let mut rate = a.start_rate;
    let mut stop_reason = format!("reached --max-steps {}", a.max_steps);
    for step in 1..=a.max_steps as usize {
        let plan = [Phase {
            name: format!("step {step}"),
            entries_per_s: rate,
            duration: a.step_duration,
        }];
        let run = driver.run(&plan).await?;
        if run.interrupted {
            // A partial step says nothing about the rate: not judged.
            runs.push(run);
            stop_reason = format!("interrupted during step {step}");
            break;
        }
        let p = &run.phases[0];
        let figures = StepFigures {
            target_entries_per_s: rate,
            achieved_entries_per_s: p.achieved_entries_per_s(),
            response_p99_ms: Percentiles::of(&p.writes.response).p99_ms,
            failure_ratio: p.writes.failure_ratio(),
        };
        let verdict = scenario::judge_step(knee.as_ref(), &figures, &limits);
        driver.live().finish_line();
        eprintln!(
            "sweep step {step}: target {}/s, acked {}/s, response p99 {}: {}",
            crate::format::count(rate),
            crate::format::count(figures.achieved_entries_per_s),
            crate::format::ms(figures.response_p99_ms),
            match &verdict {
                Ok(()) => "pass".to_string(),
                Err(why) => format!("stop ({why})"),
            }
        );
        steps.push(StepReport {
            step,
            figures,
            passed: verdict.is_ok(),
            reason: verdict.clone().err().unwrap_or_default(),
            bench_cpu_cores: run.cpu.as_secs_f64() / run.wall.as_secs_f64().max(1e-9),
        });
        runs.push(run);
        if let Err(why) = verdict {
            stop_reason = format!("step {step} at {}/s: {why}", crate::format::count(rate));
            break;
        }
        knee = Some(figures);
        match scenario::next_sweep_rate(rate, a.factor, a.max_rate) {
            Some(next) => rate = next,
            None => {
                stop_reason = format!("reached --max-rate {}", crate::format::count(a.max_rate));
                break;
            }
        }
        // A breath between steps, so the node's background work (group
        // commits, retention) from one step does not land in the next.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(Ran {
        runs,
        sweep: Some(SweepReport {
            steps,
            knee,
            stop_reason,
        }),
        burst: None,
    })
}
