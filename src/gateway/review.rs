//! The review workflow: hold a request, wait for a decision, approve or reject, run once.
//!
//! See the invariants in `review/mod.rs`. Every transition here is a compare-and-swap in the
//! store followed by an audit event and a wake-up; the store is the truth, wake-ups are
//! hints.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;

use super::admit::{Action, Admission, Request};
use super::connection::Connection;
use super::problem::{Code, Problem};
use super::record::{Ending, end_of};
use super::slots::Slot;
use super::{Caller, Gateway};
use crate::audit::{AuditEvent, AuditPrincipal, Outcome, Phase};
use crate::identity::Principal;
use crate::inspect::Facts;
use crate::review::{
    Approval, HeldRequest, Rejection, ReviewRecord, ReviewStatus, approver_refusal, binding,
};
use crate::store::ReviewLookup;

/// Options a request that may be held carries besides its body.
#[derive(Debug, Clone, Default)]
pub(crate) struct HoldOptions {
    /// Hold the request this long for a review decision (`?wait=`), then run it if approved.
    pub(crate) wait: Option<Duration>,
    /// `Idempotency-Key`: a retried request finds its existing review.
    pub(crate) idempotency_key: Option<String>,
}

/// Longest `?wait=` a request may ask for.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(55);

/// The 202 answer for a held request: nothing ran yet; a human must approve it first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"execution_id": "0190f5c2-7a4e-7c3b-9f2a-5d1e8b6a4c21", "review_id": "0190f5c2-7a52-7d10-8e4b-2b9c1f0d3e57", "status": "pending_review", "rule": "writes-need-review", "message": "writes need a DBA", "expires_at": "2025-01-01T13:00:00Z", "next": "a human in [\"dba\"] must approve review 0190f5c2-7a52-7d10-8e4b-2b9c1f0d3e57; POST /v1/executions/0190f5c2-7a4e-7c3b-9f2a-5d1e8b6a4c21/run?wait=55 runs it once as soon as it is approved", "next_actions": [{"rel": "run", "method": "POST", "href": "/v1/executions/0190f5c2-7a4e-7c3b-9f2a-5d1e8b6a4c21/run?wait=55", "description": "run it once, as soon as it is approved (waits up to 55 s for the decision)"}]}))]
pub(crate) struct HeldView {
    /// The held execution: `GET /v1/executions/{execution_id}` (the `Location`).
    pub(crate) execution_id: String,
    /// Its review, for reviewers: `GET /v1/reviews/{review_id}`.
    pub(crate) review_id: String,
    /// Always `pending_review` here (a request approved while it waited answers with its
    /// result instead).
    pub(crate) status: crate::review::ExecutionStatus,
    /// The policy rule that sent it to review.
    pub(crate) rule: String,
    /// The rule's message (why it needs review).
    pub(crate) message: String,
    /// When the review expires if nobody decides it; after that, send the request again.
    pub(crate) expires_at: chrono::DateTime<Utc>,
    /// What the agent should do next, in words.
    pub(crate) next: String,
    /// The same as requests the agent can send.
    pub(crate) next_actions: Vec<NextAction>,
}

impl HeldView {
    /// The execution's resource, for the 202's `Location` header.
    pub(crate) fn location(&self) -> String {
        execution_href(&self.execution_id)
    }
}

fn held_view(r: &ReviewRecord) -> HeldView {
    HeldView {
        execution_id: r.execution_id.clone(),
        review_id: r.id.clone(),
        status: crate::review::ExecutionStatus::PendingReview,
        rule: r.rule.clone(),
        message: r.message.clone(),
        expires_at: r.expires_at,
        next: format!(
            "a human in {:?} must approve review {}; {}",
            r.approver_groups,
            r.id,
            next_prose(r, ReviewStatus::Pending)
        ),
        next_actions: next_actions(r, ReviewStatus::Pending),
    }
}

/// One request the agent can send next about a held execution.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"rel": "run", "method": "POST", "href": "/v1/executions/0193a0c4-6a7e-7c4e-9d0b-2f5e8c1a9b10/run?wait=55", "description": "run it once, as soon as it is approved (waits up to 55 s for the decision)"}))]
pub(crate) struct NextAction {
    /// What the request does: `status` (read the execution's state), `run` (run the
    /// approved request once; answers like the original request).
    pub(crate) rel: &'static str,
    /// HTTP method.
    pub(crate) method: &'static str,
    /// Path relative to the server's base URL, query included.
    pub(crate) href: String,
    /// What it is for, in words.
    pub(crate) description: String,
}

