//! Connections, typed per kind: a PostgreSQL connection has no `host_key`, an SSH one no
//! `tls`. The file's flat `[[connections]]` tables are read as [`RawConnection`] (unknown
//! keys refused), then [`typed`] checks each against its kind — naming the key that does
//! not belong or is missing — and builds the kind's own settings. Backends take the typed
//! form and never re-check it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{
    ConfigError, ConnectionKind, LimitsConfig, SecretRef, TlsConfig, TlsMode, check_db_url,
    check_http_url, default_connect_ms, err,
};

/// A connection as the file writes it (every kind's keys); see [`typed`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConnection {
    pub(crate) name: String,
    pub(crate) kind: ConnectionKind,
    #[serde(default)]
    pub(crate) description: String,
    /// postgres:// or mysql:// URL without a password.
    pub(crate) url: Option<String>,
    pub(crate) password: Option<SecretRef>,
    /// SQLite file; relative paths are under the data directory.
    pub(crate) path: Option<PathBuf>,
    /// SSH: private key (OpenSSH PEM) by reference; or `password`.
    pub(crate) private_key: Option<SecretRef>,
    /// SSH: the pinned host key, as `SHA256:...` fingerprint or a known_hosts line
    /// (`[host]:port ssh-ed25519 AAAA...` or `ssh-ed25519 AAAA...`). Mandatory.
    pub(crate) host_key: Option<String>,
    /// Kubernetes: credentials from a kubeconfig file (its current context)...
    pub(crate) kubeconfig: Option<PathBuf>,
    /// ...or the in-cluster service account...
    #[serde(default)]
    pub(crate) in_cluster: bool,
    /// ...or `url` (the API server) plus this bearer token (and `tls.ca` for its CA).
    pub(crate) token: Option<SecretRef>,
    /// Kubernetes: globs of the namespaces agents may reach. `kube-system`, `kube-public` and
    /// `kube-node-lease` are refused unless named exactly here.
    #[serde(default)]
    pub(crate) namespaces: Vec<String>,
    /// Kubernetes: globs of the pod names agents may reach (default: any in an allowed
    /// namespace).
    #[serde(default)]
    pub(crate) pods: Vec<String>,
    /// Kubernetes: only pods matching this label selector (needs get/list on pods).
    pub(crate) label_selector: Option<String>,
    /// SSH: TCP connect plus handshake and authentication must finish within this.
    #[serde(default = "default_connect_ms")]
    pub(crate) connect_timeout_ms: u64,
    #[serde(default)]
    pub(crate) read_only: bool,
    /// Permit a superuser / FILE / SUPER account (refused by default).
    #[serde(default)]
    pub(crate) allow_privileged: bool,
    #[serde(default)]
    pub(crate) tls: TlsConfig,
    #[serde(default)]
    pub(crate) limits: LimitsConfig,
    /// HTTP: every request goes under this URL (https; see [`HttpConfig::base_url`]).
    pub(crate) base_url: Option<String>,
    /// HTTP: allow `http://` to a loopback host (tests).
    #[serde(default)]
    pub(crate) insecure_http: bool,
    /// HTTP: the credential Airlock adds to every request (none when absent).
    pub(crate) auth: Option<RawHttpAuth>,
    /// HTTP: fixed headers added to every request.
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, String>,
    /// HTTP: how many redirects under the base URL are followed (default 3, at most 10).
    pub(crate) max_redirects: Option<u32>,
}

/// An HTTP connection's `auth` table as written; see [`HttpAuth`].
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub(crate) enum RawHttpAuth {
    #[serde(rename = "bearer")]
    Bearer { token: SecretRef },
    #[serde(rename = "basic")]
    Basic {
        username: String,
        password: SecretRef,
    },
    #[serde(rename = "header")]
    Header { name: String, value: SecretRef },
    #[serde(rename = "oauth2_client_credentials")]
    OAuth2ClientCredentials {
        token_url: String,
        client_id: String,
        client_secret: SecretRef,
        #[serde(default)]
        scopes: Vec<String>,
        audience: Option<String>,
        #[serde(default)]
        client_auth: OAuthClientAuth,
    },
}

