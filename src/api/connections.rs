//! `GET /v1/connections`, `GET /v1/connections/{name}`, `GET /v1/connections/{name}/schema`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::extract::{ApiPath, Auth, RequestId};
use super::problem::Problem;
use super::state::AppState;
use crate::config::ConnectionKind;
use crate::gateway::admit::Action;
use crate::gateway::schema::SchemaView;
use crate::gateway::{Answer, Caller, Connection, Request};
use crate::identity::Principal;

/// A connection's limits: the defaults a request gets, and the ceilings it may ask for
/// (`max_rows`, `max_bytes`, `timeout_ms` in a query or exec body must be 1..=ceiling).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"max_rows": 1000, "max_rows_ceiling": 100000, "max_bytes": 10485760, "max_bytes_ceiling": 104857600, "timeout_ms": 30000, "max_timeout_ms": 300000}))]
pub(crate) struct ConnectionLimits {
    /// Rows a JSON query returns when it does not ask for `max_rows` (NDJSON streams default
    /// to `max_rows_ceiling`).
    pub(crate) max_rows: u64,
    /// The most rows a request may ask for.
    pub(crate) max_rows_ceiling: u64,
    /// Bytes of serialized rows (or command output) a request gets by default.
    pub(crate) max_bytes: u64,
    /// The most bytes a request may ask for.
    pub(crate) max_bytes_ceiling: u64,
    /// Statement (or command) timeout by default, in milliseconds.
    pub(crate) timeout_ms: u64,
    /// The longest timeout a request may ask for, in milliseconds.
    pub(crate) max_timeout_ms: u64,
}

/// A connection the caller may use.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"name": "demo", "kind": "sqlite", "description": "Demo database (customers, orders)", "read_only": false, "placeholder": "?", "limits": {"max_rows": 1000, "max_rows_ceiling": 100000, "max_bytes": 10485760, "max_bytes_ceiling": 104857600, "timeout_ms": 30000, "max_timeout_ms": 300000}}))]
pub(crate) struct ConnectionView {
    /// The name to use in paths (`/v1/connections/{name}/...`).
    pub(crate) name: String,
    /// What the connection reaches: a SQL database (`query`, `schema`) or hosts/pods
    /// (`exec`, `shell`).
    pub(crate) kind: ConnectionKind,
    /// What it is for, as the operator described it.
    pub(crate) description: String,
    /// Writes are refused by the database itself (read-only transaction or handle).
    pub(crate) read_only: bool,
    /// Placeholder style for `params`: `$1` (postgres), `?` (mysql, sqlite), empty for
    /// command connections.
    #[schema(value_type = Placeholder)]
    pub(crate) placeholder: String,
    /// Defaults and ceilings for `max_rows`, `max_bytes` and `timeout_ms`.
    pub(crate) limits: ConnectionLimits,
    /// What the caller may do here (`GET /v1/connections/{name}` only; the list leaves it
    /// out). A summary read off the rules: `POST /v1/connections/{name}/check` gives the
    /// decision for one request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) permissions: Option<Permissions>,
}

/// What the caller may do on a connection.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "statements": [{"statement": "select", "decision": "allow", "rule": "agents-read-demo"}, {"statement": "update", "decision": "review", "rule": "demo-writes-need-review", "guardrails": ["deny-unbounded-write"]}, {"statement": "drop", "decision": "deny", "rule": "deny-ddl"}],
    "rules": [{"id": "agents-read-demo", "action": "allow", "matches": {"statements": ["select", "explain", "show"]}}],
    "masking": {"columns": [{"column": "customers.email", "strategy": "redact"}], "detectors": ["email"], "strict": false}
}))]
pub(crate) struct Permissions {
    /// SQL connections: what an ordinary statement of each kind gets.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) statements: Vec<crate::policy::KindPermission>,
    /// The rules that apply to the caller here, in the order they are configured; a deny
    /// rule that matches wins over review, review over allow, and nothing matching is denied.
    pub(crate) rules: Vec<crate::policy::RuleSummary>,
    /// How results are masked for the caller.
    pub(crate) masking: crate::mask::plan::MaskingSummary,
}

/// The placeholder style for `params` (schema only): `$1` (postgres), `?` (mysql, sqlite),
/// empty for command connections (ssh, kubernetes).
pub(crate) struct Placeholder;

