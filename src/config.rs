//! Typed configuration: one TOML file, validated as a whole before anything listens.
//!
//! Invariants:
//! - Unknown keys are refused (`deny_unknown_fields` everywhere), so a typo never silently
//!   turns a guard off.
//! - Secrets are never literal values in this file: they are references (`env:NAME`,
//!   `file:PATH`) resolved once at startup into [`SecretValue`], whose `Debug` never prints
//!   the value. URLs must not carry passwords; a password goes in its own secret reference.
//! - Every validation error names the key path (`connections[1].url`).

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::policy::RuleConfig;

mod connections;
use connections::RawConnection;
pub use connections::{
    ConnectionConfig, DatabaseConfig, HttpAuth, HttpConfig, KubeCredentials, KubernetesConfig,
    OAuthClientAuth, SqliteConfig, SshConfig, TargetConfig,
};

/// The configuration used when no `--config` is given: the zero-setup quick start.
pub const EMBEDDED_DEFAULT: &str = include_str!("default_config.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    #[serde(default)]
    pub store: StoreConfig,
    /// `[[connections]]` as written; checked and typed into `connections` by `parse`.
    #[serde(default, rename = "connections")]
    raw_connections: Vec<RawConnection>,
    /// The connections, typed per kind.
    #[serde(skip)]
    pub connections: Vec<ConnectionConfig>,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub reviews: ReviewsConfig,
    /// `[[masking]]`: what agents never see in clear.
    #[serde(default)]
    pub masking: Vec<crate::mask::MaskingConfig>,
    #[serde(default)]
    pub shells: ShellsConfig,
    #[serde(default)]
    pub jobs: JobsConfig,
    /// The approvers' web console at `/console`.
    #[serde(default)]
    pub console: ConsoleConfig,
    /// Digests of the configuration as written, for binding approvals.
    #[serde(skip)]
    versions: Versions,
}

/// What approvals are bound to: each connection's table and the `[[rules]]` as written in
/// the file, in canonical JSON (keys sorted), digested. Key names are the file's, so they
/// change only when the configuration does.
#[derive(Debug, Default)]
struct Versions {
    connections: std::collections::HashMap<String, String>,
    policy: String,
}

