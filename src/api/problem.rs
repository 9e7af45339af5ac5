//! Problems on the HTTP wire: `application/problem+json` with `Retry-After` when known.
//! The body itself is built in one place, [`crate::gateway::problem::Problem::to_body`].

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub(crate) use crate::gateway::problem::{Code, Problem};

pub(crate) const CONTENT_TYPE: &str = "application/problem+json";

/// The wire shape, for the OpenAPI document.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ProblemBody {
    /// `urn:airlock:problem:<code>`
    #[serde(rename = "type")]
    pub(crate) type_uri: String,
    pub(crate) title: String,
    pub(crate) status: u16,
    pub(crate) detail: String,
    /// Stable machine-readable name of the problem.
    pub(crate) code: Code,
    /// The policy rule that decided, for policy outcomes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) execution_id: Option<String>,
    /// The held request's review, for review outcomes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) review_id: Option<String>,
    /// The recorded session of a command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) session_id: Option<String>,
    /// Database errors: SQLSTATE, message, detail, hint, position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) database: Option<crate::backend::DatabaseError>,
    /// The same request may succeed if retried.
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
