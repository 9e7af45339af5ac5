//! Masking as one request sees it: which `[[masking]]` entries apply to this principal on
//! this connection, what every output column gets, and the counts reported back.
//!
//! What must stay true:
//! - Exemptions are honoured only for principals of kind `human`; an agent never sees clear
//!   values, whatever groups its token claims.
//! - A column derived from a protected source column is masked whole, whatever its label.
//!   An output whose lineage cannot be followed is masked too (redacted), when any column
//!   rule applies: unknown is treated as protected.
//! - Content detectors run over every value that is not already masked whole, and over
//!   database error texts and the statement stored in audit.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::json::{BodyMasking, JsonRule, MaskedBody};
use super::{ColumnStrategy, DetectorSet, MaskCounts, MaskingConfig};
use crate::config::PrincipalKind;
use crate::identity::Principal;
use crate::inspect::lineage::{Lineage, OutputLineage, SourceColumn};

struct Entry {
    config: MaskingConfig,
    detectors: Arc<DetectorSet>,
    /// The `$...` column rules, compiled; they apply to HTTP bodies only.
    json_rules: Vec<JsonRule>,
}

impl Entry {
    /// The column rules that apply to SQL results: every rule but the JSON paths. Every
    /// SQL use of column rules (plan, strict check, lineage, error withholding, schema)
    /// must go through this, so that a JSON-path rule never changes SQL masking.
    fn sql_rules(&self) -> impl Iterator<Item = &super::ColumnRule> {
        self.config.columns.iter().filter(|r| !r.is_json_path())
    }
}

/// Every `[[masking]]` entry, compiled once at startup.
pub struct Masking {
    entries: Vec<Arc<Entry>>,
    key: Arc<[u8]>,
}

/// How many values were masked, per output column and per detector.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[schema(example = json!({"columns": {"email": 2}, "detectors": {"credit_card": 1}}))]
pub struct MaskedCounts {
    /// Values masked whole by column rules (or unknown lineage), by output column name.
    pub columns: BTreeMap<String, u64>,
    /// Findings of content detectors, by detector id.
    #[schema(value_type = BTreeMap<String, u64>)]
    pub detectors: MaskCounts,
}

impl MaskedCounts {
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty() && self.detectors.is_empty()
    }

    pub fn merge(&mut self, other: &MaskedCounts) {
        for (k, v) in &other.columns {
            *self.columns.entry(k.clone()).or_default() += v;
        }
        self.detectors.merge(&other.detectors);
    }
}

impl Masking {
    /// Compiles the entries. `key` keys the `hash` pseudonyms.
    pub fn new(configs: &[MaskingConfig], key: Vec<u8>) -> Result<Masking, String> {
        let mut entries = Vec::new();
        for (i, config) in configs.iter().enumerate() {
            let detectors = config
                .detector_set()
                .map_err(|e| format!("masking[{i}]: {e}"))?;
            let mut json_rules = Vec::new();
            for (j, r) in config.columns.iter().enumerate() {
                if r.is_json_path() {
                    json_rules.push(JsonRule::new(&r.column, r.strategy).map_err(|m| {
                        format!("masking[{i}].columns[{j}].column: JSON path: {m}")
                    })?);
                }
            }
            entries.push(Arc::new(Entry {
                config: config.clone(),
                detectors: Arc::new(detectors),
                json_rules,
            }));
        }
        Ok(Masking {
            entries,
            key: key.into(),
        })
    }

    pub fn none() -> Masking {
        Masking {
            entries: Vec::new(),
            key: Arc::from(Vec::new()),
        }
    }

    /// Every entry covering `connection`, exemptions ignored: for what is kept (audit
    /// records are read by people who are not the requester).
    pub fn for_record(&self, connection: &str) -> RequestMasking {
        RequestMasking {
            entries: self
                .entries
                .iter()
                .filter(|e| e.config.applies_to(connection))
                .cloned()
                .collect(),
            key: self.key.clone(),
        }
    }

    /// The entries that apply to `principal` on `connection`.
    pub fn for_request(&self, principal: &Principal, connection: &str) -> RequestMasking {
        let exempt = |e: &Entry| {
            principal.kind == PrincipalKind::Human
                && principal.groups.iter().any(|g| {
                    e.config
                        .exempt_groups
                        .iter()
                        .any(|x| crate::glob::matches(x, g))
                })
        };
        RequestMasking {
            entries: self
                .entries
                .iter()
                .filter(|e| e.config.applies_to(connection) && !exempt(e))
                .cloned()
                .collect(),
            key: self.key.clone(),
        }
    }
}

/// The masking one request is under.
#[derive(Clone)]
pub struct RequestMasking {
    entries: Vec<Arc<Entry>>,
    key: Arc<[u8]>,
}

/// What one output column gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnTreatment {
    /// Content detectors only.
    Scan,
    /// Masked whole with this strategy.
    Whole(ColumnStrategy),
}

