//! Interactive shells: a PTY on a host through Airlock, masked and recorded for replay.
//! The transport (a WebSocket in `api/shell.rs`) is behind [`Terminal`]; this file owns
//! the session's rules.
//!
//! What must stay true:
//! - The decision, the audit begin and the recording header are durable, and the remote
//!   shell is open, before the client is told the session started.
//! - Terminal output reaches the client and the recording only after the streaming masker.
//!   Keystrokes are recorded for agents always (`stty -echo` must not hide what an agent
//!   typed) and for humans when `shells.record_input` is on (they can hold passwords);
//!   they pass through their own streaming masker first.
//! - Input is back-pressured: a message is read from the client only when the previous
//!   one was taken by the host side; nothing is buffered without bound. Waiting for the
//!   host to take input never stops output from being read (no deadlock with an echoing
//!   host).
//! - Every session ends (exit, client gone, idle, max length, admin terminate, shutdown)
//!   with the remote shell killed, a close when the client is still there, the recording
//!   finished and one audit end.
//! - A terminal cannot be fully guarded (history, completion, editors, scripts): the shell
//!   is allowed or denied as a whole (admission refuses review); agents should use `exec`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::Gateway;
use super::admit::{Admitted, Work, check_pod_target};
use super::connection::Connection;
use super::problem::{Code, Problem};
use super::record::{Ending, ExecutionRecord, open_recorded, session_of};
use super::slots::Slot;
use crate::audit::Outcome;
use crate::backend::{ExecEvent, PodTarget, ShellInput, ShellPlan};
use crate::mask::plan::{MaskedCounts, RequestMasking};
use crate::recording::Recorder;

/// Bounds on a terminal size: larger values are refused, never passed on.
pub(crate) const MAX_COLS: u32 = 1000;
pub(crate) const MAX_ROWS: u32 = 500;
const PING_EVERY: Duration = Duration::from_secs(20);

/// What a client asks for when it opens a shell.
#[derive(Debug, Clone)]
pub(crate) struct ShellRequest {
    /// Kubernetes: the pod to open the shell in.
    pub(crate) target: Option<PodTarget>,
    pub(crate) cols: u32,
    pub(crate) rows: u32,
}

pub(crate) fn size_ok(cols: u32, rows: u32) -> bool {
    (1..=MAX_COLS).contains(&cols) && (1..=MAX_ROWS).contains(&rows)
}

/// The request's shape against the connection's kind.
pub(crate) fn check(conn: &Connection, req: &ShellRequest) -> Result<(), Problem> {
    check_pod_target(
        conn,
        req.target.as_ref(),
        Code::InvalidQuery,
        "?namespace=&pod= (and optionally &container=)",
    )?;
    if !size_ok(req.cols, req.rows) {
        return Err(Problem::new(
            Code::InvalidResize,
            format!("cols must be 1..={MAX_COLS} and rows 1..={MAX_ROWS}"),
        ));
    }
    Ok(())
}

/// Running shells, so an admin can terminate one.
#[derive(Default)]
pub(crate) struct Running {
    inner: Mutex<HashMap<String, CancellationToken>>,
}

impl Running {
    fn add(&self, id: &str, token: CancellationToken) {
        if let Ok(mut m) = self.inner.lock() {
            m.insert(id.to_string(), token);
        }
    }

    fn remove(&self, id: &str) {
        if let Ok(mut m) = self.inner.lock() {
            m.remove(id);
        }
    }

    /// `true` when a running session was told to end.
    pub(crate) fn terminate(&self, id: &str) -> bool {
        match self.inner.lock() {
            Ok(m) => m.get(id).map(|t| t.cancel()).is_some(),
            Err(_) => false,
        }
    }
}

/// What the client side of a terminal sent.
pub(crate) enum ClientEvent {
    /// Keystrokes / bytes for the PTY.
    Input(Bytes),
    /// A JSON control message (`{"type":"resize","cols":N,"rows":N}`).
    Control(String),
    /// Keep-alive traffic; counts as nothing.
    Idle,
    /// The client closed or vanished.
    Gone,
}

