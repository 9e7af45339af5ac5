//! `GET /v1/connections`, `GET /v1/connections/{name}`, `GET /v1/connections/{name}/schema`.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;

use super::extract::{Auth, RequestId};
use super::problem::{Problem, ProblemBody};
use crate::audit::{AuditEvent, Outcome, Phase};
use crate::backend::TableInfo;
use crate::config::ConnectionKind;
use crate::pipeline::resolve;
use crate::server::{AppState, Connection};

#[derive(Serialize, utoipa::ToSchema)]
pub struct ConnectionLimits {
    pub max_rows: u64,
    pub max_rows_ceiling: u64,
    pub max_bytes: u64,
    pub max_bytes_ceiling: u64,
    pub timeout_ms: u64,
    pub max_timeout_ms: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ConnectionView {
    pub name: String,
    pub kind: ConnectionKind,
    pub description: String,
    /// Writes are refused by the database itself (read-only transaction or handle).
    pub read_only: bool,
    /// Placeholder style for `params`: `$1` (postgres) or `?` (mysql, sqlite).
    pub placeholder: String,
    pub limits: ConnectionLimits,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ConnectionList {
    pub connections: Vec<ConnectionView>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SchemaView {
    pub connection: String,
    pub tables: Vec<TableInfo>,
}

fn view(c: &Connection) -> ConnectionView {
    let l = &c.config.limits;
    ConnectionView {
        name: c.config.name.clone(),
        kind: c.config.kind,
        description: c.config.description.clone(),
        read_only: c.config.read_only,
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
pub async fn list(State(state): State<Arc<AppState>>, Auth(p): Auth) -> Json<ConnectionList> {
    let mut connections: Vec<ConnectionView> = state
        .connections
        .values()
        .filter(|c| state.policy.visible(&p, &c.config.name))
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
pub async fn get(
    State(state): State<Arc<AppState>>,
    Auth(p): Auth,
    Path(name): Path<String>,
) -> Result<Json<ConnectionView>, Problem> {
    Ok(Json(view(resolve(&state, &p, &name)?)))
}

/// Tables and columns of a SQL connection, as its database account sees them.
#[utoipa::path(get, path = "/v1/connections/{name}/schema", tag = "connections",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Connection name")),
    responses((status = 200, description = "Tables and columns", body = SchemaView),
              (status = 401, description = "Missing or invalid token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "Unknown or not visible", body = ProblemBody, content_type = "application/problem+json"),
              (status = 503, description = "Target or audit store unavailable", body = ProblemBody, content_type = "application/problem+json")))]
pub async fn schema(
    State(state): State<Arc<AppState>>,
    Auth(p): Auth,
    RequestId(request_id): RequestId,
    Path(name): Path<String>,
) -> Result<Json<SchemaView>, Problem> {
    let conn = resolve(&state, &p, &name)?;
    let Some(backend) = conn.sql() else {
        return Err(crate::pipeline::wrong_operation(
            &name,
            "runs commands and has no schema",
            "exec",
        ));
    };
    let started = Instant::now();
    let execution_id = uuid::Uuid::now_v7().to_string();
    let mut begin = AuditEvent::new(Phase::Begin, &execution_id, "schema");
    begin.request_id = request_id;
    begin.principal = Some((&p).into());
    begin.connection = Some(name.clone());
    begin.decision = Some("allow".into());
    state
        .audit
        .commit(begin.clone())
        .await
        .map_err(|_| Problem::audit_unavailable())?;
    let result = backend.schema().await;
    let mut end = AuditEvent::new(Phase::End, &execution_id, "schema");
    end.request_id = begin.request_id;
    end.principal = begin.principal;
    end.connection = begin.connection;
    end.duration_ms = Some(started.elapsed().as_millis() as u64);
    end.outcome = Some(if result.is_ok() {
        Outcome::Ok
    } else {
        Outcome::Error
    });
    state.audit.commit_end(end).await;
    Ok(Json(SchemaView {
        connection: name,
        tables: result.map_err(Problem::from)?,
    }))
}
