//! Long-running work as jobs: a request that asks to run asynchronously, or that is still
//! running when its sync budget runs out, is answered `202` with its execution id while it
//! goes on in the background; its result is kept, and fetched once done.
//!
//! Why: agent frameworks give up on a call after a fixed time (60 s in the MCP TypeScript
//! SDK). A statement still running then has an ambiguous outcome for the agent: it may
//! have run, it may still. A job makes it unambiguous: it has an id, a state (`running`,
//! then `done`, `failed`, `cancelled`, `interrupted`), and a result.
//!
//! What must stay true:
//! - A job is the same execution it started as: admitted once, one audit begin and one end
//!   (written by the execution task, as for any request). Becoming a job changes who reads
//!   the output, not what runs.
//! - The job reads its output at its own pace: the execution's caps (rows, bytes, time) and
//!   its memory reservation hold as for any request, so a job cannot hold more than the
//!   request could.
//! - It outlives its caller's connection, not the process: a restart leaves its audit begin
//!   without an end, and the startup sweep closes it as `interrupted`.
//! - Cancelling it drops its output, which cancels the statement (or command) on the
//!   target, from any instance: the cancel is written to the store and the instance
//!   running the job polls for it.
//! - Its result is kept as the requester would have been sent it (masked), for
//!   `jobs.result_ttl_secs`, only for the requester, and only up to
//!   `jobs.max_result_bytes`; larger ones are kept as a failure saying so.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use super::Gateway;
use super::command::{CommandRun, ExecOutput};
use super::problem::{Code, Problem};
use super::query::{Output, RowsRun};
use super::results::{Kept, KeptCommand, KeptRows};

/// How often an instance running jobs looks for cancels written by another instance.
const CANCEL_POLL: Duration = Duration::from_secs(1);

/// The jobs running on this instance, by execution id.
#[derive(Default)]
pub(crate) struct Jobs {
    running: Mutex<HashMap<String, CancellationToken>>,
}

impl Jobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        // Each operation on the map is one call: a panic elsewhere cannot leave it half-done.
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cancels the job if it runs here; `false` if it does not (it may run elsewhere).
    pub(crate) fn cancel_local(&self, execution_id: &str) -> bool {
        match self.lock().get(execution_id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    fn ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }
}

/// What a request answered as a whole (JSON, not streamed) turns into.
pub(crate) enum Reply {
    /// Held for review (202).
    Held(super::review::HeldView),
    /// The whole answer, within the budget (or a kept one, sent again).
    Now(Kept),
    /// Still running when the budget ran out: it goes on as a job (202).
    Job(JobView),
}

/// The `202` for a request that became a job.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"execution_id": "0193a0c4-6a7e-7c4e-9d0b-2f5e8c1a9b10", "status": "running", "next": "GET /v1/executions/0193a0c4-6a7e-7c4e-9d0b-2f5e8c1a9b10?wait=55 waits for it to end; then GET /v1/executions/0193a0c4-6a7e-7c4e-9d0b-2f5e8c1a9b10/result", "next_actions": []}))]
pub(crate) struct JobView {
    /// The job's id: its execution's (and its audit records').
    pub(crate) execution_id: String,
    /// Always `running` here.
    pub(crate) status: &'static str,
    /// What to do next, in words.
    pub(crate) next: String,
    /// What to do next, as requests to send.
    pub(crate) next_actions: Vec<super::review::NextAction>,
}

impl JobView {
    fn running(execution_id: &str) -> JobView {
        let href = super::review::execution_href(execution_id);
        JobView {
            execution_id: execution_id.to_string(),
            status: "running",
            next: format!(
                "it runs in the background: GET {href}?wait=55 waits for it to end; then GET {href}/result; POST {href}/cancel stops it"
            ),
            next_actions: job_actions(execution_id),
        }
    }

    /// The execution's resource, for the `Location` header.
    pub(crate) fn location(&self) -> String {
        super::review::execution_href(&self.execution_id)
    }
}

