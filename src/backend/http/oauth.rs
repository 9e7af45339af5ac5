//! OAuth 2.0 client credentials (RFC 6749 4.4) for an `http` connection: one token at a
//! time, cached until shortly before it expires.
//!
//! What must stay true:
//! - Single flight: the cache lock is held while a token is fetched, so concurrent requests
//!   wait for that one fetch instead of each asking the token endpoint. A caller dropped
//!   mid-fetch (timeout, cancel) releases the lock; the next one fetches.
//! - The token endpoint's answer is never logged, and never copied into an error: errors
//!   carry its status and, at most, its RFC 6749 `error` code when that is a plain token
//!   (never `error_description`, which some servers fill with what they were sent).
//! - A token is refreshed after a 401 only when it came from the cache (see
//!   [`OAuth::invalidate`]); a fresh token the API refuses is the API's answer.

use std::time::Duration;

use base64::Engine;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::backend::BackendError;
use crate::config::{OAuthClientAuth, SecretValue};

/// Largest token endpoint answer read.
const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;
/// The lifetime assumed when the token endpoint gives no `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// Longest a token is cached, whatever `expires_in` says.
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// At most this long before its expiry a token is refreshed (less for short-lived tokens:
/// a fifth of their lifetime), so a request never leaves with a token about to expire.
const MAX_MARGIN: Duration = Duration::from_secs(60);
/// Retry-After for a token endpoint that is down or overloaded.
const RETRY_TOKEN_SECS: u64 = 5;

pub(super) struct OAuth {
    pub(super) token_url: reqwest::Url,
    pub(super) client_id: String,
    pub(super) client_secret: SecretValue,
    pub(super) scopes: Vec<String>,
    pub(super) audience: Option<String>,
    pub(super) client_auth: OAuthClientAuth,
    state: Mutex<TokenState>,
}

#[derive(Default)]
struct TokenState {
    current: Option<CachedToken>,
    /// Counts fetched tokens, so a 401 invalidates only the token it was answered to.
    generation: u64,
}

struct CachedToken {
    /// `Bearer <token>`, marked sensitive.
    header: HeaderValue,
    refresh_at: Instant,
    generation: u64,
}

/// A bearer header for one request, and whether (and which) cached token it is.
pub(super) struct Bearer {
    pub(super) header: HeaderValue,
    /// `Some(generation)` when the token came from the cache: only then may a 401 refresh it.
    pub(super) cached: Option<u64>,
    /// The raw token of a freshly fetched one, so the backend can scrub it from what it
    /// returns; `None` when cached (the backend already knows it).
    pub(super) fresh_token: Option<String>,
}

impl OAuth {
    pub(super) fn new(
        token_url: reqwest::Url,
        client_id: String,
        client_secret: SecretValue,
        scopes: Vec<String>,
        audience: Option<String>,
        client_auth: OAuthClientAuth,
    ) -> OAuth {
        OAuth {
            token_url,
            client_id,
            client_secret,
            scopes,
            audience,
            client_auth,
            state: Mutex::new(TokenState::default()),
        }
    }

    /// The secret strings this client sends, as they go on the wire, for scrubbing.
    pub(super) fn secrets(&self) -> Vec<String> {
        let secret = self.client_secret.expose().to_string();
        vec![
            form_encode(&secret),
            basic_credentials(&self.client_id, &secret),
            secret,
        ]
    }

