//! Masking: what an agent receives never carries a sensitive value in clear.
//!
//! Pieces:
//! - [`detectors`]: content detectors (emails, cards, keys, tokens...) over free text, with
//!   validators, a cheap prefilter and priority-based overlap resolution.
//! - [`stream`]: the same masking over byte streams cut at arbitrary points (command
//!   output), producing exactly the one-shot result.
//! - Here: configuration types, JSON walking, column strategies and keyed pseudonyms.
//!
//! What must stay true:
//! - Content detectors redact or partially mask, never hash (see `detectors`); only column
//!   rules, which an operator points at a column on purpose, may pseudonymise with a keyed
//!   hash, and the key never comes from this configuration.
//! - Content detection is a safety net for accidental exposure. It is not a boundary
//!   against an agent that transforms values in SQL (`reverse()`, `encode()`, `substr()`,
//!   padding): column rules and `strict` are.
//! - Nothing here panics on any input: JSON is walked with an explicit stack (no recursion
//!   depth limit to hit), all slicing is bounds-checked by construction.

pub mod detectors;
pub mod json;
pub mod plan;
pub mod stream;

use std::borrow::Cow;
use std::collections::HashSet;

use aws_lc_rs::hmac;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use detectors::{
    Builtin, DetectorError, DetectorSet, DetectorStrategy, Finding, MAX_HOLD, MaskCounts,
};
pub use stream::StreamMasker;

/// One `[[masking]]` entry: which connections it covers and how their results are masked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskingConfig {
    /// Globs over connection names.
    pub connections: Vec<String>,
    /// Built-in detector ids (see [`Builtin::id`]), or `"all"`. Empty means no built-in
    /// content detection (column rules and custom detectors still apply). Custom detectors
    /// are always on; naming one here is allowed.
    #[serde(default)]
    pub detectors: Vec<String>,
    /// How content detector findings are shown: `redact` (default) or `partial`.
    #[serde(default)]
    pub strategy: DetectorStrategy,
    /// Per-column treatment, applied whatever the content.
    #[serde(default)]
    pub columns: Vec<ColumnRule>,
    /// Groups whose members see clear values. Only honoured for principals of kind
    /// `human`: an agent never sees clear values, whatever groups its token claims.
    #[serde(default)]
    pub exempt_groups: Vec<String>,
    /// When set, a result whose columns cannot all be attributed to source columns (so
    /// that column rules cannot be applied with certainty) is refused instead of being
    /// passed through content detectors only.
    #[serde(default)]
    pub strict: bool,
    /// Operator-defined detectors.
    #[serde(default)]
    pub custom: Vec<CustomDetector>,
}

/// A column rule: `column` is a glob over the column name (`ssn`, `*_email`) or over
/// `table.column` (`users.*`, `*.password`) when it contains a dot. When it starts with `$`
/// it is a JSON path over HTTP bodies instead (see [`json`]), and never applies to SQL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnRule {
    pub column: String,
    pub strategy: ColumnStrategy,
}

/// An operator-defined content detector. The pattern uses the `regex` crate syntax: linear
/// time, no backreferences or look-around by construction.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomDetector {
    /// Stable id (counts, audit); must not be a built-in id.
    pub id: String,
    pub pattern: String,
    /// What replaces a match under `redact`, e.g. `[EMPLOYEE_ID]`.
    pub label: String,
}

/// Treatment of a whole column value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnStrategy {
    /// Replaced by [`COLUMN_REDACTED`].
    Redact,
    /// Letters and digits starred except the last 4 when there are more than 8.
    Partial,
    /// A keyed pseudonym ([`hash_pseudonym`]): equal values give equal tokens, so joins and
    /// group-bys still work, without revealing the value.
    Hash,
}

/// What a redacted column value becomes.
pub const COLUMN_REDACTED: &str = "[REDACTED]";

const DOC_DETECTORS: &str = "all, private_key, jwt, url_password, token, aws_access_key_id, aws_secret_key, iban, card, email, ssn, phone, ipv6, ipv4";

