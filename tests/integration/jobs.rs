//! Long-running work as jobs, against the real PostgreSQL: `Prefer: respond-async`, the
//! sync budget, the job's state and kept result, cancel reaching the server, and who may
//! see a job.

use std::time::Duration;

use airlock::config::PrincipalKind;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::common::*;

fn config(db: &PgDb, jobs: &str) -> String {
    format!(
        r#"{DEV_ISSUER}
[jobs]
{jobs}

[[connections]]
name = "pg"
kind = "postgres"
url = "{url}"

[[rules]]
id = "agents-pg"
action = "allow"
connections = ["pg"]
principals = ["group:agents"]
match = {{ function_classes = ["sleep"] }}

[[masking]]
connections = ["pg"]
columns = [{{ column = "email", strategy = "redact" }}]
"#,
        url = db.url()
    )
}

async fn send(a: &Airlock, token: &str, sql: &str, respond_async: bool) -> (u16, HeaderMap, Value) {
    let mut req = a
        .http
        .post(format!("{}/v1/connections/pg/query", a.base))
        .bearer_auth(token)
        .json(&json!({ "sql": sql }));
    if respond_async {
        req = req.header("prefer", "respond-async");
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    (status, headers, resp.json().await.unwrap_or(Value::Null))
}

async fn post(a: &Airlock, token: &str, path: &str) -> (u16, Value) {
    let resp = a
        .http
        .post(format!("{}{path}", a.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn sleeping(db: &PgDb, needle: &str) -> i64 {
    db.admin()
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1",
            &[&format!("%{needle}%")],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn an_async_request_is_a_job_with_a_kept_masked_result() {
    let db = PgDb::create().await;
    db.owner()
        .await
        .batch_execute("CREATE TABLE people (id int, email text); INSERT INTO people VALUES (1, 'ann@example.com')")
        .await
        .unwrap();
    let a = Airlock::start(&config(&db, "")).await;
    let agent = a.agent();
    let (s, headers, job) = send(
        &a,
        &agent,
        "SELECT pg_sleep(1), id, email, 't-job' FROM people",
        true,
    )
    .await;
    assert_eq!(s, 202, "{job}");
    assert_eq!(job["status"], "running");
    let id = job["execution_id"].as_str().unwrap().to_string();
    assert_eq!(
        headers.get("location").and_then(|v| v.to_str().ok()),
        Some(format!("/v1/executions/{id}").as_str())
    );
    assert!(
        job["next_actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["rel"] == "cancel")
    );

    // While it runs: `running`, and the result is not there yet.
    let (s, b) = a.get(&agent, &format!("/v1/executions/{id}")).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("running")), "{b}");
    let (s, b) = a.get(&agent, &format!("/v1/executions/{id}/result")).await;
    assert_eq!((s, b["code"].as_str()), (409, Some("still_running")), "{b}");

    // Someone else sees nothing, not even that it exists.
    let other = a.token("agent-2", &["agents"], PrincipalKind::Agent);
    let (s, _) = a.get(&other, &format!("/v1/executions/{id}")).await;
    assert_eq!(s, 404);
    let (s, _) = a.get(&other, &format!("/v1/executions/{id}/result")).await;
    assert_eq!(s, 404);

    // A long poll answers when it ends; the result is masked as it would have been.
    let (s, b) = a.get(&agent, &format!("/v1/executions/{id}?wait=20")).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("done")), "{b}");
    assert!(
        b["next_actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["rel"] == "result")
    );
    let (s, b) = a.get(&agent, &format!("/v1/executions/{id}/result")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["execution_id"], id.as_str());
    assert_eq!(b["rows"][0][1], 1);
    assert_eq!(b["rows"][0][2], "[REDACTED]", "{b}");
    assert_eq!(b["masked"]["columns"]["email"], 1, "{b}");
    // One execution, one begin and one end.
    let events = a.audit_of(&id).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1]["outcome"], "ok");

    // A failure is a failed job whose result is the problem.
    let (s, _, job) = send(&a, &agent, "SELECT pg_sleep(0.2), nope FROM people", true).await;
    if s == 202 {
        let id = job["execution_id"].as_str().unwrap();
        let (_, b) = a.get(&agent, &format!("/v1/executions/{id}?wait=20")).await;
        assert_eq!(b["status"], "failed", "{b}");
        let (s, b) = a.get(&agent, &format!("/v1/executions/{id}/result")).await;
        assert_eq!(
            (s, b["code"].as_str()),
            (400, Some("database_error")),
            "{b}"
        );
    } else {
        // The error came before the rows started: answered at once, no job.
        assert_eq!(s, 400, "{job}");
    }
    a.stop().await;
}

#[tokio::test]
async fn a_request_past_the_sync_budget_becomes_a_job_and_cancel_reaches_the_server() {
    let db = PgDb::create().await;
    let a = Airlock::start(&config(&db, "sync_budget_ms = 300")).await;
    let agent = a.agent();
    // Quick requests answer as usual.
    let (s, _, b) = send(&a, &agent, "SELECT 1 AS one", false).await;
    assert_eq!((s, &b["rows"]), (200, &json!([[1]])), "{b}");
    // A slow one answers 202 within the budget and goes on.
    let started = std::time::Instant::now();
    let (s, _, job) = send(&a, &agent, "SELECT pg_sleep(1.5), 't-budget'", false).await;
    assert_eq!(s, 202, "{job}");
    assert!(started.elapsed() < Duration::from_millis(1400));
    let id = job["execution_id"].as_str().unwrap().to_string();
    let (_, b) = a.get(&agent, &format!("/v1/executions/{id}?wait=20")).await;
    assert_eq!(b["status"], "done", "{b}");
    let (s, b) = a.get(&agent, &format!("/v1/executions/{id}/result")).await;
    assert_eq!(
        (s, b["rows"][0][1].as_str()),
        (200, Some("t-budget")),
        "{b}"
    );

    // Cancel: the statement stops on the server, and the job says so.
    let (s, _, job) = send(&a, &agent, "SELECT pg_sleep(30), 't-cancel'", false).await;
    assert_eq!(s, 202, "{job}");
    let id = job["execution_id"].as_str().unwrap().to_string();
    assert!(
        eventually(Duration::from_secs(5), || async {
            sleeping(&db, "t-cancel").await == 1
        })
        .await
    );
    let other = a.token("agent-2", &["agents"], PrincipalKind::Agent);
    let (s, _) = post(&a, &other, &format!("/v1/executions/{id}/cancel")).await;
    assert_eq!(s, 404, "only the requester cancels");
    let (s, b) = post(&a, &agent, &format!("/v1/executions/{id}/cancel")).await;
    assert_eq!(s, 202, "{b}");
    let (_, b) = a.get(&agent, &format!("/v1/executions/{id}?wait=20")).await;
    assert_eq!(b["status"], "cancelled", "{b}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            sleeping(&db, "t-cancel").await == 0
        })
        .await
    );
    let (s, b) = post(&a, &agent, &format!("/v1/executions/{id}/cancel")).await;
    assert_eq!((s, b["code"].as_str()), (409, Some("already_ran")), "{b}");
    let events = a.audit_of(&id).await;
    assert!(
        events.iter().any(|e| e["operation"] == "job.cancel"),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["phase"] == "end" && e["outcome"] == "cancelled"),
        "{events:?}"
    );
    a.stop().await;
}

