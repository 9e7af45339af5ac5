//! `POST /v1/connections/{name}/check`: the dry run. The body is exactly what the request
//! itself would send (a query on a SQL connection, a command on an SSH or Kubernetes one);
//! the answer says what Airlock would do with it, and nothing runs.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use super::extract::{ApiJson, ApiPath, Auth, RequestId};
use super::problem::Problem;
use super::state::AppState;
use crate::gateway::check::CheckView;
use crate::gateway::command::ExecRequest;
use crate::gateway::query::QueryRequest;
use crate::gateway::{Caller, Request};

/// The body of the request being checked: a query (SQL connections), a command (SSH and
/// Kubernetes connections) or an HTTP request (HTTP API connections), exactly as `/query`,
/// `/exec` or `/http` would take it.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
#[schema(example = json!({"sql": "UPDATE customers SET city = 'Paris' WHERE id = 7"}))]
#[allow(dead_code)] // Only describes the body in the spec; the handler reads it by connection kind.
pub(crate) enum CheckRequest {
    Query(QueryRequest),
    Exec(ExecRequest),
    Http(crate::gateway::http::HttpRequest),
}

/// Check a request without running it.
#[utoipa::path(post, path = "/v1/connections/{name}/check", tag = "query",
    operation_id = "checkRequest",
    summary = "Dry run: what would happen to this request",
    description = "Send the body you would send to `/query` (SQL connections) or `/exec` (SSH and Kubernetes connections). \
The answer is the decision the policy and guardrails would reach (`allow`, `review` with the approver groups, or `deny` with the exact problem the request would get, SQL syntax errors and several statements included), \
the rule, the facts the inspector found, the statement exactly as it would run, the limits that would apply, and how each output column would be masked for you. \
Nothing runs and nothing is held; the check itself is audited (operation `check`). \
A request the check cannot take is answered as the request itself would be: a malformed one (a limit out of range, blank SQL, the wrong kind of connection) with 400, a connection you may not see with 404.",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Connection name")),
    request_body(content = CheckRequest, content_type = "application/json", description = "The query or command, exactly as for `/query` or `/exec`",
        example = json!({"sql": "UPDATE customers SET city = 'Paris' WHERE id = 7"})),
    responses(
        (status = 200, description = "What Airlock would do", body = CheckView),
    ))]
pub(crate) async fn check(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
    RequestId(request_id): RequestId,
    ApiPath(name): ApiPath,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Json<CheckView>, Problem> {
    let gateway = &state.gateway;
    // The body's shape follows the connection's kind; for a connection the caller may not
    // see, it follows the body, and admission answers the same 404 as the request would.
    let action = crate::gateway::check::action_for(gateway, &principal, &name, body)?;
    let caller = Caller {
        principal,
        request_id,
    };
    let view = crate::gateway::check::check(gateway, Request::new(caller, name, action)).await?;
    Ok(Json(view))
}
