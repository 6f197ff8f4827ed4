//! Remediation: carrying out a recommendation (leader moves through the
//! cluster), judging it against its prediction, undoing it when it made
//! things worse, and the action log behind `GET /v1/monitor/actions`.
//!
//! Actions run on the controller leader, whose monitor is authoritative
//! (another node forwards `apply` there, service [`APPLY`]), so one log
//! holds them all. After an action the monitor's rounds are fed to
//! [`cairn_monitor::recommend::judge`]: the cluster's write p99 must be
//! back within 2× its pre-fault baseline (the minute before the finding
//! began) for 3 rounds in a row within 15 s — `verified` — else
//! `not_effective`, or `reverted` (the moves are undone) if it got worse.
//! One action is judged at a time; another waits for the judgement.
//!
//! Automatic mode (`--remediate leaders`) applies the safe class only —
//! leader transfers and rebalancing — on the controller leader, at most
//! one action per [`AUTO_EVERY`], for a finding at least [`AUTO_AFTER`]
//! old, and never while any node is missing from the round, a partition
//! has no leader, or a node is down, stalled or a partition
//! under-replicated (an election or a failover is the cluster's own
//! remedy in progress).

use std::collections::VecDeque;
use std::time::Duration;

use cairn_cluster::Cluster;
use cairn_cluster::controller::meta::partition_group;
use cairn_monitor::finding::codes;
use cairn_monitor::recommend::{self, Action, ActionRecord, Outcome, PlannedMove, Recommendation};
use cairn_monitor::{ClusterSample, Finding, Monitor};
use cairn_types::api::LeaderMoveOutcome;
use serde::{Deserialize, Serialize};

/// Service kind: apply a recommendation on the controller leader.
pub const APPLY: u16 = 102;
/// Actions kept in the log.
const KEEP: usize = 100;
/// Automatic mode: at most one action this often.
pub const AUTO_EVERY: Duration = Duration::from_secs(60);
/// Automatic mode: a finding must have held this long (not a blip).
pub const AUTO_AFTER: Duration = Duration::from_secs(5);
/// How long a forwarded apply may take (each move takes tens of ms; one
/// that fails waits up to a few seconds).
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// What `--remediate` lets the monitor do by itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemediateMode {
    /// Recommend only; actions are applied by an operator.
    #[default]
    Off,
    /// Also apply leader transfers and rebalancing.
    Leaders,
}

impl std::str::FromStr for RemediateMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(RemediateMode::Off),
            "leaders" => Ok(RemediateMode::Leaders),
            other => Err(format!(
                "unknown remediation {other:?} (expected off or leaders)"
            )),
        }
    }
}

/// Why an apply was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApplyError {
    #[error("no recommendation {id:?} now (current: {current})")]
    NotFound { id: String, current: String },
    #[error("{id} is advice for an operator; the cluster cannot carry it out")]
    NotApplicable { id: String },
    #[error("action #{seq} ({id}) is still being judged; apply again once it is")]
    Busy { seq: u64, id: String },
    #[error("{0}")]
    Unavailable(String),
}

/// The action log and the action being judged.
#[derive(Debug, Default)]
pub(super) struct ActionLog {
    next_seq: u64,
    records: VecDeque<ActionRecord>,
    /// The action being judged, and the moves that undo it.
    judging: Option<(u64, Vec<PlannedMove>)>,
    /// An apply is running (between choosing and recording).
    applying: bool,
    last_auto_ms: Option<u64>,
}

impl ActionLog {
    pub fn records(&self) -> Vec<ActionRecord> {
        self.records.iter().cloned().collect()
    }

    fn busy(&self) -> Option<ApplyError> {
        if self.applying {
            return Some(ApplyError::Busy {
                seq: self.next_seq,
                id: "an action being applied".into(),
            });
        }
        let (seq, _) = self.judging.as_ref()?;
        let id = self
            .records
            .iter()
            .find(|r| r.seq == *seq)
            .map_or_else(String::new, |r| r.recommendation.clone());
        Some(ApplyError::Busy { seq: *seq, id })
    }

    fn push(&mut self, record: ActionRecord) {
        if self.records.len() == KEEP {
            self.records.pop_front();
        }
        self.records.push_back(record);
    }
}

/// The recommendations for the monitor's last round.
pub fn current(monitor: &Monitor) -> Vec<Recommendation> {
    match monitor.history().latest() {
        Some(round) => recommend::recommend(round, &monitor.last().findings),
        None => Vec::new(),
    }
}

