//! The controller group's Raft as a replaceable part of the runtime: one
//! way to open it (log, state from `controller.json`, network, Raft core,
//! leadership duties), used at start and when its core stopped on an
//! error and is restarted in place from disk (see the module docs).

use super::*;

/// The controller's group id on the transport, and its key among the
/// restart backoffs of groups (partition groups never have id 0).
pub(super) const CONTROLLER_GROUP: u64 = 0;

/// The live parts of the controller group; a restart replaces them whole.
pub(super) struct ControllerGroup {
    pub(super) raft: Raft<ControllerRaftConfig>,
    /// Its log on disk (the last log id, for pre-votes).
    pub(super) log: cairn_storage::PartitionLog,
    meta: Arc<crate::raft::MetaFile>,
    /// Ends this incarnation's leadership task.
    duties: CancellationToken,
    /// The core was shut down and the log closed: a restart that could not
    /// reopen them yet (tried again on the next reconcile).
    closed: bool,
}

/// What opening the controller group takes from the runtime.
pub(super) struct ControllerDeps<'a> {
    pub(super) node_id: NodeId,
    pub(super) data_dir: &'a Arc<DataDir>,
    pub(super) raft_config: &'a Arc<openraft::Config>,
    pub(super) transport: &'a Network,
    pub(super) replication_stats: &'a Arc<network::ReplicationStats>,
    pub(super) timings: &'a Arc<crate::raft::RaftTimings>,
    pub(super) shutdown: &'a CancellationToken,
}

impl ControllerGroup {
    /// Opens the controller's log (`controller/log`) and state and starts
    /// its Raft core and leadership duties. `restarted`: the state machine
    /// of a core that stopped, whose state is reread from disk into the
    /// same channel (its subscribers keep listening); `None` at start. Also
    /// returns the state machine.
    pub(super) async fn open(
        deps: ControllerDeps<'_>,
        restarted: Option<&ControllerStateMachine>,
    ) -> Result<(ControllerGroup, ControllerStateMachine), ClusterError> {
        let dir = deps.data_dir.path().join("controller");
        std::fs::create_dir_all(&dir).map_err(storage_err)?;
        let sm = match restarted {
            None => ControllerStateMachine::open(dir.join("controller.json")),
            Some(sm) => sm.reopen(),
        }
        .map_err(storage_err)?;
        let log_store = LogStore::<ControllerRaftConfig>::open(
            deps.data_dir,
            "controller/log",
            cairn_storage::LogConfig {
                // Small segments, so compaction frees space soon.
                segment_bytes: CONTROLLER_SEGMENT_BYTES,
                ..cairn_storage::LogConfig::default()
            },
            LogStoreOptions::default(),
        )
        .map_err(storage_err)?;
        let network = GroupNetworkFactory::new(
            deps.transport.clone(),
            CONTROLLER_GROUP,
            deps.replication_stats.clone(),
        )
        .with_timings(deps.timings.clone());
        let hints = network.election_hints();
        let log = log_store.log().clone();
        let meta = log_store.meta().clone();
        let raft = match Raft::new(
            deps.node_id,
            deps.raft_config.clone(),
            network,
            log_store,
            sm.clone(),
        )
        .await
        {
            Ok(raft) => raft,
            Err(e) => {
                // Closed, so the next attempt can open it again.
                let (data_dir, log) = (deps.data_dir.clone(), log.clone());
                let _ = tokio::task::spawn_blocking(move || data_dir.close_log(&log)).await;
                return Err(ClusterError::Storage(format!("start the controller: {e}")));
            }
        };
        let duties = deps.shutdown.child_token();
        leadership::spawn(
            raft.clone(),
            leadership::Duties {
                timings: deps.timings.clone(),
                hints,
                last_log: {
                    let log = log.clone();
                    leadership::LastLog::new(move || log.last_entry().map(raft_log_id))
                },
                transport: deps.transport.clone(),
                group: CONTROLLER_GROUP,
                name: error::GroupName::CONTROLLER.to_string(),
            },
            duties.clone(),
        );
        let group = ControllerGroup {
            raft,
            log,
            meta,
            duties,
            closed: false,
        };
        Ok((group, sm))
    }
}

/// The error a Raft core stopped on, unless it is running or was shut down.
pub(super) fn stopped_on_error<C: openraft::RaftTypeConfig>(raft: &Raft<C>) -> Option<String> {
    let metrics = raft.metrics();
    let state = &metrics.borrow().running_state;
    match state {
        Err(openraft::error::Fatal::Stopped) | Ok(()) => None,
        Err(e) => Some(e.to_string()),
    }
}

impl Inner {
    /// The controller's Raft as it runs now (a restart replaces it).
    pub(super) fn controller(&self) -> Raft<ControllerRaftConfig> {
        self.controller_group.read().raft.clone()
    }

    /// The controller's log as open now.
    pub(super) fn controller_log(&self) -> cairn_storage::PartitionLog {
        self.controller_group.read().log.clone()
    }

    pub(super) fn controller_deps(&self) -> ControllerDeps<'_> {
        ControllerDeps {
            node_id: self.me(),
            data_dir: &self.data_dir,
            raft_config: &self.controller_raft_config,
            transport: &self.transport,
            replication_stats: &self.replication_stats,
            timings: &self.timings,
            shutdown: &self.shutdown,
        }
    }
}

impl Cluster {
    /// Restarts the controller from disk if its Raft core stopped on an
    /// error, with the backoff of partition groups (`Replicas::may_restart`);
    /// retries (every call) a restart that could not reopen it yet.
    pub(super) async fn restart_failed_controller(&self) {
        // Not two restarts at once, nor one beside shutdown's stop.
        let _one_at_a_time = self.inner.controller_restart.lock().await;
        if self.inner.shutdown.is_cancelled() {
            return;
        }
        let (closed, error) = {
            let c = self.inner.controller_group.read();
            (c.closed, stopped_on_error(&c.raft))
        };
        if !closed {
            let Some(error) = error else { return };
            if !self.inner.replicas.may_restart(CONTROLLER_GROUP) {
                return;
            }
            tracing::error!(
                %error,
                "the controller's Raft stopped on an error; restarting it from its log on disk"
            );
            self.stop_controller().await;
            self.inner
                .controller_restarts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let restarted = ControllerGroup::open(
            self.inner.controller_deps(),
            Some(&self.inner.controller_sm),
        )
        .await;
        match restarted {
            Ok((group, _)) => *self.inner.controller_group.write() = group,
            Err(e) => tracing::warn!(error = %e, "could not restart the controller; will retry"),
        }
    }

    /// Stops the controller's Raft core and leadership duties, writes its
    /// `raft.json` and closes its log (which a reopen needs: a log is open
    /// once at a time). Callers hold `controller_restart`.
    pub(super) async fn stop_controller(&self) {
        let (raft, log, meta, duties) = {
            let mut c = self.inner.controller_group.write();
            if c.closed {
                return;
            }
            c.closed = true;
            (
                c.raft.clone(),
                c.log.clone(),
                c.meta.clone(),
                c.duties.clone(),
            )
        };
        duties.cancel();
        if let Err(e) = raft.shutdown().await {
            tracing::warn!(error = %e, "controller raft shutdown");
        }
        if let Err(e) = meta.flush().await {
            tracing::warn!(error = %e, "writing the controller's raft.json");
        }
        self.finish_log(CONTROLLER_GROUP, log, false).await;
    }
}
