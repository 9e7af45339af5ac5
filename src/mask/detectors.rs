//! Content detectors: find sensitive values in free text and mask them.
//!
//! What must stay true:
//! - Whether a candidate exists at a position is a pure function of a bounded window of
//!   bytes around that position: at most [`LOOKBEHIND`] bytes before it and the detector's
//!   own maximum length after it. It never depends on where an earlier match ended. This is
//!   what lets [`super::stream::StreamMasker`] cut a stream at a "quiet" point and still
//!   produce byte for byte the one-shot output.
//! - A matcher that would need a byte past the end of a buffer that is not final says so
//!   (`Short`) instead of guessing; the stream holds that candidate back until it knows.
//! - Overlapping candidates are resolved by detector priority, then leftmost, then longest.
//!   The decision for a candidate depends only on the candidates it overlaps, directly or
//!   through a chain.
//! - Built-in matches start and end on ASCII bytes, so masking a `&str` never splits a
//!   character. Custom patterns are compiled as `&str` regexes first, which refuses any
//!   pattern able to match part of a character.
//! - Detectors mask with `Redact` or `Partial` only: a keyed hash of a value the agent can
//!   guess (a card number, an email) would let it confirm guesses, so [`DetectorStrategy`]
//!   has no hash variant. Hashing exists only for column rules (`super::ColumnStrategy`).
//! - Text costs one pass with one table load per byte: the table, indexed by (previous
//!   byte, byte), marks only starts (a digit run, a word starting like a literal trigger,
//!   `@`, `+`, `(`, a colon next to an address or scheme character). Validators run only
//!   there.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::net::Ipv6Addr;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use serde::{Deserialize, Serialize};

use super::CustomDetector;

/// Bytes of already-seen text a detector may look at before a candidate (keyword windows,
/// backward runs of an email local part or a URL scheme). A stream keeps this much emitted
/// text as context. Must exceed every backward look below (checked by a test).
pub const LOOKBEHIND: usize = 256;
/// Longest PEM private key block recognised (BEGIN through END). An RSA-8192 key in
/// PKCS#8 PEM is about 6.3 KiB; 16 KiB leaves room for encrypted forms and headers. A BEGIN
/// line with no END within this bound is masked through its base64 body lines, capped here.
pub const MAX_PEM: usize = 16 * 1024;
/// Longest JWT recognised; longer runs are not treated as tokens.
pub const MAX_JWT: usize = 8 * 1024;
/// A custom pattern's match longer than this is masked in pieces of at most this size
/// (so that a stream never has to hold more than this for one match).
pub const MAX_CUSTOM_MATCH: usize = 4 * 1024;
/// Upper bound of what any built-in or custom detector makes a stream hold back.
/// (A PEM block's END line may extend a little past [`MAX_PEM`].)
pub const MAX_HOLD: usize = MAX_PEM + 64;

const MAX_LOCAL: usize = 64;
const MAX_DOMAIN: usize = 253;
const MAX_SCHEME: usize = 32;
const MAX_AUTHORITY: usize = 512;
const MAX_IPV6: usize = 45;
const MAX_BEARER: usize = 2048;
const MAX_BASIC: usize = 1024;
/// A 40-character AWS secret must start within this many bytes after `aws`/`secret`.
const AWS_KEYWORD_WINDOW: usize = 96;
/// A bare 9-digit SSN needs `ssn` / `social security` within this many bytes before it.
const SSN_KEYWORD_WINDOW: usize = 40;
/// Largest compiled program for a custom pattern (regex `size_limit`).
pub const CUSTOM_SIZE_LIMIT: usize = 1 << 20;
/// Lazy-DFA cache per custom pattern.
const CUSTOM_DFA_LIMIT: usize = 2 << 20;
/// Longest custom pattern source accepted.
const CUSTOM_PATTERN_MAX: usize = 4096;
/// Characters kept visible by `Partial` (only when the value has more than twice as many).
const PARTIAL_KEEP: usize = 4;

/// How a detector's finding is shown to the agent. No hash variant on purpose: see the
/// module invariants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectorStrategy {
    /// Replace the value with the detector's label, e.g. `[EMAIL]`.
    #[default]
    Redact,
    /// Keep separators and the last 4 letters/digits when the value has more than 8 of them
    /// (`**** **** **** 1111`, `***-**-6789`); shorter values are fully starred.
    /// Credentials (keys, tokens, passwords, JWTs) are always redacted with their label:
    /// a visible tail of a secret helps nobody reading data and shortens a guess.
    Partial,
}

/// The built-in detectors, declared in priority order (earlier wins an overlap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Builtin {
    PrivateKey = 0,
    Jwt,
    UrlPassword,
    Token,
    AwsAccessKeyId,
    AwsSecretKey,
    Iban,
    Card,
    Email,
    Ssn,
    Phone,
    Ipv6,
    Ipv4,
}

const N_BUILTIN: usize = 13;

impl Builtin {
    /// Every built-in, highest priority first. Custom detectors rank between
    /// `AwsSecretKey` and `Iban`.
    pub const ALL: [Builtin; N_BUILTIN] = [
        Builtin::PrivateKey,
        Builtin::Jwt,
        Builtin::UrlPassword,
        Builtin::Token,
        Builtin::AwsAccessKeyId,
        Builtin::AwsSecretKey,
        Builtin::Iban,
        Builtin::Card,
        Builtin::Email,
        Builtin::Ssn,
        Builtin::Phone,
        Builtin::Ipv6,
        Builtin::Ipv4,
    ];

