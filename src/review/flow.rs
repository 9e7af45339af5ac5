//! The review workflow: hold a request, wait for a decision, approve or reject, run once.
//!
//! See the invariants in `review/mod.rs`. Every transition here is a compare-and-swap in the
//! store followed by an audit event and a wake-up; the store is the truth, wake-ups are
//! hints.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use chrono::Utc;
use serde::Serialize;

use super::{
    Approval, HeldRequest, Rejection, ReviewRecord, ReviewStatus, approver_refusal, binding,
};
use crate::api::problem::Problem;
use crate::audit::{AuditEvent, AuditPrincipal, Outcome, Phase};
use crate::backend::QueryPlan;
use crate::identity::Principal;
use crate::inspect::Facts;
use crate::pipeline::{Answer, AppliedLimits, QueryOptions, RequestContext, Run, Slot};
use crate::policy::Decision;
use crate::server::{AppState, Connection};
use crate::store::ReviewLookup;

/// Longest `?wait=` a request may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(55);

/// The 202 answer for a held request.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HeldView {
    pub execution_id: String,
    pub review_id: String,
    /// `pending_review`
    pub status: String,
    pub rule: String,
    pub message: String,
    pub expires_at: chrono::DateTime<Utc>,
    /// What the agent should do next.
    pub next: String,
}

fn held_view(r: &ReviewRecord) -> HeldView {
    HeldView {
        execution_id: r.execution_id.clone(),
        review_id: r.id.clone(),
        status: "pending_review".into(),
        rule: r.rule.clone(),
        message: r.message.clone(),
        expires_at: r.expires_at,
        next: format!(
            "a human in {:?} must approve review {}; poll GET /v1/executions/{} and, once it is approved, POST /v1/executions/{}/run (no body) to run it once",
            r.approver_groups, r.id, r.execution_id, r.execution_id
        ),
    }
}

/// A request the policy sent to review.
pub struct Hold {
    pub state: Arc<AppState>,
    pub ctx: RequestContext,
    pub conn: Arc<Connection>,
    pub facts: Facts,
    pub begin: AuditEvent,
    pub started: Instant,
    pub held: HeldRequest,
    pub rule: String,
    pub message: String,
    pub slot: Slot,
    pub options: QueryOptions,
}

