//! The log entry model and its JSON form.
//!
//! An [`Entry`] owns its strings and is what the API edge parses and prints.
//! An [`EntryRef`] borrows from a stored batch, so filters (level, source,
//! substring) run over stored data without allocating.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Severity, ordered from least to most severe so `level >= Level::Warn`
/// reads as "warnings and worse".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(u8)]
pub enum Level {
    Trace = 0,
    Debug = 1,
    #[default]
    Info = 2,
    Warn = 3,
    Error = 4,
    Fatal = 5,
}

impl Level {
    pub const ALL: [Level; 6] = [
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
        Level::Fatal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
            Level::Fatal => "FATAL",
        }
    }

    pub fn from_u8(v: u8) -> Option<Level> {
        Level::ALL.get(usize::from(v)).copied()
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown level {0:?}: expected one of TRACE, DEBUG, INFO, WARN, ERROR, FATAL")]
pub struct ParseLevelError(pub String);

impl FromStr for Level {
    type Err = ParseLevelError;

    /// Case-insensitive; accepts the common aliases `WARNING`, `ERR`, `CRITICAL`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let level = match s.to_ascii_uppercase().as_str() {
            "TRACE" => Level::Trace,
            "DEBUG" => Level::Debug,
            "INFO" => Level::Info,
            "WARN" | "WARNING" => Level::Warn,
            "ERROR" | "ERR" => Level::Error,
            "FATAL" | "CRITICAL" => Level::Fatal,
            _ => return Err(ParseLevelError(s.to_string())),
        };
        Ok(level)
    }
}

impl Serialize for Level {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One structured log record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Microseconds since the Unix epoch.
    #[serde(rename = "timestamp")]
    pub timestamp_us: i64,
    pub level: Level,
    pub source: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

impl Entry {
    pub fn as_ref(&self) -> EntryRef<'_> {
        EntryRef {
            timestamp_us: self.timestamp_us,
            level: self.level,
            source: &self.source,
            message: &self.message,
            attributes: Attributes::Borrowed(&self.attributes),
        }
    }
}

/// An entry as a producer sends it: the timestamp and level may be left out
/// (arrival time and `INFO` are filled in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEntry {
    /// Microseconds since the Unix epoch; arrival time when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
    pub source: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

impl NewEntry {
    pub fn into_entry(self, now_us: i64) -> Entry {
        Entry {
            timestamp_us: self.timestamp.unwrap_or(now_us),
            level: self.level.unwrap_or_default(),
            source: self.source,
            message: self.message,
            attributes: self.attributes,
        }
    }
}

/// Attributes of an [`EntryRef`]: either an owned entry's map or the raw,
/// already-validated encoding inside a batch.
#[derive(Debug, Clone, Copy)]
pub enum Attributes<'a> {
    Borrowed(&'a BTreeMap<String, String>),
    /// `count` pairs of (varint len, key bytes, varint len, value bytes).
    Encoded {
        count: usize,
        raw: &'a [u8],
    },
}

impl<'a> Attributes<'a> {
    pub fn len(&self) -> usize {
        match self {
            Attributes::Borrowed(m) => m.len(),
            Attributes::Encoded { count, .. } => *count,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let (borrowed, encoded) = match *self {
            Attributes::Borrowed(m) => {
                (Some(m.iter().map(|(k, v)| (k.as_str(), v.as_str()))), None)
            }
            Attributes::Encoded { count, raw } => (
                None,
                Some(EncodedAttrs {
                    raw,
                    pos: 0,
                    left: count,
                }),
            ),
        };
        borrowed
            .into_iter()
            .flatten()
            .chain(encoded.into_iter().flatten())
    }

    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

struct EncodedAttrs<'a> {
    raw: &'a [u8],
    pos: usize,
    left: usize,
}

impl<'a> Iterator for EncodedAttrs<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // The bytes were validated when the batch was decoded; a failure here
        // would be a bug, so stop rather than invent data.
        let key = crate::varint::get_str(self.raw, &mut self.pos).ok()?;
        let value = crate::varint::get_str(self.raw, &mut self.pos).ok()?;
        Some((key, value))
    }
}

/// A borrowed view of an entry, usually pointing into a stored batch.
#[derive(Debug, Clone, Copy)]
pub struct EntryRef<'a> {
    pub timestamp_us: i64,
    pub level: Level,
    pub source: &'a str,
    pub message: &'a str,
    pub attributes: Attributes<'a>,
}

impl EntryRef<'_> {
    pub fn to_owned(&self) -> Entry {
        Entry {
            timestamp_us: self.timestamp_us,
            level: self.level,
            source: self.source.to_string(),
            message: self.message.to_string(),
            attributes: self
                .attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_case_insensitively_and_order_by_severity() {
        assert_eq!("warning".parse::<Level>().unwrap(), Level::Warn);
        assert_eq!("Error".parse::<Level>().unwrap(), Level::Error);
        assert!("loud".parse::<Level>().is_err());
        assert!(Level::Fatal > Level::Error && Level::Debug < Level::Info);
        for l in Level::ALL {
            assert_eq!(Level::from_u8(l as u8), Some(l));
        }
        assert_eq!(Level::from_u8(6), None);
    }

    #[test]
    fn new_entry_fills_in_defaults_and_rejects_unknown_fields() {
        let e: NewEntry = serde_json::from_str(r#"{"source":"api","message":"hi"}"#).unwrap();
        let e = e.into_entry(42);
        assert_eq!((e.timestamp_us, e.level), (42, Level::Info));
        let bad = serde_json::from_str::<NewEntry>(r#"{"source":"a","message":"m","lvl":"x"}"#);
        assert!(bad.is_err());
        let bad = serde_json::from_str::<NewEntry>(r#"{"source":"a","message":"m","level":"x"}"#);
        assert!(bad.unwrap_err().to_string().contains("unknown level"));
    }

    #[test]
    fn entry_json_uses_timestamp_field_name() {
        let e = Entry {
            timestamp_us: 7,
            level: Level::Warn,
            source: "s".into(),
            message: "m".into(),
            attributes: BTreeMap::new(),
        };
        let j = serde_json::to_string(&e).unwrap();
        assert_eq!(
            j,
            r#"{"timestamp":7,"level":"WARN","source":"s","message":"m"}"#
        );
    }
}

/// The partition (bucket) of a stream that entries from `source` go to.
/// Stable across releases and machines (CRC-32C of the source name), so one
/// source's entries always land in one partition, in order.
pub fn partition_for_source(source: &str, partitions: u32) -> u32 {
    assert!(partitions > 0, "a stream has at least one partition");
    crc32c::crc32c(source.as_bytes()) % partitions
}

#[cfg(test)]
mod partition_tests {
    use super::*;

    #[test]
    fn partition_for_source_is_stable_and_in_range() {
        // Pinned values: changing the hash would re-route existing sources.
        assert_eq!(partition_for_source("api", 1000), 888);
        assert_eq!(partition_for_source("checkout-service", 1000), 880);
        for p in 1..20 {
            assert!(partition_for_source("checkout-service", p) < p);
        }
    }
}