/// `GET` of a held execution.
pub(crate) fn execution_href(execution_id: &str) -> String {
    format!("/v1/executions/{execution_id}")
}

/// What the requester of `r` can do next while it is `status`. An execution that was
/// rejected, expired or already ran has no next request: the original one must be sent
/// again (rejected, expired) or it is over.
pub(crate) fn next_actions(r: &ReviewRecord, status: ReviewStatus) -> Vec<NextAction> {
    let href = execution_href(&r.execution_id);
    let wait = MAX_WAIT.as_secs();
    let status_action = |description: String| NextAction {
        rel: "status",
        method: "GET",
        href: format!("{href}?wait={wait}"),
        description,
    };
    match status {
        ReviewStatus::Pending => vec![
            NextAction {
                rel: "run",
                method: "POST",
                href: format!("{href}/run?wait={wait}"),
                description: format!(
                    "run it once, as soon as it is approved (waits up to {wait} s for the decision)"
                ),
            },
            status_action(format!(
                "read its state, waiting up to {wait} s for a decision"
            )),
        ],
        ReviewStatus::Approved => vec![NextAction {
            rel: "run",
            method: "POST",
            href: format!("{href}/run"),
            description: "run it once; the answer is the result".into(),
        }],
        ReviewStatus::Running => vec![status_action(format!(
            "read its state, waiting up to {wait} s for the run to end"
        ))],
        _ => Vec::new(),
    }
}

/// [`next_actions`] in words, for agents that read prose.
pub(crate) fn next_prose(r: &ReviewRecord, status: ReviewStatus) -> String {
    let id = &r.execution_id;
    match status {
        ReviewStatus::Pending => format!(
            "POST /v1/executions/{id}/run?wait=55 runs it once as soon as it is approved (or poll GET /v1/executions/{id}, then POST /v1/executions/{id}/run)"
        ),
        ReviewStatus::Approved => format!("POST /v1/executions/{id}/run (no body) runs it once"),
        ReviewStatus::Rejected => {
            "rejected: change the request as the reason says and send it again".into()
        }
        ReviewStatus::Expired => "expired: send the request again to file a new review".into(),
        ReviewStatus::Running => {
            format!("it is running; GET /v1/executions/{id}?wait=55 waits for it to end")
        }
        ReviewStatus::Done | ReviewStatus::Failed | ReviewStatus::Unknown => {
            "it ran (or was cut short); it cannot run again. Its outcome is in `result`".into()
        }
    }
}

/// What admission hands over when the policy sends a request to review.
pub(crate) struct Held {
    pub(crate) conn: Arc<Connection>,
    pub(crate) slot: Slot,
    pub(crate) facts: Facts,
    /// The request exactly as it would run.
    pub(crate) request: HeldRequest,
    pub(crate) rule: String,
    pub(crate) message: String,
}

