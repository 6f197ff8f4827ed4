//! A report as Markdown, HTML or JSON.
//!
//! Markdown and HTML are drawn from one list of [`Section`]s (a heading,
//! lines of text, a table), so the two never say different things. The
//! HTML page is one self-contained file — inline CSS and SVG charts, no
//! script, no external resource — so it reads offline and attaches to a
//! ticket as is. Times are UTC.

use std::fmt::Write as _;

use super::{Report, ReportSeries, Stat};
use crate::health::Status;

/// The report as pretty JSON (what `GET /v1/reports/{id}` serves and a
/// baseline is read from).
pub fn json(r: &Report) -> String {
    serde_json::to_string_pretty(r).expect("a report always serializes")
}

/// `unix_ms` as `YYYY-MM-DD HH:MM:SSZ`.
pub fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn num(v: f64) -> String {
    crate::detect::num(v)
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), num)
}

fn bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let (mut v, mut u) = (v, 0);
    while v.abs() >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    format!("{} {}", num(v), UNITS[u])
}

/// `median (max)` of a stat.
fn med_max(s: Option<Stat>) -> String {
    s.map_or_else(
        || "–".into(),
        |s| format!("{} ({})", num(s.p50), num(s.max)),
    )
}

/// `mean (max)` of a stat.
fn mean_max(s: Option<Stat>) -> String {
    s.map_or_else(
        || "–".into(),
        |s| format!("{} ({})", num(s.mean), num(s.max)),
    )
}

fn status(s: Status) -> &'static str {
    match s {
        Status::Green => "green",
        Status::Yellow => "yellow",
        Status::Red => "red",
    }
}

/// One part of the report: a heading, lines of text, perhaps a table.
struct Section {
    title: String,
    lines: Vec<String>,
    table: Option<Table>,
}

struct Table {
    head: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    /// Said instead of an empty table.
    empty: &'static str,
}