impl Versions {
    fn of(table: &toml::Table) -> Versions {
        let version = |tag: &str, value: Option<&toml::Value>| {
            let json = value
                .and_then(|v| serde_json::to_value(v).ok())
                .unwrap_or(serde_json::Value::Null);
            crate::digest::digest(&[
                tag.as_bytes(),
                crate::digest::canonical_json(&json).as_bytes(),
            ])
        };
        let connections = table
            .get("connections")
            .and_then(|c| c.as_array())
            .map(|list| {
                list.iter()
                    .filter_map(|c| {
                        let name = c.get("name")?.as_str()?.to_string();
                        Some((name, version("airlock-connection-v1", Some(c))))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Versions {
            connections,
            policy: version("airlock-policy-v1", table.get("rules")),
        }
    }
}

/// The approvers' web console (`console`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve the console at `/console`.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The console's external origin (`https://airlock.example.com`): the base of the OIDC
    /// redirect URI (`{public_url}/console/callback`, to register at the identity provider)
    /// and whether cookies are `Secure`. Without it, OIDC sign-in works only on a loopback
    /// origin, taken from the request.
    pub public_url: Option<String>,
    /// A console session ends after this long without a request.
    #[serde(default = "default_console_idle_secs")]
    pub idle_timeout_secs: u64,
    /// ...and this long after sign-in, whatever happens.
    #[serde(default = "default_console_max_secs")]
    pub max_session_secs: u64,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: true,
            public_url: None,
            idle_timeout_secs: default_console_idle_secs(),
            max_session_secs: default_console_max_secs(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_console_idle_secs() -> u64 {
    30 * 60
}
fn default_console_max_secs() -> u64 {
    12 * 3600
}

/// How people sign in to the console with an issuer: OpenID Connect authorization code
/// with PKCE (S256). The ID token's audience is `client_id`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConsoleConfig {
    pub client_id: String,
    /// For identity providers that require a confidential client (sent as HTTP Basic).
    pub client_secret: Option<SecretRef>,
    /// Must include `openid`; add what makes the provider put groups in the ID token.
    #[serde(default = "default_console_scopes")]
    pub scopes: Vec<String>,
}

fn default_console_scopes() -> Vec<String> {
    vec!["openid".into()]
}

/// Long-running requests (`gateway::jobs`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    /// A query or command whose JSON answer is not complete after this long is answered
    /// `202` and goes on as a job. Under 60 s, the request timeout of common agent
    /// frameworks, so an agent gets an id rather than an ambiguous timeout.
    #[serde(default = "default_sync_budget_ms")]
    pub sync_budget_ms: u64,
    /// How long a finished job's result is kept for its requester.
    #[serde(default = "default_job_ttl_secs")]
    pub result_ttl_secs: u64,
    /// The largest result (serialized rows or output) kept; a larger one is kept as a
    /// failure saying so.
    #[serde(default = "default_job_max_bytes")]
    pub max_result_bytes: usize,
    /// What all of one principal's kept results may hold at once; past it a finished job
    /// keeps a failure saying so instead of its result (a principal cannot fill the store).
    #[serde(default = "default_job_quota_bytes")]
    pub max_kept_bytes_per_principal: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            sync_budget_ms: default_sync_budget_ms(),
            result_ttl_secs: default_job_ttl_secs(),
            max_result_bytes: default_job_max_bytes(),
            max_kept_bytes_per_principal: default_job_quota_bytes(),
        }
    }
}

fn default_sync_budget_ms() -> u64 {
    50_000
}
fn default_job_ttl_secs() -> u64 {
    3600
}
fn default_job_max_bytes() -> usize {
    8 * 1024 * 1024
}
fn default_job_quota_bytes() -> u64 {
    32 * 1024 * 1024
}

/// Interactive shells over WebSocket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShellsConfig {
    /// A shell with no input and no output for this long is closed.
    #[serde(default = "default_shell_idle_ms")]
    pub idle_timeout_ms: u64,
    /// No shell lives longer than this.
    #[serde(default = "default_shell_max_ms")]
    pub max_duration_ms: u64,
    /// Record humans' keystrokes too (off: input can hold passwords). Agents' keystrokes are
    /// always recorded, masked.
    #[serde(default)]
    pub record_input: bool,
    /// How long a browser shell ticket stays valid (single use).
    #[serde(default = "default_ticket_ms")]
    pub ticket_ttl_ms: u64,
}

impl Default for ShellsConfig {
    fn default() -> Self {
        ShellsConfig {
            idle_timeout_ms: default_shell_idle_ms(),
            max_duration_ms: default_shell_max_ms(),
            record_input: false,
            ticket_ttl_ms: default_ticket_ms(),
        }
    }
}

fn default_shell_idle_ms() -> u64 {
    15 * 60 * 1000
}
fn default_shell_max_ms() -> u64 {
    8 * 3600 * 1000
}
fn default_ticket_ms() -> u64 {
    30_000
}

