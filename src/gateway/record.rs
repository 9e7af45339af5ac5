//! The execution record: the one owner of an execution's audit `begin` and `end`.
//!
//! What must stay true:
//! - [`ExecutionRecord::open`] returns only after the store committed the `begin`; nothing
//!   reaches a target before that. If the store refuses, the request fails closed (503) and
//!   a claimed approval is given back, since nothing ran.
//! - Every opened record gets exactly one `end`: [`ExecutionRecord::finish`] writes it with
//!   what happened; a record dropped unfinished (panic, cancelled future, client gone
//!   before the task settled) writes an `interrupted` end from `Drop`.
//! - A consumed approval is settled (running → done | failed) by `finish`, never elsewhere.
//! - `end` events are built only here, from the `begin` they close.

use std::sync::Arc;
use std::time::Instant;

use super::Gateway;
use super::problem::Problem;
use crate::audit::{AuditEvent, Outcome, Phase};
use crate::review::ReviewRecord;

/// What is known when an execution ends.
#[derive(Debug, Clone)]
pub(crate) struct Ending {
    pub(crate) outcome: Outcome,
    /// The problem code, or `client_gone` / `interrupted`.
    pub(crate) error_class: Option<String>,
    pub(crate) sqlstate: Option<String>,
    pub(crate) row_count: Option<u64>,
    pub(crate) byte_count: Option<u64>,
    pub(crate) truncated: Option<bool>,
    pub(crate) masked: Option<serde_json::Value>,
    pub(crate) exit_code: Option<i64>,
    /// An HTTP API request's response status.
    pub(crate) http_status: Option<u16>,
    pub(crate) recording_digest: Option<String>,
}

impl Ending {
    pub(crate) fn ok() -> Ending {
        Ending {
            outcome: Outcome::Ok,
            error_class: None,
            sqlstate: None,
            row_count: None,
            byte_count: None,
            truncated: None,
            masked: None,
            exit_code: None,
            http_status: None,
            recording_digest: None,
        }
    }

    /// An execution that ended with `problem`: a refusal before anything ran is `denied`
    /// (4xx) or `error` (Airlock or the target could not serve it).
    pub(crate) fn failed(outcome: Outcome, problem: &Problem) -> Ending {
        let sqlstate = problem
            .extra
            .get("database")
            .and_then(|d| d.get("sqlstate"))
            .and_then(|s| s.as_str())
            .map(str::to_string);
        Ending {
            outcome,
            error_class: Some(problem.code.as_str().to_string()),
            sqlstate,
            ..Ending::ok()
        }
    }

    pub(crate) fn with_class(outcome: Outcome, class: &str) -> Ending {
        Ending {
            outcome,
            error_class: Some(class.to_string()),
            ..Ending::ok()
        }
    }
}

/// Executions whose `end` is not written yet, so shutdown can wait for them.
#[derive(Default)]
pub struct InFlight {
    count: std::sync::atomic::AtomicUsize,
    changed: tokio::sync::Notify,
}

impl InFlight {
    fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlightGuard(self.clone())
    }

    /// How many opened records have not written their `end` yet.
    pub fn count(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until every opened record has written its `end`, or `limit` passes.
    pub async fn settled(&self, limit: std::time::Duration) {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                if self.count.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                    return;
                }
                changed.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }
}

/// Held by a record until its `end` is committed.
struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

pub(crate) struct ExecutionRecord {
    gateway: Arc<Gateway>,
    /// Counts this execution as in flight until its `end` is written.
    in_flight: Option<InFlightGuard>,
    begin: AuditEvent,
    started: Instant,
    /// The approved review this execution consumes, claimed (`running`).
    claim: Option<ReviewRecord>,
    /// `false` once the `end` is written (or handed to `Drop`).
    open: bool,
}

impl ExecutionRecord {
    /// Commits the `begin` durably. On failure the claim is released and the caller gets
    /// the 503 to answer with; nothing may run.
    pub(crate) async fn open(
        gateway: Arc<Gateway>,
        begin: AuditEvent,
        started: Instant,
        claim: Option<ReviewRecord>,
    ) -> Result<ExecutionRecord, Problem> {
        if let Err(e) = gateway.audit.commit(begin.clone()).await {
            tracing::error!(error = %e, execution_id = %begin.execution_id, "audit begin not stored; refusing");
            if let Some(claim) = claim {
                super::review::release_claim(&gateway, claim).await;
            }
            return Err(Problem::audit_unavailable().with("execution_id", begin.execution_id));
        }
        let in_flight = Some(gateway.in_flight.enter());
        Ok(ExecutionRecord {
            gateway,
            in_flight,
            begin,
            started,
            claim,
            open: true,
        })
    }

    pub(crate) fn execution_id(&self) -> &str {
        &self.begin.execution_id
    }

    pub(crate) fn rule(&self) -> &str {
        self.begin.rule.as_deref().unwrap_or_default()
    }

    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// Writes the `end` (never lost: spooled if the store refuses) and settles a consumed
    /// approval.
    pub(crate) async fn finish(self, ending: Ending) {
        self.close(ending, true).await
    }

