//! Part of `sql.rs`: PostgreSQL's own grammar as a check on sqlparser.
//!
//! sqlparser gives the facts (its tree also drives lineage and masking); libpg_query — the
//! parser and lexer extracted from the PostgreSQL server source — reads the text that will
//! run and must agree on every fact the policy and masking use. Any disagreement makes the
//! statement `unparsed`. Why both rather than libpg_query alone: lineage, masking and the
//! canonical rendering are built on sqlparser's tree for all three dialects; the server's
//! grammar is the authority that tells when that tree is not what PostgreSQL will run.
//!
//! What must stay true:
//! - Both lexers cut the text that runs into the same tokens at the same byte offsets: a
//!   comment, quote or identifier boundary one of them sees and the other does not is a
//!   disagreement, whatever the grammar later makes of it.
//! - Every relation and function libpg_query finds — anywhere in its tree, walked
//!   generically so no node type can hide one — is one sqlparser reported (a CTE name
//!   excepted), and every write, `SELECT INTO` and locking clause it finds executing is
//!   among sqlparser's statement kinds. sqlparser may report more (fail closed), never less.
//! - Each top-level statement falls in the same class (read, each kind of write, utility…).

use std::collections::{BTreeSet, HashSet};

use serde_json::Value as Json;
use sqlparser::tokenizer::{Token, TokenWithSpan};

use super::helpers::join_parts;
use super::lexical::Offsets;
use super::{Facts, StatementKind};
use crate::config::ConnectionKind;
use crate::inspect::functions::{self, Listing};

/// Stack for the thread libpg_query runs on before the per-token allowance. Decoding its
/// tree (prost, recursive, at most 100 levels) takes over 1 MiB in an unoptimised build.
const STACK_BASE_BYTES: usize = 16 * 1024 * 1024;
/// Per token: libpg_query serialises its tree recursively, one C frame (well under this)
/// per level, and a tree is at most as deep as the text has tokens.
const STACK_PER_TOKEN_BYTES: usize = 1024;

/// Whether PostgreSQL's lexer and grammar agree with sqlparser on `sql` (sqlparser's
/// `tokens`, the kind of each top-level statement, and the `facts`). Runs on its own thread:
/// libpg_query's stack use grows with the tree's depth and exceeds a tokio worker's.
pub(super) fn agrees(
    sql: &str,
    tokens: &[TokenWithSpan],
    top_kinds: &[StatementKind],
    facts: &Facts,
) -> bool {
    let stack = STACK_BASE_BYTES.saturating_add(tokens.len().saturating_mul(STACK_PER_TOKEN_BYTES));
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("pg-grammar".into())
            .stack_size(stack)
            .spawn_scoped(scope, || {
                tokens_agree(sql, tokens) && tree_agrees(sql, top_kinds, facts)
            })
            .ok()
            .and_then(|handle| handle.join().ok())
            .unwrap_or(false)
    })
}

/// Whether PostgreSQL's lexer cuts `sql` exactly where sqlparser did (`tokens`).
fn tokens_agree(sql: &str, tokens: &[TokenWithSpan]) -> bool {
    let Ok(scanned) = pg_query::scan(sql) else {
        return false;
    };
    let offsets = Offsets::new(sql);
    let ours: Option<Vec<(usize, usize)>> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF))
        .map(|t| offsets.range(t))
        .collect();
    let theirs: Option<Vec<(usize, usize)>> = scanned
        .tokens
        .iter()
        .map(|t| Some((usize::try_from(t.start).ok()?, usize::try_from(t.end).ok()?)))
        .collect();
    matches!((ours, theirs), (Some(a), Some(b)) if a == b)
}

