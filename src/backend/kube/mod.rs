//! Kubernetes exec backend: runs one command per request in a pod, through the cluster's API
//! server (`pods/exec`), with credentials only Airlock holds.
//!
//! Decisions that must stay true:
//! - **Reachability is decided here, before anything runs.** A target must be a well-formed
//!   name (names end up in the request path), its namespace must match a configured glob
//!   (`kube-system`, `kube-public` and `kube-node-lease` only when named literally: a `*`
//!   meant for application namespaces must never open the control plane), its name must
//!   match a pod glob (when any are configured) and, with a `label_selector`, the API server
//!   must list it under that selector. A pod that fails any check and a pod that does not
//!   exist get the *same* `NotFound` answer, so an agent cannot probe for pods it may not
//!   reach.
//! - **One exec stream per request.** Every command gets its own `pods/exec` WebSocket; no
//!   shell state passes from one request to the next. Concurrency per connection is capped
//!   by `limits.pool_size` slots, held until the stream is gone.
//! - **TLS is always verified.** `accept_invalid_certs` stays false; a kubeconfig that asks
//!   for `insecure-skip-tls-verify` is refused, and a bearer token is never sent over plain
//!   http except to a loopback address.
//! - **Stopping a command is done by closing its stream.** The exec API has no "kill":
//!   aborting the WebSocket makes the API server / kubelet end the exec session and close
//!   the process's stdio. A TTY session gets a hang-up (SIGHUP to the shell's session), but
//!   a non-TTY process that ignores its closed pipes (e.g. `sleep 600`) may keep running in
//!   the container until it exits by itself: the container runtime does not kill exec'd
//!   processes when their stream goes away. See [`ExecJob::run`].
//! - Errors never carry the token; they name the API server (host and port), the namespace
//!   and the pod only.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{FutureExt, SinkExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::Client;
use kube::api::{Api, AttachParams, AttachedProcess, ListParams, TerminalSize};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, SimplexStream, WriteHalf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::pump::{self, Ending, Outcome, SHELL_INPUT_BUFFER, Step, deadline_after};
use super::{
    BackendError, ExecBackend, ExecEvent, ExecPlan, ExecSender, ExecStream, PodTarget, ShellInput,
    ShellPlan, ShellSession,
};
use crate::config::{ConnectionConfig, KubernetesConfig};
use crate::glob;

mod client;

use client::{client_config, describe_server};

/// Seconds a client is told to wait after the API server could not be reached.
const RETRY_UNREACHABLE_SECS: u64 = 5;
/// Seconds a client is told to wait when every exec slot is busy.
const RETRY_BUSY_SECS: u64 = 1;
/// Namespaces that hold the cluster's own machinery: reachable only when a connection names
/// them literally in `namespaces`, never through a glob.
const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];
/// Size of each in-memory pipe between kube's WebSocket task and us (stdin, stdout,
/// stderr). When a pipe is full, kube's task stops reading the WebSocket and TCP flow
/// control then stops the API server: per command at most this much per stream sits in the
/// pipes, plus `STREAM_BUFFER` events in our channel, plus one WebSocket frame and the
/// kernel socket buffers. Nothing grows with the command's output size.
const PIPE_BUFFER: usize = 32 * 1024;
/// Largest output chunk forwarded as one event.
const READ_CHUNK: usize = 16 * 1024;
/// What an interactive session runs. Exec runs a program directly (no login): `/bin/sh` is
/// the one shell every non-distroless image has.
const SHELL_COMMAND: &str = "/bin/sh";

/// Runs commands in pods of one cluster; see the module docs.
pub struct KubeBackend {
    client: Client,
    /// `host:port` of the API server, for messages.
    server: String,
    namespaces: Vec<String>,
    pods: Vec<String>,
    label_selector: Option<String>,
    /// Bounds everything before the command runs: pod lookup, selector check, exec upgrade.
    connect_timeout: Duration,
    /// One permit per concurrent exec stream.
    slots: Arc<Semaphore>,
    pool_size: usize,
    pool_wait: Duration,
}