/// The transport of an interactive shell. Every `send_*` returns `false` when the client
/// is gone.
#[async_trait::async_trait]
pub(crate) trait Terminal: Send {
    async fn recv(&mut self) -> ClientEvent;
    async fn send_output(&mut self, bytes: Vec<u8>) -> bool;
    async fn send_control(&mut self, message: Value) -> bool;
    async fn ping(&mut self) -> bool;
    async fn close(&mut self, code: u16, reason: &str);
}

/// Control messages a client sends.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Control {
    Resize { cols: u32, rows: u32 },
}

/// The error control message: the same problem object as every other transport.
pub(crate) fn error_message(problem: &Problem) -> Value {
    json!({"type": "error", "problem": problem.to_body()})
}

/// An open shell: admitted, recorded, audited, connected to the host.
pub(crate) struct ShellSession {
    /// Taken by `run`; still here when the session is dropped unrun (the client never
    /// completed the upgrade): then `Drop` closes it.
    opened: Option<Opened>,
}

struct Opened {
    gateway: Arc<Gateway>,
    record: ExecutionRecord,
    recorder: Recorder,
    session: crate::backend::ShellSession,
    masking: RequestMasking,
    /// Whether keystrokes are recorded: always for agents, for humans per configuration.
    record_input: bool,
    cancel: CancellationToken,
    _slot: Slot,
}

impl Drop for ShellSession {
    /// A shell opened but never run: the remote side ends with its dropped channels, the
    /// record writes `interrupted`, and the recording is closed as failed.
    fn drop(&mut self) {
        let Some(opened) = self.opened.take() else {
            return;
        };
        opened.cancel.cancel();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let Opened {
                    record, recorder, ..
                } = opened;
                let _ = recorder.finish("failed", None).await;
                drop(record);
            });
        }
    }
}

/// Records the session header and the audit begin, then opens the remote shell.
pub(crate) async fn open(admitted: Admitted) -> Result<ShellSession, Problem> {
    let Work::Shell(request) = admitted.work else {
        return Err(Problem::internal("not a shell"));
    };
    let (gateway, conn) = (admitted.gateway, admitted.conn);
    let Some(backend) = conn.exec().cloned() else {
        return Err(Problem::internal("an admitted shell lost its backend"));
    };
    let record_input = gateway.shells_config.record_input
        || admitted.principal.kind == crate::config::PrincipalKind::Agent;
    let session = session_of(
        &admitted.begin,
        "shell",
        conn.name(),
        "(interactive shell)".into(),
    );
    let size = Some((request.cols, request.rows));
    let (record, recorder) = open_recorded(
        &gateway,
        admitted.begin,
        admitted.started,
        admitted.claim,
        session,
        size,
    )
    .await?;
    // The backend gets its own token: on shutdown the client is told why before the
    // remote side is ended.
    let cancel = CancellationToken::new();
    let plan = ShellPlan {
        target: request.target,
        cols: request.cols,
        rows: request.rows,
        term: "xterm-256color".into(),
    };
    let session = match backend.shell(plan, cancel.clone()).await {
        Ok(s) => s,
        Err(e) => {
            let problem = Problem::from(e);
            let mut ending = Ending::failed(super::command::outcome_of(&problem), &problem);
            ending.recording_digest = recorder.finish("failed", None).await.ok();
            let execution_id = record.execution_id().to_string();
            record.finish(ending).await;
            return Err(problem.with("execution_id", execution_id));
        }
    };
    Ok(ShellSession {
        opened: Some(Opened {
            gateway,
            record,
            recorder,
            session,
            masking: admitted.masking,
            record_input,
            cancel,
            _slot: admitted.slot,
        }),
    })
}

