//! HTTP request inspection for `http` connections: the agent's method, path and headers
//! turned into the one canonical form that policy globs match, review shows, the audit
//! records — and that is sent upstream. Pure functions, no I/O.
//!
//! Invariants:
//! - [`normalize_path`] returns a path that is both what the policy judged and what the
//!   backend sends: the backend appends it to the connection's base path unchanged (and
//!   checks that URL parsing did not change it). It is idempotent: normalising its output
//!   gives the same output.
//! - A path can never leave the connection's base: no scheme or authority (`//host`,
//!   `http:`), no `..` above the root (refused, not clamped: the caller learns its path was
//!   wrong instead of silently reaching another resource), and nothing a server might
//!   decode or fold into a separator or a dot segment after we judged it — percent-encoded
//!   `/`, `\`, `;`, control characters, encoded dot segments (`%2E%2E`), double encoding
//!   (`%252F`), overlong or invalid UTF-8 (`%C0%AF`), and Unicode slash/dot lookalikes that
//!   some servers fold to ASCII.
//! - `;` (matrix / path parameters) is refused literal or encoded: servers such as Tomcat
//!   strip `;...` from a segment before routing, so `/public/..;/admin` would reach
//!   `/admin` while a policy glob saw `/public/...`. REST APIs rarely need it.
//! - Agent headers can never carry credentials, hop-by-hop or framing headers, client-address
//!   claims, or method/path overrides (`X-HTTP-Method-Override`, `X-Original-URL`) that
//!   would make the upstream act on something other than what the policy judged.

/// Longest path accepted, in bytes, before normalisation.
pub const MAX_PATH_BYTES: usize = 8 * 1024;
/// Longest header name accepted.
pub const MAX_HEADER_NAME_BYTES: usize = 256;
/// Longest header value accepted.
pub const MAX_HEADER_VALUE_BYTES: usize = 8 * 1024;
/// Longest method accepted.
const MAX_METHOD_BYTES: usize = 32;

