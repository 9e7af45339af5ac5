//! The one pipeline every request goes through:
//!
//! ```text
//! authenticate ─► resolve connection ─► inspect ─► decide ─► audit begin (durable)
//!     ─► execute ─► stream ─► audit end
//! ```
//!
//! Invariants (what must stay true):
//! - Nothing reaches a backend before its `begin` event is committed; if the store cannot
//!   take it, the request fails closed with 503.
//! - Every request that reached the pipeline gets a `begin` and an `end` event, whatever
//!   happens: denial, error, timeout, client disconnect, shutdown. The execution task owns
//!   the `end` event, so a handler dropped mid-flight cannot lose it.
//! - Limits an agent hits (rows, bytes, time) are reported, never silent.
//! - Unknown connections and connections the caller may not see get the same 404.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::api::problem::Problem;
use crate::audit::{AuditEvent, Outcome, Phase};
use crate::backend::{BackendError, Column, QueryPlan, RowEvent};
use crate::identity::Principal;
use crate::inspect::{self, Facts};
use crate::mask::plan::{ColumnTreatment, MaskedCounts, RequestMasking};
use crate::policy::Decision;
use crate::server::{AppState, Connection};

/// A query as the agent sent it.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// Exactly one SQL statement. Use `$1`.. (PostgreSQL) or `?` (MySQL, SQLite) for params.
    pub sql: String,
    /// Positional parameters; sent separately from the statement, never interpolated.
    #[serde(default)]
    pub params: Vec<serde_json::Value>,
    /// Fewer rows than the connection's default, or more up to its ceiling.
    pub max_rows: Option<u64>,
    /// Byte cap on the serialized rows, up to the connection's ceiling.
    pub max_bytes: Option<u64>,
    /// Statement timeout, up to the connection's ceiling.
    pub timeout_ms: Option<u64>,
}

/// The limits that applied to one execution.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct AppliedLimits {
    pub max_rows: u64,
    pub max_bytes: u64,
    pub timeout_ms: u64,
}

/// Why a result stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    MaxRows,
    MaxBytes,
}

/// The trailer of a result.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Summary {
    pub row_count: u64,
    pub truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated_reason: Option<Truncation>,
    /// What to do about a truncated result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affected_rows: Option<u64>,
    /// How many values were masked, per column and per detector.
    pub masked: MaskedCounts,
    pub duration_ms: u64,
}

/// What the execution task streams to the API layer after the columns.
pub enum Output {
    /// One row, already serialized as a JSON array.
    Row(Box<RawValue>),
    End(Summary),
    Error(Problem),
}

/// A running query: its header and the stream of rows.
pub struct Execution {
    pub execution_id: String,
    pub rule: String,
    pub columns: Vec<Column>,
    pub limits: AppliedLimits,
    pub rows: mpsc::Receiver<Output>,
}

/// Per-request context the API layer hands to the pipeline.
pub struct RequestContext {
    pub principal: Principal,
    pub request_id: Option<String>,
}

pub fn resolve<'a>(
    state: &'a AppState,
    principal: &Principal,
    name: &str,
) -> Result<&'a Arc<Connection>, Problem> {
    state
        .connections
        .get(name)
        .filter(|_| state.policy.visible(principal, name))
        .ok_or_else(|| Problem::unknown_connection(name))
}

/// `query` on a command target or `exec` on a SQL target.
pub fn wrong_operation(name: &str, what: &str, use_instead: &str) -> Problem {
    Problem::bad_request(
        "wrong_operation",
        format!("connection `{name}` {what}; use POST /v1/connections/{name}/{use_instead}"),
    )
}

fn clamp(asked: Option<u64>, default: u64, ceiling: u64, what: &str) -> Result<u64, Problem> {
    match asked {
        None => Ok(default),
        Some(0) => Err(Problem::bad_request(
            "invalid_limit",
            format!("{what} must be at least 1"),
        )),
        Some(v) if v > ceiling => Err(Problem::bad_request(
            "invalid_limit",
            format!("{what} = {v} exceeds this connection's ceiling of {ceiling}"),
        )),
        Some(v) => Ok(v),
    }
}

