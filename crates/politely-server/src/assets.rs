//! The browser client and the demo page, embedded in the binary and served beside `/ws`.
//! `assets/` links to `web/` in the repository; a packaged crate carries the files themselves.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// `GET /`: the demo page.
pub(crate) async fn index() -> Response {
    page(
        "text/html; charset=utf-8",
        include_str!("../assets/index.html"),
    )
}

/// `GET /politely.js`: the browser client, an ES module.
pub(crate) async fn client() -> Response {
    page(
        "text/javascript; charset=utf-8",
        include_str!("../assets/politely.js"),
    )
}

/// `GET /demo.js`: the demo page's script.
pub(crate) async fn demo() -> Response {
    page(
        "text/javascript; charset=utf-8",
        include_str!("../assets/demo.js"),
    )
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // The assets change with the binary; a browser must not keep an old client.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
