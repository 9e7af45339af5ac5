//! Interactive shells over WebSocket: a PTY on a host through Airlock, recorded for replay.
//!
//! Invariants (what must stay true):
//! - The decision, the audit begin and the recording header are durable before the host
//!   sees anything; the session is refused otherwise.
//! - Terminal output reaches the client and the recording only after the streaming masker.
//!   Keystrokes are recorded only when `shells.record_input` is on (they can hold
//!   passwords).
//! - Input is back-pressured: a frame is read from the client only when the previous one was
//!   taken by the host side; nothing is buffered without bound.
//! - Every session ends (exit, client gone, idle, max length, admin terminate, shutdown)
//!   with the remote shell killed, a close frame when the client is still there, the
//!   recording finished and an audit end record.
//! - A terminal cannot be fully guarded (history, completion, editors, scripts): the shell
//!   is allowed, reviewed or denied as a whole; agents should use `exec` for guarded work.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};

use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditEvent, Outcome, Phase};
use crate::backend::{ExecEvent, ShellInput, ShellPlan};
use crate::identity::Principal;
use crate::mask::StreamMasker;
use crate::recording::Recorder;
use crate::server::{AppState, Connection};

/// Bounds on a terminal size: larger values are refused, never passed on.
pub const MAX_COLS: u32 = 1000;
pub const MAX_ROWS: u32 = 500;
/// Largest WebSocket message and frame accepted from a client.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
pub const MAX_FRAME_BYTES: usize = 256 * 1024;
const PING_EVERY: Duration = Duration::from_secs(20);

/// Single-use, short-lived tickets for browsers (which cannot set headers on a WebSocket).
#[derive(Default)]
pub struct Tickets {
    inner: Mutex<HashMap<String, Ticket>>,
}

struct Ticket {
    principal: Principal,
    connection: String,
    expires: Instant,
}

impl Tickets {
    /// `None` when the system random generator fails: no guessable ticket is ever issued.
    pub fn issue(&self, principal: &Principal, connection: &str, ttl: Duration) -> Option<String> {
        let mut bytes = [0u8; 24];
        aws_lc_rs::rand::fill(&mut bytes).ok()?;
        let id = hex::encode(bytes);
        let mut map = match self.inner.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let now = Instant::now();
        map.retain(|_, t| t.expires > now);
        map.insert(
            id.clone(),
            Ticket {
                principal: principal.clone(),
                connection: connection.to_string(),
                expires: now + ttl,
            },
        );
        Some(id)
    }

    /// Takes a ticket (once) for `connection`.
    pub fn redeem(&self, ticket: &str, connection: &str) -> Option<Principal> {
        let mut map = match self.inner.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let t = map.remove(ticket)?;
        (t.expires > Instant::now() && t.connection == connection).then_some(t.principal)
    }
}

/// Running shells, so an admin can terminate one.
#[derive(Default)]
pub struct Running {
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
    pub fn terminate(&self, id: &str) -> bool {
        match self.inner.lock() {
            Ok(m) => m.get(id).map(|t| t.cancel()).is_some(),
            Err(_) => false,
        }
    }
}

/// Control messages a client sends in text frames.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Control {
    Resize { cols: u32, rows: u32 },
}

pub fn size_ok(cols: u32, rows: u32) -> bool {
    (1..=MAX_COLS).contains(&cols) && (1..=MAX_ROWS).contains(&rows)
}

/// Everything decided before the upgrade.
pub struct Admitted {
    pub state: Arc<AppState>,
    pub conn: Arc<Connection>,
    pub principal: Principal,
    pub begin: AuditEvent,
    pub recorder: Recorder,
    pub cols: u32,
    pub rows: u32,
    /// Kubernetes: the pod to open the shell in.
    pub target: Option<crate::backend::PodTarget>,
}

fn text(v: serde_json::Value) -> Message {
    Message::Text(Utf8Bytes::from(v.to_string()))
}

async fn close(ws: &mut WebSocket, code: u16, reason: &str) {
    let _ = ws
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason.to_string()),
        })))
        .await;
}

