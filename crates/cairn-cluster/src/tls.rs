//! TLS settings of a node, loaded once from PEM files and shared by every
//! listener (HTTP API, binary protocol, node-to-node transport) and by the
//! node's own outgoing connections (transport dials, HTTP forwarding).
//!
//! # Why these choices
//!
//! - **rustls with ring**: pure Rust plus ring's C/assembly built by `cc`;
//!   aws-lc would need cmake. Every config here is built with
//!   [`provider`] explicitly, so nothing depends on a process-wide default.
//! - **One certificate per node, one CA bundle for the cluster**: a node
//!   presents `--tls-cert`/`--tls-key` to everyone and checks the peers it
//!   dials against `--tls-ca`. Peers are dialed by IP address (the
//!   transport's peer table and the advertised HTTP addresses are
//!   `IP:PORT`), so a node certificate must name the IP addresses it is
//!   reached at as subject alternative names.
//! - **No client certificates**: who may talk to a node is decided by
//!   tokens (HTTP, binary protocol) and the cluster secret (transport);
//!   TLS adds confidentiality, integrity and server authentication. The
//!   transport also binds its secret handshake to the TLS session (see
//!   `transport::secure`), so a relay cannot splice two sessions.
//! - **TLS is all or nothing per cluster**: a node with TLS on dials its
//!   peers with TLS and accepts only TLS, so every node of a cluster gets
//!   the same flags (with its own certificate).

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::TlsStream;

/// The TLS exporter label of the transport's channel binding.
pub const TLS_EXPORTER_LABEL: &[u8] = b"EXPORTER-cairn-transport-binding";

/// The first byte of a TLS connection (a handshake record): how a TLS
/// listener tells a plaintext client it can answer in kind.
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// Why TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{what} {}: {message}", path.display())]
    Invalid {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The crypto provider of every TLS config Cairn builds: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file (a chain, or a CA bundle).
pub fn load_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid {
            what,
            path: path.to_owned(),
            message: format!("not a PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Invalid {
            what,
            path: path.to_owned(),
            message: "holds no certificate (expected -----BEGIN CERTIFICATE-----)".into(),
        });
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let what = "--tls-key";
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Invalid {
        what,
        path: path.to_owned(),
        message: format!("no usable PEM private key: {e}"),
    })
}

/// The trust anchors of a PEM CA bundle.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path, "--tls-ca")? {
        roots.add(cert).map_err(|e| TlsError::Invalid {
            what: "--tls-ca",
            path: path.to_owned(),
            message: format!("a certificate is not a usable trust anchor: {e}"),
        })?;
    }
    Ok(roots)
}

/// A client config trusting `roots` (server authentication only).
pub fn client_config(roots: RootCertStore) -> Result<ClientConfig, TlsError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A node's TLS: what it presents and whom it trusts.
#[derive(Clone)]
pub struct NodeTls {
    /// For every listener of the node.
    pub server: Arc<ServerConfig>,
    /// For every connection the node makes to its peers.
    pub client: Arc<ClientConfig>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeTls")
    }
}