/// Normalises a path relative to the connection's `base_url` (see the module invariants).
///
/// Rules, in order:
/// - non-empty, at most [`MAX_PATH_BYTES`], starts with one `/` (`//host` is an authority);
/// - refused anywhere: `\`, `?` (the query goes in `query`), `#`, `;`, control characters,
///   a `%` not followed by two hex digits;
/// - `%XX` of an unreserved character (`A-Z a-z 0-9 - . _ ~`) is decoded; `%2F`, `%5C`,
///   `%3B` and encoded control characters are refused; other escapes stay, hex upper-cased;
/// - characters not allowed literally in a path (space, `"`, `<`, `>`, `[`, `]`, `^`,
///   `` ` ``, `{`, `|`, `}`, non-ASCII) are percent-encoded (UTF-8, upper-case hex);
/// - each segment's decoded bytes must be UTF-8 and free of slash/dot lookalikes;
/// - empty segments are dropped (`/a//b` is `/a/b`), `.` segments removed, `..` removes
///   the previous segment and is refused when there is none; a dot segment written with an
///   escape (`%2E`) is refused;
/// - a trailing `/` (or a final `.`/`..`) is kept: `/users/` and `/users` differ in HTTP;
/// - the result must not contain `%25` followed by two hex digits (a double encoding a
///   server might decode twice).
pub fn normalize_path(path: &str) -> Result<String, String> {
    if path.is_empty() {
        return Err(
            "empty path; give one starting with `/`, relative to the connection's base_url".into(),
        );
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(format!("path longer than {MAX_PATH_BYTES} bytes"));
    }
    if !path.starts_with('/') {
        return Err(
            "the path must start with `/`: it is relative to the connection's base_url, never a URL"
                .into(),
        );
    }
    if path.starts_with("//") {
        return Err(
            "a path starting with `//` names a host; give a path under the base_url".into(),
        );
    }
    let mut stack: Vec<String> = Vec::new();
    let mut trailing_slash = false;
    // The leading `/` gives an empty first piece.
    for raw in path.split('/').skip(1) {
        let segment = normalize_segment(raw)?;
        trailing_slash = false;
        match segment {
            Segment::Empty => trailing_slash = true,
            Segment::Dot => trailing_slash = true,
            Segment::DotDot => {
                if stack.pop().is_none() {
                    return Err("`..` climbs above the connection's base_url".into());
                }
                trailing_slash = true;
            }
            Segment::Name(s) => stack.push(s),
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for s in &stack {
        out.push('/');
        out.push_str(s);
    }
    if stack.is_empty() || trailing_slash {
        out.push('/');
    }
    if has_double_encoding(&out) {
        return Err(
            "`%25` followed by two hex digits is a double encoding; refused because a server could decode it twice"
                .into(),
        );
    }
    Ok(out)
}

enum Segment {
    Empty,
    Dot,
    DotDot,
    Name(String),
}

/// Characters a path segment may hold literally (RFC 3986 `pchar` minus `;`, which is
/// refused, and `%`, which always starts an escape).
fn literal_ok(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b':'
                | b'@'
        )
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Unicode characters some servers fold (NFKC, "best fit" code pages) into `/`, `\` or `.`
/// after Airlock judged the path.
const LOOKALIKES: &[char] = &[
    '\u{FF0F}', // FULLWIDTH SOLIDUS
    '\u{FF3C}', // FULLWIDTH REVERSE SOLIDUS
    '\u{FF0E}', // FULLWIDTH FULL STOP
    '\u{FE52}', // SMALL FULL STOP
    '\u{FE68}', // SMALL REVERSE SOLIDUS
    '\u{2024}', // ONE DOT LEADER
    '\u{2215}', // DIVISION SLASH
    '\u{2044}', // FRACTION SLASH
    '\u{29F8}', // BIG SOLIDUS
];

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_escape(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0x0F)]));
}

/// One segment (between two `/`): its canonical spelling, or what kind of dot segment it is.
fn normalize_segment(raw: &str) -> Result<Segment, String> {
    if raw.is_empty() {
        return Ok(Segment::Empty);
    }
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    // The segment's bytes as the server will see them after one decoding.
    let mut decoded: Vec<u8> = Vec::with_capacity(raw.len());
    let mut escaped = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_value);
                let lo = bytes.get(i + 2).copied().and_then(hex_value);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err("`%` must be followed by two hex digits".into());
                };
                let v = (hi << 4) | lo;
                match v {
                    b'/' => return Err("an encoded `/` (%2F) is refused in paths".into()),
                    b'\\' => return Err("an encoded `\\` (%5C) is refused in paths".into()),
                    b';' => return Err("an encoded `;` (%3B) is refused in paths".into()),
                    0x00..=0x1F | 0x7F => {
                        return Err("an encoded control character is refused in paths".into());
                    }
                    _ => {}
                }
                escaped = true;
                decoded.push(v);
                if unreserved(v) {
                    out.push(char::from(v));
                } else {
                    push_escape(&mut out, v);
                }
                i += 3;
            }
            b'\\' => return Err("`\\` is refused in paths (some servers read it as `/`)".into()),
            b'?' => {
                return Err("`?` is refused in the path: give query parameters in `query`".into());
            }
            b'#' => return Err("`#` (a fragment) is refused in the path".into()),
            b';' => {
                return Err(
                    "`;` (path parameters) is refused: some servers drop what follows it when routing"
                        .into(),
                );
            }
            0x00..=0x1F | 0x7F => return Err("control characters are refused in paths".into()),
            _ if literal_ok(b) => {
                decoded.push(b);
                out.push(char::from(b));
                i += 1;
            }
            _ => {
                // Not allowed literally (space, `"`, `<`, ..., or a byte of a non-ASCII
                // character): encoded, as a browser would.
                decoded.push(b);
                push_escape(&mut out, b);
                i += 1;
            }
        }
    }
    let text = std::str::from_utf8(&decoded)
        .map_err(|_| "percent-encoded bytes in the path are not UTF-8".to_string())?;
    if text.chars().any(char::is_control) {
        return Err("control characters are refused in paths".into());
    }
    if text.contains(LOOKALIKES) {
        return Err(
            "a Unicode lookalike of `/`, `\\` or `.` is refused in paths (servers may fold it)"
                .into(),
        );
    }
    match text {
        "." | ".." if escaped => Err("a percent-encoded dot segment (%2E) is refused".into()),
        "." => Ok(Segment::Dot),
        ".." => Ok(Segment::DotDot),
        _ => Ok(Segment::Name(out)),
    }
}

