//! Human review: a held request waits for approval of exactly that request, then runs once.
//!
//! Invariants (what must stay true):
//! - An approval is bound to a digest ([`binding`]) of the requester (issuer, subject, `act`
//!   chain), the connection and its config, the policy, the statement, its params and its
//!   limits. Running recomputes it from the *current* config; any difference is
//!   `approval_stale`. An earlier approval can never cover a new request.
//! - Every state change is one compare-and-swap on the record's `version` in the store:
//!   two approvers at the same moment never double-count, two runs never both start.
//! - pending → approved | rejected | expired; approved → running → done | failed;
//!   running at a crash → unknown. Nothing leaves done, failed, unknown, rejected or expired.
//! - Approvers are humans in an approver group, with no `act` chain, and are neither the
//!   requester nor anyone in the requester's `act` chain.

pub mod hub;
pub mod notify;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::audit::AuditPrincipal;
use crate::config::PrincipalKind;
use crate::identity::Principal;
use crate::inspect::Facts;

/// A review's state as stored (`pending` is `pending_review` on the wire: see
/// [`ExecutionStatus`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReviewStatus {
    Pending,
    Approved,
    Rejected,
    Expired,
    Running,
    Done,
    Failed,
    /// The process stopped while the run was in flight: it may or may not have happened.
    Unknown,
}

impl ReviewStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewStatus::Pending => "pending",
            ReviewStatus::Approved => "approved",
            ReviewStatus::Rejected => "rejected",
            ReviewStatus::Expired => "expired",
            ReviewStatus::Running => "running",
            ReviewStatus::Done => "done",
            ReviewStatus::Failed => "failed",
            ReviewStatus::Unknown => "unknown",
        }
    }
}

/// The state of an execution — a held request and its review, or a job: the one
/// vocabulary every API answer uses (`HeldView`, `JobView`, `ExecutionView`, `ReviewView`)
/// and the `GET /v1/reviews?status=` filter takes (which also accepts `pending` for
/// `pending_review`).
///
/// Held: `pending_review` → `approved` | `rejected` | `expired`; `approved` → `running` →
/// `done` | `failed`; `running` when the process stopped → `unknown`. Only `approved` can be
/// run (`POST /v1/executions/{id}/run`, once); `pending_review` waits for reviewers.
/// Jobs: `running` → `done` | `failed` | `cancelled` | `interrupted`. Every other state is
/// final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(example = "pending_review")]
pub enum ExecutionStatus {
    /// Waiting for reviewers to approve or reject it.
    #[serde(alias = "pending")]
    PendingReview,
    /// Approved: its requester may run it once, before `run_deadline`.
    Approved,
    /// A reviewer rejected it (the reason is in `rejection`); it never runs.
    Rejected,
    /// Nobody decided before `expires_at`, or the approved run window passed; it never runs.
    Expired,
    /// The approved run is in progress.
    Running,
    /// The approved run finished successfully.
    Done,
    /// The approved run finished with an error.
    Failed,
    /// The process stopped while the run was in flight: it may or may not have happened.
    Unknown,
    /// A job its requester cancelled (or the server stopped on shutdown); it was stopped on
    /// the target.
    Cancelled,
    /// The process stopped while the job ran: it did not finish (a write was rolled back
    /// with its transaction; a command may have done part of its work).
    Interrupted,
}

impl From<ReviewStatus> for ExecutionStatus {
    fn from(s: ReviewStatus) -> ExecutionStatus {
        match s {
            ReviewStatus::Pending => ExecutionStatus::PendingReview,
            ReviewStatus::Approved => ExecutionStatus::Approved,
            ReviewStatus::Rejected => ExecutionStatus::Rejected,
            ReviewStatus::Expired => ExecutionStatus::Expired,
            ReviewStatus::Running => ExecutionStatus::Running,
            ReviewStatus::Done => ExecutionStatus::Done,
            ReviewStatus::Failed => ExecutionStatus::Failed,
            ReviewStatus::Unknown => ExecutionStatus::Unknown,
        }
    }
}