/// A connection: what every kind has, and its kind's own settings.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    pub name: String,
    pub kind: ConnectionKind,
    pub description: String,
    pub limits: LimitsConfig,
    pub target: TargetConfig,
}

impl ConnectionConfig {
    /// Writes are refused by the target itself (read-only transaction or handle).
    pub fn read_only(&self) -> bool {
        match &self.target {
            TargetConfig::Database(d) => d.read_only,
            TargetConfig::Sqlite(s) => s.read_only,
            TargetConfig::Ssh(_) | TargetConfig::Kubernetes(_) | TargetConfig::Http(_) => false,
        }
    }
}

/// Each kind's own settings.
#[derive(Debug, Clone)]
pub enum TargetConfig {
    /// PostgreSQL or MySQL/MariaDB (the connection's `kind` says which).
    Database(DatabaseConfig),
    Sqlite(SqliteConfig),
    Ssh(SshConfig),
    Kubernetes(KubernetesConfig),
    Http(HttpConfig),
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// postgres:// or mysql:// URL without a password.
    pub url: String,
    pub password: Option<SecretRef>,
    pub tls: TlsConfig,
    pub read_only: bool,
    /// Permit a superuser / FILE / SUPER account (refused by default).
    pub allow_privileged: bool,
}

#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// Relative paths are under the data directory.
    pub path: PathBuf,
    pub read_only: bool,
}

#[derive(Debug, Clone)]
pub struct SshConfig {
    /// `ssh://user@host:port`.
    pub url: String,
    /// A private key (OpenSSH PEM) by reference, a password by reference, or both.
    pub private_key: Option<SecretRef>,
    pub password: Option<SecretRef>,
    /// The pinned host key: a `SHA256:...` fingerprint or a known_hosts line.
    pub host_key: String,
    /// TCP connect plus handshake and authentication must finish within this.
    pub connect_timeout_ms: u64,
    /// Accept an account with uid 0 (refused by the connection check otherwise).
    pub allow_privileged: bool,
}

#[derive(Debug, Clone)]
pub struct KubernetesConfig {
    pub credentials: KubeCredentials,
    /// Globs of the namespaces agents may reach; system namespaces only when named exactly.
    pub namespaces: Vec<String>,
    /// Globs of the pod names agents may reach (empty: any in an allowed namespace).
    pub pods: Vec<String>,
    /// Only pods matching this label selector.
    pub label_selector: Option<String>,
    pub connect_timeout_ms: u64,
}

/// Where a Kubernetes connection's credentials come from: exactly one source.
#[derive(Debug, Clone)]
pub enum KubeCredentials {
    /// A kubeconfig file (its current context).
    Kubeconfig(PathBuf),
    /// The pod's service account.
    InCluster,
    /// An API server URL, a bearer token and optionally the CA that signs its certificate.
    Token {
        url: String,
        token: SecretRef,
        tls: TlsConfig,
    },
}

/// An HTTP API connection. Every check is done here: the backend trusts these values.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// `https://host[:port][/path]`, as `reqwest::Url` serialises it: no user info, query or
    /// fragment; the path canonical (`inspect::http::normalize_path`). `http://` only with
    /// `insecure_http` and a loopback host.
    pub base_url: String,
    /// Extra PEM CA bundle trusted besides the system's roots (`tls.ca`). Certificate
    /// verification is never disabled.
    pub ca: Option<SecretRef>,
    pub auth: HttpAuth,
    /// Fixed headers sent with every request, each checked like an agent's header
    /// (`inspect::http::check_header`), names unique regardless of case.
    pub headers: Vec<(String, String)>,
    /// Redirects followed while the target stays under `base_url` (0..=10).
    pub max_redirects: u32,
    /// TCP connect plus TLS handshake must finish within this.
    pub connect_timeout_ms: u64,
}