impl MaskingConfig {
    /// Validates the entry; the error is (key path inside the entry, message), e.g.
    /// (`custom[0].pattern`, `does not compile: ...`).
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.connections.is_empty() {
            return Err((
                "connections".into(),
                "name at least one connection glob".into(),
            ));
        }
        for (i, c) in self.connections.iter().enumerate() {
            if c.trim().is_empty() {
                return Err((format!("connections[{i}]"), "empty glob".into()));
            }
        }
        let mut custom_ids = HashSet::new();
        for (i, c) in self.custom.iter().enumerate() {
            detectors::check_custom(c).map_err(|(k, m)| (format!("custom[{i}].{k}"), m))?;
            if !custom_ids.insert(c.id.as_str()) {
                return Err((
                    format!("custom[{i}].id"),
                    format!("duplicate custom detector id `{}`", c.id),
                ));
            }
        }
        for (i, id) in self.detectors.iter().enumerate() {
            if id != "all" && Builtin::from_id(id).is_none() && !custom_ids.contains(id.as_str()) {
                return Err((
                    format!("detectors[{i}]"),
                    format!("unknown detector `{id}`; known: {DOC_DETECTORS}"),
                ));
            }
        }
        for (i, r) in self.columns.iter().enumerate() {
            if r.is_json_path() {
                json::JsonPath::parse(&r.column)
                    .map_err(|m| (format!("columns[{i}].column"), format!("JSON path: {m}")))?;
            } else if r.column.is_empty() || r.column.chars().any(char::is_whitespace) {
                return Err((
                    format!("columns[{i}].column"),
                    "a glob over `column` or `table.column`, without spaces".into(),
                ));
            }
        }
        for (i, g) in self.exempt_groups.iter().enumerate() {
            if g.trim().is_empty() {
                return Err((format!("exempt_groups[{i}]"), "empty group name".into()));
            }
        }
        if self.detectors.is_empty() && self.columns.is_empty() && self.custom.is_empty() {
            return Err((
                "detectors".into(),
                "this entry masks nothing: enable detectors (e.g. `detectors = [\"all\"]`), column rules or custom detectors".into(),
            ));
        }
        Ok(())
    }

    /// The detector set this entry enables.
    pub fn detector_set(&self) -> Result<DetectorSet, DetectorError> {
        DetectorSet::new(&self.detectors, &self.custom)
    }

    /// Whether this entry covers a connection.
    pub fn applies_to(&self, connection: &str) -> bool {
        self.connections
            .iter()
            .any(|g| crate::glob::matches(g, connection))
    }
}

impl ColumnRule {
    /// Whether `column` is a JSON path (`$...`) over HTTP bodies rather than a SQL glob.
    pub fn is_json_path(&self) -> bool {
        self.column.starts_with('$')
    }

    /// Whether the rule names this column. A glob with a dot needs the table to be known.
    /// A JSON-path rule names no SQL column.
    pub fn matches(&self, table: Option<&str>, column: &str) -> bool {
        if self.is_json_path() {
            false
        } else if self.column.contains('.') {
            table.is_some_and(|t| crate::glob::matches(&self.column, &format!("{t}.{column}")))
        } else {
            crate::glob::matches(&self.column, column)
        }
    }
}

impl ColumnStrategy {
    /// The value an agent sees. `key` is the pseudonym key (only used by `Hash`).
    pub fn apply(self, key: &[u8], value: &str) -> String {
        match self {
            ColumnStrategy::Redact => COLUMN_REDACTED.to_string(),
            ColumnStrategy::Partial => partial(value),
            ColumnStrategy::Hash => hash_pseudonym(key, value),
        }
    }
}

