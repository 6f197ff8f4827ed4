//! The HTTP API.
//!
//! - [`ApiError`] (from `crate::error`): the single error type, and its JSON response.
//! - [`extract`]: path/query extractors whose rejections are JSON errors.
//! - [`handlers`]: one function per route; storage work runs on the
//!   blocking pool because reads are synchronous `pread`s.
//!
//! | route | answer |
//! |---|---|
//! | `GET /health` | `{status, streams, uptime_seconds}` |
//! | `POST /v1/streams` | 201 + stream |
//! | `GET /v1/streams` | `{streams: [...]}` |
//! | `GET /v1/streams/{name}` | stream |
//! | `DELETE /v1/streams/{name}` | 204 |
//! | `POST /v1/streams/{name}/entries` | `{appended, partitions}` |
//! | `GET /v1/streams/{name}/partitions/{p}/entries?offset&limit` | `{entries, next_offset, start_offset, end_offset}` |
//! | `GET /v1/streams/{name}/query?start&end&level&source&contains&limit` | `{entries, truncated}` |
//! | `GET /v1/health?local` | the cluster verdict: `{status: green\|yellow\|red, reasons, nodes, partitions}` |
//! | `GET /v1/monitor/findings?local` | active findings with evidence |
//! | `GET /v1/monitor/alerts?local` | `{active, history}` |
//! | `GET /v1/monitor/partitions?local` | `{partitions: [{stream, partition, leader, term, replicas, committed_end_offset, followers: [{node, entries, seconds, in_sync}], catching_up: [{node, percent, staged_bytes}]}]}` from the latest round |
//! | `GET /v1/monitor/series?metric&node&since` | `{metric, points: [{unix_ms, node, value}]}`; `metric=a,b,…` → `{metrics: {a: [points], b: …}}` |
//! | `GET /v1/reports?local` | saved performance reports, newest first: `{reports: [{id, start_unix_ms, end_unix_ms, status, worst, findings}]}` |
//! | `GET /v1/reports/{id}?format=json\|md\|html` | one saved report (404 `not_found` if none) |
//! | `GET /v1/reports/current?window_s&format` | a report made now over the last `window_s` (default 900, at most 86,400) |
//! | `GET /v1/cluster` | nodes, controller leader, this node's groups |
//! | `POST /v1/cluster/join` | `{id, raft_addr, http_addr}` → 204 |
//! | `POST /v1/cluster/nodes/{id}/decommission` | 202; replicas move away, then the node leaves |
//! | `POST`/`GET`/`DELETE /v1/faults/network` | install / list / clear transport faults |
//! | `POST`/`GET`/`DELETE /v1/faults/disk` | set / show / clear write and fsync delays, append error rate |
//! | `POST`/`GET`/`DELETE /v1/faults/cpu` | start / show / stop CPU burner threads |
//! | `POST /v1/anti-entropy/scan` | `{stream?, partition?, deep?}` → `{reports, failed}` (runs on each partition's leader) |
//! | `GET /v1/anti-entropy/status?local` | last scan per partition, quarantined replicas |
//! | `GET /`, `GET /ui` | redirect to the dashboard |
//! | `GET /ui/…` | the dashboard's embedded files ([`crate::ui`]; open, no token) |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /v1/telemetry/snapshot` | JSON summary of the last interval |
//! | `GET`/`PUT /v1/telemetry/stage-timing` | `{enabled}` |
//!
//! A middleware counts every failed request by its error code
//! (`cairn_errors_total` / `cairn_rejections_total`); inside it, another
//! checks the request's bearer token against the role it needs
//! ([`crate::auth`]): 401 `unauthorized` without a valid token, 403
//! `forbidden` with one whose role is too low. Nothing runs before that
//! check, so a refused request changes nothing.

pub mod anti_entropy;
pub mod cluster;
pub mod extract;
pub mod faults;
pub mod handlers;
pub mod monitor;
pub mod reports;
pub mod telemetry;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cairn_types::ErrorCode;
use tower_http::trace::TraceLayer;

pub use crate::error::ApiError;

use crate::auth::Verdict;
use crate::node::Node;

