//! `POST /v1/connections/{name}/query`: JSON (default) or NDJSON (`Accept: application/x-ndjson`).
//!
//! NDJSON shape, one JSON value per line:
//! 1. header object: `{"type":"header","execution_id","rule","columns","limits"}`
//! 2. one JSON array per row
//! 3. trailer object: `{"type":"end", ...summary}` or `{"type":"error","problem":{...}}`
//!
//! A line starting with `[` is a row; the trailer is always the last line. A stream that
//! ends without a trailer was cut (client too slow, server stopped).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::value::RawValue;

use super::extract::{ApiJson, Entry};
use super::ndjson;
use super::problem::{Code, Problem};
use super::state::AppState;
use crate::backend::Column;
use crate::gateway::admit::Action;
use crate::gateway::jobs::{self, Reply};
use crate::gateway::query::{AppliedLimits, Output, QueryRequest, RowsRun};
use crate::gateway::results::Kept;
use crate::gateway::review::HoldOptions;
use crate::gateway::{Answer, Request};

pub(crate) const NDJSON: &str = ndjson::CONTENT_TYPE;

/// A complete query result (JSON). With `Accept: application/x-ndjson` the same content
/// streams as lines instead: a header object, one array per row, then a trailer (`Summary`
/// with `"type":"end"`, or `{"type":"error","problem":{...}}`).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"execution_id": "0190f5c2-7a4e-7c3b-9f2a-5d1e8b6a4c21", "rule": "agents-read", "columns": [{"name": "id", "type": "INTEGER"}, {"name": "email", "type": "TEXT"}], "rows": [[1, "a***@example.com"], [2, "b***@example.com"]], "row_count": 2, "truncated": false, "masked": {"columns": {"email": 2}, "detectors": {}}, "limits": {"max_rows": 1000, "max_bytes": 10485760, "timeout_ms": 30000}, "duration_ms": 4}))]
pub(crate) struct QueryResponse {
    /// Id of this execution in the audit log (UUIDv7); quote it when asking about it.
    pub(crate) execution_id: String,
    /// The policy rule that allowed the request.
    pub(crate) rule: String,
    /// The result's columns, in order.
    pub(crate) columns: Vec<Column>,
    /// Rows as arrays in column order. int8, numeric, timestamps, intervals, inet, uuid,
    /// enums and ranges are strings; arrays are arrays; JSON is JSON; bytes are base64.
    #[schema(value_type = Vec<Vec<serde_json::Value>>)]
    pub(crate) rows: Vec<Box<RawValue>>,
    /// How many rows `rows` holds.
    pub(crate) row_count: u64,
    /// More rows existed than were returned (see `truncated_reason` and `note`).
    pub(crate) truncated: bool,
    /// Which cap cut the result, when `truncated`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) truncated_reason: Option<crate::gateway::query::Truncation>,
    /// What to do about a truncated result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<String>,
    /// Rows a write affected (absent for reads).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) affected_rows: Option<u64>,
    /// How many values were masked, per output column and per detector.
    pub(crate) masked: crate::mask::plan::MaskedCounts,
    /// The limits that applied (the request's, or the connection's defaults).
    pub(crate) limits: AppliedLimits,
    /// Time from admission to the end of the result, in milliseconds.
    pub(crate) duration_ms: u64,
}

/// `Prefer: respond-async` (RFC 7240): answer 202 with a job at once instead of waiting
/// for the result.
pub(crate) fn wants_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
}

pub(crate) fn wants_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|m| m.trim().starts_with(NDJSON)))
}

/// Run one SQL statement
///
/// Any caller who can see the connection (kind postgres, mysql or sqlite); the policy decides
/// per statement. Send exactly one statement with positional `params` (placeholder style in
/// `GET /v1/connections/{name}`). Outcomes:
///
/// - **200**: the result, as JSON, or as an NDJSON stream with
///   `Accept: application/x-ndjson` (a header line, one JSON array per row, then a trailer
///   `{"type":"end",...}` or `{"type":"error","problem":{...}}`; a stream without a trailer
///   was cut). Check `truncated` and `note`.
/// - **202**: held for human review. Poll `GET /v1/executions/{execution_id}` (the
///   `Location` header), then `POST /v1/executions/{execution_id}/run` once approved; or
///   send the request with `?wait=` to wait for the decision in this call. Retrying with
///   the same `Idempotency-Key` finds the same review instead of filing another.
/// - **4xx**: fix the request as `detail` says; `policy_denied` will not change on retry.
/// - **429 / 503**: nothing ran; retry after `Retry-After`.
#[utoipa::path(post, path = "/v1/connections/{name}/query", tag = "query", operation_id = "runQuery",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Name of a SQL connection", example = "demo"), WaitParams,
           ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters. A retried request with the same key (and the same body) finds its existing review instead of filing a new one; the same key with a different request is 409 `idempotency_key_reused`.", min_length = 1, max_length = 255, pattern = "^[\\x21-\\x7E]([\\x20-\\x7E]*[\\x21-\\x7E])?$", example = "step-42-update-city")),
    request_body(content = QueryRequest, content_type = "application/json", description = "The statement, its parameters and optional limits."),
    responses(
        (status = 200, description = "The statement ran: the result as JSON, or an NDJSON stream when `Accept: application/x-ndjson` (header line, row arrays, trailer).", body = QueryResponse,
         content((QueryResponse = "application/json"), (String = "application/x-ndjson"))),
        (status = 202, description = "Accepted, not answered yet: held for human review (`status: pending_review`, a `HeldView`; nothing ran yet), or running on as a job (`status: running`, a `JobView`: `Prefer: respond-async`, or the JSON answer was not complete within the sync budget). `next` and `next_actions` say what to do; poll the `Location`.", body = super::query::Accepted,
         headers(("Location" = String, description = "The held execution: `/v1/executions/{execution_id}`"))),
    ))]
