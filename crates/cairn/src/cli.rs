//! Command-line definitions (clap derive). Kept apart from the code that
//! runs the commands so the whole surface can be read in one place.
//! Long on purpose: argument structs and their help text only, no logic
//! beyond value parsers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cairn_client::Durability;
use cairn_types::Level;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    version,
    about = "Cairn: a log store that measures itself"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node.
    Node(Box<NodeArgs>),
    /// Start a 3-node cluster on loopback with a steady load of realistic
    /// log entries and a live status; Ctrl-C stops it all.
    Demo(DemoArgs),
    /// Create, list or delete streams.
    #[command(subcommand)]
    Stream(StreamCommand),
    /// Send log lines from stdin to a stream.
    Produce(ProduceArgs),
    /// Read one partition from an offset; prints NDJSON.
    Read(ReadArgs),
    /// Query a stream by time range and filters; prints NDJSON.
    Query(QueryArgs),
    /// Open-loop load generator: latency from intended send times, HDR
    /// histograms, per-second log, JSON report, read-back verification.
    Bench(BenchArgs),
    /// Verify a node's data directory (or one partition log) read-only:
    /// segments, batch CRCs, torn tails, index files, raft.json. For a
    /// stopped node; takes no lock and changes nothing. Exit code 0 when
    /// everything verifies, 1 when anything does not.
    Inspect(InspectArgs),
    /// Compare partition replicas and repair the ones that differ
    /// (`scan`), or show the last scans and quarantined replicas
    /// (`status`).
    #[command(subcommand, name = "anti-entropy")]
    AntiEntropy(AntiEntropyCommand),
    /// Print a stream's last entries across all partitions in timestamp
    /// order as NDJSON; with --follow, keep printing new ones until Ctrl-C.
    Tail(TailArgs),
    /// Inject faults into a node, for testing: disk delays, CPU burn,
    /// network delay/loss/partition. Every fault lifts by itself after its
    /// TTL. `--node N` picks the node by id (found through the node given
    /// by --server/--cluster); without it, that node itself.
    #[command(subcommand)]
    Fault(FaultCommand),
    /// The cluster's health verdict (green, yellow, red) with its reasons
    /// and the nodes' key figures. Exit code 0 green, 1 yellow, 2 red,
    /// 3 no node answered.
    Status(StatusArgs),
    /// The cluster at a glance in the terminal, refreshed every second:
    /// verdict and reasons, nodes, peer RTT, throughput; partitions and
    /// findings on keys 2 and 3; q quits. Moves to another node when the
    /// one it uses stops answering.
    Top(TopArgs),
    /// Offline tools of the cluster monitor.
    #[command(subcommand)]
    Monitor(MonitorCommand),
    /// What to do about the cluster's findings: each recommendation with
    /// its predicted effect and risk. `apply ID` carries one out (admin);
    /// `actions` lists what was applied and how it turned out.
    Recommend(RecommendArgs),
    /// Move partition leadership: one partition to another of its
    /// replicas, or every partition back to its preferred leader. Writes
    /// pause for a hand-over (tens of milliseconds); none fail.
    #[command(subcommand)]
    Leader(LeaderCommand),
    /// A performance report over the last --window, made now by the
    /// controller leader's monitor (or a saved one: --id, --list):
    /// verdict history, throughput and latency per node and stream,
    /// resources, findings, alerts, actions, capacity; with --baseline,
    /// every headline figure's change and the regressions.
    Report(ReportArgs),
}

#[derive(Debug, Args)]
pub struct RecommendArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Option<RecommendCommand>,
}

#[derive(Debug, Subcommand)]
pub enum RecommendCommand {
    /// Carry out recommendation ID (e.g. transfer-leaders-off-node-2) on
    /// the controller leader; it is judged over the next 15 s.
    Apply(RecommendApplyArgs),
    /// The actions applied, newest last, with their judgements.
    Actions(RecommendActionsArgs),
}

