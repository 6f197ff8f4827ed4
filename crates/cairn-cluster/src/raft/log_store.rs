//! TEMPORARY type-check stub; replaced by the real log store.
#![allow(unused, clippy::all)]
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::Arc;

use cairn_storage::{DataDir, LogConfig, PartitionLog};
use openraft::storage::{
    LogFlushed, LogState, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine,
    Snapshot, SnapshotMeta,
};
use openraft::{Entry, LogId, OptionalSend, RaftTypeConfig, StorageError, StoredMembership, Vote};

use super::types::{Appended, NodeInfo, PartitionRaftConfig};

#[derive(Debug, Clone)]
pub struct ReplicaState;
impl ReplicaState {
    pub fn committed_end(&self) -> u64 {
        0
    }
}

pub struct LogStore<C> {
    p: std::marker::PhantomData<C>,
    log: PartitionLog,
}
impl<C> Debug for LogStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Ok(())
    }
}
impl<C> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        todo!()
    }
}
impl<C: RaftTypeConfig> LogStore<C> {
    pub fn open(
        d: &Arc<DataDir>,
        dir: &str,
        c: LogConfig,
    ) -> Result<Self, cairn_storage::StorageError> {
        todo!()
    }
    pub fn partition_log(&self) -> PartitionLog {
        self.log.clone()
    }
}
impl<C: RaftTypeConfig<NodeId = u64>> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<u64>> {
        todo!()
    }
}
impl<C: RaftTypeConfig<NodeId = u64>> RaftLogStorage<C> for LogStore<C> {
    type LogReader = Self;
    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<u64>> {
        todo!()
    }
    async fn get_log_reader(&mut self) -> Self::LogReader {
        todo!()
    }
    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        todo!()
    }
    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        todo!()
    }
    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        todo!()
    }
    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        todo!()
    }
    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        todo!()
    }
}
pub struct PartitionStateMachine;
impl PartitionStateMachine {
    pub fn new(l: &LogStore<PartitionRaftConfig>) -> Self {
        todo!()
    }
    pub fn replica_state(&self) -> ReplicaState {
        todo!()
    }
}
impl RaftSnapshotBuilder<PartitionRaftConfig> for PartitionStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<PartitionRaftConfig>, StorageError<u64>> {
        todo!()
    }
}
impl RaftStateMachine<PartitionRaftConfig> for PartitionStateMachine {
    type SnapshotBuilder = Self;
    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, NodeInfo>), StorageError<u64>> {
        todo!()
    }
    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Appended>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<PartitionRaftConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        todo!()
    }
    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        todo!()
    }
    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        todo!()
    }
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, NodeInfo>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        todo!()
    }
    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<PartitionRaftConfig>>, StorageError<u64>> {
        todo!()
    }
}
