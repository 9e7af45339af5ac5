//! The parts of the OpenAPI contract that cut across operations: which problem `code`s each
//! operation can answer with (and so which error statuses it declares), the `Code` schema,
//! the `Retry-After` and `X-Request-Id` headers, and media-type examples taken from the
//! schemas.
//!
//! What must stay true:
//! - Every operation has an entry in [`PROBLEMS`] listing every code its handler, its
//!   extractors and what they call can answer with; the error responses are generated from
//!   it, so a status is declared exactly when a listed code has it, always as
//!   `application/problem+json` with `ProblemBody`. A new operation or a new code that an
//!   operation can return is added here (the tests below fail until it is).
//! - Statuses come from the [`Code`] table, never from here.

use serde_json::{Map, Value, json};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{OpenApi, RefOr};

use super::problem::Code;

impl utoipa::PartialSchema for Code {
    fn schema() -> RefOr<Schema> {
        let mut description = String::from(
            "Stable machine-readable name of the problem; branch on it (never on `title` or \
             `detail`). A code is never renamed, and always comes with the same HTTP status:\n",
        );
        for c in Code::ALL {
            description.push_str(&format!(
                "\n- `{}` ({}): {}",
                c.as_str(),
                c.status(),
                advice(*c)
            ));
        }
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(Code::ALL.iter().map(|c| c.as_str())))
            .description(Some(description))
            .examples([json!("policy_denied")])
            .into()
    }
}

impl utoipa::ToSchema for Code {
    fn name() -> std::borrow::Cow<'static, str> {
        "Code".into()
    }
}

