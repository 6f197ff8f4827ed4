//! Node-level membership (DESIGN.md §5): heartbeats and failure detection.
pub mod phi;
