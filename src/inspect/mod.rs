//! Inspection: turn a raw request into facts the policy can match on.
//!
//! Invariant: anything the inspector cannot fully account for is reported as `unparsed`,
//! and the policy denies unparsed input unless a rule explicitly admits it.

pub mod functions;
pub mod http;
pub mod lineage;
pub mod shell;
pub mod sql;

pub use sql::{Facts, StatementKind};

/// What a request to an HTTP API target is, as rules match it: everything taken from the
/// request after normalisation (`inspect::http`), so a rule sees what is sent.
#[derive(
    Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[schema(example = json!({"method": "POST", "path": "/customers/42/notes", "query_keys": ["notify"], "content_type": "application/json", "body_bytes": 27, "body_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}))]
pub struct HttpFacts {
    /// The method, uppercase.
    pub method: String,
    /// The path under the connection's base URL, normalised (dot segments resolved,
    /// unreserved characters decoded): what is sent, and what `paths` globs match.
    pub path: String,
    /// The query's parameter names, sorted, deduplicated.
    #[serde(default)]
    pub query_keys: Vec<String>,
    /// The request body's content type, without parameters, lowercase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The request body's length.
    #[serde(default)]
    pub body_bytes: u64,
    /// SHA-256 (hex) of the request body, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_sha256: Option<String>,
}

/// A name and a value (a query parameter or a header), in the order sent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"name": "notify", "value": "false"}))]
pub struct NameValue {
    /// A query parameter's or header's name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// An HTTP API request as it will be sent: normalised and checked (`inspect::http`). This
/// is what a review shows and binds, and what the audit records (masked).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"method": "POST", "path": "/customers/42/notes", "query": [{"name": "notify", "value": "false"}], "headers": [], "body": "{\"text\":\"called back\"}", "content_type": "application/json"}))]
pub struct NormalizedHttp {
    /// Uppercase.
    pub method: String,
    /// Under the connection's base URL, normalised.
    pub path: String,
    /// Query parameters, in the order sent.
    #[serde(default)]
    pub query: Vec<NameValue>,
    /// The agent's headers that are sent (Airlock adds the credentials and fixed headers).
    #[serde(default)]
    pub headers: Vec<NameValue>,
    /// The body as sent (JSON text or plain text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The body's content type, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

impl NormalizedHttp {
    /// `METHOD /path?query`, as the audit and reviewers show it.
    pub fn request_line(&self) -> String {
        let mut line = format!("{} {}", self.method, self.path);
        for (i, q) in self.query.iter().enumerate() {
            line.push(if i == 0 { '?' } else { '&' });
            line.push_str(&q.name);
            line.push('=');
            line.push_str(&q.value);
        }
        line
    }

    pub fn facts(&self) -> HttpFacts {
        let mut query_keys: Vec<String> = self.query.iter().map(|q| q.name.clone()).collect();
        query_keys.sort();
        query_keys.dedup();
        HttpFacts {
            method: self.method.clone(),
            path: self.path.clone(),
            query_keys,
            content_type: self.content_type.clone(),
            body_bytes: self.body.as_ref().map_or(0, |b| b.len() as u64),
            body_sha256: self
                .body
                .as_ref()
                .map(|b| crate::digest::sha256_hex(b.as_bytes())),
        }
    }
}

impl HttpFacts {
    /// Methods that, by HTTP's definition, do not change anything on the server.
    pub fn is_safe_method(&self) -> bool {
        matches!(self.method.as_str(), "GET" | "HEAD" | "OPTIONS")
    }
}
