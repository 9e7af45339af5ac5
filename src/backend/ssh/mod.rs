//! SSH exec backend: runs one command per request on a host, with credentials only Airlock
//! holds, against a pinned host key.
//!
//! Decisions that must stay true:
//! - **One TCP connection and one session per request.** Nothing (working directory,
//!   environment, background jobs, a half-read channel) can pass from one agent's command to
//!   the next, and a command that must be killed takes its whole connection down with it.
//!   The cost is one handshake (~1 round trip for TCP plus ~2 for key exchange and
//!   authentication) per command, which is small next to the human-scale latency of the
//!   commands agents run. Concurrency per target is capped by `limits.pool_size` slots.
//! - **The host key is pinned.** [`Handler::check_server_key`] accepts only the configured
//!   key (by SHA-256 fingerprint or by the key itself); anything else aborts the handshake
//!   before authentication, so credentials are never offered to an impostor.
//! - **Killing a command is done by the remote sshd.** See [`kill_and_close`]: an SSH
//!   `signal` request with `KILL` (OpenSSH: `killpg` of the session, non-root users only),
//!   then for root a kill of this connection's processes from a second channel. Closing
//!   the channel alone does *not* stop a non-PTY command on OpenSSH.
//! - **A shell's input is paced to what the host consumes** (OpenSSH): sshd must never hold
//!   so much unwritten input that its reply to a write outgrows russh's packet limit, which
//!   would drop the connection and the shell's exit status with it. See `flow.rs`.
//! - Errors never carry secrets (password, private key text); they name the host, port and
//!   user only.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use russh::client::{self, Handle, Msg};
use russh::keys::{self, Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg};
use russh::{ChannelId, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Disconnect, Sig};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::pump::{self, Ending, Outcome, SHELL_INPUT_BUFFER, Step, deadline_after};
use super::{
    BackendError, ExecBackend, ExecEvent, ExecPlan, ExecSender, ExecStream, ShellInput, ShellPlan,
    ShellSession,
};
use crate::config::{ConnectionConfig, SshConfig};
use crate::inspect::shell;

mod flow;
mod target;

use flow::{Admission, InputGate, InputWindow};
use target::{HostKeyPin, Target, parse_host_key_pin, parse_ssh_url};

/// Seconds a client is told to wait after the host could not be reached.
const RETRY_UNREACHABLE_SECS: u64 = 5;
/// Seconds a client is told to wait when every session slot is busy.
const RETRY_BUSY_SECS: u64 = 1;
/// How long the kill sequence (signal, close, disconnect) may take before the connection is
/// simply dropped. The signal is one packet; this only matters for a dead or stuck peer.
const KILL_GRACE: Duration = Duration::from_secs(6);
/// Flow-control window advertised per channel. russh re-opens the window as soon as data
/// *arrives* (not when it is consumed), so this bounds the bytes in flight on the network,
/// not what sits in memory; see [`session_config`] for the memory bound.
const WINDOW_SIZE: u32 = 512 * 1024;
/// Messages russh may queue for one channel before its session task stops reading the
/// socket. Each is at most `maximum_packet_size` (32 KiB) of data.
const CHANNEL_BUFFER: usize = 16;

/// Credentials, resolved once at startup. Never printed.
struct Credentials {
    key: Option<Arc<PrivateKey>>,
    password: Option<String>,
}

/// The russh handler: checks the host key against the pin and remembers what it saw, so a
/// refusal can be reported with the fingerprint the server presented. It also passes what
/// the server tells about a channel's window to the shell's input flow control.
struct PinningHandler {
    pin: Arc<HostKeyPin>,
    /// Set when the server presented a key that is not the pinned one.
    rejected: Arc<Mutex<Option<String>>>,
    input: Arc<InputWindow>,
}

