//! Requests to HTTP API targets: inspection into a normalised request and its facts, and
//! the runner that sends it with Airlock's credentials and masks what comes back.
//!
//! What must stay true:
//! - What is sent is the normalised request the policy decided on and a reviewer approved
//!   (method, path under the base URL, query, the agent's allowed headers, the body), never
//!   the agent's raw text: a path that cannot be normalised, a header that could smuggle
//!   (hop-by-hop, Host, Authorization, Cookie, Forwarded), or a method that tunnels
//!   (CONNECT, TRACE) is refused before the policy sees it.
//! - Credentials are added by the backend after everything the agent gave; they never
//!   appear in the audit, a review, a response or an error.
//! - The request body is recorded in the audit masked; the response body is masked for the
//!   caller (JSON per leaf and by JSON-path rules, text by the detectors) before it leaves.
//! - The upstream status is the result, not an Airlock error: a 404 or 500 from the API
//!   is answered 200 with `status: 404`; only Airlock's own failures (unreachable, timed
//!   out, cancelled) are problems.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::admit::Admitted;
use super::connection::Connection;
use super::problem::{Code, Problem};
use super::record::{Ending, ExecutionRecord};
use crate::audit::AuditEvent;
use crate::inspect::{Facts, NameValue, NormalizedHttp};
use crate::mask::plan::{MaskedCounts, RequestMasking};

/// Longest request body kept in the audit record (masked); the digest covers all of it.
const AUDIT_BODY_BYTES: usize = 4096;