impl KubeBackend {
    /// Validates the connection and builds the API client. Must be called inside a tokio
    /// runtime (the client spawns its request buffer task); outside one it is refused.
    pub fn new(config: &ConnectionConfig, kube: &KubernetesConfig) -> Result<KubeBackend, String> {
        let label_selector = kube.label_selector.clone();
        let mut kc = client_config(&kube.credentials)?;
        if kc.accept_invalid_certs {
            return Err(
                "the kubeconfig sets insecure-skip-tls-verify; Airlock only talks to a verified \
                 API server (give its CA as certificate-authority instead)"
                    .into(),
            );
        }
        let connect_timeout = Duration::from_millis(kube.connect_timeout_ms.max(1));
        kc.connect_timeout = Some(connect_timeout);
        // An exec stream may be silent for as long as its command; the plan's timeout (or
        // the shell's idle limit) bounds it, not a transport read timeout.
        kc.read_timeout = None;
        let server = describe_server(&kc);
        if tokio::runtime::Handle::try_current().is_err() {
            return Err("the Kubernetes client must be built inside the async runtime".into());
        }
        let client = Client::try_from(kc)
            .map_err(|e| format!("cannot build a Kubernetes client for {server}: {e}"))?;
        Ok(KubeBackend {
            client,
            server,
            namespaces: kube.namespaces.clone(),
            pods: kube.pods.clone(),
            label_selector,
            connect_timeout,
            slots: Arc::new(Semaphore::new(config.limits.pool_size)),
            pool_size: config.limits.pool_size,
            pool_wait: config.limits.pool_wait(),
        })
    }

    /// Name syntax and the configured allow-lists; no request is made.
    fn check_target(&self, target: &PodTarget) -> Result<(), BackendError> {
        if !is_dns_label(&target.namespace) {
            return Err(BackendError::Params(format!(
                "`{}` is not a valid namespace name",
                target.namespace
            )));
        }
        if !is_dns_subdomain(&target.pod) {
            return Err(BackendError::Params(format!(
                "`{}` is not a valid pod name",
                target.pod
            )));
        }
        if let Some(c) = &target.container
            && !is_dns_label(c)
        {
            return Err(BackendError::Params(format!(
                "`{c}` is not a valid container name"
            )));
        }
        if !namespace_allowed(&self.namespaces, &target.namespace)
            || !pod_allowed(&self.pods, &target.pod)
        {
            return Err(unreachable(target));
        }
        Ok(())
    }