impl client::Handler for PinningHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let seen = match server_public_key {
            keys::PublicKeyOrCertificate::PublicKey { key, .. } => {
                if self.pin.matches(key) {
                    return Ok(true);
                }
                format!(
                    "{} ({})",
                    key.fingerprint(HashAlg::Sha256),
                    key.algorithm().as_str()
                )
            }
            // We never advertise certificate algorithms (russh's default), so a certificate
            // here is unexpected; refuse rather than trust a CA we were not told about.
            keys::PublicKeyOrCertificate::Certificate(cert) => format!(
                "a host certificate for key {} (certificates are not accepted; pin the key)",
                keys::PublicKey::from(cert.public_key().clone()).fingerprint(HashAlg::Sha256)
            ),
        };
        if let Ok(mut slot) = self.rejected.lock() {
            *slot = Some(seen);
        }
        Ok(false)
    }

    async fn channel_open_confirmation(
        &mut self,
        id: ChannelId,
        max_packet_size: u32,
        window_size: u32,
        session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        self.input.opened(
            id.into(),
            max_packet_size,
            window_size,
            session.remote_sshid(),
        );
        Ok(())
    }

    async fn window_adjusted(
        &mut self,
        channel: ChannelId,
        new_size: u32,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        self.input.adjusted(channel.into(), new_size);
        Ok(())
    }
}

/// An authenticated connection to the target.
type Session = Handle<PinningHandler>;

/// Runs commands on one host over SSH; see the module docs.
pub struct SshBackend {
    target: Target,
    pin: Arc<HostKeyPin>,
    credentials: Arc<Credentials>,
    config: Arc<client::Config>,
    connect_timeout: Duration,
    /// One permit per concurrent command (= connection) to this host.
    slots: Arc<Semaphore>,
    pool_size: usize,
    pool_wait: Duration,
    allow_privileged: bool,
}

/// What the login-shell probe sends as one argument: every character a POSIX shell treats
/// specially, quotes of both kinds, backslashes (which fish reads as escapes inside single
/// quotes), `!` (csh history), a newline (csh refuses it inside quotes), and non-ASCII.
const PROBE: &str = "a'b\"c\\d$(e)`f`${g}*h?[i];j|k&l<m>n(o){p,q}~r#s!t\nu\tv ü\\'w";

impl SshBackend {
    pub fn new(config: &ConnectionConfig, ssh: &SshConfig) -> Result<SshBackend, String> {
        let target = parse_ssh_url(&ssh.url)?;
        let pin = parse_host_key_pin(&ssh.host_key)?;
        let key = match &ssh.private_key {
            Some(r) => {
                let text = r.resolve().map_err(|m| format!("private_key: {m}"))?;
                // The parse error names the format problem, never the key text.
                let key = keys::decode_secret_key(text.expose(), None).map_err(|e| {
                    format!(
                        "private_key: not a usable unencrypted OpenSSH private key ({e}); \
                         passphrase-protected keys are not supported"
                    )
                })?;
                Some(Arc::new(key))
            }
            None => None,
        };
        let password = match &ssh.password {
            Some(r) => Some(
                r.resolve()
                    .map_err(|m| format!("password: {m}"))?
                    .expose()
                    .to_string(),
            ),
            None => None,
        };
        Ok(SshBackend {
            config: Arc::new(session_config(&pin)),
            target,
            pin: Arc::new(pin),
            credentials: Arc::new(Credentials { key, password }),
            connect_timeout: Duration::from_millis(ssh.connect_timeout_ms.max(1)),
            slots: Arc::new(Semaphore::new(config.limits.pool_size)),
            pool_size: config.limits.pool_size,
            pool_wait: config.limits.pool_wait(),
            allow_privileged: ssh.allow_privileged,
        })
    }

