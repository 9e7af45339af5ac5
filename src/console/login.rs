//! Signing people in to the console.
//!
//! - OIDC: authorization code with PKCE (S256) against an issuer with `[issuers.console]`.
//!   `GET /console/login/{issuer}` keeps the sign-in (by the digest of its `state`) in the
//!   store and sends the browser to the provider; `GET /console/callback` redeems it once,
//!   exchanges the code (with the verifier, and the client secret when configured), verifies
//!   the ID token (signature from the issuer's JWKS, `iss`, `aud` = client id, `nonce`), and
//!   starts a session.
//! - Dev: with the dev issuer (embedded mode, loopback only), a token minted by
//!   `airlock token --kind human` is exchanged for a session. Possession of the dev key is
//!   the proof, as for the API; the console adds no way around it.
//! - Link: `airlock` (embedded mode) prints a one-time sign-in link, `#sign-in=CODE`: the
//!   code is random, kept in the store by its digest, redeemed once within
//!   [`LINK_TTL_SECS`], on loopback only. Unlike a token it is useless on the API and cannot
//!   be replayed from a process list once used.
//!
//! Invariants:
//! - Only principals of kind `human`, acting for themselves (no `act` chain), get a session.
//! - The page gets the session's proof (the CSRF token) only in a sign-in answer or, after
//!   OIDC, in the fragment of the redirect: never in an answer the cookie alone can get.
//! - A callback is bound to the browser that started the sign-in: the `state` must also be
//!   in a short-lived cookie only that browser holds (no login CSRF: nobody can sign someone
//!   else's browser in to their own account).
//! - A `state` is redeemed at most once, within ten minutes.
//! - The redirect URI is `{console.public_url}/console/callback`, or on a loopback origin
//!   the request's own; never a Host header from elsewhere.

use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use chrono::{Duration, Utc};
use serde::{Deserialize, Serialize};

use super::session;
use crate::api::AppState;
use crate::api::extract::ApiJson;
use crate::api::problem::{Code, Problem};
use crate::config::PrincipalKind;
use crate::identity::Principal;
use crate::store::ConsoleLoginRecord;

/// The cookie binding a sign-in to the browser that started it. `SameSite=Lax`: it must
/// come back on the provider's top-level redirect to the callback.
const LOGIN_COOKIE: &str = "airlock_console_login";
const LOGIN_TTL_SECS: i64 = 600;
/// How long a printed sign-in link stays usable.
pub const LINK_TTL_SECS: i64 = 900;

#[derive(Serialize)]
pub(super) struct LoginOptions {
    /// The dev sign-in (a token from `airlock token --kind human`) is offered here.
    dev: bool,
    issuers: Vec<IssuerOption>,
}

#[derive(Serialize)]
struct IssuerOption {
    name: String,
    href: String,
}

/// The TCP peer's address, when the server recorded it (`net::serve` does).
pub(super) struct Peer(Option<std::net::SocketAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<std::net::SocketAddr>>()
                .map(|ConnectInfo(a)| *a),
        ))
    }
}

impl Peer {
    /// Unknown peers are not loopback: the dev sign-in fails closed.
    fn is_loopback(&self) -> bool {
        self.0.is_some_and(|a| a.ip().is_loopback())
    }
}

