//! Masking of HTTP API bodies: JSON-path column rules, content detectors over every JSON
//! string, object key and long number, and what happens to bodies that are not JSON.
//!
//! A column rule whose `column` starts with `$` is a JSON path over HTTP bodies. Supported:
//! the root `$`; `.name` and `['name']` / `["name"]` (with `\'`, `\"`, `\\` escapes);
//! `.*` and `[*]` (every member or element); `[N]` (array index from 0); recursive descent
//! `..name`, `..*`, `..['name']`, `..[N]` (that selector on the current node's children and
//! on every descendant's). Names match exactly, case-sensitively. Not supported (refused at
//! startup): filters, slices, unions, negative indexes, functions.
//!
//! What must stay true:
//! - Paths are parsed when the configuration is loaded; nothing here parses one per request.
//! - JSON-path rules see clear values (so `hash` gives the same pseudonym as a SQL column
//!   rule over the same value); content detectors never re-scan what a rule already masked.
//! - Where several rules reach one value, the strongest wins: redact > hash > partial.
//! - A body is never passed through unmasked because it could not be parsed: declared JSON
//!   that does not parse is masked as text, or withheld when JSON-path rules apply (they
//!   cannot be located in it); non-UTF-8 bodies are withheld (detectors cannot see inside
//!   compressed or binary formats).
//! - No recursion over input: values are walked with explicit stacks, and parsing keeps
//!   serde_json's nesting limit (128), so deeper documents take the unparsable path.

use std::borrow::Cow;

use serde_json::Value;

use super::plan::MaskedCounts;
use super::{COLUMN_REDACTED, ColumnStrategy, DetectorSet, DetectorStrategy};

/// Longest JSON path accepted, in steps: states are tracked as bits of a `u64`.
pub const MAX_PATH_STEPS: usize = 32;

/// The `counts.columns` key under which withheld bodies (or NDJSON lines) are counted.
pub const WITHHELD_COUNT_KEY: &str = "(withheld)";

/// A compiled JSON path (see the module documentation for the syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    /// `..`: the selector applies to the children of this node and of every descendant.
    descendant: bool,
    selector: Selector,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Selector {
    Name(String),
    Index(usize),
    Any,
}

/// How a node was reached from its parent.
#[derive(Debug, Clone, Copy)]
enum Edge<'a> {
    Key(&'a str),
    Index(usize),
}

impl Selector {
    fn matches(&self, edge: Edge<'_>) -> bool {
        match (self, edge) {
            (Selector::Any, _) => true,
            (Selector::Name(n), Edge::Key(k)) => n == k,
            (Selector::Index(i), Edge::Index(j)) => *i == j,
            _ => false,
        }
    }
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-' || (!c.is_ascii() && !c.is_whitespace())
}

type Chars<'a> = std::iter::Peekable<std::str::CharIndices<'a>>;

