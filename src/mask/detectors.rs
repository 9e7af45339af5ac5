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

/// Start of the run of `class` bytes ending at `p` (exclusive), looking back at most `max`
/// bytes: the earliest position a backward-anchored candidate (email local part, URL scheme,
/// IPv6 run) can start at.
fn back_run(b: &[u8], p: usize, max: usize, class: fn(u8) -> bool) -> usize {
    let lo = p.saturating_sub(max + 1);
    let mut j = p;
    while j > lo && class(b[j - 1]) {
        j -= 1;
    }
    j
}

/// Largest char boundary ≤ `i` (for valid UTF-8; on other bytes, `i` unless it points at a
/// continuation byte).
fn char_floor(b: &[u8], mut i: usize) -> usize {
    let lo = i.saturating_sub(3);
    while i > lo && matches!(b.get(i), Some(c) if c & 0xC0 == 0x80) {
        i -= 1;
    }
    i
}

// ---------------------------------------------------------------------------------------
// Matchers. Each returns `Short` when it needs a byte the buffer does not have yet.

/// `-----BEGIN <label with PRIVATE KEY>-----` through the matching `-----END ...-----`, or,
/// when no END appears within [`MAX_PEM`], through the base64 body lines that follow.
fn private_key(v: &View, s: usize, ends: &[(usize, Step<usize>)]) -> Step<Option<Hit>> {
    let b = v.b;
    if !b[s..].starts_with(b"-----BEGIN ") {
        return Ok(None);
    }
    let ls = s + 11;
    let Some(le) = v.run_end(ls, 48, |c| {
        c.is_ascii_uppercase() || c.is_ascii_digit() || c == b' '
    })?
    else {
        return Ok(None);
    };
    if !b[ls..le].windows(11).any(|w| w == b"PRIVATE KEY") {
        return Ok(None);
    }
    for k in 0..5 {
        if v.get(le + k)? != Some(b'-') {
            return Ok(None);
        }
    }
    let body = le + 5;
    let limit = s + MAX_PEM;
    let avail = b.len().min(limit);
    // The first END marker after the header, if it lies within the bound.
    if let Some(&(i, r)) = ends.get(ends.partition_point(|(e, _)| *e < body))
        && i + 9 <= avail
    {
        let e = r?;
        return Ok(Some(Hit::whole(s, e)));
    }
    if avail < limit && !v.eof {
        // END may still come.
        return Err(Short);
    }
    // No END within the bound: mask the header and the body lines that follow it (a key
    // cut short by `head`, a log line limit...). Decided on bytes inside the bound only.
    let body_byte = |c: u8| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'+' | b'/' | b'=' | b' ' | b'\t' | b'\r' | b':' | b',' | b'-' | b'\\'
            )
    };
    let mut end = body;
    let mut j = body;
    loop {
        // `j` is at the start of a line (or right after the header).
        let line_end = b[j..avail]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(avail, |p| j + p);
        if !b[j..line_end].iter().all(|&c| body_byte(c)) {
            break;
        }
        end = line_end;
        if line_end >= avail {
            break;
        }
        j = line_end + 1;
    }
    Ok(Some(Hit::whole(s, end)))
}

/// `-----END <LABEL>-----` at `i`: the end of the marker.
fn pem_end(v: &View, i: usize) -> Step<Option<usize>> {
    if !v.b[i..].starts_with(b"-----END ") {
        return Ok(None);
    }
    let Some(ee) = v.run_end(i + 9, 48, |c| {
        c.is_ascii_uppercase() || c.is_ascii_digit() || c == b' '
    })?
    else {
        return Ok(None);
    };
    for k in 0..5 {
        if v.get(ee + k)? != Some(b'-') {
            return Ok(None);
        }
    }
    Ok(Some(ee + 5))
}

fn is_b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// Three (JWS) or five (JWE) base64url segments whose header decodes to a JSON object with
/// an `alg`.
fn jwt(v: &View, s: usize) -> Step<Option<Hit>> {
    let b = v.b;
    if !b[s..].starts_with(b"eyJ") {
        return Ok(None);
    }
    if matches!(v.prev(s), Some(c) if is_b64url(c) || c == b'.') {
        return Ok(None);
    }
    let Some(mut end) = v.run_end(s, MAX_JWT, |c| is_b64url(c) || c == b'.')? else {
        return Ok(None);
    };
    let mut dots = b[s..end].iter().filter(|&&c| c == b'.').count();
    // A sentence ending right after the token.
    if (dots == 3 || dots == 5) && b[end - 1] == b'.' {
        end -= 1;
        dots -= 1;
    }
    if dots != 2 && dots != 4 {
        return Ok(None);
    }
    let tok = &b[s..end];
    let mut segs = tok.split(|&c| c == b'.');
    let header = segs.next().unwrap_or_default();
    let payload = segs.next().unwrap_or_default();
    if header.len() < 10 || header.len() > 4096 || payload.is_empty() {
        return Ok(None);
    }
    let Ok(decoded) = B64URL_LENIENT.decode(header) else {
        return Ok(None);
    };
    let Ok(serde_json::Value::Object(h)) = serde_json::from_slice::<serde_json::Value>(&decoded)
    else {
        return Ok(None);
    };
    if !matches!(h.get("alg"), Some(serde_json::Value::String(_))) {
        return Ok(None);
    }
    Ok(Some(Hit::whole(s, end)))
}

/// `AKIA` (and the other documented prefixes) followed by 16 base32 characters.
fn aws_key_id(v: &View, s: usize) -> Step<Option<Hit>> {
    let b = v.b;
    if !AWS_PREFIXES.iter().any(|p| b[s..].starts_with(*p)) || is_word(v.prev(s)) {
        return Ok(None);
    }
    for k in 4..20 {
        match v.get(s + k)? {
            Some(c) if c.is_ascii_uppercase() || (b'2'..=b'7').contains(&c) => {}
            _ => return Ok(None),
        }
    }
    if is_word(v.get(s + 20)?) {
        return Ok(None);
    }
    Ok(Some(Hit::whole(s, s + 20)))
}

fn is_secret_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'/' || c == b'+'
}

/// Runs of exactly 40 base64 characters starting within the keyword window after `ke`.
fn aws_secret_window(v: &View, ke: usize) -> Step<Vec<(usize, usize)>> {
    let mut found = Vec::new();
    let last_start = ke + AWS_KEYWORD_WINDOW;
    let mut i = ke;
    while i <= last_start {
        let Some(c) = v.get(i)? else {
            break;
        };
        if !is_secret_char(c) || matches!(v.prev(i), Some(p) if is_secret_char(p)) {
            i += 1;
            continue;
        }
        match v.run_end(i, 40, is_secret_char)? {
            Some(e) => {
                if e - i == 40 && v.get(e)? != Some(b'=') && mixed_secret(&v.b[i..e]) {
                    found.push((i, e));
                }
                i = e;
            }
            // Longer than 40: not a secret key; the rest of the run starts nothing.
            None => i += 41,
        }
    }
    Ok(found)
}

/// Random base64 of this length essentially always mixes upper, lower and digits/`+/`;
/// hex digests do not.
fn mixed_secret(s: &[u8]) -> bool {
    s.iter().any(u8::is_ascii_uppercase)
        && s.iter().any(u8::is_ascii_lowercase)
        && s.iter()
            .any(|c| c.is_ascii_digit() || *c == b'/' || *c == b'+')
}

