//! The partition state machine: since the Raft log is the data, applying is
//! bookkeeping.
//!
//! Applying a data entry answers where its entries landed
//! ([`Appended`] from the stored batch header: the base offset the log
//! assigned, and the count) and advances the **applied end offset**, the
//! exclusive upper bound of committed, readable entry offsets. Blank and
//! membership entries answer `count = 0` at the current end. The applied end
//! is published through [`ReplicaState`]; readers serve offsets below it
//! only, so they never see an entry a leader change could take back.
//!
//! The last applied log id, the last membership and the applied end are
//! kept in `raft.json` beside the committed id (written lazily, see
//! [`super::meta`]), so a restart does not re-read the whole log: openraft
//! re-applies from the recorded applied id up to the committed one.
//!
//! # Retention cuts
//! A `Cut(id)` entry (the leader's retention decision, see
//! `cluster::retention`) records `id` as the **cut**: on every replica, the
//! entries up to and including it are to go. Applying it only records it;
//! each replica's retention driver then has openraft snapshot and purge up
//! to it, and the log store purges the data log no further than the cut.
//!
//! # Snapshots
//! A snapshot's bytes are metadata only ([`SnapshotSummary`]: last applied
//! id, membership, applied end offset and the cut), postcard-encoded, and
//! the current snapshot is rebuilt from the applied state whenever it is
//! asked for, so it always names the latest cut. Its
//! **data** is the log itself, entries `cut + 1 ..= last applied`, which a
//! leader already holds. A follower that is sent a snapshot (it lacks
//! entries the leader purged) first fetches that range from the leader
//! into a staged log beside its own (`cluster::catchup`; chunked,
//! rate-limited, checksummed, resumable) and only then lets openraft
//! install the snapshot; installing moves the staged segments into the
//! log ([`cairn_storage::PartitionLog::install`]). A follower whose log
//! already holds the range (its last applied entry is there with the same
//! term) only purges up to the cut.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_types::batch::BatchHeader;
use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, StorageError,
    StorageIOError, StoredMembership,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use cairn_storage::{EntryId, InstallMode, PartitionLog};

use super::log_store::{LogStore, entry_id};
use super::meta::MetaFile;
use super::types::{Appended, NodeInfo, PartitionPayload, PartitionRaftConfig};

type C = PartitionRaftConfig;

/// What readers of a replica need from its state machine: the end of the
/// committed entries.
#[derive(Debug)]
pub struct ReplicaState {
    applied_end_offset: watch::Sender<u64>,
    /// The retention cut applied here (see the module docs).
    cut: Mutex<Option<LogId<u64>>>,
}

impl ReplicaState {
    pub fn new(applied_end_offset: u64) -> Arc<ReplicaState> {
        Arc::new(ReplicaState {
            applied_end_offset: watch::Sender::new(applied_end_offset),
            cut: Mutex::new(None),
        })
    }

    /// The last entry retention cut on this replica, as applied.
    pub fn cut(&self) -> Option<LogId<u64>> {
        *self.cut.lock()
    }

    /// The first Raft index retention keeps (0 before any cut).
    pub fn log_start_index(&self) -> u64 {
        self.cut().map_or(0, |c| c.index + 1)
    }

    /// Exclusive upper bound of committed (readable) entry offsets.
    pub fn applied_end_offset(&self) -> u64 {
        *self.applied_end_offset.borrow()
    }

    /// Notified whenever the applied end moves (e.g. for long polls).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied_end_offset.subscribe()
    }

    fn publish(&self, end: u64) {
        self.applied_end_offset.send_if_modified(|cur| {
            let changed = *cur != end;
            *cur = end;
            changed
        });
    }
}

/// What a snapshot's bytes hold (its data is the log; see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSummary {
    pub last_applied: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, NodeInfo>,
    pub applied_end_offset: u64,
    /// Entries up to and including this one are not part of the snapshot.
    pub cut: Option<LogId<u64>>,
    /// The first index of the snapshot's data: the sender's log start when
    /// it built the snapshot. `None` from a node that predates the field;
    /// its snapshots carry data only after a cut.
    pub data_start: Option<u64>,
}

