//! The embedded default: SQLite store, dev issuer, demo database, rules, audit.

use std::time::Duration;

use airlock::config::PrincipalKind;
use serde_json::json;

use crate::common::*;

async fn demo() -> Airlock {
    // The embedded default config, on a free port.
    let embedded = airlock::config::EMBEDDED_DEFAULT.replace("listen = \"127.0.0.1:8080\"", "");
    let embedded = embedded.replace("[server]\n", "");
    Airlock::start(&embedded).await
}

#[tokio::test]
async fn agent_reads_the_demo_and_every_request_is_audited() {
    let a = demo().await;
    let token = a.agent();
    let (status, body) = a
        .query(
            &token,
            "demo",
            json!({"sql": "SELECT id, name, email FROM customers ORDER BY id LIMIT 3"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["row_count"], 3);
    assert_eq!(body["columns"][0]["name"], "id");
    assert_eq!(body["rows"][0][0], "1", "64-bit integers are strings");
    assert_eq!(body["truncated"], false);
    assert_eq!(body["rule"], "agents-read-demo");
    let events = a.audit_of(body["execution_id"].as_str().unwrap()).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["phase"], "begin");
    assert_eq!(events[0]["decision"], "allow");
    assert_eq!(events[0]["principal"]["subject"], "agent-1");
    assert_eq!(events[1]["outcome"], "ok");
    assert_eq!(events[1]["row_count"], 3);
    a.stop().await;
}

#[tokio::test]
async fn demo_rules_keep_agents_to_reads() {
    let a = demo().await;
    let token = a.agent();
    let (status, body) = a
        .query(&token, "demo", json!({"sql": "DELETE FROM customers"}))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["rule"], "deny-unbounded-write");
    assert_eq!(body["code"], "policy_denied");
    let (status, body) = a
        .query(
            &token,
            "demo",
            json!({"sql": "UPDATE customers SET city = 'Paris' WHERE id = 1"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["rule"], "demo-writes-need-review");
    assert_eq!(body["status"], "pending_review");
    let (status, body) = a
        .query(&token, "demo", json!({"sql": "DROP TABLE customers"}))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["rule"], "deny-ddl");
    let events = a.audit_of(body["execution_id"].as_str().unwrap()).await;
    assert_eq!(events[0]["decision"], "deny");
    assert_eq!(events[0]["rule"], "deny-ddl");
    assert_eq!(events[1]["outcome"], "denied");
    // A write hidden in a CTE is still a write: held for review, not run.
    let (status, body) = a
        .query(&token, "demo", json!({"sql": "WITH gone AS (DELETE FROM orders WHERE id < 10 RETURNING id) SELECT count(*) FROM gone"}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["rule"], "demo-writes-need-review");
    // The tables are still there, whole.
    let (status, body) = a
        .query(
            &token,
            "demo",
            json!({"sql": "SELECT count(*) FROM customers"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"][0][0], "200");
    let (status, body) = a
        .query(
            &token,
            "demo",
            json!({"sql": "SELECT count(*) FROM orders"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"][0][0], "1000");
    // A DBA (human) may write with a WHERE.
    let dba = a.token("alice", &["dba"], PrincipalKind::Human);
    let (status, body) = a
        .query(
            &dba,
            "demo",
            json!({"sql": "UPDATE customers SET city = 'Paris' WHERE id = 1"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["affected_rows"], 1);
    a.stop().await;
}

#[tokio::test]
async fn connections_are_listed_only_when_visible() {
    let a = demo().await;
    let (status, body) = a.get(&a.agent(), "/v1/connections").await;
    assert_eq!(status, 200);
    assert_eq!(body["connections"][0]["name"], "demo");
    let stranger = a.token("x", &["nobody"], PrincipalKind::Agent);
    let (_, body) = a.get(&stranger, "/v1/connections").await;
    assert_eq!(body["connections"].as_array().unwrap().len(), 0);
    let (status, unknown) = a.get(&stranger, "/v1/connections/demo").await;
    let (status2, missing) = a.get(&stranger, "/v1/connections/nope").await;
    assert_eq!((status, status2), (404, 404));
    assert_eq!(
        unknown["detail"].as_str().unwrap().replace("demo", "X"),
        missing["detail"].as_str().unwrap().replace("nope", "X")
    );
    let (status, schema) = a.get(&a.agent(), "/v1/connections/demo/schema").await;
    assert_eq!(status, 200, "{schema}");
    assert!(
        schema["tables"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "customers")
    );
    a.stop().await;
}

#[tokio::test]
async fn several_statements_are_refused_and_audited() {
    let a = demo().await;
    let (status, body) = a
        .query(
            &a.agent(),
            "demo",
            json!({"sql": "SELECT 1; DELETE FROM orders"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "multiple_statements");
    let events = a.audit_of(body["execution_id"].as_str().unwrap()).await;
    assert_eq!(events[0]["facts"]["statement_count"], 2);
    a.stop().await;
}

#[tokio::test]
async fn row_cap_truncates_and_says_what_to_do() {
    let a = demo().await;
    let (status, body) = a
        .query(
            &a.agent(),
            "demo",
            json!({"sql": "SELECT * FROM orders", "max_rows": 10}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["row_count"], 10);
    assert_eq!(body["truncated"], true);
    assert_eq!(body["truncated_reason"], "max_rows");
    assert!(body["note"].as_str().unwrap().contains("filter"));
    let (status, body) = a
        .query(
            &a.agent(),
            "demo",
            json!({"sql": "SELECT * FROM orders", "max_bytes": 500}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["truncated_reason"], "max_bytes");
    let (status, body) = a
        .query(
            &a.agent(),
            "demo",
            json!({"sql": "SELECT 1", "max_rows": 10_000_000}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_limit");
    a.stop().await;
}

#[tokio::test]
async fn sqlite_timeout_interrupts_the_statement() {
    let a = demo().await;
    let sql =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c";
    let started = std::time::Instant::now();
    let (status, body) = a
        .query(&a.agent(), "demo", json!({"sql": sql, "timeout_ms": 300}))
        .await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["code"], "timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
    let events = a.audit_of(body["execution_id"].as_str().unwrap()).await;
    assert_eq!(events[1]["outcome"], "timeout");
    a.stop().await;
}

#[tokio::test]
async fn store_lock_fails_closed_and_nothing_runs() {
    let a = demo().await;
    let token = a.agent();
    // Another connection holds the store's write lock: begin records cannot commit.
    let store = rusqlite::Connection::open(a.data.path().join("airlock.db")).unwrap();
    store.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let (status, body) = a
        .query(
            &token,
            "demo",
            json!({"sql": "SELECT count(*) FROM customers"}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "audit_unavailable");
    store.execute_batch("ROLLBACK").unwrap();
    drop(store);
    // The server keeps serving once the store is back.
    let (status, body) = a.query(&token, "demo", json!({"sql": "SELECT 1"})).await;
    assert_eq!(status, 200, "{body}");
    a.stop().await;
}

#[tokio::test]
async fn unfinished_begin_becomes_interrupted_at_next_start() {
    let data = tempfile::tempdir().unwrap();
    let embedded = airlock::config::EMBEDDED_DEFAULT
        .replace("listen = \"127.0.0.1:8080\"", "")
        .replace("[server]\n", "");
    {
        // Write a begin with no end, as a crash would leave it.
        let config = airlock::config::Config::parse(&embedded, "t").unwrap();
        let store = airlock::store::open(&config, data.path()).await.unwrap();
        let mut begin =
            airlock::audit::AuditEvent::new(airlock::audit::Phase::Begin, "crashed-1", "query");
        begin.connection = Some("demo".into());
        store.append_audit(&[begin]).await.unwrap();
    }
    let a = Airlock::start_in(&embedded, data).await;
    let events = a.audit_of("crashed-1").await;
    assert_eq!(events[1]["outcome"], "interrupted");
    a.stop().await;
}

#[tokio::test]
async fn ndjson_streams_header_rows_trailer() {
    let a = demo().await;
    let resp = a
        .http
        .post(format!("{}/v1/connections/demo/query", a.base))
        .bearer_auth(a.agent())
        .header("accept", "application/x-ndjson")
        .json(&json!({"sql": "SELECT id, product FROM orders ORDER BY id"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let text = resp.text().await.unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["type"], "header");
    assert_eq!(lines.len(), 1000 + 2);
    assert_eq!(lines[1][0], "1");
    assert_eq!(lines.last().unwrap()["type"], "end");
    assert_eq!(lines.last().unwrap()["row_count"], 1000);
    a.stop().await;
}

#[tokio::test]
async fn health_and_readiness_follow_shutdown() {
    let a = demo().await;
    let ready = a
        .http
        .get(format!("{}/readyz", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let health = a
        .http
        .get(format!("{}/healthz", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let docs = a
        .http
        .get(format!("{}/docs/", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    a.stop().await;
}

#[tokio::test]
async fn an_end_record_the_store_refuses_is_spooled_and_replayed() {
    let embedded = airlock::config::EMBEDDED_DEFAULT
        .replace("listen = \"127.0.0.1:8080\"", "")
        .replace("[server]\n", "");
    let a = Airlock::start(&format!("[store]\nbusy_timeout_ms = 200\n{embedded}")).await;
    let (token, base) = (a.agent(), a.base.clone());
    let slow = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{base}/v1/connections/demo/query"))
            .bearer_auth(token)
            .json(&json!({"sql": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000000) SELECT count(*) FROM c", "timeout_ms": 120000}))
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    });
    // Once the begin record is in, take the store's lock away until the query is done.
    let store = rusqlite::Connection::open(a.data.path().join("airlock.db")).unwrap();
    let begun = || {
        store
            .query_row(
                "SELECT count(*) FROM audit_events WHERE phase = 'begin' AND record LIKE '%10000000%'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap_or(0)
            == 1
    };
    let mut waited = 0;
    while !begun() && waited < 100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    store.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let body = slow.await.unwrap();
    assert_eq!(body["rows"][0][0], "10000000", "{body}");
    let execution_id = body["execution_id"].as_str().unwrap().to_string();
    let spool = a.data.path().join("audit-spool.ndjson");
    assert!(
        eventually(Duration::from_secs(5), || async { spool.exists() }).await,
        "the refused end record went to the spool"
    );
    store.execute_batch("ROLLBACK").unwrap();
    drop(store);
    let state = a.running.as_ref().unwrap().state.clone();
    assert_eq!(state.gateway.audit.replay_spool().await.unwrap(), 1);
    let events = a.audit_of(&execution_id).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["outcome"], "ok");
    assert!(!spool.exists());
    a.stop().await;
}
