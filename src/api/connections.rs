//! `GET /v1/connections`, `GET /v1/connections/{name}`, `GET /v1/connections/{name}/schema`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;

use super::extract::{Auth, RequestId};
use super::problem::{Problem, ProblemBody};
use super::state::AppState;
use crate::config::ConnectionKind;
use crate::gateway::admit::Action;
use crate::gateway::schema::SchemaView;
use crate::gateway::{Answer, Caller, Connection, Request};

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ConnectionLimits {
    pub(crate) max_rows: u64,
    pub(crate) max_rows_ceiling: u64,
    pub(crate) max_bytes: u64,
    pub(crate) max_bytes_ceiling: u64,
    pub(crate) timeout_ms: u64,
    pub(crate) max_timeout_ms: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ConnectionView {
    pub(crate) name: String,
    pub(crate) kind: ConnectionKind,
    pub(crate) description: String,
    /// Writes are refused by the database itself (read-only transaction or handle).
    pub(crate) read_only: bool,
    /// Placeholder style for `params`: `$1` (postgres) or `?` (mysql, sqlite).
    pub(crate) placeholder: String,
    pub(crate) limits: ConnectionLimits,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ConnectionList {
    pub(crate) connections: Vec<ConnectionView>,
}

fn view(c: &Connection) -> ConnectionView {
    let l = &c.config.limits;
    ConnectionView {
        name: c.config.name.clone(),
        kind: c.config.kind,
        description: c.config.description.clone(),
        read_only: c.config.read_only(),
        placeholder: match c.config.kind {
            ConnectionKind::Postgres => "$1",
            ConnectionKind::Mysql | ConnectionKind::Sqlite => "?",
            ConnectionKind::Ssh | ConnectionKind::Kubernetes => "",
        }
        .into(),
        limits: ConnectionLimits {
            max_rows: l.max_rows,
            max_rows_ceiling: l.max_rows_ceiling,
            max_bytes: l.max_bytes,
            max_bytes_ceiling: l.max_bytes_ceiling,
            timeout_ms: l.timeout_ms,
            max_timeout_ms: l.max_timeout_ms,
        },
    }
}

/// The connections the caller may use.
#[utoipa::path(get, path = "/v1/connections", tag = "connections",
    security(("bearer" = [])),
    responses((status = 200, description = "Visible connections", body = ConnectionList),
              (status = 401, description = "Missing or invalid token", body = ProblemBody, content_type = "application/problem+json")))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Auth(p): Auth,
) -> Json<ConnectionList> {
    let gateway = &state.gateway;
    let mut connections: Vec<ConnectionView> = gateway
        .connections
        .values()
        .filter(|c| gateway.policy.visible(&p, &c.config.name))
        .map(|c| view(c))
        .collect();
    connections.sort_by(|a, b| a.name.cmp(&b.name));
    Json(ConnectionList { connections })
}

/// One connection, if the caller may use it.
#[utoipa::path(get, path = "/v1/connections/{name}", tag = "connections",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Connection name")),
    responses((status = 200, description = "The connection", body = ConnectionView),
              (status = 401, description = "Missing or invalid token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "Unknown or not visible", body = ProblemBody, content_type = "application/problem+json")))]
pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    Auth(p): Auth,
    Path(name): Path<String>,
) -> Result<Json<ConnectionView>, Problem> {
    let gateway = &state.gateway;
    gateway
        .connections
        .get(&name)
        .filter(|_| gateway.policy.visible(&p, &name))
        .map(|c| Json(view(c)))
        .ok_or_else(|| Problem::unknown_connection(&name))
}

/// Tables and columns of a SQL connection, as its database account sees them, limited to the
/// tables the caller's policy lets it read.
#[utoipa::path(get, path = "/v1/connections/{name}/schema", tag = "connections",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Connection name")),
    responses((status = 200, description = "Tables and columns", body = SchemaView),
              (status = 401, description = "Missing or invalid token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "Unknown or not visible", body = ProblemBody, content_type = "application/problem+json"),
              (status = 429, description = "Too many concurrent requests (`Retry-After`)", body = ProblemBody, content_type = "application/problem+json"),
              (status = 503, description = "Target or audit store unavailable", body = ProblemBody, content_type = "application/problem+json")))]
pub(crate) async fn schema(
    State(state): State<Arc<AppState>>,
    Auth(p): Auth,
    RequestId(request_id): RequestId,
    Path(name): Path<String>,
) -> Result<Json<SchemaView>, Problem> {
    let caller = Caller {
        principal: p,
        request_id,
    };
    let request = Request::new(caller, name, Action::Schema);
    match crate::gateway::serve(&state.gateway, request).await? {
        Answer::Schema(view) => Ok(Json(view)),
        _ => Err(Problem::internal(
            "a schema read answered with something else",
        )),
    }
}
