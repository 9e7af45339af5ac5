//! What a principal may do on a connection, read off the rules, for the agent to plan with
//! (`GET /v1/connections/{name}`).
//!
//! This is a summary, not the decision: the decision is [`Policy::decide`] on the facts of
//! an actual request (the check endpoint asks it without running anything). What must stay
//! true: the summary never says `allow` where `decide` would refuse an ordinary statement
//! of that kind, and it names every rule that can still refuse or hold one (guardrails:
//! missing WHERE, dangerous functions, table-scoped denies), so an agent is not surprised.

use serde::Serialize;

use super::{Action, Match, Policy, RuleConfig};
use crate::identity::Principal;
use crate::inspect::StatementKind;

/// The statement kinds an agent plans with, in the order they are listed.
const KINDS: &[StatementKind] = &[
    StatementKind::Select,
    StatementKind::Explain,
    StatementKind::Show,
    StatementKind::Insert,
    StatementKind::Update,
    StatementKind::Delete,
    StatementKind::Merge,
    StatementKind::Copy,
    StatementKind::Create,
    StatementKind::Alter,
    StatementKind::Drop,
    StatementKind::Truncate,
    StatementKind::Privilege,
];

/// What an ordinary statement of one kind gets.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"statement": "update", "decision": "review", "rule": "agents-write-review", "guardrails": ["deny-unbounded-write"]}))]
pub struct KindPermission {
    /// The statement kind.
    pub statement: StatementKind,
    /// `allow`, `review` (held for a human's approval) or `deny`.
    pub decision: Action,
    /// The rule that decides it (`default-deny` when none does).
    pub rule: String,
    /// When the deciding rule only covers some tables (table globs): on other tables the
    /// statement is denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tables: Option<Vec<String>>,
    /// Rules that can still deny or hold a statement of this kind on a condition (no WHERE,
    /// a dangerous function, a table): the check endpoint tells for one statement.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub guardrails: Vec<String>,
}

/// A rule that applies to the caller on the connection, as the caller may see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"id": "agents-read", "action": "allow", "statements": ["select"], "tables": ["orders", "customers"]}))]
pub struct RuleSummary {
    /// The rule's id (refusals name it in `rule`).
    pub id: String,
    /// `allow`, `deny` or `review`.
    pub action: Action,
    /// What the rule matches (absent: every request). Same keys as the rule's `match` in
    /// the configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub matches: Option<serde_json::Value>,
    /// What the rule tells a caller it denies or holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Review rules: the groups whose members may approve.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
}

impl Match {
    /// Conditions beyond the statement kind and the tables: a rule with one of them is a
    /// guardrail for particular statements, not a decision for a kind.
    fn is_conditional(&self) -> bool {
        self.where_required.is_some()
            || self.functions.is_some()
            || self.function_classes.is_some()
            || self.function_unlisted.is_some()
            || self.nested_write.is_some()
            || self.multi_statement.is_some()
            || self.unparsed.is_some()
            || self.tables_written.is_some()
            || self.shell == Some(true)
            || self.has_command_conditions()
    }

    fn covers_kind(&self, kind: StatementKind) -> bool {
        self.statements.as_ref().is_none_or(|s| s.contains(&kind))
    }
}

