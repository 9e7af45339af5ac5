//! `POST /v1/connections/{name}/exec`: run one command on a host (SSH).
//!
//! NDJSON (`Accept: application/x-ndjson`): a header line `{"type":"header", ...}`, then
//! `{"type":"stdout","data":"..."}` / `{"type":"stderr","data":"..."}` lines as output
//! arrives, then `{"type":"exit", ...}` or `{"type":"error", ...}`.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::extract::{ApiJson, Auth, RequestId};
use super::problem::{Problem, ProblemBody};
use super::query::{NDJSON, WaitParams, wants_ndjson};
use crate::exec::{self, ExecOutput, ExecRequest, ExecResponse, ExecRun};
use crate::pipeline::{self, RequestContext};
use crate::server::AppState;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;

/// Run one command (argv, or a command line lexed as POSIX sh).
#[utoipa::path(post, path = "/v1/connections/{name}/exec", tag = "exec",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Connection name"), WaitParams,
           ("Idempotency-Key" = Option<String>, Header, description = "A retried request with the same key finds its existing review")),
    request_body = ExecRequest,
    responses(
        (status = 200, description = "The command ran (any exit code); NDJSON stream on request", body = ExecResponse,
         content((ExecResponse = "application/json"), (String = "application/x-ndjson"))),
        (status = 202, description = "Held for human review", body = crate::review::flow::HeldView),
        (status = 400, description = "Malformed request; exec on a SQL connection", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Denied by policy (`rule`), compound or unparsable command", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "Unknown connection, or one the caller may not see", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Too many concurrent requests", body = ProblemBody, content_type = "application/problem+json"),
        (status = 502, description = "The host refused authentication", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Host unreachable, host key mismatch, audit or recording unavailable; nothing ran", body = ProblemBody, content_type = "application/problem+json"),
        (status = 504, description = "Timed out; the remote process was killed", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn exec(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
    RequestId(request_id): RequestId,
    Path(name): Path<String>,
    params: Result<Query<WaitParams>, QueryRejection>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ExecRequest>,
) -> Result<Response, Problem> {
    let options = super::query::query_options(params, &headers)?;
    let ndjson = wants_ndjson(&headers);
    let slot = pipeline::acquire_slot(&state, &principal)?;
    let ctx = RequestContext {
        principal,
        request_id,
    };
    let answer = exec::exec(state, ctx, &name, req, slot, options).await?;
    super::query::answer_response(answer, ndjson).await
}

/// Sends a started command as JSON or NDJSON.
pub async fn respond_command(run: ExecRun, ndjson: bool) -> Result<Response, Problem> {
    if ndjson {
        Ok(stream(run))
    } else {
        collect(run).await
    }
}

async fn collect(mut run: ExecRun) -> Result<Response, Problem> {
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

fn line(v: serde_json::Value) -> Bytes {
    let mut b = serde_json::to_vec(&v).unwrap_or_else(|_| b"{\"type\":\"error\"}".to_vec());
    b.push(b'\n');
    Bytes::from(b)
}

fn stream(run: ExecRun) -> Response {
    let header = line(serde_json::json!({
        "type": "header",
        "execution_id": run.execution_id,
        "session_id": run.session_id,
        "rule": run.rule,
    }));
    let ids = (run.execution_id.clone(), run.session_id.clone());
    let rest = futures::stream::unfold(run.output, move |mut rx| {
        let ids = ids.clone();
        async move {
            let chunk = match rx.recv().await? {
                ExecOutput::Stdout(s) => line(serde_json::json!({"type": "stdout", "data": s})),
                ExecOutput::Stderr(s) => line(serde_json::json!({"type": "stderr", "data": s})),
                ExecOutput::End(summary) => {
                    let mut v = serde_json::to_value(&summary).unwrap_or_default();
                    v["type"] = "exit".into();
                    line(v)
                }
                ExecOutput::Error(p) => {
                    let mut v = p
                        .with("execution_id", ids.0)
                        .with("session_id", ids.1)
                        .to_body();
                    v["type"] = "error".into();
                    line(v)
                }
            };
            Some((Ok::<_, std::io::Error>(chunk), rx))
        }
    });
    let body = futures::stream::once(async move { Ok(header) }).chain(rest);
    let mut resp = Response::new(Body::from_stream(body));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    resp
}
