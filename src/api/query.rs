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
use super::problem::{Code, Problem, ProblemBody};
use super::state::AppState;
use crate::backend::Column;
use crate::gateway::admit::Action;
use crate::gateway::query::{AppliedLimits, Output, QueryRequest, RowsRun, Summary};
use crate::gateway::review::HoldOptions;
use crate::gateway::{Answer, Request};

pub(crate) const NDJSON: &str = ndjson::CONTENT_TYPE;

/// A complete query result.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct QueryResponse {
    pub(crate) execution_id: String,
    /// The policy rule that allowed the request.
    pub(crate) rule: String,
    pub(crate) columns: Vec<Column>,
    /// Rows as arrays in column order. int8, numeric, timestamps, intervals, inet, uuid,
    /// enums and ranges are strings; arrays are arrays; JSON is JSON; bytes are base64.
    #[schema(value_type = Vec<Vec<serde_json::Value>>)]
    pub(crate) rows: Vec<Box<RawValue>>,
    pub(crate) row_count: u64,
    pub(crate) truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) truncated_reason: Option<crate::gateway::query::Truncation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) affected_rows: Option<u64>,
    /// How many values were masked, per output column and per detector.
    pub(crate) masked: crate::mask::plan::MaskedCounts,
    pub(crate) limits: AppliedLimits,
    pub(crate) duration_ms: u64,
}

pub(crate) fn wants_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|m| m.trim().starts_with(NDJSON)))
}

/// Run one SQL statement.
#[utoipa::path(post, path = "/v1/connections/{name}/query", tag = "query",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Connection name"), WaitParams,
           ("Idempotency-Key" = Option<String>, Header, description = "A retried request with the same key finds its existing review instead of filing a new one")),
    request_body = QueryRequest,
    responses(
        (status = 200, description = "Result (JSON), or an NDJSON stream when `Accept: application/x-ndjson`", body = QueryResponse,
         content((QueryResponse = "application/json"), (String = "application/x-ndjson"))),
        (status = 202, description = "Held for human review: `execution_id`, `review_id`, what to do next", body = crate::gateway::review::HeldView),
        (status = 400, description = "Malformed request, SQL error, several statements, wrong params", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Denied by policy (`rule` names it) or read-only violation", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "Unknown connection, or one the caller may not see", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "Serialization failure or deadlock (`retryable`); Idempotency-Key reused for another request", body = ProblemBody, content_type = "application/problem+json"),
        (status = 410, description = "The review expired while waiting", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "The review was rejected (reason in `detail`)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Too many concurrent requests (`Retry-After`)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Audit store or target unavailable; nothing ran", body = ProblemBody, content_type = "application/problem+json"),
        (status = 504, description = "Timed out and cancelled on the server", body = ProblemBody, content_type = "application/problem+json"),
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
    let request = Request::new(entry.caller, entry.connection, action).with_hold(entry.hold);
    let answer = crate::gateway::serve(&state.gateway, request).await?;
    respond(answer, entry.ndjson).await
}

/// Sends whatever a request turned into: a held review (202), rows, or command output.
pub(crate) async fn respond(answer: Answer, ndjson: bool) -> Result<Response, Problem> {
    match answer {
        Answer::Held(view) => Ok((StatusCode::ACCEPTED, Json(view)).into_response()),
        Answer::Rows(run) if ndjson => Ok(stream_rows(run)),
        Answer::Rows(run) => collect_rows(run).await,
        Answer::Command(run) => super::exec::respond_command(run, ndjson).await,
        Answer::Shell(_) | Answer::Schema(_) => Err(Problem::internal(
            "this endpoint does not open shells or read schemas",
        )),
    }
}

/// `?wait=SECONDS` on requests that may be held for review.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct WaitParams {
    /// Hold the request up to this many seconds (at most 55) for a review decision; if it is
    /// approved in time, the result comes in this response.
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

async fn collect_rows(mut run: RowsRun) -> Result<Response, Problem> {
    let mut rows = Vec::new();
    let summary: Summary = loop {
        match run.rows.recv().await {
            Some(Output::Row(r)) => rows.push(r),
            Some(Output::End(s)) => break s,
            Some(Output::Error(p)) => return Err(p.with("execution_id", run.execution_id)),
            None => {
                return Err(Problem::internal("the execution ended without a result")
                    .with("execution_id", run.execution_id));
            }
        }
    };
    Ok(Json(QueryResponse {
        execution_id: run.execution_id,
        rule: run.rule,
        columns: run.columns,
        rows,
        row_count: summary.row_count,
        truncated: summary.truncated,
        truncated_reason: summary.truncated_reason,
        note: summary.note,
        affected_rows: summary.affected_rows,
        masked: summary.masked,
        limits: run.limits,
        duration_ms: summary.duration_ms,
    })
    .into_response())
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
