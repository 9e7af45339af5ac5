//! Every way a token can be wrong, against the dev issuer and a real OIDC issuer double
//! (discovery + JWKS served over loopback, RSA and P-256 keys).

use airlock::config::PrincipalKind;
use axum::Json;
use axum::routing::get;
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::common::*;

struct Idp {
    base: String,
    rsa: EncodingKey,
    ec: EncodingKey,
}

pub(crate) fn openssl_key(dir: &std::path::Path, name: &str, args: &[&str]) -> Vec<u8> {
    let path = dir.join(name);
    let status = std::process::Command::new("openssl")
        .arg("genpkey")
        .args(args)
        .arg("-out")
        .arg(&path)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is installed");
    assert!(status.success());
    std::fs::read(path).unwrap()
}

async fn idp() -> Idp {
    let dir = tempfile::tempdir().unwrap();
    let rsa_pem = openssl_key(
        dir.path(),
        "rsa.pem",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let ec_pem = openssl_key(
        dir.path(),
        "ec.pem",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let rsa = EncodingKey::from_rsa_pem(&rsa_pem).unwrap();
    let ec = EncodingKey::from_ec_pem(&ec_pem).unwrap();
    let mut rsa_jwk = Jwk::from_encoding_key(&rsa, Algorithm::RS256).unwrap();
    rsa_jwk.common.key_id = Some("rsa-1".into());
    let mut ec_jwk = Jwk::from_encoding_key(&ec, Algorithm::ES256).unwrap();
    ec_jwk.common.key_id = Some("ec-1".into());
    let set = JwkSet {
        keys: vec![rsa_jwk, ec_jwk],
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let issuer = base.clone();
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || {
                let issuer = issuer.clone();
                async move { Json(json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")})) }
            }),
        )
        .route(
            "/jwks",
            get(move || {
                let set = set.clone();
                async move { Json(set) }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Idp { base, rsa, ec }
}

fn config(idp: &Idp) -> String {
    format!(
        r#"{DEV_ISSUER}
[[issuers]]
name = "corp"
issuer = "{base}"
audience = "airlock-prod"
principal_kind = "agent"
allowed_groups = ["agents"]
allow_insecure_http = true

[[connections]]
name = "demo"
kind = "sqlite"
path = "demo.db"

[[rules]]
id = "agents"
action = "allow"
connections = ["demo"]
principals = ["group:agents"]

[[rules]]
id = "only-dev-agent-1"
action = "deny"
connections = ["demo"]
principals = ["sub:corp/agent-1"]
"#,
        base = idp.base
    )
}

fn claims(idp: &Idp, sub: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"iss": idp.base, "aud": "airlock-prod", "sub": sub, "exp": now + 300, "iat": now, "groups": ["agents", "admins"]})
}

fn sign(key: &EncodingKey, alg: Algorithm, kid: &str, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

async fn status_of(a: &Airlock, token: &str) -> (u16, Value) {
    a.get(token, "/v1/connections").await
}

#[tokio::test]
async fn oidc_tokens_verify_and_principals_are_issuer_scoped() {
    let idp = idp().await;
    let a = Airlock::start(&config(&idp)).await;

    let rs = sign(
        &idp.rsa,
        Algorithm::RS256,
        "rsa-1",
        &claims(&idp, "agent-2"),
    );
    let (status, body) = status_of(&a, &rs).await;
    assert_eq!(status, 200, "{body}");
    let es = sign(&idp.ec, Algorithm::ES256, "ec-1", &claims(&idp, "agent-2"));
    assert_eq!(status_of(&a, &es).await.0, 200);

    // The same `sub` from two issuers is two principals: the deny names corp's agent-1 only.
    let corp_agent1 = sign(
        &idp.rsa,
        Algorithm::RS256,
        "rsa-1",
        &claims(&idp, "agent-1"),
    );
    let (status, body) = a
        .query(&corp_agent1, "demo", json!({"sql": "SELECT 1"}))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["rule"], "only-dev-agent-1");
    let dev_agent1 = a.token("agent-1", &["agents"], PrincipalKind::Agent);
    let (status, body) = a
        .query(&dev_agent1, "demo", json!({"sql": "SELECT 1"}))
        .await;
    assert_eq!(status, 200, "{body}");

    // Unknown kid, key of the wrong type for the header, missing aud, wrong aud.
    assert_eq!(
        status_of(
            &a,
            &sign(&idp.rsa, Algorithm::RS256, "nope", &claims(&idp, "x"))
        )
        .await
        .0,
        401
    );
    let mut c = claims(&idp, "x");
    c.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        status_of(&a, &sign(&idp.rsa, Algorithm::RS256, "rsa-1", &c))
            .await
            .0,
        401
    );
    let mut c = claims(&idp, "x");
    c["aud"] = json!("someone-else");
    let (status, body) = status_of(&a, &sign(&idp.rsa, Algorithm::RS256, "rsa-1", &c)).await;
    assert_eq!(status, 401);
    assert!(
        body["detail"].as_str().unwrap().contains("audience"),
        "{body}"
    );
    // Expired, not yet valid, missing exp.
    let mut c = claims(&idp, "x");
    c["exp"] = json!(chrono::Utc::now().timestamp() - 3600);
    assert_eq!(
        status_of(&a, &sign(&idp.rsa, Algorithm::RS256, "rsa-1", &c))
            .await
            .0,
        401
    );
    let mut c = claims(&idp, "x");
    c["nbf"] = json!(chrono::Utc::now().timestamp() + 3600);
    assert_eq!(
        status_of(&a, &sign(&idp.rsa, Algorithm::RS256, "rsa-1", &c))
            .await
            .0,
        401
    );
    let mut c = claims(&idp, "x");
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        status_of(&a, &sign(&idp.rsa, Algorithm::RS256, "rsa-1", &c))
            .await
            .0,
        401
    );
    a.stop().await;
}

#[tokio::test]
async fn forged_and_malformed_tokens_are_refused() {
    let idp = idp().await;
    let a = Airlock::start(&config(&idp)).await;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let c = claims(&idp, "agent-2");

    // alg: none
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&c)
    );
    assert_eq!(status_of(&a, &none).await.0, 401);
    // HS256 signed with the RSA public key material as the secret (alg confusion).
    let jwks: Value = reqwest::get(format!("{}/jwks", idp.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let n = jwks["keys"][0]["n"].as_str().unwrap().to_string();
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &c,
        &EncodingKey::from_secret(n.as_bytes()),
    )
    .unwrap();
    assert_eq!(status_of(&a, &hs).await.0, 401);
    // A key smuggled in the header (jwk/jku) is ignored: signed by an unknown key.
    let dir = tempfile::tempdir().unwrap();
    let other = EncodingKey::from_rsa_pem(&openssl_key(
        dir.path(),
        "k.pem",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    ))
    .unwrap();
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("rsa-1".into());
    h.jwk = Some(Jwk::from_encoding_key(&other, Algorithm::RS256).unwrap());
    h.jku = Some("http://127.0.0.1:1/jwks".into());
    let smuggled = jsonwebtoken::encode(&h, &c, &other).unwrap();
    assert_eq!(status_of(&a, &smuggled).await.0, 401);
    // Garbage, no token, wrong scheme, untrusted issuer, dev token signed by another key.
    assert_eq!(status_of(&a, "not.a.jwt").await.0, 401);
    let resp = a
        .http
        .get(format!("{}/v1/connections", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let resp = a
        .http
        .get(format!("{}/v1/connections", a.base))
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let mut c2 = c.clone();
    c2["iss"] = json!("https://evil.example");
    assert_eq!(
        status_of(&a, &sign(&idp.rsa, Algorithm::RS256, "rsa-1", &c2))
            .await
            .0,
        401
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let forged = mint(
        elsewhere.path(),
        "agent-1",
        &["agents"],
        PrincipalKind::Agent,
        None,
    );
    let (status, body) = status_of(&a, &forged).await;
    assert_eq!(status, 401);
    assert!(
        body["detail"].as_str().unwrap().contains("signature"),
        "{body}"
    );
    // The server still serves.
    assert_eq!(status_of(&a, &a.agent()).await.0, 200);
    a.stop().await;
}

#[tokio::test]
async fn groups_are_limited_to_what_the_issuer_may_assert_and_act_is_recorded() {
    let a = Airlock::start(
        r#"
[[issuers]]
name = "dev"
issuer = "airlock-dev"
audience = "airlock"
dev = true
kind_claim = "airlock_kind"
allowed_groups = ["agents", "auditors"]

[[connections]]
name = "demo"
kind = "sqlite"
path = "demo.db"

[[rules]]
id = "admins"
action = "allow"
connections = ["*"]
principals = ["group:admins"]

[[rules]]
id = "agents"
action = "allow"
connections = ["demo"]
principals = ["group:agents"]
"#,
    )
    .await;
    // `admins` is not an assertable group for this issuer: dropped, so nothing is visible.
    let t = a.token("mallory", &["admins"], PrincipalKind::Agent);
    let (_, body) = a.get(&t, "/v1/connections").await;
    assert_eq!(body["connections"].as_array().unwrap().len(), 0);
    let t = mint(
        a.data.path(),
        "agent-7",
        &["agents"],
        PrincipalKind::Agent,
        Some("alice"),
    );
    let (status, body) = a.query(&t, "demo", json!({"sql": "SELECT 1"})).await;
    assert_eq!(status, 200, "{body}");
    let events = a.audit_of(body["execution_id"].as_str().unwrap()).await;
    assert_eq!(events[0]["principal"]["actor"], json!(["alice"]));
    a.stop().await;
}

#[tokio::test]
async fn dev_issuer_is_refused_on_a_public_listener() {
    let data = tempfile::tempdir().unwrap();
    let config = airlock::config::Config::parse(DEV_ISSUER, "t").unwrap();
    let err = airlock::server::prepare(config, data.path(), Some("0.0.0.0:0".parse().unwrap()))
        .await
        .err()
        .expect("refused");
    assert!(err.contains("loopback"), "{err}");
}
