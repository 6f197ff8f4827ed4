//! The JSON shapes of Cairn's HTTP API, shared by the server (which produces
//! them), the cluster (whose reports some of them are) and the client (which
//! consumes them), so they cannot drift apart.
//!
//! Entries themselves ([`Entry`], [`NewEntry`]) come from `cairn-types`; the
//! structs here wrap them with offsets and partitions. Timestamps are always
//! microseconds since the Unix epoch.

use crate::{Entry, Level};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

/// Idle pooled HTTP connections are dropped after this: before a node's
/// default idle timeout (60 s) closes them, so a request never races a
/// server closing its connection.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Default partition count of a new stream.
pub const DEFAULT_PARTITIONS: u32 = 4;
/// Default size at which a partition rolls to a new segment (64 MiB).
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

pub use crate::Durability;

/// The settings of a stream. Every field has a default, so `{}` is valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    /// Number of partitions, 1..=1024. Fixed for the life of the stream.
    pub partitions: u32,
    /// Delete whole segments whose newest entry is older than this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
    /// Delete the oldest segments while a partition is larger than this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<u64>,
    /// Roll a partition to a new segment at this size.
    pub segment_bytes: u64,
    pub durability: Durability,
    /// Replicas per partition; default min(3, nodes in the cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<u32>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            partitions: DEFAULT_PARTITIONS,
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            durability: Durability::Fsync,
            replication_factor: None,
        }
    }
}

/// `POST /v1/streams`: the stream's name next to its config fields, as one
/// flat object: `{"name": "app", "partitions": 8, ...}`.
///
/// Deserialization is written by hand because serde's `flatten` cannot be
/// combined with `deny_unknown_fields`, and a misspelt setting must be an
/// error, not silently ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreateStream {
    pub name: String,
    #[serde(flatten)]
    pub config: StreamConfig,
}

impl<'de> Deserialize<'de> for CreateStream {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut fields = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let name = match fields.remove("name") {
            Some(serde_json::Value::String(name)) => name,
            Some(_) => return Err(D::Error::custom("field `name` must be a string")),
            None => return Err(D::Error::missing_field("name")),
        };
        let config = StreamConfig::deserialize(serde_json::Value::Object(fields))
            .map_err(D::Error::custom)?;
        Ok(CreateStream { name, config })
    }
}

/// One stream as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    pub name: String,
    pub config: StreamConfig,
    /// When the stream was created (µs since the epoch).
    pub created_at: i64,
    /// Per-partition extent, in partition order.
    pub partitions: Vec<PartitionInfo>,
}

/// The extent of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    pub partition: u32,
    /// The first offset still stored (retention moves it forward).
    pub start_offset: u64,
    /// The offset the next entry gets.
    pub end_offset: u64,
    pub size_bytes: u64,
    pub segments: usize,
    /// Timestamp range of the stored entries; absent when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_timestamp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_timestamp: Option<i64>,
    /// Nodes holding a replica; the first extent fields come from the
    /// answering node's replica (or are zero if it holds none).
    #[serde(default)]
    pub replicas: Vec<u64>,
    /// The partition's Raft leader as the answering node knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<u64>,
}

/// `GET /v1/streams`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamList {
    pub streams: Vec<StreamInfo>,
}

/// `POST /v1/streams/{name}/entries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResponse {
    pub appended: u64,
    /// One item per partition that received entries, in partition order.
    pub partitions: Vec<PartitionAppend>,
}

/// Where one partition's share of an append landed: offsets
/// `base_offset..base_offset + count`, in request order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionAppend {
    pub partition: u32,
    pub base_offset: u64,
    pub count: u32,
}

/// An entry read back from one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetEntry {
    pub offset: u64,
    #[serde(flatten)]
    pub entry: Entry,
}

/// `GET /v1/streams/{name}/partitions/{p}/entries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadResponse {
    pub entries: Vec<OffsetEntry>,
    /// Where to continue reading: one past the last returned entry, or the
    /// requested offset when nothing was returned.
    pub next_offset: u64,
    pub start_offset: u64,
    /// One past the last committed entry the answering replica has.
    pub end_offset: u64,
    /// The node whose replica answered.
    #[serde(default)]
    pub served_by: u64,
    /// Whether that replica was the partition leader when it answered.
    #[serde(default)]
    pub from_leader: bool,
    /// Committed entries the answering replica did not have yet (asked of
    /// the leader; 0 from the leader, absent if the leader could not be
    /// asked). Only `consistency=any` reads can be behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_entries: Option<u64>,
}

/// An entry found by a query, with where it lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryEntry {
    pub partition: u32,
    pub offset: u64,
    #[serde(flatten)]
    pub entry: Entry,
}

