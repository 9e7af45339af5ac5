//! The agent's side of an execution that did not answer at once: `GET /v1/executions/{id}`
//! (its state), `POST /v1/executions/{id}/run` (run an approved held request once),
//! `GET /v1/executions/{id}/result` (a job's kept result), `POST /v1/executions/{id}/cancel`
//! (stop a job).
//!
//! Two kinds of execution answer here: a request held for review (its state is the review
//! record) and a job (its state is its audit record and kept result). The vocabulary is
//! one (`ExecutionStatus`), and so is the shape.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::extract::{ApiPath, Auth, NoBody, RequestId};
use super::problem::{Code, Problem};
use super::query::{Delivery, WaitParams};
use super::state::AppState;
use crate::audit::{AuditEvent, AuditPrincipal, Phase};
use crate::gateway::admit::Action;
use crate::gateway::jobs::{self, ExecutionState};
use crate::gateway::review::{self as flow, NextAction};
use crate::gateway::{Caller, Request};
use crate::identity::Principal;
use crate::review::{Approval, ExecutionStatus, ReviewRecord, ReviewStatus};
use crate::store::ReviewLookup;

/// An execution as its requester sees it: a held request, or a job.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"execution_id": "0190f5c2-7a4e-7c3b-9f2a-5d1e8b6a4c21", "review_id": "0190f5c2-7a52-7d10-8e4b-2b9c1f0d3e57", "status": "approved", "connection": "demo", "operation": "query", "rule": "writes-need-review", "expires_at": "2025-01-01T13:00:00Z", "run_deadline": "2025-01-01T12:20:00Z", "approvals": [{"issuer": "dev", "subject": "alice", "at": "2025-01-01T12:05:00Z", "comment": "one row, fine"}], "next": "POST /v1/executions/0190f5c2-7a4e-7c3b-9f2a-5d1e8b6a4c21/run (no body) runs it once", "next_actions": [{"rel": "run", "method": "POST", "href": "/v1/executions/0190f5c2-7a4e-7c3b-9f2a-5d1e8b6a4c21/run", "description": "run it once; the answer is the result"}]}))]
pub(crate) struct ExecutionView {
    /// The execution's id (the `execution_id` of its 202, and of its audit records).
    pub(crate) execution_id: String,
    /// Its review's id (held requests only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) review_id: Option<String>,
    /// Where it stands. Held: `approved` may be run once; `pending_review` waits for
    /// reviewers. Jobs: `running` until `done`, `failed`, `cancelled` or `interrupted`.
    pub(crate) status: ExecutionStatus,
    /// The connection it runs on.
    pub(crate) connection: String,
    /// `query`, `exec`, or `run` (an approved request's run).
    pub(crate) operation: String,
    /// The policy rule that admitted it, or sent it to review.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rule: Option<String>,
    /// Held requests: when the review expires if nobody decides it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) expires_at: Option<DateTime<Utc>>,
    /// Once approved: the run must start before this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) run_deadline: Option<DateTime<Utc>>,
    /// Once rejected: why, from the reviewer. Change the request accordingly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rejection_reason: Option<String>,
    /// Once it ran: a summary (`outcome`, `row_count`, `error_class`, `sqlstate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) result: Option<serde_json::Value>,
    /// A failed or cancelled job: the problem it ended with.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub(crate) problem: Option<serde_json::Value>,
    /// Held requests: approvals so far, with the approvers' comments for the requester.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) approvals: Vec<Approval>,
    /// What to do next, in words.
    pub(crate) next: String,
    /// What to do next, as requests to send (empty when nothing is left to do).
    pub(crate) next_actions: Vec<NextAction>,
}

fn is_auditor(state: &AppState, p: &Principal) -> bool {
    state.is_admin(p)
}

fn not_found(id: &str) -> Problem {
    Problem::not_found(format!("no execution `{id}` of yours"))
}

/// The held request behind `id`, if it is one and the caller may see it.
async fn review_of(
    state: &AppState,
    p: &Principal,
    id: &str,
) -> Result<Option<ReviewRecord>, Problem> {
    let r = state
        .gateway
        .store
        .get_review(ReviewLookup::Execution(id))
        .await
        .map_err(|_| Problem::audit_unavailable())?;
    Ok(r.filter(|r| {
        (r.requester.issuer == p.issuer && r.requester.subject == p.subject) || is_auditor(state, p)
    }))
}

