//! The client subcommands: `stream`, `produce`, `read`, `query`.
//! `produce --api binary` sends over the binary protocol; the rest is HTTP.
//!
//! Data goes to stdout as NDJSON (one entry per line) so it pipes into
//! `jq` or back into `cairn produce`; summaries and errors go to stderr.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use cairn_client::{Client, QueryParams, ReadParams, StreamConfig, TcpProducer};
use cairn_types::NewEntry;
use serde_json::Value;

use crate::cli::{
    Command, ProduceApi, ProduceArgs, ProduceFormat, QueryArgs, ReadArgs, ServerArgs, StreamCommand,
};

/// Largest page the server serves for one partition read.
const MAX_READ_PAGE: usize = 10_000;
/// A produce request is sent early once its body (or, for the binary
/// protocol, its batch, roughly) reaches this size, so it stays well under
/// the server's default 8 MiB limit.
const MAX_PRODUCE_BODY: usize = 4 << 20;
/// A partial produce batch is sent after stdin has been idle this long.
const PRODUCE_LINGER: Duration = Duration::from_secs(1);

pub fn run(command: Command) -> Result<()> {
    block_on(async move {
        match command {
            Command::Stream(cmd) => stream(cmd).await,
            Command::Produce(args) => produce(args).await,
            Command::Read(args) => read(args).await,
            Command::Query(args) => query(args).await,
            other => unreachable!("not a data command: {other:?}"),
        }
    })
}

/// Runs one client command to its end on a single-threaded runtime, with
/// warnings (and worse) logged to stderr.
pub(crate) fn block_on(command: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    crate::node_cmd::init_logging("warn");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?
        .block_on(command)
}

/// The node to talk to: `--server`, or the first of `--cluster` whose
/// `/health` answers within a second.
pub(crate) async fn client(args: &ServerArgs) -> Result<Client> {
    let options = args.client_options()?;
    if args.cluster.is_empty() {
        return Ok(Client::with_options(
            &normalize_url(&args.server),
            &options,
        )?);
    }
    let mut failures = Vec::new();
    for url in &args.cluster {
        let url = &normalize_url(url);
        let mut probe = cairn_client::http_builder().timeout(std::time::Duration::from_secs(1));
        if let Some(tls) = &options.tls_ca {
            probe = probe.tls_backend_preconfigured((**tls).clone());
        }
        let client = Client::with_http_client(url, probe.build()?)?;
        match client.health().await {
            Ok(_) => return Ok(Client::with_options(url, &options)?),
            Err(e) => failures.push(format!("{url}: {e}")),
        }
    }
    anyhow::bail!("no node of the cluster answered: {}", failures.join("; "))
}

/// A server given as `HOST:PORT` means `http://HOST:PORT` (a node with TLS
/// needs `https://` spelled out); anything with a scheme is left for the
/// client to judge.
pub(crate) fn normalize_url(url: &str) -> String {
    if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

/// `unix_ms` as an RFC 3339 UTC time, for people.
pub(crate) fn format_unix_ms(unix_ms: u64) -> String {
    let secs = (unix_ms / 1000) as i64;
    let nanos = ((unix_ms % 1000) * 1_000_000) as u32;
    chrono::DateTime::<chrono::Utc>::from_timestamp(secs, nanos).map_or_else(
        || unix_ms.to_string(),
        |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
    )
}

async fn stream(cmd: StreamCommand) -> Result<()> {
    match cmd {
        StreamCommand::Create(a) => {
            let config = StreamConfig {
                partitions: a.partitions,
                retention_ms: a.retention_ms,
                retention_bytes: a.retention_bytes,
                segment_bytes: a.segment_bytes,
                durability: a.durability,
                replication_factor: a.replication_factor,
            };
            let info = client(&a.server)
                .await?
                .create_stream(&a.name, config)
                .await?;
            println!(
                "created stream {} ({} partitions, durability {})",
                info.name, info.config.partitions, info.config.durability
            );
        }
        StreamCommand::List { server } => {
            let streams = client(&server).await?.list_streams().await?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<32} {:>10} {:>12} {:>14} {:>10}",
                "NAME", "PARTITIONS", "ENTRIES", "BYTES", "DURABILITY"
            )?;
            for s in streams {
                let entries: u64 = s
                    .partitions
                    .iter()
                    .map(|p| p.end_offset - p.start_offset)
                    .sum();
                let bytes: u64 = s.partitions.iter().map(|p| p.size_bytes).sum();
                writeln!(
                    out,
                    "{:<32} {:>10} {:>12} {:>14} {:>10}",
                    s.name, s.config.partitions, entries, bytes, s.config.durability
                )?;
            }
        }
        StreamCommand::Delete { server, name } => {
            client(&server).await?.delete_stream(&name).await?;
            println!("deleted stream {name}");
        }
    }
    Ok(())
}