/// Files the review (audited: begin with decision `review`, end `pending_review`), or
/// finds the one a retry with the same `Idempotency-Key` filed; waits if asked.
pub(crate) async fn hold(
    state: &Arc<Gateway>,
    ctx: Caller,
    mut begin: AuditEvent,
    started: Instant,
    options: HoldOptions,
    held: Held,
) -> Result<Admission, Problem> {
    let Held {
        conn,
        slot,
        facts,
        request: held,
        rule,
        message,
    } = held;
    let Some(settings) = state.policy.rule(&rule).and_then(|r| r.review.clone()) else {
        let p = Problem::internal(format!("review rule `{rule}` has no review settings"));
        return Err(super::admit::refuse(state, begin, started, p).await);
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
        Some(key) => by_idempotency_key(state, &record, key).await?,
        None => None,
    };
    let record = match existing {
        Some(found) if found.binding != record.binding => {
            let p = Problem::new(
                Code::IdempotencyKeyReused,
                "this Idempotency-Key was used for a different request (another statement, params or limits; an NDJSON request has other default limits than a JSON one): use a new key, or resend exactly the first request",
            )
            .with("execution_id", found.execution_id);
            return Err(super::admit::refuse(state, begin, started, p).await);
        }
        Some(found) => match found.effective_status(Utc::now()) {
            ReviewStatus::Pending => found,
            // The retry of a request that was approved, or already decided or run: it
            // answers the execution's current state, never a stale 202.
            _ => return retried(state, ctx, begin, started, slot, found).await,
        },
        None => {
            begin.review_id = Some(record.id.clone());
            // The held request is audited like any other: begin (decision review) ...
            state
                .audit
                .commit(begin.clone())
                .await
                .map_err(|_| Problem::audit_unavailable())?;
            let inserted = match state.store.insert_review(&record).await {
                Ok(inserted) => inserted,
                Err(_) => {
                    // The begin is on record: close it, so nothing looks still in flight.
                    let problem = Problem::audit_unavailable();
                    let ending = Ending::failed(Outcome::Error, &problem);
                    state
                        .audit
                        .commit_end(end_of(&begin, started, &ending))
                        .await;
                    return Err(problem);
                }
            };
            if !inserted {
                // Lost an idempotency race to a concurrent retry: answer with theirs.
                let end = end_of(
                    &begin,
                    started,
                    &Ending::with_class(Outcome::Denied, "idempotent_duplicate"),
                );
                state.audit.commit_end(end).await;
                let key = options.idempotency_key.as_deref().unwrap_or_default();
                by_idempotency_key(state, &record, key)
                    .await?
                    .ok_or_else(|| Problem::internal("idempotent review vanished"))?
            } else {
                // A new review: the console's live view shows it at once.
                state.reviews.wake(&record.execution_id);
                // ... and end (outcome pending_review). The run, if approved, gets its own pair.
                let end = end_of(
                    &begin,
                    started,
                    &Ending::with_class(Outcome::PendingReview, "pending_review"),
                );
                state.audit.commit_end(end).await;
                if let Some(n) = &state.notifier {
                    n.send("review.filed", &record);
                }
                record
            }
        }
    };

    let Some(wait) = options.wait.filter(|w| !w.is_zero()) else {
        return Ok(Admission::Held(held_view(&record)));
    };
    let decided = wait_for_decision(state, &record.execution_id, wait).await?;
    match decided.effective_status(Utc::now()) {
        // Approved in time: run it through admission like any run, keeping the slot.
        ReviewStatus::Approved => {
            let mut run = Request::new(
                ctx,
                decided.connection.clone(),
                Action::RunApproved {
                    execution_id: decided.execution_id.clone(),
                },
            );
            run.slot = Some(slot);
            Box::pin(super::admit::admit(state, run)).await
        }
        ReviewStatus::Pending => Ok(Admission::Held(held_view(&decided))),
        // Rejected or expired while the request waited: a refusal like any other.
        _ => {
            let mut begin = run_begin(&decided);
            begin.request_id = ctx.request_id.clone();
            begin.principal = Some((&ctx.principal).into());
            Err(super::admit::refuse(state, begin, Instant::now(), status_problem(&decided)).await)
        }
    }
}