/// What an agent should do on each code (the responses list these per operation).
fn advice(code: Code) -> &'static str {
    match code {
        Code::MalformedBody => {
            "the body is not the JSON this operation takes (syntax, a wrong type, a missing or unknown field); fix it as `detail` says"
        }
        Code::UnexpectedBody => "this operation takes no body; send none",
        Code::InvalidQuery => {
            "a query-string parameter is unknown or out of range; fix it as `detail` says"
        }
        Code::InvalidHeader => "a header (`Idempotency-Key`) is malformed; fix it",
        Code::InvalidLimit => {
            "`max_rows`, `max_bytes` or `timeout_ms` is 0 or above the connection's ceiling (see `GET /v1/connections/{name}`)"
        }
        Code::InvalidStatement => {
            "the statement could not be inspected; fix the SQL (one statement, this connection's dialect)"
        }
        Code::SqlSyntax => {
            "the parser rejects the statement: fix it at `position` (`line`, `column`) as `detail` says; nothing ran"
        }
        Code::ResultNotKept => {
            "nothing is kept to send: the result expired, was too large to keep, or was streamed; `GET /v1/executions/{id}` has the outcome"
        }
        Code::InvalidHttpRequest => {
            "the path, method, query or a header cannot be sent as given (a full URL, a path leaving the base, a forbidden header); fix it as `detail` says"
        }
        Code::StillRunning => {
            "it has not finished: wait (`GET /v1/executions/{id}?wait=55`) and ask again after `Retry-After`"
        }
        Code::MultipleStatements => "send exactly one statement per request",
        Code::InvalidParams => {
            "`params` do not match the statement's placeholders (count or type); fix them"
        }
        Code::InvalidCommand => {
            "send exactly one of `argv` or `command` (and `target` only for kubernetes connections)"
        }
        Code::InvalidResize => "terminal size out of range (cols 1..=1000, rows 1..=500)",
        Code::InvalidControl => "a WebSocket text frame was not a valid control message",
        Code::InvalidReason => "give a reason (or comment) of 1 to 2000 characters",
        Code::NotWebsocket => "open this endpoint with a WebSocket upgrade request",
        Code::WrongOperation => {
            "the connection's kind does not take this operation; `detail` names the one to use"
        }
        Code::DatabaseError => {
            "the database rejected the statement; `database` has SQLSTATE, message and position: fix the statement"
        }
        Code::Unauthorized => {
            "send a valid bearer token in `Authorization` (or a fresh shell ticket); get a new one if it expired"
        }
        Code::IdentityUnavailable => {
            "the token's issuer keys cannot be fetched; retry after `Retry-After` seconds"
        }
        Code::PolicyDenied => {
            "a policy rule (`rule`) refuses this; do not retry the same request, change it or ask a human"
        }
        Code::MaskingStrict => {
            "strict masking refuses using a protected column except as a plainly selected column; rewrite the statement"
        }
        Code::CompoundCommand => {
            "only one plain command runs (no pipes, lists, redirections, expansions); send `argv`"
        }
        Code::ReviewRequired => {
            "this needs human review, which interactive shells cannot have; use `exec` instead"
        }
        Code::ReadOnly => {
            "the connection (or this plain read's transaction) is read-only; writes are refused"
        }
        Code::DatabasePermission => "the database account may not do this; do not retry",
        Code::NotAnApprover => {
            "you may not decide this review (not in its approver groups, or you requested it)"
        }
        Code::NotAnAdmin => "this needs an administrator (a principal listed in `audit.readers`)",
        Code::CsrfFailed => {
            "console only: send the session's CSRF token (GET /console/api/me) in X-Airlock-CSRF, from the console's own page"
        }
        Code::ConsoleHumansOnly => {
            "console only: the console is for people; agents call the API with their bearer token"
        }
        Code::ConsoleDevLoginUnavailable => {
            "console only: the dev sign-in needs the dev issuer and a loopback client; sign in with your identity provider"
        }
        Code::NotFound => {
            "no such resource visible to you (list what you may use first); do not retry as is"
        }
        Code::MethodNotAllowed => "this path does not take that method",
        Code::ReviewPending => {
            "not approved yet; poll `GET /v1/executions/{id}` or wait with `?wait=`"
        }
        Code::ReviewApproved => {
            "approved and not yet run; run it with `POST /v1/executions/{id}/run`"
        }
        Code::AlreadyRan => "an approved request runs once; it already ran (or was cut short)",
        Code::ApprovalStale => {
            "the request, your token, the connection or the policy changed since the approval; send the request again for a new review"
        }
        Code::ReviewDecided => "the review is already decided",
        Code::AlreadyApproved => "you already approved this review; another approver is needed",
        Code::ReviewBusy => {
            "concurrent decisions kept changing the review; retry after `Retry-After` seconds"
        }
        Code::IdempotencyKeyReused => {
            "this `Idempotency-Key` was used for a different request; use a new key"
        }
        Code::ReviewExpired => {
            "the review (or the approved run window) expired; send the request again to file a new review"
        }
        Code::ReviewRejected => {
            "a reviewer rejected the request (reason in `detail`); change it as the reason says"
        }
        Code::DatabaseConflict => {
            "serialization failure or deadlock (`retryable`: true); retry the same request"
        }
        Code::AffectedRowsExceeded => {
            "the write affected more rows than its approval allows and was rolled back"
        }
        Code::BodyTooLarge => "the body exceeds the server's limit; send less",
        Code::UnsupportedMediaType => "send the body as `Content-Type: application/json`",
        Code::TooManyRequests => {
            "too many of your requests run at once; wait for one to finish, retry after `Retry-After` seconds"
        }
        Code::IdleTimeout => "the session was idle too long (sent in a WebSocket error frame)",
        Code::MaxDuration => "the session reached its maximum length (WebSocket error frame)",
        Code::Terminated => "an administrator ended the session (WebSocket error frame)",
        Code::Internal => "an Airlock bug; report it with `X-Request-Id` and `execution_id`",
        Code::BackendError => {
            "the target failed in an unexpected way (e.g. refused authentication); report it, retrying rarely helps"
        }
        Code::AuditUnavailable => {
            "the audit store could not record the request, so nothing ran; retry after `Retry-After` seconds"
        }
        Code::RecordingUnavailable => {
            "the session recording could not be stored, so nothing (more) ran; retry after `Retry-After` seconds"
        }
        Code::BackendUnavailable => {
            "the target is unreachable or its pool is exhausted; nothing ran: retry after `Retry-After` seconds"
        }
        Code::RandomUnavailable => "the system random generator failed; retry",
        Code::ShuttingDown => "this instance is draining; send requests to another instance",
        Code::TooManyConnections => {
            "the server has all the connections it takes; retry after `Retry-After` seconds"
        }
        Code::MemoryBudget => {
            "requests in flight hold the server's memory budget; retry, ask for a smaller `max_bytes`, or stream NDJSON"
        }
        Code::BodyReadTimeout => "the request body did not arrive in time; send it at once",
        Code::Cancelled => {
            "the server stopped the request (shutting down); retry after `Retry-After` seconds"
        }
        Code::Timeout => {
            "the request ran past its timeout and was cancelled on the target; narrow it or raise `timeout_ms` up to the ceiling"
        }
        #[allow(unreachable_patterns)]
        _ => "see `detail`",
    }
}

