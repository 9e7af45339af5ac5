//! Per-issuer JWKS cache: OIDC discovery → `jwks_uri` → keys.
//!
//! Invariants:
//! - A token with a `kid` the cache does not know triggers at most one refetch per
//!   [`REFETCH_INTERVAL`] per issuer, so garbage `kid`s cannot turn Airlock into a load
//!   generator against the identity provider.
//! - Keys are refreshed every [`MAX_AGE`]; if the issuer is down, the cached keys keep
//!   serving (a brief IdP outage does not lock every agent out).
//! - Fetches are bounded in time and size; only `https` (or loopback `http` when the
//!   operator opted in) is followed.
//! - Only RSA (RS256), P-256 (ES256) and Ed25519 (EdDSA) keys are kept; symmetric keys in a
//!   JWKS are ignored, which is what makes HS/RS confusion impossible.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::{Mutex, RwLock};

use super::{AuthError, VerifyKey};
use crate::config::IssuerConfig;

pub const REFETCH_INTERVAL: Duration = Duration::from_secs(30);
pub const MAX_AGE: Duration = Duration::from_secs(600);

#[derive(Default)]
struct Cached {
    /// Keyed by `kid`; keys without a `kid` are stored under "".
    keys: HashMap<String, Arc<VerifyKey>>,
    /// The discovery document's endpoints, for the console's sign-in.
    endpoints: Option<Endpoints>,
    fetched_at: Option<Instant>,
}

/// Where a browser signs in and where its code is exchanged (OIDC discovery).
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub authorization: String,
    pub token: String,
}

pub struct JwksCache {
    discovery_url: String,
    issuer: String,
    allow_http: bool,
    max_bytes: usize,
    http: reqwest::Client,
    cached: RwLock<Cached>,
    /// Serialises fetches and remembers when the last one was attempted.
    last_attempt: Mutex<Option<Instant>>,
}

