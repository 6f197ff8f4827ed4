//! `cairn fault disk|cpu|network|clear|list`: inject and lift faults on a
//! node over its admin API (`/v1/faults/*`), for testing the monitor.
//!
//! The node is named by id (`--node N`); the command asks the node given by
//! `--server`/`--cluster` for `GET /v1/cluster`, takes node N's HTTP
//! address from it and talks to that node directly, because every fault
//! acts on the node that receives the request. Without `--node` it acts on
//! the given node itself. Faults default to a 60 s TTL here (network rules
//! included), so a forgotten fault heals. Errors go to stderr with exit
//! code 1, as for the other client commands.

use anyhow::{Context, Result, bail};
use cairn_client::{
    Client, CpuFaultRequest, DiskFaultRequest, DiskFaultView, NetworkFaultRequest, NetworkRuleView,
};
use serde_json::json;

use crate::cli::{
    FaultClearArgs, FaultCommand, FaultCpuArgs, FaultDiskArgs, FaultKind, FaultListArgs,
    FaultNetworkArgs, FaultTarget, NetworkAction, NetworkDirection,
};
use crate::client_cmds::client;

pub async fn run(cmd: FaultCommand) -> Result<()> {
    match cmd {
        FaultCommand::Disk(a) => disk(a).await,
        FaultCommand::Cpu(a) => cpu(a).await,
        FaultCommand::Network(a) => network(a).await,
        FaultCommand::Clear(a) => clear(a).await,
        FaultCommand::List(a) => list(a).await,
    }
}

/// A client for the target node and a label for messages.
async fn target(t: &FaultTarget) -> Result<(Client, String)> {
    let via = client(&t.server).await?;
    let Some(id) = t.node else {
        let label = via.base_url().as_str().trim_end_matches('/').to_string();
        return Ok((via, label));
    };
    let view = via
        .cluster()
        .await
        .with_context(|| format!("ask {} for the cluster's nodes", via.base_url()))?;
    let Some(node) = view.nodes.iter().find(|n| n.id == id) else {
        let known: Vec<String> = view.nodes.iter().map(|n| n.id.to_string()).collect();
        bail!(
            "node {id} is not in the cluster (nodes: {})",
            known.join(", ")
        );
    };
    if node.http_addr.is_empty() {
        bail!("node {id} has not registered an HTTP address yet");
    }
    let scheme = if t.server.server.starts_with("https://") {
        "https"
    } else {
        "http"
    };
    let url = if node.http_addr.contains("://") {
        node.http_addr.clone()
    } else {
        format!("{scheme}://{}", node.http_addr)
    };
    Ok((
        Client::with_options(&url, &t.server.client_options()?)?,
        format!("node {id}"),
    ))
}

fn disk_line(d: &DiskFaultView) -> String {
    format!(
        "disk: fsync_delay_ms={} write_delay_ms={} error_rate={} (lifts in {} ms, at unix ms {})",
        d.fsync_delay_ms, d.write_delay_ms, d.error_rate, d.remaining_ms, d.expires_unix_ms
    )
}

fn network_line(r: &NetworkRuleView) -> String {
    let mut line = format!(
        "network: id={} action={} direction={}",
        r.id, r.action, r.direction
    );
    if let Some(peers) = &r.peers {
        let peers: Vec<String> = peers.iter().map(u64::to_string).collect();
        line.push_str(&format!(" peers={}", peers.join(",")));
    }
    if let Some(d) = r.delay_ms {
        line.push_str(&format!(" delay_ms={d}"));
    }
    if let Some(j) = r.jitter_ms {
        line.push_str(&format!(" jitter_ms={j}"));
    }
    if let Some(p) = r.probability {
        line.push_str(&format!(" probability={p}"));
    }
    match r.remaining_ms {
        Some(ms) => line.push_str(&format!(" (lifts in {ms} ms)")),
        None => line.push_str(" (no TTL)"),
    }
    line
}

async fn disk(a: FaultDiskArgs) -> Result<()> {
    let (client, label) = target(&a.target).await?;
    let view = client
        .set_disk_fault(&DiskFaultRequest {
            fsync_delay_ms: a.fsync_delay_ms,
            write_delay_ms: a.write_delay_ms,
            error_rate: a.error_rate,
            ttl_ms: Some(a.ttl_ms),
        })
        .await?;
    println!("{label}: {}", disk_line(&view));
    Ok(())
}

async fn cpu(a: FaultCpuArgs) -> Result<()> {
    let (client, label) = target(&a.target).await?;
    let view = client
        .set_cpu_fault(&CpuFaultRequest {
            threads: a.threads,
            duty_percent: a.duty_percent,
            ttl_ms: Some(a.ttl_ms),
        })
        .await?;
    println!(
        "{label}: cpu: threads={} duty_percent={} (stops in {} ms)",
        view.threads, view.duty_percent, view.remaining_ms
    );
    Ok(())
}

async fn network(a: FaultNetworkArgs) -> Result<()> {
    let (client, label) = target(&a.target).await?;
    let action = match a.action {
        NetworkAction::Delay => "delay",
        NetworkAction::Drop => "drop",
        NetworkAction::Partition => "partition",
        NetworkAction::Isolate => "isolate",
    };
    let direction = match a.direction {
        NetworkDirection::Both => "both",
        NetworkDirection::Inbound => "inbound",
        NetworkDirection::Outbound => "outbound",
    };
    let installed = client
        .add_network_fault(&NetworkFaultRequest {
            action: action.into(),
            peers: (!a.peers.is_empty()).then_some(a.peers),
            direction: Some(direction.into()),
            delay_ms: a.delay_ms,
            jitter_ms: a.jitter_ms,
            probability: a.probability,
            ttl_ms: Some(a.ttl_ms),
        })
        .await?;
    let rules = client.network_faults().await?;
    match rules.rules.iter().find(|r| r.id == installed.id) {
        Some(r) => println!("{label}: {}", network_line(r)),
        None => println!("{label}: network rule {} installed", installed.id),
    }
    Ok(())
}

async fn clear(a: FaultClearArgs) -> Result<()> {
    let (client, label) = target(&a.target).await?;
    let kinds: &[&str] = match a.kind {
        FaultKind::Disk => &["disk"],
        FaultKind::Cpu => &["cpu"],
        FaultKind::Network => &["network"],
        FaultKind::All => &["disk", "cpu", "network"],
    };
    for kind in kinds {
        client
            .clear_faults(kind)
            .await
            .with_context(|| format!("clear {kind} faults on {label}"))?;
        println!("{label}: {kind} faults cleared");
    }
    Ok(())
}

async fn list(a: FaultListArgs) -> Result<()> {
    let (client, label) = target(&a.target).await?;
    let disk = client.disk_fault().await?;
    let cpu = client.cpu_fault().await?;
    let network = client.network_faults().await?;
    if a.json {
        println!(
            "{}",
            json!({"disk": disk.fault, "cpu": cpu.fault, "network": network.rules})
        );
        return Ok(());
    }
    let mut lines = Vec::new();
    if let Some(d) = &disk.fault {
        lines.push(disk_line(d));
    }
    if let Some(c) = &cpu.fault {
        lines.push(format!(
            "cpu: threads={} duty_percent={} (stops in {} ms, at unix ms {})",
            c.threads, c.duty_percent, c.remaining_ms, c.expires_unix_ms
        ));
    }
    lines.extend(network.rules.iter().map(network_line));
    if lines.is_empty() {
        println!("{label}: no faults");
    }
    for line in lines {
        println!("{label}: {line}");
    }
    Ok(())
}