/// `GET /v1/streams/{name}/query`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryResponse {
    /// Matches in timestamp order (ties by partition, then offset), or in
    /// exactly the reverse order for `order=newest`.
    pub entries: Vec<QueryEntry>,
    /// True when more matching entries may exist than were returned.
    pub truncated: bool,
    /// Partitions that could not be read; their matches are missing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_partitions: Vec<PartitionFailure>,
}

/// The parameters of a query. `None` means the server's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryParams {
    /// Inclusive lower bound (µs); default 0.
    pub start: Option<i64>,
    /// Inclusive upper bound (µs); default: the time of the request.
    pub end: Option<i64>,
    /// Only entries at or above this level.
    pub level: Option<Level>,
    /// Only entries from exactly this source.
    pub source: Option<String>,
    /// Only entries whose message contains this text (case-sensitive).
    pub contains: Option<String>,
    /// At most this many entries; default 1000, at most 100,000.
    pub limit: Option<usize>,
    /// `leader` (default) or `any`; see [`Consistency`].
    pub consistency: Option<Consistency>,
    /// Only these partitions, comma-separated (used when a node fans a
    /// query out to its peers); default all.
    pub partitions: Option<String>,
    /// Which end of the matches to return: `oldest` (default) or `newest`.
    pub order: Option<Order>,
}

/// Which matches a query keeps when more than `limit` match.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// The earliest `limit` matches, oldest first.
    #[default]
    Oldest,
    /// The latest `limit` matches, newest first: the exact reverse of the
    /// `oldest` order (timestamp, partition, offset).
    Newest,
}

impl Order {
    pub fn as_str(self) -> &'static str {
        match self {
            Order::Oldest => "oldest",
            Order::Newest => "newest",
        }
    }
}

/// Which replica may answer a read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// The partition leader answers: everything acknowledged so far.
    #[default]
    Leader,
    /// Any replica answers with what it knows to be committed, which may
    /// trail the leader slightly; the response names the replica.
    Any,
}

impl Consistency {
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Leader => "leader",
            Consistency::Any => "any",
        }
    }
}

/// A partition a query could not read, reported rather than hidden.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionFailure {
    pub partition: u32,
    pub code: String,
    pub message: String,
}

/// The parameters of a partition read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadParams {
    /// First offset to return; default: the partition's start.
    pub offset: Option<u64>,
    /// At most this many entries; default 100, at most 10,000.
    pub limit: Option<usize>,
    /// `leader` (default) or `any`.
    pub consistency: Option<Consistency>,
}

/// `POST /v1/streams/{name}/partitions/{p}/leader`: hand the partition's
/// leadership to replica `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderMoveRequest {
    pub to: u64,
}

/// What became of one leader move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaderMoveOutcome {
    /// `to` leads now.
    Moved,
    /// `to` already led: nothing was done.
    AlreadyLeader,
    /// Not moved (see `error`); the partition keeps or re-elects a leader
    /// by the usual Raft rules.
    Failed,
}

/// One leader move: `POST /v1/streams/{name}/partitions/{p}/leader`'s
/// answer, and an item of a rebalance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderMove {
    pub stream: String,
    pub partition: u32,
    /// The leader before the move, if one was known.
    pub from: Option<u64>,
    pub to: u64,
    pub outcome: LeaderMoveOutcome,
    /// From when the leader took the request until it saw `to` lead:
    /// writes to the partition waited at most this long.
    pub took_ms: u64,
    /// Why it failed. (Always present, `null` on success: this type also
    /// travels between nodes in postcard, which cannot skip fields.)
    pub error: Option<String>,
}

/// `POST /v1/cluster/leaders/rebalance`: every partition whose leader is
/// not its preferred one, and what moving it back did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebalanceResponse {
    pub moves: Vec<LeaderMove>,
    /// Partitions already led by their preferred leader.
    pub already_balanced: usize,
}

/// `GET /v1/cluster`: the cluster as the answering node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The answering node.
    pub node_id: u64,
    /// The controller (group 0) leader, if known.
    pub controller_leader: Option<u64>,
    pub nodes: Vec<NodeView>,
    /// Partition groups this node replicates.
    pub groups: Vec<GroupView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub id: u64,
    pub raft_addr: String,
    pub http_addr: String,
    /// `joining`, `up`, `suspect`, `down` or `draining`.
    pub state: String,
    /// Failure-detector suspicion (phi) as seen from the answering node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phi: Option<f64>,
    /// Whether the node votes in the controller group.
    pub voter: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupView {
    pub stream: String,
    pub partition: u32,
    pub group: u64,
    pub replicas: Vec<u64>,
    pub leader: Option<u64>,
    /// The leader placement chose (leaders spread evenly); where
    /// `cairn leader rebalance` moves leadership back to.
    #[serde(default)]
    pub preferred_leader: Option<u64>,
    pub term: u64,
    /// Raft index of the last entry applied (committed) on this replica.
    pub applied_index: Option<u64>,
    /// One past the last committed entry offset on this replica.
    pub committed_end_offset: u64,
    /// The first Raft index retention keeps on this replica (0 before any
    /// cut): the same on every replica once the cut is applied.
    #[serde(default)]
    pub log_start_index: u64,
    /// The first entry offset this replica holds.
    #[serde(default)]
    pub start_offset: u64,
    /// While this replica fetches a snapshot's data from its leader: the
    /// next index it fetches and the last one it needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catching_up: Option<CatchUpView>,
}