    /// TCP connect, key exchange (host key check), authentication — all within
    /// `connect_timeout`, and abandoned when `cancel` fires or `deadline` (the command's
    /// overall deadline) passes first. Also returns what the connection's handler learns
    /// about the window of its first channel.
    async fn connect(
        &self,
        cancel: &CancellationToken,
        deadline: Instant,
    ) -> Result<(Session, Arc<InputWindow>), BackendError> {
        let connect_deadline = Instant::now() + self.connect_timeout;
        let step = async {
            let tcp = tokio::net::TcpStream::connect((self.target.host.as_str(), self.target.port));
            let socket = match tokio::time::timeout_at(connect_deadline, tcp).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    return Err(BackendError::Unavailable {
                        detail: format!("cannot connect to {}: {e}", self.target.label()),
                        retry_after_secs: RETRY_UNREACHABLE_SECS,
                    });
                }
                Err(_) => {
                    return Err(BackendError::Unavailable {
                        detail: format!(
                            "TCP connection to {} not established within {} ms",
                            self.target.label(),
                            self.connect_timeout.as_millis()
                        ),
                        retry_after_secs: RETRY_UNREACHABLE_SECS,
                    });
                }
            };
            // Commands are interactive-ish (small writes, prompt output): no Nagle delay.
            let _ = socket.set_nodelay(true);
            let handshake = self.handshake(socket);
            match tokio::time::timeout_at(connect_deadline, handshake).await {
                Ok(r) => r,
                Err(_) => Err(BackendError::Unavailable {
                    detail: format!(
                        "{} did not complete the SSH handshake and authentication within {} ms",
                        self.target.label(),
                        self.connect_timeout.as_millis()
                    ),
                    retry_after_secs: RETRY_UNREACHABLE_SECS,
                }),
            }
        };
        // Dropping `step` mid-way drops the socket / russh session task with it.
        super::bounded(step, cancel, deadline).await?
    }

    async fn handshake(
        &self,
        socket: tokio::net::TcpStream,
    ) -> Result<(Session, Arc<InputWindow>), BackendError> {
        let rejected = Arc::new(Mutex::new(None));
        let input = InputWindow::new();
        let handler = PinningHandler {
            pin: self.pin.clone(),
            rejected: rejected.clone(),
            input: input.clone(),
        };
        let mut session = match client::connect_stream(self.config.clone(), socket, handler).await {
            Ok(s) => s,
            Err(e) => {
                let seen = rejected.lock().ok().and_then(|mut s| s.take());
                return Err(match seen {
                    Some(seen) => BackendError::Unavailable {
                        detail: format!(
                            "{}: host key does not match the pinned key (expected {}, got {seen}); \
                             refusing to authenticate",
                            self.target.label(),
                            self.pin.describe()
                        ),
                        retry_after_secs: RETRY_UNREACHABLE_SECS,
                    },
                    None => BackendError::Unavailable {
                        detail: format!("SSH handshake with {} failed: {e}", self.target.label()),
                        retry_after_secs: RETRY_UNREACHABLE_SECS,
                    },
                });
            }
        };
        self.authenticate(&mut session).await?;
        Ok((session, input))
    }

    async fn authenticate(&self, session: &mut Session) -> Result<(), BackendError> {
        let user = self.target.user.as_str();
        let auth_err = |e: russh::Error| {
            BackendError::Internal(format!(
                "authentication as {user} on {} failed: {e}",
                self.target.label()
            ))
        };
        let mut tried = Vec::new();
        if let Some(key) = &self.credentials.key {
            // RSA keys sign with the best SHA-2 variant the server announced; other key types
            // ignore the hash choice.
            let hash = if matches!(key.algorithm(), Algorithm::Rsa { .. }) {
                session
                    .best_supported_rsa_hash()
                    .await
                    .map_err(auth_err)?
                    .flatten()
            } else {
                None
            };
            let r = session
                .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key.clone(), hash))
                .await
                .map_err(auth_err)?;
            if r.success() {
                return Ok(());
            }
            tried.push("public key");
        }
        if let Some(password) = &self.credentials.password {
            let r = session
                .authenticate_password(user, password.as_str())
                .await
                .map_err(auth_err)?;
            if r.success() {
                return Ok(());
            }
            tried.push("password");
        }
        Err(BackendError::Internal(format!(
            "authentication as {user} on {} failed: the server refused the {}",
            self.target.label(),
            tried.join(" and the ")
        )))
    }

    async fn acquire_slot(
        &self,
        cancel: &CancellationToken,
        deadline: Instant,
    ) -> Result<OwnedSemaphorePermit, BackendError> {
        let wait = tokio::time::timeout(self.pool_wait, self.slots.clone().acquire_owned());
        match super::bounded(wait, cancel, deadline).await? {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; treat it like exhaustion if it ever is.
            Ok(Err(_)) | Err(_) => Err(BackendError::Unavailable {
                detail: format!(
                    "all {} sessions to {} are busy (waited {} ms)",
                    self.pool_size,
                    self.target.label(),
                    self.pool_wait.as_millis()
                ),
                retry_after_secs: RETRY_BUSY_SECS,
            }),
        }
    }
}

