//! Cairn's cluster layer (DESIGN.md §5).
//!
//! - [`transport`]: one multiplexed TCP connection per node pair carrying
//!   all Raft groups' RPCs and node messages, with a fault filter for tests
//!   and fault injection; the runtime holds it as a [`transport::Network`],
//!   which may instead be a node of an in-memory network (a whole cluster
//!   in one test process).
//! - [`raft`]: openraft glue — type configurations, the partition log as
//!   openraft's log store, the partition state machine, the network.
//! - [`controller`]: group 0 and its metadata state machine (nodes,
//!   streams, placement).
//! - [`placement`]: consistent hashing with virtual nodes to place partition
//!   replicas, balanced preferred leaders, minimal moves on join/leave.
//! - [`membership`]: node-level heartbeats and the phi-accrual failure
//!   detector; per-peer states joining/up/suspect/down/draining.
//! - [`cluster`]: a node's runtime tying these together — bootstrap, join,
//!   reconciling partition groups with the metadata, routing writes to
//!   leaders, replica moves.
//!
//! - [`tls`]: a node's TLS settings from PEM files, for the transport and
//!   the server's listeners.
//! - [`antientropy`]: Merkle comparison of partition replicas and repair
//!   of the ones that differ (its runtime side is in `cluster`).
pub mod antientropy;
pub mod cluster;
pub mod controller;
pub mod membership;
pub mod placement;
pub mod raft;
pub mod read;
pub mod tls;
pub mod transport;

pub use cluster::{Cluster, ClusterConfig, ClusterError, ServiceError, ServiceHandler};