/// `GET /console/api/login-options`: how one can sign in here.
pub(super) async fn options(State(state): State<Arc<AppState>>, peer: Peer) -> Json<LoginOptions> {
    Json(LoginOptions {
        dev: state.auth.dev_issuer().is_some() && peer.is_loopback(),
        issuers: state
            .auth
            .console_issuers()
            .into_iter()
            .map(|i| IssuerOption {
                name: i.name.clone(),
                href: format!("/console/login/{}", i.name),
            })
            .collect(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DevLogin {
    token: String,
}

/// `POST /console/api/login/dev`: a dev-issued human token becomes a session.
pub(super) async fn dev(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
    ApiJson(req): ApiJson<DevLogin>,
) -> Result<Response, Problem> {
    let Some(dev_issuer) = state.auth.dev_issuer() else {
        return Err(Problem::new(
            Code::ConsoleDevLoginUnavailable,
            "there is no dev issuer here; sign in with your identity provider",
        ));
    };
    if !peer.is_loopback() {
        return Err(Problem::new(
            Code::ConsoleDevLoginUnavailable,
            "the dev sign-in is only for loopback clients",
        ));
    }
    // No session yet, so no CSRF token: the origin check and the JSON body (which another
    // site cannot send without a CORS preflight nobody answers) stand in for it.
    session::same_origin(&state, &headers)?;
    let principal = crate::api::extract::authenticate_token(&state, req.token.trim()).await?;
    if principal.issuer != dev_issuer {
        return Err(Problem::unauthorized(
            "the dev sign-in takes tokens of the dev issuer (`airlock token --kind human`); \
             sign in with your identity provider instead",
        ));
    }
    signed_in(&state, &headers, principal).await
}

/// Refuses agents, then starts the session and answers as `GET /console/api/me` does.
async fn signed_in(
    state: &AppState,
    headers: &HeaderMap,
    principal: Principal,
) -> Result<Response, Problem> {
    humans_only(&principal)?;
    let (cookie, record) = session::start(state, headers, principal).await?;
    let me = super::api::me_view(state, &record);
    let mut resp = Json(me).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(resp)
}

fn humans_only(p: &Principal) -> Result<(), Problem> {
    if p.kind != PrincipalKind::Human {
        return Err(Problem::new(
            Code::ConsoleHumansOnly,
            "the console is for people: this token is an agent's; agents use the API",
        ));
    }
    // A person's token delegated to software is that software acting: it may not approve,
    // and gets no console either.
    if !p.actor.is_empty() {
        return Err(Problem::new(
            Code::ConsoleHumansOnly,
            "the console is for people acting for themselves: this token carries a delegation (act)",
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LinkLogin {
    code: String,
}

/// `POST /console/api/login/link`: a one-time sign-in link's code becomes a session.
pub(super) async fn link(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    headers: HeaderMap,
    ApiJson(req): ApiJson<LinkLogin>,
) -> Result<Response, Problem> {
    if state.auth.dev_issuer().is_none() || !peer.is_loopback() {
        return Err(Problem::new(
            Code::ConsoleDevLoginUnavailable,
            "sign-in links are only for loopback clients of a server with the dev issuer",
        ));
    }
    session::same_origin(&state, &headers)?;
    let spent = || {
        Problem::unauthorized(
            "this sign-in link has expired or was already used; restart airlock for a new one, \
             or paste a token from `airlock token --kind human`",
        )
    };
    let digest = crate::digest::sha256_hex(req.code.trim().as_bytes());
    let record = state
        .gateway
        .store
        .take_console_login(&digest)
        .await
        .map_err(|_| Problem::audit_unavailable())?
        .filter(|l| l.expires_at > Utc::now())
        .ok_or_else(spent)?;
    // An OIDC sign-in's `state` is not a link: taking it above spent it, nothing more.
    let principal = record.principal.ok_or_else(spent)?;
    signed_in(&state, &headers, principal).await
}

/// Makes a one-time sign-in link's code for `principal`, a person; the link is
/// `/console/#sign-in={code}`.
pub(crate) async fn sign_in_code(state: &AppState, principal: Principal) -> Result<String, String> {
    humans_only(&principal).map_err(|p| p.detail)?;
    let code = session::random_token().map_err(|p| p.detail)?;
    let record = ConsoleLoginRecord {
        digest: crate::digest::sha256_hex(code.as_bytes()),
        issuer: principal.issuer.clone(),
        verifier: String::new(),
        nonce: String::new(),
        redirect_uri: String::new(),
        principal: Some(principal),
        expires_at: Utc::now() + Duration::seconds(LINK_TTL_SECS),
    };
    state
        .gateway
        .store
        .put_console_login(&record)
        .await
        .map_err(|e| format!("the store cannot keep the sign-in link: {e}"))?;
    Ok(code)
}

/// Where the provider sends the browser back, or why there is none.
fn redirect_uri(state: &AppState, headers: &HeaderMap) -> Result<String, String> {
    if state.console.public_url.is_none() && !session::loopback_origin(state, headers) {
        return Err("set console.public_url to the console's external origin; \
             OIDC sign-in needs a redirect URI registered with the provider"
            .into());
    }
    session::own_origin(state, headers)
        .map(|o| format!("{o}/console/callback"))
        .ok_or_else(|| "the request has no Host".into())
}

/// Why a sign-in failed, for the page: a fixed code the page words (nothing an attacker
/// writes into a URL is shown), and the detail, for the log only.
struct LoginError {
    code: &'static str,
    detail: String,
}

fn login_error(code: &'static str, detail: impl Into<String>) -> LoginError {
    LoginError {
        code,
        detail: detail.into(),
    }
}

/// Back to the page with the failure's code.
fn failed(e: &LoginError) -> Response {
    tracing::warn!(code = e.code, error = %e.detail.escape_debug(), "console sign-in failed");
    Redirect::to(&format!("/console/#login-error={}", e.code)).into_response()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `GET /console/login/{issuer}`: to the provider, with PKCE.
pub(super) async fn start(
    State(state): State<Arc<AppState>>,
    Path(issuer): Path<String>,
    headers: HeaderMap,
) -> Response {
    match begin(&state, &issuer, &headers).await {
        Ok(resp) => resp,
        Err(e) => failed(&e),
    }
}

async fn begin(
    state: &AppState,
    issuer: &str,
    headers: &HeaderMap,
) -> Result<Response, LoginError> {
    let Some(console) = state.auth.issuer(issuer).and_then(|i| i.console.as_ref()) else {
        return Err(login_error(
            "not_configured",
            format!("no console sign-in is configured for `{issuer}`"),
        ));
    };
    let redirect_uri =
        redirect_uri(state, headers).map_err(|e| login_error("needs_public_url", e))?;
    let unavailable = |e: String| login_error("unavailable", e);
    let endpoints = state.auth.endpoints(issuer).await.map_err(unavailable)?;
    let token = || session::random_token().map_err(|p| unavailable(p.detail));
    let (state_value, nonce, verifier) = (token()?, token()?, token()?);
    let challenge =
        b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref());
    let record = ConsoleLoginRecord {
        digest: crate::digest::sha256_hex(state_value.as_bytes()),
        issuer: issuer.to_string(),
        verifier,
        nonce: nonce.clone(),
        redirect_uri: redirect_uri.clone(),
        principal: None,
        expires_at: Utc::now() + Duration::seconds(LOGIN_TTL_SECS),
    };
    state
        .gateway
        .store
        .put_console_login(&record)
        .await
        .map_err(|e| unavailable(format!("the store cannot keep the sign-in: {e}")))?;
    let mut url = reqwest::Url::parse(&endpoints.authorization)
        .map_err(|e| unavailable(format!("authorization_endpoint: {e}")))?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &console.client_id)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("scope", &console.scopes.join(" "))
        .append_pair("state", &state_value)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let binding = session::set_cookie(
        state,
        headers,
        LOGIN_COOKIE,
        &state_value,
        "/console/callback",
        "Lax",
        LOGIN_TTL_SECS,
    )
    .map_err(|p| unavailable(p.detail))?;
    let mut resp = Redirect::to(url.as_str()).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, binding);
    Ok(resp)
}

#[derive(Deserialize)]
pub(super) struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /console/callback`: the provider's answer becomes a session.
pub(super) async fn callback(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<CallbackParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let result = match query {
        Ok(Query(params)) => finish(&state, &headers, params).await,
        Err(e) => Err(login_error(
            "provider_error",
            format!("bad callback: {}", e.body_text()),
        )),
    };
    // The binding cookie is spent whatever happened.
    let clear = session::set_cookie(
        &state,
        &headers,
        LOGIN_COOKIE,
        "",
        "/console/callback",
        "Lax",
        0,
    )
    .ok();
    let mut resp = match result {
        Ok((session_cookie, proof)) => {
            // The page's half of the session travels in the fragment: it reaches the page
            // only, never a server or a log, and the page drops it from the address bar.
            let to = format!("/console/#session={proof}");
            let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response();
            resp.headers_mut()
                .append(header::SET_COOKIE, session_cookie);
            resp
        }
        Err(e) => failed(&e),
    };
    if let Some(clear) = clear {
        resp.headers_mut().append(header::SET_COOKIE, clear);
    }
    resp
}

/// Redeems the callback: the session's cookie and its proof for the page.
async fn finish(
    state: &AppState,
    headers: &HeaderMap,
    params: CallbackParams,
) -> Result<(axum::http::HeaderValue, String), LoginError> {
    if let Some(error) = params.error {
        let detail = params.error_description.unwrap_or_default();
        return Err(login_error(
            "provider_error",
            format!("the identity provider said {error}: {detail}"),
        ));
    }
    let (Some(code), Some(state_value)) = (params.code, params.state) else {
        return Err(login_error(
            "provider_error",
            "the callback lacks code or state",
        ));
    };
    let bound = session::cookie(headers, LOGIN_COOKIE).unwrap_or_default();
    if !crate::digest::constant_time_eq(bound.as_bytes(), state_value.as_bytes()) {
        return Err(login_error(
            "other_browser",
            "the callback's state is not this browser's sign-in",
        ));
    }
    let unavailable = |e: String| login_error("unavailable", e);
    let login = state
        .gateway
        .store
        .take_console_login(&crate::digest::sha256_hex(state_value.as_bytes()))
        .await
        .map_err(|e| unavailable(format!("the store cannot read the sign-in: {e}")))?
        .filter(|l| l.expires_at > Utc::now() && l.principal.is_none())
        .ok_or_else(|| login_error("expired", "the sign-in expired or was already used"))?;
    let console = state
        .auth
        .issuer(&login.issuer)
        .and_then(|i| i.console.clone())
        .ok_or_else(|| {
            login_error(
                "not_configured",
                "the sign-in's issuer is no longer configured",
            )
        })?;
    let endpoints = state
        .auth
        .endpoints(&login.issuer)
        .await
        .map_err(unavailable)?;
    let secret = console
        .client_secret
        .as_ref()
        .map(|s| s.resolve())
        .transpose()
        .map_err(unavailable)?;
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", login.redirect_uri.as_str()),
        ("code_verifier", login.verifier.as_str()),
    ];
    if secret.is_none() {
        form.push(("client_id", console.client_id.as_str()));
    }
    let basic = secret
        .as_ref()
        .map(|s| (console.client_id.as_str(), s.expose()));
    let answer = state
        .auth
        .post_form(&login.issuer, &endpoints.token, &form, basic)
        .await
        .map_err(|e| login_error("provider_error", e))?;
    let id_token = answer
        .get("id_token")
        .and_then(|v| v.as_str())
        .ok_or_else(|| {
            login_error(
                "provider_error",
                "the token endpoint returned no id_token (is `openid` among the scopes?)",
            )
        })?;
    let principal = state
        .auth
        .verify_id_token(&login.issuer, id_token, &console.client_id, &login.nonce)
        .await
        .map_err(|e| login_error("refused", format!("the ID token was refused: {e}")))?;
    humans_only(&principal).map_err(|p| login_error("agents_not_allowed", p.detail))?;
    let (cookie, record) = session::start(state, headers, principal)
        .await
        .map_err(|p| unavailable(p.detail))?;
    Ok((cookie, record.csrf))
}
