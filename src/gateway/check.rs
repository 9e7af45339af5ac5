//! The dry run (`POST /v1/connections/{name}/check`): what Airlock would do with a request,
//! found by the very admission steps that decide it for real, with nothing run or held.
//!
//! What must stay true:
//! - The decision comes from [`admit::dry_run`], the same steps in the same order as
//!   [`admit::admit`]; a check that allows is a request that would be admitted, unless the
//!   policy, the connection or the caller's token changes in between.
//! - A check is audited (operation `check`, its decision and rule, outcome `ok`), because
//!   it tells the caller what the policy and masking are; it never touches the target
//!   beyond what admission already does (the connection's cached verification, and the
//!   cached schema strict masking and lineage need).
//! - What the request's content would be refused for (policy, guardrails, strict masking,
//!   a SQL syntax error, several statements) is a `deny` answer carrying the problem the
//!   real request would get. A request the check cannot take is answered with its problem
//!   instead, as the request would be: malformed (limits out of range, blank SQL, the
//!   wrong kind of connection: 400), a connection the caller may not see (404), a server
//!   that cannot decide now (429, 5xx).

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::admit::{self, DryVerdict, Request, Work};
use super::problem::{Code, Problem};
use super::record::{Ending, ExecutionRecord};
use super::{Caller, Gateway};
use crate::audit::Outcome;
use crate::inspect::Facts;
use crate::inspect::lineage::OutputLineage;
use crate::mask::plan::ColumnTreatment;

/// What the policy would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(example = "review")]
pub(crate) enum CheckDecision {
    /// It would run now.
    Allow,
    /// It would be held until a human approves it (202 with the review).
    Review,
    /// It would be refused; `problem` is the answer the request would get.
    Deny,
}

/// How one output column of a query would come back.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"position": 2, "sources": ["customers.email"], "treatment": "redact"}))]
pub(crate) struct OutputMasking {
    /// 1-based position in the result.
    pub(crate) position: usize,
    /// The stored columns the value is derived from (`table.column`); empty for a value
    /// derived from none (a literal, `count(*)`), absent when it cannot be traced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sources: Option<Vec<String>>,
    /// `redact`, `partial` or `hash` (masked whole by a column rule), `detectors` (values
    /// scanned by the content detectors, findings masked) or `none` (the caller is exempt).
    pub(crate) treatment: String,
}

/// The limits that would apply.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"max_rows": 1000, "max_bytes": 10485760, "timeout_ms": 30000}))]
pub(crate) struct CheckLimits {
    /// Rows the result is cut at (queries only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_rows: Option<u64>,
    /// Bytes of serialized rows (or command output) the answer is cut at.
    pub(crate) max_bytes: u64,
    /// Statement (or command) timeout, in milliseconds.
    pub(crate) timeout_ms: u64,
}

/// The answer of a dry run.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "check_id": "0193a0c4-6a7e-7c4e-9d0b-2f5e8c1a9b10",
    "decision": "allow",
    "rule": "agents-read",
    "statement": "SELECT name, email FROM customers WHERE id = $1",
    "facts": {"statement_count": 1, "kinds": ["select"], "unparsed": false, "tables_read": ["customers"]},
    "limits": {"max_rows": 1000, "max_bytes": 10485760, "timeout_ms": 30000},
    "output_masking": [{"position": 1, "sources": ["customers.name"], "treatment": "detectors"}, {"position": 2, "sources": ["customers.email"], "treatment": "redact"}]
}))]
pub(crate) struct CheckView {
    /// The check's own audit id (`GET /v1/audit?execution_id=`); nothing else has it.
    pub(crate) check_id: String,
    /// `allow` (it would run now), `review` (it would be held for a human's approval) or
    /// `deny` (it would be refused; `problem` is the answer it would get).
    pub(crate) decision: CheckDecision,
    /// The rule that decides (absent when a protocol check refuses before any rule).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rule: Option<String>,
    /// The rule's message (review, deny).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<String>,
    /// For `deny`: the RFC 9457 problem the request itself would be answered with.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub(crate) problem: Option<Value>,
    /// Groups whose members may approve it (`review`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) approvers: Vec<String>,
    /// The statement (or quoted argv) exactly as it would run: Airlock's rendering of what it
    /// inspected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) statement: Option<String>,
    /// What the inspector found (the facts rules match on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) facts: Option<Facts>,
    /// The limits that would apply (allow, review).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) limits: Option<CheckLimits>,
    /// Queries that would run or be held: how each output column would come back. Empty
    /// when the statement returns no rows or its outputs cannot be listed before it runs
    /// (then every output is masked as `redact` if column rules apply).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) output_masking: Vec<OutputMasking>,
}