/// Turns one input line into an entry. With `--format auto` (the default)
/// a line that starts with `{` must be a JSON entry — a malformed one is an
/// error, never silently stored as text with the default level — and any
/// other line is the message of a plain entry; `--format json` requires
/// every line to be JSON, `--format text` takes every line as plain text.
/// Missing `source`/`level` of a JSON entry come from the flags. Blank
/// lines give `None`.
pub fn line_to_entry(line: &str, args: &ProduceArgs) -> Result<Option<NewEntry>, String> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.trim().is_empty() {
        return Ok(None);
    }
    let looks_json = line.trim_start().starts_with('{');
    let as_json = match args.format {
        ProduceFormat::Text => false,
        ProduceFormat::Json => true,
        ProduceFormat::Auto => looks_json,
    };
    if as_json {
        let mut obj = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(obj)) => obj,
            Ok(_) => return Err("expected a JSON object (an entry)".into()),
            Err(e) => {
                return Err(format!(
                    "not valid JSON: {e}{}",
                    if args.format == ProduceFormat::Auto {
                        " (use --format text to store such lines as plain text)"
                    } else {
                        ""
                    }
                ));
            }
        };
        obj.entry("source")
            .or_insert_with(|| Value::String(args.source.clone()));
        obj.entry("level")
            .or_insert_with(|| Value::String(args.level.as_str().into()));
        return serde_json::from_value(Value::Object(obj))
            .map(Some)
            .map_err(|e| format!("a JSON object must be an entry: {e}"));
    }
    Ok(Some(NewEntry {
        timestamp: None,
        level: Some(args.level),
        source: args.source.clone(),
        message: line.to_string(),
        attributes: Default::default(),
    }))
}

/// Where `produce` sends its batches: NDJSON bodies over HTTP, or record
/// batches over the binary protocol. One request is in flight at a time
/// either way, so one source's lines stay in order across requests.
enum Sink {
    Http {
        client: Client,
        body: Vec<u8>,
    },
    Binary {
        producer: TcpProducer,
        entries: Vec<NewEntry>,
        size: usize,
    },
}

impl Sink {
    /// Connects and checks the stream exists, before stdin is read.
    async fn open(args: &ProduceArgs) -> Result<Sink> {
        match args.api {
            ProduceApi::Http => {
                let client = client(&args.server).await?;
                client.get_stream(&args.stream).await?;
                Ok(Sink::Http {
                    client,
                    body: Vec::new(),
                })
            }
            ProduceApi::Binary => {
                if args.tcp.is_empty() {
                    bail!("--api binary needs --tcp: the nodes' binary protocol addresses");
                }
                let options = cairn_client::TcpOptions {
                    token: args.server.token.clone(),
                    tls: crate::cli::load_tls_ca(args.server.tls_ca.as_deref())?,
                    ..Default::default()
                };
                let producer = TcpProducer::connect_any(args.tcp.clone(), options).await?;
                producer.partitions(&args.stream).await?;
                Ok(Sink::Binary {
                    producer,
                    entries: Vec::new(),
                    size: 0,
                })
            }
        }
    }

    fn push(&mut self, entry: NewEntry) -> Result<()> {
        match self {
            Sink::Http { body, .. } => {
                serde_json::to_writer(&mut *body, &entry)?;
                body.push(b'\n');
            }
            Sink::Binary { entries, size, .. } => {
                // Roughly the encoded size: strings plus a few varints.
                *size += 16
                    + entry.source.len()
                    + entry.message.len()
                    + entry
                        .attributes
                        .iter()
                        .map(|(k, v)| 2 + k.len() + v.len())
                        .sum::<usize>();
                entries.push(entry);
            }
        }
        Ok(())
    }

    /// Bytes of the request being built.
    fn size(&self) -> usize {
        match self {
            Sink::Http { body, .. } => body.len(),
            Sink::Binary { size, .. } => *size,
        }
    }

    /// Sends what was pushed; answers how many entries were appended.
    async fn flush(&mut self, stream: &str) -> Result<u64> {
        let appended = match self {
            Sink::Http { client, body } => {
                client
                    .append_ndjson(stream, std::mem::take(body))
                    .await?
                    .appended
            }
            Sink::Binary {
                producer,
                entries,
                size,
            } => {
                *size = 0;
                let r = producer.append(stream, entries).await?;
                entries.clear();
                r.appended
            }
        };
        Ok(appended)
    }
}

async fn produce(args: ProduceArgs) -> Result<()> {
    use tokio::io::AsyncBufReadExt;

    // Fail before reading stdin if the stream is not there.
    let mut sink = Sink::open(&args).await?;
    let (mut entries, mut batches) = (0u64, 0u64);
    let mut in_batch = 0u32;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut line_no = 0u64;
    loop {
        // A partial batch goes out once stdin has been quiet for a while,
        // so `tail -f app.log | cairn produce` does not sit on entries.
        let line = match tokio::time::timeout(PRODUCE_LINGER, lines.next_line()).await {
            Ok(line) => line.context("read stdin")?,
            Err(_idle) => {
                if in_batch > 0 {
                    entries += sink.flush(&args.stream).await?;
                    batches += 1;
                    in_batch = 0;
                }
                continue;
            }
        };
        let Some(line) = line else { break };
        line_no += 1;
        let entry = match line_to_entry(&line, &args) {
            Ok(Some(e)) => e,
            Ok(None) => continue,
            Err(e) => {
                return Err(anyhow!(
                    "stdin line {line_no}: {e} ({entries} entries were already produced)"
                ));
            }
        };
        sink.push(entry)?;
        in_batch += 1;
        if in_batch >= args.batch_size || sink.size() >= MAX_PRODUCE_BODY {
            entries += sink.flush(&args.stream).await?;
            batches += 1;
            in_batch = 0;
        }
    }
    if in_batch > 0 {
        entries += sink.flush(&args.stream).await?;
        batches += 1;
    }
    eprintln!("produced {entries} entries in {batches} batches");
    Ok(())
}

