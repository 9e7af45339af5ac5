//! Admission: the one function every entry goes through before anything touches a target.
//!
//! Order (and why): the principal's slot first (a flood is refused before it costs work);
//! resolve and verify the connection (nothing may touch a target that has not passed its
//! privilege and own-store checks — strict masking and schema reads do); limits; inspect;
//! decide; strict masking (a policy denial is reported as such, so it comes after).
//!
//! What must stay true:
//! - Every refusal, on every entry path, is audited by [`refuse`] (begin + end), and only
//!   there. A refusal the store cannot record becomes a 503.
//! - A review-run is admitted by the same steps from the stored request; its approval
//!   binding is recomputed from the request as admitted now, so an approval never covers
//!   anything but the exact request that was approved. The run is claimed last, after every
//!   check that can refuse.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::command::{CommandPlan, ExecRequest};
use super::connection::Connection;
use super::problem::{Code, Problem};
use super::query::{AppliedLimits, QueryRequest};
use super::review::{self, HoldOptions};
use super::shell::ShellRequest;
use super::slots::Slot;
use super::{Caller, Gateway};
use crate::audit::{AuditEvent, Outcome, Phase};
use crate::backend::QueryPlan;
use crate::config::ConnectionKind;
use crate::inspect::{self, Facts};
use crate::mask::plan::RequestMasking;
use crate::policy::Decision;
use crate::review::{HeldRequest, ReviewRecord};

/// The rule id strict masking refusals carry.
pub(crate) const STRICT_RULE: &str = "masking-strict";
/// The rule id schema reads are admitted by: seeing the connection is enough.
pub(crate) const SCHEMA_RULE: &str = "connection-visible";

/// What an entry asks for.
pub(crate) enum Action {
    Query {
        request: QueryRequest,
        /// NDJSON streams in constant memory, so its default row cap is the ceiling.
        streaming: bool,
    },
    Exec(ExecRequest),
    Http(super::http::HttpRequest),
    Shell(ShellRequest),
    Schema,
    /// Run an approved held request once, as its requester.
    RunApproved {
        execution_id: String,
    },
}

impl Action {
    fn operation(&self) -> &'static str {
        match self {
            Action::Query { .. } => "query",
            Action::Exec(_) => "exec",
            Action::Http(_) => "http",
            Action::Shell(_) => "shell",
            Action::Schema => "schema",
            Action::RunApproved { .. } => "run",
        }
    }
}

/// One request, transport-free.
pub(crate) struct Request {
    pub(crate) caller: Caller,
    /// The connection name as the caller gave it (ignored for `RunApproved`).
    pub(crate) connection: String,
    pub(crate) action: Action,
    pub(crate) hold: HoldOptions,
    /// A slot already held (a request that waited for its review keeps its slot).
    pub(crate) slot: Option<Slot>,
}

impl Request {
    pub(crate) fn new(caller: Caller, connection: impl Into<String>, action: Action) -> Request {
        Request {
            caller,
            connection: connection.into(),
            action,
            hold: HoldOptions::default(),
            slot: None,
        }
    }

    pub(crate) fn with_hold(mut self, hold: HoldOptions) -> Request {
        self.hold = hold;
        self
    }
}

/// What admission decided.
pub(crate) enum Admission {
    Ready(Box<Admitted>),
    Held(review::HeldView),
    /// A retry of a request that already ran: its kept result, sent again (nothing runs).
    Kept(Box<super::results::Kept>),
}

/// A request that passed every check, ready to start. Its `begin` is not committed yet:
/// starting it opens the [`super::record::ExecutionRecord`].
pub(crate) struct Admitted {
    pub(crate) gateway: Arc<Gateway>,
    /// Who asked (schema reads list only what the policy lets them read).
    pub(crate) principal: crate::identity::Principal,
    pub(crate) conn: Arc<Connection>,
    pub(crate) begin: AuditEvent,
    pub(crate) started: Instant,
    /// Held until the execution ends, streaming and shell sessions included.
    pub(crate) slot: Slot,
    /// What the requester may not see.
    pub(crate) masking: RequestMasking,
    /// The approval this run consumes, claimed (`running`).
    pub(crate) claim: Option<ReviewRecord>,
    pub(crate) work: Work,
    /// Told once the `begin` is durable (a job answers only then: its id must name an
    /// execution on record). Queries and commands tell it; dropped unsent if starting
    /// fails first.
    pub(crate) opened: Option<tokio::sync::oneshot::Sender<()>>,
}

