//! `cairn top`: the dashboard's overview in the terminal (ratatui +
//! crossterm), refreshed every second.
//!
//! Two halves that never wait for each other: a background task polls the
//! cluster (`/v1/health`, `/v1/cluster`, `/v1/monitor/findings`,
//! `/v1/monitor/partitions` and the latest points of two series in one
//! request) into a shared [`Model`]; the main thread
//! redraws from the model and reads keys. A slow or dead node therefore
//! never freezes the screen or the `q` key.
//!
//! Failover: the poller starts with `--server`/`--cluster` and learns every
//! member's HTTP address from `/v1/cluster`; when the node it uses stops
//! answering, it tries the others in turn, so `top` keeps working while
//! nodes come and go (the dead one shows as `down` in the verdict of the
//! one that answers).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use parking_lot::Mutex;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Sparkline, Table, Tabs, Wrap};
use serde_json::Value;

use crate::cli::TopArgs;

const REFRESH: Duration = Duration::from_secs(1);
/// Per request: a node that takes longer is treated as gone this round.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(900);
/// Cluster throughput points kept for the sparkline (one per second).
const SPARK_POINTS: usize = 180;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    Nodes,
    Partitions,
    Findings,
}

impl View {
    const ALL: [View; 3] = [View::Nodes, View::Partitions, View::Findings];

    fn title(self) -> &'static str {
        match self {
            View::Nodes => "1 nodes",
            View::Partitions => "2 partitions",
            View::Findings => "3 findings",
        }
    }
}

/// What the poller last saw.
#[derive(Debug, Default)]
struct Model {
    /// The node that answered last.
    via: Option<String>,
    /// Why the last round failed, if it did.
    error: Option<String>,
    updated: Option<Instant>,
    health: Option<Value>,
    cluster: Option<Value>,
    findings: Vec<Value>,
    /// `/v1/monitor/partitions`: leader, replicas, followers' lag.
    partitions: Vec<Value>,
    /// (measuring node, peer) → latest RTT p99 in ms.
    rtt: BTreeMap<(u64, u64), f64>,
    /// Cluster entries/s, one point per round.
    throughput: VecDeque<u64>,
    /// "stream/p" → (committed end offset, when), for the rate.
    commits: BTreeMap<String, (u64, Instant)>,
    rates: BTreeMap<String, f64>,
}

pub fn run(args: TopArgs) -> Result<()> {
    crate::node_cmd::init_logging("off");
    let headers = cairn_client::bearer_headers(args.server.token.as_deref())?;
    let mut http = cairn_client::tls::http_builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_idle_timeout(cairn_client::POOL_IDLE_TIMEOUT)
        .default_headers(headers);
    if let Some(tls) = args.server.client_options()?.tls_ca {
        // https:// nodes, checked against --tls-ca.
        http = http.tls_backend_preconfigured((*tls).clone());
    }
    let http = http.build().context("build the HTTP client")?;
    let urls: Vec<String> = if args.server.cluster.is_empty() {
        vec![args.server.server.clone()]
    } else {
        args.server.cluster.clone()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let model = Arc::new(Mutex::new(Model::default()));
    runtime.spawn(poll(http, urls, model.clone()));

    let mut terminal = ratatui::try_init().context("set up the terminal")?;
    let result = ui_loop(&mut terminal, &model);
    ratatui::restore();
    runtime.shutdown_background();
    result
}

fn ui_loop(terminal: &mut ratatui::DefaultTerminal, model: &Mutex<Model>) -> Result<()> {
    let mut view = View::Nodes;
    loop {
        terminal.draw(|f| draw(f, &model.lock(), view))?;
        // Redraw at least every 250 ms so a new round shows promptly.
        if event::poll(Duration::from_millis(250))? {
            let Event::Key(key) = event::read()? else {
                continue;
            };
            if key.kind != KeyEventKind::Press {
                continue;
            }
            match key.code {
                KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                    return Ok(());
                }
                KeyCode::Char('1') | KeyCode::Char('n') => view = View::Nodes,
                KeyCode::Char('2') | KeyCode::Char('p') => view = View::Partitions,
                KeyCode::Char('3') | KeyCode::Char('f') => view = View::Findings,
                KeyCode::Tab => {
                    let i = View::ALL.iter().position(|v| *v == view).unwrap_or(0);
                    view = View::ALL[(i + 1) % View::ALL.len()];
                }
                _ => {}
            }
        }
    }
}

// ---- polling ------------------------------------------------------------

async fn get(http: &reqwest::Client, url: &str, path: &str) -> Result<Value> {
    let r = http.get(format!("{url}{path}")).send().await?;
    let status = r.status();
    if !status.is_success() {
        let body = r.text().await.unwrap_or_default();
        anyhow::bail!("{path}: {status} {body}");
    }
    Ok(r.json().await?)
}

