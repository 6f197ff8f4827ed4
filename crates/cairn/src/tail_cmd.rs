//! `cairn tail`: a stream's last entries across all partitions, in
//! timestamp order, as NDJSON (the `cairn query` entry shape: partition,
//! offset and the entry), and with `--follow` new entries as they commit.
//!
//! Partitions are independent logs, so "the last N entries" is taken as
//! the N latest by timestamp among each partition's last N by offset: exact
//! when timestamps rise with offsets within a partition (entries stamped on
//! arrival), close otherwise. `--follow` polls each partition from where
//! it left off and prints what each poll found merged by timestamp; entries
//! of different polls are printed in poll order, so an entry that commits
//! late (a slow partition, a producer's old timestamps) is printed when it
//! arrives, never dropped.

use std::io::Write;

use anyhow::{Context, Result};
use cairn_client::{Client, QueryEntry, ReadParams};
use cairn_types::ErrorCode;

use crate::cli::TailArgs;

/// Largest page the server serves for one partition read.
const MAX_READ_PAGE: usize = 10_000;

pub async fn run(args: TailArgs) -> Result<()> {
    let client = crate::client_cmds::client(&args.server).await?;
    let info = client.get_stream(&args.stream).await?;
    let mut next = Vec::with_capacity(info.partitions.len());
    let mut last = Vec::new();
    for p in &info.partitions {
        let (entries, end) = last_entries(&client, &args.stream, p.partition, args.lines, p)
            .await
            .with_context(|| format!("read partition {}", p.partition))?;
        last.extend(entries);
        next.push((p.partition, end));
    }
    sort_by_time(&mut last);
    let skip = last.len().saturating_sub(args.lines);
    print(&last[skip..])?;
    if !args.follow {
        return Ok(());
    }
    // One handler for the whole run: a Ctrl-C during a poll is kept and
    // seen at the next wait (a fresh `ctrl_c()` per wait would miss it).
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("install the SIGINT handler")?;
    let mut ticker = tokio::time::interval(args.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = interrupt.recv() => return Ok(()),
            _ = ticker.tick() => {}
        }
        let mut fresh = Vec::new();
        for (partition, from) in &mut next {
            let (entries, end) = read_from(&client, &args.stream, *partition, *from)
                .await
                .with_context(|| format!("read partition {partition}"))?;
            *from = end;
            fresh.extend(entries);
        }
        sort_by_time(&mut fresh);
        print(&fresh)?;
    }
}

/// The last `n` entries of one partition by offset, and the offset after
/// them. The stream's extent is only a hint (it comes from the answering
/// node's replica, zero if it holds none): each read's answer says where
/// the partition really ends, and the read is redone from there.
async fn last_entries(
    client: &Client,
    stream: &str,
    partition: u32,
    n: usize,
    hint: &cairn_client::PartitionInfo,
) -> Result<(Vec<QueryEntry>, u64)> {
    let mut from = hint
        .end_offset
        .saturating_sub(n as u64)
        .max(hint.start_offset);
    loop {
        let page = read_page(client, stream, partition, Some(from), n.max(1)).await?;
        let want = page
            .end_offset
            .saturating_sub(n as u64)
            .max(page.start_offset);
        if want > from {
            from = want;
            continue;
        }
        if n == 0 {
            return Ok((Vec::new(), page.end_offset));
        }
        let (mut entries, end) = read_from(client, stream, partition, from).await?;
        let skip = entries.len().saturating_sub(n);
        entries.drain(..skip);
        return Ok((entries, end));
    }
}

/// Every committed entry of one partition from `from`, and where to
/// continue.
async fn read_from(
    client: &Client,
    stream: &str,
    partition: u32,
    mut from: u64,
) -> Result<(Vec<QueryEntry>, u64)> {
    let mut out = Vec::new();
    loop {
        let page = read_page(client, stream, partition, Some(from), MAX_READ_PAGE).await?;
        // Retention may have deleted entries we had not printed yet.
        from = from.max(page.start_offset);
        let done = page.entries.is_empty() || page.next_offset >= page.end_offset;
        for e in page.entries {
            from = e.offset + 1;
            out.push(QueryEntry {
                partition,
                offset: e.offset,
                entry: e.entry,
            });
        }
        if done {
            return Ok((out, from));
        }
    }
}

/// One read; an offset retention has already deleted reads from the
/// partition's start instead.
async fn read_page(
    client: &Client,
    stream: &str,
    partition: u32,
    offset: Option<u64>,
    limit: usize,
) -> Result<cairn_client::ReadResponse> {
    let params = |offset| ReadParams {
        offset,
        limit: Some(limit.min(MAX_READ_PAGE)),
        consistency: None,
    };
    match client.read(stream, partition, params(offset)).await {
        Err(e) if e.code() == Some(ErrorCode::OffsetOutOfRange) => {
            let start = client.read(stream, partition, params(None)).await?;
            // Past the end (the hint was from a longer replica): continue
            // at the end; before the start: the start's answer is right.
            if offset.is_some_and(|o| o > start.end_offset) {
                return Ok(client
                    .read(stream, partition, params(Some(start.end_offset)))
                    .await?);
            }
            Ok(start)
        }
        other => Ok(other?),
    }
}

fn sort_by_time(entries: &mut [QueryEntry]) {
    entries.sort_by_key(|e| (e.entry.timestamp_us, e.partition, e.offset));
}

fn print(entries: &[QueryEntry]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for e in entries {
        serde_json::to_writer(&mut out, e)?;
        out.write_all(b"\n")?;
    }
    // Followers of the output (pipes, tests) see each poll at once.
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_types::{Entry, Level};

    fn e(ts: i64, partition: u32, offset: u64) -> QueryEntry {
        QueryEntry {
            partition,
            offset,
            entry: Entry {
                timestamp_us: ts,
                level: Level::Info,
                source: "s".into(),
                message: "m".into(),
                attributes: Default::default(),
            },
        }
    }

    #[test]
    fn entries_sort_by_time_then_partition_then_offset() {
        let mut v = vec![e(5, 1, 0), e(3, 0, 9), e(5, 0, 2), e(5, 0, 1)];
        sort_by_time(&mut v);
        let keys: Vec<_> = v
            .iter()
            .map(|q| (q.entry.timestamp_us, q.partition, q.offset))
            .collect();
        assert_eq!(keys, [(3, 0, 9), (5, 0, 1), (5, 0, 2), (5, 1, 0)]);
    }
}