/// Codes answered with a `Retry-After` header (seconds).
const RETRY_AFTER: &[Code] = &[
    Code::TooManyRequests,
    Code::MemoryBudget,
    Code::AuditUnavailable,
    Code::RecordingUnavailable,
    Code::BackendUnavailable,
    Code::IdentityUnavailable,
    Code::Cancelled,
    Code::ReviewBusy,
    Code::TooManyConnections,
];

/// Any request: refused before routing when the server is at `max_connections`.
const ANY: &[Code] = &[Code::TooManyConnections];
/// Operations that need a bearer token.
const AUTH: &[Code] = &[Code::Unauthorized, Code::IdentityUnavailable];
/// Operations only administrators (`audit.readers`) may call.
const ADMIN: &[Code] = &[Code::NotAnAdmin];
/// Operations that read a JSON body.
const JSON_BODY: &[Code] = &[
    Code::MalformedBody,
    Code::UnsupportedMediaType,
    Code::BodyTooLarge,
    Code::BodyReadTimeout,
];
/// Operations that read the audit/review store.
const STORE: &[Code] = &[Code::AuditUnavailable];
/// `?wait=` and `Idempotency-Key`, on requests that may be held for review.
const HOLD: &[Code] = &[
    Code::InvalidQuery,
    Code::InvalidHeader,
    Code::IdempotencyKeyReused,
    Code::ReviewRejected,
    Code::ReviewExpired,
    Code::ApprovalStale,
    Code::AlreadyRan,
];
/// Admission of a request on a connection (slot, connection, verification, audit).
const ADMIT: &[Code] = &[
    Code::TooManyRequests,
    Code::NotFound,
    Code::WrongOperation,
    Code::BackendUnavailable,
    Code::BackendError,
    Code::AuditUnavailable,
    Code::Internal,
];
/// Inspecting, deciding and running a SQL statement.
const SQL: &[Code] = &[
    Code::InvalidLimit,
    Code::InvalidStatement,
    Code::SqlSyntax,
    Code::MultipleStatements,
    Code::InvalidParams,
    Code::PolicyDenied,
    Code::MaskingStrict,
    Code::MemoryBudget,
    Code::DatabaseError,
    Code::DatabaseConflict,
    Code::DatabasePermission,
    Code::ReadOnly,
    Code::AffectedRowsExceeded,
    Code::Cancelled,
    Code::Timeout,
];
/// Inspecting, deciding and running a command.
const COMMAND: &[Code] = &[
    Code::InvalidLimit,
    Code::InvalidCommand,
    Code::PolicyDenied,
    Code::CompoundCommand,
    Code::RecordingUnavailable,
    Code::Cancelled,
    Code::Timeout,
];
/// Deciding a review.
const DECIDE: &[Code] = &[
    Code::NotFound,
    Code::NotAnApprover,
    Code::ReviewExpired,
    Code::ReviewDecided,
    Code::AlreadyApproved,
    Code::ReviewBusy,
];
/// Running an approved request: its state, then admission as the stored request.
const RUN: &[Code] = &[
    Code::UnexpectedBody,
    Code::BodyTooLarge,
    Code::BodyReadTimeout,
    Code::MalformedBody,
    Code::ReviewPending,
    Code::ReviewApproved,
    Code::ReviewRejected,
    Code::ReviewExpired,
    Code::AlreadyRan,
    Code::ApprovalStale,
];

