//! Interactive shells: `POST /v1/connections/{name}/shell-tickets`,
//! `GET /v1/connections/{name}/shell` (WebSocket), `POST /v1/sessions/{id}/terminate`.
//!
//! Frames: binary frames carry terminal bytes both ways; text frames carry JSON control
//! messages — from the client `{"type":"resize","cols":N,"rows":N}`, from Airlock
//! `{"type":"exit","code":N}` and `{"type":"error","error_type":"...","detail":"..."}`
//! (`shutdown`, `idle_timeout`, `max_duration`, `terminated`, `invalid_resize`, ...), then a
//! close frame.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::extract::{Auth, RequestId};
use super::problem::{Problem, ProblemBody};
use crate::audit::{AuditEvent, Phase};
use crate::identity::AuthError;
use crate::inspect::Facts;
use crate::pipeline::{resolve, wrong_operation};
use crate::policy::Decision;
use crate::recording::Recorder;
use crate::server::AppState;
use crate::shell::{Admitted, MAX_FRAME_BYTES, MAX_MESSAGE_BYTES, size_ok};
use crate::store::SessionRecord;

#[derive(Serialize, utoipa::ToSchema)]
pub struct ShellTicket {
    /// Pass as `?ticket=` on the WebSocket URL; valid once, for this connection only.
    pub ticket: String,
    pub expires_at: DateTime<Utc>,
}

