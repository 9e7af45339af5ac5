//! Commands (`exec`) on SSH hosts and Kubernetes pods: inspection with the shell lexer, and
//! the execution task that streams masked output to the client and the recording.
//!
//! What must stay true:
//! - Airlock never sends the agent's raw string: it sends the argv it inspected, each
//!   argument quoted for a POSIX shell. A command the lexer cannot reduce to one plain argv
//!   (lists, pipes, redirections, substitutions, expansions, globs) never runs.
//! - The recording header and the audit begin are stored before the command starts; a
//!   recording line the store refuses ends the command (fail closed), and that is audited.
//! - Output reaches the agent, the recording and the audit only after the streaming masker.
//! - A timeout or a vanished client kills the remote process; a timeout is reported as 504,
//!   distinct from the command's own non-zero exit.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::admit::{Admitted, Work, check_pod_target, clamp};
use super::connection::Connection;
use super::problem::{Code, Problem};
use super::record::{Ending, open_recorded, session_of};
use crate::audit::{AuditEvent, Outcome};
use crate::backend::{BackendError, ExecEvent, ExecPlan, PodTarget};
use crate::inspect::Facts;
use crate::inspect::shell;
use crate::mask::plan::{MaskedCounts, RequestMasking};
use crate::recording::Recorder;

/// A command as the agent sent it: exactly one of `argv` or `command` (otherwise 400
/// `invalid_command`). Unknown fields are refused (400 `malformed_body`).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"argv": ["df", "-h", "/"], "timeout_ms": 10000}))]
pub(crate) struct ExecRequest {
    /// The program and its arguments; sent quoted, never through a shell's parsing of yours.
    #[schema(example = json!(["df", "-h", "/"]))]
    pub(crate) argv: Option<Vec<String>>,
    /// A command line, lexed as POSIX `sh` would into argv. Anything but one plain command
    /// (lists, pipes, redirections, expansions, globs) is refused.
    #[schema(example = "df -h /")]
    pub(crate) command: Option<String>,
    /// Written to the command's standard input, then end of file.
    pub(crate) stdin: Option<String>,
    /// Timeout in milliseconds, 1 up to the connection's `max_timeout_ms`; the command is
    /// killed when it passes (504 `timeout`).
    #[schema(minimum = 1, example = 10000)]
    #[serde(default, deserialize_with = "crate::wire::opt_count")]
    pub(crate) timeout_ms: Option<u64>,
    /// Cap on stdout + stderr bytes, 1 up to the connection's `max_bytes_ceiling`.
    #[schema(minimum = 1, example = 65536)]
    #[serde(default, deserialize_with = "crate::wire::opt_count")]
    pub(crate) max_bytes: Option<u64>,
    /// Kubernetes connections: the pod (and container) to run in. Required there; refused
    /// for SSH (400 `invalid_command`).
    pub(crate) target: Option<PodTarget>,
}

/// An inspected command, ready to run. `argv` is empty when the lexer could not reduce
/// the input to one plain command (such a command is refused, never run).
#[derive(Debug, Clone)]
pub(crate) struct CommandPlan {
    pub(crate) argv: Vec<String>,
    pub(crate) target: Option<PodTarget>,
    pub(crate) stdin: Option<String>,
    pub(crate) timeout_ms: u64,
    pub(crate) max_bytes: u64,
}

/// The trailer of a command's output: the NDJSON `{"type":"exit",...}` line carries these
/// fields.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"exit_code": 0, "truncated": false, "masked": {"columns": {}, "detectors": {}}, "duration_ms": 85}))]
pub(crate) struct ExecSummary {
    /// The command's exit status; null when it died of a signal.
    pub(crate) exit_code: Option<u32>,
    /// The signal that ended the command, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) signal: Option<String>,
    /// Output was cut at `max_bytes`; the command was stopped.
    pub(crate) truncated: bool,
    /// What to do about a truncated output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<String>,
    /// How many values were masked in the output, per detector.
    pub(crate) masked: MaskedCounts,
    /// Time from admission to the command's end, in milliseconds.
    pub(crate) duration_ms: u64,
}