impl utoipa::PartialSchema for Placeholder {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(["$1", "?", ""]))
            .description(Some(
                "The placeholder style for `params`: `$1`, `$2`, ... (postgres), `?` (mysql, \
                 sqlite), empty for command connections (ssh, kubernetes).",
            ))
            .examples([serde_json::json!("?")])
            .into()
    }
}

impl utoipa::ToSchema for Placeholder {}

/// The connections the caller may use, by name.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"connections": [{"name": "demo", "kind": "sqlite", "description": "Demo database (customers, orders)", "read_only": false, "placeholder": "?", "limits": {"max_rows": 1000, "max_rows_ceiling": 100000, "max_bytes": 10485760, "max_bytes_ceiling": 104857600, "timeout_ms": 30000, "max_timeout_ms": 300000}}]}))]
pub(crate) struct ConnectionList {
    /// Sorted by name; only the ones the caller's policy lets it see.
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
            ConnectionKind::Ssh | ConnectionKind::Kubernetes | ConnectionKind::Http => "",
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
        permissions: None,
    }
}

/// List the connections you may use
///
/// Any authenticated caller. Returns the connections the policy lets the caller see, with
/// their kind, placeholder style and limits; a connection not listed here answers 404
/// everywhere. Start here: pick a `name`, then query it (`kind` postgres, mysql, sqlite) or
/// exec on it (ssh, kubernetes).
#[utoipa::path(get, path = "/v1/connections", tag = "connections", operation_id = "listConnections",
    security(("bearer" = [])),
    responses((status = 200, description = "The visible connections, sorted by name.", body = ConnectionList)))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Auth(p): Auth,
) -> Json<ConnectionList> {
    Json(ConnectionList {
        connections: visible(&state, &p),
    })
}

/// The connections `p` may use, by name.
pub(crate) fn visible(state: &AppState, p: &Principal) -> Vec<ConnectionView> {
    let gateway = &state.gateway;
    let mut connections: Vec<ConnectionView> = gateway
        .connections
        .values()
        .filter(|c| gateway.policy.visible(p, &c.config.name))
        .map(|c| view(c))
        .collect();
    connections.sort_by(|a, b| a.name.cmp(&b.name));
    connections
}

/// Connection `name` with what `p` may do there, if `p` may see it.
pub(crate) fn with_permissions(
    state: &AppState,
    p: &Principal,
    name: &str,
) -> Result<ConnectionView, Problem> {
    let gateway = &state.gateway;
    let c = gateway
        .connections
        .get(name)
        .filter(|_| gateway.policy.visible(p, name))
        .ok_or_else(|| Problem::unknown_connection(name))?;
    let mut v = view(c);
    v.permissions = Some(Permissions {
        statements: match c.sql() {
            Some(_) => gateway.policy.kind_permissions(p, name),
            None => Vec::new(),
        },
        rules: gateway.policy.rules_for(p, name),
        masking: gateway.masking.for_request(p, name).summary(),
    });
    Ok(v)
}

/// Get one connection
///
/// Any authenticated caller. Returns the connection if the policy lets the caller see it:
/// its kind, placeholder style and the limits (defaults and ceilings) a request on it may
/// ask for. 404 `not_found` means it does not exist or is not visible to you: list
/// connections instead of retrying.
#[utoipa::path(get, path = "/v1/connections/{name}", tag = "connections", operation_id = "getConnection",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Connection name, as `GET /v1/connections` lists it", example = "demo")),
    responses((status = 200, description = "The connection.", body = ConnectionView)))]
pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    Auth(p): Auth,
    ApiPath(name): ApiPath,
) -> Result<Json<ConnectionView>, Problem> {
    with_permissions(&state, &p, &name).map(Json)
}

/// Get the tables and columns of a SQL connection
///
/// Any caller who can see the connection. Lists tables and views with their columns, as the
/// connection's database account sees them, limited to the tables the caller's policy lets
/// it read: use it to write statements that the policy admits. It reads the target, so it
/// is admitted and audited like a query and takes one of your concurrency slots (429
/// `too_many_requests`: retry after `Retry-After`). On a command connection it answers 400
/// `wrong_operation`.
#[utoipa::path(get, path = "/v1/connections/{name}/schema", tag = "connections", operation_id = "getSchema",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Name of a SQL connection (kind postgres, mysql or sqlite)", example = "demo")),
    responses((status = 200, description = "The readable tables and their columns.", body = SchemaView)))]
pub(crate) async fn schema(
    State(state): State<Arc<AppState>>,
    Auth(p): Auth,
    RequestId(request_id): RequestId,
    ApiPath(name): ApiPath,
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