    /// Stable id used in configuration, counts and audit records.
    pub fn id(self) -> &'static str {
        match self {
            Builtin::PrivateKey => "private_key",
            Builtin::Jwt => "jwt",
            Builtin::UrlPassword => "url_password",
            Builtin::Token => "token",
            Builtin::AwsAccessKeyId => "aws_access_key_id",
            Builtin::AwsSecretKey => "aws_secret_key",
            Builtin::Iban => "iban",
            Builtin::Card => "card",
            Builtin::Email => "email",
            Builtin::Ssn => "ssn",
            Builtin::Phone => "phone",
            Builtin::Ipv6 => "ipv6",
            Builtin::Ipv4 => "ipv4",
        }
    }

    /// What replaces the value under `Redact`.
    pub fn label(self) -> &'static str {
        match self {
            Builtin::PrivateKey => "[PRIVATE_KEY]",
            Builtin::Jwt => "[JWT]",
            Builtin::UrlPassword => "[PASSWORD]",
            Builtin::Token => "[TOKEN]",
            Builtin::AwsAccessKeyId => "[AWS_KEY]",
            Builtin::AwsSecretKey => "[AWS_SECRET]",
            Builtin::Iban => "[IBAN]",
            Builtin::Card => "[CARD]",
            Builtin::Email => "[EMAIL]",
            Builtin::Ssn => "[SSN]",
            Builtin::Phone => "[PHONE]",
            Builtin::Ipv6 | Builtin::Ipv4 => "[IP]",
        }
    }

    /// Credentials are always redacted with their label, whatever the strategy.
    pub fn is_credential(self) -> bool {
        matches!(
            self,
            Builtin::PrivateKey
                | Builtin::Jwt
                | Builtin::UrlPassword
                | Builtin::Token
                | Builtin::AwsAccessKeyId
                | Builtin::AwsSecretKey
        )
    }

    pub fn from_id(id: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.id() == id)
    }
}

/// A refused detector configuration; names the detector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("detector `{detector}`: {message}")]
pub struct DetectorError {
    pub detector: String,
    pub message: String,
}

fn derr(detector: &str, message: impl Into<String>) -> DetectorError {
    DetectorError {
        detector: detector.to_string(),
        message: message.into(),
    }
}

/// One masked region of a text. `start..end` is what gets replaced: for `url_password`
/// only the password, for `Bearer`/`Basic` tokens only the credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding<'s> {
    pub start: usize,
    pub end: usize,
    pub detector: &'s str,
    pub label: &'s str,
}

/// How many values each detector masked: detector id → count. Serialises as a JSON object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MaskCounts(BTreeMap<String, u64>);

impl MaskCounts {
    pub fn add(&mut self, detector: &str, n: u64) {
        if n == 0 {
            return;
        }
        // Look up before inserting: the common case (id already present) allocates nothing.
        if let Some(c) = self.0.get_mut(detector) {
            *c = c.saturating_add(n);
        } else {
            self.0.insert(detector.to_string(), n);
        }
    }

