//! Masking of byte streams cut at arbitrary points (terminal output, a command's stdout).
//!
//! What must stay true:
//! - The concatenation of everything `push` and `flush` return equals the one-shot
//!   `DetectorSet::mask_bytes` of the whole stream, wherever the chunks were cut, as long as
//!   no `flush` happens in the middle (a flush is an end of text: see below). In
//!   particular, a secret split across any number of chunks is masked.
//! - Bytes are emitted only up to a cut point `c` such that: no validated candidate's
//!   evidence crosses `c`; no candidate that could still appear or grow with more bytes
//!   starts before `c` (the detectors say so, `Short`); the trailing run of non-whitespace
//!   (up to 512 bytes) is held, since it could be the start of something recognised only
//!   once a later trigger (`@`, `://`, a keyword) arrives; with custom detectors, the last
//!   256 bytes are held (a custom pattern's decision may depend on that much lookahead).
//!   Since every detector is a pure function of a bounded window (see `detectors`),
//!   candidates right of `c` are then found exactly as in one pass, using the last
//!   `LOOKBEHIND` emitted bytes as context.
//! - What is held is bounded: at most [`MAX_HOLD`] (a PEM block waiting for its END line)
//!   plus the amortisation slack below plus the last chunk. A PEM block without END within
//!   the bound is masked through its base64 body as far as known.
//! - A multi-byte UTF-8 character is never split between two outputs. Invalid UTF-8 bytes
//!   pass through unchanged and act as separators; they never stop masking around them.
//! - `flush` (end of stream, idle timeout) emits everything, masked as if the text ended
//!   there. A secret whose halves are separated by a flush is not recognised as a whole:
//!   the caller's idle timeout should be long compared with the producer's write gaps.
//!
//! Custom patterns: the equivalence above holds for matches whose decision needs at most
//! 256 bytes of lookahead (bounded patterns such as `EMP-\d{6}`); anchors (`^`, `$`) refer to
//! the buffer being scanned, not the stream, so prefer `\b` or `(?m)` in stream contexts.

use std::sync::Arc;

use super::detectors::{
    self, Cand, DetectorSet, DetectorStrategy, LOOKBEHIND, MAX_HOLD, MaskCounts,
};

/// Trailing non-whitespace bytes held back (covers an email, a URL up to its `@`, an IPv6
/// address, a partial literal trigger).
const TOKEN_HOLD: usize = 512;
/// Lookahead reserved for custom patterns.
const CUSTOM_WINDOW: usize = 256;
/// Below this many held bytes every push rescans; above, a push rescans only once the new
/// bytes since the last scan reach a quarter of what was held. Keeps byte-by-byte input over
/// a long held candidate (a PEM block) linear overall.
const AMORTIZE_MIN: usize = 1024;

/// Masks a byte stream chunk by chunk. See the module documentation for the guarantees.
#[derive(Debug)]
pub struct StreamMasker {
    set: Arc<DetectorSet>,
    strategy: DetectorStrategy,
    /// `buf[..ctx]`: already emitted, kept as look-behind; `buf[ctx..]`: pending.
    buf: Vec<u8>,
    ctx: usize,
    /// Pending bytes right after the last scan.
    scanned: usize,
    counts: MaskCounts,
    cands: Vec<Cand>,
}

impl StreamMasker {
    pub fn new(set: Arc<DetectorSet>, strategy: DetectorStrategy) -> StreamMasker {
        StreamMasker {
            set,
            strategy,
            buf: Vec::new(),
            ctx: 0,
            scanned: 0,
            counts: MaskCounts::default(),
            cands: Vec::new(),
        }
    }

    /// Adds a chunk; returns the bytes that are safe to emit now (possibly none).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.buf.extend_from_slice(chunk);
        let pending = self.pending_len();
        if self.scanned >= AMORTIZE_MIN && pending - self.scanned < self.scanned / 4 {
            return Vec::new();
        }
        self.process(false)
    }

    /// End of stream or idle timeout: emits everything pending, masked.
    pub fn flush(&mut self) -> Vec<u8> {
        self.process(true)
    }

    /// Bytes received but not yet emitted.
    pub fn pending_len(&self) -> usize {
        self.buf.len() - self.ctx
    }

    /// What was masked so far.
    pub fn counts(&self) -> &MaskCounts {
        &self.counts
    }

    fn process(&mut self, eof: bool) -> Vec<u8> {
        let from = self.ctx;
        let n = self.buf.len();
        if n <= from {
            return Vec::new();
        }
        self.cands.clear();
        let hold = self.set.scan_view(&self.buf, from, eof, &mut self.cands);
        let mut cut = n;
        if !eof {
            cut = cut.min(hold).min(token_start(&self.buf, from));
            if self.set.has_custom() {
                cut = cut.min(n.saturating_sub(CUSTOM_WINDOW));
            }
            cut = cut.max(from);
            // Move the cut left until it neither splits a character nor crosses a
            // candidate's evidence; each step only decreases it, so this terminates.
            loop {
                let before = cut;
                cut = utf8_floor(&self.buf, from, cut);
                for c in &self.cands {
                    if c.span < cut && cut < c.end {
                        cut = c.span.max(from);
                    }
                }
                if cut == before {
                    break;
                }
            }
        }
        let accepted: Vec<Cand> = detectors::resolve(&self.cands)
            .into_iter()
            .filter(|c| c.end <= cut)
            .collect();
        let mut out = Vec::with_capacity(cut - from + 16 * accepted.len());
        self.set.render(
            &self.buf,
            from,
            cut,
            &accepted,
            self.strategy,
            &mut self.counts,
            &mut out,
        );
        let keep = cut.saturating_sub(LOOKBEHIND);
        self.buf.drain(..keep);
        self.ctx = cut - keep;
        self.scanned = self.pending_len();
        out
    }
}

