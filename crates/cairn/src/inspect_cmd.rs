//! `cairn inspect DIR`: the read-only verification of
//! [`cairn_storage::inspect_path`], as a table or JSON.
//!
//! Exit codes: 0 when every log verifies, 1 when anything does not (torn
//! tail, corruption, unreadable metadata; each named on stderr with its
//! file and byte position) or the directory cannot be read, 2 when DIR is
//! missing, not a directory, or holds no Cairn log.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use cairn_storage::{InspectReport, LogReport, ProblemKind, SegmentReport, inspect_path};

use crate::cli::InspectArgs;

pub fn run(args: InspectArgs) -> ExitCode {
    let dir = &args.dir;
    if !dir.is_dir() {
        let what = if dir.exists() {
            "is not a directory"
        } else {
            "does not exist"
        };
        eprintln!("error: {} {what}", dir.display());
        return ExitCode::from(2);
    }
    let report = match inspect_path(dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: inspect {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    if !report.data_dir && report.logs.iter().all(|l| l.segments.is_empty()) {
        eprintln!(
            "error: {} holds no Cairn log (no segments, no controller/ or groups/)",
            dir.display()
        );
        return ExitCode::from(2);
    }
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: encode report: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", render(&report));
    }
    let problems = problems(&report);
    for p in &problems {
        eprintln!("{p}");
    }
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "error: {} problem(s) found in {}",
            problems.len(),
            dir.display()
        );
        ExitCode::FAILURE
    }
}

/// One line per problem, naming the file and byte position.
fn problems(report: &InspectReport) -> Vec<String> {
    let mut out = Vec::new();
    for log in &report.logs {
        for p in &log.problems {
            out.push(format!("CORRUPT {}: {p}", log.path.display()));
        }
        for s in &log.segments {
            if let Some(p) = &s.problem {
                let (label, note) = match p.kind {
                    ProblemKind::TornTail => (
                        "TORN",
                        "torn tail (the last batch fails and nothing valid follows, as a write interrupted by a crash leaves it; the node cuts it on next open)",
                    ),
                    ProblemKind::Corruption => ("CORRUPT", "corruption"),
                };
                let next = p
                    .next_valid_at
                    .map(|n| format!("; next valid batch at byte {n}"))
                    .unwrap_or_default();
                out.push(format!(
                    "{label} {} at byte {}: {note}: {}{next}",
                    log.path.join(&s.file_name).display(),
                    p.position,
                    p.reason
                ));
            }
        }
    }
    out
}

fn render(report: &InspectReport) -> String {
    let mut out = String::new();
    let kind = if report.data_dir {
        "data directory"
    } else {
        "log"
    };
    let _ = writeln!(out, "{kind} {}", report.path.display());
    if report.logs.is_empty() {
        let _ = writeln!(out, "  (no logs)");
    }
    for log in &report.logs {
        out.push('\n');
        render_log(&mut out, &report.path, log);
    }
    let segments: usize = report.logs.iter().map(|l| l.segments.len()).sum();
    let batches: u64 = report.logs.iter().map(LogReport::batches).sum();
    let verdict = if report.is_clean() {
        "all verified"
    } else {
        "PROBLEMS FOUND (see stderr)"
    };
    let _ = writeln!(
        out,
        "\n{} logs, {segments} segments, {batches} batches: {verdict}",
        report.logs.len()
    );
    out
}