/// The problem codes of each operation, by `operationId`: the union of the groups.
pub(crate) const PROBLEMS: &[(&str, &[&[Code]])] = &[
    ("healthz", &[ANY]),
    ("readyz", &[ANY, &[Code::ShuttingDown], STORE]),
    ("metrics", &[ANY]),
    ("listConnections", &[ANY, AUTH]),
    ("getConnection", &[ANY, AUTH, &[Code::NotFound]]),
    ("getSchema", &[ANY, AUTH, ADMIT, &[Code::DatabaseError]]),
    ("runQuery", &[ANY, AUTH, JSON_BODY, HOLD, ADMIT, SQL]),
    ("execCommand", &[ANY, AUTH, JSON_BODY, HOLD, ADMIT, COMMAND]),
    (
        "listAudit",
        &[ANY, AUTH, ADMIN, &[Code::InvalidQuery], STORE],
    ),
    ("listReviews", &[ANY, AUTH, &[Code::InvalidQuery], STORE]),
    ("getReview", &[ANY, AUTH, &[Code::NotFound], STORE]),
    (
        "approveReview",
        &[ANY, AUTH, JSON_BODY, &[Code::InvalidReason], DECIDE, STORE],
    ),
    (
        "rejectReview",
        &[ANY, AUTH, JSON_BODY, &[Code::InvalidReason], DECIDE, STORE],
    ),
    (
        "getExecution",
        &[ANY, AUTH, &[Code::InvalidQuery, Code::NotFound], STORE],
    ),
    (
        "runApproved",
        &[ANY, AUTH, &[Code::InvalidQuery], RUN, ADMIT, SQL, COMMAND],
    ),
    (
        "getExecutionResult",
        &[
            ANY,
            AUTH,
            &[Code::NotFound, Code::StillRunning, Code::ResultNotKept],
            STORE,
            // A failed job answers the problem it failed with.
            SQL,
            COMMAND,
        ],
    ),
    (
        "cancelExecution",
        &[
            ANY,
            AUTH,
            &[
                Code::UnexpectedBody,
                Code::BodyTooLarge,
                Code::BodyReadTimeout,
                Code::NotFound,
                Code::AlreadyRan,
            ],
            STORE,
        ],
    ),
    (
        "callHttp",
        &[
            ANY,
            AUTH,
            JSON_BODY,
            HOLD,
            ADMIT,
            &[
                Code::InvalidHttpRequest,
                Code::InvalidLimit,
                Code::PolicyDenied,
                Code::BackendError,
                Code::Cancelled,
                Code::Timeout,
            ],
        ],
    ),
    (
        "checkRequest",
        &[
            ANY,
            AUTH,
            JSON_BODY,
            &[
                Code::NotFound,
                Code::InvalidLimit,
                Code::InvalidParams,
                Code::InvalidStatement,
                Code::InvalidCommand,
                Code::WrongOperation,
                Code::TooManyRequests,
                Code::BackendUnavailable,
                Code::AuditUnavailable,
                Code::MemoryBudget,
                Code::ShuttingDown,
            ],
        ],
    ),
    ("listSessions", &[ANY, AUTH, &[Code::InvalidQuery], STORE]),
    ("getSession", &[ANY, AUTH, &[Code::NotFound], STORE]),
    ("getRecording", &[ANY, AUTH, &[Code::NotFound], STORE]),
    (
        "createShellTicket",
        &[
            ANY,
            AUTH,
            &[
                Code::NotFound,
                Code::WrongOperation,
                Code::RandomUnavailable,
            ],
            STORE,
        ],
    ),
    (
        "openShell",
        &[
            ANY,
            AUTH,
            &[
                Code::InvalidQuery,
                Code::NotWebsocket,
                Code::InvalidResize,
                Code::PolicyDenied,
                Code::ReviewRequired,
                Code::RecordingUnavailable,
            ],
            ADMIT,
        ],
    ),
    (
        "terminateSession",
        &[ANY, AUTH, ADMIN, &[Code::NotFound], STORE],
    ),
];

/// The codes of `operation`, deduplicated, in table order; `None` if it has no entry.
pub(crate) fn problems_of(operation: &str) -> Option<Vec<Code>> {
    let (_, groups) = PROBLEMS.iter().find(|(id, _)| *id == operation)?;
    let mut codes: Vec<Code> = Vec::new();
    for c in groups.iter().flat_map(|g| g.iter()) {
        if !codes.contains(c) {
            codes.push(*c);
        }
    }
    Some(codes)
}

/// Operations whose body may be absent (read with `OptionalJson`).
const OPTIONAL_BODIES: &[&str] = &["approveReview"];

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Completes the generated document: problem responses, headers and examples. Works on
/// the JSON form (utoipa's types do not read back every schema they write).
pub(crate) fn complete(doc: &OpenApi) -> Value {
    let mut value = serde_json::to_value(doc).unwrap_or_default();
    complete_json(&mut value);
    value
}

fn complete_json(doc: &mut Value) {
    let schemas = doc
        .pointer("/components/schemas")
        .cloned()
        .unwrap_or_default();
    if let Some(Value::Object(paths)) = doc.get_mut("paths") {
        for item in paths.values_mut() {
            for method in METHODS {
                if let Some(op) = item.get_mut(*method) {
                    complete_operation(op, &schemas);
                }
            }
        }
    }
    if let Some(problem) = doc.pointer_mut("/components/schemas/ProblemBody")
        && let Some(obj) = problem.as_object_mut()
    {
        // Extension members may be added in any release: clients must ignore unknown ones.
        obj.insert("additionalProperties".into(), Value::Bool(true));
    }
}