/// The statement as audit keeps it: content detectors of the connection's masking applied
/// (literals can hold the very values masking protects), whoever the requester is.
pub fn recorded_statement(state: &AppState, connection: &str, sql: &str) -> String {
    let mut counts = crate::mask::MaskCounts::default();
    state.masking.for_record(connection).text(sql, &mut counts)
}

fn begin_event(
    state: &AppState,
    ctx: &RequestContext,
    execution_id: &str,
    connection: &str,
    req: &QueryRequest,
) -> AuditEvent {
    let mut e = AuditEvent::new(Phase::Begin, execution_id, "query");
    e.request_id = ctx.request_id.clone();
    e.principal = Some((&ctx.principal).into());
    e.connection = Some(connection.to_string());
    e.statement = Some(recorded_statement(state, connection, &req.sql));
    e.params_count = Some(req.params.len());
    e
}

fn end_event(begin: &AuditEvent, outcome: Outcome, started: Instant) -> AuditEvent {
    let mut e = AuditEvent::new(Phase::End, &begin.execution_id, &begin.operation);
    e.request_id = begin.request_id.clone();
    e.principal = begin.principal.clone();
    e.connection = begin.connection.clone();
    e.outcome = Some(outcome);
    e.duration_ms = Some(started.elapsed().as_millis() as u64);
    e
}

/// Records a request refused before execution (begin + end), then returns the problem.
/// If the store cannot take the record, the refusal still stands but becomes a 503.
pub(crate) async fn refuse(
    state: &AppState,
    begin: AuditEvent,
    started: Instant,
    outcome: Outcome,
    problem: Problem,
) -> Problem {
    let mut end = end_event(&begin, outcome, started);
    end.error_class = Some(problem.class().to_string());
    end.rule = begin.rule.clone();
    // Subjects and connection names come from tokens and URLs: escaped so a crafted value
    // cannot forge log lines. Statements are never logged (audit keeps them, masked).
    tracing::info!(
        execution_id = %begin.execution_id,
        principal = %begin.principal.as_ref().map(|p| crate::audit::escape_for_log(&format!("{}/{}", p.issuer, p.subject))).unwrap_or_default(),
        connection = %crate::audit::escape_for_log(begin.connection.as_deref().unwrap_or("")),
        rule = %begin.rule.as_deref().unwrap_or(""),
        code = problem.code,
        "request refused"
    );
    if state.audit.commit(begin).await.is_err() {
        return Problem::audit_unavailable();
    }
    state.audit.commit_end(end).await;
    problem
}

/// What a query request turned into.
pub enum Answer {
    /// Running: the header is known, rows follow.
    Rows(Execution),
    /// A command is running: its output follows.
    Command(crate::exec::ExecRun),
    /// Held for human review (202).
    Held(crate::review::flow::HeldView),
}

/// Options a query request can carry besides its body.
#[derive(Debug, Clone, Default)]
pub struct QueryOptions {
    /// Hold the request this long for a review decision (`?wait=`), then run it if approved.
    pub wait: Option<Duration>,
    /// `Idempotency-Key`: a retried request finds its existing review.
    pub idempotency_key: Option<String>,
}