/// Start of the trailing run of non-whitespace bytes, at most [`TOKEN_HOLD`] back.
fn token_start(b: &[u8], from: usize) -> usize {
    let lo = b.len().saturating_sub(TOKEN_HOLD).max(from);
    let mut i = b.len();
    while i > lo && !b[i - 1].is_ascii_whitespace() {
        i -= 1;
    }
    i
}

/// `cut`, moved back to the start of a UTF-8 sequence that would otherwise straddle it.
fn utf8_floor(b: &[u8], lo: usize, cut: usize) -> usize {
    let mut i = cut.min(b.len());
    let mut k = 0;
    while i > lo && k < 3 && b[i - 1] & 0xC0 == 0x80 {
        i -= 1;
        k += 1;
    }
    if i > lo {
        let need = match b[i - 1] {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => 0,
        };
        if need > 0 && cut - (i - 1) < need {
            return i - 1;
        }
    }
    cut
}

// Keep the documented bound honest: what the detectors may hold fits in it.
const _: () = assert!(MAX_HOLD >= TOKEN_HOLD && MAX_HOLD >= CUSTOM_WINDOW);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::CustomDetector;

    fn set() -> Arc<DetectorSet> {
        let custom = vec![CustomDetector {
            id: "emp".into(),
            pattern: r"\bEMP-\d{6}\b".into(),
            label: "[EMP]".into(),
        }];
        Arc::new(DetectorSet::new(&["all"], &custom).unwrap())
    }

    /// The demo's deterministic PRNG, so failures reproduce.
    use crate::demo::Rng;

    /// A uniform index below `n`.
    fn pick(rng: &mut Rng, n: usize) -> usize {
        rng.below(n as u64) as usize
    }

    const WORDS: &[&str] = &[
        "the",
        "row",
        "id",
        "42",
        "2024-01-02",
        "12:34:56",
        "ok",
        "naïve",
        "日本語",
        "—",
        "user",
        "ORD-2024-000123",
        "v1.2.3",
        "12345-6789",
        "note:",
        "a",
        "x",
        "1",
        "19.99",
        "€",
        "\t",
        "\n",
        ",",
        "\"",
        "(",
        ")",
        "-",
        "@",
        ":",
        "+",
        "/",
        "=",
    ];

    fn noise(rng: &mut Rng, words: usize) -> String {
        let mut s = String::new();
        for _ in 0..words {
            s.push_str(WORDS[pick(rng, WORDS.len())]);
            if pick(rng, 3) > 0 {
                s.push(' ');
            }
        }
        s
    }

    fn pem() -> String {
        let mut s = String::from("-----BEGIN RSA PRIVATE KEY-----\n");
        for i in 0..25 {
            s.push_str(&format!(
                "MIIEowIBAAKCAQEA{i:02}Zm9vYmFyYmF6cXV4cXV1eHh5enp5eDEyMzQ1Njc4OTBhYmNkZWZn\n"
            ));
        }
        s.push_str("-----END RSA PRIVATE KEY-----");
        s
    }

    /// (text placed in the stream, the part that must never appear in the output).
    fn secrets() -> Vec<(String, String)> {
        let gh = format!("ghp_{}", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A");
        let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
        let v = |s: &str| (s.to_string(), s.to_string());
        vec![
            v("john.doe@example.com"),
            v("4111 1111 1111 1111"),
            v("4111111111111111"),
            v("123-45-6789"),
            v("DE89 3704 0044 0532 0130 00"),
            v("+44 20 7946 0958"),
            v("(202) 555-0143"),
            v("192.168.10.20"),
            v("2001:db8::8a2e:370:7334"),
            v("AKIAIOSFODNN7EXAMPLE"),
            (
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            ),
            v(jwt),
            (format!("Authorization: Bearer {jwt}"), jwt.into()),
            (
                "postgres://admin:s3cr3tPassw0rd@db.internal:5432/app".into(),
                "s3cr3tPassw0rd".into(),
            ),
            v(&gh),
            v("EMP-123456"),
            (pem(), "MIIEowIBAAKCAQEA".into()),
        ]
    }

    fn run_stream(set: &Arc<DetectorSet>, chunks: &[&[u8]]) -> Vec<u8> {
        let mut m = StreamMasker::new(set.clone(), DetectorStrategy::Redact);
        let mut out = Vec::new();
        for c in chunks {
            let emitted = m.push(c);
            out.extend_from_slice(&emitted);
            assert!(m.pending_len() <= MAX_HOLD + MAX_HOLD / 4 + c.len() + 1024);
        }
        out.extend_from_slice(&m.flush());
        assert_eq!(m.pending_len(), 0);
        out
    }

    fn one_shot(set: &DetectorSet, text: &[u8]) -> Vec<u8> {
        one_shot_with(set, text, DetectorStrategy::Redact)
    }

    fn one_shot_with(set: &DetectorSet, text: &[u8], strategy: DetectorStrategy) -> Vec<u8> {
        let mut counts = MaskCounts::default();
        set.mask_bytes(text, strategy, &mut counts).into_owned()
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn every_split_offset_matches_one_shot() {
        let set = set();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for (secret, value) in secrets() {
            for round in 0..3 {
                let text = format!(
                    "{} {secret}{}{}",
                    noise(&mut rng, 6),
                    if round == 1 { "," } else { " " },
                    noise(&mut rng, 6)
                );
                let bytes = text.as_bytes();
                let expected = one_shot(&set, bytes);
                assert!(
                    !contains(&expected, value.as_bytes()),
                    "one-shot leaks in {text:?}"
                );
                for k in 0..=bytes.len() {
                    let out = run_stream(&set, &[&bytes[..k], &bytes[k..]]);
                    assert_eq!(
                        String::from_utf8_lossy(&out),
                        String::from_utf8_lossy(&expected),
                        "split at {k} of {text:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn random_multi_splits_match_one_shot() {
        let set = set();
        let mut rng = Rng(42);
        let secrets = secrets();
        for round in 0..300 {
            let strategy = if round % 3 == 0 {
                DetectorStrategy::Partial
            } else {
                DetectorStrategy::Redact
            };
            let mut text = String::new();
            for _ in 0..4 {
                text.push_str(&noise(&mut rng, 5));
                text.push(' ');
                text.push_str(&secrets[pick(&mut rng, secrets.len())].0);
                text.push(' ');
            }
            let bytes = text.as_bytes();
            let expected = one_shot_with(&set, bytes, strategy);
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut at = 0;
            while at < bytes.len() {
                let max = if pick(&mut rng, 4) == 0 { 200 } else { 12 };
                let len = 1 + pick(&mut rng, max);
                let end = (at + len).min(bytes.len());
                chunks.push(&bytes[at..end]);
                at = end;
            }
            let mut m = StreamMasker::new(set.clone(), strategy);
            let mut out = Vec::new();
            for c in &chunks {
                let emitted = m.push(c);
                // Valid UTF-8 in, whole characters out.
                assert!(std::str::from_utf8(&emitted).is_ok());
                out.extend_from_slice(&emitted);
            }
            out.extend_from_slice(&m.flush());
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&expected),
                "{text:?}"
            );
            for (_, value) in &secrets {
                assert!(!contains(&out, value.as_bytes()), "{value} in {text:?}");
            }
        }
    }

    /// Text built from fragments dense in triggers and separators, split at random points,
    /// must give the one-shot output. Probes the "pure function of a bounded window"
    /// invariant far harder than realistic text does; also a no-panic check on odd bytes.
    #[test]
    fn adversarial_fragments_match_one_shot() {
        const FRAGS: &[&[u8]] = &[
            b"0",
            b"1",
            b"4",
            b"9",
            b"12",
            b"202",
            b"555",
            b"0143",
            b"4111",
            b"1111",
            b" ",
            b"  ",
            b"-",
            b".",
            b":",
            b"::",
            b"@",
            b"+",
            b"(",
            b")",
            b"/",
            b"//",
            b"a",
            b"e",
            b"x",
            b"A",
            b"S",
            b"DE",
            b"89",
            b"eyJ",
            b"://",
            b"ghp_",
            b"xoxb-",
            b"AKIA",
            b"IOSFODNN7EXAMPLE",
            b"-----BEGIN ",
            b"-----END ",
            b"PRIVATE KEY-----",
            b"\n",
            b"\n",
            b"secret ",
            b"aws_",
            b"Bearer ",
            b"Basic ",
            b"dXNlcjpwYXNzd29yZA==",
            b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            b"example.com",
            b"db",
            b"EMP-",
            b"123456",
            b"\xc3\xa9",
            b"\xe6\x97",
            b"\xff",
            b"\t",
            b"=",
            b"_",
            b"ssn ",
            b"fe80",
            b"ffff",
            b"10.0.0.1",
            b"user:pw",
            b"eyJhbGciOiJub25lIn0",
            b"MIIE",
        ];
        let set = set();
        let mut rng = Rng(7);
        for round in 0..1500 {
            let mut text = Vec::new();
            let len = 5 + pick(&mut rng, 60);
            for _ in 0..len {
                text.extend_from_slice(FRAGS[pick(&mut rng, FRAGS.len())]);
            }
            let strategy = if round % 2 == 0 {
                DetectorStrategy::Redact
            } else {
                DetectorStrategy::Partial
            };
            let expected = one_shot_with(&set, &text, strategy);
            let mut m = StreamMasker::new(set.clone(), strategy);
            let mut out = Vec::new();
            let mut at = 0;
            while at < text.len() {
                let end = (at + 1 + pick(&mut rng, 24)).min(text.len());
                out.extend_from_slice(&m.push(&text[at..end]));
                at = end;
            }
            out.extend_from_slice(&m.flush());
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&expected),
                "round {round}: {:?}",
                String::from_utf8_lossy(&text)
            );
        }
    }

    #[test]
    fn byte_by_byte_pem_is_linear_and_masked() {
        let set = set();
        let text = format!("key:\n{}\nafter", pem());
        let chunks: Vec<&[u8]> = text.as_bytes().chunks(1).collect();
        let out = run_stream(&set, &chunks);
        assert_eq!(String::from_utf8_lossy(&out), "key:\n[PRIVATE_KEY]\nafter");
    }

    #[test]
    fn truncated_pem_is_masked_through_its_body() {
        let set = set();
        let full = pem();
        let cut = &full[..full.len() / 2];
        let text = format!("{cut}\n");
        let out = run_stream(&set, &[text.as_bytes()]);
        assert!(
            !contains(&out, b"MIIEowIBAAKCAQEA"),
            "{}",
            String::from_utf8_lossy(&out)
        );
        // A BEGIN with no END and a body longer than the bound: masked up to the bound.
        let mut long = String::from("-----BEGIN PRIVATE KEY-----\n");
        while long.len() < MAX_HOLD + 4096 {
            long.push_str("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODkwYWJjZGVmZ2hpamts\n");
        }
        let chunks: Vec<&[u8]> = long.as_bytes().chunks(1000).collect();
        let out = run_stream(&set, &chunks);
        assert_eq!(out, one_shot(&set, long.as_bytes()));
        assert!(out.starts_with(b"[PRIVATE_KEY]"));
    }

    #[test]
    fn invalid_utf8_passes_through_and_does_not_block_masking() {
        let set = set();
        let mut text = b"\xff\xfe john@example.com \xc3".to_vec();
        text.extend_from_slice(b"\xe6\x97 4111111111111111\xff");
        let expected = one_shot(&set, &text);
        assert_eq!(
            expected,
            b"\xff\xfe [EMAIL] \xc3\xe6\x97 [CARD]\xff".to_vec()
        );
        for k in 0..=text.len() {
            assert_eq!(
                run_stream(&set, &[&text[..k], &text[k..]]),
                expected,
                "split {k}"
            );
        }
    }

    #[test]
    fn emits_promptly_when_nothing_is_pending() {
        let set = set();
        let mut m = StreamMasker::new(set, DetectorStrategy::Redact);
        let out = m.push(b"hello world\nline two\n");
        // Only the custom lookahead window can be held, and this is shorter.
        assert!(out.len() + m.pending_len() == 21);
        let all = [out, m.flush()].concat();
        assert_eq!(all, b"hello world\nline two\n");

        let set = Arc::new(DetectorSet::new(&["all"], &[]).unwrap());
        let mut m = StreamMasker::new(set, DetectorStrategy::Redact);
        assert_eq!(m.push(b"hello world\n"), b"hello world\n");
        assert_eq!(m.push(b"mail: john@exa"), b"mail: ");
        assert_eq!(m.push(b"mple.com\n"), b"[EMAIL]\n");
        assert_eq!(m.counts().get("email"), 1);
        let cjk = "日本".as_bytes();
        assert_eq!(m.push(&cjk[..4]), b"");
        assert_eq!(m.pending_len(), 4);
        assert_eq!(m.flush(), &cjk[..4]);
    }

    #[test]
    fn utf8_floor_never_splits() {
        let s = "aé日😀".as_bytes();
        for cut in 0..=s.len() {
            let c = utf8_floor(s, 0, cut);
            assert!(std::str::from_utf8(&s[..c]).is_ok(), "{cut} -> {c}");
        }
    }
}
