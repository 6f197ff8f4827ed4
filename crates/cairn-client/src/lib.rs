//! A typed client for Cairn's HTTP API.
//!
//! [`Client`] wraps one `reqwest::Client` (connection pooling, keep-alive)
//! and a base URL. Every method maps a non-2xx answer to [`Error::Api`] with
//! the server's `{code, message}` decoded, so callers can match on the stable
//! code (e.g. `stream_not_found`) instead of parsing text.
//!
//! The request and response shapes live in [`types`]; the server uses the
//! same structs, so both sides agree on the wire format by construction.
//!
//! `http://` and `https://` URLs are supported; TLS goes through rustls
//! with ring (see [`tls`]), trusting the system's roots or, with
//! [`ClientOptions::tls_ca`], a cluster's own CA.
//!
//! For high-throughput ingest, [`TcpProducer`] (module [`tcp`]) speaks the
//! binary protocol instead: record batches in length-delimited frames, many
//! requests in flight per connection, each partition's entries sent
//! straight to its leader and merged per partition while requests are on
//! the wire.

pub mod tcp;
pub mod tls;
pub use cairn_types::api as types;

use std::time::Duration;

use cairn_types::{ErrorCode, NewEntry};
use reqwest::{Method, RequestBuilder, Url};
use serde::de::DeserializeOwned;

pub use cairn_types::api::*;
pub use tcp::{TcpError, TcpOptions, TcpProducer};
pub use tls::{http_builder, http_client};

/// The content type of newline-delimited JSON bodies.
pub const NDJSON: &str = "application/x-ndjson";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// A token that cannot travel in an HTTP header (e.g. a control
    /// character).
    #[error("the token contains characters an HTTP header cannot carry")]
    InvalidToken,
    /// The server answered with a JSON error.
    #[error("{code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The server answered with something that is not Cairn's JSON.
    #[error("unexpected HTTP {status} response: {body}")]
    UnexpectedResponse { status: u16, body: String },
    /// Connecting, sending or receiving failed (the cause is the source).
    #[error("HTTP request failed")]
    Transport(#[from] reqwest::Error),
}

impl Error {
    /// The server's stable error code, when the server sent one we know.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Api { code, .. } => {
                serde_json::from_value(serde_json::Value::String(code.clone())).ok()
            }
            _ => None,
        }
    }

    /// The HTTP status, when the server answered at all.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } | Error::UnexpectedResponse { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Default headers that present `token` as `Authorization: Bearer` (none
/// without one), for callers that build their own `reqwest::Client`.
pub fn bearer_headers(token: Option<&str>) -> Result<reqwest::header::HeaderMap> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| Error::InvalidToken)?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(headers)
}

/// How a [`Client`] authenticates and whom it trusts.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Presented as `Authorization: Bearer` on every request.
    pub token: Option<String>,
    /// Trust these CAs (and only these) for `https://` URLs; `None`: the
    /// system's roots.
    pub tls_ca: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl ClientOptions {
    /// A reqwest client with these options, a 60 s per-request timeout and
    /// the pool's idle timeout.
    pub fn http_client(&self) -> Result<reqwest::Client> {
        let mut builder = tls::http_builder()
            .timeout(Duration::from_secs(60))
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .default_headers(bearer_headers(self.token.as_deref())?);
        if let Some(config) = &self.tls_ca {
            builder = builder.tls_backend_preconfigured((**config).clone());
        }
        Ok(builder.build()?)
    }
}

/// A handle to one Cairn server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
}