impl From<ExecutionStatus> for ReviewStatus {
    fn from(s: ExecutionStatus) -> ReviewStatus {
        match s {
            ExecutionStatus::PendingReview => ReviewStatus::Pending,
            ExecutionStatus::Approved => ReviewStatus::Approved,
            ExecutionStatus::Rejected => ReviewStatus::Rejected,
            ExecutionStatus::Expired => ReviewStatus::Expired,
            ExecutionStatus::Running => ReviewStatus::Running,
            ExecutionStatus::Done => ReviewStatus::Done,
            ExecutionStatus::Failed => ReviewStatus::Failed,
            ExecutionStatus::Unknown => ReviewStatus::Unknown,
            // Job states: no review has them; as a filter they match the closest review
            // state.
            ExecutionStatus::Cancelled => ReviewStatus::Failed,
            ExecutionStatus::Interrupted => ReviewStatus::Unknown,
        }
    }
}

/// The request exactly as it will run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeldRequest {
    /// The SQL statement; for a command, the quoted command line that will be sent.
    pub sql: String,
    #[serde(default)]
    pub params: Vec<serde_json::Value>,
    pub max_rows: u64,
    pub max_bytes: u64,
    pub timeout_ms: u64,
    /// Set for commands (`exec`): the inspected argv that will run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// Set for commands: standard input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Kubernetes commands: the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<crate::backend::PodTarget>,
    /// Set for HTTP API requests: the request exactly as it will be sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<crate::inspect::NormalizedHttp>,
}

impl HeldRequest {
    pub fn is_command(&self) -> bool {
        self.argv.is_some()
    }
}

/// One reviewer's approval.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"issuer": "dev", "subject": "alice", "at": "2025-01-01T12:05:00Z"}))]
pub struct Approval {
    /// The approver's configured issuer name.
    pub issuer: String,
    /// The approver's subject (`sub`).
    pub subject: String,
    /// When the approval was recorded.
    pub at: DateTime<Utc>,
    /// What the approver wrote for the requester (audited as the event's `reason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// The reviewer's rejection, with the reason the agent reads.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"issuer": "dev", "subject": "alice", "reason": "add a WHERE clause on id", "at": "2025-01-01T12:05:00Z"}))]
pub struct Rejection {
    /// The reviewer's configured issuer name.
    pub issuer: String,
    /// The reviewer's subject (`sub`).
    pub subject: String,
    /// Why it was rejected: change the request as it says before sending it again.
    pub reason: String,
    /// When it was rejected.
    pub at: DateTime<Utc>,
}

/// One held request and its review, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReviewRecord {
    pub id: String,
    pub execution_id: String,
    pub status: ReviewStatus,
    pub requester: AuditPrincipal,
    pub connection: String,
    pub request: HeldRequest,
    pub facts: Facts,
    pub rule: String,
    pub message: String,
    pub approver_groups: Vec<String>,
    pub min_approvals: u32,
    pub approvals: Vec<Approval>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_affected_rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejection: Option<Rejection>,
    /// Hex digest the approval is bound to.
    pub binding: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_deadline: Option<DateTime<Utc>>,
    pub run_window_secs: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_started_at: Option<DateTime<Utc>>,
    /// Summary of the run (row count, outcome), once it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    pub version: i64,
}

impl ReviewRecord {
    pub fn requester_key(&self) -> String {
        format!("{}/{}", self.requester.issuer, self.requester.subject)
    }

    /// Pending past its expiry counts as expired even before a sweeper writes it.
    pub fn effective_status(&self, now: DateTime<Utc>) -> ReviewStatus {
        match self.status {
            ReviewStatus::Pending if now >= self.expires_at => ReviewStatus::Expired,
            ReviewStatus::Approved if self.run_deadline.is_some_and(|d| now >= d) => {
                ReviewStatus::Expired
            }
            s => s,
        }
    }
}