#[derive(Debug, Args)]
pub struct RecommendApplyArgs {
    pub id: String,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Print the action record as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RecommendActionsArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Print the action log as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum LeaderCommand {
    /// Hand one partition's leadership to another of its replicas.
    Move(LeaderMoveArgs),
    /// Move every partition whose leader is not its preferred one back to
    /// it (after a failover, say). Exit code 1 if any move failed.
    Rebalance(LeaderRebalanceArgs),
}

#[derive(Debug, Args)]
pub struct LeaderMoveArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    pub stream: String,
    pub partition: u32,
    /// The replica (node id) to lead the partition.
    #[arg(long)]
    pub to: u64,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LeaderRebalanceArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Md,
    Json,
    Html,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// How far back the report looks (up to 24h).
    #[arg(long, value_parser = parse_duration, default_value = "15m")]
    pub window: Duration,
    #[arg(long, value_enum, default_value = "md")]
    pub format: ReportFormat,
    /// A saved report (its id, from --list) instead of a new one.
    #[arg(long, conflicts_with = "list")]
    pub id: Option<String>,
    /// List the saved reports.
    #[arg(long)]
    pub list: bool,
    /// Compare with this file: a saved report's JSON (`--format json`)
    /// or the JSON a `cairn bench ... --json FILE` run wrote.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Write the report here instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Print the verdict as JSON (the `/v1/health` answer).
    #[arg(long)]
    pub json: bool,
    /// Redraw every second until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub enum MonitorCommand {
    /// Re-evaluate a recorded file of collection rounds (written by
    /// `cairn node --monitor-record FILE`) and print every change of the
    /// verdict and findings.
    Replay {
        file: PathBuf,
        /// Thresholds and rules to evaluate with (TOML; default: built in).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print every round's assessment as NDJSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum FaultCommand {
    /// Slow the node's storage writes and fsyncs (and its disk probe),
    /// and/or refuse a fraction of its client appends. Replaces the node's
    /// current disk fault.
    Disk(FaultDiskArgs),
    /// Burn CPU in the node process: THREADS threads spinning
    /// DUTY_PERCENT of every 100 ms. Replaces the node's current burn.
    Cpu(FaultCpuArgs),
    /// Add a network rule on the node's cluster transport: delay, drop,
    /// partition (from --peers) or isolate (from everyone).
    Network(FaultNetworkArgs),
    /// Lift the node's faults of one kind, or all.
    Clear(FaultClearArgs),
    /// Show the faults in force on the node.
    List(FaultListArgs),
}

/// The node a fault command acts on.
#[derive(Debug, Clone, Args)]
pub struct FaultTarget {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Id of the node to act on (default: the node given by --server).
    #[arg(long)]
    pub node: Option<u64>,
}

#[derive(Debug, Args)]
pub struct FaultDiskArgs {
    #[command(flatten)]
    pub target: FaultTarget,
    /// Sleep this long before every fdatasync (at most 10000).
    #[arg(long)]
    pub fsync_delay_ms: Option<u64>,
    /// Sleep this long before every write (at most 10000).
    #[arg(long)]
    pub write_delay_ms: Option<u64>,
    /// Refuse this fraction (0..=1) of client appends, storing nothing.
    #[arg(long)]
    pub error_rate: Option<f64>,
    /// Lift the fault after this long (at most 3600000).
    #[arg(long, default_value_t = 60_000)]
    pub ttl_ms: u64,
}

#[derive(Debug, Args)]
pub struct FaultCpuArgs {
    #[command(flatten)]
    pub target: FaultTarget,
    /// Burner threads (1..=64).
    #[arg(long)]
    pub threads: u32,
    /// Share of every 100 ms each thread spins (1..=100).
    #[arg(long)]
    pub duty_percent: u32,
    /// Stop burning after this long (at most 3600000).
    #[arg(long, default_value_t = 60_000)]
    pub ttl_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetworkAction {
    /// Hold frames for --delay-ms (+ up to --jitter-ms).
    Delay,
    /// Drop frames with --probability.
    Drop,
    /// Block all frames to and from --peers.
    Partition,
    /// Block all frames to and from every peer.
    Isolate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetworkDirection {
    Both,
    Inbound,
    Outbound,
}

#[derive(Debug, Args)]
pub struct FaultNetworkArgs {
    #[command(flatten)]
    pub target: FaultTarget,
    #[arg(long, value_enum)]
    pub action: NetworkAction,
    /// Peers (node ids) the rule applies to, comma-separated; default all
    /// (required for partition).
    #[arg(long, value_delimiter = ',')]
    pub peers: Vec<u64>,
    #[arg(long, value_enum, default_value_t = NetworkDirection::Both)]
    pub direction: NetworkDirection,
    #[arg(long)]
    pub delay_ms: Option<u64>,
    #[arg(long)]
    pub jitter_ms: Option<u64>,
    /// Drop probability (0..=1).
    #[arg(long)]
    pub probability: Option<f64>,
    /// Remove the rule after this long.
    #[arg(long, default_value_t = 60_000)]
    pub ttl_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FaultKind {
    Disk,
    Cpu,
    Network,
    All,
}

#[derive(Debug, Args)]
pub struct FaultClearArgs {
    #[command(flatten)]
    pub target: FaultTarget,
    #[arg(long, value_enum, default_value_t = FaultKind::All)]
    pub kind: FaultKind,
}

#[derive(Debug, Args)]
pub struct FaultListArgs {
    #[command(flatten)]
    pub target: FaultTarget,
    /// Print one JSON document `{disk, cpu, network}` instead of lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AntiEntropyCommand {
    /// Scan now, on each partition's leader, one partition after another,
    /// printing each result as it arrives. Exit code 1 if anything could
    /// not be compared or repaired.
    Scan(AntiEntropyScanArgs),
    /// The last scan of every partition, cluster-wide, and quarantined
    /// replicas.
    Status(AntiEntropyStatusArgs),
}

#[derive(Debug, Args)]
pub struct AntiEntropyScanArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Only this stream (default: every stream).
    #[arg(long)]
    pub stream: Option<String>,
    /// Only this partition of `--stream`.
    #[arg(long, requires = "stream")]
    pub partition: Option<u32>,
    /// Re-read and re-verify every byte instead of reusing the digests of
    /// segment files that have not changed since they were last read.
    #[arg(long)]
    pub deep: bool,
    /// Print the reports as NDJSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AntiEntropyStatusArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Print the status as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A node's data directory (`--data-dir`) or one log directory under it
    /// (e.g. `groups/<id>` or `controller/log`).
    pub dir: PathBuf,
    /// Print the report as one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Directory holding the node's data (created if missing).
    #[arg(long, env = "CAIRN_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address for the HTTP API; port 0 picks a free port.
    #[arg(long, env = "CAIRN_HTTP", default_value = "127.0.0.1:7070")]
    pub http: SocketAddr,
    /// Address for the binary ingest protocol (framed TCP, see
    /// docs/PROTOCOL.md); off unless given. Port 0 picks a free port.
    #[arg(long, env = "CAIRN_TCP")]
    pub tcp: Option<SocketAddr>,
    /// Largest accepted request body, in bytes (HTTP body or binary-protocol
    /// APPEND payload).
    #[arg(long, env = "CAIRN_MAX_BODY_BYTES", default_value_t = cairn_server::node::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// How often retention runs on every partition, in milliseconds.
    #[arg(long, env = "CAIRN_RETENTION_CHECK_MS", default_value_t = 10_000)]
    pub retention_check_ms: u64,
    /// Open connections per listener (HTTP and binary protocol each), at
    /// most; lowered at start to fit the open-file limit. Connections over
    /// it are refused (HTTP 503, binary ERROR `unavailable`).
    #[arg(long, env = "CAIRN_MAX_CONNECTIONS", default_value_t = cairn_server::limits::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Open connections per listener from one client address, at most.
    #[arg(long, env = "CAIRN_MAX_CONNECTIONS_PER_IP", default_value_t = cairn_server::limits::DEFAULT_MAX_CONNECTIONS_PER_IP)]
    pub max_connections_per_ip: usize,
    /// HTTP: a request's head (request line and headers) must arrive within
    /// this, counted from the connection's accept or the request's first byte.
    #[arg(long, env = "CAIRN_HTTP_HEADER_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub http_header_timeout: Duration,
    /// HTTP: a request's body must arrive within this (408 otherwise).
    #[arg(long, env = "CAIRN_HTTP_BODY_TIMEOUT", value_parser = parse_duration, default_value = "60s")]
    pub http_body_timeout: Duration,
    /// HTTP: a keep-alive connection with no request in progress and no
    /// bytes moving (or whose response is not being read) is closed after this.
    #[arg(long, env = "CAIRN_HTTP_IDLE_TIMEOUT", value_parser = parse_duration, default_value = "60s")]
    pub http_idle_timeout: Duration,
    /// Binary protocol: a connection with nothing in flight that sends no
    /// frame for this long is closed.
    #[arg(long, env = "CAIRN_TCP_IDLE_TIMEOUT", value_parser = parse_duration, default_value = "5m")]
    pub tcp_idle_timeout: Duration,
    /// Binary protocol: a frame begun must arrive whole within this, or the
    /// connection is closed (ERROR `request_timeout`).
    #[arg(long, env = "CAIRN_TCP_FRAME_TIMEOUT", value_parser = parse_duration, default_value = "30s")]
    pub tcp_frame_timeout: Duration,
    /// Bytes of request bodies and frames being received, node-wide
    /// (`512M`, `2G`; binary units). Default: a sixteenth of the memory
    /// (cgroup limit or RAM) within 64 MiB..1 GiB.
    #[arg(long, env = "CAIRN_RECEIVE_BUDGET", value_parser = parse_bytes)]
    pub receive_budget: Option<usize>,
    /// This node's name in telemetry.
    #[arg(long, env = "CAIRN_NODE_NAME", default_value = "node-1")]
    pub name: String,
    /// A disk probe (512 B write + fdatasync, every 100 ms) slower than this
    /// counts against the disk's slow score, in milliseconds.
    #[arg(long, env = "CAIRN_DISK_PROBE_TIMEOUT_MS", default_value_t = 50)]
    pub disk_probe_timeout_ms: u64,
    /// Start with per-stage timing off (it can be switched at run time).
    #[arg(long, env = "CAIRN_NO_STAGE_TIMING")]
    pub no_stage_timing: bool,
    /// This node's id in the cluster (≥ 1, unique, stable across restarts).
    #[arg(long, env = "CAIRN_NODE_ID", default_value_t = 1)]
    pub id: u64,
    /// Address of the node-to-node transport; port 0 picks a free port.
    #[arg(long, env = "CAIRN_RAFT", default_value = "127.0.0.1:0")]
    pub raft: SocketAddr,
    /// Bootstrap a cluster with these voters: `ID=HOST:PORT,...` (transport
    /// addresses, this node included). Without `--peers` or `--join` the
    /// node forms a single-node cluster of its own.
    #[arg(long, env = "CAIRN_PEERS", value_parser = parse_peer, value_delimiter = ',')]
    pub peers: Vec<(u64, String)>,
    /// Join the cluster of the node at this HTTP URL (as a non-voter).
    #[arg(long, env = "CAIRN_JOIN", conflicts_with = "peers")]
    pub join: Option<String>,
    /// With --join: take over the id of a member that is down (a
    /// replacement machine with an empty data directory). Without it, a
    /// join with a member's id from other addresses is refused.
    #[arg(long, env = "CAIRN_REPLACE", requires = "join")]
    pub replace: bool,
    /// How often each partition leader compares its replicas (anti-entropy);
    /// 0 turns periodic scans off.
    #[arg(long, env = "CAIRN_AE_INTERVAL", value_parser = parse_duration, default_value = "60s")]
    pub ae_interval: Duration,
    /// How often a periodic scan re-reads every byte instead of reusing
    /// digests of unchanged segment files.
    #[arg(long, env = "CAIRN_AE_DEEP_INTERVAL", value_parser = parse_duration, default_value = "1d")]
    pub ae_deep_interval: Duration,
    /// Bytes per second this node may read for anti-entropy (`16M`, `500k`;
    /// 0: unlimited).
    #[arg(long, env = "CAIRN_AE_RATE", value_parser = parse_rate, default_value = "16M")]
    pub ae_rate: f64,
    /// Bytes per second this node may fetch to catch a replica up by
    /// snapshot (`64M`, `500k`; 0: unlimited).
    #[arg(long, env = "CAIRN_SNAPSHOT_RATE", value_parser = parse_rate, default_value = "64M")]
    pub snapshot_rate: f64,
    /// A follower further behind than this many bytes of log (a new
    /// replica, a node back from an outage) is caught up by snapshot —
    /// fetched in bulk at `--snapshot-rate` — rather than entry by entry
    /// (`256M`; 0: only past retention cuts).
    #[arg(long, env = "CAIRN_SNAPSHOT_BEHIND", value_parser = parse_bytes, default_value = "256M")]
    pub snapshot_behind: usize,
    /// How long a group directory that no partition on this node owns
    /// (a stream deleted, a replica moved away while the node was down)
    /// is kept before it is removed.
    #[arg(long, env = "CAIRN_ORPHAN_GRACE", value_parser = parse_duration, default_value = "10m")]
    pub orphan_grace: Duration,
    /// The controller snapshots the cluster metadata and purges its log
    /// every this many entries.
    #[arg(long, env = "CAIRN_CONTROLLER_SNAPSHOT_EVERY", default_value_t = 1000)]
    pub controller_snapshot_every: u64,
    /// How often the cluster monitor collects every node's telemetry and
    /// re-evaluates the health verdict, findings and alerts (0: off).
    #[arg(long, env = "CAIRN_MONITOR_INTERVAL", value_parser = parse_duration, default_value = "1s")]
    pub monitor_interval: Duration,
    /// Monitor thresholds and alert rules (TOML); the built-in defaults
    /// are in docs/OPERATIONS.md ("The cluster monitor").
    #[arg(long, env = "CAIRN_MONITOR_CONFIG")]
    pub monitor_config: Option<PathBuf>,
    /// Post alerts to this Prometheus Alertmanager (base URL; the v2 API
    /// `/api/v2/alerts` is used). Only the controller leader posts.
    #[arg(long, env = "CAIRN_ALERTMANAGER")]
    pub alertmanager: Option<String>,
    /// Post alert changes as JSON to this URL (generic webhook).
    #[arg(long, env = "CAIRN_ALERT_WEBHOOK")]
    pub alert_webhook: Option<String>,
    /// Append every monitor collection round to this file (NDJSON), for
    /// `cairn monitor replay`; a relative path is inside the data directory.
    /// About 3 KB per round for 3 nodes: 250 MB a day — for incidents and
    /// tests, not for always.
    #[arg(long, env = "CAIRN_MONITOR_RECORD")]
    pub monitor_record: Option<PathBuf>,
    /// What the monitor may fix by itself: `off` (recommend only; apply
    /// with `cairn recommend apply`) or `leaders` (also move leaders off a
    /// slow node and rebalance them — at most one action a minute, never
    /// with a node down or a partition leaderless; each is judged and
    /// undone if it made things worse).
    #[arg(long, env = "CAIRN_REMEDIATE", default_value = "off")]
    pub remediate: cairn_server::monitor::remedy::RemediateMode,
    /// How often the controller leader saves a performance report over
    /// the interval just past, in DATA_DIR/reports (the newest 288 are
    /// kept; 0: never). `cairn report` lists and reads them.
    #[arg(long, env = "CAIRN_REPORT_INTERVAL", value_parser = parse_duration, default_value = "300s")]
    pub report_interval: Duration,
    /// Tokens and their roles, one `ROLE TOKEN` per line (roles: read,
    /// write, admin; `#` comments). Every request but `GET /health` then
    /// needs `Authorization: Bearer TOKEN`. Give every node the same file.
    /// Without it, anyone who reaches the node may do anything, so the
    /// node listens on loopback only unless --insecure.
    #[arg(long, env = "CAIRN_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// Listen beyond loopback without a token file (HTTP, binary protocol)
    /// and with the node-to-node transport unauthenticated. For trusted
    /// networks only; logged as a warning.
    #[arg(long, env = "CAIRN_INSECURE")]
    pub insecure: bool,
    /// A file holding the cluster secret (at least 16 bytes; surrounding
    /// whitespace is ignored), the same on every node: every node-to-node
    /// connection then proves it (HMAC challenge-response) before anything
    /// else, so a process without it can neither take part in Raft nor
    /// join. Make one with `head -c 32 /dev/urandom | base64 > FILE`.
    #[arg(long, env = "CAIRN_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// PEM certificate chain of this node (leaf first): turns TLS on for
    /// every listener (HTTP, binary protocol, node-to-node transport).
    /// Must name the IP addresses the node is reached at. Needs --tls-key
    /// and --tls-ca; give every node of the cluster TLS.
    #[arg(long, env = "CAIRN_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "CAIRN_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle the node checks its peers' certificates against
    /// (transport dials, HTTP forwarding).
    #[arg(long, env = "CAIRN_TLS_CA", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
    /// Free space to keep on the data directory's filesystem, in bytes
    /// (k, M, G suffixes, powers of 1024): below it, writes and stream
    /// creation are refused with 507 until space is freed, so compaction,
    /// metadata and repair can still write. 0 turns the reserve off.
    #[arg(long, env = "CAIRN_MIN_FREE_BYTES", value_parser = parse_bytes, default_value = "64M")]
    pub min_free_bytes: usize,
    /// How often a Raft leader sends heartbeats, in milliseconds. All nodes
    /// of a cluster should use the same Raft timings.
    #[arg(long, env = "CAIRN_RAFT_HEARTBEAT_MS", default_value_t = 100)]
    pub raft_heartbeat_ms: u64,
    /// Raft election timeout range `MIN..MAX`, in milliseconds. A follower
    /// that hears no leader campaigns after MAX + random[MIN, MAX); a
    /// leader that hears no quorum for MAX steps down. Same on all nodes.
    #[arg(long, env = "CAIRN_RAFT_ELECTION_TIMEOUT_MS", value_parser = parse_ms_range, default_value = "400..800")]
    pub raft_election_timeout_ms: (u64, u64),
    /// Deadline range `FLOOR..MAX` of one Raft replication or vote RPC, in
    /// milliseconds: 3 × the peer's recent round-trip p99, within these
    /// bounds. MAX must exceed the slowest link's round trip (plus a
    /// follower's fsync) and stay below the minimum election timeout.
    #[arg(long, env = "CAIRN_RAFT_RPC_TIMEOUT_MS", value_parser = parse_ms_range, default_value = "100..350")]
    pub raft_rpc_timeout_ms: (u64, u64),
    /// Deadline of one Raft install-snapshot RPC, in milliseconds.
    #[arg(long, env = "CAIRN_RAFT_SNAPSHOT_TIMEOUT_MS", default_value_t = 30_000)]
    pub raft_snapshot_timeout_ms: u64,
    /// Shut down (gracefully) when the parent process goes away. `cairn
    /// demo` starts its nodes with this, so a demo killed with SIGKILL
    /// leaves no nodes behind.
    #[arg(long, hide = true)]
    pub exit_with_parent: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the cluster's data in this directory (created if missing; a
    /// later demo on it starts from that data) instead of a temporary one
    /// removed on exit.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Entries per second of the demo load; accepts k and M suffixes.
    #[arg(long, value_parser = parse_rate, default_value = "2000")]
    pub rate: f64,
    /// Stop by itself once the load has run this long, e.g. 30s or 5m.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// The API carrying the load.
    #[arg(long, value_enum, default_value_t = ProduceApi::Binary)]
    pub api: ProduceApi,
    /// Open the dashboard in a browser once the cluster is up (`xdg-open`,
    /// or the program in $BROWSER).
    #[arg(long)]
    pub open: bool,
}

/// µs since the epoch from RFC 3339, a time ago (`30s`, `5m`, `2h`, `1d`)
/// or a plain number of µs. A number that reads as a recent Unix time in
/// seconds or milliseconds (what `date +%s` prints) is refused with a hint:
/// taken as µs it would silently mean January 1970.
pub fn parse_time_us(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        // 1990 to 2200, in seconds and in milliseconds.
        const SECONDS: std::ops::RangeInclusive<i64> = 631_152_000..=7_258_118_400;
        const MILLIS: std::ops::RangeInclusive<i64> = 631_152_000_000..=7_258_118_400_000;
        if SECONDS.contains(&n) {
            return Err(format!(
                "{n} looks like a Unix time in seconds; times are µs: use {n}000000 or an RFC 3339 time"
            ));
        }
        if MILLIS.contains(&n) {
            return Err(format!(
                "{n} looks like a Unix time in milliseconds; times are µs: use {n}000 or an RFC 3339 time"
            ));
        }
        return Ok(n);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_micros());
    }
    if let Ok(ago) = parse_duration(s.trim_end_matches(" ago")) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?;
        let at = now.saturating_sub(ago);
        return i64::try_from(at.as_micros()).map_err(|e| e.to_string());
    }
    Err(format!(
        "{s:?} is not a time: use RFC 3339 (2026-12-03T04:00:00Z), a time ago (10m, 2h) or µs since the epoch"
    ))
}