fn sections(r: &Report) -> Vec<Section> {
    let w = &r.window;
    let mut out = vec![Section {
        title: format!("Cairn performance report {}", r.id),
        lines: vec![format!(
            "Window {} to {} ({} s, {} rounds at {} s).",
            utc(w.start_unix_ms),
            utc(w.end_unix_ms),
            (w.end_unix_ms - w.start_unix_ms) / 1000,
            w.rounds,
            w.resolution_s
        )],
        table: None,
    }];
    let v = &r.verdict;
    out.push(Section {
        title: "Verdict".into(),
        lines: vec![format!(
            "Now {}, worst {}: green {} s, yellow {} s, red {} s.",
            status(v.now),
            status(v.worst),
            num(v.green_s),
            num(v.yellow_s),
            num(v.red_s)
        )],
        table: Some(Table {
            head: vec!["since", "status", "reasons"],
            rows: v
                .changes
                .iter()
                .map(|c| {
                    vec![
                        utc(c.at_unix_ms),
                        status(c.status).into(),
                        c.reasons.join("; "),
                    ]
                })
                .collect(),
            empty: "No verdict was recorded in the window.",
        }),
    });
    let h = &r.headline;
    let head_rows = vec![
        vec![
            "entries/s (cluster, mean)".into(),
            opt(h.entries_per_second),
        ],
        vec![
            "write p50, ms (worst node, median)".into(),
            opt(h.write_p50_ms),
        ],
        vec![
            "write p99, ms (worst node, median)".into(),
            opt(h.write_p99_ms),
        ],
        vec![
            "read p99, ms (worst node, median)".into(),
            opt(h.read_p99_ms),
        ],
        vec![
            "replicate p99, ms (worst node, median)".into(),
            opt(h.replicate_p99_ms),
        ],
        vec![
            "replication lag, s (max)".into(),
            opt(h.replication_lag_seconds),
        ],
        vec!["CPU cores (cluster, mean)".into(), opt(h.cpu_cores)],
    ];
    out.push(Section {
        title: "Headline".into(),
        lines: vec![],
        table: Some(Table {
            head: vec!["figure", "value"],
            rows: head_rows,
            empty: "",
        }),
    });
    if let Some(c) = &r.comparison {
        out.push(Section {
            title: format!("Against the baseline {}", c.baseline),
            lines: vec![if c.regressions == 0 {
                "No regression.".to_string()
            } else {
                format!("{} regression(s).", c.regressions)
            }],
            table: Some(Table {
                head: vec!["figure", "baseline", "now", "change", ""],
                rows: c
                    .figures
                    .iter()
                    .map(|f| {
                        vec![
                            f.name.clone(),
                            opt(f.baseline),
                            opt(f.current),
                            f.change
                                .map_or_else(|| "–".into(), |x| format!("{:+.1} %", x * 100.0)),
                            if f.regression { "REGRESSION" } else { "" }.into(),
                        ]
                    })
                    .collect(),
                empty: "",
            }),
        });
    }
    out.push(Section {
        title: "Nodes".into(),
        lines: vec![
            "Latencies in ms: the median (and max) of the per-second percentile; rates and resources: mean (max).".into(),
        ],
        table: Some(Table {
            head: vec![
                "node",
                "rounds",
                "entries/s",
                "write p50",
                "write p99",
                "read p99",
                "replicate p99",
                "commit p99",
                "fsync p99",
                "disk probe p99",
                "CPU cores",
                "host CPU",
                "RSS max",
                "lag max, s",
                "free",
                "leaders",
            ],
            rows: r
                .nodes
                .iter()
                .map(|n| {
                    vec![
                        n.node.to_string(),
                        n.rounds.to_string(),
                        mean_max(n.entries_per_second),
                        med_max(n.write_p50_ms),
                        med_max(n.write_p99_ms),
                        med_max(n.read_p99_ms),
                        med_max(n.replicate_p99_ms),
                        med_max(n.commit_p99_ms),
                        med_max(n.fsync_p99_ms),
                        med_max(n.disk_probe_p99_ms),
                        mean_max(n.cpu_cores),
                        mean_max(n.host_cpu),
                        n.rss_bytes.map_or("–".into(), |s| bytes(s.max)),
                        n.replication_lag_seconds.map_or("–".into(), |s| num(s.max)),
                        n.free_bytes.map_or("–".into(), |b| bytes(b as f64)),
                        n.leaders.to_string(),
                    ]
                })
                .collect(),
            empty: "No node answered in the window.",
        }),
    });
    out.push(Section {
        title: "Streams".into(),
        lines: vec![
            "Latency is not measured per stream: the last column is the highest median write p99 (ms) of the nodes that led its partitions.".into(),
        ],
        table: Some(Table {
            head: vec!["stream", "entries/s", "leaders", "leaders' write p99"],
            rows: r
                .streams
                .iter()
                .map(|s| {
                    vec![
                        s.stream.clone(),
                        mean_max(s.entries_per_second),
                        s.leaders
                            .iter()
                            .map(u64::to_string)
                            .collect::<Vec<_>>()
                            .join(", "),
                        opt(s.leaders_write_p99_ms),
                    ]
                })
                .collect(),
            empty: "No stream took writes in the window.",
        }),
    });
    out.push(Section {
        title: "Findings".into(),
        lines: vec![],
        table: Some(Table {
            head: vec![
                "since", "until", "severity", "code", "subject", "resource", "summary", "injected",
            ],
            rows: r
                .findings
                .iter()
                .map(|f| {
                    vec![
                        utc(f.since_unix_ms),
                        f.ended_unix_ms.map_or("active".into(), utc),
                        f.severity.as_str().into(),
                        f.code.clone(),
                        f.subject.to_string(),
                        format!("{:?}", f.resource).to_lowercase(),
                        f.summary.clone(),
                        f.injected.clone().unwrap_or_default(),
                    ]
                })
                .collect(),
            empty: "No finding in the window.",
        }),
    });
    out.push(Section {
        title: "Alerts".into(),
        lines: vec![],
        table: Some(Table {
            head: vec!["at", "state", "alert", "subject", "summary"],
            rows: r
                .alerts
                .iter()
                .map(|t| {
                    let l = &t.alert.labels;
                    let subject: Vec<String> = ["node", "link", "stream", "partition"]
                        .iter()
                        .filter_map(|k| l.get(*k).map(|v| format!("{k}={v}")))
                        .collect();
                    vec![
                        utc(t.at),
                        format!("{:?}", t.alert.state).to_lowercase(),
                        l.get("alertname").cloned().unwrap_or_default(),
                        subject.join(" "),
                        t.alert
                            .annotations
                            .get("summary")
                            .cloned()
                            .unwrap_or_default(),
                    ]
                })
                .collect(),
            empty: "No alert changed state in the window.",
        }),
    });
    out.push(Section {
        title: "Actions".into(),
        lines: vec![],
        table: Some(Table {
            head: vec!["at", "action", "subject", "outcome", "detail"],
            rows: r
                .actions
                .iter()
                .map(|a| {
                    vec![
                        utc(a.at_unix_ms),
                        a.action.clone(),
                        a.subject.clone(),
                        a.outcome.clone(),
                        a.detail.clone(),
                    ]
                })
                .collect(),
            empty: "No action was taken in the window.",
        }),
    });
    out.push(Section {
        title: "Capacity".into(),
        lines: vec![
            "Knee: the most entries/s the node completed while last overloaded; headroom: knee ÷ the window's mean. Time to full: free space ÷ its decline over the window.".into(),
        ],
        table: Some(Table {
            head: vec![
                "node",
                "entries/s",
                "knee",
                "headroom",
                "free",
                "free space decline",
                "time to full",
            ],
            rows: r
                .capacity
                .iter()
                .map(|c| {
                    vec![
                        c.node.to_string(),
                        opt(c.entries_per_second),
                        c.knee.map_or("not measured".into(), |k| {
                            format!("{} ({})", num(k.entries_per_second), utc(k.since_unix_ms))
                        }),
                        c.headroom.map_or("–".into(), |h| format!("{}×", num(h))),
                        c.free_bytes.map_or("–".into(), |b| bytes(b as f64)),
                        c.free_bytes_decline_per_second
                            .map_or("–".into(), |d| format!("{}/s", bytes(d))),
                        c.hours_to_full
                            .map_or("–".into(), |h| format!("{} h", num(h))),
                    ]
                })
                .collect(),
            empty: "",
        }),
    });
    out
}

