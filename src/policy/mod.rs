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

pub mod builtin;
mod permissions;
use crate::glob;
pub use permissions::{KindPermission, RuleSummary};

use serde::{Deserialize, Serialize};

use crate::identity::Principal;
use crate::inspect::shell::{CommandEffect, CommandFacts, ShellFeature, Wrapper};
use crate::inspect::sql::FunctionClass;
use crate::inspect::{Facts, StatementKind};

pub const DEFAULT_DENY: &str = "default-deny";

/// What a policy rule does with a matching request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(example = "review")]
pub enum Action {
    Allow,
    Deny,
    Review,
}

/// A rule as written in the config: either a custom rule (`id`, `action`, `match`) or a
/// built-in one from the catalogue (`builtin = "deny-ddl"`), which brings its own action,
/// match and message.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Option<String>,
    builtin: Option<String>,
    action: Option<Action>,
    connections: Option<Vec<String>>,
    principals: Option<Vec<String>>,
    #[serde(default, rename = "match")]
    matcher: Option<Match>,
    message: Option<String>,
    review: Option<ReviewConfig>,
}

/// Who must approve what a `review` rule holds, and for how long.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewConfig {
    /// Groups whose human members may approve (no `act` chain, not the requester).
    pub approvers: Vec<String>,
    #[serde(default = "one")]
    pub min_approvals: u32,
    /// A pending review expires after this long.
    #[serde(default = "fifteen_minutes")]
    pub expires_in_secs: u64,
    /// After approval, the requester has this long to run it.
    #[serde(default = "one_hour")]
    pub run_window_secs: u64,
}

fn one() -> u32 {
    1
}
fn fifteen_minutes() -> u64 {
    900
}
fn one_hour() -> u64 {
    3600
}

#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawRule")]
pub struct RuleConfig {
    pub id: String,
    pub action: Action,
    /// Globs over connection names.
    pub connections: Vec<String>,
    /// `*`, `group:NAME`, `sub:ISSUER/SUBJECT` (globs allowed in NAME and SUBJECT).
    pub principals: Vec<String>,
    /// Restricts the rule to requests whose facts match; absent means every request.
    pub matcher: Option<Match>,
    /// Shown to the agent when this rule denies or holds its request.
    pub message: Option<String>,
    /// For `review` rules: approvers, quorum, expiry.
    pub review: Option<ReviewConfig>,
}

impl TryFrom<RawRule> for RuleConfig {
    type Error = String;

    fn try_from(raw: RawRule) -> Result<Self, String> {
        match raw.builtin {
            Some(name) => {
                let b = builtin::find(&name).ok_or_else(|| {
                    format!(
                        "unknown built-in rule `{name}`; the catalogue has: {}",
                        builtin::ids().join(", ")
                    )
                })?;
                if raw.action.is_some() || raw.matcher.is_some() {
                    return Err(format!(
                        "built-in rule `{name}` brings its own action and match; remove them"
                    ));
                }
                // A built-in review rule takes its approvers, expiry and run window from the
                // config (validation then requires them); a deny rule has none.
                if raw.review.is_some() && b.action != Action::Review {
                    return Err(format!(
                        "built-in rule `{name}` denies; `review` settings do not apply to it"
                    ));
                }
                if raw.id.as_deref().is_some_and(|id| id != name) {
                    return Err(format!("a built-in rule's id is its name (`{name}`)"));
                }
                Ok(RuleConfig {
                    id: name,
                    action: b.action,
                    connections: raw.connections.unwrap_or_else(|| vec!["*".into()]),
                    principals: raw.principals.unwrap_or_else(|| vec!["*".into()]),
                    matcher: Some(b.matcher),
                    message: raw.message.or_else(|| Some(b.message.to_string())),
                    review: raw.review,
                })
            }
            None => Ok(RuleConfig {
                id: raw
                    .id
                    .ok_or("a rule needs an `id` (or `builtin = \"...\"`)")?,
                action: raw
                    .action
                    .ok_or("a rule needs an `action` (allow | deny | review)")?,
                connections: raw.connections.ok_or("a rule needs `connections`")?,
                principals: raw.principals.ok_or("a rule needs `principals`")?,
                matcher: raw.matcher,
                message: raw.message,
                review: raw.review,
            }),
        }
    }
}

