//! Human review: `GET /v1/reviews`, `GET /v1/reviews/{id}`, `POST /v1/reviews/{id}/approve`,
//! `POST /v1/reviews/{id}/reject`; and the agent's side: `GET /v1/executions/{id}`,
//! `POST /v1/executions/{id}/run`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, Auth, NoBody, OptionalJson, RequestId};
use super::problem::{Code, Problem, ProblemBody};
use super::state::AppState;
use crate::audit::AuditPrincipal;
use crate::gateway::admit::Action;
use crate::gateway::review::{self as flow, Verdict};
use crate::gateway::{Caller, Request};
use crate::identity::Principal;
use crate::inspect::Facts;
use crate::review::{Approval, Rejection, ReviewRecord, ReviewStatus};
use crate::store::ReviewLookup;

/// A review as a reviewer sees it.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ReviewView {
    pub(crate) id: String,
    pub(crate) execution_id: String,
    pub(crate) status: ReviewStatus,
    pub(crate) requester: AuditPrincipal,
    pub(crate) connection: String,
    /// The statement exactly as it will run.
    pub(crate) statement: String,
    /// The same with control and invisible characters made visible (`\u{202e}`).
    pub(crate) statement_visible: String,
    /// The parameter values that will be sent, with the connection's content detectors
    /// applied to their text unless the viewer is exempt from masking.
    #[schema(value_type = Vec<serde_json::Value>)]
    pub(crate) params: Vec<serde_json::Value>,
    pub(crate) max_rows: u64,
    pub(crate) timeout_ms: u64,
    pub(crate) facts: Facts,
    pub(crate) rule: String,
    pub(crate) message: String,
    pub(crate) approver_groups: Vec<String>,
    pub(crate) min_approvals: u32,
    pub(crate) approvals: Vec<Approval>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_affected_rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rejection: Option<Rejection>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) expires_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) run_deadline: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) result: Option<serde_json::Value>,
}

