//! Console sessions: a random cookie, kept in the store by its digest, ending after
//! `console.idle_timeout_secs` without a request or `console.max_session_secs` after
//! sign-in; and the CSRF check every state change passes.
//!
//! Invariants:
//! - The cookie is `HttpOnly`, `SameSite=Strict`, `Path=/console`, and `Secure` unless the
//!   console's origin is loopback: the page's scripts never see it and no other site's
//!   request carries it.
//! - The store holds the SHA-256 of the cookie, never the cookie.
//! - Every request carries the session's CSRF token in `X-Airlock-CSRF` (the cookie alone
//!   opens nothing: browsers also send it to other ports of the same host), and, when the
//!   browser says where it comes from (`Origin`, `Sec-Fetch-Site`), comes from the console's
//!   own origin.
//! - An expired session is deleted when met, and answers exactly like no session.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use base64::Engine;
use chrono::{Duration, Utc};

use crate::api::AppState;
use crate::api::problem::{Code, Problem};
use crate::identity::Principal;
use crate::store::ConsoleSessionRecord;

pub(crate) const COOKIE: &str = "airlock_console";
pub(super) const CSRF_HEADER: &str = "x-airlock-csrf";
/// Sent by the page's live refreshes, which are not activity for the idle timeout.
const BACKGROUND_HEADER: &str = "x-airlock-background";
/// Activity is written to the store at most this often per session (the idle clock is
/// this coarse).
const TOUCH_EVERY_SECS: i64 = 30;

/// A signed-in person: the console cookie and the session's CSRF token, from the console's
/// own origin.
pub(super) struct ConsoleUser {
    pub(super) principal: Principal,
    pub(super) session: ConsoleSessionRecord,
}

impl FromRequestParts<Arc<AppState>> for ConsoleUser {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Problem> {
        // Live refreshes (the page's poll and event stream) are not the person's activity:
        // they must not keep an unattended console signed in.
        let background =
            parts.headers.contains_key(BACKGROUND_HEADER) || parts.uri.path().ends_with("/events");
        let session = current(state, &parts.headers, !background).await?;
        // Every request, reads included: browsers send the cookie to every port of a host,
        // so a page on another local port receives it. The proof, kept by the page in its
        // own origin's storage, is what that page does not have.
        check_csrf(state, &parts.headers, &session.csrf)?;
        Ok(ConsoleUser {
            principal: session.principal.clone(),
            session,
        })
    }
}

fn signed_out() -> Problem {
    Problem::unauthorized("sign in to the console: no session, or it has ended")
}

/// The live session the request's cookie names.
async fn current(
    state: &AppState,
    headers: &HeaderMap,
    activity: bool,
) -> Result<ConsoleSessionRecord, Problem> {
    let token = cookie(headers, COOKIE).ok_or_else(signed_out)?;
    let digest = crate::digest::sha256_hex(token.as_bytes());
    let store = &state.gateway.store;
    let session = store
        .console_session(&digest)
        .await
        .map_err(|_| Problem::audit_unavailable())?
        .ok_or_else(signed_out)?;
    let now = Utc::now();
    let idle = Duration::seconds(state.console.idle_timeout_secs.min(i64::MAX as u64) as i64);
    if now >= session.expires_at || now >= session.last_seen_at + idle {
        let _ = store.delete_console_session(&digest).await;
        return Err(signed_out());
    }
    if activity && now - session.last_seen_at >= Duration::seconds(TOUCH_EVERY_SECS) {
        // Failing to note activity only shortens the session; it is not worth a refusal.
        if let Err(e) = store.touch_console_session(&digest, now).await {
            tracing::warn!(error = %e, "could not record console activity");
        }
    }
    Ok(session)
}

/// A cookie's value from the request's `Cookie` headers.
pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn check_csrf(state: &AppState, headers: &HeaderMap, expected: &str) -> Result<(), Problem> {
    let sent = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !crate::digest::constant_time_eq(sent.as_bytes(), expected.as_bytes()) {
        return Err(Problem::new(
            Code::CsrfFailed,
            "console requests need the session's CSRF token (from the sign-in answer) in X-Airlock-CSRF",
        ));
    }
    same_origin(state, headers)
}