/// The masking a caller is under on a connection, as it may be told: which columns are
/// masked whole and how, which content detectors scan every value, and whether it is strict.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"columns": [{"column": "customers.email", "strategy": "redact"}], "detectors": ["email", "credit_card"], "strict": false}))]
pub struct MaskingSummary {
    /// Column rules (globs over `column` or `table.column`) and their strategy.
    pub columns: Vec<ColumnRuleView>,
    /// Content detectors run on every value that is not masked whole.
    pub detectors: Vec<String>,
    /// Statements that would use a protected column other than as a plain selected column
    /// are refused (`masking_strict`).
    pub strict: bool,
}

/// One column rule.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"column": "customers.email", "strategy": "redact"}))]
pub struct ColumnRuleView {
    /// A glob over the column name (`ssn`), or over `table.column` (`customers.*`); or,
    /// starting with `$`, a JSON path over HTTP API bodies (`$.customers[*].email`).
    pub column: String,
    /// `redact`, `partial` or `hash`.
    #[schema(value_type = String)]
    pub strategy: crate::mask::ColumnStrategy,
}

impl RequestMasking {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What this masking does, without the keys or patterns behind it.
    pub fn summary(&self) -> MaskingSummary {
        let mut summary = MaskingSummary::default();
        for e in &self.entries {
            for r in &e.config.columns {
                summary.columns.push(ColumnRuleView {
                    column: r.column.clone(),
                    strategy: r.strategy,
                });
            }
            for id in e.detectors.ids() {
                if !summary.detectors.iter().any(|d| d == id) {
                    summary.detectors.push(id.to_string());
                }
            }
            summary.strict |= e.config.strict;
        }
        summary
    }

    /// Whether SQL column rules apply (JSON-path rules do not count: see `sql_rules`).
    pub fn has_column_rules(&self) -> bool {
        self.entries.iter().any(|e| e.sql_rules().next().is_some())
    }

    /// Whether JSON-path column rules apply to HTTP bodies.
    pub fn has_json_rules(&self) -> bool {
        self.entries.iter().any(|e| !e.json_rules.is_empty())
    }

    pub fn strict(&self) -> bool {
        self.entries.iter().any(|e| e.config.strict)
    }

    /// The strategy for a source column, if a column rule protects it.
    pub fn protection(&self, source: &SourceColumn) -> Option<ColumnStrategy> {
        self.protecting_rule(source).map(|r| r.strategy)
    }

    /// The column rule behind [`RequestMasking::protection`]: the first that matches, in
    /// configuration order. The schema view reports it, so both must stay this one lookup.
    pub fn protecting_rule(&self, source: &SourceColumn) -> Option<&super::ColumnRule> {
        let table = (source.table != "*").then_some(source.table.as_str());
        self.entries.iter().find_map(|e| {
            e.sql_rules().find(|r| {
                // An unresolved table ("*") cannot prove a `table.column` rule does not
                // apply: treat the column as matching when its name does.
                r.matches(table, &source.column)
                    || (table.is_none()
                        && r.column.contains('.')
                        && r.column
                            .rsplit('.')
                            .next()
                            .is_some_and(|c| crate::glob::matches(c, &source.column)))
            })
        })
    }

    /// Per output column, from the statement's lineage. `partial` and `hash` apply only to
    /// a stored value passed through unchanged: on anything derived from a protected column
    /// (`'00000' || substr(card, k, 4)` would give up four new digits per projection) or
    /// anything the agent could have chosen (a literal `UNION`ed into a hashed column turns
    /// the pseudonym into a dictionary oracle) they become `redact`.
    pub fn plan(&self, lineage: &Lineage) -> Vec<ColumnTreatment> {
        lineage
            .outputs
            .iter()
            .enumerate()
            .map(|(i, out)| (lineage.unchanged.get(i).copied().unwrap_or(false), out))
            .map(|(unchanged, out)| match out {
                _ if !self.has_column_rules() => ColumnTreatment::Scan,
                OutputLineage::Unknown => ColumnTreatment::Whole(ColumnStrategy::Redact),
                OutputLineage::Known(sources) => {
                    // The strongest strategy among the protected sources wins.
                    let mut best: Option<ColumnStrategy> = None;
                    for s in sources {
                        if let Some(st) = self.protection(s) {
                            best = Some(match (best, st) {
                                (Some(ColumnStrategy::Redact), _) | (_, ColumnStrategy::Redact) => {
                                    ColumnStrategy::Redact
                                }
                                (Some(ColumnStrategy::Hash), _) | (_, ColumnStrategy::Hash) => {
                                    ColumnStrategy::Hash
                                }
                                _ => ColumnStrategy::Partial,
                            });
                        }
                    }
                    match best {
                        None => ColumnTreatment::Scan,
                        Some(ColumnStrategy::Partial | ColumnStrategy::Hash) if !unchanged => {
                            ColumnTreatment::Whole(ColumnStrategy::Redact)
                        }
                        Some(strategy) => ColumnTreatment::Whole(strategy),
                    }
                }
            })
            .collect()
    }