/// russh client settings. What russh buffers for a running command, and why memory stays
/// bounded: the session task reads the socket, re-opens the SSH window as soon as data
/// arrives, and pushes each packet into the channel's bounded queue (`CHANNEL_BUFFER`
/// messages of ≤ 32 KiB). When that queue is full the session task waits, stops reading
/// the socket, and TCP flow control then stops the server — so per command at most
/// ~`CHANNEL_BUFFER` × 32 KiB sit in russh, plus `STREAM_BUFFER` events in our channel,
/// plus kernel socket buffers. Nothing grows with the command's output size.
fn session_config(pin: &HostKeyPin) -> client::Config {
    let mut preferred = russh::Preferred::default();
    if let Some(algs) = pin.host_key_algorithms() {
        preferred.key = Cow::Owned(algs);
    }
    client::Config {
        window_size: WINDOW_SIZE,
        channel_buffer_size: CHANNEL_BUFFER,
        preferred,
        // Commands may be silent for a long time: no inactivity timeout (the plan's
        // timeout bounds them). Keepalives detect a host that vanished without a FIN.
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 3,
        nodelay: true,
        ..client::Config::default()
    }
}

async fn disconnect(session: &Session) {
    // Best effort: the peer may already be gone. Dropping the handle closes the socket.
    let _ = session
        .disconnect(Disconnect::ByApplication, "", "en")
        .await;
}

#[async_trait::async_trait]
impl ExecBackend for SshBackend {
    /// Connects, then checks the account with two probes through its login shell. Airlock's
    /// quoting is POSIX: a login shell of another family (fish, tcsh) would read it
    /// differently and turn a plain argv into something else, so the probe's bytes must
    /// come back exactly. A uid 0 account is refused unless `allow_privileged = true`.
    async fn verify(&self) -> Result<(), BackendError> {
        let cancel = CancellationToken::new();
        let deadline = deadline_after(self.connect_timeout * 4);
        let (session, _) = self.connect(&cancel, deadline).await?;
        let label = self.target.label();
        let checked = async {
            let echo = shell::quote_argv(&["printf".into(), "%s".into(), PROBE.into()])
                .map_err(BackendError::Internal)?;
            let echoed = probe(&session, &label, &echo).await?;
            if echoed != PROBE.as_bytes() {
                return Err(BackendError::Internal(format!(
                    "{label}: the account's login shell does not read POSIX quoting (a probe came back as {:?}); give Airlock an account whose login shell is /bin/sh",
                    String::from_utf8_lossy(&echoed)
                )));
            }
            let uid = probe(&session, &label, "id -u").await?;
            if String::from_utf8_lossy(&uid).trim() == "0" && !self.allow_privileged {
                return Err(BackendError::Internal(format!(
                    "{label}: the account is root (uid 0); use an unprivileged account, or set allow_privileged = true on this connection to accept it"
                )));
            }
            Ok(())
        };
        let result = match tokio::time::timeout_at(deadline, checked).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Unavailable {
                detail: format!("{label}: the account check did not finish in time"),
                retry_after_secs: 1,
            }),
        };
        disconnect(&session).await;
        result
    }

    async fn exec(
        &self,
        plan: ExecPlan,
        cancel: CancellationToken,
    ) -> Result<ExecStream, BackendError> {
        let deadline = deadline_after(plan.timeout);
        let permit = self.acquire_slot(&cancel, deadline).await?;
        let (session, _) = self.connect(&cancel, deadline).await?;
        let label = self.target.label();

        let start = async {
            let (mut read, write) = open_exec(&session, &label, &plan.command).await?;
            // Wait for the server's answer to the exec request so a refusal is an error
            // returned here, not an event.
            await_reply(
                &mut read,
                &label,
                "refused to run the command (exec request denied)",
                "the command",
            )
            .await?;
            Ok((read, write))
        };
        let started = match super::bounded(start, &cancel, deadline).await {
            Ok(Ok(halves)) => halves,
            Ok(Err(e)) | Err(e) => {
                // The command may already run (timeout/cancel after the request went out):
                // dropping the connection is all we can do before a channel exists.
                disconnect(&session).await;
                return Err(e);
            }
        };
        let (read, write) = started;

        let (tx, stream) = ExecStream::channel();
        let job = Job {
            session,
            read,
            write,
            tx,
            stdin: plan.stdin,
            cancel,
            deadline,
            _permit: permit,
        };
        tokio::spawn(job.run());
        Ok(stream)
    }

    async fn shell(
        &self,
        plan: ShellPlan,
        cancel: CancellationToken,
    ) -> Result<ShellSession, BackendError> {
        // A shell has no deadline of its own (the caller cancels on idle or maximum length);
        // setup is still bounded: the slot by `pool_wait`, the connection by
        // `connect_timeout`, the pty and shell requests by `connect_timeout` below.
        let no_deadline = deadline_after(Duration::MAX);
        let permit = self.acquire_slot(&cancel, no_deadline).await?;
        let (session, input_window) = self.connect(&cancel, no_deadline).await?;
        let label = self.target.label();

        let start = async {
            let (mut read, write) = open_channel(&session, &label).await?;
            // No terminal modes: sshd's defaults (echo on, canonical mode) are what an
            // interactive login expects; the client's own terminal stays raw on its side.
            write
                .request_pty(true, &plan.term, plan.cols, plan.rows, 0, 0, &[])
                .await
                .map_err(|e| BackendError::Internal(format!("{label}: pty request failed: {e}")))?;
            await_reply(
                &mut read,
                &label,
                "refused to allocate a terminal (pty request denied)",
                "the shell",
            )
            .await?;
            write.request_shell(true).await.map_err(|e| {
                BackendError::Internal(format!("{label}: shell request failed: {e}"))
            })?;
            await_reply(
                &mut read,
                &label,
                "refused to start a shell (shell request denied)",
                "the shell",
            )
            .await?;
            Ok((read, write))
        };
        let started =
            match super::bounded(start, &cancel, deadline_after(self.connect_timeout)).await {
                Ok(Ok(halves)) => Ok(halves),
                Ok(Err(e)) | Err(e @ BackendError::Cancelled) => Err(e),
                Err(_) => Err(BackendError::Unavailable {
                    detail: format!(
                        "{label} did not start a shell within {} ms",
                        self.connect_timeout.as_millis()
                    ),
                    retry_after_secs: RETRY_UNREACHABLE_SECS,
                }),
            };
        let (read, write) = match started {
            Ok(halves) => halves,
            Err(e) => {
                // The shell may already run (cancel after the request went out): dropping
                // the connection makes sshd hang up its terminal.
                disconnect(&session).await;
                return Err(e);
            }
        };

        let (tx, output) = ExecStream::channel();
        let (input, input_rx) = mpsc::channel(SHELL_INPUT_BUFFER);
        let job = ShellJob {
            gate: input_window.gate(write.id().into()),
            session,
            read,
            write,
            tx,
            input: input_rx,
            cancel,
            _permit: permit,
        };
        tokio::spawn(job.run());
        Ok(ShellSession { input, output })
    }
}

