//! Errors of the transport: what a caller sees ([`TransportError`]) and what a
//! handler answers with ([`RemoteError`], which travels in an `Error` frame).

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::NodeId;

/// Why a [`call`](super::Transport::call) or [`send`](super::Transport::send) failed.
///
/// What the caller may conclude from each variant:
/// - `Timeout`: the request may or may not have been handled by the peer.
/// - `Unreachable`: no connection could be had before the deadline; the
///   request was never sent.
/// - `ConnectionLost`: the connection dropped while the request was in
///   flight; it may or may not have been handled.
/// - `Remote`: the peer's handler ran and returned an error.
/// - `FrameTooLarge`, `UnknownPeer`, `Shutdown`: nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("call to node {peer} got no answer within its deadline of {deadline:?}")]
    Timeout { peer: NodeId, deadline: Duration },
    #[error("node {peer} is unreachable: {reason}")]
    Unreachable { peer: NodeId, reason: String },
    #[error("connection to node {peer} was lost with the call in flight")]
    ConnectionLost { peer: NodeId },
    #[error("node {peer} answered with an error: {error}")]
    Remote { peer: NodeId, error: RemoteError },
    #[error("payload of {len} bytes exceeds the frame limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("node {peer} is not in the peer table and not connected")]
    UnknownPeer { peer: NodeId },
    #[error("the transport is shut down")]
    Shutdown,
}

/// An error answered by the peer's [`Handler`](super::Handler), or by the
/// peer's transport on its behalf.
///
/// `code` is on the wire. Codes below [`RemoteError::APPLICATION_MIN`] are
/// reserved for the transport; never reuse a retired code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("remote error {code}: {message}")]
pub struct RemoteError {
    pub code: u16,
    pub message: String,
}

impl RemoteError {
    /// The handler panicked while handling the request.
    pub const HANDLER_PANICKED: u16 = 1;
    /// The handler's response exceeded the peer's frame limit.
    pub const RESPONSE_TOO_LARGE: u16 = 2;
    /// The handler does not know this kind (or group); for handlers to use.
    pub const UNSUPPORTED: u16 = 3;
    /// The peer had `max_inbound_in_flight` requests of this connection in
    /// flight and refused this one without running it; safe to retry.
    pub const OVERLOADED: u16 = 4;
    /// First code available to the layers above the transport.
    pub const APPLICATION_MIN: u16 = 1000;

    pub fn new(code: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// `code` (u16 BE) then the message as UTF-8.
    pub(crate) fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(2 + self.message.len());
        b.put_u16(self.code);
        b.extend_from_slice(self.message.as_bytes());
        b.freeze()
    }

    /// Never fails: a malformed error payload still is an error, so it becomes
    /// one with code 0 rather than a protocol violation.
    pub(crate) fn decode(mut b: Bytes) -> Self {
        if b.len() < 2 {
            return Self::new(0, "malformed error payload");
        }
        let code = b.get_u16();
        Self {
            code,
            message: String::from_utf8_lossy(&b).into_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_remote_error_when_roundtripped_then_equal() {
        let e = RemoteError::new(1234, "no such group: 9");
        assert_eq!(RemoteError::decode(e.encode()), e);
    }

    #[test]
    fn given_truncated_error_payload_when_decoded_then_code_zero() {
        assert_eq!(RemoteError::decode(Bytes::from_static(b"x")).code, 0);
    }
}