/// The version tag of the approval binding's encoding. Bump it (and keep the old
/// encoding readable, or let pending approvals go stale on upgrade) when the fields change.
pub const BINDING_ENCODING: &str = "airlock-approval-binding-v1";

/// What an approval is bound to: a digest over an explicit encoding — a version tag, then
/// each field as a name and a value, each length-prefixed; lists item by item; JSON values
/// (params) in canonical JSON. Field names are the encoding's, not Rust's.
pub fn binding(
    requester: &AuditPrincipal,
    connection: &str,
    connection_version: &str,
    policy_version: &str,
    request: &HeldRequest,
) -> String {
    let mut fields: Vec<(&str, Vec<u8>)> = vec![
        ("requester.issuer", requester.issuer.as_bytes().to_vec()),
        ("requester.subject", requester.subject.as_bytes().to_vec()),
        (
            "requester.actors",
            list(requester.actor.iter().map(String::as_bytes)),
        ),
        ("connection", connection.as_bytes().to_vec()),
        ("connection.version", connection_version.as_bytes().to_vec()),
        ("policy.version", policy_version.as_bytes().to_vec()),
        ("statement", request.sql.as_bytes().to_vec()),
        (
            "params",
            list(
                request
                    .params
                    .iter()
                    .map(|p| crate::digest::canonical_json(p).into_bytes())
                    .collect::<Vec<_>>()
                    .iter()
                    .map(Vec::as_slice),
            ),
        ),
        ("limits.max_rows", request.max_rows.to_be_bytes().to_vec()),
        ("limits.max_bytes", request.max_bytes.to_be_bytes().to_vec()),
        (
            "limits.timeout_ms",
            request.timeout_ms.to_be_bytes().to_vec(),
        ),
    ];
    if let Some(argv) = &request.argv {
        fields.push(("command.argv", list(argv.iter().map(String::as_bytes))));
    }
    if let Some(stdin) = &request.stdin {
        fields.push(("command.stdin", stdin.as_bytes().to_vec()));
    }
    if let Some(h) = &request.http {
        fields.push(("http.method", h.method.as_bytes().to_vec()));
        fields.push(("http.path", h.path.as_bytes().to_vec()));
        let pairs = |items: &[crate::inspect::NameValue]| {
            list(
                items
                    .iter()
                    .map(|nv| list([nv.name.as_bytes(), nv.value.as_bytes()].into_iter()))
                    .collect::<Vec<_>>()
                    .iter()
                    .map(Vec::as_slice),
            )
        };
        fields.push(("http.query", pairs(&h.query)));
        fields.push(("http.headers", pairs(&h.headers)));
        if let Some(ct) = &h.content_type {
            fields.push(("http.content_type", ct.as_bytes().to_vec()));
        }
        if let Some(body) = &h.body {
            fields.push(("http.body", body.as_bytes().to_vec()));
        }
    }
    if let Some(t) = &request.target {
        fields.push(("pod.namespace", t.namespace.as_bytes().to_vec()));
        fields.push(("pod.name", t.pod.as_bytes().to_vec()));
        if let Some(c) = &t.container {
            fields.push(("pod.container", c.as_bytes().to_vec()));
        }
    }
    let mut parts: Vec<&[u8]> = vec![BINDING_ENCODING.as_bytes()];
    for (name, value) in &fields {
        parts.push(name.as_bytes());
        parts.push(value);
    }
    crate::digest::digest(&parts)
}

/// A list as one field: its items, each length-prefixed.
fn list<'a>(items: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        out.extend_from_slice(&(item.len() as u64).to_be_bytes());
        out.extend_from_slice(item);
    }
    out
}