/// A replica catching up by snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatchUpView {
    pub next_index: u64,
    pub last_index: u64,
    /// The first index it fetches (after the cut), and the bytes staged.
    #[serde(default)]
    pub first_index: u64,
    #[serde(default)]
    pub staged_bytes: u64,
}

/// `POST /v1/cluster/join`: a node asking to be added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub id: u64,
    pub raft_addr: String,
    pub http_addr: String,
    /// Take over the id of a member that is down (a replacement machine);
    /// without it, a join with a member's id and other addresses is 409.
    #[serde(default)]
    pub replace: bool,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub streams: usize,
    pub uptime_seconds: u64,
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable name from `cairn_types::ErrorCode::as_str`.
    pub code: String,
    pub message: String,
}

/// `POST /v1/faults/disk`: delay the node's storage writes and syncs, or
/// refuse a fraction of its client appends. At least one effect is needed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskFaultRequest {
    /// Slept before every `fdatasync` of the storage writer (and probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fsync_delay_ms: Option<u64>,
    /// Slept before every write of the storage writer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_delay_ms: Option<u64>,
    /// Fraction (0..=1) of client appends refused before anything is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    /// Lifts by itself after this long (default 60 s, at most 1 h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

/// A disk fault in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskFaultView {
    pub fsync_delay_ms: u64,
    pub write_delay_ms: u64,
    pub error_rate: f64,
    /// When it lifts by itself, ms since the Unix epoch.
    pub expires_unix_ms: u64,
    pub remaining_ms: u64,
}

/// `GET /v1/faults/disk`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskFaultStatus {
    pub fault: Option<DiskFaultView>,
}

/// `POST /v1/faults/cpu`: burner threads in the node process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuFaultRequest {
    /// Burner threads, 1..=64.
    pub threads: u32,
    /// Share of every 100 ms period each thread spins, 1..=100.
    pub duty_percent: u32,
    /// Stops by itself after this long (default 60 s, at most 1 h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

/// A CPU burn in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuFaultView {
    pub threads: u32,
    pub duty_percent: u32,
    /// When it stops by itself, ms since the Unix epoch.
    pub expires_unix_ms: u64,
    pub remaining_ms: u64,
}

/// `GET /v1/faults/cpu`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuFaultStatus {
    pub fault: Option<CpuFaultView>,
}

/// `POST /v1/faults/network`: one rule on this node's cluster transport.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkFaultRequest {
    /// `partition` (block `peers`), `isolate` (block everyone), `delay`,
    /// or `drop`.
    pub action: String,
    /// Peers the rule applies to; default all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<u64>>,
    /// `both` (default), `inbound` or `outbound`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<u64>,
    /// Drop probability, 0..=1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// Remove the rule by itself after this long (default: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

/// The answer to `POST /v1/faults/network`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkFaultInstalled {
    pub id: u64,
}

/// One installed network rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkRuleView {
    pub id: u64,
    /// `partition`, `isolate`, `delay` or `drop`.
    pub action: String,
    /// Peers it applies to; absent: every peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<u64>>,
    /// `both`, `inbound` or `outbound`.
    pub direction: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// Raft group it applies to; absent: every group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<u64>,
    /// Frame kind it applies to; absent: every kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_kind: Option<u16>,
    /// When it lifts by itself, ms since the Unix epoch; absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_unix_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_ms: Option<u64>,
}