    pub fn get(&self, detector: &str) -> u64 {
        self.0.get(detector).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.0.values().fold(0u64, |a, b| a.saturating_add(*b))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn merge(&mut self, other: &MaskCounts) {
        for (k, v) in &other.0 {
            self.add(k, *v);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

#[derive(Debug)]
enum Matcher {
    Builtin(Builtin),
    Custom(regex::bytes::Regex),
}

#[derive(Debug)]
struct Detector {
    id: String,
    label: String,
    matcher: Matcher,
}

impl Detector {
    fn credential(&self) -> bool {
        matches!(self.matcher, Matcher::Builtin(b) if b.is_credential())
    }
}

/// A validated candidate. `span..end` is the evidence that must not be cut by a stream
/// (e.g. `scheme://user:` before a password); `start..end` is what is masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cand {
    pub(crate) span: usize,
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// Index into the set's detectors, which are in priority order.
    pub(crate) det: u16,
}

/// The enabled detectors, ready to scan. Cheap to share (`Arc`); scanning takes `&self`.
#[derive(Debug)]
pub struct DetectorSet {
    detectors: Vec<Detector>,
    /// Rank (index into `detectors`) of each enabled built-in.
    rank: [Option<u16>; N_BUILTIN],
    customs: Vec<u16>,
}

#[derive(Debug, Clone, Copy)]
enum BodyClass {
    /// `[A-Za-z0-9]`
    Alnum,
    /// `[A-Za-z0-9_]`
    Word,
    /// `[A-Za-z0-9_-]`
    WordDash,
    /// `[A-Za-z0-9-]`
    AlnumDash,
}

impl BodyClass {
    fn has(self, c: u8) -> bool {
        match self {
            BodyClass::Alnum => c.is_ascii_alphanumeric(),
            BodyClass::Word => c.is_ascii_alphanumeric() || c == b'_',
            BodyClass::WordDash => c.is_ascii_alphanumeric() || c == b'_' || c == b'-',
            BodyClass::AlnumDash => c.is_ascii_alphanumeric() || c == b'-',
        }
    }
}

/// A vendor token: exact prefix, then a body of `min..=max` characters of one class.
struct Prefixed {
    prefix: &'static [u8],
    class: BodyClass,
    min: usize,
    max: usize,
    need_digit: bool,
}

const fn pre(
    prefix: &'static [u8],
    class: BodyClass,
    min: usize,
    max: usize,
    need_digit: bool,
) -> Prefixed {
    Prefixed {
        prefix,
        class,
        min,
        max,
        need_digit,
    }
}

/// Vendor token formats (documented public prefixes).
const PREFIXED: &[Prefixed] = &[
    // GitHub: personal, OAuth, user-to-server, server-to-server, refresh.
    pre(b"ghp_", BodyClass::Alnum, 30, 251, false),
    pre(b"gho_", BodyClass::Alnum, 30, 251, false),
    pre(b"ghu_", BodyClass::Alnum, 30, 251, false),
    pre(b"ghs_", BodyClass::Alnum, 30, 251, false),
    pre(b"ghr_", BodyClass::Alnum, 30, 251, false),
    pre(b"github_pat_", BodyClass::Word, 22, 255, false),
    pre(b"glpat-", BodyClass::WordDash, 20, 64, false),
    // Slack bot, user, app-level, refresh tokens.
    pre(b"xoxa-", BodyClass::AlnumDash, 10, 255, true),
    pre(b"xoxb-", BodyClass::AlnumDash, 10, 255, true),
    pre(b"xoxp-", BodyClass::AlnumDash, 10, 255, true),
    pre(b"xoxo-", BodyClass::AlnumDash, 10, 255, true),
    pre(b"xoxs-", BodyClass::AlnumDash, 10, 255, true),
    pre(b"xoxr-", BodyClass::AlnumDash, 10, 255, true),
    // Stripe live secret and restricted keys.
    pre(b"sk_live_", BodyClass::Alnum, 16, 255, false),
    pre(b"rk_live_", BodyClass::Alnum, 16, 255, false),
    // Google API key: exactly 39 characters.
    pre(b"AIza", BodyClass::WordDash, 35, 35, false),
    // Anthropic and OpenAI project keys.
    pre(b"sk-ant-", BodyClass::WordDash, 20, 255, false),
    pre(b"sk-proj-", BodyClass::WordDash, 20, 255, false),
    // npm automation/publish tokens.
    pre(b"npm_", BodyClass::Alnum, 36, 36, false),
];

const AWS_PREFIXES: [&[u8; 4]; 8] = [
    b"AKIA", b"ASIA", b"AGPA", b"AIDA", b"AROA", b"ANPA", b"ANVA", b"AIPA",
];

/// Base64 that accepts padded and unpadded input (JWT segments are unpadded; some
/// producers pad anyway).
const B64URL_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const B64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Compiles a custom pattern with the limits every custom detector gets. Refuses patterns
/// that do not compile, exceed the size limit, can match partial UTF-8 characters, or can
/// match the empty string (a zero-width match would mask nothing and flag everything).
pub(crate) fn compile_custom(pattern: &str) -> Result<regex::bytes::Regex, String> {
    if pattern.is_empty() {
        return Err("the pattern is empty".into());
    }
    if pattern.len() > CUSTOM_PATTERN_MAX {
        return Err(format!(
            "the pattern is longer than {CUSTOM_PATTERN_MAX} bytes"
        ));
    }
    // The `&str` flavour refuses patterns that could match invalid UTF-8, so matches on
    // text always fall on character boundaries.
    let text_re = regex::RegexBuilder::new(pattern)
        .size_limit(CUSTOM_SIZE_LIMIT)
        .dfa_size_limit(CUSTOM_DFA_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(limit) => {
                format!("the compiled pattern exceeds the size limit ({limit} bytes); simplify it")
            }
            other => format!("does not compile: {other}"),
        })?;
    // Probes for empty matches, including ones conditioned on assertions (`^`, `$`, `\b`).
    const PROBES: [&str; 9] = ["", "a", "0", " ", "a b", "\n", "-", "é", "a\nb"];
    for probe in PROBES {
        if text_re.find_iter(probe).any(|m| m.is_empty()) {
            return Err("the pattern can match the empty string".into());
        }
    }
    regex::bytes::RegexBuilder::new(pattern)
        .size_limit(CUSTOM_SIZE_LIMIT)
        .dfa_size_limit(CUSTOM_DFA_LIMIT)
        .build()
        .map_err(|e| format!("does not compile: {e}"))
}

/// Checks a custom detector as a whole (id, pattern, label). Shared with config validation.
pub(crate) fn check_custom(c: &CustomDetector) -> Result<regex::bytes::Regex, (String, String)> {
    let id_ok = !c.id.is_empty()
        && c.id.len() <= 64
        && c.id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if !id_ok {
        return Err((
            "id".into(),
            format!(
                "`{}` must be 1-64 characters of letters, digits, `-`, `_`, `.`",
                c.id
            ),
        ));
    }
    if c.id == "all" || Builtin::from_id(&c.id).is_some() {
        return Err((
            "id".into(),
            format!("`{}` is the id of a built-in detector", c.id),
        ));
    }
    if c.label.is_empty() || c.label.chars().count() > 64 || c.label.chars().any(char::is_control) {
        return Err(("label".into(), "must be 1-64 printable characters".into()));
    }
    compile_custom(&c.pattern).map_err(|m| ("pattern".to_string(), m))
}

impl DetectorSet {
    /// Builds a set from enabled ids (built-in ids or `"all"`; naming a custom id is allowed
    /// and redundant) and custom detectors, which are always enabled. Errors name the
    /// detector.
    pub fn new<S: AsRef<str>>(
        enabled: &[S],
        custom: &[CustomDetector],
    ) -> Result<DetectorSet, DetectorError> {
        let mut want = [false; N_BUILTIN];
        for id in enabled {
            let id = id.as_ref();
            if id == "all" {
                want = [true; N_BUILTIN];
            } else if let Some(b) = Builtin::from_id(id) {
                want[b as usize] = true;
            } else if !custom.iter().any(|c| c.id == id) {
                return Err(derr(id, "unknown detector id"));
            }
        }
        let mut seen = HashSet::new();
        let mut compiled = Vec::with_capacity(custom.len());
        for c in custom {
            let re = check_custom(c).map_err(|(key, m)| derr(&c.id, format!("{key}: {m}")))?;
            if !seen.insert(c.id.as_str()) {
                return Err(derr(&c.id, "defined twice"));
            }
            compiled.push(Detector {
                id: c.id.clone(),
                label: c.label.clone(),
                matcher: Matcher::Custom(re),
            });
        }

        let mut detectors = Vec::new();
        let mut rank = [None; N_BUILTIN];
        let mut customs = Vec::new();
        let mut compiled = Some(compiled);
        for b in Builtin::ALL {
            if b == Builtin::Iban
                && let Some(list) = compiled.take()
            {
                for d in list {
                    customs.push(index16(detectors.len(), &d.id)?);
                    detectors.push(d);
                }
            }
            if want[b as usize] {
                rank[b as usize] = Some(index16(detectors.len(), b.id())?);
                detectors.push(Detector {
                    id: b.id().to_string(),
                    label: b.label().to_string(),
                    matcher: Matcher::Builtin(b),
                });
            }
        }

        Ok(DetectorSet {
            detectors,
            rank,
            customs,
        })
    }

    /// Ids of the enabled detectors, highest priority first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.detectors.iter().map(|d| d.id.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.detectors.is_empty()
    }

    pub(crate) fn has_custom(&self) -> bool {
        !self.customs.is_empty()
    }

    fn on(&self, b: Builtin) -> Option<u16> {
        self.rank[b as usize]
    }

    /// Non-overlapping findings in `text`, by position.
    pub fn scan<'s>(&'s self, text: &str) -> Vec<Finding<'s>> {
        let mut cands = Vec::new();
        self.scan_view(text.as_bytes(), 0, true, &mut cands);
        resolve(&cands)
            .into_iter()
            .filter_map(|c| {
                let d = self.detectors.get(usize::from(c.det))?;
                Some(Finding {
                    start: c.start,
                    end: c.end,
                    detector: &d.id,
                    label: &d.label,
                })
            })
            .collect()
    }

    /// Masks `text`; borrowed when nothing was found.
    pub fn mask<'t>(
        &self,
        text: &'t str,
        strategy: DetectorStrategy,
    ) -> (Cow<'t, str>, MaskCounts) {
        let mut counts = MaskCounts::default();
        let out = self.mask_into(text, strategy, &mut counts);
        (out, counts)
    }

    /// Masks `text`, adding to `counts`.
    pub fn mask_into<'t>(
        &self,
        text: &'t str,
        strategy: DetectorStrategy,
        counts: &mut MaskCounts,
    ) -> Cow<'t, str> {
        match self.mask_view(text.as_bytes(), 0, strategy, counts) {
            None => Cow::Borrowed(text),
            Some(bytes) => Cow::Owned(bytes_to_string(bytes)),
        }
    }

    /// Masks `text` as if it followed `context` (a column name, a JSON key): keyword-gated
    /// detectors (`aws_secret_key`, bare 9-digit `ssn`) then see `aws_secret_access_key` or
    /// `ssn` even though the value itself does not contain it. Only the last 64 bytes of the
    /// context are used; nothing of it is returned.
    pub fn mask_with_context<'t>(
        &self,
        context: &str,
        text: &'t str,
        strategy: DetectorStrategy,
        counts: &mut MaskCounts,
    ) -> Cow<'t, str> {
        if context.is_empty() || !has_context_keyword(context.as_bytes()) {
            return self.mask_into(text, strategy, counts);
        }
        let ctx = context.as_bytes();
        let ctx = &ctx[ctx.len().saturating_sub(64)..];
        let mut view = Vec::with_capacity(ctx.len() + 2 + text.len());
        view.extend_from_slice(ctx);
        view.extend_from_slice(b": ");
        let from = view.len();
        view.extend_from_slice(text.as_bytes());
        match self.mask_view(&view, from, strategy, counts) {
            None => Cow::Borrowed(text),
            Some(bytes) => Cow::Owned(bytes_to_string(bytes)),
        }
    }

    /// Masks arbitrary bytes (invalid UTF-8 passes through untouched).
    pub fn mask_bytes<'t>(
        &self,
        bytes: &'t [u8],
        strategy: DetectorStrategy,
        counts: &mut MaskCounts,
    ) -> Cow<'t, [u8]> {
        match self.mask_view(bytes, 0, strategy, counts) {
            None => Cow::Borrowed(bytes),
            Some(out) => Cow::Owned(out),
        }
    }

    /// Masks `view[from..]` (everything before `from` is look-behind context only).
    /// `None` when nothing was found.
    fn mask_view(
        &self,
        view: &[u8],
        from: usize,
        strategy: DetectorStrategy,
        counts: &mut MaskCounts,
    ) -> Option<Vec<u8>> {
        if self.detectors.is_empty() {
            return None;
        }
        let mut cands = Vec::new();
        self.scan_view(view, from, true, &mut cands);
        if cands.is_empty() {
            return None;
        }
        let accepted = resolve(&cands);
        let mut out = Vec::with_capacity(view.len() - from + 16 * accepted.len());
        self.render(
            view,
            from,
            view.len(),
            &accepted,
            strategy,
            counts,
            &mut out,
        );
        Some(out)
    }

    /// Copies `b[lo..hi]` to `out`, replacing accepted candidates (sorted, non-overlapping,
    /// inside `lo..hi`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn render(
        &self,
        b: &[u8],
        lo: usize,
        hi: usize,
        accepted: &[Cand],
        strategy: DetectorStrategy,
        counts: &mut MaskCounts,
        out: &mut Vec<u8>,
    ) {
        let mut at = lo;
        for c in accepted {
            // Accepted candidates are sorted and disjoint; anything else cannot happen, and is
            // skipped rather than allowed to panic.
            if c.start < at || c.end > hi || c.start >= c.end {
                continue;
            }
            let Some(d) = self.detectors.get(usize::from(c.det)) else {
                continue;
            };
            out.extend_from_slice(&b[at..c.start]);
            match strategy {
                DetectorStrategy::Partial if !d.credential() => {
                    partial_into(&b[c.start..c.end], out)
                }
                _ => out.extend_from_slice(d.label.as_bytes()),
            }
            counts.add(&d.id, 1);
            at = c.end;
        }
        if at < hi {
            out.extend_from_slice(&b[at..hi]);
        }
    }

    /// Finds every validated candidate starting at or after `from` (bytes before `from`
    /// are look-behind context). With `eof == false`, returns the earliest position from
    /// which a candidate might still appear or grow once more bytes arrive (`usize::MAX`
    /// when none); with `eof == true` the end of `b` is the end of the text.
    pub(crate) fn scan_view(&self, b: &[u8], from: usize, eof: bool, out: &mut Vec<Cand>) -> usize {
        let mut s = Scan {
            set: self,
            v: View { b, eof },
            from,
            out,
            hold: usize::MAX,
        };
        if from >= b.len() {
            return s.hold;
        }
        s.triggers();
        s.customs();
        s.hold
    }
}