    /// Looks the pod up (and, with a selector, lists it under that selector) and checks the
    /// container. Returns the API handle for the pod's namespace.
    async fn locate(&self, target: &PodTarget) -> Result<Api<Pod>, BackendError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &target.namespace);
        let pod = match api.get(&target.pod).await {
            Ok(pod) => pod,
            Err(kube::Error::Api(s)) if s.code == 404 => return Err(unreachable(target)),
            Err(e) => return Err(self.api_error(e)),
        };
        if let Some(selector) = &self.label_selector {
            // The field selector narrows the answer to this one pod; the name is checked
            // again below in case a server ignores it.
            let params = ListParams::default()
                .labels(selector)
                .fields(&format!("metadata.name={}", target.pod));
            let list = api.list(&params).await.map_err(|e| self.api_error(e))?;
            let listed = list
                .items
                .iter()
                .any(|p| p.metadata.name.as_deref() == Some(target.pod.as_str()));
            if !listed {
                return Err(unreachable(target));
            }
        }
        if let Some(phase) = pod.status.as_ref().and_then(|s| s.phase.as_deref())
            && phase != "Running"
        {
            return Err(BackendError::Unavailable {
                detail: format!(
                    "pod {}/{} is not running (phase {phase})",
                    target.namespace, target.pod
                ),
                retry_after_secs: RETRY_UNREACHABLE_SECS,
            });
        }
        if let (Some(container), Some(spec)) = (&target.container, &pod.spec) {
            let known = spec
                .containers
                .iter()
                .map(|c| c.name.as_str())
                .chain(
                    spec.init_containers
                        .iter()
                        .flatten()
                        .map(|c| c.name.as_str()),
                )
                .chain(
                    spec.ephemeral_containers
                        .iter()
                        .flatten()
                        .map(|c| c.name.as_str()),
                )
                .any(|name| name == container);
            if !known {
                // The pod itself is reachable, so naming the missing container leaks nothing.
                return Err(BackendError::NotFound(format!(
                    "container {container} not found in pod {}/{}",
                    target.namespace, target.pod
                )));
            }
        }
        Ok(api)
    }

    /// Checks, lookup and the exec upgrade, all within `connect_timeout` (else
    /// `Unavailable`), and abandoned when `cancel` fires or `deadline` passes first.
    /// Abandoning drops the half-open stream: should the API server already have started
    /// the command, closing the connection ends its session (see the module docs).
    async fn start(
        &self,
        target: &PodTarget,
        command: Vec<String>,
        params: AttachParams,
        cancel: &CancellationToken,
        deadline: Instant,
    ) -> Result<AttachedProcess, BackendError> {
        let steps = async {
            let api = self.locate(target).await?;
            api.exec(&target.pod, command, &params)
                .await
                .map_err(|e| self.api_error(e))
        };
        let limited = tokio::time::timeout_at(deadline_after(self.connect_timeout), steps);
        match super::bounded(limited, cancel, deadline).await? {
            Ok(started) => started,
            Err(_) => Err(BackendError::Unavailable {
                detail: format!(
                    "the Kubernetes API server at {} did not start the command in pod {}/{} \
                     within {} ms",
                    self.server,
                    target.namespace,
                    target.pod,
                    self.connect_timeout.as_millis()
                ),
                retry_after_secs: RETRY_UNREACHABLE_SECS,
            }),
        }
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
                    "all {} exec sessions to {} are busy (waited {} ms)",
                    self.pool_size,
                    self.server,
                    self.pool_wait.as_millis()
                ),
                retry_after_secs: RETRY_BUSY_SECS,
            }),
        }
    }

    /// Maps a client error: transport problems are `Unavailable`, refusals by the cluster
    /// (RBAC, admission, bad requests) are `Internal` with the server's message.
    fn api_error(&self, e: kube::Error) -> BackendError {
        let server = &self.server;
        match e {
            kube::Error::Api(s) => match s.code {
                401 => BackendError::Internal(format!(
                    "the cluster at {server} rejected Airlock's credentials: {}",
                    s.message
                )),
                403 => BackendError::Internal(format!("the cluster refused: {}", s.message)),
                429 | 500 | 502 | 503 | 504 => BackendError::Unavailable {
                    detail: format!(
                        "the Kubernetes API server at {server} answered {}: {}",
                        s.code, s.message
                    ),
                    retry_after_secs: RETRY_UNREACHABLE_SECS,
                },
                code => BackendError::Internal(format!(
                    "the cluster refused the request ({code}): {}",
                    s.message
                )),
            },
            kube::Error::HyperError(_) | kube::Error::Service(_) => BackendError::Unavailable {
                detail: format!("cannot reach the Kubernetes API server at {server}: {e}"),
                retry_after_secs: RETRY_UNREACHABLE_SECS,
            },
            kube::Error::UpgradeConnection(u) => BackendError::Internal(format!(
                "the Kubernetes API server at {server} did not open the exec stream: {u}"
            )),
            kube::Error::Auth(a) => BackendError::Internal(format!(
                "could not obtain credentials for the cluster at {server}: {a}"
            )),
            other => BackendError::Internal(format!(
                "Kubernetes API request to {server} failed: {other}"
            )),
        }
    }
}

/// The one answer for a pod that is missing, outside the allow-lists, or not under the
/// label selector: the caller cannot tell these apart.
fn unreachable(target: &PodTarget) -> BackendError {
    BackendError::NotFound(format!(
        "pod {}/{} is not reachable through this connection",
        target.namespace, target.pod
    ))
}

