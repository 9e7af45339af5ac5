//! Rules and the decision over them.
//!
//! Invariants:
//! - Over the rules that apply to (principal, connection, facts): any deny ⇒ deny; else any
//!   review ⇒ review; else any allow ⇒ allow; else deny by `default-deny`. Order in the
//!   file never matters.
//! - Every decision names the rule that made it.
//! - An allow rule never admits a statement the inspector could not fully account for
//!   (`unparsed`), unless the rule says `match.unparsed = true`.
//! - A connection is visible to a principal when some allow or review rule names both.

pub mod glob;

use serde::{Deserialize, Serialize};

use crate::identity::Principal;
use crate::inspect::{Facts, StatementKind};

pub const DEFAULT_DENY: &str = "default-deny";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
    Review,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub id: String,
    pub action: Action,
    /// Globs over connection names.
    pub connections: Vec<String>,
    /// `*`, `group:NAME`, `sub:ISSUER/SUBJECT` (globs allowed in NAME and SUBJECT).
    pub principals: Vec<String>,
    /// Restricts the rule to requests whose facts match; absent means every request.
    #[serde(default, rename = "match")]
    pub matcher: Option<Match>,
    /// Shown to the agent when this rule denies or holds its request.
    pub message: Option<String>,
}

/// Conditions over the inspector's facts. All present conditions must hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// The request contains at least one statement of one of these kinds.
    pub statements: Option<Vec<StatementKind>>,
    /// `true`: matches when the input could not be fully parsed (and lets an allow rule
    /// admit it); `false`/absent: an allow rule does not apply to unparsed input.
    pub unparsed: Option<bool>,
    /// Matches requests with more than one statement.
    pub multi_statement: Option<bool>,
}

impl Match {
    fn matches(&self, facts: &Facts) -> bool {
        if let Some(kinds) = &self.statements
            && !facts.kinds.iter().any(|k| kinds.contains(k))
        {
            return false;
        }
        if let Some(want) = self.unparsed
            && want
            && !facts.unparsed
        {
            return false;
        }
        if let Some(want) = self.multi_statement
            && want != (facts.statement_count > 1)
        {
            return false;
        }
        true
    }
}

impl RuleConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.id.trim().is_empty() || self.id == DEFAULT_DENY {
            return Err(("id", format!("`{}` is not a usable rule id", self.id)));
        }
        if self.connections.is_empty() {
            return Err(("connections", "name at least one connection glob".into()));
        }
        if self.principals.is_empty() {
            return Err(("principals", "name at least one principal pattern".into()));
        }
        for p in &self.principals {
            PrincipalPattern::parse(p).map_err(|m| ("principals", m))?;
        }
        Ok(())
    }

    fn applies_to(&self, principal: &Principal, connection: &str) -> bool {
        self.connections
            .iter()
            .any(|g| glob::matches(g, connection))
            && self
                .principals
                .iter()
                .any(|p| PrincipalPattern::parse(p).is_ok_and(|p| p.matches(principal)))
    }

    fn matches_facts(&self, facts: &Facts) -> bool {
        let m = self.matcher.clone().unwrap_or_default();
        if !m.matches(facts) {
            return false;
        }
        // Unparsed input is only admitted by an allow rule that opts in.
        if self.action == Action::Allow && facts.unparsed && m.unparsed != Some(true) {
            return false;
        }
        true
    }
}

/// A parsed principal pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalPattern {
    Anyone,
    Group(String),
    Subject { issuer: String, subject: String },
}

impl PrincipalPattern {
    pub fn parse(s: &str) -> Result<PrincipalPattern, String> {
        if s == "*" {
            return Ok(PrincipalPattern::Anyone);
        }
        if let Some(g) = s.strip_prefix("group:")
            && !g.is_empty()
        {
            return Ok(PrincipalPattern::Group(g.to_string()));
        }
        if let Some(rest) = s.strip_prefix("sub:")
            && let Some((issuer, subject)) = rest.split_once('/')
            && !issuer.is_empty()
            && !subject.is_empty()
        {
            return Ok(PrincipalPattern::Subject {
                issuer: issuer.to_string(),
                subject: subject.to_string(),
            });
        }
        Err(format!(
            "`{s}` is not a principal pattern: use `*`, `group:NAME` or `sub:ISSUER/SUBJECT`"
        ))
    }

    pub fn matches(&self, p: &Principal) -> bool {
        match self {
            PrincipalPattern::Anyone => true,
            PrincipalPattern::Group(g) => p.groups.iter().any(|pg| glob::matches(g, pg)),
            PrincipalPattern::Subject { issuer, subject } => {
                *issuer == p.issuer && glob::matches(subject, &p.subject)
            }
        }
    }
}

/// The outcome of policy evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Decision {
    Allow { rule: String },
    Deny { rule: String, message: String },
    Review { rule: String, message: String },
}

impl Decision {
    pub fn rule(&self) -> &str {
        match self {
            Decision::Allow { rule }
            | Decision::Deny { rule, .. }
            | Decision::Review { rule, .. } => rule,
        }
    }

    pub fn action(&self) -> &'static str {
        match self {
            Decision::Allow { .. } => "allow",
            Decision::Deny { .. } => "deny",
            Decision::Review { .. } => "review",
        }
    }
}