/// Where review notifications go.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewsConfig {
    /// Webhook receiving new reviews and decisions (Slack-compatible `text`).
    pub webhook_url: Option<String>,
    /// HMAC key for the `X-Airlock-Signature` header; required with a webhook.
    pub webhook_secret: Option<SecretRef>,
    /// Allow an http:// webhook (only sensible on loopback, e.g. in tests).
    #[serde(default)]
    pub allow_insecure_http: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// How long in-flight requests may drain after SIGTERM before they are cancelled.
    #[serde(default = "default_drain_ms")]
    pub drain_timeout_ms: u64,
    /// Largest accepted request body.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// A client that does not accept response bytes for this long is disconnected.
    #[serde(default = "default_write_idle_ms")]
    pub write_idle_timeout_ms: u64,
    /// A connection must send a request's complete headers within this long — from when it
    /// opens, and again while it sits idle between requests (keep-alive). Then it is closed.
    #[serde(default = "default_header_read_ms")]
    pub header_read_timeout_ms: u64,
    /// A request body must arrive completely within this long (then 408).
    #[serde(default = "default_body_read_ms")]
    pub body_read_timeout_ms: u64,
    /// Open client connections; past it a new connection is answered 503 and closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Concurrent requests per principal; beyond it the answer is 429.
    #[serde(default = "default_per_principal")]
    pub max_concurrent_per_principal: usize,
    /// Key of the `hash` masking pseudonyms. Default: a random key kept in the data
    /// directory. Instances sharing a store must share it, so it is required then.
    pub masking_key: Option<SecretRef>,
    /// Recorded sessions older than this are deleted.
    #[serde(default = "default_retention_days")]
    pub recording_retention_days: u64,
    /// Bytes all requests in flight may hold at once. A JSON query reserves its `max_bytes`
    /// plus twice its connection's `max_value_bytes` (a row, and its JSON form) until it
    /// ends, an NDJSON stream (constant memory) only the latter; one that cannot within the
    /// pool wait is refused with 503 `memory_budget`, one larger than the whole budget at once.
    #[serde(default = "default_memory_budget")]
    pub memory_budget_bytes: u64,
}

fn default_memory_budget() -> u64 {
    1024 * 1024 * 1024
}

fn default_retention_days() -> u64 {
    90
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            drain_timeout_ms: default_drain_ms(),
            max_body_bytes: default_max_body(),
            write_idle_timeout_ms: default_write_idle_ms(),
            header_read_timeout_ms: default_header_read_ms(),
            body_read_timeout_ms: default_body_read_ms(),
            max_connections: default_max_connections(),
            max_concurrent_per_principal: default_per_principal(),
            masking_key: None,
            recording_retention_days: default_retention_days(),
            memory_budget_bytes: default_memory_budget(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_drain_ms() -> u64 {
    20_000
}
fn default_max_body() -> usize {
    1024 * 1024
}
fn default_write_idle_ms() -> u64 {
    30_000
}
fn default_header_read_ms() -> u64 {
    // Also the keep-alive idle limit: long enough that clients reusing pooled connections
    // rarely race the close, short enough that idle sockets cannot pile up.
    30_000
}
fn default_body_read_ms() -> u64 {
    30_000
}
fn default_max_connections() -> usize {
    4_096
}
fn default_per_principal() -> usize {
    16
}

/// Whether a principal is an `agent` (software acting on its own) or a `human`. Only humans
/// approve reviews or are exempt from masking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(example = "agent")]
pub enum PrincipalKind {
    Agent,
    Human,
}

impl fmt::Display for PrincipalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PrincipalKind::Agent => "agent",
            PrincipalKind::Human => "human",
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Short name used in rules (`sub:NAME/ID`) and in audit records.
    pub name: String,
    /// The exact `iss` claim value.
    pub issuer: String,
    /// Mandatory: tokens must carry this audience.
    pub audience: String,
    /// The local development issuer: its Ed25519 key lives in the data directory and
    /// `airlock token` signs with it. Refused on a non-loopback listener.
    #[serde(default)]
    pub dev: bool,
    /// OIDC discovery document; default `{issuer}/.well-known/openid-configuration`.
    pub discovery_url: Option<String>,
    /// Every token of this issuer is of this kind...
    pub principal_kind: Option<PrincipalKind>,
    /// ...or this claim says which kind (`agent` | `human`).
    pub kind_claim: Option<String>,
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Globs of the groups this issuer may assert; other groups in its tokens are dropped.
    /// Empty (the default) drops every group: an issuer is trusted for identities, and for
    /// groups only as far as this list says.
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    #[serde(default = "default_jwks_max_bytes")]
    pub jwks_max_bytes: usize,
    #[serde(default = "default_jwks_timeout_ms")]
    pub jwks_timeout_ms: u64,
    /// Allow http:// discovery/JWKS URLs (only sensible on loopback, e.g. in tests).
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// Console sign-in through this issuer (OIDC authorization code with PKCE).
    pub console: Option<IssuerConsoleConfig>,
}

impl IssuerConfig {
    /// Whether a group in this issuer's tokens is kept (matches an `allowed_groups` glob).
    pub fn allows_group(&self, group: &str) -> bool {
        self.allowed_groups
            .iter()
            .any(|pat| crate::glob::matches(pat, group))
    }
}

fn default_groups_claim() -> String {
    "groups".into()
}
fn default_jwks_max_bytes() -> usize {
    256 * 1024
}
fn default_jwks_timeout_ms() -> u64 {
    5_000
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// PostgreSQL URL for a shared store; absent means the embedded SQLite store.
    pub url: Option<String>,
    pub password: Option<SecretRef>,
    /// How long a store write may wait for a lock before the request fails closed (503).
    #[serde(default = "default_store_busy_ms")]
    pub busy_timeout_ms: u64,
}

fn default_store_busy_ms() -> u64 {
    2_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Principals (`group:`, `sub:`, `*`) allowed to read `GET /v1/audit`.
    #[serde(default)]
    pub readers: Vec<String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            readers: vec!["group:auditors".into()],
        }
    }
}

