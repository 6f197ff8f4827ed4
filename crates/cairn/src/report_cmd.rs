//! `cairn report`: a performance report made now by the controller
//! leader's monitor (or a saved one), rendered here, and compared with a
//! baseline file when one is given.
//!
//! A baseline is either a report's JSON (`cairn report --format json`, or
//! a saved one) or a `cairn bench` JSON report. A bench measures from the
//! client — its throughput is what it got acknowledged, its latencies are
//! response times from the intended send — so against a bench baseline
//! only those three figures compare, and they compare the server's own
//! view with the client's: a fair check for regressions of the same
//! setup, not a like-for-like measurement.

use std::path::Path;

use anyhow::{Context, Result, bail};
use cairn_monitor::report::{Headline, Report, compare, render};
use serde_json::Value;

use crate::cli::{ReportArgs, ReportFormat};
use crate::client_cmds::client;

pub async fn run(args: ReportArgs) -> Result<()> {
    let c = client(&args.server).await?;
    if args.list {
        let list = c.reports().await?;
        let out = match args.format {
            ReportFormat::Json => serde_json::to_string_pretty(&list)?,
            _ => list_table(&list),
        };
        return write_out(args.output.as_deref(), &out);
    }
    let value = match &args.id {
        Some(id) => c.report(id).await?,
        None => c.report_now(args.window.as_secs().max(1)).await?,
    };
    let mut report: Report =
        serde_json::from_value(value).context("the node's answer is not a report")?;
    if let Some(path) = &args.baseline {
        let (headline, label) = baseline(path)?;
        report.comparison = Some(compare::compare(&report.headline, &headline, &label));
    }
    let out = match args.format {
        ReportFormat::Json => render::json(&report),
        ReportFormat::Md => render::markdown(&report),
        ReportFormat::Html => render::html(&report),
    };
    write_out(args.output.as_deref(), &out)?;
    if let Some(c) = &report.comparison
        && c.regressions > 0
    {
        eprintln!(
            "{} regression(s) against {}: {}",
            c.regressions,
            c.baseline,
            c.figures
                .iter()
                .filter(|f| f.regression)
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

fn write_out(path: Option<&Path>, text: &str) -> Result<()> {
    match path {
        Some(p) => std::fs::write(p, text).with_context(|| format!("write {}", p.display())),
        None => {
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
            Ok(())
        }
    }
}

fn list_table(list: &Value) -> String {
    let reports = list["reports"].as_array().cloned().unwrap_or_default();
    if reports.is_empty() {
        return "no saved report yet (the controller leader saves one every --report-interval)"
            .into();
    }
    let mut out = format!(
        "{:<15} {:<21} {:<21} {:<7} {:<7} {}\n",
        "ID", "FROM", "TO", "NOW", "WORST", "FINDINGS"
    );
    for r in reports {
        out.push_str(&format!(
            "{:<15} {:<21} {:<21} {:<7} {:<7} {}\n",
            r["id"].as_str().unwrap_or(""),
            render::utc(r["start_unix_ms"].as_u64().unwrap_or(0)),
            render::utc(r["end_unix_ms"].as_u64().unwrap_or(0)),
            r["status"].as_str().unwrap_or(""),
            r["worst"].as_str().unwrap_or(""),
            r["findings"]
        ));
    }
    out
}

/// The headline of a baseline file, and how to name it.
pub fn baseline(path: &Path) -> Result<(Headline, String)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let label = path.display().to_string();
    headline_of(&v).map(|h| (h, label)).with_context(|| {
        format!(
            "{}: neither a cairn report (--format json) nor a cairn bench JSON report",
            path.display()
        )
    })
}

/// A report's headline, or what a bench report measured of one.
fn headline_of(v: &Value) -> Result<Headline> {
    let format = v["format"].as_str().unwrap_or("");
    if format.starts_with("cairn-report/") {
        return Ok(serde_json::from_value(v["headline"].clone())?);
    }
    if format.starts_with("cairn-bench/") {
        let w = &v["writes"];
        return Ok(Headline {
            entries_per_second: w["achieved_entries_per_s"].as_f64(),
            write_p50_ms: w["response"]["p50_ms"].as_f64(),
            write_p99_ms: w["response"]["p99_ms"].as_f64(),
            ..Headline::default()
        });
    }
    bail!("format {format:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_bench_report_when_read_as_a_baseline_should_take_its_write_figures() {
        let v = serde_json::json!({
            "format": "cairn-bench/1",
            "writes": {"achieved_entries_per_s": 5000.0, "response": {"p50_ms": 1.5, "p99_ms": 9.0}}
        });
        let h = headline_of(&v).unwrap();
        assert_eq!(h.entries_per_second, Some(5000.0));
        assert_eq!(h.write_p99_ms, Some(9.0));
        assert_eq!(h.read_p99_ms, None);
        assert!(headline_of(&serde_json::json!({"format": "x"})).is_err());
        let r = serde_json::json!({"format": "cairn-report/1", "headline": {"write_p99_ms": 4.0}});
        assert_eq!(headline_of(&r).unwrap().write_p99_ms, Some(4.0));
    }
}
