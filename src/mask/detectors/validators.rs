//! The validators behind the built-in detectors: each takes the bytes at a candidate
//! position and says whether a real value (a Luhn-valid card, a mod-97 IBAN, a routable
//! SSN, ...) starts there and where it ends. Split from `detectors.rs`, which owns the scan
//! that calls them; they share its private types through `super::*`.

use super::*;

/// Start of the run of `class` bytes ending at `p` (exclusive), looking back at most `max`
/// bytes: the earliest position a backward-anchored candidate (email local part, URL scheme,
/// IPv6 run) can start at.
pub(super) fn back_run(b: &[u8], p: usize, max: usize, class: fn(u8) -> bool) -> usize {
    let lo = p.saturating_sub(max + 1);
    let mut j = p;
    while j > lo && class(b[j - 1]) {
        j -= 1;
    }
    j
}

/// Largest char boundary ≤ `i` (for valid UTF-8; on other bytes, `i` unless it points at a
/// continuation byte).
pub(super) fn char_floor(b: &[u8], mut i: usize) -> usize {
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
pub(super) fn private_key(v: &View, s: usize, ends: &[(usize, Step<usize>)]) -> Step<Option<Hit>> {
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
pub(super) fn pem_end(v: &View, i: usize) -> Step<Option<usize>> {
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

pub(super) fn is_b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// Three (JWS) or five (JWE) base64url segments whose header decodes to a JSON object with
/// an `alg`.
pub(super) fn jwt(v: &View, s: usize) -> Step<Option<Hit>> {
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
pub(super) fn aws_key_id(v: &View, s: usize) -> Step<Option<Hit>> {
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

pub(super) fn is_secret_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'/' || c == b'+'
}

/// Runs of exactly 40 base64 characters starting within the keyword window after `ke`.
pub(super) fn aws_secret_window(v: &View, ke: usize) -> Step<Vec<(usize, usize)>> {
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
pub(super) fn mixed_secret(s: &[u8]) -> bool {
    s.iter().any(u8::is_ascii_uppercase)
        && s.iter().any(u8::is_ascii_lowercase)
        && s.iter()
            .any(|c| c.is_ascii_digit() || *c == b'/' || *c == b'+')
}

pub(super) fn prefixed(v: &View, s: usize, idx: usize) -> Step<Option<Hit>> {
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

pub(super) fn is_bearer_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'~' | b'+' | b'/' | b'-')
}

/// `Bearer <token>`: masks the token (16+ characters mixing letters and digits, so that
/// prose like "bearer authentication" stays).
pub(super) fn bearer(v: &View, s: usize) -> Step<Option<Hit>> {
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
pub(super) fn basic(v: &View, s: usize) -> Step<Option<Hit>> {
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
pub(super) fn iban_len(cc: [u8; 2]) -> Option<usize> {
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
pub(super) fn iban(v: &View, s: usize) -> Step<Option<Hit>> {
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
pub(super) fn card(v: &View, s: usize) -> Step<Option<Hit>> {
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

pub(super) fn card_ok(b: &[u8], s: usize, e: usize) -> bool {
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

pub(super) fn luhn(d: &[u8]) -> bool {
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
pub(super) fn issuer_ok(d: &[u8]) -> bool {
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
pub(super) fn ssn(v: &View, s: usize) -> Step<Option<Hit>> {
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
pub(super) fn phone_intl(v: &View, s: usize) -> Step<Option<Hit>> {
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
pub(super) fn phone_nanp(v: &View, s: usize) -> Step<Option<Hit>> {
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
pub(super) fn ipv4(v: &View, s: usize) -> Step<Option<Hit>> {
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

pub(super) fn is_v6(c: u8) -> bool {
    c.is_ascii_hexdigit() || c == b':' || c == b'.'
}

/// The run of hex digits, colons and dots around the colon at `p`, parsed by the standard
/// library. Returns the hit (if any) and the end of the run, so the other colons of the run
/// are not examined again. Needs a decimal digit or three groups (`a::b` in prose or code
/// stays), and non-word characters around it (`std::vec` stays).
pub(super) fn ipv6_at(v: &View, p: usize) -> Step<(Option<Hit>, usize)> {
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

pub(super) fn is_local(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

/// File extensions that look like top-level domains after an `@` (`icon@2x.png`).
pub(super) const NOT_TLD: [&[u8]; 10] = [
    b"png", b"jpg", b"jpeg", b"gif", b"svg", b"webp", b"ico", b"css", b"js", b"bmp",
];

/// `local@domain.tld` around the `@` at `a`: local part 1–64 characters of
/// `[A-Za-z0-9._%+-]` (no leading/trailing dot), at least two domain labels, alphabetic
/// TLD of 2+ letters.
pub(super) fn email_at(v: &View, a: usize) -> Step<Option<Hit>> {
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

pub(super) fn is_scheme(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'.' | b'-')
}

/// `scheme://user:PASSWORD@host`: masks only the password (the userinfo up to the last `@`
/// of the authority). A password containing an unencoded `/`, `?`, `#` or whitespace ends
/// the authority early and is not recognised.
pub(super) fn url_password(v: &View, p: usize) -> Step<Option<Hit>> {
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