/// Conditions over the inspector's facts. All present conditions must hold.
///
/// The same condition reads differently by action, so that both fail closed:
/// - a **deny** or **review** rule *catches* a request when *any* fact hits the condition
///   (one forbidden table among ten is enough);
/// - an **allow** rule *admits* a request only when *every* fact is within the condition
///   (a statement kind, table or function it does not list keeps it out).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Statement kinds, including statements nested in CTEs and under EXPLAIN ANALYZE.
    pub statements: Option<Vec<StatementKind>>,
    /// Globs over tables read or written. A pattern without a dot matches the table name
    /// whatever its schema (`orders` matches `public.orders`); with a dot, the full name.
    pub tables: Option<Vec<String>>,
    /// Globs over tables written.
    pub tables_written: Option<Vec<String>>,
    /// `true`: matches when some UPDATE or DELETE has no WHERE clause.
    pub where_required: Option<bool>,
    /// Globs over called functions (case-folded; bare or schema-qualified as written).
    pub functions: Option<Vec<String>>,
    /// Classes of dangerous functions (`file_access`, `program_execution`, `network`, ...).
    pub function_classes: Option<Vec<FunctionClass>>,
    /// `true`: matches when a function on neither the safe nor the dangerous list is called.
    pub function_unlisted: Option<bool>,
    /// `true`: matches when a write is nested inside another statement (CTE, subquery).
    pub nested_write: Option<bool>,
    /// `true`: matches input that could not be fully parsed (and lets an allow rule admit it).
    pub unparsed: Option<bool>,
    /// `true`: matches requests with more than one statement.
    pub multi_statement: Option<bool>,
    /// Commands: globs over the program, argv[0] taken literally (`/tmp/x/systemctl` is not
    /// `systemctl`).
    pub programs: Option<Vec<String>>,
    /// Commands: argv patterns, one glob per word; a last word `*` also matches no more
    /// words (`systemctl status *`).
    pub argv: Option<Vec<String>>,
    /// Commands: shell features (`pipeline`, `redirection`, `command_substitution`, ...).
    pub shell_features: Option<Vec<ShellFeature>>,
    /// Commands: programs that run other programs or code (`env`, `privilege`, `shell_c`,
    /// `interpreter`, ...). An allow rule admits a wrapper only when it lists it here.
    pub wrappers: Option<Vec<Wrapper>>,
    /// Commands: what they do beyond reading (`file_write`, `pager`, `system_change`,
    /// `path_traversal`). An allow rule admits a command with an effect only by naming it.
    pub command_effects: Option<Vec<CommandEffect>>,
    /// `true`: the rule is about interactive shells. An allow rule admits a shell only when
    /// it says so; a deny or review rule without conditions also catches shells.
    pub shell: Option<bool>,
    /// HTTP API targets: methods (uppercase; `*` for any).
    pub methods: Option<Vec<String>>,
    /// HTTP API targets: globs over the normalised path (`/customers/*`, `/admin/**`; `*`
    /// stays within one segment, `**` crosses segments).
    pub paths: Option<Vec<String>>,
    /// HTTP API targets: globs over query parameter names.
    pub query_keys: Option<Vec<String>>,
    /// HTTP API targets: request body content types (`application/json`).
    pub content_types: Option<Vec<String>>,
}

/// Does the argv pattern (one glob per word) match?
pub fn argv_matches(pattern: &str, argv: &[String]) -> bool {
    let words: Vec<&str> = pattern.split_whitespace().collect();
    let open_tail = words.last() == Some(&"*");
    let fixed = if open_tail {
        &words[..words.len() - 1]
    } else {
        &words[..]
    };
    if argv.len() < fixed.len() || (!open_tail && argv.len() != fixed.len()) {
        return false;
    }
    fixed.iter().zip(argv).all(|(p, a)| glob::matches(p, a))
}

fn table_matches(pattern: &str, table: &str) -> bool {
    if pattern.contains('.') {
        glob::matches(pattern, table)
    } else {
        let name = table.rsplit('.').next().unwrap_or(table);
        glob::matches(pattern, name)
    }
}

/// Whether a path glob matches a normalised path: `*` matches within one segment, `**`
/// across segments (including none), everything else literally. Matched segment by
/// segment, so `/admin*` never matches `/administrators/..` by accident of a shared prefix
/// unless the glob says so, and `/admin/**` matches `/admin` itself.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    fn go(p: &[&str], s: &[&str]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((&"**", rest)) => (0..=s.len()).any(|i| go(rest, &s[i..])),
            Some((seg, rest)) => match s.split_first() {
                Some((first, tail)) => glob::matches(seg, first) && go(rest, tail),
                None => false,
            },
        }
    }
    let p: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
    let s: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    go(&p, &s)
}