impl Policy {
    /// The rules that apply to `principal` on `connection`, in configuration order.
    pub fn rules_for(&self, principal: &Principal, connection: &str) -> Vec<RuleSummary> {
        self.rules
            .iter()
            .filter(|r| r.applies_to(principal, connection))
            .map(|r| RuleSummary {
                id: r.id.clone(),
                action: r.action,
                matches: r
                    .matcher
                    .as_ref()
                    .and_then(|m| serde_json::to_value(m).ok())
                    .map(strip_nulls),
                message: r.message.clone(),
                approvers: r
                    .review
                    .as_ref()
                    .map(|r| r.approvers.clone())
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// What an ordinary statement of each kind gets from `principal` on `connection`.
    pub fn kind_permissions(&self, principal: &Principal, connection: &str) -> Vec<KindPermission> {
        let applicable: Vec<&RuleConfig> = self
            .rules
            .iter()
            .filter(|r| r.applies_to(principal, connection))
            .collect();
        KINDS
            .iter()
            .map(|&kind| kind_permission(&applicable, kind))
            .collect()
    }
}

fn kind_permission(rules: &[&RuleConfig], kind: StatementKind) -> KindPermission {
    let matcher = |r: &RuleConfig| r.matcher.clone().unwrap_or_default();
    // Rules that decide the kind as such, whole (no table scope) or for some tables.
    let deciding = |action: Action, scoped: bool| {
        rules.iter().find(|r| {
            let m = matcher(r);
            r.action == action
                && !m.is_conditional()
                && m.covers_kind(kind)
                && m.tables.is_some() == scoped
        })
    };
    let guardrails: Vec<String> = rules
        .iter()
        .filter(|r| r.action != Action::Allow)
        .filter(|r| {
            let m = matcher(r);
            m.covers_kind(kind) && (m.is_conditional() || m.tables.is_some())
        })
        .filter(|r| !matcher(r).has_command_conditions() && matcher(r).shell != Some(true))
        .map(|r| r.id.clone())
        .collect();
    let pick = deciding(Action::Deny, false)
        .or_else(|| deciding(Action::Review, false))
        .or_else(|| deciding(Action::Allow, false))
        .or_else(|| deciding(Action::Review, true))
        .or_else(|| deciding(Action::Allow, true));
    match pick {
        Some(r) => KindPermission {
            statement: kind,
            decision: r.action,
            rule: r.id.clone(),
            tables: matcher(r).tables,
            guardrails: if r.action == Action::Deny {
                Vec::new()
            } else {
                guardrails
            },
        },
        None => KindPermission {
            statement: kind,
            decision: Action::Deny,
            rule: super::DEFAULT_DENY.into(),
            tables: None,
            guardrails: Vec::new(),
        },
    }
}

fn strip_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(map) => {
            serde_json::Value::Object(map.into_iter().filter(|(_, v)| !v.is_null()).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PrincipalKind;

    fn agent() -> Principal {
        Principal {
            issuer: "dev".into(),
            subject: "a".into(),
            groups: vec!["agents".into()],
            kind: PrincipalKind::Agent,
            actor: Vec::new(),
        }
    }

    fn policy(toml_rules: &str) -> Policy {
        #[derive(serde::Deserialize)]
        struct Rules {
            rules: Vec<super::super::RawRule>,
        }
        let raw: Rules = toml::from_str(toml_rules).expect("rules");
        let rules = raw
            .rules
            .into_iter()
            .map(|r| RuleConfig::try_from(r).expect("rule"))
            .collect();
        Policy::new(rules, "v".into())
    }

    #[test]
    fn kinds_follow_the_strongest_unconditional_rule_and_name_guardrails() {
        let p = policy(
            r#"
[[rules]]
builtin = "deny-unbounded-write"
[[rules]]
id = "read"
action = "allow"
connections = ["db"]
principals = ["group:agents"]
match = { statements = ["select"], tables = ["orders"] }
[[rules]]
id = "write"
action = "review"
connections = ["db"]
principals = ["group:agents"]
match = { statements = ["update", "delete"] }
review = { approvers = ["dba"] }
[[rules]]
id = "no-drop"
action = "deny"
connections = ["*"]
principals = ["*"]
match = { statements = ["drop"] }
"#,
        );
        let kinds = p.kind_permissions(&agent(), "db");
        let get = |k: StatementKind| kinds.iter().find(|x| x.statement == k).expect("kind");
        let select = get(StatementKind::Select);
        assert_eq!(
            (select.decision, select.rule.as_str()),
            (Action::Allow, "read")
        );
        assert_eq!(select.tables.as_deref(), Some(&["orders".to_string()][..]));
        let update = get(StatementKind::Update);
        assert_eq!(
            (update.decision, update.rule.as_str()),
            (Action::Review, "write")
        );
        assert!(
            update
                .guardrails
                .contains(&"deny-unbounded-write".to_string())
        );
        assert_eq!(get(StatementKind::Drop).decision, Action::Deny);
        let insert = get(StatementKind::Insert);
        assert_eq!(
            (insert.decision, insert.rule.as_str()),
            (Action::Deny, "default-deny")
        );
        // Another connection: only the catch-all deny applies.
        assert_eq!(
            p.kind_permissions(&agent(), "other")
                .iter()
                .filter(|k| k.decision != Action::Deny)
                .count(),
            0
        );
        assert_eq!(p.rules_for(&agent(), "db").len(), 4);
    }
}
