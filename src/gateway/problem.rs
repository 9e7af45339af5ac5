//! The gateway's one error type, and its one mapping to RFC 9457 problem details.
//!
//! Every refusal and failure, on every entry path (REST, NDJSON trailer, WebSocket frame),
//! is a [`Problem`]: a stable [`Code`] (which fixes the HTTP status and title), a `detail`
//! that says what to do, and extension members (`rule`, `execution_id`, `database`, ...).
//! [`Problem::to_body`] is the only place the wire shape is built; transports only wrap it.
//!
//! What must stay true: a code's status and title never depend on the call site (they are
//! in the table below), and a code is never renamed — agents and SDKs branch on it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::backend::BackendError;

/// Defines [`Code`] with its wire name, HTTP status and title in one table.
macro_rules! codes {
    ($($variant:ident = $name:literal, $status:literal, $title:literal;)*) => {
        /// Stable machine-readable problem codes (`code`, and the tail of `type`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub(crate) enum Code {
            $(#[serde(rename = $name)] $variant,)*
        }

        impl Code {
            /// Every code: for the tests that keep the table consistent, and the OpenAPI
            /// document (which lists each with its status and title).
            pub(crate) const ALL: &'static [Code] = &[$(Code::$variant),*];

            pub(crate) fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $name,)* }
            }

            /// The HTTP status this code is answered with.
            pub(crate) fn status(self) -> u16 {
                match self { $(Code::$variant => $status,)* }
            }

            pub(crate) fn title(self) -> &'static str {
                match self { $(Code::$variant => $title,)* }
            }
        }
    };
}

codes! {
    // Malformed requests.
    MalformedBody = "malformed_body", 400, "Bad request";
    UnexpectedBody = "unexpected_body", 400, "Bad request";
    InvalidQuery = "invalid_query", 400, "Bad request";
    InvalidHeader = "invalid_header", 400, "Bad request";
    InvalidLimit = "invalid_limit", 400, "Bad request";
    InvalidStatement = "invalid_statement", 400, "Bad request";
    SqlSyntax = "sql_syntax", 400, "SQL syntax error";
    MultipleStatements = "multiple_statements", 400, "Bad request";
    InvalidParams = "invalid_params", 400, "Bad request";
    InvalidCommand = "invalid_command", 400, "Bad request";
    InvalidHttpRequest = "invalid_http_request", 400, "Bad request";
    InvalidResize = "invalid_resize", 400, "Bad request";
    InvalidControl = "invalid_control", 400, "Bad request";
    InvalidReason = "invalid_reason", 400, "Bad request";
    NotWebsocket = "not_websocket", 400, "Bad request";
    WrongOperation = "wrong_operation", 400, "Bad request";
    DatabaseError = "database_error", 400, "The database rejected the statement";
    // Identity.
    Unauthorized = "unauthorized", 401, "Authentication required";
    IdentityUnavailable = "identity_unavailable", 503, "Identity provider unavailable";
    // Policy and permissions.
    PolicyDenied = "policy_denied", 403, "Forbidden";
    MaskingStrict = "masking_strict", 403, "Forbidden";
    CompoundCommand = "compound_command", 403, "Forbidden";
    ReviewRequired = "review_required", 403, "Forbidden";
    ReadOnly = "read_only", 403, "Forbidden";
    DatabasePermission = "database_permission", 403, "Forbidden";
    NotAnApprover = "not_an_approver", 403, "Forbidden";
    NotAnAdmin = "not_an_admin", 403, "Forbidden";
    // The console (cookie sessions for people).
    CsrfFailed = "csrf_failed", 403, "Forbidden";
    ConsoleHumansOnly = "console_humans_only", 403, "Forbidden";
    ConsoleDevLoginUnavailable = "console_dev_login_unavailable", 403, "Forbidden";
    // Routing.
    NotFound = "not_found", 404, "Not found";
    MethodNotAllowed = "method_not_allowed", 405, "Method not allowed";
    // Review workflow.
    ReviewPending = "review_pending", 409, "Review pending";
    ReviewApproved = "review_approved", 409, "Approved";
    AlreadyRan = "already_ran", 409, "Already ran";
    ApprovalStale = "approval_stale", 409, "Approval is stale";
    ReviewDecided = "review_decided", 409, "Already decided";
    AlreadyApproved = "already_approved", 409, "Already approved";
    ReviewBusy = "review_busy", 409, "Review busy";
    IdempotencyKeyReused = "idempotency_key_reused", 409, "Idempotency key reused";
    ReviewExpired = "review_expired", 410, "Review expired";
    ResultNotKept = "result_not_kept", 410, "Result not kept";
    StillRunning = "still_running", 409, "Still running";
    ReviewRejected = "review_rejected", 422, "Review rejected";
    // Results.
    DatabaseConflict = "database_conflict", 409, "Serialization failure or deadlock";
    AffectedRowsExceeded = "affected_rows_exceeded", 409, "Too many rows affected";
    // Transport.
    BodyTooLarge = "body_too_large", 413, "Request body too large";
    UnsupportedMediaType = "unsupported_media_type", 415, "Unsupported media type";
    TooManyRequests = "too_many_requests", 429, "Too many concurrent requests";
    // Interactive sessions that end on Airlock's side.
    IdleTimeout = "idle_timeout", 408, "Idle timeout";
    MaxDuration = "max_duration", 408, "Session reached its maximum length";
    Terminated = "terminated", 409, "Terminated by an administrator";
    // Airlock or the target cannot serve the request; nothing ran.
    Internal = "internal", 500, "Internal error";
    BackendError = "backend_error", 502, "Target error";
    AuditUnavailable = "audit_unavailable", 503, "Audit store unavailable";
    RecordingUnavailable = "recording_unavailable", 503, "Recording unavailable";
    BackendUnavailable = "backend_unavailable", 503, "Target unavailable";
    RandomUnavailable = "random_unavailable", 503, "Random generator unavailable";
    ShuttingDown = "shutting_down", 503, "Shutting down";
    TooManyConnections = "too_many_connections", 503, "Too many connections";
    MemoryBudget = "memory_budget", 503, "Memory budget exhausted";
    BodyReadTimeout = "body_read_timeout", 408, "Request body too slow";
    Cancelled = "cancelled", 503, "Request cancelled";
    Timeout = "timeout", 504, "Timed out";
}