pub(crate) enum Work {
    Query {
        plan: QueryPlan,
        limits: AppliedLimits,
        /// Bytes this query reserves from the process memory budget.
        reserve: u64,
        /// That reservation, taken when the query is admitted and held until it ends.
        memory: Option<tokio::sync::OwnedSemaphorePermit>,
    },
    Command(CommandPlan),
    Http(super::http::HttpPlan),
    Shell(ShellRequest),
    Schema,
}

impl Work {
    /// The request exactly as it will run, as a review stores and binds it.
    fn held(&self) -> Option<HeldRequest> {
        match self {
            Work::Query { plan, limits, .. } => Some(HeldRequest {
                sql: plan.sql.clone(),
                params: plan.params.clone(),
                max_rows: limits.max_rows,
                max_bytes: limits.max_bytes,
                timeout_ms: limits.timeout_ms,
                argv: None,
                stdin: None,
                target: None,
                http: None,
            }),
            Work::Command(c) => Some(HeldRequest {
                sql: crate::inspect::shell::quote_argv(&c.argv).ok()?,
                params: Vec::new(),
                max_rows: 0,
                max_bytes: c.max_bytes,
                timeout_ms: c.timeout_ms,
                argv: Some(c.argv.clone()),
                stdin: c.stdin.clone(),
                target: c.target.clone(),
                http: None,
            }),
            Work::Http(h) => Some(HeldRequest {
                sql: h.call.request_line(),
                params: Vec::new(),
                max_rows: 0,
                max_bytes: h.max_bytes,
                timeout_ms: h.timeout_ms,
                argv: None,
                stdin: None,
                target: None,
                http: Some(h.call.clone()),
            }),
            Work::Shell(_) | Work::Schema => None,
        }
    }
}

/// Admits `request`: a request ready to start, a held review, or an audited refusal.
pub(crate) async fn admit(gateway: &Arc<Gateway>, request: Request) -> Result<Admission, Problem> {
    let started = Instant::now();
    let Request {
        caller,
        connection,
        action,
        hold,
        slot,
    } = request;
    // A run is the stored request, admitted again.
    let (connection, action, approval) = match action {
        Action::RunApproved { execution_id } => {
            let record =
                review::load_for_run(gateway, &caller, &execution_id, hold.wait, started).await?;
            let action = action_of(&record.request);
            (record.connection.clone(), action, Some(record))
        }
        action => (connection, action, None),
    };
    let execution_id = match &approval {
        Some(r) => r.execution_id.clone(),
        None => uuid::Uuid::now_v7().to_string(),
    };
    let mut begin = AuditEvent::new(Phase::Begin, &execution_id, action.operation());
    begin.request_id = caller.request_id.clone();
    begin.principal = Some((&caller.principal).into());
    begin.connection = Some(connection.clone());
    if let Some(r) = &approval {
        begin.review_id = Some(r.id.clone());
        begin.approved_by = r
            .approvals
            .iter()
            .map(|a| format!("{}/{}", a.issuer, a.subject))
            .collect();
    }
    // What was asked is on record even when an early step refuses it (the steps replace it
    // with the inspected form as they go).
    let record_masking = gateway.masking.for_record(&connection);
    match &action {
        Action::Query { request, .. } => {
            begin.statement = Some(record_masking.text(&request.sql, &mut Default::default()));
            begin.params_count = Some(request.params.len());
        }
        Action::Exec(request) => {
            let asked = match (&request.argv, &request.command) {
                (Some(argv), _) => {
                    crate::inspect::shell::quote_argv(argv).unwrap_or_else(|_| format!("{argv:?}"))
                }
                (None, Some(command)) => command.clone(),
                (None, None) => String::new(),
            };
            begin.statement = Some(record_masking.text(&asked, &mut Default::default()));
        }
        _ => {}
    }
    let steps = Steps {
        gateway,
        caller: &caller,
        name: &connection,
        approval: approval.as_ref(),
        record_masking: &record_masking,
    };
    match steps.run(action, slot, &mut begin).await {
        Ok(Verdict::Ready {
            conn,
            slot,
            masking,
            work,
        }) => {
            let work = *work;
            let claim = match approval {
                Some(record) => match review::claim_run(gateway, record).await {
                    Ok(claimed) => Some(claimed),
                    Err(problem) => return Err(refuse(gateway, begin, started, problem).await),
                },
                None => None,
            };
            Ok(Admission::Ready(Box::new(Admitted {
                gateway: gateway.clone(),
                principal: caller.principal.clone(),
                conn,
                begin,
                started,
                slot,
                masking,
                claim,
                work,
                opened: None,
            })))
        }
        Ok(Verdict::Hold(held)) => review::hold(gateway, caller, begin, started, hold, held).await,
        Err(problem) => Err(refuse(gateway, begin, started, problem).await),
    }
}

