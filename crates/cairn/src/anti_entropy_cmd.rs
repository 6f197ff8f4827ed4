//! `cairn anti-entropy scan|status`: run a scan and watch it partition by
//! partition, or show the last scans cluster-wide.

use anyhow::{Result, bail};
use cairn_client::{Client, ScanReport, ScanRequest};

use crate::cli::{AntiEntropyCommand, AntiEntropyScanArgs, AntiEntropyStatusArgs};
use crate::client_cmds::client;

pub async fn run(cmd: AntiEntropyCommand) -> Result<()> {
    match cmd {
        AntiEntropyCommand::Scan(args) => scan(args).await,
        AntiEntropyCommand::Status(args) => status(args).await,
    }
}

/// `(stream, partition)` pairs to scan, so each can be asked for (and
/// printed) on its own: a whole-cluster scan shows progress.
async fn targets(client: &Client, args: &AntiEntropyScanArgs) -> Result<Vec<(String, u32)>> {
    let streams = match &args.stream {
        Some(name) => vec![client.get_stream(name).await?],
        None => client.list_streams().await?,
    };
    let mut out = Vec::new();
    for s in streams {
        match args.partition {
            Some(p) if p >= s.config.partitions => bail!(
                "stream {:?} has no partition {p} (it has {})",
                s.name,
                s.config.partitions
            ),
            Some(p) => out.push((s.name.clone(), p)),
            None => out.extend((0..s.config.partitions).map(|p| (s.name.clone(), p))),
        }
    }
    Ok(out)
}

const HEADER: &str = "STREAM               PART  OUTCOME   RANGE                   REPLICAS  COMPARED  DIVERGENT  REPAIRED_B  READ_B       TIME";

fn row(r: &ScanReport) -> String {
    format!(
        "{:<20} {:>4}  {:<8}  [{}, {}){:pad$}  {:<8}  {:>8}  {:>9}  {:>10}  {:>11}  {:>7.0}ms",
        r.stream,
        r.partition,
        r.outcome,
        r.from_index,
        r.to_index,
        "",
        r.replicas
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(","),
        r.ranges_compared,
        r.divergent.len(),
        r.bytes_repaired,
        r.bytes_read,
        r.duration_ms,
        pad = 22usize.saturating_sub(format!("[{}, {})", r.from_index, r.to_index).len()),
    )
}

/// The lines under a report's row: what differed, what was skipped, what failed.
fn details(r: &ScanReport) -> Vec<String> {
    let mut lines = Vec::new();
    for d in &r.divergent {
        lines.push(format!(
            "    indexes [{}, {}) differed on node(s) {:?}: {}",
            d.from_index,
            d.to_index,
            d.bad_replicas,
            match (&d.error, d.source) {
                (Some(e), _) => format!("NOT repaired: {e}"),
                (None, Some(s)) => format!("repaired from node {s} ({} bytes)", d.bytes_repaired),
                (None, None) => "repaired".into(),
            }
        ));
    }
    for s in &r.skipped {
        lines.push(format!("    node {} not compared: {}", s.node, s.reason));
    }
    for f in &r.failures {
        lines.push(format!("    failure: {f}"));
    }
    for q in &r.quarantined {
        lines.push(format!(
            "    node {q} quarantined (serves no reads of this partition)"
        ));
    }
    lines
}

async fn scan(args: AntiEntropyScanArgs) -> Result<()> {
    let client = client(&args.server).await?;
    let targets = targets(&client, &args).await?;
    if targets.is_empty() {
        eprintln!("no partitions to scan");
        return Ok(());
    }
    if !args.json {
        println!("{HEADER}");
    }
    let mut failed = 0;
    for (stream, partition) in targets {
        let request = ScanRequest {
            stream: Some(stream.clone()),
            partition: Some(partition),
            deep: args.deep,
        };
        let response = client.anti_entropy_scan(&request).await?;
        for f in &response.failed {
            failed += 1;
            if args.json {
                println!("{}", serde_json::to_string(f)?);
            } else {
                println!(
                    "{:<20} {:>4}  not scanned: {}: {}",
                    f.stream, f.partition, f.code, f.message
                );
            }
        }
        for r in &response.reports {
            if r.outcome == "failed" {
                failed += 1;
            }
            if args.json {
                println!("{}", serde_json::to_string(r)?);
            } else {
                println!("{}", row(r));
                for line in details(r) {
                    println!("{line}");
                }
            }
        }
    }
    if failed > 0 {
        bail!("{failed} partition(s) could not be fully compared or repaired");
    }
    Ok(())
}

async fn status(args: AntiEntropyStatusArgs) -> Result<()> {
    let status = client(&args.server).await?.anti_entropy_status().await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    let s = &status.settings;
    println!(
        "periodic scans every {}, deep every {}, rate limit {}",
        if s.interval_seconds > 0.0 {
            format!("{:.0}s", s.interval_seconds)
        } else {
            "off".into()
        },
        format_args!("{:.0}s", s.deep_interval_seconds),
        if s.rate_bytes_per_sec > 0 {
            format!("{:.1} MB/s", s.rate_bytes_per_sec as f64 / 1e6)
        } else {
            "none".into()
        }
    );
    if status.partitions.is_empty() {
        println!("no scans yet");
    } else {
        println!("{HEADER}  AGO");
        let now_ms = cairn_types::clock::unix_ms();
        for r in &status.partitions {
            println!(
                "{}  {:.0}s ({})",
                row(r),
                now_ms.saturating_sub(r.started_at_unix_ms) as f64 / 1e3,
                r.trigger
            );
            for line in details(r) {
                println!("{line}");
            }
        }
    }
    if !status.last_divergent.is_empty() {
        println!("last divergence found per partition:");
        for r in &status.last_divergent {
            println!(
                "  {} partition {}: scan at unix ms {} ({}, by node {}) → {}",
                r.stream, r.partition, r.started_at_unix_ms, r.trigger, r.leader, r.outcome
            );
            for line in details(r) {
                println!("{line}");
            }
        }
    }
    for q in &status.quarantined {
        println!(
            "QUARANTINED: {} partition {} on node {}: {}",
            q.stream, q.partition, q.node, q.reason
        );
    }
    if !status.unreachable_nodes.is_empty() {
        println!(
            "nodes not asked (unreachable): {:?}",
            status.unreachable_nodes
        );
    }
    Ok(())
}
