//! Cairn's shared vocabulary.
//!
//! - [`entry`]: the log entry model (timestamp in µs, level, source, message,
//!   attributes) and its JSON form at the API edge.
//! - [`api`]: the JSON shapes of the HTTP API, for server, cluster and client.
//! - [`batch`]: the compact binary record batch that is stored on disk and
//!   (later) replicated as one Raft entry. A batch is self-describing and
//!   self-checking: a fixed header carries offsets, counts and the time range,
//!   and a CRC-32C covers everything after the CRC field, so any flipped byte
//!   in the header or the payload is detected before data is served.
//! - [`clock`]: wall-clock time since the Unix epoch, in µs and ms, and the
//!   [`clock::Clock`] seam for code whose time stamps tests control.
//! - [`error`]: stable, numeric error codes shared by every crate and the wire.
//! - [`protocol`]: the binary TCP ingest protocol's requests and responses,
//!   encoded and decoded without I/O, shared by the server and the client.
//!
//! This crate depends on nothing else in Cairn; everything else depends on it.

pub mod api;
pub mod batch;
pub mod clock;
pub mod durability;
pub mod entry;
pub mod error;
pub mod protocol;
mod varint;

pub use batch::{BatchBuilder, BatchError, BatchHeader, RecordBatch};
pub use durability::Durability;
pub use entry::{
    Attributes, Entry, EntryRef, Level, NewEntry, ParseLevelError, partition_for_source,
};
pub use error::ErrorCode;
