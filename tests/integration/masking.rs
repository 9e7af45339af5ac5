//! Masking: values follow the data through the query, detectors catch the rest, humans in
//! exempt groups see clear values, and nothing clear reaches audit.

use airlock::config::PrincipalKind;
use serde_json::{Value, json};

use crate::common::*;

fn demo_config() -> String {
    airlock::config::EMBEDDED_DEFAULT
        .replace("listen = \"127.0.0.1:8080\"", "")
        .replace("[server]\n", "")
}

fn col<'a>(body: &'a Value, row: usize, name: &str) -> &'a Value {
    let idx = body["columns"]
        .as_array()
        .unwrap()
        .iter()
        .position(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no column {name} in {body}"));
    &body["rows"][row][idx]
}

#[tokio::test]
async fn demo_masks_for_agents_and_not_for_a_dba() {
    let a = Airlock::start(&demo_config()).await;
    let sql = "SELECT id, name, email, card_number, ssn, phone FROM customers ORDER BY id LIMIT 3";
    let (s, b) = a.query(&a.agent(), "demo", json!({ "sql": sql })).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(col(&b, 0, "email"), "[REDACTED]");
    assert_eq!(col(&b, 0, "ssn"), "[REDACTED]");
    let card = col(&b, 0, "card_number").as_str().unwrap();
    assert!(
        card.starts_with("****-****-****-") && card.len() == 19,
        "{card}"
    );
    let phone = col(&b, 0, "phone").as_str().unwrap();
    assert!(phone.starts_with("h:"), "{phone}");
    assert!(!col(&b, 0, "name").as_str().unwrap().contains('*'));
    assert_eq!(b["masked"]["columns"]["email"], 3);
    // The same phone gives the same pseudonym: agents can still group and join.
    let (_, again) = a.query(&a.agent(), "demo", json!({ "sql": sql })).await;
    assert_eq!(col(&again, 0, "phone"), col(&b, 0, "phone"));

    let dba = a.token("alice", &["dba"], PrincipalKind::Human);
    let (s, clear) = a.query(&dba, "demo", json!({ "sql": sql })).await;
    assert_eq!(s, 200, "{clear}");
    assert!(col(&clear, 0, "email").as_str().unwrap().contains('@'));
    assert!(col(&clear, 0, "ssn").as_str().unwrap().contains('-'));
    // An agent claiming the dba group is still an agent: no exemption.
    let fake = a.token("agent-x", &["agents", "dba"], PrincipalKind::Agent);
    let (_, b) = a.query(&fake, "demo", json!({ "sql": sql })).await;
    assert_eq!(col(&b, 0, "email"), "[REDACTED]");
    a.stop().await;
}