/// What a connection reaches: a SQL database (`postgres`, `mysql`, `sqlite`: `query`,
/// `schema`, `check`), hosts and pods (`ssh`, `kubernetes`: `exec`, `shell`, `check`) or an
/// HTTP API (`http`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[schema(example = "postgres")]
pub enum ConnectionKind {
    Postgres,
    Mysql,
    Sqlite,
    /// Commands on a host over SSH (`exec`), not SQL.
    Ssh,
    /// Commands in pods (Kubernetes pod exec).
    Kubernetes,
    /// An HTTP API under one base URL, called with credentials only Airlock holds.
    Http,
}

impl ConnectionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionKind::Postgres => "postgres",
            ConnectionKind::Mysql => "mysql",
            ConnectionKind::Sqlite => "sqlite",
            ConnectionKind::Ssh => "ssh",
            ConnectionKind::Kubernetes => "kubernetes",
            ConnectionKind::Http => "http",
        }
    }

    /// SQL targets take `query`; hosts and pods take `exec`, HTTP APIs their own calls.
    pub fn is_sql(self) -> bool {
        !matches!(
            self,
            ConnectionKind::Ssh | ConnectionKind::Kubernetes | ConnectionKind::Http
        )
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default)]
    pub mode: TlsMode,
    /// PEM CA bundle that must sign the server certificate (`file:` or `env:` reference).
    pub ca: Option<SecretRef>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    #[default]
    Disable,
    VerifyFull,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// The share of `pool_size` one principal may hold at once (0 < share <= 1; at least
    /// one request): one agent's slow work cannot take every pooled connection.
    #[serde(default = "default_principal_share")]
    pub principal_share: f64,
    /// How long a request waits for a pooled connection before 503.
    #[serde(default = "default_pool_wait_ms")]
    pub pool_wait_timeout_ms: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_max_timeout_ms")]
    pub max_timeout_ms: u64,
    #[serde(default = "default_rows")]
    pub max_rows: u64,
    #[serde(default = "default_rows_ceiling")]
    pub max_rows_ceiling: u64,
    #[serde(default = "default_bytes")]
    pub max_bytes: u64,
    #[serde(default = "default_bytes_ceiling")]
    pub max_bytes_ceiling: u64,
    /// Largest single row message (so value) Airlock takes from the database. A larger one
    /// is refused when its header arrives, before any of it is buffered, and the request
    /// fails with SQLSTATE 54000 (`value_too_large`); the database connection is dropped,
    /// which stops the query.
    #[serde(default = "default_max_value_bytes")]
    pub max_value_bytes: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            pool_size: default_pool_size(),
            principal_share: default_principal_share(),
            pool_wait_timeout_ms: default_pool_wait_ms(),
            timeout_ms: default_timeout_ms(),
            max_timeout_ms: default_max_timeout_ms(),
            max_rows: default_rows(),
            max_rows_ceiling: default_rows_ceiling(),
            max_bytes: default_bytes(),
            max_bytes_ceiling: default_bytes_ceiling(),
            max_value_bytes: default_max_value_bytes(),
        }
    }
}

fn default_connect_ms() -> u64 {
    10_000
}

fn default_principal_share() -> f64 {
    0.5
}