impl NodeTls {
    /// Loads `cert` (the node's chain, leaf first), `key` and the cluster's
    /// CA bundle `ca`, and checks that the key matches the certificate.
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<NodeTls, TlsError> {
        let chain = load_certs(cert, "--tls-cert")?;
        let key = load_key(key)?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Invalid {
                what: "--tls-cert/--tls-key",
                path: cert.to_owned(),
                message: format!("the key does not fit the certificate: {e}"),
            })?;
        let client = client_config(load_roots(ca)?)?;
        Ok(NodeTls {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

/// The read side of a connection that may be TLS (any listener or dial).
#[derive(Debug)]
pub enum ReadHalf {
    Plain(OwnedReadHalf),
    Tls(TlsRead),
}

/// The read side of a TLS session, with room for the one byte
/// [`ReadHalf::readable`] had to read to know data had arrived.
#[derive(Debug)]
pub struct TlsRead {
    inner: tokio::io::ReadHalf<TlsStream<TcpStream>>,
    /// Read by `readable`, not yet handed out.
    pending: Option<u8>,
    /// `readable` saw the end of the stream.
    eof: bool,
}

/// The write side of a connection that may be TLS.
#[derive(Debug)]
pub enum WriteHalf {
    Plain(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<TlsStream<TcpStream>>),
}

/// Splits a plain connection: tokio's owned halves, no lock between them.
pub fn split_plain(stream: TcpStream) -> (ReadHalf, WriteHalf) {
    let (r, w) = stream.into_split();
    (ReadHalf::Plain(r), WriteHalf::Plain(w))
}

/// Splits a TLS connection (tokio's split: a lock between the halves,
/// as reads and writes share the session state).
pub fn split_tls(stream: TlsStream<TcpStream>) -> (ReadHalf, WriteHalf) {
    let (r, w) = tokio::io::split(stream);
    let r = TlsRead {
        inner: r,
        pending: None,
        eof: false,
    };
    (ReadHalf::Tls(r), WriteHalf::Tls(w))
}

/// The session's channel binding: 32 bytes of keying material (RFC 5705)
/// that both ends of this one TLS session, and no other, share.
pub fn channel_binding(stream: &TlsStream<TcpStream>) -> io::Result<Vec<u8>> {
    let mut binding = vec![0u8; 32];
    let exported = match stream {
        TlsStream::Client(s) => s
            .get_ref()
            .1
            .export_keying_material(&mut binding[..], TLS_EXPORTER_LABEL, None)
            .map(|_| ()),
        TlsStream::Server(s) => s
            .get_ref()
            .1
            .export_keying_material(&mut binding[..], TLS_EXPORTER_LABEL, None)
            .map(|_| ()),
    };
    exported.map_err(io::Error::other)?;
    Ok(binding)
}

impl ReadHalf {
    /// Waits until a read would find data (or the end of the stream),
    /// without taking any: readers use it to charge memory and start
    /// timers only once a frame has begun to arrive. A TLS session cannot
    /// be asked without reading (a record may carry no application data),
    /// so it reads one byte and keeps it for the next read; rustls holds
    /// the rest of the record (at most 16 KiB, in its own buffer).
    /// Cancel-safe: a byte once read is kept.
    pub async fn readable(&mut self) -> io::Result<()> {
        match self {
            // Not `readable()`: its readiness can be stale or spurious
            // (seen: a fresh, silent connection reported readable, which
            // started the frame timer and closed it after 30 s). A peek
            // waits for a byte or the end of the stream and takes nothing.
            ReadHalf::Plain(r) => r.peek(&mut [0u8; 1]).await.map(|_| ()),
            ReadHalf::Tls(t) => {
                if t.pending.is_some() || t.eof {
                    return Ok(());
                }
                let mut one = [0u8; 1];
                let n = tokio::io::AsyncReadExt::read(&mut t.inner, &mut one).await?;
                if n == 0 {
                    t.eof = true;
                } else {
                    t.pending = Some(one[0]);
                }
                Ok(())
            }
        }
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Plain(r) => Pin::new(r).poll_read(cx, buf),
            ReadHalf::Tls(t) => {
                if buf.remaining() == 0 {
                    return Poll::Ready(Ok(()));
                }
                if let Some(b) = t.pending.take() {
                    buf.put_slice(&[b]);
                    // Whatever else is ready comes with it; nothing more
                    // is fine too (the byte alone is progress).
                    let _ = Pin::new(&mut t.inner).poll_read(cx, buf);
                    return Poll::Ready(Ok(()));
                }
                if t.eof {
                    return Poll::Ready(Ok(()));
                }
                Pin::new(&mut t.inner).poll_read(cx, buf)
            }
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Plain(w) => Pin::new(w).poll_write(cx, buf),
            WriteHalf::Tls(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Plain(w) => Pin::new(w).poll_write_vectored(cx, bufs),
            WriteHalf::Tls(w) => Pin::new(w).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            WriteHalf::Plain(w) => w.is_write_vectored(),
            WriteHalf::Tls(w) => w.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(w) => Pin::new(w).poll_flush(cx),
            WriteHalf::Tls(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(w) => Pin::new(w).poll_shutdown(cx),
            WriteHalf::Tls(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}