/// Runs the query pipeline up to the first event of the result.
pub async fn query(
    state: Arc<AppState>,
    ctx: RequestContext,
    name: &str,
    req: QueryRequest,
    ndjson: bool,
    slot: Slot,
    options: QueryOptions,
) -> Result<Answer, Problem> {
    let started = Instant::now();
    let conn = resolve(&state, &ctx.principal, name)?.clone();
    let Some(backend) = conn.sql().cloned() else {
        return Err(wrong_operation(name, "runs commands", "exec"));
    };
    let lc = &conn.config.limits;
    // NDJSON streams in constant memory, so its default row cap is the ceiling.
    let row_default = if ndjson {
        lc.max_rows_ceiling
    } else {
        lc.max_rows
    };
    let execution_id = uuid::Uuid::now_v7().to_string();
    let mut begin = begin_event(&state, &ctx, &execution_id, name, &req);
    let limits = (|| {
        Ok::<_, Problem>(AppliedLimits {
            max_rows: clamp(req.max_rows, row_default, lc.max_rows_ceiling, "max_rows")?,
            max_bytes: clamp(
                req.max_bytes,
                lc.max_bytes,
                lc.max_bytes_ceiling,
                "max_bytes",
            )?,
            timeout_ms: clamp(
                req.timeout_ms,
                lc.timeout_ms,
                lc.max_timeout_ms,
                "timeout_ms",
            )?,
        })
    })();
    let limits = match limits {
        Ok(l) => l,
        Err(problem) => {
            begin.decision = Some("deny".into());
            begin.rule = Some("limits".into());
            let problem = problem.with("execution_id", execution_id.clone());
            return Err(refuse(&state, begin, started, Outcome::Denied, problem).await);
        }
    };

    // Inspect.
    let facts: Facts = match inspect::sql::inspect(backend.kind(), &req.sql) {
        Ok(f) => f,
        Err(e) => {
            begin.decision = Some("deny".into());
            begin.rule = Some("inspect".into());
            let problem = Problem::bad_request("invalid_statement", e.to_string())
                .with("execution_id", execution_id.clone());
            return Err(refuse(&state, begin, started, Outcome::Denied, problem).await);
        }
    };
    begin.facts = Some(facts.clone());

    // One statement per request is a protocol rule, not a policy choice.
    if facts.statement_count > 1 {
        begin.decision = Some("deny".into());
        begin.rule = Some("single-statement".into());
        let problem = Problem::bad_request(
            "multiple_statements",
            format!(
                "the request holds {} statements; send exactly one statement per request",
                facts.statement_count
            ),
        )
        .with("rule", "single-statement")
        .with("execution_id", execution_id.clone());
        return Err(refuse(&state, begin, started, Outcome::Denied, problem).await);
    }

    // Decide.
    let decision = state.policy.decide(&ctx.principal, name, &facts);
    begin.decision = Some(decision.action().into());
    begin.rule = Some(decision.rule().into());

    // Strict masking: refuse, before anything runs or is held, what masking could not make
    // safe. A policy denial is reported as such, so this comes after it.
    let masking = state.masking.for_request(&ctx.principal, name);
    if !matches!(decision, Decision::Deny { .. })
        && let Some(why) = strict_refusal(&masking, &conn, &req.sql).await
    {
        begin.decision = Some("deny".into());
        begin.rule = Some(STRICT_RULE.into());
        let problem = Problem::forbidden("masking_strict", why)
            .with("rule", STRICT_RULE)
            .with("execution_id", execution_id.clone());
        return Err(refuse(&state, begin, started, Outcome::Denied, problem).await);
    }
    let rule = decision.rule().to_string();
    match decision {
        Decision::Allow { .. } => {}
        Decision::Deny { rule, message } => {
            let problem = Problem::forbidden("policy_denied", message)
                .with("rule", rule)
                .with("execution_id", execution_id.clone());
            return Err(refuse(&state, begin, started, Outcome::Denied, problem).await);
        }
        Decision::Review { rule, message } => {
            let held = crate::review::HeldRequest {
                sql: req.sql,
                params: req.params,
                max_rows: limits.max_rows,
                max_bytes: limits.max_bytes,
                timeout_ms: limits.timeout_ms,
                argv: None,
                stdin: None,
                target: None,
            };
            return crate::review::flow::hold(crate::review::flow::Hold {
                state,
                ctx,
                conn,
                facts,
                begin,
                started,
                held,
                rule,
                message,
                slot,
                options,
            })
            .await;
        }
    }

    let plan = QueryPlan {
        sql: req.sql,
        params: req.params,
        max_rows: limits.max_rows,
        timeout: Duration::from_millis(limits.timeout_ms),
        max_affected_rows: None,
    };
    start(Run {
        state,
        conn,
        plan,
        limits,
        begin,
        rule,
        started,
        slot,
        review: None,
        masking,
    })
    .await
    .map(Answer::Rows)
}

