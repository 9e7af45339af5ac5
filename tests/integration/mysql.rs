//! MySQL backend against the real MariaDB: types, params, read-only, cancellation via
//! KILL QUERY, pool hygiene, privilege checks, one statement per request.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use serde_json::{Value, json};

use crate::common::*;

fn config(db: &MyDb, extra: &str) -> String {
    format!(
        r#"{DEV_ISSUER}
[[connections]]
name = "my"
kind = "mysql"
url = "{url}"
{extra}

[[rules]]
id = "agents-my"
action = "allow"
connections = ["my"]
principals = ["group:agents"]
match = {{ function_classes = ["sleep"] }}
"#,
        url = db.url()
    )
}

#[tokio::test]
async fn types_and_params_round_trip() {
    let db = MyDb::create().await;
    db.admin()
        .await
        .query_drop(
            "CREATE TABLE t (i INT, bi BIGINT, ubi BIGINT UNSIGNED, d DECIMAL(20,4), f DOUBLE,
               s VARCHAR(20), bl BLOB, dt DATETIME(3), da DATE, tm TIME, j JSON, e ENUM('a','b'));
             INSERT INTO t VALUES (-5, 9223372036854775807, 18446744073709551615, 12345.6789, 1.25,
               'hé', X'00FF', '2024-02-29 12:34:56.789', '2024-02-29', '-01:02:03', '{\"a\": 1}', 'b');",
        )
        .await
        .unwrap();
    let a = Airlock::start(&config(&db, "")).await;
    let (s, b) = a
        .query(&a.agent(), "my", json!({"sql": "SELECT * FROM t"}))
        .await;
    assert_eq!(s, 200, "{b}");
    let row = &b["rows"][0];
    assert_eq!(row[0], json!(-5));
    assert_eq!(row[1], json!("9223372036854775807"));
    assert_eq!(row[2], json!("18446744073709551615"));
    assert_eq!(row[3], json!("12345.6789"));
    assert_eq!(row[4], json!(1.25));
    assert_eq!(row[5], json!("hé"));
    assert_eq!(row[6], json!("AP8="));
    assert!(row[7].as_str().unwrap().starts_with("2024-02-29"));
    assert_eq!(row[8], json!("2024-02-29"));
    // MariaDB's JSON is an alias of LONGTEXT (the server reports a text column), so it
    // arrives as the text; MySQL 8's native JSON type arrives as JSON.
    assert_eq!(row[10], json!("{\"a\": 1}"));
    assert_eq!(row[11], json!("b"));
    let (s, b) = a
        .query(
            &a.agent(),
            "my",
            json!({"sql": "SELECT ? + 1, ?", "params": [41, "x"]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["rows"][0][1], json!("x"));
    let (s, b) = a
        .query(&a.agent(), "my", json!({"sql": "SELECT ?", "params": []}))
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = a
        .query(&a.agent(), "my", json!({"sql": "SELECT * FROM nope"}))
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["database"]["sqlstate"], "42S02");
    a.stop().await;
}

/// A fresh database holding `canary` with one row.
async fn with_canary() -> MyDb {
    let db = MyDb::create().await;
    db.admin()
        .await
        .query_drop("CREATE TABLE canary (x INT); INSERT INTO canary VALUES (1);")
        .await
        .unwrap();
    db
}

#[tokio::test]
async fn read_only_and_single_statement_are_enforced() {
    let db = with_canary().await;
    let a = Airlock::start(&config(&db, "read_only = true")).await;
    let (s, b) = a
        .query(&a.agent(), "my", json!({"sql": "DELETE FROM canary"}))
        .await;
    assert_eq!(s, 403, "{b}");
    let (s, b) = a
        .query(
            &a.agent(),
            "my",
            json!({"sql": "SELECT 1; DELETE FROM canary"}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = a
        .query(
            &a.agent(),
            "my",
            json!({"sql": "SELECT 1 /*!; DELETE FROM canary */"}),
        )
        .await;
    assert!(s == 400 || s == 403, "executable comments are refused: {b}");
    let n: Option<i64> = db
        .admin()
        .await
        .query_first("SELECT count(*) FROM canary")
        .await
        .unwrap();
    assert_eq!(n, Some(1));
    a.stop().await;
}

async fn running(db: &MyDb, needle: &str) -> i64 {
    let mut c = my_admin().await;
    let n: Option<i64> = c
        .exec_first(
            "SELECT count(*) FROM information_schema.processlist WHERE db = ? AND info LIKE ? AND command <> 'Sleep'",
            (db.name.clone(), format!("%{needle}%")),
        )
        .await
        .unwrap();
    n.unwrap_or(0)
}

#[tokio::test]
async fn timeout_kills_the_query_on_the_server() {
    let db = MyDb::create().await;
    let a = Airlock::start(&config(&db, "")).await;
    let (s, b) = a
        .query(
            &a.agent(),
            "my",
            json!({"sql": "SELECT SLEEP(30) AS t_timeout", "timeout_ms": 500}),
        )
        .await;
    assert_eq!(s, 504, "{b}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            running(&db, "t_timeout").await == 0
        })
        .await
    );
    a.stop().await;
}