impl JsonPath {
    /// Parses a path; the error says what is wrong and at which byte offset.
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        let mut chars: Chars<'_> = text.char_indices().peekable();
        if chars.next().map(|(_, c)| c) != Some('$') {
            return Err("a JSON path starts with `$`".into());
        }
        let mut steps = Vec::new();
        while let Some((at, c)) = chars.next() {
            let step = match c {
                '.' => {
                    let descendant = chars.next_if(|&(_, c)| c == '.').is_some();
                    match chars.peek().copied() {
                        Some((_, '*')) => {
                            chars.next();
                            Step {
                                descendant,
                                selector: Selector::Any,
                            }
                        }
                        Some((_, '[')) if descendant => {
                            chars.next();
                            Step {
                                descendant,
                                selector: bracket(&mut chars, text.len())?,
                            }
                        }
                        Some((_, c)) if is_name_char(c) => {
                            let mut name = String::new();
                            while let Some((_, c)) = chars.next_if(|&(_, c)| is_name_char(c)) {
                                name.push(c);
                            }
                            Step {
                                descendant,
                                selector: Selector::Name(name),
                            }
                        }
                        _ => {
                            return Err(format!(
                                "expected a member name or `*` after `{}` at offset {at} (other names go in brackets: `['a b']`)",
                                if descendant { ".." } else { "." }
                            ));
                        }
                    }
                }
                '[' => Step {
                    descendant: false,
                    selector: bracket(&mut chars, text.len())?,
                },
                other => {
                    return Err(format!(
                        "unexpected `{other}` at offset {at}: expected `.`, `..` or `[`"
                    ));
                }
            };
            steps.push(step);
            if steps.len() > MAX_PATH_STEPS {
                return Err(format!("longer than {MAX_PATH_STEPS} steps"));
            }
        }
        Ok(JsonPath { steps })
    }

    /// The states at the root: nothing consumed yet.
    fn start(&self) -> u64 {
        1
    }

    /// Whether these states include "every step consumed": the node is selected.
    fn accepts(&self, states: u64) -> bool {
        states & (1u64 << self.steps.len()) != 0
    }

    /// The states at a child reached by `edge`, from the parent's. A selected node's
    /// children are not selected by the path itself (they inherit the rule instead).
    fn next(&self, states: u64, edge: Edge<'_>) -> u64 {
        let mut out = 0u64;
        for (i, step) in self.steps.iter().enumerate() {
            if states & (1u64 << i) == 0 {
                continue;
            }
            if step.descendant {
                out |= 1u64 << i;
            }
            if step.selector.matches(edge) {
                out |= 1u64 << (i + 1);
            }
        }
        out
    }
}

/// After `[`: `*]`, `N]` or a quoted name and `]`.
fn bracket(chars: &mut Chars<'_>, end: usize) -> Result<Selector, String> {
    let unsupported = |at: usize| {
        format!(
            "unsupported selector at offset {at}: use `[*]`, `[N]` or a quoted name `['name']` (filters, slices, unions and negative indexes are not supported)"
        )
    };
    let close = |chars: &mut Chars<'_>| match chars.next() {
        Some((_, ']')) => Ok(()),
        Some((at, _)) => Err(unsupported(at)),
        None => Err("unterminated `[`".to_string()),
    };
    match chars.next() {
        Some((_, '*')) => {
            close(chars)?;
            Ok(Selector::Any)
        }
        Some((at, c)) if c.is_ascii_digit() => {
            let mut digits = String::from(c);
            while let Some((_, d)) = chars.next_if(|&(_, d)| d.is_ascii_digit()) {
                digits.push(d);
            }
            let index = digits
                .parse::<usize>()
                .map_err(|_| format!("index too large at offset {at}"))?;
            close(chars)?;
            Ok(Selector::Index(index))
        }
        Some((at, quote @ ('\'' | '"'))) => {
            let mut name = String::new();
            loop {
                match chars.next() {
                    Some((_, c)) if c == quote => break,
                    Some((e, '\\')) => match chars.next() {
                        Some((_, c @ ('\'' | '"' | '\\' | '/'))) => name.push(c),
                        Some((_, 'n')) => name.push('\n'),
                        Some((_, 't')) => name.push('\t'),
                        Some((_, 'r')) => name.push('\r'),
                        _ => {
                            return Err(format!(
                                "unsupported escape at offset {e}: use \\', \\\", \\\\, \\/, \\n, \\t or \\r"
                            ));
                        }
                    },
                    Some((_, c)) => name.push(c),
                    None => return Err(format!("unterminated name starting at offset {at}")),
                }
            }
            close(chars)?;
            Ok(Selector::Name(name))
        }
        Some((at, _)) => Err(unsupported(at)),
        None => Err(unsupported(end)),
    }
}

/// One compiled JSON-path column rule.
#[derive(Debug, Clone)]
pub struct JsonRule {
    /// The path as configured: the key of `counts.columns`.
    pub path: String,
    pub compiled: JsonPath,
    pub strategy: ColumnStrategy,
}