fn function_matches(pattern: &str, function: &str) -> bool {
    table_matches(pattern, function)
}

/// For deny/review: does any item hit? For allow: is every item covered?
fn covers<T>(admit: bool, items: &[T], hit: impl Fn(&T) -> bool) -> bool {
    if admit {
        items.iter().all(hit)
    } else {
        items.iter().any(hit)
    }
}

impl Match {
    fn has_sql_conditions(&self) -> bool {
        self.statements.is_some()
            || self.tables.is_some()
            || self.tables_written.is_some()
            || self.where_required.is_some()
            || self.functions.is_some()
            || self.function_classes.is_some()
            || self.function_unlisted.is_some()
            || self.nested_write.is_some()
            || self.multi_statement.is_some()
    }

    fn has_http_conditions(&self) -> bool {
        self.methods.is_some()
            || self.paths.is_some()
            || self.query_keys.is_some()
            || self.content_types.is_some()
    }

    /// An HTTP API request: only HTTP conditions apply; a rule with SQL or command
    /// conditions does not. Same catch/admit semantics as the rest: a deny or review rule
    /// catches when any fact hits, an allow rule admits only when every fact is covered.
    fn matches_http(&self, h: &crate::inspect::HttpFacts, action: Action) -> bool {
        if self.has_sql_conditions() || self.has_command_conditions() || self.shell == Some(true) {
            return false;
        }
        // Unparsed input is not a fact of HTTP requests (they are refused before the policy
        // when they cannot be normalised); a rule only about unparsed input is not about them.
        if self.unparsed == Some(true) {
            return false;
        }
        let admit = action == Action::Allow;
        if let Some(methods) = &self.methods
            && !methods
                .iter()
                .any(|m| m == "*" || m.eq_ignore_ascii_case(&h.method))
        {
            return false;
        }
        if let Some(globs) = &self.paths
            && !globs.iter().any(|g| path_matches(g, &h.path))
        {
            return false;
        }
        if let Some(globs) = &self.query_keys
            && !covers(admit, &h.query_keys, |k| {
                globs.iter().any(|g| glob::matches(g, k))
            })
        {
            return false;
        }
        if let Some(types) = &self.content_types {
            let hit = |t: &String| types.iter().any(|x| x.eq_ignore_ascii_case(t));
            match &h.content_type {
                Some(t) if !hit(t) => return false,
                Some(_) => {}
                // No body: a content-type condition does not catch it, and an allow rule
                // listing types admits a body-less request.
                None if !admit => return false,
                None => {}
            }
        }
        true
    }

    fn has_command_conditions(&self) -> bool {
        self.programs.is_some()
            || self.argv.is_some()
            || self.shell_features.is_some()
            || self.wrappers.is_some()
            || self.command_effects.is_some()
    }

    /// A command request: only command conditions apply; a rule with SQL conditions does not.
    fn matches_command(&self, c: &CommandFacts, action: Action) -> bool {
        if self.has_sql_conditions() {
            return false;
        }
        let admit = action == Action::Allow;
        if self.unparsed == Some(true) && !c.unparsed && !admit {
            return false;
        }
        // A deny or review rule also looks inside wrappers: `timeout 10 rm x` is `rm` too.
        let inner = match (&c.argv, admit) {
            (Some(argv), false) => crate::inspect::shell::inner_commands(argv),
            _ => Vec::new(),
        };
        let named = self.names_program(c.program.as_deref(), c.argv.as_deref(), admit)
            || inner.iter().any(|argv| {
                self.names_program(argv.first().map(String::as_str), Some(argv), false)
            });
        if !named {
            return false;
        }
        if let Some(features) = &self.shell_features
            && !covers(admit, &c.features, |f| features.contains(f))
        {
            return false;
        }
        match &self.command_effects {
            Some(listed) if !covers(admit, &c.effects, |e| listed.contains(e)) => return false,
            Some(_) if !admit && c.effects.is_empty() => return false,
            // An allow rule admits a command that writes, pages, changes the system or
            // climbs out of a path only by naming the effect.
            None if admit && !c.effects.is_empty() => return false,
            _ => {}
        }
        match (&self.wrappers, c.wrapper) {
            (Some(listed), Some(w)) if !listed.contains(&w) => return false,
            (Some(_), None) if !admit => return false,
            // An allow rule admits a program that runs other programs only by naming it.
            (None, Some(_)) if admit => return false,
            _ => {}
        }
        true
    }