#[tokio::test]
async fn pool_of_one_does_not_leak_session_state() {
    let db = MyDb::create().await;
    let a = Airlock::start(&config(&db, "[connections.limits]\npool_size = 1")).await;
    let (s, b) = a
        .query(
            &a.agent(),
            "my",
            json!({"sql": "SET @secret = 'from agent A'"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = a
        .query(
            &a.agent(),
            "my",
            json!({"sql": "CREATE TEMPORARY TABLE tmp_secret (x INT)"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = a
        .query(&a.agent(), "my", json!({"sql": "SELECT @secret"}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["rows"][0][0], Value::Null);
    let (s, b) = a
        .query(&a.agent(), "my", json!({"sql": "SELECT * FROM tmp_secret"}))
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = a
        .query(
            &a.agent(),
            "my",
            json!({"sql": "SELECT @@sql_mode, @@character_set_client"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["rows"][0][1], "utf8mb4");
    a.stop().await;
}

/// A read-only connection's transaction ends by the pool's reset, not by a `ROLLBACK` of
/// its own: the next request on the same server session must start a fresh transaction
/// (REPEATABLE READ would otherwise keep showing it the first request's snapshot) with the
/// session set up again.
#[tokio::test]
async fn read_only_requests_never_share_a_transaction() {
    let db = with_canary().await;
    let a = Airlock::start(&config(
        &db,
        "read_only = true\n[connections.limits]\npool_size = 1",
    ))
    .await;
    let run = async |sql: &str| {
        let (s, b) = a.query(&a.agent(), "my", json!({ "sql": sql })).await;
        assert_eq!(s, 200, "{b}");
        b["rows"][0].clone()
    };
    let count = "SELECT count(*), @@in_transaction, CONNECTION_ID() FROM canary";
    let first = run(count).await;
    assert_eq!(first[0], "1", "{first}");
    assert_eq!(
        first[1], "1",
        "the statement runs in Airlock's transaction: {first}"
    );
    db.admin()
        .await
        .query_drop("INSERT INTO canary VALUES (2)")
        .await
        .unwrap();
    let second = run(count).await;
    assert_eq!(second[2], first[2], "the same server session: {second}");
    assert_eq!(second[0], "2", "a new snapshot: {second}");
    // (MariaDB reports `@@tx_read_only` as 0 in a statement that reads a table, even in a
    // READ ONLY transaction, hence a statement of its own.)
    let session = run("SELECT @@sql_mode, @@tx_read_only, @@in_transaction, CONNECTION_ID()").await;
    assert_eq!(session[3], first[2], "the same server session: {session}");
    assert!(
        session[0]
            .as_str()
            .is_some_and(|m| m.starts_with("STRICT_TRANS_TABLES")),
        "the session set up again: {session}"
    );
    assert_eq!(session[1], "1", "read-only by session default: {session}");
    assert_eq!(session[2], "1", "in Airlock's transaction: {session}");
    a.stop().await;
}

#[tokio::test]
async fn root_account_is_refused_unless_allowed() {
    let data = tempfile::tempdir().unwrap();
    let cfg = format!(
        "{DEV_ISSUER}\n[[connections]]\nname = \"root\"\nkind = \"mysql\"\nurl = \"{MYSQL_URL}\"\n"
    );
    let config = airlock::config::Config::parse(&cfg, "t").unwrap();
    let err = airlock::server::prepare(config, data.path(), None)
        .await
        .err()
        .expect("refused");
    assert!(err.contains("allow_privileged"), "{err}");
}