pub(crate) async fn query(
    State(state): State<Arc<AppState>>,
    entry: Entry,
    ApiJson(request): ApiJson<QueryRequest>,
) -> Result<Response, Problem> {
    let streaming = entry.ndjson;
    let action = Action::Query { request, streaming };
    serve(&state, entry, action).await
}

/// Admits and runs an entry's action, and sends the answer.
pub(crate) async fn serve(
    state: &AppState,
    entry: Entry,
    action: Action,
) -> Result<Response, Problem> {
    let delivery = Delivery {
        ndjson: entry.ndjson,
        respond_async: entry.respond_async,
    };
    let request = Request::new(entry.caller, entry.connection, action).with_hold(entry.hold);
    // Admission and execution make a large future; boxed here, the handler's own future
    // stays small, and the layers around it move a pointer instead of copying it.
    Box::pin(answer(state, request, delivery)).await
}

/// A 202: held for review (`status: pending_review`, a `HeldView`), or running on as a job
/// (`status: running`, a `JobView`).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[schema(example = json!({"execution_id": "0193a0c4-6a7e-7c4e-9d0b-2f5e8c1a9b10", "status": "running", "next": "it runs in the background: GET /v1/executions/0193a0c4-6a7e-7c4e-9d0b-2f5e8c1a9b10?wait=55 waits for it to end", "next_actions": [{"rel": "status", "method": "GET", "href": "/v1/executions/0193a0c4-6a7e-7c4e-9d0b-2f5e8c1a9b10?wait=55", "description": "read its state, waiting up to 55 s for it to end"}]}))]
#[allow(dead_code)] // Describes the 202 body in the spec; handlers send the views directly.
pub(crate) enum Accepted {
    Held(crate::gateway::review::HeldView),
    Job(crate::gateway::jobs::JobView),
}

/// How an answer goes back: streamed as NDJSON, or collected as JSON within the sync
/// budget (or at once as a job, `Prefer: respond-async`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Delivery {
    pub(crate) ndjson: bool,
    pub(crate) respond_async: bool,
}

/// Admits and runs `request`, and sends what it turned into: a held review (202), rows or
/// command output (streamed; or collected whole, or as a job when it outlives the sync
/// budget, 202).
pub(crate) async fn answer(
    state: &AppState,
    request: Request,
    delivery: Delivery,
) -> Result<Response, Problem> {
    if delivery.ndjson {
        let answer = crate::gateway::serve(&state.gateway, request).await?;
        return respond(answer);
    }
    let budget = if delivery.respond_async {
        std::time::Duration::ZERO
    } else {
        std::time::Duration::from_millis(state.gateway.jobs_config.sync_budget_ms)
    };
    match jobs::serve_collected(&state.gateway, request, budget).await? {
        Reply::Held(view) => Ok(accepted(view.location(), view)),
        Reply::Job(view) => Ok(accepted(view.location(), view)),
        Reply::Now(kept) => kept_response(kept),
    }
}

fn accepted(location: String, view: impl Serialize) -> Response {
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(view),
    )
        .into_response()
}

/// Sends a started answer as NDJSON (or a held review as a 202).
pub(crate) fn respond(answer: Answer) -> Result<Response, Problem> {
    match answer {
        Answer::Held(view) => Ok(accepted(view.location(), view)),
        Answer::Rows(run) => Ok(stream_rows(run)),
        Answer::Command(run) => Ok(super::exec::stream(run)),
        // Not streamed (the body is capped): sent whole.
        Answer::Http(result) => Ok(Json(*result).into_response()),
        Answer::Shell(_) | Answer::Schema(_) => Err(Problem::internal(
            "this endpoint does not open shells or read schemas",
        )),
    }
}

