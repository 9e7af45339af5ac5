//! Recorded sessions: `GET /v1/sessions`, `GET /v1/sessions/{id}`,
//! `GET /v1/sessions/{id}/recording` (asciicast v2, a download: recordings contain terminal
//! escape sequences and must go to a terminal player, never into a page).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::extract::Auth;
use super::problem::{Code, Problem, ProblemBody};
use super::state::AppState;
use crate::identity::Principal;
use crate::store::{SessionQuery, SessionRecord};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct SessionParams {
    pub(crate) connection: Option<String>,
    pub(crate) subject: Option<String>,
    /// RFC 3339, inclusive.
    pub(crate) since: Option<DateTime<Utc>>,
    /// `next_cursor` of the previous page (sessions started before it).
    pub(crate) cursor: Option<DateTime<Utc>>,
    /// 1..=500, default 100.
    pub(crate) limit: Option<usize>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SessionPage {
    pub(crate) sessions: Vec<SessionView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) next_cursor: Option<DateTime<Utc>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SessionView {
    #[serde(flatten)]
    pub(crate) session: SessionRecord,
    /// The stored hash chain verifies (no line changed, missing or reordered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) chain_valid: Option<bool>,
}

fn may_read(state: &AppState, p: &Principal, s: &SessionRecord) -> bool {
    state.is_admin(p) || (p.issuer == s.issuer && p.subject == s.subject)
}

/// Recorded sessions, newest first: auditors see all, others their own.
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions",
    security(("bearer" = [])),
    params(SessionParams),
    responses((status = 200, description = "A page of sessions", body = SessionPage),
              (status = 400, description = "Bad filter", body = ProblemBody, content_type = "application/problem+json"),
              (status = 401, description = "Missing or invalid token", body = ProblemBody, content_type = "application/problem+json")))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Auth(p): Auth,
    query: Result<Query<SessionParams>, QueryRejection>,
) -> Result<Json<SessionPage>, Problem> {
    let Query(q) = query.map_err(|e| Problem::new(Code::InvalidQuery, e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 500 {
        return Err(Problem::new(Code::InvalidQuery, "limit must be in 1..=500"));
    }
    let auditor = state.is_admin(&p);
    let subject = if auditor {
        q.subject
    } else {
        Some(p.subject.clone())
    };
    let sessions = state
        .gateway
        .store
        .list_sessions(&SessionQuery {
            connection: q.connection,
            subject,
            since: q.since,
            before: q.cursor,
            limit,
        })
        .await
        .map_err(|_| Problem::audit_unavailable())?;
    let next_cursor = (sessions.len() == limit)
        .then(|| sessions.last().map(|s| s.started_at))
        .flatten();
    Ok(Json(SessionPage {
        sessions: sessions
            .into_iter()
            .filter(|s| may_read(&state, &p, s))
            .map(|session| SessionView {
                session,
                chain_valid: None,
            })
            .collect(),
        next_cursor,
    }))
}

async fn load(state: &AppState, p: &Principal, id: &str) -> Result<SessionRecord, Problem> {
    let s = state
        .gateway
        .store
        .get_session(id)
        .await
        .map_err(|_| Problem::audit_unavailable())?
        .ok_or_else(|| Problem::not_found(format!("no session `{id}`")))?;
    if !may_read(state, p, &s) {
        return Err(Problem::not_found(format!("no session `{id}`")));
    }
    Ok(s)
}

/// One session, with its hash chain verified.
#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Session id")),
    responses((status = 200, description = "The session", body = SessionView),
              (status = 401, description = "Missing or invalid token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "No such session visible to you", body = ProblemBody, content_type = "application/problem+json")))]
pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, Problem> {
    let session = load(&state, &p, &id).await?;
    let lines = state
        .gateway
        .store
        .session_lines(&id)
        .await
        .map_err(|_| Problem::audit_unavailable())?;
    Ok(Json(SessionView {
        session,
        chain_valid: Some(crate::recording::verify(&lines)),
    }))
}

/// The recording as an asciicast v2 file (plays with `asciinema play`).
#[utoipa::path(get, path = "/v1/sessions/{id}/recording", tag = "sessions",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Session id")),
    responses((status = 200, description = "asciicast v2", body = String, content_type = "application/x-asciicast"),
              (status = 401, description = "Missing or invalid token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "No such session visible to you", body = ProblemBody, content_type = "application/problem+json")))]
pub(crate) async fn recording(
    State(state): State<Arc<AppState>>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    load(&state, &p, &id).await?;
    let lines = state
        .gateway
        .store
        .session_lines(&id)
        .await
        .map_err(|_| Problem::audit_unavailable())?;
    let mut body = String::new();
    for (line, _) in lines {
        body.push_str(&line);
        body.push('\n');
    }
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-asciicast"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{id}.cast\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    Ok(resp)
}