/// A retried request (same requester, same `Idempotency-Key`, same request) whose review is
/// no longer pending. Approved: it runs now, as `POST /v1/executions/{id}/run` would. Ran:
/// the kept result is sent again (audited as a replay; nothing runs), or, when none is kept,
/// 409 with the outcome. Rejected: 422; expired: 410 — refusals like any other.
async fn retried(
    state: &Arc<Gateway>,
    ctx: Caller,
    mut begin: AuditEvent,
    started: Instant,
    slot: Slot,
    found: ReviewRecord,
) -> Result<Admission, Problem> {
    begin.review_id = Some(found.id.clone());
    let status = found.effective_status(Utc::now());
    match status {
        ReviewStatus::Approved => {
            let mut run = Request::new(
                ctx,
                found.connection.clone(),
                Action::RunApproved {
                    execution_id: found.execution_id.clone(),
                },
            );
            run.slot = Some(slot);
            Box::pin(super::admit::admit(state, run)).await
        }
        ReviewStatus::Done => {
            // The kept result is for the principal that ran it, exactly (a token of the same
            // subject with other groups may be masked differently): anyone else gets 409.
            let caller_key = AuditPrincipal::from(&ctx.principal).owner_key();
            let kept = super::results::fetch(state, &found.execution_id, &caller_key).await?;
            match kept {
                Some(
                    kept @ (super::results::Kept::Rows(_)
                    | super::results::Kept::Command(_)
                    | super::results::Kept::Http(_)),
                ) => {
                    // Sending rows again discloses them again: on record like a read.
                    begin.operation = "replay".into();
                    begin.decision = Some("allow".into());
                    let record =
                        super::record::ExecutionRecord::open(state.clone(), begin, started, None)
                            .await?;
                    let mut ending = Ending::with_class(Outcome::Ok, "idempotent_replay");
                    if let super::results::Kept::Rows(rows) = &kept {
                        ending.row_count = Some(rows.summary.row_count);
                    }
                    record.finish(ending).await;
                    Ok(Admission::Kept(Box::new(kept)))
                }
                Some(super::results::Kept::Failed { .. }) | None => {
                    Err(super::admit::refuse(state, begin, started, ran_problem(&found)).await)
                }
            }
        }
        ReviewStatus::Running | ReviewStatus::Failed | ReviewStatus::Unknown => {
            Err(super::admit::refuse(state, begin, started, ran_problem(&found)).await)
        }
        ReviewStatus::Pending | ReviewStatus::Rejected | ReviewStatus::Expired => {
            Err(super::admit::refuse(state, begin, started, status_problem(&found)).await)
        }
    }
}

/// 409 for a retry of a request that ran (or is running) and whose result is not kept:
/// the outcome, and what the agent can still do.
fn ran_problem(r: &ReviewRecord) -> Problem {
    let status = r.effective_status(Utc::now());
    let detail = match status {
        ReviewStatus::Running => format!(
            "this request is running now (it ran once, on approval); GET /v1/executions/{}?wait=55 waits for its outcome",
            r.execution_id
        ),
        ReviewStatus::Done => "this request already ran, successfully; its result was not kept (too large, or expired), so it cannot be sent again, and it does not run twice".to_string(),
        ReviewStatus::Failed => "this request already ran and failed (see `result`); it does not run twice: send it with a new Idempotency-Key to file a new review".to_string(),
        _ => "this request was cut short while running and its outcome is unknown; it does not run twice: check the target before sending it with a new Idempotency-Key".to_string(),
    };
    let mut p = Problem::new(Code::AlreadyRan, detail)
        .with("execution_id", r.execution_id.clone())
        .with("review_id", r.id.clone())
        .with("rule", r.rule.clone())
        .with("status", status.as_str());
    if let Some(result) = &r.result {
        p = p.with("result", result.clone());
    }
    p
}

/// The review the same requester filed with the same `Idempotency-Key`, if any.
async fn by_idempotency_key(
    state: &Gateway,
    record: &ReviewRecord,
    key: &str,
) -> Result<Option<ReviewRecord>, Problem> {
    let requester = record.requester_key();
    get(
        state,
        ReviewLookup::Idempotency {
            requester: &requester,
            key,
        },
    )
    .await
}

async fn get(state: &Gateway, by: ReviewLookup<'_>) -> Result<Option<ReviewRecord>, Problem> {
    state
        .store
        .get_review(by)
        .await
        .map_err(|_| Problem::audit_unavailable())
}

/// Waits until the review is decided or `wait` passes; returns the latest record.
pub(crate) async fn wait_for_decision(
    state: &Gateway,
    execution_id: &str,
    wait: Duration,
) -> Result<ReviewRecord, Problem> {
    wait_while(state, execution_id, wait, |s| s == ReviewStatus::Pending).await
}

