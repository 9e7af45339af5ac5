//! The catalogue of built-in guardrail rules, switched on by id:
//!
//! ```toml
//! [[rules]]
//! builtin = "deny-ddl"
//! connections = ["prod-*"]      # optional, default every connection
//! principals = ["group:agents"] # optional, default everyone
//! ```
//!
//! Ids are stable: they appear in responses and audit records, and operators write them in
//! config. Never rename one; add a new id instead.

use super::{Action, Match};
use crate::inspect::StatementKind as K;
use crate::inspect::shell::CommandEffect as E;
use crate::inspect::shell::ShellFeature as S;
use crate::inspect::sql::FunctionClass as F;

pub struct Builtin {
    pub id: &'static str,
    pub action: Action,
    pub matcher: Match,
    pub message: &'static str,
}

fn kinds(k: &[K]) -> Option<Vec<K>> {
    Some(k.to_vec())
}

fn classes(c: &[F]) -> Option<Vec<F>> {
    Some(c.to_vec())
}

/// Catalogue tables and views that show what other principals run, sample values of any
/// column (planner statistics), or credentials. A pattern without a dot matches the name in
/// any schema (`pg_stats` is `pg_catalog.pg_stats` too); a same-named user table is caught
/// as well, which is the safe side.
const EXPOSING_CATALOGS: &[&str] = &[
    // PostgreSQL: planner statistics hold most-common values and histogram bounds.
    "pg_stats",
    "pg_stats_ext",
    "pg_stats_ext_exprs",
    "pg_statistic",
    "pg_statistic_ext",
    "pg_statistic_ext_data",
    // PostgreSQL: live sessions, their statements, locks and peers.
    "pg_stat_activity",
    "pg_stat_statements",
    "pg_stat_statements_info",
    "pg_locks",
    "pg_prepared_xacts",
    "pg_stat_replication",
    "pg_stat_wal_receiver",
    "pg_stat_subscription",
    "pg_stat_ssl",
    "pg_stat_gssapi",
    // PostgreSQL: credentials and server configuration files.
    "pg_authid",
    "pg_shadow",
    "pg_user_mappings",
    "pg_hba_file_rules",
    "pg_ident_file_mappings",
    "pg_file_settings",
    // MySQL / MariaDB: live sessions and their statements, statement history, logs.
    "information_schema.processlist",
    "information_schema.innodb_trx",
    "performance_schema.*",
    "sys.*",
    "mysql.general_log",
    "mysql.slow_log",
    "mysql.user",
    "mysql.global_priv",
];

