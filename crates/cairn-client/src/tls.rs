//! TLS for clients: `https://` URLs and TLS on the binary protocol.
//!
//! reqwest is built with rustls but without a crypto provider of its own
//! (`rustls-no-provider`: the default one, aws-lc, needs cmake to build).
//! Every reqwest client therefore needs a process-wide provider installed
//! before it is built — reqwest panics otherwise — so every client in
//! Cairn is built through [`http_builder`], which installs ring first.
//! (`clippy.toml` forbids `reqwest::Client::new`/`builder` elsewhere.)
//!
//! To trust a cluster's own CA rather than the system's roots, load it with
//! [`client_config`] and hand it to [`http_builder`]`().tls_backend_preconfigured(..)`
//! ([`Client::with_options`](crate::Client::with_options) does) or to
//! [`TcpOptions::tls`](crate::TcpOptions::tls).

use std::path::Path;
use std::sync::{Arc, Once};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Why a CA bundle could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("read the CA bundle {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the CA bundle {path}: {message}")]
    Invalid { path: String, message: String },
}

/// Installs ring as the process's rustls crypto provider (once; a provider
/// installed before is kept).
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// `reqwest::Client::builder()`, after making sure a crypto provider is
/// installed. Use it for every reqwest client.
#[allow(clippy::disallowed_methods)]
pub fn http_builder() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
}

/// A default reqwest client (see [`http_builder`]).
pub fn http_client() -> reqwest::Client {
    http_builder()
        .build()
        .expect("a default reqwest client always builds")
}

/// A TLS client config trusting the certificates of the PEM bundle at
/// `ca` (and nothing else), with ring.
pub fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let shown = ca.display().to_string();
    let invalid = |message: String| TlsError::Invalid {
        path: shown.clone(),
        message,
    };
    let bytes = std::fs::read(ca).map_err(|source| TlsError::Read {
        path: shown.clone(),
        source,
    })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| invalid(format!("not a PEM certificate file: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| invalid(format!("a certificate is not a usable trust anchor: {e}")))?;
    }
    if roots.is_empty() {
        return Err(invalid(
            "holds no certificate (expected -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name a server at `addr` (`host:port`, `[v6]:port`) must have in its
/// certificate: its IP address, or its host name.
pub fn server_name(addr: &str) -> Option<rustls_pki_types::ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    rustls_pki_types::ServerName::try_from(host.to_string()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_addresses_when_naming_the_server_then_ip_or_dns() {
        use rustls_pki_types::ServerName;
        assert!(matches!(
            server_name("127.0.0.1:7071"),
            Some(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("[::1]:7071"),
            Some(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("node-1.example:7071"),
            Some(ServerName::DnsName(_))
        ));
    }

    #[test]
    fn given_missing_or_empty_bundle_when_loading_then_clear_error() {
        let dir = std::env::temp_dir().join(format!("cairn-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = client_config(&empty).unwrap_err().to_string();
        assert!(e.contains("holds no certificate"), "{e}");
        let e = client_config(&dir.join("missing.pem"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("read the CA bundle"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