/// A refusal or failure, transport-free.
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    pub(crate) code: Code,
    pub(crate) detail: String,
    /// Extension members (`rule`, `execution_id`, `database`, `retryable`, ...).
    pub(crate) extra: Map<String, Value>,
    /// Seconds after which the same request may succeed (`Retry-After`).
    pub(crate) retry_after: Option<u64>,
}

impl Problem {
    pub(crate) fn new(code: Code, detail: impl Into<String>) -> Problem {
        Problem {
            code,
            detail: detail.into(),
            extra: Map::new(),
            retry_after: None,
        }
    }

    pub(crate) fn with(mut self, key: &str, value: impl Into<Value>) -> Problem {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    pub(crate) fn retry_after(mut self, secs: u64) -> Problem {
        self.retry_after = Some(secs);
        self
    }

    pub(crate) fn status(&self) -> u16 {
        self.code.status()
    }

    pub(crate) fn unauthorized(detail: impl Into<String>) -> Problem {
        Problem::new(Code::Unauthorized, detail)
    }

    pub(crate) fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(Code::NotFound, detail)
    }

    pub(crate) fn unknown_connection(name: &str) -> Problem {
        Problem::not_found(format!(
            "no connection named `{name}` is available to you; GET /v1/connections lists the ones you may use"
        ))
    }

    pub(crate) fn audit_unavailable() -> Problem {
        Problem::new(
            Code::AuditUnavailable,
            "the audit record could not be stored, so nothing was run; retry later",
        )
        .retry_after(2)
    }

    pub(crate) fn recording_unavailable(detail: impl Into<String>) -> Problem {
        Problem::new(Code::RecordingUnavailable, detail).retry_after(2)
    }

    pub(crate) fn internal(detail: impl Into<String>) -> Problem {
        Problem::new(Code::Internal, detail)
    }

