//! Property-based fuzzing of HTTP ingest: any body — random bytes, or a
//! valid JSON array / NDJSON body with bytes flipped, cut or added — is
//! either refused with a 4xx error or parsed into entries that pass the
//! limits and encode into partition batches that decode back to them.
//! Nothing panics. `CAIRN_FUZZ_CASES` sets the cases per property (default
//! 100,000). The seed corpus in `fuzz/corpus/ingest` (see
//! `fuzz/make_corpus.py`) is replayed first, every run, with each content
//! type.

use cairn_server::ingest::{build_batches, parse_entries};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("CAIRN_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000),
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    }
}

const CONTENT_TYPES: [Option<&str>; 4] = [
    None,
    Some("application/json"),
    Some("application/x-ndjson"),
    Some("text/plain"),
];

fn exercise(body: &[u8], content_type: Option<&str>) {
    match parse_entries(body, content_type, 1_700_000_000_000_000) {
        Ok(entries) => {
            assert!(!entries.is_empty(), "an accepted body holds entries");
            let batches = build_batches(&entries, 4).expect("accepted entries encode");
            let decoded: usize = batches
                .values()
                .map(|b| {
                    b.validate_entries().expect("our own batch validates");
                    b.count() as usize
                })
                .sum();
            assert_eq!(decoded, entries.len());
        }
        Err(e) => {
            let status = e.code.http_status();
            assert!((400..500).contains(&status), "{}: {}", e.code, e.message);
        }
    }
}

fn seed_body(n: usize, ndjson: bool) -> Vec<u8> {
    let entries: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"timestamp":{},"level":"warn","source":"s{i}","message":"m {i} \u00e9\n","attributes":{{"k":"v{i}"}}}}"#,
                1_700_000_000_000_000i64 + i as i64
            )
        })
        .collect();
    if ndjson {
        entries.join("\n").into_bytes()
    } else {
        format!("[{}]", entries.join(",")).into_bytes()
    }
}

#[test]
fn the_ingest_corpus_is_parsed_or_refused_with_a_4xx() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/ingest");
    let mut seen = 0;
    for f in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = f.expect("a corpus entry").path();
        let body = std::fs::read(&path).expect("a corpus file");
        for ct in CONTENT_TYPES {
            let result = std::panic::catch_unwind(|| exercise(&body, ct));
            assert!(result.is_ok(), "{} ({ct:?}) panicked", path.display());
        }
        seen += 1;
    }
    assert!(seen > 0, "no corpus in {}", dir.display());
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bodies_are_parsed_or_refused_with_a_4xx(
        body in proptest::collection::vec(any::<u8>(), 0..256),
        ct in 0usize..4,
    ) {
        exercise(&body, CONTENT_TYPES[ct]);
    }

    #[test]
    fn mutated_json_bodies_are_parsed_or_refused_with_a_4xx(
        n in 1usize..5,
        ndjson in any::<bool>(),
        ct in 0usize..4,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let mut body = seed_body(n, ndjson);
        for (at, byte) in flips {
            let i = at % body.len();
            body[i] = byte;
        }
        if let Some(at) = cut {
            body.truncate(at % (body.len() + 1));
        }
        exercise(&body, CONTENT_TYPES[ct]);
    }
}
