//! openraft's storage conformance suite against the partition log store and
//! state machine, plus restart, truncation, purge, crash and cache tests.

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_cluster::raft::{
    Appended, LogStore, LogStoreOptions, PartitionPayload, PartitionRaftConfig,
    PartitionStateMachine,
};
use cairn_storage::{DataDir, DataDirOptions, LogConfig};
use cairn_types::{BatchBuilder, Entry as LogEntry, Level};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader, StorageError, Vote,
};

type C = PartitionRaftConfig;
type Store = LogStore<C>;

fn options() -> LogStoreOptions {
    LogStoreOptions::default()
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

struct Builder;

impl StoreBuilder<C, Store, PartitionStateMachine, (Arc<DataDir>, tempfile::TempDir)> for Builder {
    async fn build(
        &self,
    ) -> Result<
        (
            (Arc<DataDir>, tempfile::TempDir),
            Store,
            PartitionStateMachine,
        ),
        StorageError<u64>,
    > {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Arc::new(DataDir::open(tmp.path(), DataDirOptions::default()).unwrap());
        let store = Store::open(&dir, "p0", small_segments(), options()).unwrap();
        let sm = PartitionStateMachine::new(&store);
        Ok(((dir, tmp), store, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}

fn lid(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 0), index)
}

fn data_entry(term: u64, index: u64, n: usize) -> Entry<C> {
    let mut b = BatchBuilder::new();
    for i in 0..n {
        b.push(&LogEntry {
            timestamp_us: (index * 100 + i as u64) as i64,
            level: Level::Info,
            source: "t".into(),
            message: format!("e{index}-{i}-{}", "x".repeat(40)),
            attributes: BTreeMap::new(),
        })
        .unwrap();
    }
    Entry {
        log_id: lid(term, index),
        payload: EntryPayload::Normal(PartitionPayload::Batch(b.finish().as_bytes().clone())),
    }
}

fn blank(term: u64, index: u64) -> Entry<C> {
    Entry {
        log_id: lid(term, index),
        payload: EntryPayload::Blank,
    }
}

fn membership(term: u64, index: u64) -> Entry<C> {
    Entry {
        log_id: lid(term, index),
        payload: EntryPayload::Membership(Membership::new(
            vec![[1u64, 2, 3].into_iter().collect()],
            None,
        )),
    }
}

/// Appends through `RaftLogStorage::append` and waits for the flush
/// callback (openraft's own helper builds the `LogFlushed`).
async fn append(store: &mut Store, entries: Vec<Entry<C>>) {
    store.blocking_append(entries).await.unwrap();
}

fn open(tmp: &std::path::Path) -> (DataDir, Store) {
    let dir = DataDir::open(tmp, DataDirOptions::default()).unwrap();
    let store = Store::open(&dir, "p0", small_segments(), options()).unwrap();
    (dir, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_vote_log_and_applied_state() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (_dir, mut store) = open(tmp.path());
        let mut sm = PartitionStateMachine::new(&store);
        store.save_vote(&Vote::new(3, 1)).await.unwrap();
        let entries = vec![
            blank(1, 0),
            membership(1, 1),
            data_entry(1, 2, 3),
            data_entry(2, 3, 2),
        ];
        append(&mut store, entries.clone()).await;
        store.save_committed(Some(lid(2, 3))).await.unwrap();
        let applied = store.try_get_log_entries(0..4).await.unwrap();
        let replies = sm.apply(applied).await.unwrap();
        assert_eq!(
            replies,
            vec![
                Appended {
                    base_offset: 0,
                    count: 0
                },
                Appended {
                    base_offset: 0,
                    count: 0
                },
                Appended {
                    base_offset: 0,
                    count: 3
                },
                Appended {
                    base_offset: 3,
                    count: 2
                },
            ]
        );
        assert_eq!(sm.replica_state().applied_end_offset(), 5);
        store.flush_meta().await.unwrap();
    }
    let (_dir, mut store) = open(tmp.path());
    let mut sm = PartitionStateMachine::new(&store);
    assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
    assert_eq!(store.read_committed().await.unwrap(), Some(lid(2, 3)));
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(lid(2, 3)));
    let (applied, mem) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(lid(2, 3)));
    assert_eq!(mem.log_id(), &Some(lid(1, 1)));
    assert_eq!(sm.replica_state().applied_end_offset(), 5);
    let entries = store.try_get_log_entries(0..10).await.unwrap();
    assert_eq!(entries.len(), 4);
    assert!(matches!(entries[0].payload, EntryPayload::Blank));
    assert!(matches!(entries[1].payload, EntryPayload::Membership(_)));
    assert_eq!(store.log().bounds(), (0, 5));
}

