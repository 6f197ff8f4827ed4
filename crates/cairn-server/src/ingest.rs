//! Parsing and validating producer requests.
//!
//! A request body is either a JSON array of entries or NDJSON (one entry
//! object per line). NDJSON is chosen when the content type says
//! `application/x-ndjson`, or when the body does not start with `[` — so a
//! single object posted as `application/json` is accepted as one entry.
//!
//! The whole body is parsed and every entry validated before anything is
//! appended: a request is all-or-nothing at the validation stage, and an error
//! names the offending line (NDJSON) or entry (array), both counted from 1.
//! Limits keep one request from monopolising memory or producing entries
//! that readers would choke on.
//!
//! The binary protocol's APPEND carries a record batch instead
//! ([`entries_from_batch`]); it is held to the same limits.

use std::collections::BTreeMap;

use cairn_types::{BatchBuilder, BatchError, Entry, ErrorCode, NewEntry, RecordBatch};
use serde_json::value::RawValue;

use crate::error::ApiError;

/// Most entries accepted in one request.
pub const MAX_ENTRIES: usize = 100_000;
/// Longest source, in bytes (a source must not be empty).
pub const MAX_SOURCE_BYTES: usize = 256;
/// Longest message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Most attributes on one entry.
pub const MAX_ATTRIBUTES: usize = 64;

/// How a request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    JsonArray,
    Ndjson,
}

/// Decides the framing from the content type and the first non-blank byte.
pub fn detect_format(content_type: Option<&str>, body: &[u8]) -> BodyFormat {
    let mime = content_type
        .and_then(|ct| ct.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase());
    if mime.as_deref() == Some("application/x-ndjson") {
        return BodyFormat::Ndjson;
    }
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => BodyFormat::JsonArray,
        _ => BodyFormat::Ndjson,
    }
}

/// Parses and validates a request body into entries as the producer sent
/// them (timestamps and levels still optional).
pub fn parse_new_entries(
    body: &[u8],
    content_type: Option<&str>,
) -> Result<Vec<NewEntry>, ApiError> {
    let entries = match detect_format(content_type, body) {
        BodyFormat::JsonArray => parse_array(body)?,
        BodyFormat::Ndjson => parse_ndjson(body)?,
    };
    if entries.is_empty() {
        return Err(ApiError::bad_request("the request holds no entries"));
    }
    Ok(entries)
}

/// Parses and validates a request body into entries, filling in `now_us`
/// for entries without a timestamp.
pub fn parse_entries(
    body: &[u8],
    content_type: Option<&str>,
    now_us: i64,
) -> Result<Vec<Entry>, ApiError> {
    let entries = parse_new_entries(body, content_type)?;
    Ok(entries.into_iter().map(|e| e.into_entry(now_us)).collect())
}

/// Turns the payload of a binary APPEND (one record batch, see
/// `cairn_types::protocol`) into validated entries. Everything is checked
/// before anything can be written: the CRC, the header (a producer's batch
/// has no offsets yet), the entry structure, and every entry against the
/// same limits as over HTTP. Errors name the entry, counted from 1.
pub fn entries_from_batch(batch: bytes::Bytes) -> Result<Vec<NewEntry>, ApiError> {
    let batch = checked_batch(batch)?;
    let mut out = Vec::with_capacity(batch.count() as usize);
    for item in batch.entries() {
        let (_, e) = item.map_err(|e| invalid_batch(e.to_string()))?;
        let e = e.to_owned();
        out.push(NewEntry {
            timestamp: Some(e.timestamp_us),
            level: Some(e.level),
            source: e.source,
            message: e.message,
            attributes: e.attributes,
        });
    }
    Ok(out)
}

fn invalid_batch(why: String) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidEntry,
        format!("record batch rejected: {why}"),
    )
}