fn prefixed(v: &View, s: usize, idx: usize) -> Step<Option<Hit>> {
    let Some(p) = PREFIXED.get(idx) else {
        return Ok(None);
    };
    if !v.b[s..].starts_with(p.prefix) || is_word(v.prev(s)) {
        return Ok(None);
    }
    let bs = s + p.prefix.len();
    let Some(e) = v.run_end(bs, p.max, |c| p.class.has(c))? else {
        return Ok(None);
    };
    if e - bs < p.min {
        return Ok(None);
    }
    // The token must end the word (`-` too: it would continue a slug).
    if matches!(v.get(e)?, Some(c) if c.is_ascii_alphanumeric() || c == b'_' || c == b'-') {
        return Ok(None);
    }
    if p.need_digit && !v.b[bs..e].iter().any(u8::is_ascii_digit) {
        return Ok(None);
    }
    Ok(Some(Hit::whole(s, e)))
}

fn is_bearer_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'~' | b'+' | b'/' | b'-')
}

/// `Bearer <token>`: masks the token (16+ characters mixing letters and digits, so that
/// prose like "bearer authentication" stays).
fn bearer(v: &View, s: usize) -> Step<Option<Hit>> {
    if is_word(v.prev(s)) {
        return Ok(None);
    }
    let ts = s + 7;
    let Some(mut e) = v.run_end(ts, MAX_BEARER, is_bearer_char)? else {
        return Ok(None);
    };
    while v.get(e)? == Some(b'=') && e - ts < MAX_BEARER {
        e += 1;
    }
    let mut end = e;
    while end > ts && v.b[end - 1] == b'.' {
        end -= 1;
    }
    let tok = &v.b[ts..end];
    if tok.len() < 16
        || !tok.iter().any(u8::is_ascii_digit)
        || !tok.iter().any(u8::is_ascii_alphabetic)
        || is_word(v.get(e)?)
    {
        return Ok(None);
    }
    Ok(Some(Hit {
        span: s,
        start: ts,
        end,
    }))
}

/// `Basic <base64 of user:password>`: masks the credential.
fn basic(v: &View, s: usize) -> Step<Option<Hit>> {
    if is_word(v.prev(s)) {
        return Ok(None);
    }
    let ts = s + 6;
    let Some(mut e) = v.run_end(ts, MAX_BASIC, |c| {
        c.is_ascii_alphanumeric() || c == b'+' || c == b'/'
    })?
    else {
        return Ok(None);
    };
    let body = e - ts;
    let mut pad = 0;
    while pad < 2 && v.get(e)? == Some(b'=') {
        e += 1;
        pad += 1;
    }
    if body < 8 || is_word(v.get(e)?) {
        return Ok(None);
    }
    let Ok(decoded) = B64_LENIENT.decode(&v.b[ts..e]) else {
        return Ok(None);
    };
    let Ok(text) = std::str::from_utf8(&decoded) else {
        return Ok(None);
    };
    match text.split_once(':') {
        Some((_, pw)) if !pw.is_empty() && !text.chars().any(char::is_control) => Ok(Some(Hit {
            span: s,
            start: ts,
            end: e,
        })),
        _ => Ok(None),
    }
}

/// IBAN lengths by country (SWIFT registry, common countries).
fn iban_len(cc: [u8; 2]) -> Option<usize> {
    Some(match &cc {
        b"AD" => 24,
        b"AE" => 23,
        b"AL" => 28,
        b"AT" => 20,
        b"AZ" => 28,
        b"BA" => 20,
        b"BE" => 16,
        b"BG" => 22,
        b"BH" => 22,
        b"BR" => 29,
        b"CH" => 21,
        b"CR" => 22,
        b"CY" => 28,
        b"CZ" => 24,
        b"DE" => 22,
        b"DK" => 18,
        b"DO" => 28,
        b"EE" => 20,
        b"EG" => 29,
        b"ES" => 24,
        b"FI" => 18,
        b"FO" => 18,
        b"FR" => 27,
        b"GB" => 22,
        b"GE" => 22,
        b"GI" => 23,
        b"GL" => 18,
        b"GR" => 27,
        b"GT" => 28,
        b"HR" => 21,
        b"HU" => 28,
        b"IE" => 22,
        b"IL" => 23,
        b"IS" => 26,
        b"IT" => 27,
        b"JO" => 30,
        b"KW" => 30,
        b"KZ" => 20,
        b"LB" => 28,
        b"LI" => 21,
        b"LT" => 20,
        b"LU" => 20,
        b"LV" => 21,
        b"MC" => 27,
        b"MD" => 24,
        b"ME" => 22,
        b"MK" => 19,
        b"MR" => 27,
        b"MT" => 31,
        b"MU" => 30,
        b"NL" => 18,
        b"NO" => 15,
        b"PK" => 24,
        b"PL" => 28,
        b"PS" => 29,
        b"PT" => 25,
        b"QA" => 29,
        b"RO" => 24,
        b"RS" => 22,
        b"SA" => 24,
        b"SE" => 24,
        b"SI" => 19,
        b"SK" => 24,
        b"SM" => 27,
        b"TN" => 24,
        b"TR" => 26,
        b"UA" => 29,
        b"VG" => 24,
        b"XK" => 20,
        _ => return None,
    })
}

/// Country code, two check digits, BBAN; compact or in space-separated groups of four;
/// exact per-country length; ISO 7064 mod-97 == 1.
fn iban(v: &View, s: usize) -> Step<Option<Hit>> {
    let b = v.b;
    if is_word(v.prev(s)) {
        return Ok(None);
    }
    let cc = [b[s].to_ascii_uppercase(), b[s + 1].to_ascii_uppercase()];
    let Some(len) = iban_len(cc) else {
        return Ok(None);
    };
    let mut chars = [0u8; 34];
    let mut count = 0usize;
    let mut group = 0usize;
    // None: undecided (first group); Some(true): groups of four; Some(false): compact.
    let mut spaced: Option<bool> = None;
    let mut i = s;
    while count < len {
        match v.get(i)? {
            Some(c) if c.is_ascii_alphanumeric() => {
                if (count == 2 || count == 3) && !c.is_ascii_digit() {
                    return Ok(None);
                }
                if count == 4 && spaced.is_none() {
                    spaced = Some(false);
                }
                group += 1;
                if spaced == Some(true) && group > 4 {
                    return Ok(None);
                }
                chars[count] = c.to_ascii_uppercase();
                count += 1;
                i += 1;
            }
            Some(b' ') if group == 4 && spaced != Some(false) => {
                spaced = Some(true);
                group = 0;
                i += 1;
                if !matches!(v.get(i)?, Some(c) if c.is_ascii_alphanumeric()) {
                    return Ok(None);
                }
            }
            _ => return Ok(None),
        }
    }
    if is_word(v.get(i)?) {
        return Ok(None);
    }
    // Rearranged: BBAN, country code, check digits; letters as 10..35.
    let mut rem = 0u32;
    for &c in chars[4..len].iter().chain(&chars[..4]) {
        let val = if c.is_ascii_digit() {
            u32::from(c - b'0')
        } else {
            u32::from(c - b'A') + 10
        };
        rem = if val >= 10 {
            (rem * 100 + val) % 97
        } else {
            (rem * 10 + val) % 97
        };
    }
    if rem != 1 {
        return Ok(None);
    }
    Ok(Some(Hit::whole(s, i)))
}

