//! HTTP API backend: one `http` connection's base URL, reached with credentials only
//! Airlock holds.
//!
//! The contract (the gateway relies on it):
//! - [`HttpCall::path`] is already canonical (`inspect::http::normalize_path`) and is sent as
//!   `base path + path` unchanged; the backend checks again and refuses a call whose path,
//!   method or headers would not pass the inspector, so nothing it did not judge is sent.
//! - Headers are layered: the agent's, then the connection's fixed `headers`, then
//!   `Accept-Encoding: identity` (Airlock must read the body to mask it), then the credential,
//!   last. An agent header naming a fixed or credential header is refused, not overridden,
//!   so the audit never shows a header value that was not sent.
//! - Redirects are never followed by the HTTP client. The backend follows one itself only
//!   while the `Location` stays under the base URL (same scheme, host, port, and path under
//!   the base path, canonical); otherwise the redirect itself is the answer, with a note,
//!   and its `Location` is withheld. A followed redirect goes to a path the policy did not
//!   judge, but still under the same base; [`HttpReply::final_path`] says which.
//! - The whole call — waiting for a request slot, fetching a token, every redirect and
//!   reading the body — runs under `timeout` ([`BackendError::Timeout`]) and `cancel`
//!   ([`BackendError::Cancelled`]); either drops the request, which closes its connection.
//! - The body is read as it streams, up to `max_bytes`; past that the response is dropped
//!   (its connection closed) and `truncated` set: a huge answer is never read whole.
//! - Credentials never appear in an error, a log line or what the caller receives: errors
//!   are built from transport causes without URLs' queries, every error text and every
//!   returned header and body is scrubbed of the secret strings this backend sends (an
//!   echo endpoint would otherwise hand the agent the token).
//! - `limits.pool_size` requests run at once; more wait up to `pool_wait_timeout_ms`, then
//!   [`BackendError::Unavailable`].

mod oauth;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use reqwest::header::{
    ACCEPT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, LOCATION,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{BackendError, bounded, deadline_after};
use crate::config::{ConnectionConfig, HttpAuth, HttpConfig};
use crate::inspect::http as inspect;

/// Retry-After when the upstream cannot be reached.
const RETRY_CONNECT_SECS: u64 = 5;
/// Retry-After when every request slot is taken.
const RETRY_BUSY_SECS: u64 = 1;
/// Retry-After for a TLS failure: a configuration problem, not a blip.
const RETRY_TLS_SECS: u64 = 30;
/// How long [`HttpBackend::verify`] waits for a token.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(30);
/// Response headers passed to the caller; everything else (cookies, server banners,
/// authentication challenges) stays with Airlock. `location` only when it points under
/// the base URL.
const RESPONSE_HEADERS: &[&str] = &[
    "cache-control",
    "content-encoding",
    "content-length",
    "content-type",
    "etag",
    "last-modified",
    "link",
    "location",
    "retry-after",
    "x-request-id",
];
/// Secrets shorter than this are not scrubbed from answers and errors.
const MIN_SCRUBBED_BYTES: usize = 4;
/// What replaces a secret found in an answer or an error.
const REDACTED: &str = "[redacted by airlock]";

/// One request to the connection's API, as admitted.
#[derive(Debug, Clone)]
pub struct HttpCall {
    /// Upper case, checked (`inspect::http::normalize_method`).
    pub method: String,
    /// Canonical, relative to the base URL (`inspect::http::normalize_path`).
    pub path: String,
    /// Sent form-encoded, in this order; names and values are arbitrary strings.
    pub query: Vec<(String, String)>,
    /// Checked (`inspect::http::check_header`); sent in this order.
    pub headers: Vec<(String, String)>,
    pub body: Option<Bytes>,
    /// Bounds the whole call (slot, token, redirects, body).
    pub timeout: Duration,
    /// Response body cap.
    pub max_bytes: u64,
}

/// The API's answer.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    /// Only the allow-listed response headers (see `RESPONSE_HEADERS`), names lower case, in
    /// the order received.
    pub headers: Vec<(String, String)>,
    pub content_type: Option<String>,
    /// At most `max_bytes`, secrets scrubbed.
    pub body: Bytes,
    /// The body was longer than `max_bytes` and was cut there.
    pub truncated: bool,
    /// Redirects followed (all under the base URL).
    pub redirects: u32,
    /// Why the redirect that is the answer was not followed (off base, or too many).
    pub redirect_refused: Option<String>,
    /// The canonical path (under the base URL) of the request that answered: the call's
    /// path unless a redirect was followed.
    pub final_path: String,
    /// How many secret strings were scrubbed from the body and headers (an upstream that
    /// echoed a credential).
    pub secrets_redacted: u32,
}

