//! Two Airlock OS processes behind one PostgreSQL store, as behind a load balancer:
//! consecutive calls of one agent or one human land on different instances and everything
//! still works, because nothing an instance holds in memory is needed by another.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use airlock::config::PrincipalKind;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;
use crate::ssh::Sshd;

const BIN: &str = env!("CARGO_BIN_EXE_airlock");

struct Instance {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Instance {
    /// `airlock serve` as its own process, with `config` and `data`, on a free loopback port.
    async fn spawn(config: &Path, data: &Path) -> Instance {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let child = Command::new(BIN)
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data)
            .arg("serve")
            .env("AIRLOCK_LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(data.join("airlock.log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .unwrap();
        let mut me = Instance {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!("instance exited early: {status}");
            }
            if let Ok(r) = me.http.get(format!("{}/readyz", me.base)).send().await
                && r.status() == 200
            {
                return me;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "not ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        token: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, token, path, None).await
    }

    async fn post(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, token, path, Some(body))
            .await
    }
}

/// An instance's log, for failure messages.
fn logs(data: &Path) -> String {
    std::fs::read_to_string(data.join("airlock.log")).unwrap_or_default()
}

#[tokio::test]
async fn two_processes_on_one_postgres_store_serve_any_call_of_a_flow() {
    let store = PgDb::create().await;
    let target = PgDb::create().await;
    target
        .owner()
        .await
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, v text);
             INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 10) g;",
        )
        .await
        .unwrap();
    let sshd = Sshd::start(None);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("airlock.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
listen = "127.0.0.1:0"
drain_timeout_ms = 2000

[store]
url = "postgres://postgres@127.0.0.1:5432/{store}"
{DEV_ISSUER}
[[connections]]
name = "pg"
kind = "postgres"
url = "{target}"

{host}
[[rules]]
id = "read"
action = "allow"
connections = ["pg"]
principals = ["group:agents"]
match = {{ statements = ["select"], function_classes = ["sleep"] }}

[[rules]]
id = "writes-need-review"
action = "review"
connections = ["pg"]
principals = ["group:agents"]
match = {{ statements = ["update"] }}
review = {{ approvers = ["dba"] }}

[[rules]]
id = "host"
action = "allow"
connections = ["host"]
principals = ["group:agents"]

[[rules]]
id = "ops-shell"
action = "allow"
connections = ["host"]
principals = ["group:ops"]
match = {{ shell = true }}
"#,
            store = store.name,
            target = target.url(),
            host = sshd.connection_toml("host"),
        ),
    )
    .unwrap();
    // Both instances trust the same issuer key, as a real deployment trusts the same IdP.
    let (a_data, b_data) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a_data).unwrap();
    std::fs::create_dir_all(&b_data).unwrap();
    let agent = mint(&a_data, "agent-1", &["agents"], PrincipalKind::Agent, None);
    std::fs::copy(
        a_data.join(airlock::identity::dev::KEY_FILE),
        b_data.join(airlock::identity::dev::KEY_FILE),
    )
    .unwrap();
    let a = Instance::spawn(&config, &a_data).await;
    let b = Instance::spawn(&config, &b_data).await;
    let alice = mint(&a_data, "alice", &["dba"], PrincipalKind::Human, None);
    let auditor = mint(
        &a_data,
        "auditor",
        &["auditors"],
        PrincipalKind::Human,
        None,
    );
    let ops = mint(&a_data, "ops-1", &["ops"], PrincipalKind::Agent, None);

    // An agent waits on A; a human approves on B; A's response carries the result.
    let update = json!({"sql": "UPDATE t SET v = 'changed' WHERE id <= 3"});
    let waiting = {
        let (http, base, agent, update) = (
            a.http.clone(),
            a.base.clone(),
            agent.clone(),
            update.clone(),
        );
        tokio::spawn(async move {
            let r = http
                .post(format!("{base}/v1/connections/pg/query?wait=30"))
                .bearer_auth(agent)
                .header("idempotency-key", "multi-instance-1")
                .json(&update)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        })
    };
    let mut pending = None;
    for _ in 0..100 {
        let (_, list) = b.get(&alice, "/v1/reviews?status=pending").await;
        pending = list["reviews"][0]["id"].as_str().map(str::to_string);
        if pending.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pending = pending.expect("the review filed on A is visible on B");
    let (s, body) = b
        .post(&alice, &format!("/v1/reviews/{pending}/approve"), json!({}))
        .await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = waiting.await.unwrap();
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["affected_rows"], 3, "{body}");

    // A recording written by A downloads from B.
    let (s, ran) = a
        .post(
            &agent,
            "/v1/connections/host/exec",
            json!({"argv": ["echo", "recorded on A"]}),
        )
        .await;
    assert_eq!(s, 200, "{ran}\n{}", logs(&a_data));
    let session = ran["session_id"].as_str().unwrap();
    let cast = b
        .http
        .get(format!("{}/v1/sessions/{session}/recording", b.base))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(cast.contains("recorded on A"), "{cast}");

    // A ticket issued by A opens a shell on B.
    let (s, ticket) = a
        .post(&ops, "/v1/connections/host/shell-tickets", json!({}))
        .await;
    assert_eq!(s, 200, "{ticket}");
    let url = format!(
        "{}/v1/connections/host/shell?ticket={}",
        b.base.replace("http://", "ws://"),
        ticket["ticket"].as_str().unwrap()
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("the ticket from A is accepted by B");
    ws.send(Message::Binary(
        b"echo shell-on-b-$((6*7))\n".to_vec().into(),
    ))
    .await
    .unwrap();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("shell-on-b-42") {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Binary(bytes)))) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    assert!(seen.contains("shell-on-b-42"), "{seen}");
    let _ = ws.close(None).await;
    // A ticket is single-use across instances: redeeming it again on A fails.
    let again = format!(
        "{}/v1/connections/host/shell?ticket={}",
        a.base.replace("http://", "ws://"),
        ticket["ticket"].as_str().unwrap()
    );
    assert!(tokio_tungstenite::connect_async(again).await.is_err());

    // A job started on A is read, fetched and cancelled through B: its state and result are
    // in the store, and the cancel travels through it to A, which stops it on the target.
    let start_job = |sql: &'static str| {
        let (http, base, agent) = (a.http.clone(), a.base.clone(), agent.clone());
        async move {
            let resp = http
                .post(format!("{base}/v1/connections/pg/query"))
                .bearer_auth(agent)
                .header("prefer", "respond-async")
                .json(&json!({ "sql": sql }))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 202);
            let job: Value = resp.json().await.unwrap();
            job["execution_id"].as_str().unwrap().to_string()
        }
    };
    let done = start_job("SELECT pg_sleep(0.5), 't-job-done'").await;
    let (_, view) = b
        .get(&agent, &format!("/v1/executions/{done}?wait=20"))
        .await;
    assert_eq!(view["status"], "done", "{view}\n{}", logs(&b_data));
    let (s, result) = b
        .get(&agent, &format!("/v1/executions/{done}/result"))
        .await;
    assert_eq!(
        (s, &result["rows"][0][1]),
        (200, &json!("t-job-done")),
        "{result}"
    );
    let long = start_job("SELECT pg_sleep(30), 't-job-cancel'").await;
    let sleeping = || async {
        target
            .admin()
            .await
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%t-job-cancel%' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    assert!(eventually(Duration::from_secs(10), || async { sleeping().await == 1 }).await);
    let resp = b
        .http
        .post(format!("{}/v1/executions/{long}/cancel", b.base))
        .bearer_auth(&agent)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let (_, view) = b
        .get(&agent, &format!("/v1/executions/{long}?wait=20"))
        .await;
    assert_eq!(view["status"], "cancelled", "{view}\n{}", logs(&a_data));
    assert!(eventually(Duration::from_secs(10), || async { sleeping().await == 0 }).await);

    // Audit pages read the same on both instances (once every end is written).
    let mut same = false;
    for _ in 0..50 {
        let (sa, pa) = a.get(&auditor, "/v1/audit?limit=500").await;
        let (sb, pb) = b.get(&auditor, "/v1/audit?limit=500").await;
        assert_eq!((sa, sb), (200, 200));
        let ends = pa["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["phase"] == "end")
            .count();
        let begins = pa["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["phase"] == "begin")
            .count();
        if pa == pb && ends == begins {
            same = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(same, "audit pages differ between instances");
}

/// A job outlives its caller, not its process: killed with the instance (SIGKILL), it is
/// `interrupted` once the instance starts again, on record and in its execution's state.
#[tokio::test]
async fn a_job_of_a_killed_instance_is_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("airlock.toml");
    let embedded = airlock::config::EMBEDDED_DEFAULT.replace("listen = \"127.0.0.1:8080\"", "");
    std::fs::write(&config, embedded).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let agent = mint(&data, "agent-1", &["agents"], PrincipalKind::Agent, None);
    let first = Instance::spawn(&config, &data).await;
    let resp = first
        .http
        .post(format!("{}/v1/connections/demo/query", first.base))
        .bearer_auth(&agent)
        .header("prefer", "respond-async")
        .json(&json!({"sql": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 2000000000) SELECT count(*) FROM c"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let job: Value = resp.json().await.unwrap();
    let id = job["execution_id"].as_str().unwrap().to_string();
    let (_, view) = first.get(&agent, &format!("/v1/executions/{id}")).await;
    assert_eq!(view["status"], "running", "{view}");
    drop(first); // SIGKILL: no drain, no end written.

    let second = Instance::spawn(&config, &data).await;
    let (s, view) = second.get(&agent, &format!("/v1/executions/{id}")).await;
    assert_eq!(
        (s, view["status"].as_str()),
        (200, Some("interrupted")),
        "{view}\n{}",
        logs(&data)
    );
    let (s, b) = second
        .get(&agent, &format!("/v1/executions/{id}/result"))
        .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (410, Some("result_not_kept")),
        "{b}"
    );
}
