//! Cairn's cluster layer (DESIGN.md §5). So far:
//!
//! - [`transport`]: one multiplexed TCP connection per node pair carrying
//!   all Raft groups' RPCs and node messages, with a fault filter for tests
//!   and fault injection.
//! - [`membership`]: node-level heartbeats and the phi-accrual failure
//!   detector; per-peer states joining/up/suspect/down/draining.
//! - [`placement`]: consistent hashing with virtual nodes to place partition
//!   replicas, balanced preferred leaders, minimal moves on join/leave.
//! - [`raft`]: openraft type configurations.
//!
//! The controller and anti-entropy will sit on top of these.
pub mod membership;
pub mod placement;
pub mod raft;
pub mod transport;