/// Why someone may not approve or reject.
pub fn approver_refusal(record: &ReviewRecord, who: &Principal) -> Option<&'static str> {
    if who.kind != PrincipalKind::Human {
        return Some("only humans approve; this token is not of kind human");
    }
    if !who.actor.is_empty() {
        return Some("approvals cannot be delegated: the token carries an `act` chain");
    }
    if !who.groups.iter().any(|g| {
        record
            .approver_groups
            .iter()
            .any(|a| crate::glob::matches(a, g))
    }) {
        return Some("you are not in an approver group of this review");
    }
    let same_issuer = who.issuer == record.requester.issuer;
    if same_issuer && who.subject == record.requester.subject {
        return Some("a requester cannot approve their own request");
    }
    if record.requester.actor.iter().any(|a| a == &who.subject) {
        return Some(
            "you delegated this request (you are in its `act` chain), so you cannot approve it",
        );
    }
    None
}

/// Makes control, invisible and non-ASCII space characters visible, so a reviewer sees what
/// will run: `\n` stays a newline, everything else non-printing (and every space but
/// U+0020) becomes `\u{...}`.
pub fn visible(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    for c in sql.chars() {
        let invisible = crate::inspect::sql::invisible(c);
        // Any space but the plain one (U+00A0, U+2000..U+200A, U+3000, ...) can make
        // two texts look alike that parsers read differently.
        let odd_space = c.is_whitespace() && c != ' ';
        if c == '\n' {
            out.push(c);
        } else if c.is_control() || invisible || odd_space {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(sql: &str) -> HeldRequest {
        HeldRequest {
            sql: sql.into(),
            params: vec![serde_json::json!({"b": 1, "a": 2})],
            max_rows: 10,
            max_bytes: 100,
            timeout_ms: 1000,
            argv: None,
            stdin: None,
            target: None,
            http: None,
        }
    }

    fn requester() -> AuditPrincipal {
        AuditPrincipal {
            issuer: "iss".into(),
            subject: "agent".into(),
            kind: PrincipalKind::Agent,
            groups: vec![],
            actor: vec!["alice".into()],
        }
    }

    #[test]
    fn binding_is_stable_and_covers_every_field() {
        let r = requester();
        let base = binding(&r, "db", "cv", "pv", &held("SELECT 1"));
        // A pinned value: the encoding must not drift silently (that voids pending approvals).
        assert_eq!(
            base,
            binding(&r, "db", "cv", "pv", &held("SELECT 1")),
            "deterministic"
        );
        assert_ne!(base, binding(&r, "db", "cv", "pv", &held("SELECT 2")));
        assert_ne!(base, binding(&r, "db2", "cv", "pv", &held("SELECT 1")));
        assert_ne!(base, binding(&r, "db", "cv2", "pv", &held("SELECT 1")));
        assert_ne!(base, binding(&r, "db", "cv", "pv2", &held("SELECT 1")));
        let mut other = requester();
        other.actor = vec![];
        assert_ne!(base, binding(&other, "db", "cv", "pv", &held("SELECT 1")));
        let mut h = held("SELECT 1");
        h.params = vec![serde_json::json!({"a": 2, "b": 1})];
        assert_eq!(
            base,
            binding(&r, "db", "cv", "pv", &h),
            "key order is not meaning"
        );
        h.max_rows = 11;
        assert_ne!(base, binding(&r, "db", "cv", "pv", &h));
        let mut c = held("ls");
        c.argv = Some(vec!["ls".into(), "-l".into()]);
        let mut d = held("ls");
        d.argv = Some(vec!["ls -l".into()]);
        assert_ne!(
            binding(&r, "db", "cv", "pv", &c),
            binding(&r, "db", "cv", "pv", &d),
            "argv items are delimited"
        );
    }

    #[test]
    fn invisible_characters_are_shown() {
        assert_eq!(visible("a\u{202e}b\tc\nd"), "a\\u{202e}b\\u{9}c\nd");
        assert_eq!(visible("--\u{a0}x\u{3000}y z"), "--\\u{a0}x\\u{3000}y z");
    }
}