/// The credential an HTTP connection adds to every request. Secrets stay references here;
/// the backend resolves them once when it is built.
#[derive(Debug, Clone)]
pub enum HttpAuth {
    /// No credential (an API on a trusted network, or one that authenticates by mTLS
    /// elsewhere).
    None,
    /// `Authorization: Bearer <token>`.
    Bearer { token: SecretRef },
    /// `Authorization: Basic base64(username:password)`; the username has no `:`.
    Basic {
        username: String,
        password: SecretRef,
    },
    /// `<name>: <value>` (`X-Api-Key`, ...); the name is checked by
    /// `inspect::http::check_credential_header_name`.
    Header { name: String, value: SecretRef },
    /// OAuth 2.0 client credentials (RFC 6749 4.4): a token from `token_url`, cached until
    /// shortly before it expires, sent as `Authorization: Bearer`.
    OAuth2ClientCredentials {
        /// https (http only with `insecure_http` and a loopback host); no user info or fragment.
        token_url: String,
        client_id: String,
        client_secret: SecretRef,
        /// Sent space-separated as `scope`; each an RFC 6749 scope token.
        scopes: Vec<String>,
        /// Sent as `audience` when set (Auth0, Okta and others want it).
        audience: Option<String>,
        client_auth: OAuthClientAuth,
    },
}

/// How the client authenticates to the token endpoint (RFC 6749 2.3.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OAuthClientAuth {
    /// `client_secret_basic`: HTTP Basic with the form-encoded id and secret (the default
    /// the RFC requires servers to support).
    #[default]
    Basic,
    /// `client_secret_post`: `client_id` and `client_secret` in the form body.
    Post,
}