/// System namespaces only by their literal name; others by any glob.
fn namespace_allowed(patterns: &[String], namespace: &str) -> bool {
    if SYSTEM_NAMESPACES.contains(&namespace) {
        patterns.iter().any(|p| p == namespace)
    } else {
        patterns.iter().any(|p| glob::matches(p, namespace))
    }
}

/// No patterns: any pod of an allowed namespace.
fn pod_allowed(patterns: &[String], pod: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| glob::matches(p, pod))
}

/// RFC 1123 label as Kubernetes checks it (namespaces, containers): lowercase
/// alphanumerics and `-`, alphanumeric at both ends, at most 63 characters.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum)
        && b.iter().all(|c| alnum(c) || *c == b'-')
}

/// RFC 1123 subdomain (pod names): dot-separated labels, at most 253 characters. This also
/// keeps `/`, `..` and `%` out of the request path the name is put in.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// The exit code the exec protocol reports in its final `Status`: `Success` is 0, a
/// `NonZeroExitCode` failure carries the code as the message of its `ExitCode` cause.
/// Any other failure means the command did not run to an exit (e.g. the executable was not
/// found, the container stopped): the error names the server's reason.
fn exit_code_of(status: &Status) -> Result<u32, String> {
    if status.status.as_deref() == Some("Success") {
        return Ok(0);
    }
    let message = status.message.as_deref().unwrap_or("").trim();
    if status.reason.as_deref() == Some("NonZeroExitCode") {
        let code = status
            .details
            .as_ref()
            .and_then(|d| d.causes.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.reason.as_deref() == Some("ExitCode"))
            .and_then(|c| c.message.as_deref())
            .and_then(|m| m.trim().parse::<u32>().ok());
        return code.ok_or_else(|| {
            format!("the command failed but its exit code could not be read: {message}")
        });
    }
    Err(match (status.reason.as_deref(), message) {
        (_, m) if !m.is_empty() => format!("the command could not run: {m}"),
        (Some(r), _) if !r.is_empty() => format!("the command could not run ({r})"),
        _ => "the command could not run (the API server gave no reason)".into(),
    })
}

/// The final event for a status, or the error that takes its place.
fn ending_of(status: Option<Status>) -> Ending {
    match status {
        Some(s) => match exit_code_of(&s) {
            Ok(code) => Ending::Exited(ExecEvent::Exit {
                code: Some(code),
                // Kubernetes reports a death by signal as exit code 128 + n, like a shell.
                signal: None,
            }),
            Err(m) => Ending::Failed(m),
        },
        None => Ending::Lost,
    }
}

/// One output stream of the command, read in chunks of at most [`READ_CHUNK`].
struct Pipe {
    reader: Option<ReadHalf<SimplexStream>>,
    buf: BytesMut,
}

impl Pipe {
    fn new(reader: Option<ReadHalf<SimplexStream>>) -> Pipe {
        Pipe {
            reader,
            buf: BytesMut::new(),
        }
    }

    fn is_open(&self) -> bool {
        self.reader.is_some()
    }

    /// The next chunk; `None` at end of stream (the pipe is then closed). Cancel safe
    /// (`read_buf` reads nothing when dropped), so it can be a `select!` branch. Must only
    /// be polled while [`Pipe::is_open`].
    async fn next(&mut self) -> Option<Bytes> {
        let reader = self.reader.as_mut()?;
        self.buf.reserve(READ_CHUNK);
        let limit = READ_CHUNK.min(self.buf.capacity() - self.buf.len());
        let mut limited = (&mut self.buf).limit(limit);
        match reader.read_buf(&mut limited).await {
            Ok(n) if n > 0 => Some(self.buf.split().freeze()),
            // EOF, or a pipe error (only if kube's task failed): either way the end.
            _ => {
                self.reader = None;
                None
            }
        }
    }

