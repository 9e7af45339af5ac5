//! `GET /v1/audit`: the audit log for auditors, newest first, cursor-paginated.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::extract::Admin;
use super::problem::{Code, Problem};
use super::state::AppState;
use crate::audit::AuditEvent;
use crate::store::AuditQuery;

const MAX_LIMIT: usize = 1000;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    /// Only events on this connection.
    pub(crate) connection: Option<String>,
    /// Only events of principals from this configured issuer (its name, not the `iss` URL).
    pub(crate) issuer: Option<String>,
    /// Only events of this subject (`sub`).
    pub(crate) subject: Option<String>,
    /// Only `end` events with this outcome (an unknown one is 400 `invalid_query`).
    pub(crate) outcome: Option<crate::audit::Outcome>,
    /// Only events of this execution.
    pub(crate) execution_id: Option<String>,
    /// RFC 3339 date-time; inclusive.
    pub(crate) since: Option<DateTime<Utc>>,
    /// RFC 3339 date-time; exclusive.
    pub(crate) until: Option<DateTime<Utc>>,
    /// `next_cursor` of the previous page (an opaque string of digits).
    #[param(pattern = "^[0-9]+$", example = "1042")]
    pub(crate) cursor: Option<String>,
    /// Events per page, 1..=1000 (default 100). No other query parameter is accepted.
    #[param(minimum = 1, maximum = 1000, example = 100)]
    pub(crate) limit: Option<usize>,
}

/// A page of audit events, newest first.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"events": [{"version": 1, "id": "0190f5c2-7a4f-7000-8000-000000000001", "seq": 1042, "time": "2025-01-01T12:00:00Z", "phase": "end", "execution_id": "0190f5c2-7a4e-7c3b-9f2a-5d1e8b6a4c21", "connection": "demo", "operation": "query", "outcome": "ok", "row_count": 2, "duration_ms": 4}], "next_cursor": "1042"}))]
pub(crate) struct AuditPage {
    /// At most `limit` events, newest first.
    pub(crate) events: Vec<AuditEvent>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) next_cursor: Option<String>,
}

/// List audit events
///
/// Only for administrators (principals listed in `audit.readers`; 403 `not_an_admin`
/// otherwise). Events come newest first, filtered by the parameters; every request has a
/// `begin` and an `end` event under its `execution_id`. Page with `cursor=next_cursor`
/// until `next_cursor` is absent.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", operation_id = "listAudit",
    security(("bearer" = [])),
    params(AuditParams),
    responses((status = 200, description = "A page of events, newest first.", body = AuditPage)))]
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Admin(_admin): Admin,
    query: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditPage>, Problem> {
    let Query(q) = query.map_err(|e| Problem::new(Code::InvalidQuery, e.body_text()))?;
    page(&state, q).await.map(Json)
}

/// A page of the audit log (the API's and the console's search); the caller checked that
/// the reader is an administrator.
pub(crate) async fn page(state: &AppState, q: AuditParams) -> Result<AuditPage, Problem> {
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
            outcome: q.outcome.map(|o| o.as_str().to_string()),
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
    Ok(AuditPage {
        events,
        next_cursor,
    })
}
