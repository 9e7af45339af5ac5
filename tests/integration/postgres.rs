//! PostgreSQL backend against the real server: types, params, caps, NDJSON, read-only,
//! cancellation on the server, pool hygiene, privilege checks, audit ordering.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::common::*;

fn config(db: &PgDb, extra: &str) -> String {
    format!(
        r#"{DEV_ISSUER}
[[connections]]
name = "pg"
kind = "postgres"
url = "{url}"
{extra}

[[rules]]
id = "agents-pg"
action = "allow"
connections = ["pg"]
principals = ["group:agents"]
# Allow rules admit dangerous functions only by class; these tests sleep and set settings.
match = {{ function_classes = ["sleep", "session_state", "side_effect"] }}
"#,
        url = db.url()
    )
}

#[tokio::test]
async fn types_round_trip_as_documented() {
    let db = PgDb::create().await;
    db.owner()
        .await
        .batch_execute(
            "CREATE TYPE mood AS ENUM ('happy', 'sad');
             CREATE TABLE t (
               i2 int2, i4 int4, i8 int8, n numeric, f8 float8, b bool, tx text, vc varchar(10),
               ts timestamp, tz timestamptz, d date, tm time, iv interval, ip inet, cidr_ cidr,
               u uuid, j json, jb jsonb, by bytea, m mood, r int4range, arr int4[], tarr text[],
               mac macaddr, pt point);
             INSERT INTO t VALUES (
               -2, 2147483647, 9223372036854775807, 12345678901234567890.0100, 1.5, true, 'hé', 'v',
               '2024-02-29 12:34:56.789', '2024-02-29 12:34:56+02', '2024-02-29', '23:59:59',
               '1 year 2 mons 3 days 04:05:06', '192.168.1.7', '10.0.0.0/8',
               'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"a\": [1, 2]}', '{\"b\": null}', '\\x00ff',
               'sad', '[1,10)', '{1,NULL,3}', '{\"x y\",\"z\"}', '08:00:2b:01:02:03', '(1,2)');
             INSERT INTO t (i4) VALUES (NULL);",
        )
        .await
        .unwrap();
    let a = Airlock::start(&config(&db, "")).await;
    let (s, b) = a
        .query(
            &a.agent(),
            "pg",
            json!({"sql": "SELECT * FROM t ORDER BY i4 NULLS LAST"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let row = &b["rows"][0];
    let col = |name: &str| -> &Value {
        let idx = b["columns"]
            .as_array()
            .unwrap()
            .iter()
            .position(|c| c["name"] == name)
            .unwrap();
        &row[idx]
    };
    assert_eq!(col("i2"), &json!(-2));
    assert_eq!(col("i4"), &json!(2147483647));
    assert_eq!(col("i8"), &json!("9223372036854775807"));
    assert_eq!(col("n"), &json!("12345678901234567890.0100"));
    assert_eq!(col("f8"), &json!(1.5));
    assert_eq!(col("b"), &json!(true));
    assert_eq!(col("tx"), &json!("hé"));
    assert!(
        col("ts")
            .as_str()
            .unwrap()
            .starts_with("2024-02-29T12:34:56.789")
    );
    assert!(
        col("tz")
            .as_str()
            .unwrap()
            .starts_with("2024-02-29T10:34:56")
    );
    assert_eq!(col("d"), &json!("2024-02-29"));
    assert_eq!(col("iv"), &json!("1 year 2 mons 3 days 04:05:06"));
    assert_eq!(col("ip"), &json!("192.168.1.7"));
    assert_eq!(col("cidr_"), &json!("10.0.0.0/8"));
    assert_eq!(col("u"), &json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"));
    assert_eq!(col("j"), &json!({"a": [1, 2]}));
    assert_eq!(col("jb"), &json!({"b": null}));
    assert_eq!(col("by"), &json!("AP8="));
    assert_eq!(col("m"), &json!("sad"));
    assert_eq!(col("r"), &json!("[1,10)"));
    assert_eq!(col("arr"), &json!([1, null, 3]));
    assert_eq!(col("tarr"), &json!(["x y", "z"]));
    assert_eq!(col("mac"), &json!("08:00:2b:01:02:03"));
    assert_eq!(
        col("pt"),
        &json!("(1,2)"),
        "unknown types fall back to their text form"
    );
    assert_eq!(b["rows"][1][1], Value::Null);
    let types: Vec<&str> = b["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert!(
        types.contains(&"int8") && types.contains(&"numeric"),
        "{types:?}"
    );
    a.stop().await;
}

#[tokio::test]
async fn params_are_typed_by_the_server() {
    let db = PgDb::create().await;
    db.owner()
        .await
        .batch_execute(
            "CREATE TABLE p (id int8, amount numeric, at timestamptz, tags text[], doc jsonb)",
        )
        .await
        .unwrap();
    let a = Airlock::start(&config(&db, "")).await;
    let t = a.agent();
    let (s, b) = a
        .query(&t, "pg", json!({"sql": "INSERT INTO p VALUES ($1, $2, $3, $4, $5) RETURNING id, amount",
            "params": ["9007199254740993", "0.1", "2024-01-01T00:00:00Z", ["a", "b,c"], {"k": [1]}]}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["rows"][0], json!(["9007199254740993", "0.1"]));
    let (s, b) = a.query(&t, "pg", json!({"sql": "SELECT tags, doc FROM p WHERE id = $1", "params": [9007199254740993u64]})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["rows"][0], json!([["a", "b,c"], {"k": [1]}]));
    let (s, b) = a
        .query(
            &t,
            "pg",
            json!({"sql": "SELECT $1::int4", "params": ["not a number"]}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["database"]["sqlstate"], "22P02");
    let (s, b) = a
        .query(
            &t,
            "pg",
            json!({"sql": "SELECT $1::int4, $2::int4", "params": [1]}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["code"], "invalid_params");
    let (s, b) = a
        .query(&t, "pg", json!({"sql": "SELECT * FROM missing_table"}))
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["database"]["sqlstate"], "42P01");
    assert!(b["database"]["position"].as_u64().is_some(), "{b}");
    a.stop().await;
}

#[tokio::test]
async fn read_only_is_enforced_by_the_database() {
    let db = PgDb::create().await;
    db.owner()
        .await
        .batch_execute("CREATE TABLE canary (x int); INSERT INTO canary VALUES (1);")
        .await
        .unwrap();
    let a = Airlock::start(&config(&db, "read_only = true")).await;
    let (s, b) = a
        .query(&a.agent(), "pg", json!({"sql": "DELETE FROM canary"}))
        .await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(b["code"], "read_only");
    let (s, b) = a
        .query(
            &a.agent(),
            "pg",
            json!({"sql": "WITH d AS (DELETE FROM canary RETURNING *) SELECT count(*) FROM d"}),
        )
        .await;
    assert_eq!(s, 403, "{b}");
    let n: i64 = db
        .admin()
        .await
        .query_one("SELECT count(*) FROM canary", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    a.stop().await;
}

async fn running_queries(db: &PgDb, needle: &str) -> i64 {
    let admin = pg_admin().await;
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state = 'active' AND query LIKE $2",
            &[&db.name, &format!("%{needle}%")],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn timeout_cancels_the_statement_on_the_server() {
    let db = PgDb::create().await;
    let a = Airlock::start(&config(&db, "")).await;
    let (s, b) = a
        .query(
            &a.agent(),
            "pg",
            json!({"sql": "SELECT pg_sleep(30), 't-timeout'", "timeout_ms": 500}),
        )
        .await;
    assert_eq!(s, 504, "{b}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            running_queries(&db, "t-timeout").await == 0
        })
        .await
    );
    let events = a.audit_of(b["execution_id"].as_str().unwrap()).await;
    assert_eq!(events[1]["outcome"], "timeout");
    a.stop().await;
}

#[tokio::test]
async fn client_disconnect_cancels_the_statement_and_audit_says_so() {
    let db = PgDb::create().await;
    let a = Airlock::start(&config(&db, "")).await;
    let req = a
        .http
        .post(format!("{}/v1/connections/pg/query", a.base))
        .bearer_auth(a.agent())
        .json(&json!({"sql": "SELECT pg_sleep(30), 't-disconnect'"}))
        .send();
    // Give up on the request while it runs: the client goes away.
    let _ = tokio::time::timeout(Duration::from_millis(1500), req).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            running_queries(&db, "t-disconnect").await == 0
        })
        .await,
        "the statement kept running after the client left"
    );
    let auditor = a.token("aud", &["auditors"], airlock::config::PrincipalKind::Human);
    assert!(
        eventually(Duration::from_secs(5), || async {
            let (_, page) = a.get(&auditor, "/v1/audit?outcome=cancelled").await;
            !page["events"].as_array().unwrap().is_empty()
        })
        .await
    );
    a.stop().await;
}

#[tokio::test]
async fn audit_begin_is_stored_before_the_statement_runs() {
    let db = PgDb::create().await;
    let a = Airlock::start(&config(&db, "")).await;
    let token = a.agent();
    let base = a.base.clone();
    let running = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{base}/v1/connections/pg/query"))
            .bearer_auth(token)
            .json(&json!({"sql": "SELECT pg_sleep(2), 't-order'"}))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert!(
        eventually(Duration::from_secs(5), || async {
            running_queries(&db, "t-order").await == 1
        })
        .await
    );
    // While the statement runs on the server, its begin record is already committed.
    let store = rusqlite::Connection::open(a.data.path().join("airlock.db")).unwrap();
    let begins: i64 = store
        .query_row(
            "SELECT count(*) FROM audit_events WHERE phase = 'begin' AND record LIKE '%t-order%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let ends: i64 = store
        .query_row("SELECT count(*) FROM audit_events WHERE phase = 'end' AND execution_id IN (SELECT execution_id FROM audit_events WHERE record LIKE '%t-order%')", [], |r| r.get(0))
        .unwrap();
    assert_eq!((begins, ends), (1, 0));
    assert_eq!(running.await.unwrap(), 200);
    a.stop().await;
}

#[tokio::test]
async fn pool_of_one_does_not_leak_session_state_between_agents() {
    let db = PgDb::create().await;
    let a = Airlock::start(&config(&db, "[connections.limits]\npool_size = 1")).await;
    let agent_a = a.token(
        "agent-a",
        &["agents"],
        airlock::config::PrincipalKind::Agent,
    );
    let agent_b = a.token(
        "agent-b",
        &["agents"],
        airlock::config::PrincipalKind::Agent,
    );
    let (s, b) = a
        .query(
            &agent_a,
            "pg",
            json!({"sql": "SELECT set_config('search_path', 'evil', false)"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = a
        .query(
            &agent_a,
            "pg",
            json!({"sql": "CREATE TEMP TABLE secret AS SELECT 42 AS x"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = a
        .query(
            &agent_b,
            "pg",
            json!({"sql": "SELECT current_setting('search_path')"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_ne!(b["rows"][0][0], "evil");
    let (s, b) = a
        .query(&agent_b, "pg", json!({"sql": "SELECT * FROM secret"}))
        .await;
    assert_eq!(s, 400, "agent B must not see agent A's temp table: {b}");
    let (s, b) = a
        .query(&agent_a, "pg", json!({"sql": "PREPARE leak AS SELECT 42"}))
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = a
        .query(&agent_b, "pg", json!({"sql": "EXECUTE leak"}))
        .await;
    assert_eq!(
        s, 400,
        "agent B must not run agent A's prepared statement: {b}"
    );
    let (s, b) = a
        .query(
            &agent_b,
            "pg",
            json!({"sql": "SELECT current_setting('standard_conforming_strings')"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["rows"][0][0], "on");
    a.stop().await;
}

#[tokio::test]
async fn superuser_target_is_refused_unless_allowed() {
    let data = tempfile::tempdir().unwrap();
    let cfg = format!(
        "{DEV_ISSUER}\n[[connections]]\nname = \"su\"\nkind = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:5432/postgres\"\n"
    );
    let config = airlock::config::Config::parse(&cfg, "t").unwrap();
    let err = airlock::server::prepare(config, data.path(), None)
        .await
        .err()
        .expect("refused");
    assert!(err.contains("allow_privileged"), "{err}");
    let config =
        airlock::config::Config::parse(&format!("{cfg}allow_privileged = true\n"), "t").unwrap();
    assert!(
        airlock::server::prepare(config, data.path(), None)
            .await
            .is_ok()
    );
}

/// Sends `body` to the `pg` connection as an NDJSON query and reads the whole answer as it
/// arrives, without keeping it: how many lines came, and the last one (the trailer).
async fn ndjson_count(a: &Airlock, body: Value) -> (u64, Value) {
    let resp = a
        .http
        .post(format!("{}/v1/connections/pg/query", a.base))
        .bearer_auth(a.agent())
        .header("accept", "application/x-ndjson")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    let mut lines = 0u64;
    let mut last = Vec::new();
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk.unwrap());
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            last = buf.drain(..=pos).collect();
            lines += 1;
        }
    }
    (lines, serde_json::from_slice(&last).unwrap())
}

#[tokio::test]
async fn ndjson_streams_a_million_rows_in_constant_memory() {
    let db = PgDb::create().await;
    let a = Airlock::start(&config(
        &db,
        "[connections.limits]\nmax_rows_ceiling = 2000000\nmax_bytes_ceiling = 1000000000\nmax_bytes = 1000000000",
    ))
    .await;
    let (lines, trailer) = ndjson_count(
        &a,
        json!({"sql": "SELECT g, 'row ' || g FROM generate_series(1, 1000000) g"}),
    )
    .await;
    assert_eq!(lines, 1_000_000 + 2);
    assert_eq!(trailer["type"], "end");
    assert_eq!(trailer["row_count"], 1_000_000);
    assert_eq!(trailer["truncated"], false);
    a.stop().await;
}

/// Rows that are always ready (a fast server, a fast client) must not outrun the request's
/// deadline: the producer takes a ready row without waiting, so the stop conditions are
/// checked on every row, not only when something has to be awaited.
#[tokio::test]
async fn a_stream_of_ready_rows_still_stops_at_its_deadline() {
    let db = PgDb::create().await;
    let a = Airlock::start(&config(
        &db,
        "[connections.limits]\nmax_rows_ceiling = 500000000\nmax_bytes_ceiling = 100000000000\nmax_bytes = 100000000000",
    ))
    .await;
    let started = std::time::Instant::now();
    let (lines, trailer) = ndjson_count(
        &a,
        json!({
            "sql": "SELECT a AS t_ready_rows FROM generate_series(1, 20000) a, generate_series(1, 20000) b",
            "max_rows": 400000000,
            "timeout_ms": 800
        }),
    )
    .await;
    assert_eq!(trailer["type"], "error", "{trailer}");
    assert_eq!(trailer["problem"]["code"], "timeout", "{trailer}");
    assert!(lines > 2, "rows streamed before the deadline");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "stopped near its deadline, not after {:?}",
        started.elapsed()
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            running_queries(&db, "t_ready_rows").await == 0
        })
        .await
    );
    a.stop().await;
}

#[tokio::test]
async fn row_cap_stops_fetching_on_the_server() {
    let db = PgDb::create().await;
    let a = Airlock::start(&config(&db, "")).await;
    let (s, b) = a
        .query(&a.agent(), "pg", json!({"sql": "SELECT a FROM generate_series(1, 20000) a, generate_series(1, 20000) b", "max_rows": 5, "timeout_ms": 10000}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["row_count"], 5);
    assert_eq!(b["truncated"], true);
    assert!(
        b["duration_ms"].as_u64().unwrap() < 5000,
        "fetching stopped at max_rows + 1: {b}"
    );
    a.stop().await;
}

#[tokio::test]
async fn pool_exhaustion_is_503_with_retry_after() {
    let db = PgDb::create().await;
    let a = Airlock::start(&config(
        &db,
        "[connections.limits]\npool_size = 1\npool_wait_timeout_ms = 300",
    ))
    .await;
    let (token, base) = (a.agent(), a.base.clone());
    let busy = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{base}/v1/connections/pg/query"))
            .bearer_auth(token)
            .json(&json!({"sql": "SELECT pg_sleep(2), 't-busy'"}))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert!(
        eventually(Duration::from_secs(5), || async {
            running_queries(&db, "t-busy").await == 1
        })
        .await
    );
    // Another agent (the first holds its whole share of a pool of one).
    let other = a.token(
        "agent-2",
        &["agents"],
        airlock::config::PrincipalKind::Agent,
    );
    let resp = a
        .http
        .post(format!("{}/v1/connections/pg/query", a.base))
        .bearer_auth(other)
        .json(&json!({"sql": "SELECT 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "backend_unavailable");
    assert_eq!(busy.await.unwrap(), 200);
    a.stop().await;
}

#[tokio::test]
async fn one_agents_slow_queries_leave_the_pool_to_others() {
    let db = PgDb::create().await;
    let a = Airlock::start(&config(
        &db,
        "[connections.limits]\npool_size = 4\npool_wait_timeout_ms = 300",
    ))
    .await;
    // Agent 1 sends 16 slow queries at once: only its share (half the pool) runs.
    let mut slow = Vec::new();
    for _ in 0..16 {
        let (token, base) = (a.agent(), a.base.clone());
        slow.push(tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{base}/v1/connections/pg/query"))
                .bearer_auth(token)
                .json(&json!({"sql": "SELECT pg_sleep(2), 't-hog'"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            running_queries(&db, "t-hog").await == 2
        })
        .await
    );
    // Agent 2's fast query still answers while they run.
    let other = a.token(
        "agent-2",
        &["agents"],
        airlock::config::PrincipalKind::Agent,
    );
    let (status, body) = a
        .query(&other, "pg", json!({"sql": "SELECT 1 AS one"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(running_queries(&db, "t-hog").await, 2);
    let mut statuses = Vec::new();
    for s in slow {
        statuses.push(s.await.unwrap());
    }
    statuses.sort();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        14,
        "{statuses:?}"
    );
    a.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_and_its_query_cancelled() {
    use tokio::io::AsyncWriteExt;
    let db = PgDb::create().await;
    let a = Airlock::start_with(
        "write_idle_timeout_ms = 1000",
        &config(&db, "[connections.limits]\nmax_rows_ceiling = 5000000\nmax_bytes_ceiling = 4000000000\nmax_bytes = 4000000000"),
    )
    .await;
    // Raw socket: send the request, then never read the response.
    let addr = a.base.trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body =
        json!({"sql": "SELECT g, repeat('x', 200), 't-slow' FROM generate_series(1, 5000000) g"})
            .to_string();
    let req = format!(
        "POST /v1/connections/pg/query HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\naccept: application/x-ndjson\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        a.agent(),
        body.len()
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            running_queries(&db, "t-slow").await == 1
        })
        .await
    );
    // Once the socket buffers fill, writes stall; after 1 s of no progress the client is cut.
    assert!(
        eventually(Duration::from_secs(20), || async {
            running_queries(&db, "t-slow").await == 0
        })
        .await,
        "the query kept running for a client that stopped reading"
    );
    drop(sock);
    let auditor = a.token("aud", &["auditors"], airlock::config::PrincipalKind::Human);
    assert!(
        eventually(Duration::from_secs(5), || async {
            let (_, page) = a.get(&auditor, "/v1/audit?outcome=cancelled").await;
            !page["events"].as_array().unwrap().is_empty()
        })
        .await
    );
    a.stop().await;
}

#[tokio::test]
async fn shutdown_drains_then_cancels_and_audits() {
    let db = PgDb::create().await;
    let a = Airlock::start(&config(&db, "")).await;
    let (token, base) = (a.agent(), a.base.clone());
    let short = {
        let (token, base) = (token.clone(), base.clone());
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{base}/v1/connections/pg/query"))
                .bearer_auth(token)
                .json(&json!({"sql": "SELECT pg_sleep(1), 't-drain'"}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    let long = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{base}/v1/connections/pg/query"))
            .bearer_auth(token)
            .json(&json!({"sql": "SELECT pg_sleep(60), 't-long'"}))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    assert!(
        eventually(Duration::from_secs(5), || async {
            running_queries(&db, "t-long").await == 1
        })
        .await
    );
    let data = a.data.path().to_path_buf();
    let http = a.http.clone();
    let ready_url = format!("{}/readyz", a.base);
    let Airlock {
        running,
        data: _keep,
        ..
    } = a;
    let running = running.unwrap();
    let state = running.state.clone();
    let stopping = tokio::spawn(running.shutdown());
    // Readiness flips at once; the listener may already be closed, which is also "not ready".
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!state.ready.load(std::sync::atomic::Ordering::SeqCst));
    let _ = http.get(ready_url).send().await;
    // The short request drains (200); the long one is cancelled after the 2 s drain.
    assert_eq!(short.await.unwrap().unwrap(), 200);
    let long_status = long.await.unwrap();
    assert!(matches!(long_status, Ok(503) | Err(_)), "{long_status:?}");
    stopping.await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            running_queries(&db, "t-long").await == 0
        })
        .await
    );
    let store = rusqlite::Connection::open(data.join("airlock.db")).unwrap();
    let cancelled: i64 = store
        .query_row(
            "SELECT count(*) FROM audit_events WHERE phase = 'end' AND outcome = 'cancelled'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(cancelled, 1);
}

#[tokio::test]
async fn postgres_store_holds_the_audit_log() {
    let db = PgDb::create().await;
    let store_db = PgDb::create().await;
    let a = Airlock::start(&format!(
        "[store]\nurl = \"postgres://postgres@127.0.0.1:5432/{}\"\n{}",
        store_db.name,
        config(&db, "")
    ))
    .await;
    let (s, b) = a.query(&a.agent(), "pg", json!({"sql": "SELECT 1"})).await;
    assert_eq!(s, 200, "{b}");
    let events = a.audit_of(b["execution_id"].as_str().unwrap()).await;
    assert_eq!(events.len(), 2);
    // PostgreSQL refuses NUL in text: a NUL in a statement or a connection name must
    // neither fail the request as "audit unavailable" nor the requests batched with it.
    let agent = a.agent();
    let nul_calls = (0..8).map(|i| {
        let (a, agent) = (&a, agent.clone());
        async move {
            let sql = if i % 2 == 0 {
                "SELECT 1 -- \u{0}"
            } else {
                "SELECT 2"
            };
            a.query(&agent, "pg", json!({ "sql": sql })).await
        }
    });
    for (s, b) in futures::future::join_all(nul_calls).await {
        assert_ne!(s, 503, "{b}");
    }
    let (s, _) = a
        .query(&agent, "pg\u{0}x", json!({"sql": "SELECT 1"}))
        .await;
    assert_eq!(s, 404);
    let n: i64 = store_db
        .admin()
        .await
        .query_one("SELECT count(*) FROM airlock_audit_events", &[])
        .await
        .unwrap()
        .get(0);
    assert!(n >= 2);
    a.stop().await;
    // A connection pointing at the store itself is refused.
    let data = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[store]\nurl = \"postgres://postgres@127.0.0.1:5432/{s}\"\n{DEV_ISSUER}\n[[connections]]\nname = \"self\"\nkind = \"postgres\"\nurl = \"postgres://{r}@localhost:5432/{s}\"\n",
        s = store_db.name,
        r = store_db.role
    );
    let err = airlock::server::prepare(
        airlock::config::Config::parse(&cfg, "t").unwrap(),
        data.path(),
        None,
    )
    .await
    .err()
    .expect("refused");
    assert!(err.contains("store"), "{err}");
}

/// A request's own timeout is set for its transaction only: the next request on the same
/// server connection is back on the connection's default, whether the first one was a
/// streamed read or ran in a portal, and whether it failed.
#[tokio::test]
async fn a_requests_own_timeout_ends_with_its_transaction() {
    let db = PgDb::create().await;
    let a = Airlock::start(&config(
        &db,
        "[connections.limits]\npool_size = 1\ntimeout_ms = 5000",
    ))
    .await;
    let agent = a.token("agent", &["agents"], airlock::config::PrincipalKind::Agent);
    let show = "SELECT current_setting('statement_timeout') AS t, pg_backend_pid() AS pid";
    let (s, b) = a.query(&agent, "pg", json!({ "sql": show })).await;
    assert_eq!(s, 200, "{b}");
    // The server's timeout is the request's plus a second's margin.
    assert_eq!(b["rows"][0][0], "6s", "the connection's default: {b}");
    let pid = b["rows"][0][1].clone();
    for own in [
        // Streamed (every column decoded natively).
        json!({ "sql": show, "timeout_ms": 1000 }),
        // In a portal (a column the server renders: `point`).
        json!({ "sql": "SELECT current_setting('statement_timeout') AS t, '(1,2)'::point AS m", "timeout_ms": 1000 }),
        // Refused by the server after the timeout was set.
        json!({ "sql": "SELECT current_setting('statement_timeout')::int AS t", "timeout_ms": 1000 }),
    ] {
        let (s, b) = a.query(&agent, "pg", own.clone()).await;
        if s == 200 {
            assert_eq!(b["rows"][0][0], "2s", "the request's own: {b}");
        } else {
            assert_eq!(b["database"]["sqlstate"], "22P02", "{b}");
        }
        let (s, b) = a.query(&agent, "pg", json!({ "sql": show })).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(
            (&b["rows"][0][0], &b["rows"][0][1]),
            (&json!("6s"), &pid),
            "after {own}: the default again, on the same server connection: {b}"
        );
    }
    a.stop().await;
}

/// Code behind a view can replace a statement Airlock prepared on the connection: it can
/// `DEALLOCATE` any named statement of the session and `PREPARE` another under its name.
/// The next agent on that connection must still get its own statement's answer, never the
/// replacement's, and the check that finds such leftovers must not be replaceable itself.
#[tokio::test]
async fn a_view_that_replaces_cached_statements_does_not_reach_the_next_agent() {
    let db = PgDb::create().await;
    db.owner()
        .await
        .batch_execute(
            "CREATE FUNCTION swap_cached() RETURNS int LANGUAGE plpgsql AS $$
             DECLARE p record;
             BEGIN
               FOR p IN SELECT name, statement FROM pg_prepared_statements
                        WHERE NOT from_sql AND statement NOT LIKE '%v_swap%' LOOP
                 EXECUTE format('DEALLOCATE %I', p.name);
                 IF p.statement LIKE '%pg_advisory_unlock_all%' THEN
                   -- A session check of the same shape that always answers clean.
                   EXECUTE format('PREPARE %I AS SELECT pg_catalog.pg_sleep(0), false', p.name);
                 ELSE
                   EXECUTE format('PREPARE %I AS SELECT 666 AS x', p.name);
                 END IF;
               END LOOP;
               RETURN 1;
             END $$;
             CREATE VIEW v_swap AS SELECT swap_cached() AS x;",
        )
        .await
        .unwrap();
    let a = Airlock::start(&config(&db, "[connections.limits]\npool_size = 1")).await;
    let attacker = a.token(
        "agent-a",
        &["agents"],
        airlock::config::PrincipalKind::Agent,
    );
    let victim = a.token(
        "agent-b",
        &["agents"],
        airlock::config::PrincipalKind::Agent,
    );
    let lookup = json!({ "sql": "SELECT 1 AS x" });
    let (s, b) = a.query(&victim, "pg", lookup.clone()).await;
    assert_eq!((s, &b["rows"][0][0]), (200, &json!(1)), "{b}");
    for _ in 0..2 {
        let (s, b) = a
            .query(&attacker, "pg", json!({ "sql": "SELECT * FROM v_swap" }))
            .await;
        assert_eq!(s, 200, "{b}");
        let (s, b) = a.query(&victim, "pg", lookup.clone()).await;
        assert_eq!(
            (s, &b["rows"][0][0]),
            (200, &json!(1)),
            "the victim got the attacker's statement: {b}"
        );
    }
    a.stop().await;
}

/// Parsed facts cannot prove a request leaves its session clean: a view runs code the
/// statement does not name. Each view below looks like a plain read (`SELECT * FROM v`), so
/// it takes the read-only streamed path, and changes the session in a way the next agent on
/// the same pooled connection could use. None of it may survive the request.
#[tokio::test]
async fn views_that_change_the_session_leave_nothing_for_the_next_agent() {
    let db = PgDb::create().await;
    db.owner()
        .await
        .batch_execute(
            "CREATE FUNCTION dirty(what text) RETURNS int LANGUAGE plpgsql AS $$
             BEGIN
               IF what = 'setting' THEN PERFORM set_config('search_path', 'evil, public', false);
               ELSIF what = 'role_setting' THEN PERFORM set_config('statement_timeout', '1', false);
               ELSIF what = 'lock' THEN PERFORM pg_advisory_lock(4242);
               ELSIF what = 'prepare' THEN EXECUTE 'PREPARE left_behind AS SELECT 42';
               ELSIF what = 'listen' THEN EXECUTE 'LISTEN left_behind';
               ELSIF what = 'temp' THEN EXECUTE 'CREATE TEMP TABLE left_behind AS SELECT 1';
               ELSIF what = 'sequence' THEN PERFORM nextval('counter');
               ELSIF what = 'cursor' THEN EXECUTE 'DECLARE left_behind CURSOR WITH HOLD FOR SELECT 1';
               END IF;
               RETURN 1;
             END $$;
             CREATE VIEW v_setting AS SELECT dirty('setting') AS x;
             CREATE VIEW v_timeout AS SELECT dirty('role_setting') AS x;
             CREATE VIEW v_lock AS SELECT dirty('lock') AS x;
             CREATE VIEW v_prepare AS SELECT dirty('prepare') AS x;
             CREATE VIEW v_listen AS SELECT dirty('listen') AS x;
             CREATE VIEW v_listening AS SELECT count(*) AS n FROM pg_listening_channels();
             CREATE SEQUENCE counter;
             CREATE VIEW v_temp AS SELECT dirty('temp') AS x;
             CREATE VIEW v_sequence AS SELECT dirty('sequence') AS x;
             CREATE VIEW v_cursor AS SELECT dirty('cursor') AS x;
             CREATE VIEW v_cursors AS SELECT count(*) AS n FROM pg_cursors WHERE name = 'left_behind';",
        )
        .await
        .unwrap();
    let a = Airlock::start(&config(&db, "[connections.limits]\npool_size = 1")).await;
    let agent_a = a.token(
        "agent-a",
        &["agents"],
        airlock::config::PrincipalKind::Agent,
    );
    let agent_b = a.token(
        "agent-b",
        &["agents"],
        airlock::config::PrincipalKind::Agent,
    );
    for view in [
        "v_setting",
        "v_timeout",
        "v_lock",
        "v_prepare",
        "v_listen",
        "v_cursor",
    ] {
        let (s, b) = a
            .query(
                &agent_a,
                "pg",
                json!({"sql": format!("SELECT * FROM {view}")}),
            )
            .await;
        assert_eq!(s, 200, "{view}: {b}");
    }
    // What the streamed read's shorter reset leaves out cannot happen in its read-only
    // transaction: temp tables and sequences are refused there.
    for view in ["v_temp", "v_sequence"] {
        let (s, b) = a
            .query(
                &agent_a,
                "pg",
                json!({"sql": format!("SELECT * FROM {view}")}),
            )
            .await;
        assert!(s == 400 || s == 403, "{view}: {s} {b}");
        assert!(
            b["database"]["sqlstate"].is_string(),
            "{view}: refused by the server: {b}"
        );
    }
    let one = |sql: &str| json!({ "sql": sql });
    let (s, b) = a
        .query(
            &agent_b,
            "pg",
            one("SELECT current_setting('search_path'), current_setting('statement_timeout')"),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["rows"][0][0], "\"$user\", public", "{b}");
    assert_ne!(b["rows"][0][1], "1ms", "{b}");
    let (s, b) = a
        .query(&agent_b, "pg", one("SELECT n FROM v_listening"))
        .await;
    assert_eq!(
        (s, &b["rows"][0][0]),
        (200, &json!("0")),
        "still listening: {b}"
    );
    let (s, b) = a
        .query(&agent_b, "pg", one("SELECT n FROM v_cursors"))
        .await;
    assert_eq!(
        (s, &b["rows"][0][0]),
        (200, &json!("0")),
        "a held cursor: {b}"
    );
    let (s, b) = a.query(&agent_b, "pg", one("EXECUTE left_behind")).await;
    assert_eq!(s, 400, "agent A's prepared statement must be gone: {b}");
    let locks: i64 = db
        .admin()
        .await
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(locks, 0, "agent A's advisory lock must be released");
    // The cached statement survives the reset and still answers.
    for _ in 0..3 {
        let (s, b) = a.query(&agent_b, "pg", one("SELECT 1 AS x")).await;
        assert_eq!((s, &b["rows"][0][0]), (200, &json!(1)), "{b}");
    }
    a.stop().await;
}

/// A statement the server refuses (agents make typos) leaves a clean connection behind: the
/// queued end rolls back and resets, so the same server session serves the next request.
#[tokio::test]
async fn a_refused_read_keeps_its_connection_clean_and_pooled() {
    let db = PgDb::create().await;
    let a = Airlock::start(&config(&db, "[connections.limits]\npool_size = 1")).await;
    let agent = a.agent();
    let pid = |b: &Value| b["rows"][0][0].clone();
    let (s, first) = a
        .query(&agent, "pg", json!({"sql": "SELECT pg_backend_pid()"}))
        .await;
    assert_eq!(s, 200, "{first}");
    for bad in [
        json!({"sql": "SELECT * FROM no_such_table"}),
        json!({"sql": "SELECT 1 / $1::int", "params": [0]}),
        json!({"sql": "SELECT $1::int", "params": ["not a number"]}),
    ] {
        let (s, b) = a.query(&agent, "pg", bad.clone()).await;
        assert_eq!(s, 400, "{bad}: {b}");
        assert!(b["database"]["sqlstate"].is_string(), "{b}");
    }
    let (s, again) = a
        .query(&agent, "pg", json!({"sql": "SELECT pg_backend_pid()"}))
        .await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(pid(&first), pid(&again), "the connection was kept");
    let (s, b) = a
        .query(
            &agent,
            "pg",
            json!({"sql": "SELECT current_setting('transaction_read_only')"}),
        )
        .await;
    assert_eq!((s, &b["rows"][0][0]), (200, &json!("on")), "{b}");
    a.stop().await;
}

/// A statement the server's grammar rejects is answered as a syntax error with the message
/// and position PostgreSQL itself gives for the same text (asked directly), audited as
/// refused; one the server accepts but the inspector cannot check stays a policy denial.
#[tokio::test]
async fn syntax_errors_carry_the_servers_message_and_position() {
    let db = PgDb::create().await;
    let owner = db.owner().await;
    owner.batch_execute("CREATE TABLE t (a int)").await.unwrap();
    let a = Airlock::start(&config(&db, "")).await;
    let t = a.agent();
    for sql in [
        "SELEC * FROM t",
        "SELECT a,\n  FROM t",
        "SELECT a FROM t t t",
        "SELECT 'é', a FROM t WHERE a = = 1",
        "SELECT a FROM t WHERE ",
    ] {
        let direct = owner.simple_query(sql).await.unwrap_err();
        let direct = direct.as_db_error().unwrap();
        let position = match direct.position() {
            Some(tokio_postgres::error::ErrorPosition::Original(p)) => *p,
            other => panic!("{sql:?}: {other:?}"),
        };
        let (s, b) = a.query(&t, "pg", json!({ "sql": sql })).await;
        assert_eq!(s, 400, "{sql:?}: {b}");
        assert_eq!(b["code"], "sql_syntax", "{sql:?}: {b}");
        assert_eq!(b["parser"], "postgresql");
        assert_eq!(b["position"], position, "{sql:?}: {b}");
        assert!(
            b["detail"].as_str().unwrap().starts_with(direct.message()),
            "{sql:?}: {b} vs {}",
            direct.message()
        );
        let execution_id = b["execution_id"].as_str().unwrap();
        let events = a.audit_of(execution_id).await;
        assert_eq!(events.len(), 2, "begin and end: {events:?}");
        assert_eq!(events[0]["decision"], "deny", "{events:?}");
    }
    // Valid PostgreSQL that the inspector does not follow: refused by policy, not blamed on
    // the agent's syntax.
    let (s, b) = a
        .query(
            &t,
            "pg",
            json!({"sql": "SELECT a FROM t FOR KEY SHARE SKIP LOCKED"}),
        )
        .await;
    if s != 200 {
        assert_eq!(s, 403, "{b}");
        assert_eq!(b["code"], "policy_denied", "{b}");
    }
    a.stop().await;
}