fn render_log(out: &mut String, root: &Path, log: &LogReport) {
    let name = log.path.strip_prefix(root).unwrap_or(&log.path);
    let name = if name.as_os_str().is_empty() {
        log.path.as_path()
    } else {
        name
    };
    let _ = writeln!(out, "{}", name.display());
    if let Some(raft) = &log.raft {
        let _ = writeln!(
            out,
            "  raft.json: vote {}; committed {}",
            show_vote(raft.vote.as_ref()),
            show_log_id(raft.committed.as_ref())
        );
    }
    if let Some(p) = log.purged {
        let _ = writeln!(out, "  purged through index {} (term {})", p.index, p.term);
    }
    let header = [
        "SEGMENT",
        "SIZE",
        "BATCHES",
        "INDEXES",
        "OFFSETS",
        "TIME (UTC)",
        "IDX",
        "STATUS",
    ];
    let mut rows = vec![header.map(String::from).to_vec()];
    for s in &log.segments {
        rows.push(segment_row(s));
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let mut line = String::from(" ");
        for (c, cell) in row.iter().enumerate() {
            let _ = write!(line, " {cell:<w$}", w = widths[c]);
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    for p in &log.problems {
        let _ = writeln!(out, "  problem: {p}");
    }
}

/// openraft's vote as stored (`{"leader_id": {"term", "voted_for"},
/// "committed"}`), or its JSON when it has another shape.
fn show_vote(vote: Option<&serde_json::Value>) -> String {
    let Some(v) = vote else {
        return "none".into();
    };
    let term = v.pointer("/leader_id/term").and_then(|t| t.as_u64());
    let Some(term) = term else {
        return v.to_string();
    };
    let by = match v.pointer("/leader_id/voted_for") {
        Some(serde_json::Value::Number(n)) => format!(" for node {n}"),
        _ => String::new(),
    };
    let committed = if v.get("committed").and_then(|c| c.as_bool()) == Some(true) {
        " (committed)"
    } else {
        ""
    };
    format!("term {term}{by}{committed}")
}

/// A stored log id (`{"leader_id": {"term", ..}, "index"}`).
fn show_log_id(id: Option<&serde_json::Value>) -> String {
    let Some(v) = id else {
        return "none recorded".into();
    };
    match (
        v.get("index").and_then(|i| i.as_u64()),
        v.pointer("/leader_id/term").and_then(|t| t.as_u64()),
    ) {
        (Some(index), Some(term)) => format!("index {index} (term {term})"),
        (Some(index), None) => format!("index {index}"),
        _ => v.to_string(),
    }
}

fn segment_row(s: &SegmentReport) -> Vec<String> {
    let indexes = match (s.first_index, s.last_index) {
        (Some(a), Some(b)) => format!("{a}..={b}"),
        _ => format!("{} (empty)", s.base_index),
    };
    let offsets = format!("{}..{}", s.base_offset, s.end_offset);
    let time = match (s.min_ts, s.max_ts) {
        (Some(a), Some(b)) => format!("{} .. {}", format_ts(a), format_ts(b)),
        _ => "-".into(),
    };
    let idx = match s.index_files {
        None => "active".into(),
        Some(i) if i.current => "ok".into(),
        Some(i) if i.index && i.timeindex => "stale".into(),
        Some(i) => {
            let mut missing = Vec::new();
            if !i.index {
                missing.push(".index");
            }
            if !i.timeindex {
                missing.push(".timeindex");
            }
            format!("no {}", missing.join(","))
        }
    };
    let status = match &s.problem {
        Some(p) if p.kind == ProblemKind::TornTail => format!("TORN TAIL at byte {}", p.position),
        Some(p) => format!("CORRUPT at byte {}", p.position),
        None if s.zero_tail_bytes > 0 => format!(
            "ok (+{} preallocated zero bytes, normal)",
            s.zero_tail_bytes
        ),
        None => "ok".into(),
    };
    vec![
        s.file_name.clone(),
        s.size_bytes.to_string(),
        s.batches.to_string(),
        indexes,
        offsets,
        time,
        idx,
        status,
    ]
}

/// Microseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn format_ts(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// The proleptic Gregorian date of a day count from 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::format_ts;

    #[test]
    fn timestamps_format_as_utc() {
        assert_eq!(format_ts(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            format_ts(1_700_000_000_123_456),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(format_ts(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(
            format_ts(951_782_400_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
    }
}