impl ShellSession {
    /// Runs the session over `terminal` until it ends, then records the end.
    pub(crate) async fn run(mut self, terminal: &mut dyn Terminal) {
        let Some(Opened {
            gateway,
            record,
            mut recorder,
            session,
            masking,
            record_input,
            cancel,
            _slot: slot,
        }) = self.opened.take()
        else {
            return;
        };
        let session_id = recorder.session_id().to_string();
        let terminate = CancellationToken::new();
        gateway.shells.add(&session_id, terminate.clone());
        let input = session.input;
        let mut output = session.output;
        let mut maskers = masking.stream_chain();
        // Keystrokes get a masker of their own: a secret typed across messages is one stream.
        let mut input_maskers = masking.stream_chain();
        let config = &gateway.shells_config;
        let idle = Duration::from_millis(config.idle_timeout_ms);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(config.max_duration_ms);
        let mut last_activity = tokio::time::Instant::now();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        let mut ending = Ending::ok();
        let mut exit_code: Option<i64> = None;
        // Why Airlock ended the session, told to the client before the close.
        let mut reason: Option<Problem> = None;
        // Set when the host side stopped taking input: only its remaining output is read.
        let mut host_done = false;
        // A client message read but not yet taken by the host side.
        let mut pending: Option<ShellInput> = None;

        loop {
            let idle_at = last_activity + idle;
            tokio::select! {
                    ev = output.next() => match ev {
                        Some(Ok(ExecEvent::Stdout(b))) | Some(Ok(ExecEvent::Stderr(b))) => {
                            last_activity = tokio::time::Instant::now();
                            let bytes = maskers.push(b.to_vec());
                            if bytes.is_empty() {
                                continue;
                            }
                            if recorder.output(&String::from_utf8_lossy(&bytes)).await.is_err() {
                                reason = Some(Problem::recording_unavailable("the recording could not be written"));
                                break;
                            }
                            if !terminal.send_output(bytes).await {
                                ending = Ending::with_class(Outcome::Cancelled, "client_gone");
                                break;
                            }
                        }
                        Some(Ok(ExecEvent::Exit { code, signal })) => {
                            exit_code = code.map(i64::from);
                            let _ = recorder.marker(&match (code, &signal) {
                                (Some(c), _) => format!("exit {c}"),
                                (None, Some(s)) => format!("signal {s}"),
                                _ => "exit".into(),
                            }).await;
                            // Output the masker still holds belongs before the exit message.
                            flush(&mut maskers, &mut recorder, terminal).await;
            let typed = input_maskers.flush();
            if !typed.is_empty() {
                let _ = recorder.input(&String::from_utf8_lossy(&typed)).await;
            }
                            let _ = terminal.send_control(json!({"type": "exit", "code": code, "signal": signal})).await;
                            break;
                        }
                        Some(Err(e)) => {
                            let problem = Problem::from(e);
                            ending = Ending::failed(Outcome::Error, &problem);
                            let _ = terminal.send_control(error_message(&problem)).await;
                            break;
                        }
                        None => break,
                    },
                    // Back-pressure without blocking the loop: a client message is read only
                    // when the previous one has been handed to the host side, and handing it
                    // over waits in its own branch, so output keeps flowing meanwhile (a host
                    // echoing input must be able to write while it is slow to read).
                    permit = input.reserve(), if pending.is_some() => match permit {
                        Ok(permit) => {
                            if let Some(item) = pending.take() {
                                permit.send(item);
                            }
                        }
                        Err(_) => {
                            // The shell ended while input was still coming: its exit status is
                            // (or will be) in the output; stop reading the client.
                            pending = None;
                            host_done = true;
                        }
                    },
                    msg = terminal.recv(), if !host_done && pending.is_none() => match msg {
                        ClientEvent::Input(data) => {
                            last_activity = tokio::time::Instant::now();
                            let shown = if record_input { input_maskers.push(data.to_vec()) } else { Vec::new() };
                            if !shown.is_empty() && recorder.input(&String::from_utf8_lossy(&shown)).await.is_err() {
                                reason = Some(Problem::recording_unavailable("the recording could not be written"));
                                break;
                            }
                            pending = Some(ShellInput::Data(data));
                        }
                        ClientEvent::Control(text) => {
                            last_activity = tokio::time::Instant::now();
                            match serde_json::from_str::<Control>(&text) {
                                Ok(Control::Resize { cols, rows }) if size_ok(cols, rows) => {
                                    let _ = recorder.resize(cols, rows).await;
                                    pending = Some(ShellInput::Resize { cols, rows });
                                }
                                Ok(Control::Resize { .. }) => {
                                    let p = Problem::new(Code::InvalidResize, format!("cols must be 1..={MAX_COLS} and rows 1..={MAX_ROWS}"));
                                    let _ = terminal.send_control(error_message(&p)).await;
                                }
                                Err(e) => {
                                    let p = Problem::new(Code::InvalidControl, format!("text frames carry JSON control messages ({{\"type\":\"resize\",\"cols\":N,\"rows\":N}}): {e}"));
                                    let _ = terminal.send_control(error_message(&p)).await;
                                }
                            }
                        }
                        ClientEvent::Idle => {}
                        ClientEvent::Gone => {
                            ending = Ending::with_class(Outcome::Cancelled, "client_gone");
                            break;
                        }
                    },
                    _ = ping.tick() => {
                        if !terminal.ping().await {
                            ending = Ending::with_class(Outcome::Cancelled, "client_gone");
                            break;
                        }
                    }
                    _ = tokio::time::sleep_until(idle_at) => {
                        reason = Some(Problem::new(Code::IdleTimeout, "no input or output for the idle timeout"));
                        break;
                    }
                    _ = tokio::time::sleep_until(deadline) => {
                        reason = Some(Problem::new(Code::MaxDuration, "the session reached its maximum length"));
                        break;
                    }
                    _ = terminate.cancelled() => {
                        reason = Some(Problem::new(Code::Terminated, "an administrator terminated the session"));
                        break;
                    }
                    _ = gateway.shutdown.cancelled() => {
                        reason = Some(Problem::new(Code::ShuttingDown, "the server is shutting down"));
                        break;
                    }
                }
        }
        // Flush what the masker still holds, masked, then end the remote side.
        flush(&mut maskers, &mut recorder, terminal).await;
        let _ = input.try_send(ShellInput::Close);
        cancel.cancel();
        drop(input);
        drop(output);
        if let Some(problem) = reason {
            let _ = recorder.marker(problem.code.as_str()).await;
            let _ = terminal.send_control(error_message(&problem)).await;
            let outcome = match problem.code {
                Code::ShuttingDown | Code::Terminated => Outcome::Cancelled,
                Code::IdleTimeout | Code::MaxDuration => Outcome::Timeout,
                _ => Outcome::Error,
            };
            ending = Ending::failed(outcome, &problem);
        }
        // The host side is over: the slot is free before the client hears the session ended.
        drop(slot);
        terminal.close(1000, "session ended").await;
        let mut counts = MaskedCounts::default();
        maskers.count_into(&mut counts);
        if !counts.is_empty() {
            ending.masked = serde_json::to_value(&counts).ok();
        }
        ending.exit_code = exit_code;
        let status = if ending.outcome == Outcome::Error {
            "failed"
        } else {
            "ended"
        };
        ending.recording_digest = recorder.finish(status, exit_code).await.ok();
        gateway.shells.remove(&session_id);
        record.finish(ending).await;
    }
}

/// Sends and records whatever the maskers still hold back, masked.
async fn flush(
    maskers: &mut crate::mask::plan::MaskerChain,
    recorder: &mut Recorder,
    terminal: &mut dyn Terminal,
) {
    let tail = maskers.flush();
    if !tail.is_empty() {
        let _ = recorder.output(&String::from_utf8_lossy(&tail)).await;
        let _ = terminal.send_output(tail).await;
    }
}
