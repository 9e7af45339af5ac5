//! An in-test double of the Kubernetes API server, just big enough for pod exec: the real `kube`
//! client talks to it over plain http on loopback with a bearer token.
//!
//! It serves `GET /version`, pod `get`/`list` (with equality label selectors) and the `exec`
//! subresource upgraded to a WebSocket speaking `v5.channel.k8s.io` (or `v4.channel.k8s.io`)
//! the way the API server does: binary frames whose first byte is the channel (0 stdin, 1 stdout,
//! 2 stderr, 3 error/status, 4 resize, 255 close-stream in v5), a one-byte frame on the lowest
//! writable channel when the stream opens, a JSON `Status` on channel 3 when the process exits
//! and then a close frame (1000). The command runs as a local process (under `script` for a
//! tty); it is killed if the client goes away first. Errors before the upgrade are `Status`
//! objects with the API server's codes and reasons.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{FromRequestParts, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A pod the double knows about. Every container "runs" on this machine.
#[derive(Clone, Debug)]
pub struct FakePod {
    pub namespace: String,
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub containers: Vec<String>,
}

impl FakePod {
    /// A pod with one container `main` and no labels.
    #[allow(dead_code)]
    pub fn new(namespace: &str, name: &str) -> Self {
        FakePod {
            namespace: namespace.into(),
            name: name.into(),
            labels: Vec::new(),
            containers: vec!["main".into()],
        }
    }
}

/// What one exec request asked for and what became of it.
#[allow(dead_code)]
#[derive(Clone, Debug, Default)]
pub struct ExecRecord {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    /// The negotiated subprotocol, e.g. `v5.channel.k8s.io`.
    pub protocol: String,
    /// The local process id, once spawned.
    pub pid: Option<u32>,
    /// `(width, height)` messages received on the resize channel.
    pub resizes: Vec<(u16, u16)>,
    /// Whether the client closed stdin with the v5 close signal.
    pub stdin_closed: bool,
    /// The exit code reported on the status channel (None until the process ended that way).
    pub exit_code: Option<i32>,
    /// Whether the process was killed because the client (or the double) went away first.
    pub killed: bool,
    /// Whether the session is over (process reaped, WebSocket done).
    pub finished: bool,
}

/// A running double; dropping it stops the server and kills any running exec process.
pub struct KubeDouble {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// The bearer token required on every request.
    pub token: String,
    execs: Arc<Mutex<Vec<ExecRecord>>>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

#[allow(dead_code)]
impl KubeDouble {
    /// Every exec request that got past validation (upgraded or not), in arrival order.
    pub fn execs(&self) -> Vec<ExecRecord> {
        lock(&self.execs).clone()
    }

    /// A `kube::Config` pointing at the double, authenticated with its token.
    pub fn kube_config(&self) -> kube::Config {
        let mut config = kube::Config::new(self.url.parse().expect("the double's url parses"));
        config.auth_info.token = Some(self.token.clone().into());
        config
    }

    /// A real kube client for the double.
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.kube_config()).expect("kube client builds")
    }

    /// Waits (up to `timeout`) until every exec session has finished.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if lock(&self.execs).iter().all(|e| e.finished) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for KubeDouble {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.task.abort();
    }
}

#[derive(Clone)]
struct Shared {
    pods: Arc<Vec<FakePod>>,
    token: Arc<str>,
    execs: Arc<Mutex<Vec<ExecRecord>>>,
    cancel: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts the double on a free loopback port.
pub async fn start(pods: Vec<FakePod>) -> KubeDouble {
    let token = format!("kd-{}", uuid::Uuid::new_v4().simple());
    let execs = Arc::new(Mutex::new(Vec::new()));
    let cancel = CancellationToken::new();
    let shared = Shared {
        pods: Arc::new(pods),
        token: token.as_str().into(),
        execs: execs.clone(),
        cancel: cancel.clone(),
    };
    let app = Router::new()
        .route("/version", get(version))
        .route("/api/v1/pods", get(list_all_pods))
        .route("/api/v1/namespaces/{ns}/pods", get(list_pods))
        .route("/api/v1/namespaces/{ns}/pods/{name}", get(get_pod))
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/exec",
            get(exec).post(exec),
        )
        .fallback(|| async {
            status_response(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
                None,
            )
        })
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            require_token,
        ))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let port = listener.local_addr().expect("local addr").port();
    let shutdown = cancel.clone();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    KubeDouble {
        url: format!("http://127.0.0.1:{port}"),
        token,
        execs,
        cancel,
        task,
    }
}