/// Waits for the server's answer to a channel request sent with `want_reply`, so a refusal
/// is an error returned to the caller rather than an event. Nothing but window adjustments
/// can arrive on the channel before the answer (the program has not started yet).
/// A new session channel, split.
async fn open_channel(
    session: &Session,
    label: &str,
) -> Result<(ChannelReadHalf, ChannelWriteHalf<Msg>), BackendError> {
    let channel = session.channel_open_session().await.map_err(|e| {
        BackendError::Internal(format!("{label}: could not open a session channel: {e}"))
    })?;
    Ok(channel.split())
}

/// A new session channel with `command` requested on it (the reply is the caller's to await).
async fn open_exec(
    session: &Session,
    label: &str,
    command: &str,
) -> Result<(ChannelReadHalf, ChannelWriteHalf<Msg>), BackendError> {
    let (read, write) = open_channel(session, label).await?;
    write
        .exec(true, command.as_bytes())
        .await
        .map_err(|e| BackendError::Internal(format!("{label}: exec request failed: {e}")))?;
    Ok((read, write))
}

/// Runs `command` on its own channel and returns its standard output (bounded).
async fn probe(session: &Session, label: &str, command: &str) -> Result<Vec<u8>, BackendError> {
    const MAX: usize = 64 * 1024;
    let (mut read, _write) = open_exec(session, label, command).await?;
    let mut out = Vec::new();
    loop {
        match read.wait().await {
            Some(ChannelMsg::Data { data }) => {
                out.extend_from_slice(&data);
                if out.len() > MAX {
                    break;
                }
            }
            Some(ChannelMsg::Failure) => {
                return Err(BackendError::Internal(format!(
                    "{label} refused to run the account check"
                )));
            }
            Some(ChannelMsg::Close) | None => break,
            Some(_) => continue,
        }
    }
    Ok(out)
}

async fn await_reply(
    read: &mut ChannelReadHalf,
    label: &str,
    refused: &str,
    what: &str,
) -> Result<(), BackendError> {
    loop {
        match read.wait().await {
            Some(ChannelMsg::Success) => return Ok(()),
            Some(ChannelMsg::Failure) => {
                return Err(BackendError::Internal(format!("{label} {refused}")));
            }
            Some(ChannelMsg::Close) | Some(ChannelMsg::Eof) | None => {
                return Err(BackendError::Internal(format!(
                    "{label} closed the channel before starting {what}"
                )));
            }
            Some(_) => continue,
        }
    }
}

