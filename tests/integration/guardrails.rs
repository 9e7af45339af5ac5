//! Guardrails against the real servers: a corpus of statements per dialect runs through the
//! policy; every refused one must leave the canary table whole, every allowed one must run.

use mysql_async::prelude::Queryable;
use serde_json::json;

use crate::common::*;

const BUILTINS: &[&str] = &[
    "deny-unbounded-write",
    "deny-ddl",
    "deny-truncate",
    "deny-privilege-changes",
    "deny-server-file-access",
    "deny-copy",
    "deny-dynamic-sql",
    "deny-dynamic-sql-functions",
    "deny-session-tampering",
    "deny-session-functions",
    "deny-server-admin",
    "deny-catalog-exposure",
    "deny-unparsed",
];

fn config(name: &str, kind: &str, url: &str) -> String {
    let mut c = format!(
        "{DEV_ISSUER}\n[[connections]]\nname = \"{name}\"\nkind = \"{kind}\"\nurl = \"{url}\"\nread_only = true\n"
    );
    for b in BUILTINS {
        c.push_str(&format!("\n[[rules]]\nbuiltin = \"{b}\"\n"));
    }
    c.push_str(&format!(
        "\n[[rules]]\nid = \"agents-read\"\naction = \"allow\"\nconnections = [\"{name}\"]\nprincipals = [\"group:agents\"]\nmatch = {{ statements = [\"select\", \"explain\"] }}\n"
    ));
    c
}

/// Runs the corpus; returns the failures as readable lines.
async fn run(a: &Airlock, conn: &str, refused: &[&str], allowed: &[&str]) -> Vec<String> {
    let t = a.agent();
    let mut failures = Vec::new();
    for sql in refused {
        let (s, b) = a.query(&t, conn, json!({ "sql": sql })).await;
        if s == 200 {
            failures.push(format!("ran but must be refused: {sql}"));
        } else if !(s == 400 || s == 403) {
            failures.push(format!("refused with {s} (want 400/403): {sql}: {b}"));
        } else if s == 403 && b["rule"].is_null() && b["code"] != "read_only" {
            failures.push(format!("403 without a rule: {sql}: {b}"));
        }
    }
    for sql in allowed {
        let (s, b) = a.query(&t, conn, json!({ "sql": sql })).await;
        if s != 200 {
            failures.push(format!("refused but must run: {sql}: {b}"));
        }
    }
    failures
}

