#!/usr/bin/env python3
"""Writes the seed corpus the fuzz tests replay on every run (fuzz/corpus/).

Each file is an input that once mattered or sits on an edge of a decoder:
empty and truncated headers, lengths that claim more than is there, the
largest values a field can hold, deep nesting, bad UTF-8. The property
tests (crates/*/tests/fuzz*.rs) generate 100,000 more per run; a failure
they find and shrink belongs here too, named after what it broke.
Run from the repository root: python3 fuzz/make_corpus.py
"""
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(kind, name, data):
    d = os.path.join(ROOT, kind)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# Record batches (crates/cairn-types/src/batch.rs): batch_len u32, crc u32,
# magic (2), flags, requests u16, count u32, base_offset, min_ts, max_ts,
# epoch, log_index (u64 each; all little-endian), then the entries. The
# replay also reseals each input (length and CRC made to agree) so the
# entry decoder behind the checksum is reached.
def batch_header(count, flags=0, magic=2, length=None, payload=b""):
    body = struct.pack("<BBHIqqqqq", magic, flags, 1, count, 0, 0, 0, 1, 1) + payload
    return struct.pack("<II", length if length is not None else 8 + len(body), 0) + body

put("batch", "empty", b"")
put("batch", "length-only", struct.pack("<I", 8))
put("batch", "length-claims-4gib", batch_header(1, length=0xFFFFFFFF))
put("batch", "header-of-zeros", b"\0" * 56)
put("batch", "header-of-ones", b"\xff" * 64)
put("batch", "count-huge-no-entries", batch_header(0xFFFFFFFF))
put("batch", "control-batch-with-count", batch_header(3, flags=1))
put("batch", "unknown-magic", batch_header(1, magic=9, payload=b"\0" * 8))
put("batch", "entry-varint-eleven-bytes", batch_header(1, payload=b"\xff" * 11 + b"\x01"))
put("batch", "entry-string-runs-past-payload", batch_header(1, payload=b"\x00\x01" + b"\x7f" + b"ab"))

# Binary protocol request and response frames (crates/cairn-types/src/
# protocol.rs), without the u32 length prefix the codec strips: version,
# op, reserved u16, correlation id u64, name length u16 (little-endian),
# name, payload.
def frame(op, name=b"", payload=b"", version=1, corr=7, name_len=None):
    n = len(name) if name_len is None else name_len
    return struct.pack("<BBHQH", version, op, 0, corr, n) + name + payload

put("frame", "empty", b"")
put("frame", "eleven-bytes", frame(2)[:11])
put("frame", "ping", frame(2))
put("frame", "ping-correlation-zero", frame(2, corr=0))
put("frame", "unknown-op", frame(0x7F))
put("frame", "newer-version", frame(2, version=200))
put("frame", "auth-empty-token", frame(4))
put("frame", "name-longer-than-frame", frame(1, name=b"s", name_len=0xFFFF))
put("frame", "name-not-utf8", frame(3, name=b"\xff\xfe"))
put("frame", "append-empty-batch", frame(1, name=b"app"))
put("frame", "append-garbage-batch", frame(1, name=b"app", payload=b"\xff" * 64))
put("frame", "ones", b"\xff" * 64)

# HTTP ingest bodies (crates/cairn-server/src/ingest.rs), tried with every
# content type.
entry = {"timestamp": 1700000000000000, "level": "info", "source": "s", "message": "m"}
put("ingest", "empty", b"")
put("ingest", "empty-array", b"[]")
put("ingest", "object-not-array", json.dumps(entry).encode())
put("ingest", "deep-nesting", b"[" * 100000 + b"]" * 100000)
put("ingest", "deep-nesting-in-attributes", ("[" + json.dumps({**entry, "attributes": {"k": None}})[:-2] + "[" * 5000 + "]" * 5000 + "}]").encode())
put("ingest", "negative-timestamp", json.dumps([{**entry, "timestamp": -1}]).encode())
put("ingest", "timestamp-past-i64", ("[" + json.dumps(entry).replace("1700000000000000", "99999999999999999999999") + "]").encode())
put("ingest", "float-timestamp", ("[" + json.dumps(entry).replace("1700000000000000", "1.5e300") + "]").encode())
put("ingest", "invalid-utf8", b'[{"timestamp":1,"level":"info","source":"\xff\xfe","message":"m"}]')
put("ingest", "nul-in-message", json.dumps([{**entry, "message": "a\u0000b"}]).encode())
put("ingest", "bom-then-ndjson", b"\xef\xbb\xbf" + json.dumps(entry).encode() + b"\n")
put("ingest", "ndjson-blank-lines", b"\n\n" + json.dumps(entry).encode() + b"\n\n\r\n")
put("ingest", "ndjson-trailing-garbage", json.dumps(entry).encode() + b"\n{")
put("ingest", "unknown-level", json.dumps([{**entry, "level": "loud"}]).encode())
put("ingest", "duplicate-keys", b'[{"timestamp":1,"timestamp":2,"level":"info","source":"s","message":"m"}]')
put("ingest", "long-source", json.dumps([{**entry, "source": "s" * 70000}]).encode())
