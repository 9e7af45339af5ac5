//! RFC 9457 problem details: every error the API returns is one of these.
//!
//! `type` is a stable URN (`urn:airlock:problem:<code>`) and `code` the same short name, so a
//! model or SDK can branch on it; `title` is for humans; `detail` says what to do.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::backend::BackendError;

pub const CONTENT_TYPE: &str = "application/problem+json";

#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub code: &'static str,
    pub title: &'static str,
    pub detail: String,
    /// Extension members (`rule`, `execution_id`, `sqlstate`, `retryable`, ...).
    pub extra: Map<String, Value>,
    pub retry_after: Option<u64>,
}

/// The wire shape, for the OpenAPI document.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ProblemBody {
    /// `urn:airlock:problem:<code>`
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable name of the problem.
    pub code: String,
    /// The policy rule that decided, for policy outcomes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    /// Database errors: SQLSTATE, message, detail, hint, position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<crate::backend::DatabaseError>,
    /// The same request may succeed if retried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            status,
            code,
            title,
            detail: detail.into(),
            extra: Map::new(),
            retry_after: None,
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Problem {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    pub fn retry_after(mut self, secs: u64) -> Problem {
        self.retry_after = Some(secs);
        self
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, code, "Bad request", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authentication required",
            detail,
        )
    }

    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::FORBIDDEN, code, "Forbidden", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not_found", "Not found", detail)
    }

    pub fn unknown_connection(name: &str) -> Problem {
        Problem::not_found(format!(
            "no connection named `{name}` is available to you; GET /v1/connections lists the ones you may use"
        ))
    }

    pub fn audit_unavailable() -> Problem {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            "Audit store unavailable",
            "the audit record could not be stored, so nothing was run; retry later",
        )
        .retry_after(2)
    }

    pub fn internal(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            detail,
        )
    }

    pub fn to_body(&self) -> Value {
        let mut body = Map::new();
        body.insert(
            "type".into(),
            format!("urn:airlock:problem:{}", self.code).into(),
        );
        body.insert("title".into(), self.title.into());
        body.insert("status".into(), self.status.as_u16().into());
        body.insert("detail".into(), self.detail.clone().into());
        body.insert("code".into(), self.code.into());
        for (k, v) in &self.extra {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }

    /// The error class recorded in audit.
    pub fn class(&self) -> &'static str {
        self.code
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.to_body()).unwrap_or_else(|_| b"{}".to_vec());
        let mut resp = (self.status, body).into_response();
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

impl From<BackendError> for Problem {
    fn from(e: BackendError) -> Problem {
        match e {
            BackendError::Unavailable {
                detail,
                retry_after_secs,
            } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "backend_unavailable",
                "Target unavailable",
                format!("{detail}; nothing ran"),
            )
            .retry_after(retry_after_secs),
            BackendError::Database(db) => {
                let value = serde_json::to_value(&db).unwrap_or(Value::Null);
                let class = db.sqlstate.get(..2).unwrap_or("");
                if db.is_retryable() {
                    Problem::new(
                        StatusCode::CONFLICT,
                        "database_conflict",
                        "Serialization failure or deadlock",
                        format!("{} — retry the request", db.message),
                    )
                    .with("database", value)
                    .with("retryable", true)
                } else if db.is_read_only_violation() {
                    Problem::forbidden(
                        "read_only",
                        format!("{} — this connection is read-only", db.message),
                    )
                    .with("database", value)
                } else if db.sqlstate == "42501" || db.code == Some(1142) {
                    Problem::forbidden("database_permission", db.message.clone())
                        .with("database", value)
                } else if matches!(class, "08" | "53" | "57" | "58") {
                    Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "backend_unavailable",
                        "Target unavailable",
                        db.message.clone(),
                    )
                    .with("database", value)
                    .retry_after(1)
                } else {
                    Problem::new(
                        StatusCode::BAD_REQUEST,
                        "database_error",
                        "The database rejected the statement",
                        db.message.clone(),
                    )
                    .with("database", value)
                }
            }
            BackendError::Timeout => Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "Statement timed out",
                "the statement ran past its timeout and was cancelled on the server; narrow it or raise timeout_ms (up to the connection's ceiling)",
            ),
            BackendError::Params(m) => Problem::bad_request("invalid_params", m),
            BackendError::NotFound(m) => Problem::not_found(m),
            e @ BackendError::AffectedRowsExceeded { .. } => Problem::new(
                StatusCode::CONFLICT,
                "affected_rows_exceeded",
                "Too many rows affected",
                e.to_string(),
            ),
            BackendError::Cancelled => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cancelled",
                "Request cancelled",
                "the request was cancelled (server shutting down); it was stopped on the target",
            )
            .retry_after(5),
            BackendError::Internal(m) => {
                Problem::new(StatusCode::BAD_GATEWAY, "backend_error", "Target error", m)
            }
        }
    }
}