/// Whether PostgreSQL's grammar, reading `sql`, finds nothing sqlparser's top-level
/// statement kinds and `facts` left out.
fn tree_agrees(sql: &str, top_kinds: &[StatementKind], facts: &Facts) -> bool {
    let Ok(parsed) = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT) else {
        return false;
    };
    let raw = &parsed.protobuf.stmts;
    if raw.len() != top_kinds.len() {
        return false;
    }
    let mut seen = Seen::default();
    for (raw, ours) in raw.iter().zip(top_kinds) {
        let Some(stmt) = raw.stmt.as_ref() else {
            return false;
        };
        let Ok(tree) = serde_json::to_value(stmt) else {
            return false;
        };
        let Some((key, body)) = node(&tree) else {
            return false;
        };
        if class_of_node(key) != class_of_kind(*ours) {
            return false;
        }
        // Under a plain EXPLAIN nothing runs: names count, kinds do not.
        let executes = key != "ExplainStmt" || explain_analyzes(body);
        seen.walk(&tree, executes);
    }
    seen.covered_by(facts)
}

/// What libpg_query's tree holds that the policy cares about.
#[derive(Default)]
struct Seen {
    tables: BTreeSet<String>,
    ctes: HashSet<String>,
    functions: Vec<String>,
    /// Writes, `SELECT INTO` and locking reads that execute.
    kinds: Vec<StatementKind>,
    /// An operator qualified by a schema other than `pg_catalog`.
    user_operator: bool,
    /// A name the walk could not read.
    unreadable: bool,
}

impl Seen {
    /// Walks every object in the tree. Iterative: the tree is as deep as the statement.
    fn walk(&mut self, tree: &Json, executes: bool) {
        let mut stack = vec![tree];
        while let Some(value) = stack.pop() {
            match value {
                Json::Array(items) => stack.extend(items.iter()),
                Json::Object(map) => {
                    self.object(map, executes);
                    // `FOR UPDATE OF o` names a relation of the FROM list, often by alias;
                    // the relation itself is counted where the FROM list names it.
                    stack.extend(
                        map.iter()
                            .filter(|(key, _)| key.as_str() != "locked_rels")
                            .map(|(_, v)| v),
                    );
                }
                _ => {}
            }
        }
    }

    fn object(&mut self, map: &serde_json::Map<String, Json>, executes: bool) {
        // Typed fields (`InsertStmt.relation`) carry no node tag, so relations and calls are
        // recognised by their fields.
        if map.contains_key("relname") && map.contains_key("relpersistence") {
            let parts: Vec<&str> = ["catalogname", "schemaname", "relname"]
                .iter()
                .filter_map(|k| map.get(*k).and_then(Json::as_str))
                .filter(|s| !s.is_empty())
                .collect();
            match join_parts(&parts) {
                Some(name) => {
                    self.tables.insert(name);
                }
                None => self.unreadable = true,
            }
        }
        if map.contains_key("funcname") && map.contains_key("funcformat") {
            match map
                .get("funcname")
                .and_then(names)
                .and_then(|p| join_parts(&p))
            {
                Some(name) => self.functions.push(name),
                None => self.unreadable = true,
            }
        }
        if let (Some(Json::String(name)), true) = (map.get("ctename"), map.contains_key("ctequery"))
        {
            self.ctes.insert(name.clone());
        }
        if let Some(expr) = map.get("AExpr") {
            let parts = expr.get("name").and_then(names).unwrap_or_default();
            if parts.len() > 1 && parts.first().map(String::as_str) != Some("pg_catalog") {
                self.user_operator = true;
            }
        }
        if !executes {
            return;
        }
        for (tag, kind) in [
            ("InsertStmt", StatementKind::Insert),
            ("UpdateStmt", StatementKind::Update),
            ("DeleteStmt", StatementKind::Delete),
            ("MergeStmt", StatementKind::Merge),
        ] {
            if map.contains_key(tag) {
                self.add_kind(kind);
            }
        }
        if map.contains_key("target_list") && map.contains_key("locking_clause") {
            if map.get("into_clause").is_some_and(|v| !v.is_null()) {
                self.add_kind(StatementKind::SelectInto);
            }
            if map
                .get("locking_clause")
                .and_then(Json::as_array)
                .is_some_and(|l| !l.is_empty())
            {
                self.add_kind(StatementKind::LockingRead);
            }
        }
    }

    fn add_kind(&mut self, kind: StatementKind) {
        if !self.kinds.contains(&kind) {
            self.kinds.push(kind);
        }
    }