fn held_view(r: &ReviewRecord, kept: bool) -> ExecutionView {
    let status = r.effective_status(Utc::now());
    let mut next_actions = flow::next_actions(r, status);
    let mut next = flow::next_prose(r, status);
    if kept {
        next_actions.push(result_action(&r.execution_id));
        next = format!(
            "{next}; its result is kept: GET /v1/executions/{}/result",
            r.execution_id
        );
    }
    ExecutionView {
        execution_id: r.execution_id.clone(),
        review_id: Some(r.id.clone()),
        status: status.into(),
        connection: r.connection.clone(),
        operation: if r.request.is_command() {
            "exec"
        } else {
            "query"
        }
        .into(),
        rule: Some(r.rule.clone()),
        expires_at: Some(r.expires_at),
        run_deadline: r.run_deadline,
        rejection_reason: r.rejection.as_ref().map(|x| x.reason.clone()),
        result: r.result.clone(),
        problem: None,
        approvals: r.approvals.clone(),
        next,
        next_actions,
    }
}

fn result_action(id: &str) -> NextAction {
    NextAction {
        rel: "result",
        method: "GET",
        href: format!("{}/result", flow::execution_href(id)),
        description: "the result, as it was sent (kept for a while)".into(),
    }
}

/// A job as `viewer` sees it: its requester sees the problem it failed with; an auditor
/// sees only its code (the detail can quote data the requester's masking let through).
fn job_view(id: &str, s: &ExecutionState, viewer: &Principal) -> ExecutionView {
    let status = s.status();
    let own = s.begin.principal.as_ref().map(AuditPrincipal::owner_key)
        == Some(AuditPrincipal::from(viewer).owner_key());
    let problem = match &s.kept {
        Some(crate::gateway::results::Kept::Failed { problem }) if own => Some(problem.clone()),
        Some(crate::gateway::results::Kept::Failed { problem }) => Some(serde_json::json!({
            "code": problem["code"],
            "status": problem["status"],
            "detail": "withheld: only the requester sees why its job failed",
        })),
        _ => None,
    };
    let (next, next_actions) = match status {
        ExecutionStatus::Running => (
            format!(
                "it is running: GET /v1/executions/{id}?wait=55 waits for it to end; POST /v1/executions/{id}/cancel stops it"
            ),
            jobs::job_actions(id),
        ),
        _ if s.kept.is_some() && problem.is_none() => (
            format!("it is done: GET /v1/executions/{id}/result"),
            vec![result_action(id)],
        ),
        ExecutionStatus::Interrupted => (
            "the server stopped while it ran: it did not finish; check the target before sending it again".into(),
            Vec::new(),
        ),
        _ => ("it is over; see `problem` or `result`".into(), Vec::new()),
    };
    let end = s.end.as_ref();
    ExecutionView {
        execution_id: id.to_string(),
        review_id: None,
        status,
        connection: s.begin.connection.clone().unwrap_or_default(),
        operation: s.begin.operation.clone(),
        rule: s.begin.rule.clone(),
        expires_at: None,
        run_deadline: None,
        rejection_reason: None,
        result: end.map(|e| {
            serde_json::json!({
                "outcome": e.outcome,
                "row_count": e.row_count.unwrap_or(0),
                "error_class": e.error_class,
                "sqlstate": e.sqlstate,
            })
        }),
        problem,
        approvals: Vec::new(),
        next,
        next_actions,
    }
}

/// Get an execution's state
///
/// For the execution's requester (and auditors); anyone else gets 404 `not_found`. Poll it
/// after a 202 (held for review, or running as a job), or long-poll with `?wait=SECONDS`:
/// the answer comes as soon as a pending review is decided or a running execution ends.
/// Then act on `status` and `next_actions`: `approved` → run it; `rejected` → change the
/// request as `rejection_reason` says and send it again; `expired` → send it again; `done`
/// → fetch the `result` if it is kept; `failed` / `cancelled` / `interrupted` / `unknown` →
/// it is over (`problem` says why).
#[utoipa::path(get, path = "/v1/executions/{id}", tag = "executions", operation_id = "getExecution",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Execution id (`execution_id` of a 202)", example = "0190f5c2-7a4e-7c3b-9f2a-5d1e8b6a4c21"), WaitParams),
    responses((status = 200, description = "The execution's state and what to do next.", body = ExecutionView)))]
pub(crate) async fn execution(
    State(state): State<Arc<AppState>>,
    Auth(p): Auth,
    ApiPath(id): ApiPath,
    wait: Result<Query<WaitParams>, QueryRejection>,
) -> Result<Json<ExecutionView>, Problem> {
    let wait = super::query::hold_options(wait, &HeaderMap::new())?.wait;
    execution_view(&state, &p, &id, wait).await.map(Json)
}

