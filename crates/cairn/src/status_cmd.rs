//! `cairn status`: the cluster's health verdict and its reasons, as the
//! controller leader's monitor sees it (any node forwards there).
//!
//! Exit codes follow `rpk cluster health`'s spirit so scripts can branch on
//! them: 0 green, 1 yellow, 2 red, 3 no node answered. `--watch` redraws
//! every second until interrupted (the exit code is then the last
//! verdict's). `cairn monitor replay FILE` re-evaluates a recorded file of
//! collection rounds offline and prints every change of the verdict.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::cli::{MonitorCommand, StatusArgs};

/// Exit code when no node answered.
const UNREACHABLE: u8 = 3;

pub fn run(args: StatusArgs) -> ExitCode {
    crate::node_cmd::init_logging("warn");
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::from(UNREACHABLE);
        }
    };
    runtime.block_on(async move {
        let headers = match cairn_client::bearer_headers(args.server.token.as_deref()) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(UNREACHABLE);
            }
        };
        let tls = match crate::cli::load_tls_ca(args.server.tls_ca.as_deref()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(UNREACHABLE);
            }
        };
        let mut http = cairn_client::http_builder()
            .timeout(Duration::from_secs(3))
            .pool_idle_timeout(cairn_client::POOL_IDLE_TIMEOUT)
            .default_headers(headers);
        if let Some(tls) = tls {
            http = http.tls_backend_preconfigured((*tls).clone());
        }
        let http = http.build().expect("a reqwest client builds");
        let urls: Vec<String> = if args.server.cluster.is_empty() {
            vec![args.server.server.clone()]
        } else {
            args.server.cluster.clone()
        };
        loop {
            let code = match fetch(&http, &urls).await {
                Ok((url, health)) => {
                    if args.json {
                        println!("{health}");
                    } else {
                        if args.watch {
                            // Clear the screen and home the cursor.
                            print!("\x1b[2J\x1b[H");
                        }
                        // Best effort: the verdict stands without them.
                        let recs = http
                            .get(format!(
                                "{}/v1/monitor/recommendations",
                                url.trim_end_matches('/')
                            ))
                            .send()
                            .await
                            .ok()
                            .filter(|r| r.status().is_success());
                        let recs = match recs {
                            Some(r) => r.json::<Value>().await.ok(),
                            None => None,
                        };
                        print!("{}", render(&url, &health));
                        if let Some(recs) = &recs {
                            print!("{}", render_recommendations(recs));
                        }
                    }
                    exit_code(&health)
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    UNREACHABLE
                }
            };
            if !args.watch {
                return ExitCode::from(code);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = tokio::signal::ctrl_c() => return ExitCode::from(code),
            }
        }
    })
}

/// The first node of `urls` that answers `/v1/health`.
async fn fetch(http: &reqwest::Client, urls: &[String]) -> Result<(String, Value)> {
    let mut failures = Vec::new();
    for url in urls {
        let url = crate::client_cmds::normalize_url(url);
        let answer = async {
            let r = http
                .get(format!("{}/v1/health", url.trim_end_matches('/')))
                .send()
                .await?;
            let status = r.status();
            let body: Value = r.json().await?;
            if !status.is_success() {
                anyhow::bail!(
                    "{}: {}",
                    body["code"].as_str().unwrap_or("error"),
                    body["message"].as_str().unwrap_or("")
                );
            }
            Ok(body)
        };
        match answer.await {
            Ok(body) => return Ok((url, body)),
            Err(e) => failures.push(format!("{url}: {e:#}")),
        }
    }
    anyhow::bail!("no node answered: {}", failures.join("; "))
}

fn exit_code(health: &Value) -> u8 {
    match health["status"].as_str() {
        Some("green") => 0,
        Some("yellow") => 1,
        Some("red") => 2,
        _ => UNREACHABLE,
    }
}