/// Waits while the execution's status satisfies `still` (or until `wait` passes, or the
/// server shuts down); returns the latest record. Wake-ups are hints: the store is read
/// again on each, and polled anyway, so a decision taken on another instance is seen too.
pub(crate) async fn wait_while(
    state: &Gateway,
    execution_id: &str,
    wait: Duration,
    still: impl Fn(ReviewStatus) -> bool,
) -> Result<ReviewRecord, Problem> {
    let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
    let notify = state.reviews.subscribe(execution_id);
    loop {
        let notified = notify.notified();
        let record = get(state, ReviewLookup::Execution(execution_id))
            .await?
            .ok_or_else(|| Problem::not_found("no such execution"))?;
        if !still(record.effective_status(Utc::now())) || tokio::time::Instant::now() >= deadline {
            return Ok(record);
        }
        let poll = tokio::time::Instant::now() + crate::review::hub::POLL;
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(poll.min(deadline)) => {}
            _ = state.shutdown.cancelled() => return Ok(record),
        }
    }
}

/// The problem for a held request that cannot run, by its status.
pub(crate) fn status_problem(r: &ReviewRecord) -> Problem {
    let p = match r.effective_status(Utc::now()) {
        ReviewStatus::Pending => Problem::new(
            Code::ReviewPending,
            "the review has not been approved yet; poll GET /v1/executions/{id} or retry with ?wait=SECONDS",
        ),
        ReviewStatus::Rejected => Problem::new(
            Code::ReviewRejected,
            format!(
                "a reviewer rejected this request: {}",
                r.rejection
                    .as_ref()
                    .map(|x| x.reason.as_str())
                    .unwrap_or("no reason given")
            ),
        ),
        ReviewStatus::Expired => Problem::new(
            Code::ReviewExpired,
            "the review (or the approved run window) expired; send the request again to file a new review",
        ),
        ReviewStatus::Approved => Problem::new(Code::ReviewApproved, "approved and not yet run"),
        ReviewStatus::Running
        | ReviewStatus::Done
        | ReviewStatus::Failed
        | ReviewStatus::Unknown => Problem::new(
            Code::AlreadyRan,
            "an approved request runs once; this one already ran (or was cut short and can never run again)",
        ),
    };
    p.with("execution_id", r.execution_id.clone())
        .with("review_id", r.id.clone())
        .with("rule", r.rule.clone())
}

/// The refusal of a run whose approval no longer covers it.
pub(crate) fn stale(detail: impl Into<String>) -> Problem {
    Problem::new(Code::ApprovalStale, detail)
}

/// Loads the held request `execution_id` for its requester to run, first waiting up to
/// `wait` for the decision if it is still pending. Refusals (not yours, not approved,
/// already ran, expired, rejected) are audited like every refusal.
pub(crate) async fn load_for_run(
    gateway: &Arc<Gateway>,
    caller: &Caller,
    execution_id: &str,
    wait: Option<Duration>,
    started: Instant,
) -> Result<ReviewRecord, Problem> {
    let not_found = || Problem::not_found(format!("no execution `{execution_id}` of yours"));
    let mut found = get(gateway, ReviewLookup::Execution(execution_id)).await?;
    let caller_id = AuditPrincipal::from(&caller.principal);
    let own = |r: &ReviewRecord| {
        caller_id.issuer == r.requester.issuer && caller_id.subject == r.requester.subject
    };
    // Only the requester may wait on its execution: anyone else learns nothing, not even
    // when a decision comes.
    if let (Some(record), Some(wait)) = (&found, wait.filter(|w| !w.is_zero()))
        && own(record)
        && record.effective_status(Utc::now()) == ReviewStatus::Pending
    {
        // The wait holds one of the caller's slots, as every request does; it is given
        // back before admission takes the run's own.
        let slot = match gateway.slots.acquire(&caller.principal) {
            Ok(slot) => slot,
            Err(problem) => {
                let mut begin = run_begin(record);
                begin.request_id = caller.request_id.clone();
                begin.principal = Some(caller_id.clone());
                let problem = problem.with("rule", "principal-concurrency");
                return Err(super::admit::refuse(gateway, begin, started, problem).await);
            }
        };
        found =
            Some(wait_while(gateway, execution_id, wait, |s| s == ReviewStatus::Pending).await?);
        drop(slot);
    }
    let refusal = match found {
        Some(record) if own(&record) => {
            if record.effective_status(Utc::now()) == ReviewStatus::Approved {
                return Ok(record);
            }
            // The requester's own attempt: audited under the held execution's id.
            (run_begin(&record), status_problem(&record))
        }
        // Someone else's, or none: the same 404, under an id of its own.
        _ => {
            let begin = AuditEvent::new(Phase::Begin, &uuid::Uuid::now_v7().to_string(), "run");
            (begin, not_found())
        }
    };
    let (mut begin, problem) = refusal;
    begin.request_id = caller.request_id.clone();
    begin.principal = Some(caller_id);
    Err(super::admit::refuse(gateway, begin, started, problem).await)
}

