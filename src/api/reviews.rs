//! Human review: `GET /v1/reviews`, `GET /v1/reviews/{id}`, `POST /v1/reviews/{id}/approve`,
//! `POST /v1/reviews/{id}/reject`. The agent's side is in `executions.rs`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, ApiPath, Auth, OptionalJson};
use super::problem::{Code, Problem};
use super::state::AppState;
use crate::audit::AuditPrincipal;
use crate::gateway::review::{self as flow, Verdict};
use crate::identity::Principal;
use crate::inspect::Facts;
use crate::review::{Approval, ExecutionStatus, Rejection, ReviewRecord};
use crate::store::ReviewLookup;

/// A held request and its review, as a reviewer (or auditor) sees it.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"id": "0190f5c2-7a52-7d10-8e4b-2b9c1f0d3e57", "execution_id": "0190f5c2-7a4e-7c3b-9f2a-5d1e8b6a4c21", "status": "pending_review", "requester": {"issuer": "dev", "subject": "agent-1", "kind": "agent", "groups": ["agents"], "actor": []}, "connection": "demo", "statement": "UPDATE customers SET city = ? WHERE id = ?", "statement_visible": "UPDATE customers SET city = ? WHERE id = ?", "params": ["Lyon", 42], "max_rows": 1000, "timeout_ms": 30000, "facts": {"statement_count": 1, "kinds": ["update"], "unparsed": false, "tables_read": ["customers"], "tables_written": ["customers"], "missing_where": false, "functions": [], "function_classes": []}, "rule": "writes-need-review", "message": "writes need a DBA", "approver_groups": ["dba"], "min_approvals": 1, "approvals": [], "created_at": "2025-01-01T12:00:00Z", "expires_at": "2025-01-01T13:00:00Z"}))]
pub(crate) struct ReviewView {
    /// The review's id (for approve and reject).
    pub(crate) id: String,
    /// The held execution's id (the requester's handle on it).
    pub(crate) execution_id: String,
    /// Where it stands, in the one state vocabulary of the API.
    pub(crate) status: ExecutionStatus,
    /// Who asked.
    pub(crate) requester: AuditPrincipal,
    /// The connection it runs on.
    pub(crate) connection: String,
    /// The statement exactly as it will run.
    pub(crate) statement: String,
    /// The same with control and invisible characters made visible (`\u{202e}`).
    pub(crate) statement_visible: String,
    /// The parameter values that will be sent, with the connection's content detectors
    /// applied to their text unless the viewer is exempt from masking.
    #[schema(value_type = Vec<serde_json::Value>)]
    pub(crate) params: Vec<serde_json::Value>,
    /// HTTP API requests: the request as it will be sent (the body with the viewer's
    /// masking applied, as `params` are).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) http: Option<crate::inspect::NormalizedHttp>,
    /// The row cap the run will have (0 for commands and HTTP requests).
    pub(crate) max_rows: u64,
    /// The timeout the run will have, in milliseconds.
    pub(crate) timeout_ms: u64,
    /// What inspection found in the statement or command (kinds, tables, functions, ...).
    pub(crate) facts: Facts,
    /// The policy rule that sent it to review.
    pub(crate) rule: String,
    /// The rule's message for reviewers.
    pub(crate) message: String,
    /// Groups whose members may decide it (glob patterns).
    pub(crate) approver_groups: Vec<String>,
    /// Approvals needed before it may run.
    pub(crate) min_approvals: u32,
    /// Approvals so far.
    pub(crate) approvals: Vec<Approval>,
    /// A write affecting more rows than this is rolled back when it runs (the tightest any
    /// approver set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_affected_rows: Option<u64>,
    /// Who rejected it and why, once `rejected`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rejection: Option<Rejection>,
    /// When it was filed.
    pub(crate) created_at: DateTime<Utc>,
    /// When it expires if nobody decides it.
    pub(crate) expires_at: DateTime<Utc>,
    /// Once approved: the run must start before this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) run_deadline: Option<DateTime<Utc>>,
    /// Once run: a summary (`outcome`, `row_count`, `error_class`, `sqlstate`).
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
        status: r.effective_status(Utc::now()).into(),
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
        http: r.request.http.as_ref().map(|h| {
            let mut shown = h.clone();
            shown.body = h.body.as_ref().map(|b| {
                masking.body_for_audit(
                    h.content_type.as_deref(),
                    b.as_bytes(),
                    &mut Default::default(),
                )
            });
            shown
        }),
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

/// Reviews the caller may decide (all, for auditors): pending first, then newest.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"reviews": [{"id": "0190f5c2-7a52-7d10-8e4b-2b9c1f0d3e57", "execution_id": "0190f5c2-7a4e-7c3b-9f2a-5d1e8b6a4c21", "status": "pending_review", "requester": {"issuer": "dev", "subject": "agent-1", "kind": "agent", "groups": ["agents"], "actor": []}, "connection": "demo", "statement": "UPDATE customers SET city = ? WHERE id = ?", "statement_visible": "UPDATE customers SET city = ? WHERE id = ?", "params": ["Lyon", 42], "max_rows": 1000, "timeout_ms": 30000, "facts": {"statement_count": 1, "kinds": ["update"], "unparsed": false, "tables_read": ["customers"], "tables_written": ["customers"], "missing_where": false, "functions": [], "function_classes": []}, "rule": "writes-need-review", "message": "writes need a DBA", "approver_groups": ["dba"], "min_approvals": 1, "approvals": [], "created_at": "2025-01-01T12:00:00Z", "expires_at": "2025-01-01T13:00:00Z"}]}))]
pub(crate) struct ReviewList {
    /// At most `limit` reviews.
    pub(crate) reviews: Vec<ReviewView>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReviewListParams {
    /// Only reviews in this state (`pending` is accepted for `pending_review`). No other
    /// query parameter than `status` and `limit` is accepted.
    pub(crate) status: Option<ExecutionStatus>,
    /// How many reviews at most, 1..=500 (default 100).
    #[param(minimum = 1, maximum = 500, example = 100)]
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

/// List reviews you may decide
///
/// For reviewers (members of a review's approver groups) and auditors (`audit.readers`, who
/// see every review). Pending reviews come first, then the newest. Other callers get an
/// empty list. Filter with `status=pending_review` to find work; then `GET
/// /v1/reviews/{id}` and approve or reject.
#[utoipa::path(get, path = "/v1/reviews", tag = "reviews", operation_id = "listReviews",
    security(("bearer" = [])),
    params(ReviewListParams),
    responses((status = 200, description = "The reviews visible to you.", body = ReviewList)))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Auth(p): Auth,
    query: Result<Query<ReviewListParams>, QueryRejection>,
) -> Result<Json<ReviewList>, Problem> {
    let Query(q) = query.map_err(|e| Problem::new(Code::InvalidQuery, e.body_text()))?;
    list_for(&state, &p, q).await.map(Json)
}

/// The reviews `p` may see (the API's and the console's list).
pub(crate) async fn list_for(
    state: &AppState,
    p: &Principal,
    q: ReviewListParams,
) -> Result<ReviewList, Problem> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 500 {
        return Err(Problem::new(Code::InvalidQuery, "limit must be in 1..=500"));
    }
    let auditor = is_auditor(state, p);
    let records = state
        .gateway
        .store
        .list_reviews(q.status.map(Into::into), limit)
        .await
        .map_err(|_| Problem::audit_unavailable())?;
    Ok(ReviewList {
        reviews: records
            .iter()
            .filter(|r| auditor || may_review(r, p))
            .map(|r| view(state, p, r))
            .collect(),
    })
}