/// `{"node": 2}` → `node 2`; `{"link": [1, 3]}` → `link 1↔3`;
/// `{"stream": "app", "partition": 4}` → `app/4`.
pub fn subject(s: &Value) -> String {
    let node = s.get("node").and_then(Value::as_u64);
    // A partition first: its subject may name one replica's node too.
    if let Some(st) = s.get("stream").and_then(Value::as_str) {
        let part = match s.get("partition").and_then(Value::as_u64) {
            Some(p) => format!("{st}/{p}"),
            None => format!("stream {st}"),
        };
        return match node {
            Some(n) => format!("{part} on node {n}"),
            None => part,
        };
    }
    if let Some(n) = node {
        return format!("node {n}");
    }
    if let Some(l) = s.get("link").and_then(Value::as_array) {
        let ids: Vec<String> = l.iter().map(|v| v.to_string()).collect();
        return format!("link {}", ids.join("↔"));
    }
    "cluster".into()
}

fn ago(since_ms: Option<u64>) -> String {
    let now = cairn_types::clock::unix_ms();
    match since_ms {
        Some(s) if s > 0 && now >= s => {
            let secs = (now - s) / 1000;
            if secs < 120 {
                format!("{secs}s")
            } else if secs < 7200 {
                format!("{}m", secs / 60)
            } else {
                format!("{}h", secs / 3600)
            }
        }
        _ => "-".into(),
    }
}

/// The verdict as text: status line, partitions, reasons, nodes.
pub fn render(url: &str, h: &Value) -> String {
    let mut out = String::new();
    let status = h["status"].as_str().unwrap_or("unknown").to_uppercase();
    let by = match (h["answered_by"].as_u64(), h["authority"].as_str()) {
        (Some(n), Some("leader")) => format!("node {n}, controller leader"),
        (Some(n), _) => format!("node {n}, own view: the controller leader did not answer"),
        _ => url.to_string(),
    };
    let _ = writeln!(out, "cluster: {status}   (from {by}, via {url})");
    let p = &h["partitions"];
    let _ = writeln!(
        out,
        "partitions: {} total, {} leaderless, {} under-replicated, {} catching up, {} quarantined",
        p["total"],
        p["leaderless"],
        p["under_replicated"],
        p["catching_up"].as_u64().unwrap_or(0),
        p["quarantined"]
    );
    let reasons = h["reasons"].as_array().cloned().unwrap_or_default();
    if reasons.is_empty() {
        let _ = writeln!(out, "reasons: none");
    } else {
        let _ = writeln!(out, "reasons:");
        for r in &reasons {
            let _ = writeln!(
                out,
                "  {:<8} {:<22} {:<12} {} (for {})",
                r["severity"].as_str().unwrap_or("").to_uppercase(),
                r["code"].as_str().unwrap_or(""),
                subject(&r["subject"]),
                r["summary"].as_str().unwrap_or(""),
                ago(r["since"].as_u64()),
            );
        }
    }
    let nodes = h["nodes"].as_array().cloned().unwrap_or_default();
    if !nodes.is_empty() {
        let _ = writeln!(
            out,
            "NODE  STATE     PHI    CPU    RSS       FSYNC_P99  FREE_DISK  LEADERS  REPLICAS"
        );
        for n in &nodes {
            let num = |k: &str| n[k].as_f64();
            let _ = writeln!(
                out,
                "{:<5} {:<9} {:>5}  {:>5}  {:>8}  {:>9}  {:>9}  {:>7}  {:>8}",
                n["node"],
                n["state"].as_str().unwrap_or("?"),
                num("phi").map_or("-".into(), |v| format!("{:.1}", v.min(99.9))),
                num("cpu").map_or("-".into(), |v| format!("{:.0}%", v * 100.0)),
                num("rss").map_or("-".into(), bytes),
                num("fsync_p99_ms").map_or("-".into(), |v| format!("{v:.1}ms")),
                num("free_bytes").map_or("-".into(), bytes),
                n["leaders"].as_u64().map_or("-".into(), |v| v.to_string()),
                n["partitions"]
                    .as_u64()
                    .map_or("-".into(), |v| v.to_string()),
            );
        }
    }
    out
}