fn index16(i: usize, id: &str) -> Result<u16, DetectorError> {
    u16::try_from(i).map_err(|_| derr(id, "too many detectors"))
}

fn bytes_to_string(bytes: Vec<u8>) -> String {
    // Replacements are ASCII and cuts fall on character boundaries (module invariant), so
    // this is always valid; the lossy path only guards against a broken invariant.
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Overlap resolution: priority (detector rank), then leftmost, then longest. Returns the
/// accepted candidates sorted by position.
pub(crate) fn resolve(cands: &[Cand]) -> Vec<Cand> {
    let mut order: Vec<Cand> = cands.to_vec();
    order.sort_unstable_by(|a, b| {
        a.det
            .cmp(&b.det)
            .then(a.start.cmp(&b.start))
            .then(b.end.cmp(&a.end))
    });
    let mut taken: BTreeMap<usize, Cand> = BTreeMap::new();
    for c in order {
        if c.start >= c.end {
            continue;
        }
        // Accepted ranges are disjoint, so the one starting last before `c.end` is the only
        // one that can overlap `c`.
        if let Some((_, p)) = taken.range(..c.end).next_back()
            && p.end > c.start
        {
            continue;
        }
        taken.insert(c.start, c);
    }
    taken.into_values().collect()
}

/// Replaces letters and digits by `*`, keeping other characters, and keeps the last
/// [`PARTIAL_KEEP`] letters/digits visible only when there are more than twice as many.
pub(crate) fn partial_into(value: &[u8], out: &mut Vec<u8>) {
    let s = String::from_utf8_lossy(value);
    let n = s.chars().filter(|c| c.is_alphanumeric()).count();
    let keep = if n > 2 * PARTIAL_KEEP {
        PARTIAL_KEEP
    } else {
        0
    };
    let mut seen = 0usize;
    let mut buf = [0u8; 4];
    for ch in s.chars() {
        if ch.is_alphanumeric() {
            seen += 1;
            if seen > n - keep {
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            } else {
                out.push(b'*');
            }
        } else {
            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        }
    }
}

/// Whether a context string (column name, JSON key) could gate a keyword detector.
fn has_context_keyword(ctx: &[u8]) -> bool {
    contains_ci(ctx, b"aws") || contains_ci(ctx, b"secret") || has_ssn_keyword(ctx)
}

fn has_ssn_keyword(w: &[u8]) -> bool {
    contains_ci(w, b"ssn")
        || contains_ci(w, b"social security")
        || contains_ci(w, b"social_security")
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    needle.len() <= hay.len()
        && hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

// ---------------------------------------------------------------------------------------
// Scanning

/// The bytes being scanned and whether their end is the end of the text.
#[derive(Clone, Copy)]
struct View<'a> {
    b: &'a [u8],
    eof: bool,
}

/// A matcher needed a byte past the end of a buffer that is not final.
#[derive(Clone, Copy)]
struct Short;

type Step<T> = Result<T, Short>;

impl View<'_> {
    /// The byte at `i`; `None` past the end of a final text; `Short` past the end of a
    /// buffer that will grow.
    #[inline]
    fn get(&self, i: usize) -> Step<Option<u8>> {
        match self.b.get(i) {
            Some(&c) => Ok(Some(c)),
            None if self.eof => Ok(None),
            None => Err(Short),
        }
    }

    #[inline]
    fn prev(&self, i: usize) -> Option<u8> {
        i.checked_sub(1).and_then(|j| self.b.get(j).copied())
    }

    /// End of the run of `class` bytes starting at `i`; `None` when it is longer than `max`.
    fn run_end(&self, i: usize, max: usize, class: impl Fn(u8) -> bool) -> Step<Option<usize>> {
        let mut j = i;
        loop {
            match self.get(j)? {
                Some(c) if class(c) => {
                    j += 1;
                    if j - i > max {
                        return Ok(None);
                    }
                }
                _ => return Ok(Some(j)),
            }
        }
    }
}

