//! The pipeline for commands (`POST /v1/connections/{name}/exec`): the same steps as SQL
//! (resolve, inspect, decide, audit begin, execute, mask, stream, audit end) with the shell
//! lexer as the inspector, the streaming masker on output, and a recording of everything the
//! agent saw.
//!
//! Invariants (what must stay true):
//! - Airlock never sends the agent's raw string: it sends the argv it inspected, each
//!   argument quoted for a POSIX shell. A command the lexer cannot reduce to one plain argv
//!   (lists, pipes, redirections, substitutions, expansions, globs) never runs.
//! - The recording header and the audit begin are stored before the command starts; a
//!   recording line the store refuses ends the command (fail closed), and that is audited.
//! - Output reaches the agent, the recording and the audit only after the streaming masker.
//! - A timeout or a vanished client kills the remote process; a timeout is reported as 504,
//!   distinct from the command's own non-zero exit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::api::problem::Problem;
use crate::audit::{AuditEvent, Outcome, Phase};
use crate::backend::{BackendError, ExecEvent, ExecPlan};
use crate::inspect::Facts;
use crate::inspect::shell::{self, CommandFacts};
use crate::mask::StreamMasker;
use crate::mask::plan::{MaskedCounts, RequestMasking};
use crate::pipeline::{RequestContext, Slot, resolve, wrong_operation};
use crate::policy::Decision;
use crate::recording::Recorder;
use crate::server::AppState;
use crate::store::SessionRecord;

/// A command as the agent sent it: exactly one of `argv` or `command`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// The program and its arguments; sent quoted, never through a shell's parsing of yours.
    pub argv: Option<Vec<String>>,
    /// A command line, lexed as POSIX `sh` would into argv. Anything but one plain command
    /// (lists, pipes, redirections, expansions, globs) is refused.
    pub command: Option<String>,
    /// Written to the command's standard input, then end of file.
    pub stdin: Option<String>,
    /// Up to the connection's ceiling.
    pub timeout_ms: Option<u64>,
    /// Cap on stdout + stderr bytes, up to the connection's ceiling.
    pub max_bytes: Option<u64>,
    /// Kubernetes connections: the pod (and container) to run in. Not for SSH.
    pub target: Option<crate::backend::PodTarget>,
}

/// The result of a command.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ExecResponse {
    pub execution_id: String,
    /// The recording: `GET /v1/sessions/{id}/recording`.
    pub session_id: String,
    pub rule: String,
    /// `None` when the command died of a signal.
    pub exit_code: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    pub stdout: String,
    pub stderr: String,
    /// Output was cut at `max_bytes`; the command was stopped.
    pub truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub masked: MaskedCounts,
    pub duration_ms: u64,
}

/// The trailer of a command's output.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ExecSummary {
    pub exit_code: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    pub truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub masked: MaskedCounts,
    pub duration_ms: u64,
}

pub enum ExecOutput {
    Stdout(String),
    Stderr(String),
    End(ExecSummary),
    Error(Problem),
}

/// A started command: ids, and its output as it comes.
pub struct ExecRun {
    pub execution_id: String,
    pub session_id: String,
    pub rule: String,
    pub output: mpsc::Receiver<ExecOutput>,
}

/// Records a refused command (begin + end) and returns the problem; 503 if audit is down.
async fn refusal(
    state: &AppState,
    begin: AuditEvent,
    started: Instant,
    problem: Problem,
) -> Problem {
    let mut end = AuditEvent::new(Phase::End, &begin.execution_id, "exec");
    end.principal = begin.principal.clone();
    end.connection = begin.connection.clone();
    end.request_id = begin.request_id.clone();
    end.rule = begin.rule.clone();
    end.outcome = Some(Outcome::Denied);
    end.error_class = Some(problem.code.to_string());
    end.duration_ms = Some(started.elapsed().as_millis() as u64);
    if state.audit.commit(begin).await.is_err() {
        return Problem::audit_unavailable();
    }
    state.audit.commit_end(end).await;
    problem
}