/// Get one review
///
/// For the review's approvers and auditors; anyone else gets 404 `not_found`, as for a
/// review that does not exist. Shows the statement exactly as it will run (and with
/// invisible characters made visible), its parameters, the inspection facts and the rule:
/// read them before you approve.
#[utoipa::path(get, path = "/v1/reviews/{id}", tag = "reviews", operation_id = "getReview",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Review id (`review_id` of a held request)", example = "0190f5c2-7a52-7d10-8e4b-2b9c1f0d3e57")),
    responses((status = 200, description = "The review.", body = ReviewView)))]
pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    Auth(p): Auth,
    ApiPath(id): ApiPath,
) -> Result<Json<ReviewView>, Problem> {
    get_for(&state, &p, &id).await.map(Json)
}

/// One review, if `p` may see it.
pub(crate) async fn get_for(
    state: &AppState,
    p: &Principal,
    id: &str,
) -> Result<ReviewView, Problem> {
    let r = load(state, id).await?;
    if !(is_auditor(state, p) || may_review(&r, p)) {
        return Err(Problem::not_found(format!("no review `{id}`")));
    }
    Ok(view(state, p, &r))
}

/// An approval, optionally with a guard and a note. Unknown fields are refused (400
/// `malformed_body`); an empty body is the same as `{}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"max_affected_rows": 1, "comment": "one row only"}))]
pub(crate) struct ApproveRequest {
    /// A write that affects more rows than this is rolled back when it runs (the tightest
    /// guard any approver sets wins).
    #[schema(minimum = 0, example = 1)]
    #[serde(default, deserialize_with = "crate::wire::opt_count")]
    pub(crate) max_affected_rows: Option<u64>,
    /// A note for the requester (up to 2000 characters): shown on its execution and audited.
    #[schema(max_length = 2000)]
    pub(crate) comment: Option<String>,
}

