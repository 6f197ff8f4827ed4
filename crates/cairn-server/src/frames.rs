//! Reading the binary protocol's frames within the node's bounds (see
//! [`crate::limits`]).
//!
//! tokio-util's `LengthDelimitedCodec` reserves a frame's declared length
//! as soon as it has read the length prefix (`src.reserve(n)`), so a client
//! that announces 8 MiB and sends four bytes costs the node 8 MiB for as
//! long as it keeps the connection open. This reader holds what has
//! arrived instead, and charges every read against the node's receive
//! budget *before* reading it; when the budget is spent it stops reading,
//! leaving the bytes in the kernel and the sender to TCP flow control.
//!
//! - Small frames (up to [`READ_CHUNK`]) are read into one buffer, several
//!   at a time when pipelined: 8 KiB until a frame's length is known, then
//!   up to [`READ_CHUNK`] at a time.
//! - A larger frame is gathered in chunks, each filled before the next is
//!   allocated and sized like what has arrived so far (8 KiB, 8 KiB,
//!   16 KiB, … up to [`READ_CHUNK`]), then joined once complete. A partial
//!   frame therefore holds at most twice what has arrived plus 64 KiB (a
//!   small frame's read), and growing it never reallocates.
//! - A connection waiting for its next frame holds no buffer and no
//!   budget at all.
//!
//! Each frame has a deadline counted from its first byte (the frame
//! timeout); the wait before that first byte is the caller's (the idle
//! timeout depends on what is in flight).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use cairn_cluster::tls::ReadHalf;
use tokio::io::AsyncReadExt;
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

/// A frame larger than [`READ_CHUNK`] being gathered.
#[derive(Debug)]
struct Large {
    declared: usize,
    /// Full chunks.
    parts: Vec<Bytes>,
    /// The chunk being filled.
    current: BytesMut,
    received: usize,
}