pub async fn hold(h: Hold) -> Result<Answer, Problem> {
    let Hold {
        state,
        ctx,
        conn,
        facts,
        mut begin,
        started,
        held,
        rule,
        message,
        slot,
        options,
    } = h;
    let Some(settings) = state.policy.rule(&rule).and_then(|r| r.review.clone()) else {
        let p = Problem::internal(format!("review rule `{rule}` has no review settings"));
        return Err(crate::pipeline::refuse(&state, begin, started, Outcome::Error, p).await);
    };
    let requester = AuditPrincipal::from(&ctx.principal);
    let bound = binding(
        &requester,
        &conn.config.name,
        &conn.version,
        &state.policy.version(),
        &held,
    );
    let now = Utc::now();
    let record = ReviewRecord {
        id: uuid::Uuid::now_v7().to_string(),
        execution_id: begin.execution_id.clone(),
        status: ReviewStatus::Pending,
        requester,
        connection: conn.config.name.clone(),
        request: held,
        facts,
        rule: rule.clone(),
        message,
        approver_groups: settings.approvers.clone(),
        min_approvals: settings.min_approvals,
        approvals: Vec::new(),
        max_affected_rows: None,
        rejection: None,
        binding: bound,
        idempotency_key: options.idempotency_key.clone(),
        created_at: now,
        expires_at: now + chrono::Duration::seconds(settings.expires_in_secs as i64),
        approved_at: None,
        run_deadline: None,
        run_window_secs: settings.run_window_secs,
        run_started_at: None,
        result: None,
        version: 0,
    };

    // A retried agent step finds the review it already filed.
    let existing = match &options.idempotency_key {
        Some(key) => {
            get(
                &state,
                ReviewLookup::Idempotency {
                    requester: &record.requester_key(),
                    key,
                },
            )
            .await?
        }
        None => None,
    };
    let record = match existing {
        Some(found) if found.binding != record.binding => {
            let p = Problem::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                "Idempotency key reused",
                "this Idempotency-Key was used for a different request; use a new key",
            )
            .with("execution_id", found.execution_id);
            return Err(crate::pipeline::refuse(&state, begin, started, Outcome::Denied, p).await);
        }
        Some(found) => found,
        None => {
            begin.review_id = Some(record.id.clone());
            // The held request is audited like any other: begin (decision review) ...
            state
                .audit
                .commit(begin.clone())
                .await
                .map_err(|_| Problem::audit_unavailable())?;
            let inserted = state
                .store
                .insert_review(&record)
                .await
                .map_err(|_| Problem::audit_unavailable())?;
            let mut end = AuditEvent::new(Phase::End, &begin.execution_id, &begin.operation);
            end.principal = begin.principal.clone();
            end.connection = begin.connection.clone();
            end.request_id = begin.request_id.clone();
            end.review_id = Some(record.id.clone());
            end.rule = Some(rule.clone());
            end.duration_ms = Some(started.elapsed().as_millis() as u64);
            if !inserted {
                // Lost an idempotency race to a concurrent retry: answer with theirs.
                end.outcome = Some(Outcome::Denied);
                end.error_class = Some("idempotent_duplicate".into());
                state.audit.commit_end(end).await;
                let key = options.idempotency_key.as_deref().unwrap_or_default();
                get(
                    &state,
                    ReviewLookup::Idempotency {
                        requester: &record.requester_key(),
                        key,
                    },
                )
                .await?
                .ok_or_else(|| Problem::internal("idempotent review vanished"))?
            } else {
                // ... and end (outcome pending_review). The run, if approved, gets its own pair.
                end.outcome = Some(Outcome::PendingReview);
                state.audit.commit_end(end).await;
                if let Some(n) = &state.notifier {
                    n.send("review.filed", &record);
                }
                record
            }
        }
    };

    let Some(wait) = options.wait.filter(|w| !w.is_zero()) else {
        return Ok(Answer::Held(held_view(&record)));
    };
    let decided = wait_for_decision(&state, &record.execution_id, wait).await?;
    match decided.effective_status(Utc::now()) {
        ReviewStatus::Approved => run_approved(state, ctx, &decided.execution_id, slot).await,
        ReviewStatus::Pending => Ok(Answer::Held(held_view(&decided))),
        _ => Err(status_problem(&decided)),
    }
}

async fn get(state: &AppState, by: ReviewLookup<'_>) -> Result<Option<ReviewRecord>, Problem> {
    state
        .store
        .get_review(by)
        .await
        .map_err(|_| Problem::audit_unavailable())
}

/// Waits until the review is decided or `wait` passes; returns the latest record.
pub async fn wait_for_decision(
    state: &AppState,
    execution_id: &str,
    wait: Duration,
) -> Result<ReviewRecord, Problem> {
    let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
    let notify = state.reviews.subscribe(execution_id);
    loop {
        let notified = notify.notified();
        let record = get(state, ReviewLookup::Execution(execution_id))
            .await?
            .ok_or_else(|| Problem::not_found("no such execution"))?;
        if record.effective_status(Utc::now()) != ReviewStatus::Pending
            || tokio::time::Instant::now() >= deadline
        {
            return Ok(record);
        }
        let poll = tokio::time::Instant::now() + super::hub::POLL;
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(poll.min(deadline)) => {}
            _ = state.shutdown.cancelled() => return Ok(record),
        }
    }
}