    /// [`Self::finish`] once the client has its answer: the `end` may ride with the next
    /// audit commit (see `audit::writer`), so back-to-back requests share commits.
    pub(crate) async fn finish_after_answer(self, ending: Ending) {
        self.close(ending, false).await
    }

    async fn close(mut self, ending: Ending, urgent: bool) {
        self.open = false;
        let end = self.end_event(&ending);
        if let Some(claim) = self.claim.take() {
            super::review::settle_run(&self.gateway, claim, &end).await;
        }
        if urgent {
            self.gateway.audit.commit_end(end).await;
        } else {
            self.gateway.audit.commit_end_after_answer(end).await;
        }
        self.in_flight = None;
    }

    fn end_event(&self, ending: &Ending) -> AuditEvent {
        end_of(&self.begin, self.started, ending)
    }
}

/// The `end` that closes `begin`: who, where and which rule come from the begin, what
/// happened from `ending`.
pub(crate) fn end_of(begin: &AuditEvent, started: Instant, ending: &Ending) -> AuditEvent {
    closing(begin, ending, Some(started.elapsed().as_millis() as u64))
}

/// The `end` that closes `begin`, when how long it ran is known (or not: a begin found
/// unfinished after a restart).
pub(crate) fn closing(begin: &AuditEvent, ending: &Ending, duration_ms: Option<u64>) -> AuditEvent {
    crate::metrics::execution_ended(&begin.operation, ending.outcome);
    let mut end = AuditEvent::new(Phase::End, &begin.execution_id, &begin.operation);
    end.request_id = begin.request_id.clone();
    end.principal = begin.principal.clone();
    end.connection = begin.connection.clone();
    end.rule = begin.rule.clone();
    end.review_id = begin.review_id.clone();
    end.approved_by = begin.approved_by.clone();
    end.session_id = begin.session_id.clone();
    end.outcome = Some(ending.outcome);
    end.error_class = ending.error_class.clone();
    end.sqlstate = ending.sqlstate.clone();
    end.row_count = ending.row_count;
    end.byte_count = ending.byte_count;
    end.truncated = ending.truncated;
    end.masked = ending.masked.clone();
    end.exit_code = ending.exit_code;
    end.http_status = ending.http_status;
    end.recording_digest = ending.recording_digest.clone();
    end.duration_ms = duration_ms;
    end
}

/// For recorded executions (commands, shells): the recording header, then the audit
/// `begin` naming it, both durable before anything runs. A recording that cannot start is
/// refused like any other request (audited; a claimed approval is given back).
pub(crate) async fn open_recorded(
    gateway: &Arc<Gateway>,
    mut begin: AuditEvent,
    started: Instant,
    claim: Option<ReviewRecord>,
    session: crate::store::SessionRecord,
    size: Option<(u32, u32)>,
) -> Result<(ExecutionRecord, crate::recording::Recorder), Problem> {
    use crate::recording::Recorder;
    let store = gateway.store.clone();
    let recorder = match size {
        Some((cols, rows)) => Recorder::start_sized(store, session, cols, rows).await,
        None => Recorder::start(store, session).await,
    };
    let recorder = match recorder {
        Ok(r) => r,
        Err(_) => {
            if let Some(claim) = claim {
                super::review::release_claim(gateway, claim).await;
            }
            let problem = Problem::recording_unavailable(
                "the session recording could not be started, so nothing ran",
            );
            return Err(super::admit::refuse(gateway, begin, started, problem).await);
        }
    };
    begin.session_id = Some(recorder.session_id().to_string());
    match ExecutionRecord::open(gateway.clone(), begin, started, claim).await {
        Ok(record) => Ok((record, recorder)),
        Err(problem) => {
            let _ = recorder.finish("failed", None).await;
            Err(problem)
        }
    }
}

/// The recording header of the execution `begin` opens: a `kind` (`exec`, `shell`)
/// session on `connection`, showing `command`.
pub(crate) fn session_of(
    begin: &AuditEvent,
    kind: &str,
    connection: &str,
    command: String,
) -> crate::store::SessionRecord {
    let principal = begin.principal.as_ref();
    crate::store::SessionRecord {
        id: uuid::Uuid::now_v7().to_string(),
        execution_id: begin.execution_id.clone(),
        kind: kind.into(),
        connection: connection.to_string(),
        issuer: principal.map(|p| p.issuer.clone()).unwrap_or_default(),
        subject: principal.map(|p| p.subject.clone()).unwrap_or_default(),
        command,
        started_at: chrono::Utc::now(),
        ended_at: None,
        status: "running".into(),
        exit_code: None,
        digest: None,
    }
}

impl Drop for ExecutionRecord {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        let end = self.end_event(&Ending::with_class(Outcome::Interrupted, "interrupted"));
        tracing::warn!(execution_id = %self.begin.execution_id, "execution dropped before it finished; recording it as interrupted");
        // A claimed approval stays `running`: the review sweeper turns it into `unknown`,
        // which never runs again (the run may or may not have reached the target).
        let audit = self.gateway.audit.clone();
        let in_flight = self.in_flight.take();
        // Without a runtime (process teardown) the startup sweep closes the begin as
        // `interrupted` instead.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                audit.commit_end(end).await;
                drop(in_flight);
            });
        }
    }
}