/// Whether the cluster is steady enough for an automatic action: every
/// node answered, every partition has a leader, and nothing is down,
/// stalled, under-replicated or catching up.
pub fn steady(round: &ClusterSample, findings: &[Finding]) -> bool {
    const BLOCKERS: &[&str] = &[
        codes::NODE_DOWN,
        codes::NODE_STALLED,
        codes::LEADERLESS_PARTITION,
        codes::UNDER_REPLICATED,
        // A replica installing a snapshot is as short of redundancy.
        codes::CATCHING_UP,
    ];
    round.nodes.iter().all(|n| !n.is_missing())
        && cairn_monitor::partitions::partitions(round)
            .iter()
            .all(|p| p.leader.is_some())
        && !findings.iter().any(|f| BLOCKERS.contains(&f.code.as_str()))
}

/// The recommendation automatic mode would apply now, if any.
pub(super) fn auto_pick(monitor: &Monitor, log: &ActionLog, now_ms: u64) -> Option<String> {
    if log.applying || log.judging.is_some() {
        return None;
    }
    if log
        .last_auto_ms
        .is_some_and(|t| now_ms < t + AUTO_EVERY.as_millis() as u64)
    {
        return None;
    }
    let round = monitor.history().latest()?;
    if !steady(round, &monitor.last().findings) {
        return None;
    }
    current(monitor)
        .into_iter()
        .find(|r| {
            r.automatic
                && r.applicable
                && now_ms.saturating_sub(r.finding_since) >= AUTO_AFTER.as_millis() as u64
        })
        .map(|r| r.id)
}

/// Chooses recommendation `id` and reserves the log for it: the plan, the
/// baseline and the p99 before.
pub(super) fn begin(
    monitor: &Monitor,
    log: &mut ActionLog,
    id: &str,
) -> Result<(Recommendation, Option<f64>, Option<f64>), ApplyError> {
    if let Some(busy) = log.busy() {
        return Err(busy);
    }
    let recs = current(monitor);
    let Some(rec) = recs.iter().find(|r| r.id == id).cloned() else {
        let ids: Vec<&str> = recs.iter().map(|r| r.id.as_str()).collect();
        return Err(ApplyError::NotFound {
            id: id.to_string(),
            current: if ids.is_empty() {
                "none".into()
            } else {
                ids.join(", ")
            },
        });
    };
    if !rec.applicable {
        return Err(ApplyError::NotApplicable { id: rec.id });
    }
    let history = monitor.history();
    let baseline = recommend::baseline_p99(history.window(history.len()).iter(), rec.finding_since);
    let before = history.latest().and_then(recommend::cluster_write_p99);
    log.applying = true;
    Ok((rec, baseline, before))
}

/// The moves of a leader action (empty for advice).
fn moves_of(action: &Action) -> &[PlannedMove] {
    match action {
        Action::TransferLeaders { moves, .. } | Action::RebalanceLeaders { moves } => moves,
        _ => &[],
    }
}

/// What carrying out a plan's moves did.
#[derive(Debug, Default)]
pub(super) struct MovesDone {
    /// The moves made (undone, reversed, if the action made things worse).
    pub done: Vec<PlannedMove>,
    /// Moves that failed; a move found already made (leadership left the
    /// node meanwhile, or the target leads) is no failure.
    pub failed: usize,
    /// One line per move.
    pub lines: Vec<String>,
}

/// Carries out `moves` one by one.
pub(super) async fn run_moves(cluster: &Cluster, moves: &[PlannedMove]) -> MovesDone {
    let mut out = MovesDone::default();
    for m in moves {
        let group = cluster
            .meta()
            .streams
            .get(&m.stream)
            .map(|s| partition_group(s.id, m.partition));
        // The plan is a round old: leadership may have moved since.
        let now = group
            .and_then(|g| cluster.group(g))
            .and_then(|g| g.leader());
        let line = match group {
            None => {
                out.failed += 1;
                format!("{}/{}: the stream is gone", m.stream, m.partition)
            }
            Some(_) if now.is_some_and(|l| l != m.from) => format!(
                "{}/{}: already led by node {}, not node {}",
                m.stream,
                m.partition,
                now.unwrap_or_default(),
                m.from
            ),
            Some(group) => match cluster.transfer_leader(group, m.to).await {
                Ok(r) if r.outcome == LeaderMoveOutcome::Moved => {
                    out.done.push(m.clone());
                    format!(
                        "{}/{}: node {} → node {} in {} ms",
                        m.stream, m.partition, m.from, m.to, r.took_ms
                    )
                }
                Ok(r) if r.outcome == LeaderMoveOutcome::AlreadyLeader => {
                    format!("{}/{}: node {} already led", m.stream, m.partition, m.to)
                }
                Ok(r) => {
                    out.failed += 1;
                    format!(
                        "{}/{}: not moved: {}",
                        m.stream,
                        m.partition,
                        r.error.unwrap_or_default()
                    )
                }
                Err(e) => {
                    out.failed += 1;
                    format!("{}/{}: not moved: {e}", m.stream, m.partition)
                }
            },
        };
        out.lines.push(line);
    }
    out
}

