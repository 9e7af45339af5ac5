//! Audit events (versioned) and the write-ahead writer.
//!
//! Invariants:
//! - A `begin` event is committed to the store before the backend sees anything; the
//!   request handler awaits that commit ([`writer::AuditWriter::commit`]).
//! - An `end` event is never dropped: if the store refuses it, it goes to an fsynced spool
//!   file and is replayed ([`writer::AuditWriter::commit_end`]).
//! - Every stored event is a link of a hash chain ([`chain`]): an edited, deleted or moved
//!   row is found by [`chain::verify`].
//! - No credential and no parameter value is ever put in an event; only counts.

pub mod chain;
pub mod writer;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::identity::Principal;

/// Bumped when the shape of [`AuditEvent`] changes incompatibly.
pub const AUDIT_SCHEMA_VERSION: u32 = 1;

/// Which part of a request an audit event records: `begin` (who, what, decision), `end`
/// (outcome), or a point `event` (review filed, approved, rejected, expired, session terminated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(example = "end")]
pub enum Phase {
    Begin,
    End,
    /// A point event that is not a request of its own (a review filed, approved, expired).
    Event,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Begin => "begin",
            Phase::End => "end",
            Phase::Event => "event",
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(example = "ok")]
pub enum Outcome {
    /// Ran to completion (possibly truncated by a cap; see `truncated`).
    Ok,
    /// Refused by policy; nothing ran.
    Denied,
    /// The database or backend reported an error.
    Error,
    /// Timed out and was cancelled on the server.
    Timeout,
    /// The client went away or the server shut down; cancelled on the server.
    Cancelled,
    /// The process stopped before the request finished (found at the next start).
    Interrupted,
    /// Held for human review; the run (if approved) is audited under the same execution id.
    PendingReview,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Cancelled => "cancelled",
            Outcome::Interrupted => "interrupted",
            Outcome::PendingReview => "pending_review",
        }
    }
}

/// Who made a request, as the audit log and reviews record it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"issuer": "dev", "subject": "agent-1", "kind": "agent", "groups": ["agents"], "actor": []}))]
pub struct AuditPrincipal {
    /// The configured issuer's name (not the `iss` URL).
    pub issuer: String,
    /// The token's subject (`sub`).
    pub subject: String,
    /// `agent` or `human`, from the issuer's configuration.
    pub kind: crate::config::PrincipalKind,
    /// The groups the token carries.
    pub groups: Vec<String>,
    /// RFC 8693 `act` chain, current actor first.
    pub actor: Vec<String>,
}

impl AuditPrincipal {
    /// Who a kept result or a job belongs to: the whole principal — issuer, subject, kind,
    /// delegation chain and groups — digested. A token for the same subject with another
    /// kind, chain or groups may be masked differently (a human in an exempt group sees
    /// clear values), so it is someone else here.
    pub fn owner_key(&self) -> String {
        let mut groups: Vec<&str> = self.groups.iter().map(String::as_str).collect();
        groups.sort_unstable();
        groups.dedup();
        let kind = serde_json::to_string(&self.kind).unwrap_or_default();
        let actors = self.actor.join("\n");
        let groups = groups.join("\n");
        crate::digest::digest(&[
            b"airlock-owner-v1",
            self.issuer.as_bytes(),
            self.subject.as_bytes(),
            kind.as_bytes(),
            actors.as_bytes(),
            groups.as_bytes(),
        ])
    }
}

impl From<&Principal> for AuditPrincipal {
    fn from(p: &Principal) -> Self {
        AuditPrincipal {
            issuer: p.issuer.clone(),
            subject: p.subject.clone(),
            kind: p.kind,
            groups: p.groups.clone(),
            actor: p.actor.clone(),
        }
    }
}

