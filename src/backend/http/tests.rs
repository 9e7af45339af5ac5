//! The backend against a real HTTP server on 127.0.0.1 started by each test.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes as AxumBytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::*;
use crate::config::{Config, TargetConfig};

const TOKEN: &str = "tok-bearer-5ecret-value";
const PASSWORD: &str = "pa55word-5ecret";
const API_KEY: &str = "key-5ecret-value-123";
const CLIENT_SECRET: &str = "client-5ecret-value";

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Upstream {
    seen: Mutex<Vec<Seen>>,
    token_hits: AtomicU32,
    token_delay_ms: AtomicU64,
    expires_in: AtomicU64,
    /// `/api/protected` refuses tokens `tok-N` with N below this.
    revoked_before: AtomicU32,
    /// Bytes `/api/huge` has produced.
    huge_sent: Arc<AtomicU64>,
}

impl Upstream {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    fn api_calls(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.path.starts_with("/api"))
            .collect()
    }
}

async fn handle(State(up): State<Arc<Upstream>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers,
        body: body.to_vec(),
    };
    up.seen.lock().unwrap().push(seen.clone());
    let redirect = |status: StatusCode, to: &str| {
        (status, [("location", to.to_string())], "moved").into_response()
    };
    match seen.path.as_str() {
        "/token" => token(&up, &seen).await,
        "/api/echo" => (
            StatusCode::OK,
            [
                ("content-type", "application/json"),
                ("x-request-id", "req-1"),
                ("set-cookie", "session=abc"),
                ("server", "upstream/1.0"),
                ("www-authenticate", "Bearer realm=x"),
            ],
            r#"{"ok":true}"#,
        )
            .into_response(),
        "/api/protected" => {
            let n: Option<u32> = seen
                .header("authorization")
                .and_then(|a| a.strip_prefix("Bearer tok-"))
                .and_then(|n| n.parse().ok());
            match n {
                Some(n) if n >= up.revoked_before.load(Ordering::SeqCst) => {
                    (StatusCode::OK, "fine").into_response()
                }
                _ => (StatusCode::UNAUTHORIZED, "no").into_response(),
            }
        }
        "/api/reflect" => {
            let all = format!("{:?}", seen.headers);
            (StatusCode::OK, [("link", all.clone())], all).into_response()
        }
        "/api/redirect-in" => redirect(StatusCode::FOUND, "/api/echo?from=redirect"),
        "/api/redirect-rel" => redirect(StatusCode::TEMPORARY_REDIRECT, "echo"),
        "/api/redirect-abs" => {
            let host = seen.header("host").unwrap_or("").to_string();
            redirect(StatusCode::FOUND, &format!("http://{host}/api/echo"))
        }
        "/api/redirect-out" => redirect(StatusCode::FOUND, "http://127.0.0.2:9/api/echo"),
        "/api/redirect-up" => redirect(StatusCode::FOUND, "/other"),
        "/api/redirect-dots" => redirect(StatusCode::FOUND, "/api/../other"),
        "/api/redirect-encoded" => redirect(StatusCode::FOUND, "/api/a%2Fb"),
        "/api/redirect-scheme" => redirect(StatusCode::FOUND, "https://127.0.0.1/api/echo"),
        "/api/redirect-loop" => redirect(StatusCode::FOUND, "/api/redirect-loop"),
        "/api/see-other" => redirect(StatusCode::SEE_OTHER, "/api/echo"),
        "/api/keep-method" => redirect(StatusCode::PERMANENT_REDIRECT, "/api/echo"),
        "/api/created" => (
            StatusCode::CREATED,
            [("location", "/api/items/7")],
            "created",
        )
            .into_response(),
        "/api/huge" => {
            let sent = up.huge_sent.clone();
            let chunk = AxumBytes::from(vec![b'x'; 64 * 1024]);
            let stream = futures::stream::unfold(0u64, move |n| {
                let chunk = chunk.clone();
                let sent = sent.clone();
                async move {
                    // At most 1 GiB: the test fails by reading it, not by hanging.
                    if n >= 16 * 1024 {
                        return None;
                    }
                    sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                    Some((Ok::<_, std::io::Error>(chunk), n + 1))
                }
            });
            (StatusCode::OK, Body::from_stream(stream)).into_response()
        }
        "/api/slow" => {
            let stream = futures::stream::unfold(0u32, |n| async move {
                if n > 0 {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
                if n > 1 {
                    return None;
                }
                Some((Ok::<_, std::io::Error>(AxumBytes::from_static(b"a")), n + 1))
            });
            (StatusCode::OK, Body::from_stream(stream)).into_response()
        }
        "/api/hang" => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            (StatusCode::OK, "late").into_response()
        }
        _ => (StatusCode::NOT_FOUND, "nothing here").into_response(),
    }
}

