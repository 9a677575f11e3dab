//! The page's files, compiled into the binary so dev mode needs no npm.
//!
//! `edgepush.js` is the JS client bundled by `npm run bundle` in
//! `clients/js` (a unit test there fails when it is stale); the others are
//! the page itself.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// The page.
pub const INDEX_HTML: &str = include_str!("../assets/index.html");
/// The page's script (an ES module importing `./edgepush.js`).
pub const CONSOLE_JS: &str = include_str!("../assets/console.js");
/// The page's styles.
pub const CONSOLE_CSS: &str = include_str!("../assets/console.css");
/// The JS client, bundled into one ES module.
pub const CLIENT_JS: &str = include_str!("../assets/edgepush.js");

/// `/console` (redirects to `/console/`) and the files.
pub fn routes() -> Router {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route(
            "/console/",
            get(|| async { file("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/console/console.js",
            get(|| async { file("text/javascript; charset=utf-8", CONSOLE_JS) }),
        )
        .route(
            "/console/console.css",
            get(|| async { file("text/css; charset=utf-8", CONSOLE_CSS) }),
        )
        .route(
            "/console/edgepush.js",
            get(|| async { file("text/javascript; charset=utf-8", CLIENT_JS) }),
        )
}

fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
