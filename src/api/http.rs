//! `POST /v1/connections/{name}/http`: one request to an HTTP API target, sent with
//! credentials only Airlock holds.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;

use super::extract::{ApiJson, Entry};
use super::problem::Problem;
use super::state::AppState;
use crate::gateway::admit::Action;
use crate::gateway::http::HttpRequest;

/// Call an HTTP API
///
/// Sends one request to an HTTP API connection: `method`, a `path` under the connection's
/// base URL (never a full URL; normalised, and refused if it would leave the base),
/// `query`, extra `headers` (never Authorization, Cookie, Host or hop-by-hop: Airlock adds
/// the credentials), and a `body` (a JSON value is sent as JSON, a string as text).
/// Rules match the method, the normalised path (globs), the query's names and the body's
/// content type; a request a rule holds for review answers 202 as queries do. The answer
/// is the upstream `status` (a 4xx or 5xx from the API is a result, not an error), an
/// allow-listed set of response `headers`, and the `body`, masked for the caller (JSON per
/// value and by JSON-path rules, text by the content detectors), cut at `max_bytes`.
/// Redirects are followed only while they stay under the base URL.
#[utoipa::path(post, path = "/v1/connections/{name}/http", tag = "http", operation_id = "callHttp",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Name of an HTTP API connection", example = "billing"), super::query::WaitParams,
           ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters. A retried request with the same key (and the same body) finds its existing review, or the result of its run, instead of doing it twice.", min_length = 1, max_length = 255, pattern = "^[\\x21-\\x7E]([\\x20-\\x7E]*[\\x21-\\x7E])?$", example = "step-42-refund")),
    request_body(content = HttpRequest, content_type = "application/json", description = "The request to send.",
        example = json!({"method": "GET", "path": "/customers/42", "query": {"expand": "orders"}})),
    responses(
        (status = 200, description = "The API answered (any status): status, allow-listed headers, the body masked.", body = crate::gateway::http::HttpResult),
        (status = 202, description = "Held for human review (a `HeldView`; nothing was sent yet), or running on as a job (a `JobView`). Poll the `Location`.", body = super::query::Accepted,
         headers(("Location" = String, description = "The execution: `/v1/executions/{execution_id}`"))),
    ))]
pub(crate) async fn http(
    State(state): State<Arc<AppState>>,
    entry: Entry,
    ApiJson(request): ApiJson<HttpRequest>,
) -> Result<Response, Problem> {
    // The answer is one capped document: never streamed, whatever `Accept` says.
    let entry = Entry {
        ndjson: false,
        ..entry
    };
    super::query::serve(&state, entry, Action::Http(request)).await
}