/// What admission would do with a request, found by the same steps that admit it, with
/// nothing run, held or recorded: the caller (the check endpoint) records it.
pub(crate) struct DryRun {
    /// The `begin` as admission filled it (facts, decision, rule, canonical statement).
    pub(crate) begin: AuditEvent,
    pub(crate) started: Instant,
    pub(crate) verdict: Result<DryVerdict, Problem>,
}

pub(crate) enum DryVerdict {
    /// It would run, under these limits and with this masking.
    Allow {
        conn: Arc<Connection>,
        masking: RequestMasking,
        work: Box<Work>,
    },
    /// It would be held for a human's approval.
    Review {
        facts: Box<Facts>,
        rule: String,
        message: String,
        work: Box<HeldRequest>,
    },
}

/// Runs the admission steps for `request` and stops before anything would start: a slot
/// and memory are taken and given back at once, so a dry run is refused when the real
/// request would be (429, memory budget) and costs nothing after.
pub(crate) async fn dry_run(gateway: &Arc<Gateway>, request: Request) -> DryRun {
    let started = Instant::now();
    let Request {
        caller,
        connection,
        action,
        ..
    } = request;
    let execution_id = uuid::Uuid::now_v7().to_string();
    let mut begin = AuditEvent::new(Phase::Begin, &execution_id, "check");
    begin.request_id = caller.request_id.clone();
    begin.principal = Some((&caller.principal).into());
    begin.connection = Some(connection.clone());
    let record_masking = gateway.masking.for_record(&connection);
    if let Action::Query { request, .. } = &action {
        begin.statement = Some(record_masking.text(&request.sql, &mut Default::default()));
    }
    let steps = Steps {
        gateway,
        caller: &caller,
        name: &connection,
        approval: None,
        record_masking: &record_masking,
    };
    let verdict = match steps.run(action, None, &mut begin).await {
        Ok(Verdict::Ready {
            conn,
            masking,
            work,
            ..
        }) => Ok(DryVerdict::Allow {
            conn,
            masking,
            work,
        }),
        Ok(Verdict::Hold(held)) => Ok(DryVerdict::Review {
            facts: Box::new(held.facts),
            rule: held.rule,
            message: held.message,
            work: Box::new(held.request),
        }),
        Err(problem) => Err(problem),
    };
    DryRun {
        begin,
        started,
        verdict,
    }
}

