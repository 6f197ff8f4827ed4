//! `cairn leader move|rebalance`: moves partition leadership through the
//! node's admin API. The work happens on the partitions' leaders (see
//! `cairn_cluster`'s `transfer`); this prints what each move did.

use anyhow::{Result, bail};
use cairn_client::{LeaderMove, LeaderMoveOutcome};

use crate::cli::{LeaderCommand, LeaderMoveArgs, LeaderRebalanceArgs};
use crate::client_cmds::client;

pub async fn run(cmd: LeaderCommand) -> Result<()> {
    match cmd {
        LeaderCommand::Move(a) => move_one(a).await,
        LeaderCommand::Rebalance(a) => rebalance(a).await,
    }
}

async fn move_one(a: LeaderMoveArgs) -> Result<()> {
    let c = client(&a.server).await?;
    let moved = c.move_leader(&a.stream, a.partition, a.to).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&moved)?);
    } else {
        println!("{}", line(&moved));
    }
    Ok(())
}

async fn rebalance(a: LeaderRebalanceArgs) -> Result<()> {
    let c = client(&a.server).await?;
    let r = c.rebalance_leaders().await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        for m in &r.moves {
            println!("{}", line(m));
        }
        let moved = r
            .moves
            .iter()
            .filter(|m| m.outcome == LeaderMoveOutcome::Moved)
            .count();
        println!(
            "{moved} moved, {} already led by their preferred leader",
            r.already_balanced
        );
    }
    let failed = r
        .moves
        .iter()
        .filter(|m| m.outcome == LeaderMoveOutcome::Failed)
        .count();
    if failed > 0 {
        bail!("{failed} partition(s) kept their leader (reasons above)");
    }
    Ok(())
}

/// `app/3: node 1 → node 2, moved in 41 ms`.
fn line(m: &LeaderMove) -> String {
    let from = m
        .from
        .map_or_else(|| "no leader".to_string(), |f| format!("node {f}"));
    let what = match m.outcome {
        LeaderMoveOutcome::Moved => format!("moved in {} ms", m.took_ms),
        LeaderMoveOutcome::AlreadyLeader => "already its leader".into(),
        LeaderMoveOutcome::Failed => format!(
            "NOT moved: {}",
            m.error.as_deref().unwrap_or("no reason given")
        ),
    };
    format!(
        "{}/{}: {from} → node {}, {what}",
        m.stream, m.partition, m.to
    )
}