async fn poll(http: reqwest::Client, mut urls: Vec<String>, model: Arc<Mutex<Model>>) {
    let mut current = 0usize;
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // The node used last first, then every other known one.
        let mut last_error = None;
        for attempt in 0..urls.len() {
            let i = (current + attempt) % urls.len();
            match round(&http, &urls[i], &model).await {
                Ok(members) => {
                    current = i;
                    for m in members {
                        if !urls.contains(&m) {
                            urls.push(m);
                        }
                    }
                    last_error = None;
                    break;
                }
                Err(e) => last_error = Some(format!("{}: {e:#}", urls[i])),
            }
        }
        if let Some(e) = last_error {
            let mut m = model.lock();
            m.error = Some(format!("no node answered ({e})"));
        }
    }
}

/// One refresh from `url`; the members' URLs it learned.
async fn round(http: &reqwest::Client, url: &str, model: &Mutex<Model>) -> Result<Vec<String>> {
    let health = get(http, url, "/v1/health").await?;
    let cluster = get(http, url, "/v1/cluster").await?;
    let findings = get(http, url, "/v1/monitor/findings").await.ok();
    let partitions = get(http, url, "/v1/monitor/partitions").await.ok();
    let since = chrono::Utc::now().timestamp_millis() - 3_000;
    let series = get(
        http,
        url,
        &format!("/v1/monitor/series?metric=entries_per_second,peer_rtt_p99_ms&since={since}"),
    )
    .await
    .ok();
    let rate = series.as_ref().map(|s| &s["metrics"]["entries_per_second"]);
    let rtt = series.as_ref().map(|s| &s["metrics"]["peer_rtt_p99_ms"]);

    let members: Vec<String> = cluster["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["http_addr"].as_str())
        .filter(|a| !a.is_empty())
        .map(|a| format!("http://{a}"))
        .collect();

    let mut m = model.lock();
    let now = Instant::now();
    let partitions: Vec<Value> = partitions
        .and_then(|p| p["partitions"].as_array().cloned())
        .unwrap_or_default();
    for g in &partitions {
        let key = format!("{}/{}", g["stream"].as_str().unwrap_or("?"), g["partition"]);
        let end = g["committed_end_offset"].as_u64().unwrap_or(0);
        if let Some((prev, at)) = m.commits.get(&key).copied() {
            let dt = now.duration_since(at).as_secs_f64();
            if dt > 0.0 {
                m.rates
                    .insert(key.clone(), end.saturating_sub(prev) as f64 / dt);
            }
        }
        m.commits.insert(key, (end, now));
    }
    if let Some(points) = rate.and_then(|r| r.as_array()) {
        // The latest round's points, summed over nodes.
        let latest = points.iter().filter_map(|p| p["unix_ms"].as_u64()).max();
        let total: f64 = points
            .iter()
            .filter(|p| p["unix_ms"].as_u64() == latest)
            .filter_map(|p| p["value"].as_f64())
            .sum();
        if latest.is_some() {
            m.throughput.push_back(total.round() as u64);
            while m.throughput.len() > SPARK_POINTS {
                m.throughput.pop_front();
            }
        }
    }
    if let Some(points) = rtt.and_then(|r| r.as_array()) {
        m.rtt.clear();
        for p in points {
            if let (Some(a), Some(b), Some(v)) =
                (p["node"].as_u64(), p["peer"].as_u64(), p["value"].as_f64())
            {
                m.rtt.insert((a, b), v);
            }
        }
    }
    if let Some(f) = findings {
        m.findings = match f {
            Value::Array(a) => a,
            other => other["findings"].as_array().cloned().unwrap_or_default(),
        };
    }
    m.partitions = partitions;
    m.health = Some(health);
    m.cluster = Some(cluster);
    m.via = Some(url.to_string());
    m.error = None;
    m.updated = Some(now);
    Ok(members)
}

// ---- drawing --------------------------------------------------------------

fn status_colour(s: &str) -> Color {
    match s {
        "green" | "up" => Color::Green,
        "yellow" | "suspect" | "paused" | "warning" => Color::Yellow,
        "red" | "down" | "critical" => Color::Red,
        _ => Color::Gray,
    }
}

fn subject(s: &Value) -> String {
    if let Some(l) = s["link"].as_array() {
        return format!("link {}→{}", l[0], l.get(1).unwrap_or(&Value::Null));
    }
    if let Some(stream) = s["stream"].as_str() {
        return format!("{stream}/{}", s["partition"]);
    }
    if let Some(n) = s["node"].as_u64() {
        return format!("node {n}");
    }
    "cluster".to_string()
}

fn opt(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

fn bytes(v: &Value) -> String {
    let Some(mut x) = v.as_f64() else {
        return "-".into();
    };
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut i = 0;
    while x >= 1024.0 && i < units.len() - 1 {
        x /= 1024.0;
        i += 1;
    }
    format!("{x:.1} {}", units[i])
}

fn draw(f: &mut Frame, m: &Model, view: View) {
    let [top, tabs, body, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());

    let status = m
        .health
        .as_ref()
        .and_then(|h| h["status"].as_str())
        .unwrap_or("unknown");
    let mut head = vec![
        Span::styled(" cairn top ", Style::new().add_modifier(Modifier::BOLD)),
        Span::styled(
            format!(" {} ", status.to_uppercase()),
            Style::new().fg(Color::Black).bg(status_colour(status)),
        ),
    ];
    if let Some(via) = &m.via {
        head.push(Span::raw(format!("  via {via}")));
    }
    if let Some(e) = &m.error {
        head.push(Span::styled(format!("  {e}"), Style::new().fg(Color::Red)));
    }
    f.render_widget(Paragraph::new(Line::from(head)), top);
    let selected = View::ALL.iter().position(|v| *v == view).unwrap_or(0);
    f.render_widget(
        Tabs::new(View::ALL.iter().map(|v| v.title()))
            .select(selected)
            .highlight_style(Style::new().add_modifier(Modifier::REVERSED)),
        tabs,
    );
    f.render_widget(
        Paragraph::new(" q quit · 1/n nodes · 2/p partitions · 3/f findings · Tab next")
            .style(Style::new().fg(Color::DarkGray)),
        foot,
    );
    match view {
        View::Nodes => draw_nodes(f, m, body),
        View::Partitions => draw_partitions(f, m, body),
        View::Findings => draw_findings(f, m, body),
    }
}

fn reason_lines(reasons: &[Value]) -> Vec<Line<'static>> {
    if reasons.is_empty() {
        return vec![Line::from(
            "All nodes up, every partition led and replicated, no performance finding.",
        )];
    }
    reasons
        .iter()
        .map(|r| {
            let sev = r["severity"].as_str().unwrap_or("").to_string();
            let mut spans = vec![
                Span::styled(format!("{sev:<9}"), Style::new().fg(status_colour(&sev))),
                Span::styled(
                    format!("{}: ", subject(&r["subject"])),
                    Style::new().add_modifier(Modifier::BOLD),
                ),
                Span::raw(r["summary"].as_str().unwrap_or("").to_string()),
            ];
            if let Some(i) = r["injected"].as_str() {
                spans.push(Span::raw(format!(" (injected: {i})")));
            }
            Line::from(spans)
        })
        .collect()
}

fn draw_nodes(f: &mut Frame, m: &Model, area: ratatui::layout::Rect) {
    let empty = Vec::new();
    let health = m.health.as_ref();
    let reasons = health
        .and_then(|h| h["reasons"].as_array())
        .unwrap_or(&empty);
    let nodes = health.and_then(|h| h["nodes"].as_array()).unwrap_or(&empty);
    let [why, grid, lower] = Layout::vertical([
        Constraint::Length(reasons.len().clamp(1, 6) as u16 + 2),
        Constraint::Length(nodes.len() as u16 + 3),
        Constraint::Min(4),
    ])
    .areas(area);
    f.render_widget(
        Paragraph::new(reason_lines(reasons))
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(" why ")),
        why,
    );
    let header = Row::new([
        "node",
        "state",
        "phi",
        "CPU",
        "memory",
        "fsync p99",
        "free disk",
        "leaders",
        "parts",
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    let rows = nodes.iter().map(|n| {
        let st = n["state"].as_str().unwrap_or("?").to_string();
        Row::new([
            Cell::from(format!("node {}", n["node"])),
            Cell::from(st.clone()).style(Style::new().fg(status_colour(&st))),
            Cell::from(opt(&n["phi"], 1)),
            Cell::from(
                n["cpu"]
                    .as_f64()
                    .map(|c| format!("{:.0} %", c * 100.0))
                    .unwrap_or_else(|| "-".into()),
            ),
            Cell::from(bytes(&n["rss"])),
            Cell::from(
                n["fsync_p99_ms"]
                    .as_f64()
                    .map(|v| format!("{v:.2} ms"))
                    .unwrap_or_else(|| "-".into()),
            ),
            Cell::from(bytes(&n["free_bytes"])),
            Cell::from(n["leaders"].to_string()),
            Cell::from(n["partitions"].to_string()),
        ])
    });
    let widths = [
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(11),
        Constraint::Length(11),
        Constraint::Length(11),
        Constraint::Length(8),
        Constraint::Length(6),
    ];
    f.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(format!(" nodes ({}) ", nodes.len()))),
        grid,
    );
    let [spark, links] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(lower);
    let data: Vec<u64> = m.throughput.iter().copied().collect();
    let last = data.last().copied().unwrap_or(0);
    f.render_widget(
        Sparkline::default()
            .data(&data)
            .style(Style::new().fg(Color::Cyan))
            .block(Block::bordered().title(format!(" cluster entries/s: {last} "))),
        spark,
    );
    let ids: Vec<u64> = nodes.iter().filter_map(|n| n["node"].as_u64()).collect();
    let mut lines = vec![Line::from(
        std::iter::once("     ".to_string())
            .chain(ids.iter().map(|b| format!("{b:>7}")))
            .collect::<String>(),
    )];
    for a in &ids {
        let mut spans = vec![Span::raw(format!("{a:>4} "))];
        for b in &ids {
            let cell = if a == b {
                Span::raw(format!("{:>7}", "·"))
            } else if let Some(v) = m.rtt.get(&(*a, *b)) {
                let colour = if *v >= 20.0 {
                    Color::Red
                } else if *v >= 5.0 {
                    Color::Yellow
                } else {
                    Color::Green
                };
                Span::styled(format!("{v:>7.2}"), Style::new().fg(colour))
            } else {
                Span::raw(format!("{:>7}", "-"))
            };
            spans.push(cell);
        }
        lines.push(Line::from(spans));
    }
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" peer RTT p99 ms (row→col) ")),
        links,
    );
}

