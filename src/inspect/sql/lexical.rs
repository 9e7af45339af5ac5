//! Part of `sql.rs`: lexical strictness, the second wall behind the canonical rendering, and
//! the map from sqlparser's token positions to byte offsets that it and the PostgreSQL
//! agreement check use.
//!
//! Outside string literals and quoted identifiers, the dialects disagree about characters
//! beyond ASCII: U+00A0 ends a `--` comment for sqlparser but not for MariaDB, PostgreSQL
//! reads every byte above 0x7F as part of an identifier, and invisible characters make
//! what a reviewer reads differ from what runs. Such input is `unparsed`, as are the
//! Unicode-escape forms (`U&"..."`, `U&'...'`) the inspector does not model.

use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Whitespace};

use crate::config::ConnectionKind;

/// Byte offsets of sqlparser's (line, column) positions in one text. Columns count
/// characters from 1; lines are split at `\n` only, as sqlparser's tokenizer counts them.
pub(super) struct Offsets {
    /// Byte offset of every character, plus one past the end.
    char_bytes: Vec<usize>,
    /// Index (in characters) of the first character of every line.
    line_chars: Vec<usize>,
}

impl Offsets {
    pub(super) fn new(text: &str) -> Offsets {
        let mut char_bytes = Vec::with_capacity(text.len() + 1);
        let mut line_chars = vec![0];
        for (i, (byte, c)) in text.char_indices().enumerate() {
            char_bytes.push(byte);
            if c == '\n' {
                line_chars.push(i + 1);
            }
        }
        char_bytes.push(text.len());
        Offsets {
            char_bytes,
            line_chars,
        }
    }

    /// The byte offset of `location`; `None` for a position outside the text.
    pub(super) fn byte(&self, location: Location) -> Option<usize> {
        let line = usize::try_from(location.line.checked_sub(1)?).ok()?;
        let column = usize::try_from(location.column.checked_sub(1)?).ok()?;
        let index = self.line_chars.get(line)?.checked_add(column)?;
        self.char_bytes.get(index).copied()
    }

    /// The byte range a token covers.
    pub(super) fn range(&self, token: &TokenWithSpan) -> Option<(usize, usize)> {
        Some((self.byte(token.span.start)?, self.byte(token.span.end)?))
    }
}

/// Whether `sql`, as sqlparser tokenized it, is free of the forms the dialects read
/// differently. `false` makes the statement `unparsed`.
pub(super) fn is_strict(kind: ConnectionKind, sql: &str, tokens: &[TokenWithSpan]) -> bool {
    let offsets = Offsets::new(sql);
    for (i, token) in tokens.iter().enumerate() {
        let Some((start, end)) = offsets.range(token) else {
            return false;
        };
        let Some(text) = sql.get(start..end) else {
            return false;
        };
        match &token.token {
            // Inside a literal every character is data; quoting keeps it there.
            Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::DollarQuotedString(_)
            | Token::HexStringLiteral(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_) => {}
            Token::Word(word) if word.quote_style.is_some() => {}
            Token::UnicodeStringLiteral(_) => return false,
            Token::Whitespace(Whitespace::SingleLineComment { comment, prefix })
                if kind == ConnectionKind::Mysql && prefix == "--" =>
            {
                // MySQL ends `--` as a comment opener only at ASCII whitespace or a control
                // character; sqlparser accepts any Unicode space.
                let opens = comment
                    .chars()
                    .next()
                    .is_none_or(|c| c.is_ascii_whitespace() || c.is_ascii_control());
                if !opens || !text.chars().all(plain) {
                    return false;
                }
            }
            _ if !text.chars().all(plain) => return false,
            // MySQL: sqlparser reads `@` anywhere in a word and words that start with a
            // digit (`NOT@x`, `1.5secrets`); MySQL reads `NOT @x` and `1.5 secrets`.
            Token::Word(word)
                if kind == ConnectionKind::Mysql
                    && (word.value.trim_start_matches('@').contains('@')
                        || word.value.starts_with(|c: char| c.is_ascii_digit())) =>
            {
                return false;
            }
            // PostgreSQL `U&"..."` / `U&'...'`: sqlparser reads `U & "..."`.
            Token::Word(word)
                if kind == ConnectionKind::Postgres
                    && word.value.eq_ignore_ascii_case("u")
                    && unicode_escape_follows(sql, &offsets, tokens, i, end) =>
            {
                return false;
            }
            _ => {}
        }
    }
    true
}

/// `U` at `end` is followed directly by `&` and then directly by a quote.
fn unicode_escape_follows(
    sql: &str,
    offsets: &Offsets,
    tokens: &[TokenWithSpan],
    i: usize,
    end: usize,
) -> bool {
    let Some(amp) = tokens.get(i + 1) else {
        return false;
    };
    if amp.token != Token::Ampersand || offsets.byte(amp.span.start) != Some(end) {
        return false;
    }
    let after = offsets.byte(amp.span.end).unwrap_or(usize::MAX);
    sql.get(after..)
        .is_some_and(|rest| rest.starts_with(['"', '\'']))
}

/// A character every dialect reads the same way outside literals: ASCII other than control
/// characters (the ASCII whitespace all three treat as a separator excepted), or a visible
/// non-ASCII character that is not whitespace.
pub(super) fn plain(c: char) -> bool {
    if c.is_ascii() {
        return !c.is_ascii_control() || matches!(c, '\t' | '\n' | '\r' | '\x0b' | '\x0c');
    }
    !c.is_whitespace() && !c.is_control() && !invisible(c)
}

/// Characters that render as nothing: format characters (Unicode category Cf: zero-width
/// spaces and joiners, bidirectional controls, the BOM, prefixed number signs, tag
/// characters), the Hangul fillers that pass for letters, and the symbols fonts draw blank
/// (the Braille blank U+2800, the object replacement U+FFFC). A reviewer must never read
/// one of them as a space: outside literals they are refused, inside they are shown escaped.
pub(crate) fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{2800}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFFC}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}
