//! Recorded sessions: `GET /v1/sessions`, `GET /v1/sessions/{id}`,
//! `GET /v1/sessions/{id}/recording` (asciicast v2, a download: recordings contain terminal
//! escape sequences and must go to a terminal player, never into a page).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::extract::ApiPath;
use super::extract::Auth;
use super::problem::{Code, Problem};
use super::state::AppState;
use crate::identity::Principal;
use crate::store::{SessionQuery, SessionRecord};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct SessionParams {
    /// Only sessions on this connection.
    pub(crate) connection: Option<String>,
    /// Only sessions of this subject (auditors; others always see only their own).
    pub(crate) subject: Option<String>,
    /// RFC 3339 date-time; only sessions started at or after it.
    pub(crate) since: Option<DateTime<Utc>>,
    /// `next_cursor` of the previous page (sessions started before it).
    pub(crate) cursor: Option<DateTime<Utc>>,
    /// Sessions per page, 1..=500 (default 100). No other query parameter is accepted.
    #[param(minimum = 1, maximum = 500, example = 100)]
    pub(crate) limit: Option<usize>,
}

/// A page of recorded sessions, newest first.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"sessions": [{"id": "0190f5c2-7a4f-7aa0-b1c2-3d4e5f607182", "execution_id": "0190f5c2-7a4e-7c3b-9f2a-5d1e8b6a4c21", "kind": "exec", "connection": "web-1", "issuer": "dev", "subject": "agent-1", "command": "df -h /", "started_at": "2025-01-01T12:00:00Z", "ended_at": "2025-01-01T12:00:01Z", "status": "ended", "exit_code": 0, "digest": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}], "next_cursor": "2025-01-01T12:00:00Z"}))]
pub(crate) struct SessionPage {
    /// At most `limit` sessions the caller may read, newest first.
    pub(crate) sessions: Vec<SessionView>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) next_cursor: Option<DateTime<Utc>>,
}

/// A recorded session; from `GET /v1/sessions/{id}` also whether its recording verifies.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"id": "0190f5c2-7a4f-7aa0-b1c2-3d4e5f607182", "execution_id": "0190f5c2-7a4e-7c3b-9f2a-5d1e8b6a4c21", "kind": "exec", "connection": "web-1", "issuer": "dev", "subject": "agent-1", "command": "df -h /", "started_at": "2025-01-01T12:00:00Z", "ended_at": "2025-01-01T12:00:01Z", "status": "ended", "exit_code": 0, "digest": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "chain_valid": true}))]
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

/// List recorded sessions
///
/// Any authenticated caller: auditors (`audit.readers`) see every session, others only
/// their own. Every `exec` command and interactive shell is recorded as a session. Newest
/// first; page with `cursor=next_cursor` until `next_cursor` is absent.
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", operation_id = "listSessions",
    security(("bearer" = [])),
    params(SessionParams),
    responses((status = 200, description = "A page of sessions, newest first.", body = SessionPage)))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Auth(p): Auth,
    query: Result<Query<SessionParams>, QueryRejection>,
) -> Result<Json<SessionPage>, Problem> {
    let Query(q) = query.map_err(|e| Problem::new(Code::InvalidQuery, e.body_text()))?;
    list_for(&state, &p, q).await.map(Json)
}

/// The sessions `p` may read (the API's and the console's list).
pub(crate) async fn list_for(
    state: &AppState,
    p: &Principal,
    q: SessionParams,
) -> Result<SessionPage, Problem> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 500 {
        return Err(Problem::new(Code::InvalidQuery, "limit must be in 1..=500"));
    }
    let auditor = state.is_admin(p);
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
    Ok(SessionPage {
        sessions: sessions
            .into_iter()
            .filter(|s| may_read(state, p, s))
            .map(|session| SessionView {
                session,
                chain_valid: None,
            })
            .collect(),
        next_cursor,
    })
}

/// A session's asciicast, if `p` may read it.
pub(crate) async fn recording_for(
    state: &AppState,
    p: &Principal,
    id: &str,
) -> Result<String, Problem> {
    let (_, lines) = load_with_lines(state, p, id).await?;
    let mut body = String::new();
    for (line, _) in lines {
        body.push_str(&line);
        body.push('\n');
    }
    Ok(body)
}

/// A session `p` may read (404 otherwise, as for one that does not exist), with its
/// recording's stored lines and their chain links.
async fn load_with_lines(
    state: &AppState,
    p: &Principal,
    id: &str,
) -> Result<(SessionRecord, Vec<(String, String)>), Problem> {
    let store = &state.gateway.store;
    let session = store
        .get_session(id)
        .await
        .map_err(|_| Problem::audit_unavailable())?
        .filter(|s| may_read(state, p, s))
        .ok_or_else(|| Problem::not_found(format!("no session `{id}`")))?;
    let lines = store
        .session_lines(id)
        .await
        .map_err(|_| Problem::audit_unavailable())?;
    Ok((session, lines))
}

/// Get one recorded session
///
/// Its owner and auditors; anyone else gets 404 `not_found`. Verifies the recording's hash
/// chain on the way: `chain_valid` false means a line was changed, removed or reordered.
#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions", operation_id = "getSession",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Session id (`session_id` of an exec result)", example = "0190f5c2-7a4f-7aa0-b1c2-3d4e5f607182")),
    responses((status = 200, description = "The session, with `chain_valid`.", body = SessionView)))]
pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    Auth(p): Auth,
    ApiPath(id): ApiPath,
) -> Result<Json<SessionView>, Problem> {
    get_for(&state, &p, &id).await.map(Json)
}

/// One session with its chain verified, if `p` may read it.
pub(crate) async fn get_for(
    state: &AppState,
    p: &Principal,
    id: &str,
) -> Result<SessionView, Problem> {
    let (session, lines) = load_with_lines(state, p, id).await?;
    Ok(SessionView {
        session,
        chain_valid: Some(crate::recording::verify(&lines)),
    })
}

/// Download a session's recording
///
/// Its owner and auditors; anyone else gets 404 `not_found`. An asciicast v2 file (a JSON
/// header line, then `[time, "o"|"i", data]` lines; plays with `asciinema play`), sent as
/// an attachment: it holds terminal escape sequences, so show it in a terminal player,
/// never in a page.
#[utoipa::path(get, path = "/v1/sessions/{id}/recording", tag = "sessions", operation_id = "getRecording",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Session id", example = "0190f5c2-7a4f-7aa0-b1c2-3d4e5f607182")),
    responses((status = 200, description = "The recording (asciicast v2).", body = String, content_type = "application/x-asciicast",
               headers(("Content-Disposition" = String, description = "`attachment; filename=\"{id}.cast\"`")),
               example = json!("{\"version\":2,\"width\":80,\"height\":24}\n[0.01,\"o\",\"Filesystem  Size  Used\\r\\n\"]\n"))))]
pub(crate) async fn recording(
    State(state): State<Arc<AppState>>,
    Auth(p): Auth,
    ApiPath(id): ApiPath,
) -> Result<Response, Problem> {
    let body = recording_for(&state, &p, &id).await?;
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
