//! The stream registry and its persistence.
//!
//! # On disk
//! ```text
//! DATA/streams/{name}/stream.json   name, config, creation time
//! DATA/streams/{name}/{partition}/  one partition log each
//! ```
//! `stream.json` is the commit point: a stream exists iff its `stream.json`
//! exists. Creating writes it (atomically) only after every partition log
//! has been created; deleting removes it first, then the logs. A crash in
//! between therefore leaves a directory without `stream.json`, which the next
//! start deletes — never a half-created or half-deleted stream that serves
//! requests.
//!
//! # Concurrency
//! Lookups take a read lock on the name map and clone an `Arc<Stream>`, so
//! requests never hold the lock across I/O. Create and delete are serialized
//! by a separate mutex (they are rare and do file-system work), and they are
//! blocking: handlers call them from `spawn_blocking`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_client::{PartitionInfo, StreamConfig, StreamInfo};
use cairn_storage::{
    DataDir, LogConfig, PartitionLog, atomic_write, create_dir_durable, fsync_dir,
};
use cairn_types::ErrorCode;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::api::ApiError;

/// The directory below the data directory that holds all streams.
pub const STREAMS_DIR: &str = "streams";
/// The file whose presence makes a stream exist.
pub const STREAM_FILE: &str = "stream.json";
pub const MAX_PARTITIONS: u32 = 1024;
pub const MAX_NAME_LEN: usize = 128;