/// Refuses a request a browser says comes from another site. Browsers send `Origin` on
/// every POST and `Sec-Fetch-Site` on every request; a request without them is not a
/// browser's, and a non-browser holding the cookie needs no forgery.
pub(super) fn same_origin(state: &AppState, headers: &HeaderMap) -> Result<(), Problem> {
    let cross = || {
        Problem::new(
            Code::CsrfFailed,
            "this request comes from another site; use the console's own page",
        )
    };
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site != "same-origin"
    {
        return Err(cross());
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().map_err(|_| cross())?;
        if Some(origin.trim_end_matches('/')) != own_origin(state, headers).as_deref() {
            return Err(cross());
        }
    }
    Ok(())
}

/// The console's origin: `console.public_url`, or else the request's `Host` over http
/// (only ever compared against what the browser sends, or used on loopback).
pub(super) fn own_origin(state: &AppState, headers: &HeaderMap) -> Option<String> {
    if let Some(url) = &state.console.public_url {
        return Some(url.trim_end_matches('/').to_string());
    }
    let host = headers.get(header::HOST)?.to_str().ok()?;
    Some(format!("http://{host}"))
}

/// Whether the console is served on a loopback origin (then cookies cannot be `Secure`:
/// browsers would drop them over plain http).
pub(super) fn loopback_origin(state: &AppState, headers: &HeaderMap) -> bool {
    own_origin(state, headers)
        .and_then(|o| reqwest::Url::parse(&o).ok())
        .and_then(|u| u.host_str().map(crate::config::is_loopback_host))
        .unwrap_or(false)
}

/// 32 random bytes, base64url.
pub(super) fn random_token() -> Result<String, Problem> {
    let bytes = crate::keyfile::random(32)
        .map_err(|_| Problem::new(Code::RandomUnavailable, "no randomness for a session"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Starts a session for `principal` (a human, checked by the caller) and returns the
/// `Set-Cookie` value.
pub(super) async fn start(
    state: &AppState,
    headers: &HeaderMap,
    principal: Principal,
) -> Result<(HeaderValue, ConsoleSessionRecord), Problem> {
    let token = random_token()?;
    let now = Utc::now();
    let max = state.console.max_session_secs.min(i64::MAX as u64) as i64;
    let record = ConsoleSessionRecord {
        digest: crate::digest::sha256_hex(token.as_bytes()),
        principal,
        csrf: random_token()?,
        created_at: now,
        last_seen_at: now,
        expires_at: now + Duration::seconds(max),
    };
    state
        .gateway
        .store
        .put_console_session(&record)
        .await
        .map_err(|_| Problem::audit_unavailable())?;
    tracing::info!(
        principal = %record.principal.id().escape_debug(),
        "console sign-in"
    );
    let cookie = set_cookie(state, headers, COOKIE, &token, "/console", "Strict", max)?;
    Ok((cookie, record))
}

/// Ends the session (sign-out) and returns the `Set-Cookie` that clears it.
pub(super) async fn end(
    state: &AppState,
    headers: &HeaderMap,
    session: &ConsoleSessionRecord,
) -> Result<HeaderValue, Problem> {
    state
        .gateway
        .store
        .delete_console_session(&session.digest)
        .await
        .map_err(|_| Problem::audit_unavailable())?;
    tracing::info!(
        principal = %session.principal.id().escape_debug(),
        "console sign-out"
    );
    set_cookie(state, headers, COOKIE, "", "/console", "Strict", 0)
}

/// A `Set-Cookie` value with the console's attributes.
pub(super) fn set_cookie(
    state: &AppState,
    headers: &HeaderMap,
    name: &str,
    value: &str,
    path: &str,
    same_site: &str,
    max_age: i64,
) -> Result<HeaderValue, Problem> {
    let secure = if loopback_origin(state, headers) {
        ""
    } else {
        "; Secure"
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite={same_site}; Max-Age={max_age}{secure}"
    ))
    .map_err(|_| Problem::internal("cookie value"))
}