/// Checks `raw` (the `i`-th connection) against its kind and builds the typed form. Every
/// error names the key (`connections[1].host_key`).
pub(crate) fn typed(raw: RawConnection, i: usize) -> Result<ConnectionConfig, ConfigError> {
    let at = |k: &str| format!("connections[{i}].{k}");
    let resolves = |key: &str, secret: &Option<SecretRef>| -> Result<(), ConfigError> {
        match secret {
            Some(s) => s.resolve().map(|_| ()).map_err(|m| err(at(key), m)),
            None => Ok(()),
        }
    };
    resolves("password", &raw.password)?;
    if let Some(ca) = &raw.tls.ca {
        ca.resolve().map_err(|m| err(at("tls.ca"), m))?;
    } else if raw.tls.mode == TlsMode::VerifyFull {
        return Err(err(at("tls.ca"), "verify-full needs a CA reference"));
    }
    let tls_set = raw.tls.mode != TlsMode::Disable || raw.tls.ca.is_some();
    // Which kind-specific keys this connection set, and which its kind takes.
    let set = [
        ("path", raw.path.is_some()),
        ("password", raw.password.is_some()),
        ("tls", tls_set),
        ("read_only", raw.read_only),
        ("allow_privileged", raw.allow_privileged),
        ("private_key", raw.private_key.is_some()),
        ("host_key", raw.host_key.is_some()),
        ("kubeconfig", raw.kubeconfig.is_some()),
        ("in_cluster", raw.in_cluster),
        ("token", raw.token.is_some()),
        ("namespaces", !raw.namespaces.is_empty()),
        ("pods", !raw.pods.is_empty()),
        ("label_selector", raw.label_selector.is_some()),
        ("base_url", raw.base_url.is_some()),
        ("insecure_http", raw.insecure_http),
        ("auth", raw.auth.is_some()),
        ("headers", !raw.headers.is_empty()),
        ("max_redirects", raw.max_redirects.is_some()),
    ];
    let takes: &[&str] = match raw.kind {
        ConnectionKind::Postgres | ConnectionKind::Mysql => {
            &["password", "tls", "read_only", "allow_privileged"]
        }
        ConnectionKind::Sqlite => &["path", "read_only"],
        ConnectionKind::Ssh => &["password", "private_key", "host_key", "allow_privileged"],
        ConnectionKind::Kubernetes => &[
            "tls",
            "kubeconfig",
            "in_cluster",
            "token",
            "namespaces",
            "pods",
            "label_selector",
        ],
        ConnectionKind::Http => &[
            "tls",
            "base_url",
            "insecure_http",
            "auth",
            "headers",
            "max_redirects",
        ],
    };
    if let Some((key, _)) = set.iter().find(|(k, on)| *on && !takes.contains(k)) {
        return Err(err(
            at(key),
            format!("does not apply to {} connections", raw.kind.as_str()),
        ));
    }
    let target = match raw.kind {
        ConnectionKind::Postgres | ConnectionKind::Mysql => {
            let url = raw
                .url
                .clone()
                .ok_or_else(|| err(at("url"), "required for this kind"))?;
            let schemes: &[&str] = if raw.kind == ConnectionKind::Postgres {
                &["postgres", "postgresql"]
            } else {
                &["mysql", "mariadb"]
            };
            check_db_url(&url, schemes).map_err(|m| err(at("url"), m))?;
            TargetConfig::Database(DatabaseConfig {
                url,
                password: raw.password,
                tls: raw.tls,
                read_only: raw.read_only,
                allow_privileged: raw.allow_privileged,
            })
        }
        ConnectionKind::Sqlite => {
            let path = raw
                .path
                .clone()
                .ok_or_else(|| err(at("path"), "required for sqlite connections"))?;
            if raw.url.is_some() {
                return Err(err(at("url"), "sqlite connections take `path`, not a URL"));
            }
            TargetConfig::Sqlite(SqliteConfig {
                path,
                read_only: raw.read_only,
            })
        }
        ConnectionKind::Ssh => {
            let url = raw
                .url
                .clone()
                .ok_or_else(|| err(at("url"), "required: ssh://user@host:port"))?;
            check_db_url(&url, &["ssh"]).map_err(|m| err(at("url"), m))?;
            if reqwest::Url::parse(&url)
                .map(|u| u.username().is_empty())
                .unwrap_or(true)
            {
                return Err(err(at("url"), "name the remote user: ssh://user@host:port"));
            }
            let host_key = match raw.host_key.as_deref().map(str::trim) {
                Some(k) if !k.is_empty() => k.to_string(),
                _ => {
                    return Err(err(
                        at("host_key"),
                        "pin the host key (SHA256:... fingerprint or a known_hosts line); unknown hosts are refused",
                    ));
                }
            };
            if raw.private_key.is_none() && raw.password.is_none() {
                return Err(err(
                    at("private_key"),
                    "give a private_key or a password reference",
                ));
            }
            resolves("private_key", &raw.private_key)?;
            TargetConfig::Ssh(SshConfig {
                url,
                private_key: raw.private_key,
                password: raw.password,
                host_key,
                connect_timeout_ms: raw.connect_timeout_ms,
                allow_privileged: raw.allow_privileged,
            })
        }
        ConnectionKind::Kubernetes => {
            let sources = usize::from(raw.kubeconfig.is_some())
                + usize::from(raw.in_cluster)
                + usize::from(raw.url.is_some());
            if sources != 1 {
                return Err(err(
                    at("url"),
                    "give exactly one of kubeconfig, in_cluster = true, or url (+ token)",
                ));
            }
            resolves("token", &raw.token)?;
            let credentials = match (raw.kubeconfig.clone(), raw.url.clone(), raw.token.clone()) {
                (Some(path), _, None) => KubeCredentials::Kubeconfig(path),
                (None, Some(url), Some(token)) => {
                    check_http_url(&url, true).map_err(|m| err(at("url"), m))?;
                    KubeCredentials::Token {
                        url,
                        token,
                        tls: raw.tls.clone(),
                    }
                }
                (None, Some(_), None) => {
                    return Err(err(at("token"), "a url needs a token reference"));
                }
                (None, None, None) => KubeCredentials::InCluster,
                (_, _, Some(_)) => {
                    return Err(err(
                        at("token"),
                        "a token goes with url, not with kubeconfig or in_cluster",
                    ));
                }
            };
            if raw.namespaces.is_empty() {
                return Err(err(
                    at("namespaces"),
                    "name the namespaces agents may reach (globs)",
                ));
            }
            if raw
                .namespaces
                .iter()
                .chain(&raw.pods)
                .any(|p| p.trim().is_empty())
            {
                return Err(err(
                    at("namespaces"),
                    "namespaces and pods must not contain empty patterns",
                ));
            }
            let label_selector = match raw.label_selector.as_deref().map(str::trim) {
                Some("") => {
                    return Err(err(
                        at("label_selector"),
                        "empty; remove it or give a selector",
                    ));
                }
                other => other.map(str::to_string),
            };
            if tls_set && !matches!(credentials, KubeCredentials::Token { .. }) {
                return Err(err(
                    at("tls"),
                    "only with url: a kubeconfig or the in-cluster service account brings its own",
                ));
            }
            TargetConfig::Kubernetes(KubernetesConfig {
                credentials,
                namespaces: raw.namespaces,
                pods: raw.pods,
                label_selector,
                connect_timeout_ms: raw.connect_timeout_ms,
            })
        }
        ConnectionKind::Http => TargetConfig::Http(typed_http(&raw, &at)?),
    };
    Ok(ConnectionConfig {
        name: raw.name,
        kind: raw.kind,
        description: raw.description,
        limits: raw.limits,
        target,
    })
}