/// The loaded rule set.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<RuleConfig>,
}

impl Policy {
    pub fn new(rules: Vec<RuleConfig>) -> Policy {
        Policy { rules }
    }

    /// Whether the principal may see the connection at all (same answer as "unknown").
    pub fn visible(&self, principal: &Principal, connection: &str) -> bool {
        self.rules.iter().any(|r| {
            matches!(r.action, Action::Allow | Action::Review)
                && r.applies_to(principal, connection)
        })
    }

    pub fn decide(&self, principal: &Principal, connection: &str, facts: &Facts) -> Decision {
        let applicable: Vec<&RuleConfig> = self
            .rules
            .iter()
            .filter(|r| r.applies_to(principal, connection) && r.matches_facts(facts))
            .collect();
        let pick = |action: Action| applicable.iter().find(|r| r.action == action);
        let message = |r: &RuleConfig, default: &str| {
            r.message.clone().unwrap_or_else(|| default.to_string())
        };
        if let Some(r) = pick(Action::Deny) {
            return Decision::Deny {
                rule: r.id.clone(),
                message: message(r, "this request is denied by policy"),
            };
        }
        if let Some(r) = pick(Action::Review) {
            return Decision::Review {
                rule: r.id.clone(),
                message: message(r, "this request needs a human's approval"),
            };
        }
        if let Some(r) = pick(Action::Allow) {
            return Decision::Allow { rule: r.id.clone() };
        }
        let message = if facts.unparsed {
            "the statement could not be fully parsed, and no rule admits unparsed input".to_string()
        } else {
            "no rule allows this request".to_string()
        };
        Decision::Deny {
            rule: DEFAULT_DENY.into(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PrincipalKind;

    fn principal(groups: &[&str]) -> Principal {
        Principal {
            issuer: "dev".into(),
            subject: "agent-1".into(),
            kind: PrincipalKind::Agent,
            groups: groups.iter().map(|s| s.to_string()).collect(),
            actor: vec![],
        }
    }

    fn rule(id: &str, action: Action, principals: &[&str]) -> RuleConfig {
        RuleConfig {
            id: id.into(),
            action,
            connections: vec!["demo*".into()],
            principals: principals.iter().map(|s| s.to_string()).collect(),
            matcher: None,
            message: None,
        }
    }

    fn facts() -> Facts {
        Facts {
            statement_count: 1,
            kinds: vec![StatementKind::Select],
            unparsed: false,
        }
    }

    #[test]
    fn precedence_is_deny_review_allow_default() {
        let p = principal(&["agents"]);
        let allow = rule("a", Action::Allow, &["group:agents"]);
        let review = rule("r", Action::Review, &["*"]);
        let deny = rule("d", Action::Deny, &["sub:dev/agent-*"]);
        let pol = Policy::new(vec![allow.clone()]);
        assert_eq!(pol.decide(&p, "demo", &facts()).rule(), "a");
        let pol = Policy::new(vec![allow.clone(), review.clone()]);
        assert_eq!(pol.decide(&p, "demo", &facts()).rule(), "r");
        let pol = Policy::new(vec![deny, allow.clone(), review]);
        assert_eq!(pol.decide(&p, "demo", &facts()).rule(), "d");
        let pol = Policy::new(vec![allow]);
        assert_eq!(pol.decide(&p, "other", &facts()).rule(), DEFAULT_DENY);
        assert_eq!(
            pol.decide(&principal(&["x"]), "demo", &facts()).rule(),
            DEFAULT_DENY
        );
    }

    #[test]
    fn sub_pattern_is_bound_to_issuer() {
        let mut p = principal(&[]);
        let pol = Policy::new(vec![rule("a", Action::Allow, &["sub:dev/agent-1"])]);
        assert!(pol.visible(&p, "demo"));
        p.issuer = "other".into();
        assert!(!pol.visible(&p, "demo"));
    }

    #[test]
    fn allow_never_admits_unparsed_unless_it_says_so() {
        let p = principal(&["agents"]);
        let mut f = facts();
        f.unparsed = true;
        let pol = Policy::new(vec![rule("a", Action::Allow, &["*"])]);
        assert_eq!(pol.decide(&p, "demo", &f).rule(), DEFAULT_DENY);
        let mut opt_in = rule("b", Action::Allow, &["*"]);
        opt_in.matcher = Some(Match {
            unparsed: Some(true),
            ..Match::default()
        });
        let pol = Policy::new(vec![opt_in]);
        assert_eq!(pol.decide(&p, "demo", &f).rule(), "b");
    }

    #[test]
    fn statement_kinds_select_rules() {
        let p = principal(&["agents"]);
        let mut deny_writes = rule("no-delete", Action::Deny, &["*"]);
        deny_writes.matcher = Some(Match {
            statements: Some(vec![StatementKind::Delete]),
            ..Match::default()
        });
        let pol = Policy::new(vec![rule("a", Action::Allow, &["*"]), deny_writes]);
        assert_eq!(pol.decide(&p, "demo", &facts()).rule(), "a");
        let mut f = facts();
        f.kinds = vec![StatementKind::Delete];
        assert_eq!(pol.decide(&p, "demo", &f).rule(), "no-delete");
    }
}