/// The requests an agent can send about a running job.
pub(crate) fn job_actions(execution_id: &str) -> Vec<super::review::NextAction> {
    let href = super::review::execution_href(execution_id);
    vec![
        super::review::NextAction {
            rel: "status",
            method: "GET",
            href: format!("{href}?wait=55"),
            description: "read its state, waiting up to 55 s for it to end".into(),
        },
        super::review::NextAction {
            rel: "result",
            method: "GET",
            href: format!("{href}/result"),
            description: "its result, once it is done (409 while it runs)".into(),
        },
        super::review::NextAction {
            rel: "cancel",
            method: "POST",
            href: format!("{href}/cancel"),
            description: "stop it; the statement or command is cancelled on the target".into(),
        },
    ]
}

/// Admits `request` and, if it runs, reads its whole answer within `budget`; if it is still
/// running then, it becomes a job of its requester's. `budget` zero: a job at once (the
/// caller asked for async). The budget counts from the start of the execution: time spent
/// waiting for a review decision (`?wait=`) does not count against it.
pub(crate) async fn serve_collected(
    gateway: &Arc<Gateway>,
    request: super::Request,
    budget: Duration,
) -> Result<Reply, Problem> {
    let requester = crate::audit::AuditPrincipal::from(&request.caller.principal).owner_key();
    let admitted = match super::admit::admit(gateway, request).await? {
        super::admit::Admission::Held(view) => return Ok(Reply::Held(view)),
        super::admit::Admission::Kept(kept) => return Ok(Reply::Now(*kept)),
        super::admit::Admission::Ready(admitted) => admitted,
    };
    let mut admitted = admitted;
    let execution_id = admitted.begin.execution_id.clone();
    let (opened_tx, mut opened) = tokio::sync::oneshot::channel();
    admitted.opened = Some(opened_tx);
    // Starting (which waits for the target's first answer) and reading are one future, so
    // the budget covers a statement that is slow to produce its first row too.
    let mut reading: std::pin::Pin<Box<dyn Future<Output = Result<Kept, Problem>> + Send>> =
        Box::pin(async move {
            match super::start(admitted).await? {
                super::Answer::Rows(run) => Ok(read_rows(run).await),
                super::Answer::Command(run) => Ok(read_command(run).await),
                super::Answer::Http(result) => Ok(Kept::Http(result)),
                _ => Err(Problem::internal("only queries and commands are collected")),
            }
        });
    if !budget.is_zero() {
        tokio::select! {
            // Within the budget a failure is answered as itself (status, Retry-After).
            done = &mut reading => return done.map(Reply::Now),
            _ = tokio::time::sleep(budget) => {}
        }
    }
    // A job is answered only once its `begin` is on record, so that its id names an
    // execution every instance can find. Starting it is what writes the begin, so it is
    // driven meanwhile; if it fails before that, the failure is the answer. Once the begin
    // is on record the answer is the job, even if the run is already over by then (a fast
    // statement, `Prefer: respond-async`): which of the two is seen first must not decide
    // what the caller gets.
    let begun = tokio::select! {
        biased;
        begun = &mut opened => begun.is_ok(),
        done = &mut reading => return done.map(Reply::Now),
    };
    if !begun {
        // Starting failed before the begin was written: its error is the answer.
        return reading.await.map(Reply::Now);
    }
    let token = CancellationToken::new();
    gateway
        .jobs
        .lock()
        .insert(execution_id.clone(), token.clone());
    let gw = gateway.clone();
    let id = execution_id.clone();
    let settings = gateway.jobs_config;
    tokio::spawn(async move {
        let kept = tokio::select! {
            done = reading => done.unwrap_or_else(|p| failed(&id, p)),
            // Dropping the reader drops the output channel: the execution task sees it
            // closed, cancels the statement or command on the target, and audits it.
            // (Shutdown cancels the execution itself; its end arrives through `reading`.)
            _ = token.cancelled() => failed(&id, Problem::new(
                Code::Cancelled,
                "cancelled by its requester; it was stopped on the target",
            )),
        };
        let used = gw
            .store
            .kept_bytes(&requester, Utc::now())
            .await
            .unwrap_or(u64::MAX);
        let kept = if used.saturating_add(kept.size() as u64)
            > settings.max_kept_bytes_per_principal
        {
            failed(
                &id,
                Problem::new(
                    Code::ResultNotKept,
                    format!(
                        "the job finished, but your kept results already hold {used} bytes of the {} a principal may keep (jobs.max_kept_bytes_per_principal): fetch or let them expire, ask for less, or stream it as NDJSON",
                        settings.max_kept_bytes_per_principal
                    ),
                ),
            )
        } else if kept.size() > settings.max_result_bytes {
            failed(
                &id,
                Problem::new(
                    Code::ResultNotKept,
                    format!(
                        "the job finished, but its result ({} bytes) is larger than the server keeps ({} bytes, jobs.max_result_bytes): ask for less (max_rows, max_bytes) or stream it as NDJSON",
                        kept.size(),
                        settings.max_result_bytes
                    ),
                ),
            )
        } else {
            kept
        };
        let until = Utc::now() + chrono::Duration::seconds(settings.result_ttl_secs as i64);
        super::results::store(&gw, &kept, requester, until).await;
        gw.jobs.lock().remove(&id);
        gw.reviews.wake(&id);
    });
    Ok(Reply::Job(JobView::running(&execution_id)))
}