/// A job belongs to exactly the principal that started it (found by red-teaming: the same
/// subject with other groups, kind or chain read another's unmasked result), and an
/// auditor sees a failed job's code, not its detail.
#[tokio::test]
async fn a_job_is_its_principals_alone() {
    let db = PgDb::create().await;
    db.owner()
        .await
        .batch_execute("CREATE TABLE people (id int, email text); INSERT INTO people VALUES (1, 'ann@example.com')")
        .await
        .unwrap();
    let config = config(&db, "").replace(
        "columns = [{ column = \"email\", strategy = \"redact\" }]",
        "columns = [{ column = \"email\", strategy = \"redact\" }]\nexempt_groups = [\"dba\"]",
    ) + "\n[[rules]]\nid = \"dba\"\naction = \"allow\"\nconnections = [\"pg\"]\nprincipals = [\"group:dba\"]\nmatch = { function_classes = [\"sleep\"] }\n[audit]\nreaders = [\"group:auditors\"]\n";
    let a = Airlock::start(&config).await;
    let dba = a.token("alice", &["dba"], PrincipalKind::Human);
    let (s, _, job) = send(&a, &dba, "SELECT pg_sleep(0.2), email FROM people", true).await;
    assert_eq!(s, 202, "{job}");
    let id = job["execution_id"].as_str().unwrap().to_string();
    let (_, b) = a.get(&dba, &format!("/v1/executions/{id}?wait=20")).await;
    assert_eq!(b["status"], "done", "{b}");
    let (s, b) = a.get(&dba, &format!("/v1/executions/{id}/result")).await;
    assert_eq!(
        (s, &b["rows"][0][1]),
        (200, &json!("ann@example.com")),
        "{b}"
    );
    // Same issuer and subject, other groups (not exempt): someone else.
    for other in [
        a.token("alice", &["agents"], PrincipalKind::Human),
        a.token("alice", &["dba"], PrincipalKind::Agent),
    ] {
        let (s, b) = a.get(&other, &format!("/v1/executions/{id}/result")).await;
        assert_eq!(s, 404, "{b}");
    }
    // A failed job: its requester reads the database's message, an auditor only the code.
    let (_, _, job) = send(
        &a,
        &dba,
        "SELECT pg_sleep(0.2), (email || ' x')::int FROM people",
        true,
    )
    .await;
    let id = job["execution_id"].as_str().unwrap().to_string();
    let (_, b) = a.get(&dba, &format!("/v1/executions/{id}?wait=20")).await;
    assert_eq!(b["status"], "failed", "{b}");
    assert!(b["problem"].to_string().contains("ann@example.com"), "{b}");
    let auditor = a.token("carol", &["auditors"], PrincipalKind::Human);
    let (s, b) = a.get(&auditor, &format!("/v1/executions/{id}")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["problem"]["code"], "database_error", "{b}");
    assert!(!b.to_string().contains("ann@example.com"), "{b}");
    a.stop().await;
}