/// A rejection. Unknown fields are refused (400 `malformed_body`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "add a WHERE clause on id"}))]
pub(crate) struct RejectRequest {
    /// Why; the agent reads it. 1 to 2000 characters once surrounding whitespace is trimmed
    /// (400 `invalid_reason` otherwise).
    #[schema(
        min_length = 1,
        max_length = 2000,
        pattern = "\\S",
        example = "add a WHERE clause on id"
    )]
    pub(crate) reason: String,
}

/// Approve a review
///
/// For humans in one of the review's approver groups who are neither the requester nor in
/// its delegation (`act`) chain (403 `not_an_approver` otherwise). Audited. Once
/// `min_approvals` approvals are in, the status becomes `approved` and the requester may
/// run it once before `run_deadline`; until then it stays `pending_review` (check
/// `approvals`). The body is optional.
#[utoipa::path(post, path = "/v1/reviews/{id}/approve", tag = "reviews", operation_id = "approveReview",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Review id", example = "0190f5c2-7a52-7d10-8e4b-2b9c1f0d3e57")),
    request_body(content = ApproveRequest, content_type = "application/json", description = "Optional; an empty body approves without a guard or comment."),
    responses((status = 200, description = "The review after this approval (`approved`, or still `pending_review` if more approvals are needed).", body = ReviewView)))]
pub(crate) async fn approve(
    State(state): State<Arc<AppState>>,
    Auth(p): Auth,
    ApiPath(id): ApiPath,
    OptionalJson(req): OptionalJson<ApproveRequest>,
) -> Result<Json<ReviewView>, Problem> {
    approve_as(&state, &p, &id, req).await.map(Json)
}

/// `p` approves review `id` (the API's and the console's approval).
pub(crate) async fn approve_as(
    state: &AppState,
    p: &Principal,
    id: &str,
    req: ApproveRequest,
) -> Result<ReviewView, Problem> {
    let comment = match req.comment.as_deref().map(str::trim) {
        Some(c) if c.chars().count() > 2000 => {
            return Err(Problem::new(
                Code::InvalidReason,
                "a comment is at most 2000 characters",
            ));
        }
        Some(c) if !c.is_empty() => Some(c.to_string()),
        _ => None,
    };
    let r = flow::decide(
        &state.gateway,
        id,
        p,
        Verdict::Approve {
            max_affected_rows: req.max_affected_rows,
            comment,
        },
    )
    .await?;
    Ok(view(state, p, &r))
}

/// Reject a review
///
/// For the same people who may approve it. Audited. The request never runs; the agent reads
/// `reason` (in `GET /v1/executions/{id}` and in the 422 `review_rejected` a waiting or
/// running request gets), so say what to change.
#[utoipa::path(post, path = "/v1/reviews/{id}/reject", tag = "reviews", operation_id = "rejectReview",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Review id", example = "0190f5c2-7a52-7d10-8e4b-2b9c1f0d3e57")),
    request_body(content = RejectRequest, content_type = "application/json", description = "The reason, for the agent."),
    responses((status = 200, description = "The rejected review.", body = ReviewView)))]
pub(crate) async fn reject(
    State(state): State<Arc<AppState>>,
    Auth(p): Auth,
    ApiPath(id): ApiPath,
    ApiJson(req): ApiJson<RejectRequest>,
) -> Result<Json<ReviewView>, Problem> {
    reject_as(&state, &p, &id, req).await.map(Json)
}

/// `p` rejects review `id` (the API's and the console's rejection).
pub(crate) async fn reject_as(
    state: &AppState,
    p: &Principal,
    id: &str,
    req: RejectRequest,
) -> Result<ReviewView, Problem> {
    let reason = req.reason.trim();
    if reason.is_empty() || reason.chars().count() > 2000 {
        return Err(Problem::new(
            Code::InvalidReason,
            "give a reason of 1 to 2000 characters; the agent reads it",
        ));
    }
    let r = flow::decide(
        &state.gateway,
        id,
        p,
        Verdict::Reject {
            reason: reason.to_string(),
        },
    )
    .await?;
    Ok(view(state, p, &r))
}