    /// What is already buffered, without waiting: `None` when nothing more is ready.
    fn try_next(&mut self) -> Option<Bytes> {
        if !self.is_open() {
            return None;
        }
        self.next().now_or_never().flatten()
    }
}

type StatusFuture = Pin<Box<dyn Future<Output = Option<Status>> + Send>>;

/// A command's output pipes and its final status, as the pump reads them.
struct PodOutput {
    stdout: Pipe,
    stderr: Pipe,
    status: StatusFuture,
    /// Set once the status (or the stream's end) is known: the output still buffered is
    /// forwarded, then this is the ending.
    ended: Option<Option<Status>>,
}

impl PodOutput {
    fn new(stdout: Pipe, stderr: Pipe, status: StatusFuture) -> Self {
        PodOutput {
            stdout,
            stderr,
            status,
            ended: None,
        }
    }
}

impl pump::Output for PodOutput {
    /// Cancel safe: the pipes read nothing when dropped mid-read, and the status is kept in
    /// `self` once it resolved.
    async fn next(&mut self) -> Step {
        loop {
            if let Some(status) = &mut self.ended {
                // kube's task handles WebSocket messages in order and writes each output
                // frame fully before it reads the next, so when the status is known every
                // byte of output is already in the pipes: nothing needs to be waited for.
                // (Waiting for EOF would hang when the task failed: it drops its pipe ends
                // without closing them.)
                if let Some(b) = self.stdout.try_next() {
                    return Step::Output(ExecEvent::Stdout(b));
                }
                if let Some(b) = self.stderr.try_next() {
                    return Step::Output(ExecEvent::Stderr(b));
                }
                return Step::Ended(ending_of(status.take()));
            }
            tokio::select! {
                biased;
                chunk = self.stdout.next(), if self.stdout.is_open() => {
                    if let Some(b) = chunk {
                        return Step::Output(ExecEvent::Stdout(b));
                    }
                }
                chunk = self.stderr.next(), if self.stderr.is_open() => {
                    if let Some(b) = chunk {
                        return Step::Output(ExecEvent::Stderr(b));
                    }
                }
                status = &mut self.status => self.ended = Some(status),
            }
        }
    }
}

/// One running command: the producer side of an [`ExecStream`].
struct ExecJob {
    /// Owns kube's WebSocket task; dropping or aborting it closes the stream.
    process: AttachedProcess,
    output: PodOutput,
    stdin: Option<(WriteHalf<SimplexStream>, Vec<u8>)>,
    tx: ExecSender,
    cancel: CancellationToken,
    deadline: Instant,
    /// Held until the stream is gone, so `pool_size` bounds live exec streams.
    _permit: OwnedSemaphorePermit,
}

impl ExecJob {
    async fn run(mut self) {
        let stdin = self.stdin.take();
        // Stdin is written while output is read: a command may fill its stdout before it
        // reads all its input, and writing stdin first would then deadlock on the pipes.
        let feed = async move {
            if let Some((mut writer, bytes)) = stdin {
                // A command that exits without reading its stdin makes this fail; that is
                // the command's business, not an error of the run.
                let _ = writer.write_all(&bytes).await;
                // End of stdin: kube sends a stdin CLOSE on v5.channel.k8s.io; on v4 (API
                // servers before 1.30) it can only close the whole WebSocket, which may cut
                // off output the command writes after reading its input.
                let _ = writer.shutdown().await;
            }
            None
        };
        let outcome = pump::pump(
            &mut self.output,
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
                        "the API server closed the exec stream before the command exited",
                    )
                    .await;
            }
            Outcome::Stopped(stop) => {
                // Aborting the stream is the only stop the exec API offers: the API server
                // then ends the exec session and closes the process's stdio (a TTY gets a
                // hang-up); a process that ignores this may keep running in the container.
                self.process.abort();
                stop.report(&self.tx).await;
            }
        }
        // Dropping `self.process` here aborts kube's task if it is still running.
    }
}