fn failed(execution_id: &str, problem: Problem) -> Kept {
    Kept::Failed {
        problem: problem
            .with("execution_id", execution_id.to_string())
            .to_body(),
    }
}

async fn read_rows(mut run: RowsRun) -> Kept {
    let mut rows: Vec<Box<RawValue>> = Vec::new();
    loop {
        match run.rows.recv().await {
            Some(Output::Row(r)) => rows.push(r),
            Some(Output::End(summary)) => {
                return Kept::Rows(KeptRows {
                    execution_id: run.execution_id,
                    rule: run.rule,
                    columns: run.columns,
                    limits: run.limits,
                    rows,
                    summary,
                });
            }
            Some(Output::Error(p)) => return failed(&run.execution_id, p),
            None => {
                return failed(
                    &run.execution_id,
                    Problem::internal("the execution ended without a result"),
                );
            }
        }
    }
}

async fn read_command(mut run: CommandRun) -> Kept {
    let (mut stdout, mut stderr) = (String::new(), String::new());
    loop {
        match run.output.recv().await {
            Some(ExecOutput::Stdout(s)) => stdout.push_str(&s),
            Some(ExecOutput::Stderr(s)) => stderr.push_str(&s),
            Some(ExecOutput::End(summary)) => {
                return Kept::Command(KeptCommand {
                    execution_id: run.execution_id,
                    session_id: run.session_id,
                    rule: run.rule,
                    stdout,
                    stderr,
                    summary,
                });
            }
            Some(ExecOutput::Error(p)) => {
                let p = p.with("session_id", run.session_id.clone());
                return failed(&run.execution_id, p);
            }
            None => {
                return failed(
                    &run.execution_id,
                    Problem::internal("the command ended without a result"),
                );
            }
        }
    }
}

/// Asks the instance running `execution_id` to cancel it: at once if it runs here, through
/// the store otherwise.
pub(crate) async fn cancel(gateway: &Gateway, execution_id: &str) -> Result<(), Problem> {
    if gateway.jobs.cancel_local(execution_id) {
        return Ok(());
    }
    gateway
        .store
        .request_cancel(execution_id, Utc::now())
        .await
        .map_err(|_| Problem::audit_unavailable())
}

/// Polls the store for cancels of the jobs running here, written by other instances.
pub(crate) fn spawn_cancel_poller(gateway: Arc<Gateway>) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(CANCEL_POLL) => {}
                _ = gateway.shutdown.cancelled() => return,
            }
            let ids = gateway.jobs.ids();
            if ids.is_empty() {
                continue;
            }
            match gateway.store.take_cancels(&ids).await {
                Ok(cancelled) => {
                    for id in cancelled {
                        gateway.jobs.cancel_local(&id);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not read job cancels"),
            }
        }
    });
}