/// Leads an encoded summary that has `data_start`. An older node's
/// summary starts with an `Option` tag (0 or 1) instead, and an older node
/// fails to decode this one: it refuses such a snapshot rather than
/// install it as metadata only (which would leave an empty replica
/// believing it holds the data).
const SUMMARY_V2: u8 = 0xC2;

/// A summary as nodes before `data_start` encode it.
#[derive(Deserialize)]
struct SummaryV1 {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, NodeInfo>,
    applied_end_offset: u64,
    cut: Option<LogId<u64>>,
}

impl SnapshotSummary {
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_extend(self, vec![SUMMARY_V2])
    }

    pub fn decode(bytes: &[u8]) -> Result<SnapshotSummary, postcard::Error> {
        match bytes.split_first() {
            Some((&SUMMARY_V2, rest)) => postcard::from_bytes(rest),
            _ => {
                let v1: SummaryV1 = postcard::from_bytes(bytes)?;
                Ok(SnapshotSummary {
                    last_applied: v1.last_applied,
                    membership: v1.membership,
                    applied_end_offset: v1.applied_end_offset,
                    cut: v1.cut,
                    data_start: None,
                })
            }
        }
    }

    /// The first index of the snapshot's data, if it carries any: where
    /// the sender's log started, or else the entry after the cut.
    pub fn data_first_index(&self) -> Option<u64> {
        self.data_start.or(self.cut.map(|c| c.index + 1))
    }
}

type SnapshotState = SnapshotSummary;

/// Where a partition replica whose log is in `log_dir` stages a snapshot's
/// data before installing it.
pub fn staging_dir(log_dir: &Path) -> PathBuf {
    let mut name = log_dir.file_name().unwrap_or_default().to_os_string();
    name.push(".snap");
    log_dir.with_file_name(name)
}

/// In a staged log that continues the replica's own log rather than
/// replacing it: the live log's last entry the staged entries follow.
const APPEND_MARKER: &str = "after.json";

/// Records that the log staged in `staged` continues the replica's log
/// after `after` (written before the first entry is fetched).
pub fn mark_staged_append(
    staged: &Path,
    after: EntryId,
) -> Result<(), cairn_storage::StorageError> {
    let json = serde_json::to_vec(&after).expect("EntryId serializes");
    cairn_storage::atomic_write(&staged.join(APPEND_MARKER), &json)
}

/// The entry the log staged in `staged` continues after, if it was staged
/// to be appended (see [`mark_staged_append`]).
pub fn staged_append_after(staged: &Path) -> Option<EntryId> {
    let raw = std::fs::read(staged.join(APPEND_MARKER)).ok()?;
    serde_json::from_slice(&raw).ok()
}

#[derive(Debug, Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, NodeInfo>,
    data: Vec<u8>,
}

/// The state machine of a partition group. See the module docs.
#[derive(Debug)]
pub struct PartitionStateMachine {
    meta: Arc<MetaFile>,
    log: PartitionLog,
    replica: Arc<ReplicaState>,
    state: SnapshotState,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
    /// Whether snapshots name their data's start (the log store keeps the
    /// data past openraft's purge). Without it — openraft's storage suite —
    /// a snapshot is metadata only unless it has a cut.
    data_outlives_purge: bool,
}

impl PartitionStateMachine {
    /// The state machine of the partition whose log `store` is; it shares the
    /// store's `raft.json` and starts from the applied state recorded there.
    pub fn new(store: &LogStore<C>) -> PartitionStateMachine {
        let meta = store.meta().clone();
        let m = meta.get();
        let replica = ReplicaState::new(m.applied_end_offset);
        *replica.cut.lock() = m.cut;
        PartitionStateMachine {
            replica,
            state: SnapshotState {
                last_applied: m.last_applied,
                membership: m.membership,
                applied_end_offset: m.applied_end_offset,
                cut: m.cut,
                data_start: None,
            },
            meta,
            log: store.log().clone(),
            current: Arc::new(Mutex::new(None)),
            data_outlives_purge: store.data_follows_cut(),
        }
    }

    /// The replica's published state, for readers.
    pub fn replica_state(&self) -> Arc<ReplicaState> {
        self.replica.clone()
    }

