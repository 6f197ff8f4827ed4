//! Cairn's single-node server.
//!
//! A [`Node`] owns one data directory (see `cairn-storage`) and a registry
//! of streams; each stream is a fixed number of partition logs, and an
//! entry goes to the partition chosen by hashing its source, so one
//! source's entries stay in order.
//!
//! - [`node`]: opening, serving, retention, graceful shutdown.
//! - [`streams`]: the registry and its on-disk form (`stream.json` is the
//!   commit point of a stream's existence).
//! - [`ingest`]: parsing and validating producer bodies (JSON array or
//!   NDJSON) and grouping entries into one batch per partition.
//! - [`write`]: [`Node::append_entries`], the one write path after
//!   parsing, shared by HTTP and the binary protocol.
//! - [`tcp`]: the binary ingest protocol's server (framed TCP, pipelined).
//! - [`read`]: partition reads by offset and time-range queries merged
//!   across partitions.
//! - [`api`]: the HTTP routes, their extractors and the one error type.
//!
//! The API's request and response types are defined in `cairn-client`, so
//! the server and the client share them.

pub mod api;
pub mod ingest;
pub mod node;
pub mod read;
pub mod streams;
pub mod tcp;
pub mod write;

pub use api::ApiError;
pub use node::{Node, NodeConfig};
