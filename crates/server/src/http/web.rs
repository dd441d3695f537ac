//! The web client: static files compiled into the binary (`include_str!` of
//! `http/web/`), served at `GET /` and beside it. The page speaks the chat protocol over
//! `/ws` on the same origin, so the Origin check lets it in with no setting.
//!
//! Nothing is built or fetched at run time: the files are plain HTML, CSS and JavaScript
//! modules, each served with its content type and a Content-Security-Policy that allows
//! only this server's own scripts, styles and WebSocket.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

/// Scripts, styles and connections from this origin only; no inline code, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file of the client: its path, content type and body.
const FILES: [(&str, &str, &str); 6] = [
    ("/", HTML, include_str!("web/index.html")),
    ("/style.css", CSS, include_str!("web/style.css")),
    ("/app.js", JS, include_str!("web/app.js")),
    ("/connection.js", JS, include_str!("web/connection.js")),
    ("/views.js", JS, include_str!("web/views.js")),
    ("/manage.js", JS, include_str!("web/manage.js")),
];

/// The routes of the web client, to merge into the HTTP router.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    FILES
        .iter()
        .fold(Router::new(), |router, &(path, content_type, body)| {
            router.route(path, get(move || async move { file(content_type, body) }))
        })
}

fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
}
