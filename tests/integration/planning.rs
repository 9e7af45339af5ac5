//! What an agent can learn before acting: the dry run (`/check`) and its permissions on a
//! connection, on the embedded demo (agents read; writes need a DBA; emails, cards, SSNs
//! and phones masked for agents, not for a human DBA).

use airlock::config::PrincipalKind;
use serde_json::{Value, json};

use crate::common::*;

async fn demo() -> Airlock {
    let embedded = airlock::config::EMBEDDED_DEFAULT
        .replace("listen = \"127.0.0.1:8080\"", "")
        .replace("[server]\n", "");
    Airlock::start(&embedded).await
}

async fn check(a: &Airlock, token: &str, conn: &str, body: Value) -> (u16, Value) {
    let resp = a
        .http
        .post(format!("{}/v1/connections/{conn}/check", a.base))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn row_count(a: &Airlock, sql: &str) -> i64 {
    let c = rusqlite::Connection::open(a.data.path().join("demo.db")).unwrap();
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[tokio::test]
async fn check_answers_what_would_happen_and_runs_nothing() {
    let a = demo().await;
    let agent = a.agent();

    // Allowed: the rule, the statement as it would run, the limits, and the masking of
    // each output column.
    let (s, b) = check(
        &a,
        &agent,
        "demo",
        json!({"sql": "SELECT name, email, card_number, phone FROM customers WHERE id = ?", "params": [1], "max_rows": 5}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["decision"], "allow");
    assert_eq!(b["rule"], "agents-read-demo");
    assert_eq!(b["limits"]["max_rows"], 5);
    assert_eq!(b["facts"]["tables_read"], json!(["customers"]));
    let treatments: Vec<&str> = b["output_masking"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["treatment"].as_str().unwrap())
        .collect();
    assert_eq!(
        treatments,
        ["detectors", "redact", "partial", "hash"],
        "{b}"
    );
    assert_eq!(
        b["output_masking"][1]["sources"],
        json!(["customers.email"])
    );

    // A human DBA is exempt from masking.
    let dba = a.token("dana", &["dba"], PrincipalKind::Human);
    let (_, b) = check(
        &a,
        &dba,
        "demo",
        json!({"sql": "SELECT email FROM customers"}),
    )
    .await;
    assert_eq!(b["output_masking"][0]["treatment"], "none", "{b}");

    // Held for review: the approver groups; nothing is filed.
    let update = "UPDATE customers SET city = 'Paris' WHERE id = 7";
    let (s, b) = check(&a, &agent, "demo", json!({ "sql": update })).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["decision"], "review");
    assert_eq!(b["rule"], "demo-writes-need-review");
    assert_eq!(b["approvers"], json!(["dba"]));
    let (_, reviews) = a.get(&dba, "/v1/reviews").await;
    assert_eq!(reviews["reviews"], json!([]), "a check files no review");

    // Denied: the problem the request itself would get, guardrail and syntax alike.
    let (s, b) = check(&a, &agent, "demo", json!({"sql": "DELETE FROM orders"})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["decision"], "deny");
    assert_eq!(b["rule"], "deny-unbounded-write");
    assert_eq!(b["problem"]["code"], "policy_denied");
    assert_eq!(b["problem"]["status"], 403);
    let (real_status, real) = a
        .query(&agent, "demo", json!({"sql": "DELETE FROM orders"}))
        .await;
    assert_eq!((real_status, &real["code"]), (403, &b["problem"]["code"]));
    let (_, b) = check(&a, &agent, "demo", json!({"sql": "SELEC * FROM orders"})).await;
    assert_eq!(b["decision"], "deny", "{b}");
    assert_eq!(b["problem"]["code"], "sql_syntax");
    assert_eq!(b["problem"]["position"], 1);
    let (_, b) = check(&a, &agent, "demo", json!({"sql": "SELECT 1; SELECT 2"})).await;
    assert_eq!(b["problem"]["code"], "multiple_statements", "{b}");
    // A malformed request is answered as the request itself would be, not checked.
    let (s, b) = check(
        &a,
        &agent,
        "demo",
        json!({"sql": "SELECT 1", "max_rows": 999999999}),
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("invalid_limit")), "{b}");
    let (s, b) = check(&a, &agent, "demo", json!({"sql": "  "})).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (400, Some("invalid_statement")),
        "{b}"
    );

    // Malformed bodies and invisible connections answer as the request would.
    let (s, b) = check(&a, &agent, "demo", json!({"sql": "SELECT 1", "bogus": 1})).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (400, Some("malformed_body")),
        "{b}"
    );
    let (s, _) = check(&a, &agent, "nope", json!({"sql": "SELECT 1"})).await;
    assert_eq!(s, 404);

    // Nothing ran; every check is on record as a check.
    assert_eq!(
        row_count(
            &a,
            "SELECT count(*) FROM customers WHERE city = 'Paris' AND id = 7"
        )
        .await,
        0
    );
    let auditor = a.token("aud", &["auditors"], PrincipalKind::Human);
    let (_, page) = a.get(&auditor, "/v1/audit?limit=200").await;
    let checks: Vec<&Value> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["operation"] == "check" && e["phase"] == "begin")
        .collect();
    assert!(checks.len() >= 8, "{page}");
    assert!(
        checks
            .iter()
            .any(|e| e["decision"] == "review" && e["rule"] == "demo-writes-need-review"),
        "{page}"
    );
    a.stop().await;
}

#[tokio::test]
async fn a_connection_says_what_the_caller_may_do_there() {
    let a = demo().await;
    let agent = a.agent();
    let (s, b) = a.get(&agent, "/v1/connections/demo").await;
    assert_eq!(s, 200, "{b}");
    let p = &b["permissions"];
    let kind = |k: &str| {
        p["statements"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["statement"] == k)
            .cloned()
            .unwrap_or_else(|| panic!("no {k} in {p}"))
    };
    assert_eq!(kind("select")["decision"], "allow");
    assert_eq!(kind("update")["decision"], "review");
    assert_eq!(kind("update")["rule"], "demo-writes-need-review");
    assert!(
        kind("update")["guardrails"]
            .as_array()
            .unwrap()
            .contains(&json!("deny-unbounded-write")),
        "{p}"
    );
    assert_eq!(kind("drop")["decision"], "deny");
    assert_eq!(kind("truncate")["decision"], "deny");
    let masked: Vec<&str> = p["masking"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["column"].as_str().unwrap())
        .collect();
    assert!(masked.contains(&"customers.email"), "{p}");
    assert!(
        p["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == "agents-read-demo")
    );
    // The list stays light; a human DBA is exempt from masking and may write.
    let (_, list) = a.get(&agent, "/v1/connections").await;
    assert!(
        list["connections"][0].get("permissions").is_none(),
        "{list}"
    );
    let dba = a.token("dana", &["dba"], PrincipalKind::Human);
    let (_, b) = a.get(&dba, "/v1/connections/demo").await;
    assert_eq!(b["permissions"]["masking"]["columns"], json!([]), "{b}");
    let update = b["permissions"]["statements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["statement"] == "update")
        .cloned()
        .unwrap();
    assert_eq!(update["decision"], "allow", "{b}");
    a.stop().await;
}
