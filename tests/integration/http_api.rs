//! HTTP API targets through the whole pipeline, against an API server the test runs on
//! loopback: credentials only Airlock holds, paths that cannot leave the base, rules over
//! method and path, review bound to the exact request, masked responses, audit.

use std::sync::{Arc, Mutex};

use airlock::config::PrincipalKind;
use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::common::*;

/// What the API server saw: method, path with query, authorization, body.
type Seen = Arc<Mutex<Vec<(String, String, Option<String>, String)>>>;

async fn api(seen: Seen) -> String {
    let app = Router::new().fallback(move |req: Request| {
        let seen = seen.clone();
        async move {
            let method = req.method().to_string();
            let uri = req.uri().to_string();
            let auth = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                .await
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            seen.lock()
                .unwrap()
                .push((method.clone(), uri.clone(), auth, body));
            respond(&method, &uri)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

fn respond(method: &str, uri: &str) -> Response {
    let json = |v: Value| {
        (
            StatusCode::OK,
            [("content-type", "application/json")],
            v.to_string(),
        )
            .into_response()
    };
    match (method, uri) {
        ("GET", "/api/customers") => json(json!({"customers": [
            {"id": 1, "name": "Ann", "email": "ann@example.com", "ssn": "123-45-6789"},
            {"id": 2, "name": "Bob", "email": "bob@example.com", "ssn": "987-65-4321"}
        ]})),
        ("GET", "/api/missing") => (StatusCode::NOT_FOUND, "no such thing").into_response(),
        ("GET", "/api/away") => (
            StatusCode::FOUND,
            [("location", "http://127.0.0.1:1/steal")],
            "",
        )
            .into_response(),
        ("GET", "/api/big") => (
            StatusCode::OK,
            [("content-type", "text/plain")],
            "x".repeat(200_000),
        )
            .into_response(),
        ("POST", u) if u.starts_with("/api/refunds") => json(json!({"refunded": true})),
        _ => (StatusCode::IM_A_TEAPOT, "unexpected").into_response(),
    }
}

fn config(base: &str) -> String {
    format!(
        r#"{DEV_ISSUER}
[[connections]]
name = "api"
kind = "http"
base_url = "{base}/api"
insecure_http = true
auth = {{ type = "bearer", token = "env:AIRLOCK_TEST_API_TOKEN" }}
[connections.limits]
max_bytes = 50000

[[rules]]
id = "no-admin"
action = "deny"
connections = ["api"]
principals = ["*"]
match = {{ paths = ["/admin/**"] }}

[[rules]]
id = "writes-need-review"
action = "review"
connections = ["api"]
principals = ["group:agents"]
match = {{ methods = ["POST", "PUT", "PATCH", "DELETE"] }}
review = {{ approvers = ["dba"] }}

[[rules]]
id = "agents-read"
action = "allow"
connections = ["api"]
principals = ["group:agents"]
match = {{ methods = ["GET"] }}

[[masking]]
connections = ["api"]
detectors = ["email"]
columns = [{{ column = "$.customers[*].ssn", strategy = "redact" }}]
"#
    )
}

async fn call(a: &Airlock, token: &str, body: Value) -> (u16, Value) {
    let resp = a
        .http
        .post(format!("{}/v1/connections/api/http", a.base))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_agent_calls_an_api_with_credentials_it_never_holds() {
    // SAFETY: tests in this binary use distinct variable names.
    unsafe { std::env::set_var("AIRLOCK_TEST_API_TOKEN", "s3cr3t-api-token") };
    let seen: Seen = Default::default();
    let base = api(seen.clone()).await;
    let a = Airlock::start(&config(&base)).await;
    let agent = a.agent();

    // A read: the credential is injected; the response is masked (JSON path + detector).
    let (s, b) = call(&a, &agent, json!({"method": "get", "path": "/customers"})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], 200);
    let customers = &b["body"]["customers"];
    assert_eq!(customers[0]["name"], "Ann");
    assert_eq!(customers[0]["ssn"], "[REDACTED]", "{b}");
    assert_ne!(customers[0]["email"], "ann@example.com", "{b}");
    assert!(!b.to_string().contains("s3cr3t-api-token"));
    {
        let seen = seen.lock().unwrap();
        let (method, uri, auth, _) = seen.last().unwrap();
        assert_eq!((method.as_str(), uri.as_str()), ("GET", "/api/customers"));
        assert_eq!(auth.as_deref(), Some("Bearer s3cr3t-api-token"));
    }

    // An upstream 404 is a result; nothing the agent sends can leave the base or smuggle.
    let (s, b) = call(&a, &agent, json!({"method": "GET", "path": "/missing"})).await;
    assert_eq!((s, b["status"].as_u64()), (200, Some(404)), "{b}");
    for bad in [
        json!({"method": "GET", "path": "http://127.0.0.1:1/x"}),
        json!({"method": "GET", "path": "//evil.example/x"}),
        json!({"method": "GET", "path": "/../../etc/passwd"}),
        json!({"method": "GET", "path": "/customers/%2e%2e/%2e%2e/admin"}),
        json!({"method": "GET", "path": "/customers", "headers": {"Authorization": "Bearer mine"}}),
        json!({"method": "GET", "path": "/customers", "headers": {"Host": "evil.example"}}),
        json!({"method": "GET", "path": "/customers", "headers": {"Range": "bytes=10-40"}}),
        json!({"method": "GET", "path": "/public/..;/admin"}),
        json!({"method": "CONNECT", "path": "/customers"}),
    ] {
        let (s, b) = call(&a, &agent, bad.clone()).await;
        assert!(
            s == 400 || (s == 403 && b["rule"] == "no-admin"),
            "{bad}: {s} {b}"
        );
    }
    let (s, b) = call(&a, &agent, json!({"method": "GET", "path": "/admin/users"})).await;
    assert_eq!((s, b["rule"].as_str()), (403, Some("no-admin")), "{b}");
    // The dry run takes the same body and says so without sending anything.
    let resp = a
        .http
        .post(format!("{}/v1/connections/api/check", a.base))
        .bearer_auth(&agent)
        .json(&json!({"method": "GET", "path": "/customers/../admin/users"}))
        .send()
        .await
        .unwrap();
    let checked: Value = resp.json().await.unwrap();
    assert_eq!(checked["decision"], "deny", "{checked}");
    assert_eq!(checked["rule"], "no-admin");
    assert_eq!(
        checked["facts"]["http"]["path"], "/admin/users",
        "{checked}"
    );
    let resp = a
        .http
        .post(format!("{}/v1/connections/api/check", a.base))
        .bearer_auth(&agent)
        .json(&json!({"method": "DELETE", "path": "/customers/1"}))
        .send()
        .await
        .unwrap();
    let checked: Value = resp.json().await.unwrap();
    assert_eq!(checked["decision"], "review", "{checked}");
    let before = seen.lock().unwrap().len();

    // A redirect off the base is not followed; a big body is cut at max_bytes.
    let (s, b) = call(&a, &agent, json!({"method": "GET", "path": "/away"})).await;
    assert_eq!((s, b["status"].as_u64()), (200, Some(302)), "{b}");
    assert!(b["note"].is_string(), "{b}");
    let (s, b) = call(
        &a,
        &agent,
        json!({"method": "GET", "path": "/big", "max_bytes": 1000}),
    )
    .await;
    assert_eq!((s, b["truncated"].as_bool()), (200, Some(true)), "{b}");
    assert!(b["body"].as_str().unwrap().len() <= 1000);
    assert_eq!(
        seen.lock().unwrap().len(),
        before + 2,
        "refused requests sent nothing"
    );

    // A write is held; the approval binds method, path, query and body.
    let refund = json!({"method": "POST", "path": "/refunds", "query": {"notify": "false"}, "body": {"order": 7, "amount": 12.5}});
    let (s, held) = call(&a, &agent, refund).await;
    assert_eq!(s, 202, "{held}");
    let dba = a.token("alice", &["dba"], PrincipalKind::Human);
    let (_, reviews) = a.get(&dba, "/v1/reviews").await;
    let review = &reviews["reviews"][0];
    assert!(
        review["statement"]
            .as_str()
            .unwrap()
            .starts_with("POST /refunds?notify=false"),
        "{review}"
    );
    let id = review["id"].as_str().unwrap();
    let resp = a
        .http
        .post(format!("{}/v1/reviews/{id}/approve", a.base))
        .bearer_auth(&dba)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let exec = held["execution_id"].as_str().unwrap();
    let resp = a
        .http
        .post(format!("{}/v1/executions/{exec}/run", a.base))
        .bearer_auth(&agent)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ran: Value = resp.json().await.unwrap();
    assert_eq!(ran["body"]["refunded"], true, "{ran}");
    {
        let seen = seen.lock().unwrap();
        let (method, uri, _, body) = seen.last().unwrap();
        assert_eq!(
            (method.as_str(), uri.as_str()),
            ("POST", "/api/refunds?notify=false")
        );
        let sent: Value = serde_json::from_str(body).unwrap();
        assert_eq!(sent, json!({"order": 7, "amount": 12.5}));
    }

    // On record: the request line and the status; never the credential.
    let events = a.audit_of(exec).await;
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains("s3cr3t-api-token"), "{text}");
    assert!(events.iter().any(|e| e["http_status"] == 200), "{text}");
    a.stop().await;
}
