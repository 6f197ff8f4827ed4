//! Reading the binary protocol's frames within the node's bounds (see
//! [`crate::limits`]).
//!
//! tokio-util's `LengthDelimitedCodec` reserves a frame's declared length
//! as soon as it has read the length prefix (`src.reserve(n)`), so a client
//! that announces 8 MiB and sends four bytes costs the node 8 MiB for as
//! long as it keeps the connection open. This reader instead grows its
//! buffer as bytes arrive, at most [`READ_CHUNK`] per read, and charges
//! every read against the node's receive budget *before* reading it: a
//! partial frame holds what has arrived (plus one read), and when the
//! budget is spent the reader stops reading, leaving the bytes in the
//! kernel and the sender to TCP flow control. A connection waiting for its
//! next frame holds no buffer and no budget at all.
//!
//! Each frame has a deadline counted from its first byte (the frame
//! timeout); the wait before that first byte is the caller's (the idle
//! timeout depends on what is in flight).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::time::Instant;

use crate::limits::{BudgetExhausted, Charge, Guards};

/// Largest single read: the granularity of a partial frame's memory.
pub const READ_CHUNK: usize = 64 * 1024;
/// Smallest read: small pipelined frames are read several at a time.
const MIN_READ: usize = 8 * 1024;
/// A buffer grown past this (by a large frame) is not kept for the next.
const KEEP_CAPACITY: usize = 64 * 1024;
const PREFIX: usize = cairn_types::protocol::LENGTH_PREFIX_LEN;

/// One frame's payload and the budget it was charged (hold the charge
/// while the payload is in use).
#[derive(Debug)]
pub struct Frame {
    pub bytes: Bytes,
    pub charge: Charge,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("a frame announces {declared} bytes; the limit is {max}")]
    TooLarge { declared: usize, max: usize },
    #[error("a frame did not arrive whole within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Budget(BudgetExhausted),
    #[error(transparent)]
    Io(#[from] io::Error),
}

#[derive(Debug)]
pub struct FrameReader {
    socket: OwnedReadHalf,
    buf: BytesMut,
    /// Covers the bytes in `buf`, and during a read the bytes it may add.
    charge: Charge,
    /// When the first byte of the frame at the front of `buf` arrived.
    started: Option<Instant>,
    max_frame: usize,
    frame_timeout: Duration,
    guards: Arc<Guards>,
}

impl FrameReader {
    pub fn new(
        socket: OwnedReadHalf,
        max_frame: usize,
        frame_timeout: Duration,
        guards: Arc<Guards>,
    ) -> Self {
        FrameReader {
            socket,
            buf: BytesMut::new(),
            charge: Charge::default(),
            started: None,
            max_frame,
            frame_timeout,
            guards,
        }
    }

    /// True while no part of a frame has arrived.
    pub fn between_frames(&self) -> bool {
        self.buf.is_empty()
    }

    /// Bytes held for partial frames (for tests and metrics).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next frame, or `None` when the client closed between frames.
    /// Cancel-safe: dropping the future loses nothing.
    pub async fn next(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(frame) = self.take_frame()? {
                return Ok(Some(frame));
            }
            if self.buf.is_empty() {
                // Reserve nothing until bytes are there to read.
                self.socket.readable().await?;
            }
            let started = *self.started.get_or_insert_with(Instant::now);
            let deadline = started + self.frame_timeout;
            let to_read = self.missing().clamp(MIN_READ, READ_CHUNK);
            let uncharged = (self.buf.len() + to_read).saturating_sub(self.charge.bytes());
            if let Err(e) = self
                .guards
                .budget
                .charge(&mut self.charge, uncharged, deadline)
                .await
            {
                return Err(if Instant::now() >= deadline {
                    ReadError::Timeout(self.frame_timeout)
                } else {
                    ReadError::Budget(e)
                });
            }
            self.buf.reserve(to_read);
            let mut limited = (&mut self.socket).take(to_read as u64);
            let n = match tokio::time::timeout_at(deadline, limited.read_buf(&mut self.buf)).await {
                Err(_) => return Err(ReadError::Timeout(self.frame_timeout)),
                Ok(result) => result?,
            };
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
        }
    }

    /// Bytes still missing for the frame at the front of the buffer.
    fn missing(&self) -> usize {
        if self.buf.len() < PREFIX {
            return PREFIX - self.buf.len();
        }
        (PREFIX + self.declared()).saturating_sub(self.buf.len())
    }

    fn declared(&self) -> usize {
        let mut prefix = [0u8; PREFIX];
        prefix.copy_from_slice(&self.buf[..PREFIX]);
        u32::from_le_bytes(prefix) as usize
    }

    fn take_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        if self.buf.len() < PREFIX {
            return Ok(None);
        }
        let len = self.declared();
        if len > self.max_frame {
            return Err(ReadError::TooLarge {
                declared: len,
                max: self.max_frame,
            });
        }
        if self.buf.len() < PREFIX + len {
            return Ok(None);
        }
        self.buf.advance(PREFIX);
        let bytes = self.buf.split_to(len).freeze();
        let charge = self.charge.split(PREFIX + len);
        // The rest of the charge covers what is left in the buffer.
        let excess = self.charge.bytes().saturating_sub(self.buf.len());
        drop(self.charge.split(excess));
        if self.buf.is_empty() {
            self.started = None;
            if self.buf.capacity() > KEEP_CAPACITY {
                self.buf = BytesMut::new();
            }
        } else {
            // The next frame's first bytes are here already.
            self.started = Some(Instant::now());
            if self.buf.capacity() > KEEP_CAPACITY && self.buf.len() < KEEP_CAPACITY {
                // Do not keep a large frame's allocation alive for a few bytes.
                self.buf = BytesMut::from(&self.buf[..]);
            }
        }
        Ok(Some(Frame { bytes, charge }))
    }
}
