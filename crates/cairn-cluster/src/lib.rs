//! Cairn's cluster layer. For now: the node-to-node [`transport`].
pub mod transport;