fn ids(entries: &[Entry<C>]) -> Vec<(u64, u64)> {
    entries
        .iter()
        .map(|e| (e.log_id.leader_id.term, e.log_id.index))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_then_append_continues_offsets_from_the_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let (_dir, mut store) = open(tmp.path());
    let entries: Vec<_> = (0..80).map(|i| data_entry(1, i, 2)).collect();
    append(&mut store, entries).await;
    assert!(store.log().stats().segments > 2, "several segments");
    store.truncate(lid(1, 25)).await.unwrap();
    assert_eq!(
        store.get_log_state().await.unwrap().last_log_id,
        Some(lid(1, 24))
    );
    assert_eq!(store.log().bounds(), (0, 50));
    append(&mut store, vec![blank(2, 25), data_entry(2, 26, 3)]).await;
    let got = store.try_get_log_entries(20..).await.unwrap();
    assert_eq!(
        ids(&got),
        vec![
            (1, 20),
            (1, 21),
            (1, 22),
            (1, 23),
            (1, 24),
            (2, 25),
            (2, 26)
        ]
    );
    let EntryPayload::Normal(PartitionPayload::Batch(b)) = &got[6].payload else {
        panic!("data entry")
    };
    let h = cairn_types::batch::BatchHeader::parse(b).unwrap();
    assert_eq!(
        (h.base_offset, h.count, h.log_index, h.epoch),
        (50, 3, 26, 2)
    );
    // Truncating everything leaves an empty log that starts over.
    store.truncate(lid(1, 0)).await.unwrap();
    assert_eq!(store.get_log_state().await.unwrap().last_log_id, None);
    append(&mut store, vec![blank(3, 0)]).await;
    assert_eq!(
        ids(&store.try_get_log_entries(..).await.unwrap()),
        vec![(3, 0)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_deletes_whole_segments_and_survives_restart() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (_dir, mut store) = open(tmp.path());
        let entries: Vec<_> = (0..40).map(|i| data_entry(1, i, 2)).collect();
        append(&mut store, entries).await;
        let before = store.log().stats().segments;
        store.purge(lid(1, 30)).await.unwrap();
        assert!(store.log().stats().segments < before);
        let st = store.get_log_state().await.unwrap();
        assert_eq!(
            (st.last_purged_log_id, st.last_log_id),
            (Some(lid(1, 30)), Some(lid(1, 39)))
        );
        assert_eq!(
            store.try_get_log_entries(0..).await.unwrap()[0].log_id,
            lid(1, 31)
        );
    }
    let (_dir, mut store) = open(tmp.path());
    let st = store.get_log_state().await.unwrap();
    assert_eq!(
        (st.last_purged_log_id, st.last_log_id),
        (Some(lid(1, 30)), Some(lid(1, 39)))
    );
    assert_eq!(store.try_get_log_entries(0..).await.unwrap().len(), 9);
    // Purging past the end empties the log; it continues after the purge point.
    store.purge(lid(2, 50)).await.unwrap();
    append(&mut store, vec![data_entry(2, 51, 1)]).await;
    let got = store.try_get_log_entries(0..).await.unwrap();
    assert_eq!(ids(&got), vec![(2, 51)]);
    assert_eq!(
        store.log().bounds().1,
        81,
        "offsets continue across the purge"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_and_the_log_reopens_at_the_last_whole_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let len = {
        let (_dir, mut store) = open(tmp.path());
        append(&mut store, (0..5).map(|i| data_entry(1, i, 1)).collect()).await;
        store.log().stats().size_bytes
    };
    // Half a batch after the last one, as a crash mid-write leaves it.
    let seg = std::fs::read_dir(tmp.path().join("p0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .max()
        .unwrap();
    let torn = data_entry(1, 5, 1);
    let EntryPayload::Normal(PartitionPayload::Batch(b)) = &torn.payload else {
        unreachable!()
    };
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(&b[..b.len() / 2], len).unwrap();
    }
    let (_dir, mut store) = open(tmp.path());
    assert_eq!(
        store.get_log_state().await.unwrap().last_log_id,
        Some(lid(1, 4))
    );
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);
    append(&mut store, vec![data_entry(1, 5, 1)]).await;
    assert_eq!(store.try_get_log_entries(..).await.unwrap().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_cache_and_disk_reads_are_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::open(tmp.path(), DataDirOptions::default()).unwrap();
    // A small cache, so part of the range comes from each.
    let opts = LogStoreOptions {
        tail_cache_bytes: 2000,
        ..options()
    };
    let mut store = Store::open(&dir, "p0", small_segments(), opts).unwrap();
    let mut entries = vec![blank(1, 0), membership(1, 1)];
    entries.extend((2..60).map(|i| data_entry(1, i, 1 + (i as usize % 3))));
    append(&mut store, entries).await;
    let reader = store.reader();
    let mixed = reader.read(0, 60).unwrap();
    let disk = reader.read_from_disk(0, 60).unwrap();
    assert_eq!(mixed.len(), 60);
    assert_eq!(mixed, disk);
    assert_eq!(
        reader.read(55, 58).unwrap(),
        reader.read_from_disk(55, 58).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_small_appends_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let (_dir, mut store) = open(tmp.path());
    for i in 0..1000 {
        append(&mut store, vec![data_entry(1, i, 1)]).await;
    }
    assert_eq!(
        store.get_log_state().await.unwrap().last_log_id,
        Some(lid(1, 999))
    );
    assert_eq!(store.log().bounds(), (0, 1000));
}