/// Runs the exec pipeline up to the start of the command.
pub async fn exec(
    state: Arc<AppState>,
    ctx: RequestContext,
    name: &str,
    req: ExecRequest,
    slot: Slot,
    options: crate::pipeline::QueryOptions,
) -> Result<crate::pipeline::Answer, Problem> {
    let started = Instant::now();
    let conn = resolve(&state, &ctx.principal, name)?.clone();
    if conn.exec().is_none() {
        return Err(wrong_operation(name, "runs SQL", "query"));
    }
    match (conn.config.kind, &req.target) {
        (crate::config::ConnectionKind::Kubernetes, None) => {
            return Err(Problem::bad_request(
                "invalid_command",
                "a kubernetes connection needs `target`: {namespace, pod, container?}",
            ));
        }
        (crate::config::ConnectionKind::Ssh, Some(_)) => {
            return Err(Problem::bad_request(
                "invalid_command",
                "`target` is for kubernetes connections; an ssh connection is one host",
            ));
        }
        _ => {}
    }
    let execution_id = uuid::Uuid::now_v7().to_string();
    let masking = state.masking.for_request(&ctx.principal, name);
    let record_masking = state.masking.for_record(name);

    // Inspect: lex the string, or take the argv as given.
    let facts: CommandFacts = match (&req.argv, &req.command) {
        (Some(argv), None) => shell::inspect_argv(argv),
        (None, Some(command)) => shell::inspect_command(command),
        _ => {
            return Err(Problem::bad_request(
                "invalid_command",
                "send exactly one of `argv` (a list of strings) or `command` (a string)",
            ));
        }
    };
    let shown = match (&facts.argv, &req.command) {
        (Some(argv), _) => shell::quote_argv(argv).unwrap_or_default(),
        (None, Some(c)) => c.clone(),
        (None, None) => String::new(),
    };
    let shown = match &req.target {
        Some(t) => format!(
            "[{}/{}{}] {shown}",
            t.namespace,
            t.pod,
            t.container
                .as_deref()
                .map(|c| format!("/{c}"))
                .unwrap_or_default()
        ),
        None => shown,
    };
    let mut counts = crate::mask::MaskCounts::default();
    let mut begin = AuditEvent::new(Phase::Begin, &execution_id, "exec");
    begin.request_id = ctx.request_id.clone();
    begin.principal = Some((&ctx.principal).into());
    begin.connection = Some(name.to_string());
    begin.statement = Some(record_masking.text(&shown, &mut counts));
    let all = Facts {
        statement_count: 1,
        unparsed: facts.unparsed,
        command: Some(facts.clone()),
        ..Facts::default()
    };
    begin.facts = Some(all.clone());

    let lc = &conn.config.limits;
    let timeout_ms = match req.timeout_ms {
        None => lc.timeout_ms,
        Some(t) if t >= 1 && t <= lc.max_timeout_ms => t,
        Some(t) => {
            let p = Problem::bad_request(
                "invalid_limit",
                format!("timeout_ms = {t} must be in 1..={}", lc.max_timeout_ms),
            );
            return Err(refusal(&state, begin, started, p).await);
        }
    };
    let max_bytes = match req.max_bytes {
        None => lc.max_bytes,
        Some(b) if b >= 1 && b <= lc.max_bytes_ceiling => b,
        Some(b) => {
            let p = Problem::bad_request(
                "invalid_limit",
                format!("max_bytes = {b} must be in 1..={}", lc.max_bytes_ceiling),
            );
            return Err(refusal(&state, begin, started, p).await);
        }
    };

    let decision = state.policy.decide(&ctx.principal, name, &all);
    begin.decision = Some(decision.action().into());
    begin.rule = Some(decision.rule().into());
    let rule = decision.rule().to_string();
    match decision {
        Decision::Allow { .. } => {}
        Decision::Deny { rule, message } => {
            let message = match &facts.reason {
                Some(reason) if facts.unparsed => format!("{message} ({reason})"),
                _ => message,
            };
            let p = Problem::forbidden("policy_denied", message)
                .with("rule", rule)
                .with("execution_id", execution_id.clone());
            return Err(refusal(&state, begin, started, p).await);
        }
        Decision::Review { rule, message } => {
            let Some(argv) = facts.argv.clone() else {
                let p = Problem::forbidden(
                    "compound_command",
                    "only one plain command can be approved and run (send `argv`)",
                )
                .with("rule", rule)
                .with("execution_id", execution_id.clone());
                return Err(refusal(&state, begin, started, p).await);
            };
            let quoted = match shell::quote_argv(&argv) {
                Ok(q) => q,
                Err(e) => {
                    let p = Problem::bad_request("invalid_command", e);
                    return Err(refusal(&state, begin, started, p).await);
                }
            };
            let held = crate::review::HeldRequest {
                sql: quoted,
                params: Vec::new(),
                max_rows: 0,
                max_bytes,
                timeout_ms,
                argv: Some(argv),
                stdin: req.stdin.clone(),
                target: req.target.clone(),
            };
            return crate::review::flow::hold(crate::review::flow::Hold {
                state,
                ctx,
                conn,
                facts: all,
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
    // Only one plain argv ever runs, quoted by Airlock.
    let Some(argv) = facts.argv.clone() else {
        let p = Problem::forbidden(
            "compound_command",
            "only one plain command runs through Airlock (send `argv`); lists, pipes, redirections, substitutions, expansions and globs do not",
        )
        .with("rule", rule.clone())
        .with("execution_id", execution_id.clone());
        return Err(refusal(&state, begin, started, p).await);
    };
    start(StartExec {
        state,
        conn,
        argv,
        target: req.target,
        stdin: req.stdin,
        timeout_ms,
        max_bytes,
        begin,
        rule,
        started,
        masking,
        slot,
        review: None,
    })
    .await
    .map(crate::pipeline::Answer::Command)
}

/// A decided command, ready to start.
pub struct StartExec {
    pub state: Arc<AppState>,
    pub conn: Arc<crate::server::Connection>,
    pub argv: Vec<String>,
    pub target: Option<crate::backend::PodTarget>,
    pub stdin: Option<String>,
    pub timeout_ms: u64,
    pub max_bytes: u64,
    /// The `begin` event, not yet committed.
    pub begin: AuditEvent,
    pub rule: String,
    pub started: Instant,
    pub masking: RequestMasking,
    pub slot: Slot,
    /// The approved review this run consumes, claimed (`running`) by the caller.
    pub review: Option<crate::review::ReviewRecord>,
}

/// Records the session header and the audit begin (both durable), then starts the command.
pub async fn start(s: StartExec) -> Result<ExecRun, Problem> {
    let StartExec {
        state,
        conn,
        argv,
        target,
        stdin,
        timeout_ms,
        max_bytes,
        mut begin,
        rule,
        started,
        masking,
        slot,
        review,
    } = s;
    let execution_id = begin.execution_id.clone();
    // Refusals before the recording starts are audited, and give back a claimed approval.
    let early = match (conn.exec().cloned(), shell::quote_argv(&argv)) {
        (Some(backend), Ok(command)) => Ok((backend, command)),
        (None, _) => Err(wrong_operation(&conn.config.name, "runs SQL", "query")),
        (_, Err(e)) => Err(Problem::bad_request("invalid_command", e)),
    };
    let (backend, command) = match early {
        Ok(v) => v,
        Err(p) => {
            if let Some(r) = review {
                crate::review::flow::release_claim(&state, r).await;
            }
            return Err(refusal(&state, begin, started, p).await);
        }
    };
    let name = conn.config.name.clone();
    let (issuer, subject) = begin
        .principal
        .as_ref()
        .map(|p| (p.issuer.clone(), p.subject.clone()))
        .unwrap_or_default();
    let session = SessionRecord {
        id: uuid::Uuid::now_v7().to_string(),
        execution_id: execution_id.clone(),
        kind: "exec".into(),
        connection: name.clone(),
        issuer,
        subject,
        command: begin.statement.clone().unwrap_or_default(),
        started_at: chrono::Utc::now(),
        ended_at: None,
        status: "running".into(),
        exit_code: None,
        digest: None,
    };
    let recorder = match Recorder::start(state.store.clone(), session).await {
        Ok(r) => r,
        Err(_) => {
            if let Some(r) = review {
                crate::review::flow::release_claim(&state, r).await;
            }
            let p = Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "recording_unavailable",
                "Recording unavailable",
                "the session recording could not be started, so the command did not run",
            )
            .retry_after(2);
            return Err(refusal(&state, begin, started, p).await);
        }
    };
    let session_id = recorder.session_id().to_string();
    begin.session_id = Some(session_id.clone());
    if state.audit.commit(begin.clone()).await.is_err() {
        let _ = recorder.finish("failed", None).await;
        if let Some(r) = review {
            crate::review::flow::release_claim(&state, r).await;
        }
        return Err(Problem::audit_unavailable().with("execution_id", execution_id));
    }

    let plan = ExecPlan {
        command,
        argv,
        target,
        stdin: stdin.map(String::into_bytes),
        timeout: Duration::from_millis(timeout_ms),
    };
    let (started_tx, started_rx) = oneshot::channel();
    let (out_tx, out_rx) = mpsc::channel(crate::backend::STREAM_BUFFER);
    tokio::spawn(run(Run {
        state,
        backend,
        conn_verify: conn,
        plan,
        max_bytes,
        begin,
        started,
        recorder,
        masking,
        _slot: slot,
        review,
        started_tx,
        out: out_tx,
    }));
    match started_rx.await {
        Ok(Ok(())) => Ok(ExecRun {
            execution_id,
            session_id,
            rule,
            output: out_rx,
        }),
        Ok(Err(p)) => Err(p
            .with("execution_id", execution_id)
            .with("session_id", session_id)),
        Err(_) => Err(Problem::internal("the execution task stopped unexpectedly")),
    }
}

struct Run {
    state: Arc<AppState>,
    backend: Arc<dyn crate::backend::ExecBackend>,
    conn_verify: Arc<crate::server::Connection>,
    plan: ExecPlan,
    max_bytes: u64,
    begin: AuditEvent,
    started: Instant,
    recorder: Recorder,
    masking: RequestMasking,
    _slot: Slot,
    review: Option<crate::review::ReviewRecord>,
    started_tx: oneshot::Sender<Result<(), Problem>>,
    out: mpsc::Sender<ExecOutput>,
}

/// One stream's masker chain (every applicable `[[masking]]` entry, in order).
struct Maskers(Vec<StreamMasker>);

impl Maskers {
    fn new(masking: &RequestMasking) -> Maskers {
        Maskers(masking.stream_maskers())
    }

    fn push(&mut self, mut bytes: Vec<u8>) -> Vec<u8> {
        for m in &mut self.0 {
            bytes = m.push(&bytes);
        }
        bytes
    }

    fn flush(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..self.0.len() {
            let mut chunk = std::mem::take(&mut out);
            if let Some(m) = self.0.get_mut(i) {
                chunk = m.push(&chunk);
                chunk.extend(m.flush());
            }
            out = chunk;
        }
        out
    }

    fn counts(&self, into: &mut MaskedCounts) {
        for m in &self.0 {
            into.detectors.merge(m.counts());
        }
    }
}

async fn run(r: Run) {
    let Run {
        state,
        backend,
        conn_verify,
        plan,
        max_bytes,
        begin,
        started,
        mut recorder,
        masking,
        _slot,
        review,
        started_tx,
        out,
    } = r;
    let cancel = state.shutdown.child_token();
    let mut end = AuditEvent::new(Phase::End, &begin.execution_id, "exec");
    end.principal = begin.principal.clone();
    end.connection = begin.connection.clone();
    end.request_id = begin.request_id.clone();
    end.rule = begin.rule.clone();
    end.session_id = begin.session_id.clone();
    end.outcome = Some(Outcome::Ok);

    let stream = tokio::select! {
        s = async {
            conn_verify.ensure_verified().await?;
            backend.exec(plan, cancel.clone()).await
        } => s,
        _ = out.closed() => Err(BackendError::Cancelled),
    };
    let mut stream = match stream {
        Ok(s) => s,
        Err(e) => {
            end.outcome = Some(match e {
                BackendError::Timeout => Outcome::Timeout,
                BackendError::Cancelled => Outcome::Cancelled,
                _ => Outcome::Error,
            });
            end.error_class = Some(Problem::from(e.clone()).code.to_string());
            let _ = recorder.marker("not started").await;
            end.recording_digest = recorder.finish("failed", None).await.ok();
            let _ = started_tx.send(Err(e.into()));
            finish(&state, review, end, started, 0).await;
            return;
        }
    };
    if started_tx.send(Ok(())).is_err() {
        cancel.cancel();
    }

    let mut stdout = Maskers::new(&masking);
    let mut stderr = Maskers::new(&masking);
    let mut bytes = 0u64;
    let mut truncated = false;
    let mut exit: Option<(Option<u32>, Option<String>)> = None;
    let mut failure: Option<Problem> = None;
    // Emits masked output to the recording and the client; false: stop the command.
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
        let (is_err, data) = match event {
            Some(Ok(ExecEvent::Stdout(b))) => (false, stdout.push(b.to_vec())),
            Some(Ok(ExecEvent::Stderr(b))) => (true, stderr.push(b.to_vec())),
            Some(Ok(ExecEvent::Exit { code, signal })) => {
                exit = Some((code, signal));
                break;
            }
            Some(Err(e)) => {
                end.outcome = Some(match e {
                    BackendError::Timeout => Outcome::Timeout,
                    BackendError::Cancelled => Outcome::Cancelled,
                    _ => Outcome::Error,
                });
                end.error_class = Some(Problem::from(e.clone()).code.to_string());
                failure = Some(e.into());
                break;
            }
            None => {
                end.outcome = Some(Outcome::Error);
                failure = Some(Problem::from(BackendError::Internal(
                    "the command's output ended without an exit status".into(),
                )));
                break;
            }
        };
        match emit(
            &mut recorder,
            &out,
            is_err,
            data,
            &mut bytes,
            max_bytes,
            &mut truncated,
        )
        .await
        {
            Emitted::More => {}
            Emitted::Capped => {
                cancel.cancel();
                break;
            }
            Emitted::ClientGone => {
                cancel.cancel();
                end.outcome = Some(Outcome::Cancelled);
                end.error_class = Some("client_gone".into());
                break;
            }
            Emitted::RecordingFailed => {
                cancel.cancel();
                end.outcome = Some(Outcome::Error);
                end.error_class = Some("recording_failed".into());
                failure = Some(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "recording_unavailable",
                    "Recording unavailable",
                    "the recording could not be written, so the command was stopped",
                ));
                break;
            }
        }
    }
    drop(stream);
    // Whatever the masker still holds back is flushed, masked, before the end.
    let tail_out = stdout.flush();
    let tail_err = stderr.flush();
    let mut ok = true;
    for (is_err, tail) in [(false, tail_out), (true, tail_err)] {
        if !tail.is_empty() && !truncated {
            let e = emit(
                &mut recorder,
                &out,
                is_err,
                tail,
                &mut bytes,
                max_bytes,
                &mut truncated,
            )
            .await;
            ok &= !matches!(e, Emitted::RecordingFailed);
        }
    }
    let mut masked = MaskedCounts::default();
    stdout.counts(&mut masked);
    stderr.counts(&mut masked);
    let label = match (&exit, &failure) {
        (Some((Some(code), _)), _) => format!("exit {code}"),
        (Some((None, Some(sig))), _) => format!("signal {sig}"),
        _ if truncated => "stopped: output cap".to_string(),
        _ => end
            .outcome
            .map(|o| o.as_str().to_string())
            .unwrap_or_default(),
    };
    let _ = recorder.marker(&label).await;
    let exit_code = exit.as_ref().and_then(|(c, _)| c.map(i64::from));
    let status = if failure.is_some() || !ok {
        "failed"
    } else {
        "ended"
    };
    end.recording_digest = recorder.finish(status, exit_code).await.ok();
    end.exit_code = exit_code;
    end.truncated = Some(truncated);
    if !masked.is_empty() {
        end.masked = serde_json::to_value(&masked).ok();
    }
    match failure {
        Some(p) => {
            let _ = out.send(ExecOutput::Error(p)).await;
        }
        None => {
            let (code, signal) = exit.unwrap_or((None, None));
            let _ = out
                .send(ExecOutput::End(ExecSummary {
                    exit_code: code,
                    signal,
                    truncated,
                    note: truncated.then(|| {
                        format!("output exceeded max_bytes = {max_bytes}; the command was stopped. Narrow it (fewer lines, a filter argument)")
                    }),
                    masked,
                    duration_ms: started.elapsed().as_millis() as u64,
                }))
                .await;
        }
    }
    finish(&state, review, end, started, bytes).await;
}

enum Emitted {
    More,
    Capped,
    ClientGone,
    RecordingFailed,
}

/// Sends masked output to the recording (first) and then the client.
async fn emit(
    recorder: &mut Recorder,
    out: &mpsc::Sender<ExecOutput>,
    is_err: bool,
    mut data: Vec<u8>,
    bytes: &mut u64,
    max_bytes: u64,
    truncated: &mut bool,
) -> Emitted {
    if data.is_empty() {
        return Emitted::More;
    }
    let room = max_bytes.saturating_sub(*bytes) as usize;
    if data.len() > room {
        data.truncate(room);
        // Keep whole characters.
        while !data.is_empty() && std::str::from_utf8(&data).is_err() {
            data.pop();
        }
        *truncated = true;
    }
    *bytes += data.len() as u64;
    // Invalid UTF-8 becomes U+FFFD: JSON and asciicast carry text.
    let text = String::from_utf8_lossy(&data).into_owned();
    if recorder.output(&text).await.is_err() {
        return Emitted::RecordingFailed;
    }
    let event = if is_err {
        ExecOutput::Stderr(text)
    } else {
        ExecOutput::Stdout(text)
    };
    if out.send(event).await.is_err() {
        return Emitted::ClientGone;
    }
    if *truncated {
        Emitted::Capped
    } else {
        Emitted::More
    }
}

async fn finish(
    state: &AppState,
    review: Option<crate::review::ReviewRecord>,
    mut end: AuditEvent,
    started: Instant,
    bytes: u64,
) {
    if let Some(review) = review {
        crate::review::flow::record_run(state, review, &end, 0).await;
    }
    end.byte_count = Some(bytes);
    end.duration_ms = Some(started.elapsed().as_millis() as u64);
    end.time = chrono::Utc::now();
    state.audit.commit_end(end).await;
}