/// An HTTP API request as the agent sends it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"method": "POST", "path": "/customers/42/notes", "query": {"notify": "false"}, "body": {"text": "called back"}}))]
pub(crate) struct HttpRequest {
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE`, `HEAD`, `OPTIONS` (case-insensitive).
    #[schema(example = "GET")]
    pub(crate) method: String,
    /// A path under the connection's base URL, starting with `/`: never a full URL. It is
    /// normalised (dot segments resolved); one that would leave the base is refused.
    #[schema(example = "/customers/42")]
    pub(crate) path: String,
    /// Query parameters: a value, or a list of values for a repeated parameter.
    #[serde(default)]
    #[schema(value_type = Option<Object>, example = json!({"page": "2", "tag": ["a", "b"]}))]
    pub(crate) query: Option<serde_json::Map<String, Value>>,
    /// Extra request headers (`Accept`, `If-Match`, ...). Authorization, Cookie, Host,
    /// hop-by-hop and forwarding headers are refused: Airlock adds the credentials.
    #[serde(default)]
    #[schema(value_type = Option<Object>, example = json!({"Accept": "application/json"}))]
    pub(crate) headers: Option<serde_json::Map<String, Value>>,
    /// The body: a JSON value is sent as JSON; a string is sent as text (or as
    /// `content_type` says).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub(crate) body: Option<Value>,
    /// The body's content type, when the default (JSON for JSON values, `text/plain` for a
    /// string) is not it.
    #[serde(default)]
    pub(crate) content_type: Option<String>,
    /// Cap on the response body's bytes, up to the connection's ceiling.
    #[serde(default, deserialize_with = "crate::wire::opt_count")]
    #[schema(minimum = 1)]
    pub(crate) max_bytes: Option<u64>,
    /// Timeout for the whole exchange (redirects and body included), up to the ceiling.
    #[serde(default, deserialize_with = "crate::wire::opt_count")]
    #[schema(minimum = 1)]
    pub(crate) timeout_ms: Option<u64>,
}

impl HttpRequest {
    /// The request a stored (held) normalised one came from: inspecting it again gives it
    /// back unchanged, which is what the approval binding checks.
    pub(crate) fn from_normalized(h: &NormalizedHttp, max_bytes: u64, timeout_ms: u64) -> Self {
        let mut query = serde_json::Map::new();
        for q in &h.query {
            match query.get_mut(&q.name) {
                Some(Value::Array(items)) => items.push(Value::String(q.value.clone())),
                Some(other) => {
                    let first = other.take();
                    *other = Value::Array(vec![first, Value::String(q.value.clone())]);
                }
                None => {
                    query.insert(q.name.clone(), Value::String(q.value.clone()));
                }
            }
        }
        HttpRequest {
            method: h.method.clone(),
            path: h.path.clone(),
            query: (!query.is_empty()).then_some(query),
            headers: (!h.headers.is_empty()).then(|| {
                h.headers
                    .iter()
                    .map(|nv| (nv.name.clone(), Value::String(nv.value.clone())))
                    .collect()
            }),
            // The body as text, with its content type: re-inspected, it is sent byte for
            // byte as approved.
            body: h.body.clone().map(Value::String),
            content_type: h.body.as_ref().and(h.content_type.clone()),
            max_bytes: Some(max_bytes),
            timeout_ms: Some(timeout_ms),
        }
    }
}

/// An inspected request, ready to send.
#[derive(Debug, Clone)]
pub(crate) struct HttpPlan {
    pub(crate) call: NormalizedHttp,
    pub(crate) timeout_ms: u64,
    pub(crate) max_bytes: u64,
}

/// What came back, as the caller may see it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"execution_id": "0193a0c4-6a7e-7c4e-9d0b-2f5e8c1a9b10", "rule": "agents-read-billing", "status": 200, "headers": [{"name": "content-type", "value": "application/json"}], "body": {"id": 42, "email": "[REDACTED]"}, "truncated": false, "masked": {"columns": {"$.email": 1}, "detectors": {}}, "duration_ms": 41}))]
pub(crate) struct HttpResult {
    /// The execution's id (its audit records').
    pub(crate) execution_id: String,
    /// The rule that admitted the request.
    pub(crate) rule: String,
    /// The upstream response status (a 4xx or 5xx from the API is a result, not an error).
    pub(crate) status: u16,
    /// Response headers from an allow-list (content type, caching, location under the
    /// base, retry-after, ...).
    pub(crate) headers: Vec<NameValue>,
    /// The body, masked: JSON when the response is JSON, text otherwise (a note when it is
    /// binary); absent when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub(crate) body: Option<Value>,
    /// The body was cut at `max_bytes` (the connection to the API was dropped there).
    pub(crate) truncated: bool,
    /// What to do about a truncated body, or a redirect that was not followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<String>,
    /// Values masked, per JSON-path rule and per detector.
    pub(crate) masked: MaskedCounts,
    /// Time from admission to the end, in milliseconds.
    pub(crate) duration_ms: u64,
}

/// Normalises and checks `req` into the request that would be sent, and its facts; fills
/// the audit `begin` (request line and masked body).
pub(crate) fn inspect(
    conn: &Connection,
    req: HttpRequest,
    begin: &mut AuditEvent,
    record_masking: &RequestMasking,
) -> Result<(Facts, HttpPlan), Problem> {
    let invalid = |m: String| Problem::new(Code::InvalidHttpRequest, m).with("rule", "inspect");
    let method = crate::inspect::http::normalize_method(&req.method).map_err(invalid)?;
    let path = crate::inspect::http::normalize_path(&req.path).map_err(invalid)?;
    let mut query = Vec::new();
    for (name, value) in req.query.into_iter().flatten() {
        let values = match value {
            Value::Array(items) => items,
            v => vec![v],
        };
        for v in values {
            query.push(NameValue {
                name: name.clone(),
                value: scalar(&v).ok_or_else(|| {
                    invalid(format!(
                        "query parameter `{name}`: give a string, number or boolean (or a list of them)"
                    ))
                })?,
            });
        }
    }
    let mut headers = Vec::new();
    for (name, value) in req.headers.into_iter().flatten() {
        let value =
            scalar(&value).ok_or_else(|| invalid(format!("header `{name}`: give a string")))?;
        crate::inspect::http::check_header(&name, &value).map_err(invalid)?;
        headers.push(NameValue {
            name: name.to_ascii_lowercase(),
            value,
        });
    }
    let (body, default_type) = match req.body {
        None | Some(Value::Null) => (None, None),
        Some(Value::String(text)) => (Some(text), Some("text/plain")),
        Some(json) => (Some(json.to_string()), Some("application/json")),
    };
    let content_type = match (&body, req.content_type) {
        (None, Some(_)) => {
            return Err(invalid("`content_type` without a `body`".into()));
        }
        (None, None) => None,
        (Some(_), Some(ct)) => {
            crate::inspect::http::check_header("content-type", &ct).map_err(invalid)?;
            Some(ct)
        }
        (Some(_), None) => default_type.map(str::to_string),
    };
    let limits = &conn.config.limits;
    let plan = HttpPlan {
        call: NormalizedHttp {
            method,
            path,
            query,
            headers,
            body,
            content_type: content_type.clone(),
        },
        timeout_ms: super::admit::clamp(
            req.timeout_ms,
            limits.timeout_ms,
            limits.max_timeout_ms,
            "timeout_ms",
        )?,
        max_bytes: super::admit::clamp(
            req.max_bytes,
            limits.max_bytes,
            limits.max_bytes_ceiling,
            "max_bytes",
        )?,
    };
    let mut http = plan.call.facts();
    // Facts carry the type without parameters, lowercase: what `content_types` matches.
    http.content_type = content_type.map(|ct| {
        ct.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    let facts = Facts {
        statement_count: 1,
        http: Some(http),
        ..Facts::default()
    };
    begin.facts = Some(facts.clone());
    begin.statement = Some(audit_text(&plan.call, record_masking));
    Ok((facts, plan))
}

/// The request as the audit keeps it: the request line, then the body masked (and cut).
fn audit_text(call: &NormalizedHttp, masking: &RequestMasking) -> String {
    let mut counts = MaskedCounts::default();
    let line = masking.text(&call.request_line(), &mut counts.detectors);
    match &call.body {
        None => line,
        Some(body) => {
            let mut text =
                masking.body_for_audit(call.content_type.as_deref(), body.as_bytes(), &mut counts);
            if text.len() > AUDIT_BODY_BYTES {
                let mut cut = AUDIT_BODY_BYTES;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
                text.push_str(" …(cut; the digest in facts covers the whole body)");
            }
            format!("{line}\n\n{text}")
        }
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Commits the `begin`, sends the request, masks the answer, and writes the `end`.
pub(crate) async fn run(admitted: Admitted) -> Result<HttpResult, Problem> {
    let Admitted {
        gateway,
        conn,
        begin,
        started,
        slot,
        masking,
        claim,
        work,
        opened,
        ..
    } = admitted;
    let super::admit::Work::Http(plan) = work else {
        return Err(Problem::internal("not an HTTP request"));
    };
    let Some(backend) = conn.http().cloned() else {
        if let Some(claim) = claim {
            super::review::release_claim(&gateway, claim).await;
        }
        return Err(Problem::internal(
            "an admitted HTTP request lost its backend",
        ));
    };
    let record = ExecutionRecord::open(gateway.clone(), begin, started, claim).await?;
    if let Some(opened) = opened {
        let _ = opened.send(());
    }
    let execution_id = record.execution_id().to_string();
    let rule = record.rule().to_string();
    let call = crate::backend::http::HttpCall {
        method: plan.call.method.clone(),
        path: plan.call.path.clone(),
        query: plan
            .call
            .query
            .iter()
            .map(|q| (q.name.clone(), q.value.clone()))
            .collect(),
        headers: plan
            .call
            .headers
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .chain(
                plan.call
                    .content_type
                    .iter()
                    .map(|ct| ("content-type".to_string(), ct.clone())),
            )
            .collect(),
        body: plan.call.body.clone().map(bytes::Bytes::from),
        timeout: Duration::from_millis(plan.timeout_ms),
        max_bytes: plan.max_bytes,
    };
    let cancel = gateway.shutdown.child_token();
    let sent = backend.send(call, cancel).await;
    drop(slot);
    let reply = match sent {
        Ok(reply) => reply,
        Err(e) => {
            let problem = Problem::from(e).with("execution_id", execution_id.clone());
            record
                .finish(Ending::failed(
                    super::command::outcome_of(&problem),
                    &problem,
                ))
                .await;
            return Err(problem);
        }
    };
    let mut masked = MaskedCounts::default();
    let body = if reply.body.is_empty() {
        None
    } else {
        let shown = masking.body(reply.content_type.as_deref(), &reply.body, &mut masked);
        let text = || Value::String(String::from_utf8_lossy(&shown.bytes).into_owned());
        // One JSON document is handed back as JSON (masked, or unchanged for an exempt
        // caller); NDJSON, text and anything else as text.
        let json_typed = reply
            .content_type
            .as_deref()
            .is_some_and(|ct| ct.to_ascii_lowercase().contains("json") && !ct.contains("ndjson"));
        Some(match shown.form {
            crate::mask::json::BodyForm::Json => {
                serde_json::from_slice(&shown.bytes).unwrap_or_else(|_| text())
            }
            crate::mask::json::BodyForm::Unchanged if json_typed => {
                serde_json::from_slice(&shown.bytes).unwrap_or_else(|_| text())
            }
            _ => text(),
        })
    };
    let note = match (&reply.redirect_refused, reply.truncated) {
        (Some(why), _) => Some(why.clone()),
        (None, true) => Some(format!(
            "the response body was cut at max_bytes = {}; ask for less (a narrower query, paging) or raise max_bytes up to the connection's ceiling",
            plan.max_bytes
        )),
        (None, false) => None,
    };
    let mut ending = Ending::ok();
    ending.http_status = Some(reply.status);
    ending.byte_count = Some(reply.body.len() as u64);
    ending.truncated = Some(reply.truncated);
    ending.masked = (!masked.is_empty())
        .then(|| serde_json::to_value(&masked).ok())
        .flatten();
    record.finish(ending).await;
    Ok(HttpResult {
        execution_id,
        rule,
        status: reply.status,
        headers: reply
            .headers
            .into_iter()
            .map(|(name, value)| NameValue { name, value })
            .collect(),
        body,
        truncated: reply.truncated,
        note,
        masked,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}