/// The problem for a held request that cannot run, by its status.
pub fn status_problem(r: &ReviewRecord) -> Problem {
    let p = match r.effective_status(Utc::now()) {
        ReviewStatus::Pending => Problem::new(
            StatusCode::CONFLICT,
            "review_pending",
            "Review pending",
            "the review has not been approved yet; poll GET /v1/executions/{id} or retry with ?wait=SECONDS",
        ),
        ReviewStatus::Rejected => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "review_rejected",
            "Review rejected",
            format!(
                "a reviewer rejected this request: {}",
                r.rejection
                    .as_ref()
                    .map(|x| x.reason.as_str())
                    .unwrap_or("no reason given")
            ),
        ),
        ReviewStatus::Expired => Problem::new(
            StatusCode::GONE,
            "review_expired",
            "Review expired",
            "the review (or the approved run window) expired; send the request again to file a new review",
        ),
        ReviewStatus::Approved => Problem::new(
            StatusCode::CONFLICT,
            "review_approved",
            "Approved",
            "approved and not yet run",
        ),
        ReviewStatus::Running
        | ReviewStatus::Done
        | ReviewStatus::Failed
        | ReviewStatus::Unknown => Problem::new(
            StatusCode::CONFLICT,
            "already_ran",
            "Already ran",
            "an approved request runs once; this one already ran (or was cut short and can never run again)",
        ),
    };
    p.with("execution_id", r.execution_id.clone())
        .with("review_id", r.id.clone())
        .with("rule", r.rule.clone())
}

fn stale(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "approval_stale",
        "Approval is stale",
        detail,
    )
}

/// Runs an approved request once, as its original requester.
pub async fn run_approved(
    state: Arc<AppState>,
    ctx: RequestContext,
    execution_id: &str,
    slot: Slot,
) -> Result<Answer, Problem> {
    let started = Instant::now();
    let not_found = || Problem::not_found(format!("no execution `{execution_id}` of yours"));
    let mut record = get(&state, ReviewLookup::Execution(execution_id))
        .await?
        .ok_or_else(not_found)?;
    let caller = AuditPrincipal::from(&ctx.principal);
    if caller.issuer != record.requester.issuer || caller.subject != record.requester.subject {
        return Err(not_found());
    }
    if record.effective_status(Utc::now()) != ReviewStatus::Approved {
        return Err(status_problem(&record));
    }
    let conn = crate::pipeline::resolve(&state, &ctx.principal, &record.connection)
        .map_err(|_| stale("the connection is gone or no longer visible to you"))?
        .clone();
    // Same requester (incl. act chain), same connection config, same policy, same request.
    let now_binding = binding(
        &caller,
        &record.connection,
        &conn.version,
        &state.policy.version(),
        &record.request,
    );
    if now_binding != record.binding {
        return Err(stale(
            "the request, your token's delegation chain, the connection's config or the policy changed since the approval; send the request again",
        )
        .with("execution_id", execution_id.to_string()));
    }
    if let Decision::Deny { rule, message } =
        state
            .policy
            .decide(&ctx.principal, &record.connection, &record.facts)
    {
        return Err(stale(format!("a deny rule now applies: {message}"))
            .with("rule", rule)
            .with("execution_id", execution_id.to_string()));
    }

    // Claim the run: approved → running, exactly once.
    let expected = record.version;
    record.status = ReviewStatus::Running;
    record.run_started_at = Some(Utc::now());
    let claimed = state
        .store
        .swap_review(&record, expected)
        .await
        .map_err(|_| Problem::audit_unavailable())?;
    if !claimed {
        let latest = get(&state, ReviewLookup::Execution(execution_id))
            .await?
            .ok_or_else(not_found)?;
        return Err(status_problem(&latest));
    }
    record.version = expected + 1;
    state.reviews.wake(execution_id);

    let operation = if record.request.is_command() {
        "exec"
    } else {
        "query"
    };
    let mut begin = AuditEvent::new(Phase::Begin, execution_id, operation);
    begin.request_id = ctx.request_id.clone();
    begin.principal = Some(caller);
    begin.connection = Some(record.connection.clone());
    begin.statement = Some(crate::pipeline::recorded_statement(
        &state,
        &record.connection,
        &record.request.sql,
    ));
    begin.params_count = Some(record.request.params.len());
    begin.facts = Some(record.facts.clone());
    begin.decision = Some("allow".into());
    begin.rule = Some(record.rule.clone());
    begin.review_id = Some(record.id.clone());
    begin.approved_by = record
        .approvals
        .iter()
        .map(|a| format!("{}/{}", a.issuer, a.subject))
        .collect();
    let masking = state
        .masking
        .for_request(&ctx.principal, &record.connection);
    if let Some(argv) = record.request.argv.clone() {
        let stdin = record.request.stdin.clone();
        let target = record.request.target.clone();
        let (timeout_ms, max_bytes) = (record.request.timeout_ms, record.request.max_bytes);
        let rule = record.rule.clone();
        return crate::exec::start(crate::exec::StartExec {
            state,
            conn,
            argv,
            target,
            stdin,
            timeout_ms,
            max_bytes,
            begin,
            rule,
            started,
            masking,
            slot,
            review: Some(record),
        })
        .await
        .map(Answer::Command);
    }
    let req = &record.request;
    let limits = AppliedLimits {
        max_rows: req.max_rows,
        max_bytes: req.max_bytes,
        timeout_ms: req.timeout_ms,
    };
    let plan = QueryPlan {
        sql: req.sql.clone(),
        params: req.params.clone(),
        max_rows: req.max_rows,
        timeout: Duration::from_millis(req.timeout_ms),
        max_affected_rows: record.max_affected_rows,
    };
    crate::pipeline::start(Run {
        state,
        masking,
        conn,
        plan,
        limits,
        begin,
        rule: record.rule.clone(),
        started,
        slot,
        review: Some(record),
    })
    .await
    .map(Answer::Rows)
}