    /// Masks free text (error messages, the statement kept in audit).
    pub fn text(&self, text: &str, counts: &mut MaskCounts) -> String {
        let mut out = text.to_string();
        for e in &self.entries {
            let masked = e.detectors.mask_into(&out, e.config.strategy, counts);
            if let std::borrow::Cow::Owned(m) = masked {
                out = m;
            }
        }
        out
    }

    /// Masks one row in place.
    pub fn row(
        &self,
        row: &mut [Value],
        names: &[String],
        plan: &[ColumnTreatment],
        counts: &mut MaskedCounts,
    ) {
        for (i, value) in row.iter_mut().enumerate() {
            let name = names.get(i).map(String::as_str).unwrap_or("");
            // A row wider than the plan is masked whole: unknown is protected.
            let treatment = plan.get(i).copied().unwrap_or(if self.has_column_rules() {
                ColumnTreatment::Whole(ColumnStrategy::Redact)
            } else {
                ColumnTreatment::Scan
            });
            match treatment {
                ColumnTreatment::Whole(strategy) => {
                    if value.is_null() {
                        continue;
                    }
                    let clear = match &mut *value {
                        Value::String(s) => std::mem::take(s),
                        other => other.to_string(),
                    };
                    *value = Value::String(strategy.apply(&self.key, &clear));
                    *counts.columns.entry(name.to_string()).or_default() += 1;
                }
                ColumnTreatment::Scan => {
                    for e in &self.entries {
                        if let Value::String(s) = &mut *value {
                            let masked = e.detectors.mask_with_context(
                                name,
                                s,
                                e.config.strategy,
                                &mut counts.detectors,
                            );
                            if let std::borrow::Cow::Owned(m) = masked {
                                *s = m;
                            }
                        } else if !matches!(value, Value::Bool(_) | Value::Null) {
                            super::mask_json(
                                value,
                                &e.detectors,
                                e.config.strategy,
                                &mut counts.detectors,
                            );
                        }
                    }
                }
            }
        }
    }

    /// What applies to HTTP bodies, borrowed for one body.
    fn body_masking(&self) -> BodyMasking<'_> {
        BodyMasking {
            rules: self.entries.iter().flat_map(|e| &e.json_rules).collect(),
            detectors: self
                .entries
                .iter()
                .map(|e| (&*e.detectors, e.config.strategy))
                .collect(),
            key: &self.key,
            strict: self.strict(),
        }
    }

    /// Masks a JSON value from an HTTP body in place: JSON-path rules (counted under
    /// `counts.columns` by path), then content detectors over strings, long numbers and
    /// object keys (`counts.detectors`). SQL column rules do not apply.
    pub fn json(&self, value: &mut Value, counts: &mut MaskedCounts) {
        self.body_masking().value(value, counts);
    }

    /// Masks an HTTP body by its content type (see [`BodyMasking::body`]): JSON and NDJSON
    /// are parsed and masked, other text goes through the detectors, what cannot be masked
    /// with certainty is withheld. Used for responses with the requester's masking, and for
    /// request bodies kept in audit with [`Masking::for_record`]'s.
    pub fn body(
        &self,
        content_type: Option<&str>,
        body: &[u8],
        counts: &mut MaskedCounts,
    ) -> MaskedBody {
        self.body_masking().body(content_type, body, counts)
    }

    /// A body as audit keeps it: masked as [`RequestMasking::body`] does, as text (a body
    /// that is not UTF-8 is never stored, even where nothing masks bodies).
    pub fn body_for_audit(
        &self,
        content_type: Option<&str>,
        body: &[u8],
        counts: &mut MaskedCounts,
    ) -> String {
        let masked = self.body(content_type, body, counts);
        String::from_utf8(masked.bytes).unwrap_or_else(|e| {
            format!(
                "[body withheld: {} bytes, not UTF-8 text]",
                e.as_bytes().len()
            )
        })
    }

    /// The masker chain for one byte stream (stdout, stderr, a terminal).
    pub fn stream_chain(&self) -> MaskerChain {
        MaskerChain(
            self.entries
                .iter()
                .map(|e| super::StreamMasker::new(e.detectors.clone(), e.config.strategy))
                .collect(),
        )
    }
}

/// Every applicable `[[masking]]` entry's streaming masker, applied in order over one byte
/// stream. Bytes a masker holds back (a secret may continue in the next chunk) come out of
/// the next `push` or of `flush`, masked.
pub struct MaskerChain(Vec<super::StreamMasker>);

impl MaskerChain {
    pub fn push(&mut self, mut bytes: Vec<u8>) -> Vec<u8> {
        for m in &mut self.0 {
            bytes = m.push(&bytes);
        }
        bytes
    }

    /// Everything still held back, masked. Each masker's tail passes the maskers after it.
    pub fn flush(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        for m in &mut self.0 {
            let mut chunk = m.push(&out);
            chunk.extend(m.flush());
            out = chunk;
        }
        out
    }

    /// Adds this chain's detector counts to `into`.
    pub fn count_into(&self, into: &mut MaskedCounts) {
        for m in &self.0 {
            into.detectors.merge(m.counts());
        }
    }
}