#[inline]
fn is_word(c: Option<u8>) -> bool {
    matches!(c, Some(x) if x.is_ascii_alphanumeric() || x == b'_')
}

#[inline]
fn is_digit(c: Option<u8>) -> bool {
    matches!(c, Some(x) if x.is_ascii_digit())
}

/// Events of the trigger pass, looked up by (previous byte, byte) so that only starts are
/// events: the first digit of a run, a word starting with a letter some literal starts
/// with, a colon next to an address or scheme character... Everything else costs one table
/// load per byte.
const EV_DIGIT: u8 = 1;
const EV_PLUS: u8 = 2;
const EV_PAREN: u8 = 3;
const EV_AT: u8 = 4;
const EV_COLON: u8 = 5;
const EV_LETTER: u8 = 6;

const fn pair_event(p: u8, c: u8) -> u8 {
    let p_alnum = p.is_ascii_alphanumeric();
    match c {
        b'0'..=b'9' if !p.is_ascii_digit() => EV_DIGIT,
        // `"key": value` has no address or scheme character before the colon. `::1` and
        // `[::1]` are still events through their second colon.
        b':' if p_alnum || p == b':' => EV_COLON,
        b'@' => EV_AT,
        b'+' if !p_alnum => EV_PLUS,
        b'(' => EV_PAREN,
        // First letters of literal triggers, at the start of a word or identifier part
        // (`_` counts as a separator: `aws_secret`, `client_secret`), and `Secret` after a
        // lower-case letter (`clientSecret`).
        b'e' | b'A' | b'a' | b'g' | b'x' | b's' | b'r' | b'n' | b'B' | b'b' if !p_alnum => {
            EV_LETTER
        }
        b'S' if !p_alnum || p.is_ascii_lowercase() => EV_LETTER,
        // `-----END `.
        b'E' if p == b'-' => EV_LETTER,
        _ => 0,
    }
}