// ---------------------------------------------------------------------------------------------
// Plain API endpoints
// ---------------------------------------------------------------------------------------------

/// A `metav1.Status` failure response, as the API server sends for errors.
fn status_response(
    code: StatusCode,
    reason: &str,
    message: &str,
    details: Option<Value>,
) -> Response {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    if let Some(details) = details {
        body["details"] = details;
    }
    (code, axum::Json(body)).into_response()
}

fn not_found(kind: &str, name: &str) -> Response {
    status_response(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{kind} \"{name}\" not found"),
        Some(json!({"name": name, "kind": kind})),
    )
}

fn bad_request(message: &str) -> Response {
    status_response(StatusCode::BAD_REQUEST, "BadRequest", message, None)
}

async fn require_token(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let ok = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == &*shared.token);
    if ok {
        next.run(request).await
    } else {
        status_response(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized",
            None,
        )
    }
}

async fn version() -> axum::Json<Value> {
    axum::Json(json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": "v1.33.0",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64"
    }))
}

fn pod_json(pod: &FakePod, with_type: bool) -> Value {
    let labels: serde_json::Map<String, Value> = pod
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let uid = {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&(&pod.namespace, &pod.name), &mut h);
        let n = std::hash::Hasher::finish(&h);
        uuid::Uuid::from_u64_pair(n, n.rotate_left(17))
    };
    let containers: Vec<Value> = pod
        .containers
        .iter()
        .map(|c| json!({"name": c, "image": "docker.io/library/busybox:1.36", "resources": {}}))
        .collect();
    let statuses: Vec<Value> = pod
        .containers
        .iter()
        .map(|c| {
            json!({
                "name": c,
                "image": "docker.io/library/busybox:1.36",
                "imageID": "",
                "ready": true,
                "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}
            })
        })
        .collect();
    let mut v = json!({
        "metadata": {
            "name": pod.name,
            "namespace": pod.namespace,
            "uid": uid.to_string(),
            "resourceVersion": "1",
            "creationTimestamp": "2025-01-01T00:00:00Z",
            "labels": labels,
        },
        "spec": {"containers": containers, "restartPolicy": "Always", "nodeName": "kube-double"},
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.1",
            "hostIP": "127.0.0.1",
            "startTime": "2025-01-01T00:00:00Z",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": statuses,
        }
    });
    if with_type {
        v["apiVersion"] = json!("v1");
        v["kind"] = json!("Pod");
    }
    v
}

fn find_pod<'a>(shared: &'a Shared, ns: &str, name: &str) -> Option<&'a FakePod> {
    shared
        .pods
        .iter()
        .find(|p| p.namespace == ns && p.name == name)
}

async fn get_pod(
    State(shared): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    match find_pod(&shared, &ns, &name) {
        Some(pod) => axum::Json(pod_json(pod, true)).into_response(),
        None => not_found("pods", &name),
    }
}