/// One running command: the producer side of an [`ExecStream`].
struct Job {
    session: Session,
    read: ChannelReadHalf,
    write: ChannelWriteHalf<Msg>,
    tx: ExecSender,
    stdin: Option<Vec<u8>>,
    cancel: CancellationToken,
    deadline: Instant,
    /// Held until the connection is gone, so `pool_size` bounds live connections.
    _permit: OwnedSemaphorePermit,
}

impl Job {
    async fn run(mut self) {
        let write = &self.write;
        let stdin = self.stdin.take();
        // Stdin is written while output is read: a command may fill its stdout before it
        // reads all its input, and writing stdin first would then deadlock on the SSH
        // window. A command that exits without reading stdin makes the write fail; that
        // is the command's business, not an error of the run.
        let feed = async move {
            if let Some(bytes) = stdin
                && !bytes.is_empty()
                && write.data(&bytes[..]).await.is_err()
            {
                return None;
            }
            let _ = write.eof().await;
            None
        };
        let mut output = ChannelOutput::new(&mut self.read, false);
        let outcome = pump::pump(
            &mut output,
            feed,
            &self.tx,
            &self.cancel,
            Some(self.deadline),
        )
        .await;
        match outcome {
            Outcome::Ended(ending) => {
                ending
                    .report(
                        &self.tx,
                        "the host closed the connection before the command exited",
                    )
                    .await;
                disconnect(&self.session).await;
            }
            Outcome::Stopped(stop) => {
                kill_and_close(
                    &self.session,
                    &mut self.read,
                    &self.write,
                    Sweep::IfSignalRefused,
                )
                .await;
                stop.report(&self.tx).await;
            }
        }
    }
}

/// A channel's output as the pump reads it. The run ends at the channel's close, not at the
/// exit status: sshd may still send output after the status (it drains the command's pipes
/// or the terminal after the child exits).
struct ChannelOutput<'a> {
    read: &'a mut ChannelReadHalf,
    /// A terminal merges stdout and stderr; sshd sends everything as data. Extended data,
    /// should a server send any on a terminal, is terminal output all the same.
    terminal: bool,
    /// The exit status or signal, once seen; delivered at the close.
    exit: Option<ExecEvent>,
}

impl<'a> ChannelOutput<'a> {
    fn new(read: &'a mut ChannelReadHalf, terminal: bool) -> Self {
        ChannelOutput {
            read,
            terminal,
            exit: None,
        }
    }
}

impl pump::Output for ChannelOutput<'_> {
    async fn next(&mut self) -> Step {
        // Cancel safe: `wait` is a queue receive, and the exit status is kept in `self`.
        loop {
            match self.read.wait().await {
                Some(ChannelMsg::Data { data }) => return Step::Output(ExecEvent::Stdout(data)),
                Some(ChannelMsg::ExtendedData { data, .. }) if self.terminal => {
                    return Step::Output(ExecEvent::Stdout(data));
                }
                Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                    return Step::Output(ExecEvent::Stderr(data));
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => {
                    self.exit = Some(ExecEvent::Exit {
                        code: Some(exit_status),
                        signal: None,
                    });
                }
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                    self.exit = Some(ExecEvent::Exit {
                        code: None,
                        signal: Some(signal_name_of(&signal_name)),
                    });
                }
                Some(ChannelMsg::Close) | None => {
                    return Step::Ended(match self.exit.take() {
                        Some(exit) => Ending::Exited(exit),
                        None => Ending::Lost,
                    });
                }
                // Eof, window adjustments, other extended streams: nothing to forward.
                Some(_) => {}
            }
        }
    }
}

/// One interactive shell: drains the client's input into the channel and its output into an
/// [`ExecStream`]. Both directions run in this one task so that stopping is a single
/// decision and nothing outlives it: when [`ShellJob::run`] returns, the connection, the
/// input receiver (further sends fail) and the output sender (the stream ends) are dropped.
struct ShellJob {
    session: Session,
    read: ChannelReadHalf,
    write: ChannelWriteHalf<Msg>,
    /// Input flow control, for servers that need it (see `flow.rs`).
    gate: Option<InputGate>,
    tx: ExecSender,
    input: mpsc::Receiver<ShellInput>,
    cancel: CancellationToken,
    /// Held until the connection is gone, so `pool_size` bounds live connections.
    _permit: OwnedSemaphorePermit,
}