/// Records a request refused before execution (begin + end), then returns the problem to
/// answer with. If the store cannot take the record, the refusal still stands but becomes
/// a 503: an unaudited refusal is not an answer Airlock gives.
pub(crate) async fn refuse(
    gateway: &Arc<Gateway>,
    mut begin: AuditEvent,
    started: Instant,
    problem: Problem,
) -> Problem {
    let problem = if problem.extra.contains_key("execution_id") {
        problem
    } else {
        problem.with("execution_id", begin.execution_id.clone())
    };
    if problem.status() < 500
        && (begin.decision.is_none() || begin.decision.as_deref() == Some("allow"))
    {
        // Refused by a step, not by a deny rule: record that it was not let through.
        begin.decision = Some("deny".into());
    }
    if let Some(rule) = problem.extra.get("rule").and_then(|r| r.as_str()) {
        begin.rule = Some(rule.to_string());
    }
    if problem.code == Code::MaskingStrict {
        // Strict masking overrides an allow or a review: nothing is let through or held.
        begin.decision = Some("deny".into());
    }
    let outcome = if problem.status() >= 500 {
        Outcome::Error
    } else {
        Outcome::Denied
    };
    // Subjects and connection names come from tokens and URLs: escaped so a crafted value
    // cannot forge log lines. Statements are never logged (audit keeps them, masked).
    tracing::info!(
        execution_id = %begin.execution_id,
        principal = %begin.principal.as_ref().map(|p| crate::audit::escape_for_log(&format!("{}/{}", p.issuer, p.subject))).unwrap_or_default(),
        connection = %crate::audit::escape_for_log(begin.connection.as_deref().unwrap_or("")),
        rule = %begin.rule.as_deref().unwrap_or(""),
        code = problem.code.as_str(),
        "request refused"
    );
    match super::record::ExecutionRecord::open(gateway.clone(), begin, started, None).await {
        Ok(record) => {
            record
                .finish(super::record::Ending::failed(outcome, &problem))
                .await;
            problem
        }
        Err(unavailable) => unavailable,
    }
}

/// The action a stored held request came from.
fn action_of(held: &HeldRequest) -> Action {
    if let Some(h) = &held.http {
        return Action::Http(super::http::HttpRequest::from_normalized(
            h,
            held.max_bytes,
            held.timeout_ms,
        ));
    }
    match &held.argv {
        Some(argv) => Action::Exec(ExecRequest {
            argv: Some(argv.clone()),
            command: None,
            stdin: held.stdin.clone(),
            timeout_ms: Some(held.timeout_ms),
            max_bytes: Some(held.max_bytes),
            target: held.target.clone(),
        }),
        None => Action::Query {
            request: QueryRequest {
                sql: held.sql.clone(),
                params: held.params.clone(),
                max_rows: Some(held.max_rows),
                max_bytes: Some(held.max_bytes),
                timeout_ms: Some(held.timeout_ms),
            },
            streaming: false,
        },
    }
}

// Built once per request and consumed at once: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Verdict {
    Ready {
        conn: Arc<Connection>,
        slot: Slot,
        masking: RequestMasking,
        work: Box<Work>,
    },
    Hold(review::Held),
}

struct Steps<'a> {
    gateway: &'a Arc<Gateway>,
    caller: &'a Caller,
    name: &'a str,
    approval: Option<&'a ReviewRecord>,
    /// The connection's masking for what the audit keeps (whoever asks).
    record_masking: &'a RequestMasking,
}

