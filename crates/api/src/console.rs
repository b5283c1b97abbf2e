//! The operator console (`/console/`): static files built into the binary (no build step,
//! nothing fetched from elsewhere), which call the public API with a key the operator
//! enters and the page keeps in the tab's session storage.
//!
//! Owns: serving those files, with headers that keep the page to this server (a content
//! security policy of `self` only) and its key out of any referrer. Must not touch the API's
//! keys: the page's requests are checked like any other client's.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// Each file: its path under `/console/`, its content type, its bytes.
const FILES: [(&str, &str, &[u8]); 6] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../console/index.html"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../console/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("../console/console.css"),
    ),
    (
        "vendor/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../console/vendor/uPlot.iife.min.js"),
    ),
    (
        "vendor/uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../console/vendor/uPlot.min.css"),
    ),
    (
        "vendor/uPlot.LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("../console/vendor/uPlot.LICENSE"),
    ),
];

/// Only this server: scripts, styles, images and the API calls. (uPlot sets element styles
/// from script, which the policy allows; inline `<script>` is refused.)
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                      img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
                      base-uri 'none'; form-action 'self'";

/// The console's routes: `/console` (to `/console/`), `/console/` and its files.
pub fn routes() -> Router {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(|| async { file("index.html") }))
        .route(
            "/console/{*path}",
            get(|Path(path): Path<String>| async move { file(&path) }),
        )
}

fn file(path: &str) -> Response {
    let Some((_, kind, bytes)) = FILES.iter().find(|(p, _, _)| *p == path) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "no such file of the console\n",
        )
            .into_response();
    };
    let mut r = (*bytes).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_names_is_served() {
        let index = std::str::from_utf8(FILES[0].2).unwrap();
        for attr in ["src=\"", "href=\""] {
            for part in index.split(attr).skip(1) {
                let target = part.split('"').next().unwrap();
                if target.starts_with('#') || target.starts_with("data:") {
                    continue;
                }
                assert!(
                    FILES.iter().any(|(p, _, _)| *p == target),
                    "index.html names {target}, which is not served"
                );
            }
        }
    }
}