/// The token endpoint: client `airlock`, secret [`CLIENT_SECRET`], basic or post.
async fn token(up: &Upstream, seen: &Seen) -> Response {
    let delay = up.token_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let form = String::from_utf8_lossy(&seen.body).to_string();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("airlock:{CLIENT_SECRET}"))
    );
    let by_basic = seen.header("authorization") == Some(basic.as_str());
    let by_post = form.contains("client_id=airlock")
        && form.contains(&format!("client_secret={CLIENT_SECRET}"));
    if seen.method != "POST" || !form.contains("grant_type=client_credentials") {
        return (StatusCode::BAD_REQUEST, r#"{"error":"invalid_request"}"#).into_response();
    }
    if !(by_basic || by_post) {
        // Some servers echo what they got: it must not reach an error message.
        let echo = serde_json::json!({
            "error": "invalid_client",
            "error_description": format!("bad credentials {:?} {form}", seen.header("authorization")),
        })
        .to_string();
        return (StatusCode::UNAUTHORIZED, echo).into_response();
    }
    let n = up.token_hits.fetch_add(1, Ordering::SeqCst) + 1;
    let expires = up.expires_in.load(Ordering::SeqCst);
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        format!(r#"{{"access_token":"tok-{n}","token_type":"Bearer","expires_in":{expires}}}"#),
    )
        .into_response()
}

async fn start() -> (SocketAddr, Arc<Upstream>) {
    let up = Arc::new(Upstream {
        expires_in: AtomicU64::new(3600),
        revoked_before: AtomicU32::new(0),
        ..Upstream::default()
    });
    let app = axum::Router::new().fallback(handle).with_state(up.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, up)
}

/// A secret file (kept alive by the returned handle) and its `file:` reference.
fn secret(value: &str) -> (tempfile::NamedTempFile, String) {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "{value}").unwrap();
    let reference = format!("file:{}", f.path().display());
    (f, reference)
}

/// Parses one `http` connection (`extra` is TOML added to its table) and builds it.
fn backend(base_url: &str, extra: &str) -> HttpBackend {
    let text = format!(
        "[[connections]]\nname = 'api'\nkind = 'http'\nbase_url = '{base_url}'\ninsecure_http = true\n{extra}\n"
    );
    let config = Config::parse(&text, "t").unwrap();
    let c = &config.connections[0];
    let TargetConfig::Http(http) = &c.target else {
        panic!("not http")
    };
    HttpBackend::new(c, http).unwrap()
}

fn get(path: &str) -> HttpCall {
    HttpCall {
        method: "GET".into(),
        path: path.into(),
        query: vec![],
        headers: vec![],
        body: None,
        timeout: Duration::from_secs(10),
        max_bytes: 1 << 20,
    }
}

async fn send(b: &HttpBackend, call: HttpCall) -> Result<HttpReply, BackendError> {
    b.send(call, CancellationToken::new()).await
}

fn no_secret_in(text: &str) {
    for s in [
        TOKEN,
        PASSWORD,
        API_KEY,
        CLIENT_SECRET,
        "YWlybG9jazpjbGllbnQtNWVjcmV0LXZhbHVl", // base64("airlock:client-5ecret-value")
    ] {
        assert!(!text.contains(s), "secret {s} in {text}");
    }
}