#[tokio::test]
async fn lineage_follows_the_data_not_the_label() {
    let a = Airlock::start(&demo_config()).await;
    let t = a.agent();
    for sql in [
        "SELECT email AS contact FROM customers LIMIT 1",
        "SELECT lower(email) FROM customers LIMIT 1",
        "SELECT substr(email, 1, 3) || '...' AS hint FROM customers LIMIT 1",
        "WITH x AS (SELECT email AS e FROM customers) SELECT e FROM x LIMIT 1",
        "SELECT e FROM (SELECT ssn AS e FROM customers) sub LIMIT 1",
        "SELECT max(ssn) FROM customers",
        "SELECT group_concat(email, ',') FROM customers",
        "SELECT (SELECT email FROM customers LIMIT 1) AS s",
        "SELECT name FROM customers UNION ALL SELECT email FROM customers LIMIT 300",
    ] {
        let (s, b) = a.query(&t, "demo", json!({ "sql": sql })).await;
        assert_eq!(s, 200, "{sql}: {b}");
        let text = b["rows"].to_string();
        assert!(!text.contains("@example.com"), "{sql} leaked: {text}");
        assert!(
            b["masked"]["columns"]
                .as_object()
                .is_some_and(|m| !m.is_empty()),
            "{sql}: {b}"
        );
    }
    // SQLite reports every error as SQLITE_ERROR, and some functions quote their argument
    // in it: a transformed value no detector knows must not come back that way.
    let (s, b) = a
        .query(&t, "demo", json!({"sql": "SELECT json_extract('{}', 'x' || (SELECT group_concat(replace(ssn, '-', '/') || '~' || hex(card_number), ';') FROM customers))"}))
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        !b.to_string().contains('~'),
        "a transformed SSN leaked: {b}"
    );
    let (_, b) = a
        .query(&t, "demo", json!({"sql": "SELECT nope FROM customers"}))
        .await;
    assert!(b["detail"].as_str().unwrap().contains("nope"), "{b}");
    // `*` expands to the protected columns too.
    let (s, b) = a
        .query(
            &t,
            "demo",
            json!({"sql": "SELECT * FROM customers LIMIT 2"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(col(&b, 0, "email"), "[REDACTED]");
    assert!(!b["rows"].to_string().contains("@example.com"));
    // Unprotected data passes through untouched.
    let (_, b) = a.query(&t, "demo", json!({"sql": "SELECT id, city, count(*) AS n FROM customers GROUP BY city ORDER BY city LIMIT 3"})).await;
    assert!(
        b["masked"]["columns"].as_object().unwrap().is_empty(),
        "{b}"
    );
    a.stop().await;
}

#[tokio::test]
async fn detectors_catch_values_in_free_text_errors_and_audit() {
    let a = Airlock::start(&demo_config()).await;
    let t = a.agent();
    // A value that is not in a protected column is still caught by content detectors.
    let (s, b) = a
        .query(&t, "demo", json!({"sql": "SELECT 'write to bob@corp.example or call +44 20 7946 0958' AS note, '4111 1111 1111 1111' AS c, '550e8400-e29b-41d4-a716-446655440000' AS u, '2024-01-02' AS d"}))
        .await;
    assert_eq!(s, 200, "{b}");
    let row = b["rows"][0].to_string();
    assert!(
        !row.contains("bob@corp.example") && !row.contains("7946"),
        "{row}"
    );
    assert!(!row.contains("4111 1111 1111 1111"), "{row}");
    assert!(
        row.contains("550e8400-e29b-41d4-a716-446655440000"),
        "a UUID stays: {row}"
    );
    assert!(row.contains("2024-01-02"), "a date stays: {row}");
    assert!(b["masked"]["detectors"]["email"].as_u64().unwrap() >= 1);
    // Literals in the statement are masked in audit.
    let (s, b) = a
        .query(
            &t,
            "demo",
            json!({"sql": "SELECT id FROM customers WHERE email = 'ada.lovelace1@example.com'"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let events = a.audit_of(b["execution_id"].as_str().unwrap()).await;
    let stmt = events[0]["statement"].as_str().unwrap();
    assert!(!stmt.contains("ada.lovelace1@example.com"), "{stmt}");
    a.stop().await;
}

#[tokio::test]
async fn postgres_lineage_whole_rows_and_errors() {
    let db = PgDb::create().await;
    db.owner()
        .await
        .batch_execute(
            "CREATE TABLE customers (id int PRIMARY KEY, name text, email text, ssn text);
             INSERT INTO customers VALUES (1, 'Ada', 'ada@example.com', '123-45-6789');",
        )
        .await
        .unwrap();
    let a = Airlock::start(&format!(
        r#"{DEV_ISSUER}
[[connections]]
name = "pg"
kind = "postgres"
url = "{url}"

[[rules]]
id = "agents"
action = "allow"
connections = ["pg"]
principals = ["group:agents"]

[[masking]]
connections = ["pg"]
detectors = ["all"]
columns = [{{ column = "customers.email", strategy = "redact" }}, {{ column = "ssn", strategy = "redact" }}]
"#,
        url = db.url()
    ))
    .await;
    let t = a.agent();
    for sql in [
        "SELECT c FROM customers c",
        "SELECT to_json(c) FROM customers c",
        "SELECT row_to_json(c)::text FROM customers c",
        "SELECT string_agg(email, ',') FROM customers",
        "SELECT upper(email) FROM customers",
        "SELECT * FROM customers",
        "SELECT x.ssn FROM (SELECT * FROM customers) x",
    ] {
        let (s, b) = a.query(&t, "pg", json!({ "sql": sql })).await;
        assert_eq!(s, 200, "{sql}: {b}");
        let text = b["rows"].to_string().to_lowercase();
        assert!(
            !text.contains("ada@example.com") && !text.contains("123-45-6789"),
            "{sql} leaked: {text}"
        );
    }
    // The database echoes the value in its error: masked.
    let (s, b) = a
        .query(&t, "pg", json!({"sql": "SELECT 'ada@example.com'::int"}))
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(!b.to_string().contains("ada@example.com"), "{b}");
    // A derived value no detector recognises, pushed into the error text by a cast: the
    // server's text is withheld, the SQLSTATE stays.
    let (s, b) = a
        .query(
            &t,
            "pg",
            json!({"sql": "SELECT ('x' || translate(ssn, '0123456789', 'abcdefghij'))::int FROM customers"}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["database"]["sqlstate"], "22P02", "{b}");
    let text = b.to_string();
    assert!(
        !text.contains("bcd-ef-ghij") && !text.contains("123-45-6789"),
        "{b}"
    );
    // The same through an "undefined object" error: casting a value to a name puts the
    // value in a class-42 message (found by red-teaming); only syntax and unknown-column
    // errors keep the server's text.
    for sql in [
        "SELECT ('x' || translate(ssn, '0123456789', 'abcdefghij'))::regclass FROM customers",
        "SELECT ('x' || translate(ssn, '0123456789', 'abcdefghij'))::regproc FROM customers",
        "SELECT ('x' || translate(ssn, '0123456789', 'abcdefghij'))::regtype FROM customers",
    ] {
        let (s, b) = a.query(&t, "pg", json!({ "sql": sql })).await;
        let text = b.to_string();
        assert!(
            !text.contains("bcd-ef-ghij") && !text.contains("123-45-6789"),
            "{sql}: {s} {b}"
        );
    }
    let (s, b) = a
        .query(&t, "pg", json!({"sql": "SELECT nope FROM customers"}))
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(b["detail"].as_str().unwrap().contains("nope"), "{b}");
    let events = a.audit_of(b["execution_id"].as_str().unwrap()).await;
    assert!(
        !serde_json::to_string(&events)
            .unwrap()
            .contains("bcd-ef-ghij")
    );
    // Syntax errors keep their message: it names the statement, not data.
    let (s, b) = a
        .query(
            &t,
            "pg",
            json!({"sql": "SELECT nosuchcolumn FROM customers"}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["detail"].as_str().unwrap().contains("nosuchcolumn"),
        "{b}"
    );
    a.stop().await;
}

#[tokio::test]
async fn strict_mode_refuses_inference_and_untraceable_outputs() {
    let db = PgDb::create().await;
    db.owner()
        .await
        .batch_execute(
            "CREATE TABLE customers (id int PRIMARY KEY, name text, email text, ssn text);
             INSERT INTO customers VALUES (1, 'Ada', 'ada@example.com', '123-45-6789');
             CREATE FUNCTION peek(t text) RETURNS text LANGUAGE sql AS 'SELECT t';",
        )
        .await
        .unwrap();
    let a = Airlock::start(&format!(
        r#"{DEV_ISSUER}
[[connections]]
name = "pg"
kind = "postgres"
url = "{url}"

[[rules]]
id = "agents"
action = "allow"
connections = ["pg"]
principals = ["group:agents"]
# Names every function, the user's `peek` included (unlisted functions need naming).
match = {{ functions = ["*"] }}

[[masking]]
connections = ["pg"]
strict = true
columns = [{{ column = "ssn", strategy = "redact" }}, {{ column = "customers.email", strategy = "hash" }}]
"#,
        url = db.url()
    ))
    .await;
    let t = a.agent();
    for sql in [
        "SELECT id FROM customers WHERE ssn LIKE '1%'",
        "SELECT id FROM customers ORDER BY email",
        "SELECT count(*) FROM customers GROUP BY ssn",
        "SELECT a.id FROM customers a JOIN customers b ON a.ssn = b.ssn",
        "SELECT peek(name) FROM customers",
        // Row multiplicity: a set-returning function sized by the value, counted outside.
        "SELECT count(*) FROM customers, generate_series(1, ascii(substr(ssn, 1, 1)))",
        "SELECT count(*) FROM customers c, LATERAL generate_series(1, length(c.ssn)) g",
        "SELECT count(*) FROM (SELECT generate_series(1, ascii(ssn)) FROM customers) x",
        "SELECT generate_series(1, ascii(ssn)) FROM customers",
        // Anywhere but a directly selected column.
        "SELECT upper(ssn) FROM customers",
        "SELECT ssn, ssn || '' FROM customers",
        "SELECT (SELECT ssn FROM customers LIMIT 1)",
        "SELECT id FROM customers LIMIT (SELECT length(ssn) FROM customers LIMIT 1)",
        "SELECT id, row_number() OVER (ORDER BY ssn) FROM customers",
        "SELECT to_json(c) FROM customers c",
        "SELECT ssn FROM customers UNION SELECT '1'",
        "WITH x AS (SELECT ssn FROM customers) SELECT ssn FROM x",
        "SELECT count(*) FROM customers WHERE EXISTS (SELECT 1 FROM customers WHERE ssn > '5')",
    ] {
        let (s, b) = a.query(&t, "pg", json!({ "sql": sql })).await;
        assert_eq!(s, 403, "{sql}: {b}");
        assert_eq!(b["rule"], "masking-strict", "{sql}: {b}");
    }
    let (s, b) = a
        .query(
            &t,
            "pg",
            json!({"sql": "SELECT id, name, email FROM customers WHERE id = 1"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(b["rows"][0][2].as_str().unwrap().starts_with("h:"), "{b}");
    for sql in [
        "SELECT ssn FROM customers",
        "SELECT c.ssn AS s, c.name FROM customers c",
        "SELECT * FROM customers",
    ] {
        let (s, b) = a.query(&t, "pg", json!({ "sql": sql })).await;
        assert_eq!(s, 200, "{sql}: {b}");
        assert!(!b.to_string().contains("123-45-6789"), "{sql}: {b}");
    }
    a.stop().await;
}

/// `partial` and `hash` apply only to a stored value passed through unchanged: derived
/// values and values the agent could have chosen are redacted whole, on both databases.
#[tokio::test]
async fn partial_and_hash_apply_only_to_unchanged_values() {
    const CARD: &str = "4111111111111111";
    const EMAIL: &str = "ada@example.com";
    let pg = PgDb::create().await;
    pg.owner()
        .await
        .batch_execute(&format!(
            "CREATE TABLE customers (id int PRIMARY KEY, card text, email text);
             INSERT INTO customers VALUES (1, '{CARD}', '{EMAIL}');"
        ))
        .await
        .unwrap();
    let my = MyDb::create().await;
    {
        use mysql_async::prelude::Queryable;
        my.admin()
            .await
            .query_drop(format!(
                "CREATE TABLE customers (id INT PRIMARY KEY, card TEXT, email TEXT);
                 INSERT INTO customers VALUES (1, '{CARD}', '{EMAIL}');"
            ))
            .await
            .unwrap();
    }
    let a = Airlock::start(&format!(
        r#"{DEV_ISSUER}
[[connections]]
name = "pg"
kind = "postgres"
url = "{pg}"
[[connections]]
name = "my"
kind = "mysql"
url = "{my}"

[[rules]]
id = "agents"
action = "allow"
connections = ["pg", "my"]
principals = ["group:agents"]

[[masking]]
connections = ["pg", "my"]
columns = [{{ column = "customers.card", strategy = "partial" }}, {{ column = "customers.email", strategy = "hash" }}]
"#,
        pg = pg.url(),
        my = my.url()
    ))
    .await;
    let t = a.agent();
    for conn in ["pg", "my"] {
        let concat = if conn == "pg" {
            "'00000' || substr(card, {k}, 4)"
        } else {
            "CONCAT('00000', SUBSTR(card, {k}, 4))"
        };
        // The stored value, unchanged: the last four digits stay, the email is a pseudonym.
        let (s, b) = a
            .query(
                &t,
                conn,
                json!({ "sql": "SELECT card, email FROM customers" }),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        let card = b["rows"][0][0].as_str().unwrap().to_string();
        let pseudonym = b["rows"][0][1].as_str().unwrap().to_string();
        assert!(card.ends_with("1111") && !card.contains(CARD), "{card}");
        assert_ne!(pseudonym, EMAIL);
        // Four projections of shifted substrings: each is derived, so each is redacted.
        let projections: Vec<String> = [1, 5, 9, 13]
            .iter()
            .map(|k| concat.replace("{k}", &k.to_string()))
            .collect();
        let sql = format!("SELECT {} FROM customers", projections.join(", "));
        let (s, b) = a.query(&t, conn, json!({ "sql": sql })).await;
        assert_eq!(s, 200, "{b}");
        let text = b["rows"].to_string();
        for chunk in ["4111", "1111"] {
            assert!(
                !text.contains(chunk),
                "{conn}: {sql} leaked {chunk}: {text}"
            );
        }
        // A guess UNIONed into the hashed column would be hashed with the same key: the
        // union is redacted, so no pseudonym can be matched against a dictionary.
        let (s, b) = a
            .query(
                &t,
                conn,
                json!({ "sql": format!("SELECT email FROM customers UNION ALL SELECT '{EMAIL}'") }),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        let rows = b["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert!(
            rows.iter()
                .all(|r| r[0].as_str() != Some(pseudonym.as_str())),
            "{conn}: the pseudonym was computed over an agent's value: {b}"
        );
        assert!(!b.to_string().contains(EMAIL));
        // `lower(email)` is derived: redacted, not hashed.
        let (s, b) = a
            .query(
                &t,
                conn,
                json!({ "sql": "SELECT lower(email) FROM customers" }),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        assert_ne!(b["rows"][0][0].as_str(), Some(pseudonym.as_str()), "{b}");
        assert!(!b.to_string().contains(EMAIL));
    }
    a.stop().await;
}

/// Strict mode on MariaDB: row multiplicity through `JSON_TABLE` or a recursive CTE sized by
/// a protected value is refused before anything runs; a directly selected column is masked.
#[tokio::test]
async fn mariadb_strict_mode_refuses_multiplicity_channels() {
    use mysql_async::prelude::Queryable;
    let db = MyDb::create().await;
    db.admin()
        .await
        .query_drop(
            "CREATE TABLE customers (id INT PRIMARY KEY, name TEXT, ssn TEXT);
             INSERT INTO customers VALUES (1, 'Ada', '123-45-6789');",
        )
        .await
        .unwrap();
    let a = Airlock::start(&format!(
        r#"{DEV_ISSUER}
[[connections]]
name = "my"
kind = "mysql"
url = "{url}"

[[rules]]
id = "agents"
action = "allow"
connections = ["my"]
principals = ["group:agents"]

[[masking]]
connections = ["my"]
strict = true
columns = [{{ column = "ssn", strategy = "redact" }}]
"#,
        url = db.url()
    ))
    .await;
    let t = a.agent();
    for sql in [
        "SELECT COUNT(*) FROM customers c, JSON_TABLE(CONCAT('[', REPEAT('1,', ASCII(c.ssn)), '1]'), '$[*]' COLUMNS (x INT PATH '$')) j",
        "WITH RECURSIVE r (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < (SELECT ASCII(ssn) FROM customers LIMIT 1)) SELECT COUNT(*) FROM r",
        "SELECT COUNT(*) FROM customers WHERE ssn LIKE '1%'",
        "SELECT LENGTH(ssn) FROM customers",
    ] {
        let (s, b) = a.query(&t, "my", json!({ "sql": sql })).await;
        assert!(s == 403 || s == 400, "{sql}: {s} {b}");
        assert!(!b.to_string().contains("123-45-6789"), "{sql}: {b}");
        if s == 403 {
            assert_eq!(b["rule"], "masking-strict", "{sql}: {b}");
        }
    }
    let (s, b) = a
        .query(&t, "my", json!({ "sql": "SELECT id, ssn FROM customers" }))
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(!b.to_string().contains("123-45-6789"), "{b}");
    a.stop().await;
}