impl Steps<'_> {
    /// The steps in order. `begin` collects what the audit keeps as they go; an `Err` is
    /// refused (and audited) by the caller.
    async fn run(
        &self,
        action: Action,
        slot: Option<Slot>,
        begin: &mut AuditEvent,
    ) -> Result<Verdict, Problem> {
        let gw = self.gateway;
        let slot = match slot {
            Some(s) => s,
            None => gw
                .slots
                .acquire(&self.caller.principal)
                .map_err(|p| p.with("rule", "principal-concurrency"))?,
        };
        let conn = self.resolve()?;
        let mut slot = slot;
        let share = conn.config.limits.per_principal();
        gw.slots
            .take_share(&mut slot, &self.caller.principal, self.name, share)
            .map_err(|p| p.with("rule", "principal-pool-share"))?;
        check_operation(&conn, &action)?;
        conn.ensure_verified().await.map_err(Problem::from)?;
        let (facts, work) = match action {
            Action::Query { request, streaming } => {
                let limits = query_limits(&conn, &request, streaming)?;
                let (facts, statement) = self.inspect_sql(&conn, &request.sql, begin)?;
                let plan = QueryPlan {
                    sql: statement,
                    params: request.params,
                    max_rows: limits.max_rows,
                    timeout: Duration::from_millis(limits.timeout_ms),
                    max_affected_rows: self.approval.and_then(|r| r.max_affected_rows),
                    reads_only: facts.reads_only(),
                };
                // NDJSON streams rows through in constant memory; JSON holds the response.
                let row = conn.config.limits.max_value_bytes.saturating_mul(2);
                let reserve = if streaming {
                    row
                } else {
                    row.saturating_add(limits.max_bytes)
                };
                (
                    facts,
                    Work::Query {
                        plan,
                        limits,
                        reserve,
                        memory: None,
                    },
                )
            }
            Action::Exec(request) => {
                let (facts, plan) =
                    super::command::inspect(&conn, request, begin, self.record_masking)?;
                (facts, Work::Command(plan))
            }
            Action::Http(request) => {
                let (facts, plan) =
                    super::http::inspect(&conn, request, begin, self.record_masking)?;
                (facts, Work::Http(plan))
            }
            Action::Shell(request) => {
                super::shell::check(&conn, &request)?;
                let facts = Facts {
                    statement_count: 1,
                    shell: true,
                    ..Facts::default()
                };
                begin.facts = Some(facts.clone());
                (facts, Work::Shell(request))
            }
            Action::Schema => (Facts::default(), Work::Schema),
            Action::RunApproved { .. } => {
                return Err(Problem::internal("a run cannot run another run"));
            }
        };

        let decision = self.decide(&conn, &facts, &work)?;
        begin.decision = Some(decision.action().into());
        begin.rule = Some(decision.rule().into());
        let masking = gw.masking.for_request(&self.caller.principal, self.name);
        if let Work::Query { plan, .. } = &work
            && !matches!(decision, Decision::Deny { .. })
            && let Some(why) = strict_refusal(&masking, &conn, &plan.sql).await
        {
            return Err(Problem::new(Code::MaskingStrict, why).with("rule", STRICT_RULE));
        }
        match decision {
            Decision::Allow { rule } => {
                if let Work::Command(c) = &work
                    && c.argv.is_empty()
                {
                    return Err(Problem::new(
                        Code::CompoundCommand,
                        "only one plain command runs through Airlock (send `argv`); lists, pipes, redirections, substitutions, expansions and globs do not",
                    )
                    .with("rule", rule));
                }
                let mut work = work;
                if let Work::Query {
                    reserve, memory, ..
                } = &mut work
                {
                    *memory = Some(reserve_memory(gw, &conn, *reserve).await?);
                }
                Ok(Verdict::Ready {
                    conn,
                    slot,
                    masking,
                    work: Box::new(work),
                })
            }
            Decision::Deny { rule, message } => {
                if let Work::Query { plan, .. } = &work
                    && facts.unparsed
                {
                    return Err(unparsed_refusal(conn.config.kind, &plan.sql, rule, message));
                }
                let message = match facts.command.as_ref().and_then(|c| c.reason.as_ref()) {
                    Some(reason) if facts.unparsed => format!("{message} ({reason})"),
                    _ => message,
                };
                Err(Problem::new(Code::PolicyDenied, message).with("rule", rule))
            }
            Decision::Review { rule, message } => match work.held() {
                Some(request) if !matches!(&work, Work::Command(c) if c.argv.is_empty()) => {
                    Ok(Verdict::Hold(review::Held {
                        conn,
                        slot,
                        facts,
                        request,
                        rule,
                        message,
                    }))
                }
                _ if matches!(work, Work::Shell(_)) => Err(Problem::new(
                    Code::ReviewRequired,
                    format!("{message}; interactive shells cannot be held for review: use exec, whose commands can be"),
                )
                .with("rule", rule)),
                _ => Err(Problem::new(
                    Code::CompoundCommand,
                    "only one plain command can be approved and run (send `argv`)",
                )
                .with("rule", rule)),
            },
        }
    }

    fn resolve(&self) -> Result<Arc<Connection>, Problem> {
        let gw = self.gateway;
        gw.connections
            .get(self.name)
            .filter(|_| gw.policy.visible(&self.caller.principal, self.name))
            .cloned()
            .ok_or_else(|| match self.approval {
                Some(_) => review::stale("the connection is gone or no longer visible to you"),
                None => Problem::unknown_connection(self.name),
            })
    }

    /// The facts of `sql` and the statement that runs: Airlock's rendering of the inspected
    /// tree. Input the inspector could not account for has no rendering; if a rule admits
    /// `unparsed` input explicitly, the agent's text runs as sent.
    fn inspect_sql(
        &self,
        conn: &Connection,
        sql: &str,
        begin: &mut AuditEvent,
    ) -> Result<(Facts, String), Problem> {
        let kind = conn
            .sql()
            .map(|b| b.kind())
            .ok_or_else(|| Problem::internal("not a SQL connection"))?;
        let inspected = inspect::sql::inspect_memoized(kind, sql).map_err(|e| {
            Problem::new(Code::InvalidStatement, e.to_string()).with("rule", "inspect")
        })?;
        let facts = inspected.facts;
        begin.facts = Some(facts.clone());
        let statement = match inspected.statement {
            Some(canonical) => {
                if canonical != sql {
                    begin.submitted = begin.statement.take();
                    begin.statement = Some(
                        self.record_masking
                            .text(&canonical, &mut Default::default()),
                    );
                }
                canonical
            }
            None => sql.to_string(),
        };
        // One statement per request is a protocol rule, not a policy choice.
        if facts.statement_count > 1 {
            return Err(Problem::new(
                Code::MultipleStatements,
                format!(
                    "the request holds {} statements; send exactly one statement per request",
                    facts.statement_count
                ),
            )
            .with("rule", "single-statement"));
        }
        Ok((facts, statement))
    }

    /// The policy's decision — or, for an approved run, the approval, if it still holds.
    fn decide(&self, conn: &Connection, facts: &Facts, work: &Work) -> Result<Decision, Problem> {
        let gw = self.gateway;
        let principal = &self.caller.principal;
        if matches!(work, Work::Schema) {
            return Ok(Decision::Allow {
                rule: SCHEMA_RULE.into(),
            });
        }
        let Some(record) = self.approval else {
            return Ok(gw.policy.decide(principal, self.name, facts));
        };
        // Same requester (incl. act chain), same connection config, same policy, same request.
        let bound = work.held().map(|held| {
            crate::review::binding(
                &principal.into(),
                self.name,
                &conn.version,
                &gw.policy.version(),
                &held,
            )
        });
        if bound.as_deref() != Some(record.binding.as_str()) {
            return Err(review::stale(
                "the request, your token's delegation chain, the connection's config or the policy changed since the approval; send the request again",
            ));
        }
        if let Decision::Deny { rule, message } = gw.policy.decide(principal, self.name, facts) {
            return Err(
                review::stale(format!("a deny rule now applies: {message}")).with("rule", rule)
            );
        }
        Ok(Decision::Allow {
            rule: record.rule.clone(),
        })
    }
}

