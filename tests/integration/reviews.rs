//! Human review: held requests, approvals bound to exactly that request, runs exactly once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock::config::PrincipalKind;
use serde_json::{Value, json};

use crate::common::*;

fn config(extra_rule: &str, review: &str) -> String {
    format!(
        r#"{DEV_ISSUER}
[[connections]]
name = "demo"
kind = "sqlite"
path = "demo.db"

[[rules]]
builtin = "deny-unbounded-write"

[[rules]]
id = "read"
action = "allow"
connections = ["demo"]
principals = ["*"]
match = {{ statements = ["select"] }}

[[rules]]
id = "writes-need-review"
action = "review"
connections = ["demo"]
principals = ["group:agents", "group:writers"]
match = {{ statements = ["insert", "update", "delete"] }}
review = {{ approvers = ["dba"], {review} }}
{extra_rule}
"#
    )
}

fn human(a: &Airlock, sub: &str, groups: &[&str]) -> String {
    a.token(sub, groups, PrincipalKind::Human)
}

async fn post(a: &Airlock, token: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = a.http.post(format!("{}{path}", a.base)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("sent");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

const UPDATE: &str = "UPDATE customers SET city = 'Paris' WHERE id <= 5";

async fn city_count(a: &Airlock) -> i64 {
    let c = rusqlite::Connection::open(a.data.path().join("demo.db")).unwrap();
    c.query_row(
        "SELECT count(*) FROM customers WHERE city = 'Paris'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test]
async fn approve_then_run_exactly_once() {
    let a = Airlock::start(&config("", "min_approvals = 1")).await;
    let agent = a.agent();
    let (s, held) = a.query(&agent, "demo", json!({"sql": UPDATE})).await;
    assert_eq!(s, 202, "{held}");
    assert_eq!(held["status"], "pending_review");
    assert_eq!(held["rule"], "writes-need-review");
    let exec = held["execution_id"].as_str().unwrap().to_string();
    let review = held["review_id"].as_str().unwrap().to_string();
    assert!(held["next"].as_str().unwrap().contains("/run"));

    let (s, b) = a.get(&agent, &format!("/v1/executions/{exec}")).await;
    assert_eq!(
        (s, b["status"].as_str()),
        (200, Some("pending_review")),
        "{b}"
    );
    let (s, b) = post(&a, &agent, &format!("/v1/executions/{exec}/run"), None).await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(b["code"], "review_pending");

    // The reviewer sees the statement, the facts and the params.
    let alice = human(&a, "alice", &["dba"]);
    let (s, list) = a.get(&alice, "/v1/reviews").await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["reviews"][0]["id"], review.as_str());
    assert_eq!(list["reviews"][0]["statement_visible"], UPDATE);
    assert_eq!(list["reviews"][0]["facts"]["kinds"], json!(["update"]));

    let (s, b) = post(&a, &alice, &format!("/v1/reviews/{review}/approve"), None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "approved");
    assert_eq!(city_count(&a).await, 0, "approval alone runs nothing");

    // Only the requester may run it.
    let other = a.token("agent-2", &["agents"], PrincipalKind::Agent);
    let (s, _) = post(&a, &other, &format!("/v1/executions/{exec}/run"), None).await;
    assert_eq!(s, 404);
    let (s, b) = post(&a, &agent, &format!("/v1/executions/{exec}/run"), None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["affected_rows"], 5);
    assert_eq!(city_count(&a).await, 5);
    let (s, b) = post(&a, &agent, &format!("/v1/executions/{exec}/run"), None).await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(b["code"], "already_ran");
    let (_, b) = a.get(&agent, &format!("/v1/executions/{exec}")).await;
    assert_eq!(b["status"], "done", "{b}");

    // The whole story is in the audit log.
    let auditor = human(&a, "aud", &["auditors"]);
    let (_, page) = a
        .get(&auditor, &format!("/v1/audit?execution_id={exec}"))
        .await;
    let ops: Vec<String> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|e| {
            format!(
                "{}:{}",
                e["phase"].as_str().unwrap(),
                e["outcome"]
                    .as_str()
                    .or(e["operation"].as_str())
                    .unwrap_or("")
            )
        })
        .collect();
    assert!(ops.contains(&"end:pending_review".to_string()), "{ops:?}");
    assert!(
        ops.contains(&"event:review.approved".to_string()),
        "{ops:?}"
    );
    assert!(ops.contains(&"end:ok".to_string()), "{ops:?}");
    a.stop().await;
}

#[tokio::test]
async fn who_may_approve() {
    let a = Airlock::start(&config("", "min_approvals = 1")).await;
    // bob is a human writer who is also a DBA: his request cannot be approved by himself.
    let bob = human(&a, "bob", &["writers", "dba"]);
    let (s, held) = a.query(&bob, "demo", json!({"sql": UPDATE})).await;
    assert_eq!(s, 202, "{held}");
    let review = held["review_id"].as_str().unwrap();
    let (s, b) = post(&a, &bob, &format!("/v1/reviews/{review}/approve"), None).await;
    assert_eq!(s, 403, "{b}");
    assert!(b["detail"].as_str().unwrap().contains("own"), "{b}");

    // An agent acting for alice: alice is in its act chain and may not approve it.
    let delegated = mint(
        a.data.path(),
        "agent-9",
        &["agents"],
        PrincipalKind::Agent,
        Some("alice"),
    );
    let (s, held) = a.query(&delegated, "demo", json!({"sql": UPDATE})).await;
    assert_eq!(s, 202, "{held}");
    let review = held["review_id"].as_str().unwrap();
    let alice = human(&a, "alice", &["dba"]);
    let (s, b) = post(&a, &alice, &format!("/v1/reviews/{review}/approve"), None).await;
    assert_eq!(s, 403, "{b}");
    // Not an approver group, not a human, or a delegated token: refused.
    let stranger = human(&a, "carol", &["sales"]);
    assert_eq!(
        post(
            &a,
            &stranger,
            &format!("/v1/reviews/{review}/approve"),
            None
        )
        .await
        .0,
        403
    );
    let robot = a.token("robot", &["dba"], PrincipalKind::Agent);
    assert_eq!(
        post(&a, &robot, &format!("/v1/reviews/{review}/approve"), None)
            .await
            .0,
        403
    );
    let via_agent = mint(
        a.data.path(),
        "dave",
        &["dba"],
        PrincipalKind::Human,
        Some("agent-x"),
    );
    assert_eq!(
        post(
            &a,
            &via_agent,
            &format!("/v1/reviews/{review}/approve"),
            None
        )
        .await
        .0,
        403
    );
    // A real approver can.
    let erin = human(&a, "erin", &["dba"]);
    let (s, b) = post(&a, &erin, &format!("/v1/reviews/{review}/approve"), None).await;
    assert_eq!(s, 200, "{b}");
    a.stop().await;
}

#[tokio::test]
async fn reject_and_expire() {
    let a = Airlock::start(&config("", "expires_in_secs = 2")).await;
    let agent = a.agent();
    let (_, held) = a.query(&agent, "demo", json!({"sql": UPDATE})).await;
    let (exec, review) = (
        held["execution_id"].as_str().unwrap(),
        held["review_id"].as_str().unwrap(),
    );
    let alice = human(&a, "alice", &["dba"]);
    let (s, b) = post(
        &a,
        &alice,
        &format!("/v1/reviews/{review}/reject"),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 400, "a reason is required: {b}");
    let (s, _) = post(
        &a,
        &alice,
        &format!("/v1/reviews/{review}/reject"),
        Some(json!({"reason": "use a narrower WHERE"})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, b) = post(&a, &agent, &format!("/v1/executions/{exec}/run"), None).await;
    assert_eq!(s, 422, "{b}");
    assert!(b["detail"].as_str().unwrap().contains("narrower"), "{b}");
    let (s, _) = post(&a, &alice, &format!("/v1/reviews/{review}/approve"), None).await;
    assert_eq!(s, 409, "a decided review stays decided");

    let (_, held) = a.query(&agent, "demo", json!({"sql": UPDATE})).await;
    let (exec, review) = (
        held["execution_id"].as_str().unwrap(),
        held["review_id"].as_str().unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (s, b) = post(&a, &alice, &format!("/v1/reviews/{review}/approve"), None).await;
    assert_eq!(s, 410, "{b}");
    let (s, b) = post(&a, &agent, &format!("/v1/executions/{exec}/run"), None).await;
    assert_eq!(s, 410, "{b}");
    assert_eq!(city_count(&a).await, 0);
    a.stop().await;
}

#[tokio::test]
async fn approval_goes_stale_when_config_or_policy_changes() {
    let data = tempfile::tempdir().unwrap();
    let path = data.path().to_path_buf();
    let a = Airlock::start_in(&config("", "min_approvals = 1"), data).await;
    let agent = a.agent();
    let (_, held) = a.query(&agent, "demo", json!({"sql": UPDATE})).await;
    let (exec, review) = (
        held["execution_id"].as_str().unwrap().to_string(),
        held["review_id"].as_str().unwrap().to_string(),
    );
    let (s, _) = post(
        &a,
        &human(&a, "alice", &["dba"]),
        &format!("/v1/reviews/{review}/approve"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let Airlock { running, data, .. } = a;
    running.unwrap().shutdown().await;
    assert_eq!(data.path(), path);
    // Same data, one more deny rule: the approval no longer holds.
    let a = Airlock::start_in(
        &config("[[rules]]\nid = \"freeze\"\naction = \"deny\"\nconnections = [\"demo\"]\nprincipals = [\"*\"]\nmatch = { statements = [\"update\"] }\n", "min_approvals = 1"),
        data,
    )
    .await;
    let (s, b) = post(&a, &agent, &format!("/v1/executions/{exec}/run"), None).await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(b["code"], "approval_stale");
    assert_eq!(city_count(&a).await, 0);
    a.stop().await;
}

#[tokio::test]
async fn concurrent_approvals_count_once_and_concurrent_runs_run_once() {
    let a = Airlock::start(&config("", "min_approvals = 2")).await;
    let agent = a.agent();
    let (_, held) = a.query(&agent, "demo", json!({"sql": UPDATE})).await;
    let (exec, review) = (
        held["execution_id"].as_str().unwrap().to_string(),
        held["review_id"].as_str().unwrap().to_string(),
    );
    let alice = human(&a, "alice", &["dba"]);
    let (s, b) = post(&a, &alice, &format!("/v1/reviews/{review}/approve"), None).await;
    assert_eq!(
        (s, b["status"].as_str()),
        (200, Some("pending_review")),
        "{b}"
    );
    let (s, _) = post(&a, &alice, &format!("/v1/reviews/{review}/approve"), None).await;
    assert_eq!(s, 409, "the same approver twice does not count twice");
    // Two different approvers at the same moment: exactly two approvals recorded.
    let (carol, dave) = (human(&a, "carol", &["dba"]), human(&a, "dave", &["dba"]));
    let path = format!("/v1/reviews/{review}/approve");
    let (r1, r2) = tokio::join!(post(&a, &carol, &path, None), post(&a, &dave, &path, None));
    let statuses = [r1.0, r2.0];
    assert!(statuses.contains(&200), "{statuses:?}");
    let (_, view) = a.get(&alice, &format!("/v1/reviews/{review}")).await;
    assert_eq!(view["status"], "approved");
    assert_eq!(view["approvals"].as_array().unwrap().len(), 2, "{view}");

    let run_path = format!("/v1/executions/{exec}/run");
    let (x, y) = tokio::join!(
        post(&a, &agent, &run_path, None),
        post(&a, &agent, &run_path, None)
    );
    let mut codes = [x.0, y.0];
    codes.sort();
    assert_eq!(codes, [200, 409], "{x:?} {y:?}");
    assert_eq!(city_count(&a).await, 5);
    a.stop().await;
}

#[tokio::test]
async fn wait_returns_the_result_and_idempotency_finds_the_review() {
    let a = Airlock::start(&config("", "min_approvals = 1")).await;
    let agent = a.agent();
    let send = |key: &str, sql: &str, wait: u64| {
        a.http
            .post(format!("{}/v1/connections/demo/query?wait={wait}", a.base))
            .bearer_auth(&agent)
            .header("idempotency-key", key)
            .json(&json!({"sql": sql}))
            .send()
    };
    let first: Value = send("step-1", UPDATE, 0)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let again: Value = send("step-1", UPDATE, 0)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        first["execution_id"], again["execution_id"],
        "{first} {again}"
    );
    let other = send(
        "step-1",
        "UPDATE customers SET city = 'Oslo' WHERE id = 1",
        0,
    )
    .await
    .unwrap();
    assert_eq!(other.status(), 409);

    // Approve after a second while the agent waits: the result comes in the same response.
    let review = first["review_id"].as_str().unwrap().to_string();
    let alice = human(&a, "alice", &["dba"]);
    let approver = {
        let (http, base, alice) = (a.http.clone(), a.base.clone(), alice.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            http.post(format!("{base}/v1/reviews/{review}/approve"))
                .bearer_auth(alice)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    let resp = send("step-1", UPDATE, 20).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["affected_rows"], 5, "{body}");
    assert_eq!(approver.await.unwrap(), 200);
    let (s, _) = a.query(&agent, "demo", json!({"sql": "SELECT 1"})).await;
    assert_eq!(s, 200);
    let bad = a
        .http
        .post(format!("{}/v1/connections/demo/query?wait=999", a.base))
        .bearer_auth(&agent)
        .json(&json!({"sql": UPDATE}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    a.stop().await;
}

#[tokio::test]
async fn affected_rows_guard_rolls_back() {
    let a = Airlock::start(&config("", "min_approvals = 1")).await;
    let agent = a.agent();
    let (_, held) = a.query(&agent, "demo", json!({"sql": UPDATE})).await;
    let (exec, review) = (
        held["execution_id"].as_str().unwrap(),
        held["review_id"].as_str().unwrap(),
    );
    let alice = human(&a, "alice", &["dba"]);
    let (s, b) = post(
        &a,
        &alice,
        &format!("/v1/reviews/{review}/approve"),
        Some(json!({"max_affected_rows": 2})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = post(&a, &agent, &format!("/v1/executions/{exec}/run"), None).await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(b["code"], "affected_rows_exceeded");
    assert_eq!(city_count(&a).await, 0, "rolled back");
    let (_, b) = a.get(&agent, &format!("/v1/executions/{exec}")).await;
    assert_eq!(b["status"], "failed", "{b}");
    a.stop().await;
}

#[tokio::test]
async fn webhook_gets_signed_escaped_notifications() {
    // (timestamp header, signature header, raw body) of each delivery.
    type Deliveries = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;
    let received: Deliveries = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let sink = sink.clone();
                async move {
                    let h = |k: &str| {
                        headers
                            .get(k)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string()
                    };
                    sink.lock().unwrap().push((
                        h("x-airlock-timestamp"),
                        h("x-airlock-signature"),
                        body.to_vec(),
                    ));
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    // SAFETY of the test: a unique variable name, set before the server reads it.
    let var = format!("AIRLOCK_TEST_HOOK_{}", std::process::id());
    unsafe { std::env::set_var(&var, "hook-secret") };
    let cfg = format!(
        "{}\n[reviews]\nwebhook_url = \"{hook}\"\nwebhook_secret = \"env:{var}\"\nallow_insecure_http = true\n",
        config("", "min_approvals = 1")
    );
    let a = Airlock::start(&cfg).await;
    let (s, _) = a
        .query(
            &a.agent(),
            "demo",
            json!({"sql": "UPDATE customers SET city = '<!channel> @here `x`' WHERE id = 1"}),
        )
        .await;
    assert_eq!(s, 202);
    assert!(
        eventually(Duration::from_secs(5), || async {
            !received.lock().unwrap().is_empty()
        })
        .await
    );
    let (ts, sig, raw) = received.lock().unwrap()[0].clone();
    let body: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(body["event"], "review.filed");
    let text = body["text"].as_str().unwrap();
    assert!(
        !text.contains("<!channel>") && !text.contains("@here"),
        "{text}"
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"hook-secret");
    let mut signed = ts.as_bytes().to_vec();
    signed.push(b'.');
    signed.extend_from_slice(&raw);
    let expected = format!(
        "sha256={}",
        hex::encode(aws_lc_rs::hmac::sign(&key, &signed).as_ref())
    );
    assert_eq!(sig, expected);
    a.stop().await;
}

#[tokio::test]
async fn wait_on_one_instance_approve_on_another_sharing_a_postgres_store() {
    let store = PgDb::create().await;
    let cfg = format!(
        "[store]\nurl = \"postgres://postgres@127.0.0.1:5432/{}\"\n{}",
        store.name,
        config("", "min_approvals = 1")
    );
    let a = Airlock::start(&cfg).await;
    // Instance B shares the store and trusts the same dev issuer key.
    let b_data = tempfile::tempdir().unwrap();
    std::fs::copy(
        a.data.path().join(airlock::identity::dev::KEY_FILE),
        b_data.path().join(airlock::identity::dev::KEY_FILE),
    )
    .unwrap();
    let b = Airlock::start_in(&cfg, b_data).await;

    let agent = a.agent();
    let (_, held) = a.query(&agent, "demo", json!({"sql": UPDATE})).await;
    let review = held["review_id"].as_str().unwrap().to_string();
    let waiting = {
        let (http, base, agent) = (a.http.clone(), a.base.clone(), agent.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let r = http
                .post(format!("{base}/v1/connections/demo/query?wait=30"))
                .bearer_auth(agent)
                .header("idempotency-key", "two-instances")
                .json(&json!({"sql": UPDATE}))
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap(),
                started.elapsed(),
            )
        })
    };
    // The waiting request filed its own review (it had an idempotency key); approve that one on B.
    let alice = human(&b, "alice", &["dba"]);
    let mut pending = None;
    for _ in 0..50 {
        let (_, list) = b.get(&alice, "/v1/reviews?status=pending").await;
        pending = list["reviews"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] != review.as_str())
            .map(|r| r["id"].as_str().unwrap().to_string());
        if pending.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pending = pending.expect("the waiting request's review is visible on instance B");
    let (s, body) = post(&b, &alice, &format!("/v1/reviews/{pending}/approve"), None).await;
    assert_eq!(s, 200, "{body}");
    let (status, body, elapsed) = waiting.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["affected_rows"], 5);
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn reviewers_see_parameter_values_masked_unless_exempt() {
    let masking =
        "[[masking]]\nconnections = [\"demo\"]\ndetectors = [\"all\"]\nexempt_groups = [\"pii\"]\n";
    let a = Airlock::start(&config(masking, "min_approvals = 1")).await;
    let (s, held) = a
        .query(
            &a.agent(),
            "demo",
            json!({"sql": "UPDATE cities SET name = ? WHERE id = ?", "params": ["ada@example.com", 7]}),
        )
        .await;
    assert_eq!(s, 202, "{held}");
    let review = held["review_id"].as_str().unwrap();
    let (s, b) = a
        .get(
            &human(&a, "alice", &["dba"]),
            &format!("/v1/reviews/{review}"),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["params"][1], 7, "{b}");
    assert!(
        !b["params"][0].as_str().unwrap().contains("ada@example.com"),
        "{b}"
    );
    let (s, b) = a
        .get(
            &human(&a, "erin", &["dba", "pii"]),
            &format!("/v1/reviews/{review}"),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["params"], json!(["ada@example.com", 7]), "{b}");
    a.stop().await;
}

/// The reviewer sees, and the approval binds, the statement that will run — Airlock's
/// rendering without the agent's comments — and the run executes exactly that.
#[tokio::test]
async fn the_reviewer_sees_what_will_run_not_the_agents_text() {
    let a = Airlock::start(&config("", "min_approvals = 1")).await;
    let agent = a.agent();
    let sent = "UPDATE customers /* looks harmless */ SET city = 'Paris' -- note\nWHERE id <= 5";
    let (s, held) = a.query(&agent, "demo", json!({ "sql": sent })).await;
    assert_eq!(s, 202, "{held}");
    let exec = held["execution_id"].as_str().unwrap().to_string();
    let review = held["review_id"].as_str().unwrap().to_string();
    let alice = human(&a, "alice", &["dba"]);
    let (_, list) = a.get(&alice, "/v1/reviews").await;
    assert_eq!(list["reviews"][0]["statement_visible"], UPDATE, "{list}");
    let (s, b) = post(&a, &alice, &format!("/v1/reviews/{review}/approve"), None).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = post(&a, &agent, &format!("/v1/executions/{exec}/run"), None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(city_count(&a).await, 5);
    let audit = a.audit_of(&exec).await;
    let begin = audit.iter().find(|e| e["phase"] == "begin").unwrap();
    assert_eq!(begin["statement"], UPDATE, "{begin}");
    assert!(
        begin["submitted"]
            .as_str()
            .unwrap()
            .contains("looks harmless")
    );
    a.stop().await;
}

/// Sends `sql` with an Idempotency-Key (and `?wait=`), answering status, headers and body.
async fn keyed(
    a: &Airlock,
    token: &str,
    key: &str,
    sql: &str,
    wait: u64,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = a
        .http
        .post(format!("{}/v1/connections/demo/query?wait={wait}", a.base))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&json!({ "sql": sql }))
        .send()
        .await
        .unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    (status, headers, resp.json().await.unwrap_or(Value::Null))
}

/// A retry with the same Idempotency-Key answers the execution's current state, never a
/// stale 202: approved → it runs; ran → the same result again (nothing runs twice);
/// rejected → 422; expired → 410.
#[tokio::test]
async fn idempotent_retry_answers_the_current_state() {
    const MASK_EMAIL: &str = r#"
[[masking]]
connections = ["demo"]
columns = [{ column = "email", strategy = "redact" }]
"#;
    let a = Airlock::start(&config(MASK_EMAIL, "expires_in_secs = 3")).await;
    let agent = a.agent();
    let alice = human(&a, "alice", &["dba"]);
    const RETURNING: &str = "UPDATE customers SET city = 'Paris' WHERE id <= 3 RETURNING id, email";

    // Pending: the same 202, with Location and structured next steps.
    let (s, headers, held) = keyed(&a, &agent, "k-run", RETURNING, 0).await;
    assert_eq!(s, 202, "{held}");
    let exec = held["execution_id"].as_str().unwrap().to_string();
    let review = held["review_id"].as_str().unwrap().to_string();
    assert_eq!(
        headers.get("location").and_then(|v| v.to_str().ok()),
        Some(format!("/v1/executions/{exec}").as_str())
    );
    let actions = held["next_actions"].as_array().unwrap();
    assert!(
        actions
            .iter()
            .any(|x| x["method"] == "POST"
                && x["href"] == format!("/v1/executions/{exec}/run?wait=55")),
        "{held}"
    );
    let (s, _, again) = keyed(&a, &agent, "k-run", RETURNING, 0).await;
    assert_eq!((s, &again["execution_id"]), (202, &held["execution_id"]));

    // Approved (with a comment for the agent): the retry runs it, once.
    let (s, b) = post(
        &a,
        &alice,
        &format!("/v1/reviews/{review}/approve"),
        Some(json!({"comment": "ok for the Paris move"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (_, view) = a.get(&agent, &format!("/v1/executions/{exec}")).await;
    assert_eq!(
        view["approvals"][0]["comment"], "ok for the Paris move",
        "{view}"
    );
    assert_eq!(
        view["next_actions"][0]["href"],
        format!("/v1/executions/{exec}/run")
    );
    let (s, _, first) = keyed(&a, &agent, "k-run", RETURNING, 0).await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(first["row_count"], 3);
    assert_eq!(city_count(&a).await, 3);
    // Ran: the kept result, masked as it was the first time, and nothing runs again.
    let (s, _, replay) = keyed(&a, &agent, "k-run", RETURNING, 0).await;
    assert_eq!(s, 200, "{replay}");
    assert_eq!(replay["rows"], first["rows"]);
    assert_eq!(replay["columns"], first["columns"]);
    assert!(
        !replay["rows"].to_string().contains('@'),
        "masked: {replay}"
    );
    assert!(
        replay["rows"].to_string().contains("[REDACTED]"),
        "masked: {replay}"
    );
    assert_eq!(replay["execution_id"], exec.as_str());
    assert_eq!(city_count(&a).await, 3);
    // Run by its execution id after that: already ran.
    let (s, b) = post(&a, &agent, &format!("/v1/executions/{exec}/run"), None).await;
    assert_eq!((s, b["code"].as_str()), (409, Some("already_ran")), "{b}");
    // The comment and the replay are on record.
    let auditor = human(&a, "aud", &["auditors"]);
    let (_, page) = a
        .get(&auditor, &format!("/v1/audit?execution_id={exec}"))
        .await;
    let events = page["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["operation"] == "review.approved" && e["reason"] == "ok for the Paris move"),
        "{page}"
    );
    let (_, page) = a.get(&auditor, "/v1/audit?limit=200").await;
    assert!(
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["operation"] == "replay" && e["review_id"] == review.as_str()),
        "{page}"
    );

    // Rejected: 422 with the reason, on every retry.
    let (_, _, held) = keyed(&a, &agent, "k-reject", UPDATE, 0).await;
    let review = held["review_id"].as_str().unwrap();
    let (s, _) = post(
        &a,
        &alice,
        &format!("/v1/reviews/{review}/reject"),
        Some(json!({"reason": "not today"})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _, b) = keyed(&a, &agent, "k-reject", UPDATE, 0).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (422, Some("review_rejected")),
        "{b}"
    );
    assert!(b["detail"].as_str().unwrap().contains("not today"));

    // Expired: 410.
    let (_, _, held) = keyed(&a, &agent, "k-expire", "DELETE FROM orders WHERE id = 1", 0).await;
    assert_eq!(held["status"], "pending_review", "{held}");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (s, _, b) = keyed(&a, &agent, "k-expire", "DELETE FROM orders WHERE id = 1", 0).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (410, Some("review_expired")),
        "{b}"
    );
    a.stop().await;
}

/// `POST /v1/executions/{id}/run?wait=` waits for the decision and runs at once;
/// `GET /v1/executions/{id}?wait=` is a long poll that answers when the state changes.
#[tokio::test]
async fn run_and_status_wait_for_the_decision() {
    let a = Airlock::start(&config("", "min_approvals = 1")).await;
    let agent = a.agent();
    let (_, held) = a.query(&agent, "demo", json!({"sql": UPDATE})).await;
    let exec = held["execution_id"].as_str().unwrap().to_string();
    let review = held["review_id"].as_str().unwrap().to_string();
    let alice = human(&a, "alice", &["dba"]);
    let approve_soon = |delay: u64| {
        let (http, base, alice, review) = (
            a.http.clone(),
            a.base.clone(),
            alice.clone(),
            review.clone(),
        );
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            http.post(format!("{base}/v1/reviews/{review}/approve"))
                .bearer_auth(alice)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    // Someone else's wait learns nothing and waits for nothing.
    let other = a.token("agent-2", &["agents"], PrincipalKind::Agent);
    let started = std::time::Instant::now();
    let (s, _) = post(
        &a,
        &other,
        &format!("/v1/executions/{exec}/run?wait=5"),
        None,
    )
    .await;
    assert_eq!(s, 404);
    assert!(started.elapsed() < Duration::from_secs(2));

    let approver = approve_soon(800);
    let started = std::time::Instant::now();
    let (s, b) = a
        .get(&agent, &format!("/v1/executions/{exec}?wait=20"))
        .await;
    assert_eq!((s, b["status"].as_str()), (200, Some("approved")), "{b}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(approver.await.unwrap(), 200);
    let (s, b) = post(
        &a,
        &agent,
        &format!("/v1/executions/{exec}/run?wait=20"),
        None,
    )
    .await;
    assert_eq!((s, b["affected_rows"].as_u64()), (200, Some(5)), "{b}");

    // Pending, then approved while the run waits: the run's answer is the result.
    let (_, held) = a
        .query(
            &agent,
            "demo",
            json!({"sql": "DELETE FROM orders WHERE id = 2"}),
        )
        .await;
    let exec = held["execution_id"].as_str().unwrap().to_string();
    let review2 = held["review_id"].as_str().unwrap().to_string();
    let approver = {
        let (http, base, alice) = (a.http.clone(), a.base.clone(), alice.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            http.post(format!("{base}/v1/reviews/{review2}/approve"))
                .bearer_auth(alice)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    let (s, b) = post(
        &a,
        &agent,
        &format!("/v1/executions/{exec}/run?wait=20"),
        None,
    )
    .await;
    assert_eq!((s, b["affected_rows"].as_u64()), (200, Some(1)), "{b}");
    assert_eq!(approver.await.unwrap(), 200);
    let (s, b) = post(
        &a,
        &agent,
        &format!("/v1/executions/{exec}/run?wait=99"),
        None,
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("invalid_query")), "{b}");
    a.stop().await;
}
