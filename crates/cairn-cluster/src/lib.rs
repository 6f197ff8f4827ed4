//! Cairn's cluster layer (DESIGN.md §5). So far: the node-to-node
//! [`transport`] — one multiplexed TCP connection per node pair carrying all
//! Raft groups' RPCs and node messages, with a fault filter for tests and
//! fault injection. The openraft glue, controller, membership, placement and
//! anti-entropy will sit on top of it.
pub mod membership;
pub mod placement;
pub mod raft;
pub mod transport;