#[tokio::test]
async fn each_static_credential_is_added_and_fixed_headers_sent() {
    let (addr, up) = start().await;
    let (_t, token_ref) = secret(TOKEN);
    let (_p, password_ref) = secret(PASSWORD);
    let (_k, key_ref) = secret(API_KEY);
    let base = format!("http://{addr}/api");
    let fixed = "headers = { 'X-Tenant' = 'acme' }";
    let cases = [
        (
            format!("auth = {{ type = 'bearer', token = '{token_ref}' }}\n{fixed}"),
            "authorization",
            format!("Bearer {TOKEN}"),
        ),
        (
            format!(
                "auth = {{ type = 'basic', username = 'svc', password = '{password_ref}' }}\n{fixed}"
            ),
            "authorization",
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("svc:{PASSWORD}"))
            ),
        ),
        (
            format!(
                "auth = {{ type = 'header', name = 'X-Api-Key', value = '{key_ref}' }}\n{fixed}"
            ),
            "x-api-key",
            API_KEY.to_string(),
        ),
    ];
    for (extra, header, want) in cases {
        let b = backend(&base, &extra);
        b.verify().await.unwrap();
        let reply = send(&b, get("/echo")).await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body.as_ref(), br#"{"ok":true}"#);
        assert_eq!(reply.content_type.as_deref(), Some("application/json"));
        assert_eq!(reply.final_path, "/echo");
        let names: Vec<&str> = reply.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"x-request-id"), "{names:?}");
        for hidden in ["set-cookie", "server", "www-authenticate"] {
            assert!(!names.contains(&hidden), "{hidden} passed: {names:?}");
        }
        let seen = up.api_calls().pop().unwrap();
        assert_eq!(seen.path, "/api/echo");
        assert_eq!(seen.header(header), Some(want.as_str()), "{extra}");
        assert_eq!(seen.header("x-tenant"), Some("acme"));
        assert_eq!(seen.header("accept-encoding"), Some("identity"));
        if header != "authorization" {
            assert_eq!(seen.header("authorization"), None);
        }
    }
    // No auth: nothing added but the fixed headers.
    let b = backend(&base, "");
    send(&b, get("/echo")).await.unwrap();
    let seen = up.api_calls().pop().unwrap();
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(seen.header("x-api-key"), None);
}