/// Execution `id` as `p` may see it, after waiting up to `wait` for a pending review's
/// decision or a running execution's end.
pub(crate) async fn execution_view(
    state: &AppState,
    p: &Principal,
    id: &str,
    wait: Option<std::time::Duration>,
) -> Result<ExecutionView, Problem> {
    let id = id.to_string();
    let wait = wait.filter(|w| !w.is_zero());
    let gateway = &state.gateway;
    // A long poll holds one of the caller's slots while it waits, like any request: a
    // principal cannot park thousands of waiters on the server.
    let _slot = match wait {
        Some(_) => Some(
            gateway
                .slots
                .acquire(p)
                .map_err(|problem| problem.with("rule", "principal-concurrency"))?,
        ),
        None => None,
    };
    if let Some(mut r) = review_of(state, p, &id).await? {
        // `?wait=`: answers as soon as a pending review is decided or a run ends.
        let initial = r.effective_status(Utc::now());
        if let Some(wait) = wait
            && matches!(initial, ReviewStatus::Pending | ReviewStatus::Running)
        {
            r = flow::wait_while(gateway, &id, wait, |s| s == initial).await?;
        }
        let kept = crate::gateway::results::fetch(gateway, &id, &r.requester.owner_key())
            .await?
            .is_some();
        return Ok(held_view(&r, kept));
    }
    let auditor = is_auditor(state, p);
    let found = match wait {
        Some(wait) => jobs::wait_state(gateway, &id, p, auditor, wait).await?,
        None => jobs::state(gateway, &id, p, auditor).await?,
    };
    let s = found.ok_or_else(|| not_found(&id))?;
    Ok(job_view(&id, &s, p))
}

/// What running an approved request answers: the original request's result — a query's
/// (`QueryResponse`) or a command's (`ExecResponse`).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[schema(example = json!({"execution_id": "0190f5c2-7a4e-7c3b-9f2a-5d1e8b6a4c21", "rule": "writes-need-review", "columns": [], "rows": [], "row_count": 0, "truncated": false, "affected_rows": 1, "masked": {"columns": {}, "detectors": {}}, "limits": {"max_rows": 1000, "max_bytes": 10485760, "timeout_ms": 30000}, "duration_ms": 3}))]
#[allow(dead_code)]
pub(crate) enum RunResult {
    Query(super::query::QueryResponse),
    Command(super::exec::ExecResponse),
}

/// Run an approved execution once
///
/// Only its original requester (same issuer, subject and delegation chain), with no body:
/// it runs exactly the stored, approved request, re-admitted against the current policy and
/// connection (409 `approval_stale` if anything changed). It answers like the original
/// request (query result or command output; NDJSON with `Accept: application/x-ndjson`;
/// a job with `Prefer: respond-async` or past the sync budget). With `?wait=SECONDS` it
/// first waits for a pending review's decision. 409 `review_pending`: not approved yet;
/// 409 `already_ran`: it ran once already (its outcome is in `GET /v1/executions/{id}`);
/// 422 / 410: rejected / expired, send the request again.
#[utoipa::path(post, path = "/v1/executions/{id}/run", tag = "executions", operation_id = "runApproved",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Execution id (`execution_id` of a 202)", example = "0190f5c2-7a4e-7c3b-9f2a-5d1e8b6a4c21"), WaitParams),
    responses((status = 200, description = "It ran: the result as for the original request (`QueryResponse` for a query, `ExecResponse` for a command), or an NDJSON stream on request.",
               content((RunResult = "application/json"), (String = "application/x-ndjson"))),
              (status = 202, description = "Still pending with `?wait=` (a `HeldView`), or running on as a job (`Prefer: respond-async`, or past the sync budget: a `JobView`); poll the `Location`.", body = super::query::Accepted,
               headers(("Location" = String, description = "The execution: `/v1/executions/{execution_id}`")))))]
pub(crate) async fn run(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
    RequestId(request_id): RequestId,
    ApiPath(id): ApiPath,
    wait: Result<Query<WaitParams>, QueryRejection>,
    headers: HeaderMap,
    _: NoBody,
) -> Result<Response, Problem> {
    let delivery = Delivery {
        ndjson: super::query::wants_ndjson(&headers),
        respond_async: super::query::wants_async(&headers),
    };
    let hold = crate::gateway::review::HoldOptions {
        wait: super::query::hold_options(wait, &HeaderMap::new())?.wait,
        idempotency_key: None,
    };
    let caller = Caller {
        principal,
        request_id,
    };
    let request =
        Request::new(caller, "", Action::RunApproved { execution_id: id }).with_hold(hold);
    super::query::answer(&state, request, delivery).await
}