fn default_pool_size() -> usize {
    8
}
fn default_pool_wait_ms() -> u64 {
    5_000
}
fn default_timeout_ms() -> u64 {
    30_000
}
fn default_max_timeout_ms() -> u64 {
    300_000
}
fn default_rows() -> u64 {
    1_000
}
fn default_rows_ceiling() -> u64 {
    100_000
}
fn default_bytes() -> u64 {
    8 * 1024 * 1024
}
fn default_bytes_ceiling() -> u64 {
    64 * 1024 * 1024
}
fn default_max_value_bytes() -> u64 {
    16 * 1024 * 1024
}

impl LimitsConfig {
    /// How many requests one principal may run at once on this connection.
    pub fn per_principal(&self) -> usize {
        ((self.pool_size as f64 * self.principal_share).floor() as usize).max(1)
    }

    pub fn pool_wait(&self) -> Duration {
        Duration::from_millis(self.pool_wait_timeout_ms)
    }
}

/// A reference to a secret: `env:NAME` or `file:PATH`. Literal secrets are refused.
#[derive(Clone, Deserialize)]
#[serde(try_from = "String")]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

impl TryFrom<String> for SecretRef {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if let Some(name) = s.strip_prefix("env:") {
            if name.is_empty() {
                return Err("secret reference `env:` needs a variable name".into());
            }
            Ok(SecretRef::Env(name.to_string()))
        } else if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err("secret reference `file:` needs a path".into());
            }
            Ok(SecretRef::File(PathBuf::from(path)))
        } else {
            Err("secrets are references: write `env:NAME` or `file:PATH`, never the value".into())
        }
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(n) => write!(f, "env:{n}"),
            SecretRef::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

impl SecretRef {
    /// Resolves the reference. The error names the reference, never a value.
    pub fn resolve(&self) -> Result<SecretValue, String> {
        match self {
            SecretRef::Env(name) => std::env::var(name)
                .map(SecretValue)
                .map_err(|_| format!("environment variable {name} is not set")),
            SecretRef::File(path) => std::fs::read_to_string(path)
                .map(|s| SecretValue(s.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|e| format!("cannot read secret file {}: {e}", path.display())),
        }
    }
}

/// A resolved secret. Never printed: `Debug` shows a placeholder.
#[derive(Clone)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[secret]")
    }
}

/// A configuration error that names where it is.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        message: message.into(),
    }
}