/// The refusal of a denied statement the inspector could not parse. A syntax error is the
/// agent's to fix, so it is answered as one, with the parser's message and position, rather
/// than as a policy decision; the deny rule is still named, since it is what refused it.
/// A statement the server's grammar accepts but the inspector cannot check stays a policy
/// denial, with the inspector's own complaint when it has one.
fn unparsed_refusal(kind: ConnectionKind, sql: &str, rule: String, message: String) -> Problem {
    match inspect::sql::syntax_error(kind, sql) {
        Some(e) if e.parser == "postgresql" || kind != ConnectionKind::Postgres => {
            let mut p = Problem::new(
                Code::SqlSyntax,
                format!(
                    "{}{}; nothing ran: fix the statement and send it again",
                    e.message,
                    match e.line.zip(e.column) {
                        Some((line, column)) => format!(" (line {line}, column {column})"),
                        None => String::new(),
                    }
                ),
            )
            .with("rule", rule)
            .with("parser", e.parser);
            if let Some(position) = e.position {
                p = p.with("position", position);
            }
            if let Some(line) = e.line {
                p = p.with("line", line);
            }
            if let Some(column) = e.column {
                p = p.with("column", column);
            }
            p
        }
        _ => Problem::new(Code::PolicyDenied, message).with("rule", rule),
    }
}

