//! Unit tests of `detectors.rs`.

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