fn complete_operation(op: &mut Value, schemas: &Value) {
    let id = op
        .get("operationId")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    // Bodies the handler reads with `OptionalJson`: an empty body is the same as `{}`.
    if OPTIONAL_BODIES.contains(&id.as_str())
        && let Some(body) = op.get_mut("requestBody").and_then(Value::as_object_mut)
    {
        body.insert("required".into(), Value::Bool(false));
    }
    // Examples of request bodies, from their schemas.
    if let Some(Value::Object(content)) = op.pointer_mut("/requestBody/content") {
        for media in content.values_mut() {
            example_from_schema(media, schemas);
        }
    }
    let Some(Value::Object(responses)) = op.get_mut("responses") else {
        return;
    };
    for response in responses.values_mut() {
        if let Some(Value::Object(content)) = response.get_mut("content") {
            for media in content.values_mut() {
                example_from_schema(media, schemas);
            }
        }
        add_header(response, "X-Request-Id", request_id_header());
    }
    let Some(codes) = problems_of(&id) else {
        return;
    };
    let mut statuses: Vec<u16> = codes.iter().map(|c| c.status()).collect();
    statuses.sort_unstable();
    statuses.dedup();
    for status in statuses {
        let here: Vec<Code> = codes
            .iter()
            .copied()
            .filter(|c| c.status() == status)
            .collect();
        responses.insert(status.to_string(), problem_response(status, &here));
    }
}

/// The error response for `status`, carrying `codes`.
fn problem_response(status: u16, codes: &[Code]) -> Value {
    let mut description = format!("{}. `code` is one of:\n", reason(status));
    for c in codes {
        description.push_str(&format!("\n- `{}`: {}", c.as_str(), advice(*c)));
    }
    let mut examples = Map::new();
    for c in codes {
        examples.insert(
            c.as_str().into(),
            json!({"summary": c.title(), "value": example_body(*c)}),
        );
    }
    let mut response = json!({
        "description": description,
        "content": {
            super::problem::CONTENT_TYPE: {
                "schema": {"$ref": "#/components/schemas/ProblemBody"},
                "examples": examples,
            }
        },
    });
    if codes.iter().any(|c| RETRY_AFTER.contains(c)) {
        add_header(
            &mut response,
            "Retry-After",
            json!({
                "description": "Seconds after which the same request may succeed; sent with the codes that say to retry.",
                "schema": {"type": "integer", "minimum": 0},
            }),
        );
    }
    add_header(&mut response, "X-Request-Id", request_id_header());
    response
}

fn request_id_header() -> Value {
    json!({
        "description": "The request's id: the `X-Request-Id` you sent, or one Airlock assigned. Quote it when reporting a problem.",
        "schema": {"type": "string"},
    })
}

fn add_header(response: &mut Value, name: &str, header: Value) {
    if let Some(obj) = response.as_object_mut() {
        let headers = obj.entry("headers").or_insert_with(|| json!({}));
        if let Some(h) = headers.as_object_mut() {
            h.entry(name).or_insert(header);
        }
    }
}

/// A problem body as the server would send it with `code`.
fn example_body(code: Code) -> Value {
    let mut body = json!({
        "type": format!("urn:airlock:problem:{}", code.as_str()),
        "title": code.title(),
        "status": code.status(),
        "detail": advice(code),
        "code": code.as_str(),
    });
    let extra = match code {
        Code::PolicyDenied => json!({"rule": "deny-ddl", "execution_id": EXAMPLE_EXECUTION}),
        Code::DatabaseError => json!({
            "execution_id": EXAMPLE_EXECUTION,
            "database": {"sqlstate": "42P01", "message": "relation \"custmers\" does not exist", "position": 15},
        }),
        Code::DatabaseConflict => json!({
            "execution_id": EXAMPLE_EXECUTION,
            "retryable": true,
            "database": {"sqlstate": "40001", "message": "could not serialize access due to concurrent update"},
        }),
        Code::ReviewPending
        | Code::ReviewRejected
        | Code::ReviewExpired
        | Code::ReviewApproved
        | Code::AlreadyRan => json!({
            "execution_id": EXAMPLE_EXECUTION,
            "review_id": EXAMPLE_REVIEW,
            "rule": "writes-need-review",
        }),
        Code::NotAnApprover | Code::ReviewDecided => json!({"review_id": EXAMPLE_REVIEW}),
        Code::TooManyRequests => {
            json!({"rule": "principal-concurrency", "execution_id": EXAMPLE_EXECUTION})
        }
        _ => json!({}),
    };
    if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), extra) {
        b.extend(extra);
    }
    body
}