impl JwksCache {
    pub fn new(config: &IssuerConfig) -> Result<JwksCache, String> {
        let discovery_url = config.discovery_url.clone().unwrap_or_else(|| {
            format!(
                "{}/.well-known/openid-configuration",
                config.issuer.trim_end_matches('/')
            )
        });
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.jwks_timeout_ms))
            .connect_timeout(Duration::from_millis(config.jwks_timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("issuer {}: cannot build HTTP client: {e}", config.name))?;
        Ok(JwksCache {
            discovery_url,
            issuer: config.issuer.clone(),
            allow_http: config.allow_insecure_http,
            max_bytes: config.jwks_max_bytes,
            http,
            cached: RwLock::new(Cached::default()),
            last_attempt: Mutex::new(None),
        })
    }

    /// The key for a token, refetching when the `kid` is unknown or the cache is old.
    pub(crate) async fn key(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<VerifyKey>, AuthError> {
        let (hit, stale) = {
            let c = self.cached.read().await;
            let hit = lookup(&c.keys, kid, alg);
            let stale = c.fetched_at.is_none_or(|t| t.elapsed() > MAX_AGE);
            (hit, stale)
        };
        match hit {
            Some(key) if !stale => Ok(key),
            Some(key) => {
                // Old but usable: refresh opportunistically; keep serving the cached key only
                // when the issuer could not be reached. A key a fresh JWKS no longer holds
                // was revoked and stops verifying at once.
                match self.refresh_rate_limited().await {
                    Ok(true) => {
                        let c = self.cached.read().await;
                        lookup(&c.keys, kid, alg).ok_or(AuthError::UnknownKey)
                    }
                    Ok(false) => Ok(key),
                    Err(e) => {
                        tracing::warn!(issuer = %self.issuer, error = %e, "JWKS refresh failed; serving cached keys");
                        Ok(key)
                    }
                }
            }
            None => {
                let fetched = self.refresh_rate_limited().await;
                let c = self.cached.read().await;
                match lookup(&c.keys, kid, alg) {
                    Some(key) => Ok(key),
                    None if c.fetched_at.is_none() && fetched.is_err() => {
                        Err(AuthError::KeysUnavailable)
                    }
                    None => Err(AuthError::UnknownKey),
                }
            }
        }
    }

    /// `Ok(true)`: fetched now; `Ok(false)`: skipped (fetched less than 30 s ago).
    async fn refresh_rate_limited(&self) -> Result<bool, String> {
        let mut last = self.last_attempt.lock().await;
        if last.is_some_and(|t| t.elapsed() < REFETCH_INTERVAL) {
            return Ok(false);
        }
        *last = Some(Instant::now());
        self.fetch_and_store().await.map(|()| true)
    }

    /// Unconditional fetch (startup warm-up).
    pub async fn refresh(&self) -> Result<(), String> {
        let mut last = self.last_attempt.lock().await;
        *last = Some(Instant::now());
        self.fetch_and_store().await
    }

    async fn fetch_and_store(&self) -> Result<(), String> {
        let discovery: serde_json::Value =
            serde_json::from_slice(&self.get_bounded(&self.discovery_url).await?)
                .map_err(|e| format!("discovery document is not JSON: {e}"))?;
        if discovery.get("issuer").and_then(|v| v.as_str()) != Some(self.issuer.as_str()) {
            return Err("discovery document names a different issuer".into());
        }
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .ok_or("discovery document has no jwks_uri")?
            .to_string();
        let set: JwkSet = serde_json::from_slice(&self.get_bounded(&jwks_uri).await?)
            .map_err(|e| format!("JWKS is not a valid key set: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(alg) = algorithm_for(jwk) else {
                continue;
            };
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let kid = jwk.common.key_id.clone().unwrap_or_default();
            keys.insert(kid, Arc::new(VerifyKey { alg, key }));
        }
        let endpoint = |name: &str| {
            discovery
                .get(name)
                .and_then(|v| v.as_str())
                .filter(|u| self.fetchable(u).is_ok())
                .map(str::to_string)
        };
        let endpoints = match (
            endpoint("authorization_endpoint"),
            endpoint("token_endpoint"),
        ) {
            (Some(authorization), Some(token)) => Some(Endpoints {
                authorization,
                token,
            }),
            _ => None,
        };
        let mut c = self.cached.write().await;
        c.keys = keys;
        c.endpoints = endpoints;
        c.fetched_at = Some(Instant::now());
        Ok(())
    }

    /// The sign-in endpoints from the discovery document (fetched now if never fetched).
    pub async fn endpoints(&self) -> Result<Endpoints, String> {
        let cached = self.cached.read().await.endpoints.clone();
        if let Some(e) = cached {
            return Ok(e);
        }
        self.refresh_rate_limited().await?;
        self.cached.read().await.endpoints.clone().ok_or_else(|| {
            "the issuer's discovery document names no usable authorization_endpoint and \
             token_endpoint"
                .to_string()
        })
    }

    /// An https URL (or http on an issuer allowed to use it).
    fn fetchable(&self, url: &str) -> Result<reqwest::Url, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("bad URL {url}: {e}"))?;
        match parsed.scheme() {
            "https" => Ok(parsed),
            "http" if self.allow_http => Ok(parsed),
            s => Err(format!("refusing to talk to the issuer over {s}")),
        }
    }

    async fn get_bounded(&self, url: &str) -> Result<Vec<u8>, String> {
        let parsed = self.fetchable(url)?;
        let resp = self
            .http
            .get(parsed)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        self.read_bounded(url, resp, true).await
    }

    /// POSTs a form (the console's code exchange) and reads a bounded JSON answer; an
    /// error status comes back with the provider's `error` and `error_description`.
    pub async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Result<serde_json::Value, String> {
        let parsed = self.fetchable(url)?;
        let mut req = self
            .http
            .post(parsed)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(form_encode(form));
        if let Some((user, password)) = basic {
            // RFC 6749 2.3.1: the client id and secret are form-encoded before Basic.
            req = req.basic_auth(form_encode_value(user), Some(form_encode_value(password)));
        }
        let resp = req.send().await.map_err(|e| format!("POST {url}: {e}"))?;
        let ok = resp.status().is_success();
        let status = resp.status();
        let body = self.read_bounded(url, resp, false).await?;
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| format!("POST {url}: HTTP {status}, not a JSON answer"))?;
        if !ok {
            let field = |k: &str| json.get(k).and_then(|v| v.as_str()).unwrap_or("");
            return Err(format!(
                "POST {url}: HTTP {status} {} {}",
                field("error"),
                field("error_description")
            ));
        }
        Ok(json)
    }

    async fn read_bounded(
        &self,
        url: &str,
        mut resp: reqwest::Response,
        require_success: bool,
    ) -> Result<Vec<u8>, String> {
        if require_success && !resp.status().is_success() {
            return Err(format!("{url}: HTTP {}", resp.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{url}: {e}"))? {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(format!("{url}: larger than {} bytes", self.max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// `application/x-www-form-urlencoded`.
fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode_value(k), form_encode_value(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn form_encode_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn lookup(
    keys: &HashMap<String, Arc<VerifyKey>>,
    kid: Option<&str>,
    alg: Algorithm,
) -> Option<Arc<VerifyKey>> {
    match kid {
        Some(kid) => keys.get(kid).filter(|k| k.alg == alg).cloned(),
        // Without a `kid`, only an unambiguous key of the right algorithm is used.
        None => {
            let mut candidates = keys.values().filter(|k| k.alg == alg);
            let first = candidates.next()?;
            candidates.next().is_none().then(|| first.clone())
        }
    }
}

/// The one algorithm a JWK may verify, from its key type (and `alg` if it declares one).
fn algorithm_for(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    let declared_ok = match jwk.common.key_algorithm {
        None => true,
        Some(KeyAlgorithm::RS256) => by_type == Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => by_type == Algorithm::ES256,
        Some(KeyAlgorithm::EdDSA) => by_type == Algorithm::EdDSA,
        Some(_) => false,
    };
    declared_ok.then_some(by_type)
}