/// Payment card: 13–19 digits, compact or in groups (first group of four, groups of 4–6
/// separated by one space or one dash, consistently), Luhn-valid, with a length-consistent
/// issuer prefix. The longest valid prefix of groups wins.
fn card(v: &View, s: usize) -> Step<Option<Hit>> {
    let b = v.b;
    let prev = v.prev(s);
    if is_word(prev) {
        return Ok(None);
    }
    // The fractional part of a decimal number (not `,`: CSV fields).
    if prev == Some(b'.') && is_digit(v.prev(s - 1)) {
        return Ok(None);
    }
    let Some(g0) = v.run_end(s, 19, |c| c.is_ascii_digit())? else {
        return Ok(None);
    };
    let n0 = g0 - s;
    let next = v.get(g0)?;
    if n0 >= 13 {
        if is_word(next) || (next == Some(b'.') && is_digit(v.get(g0 + 1)?)) {
            return Ok(None);
        }
        return Ok(card_ok(b, s, g0).then(|| Hit::whole(s, g0)));
    }
    if n0 != 4 {
        return Ok(None);
    }
    let Some(sep) = next.filter(|c| *c == b' ' || *c == b'-') else {
        return Ok(None);
    };
    // (end position, digits so far) after each group.
    let mut ends: [(usize, usize); 8] = [(0, 0); 8];
    let mut k = 0usize;
    let mut count = 4usize;
    let mut pos = g0;
    while k < ends.len() {
        if v.get(pos)? != Some(sep) {
            break;
        }
        let gs = pos + 1;
        let Some(ge) = v.run_end(gs, 6, |c| c.is_ascii_digit())? else {
            break;
        };
        let g = ge - gs;
        if g == 0 || count + g > 19 {
            break;
        }
        count += g;
        ends[k] = (ge, count);
        k += 1;
        pos = ge;
        // A short group can only be the last one.
        if g < 4 {
            break;
        }
    }
    for &(end, digits) in ends[..k].iter().rev() {
        if digits < 13 {
            break;
        }
        let after = v.get(end)?;
        if is_word(after) || (after == Some(b'.') && is_digit(v.get(end + 1)?)) {
            continue;
        }
        if card_ok(b, s, end) {
            return Ok(Some(Hit::whole(s, end)));
        }
    }
    Ok(None)
}

fn card_ok(b: &[u8], s: usize, e: usize) -> bool {
    let mut d = [0u8; 19];
    let mut n = 0;
    for &c in &b[s..e] {
        if c.is_ascii_digit() {
            if n == d.len() {
                return false;
            }
            d[n] = c - b'0';
            n += 1;
        }
    }
    let d = &d[..n];
    (13..=19).contains(&n) && luhn(d) && issuer_ok(d)
}

fn luhn(d: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &x) in d.iter().rev().enumerate() {
        let mut x = u32::from(x);
        if i % 2 == 1 {
            x *= 2;
            if x > 9 {
                x -= 9;
            }
        }
        sum += x;
    }
    sum.is_multiple_of(10)
}

/// Issuer identification number plausible for this length.
fn issuer_ok(d: &[u8]) -> bool {
    let n = d.len();
    let p = |k: usize| d.iter().take(k).fold(0u32, |a, &x| a * 10 + u32::from(x));
    let (p2, p3, p4, p6) = (p(2), p(3), p(4), p(6));
    let visa = d[0] == 4 && matches!(n, 13 | 16 | 19);
    let mastercard = ((51..=55).contains(&p2) || (2221..=2720).contains(&p4)) && n == 16;
    let amex = matches!(p2, 34 | 37) && n == 15;
    let discover =
        (p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 || (622126..=622925).contains(&p6))
            && (16..=19).contains(&n);
    let jcb = (3528..=3589).contains(&p4) && (16..=19).contains(&n);
    let diners = ((300..=305).contains(&p3) || p4 == 3095 || matches!(p2, 36 | 38 | 39))
        && (14..=19).contains(&n);
    let unionpay = p2 == 62 && (16..=19).contains(&n);
    let maestro = matches!(
        p4,
        5018 | 5020 | 5038 | 5893 | 6304 | 6759 | 6761 | 6762 | 6763
    ) && (12..=19).contains(&n);
    let mir = (2200..=2204).contains(&p4) && (16..=19).contains(&n);
    visa || mastercard || amex || discover || jcb || diners || unionpay || maestro || mir
}

/// US SSN `AAA-GG-SSSS`; a bare 9-digit run only with `ssn` / `social security` shortly
/// before it (plain 9-digit numbers are mostly ids). Area 000, 666, 900–999, group 00 and
/// serial 0000 are never issued.
fn ssn(v: &View, s: usize) -> Step<Option<Hit>> {
    let b = v.b;
    let prev = v.prev(s);
    if is_word(prev) || (matches!(prev, Some(b'-' | b'.' | b'/')) && is_word(v.prev(s - 1))) {
        return Ok(None);
    }
    let mut d = [0u8; 9];
    let Some(a) = v.run_end(s, 9, |c| c.is_ascii_digit())? else {
        return Ok(None);
    };
    let end = match a - s {
        3 => {
            if v.get(a)? != Some(b'-') {
                return Ok(None);
            }
            let Some(g) = v.run_end(a + 1, 2, |c| c.is_ascii_digit())? else {
                return Ok(None);
            };
            if g - (a + 1) != 2 || v.get(g)? != Some(b'-') {
                return Ok(None);
            }
            let Some(e) = v.run_end(g + 1, 4, |c| c.is_ascii_digit())? else {
                return Ok(None);
            };
            if e - (g + 1) != 4 {
                return Ok(None);
            }
            e
        }
        9 => {
            let lo = s.saturating_sub(SSN_KEYWORD_WINDOW);
            if !has_ssn_keyword(&b[lo..s]) {
                return Ok(None);
            }
            a
        }
        _ => return Ok(None),
    };
    let after = v.get(end)?;
    if is_word(after) || (matches!(after, Some(b'-' | b'.')) && is_digit(v.get(end + 1)?)) {
        return Ok(None);
    }
    let mut k = 0;
    for &c in &b[s..end] {
        if c.is_ascii_digit() && k < 9 {
            d[k] = c - b'0';
            k += 1;
        }
    }
    let num = |r: std::ops::Range<usize>| d[r].iter().fold(0u32, |acc, &x| acc * 10 + u32::from(x));
    let (area, group, serial) = (num(0..3), num(3..5), num(5..9));
    if area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0 {
        return Ok(None);
    }
    Ok(Some(Hit::whole(s, end)))
}