/// Gives a claimed run back (running → approved) when nothing was sent to the target.
pub async fn release_claim(state: &AppState, mut record: ReviewRecord) {
    let expected = record.version;
    record.status = ReviewStatus::Approved;
    record.run_started_at = None;
    if let Err(e) = state.store.swap_review(&record, expected).await {
        tracing::warn!(error = %e, execution_id = %record.execution_id, "could not release a run claim; it will be marked unknown");
    }
}

/// Settles a consumed review after its run: running → done | failed, with a summary.
pub async fn record_run(state: &AppState, mut record: ReviewRecord, end: &AuditEvent, rows: u64) {
    let expected = record.version;
    let ok = end.outcome == Some(Outcome::Ok);
    record.status = if ok {
        ReviewStatus::Done
    } else {
        ReviewStatus::Failed
    };
    record.result = Some(serde_json::json!({
        "outcome": end.outcome,
        "row_count": rows,
        "error_class": end.error_class,
        "sqlstate": end.sqlstate,
    }));
    match state.store.swap_review(&record, expected).await {
        Ok(true) => state.reviews.wake(&record.execution_id),
        Ok(false) => {
            tracing::warn!(execution_id = %record.execution_id, "review changed while running")
        }
        // The run happened; if the store is down the record stays `running` and the
        // sweeper turns it into `unknown`, which can never run again: still fail-closed.
        Err(e) => {
            tracing::warn!(error = %e, execution_id = %record.execution_id, "run result not stored")
        }
    }
}

fn review_event(record: &ReviewRecord, who: &Principal, operation: &str) -> AuditEvent {
    let mut e = AuditEvent::new(Phase::Event, &record.execution_id, operation);
    e.principal = Some(who.into());
    e.connection = Some(record.connection.clone());
    e.review_id = Some(record.id.clone());
    e.rule = Some(record.rule.clone());
    e
}

/// A reviewer's decision.
pub enum Verdict {
    Approve { max_affected_rows: Option<u64> },
    Reject { reason: String },
}

