//! TLS on the client listeners (HTTP API, binary protocol).
//!
//! A connection admitted by the listener's caps is handed to its own task,
//! which then runs the TLS handshake — never the accept loop, so one slow
//! handshake holds up no one. The handshake (including the wait for its
//! first byte) must finish within the listener's header timeout (HTTP) or
//! frame timeout (binary protocol), so a connection that opens and says
//! nothing is closed as on a plaintext listener.
//!
//! A TLS listener looks at the first bytes before the handshake: a TLS
//! client starts with a handshake record header (`0x16 0x03 0x0?`), a
//! plaintext client with anything else (`GET`, a length prefix). The latter is answered
//! in its own protocol — `400 {code, message}` over HTTP, an ERROR frame
//! on the binary protocol — saying the node wants TLS, and closed: a clear
//! failure instead of a hang or a TLS alert the client cannot read.

use std::time::Duration;

use cairn_cluster::tls::TLS_HANDSHAKE_BYTE;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Why a connection on a TLS listener did not become a TLS session.
#[derive(Debug)]
pub enum NotTls {
    /// The client speaks plaintext: answer it in its protocol, then close.
    Plaintext(TcpStream),
    /// The handshake failed or did not finish in time (logged at debug).
    Failed(String),
}

/// Runs the server side of a TLS handshake on `socket`, all within `within`.
pub async fn accept(
    acceptor: &TlsAcceptor,
    socket: TcpStream,
    within: Duration,
) -> Result<TlsStream<TcpStream>, NotTls> {
    let deadline = Instant::now() + within;
    // A TLS record header: 0x16 (handshake), then version 3.x (x = 1..=4).
    // Three bytes, because a binary-protocol length prefix can start with
    // 0x16 too (little-endian lengths 22, 278, ...).
    let mut head = [0u8; 3];
    loop {
        let n = match tokio::time::timeout_at(deadline, socket.peek(&mut head)).await {
            Err(_) => {
                return Err(NotTls::Failed(format!(
                    "no TLS handshake within {within:?}"
                )));
            }
            Ok(Err(e)) => return Err(NotTls::Failed(e.to_string())),
            Ok(Ok(0)) => return Err(NotTls::Failed("closed before a handshake".into())),
            Ok(Ok(n)) => n,
        };
        if !looks_like_tls(&head[..n]) {
            return Err(NotTls::Plaintext(socket));
        }
        if n == head.len() {
            break;
        }
        // The rest of the record header is on its way (a peek returns what
        // has arrived, even one byte).
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    match tokio::time::timeout_at(deadline, acceptor.accept(socket)).await {
        Err(_) => Err(NotTls::Failed(format!(
            "TLS handshake not done within {within:?}"
        ))),
        Ok(Err(e)) => Err(NotTls::Failed(format!("TLS handshake: {e}"))),
        Ok(Ok(s)) => Ok(s),
    }
}

/// Whether the first bytes of a connection (up to 3) can begin a TLS
/// handshake record.
fn looks_like_tls(head: &[u8]) -> bool {
    match head {
        [] => true,
        [a] => *a == TLS_HANDSHAKE_BYTE,
        [a, b] => *a == TLS_HANDSHAKE_BYTE && *b == 3,
        [a, b, c, ..] => *a == TLS_HANDSHAKE_BYTE && *b == 3 && (1..=4).contains(c),
    }
}

/// Writes `answer` to a plaintext client of a TLS listener and closes,
/// after reading (for at most a second) until the client closes: closing
/// with its request unread would reset the connection, and a reset can
/// destroy the answer before the client reads it.
pub async fn answer_plaintext(mut socket: TcpStream, answer: &[u8]) {
    let _ = socket.write_all(answer).await;
    let _ = socket.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut sink = [0u8; 1024];
        while socket.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// What an HTTP client speaking plaintext to a TLS listener gets.
pub fn plaintext_http_answer() -> Vec<u8> {
    let body = serde_json::json!({
        "code": "bad_request",
        "message": "this node serves HTTPS only: use an https:// URL (and --tls-ca to trust its certificate)",
    })
    .to_string();
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_first_bytes_when_judged_then_tls_only_for_a_handshake_record() {
        assert!(looks_like_tls(&[0x16, 0x03, 0x01]));
        assert!(looks_like_tls(&[0x16]));
        assert!(!looks_like_tls(b"GET"));
        // A binary-protocol frame of 22 bytes: length 22, little-endian.
        assert!(!looks_like_tls(&[0x16, 0x00, 0x00]));
    }
}