/// Checks a producer's record batch completely — CRC, header (offsets
/// unassigned), structure, and every entry against the ingest limits —
/// without copying its entries out.
pub fn checked_batch(batch: bytes::Bytes) -> Result<RecordBatch, ApiError> {
    let batch = RecordBatch::from_bytes(batch).map_err(|e| invalid_batch(e.to_string()))?;
    let h = batch.header();
    // `requests` is the server's count of merged requests (telemetry): a
    // producer's batch is one request, so it may not claim more.
    if h.base_offset != 0 || h.epoch != 0 || h.flags != 0 || h.requests != 0 {
        return Err(invalid_batch(
            "a producer's batch has base offset 0, epoch 0, no flags and requests 0".into(),
        ));
    }
    let count = h.count as usize;
    if count == 0 {
        return Err(ApiError::bad_request("the request holds no entries"));
    }
    if count > MAX_ENTRIES {
        return Err(too_many(count));
    }
    batch
        .validate_entries()
        .map_err(|e| invalid_batch(e.to_string()))?;
    for (i, item) in batch.entries().enumerate() {
        let (_, e) = item.map_err(|e| invalid_batch(e.to_string()))?;
        validate_limits(
            Some(e.timestamp_us),
            e.source,
            e.message,
            e.attributes.len(),
        )
        .map_err(|why| invalid("entry", i + 1, why))?;
    }
    Ok(batch)
}

fn too_many(n: usize) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("the request holds {n} entries; at most {MAX_ENTRIES} are accepted per request"),
    )
}

fn invalid(place: &str, n: usize, why: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::InvalidEntry, format!("{place} {n}: {why}"))
}

/// A JSON array. Elements are first split as raw JSON (cheap: borrowed
/// slices), so the count limit applies before any entry is built and each
/// element's error can name its index.
fn parse_array(body: &[u8]) -> Result<Vec<NewEntry>, ApiError> {
    let raw: Vec<&RawValue> = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidEntry, format!("invalid JSON array: {e}")))?;
    if raw.len() > MAX_ENTRIES {
        return Err(too_many(raw.len()));
    }
    raw.iter()
        .enumerate()
        .map(|(i, r)| {
            let entry: NewEntry =
                serde_json::from_str(r.get()).map_err(|e| invalid("entry", i + 1, e))?;
            validate(&entry).map_err(|why| invalid("entry", i + 1, why))?;
            Ok(entry)
        })
        .collect()
}

/// One JSON object per line; blank lines (and a `\r` before `\n`) are
/// ignored, but still counted so line numbers match the producer's file.
fn parse_ndjson(body: &[u8]) -> Result<Vec<NewEntry>, ApiError> {
    let lines = || {
        body.split(|&b| b == b'\n')
            .enumerate()
            .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
    };
    let n = lines().count();
    if n > MAX_ENTRIES {
        return Err(too_many(n));
    }
    let mut out = Vec::with_capacity(n);
    for (i, line) in lines() {
        let entry: NewEntry =
            serde_json::from_slice(line).map_err(|e| invalid("line", i + 1, e))?;
        validate(&entry).map_err(|why| invalid("line", i + 1, why))?;
        out.push(entry);
    }
    Ok(out)
}

/// Checks one entry against the limits.
pub fn validate(e: &NewEntry) -> Result<(), String> {
    validate_limits(e.timestamp, &e.source, &e.message, e.attributes.len())
}

fn validate_limits(
    timestamp_us: Option<i64>,
    source: &str,
    message: &str,
    attributes: usize,
) -> Result<(), String> {
    // Microseconds since the Unix epoch: a negative one is a client bug
    // (e.g. -1 as "unset"), and would sort before every real entry.
    if let Some(ts) = timestamp_us
        && ts < 0
    {
        return Err(format!(
            "timestamp {ts} is before 1970: give microseconds since the Unix epoch, or omit it for the arrival time"
        ));
    }
    if source.is_empty() {
        return Err("source must not be empty".into());
    }
    if source.len() > MAX_SOURCE_BYTES {
        return Err(format!(
            "source is {} bytes long; at most {MAX_SOURCE_BYTES} are allowed",
            source.len()
        ));
    }
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(format!(
            "message is {} bytes long; at most {MAX_MESSAGE_BYTES} are allowed",
            message.len()
        ));
    }
    if attributes > MAX_ATTRIBUTES {
        return Err(format!(
            "entry has {attributes} attributes; at most {MAX_ATTRIBUTES} are allowed"
        ));
    }
    Ok(())
}