/// Stars letters and digits, keeping separators and, when the value has more than 8
/// letters/digits, the last 4 of them (`**** **** **** 1111`).
pub fn partial(value: &str) -> String {
    let mut out = Vec::with_capacity(value.len());
    detectors::partial_into(value.as_bytes(), &mut out);
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A keyed pseudonym: `h:` followed by the first 16 hex digits (64 bits) of
/// HMAC-SHA256(key, value). Equal inputs give equal tokens under one key; without the key
/// the token reveals nothing and cannot be recomputed from a guess.
///
/// Collision tradeoff: 64 bits keep tokens short; two distinct values collide with
/// probability about n²/2⁶⁵ over n distinct values (≈ 3·10⁻⁸ for a million), negligible for
/// joins and group-bys, but a token is not a unique key for billions of values.
pub fn hash_pseudonym(key: &[u8], value: &str) -> String {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&k, value.as_bytes());
    let bytes = tag.as_ref();
    let mut out = String::with_capacity(18);
    out.push_str("h:");
    out.push_str(&hex::encode(&bytes[..bytes.len().min(8)]));
    out
}

/// Masks a free-text string: a database error message or detail, a notice, a log line.
pub fn mask_text<'t>(
    text: &'t str,
    set: &DetectorSet,
    strategy: DetectorStrategy,
    counts: &mut MaskCounts,
) -> Cow<'t, str> {
    set.mask_into(text, strategy, counts)
}

/// Masks every string leaf of a JSON value in place.
///
/// - String leaves are masked with their object key (or the nearest enclosing one, for
///   array elements) as context, so `{"aws_secret_access_key": "..."}` and
///   `{"ssn": "123456789"}` are recognised.
/// - Numbers are masked too (a card or phone number stored as a number): a number with a
///   finding becomes a string, since the masked form is not a number.
/// - Object keys are masked as well (maps keyed by email exist). Two keys that mask to the
///   same text are kept apart by a `~2`, `~3`... suffix, so no entry is lost.
/// - Booleans and nulls are left alone.
pub fn mask_json(
    value: &mut Value,
    set: &DetectorSet,
    strategy: DetectorStrategy,
    counts: &mut MaskCounts,
) {
    if set.is_empty() {
        return;
    }
    // Explicit stack: arbitrarily deep values cannot overflow the thread's stack.
    let mut stack: Vec<(&str, &mut Value)> = vec![("", value)];
    while let Some((ctx, v)) = stack.pop() {
        match v {
            Value::String(s) => {
                if let Cow::Owned(m) = set.mask_with_context(ctx, s, strategy, counts) {
                    *s = m;
                }
            }
            Value::Number(n) => {
                let text = n.to_string();
                // Nothing shorter than 8 characters can hold a finding a number could carry.
                if text.len() >= 8
                    && let Cow::Owned(m) = set.mask_with_context(ctx, &text, strategy, counts)
                {
                    *v = Value::String(m);
                }
            }
            Value::Array(items) => {
                for item in items.iter_mut() {
                    stack.push((ctx, item));
                }
            }
            Value::Object(map) => {
                mask_keys(map, set, strategy, counts);
                for (k, item) in map.iter_mut() {
                    stack.push((k.as_str(), item));
                }
            }
            Value::Bool(_) | Value::Null => {}
        }
    }
}