impl ShellJob {
    async fn run(mut self) {
        let mut terminal = ChannelTerminal {
            session: &self.session,
            write: &self.write,
            gate: self.gate.as_mut(),
        };
        let feed = pump::feed_terminal(&mut self.input, &mut terminal);
        let mut output = ChannelOutput::new(&mut self.read, true);
        let outcome = pump::pump(&mut output, feed, &self.tx, &self.cancel, None).await;
        // Refuse input from here on, before the output stream can end: a client that sees
        // the end must find its sends failing, not silently buffered.
        self.input.close();
        match outcome {
            Outcome::Ended(ending) => {
                ending
                    .report(
                        &self.tx,
                        "the host closed the connection before the shell exited",
                    )
                    .await;
                disconnect(&self.session).await;
            }
            Outcome::Stopped(stop) => {
                kill_and_close(&self.session, &mut self.read, &self.write, Sweep::Always).await;
                // A client that closed or dropped its side asked for the end; a cancelled
                // session says so, as `exec` does.
                stop.report(&self.tx).await;
            }
        }
    }
}

/// The shell's input side: a write waits for the SSH window, which the server only re-opens
/// while the pump keeps reading what it sends, and with a gate also for the server to
/// write what it was sent (see `flow.rs`).
struct ChannelTerminal<'a> {
    session: &'a Session,
    write: &'a ChannelWriteHalf<Msg>,
    gate: Option<&'a mut InputGate>,
}

impl pump::Terminal for ChannelTerminal<'_> {
    async fn write(&mut self, bytes: Bytes) -> bool {
        let Some(gate) = self.gate.as_deref_mut() else {
            return self.write.data_bytes(bytes).await.is_ok();
        };
        let mut rest = bytes;
        while !rest.is_empty() {
            let piece = rest.split_to(rest.len().min(flow::PIECE));
            loop {
                match gate.admission(piece.len()) {
                    Admission::Go => break,
                    Admission::Settle => {
                        // russh queues the keepalive behind the input handed to it, so its
                        // answer means that input is on the wire. A failure means the
                        // connection is gone; the write below then fails too.
                        let _ = self.session.send_ping().await;
                        gate.settle();
                    }
                    Admission::Wait => gate.changed().await,
                }
            }
            let len = piece.len();
            if self.write.data_bytes(piece).await.is_err() {
                return false;
            }
            gate.handed(len);
        }
        true
    }

    async fn resize(&mut self, cols: u32, rows: u32) -> bool {
        self.write.window_change(cols, rows, 0, 0).await.is_ok()
    }
}

/// Which processes a stop must reach besides the session's process group.
#[derive(Clone, Copy)]
enum Sweep {
    /// Exec: the command runs in the session's process group, which `signal KILL` reaches;
    /// sweep the connection only when sshd refused the signal (root).
    IfSignalRefused,
    /// Shell: an interactive shell puts each job in its own process group, out of reach of
    /// `killpg` of the session, and a job running in the background survives the shell's
    /// death (the terminal hang-up only signals the foreground group). So the connection's
    /// processes are always swept, right after the signal.
    Always,
}