/// What a request authenticates with.
enum Credential {
    None,
    /// Bearer, basic or a named header: one fixed header, marked sensitive.
    Static(HeaderName, HeaderValue),
    OAuth(Box<oauth::OAuth>),
}

pub struct HttpBackend {
    name: String,
    client: reqwest::Client,
    /// The base URL; its path without a trailing `/` is `base_path`.
    base: reqwest::Url,
    /// `""` for a root base URL, else `/api/v2` (no trailing slash).
    base_path: String,
    fixed_headers: Vec<(HeaderName, HeaderValue)>,
    credential: Credential,
    /// Lower-case names an agent may not send: the fixed headers and the credential's.
    reserved: Vec<String>,
    max_redirects: u32,
    slots: Arc<Semaphore>,
    pool_size: usize,
    pool_wait: Duration,
    /// Every secret string this backend sends, as sent (tokens, passwords, their base64
    /// forms), scrubbed from errors and answers...
    secrets: Vec<String>,
    /// ...and the latest OAuth tokens it fetched.
    tokens: Mutex<VecDeque<String>>,
}

/// Fetched OAuth tokens remembered for scrubbing (older ones have expired upstream).
const REMEMBERED_TOKENS: usize = 4;

impl HttpBackend {
    /// Builds the client (rustls, system roots plus `tls.ca`, redirects off, no proxy) and
    /// resolves the credential. Errors name the key, never a secret.
    pub fn new(config: &ConnectionConfig, http: &HttpConfig) -> Result<HttpBackend, String> {
        let base = reqwest::Url::parse(&http.base_url).map_err(|e| format!("base_url: {e}"))?;
        let base_path = base.path().trim_end_matches('/').to_string();
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_millis(http.connect_timeout_ms.max(1)))
            // Credentials go only to the configured host: never through a proxy the
            // environment happens to name.
            .no_proxy()
            .pool_max_idle_per_host(config.limits.pool_size);
        if let Some(ca) = &http.ca {
            let pem = ca.resolve().map_err(|m| format!("tls.ca: {m}"))?;
            let certs = reqwest::Certificate::from_pem_bundle(pem.expose().as_bytes())
                .map_err(|e| format!("tls.ca is not a PEM certificate bundle: {e}"))?;
            if certs.is_empty() {
                return Err("tls.ca holds no PEM certificate".into());
            }
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let mut secrets = Vec::new();
        let sensitive = |key: &str, value: &str| -> Result<HeaderValue, String> {
            let mut v = HeaderValue::from_str(value).map_err(|_| {
                format!("{key}: the secret cannot be sent in a header (control characters?)")
            })?;
            v.set_sensitive(true);
            Ok(v)
        };
        let credential = match &http.auth {
            HttpAuth::None => Credential::None,
            HttpAuth::Bearer { token } => {
                let token = token.resolve().map_err(|m| format!("auth.token: {m}"))?;
                let value = sensitive("auth.token", &format!("Bearer {}", token.expose()))?;
                secrets.push(token.expose().to_string());
                Credential::Static(reqwest::header::AUTHORIZATION, value)
            }
            HttpAuth::Basic { username, password } => {
                let password = password
                    .resolve()
                    .map_err(|m| format!("auth.password: {m}"))?;
                let encoded = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.expose()));
                let value = sensitive("auth.password", &format!("Basic {encoded}"))?;
                secrets.push(password.expose().to_string());
                secrets.push(encoded);
                Credential::Static(reqwest::header::AUTHORIZATION, value)
            }
            HttpAuth::Header { name, value } => {
                let header = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|e| format!("auth.name: {e}"))?;
                let value = value.resolve().map_err(|m| format!("auth.value: {m}"))?;
                let v = sensitive("auth.value", value.expose())?;
                secrets.push(value.expose().to_string());
                Credential::Static(header, v)
            }
            HttpAuth::OAuth2ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scopes,
                audience,
                client_auth,
            } => {
                let token_url =
                    reqwest::Url::parse(token_url).map_err(|e| format!("auth.token_url: {e}"))?;
                let secret = client_secret
                    .resolve()
                    .map_err(|m| format!("auth.client_secret: {m}"))?;
                let o = oauth::OAuth::new(
                    token_url,
                    client_id.clone(),
                    secret,
                    scopes.clone(),
                    audience.clone(),
                    *client_auth,
                );
                secrets.extend(o.secrets());
                Credential::OAuth(Box::new(o))
            }
        };
        let mut fixed_headers = Vec::with_capacity(http.headers.len());
        let mut reserved = Vec::new();
        for (name, value) in &http.headers {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("headers.{name}: {e}"))?;
            let v = HeaderValue::from_str(value).map_err(|e| format!("headers.{name}: {e}"))?;
            reserved.push(n.as_str().to_string());
            fixed_headers.push((n, v));
        }
        match &credential {
            Credential::Static(n, _) => reserved.push(n.as_str().to_string()),
            Credential::OAuth(_) => reserved.push("authorization".into()),
            Credential::None => {}
        }
        // Shorter strings are not worth scrubbing (they would mangle ordinary text).
        secrets.retain(|s| s.len() >= MIN_SCRUBBED_BYTES);
        Ok(HttpBackend {
            name: config.name.clone(),
            client,
            base,
            base_path,
            fixed_headers,
            credential,
            reserved,
            max_redirects: http.max_redirects,
            slots: Arc::new(Semaphore::new(config.limits.pool_size)),
            pool_size: config.limits.pool_size,
            pool_wait: config.limits.pool_wait(),
            secrets,
            tokens: Mutex::new(VecDeque::new()),
        })
    }

    /// Startup check. With OAuth client credentials, a token is fetched (and cached): a
    /// token endpoint that refuses the credentials fails closed; one that cannot be
    /// reached is [`BackendError::Unavailable`] (tolerated at startup, checked again on
    /// first use). Other credentials are static: nothing to ask the API.
    pub async fn verify(&self) -> Result<(), BackendError> {
        let Credential::OAuth(o) = &self.credential else {
            return Ok(());
        };
        let fetched = tokio::time::timeout(VERIFY_TIMEOUT, o.bearer(&self.client)).await;
        match fetched {
            Ok(Ok(bearer)) => {
                self.remember(bearer.fresh_token);
                Ok(())
            }
            Ok(Err(e)) => Err(self.scrub_error(e)),
            Err(_) => Err(BackendError::Unavailable {
                detail: format!(
                    "connection `{}`: the token endpoint did not answer within {} s",
                    self.name,
                    VERIFY_TIMEOUT.as_secs()
                ),
                retry_after_secs: RETRY_CONNECT_SECS,
            }),
        }
    }

    /// Sends one call; see the module contract.
    pub async fn send(
        &self,
        call: HttpCall,
        cancel: CancellationToken,
    ) -> Result<HttpReply, BackendError> {
        let deadline = deadline_after(call.timeout);
        let result = match bounded(self.send_within(call), &cancel, deadline).await {
            Ok(r) => r,
            Err(e) => Err(e),
        };
        result.map_err(|e| self.scrub_error(e))
    }

    async fn send_within(&self, call: HttpCall) -> Result<HttpReply, BackendError> {
        let mut method = self.check_call(&call)?;
        let mut headers = self.agent_headers(&call.headers)?;
        let mut url = self.url_for(&call.path, &call.query)?;
        // Held until the answer is read: `pool_size` calls at once.
        let _permit = self.acquire_slot().await?;
        let mut path = call.path;
        let mut body = call.body;
        let mut redirects = 0u32;
        let mut refreshed = false;
        loop {
            let (response, cached_token) =
                self.exchange(&method, &url, &headers, body.clone()).await?;
            let status = response.status();
            if status == reqwest::StatusCode::UNAUTHORIZED
                && !refreshed
                && let (Credential::OAuth(o), Some(generation)) = (&self.credential, cached_token)
            {
                // The cached token may have been revoked or expired early: one fresh try.
                o.invalidate(generation).await;
                refreshed = true;
                continue;
            }
            if matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
                && let Some(location) = response.headers().get(LOCATION)
            {
                let refused = match self.under_base(&url, location) {
                    Some((next, next_path)) if redirects < self.max_redirects => {
                        // As browsers do: 303 (and 301/302 after POST) turn into a GET
                        // without a body; 307/308 repeat the request as it was.
                        let to_get = (status.as_u16() == 303 && method != reqwest::Method::HEAD)
                            || (matches!(status.as_u16(), 301 | 302)
                                && method == reqwest::Method::POST);
                        if to_get {
                            method = reqwest::Method::GET;
                            body = None;
                            headers.remove(CONTENT_TYPE);
                        }
                        url = next;
                        path = next_path;
                        redirects += 1;
                        continue;
                    }
                    Some(_) => format!(
                        "redirect not followed: at most {} redirects are followed on this connection",
                        self.max_redirects
                    ),
                    None => "redirect not followed: its Location leaves the connection's base_url"
                        .to_string(),
                };
                let mut reply = self.reply(response, &url, call.max_bytes).await?;
                reply.redirects = redirects;
                reply.redirect_refused = Some(refused);
                reply.final_path = path;
                return Ok(reply);
            }
            let mut reply = self.reply(response, &url, call.max_bytes).await?;
            reply.redirects = redirects;
            reply.final_path = path;
            return Ok(reply);
        }
    }

    /// The call as the inspector would have it; anything else is refused, never sent.
    fn check_call(&self, call: &HttpCall) -> Result<reqwest::Method, BackendError> {
        let method = inspect::normalize_method(&call.method).map_err(BackendError::Params)?;
        if method != call.method {
            return Err(BackendError::Params(format!(
                "method `{}` is not in its normalised form `{method}`",
                call.method.escape_debug()
            )));
        }
        let path = inspect::normalize_path(&call.path).map_err(BackendError::Params)?;
        if path != call.path {
            return Err(BackendError::Params(format!(
                "path is not in its normalised form `{path}`"
            )));
        }
        reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| BackendError::Params(format!("method `{method}`: {e}")))
    }

    fn agent_headers(&self, headers: &[(String, String)]) -> Result<HeaderMap, BackendError> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            inspect::check_header(name, value).map_err(BackendError::Params)?;
            let lower = name.to_ascii_lowercase();
            if self.reserved.contains(&lower) {
                return Err(BackendError::Params(format!(
                    "header `{name}` is set by the connection `{}`; it cannot be sent by the caller",
                    self.name
                )));
            }
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| BackendError::Params(format!("header `{name}`: {e}")))?;
            let v = HeaderValue::from_str(value)
                .map_err(|e| BackendError::Params(format!("header `{name}`: {e}")))?;
            map.append(n, v);
        }
        Ok(map)
    }

    async fn acquire_slot(&self) -> Result<OwnedSemaphorePermit, BackendError> {
        match tokio::time::timeout(self.pool_wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; treat it like exhaustion if it ever is.
            Ok(Err(_)) | Err(_) => Err(BackendError::Unavailable {
                detail: format!(
                    "all {} request slots of connection `{}` are busy (waited {} ms)",
                    self.pool_size,
                    self.name,
                    self.pool_wait.as_millis()
                ),
                retry_after_secs: RETRY_BUSY_SECS,
            }),
        }
    }

    /// `base + path`, then the query form-encoded. The URL parser must not change the path:
    /// what was judged is what is sent.
    fn url_for(
        &self,
        path: &str,
        query: &[(String, String)],
    ) -> Result<reqwest::Url, BackendError> {
        let mut url = self.base.clone();
        let full = format!("{}{path}", self.base_path);
        url.set_path(&full);
        if url.path() != full {
            return Err(BackendError::Params(format!(
                "path `{path}` would not be sent as written"
            )));
        }
        url.set_query(None);
        url.set_fragment(None);
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        Ok(url)
    }

    /// Where a redirect goes, if it stays under the base URL: the URL and its canonical path
    /// relative to the base. `None` for anything else (another origin, above the base path,
    /// a path that is not canonical, an unreadable Location).
    fn under_base(
        &self,
        current: &reqwest::Url,
        location: &HeaderValue,
    ) -> Option<(reqwest::Url, String)> {
        let location = location.to_str().ok()?;
        let mut next = current.join(location).ok()?;
        next.set_fragment(None);
        if next.scheme() != self.base.scheme()
            || next.host_str() != self.base.host_str()
            || next.port_or_known_default() != self.base.port_or_known_default()
            || !next.username().is_empty()
            || next.password().is_some()
        {
            return None;
        }
        let rest = next.path().strip_prefix(self.base_path.as_str())?;
        if !rest.starts_with('/') {
            return None;
        }
        let canonical = inspect::normalize_path(rest).ok()?;
        if canonical != rest {
            return None;
        }
        Some((next, canonical))
    }

    /// One request, credentials added last. Returns the response and, for a cached OAuth
    /// token, its generation.
    async fn exchange(
        &self,
        method: &reqwest::Method,
        url: &reqwest::Url,
        agent_headers: &HeaderMap,
        body: Option<Bytes>,
    ) -> Result<(reqwest::Response, Option<u64>), BackendError> {
        let mut headers = agent_headers.clone();
        for (n, v) in &self.fixed_headers {
            headers.insert(n.clone(), v.clone());
        }
        // Airlock reads (and masks) the body: never a compressed one.
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        let cached = match &self.credential {
            Credential::None => None,
            Credential::Static(n, v) => {
                headers.insert(n.clone(), v.clone());
                None
            }
            Credential::OAuth(o) => {
                let bearer = o.bearer(&self.client).await?;
                self.remember(bearer.fresh_token);
                headers.insert(reqwest::header::AUTHORIZATION, bearer.header);
                bearer.cached
            }
        };
        let mut request = self
            .client
            .request(method.clone(), url.clone())
            .headers(headers);
        if let Some(body) = body {
            request = request.body(body);
        }
        let host = self.host();
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(&e, &host))?;
        Ok((response, cached))
    }

    /// The answer: allow-listed headers, the body up to `max_bytes`, secrets scrubbed.
    async fn reply(
        &self,
        mut response: reqwest::Response,
        url: &reqwest::Url,
        max_bytes: u64,
    ) -> Result<HttpReply, BackendError> {
        let status = response.status().as_u16();
        let mut headers = Vec::new();
        for (name, value) in response.headers() {
            if !RESPONSE_HEADERS.contains(&name.as_str()) {
                continue;
            }
            if name == LOCATION && self.under_base(url, value).is_none() {
                continue;
            }
            if let Ok(v) = value.to_str() {
                headers.push((name.as_str().to_string(), v.to_string()));
            }
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let max = usize::try_from(max_bytes).unwrap_or(usize::MAX);
        let announced = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = BytesMut::with_capacity(announced.min(max).min(1024 * 1024));
        let mut truncated = false;
        let host = self.host();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = max - body.len();
                    if chunk.len() > room {
                        body.extend_from_slice(&chunk[..room]);
                        truncated = true;
                        break;
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(BackendError::Internal(format!(
                        "reading the answer from {host} failed: {}",
                        cause_chain(&e)
                    )));
                }
            }
        }
        // Dropping the response now closes a connection whose body was not read to the end.
        drop(response);
        let secrets = self.secret_list();
        let (body, mut redacted) = scrub_bytes(body.freeze(), &secrets, truncated);
        for (_, v) in &mut headers {
            let (clean, n) = scrub_str(v, &secrets);
            *v = clean;
            redacted += n;
        }
        Ok(HttpReply {
            status,
            headers,
            content_type,
            body,
            truncated,
            redirects: 0,
            redirect_refused: None,
            final_path: String::new(),
            secrets_redacted: redacted,
        })
    }

    fn host(&self) -> String {
        match (self.base.host_str(), self.base.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => self.name.clone(),
        }
    }

    fn remember(&self, token: Option<String>) {
        let Some(token) = token.filter(|t| t.len() >= MIN_SCRUBBED_BYTES) else {
            return;
        };
        let mut tokens = match self.tokens.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        tokens.push_back(token);
        while tokens.len() > REMEMBERED_TOKENS {
            tokens.pop_front();
        }
    }

    /// The static secrets and the remembered tokens, longest first (so a secret containing
    /// another is replaced whole).
    fn secret_list(&self) -> Vec<String> {
        let mut all = self.secrets.clone();
        match self.tokens.lock() {
            Ok(t) => all.extend(t.iter().cloned()),
            Err(poisoned) => all.extend(poisoned.into_inner().iter().cloned()),
        }
        all.sort_by_key(|s| std::cmp::Reverse(s.len()));
        all
    }

    fn scrub_error(&self, e: BackendError) -> BackendError {
        let secrets = self.secret_list();
        let clean = |s: String| scrub_str(&s, &secrets).0;
        match e {
            BackendError::Unavailable {
                detail,
                retry_after_secs,
            } => BackendError::Unavailable {
                detail: clean(detail),
                retry_after_secs,
            },
            BackendError::Params(m) => BackendError::Params(clean(m)),
            BackendError::NotFound(m) => BackendError::NotFound(clean(m)),
            BackendError::Internal(m) => BackendError::Internal(clean(m)),
            other => other,
        }
    }
}

