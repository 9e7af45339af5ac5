//! Part of `sql.rs`: the statement Airlock sends to the database — its own rendering of the
//! tree the inspector walked, never the agent's text.
//!
//! Why: a comment, a space or an escape that the inspector's lexer and the server's lexer
//! read differently is a way to run something the inspector did not see. Rendering from the
//! tree drops every comment and re-spells every token, so whatever such a differential hid
//! is either absent from what runs or makes it fail.
//!
//! What must stay true:
//! - Every string literal is quoted by [`quote_string`], which escapes with the one rule
//!   the session's pinned settings make unambiguous (PostgreSQL runs with
//!   `standard_conforming_strings = on`; MySQL/MariaDB with backslash escapes on and
//!   `ANSI_QUOTES` off, see the backends). sqlparser's own printer skips doubling a quote
//!   that follows a backslash, which would let a literal close early.
//! - The rendering is a fixpoint, checked by the caller: the rendered text parses to a tree
//!   that renders to the same text and yields the same facts. A form the printer gets wrong
//!   is therefore refused (`unparsed`), never run in a shape the inspector did not see.

use std::ops::ControlFlow;

use sqlparser::ast::{Statement, Value, ValueWithSpan, VisitMut, VisitorMut};

use crate::config::ConnectionKind;

/// The text that runs for `statements`, which it rewrites in place (their literals; a clone
/// of a deep tree would need a much larger stack). Statements are joined by `;` (a request
/// holds one; more are refused before anything runs, but the facts of all are reported).
pub(super) fn render(kind: ConnectionKind, statements: &mut [Statement]) -> String {
    let mut out = String::new();
    for (i, statement) in statements.iter_mut().enumerate() {
        if i > 0 {
            out.push_str(";\n");
        }
        // `QuoteLiterals` never breaks, so the flow result carries nothing.
        let _ = statement.visit(&mut QuoteLiterals { kind });
        out.push_str(&statement.to_string());
    }
    out
}

/// Replaces every character-string literal by Airlock's quoting of its value. The quoted
/// text is carried in a `Placeholder`, the one value sqlparser prints verbatim; the tree is
/// only printed after this, never inspected.
struct QuoteLiterals {
    kind: ConnectionKind,
}

impl VisitorMut for QuoteLiterals {
    type Break = ();

    fn pre_visit_value(&mut self, value: &mut ValueWithSpan) -> ControlFlow<()> {
        let quoted = match &value.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => {
                quote_string(self.kind, s)
            }
            Value::NationalStringLiteral(s) => format!("N{}", quote_string(self.kind, s)),
            // A dollar-quoted body is a plain string with another delimiter.
            Value::DollarQuotedString(d) => quote_string(self.kind, &d.value),
            // `E'...'` keeps sqlparser's printer, which escapes both `\` and `'`; numbers,
            // hex/bit strings, booleans, NULL and parameters carry no free text.
            _ => return ControlFlow::Continue(()),
        };
        value.value = Value::Placeholder(quoted);
        ControlFlow::Continue(())
    }
}

/// A string literal holding exactly `value`, as the pinned session reads it.
pub(super) fn quote_string(kind: ConnectionKind, value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            // Backslash escapes are on in Airlock's MySQL sessions: a backslash is doubled,
            // and a NUL is spelled out rather than sent raw.
            '\\' if kind == ConnectionKind::Mysql => out.push_str("\\\\"),
            '\0' if kind == ConnectionKind::Mysql => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}
