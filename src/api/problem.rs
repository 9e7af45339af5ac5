//! Problems on the HTTP wire: `application/problem+json` with `Retry-After` when known.
//! The body itself is built in one place, [`crate::gateway::problem::Problem::to_body`].

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub(crate) use crate::gateway::problem::{Code, Problem};

pub(crate) const CONTENT_TYPE: &str = "application/problem+json";

/// An RFC 9457 problem: every refusal and failure, as `application/problem+json` (NDJSON
/// trailers and WebSocket error frames nest the same object under `problem`). Branch on
/// `code`; `detail` says what to do, in words. The extension members below are present when
/// they apply; others may be added, so ignore members you do not know.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"type": "urn:airlock:problem:policy_denied", "title": "Forbidden", "status": 403, "detail": "DDL is not allowed for agents", "code": "policy_denied", "rule": "deny-ddl", "execution_id": "0190f5c2-7a4e-7c3b-9f2a-5d1e8b6a4c21"}))]
pub(crate) struct ProblemBody {
    /// `urn:airlock:problem:<code>`.
    #[serde(rename = "type")]
    #[schema(example = "urn:airlock:problem:policy_denied")]
    pub(crate) type_uri: String,
    /// Short, human-readable summary of the problem type; fixed per `code`.
    #[schema(example = "Forbidden")]
    pub(crate) title: String,
    /// The HTTP status code, as on the response (fixed per `code`).
    #[schema(minimum = 400, maximum = 599, example = 403)]
    pub(crate) status: u16,
    /// What happened and what to do about it, for this occurrence.
    #[schema(example = "DDL is not allowed for agents")]
    pub(crate) detail: String,
    /// Stable machine-readable name of the problem.
    pub(crate) code: Code,
    /// The policy rule (or built-in check: `limits`, `inspect`, `single-statement`,
    /// `principal-concurrency`, `masking-strict`, ...) that decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "deny-ddl")]
    pub(crate) rule: Option<String>,
    /// The execution this problem belongs to, in the audit log (and, for held requests,
    /// `GET /v1/executions/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "0190f5c2-7a4e-7c3b-9f2a-5d1e8b6a4c21")]
    pub(crate) execution_id: Option<String>,
    /// The held request's review, for review outcomes.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "0190f5c2-7a52-7d10-8e4b-2b9c1f0d3e57")]
    pub(crate) review_id: Option<String>,
    /// The recorded session of a command (`GET /v1/sessions/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) session_id: Option<String>,
    /// Database errors (`database_error`, `database_conflict`, `read_only`,
    /// `database_permission`, `backend_unavailable`): SQLSTATE, message, detail, hint,
    /// position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) database: Option<crate::backend::DatabaseError>,
    /// The same request may succeed if retried (`database_conflict`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) retryable: Option<bool>,
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.to_body()).unwrap_or_else(|_| b"{}".to_vec());
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}
