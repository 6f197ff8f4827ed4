//! What a report needs that the history rings do not hold: when the
//! verdict changed, each finding's episode (first and last round, worst
//! severity), and each node's last measured knee.
//!
//! The [`Monitor`](crate::Monitor) feeds [`EventLog::record`] once a
//! round. Everything is bounded: [`VERDICT_LIMIT`] verdict changes and
//! [`EPISODE_LIMIT`] ended episodes (a day of a finding flapping every
//! minute fits), one knee per node.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::finding::{Finding, Resource, Severity, Subject, codes};
use crate::health::{Health, Status};
use crate::sample::ClusterSample;

/// Verdict changes kept.
pub const VERDICT_LIMIT: usize = 5_000;
/// Ended finding episodes kept.
pub const EPISODE_LIMIT: usize = 2_000;

/// The verdict as it became at `at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictChange {
    pub at_unix_ms: u64,
    pub status: Status,
    /// `code subject` of each reason, worst first.
    pub reasons: Vec<String>,
}

/// One finding from the round it was raised to the round it cleared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingEpisode {
    pub code: String,
    /// The worst severity it had.
    pub severity: Severity,
    pub subject: Subject,
    pub resource: Resource,
    /// Its summary when last seen.
    pub summary: String,
    pub since_unix_ms: u64,
    pub last_seen_unix_ms: u64,
    /// `None` while active.
    pub ended_unix_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injected: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explained_by: Option<String>,
}

/// The throughput a node sustained while it was overloaded: the most
/// entries/s it completed in a round of its last `overload` episode. Past
/// that rate its latency grew instead of its throughput.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Knee {
    pub entries_per_second: f64,
    /// When that episode began.
    pub since_unix_ms: u64,
}

/// See the module note.
#[derive(Debug, Default)]
pub struct EventLog {
    verdicts: VecDeque<VerdictChange>,
    active: BTreeMap<(String, Subject), FindingEpisode>,
    ended: VecDeque<FindingEpisode>,
    knees: BTreeMap<u64, Knee>,
}

impl EventLog {
    /// Takes one round's verdict and findings.
    pub fn record(
        &mut self,
        at: u64,
        health: &Health,
        findings: &[Finding],
        round: &ClusterSample,
    ) {
        let reasons: Vec<String> = health
            .reasons
            .iter()
            .map(|r| format!("{} {}", r.code, r.subject))
            .collect();
        let changed = self
            .verdicts
            .back()
            .is_none_or(|v| v.status != health.status || v.reasons != reasons);
        if changed {
            if self.verdicts.len() == VERDICT_LIMIT {
                self.verdicts.pop_front();
            }
            self.verdicts.push_back(VerdictChange {
                at_unix_ms: at,
                status: health.status,
                reasons,
            });
        }
        let mut still = BTreeMap::new();
        for f in findings {
            let key = f.key();
            let mut e = self.active.remove(&key).unwrap_or_else(|| FindingEpisode {
                code: f.code.clone(),
                severity: f.severity,
                subject: f.subject.clone(),
                resource: f.resource,
                summary: String::new(),
                since_unix_ms: f.since,
                last_seen_unix_ms: at,
                ended_unix_ms: None,
                injected: None,
                explained_by: None,
            });
            e.severity = e.severity.max(f.severity);
            e.summary.clone_from(&f.summary);
            e.since_unix_ms = e.since_unix_ms.min(f.since);
            e.last_seen_unix_ms = at;
            if f.injected.is_some() {
                e.injected.clone_from(&f.injected);
            }
            e.explained_by.clone_from(&f.explained_by);
            if f.code == codes::OVERLOAD
                && let Subject::Node { node } = f.subject
                && let Some(rate) = round.present(node).map(|n| n.entries_per_second)
            {
                let knee = self.knees.entry(node).or_insert(Knee {
                    entries_per_second: rate,
                    since_unix_ms: e.since_unix_ms,
                });
                if knee.since_unix_ms != e.since_unix_ms {
                    // A new episode: the older knee is history.
                    *knee = Knee {
                        entries_per_second: rate,
                        since_unix_ms: e.since_unix_ms,
                    };
                }
                knee.entries_per_second = knee.entries_per_second.max(rate);
            }
            still.insert(key, e);
        }
        for (_, mut e) in std::mem::replace(&mut self.active, still) {
            e.ended_unix_ms = Some(at);
            if self.ended.len() == EPISODE_LIMIT {
                self.ended.pop_front();
            }
            self.ended.push_back(e);
        }
    }

    /// Verdict changes, oldest first.
    pub fn verdicts(&self) -> impl DoubleEndedIterator<Item = &VerdictChange> {
        self.verdicts.iter()
    }

    /// Episodes that overlap `[start, end]`, oldest first.
    pub fn episodes(&self, start: u64, end: u64) -> Vec<FindingEpisode> {
        let mut out: Vec<FindingEpisode> = self
            .ended
            .iter()
            .chain(self.active.values())
            .filter(|e| e.since_unix_ms <= end && e.ended_unix_ms.is_none_or(|x| x >= start))
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            a.since_unix_ms
                .cmp(&b.since_unix_ms)
                .then_with(|| a.code.cmp(&b.code))
                .then_with(|| a.subject.cmp(&b.subject))
        });
        out
    }

    /// Each node's last measured knee.
    pub fn knees(&self) -> &BTreeMap<u64, Knee> {
        &self.knees
    }
}
