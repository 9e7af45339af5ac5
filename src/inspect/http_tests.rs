use super::*;

#[test]
fn paths_normalise_to_their_canonical_form() {
    let cases: &[(&str, &str)] = &[
        ("/", "/"),
        ("/users", "/users"),
        ("/users/", "/users/"),
        ("/users/42", "/users/42"),
        ("/a//b", "/a/b"),
        ("/a///b//", "/a/b/"),
        ("/./a", "/a"),
        ("/a/.", "/a/"),
        ("/a/./b", "/a/b"),
        ("/a/b/..", "/a/"),
        ("/a/b/../c", "/a/c"),
        ("/a/../b", "/b"),
        ("/a/..", "/"),
        ("/a/b/../../c", "/c"),
        ("/a/./../b/./c/.", "/b/c/"),
        ("/.", "/"),
        ("/./", "/"),
        ("/...", "/..."),
        ("/a/.../b", "/a/.../b"),
        ("/.well-known/x", "/.well-known/x"),
        ("/a..b", "/a..b"),
        ("/..a", "/..a"),
        // Unreserved escapes are decoded, hex case of the rest normalised.
        ("/%41%62c", "/Abc"),
        ("/%7euser", "/~user"),
        ("/a%2db", "/a-b"),
        ("/%3a", "/%3A"),
        ("/a%20b", "/a%20b"),
        ("/a%2Bb", "/a%2Bb"),
        ("/%C3%A9", "/%C3%A9"),
        ("/%c3%a9", "/%C3%A9"),
        ("/%3F", "/%3F"),
        ("/%23", "/%23"),
        ("/%25", "/%25"),
        ("/%25zz", "/%25zz"),
        // A literal dot decoded from an escape inside a longer name is fine.
        ("/a%2Eb", "/a.b"),
        ("/%2E%2E%2E", "/..."),
        // Characters not allowed literally are encoded.
        ("/a b", "/a%20b"),
        ("/josé", "/jos%C3%A9"),
        ("/a\"b", "/a%22b"),
        ("/<x>", "/%3Cx%3E"),
        ("/a[1]", "/a%5B1%5D"),
        ("/a{b}|c^d`e", "/a%7Bb%7D%7Cc%5Ed%60e"),
        ("/日本", "/%E6%97%A5%E6%9C%AC"),
        // pchar sub-delims and `:`/`@` stay literal.
        ("/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,="),
        ("/v1/items:batchGet", "/v1/items:batchGet"),
    ];
    for (input, want) in cases {
        let got = normalize_path(input);
        assert_eq!(got.as_deref(), Ok(*want), "normalize_path({input:?})");
        // Idempotent: the canonical form normalises to itself.
        assert_eq!(
            normalize_path(want).as_deref(),
            Ok(*want),
            "not idempotent on {want:?}"
        );
    }
}

#[test]
fn adversarial_paths_are_refused() {
    let long = format!("/{}", "a".repeat(MAX_PATH_BYTES));
    let cases: &[&str] = &[
        "",
        "users",
        "./users",
        "../users",
        "http://evil/x",
        "https:/x",
        "HTTP://evil",
        "//evil.example/x",
        "///evil",
        "\\\\evil\\x",
        "/\\evil",
        "/a\\..\\b",
        "/a?b=c",
        "/a?",
        "/a#frag",
        "/a#",
        // Above the root, literally or after popping.
        "/..",
        "/../",
        "/../etc/passwd",
        "/a/../..",
        "/a/../../b",
        "/./../x",
        "/a//../../b",
        // Encoded separators.
        "/a%2Fb",
        "/a%2fb",
        "/%2F%2Fevil",
        "/a%5Cb",
        "/a%5c..%5cb",
        // Encoded dot segments.
        "/%2E%2E/x",
        "/%2e%2e/x",
        "/.%2E/x",
        "/%2E./x",
        "/a/%2E",
        "/a/%2e%2e",
        "/a/%2E/b",
        // Double encoding.
        "/%252F",
        "/%252e%252e/x",
        "/%255C",
        "/%2541",
        "/%25%34%31",
        // Matrix / path parameters (Tomcat `..;`).
        "/a;b",
        "/..;/admin",
        "/public/..;/admin",
        "/a%3Bb",
        "/a%3b",
        // Bad escapes.
        "/%",
        "/%4",
        "/%zz",
        "/%u002F",
        "/%G1",
        // Control characters, literal and encoded.
        "/a\0b",
        "/a%00b",
        "/a\nb",
        "/a%0Ab",
        "/a%0d%0aHost:%20evil",
        "/a\rb",
        "/a\tb",
        "/a%09b",
        "/a\x7Fb",
        "/a%7F",
        "/a\u{85}b",
        "/a%C2%85b",
        // Invalid and overlong UTF-8 (`/` and `.` spelled in two bytes).
        "/%C0%AF",
        "/%C0%AE%C0%AE/x",
        "/%E0%80%AF",
        "/%FF",
        "/%C3",
        // Lookalikes servers fold to `/`, `\`, `.`.
        "/a\u{FF0F}b",
        "/a%EF%BC%8Fb",
        "/\u{FF0E}\u{FF0E}/x",
        "/a\u{2215}b",
        "/a\u{FF3C}b",
        "/a\u{2044}b",
    ];
    for input in cases {
        assert!(
            normalize_path(input).is_err(),
            "normalize_path({input:?}) should be refused, got {:?}",
            normalize_path(input)
        );
    }
    assert!(normalize_path(&long).is_err());
}