/// `MIN..MAX` in milliseconds, e.g. `400..800`.
fn parse_ms_range(s: &str) -> Result<(u64, u64), String> {
    let (min, max) = s
        .split_once("..")
        .ok_or_else(|| format!("{s:?} must look like MIN..MAX (milliseconds)"))?;
    let num = |v: &str| {
        v.trim()
            .parse::<u64>()
            .map_err(|_| format!("{v:?} is not a number of milliseconds"))
    };
    let (min, max) = (num(min)?, num(max)?);
    if min > max {
        return Err(format!("{s:?}: MIN must not exceed MAX"));
    }
    Ok((min, max))
}

fn parse_peer(s: &str) -> Result<(u64, String), String> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("peer {s:?} must look like ID=HOST:PORT"))?;
    let id: u64 = id
        .trim()
        .parse()
        .map_err(|_| format!("peer id {id:?} is not a number"))?;
    addr.trim()
        .parse::<SocketAddr>()
        .map_err(|e| format!("peer address {addr:?}: {e}"))?;
    Ok((id, addr.trim().to_owned()))
}

#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Base URL of a Cairn node.
    #[arg(long, env = "CAIRN_SERVER", default_value = "http://127.0.0.1:7070")]
    pub server: String,
    /// Base URLs of several nodes of one cluster, comma-separated: the
    /// first that answers is used (any node routes to partition leaders),
    /// so the command works while some nodes are down. Overrides --server.
    #[arg(long, env = "CAIRN_CLUSTER", value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// Bearer token, for nodes started with --auth-token-file (the
    /// environment is the safer place: a flag shows in `ps`).
    #[arg(long, env = "CAIRN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA bundle to trust for https:// URLs and TLS on the binary
    /// protocol (nodes started with --tls-cert); without it, the system's
    /// roots are trusted.
    #[arg(long, env = "CAIRN_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

