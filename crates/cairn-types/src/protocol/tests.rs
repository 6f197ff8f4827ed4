use super::*;
use crate::batch::{BatchBuilder, RecordBatch};
use crate::entry::{Entry, Level};
use proptest::prelude::*;

fn batch_bytes(n: usize) -> Bytes {
    let mut b = BatchBuilder::new();
    for i in 0..n {
        b.push(&Entry {
            timestamp_us: i as i64,
            level: Level::Warn,
            source: format!("s{i}"),
            message: "m".into(),
            attributes: Default::default(),
        })
        .unwrap();
    }
    b.finish().as_bytes().clone()
}

fn arb_request() -> impl Strategy<Value = Request> {
    let body = prop_oneof![
        (
            "[a-z0-9._-]{1,40}",
            proptest::collection::vec(any::<u8>(), 1..200)
        )
            .prop_map(|(stream, batch)| RequestBody::Append {
                stream,
                batch: Bytes::from(batch)
            }),
        Just(RequestBody::Ping),
        ("[a-z0-9._-]{1,40}", any::<bool>())
            .prop_map(|(stream, leaders)| RequestBody::Metadata { stream, leaders }),
        proptest::collection::vec(any::<u8>(), 1..100).prop_map(|token| RequestBody::Auth {
            token: Bytes::from(token)
        }),
        (
            "[a-z0-9._-]{1,40}",
            any::<u32>(),
            prop::option::of(0..u64::MAX),
            any::<u32>(),
            any::<bool>()
        )
            .prop_map(|(stream, partition, offset, limit, any_replica)| {
                RequestBody::Read {
                    stream,
                    read: ReadRequest {
                        partition,
                        offset,
                        limit,
                        consistency: if any_replica {
                            crate::api::Consistency::Any
                        } else {
                            crate::api::Consistency::Leader
                        },
                    },
                }
            }),
    ];
    (1u64.., body).prop_map(|(correlation_id, body)| Request {
        correlation_id,
        body,
    })
}

fn arb_response() -> impl Strategy<Value = Response> {
    let part = (any::<u32>(), any::<u64>(), any::<u32>()).prop_map(|(p, b, c)| AppendedPartition {
        partition: p,
        base_offset: b,
        count: c,
    });
    let body = prop_oneof![
        proptest::collection::vec(part, 0..20).prop_map(ResponseBody::Appended),
        Just(ResponseBody::Pong),
        Just(ResponseBody::Authenticated),
        any::<u32>().prop_map(|partitions| ResponseBody::Metadata {
            partitions,
            leaders: None
        }),
        (any::<u64>(), proptest::collection::vec(any::<u64>(), 0..64)).prop_map(
            |(node, by_partition)| ResponseBody::Metadata {
                partitions: by_partition.len() as u32,
                leaders: Some(Leaders { node, by_partition }),
            }
        ),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
            prop::option::of(0..u64::MAX),
            0usize..5,
            0..u64::MAX / 2
        )
            .prop_map(|(next, start, end, from_leader, lag, n, base)| {
                ResponseBody::Read(ReadAnswer {
                    next_offset: next,
                    start_offset: start,
                    end_offset: end,
                    served_by: 2,
                    from_leader,
                    lag_entries: lag,
                    batch: (n > 0).then(|| {
                        RecordBatch::from_bytes(batch_bytes(n))
                            .unwrap()
                            .restamped(base, 0, 0)
                    }),
                })
            }),
        (1u16..=19, ".{0,80}", prop::option::of(1u8..=4)).prop_map(|(n, message, op)| {
            ResponseBody::Error {
                op: op.and_then(Op::from_u8),
                code: ErrorCode::from_number(n).unwrap(),
                message,
            }
        }),
    ];
    (any::<u64>(), body).prop_map(|(correlation_id, body)| Response {
        correlation_id,
        body,
    })
}