/// Reserves what a query may hold in memory (see `Work::Query::reserve`). Waits up to the
/// pool wait for others to finish, then refuses: many concurrent requests cannot multiply
/// the per-request caps past `server.memory_budget_bytes`.
async fn reserve_memory(
    gateway: &Gateway,
    conn: &Connection,
    bytes: u64,
) -> Result<tokio::sync::OwnedSemaphorePermit, Problem> {
    let kib = bytes.div_ceil(1024);
    let refused = |why: String| {
        Problem::new(Code::MemoryBudget, why)
            .retry_after(1)
            .with("rule", "memory-budget")
    };
    let budget = gateway.memory_total;
    let Some(kib) = u32::try_from(kib).ok().filter(|k| u64::from(*k) <= budget) else {
        return Err(refused(format!(
            "this request would hold {bytes} bytes (max_bytes plus twice max_value_bytes), more than the server's whole memory budget; ask for a smaller max_bytes or stream it as NDJSON"
        )));
    };
    let wait = conn.config.limits.pool_wait();
    match tokio::time::timeout(wait, gateway.memory.clone().acquire_many_owned(kib)).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(refused(format!(
            "requests in flight hold the server's memory budget; this one needs {bytes} bytes (max_bytes plus twice max_value_bytes): retry, or ask for a smaller max_bytes"
        ))),
    }
}

/// `query` on a command target, `exec` or a shell on a SQL target.
fn check_operation(conn: &Connection, action: &Action) -> Result<(), Problem> {
    let name = conn.name();
    let wrong = |what: &str, use_instead: &str| {
        Problem::new(
            Code::WrongOperation,
            format!("connection `{name}` {what}; use POST /v1/connections/{name}/{use_instead}"),
        )
    };
    // What the connection takes instead, for the message.
    let instead = if conn.sql().is_some() {
        ("runs SQL", "query")
    } else if conn.http().is_some() {
        ("is an HTTP API", "http")
    } else {
        ("runs commands", "exec")
    };
    match action {
        Action::Query { .. } | Action::Schema if conn.sql().is_none() => {
            Err(wrong(instead.0, instead.1))
        }
        Action::Exec(_) | Action::Shell(_) if conn.exec().is_none() => {
            Err(wrong(instead.0, instead.1))
        }
        Action::Http(_) if conn.http().is_none() => Err(wrong(instead.0, instead.1)),
        _ => Ok(()),
    }
}

/// A requested limit: the default when absent, refused when 0 or past the ceiling.
pub(crate) fn clamp(
    asked: Option<u64>,
    default: u64,
    ceiling: u64,
    what: &str,
) -> Result<u64, Problem> {
    match asked {
        None => Ok(default),
        Some(0) => Err(Problem::new(
            Code::InvalidLimit,
            format!("{what} must be at least 1"),
        )),
        Some(v) if v > ceiling => Err(Problem::new(
            Code::InvalidLimit,
            format!("{what} = {v} exceeds this connection's ceiling of {ceiling}"),
        )),
        Some(v) => Ok(v),
    }
    .map_err(|p| p.with("rule", "limits"))
}

