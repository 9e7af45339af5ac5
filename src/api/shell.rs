//! Interactive shells: `POST /v1/connections/{name}/shell-tickets`,
//! `GET /v1/connections/{name}/shell` (WebSocket), `POST /v1/sessions/{id}/terminate`.
//!
//! Frames: binary frames carry terminal bytes both ways; text frames carry JSON control
//! messages — from the client `{"type":"resize","cols":N,"rows":N}`, from Airlock
//! `{"type":"exit","code":N}` and `{"type":"error","problem":{...}}` (the problem object as
//! problem+json sends it: `code` is `shutting_down`, `idle_timeout`, `max_duration`,
//! `terminated`, `invalid_resize`, ...), then a close frame. Everything about the session
//! itself is in `gateway/shell.rs`; this file only speaks WebSocket.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::extract::{Admin, ApiPath, Auth, RequestId};
use super::problem::{Code, Problem};
use super::state::AppState;
use crate::audit::{AuditEvent, Phase};
use crate::backend::PodTarget;
use crate::gateway::admit::Action;
use crate::gateway::shell::{ClientEvent, ShellRequest, Terminal};
use crate::gateway::{Answer, Caller, Request};

/// Largest WebSocket message and frame accepted from a client.
pub(crate) const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
pub(crate) const MAX_FRAME_BYTES: usize = 256 * 1024;

/// A single-use ticket to open a shell without an `Authorization` header.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"ticket": "3f9a1c0e5b7d2e4f6a8b0c1d3e5f7a9b1c3d5e7f9a0b2c4d", "expires_at": "2025-01-01T12:00:30Z"}))]
pub(crate) struct ShellTicket {
    /// Pass as `?ticket=` on the WebSocket URL; valid once, for this connection only.
    #[schema(pattern = "^[0-9a-f]{48}$")]
    pub(crate) ticket: String,
    /// The ticket is refused after this.
    pub(crate) expires_at: DateTime<Utc>,
}

/// Create a shell ticket
///
/// Any caller who can see the command connection (kind ssh or kubernetes; 400
/// `wrong_operation` on a SQL connection). Returns a single-use, short-lived ticket for
/// opening a shell from a browser (browsers cannot set headers on a WebSocket, and a JWT
/// never goes in a URL): pass it as `?ticket=` to `GET /v1/connections/{name}/shell`
/// before `expires_at`. Any instance on the same store accepts it. No body.
#[utoipa::path(post, path = "/v1/connections/{name}/shell-tickets", tag = "shell", operation_id = "createShellTicket",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Name of a command connection", example = "web-1")),
    responses((status = 200, description = "A ticket for this connection.", body = ShellTicket)))]
pub(crate) async fn ticket(
    State(state): State<Arc<AppState>>,
    Auth(p): Auth,
    ApiPath(name): ApiPath,
) -> Result<Json<ShellTicket>, Problem> {
    let gateway = &state.gateway;
    let conn = gateway
        .connections
        .get(&name)
        .filter(|_| gateway.policy.visible(&p, &name))
        .ok_or_else(|| Problem::unknown_connection(&name))?;
    if conn.exec().is_none() {
        return Err(Problem::new(
            Code::WrongOperation,
            format!("connection `{name}` runs SQL; use POST /v1/connections/{name}/query"),
        ));
    }
    let ttl = Duration::from_millis(gateway.shells_config.ticket_ttl_ms);
    let ticket = super::tickets::issue(gateway.store.as_ref(), &p, &name, ttl)
        .await
        .map_err(|e| match e {
            super::tickets::IssueError::Random => Problem::new(
                Code::RandomUnavailable,
                "the system random generator failed; retry",
            ),
            super::tickets::IssueError::Store(e) => {
                tracing::error!(error = %e, "shell ticket not stored");
                Problem::audit_unavailable()
            }
        })?;
    Ok(Json(ShellTicket {
        ticket,
        expires_at: Utc::now() + chrono::Duration::from_std(ttl).unwrap_or_default(),
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ShellParams {
    /// From `shell-tickets`, for clients that cannot send `Authorization`.
    pub(crate) ticket: Option<String>,
    /// Initial terminal width (1..=1000), default 80.
    #[param(minimum = 1, maximum = 1000, example = 80)]
    pub(crate) cols: Option<u32>,
    /// Initial terminal height (1..=500), default 24.
    #[param(minimum = 1, maximum = 500, example = 24)]
    pub(crate) rows: Option<u32>,
    /// Kubernetes connections: the pod's namespace.
    pub(crate) namespace: Option<String>,
    /// Kubernetes connections: the pod.
    pub(crate) pod: Option<String>,
    /// Kubernetes connections: the container (default: the pod's default container).
    pub(crate) container: Option<String>,
}

/// Open an interactive shell (WebSocket)
///
/// Any caller who can see the command connection, if the policy allows shells (a shell
/// cannot be held for review: 403 `review_required`, use exec). Authenticate with
/// `Authorization` or `?ticket=`. The upgraded connection is recorded as a session: binary
/// frames carry terminal bytes both ways; text frames carry JSON control messages — from
/// the client `{"type":"resize","cols":N,"rows":N}`, from Airlock `{"type":"exit","code":N}`
/// or `{"type":"error","problem":{...}}` (codes `idle_timeout`, `max_duration`,
/// `terminated`, `shutting_down`, `invalid_resize`, `invalid_control`,
/// `recording_unavailable`), then a close frame. The session holds one of your concurrency
/// slots until it ends.
#[utoipa::path(get, path = "/v1/connections/{name}/shell", tag = "shell", operation_id = "openShell",
    security(("bearer" = []), ()),
    params(("name" = String, Path, description = "Name of a command connection", example = "web-1"), ShellParams),
    responses((status = 101, description = "Switching to the WebSocket protocol: the shell is open.")))]
pub(crate) async fn shell(
    State(state): State<Arc<AppState>>,
    RequestId(request_id): RequestId,
    ApiPath(name): ApiPath,
    params: Result<Query<ShellParams>, QueryRejection>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, Problem> {
    let Query(params) = params.map_err(|e| Problem::new(Code::InvalidQuery, e.body_text()))?;
    let principal = match (
        &params.ticket,
        headers.get(axum::http::header::AUTHORIZATION),
    ) {
        (Some(t), _) => super::tickets::redeem(state.gateway.store.as_ref(), t, &name)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "shell ticket not read from the store");
                Problem::audit_unavailable()
            })?
            .ok_or_else(|| {
                Problem::unauthorized(
                    "the ticket is unknown, used, expired or for another connection",
                )
            })?,
        (None, h) => super::extract::authenticate(&state, h).await?,
    };
    let ws = ws.map_err(|e| Problem::new(Code::NotWebsocket, e.body_text()))?;
    let target = match (params.namespace, params.pod) {
        (Some(namespace), Some(pod)) => Some(PodTarget {
            namespace,
            pod,
            container: params.container,
        }),
        (None, None) if params.container.is_none() => None,
        _ => {
            return Err(Problem::new(
                Code::InvalidQuery,
                "a kubernetes shell needs both ?namespace= and &pod= (and optionally &container=)",
            ));
        }
    };
    let request = ShellRequest {
        target,
        cols: params.cols.unwrap_or(80),
        rows: params.rows.unwrap_or(24),
    };
    let caller = Caller {
        principal,
        request_id,
    };
    let request = Request::new(caller, name, Action::Shell(request));
    let Answer::Shell(session) = crate::gateway::serve(&state.gateway, request).await? else {
        return Err(Problem::internal(
            "a shell request answered with something else",
        ));
    };
    Ok(ws
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| async move {
            session.run(&mut WsTerminal(socket)).await;
        }))
}

