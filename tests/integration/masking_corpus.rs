//! A hostile agent's masking corpus, on the real PostgreSQL and MariaDB, with and without
//! `strict`: whatever the statement does — derive, encode, aggregate, union, push the value
//! into an error — the protected clear values, and simple encodings of them, appear in no
//! response, no error and no audit record.

use base64::Engine;
use serde_json::{Value, json};

use crate::common::*;

const SSN: &str = "123-45-6789";
const CARD: &str = "4111111111111111";

/// The seeded values and the encodings a query can turn them into cheaply.
fn forbidden() -> Vec<String> {
    let mut out = Vec::new();
    for v in [SSN, CARD] {
        out.push(v.to_string());
        out.push(v.chars().rev().collect());
        out.push(v.replace('-', ""));
        out.push(hex::encode(v));
        out.push(hex::encode_upper(v));
        out.push(base64::engine::general_purpose::STANDARD.encode(v));
    }
    // The card's first twelve digits in any window of them (partial keeps only the last 4).
    out.push(CARD[..12].to_string());
    out
}

fn leaks(value: &Value) -> Option<String> {
    let text = value.to_string();
    forbidden().into_iter().find(|f| text.contains(f.as_str()))
}

fn config(kind: &str, url: &str, strict: bool) -> String {
    format!(
        r#"{DEV_ISSUER}
[[connections]]
name = "db"
kind = "{kind}"
url = "{url}"

[[rules]]
id = "agents"
action = "allow"
connections = ["db"]
principals = ["group:agents"]
match = {{ function_classes = ["sleep"] }}

[[masking]]
connections = ["db"]
strict = {strict}
detectors = ["all"]
columns = [{{ column = "ssn", strategy = "redact" }}, {{ column = "customers.card", strategy = "partial" }}, {{ column = "customers.email", strategy = "hash" }}]
"#
    )
}

async fn run(a: &Airlock, corpus: &[&str]) -> Vec<String> {
    let t = a.agent();
    let mut failures = Vec::new();
    for sql in corpus {
        let (s, b) = a.query(&t, "db", json!({ "sql": sql })).await;
        if let Some(f) = leaks(&b) {
            failures.push(format!("{s} leaked {f:?}: {sql}: {b}"));
        }
    }
    let auditor = a.token("aud", &["auditors"], airlock::config::PrincipalKind::Human);
    let (s, page) = a.get(&auditor, "/v1/audit?limit=1000").await;
    assert_eq!(s, 200, "{page}");
    if let Some(f) = leaks(&page) {
        failures.push(format!("the audit leaked {f:?}"));
    }
    failures
}

const PG: &[&str] = &[
    "SELECT ssn, card, email FROM customers",
    "SELECT * FROM customers",
    "SELECT reverse(ssn), reverse(card) FROM customers",
    "SELECT encode(ssn::bytea, 'base64'), encode(card::bytea, 'hex') FROM customers",
    "SELECT translate(ssn, '-', ''), replace(card, '1', '1') FROM customers",
    "SELECT '00000' || substr(card, 1, 4), '00000' || substr(card, 5, 4), '00000' || substr(card, 9, 4) FROM customers",
    "SELECT ('x' || translate(ssn, '9876543210', 'jihgfedcba'))::int FROM customers",
    "SELECT ssn::int FROM customers",
    "SELECT card::date FROM customers",
    "SELECT c FROM customers c",
    "SELECT row_to_json(c)::text FROM customers c",
    "SELECT json_build_object('v', ssn) FROM customers",
    "SELECT string_agg(ssn, ','), max(card) FROM customers",
    "SELECT (SELECT ssn FROM customers LIMIT 1)",
    "WITH x AS (SELECT ssn AS s FROM customers) SELECT s FROM x",
    "SELECT s FROM (SELECT ssn AS s, card AS k FROM customers) d",
    "SELECT email FROM customers UNION ALL SELECT 'ada@example.com'",
    "SELECT card FROM customers UNION SELECT '4111111111111111'",
    "SELECT ssn FROM customers ORDER BY 1",
    "SELECT id FROM customers WHERE ssn LIKE '1%'",
    "SELECT count(*) FROM customers, generate_series(1, ascii(substr(ssn, 1, 1)))",
    "SELECT array_agg(card)::text FROM customers",
    "SELECT format('%s', ssn) FROM customers",
    "SELECT to_jsonb(customers) FROM customers",
];

const MY: &[&str] = &[
    "SELECT ssn, card, email FROM customers",
    "SELECT * FROM customers",
    "SELECT REVERSE(ssn), REVERSE(card) FROM customers",
    "SELECT TO_BASE64(ssn), HEX(card) FROM customers",
    "SELECT REPLACE(ssn, '-', '') FROM customers",
    "SELECT CONCAT('00000', SUBSTR(card, 1, 4)), CONCAT('00000', SUBSTR(card, 5, 4)), CONCAT('00000', SUBSTR(card, 9, 4)) FROM customers",
    "SELECT EXTRACTVALUE('<a/>', CONCAT('/', ssn)) FROM customers",
    "SELECT UPDATEXML('<a/>', CONCAT('/', card), 'x') FROM customers",
    "SELECT JSON_OBJECT('v', ssn) FROM customers",
    "SELECT GROUP_CONCAT(ssn), MAX(card) FROM customers",
    "SELECT (SELECT ssn FROM customers LIMIT 1)",
    "WITH x AS (SELECT ssn AS s FROM customers) SELECT s FROM x",
    "SELECT s FROM (SELECT ssn AS s, card AS k FROM customers) d",
    "SELECT email FROM customers UNION ALL SELECT 'ada@example.com'",
    "SELECT ssn FROM customers ORDER BY 1",
    "SELECT id FROM customers WHERE ssn LIKE '1%'",
    "SELECT CAST(card AS DECIMAL(30,0)) + 0 FROM customers",
    "SELECT ssn + 0, card * 1 FROM customers",
];

#[tokio::test]
async fn postgres_hostile_corpus_leaks_nothing_in_either_mode() {
    let db = PgDb::create().await;
    db.owner()
        .await
        .batch_execute(&format!(
            "CREATE TABLE customers (id int PRIMARY KEY, ssn text, card text, email text);
             INSERT INTO customers VALUES (1, '{SSN}', '{CARD}', 'ada@example.com');"
        ))
        .await
        .unwrap();
    for strict in [false, true] {
        let a = Airlock::start(&config("postgres", &db.url(), strict)).await;
        let failures = run(&a, PG).await;
        assert!(
            failures.is_empty(),
            "strict = {strict}:\n{}",
            failures.join("\n")
        );
        a.stop().await;
    }
}

#[tokio::test]
async fn mariadb_hostile_corpus_leaks_nothing_in_either_mode() {
    use mysql_async::prelude::Queryable;
    let db = MyDb::create().await;
    db.admin()
        .await
        .query_drop(format!(
            "CREATE TABLE customers (id INT PRIMARY KEY, ssn TEXT, card TEXT, email TEXT);
             INSERT INTO customers VALUES (1, '{SSN}', '{CARD}', 'ada@example.com');"
        ))
        .await
        .unwrap();
    for strict in [false, true] {
        let a = Airlock::start(&config("mysql", &db.url(), strict)).await;
        let failures = run(&a, MY).await;
        assert!(
            failures.is_empty(),
            "strict = {strict}:\n{}",
            failures.join("\n")
        );
        a.stop().await;
    }
}