    /// The rule's `programs` and `argv` conditions (absent ones hold) for one command. An
    /// allow rule matches argv[0] literally (`/tmp/x/systemctl` is not `systemctl`); a deny
    /// or review rule also catches it by its basename (`/bin/rm` is `rm`).
    fn names_program(&self, program: Option<&str>, argv: Option<&[String]>, admit: bool) -> bool {
        let literal = program.unwrap_or("");
        let base = literal.rsplit('/').next().unwrap_or(literal);
        let names: &[&str] = if admit { &[literal] } else { &[literal, base] };
        if let Some(globs) = &self.programs
            && !(program.is_some()
                && globs
                    .iter()
                    .any(|g| names.iter().any(|n| glob::matches(g, n))))
        {
            return false;
        }
        if let Some(patterns) = &self.argv {
            let hit = argv.is_some_and(|argv| {
                // Path words are matched as the path that will be opened: `/var/log/../x`
                // is `/x`, which `/var/log/*` does not match.
                let argv: Vec<String> = argv
                    .iter()
                    .enumerate()
                    .map(|(i, a)| {
                        match i > 0
                            && (a.starts_with('/') || a.starts_with("./") || a.starts_with("../"))
                        {
                            true => crate::inspect::shell::normalize_path(a)
                                .unwrap_or_else(|| a.clone()),
                            false => a.clone(),
                        }
                    })
                    .collect();
                let argv = argv.as_slice();
                let mut by_base = argv.to_vec();
                if let Some(first) = by_base.first_mut() {
                    *first = base.to_string();
                }
                patterns
                    .iter()
                    .any(|p| argv_matches(p, argv) || (!admit && argv_matches(p, &by_base)))
            });
            if !hit {
                return false;
            }
        }
        true
    }

