//! `cairn recommend [apply ID | actions]`: the controller leader's
//! recommendations, carrying one out, and the action log.

use anyhow::{Context, Result};
use cairn_monitor::recommend::{Action, ActionRecord, Recommendation};
use serde::Deserialize;

use crate::cli::{RecommendArgs, RecommendCommand, ServerArgs};
use crate::client_cmds::client;

#[derive(Deserialize)]
struct Recommendations {
    recommendations: Vec<Recommendation>,
    #[serde(default)]
    remediate: Option<String>,
}

#[derive(Deserialize)]
struct Actions {
    actions: Vec<ActionRecord>,
}

pub async fn run(a: RecommendArgs) -> Result<()> {
    match a.command {
        None => list(&a.server, a.json).await,
        Some(RecommendCommand::Apply(a)) => {
            let v = client(&a.server).await?.apply_recommendation(&a.id).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let r: ActionRecord = serde_json::from_value(v).context("read the action")?;
            print_action(&r);
            println!("judged over the next 15 s: `cairn recommend actions`");
            Ok(())
        }
        Some(RecommendCommand::Actions(a)) => {
            let v = client(&a.server).await?.monitor_get("actions").await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let r: Actions = serde_json::from_value(v).context("read the actions")?;
            if r.actions.is_empty() {
                println!("no actions applied");
            }
            for action in &r.actions {
                print_action(action);
            }
            Ok(())
        }
    }
}

async fn list(server: &ServerArgs, json: bool) -> Result<()> {
    let v = client(server).await?.monitor_get("recommendations").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let r: Recommendations = serde_json::from_value(v).context("read the recommendations")?;
    if r.recommendations.is_empty() {
        println!("no recommendations: nothing the monitor found calls for action");
    }
    for rec in &r.recommendations {
        print_recommendation(rec);
    }
    if let Some(mode) = r.remediate {
        println!("automatic remediation: {mode}");
    }
    Ok(())
}

fn print_recommendation(r: &Recommendation) {
    let how = if r.applicable {
        format!("apply: cairn recommend apply {}", r.id)
    } else {
        "advice: carried out by an operator".into()
    };
    println!("{}  [{}]", r.id, how);
    println!("  why:    {}", r.reason);
    println!("  do:     {}", action_words(&r.action));
    let e = &r.predicted_effect;
    println!(
        "  effect: {} from {} to {} {}",
        e.metric,
        short(e.from),
        short(e.to),
        e.unit
    );
    println!("          {}", e.how);
    println!("  risk:   {:?}: {}", r.risk.level, r.risk.note);
}

fn action_words(a: &Action) -> String {
    let moves = |ms: &[cairn_monitor::recommend::PlannedMove]| {
        ms.iter()
            .map(|m| format!("{}/{} → node {}", m.stream, m.partition, m.to))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match a {
        Action::TransferLeaders { from, moves: ms } => {
            format!("move leaders off node {from}: {}", moves(ms))
        }
        Action::RebalanceLeaders { moves: ms } => {
            format!("move leaders back to their preferred nodes: {}", moves(ms))
        }
        Action::MoveReplicas { node } => format!("move node {node}'s replicas to other nodes"),
        Action::RaisePartitions {
            stream,
            partitions,
            suggested,
        } => format!("a stream like {stream} with {suggested} partitions instead of {partitions}"),
        Action::AddNode => "add a node".into(),
        Action::FreeDisk { node } => format!("free disk on node {node} (lower retention)"),
    }
}

fn print_action(r: &ActionRecord) {
    let ms = |v: Option<f64>| v.map_or_else(|| "?".into(), |v| format!("{v:.1} ms"));
    println!(
        "#{} {} by {}: {:?}",
        r.seq, r.recommendation, r.by, r.outcome
    );
    println!(
        "  write p99: baseline {}, before {}, after {}",
        ms(r.baseline_p99_ms),
        ms(r.before_p99_ms),
        ms(r.after_p99_ms)
    );
    println!("  {}", r.detail);
}

/// 48 → "48", 1.3 → "1.3", 0.125 → "0.13".
fn short(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}