/// One audit event. `begin` carries who/what/decision; `end` carries the outcome.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"version": 1, "id": "0190f5c2-7a4f-7000-8000-000000000001", "seq": 1042, "time": "2025-01-01T12:00:00Z", "phase": "end", "execution_id": "0190f5c2-7a4e-7c3b-9f2a-5d1e8b6a4c21", "connection": "demo", "operation": "query", "outcome": "ok", "row_count": 2, "duration_ms": 4}))]
pub struct AuditEvent {
    /// Shape version of this event (bumped on incompatible changes).
    pub version: u32,
    /// Unique id of this event (UUIDv7).
    pub id: String,
    /// Position in the store's log; assigned by the store, used as the pagination cursor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    /// When the event was recorded.
    pub time: DateTime<Utc>,
    /// `begin`, `end` or `event`.
    pub phase: Phase,
    /// The execution (request) this event belongs to; its `begin` and `end` share it.
    pub execution_id: String,
    /// The transport's `X-Request-Id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Who made the request (or decided the review).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<AuditPrincipal>,
    /// The connection the request was on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// `query`, `schema`, ...
    pub operation: String,
    /// What runs: for SQL, Airlock's rendering of the inspected statement (masked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    /// The SQL text as the agent sent it, masked, when it differs from `statement`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted: Option<String>,
    /// How many parameters the statement had (their values are not recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params_count: Option<usize>,
    /// A command's standard input: its length in bytes and SHA-256 (hex). The content itself
    /// is in the session's recording, masked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_bytes: Option<u64>,
    /// SHA-256 (hex) of a command's standard input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_sha256: Option<String>,
    /// What inspection found in the statement or command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facts: Option<crate::inspect::Facts>,
    /// `allow` | `deny` | `review`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// The policy rule (or built-in check) that decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// How the request ended (`end` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Rows returned (or affected).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row_count: Option<u64>,
    /// Bytes of serialized rows or output sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub byte_count: Option<u64>,
    /// The result was cut by `max_rows` or `max_bytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
    /// Time from admission to the end, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Machine class of the error (`database`, `timeout`, `params`, ...) and SQLSTATE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
    /// SQLSTATE of a database error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
    /// Review id for held requests and review events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_id: Option<String>,
    /// Who approved a reviewed run (`issuer/subject`), or who decided a review event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approved_by: Vec<String>,
    /// The recorded session of a command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Hash-chain head of the recording when it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_digest: Option<String>,
    /// A command's exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// An HTTP API request's response status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// How many values were masked, per column and detector (never the values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masked: Option<serde_json::Value>,
    /// The rejection reason (`review.rejected`) or the approver's comment (`review.approved`,
    /// `review.approval_recorded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl AuditEvent {
    /// The event with every NUL character replaced by U+2400 (`␀`). PostgreSQL's text and
    /// jsonb refuse NUL, so a caller could otherwise put one in a statement, a connection
    /// name or a key and have its audit record refused; the record keeps where it was.
    pub fn without_nul(self) -> AuditEvent {
        fn clean(v: &mut serde_json::Value) {
            match v {
                serde_json::Value::String(s) if s.contains('\0') => {
                    *s = s.replace('\0', "\u{2400}");
                }
                serde_json::Value::Array(items) => items.iter_mut().for_each(clean),
                serde_json::Value::Object(map) => map.values_mut().for_each(clean),
                _ => {}
            }
        }
        // Most events have none: one serialisation tells.
        match serde_json::to_string(&self) {
            Ok(text) if text.contains("\\u0000") => {}
            _ => return self,
        }
        let Ok(mut value) = serde_json::to_value(&self) else {
            return self;
        };
        clean(&mut value);
        serde_json::from_value(value).unwrap_or(self)
    }

    pub fn new(phase: Phase, execution_id: &str, operation: &str) -> AuditEvent {
        AuditEvent {
            version: AUDIT_SCHEMA_VERSION,
            id: uuid::Uuid::now_v7().to_string(),
            seq: None,
            time: Utc::now(),
            phase,
            execution_id: execution_id.to_string(),
            request_id: None,
            principal: None,
            connection: None,
            operation: operation.to_string(),
            statement: None,
            submitted: None,
            params_count: None,
            stdin_bytes: None,
            stdin_sha256: None,
            facts: None,
            decision: None,
            rule: None,
            outcome: None,
            row_count: None,
            byte_count: None,
            truncated: None,
            duration_ms: None,
            error_class: None,
            sqlstate: None,
            review_id: None,
            approved_by: Vec::new(),
            reason: None,
            masked: None,
            session_id: None,
            recording_digest: None,
            exit_code: None,
            http_status: None,
        }
    }
}

/// Escapes control characters so a statement cannot forge log lines or terminal output.
pub fn escape_for_log(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}