/// Parses a raw query string into decoded pairs, keeping repeated keys.
fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
                    match (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                        (Some(h), Some(l)) => {
                            out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    raw.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// Equality-based selectors: `a=b`, `a==b`, `a!=b`, `a`, `!a`, comma-separated.
fn selector_matches(selector: &str, labels: &[(String, String)]) -> Result<bool, String> {
    let get = |k: &str| {
        labels
            .iter()
            .find(|(lk, _)| lk == k)
            .map(|(_, v)| v.as_str())
    };
    for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let ok = if let Some((k, v)) = term.split_once("!=") {
            get(k.trim()) != Some(v.trim())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            get(k.trim()) == Some(v.trim())
        } else if let Some(k) = term.strip_prefix('!') {
            get(k.trim()).is_none()
        } else if term.contains(' ') || term.contains('(') {
            return Err(format!("unable to parse requirement: {term}"));
        } else {
            get(term).is_some()
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn list_response(shared: &Shared, ns: Option<&str>, raw: Option<&str>) -> Response {
    let selector = query_pairs(raw)
        .into_iter()
        .find(|(k, _)| k == "labelSelector")
        .map(|(_, v)| v)
        .unwrap_or_default();
    let mut items = Vec::new();
    for pod in shared.pods.iter() {
        if ns.is_some_and(|ns| ns != pod.namespace) {
            continue;
        }
        match selector_matches(&selector, &pod.labels) {
            Ok(true) => items.push(pod_json(pod, false)),
            Ok(false) => {}
            Err(e) => return bad_request(&e),
        }
    }
    axum::Json(json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "1"},
        "items": items,
    }))
    .into_response()
}

async fn list_pods(
    State(shared): State<Shared>,
    Path(ns): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    list_response(&shared, Some(&ns), raw.as_deref())
}

async fn list_all_pods(State(shared): State<Shared>, RawQuery(raw): RawQuery) -> Response {
    list_response(&shared, None, raw.as_deref())
}

// ---------------------------------------------------------------------------------------------
// Exec
// ---------------------------------------------------------------------------------------------

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

const V5: &str = "v5.channel.k8s.io";
const V4: &str = "v4.channel.k8s.io";

struct ExecParams {
    command: Vec<String>,
    container: String,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

fn truthy(v: &str) -> bool {
    matches!(v, "true" | "1" | "True" | "TRUE" | "t" | "T")
}

async fn exec(
    State(shared): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    request: Request,
) -> Response {
    let Some(pod) = find_pod(&shared, &ns, &name) else {
        return not_found("pods", &name);
    };
    let mut p = ExecParams {
        command: Vec::new(),
        container: String::new(),
        stdin: false,
        stdout: false,
        stderr: false,
        tty: false,
    };
    for (k, v) in query_pairs(raw.as_deref()) {
        match k.as_str() {
            "command" => p.command.push(v),
            "container" => p.container = v,
            "stdin" => p.stdin = truthy(&v),
            "stdout" => p.stdout = truthy(&v),
            "stderr" => p.stderr = truthy(&v),
            "tty" => p.tty = truthy(&v),
            _ => {}
        }
    }
    // The API server's validation order: pod, container, then the exec options.
    if p.container.is_empty() {
        match pod.containers.as_slice() {
            [only] => p.container = only.clone(),
            _ => {
                return bad_request(&format!(
                    "a container name must be specified for pod {}, choose one of: [{}]",
                    pod.name,
                    pod.containers.join(" ")
                ));
            }
        }
    } else if !pod.containers.contains(&p.container) {
        return bad_request(&format!(
            "container {} is not valid for pod {}",
            p.container, pod.name
        ));
    }
    if !p.stdin && !p.stdout && !p.stderr {
        return bad_request("you must specify at least 1 of stdin, stdout, stderr");
    }
    if p.command.is_empty() {
        return bad_request("you must specify at least one command for the container");
    }

    // Browsers and kubectl use GET for the WebSocket upgrade; accept POST (the SPDY verb) too.
    let (mut parts, _body) = request.into_parts();
    if parts.method == Method::POST {
        parts.method = Method::GET;
    }
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(_) => return bad_request("Upgrade request required"),
    };
    let offered = offered_protocols(&parts.headers);
    let protocol = if offered.iter().any(|p| p == V5) {
        V5
    } else if offered.iter().any(|p| p == V4) {
        V4
    } else {
        return bad_request(&format!(
            "unable to upgrade connection: requested protocol(s) are not supported: {offered:?}; supports [{V5} {V4}]"
        ));
    };

    let index = {
        let mut execs = lock(&shared.execs);
        execs.push(ExecRecord {
            namespace: ns,
            pod: name,
            container: p.container.clone(),
            command: p.command.clone(),
            stdin: p.stdin,
            stdout: p.stdout,
            stderr: p.stderr,
            tty: p.tty,
            protocol: protocol.to_string(),
            ..ExecRecord::default()
        });
        execs.len() - 1
    };
    let execs = shared.execs.clone();
    let cancel = shared.cancel.clone();
    ws.protocols([protocol])
        .on_failed_upgrade({
            let execs = execs.clone();
            move |_| lock(&execs)[index].finished = true
        })
        .on_upgrade(move |socket| async move {
            let session = Session {
                execs: execs.clone(),
                index,
                v5: protocol == V5,
            };
            session.run(socket, p, cancel).await;
            lock(&execs)[index].finished = true;
        })
}

fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// `'a' 'b c'` for `script -c`.
fn shell_join(args: &[String]) -> String {
    args.iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

fn binary(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(Bytes::from(v))
}

struct Session {
    execs: Arc<Mutex<Vec<ExecRecord>>>,
    index: usize,
    v5: bool,
}

enum Ended {
    Exited(ExitStatus),
    /// The client went away or the double is shutting down: no status, no close handshake.
    Abandoned,
}

impl Session {
    fn record(&self, f: impl FnOnce(&mut ExecRecord)) {
        if let Some(r) = lock(&self.execs).get_mut(self.index) {
            f(r);
        }
    }

    async fn run(&self, mut socket: WebSocket, p: ExecParams, cancel: CancellationToken) {
        let mut cmd = if p.tty {
            let mut c = Command::new("script");
            c.arg("-qfec").arg(shell_join(&p.command)).arg("/dev/null");
            c.env("TERM", "xterm");
            c
        } else {
            let mut c = Command::new(&p.command[0]);
            c.args(&p.command[1..]);
            c
        };
        cmd.stdin(if p.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if p.stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(if p.stderr && !p.tty {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .kill_on_drop(true)
        .process_group(0);

        // The lowest writable channel gets an empty frame once the stream is established.
        let first = if p.stdout {
            STDOUT
        } else if p.stderr {
            STDERR
        } else {
            ERROR
        };
        if socket.send(binary(first, &[])).await.is_err() {
            return;
        }

        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                // What the kubelet reports when the runtime cannot start the process.
                let message = format!(
                    "failed to exec in container: failed to start exec: OCI runtime exec failed: exec failed: unable to start container process: exec: \"{}\": {e}: unknown",
                    p.command[0]
                );
                let status = json!({
                    "metadata": {},
                    "status": "Failure",
                    "message": message,
                    "reason": "InternalError",
                    "details": {"causes": [{"message": message}]},
                    "code": 500
                });
                finish(&mut socket, &status).await;
                return;
            }
        };
        let pid = child.id();
        self.record(|r| r.pid = pid);

        let (out_tx, mut out_rx) = mpsc::channel::<(u8, Option<Bytes>)>(16);
        let mut open_outputs = 0;
        if let Some(out) = child.stdout.take() {
            open_outputs += 1;
            tokio::spawn(pump(STDOUT, out, out_tx.clone()));
        }
        if let Some(err) = child.stderr.take() {
            open_outputs += 1;
            tokio::spawn(pump(STDERR, err, out_tx.clone()));
        }
        drop(out_tx);
        let mut stdin_tx = child.stdin.take().map(|mut stdin| {
            let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
            tokio::spawn(async move {
                while let Some(data) = rx.recv().await {
                    if stdin.write_all(&data).await.is_err() || stdin.flush().await.is_err() {
                        break;
                    }
                }
                // Dropping `stdin` closes the pipe: the process sees EOF.
            });
            tx
        });

        let ended = self
            .pump_session(
                &mut socket,
                &mut child,
                &mut out_rx,
                &mut open_outputs,
                &mut stdin_tx,
                &cancel,
            )
            .await;
        match ended {
            Ended::Exited(status) => {
                let code = status.code().unwrap_or_else(|| {
                    128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
                });
                self.record(|r| r.exit_code = Some(code));
                let status = if code == 0 {
                    json!({"metadata": {}, "status": "Success"})
                } else {
                    json!({
                        "metadata": {},
                        "status": "Failure",
                        "message": format!(
                            "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
                            p.command.join(" ")
                        ),
                        "reason": "NonZeroExitCode",
                        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}
                    })
                };
                finish(&mut socket, &status).await;
            }
            Ended::Abandoned => {
                kill_tree(&mut child).await;
                self.record(|r| r.killed = true);
            }
        }
    }

    async fn pump_session(
        &self,
        socket: &mut WebSocket,
        child: &mut Child,
        out_rx: &mut mpsc::Receiver<(u8, Option<Bytes>)>,
        open_outputs: &mut usize,
        stdin_tx: &mut Option<mpsc::UnboundedSender<Bytes>>,
        cancel: &CancellationToken,
    ) -> Ended {
        let mut exited: Option<ExitStatus> = None;
        // After the process exits, give its output pipes a moment to drain (a background
        // grandchild may hold them open forever).
        let drain = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(drain);
        loop {
            if let Some(status) = exited
                && *open_outputs == 0
            {
                return Ended::Exited(status);
            }
            tokio::select! {
                msg = socket.recv() => match msg {
                    Some(Ok(Message::Binary(data))) => match data.first() {
                        Some(&STDIN) => {
                            if let Some(tx) = stdin_tx.as_ref()
                                && data.len() > 1
                            {
                                let _ = tx.send(data.slice(1..));
                            }
                        }
                        Some(&RESIZE) => {
                            if let Ok(size) = serde_json::from_slice::<Value>(&data[1..]) {
                                let dim = |k: &str| {
                                    size.get(k)
                                        .and_then(Value::as_u64)
                                        .and_then(|v| u16::try_from(v).ok())
                                        .unwrap_or(0)
                                };
                                let (w, h) = (dim("Width"), dim("Height"));
                                self.record(|r| r.resizes.push((w, h)));
                            }
                        }
                        Some(&CLOSE) if self.v5 && data.get(1) == Some(&STDIN) => {
                            *stdin_tx = None;
                            self.record(|r| r.stdin_closed = true);
                        }
                        _ => {}
                    },
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ended::Abandoned,
                    Some(Ok(_)) => {}
                },
                out = out_rx.recv(), if *open_outputs > 0 => match out {
                    Some((channel, Some(data))) => {
                        if socket.send(binary(channel, &data)).await.is_err() {
                            return Ended::Abandoned;
                        }
                    }
                    Some((_, None)) => *open_outputs = open_outputs.saturating_sub(1),
                    None => *open_outputs = 0,
                },
                status = child.wait(), if exited.is_none() => match status {
                    Ok(status) => {
                        exited = Some(status);
                        drain
                            .as_mut()
                            .reset(tokio::time::Instant::now() + Duration::from_secs(2));
                    }
                    Err(_) => return Ended::Abandoned,
                },
                () = &mut drain, if exited.is_some() => *open_outputs = 0,
                () = cancel.cancelled() => return Ended::Abandoned,
            }
        }
    }
}

/// Copies one output pipe into the session as `(channel, Some(chunk))`, then `(channel, None)`.
async fn pump(
    channel: u8,
    mut reader: impl AsyncRead + Unpin,
    tx: mpsc::Sender<(u8, Option<Bytes>)>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = tx.send((channel, None)).await;
                return;
            }
            Ok(n) => {
                if tx
                    .send((channel, Some(Bytes::copy_from_slice(&buf[..n]))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Sends the status on the error channel, then closes the WebSocket with 1000.
async fn finish(socket: &mut WebSocket, status: &Value) {
    let body = serde_json::to_vec(status).unwrap_or_default();
    if socket.send(binary(ERROR, &body)).await.is_err() {
        return;
    }
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: close_code::NORMAL,
            reason: "".into(),
        })))
        .await;
    // Give the client a moment to answer the close; it may just drop the connection.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}

/// Kills the process group the child leads, then the child itself, and reaps it.
async fn kill_tree(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }
    let _ = child.kill().await;
}

// ---------------------------------------------------------------------------------------------
// Self-tests with the real kube client
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, AttachParams, ListParams};

    fn pods() -> Vec<FakePod> {
        vec![
            FakePod {
                namespace: "apps".into(),
                name: "web-0".into(),
                labels: vec![
                    ("app".into(), "web".into()),
                    ("tier".into(), "front".into()),
                ],
                containers: vec!["main".into()],
            },
            FakePod {
                namespace: "apps".into(),
                name: "db-0".into(),
                labels: vec![("app".into(), "db".into())],
                containers: vec!["postgres".into(), "sidecar".into()],
            },
        ]
    }

    async fn read_all(r: Option<impl AsyncRead + Unpin>) -> String {
        let mut s = String::new();
        if let Some(mut r) = r {
            r.read_to_string(&mut s).await.expect("read stream");
        }
        s
    }

    /// Runs a command to completion and returns (stdout, stderr, status).
    async fn run(
        api: &Api<Pod>,
        pod: &str,
        cmd: &[&str],
        ap: &AttachParams,
    ) -> (
        String,
        String,
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Status,
    ) {
        let mut proc = api.exec(pod, cmd.to_vec(), ap).await.expect("exec starts");
        let status = proc.take_status().expect("status future");
        let (out, err) = tokio::join!(read_all(proc.stdout()), read_all(proc.stderr()));
        let status = tokio::time::timeout(Duration::from_secs(10), status)
            .await
            .expect("status in time")
            .expect("a status");
        proc.join().await.expect("join");
        (out, err, status)
    }

    #[tokio::test]
    async fn kube_double_version_get_and_list() {
        let kd = start(pods()).await;
        let client = kd.client();
        let v = client.apiserver_version().await.expect("version");
        assert_eq!((v.major.as_str(), v.minor.as_str()), ("1", "33"));

        let api: Api<Pod> = Api::namespaced(client.clone(), "apps");
        let pod = api.get("web-0").await.expect("get pod");
        assert_eq!(pod.metadata.name.as_deref(), Some("web-0"));
        assert_eq!(pod.spec.expect("spec").containers[0].name, "main");
        assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Running"));

        let list = api
            .list(&ListParams::default().labels("app=web"))
            .await
            .expect("list");
        let names: Vec<_> = list
            .items
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        assert_eq!(names, ["web-0"]);
        let all = api.list(&ListParams::default()).await.expect("list all");
        assert_eq!(all.items.len(), 2);
        let other: Api<Pod> = Api::namespaced(client, "other");
        assert!(
            other
                .list(&ListParams::default())
                .await
                .expect("list")
                .items
                .is_empty()
        );
    }

    #[tokio::test]
    async fn kube_double_missing_pod_is_404_and_bad_token_401() {
        let kd = start(pods()).await;
        let api: Api<Pod> = Api::namespaced(kd.client(), "apps");
        match api.get("nope").await {
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 404);
                assert_eq!(s.reason, "NotFound");
                assert_eq!(s.message, "pods \"nope\" not found");
            }
            other => panic!("expected a 404, got {other:?}"),
        }
        match api.exec("nope", ["true"], &AttachParams::default()).await {
            Err(kube::Error::Api(s)) => assert_eq!(s.code, 404),
            Err(e) => panic!("expected a 404, got {e:?}"),
            Ok(_) => panic!("expected a 404, got a session"),
        }
        match api
            .exec("db-0", ["true"], &AttachParams::default().container("nope"))
            .await
        {
            Err(kube::Error::Api(s)) => assert_eq!(s.code, 400),
            Err(e) => panic!("expected a 400, got {e:?}"),
            Ok(_) => panic!("expected a 400, got a session"),
        }
        assert!(kd.execs().is_empty());

        let mut config = kd.kube_config();
        config.auth_info.token = Some("wrong".to_string().into());
        let bad: Api<Pod> =
            Api::namespaced(kube::Client::try_from(config).expect("client"), "apps");
        match bad.get("web-0").await {
            Err(kube::Error::Api(s)) => assert_eq!(s.code, 401),
            other => panic!("expected a 401, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn kube_double_exec_echo() {
        let kd = start(pods()).await;
        let api: Api<Pod> = Api::namespaced(kd.client(), "apps");
        let (out, err, status) = run(
            &api,
            "web-0",
            &["sh", "-c", "echo hello; echo oops >&2"],
            &AttachParams::default(),
        )
        .await;
        assert_eq!(out, "hello\n");
        assert_eq!(err, "oops\n");
        assert_eq!(status.status.as_deref(), Some("Success"));
        let execs = kd.execs();
        assert_eq!(execs.len(), 1);
        assert_eq!(execs[0].protocol, V5);
        assert_eq!(execs[0].container, "main");
        assert_eq!(execs[0].command, ["sh", "-c", "echo hello; echo oops >&2"]);
        assert!(kd.wait_idle(Duration::from_secs(5)).await);
        assert_eq!(kd.execs()[0].exit_code, Some(0));
    }

    #[tokio::test]
    async fn kube_double_exec_exit_code() {
        let kd = start(pods()).await;
        let api: Api<Pod> = Api::namespaced(kd.client(), "apps");
        let (_, _, status) = run(
            &api,
            "db-0",
            &["sh", "-c", "exit 3"],
            &AttachParams::default().container("sidecar"),
        )
        .await;
        assert_eq!(status.status.as_deref(), Some("Failure"));
        assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
        let causes = status.details.and_then(|d| d.causes).unwrap_or_default();
        assert_eq!(causes[0].reason.as_deref(), Some("ExitCode"));
        assert_eq!(causes[0].message.as_deref(), Some("3"));
        assert_eq!(kd.execs()[0].container, "sidecar");
    }

    #[tokio::test]
    async fn kube_double_exec_stdin_round_trip() {
        let kd = start(pods()).await;
        let api: Api<Pod> = Api::namespaced(kd.client(), "apps");
        let mut proc = api
            .exec("web-0", ["cat"], &AttachParams::default().stdin(true))
            .await
            .expect("exec");
        let mut stdin = proc.stdin().expect("stdin");
        let status = proc.take_status().expect("status");
        let out = proc.stdout();
        let reader = tokio::spawn(read_all(out));
        stdin.write_all(b"ping\npong\n").await.expect("write");
        stdin.shutdown().await.expect("shutdown");
        drop(stdin);
        let out = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("stdout in time")
            .expect("reader");
        assert_eq!(out, "ping\npong\n");
        let status = status.await.expect("status");
        assert_eq!(status.status.as_deref(), Some("Success"));
        assert!(kd.wait_idle(Duration::from_secs(5)).await);
        assert!(kd.execs()[0].stdin_closed);
    }

    #[tokio::test]
    async fn kube_double_exec_tty() {
        let kd = start(pods()).await;
        let api: Api<Pod> = Api::namespaced(kd.client(), "apps");
        let ap = AttachParams::default().stderr(false).tty(true);
        let (out, _, status) = run(
            &api,
            "web-0",
            &["sh", "-c", "test -t 1 && echo is-a-tty"],
            &ap,
        )
        .await;
        assert!(out.contains("is-a-tty"), "{out:?}");
        assert_eq!(status.status.as_deref(), Some("Success"));
        assert!(kd.execs()[0].tty);
    }

    #[tokio::test]
    async fn kube_double_client_abort_kills_process() {
        let kd = start(pods()).await;
        let api: Api<Pod> = Api::namespaced(kd.client(), "apps");
        let proc = api
            .exec("web-0", ["sleep", "30"], &AttachParams::default())
            .await
            .expect("exec");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let pid = loop {
            if let Some(pid) = kd.execs().first().and_then(|e| e.pid) {
                break pid;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "process never started"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        drop(proc);
        assert!(
            kd.wait_idle(Duration::from_secs(5)).await,
            "session did not end"
        );
        let rec = &kd.execs()[0];
        assert!(rec.killed);
        assert_eq!(rec.exit_code, None);
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} still alive"
        );
    }

    #[tokio::test]
    async fn kube_double_unknown_command_reports_failure() {
        let kd = start(pods()).await;
        let api: Api<Pod> = Api::namespaced(kd.client(), "apps");
        let (_, _, status) = run(
            &api,
            "web-0",
            &["/nonexistent/kube-double-command"],
            &AttachParams::default(),
        )
        .await;
        assert_eq!(status.status.as_deref(), Some("Failure"));
        assert!(
            status
                .message
                .unwrap_or_default()
                .contains("kube-double-command")
        );
    }

    /// The wire format, seen by a bare WebSocket client offering only v4.
    #[tokio::test]
    async fn kube_double_raw_v4_frames() {
        use futures::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

        let kd = start(pods()).await;
        let url = format!(
            "{}/api/v1/namespaces/apps/pods/web-0/exec?command=sh&command=-c&command=cat%3B+exit+4&stdin=true&stdout=true&stderr=true",
            kd.url.replace("http://", "ws://")
        );
        let mut req = url.into_client_request().expect("request");
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", kd.token).parse().expect("header"),
        );
        req.headers_mut()
            .insert("sec-websocket-protocol", V4.parse().expect("header"));
        let (mut ws, resp) = tokio_tungstenite::connect_async(req)
            .await
            .expect("connect");
        assert_eq!(
            resp.headers()
                .get("sec-websocket-protocol")
                .map(|v| v.as_bytes()),
            Some(V4.as_bytes())
        );
        let first = ws.next().await.expect("frame").expect("ok");
        assert_eq!(first, tungstenite::Message::binary(vec![STDOUT]));
        ws.send(tungstenite::Message::binary(b"\x00hi\n".to_vec()))
            .await
            .expect("send");
        let echo = ws.next().await.expect("frame").expect("ok");
        assert_eq!(echo, tungstenite::Message::binary(b"\x01hi\n".to_vec()));
        // v4 has no close signal: the only way to end stdin is to close the socket, which
        // kills the process, so send the v5 signal and check that it is ignored under v4.
        ws.send(tungstenite::Message::binary(vec![CLOSE, STDIN]))
            .await
            .expect("send");
        ws.send(tungstenite::Message::binary(vec![RESIZE]))
            .await
            .expect("send");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!kd.execs()[0].stdin_closed);
        assert_eq!(kd.execs()[0].protocol, V4);
        ws.close(None).await.expect("close");
        assert!(kd.wait_idle(Duration::from_secs(5)).await);
        assert!(kd.execs()[0].killed);

        // A v5 session ending normally: status on channel 3, then a 1000 close.
        let url = format!(
            "{}/api/v1/namespaces/apps/pods/web-0/exec?command=sh&command=-c&command=exit+4&stdout=true",
            kd.url.replace("http://", "ws://")
        );
        let mut req = url.into_client_request().expect("request");
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", kd.token).parse().expect("header"),
        );
        req.headers_mut().insert(
            "sec-websocket-protocol",
            format!("{V5}, {V4}").parse().expect("header"),
        );
        let (mut ws, resp) = tokio_tungstenite::connect_async(req)
            .await
            .expect("connect");
        assert_eq!(
            resp.headers()
                .get("sec-websocket-protocol")
                .map(|v| v.as_bytes()),
            Some(V5.as_bytes())
        );
        let mut frames = Vec::new();
        while let Some(Ok(m)) = ws.next().await {
            frames.push(m);
        }
        assert_eq!(frames.len(), 3, "{frames:?}");
        assert_eq!(frames[0], tungstenite::Message::binary(vec![STDOUT]));
        let tungstenite::Message::Binary(status) = &frames[1] else {
            panic!("{frames:?}")
        };
        assert_eq!(status[0], ERROR);
        let status: Value = serde_json::from_slice(&status[1..]).expect("json");
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "4");
        let tungstenite::Message::Close(Some(close)) = &frames[2] else {
            panic!("{frames:?}")
        };
        assert_eq!(u16::from(close.code), 1000);

        // No subprotocol offered: refused before the upgrade, like the API server.
        let url = format!(
            "{}/api/v1/namespaces/apps/pods/web-0/exec?command=true&stdout=true",
            kd.url.replace("http://", "ws://")
        );
        let mut req = url.into_client_request().expect("request");
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", kd.token).parse().expect("header"),
        );
        match tokio_tungstenite::connect_async(req).await {
            Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 400),
            other => panic!("expected a 400, got {other:?}"),
        }
    }
}