    fn covered_by(&self, facts: &Facts) -> bool {
        if self.unreadable || (self.user_operator && !facts.function_unlisted) {
            return false;
        }
        let tables = self.tables.iter().all(|t| {
            facts.tables_read.contains(t)
                || facts.tables_written.contains(t)
                || self.ctes.contains(t)
        });
        let functions = self
            .functions
            .iter()
            .all(|name| facts.functions.contains(name) || system_safe(name));
        let kinds = self.kinds.iter().all(|k| facts.kinds.contains(k));
        tables && functions && kinds
    }
}

/// A call sqlparser may keep as syntax rather than as a call — the grammar turns `EXTRACT`,
/// `TRIM`, `x AT TIME ZONE y`, `SIMILAR TO` into `pg_catalog` calls, and sqlparser parses
/// `substring(x, 1, 2)` as its own expression — is accepted when it is a built-in on the
/// safe list: such a call adds no capability a rule could be asked to stop.
fn system_safe(name: &str) -> bool {
    let bare = name.strip_prefix("pg_catalog.").unwrap_or(name);
    !bare.contains(['.', '"'])
        && matches!(
            functions::lookup(ConnectionKind::Postgres, bare),
            Listing::Safe
        )
}

/// The names in a list of `String` nodes (`{"node": {"String": {"sval": ...}}}`).
fn names(list: &Json) -> Option<Vec<String>> {
    list.as_array()?
        .iter()
        .map(|n| {
            n.get("node")?
                .get("String")?
                .get("sval")?
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// The tag and body of a `Node` (`{"node": {"SelectStmt": {...}}}`).
fn node(tree: &Json) -> Option<(&str, &Json)> {
    let inner = tree.get("node")?.as_object()?;
    let (key, body) = inner.iter().next()?;
    Some((key.as_str(), body))
}

/// `EXPLAIN (ANALYZE ...)`/`EXPLAIN ANALYZE`: any `analyze` option counts as on, whatever its
/// argument (sqlparser's facts then say the statement runs, or the kinds disagree).
fn explain_analyzes(body: &Json) -> bool {
    body.get("options")
        .and_then(Json::as_array)
        .is_some_and(|options| {
            options.iter().any(|o| {
                o.get("node")
                    .and_then(|n| n.get("DefElem"))
                    .and_then(|d| d.get("defname"))
                    .and_then(Json::as_str)
                    .is_some_and(|n| n == "analyze" || n == "analyse")
            })
        })
}

/// What a top-level statement is, coarsely: reads, each kind of write, and the rest.
#[derive(Debug, PartialEq, Eq)]
enum Class {
    Query,
    Insert,
    Update,
    Delete,
    Merge,
    Copy,
    Explain,
    Set,
    Show,
    Transaction,
    Utility,
}

fn class_of_node(key: &str) -> Class {
    match key {
        "SelectStmt" => Class::Query,
        "InsertStmt" => Class::Insert,
        "UpdateStmt" => Class::Update,
        "DeleteStmt" => Class::Delete,
        "MergeStmt" => Class::Merge,
        "CopyStmt" => Class::Copy,
        "ExplainStmt" => Class::Explain,
        "VariableSetStmt" | "DiscardStmt" => Class::Set,
        "VariableShowStmt" => Class::Show,
        "TransactionStmt" => Class::Transaction,
        _ => Class::Utility,
    }
}

fn class_of_kind(kind: StatementKind) -> Class {
    use StatementKind as K;
    match kind {
        K::Select | K::LockingRead | K::SelectInto => Class::Query,
        K::Insert => Class::Insert,
        K::Update => Class::Update,
        K::Delete => Class::Delete,
        K::Merge => Class::Merge,
        K::Copy => Class::Copy,
        K::Explain => Class::Explain,
        K::Set => Class::Set,
        K::Show => Class::Show,
        K::Transaction => Class::Transaction,
        K::Create
        | K::Alter
        | K::Drop
        | K::Truncate
        | K::Privilege
        | K::Dynamic
        | K::Lock
        | K::Maintenance
        | K::Pragma
        | K::Attach
        | K::Other => Class::Utility,
    }
}