/// Applies one reviewer's verdict with a compare-and-swap, retrying on lost races.
pub async fn decide(
    state: &AppState,
    review_id: &str,
    who: &Principal,
    verdict: Verdict,
) -> Result<ReviewRecord, Problem> {
    for _ in 0..8 {
        let mut record = get(state, ReviewLookup::Id(review_id))
            .await?
            .ok_or_else(|| Problem::not_found(format!("no review `{review_id}`")))?;
        if let Some(why) = approver_refusal(&record, who) {
            return Err(
                Problem::forbidden("not_an_approver", why).with("review_id", review_id.to_string())
            );
        }
        let now = Utc::now();
        match record.effective_status(now) {
            ReviewStatus::Pending => {}
            ReviewStatus::Expired => {
                return Err(status_problem(&record));
            }
            _ => {
                return Err(Problem::new(
                    StatusCode::CONFLICT,
                    "review_decided",
                    "Already decided",
                    format!("this review is already {}", record.status.as_str()),
                )
                .with("review_id", review_id.to_string()));
            }
        }
        if record
            .approvals
            .iter()
            .any(|a| a.issuer == who.issuer && a.subject == who.subject)
        {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "already_approved",
                "Already approved",
                "you already approved this review; another approver is needed",
            ));
        }
        let expected = record.version;
        let operation = match &verdict {
            Verdict::Approve { max_affected_rows } => {
                record.approvals.push(Approval {
                    issuer: who.issuer.clone(),
                    subject: who.subject.clone(),
                    at: now,
                });
                // The tightest guard any approver set wins.
                if let Some(m) = max_affected_rows {
                    record.max_affected_rows =
                        Some(record.max_affected_rows.map_or(*m, |old| old.min(*m)));
                }
                if record.approvals.len() as u32 >= record.min_approvals {
                    record.status = ReviewStatus::Approved;
                    record.approved_at = Some(now);
                    record.run_deadline =
                        Some(now + chrono::Duration::seconds(record.run_window_secs as i64));
                    "review.approved"
                } else {
                    "review.approval_recorded"
                }
            }
            Verdict::Reject { reason } => {
                record.status = ReviewStatus::Rejected;
                record.rejection = Some(Rejection {
                    issuer: who.issuer.clone(),
                    subject: who.subject.clone(),
                    reason: reason.clone(),
                    at: now,
                });
                "review.rejected"
            }
        };
        // Audit first: a decision that is not on record must not take effect.
        let mut event = review_event(&record, who, operation);
        event.approved_by = record
            .approvals
            .iter()
            .map(|a| format!("{}/{}", a.issuer, a.subject))
            .collect();
        event.reason = record.rejection.as_ref().map(|r| r.reason.clone());
        state
            .audit
            .commit(event)
            .await
            .map_err(|_| Problem::audit_unavailable())?;
        if state
            .store
            .swap_review(&record, expected)
            .await
            .map_err(|_| Problem::audit_unavailable())?
        {
            record.version = expected + 1;
            state.reviews.wake(&record.execution_id);
            if let Some(n) = &state.notifier
                && operation != "review.approval_recorded"
            {
                n.send(operation, &record);
            }
            return Ok(record);
        }
        // Someone else changed the record between our read and write: read again.
    }
    Err(Problem::new(
        StatusCode::CONFLICT,
        "review_busy",
        "Review busy",
        "the review kept changing under concurrent decisions; retry",
    )
    .retry_after(1))
}

/// Expires pending reviews past their deadline and marks runs cut short as `unknown`.
pub async fn sweep(state: &AppState, run_grace: Duration) {
    let Ok(pending) = state
        .store
        .list_reviews(Some(ReviewStatus::Pending), 500)
        .await
    else {
        return;
    };
    let now = Utc::now();
    for mut r in pending.into_iter().filter(|r| r.expires_at <= now) {
        let expected = r.version;
        r.status = ReviewStatus::Expired;
        if let Ok(true) = state.store.swap_review(&r, expected).await {
            let mut e = AuditEvent::new(Phase::Event, &r.execution_id, "review.expired");
            e.connection = Some(r.connection.clone());
            e.review_id = Some(r.id.clone());
            state.audit.commit_end(e).await;
            state.reviews.wake(&r.execution_id);
            if let Some(n) = &state.notifier {
                n.send("review.expired", &r);
            }
        }
    }
    let Ok(running) = state
        .store
        .list_reviews(Some(ReviewStatus::Running), 500)
        .await
    else {
        return;
    };
    let cutoff = now - chrono::Duration::from_std(run_grace).unwrap_or_default();
    for mut r in running
        .into_iter()
        .filter(|r| r.run_started_at.is_some_and(|t| t < cutoff))
    {
        let expected = r.version;
        r.status = ReviewStatus::Unknown;
        if let Ok(true) = state.store.swap_review(&r, expected).await {
            let mut e = AuditEvent::new(Phase::Event, &r.execution_id, "review.run_unknown");
            e.connection = Some(r.connection.clone());
            e.review_id = Some(r.id.clone());
            state.audit.commit_end(e).await;
        }
    }
}

pub fn spawn_sweeper(state: Arc<AppState>, run_grace: Duration) {
    tokio::spawn(async move {
        loop {
            sweep(&state, run_grace).await;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = state.shutdown.cancelled() => return,
            }
        }
    });
}