/// A transport failure as the caller should read it: TLS problems named as such,
/// connection failures as [`BackendError::Unavailable`] (nothing reached the API), the rest
/// as failures after the request may have been sent. `what` names the peer; the URL (whose
/// query is the agent's) is left out.
fn transport_error(e: &reqwest::Error, what: &str) -> BackendError {
    let chain = cause_chain(e);
    if let Some(tls) = tls_cause(e) {
        return BackendError::Unavailable {
            detail: format!(
                "TLS with {what} failed: {tls} (the server's certificate must be valid for its \
                 host and chain to the system roots or to tls.ca)"
            ),
            retry_after_secs: RETRY_TLS_SECS,
        };
    }
    if e.is_connect() {
        return BackendError::Unavailable {
            detail: format!("cannot connect to {what}: {chain}"),
            retry_after_secs: RETRY_CONNECT_SECS,
        };
    }
    BackendError::Internal(format!("the request to {what} failed: {chain}"))
}

/// The rustls error somewhere in `e`'s causes, if any. The I/O layers nest it as the
/// payload of an `io::Error` (itself inside another), whose `source()` skips the payload,
/// so those are opened with `get_ref`.
fn tls_cause(e: &reqwest::Error) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = current {
        if let Some(t) = s.downcast_ref::<rustls::Error>() {
            return Some(t.to_string());
        }
        current = match s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => s.source(),
        };
    }
    None
}