/// A parameter as a viewer may see it: string leaves pass the viewer's masking.
fn shown_param(
    v: &serde_json::Value,
    masking: &crate::mask::plan::RequestMasking,
) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(masking.text(s, &mut Default::default())),
        Value::Array(items) => {
            Value::Array(items.iter().map(|i| shown_param(i, masking)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), shown_param(v, masking)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A review as `viewer` sees it.
pub(crate) fn view(state: &AppState, viewer: &Principal, r: &ReviewRecord) -> ReviewView {
    let masking = state.gateway.masking.for_request(viewer, &r.connection);
    ReviewView {
        id: r.id.clone(),
        execution_id: r.execution_id.clone(),
        status: r.effective_status(Utc::now()),
        requester: r.requester.clone(),
        connection: r.connection.clone(),
        statement: r.request.sql.clone(),
        statement_visible: crate::review::visible(&r.request.sql),
        params: r
            .request
            .params
            .iter()
            .map(|p| shown_param(p, &masking))
            .collect(),
        max_rows: r.request.max_rows,
        timeout_ms: r.request.timeout_ms,
        facts: r.facts.clone(),
        rule: r.rule.clone(),
        message: r.message.clone(),
        approver_groups: r.approver_groups.clone(),
        min_approvals: r.min_approvals,
        approvals: r.approvals.clone(),
        max_affected_rows: r.max_affected_rows,
        rejection: r.rejection.clone(),
        created_at: r.created_at,
        expires_at: r.expires_at,
        run_deadline: r.run_deadline,
        result: r.result.clone(),
    }
}

fn is_auditor(state: &AppState, p: &Principal) -> bool {
    state.is_admin(p)
}

fn may_review(r: &ReviewRecord, p: &Principal) -> bool {
    p.groups
        .iter()
        .any(|g| r.approver_groups.iter().any(|a| crate::glob::matches(a, g)))
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ReviewList {
    pub(crate) reviews: Vec<ReviewView>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReviewListParams {
    /// `pending`, `approved`, `rejected`, `expired`, `running`, `done`, `failed`, `unknown`.
    pub(crate) status: Option<ReviewStatus>,
    /// 1..=500, default 100.
    pub(crate) limit: Option<usize>,
}

async fn load(state: &AppState, id: &str) -> Result<ReviewRecord, Problem> {
    state
        .gateway
        .store
        .get_review(ReviewLookup::Id(id))
        .await
        .map_err(|_| Problem::audit_unavailable())?
        .ok_or_else(|| Problem::not_found(format!("no review `{id}`")))
}

/// Reviews the caller may decide (or all, for auditors): pending first, then newest.
#[utoipa::path(get, path = "/v1/reviews", tag = "reviews",
    security(("bearer" = [])),
    params(ReviewListParams),
    responses((status = 200, description = "Reviews", body = ReviewList),
              (status = 400, description = "Bad filter", body = ProblemBody, content_type = "application/problem+json"),
              (status = 401, description = "Missing or invalid token", body = ProblemBody, content_type = "application/problem+json")))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Auth(p): Auth,
    query: Result<Query<ReviewListParams>, QueryRejection>,
) -> Result<Json<ReviewList>, Problem> {
    let Query(q) = query.map_err(|e| Problem::new(Code::InvalidQuery, e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 500 {
        return Err(Problem::new(Code::InvalidQuery, "limit must be in 1..=500"));
    }
    let auditor = is_auditor(&state, &p);
    let records = state
        .gateway
        .store
        .list_reviews(q.status, limit)
        .await
        .map_err(|_| Problem::audit_unavailable())?;
    Ok(Json(ReviewList {
        reviews: records
            .iter()
            .filter(|r| auditor || may_review(r, &p))
            .map(|r| view(&state, &p, r))
            .collect(),
    }))
}

/// One review, for its approvers and auditors.
#[utoipa::path(get, path = "/v1/reviews/{id}", tag = "reviews",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Review id")),
    responses((status = 200, description = "The review", body = ReviewView),
              (status = 401, description = "Missing or invalid token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "No such review visible to you", body = ProblemBody, content_type = "application/problem+json")))]
pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<ReviewView>, Problem> {
    let r = load(&state, &id).await?;
    if !(is_auditor(&state, &p) || may_review(&r, &p)) {
        return Err(Problem::not_found(format!("no review `{id}`")));
    }
    Ok(Json(view(&state, &p, &r)))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApproveRequest {
    /// A write that affects more rows than this is rolled back when it runs.
    pub(crate) max_affected_rows: Option<u64>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RejectRequest {
    /// Why; the agent reads it.
    pub(crate) reason: String,
}

/// Approve (humans in an approver group; not the requester or its delegators).
#[utoipa::path(post, path = "/v1/reviews/{id}/approve", tag = "reviews",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Review id")),
    request_body(content = ApproveRequest, description = "Optional; an empty body approves without a guard"),
    responses((status = 200, description = "The review after this approval", body = ReviewView),
              (status = 401, description = "Missing or invalid token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 403, description = "Not allowed to approve this review", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "No such review", body = ProblemBody, content_type = "application/problem+json"),
              (status = 409, description = "Already decided, or already approved by you", body = ProblemBody, content_type = "application/problem+json"),
              (status = 410, description = "Expired", body = ProblemBody, content_type = "application/problem+json")))]
pub(crate) async fn approve(
    State(state): State<Arc<AppState>>,
    Auth(p): Auth,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<ApproveRequest>,
) -> Result<Json<ReviewView>, Problem> {
    let r = flow::decide(
        &state.gateway,
        &id,
        &p,
        Verdict::Approve {
            max_affected_rows: req.max_affected_rows,
        },
    )
    .await?;
    Ok(Json(view(&state, &p, &r)))
}

/// Reject with a reason the agent can read.
#[utoipa::path(post, path = "/v1/reviews/{id}/reject", tag = "reviews",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Review id")),
    request_body = RejectRequest,
    responses((status = 200, description = "The rejected review", body = ReviewView),
              (status = 400, description = "Missing reason", body = ProblemBody, content_type = "application/problem+json"),
              (status = 401, description = "Missing or invalid token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 403, description = "Not allowed to decide this review", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "No such review", body = ProblemBody, content_type = "application/problem+json"),
              (status = 409, description = "Already decided", body = ProblemBody, content_type = "application/problem+json"),
              (status = 410, description = "Expired", body = ProblemBody, content_type = "application/problem+json")))]
pub(crate) async fn reject(
    State(state): State<Arc<AppState>>,
    Auth(p): Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<RejectRequest>,
) -> Result<Json<ReviewView>, Problem> {
    let reason = req.reason.trim();
    if reason.is_empty() || reason.len() > 2000 {
        return Err(Problem::new(
            Code::InvalidReason,
            "give a reason of 1 to 2000 characters; the agent reads it",
        ));
    }
    let r = flow::decide(
        &state.gateway,
        &id,
        &p,
        Verdict::Reject {
            reason: reason.to_string(),
        },
    )
    .await?;
    Ok(Json(view(&state, &p, &r)))
}

/// An execution as its requester sees it.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ExecutionView {
    pub(crate) execution_id: String,
    pub(crate) review_id: String,
    /// `pending_review`, `approved`, `rejected`, `expired`, `running`, `done`, `failed`, `unknown`.
    pub(crate) status: String,
    pub(crate) connection: String,
    pub(crate) rule: String,
    pub(crate) expires_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) run_deadline: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rejection_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) result: Option<serde_json::Value>,
    /// What to do next.
    pub(crate) next: String,
}

/// The state of a held execution (its requester, or auditors).
#[utoipa::path(get, path = "/v1/executions/{id}", tag = "reviews",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Execution id")),
    responses((status = 200, description = "The execution", body = ExecutionView),
              (status = 401, description = "Missing or invalid token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "No such execution of yours", body = ProblemBody, content_type = "application/problem+json")))]
pub(crate) async fn execution(
    State(state): State<Arc<AppState>>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<ExecutionView>, Problem> {
    let not_found = || Problem::not_found(format!("no execution `{id}` of yours"));
    let r = state
        .gateway
        .store
        .get_review(ReviewLookup::Execution(&id))
        .await
        .map_err(|_| Problem::audit_unavailable())?
        .ok_or_else(not_found)?;
    let own = r.requester.issuer == p.issuer && r.requester.subject == p.subject;
    if !(own || is_auditor(&state, &p)) {
        return Err(not_found());
    }
    let status = r.effective_status(Utc::now());
    let next = match status {
        ReviewStatus::Pending => "wait for a reviewer; poll this resource".to_string(),
        ReviewStatus::Approved => format!("POST /v1/executions/{id}/run (no body) to run it once"),
        ReviewStatus::Rejected => {
            "rejected: change the request as the reason says and send it again".into()
        }
        ReviewStatus::Expired => "expired: send the request again to file a new review".into(),
        _ => "it ran (or was cut short); it cannot run again".into(),
    };
    Ok(Json(ExecutionView {
        execution_id: r.execution_id.clone(),
        review_id: r.id.clone(),
        status: match status {
            ReviewStatus::Pending => "pending_review".into(),
            s => s.as_str().into(),
        },
        connection: r.connection.clone(),
        rule: r.rule.clone(),
        expires_at: r.expires_at,
        run_deadline: r.run_deadline,
        rejection_reason: r.rejection.as_ref().map(|x| x.reason.clone()),
        result: r.result.clone(),
        next,
    }))
}

/// Run an approved execution once, as its original requester. No body.
#[utoipa::path(post, path = "/v1/executions/{id}/run", tag = "reviews",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Execution id")),
    responses((status = 200, description = "The result, as for a query (NDJSON on request)", body = super::query::QueryResponse),
              (status = 401, description = "Missing or invalid token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 404, description = "No such execution of yours", body = ProblemBody, content_type = "application/problem+json"),
              (status = 409, description = "Not approved yet, already ran, or `approval_stale`", body = ProblemBody, content_type = "application/problem+json"),
              (status = 410, description = "Review or run window expired", body = ProblemBody, content_type = "application/problem+json"),
              (status = 422, description = "Rejected (reason in `detail`)", body = ProblemBody, content_type = "application/problem+json"),
              (status = 503, description = "Audit store or target unavailable; nothing ran", body = ProblemBody, content_type = "application/problem+json")))]
pub(crate) async fn run(
    State(state): State<Arc<AppState>>,
    Auth(principal): Auth,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    headers: HeaderMap,
    _: NoBody,
) -> Result<Response, Problem> {
    let ndjson = super::query::wants_ndjson(&headers);
    let caller = Caller {
        principal,
        request_id,
    };
    let request = Request::new(caller, "", Action::RunApproved { execution_id: id });
    let answer = crate::gateway::serve(&state.gateway, request).await?;
    super::query::respond(answer, ndjson).await
}