/// International `+CC ...`: 8–15 digits in groups separated by one space, dash or dot,
/// optionally with a parenthesised group (`+44 (0)20 7946 0958`).
fn phone_intl(v: &View, s: usize) -> Step<Option<Hit>> {
    if matches!(v.prev(s), Some(c) if c.is_ascii_alphanumeric() || matches!(c, b'_' | b'+' | b')' | b'.' | b'/'))
    {
        return Ok(None);
    }
    if !matches!(v.get(s + 1)?, Some(b'1'..=b'9')) {
        return Ok(None);
    }
    // Per group: end position, digits so far, group length, separator before it.
    let mut ends = [(0usize, 0usize); 16];
    let mut lens = [0usize; 16];
    let mut seps = [0u8; 16];
    let mut ng = 0usize;
    let mut digits = 0usize;
    let mut sep_before = 0u8;
    let mut i = s + 1;
    while ng < ends.len() {
        // A group: digits, or `(digits)`.
        let paren = v.get(i)? == Some(b'(');
        let gs = if paren { i + 1 } else { i };
        let Some(ge) = v.run_end(gs, 15, |c| c.is_ascii_digit())? else {
            break;
        };
        let g = ge - gs;
        if g == 0 || digits + g > 15 {
            break;
        }
        let mut end = ge;
        if paren {
            if v.get(end)? != Some(b')') || g > 4 {
                break;
            }
            end += 1;
        }
        digits += g;
        ends[ng] = (end, digits);
        lens[ng] = g;
        seps[ng] = sep_before;
        ng += 1;
        i = end;
        // `(0)20`: digits may follow a parenthesis directly.
        if paren && matches!(v.get(i)?, Some(c) if c.is_ascii_digit()) {
            sep_before = 0;
            continue;
        }
        match v.get(i)? {
            Some(sep @ (b' ' | b'-' | b'.')) if matches!(v.get(i + 1)?, Some(c) if c.is_ascii_digit() || c == b'(') =>
            {
                sep_before = sep;
                i += 1;
            }
            Some(b'(') => sep_before = 0,
            _ => break,
        }
    }
    // `+2024-01-02` is an expanded-year date, not a phone number.
    if ng >= 3 && lens[..3] == [4, 2, 2] && seps[1] == b'-' && seps[2] == b'-' {
        return Ok(None);
    }
    // The longest prefix of groups with 8–15 digits that ends the number cleanly (a date
    // or another number may follow after a space).
    for k in (0..ng).rev() {
        let (end, d) = ends[k];
        if d < 8 {
            break;
        }
        if is_word(v.get(end)?) {
            continue;
        }
        return Ok(Some(Hit::whole(s, end)));
    }
    Ok(None)
}

/// North American formats: `(202) 555-0143`, `202-555-0143`, `202.555.0143`, optionally
/// preceded by `1-`/`1.`/`1 `. Area code and exchange start with 2–9. Other national formats
/// without `+` are too ambiguous with ids and amounts and are not matched.
fn phone_nanp(v: &View, s: usize) -> Step<Option<Hit>> {
    let prev = v.prev(s);
    if is_word(prev) || matches!(prev, Some(b'+' | b')' | b'(')) {
        return Ok(None);
    }
    if matches!(prev, Some(b'-' | b'.' | b'/')) && is_word(v.prev(s - 1)) {
        return Ok(None);
    }
    let three = |i: usize| -> Step<Option<u8>> {
        let Some(e) = v.run_end(i, 3, |c| c.is_ascii_digit())? else {
            return Ok(None);
        };
        Ok((e - i == 3).then(|| v.b[i]))
    };
    let mut i = s;
    let mut cc_sep = None;
    if v.get(i)? == Some(b'1') {
        let sep = v.get(i + 1)?;
        if matches!(sep, Some(b'-' | b'.' | b' ')) {
            cc_sep = sep;
            i += 2;
        } else {
            return Ok(None);
        }
    }
    let first;
    if v.get(i)? == Some(b'(') {
        let Some(a0) = three(i + 1)? else {
            return Ok(None);
        };
        first = a0;
        i += 4;
        if v.get(i)? != Some(b')') {
            return Ok(None);
        }
        i += 1;
        if v.get(i)? == Some(b' ') {
            i += 1;
        }
        let Some(e0) = three(i)? else {
            return Ok(None);
        };
        if !(b'2'..=b'9').contains(&e0) {
            return Ok(None);
        }
        i += 3;
        if !matches!(v.get(i)?, Some(b'-' | b'.' | b' ')) {
            return Ok(None);
        }
    } else {
        let Some(a0) = three(i)? else {
            return Ok(None);
        };
        first = a0;
        i += 3;
        let sep = match v.get(i)? {
            Some(c @ (b'-' | b'.')) => c,
            _ => return Ok(None),
        };
        if cc_sep.is_some_and(|c| c != b' ' && c != sep) {
            return Ok(None);
        }
        i += 1;
        let Some(e0) = three(i)? else {
            return Ok(None);
        };
        if !(b'2'..=b'9').contains(&e0) {
            return Ok(None);
        }
        i += 3;
        if v.get(i)? != Some(sep) {
            return Ok(None);
        }
    }
    if !(b'2'..=b'9').contains(&first) {
        return Ok(None);
    }
    i += 1;
    let Some(e) = v.run_end(i, 4, |c| c.is_ascii_digit())? else {
        return Ok(None);
    };
    if e - i != 4 {
        return Ok(None);
    }
    let after = v.get(e)?;
    if is_word(after) || (matches!(after, Some(b'-' | b'.')) && is_digit(v.get(e + 1)?)) {
        return Ok(None);
    }
    Ok(Some(Hit::whole(s, e)))
}

/// Dotted quad, octets 0–255 without leading zeros, not part of a longer dotted sequence
/// (OIDs, 5-part versions) nor of a `name/1.2.3.4` product token (user agents).
fn ipv4(v: &View, s: usize) -> Step<Option<Hit>> {
    let prev = v.prev(s);
    if is_word(prev) || prev == Some(b'.') {
        return Ok(None);
    }
    // `Chrome/120.0.0.0`, `build-1.2.3.4`.
    if matches!(prev, Some(b'/' | b'-')) && is_word(v.prev(s - 1)) {
        return Ok(None);
    }
    let mut i = s;
    for k in 0..4 {
        let Some(e) = v.run_end(i, 3, |c| c.is_ascii_digit())? else {
            return Ok(None);
        };
        let oct = &v.b[i..e];
        if oct.is_empty() || (oct.len() > 1 && oct[0] == b'0') {
            return Ok(None);
        }
        let val = oct.iter().fold(0u32, |a, &c| a * 10 + u32::from(c - b'0'));
        if val > 255 {
            return Ok(None);
        }
        i = e;
        if k < 3 {
            if v.get(i)? != Some(b'.') {
                return Ok(None);
            }
            i += 1;
        }
    }
    let after = v.get(i)?;
    if is_word(after) || (matches!(after, Some(b'.' | b'-')) && is_digit(v.get(i + 1)?)) {
        return Ok(None);
    }
    Ok(Some(Hit::whole(s, i)))
}

fn is_v6(c: u8) -> bool {
    c.is_ascii_hexdigit() || c == b':' || c == b'.'
}

/// The run of hex digits, colons and dots around the colon at `p`, parsed by the standard
/// library. Returns the hit (if any) and the end of the run, so the other colons of the run
/// are not examined again. Needs a decimal digit or three groups (`a::b` in prose or code
/// stays), and non-word characters around it (`std::vec` stays).
fn ipv6_at(v: &View, p: usize) -> Step<(Option<Hit>, usize)> {
    let b = v.b;
    let mut j = p;
    while j > 0 && is_v6(b[j - 1]) {
        j -= 1;
        if p - j > MAX_IPV6 {
            return Ok((None, p + 1));
        }
    }
    let Some(e) = v.run_end(p, MAX_IPV6, is_v6)? else {
        return Ok((None, p + 1));
    };
    if e - j > MAX_IPV6 || is_word(v.prev(j)) || is_word(v.get(e)?) {
        return Ok((None, e));
    }
    let mut end = e;
    while end > j && b[end - 1] == b'.' {
        end -= 1;
    }
    let cand = &b[j..end];
    let colons = cand.iter().filter(|&&c| c == b':').count();
    let groups = cand.split(|&c| c == b':').filter(|g| !g.is_empty()).count();
    if colons < 2 || !(cand.iter().any(u8::is_ascii_digit) || groups >= 3) {
        return Ok((None, e));
    }
    let ok = std::str::from_utf8(cand)
        .ok()
        .and_then(|s| s.parse::<Ipv6Addr>().ok())
        .is_some();
    Ok((ok.then(|| Hit::whole(j, end)), e))
}