impl ServerArgs {
    /// The token and TLS trust of these arguments.
    pub fn client_options(&self) -> anyhow::Result<cairn_client::ClientOptions> {
        Ok(cairn_client::ClientOptions {
            token: self.token.clone(),
            tls_ca: load_tls_ca(self.tls_ca.as_deref())?,
        })
    }
}

/// Loads `--tls-ca` when given.
pub fn load_tls_ca(
    path: Option<&std::path::Path>,
) -> anyhow::Result<Option<std::sync::Arc<rustls::ClientConfig>>> {
    path.map(|p| cairn_client::tls::client_config(p).map_err(|e| anyhow::anyhow!("--tls-ca: {e}")))
        .transpose()
}

#[derive(Debug, Subcommand)]
pub enum StreamCommand {
    /// Create a stream.
    Create(StreamCreateArgs),
    /// List streams with their partitions' extent.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete a stream and all its data.
    Delete {
        #[command(flatten)]
        server: ServerArgs,
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct StreamCreateArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    pub name: String,
    #[arg(long, default_value_t = cairn_client::DEFAULT_PARTITIONS)]
    pub partitions: u32,
    /// When appends are acknowledged: fsync, interval or none.
    #[arg(long, default_value_t = Durability::Fsync)]
    pub durability: Durability,
    /// Delete segments whose newest entry is older than this.
    #[arg(long)]
    pub retention_ms: Option<u64>,
    /// Delete the oldest segments while a partition is larger than this.
    #[arg(long)]
    pub retention_bytes: Option<u64>,
    /// Roll partitions to a new segment at this size.
    #[arg(long, default_value_t = cairn_client::DEFAULT_SEGMENT_BYTES)]
    pub segment_bytes: u64,
    /// Replicas per partition (default: min(3, nodes in the cluster)).
    #[arg(long)]
    pub replication_factor: Option<u32>,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[arg(long, env = "CAIRN_STREAM")]
    pub stream: String,
    /// Source of plain-text lines (and of JSON entries that have none).
    #[arg(long, default_value = "stdin")]
    pub source: String,
    /// Level of plain-text lines (and of JSON entries that have none).
    #[arg(long, default_value_t = Level::Info)]
    pub level: Level,
    /// Entries per request.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,
    /// The API to send with: http, or binary (the node's `--tcp` protocol).
    #[arg(long, value_enum, default_value_t = ProduceApi::Http)]
    pub api: ProduceApi,
    /// Binary-protocol addresses (host:port) for `--api binary`: one node's,
    /// or every node's (comma separated), so each partition's entries go
    /// straight to its leader instead of being forwarded.
    #[arg(long, env = "CAIRN_TCP_SERVER", value_delimiter = ',')]
    pub tcp: Vec<String>,
    /// How to read lines: `auto` (a line starting with `{` must be a JSON
    /// entry, others are plain text), `json` (every line), `text` (every
    /// line is a plain message).
    #[arg(long, value_enum, default_value_t = ProduceFormat::Auto)]
    pub format: ProduceFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProduceFormat {
    Auto,
    Json,
    Text,
}

#[derive(Debug, Args)]
pub struct ReadArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[arg(long, env = "CAIRN_STREAM")]
    pub stream: String,
    #[arg(long)]
    pub partition: u32,
    /// First offset; default: the partition's first stored entry.
    #[arg(long)]
    pub offset: Option<u64>,
    /// Most entries to print (fetched in pages of up to 10,000).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[arg(long, env = "CAIRN_STREAM")]
    pub stream: String,
    /// Only entries newer than this long ago, e.g. 30s, 5m, 2h, 1d.
    #[arg(long, value_parser = parse_duration, conflicts_with = "start")]
    pub since: Option<Duration>,
    /// Only entries at or after this time: RFC 3339
    /// (`2026-12-03T04:00:00Z`), a time ago (`10m`, `2h`), or µs since the
    /// epoch.
    #[arg(long, value_parser = parse_time_us)]
    pub start: Option<i64>,
    /// Only entries at or before this time (same forms); default now.
    #[arg(long, value_parser = parse_time_us)]
    pub end: Option<i64>,
    /// Only entries at or above this level.
    #[arg(long)]
    pub level: Option<Level>,
    /// Only entries from exactly this source.
    #[arg(long)]
    pub source: Option<String>,
    /// Only entries whose message contains this text.
    #[arg(long)]
    pub contains: Option<String>,
    /// Most entries to print (at most 100,000).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print the latest matches, newest first (default: the oldest, oldest
    /// first). Reads each partition's whole time range: pair with --since.
    #[arg(long)]
    pub newest: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

// Parsed once per process: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    #[command(flatten)]
    Load(BenchScenario),
    /// The fault scorecard: steady load on a 3-node cluster (started here
    /// unless --server), then each fault scenario --runs times; per
    /// scenario the detection rate, time to detect (median, max), whether
    /// the monitor named the right subject and resource, and false alarms
    /// in the fault-free periods before each fault.
    Faults(FaultsArgs),
}

/// Rates are in entries per second (requests per second = rate / batch
/// size) and accept a k or M suffix: 50k, 1.5M.
#[derive(Debug, Subcommand)]
pub enum BenchScenario {
    /// Hold one rate for a duration.
    Steady(SteadyArgs),
    /// Baseline rate, then FACTOR times it, then the baseline again.
    Burst(BurstArgs),
    /// Raise the rate in equal steps up to a target.
    Ramp(RampArgs),
    /// Raise the rate step by step until the response p99 exceeds a bound
    /// or throughput stops growing, and report the knee.
    Sweep(SweepArgs),
}

#[derive(Debug, Args)]
pub struct FaultsArgs {
    /// Nodes of a running cluster (3 or more; comma-separated URLs)
    /// instead of starting one. `pause` and `node-kill` need processes
    /// this command started and are skipped.
    #[arg(long, value_delimiter = ',')]
    pub server: Vec<String>,
    /// Scenarios to run, comma-separated: slow-disk, slow-link, cpu,
    /// pause, overload, hot-partition, node-kill (default: all).
    #[arg(long, value_delimiter = ',')]
    pub scenarios: Vec<String>,
    /// Times each scenario runs.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub runs: u32,
    /// The steady load, entries per second.
    #[arg(long, value_parser = parse_rate, default_value = "2000")]
    pub rate: f64,
    /// The fault-free period before each fault (false alarms are counted
    /// in it, and the write p99 baseline is taken from it).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub quiet: Duration,
    /// How long the monitor has to name a fault.
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    pub detect_timeout: Duration,
    /// Start the nodes with `--remediate leaders`, keep each fault on after
    /// it is named and time how long until the load's write p99 is back
    /// within 2x its fault-free baseline.
    #[arg(long)]
    pub remediate: bool,
    /// Write every run's figures as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Keep the started nodes' data and logs here (default: a temporary
    /// directory, removed at the end).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SteadyArgs {
    /// Target rate, entries per second.
    #[arg(long, value_parser = parse_rate)]
    pub rate: f64,
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    #[command(flatten)]
    pub opts: BenchOptions,
}

#[derive(Debug, Args)]
pub struct BurstArgs {
    /// Baseline rate, entries per second.
    #[arg(long, value_parser = parse_rate)]
    pub rate: f64,
    /// The burst's rate is this multiple of the baseline.
    #[arg(long, default_value_t = 5.0)]
    pub factor: f64,
    /// Length of the baseline before the burst, and of the recovery after.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub baseline: Duration,
    /// Length of the burst.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub burst: Duration,
    #[command(flatten)]
    pub opts: BenchOptions,
}

#[derive(Debug, Args)]
pub struct RampArgs {
    /// Final rate, entries per second.
    #[arg(long, value_parser = parse_rate)]
    pub to: f64,
    /// First rate; default: TO / STEPS.
    #[arg(long, value_parser = parse_rate)]
    pub from: Option<f64>,
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub steps: u32,
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub step_duration: Duration,
    #[command(flatten)]
    pub opts: BenchOptions,
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Rate of the first step, entries per second.
    #[arg(long, value_parser = parse_rate, default_value = "10k")]
    pub start_rate: f64,
    /// Each step's rate is this multiple of the previous one.
    #[arg(long, default_value_t = 1.5)]
    pub factor: f64,
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub step_duration: Duration,
    /// Stop once the response-time p99 of a step exceeds this.
    #[arg(long, value_parser = parse_duration, default_value = "100ms")]
    pub max_p99: Duration,
    /// Stop once a step delivers less than this share of its target rate.
    #[arg(long, default_value_t = 0.9)]
    pub min_achieved: f64,
    /// Stop once throughput gains less than this share of the target's
    /// growth over the last good step.
    #[arg(long, default_value_t = 0.5)]
    pub min_growth: f64,
    /// Stop once more than this share of a step's requests fail.
    #[arg(long, default_value_t = 0.01)]
    pub max_failure_ratio: f64,
    /// Never go above this rate.
    #[arg(long, value_parser = parse_rate, default_value = "100M")]
    pub max_rate: f64,
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_steps: u32,
    #[command(flatten)]
    pub opts: BenchOptions,
}

/// Which API carries appends (`produce`, `bench`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProduceApi {
    /// NDJSON over HTTP/1.1.
    Http,
    /// Record batches over the framed TCP protocol (needs `--tcp`);
    /// many requests in flight on one connection.
    Binary,
}

