//! Wire format: one length-delimited frame = 4-byte length + 28-byte header + payload.
//!
//! ```text
//! offset size field
//!      0    4 length of header + payload, u32 big-endian (tokio-util's
//!             LengthDelimitedCodec default layout)
//!      4    1 version            (VERSION = 1)
//!      5    1 frame type         (FrameType)
//!      6    2 kind               u16 BE, chosen by the caller (Raft RPC type, ...)
//!      8    8 from node          u64 BE, must equal the id the peer gave in its hello
//!     16    8 group id           u64 BE (0 = controller group / node-level)
//!     24    8 request id         u64 BE, per connection; 0 for one-way frames
//!     32    … payload            opaque bytes, never re-encoded
//! ```
//!
//! Decoding goes through [`LengthDelimitedCodec`] with an explicit maximum, so a
//! peer cannot make us allocate an arbitrary buffer by sending a large length.
//! Encoding writes the same layout directly into the output buffer (header and
//! payload in one copy) instead of first concatenating them into a `Bytes`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec, LengthDelimitedCodecError};

use super::NodeId;
use super::secure::{NONCE_LEN, PROOF_LEN};

/// Protocol version carried in every header. Bump on incompatible changes.
pub const VERSION: u8 = 1;
/// Bytes of the fixed header that follows the length prefix.
pub const HEADER_LEN: usize = 28;
/// Bytes of the length prefix.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// What a frame is. The numeric values are on the wire: never reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    /// A call that expects a `Response` or `Error` with the same request id.
    Request = 1,
    /// The successful answer to a `Request`.
    Response = 2,
    /// The failed answer to a `Request`; payload is an encoded `RemoteError`.
    Error = 3,
    /// A message that gets no answer (heartbeats).
    OneWay = 4,
    /// First frame of the dialing side; payload is a [`Hello`].
    Hello = 5,
    /// The accepting side's answer to a hello; payload is a [`HelloAck`].
    HelloAck = 6,
    /// With a cluster secret: the acceptor's nonce and proof; payload is an
    /// [`AuthChallenge`] (see `secure.rs`).
    AuthChallenge = 7,
    /// With a cluster secret: the dialer's proof; payload is an [`AuthProof`].
    AuthProof = 8,
}

impl FrameType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Request,
            2 => Self::Response,
            3 => Self::Error,
            4 => Self::OneWay,
            5 => Self::Hello,
            6 => Self::HelloAck,
            7 => Self::AuthChallenge,
            8 => Self::AuthProof,
            _ => return None,
        })
    }
}

/// The fixed header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub frame_type: FrameType,
    pub kind: u16,
    pub from: NodeId,
    pub group: u64,
    pub request_id: u64,
}

/// One decoded frame. `payload` is a slice of the receive buffer (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub header: Header,
    pub payload: Bytes,
}

impl Frame {
    /// Bytes this frame occupies on the wire, prefix included (for metrics).
    pub fn wire_len(&self) -> usize {
        LENGTH_PREFIX_LEN + HEADER_LEN + self.payload.len()
    }
}

/// Why a frame could not be decoded or encoded. Any of these ends the
/// connection: after a framing error the byte stream cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame payload of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("peer announced a frame over the payload limit of {max} bytes")]
    LengthOverLimit { max: usize },
    #[error("unsupported protocol version {0}")]
    Version(u8),
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    #[error("frame of {0} bytes is shorter than the {HEADER_LEN}-byte header")]
    Truncated(usize),
    #[error("malformed {0} payload")]
    Malformed(&'static str),
}

/// Codec for [`Frame`]s: `LengthDelimitedCodec` underneath, header parsing on top.
#[derive(Debug)]
pub struct FrameCodec {
    inner: LengthDelimitedCodec,
    max_payload: usize,
}

impl FrameCodec {
    /// A codec that refuses payloads larger than `max_payload` in both directions.
    pub fn new(max_payload: usize) -> Self {
        let inner = LengthDelimitedCodec::builder()
            .max_frame_length(max_payload.saturating_add(HEADER_LEN))
            .new_codec();
        Self { inner, max_payload }
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let buf = match self.inner.decode(src) {
            Ok(Some(buf)) => buf,
            Ok(None) => return Ok(None),
            Err(e) => return Err(map_length_error(e, self.max_payload)),
        };
        parse_frame(buf.freeze()).map(Some)
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let len = frame.payload.len();
        if len > self.max_payload {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_payload,
            });
        }
        let body = HEADER_LEN + len;
        // `max_payload + HEADER_LEN` always fits the 4-byte prefix because
        // TransportConfig caps max_payload below u32::MAX - HEADER_LEN.
        let prefix = u32::try_from(body).map_err(|_| FrameError::TooLarge {
            len,
            max: self.max_payload,
        })?;
        dst.reserve(LENGTH_PREFIX_LEN + body);
        dst.put_u32(prefix);
        write_header(&frame.header, dst);
        dst.extend_from_slice(&frame.payload);
        Ok(())
    }
}