/// Stops a running command and tears the connection down.
///
/// What the remote sees (OpenSSH sshd, verified against OpenSSH 9.2 here):
/// 1. The `signal` channel request with `KILL`. For a non-root user sshd answers with
///    `killpg(<session child pid>, SIGKILL)` as that user; the session child is a
///    process-group leader (sshd `setsid()`s it), so the login shell and everything in its
///    group (e.g. `sleep 60` under `sh -c`) die and sshd reports `exit-signal KILL`.
///    sshd *refuses* the request ("session signalling requires privilege separation") when
///    the user is root (root sessions run in the privileged monitor), and for
///    forced-command (`command=` in authorized_keys) and subsystem sessions.
/// 2. If the channel has not closed within [`SIGNAL_WAIT`], the signal was refused: a
///    second channel on the same connection runs [`KILL_BY_CONNECTION`], which kills every
///    process whose environment carries this connection's `SSH_CONNECTION` (unique per TCP
///    connection: it holds our source port), except the killer's own session. Linux
///    (`/proc`) and a POSIX shell are needed; elsewhere this step does nothing.
/// 3. Channel close and disconnect. On their own these do NOT stop a non-PTY command on
///    OpenSSH: sshd only closes the pipes, and a process that does not touch them (`sleep`)
///    keeps running. That is why steps 1-2 exist.
///
/// Processes that leave the session (`setsid`, daemons that also scrub their environment)
/// are out of reach of any SSH-level kill.
///
/// Throughout, incoming messages are drained: russh's session task may be blocked pushing
/// output into this channel's full queue and would not process our requests until it is
/// emptied.
async fn kill_and_close(
    session: &Session,
    read: &mut ChannelReadHalf,
    write: &ChannelWriteHalf<Msg>,
    sweep: Sweep,
) {
    let _ = tokio::time::timeout(KILL_GRACE, async {
        let closed = match sweep {
            Sweep::IfSignalRefused => {
                let signalled = async {
                    let _ = write.signal(Sig::KILL).await;
                    std::future::pending::<()>().await
                };
                tokio::time::timeout(SIGNAL_WAIT, async {
                    tokio::select! {
                        _ = signalled => {},
                        _ = drain_until_closed(read) => {},
                    }
                })
                .await
                .is_ok()
            }
            Sweep::Always => {
                tokio::select! {
                    _ = write.signal(Sig::KILL) => {},
                    _ = drain_forever(read) => {},
                }
                false
            }
        };
        if !closed {
            tokio::select! {
                _ = kill_by_connection(session) => {},
                _ = drain_forever(read) => {},
            }
        }
        tokio::select! {
            _ = write.close() => {},
            _ = drain_forever(read) => {},
        }
        disconnect(session).await;
    })
    .await;
}

/// How long the channel may stay open after the `signal` request before we conclude that
/// sshd refused it.
const SIGNAL_WAIT: Duration = Duration::from_millis(1000);

/// Fallback kill (see [`kill_and_close`]): runs as the same user in a new session of the
/// same connection. `$$` is the killer's session id (sshd `setsid()`s it), so its own
/// helpers (`tr`, `grep`, `sed`) are skipped. The session id is read after the `comm)`
/// field of `/proc/PID/stat` because `comm` may contain spaces.
const KILL_BY_CONNECTION: &str = r#"c="SSH_CONNECTION=$SSH_CONNECTION"; me=$$; for d in /proc/[0-9]*; do p=${d#/proc/}; tr '\0' '
' < "$d/environ" 2>/dev/null | grep -qxF "$c" || continue; sid=$(sed 's/.*) //' "$d/stat" 2>/dev/null | cut -d' ' -f4); [ -n "$sid" ] && [ "$sid" != "$me" ] && kill -KILL "$p" 2>/dev/null; done; exit 0"#;

async fn kill_by_connection(session: &Session) {
    let Ok(channel) = session.channel_open_session().await else {
        return;
    };
    let (mut read, write) = channel.split();
    if write.exec(false, KILL_BY_CONNECTION).await.is_err() {
        return;
    }
    let _ = write.eof().await;
    drain_until_closed(&mut read).await;
}

async fn drain_until_closed(read: &mut ChannelReadHalf) {
    while let Some(msg) = read.wait().await {
        if matches!(msg, ChannelMsg::Close) {
            return;
        }
    }
}

/// Drains until the channel is gone, then stays pending so the other branch of a select
/// decides when to stop.
async fn drain_forever(read: &mut ChannelReadHalf) {
    while read.wait().await.is_some() {}
    std::future::pending::<()>().await
}

/// The signal name as RFC 4254 spells it (without `SIG`).
fn signal_name_of(sig: &Sig) -> String {
    match sig {
        Sig::ABRT => "ABRT",
        Sig::ALRM => "ALRM",
        Sig::FPE => "FPE",
        Sig::HUP => "HUP",
        Sig::ILL => "ILL",
        Sig::INT => "INT",
        Sig::KILL => "KILL",
        Sig::PIPE => "PIPE",
        Sig::QUIT => "QUIT",
        Sig::SEGV => "SEGV",
        Sig::TERM => "TERM",
        Sig::USR1 => "USR1",
        Sig::Custom(name) => name.as_str(),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        assert_eq!(signal_name_of(&Sig::KILL), "KILL");
        assert_eq!(signal_name_of(&Sig::Custom("WINCH".into())), "WINCH");
    }
}