/// Checks a stream name: `[A-Za-z0-9._-]{1,128}`, not starting with a dot
/// (so it can never be `.`, `..` or a hidden temp directory).
pub fn validate_name(name: &str) -> Result<(), ApiError> {
    let bad = |why: &str| {
        Err(ApiError::bad_request(format!(
            "invalid stream name {name:?}: {why}"
        )))
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return bad("must be 1 to 128 characters long");
    }
    if name.starts_with('.') {
        return bad("must not start with a dot");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("only letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// Checks a stream config and derives the settings of its partition logs.
pub fn log_config(config: &StreamConfig) -> Result<LogConfig, ApiError> {
    let invalid = |m: String| Err(ApiError::new(ErrorCode::InvalidStreamConfig, m));
    if !(1..=MAX_PARTITIONS).contains(&config.partitions) {
        return invalid(format!(
            "partitions must be between 1 and {MAX_PARTITIONS} (got {})",
            config.partitions
        ));
    }
    let log = LogConfig {
        segment_bytes: config.segment_bytes,
        retention_ms: config.retention_ms,
        retention_bytes: config.retention_bytes,
        durability: config.durability,
        ..LogConfig::default()
    };
    if let Err(m) = log.validate() {
        return invalid(m);
    }
    Ok(log)
}

/// The content of `stream.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamFile {
    name: String,
    config: StreamConfig,
    created_at: i64,
}

/// An open stream: its settings and one log per partition.
#[derive(Debug)]
pub struct Stream {
    pub name: String,
    pub config: StreamConfig,
    pub created_at: i64,
    /// Indexed by partition number.
    pub logs: Vec<PartitionLog>,
}

impl Stream {
    pub fn partitions(&self) -> u32 {
        self.logs.len() as u32
    }

    pub fn log(&self, partition: u32) -> Result<&PartitionLog, ApiError> {
        self.logs.get(partition as usize).ok_or_else(|| {
            ApiError::new(
                ErrorCode::PartitionNotFound,
                format!(
                    "stream {:?} has no partition {partition} (it has {})",
                    self.name,
                    self.logs.len()
                ),
            )
        })
    }

    pub fn info(&self) -> StreamInfo {
        let partitions = self
            .logs
            .iter()
            .enumerate()
            .map(|(p, log)| {
                let s = log.stats();
                PartitionInfo {
                    partition: p as u32,
                    start_offset: s.start_offset,
                    end_offset: s.end_offset,
                    size_bytes: s.size_bytes,
                    segments: s.segments,
                    min_timestamp: s.min_ts,
                    max_timestamp: s.max_ts,
                }
            })
            .collect();
        StreamInfo {
            name: self.name.clone(),
            config: self.config.clone(),
            created_at: self.created_at,
            partitions,
        }
    }
}

/// All streams of a node.
#[derive(Debug)]
pub struct Registry {
    data_dir: Arc<DataDir>,
    root: PathBuf,
    streams: RwLock<BTreeMap<String, Arc<Stream>>>,
    /// Serializes create and delete.
    admin: Mutex<()>,
}

impl Registry {
    /// Reopens every stream that has a `stream.json` and deletes the
    /// directories of streams whose creation or deletion a crash interrupted.
    /// Blocking.
    pub fn open(data_dir: Arc<DataDir>) -> Result<Registry, ApiError> {
        let root = data_dir.path().join(STREAMS_DIR);
        create_dir_durable(&root)?;
        let mut streams = BTreeMap::new();
        let items = fs::read_dir(&root).map_err(|e| io_error(&root, "list", e))?;
        for item in items {
            let item = item.map_err(|e| io_error(&root, "list", e))?;
            let path = item.path();
            if !path.is_dir() {
                tracing::warn!(path = %path.display(), "ignoring a file that is not a stream directory");
                continue;
            }
            let file = path.join(STREAM_FILE);
            if !file.exists() {
                tracing::warn!(path = %path.display(), "deleting an incomplete stream (no stream.json: a create or delete was interrupted)");
                fs::remove_dir_all(&path).map_err(|e| io_error(&path, "delete", e))?;
                fsync_dir(&root)?;
                continue;
            }
            let stream = load_stream(&data_dir, &path, &file)?;
            tracing::info!(stream = %stream.name, partitions = stream.partitions(), "opened stream");
            streams.insert(stream.name.clone(), Arc::new(stream));
        }
        Ok(Registry {
            data_dir,
            root,
            streams: RwLock::new(streams),
            admin: Mutex::new(()),
        })
    }

    pub fn get(&self, name: &str) -> Result<Arc<Stream>, ApiError> {
        self.streams
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::stream_not_found(name))
    }

    /// All streams in name order.
    pub fn list(&self) -> Vec<Arc<Stream>> {
        self.streams.read().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.streams.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Creates a stream. Blocking.
    pub fn create(
        &self,
        name: &str,
        config: StreamConfig,
        now_us: i64,
    ) -> Result<Arc<Stream>, ApiError> {
        validate_name(name)?;
        let log_config = log_config(&config)?;
        let _admin = self.admin.lock();
        if self.streams.read().contains_key(name) {
            return Err(ApiError::new(
                ErrorCode::StreamExists,
                format!("stream {name:?} already exists"),
            ));
        }
        let dir = self.root.join(name);
        if dir.exists() {
            // Not registered, so it has no stream.json: debris of a failed
            // create. Start clean rather than adopt unknown segments.
            fs::remove_dir_all(&dir).map_err(|e| io_error(&dir, "delete", e))?;
        }
        create_dir_durable(&dir)?;

        let mut logs = Vec::with_capacity(config.partitions as usize);
        let mut result = Ok(());
        for p in 0..config.partitions {
            match self
                .data_dir
                .open_log(partition_dir(name, p), log_config.clone())
            {
                Ok(log) => logs.push(log),
                Err(e) => {
                    result = Err(ApiError::from(e));
                    break;
                }
            }
        }
        let file = StreamFile {
            name: name.to_string(),
            config,
            created_at: now_us,
        };
        if result.is_ok() {
            let json = serde_json::to_vec_pretty(&file).expect("stream file serializes");
            result = atomic_write(&dir.join(STREAM_FILE), &json).map_err(ApiError::from);
        }
        if let Err(e) = result {
            for log in &logs {
                let _ = self.data_dir.remove_log(log);
            }
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }

        let stream = Arc::new(Stream {
            name: file.name,
            config: file.config,
            created_at: file.created_at,
            logs,
        });
        self.streams
            .write()
            .insert(name.to_string(), stream.clone());
        tracing::info!(
            stream = name,
            partitions = stream.partitions(),
            "created stream"
        );
        Ok(stream)
    }

    /// Deletes a stream and all its data. Blocking.
    ///
    /// Requests that already hold the stream finish against closed logs and
    /// fail with `unavailable`; new requests see `stream_not_found`.
    pub fn delete(&self, name: &str) -> Result<(), ApiError> {
        let _admin = self.admin.lock();
        let stream = self
            .streams
            .write()
            .remove(name)
            .ok_or_else(|| ApiError::stream_not_found(name))?;
        let dir = self.root.join(name);
        let file = dir.join(STREAM_FILE);
        // The commit point: once stream.json is gone (durably), the stream
        // no longer exists, whatever happens to the rest.
        if let Err(e) = fs::remove_file(&file)
            .map_err(|e| io_error(&file, "delete", e))
            .and_then(|()| fsync_dir(&dir).map_err(ApiError::from))
        {
            self.streams.write().insert(name.to_string(), stream);
            return Err(e);
        }
        for log in &stream.logs {
            if let Err(e) = self.data_dir.remove_log(log) {
                // The next start deletes what is left.
                tracing::warn!(stream = name, error = %e, "could not delete a partition log");
            }
        }
        if let Err(e) = fs::remove_dir_all(&dir).map_err(|e| io_error(&dir, "delete", e)) {
            tracing::warn!(stream = name, error = %e, "could not delete the stream directory");
        }
        let _ = fsync_dir(&self.root);
        tracing::info!(stream = name, "deleted stream");
        Ok(())
    }
}

fn partition_dir(name: &str, partition: u32) -> PathBuf {
    Path::new(STREAMS_DIR)
        .join(name)
        .join(partition.to_string())
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> ApiError {
    ApiError::new(
        ErrorCode::Storage,
        format!("{what} {}: {e}", path.display()),
    )
}

/// Reopens one stream from its `stream.json`. A stream file that cannot be
/// understood stops the node: guessing would risk serving or deleting data.
fn load_stream(data_dir: &DataDir, dir: &Path, file: &Path) -> Result<Stream, ApiError> {
    let bad = |why: String| {
        ApiError::new(
            ErrorCode::Storage,
            format!("unreadable stream file {}: {why}", file.display()),
        )
    };
    let bytes = fs::read(file).map_err(|e| io_error(file, "read", e))?;
    let meta: StreamFile = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let dir_name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if meta.name != dir_name {
        return Err(bad(format!(
            "it names stream {:?} but lives in directory {dir_name:?}",
            meta.name
        )));
    }
    validate_name(&meta.name).map_err(|e| bad(e.message))?;
    let log_config = log_config(&meta.config).map_err(|e| bad(e.message))?;
    let mut logs = Vec::with_capacity(meta.config.partitions as usize);
    for p in 0..meta.config.partitions {
        if !dir.join(p.to_string()).is_dir() {
            tracing::error!(stream = %meta.name, partition = p, "partition directory is missing; starting it empty");
        }
        logs.push(data_dir.open_log(partition_dir(&meta.name, p), log_config.clone())?);
    }
    Ok(Stream {
        name: meta.name,
        config: meta.config,
        created_at: meta.created_at,
        logs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_storage::DataDirOptions;

    #[test]
    fn names_are_restricted() {
        for ok in ["app", "a.b-c_D9", &"x".repeat(128)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "..", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn configs_are_checked() {
        let ok = StreamConfig::default();
        assert!(log_config(&ok).is_ok());
        for bad in [
            StreamConfig {
                partitions: 0,
                ..ok.clone()
            },
            StreamConfig {
                partitions: 1025,
                ..ok.clone()
            },
            StreamConfig {
                segment_bytes: 10,
                ..ok.clone()
            },
            StreamConfig {
                retention_ms: Some(0),
                ..ok.clone()
            },
        ] {
            let e = log_config(&bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidStreamConfig);
        }
    }

    #[test]
    fn streams_survive_reopen_and_debris_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let dd = Arc::new(DataDir::open(tmp.path(), DataDirOptions::default()).unwrap());
            let reg = Registry::open(dd.clone()).unwrap();
            let config = StreamConfig {
                partitions: 3,
                ..StreamConfig::default()
            };
            reg.create("keep", config.clone(), 5).unwrap();
            reg.create("gone", config.clone(), 5).unwrap();
            let e = reg.create("keep", config, 5).unwrap_err();
            assert_eq!(e.code, ErrorCode::StreamExists);
            reg.delete("gone").unwrap();
            assert_eq!(
                reg.delete("gone").unwrap_err().code,
                ErrorCode::StreamNotFound
            );
            dd.shutdown().unwrap();
        }
        // A create that crashed before writing stream.json.
        fs::create_dir_all(tmp.path().join("streams/half/0")).unwrap();

        let dd = Arc::new(DataDir::open(tmp.path(), DataDirOptions::default()).unwrap());
        let reg = Registry::open(dd.clone()).unwrap();
        let names: Vec<_> = reg.list().iter().map(|s| s.name.clone()).collect();
        assert_eq!(names, ["keep"]);
        assert_eq!(reg.get("keep").unwrap().partitions(), 3);
        assert_eq!(reg.get("keep").unwrap().created_at, 5);
        assert!(!tmp.path().join("streams/half").exists());
        assert!(!tmp.path().join("streams/gone").exists());
        dd.shutdown().unwrap();
    }
}
