//! `GET /v1/audit`: the audit log for auditors, newest first, cursor-paginated.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::extract::Admin;
use super::problem::{Code, Problem, ProblemBody};
use super::state::AppState;
use crate::audit::AuditEvent;
use crate::store::AuditQuery;

const MAX_LIMIT: usize = 1000;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    pub(crate) connection: Option<String>,
    /// Configured issuer name.
    pub(crate) issuer: Option<String>,
    pub(crate) subject: Option<String>,
    /// `ok`, `denied`, `error`, `timeout`, `cancelled`, `interrupted`.
    pub(crate) outcome: Option<String>,
    pub(crate) execution_id: Option<String>,
    /// RFC 3339; inclusive.
    pub(crate) since: Option<DateTime<Utc>>,
    /// RFC 3339; exclusive.
    pub(crate) until: Option<DateTime<Utc>>,
    /// `next_cursor` of the previous page.
    pub(crate) cursor: Option<String>,
    /// 1..=1000, default 100.
    pub(crate) limit: Option<usize>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct AuditPage {
    pub(crate) events: Vec<AuditEvent>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) next_cursor: Option<String>,
}

/// Audit events, newest first. Only for principals listed in `audit.readers`.
#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    security(("bearer" = [])),
    params(AuditParams),
    responses((status = 200, description = "A page of events", body = AuditPage),
              (status = 400, description = "Bad filter", body = ProblemBody, content_type = "application/problem+json"),
              (status = 401, description = "Missing or invalid token", body = ProblemBody, content_type = "application/problem+json"),
              (status = 403, description = "Not an auditor", body = ProblemBody, content_type = "application/problem+json"),
              (status = 503, description = "Audit store unavailable", body = ProblemBody, content_type = "application/problem+json")))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Admin(_admin): Admin,
    query: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditPage>, Problem> {
    let Query(q) = query.map_err(|e| Problem::new(Code::InvalidQuery, e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(Problem::new(
            Code::InvalidQuery,
            format!("limit must be in 1..={MAX_LIMIT}"),
        ));
    }
    let before_seq = q
        .cursor
        .map(|c| {
            c.parse::<i64>().map_err(|_| {
                Problem::new(Code::InvalidQuery, "cursor is not one this server issued")
            })
        })
        .transpose()?;
    let events = state
        .gateway
        .store
        .query_audit(&AuditQuery {
            connection: q.connection,
            issuer: q.issuer,
            subject: q.subject,
            outcome: q.outcome,
            execution_id: q.execution_id,
            since: q.since,
            until: q.until,
            before_seq,
            limit,
        })
        .await
        .map_err(|_| Problem::audit_unavailable())?;
    let next_cursor = (events.len() == limit)
        .then(|| events.last().and_then(|e| e.seq).map(|s| s.to_string()))
        .flatten();
    Ok(Json(AuditPage {
        events,
        next_cursor,
    }))
}
