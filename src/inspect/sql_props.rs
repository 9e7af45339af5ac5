//! Property: statements with comment, whitespace, quoting and escape variants injected
//! between their tokens are either refused (`unparsed`, no statement to run) or inspected
//! to a rendering that reads back to the same facts and the same text, and carries no
//! comment. Inputs built only from forms every dialect reads alike are never refused.

use proptest::prelude::*;
use sqlparser::tokenizer::{Token, Whitespace};

use super::*;

/// Separators all three dialects read as whitespace or a comment.
const CLEAN_SEPARATORS: &[&str] = &[" ", "\n", "\t", "  ", " /* c */ ", " -- c\n", "\r\n"];
/// Separators the dialects (or a human) read differently.
const TRICKY_SEPARATORS: &[&str] = &[
    "--\u{a0}",
    "\u{a0}",
    "\u{2003}",
    "\u{200b}",
    " /*\u{a0}*/ ",
    " /* /* n */ */ ",
    " /*! 1 */ ",
    " /*M! 1 */ ",
    " # c\n",
    "--x\n",
    "U&",
    "\u{feff}",
    "\u{3000}",
    " --\u{2028}x\n",
    "\u{0b}",
];
/// Literals every dialect reads alike.
const CLEAN_LITERALS: &[&str] = &["'x'", "'it''s'", "'a b'", "'ünï'", "1", "'%w%'", "-2.5"];
/// Literals whose reading depends on the dialect or its settings.
const TRICKY_LITERALS: &[&str] = &[
    "'a\\'",
    "'a\\\\'",
    "E'\\''",
    "$$q'$$",
    "$t$ -- $t$",
    "U&'\\0041'",
    "U&\"\\0041\"",
    "\"dq\"",
    "`bt`",
    "_utf8mb4'x'",
    "N'x'",
    "X'41'",
    "'a\\'' OR ''='",
];

/// Statement shapes; `?` is a literal's place.
const TEMPLATES: &[&[&str]] = &[
    &[
        "SELECT", "id", ",", "name", "FROM", "items", "WHERE", "id", "=", "?", "ORDER", "BY", "id",
    ],
    &[
        "SELECT",
        "count",
        "(",
        "*",
        ")",
        "FROM",
        "items",
        "i",
        "JOIN",
        "orders",
        "o",
        "ON",
        "o.item_id",
        "=",
        "i.id",
        "WHERE",
        "o.qty",
        ">",
        "?",
    ],
    &[
        "WITH", "c", "AS", "(", "SELECT", "id", "FROM", "items", ")", "SELECT", "id", "FROM", "c",
        "WHERE", "id", "<>", "?",
    ],
    &[
        "UPDATE", "items", "SET", "name", "=", "?", "WHERE", "id", "=", "1",
    ],
    &[
        "SELECT", "lower", "(", "name", ")", "FROM", "items", "WHERE", "name", "LIKE", "?",
    ],
    &["DELETE", "FROM", "items", "WHERE", "name", "=", "?"],
    &["SELECT", "nextval", "(", "?", ")"],
    &[
        "SELECT", "id", "FROM", "items", "WHERE", "id", "IN", "(", "SELECT", "item_id", "FROM",
        "orders", "WHERE", "qty", "=", "?", ")",
    ],
];

#[derive(Debug, Clone)]
struct Case {
    sql: String,
    clean: bool,
}

fn case() -> impl Strategy<Value = Case> {
    let separator = prop_oneof![
        3 => proptest::sample::select(CLEAN_SEPARATORS).prop_map(|s| (s, true)),
        1 => proptest::sample::select(TRICKY_SEPARATORS).prop_map(|s| (s, false)),
    ];
    let literal = prop_oneof![
        2 => proptest::sample::select(CLEAN_LITERALS).prop_map(|s| (s, true)),
        1 => proptest::sample::select(TRICKY_LITERALS).prop_map(|s| (s, false)),
    ];
    (
        proptest::sample::select(TEMPLATES),
        proptest::collection::vec(separator, 24),
        literal,
        any::<bool>(),
    )
        .prop_map(|(template, separators, (literal, literal_clean), lower)| {
            let mut sql = String::new();
            let mut clean = literal_clean;
            for (i, token) in template.iter().enumerate() {
                if i > 0 {
                    let (separator, ok) = separators[i % separators.len()];
                    sql.push_str(separator);
                    clean &= ok;
                }
                let token = if *token == "?" { literal } else { token };
                if lower {
                    sql.push_str(&token.to_lowercase());
                } else {
                    sql.push_str(token);
                }
            }
            Case { sql, clean }
        })
}

fn has_comment(kind: ConnectionKind, sql: &str) -> bool {
    tokenize(kind, sql).is_none_or(|tokens| {
        tokens.iter().any(|t| {
            matches!(
                t.token,
                Token::Whitespace(
                    Whitespace::SingleLineComment { .. } | Whitespace::MultiLineComment(_)
                )
            )
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 384,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn what_runs_reads_back_to_what_was_inspected(case in case()) {
        for kind in [ConnectionKind::Postgres, ConnectionKind::Mysql, ConnectionKind::Sqlite] {
            let Ok(inspected) = inspect(kind, &case.sql) else { continue };
            match &inspected.statement {
                Some(statement) => {
                    prop_assert!(!inspected.facts.unparsed);
                    let again = inspect(kind, statement);
                    prop_assert_eq!(
                        again.as_ref().map(|i| &i.facts),
                        Ok(&inspected.facts),
                        "{:?}: {:?} ran as {:?}", kind, case.sql, statement
                    );
                    prop_assert_eq!(
                        again.as_ref().ok().and_then(|i| i.statement.as_deref()),
                        Some(statement.as_str())
                    );
                    prop_assert!(!has_comment(kind, statement), "{}", statement);
                    prop_assert!(statement.chars().all(|c| !invisible(c)));
                }
                None => prop_assert!(inspected.facts.unparsed),
            }
            if case.clean {
                prop_assert!(
                    inspected.statement.is_some(),
                    "{:?} refused a clean statement: {:?}", kind, case.sql
                );
            }
        }
    }
}