    fn record(&self) -> bool {
        let s = self.state.clone();
        self.meta.update(|m| {
            m.last_applied = s.last_applied;
            m.membership = s.membership;
            m.applied_end_offset = s.applied_end_offset;
            m.cut = s.cut;
        })
    }
}

impl PartitionStateMachine {
    /// Makes the log hold the snapshot's data, its entries from
    /// `summary.data_first_index()` up to its last one: already there, or
    /// moved in from the staged log (appended after the live log, or
    /// replacing it; `cluster::catchup` staged it and chose which).
    async fn install_data(
        &mut self,
        meta: &SnapshotMeta<u64, NodeInfo>,
        summary: &SnapshotSummary,
    ) -> Result<(), StorageError<u64>> {
        let (Some(last), Some(first)) = (meta.last_log_id, summary.data_first_index()) else {
            return Ok(());
        };
        let cut = summary.cut.as_ref().map(entry_id);
        if holds_range(&self.log, first, last) {
            if let Some(cut) = cut {
                self.log.purge(cut).await.map_err(sm_err)?;
            }
            return Ok(());
        }
        let staged = staging_dir(self.log.dir());
        match staged_append_after(&staged) {
            Some(after) => {
                self.log
                    .install(staged.clone(), InstallMode::Append { after })
                    .await
                    .map_err(sm_err)?;
                if let Some(cut) = cut {
                    self.log.purge(cut).await.map_err(sm_err)?;
                }
            }
            None => {
                self.log
                    .install(staged.clone(), InstallMode::Replace { purged: cut })
                    .await
                    .map_err(sm_err)?;
            }
        }
        // The staged directory holds no segment now.
        let _ = std::fs::remove_dir_all(&staged);
        Ok(())
    }
}

/// Whether `log` holds a snapshot's data already: the snapshot's last
/// entry with the same term, and everything from `first` on.
pub fn holds_range(log: &PartitionLog, first: u64, last: LogId<u64>) -> bool {
    let (start, _) = log.index_bounds();
    start <= first
        && log
            .read_index_range(last.index..last.index + 1, 1)
            .ok()
            .and_then(|b| b.first().map(|b| b.term() == last.leader_id.term))
            .unwrap_or(false)
}

fn sm_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_state_machine(AnyError::error(e.to_string())).into()
}

/// Builds snapshots from a copy of the applied state.
#[derive(Debug)]
pub struct PartitionSnapshotBuilder {
    state: SnapshotState,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
    /// The log, to name the data's start; `None`: metadata only.
    log: Option<PartitionLog>,
}

