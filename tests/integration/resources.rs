//! Memory an agent cannot exhaust: a row over the connection's `max_value_bytes` is refused
//! at its header (nothing of it buffered, the query stopped, the server keeps serving), and
//! the process-wide budget bounds what concurrent requests hold together.

use std::time::Duration;

use serde_json::json;

use crate::common::*;

fn config(kind: &str, url: &str, limits: &str) -> String {
    format!(
        r#"{DEV_ISSUER}
[[connections]]
name = "db"
kind = "{kind}"
url = "{url}"
[connections.limits]
{limits}

[[rules]]
id = "agents"
action = "allow"
connections = ["db"]
principals = ["group:agents"]
match = {{ function_classes = ["sleep"] }}
"#
    )
}

/// A value far over `max_value_bytes` (`{n}` in `value` is its length) with
/// `max_bytes = 1000`: a clear 54000 error, and the next request on the same pool is served.
async fn oversized_value_is_refused(a: &Airlock, value: &str, after: &str) {
    let t = a.agent();
    let huge = value.replace("{n}", "10000000");
    for _ in 0..3 {
        let (s, b) = a
            .query(&t, "db", json!({ "sql": huge, "max_bytes": 1000 }))
            .await;
        assert_eq!(s, 400, "{b}");
        assert_eq!(b["database"]["sqlstate"], "54000", "{b}");
        assert!(
            b["detail"].as_str().unwrap().contains("max_value_bytes"),
            "{b}"
        );
    }
    let (s, b) = a.query(&t, "db", json!({ "sql": after })).await;
    assert_eq!(s, 200, "{b}");
    // A value under the ceiling but over max_bytes is cut by max_bytes as before.
    let (s, b) = a
        .query(
            &t,
            "db",
            json!({ "sql": value.replace("{n}", "200000"), "max_bytes": 1000 }),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["truncated"], true, "{b}");
}

#[tokio::test]
async fn postgres_rows_over_max_value_bytes_are_refused_before_buffering() {
    let db = PgDb::create().await;
    let a = Airlock::start(&config("postgres", &db.url(), "max_value_bytes = 1048576")).await;
    oversized_value_is_refused(&a, "SELECT repeat('y', {n}), 't-huge'", "SELECT 1").await;
    // The server stopped the query once Airlock dropped the connection.
    let admin = pg_admin().await;
    let gone = eventually(Duration::from_secs(10), || async {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE '%t-huge%' AND state = 'active'",
                &[&db.name],
            )
            .await
            .unwrap()
            .get(0);
        n == 0
    })
    .await;
    assert!(gone);
    a.stop().await;
}

#[tokio::test]
async fn mariadb_rows_over_max_value_bytes_are_refused_before_buffering() {
    let db = MyDb::create().await;
    let a = Airlock::start(&config("mysql", &db.url(), "max_value_bytes = 1048576")).await;
    oversized_value_is_refused(&a, "SELECT REPEAT('y', {n})", "SELECT 1").await;
    a.stop().await;
}

#[tokio::test]
async fn the_memory_budget_bounds_concurrent_requests() {
    let db = PgDb::create().await;
    // Room for one query at a time: 64 KiB of response + 2 × 1 MiB per query.
    let a = Airlock::start_with(
        "memory_budget_bytes = 3000000",
        &config(
            "postgres",
            &db.url(),
            "max_value_bytes = 1048576\nmax_bytes = 65536\nmax_bytes_ceiling = 65536\npool_wait_timeout_ms = 500",
        ),
    )
    .await;
    let t = a.agent();
    let slow = a.query(&t, "db", json!({ "sql": "SELECT pg_sleep(2)" }));
    let second = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.query(&t, "db", json!({ "sql": "SELECT 1" })).await
    };
    let ((s1, b1), (s2, b2)) = tokio::join!(slow, second);
    assert_eq!(s1, 200, "{b1}");
    assert_eq!(s2, 503, "{b2}");
    assert_eq!(b2["code"], "memory_budget", "{b2}");
    // Refused, and audited like every refusal.
    let audit = a.audit_of(b2["execution_id"].as_str().unwrap()).await;
    assert_eq!(audit[0]["rule"], "memory-budget", "{audit:?}");
    // Once the first one ends, the budget is back.
    let (s, b) = a.query(&t, "db", json!({ "sql": "SELECT 1" })).await;
    assert_eq!(s, 200, "{b}");
    a.stop().await;
}