    fn matches(&self, facts: &Facts, action: Action) -> bool {
        if facts.shell {
            // A shell is never "unparsed": a rule about unparsed input (`deny-unparsed`)
            // is not a rule about shells.
            if self.unparsed == Some(true) {
                return false;
            }
            return match self.shell {
                Some(true) => {
                    !self.has_sql_conditions()
                        && !self.has_command_conditions()
                        && !self.has_http_conditions()
                }
                Some(false) => false,
                None => {
                    action != Action::Allow
                        && !self.has_sql_conditions()
                        && !self.has_command_conditions()
                        && !self.has_http_conditions()
                }
            };
        }
        if self.shell == Some(true) {
            return false;
        }
        if let Some(h) = &facts.http {
            return self.matches_http(h, action);
        }
        if self.has_http_conditions() {
            return false;
        }
        if let Some(c) = &facts.command {
            return self.matches_command(c, action);
        }
        if self.has_command_conditions() {
            return false;
        }
        let admit = action == Action::Allow;
        if let Some(kinds) = &self.statements
            && !covers(admit, &facts.kinds, |k| kinds.contains(k))
        {
            return false;
        }
        if let Some(globs) = &self.tables {
            let touched: Vec<&String> = facts
                .tables_read
                .iter()
                .chain(&facts.tables_written)
                .collect();
            if !covers(admit, &touched, |t| {
                globs.iter().any(|g| table_matches(g, t))
            }) {
                return false;
            }
        }
        if let Some(globs) = &self.tables_written
            && !covers(admit, &facts.tables_written, |t| {
                globs.iter().any(|g| table_matches(g, t))
            })
        {
            return false;
        }
        if let Some(globs) = &self.functions
            && !covers(admit, &facts.functions, |f| {
                globs.iter().any(|g| function_matches(g, f))
            })
        {
            return false;
        }
        if let Some(classes) = &self.function_classes
            && !covers(admit, &facts.function_classes, |c| classes.contains(c))
        {
            return false;
        }
        // Like wrappers for commands: an allow rule admits a dangerous function (file access,
        // programs, network, admin, session state, locks, sleep, ...) only by naming its class.
        if admit && self.function_classes.is_none() && !facts.function_classes.is_empty() {
            return false;
        }
        // Nor a function that is on no list (user code, extensions): only by naming it
        // (`functions`, which must then cover every call) or by `function_unlisted = true`.
        if admit
            && facts.function_unlisted
            && self.functions.is_none()
            && self.function_unlisted != Some(true)
        {
            return false;
        }
        let flag = |want: Option<bool>, fact: bool| want.is_none_or(|w| w == fact);
        if !flag(self.where_required, facts.missing_where)
            || !flag(self.function_unlisted, facts.function_unlisted)
            || !flag(self.nested_write, facts.nested_write)
            || !flag(self.multi_statement, facts.statement_count > 1)
        {
            return false;
        }
        // `unparsed = false` is the default for everyone: only an explicit `true` selects it.
        if self.unparsed == Some(true) && !facts.unparsed && !admit {
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
        match (&self.action, &self.review) {
            (Action::Review, None) => {
                return Err((
                    "review",
                    "a review rule needs `review = { approvers = [\"group\"] }`".into(),
                ));
            }
            (Action::Review, Some(r)) => {
                if r.approvers.is_empty() || r.min_approvals == 0 {
                    return Err((
                        "review",
                        "name approver groups and min_approvals >= 1".into(),
                    ));
                }
                if r.expires_in_secs == 0 || r.run_window_secs == 0 {
                    return Err(("review", "expiry and run window must be positive".into()));
                }
                // Deadlines are computed from these: bounded so the arithmetic cannot overflow.
                if r.expires_in_secs > MAX_REVIEW_SECS || r.run_window_secs > MAX_REVIEW_SECS {
                    return Err((
                        "review",
                        format!("expiry and run window are at most {MAX_REVIEW_SECS} s (30 days)"),
                    ));
                }
            }
            (_, Some(_)) => return Err(("review", "only review rules take `review`".into())),
            _ => {}
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
        if !m.matches(facts, self.action) {
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

/// Longest review expiry or run window: 30 days.
pub const MAX_REVIEW_SECS: u64 = 30 * 24 * 3600;

/// The loaded rule set.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<RuleConfig>,
    version: String,
}

impl Policy {
    /// `version` identifies this rule set (see `Config::policy_version`).
    pub fn new(rules: Vec<RuleConfig>, version: String) -> Policy {
        Policy { rules, version }
    }

    pub fn rule(&self, id: &str) -> Option<&RuleConfig> {
        self.rules.iter().find(|r| r.id == id)
    }

    /// A digest of the whole rule set: approvals are bound to it, so any policy change
    /// makes outstanding approvals stale.
    pub fn version(&self) -> String {
        self.version.clone()
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
            review: None,
        }
    }

    fn facts() -> Facts {
        Facts {
            statement_count: 1,
            kinds: vec![StatementKind::Select],
            ..Facts::default()
        }
    }

    /// The facts of a command given as argv, as the inspector makes them.
    fn argv_facts(argv: &[&str]) -> Facts {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        Facts {
            statement_count: 1,
            command: Some(crate::inspect::shell::inspect_argv(&argv)),
            ..Facts::default()
        }
    }

    fn with_match(id: &str, action: Action, m: Match) -> RuleConfig {
        let mut r = rule(id, action, &["*"]);
        r.matcher = Some(m);
        r
    }

    #[test]
    fn allow_admits_only_what_it_covers_and_deny_catches_any_hit() {
        let p = principal(&["agents"]);
        let read_orders = with_match(
            "read-orders",
            Action::Allow,
            Match {
                statements: Some(vec![StatementKind::Select]),
                tables: Some(vec!["orders".into(), "public.customers".into()]),
                ..Match::default()
            },
        );
        let pol = Policy::new(vec![read_orders], "test".into());
        let mut f = facts();
        f.tables_read = vec!["public.orders".into()];
        assert_eq!(pol.decide(&p, "demo", &f).rule(), "read-orders");
        f.tables_read.push("public.secrets".into());
        assert_eq!(pol.decide(&p, "demo", &f).rule(), DEFAULT_DENY);
        // A write nested in a CTE adds its kind: the select-only allow no longer covers it.
        let mut f = facts();
        f.tables_read = vec!["orders".into()];
        f.kinds = vec![StatementKind::Select, StatementKind::Delete];
        assert_eq!(pol.decide(&p, "demo", &f).rule(), DEFAULT_DENY);

        let no_secrets = with_match(
            "no-secrets",
            Action::Deny,
            Match {
                tables: Some(vec!["*.secrets".into()]),
                ..Match::default()
            },
        );
        let pol = Policy::new(
            vec![rule("all", Action::Allow, &["*"]), no_secrets],
            "test".into(),
        );
        let mut f = facts();
        f.tables_read = vec!["public.orders".into(), "public.secrets".into()];
        assert_eq!(pol.decide(&p, "demo", &f).rule(), "no-secrets");
    }

    #[test]
    fn effects_need_naming_and_path_globs_match_the_opened_path() {
        let p = principal(&["agents"]);
        let cmd = argv_facts;
        let logs = with_match(
            "logs",
            Action::Allow,
            Match {
                argv: Some(vec!["cat /var/log/*".into(), "find *".into()]),
                ..Match::default()
            },
        );
        let writes_ok = with_match(
            "writes-ok",
            Action::Allow,
            Match {
                argv: Some(vec!["sort *".into()]),
                command_effects: Some(vec![CommandEffect::FileWrite]),
                ..Match::default()
            },
        );
        let pol = Policy::new(vec![logs, writes_ok], "test".into());
        assert_eq!(
            pol.decide(&p, "demo", &cmd(&["cat", "/var/log/syslog"]))
                .rule(),
            "logs"
        );
        // `..` is an effect no rule names here, and the opened path is not under /var/log.
        for argv in [
            &["cat", "/var/log/../../etc/shadow"][..],
            &["cat", "/var/log//../../etc/shadow"],
            &["find", "/", "-fprint", "/root/.ssh/authorized_keys"],
        ] {
            assert_eq!(
                pol.decide(&p, "demo", &cmd(argv)).rule(),
                DEFAULT_DENY,
                "{argv:?}"
            );
        }
        assert_eq!(
            pol.decide(&p, "demo", &cmd(&["sort", "-o", "out", "in"]))
                .rule(),
            "writes-ok"
        );
        let deny = Policy::new(
            vec![
                {
                    let b = builtin::find("deny-command-file-writes").unwrap();
                    with_match(b.id, b.action, b.matcher)
                },
                with_match(
                    "writes-ok",
                    Action::Allow,
                    Match {
                        command_effects: Some(vec![CommandEffect::FileWrite]),
                        ..Match::default()
                    },
                ),
            ],
            "test".into(),
        );
        assert_eq!(
            deny.decide(&p, "demo", &cmd(&["sort", "-o", "out", "in"]))
                .rule(),
            "deny-command-file-writes"
        );
    }

    #[test]
    fn deny_and_review_rules_look_inside_wrappers() {
        let p = principal(&["agents"]);
        let cmd = argv_facts;
        let no_rm = with_match(
            "no-rm",
            Action::Deny,
            Match {
                programs: Some(vec!["rm".into()]),
                ..Match::default()
            },
        );
        let review_git_push = with_match(
            "review-push",
            Action::Review,
            Match {
                argv: Some(vec!["git push *".into()]),
                ..Match::default()
            },
        );
        let runners = with_match(
            "runners",
            Action::Allow,
            Match {
                programs: Some(vec!["timeout".into(), "nice".into(), "sudo".into()]),
                wrappers: Some(vec![Wrapper::Runner, Wrapper::Privilege]),
                ..Match::default()
            },
        );
        let pol = Policy::new(vec![no_rm, review_git_push, runners], "test".into());
        for argv in [
            &["timeout", "10", "rm", "-rf", "/srv"][..],
            &["nice", "-n", "5", "/bin/rm", "x"],
            &["sudo", "-u", "app", "rm", "x"],
            &["timeout", "5s", "sudo", "rm", "x"],
            &["timeout", "10", "bash", "-c", "rm x"],
        ] {
            assert_eq!(
                pol.decide(&p, "demo", &cmd(argv)).rule(),
                "no-rm",
                "{argv:?}"
            );
        }
        assert_eq!(
            pol.decide(
                &p,
                "demo",
                &cmd(&["timeout", "60", "git", "push", "origin"])
            )
            .rule(),
            "review-push"
        );
        assert_eq!(
            pol.decide(&p, "demo", &cmd(&["timeout", "10", "ls", "/srv"]))
                .rule(),
            "runners"
        );
    }

    #[test]
    fn deny_catches_programs_by_basename_and_allow_needs_dangerous_classes_named() {
        let p = principal(&["agents"]);
        let cmd = |argv: &[&str]| Facts {
            statement_count: 1,
            command: Some(CommandFacts {
                argv: Some(argv.iter().map(|s| s.to_string()).collect()),
                program: argv.first().map(|s| s.to_string()),
                ..CommandFacts::default()
            }),
            ..Facts::default()
        };
        let no_rm = with_match(
            "no-rm",
            Action::Deny,
            Match {
                programs: Some(vec!["rm".into()]),
                ..Match::default()
            },
        );
        let ls_only = with_match(
            "ls",
            Action::Allow,
            Match {
                programs: Some(vec!["ls".into()]),
                ..Match::default()
            },
        );
        let pol = Policy::new(vec![no_rm, ls_only], "test".into());
        assert_eq!(
            pol.decide(&p, "demo", &cmd(&["/bin/rm", "-rf", "/"]))
                .rule(),
            "no-rm"
        );
        assert_eq!(pol.decide(&p, "demo", &cmd(&["./rm"])).rule(), "no-rm");
        assert_eq!(
            pol.decide(&p, "demo", &cmd(&["/usr/bin/ls"])).rule(),
            DEFAULT_DENY
        );
        assert_eq!(pol.decide(&p, "demo", &cmd(&["ls", "-la"])).rule(), "ls");

        let reads = with_match(
            "reads",
            Action::Allow,
            Match {
                statements: Some(vec![StatementKind::Select]),
                ..Match::default()
            },
        );
        let pol = Policy::new(vec![reads], "test".into());
        let mut f = facts();
        f.functions = vec!["pg_read_file".into()];
        f.function_classes = vec![FunctionClass::FileAccess];
        assert_eq!(pol.decide(&p, "demo", &f).rule(), DEFAULT_DENY);
    }

    #[test]
    fn builtin_rules_come_from_the_catalogue() {
        let toml_rules = r#"
            [[rules]]
            builtin = "deny-unbounded-write"
            [[rules]]
            id = "all"
            action = "allow"
            connections = ["*"]
            principals = ["*"]
        "#;
        #[derive(serde::Deserialize)]
        struct Rules {
            rules: Vec<RuleConfig>,
        }
        let rules: Rules = toml::from_str(toml_rules).unwrap();
        let pol = Policy::new(rules.rules, "test".into());
        let p = principal(&[]);
        let mut f = facts();
        f.kinds = vec![StatementKind::Delete];
        f.missing_where = true;
        match pol.decide(&p, "demo", &f) {
            Decision::Deny { rule, message } => {
                assert_eq!(rule, "deny-unbounded-write");
                assert!(message.contains("WHERE"));
            }
            other => panic!("{other:?}"),
        }
        f.missing_where = false;
        assert_eq!(pol.decide(&p, "demo", &f).rule(), "all");
        let bad: Result<Rules, _> = toml::from_str("[[rules]]\nbuiltin = \"deny-everything\"\n");
        assert!(bad.is_err());
        let bad: Result<Rules, _> =
            toml::from_str("[[rules]]\nbuiltin = \"deny-ddl\"\naction = \"allow\"\n");
        assert!(bad.is_err());
    }

    #[test]
    fn precedence_is_deny_review_allow_default() {
        let p = principal(&["agents"]);
        let allow = rule("a", Action::Allow, &["group:agents"]);
        let review = rule("r", Action::Review, &["*"]);
        let deny = rule("d", Action::Deny, &["sub:dev/agent-*"]);
        let pol = Policy::new(vec![allow.clone()], "test".into());
        assert_eq!(pol.decide(&p, "demo", &facts()).rule(), "a");
        let pol = Policy::new(vec![allow.clone(), review.clone()], "test".into());
        assert_eq!(pol.decide(&p, "demo", &facts()).rule(), "r");
        let pol = Policy::new(vec![deny, allow.clone(), review], "test".into());
        assert_eq!(pol.decide(&p, "demo", &facts()).rule(), "d");
        let pol = Policy::new(vec![allow], "test".into());
        assert_eq!(pol.decide(&p, "other", &facts()).rule(), DEFAULT_DENY);
        assert_eq!(
            pol.decide(&principal(&["x"]), "demo", &facts()).rule(),
            DEFAULT_DENY
        );
    }

    #[test]
    fn sub_pattern_is_bound_to_issuer() {
        let mut p = principal(&[]);
        let pol = Policy::new(
            vec![rule("a", Action::Allow, &["sub:dev/agent-1"])],
            "test".into(),
        );
        assert!(pol.visible(&p, "demo"));
        p.issuer = "other".into();
        assert!(!pol.visible(&p, "demo"));
    }

    #[test]
    fn a_rule_about_unparsed_input_does_not_catch_shells() {
        let deny_unparsed = with_match(
            "deny-unparsed",
            Action::Deny,
            Match {
                unparsed: Some(true),
                ..Match::default()
            },
        );
        let shells = with_match(
            "shells",
            Action::Allow,
            Match {
                shell: Some(true),
                ..Match::default()
            },
        );
        let pol = Policy::new(vec![deny_unparsed, shells], "test".into());
        let facts = Facts {
            statement_count: 1,
            shell: true,
            ..Facts::default()
        };
        assert_eq!(pol.decide(&principal(&[]), "demo", &facts).rule(), "shells");
    }

    #[test]
    fn allow_never_admits_unparsed_unless_it_says_so() {
        let p = principal(&["agents"]);
        let mut f = facts();
        f.unparsed = true;
        let pol = Policy::new(vec![rule("a", Action::Allow, &["*"])], "test".into());
        assert_eq!(pol.decide(&p, "demo", &f).rule(), DEFAULT_DENY);
        let mut opt_in = rule("b", Action::Allow, &["*"]);
        opt_in.matcher = Some(Match {
            unparsed: Some(true),
            ..Match::default()
        });
        let pol = Policy::new(vec![opt_in], "test".into());
        assert_eq!(pol.decide(&p, "demo", &f).rule(), "b");
    }

    #[test]
    fn allow_admits_an_unlisted_function_only_by_naming_it() {
        let p = principal(&["agents"]);
        let mut f = facts();
        f.functions = vec!["myschema.peek".into()];
        f.function_unlisted = true;
        let pol = Policy::new(vec![rule("a", Action::Allow, &["*"])], "test".into());
        assert_eq!(pol.decide(&p, "demo", &f).rule(), DEFAULT_DENY);
        let named = with_match(
            "named",
            Action::Allow,
            Match {
                functions: Some(vec!["myschema.peek".into()]),
                ..Match::default()
            },
        );
        let pol = Policy::new(vec![named], "test".into());
        assert_eq!(pol.decide(&p, "demo", &f).rule(), "named");
    }

    #[test]
    fn a_builtin_review_rule_takes_its_review_settings() {
        #[derive(serde::Deserialize)]
        struct Rules {
            rules: Vec<RuleConfig>,
        }
        let rules: Rules = toml::from_str(
            "[[rules]]\nbuiltin = \"review-unlisted-functions\"\nreview = { approvers = [\"dba\"] }\n",
        )
        .unwrap();
        assert_eq!(rules.rules[0].action, Action::Review);
        assert!(rules.rules[0].validate().is_ok());
        let deny: Result<Rules, _> = toml::from_str(
            "[[rules]]\nbuiltin = \"deny-ddl\"\nreview = { approvers = [\"dba\"] }\n",
        );
        assert!(deny.is_err());
    }

    #[test]
    fn statement_kinds_select_rules() {
        let p = principal(&["agents"]);
        let mut deny_writes = rule("no-delete", Action::Deny, &["*"]);
        deny_writes.matcher = Some(Match {
            statements: Some(vec![StatementKind::Delete]),
            ..Match::default()
        });
        let pol = Policy::new(
            vec![rule("a", Action::Allow, &["*"]), deny_writes],
            "test".into(),
        );
        assert_eq!(pol.decide(&p, "demo", &facts()).rule(), "a");
        let mut f = facts();
        f.kinds = vec![StatementKind::Delete];
        assert_eq!(pol.decide(&p, "demo", &f).rule(), "no-delete");
    }

    #[test]
    fn path_globs_match_segment_by_segment() {
        for (glob, path, hit) in [
            ("/customers/*", "/customers/42", true),
            ("/customers/*", "/customers/42/notes", false),
            ("/customers/**", "/customers/42/notes", true),
            ("/customers/**", "/customers", true),
            ("/admin/**", "/admin", true),
            ("/admin/**", "/administrators", false),
            ("**/admin/**", "/v2/admin/users", true),
            ("**/admin/**", "/v2/badmin/users", false),
            ("/admin*", "/administrators", true),
            ("**/.env", "/app/.env", true),
            ("/", "/", true),
        ] {
            assert_eq!(path_matches(glob, path), hit, "{glob} vs {path}");
        }
    }
}