/// The action a check body stands for, by the connection's kind: the body `/query`,
/// `/exec` or `/http` would take. For a connection the caller may not see it follows the
/// body's shape, and admission then answers the same 404 as the request would.
pub(crate) fn action_for(
    gateway: &Gateway,
    principal: &crate::identity::Principal,
    connection: &str,
    body: Value,
) -> Result<super::admit::Action, Problem> {
    use super::admit::Action;
    let malformed = |e: serde_json::Error| Problem::new(Code::MalformedBody, e.to_string());
    let visible = gateway
        .connections
        .get(connection)
        .filter(|_| gateway.policy.visible(principal, connection));
    let (sql, http) = match visible {
        Some(conn) => (conn.sql().is_some(), conn.http().is_some()),
        None => (body.get("sql").is_some(), body.get("method").is_some()),
    };
    Ok(if sql {
        Action::Query {
            request: serde_json::from_value(body).map_err(malformed)?,
            streaming: false,
        }
    } else if http {
        Action::Http(serde_json::from_value(body).map_err(malformed)?)
    } else {
        Action::Exec(serde_json::from_value(body).map_err(malformed)?)
    })
}

/// Answers a dry run of `request` and records it.
pub(crate) async fn check(gateway: &Arc<Gateway>, request: Request) -> Result<CheckView, Problem> {
    let caller: Caller = request.caller.clone();
    let connection = request.connection.clone();
    let dry = admit::dry_run(gateway, request).await;
    let mut begin = dry.begin;
    let check_id = begin.execution_id.clone();
    let mut view = CheckView {
        check_id: check_id.clone(),
        decision: CheckDecision::Deny,
        rule: begin.rule.clone(),
        message: None,
        problem: None,
        approvers: Vec::new(),
        statement: None,
        facts: begin.facts.clone(),
        limits: None,
        output_masking: Vec::new(),
    };
    match dry.verdict {
        Ok(DryVerdict::Allow {
            conn,
            masking,
            work,
        }) => {
            view.decision = CheckDecision::Allow;
            match *work {
                Work::Query { plan, limits, .. } => {
                    view.limits = Some(CheckLimits {
                        max_rows: Some(limits.max_rows),
                        max_bytes: limits.max_bytes,
                        timeout_ms: limits.timeout_ms,
                    });
                    view.output_masking = output_masking(&conn, &masking, &plan.sql).await;
                    view.statement = Some(plan.sql);
                }
                Work::Command(plan) => {
                    view.limits = Some(CheckLimits {
                        max_rows: None,
                        max_bytes: plan.max_bytes,
                        timeout_ms: plan.timeout_ms,
                    });
                    view.statement = crate::inspect::shell::quote_argv(&plan.argv).ok();
                }
                Work::Http(plan) => {
                    view.limits = Some(CheckLimits {
                        max_rows: None,
                        max_bytes: plan.max_bytes,
                        timeout_ms: plan.timeout_ms,
                    });
                    view.statement = Some(plan.call.request_line());
                }
                Work::Shell(_) | Work::Schema => {}
            }
        }
        Ok(DryVerdict::Review {
            facts,
            rule,
            message,
            work,
        }) => {
            view.decision = CheckDecision::Review;
            view.approvers = gateway
                .policy
                .rule(&rule)
                .and_then(|r| r.review.as_ref())
                .map(|r| r.approvers.clone())
                .unwrap_or_default();
            view.rule = Some(rule);
            view.message = Some(message);
            view.facts = Some(*facts);
            view.limits = Some(CheckLimits {
                max_rows: (!work.is_command()).then_some(work.max_rows),
                max_bytes: work.max_bytes,
                timeout_ms: work.timeout_ms,
            });
            if !work.is_command()
                && let Some(conn) = gateway.connections.get(&connection)
            {
                let masking = gateway.masking.for_request(&caller.principal, &connection);
                view.output_masking = output_masking(conn, &masking, &work.sql).await;
            }
            view.statement = Some(work.sql);
        }
        Err(problem) if answers_as_decision(&problem) => {
            let problem = problem.with("execution_id", check_id.clone());
            if begin.decision.is_none() || begin.decision.as_deref() == Some("allow") {
                begin.decision = Some("deny".into());
            }
            if let Some(rule) = problem.extra.get("rule").and_then(|r| r.as_str()) {
                begin.rule = Some(rule.to_string());
                view.rule = Some(rule.to_string());
            }
            view.message = Some(problem.detail.clone());
            view.problem = Some(problem.to_body());
        }
        // The caller may not see the connection, or the server cannot decide now: the
        // same answer the request would get.
        Err(problem) => return Err(admit::refuse(gateway, begin, dry.started, problem).await),
    }
    let record = ExecutionRecord::open(gateway.clone(), begin, dry.started, None).await?;
    record
        .finish(Ending::with_class(Outcome::Ok, "check"))
        .await;
    Ok(view)
}

