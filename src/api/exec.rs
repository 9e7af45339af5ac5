//! `POST /v1/connections/{name}/exec`: run one command on a host (SSH).
//!
//! NDJSON (`Accept: application/x-ndjson`): a header line `{"type":"header", ...}`, then
//! `{"type":"stdout","data":"..."}` / `{"type":"stderr","data":"..."}` lines as output
//! arrives, then `{"type":"exit", ...}` or `{"type":"error","problem":{...}}` (the RFC 9457 object).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::extract::{ApiJson, Entry};
use super::ndjson;
use super::problem::{Problem, ProblemBody};
use super::query::WaitParams;
use super::state::AppState;
use crate::gateway::admit::Action;
use crate::gateway::command::{CommandRun, ExecOutput, ExecRequest};
use crate::mask::plan::MaskedCounts;

/// The result of a command.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct ExecResponse {
    pub(crate) execution_id: String,
    /// The recording: `GET /v1/sessions/{id}/recording`.
    pub(crate) session_id: String,
    pub(crate) rule: String,
    /// `None` when the command died of a signal.
    pub(crate) exit_code: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) signal: Option<String>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    /// Output was cut at `max_bytes`; the command was stopped.
    pub(crate) truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<String>,
    pub(crate) masked: MaskedCounts,
    pub(crate) duration_ms: u64,
}

/// Run one command (argv, or a command line lexed as POSIX sh).
#[utoipa::path(post, path = "/v1/connections/{name}/exec", tag = "exec",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Connection name"), WaitParams,
           ("Idempotency-Key" = Option<String>, Header, description = "A retried request with the same key finds its existing review")),
    request_body = ExecRequest,
    responses(
        (status = 200, description = "The command ran (any exit code); NDJSON stream on request", body = ExecResponse,
         content((ExecResponse = "application/json"), (String = "application/x-ndjson"))),
        (status = 202, description = "Held for human review", body = crate::gateway::review::HeldView),
        (status = 400, description = "Malformed request; exec on a SQL connection", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Denied by policy (`rule`), compound or unparsable command", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "Unknown connection, or one the caller may not see", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Too many concurrent requests", body = ProblemBody, content_type = "application/problem+json"),
        (status = 502, description = "The host refused authentication", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Host unreachable, host key mismatch, audit or recording unavailable; nothing ran", body = ProblemBody, content_type = "application/problem+json"),
        (status = 504, description = "Timed out; the remote process was killed", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub(crate) async fn exec(
    State(state): State<Arc<AppState>>,
    entry: Entry,
    ApiJson(request): ApiJson<ExecRequest>,
) -> Result<Response, Problem> {
    super::query::serve(&state, entry, Action::Exec(request)).await
}

/// Sends a started command as JSON or NDJSON.
pub(crate) async fn respond_command(run: CommandRun, ndjson: bool) -> Result<Response, Problem> {
    if ndjson {
        Ok(stream(run))
    } else {
        collect(run).await
    }
}

async fn collect(mut run: CommandRun) -> Result<Response, Problem> {
    let (mut stdout, mut stderr) = (String::new(), String::new());
    loop {
        match run.output.recv().await {
            Some(ExecOutput::Stdout(s)) => stdout.push_str(&s),
            Some(ExecOutput::Stderr(s)) => stderr.push_str(&s),
            Some(ExecOutput::End(summary)) => {
                return Ok(Json(ExecResponse {
                    execution_id: run.execution_id,
                    session_id: run.session_id,
                    rule: run.rule,
                    exit_code: summary.exit_code,
                    signal: summary.signal,
                    stdout,
                    stderr,
                    truncated: summary.truncated,
                    note: summary.note,
                    masked: summary.masked,
                    duration_ms: summary.duration_ms,
                })
                .into_response());
            }
            Some(ExecOutput::Error(p)) => {
                return Err(p
                    .with("execution_id", run.execution_id)
                    .with("session_id", run.session_id));
            }
            None => {
                return Err(Problem::internal("the command ended without a result")
                    .with("execution_id", run.execution_id));
            }
        }
    }
}

fn stream(run: CommandRun) -> Response {
    let header = ndjson::line(&serde_json::json!({
        "type": "header",
        "execution_id": run.execution_id,
        "session_id": run.session_id,
        "rule": run.rule,
    }));
    let ids = (run.execution_id.clone(), run.session_id.clone());
    ndjson::stream(header, run.output, move |out| match out {
        ExecOutput::Stdout(s) => ndjson::line(&serde_json::json!({"type": "stdout", "data": s})),
        ExecOutput::Stderr(s) => ndjson::line(&serde_json::json!({"type": "stderr", "data": s})),
        ExecOutput::End(summary) => ndjson::typed("exit", &summary),
        ExecOutput::Error(p) => ndjson::error(
            &p.with("execution_id", ids.0.clone())
                .with("session_id", ids.1.clone()),
        ),
    })
}