fn map_length_error(e: std::io::Error, max: usize) -> FrameError {
    // LengthDelimitedCodec reports an oversize length as InvalidData wrapping
    // its own error type; name it so logs say what happened.
    if e.get_ref()
        .is_some_and(|inner| inner.is::<LengthDelimitedCodecError>())
    {
        FrameError::LengthOverLimit { max }
    } else {
        FrameError::Io(e)
    }
}

fn write_header(h: &Header, dst: &mut BytesMut) {
    dst.put_u8(VERSION);
    dst.put_u8(h.frame_type as u8);
    dst.put_u16(h.kind);
    dst.put_u64(h.from);
    dst.put_u64(h.group);
    dst.put_u64(h.request_id);
}

/// Splits a frame body (without the length prefix) into header and payload.
pub fn parse_frame(mut buf: Bytes) -> Result<Frame, FrameError> {
    if buf.len() < HEADER_LEN {
        return Err(FrameError::Truncated(buf.len()));
    }
    let version = buf.get_u8();
    if version != VERSION {
        return Err(FrameError::Version(version));
    }
    let raw_type = buf.get_u8();
    let frame_type = FrameType::from_u8(raw_type).ok_or(FrameError::UnknownType(raw_type))?;
    let header = Header {
        frame_type,
        kind: buf.get_u16(),
        from: buf.get_u64(),
        group: buf.get_u64(),
        request_id: buf.get_u64(),
    };
    // What is left of `buf` is the payload: a view into the same allocation.
    Ok(Frame {
        header,
        payload: buf,
    })
}

/// The dialing side's first frame: who it wants to talk to, and which run of
/// its process this is (a fresh random number per `Transport::bind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// The node id the dialer expects at this address.
    pub to: NodeId,
    /// Changes on every restart of the dialer; lets the acceptor tell a
    /// restarted peer from a duplicate connection of the same run.
    pub incarnation: u64,
    /// The dialer's handshake nonce, sent only by a dialer with a cluster
    /// secret (a hello without one is 16 bytes, as before secrets).
    pub nonce: Option<[u8; NONCE_LEN]>,
}

impl Hello {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(16 + NONCE_LEN);
        b.put_u64(self.to);
        b.put_u64(self.incarnation);
        if let Some(n) = &self.nonce {
            b.extend_from_slice(n);
        }
        b.freeze()
    }

    pub fn decode(mut b: Bytes) -> Result<Self, FrameError> {
        if b.len() != 16 && b.len() != 16 + NONCE_LEN {
            return Err(FrameError::Malformed("hello"));
        }
        let to = b.get_u64();
        let incarnation = b.get_u64();
        let nonce = (b.len() == NONCE_LEN).then(|| {
            let mut n = [0u8; NONCE_LEN];
            b.copy_to_slice(&mut n);
            n
        });
        Ok(Self {
            to,
            incarnation,
            nonce,
        })
    }
}

/// The acceptor's side of the secret handshake: its nonce and its proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthChallenge {
    pub nonce: [u8; NONCE_LEN],
    pub proof: [u8; PROOF_LEN],
}

impl AuthChallenge {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(NONCE_LEN + PROOF_LEN);
        b.extend_from_slice(&self.nonce);
        b.extend_from_slice(&self.proof);
        b.freeze()
    }

    pub fn decode(b: Bytes) -> Result<Self, FrameError> {
        if b.len() != NONCE_LEN + PROOF_LEN {
            return Err(FrameError::Malformed("auth challenge"));
        }
        let mut c = Self {
            nonce: [0; NONCE_LEN],
            proof: [0; PROOF_LEN],
        };
        c.nonce.copy_from_slice(&b[..NONCE_LEN]);
        c.proof.copy_from_slice(&b[NONCE_LEN..]);
        Ok(c)
    }
}

/// The dialer's proof in the secret handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthProof {
    pub proof: [u8; PROOF_LEN],
}

impl AuthProof {
    pub fn encode(&self) -> Bytes {
        Bytes::copy_from_slice(&self.proof)
    }

    pub fn decode(b: Bytes) -> Result<Self, FrameError> {
        let proof = b[..]
            .try_into()
            .map_err(|_| FrameError::Malformed("auth proof"))?;
        Ok(Self { proof })
    }
}

/// The acceptor's verdict on a hello. Numeric values are on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum HelloStatus {
    Accepted = 0,
    /// The hello's `to` is not this node's id (stale address in the peer table).
    WrongNode = 1,
    /// A connection between the two nodes already exists or is being made
    /// by this side, and the tie-break keeps that one.
    Duplicate = 2,
    /// The hello claimed the acceptor's own id, or another invalid id.
    InvalidId = 3,
    /// The acceptor is shutting down.
    ShuttingDown = 4,
    /// The acceptor removed the dialer from its peer table.
    Removed = 5,
    /// The acceptor has a cluster secret and the hello offered no handshake.
    SecretRequired = 6,
    /// The acceptor has no cluster secret and the hello offered a handshake.
    NoSecret = 7,
    /// The dialer's proof did not verify: the secrets differ.
    BadProof = 8,
}