fn is_local(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

/// File extensions that look like top-level domains after an `@` (`icon@2x.png`).
const NOT_TLD: [&[u8]; 10] = [
    b"png", b"jpg", b"jpeg", b"gif", b"svg", b"webp", b"ico", b"css", b"js", b"bmp",
];

/// `local@domain.tld` around the `@` at `a`: local part 1–64 characters of
/// `[A-Za-z0-9._%+-]` (no leading/trailing dot), at least two domain labels, alphabetic
/// TLD of 2+ letters.
fn email_at(v: &View, a: usize) -> Step<Option<Hit>> {
    let b = v.b;
    let mut j = a;
    while j > 0 && is_local(b[j - 1]) {
        j -= 1;
        if a - j > MAX_LOCAL {
            return Ok(None);
        }
    }
    if j == a || b[j] == b'.' || b[a - 1] == b'.' {
        return Ok(None);
    }
    let ds = a + 1;
    let Some(de) = v.run_end(ds, MAX_DOMAIN, |c| {
        c.is_ascii_alphanumeric() || c == b'-' || c == b'.'
    })?
    else {
        return Ok(None);
    };
    let mut end = de;
    while end > ds && matches!(b[end - 1], b'.' | b'-') {
        end -= 1;
    }
    let domain = &b[ds..end];
    let mut labels = 0;
    let mut tld: &[u8] = &[];
    for label in domain.split(|&c| c == b'.') {
        if label.is_empty()
            || label.len() > 63
            || label[0] == b'-'
            || label[label.len() - 1] == b'-'
        {
            return Ok(None);
        }
        labels += 1;
        tld = label;
    }
    let tld_ok = (tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic))
        || (tld.len() > 4 && tld[..4].eq_ignore_ascii_case(b"xn--"));
    if labels < 2 || !tld_ok || NOT_TLD.iter().any(|x| tld.eq_ignore_ascii_case(x)) {
        return Ok(None);
    }
    Ok(Some(Hit::whole(j, end)))
}

fn is_scheme(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'.' | b'-')
}