/// The rule id strict masking refusals carry.
pub const STRICT_RULE: &str = "masking-strict";

/// Why strict masking refuses the statement, if it does. A protected column may not be
/// used to filter, join, group or sort (`WHERE ssn LIKE '1%'` answers questions about it
/// one row count at a time), and every output must be traceable. Protected columns inside
/// projected expressions are not refused: such outputs are masked whole.
async fn strict_refusal(masking: &RequestMasking, conn: &Connection, sql: &str) -> Option<String> {
    if !masking.strict() || !masking.has_column_rules() {
        return None;
    }
    let schema = conn.schema_info().await;
    let lineage = crate::inspect::lineage::lineage_before_running(conn.config.kind, sql, &schema);
    if let Some(c) = lineage
        .predicate_columns
        .iter()
        .find(|c| masking.protection(c).is_some())
    {
        return Some(format!(
            "the statement filters, joins, groups or sorts on the protected column `{}.{}`; strict masking does not allow that",
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
    None
}

/// Everything an execution needs once the decision is made.
pub struct Run {
    pub state: Arc<AppState>,
    pub conn: Arc<Connection>,
    pub plan: QueryPlan,
    pub limits: AppliedLimits,
    /// The `begin` event, not yet committed.
    pub begin: AuditEvent,
    pub rule: String,
    pub started: Instant,
    /// Held until the execution ends, including streaming.
    pub slot: Slot,
    /// The approved review this run consumes, claimed (`running`) by the caller.
    pub review: Option<crate::review::ReviewRecord>,
    /// What the requester may not see.
    pub masking: RequestMasking,
}

/// Commits the `begin` event, then starts the backend in the execution task.
pub async fn start(run_: Run) -> Result<Execution, Problem> {
    let execution_id = run_.begin.execution_id.clone();
    // Audit begin: durable before the backend sees anything.
    if let Err(e) = run_.state.audit.commit(run_.begin.clone()).await {
        tracing::error!(error = %e, execution_id, "audit begin not stored; refusing");
        if let Some(review) = run_.review {
            // The claim is released so the approved request can still run once.
            crate::review::flow::release_claim(&run_.state, review).await;
        }
        return Err(Problem::audit_unavailable().with("execution_id", execution_id));
    }
    let (started_tx, started_rx) = oneshot::channel();
    let (out_tx, out_rx) = mpsc::channel(crate::backend::STREAM_BUFFER);
    let rule = run_.rule.clone();
    let limits = run_.limits;
    tokio::spawn(run(run_, started_tx, out_tx));
    match started_rx.await {
        Ok(Ok(columns)) => Ok(Execution {
            execution_id,
            rule,
            columns,
            limits,
            rows: out_rx,
        }),
        Ok(Err(problem)) => Err(problem.with("execution_id", execution_id)),
        Err(_) => Err(Problem::internal("the execution task stopped unexpectedly")
            .with("execution_id", execution_id)),
    }
}

fn outcome_of(e: &BackendError) -> Outcome {
    match e {
        BackendError::Timeout => Outcome::Timeout,
        BackendError::Cancelled => Outcome::Cancelled,
        _ => Outcome::Error,
    }
}

/// The execution task: owns the backend stream and the `end` event.
async fn run(
    run_: Run,
    started_tx: oneshot::Sender<Result<Vec<Column>, Problem>>,
    out: mpsc::Sender<Output>,
) {
    let Run {
        state,
        conn,
        plan,
        limits,
        begin,
        started,
        slot: _slot,
        review,
        masking,
        ..
    } = run_;
    let sql = plan.sql.clone();
    let cancel: CancellationToken = state.shutdown.child_token();
    let mut end = end_event(&begin, Outcome::Ok, started);
    end.review_id = begin.review_id.clone();
    end.approved_by = begin.approved_by.clone();
    let review = std::sync::Mutex::new(review);
    // Ends the execution: settles a consumed review, then writes the `end` event.
    let close = |state: &Arc<AppState>,
                 end: AuditEvent,
                 rows: u64,
                 bytes: u64,
                 truncated: Option<Truncation>| {
        let review = review.lock().ok().and_then(|mut r| r.take());
        let state = state.clone();
        async move {
            if let Some(review) = review {
                crate::review::flow::record_run(&state, review, &end, rows).await;
            }
            finish(&state, end, started, rows, bytes, truncated).await;
        }
    };
    let mut row_count = 0u64;
    let mut bytes = 0u64;
    let mut masked = MaskedCounts::default();
    // Database errors echo values (`invalid input syntax: "4111-..."`): mask them too.
    let mask_error = |e: BackendError, counts: &mut MaskedCounts| match e {
        BackendError::Database(mut db) if !masking.is_empty() => {
            db.message = masking.text(&db.message, &mut counts.detectors);
            db.detail = db.detail.map(|d| masking.text(&d, &mut counts.detectors));
            db.hint = db.hint.map(|h| masking.text(&h, &mut counts.detectors));
            BackendError::Database(db)
        }
        other => other,
    };
    let record_error = |end: &mut AuditEvent, e: &BackendError| {
        end.outcome = Some(outcome_of(e));
        end.error_class = Some(Problem::from(e.clone()).class().to_string());
        if let BackendError::Database(db) = e {
            end.sqlstate = Some(db.sqlstate.clone());
        }
    };

    let stream = tokio::select! {
        r = async {
            conn.ensure_verified().await?;
            let backend = conn.sql().ok_or_else(|| {
                BackendError::Internal("not a SQL connection".into())
            })?;
            backend.query(plan, cancel.clone()).await
        } => r,
        _ = out.closed() => Err(BackendError::Cancelled),
    };
    let mut stream = match stream {
        Ok(s) => s,
        Err(e) => {
            let e = mask_error(e, &mut masked);
            record_error(&mut end, &e);
            let _ = started_tx.send(Err(e.into()));
            close(&state, end, 0, 0, None).await;
            return;
        }
    };
    let columns = match stream.next().await {
        Some(Ok(RowEvent::Columns(c))) => c,
        Some(Err(e)) => {
            let e = mask_error(e, &mut masked);
            record_error(&mut end, &e);
            let _ = started_tx.send(Err(e.into()));
            close(&state, end, 0, 0, None).await;
            return;
        }
        Some(Ok(_)) | None => {
            let e = BackendError::Internal("the backend ended without a result header".into());
            record_error(&mut end, &e);
            let _ = started_tx.send(Err(e.into()));
            close(&state, end, 0, 0, None).await;
            return;
        }
    };
    // Which output column gets what, from where its data comes from.
    let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
    let treatment = if masking.is_empty() {
        Vec::new()
    } else if masking.has_column_rules() {
        let schema = conn.schema_info().await;
        let lineage =
            crate::inspect::lineage::lineage(conn.config.kind, &sql, &schema, columns.len());
        masking.plan(&lineage)
    } else {
        vec![ColumnTreatment::Scan; columns.len()]
    };
    if started_tx.send(Ok(columns)).is_err() {
        cancel.cancel();
        end.outcome = Some(Outcome::Cancelled);
        close(&state, end, 0, 0, None).await;
        return;
    }

    let mut truncated: Option<Truncation> = None;
    let mut affected = None;
    loop {
        let event = tokio::select! {
            ev = stream.next() => ev,
            _ = out.closed() => {
                cancel.cancel();
                end.outcome = Some(Outcome::Cancelled);
                end.error_class = Some("client_gone".into());
                break;
            }
        };
        match event {
            Some(Ok(RowEvent::Row(mut values))) => {
                if !masking.is_empty() {
                    masking.row(&mut values, &names, &treatment, &mut masked);
                }
                let raw = match serde_json::value::to_raw_value(&values) {
                    Ok(r) => r,
                    Err(e) => {
                        let e = BackendError::Internal(format!("cannot serialize a row: {e}"));
                        record_error(&mut end, &e);
                        cancel.cancel();
                        let _ = out.send(Output::Error(e.into())).await;
                        break;
                    }
                };
                let len = raw.get().len() as u64 + 1;
                if bytes + len > limits.max_bytes {
                    truncated = Some(Truncation::MaxBytes);
                    cancel.cancel();
                    break;
                }
                bytes += len;
                row_count += 1;
                if out.send(Output::Row(raw)).await.is_err() {
                    cancel.cancel();
                    end.outcome = Some(Outcome::Cancelled);
                    end.error_class = Some("client_gone".into());
                    break;
                }
            }
            Some(Ok(RowEvent::End {
                truncated: t,
                affected_rows,
            })) => {
                if t {
                    truncated = Some(Truncation::MaxRows);
                }
                affected = affected_rows;
                break;
            }
            Some(Ok(RowEvent::Columns(_))) => {}
            Some(Err(e)) => {
                let e = mask_error(e, &mut masked);
                record_error(&mut end, &e);
                let _ = out.send(Output::Error(e.into())).await;
                break;
            }
            None => {
                let e = BackendError::Internal("the backend stream ended early".into());
                record_error(&mut end, &e);
                let _ = out.send(Output::Error(e.into())).await;
                break;
            }
        }
    }
    // Dropping the stream (with the token cancelled on early exits) stops the query on the
    // server and discards its connection.
    drop(stream);
    if end.outcome == Some(Outcome::Ok) {
        let note = truncated.map(|t| {
            match t {
                Truncation::MaxRows => format!(
                    "more rows exist than max_rows = {}; filter (WHERE), aggregate, or page with ORDER BY ... LIMIT/OFFSET",
                    limits.max_rows
                ),
                Truncation::MaxBytes => format!(
                    "the result exceeded max_bytes = {}; select fewer or narrower columns, or filter",
                    limits.max_bytes
                ),
            }
        });
        let summary = Summary {
            row_count,
            truncated: truncated.is_some(),
            truncated_reason: truncated,
            note,
            affected_rows: affected,
            masked: masked.clone(),
            duration_ms: started.elapsed().as_millis() as u64,
        };
        let _ = out.send(Output::End(summary)).await;
    }
    if !masked.is_empty() {
        end.masked = serde_json::to_value(&masked).ok();
    }
    close(&state, end, row_count, bytes, truncated).await;
}

async fn finish(
    state: &AppState,
    mut end: AuditEvent,
    started: Instant,
    rows: u64,
    bytes: u64,
    truncated: Option<Truncation>,
) {
    end.row_count = Some(rows);
    end.byte_count = Some(bytes);
    end.truncated = Some(truncated.is_some());
    end.duration_ms = Some(started.elapsed().as_millis() as u64);
    end.time = chrono::Utc::now();
    state.audit.commit_end(end).await;
}

/// A principal's concurrency slot; released on drop.
pub struct Slot(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

/// Takes one of the principal's concurrent-request slots, or answers 429.
pub fn acquire_slot(state: &AppState, principal: &Principal) -> Result<Slot, Problem> {
    let sem = {
        let mut map = state
            .principal_slots
            .lock()
            .map_err(|_| Problem::internal("concurrency table poisoned"))?;
        map.entry(principal.id())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Semaphore::new(
                    state.max_concurrent_per_principal,
                ))
            })
            .clone()
    };
    sem.try_acquire_owned().map(Slot).map_err(|_| {
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            "Too many concurrent requests",
            format!(
                "at most {} requests may run at once per principal; wait for one to finish",
                state.max_concurrent_per_principal
            ),
        )
        .retry_after(1)
    })
}
