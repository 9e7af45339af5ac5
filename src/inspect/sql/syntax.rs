//! Part of `sql.rs`: why a statement does not parse, for the agent that sent it.
//!
//! Only asked on the refusal path of a statement the inspector found `unparsed`, so its
//! cost (a few extra parses) is never paid by a statement that runs. What must stay true:
//! - On PostgreSQL the server's own grammar (libpg_query) decides what a syntax error is:
//!   a statement it accepts is never reported as one, whatever sqlparser thinks of it (that
//!   is a limit of the inspector, reported as such by the caller).
//! - On MySQL/MariaDB and SQLite there is no server grammar to ask, so the message is
//!   sqlparser's, and says so: a construct the server would accept but sqlparser does not
//!   is still refused (the inspector cannot check it), just not blamed on the agent's SQL.
//! - Positions are 1-based character offsets into the statement as sent, like PostgreSQL's
//!   own `position` field, with the line and column they fall on.

use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Token, Tokenizer};

use super::{RECURSION_LIMIT, STACK_BASE_BYTES, STACK_PER_TOKEN_BYTES, dialect};
use crate::config::ConnectionKind;

/// A statement the parser rejects, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Which parser rejected it: `postgresql` (the server's grammar) or `sqlparser`.
    pub parser: &'static str,
    pub message: String,
    /// 1-based character offset of the offending token, when the parser says where.
    pub position: Option<usize>,
    pub line: Option<u64>,
    pub column: Option<u64>,
}

/// Why `sql` does not parse, or `None` when the parser that decides accepts it.
pub fn syntax_error(kind: ConnectionKind, sql: &str) -> Option<SyntaxError> {
    // Both parsers recurse with the depth of the input; give them a stack that grows with
    // it, as inspection does.
    let stack = STACK_BASE_BYTES.saturating_add(sql.len().saturating_mul(STACK_PER_TOKEN_BYTES));
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("sql-syntax".into())
            .stack_size(stack)
            .spawn_scoped(scope, || match kind {
                ConnectionKind::Postgres => postgres(sql),
                _ => sqlparser(kind, sql),
            })
            .ok()
            .and_then(|handle| handle.join().ok())
            .flatten()
    })
}

/// libpg_query's verdict. Its Rust binding keeps the server's message but not the cursor
/// position, so the position is found by bisection over the server's own tokens: the
/// grammar is LALR, so a prefix that ends before the offending token is either complete or
/// fails "at end of input", and every prefix that includes it fails at it.
fn postgres(sql: &str) -> Option<SyntaxError> {
    let message = match pg_query::parse(sql, 0) {
        Ok(_) => return None,
        Err(pg_query::Error::Parse(message)) => message,
        Err(other) => other.to_string(),
    };
    let fails_inside = |end: usize| match sql.get(..end).map(|prefix| pg_query::parse(prefix, 0)) {
        Some(Err(pg_query::Error::Parse(m))) => !m.ends_with("at end of input"),
        _ => false,
    };
    // The server reports the end of input as one past the last character, spaces included.
    let offset = if message.ends_with("at end of input") {
        Some(sql.len())
    } else {
        pg_query::scan(sql).ok().and_then(|scanned| {
            let spans: Vec<(usize, usize)> = scanned
                .tokens
                .iter()
                .filter_map(|t| {
                    Some((usize::try_from(t.start).ok()?, usize::try_from(t.end).ok()?))
                })
                .collect();
            // The first token whose prefix fails inside: the offending one.
            let first = spans.partition_point(|&(_, end)| !fails_inside(end));
            spans.get(first).map(|&(start, _)| start)
        })
    };
    let (position, line, column) = match offset {
        Some(o) => {
            let (line, column) = line_and_column(sql, o);
            (Some(char_position(sql, o)), Some(line), Some(column))
        }
        None => (None, None, None),
    };
    Some(SyntaxError {
        parser: "postgresql",
        message,
        position,
        line,
        column,
    })
}

/// sqlparser's verdict, for dialects whose server grammar is not embedded.
fn sqlparser(kind: ConnectionKind, sql: &str) -> Option<SyntaxError> {
    let dialect = dialect(kind);
    let tokens = match Tokenizer::new(dialect.as_ref(), sql)
        .with_unescape(true)
        .tokenize_with_location()
    {
        Ok(tokens) => tokens,
        Err(e) => return Some(at_location(sql, e.message, e.location)),
    };
    let mut parser = Parser::new(dialect.as_ref())
        .with_recursion_limit(RECURSION_LIMIT)
        .with_tokens_with_locations(tokens);
    match parser.parse_statements() {
        // Too deep for the inspector is its limit, not the agent's syntax error.
        Err(sqlparser::parser::ParserError::RecursionLimitExceeded) => None,
        Err(e) => {
            // sqlparser appends " at Line: L, Column: C" to its message.
            let text = e.to_string();
            let text = text.strip_prefix("sql parser error: ").unwrap_or(&text);
            let (message, location) = match text.rsplit_once(" at Line: ") {
                Some((message, at)) => (message.to_string(), parse_location(at)),
                None => (text.to_string(), None),
            };
            Some(match location {
                Some(location) => at_location(sql, message, location),
                None => SyntaxError {
                    parser: "sqlparser",
                    message,
                    position: None,
                    line: None,
                    column: None,
                },
            })
        }
        Ok(statements) if statements.is_empty() => Some(SyntaxError {
            parser: "sqlparser",
            message: "no statement found".into(),
            position: None,
            line: None,
            column: None,
        }),
        Ok(_) => {
            let next = parser.peek_token_ref();
            if next.token == Token::EOF {
                return None;
            }
            let message = format!("unexpected `{}` after a complete statement", next.token);
            Some(at_location(sql, message, next.span.start))
        }
    }
}