static PAIRS: [u8; 65536] = {
    let mut t = [0u8; 65536];
    let mut i = 0;
    while i < 65536 {
        t[i] = pair_event((i >> 8) as u8, (i & 0xFF) as u8);
        i += 1;
    }
    t
};

/// A match: `span..end` is the evidence, `start..end` what is masked.
struct Hit {
    span: usize,
    start: usize,
    end: usize,
}

impl Hit {
    fn whole(start: usize, end: usize) -> Hit {
        Hit {
            span: start,
            start,
            end,
        }
    }
}

/// PEM markers collected during the pass.
#[derive(Default)]
struct Pem {
    begins: Vec<usize>,
    ends: Vec<usize>,
}

struct Scan<'a, 'o> {
    set: &'a DetectorSet,
    v: View<'a>,
    from: usize,
    out: &'o mut Vec<Cand>,
    hold: usize,
}

impl Scan<'_, '_> {
    /// Records a matcher's outcome. `earliest` is the earliest position the candidate could
    /// start at; it is what a stream must hold back when the matcher ran short.
    fn take(&mut self, det: u16, r: Step<Option<Hit>>, earliest: usize) {
        match r {
            Ok(Some(h)) => {
                // Candidates starting in the look-behind were settled by whoever emitted it.
                if h.span >= self.from && h.start < h.end {
                    self.out.push(Cand {
                        span: h.span,
                        start: h.start,
                        end: h.end,
                        det,
                    });
                }
            }
            Ok(None) => {}
            Err(Short) => self.hold = self.hold.min(earliest.max(self.from)),
        }
    }

