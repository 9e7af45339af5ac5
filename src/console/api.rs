//! The JSON the console page reads and the decisions it sends. Each handler is the REST
//! API's own function (`api::reviews`, `api::audit`, `api::sessions`) called with the
//! session's principal: same visibility, same checks, same audit — the console is one more
//! entry, not a second path.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::session::{self, ConsoleUser};
use crate::api::extract::{ApiJson, ApiPath, OptionalJson};
use crate::api::problem::{Code, Problem};
use crate::api::reviews::{
    ApproveRequest, RejectRequest, ReviewList, ReviewListParams, ReviewView,
};
use crate::api::sessions::{SessionPage, SessionParams, SessionView};
use crate::api::{AppState, audit};
use crate::identity::Principal;
use crate::store::ConsoleSessionRecord;

/// A live-update stream ends after this long; the browser's `EventSource` reconnects,
/// which checks the session again.
const EVENTS_MAX: Duration = Duration::from_secs(300);

#[derive(Serialize)]
pub(super) struct Me {
    principal: Principal,
    /// Send it back in `X-Airlock-CSRF` with every change.
    csrf_token: String,
    /// May search the audit log (`audit.readers`).
    auditor: bool,
    /// The session's absolute end.
    expires_at: DateTime<Utc>,
    idle_timeout_secs: u64,
}

pub(super) fn me_view(state: &AppState, s: &ConsoleSessionRecord) -> Me {
    Me {
        principal: s.principal.clone(),
        csrf_token: s.csrf.clone(),
        auditor: state.is_admin(&s.principal),
        expires_at: s.expires_at,
        idle_timeout_secs: state.console.idle_timeout_secs,
    }
}

/// `GET /console/api/me`: who is signed in, and the CSRF token.
pub(super) async fn me(State(state): State<Arc<AppState>>, user: ConsoleUser) -> Json<Me> {
    Json(me_view(&state, &user.session))
}

/// `POST /console/api/logout`.
pub(super) async fn logout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    user: ConsoleUser,
) -> Result<Response, Problem> {
    let clear = session::end(&state, &headers, &user.session).await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(header::SET_COOKIE, clear);
    Ok(resp)
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, Problem> {
    q.map(|Query(v)| v)
        .map_err(|e| Problem::new(Code::InvalidQuery, e.body_text()))
}

pub(super) async fn reviews(
    State(state): State<Arc<AppState>>,
    user: ConsoleUser,
    q: Result<Query<ReviewListParams>, QueryRejection>,
) -> Result<Json<ReviewList>, Problem> {
    crate::api::reviews::list_for(&state, &user.principal, query(q)?)
        .await
        .map(Json)
}

pub(super) async fn review(
    State(state): State<Arc<AppState>>,
    user: ConsoleUser,
    ApiPath(id): ApiPath,
) -> Result<Json<ReviewView>, Problem> {
    crate::api::reviews::get_for(&state, &user.principal, &id)
        .await
        .map(Json)
}

pub(super) async fn approve(
    State(state): State<Arc<AppState>>,
    user: ConsoleUser,
    ApiPath(id): ApiPath,
    OptionalJson(req): OptionalJson<ApproveRequest>,
) -> Result<Json<ReviewView>, Problem> {
    crate::api::reviews::approve_as(&state, &user.principal, &id, req)
        .await
        .map(Json)
}

pub(super) async fn reject(
    State(state): State<Arc<AppState>>,
    user: ConsoleUser,
    ApiPath(id): ApiPath,
    ApiJson(req): ApiJson<RejectRequest>,
) -> Result<Json<ReviewView>, Problem> {
    crate::api::reviews::reject_as(&state, &user.principal, &id, req)
        .await
        .map(Json)
}

struct Watch {
    changes: tokio::sync::watch::Receiver<u64>,
    /// The change count last sent; `None` until the first event.
    last: Option<u64>,
    until: tokio::time::Instant,
    state: Arc<AppState>,
}

/// `GET /console/api/reviews/events`: an event `reviews` whenever any review changes (on
/// this instance, or on another through the store's notifications); the page re-reads.
/// Carries no data, only the hint.
pub(super) async fn review_events(
    State(state): State<Arc<AppState>>,
    _user: ConsoleUser,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let watch = Watch {
        changes: state.gateway.reviews.watch_changes(),
        last: None,
        until: tokio::time::Instant::now() + EVENTS_MAX,
        state,
    };
    let stream = futures::stream::unfold(watch, |mut w| async move {
        loop {
            if w.last.is_some() {
                // Re-checked every second: a draining server ends the stream at once
                // rather than holding its shutdown.
                tokio::select! {
                    changed = w.changes.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                    }
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                if !w.state.ready.load(Ordering::SeqCst) || tokio::time::Instant::now() >= w.until {
                    return None;
                }
            }
            let now = *w.changes.borrow_and_update();
            if w.last != Some(now) {
                w.last = Some(now);
                let event = Event::default().event("reviews").data(now.to_string());
                return Some((Ok(event), w));
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

pub(super) async fn audit(
    State(state): State<Arc<AppState>>,
    user: ConsoleUser,
    q: Result<Query<audit::AuditParams>, QueryRejection>,
) -> Result<Json<audit::AuditPage>, Problem> {
    if !state.is_admin(&user.principal) {
        return Err(Problem::new(
            Code::NotAnAdmin,
            "the audit log is for administrators: principals listed in audit.readers",
        ));
    }
    audit::page(&state, query(q)?).await.map(Json)
}

pub(super) async fn sessions(
    State(state): State<Arc<AppState>>,
    user: ConsoleUser,
    q: Result<Query<SessionParams>, QueryRejection>,
) -> Result<Json<SessionPage>, Problem> {
    crate::api::sessions::list_for(&state, &user.principal, query(q)?)
        .await
        .map(Json)
}

pub(super) async fn session(
    State(state): State<Arc<AppState>>,
    user: ConsoleUser,
    ApiPath(id): ApiPath,
) -> Result<Json<SessionView>, Problem> {
    crate::api::sessions::get_for(&state, &user.principal, &id)
        .await
        .map(Json)
}

/// The recording for the page's player: asciicast as plain data (never rendered as a
/// document: `nosniff`, and the CSP forbids anything it could contain from running).
pub(super) async fn recording(
    State(state): State<Arc<AppState>>,
    user: ConsoleUser,
    ApiPath(id): ApiPath,
) -> Result<Response, Problem> {
    let body = crate::api::sessions::recording_for(&state, &user.principal, &id).await?;
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-asciicast"),
    );
    Ok(resp)
}
