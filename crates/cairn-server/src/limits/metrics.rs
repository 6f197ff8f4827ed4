//! The limits' figures on `/metrics`: connections, receive budget,
//! descriptors and Raft restarts (read at scrape time from the node's
//! [`Guards`]), and the node-to-node transport's gatekeeping counters.

use super::*;

/// The node-to-node transport's gatekeeping counters (see
/// `cairn_cluster::transport::secure`).
#[derive(Debug)]
struct TransportCollector {
    security: Arc<cairn_cluster::transport::SecurityMetrics>,
    secret: bool,
    tls: bool,
}

/// Registers the transport's handshake-failure, refusal and idle-close
/// counters, and whether it has a secret and TLS, in the node's registry.
pub fn register_transport_metrics(
    telemetry: &Telemetry,
    transport: &cairn_cluster::transport::Network,
) {
    let collector = TransportCollector {
        security: transport.security_metrics().clone(),
        secret: transport.has_secret(),
        tls: transport.has_tls(),
    };
    telemetry.with_registry(|r| r.register_collector(Box::new(collector)));
}

impl Collector for TransportCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use cairn_cluster::transport::HandshakeFailure;
        let failures: Vec<(Labels, u64)> = [("inbound", true), ("outbound", false)]
            .into_iter()
            .flat_map(|(side, inbound)| {
                HandshakeFailure::ALL.into_iter().map(move |why| {
                    (
                        vec![
                            ("direction", side.to_string()),
                            ("reason", why.as_str().to_string()),
                        ],
                        self.security.handshake_failures(inbound, why),
                    )
                })
            })
            .collect();
        encode_family(
            &mut enc,
            "cairn_transport_handshake_failures",
            "Node-to-node connections that failed the handshake, by side and reason \
             (secret_mismatch, bad_proof, tls, protocol). Any bad_proof or secret_mismatch is \
             a misconfigured node or a process probing the transport port.",
            MetricType::Counter,
            &failures,
        )?;
        let one = |v: u64| vec![(Labels::new(), v)];
        encode_family(
            &mut enc,
            "cairn_transport_connections_refused",
            "Inbound node-to-node connections closed at accept for the connection caps.",
            MetricType::Counter,
            &one(self.security.connections_refused.load(Ordering::Relaxed)),
        )?;
        encode_family(
            &mut enc,
            "cairn_transport_idle_closed",
            "Node-to-node connections closed after receiving no frame for the idle timeout.",
            MetricType::Counter,
            &one(self.security.idle_closed.load(Ordering::Relaxed)),
        )?;
        encode_family(
            &mut enc,
            "cairn_transport_authenticated",
            "1 when node-to-node connections must prove the cluster secret (--cluster-secret-file).",
            MetricType::Gauge,
            &one(u64::from(self.secret)),
        )?;
        encode_family(
            &mut enc,
            "cairn_transport_tls",
            "1 when node-to-node connections use TLS.",
            MetricType::Gauge,
            &one(u64::from(self.tls)),
        )
    }
}

#[derive(Debug)]
struct LimitsCollector {
    guards: Weak<Guards>,
    counters: ClusterCounters,
}

/// The cluster runtime's own counters: Raft groups restarted from disk
/// after their core stopped on a storage error (the last line of defence
/// when descriptors or space run out), and writes forwarded to a leader
/// elsewhere.
#[derive(Debug)]
pub struct ClusterCounters {
    pub partition_groups: Arc<AtomicU64>,
    pub controller: Arc<AtomicU64>,
    pub forwarded_writes: Arc<AtomicU64>,
}

/// Registers the guards' metrics in the node's registry, with the cluster
/// runtime's counters.
pub fn register_metrics(telemetry: &Telemetry, guards: Weak<Guards>, counters: ClusterCounters) {
    telemetry
        .with_registry(|r| r.register_collector(Box::new(LimitsCollector { guards, counters })));
}