fn parse_location(at: &str) -> Option<Location> {
    let (line, column) = at.split_once(", Column: ")?;
    Some(Location::new(
        line.trim().parse().ok()?,
        column.trim().parse().ok()?,
    ))
}

fn at_location(sql: &str, message: String, location: Location) -> SyntaxError {
    let position = offset_of(sql, location).map(|o| char_position(sql, o));
    SyntaxError {
        parser: "sqlparser",
        message,
        position,
        line: (location.line > 0).then_some(location.line),
        column: (location.column > 0).then_some(location.column),
    }
}

/// The byte offset of a 1-based (line, character column) location.
fn offset_of(sql: &str, location: Location) -> Option<usize> {
    let line_start = if location.line <= 1 {
        0
    } else {
        let skip = usize::try_from(location.line).ok()?.checked_sub(2)?;
        sql.match_indices('\n').nth(skip)?.0 + 1
    };
    let column = usize::try_from(location.column).ok()?.checked_sub(1)?;
    let rest = sql.get(line_start..)?;
    Some(
        line_start
            + rest
                .char_indices()
                .nth(column)
                .map_or(rest.len(), |(i, _)| i),
    )
}

/// 1-based character position of byte offset `offset`.
fn char_position(sql: &str, offset: usize) -> usize {
    sql.get(..offset).map_or(0, |s| s.chars().count()) + 1
}

/// 1-based line and character column of byte offset `offset`.
fn line_and_column(sql: &str, offset: usize) -> (u64, u64) {
    let before = sql.get(..offset).unwrap_or(sql);
    let line = before.matches('\n').count() as u64 + 1;
    let column = before
        .rsplit_once('\n')
        .map_or(before, |(_, last)| last)
        .chars()
        .count() as u64
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_typo_is_reported_at_the_offending_word() {
        let e = syntax_error(ConnectionKind::Postgres, "SELEC * FROM t");
        let e = e.expect("a syntax error");
        assert_eq!(e.parser, "postgresql");
        assert!(
            e.message.contains("syntax error at or near \"SELEC\""),
            "{e:?}"
        );
        assert_eq!((e.position, e.line, e.column), (Some(1), Some(1), Some(1)));

        let e = syntax_error(ConnectionKind::Postgres, "SELECT a,\n  FROM t WHERE");
        let e = e.expect("a syntax error");
        assert!(e.message.contains("\"FROM\""), "{e:?}");
        assert_eq!((e.position, e.line, e.column), (Some(13), Some(2), Some(3)));
    }

    #[test]
    fn postgres_repeated_token_is_located_at_the_failing_occurrence() {
        // `t` appears twice; only the second one is wrong.
        let e = syntax_error(ConnectionKind::Postgres, "SELECT t FROM t t t");
        let e = e.expect("a syntax error");
        assert_eq!(e.position, Some(19), "{e:?}");
    }

    #[test]
    fn postgres_end_of_input_points_past_the_text() {
        let e = syntax_error(ConnectionKind::Postgres, "SELECT * FROM t WHERE ");
        let e = e.expect("a syntax error");
        assert!(e.message.ends_with("at end of input"), "{e:?}");
        assert_eq!(e.position, Some(23));
    }

    #[test]
    fn postgres_accepted_by_the_server_is_no_syntax_error() {
        // The server's grammar accepts this, whatever the inspector makes of it.
        assert_eq!(
            syntax_error(
                ConnectionKind::Postgres,
                "SELECT 1 FROM t FOR KEY SHARE SKIP LOCKED"
            ),
            None
        );
        assert_eq!(syntax_error(ConnectionKind::Postgres, "SELECT 1"), None);
    }

    #[test]
    fn character_positions_count_characters_not_bytes() {
        let e = syntax_error(ConnectionKind::Postgres, "SELECT 'é' FROM t t2 t3");
        let e = e.expect("a syntax error");
        assert_eq!(e.position, Some(22), "{e:?}");
    }

    #[test]
    fn mysql_and_sqlite_report_sqlparser_message_and_location() {
        for kind in [ConnectionKind::Mysql, ConnectionKind::Sqlite] {
            let e = syntax_error(kind, "SELECT * FORM t").expect("a syntax error");
            assert_eq!(e.parser, "sqlparser");
            assert!(!e.message.contains("at Line"), "{e:?}");
            // `FORM` is where the statement stops making sense.
            assert!(e.message.contains("FORM"), "{e:?}");
            assert_eq!((e.line, e.column), (Some(1), Some(10)), "{e:?}");
            assert_eq!(e.position, Some(10));
            assert_eq!(syntax_error(kind, "SELECT 1"), None);
            let e = syntax_error(kind, "SELECT 'abc").expect("unterminated");
            assert!(e.message.to_lowercase().contains("unterminated"), "{e:?}");
        }
    }
}