/// Where an execution that is not a held request stands (a job, or any request), read from
/// its audit record and its kept result. Only its requester sees it (`auditor`: anyone's).
pub(crate) struct ExecutionState {
    pub(crate) begin: crate::audit::AuditEvent,
    pub(crate) end: Option<crate::audit::AuditEvent>,
    /// Present once a job finished (for its requester).
    pub(crate) kept: Option<Kept>,
}

impl ExecutionState {
    pub(crate) fn status(&self) -> crate::review::ExecutionStatus {
        use crate::audit::Outcome;
        use crate::review::ExecutionStatus as S;
        // The kept result is written before the execution's end is: it decides first.
        if let Some(kept) = &self.kept {
            return match kept {
                Kept::Rows(_) | Kept::Command(_) | Kept::Http(_) => S::Done,
                Kept::Failed { problem } if problem["code"] == "cancelled" => S::Cancelled,
                Kept::Failed { .. } => S::Failed,
            };
        }
        match self.end.as_ref().and_then(|e| e.outcome) {
            None => S::Running,
            Some(Outcome::Ok) => S::Done,
            Some(Outcome::Cancelled) => S::Cancelled,
            Some(Outcome::Interrupted) => S::Interrupted,
            Some(Outcome::PendingReview) => S::PendingReview,
            Some(Outcome::Denied | Outcome::Error | Outcome::Timeout) => S::Failed,
        }
    }
}

/// The state of `execution_id` as `caller` may see it; `None` if there is no such
/// execution of the caller's (or, for an auditor, at all).
pub(crate) async fn state(
    gateway: &Gateway,
    execution_id: &str,
    caller: &crate::identity::Principal,
    auditor: bool,
) -> Result<Option<ExecutionState>, Problem> {
    use crate::audit::Phase;
    let events = gateway
        .store
        .query_audit(&crate::store::AuditQuery {
            execution_id: Some(execution_id.to_string()),
            limit: 50,
            ..Default::default()
        })
        .await
        .map_err(|_| Problem::audit_unavailable())?;
    let Some(begin) = events.iter().find(|e| e.phase == Phase::Begin).cloned() else {
        return Ok(None);
    };
    let Some(owner) = begin.principal.as_ref() else {
        return Ok(None);
    };
    let own = owner.owner_key() == crate::audit::AuditPrincipal::from(caller).owner_key();
    if !(own || auditor) {
        return Ok(None);
    }
    let end = events.iter().find(|e| e.phase == Phase::End).cloned();
    let kept = super::results::fetch(gateway, execution_id, &owner.owner_key()).await?;
    Ok(Some(ExecutionState { begin, end, kept }))
}

/// [`state`], waiting up to `wait` while it is `running`. The job's end wakes the waiters
/// here; the store is polled too, so a job on another instance is seen ending.
pub(crate) async fn wait_state(
    gateway: &Gateway,
    execution_id: &str,
    caller: &crate::identity::Principal,
    auditor: bool,
    wait: Duration,
) -> Result<Option<ExecutionState>, Problem> {
    let deadline = tokio::time::Instant::now() + wait.min(super::review::MAX_WAIT);
    let notify = gateway.reviews.subscribe(execution_id);
    loop {
        let notified = notify.notified();
        let found = state(gateway, execution_id, caller, auditor).await?;
        let running = found
            .as_ref()
            .is_some_and(|s| s.status() == crate::review::ExecutionStatus::Running);
        if !running || tokio::time::Instant::now() >= deadline {
            return Ok(found);
        }
        let poll = tokio::time::Instant::now() + crate::review::hub::POLL;
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(poll.min(deadline)) => {}
            _ = gateway.shutdown.cancelled() => return Ok(found),
        }
    }
}
