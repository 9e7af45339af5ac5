//! `POST /v1/connections/{name}/exec`: run one command on a host (SSH).
//!
//! NDJSON (`Accept: application/x-ndjson`): a header line `{"type":"header", ...}`, then
//! `{"type":"stdout","data":"..."}` / `{"type":"stderr","data":"..."}` lines as output
//! arrives, then `{"type":"exit", ...}` or `{"type":"error","problem":{...}}` (the RFC 9457 object).

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use serde::Serialize;

use super::extract::{ApiJson, Entry};
use super::ndjson;
use super::problem::Problem;
use super::query::WaitParams;
use super::state::AppState;
use crate::gateway::admit::Action;
use crate::gateway::command::{CommandRun, ExecOutput, ExecRequest};
use crate::mask::plan::MaskedCounts;

/// The result of a command (JSON). With `Accept: application/x-ndjson` the output streams
/// instead: a header line, `{"type":"stdout"|"stderr","data":"..."}` lines, then
/// `{"type":"exit",...}` (`ExecSummary`) or `{"type":"error","problem":{...}}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"execution_id": "0190f5c2-7a4e-7c3b-9f2a-5d1e8b6a4c21", "session_id": "0190f5c2-7a4f-7aa0-b1c2-3d4e5f607182", "rule": "agents-read-logs", "exit_code": 0, "stdout": "Filesystem Size Used Avail Use% Mounted on\n/dev/sda1 40G 12G 28G 30% /\n", "stderr": "", "truncated": false, "masked": {"columns": {}, "detectors": {}}, "duration_ms": 85}))]
pub(crate) struct ExecResponse {
    /// Id of this execution in the audit log (UUIDv7).
    pub(crate) execution_id: String,
    /// The recording: `GET /v1/sessions/{id}/recording`.
    pub(crate) session_id: String,
    /// The policy rule that allowed the command.
    pub(crate) rule: String,
    /// The command's exit status; null when it died of a signal. A non-zero exit is still a
    /// 200: the command ran.
    pub(crate) exit_code: Option<u32>,
    /// The signal that ended the command (`KILL`, `TERM`, ...), if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) signal: Option<String>,
    /// Standard output as UTF-8 (invalid bytes replaced), masked.
    pub(crate) stdout: String,
    /// Standard error as UTF-8 (invalid bytes replaced), masked.
    pub(crate) stderr: String,
    /// Output was cut at `max_bytes`; the command was stopped.
    pub(crate) truncated: bool,
    /// What to do about a truncated output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<String>,
    /// How many values were masked in the output, per detector.
    pub(crate) masked: MaskedCounts,
    /// Time from admission to the command's end, in milliseconds.
    pub(crate) duration_ms: u64,
}

/// Run one command on a host or pod
///
/// Any caller who can see the connection (kind ssh or kubernetes); the policy decides per
/// command. Send `argv` (preferred) or a `command` line, which is lexed as POSIX `sh` would
/// and refused unless it is one plain command (no pipes, lists, redirections, expansions or
/// globs: 403 `compound_command`). Every command is recorded as a session. Outcomes:
///
/// - **200**: the command ran, whatever its exit code (check `exit_code`, `truncated`);
///   NDJSON stream with `Accept: application/x-ndjson`.
/// - **202**: held for human review, as for queries: poll the `Location`, then
///   `POST /v1/executions/{execution_id}/run`, or resend with `?wait=`.
/// - **4xx**: fix the request as `detail` says; `policy_denied` will not change on retry.
/// - **429 / 503**: nothing ran; retry after `Retry-After`. **504**: the command ran past
///   its timeout and was killed.
#[utoipa::path(post, path = "/v1/connections/{name}/exec", tag = "exec", operation_id = "execCommand",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Name of a command connection (kind ssh or kubernetes)", example = "web-1"), WaitParams,
           ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters. A retried request with the same key (and the same body) finds its existing review instead of filing a new one; the same key with a different request is 409 `idempotency_key_reused`.", min_length = 1, max_length = 255, pattern = "^[\\x21-\\x7E]([\\x20-\\x7E]*[\\x21-\\x7E])?$", example = "step-42-restart")),
    request_body(content = ExecRequest, content_type = "application/json", description = "The command (exactly one of `argv` or `command`) and optional limits."),
    responses(
        (status = 200, description = "The command ran (any exit code): its output as JSON, or an NDJSON stream when `Accept: application/x-ndjson`.", body = ExecResponse,
         content((ExecResponse = "application/json"), (String = "application/x-ndjson"))),
        (status = 202, description = "Accepted, not answered yet: held for human review (`status: pending_review`, a `HeldView`; nothing ran yet), or running on as a job (`status: running`, a `JobView`: `Prefer: respond-async`, or the JSON answer was not complete within the sync budget). `next` and `next_actions` say what to do; poll the `Location`.", body = super::query::Accepted,
         headers(("Location" = String, description = "The held execution: `/v1/executions/{execution_id}`"))),
    ))]
pub(crate) async fn exec(
    State(state): State<Arc<AppState>>,
    entry: Entry,
    ApiJson(request): ApiJson<ExecRequest>,
) -> Result<Response, Problem> {
    super::query::serve(&state, entry, Action::Exec(request)).await
}

/// Streams a started command as NDJSON.
pub(crate) fn stream(run: CommandRun) -> Response {
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
