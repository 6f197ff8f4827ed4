//! Property-based fuzzing of the decoders that face untrusted bytes: the
//! record batch (a producer's APPEND payload, a segment read back) and the
//! binary protocol's request and response frames. Nothing may panic, and
//! whatever decodes must re-encode to itself.
//!
//! Inputs are both raw random bytes and mutations of valid encodings (bytes
//! flipped, cut short, extended) — with the batch CRC recomputed after the
//! mutation, so the entry decoder behind the checksum is reached too.
//! `CAIRN_FUZZ_CASES` sets the number of cases per property (default
//! 100,000); failures are shrunk and kept by proptest for the next run.
//! The seed corpus in `fuzz/corpus/{batch,frame}` (see
//! `fuzz/make_corpus.py`) is replayed first, every run.

use bytes::Bytes;
use cairn_types::protocol::{Op, Request, RequestBody, Response};
use cairn_types::{BatchBuilder, Entry, Level, RecordBatch};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("CAIRN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        // Shrinking a failure is worth the time; a pass is not.
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    }
}

fn valid_batch(n: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new();
    for i in 0..n {
        let mut attributes = std::collections::BTreeMap::new();
        if i % 2 == 0 {
            attributes.insert(format!("k{i}"), "v".repeat(i));
        }
        b.push(&Entry {
            timestamp_us: 1_700_000_000_000_000 + i as i64 * 7,
            level: Level::from_u8((i % 6) as u8 + 1).unwrap_or(Level::Info),
            source: format!("source-{i}"),
            message: format!("message {i} {}", "x".repeat(i * 3)),
            attributes,
        })
        .unwrap();
    }
    b.finish().as_bytes().to_vec()
}

/// Sets `batch_len` to the buffer's length and recomputes the CRC, so a
/// mutated batch passes the checksum and reaches the entry decoder.
fn reseal(raw: &mut [u8]) {
    if raw.len() < 12 {
        return;
    }
    let len = raw.len() as u32;
    raw[0..4].copy_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c(&raw[8..]);
    raw[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Everything a reader of an untrusted batch would do with it.
fn exercise_batch(raw: Vec<u8>) {
    if let Ok(batch) = RecordBatch::from_bytes(Bytes::from(raw)) {
        let valid = batch.validate_entries().is_ok();
        let mut decoded = 0u32;
        for item in batch.entries() {
            match item {
                Ok((_, e)) => {
                    let _ = e.to_owned();
                    decoded += 1;
                }
                Err(_) => break,
            }
        }
        if valid {
            assert_eq!(decoded, batch.count(), "a validated batch decodes fully");
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, xor: u8 },
    Truncate { at: usize },
    Extend { bytes: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..).prop_map(|(at, xor)| Mutation::Flip { at, xor }),
        1 => any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        1 => proptest::collection::vec(any::<u8>(), 1..32).prop_map(|bytes| Mutation::Extend { bytes }),
    ]
}

fn mutate(mut raw: Vec<u8>, mutations: &[Mutation], keep_header: usize) -> Vec<u8> {
    for m in mutations {
        match m {
            Mutation::Flip { at, xor } if raw.len() > keep_header => {
                let i = keep_header + at % (raw.len() - keep_header);
                raw[i] ^= xor;
            }
            Mutation::Truncate { at } if !raw.is_empty() => raw.truncate(at % raw.len()),
            Mutation::Extend { bytes } => raw.extend_from_slice(bytes),
            _ => {}
        }
    }
    raw
}

/// The files of `fuzz/corpus/<kind>` at the repository root.
fn corpus(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(kind);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus {}: {e}", dir.display()))
        .map(|f| {
            let path = f.expect("a corpus entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("a corpus file"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    files
}

#[test]
fn the_batch_corpus_never_panics_the_decoders() {
    for (name, raw) in corpus("batch") {
        let result = std::panic::catch_unwind(|| {
            exercise_batch(raw.clone());
            let mut sealed = raw.clone();
            reseal(&mut sealed);
            exercise_batch(sealed);
        });
        assert!(result.is_ok(), "fuzz/corpus/batch/{name} panicked");
    }
}

#[test]
fn the_frame_corpus_never_panics_and_requests_round_trip() {
    for (name, raw) in corpus("frame") {
        if let Ok(request) = Request::decode(Bytes::from(raw.clone())) {
            let again = Request::decode(request.encode().unwrap()).unwrap();
            assert_eq!(again, request, "fuzz/corpus/frame/{name}");
            if let RequestBody::Append { batch, .. } = request.body {
                exercise_batch(batch.to_vec());
            }
        }
        if let Ok(response) = Response::decode(Bytes::from(raw)) {
            let again = Response::decode(response.encode()).unwrap();
            assert_eq!(again, response, "fuzz/corpus/frame/{name}");
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes_never_panic_the_batch_decoder(raw in proptest::collection::vec(any::<u8>(), 0..256)) {
        exercise_batch(raw.clone());
        let mut sealed = raw;
        reseal(&mut sealed);
        exercise_batch(sealed);
    }

    #[test]
    fn mutated_batches_behind_a_valid_crc_never_panic_the_entry_decoder(
        n in 1usize..8,
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        // Mutate past the length and CRC fields, then make them agree.
        let mut raw = mutate(valid_batch(n), &mutations, 8);
        reseal(&mut raw);
        exercise_batch(raw);
    }

    #[test]
    fn random_frames_never_panic_and_requests_round_trip(raw in proptest::collection::vec(any::<u8>(), 0..128)) {
        if let Ok(request) = Request::decode(Bytes::from(raw.clone())) {
            let again = Request::decode(request.encode().unwrap()).unwrap();
            prop_assert_eq!(again, request);
        }
        if let Ok(response) = Response::decode(Bytes::from(raw)) {
            let again = Response::decode(response.encode()).unwrap();
            prop_assert_eq!(again, response);
        }
    }

    #[test]
    fn mutated_request_frames_never_panic(
        op in 1u8..=5,
        stream in "[a-z]{0,12}",
        n in 1usize..4,
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let body = match Op::from_u8(op).unwrap() {
            Op::Append => RequestBody::Append { stream: stream.clone(), batch: Bytes::from(valid_batch(n)) },
            Op::Ping => RequestBody::Ping,
            Op::Metadata => RequestBody::Metadata { stream: stream.clone(), leaders: n > 1 },
            Op::Auth => RequestBody::Auth { token: Bytes::from(stream.clone().into_bytes()) },
            Op::Read => RequestBody::Read {
                stream: stream.clone(),
                read: cairn_types::protocol::ReadRequest {
                    partition: n as u32,
                    offset: Some(n as u64),
                    limit: 100,
                    consistency: cairn_types::api::Consistency::Any,
                },
            },
        };
        let Ok(frame) = (Request { correlation_id: 7, body }).encode() else {
            return Ok(());
        };
        let raw = mutate(frame.to_vec(), &mutations, 0);
        if let Ok(Request { body: RequestBody::Append { batch, .. }, .. }) =
            Request::decode(Bytes::from(raw))
        {
            exercise_batch(batch.to_vec());
        }
    }
}
