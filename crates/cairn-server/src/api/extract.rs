//! Extractors that answer bad input with [`ApiError`] JSON instead of
//! axum's plain-text rejections, and the one way handlers read a body
//! ([`read_body`]): bounded in size, time and memory.

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use bytes::{Bytes, BytesMut};
use cairn_types::ErrorCode;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::ApiError;
use crate::limits::Charge;
use crate::node::Node;

/// Like [`Path`], with JSON errors.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|r| ApiError::bad_request(r.body_text()))
    }
}

/// Like [`Query`], with JSON errors.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|r| ApiError::bad_request(r.body_text()))
    }
}

/// Buffers a request body of at most `limit` bytes; a larger one is a
/// `payload_too_large` JSON error (axum's own limit answers in plain text).
/// See [`read_body_charged`] for the other bounds.
pub async fn read_body(node: &Node, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    read_body_charged(node, body, limit)
        .await
        .map(|(bytes, _)| bytes)
}

/// [`read_body`], also returning the body's charge against the node's
/// receive budget (hold it while the bytes are in use). Each chunk is
/// charged as it arrives, so a body sent slowly holds what has come; the
/// whole body must arrive within the body timeout (`408
/// request_timeout`), and a chunk that finds the budget spent waits (see
/// [`crate::limits::BUDGET_WAIT`]) and then fails with `503 unavailable`.
pub async fn read_body_charged(
    node: &Node,
    mut body: Body,
    limit: usize,
) -> Result<(Bytes, Charge), ApiError> {
    let guards = node.guards();
    let timeout = guards.limits.http_body_timeout;
    let deadline = Instant::now() + timeout;
    let timed_out = || {
        ApiError::new(
            ErrorCode::RequestTimeout,
            format!("the request body did not arrive within {timeout:?} (--http-body-timeout)"),
        )
    };
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    let mut charge = Charge::default();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(timed_out()),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::bad_request(format!(
                    "could not read the request body: {e}"
                )));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers carry nothing we read.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len();
        if total > limit {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("the request body exceeds {limit} bytes"),
            ));
        }
        if let Err(e) = guards
            .budget
            .charge(&mut charge, data.len(), deadline)
            .await
        {
            if Instant::now() >= deadline {
                return Err(timed_out());
            }
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                format!("{e}; retry later"),
            ));
        }
        chunks.push(data);
    }
    let bytes = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut all = BytesMut::with_capacity(total);
            for c in chunks {
                all.extend_from_slice(&c);
            }
            all.freeze()
        }
    };
    Ok((bytes, charge))
}