pub(super) fn mask_keys(
    map: &mut Map<String, Value>,
    set: &DetectorSet,
    strategy: DetectorStrategy,
    counts: &mut MaskCounts,
) {
    let mut local = MaskCounts::default();
    let masked: Vec<Option<String>> = map
        .keys()
        .map(|k| match set.mask_into(k, strategy, &mut local) {
            Cow::Owned(m) => Some(m),
            Cow::Borrowed(_) => None,
        })
        .collect();
    if masked.iter().all(Option::is_none) {
        return;
    }
    counts.merge(&local);
    let old = std::mem::take(map);
    for ((k, v), m) in old.into_iter().zip(masked) {
        let base = m.unwrap_or(k);
        let mut key = base.clone();
        let mut n = 2u64;
        while map.contains_key(&key) {
            key = format!("{base}~{n}");
            n += 1;
        }
        map.insert(key, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn all() -> DetectorSet {
        DetectorSet::new(&["all"], &[]).unwrap()
    }

    fn parse(toml_text: &str) -> MaskingConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn json_leaves_keys_numbers_and_context() {
        let set = all();
        let mut v = json!({
            "email": "john.doe@example.com",
            "nested": {"list": ["ok", "card 4111 1111 1111 1111", 4111111111111111u64]},
            "ssn": "123456789",
            "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "alice@example.com": 1,
            "bob@example.com": 2,
            "n": 42,
            "ok": true,
            "nothing": null
        });
        let mut counts = MaskCounts::default();
        mask_json(&mut v, &set, DetectorStrategy::Redact, &mut counts);
        assert_eq!(v["email"], "[EMAIL]");
        assert_eq!(v["nested"]["list"][0], "ok");
        assert_eq!(v["nested"]["list"][1], "card [CARD]");
        assert_eq!(v["nested"]["list"][2], "[CARD]");
        assert_eq!(v["ssn"], "[SSN]");
        assert_eq!(v["aws_secret_access_key"], "[AWS_SECRET]");
        assert_eq!(v["n"], 42);
        assert_eq!(v["ok"], true);
        let obj = v.as_object().unwrap();
        assert!(obj.contains_key("[EMAIL]") && obj.contains_key("[EMAIL]~2"));
        assert!(!v.to_string().contains("example.com"));
        assert_eq!(counts.get("email"), 3);
        assert_eq!(counts.get("card"), 2);
        assert_eq!(counts.get("ssn"), 1);
        assert_eq!(counts.get("aws_secret_key"), 1);
        // A bare 9-digit number without an ssn key stays.
        let mut v = json!({"id": "123456789"});
        mask_json(&mut v, &set, DetectorStrategy::Redact, &mut counts);
        assert_eq!(v["id"], "123456789");
    }

    #[test]
    fn json_deep_nesting_does_not_overflow() {
        let set = all();
        let mut v = json!("x@example.com");
        for _ in 0..100_000 {
            v = Value::Array(vec![v]);
        }
        let mut counts = MaskCounts::default();
        mask_json(&mut v, &set, DetectorStrategy::Redact, &mut counts);
        assert_eq!(counts.get("email"), 1);
        // Drop iteratively too (serde_json's recursive Drop would overflow).
        let mut cur = v;
        while let Value::Array(mut a) = cur {
            cur = a.pop().unwrap_or(Value::Null);
        }
        assert_eq!(cur, json!("[EMAIL]"));
    }

    #[test]
    fn error_message_masking() {
        let set = all();
        let mut counts = MaskCounts::default();
        let msg = "duplicate key value violates unique constraint \"users_email_key\": Key (email)=(jane@example.org) already exists.";
        let out = mask_text(msg, &set, DetectorStrategy::Redact, &mut counts);
        assert_eq!(
            out,
            "duplicate key value violates unique constraint \"users_email_key\": Key (email)=([EMAIL]) already exists."
        );
        assert_eq!(counts.get("email"), 1);
        assert!(matches!(
            mask_text(
                "syntax error at or near \"SELEC\"",
                &set,
                DetectorStrategy::Redact,
                &mut counts
            ),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn column_strategies() {
        let k = b"0123456789abcdef0123456789abcdef";
        let a = hash_pseudonym(k, "alice@example.com");
        assert_eq!(a.len(), 18);
        assert!(a.starts_with("h:"));
        assert_eq!(a, hash_pseudonym(k, "alice@example.com"));
        assert_ne!(a, hash_pseudonym(k, "bob@example.com"));
        assert_ne!(a, hash_pseudonym(b"another key", "alice@example.com"));
        assert_eq!(ColumnStrategy::Redact.apply(k, "x"), COLUMN_REDACTED);
        assert_eq!(
            ColumnStrategy::Partial.apply(k, "4111 1111 1111 1111"),
            "**** **** **** 1111"
        );
        assert_eq!(ColumnStrategy::Partial.apply(k, "secret"), "******");
        assert_eq!(ColumnStrategy::Hash.apply(k, "alice@example.com"), a);
        let r = ColumnRule {
            column: "users.*".into(),
            strategy: ColumnStrategy::Hash,
        };
        assert!(r.matches(Some("users"), "email"));
        assert!(!r.matches(None, "email"));
        assert!(!r.matches(Some("orders"), "email"));
        let r = ColumnRule {
            column: "*_email".into(),
            strategy: ColumnStrategy::Redact,
        };
        assert!(r.matches(None, "billing_email"));
        assert!(!r.matches(None, "email_verified"));
    }

    #[test]
    fn config_parses_and_validates() {
        let c = parse(
            r#"
            connections = ["prod-*"]
            detectors = ["email", "card", "emp"]
            strategy = "partial"
            exempt_groups = ["dba"]
            strict = true
            columns = [{ column = "users.ssn", strategy = "hash" }]
            custom = [{ id = "emp", pattern = 'EMP-\d{6}', label = "[EMPLOYEE]" }]
            "#,
        );
        c.validate().unwrap();
        assert!(c.applies_to("prod-eu"));
        assert!(!c.applies_to("staging"));
        assert_eq!(c.strategy, DetectorStrategy::Partial);
        let set = c.detector_set().unwrap();
        assert_eq!(set.ids().collect::<Vec<_>>(), ["emp", "card", "email"]);
        let (out, _) = set.mask("EMP-123456 a@b.io", DetectorStrategy::Redact);
        assert_eq!(out, "[EMPLOYEE] [EMAIL]");

        // Defaults: redact, nothing exempt.
        let c = parse("connections = ['x']\ndetectors = ['all']\n");
        c.validate().unwrap();
        assert_eq!(c.strategy, DetectorStrategy::Redact);
    }

    #[test]
    fn config_errors_name_the_key() {
        let e = toml::from_str::<MaskingConfig>("connections = ['x']\nstrategy = 'hash'\n")
            .unwrap_err();
        assert!(e.to_string().contains("hash"), "{e}");
        assert!(
            toml::from_str::<MaskingConfig>("connections = ['x']\ndetector = ['all']\n").is_err()
        );
        assert!(
            toml::from_str::<MaskingConfig>(
                "connections = ['x']\n[[columns]]\ncolumn = 'a'\nstrategy = 'hash'\nextra = 1\n"
            )
            .is_err()
        );

        let cases = [
            ("connections = []\ndetectors = ['all']", "connections"),
            ("connections = ['x']\ndetectors = ['emial']", "detectors[0]"),
            ("connections = ['x']", "detectors"),
            (
                "connections = ['x']\ncustom = [{ id = 'a', pattern = '(', label = '[A]' }]",
                "custom[0].pattern",
            ),
            (
                "connections = ['x']\ncustom = [{ id = 'a', pattern = 'x*', label = '[A]' }]",
                "custom[0].pattern",
            ),
            (
                "connections = ['x']\ncustom = [{ id = 'email', pattern = 'x', label = '[A]' }]",
                "custom[0].id",
            ),
            (
                "connections = ['x']\ncustom = [{ id = 'a', pattern = 'x', label = '' }]",
                "custom[0].label",
            ),
            (
                "connections = ['x']\ncustom = [{ id = 'a', pattern = 'x', label = '[A]' }, { id = 'a', pattern = 'y', label = '[A]' }]",
                "custom[1].id",
            ),
            (
                "connections = ['x']\ncolumns = [{ column = '', strategy = 'redact' }]",
                "columns[0].column",
            ),
            (
                "connections = ['x']\ndetectors = ['all']\nexempt_groups = ['']",
                "exempt_groups[0]",
            ),
        ];
        for (text, key) in cases {
            let (k, m) = parse(text).validate().unwrap_err();
            assert_eq!(k, key, "{text}: {m}");
        }
    }
}