impl HelloStatus {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Accepted,
            1 => Self::WrongNode,
            2 => Self::Duplicate,
            3 => Self::InvalidId,
            4 => Self::ShuttingDown,
            5 => Self::Removed,
            6 => Self::SecretRequired,
            7 => Self::NoSecret,
            8 => Self::BadProof,
            _ => return None,
        })
    }
}

/// The accepting side's answer to a [`Hello`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloAck {
    pub status: HelloStatus,
    pub incarnation: u64,
}

impl HelloAck {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(9);
        b.put_u8(self.status as u8);
        b.put_u64(self.incarnation);
        b.freeze()
    }

    pub fn decode(mut b: Bytes) -> Result<Self, FrameError> {
        if b.len() != 9 {
            return Err(FrameError::Malformed("hello ack"));
        }
        let status = HelloStatus::from_u8(b.get_u8()).ok_or(FrameError::Malformed("hello ack"))?;
        Ok(Self {
            status,
            incarnation: b.get_u64(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &'static [u8]) -> Frame {
        Frame {
            header: Header {
                frame_type: FrameType::Request,
                kind: 7,
                from: 3,
                group: 42,
                request_id: 9,
            },
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn given_frame_when_encoded_then_decodes_to_same_frame() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::new();
        codec.encode(frame(b"hello"), &mut buf).unwrap();
        codec.encode(frame(b""), &mut buf).unwrap();
        assert_eq!(buf.len(), 2 * (LENGTH_PREFIX_LEN + HEADER_LEN) + 5);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(frame(b"hello")));
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(frame(b"")));
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn given_encoded_frame_when_read_by_plain_length_delimited_codec_then_body_is_header_plus_payload()
     {
        // The hand-written encoder must agree with LengthDelimitedCodec's layout.
        let mut buf = BytesMut::new();
        FrameCodec::new(1024)
            .encode(frame(b"abc"), &mut buf)
            .unwrap();
        let body = LengthDelimitedCodec::new()
            .decode(&mut buf)
            .unwrap()
            .unwrap();
        assert_eq!(body.len(), HEADER_LEN + 3);
        assert_eq!(parse_frame(body.freeze()).unwrap(), frame(b"abc"));
    }

    #[test]
    fn given_payload_over_limit_when_encoding_then_too_large() {
        let mut buf = BytesMut::new();
        let err = FrameCodec::new(4).encode(frame(b"hello"), &mut buf);
        assert!(matches!(err, Err(FrameError::TooLarge { len: 5, max: 4 })));
        assert!(buf.is_empty());
    }

    #[test]
    fn given_length_prefix_over_limit_when_decoding_then_too_large_without_allocating() {
        let mut buf = BytesMut::new();
        buf.put_u32(1 << 30);
        let err = FrameCodec::new(1024).decode(&mut buf);
        assert!(
            matches!(err, Err(FrameError::LengthOverLimit { max: 1024 })),
            "{err:?}"
        );
    }

    #[test]
    fn given_bad_header_when_decoding_then_error_not_panic() {
        let mut body = BytesMut::new();
        body.put_u8(99);
        body.put_bytes(0, HEADER_LEN - 1);
        assert!(matches!(
            parse_frame(body.freeze()),
            Err(FrameError::Version(99))
        ));
        let mut body = BytesMut::new();
        body.put_u8(VERSION);
        body.put_u8(200);
        body.put_bytes(0, HEADER_LEN - 2);
        assert!(matches!(
            parse_frame(body.freeze()),
            Err(FrameError::UnknownType(200))
        ));
        assert!(matches!(
            parse_frame(Bytes::from_static(b"short")),
            Err(FrameError::Truncated(5))
        ));
        assert!(Hello::decode(Bytes::from_static(b"x")).is_err());
        assert!(HelloAck::decode(Bytes::from_static(&[9, 0, 0, 0, 0, 0, 0, 0, 0])).is_err());
    }

    #[test]
    fn given_hello_and_ack_when_roundtripped_then_equal() {
        let h = Hello {
            to: 5,
            incarnation: 77,
            nonce: None,
        };
        assert_eq!(h.encode().len(), 16);
        assert_eq!(Hello::decode(h.encode()).unwrap(), h);
        let h = Hello {
            nonce: Some([3; NONCE_LEN]),
            ..h
        };
        assert_eq!(Hello::decode(h.encode()).unwrap(), h);
        let c = AuthChallenge {
            nonce: [1; NONCE_LEN],
            proof: [2; PROOF_LEN],
        };
        assert_eq!(AuthChallenge::decode(c.encode()).unwrap(), c);
        let p = AuthProof {
            proof: [4; PROOF_LEN],
        };
        assert_eq!(AuthProof::decode(p.encode()).unwrap(), p);
        assert!(AuthProof::decode(Bytes::from_static(b"short")).is_err());
        let a = HelloAck {
            status: HelloStatus::Duplicate,
            incarnation: 1,
        };
        assert_eq!(HelloAck::decode(a.encode()).unwrap(), a);
    }
}