/// Records the outcome of carrying out `rec`: judged from now on if any
/// move happened, `failed` otherwise.
pub(super) fn record(
    log: &mut ActionLog,
    rec: Recommendation,
    by: &str,
    now_ms: u64,
    (baseline, before): (Option<f64>, Option<f64>),
    moves: MovesDone,
) -> ActionRecord {
    log.applying = false;
    let seq = log.next_seq + 1;
    log.next_seq = seq;
    let planned = moves_of(&rec.action).len();
    let outcome = if planned > 0 && moves.failed == planned {
        Outcome::Failed
    } else {
        Outcome::Applied
    };
    let MovesDone { done, lines, .. } = moves;
    if by == "auto" {
        log.last_auto_ms = Some(now_ms);
    }
    let r = ActionRecord {
        seq,
        recommendation: rec.id,
        action: rec.action,
        by: by.to_string(),
        applied_unix_ms: now_ms,
        outcome,
        predicted: rec.predicted_effect,
        baseline_p99_ms: baseline,
        before_p99_ms: before,
        after_p99_ms: None,
        judged_unix_ms: None,
        detail: lines.join("; "),
    };
    if outcome == Outcome::Applied {
        let undo = done
            .into_iter()
            .rev()
            .map(|m| PlannedMove {
                from: m.to,
                to: m.from,
                ..m
            })
            .collect();
        log.judging = Some((seq, undo));
    }
    log.push(r.clone());
    tracing::info!(
        target: "cairn::remedy",
        seq,
        action = %r.recommendation,
        by,
        outcome = ?r.outcome,
        detail = %r.detail,
        "applied a recommendation"
    );
    r
}

/// Judges the action being judged with the monitor's rounds since it was
/// applied; the moves to undo it when it made things worse.
pub(super) fn judge_round(
    monitor: &Monitor,
    log: &mut ActionLog,
    now_ms: u64,
) -> Option<Vec<PlannedMove>> {
    let (seq, _) = log.judging.as_ref()?;
    let seq = *seq;
    let record = log.records.iter_mut().find(|r| r.seq == seq)?;
    let history = monitor.history();
    let since: Vec<(u64, f64)> = history
        .window(history.len())
        .iter()
        .filter(|r| r.unix_ms > record.applied_unix_ms)
        .filter_map(|r| recommend::cluster_write_p99(r).map(|p| (r.unix_ms, p)))
        .collect();
    let (outcome, after) = recommend::judge(record, &since, now_ms)?;
    record.outcome = outcome;
    record.after_p99_ms = after;
    record.judged_unix_ms = Some(now_ms);
    let target = recommend::restored_below(record.baseline_p99_ms);
    let words = match outcome {
        Outcome::Verified => format!(
            "verified: write p99 {} ms ≤ {} ms (2× the baseline) for {} rounds, {} s after",
            round1(after),
            round1(Some(target)),
            recommend::VERIFY_ROUNDS,
            (now_ms - record.applied_unix_ms) / 1000
        ),
        Outcome::NotEffective => format!(
            "not effective: write p99 {} ms after 15 s, above {} ms",
            round1(after),
            round1(Some(target))
        ),
        Outcome::Reverted => format!(
            "worse: write p99 {} ms after 15 s vs {} ms before; undone",
            round1(after),
            round1(record.before_p99_ms)
        ),
        _ => String::new(),
    };
    record.detail = format!("{}; {words}", record.detail);
    tracing::info!(target: "cairn::remedy", seq, outcome = ?outcome, "{words}");
    let (_, undo) = log.judging.take()?;
    (outcome == Outcome::Reverted).then_some(undo)
}

fn round1(v: Option<f64>) -> String {
    v.map_or_else(|| "?".into(), |v| format!("{:.1}", v))
}

/// An action as a performance report lists it.
pub fn report_action(r: &ActionRecord) -> cairn_monitor::report::ReportAction {
    let subject = match &r.action {
        Action::TransferLeaders { from, .. } => format!("node {from}"),
        Action::RebalanceLeaders { moves } => format!("{} partition(s)", moves.len()),
        Action::MoveReplicas { node } | Action::FreeDisk { node } => format!("node {node}"),
        Action::RaisePartitions { stream, .. } => format!("stream {stream}"),
        Action::AddNode => "cluster".into(),
    };
    let outcome = serde_json::to_value(r.outcome)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let p99 = |v: Option<f64>| v.map_or_else(|| "?".into(), |v| format!("{v:.1} ms"));
    cairn_monitor::report::ReportAction {
        at_unix_ms: r.applied_unix_ms,
        action: format!("{} (by {})", r.recommendation, r.by),
        subject,
        outcome,
        detail: format!(
            "write p99 baseline {}, before {}, after {}; {}",
            p99(r.baseline_p99_ms),
            p99(r.before_p99_ms),
            p99(r.after_p99_ms),
            r.detail
        ),
    }
}