    /// The single pass over the bytes: dispatches each event to the matchers it may start.
    fn triggers(&mut self) {
        let set = self.set;
        let b = self.v.b;
        let n = b.len();
        let from = self.from;
        // Keywords gating AWS secrets may sit in the look-behind, up to a window before.
        let start = if set.on(Builtin::AwsSecretKey).is_some() {
            from.saturating_sub(AWS_KEYWORD_WINDOW + 8)
        } else {
            from
        };
        let mut prev = if start == 0 { b' ' } else { b[start - 1] };
        let mut pem = Pem::default();
        let mut v6_until = 0usize;
        for (i, &c) in b.iter().enumerate().skip(start) {
            let ev = PAIRS[(usize::from(prev) << 8) | usize::from(c)];
            prev = c;
            if ev == 0 {
                continue;
            }
            if i < from {
                if ev == EV_LETTER {
                    self.keyword(i);
                }
                continue;
            }
            match ev {
                EV_DIGIT => self.numeric(i),
                EV_PLUS => {
                    if let Some(det) = set.on(Builtin::Phone) {
                        let r = phone_intl(&self.v, i);
                        self.take(det, r, i);
                    }
                }
                EV_PAREN => {
                    if let Some(det) = set.on(Builtin::Phone)
                        && (matches!(b.get(i + 1), Some(d) if d.is_ascii_digit()) || i + 1 == n)
                    {
                        let r = phone_nanp(&self.v, i);
                        self.take(det, r, i);
                    }
                }
                EV_AT => {
                    if let Some(det) = set.on(Builtin::Email) {
                        let r = email_at(&self.v, i);
                        self.take(det, r, back_run(b, i, MAX_LOCAL, is_local));
                    }
                }
                EV_COLON => {
                    let scheme = matches!(b.get(i + 1..i + 3), Some(b"//"));
                    if let Some(det) = set.on(Builtin::UrlPassword)
                        && (scheme || i + 3 > n)
                    {
                        let r = url_password(&self.v, i);
                        self.take(det, r, back_run(b, i, MAX_SCHEME, is_scheme));
                    }
                    if let Some(det) = set.on(Builtin::Ipv6)
                        && i >= v6_until
                        && !scheme
                    {
                        match ipv6_at(&self.v, i) {
                            Ok((hit, until)) => {
                                v6_until = until;
                                self.take(det, Ok(hit), i);
                            }
                            Err(Short) => {
                                self.take(det, Err(Short), back_run(b, i, MAX_IPV6, is_v6))
                            }
                        }
                    }
                }
                EV_LETTER => self.letter(i, &mut pem),
                _ => {}
            }
        }
        self.pem_blocks(pem);
    }

    /// A word starting with a letter some literal trigger starts with.
    fn letter(&mut self, i: usize, pem: &mut Pem) {
        let set = self.set;
        let b = self.v.b;
        let rest = &b[i..];
        let dashes_before = i >= 5 && &b[i - 5..i] == b"-----";
        match b[i] {
            b'B' if dashes_before => {
                if rest.starts_with(b"BEGIN ") {
                    pem.begins.push(i - 5);
                }
                return;
            }
            b'E' => {
                if dashes_before && rest.starts_with(b"END ") {
                    pem.ends.push(i - 5);
                }
                return;
            }
            b'e' => {
                if rest.starts_with(b"eyJ")
                    && let Some(det) = set.on(Builtin::Jwt)
                {
                    let r = jwt(&self.v, i);
                    self.take(det, r, i);
                }
                return;
            }
            b'A' => {
                if let Some(det) = set.on(Builtin::AwsAccessKeyId)
                    && AWS_PREFIXES.iter().any(|p| rest.starts_with(*p))
                {
                    let r = aws_key_id(&self.v, i);
                    self.take(det, r, i);
                }
            }
            b'B' | b'b' => {
                if let Some(det) = set.on(Builtin::Token) {
                    let word =
                        |w: &[u8]| rest.len() >= w.len() && rest[..w.len()].eq_ignore_ascii_case(w);
                    if word(b"bearer ") {
                        let r = bearer(&self.v, i);
                        self.take(det, r, i);
                    } else if word(b"basic ") {
                        let r = basic(&self.v, i);
                        self.take(det, r, i);
                    }
                }
                return;
            }
            _ => {}
        }
        if let Some(det) = set.on(Builtin::Token) {
            for (k, p) in PREFIXED.iter().enumerate() {
                if p.prefix.first() == rest.first() && rest.starts_with(p.prefix) {
                    let r = prefixed(&self.v, i, k);
                    self.take(det, r, i);
                }
            }
        }
        self.keyword(i);
    }

    /// `aws` / `secret` (lower, Title or UPPER case) at `i`: look for a secret after it.
    fn keyword(&mut self, i: usize) {
        let Some(det) = self.set.on(Builtin::AwsSecretKey) else {
            return;
        };
        let rest = &self.v.b[i..];
        for kw in [&b"aws"[..], b"Aws", b"AWS", b"secret", b"Secret", b"SECRET"] {
            if rest.starts_with(kw) {
                self.aws_secrets(det, i + kw.len());
                return;
            }
        }
    }