/// The report as Markdown.
pub fn markdown(r: &Report) -> String {
    let mut out = String::new();
    for (k, s) in sections(r).iter().enumerate() {
        let level = if k == 0 { "#" } else { "##" };
        let _ = writeln!(out, "{level} {}\n", s.title);
        for l in &s.lines {
            let _ = writeln!(out, "{l}\n");
        }
        if let Some(t) = &s.table {
            if t.rows.is_empty() {
                if !t.empty.is_empty() {
                    let _ = writeln!(out, "{}\n", t.empty);
                }
                continue;
            }
            let cell = |c: &str| c.replace('|', "\\|").replace('\n', " ");
            let _ = writeln!(out, "| {} |", t.head.join(" | "));
            let _ = writeln!(out, "|{}", "---|".repeat(t.head.len()));
            for row in &t.rows {
                let cells: Vec<String> = row.iter().map(|c| cell(c)).collect();
                let _ = writeln!(out, "| {} |", cells.join(" | "));
            }
            out.push('\n');
        }
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1.5em}\
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}.green{color:#1a7f37}.yellow{color:#9a6700}.red{color:#cf222e}\
.REGRESSION{color:#cf222e;font-weight:bold}svg{margin:.5em 1em 1em 0}";

const COLOURS: [&str; 6] = [
    "#0969da", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#57606a",
];

/// One chart: the lines of `metric`, one per node (or the cluster's).
fn chart(title: &str, lines: &[&ReportSeries]) -> String {
    let (w, h, pad) = (560.0, 160.0, 36.0);
    let pts = lines.iter().flat_map(|l| l.points.iter());
    let (mut t0, mut t1, mut vmax) = (u64::MAX, 0u64, 0.0f64);
    for &(t, v) in pts {
        t0 = t0.min(t);
        t1 = t1.max(t);
        vmax = vmax.max(v);
    }
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" role=\"img\"><title>{}</title>\
         <text x=\"{pad}\" y=\"12\" font-size=\"12\">{}</text>",
        h + 30.0,
        esc(title),
        esc(title)
    );
    if t0 >= t1 || vmax <= 0.0 {
        svg.push_str("<text x=\"40\" y=\"60\" font-size=\"12\">no data</text></svg>");
        return svg;
    }
    let x = |t: u64| pad + (t - t0) as f64 / (t1 - t0) as f64 * (w - 2.0 * pad);
    let y = |v: f64| 20.0 + (1.0 - v / vmax) * (h - 30.0);
    let _ = write!(
        svg,
        "<line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\"/>\
         <line x1=\"{pad}\" y1=\"20\" x2=\"{pad}\" y2=\"{}\" stroke=\"#999\"/>\
         <text x=\"2\" y=\"24\" font-size=\"10\">{}</text><text x=\"2\" y=\"{}\" font-size=\"10\">0</text>\
         <text x=\"{pad}\" y=\"{}\" font-size=\"10\">{}</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
        h - 10.0,
        w - pad,
        h - 10.0,
        h - 10.0,
        num(vmax),
        h - 10.0,
        h + 4.0,
        &utc(t0)[11..19],
        w - pad,
        h + 4.0,
        &utc(t1)[11..19],
    );
    for (k, l) in lines.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let path: Vec<String> = l
            .points
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>",
            path.join(" ")
        );
        let label = l
            .node
            .map_or("cluster".to_string(), |n| format!("node {n}"));
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" font-size=\"10\" fill=\"{colour}\">{label}</text>",
            pad + 70.0 * k as f64,
            h + 22.0
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The report as one self-contained HTML page.
pub fn html(r: &Report) -> String {
    let mut out = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Cairn report {}</title><style>{CSS}</style></head><body>\n",
        esc(&r.id)
    );
    for (k, s) in sections(r).iter().enumerate() {
        let tag = if k == 0 { "h1" } else { "h2" };
        let _ = writeln!(out, "<{tag}>{}</{tag}>", esc(&s.title));
        for l in &s.lines {
            let _ = writeln!(out, "<p>{}</p>", esc(l));
        }
        if k == 0 {
            let _ = writeln!(out, "<div>");
            for (metric, title) in [
                ("entries_per_second", "entries/s (cluster)"),
                ("write_p99_ms", "write p99, ms"),
                ("cpu_cores", "CPU cores"),
            ] {
                let lines: Vec<&ReportSeries> =
                    r.series.iter().filter(|s| s.metric == metric).collect();
                out.push_str(&chart(title, &lines));
            }
            let _ = writeln!(out, "</div>");
        }
        if let Some(t) = &s.table {
            if t.rows.is_empty() {
                if !t.empty.is_empty() {
                    let _ = writeln!(out, "<p>{}</p>", esc(t.empty));
                }
                continue;
            }
            out.push_str("<table><tr>");
            for h in &t.head {
                let _ = write!(out, "<th>{}</th>", esc(h));
            }
            out.push_str("</tr>\n");
            for row in &t.rows {
                out.push_str("<tr>");
                for c in row {
                    let class = match c.as_str() {
                        "green" | "yellow" | "red" | "REGRESSION" => c.as_str(),
                        _ => "",
                    };
                    if class.is_empty() {
                        let _ = write!(out, "<td>{}</td>", esc(c));
                    } else {
                        let _ = write!(out, "<td class=\"{class}\">{}</td>", esc(c));
                    }
                }
                out.push_str("</tr>\n");
            }
            out.push_str("</table>\n");
        }
    }
    out.push_str("</body></html>\n");
    out
}