impl Collector for LimitsCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(g) = self.guards.upgrade() else {
            return Ok(());
        };
        let (c, gauge) = (MetricType::Counter, MetricType::Gauge);
        let apis = [&g.http, &g.tcp];
        let api = |gate: &ConnectionGate| ("api", gate.api.as_str().to_string());
        let per_api = |f: &dyn Fn(&ConnectionGate) -> u64| -> Vec<(Labels, u64)> {
            apis.iter().map(|gate| (vec![api(gate)], f(gate))).collect()
        };
        encode_family(
            &mut enc,
            "cairn_connections_open",
            "Client connections open, per API.",
            gauge,
            &per_api(&|gate| gate.open() as u64),
        )?;
        encode_family(
            &mut enc,
            "cairn_connections_max",
            "The cap on open client connections per API (--max-connections, lowered to fit the open-file limit).",
            gauge,
            &per_api(&|gate| gate.max() as u64),
        )?;
        let refused: Vec<(Labels, u64)> = apis
            .iter()
            .flat_map(|gate| {
                Refusal::ALL.iter().map(move |r| {
                    (
                        vec![api(gate), ("reason", r.as_str().to_string())],
                        gate.refused(*r),
                    )
                })
            })
            .collect();
        encode_family(
            &mut enc,
            "cairn_connections_refused",
            "Client connections refused at accept, by cap (max_connections, max_connections_per_ip, file_descriptors).",
            c,
            &refused,
        )?;
        let closed: Vec<(Labels, u64)> = apis
            .iter()
            .flat_map(|gate| {
                Closed::of(gate.api).iter().map(move |r| {
                    (
                        vec![api(gate), ("reason", r.as_str().to_string())],
                        gate.closed(*r),
                    )
                })
            })
            .collect();
        encode_family(
            &mut enc,
            "cairn_connections_closed",
            "Client connections the node closed for a limit (timeouts, an unread response, the receive budget).",
            c,
            &closed,
        )?;
        let one = |v: u64| vec![(Labels::new(), v)];
        encode_family(
            &mut enc,
            "cairn_receive_budget_bytes",
            "The node-wide budget for request bytes being received (--receive-budget).",
            gauge,
            &one(g.budget.capacity() as u64),
        )?;
        encode_family(
            &mut enc,
            "cairn_receive_budget_used_bytes",
            "Request bytes received and charged against the budget now.",
            gauge,
            &one(g.budget.in_use() as u64),
        )?;
        encode_family(
            &mut enc,
            "cairn_receive_budget_waits",
            "Reads that had to wait for receive budget.",
            c,
            &one(g.budget.waits.load(Ordering::Relaxed)),
        )?;
        encode_family(
            &mut enc,
            "cairn_receive_budget_exhausted",
            "Reads refused because the receive budget stayed spent (HTTP 503, binary ERROR unavailable).",
            c,
            &one(g.budget.exhausted.load(Ordering::Relaxed)),
        )?;
        encode_family(
            &mut enc,
            "cairn_process_open_fds",
            "File descriptors the process has open (sampled every second, plus connections since).",
            gauge,
            &one(g.fds.open_estimate()),
        )?;
        encode_family(
            &mut enc,
            "cairn_process_max_fds",
            "The process's open-file limit (soft RLIMIT_NOFILE).",
            gauge,
            &one(g.fds.limit()),
        )?;
        encode_family(
            &mut enc,
            "cairn_storage_transient_retries",
            "File operations retried after running out of descriptors or space (EMFILE, ENFILE, ENOSPC).",
            c,
            &one(cairn_storage::fsutil::transient_retries()),
        )?;
        encode_family(
            &mut enc,
            "cairn_raft_group_restarts",
            "Partition groups restarted from disk after their Raft core stopped on a storage error; alert on any increase.",
            c,
            &one(self.counters.partition_groups.load(Ordering::Relaxed)),
        )?;
        encode_family(
            &mut enc,
            "cairn_raft_controller_restarts",
            "Restarts of the controller group from disk after its Raft core stopped on a storage error; alert on any increase.",
            c,
            &one(self.counters.controller.load(Ordering::Relaxed)),
        )?;
        encode_family(
            &mut enc,
            "cairn_writes_forwarded",
            "Write batches this node forwarded to a partition leader on another node (after \
             coalescing). A producer that routes by leader (TcpProducer) keeps it still; it \
             rises for HTTP writes and for a while after a leader change.",
            c,
            &one(self.counters.forwarded_writes.load(Ordering::Relaxed)),
        )?;
        Ok(())
    }
}