impl RaftSnapshotBuilder<C> for PartitionSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<C>, StorageError<u64>> {
        // The data starts where this log does now (after the cut, once
        // the data log is purged to it).
        let after_cut = self.state.cut.map_or(0, |c| c.index + 1);
        self.state.data_start = self
            .log
            .as_ref()
            .map(|log| log.index_bounds().0.max(after_cut));
        let data = self.state.encode().map_err(sm_err)?;
        let snapshot_id = match &self.state.last_applied {
            Some(id) => format!(
                "{}-{}-{}",
                id.leader_id.term, id.index, self.state.applied_end_offset
            ),
            None => format!("none-{}", self.state.applied_end_offset),
        };
        let meta = SnapshotMeta {
            last_log_id: self.state.last_applied,
            last_membership: self.state.membership.clone(),
            snapshot_id,
        };
        *self.current.lock() = Some(StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        });
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<C> for PartitionStateMachine {
    type SnapshotBuilder = PartitionSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, NodeInfo>), StorageError<u64>> {
        Ok((self.state.last_applied, self.state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Appended>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        for entry in entries {
            let end = self.state.applied_end_offset;
            let reply = match &entry.payload {
                EntryPayload::Normal(PartitionPayload::Cut(cut)) => {
                    if self.state.cut.is_none_or(|c| c.index < cut.index) {
                        self.state.cut = Some(*cut);
                        *self.replica.cut.lock() = Some(*cut);
                    }
                    Appended {
                        base_offset: end,
                        count: 0,
                    }
                }
                EntryPayload::Normal(PartitionPayload::Batch(batch)) => {
                    // The stored batch carries the offsets the log assigned.
                    let header = BatchHeader::parse(batch).map_err(sm_err)?;
                    self.state.applied_end_offset = end.max(header.next_offset());
                    Appended {
                        base_offset: header.base_offset,
                        count: header.count,
                    }
                }
                EntryPayload::Blank => Appended {
                    base_offset: end,
                    count: 0,
                },
                EntryPayload::Membership(m) => {
                    self.state.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    Appended {
                        base_offset: end,
                        count: 0,
                    }
                }
            };
            self.state.last_applied = Some(entry.log_id);
            replies.push(reply);
        }
        self.replica.publish(self.state.applied_end_offset);
        if self.record() {
            // A hint: the replies need not wait for it (see `meta`).
            self.meta.flush_in_background();
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        PartitionSnapshotBuilder {
            state: self.state.clone(),
            current: self.current.clone(),
            log: self.data_outlives_purge.then(|| self.log.clone()),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, NodeInfo>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let data = snapshot.into_inner();
        let decoded = SnapshotSummary::decode(&data).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), AnyError::error(e.to_string()))
        })?;
        self.install_data(meta, &decoded).await?;
        // The metadata openraft hands over is authoritative for the log
        // position; the data adds the offset bound and the cut.
        self.state = SnapshotState {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            applied_end_offset: decoded.applied_end_offset,
            cut: decoded.cut.max(self.state.cut),
            data_start: None,
        };
        *self.replica.cut.lock() = self.state.cut;
        self.replica.publish(self.state.applied_end_offset);
        self.record();
        self.meta.flush().await.map_err(sm_err)?;
        *self.current.lock() = Some(StoredSnapshot {
            meta: meta.clone(),
            data,
        });
        Ok(())
    }

    /// Once a snapshot exists, the current one is rebuilt from the applied
    /// state on every call (it is metadata only): a snapshot sent to a
    /// follower then names the latest cut, whose data the leader still
    /// holds, never an older cut whose entries it has purged since.
    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<C>>, StorageError<u64>> {
        if self.current.lock().is_none() || self.state.last_applied.is_none() {
            return Ok(self.current.lock().clone().map(|s| Snapshot {
                meta: s.meta,
                snapshot: Box::new(Cursor::new(s.data)),
            }));
        }
        self.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn summary(data_start: Option<u64>) -> SnapshotSummary {
        SnapshotSummary {
            last_applied: Some(LogId::new(CommittedLeaderId::new(3, 1), 40)),
            membership: StoredMembership::default(),
            applied_end_offset: 400,
            cut: Some(LogId::new(CommittedLeaderId::new(2, 1), 19)),
            data_start,
        }
    }

    #[test]
    fn a_summary_round_trips_and_an_older_nodes_summary_still_decodes() {
        let new = summary(Some(20));
        assert_eq!(
            SnapshotSummary::decode(&new.encode().unwrap()).unwrap(),
            new
        );
        assert_eq!(new.data_first_index(), Some(20));

        // What a node before `data_start` sends: the plain postcard of
        // the four fields.
        let old = postcard::to_allocvec(&(
            new.last_applied,
            &new.membership,
            new.applied_end_offset,
            new.cut,
        ))
        .unwrap();
        let decoded = SnapshotSummary::decode(&old).unwrap();
        assert_eq!(decoded, summary(None));
        // Its data starts after the cut, and without a cut it has none.
        assert_eq!(decoded.data_first_index(), Some(20));
        let no_cut = SnapshotSummary {
            cut: None,
            ..summary(None)
        };
        assert_eq!(no_cut.data_first_index(), None);
    }

    #[test]
    fn an_older_node_cannot_mistake_a_new_summary_for_its_own() {
        // An older node decodes with the four-field layout: the version
        // byte is not an `Option` tag, so it refuses the snapshot rather
        // than install it as metadata only.
        let bytes = summary(Some(0)).encode().unwrap();
        let as_old: Result<SummaryV1, _> = postcard::from_bytes(&bytes);
        assert!(as_old.is_err());
    }
}