/// Runs one shell session over an upgraded WebSocket until it ends.
pub async fn run(mut ws: WebSocket, a: Admitted) {
    let Admitted {
        state,
        conn,
        principal,
        begin,
        mut recorder,
        cols,
        rows,
        target,
    } = a;
    let started = Instant::now();
    let session_id = recorder.session_id().to_string();
    // The backend gets its own token: on shutdown the client is told why before the remote
    // side is ended.
    let cancel = CancellationToken::new();
    let shutdown = state.shutdown.clone();
    let terminate = CancellationToken::new();
    state.shells.add(&session_id, terminate.clone());
    let mut end = AuditEvent::new(Phase::End, &begin.execution_id, "shell");
    end.principal = begin.principal.clone();
    end.connection = begin.connection.clone();
    end.request_id = begin.request_id.clone();
    end.rule = begin.rule.clone();
    end.session_id = Some(session_id.clone());
    end.outcome = Some(Outcome::Ok);

    let backend = conn.exec().cloned();
    let plan = ShellPlan {
        target,
        cols,
        rows,
        term: "xterm-256color".into(),
    };
    let session = match backend {
        Some(b) => {
            let verified = conn.ensure_verified().await;
            match verified {
                Ok(()) => b.shell(plan, cancel.clone()).await,
                Err(e) => Err(e),
            }
        }
        None => Err(crate::backend::BackendError::Internal(
            "not a command connection".into(),
        )),
    };
    let session = match session {
        Ok(s) => s,
        Err(e) => {
            let p = crate::api::problem::Problem::from(e);
            let _ = ws
                .send(text(
                    json!({"type": "error", "error_type": p.code, "detail": p.detail}),
                ))
                .await;
            close(&mut ws, 1011, "target unavailable").await;
            end.outcome = Some(Outcome::Error);
            end.error_class = Some(p.code.to_string());
            end.recording_digest = recorder.finish("failed", None).await.ok();
            finish(&state, &session_id, end, started).await;
            return;
        }
    };
    let input = session.input;
    let mut output = session.output;
    let masking = state.masking.for_request(&principal, &conn.config.name);
    let mut maskers: Vec<StreamMasker> = masking.stream_maskers();
    let record_input = state.shells_config.record_input;
    let idle = Duration::from_millis(state.shells_config.idle_timeout_ms);
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(state.shells_config.max_duration_ms);
    let mut last_activity = tokio::time::Instant::now();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut exit_code: Option<i64> = None;
    let mut reason: Option<(&str, &str)> = None;
    // Set when the host side stopped taking input: only its remaining output is read then.
    let mut host_done = false;

    loop {
        let idle_at = last_activity + idle;
        tokio::select! {
            ev = output.next() => match ev {
                Some(Ok(ExecEvent::Stdout(b))) | Some(Ok(ExecEvent::Stderr(b))) => {
                    last_activity = tokio::time::Instant::now();
                    let mut bytes = b.to_vec();
                    for m in &mut maskers {
                        bytes = m.push(&bytes);
                    }
                    if bytes.is_empty() {
                        continue;
                    }
                    if recorder.output(&String::from_utf8_lossy(&bytes)).await.is_err() {
                        reason = Some(("recording_unavailable", "the recording could not be written"));
                        break;
                    }
                    if ws.send(Message::Binary(bytes.into())).await.is_err() {
                        end.outcome = Some(Outcome::Cancelled);
                        end.error_class = Some("client_gone".into());
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
                    let _ = ws.send(text(json!({"type": "exit", "code": code, "signal": signal}))).await;
                    break;
                }
                Some(Err(e)) => {
                    let p = crate::api::problem::Problem::from(e);
                    end.outcome = Some(Outcome::Error);
                    end.error_class = Some(p.code.to_string());
                    let _ = ws.send(text(json!({"type": "error", "error_type": p.code, "detail": p.detail}))).await;
                    break;
                }
                None => break,
            },
            msg = ws.recv(), if !host_done => match msg {
                Some(Ok(Message::Binary(data))) => {
                    last_activity = tokio::time::Instant::now();
                    if record_input && recorder.input(&String::from_utf8_lossy(&data)).await.is_err() {
                        reason = Some(("recording_unavailable", "the recording could not be written"));
                        break;
                    }
                    // Awaiting here is the back-pressure: no more frames are read until the
                    // host side took this one.
                    if input.send(ShellInput::Data(data)).await.is_err() {
                        // The shell ended while input was still coming: its exit status is
                        // (or will be) in the output; stop reading the client and drain it.
                        host_done = true;
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    last_activity = tokio::time::Instant::now();
                    match serde_json::from_str::<Control>(t.as_str()) {
                        Ok(Control::Resize { cols, rows }) if size_ok(cols, rows) => {
                            let _ = recorder.resize(cols, rows).await;
                            if input.send(ShellInput::Resize { cols, rows }).await.is_err() {
                                host_done = true;
                            }
                        }
                        Ok(Control::Resize { .. }) => {
                            let _ = ws.send(text(json!({"type": "error", "error_type": "invalid_resize",
                                "detail": format!("cols must be 1..={MAX_COLS} and rows 1..={MAX_ROWS}")}))).await;
                        }
                        Err(e) => {
                            let _ = ws.send(text(json!({"type": "error", "error_type": "invalid_control",
                                "detail": format!("text frames carry JSON control messages ({{\"type\":\"resize\",\"cols\":N,\"rows\":N}}): {e}")}))).await;
                        }
                    }
                }
                Some(Ok(Message::Ping(_))) | Some(Ok(Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    end.outcome = Some(Outcome::Cancelled);
                    end.error_class = Some("client_gone".into());
                    break;
                }
            },
            _ = ping.tick() => {
                if ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                    end.outcome = Some(Outcome::Cancelled);
                    end.error_class = Some("client_gone".into());
                    break;
                }
            }
            _ = tokio::time::sleep_until(idle_at) => {
                reason = Some(("idle_timeout", "no input or output for the idle timeout"));
                break;
            }
            _ = tokio::time::sleep_until(deadline) => {
                reason = Some(("max_duration", "the session reached its maximum length"));
                break;
            }
            _ = terminate.cancelled() => {
                reason = Some(("terminated", "an administrator terminated the session"));
                break;
            }
            _ = shutdown.cancelled() => {
                reason = Some(("shutdown", "the server is shutting down"));
                break;
            }
        }
    }
    // Flush what the masker still holds, masked, then end the remote side.
    let mut tail = Vec::new();
    for m in &mut maskers {
        let mut chunk = m.push(&tail);
        chunk.extend(m.flush());
        tail = chunk;
    }
    if !tail.is_empty() {
        let _ = recorder.output(&String::from_utf8_lossy(&tail)).await;
        let _ = ws.send(Message::Binary(tail.into())).await;
    }
    let _ = input.try_send(ShellInput::Close);
    cancel.cancel();
    drop(input);
    drop(output);
    if let Some((kind, detail)) = reason {
        let _ = recorder.marker(kind).await;
        let _ = ws
            .send(text(
                json!({"type": "error", "error_type": kind, "detail": detail}),
            ))
            .await;
        end.outcome = Some(match kind {
            "shutdown" | "terminated" => Outcome::Cancelled,
            "idle_timeout" | "max_duration" => Outcome::Timeout,
            _ => Outcome::Error,
        });
        end.error_class = Some(kind.to_string());
    }
    close(&mut ws, 1000, "session ended").await;
    end.exit_code = exit_code;
    let mut counts = crate::mask::plan::MaskedCounts::default();
    for m in &maskers {
        counts.detectors.merge(m.counts());
    }
    if !counts.is_empty() {
        end.masked = serde_json::to_value(&counts).ok();
    }
    let status = if end.outcome == Some(Outcome::Error) {
        "failed"
    } else {
        "ended"
    };
    end.recording_digest = recorder.finish(status, exit_code).await.ok();
    finish(&state, &session_id, end, started).await;
}

async fn finish(state: &AppState, session_id: &str, mut end: AuditEvent, started: Instant) {
    state.shells.remove(session_id);
    end.duration_ms = Some(started.elapsed().as_millis() as u64);
    end.time = chrono::Utc::now();
    state.audit.commit_end(end).await;
}