/// One interactive shell: drains the client's input into the pod and its output into an
/// [`ExecStream`]. Both directions run in this one task so that stopping is a single
/// decision and nothing outlives it: when [`ShellJob::run`] returns, the WebSocket, the
/// input receiver (further sends fail) and the output sender (the stream ends) are dropped.
struct ShellJob {
    process: AttachedProcess,
    output: PodOutput,
    stdin: WriteHalf<SimplexStream>,
    resize: futures::channel::mpsc::Sender<TerminalSize>,
    tx: ExecSender,
    input: mpsc::Receiver<ShellInput>,
    cancel: CancellationToken,
    /// Held until the stream is gone, so `pool_size` bounds live exec streams.
    _permit: OwnedSemaphorePermit,
}

impl ShellJob {
    async fn run(mut self) {
        let mut terminal = PodTerminal {
            stdin: &mut self.stdin,
            resize: &mut self.resize,
        };
        let feed = pump::feed_terminal(&mut self.input, &mut terminal);
        let outcome = pump::pump(&mut self.output, feed, &self.tx, &self.cancel, None).await;
        // Refuse input from here on, before the output stream can end: a client that sees
        // the end must find its sends failing, not silently buffered.
        self.input.close();
        match outcome {
            Outcome::Ended(ending) => {
                ending
                    .report(
                        &self.tx,
                        "the API server closed the shell session before it exited",
                    )
                    .await;
            }
            Outcome::Stopped(stop) => {
                // Closing the stream hangs up the shell's terminal (SIGHUP to its session).
                self.process.abort();
                // A client that closed or dropped its side asked for the end; a cancelled
                // session says so, as `exec` does.
                stop.report(&self.tx).await;
            }
        }
    }
}

/// The shell's input side: a write may wait for the stdin pipe, which kube's task only
/// empties while it is not blocked on output, that is while the pump keeps reading.
struct PodTerminal<'a> {
    stdin: &'a mut WriteHalf<SimplexStream>,
    resize: &'a mut futures::channel::mpsc::Sender<TerminalSize>,
}

impl pump::Terminal for PodTerminal<'_> {
    async fn write(&mut self, bytes: Bytes) -> bool {
        self.stdin.write_all(&bytes).await.is_ok()
    }

    async fn resize(&mut self, cols: u32, rows: u32) -> bool {
        self.resize.send(terminal_size(cols, rows)).await.is_ok()
    }
}

/// The protocol's terminal size is 16-bit; a zero size would make some programs divide by
/// zero, so both are at least 1.
fn terminal_size(cols: u32, rows: u32) -> TerminalSize {
    let clamp = |v: u32| u16::try_from(v.max(1)).unwrap_or(u16::MAX);
    TerminalSize {
        width: clamp(cols),
        height: clamp(rows),
    }
}

fn pod_target(target: Option<PodTarget>) -> Result<PodTarget, BackendError> {
    target.ok_or_else(|| {
        BackendError::Params("kubernetes exec needs target {namespace, pod, container?}".into())
    })
}

