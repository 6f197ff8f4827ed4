//! Cairn's node server: the wiring of storage, cluster and telemetry behind
//! the HTTP and binary APIs.
//!
//! A [`Node`] owns one data directory (see `cairn-storage`) and runs the
//! cluster runtime (`cairn-cluster`): streams are defined in the
//! controller's replicated metadata, each partition is a Raft group, and an
//! entry goes to the partition chosen by hashing its source, so one
//! source's entries stay in order. Any node accepts any request: writes go
//! to the partition leader (here or forwarded over the cluster transport);
//! reads and queries are routed by the cluster too (this node's replica
//! when it may answer — the leader, or any replica with `consistency=any` —
//! another's over the transport otherwise; queries fan out per partition
//! and report partitions they could not read). A node without peers is a
//! single-node cluster.
//!
//! - [`node`]: opening, joining, retention, storage shutdown.
//! - [`serve`]: serving a node's APIs on its listeners and stopping in
//!   order (above `node` and `api`, so the node's core never imports the
//!   HTTP layer).
//! - [`error`]: [`ApiError`], the one error type of every layer: a stable
//!   code and a message, `{code, message}` over HTTP.
//! - [`streams`]: stream names and settings, and the API view of the
//!   metadata.
//! - [`ingest`]: parsing and validating producer bodies (JSON array or
//!   NDJSON) and grouping entries into one batch per partition.
//! - [`write`]: [`Node::append_entries`], the one write path after
//!   parsing, shared by HTTP and the binary protocol.
//! - [`tcp`]: the binary protocol's server (framed TCP, pipelined).
//! - [`read`]: the read path both APIs share, in front of the cluster's
//!   read router (`cairn_cluster::cluster::reads`; the scan and query
//!   engine is `cairn_cluster::read`).
//! - [`monitor`]: the cluster monitor as the node runs it — collecting
//!   every member's telemetry each second over the transport, evaluating
//!   it with `cairn-monitor`, delivering alerts (controller leader only)
//!   and answering `/v1/health` and `/v1/monitor/*`.
//! - [`api`]: the HTTP routes (streams, entries, cluster, anti-entropy,
//!   faults, telemetry) and their extractors.
//! - [`auth`]: bearer tokens and roles (read, write, admin), and the one
//!   rule deciding what each request needs.
//! - [`ui`]: the dashboard's embedded files, served at `/ui/`.
//! - [`tls`]: TLS on the client listeners, and the answer a plaintext
//!   client of a TLS listener gets.
//! - [`faults`]: the CPU burner and the list of injected faults (disk,
//!   CPU, network) shown in telemetry snapshots.
//!
//! The API's request and response types are `cairn_types::api`, shared
//! with the cluster and the client.

pub mod api;
pub mod auth;
pub mod error;
pub mod faults;
pub mod frames;
pub mod http_server;
pub mod ingest;
pub mod limits;
pub mod monitor;
pub mod node;
pub mod read;
pub mod serve;
pub mod streams;
pub mod tcp;
pub mod tls;
pub mod ui;
pub mod write;

pub use cairn_cluster::antientropy::AntiEntropyConfig;
pub use cairn_cluster::raft::RaftTimings;
pub use cairn_cluster::tls::NodeTls;
pub use cairn_cluster::transport::ClusterSecret;
pub use error::ApiError;
pub use limits::Limits;
pub use node::{Node, NodeConfig};
