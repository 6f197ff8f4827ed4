//! Saved performance reports: one JSON file per report in the node's
//! `reports/` directory, named by its id (the window's end in ms since
//! the Unix epoch), the newest [`KEEP`] kept.
//!
//! The controller leader writes one every `--report-interval` over the
//! interval just past (see [`super::MonitorService`]); a node that loses
//! the leadership keeps its files, and the API lists the reports of the
//! node that answers (the leader's). Files are written whole to a temp
//! name and renamed, so a reader never sees half a report; a report is
//! not data, so there is no fsync.

use std::path::{Path, PathBuf};

use cairn_monitor::report::Report;
use serde::{Deserialize, Serialize};

/// Reports kept: a day at the default 5-minute interval.
pub const KEEP: usize = 288;

/// A saved report's line in the list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportEntry {
    pub id: String,
    pub start_unix_ms: u64,
    pub end_unix_ms: u64,
    pub status: cairn_monitor::Status,
    pub worst: cairn_monitor::Status,
    pub findings: usize,
}

#[derive(Debug, Clone)]
pub struct ReportStore {
    dir: PathBuf,
}

/// Ids are digits: anything else could name a file outside the directory.
fn valid(id: &str) -> bool {
    !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit())
}

impl ReportStore {
    pub fn new(dir: impl Into<PathBuf>) -> ReportStore {
        ReportStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes `r` and drops the oldest reports beyond [`KEEP`].
    pub fn save(&self, r: &Report) -> std::io::Result<()> {
        if !valid(&r.id) {
            return Err(std::io::Error::other(format!("bad report id {:?}", r.id)));
        }
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!(".{}.tmp", r.id));
        std::fs::write(&tmp, cairn_monitor::report::render::json(r))?;
        std::fs::rename(&tmp, self.path(&r.id))?;
        let ids = self.ids()?;
        for old in ids.iter().take(ids.len().saturating_sub(KEEP)) {
            let _ = std::fs::remove_file(self.path(&old.to_string()));
        }
        Ok(())
    }

    /// Saved ids, oldest first.
    fn ids(&self) -> std::io::Result<Vec<u64>> {
        let mut ids = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ids),
            Err(e) => return Err(e),
        };
        for e in entries {
            let name = e?.file_name();
            if let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .filter(|n| valid(n))
                .and_then(|n| n.parse().ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// The report `id`; `None` when there is none (or the id is not one).
    pub fn get(&self, id: &str) -> std::io::Result<Option<Report>> {
        if !valid(id) {
            return Ok(None);
        }
        match std::fs::read(self.path(id)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every saved report, newest first.
    pub fn list(&self) -> std::io::Result<Vec<ReportEntry>> {
        let mut out = Vec::new();
        for id in self.ids()?.into_iter().rev() {
            // A file removed between listing and reading is skipped.
            if let Some(r) = self.get(&id.to_string())? {
                out.push(ReportEntry {
                    id: r.id,
                    start_unix_ms: r.window.start_unix_ms,
                    end_unix_ms: r.window.end_unix_ms,
                    status: r.verdict.now,
                    worst: r.verdict.worst,
                    findings: r.findings.len(),
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_monitor::report::{ReportInput, build};
    use cairn_monitor::{Monitor, MonitorConfig};

    fn report(id: u64) -> Report {
        build(
            &Monitor::new(MonitorConfig::default()),
            ReportInput {
                id: id.to_string(),
                end_unix_ms: id,
                window_ms: 300_000,
                actions: Vec::new(),
            },
        )
    }

    #[test]
    fn given_more_than_keep_reports_when_saved_should_keep_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReportStore::new(dir.path().join("reports"));
        assert!(store.list().unwrap().is_empty(), "no directory yet");
        for id in 1..=(KEEP as u64 + 3) {
            store.save(&report(1_000_000 + id)).unwrap();
        }
        let list = store.list().unwrap();
        assert_eq!(list.len(), KEEP);
        assert_eq!(list[0].id, (1_000_000 + KEEP as u64 + 3).to_string());
        assert_eq!(list[KEEP - 1].id, "1000004");
        assert!(store.get("1000001").unwrap().is_none(), "dropped");
        assert_eq!(store.get("1000010").unwrap().unwrap().id, "1000010");
        assert!(store.get("../../etc/passwd").unwrap().is_none());
    }
}
