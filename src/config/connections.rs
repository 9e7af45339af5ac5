//! Connections, typed per kind: a PostgreSQL connection has no `host_key`, an SSH one no
//! `tls`. The file's flat `[[connections]]` tables are read as [`RawConnection`] (unknown
//! keys refused), then [`typed`] checks each against its kind — naming the key that does
//! not belong or is missing — and builds the kind's own settings. Backends take the typed
//! form and never re-check it.

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
            TargetConfig::Ssh(_) | TargetConfig::Kubernetes(_) => false,
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
    };
    Ok(ConnectionConfig {
        name: raw.name,
        kind: raw.kind,
        description: raw.description,
        limits: raw.limits,
        target,
    })
}