#[tokio::test]
async fn postgres_corpus() {
    let db = PgDb::create().await;
    let admin = db.admin().await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE canary (x int, note text);
             INSERT INTO canary SELECT g, 'row ' || g FROM generate_series(1, 10) g;
             CREATE FUNCTION wipe() RETURNS int LANGUAGE sql AS 'DELETE FROM canary; SELECT 1';
             GRANT SELECT ON canary TO {r}; GRANT EXECUTE ON FUNCTION wipe() TO {r};
             ALTER TABLE canary OWNER TO {r};",
            r = db.role
        ))
        .await
        .unwrap();
    let a = Airlock::start(&config("pg", "postgres", &db.url())).await;
    let refused = [
        // Catalogue views that expose other sessions or sample values.
        "SELECT * FROM pg_stats",
        "SELECT most_common_vals FROM pg_catalog.pg_stats WHERE tablename = 'canary'",
        "SELECT query FROM pg_stat_activity",
        "SELECT * FROM PG_CATALOG.PG_STATISTIC",
        "SELECT * FROM pg_locks",
        "SELECT txid_current()",
        "SELECT pg_current_xact_id()",
        // Locking reads are not reads: a select-only rule does not admit them.
        "SELECT * FROM canary FOR UPDATE",
        "SELECT * FROM canary FOR SHARE SKIP LOCKED",
        "SELECT * FROM canary FOR NO KEY UPDATE",
        "SELECT * FROM canary FOR KEY SHARE NOWAIT",
        "DELETE FROM canary",
        "delete/**/from canary where 1=1",
        "DeLeTe FROM \"canary\" WHERE x > 0",
        "UPDATE canary SET x = 0",
        "WITH d AS (DELETE FROM canary WHERE x > 0 RETURNING *) SELECT count(*) FROM d",
        "SELECT * FROM (WITH d AS (DELETE FROM canary WHERE x > 0 RETURNING *) SELECT * FROM d) s",
        "EXPLAIN ANALYZE DELETE FROM canary WHERE x > 0",
        "EXPLAIN (ANALYZE, COSTS OFF) UPDATE canary SET x = 1 WHERE x > 0",
        "SELECT * INTO canary_copy FROM canary",
        "DO $$ BEGIN DELETE FROM canary; END $$",
        "PREPARE p AS DELETE FROM canary WHERE x > 0",
        "EXECUTE p",
        "CALL some_proc()",
        "COPY canary TO PROGRAM 'touch /tmp/airlock-canary'",
        "COPY canary FROM '/etc/passwd'",
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT PG_CATALOG.PG_LS_DIR('.')",
        "SELECT * FROM pg_ls_dir('.')",
        "SELECT lo_import('/etc/passwd')",
        "SELECT set_config('search_path', 'x', false)",
        "SELECT pg_terminate_backend(pg_backend_pid())",
        "SELECT pg_advisory_lock(1)",
        "SELECT query_to_xml('DELETE FROM canary RETURNING 1', true, true, '')",
        "SELECT dblink_exec('dbname=x', 'DELETE FROM canary')",
        "DROP TABLE canary",
        "TRUNCATE canary",
        "ALTER TABLE canary ADD COLUMN y int",
        "CREATE TABLE t2 (x int)",
        "GRANT ALL ON canary TO PUBLIC",
        "CREATE ROLE evil",
        "SET search_path = evil",
        "RESET ALL",
        "BEGIN",
        "COMMIT",
        "LOCK TABLE canary",
        "SELECT 1; DELETE FROM canary",
        "SELECT 1 END DELETE FROM canary",
        "SELEC 1",
        "SELECT wipe()",
    ];
    let allowed = [
        "SELECT 'DROP TABLE canary' AS s",
        "SELECT 1 -- ; DELETE FROM canary",
        "/* DELETE FROM canary */ SELECT count(*) FROM canary",
        "SELECT x FROM canary WHERE note = 'DELETE FROM canary; DROP TABLE canary'",
        "SELECT $$DELETE FROM canary$$ AS dollar",
        "EXPLAIN SELECT * FROM canary",
        "WITH c AS (SELECT x FROM canary) SELECT sum(x) FROM c",
        "SELECT lower(note), count(*) FROM canary GROUP BY 1 ORDER BY 1",
    ];
    let failures = run(&a, "pg", &refused, &allowed).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let n: i64 = admin
        .query_one("SELECT count(*) FROM canary", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 10, "the canary must survive");
    let tables: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 1, "no new table may appear");
    assert!(!std::path::Path::new("/tmp/airlock-canary").exists());
    // Every decision is in the audit log, naming its rule.
    let auditor = a.token("aud", &["auditors"], airlock::config::PrincipalKind::Human);
    let (_, page) = a.get(&auditor, "/v1/audit?outcome=denied&limit=200").await;
    let denied = page["events"].as_array().unwrap();
    assert!(denied.len() >= 30, "{}", denied.len());
    assert!(denied.iter().all(|e| e["rule"].is_string()), "{page}");
    a.stop().await;
}

