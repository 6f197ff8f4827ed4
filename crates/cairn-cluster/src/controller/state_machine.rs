//! Group 0's state machine: [`ClusterMeta`] in memory, written whole to
//! `controller.json` (atomically) after every applied batch of commands.
//!
//! Metadata is small and changes rarely (streams, nodes), so rewriting it
//! on every apply costs nothing measurable, and a restarted node has its
//! cluster view at once — before the controller group has a leader —
//! which the node needs to reopen its partition groups.
//!
//! When the controller's Raft core is restarted in place (after it stopped
//! on a storage error), the state is reread from `controller.json`
//! ([`ControllerStateMachine::reopen`]) into the same shared state and
//! channel, so subscribers keep listening; the stopped core's handles are
//! fenced off, since openraft does not wait for its state-machine worker
//! and a late apply from it would apply entries the new core applies again.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{AnyError, EntryPayload, LogId, StorageError, StorageIOError, StoredMembership};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::ControllerRaftConfig;
use super::meta::{ClusterMeta, ControllerResponse};
use crate::raft::types::NodeInfo;
use crate::transport::NodeId;

type Membership = StoredMembership<NodeId, NodeInfo>;

/// What `controller.json` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ControllerState {
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: Membership,
    pub meta: ClusterMeta,
}

/// The controller's state machine; clones share the state.
#[derive(Debug, Clone)]
pub struct ControllerStateMachine {
    path: PathBuf,
    state: Arc<parking_lot::Mutex<ControllerState>>,
    published: watch::Sender<Arc<ClusterMeta>>,
    /// Bumped by each [`ControllerStateMachine::reopen`] (under the state
    /// lock); a handle whose `epoch` is behind it may no longer write.
    current_epoch: Arc<AtomicU64>,
    epoch: u64,
}

fn io_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageError::IO {
        source: StorageIOError::write_state_machine(AnyError::new(&e)),
    }
}

impl ControllerStateMachine {
    /// Opens (or starts) the state kept at `path`.
    pub fn open(path: PathBuf) -> std::io::Result<Self> {
        let state = Self::read(&path)?;
        let (published, _) = watch::channel(Arc::new(state.meta.clone()));
        Ok(Self {
            path,
            state: Arc::new(parking_lot::Mutex::new(state)),
            published,
            current_epoch: Arc::default(),
            epoch: 0,
        })
    }

    fn read(path: &PathBuf) -> std::io::Result<ControllerState> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ControllerState::default()),
            Err(e) => Err(e),
        }
    }

    /// Rereads the state from disk, for a restarted Raft core: the returned
    /// handle shares the state and channel of this one, and every earlier
    /// handle (the stopped core's) fails from now on instead of writing.
    pub fn reopen(&self) -> std::io::Result<Self> {
        let state = Self::read(&self.path)?;
        let mut shared = self.state.lock();
        let epoch = self.current_epoch.fetch_add(1, Ordering::Relaxed) + 1;
        self.published.send_replace(Arc::new(state.meta.clone()));
        *shared = state;
        Ok(Self {
            epoch,
            ..self.clone()
        })
    }

    /// The metadata as last applied; changes are announced on the channel.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterMeta>> {
        self.published.subscribe()
    }

    pub fn meta(&self) -> Arc<ClusterMeta> {
        self.published.borrow().clone()
    }

    /// Writes `state` and makes it current, unless a restart superseded
    /// this handle. The lock is held throughout so a reopen cannot slip in
    /// between the check and the write.
    fn commit(&self, state: ControllerState) -> std::io::Result<()> {
        let mut shared = self.state.lock();
        if self.epoch != self.current_epoch.load(Ordering::Relaxed) {
            return Err(std::io::Error::other(
                "the controller's Raft core was restarted; this one may no longer write",
            ));
        }
        self.persist(&state)?;
        *shared = state;
        Ok(())
    }

    fn persist(&self, state: &ControllerState) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
        cairn_storage::fsutil::atomic_write(&self.path, &bytes).map_err(std::io::Error::other)?;
        self.published.send_replace(Arc::new(state.meta.clone()));
        Ok(())
    }
}

impl RaftSnapshotBuilder<ControllerRaftConfig> for ControllerStateMachine {
    async fn build_snapshot(
        &mut self,
    ) -> Result<Snapshot<ControllerRaftConfig>, StorageError<NodeId>> {
        let state = self.state.lock().clone();
        let data = serde_json::to_vec(&state.meta).map_err(io_err)?;
        let snapshot_id = match &state.last_applied {
            Some(id) => format!("{}-{}", id.leader_id, id.index),
            None => "empty".to_owned(),
        };
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_log_id: state.last_applied,
                last_membership: state.membership,
                snapshot_id,
            },
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<ControllerRaftConfig> for ControllerStateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, Membership), StorageError<NodeId>> {
        let s = self.state.lock();
        Ok((s.last_applied, s.membership.clone()))
    }

    async fn apply<I>(
        &mut self,
        entries: I,
    ) -> Result<Vec<ControllerResponse>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = openraft::Entry<ControllerRaftConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut state = self.state.lock().clone();
        let mut out = Vec::new();
        for entry in entries {
            state.last_applied = Some(entry.log_id);
            out.push(match entry.payload {
                EntryPayload::Blank => ControllerResponse::Ok,
                EntryPayload::Normal(cmd) => state.meta.apply(cmd),
                EntryPayload::Membership(m) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), m);
                    ControllerResponse::Ok
                }
            });
        }
        self.commit(state).map_err(io_err)?;
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let cluster: ClusterMeta = serde_json::from_slice(snapshot.get_ref()).map_err(io_err)?;
        let state = ControllerState {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            meta: cluster,
        };
        self.commit(state).map_err(io_err)?;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<ControllerRaftConfig>>, StorageError<NodeId>> {
        Ok(Some(self.build_snapshot().await?))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry};

    use super::*;
    use crate::controller::ControllerCommand;

    fn register(index: u64, id: NodeId) -> Entry<ControllerRaftConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(ControllerCommand::RegisterNode {
                id,
                info: NodeInfo {
                    raft_addr: format!("127.0.0.1:{id}"),
                    http_addr: String::new(),
                },
            }),
        }
    }

    #[tokio::test]
    async fn reopen_rereads_the_file_keeps_subscribers_and_fences_old_handles() {
        let dir = tempfile::tempdir().unwrap();
        let mut old = ControllerStateMachine::open(dir.path().join("controller.json")).unwrap();
        let mut rx = old.subscribe();
        old.apply([register(1, 1)]).await.unwrap();

        let mut new = old.reopen().unwrap();
        assert!(rx.borrow_and_update().nodes.contains_key(&1));
        assert_eq!(
            new.applied_state().await.unwrap().0.map(|l| l.index),
            Some(1)
        );

        // The stopped core's late apply neither writes nor publishes.
        assert!(old.apply([register(2, 2)]).await.is_err());
        assert!(!old.meta().nodes.contains_key(&2));

        new.apply([register(2, 2)]).await.unwrap();
        assert!(rx.has_changed().unwrap());
        assert!(rx.borrow_and_update().nodes.contains_key(&2));
        let again = ControllerStateMachine::open(dir.path().join("controller.json")).unwrap();
        assert!(again.meta().nodes.contains_key(&2));
    }
}
