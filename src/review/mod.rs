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

pub mod flow;
pub mod hub;
pub mod notify;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::audit::AuditPrincipal;
use crate::config::PrincipalKind;
use crate::identity::Principal;
use crate::inspect::Facts;

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
}

impl HeldRequest {
    pub fn is_command(&self) -> bool {
        self.argv.is_some()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Approval {
    pub issuer: String,
    pub subject: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rejection {
    pub issuer: String,
    pub subject: String,
    pub reason: String,
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

/// Length-prefixed SHA-256 over the parts, hex. Length prefixes make the encoding
/// unambiguous: ("ab","c") and ("a","bc") differ.
pub fn digest(parts: &[&[u8]]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    hex::encode(ctx.finish().as_ref())
}

/// What an approval is bound to.
pub fn binding(
    requester: &AuditPrincipal,
    connection: &str,
    connection_version: &str,
    policy_version: &str,
    request: &HeldRequest,
) -> String {
    let params = serde_json::to_vec(&request.params).unwrap_or_default();
    let argv = serde_json::to_vec(&request.argv).unwrap_or_default();
    let stdin = serde_json::to_vec(&(&request.stdin, &request.target)).unwrap_or_default();
    let actor = requester.actor.join("\u{1f}");
    digest(&[
        requester.issuer.as_bytes(),
        requester.subject.as_bytes(),
        actor.as_bytes(),
        connection.as_bytes(),
        connection_version.as_bytes(),
        policy_version.as_bytes(),
        request.sql.as_bytes(),
        &params,
        &request.max_rows.to_be_bytes(),
        &request.max_bytes.to_be_bytes(),
        &request.timeout_ms.to_be_bytes(),
        &argv,
        &stdin,
    ])
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
            .any(|a| crate::policy::glob::matches(a, g))
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

/// Makes control and invisible characters visible, so a reviewer sees what will run:
/// `\n` stays a newline, everything else non-printing becomes `\u{...}`.
pub fn visible(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    for c in sql.chars() {
        let invisible = matches!(
            c,
            '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}' | '\u{feff}' | '\u{00ad}'
        );
        if c == '\n' {
            out.push(c);
        } else if c.is_control() || invisible {
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

    #[test]
    fn digest_is_length_prefixed() {
        assert_ne!(digest(&[b"ab", b"c"]), digest(&[b"a", b"bc"]));
        assert_eq!(digest(&[b"x"]), digest(&[b"x"]));
    }

    #[test]
    fn invisible_characters_are_shown() {
        assert_eq!(visible("a\u{202e}b\tc\nd"), "a\\u{202e}b\\u{9}c\nd");
    }
}