/// The error and its causes, `: `-joined, repeats dropped, without the URL.
fn cause_chain(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let top = format!("{}", DisplayWithoutUrl(e));
    parts.push(top);
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p == &text || p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// reqwest's message for an error, without `for url (...)`.
struct DisplayWithoutUrl<'a>(&'a reqwest::Error);

impl std::fmt::Display for DisplayWithoutUrl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.0.to_string();
        match text.find(" for url (") {
            Some(i) => f.write_str(&text[..i]),
            None => f.write_str(&text),
        }
    }
}

/// `s` with every secret replaced, and how many replacements.
fn scrub_str(s: &str, secrets: &[String]) -> (String, u32) {
    let mut out = s.to_string();
    let mut n = 0;
    for secret in secrets {
        if !secret.is_empty() && out.contains(secret.as_str()) {
            n += u32::try_from(out.matches(secret.as_str()).count()).unwrap_or(u32::MAX);
            out = out.replace(secret.as_str(), REDACTED);
        }
    }
    (out, n)
}

/// `body` with every secret replaced; when it was cut, a tail that could be the start of
/// a secret is dropped too (the rest of it was never read, but its start would leak).
fn scrub_bytes(body: Bytes, secrets: &[String], truncated: bool) -> (Bytes, u32) {
    let trims = |data: &[u8]| {
        secrets
            .iter()
            .map(String::as_bytes)
            .filter_map(|s| (1..s.len()).rev().find(|&k| data.ends_with(&s[..k])))
            .max()
    };
    // The common case: nothing to replace, nothing to trim, no copy.
    let found = secrets
        .iter()
        .any(|s| !s.is_empty() && contains(&body, s.as_bytes()));
    if !found && (!truncated || trims(&body).is_none()) {
        return (body, 0);
    }
    let mut current: Option<Vec<u8>> = None;
    let mut n = 0u32;
    for secret in secrets
        .iter()
        .map(String::as_bytes)
        .filter(|s| !s.is_empty())
    {
        let data: &[u8] = current.as_deref().unwrap_or(&body);
        if !contains(data, secret) {
            continue;
        }
        let mut out = Vec::with_capacity(data.len());
        let mut i = 0;
        while i < data.len() {
            if data[i..].starts_with(secret) {
                out.extend_from_slice(REDACTED.as_bytes());
                i += secret.len();
                n = n.saturating_add(1);
            } else {
                out.push(data[i]);
                i += 1;
            }
        }
        current = Some(out);
    }
    let mut data = current.unwrap_or_else(|| body.to_vec());
    if truncated && let Some(k) = trims(&data) {
        data.truncate(data.len() - k);
    }
    (Bytes::from(data), n)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.len() <= haystack.len() && haystack.windows(needle.len()).any(|w| w == needle)
}