impl Config {
    /// Parses and validates; secrets are checked for presence here but resolved by their users.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let message = e.message().to_string();
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!("{origin}, line {line}")
                })
                .unwrap_or_else(|| origin.to_string());
            err(at, message)
        })?;
        let mut config = config;
        config.validate()?;
        config.connections = std::mem::take(&mut config.raw_connections)
            .into_iter()
            .enumerate()
            .map(|(i, raw)| connections::typed(raw, i))
            .collect::<Result<_, _>>()?;
        if let Ok(table) = text.parse::<toml::Table>() {
            config.versions = Versions::of(&table);
        }
        Ok(config)
    }

    /// The version of connection `name`'s configuration (see [`Versions`]).
    pub fn connection_version(&self, name: &str) -> String {
        self.versions
            .connections
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// The version of the rule set (see [`Versions`]).
    pub fn policy_version(&self) -> String {
        self.versions.policy.clone()
    }

    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            None => Config::parse(EMBEDDED_DEFAULT, "embedded default config"),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| err(p.display().to_string(), format!("cannot read: {e}")))?;
                Config::parse(&text, &p.display().to_string())
            }
        }
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.listen.parse().map_err(|_| {
            err(
                "server.listen",
                format!("`{}` is not an IP:port address", self.server.listen),
            )
        })
    }

    pub fn dev_issuer(&self) -> Option<&IssuerConfig> {
        self.issuers.iter().find(|i| i.dev)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        if self.server.header_read_timeout_ms == 0 || self.server.body_read_timeout_ms == 0 {
            return Err(err(
                "server.header_read_timeout_ms",
                "header and body read timeouts must be at least 1 ms",
            ));
        }
        // Deadlines are computed from these: bounded so the arithmetic cannot overflow.
        const WEEK_MS: u64 = 7 * 24 * 3600 * 1000;
        for (key, value) in [
            ("shells.idle_timeout_ms", self.shells.idle_timeout_ms),
            ("shells.max_duration_ms", self.shells.max_duration_ms),
            ("shells.ticket_ttl_ms", self.shells.ticket_ttl_ms),
            ("server.drain_timeout_ms", self.server.drain_timeout_ms),
            (
                "server.header_read_timeout_ms",
                self.server.header_read_timeout_ms,
            ),
            (
                "server.body_read_timeout_ms",
                self.server.body_read_timeout_ms,
            ),
            (
                "server.write_idle_timeout_ms",
                self.server.write_idle_timeout_ms,
            ),
        ] {
            if value > WEEK_MS {
                return Err(err(key, "at most one week (604800000 ms)"));
            }
        }
        if self.server.max_connections == 0 {
            return Err(err("server.max_connections", "must be at least 1"));
        }
        if self.server.max_concurrent_per_principal == 0 {
            return Err(err(
                "server.max_concurrent_per_principal",
                "must be at least 1",
            ));
        }
        let mut names = HashSet::new();
        let mut issuer_values = HashSet::new();
        for (i, iss) in self.issuers.iter().enumerate() {
            let at = |k: &str| format!("issuers[{i}].{k}");
            check_name(&iss.name).map_err(|m| err(at("name"), m))?;
            if !names.insert(iss.name.as_str()) {
                return Err(err(
                    at("name"),
                    format!("duplicate issuer name `{}`", iss.name),
                ));
            }
            if !issuer_values.insert(iss.issuer.as_str()) {
                return Err(err(at("issuer"), "two issuers with the same `iss` value"));
            }
            if iss.audience.trim().is_empty() {
                return Err(err(at("audience"), "an audience is mandatory"));
            }
            match (&iss.principal_kind, &iss.kind_claim) {
                (Some(_), Some(_)) => {
                    return Err(err(
                        at("kind_claim"),
                        "set either principal_kind or kind_claim, not both",
                    ));
                }
                (None, None) => {
                    return Err(err(
                        at("principal_kind"),
                        "say which kind of principal this issuer's tokens carry (principal_kind) or which claim says it (kind_claim)",
                    ));
                }
                _ => {}
            }
            if !iss.dev {
                let url = iss.discovery_url.clone().unwrap_or_else(|| {
                    format!(
                        "{}/.well-known/openid-configuration",
                        iss.issuer.trim_end_matches('/')
                    )
                });
                check_http_url(&url, iss.allow_insecure_http)
                    .map_err(|m| err(at("discovery_url"), m))?;
            } else if iss.discovery_url.is_some() {
                return Err(err(
                    at("discovery_url"),
                    "a dev issuer has no discovery document",
                ));
            }
            if let Some(c) = &iss.console {
                if iss.dev {
                    return Err(err(
                        at("console"),
                        "the dev issuer has no sign-in endpoint; the console signs its tokens in on loopback without this",
                    ));
                }
                if iss.principal_kind == Some(PrincipalKind::Agent) {
                    return Err(err(
                        at("console"),
                        "this issuer's principals are agents; the console is for humans",
                    ));
                }
                if c.client_id.trim().is_empty() {
                    return Err(err(at("console.client_id"), "a client id is required"));
                }
                if !c.scopes.iter().any(|s| s == "openid") {
                    return Err(err(
                        at("console.scopes"),
                        "the scopes must include `openid`",
                    ));
                }
                if let Some(secret) = &c.client_secret {
                    secret
                        .resolve()
                        .map_err(|m| err(at("console.client_secret"), m))?;
                }
            }
            if iss.jwks_max_bytes == 0 || iss.jwks_timeout_ms == 0 {
                return Err(err(at("jwks_max_bytes"), "JWKS limits must be positive"));
            }
        }
        if self.issuers.iter().filter(|i| i.dev).count() > 1 {
            return Err(err("issuers", "at most one dev issuer"));
        }
        if let Some(url) = &self.console.public_url {
            let parsed = check_http_url(url, true)
                .and_then(|()| reqwest::Url::parse(url).map_err(|e| e.to_string()))
                .map_err(|m| err("console.public_url", m))?;
            let loopback = parsed.host_str().is_some_and(is_loopback_host);
            if parsed.scheme() == "http" && !loopback {
                return Err(err(
                    "console.public_url",
                    "use https: session cookies over plain http are only for loopback",
                ));
            }
            if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() {
                return Err(err(
                    "console.public_url",
                    "give only the origin (scheme, host, port), e.g. https://airlock.example.com",
                ));
            }
        }
        if self.console.idle_timeout_secs == 0
            || self.console.max_session_secs == 0
            || self.console.max_session_secs > 30 * 86_400
        {
            return Err(err(
                "console.max_session_secs",
                "console session timeouts must be positive and at most 30 days",
            ));
        }
        if let Some(url) = &self.store.url {
            check_db_url(url, &["postgres", "postgresql"]).map_err(|m| err("store.url", m))?;
        }
        if let Some(p) = &self.store.password {
            p.resolve().map_err(|m| err("store.password", m))?;
        }
        let mut conn_names = HashSet::new();
        for (i, c) in self.raw_connections.iter().enumerate() {
            let at = |k: &str| format!("connections[{i}].{k}");
            check_name(&c.name).map_err(|m| err(at("name"), m))?;
            if !conn_names.insert(c.name.as_str()) {
                return Err(err(
                    at("name"),
                    format!("duplicate connection `{}`", c.name),
                ));
            }
            let l = &c.limits;
            let lat = |k: &str| format!("connections[{i}].limits.{k}");
            if l.pool_size == 0 {
                return Err(err(lat("pool_size"), "must be at least 1"));
            }
            if !(l.principal_share > 0.0 && l.principal_share <= 1.0) {
                return Err(err(lat("principal_share"), "must be in (0, 1]"));
            }
            if l.max_timeout_ms > 7 * 24 * 3600 * 1000 {
                return Err(err(
                    lat("max_timeout_ms"),
                    "at most one week (604800000 ms)",
                ));
            }
            if l.timeout_ms == 0 || l.timeout_ms > l.max_timeout_ms {
                return Err(err(lat("timeout_ms"), "must be in 1..=max_timeout_ms"));
            }
            if l.max_rows == 0 || l.max_rows > l.max_rows_ceiling {
                return Err(err(lat("max_rows"), "must be in 1..=max_rows_ceiling"));
            }
            if l.max_bytes == 0 || l.max_bytes > l.max_bytes_ceiling {
                return Err(err(lat("max_bytes"), "must be in 1..=max_bytes_ceiling"));
            }
            // MySQL's client packet limit takes 1 KiB..1 GiB.
            if !(1024..=1024 * 1024 * 1024).contains(&l.max_value_bytes) {
                return Err(err(lat("max_value_bytes"), "must be in 1024..=1073741824"));
            }
        }
        let mut rule_ids = HashSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            r.validate()
                .map_err(|(k, m)| err(format!("rules[{i}].{k}"), m))?;
            if !rule_ids.insert(r.id.as_str()) {
                return Err(err(
                    format!("rules[{i}].id"),
                    format!("duplicate rule id `{}`", r.id),
                ));
            }
        }
        if let Some(url) = &self.reviews.webhook_url {
            check_http_url(url, self.reviews.allow_insecure_http)
                .map_err(|m| err("reviews.webhook_url", m))?;
            let secret =
                self.reviews.webhook_secret.as_ref().ok_or_else(|| {
                    err("reviews.webhook_secret", "a webhook needs a signing secret")
                })?;
            secret
                .resolve()
                .map_err(|m| err("reviews.webhook_secret", m))?;
        }
        for (i, m) in self.masking.iter().enumerate() {
            m.validate()
                .map_err(|(k, msg)| err(format!("masking[{i}].{k}"), msg))?;
        }
        let hashes = self.masking.iter().any(|m| {
            m.columns
                .iter()
                .any(|c| c.strategy == crate::mask::ColumnStrategy::Hash)
        });
        if hashes && self.store.url.is_some() && self.server.masking_key.is_none() {
            return Err(err(
                "server.masking_key",
                "instances sharing a store must share the hash pseudonym key: set masking_key = \"env:NAME\"",
            ));
        }
        if let Some(k) = &self.server.masking_key {
            let v = k.resolve().map_err(|m| err("server.masking_key", m))?;
            if v.expose().len() < 16 {
                return Err(err("server.masking_key", "use at least 16 bytes of key"));
            }
        }
        for (i, p) in self.audit.readers.iter().enumerate() {
            crate::policy::PrincipalPattern::parse(p)
                .map_err(|m| err(format!("audit.readers[{i}]"), m))?;
        }
        Ok(())
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` must be 1-64 characters of letters, digits, `-`, `_`, `.`"
        ))
    }
}

/// `localhost` or a loopback IP address (IPv6 in brackets, as URLs write it).
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

fn check_http_url(url: &str, allow_http: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if allow_http => Ok(()),
        "http" => Err(format!(
            "`{url}` is plain http; use https (or allow_insecure_http = true for loopback tests)"
        )),
        other => Err(format!("unsupported scheme `{other}`")),
    }
}

fn check_db_url(url: &str, schemes: &[&str]) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !schemes.contains(&parsed.scheme()) {
        return Err(format!(
            "scheme must be one of {schemes:?}, got `{}`",
            parsed.scheme()
        ));
    }
    if parsed.password().is_some() {
        return Err(
            "the URL carries a password; put it in `password = \"env:NAME\"` instead".into(),
        );
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::load(None).unwrap();
        assert!(c.dev_issuer().is_some());
        assert!(c.connections.iter().any(|c| c.name == "demo"));
    }

    #[test]
    fn unknown_key_is_refused_with_location() {
        let e =
            Config::parse("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n", "t.toml").unwrap_err();
        assert!(e.to_string().contains("line 3"), "{e}");
        assert!(e.to_string().contains("lisen"), "{e}");
    }

    #[test]
    fn literal_secret_and_url_password_are_refused() {
        let e = Config::parse(
            "[[connections]]\nname='a'\nkind='postgres'\nurl='postgres://u@h/db'\npassword='hunter2'\n",
            "t",
        )
        .unwrap_err();
        assert!(e.to_string().contains("env:NAME"), "{e}");
        assert!(!e.to_string().contains("hunter2"));
        let e = Config::parse(
            "[[connections]]\nname='a'\nkind='postgres'\nurl='postgres://u:pw@h/db'\n",
            "t",
        )
        .unwrap_err();
        assert_eq!(e.path, "connections[0].url");
        assert!(!e.to_string().contains("pw@"));
    }

    #[test]
    fn a_key_of_another_kind_is_refused_by_name() {
        let e = Config::parse(
            "[[connections]]\nname='a'\nkind='postgres'\nurl='postgres://u@h/db'\nhost_key='SHA256:x'\n",
            "t",
        )
        .unwrap_err();
        assert_eq!(e.path, "connections[0].host_key");
        let e = Config::parse(
            "[[connections]]\nname='s'\nkind='ssh'\nurl='ssh://u@h:22'\nhost_key='SHA256:x'\npassword='env:PATH'\nread_only=true\n",
            "t",
        )
        .unwrap_err();
        assert_eq!(e.path, "connections[0].read_only");
        let c = Config::parse(
            "[[connections]]\nname='s'\nkind='ssh'\nurl='ssh://u@h:22'\nhost_key='SHA256:x'\npassword='env:PATH'\n",
            "t",
        )
        .unwrap();
        assert!(
            matches!(&c.connections[0].target, TargetConfig::Ssh(s) if s.host_key == "SHA256:x")
        );
    }

    #[test]
    fn missing_secret_names_the_key() {
        let e = Config::parse(
            "[[connections]]\nname='a'\nkind='mysql'\nurl='mysql://u@h/db'\npassword='env:AIRLOCK_TEST_SURELY_UNSET'\n",
            "t",
        )
        .unwrap_err();
        assert_eq!(e.path, "connections[0].password");
    }
}