/// Whether a refusal is what the request's content would get (reported as a `deny`
/// decision: policy, guardrails, masking, SQL syntax, several statements) rather than a
/// request the check itself cannot take: a malformed one (a limit out of range, blank SQL,
/// a command that is neither `argv` nor `command`, the wrong kind of connection), one the
/// caller may not see, or one the server cannot decide now.
fn answers_as_decision(problem: &Problem) -> bool {
    let status = problem.status();
    (400..500).contains(&status)
        && !matches!(
            problem.code,
            Code::NotFound
                | Code::Unauthorized
                | Code::TooManyRequests
                | Code::BodyReadTimeout
                | Code::MalformedBody
                | Code::InvalidLimit
                | Code::InvalidParams
                | Code::InvalidStatement
                | Code::InvalidCommand
                | Code::WrongOperation
        )
}

/// How each output of `sql` would be masked for the caller, by the same lineage and plan
/// the execution uses (the plan made before running: outputs as the statement defines them).
async fn output_masking(
    conn: &super::Connection,
    masking: &crate::mask::plan::RequestMasking,
    sql: &str,
) -> Vec<OutputMasking> {
    let schema = conn.schema_info().await;
    let lineage = crate::inspect::lineage::lineage_before_running(conn.config.kind, sql, &schema);
    let plan = if masking.is_empty() {
        Vec::new()
    } else {
        masking.plan(&lineage)
    };
    lineage
        .outputs
        .iter()
        .enumerate()
        .map(|(i, out)| OutputMasking {
            position: i + 1,
            sources: match out {
                OutputLineage::Known(sources) => Some(
                    sources
                        .iter()
                        .map(|s| format!("{}.{}", s.table, s.column))
                        .collect(),
                ),
                OutputLineage::Unknown => None,
            },
            treatment: match plan.get(i) {
                _ if masking.is_empty() => "none".into(),
                Some(ColumnTreatment::Whole(strategy)) => serde_json::to_value(strategy)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_else(|| "redact".into()),
                Some(ColumnTreatment::Scan) | None => "detectors".into(),
            },
        })
        .collect()
}