fn query_limits(
    conn: &Connection,
    request: &QueryRequest,
    streaming: bool,
) -> Result<AppliedLimits, Problem> {
    let lc = &conn.config.limits;
    let row_default = if streaming {
        lc.max_rows_ceiling
    } else {
        lc.max_rows
    };
    Ok(AppliedLimits {
        max_rows: clamp(
            request.max_rows,
            row_default,
            lc.max_rows_ceiling,
            "max_rows",
        )?,
        max_bytes: clamp(
            request.max_bytes,
            lc.max_bytes,
            lc.max_bytes_ceiling,
            "max_bytes",
        )?,
        timeout_ms: clamp(
            request.timeout_ms,
            lc.timeout_ms,
            lc.max_timeout_ms,
            "timeout_ms",
        )?,
    })
}

/// Why strict masking refuses the statement, if it does. The guarantee: a protected column
/// appears only as a directly selected column of a plain top-level `SELECT` (then masked).
/// Anywhere else — a predicate, join, grouping, ordering, window, LIMIT, a function argument
/// (in the projection or in FROM, where a set-returning function's row count spells the
/// value out), an expression, a subquery — it answers questions about the value, so the
/// statement is refused; so is a statement whose outputs cannot all be traced.
async fn strict_refusal(masking: &RequestMasking, conn: &Connection, sql: &str) -> Option<String> {
    if !masking.strict() || !masking.has_column_rules() {
        return None;
    }
    let kind = conn.config.kind;
    let schema = conn.schema_info().await;
    let lineage = crate::inspect::lineage::lineage_before_running(kind, sql, &schema);
    if let Some(c) = lineage
        .predicate_columns
        .iter()
        .find(|c| masking.protection(c).is_some())
    {
        return Some(format!(
            "the statement filters, joins, groups, sorts or generates rows on the protected column `{}.{}`; strict masking does not allow that",
            c.table, c.column
        ));
    }
    let unknown = lineage
        .outputs
        .iter()
        .any(|o| matches!(o, crate::inspect::lineage::OutputLineage::Unknown));
    if lineage.incomplete || unknown {
        return Some(
            "strict masking cannot trace where every output column comes from; name the columns and avoid functions it does not know"
                .into(),
        );
    }
    let derived = lineage.outputs.iter().enumerate().any(|(i, o)| {
        let crate::inspect::lineage::OutputLineage::Known(sources) = o else {
            return true;
        };
        !lineage.unchanged.get(i).copied().unwrap_or(false)
            && sources.iter().any(|s| masking.protection(s).is_some())
    });
    let protected_name = |column: &str| {
        masking
            .protection(&crate::inspect::lineage::SourceColumn {
                table: "*".into(),
                column: column.to_string(),
            })
            .is_some()
    };
    let references = crate::inspect::lineage::protected_references(kind, sql, &protected_name);
    let indirect = references.is_none_or(|(total, direct)| total > direct);
    if derived || indirect {
        return Some(
            "strict masking allows a protected column only as a directly selected column of a plain SELECT (`SELECT ssn FROM customers`); here it is used in an expression, a function, a subquery or a clause"
                .into(),
        );
    }
    None
}

/// A Kubernetes request names its pod (`how` says how, for this entry); any other kind
/// is one host and takes none.
pub(crate) fn check_pod_target(
    conn: &Connection,
    target: Option<&crate::backend::PodTarget>,
    code: Code,
    how: &str,
) -> Result<(), Problem> {
    match (conn.config.kind == ConnectionKind::Kubernetes, target) {
        (true, None) => Err(Problem::new(
            code,
            format!("a kubernetes connection needs the pod to run in: {how}"),
        )),
        (false, Some(_)) => Err(Problem::new(
            code,
            format!(
                "a pod target is for kubernetes connections; `{}` is one host",
                conn.name()
            ),
        )),
        _ => Ok(()),
    }
}