/// `GET /v1/faults/network`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkFaultList {
    pub rules: Vec<NetworkRuleView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_stream_is_flat_and_rejects_unknown_settings() {
        let c: CreateStream =
            serde_json::from_str(r#"{"name":"app","partitions":8,"durability":"none"}"#).unwrap();
        assert_eq!(c.name, "app");
        assert_eq!(c.config.partitions, 8);
        assert_eq!(c.config.durability, Durability::None);
        assert_eq!(c.config.segment_bytes, DEFAULT_SEGMENT_BYTES);

        let round: CreateStream =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(round, c);

        let err =
            serde_json::from_str::<CreateStream>(r#"{"name":"a","partitons":2}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `partitons`"),
            "{err}"
        );
        assert!(serde_json::from_str::<CreateStream>(r#"{"partitions":2}"#).is_err());
        assert!(serde_json::from_str::<CreateStream>(r#"{"name":3}"#).is_err());
    }

    #[test]
    fn entries_flatten_next_to_offsets() {
        let e = QueryEntry {
            partition: 1,
            offset: 7,
            entry: Entry {
                timestamp_us: 5,
                level: Level::Warn,
                source: "api".into(),
                message: "m".into(),
                attributes: Default::default(),
            },
        };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"partition":1,"offset":7,"timestamp":5,"level":"WARN","source":"api","message":"m"}"#
        );
        assert_eq!(serde_json::from_str::<QueryEntry>(&json).unwrap(), e);
    }
}

/// `POST /v1/anti-entropy/scan`: which partitions to scan (all of every
/// stream when `stream` is absent; all of the stream when `partition` is).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScanRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    /// Re-read and re-verify every byte instead of reusing the digests of
    /// segment files that have not changed.
    pub deep: bool,
}

/// Why a scan ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanTrigger {
    Periodic,
    LeaderChange,
    Requested,
    ReadError,
}

impl ScanTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            ScanTrigger::Periodic => "periodic",
            ScanTrigger::LeaderChange => "leader_change",
            ScanTrigger::Requested => "requested",
            ScanTrigger::ReadError => "read_error",
        }
    }
}

/// How a scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanOutcome {
    /// Every replica compared agreed.
    Clean,
    /// Replicas differed and every difference was repaired.
    Repaired,
    /// Something could not be compared or repaired; see `failures`.
    Failed,
}

impl ScanOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ScanOutcome::Clean => "clean",
            ScanOutcome::Repaired => "repaired",
            ScanOutcome::Failed => "failed",
        }
    }
}

// Both read as their JSON names: printed, and compared with a name
// (`report.outcome == "clean"`), as they were when they were strings.
macro_rules! named {
    ($t:ty) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}
named!(ScanTrigger);
named!(ScanOutcome);

/// One range of log indexes on which a partition's replicas disagreed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DivergentRange {
    pub from_index: u64,
    /// Exclusive.
    pub to_index: u64,
    /// Replicas (node ids) whose batches here differed from the majority's.
    pub bad_replicas: Vec<u64>,
    /// The node the batches were copied from.
    pub source: Option<u64>,
    pub repaired: bool,
    pub bytes_repaired: u64,
    pub error: Option<String>,
}

/// A replica a scan could not compare, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedReplica {
    pub node: u64,
    pub reason: String,
}

/// The result of one anti-entropy scan of one partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanReport {
    pub stream: String,
    pub partition: u32,
    pub group: u64,
    /// The node that ran the scan (the partition's leader then).
    pub leader: u64,
    pub trigger: ScanTrigger,
    pub deep: bool,
    pub started_at_unix_ms: u64,
    pub duration_ms: f64,
    /// The Raft log index range compared, `[from_index, to_index)`.
    pub from_index: u64,
    pub to_index: u64,
    /// Replicas compared, the leader included.
    pub replicas: Vec<u64>,
    pub skipped: Vec<SkippedReplica>,
    /// Merkle tree nodes compared with followers (roots included).
    pub ranges_compared: u64,
    pub divergent_leaves: u64,
    pub divergent: Vec<DivergentRange>,
    pub repaired_ranges: u64,
    pub bytes_repaired: u64,
    /// Bytes of segment files the replicas read to build their digests.
    pub bytes_read: u64,
    pub failures: Vec<String>,
    /// Replicas taken out of service for reads by this scan.
    pub quarantined: Vec<u64>,
    pub outcome: ScanOutcome,
}

/// A partition that could not be scanned at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanFailure {
    pub stream: String,
    pub partition: u32,
    pub code: String,
    pub message: String,
}

/// `POST /v1/anti-entropy/scan`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanResponse {
    pub reports: Vec<ScanReport>,
    pub failed: Vec<ScanFailure>,
}

/// A partition replica taken out of service for reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantinedReplica {
    pub stream: String,
    pub partition: u32,
    pub node: u64,
    pub reason: String,
}

/// This node's anti-entropy settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AntiEntropySettings {
    /// 0: periodic scans are off.
    pub interval_seconds: f64,
    pub deep_interval_seconds: f64,
    /// 0: unlimited.
    pub rate_bytes_per_sec: u64,
}

/// `GET /v1/anti-entropy/status`: the last scan of every partition (from
/// whichever node ran it most recently) and the quarantined replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AntiEntropyStatus {
    pub settings: AntiEntropySettings,
    pub partitions: Vec<ScanReport>,
    /// Per partition, the last scan that found replicas differing (kept
    /// after later clean scans, so a repair stays visible).
    pub last_divergent: Vec<ScanReport>,
    pub quarantined: Vec<QuarantinedReplica>,
    /// Nodes whose status could not be fetched (their scans are missing).
    pub unreachable_nodes: Vec<u64>,
}