/// The `http` kind's settings (`typed` has already refused keys of other kinds).
fn typed_http(raw: &RawConnection, at: &dyn Fn(&str) -> String) -> Result<HttpConfig, ConfigError> {
    use crate::inspect::http::{check_credential_header_name, check_header};
    if raw.url.is_some() {
        return Err(err(at("url"), "http connections take `base_url`"));
    }
    let base_url = raw
        .base_url
        .as_deref()
        .ok_or_else(|| err(at("base_url"), "required: https://host[:port][/path]"))?;
    let base =
        check_http_target_url(base_url, raw.insecure_http).map_err(|m| err(at("base_url"), m))?;
    if base.query().is_some() {
        return Err(err(
            at("base_url"),
            "no query in base_url: agents give query parameters per request",
        ));
    }
    let path = base.path();
    if path != "/" {
        let canonical = crate::inspect::http::normalize_path(path)
            .map_err(|m| err(at("base_url"), format!("its path: {m}")))?;
        if canonical != path {
            return Err(err(
                at("base_url"),
                format!("write the path in its canonical form: `{canonical}`"),
            ));
        }
    }
    // The generic checks resolved `tls.ca`; `tls.mode` has no meaning here (https is always
    // verified), and `verify-full` without a CA was refused there.
    let resolves = |key: &str, secret: &SecretRef| -> Result<(), ConfigError> {
        secret.resolve().map(|_| ()).map_err(|m| err(at(key), m))
    };
    let auth = match raw.auth.clone() {
        None => HttpAuth::None,
        Some(RawHttpAuth::Bearer { token }) => {
            resolves("auth.token", &token)?;
            HttpAuth::Bearer { token }
        }
        Some(RawHttpAuth::Basic { username, password }) => {
            if username.is_empty()
                || username.contains(':')
                || username.chars().any(char::is_control)
            {
                return Err(err(
                    at("auth.username"),
                    "a non-empty user name without `:` or control characters",
                ));
            }
            resolves("auth.password", &password)?;
            HttpAuth::Basic { username, password }
        }
        Some(RawHttpAuth::Header { name, value }) => {
            check_credential_header_name(&name).map_err(|m| err(at("auth.name"), m))?;
            resolves("auth.value", &value)?;
            HttpAuth::Header { name, value }
        }
        Some(RawHttpAuth::OAuth2ClientCredentials {
            token_url,
            client_id,
            client_secret,
            scopes,
            audience,
            client_auth,
        }) => {
            check_http_target_url(&token_url, raw.insecure_http)
                .map_err(|m| err(at("auth.token_url"), m))?;
            if client_id.is_empty() || client_id.chars().any(char::is_control) {
                return Err(err(
                    at("auth.client_id"),
                    "a non-empty client id without control characters",
                ));
            }
            // RFC 6749 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
            let scope_ok = |s: &String| {
                !s.is_empty()
                    && s.bytes().all(|b| {
                        b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b)
                    })
            };
            if let Some(bad) = scopes.iter().find(|s| !scope_ok(s)) {
                return Err(err(
                    at("auth.scopes"),
                    format!(
                        "`{}` is not a scope token (no spaces, quotes or backslashes)",
                        bad.escape_debug()
                    ),
                ));
            }
            if audience
                .as_deref()
                .is_some_and(|a| a.trim().is_empty() || a.chars().any(char::is_control))
            {
                return Err(err(
                    at("auth.audience"),
                    "empty; remove it or give the audience",
                ));
            }
            resolves("auth.client_secret", &client_secret)?;
            HttpAuth::OAuth2ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scopes,
                audience,
                client_auth,
            }
        }
    };
    let credential_header = match &auth {
        HttpAuth::Header { name, .. } => Some(name.to_ascii_lowercase()),
        _ => None,
    };
    let mut seen = std::collections::HashSet::new();
    let mut headers = Vec::with_capacity(raw.headers.len());
    for (name, value) in &raw.headers {
        let key = at(&format!("headers.{name}"));
        check_header(name, value).map_err(|m| err(key.clone(), m))?;
        let lower = name.to_ascii_lowercase();
        if credential_header.as_deref() == Some(lower.as_str()) {
            return Err(err(key, "the auth header has this name"));
        }
        if !seen.insert(lower) {
            return Err(err(key, "given twice (header names ignore case)"));
        }
        headers.push((name.clone(), value.clone()));
    }
    let max_redirects = raw.max_redirects.unwrap_or(3);
    if max_redirects > 10 {
        return Err(err(at("max_redirects"), "at most 10"));
    }
    if raw.connect_timeout_ms == 0 {
        return Err(err(at("connect_timeout_ms"), "must be at least 1"));
    }
    Ok(HttpConfig {
        base_url: base.to_string(),
        ca: raw.tls.ca.clone(),
        auth,
        headers,
        max_redirects,
        connect_timeout_ms: raw.connect_timeout_ms,
    })
}