/// Splits entries by partition (hash of the source), keeping request order
/// within each partition, and encodes one batch per partition.
pub fn build_batches(
    entries: &[Entry],
    partitions: u32,
) -> Result<BTreeMap<u32, RecordBatch>, ApiError> {
    let mut builders: BTreeMap<u32, BatchBuilder> = BTreeMap::new();
    for e in entries {
        let p = cairn_types::partition_for_source(&e.source, partitions);
        builders
            .entry(p)
            .or_insert_with(|| BatchBuilder::with_capacity(16 * 1024))
            .push(e)
            .map_err(|err| match err {
                BatchError::TooLarge => ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    format!(
                        "the entries for partition {p} exceed the largest batch the log stores"
                    ),
                ),
                other => ApiError::internal(format!("encoding entries: {other}")),
            })?;
    }
    Ok(builders.into_iter().map(|(p, b)| (p, b.finish())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_types::Level;

    #[test]
    fn format_follows_content_type_then_first_byte() {
        assert_eq!(detect_format(None, b"  [ {} ]"), BodyFormat::JsonArray);
        assert_eq!(detect_format(None, b"{}\n{}"), BodyFormat::Ndjson);
        assert_eq!(
            detect_format(Some("application/json"), b"{}"),
            BodyFormat::Ndjson
        );
        assert_eq!(
            detect_format(Some("application/x-ndjson; charset=utf-8"), b"[1]"),
            BodyFormat::Ndjson
        );
    }

    #[test]
    fn parses_arrays_and_ndjson_with_defaults() {
        let body = br#"[{"source":"api","message":"a"},{"timestamp":5,"level":"error","source":"db","message":"b","attributes":{"k":"v"}}]"#;
        let entries = parse_entries(body, Some("application/json"), 99).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            (entries[0].timestamp_us, entries[0].level),
            (99, Level::Info)
        );
        assert_eq!(
            (entries[1].timestamp_us, entries[1].level),
            (5, Level::Error)
        );
        assert_eq!(entries[1].attributes["k"], "v");

        let body =
            b"{\"source\":\"a\",\"message\":\"1\"}\r\n\n  \n{\"source\":\"b\",\"message\":\"2\"}";
        let entries = parse_entries(body, None, 1).unwrap();
        assert_eq!(
            entries
                .iter()
                .map(|e| e.source.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn a_negative_timestamp_is_refused_naming_the_entry() {
        let body =
            br#"[{"source":"a","message":"ok"},{"timestamp":-1,"source":"a","message":"b"}]"#;
        let e = parse_entries(body, Some("application/json"), 1).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidEntry);
        assert!(
            e.message.contains("entry 2") && e.message.contains("before 1970"),
            "{}",
            e.message
        );
    }

    #[test]
    fn errors_name_the_line_or_entry() {
        let mut body = String::new();
        for i in 0..40 {
            if i == 36 {
                body.push_str("{\"source\":\"a\",\"message\":\"x\",\"level\":\"LOUD\"}\n");
            } else {
                body.push_str("{\"source\":\"a\",\"message\":\"x\"}\n");
            }
        }
        let e = parse_entries(body.as_bytes(), None, 0).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidEntry);
        assert!(
            e.message.starts_with("line 37: unknown level"),
            "{}",
            e.message
        );

        let e = parse_entries(b"{\"source\":\"a\",\"message\":\"x\"}\nnot json\n", None, 0)
            .unwrap_err();
        assert!(e.message.starts_with("line 2:"), "{}", e.message);

        let e = parse_entries(
            br#"[{"source":"a","message":"x"},{"message":"x"}]"#,
            None,
            0,
        )
        .unwrap_err();
        assert!(
            e.message.starts_with("entry 2: missing field `source`"),
            "{}",
            e.message
        );

        let e = parse_entries(br#"[{"source":"a","message":"x","extra":1}]"#, None, 0).unwrap_err();
        assert!(e.message.contains("unknown field `extra`"), "{}", e.message);

        let e = parse_entries(b"[{\"source\":", None, 0).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidEntry);
    }

    #[test]
    fn limits_are_enforced() {
        let entry = |source: String, message: String, attrs: usize| NewEntry {
            timestamp: None,
            level: None,
            source,
            message,
            attributes: (0..attrs).map(|i| (i.to_string(), String::new())).collect(),
        };
        assert!(validate(&entry("a".into(), String::new(), 0)).is_ok());
        assert!(validate(&entry(String::new(), String::new(), 0)).is_err());
        assert!(validate(&entry("s".repeat(256), String::new(), 0)).is_ok());
        assert!(validate(&entry("s".repeat(257), String::new(), 0)).is_err());
        assert!(validate(&entry("a".into(), "m".repeat(256 * 1024), 0)).is_ok());
        assert!(validate(&entry("a".into(), "m".repeat(256 * 1024 + 1), 0)).is_err());
        assert!(validate(&entry("a".into(), String::new(), 64)).is_ok());
        assert!(validate(&entry("a".into(), String::new(), 65)).is_err());

        let body = "{\"source\":\"a\",\"message\":\"\"}\n".repeat(MAX_ENTRIES + 1);
        let e = parse_entries(body.as_bytes(), None, 0).unwrap_err();
        assert_eq!(e.code, ErrorCode::PayloadTooLarge);
        let body = format!(
            "[{}]",
            vec!["{\"source\":\"a\",\"message\":\"\"}"; MAX_ENTRIES + 1].join(",")
        );
        let e = parse_entries(body.as_bytes(), None, 0).unwrap_err();
        assert_eq!(e.code, ErrorCode::PayloadTooLarge);

        assert_eq!(
            parse_entries(b"\n\n", None, 0).unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            parse_entries(b"[]", None, 0).unwrap_err().code,
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn batches_group_by_source_partition_in_request_order() {
        let entries: Vec<Entry> = (0..20)
            .map(|i| {
                NewEntry {
                    timestamp: Some(i),
                    level: None,
                    source: format!("s{}", i % 5),
                    message: i.to_string(),
                    attributes: Default::default(),
                }
                .into_entry(0)
            })
            .collect();
        let batches = build_batches(&entries, 3).unwrap();
        let total: u32 = batches.values().map(|b| b.count()).sum();
        assert_eq!(total, 20);
        for (p, batch) in &batches {
            let mut last = -1;
            for item in batch.entries() {
                let (_, e) = item.unwrap();
                assert_eq!(cairn_types::partition_for_source(e.source, 3), *p);
                assert!(e.timestamp_us > last);
                last = e.timestamp_us;
            }
        }
    }

    #[test]
    fn batches_from_producers_are_checked_whole() {
        let entry = |source: &str, ts: i64| Entry {
            timestamp_us: ts,
            level: Level::Warn,
            source: source.into(),
            message: "m".into(),
            attributes: BTreeMap::from([("k".into(), "v".into())]),
        };
        let batch = |entries: &[Entry]| {
            let mut b = BatchBuilder::new();
            for e in entries {
                b.push(e).unwrap();
            }
            b.finish()
        };
        let good = batch(&[entry("a", 5), entry("b", 3)]);
        let got = entries_from_batch(good.as_bytes().clone()).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[1].timestamp, got[1].level, got[1].source.as_str()),
            (Some(3), Some(Level::Warn), "b")
        );
        assert_eq!(got[0].attributes["k"], "v");

        let mut flipped = good.as_bytes().to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let e = entries_from_batch(bytes::Bytes::from(flipped)).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidEntry);
        assert!(e.message.contains("checksum"), "{}", e.message);

        let e = entries_from_batch(good.restamped(10, 0, 0).as_bytes().clone()).unwrap_err();
        assert!(e.message.contains("base offset 0"), "{}", e.message);

        // A producer cannot claim to be many requests (it would inflate the
        // per-request write-stage counts).
        let mut claims = BatchBuilder::new();
        claims.push(&entry("a", 1)).unwrap();
        claims.set_requests(50);
        let e = entries_from_batch(claims.finish().as_bytes().clone()).unwrap_err();
        assert!(e.message.contains("requests 0"), "{}", e.message);

        let e = entries_from_batch(batch(&[entry("a", 1), entry("", 2)]).as_bytes().clone())
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidEntry);
        assert!(e.message.starts_with("entry 2: source"), "{}", e.message);

        let e = entries_from_batch(batch(&[]).as_bytes().clone()).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
    }
}
