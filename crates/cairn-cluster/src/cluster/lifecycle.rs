//! Keeping this node's groups in step with the metadata: registering the
//! node, probing peers, and reconciling — restarting the controller or a
//! partition group whose Raft core stopped (with backoff), starting the
//! groups placed here, and stopping (and removing) groups moved away or
//! deleted; shutdown.

use super::*;

/// How long an initial replica other than the preferred leader waits for a
/// leader before initializing a new partition group itself.
pub(super) const INITIALIZE_FALLBACK: Duration = Duration::from_secs(2);

impl Cluster {
    pub(super) async fn register_self(self) {
        let info = NodeInfo {
            raft_addr: self.inner.raft_addr.clone(),
            http_addr: self.inner.config.http_advertise.clone(),
        };
        loop {
            if self.meta().nodes.get(&self.node_id()).map(|n| &n.info) == Some(&info) {
                return;
            }
            let cmd = ControllerCommand::RegisterNode {
                id: self.node_id(),
                info: info.clone(),
            };
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                r = self.propose(cmd) => match r {
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "registering with the controller; will retry"),
                },
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every 100 ms, a ping to each peer over the transport: the probes
    /// behind each link's round-trip histogram and slow score. A peer whose
    /// previous probe is still out is skipped (the probe then counts as
    /// failed when it times out), so a dead peer costs one task at a time.
    pub(super) async fn probe_loop(self) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let outstanding: Arc<parking_lot::Mutex<std::collections::HashSet<NodeId>>> =
            Arc::default();
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let me = self.node_id();
            let peers: Vec<NodeId> = self
                .meta()
                .nodes
                .keys()
                .copied()
                .filter(|n| *n != me)
                .collect();
            for peer in peers {
                if !outstanding.lock().insert(peer) {
                    continue;
                }
                let (transport, stats, outstanding) = (
                    self.inner.transport.clone(),
                    self.inner.replication_stats.peer(peer),
                    outstanding.clone(),
                );
                tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    let deadline = network::PEER_PROBE_TIMEOUT * 10;
                    let took = transport
                        .call(peer, 0, kinds::PING, Bytes::new(), deadline)
                        .await
                        .ok()
                        .map(|_| started.elapsed());
                    stats.record_probe(took);
                    outstanding.lock().remove(&peer);
                });
            }
        }
    }

    pub(super) fn sync_peers(&self, meta: &ClusterMeta) {
        let known = self.inner.transport.peers();
        for n in meta.nodes.values() {
            if let Ok(addr) = n.info.raft_addr.parse::<SocketAddr>()
                && known.get(&n.id).copied().flatten() != Some(addr)
            {
                self.inner.transport.set_peer(n.id, addr);
            }
        }
    }

    pub(super) async fn reconcile_loop(self) {
        let mut rx = self.subscribe();
        loop {
            // First: without a controller, no metadata change gets through.
            self.restart_failed_controller().await;
            let meta = rx.borrow_and_update().clone();
            self.sync_peers(&meta);
            self.reconcile(&meta).await;
            self.inner.clean_orphans(&meta).await;
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                r = rx.changed() => if r.is_err() { return },
                // Retry groups (and the controller) that failed to start.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    pub(super) async fn reconcile(&self, meta: &ClusterMeta) {
        let me = self.node_id();
        let mut wanted = HashMap::new();
        for (stream, partition, p) in meta.groups_of(me) {
            wanted.insert(p.group, (stream, partition, p));
        }
        // Coalescers of partitions that no longer exist.
        let existing: std::collections::HashSet<u64> = meta
            .streams
            .values()
            .flat_map(|s| s.partitions.iter().map(|p| p.group))
            .collect();
        self.inner.edges.lock().retain(|g, _| existing.contains(g));
        for group in self.inner.replicas.ids() {
            if !wanted.contains_key(&group) {
                self.stop_group(group, true).await;
            }
        }
        for (group, name, error) in self.inner.replicas.failed() {
            if self.inner.shutdown.is_cancelled() || !self.inner.replicas.may_restart(group) {
                continue;
            }
            tracing::error!(
                group = %name,
                %error,
                "the partition group's Raft stopped on an error; restarting it from its log on disk"
            );
            self.stop_group(group, false).await;
            self.inner.replicas.count_restart();
        }
        for (group, (stream, partition, p)) in wanted {
            if self.inner.replicas.is_running(group) {
                continue;
            }
            if let Err(e) = self.start_group(stream, partition, p).await {
                tracing::warn!(group, stream = %stream.name, partition, error = %e, "could not start partition group; will retry");
            }
        }
    }

    pub(super) async fn start_group(
        &self,
        stream: &StreamMeta,
        partition: u32,
        p: &PartitionMeta,
    ) -> Result<(), ClusterError> {
        let me = self.node_id();
        let dir = format!("groups/{:016x}", p.group);
        self.close_stalled(p.group, false).await;
        let durable = Arc::new(crate::raft::log_store::DurableMarks::default());
        let log_store = LogStore::<PartitionRaftConfig>::open(
            &self.inner.data_dir,
            &dir,
            stream.log.clone(),
            LogStoreOptions {
                on_append: self.inner.config.on_append.clone(),
                durable: Some(durable.clone()),
                data_follows_cut: true,
                ..LogStoreOptions::default()
            },
        )
        .map_err(storage_err)?;
        let log = log_store.log().clone();
        let raft_meta = log_store.meta().clone();
        let sm = PartitionStateMachine::new(&log_store);
        let state = sm.replica_state();
        let network = GroupNetworkFactory::new(
            self.inner.transport.clone(),
            p.group,
            self.inner.replication_stats.clone(),
        )
        .with_timings(self.inner.timings.clone());
        let hints = network.election_hints();
        let raft = Raft::new(me, self.inner.raft_config.clone(), network, log_store, sm)
            .await
            .map_err(|e| {
                self.inner.replicas.keep_stalled(p.group, log.clone());
                ClusterError::Storage(format!(
                    "start {}: {e}",
                    error::GroupName::partition(p.group, &stream.name, partition)
                ))
            })?;
        if p.initial_members.contains_key(&me) {
            // The preferred leader initializes at once and, being first to
            // stand, wins the first election: leadership starts out spread
            // as placement planned. The other initial replicas step in
            // (with the same member set, which openraft allows) only if no
            // leader has appeared after a while, e.g. the preferred one is
            // down.
            let (raft, members, group) = (raft.clone(), p.initial_members.clone(), p.group);
            let delay = if me == p.preferred_leader {
                Duration::ZERO
            } else {
                INITIALIZE_FALLBACK
            };
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if !delay.is_zero() && raft.current_leader().await.is_some() {
                    return;
                }
                // Already initialized (a restart): see the controller's case.
                if raft.is_initialized().await.unwrap_or(false) {
                    return;
                }
                match raft.initialize(members).await {
                    Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                    Err(e) => tracing::warn!(group, error = %e, "initialize partition group"),
                }
            });
        }
        let group = PartitionGroup::new(
            me,
            group::GroupId {
                group: p.group,
                stream: stream.name.clone(),
                partition,
            },
            raft,
            log,
            state,
            raft_meta,
            group::Proposals {
                max_batch_bytes: self.inner.config.max_batch_bytes,
                durable,
                observer: self.inner.config.on_stage.clone(),
                clock: self.inner.config.clock.clone(),
            },
            hints.clone(),
        );
        leadership::spawn(
            group.raft.clone(),
            leadership::Duties {
                timings: self.inner.timings.clone(),
                hints,
                last_log: {
                    let log = group.log.clone();
                    leadership::LastLog::new(move || log.last_entry().map(raft_log_id))
                },
                transport: self.inner.transport.clone(),
                group: p.group,
                name: group.name().to_string(),
            },
            self.inner.shutdown.clone(),
        );
        self.inner.replicas.insert(group);
        Ok(())
    }

    /// Closes a group's log (the controller's too), or removes it with its
    /// data. Closing syncs and removing deletes files: off the async workers.
    pub(super) async fn finish_log(
        &self,
        group: u64,
        log: cairn_storage::PartitionLog,
        remove_data: bool,
    ) {
        let data_dir = self.inner.data_dir.clone();
        let result = tokio::task::spawn_blocking(move || {
            if remove_data {
                data_dir.remove_log(&log)
            } else {
                data_dir.close_log(&log)
            }
        })
        .await;
        let error = match result {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        let what = if remove_data { "removing" } else { "closing" };
        tracing::warn!(group = %self.inner.group_name(group), %error, "{what} the log failed");
    }

    /// Closes (or removes) the log of a replica whose Raft did not start.
    pub(super) async fn close_stalled(&self, group: u64, remove_data: bool) {
        let stalled = self.inner.replicas.take_stalled(group);
        if let Some(log) = stalled {
            self.finish_log(group, log, remove_data).await;
        }
    }

    pub(super) async fn stop_group(&self, group: u64, remove_data: bool) {
        self.close_stalled(group, remove_data).await;
        let Some(g) = self.inner.replicas.remove(group) else {
            return;
        };
        if let Err(e) = g.raft.shutdown().await {
            tracing::warn!(group, error = %e, "raft shutdown");
        }
        if !remove_data && let Err(e) = g.meta.flush().await {
            tracing::warn!(group, error = %e, "writing raft.json");
        }
        // A lazy write started before the shutdown must not create its
        // temp file in a directory being deleted.
        g.meta.settle().await;
        self.finish_log(group, g.log.clone(), remove_data).await;
    }

    /// Stops every group and the controller, then the transport. Logs are
    /// closed (synced) but kept.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.edges.lock().clear();
        let heartbeats = self.inner.heartbeat_task.lock().take();
        if let Some(task) = heartbeats {
            task.stop().await;
        }
        for g in self.inner.replicas.ids() {
            self.stop_group(g, false).await;
        }
        {
            let _no_restart = self.inner.controller_restart.lock().await;
            self.stop_controller().await;
        }
        self.inner.transport.shutdown().await;
    }
}