#[test]
fn refusals_explain_themselves() {
    let why = |p: &str| normalize_path(p).unwrap_err();
    assert!(why("/../x").contains("above"), "{}", why("/../x"));
    assert!(why("/a%2Fb").contains("%2F"));
    assert!(why("/a?x=1").contains("query"));
    assert!(why("//h/x").contains("host"));
    assert!(why("/%2E%2E/x").contains("dot segment"));
    assert!(why("/%252F").contains("double"));
    assert!(why("/a;b").contains("path parameters"));
}

#[test]
fn normalised_paths_stay_under_the_root_and_are_fixpoints() {
    use proptest::prelude::*;
    let alphabet = prop::sample::select(vec![
        "/", "//", ".", "..", "a", "b", "%2E", "%2e", "%41", "%2F", "%25", "%3B", ";", "\\", "?",
        "%C3%A9", "é", " ", "%", "2E", "~", ":", "@",
    ]);
    let strategy = prop::collection::vec(alphabet, 0..24).prop_map(|v| format!("/{}", v.concat()));
    let mut runner = proptest::test_runner::TestRunner::default();
    runner
        .run(&strategy, |path| {
            if let Ok(out) = normalize_path(&path) {
                prop_assert!(out.starts_with('/'));
                prop_assert!(!out.starts_with("//"));
                prop_assert!(!out.contains("//"));
                prop_assert!(!out.split('/').any(|s| s == "." || s == ".."));
                prop_assert!(!out.contains(['\\', ';', '?', '#', ' ']));
                prop_assert!(!out.to_ascii_uppercase().contains("%2F"));
                prop_assert!(!out.to_ascii_uppercase().contains("%2E"));
                prop_assert_eq!(normalize_path(&out), Ok(out.clone()));
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn agent_headers_are_checked() {
    for (name, value) in [
        ("Accept", "application/json"),
        ("Content-Type", "application/json; charset=utf-8"),
        ("X-Request-Id", "abc-123"),
        ("If-None-Match", "\"etag\""),
        ("X-Tenant", "acme"),
        ("X-Note", "tab\tallowed"),
        ("X-Unicode", "café"),
        ("Idempotency-Key", ""),
    ] {
        assert_eq!(check_header(name, value), Ok(()), "{name}");
    }
    for name in [
        "Connection",
        "connection",
        "Keep-Alive",
        "Proxy-Authorization",
        "proxy-connection",
        "Proxy-Anything",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "HOST",
        "Authorization",
        "authorization",
        "Cookie",
        "Content-Length",
        "Expect",
        "X-Forwarded-For",
        "x-forwarded-host",
        "X-Forwarded-Proto",
        "Forwarded",
        "X-Real-IP",
        "True-Client-IP",
        "Via",
        "X-HTTP-Method-Override",
        "X-Method-Override",
        "X-HTTP-Method",
        "X-Original-URL",
        "X-Rewrite-URL",
        "Accept-Encoding",
    ] {
        assert!(check_header(name, "x").is_err(), "{name} should be refused");
    }
    for (name, value) in [
        ("X-A", "a\r\nHost: evil"),
        ("X-A", "a\nb"),
        ("X-A", "a\rb"),
        ("X-A", "a\0b"),
        ("X-A", "a\x7Fb"),
        ("X-A", "a\x1Bb"),
        ("", "x"),
        ("X A", "x"),
        ("X:A", "x"),
        ("X-A\r\n", "x"),
        ("Ä", "x"),
        ("(x)", "x"),
    ] {
        assert!(
            check_header(name, value).is_err(),
            "{name:?}: {value:?} should be refused"
        );
    }
    assert!(check_header("X-A", &"v".repeat(MAX_HEADER_VALUE_BYTES + 1)).is_err());
    assert!(check_header(&"n".repeat(MAX_HEADER_NAME_BYTES + 1), "v").is_err());
    // The refusal names the header, never echoes the value.
    let e = check_header("Authorization", "Bearer s3cr3t").unwrap_err();
    assert!(e.contains("Authorization") && !e.contains("s3cr3t"), "{e}");
}

#[test]
fn credential_header_names() {
    for ok in ["X-Api-Key", "Authorization", "Cookie", "api_key"] {
        assert_eq!(check_credential_header_name(ok), Ok(()), "{ok}");
    }
    for bad in [
        "Host",
        "Content-Length",
        "Transfer-Encoding",
        "Proxy-Authorization",
        "X-Forwarded-For",
        "X-HTTP-Method-Override",
        "",
        "X Key",
    ] {
        assert!(check_credential_header_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn methods_are_normalised() {
    for (input, want) in [
        ("GET", "GET"),
        ("get", "GET"),
        ("Post", "POST"),
        ("PATCH", "PATCH"),
        ("DELETE", "DELETE"),
        ("PROPFIND", "PROPFIND"),
        ("HEAD", "HEAD"),
        ("OPTIONS", "OPTIONS"),
    ] {
        assert_eq!(normalize_method(input).as_deref(), Ok(want));
    }
    for bad in [
        "",
        "CONNECT",
        "connect",
        "TRACE",
        "trace",
        "TRACK",
        "GET ",
        " GET",
        "G\0T",
        "GET\r\n",
        "GE T",
        "GET/",
        "GÉT",
        "(GET)",
        &"A".repeat(33),
    ] {
        assert!(normalize_method(bad).is_err(), "{bad:?}");
    }
}