async fn read(args: ReadArgs) -> Result<()> {
    let client = client(&args.server).await?;
    let mut out = std::io::stdout().lock();
    let mut offset = args.offset;
    let mut left = args.limit;
    while left > 0 {
        let page = client
            .read(
                &args.stream,
                args.partition,
                ReadParams {
                    offset,
                    limit: Some(left.min(MAX_READ_PAGE)),
                    consistency: None,
                },
            )
            .await?;
        for e in &page.entries {
            serde_json::to_writer(&mut out, e)?;
            out.write_all(b"\n")?;
        }
        left -= page.entries.len().min(left);
        if page.entries.is_empty() || page.next_offset >= page.end_offset {
            break;
        }
        offset = Some(page.next_offset);
    }
    out.flush()?;
    Ok(())
}

async fn query(args: QueryArgs) -> Result<()> {
    let client = client(&args.server).await?;
    let start = match args.since {
        Some(since) => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
            let start = now.saturating_sub(since);
            Some(i64::try_from(start.as_micros())?)
        }
        None => args.start,
    };
    let params = QueryParams {
        start,
        end: args.end,
        level: args.level,
        source: args.source,
        contains: args.contains,
        limit: args.limit,
        consistency: None,
        partitions: None,
        order: args.newest.then_some(cairn_client::Order::Newest),
    };
    let r = client.query(&args.stream, &params).await?;
    let mut out = std::io::stdout().lock();
    for e in &r.entries {
        serde_json::to_writer(&mut out, e)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    if !r.failed_partitions.is_empty() {
        for f in &r.failed_partitions {
            eprintln!(
                "partition {} could not be read: {} ({})",
                f.partition, f.message, f.code
            );
        }
        anyhow::bail!(
            "partial result: {} partition(s) could not be read",
            r.failed_partitions.len()
        );
    }
    if r.truncated {
        eprintln!(
            "note: {} entries shown; more match (raise --limit or narrow the range)",
            r.entries.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_types::Level;

    fn args() -> ProduceArgs {
        ProduceArgs {
            server: ServerArgs {
                server: "http://127.0.0.1:1".into(),
                cluster: Vec::new(),
                token: None,
                tls_ca: None,
            },
            stream: "s".into(),
            source: "cli".into(),
            level: Level::Warn,
            batch_size: 10,
            api: ProduceApi::Http,
            tcp: Vec::new(),
            format: ProduceFormat::Auto,
        }
    }

    #[test]
    fn given_a_malformed_json_line_when_producing_should_refuse_it_not_store_text() {
        let mut a = args();
        for bad in [r#"{"message":"m","level":"error""#, r#"{"message":"m",}"#] {
            let e = line_to_entry(bad, &a).unwrap_err();
            assert!(e.contains("not valid JSON"), "{e}");
        }
        assert!(
            line_to_entry("[1,2]", &a).unwrap().is_some(),
            "not JSON-looking: text"
        );
        a.format = ProduceFormat::Text;
        let e = line_to_entry(r#"{"message":"m","#, &a).unwrap().unwrap();
        assert_eq!(e.message, r#"{"message":"m","#);
        a.format = ProduceFormat::Json;
        assert!(line_to_entry("plain", &a).is_err());
    }

    #[test]
    fn lines_become_entries() {
        let a = args();
        assert_eq!(line_to_entry("   ", &a), Ok(None));
        let e = line_to_entry("plain text\r", &a).unwrap().unwrap();
        assert_eq!(
            (e.source.as_str(), e.level, e.message.as_str()),
            ("cli", Some(Level::Warn), "plain text")
        );
        let e = line_to_entry(r#"{"message":"m","level":"error"}"#, &a)
            .unwrap()
            .unwrap();
        assert_eq!((e.source.as_str(), e.level), ("cli", Some(Level::Error)));
        let e = line_to_entry(r#"{"source":"api","message":"m","timestamp":5}"#, &a)
            .unwrap()
            .unwrap();
        assert_eq!((e.source.as_str(), e.timestamp), ("api", Some(5)));
        // Valid JSON that is not an object is just text.
        let e = line_to_entry("[1,2]", &a).unwrap().unwrap();
        assert_eq!(e.message, "[1,2]");
        assert!(line_to_entry(r#"{"msg":"m"}"#, &a).is_err());
    }
}