impl JsonRule {
    pub fn new(path: &str, strategy: ColumnStrategy) -> Result<JsonRule, String> {
        Ok(JsonRule {
            path: path.to_string(),
            compiled: JsonPath::parse(path)?,
            strategy,
        })
    }
}

/// What [`BodyMasking::body`] did with a body, so the caller can label what it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyForm {
    /// Nothing masks HTTP bodies here (or the body is empty): the bytes are the input.
    Unchanged,
    /// Parsed as one JSON document, masked, re-serialised compactly.
    Json,
    /// Parsed line by line (NDJSON), each line masked and re-serialised.
    Ndjson,
    /// Masked as text by the content detectors.
    Text,
    /// Replaced by a note (`[body withheld: ...]`): the body is plain text now.
    Withheld,
}

/// A masked body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedBody {
    pub bytes: Vec<u8>,
    pub form: BodyForm,
}

impl MaskedBody {
    /// Whether the bytes are JSON (one document or NDJSON).
    pub fn is_json(&self) -> bool {
        matches!(self.form, BodyForm::Json | BodyForm::Ndjson)
    }
}

/// How a declared content type is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Declared {
    Json,
    Ndjson,
    Other,
}

fn declared(content_type: Option<&str>) -> Declared {
    let Some(ct) = content_type else {
        return Declared::Other;
    };
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines"
        | "application/jsonlines" => Declared::Ndjson,
        "application/json" | "text/json" => Declared::Json,
        m if m.ends_with("+json") => Declared::Json,
        _ => Declared::Other,
    }
}

/// Everything one request's masking applies to a body, borrowed from it.
pub struct BodyMasking<'a> {
    /// JSON-path rules, in configuration order.
    pub rules: Vec<&'a JsonRule>,
    /// Each applicable entry's content detectors and their strategy, in order.
    pub detectors: Vec<(&'a DetectorSet, DetectorStrategy)>,
    /// The pseudonym key (`hash`).
    pub key: &'a [u8],
    /// Some applicable entry is `strict`.
    pub strict: bool,
}