fn has_double_encoding(s: &str) -> bool {
    let b = s.as_bytes();
    b.windows(5).any(|w| {
        w[0] == b'%'
            && w[1] == b'2'
            && w[2] == b'5'
            && hex_value(w[3]).is_some()
            && hex_value(w[4]).is_some()
    })
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// Why a header name is never the agent's to send, or `None`. Lower-case input.
fn reserved_reason(lower: &str) -> Option<&'static str> {
    const HOP_BY_HOP: &[&str] = &[
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    const FRAMING: &[&str] = &["host", "content-length", "expect"];
    const CREDENTIALS: &[&str] = &["authorization", "cookie"];
    const CLIENT_ADDRESS: &[&str] = &[
        "forwarded",
        "x-real-ip",
        "x-client-ip",
        "true-client-ip",
        "client-ip",
        "x-cluster-client-ip",
        "via",
    ];
    // Each makes some servers or frameworks act on another method or path than the one
    // the policy judged.
    const OVERRIDES: &[&str] = &[
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-url",
        "x-rewrite-url",
        "x-original-uri",
        "x-override-url",
    ];
    if HOP_BY_HOP.contains(&lower) || lower.starts_with("proxy-") {
        Some("a hop-by-hop header is Airlock's connection to manage")
    } else if FRAMING.contains(&lower) {
        Some("Airlock sets the request's host and framing")
    } else if CREDENTIALS.contains(&lower) {
        Some("credentials are Airlock's: the connection adds them")
    } else if CLIENT_ADDRESS.contains(&lower) || lower.starts_with("x-forwarded-") {
        Some("client-address and forwarding headers are refused (they could spoof an origin)")
    } else if OVERRIDES.contains(&lower) {
        Some(
            "method and URL override headers are refused: the upstream must act on what was judged",
        )
    } else if lower == "accept-encoding" {
        Some("Airlock asks for an uncompressed body, which it must read to mask")
    } else if lower == "range" || lower == "if-range" {
        // A slice of a JSON document is not JSON: JSON-path rules could not find the
        // protected value in it.
        Some("range requests are refused: a partial body cannot be masked with certainty")
    } else {
        None
    }
}

fn check_header_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_HEADER_VALUE_BYTES {
        return Err(format!(
            "header value longer than {MAX_HEADER_VALUE_BYTES} bytes"
        ));
    }
    if value.contains(['\r', '\n']) {
        return Err("CR and LF are refused in header values".into());
    }
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7F) {
        return Err("control characters are refused in header values".into());
    }
    Ok(())
}

fn check_header_name_syntax(name: &str) -> Result<(), String> {
    if name.len() > MAX_HEADER_NAME_BYTES {
        return Err(format!(
            "header name longer than {MAX_HEADER_NAME_BYTES} bytes"
        ));
    }
    if !is_token(name) {
        return Err(format!(
            "`{}` is not a valid header name",
            name.escape_debug()
        ));
    }
    Ok(())
}

/// Checks one header the agent (or the connection's fixed `headers`) asks to send. Refuses
/// hop-by-hop headers (`Connection`, `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`,
/// `Transfer-Encoding`, `Upgrade`), `Host`, `Content-Length`, `Expect`, credentials
/// (`Authorization`, `Cookie`), forwarding and client-address claims (`Forwarded`,
/// `X-Forwarded-*`, `X-Real-IP`, `Via`, ...), method/URL overrides, `Accept-Encoding`, and
/// CR, LF or other control characters in the value.
pub fn check_header(name: &str, value: &str) -> Result<(), String> {
    check_header_name_syntax(name)?;
    if let Some(reason) = reserved_reason(&name.to_ascii_lowercase()) {
        return Err(format!("header `{name}` is refused: {reason}"));
    }
    check_header_value(value).map_err(|m| format!("header `{name}`: {m}"))
}

/// Checks the name of the header a connection's `auth = { type = "header" }` puts its
/// secret in: any valid name except those Airlock manages itself (hop-by-hop, `Host`,
/// framing, forwarding, overrides). `Authorization` and `Cookie` are allowed here — this
/// is the connection's own credential.
pub fn check_credential_header_name(name: &str) -> Result<(), String> {
    check_header_name_syntax(name)?;
    let lower = name.to_ascii_lowercase();
    match reserved_reason(&lower) {
        Some(_) if lower == "authorization" || lower == "cookie" => Ok(()),
        Some(reason) => Err(format!(
            "header `{name}` cannot carry a credential: {reason}"
        )),
        None => Ok(()),
    }
}

/// The method as sent: an upper-cased token; `CONNECT` (a tunnel), `TRACE` and `TRACK`
/// (echo the request, credentials included) are refused.
pub fn normalize_method(method: &str) -> Result<String, String> {
    if method.is_empty() {
        return Err("empty method".into());
    }
    if method.len() > MAX_METHOD_BYTES || !is_token(method) {
        return Err(format!(
            "`{}` is not an HTTP method",
            method.chars().take(40).collect::<String>().escape_debug()
        ));
    }
    let upper = method.to_ascii_uppercase();
    if matches!(upper.as_str(), "CONNECT" | "TRACE" | "TRACK") {
        return Err(format!("method {upper} is refused"));
    }
    Ok(upper)
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