#[async_trait::async_trait]
impl ExecBackend for KubeBackend {
    /// Reaches the API server (`GET /version`) with the configured credentials.
    async fn verify(&self) -> Result<(), BackendError> {
        let limit = self.connect_timeout.saturating_mul(2);
        match tokio::time::timeout(limit, self.client.apiserver_version()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.api_error(e)),
            Err(_) => Err(BackendError::Unavailable {
                detail: format!(
                    "the Kubernetes API server at {} did not answer within {} ms",
                    self.server,
                    limit.as_millis()
                ),
                retry_after_secs: RETRY_UNREACHABLE_SECS,
            }),
        }
    }

    async fn exec(
        &self,
        plan: ExecPlan,
        cancel: CancellationToken,
    ) -> Result<ExecStream, BackendError> {
        let target = pod_target(plan.target)?;
        if plan.argv.is_empty() {
            return Err(BackendError::Params("the command is empty".into()));
        }
        self.check_target(&target)?;
        let deadline = deadline_after(plan.timeout);
        let permit = self.acquire_slot(&cancel, deadline).await?;

        // No stdin (or an empty one) is not attached at all: the process reads EOF at once
        // and no stdin close has to travel over the stream.
        let stdin = plan.stdin.filter(|b| !b.is_empty());
        let mut params = AttachParams::default()
            .stdin(stdin.is_some())
            .stdout(true)
            .stderr(true)
            .tty(false)
            .max_stdin_buf_size(PIPE_BUFFER)
            .max_stdout_buf_size(PIPE_BUFFER)
            .max_stderr_buf_size(PIPE_BUFFER);
        if let Some(c) = &target.container {
            params = params.container(c.clone());
        }
        let mut process = self
            .start(&target, plan.argv, params, &cancel, deadline)
            .await?;

        let status: StatusFuture = match process.take_status() {
            Some(f) => Box::pin(f),
            None => {
                return Err(BackendError::Internal(
                    "the exec stream has no status channel".into(),
                ));
            }
        };
        let stdin = match stdin {
            Some(bytes) => match process.stdin() {
                Some(writer) => Some((writer, bytes)),
                None => {
                    return Err(BackendError::Internal(
                        "the exec stream has no stdin".into(),
                    ));
                }
            },
            None => None,
        };
        let (tx, stream) = ExecStream::channel();
        let job = ExecJob {
            output: PodOutput::new(
                Pipe::new(process.stdout()),
                Pipe::new(process.stderr()),
                status,
            ),
            process,
            stdin,
            tx,
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
        let target = pod_target(plan.target)?;
        self.check_target(&target)?;
        // A shell has no deadline of its own (the caller cancels on idle or maximum length);
        // setup is still bounded: the slot by `pool_wait`, the rest by `connect_timeout`.
        let no_deadline = deadline_after(Duration::MAX);
        let permit = self.acquire_slot(&cancel, no_deadline).await?;

        // A terminal merges stdout and stderr; the protocol refuses stderr with a tty.
        let mut params = AttachParams::interactive_tty()
            .stdin(true)
            .stdout(true)
            .stderr(false)
            .tty(true)
            .max_stdin_buf_size(PIPE_BUFFER)
            .max_stdout_buf_size(PIPE_BUFFER);
        if let Some(c) = &target.container {
            params = params.container(c.clone());
        }
        let mut process = self
            .start(
                &target,
                vec![SHELL_COMMAND.to_string()],
                params,
                &cancel,
                no_deadline,
            )
            .await?;

        let (Some(status), Some(stdin), Some(mut resize)) = (
            process.take_status(),
            process.stdin(),
            process.terminal_size(),
        ) else {
            return Err(BackendError::Internal(
                "the exec stream lacks its status, stdin or terminal channel".into(),
            ));
        };
        // The channel is fresh (capacity 10), so this does not wait; a failure means kube's
        // task already ended, which the job reports through the status.
        let _ = resize.send(terminal_size(plan.cols, plan.rows)).await;

        let (tx, output) = ExecStream::channel();
        let (input, input_rx) = mpsc::channel(SHELL_INPUT_BUFFER);
        let job = ShellJob {
            // The terminal's output comes as stdout only.
            output: PodOutput::new(
                Pipe::new(process.stdout()),
                Pipe::new(None),
                Box::pin(status),
            ),
            process,
            stdin,
            resize,
            tx,
            input: input_rx,
            cancel,
            _permit: permit,
        };
        tokio::spawn(job.run());
        Ok(ShellSession { input, output })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};

    fn pats(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn system_namespaces_need_their_literal_name() {
        let any = pats(&["*"]);
        assert!(namespace_allowed(&any, "default"));
        assert!(namespace_allowed(&any, "team-a"));
        for ns in SYSTEM_NAMESPACES {
            assert!(!namespace_allowed(&any, ns), "{ns}");
            assert!(!namespace_allowed(&pats(&["kube-*"]), ns), "{ns}");
            assert!(
                !namespace_allowed(&pats(&["kube-s?stem", "kube-p*"]), ns),
                "{ns}"
            );
            assert!(namespace_allowed(&pats(&["team-*", ns]), ns), "{ns}");
        }
        let some = pats(&["team-*", "staging"]);
        assert!(namespace_allowed(&some, "team-b"));
        assert!(namespace_allowed(&some, "staging"));
        assert!(!namespace_allowed(&some, "production"));
        assert!(!namespace_allowed(&[], "default"));
    }

    #[test]
    fn pod_globs() {
        assert!(pod_allowed(&[], "anything"));
        let p = pats(&["web-*", "worker-?"]);
        assert!(pod_allowed(&p, "web-7d9f8-abcde"));
        assert!(pod_allowed(&p, "worker-1"));
        assert!(!pod_allowed(&p, "worker-12"));
        assert!(!pod_allowed(&p, "db-0"));
    }

    #[test]
    fn names_are_checked_before_they_reach_a_path() {
        assert!(is_dns_label("default"));
        assert!(is_dns_label("a"));
        assert!(is_dns_label("team-a1"));
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a.b",
            "a/b",
            "..",
            &"a".repeat(64),
        ] {
            assert!(!is_dns_label(bad), "{bad:?}");
        }
        assert!(is_dns_subdomain("web-7d9f8-abcde"));
        assert!(is_dns_subdomain("pod.with.dots"));
        for bad in [
            "", ".", "..", "a..b", ".a", "a.", "a/b", "../x", "a%2fb", "Pod",
        ] {
            assert!(!is_dns_subdomain(bad), "{bad:?}");
        }
        assert!(!is_dns_subdomain(&format!("{}.b", "a".repeat(253))));
    }

    fn status(status: &str, reason: Option<&str>, causes: Vec<(&str, &str)>) -> Status {
        Status {
            status: Some(status.into()),
            reason: reason.map(Into::into),
            message: Some("command terminated with non-zero exit code".into()),
            details: Some(StatusDetails {
                causes: Some(
                    causes
                        .into_iter()
                        .map(|(r, m)| StatusCause {
                            reason: Some(r.into()),
                            message: Some(m.into()),
                            field: None,
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn exit_codes_from_status() {
        assert_eq!(exit_code_of(&status("Success", None, vec![])), Ok(0));
        assert_eq!(
            exit_code_of(&status(
                "Failure",
                Some("NonZeroExitCode"),
                vec![("ExitCode", "42")]
            )),
            Ok(42)
        );
        // The ExitCode cause is found among others.
        assert_eq!(
            exit_code_of(&status(
                "Failure",
                Some("NonZeroExitCode"),
                vec![("Other", "x"), ("ExitCode", " 137 ")]
            )),
            Ok(137)
        );
        let e = exit_code_of(&status("Failure", Some("NonZeroExitCode"), vec![])).unwrap_err();
        assert!(e.contains("exit code could not be read"), "{e}");
        let not_found = Status {
            status: Some("Failure".into()),
            reason: Some("InternalError".into()),
            message: Some("exec: \"nope\": executable file not found in $PATH".into()),
            ..Default::default()
        };
        let e = exit_code_of(&not_found).unwrap_err();
        assert!(e.contains("executable file not found"), "{e}");
        let bare = Status {
            status: Some("Failure".into()),
            ..Default::default()
        };
        assert!(exit_code_of(&bare).is_err());
    }

    #[test]
    fn endings() {
        assert!(matches!(
            ending_of(Some(status("Success", None, vec![]))),
            Ending::Exited(ExecEvent::Exit {
                code: Some(0),
                signal: None
            })
        ));
        assert!(matches!(ending_of(None), Ending::Lost));
        assert!(matches!(
            ending_of(Some(Status {
                status: Some("Failure".into()),
                ..Default::default()
            })),
            Ending::Failed(_)
        ));
    }

    #[test]
    fn terminal_sizes_are_clamped() {
        let t = terminal_size(0, 100_000);
        assert_eq!((t.width, t.height), (1, u16::MAX));
        let t = terminal_size(80, 24);
        assert_eq!((t.width, t.height), (80, 24));
    }
}