/// How intended send times are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    /// Evenly.
    Constant,
    /// Exponential gaps from a seeded RNG (a Poisson process).
    Poisson,
}

/// Which reads run beside the writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadKind {
    /// The newest entries of a partition (by offset).
    Tail,
    /// A time-range query over the last READ_WINDOW of a stream.
    Query,
    /// Tail and query reads in turn.
    Mixed,
}

/// Options every bench scenario takes.
#[derive(Debug, Clone, Args)]
pub struct BenchOptions {
    /// Node URLs; load is spread over them (repeat the flag or separate
    /// with commas). Streams are created and verified through the first.
    #[arg(
        long,
        env = "CAIRN_SERVER",
        default_value = "http://127.0.0.1:7070",
        value_delimiter = ','
    )]
    pub server: Vec<String>,
    /// Bearer token, for nodes started with --auth-token-file (needs the
    /// admin role: the bench creates and deletes its streams).
    #[arg(long, env = "CAIRN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA bundle to trust for https:// URLs and TLS on the binary
    /// protocol: with it, `--tcp` connections use TLS.
    #[arg(long, env = "CAIRN_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = ProduceApi::Http)]
    pub api: ProduceApi,
    /// Binary-protocol addresses (host:port) of the nodes, for `--api
    /// binary`; writer connection k goes to the k-th (modulo their count).
    /// Streams are still created, read and verified over HTTP (`--server`).
    #[arg(long, env = "CAIRN_TCP_SERVER", value_delimiter = ',')]
    pub tcp: Vec<String>,
    /// With `--api binary`: send every request whole to its connection's
    /// node (which forwards what it does not lead), instead of splitting
    /// it by partition and sending each share to the partition's leader.
    #[arg(long)]
    pub no_leader_routing: bool,
    /// With `--api binary` and leader routing: requests on the wire per
    /// partition and writer before further appends wait and go out merged
    /// (the producer's default).
    #[arg(long, default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub partition_in_flight: u32,
    /// Writer connections (each its own client and schedule).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub connections: u32,
    /// Most requests outstanding per connection; a request due while all
    /// are taken is backlogged (sent late, timed from when it was due).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_in_flight: u32,
    #[arg(long, value_enum, default_value_t = Arrival::Constant)]
    pub arrival: Arrival,
    /// Seed of the Poisson schedules (connection k uses SEED + k).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Entries per append request.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,
    /// Bytes per entry, as an NDJSON line (the message is padded to it).
    #[arg(long, default_value_t = 100)]
    pub entry_size: usize,
    /// Distinct sources; entries cycle through them (the source picks the
    /// partition).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub sources: u32,
    /// Partitions of each bench stream.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub partitions: u32,
    /// Number of bench streams; requests go to them in turn.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub streams: u32,
    #[arg(long, default_value_t = Durability::Fsync)]
    pub durability: Durability,
    /// Segment size of the bench streams.
    #[arg(long, default_value_t = cairn_client::DEFAULT_SEGMENT_BYTES)]
    pub segment_bytes: u64,
    /// Retention of the bench streams by size (default: none). Read-back
    /// verification expects every entry, so pair it with `--no-verify`.
    #[arg(long)]
    pub retention_bytes: Option<u64>,
    /// Bench streams are named PREFIX-RUNID-N, created for the run.
    #[arg(long, default_value = "bench")]
    pub stream_prefix: String,
    /// Keep the bench streams after the run (default: delete them).
    #[arg(long)]
    pub keep_streams: bool,
    /// Read requests per second beside the writes (0: none).
    #[arg(long, value_parser = parse_rate, default_value = "0")]
    pub read_rate: f64,
    #[arg(long, value_enum, default_value_t = ReadKind::Mixed)]
    pub read_kind: ReadKind,
    /// Entries asked for by each read.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub read_limit: u32,
    /// Time range of query reads, ending now.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub read_window: Duration,
    /// Per-request timeout (a timed-out request counts as an error).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub timeout: Duration,
    /// After the plan ends, how long backlogged requests may still be sent;
    /// after that they are counted as unsent.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub grace: Duration,
    /// Threads of the generator's async runtime.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: u32,
    /// Write the full report (every figure, the configuration) as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write one CSV line per second as the run goes, for plotting.
    #[arg(long)]
    pub interval_log: Option<PathBuf>,
    /// Skip reading back what was acknowledged.
    #[arg(long)]
    pub no_verify: bool,
}