    /// A cached token, or a freshly fetched one (single flight; see the module docs).
    pub(super) async fn bearer(&self, client: &reqwest::Client) -> Result<Bearer, BackendError> {
        let mut state = self.state.lock().await;
        if let Some(t) = &state.current
            && Instant::now() < t.refresh_at
        {
            return Ok(Bearer {
                header: t.header.clone(),
                cached: Some(t.generation),
                fresh_token: None,
            });
        }
        state.current = None;
        let (token, lifetime) = self.fetch(client).await?;
        let mut header = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            BackendError::Internal(
                "the token endpoint returned an access_token that cannot be sent in a header"
                    .into(),
            )
        })?;
        header.set_sensitive(true);
        state.generation += 1;
        if !lifetime.is_zero() {
            let margin = (lifetime / 5).min(MAX_MARGIN);
            state.current = Some(CachedToken {
                header: header.clone(),
                refresh_at: Instant::now() + (lifetime - margin),
                generation: state.generation,
            });
        }
        Ok(Bearer {
            header,
            cached: None,
            fresh_token: Some(token),
        })
    }

    /// Forgets the cached token if it is still the one of `generation` (a 401 answered to
    /// it); a token another request already refreshed stays.
    pub(super) async fn invalidate(&self, generation: u64) {
        let mut state = self.state.lock().await;
        if state
            .current
            .as_ref()
            .is_some_and(|t| t.generation == generation)
        {
            state.current = None;
        }
    }

    /// One token request. Returns the token and how long it may be cached (zero: use once).
    async fn fetch(&self, client: &reqwest::Client) -> Result<(String, Duration), BackendError> {
        let secret = self.client_secret.expose();
        let mut form = vec![("grant_type", "client_credentials".to_string())];
        if !self.scopes.is_empty() {
            form.push(("scope", self.scopes.join(" ")));
        }
        if let Some(audience) = &self.audience {
            form.push(("audience", audience.clone()));
        }
        let mut request = client
            .post(self.token_url.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json");
        match self.client_auth {
            OAuthClientAuth::Basic => {
                let mut value = HeaderValue::from_str(&format!(
                    "Basic {}",
                    basic_credentials(&self.client_id, secret)
                ))
                .map_err(|_| {
                    BackendError::Internal(
                        "auth.client_id or auth.client_secret cannot be sent in a header".into(),
                    )
                })?;
                value.set_sensitive(true);
                request = request.header(AUTHORIZATION, value);
            }
            OAuthClientAuth::Post => {
                form.push(("client_id", self.client_id.clone()));
                form.push(("client_secret", secret.to_string()));
            }
        }
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let host = match (self.token_url.host_str(), self.token_url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (h, _) => h.unwrap_or("").to_string(),
        };
        let mut response =
            request.body(body).send().await.map_err(|e| {
                super::transport_error(&e, &format!("the token endpoint at {host}"))
            })?;
        let status = response.status();
        let mut text = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if text.len() + chunk.len() > MAX_TOKEN_RESPONSE_BYTES {
                        return Err(BackendError::Internal(format!(
                            "the token endpoint at {host} answered more than {MAX_TOKEN_RESPONSE_BYTES} bytes"
                        )));
                    }
                    text.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(super::transport_error(
                        &e,
                        &format!("reading the token endpoint's answer from {host}"),
                    ));
                }
            }
        }
        let json: Option<serde_json::Value> = serde_json::from_slice(&text).ok();
        if !status.is_success() {
            let code = json
                .as_ref()
                .and_then(|j| j.get("error"))
                .and_then(|e| e.as_str())
                .filter(|c| {
                    !c.is_empty()
                        && c.len() <= 64
                        && c.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                })
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            let detail = format!(
                "the token endpoint at {host} answered {}{code} to client `{}`",
                status.as_u16(),
                self.client_id
            );
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                BackendError::Unavailable {
                    detail,
                    retry_after_secs: RETRY_TOKEN_SECS,
                }
            } else {
                BackendError::Internal(format!("{detail}: the client credentials were refused"))
            });
        }
        let json = json.ok_or_else(|| {
            BackendError::Internal(format!("the token endpoint at {host} did not answer JSON"))
        })?;
        let token = json
            .get("access_token")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                BackendError::Internal(format!(
                    "the token endpoint at {host} gave no usable access_token"
                ))
            })?;
        if let Some(kind) = json.get("token_type").and_then(|t| t.as_str())
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(BackendError::Internal(format!(
                "the token endpoint at {host} gave a `{}` token; only bearer tokens are supported",
                kind.chars().take(32).collect::<String>().escape_debug()
            )));
        }
        // Some servers send the number as a string.
        let expires_in = match json.get("expires_in") {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.parse::<u64>().ok(),
            _ => None,
        };
        let lifetime = expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_LIFETIME)
            .min(MAX_LIFETIME);
        Ok((token.to_string(), lifetime))
    }
}

/// `application/x-www-form-urlencoded` (the WHATWG byte serializer).
pub(super) fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'*' | b'-' | b'.' | b'_' => out.push(char::from(b)),
            _ if b.is_ascii_alphanumeric() => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `client_secret_basic`: RFC 6749 2.3.1 form-encodes id and secret before base64.
fn basic_credentials(client_id: &str, secret: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        form_encode(client_id),
        form_encode(secret)
    ))
}
