//! The approvers' web console at `/console`: people review held requests, search the audit
//! log and replay recordings in a browser.
//!
//! One concern per file: `session` (the cookie, its expiry, CSRF), `login` (dev sign-in on
//! loopback, OIDC authorization code with PKCE), `api` (the JSON the page reads, through the
//! same functions as the REST API), this file (routes, static assets, security headers).
//!
//! Invariants:
//! - The console is for principals of kind `human`; no session is ever made for an agent.
//! - Console routes read only the session cookie, never `Authorization`: an agent's bearer
//!   token opens nothing here. The agent API reads only `Authorization`, never cookies.
//! - Every console response carries a strict Content-Security-Policy (no inline script or
//!   style, no third-party origin): the page is made of the embedded assets only, so data
//!   shown in it (statements, rows, recordings) cannot run as code.
//! - Every state change needs the session's CSRF token in a header, from the console's own
//!   origin; a cookie alone changes nothing.

mod api;
mod login;
mod session;

pub use login::LINK_TTL_SECS;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::api::AppState;

/// What the page may load and talk to: only itself. `wasm-unsafe-eval` lets the embedded
/// terminal player compile its WebAssembly; it allows no JavaScript `eval`.
const CSP: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self' data:; \
    media-src 'self'; worker-src 'self' blob:; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// The embedded page: name, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/app.css"),
    ),
    (
        "asciinema-player.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/asciinema-player.min.js"),
    ),
    (
        "asciinema-player.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/asciinema-player.css"),
    ),
];

const INDEX: &[u8] = include_bytes!("assets/index.html");

/// A one-time sign-in link's path for `principal` (a person, checked): what `airlock`
/// prints in embedded mode instead of a token, which anyone reading its command line could
/// reuse.
pub async fn sign_in_link(
    state: &AppState,
    principal: crate::identity::Principal,
) -> Result<String, String> {
    login::sign_in_code(state, principal)
        .await
        .map(|code| format!("/console/#sign-in={code}"))
}

/// The console's routes, or none when `console.enabled` is off.
pub(crate) fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    if !state.console.enabled {
        return Router::new();
    }
    Router::new()
        .route("/console", get(index))
        .route("/console/", get(index))
        .route("/console/assets/{name}", get(asset))
        .route("/console/login/{issuer}", get(login::start))
        .route("/console/callback", get(login::callback))
        .route("/console/api/login-options", get(login::options))
        .route("/console/api/login/dev", post(login::dev))
        .route("/console/api/login/link", post(login::link))
        .route("/console/api/me", get(api::me))
        .route("/console/api/logout", post(api::logout))
        .route("/console/api/reviews", get(api::reviews))
        .route("/console/api/reviews/events", get(api::review_events))
        .route("/console/api/reviews/{id}", get(api::review))
        .route("/console/api/reviews/{id}/approve", post(api::approve))
        .route("/console/api/reviews/{id}/reject", post(api::reject))
        .route("/console/api/audit", get(api::audit))
        .route("/console/api/sessions", get(api::sessions))
        .route("/console/api/sessions/{id}", get(api::session))
        .route("/console/api/sessions/{id}/recording", get(api::recording))
        .layer(axum::middleware::from_fn(security_headers))
}

async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, bytes)) => {
            ([(header::CONTENT_TYPE, *content_type)], *bytes).into_response()
        }
        None => crate::api::problem::Problem::not_found("no such console asset").into_response(),
    }
}

/// Headers on every console response: the CSP above, no framing, no sniffing, no referrer
/// (URLs can carry review ids), and nothing cached but the static assets (revalidated).
async fn security_headers(req: Request, next: Next) -> Response {
    let is_asset = req.uri().path().starts_with("/console/assets/");
    let mut resp = next.run(req).await;
    let cache = if is_asset && resp.status() == StatusCode::OK {
        "no-cache"
    } else {
        "no-store"
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=()"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    resp
}