pub(crate) enum ExecOutput {
    Stdout(String),
    Stderr(String),
    End(ExecSummary),
    Error(Problem),
}

/// A started command: ids, and its output as it comes.
pub(crate) struct CommandRun {
    pub(crate) execution_id: String,
    pub(crate) session_id: String,
    pub(crate) rule: String,
    pub(crate) output: mpsc::Receiver<ExecOutput>,
}

/// Checks the request's shape, lexes it into facts and a plan, and fills the audit begin.
pub(crate) fn inspect(
    conn: &Connection,
    req: ExecRequest,
    begin: &mut AuditEvent,
    record_masking: &RequestMasking,
) -> Result<(Facts, CommandPlan), Problem> {
    check_pod_target(
        conn,
        req.target.as_ref(),
        Code::InvalidCommand,
        "`target`: {namespace, pod, container?}",
    )?;
    let facts = match (&req.argv, &req.command) {
        (Some(argv), None) => shell::inspect_argv(argv),
        (None, Some(command)) => shell::inspect_command(command),
        _ => {
            return Err(Problem::new(
                Code::InvalidCommand,
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
    begin.statement = Some(record_masking.text(&shown, &mut Default::default()));
    // What the program will read is on record before it runs: its size and digest here,
    // its content (masked) in the recording.
    if let Some(stdin) = &req.stdin {
        begin.stdin_bytes = Some(stdin.len() as u64);
        begin.stdin_sha256 = Some(crate::digest::sha256_hex(stdin.as_bytes()));
    }
    let all = Facts {
        statement_count: 1,
        unparsed: facts.unparsed,
        command: Some(facts.clone()),
        ..Facts::default()
    };
    begin.facts = Some(all.clone());
    let lc = &conn.config.limits;
    let timeout_ms = clamp(
        req.timeout_ms,
        lc.timeout_ms,
        lc.max_timeout_ms,
        "timeout_ms",
    )?;
    let max_bytes = clamp(
        req.max_bytes,
        lc.max_bytes,
        lc.max_bytes_ceiling,
        "max_bytes",
    )?;
    let argv = facts.argv.clone().unwrap_or_default();
    // Only argv Airlock can quote runs; one it cannot is refused here, before anything.
    if !argv.is_empty() {
        shell::quote_argv(&argv).map_err(|e| Problem::new(Code::InvalidCommand, e))?;
    }
    Ok((
        all,
        CommandPlan {
            argv,
            target: req.target,
            stdin: req.stdin,
            timeout_ms,
            max_bytes,
        },
    ))
}

/// Records the session header and the audit begin (both durable), then starts the command.
pub(crate) async fn start(admitted: Admitted) -> Result<CommandRun, Problem> {
    let Work::Command(plan) = admitted.work else {
        return Err(Problem::internal("not a command"));
    };
    let (gateway, conn, slot, masking) = (
        admitted.gateway,
        admitted.conn,
        admitted.slot,
        admitted.masking,
    );
    let (Some(backend), Ok(command)) = (conn.exec().cloned(), shell::quote_argv(&plan.argv)) else {
        // Unreachable (admission checked both); nothing ran, so a claim goes back.
        if let Some(claim) = admitted.claim {
            super::review::release_claim(&gateway, claim).await;
        }
        return Err(Problem::internal(
            "an admitted command lost its backend or quoting",
        ));
    };
    let shown = admitted.begin.statement.clone().unwrap_or_default();
    let session = session_of(&admitted.begin, "exec", conn.name(), shown);
    let (record, mut recorder) = open_recorded(
        &gateway,
        admitted.begin,
        admitted.started,
        admitted.claim,
        session,
        None,
    )
    .await?;
    if let Some(opened) = admitted.opened {
        let _ = opened.send(());
    }
    if let Some(stdin) = &plan.stdin {
        let shown = masking.text(stdin, &mut Default::default());
        if recorder.input(&shown).await.is_err() {
            // The recording is the only place the content is kept: without it, nothing runs.
            let problem = Problem::recording_unavailable(
                "the command's input could not be recorded, so nothing was run; retry later",
            );
            let mut ending = Ending::failed(outcome_of(&problem), &problem);
            ending.recording_digest = recorder.finish("failed", None).await.ok();
            record.finish(ending).await;
            return Err(problem);
        }
    }
    let session_id = recorder.session_id().to_string();
    let execution_id = record.execution_id().to_string();
    let rule = record.rule().to_string();
    let max_bytes = plan.max_bytes;
    let plan = ExecPlan {
        command,
        argv: plan.argv,
        target: plan.target,
        stdin: plan.stdin.map(String::into_bytes),
        timeout: Duration::from_millis(plan.timeout_ms),
    };
    let (started_tx, started_rx) = oneshot::channel();
    let (out_tx, out_rx) = mpsc::channel(crate::backend::STREAM_BUFFER);
    let cancel = gateway.shutdown.child_token();
    tokio::spawn(async move {
        let stream = tokio::select! {
            s = backend.exec(plan, cancel.clone()) => s,
            _ = out_tx.closed() => Err(BackendError::Cancelled),
        };
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                let problem = Problem::from(e);
                let _ = recorder.marker("not started").await;
                let mut ending = Ending::failed(outcome_of(&problem), &problem);
                ending.recording_digest = recorder.finish("failed", None).await.ok();
                drop(slot);
                let _ = started_tx.send(Err(problem));
                record.finish(ending).await;
                return;
            }
        };
        if started_tx.send(Ok(())).is_err() {
            cancel.cancel();
        }
        let pump = Pump {
            slot: Some(slot),
            recorder,
            out: out_tx,
            bytes: 0,
            max_bytes,
            truncated: false,
        };
        let ending = pump.run(stream, &masking, &cancel, record.started()).await;
        record.finish(ending).await;
    });
    match started_rx.await {
        Ok(Ok(())) => Ok(CommandRun {
            execution_id,
            session_id,
            rule,
            output: out_rx,
        }),
        Ok(Err(p)) => Err(p
            .with("execution_id", execution_id)
            .with("session_id", session_id)),
        Err(_) => Err(Problem::internal("the execution task stopped unexpectedly")
            .with("execution_id", execution_id)),
    }
}

/// How a failed execution is recorded.
pub(crate) fn outcome_of(problem: &Problem) -> Outcome {
    match problem.code {
        Code::Timeout => Outcome::Timeout,
        Code::Cancelled => Outcome::Cancelled,
        _ => Outcome::Error,
    }
}

/// Moves a command's output to the recording and the client, masked, within the byte cap.
struct Pump {
    /// Given back as soon as the command is over, before the client sees the trailer.
    slot: Option<super::slots::Slot>,
    recorder: Recorder,
    out: mpsc::Sender<ExecOutput>,
    bytes: u64,
    max_bytes: u64,
    truncated: bool,
}

enum Emitted {
    More,
    Capped,
    ClientGone,
    RecordingFailed,
}

impl Pump {
    /// Runs until the command exits, fails, hits the cap or loses its client; sends the
    /// trailer (or the error) and returns what the audit end records.
    async fn run(
        mut self,
        mut stream: crate::backend::ExecStream,
        masking: &RequestMasking,
        cancel: &tokio_util::sync::CancellationToken,
        started: Instant,
    ) -> Ending {
        let mut stdout = masking.stream_chain();
        let mut stderr = masking.stream_chain();
        let mut ending = Ending::ok();
        let mut exit: Option<(Option<u32>, Option<String>)> = None;
        let mut failure: Option<Problem> = None;
        loop {
            let event = tokio::select! {
                ev = stream.next() => ev,
                _ = self.out.closed() => {
                    cancel.cancel();
                    ending = Ending::with_class(Outcome::Cancelled, "client_gone");
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
                    let problem = Problem::from(e);
                    ending = Ending::failed(outcome_of(&problem), &problem);
                    failure = Some(problem);
                    break;
                }
                None => {
                    let problem = Problem::from(BackendError::Internal(
                        "the command's output ended without an exit status".into(),
                    ));
                    ending = Ending::failed(Outcome::Error, &problem);
                    failure = Some(problem);
                    break;
                }
            };
            match self.emit(is_err, data).await {
                Emitted::More => {}
                Emitted::Capped => {
                    cancel.cancel();
                    break;
                }
                Emitted::ClientGone => {
                    cancel.cancel();
                    ending = Ending::with_class(Outcome::Cancelled, "client_gone");
                    break;
                }
                Emitted::RecordingFailed => {
                    cancel.cancel();
                    ending = Ending::with_class(Outcome::Error, "recording_failed");
                    failure = Some(Problem::recording_unavailable(
                        "the recording could not be written, so the command was stopped",
                    ));
                    break;
                }
            }
        }
        drop(stream);
        self.slot = None;
        // Whatever the maskers still hold back is flushed, masked, before the end.
        let mut recording_ok = true;
        for (is_err, tail) in [(false, stdout.flush()), (true, stderr.flush())] {
            if !tail.is_empty() && !self.truncated {
                let e = self.emit(is_err, tail).await;
                recording_ok &= !matches!(e, Emitted::RecordingFailed);
            }
        }
        let mut masked = MaskedCounts::default();
        stdout.count_into(&mut masked);
        stderr.count_into(&mut masked);
        let label = match (&exit, &failure) {
            (Some((Some(code), _)), _) => format!("exit {code}"),
            (Some((None, Some(sig))), _) => format!("signal {sig}"),
            _ if self.truncated => "stopped: output cap".to_string(),
            _ => ending.outcome.as_str().to_string(),
        };
        let _ = self.recorder.marker(&label).await;
        let exit_code = exit.as_ref().and_then(|(c, _)| c.map(i64::from));
        let status = if failure.is_some() || !recording_ok {
            "failed"
        } else {
            "ended"
        };
        ending.recording_digest = self.recorder.finish(status, exit_code).await.ok();
        ending.exit_code = exit_code;
        ending.truncated = Some(self.truncated);
        ending.byte_count = Some(self.bytes);
        if !masked.is_empty() {
            ending.masked = serde_json::to_value(&masked).ok();
        }
        let last = match failure {
            Some(p) => ExecOutput::Error(p),
            None => {
                let (code, signal) = exit.unwrap_or((None, None));
                let max_bytes = self.max_bytes;
                ExecOutput::End(ExecSummary {
                    exit_code: code,
                    signal,
                    truncated: self.truncated,
                    note: self.truncated.then(|| {
                        format!("output exceeded max_bytes = {max_bytes}; the command was stopped. Narrow it (fewer lines, a filter argument)")
                    }),
                    masked,
                    duration_ms: started.elapsed().as_millis() as u64,
                })
            }
        };
        let _ = self.out.send(last).await;
        ending
    }

    /// Sends masked output to the recording (first) and then the client.
    async fn emit(&mut self, is_err: bool, mut data: Vec<u8>) -> Emitted {
        if data.is_empty() {
            return Emitted::More;
        }
        let room = self.max_bytes.saturating_sub(self.bytes) as usize;
        if data.len() > room {
            data.truncate(room);
            // Keep whole characters.
            while !data.is_empty() && std::str::from_utf8(&data).is_err() {
                data.pop();
            }
            self.truncated = true;
        }
        self.bytes += data.len() as u64;
        // Invalid UTF-8 becomes U+FFFD: JSON and asciicast carry text.
        let text = String::from_utf8_lossy(&data).into_owned();
        if self.recorder.output(&text).await.is_err() {
            return Emitted::RecordingFailed;
        }
        let event = if is_err {
            ExecOutput::Stderr(text)
        } else {
            ExecOutput::Stdout(text)
        };
        if self.out.send(event).await.is_err() {
            return Emitted::ClientGone;
        }
        if self.truncated {
            Emitted::Capped
        } else {
            Emitted::More
        }
    }
}