/// The stronger of two treatments: redact > hash > partial; on a tie the first stays.
fn stronger<'r>(
    a: Option<(ColumnStrategy, &'r str)>,
    b: (ColumnStrategy, &'r str),
) -> (ColumnStrategy, &'r str) {
    let rank = |s: ColumnStrategy| match s {
        ColumnStrategy::Redact => 2,
        ColumnStrategy::Hash => 1,
        ColumnStrategy::Partial => 0,
    };
    match a {
        Some(a) if rank(a.0) >= rank(b.0) => a,
        _ => b,
    }
}

fn count(counts: &mut MaskedCounts, key: &str) {
    if let Some(c) = counts.columns.get_mut(key) {
        *c = c.saturating_add(1);
    } else {
        counts.columns.insert(key.to_string(), 1);
    }
}

/// One node waiting to be visited.
struct Pending<'v, 'r> {
    /// The nearest object key above (detector context).
    ctx: &'v str,
    value: &'v mut Value,
    /// Per rule, its NFA states here; empty when no rule can select anything below.
    states: Vec<u64>,
    /// The strongest rule selecting an ancestor.
    inherited: Option<(ColumnStrategy, &'r str)>,
}

impl<'a> BodyMasking<'a> {
    fn detects(&self) -> bool {
        self.detectors.iter().any(|(d, _)| !d.is_empty())
    }

    /// Whether anything here acts on HTTP bodies (SQL column rules do not).
    pub fn is_active(&self) -> bool {
        !self.rules.is_empty() || self.detects()
    }

    /// Masks free text through every entry's detectors.
    pub fn text(&self, text: &str, counts: &mut MaskedCounts) -> String {
        let mut out = Cow::Borrowed(text);
        for (set, strategy) in &self.detectors {
            if let Cow::Owned(m) = set.mask_into(&out, *strategy, &mut counts.detectors) {
                out = Cow::Owned(m);
            }
        }
        out.into_owned()
    }

    /// Masks a JSON value in place: JSON-path rules first (over clear values and keys),
    /// then content detectors over every string and long number no rule reached, then
    /// over every object key.
    pub fn value(&self, value: &mut Value, counts: &mut MaskedCounts) {
        if !self.is_active() {
            return;
        }
        self.values(value, counts);
        if self.detects() {
            self.keys(value, counts);
        }
    }

    fn values(&self, root: &mut Value, counts: &mut MaskedCounts) {
        let start = if self.rules.is_empty() {
            Vec::new()
        } else {
            self.rules.iter().map(|r| r.compiled.start()).collect()
        };
        let mut stack = vec![Pending {
            ctx: "",
            value: root,
            states: start,
            inherited: None,
        }];
        while let Some(Pending {
            ctx,
            value,
            states,
            inherited,
        }) = stack.pop()
        {
            let mut treatment = inherited;
            for (rule, s) in self.rules.iter().zip(&states) {
                if rule.compiled.accepts(*s) {
                    treatment = Some(stronger(treatment, (rule.strategy, rule.path.as_str())));
                }
            }
            let next = |edge: Edge<'_>| -> Vec<u64> {
                if states.iter().all(|s| *s == 0) {
                    return Vec::new();
                }
                self.rules
                    .iter()
                    .zip(&states)
                    .map(|(r, s)| r.compiled.next(*s, edge))
                    .collect()
            };
            match (treatment, &mut *value) {
                // Null stays null under every strategy, as for SQL columns.
                (_, Value::Null) => {}
                // Redact replaces the node whole, an object or array included.
                (Some((ColumnStrategy::Redact, rule)), v) => {
                    *v = Value::String(COLUMN_REDACTED.to_string());
                    count(counts, rule);
                }
                (_, Value::Object(map)) => {
                    for (k, child) in map.iter_mut() {
                        let states = next(Edge::Key(k));
                        stack.push(Pending {
                            ctx: k.as_str(),
                            value: child,
                            states,
                            inherited: treatment,
                        });
                    }
                }
                (_, Value::Array(items)) => {
                    for (i, child) in items.iter_mut().enumerate() {
                        let states = next(Edge::Index(i));
                        stack.push(Pending {
                            ctx,
                            value: child,
                            states,
                            inherited: treatment,
                        });
                    }
                }
                (Some((strategy, rule)), leaf) => {
                    let masked = match leaf {
                        Value::String(s) => strategy.apply(self.key, s),
                        Value::Number(n) => strategy.apply(self.key, &n.to_string()),
                        // `partial` or `hash` of a two-valued field gives it away (by
                        // length, or by a token equal to a known one).
                        _ => COLUMN_REDACTED.to_string(),
                    };
                    *leaf = Value::String(masked);
                    count(counts, rule);
                }
                (None, leaf) => self.scan_leaf(ctx, leaf, counts),
            }
        }
    }

    /// Content detectors over one string or number, with its key as context.
    fn scan_leaf(&self, ctx: &str, leaf: &mut Value, counts: &mut MaskedCounts) {
        match leaf {
            Value::String(s) => {
                for (set, strategy) in &self.detectors {
                    if let Cow::Owned(m) =
                        set.mask_with_context(ctx, s, *strategy, &mut counts.detectors)
                    {
                        *s = m;
                    }
                }
            }
            Value::Number(n) => {
                let clear = n.to_string();
                // Nothing shorter than 8 characters can hold a finding a number could carry
                // (same bound as `mask_json`).
                if clear.len() < 8 {
                    return;
                }
                let mut text = Cow::Borrowed(clear.as_str());
                for (set, strategy) in &self.detectors {
                    if let Cow::Owned(m) =
                        set.mask_with_context(ctx, &text, *strategy, &mut counts.detectors)
                    {
                        text = Cow::Owned(m);
                    }
                }
                // The masked form is not a number any more.
                if let Cow::Owned(m) = text {
                    *leaf = Value::String(m);
                }
            }
            Value::Bool(_) | Value::Null | Value::Array(_) | Value::Object(_) => {}
        }
    }

    /// Content detectors over every object key (maps keyed by email exist). Keys that mask
    /// to the same text are kept apart by `~2`, `~3`... (see `mask_json`): no entry is lost.
    fn keys(&self, root: &mut Value, counts: &mut MaskedCounts) {
        let mut stack = vec![root];
        while let Some(v) = stack.pop() {
            match v {
                Value::Object(map) => {
                    for (set, strategy) in &self.detectors {
                        super::mask_keys(map, set, *strategy, &mut counts.detectors);
                    }
                    stack.extend(map.values_mut());
                }
                Value::Array(items) => stack.extend(items.iter_mut()),
                _ => {}
            }
        }
    }

    /// Masks an HTTP body (response, or request for audit) by its declared content type.
    ///
    /// - Nothing acting on bodies (no detectors, no JSON-path rules) or an empty body:
    ///   unchanged.
    /// - Declared JSON (`application/json`, `text/json`, `*+json`): parsed and masked; if it
    ///   does not parse as one document but every non-blank line does, as NDJSON. Otherwise
    ///   withheld when JSON-path rules apply (they cannot be located), else masked as text.
    /// - Declared NDJSON (`application/x-ndjson`, `application/jsonl`...): line by line; a
    ///   line that does not parse is masked as text, or replaced by a JSON string note when
    ///   JSON-path rules apply.
    /// - Anything else in UTF-8: parsed as JSON when it starts with `{` or `[` and parses
    ///   (an API mislabelling JSON still gets its path rules); otherwise masked as text,
    ///   or withheld when JSON-path rules apply and an entry is `strict`.
    /// - Not UTF-8: withheld (`[body withheld: N bytes, not UTF-8 text]`).
    ///
    /// Bodies are expected decoded (no `Content-Encoding`): compressed bytes are not UTF-8
    /// and would be withheld.
    pub fn body(
        &self,
        content_type: Option<&str>,
        body: &[u8],
        counts: &mut MaskedCounts,
    ) -> MaskedBody {
        let unchanged = || MaskedBody {
            bytes: body.to_vec(),
            form: BodyForm::Unchanged,
        };
        if !self.is_active() || body.iter().all(u8::is_ascii_whitespace) {
            return unchanged();
        }
        let Ok(text) = std::str::from_utf8(body) else {
            return withheld(format!("{} bytes, not UTF-8 text", body.len()), counts);
        };
        // serde_json refuses a byte order mark; it carries nothing.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        match declared(content_type) {
            Declared::Ndjson => MaskedBody {
                bytes: self.ndjson_lines(text, counts),
                form: BodyForm::Ndjson,
            },
            Declared::Json => self.json_text(text, counts).unwrap_or_else(|| {
                if self.rules.is_empty() {
                    self.as_text(text, counts)
                } else {
                    withheld(
                        format!(
                            "{} bytes declared JSON that do not parse (or nest deeper than 128); JSON-path masking cannot apply",
                            body.len()
                        ),
                        counts,
                    )
                }
            }),
            Declared::Other => {
                let sniffed = if text.trim_start().starts_with(['{', '[']) {
                    self.json_text(text, counts)
                } else {
                    None
                };
                sniffed.unwrap_or_else(|| {
                    if !self.rules.is_empty() && self.strict {
                        withheld(
                            format!(
                                "{} bytes that are not JSON; JSON-path masking cannot apply and masking is strict",
                                body.len()
                            ),
                            counts,
                        )
                    } else {
                        self.as_text(text, counts)
                    }
                })
            }
        }
    }

    fn as_text(&self, text: &str, counts: &mut MaskedCounts) -> MaskedBody {
        MaskedBody {
            bytes: self.text(text, counts).into_bytes(),
            form: BodyForm::Text,
        }
    }

    /// One JSON document, or failing that NDJSON where every non-blank line parses; `None`
    /// (and nothing counted) when neither parses.
    fn json_text(&self, text: &str, counts: &mut MaskedCounts) -> Option<MaskedBody> {
        if let Ok(mut v) = serde_json::from_str::<Value>(text) {
            self.value(&mut v, counts);
            return serialise(&v, counts).map(|bytes| MaskedBody {
                bytes,
                form: BodyForm::Json,
            });
        }
        // Parse every line before masking any, so that a failure counts nothing.
        let mut lines: Vec<Result<(Value, &str), &str>> = Vec::new();
        let mut documents = 0usize;
        for line in text.split('\n') {
            let (body, cr) = split_cr(line);
            if body.trim().is_empty() {
                lines.push(Err(line));
                continue;
            }
            let v = serde_json::from_str::<Value>(body).ok()?;
            documents += 1;
            lines.push(Ok((v, cr)));
        }
        if documents < 2 {
            return None;
        }
        let mut out = Vec::with_capacity(text.len());
        for (i, line) in lines.into_iter().enumerate() {
            if i > 0 {
                out.push(b'\n');
            }
            match line {
                Err(blank) => out.extend_from_slice(blank.as_bytes()),
                Ok((mut v, cr)) => {
                    self.value(&mut v, counts);
                    out.extend(serialise(&v, counts)?);
                    out.extend_from_slice(cr.as_bytes());
                }
            }
        }
        Some(MaskedBody {
            bytes: out,
            form: BodyForm::Ndjson,
        })
    }

    /// Declared NDJSON: each line on its own.
    fn ndjson_lines(&self, text: &str, counts: &mut MaskedCounts) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len());
        for (i, line) in text.split('\n').enumerate() {
            if i > 0 {
                out.push(b'\n');
            }
            let (body, cr) = split_cr(line);
            if body.trim().is_empty() {
                out.extend_from_slice(line.as_bytes());
                continue;
            }
            match serde_json::from_str::<Value>(body) {
                Ok(mut v) => {
                    self.value(&mut v, counts);
                    match serialise(&v, counts) {
                        Some(bytes) => out.extend(bytes),
                        None => out.extend_from_slice(b"\"[line withheld]\""),
                    }
                }
                Err(_) if !self.rules.is_empty() => {
                    count(counts, WITHHELD_COUNT_KEY);
                    out.extend_from_slice(
                        b"\"[line withheld: not JSON; JSON-path masking cannot apply]\"",
                    );
                }
                Err(_) => out.extend(self.text(body, counts).into_bytes()),
            }
            out.extend_from_slice(cr.as_bytes());
        }
        out
    }
}

/// A line without its `\r` (CRLF), and the `\r` to put back.
fn split_cr(line: &str) -> (&str, &str) {
    match line.strip_suffix('\r') {
        Some(body) => (body, "\r"),
        None => (line, ""),
    }
}

/// Compact JSON. Serialising a `Value` cannot fail (its keys are strings); should it, the
/// value is withheld rather than sent some other way.
fn serialise(v: &Value, counts: &mut MaskedCounts) -> Option<Vec<u8>> {
    match serde_json::to_vec(v) {
        Ok(bytes) => Some(bytes),
        Err(_) => {
            count(counts, WITHHELD_COUNT_KEY);
            None
        }
    }
}

fn withheld(why: String, counts: &mut MaskedCounts) -> MaskedBody {
    count(counts, WITHHELD_COUNT_KEY);
    MaskedBody {
        bytes: format!("[body withheld: {why}]").into_bytes(),
        form: BodyForm::Withheld,
    }
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;