    /// The RFC 9457 body: `type`, `title`, `status`, `detail`, `code`, then the extensions.
    /// Every transport sends exactly this object (NDJSON and WebSocket nest it whole).
    pub(crate) fn to_body(&self) -> Value {
        let mut body = Map::new();
        body.insert(
            "type".into(),
            format!("urn:airlock:problem:{}", self.code.as_str()).into(),
        );
        body.insert("title".into(), self.code.title().into());
        body.insert("status".into(), self.status().into());
        body.insert("detail".into(), self.detail.clone().into());
        body.insert("code".into(), self.code.as_str().into());
        for (k, v) in &self.extra {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }
}

impl Problem {
    /// The problem a body made by [`Problem::to_body`] was made from (a kept failure, sent
    /// again). A body that is not one becomes an `internal` problem saying so.
    pub(crate) fn from_body(body: &Value) -> Problem {
        let code = body
            .get("code")
            .and_then(|c| serde_json::from_value::<Code>(c.clone()).ok());
        let Some(code) = code else {
            return Problem::internal("a kept problem could not be read back");
        };
        let detail = body
            .get("detail")
            .and_then(|d| d.as_str())
            .unwrap_or_default();
        let mut problem = Problem::new(code, detail);
        if let Value::Object(map) = body {
            for (k, v) in map {
                if !matches!(k.as_str(), "type" | "title" | "status" | "detail" | "code") {
                    problem.extra.insert(k.clone(), v.clone());
                }
            }
        }
        problem
    }
}

impl From<BackendError> for Problem {
    fn from(e: BackendError) -> Problem {
        match e {
            BackendError::Unavailable {
                detail,
                retry_after_secs,
            } => Problem::new(Code::BackendUnavailable, format!("{detail}; nothing ran"))
                .retry_after(retry_after_secs),
            BackendError::Database(db) => {
                let value = serde_json::to_value(&db).unwrap_or(Value::Null);
                let class = db.sqlstate.get(..2).unwrap_or("");
                if db.is_retryable() {
                    Problem::new(
                        Code::DatabaseConflict,
                        format!("{} — retry the request", db.message),
                    )
                    .with("database", value)
                    .with("retryable", true)
                } else if db.is_read_only_violation() {
                    Problem::new(
                        Code::ReadOnly,
                        format!(
                            "{} — the connection is read-only, or the statement is a plain read, \
                             which runs in a read-only transaction",
                            db.message
                        ),
                    )
                    .with("database", value)
                } else if db.sqlstate == "42501" || db.code == Some(1142) {
                    Problem::new(Code::DatabasePermission, db.message.clone())
                        .with("database", value)
                } else if matches!(class, "08" | "53" | "57" | "58") {
                    Problem::new(Code::BackendUnavailable, db.message.clone())
                        .with("database", value)
                        .retry_after(1)
                } else {
                    Problem::new(Code::DatabaseError, db.message.clone()).with("database", value)
                }
            }
            BackendError::Timeout => Problem::new(
                Code::Timeout,
                "the statement ran past its timeout and was cancelled on the server; narrow it or raise timeout_ms (up to the connection's ceiling)",
            ),
            BackendError::Params(m) => Problem::new(Code::InvalidParams, m),
            BackendError::NotFound(m) => Problem::not_found(m),
            e @ BackendError::AffectedRowsExceeded { .. } => {
                Problem::new(Code::AffectedRowsExceeded, e.to_string())
            }
            BackendError::Cancelled => Problem::new(
                Code::Cancelled,
                "the request was cancelled (server shutting down); it was stopped on the target",
            )
            .retry_after(5),
            BackendError::Internal(m) => Problem::new(Code::BackendError, m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_distinct_wire_name_and_an_error_status() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.as_str()), "duplicate {}", c.as_str());
            assert!((400..600).contains(&c.status()), "{}", c.as_str());
            assert_eq!(
                serde_json::to_value(c).ok(),
                Some(Value::from(c.as_str())),
                "serde name of {c:?}"
            );
        }
    }

    #[test]
    fn body_carries_type_code_status_and_extensions() {
        let b = Problem::new(Code::PolicyDenied, "no")
            .with("rule", "r1")
            .to_body();
        assert_eq!(b["type"], "urn:airlock:problem:policy_denied");
        assert_eq!(b["code"], "policy_denied");
        assert_eq!(b["status"], 403);
        assert_eq!(b["rule"], "r1");
    }
}
