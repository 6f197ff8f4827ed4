//! The durability policy of a stream, shared by storage, server and client.

use std::fmt;

use serde::{Deserialize, Serialize};

/// When an append is acknowledged: the durability policy of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// After the batch is written and `fdatasync`ed (group commit shares one
    /// sync among all appends that arrived while the previous one ran).
    #[default]
    Fsync,
    /// After the write; the storage writer syncs on a short interval. A
    /// machine crash can lose up to one interval of acknowledged entries.
    Interval,
    /// After the write; synced only when a segment rolls or the log closes.
    None,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::Interval => "interval",
            Durability::None => "none",
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "fsync" => Ok(Durability::Fsync),
            "interval" => Ok(Durability::Interval),
            "none" => Ok(Durability::None),
            _ => Err(format!(
                "unknown durability {s:?}: expected fsync, interval or none"
            )),
        }
    }
}