fn draw_partitions(f: &mut Frame, m: &Model, area: ratatui::layout::Rect) {
    let groups = &m.partitions;
    let mut rates: Vec<f64> = groups
        .iter()
        .map(|g| {
            let key = format!("{}/{}", g["stream"].as_str().unwrap_or("?"), g["partition"]);
            m.rates.get(&key).copied().unwrap_or(0.0)
        })
        .collect();
    let row_rates = rates.clone();
    rates.sort_by(|a, b| a.total_cmp(b));
    let median = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
    let header = Row::new([
        "stream",
        "part",
        "leader",
        "replicas",
        "term",
        "committed",
        "lag node:entries/seconds",
        "rate/s",
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    let rows = groups.iter().zip(row_rates).map(|(g, rate)| {
        let hot = median > 0.0 && rate >= 3.0 * median;
        let replicas: Vec<String> = g["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r.to_string())
            .collect();
        let leader = match g["leader"].as_u64() {
            Some(l) => format!("node {l}"),
            None => "none".into(),
        };
        let row = Row::new([
            g["stream"].as_str().unwrap_or("?").to_string(),
            g["partition"].to_string(),
            leader,
            replicas.join(","),
            g["term"].to_string(),
            g["committed_end_offset"].to_string(),
            lag(g),
            format!("{rate:.0}{}", if hot { " hot" } else { "" }),
        ]);
        if hot {
            row.style(Style::new().fg(Color::Yellow))
        } else {
            row
        }
    });
    let widths = [
        Constraint::Length(14),
        Constraint::Length(5),
        Constraint::Length(8),
        Constraint::Length(10),
        Constraint::Length(6),
        Constraint::Length(12),
        Constraint::Length(34),
        Constraint::Length(10),
    ];
    f.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(format!(" partitions ({}) ", groups.len()))),
        area,
    );
}

/// `2:7/0.50 3:0/0.00*`: each follower's lag in entries and seconds as
/// its leader sees it, `*` when out of sync.
fn lag(p: &Value) -> String {
    let parts: Vec<String> = p["followers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            format!(
                "{}:{}/{}{}",
                f["node"],
                f["entries"],
                opt(&f["seconds"], 2),
                if f["in_sync"] == true { "" } else { "*" }
            )
        })
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

fn draw_findings(f: &mut Frame, m: &Model, area: ratatui::layout::Rect) {
    let mut lines = Vec::new();
    if m.findings.is_empty() {
        lines.push(Line::from("no active findings"));
    }
    for x in &m.findings {
        let sev = x["severity"].as_str().unwrap_or("").to_string();
        lines.push(Line::from(vec![
            Span::styled(format!("{sev:<9}"), Style::new().fg(status_colour(&sev))),
            Span::styled(
                format!("{} ", x["code"].as_str().unwrap_or("")),
                Style::new().add_modifier(Modifier::BOLD),
            ),
            Span::raw(format!(
                "{}: {}",
                subject(&x["subject"]),
                x["summary"].as_str().unwrap_or("")
            )),
        ]));
        for ev in x["evidence"].as_array().into_iter().flatten() {
            lines.push(Line::from(format!(
                "           {} = {} {} (baseline {}, threshold {})",
                ev["metric"].as_str().unwrap_or(""),
                opt(&ev["observed"], 2),
                ev["unit"].as_str().unwrap_or(""),
                opt(&ev["baseline"], 2),
                opt(&ev["threshold"], 2)
            )));
        }
    }
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(format!(" findings ({}) ", m.findings.len()))),
        area,
    );
}