/// The `begin` of an attempt to run `record` (refused ones included).
fn run_begin(record: &ReviewRecord) -> AuditEvent {
    let mut begin = AuditEvent::new(Phase::Begin, &record.execution_id, "run");
    begin.connection = Some(record.connection.clone());
    begin.review_id = Some(record.id.clone());
    begin.rule = Some(record.rule.clone());
    begin
}

/// Claims the run: approved → running, exactly once (a compare-and-swap in the store).
pub(crate) async fn claim_run(
    gateway: &Arc<Gateway>,
    mut record: ReviewRecord,
) -> Result<ReviewRecord, Problem> {
    // Admission may have spent a while on the target since the record was read: the run
    // window is checked again at the moment of the claim.
    if record.effective_status(Utc::now()) != ReviewStatus::Approved {
        return Err(status_problem(&record));
    }
    let expected = record.version;
    record.status = ReviewStatus::Running;
    record.run_started_at = Some(Utc::now());
    let claimed = gateway
        .store
        .swap_review(&record, expected)
        .await
        .map_err(|_| Problem::audit_unavailable())?;
    if !claimed {
        let latest = get(gateway, ReviewLookup::Execution(&record.execution_id))
            .await?
            .ok_or_else(|| Problem::not_found("the held execution vanished"))?;
        return Err(status_problem(&latest));
    }
    record.version = expected + 1;
    gateway.reviews.wake(&record.execution_id);
    Ok(record)
}

/// Gives a claimed run back (running → approved) when nothing was sent to the target.
pub(crate) async fn release_claim(state: &Gateway, mut record: ReviewRecord) {
    let expected = record.version;
    record.status = ReviewStatus::Approved;
    record.run_started_at = None;
    if let Err(e) = state.store.swap_review(&record, expected).await {
        tracing::warn!(error = %e, execution_id = %record.execution_id, "could not release a run claim; it will be marked unknown");
    }
}

/// Settles a consumed review after its run: running → done | failed, with a summary.
pub(crate) async fn settle_run(state: &Gateway, mut record: ReviewRecord, end: &AuditEvent) {
    let expected = record.version;
    let ok = end.outcome == Some(Outcome::Ok);
    record.status = if ok {
        ReviewStatus::Done
    } else {
        ReviewStatus::Failed
    };
    record.result = Some(serde_json::json!({
        "outcome": end.outcome,
        "row_count": end.row_count.unwrap_or(0),
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
pub(crate) enum Verdict {
    Approve {
        max_affected_rows: Option<u64>,
        comment: Option<String>,
    },
    Reject {
        reason: String,
    },
}

/// Applies one reviewer's verdict with a compare-and-swap, retrying on lost races.
pub(crate) async fn decide(
    state: &Gateway,
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
                Problem::new(Code::NotAnApprover, why).with("review_id", review_id.to_string())
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
                    Code::ReviewDecided,
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
                Code::AlreadyApproved,
                "you already approved this review; another approver is needed",
            ));
        }
        let expected = record.version;
        let operation = match &verdict {
            Verdict::Approve {
                max_affected_rows,
                comment,
            } => {
                record.approvals.push(Approval {
                    issuer: who.issuer.clone(),
                    subject: who.subject.clone(),
                    at: now,
                    comment: comment.clone(),
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
        event.reason = match &verdict {
            Verdict::Approve { comment, .. } => comment.clone(),
            Verdict::Reject { reason } => Some(reason.clone()),
        };
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
        Code::ReviewBusy,
        "the review kept changing under concurrent decisions; retry",
    )
    .retry_after(1))
}

/// Expires pending reviews past their deadline and marks runs cut short as `unknown`.
pub(crate) async fn sweep(state: &Gateway, run_grace: Duration) {
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

pub(crate) fn spawn_sweeper(state: Arc<Gateway>, run_grace: Duration) {
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