pub(crate) const EXAMPLE_EXECUTION: &str = "0190f5c2-7a4e-7c3b-9f2a-5d1e8b6a4c21";
pub(crate) const EXAMPLE_REVIEW: &str = "0190f5c2-7a52-7d10-8e4b-2b9c1f0d3e57";

/// Sets a media type's `example` from its schema's, when it references a component that has
/// one and the operation gave none.
fn example_from_schema(media: &mut Value, schemas: &Value) {
    if media.get("example").is_some() || media.get("examples").is_some() {
        return;
    }
    let Some(name) = media
        .pointer("/schema/$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
    else {
        return;
    };
    let example = schemas.get(name).and_then(|s| {
        s.get("example")
            .cloned()
            .or_else(|| s.get("examples").and_then(|e| e.get(0)).cloned())
    });
    if let (Some(example), Some(obj)) = (example, media.as_object_mut()) {
        obj.insert("example".into(), example);
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not found",
        405 => "Method not allowed",
        408 => "Request timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Content too large",
        415 => "Unsupported media type",
        422 => "Unprocessable content",
        429 => "Too many requests",
        500 => "Internal server error",
        502 => "Bad gateway",
        503 => "Service unavailable",
        504 => "Gateway timeout",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        serde_json::from_str(&super::super::openapi_json()).unwrap()
    }

    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for m in METHODS {
                if let Some(op) = item.get(*m) {
                    out.push((
                        format!("{} {path}", m.to_uppercase()),
                        m.to_string(),
                        op.clone(),
                    ));
                }
            }
        }
        out
    }

    #[test]
    fn every_code_has_advice() {
        for c in Code::ALL {
            assert_ne!(
                advice(*c),
                "see `detail`",
                "{c:?} has no advice in api/contract.rs"
            );
        }
    }

    #[test]
    fn every_operation_is_documented_and_lists_its_problems() {
        let doc = doc();
        let mut ids = std::collections::HashSet::new();
        for (name, _, op) in operations(&doc) {
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(
                ids.insert(id.to_string()),
                "{name}: duplicate operationId {id}"
            );
            assert!(
                id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                    && id.chars().all(|c| c.is_ascii_alphanumeric()),
                "{name}: operationId `{id}` is not camelCase"
            );
            assert!(
                problems_of(id).is_some(),
                "{name}: add `{id}` to PROBLEMS in src/api/contract.rs"
            );
            assert!(op["summary"].is_string(), "{name}: no summary");
            assert!(op["description"].is_string(), "{name}: no description");
            if let Some(body) = op.get("requestBody") {
                for (t, media) in body["content"].as_object().unwrap() {
                    assert!(
                        media.get("example").is_some() || media.get("examples").is_some(),
                        "{name}: request body {t} has no example"
                    );
                }
            }
            for (status, r) in op["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    let content = r["content"].as_object().unwrap();
                    assert_eq!(
                        content.keys().collect::<Vec<_>>(),
                        [super::super::problem::CONTENT_TYPE],
                        "{name} {status}"
                    );
                }
            }
        }
        for (id, _) in PROBLEMS {
            assert!(
                ids.contains(*id),
                "PROBLEMS lists `{id}`, which is no operation"
            );
        }
    }

    #[test]
    fn every_schema_and_property_is_described_with_an_example() {
        let doc = doc();
        for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
            assert!(
                schema["description"].is_string(),
                "schema {name}: no description"
            );
            assert!(
                schema.get("example").is_some() || schema.get("examples").is_some(),
                "schema {name}: no example"
            );
            let props = schema
                .get("properties")
                .or_else(|| schema.pointer("/allOf/1/properties"));
            for (field, p) in props.and_then(Value::as_object).into_iter().flatten() {
                let described = p.get("description").is_some()
                    || p["oneOf"]
                        .as_array()
                        .is_some_and(|o| o.iter().any(|x| x.get("description").is_some()))
                    || p.pointer("/allOf/0/description").is_some();
                assert!(
                    described,
                    "schema {name}: property {field} has no description"
                );
            }
        }
    }
}