/// A shell's terminal over an upgraded WebSocket.
struct WsTerminal(WebSocket);

#[async_trait::async_trait]
impl Terminal for WsTerminal {
    async fn recv(&mut self) -> ClientEvent {
        match self.0.recv().await {
            Some(Ok(Message::Binary(data))) => ClientEvent::Input(data),
            Some(Ok(Message::Text(t))) => ClientEvent::Control(t.as_str().to_string()),
            Some(Ok(Message::Ping(_))) | Some(Ok(Message::Pong(_))) => ClientEvent::Idle,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => ClientEvent::Gone,
        }
    }

    async fn send_output(&mut self, bytes: Vec<u8>) -> bool {
        self.0.send(Message::Binary(bytes.into())).await.is_ok()
    }

    async fn send_control(&mut self, message: serde_json::Value) -> bool {
        let text = Utf8Bytes::from(message.to_string());
        self.0.send(Message::Text(text)).await.is_ok()
    }

    async fn ping(&mut self) -> bool {
        self.0.send(Message::Ping(Vec::new().into())).await.is_ok()
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from(reason.to_string()),
        };
        let _ = self.0.send(Message::Close(Some(frame))).await;
    }
}

/// A terminated shell.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"session_id": "0190f5c2-7a4f-7aa0-b1c2-3d4e5f607182", "terminated": true}))]
pub(crate) struct Terminated {
    /// The session that was ended.
    pub(crate) session_id: String,
    /// Always true: the shell was told to end (its client gets a `terminated` error frame).
    pub(crate) terminated: bool,
}

/// Terminate a running shell
///
/// Only administrators (`audit.readers`; 403 `not_an_admin` otherwise). Ends the running
/// interactive shell `id` on this instance; the attempt is audited first, even when no such
/// shell runs here (404 `not_found`: it ended, or runs on another instance — try there).
/// No body.
#[utoipa::path(post, path = "/v1/sessions/{id}/terminate", tag = "shell", operation_id = "terminateSession",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Session id of a running shell", example = "0190f5c2-7a4f-7aa0-b1c2-3d4e5f607182")),
    responses((status = 200, description = "The shell was told to end.", body = Terminated)))]
pub(crate) async fn terminate(
    State(state): State<Arc<AppState>>,
    Admin(p): Admin,
    ApiPath(id): ApiPath,
) -> Result<Json<Terminated>, Problem> {
    let mut event = AuditEvent::new(Phase::Event, &id, "session.terminate");
    event.principal = Some((&p).into());
    event.session_id = Some(id.clone());
    state
        .gateway
        .audit
        .commit(event)
        .await
        .map_err(|_| Problem::audit_unavailable())?;
    if !state.gateway.shells.terminate(&id) {
        return Err(Problem::not_found(format!(
            "no running shell `{id}` on this instance"
        )));
    }
    Ok(Json(Terminated {
        session_id: id,
        terminated: true,
    }))
}
