//! Graceful shutdown of the real binary under load: SIGTERM while slow JSON queries, a
//! query that outlives the drain, a slowly read NDJSON stream, a stream whose client stopped
//! reading and an interactive shell are live. What a deployment relies on: new connections
//! are refused at once (not queued unanswered), requests drain or are cancelled on their
//! targets, streams end with a trailer, shells get a close frame, every audit `begin` has
//! its `end`, and the process exits 0 within the drain timeout (plus the close grace) even
//! with a client that reads nothing.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::*;
use crate::ssh::Sshd;

const BIN: &str = env!("CARGO_BIN_EXE_airlock");
/// `server.drain_timeout_ms` of the test config.
const DRAIN: Duration = Duration::from_millis(3000);
/// What the process may take past the drain and the close grace: flushing audit ends and
/// exiting.
const EXIT_MARGIN: Duration = Duration::from_secs(2);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

/// The server process; killed if the test fails before it exits.
struct Server {
    child: Child,
    log: std::path::PathBuf,
}

impl Server {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn config(db: &PgDb, sshd: &Sshd) -> String {
    format!(
        r#"[server]
drain_timeout_ms = {drain}
{DEV_ISSUER}
[[connections]]
name = "pg"
kind = "postgres"
url = "{url}"
[connections.limits]
# One agent runs five statements at once: its share of the pool must hold them.
pool_size = 12
max_rows_ceiling = 10000000
max_bytes_ceiling = 4000000000

{host}
[[rules]]
id = "agents-pg"
action = "allow"
connections = ["pg"]
principals = ["group:agents"]
match = {{ function_classes = ["sleep"] }}

[[rules]]
id = "ops-shell"
action = "allow"
connections = ["host"]
principals = ["group:ops"]
match = {{ shell = true }}
"#,
        drain = DRAIN.as_millis(),
        url = db.url(),
        host = sshd.connection_toml("host"),
    )
}

/// A token from the binary's own `token` subcommand.
fn token(config: &Path, data: &Path, sub: &str, groups: &str, kind: &str) -> String {
    let out = Command::new(BIN)
        .arg("token")
        .args(["--sub", sub, "--groups", groups, "--kind", kind])
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Active statements of the test database carrying `tag`, other than the asking one.
async fn running(db: &PgDb, tag: &str) -> Vec<String> {
    pg_admin()
        .await
        .query(
            "SELECT query FROM pg_stat_activity WHERE datname = $1 AND state = 'active' \
             AND pid <> pg_backend_pid() AND query LIKE $2",
            &[&db.name, &format!("%{tag}%")],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads shell frames until `until` holds, a close frame arrives, or `limit` passes. Returns
/// the terminal text, the control messages (a close frame as `{"type":"closed"}`).
async fn read_shell(
    ws: &mut Ws,
    limit: Duration,
    until: impl Fn(&str) -> bool,
) -> (String, Vec<Value>) {
    let mut out = String::new();
    let mut controls = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while !until(&out) {
        let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => {
                controls.push(json!({"type": "ws_error", "error": e.to_string()}));
                break;
            }
            _ => break,
        };
        match msg {
            Message::Binary(b) => out.push_str(&String::from_utf8_lossy(&b)),
            Message::Text(t) => {
                controls.push(serde_json::from_str(t.as_str()).unwrap_or(Value::Null))
            }
            Message::Close(frame) => {
                controls.push(json!({"type": "closed", "code": frame.map(|f| u16::from(f.code))}));
                break;
            }
            _ => {}
        }
    }
    (out, controls)
}

/// How an NDJSON stream ended, as the client saw it.
#[derive(Debug)]
struct StreamEnd {
    lines: u64,
    last: Option<Value>,
    /// The body ended without a transport error (chunked terminator, then close).
    clean: bool,
    error: Option<String>,
}

/// Reads an NDJSON body slowly (a pause after each chunk) until `fast` is set, reporting
/// the header line as soon as it arrives.
async fn read_slowly(
    resp: reqwest::Response,
    header: tokio::sync::oneshot::Sender<Value>,
    fast: Arc<AtomicBool>,
) -> StreamEnd {
    let mut header = Some(header);
    let mut body = resp.bytes_stream();
    let mut buf = Vec::new();
    let mut end = StreamEnd {
        lines: 0,
        last: None,
        clean: false,
        error: None,
    };
    loop {
        match body.next().await {
            Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
            Some(Err(e)) => {
                end.error = Some(format!("{e:?}"));
                break;
            }
            None => {
                end.clean = true;
                break;
            }
        }
        let mut last_line = None;
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            end.lines += 1;
            if let Some(tx) = header.take() {
                let _ = tx.send(serde_json::from_slice(&line).unwrap_or(Value::Null));
            }
            last_line = Some(line);
        }
        if let Some(line) = last_line {
            end.last = Some(serde_json::from_slice(&line).unwrap_or(Value::Null));
        }
        if !fast.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    end
}

#[tokio::test]
async fn sigterm_under_load_drains_cancels_closes_and_audits() {
    let db = PgDb::create().await;
    let sshd = Sshd::start(None);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config_file = dir.path().join("airlock.toml");
    std::fs::write(&config_file, config(&db, &sshd)).unwrap();
    let log = dir.path().join("airlock.log");
    let port = free_port();
    let child = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(&config_file)
        .arg("--data-dir")
        .arg(&data)
        .env("AIRLOCK_LISTEN", format!("127.0.0.1:{port}"))
        .env_remove("AIRLOCK_CONFIG")
        .env_remove("AIRLOCK_DATA_DIR")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut server = Server { child, log };
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("airlock exited early: {status}\n{}", server.log());
        }
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no /readyz\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let agent = token(&config_file, &data, "agent-1", "agents", "agent");
    let ops = token(&config_file, &data, "olga", "ops", "human");

    // Load: a query that outlives the drain, a slowly read stream, a stream nobody reads, a
    // shell, then slow queries that fit in the drain.
    let query = |sql: String| {
        let (http, base, agent) = (http.clone(), base.clone(), agent.clone());
        tokio::spawn(async move {
            let resp = http
                .post(format!("{base}/v1/connections/pg/query"))
                .bearer_auth(agent)
                .json(&json!({ "sql": sql }))
                .send()
                .await
                .map_err(|e| format!("{e:?}"))?;
            let status = resp.status().as_u16();
            let body = resp.json::<Value>().await.map_err(|e| format!("{e:?}"))?;
            Ok::<_, String>((status, body))
        })
    };
    let long = query("SELECT pg_sleep(60), 1 AS t_long".into());
    // Two streams of 2 GB: one read slowly (until shortly before the drain ends, so that it
    // can take its trailer), one never read at all.
    let ndjson = |tag: &str| {
        json!({
            "sql": format!("SELECT g, repeat('x', 1000) AS {tag} FROM generate_series(1, 2000000) g"),
            "max_bytes": 4_000_000_000u64
        })
        .to_string()
    };
    let stream = http
        .post(format!("{base}/v1/connections/pg/query"))
        .bearer_auth(&agent)
        .header("accept", "application/x-ndjson")
        .header("content-type", "application/json")
        .body(ndjson("t_stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let (header_tx, header_rx) = tokio::sync::oneshot::channel();
    let fast = Arc::new(AtomicBool::new(false));
    let stream = tokio::spawn(read_slowly(stream, header_tx, fast.clone()));
    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let body = ndjson("t_stalled");
    let request = format!(
        "POST /v1/connections/pg/query HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n\
         authorization: Bearer {agent}\r\naccept: application/x-ndjson\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut stalled, request.as_bytes())
        .await
        .unwrap();
    let header = tokio::time::timeout(Duration::from_secs(5), header_rx)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(header["type"], "header", "{header}");

    let mut req = format!("ws://127.0.0.1:{port}/v1/connections/host/shell")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {ops}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::Binary(b"echo SHELL-$((40+2))\n".to_vec().into()))
        .await
        .unwrap();
    let (out, controls) =
        read_shell(&mut ws, Duration::from_secs(10), |o| o.contains("SHELL-42")).await;
    assert!(out.contains("SHELL-42"), "{out} {controls:?}");
    // Last, so that they are surely still running when SIGTERM comes.
    let slow: Vec<_> = (0..3)
        .map(|i| query(format!("SELECT pg_sleep(1.5), {i} AS t_drain")))
        .collect();

    assert!(
        eventually(Duration::from_secs(5), || async {
            running(&db, "t_drain").await.len() == 3
                && running(&db, "t_long").await.len() == 1
                && running(&db, "t_stalled").await.len() == 1
        })
        .await,
        "the slow queries never ran: {:?}",
        running(&db, "t_").await
    );

    // SIGTERM.
    let pid = server.child.id().to_string();
    let term = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    tokio::spawn(async move {
        tokio::time::sleep(DRAIN - Duration::from_secs(1)).await;
        fast.store(true, Ordering::SeqCst);
    });

    // Readiness turns at once: a fresh connection is answered 503 or refused, never left
    // hanging (a load balancer's probe and new requests must be sent elsewhere).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let probe = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    match probe.get(format!("{base}/readyz")).send().await {
        Ok(r) => assert_eq!(r.status(), 503, "/readyz after SIGTERM"),
        Err(e) => assert!(
            e.is_connect(),
            "/readyz after SIGTERM neither answered nor refused: {e:?}"
        ),
    }
    assert!(
        !running(&db, "t_drain").await.is_empty(),
        "the probe must run while the slow queries are still in flight"
    );

    // The short queries drain with their result.
    for (i, q) in slow.into_iter().enumerate() {
        let (status, body) = q.await.unwrap().unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["rows"][0][1], json!(i), "{body}");
    }
    // The long one is cancelled once the drain is over, not before, and the client hears why.
    let long = long.await.unwrap();
    assert!(
        term.elapsed() >= DRAIN - Duration::from_millis(200),
        "cancelled before the drain ended: {:?}",
        term.elapsed()
    );
    match &long {
        Ok((status, body)) => {
            assert_eq!(*status, 503, "{body}");
            assert!(
                ["cancelled", "shutting_down"].contains(&body["code"].as_str().unwrap_or("")),
                "{body}"
            );
        }
        Err(e) => panic!("the long query's client got no answer: {e}"),
    }

    // The shell is told why and gets a close frame.
    let (_, controls) = read_shell(&mut ws, Duration::from_secs(5), |_| false).await;
    assert!(
        controls
            .iter()
            .any(|c| c["type"] == "error" && c["problem"]["code"] == "shutting_down"),
        "{controls:?}"
    );
    assert!(
        controls.iter().any(|c| c["type"] == "closed"),
        "{controls:?}"
    );

    // The process exits 0 within the drain plus a margin, although a client stopped
    // reading its stream: that connection is closed, not waited for.
    let limit = DRAIN + airlock::server::CLOSE_GRACE + EXIT_MARGIN;
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            term.elapsed() < limit,
            "still running {:?} after SIGTERM\n{}",
            term.elapsed(),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let exited = term.elapsed();
    assert_eq!(status.code(), Some(0), "{status}\n{}", server.log());

    // The stream ends with a trailer, not a hang.
    let end = tokio::time::timeout(Duration::from_secs(10), stream)
        .await
        .expect("the NDJSON stream hangs after the process exited")
        .unwrap();
    let last = end.last.clone().unwrap_or_default();
    assert!(
        end.clean && last["type"] == "error",
        "the stream ended without a trailer: {end:?}"
    );
    assert!(
        ["cancelled", "shutting_down"].contains(&last["problem"]["code"].as_str().unwrap_or("")),
        "{last}"
    );
    assert!(end.lines > 2, "{end:?}");

    // Nothing of the test database still runs on the server.
    assert!(
        eventually(Duration::from_secs(2), || async {
            running(&db, "t_").await.is_empty()
        })
        .await,
        "still running after the process exited: {:?}",
        running(&db, "t_").await
    );

    // Every audit begin has its end.
    let store = rusqlite::Connection::open(data.join("airlock.db")).unwrap();
    let begins: i64 = store
        .query_row(
            "SELECT count(*) FROM audit_events WHERE phase = 'begin'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(begins, 7, "three drained, one long, two streams, one shell");
    let mut unmatched = store
        .prepare(
            "SELECT b.execution_id FROM audit_events b WHERE b.phase = 'begin' AND NOT EXISTS \
             (SELECT 1 FROM audit_events e WHERE e.phase = 'end' AND e.execution_id = b.execution_id)",
        )
        .unwrap();
    let unmatched: Vec<String> = unmatched
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        unmatched.is_empty(),
        "begins without an end: {unmatched:?}\n{}",
        server.log()
    );
    let outcomes: Vec<(String, i64)> = store
        .prepare(
            "SELECT outcome, count(*) FROM audit_events WHERE phase = 'end' \
             GROUP BY outcome ORDER BY outcome",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    // Three drained queries; the long query, the two streams and the shell cancelled.
    assert_eq!(
        outcomes,
        [("cancelled".to_string(), 4), ("ok".to_string(), 3)],
        "exited after {exited:?}"
    );
    let log = server.log();
    assert!(!log.contains("panicked"), "{log}");
    drop(stalled);
}