/// "what to do:" with one line per recommendation (none: nothing).
pub fn render_recommendations(r: &Value) -> String {
    let mut out = String::new();
    let recs = r["recommendations"].as_array().cloned().unwrap_or_default();
    if recs.is_empty() {
        return out;
    }
    let _ = writeln!(out, "what to do:");
    for rec in &recs {
        let e = &rec["predicted_effect"];
        let id = rec["id"].as_str().unwrap_or("");
        let how = if rec["applicable"] == true {
            format!("cairn recommend apply {id}")
        } else {
            "advice".into()
        };
        let _ = writeln!(
            out,
            "  {id}: {} {:.1} → {:.1} {}  [{how}]",
            e["metric"].as_str().unwrap_or(""),
            e["from"].as_f64().unwrap_or(0.0),
            e["to"].as_f64().unwrap_or(0.0),
            e["unit"].as_str().unwrap_or(""),
        );
    }
    out
}

fn bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = v;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1}{}", UNITS[unit])
}

/// `cairn monitor replay FILE`: prints every verdict change and finding
/// change of a recorded file, evaluated with the given (or default)
/// configuration.
pub fn monitor(cmd: MonitorCommand) -> Result<()> {
    match cmd {
        MonitorCommand::Replay { file, config, json } => {
            let config = match config {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("read {}", path.display()))?;
                    cairn_monitor::MonitorConfig::from_toml(&text)?
                }
                None => cairn_monitor::MonitorConfig::default(),
            };
            let reader = std::io::BufReader::new(
                std::fs::File::open(&file).with_context(|| format!("open {}", file.display()))?,
            );
            let assessments = cairn_monitor::replay(reader, config)?;
            let mut last: Option<(String, Vec<String>)> = None;
            for a in &assessments {
                let v = serde_json::to_value(a)?;
                if json {
                    println!("{v}");
                    continue;
                }
                let status = v["health"]["status"].as_str().unwrap_or("?").to_string();
                let codes: Vec<String> = v["findings"]
                    .as_array()
                    .map(|f| {
                        f.iter()
                            .map(|f| {
                                format!(
                                    "{} {}",
                                    f["code"].as_str().unwrap_or(""),
                                    subject(&f["subject"])
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if last.as_ref() != Some(&(status.clone(), codes.clone())) {
                    println!(
                        "{}  {:<6}  {}",
                        crate::client_cmds::format_unix_ms(v["at"].as_u64().unwrap_or(0)),
                        status,
                        if codes.is_empty() {
                            "no findings".into()
                        } else {
                            codes.join("; ")
                        }
                    );
                    last = Some((status, codes));
                }
            }
            eprintln!("{} rounds replayed", assessments.len());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_catching_up_reason_when_rendered_should_name_the_replica_and_count_it() {
        let h = serde_json::json!({
            "status": "yellow",
            "partitions": {"total": 3, "leaderless": 0, "under_replicated": 0,
                           "catching_up": 1, "quarantined": 0},
            "reasons": [{"code": "catching_up", "severity": "warning",
                         "subject": {"stream": "app", "partition": 2, "node": 3},
                         "summary": "node 3 is catching up app/2 by snapshot: 41 MB of ~120 MB (34%, 1200 of 3500 entries)",
                         "since": 0}],
        });
        let out = render("http://x", &h);
        assert!(out.contains("0 under-replicated, 1 catching up"), "{out}");
        let line = out.lines().find(|l| l.contains("catching_up")).unwrap();
        assert!(line.contains("app/2 on node 3"), "{line}");
        assert!(line.contains("41 MB of ~120 MB (34%"), "{line}");
    }
}
