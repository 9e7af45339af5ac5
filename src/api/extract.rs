//! Request extractors that answer with problem+json instead of axum's plain-text rejections.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::problem::{Code, Problem};
use super::state::AppState;
use crate::identity::{AuthError, Principal};

/// The authenticated caller.
pub(crate) struct Auth(pub Principal);

impl FromRequestParts<Arc<AppState>> for Auth {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Problem> {
        let header = parts.headers.get(axum::http::header::AUTHORIZATION);
        authenticate(state, header).await.map(Auth)
    }
}

/// An administrator: an authenticated caller listed in `audit.readers`.
pub(crate) struct Admin(pub Principal);

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Problem> {
        let Auth(p) = Auth::from_request_parts(parts, state).await?;
        if !state.is_admin(&p) {
            return Err(Problem::new(
                Code::NotAnAdmin,
                "this needs an administrator: a principal listed in audit.readers",
            ));
        }
        Ok(Admin(p))
    }
}

/// Verifies a bearer `Authorization` header.
pub(crate) async fn authenticate(
    state: &AppState,
    header: Option<&axum::http::HeaderValue>,
) -> Result<Principal, Problem> {
    let header = header
        .map(|v| {
            v.to_str()
                .map_err(|_| Problem::unauthorized("the Authorization header is not valid text"))
        })
        .transpose()?;
    verdict(state.auth.authenticate(header).await)
}

/// Verifies a bare token (the console's dev sign-in) exactly as a bearer header would be.
pub(crate) async fn authenticate_token(
    state: &AppState,
    token: &str,
) -> Result<Principal, Problem> {
    verdict(
        state
            .auth
            .authenticate(Some(&format!("Bearer {token}")))
            .await,
    )
}

fn verdict(result: Result<Principal, AuthError>) -> Result<Principal, Problem> {
    match result {
        Ok(p) => Ok(p),
        Err(AuthError::KeysUnavailable) => Err(Problem::new(
            Code::IdentityUnavailable,
            "the token's issuer keys cannot be fetched right now; retry shortly",
        )
        .retry_after(5)),
        Err(e) => Err(Problem::unauthorized(e.to_string())),
    }
}

/// The `X-Request-Id` assigned by the request-id layer.
pub(crate) struct RequestId(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        Ok(RequestId(
            parts
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(128).collect()),
        ))
    }
}

/// JSON body with problem+json rejections: 415 wrong type, 413 too large, 400 malformed.
pub(crate) struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_problem(rejection)),
        }
    }
}

fn json_problem(r: JsonRejection) -> Problem {
    if body_timed_out(&r) {
        return body_read_timeout();
    }
    match r.status() {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Problem::new(
            Code::UnsupportedMediaType,
            "send the body as JSON with `Content-Type: application/json`",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
            Code::BodyTooLarge,
            "the request body exceeds the server's limit",
        ),
        _ => Problem::new(Code::MalformedBody, r.body_text()),
    }
}

/// The body did not arrive within `server.body_read_timeout_ms`.
fn body_read_timeout() -> Problem {
    Problem::new(
        Code::BodyReadTimeout,
        "the request body did not arrive in time; send it at once",
    )
}

/// Whether reading the body failed because the body-read timer ran out.
fn body_timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// A body that must be empty (or whitespace): `POST /v1/executions/{id}/run` runs exactly
/// what was approved, so it takes nothing new.
pub(crate) struct NoBody;

impl<S: Send + Sync> FromRequest<S> for NoBody {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let body = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(bytes_problem)?;
        if body.iter().all(u8::is_ascii_whitespace) {
            Ok(NoBody)
        } else {
            Err(Problem::new(
                Code::UnexpectedBody,
                "this endpoint takes no body: it runs exactly the stored, approved request",
            ))
        }
    }
}

/// A JSON body that may be absent: an empty body yields `T::default()`.
pub(crate) struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let is_json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let body = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(bytes_problem)?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        if !is_json {
            return Err(Problem::new(
                Code::UnsupportedMediaType,
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        serde_json::from_slice(&body)
            .map(OptionalJson)
            .map_err(|e| Problem::new(Code::MalformedBody, e.to_string()))
    }
}

/// One path segment (a connection name or an id). A segment that is not valid UTF-8 after
/// percent-decoding cannot name anything: it is answered as not found, in problem+json,
/// like any name the caller cannot see (axum's own rejection is plain text).
pub(crate) struct ApiPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ApiPath {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(segment)| ApiPath(segment))
            .map_err(|e| Problem::not_found(format!("no such resource: {}", e.body_text())))
    }
}

/// What an entry that may be held for review takes from the request line and headers: the
/// caller, the connection in the path, `?wait=` and `Idempotency-Key`, and whether the
/// answer streams as NDJSON.
pub(crate) struct Entry {
    pub(crate) caller: crate::gateway::Caller,
    pub(crate) connection: String,
    pub(crate) hold: crate::gateway::review::HoldOptions,
    pub(crate) ndjson: bool,
    /// `Prefer: respond-async`: run it as a job at once.
    pub(crate) respond_async: bool,
}

impl FromRequestParts<Arc<AppState>> for Entry {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Problem> {
        let Auth(principal) = Auth::from_request_parts(parts, state).await?;
        let RequestId(request_id) = RequestId::from_request_parts(parts, state).await?;
        let ApiPath(connection) = ApiPath::from_request_parts(parts, state).await?;
        let params =
            axum::extract::Query::<super::query::WaitParams>::from_request_parts(parts, state)
                .await;
        let hold = super::query::hold_options(params, &parts.headers)?;
        Ok(Entry {
            caller: crate::gateway::Caller {
                principal,
                request_id,
            },
            connection,
            hold,
            ndjson: super::query::wants_ndjson(&parts.headers),
            respond_async: super::query::wants_async(&parts.headers),
        })
    }
}

fn bytes_problem(e: axum::extract::rejection::BytesRejection) -> Problem {
    if body_timed_out(&e) {
        body_read_timeout()
    } else if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::new(
            Code::BodyTooLarge,
            "the request body exceeds the server's limit",
        )
    } else {
        Problem::new(Code::MalformedBody, e.body_text())
    }
}