/// A single-use, short-lived ticket for a browser shell (browsers cannot set headers on a
/// WebSocket; a JWT never goes in a URL).
#[utoipa::path(post, path = "/v1/connections/{name}/shell-tickets", tag = "shell",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Connection name")),
    responses((status = 200, description = "A ticket", body = ShellTicket),
              (status = 401, description = "Missing or invalid token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "Unknown connection, or one the caller may not see", body = ProblemBody, content_type = "application/problem+json")))]
pub async fn ticket(
    State(state): State<Arc<AppState>>,
    Auth(p): Auth,
    Path(name): Path<String>,
) -> Result<Json<ShellTicket>, Problem> {
    let conn = resolve(&state, &p, &name)?;
    if conn.exec().is_none() {
        return Err(wrong_operation(&name, "runs SQL", "query"));
    }
    let ttl = Duration::from_millis(state.shells_config.ticket_ttl_ms);
    let ticket = state.tickets.issue(&p, &name, ttl).ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "random_unavailable",
            "Cannot issue a ticket",
            "the system random generator failed; retry",
        )
    })?;
    Ok(Json(ShellTicket {
        ticket,
        expires_at: Utc::now() + chrono::Duration::from_std(ttl).unwrap_or_default(),
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ShellParams {
    /// From `shell-tickets`, for clients that cannot send `Authorization`.
    pub ticket: Option<String>,
    /// Initial terminal width (1..=1000), default 80.
    pub cols: Option<u32>,
    /// Initial terminal height (1..=500), default 24.
    pub rows: Option<u32>,
    /// Kubernetes connections: the pod's namespace.
    pub namespace: Option<String>,
    /// Kubernetes connections: the pod.
    pub pod: Option<String>,
    /// Kubernetes connections: the container (default: the pod's default container).
    pub container: Option<String>,
}

/// An interactive shell (PTY) over WebSocket, recorded.
#[utoipa::path(get, path = "/v1/connections/{name}/shell", tag = "shell",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Connection name"), ShellParams),
    responses((status = 101, description = "Switching to the WebSocket protocol"),
              (status = 400, description = "Not a WebSocket request, bad size, or not a command connection", body = ProblemBody, content_type = "application/problem+json"),
              (status = 401, description = "Missing or invalid token or ticket", body = ProblemBody, content_type = "application/problem+json"),
              (status = 403, description = "Denied by policy (`rule`)", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "Unknown connection, or one the caller may not see", body = ProblemBody, content_type = "application/problem+json"),
              (status = 503, description = "Audit or recording unavailable; nothing ran", body = ProblemBody, content_type = "application/problem+json")))]
pub async fn shell(
    State(state): State<Arc<AppState>>,
    RequestId(request_id): RequestId,
    Path(name): Path<String>,
    params: Result<Query<ShellParams>, QueryRejection>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, Problem> {
    let Query(params) = params.map_err(|e| Problem::bad_request("invalid_query", e.body_text()))?;
    let principal = match (
        &params.ticket,
        headers.get(axum::http::header::AUTHORIZATION),
    ) {
        (Some(t), _) => state.tickets.redeem(t, &name).ok_or_else(|| {
            Problem::unauthorized("the ticket is unknown, used, expired or for another connection")
        })?,
        (None, h) => {
            let h = h
                .map(|v| {
                    v.to_str().map_err(|_| {
                        Problem::unauthorized("the Authorization header is not valid text")
                    })
                })
                .transpose()?;
            state.auth.authenticate(h).await.map_err(|e| match e {
                AuthError::KeysUnavailable => Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "identity_unavailable",
                    "Identity provider unavailable",
                    "retry shortly",
                ),
                e => Problem::unauthorized(e.to_string()),
            })?
        }
    };
    let ws = ws.map_err(|e| Problem::bad_request("not_websocket", e.body_text()))?;
    let (cols, rows) = (params.cols.unwrap_or(80), params.rows.unwrap_or(24));
    if !size_ok(cols, rows) {
        return Err(Problem::bad_request(
            "invalid_resize",
            "cols must be 1..=1000 and rows 1..=500",
        ));
    }
    let conn = resolve(&state, &principal, &name)?.clone();
    if conn.exec().is_none() {
        return Err(wrong_operation(&name, "runs SQL", "query"));
    }
    let target = match (conn.config.kind, params.namespace, params.pod) {
        (crate::config::ConnectionKind::Kubernetes, Some(namespace), Some(pod)) => {
            Some(crate::backend::PodTarget {
                namespace,
                pod,
                container: params.container,
            })
        }
        (crate::config::ConnectionKind::Kubernetes, _, _) => {
            return Err(Problem::bad_request(
                "invalid_query",
                "a kubernetes shell needs ?namespace=&pod= (and optionally &container=)",
            ));
        }
        (_, None, None) => None,
        _ => {
            return Err(Problem::bad_request(
                "invalid_query",
                "namespace and pod are for kubernetes connections",
            ));
        }
    };
    let started = Instant::now();
    let execution_id = uuid::Uuid::now_v7().to_string();
    let mut begin = AuditEvent::new(Phase::Begin, &execution_id, "shell");
    begin.request_id = request_id;
    begin.principal = Some((&principal).into());
    begin.connection = Some(name.clone());
    let facts = Facts {
        statement_count: 1,
        shell: true,
        ..Facts::default()
    };
    begin.facts = Some(facts.clone());
    let decision = state.policy.decide(&principal, &name, &facts);
    begin.decision = Some(decision.action().into());
    begin.rule = Some(decision.rule().into());
    let refuse = |problem: Problem, begin: AuditEvent| {
        let state = state.clone();
        async move {
            let mut end = AuditEvent::new(Phase::End, &begin.execution_id, "shell");
            end.principal = begin.principal.clone();
            end.connection = begin.connection.clone();
            end.rule = begin.rule.clone();
            end.outcome = Some(crate::audit::Outcome::Denied);
            end.error_class = Some(problem.code.to_string());
            end.duration_ms = Some(started.elapsed().as_millis() as u64);
            if state.audit.commit(begin).await.is_err() {
                return Problem::audit_unavailable();
            }
            state.audit.commit_end(end).await;
            problem
        }
    };
    match decision {
        Decision::Allow { .. } => {}
        Decision::Deny { rule, message } => {
            let p = Problem::forbidden("policy_denied", message)
                .with("rule", rule)
                .with("execution_id", execution_id.clone());
            return Err(refuse(p, begin).await);
        }
        Decision::Review { rule, message } => {
            let p = Problem::forbidden(
                "review_required",
                format!("{message}; interactive shells cannot be held for review: use exec, whose commands can be"),
            )
            .with("rule", rule)
            .with("execution_id", execution_id.clone());
            return Err(refuse(p, begin).await);
        }
    }
    let session = SessionRecord {
        id: uuid::Uuid::now_v7().to_string(),
        execution_id: execution_id.clone(),
        kind: "shell".into(),
        connection: name.clone(),
        issuer: principal.issuer.clone(),
        subject: principal.subject.clone(),
        command: "(interactive shell)".into(),
        started_at: Utc::now(),
        ended_at: None,
        status: "running".into(),
        exit_code: None,
        digest: None,
    };
    let Ok(recorder) = Recorder::start_sized(state.store.clone(), session, cols, rows).await else {
        let p = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "recording_unavailable",
            "Recording unavailable",
            "the session recording could not be started, so no shell was opened",
        )
        .retry_after(2);
        return Err(refuse(p, begin).await);
    };
    begin.session_id = Some(recorder.session_id().to_string());
    if state.audit.commit(begin.clone()).await.is_err() {
        let _ = recorder.finish("failed", None).await;
        return Err(Problem::audit_unavailable());
    }
    let admitted = Admitted {
        state,
        conn,
        principal,
        begin,
        recorder,
        cols,
        rows,
        target,
    };
    Ok(ws
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| crate::shell::run(socket, admitted)))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Terminated {
    pub session_id: String,
    pub terminated: bool,
}

/// End a running interactive shell (administrators: the audit readers). Audited.
#[utoipa::path(post, path = "/v1/sessions/{id}/terminate", tag = "shell",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Session id")),
    responses((status = 200, description = "Terminated", body = Terminated),
              (status = 401, description = "Missing or invalid token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 403, description = "Not an administrator", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "No running session with this id on this instance", body = ProblemBody, content_type = "application/problem+json")))]
pub async fn terminate(
    State(state): State<Arc<AppState>>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<Terminated>, Problem> {
    if !state.audit_readers.iter().any(|r| r.matches(&p)) {
        return Err(Problem::forbidden(
            "not_an_admin",
            "terminating sessions needs a principal listed in audit.readers",
        ));
    }
    let mut event = AuditEvent::new(Phase::Event, &id, "session.terminate");
    event.principal = Some((&p).into());
    event.session_id = Some(id.clone());
    state
        .audit
        .commit(event)
        .await
        .map_err(|_| Problem::audit_unavailable())?;
    if !state.shells.terminate(&id) {
        return Err(Problem::not_found(format!(
            "no running shell `{id}` on this instance"
        )));
    }
    Ok(Json(Terminated {
        session_id: id,
        terminated: true,
    }))
}
