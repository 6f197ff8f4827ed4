//! Command-line definitions (clap derive). Kept apart from the code that
//! runs the commands so the whole surface can be read in one place.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cairn_client::Durability;
use cairn_types::Level;
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    version,
    about = "Cairn: a log store that measures itself"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node.
    Node(NodeArgs),
    /// Create, list or delete streams.
    #[command(subcommand)]
    Stream(StreamCommand),
    /// Send log lines from stdin to a stream.
    Produce(ProduceArgs),
    /// Read one partition from an offset; prints NDJSON.
    Read(ReadArgs),
    /// Query a stream by time range and filters; prints NDJSON.
    Query(QueryArgs),
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Directory holding the node's data (created if missing).
    #[arg(long, env = "CAIRN_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address for the HTTP API; port 0 picks a free port.
    #[arg(long, env = "CAIRN_HTTP", default_value = "127.0.0.1:7070")]
    pub http: SocketAddr,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "CAIRN_MAX_BODY_BYTES", default_value_t = cairn_server::node::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// How often retention runs on every partition, in milliseconds.
    #[arg(long, env = "CAIRN_RETENTION_CHECK_MS", default_value_t = 10_000)]
    pub retention_check_ms: u64,
    /// This node's name in telemetry.
    #[arg(long, env = "CAIRN_NODE_NAME", default_value = "node-1")]
    pub name: String,
    /// A disk probe (512 B write + fdatasync, every 100 ms) slower than this
    /// counts against the disk's slow score, in milliseconds.
    #[arg(long, env = "CAIRN_DISK_PROBE_TIMEOUT_MS", default_value_t = 50)]
    pub disk_probe_timeout_ms: u64,
    /// Start with per-stage timing off (it can be switched at run time).
    #[arg(long, env = "CAIRN_NO_STAGE_TIMING")]
    pub no_stage_timing: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Base URL of a Cairn node.
    #[arg(long, env = "CAIRN_SERVER", default_value = "http://127.0.0.1:7070")]
    pub server: String,
}

#[derive(Debug, Subcommand)]
pub enum StreamCommand {
    /// Create a stream.
    Create(StreamCreateArgs),
    /// List streams with their partitions' extent.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete a stream and all its data.
    Delete {
        #[command(flatten)]
        server: ServerArgs,
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct StreamCreateArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    pub name: String,
    #[arg(long, default_value_t = cairn_client::DEFAULT_PARTITIONS)]
    pub partitions: u32,
    /// When appends are acknowledged: fsync, interval or none.
    #[arg(long, default_value_t = Durability::Fsync)]
    pub durability: Durability,
    /// Delete segments whose newest entry is older than this.
    #[arg(long)]
    pub retention_ms: Option<u64>,
    /// Delete the oldest segments while a partition is larger than this.
    #[arg(long)]
    pub retention_bytes: Option<u64>,
    /// Roll partitions to a new segment at this size.
    #[arg(long, default_value_t = cairn_client::DEFAULT_SEGMENT_BYTES)]
    pub segment_bytes: u64,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[arg(long, env = "CAIRN_STREAM")]
    pub stream: String,
    /// Source of plain-text lines (and of JSON entries that have none).
    #[arg(long, default_value = "stdin")]
    pub source: String,
    /// Level of plain-text lines (and of JSON entries that have none).
    #[arg(long, default_value_t = Level::Info)]
    pub level: Level,
    /// Entries per request.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,
}

#[derive(Debug, Args)]
pub struct ReadArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[arg(long, env = "CAIRN_STREAM")]
    pub stream: String,
    #[arg(long)]
    pub partition: u32,
    /// First offset; default: the partition's first stored entry.
    #[arg(long)]
    pub offset: Option<u64>,
    /// Most entries to print (fetched in pages of up to 10,000).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[arg(long, env = "CAIRN_STREAM")]
    pub stream: String,
    /// Only entries newer than this long ago, e.g. 30s, 5m, 2h, 1d.
    #[arg(long, value_parser = parse_duration, conflicts_with = "start")]
    pub since: Option<Duration>,
    /// Only entries at or after this time (µs since the epoch).
    #[arg(long)]
    pub start: Option<i64>,
    /// Only entries at or before this time (µs since the epoch); default now.
    #[arg(long)]
    pub end: Option<i64>,
    /// Only entries at or above this level.
    #[arg(long)]
    pub level: Option<Level>,
    /// Only entries from exactly this source.
    #[arg(long)]
    pub source: Option<String>,
    /// Only entries whose message contains this text.
    #[arg(long)]
    pub contains: Option<String>,
    /// Most entries to print (at most 100,000).
    #[arg(long)]
    pub limit: Option<usize>,
}

/// Parses `500ms`, `30s`, `5m`, `2h`, `1d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 30s, 5m, 2h"))?;
    let ms = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "invalid duration unit {unit:?}: use ms, s, m, h or d"
            ));
        }
    };
    n.checked_mul(ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("5 weeks").is_err());
    }
}