/// Get an execution's kept result
///
/// The result of a job (or of an approved run), exactly as its requester was (or would
/// have been) sent it, masked: a `QueryResponse` or `ExecResponse`, or NDJSON with
/// `Accept: application/x-ndjson`. Only the requester may read it; it is kept for
/// `jobs.result_ttl_secs` (approved runs: the run window). A job that failed answers the
/// problem it failed with. 409 `still_running` (with `Retry-After`) while it runs; 410
/// `result_not_kept` when it is over and nothing is kept (expired, too large, or streamed).
#[utoipa::path(get, path = "/v1/executions/{id}/result", tag = "executions", operation_id = "getExecutionResult",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Execution id", example = "0190f5c2-7a4e-7c3b-9f2a-5d1e8b6a4c21")),
    responses((status = 200, description = "The result as it was sent, or an NDJSON stream on request.",
               content((RunResult = "application/json"), (String = "application/x-ndjson")))))]
pub(crate) async fn result(
    State(state): State<Arc<AppState>>,
    Auth(p): Auth,
    ApiPath(id): ApiPath,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let kept = kept_result(&state, &p, &id).await?;
    if super::query::wants_ndjson(&headers) {
        super::query::respond(kept.into_answer()?)
    } else {
        super::query::kept_response(kept)
    }
}

/// The kept result of `p`'s execution `id`, or why there is none.
pub(crate) async fn kept_result(
    state: &AppState,
    p: &Principal,
    id: &str,
) -> Result<crate::gateway::results::Kept, Problem> {
    let id = id.to_string();
    let gateway = &state.gateway;
    let requester = AuditPrincipal::from(p).owner_key();
    if let Some(kept) = crate::gateway::results::fetch(gateway, &id, &requester).await? {
        return Ok(kept);
    }
    // Nothing kept: say why, to its requester only.
    let status = match review_of(state, p, &id).await? {
        Some(r) if r.requester.owner_key() == requester => r.effective_status(Utc::now()).into(),
        Some(_) => return Err(not_found(&id)),
        None => match jobs::state(gateway, &id, p, false).await? {
            Some(s) => s.status(),
            None => return Err(not_found(&id)),
        },
    };
    Err(match status {
        ExecutionStatus::Running
        | ExecutionStatus::PendingReview
        | ExecutionStatus::Approved => Problem::new(
            Code::StillRunning,
            format!(
                "it has not finished (status `{}`): GET /v1/executions/{id}?wait=55 waits for it",
                serde_json::to_value(status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            ),
        )
        .retry_after(1),
        _ => Problem::new(
            Code::ResultNotKept,
            "no result is kept for it: it expired, was larger than the server keeps, was streamed, or the execution did not produce one; GET /v1/executions/{id} has its outcome",
        ),
    }
    .with("execution_id", id))
}

/// Cancel a running job
///
/// For its requester: the job's output is dropped, which cancels its statement (or
/// command) on the target; from any instance sharing the store. Answers 202 with the
/// execution as it stands (still `running` until the cancel lands: long-poll it with
/// `?wait=`). 409 `already_ran` when it is not running (held requests are not jobs: a
/// reviewer rejects those).
#[utoipa::path(post, path = "/v1/executions/{id}/cancel", tag = "executions", operation_id = "cancelExecution",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Execution id", example = "0190f5c2-7a4e-7c3b-9f2a-5d1e8b6a4c21")),
    responses((status = 202, description = "The cancel is on its way; the execution as it stands.", body = ExecutionView)))]
pub(crate) async fn cancel(
    State(state): State<Arc<AppState>>,
    Auth(p): Auth,
    RequestId(request_id): RequestId,
    ApiPath(id): ApiPath,
    _: NoBody,
) -> Result<Response, Problem> {
    let view = cancel_job(&state, &p, request_id, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}

/// Cancels `p`'s running job `id` (audited first); the execution as it stands.
pub(crate) async fn cancel_job(
    state: &AppState,
    p: &Principal,
    request_id: Option<String>,
    id: &str,
) -> Result<ExecutionView, Problem> {
    let id = id.to_string();
    let gateway = &state.gateway;
    let Some(s) = jobs::state(gateway, &id, p, false).await? else {
        return Err(not_found(&id));
    };
    if s.status() != ExecutionStatus::Running {
        return Err(Problem::new(
            Code::AlreadyRan,
            "it is not running; GET /v1/executions/{id} has its outcome",
        )
        .with("execution_id", id));
    }
    // The cancel is on record before it takes effect, like every decision.
    let mut event = AuditEvent::new(Phase::Event, &id, "job.cancel");
    event.request_id = request_id;
    event.principal = Some(p.into());
    event.connection = s.begin.connection.clone();
    gateway
        .audit
        .commit(event)
        .await
        .map_err(|_| Problem::audit_unavailable())?;
    jobs::cancel(gateway, &id).await?;
    Ok(job_view(&id, &s, p))
}