/// `scheme://user:PASSWORD@host`: masks only the password (the userinfo up to the last `@`
/// of the authority). A password containing an unencoded `/`, `?`, `#` or whitespace ends
/// the authority early and is not recognised.
fn url_password(v: &View, p: usize) -> Step<Option<Hit>> {
    let b = v.b;
    if v.get(p + 1)? != Some(b'/') || v.get(p + 2)? != Some(b'/') {
        return Ok(None);
    }
    let mut j = p;
    while j > 0 && is_scheme(b[j - 1]) {
        j -= 1;
        if p - j > MAX_SCHEME {
            return Ok(None);
        }
    }
    if j == p || !b[j].is_ascii_alphabetic() {
        return Ok(None);
    }
    let auth = p + 3;
    let mut i = auth;
    let mut at = None;
    loop {
        match v.get(i)? {
            None => break,
            Some(c)
                if c.is_ascii_whitespace()
                    || c.is_ascii_control()
                    || matches!(
                        c,
                        b'/' | b'?' | b'#' | b'"' | b'\'' | b'<' | b'>' | b'`' | b'\\'
                    ) =>
            {
                break;
            }
            Some(b'@') => at = Some(i),
            Some(_) => {}
        }
        i += 1;
        if i - auth > MAX_AUTHORITY {
            return Ok(None);
        }
    }
    let Some(at) = at else {
        return Ok(None);
    };
    let Some(colon) = b[auth..at].iter().position(|&c| c == b':') else {
        return Ok(None);
    };
    let ps = auth + colon + 1;
    if ps >= at {
        return Ok(None);
    }
    Ok(Some(Hit {
        span: j,
        start: ps,
        end: at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    fn all() -> &'static DetectorSet {
        static SET: OnceLock<DetectorSet> = OnceLock::new();
        SET.get_or_init(|| DetectorSet::new(&["all"], &[]).unwrap())
    }

    fn red(text: &str) -> String {
        all().mask(text, DetectorStrategy::Redact).0.into_owned()
    }

    fn ids(text: &str) -> Vec<&'static str> {
        all().scan(text).iter().map(|f| f.detector).collect()
    }

    /// Each value alone, and embedded in a sentence, becomes the label.
    fn positives(label: &str, values: &[&str]) {
        for v in values {
            assert_eq!(red(v), label, "{v:?}");
            assert_eq!(
                red(&format!("value: {v}, end")),
                format!("value: {label}, end"),
                "{v:?} in a sentence"
            );
        }
    }

    fn unchanged(values: &[&str]) {
        for v in values {
            assert_eq!(red(v), *v, "{v:?} found {:?}", ids(v));
        }
    }

    #[test]
    fn lookbehind_covers_every_backward_look() {
        const {
            assert!(LOOKBEHIND > MAX_LOCAL + 1);
            assert!(LOOKBEHIND > MAX_SCHEME + 1);
            assert!(LOOKBEHIND > MAX_IPV6 + 1);
            assert!(LOOKBEHIND > AWS_KEYWORD_WINDOW + "secret".len() + 1);
            assert!(LOOKBEHIND > SSN_KEYWORD_WINDOW);
            assert!(LOOKBEHIND > 64 + 2); // mask_with_context
        }
    }

    #[test]
    fn email() {
        positives(
            "[EMAIL]",
            &[
                "john.doe@example.com",
                "a+tag@sub.example.co.uk",
                "x_y-z%1@example.org",
                "JANE@EXAMPLE.IO",
                "user@xn--bcher-kva.example",
            ],
        );
        assert_eq!(red("<jane@example.org>"), "<[EMAIL]>");
        assert_eq!(red("mailto:jane@example.org."), "mailto:[EMAIL].");
        // Not an email, but the IP in it is found.
        assert_eq!(red("x@1.2.3.4"), "x@[IP]");
        unchanged(&[
            "user@localhost",
            "icon@2x.png",
            "@example.com",
            "john@",
            "a@b.c",
            ".john@example.com.x1",
            "first..@x",
        ]);
    }

    #[test]
    fn card() {
        positives(
            "[CARD]",
            &[
                "4111 1111 1111 1111",
                "4111-1111-1111-1111",
                "4111111111111111",
                "5555 5555 5555 4444",
                "2223003122003222",
                "378282246310005",
                "3782 822463 10005",
                "6011111111111117",
                "3530111333300000",
                "30569309025904",
                "6200000000000005",
                "4222222222222",
            ],
        );
        // A year after the card: the longest valid prefix of groups.
        assert_eq!(red("4111 1111 1111 1111 2023"), "[CARD] 2023");
        unchanged(&[
            "4111111111111112",     // Luhn fails
            "1234567812345678",     // Luhn fails
            "4111 1111 1111 1112",  // Luhn fails
            "9780306406157",        // ISBN-13
            "978-0-306-40615-7",    // ISBN-13, hyphenated
            "0.4111111111111111",   // a fraction
            "x4111111111111111",    // inside a word
            "41111111111111111111", // 20 digits
            "4111 11 11 1111 1111", // not card grouping
            "4111 1111 1111 1111x",
            "79927398713", // Luhn-valid, too short
            "1111 1111 1111 1117",
        ]);
    }

    #[test]
    fn ssn() {
        positives("[SSN]", &["123-45-6789", "078-05-1121"]);
        assert_eq!(red("SSN: 123456789"), "SSN: [SSN]");
        assert_eq!(
            red("social security number 123456789"),
            "social security number [SSN]"
        );
        let mut c = MaskCounts::default();
        assert_eq!(
            all().mask_with_context("ssn", "123456789", DetectorStrategy::Redact, &mut c),
            "[SSN]"
        );
        unchanged(&[
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "123-00-4567",
            "123-45-0000",
            "123456789",
            "id 123456789",
            "2024-01-02",
            "A123-45-6789",
            "123-45-67890",
            "1-123-45-6789",
        ]);
    }

    #[test]
    fn iban() {
        positives(
            "[IBAN]",
            &[
                "DE89 3704 0044 0532 0130 00",
                "DE89370400440532013000",
                "GB29 NWBK 6016 1331 9268 19",
                "GB29NWBK60161331926819",
                "FR14 2004 1010 0505 0001 3M02 606",
                "NL91ABNA0417164300",
                "BE68539007547034",
                "gb29nwbk60161331926819",
            ],
        );
        unchanged(&[
            "DE89 3704 0044 0532 0130 01",
            "DE89370400440532013",
            "DE8937040044053201300012",
            "XX89370400440532013000",
            "DE89 3704 0044 0532 013 000",
            "XDE89370400440532013000",
        ]);
    }

    #[test]
    fn phone() {
        positives(
            "[PHONE]",
            &[
                "+1 202-555-0143",
                "+1 (202) 555-0143",
                "+44 20 7946 0958",
                "+44 (0)20 7946 0958",
                "+33 1 23 45 67 89",
                "+4915123456789",
                "+49-30-1234567",
                "+1.202.555.0143",
                "(202) 555-0143",
                "(202)555-0143",
                "202-555-0143",
                "202.555.0143",
                "1-202-555-0143",
                "1 (202) 555-0143",
            ],
        );
        unchanged(&[
            "2024-01-02",
            "2024-01-02T10:20:30Z",
            "123e4567-e89b-12d3-a456-426614174000",
            "978-3-16-148410-0",
            "0-306-40615-2",
            "12345-6789",
            "ORD-2024-000123",
            "20255501431234",
            "2025550143",
            "+2024-01-02",
            "555-0143",
            "123-555-0143",
            "202-155-0143",
            "202-555-01434",
            "202-555.0143",
            "1+2",
            "+12",
            "UTC+05:30",
            "x+1 202 555 0143",
            "202-555-0143-12",
        ]);
    }

    #[test]
    fn ip_addresses() {
        positives(
            "[IP]",
            &["192.168.1.10", "10.0.0.1", "255.255.255.255", "8.8.8.8"],
        );
        assert_eq!(red("host 10.0.0.1:5432 up"), "host [IP]:5432 up");
        assert_eq!(red("10.0.0.0/8"), "[IP]/8");
        assert_eq!(red("http://192.168.1.1/admin"), "http://[IP]/admin");
        positives(
            "[IP]",
            &[
                "2001:db8::1",
                "fe80::1ff:fe23:4567:890a",
                "::1",
                "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
                "::ffff:192.0.2.1",
                "dead:beef:cafe::",
            ],
        );
        assert_eq!(red("[2001:db8::1]:8080"), "[[IP]]:8080");
        unchanged(&[
            "1.2.3",
            "256.1.1.1",
            "1.2.3.4.5",
            "v1.2.3.4",
            "Chrome/120.0.0.0",
            "01.02.03.04",
            "1.3.6.1.4.1.311",
            "12:34:56",
            "12:34:56.789",
            "10:20",
            "std::vec::Vec",
            "a::b",
            "00:1A:2B:3C:4D:5E",
            "::",
            "Foo::Bar::baz",
            "ab:cd:ef",
        ]);
    }

    #[test]
    fn aws() {
        positives(
            "[AWS_KEY]",
            &["AKIAIOSFODNN7EXAMPLE", "ASIAY34FZKBOKMUTVV7A"],
        );
        unchanged(&[
            "AKIAIOSFODNN7EXAMPL",
            "AKIAIOSFODNN7EXAMPLE1",
            "xAKIAIOSFODNN7EXAMPLE",
            "AKIAiosfodnn7example",
            "AKIA0OSFODNN7EXAMPLE", // 0 is not base32
            "ASIA",
        ]);
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        for text in [
            format!("aws_secret_access_key = {secret}"),
            format!("AWS_SECRET_ACCESS_KEY={secret}"),
            format!("{{\"SecretAccessKey\": \"{secret}\"}}"),
            format!("aws configure set default.secret {secret}"),
        ] {
            let out = red(&text);
            assert!(!out.contains(secret), "{text}");
            assert!(out.contains("[AWS_SECRET]"), "{text}");
        }
        let mut c = MaskCounts::default();
        assert_eq!(
            all().mask_with_context(
                "aws_secret_access_key",
                secret,
                DetectorStrategy::Redact,
                &mut c
            ),
            "[AWS_SECRET]"
        );
        unchanged(&[
            secret, // no keyword
            "commit 0123456789abcdef0123456789abcdef01234567",
            "secret sha: da39a3ee5e6b4b0d3255bfef95601890afd80709",
            "laws wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEYX",
        ]);
        let far = format!("secret{}{secret}", " filler".repeat(20));
        assert_eq!(red(&far), far);
    }

    const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

    #[test]
    fn jwt() {
        positives("[JWT]", &[JWT]);
        assert_eq!(
            red(&format!("Authorization: Bearer {JWT}")),
            "Authorization: Bearer [JWT]"
        );
        assert_eq!(red(&format!("token={JWT}.")), "token=[JWT].");
        // alg none, empty signature.
        assert_eq!(red("eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0."), "[JWT]");
        unchanged(&[
            "eyJub3QiOiJqd3QifQ.eyJ4IjoxfQ.c2ln",  // header without alg
            "eyJhbGciOiJIUzI1NiJ9",                // one segment
            "eyJhbGciOiJIUzI1NiJ9.eyJ4IjoxfQ.a.b", // four segments
            "xeyJhbGciOiJIUzI1NiJ9.eyJ4IjoxfQ.c2ln",
            "eyJ!!!.eyJ4.c2ln",
        ]);
    }

    fn pem_block(label: &str) -> String {
        let mut s = format!("-----BEGIN {label}-----\n");
        for _ in 0..10 {
            s.push_str("MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n");
        }
        s.push_str(&format!("-----END {label}-----"));
        s
    }

    #[test]
    fn private_key() {
        for label in [
            "PRIVATE KEY",
            "RSA PRIVATE KEY",
            "EC PRIVATE KEY",
            "OPENSSH PRIVATE KEY",
            "ENCRYPTED PRIVATE KEY",
            "PGP PRIVATE KEY BLOCK",
        ] {
            let block = pem_block(label);
            assert_eq!(red(&block), "[PRIVATE_KEY]", "{label}");
            assert_eq!(
                red(&format!("key:\n{block}\nnext")),
                "key:\n[PRIVATE_KEY]\nnext"
            );
        }
        // Escaped newlines (a JSON dump printed raw).
        let escaped = pem_block("PRIVATE KEY").replace('\n', "\\n");
        assert_eq!(red(&format!("\"{escaped}\\n\"")), "\"[PRIVATE_KEY]\\n\"");
        // Truncated: masked through its body lines; the text after stays.
        let block = pem_block("RSA PRIVATE KEY");
        let truncated = &block[..block.len() / 2];
        let end = truncated.rfind('\n').unwrap();
        let text = format!("{}\nnot base64 here!\n", &truncated[..end]);
        assert_eq!(red(&text), "[PRIVATE_KEY]\nnot base64 here!\n");
        unchanged(&[
            &pem_block("PUBLIC KEY"),
            &pem_block("CERTIFICATE"),
            "-----BEGIN PRIVATE KEY",
            "-----BEGIN private key-----",
        ]);
    }

    #[test]
    fn url_password() {
        assert_eq!(
            red("postgres://admin:s3cr3t@db.example.com:5432/app"),
            "postgres://admin:[PASSWORD]@db.example.com:5432/app"
        );
        assert_eq!(
            red("redis://:hunter2@cache:6379/0"),
            "redis://:[PASSWORD]@cache:6379/0"
        );
        assert_eq!(red("mysql://u:p@ss@h/db"), "mysql://u:[PASSWORD]@h/db");
        assert_eq!(
            red("jdbc:postgresql://app:pw@h/x and more"),
            "jdbc:postgresql://app:[PASSWORD]@h/x and more"
        );
        assert_eq!(
            red("\"amqp://guest:guest@rabbit\""),
            "\"amqp://guest:[PASSWORD]@rabbit\""
        );
        unchanged(&[
            "https://user@host/",
            "https://example.com:8443/path",
            "http://host:8080/path?x=1",
            "https://:@host",
            "1http://a:b@c",
        ]);
        // The email after a URL path is still an email.
        assert_eq!(
            red("http://host:8080/p?e=a@example.com"),
            "http://host:8080/p?e=[EMAIL]"
        );
    }

    #[test]
    fn tokens() {
        let gh = format!("ghp_{}", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A");
        let pat = format!(
            "github_{}_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUV",
            "pat"
        );
        let slack = format!(
            "xoxb-{}",
            "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
        );
        let stripe = format!("sk_{}_{}", "live", "4eC39HqLyjWDarjtT1zdp7dc");
        let google = format!("AIza{}", "SyA1234567890abcdefghijklmnopqrstuv");
        let npm = format!("npm_{}", "abcdefghijklmnopqrstuvwxyz0123456789");
        let gitlab = format!("glpat-{}", "xxxxxxxxxxxxxxxxxxxx");
        for t in [&gh, &pat, &slack, &stripe, &google, &npm, &gitlab] {
            assert_eq!(red(t), "[TOKEN]", "{t}");
            assert_eq!(red(&format!("token: {t}\n")), "token: [TOKEN]\n", "{t}");
        }
        assert_eq!(
            red("Authorization: Bearer abcdef0123456789abcdef"),
            "Authorization: Bearer [TOKEN]"
        );
        assert_eq!(
            red("authorization: bearer abcdef0123456789abcdef."),
            "authorization: bearer [TOKEN]."
        );
        assert_eq!(
            red("Authorization: Basic dXNlcjpwYXNzd29yZA=="),
            "Authorization: Basic [TOKEN]"
        );
        unchanged(&[
            "ghp_short",
            "bearer authentication is described in RFC 6750",
            "Bearer token",
            "Basic idea",
            "Basic aGVsbG8gd29ybGQ=", // "hello world": no colon
            "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
            "xoxb-nodigitsatallhere",
            "my_ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A",
        ]);
    }

    #[test]
    fn clean_text_stays_borrowed() {
        let text = "id=42 created 2024-01-02T10:20:30Z amount 19.99 zip 12345-6789 \
                    order ORD-2024-000123 uuid 123e4567-e89b-12d3-a456-426614174000 \
                    isbn 978-3-16-148410-0 9780306406157 version 1.2.3 at 12:34:56 \
                    sha 0123456789abcdef0123456789abcdef01234567 ratio 3:2 \
                    std::collections::HashMap count 1234567890123456 naïve 日本語";
        let (out, counts) = all().mask(text, DetectorStrategy::Redact);
        assert!(matches!(out, Cow::Borrowed(_)), "{out}");
        assert!(counts.is_empty());
    }

    #[test]
    fn priority_and_overlaps() {
        // The password contains an email-shaped part: url_password wins.
        assert_eq!(
            red("smtp://me:pa@ss@mail.example.com/"),
            "smtp://me:[PASSWORD]@mail.example.com/"
        );
        // A JWT in a Bearer header: jwt wins over token.
        let f = all().scan(&format!("Bearer {JWT}"));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].detector, "jwt");
        assert_eq!(f[0].start, 7);
        // Several findings, in order.
        let f = all().scan("a@example.com 4111111111111111 10.1.2.3");
        let d: Vec<_> = f.iter().map(|f| (f.detector, f.label)).collect();
        assert_eq!(
            d,
            [("email", "[EMAIL]"), ("card", "[CARD]"), ("ipv4", "[IP]")]
        );
    }

    #[test]
    fn partial_strategy() {
        let p = |t: &str| all().mask(t, DetectorStrategy::Partial).0.into_owned();
        assert_eq!(p("4111 1111 1111 1111"), "**** **** **** 1111");
        assert_eq!(p("card 4111-1111-1111-1111."), "card ****-****-****-1111.");
        assert_eq!(p("123-45-6789"), "***-**-6789");
        assert_eq!(p("john.doe@example.com"), "****.***@******e.com");
        assert_eq!(p("(202) 555-0143"), "(***) ***-0143");
        assert_eq!(p("a@b.io"), "*@*.**");
        // Credentials are always labels.
        assert_eq!(p(JWT), "[JWT]");
        assert_eq!(p("AKIAIOSFODNN7EXAMPLE"), "[AWS_KEY]");
        assert_eq!(
            p("postgres://u:longpassword1@h"),
            "postgres://u:[PASSWORD]@h"
        );
    }

    #[test]
    fn counts_and_selection() {
        let (out, counts) = all().mask(
            "a@example.com b@example.com 4111111111111111",
            DetectorStrategy::Redact,
        );
        assert_eq!(out, "[EMAIL] [EMAIL] [CARD]");
        assert_eq!(counts.get("email"), 2);
        assert_eq!(counts.get("card"), 1);
        assert_eq!(counts.total(), 3);
        assert_eq!(
            serde_json::to_string(&counts).unwrap(),
            r#"{"card":1,"email":2}"#
        );
        // Only what is enabled runs.
        let only_email = DetectorSet::new(&["email"], &[]).unwrap();
        let (out, _) = only_email.mask("a@example.com 4111111111111111", DetectorStrategy::Redact);
        assert_eq!(out, "[EMAIL] 4111111111111111");
        let none = DetectorSet::new::<&str>(&[], &[]).unwrap();
        assert!(none.is_empty());
        assert_eq!(
            none.mask("a@example.com", DetectorStrategy::Redact).0,
            "a@example.com"
        );
        let e = DetectorSet::new(&["emial"], &[]).unwrap_err();
        assert_eq!(e.detector, "emial");
    }

    fn custom(id: &str, pattern: &str) -> CustomDetector {
        CustomDetector {
            id: id.into(),
            pattern: pattern.into(),
            label: format!("[{}]", id.to_uppercase()),
        }
    }

    #[test]
    fn custom_detectors() {
        let set = DetectorSet::new(&["email"], &[custom("emp", r"\bEMP-\d{6}\b")]).unwrap();
        let (out, counts) = set.mask(
            "staff EMP-123456 and EMP-1234567, x@example.com",
            DetectorStrategy::Redact,
        );
        assert_eq!(out, "staff [EMP] and EMP-1234567, [EMAIL]");
        assert_eq!(counts.get("emp"), 1);
        // Unicode patterns match on character boundaries.
        let set = DetectorSet::new::<&str>(&[], &[custom("name", r"Zoë \w+")]).unwrap();
        assert_eq!(
            set.mask("hi Zoë Ünal!", DetectorStrategy::Redact).0,
            "hi [NAME]!"
        );
        assert_eq!(
            set.mask("hi Zoë Ünal!", DetectorStrategy::Partial).0,
            "hi *** ****!"
        );
        // A very long match is masked in pieces.
        let set = DetectorSet::new::<&str>(&[], &[custom("x", "x+")]).unwrap();
        let long = "x".repeat(MAX_CUSTOM_MATCH * 2 + 10);
        assert_eq!(set.mask(&long, DetectorStrategy::Redact).0, "[X][X][X]");

        let refused = [
            ("(", "does not compile"),
            ("a*", "empty string"),
            ("\\b", "empty string"),
            ("(?m)^", "empty string"),
            ("x|", "empty string"),
            ("(?-u:\\xFF)", "does not compile"),
            ("(?:\\w{100}){100}", "size limit"),
            ("(a)\\1", "does not compile"),
            ("(?=a)", "does not compile"),
            ("", "empty"),
        ];
        for (pattern, why) in refused {
            let e = DetectorSet::new::<&str>(&[], &[custom("bad", pattern)]).unwrap_err();
            assert_eq!(e.detector, "bad");
            assert!(e.message.contains(why), "{pattern}: {e}");
        }
        let e = DetectorSet::new::<&str>(&[], &[custom("email", "x")]).unwrap_err();
        assert!(e.message.contains("built-in"), "{e}");
        let e = DetectorSet::new::<&str>(&[], &[custom("a", "x"), custom("a", "y")]).unwrap_err();
        assert!(e.message.contains("twice"), "{e}");
    }

    #[test]
    fn bytes_and_context_are_consistent() {
        let text = "x john@example.com y";
        let mut c = MaskCounts::default();
        assert_eq!(
            all()
                .mask_bytes(text.as_bytes(), DetectorStrategy::Redact, &mut c)
                .as_ref(),
            red(text).as_bytes()
        );
        // Context never appears in the output, and without a keyword it is ignored.
        assert_eq!(
            all().mask_with_context("email", text, DetectorStrategy::Redact, &mut c),
            red(text)
        );
        assert_eq!(
            all().mask_with_context(
                "secret",
                "4111111111111111",
                DetectorStrategy::Redact,
                &mut c
            ),
            "[CARD]"
        );
    }

    /// Deterministic generator of database-like rows, mostly harmless, ~2% sensitive.
    fn mixed_text(bytes: usize) -> String {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let names = [
            "Alice Smith",
            "Bob Jones",
            "Chloé Martin",
            "Dmitri Ivanov",
            "Eve Adams",
        ];
        let cities = ["Springfield", "Berlin", "São Paulo", "Tokyo", "Lyon"];
        let notes = [
            "Customer asked about delivery times and the return policy for damaged goods.",
            "Paid in full; invoice sent. Follow up next quarter regarding renewal.",
            "Order shipped via ground, tracking pending. No issues reported so far.",
            "Requested a callback; prefers email contact during business hours only.",
        ];
        let sensitive = [
            "contact jane.roe@example.com",
            "card 4111 1111 1111 1111",
            "ssn 123-45-6789",
            "call +1 202-555-0143",
            "from 192.168.10.20",
            "iban DE89 3704 0044 0532 0130 00",
        ];
        let mut s = String::with_capacity(bytes + 512);
        let mut id = 1u64;
        while s.len() < bytes {
            let r = next();
            let note = if r % 50 == 0 {
                sensitive[(r / 50 % sensitive.len() as u64) as usize]
            } else {
                notes[(r % notes.len() as u64) as usize]
            };
            s.push_str(&format!(
                "{{\"id\": {id}, \"name\": \"{}\", \"city\": \"{}\", \"created_at\": \"2024-0{}-1{}T10:2{}:30Z\", \"amount\": {}.{:02}, \"status\": \"active\", \"note\": \"{note}\"}}\n",
                names[(r >> 8) as usize % names.len()],
                cities[(r >> 16) as usize % cities.len()],
                1 + (r >> 24) % 9,
                (r >> 28) % 10,
                (r >> 32) % 10,
                (r >> 36) % 10_000,
                (r >> 48) % 100,
            ));
            id += 1;
        }
        s
    }

    #[test]
    fn mixed_rows_mask_the_sensitive_ones() {
        let text = mixed_text(64 * 1024);
        let (out, counts) = all().mask(&text, DetectorStrategy::Redact);
        for v in [
            "jane.roe@",
            "4111 1111",
            "123-45-6789",
            "555-0143",
            "192.168.10.20",
            "DE89",
        ] {
            assert!(!out.contains(v), "{v}");
        }
        // Exactly one finding per sensitive row, and nothing else touched.
        let sensitive = ["contact ", "card ", "ssn ", "call ", "from ", "iban "];
        let is_sensitive = |l: &&str| {
            sensitive
                .iter()
                .any(|p| l.contains(&format!("\"note\": \"{p}")))
        };
        let n_sensitive = text.lines().filter(is_sensitive).count();
        assert!(n_sensitive > 0);
        assert_eq!(counts.total(), n_sensitive as u64);
        assert_eq!(
            out.lines().filter(|l| !l.contains('[')).count(),
            text.lines().count() - n_sensitive
        );
    }

    #[test]
    #[ignore = "benchmark: cargo test --release --lib mask -- --ignored --nocapture"]
    fn bench_mixed_rows_throughput() {
        let text = mixed_text(10 * 1024 * 1024);
        let set = all();
        let mut best = f64::MAX;
        let mut masked = 0;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            let (out, counts) = set.mask(&text, DetectorStrategy::Redact);
            let dt = t.elapsed().as_secs_f64();
            best = best.min(dt);
            masked = counts.total();
            std::hint::black_box(out);
        }
        let clean: String = text.lines().filter(|l| !l.contains('@')).take(1).collect();
        let clean = clean.repeat(10 * 1024 * 1024 / clean.len().max(1));
        let t = std::time::Instant::now();
        std::hint::black_box(set.mask(&clean, DetectorStrategy::Redact));
        let clean_dt = t.elapsed().as_secs_f64();
        let mb = text.len() as f64 / (1024.0 * 1024.0);
        println!(
            "mask: {mb:.1} MiB mixed rows in {:.1} ms = {:.0} MiB/s ({masked} values masked); clean rows {:.0} MiB/s",
            best * 1000.0,
            mb / best,
            clean.len() as f64 / (1024.0 * 1024.0) / clean_dt,
        );
    }
}
