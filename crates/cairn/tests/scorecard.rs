//! `cairn bench faults`, the monitor's scorecard, end to end: it starts
//! its own three nodes, puts them under load, injects a slow disk and a
//! slow link twice each, and reports each named with the right subject
//! and resource (at least once of two: the shared machine's own disk
//! stalls can be named first) — in its table and its JSON.

mod support;

use std::process::Command;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

#[test]
fn the_scorecard_runs_slow_disk_and_slow_link_and_scores_them() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let json_path = dir.path().join("scorecard.json");
    let out = Command::new(support::BIN)
        .args(["bench", "faults", "--scenarios", "slow-disk,slow-link"])
        .args(["--runs", "2", "--quiet", "3s", "--json"])
        .arg(&json_path)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{}\n{stderr}", out.status);
    let table = String::from_utf8(out.stdout)?;
    ensure!(table.starts_with("SCENARIO"), "{table}");
    for name in ["slow-disk", "slow-link"] {
        let row = table
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} row:\n{table}"))?;
        ensure!(
            row.split_whitespace().nth(1) == Some("2"),
            "two runs: {row}"
        );
    }
    let card: Value = serde_json::from_str(&std::fs::read_to_string(&json_path)?)?;
    ensure!(card["format"] == "cairn-faults/1");
    let scenarios = card["scenarios"].as_array().context("scenarios")?;
    ensure!(scenarios.len() == 2);
    for s in scenarios {
        let runs = s["runs"].as_array().context("runs")?;
        ensure!(runs.len() == 2, "{s}");
        for r in runs {
            ensure!(r["false_alarms"].is_array(), "{r}");
            if r["detected"] == true {
                ensure!(r["detect_s"].as_f64().is_some(), "{r}");
                ensure!(r["named"]["code"].is_string(), "{r}");
            }
        }
        // On a machine this shared, a disk stalling for everyone can be
        // named first on another node; one of the two runs must be right.
        let right = runs
            .iter()
            .filter(|r| r["right_subject"] == true && r["right_resource"] == true)
            .count();
        ensure!(right >= 1, "{s}\n{stderr}");
        ensure!(s["detect_median_s"].as_f64().is_some(), "{s}");
    }
    // Bad input is refused before any node starts.
    let bad = Command::new(support::BIN)
        .args(["bench", "faults", "--scenarios", "disk"])
        .output()?;
    ensure!(!bad.status.success());
    ensure!(
        String::from_utf8_lossy(&bad.stderr).contains("slow-disk, slow-link"),
        "{bad:?}"
    );
    Ok(())
}