#[tokio::test]
async fn mariadb_corpus() {
    let db = MyDb::create().await;
    let mut admin = db.admin().await;
    admin
        .query_drop("CREATE TABLE canary (x INT, note TEXT); INSERT INTO canary VALUES (1,'a'),(2,'b'),(3,'c');")
        .await
        .unwrap();
    let a = Airlock::start(&config("my", "mysql", &db.url())).await;
    let refused = [
        "SELECT * FROM information_schema.PROCESSLIST",
        "SELECT info FROM INFORMATION_SCHEMA.processlist",
        "SELECT * FROM performance_schema.events_statements_current",
        "SELECT * FROM mysql.user",
        "SELECT * FROM canary FOR UPDATE",
        "SELECT * FROM canary LOCK IN SHARE MODE",
        "SELECT * FROM canary FOR SHARE NOWAIT",
        "DELETE FROM canary",
        "delete from canary where 1",
        "UPDATE canary SET x = 0",
        "SELECT 1 /*! , (SELECT 1) */",
        "/*!50000 DELETE FROM canary */",
        "SELECT 1 /*M! ; DELETE FROM canary */",
        "SELECT LOAD_FILE('/etc/passwd')",
        "SELECT * FROM canary INTO OUTFILE '/tmp/airlock-canary'",
        "LOAD DATA INFILE '/etc/passwd' INTO TABLE canary",
        "PREPARE s FROM 'DELETE FROM canary'",
        "DO SLEEP(1)",
        "SELECT GET_LOCK('x', 1)",
        "ANALYZE DELETE FROM canary WHERE x > 0",
        "HANDLER canary OPEN",
        "DROP TABLE canary",
        "TRUNCATE TABLE canary",
        "CREATE TABLE t2 (x INT)",
        "GRANT ALL ON *.* TO 'x'@'%'",
        "SET @@session.sql_mode = 'ANSI_QUOTES'",
        "SET NAMES latin1",
        "START TRANSACTION",
        "LOCK TABLES canary WRITE",
        "SELECT 1; DELETE FROM canary",
        "INSERT INTO canary VALUES (4, 'd')",
    ];
    let allowed = [
        "SELECT 'DROP TABLE canary' AS s",
        "SELECT 1 -- ; DELETE FROM canary",
        "SELECT 1 # ; DELETE FROM canary",
        "/* DELETE FROM canary */ SELECT count(*) FROM canary",
        "SELECT x FROM canary WHERE note = 'DELETE FROM canary'",
        "EXPLAIN SELECT * FROM canary",
        "SELECT UPPER(note), COUNT(*) FROM canary GROUP BY note",
    ];
    let failures = run(&a, "my", &refused, &allowed).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let n: Option<i64> = admin
        .query_first("SELECT count(*) FROM canary")
        .await
        .unwrap();
    assert_eq!(n, Some(3), "the canary must survive");
    let tables: Option<i64> = admin
        .exec_first(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ?",
            (db.name.clone(),),
        )
        .await
        .unwrap();
    assert_eq!(tables, Some(1), "no new table may appear");
    a.stop().await;
}

#[tokio::test]
async fn huge_deep_and_invalid_input_is_refused_clearly() {
    let db = PgDb::create().await;
    let a = Airlock::start(&config("pg", "postgres", &db.url())).await;
    let t = a.agent();
    let huge = format!("SELECT '{}'", "x".repeat(2 * 1024 * 1024));
    let resp = a
        .http
        .post(format!("{}/v1/connections/pg/query", a.base))
        .bearer_auth(&t)
        .json(&json!({ "sql": huge }))
        .send()
        .await
        .unwrap();
    assert!(
        resp.status() == 413 || resp.status() == 400,
        "{}",
        resp.status()
    );
    let deep = format!("SELECT {}1{}", "(".repeat(100_000), ")".repeat(100_000));
    let (s, b) = a
        .query(
            &t,
            "pg",
            json!({ "sql": &deep[..(900 * 1024).min(deep.len())] }),
        )
        .await;
    assert!(s == 400 || s == 403, "{b}");
    let chain = format!("SELECT {}", vec!["1"; 40_000].join("+"));
    let (s, b) = a.query(&t, "pg", json!({ "sql": chain })).await;
    assert!(s == 400 || s == 403 || s == 200, "{b}");
    // Still serving.
    let (s, _) = a.query(&t, "pg", json!({"sql": "SELECT 1"})).await;
    assert_eq!(s, 200);
    a.stop().await;
}