/// Parses a rate: `2500`, `0.5`, `50k`, `1.5M`.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1e3),
        Some((i, 'M')) => (&t[..i], 1e6),
        _ => (t, 1.0),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid rate {s:?}: expected e.g. 2000, 50k, 1.5M"))?;
    let rate = n * mul;
    if rate.is_finite() && rate >= 0.0 {
        Ok(rate)
    } else {
        Err(format!("invalid rate {s:?}: must be a non-negative number"))
    }
}

/// Parses a byte size: a number with an optional binary unit `k`, `M`,
/// `G` (KiB, MiB, GiB), e.g. `512M`.
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (num, shift) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 10),
        Some((i, 'M')) => (&t[..i], 20),
        Some((i, 'G')) => (&t[..i], 30),
        _ => (t, 0),
    };
    num.trim()
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("invalid size {s:?}: expected e.g. 65536, 512M, 2G"))
}

/// Parses `500ms`, `30s`, `5m`, `2h`, `1d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 30s, 5m, 2h"))?;
    let ms = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "invalid duration unit {unit:?}: use ms, s, m, h or d"
            ));
        }
    };
    n.checked_mul(ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {s:?} is too large"))
}

#[derive(Debug, Args)]
pub struct TailArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[arg(long, env = "CAIRN_STREAM")]
    pub stream: String,
    /// How many of the last entries to print first.
    #[arg(long, default_value_t = 10)]
    pub lines: usize,
    /// Keep polling every partition and print new entries as they commit.
    #[arg(long)]
    pub follow: bool,
    /// How often --follow polls, e.g. 500ms, 2s.
    #[arg(long, value_parser = parse_duration, default_value = "500ms")]
    pub interval: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_times_in_any_common_form_when_parsed_should_be_microseconds_or_a_hint() {
        assert_eq!(
            parse_time_us("2026-12-03T04:00:00Z"),
            Ok(1_796_270_400_000_000)
        );
        assert_eq!(parse_time_us("1796270400000000"), Ok(1_796_270_400_000_000));
        let secs = parse_time_us("1796184000").unwrap_err();
        assert!(secs.contains("in seconds"), "{secs}");
        let ms = parse_time_us("1796184000000").unwrap_err();
        assert!(ms.contains("milliseconds"), "{ms}");
        // Small numbers are µs of synthetic timestamps, taken as given.
        assert_eq!(parse_time_us("1000000"), Ok(1_000_000));
        let ago = parse_time_us("10m").unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64;
        assert!((now - ago - 600_000_000).abs() < 5_000_000);
        assert!(parse_time_us("10m ago").is_ok());
        assert!(parse_time_us("yesterday").is_err());
    }
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("5 weeks").is_err());
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("2500"), Ok(2500.0));
        assert_eq!(parse_rate("50k"), Ok(50_000.0));
        assert_eq!(parse_rate("1.5M"), Ok(1_500_000.0));
        assert_eq!(parse_rate("0.5"), Ok(0.5));
        assert!(parse_rate("k").is_err());
        assert!(parse_rate("-3").is_err());
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn bench_flags_follow_the_scenario() {
        let cli = Cli::try_parse_from([
            "cairn",
            "bench",
            "steady",
            "--rate",
            "20k",
            "--duration",
            "3s",
            "--server",
            "http://a:1,http://b:2",
            "--arrival",
            "poisson",
        ])
        .unwrap();
        let Command::Bench(BenchArgs {
            command: BenchCommand::Load(BenchScenario::Steady(a)),
        }) = cli.command
        else {
            panic!("not bench steady");
        };
        assert_eq!((a.rate, a.duration), (20_000.0, Duration::from_secs(3)));
        assert_eq!(a.opts.server, ["http://a:1", "http://b:2"]);
        assert_eq!(a.opts.arrival, Arrival::Poisson);
        assert!(!a.opts.no_verify);
    }
}