/// A whole answer as JSON: rows as a [`QueryResponse`], output as an
/// [`super::exec::ExecResponse`], a failure as its problem.
pub(crate) fn kept_response(kept: Kept) -> Result<Response, Problem> {
    // Serialized straight into the body: rows are kept as JSON text, which a `Value` tree
    // would parse again only to print it.
    kept_body(kept).map(|body| Json(body).into_response())
}

/// [`kept_response`]'s body, for entries that are not HTTP (MCP).
pub(crate) fn kept_json(kept: Kept) -> Result<serde_json::Value, Problem> {
    serde_json::to_value(kept_body(kept)?)
        .map_err(|e| Problem::internal(format!("a result could not be serialized: {e}")))
}

/// The body of a whole answer.
#[derive(Serialize)]
#[serde(untagged)]
enum KeptBody {
    Rows(QueryResponse),
    Command(super::exec::ExecResponse),
    Http(Box<crate::gateway::http::HttpResult>),
}

fn kept_body(kept: Kept) -> Result<KeptBody, Problem> {
    Ok(match kept {
        Kept::Rows(r) => KeptBody::Rows(QueryResponse {
            execution_id: r.execution_id,
            rule: r.rule,
            columns: r.columns,
            rows: r.rows,
            row_count: r.summary.row_count,
            truncated: r.summary.truncated,
            truncated_reason: r.summary.truncated_reason,
            note: r.summary.note,
            affected_rows: r.summary.affected_rows,
            masked: r.summary.masked,
            limits: r.limits,
            duration_ms: r.summary.duration_ms,
        }),
        Kept::Command(c) => KeptBody::Command(super::exec::ExecResponse {
            execution_id: c.execution_id,
            session_id: c.session_id,
            rule: c.rule,
            exit_code: c.summary.exit_code,
            signal: c.summary.signal,
            stdout: c.stdout,
            stderr: c.stderr,
            truncated: c.summary.truncated,
            note: c.summary.note,
            masked: c.summary.masked,
            duration_ms: c.summary.duration_ms,
        }),
        Kept::Http(h) => KeptBody::Http(h),
        Kept::Failed { problem } => return Err(Problem::from_body(&problem)),
    })
}

/// `?wait=SECONDS` on requests that may be held for review.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct WaitParams {
    /// Seconds (0..=55) to hold the request for a review decision if the policy sends it to
    /// review; if it is approved in time, the result comes in this response. Without it (or
    /// 0) a held request answers 202 at once. No other query parameter is accepted.
    #[param(minimum = 0, maximum = 55, example = 30)]
    pub(crate) wait: Option<u64>,
}

/// `?wait=` and `Idempotency-Key`, for requests that may be held for review.
pub(crate) fn hold_options(
    params: Result<Query<WaitParams>, QueryRejection>,
    headers: &HeaderMap,
) -> Result<HoldOptions, Problem> {
    let Query(params) = params.map_err(|e| Problem::new(Code::InvalidQuery, e.body_text()))?;
    Ok(HoldOptions {
        wait: wait_duration(params.wait)?,
        idempotency_key: idempotency_key(headers)?,
    })
}

fn wait_duration(wait: Option<u64>) -> Result<Option<std::time::Duration>, Problem> {
    match wait {
        Some(w) if w > crate::gateway::review::MAX_WAIT.as_secs() => Err(Problem::new(
            Code::InvalidQuery,
            format!(
                "wait is at most {} seconds",
                crate::gateway::review::MAX_WAIT.as_secs()
            ),
        )),
        w => Ok(w.map(std::time::Duration::from_secs)),
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => {
            let key = v.to_str().map_err(|_| {
                Problem::new(Code::InvalidHeader, "Idempotency-Key must be visible ASCII")
            })?;
            if key.is_empty() || key.len() > 255 {
                return Err(Problem::new(
                    Code::InvalidHeader,
                    "Idempotency-Key must be 1 to 255 characters",
                ));
            }
            Ok(Some(key.to_string()))
        }
    }
}

fn stream_rows(run: RowsRun) -> Response {
    let header = ndjson::line(&serde_json::json!({
        "type": "header",
        "execution_id": run.execution_id,
        "rule": run.rule,
        "columns": run.columns,
        "limits": run.limits,
    }));
    let execution_id = run.execution_id.clone();
    ndjson::stream(header, run.rows, move |out| match out {
        Output::Row(raw) => {
            let mut v = Vec::with_capacity(raw.get().len() + 1);
            v.extend_from_slice(raw.get().as_bytes());
            v.push(b'\n');
            axum::body::Bytes::from(v)
        }
        Output::End(summary) => ndjson::typed("end", &summary),
        Output::Error(problem) => {
            ndjson::error(&problem.with("execution_id", execution_id.clone()))
        }
    })
}
