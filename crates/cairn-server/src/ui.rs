//! The dashboard: a static page served by every node at `/ui/`, its files
//! embedded in the binary so it works with no internet and no CDN.
//!
//! The page (`ui/src/`: plain HTML, CSS and JS, no framework, no bundler)
//! reads the same JSON API as everyone else — `/v1/health` and one
//! multi-metric `/v1/monitor/series` each second, `/v1/cluster` every 5 s,
//! `/v1/monitor/partitions`, `/v1/monitor/findings` and
//! `/v1/monitor/alerts` while their view is open — so the server has no
//! dashboard state at all and any node can serve it. Charts use uPlot, fetched from
//! npm by `build.rs` (pinned by `ui/package-lock.json`) and embedded here;
//! a build without npm embeds empty files and the page says so.
//!
//! The files carry no data, so they are open like the liveness probe (see
//! [`crate::auth::Role::required_for`]); the data routes they call still
//! need the read role, and the page asks for a token when told 401.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

const INDEX_HTML: &str = include_str!("../../../ui/src/index.html");
const APP_JS: &str = include_str!("../../../ui/src/app.js");
const STYLE_CSS: &str = include_str!("../../../ui/src/style.css");
const UPLOT_JS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ui-vendor/uPlot.iife.min.js"));
const UPLOT_CSS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ui-vendor/uPlot.min.css"));

/// Whether uPlot was fetched at build time (see `build.rs`).
pub const CHARTS_BUILT_IN: bool = matches!(env!("CAIRN_UI_CHARTS").as_bytes(), b"1");

/// The page's files by path under `/ui/`: content type and bytes.
fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    Some(match path {
        "" | "index.html" => ("text/html; charset=utf-8", INDEX_HTML.as_bytes()),
        "app.js" => ("text/javascript; charset=utf-8", APP_JS.as_bytes()),
        "style.css" => ("text/css; charset=utf-8", STYLE_CSS.as_bytes()),
        "vendor/uPlot.iife.min.js" => ("text/javascript; charset=utf-8", UPLOT_JS),
        "vendor/uPlot.min.css" => ("text/css; charset=utf-8", UPLOT_CSS),
        _ => return None,
    })
}

/// `GET /` and `GET /ui`: to the dashboard.
pub async fn redirect() -> Redirect {
    Redirect::temporary("/ui/")
}

/// `GET /ui/{*path}` and `GET /ui/`.
pub async fn serve(uri: axum::http::Uri) -> Response {
    let path = uri.path().strip_prefix("/ui/").unwrap_or("");
    match asset(path) {
        Some((content_type, bytes)) => {
            let mut response = bytes.into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            // The files change only with the binary; a rolling upgrade must
            // not leave an old page talking to a new API for long.
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            headers.insert(
                "x-cairn-charts",
                HeaderValue::from_static(if CHARTS_BUILT_IN { "1" } else { "0" }),
            );
            response
        }
        None => (StatusCode::NOT_FOUND, "no such dashboard file").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_the_page_when_listing_its_files_should_serve_every_one_it_references() {
        for name in [
            "app.js",
            "style.css",
            "vendor/uPlot.iife.min.js",
            "vendor/uPlot.min.css",
        ] {
            assert!(INDEX_HTML.contains(name), "index.html does not load {name}");
            assert!(asset(name).is_some(), "{name} is not served");
        }
        assert!(asset("../Cargo.toml").is_none());
    }
}