#[derive(Debug)]
pub struct FrameReader {
    socket: ReadHalf,
    buf: BytesMut,
    large: Option<Large>,
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
        socket: ReadHalf,
        max_frame: usize,
        frame_timeout: Duration,
        guards: Arc<Guards>,
    ) -> Self {
        FrameReader {
            socket,
            buf: BytesMut::new(),
            large: None,
            charge: Charge::default(),
            started: None,
            max_frame,
            frame_timeout,
            guards,
        }
    }

    /// True while no part of a frame has arrived, nor waits in the socket
    /// (a reader waiting for receive budget has bytes there, unread): the
    /// connection is idle, not slow.
    pub fn idle(&self) -> bool {
        self.between_frames() && self.started.is_none()
    }

    /// True while no part of a frame has been read.
    pub fn between_frames(&self) -> bool {
        self.buf.is_empty() && self.large.is_none()
    }

    /// Bytes received and not yet handed out as a frame.
    fn held(&self) -> usize {
        self.buf.len() + self.large.as_ref().map_or(0, |l| l.received)
    }

    /// The next frame, or `None` when the client closed between frames.
    /// Cancel-safe: dropping the future loses nothing.
    pub async fn next(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(frame) = self.take_frame()? {
                return Ok(Some(frame));
            }
            if self.between_frames() {
                // Reserve nothing until bytes are there to read.
                self.socket.readable().await?;
            }
            let started = *self.started.get_or_insert_with(Instant::now);
            let deadline = started + self.frame_timeout;
            // A large frame grows with what has arrived: one that
            // announced much and sent little gets small reads (and a small
            // buffer).
            let to_read = match &self.large {
                Some(l) => (l.current.capacity() - l.current.len()).max(
                    (l.declared - l.received)
                        .min(l.received.max(MIN_READ))
                        .min(READ_CHUNK),
                ),
                // The front frame is small (a large one is gathered
                // above): read it, and what follows it, in one go.
                None if self.buf.len() >= PREFIX => READ_CHUNK,
                None => MIN_READ,
            };
            let uncharged = (self.held() + to_read).saturating_sub(self.charge.bytes());
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
            let (into, room) = match &mut self.large {
                Some(l) => {
                    if l.current.len() == l.current.capacity() {
                        // Full: keep it, start the next chunk (no realloc).
                        let next = BytesMut::with_capacity(to_read);
                        let full = std::mem::replace(&mut l.current, next);
                        if !full.is_empty() {
                            l.parts.push(full.freeze());
                        }
                    }
                    // Never past the frame's end: what follows is the next's.
                    let room =
                        (l.current.capacity() - l.current.len()).min(l.declared - l.received);
                    (&mut l.current, room)
                }
                None => {
                    self.buf.reserve(to_read);
                    (&mut self.buf, to_read)
                }
            };
            let mut limited = (&mut self.socket).take(room as u64);
            let n = match tokio::time::timeout_at(deadline, limited.read_buf(into)).await {
                Err(_) => return Err(ReadError::Timeout(self.frame_timeout)),
                Ok(result) => result?,
            };
            if n == 0 {
                if self.between_frames() {
                    self.charge = Charge::default();
                    return Ok(None);
                }
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
            if let Some(l) = &mut self.large {
                l.received += n;
            }
        }
    }

    fn declared(&self) -> usize {
        let mut prefix = [0u8; PREFIX];
        prefix.copy_from_slice(&self.buf[..PREFIX]);
        u32::from_le_bytes(prefix) as usize
    }

    fn take_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        if let Some(l) = &self.large {
            if l.received < l.declared {
                return Ok(None);
            }
            let l = self.large.take().expect("checked");
            let bytes = if l.parts.is_empty() {
                l.current.freeze()
            } else {
                let mut all = BytesMut::with_capacity(l.declared);
                for p in &l.parts {
                    all.extend_from_slice(p);
                }
                all.extend_from_slice(&l.current);
                all.freeze()
            };
            // Nothing past the frame was read: the whole charge is its own.
            let charge = std::mem::take(&mut self.charge);
            self.started = None;
            return Ok(Some(Frame { bytes, charge }));
        }
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
            if len > READ_CHUNK {
                // Gather it in chunks from here on (see the module docs).
                self.buf.advance(PREFIX);
                let first = self.buf.split();
                self.buf = BytesMut::new();
                self.large = Some(Large {
                    declared: len,
                    received: first.len(),
                    parts: if first.is_empty() {
                        Vec::new()
                    } else {
                        vec![first.freeze()]
                    },
                    current: BytesMut::new(),
                });
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Limits;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    async fn pair(
        frame_timeout: Duration,
        budget: usize,
    ) -> (
        FrameReader,
        TcpStream,
        Arc<Guards>,
        tokio::net::tcp::OwnedWriteHalf,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let limits = Limits {
            receive_budget_bytes: Some(budget),
            ..Limits::default()
        };
        let guards = Arc::new(Guards::new(&limits, 1 << 20, 2, None));
        let (read, write) = server.into_split();
        let reader = FrameReader::new(
            ReadHalf::Plain(read),
            4 << 20,
            frame_timeout,
            guards.clone(),
        );
        (reader, client, guards, write)
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u32).to_le_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[tokio::test]
    async fn pipelined_and_split_frames_come_out_whole_and_charged() {
        let (mut reader, mut client, guards, _w) = pair(Duration::from_secs(5), 64 << 20).await;
        let big: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
        let mut all = frame(b"one");
        all.extend(frame(b""));
        all.extend(frame(&big));
        all.extend(frame(b"after"));
        let writer = tokio::spawn(async move {
            // Odd pieces, so frames and prefixes straddle reads.
            for piece in all.chunks(70_001) {
                client.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        let one = reader.next().await.unwrap().unwrap();
        assert_eq!(&one.bytes[..], b"one");
        assert_eq!(&reader.next().await.unwrap().unwrap().bytes[..], b"");
        let third = reader.next().await.unwrap().unwrap();
        assert_eq!(third.bytes.len(), big.len());
        assert!(third.bytes == big);
        assert!(third.charge.bytes() >= big.len());
        let after = reader.next().await.unwrap().unwrap();
        assert_eq!(&after.bytes[..], b"after");
        drop((one, third, after));
        let client = writer.await.unwrap();
        drop(client);
        assert!(reader.next().await.unwrap().is_none());
        assert_eq!(guards.budget.in_use(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn random_sizes_and_splits_never_lose_step() {
        let (mut reader, mut client, guards, _w) = pair(Duration::from_secs(10), 64 << 20).await;
        // xorshift: deterministic, no dependency.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut frames = Vec::new();
        let mut stream = Vec::new();
        for i in 0..400u32 {
            let len = match next(4) {
                0 => next(16),
                1 => next(10_000),
                2 => 60_000 + next(10_000),
                _ => next(300_000),
            } as usize;
            let payload: Vec<u8> = (0..len).map(|k| (k as u32 ^ i) as u8).collect();
            stream.extend(frame(&payload));
            frames.push(payload);
        }
        let mut pieces = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            let n = (1 + next(150_000) as usize).min(stream.len() - at);
            pieces.push(stream[at..at + n].to_vec());
            at += n;
        }
        let writer = tokio::spawn(async move {
            for p in pieces {
                client.write_all(&p).await.unwrap();
            }
            client
        });
        for (i, want) in frames.iter().enumerate() {
            let got = reader.next().await.unwrap().unwrap();
            assert!(
                got.bytes[..] == want[..],
                "frame {i} ({} bytes) differs",
                want.len()
            );
        }
        drop(writer.await.unwrap());
        assert!(reader.next().await.unwrap().is_none());
        assert_eq!(guards.budget.in_use(), 0);
    }

    #[tokio::test]
    async fn a_partial_frame_holds_what_arrived_and_times_out() {
        let (mut reader, mut client, guards, _w) = pair(Duration::from_millis(300), 64 << 20).await;
        let mut start = (4u32 << 20).to_le_bytes().to_vec();
        start.extend_from_slice(&[7; 100]);
        client.write_all(&start).await.unwrap();
        let started = std::time::Instant::now();
        let err = reader.next().await.unwrap_err();
        assert!(matches!(err, ReadError::Timeout(_)), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(250));
        // 104 bytes arrived: charged (and held) what arrived and one small
        // read, not 4 MiB.
        assert!(
            guards.budget.in_use() <= 104 + MIN_READ,
            "{}",
            guards.budget.in_use()
        );
        drop(reader);
        assert_eq!(guards.budget.in_use(), 0);
    }

    #[tokio::test]
    async fn an_oversized_frame_and_a_spent_budget_are_errors() {
        let (mut reader, mut client, _, _w) = pair(Duration::from_secs(5), 64 << 20).await;
        client.write_all(&(5u32 << 20).to_le_bytes()).await.unwrap();
        assert!(matches!(
            reader.next().await.unwrap_err(),
            ReadError::TooLarge { .. }
        ));

        let (mut reader, mut client, guards, _w2) = pair(Duration::from_secs(30), 1 << 20).await;
        // Someone else holds the whole budget.
        let mut held = Charge::default();
        let deadline = Instant::now() + Duration::from_secs(1);
        guards
            .budget
            .charge(&mut held, 1 << 20, deadline)
            .await
            .unwrap();
        client.write_all(&frame(b"x")).await.unwrap();
        // Waits BUDGET_WAIT (5 s), then gives up.
        let err = reader.next().await.unwrap_err();
        assert!(matches!(err, ReadError::Budget(_)), "{err}");
    }
}