    /// PEM blocks, matched once every END marker of the buffer is known: each BEGIN finds
    /// its END by binary search instead of rescanning up to [`MAX_PEM`] bytes.
    fn pem_blocks(&mut self, mut pem: Pem) {
        let Some(det) = self.set.on(Builtin::PrivateKey) else {
            return;
        };
        if pem.begins.is_empty() {
            return;
        }
        pem.ends.sort_unstable();
        // Valid END markers (or ones cut by the end of the buffer), checked once each.
        let ends: Vec<(usize, Step<usize>)> = pem
            .ends
            .into_iter()
            .filter_map(|i| match pem_end(&self.v, i) {
                Ok(Some(e)) => Some((i, Ok(e))),
                Ok(None) => None,
                Err(Short) => Some((i, Err(Short))),
            })
            .collect();
        // A BEGIN inside an already matched block would lose the overlap to it (same
        // detector, further right); skipping it keeps repeated headers linear.
        let mut covered = 0;
        for s in pem.begins {
            if s < covered {
                continue;
            }
            let r = private_key(&self.v, s, &ends);
            if let Ok(Some(h)) = &r {
                covered = h.end;
            }
            self.take(det, r, s);
        }
    }

    /// 40-character AWS secret keys within [`AWS_KEYWORD_WINDOW`] bytes after `aws` or
    /// `secret` (lower, Title or UPPER case, at the start of a word or identifier part). The keyword keeps arbitrary 40-character strings (git SHAs,
    /// hashes) from matching; mixed case keeps hex digests out even near the keyword.
    fn aws_secrets(&mut self, det: u16, ke: usize) {
        let r = aws_secret_window(&self.v, ke);
        match r {
            Ok(found) => {
                for (s, e) in found {
                    self.take(det, Ok(Some(Hit::whole(s, e))), s);
                }
            }
            // A secret could start anywhere after the keyword.
            Err(Short) => self.hold = self.hold.min(ke.max(self.from)),
        }
    }

    /// Candidates at the start `s` of a digit run.
    fn numeric(&mut self, s: usize) {
        let set = self.set;
        let b = self.v.b;
        let n = b.len();
        let mut j = s;
        while j < n && b[j].is_ascii_digit() {
            j += 1;
        }
        let d = j - s;
        let next = b.get(j).copied();
        // At the end of a growing buffer the shape is unknown: let every matcher decide
        // (they report `Short`).
        let open = next.is_none() && !self.v.eof;
        let letters_before =
            s >= 2 && b[s - 2].is_ascii_alphabetic() && b[s - 1].is_ascii_alphabetic();
        // Fast exit for the common short numbers (ids, amounts, date parts): nothing below
        // can start with fewer than 9 digits unless a separator follows.
        if !open && d < 9 && !letters_before && !matches!(next, Some(b' ' | b'-' | b'.')) {
            return;
        }
        // A grouped card needs a second group of at least four digits (dates do not).
        let grouped = d == 4
            && matches!(next, Some(b' ' | b'-'))
            && (j + 1..j + 5).all(|k| matches!(b.get(k), Some(c) if c.is_ascii_digit()) || k >= n);
        if let Some(det) = set.on(Builtin::Card)
            && (open || d >= 13 || grouped)
        {
            let r = card(&self.v, s);
            self.take(det, r, s);
        }
        if let Some(det) = set.on(Builtin::Ssn)
            && (open || (d == 3 && next == Some(b'-')) || d == 9)
        {
            let r = ssn(&self.v, s);
            self.take(det, r, s);
        }
        if let Some(det) = set.on(Builtin::Phone)
            && (open
                || (d == 3 && matches!(next, Some(b'-' | b'.')))
                || (d == 1 && b[s] == b'1' && matches!(next, Some(b'-' | b'.' | b' '))))
        {
            let r = phone_nanp(&self.v, s);
            self.take(det, r, s);
        }
        if let Some(det) = set.on(Builtin::Ipv4)
            && (open || (d <= 3 && next == Some(b'.')))
        {
            let r = ipv4(&self.v, s);
            self.take(det, r, s);
        }
        if let Some(det) = set.on(Builtin::Iban)
            && letters_before
        {
            let r = iban(&self.v, s - 2);
            self.take(det, r, s - 2);
        }
    }

    fn customs(&mut self) {
        let set = self.set;
        let b = self.v.b;
        for &det in &set.customs {
            let Some(Detector {
                matcher: Matcher::Custom(re),
                ..
            }) = set.detectors.get(usize::from(det))
            else {
                continue;
            };
            let mut at = self.from;
            while at <= b.len() {
                let Some(m) = re.find_at(b, at) else {
                    break;
                };
                let (s, mut e) = (m.start(), m.end());
                if s >= e {
                    // Refused at startup; skip defensively so the loop always advances.
                    at = e + 1;
                    continue;
                }
                if e - s > MAX_CUSTOM_MATCH {
                    e = char_floor(b, s + MAX_CUSTOM_MATCH).max(s + 1);
                }
                self.take(det, Ok(Some(Hit::whole(s, e))), s);
                at = e;
            }
        }
    }
}

mod validators;
use validators::*;

#[cfg(test)]
#[path = "detectors_tests.rs"]
mod tests;