pub fn router(node: Node) -> Router {
    Router::new()
        .route("/health", get(handlers::health))
        .route(
            "/v1/streams",
            post(handlers::create_stream).get(handlers::list_streams),
        )
        .route(
            "/v1/streams/{name}",
            get(handlers::get_stream).delete(handlers::delete_stream),
        )
        .route("/v1/streams/{name}/entries", post(handlers::append))
        .route(
            "/v1/streams/{name}/partitions/{partition}/entries",
            get(handlers::read),
        )
        .route("/v1/streams/{name}/query", get(handlers::query))
        .route("/v1/health", get(monitor::health))
        .route("/v1/monitor/findings", get(monitor::findings))
        .route("/v1/monitor/alerts", get(monitor::alerts))
        .route("/v1/monitor/partitions", get(monitor::partitions))
        .route("/v1/monitor/series", get(monitor::series))
        .route("/v1/monitor/recommendations", get(monitor::recommendations))
        .route(
            "/v1/monitor/recommendations/{id}/apply",
            post(monitor::apply),
        )
        .route("/v1/monitor/actions", get(monitor::actions))
        .route("/v1/reports", get(reports::list))
        .route("/v1/reports/current", get(reports::current))
        .route("/v1/reports/{id}", get(reports::get))
        .route("/v1/cluster", get(cluster::view))
        .route("/v1/cluster/join", post(cluster::join))
        .route(
            "/v1/streams/{name}/partitions/{partition}/leader",
            post(cluster::move_leader),
        )
        .route(
            "/v1/cluster/leaders/rebalance",
            post(cluster::rebalance_leaders),
        )
        .route(
            "/v1/cluster/nodes/{id}/decommission",
            post(cluster::decommission),
        )
        .route(
            "/v1/faults/network",
            post(faults::add).get(faults::list).delete(faults::clear),
        )
        .route(
            "/v1/faults/disk",
            post(faults::set_disk)
                .get(faults::get_disk)
                .delete(faults::clear_disk),
        )
        .route(
            "/v1/faults/cpu",
            post(faults::set_cpu)
                .get(faults::get_cpu)
                .delete(faults::clear_cpu),
        )
        .route("/v1/anti-entropy/scan", post(anti_entropy::scan))
        .route("/v1/anti-entropy/status", get(anti_entropy::status))
        .route("/", get(crate::ui::redirect))
        .route("/ui", get(crate::ui::redirect))
        .route("/ui/", get(crate::ui::serve))
        .route("/ui/{*path}", get(crate::ui::serve))
        .route("/metrics", get(telemetry::metrics))
        .route("/v1/telemetry/snapshot", get(telemetry::snapshot))
        .route(
            "/v1/telemetry/stage-timing",
            get(telemetry::get_stage_timing).put(telemetry::set_stage_timing),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(node.clone(), authorize))
        .layer(middleware::from_fn_with_state(node.clone(), count_failures))
        .layer(TraceLayer::new_for_http())
        .with_state(node)
}

/// Counts failed requests by the code their [`ApiError`] left behind, and
/// appends as in flight from the moment they arrive (before their body is
/// read and parsed: under overload that is where they wait).
async fn count_failures(State(node): State<Node>, request: Request, next: Next) -> Response {
    let is_append =
        request.method() == axum::http::Method::POST && request.uri().path().ends_with("/entries");
    let in_flight = is_append.then(|| node.telemetry().metrics.write_in_flight());
    let response = next.run(request).await;
    drop(in_flight);
    if let Some(code) = response.extensions().get::<ErrorCode>() {
        node.telemetry().metrics.count_error(*code);
    }
    response
}

/// Refuses a request whose token does not grant the role it needs.
async fn authorize(State(node): State<Node>, request: Request, next: Next) -> Response {
    let authorization = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let verdict =
        node.config()
            .access
            .check_http(request.method(), request.uri().path(), authorization);
    match verdict {
        Verdict::Allowed => next.run(request).await,
        Verdict::Unauthenticated => {
            let mut response = ApiError::new(
                ErrorCode::Unauthorized,
                "a valid token is required: send `Authorization: Bearer TOKEN` (cairn --token or CAIRN_TOKEN)",
            )
            .into_response();
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            response
        }
        Verdict::Forbidden { role, needed } => ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "{} {} needs the {needed} role; this token has {role}",
                request.method(),
                request.uri().path()
            ),
        )
        .into_response(),
    }
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no route for {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("method {method} is not allowed on {}", uri.path()),
    )
}
