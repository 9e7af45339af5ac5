//! Bad input: each gets a clear problem+json, the server keeps serving, nothing is lost.

use serde_json::json;

use crate::common::*;

async fn demo() -> Airlock {
    let embedded = airlock::config::EMBEDDED_DEFAULT
        .replace("listen = \"127.0.0.1:8080\"", "")
        .replace("[server]\n", "");
    Airlock::start(&embedded).await
}

async fn post_raw(
    a: &Airlock,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, String, serde_json::Value) {
    let resp = a
        .http
        .post(format!("{}/v1/connections/demo/query", a.base))
        .bearer_auth(a.agent())
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, resp.json().await.unwrap_or_default())
}

#[tokio::test]
async fn malformed_bodies_get_problem_json() {
    let a = demo().await;
    let (s, ct, b) = post_raw(&a, "application/json", b"{\"sql\": ".to_vec()).await;
    assert_eq!((s, ct.as_str()), (400, "application/problem+json"), "{b}");
    assert_eq!(b["code"], "malformed_body");
    let (s, _, b) = post_raw(&a, "text/plain", b"{\"sql\": \"select 1\"}".to_vec()).await;
    assert_eq!(s, 415, "{b}");
    let (s, _, b) = post_raw(&a, "application/json", vec![b' '; 2 * 1024 * 1024]).await;
    assert_eq!(s, 413, "{b}");
    let (s, _, b) = post_raw(
        &a,
        "application/json",
        b"{\"sql\": \"select \xff\"}".to_vec(),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    let (s, _, b) = post_raw(
        &a,
        "application/json",
        b"{\"sql\": \"select 1\", \"bogus\": 1}".to_vec(),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    let (s, _, b) = post_raw(&a, "application/json", b"{\"sql\": 42}".to_vec()).await;
    assert_eq!(s, 400, "{b}");
    // Unknown endpoint and wrong method.
    let r = a
        .http
        .get(format!("{}/v1/nope", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = a
        .http
        .delete(format!("{}/v1/connections", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    // Still serving.
    let (s, b) = a
        .query(&a.agent(), "demo", json!({"sql": "SELECT 1"}))
        .await;
    assert_eq!(s, 200, "{b}");
    a.stop().await;
}

#[tokio::test]
async fn sql_errors_and_params_are_explained() {
    let a = demo().await;
    let t = a.agent();
    let (s, b) = a
        .query(&t, "demo", json!({"sql": "SELECT nope FROM customers"}))
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["code"], "database_error");
    assert!(b["detail"].as_str().unwrap().contains("nope"));
    // A typo is the agent's to fix: 400 sql_syntax with the parser's message and where.
    let (s, b) = a.query(&t, "demo", json!({"sql": "SELEC 1"})).await;
    assert_eq!(s, 400, "a syntax error is explained: {b}");
    assert_eq!(b["code"], "sql_syntax");
    assert_eq!(b["rule"], "deny-unparsed");
    assert_eq!(b["position"], 1, "{b}");
    assert_eq!(
        (b["line"].clone(), b["column"].clone()),
        (json!(1), json!(1))
    );
    assert!(b["detail"].as_str().unwrap().contains("SELEC"), "{b}");
    let (s, b) = a
        .query(&t, "demo", json!({"sql": "SELECT ?", "params": []}))
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["code"], "invalid_params");
    let (s, b) = a
        .query(
            &t,
            "demo",
            json!({"sql": "SELECT ? || ?", "params": ["a", "b"]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["rows"][0][0], "ab");
    let (s, b) = a.query(&t, "demo", json!({"sql": "   "})).await;
    assert_eq!(s, 400, "{b}");
    let huge = format!("SELECT '{}'", "x".repeat(300 * 1024));
    let (s, b) = a.query(&t, "demo", json!({"sql": huge})).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["code"], "invalid_statement");
    let deep = format!("SELECT {}1{}", "(".repeat(2000), ")".repeat(2000));
    let (s, b) = a.query(&t, "demo", json!({"sql": deep})).await;
    assert_eq!(s, 403, "{b}");
    // Every one of these is in the audit log.
    let (s, b) = a.query(&t, "demo", json!({"sql": "SELECT 1"})).await;
    assert_eq!(s, 200, "{b}");
    let auditor = a.token("aud", &["auditors"], airlock::config::PrincipalKind::Human);
    let (_, page) = a.get(&auditor, "/v1/audit?limit=100").await;
    let begins = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["phase"] == "begin")
        .count();
    assert!(begins >= 8, "{page}");
    a.stop().await;
}

#[tokio::test]
async fn audit_is_for_auditors_and_paginates() {
    let a = demo().await;
    for _ in 0..5 {
        a.query(&a.agent(), "demo", json!({"sql": "SELECT 1"}))
            .await;
    }
    let (s, b) = a.get(&a.agent(), "/v1/audit").await;
    assert_eq!(s, 403, "{b}");
    let auditor = a.token("aud", &["auditors"], airlock::config::PrincipalKind::Human);
    let (s, page1) = a.get(&auditor, "/v1/audit?limit=4&subject=agent-1").await;
    assert_eq!(s, 200, "{page1}");
    assert_eq!(page1["events"].as_array().unwrap().len(), 4);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = a
        .get(
            &auditor,
            &format!("/v1/audit?limit=4&subject=agent-1&cursor={cursor}"),
        )
        .await;
    let first2 = page2["events"][0]["seq"].as_i64().unwrap();
    assert!(first2 < page1["events"][3]["seq"].as_i64().unwrap());
    let (s, _) = a.get(&auditor, "/v1/audit?limit=0").await;
    assert_eq!(s, 400);
    let (s, _) = a.get(&auditor, "/v1/audit?since=yesterday").await;
    assert_eq!(s, 400);
    a.stop().await;
}

/// A path segment that is not UTF-8 names nothing: 404 in problem+json, never axum's
/// plain-text rejection.
#[tokio::test]
async fn undecodable_path_segments_are_problem_json() {
    let a = demo().await;
    let t = a.agent();
    for path in [
        "/v1/connections/%FF",
        "/v1/connections/%FF/schema",
        "/v1/executions/%C3%28",
        "/v1/reviews/%FF",
        "/v1/sessions/%FF/recording",
    ] {
        let resp = a
            .http
            .get(format!("{}{path}", a.base))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert_eq!(ct, "application/problem+json", "{path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "not_found", "{path}");
    }
    a.stop().await;
}