proptest! {
    #[test]
    fn requests_round_trip(req in arb_request()) {
        let frame = req.encode().unwrap();
        prop_assert_eq!(Request::decode(frame).unwrap(), req);
    }

    #[test]
    fn responses_round_trip(resp in arb_response()) {
        prop_assert_eq!(Response::decode(resp.encode()).unwrap(), resp);
    }

    #[test]
    fn garbage_never_panics_and_ids_are_only_claimed_when_readable(
        raw in proptest::collection::vec(any::<u8>(), 0..64)
    ) {
        match Request::decode(Bytes::from(raw.clone())) {
            Ok(req) => prop_assert_ne!(req.correlation_id, 0),
            Err(e) => {
                if let Some(id) = e.correlation_id {
                    prop_assert!(raw.len() >= HEADER_LEN);
                    prop_assert_eq!(id, u64::from_le_bytes(raw[4..12].try_into().unwrap()));
                    prop_assert_ne!(id, 0);
                }
            }
        }
        let _ = Response::decode(Bytes::from(raw));
    }

    #[test]
    fn flipped_bytes_never_panic_and_keep_a_readable_id(
        req in arb_request(), pos in any::<usize>(), bit in 0u8..8
    ) {
        let mut frame = req.encode().unwrap().to_vec();
        let pos = pos % frame.len();
        frame[pos] ^= 1 << bit;
        let id = u64::from_le_bytes(frame[4..12].try_into().unwrap());
        match Request::decode(Bytes::from(frame)) {
            Ok(got) => prop_assert_eq!(got.correlation_id, id),
            Err(e) => prop_assert_eq!(e.correlation_id, (id != 0).then_some(id)),
        }
    }

    #[test]
    fn truncated_requests_are_rejected_with_their_id(req in arb_request(), cut in any::<usize>()) {
        let frame = req.encode().unwrap();
        let cut = cut % frame.len();
        // PING and METADATA frames lose their shape when cut; an APPEND
        // cut in its payload is still a frame (its batch CRC catches it),
        // and so is an AUTH cut in its token (the node refuses it).
        // A METADATA asking for leaders cut before its payload byte is the
        // plain METADATA (frames are length-prefixed: this cannot happen
        // on the wire).
        if let Ok(got) = Request::decode(frame.slice(..cut)) {
            let plain_metadata = matches!(
                (&req.body, &got.body),
                (RequestBody::Metadata { leaders: true, .. }, RequestBody::Metadata { leaders: false, .. })
            );
            prop_assert!(matches!(got.body.op(), Op::Append | Op::Auth) || plain_metadata);
        } else if cut >= HEADER_LEN {
            prop_assert_eq!(
                Request::decode(frame.slice(..cut)).unwrap_err().correlation_id,
                Some(req.correlation_id)
            );
        }
    }

    #[test]
    fn truncated_responses_are_rejected(resp in arb_response(), cut in any::<usize>()) {
        let frame = resp.encode();
        let cut = cut % frame.len();
        // An error message may be cut anywhere and still be a message.
        // Nor is an answer with leaders cut right after the partition
        // count: that is the answer without them.
        let plain_metadata = matches!(resp.body, ResponseBody::Metadata { leaders: Some(_), .. })
            && cut == HEADER_LEN + 4;
        if plain_metadata {
            prop_assert!(Response::decode(frame.slice(..cut)).is_ok());
        } else if !matches!(resp.body, ResponseBody::Error { .. }) || cut < HEADER_LEN + 2 {
            prop_assert!(Response::decode(frame.slice(..cut)).is_err());
        }
    }
}

#[test]
fn append_frames_carry_the_batch_unchanged() {
    let batch = batch_bytes(3);
    let mut out = BytesMut::new();
    encode_request(7, Op::Append, "app", &batch, &mut out).unwrap();
    assert_eq!(&out[..4], &[VERSION, 1, 0, 0]);
    assert_eq!(out.len(), HEADER_LEN + 2 + 3 + batch.len());
    let req = Request::decode(out.freeze()).unwrap();
    assert_eq!(
        req,
        Request {
            correlation_id: 7,
            body: RequestBody::Append {
                stream: "app".into(),
                batch
            }
        }
    );
}

#[test]
fn bad_headers_name_the_problem_and_keep_the_id() {
    let frame = |version: u8, op: u8, rest: &[u8]| {
        let mut v = vec![version, op, 0, 0];
        v.extend_from_slice(&42u64.to_le_bytes());
        v.extend_from_slice(rest);
        Bytes::from(v)
    };
    let e = Request::decode(frame(2, 1, &[3, 0, b'a', b'b', b'c', 1])).unwrap_err();
    assert_eq!(e.correlation_id, Some(42));
    assert!(e.reason.contains("version 2"), "{e}");
    let e = Request::decode(frame(1, 9, &[0, 0])).unwrap_err();
    assert!(e.reason.contains("unknown op 9"), "{e}");
    let e = Request::decode(frame(1, 1, &[9, 0, b'a'])).unwrap_err();
    assert!(e.reason.contains("runs past"), "{e}");
    let e = Request::decode(frame(1, 1, &[1, 0, 0xff, 1])).unwrap_err();
    assert!(e.reason.contains("UTF-8"), "{e}");
    let e = Request::decode(frame(1, 1, &[1, 0, b'a'])).unwrap_err();
    assert!(e.reason.contains("record batch"), "{e}");
    let e = Request::decode(frame(1, 2, &[1, 0, b'a'])).unwrap_err();
    assert!(e.reason.contains("PING"), "{e}");
    assert_eq!(e.correlation_id, Some(42));
    // Too short for an id, or id 0: nothing to answer to.
    assert_eq!(
        Request::decode(Bytes::from_static(&[1, 1, 0]))
            .unwrap_err()
            .correlation_id,
        None
    );
    let mut zero = vec![1, 2, 0, 0];
    zero.extend_from_slice(&[0; 10]);
    assert_eq!(
        Request::decode(Bytes::from(zero))
            .unwrap_err()
            .correlation_id,
        None
    );
}

#[test]
fn unknown_error_codes_survive_decoding() {
    let mut frame = Response::error(5, Some(Op::Append), ErrorCode::Storage, "disk".into())
        .encode()
        .to_vec();
    frame[HEADER_LEN..HEADER_LEN + 2].copy_from_slice(&999u16.to_le_bytes());
    let r = Response::decode(Bytes::from(frame)).unwrap();
    match r.body {
        ResponseBody::Error { code, message, .. } => {
            assert_eq!(code, ErrorCode::Internal);
            assert!(
                message.contains("999") && message.ends_with("disk"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn long_names_are_refused_when_encoding() {
    let mut out = BytesMut::new();
    let name = "n".repeat(MAX_STREAM_NAME_LEN + 1);
    assert!(encode_request(1, Op::Metadata, &name, &[], &mut out).is_err());
}