impl Client {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:7070`),
    /// with a 60 s per-request timeout.
    pub fn new(base_url: &str) -> Result<Client> {
        Client::with_options(base_url, &ClientOptions::default())
    }

    /// A client that presents `token` (`Authorization: Bearer`) on every
    /// request when given, with a 60 s per-request timeout.
    pub fn with_token(base_url: &str, token: Option<&str>) -> Result<Client> {
        Client::with_options(
            base_url,
            &ClientOptions {
                token: token.map(str::to_owned),
                ..ClientOptions::default()
            },
        )
    }

    /// A client with a token and TLS trust as given, with a 60 s
    /// per-request timeout.
    pub fn with_options(base_url: &str, options: &ClientOptions) -> Result<Client> {
        Client::with_http_client(base_url, options.http_client()?)
    }

    /// A client that uses a caller-configured `reqwest::Client`.
    pub fn with_http_client(base_url: &str, http: reqwest::Client) -> Result<Client> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: base_url.to_string(),
            reason,
        };
        let base = Url::parse(base_url).map_err(|e| invalid(e.to_string()))?;
        if base.scheme() != "http" && base.scheme() != "https" {
            return Err(invalid(
                "only http:// and https:// URLs are supported".into(),
            ));
        }
        if base.cannot_be_a_base() {
            return Err(invalid("not a base URL".into()));
        }
        Ok(Client { http, base })
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// `base` + path segments, each percent-encoded (so a stream name can
    /// never escape its path segment).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("checked in the constructor: base URL can be a base")
            .pop_if_empty()
            .extend(segments);
        url
    }

    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        self.http.request(method, self.url(segments))
    }

    pub async fn health(&self) -> Result<Health> {
        send_json(self.request(Method::GET, &["health"])).await
    }

    /// The saved performance reports (`GET /v1/reports`).
    pub async fn reports(&self) -> Result<serde_json::Value> {
        send_json(self.request(Method::GET, &["v1", "reports"])).await
    }

    /// A saved report as JSON.
    pub async fn report(&self, id: &str) -> Result<serde_json::Value> {
        send_json(self.request(Method::GET, &["v1", "reports", id])).await
    }

    /// A report made now over the last `window_s` seconds.
    pub async fn report_now(&self, window_s: u64) -> Result<serde_json::Value> {
        let mut url = self.url(&["v1", "reports", "current"]);
        url.query_pairs_mut()
            .append_pair("window_s", &window_s.to_string());
        send_json(self.http.get(url)).await
    }

    pub async fn create_stream(&self, name: &str, config: StreamConfig) -> Result<StreamInfo> {
        let body = CreateStream {
            name: name.to_string(),
            config,
        };
        send_json(self.request(Method::POST, &["v1", "streams"]).json(&body)).await
    }

    /// Scans partitions for divergent replicas and repairs them
    /// (`POST /v1/anti-entropy/scan`). A scan reads every partition's log
    /// under the cluster's rate limit, so this waits up to 15 minutes.
    pub async fn anti_entropy_scan(&self, request: &ScanRequest) -> Result<ScanResponse> {
        send_json(
            self.request(Method::POST, &["v1", "anti-entropy", "scan"])
                .timeout(Duration::from_secs(900))
                .json(request),
        )
        .await
    }

    /// The last anti-entropy scan of every partition, cluster-wide.
    pub async fn anti_entropy_status(&self) -> Result<AntiEntropyStatus> {
        send_json(self.request(Method::GET, &["v1", "anti-entropy", "status"])).await
    }

    /// The cluster as this node sees it (`GET /v1/cluster`).
    pub async fn cluster(&self) -> Result<ClusterView> {
        send_json(self.request(Method::GET, &["v1", "cluster"])).await
    }

    /// Hands a partition's leadership to node `to`
    /// (`POST /v1/streams/{name}/partitions/{p}/leader`).
    pub async fn move_leader(&self, stream: &str, partition: u32, to: u64) -> Result<LeaderMove> {
        let partition = partition.to_string();
        send_json(
            self.request(
                Method::POST,
                &["v1", "streams", stream, "partitions", &partition, "leader"],
            )
            .json(&LeaderMoveRequest { to }),
        )
        .await
    }

    /// Moves every partition back to its preferred leader
    /// (`POST /v1/cluster/leaders/rebalance`).
    pub async fn rebalance_leaders(&self) -> Result<RebalanceResponse> {
        send_json(
            self.request(Method::POST, &["v1", "cluster", "leaders", "rebalance"])
                .timeout(Duration::from_secs(300)),
        )
        .await
    }

    /// `GET /v1/monitor/{what}` (`recommendations`, `actions`, ...): the
    /// controller leader's answer as JSON (its types live in
    /// `cairn-monitor`, which this crate does not depend on).
    pub async fn monitor_get(&self, what: &str) -> Result<serde_json::Value> {
        send_json(self.request(Method::GET, &["v1", "monitor", what])).await
    }

    /// `POST /v1/monitor/recommendations/{id}/apply`: the action record.
    pub async fn apply_recommendation(&self, id: &str) -> Result<serde_json::Value> {
        send_json(
            self.request(
                Method::POST,
                &["v1", "monitor", "recommendations", id, "apply"],
            )
            .timeout(Duration::from_secs(90)),
        )
        .await
    }

    /// Installs (replacing) this node's disk fault.
    pub async fn set_disk_fault(&self, request: &DiskFaultRequest) -> Result<DiskFaultView> {
        send_json(
            self.request(Method::POST, &["v1", "faults", "disk"])
                .json(request),
        )
        .await
    }

    pub async fn disk_fault(&self) -> Result<DiskFaultStatus> {
        send_json(self.request(Method::GET, &["v1", "faults", "disk"])).await
    }

    /// Starts (replacing) this node's CPU burn.
    pub async fn set_cpu_fault(&self, request: &CpuFaultRequest) -> Result<CpuFaultView> {
        send_json(
            self.request(Method::POST, &["v1", "faults", "cpu"])
                .json(request),
        )
        .await
    }

    pub async fn cpu_fault(&self) -> Result<CpuFaultStatus> {
        send_json(self.request(Method::GET, &["v1", "faults", "cpu"])).await
    }

    /// Adds one rule to this node's transport faults.
    pub async fn add_network_fault(
        &self,
        request: &NetworkFaultRequest,
    ) -> Result<NetworkFaultInstalled> {
        send_json(
            self.request(Method::POST, &["v1", "faults", "network"])
                .json(request),
        )
        .await
    }

    pub async fn network_faults(&self) -> Result<NetworkFaultList> {
        send_json(self.request(Method::GET, &["v1", "faults", "network"])).await
    }

    /// Lifts this node's faults of one kind: `disk`, `cpu` or `network`.
    pub async fn clear_faults(&self, kind: &str) -> Result<()> {
        send(self.request(Method::DELETE, &["v1", "faults", kind])).await?;
        Ok(())
    }

    pub async fn list_streams(&self) -> Result<Vec<StreamInfo>> {
        let list: StreamList = send_json(self.request(Method::GET, &["v1", "streams"])).await?;
        Ok(list.streams)
    }

    pub async fn get_stream(&self, name: &str) -> Result<StreamInfo> {
        send_json(self.request(Method::GET, &["v1", "streams", name])).await
    }

    pub async fn delete_stream(&self, name: &str) -> Result<()> {
        send(self.request(Method::DELETE, &["v1", "streams", name])).await?;
        Ok(())
    }

    /// Appends entries as one JSON array. All are validated before any is
    /// stored: either all are appended or none.
    pub async fn append(&self, stream: &str, entries: &[NewEntry]) -> Result<AppendResponse> {
        send_json(
            self.request(Method::POST, &["v1", "streams", stream, "entries"])
                .json(entries),
        )
        .await
    }

    /// Appends a body of newline-delimited JSON entries, as is.
    pub async fn append_ndjson(
        &self,
        stream: &str,
        body: impl Into<reqwest::Body>,
    ) -> Result<AppendResponse> {
        send_json(
            self.request(Method::POST, &["v1", "streams", stream, "entries"])
                .header(reqwest::header::CONTENT_TYPE, NDJSON)
                .body(body),
        )
        .await
    }

    /// Reads one partition from an offset.
    pub async fn read(
        &self,
        stream: &str,
        partition: u32,
        params: ReadParams,
    ) -> Result<ReadResponse> {
        let partition = partition.to_string();
        let mut url = self.url(&["v1", "streams", stream, "partitions", &partition, "entries"]);
        {
            let mut q = url.query_pairs_mut();
            if let Some(offset) = params.offset {
                q.append_pair("offset", &offset.to_string());
            }
            if let Some(limit) = params.limit {
                q.append_pair("limit", &limit.to_string());
            }
            if let Some(c) = params.consistency {
                q.append_pair("consistency", c.as_str());
            }
        }
        send_json(self.http.get(without_empty_query(url))).await
    }

    /// Queries a stream by time range and filters, across all partitions.
    pub async fn query(&self, stream: &str, params: &QueryParams) -> Result<QueryResponse> {
        let mut url = self.url(&["v1", "streams", stream, "query"]);
        {
            // Built by hand: reqwest's `query()` needs an extra feature, and
            // these few scalar parameters do not justify it.
            let mut q = url.query_pairs_mut();
            if let Some(start) = params.start {
                q.append_pair("start", &start.to_string());
            }
            if let Some(end) = params.end {
                q.append_pair("end", &end.to_string());
            }
            if let Some(level) = params.level {
                q.append_pair("level", level.as_str());
            }
            if let Some(source) = &params.source {
                q.append_pair("source", source);
            }
            if let Some(contains) = &params.contains {
                q.append_pair("contains", contains);
            }
            if let Some(limit) = params.limit {
                q.append_pair("limit", &limit.to_string());
            }
            if let Some(c) = params.consistency {
                q.append_pair("consistency", c.as_str());
            }
            if let Some(partitions) = &params.partitions {
                q.append_pair("partitions", partitions);
            }
            if let Some(order) = params.order {
                q.append_pair("order", order.as_str());
            }
        }
        send_json(self.http.get(without_empty_query(url))).await
    }
}

/// `query_pairs_mut` leaves a bare `?` when nothing was appended.
fn without_empty_query(mut url: Url) -> Url {
    if url.query() == Some("") {
        url.set_query(None);
    }
    url
}

/// Sends a request; a non-2xx answer becomes an [`Error`].
async fn send(request: RequestBuilder) -> Result<reqwest::Response> {
    let response = request.send().await?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.bytes().await?;
    Err(match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(e) => Error::Api {
            status: status.as_u16(),
            code: e.code,
            message: e.message,
        },
        Err(_) => Error::UnexpectedResponse {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).chars().take(512).collect(),
        },
    })
}

async fn send_json<T: DeserializeOwned>(request: RequestBuilder) -> Result<T> {
    let response = send(request).await?;
    let status = response.status().as_u16();
    let body = response.bytes().await?;
    serde_json::from_slice(&body).map_err(|e| Error::UnexpectedResponse {
        status,
        body: format!(
            "{e}: {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(512)
                .collect::<String>()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_each_segment_and_keep_a_base_path() {
        let c = Client::new("http://127.0.0.1:1/prefix/").unwrap();
        assert_eq!(
            c.url(&["v1", "streams", "a/b c"]).as_str(),
            "http://127.0.0.1:1/prefix/v1/streams/a%2Fb%20c"
        );
        let c = Client::new("http://127.0.0.1:1").unwrap();
        assert_eq!(c.url(&["health"]).as_str(), "http://127.0.0.1:1/health");
    }

    #[test]
    fn accepts_http_and_https_and_rejects_other_urls() {
        assert!(Client::new("https://x").is_ok());
        assert!(Client::new("http://x").is_ok());
        assert!(matches!(
            Client::new("ftp://x"),
            Err(Error::InvalidUrl { .. })
        ));
        assert!(matches!(
            Client::new("not a url"),
            Err(Error::InvalidUrl { .. })
        ));
    }

    #[test]
    fn api_errors_expose_their_code() {
        let e = Error::Api {
            status: 404,
            code: "stream_not_found".into(),
            message: "stream \"x\" does not exist".into(),
        };
        assert_eq!(e.code(), Some(ErrorCode::StreamNotFound));
        assert_eq!(
            e.to_string(),
            "stream_not_found: stream \"x\" does not exist"
        );
    }
}
