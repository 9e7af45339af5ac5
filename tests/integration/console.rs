//! The approvers' console at `/console`, over plain HTTP as a browser (and a forger) would
//! speak it: sessions, their cookie and expiry, CSRF, who may sign in, the OIDC
//! authorization-code flow with PKCE against a provider double, and that decisions made in
//! the console are the API's own. The page itself is driven in a real browser by
//! `tests/console/` (a stage of the test command).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use airlock::config::PrincipalKind;
use axum::extract::{Form, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::common::*;

const DEMO: &str = r#"
[[connections]]
name = "demo"
kind = "sqlite"
path = "demo.db"

[[rules]]
id = "agents-read"
action = "allow"
connections = ["demo"]
principals = ["group:agents"]
match = { statements = ["select"] }

[[rules]]
id = "writes-need-review"
action = "review"
connections = ["demo"]
principals = ["group:agents"]
match = { statements = ["update"] }
message = "a DBA approves writes"
review = { approvers = ["dba"], min_approvals = 1 }

[audit]
readers = ["group:auditors"]
"#;

/// A browser's view of the console: its cookies and the page's CSRF token. Sends `Origin`
/// on changes, as browsers do.
struct Browser {
    base: String,
    http: reqwest::Client,
    cookies: HashMap<String, String>,
    csrf: Option<String>,
}

impl Browser {
    fn new(a: &Airlock) -> Browser {
        Browser {
            base: a.base.clone(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
            csrf: None,
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Keeps what `Set-Cookie` says (an empty value or `Max-Age=0` deletes).
    fn remember(&mut self, resp: &reqwest::Response) -> Vec<String> {
        let mut raw = Vec::new();
        for v in resp.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap().to_string();
            let (pair, _) = v.split_once(';').unwrap_or((&v, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || v.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
            raw.push(v);
        }
        raw
    }

    /// A read as the page makes it: the cookie and the session's proof.
    async fn get(&mut self, path: &str) -> (u16, Value) {
        let mut req = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header());
        if let Some(csrf) = &self.csrf {
            req = req.header("x-airlock-csrf", csrf);
        }
        let resp = req.send().await.unwrap();
        self.remember(&resp);
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn post(&mut self, path: &str, body: Value) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("origin", self.base.clone())
            .json(&body);
        if let Some(csrf) = &self.csrf {
            req = req.header("x-airlock-csrf", csrf);
        }
        let resp = req.send().await.unwrap();
        self.remember(&resp);
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// The dev sign-in with a token; keeps the CSRF token on success.
    async fn dev_sign_in(&mut self, token: &str) -> (u16, Value, Vec<String>) {
        let resp = self
            .http
            .post(format!("{}/console/api/login/dev", self.base))
            .header("origin", self.base.clone())
            .json(&json!({ "token": token }))
            .send()
            .await
            .unwrap();
        let cookies = self.remember(&resp);
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status == 200 {
            self.csrf = body["csrf_token"].as_str().map(str::to_string);
        }
        (status, body, cookies)
    }
}

async fn hold_update(a: &Airlock) -> (String, String) {
    let (s, b) = a
        .query(
            &a.agent(),
            "demo",
            json!({"sql": "UPDATE customers SET city = 'Lyon' WHERE id = 1"}),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    (
        b["review_id"].as_str().unwrap().to_string(),
        b["execution_id"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn sessions_are_for_people_and_every_change_needs_the_csrf_token() {
    let a = Airlock::start(&format!("{DEV_ISSUER}{DEMO}")).await;
    let mut b = Browser::new(&a);

    // The page and every answer carry the strict policy.
    let resp = a
        .http
        .get(format!("{}/console/", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    let page = resp.text().await.unwrap();
    assert!(
        !page.contains("<script>") && !page.contains("style="),
        "no inline code: {page}"
    );
    let (s, opts) = b.get("/console/api/login-options").await;
    assert_eq!((s, opts["dev"].clone()), (200, json!(true)), "{opts}");

    // Agents never get a session; bad tokens neither.
    let (s, body, cookies) = b.dev_sign_in(&a.agent()).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (403, Some("console_humans_only")),
        "{body}"
    );
    assert!(cookies.is_empty());
    let (s, _, cookies) = b.dev_sign_in("not-a-token").await;
    assert_eq!(s, 401);
    assert!(cookies.is_empty());
    // A sign-in posted from another site is refused before the token is looked at.
    let human = a.token("dana", &["dba"], PrincipalKind::Human);
    let resp = a
        .http
        .post(format!("{}/console/api/login/dev", a.base))
        .header("origin", "https://evil.example")
        .json(&json!({ "token": human }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.headers().get("set-cookie").is_none());

    let (s, me, cookies) = b.dev_sign_in(&human).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["principal"]["subject"], "dana");
    let session = cookies
        .iter()
        .find(|c| c.starts_with("airlock_console="))
        .expect("session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(session.contains(attr), "{session}");
    }
    assert!(!session.contains("Secure"), "loopback origin: {session}");
    let (s, me) = b.get("/console/api/me").await;
    assert_eq!(s, 200);
    assert_eq!(me["principal"]["kind"], "human");

    // The cookie alone opens nothing, not even a read: browsers also send it to pages on
    // other ports of the host (an agent's local web server), which lack the page's proof.
    for path in [
        "/console/api/me",
        "/console/api/reviews",
        "/console/api/audit",
        "/console/api/reviews/events",
    ] {
        let resp = a
            .http
            .get(format!("{}{path}", a.base))
            .header("cookie", b.cookie_header())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{path}");
    }

    // The cookie opens nothing in the agent API, and a bearer token nothing in the console.
    let resp = a
        .http
        .get(format!("{}/v1/connections", a.base))
        .header("cookie", b.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = a
        .http
        .get(format!("{}/console/api/me", a.base))
        .bearer_auth(&human)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // Changes need the CSRF token, and the browser's own origin.
    let (review_id, _) = hold_update(&a).await;
    let approve = format!("/console/api/reviews/{review_id}/approve");
    let csrf = b.csrf.take();
    let (s, p) = b.post(&approve, json!({})).await;
    assert_eq!((s, p["code"].as_str()), (403, Some("csrf_failed")), "{p}");
    b.csrf = Some("wrong".into());
    let (s, _) = b.post(&approve, json!({})).await;
    assert_eq!(s, 403);
    b.csrf = csrf;
    let forged = a
        .http
        .post(format!("{}{approve}", a.base))
        .header("cookie", b.cookie_header())
        .header("x-airlock-csrf", b.csrf.clone().unwrap())
        .header("sec-fetch-site", "cross-site")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let (s, r) = b.get(&format!("/console/api/reviews/{review_id}")).await;
    assert_eq!(
        (s, r["status"].as_str()),
        (200, Some("pending_review")),
        "nothing changed: {r}"
    );

    // Signing out ends the session for good, wherever the cookie is kept.
    let stolen = b.cookie_header();
    let proof = b.csrf.clone().unwrap();
    let (s, _) = b.post("/console/api/logout", json!({})).await;
    assert_eq!(s, 204);
    assert!(!b.cookies.contains_key("airlock_console"));
    let resp = a
        .http
        .get(format!("{}/console/api/me", a.base))
        .header("cookie", stolen)
        .header("x-airlock-csrf", proof)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    a.stop().await;
}

#[tokio::test]
async fn a_console_decision_is_the_apis_decision() {
    let a = Airlock::start(&format!("{DEV_ISSUER}{DEMO}")).await;
    let (review_id, execution_id) = hold_update(&a).await;

    // The live view hears of a new review without polling.
    let mut dba = Browser::new(&a);
    let (s, _, _) = dba
        .dev_sign_in(&a.token("dana", &["dba"], PrincipalKind::Human))
        .await;
    assert_eq!(s, 200);
    let events = a
        .http
        .get(format!("{}/console/api/reviews/events", a.base))
        .header("cookie", dba.cookie_header())
        .header("x-airlock-csrf", dba.csrf.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    assert!(
        events.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut events = events.bytes_stream();
    let first = next_event(&mut events).await;
    assert!(first.contains("event: reviews"), "{first}");
    let (second_review, _) = hold_update(&a).await;
    let changed = next_event(&mut events).await;
    assert!(changed.contains("event: reviews"), "{changed}");

    // Someone outside the approver groups sees nothing to decide, and cannot decide.
    let mut outsider = Browser::new(&a);
    outsider
        .dev_sign_in(&a.token("olga", &["ops"], PrincipalKind::Human))
        .await;
    let (s, list) = outsider.get("/console/api/reviews").await;
    assert_eq!(s, 200);
    assert_eq!(list["reviews"], json!([]));
    let (s, p) = outsider
        .post(
            &format!("/console/api/reviews/{review_id}/approve"),
            json!({}),
        )
        .await;
    assert!(s == 403 || s == 404, "{s} {p}");
    // ...nor reads the audit log.
    let (s, p) = outsider.get("/console/api/audit").await;
    assert_eq!((s, p["code"].as_str()), (403, Some("not_an_admin")));

    // The approver's list has it, pending first, with the statement as it will run.
    let (s, list) = dba.get("/console/api/reviews?status=pending_review").await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = list["reviews"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&review_id.as_str()) && ids.contains(&second_review.as_str()));
    let (s, r) = dba
        .post(
            &format!("/console/api/reviews/{review_id}/approve"),
            json!({"comment": "one customer, fine", "max_affected_rows": 1}),
        )
        .await;
    assert_eq!((s, r["status"].as_str()), (200, Some("approved")), "{r}");
    let (s, r) = dba
        .post(
            &format!("/console/api/reviews/{second_review}/reject"),
            json!({"reason": "   "}),
        )
        .await;
    assert_eq!(
        (s, r["code"].as_str()),
        (400, Some("invalid_reason")),
        "{r}"
    );
    let (s, r) = dba
        .post(
            &format!("/console/api/reviews/{second_review}/reject"),
            json!({"reason": "not today"}),
        )
        .await;
    assert_eq!((s, r["status"].as_str()), (200, Some("rejected")), "{r}");

    // The agent reads the approver's comment and runs it once.
    let (s, e) = a
        .get(&a.agent(), &format!("/v1/executions/{execution_id}"))
        .await;
    assert_eq!(s, 200);
    assert!(e.to_string().contains("one customer, fine"), "{e}");
    let resp = a
        .http
        .post(format!("{}/v1/executions/{execution_id}/run", a.base))
        .bearer_auth(a.agent())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());

    // The decisions are in the audit log, readable in the console by an auditor.
    let mut auditor = Browser::new(&a);
    auditor
        .dev_sign_in(&a.token("aude", &["auditors"], PrincipalKind::Human))
        .await;
    let (s, page) = auditor
        .get(&format!("/console/api/audit?execution_id={execution_id}"))
        .await;
    assert_eq!(s, 200);
    let text = page.to_string();
    assert!(text.contains("dana"), "the approval is audited: {text}");
    let (s, p) = auditor.get("/console/api/audit?limit=0").await;
    assert_eq!((s, p["code"].as_str()), (400, Some("invalid_query")));
    a.stop().await;
}

async fn next_event<B: AsRef<[u8]>>(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<B>> + Unpin),
) -> String {
    use futures::StreamExt;
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("an event within 10 s")
            .expect("stream open")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(chunk.as_ref()));
        // Keep-alive comments are not events.
        if text.starts_with(':') {
            text.clear();
        }
    }
    text
}

#[tokio::test]
async fn sessions_end_when_idle_and_at_their_absolute_limit() {
    for (console, what) in [
        ("idle_timeout_secs = 1\nmax_session_secs = 3600", "idle"),
        ("idle_timeout_secs = 3600\nmax_session_secs = 1", "absolute"),
    ] {
        let a = Airlock::start(&format!("{DEV_ISSUER}{DEMO}\n[console]\n{console}\n")).await;
        let mut b = Browser::new(&a);
        let (s, _, _) = b
            .dev_sign_in(&a.token("dana", &["dba"], PrincipalKind::Human))
            .await;
        assert_eq!(s, 200);
        assert_eq!(b.get("/console/api/me").await.0, 200);
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let (s, p) = b.get("/console/api/me").await;
        assert_eq!(s, 401, "{what}: {p}");
        a.stop().await;
    }
}

#[tokio::test]
async fn a_disabled_console_is_not_served() {
    let a = Airlock::start(&format!("{DEV_ISSUER}{DEMO}\n[console]\nenabled = false\n")).await;
    let resp = a
        .http
        .get(format!("{}/console/", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    a.stop().await;
}

// ------------------------------------------------------------------------------------------
// OIDC authorization code + PKCE against a provider double.

#[derive(Clone)]
struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: String,
}

#[derive(Clone)]
struct Provider {
    issuer: String,
    key: Arc<EncodingKey>,
    grants: Arc<Mutex<HashMap<String, Grant>>>,
    /// The subject, groups and kind claim the next sign-in gets.
    person: Arc<Mutex<(String, Vec<String>, String)>>,
    /// Sign ID tokens with this nonce instead of the one asked for.
    wrong_nonce: Arc<Mutex<bool>>,
    secret: String,
}

async fn provider() -> Provider {
    let dir = tempfile::tempdir().unwrap();
    let pem = crate::auth::openssl_key(
        dir.path(),
        "rsa.pem",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let key = EncodingKey::from_rsa_pem(&pem).unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some("k1".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let p = Provider {
        issuer: issuer.clone(),
        key: Arc::new(key),
        grants: Arc::default(),
        person: Arc::new(Mutex::new((
            "carol".into(),
            vec!["dba".into()],
            "human".into(),
        ))),
        wrong_nonce: Arc::default(),
        secret: "s3cret value+/=".into(),
    };
    let set = JwkSet { keys: vec![jwk] };
    let app = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || {
                let i = issuer.clone();
                async move {
                    Json(json!({
                        "issuer": i,
                        "jwks_uri": format!("{i}/jwks"),
                        "authorization_endpoint": format!("{i}/authorize"),
                        "token_endpoint": format!("{i}/token"),
                        "code_challenge_methods_supported": ["S256"],
                    }))
                }
            }),
        )
        .route(
            "/jwks",
            get(move || {
                let set = set.clone();
                async move { Json(set) }
            }),
        )
        .route("/authorize", get(authorize))
        .route("/token", post(token))
        .with_state(p.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    p
}

/// Signs the person in at once and sends the browser back with a code.
async fn authorize(
    State(p): State<Provider>,
    Query(q): Query<HashMap<String, String>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let field = |k: &str| q.get(k).cloned().unwrap_or_default();
    assert_eq!(field("response_type"), "code");
    assert_eq!(field("code_challenge_method"), "S256");
    assert!(field("scope").split(' ').any(|s| s == "openid"));
    assert!(!field("code_challenge").is_empty() && !field("nonce").is_empty());
    let code = format!("code-{}", unique("c"));
    p.grants.lock().unwrap().insert(
        code.clone(),
        Grant {
            client_id: field("client_id"),
            redirect_uri: field("redirect_uri"),
            challenge: field("code_challenge"),
            nonce: field("nonce"),
        },
    );
    let to = format!(
        "{}?code={code}&state={}",
        field("redirect_uri"),
        field("state")
    );
    (axum::http::StatusCode::FOUND, [("location", to)]).into_response()
}

/// The code exchange, as strict as a real provider: single-use codes, the same redirect
/// URI, the PKCE verifier, and the client's secret.
async fn token(
    State(p): State<Provider>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> (axum::http::StatusCode, Json<Value>) {
    let bad = |why: &str| {
        (
            axum::http::StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": why})),
        )
    };
    let field = |k: &str| f.get(k).cloned().unwrap_or_default();
    let Some(grant) = p.grants.lock().unwrap().remove(&field("code")) else {
        return bad("unknown or used code");
    };
    if field("redirect_uri") != grant.redirect_uri {
        return bad("redirect_uri differs");
    }
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            field("code_verifier").as_bytes(),
        )
        .as_ref(),
    );
    if challenge != grant.challenge {
        return bad("code_verifier does not match the challenge");
    }
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            grant.client_id,
            // Form-encoded before Basic (RFC 6749 2.3.1).
            "s3cret+value%2B%2F%3D"
        ))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return bad("client authentication failed");
    }
    let (sub, groups, kind) = p.person.lock().unwrap().clone();
    let nonce = if *p.wrong_nonce.lock().unwrap() {
        "another".to_string()
    } else {
        grant.nonce
    };
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"iss": p.issuer, "aud": grant.client_id, "sub": sub, "exp": now + 300,
        "iat": now, "nonce": nonce, "groups": groups, "kind": kind});
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("k1".into());
    let id_token = jsonwebtoken::encode(&h, &claims, &p.key).unwrap();
    (
        axum::http::StatusCode::OK,
        Json(json!({"access_token": "at", "token_type": "Bearer", "id_token": id_token})),
    )
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers()["location"].to_str().unwrap().to_string()
}

/// Follows a sign-in through the provider; returns where the callback sent the browser.
async fn oidc_sign_in(b: &mut Browser) -> String {
    let resp = b
        .http
        .get(format!("{}/console/login/corp", b.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303, "{:?}", resp.headers());
    b.remember(&resp);
    let to_provider = location(&resp);
    let resp = b.http.get(&to_provider).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    let callback = location(&resp);
    assert!(
        callback.starts_with(&format!("{}/console/callback?", b.base)),
        "{callback}"
    );
    let resp = b
        .http
        .get(&callback)
        .header("cookie", b.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    b.remember(&resp);
    location(&resp)
}

#[tokio::test]
async fn people_sign_in_with_their_identity_provider_using_pkce() {
    let p = provider().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, &p.secret).unwrap();
    let config = format!(
        r#"{DEV_ISSUER}
[[issuers]]
name = "corp"
issuer = "{issuer}"
audience = "airlock"
kind_claim = "kind"
allowed_groups = ["dba"]
allow_insecure_http = true
[issuers.console]
client_id = "airlock-console"
client_secret = "file:{secret}"
scopes = ["openid", "groups"]
{DEMO}"#,
        issuer = p.issuer,
        secret = secret_file.display()
    );
    let a = Airlock::start(&config).await;
    let mut b = Browser::new(&a);
    let (_, opts) = b.get("/console/api/login-options").await;
    assert_eq!(opts["issuers"][0]["href"], "/console/login/corp", "{opts}");

    let landed = oidc_sign_in(&mut b).await;
    // The page's proof comes in the fragment, which only the page reads.
    b.csrf = Some(
        landed
            .strip_prefix("/console/#session=")
            .unwrap_or_else(|| panic!("{landed}"))
            .to_string(),
    );
    let (s, me) = b.get("/console/api/me").await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["principal"]["issuer"], "corp");
    assert_eq!(me["principal"]["subject"], "carol");
    assert_eq!(me["principal"]["groups"], json!(["dba"]));
    assert!(
        !b.cookies.contains_key("airlock_console_login"),
        "the binding is spent"
    );

    // A callback opened in a browser that did not start the sign-in (login CSRF) signs
    // nobody in.
    let mut victim = Browser::new(&a);
    let resp = b
        .http
        .get(format!("{}/console/login/corp", a.base))
        .send()
        .await
        .unwrap();
    let resp = b.http.get(location(&resp)).send().await.unwrap();
    let callback = location(&resp);
    let resp = victim.http.get(&callback).send().await.unwrap();
    assert_eq!(location(&resp), "/console/#login-error=other_browser");
    victim.remember(&resp);
    assert!(!victim.cookies.contains_key("airlock_console"));

    // A state is redeemed once.
    let mut again = Browser::new(&a);
    let resp = again
        .http
        .get(format!("{}/console/login/corp", a.base))
        .send()
        .await
        .unwrap();
    again.remember(&resp);
    let resp = again.http.get(location(&resp)).send().await.unwrap();
    let callback = location(&resp);
    let first = again
        .http
        .get(&callback)
        .header("cookie", again.cookie_header())
        .send()
        .await
        .unwrap();
    assert!(location(&first).starts_with("/console/#session="));
    let replay = again
        .http
        .get(&callback)
        .header("cookie", again.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(location(&replay), "/console/#login-error=expired");

    // An ID token for another sign-in (its nonce) is refused.
    *p.wrong_nonce.lock().unwrap() = true;
    let mut c = Browser::new(&a);
    assert_eq!(oidc_sign_in(&mut c).await, "/console/#login-error=refused");
    assert!(!c.cookies.contains_key("airlock_console"));
    *p.wrong_nonce.lock().unwrap() = false;

    // Agents of the same provider do not get a console session.
    *p.person.lock().unwrap() = ("bot".into(), vec![], "agent".into());
    let mut d = Browser::new(&a);
    let landed = oidc_sign_in(&mut d).await;
    assert_eq!(landed, "/console/#login-error=agents_not_allowed");
    assert!(!d.cookies.contains_key("airlock_console"));
    a.stop().await;
}

#[tokio::test]
async fn oidc_sign_in_needs_a_public_url_off_loopback() {
    let p = provider().await;
    let config = format!(
        r#"{DEV_ISSUER}
[[issuers]]
name = "corp"
issuer = "{issuer}"
audience = "airlock"
principal_kind = "human"
allow_insecure_http = true
[issuers.console]
client_id = "airlock-console"
{DEMO}"#,
        issuer = p.issuer,
    );
    let a = Airlock::start(&config).await;
    // A Host that is not loopback gives no redirect URI to trust.
    let resp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/console/login/corp", a.base))
        .header("host", "airlock.example.com")
        .send()
        .await
        .unwrap();
    let to = location(&resp);
    assert_eq!(to, "/console/#login-error=needs_public_url");
    a.stop().await;
    // And the configuration refuses plain http for a public origin.
    let bad =
        format!("{DEV_ISSUER}{DEMO}\n[console]\npublic_url = \"http://airlock.example.com\"\n");
    let err = airlock::config::Config::parse(&bad, "test")
        .unwrap_err()
        .to_string();
    assert!(err.contains("https"), "{err}");
}

#[tokio::test]
async fn a_session_works_on_every_instance_of_a_shared_store() {
    let store = PgDb::create().await;
    let config = format!(
        "[store]\nurl = \"postgres://postgres@127.0.0.1:5432/{}\"\n{DEV_ISSUER}{DEMO}",
        store.name
    );
    let a = Airlock::start(&config).await;
    let b = Airlock::start(&config).await;
    let mut on_a = Browser::new(&a);
    let (s, _, _) = on_a
        .dev_sign_in(&a.token("dana", &["dba"], PrincipalKind::Human))
        .await;
    assert_eq!(s, 200);

    // The same browser, sent to the other instance by a load balancer.
    let mut on_b = Browser::new(&b);
    on_b.cookies = on_a.cookies.clone();
    on_b.csrf = on_a.csrf.clone();
    let (s, me) = on_b.get("/console/api/me").await;
    assert_eq!(
        (s, me["principal"]["subject"].as_str()),
        (200, Some("dana"))
    );

    // A review held on one instance wakes the live view on the other.
    let events = b
        .http
        .get(format!("{}/console/api/reviews/events", b.base))
        .header("cookie", on_b.cookie_header())
        .header("x-airlock-csrf", on_b.csrf.clone().unwrap())
        .send()
        .await
        .unwrap();
    let mut events = events.bytes_stream();
    next_event(&mut events).await;
    let (review_id, _) = hold_update(&a).await;
    assert!(next_event(&mut events).await.contains("event: reviews"));
    let (s, r) = on_b
        .post(
            &format!("/console/api/reviews/{review_id}/approve"),
            json!({}),
        )
        .await;
    assert_eq!((s, r["status"].as_str()), (200, Some("approved")), "{r}");

    // Signing out on one ends it on both.
    let (s, _) = on_b.post("/console/api/logout", json!({})).await;
    assert_eq!(s, 204);
    assert_eq!(on_a.get("/console/api/me").await.0, 401);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn sign_in_links_are_single_use_and_delegations_get_no_session() {
    let a = Airlock::start(&format!("{DEV_ISSUER}{DEMO}")).await;
    let state = &a.running.as_ref().unwrap().state;
    let dana = airlock::identity::Principal {
        issuer: "dev".into(),
        subject: "dana".into(),
        kind: PrincipalKind::Human,
        groups: vec!["dba".into()],
        actor: vec![],
    };
    let link = airlock::console::sign_in_link(state, dana.clone())
        .await
        .unwrap();
    let code = link.strip_prefix("/console/#sign-in=").unwrap();
    let redeem = |code: String| {
        let a = &a;
        async move {
            let resp = a
                .http
                .post(format!("{}/console/api/login/link", a.base))
                .json(&json!({ "code": code }))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, me) = redeem(code.to_string()).await;
    assert_eq!(
        (s, me["principal"]["subject"].as_str()),
        (200, Some("dana")),
        "{me}"
    );
    let (s, _) = redeem(code.to_string()).await;
    assert_eq!(s, 401, "a link signs in once");
    let (s, _) = redeem("made-up".into()).await;
    assert_eq!(s, 401);
    // Agents and delegations are refused links and dev sign-in alike.
    let mut agent = dana.clone();
    agent.kind = PrincipalKind::Agent;
    assert!(airlock::console::sign_in_link(state, agent).await.is_err());
    let mut b = Browser::new(&a);
    let delegated = mint(
        a.data.path(),
        "dora",
        &["dba"],
        PrincipalKind::Human,
        Some("agent-1"),
    );
    let (s, p, cookies) = b.dev_sign_in(&delegated).await;
    assert_eq!(
        (s, p["code"].as_str()),
        (403, Some("console_humans_only")),
        "{p}"
    );
    assert!(cookies.is_empty());
    a.stop().await;
}

/// Characters fonts draw blank must never pass for spaces before a reviewer: outside
/// literals the statement is refused, inside it they are shown escaped.
#[tokio::test]
async fn blank_glyphs_cannot_hide_sql_from_a_reviewer() {
    // The guardrail the quick start has: what is not plain SQL is refused outright.
    let a = Airlock::start(&format!(
        "{DEV_ISSUER}[[rules]]\nbuiltin = \"deny-unparsed\"\n{DEMO}"
    ))
    .await;
    for blank in ['\u{2800}', '\u{FFFC}', '\u{1BCA0}', '\u{0600}'] {
        // What a reviewer would read as `... c WHERE id IS 3)`: an alias swallowing the WHERE.
        let sql = format!(
            "UPDATE customers SET city = 'Nowhere' WHERE id IN (SELECT id FROM customers c{blank}WHERE{blank}id{blank}IS{blank}3)"
        );
        let (s, b) = a.query(&a.agent(), "demo", json!({ "sql": sql })).await;
        assert!((400..500).contains(&s) && s != 202, "{blank:?}: {s} {b}");
    }
    // Without that guardrail it may be held, but the reviewer sees the character.
    let lax = Airlock::start(&format!("{DEV_ISSUER}{DEMO}")).await;
    let sql = "UPDATE customers SET city = 'Nowhere' WHERE id IN (SELECT id FROM customers c\u{2800}WHERE\u{2800}id\u{2800}IS\u{2800}3)";
    let (s, held) = lax.query(&lax.agent(), "demo", json!({ "sql": sql })).await;
    assert_eq!(s, 202, "{held}");
    let mut dba = Browser::new(&lax);
    dba.dev_sign_in(&lax.token("dana", &["dba"], PrincipalKind::Human))
        .await;
    let (_, r) = dba
        .get(&format!(
            "/console/api/reviews/{}",
            held["review_id"].as_str().unwrap()
        ))
        .await;
    let shown = r["statement_visible"].as_str().unwrap();
    assert!(shown.contains("c\\u{2800}WHERE"), "{shown}");
    lax.stop().await;
    let (s, held) = a
        .query(
            &a.agent(),
            "demo",
            json!({"sql": "UPDATE customers SET city = 'Ly\u{2800}on' WHERE id = 1"}),
        )
        .await;
    assert_eq!(s, 202, "{held}");
    let mut dba = Browser::new(&a);
    dba.dev_sign_in(&a.token("dana", &["dba"], PrincipalKind::Human))
        .await;
    let (_, r) = dba
        .get(&format!(
            "/console/api/reviews/{}",
            held["review_id"].as_str().unwrap()
        ))
        .await;
    assert!(
        r["statement_visible"]
            .as_str()
            .unwrap()
            .contains("\\u{2800}"),
        "{r}"
    );
    a.stop().await;
}