#[tokio::test]
async fn the_agent_cannot_send_credentials_or_connection_headers() {
    let (addr, up) = start().await;
    let (_k, key_ref) = secret(API_KEY);
    let b = backend(
        &format!("http://{addr}/api"),
        &format!(
            "auth = {{ type = 'header', name = 'X-Api-Key', value = '{key_ref}' }}\nheaders = {{ 'X-Tenant' = 'acme' }}"
        ),
    );
    for (name, value) in [
        ("Authorization", "Bearer agent-token"),
        ("authorization", "Basic eDp5"),
        ("Cookie", "session=stolen"),
        ("X-Api-Key", "agent-key"),
        ("x-api-key", "agent-key"),
        ("X-Tenant", "other-tenant"),
        ("Host", "evil.example"),
        ("Transfer-Encoding", "chunked"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-Note", "a\r\nAuthorization: Bearer x"),
    ] {
        let mut call = get("/echo");
        call.headers = vec![(name.into(), value.into())];
        let e = send(&b, call).await.unwrap_err();
        assert!(matches!(e, BackendError::Params(_)), "{name}: {e:?}");
    }
    // A path or method the inspector would have changed is refused too.
    for (method, path) in [
        ("get", "/echo"),
        ("GET", "/a/../echo"),
        ("GET", "//evil/x"),
        ("GET", "/a%2Fb"),
        ("TRACE", "/echo"),
        ("GET", "echo"),
    ] {
        let mut call = get(path);
        call.method = method.into();
        let e = send(&b, call).await.unwrap_err();
        assert!(
            matches!(e, BackendError::Params(_)),
            "{method} {path}: {e:?}"
        );
    }
    assert!(up.api_calls().is_empty(), "something reached upstream");
    // Allowed agent headers go through as given, the credential after them.
    let mut call = get("/echo");
    call.headers = vec![
        ("Accept".into(), "application/json".into()),
        ("X-Trace".into(), "t-1".into()),
    ];
    send(&b, call).await.unwrap();
    let seen = up.api_calls().pop().unwrap();
    assert_eq!(seen.header("x-trace"), Some("t-1"));
    assert_eq!(seen.header("accept"), Some("application/json"));
    assert_eq!(seen.header("x-api-key"), Some(API_KEY));
}

#[tokio::test]
async fn query_body_and_method_are_sent_as_given() {
    let (addr, up) = start().await;
    let b = backend(&format!("http://{addr}/api/"), "");
    let mut call = get("/echo");
    call.method = "PATCH".into();
    call.query = vec![
        ("q".into(), "a b&c=d".into()),
        ("q".into(), "é/?#".into()),
        ("".into(), "".into()),
    ];
    call.headers = vec![("Content-Type".into(), "application/json".into())];
    call.body = Some(Bytes::from_static(br#"{"x":1}"#));
    send(&b, call).await.unwrap();
    let seen = up.api_calls().pop().unwrap();
    assert_eq!(seen.method, "PATCH");
    assert_eq!(seen.path, "/api/echo");
    assert_eq!(
        seen.query.as_deref(),
        Some("q=a+b%26c%3Dd&q=%C3%A9%2F%3F%23&=")
    );
    assert_eq!(seen.body, br#"{"x":1}"#);
    assert_eq!(seen.header("content-type"), Some("application/json"));
    // Paths with encodings survive unchanged.
    send(&b, get("/items/a%20b/%C3%A9:x")).await.unwrap();
    assert_eq!(
        up.api_calls().pop().unwrap().path,
        "/api/items/a%20b/%C3%A9:x"
    );
    // The root of the base.
    send(&b, get("/")).await.unwrap();
    assert_eq!(up.api_calls().pop().unwrap().path, "/api/");
}

#[tokio::test]
async fn redirects_are_followed_only_under_the_base() {
    let (addr, up) = start().await;
    let b = backend(&format!("http://{addr}/api"), "");
    for path in ["/redirect-in", "/redirect-rel", "/redirect-abs"] {
        let reply = send(&b, get(path)).await.unwrap();
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.redirects, 1, "{path}");
        assert_eq!(reply.redirect_refused, None);
        assert_eq!(reply.final_path, "/echo");
    }
    let followed = up.api_calls();
    assert_eq!(followed[1].query.as_deref(), Some("from=redirect"));

    for path in [
        "/redirect-out",
        "/redirect-up",
        "/redirect-dots",
        "/redirect-encoded",
        "/redirect-scheme",
    ] {
        let before = up.seen().len();
        let reply = send(&b, get(path)).await.unwrap();
        assert_eq!(reply.status, 302, "{path}");
        assert_eq!(reply.redirects, 0);
        let note = reply.redirect_refused.unwrap();
        assert!(note.contains("base_url"), "{note}");
        assert!(
            !reply.headers.iter().any(|(n, _)| n == "location"),
            "{path}: off-base Location passed on"
        );
        assert_eq!(reply.final_path, path);
        assert_eq!(up.seen().len(), before + 1, "{path} was followed");
    }

    let reply = send(&b, get("/redirect-loop")).await.unwrap();
    assert_eq!(reply.status, 302);
    assert_eq!(reply.redirects, 3);
    assert!(reply.redirect_refused.unwrap().contains("at most 3"));
    // Under the base: its Location is passed on.
    assert!(reply.headers.iter().any(|(n, _)| n == "location"));

    let none = backend(&format!("http://{addr}/api"), "max_redirects = 0");
    let reply = send(&none, get("/redirect-in")).await.unwrap();
    assert_eq!((reply.status, reply.redirects), (302, 0));

    // 303 after POST: a GET without the body. 308: the same request again.
    let mut post = get("/see-other");
    post.method = "POST".into();
    post.headers = vec![("Content-Type".into(), "text/plain".into())];
    post.body = Some(Bytes::from_static(b"payload"));
    let reply = send(&b, post.clone()).await.unwrap();
    assert_eq!(reply.status, 200);
    let seen = up.api_calls().pop().unwrap();
    assert_eq!((seen.method.as_str(), seen.body.len()), ("GET", 0));
    assert_eq!(seen.header("content-type"), None);
    post.path = "/keep-method".into();
    send(&b, post).await.unwrap();
    let seen = up.api_calls().pop().unwrap();
    assert_eq!(
        (seen.method.as_str(), seen.body.as_slice()),
        ("POST", &b"payload"[..])
    );

    let reply = send(&b, get("/created")).await.unwrap();
    assert_eq!(reply.status, 201);
    assert!(
        reply
            .headers
            .contains(&("location".to_string(), "/api/items/7".to_string()))
    );
}

#[tokio::test]
async fn a_huge_body_is_cut_without_reading_it_all() {
    let (addr, up) = start().await;
    let b = backend(&format!("http://{addr}/api"), "");
    let mut call = get("/huge");
    call.max_bytes = 100_000;
    let reply = send(&b, call).await.unwrap();
    assert!(reply.truncated);
    assert_eq!(reply.body.len(), 100_000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = up.huge_sent.load(Ordering::SeqCst);
    assert!(sent < 32 * 1024 * 1024, "upstream produced {sent} bytes");

    // Exactly at the cap is not truncated.
    let mut call = get("/echo");
    call.max_bytes = 11;
    let reply = send(&b, call).await.unwrap();
    assert!(!reply.truncated);
    assert_eq!(reply.body.len(), 11);
    let mut call = get("/echo");
    call.max_bytes = 10;
    assert!(send(&b, call).await.unwrap().truncated);
}

#[tokio::test]
async fn a_slow_body_times_out_and_cancel_stops_the_call() {
    let (addr, _up) = start().await;
    let b = backend(&format!("http://{addr}/api"), "");
    let mut call = get("/slow");
    call.timeout = Duration::from_millis(300);
    let started = Instant::now();
    let e = send(&b, call).await.unwrap_err();
    assert!(matches!(e, BackendError::Timeout), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(3));

    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let e = b.send(get("/hang"), cancel).await.unwrap_err();
    assert!(matches!(e, BackendError::Cancelled), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn busy_slots_answer_unavailable() {
    let (addr, _up) = start().await;
    let b = Arc::new(backend(
        &format!("http://{addr}/api"),
        "[connections.limits]\npool_size = 1\npool_wait_timeout_ms = 100",
    ));
    let holder = b.clone();
    let hang =
        tokio::spawn(async move { holder.send(get("/hang"), CancellationToken::new()).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let e = send(&b, get("/echo")).await.unwrap_err();
    assert!(
        matches!(&e, BackendError::Unavailable { detail, .. } if detail.contains("busy")),
        "{e:?}"
    );
    hang.abort();
}

fn oauth_extra(secret_ref: &str, addr: SocketAddr, more: &str) -> String {
    format!(
        "auth = {{ type = 'oauth2_client_credentials', token_url = 'http://{addr}/token', client_id = 'airlock', client_secret = '{secret_ref}', scopes = ['read', 'write'], audience = 'billing' {more} }}"
    )
}

#[tokio::test]
async fn oauth_tokens_are_fetched_once_shared_cached_and_refreshed() {
    let (addr, up) = start().await;
    let (_s, secret_ref) = secret(CLIENT_SECRET);
    up.token_delay_ms.store(200, Ordering::SeqCst);
    let b = Arc::new(backend(
        &format!("http://{addr}/api"),
        &oauth_extra(&secret_ref, addr, ""),
    ));
    // Eight concurrent first requests share one token request.
    let calls = (0..8).map(|_| {
        let b = b.clone();
        tokio::spawn(async move { b.send(get("/protected"), CancellationToken::new()).await })
    });
    for c in futures::future::join_all(calls).await {
        assert_eq!(c.unwrap().unwrap().status, 200);
    }
    assert_eq!(up.token_hits.load(Ordering::SeqCst), 1);
    let form = up.seen().into_iter().find(|s| s.path == "/token").unwrap();
    let body = String::from_utf8(form.body).unwrap();
    assert!(body.contains("grant_type=client_credentials"), "{body}");
    assert!(body.contains("scope=read+write"), "{body}");
    assert!(body.contains("audience=billing"), "{body}");
    assert!(
        !body.contains("client_secret"),
        "basic auth sends no secret in the body"
    );

    // Cached.
    send(&b, get("/protected")).await.unwrap();
    assert_eq!(up.token_hits.load(Ordering::SeqCst), 1);

    // Revoked upstream: the cached token gets a 401, one refresh, one retry.
    up.token_delay_ms.store(0, Ordering::SeqCst);
    up.revoked_before.store(2, Ordering::SeqCst);
    let reply = send(&b, get("/protected")).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(up.token_hits.load(Ordering::SeqCst), 2);

    // A 401 to a fresh token is the API's answer: no second refresh.
    up.revoked_before.store(1000, Ordering::SeqCst);
    let reply = send(&b, get("/protected")).await.unwrap();
    assert_eq!(reply.status, 401);
    assert_eq!(up.token_hits.load(Ordering::SeqCst), 3);
    let reply = send(&b, get("/protected")).await.unwrap();
    assert_eq!(reply.status, 401);
    assert_eq!(up.token_hits.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn oauth_tokens_expire() {
    let (addr, up) = start().await;
    let (_s, secret_ref) = secret(CLIENT_SECRET);
    up.expires_in.store(1, Ordering::SeqCst);
    let b = backend(
        &format!("http://{addr}/api"),
        &oauth_extra(&secret_ref, addr, ""),
    );
    b.verify().await.unwrap();
    assert_eq!(up.token_hits.load(Ordering::SeqCst), 1);
    send(&b, get("/protected")).await.unwrap();
    assert_eq!(up.token_hits.load(Ordering::SeqCst), 1);
    // Refreshed a fifth of its lifetime before it expires.
    tokio::time::sleep(Duration::from_millis(850)).await;
    send(&b, get("/protected")).await.unwrap();
    assert_eq!(up.token_hits.load(Ordering::SeqCst), 2);
    // expires_in = 0: never cached.
    up.expires_in.store(0, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(900)).await;
    send(&b, get("/protected")).await.unwrap();
    send(&b, get("/protected")).await.unwrap();
    assert_eq!(up.token_hits.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn oauth_client_secret_post() {
    let (addr, up) = start().await;
    let (_s, secret_ref) = secret(CLIENT_SECRET);
    let b = backend(
        &format!("http://{addr}/api"),
        &oauth_extra(&secret_ref, addr, ", client_auth = 'post'"),
    );
    b.verify().await.unwrap();
    let form = up.seen().into_iter().find(|s| s.path == "/token").unwrap();
    assert_eq!(form.header("authorization"), None);
    assert_eq!(
        form.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
}

#[tokio::test]
async fn a_refused_client_fails_closed_without_naming_its_secret() {
    let (addr, up) = start().await;
    let (_s, wrong_ref) = secret("wrong-5ecret-value");
    let b = backend(
        &format!("http://{addr}/api"),
        &oauth_extra(&wrong_ref, addr, ""),
    );
    let e = b.verify().await.unwrap_err();
    assert!(matches!(e, BackendError::Internal(_)), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("401") && text.contains("invalid_client"),
        "{text}"
    );
    assert!(!text.contains("wrong-5ecret-value"), "{text}");
    assert!(
        !text.contains("bad credentials"),
        "error_description leaked: {text}"
    );
    // A request fails the same way, and nothing reaches the API.
    let e = send(&b, get("/protected")).await.unwrap_err();
    assert!(!e.to_string().contains("wrong-5ecret-value"));
    assert!(up.api_calls().is_empty());

    // Post: the secret travels in the form the server echoes.
    let b = backend(
        &format!("http://{addr}/api"),
        &oauth_extra(&wrong_ref, addr, ", client_auth = 'post'"),
    );
    let e = b.verify().await.unwrap_err();
    assert!(!e.to_string().contains("wrong-5ecret-value"), "{e}");

    // An unreachable token endpoint is Unavailable (tolerated at startup).
    let closed = closed_port().await;
    let b = backend(
        &format!("http://{addr}/api"),
        &oauth_extra(&wrong_ref, closed, ""),
    );
    let e = b.verify().await.unwrap_err();
    assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
}

async fn closed_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

#[tokio::test]
async fn credentials_never_appear_in_errors_or_answers() {
    let (addr, _up) = start().await;
    let (_t, token_ref) = secret(TOKEN);
    let (_p, password_ref) = secret(PASSWORD);
    let (_k, key_ref) = secret(API_KEY);
    let (_s, secret_ref) = secret(CLIENT_SECRET);
    let closed = closed_port().await;
    let auths = [
        format!("auth = {{ type = 'bearer', token = '{token_ref}' }}"),
        format!("auth = {{ type = 'basic', username = 'svc', password = '{password_ref}' }}"),
        format!("auth = {{ type = 'header', name = 'X-Api-Key', value = '{key_ref}' }}"),
        oauth_extra(&secret_ref, addr, ""),
    ];
    for auth in &auths {
        // The upstream echoes every request header, in the body and in a header.
        let b = backend(&format!("http://{addr}/api"), auth);
        let reply = send(&b, get("/reflect")).await.unwrap();
        let body = String::from_utf8_lossy(&reply.body).to_string();
        no_secret_in(&body);
        assert!(!body.contains("tok-1"), "oauth token echoed: {body}");
        assert!(body.contains(REDACTED), "{body}");
        assert!(reply.secrets_redacted >= 1);
        for (_, v) in &reply.headers {
            no_secret_in(v);
        }
        // A connection failure's text.
        let b = backend(&format!("http://{closed}/api"), auth);
        let e = send(&b, get("/echo")).await.unwrap_err();
        assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
        no_secret_in(&e.to_string());
        no_secret_in(&format!("{e:?}"));
    }
    // Building with a missing secret names the key, not a value.
    let text = "[[connections]]\nname = 'api'\nkind = 'http'\nbase_url = 'https://h/api'\nauth = { type = 'bearer', token = 'env:AIRLOCK_TEST_SURELY_UNSET_HTTP' }\n";
    let e = Config::parse(text, "t").unwrap_err();
    assert_eq!(e.path, "connections[0].auth.token");
}

#[tokio::test]
async fn tls_failures_say_so() {
    // An https base URL whose server speaks plain HTTP: the handshake fails.
    let (addr, _up) = start().await;
    let b = backend(&format!("https://{addr}/api"), "");
    let e = send(&b, get("/echo")).await.unwrap_err();
    let BackendError::Unavailable { detail, .. } = &e else {
        panic!("{e:?}")
    };
    assert!(detail.starts_with("TLS with"), "{detail}");
}

#[test]
fn a_bad_ca_is_refused_when_built() {
    let (_c, ca_ref) = secret("not a certificate");
    let text = format!(
        "[[connections]]\nname = 'api'\nkind = 'http'\nbase_url = 'https://h/api'\ntls = {{ ca = '{ca_ref}' }}\n"
    );
    let config = Config::parse(&text, "t").unwrap();
    let c = &config.connections[0];
    let TargetConfig::Http(http) = &c.target else {
        panic!()
    };
    let e = HttpBackend::new(c, http).err().unwrap();
    assert!(e.contains("tls.ca"), "{e}");
}

#[test]
fn scrubbing_replaces_secrets_and_a_cut_secret_tail() {
    let secrets = vec!["s3cr3t-token".to_string(), "abcd".to_string()];
    let (out, n) = scrub_bytes(
        Bytes::from_static(b"x s3cr3t-token y abcd"),
        &secrets,
        false,
    );
    assert_eq!(
        out.as_ref(),
        format!("x {REDACTED} y {REDACTED}").as_bytes()
    );
    assert_eq!(n, 2);
    // Cut in the middle of a secret: its start is dropped too.
    let (out, n) = scrub_bytes(Bytes::from_static(b"data s3cr3t-t"), &secrets, true);
    assert_eq!(out.as_ref(), b"data ");
    assert_eq!(n, 0);
    // Nothing to do: the same bytes.
    let body = Bytes::from_static(b"plain");
    let (out, n) = scrub_bytes(body.clone(), &secrets, false);
    assert_eq!((out, n), (body, 0));
    let (s, n) = scrub_str("Bearer s3cr3t-token", &secrets);
    assert_eq!((s.as_str(), n), ("Bearer [redacted by airlock]", 1));
}

#[test]
fn form_encoding() {
    assert_eq!(
        oauth::form_encode("a b+c&d=é*-._~"),
        "a+b%2Bc%26d%3D%C3%A9*-._%7E"
    );
}