fn catalogue() -> Vec<Builtin> {
    vec![
        Builtin {
            id: "deny-unbounded-write",
            action: Action::Deny,
            matcher: Match {
                where_required: Some(true),
                ..Match::default()
            },
            message: "UPDATE and DELETE need a WHERE clause; add one that names the rows to change",
        },
        Builtin {
            id: "deny-ddl",
            action: Action::Deny,
            matcher: Match {
                statements: kinds(&[K::Create, K::Alter, K::Drop]),
                ..Match::default()
            },
            message: "schema changes (CREATE, ALTER, DROP) are not allowed",
        },
        Builtin {
            id: "deny-truncate",
            action: Action::Deny,
            matcher: Match {
                statements: kinds(&[K::Truncate]),
                ..Match::default()
            },
            message: "TRUNCATE is not allowed; use DELETE with a WHERE clause",
        },
        Builtin {
            id: "deny-privilege-changes",
            action: Action::Deny,
            matcher: Match {
                statements: kinds(&[K::Privilege]),
                ..Match::default()
            },
            message: "GRANT, REVOKE and role or user changes are not allowed",
        },
        Builtin {
            id: "deny-server-file-access",
            action: Action::Deny,
            matcher: Match {
                function_classes: classes(&[
                    F::FileAccess,
                    F::ProgramExecution,
                    F::Network,
                    F::LargeObject,
                ]),
                ..Match::default()
            },
            message: "functions that read or write server files, run programs or reach the network are not allowed",
        },
        Builtin {
            id: "deny-copy",
            action: Action::Deny,
            matcher: Match {
                statements: kinds(&[K::Copy]),
                ..Match::default()
            },
            message: "COPY and LOAD DATA are not allowed (they can reach server files and programs)",
        },
        Builtin {
            id: "deny-dynamic-sql",
            action: Action::Deny,
            matcher: Match {
                statements: kinds(&[K::Dynamic]),
                ..Match::default()
            },
            message: "dynamic SQL (DO, EXECUTE, PREPARE, CALL) cannot be inspected and is not allowed",
        },
        Builtin {
            id: "deny-dynamic-sql-functions",
            action: Action::Deny,
            matcher: Match {
                function_classes: classes(&[F::DynamicSql]),
                ..Match::default()
            },
            message: "functions that run SQL given as text cannot be inspected and are not allowed",
        },
        Builtin {
            id: "deny-session-tampering",
            action: Action::Deny,
            matcher: Match {
                statements: kinds(&[K::Set, K::Transaction, K::Lock]),
                ..Match::default()
            },
            message: "SET, transaction control and explicit locks are not allowed: each request runs in its own transaction",
        },
        Builtin {
            id: "deny-session-functions",
            action: Action::Deny,
            matcher: Match {
                function_classes: classes(&[F::SessionState, F::Locking]),
                ..Match::default()
            },
            message: "functions that change session settings or take locks are not allowed",
        },
        Builtin {
            id: "deny-server-admin",
            action: Action::Deny,
            matcher: Match {
                function_classes: classes(&[F::ServerAdmin]),
                ..Match::default()
            },
            message: "server administration functions are not allowed",
        },
        Builtin {
            id: "deny-sqlite-pragma-attach",
            action: Action::Deny,
            matcher: Match {
                statements: kinds(&[K::Pragma, K::Attach]),
                ..Match::default()
            },
            message: "PRAGMA and ATTACH are not allowed",
        },
        Builtin {
            id: "deny-catalog-exposure",
            action: Action::Deny,
            matcher: Match {
                tables: Some(EXPOSING_CATALOGS.iter().map(|t| t.to_string()).collect()),
                ..Match::default()
            },
            message: "catalogue views that expose other sessions' statements, column statistics (sample values) or credentials are not allowed",
        },
        Builtin {
            id: "deny-unparsed",
            action: Action::Deny,
            matcher: Match {
                unparsed: Some(true),
                ..Match::default()
            },
            message: "the statement could not be fully parsed, so it cannot be checked; simplify it",
        },
        Builtin {
            id: "deny-compound-commands",
            action: Action::Deny,
            matcher: Match {
                shell_features: Some(vec![
                    S::List,
                    S::Background,
                    S::Pipeline,
                    S::Redirection,
                    S::Heredoc,
                    S::CommandSubstitution,
                    S::ProcessSubstitution,
                    S::VariableExpansion,
                    S::ArithmeticExpansion,
                    S::BraceExpansion,
                    S::AnsiCQuoting,
                    S::LocaleQuoting,
                    S::Glob,
                    S::Tilde,
                    S::Subshell,
                    S::Group,
                    S::Assignment,
                    S::Comment,
                ]),
                ..Match::default()
            },
            message: "send one plain command (argv); lists, pipes, redirections, substitutions, expansions and globs are not allowed",
        },
        Builtin {
            id: "deny-command-file-writes",
            action: Action::Deny,
            matcher: Match {
                command_effects: Some(vec![E::FileWrite]),
                ..Match::default()
            },
            message: "the command writes or deletes files (an output option, a script command or a program that saves); one file write is enough for persistence",
        },
        Builtin {
            id: "deny-path-traversal",
            action: Action::Deny,
            matcher: Match {
                command_effects: Some(vec![E::PathTraversal]),
                ..Match::default()
            },
            message: "a path argument climbs out with `..`; name the path directly",
        },
        Builtin {
            id: "deny-pagers",
            action: Action::Deny,
            matcher: Match {
                command_effects: Some(vec![E::Pager]),
                ..Match::default()
            },
            message: "the command starts an interactive pager, which can run commands; use cat/head/tail, or `--no-pager`",
        },
        Builtin {
            id: "deny-system-changes",
            action: Action::Deny,
            matcher: Match {
                command_effects: Some(vec![E::SystemChange]),
                ..Match::default()
            },
            message: "the command changes the system (clock, hostname, kernel parameters)",
        },
        Builtin {
            id: "review-unlisted-functions",
            action: Action::Review,
            matcher: Match {
                function_unlisted: Some(true),
                ..Match::default()
            },
            message: "the statement calls a function Airlock does not know to be safe; a human must approve it",
        },
        // HTTP API targets.
        Builtin {
            id: "review-http-writes",
            action: Action::Review,
            matcher: Match {
                methods: Some(
                    ["POST", "PUT", "PATCH", "DELETE"]
                        .map(String::from)
                        .to_vec(),
                ),
                ..Match::default()
            },
            message: "a request that can change something on the API needs a human's approval",
        },
        Builtin {
            id: "deny-http-admin-paths",
            action: Action::Deny,
            matcher: Match {
                paths: Some(
                    [
                        "/admin/**",
                        "**/admin/**",
                        "/internal/**",
                        "**/actuator/**",
                        "**/.env",
                        "**/.git/**",
                        "**/debug/**",
                    ]
                    .map(String::from)
                    .to_vec(),
                ),
                ..Match::default()
            },
            message: "administrative, internal and diagnostic paths are not for agents",
        },
    ]
}

pub fn find(id: &str) -> Option<Builtin> {
    catalogue().into_iter().find(|b| b.id == id)
}

pub fn ids() -> Vec<&'static str> {
    catalogue().iter().map(|b| b.id).collect()
}