/// An http(s) URL Airlock sends credentials to: https, or http only when `insecure_http` is
/// set and the host is loopback (a test server); a host; no user info (credentials go in
/// `auth`), no fragment.
fn check_http_target_url(url: &str, insecure_http: bool) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    match parsed.scheme() {
        "https" => {}
        "http" if insecure_http && is_loopback(&parsed) => {}
        "http" if insecure_http => {
            return Err(
                "plain http is allowed only to a loopback host (127.0.0.1, ::1, localhost)".into(),
            );
        }
        "http" => {
            return Err("plain http; use https (insecure_http = true allows http to a loopback host, for tests)".into());
        }
        other => return Err(format!("scheme must be https, got `{other}`")),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("no user info in the URL; credentials go in `auth`".into());
    }
    if parsed.fragment().is_some() {
        return Err("no fragment (`#...`) in the URL".into());
    }
    Ok(parsed)
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn parse(table: &str) -> Result<ConnectionConfig, ConfigError> {
        let text = format!("[[connections]]\nname = 'api'\n{table}\n");
        Config::parse(&text, "t").map(|mut c| c.connections.remove(0))
    }

    fn http(table: &str) -> HttpConfig {
        match parse(&format!("kind = 'http'\n{table}")).unwrap().target {
            TargetConfig::Http(h) => h,
            other => panic!("{other:?}"),
        }
    }

    /// The key an `http` connection's error names.
    fn refused(table: &str) -> String {
        parse(&format!("kind = 'http'\n{table}")).unwrap_err().path
    }

    #[test]
    fn an_http_connection_is_typed() {
        let h = http("base_url = 'https://billing.internal/api/v2'");
        assert_eq!(h.base_url, "https://billing.internal/api/v2");
        assert_eq!(h.max_redirects, 3);
        assert!(matches!(h.auth, HttpAuth::None));
        assert!(h.headers.is_empty());
        let h = http(
            "base_url = 'https://billing.internal:8443/'\nmax_redirects = 0\nheaders = { 'X-Tenant' = 'acme', 'Accept' = 'application/json' }\nauth = { type = 'basic', username = 'svc', password = 'env:PATH' }",
        );
        assert_eq!(h.base_url, "https://billing.internal:8443/");
        assert_eq!(h.max_redirects, 0);
        assert_eq!(h.headers.len(), 2);
        assert!(matches!(h.auth, HttpAuth::Basic { ref username, .. } if username == "svc"));
        let h = http(
            "base_url = 'https://b/api'\nauth = { type = 'oauth2_client_credentials', token_url = 'https://idp/token', client_id = 'airlock', client_secret = 'env:PATH', scopes = ['billing:read'], audience = 'billing' }",
        );
        assert!(matches!(
            h.auth,
            HttpAuth::OAuth2ClientCredentials { client_auth: OAuthClientAuth::Basic, ref scopes, .. } if scopes == &["billing:read"]
        ));
        let h = http(
            "base_url = 'https://b/api'\nauth = { type = 'header', name = 'X-Api-Key', value = 'env:PATH' }",
        );
        assert!(matches!(h.auth, HttpAuth::Header { ref name, .. } if name == "X-Api-Key"));
        for loopback in [
            "http://127.0.0.1:8080/api",
            "http://localhost/",
            "http://[::1]:9/x",
        ] {
            http(&format!("base_url = '{loopback}'\ninsecure_http = true"));
        }
    }

    #[test]
    fn bad_base_urls_are_refused() {
        for bad in [
            "http://billing.internal/api",
            "ftp://billing.internal/",
            "https://user@billing.internal/",
            "https://user:pw@billing.internal/",
            "https://billing.internal/api#x",
            "https://billing.internal/api?tenant=a",
            "https://billing.internal/api?",
            "https://billing.internal/%7Euser",
            "https://billing.internal/a;b/",
            "https://billing.internal/a%2Fb",
            "not a url",
            "/relative",
        ] {
            assert_eq!(
                refused(&format!("base_url = '{bad}'")),
                "connections[0].base_url",
                "{bad}"
            );
        }
        // insecure_http is for loopback only.
        assert_eq!(
            refused("base_url = 'http://10.0.0.5/api'\ninsecure_http = true"),
            "connections[0].base_url"
        );
        assert_eq!(refused(""), "connections[0].base_url");
        assert_eq!(
            refused("url = 'https://b/'\nbase_url = 'https://b/'"),
            "connections[0].url"
        );
    }

    #[test]
    fn keys_of_other_kinds_are_refused_by_name() {
        let base = "base_url = 'https://b/api'";
        for (extra, key) in [
            ("password = 'env:PATH'", "password"),
            ("token = 'env:PATH'", "token"),
            ("read_only = true", "read_only"),
            ("host_key = 'SHA256:x'", "host_key"),
            ("namespaces = ['x']", "namespaces"),
            ("allow_privileged = true", "allow_privileged"),
        ] {
            assert_eq!(
                refused(&format!("{base}\n{extra}")),
                format!("connections[0].{key}"),
                "{extra}"
            );
        }
        // And the http keys on other kinds.
        for (extra, key) in [
            ("base_url = 'https://b/'", "base_url"),
            ("insecure_http = true", "insecure_http"),
            ("auth = { type = 'bearer', token = 'env:PATH' }", "auth"),
            ("headers = { 'X-A' = 'b' }", "headers"),
            ("max_redirects = 1", "max_redirects"),
        ] {
            let e = parse(&format!(
                "kind = 'postgres'\nurl = 'postgres://u@h/db'\n{extra}"
            ))
            .unwrap_err();
            assert_eq!(e.path, format!("connections[0].{key}"), "{extra}");
        }
    }

    #[test]
    fn bad_auth_headers_and_redirects_are_refused_by_key() {
        let base = "base_url = 'https://b/api'";
        for (extra, key) in [
            (
                "auth = { type = 'bearer', token = 'env:AIRLOCK_TEST_SURELY_UNSET' }",
                "auth.token",
            ),
            (
                "auth = { type = 'basic', username = 'a:b', password = 'env:PATH' }",
                "auth.username",
            ),
            (
                "auth = { type = 'basic', username = '', password = 'env:PATH' }",
                "auth.username",
            ),
            (
                "auth = { type = 'basic', username = 'svc', password = 'env:AIRLOCK_TEST_SURELY_UNSET' }",
                "auth.password",
            ),
            (
                "auth = { type = 'header', name = 'Host', value = 'env:PATH' }",
                "auth.name",
            ),
            (
                "auth = { type = 'header', name = 'X Key', value = 'env:PATH' }",
                "auth.name",
            ),
            (
                "auth = { type = 'header', name = 'X-Api-Key', value = 'env:AIRLOCK_TEST_SURELY_UNSET' }",
                "auth.value",
            ),
            (
                "auth = { type = 'oauth2_client_credentials', token_url = 'http://idp/token', client_id = 'a', client_secret = 'env:PATH' }",
                "auth.token_url",
            ),
            (
                "auth = { type = 'oauth2_client_credentials', token_url = 'https://u:p@idp/token', client_id = 'a', client_secret = 'env:PATH' }",
                "auth.token_url",
            ),
            (
                "auth = { type = 'oauth2_client_credentials', token_url = 'https://idp/token', client_id = '', client_secret = 'env:PATH' }",
                "auth.client_id",
            ),
            (
                "auth = { type = 'oauth2_client_credentials', token_url = 'https://idp/token', client_id = 'a', client_secret = 'env:PATH', scopes = ['a b'] }",
                "auth.scopes",
            ),
            (
                "auth = { type = 'oauth2_client_credentials', token_url = 'https://idp/token', client_id = 'a', client_secret = 'env:PATH', audience = ' ' }",
                "auth.audience",
            ),
            (
                "auth = { type = 'oauth2_client_credentials', token_url = 'https://idp/token', client_id = 'a', client_secret = 'env:AIRLOCK_TEST_SURELY_UNSET' }",
                "auth.client_secret",
            ),
            (
                "headers = { 'Authorization' = 'x' }",
                "headers.Authorization",
            ),
            ("headers = { 'Cookie' = 'x' }", "headers.Cookie"),
            ("headers = { 'Host' = 'x' }", "headers.Host"),
            ("headers = { 'Connection' = 'close' }", "headers.Connection"),
            (
                "headers = { 'Content-Length' = '1' }",
                "headers.Content-Length",
            ),
            ("headers = { 'X-A' = \"a\\r\\nb\" }", "headers.X-A"),
            ("headers = { 'X-A' = 'a', 'x-a' = 'b' }", "headers.x-a"),
            (
                "headers = { 'X-Api-Key' = 'a' }\nauth = { type = 'header', name = 'x-api-key', value = 'env:PATH' }",
                "headers.X-Api-Key",
            ),
            ("max_redirects = 11", "max_redirects"),
            ("tls = { ca = 'file:/surely/not/here.pem' }", "tls.ca"),
        ] {
            assert_eq!(
                refused(&format!("{base}\n{extra}")),
                format!("connections[0].{key}"),
                "{extra}"
            );
        }
        // Unknown auth types and keys are refused by the parser, with the line.
        for extra in [
            "auth = { type = 'digest', token = 'env:PATH' }",
            "auth = { type = 'bearer', token = 'env:PATH', extra = 1 }",
            "auth = { token = 'env:PATH' }",
            "auth = { type = 'bearer', token = 'literal-secret' }",
            "auth = { type = 'oauth2_client_credentials', token_url = 'https://idp/t', client_id = 'a', client_secret = 'env:PATH', client_auth = 'jwt' }",
        ] {
            let e = parse(&format!("kind = 'http'\n{base}\n{extra}")).unwrap_err();
            assert!(e.path.contains("line"), "{extra}: {e}");
            assert!(!e.to_string().contains("literal-secret"), "{e}");
        }
    }
}
