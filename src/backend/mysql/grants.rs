//! Privilege check: the account a connection uses must not hold dangerous privileges
//! (FILE, SUPER, ALL PRIVILEGES on `*.*`), directly or through any role granted to it,
//! active or not. The `SHOW GRANTS` lines are parsed here by a small lexer that undoes
//! quoting, so a quoted name can never pass for a keyword or a privilege.
//!
//! What must stay true: a grant list that cannot be read refuses the account (the check
//! fails closed), and so does an account with more roles than can be checked.

use std::collections::HashSet;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

use super::{BackendError, Flavor, MAX_ROLES, text_value};

/// The account's dangerous privileges (FILE, SUPER, ALL PRIVILEGES on `*.*`), including those
/// of every role granted to it, active or not (the agent could `SET ROLE`).
///
/// MariaDB (verified): `SHOW GRANTS FOR CURRENT_USER()` lists role grants as
/// ``GRANT `r` TO `u`@`h` `` but not the roles' privileges; `SHOW GRANTS FOR r` is allowed for a
/// role granted to the account and also lists the grants of the roles granted to `r`.
/// MySQL 8 (not verified here): `SHOW GRANTS FOR` another account or role needs SELECT on
/// `mysql`, so the roles are expanded with `SHOW GRANTS FOR CURRENT_USER() USING r1, r2`,
/// which reports the privileges the account would have with those roles active.
/// A grant list that cannot be read refuses the account: the check fails closed.
pub(super) async fn privileged_grants(
    conn: &mut Conn,
    flavor: Flavor,
    name: &str,
) -> Result<Vec<String>, BackendError> {
    let refuse = |what: &str, e: mysql_async::Error| {
        BackendError::Internal(format!(
            "connection `{name}`: cannot read {what} ({e}), so the account cannot be shown to be \
             unprivileged; grant it access to its own grants or set allow_privileged = true"
        ))
    };
    let mut lines = show_grants(conn, "SHOW GRANTS FOR CURRENT_USER()")
        .await
        .map_err(|e| refuse("the account's grants", e))?;
    let mut inspected: HashSet<Account> = HashSet::new();
    loop {
        let grants: Vec<Grant> = lines.iter().filter_map(|l| parse_grant(l)).collect();
        let described: HashSet<&Account> = grants.iter().filter_map(Grant::grantee).collect();
        let mut pending: Vec<Account> = Vec::new();
        for role in grants.iter().flat_map(Grant::roles) {
            if !described.contains(role) && !inspected.contains(role) && !pending.contains(role) {
                pending.push(role.clone());
            }
        }
        if pending.is_empty() {
            break;
        }
        if inspected.len() + pending.len() > MAX_ROLES {
            return Err(BackendError::Internal(format!(
                "connection `{name}`: the account has more than {MAX_ROLES} roles; cannot check \
                 them (set allow_privileged = true to skip this check)"
            )));
        }
        inspected.extend(pending.iter().cloned());
        match flavor {
            Flavor::MariaDb => {
                for role in &pending {
                    let sql = format!("SHOW GRANTS FOR {}", role.quoted());
                    let more = show_grants(conn, &sql)
                        .await
                        .map_err(|e| refuse(&format!("the grants of role {}", role.quoted()), e))?;
                    lines.extend(more);
                }
            }
            Flavor::MySql => {
                let roles: Vec<String> = pending.iter().map(Account::quoted).collect();
                let sql = format!("SHOW GRANTS FOR CURRENT_USER() USING {}", roles.join(", "));
                let more = show_grants(conn, &sql)
                    .await
                    .map_err(|e| refuse("the grants of the account's roles", e))?;
                lines.extend(more);
                // USING already expands roles granted to those roles; its lines name the
                // account, so asking again could only repeat them.
                break;
            }
        }
    }
    let mut findings = Vec::new();
    for grant in lines.iter().filter_map(|l| parse_grant(l)) {
        if let Grant::Privileges {
            privileges,
            object,
            grantee,
        } = &grant
        {
            for privilege in dangerous_privileges(privileges, object) {
                let to = grantee
                    .as_ref()
                    .map(Account::quoted)
                    .unwrap_or_else(|| "?".into());
                let finding = format!("{privilege} ON {object} granted to {to}");
                if !findings.contains(&finding) {
                    findings.push(finding);
                }
            }
        }
    }
    Ok(findings)
}

async fn show_grants(conn: &mut Conn, sql: &str) -> Result<Vec<String>, mysql_async::Error> {
    let rows: Vec<Row> = conn.query(sql).await?;
    Ok(rows
        .iter()
        .filter_map(|row| text_value(row.as_ref(0)))
        .collect())
}

/// `FILE` and `SUPER` exist only globally; `ALL [PRIVILEGES]` matters on `*.*`.
fn dangerous_privileges<'a>(privileges: &'a [String], object: &str) -> Vec<&'a str> {
    let global = object == "*.*";
    privileges
        .iter()
        .map(String::as_str)
        .filter(|p| {
            matches!(*p, "FILE" | "SUPER") || (global && matches!(*p, "ALL" | "ALL PRIVILEGES"))
        })
        .collect()
}

/// A user or role as SHOW GRANTS prints it: `name`, or `name`@`host`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Account {
    name: String,
    host: Option<String>,
}

impl Account {
    /// Backquoted again for a statement of ours (a backquote inside is doubled).
    fn quoted(&self) -> String {
        let quote = |s: &str| format!("`{}`", s.replace('`', "``"));
        match &self.host {
            Some(host) => format!("{}@{}", quote(&self.name), quote(host)),
            None => quote(&self.name),
        }
    }
}

#[derive(Debug, PartialEq)]
enum Grant {
    /// `GRANT <privileges> ON <object> TO <grantee>`
    Privileges {
        privileges: Vec<String>,
        object: String,
        grantee: Option<Account>,
    },
    /// `GRANT <roles> TO <grantee>`
    Roles {
        roles: Vec<Account>,
        grantee: Option<Account>,
    },
}

impl Grant {
    fn grantee(&self) -> Option<&Account> {
        match self {
            Grant::Privileges { grantee, .. } | Grant::Roles { grantee, .. } => grantee.as_ref(),
        }
    }

    fn roles(&self) -> &[Account] {
        match self {
            Grant::Roles { roles, .. } => roles,
            Grant::Privileges { .. } => &[],
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Punct(char),
}

const GRANT_PUNCT: &str = ",()@.*;=";

/// Splits a SHOW GRANTS line into words, quoted names (`` ` ``, `'`, `"`; doubled quotes and
/// backslash escapes undone) and punctuation.
fn lex_grant(line: &str) -> Vec<Tok> {
    let mut tokens = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '`' | '\'' | '"' => {
                let mut text = String::new();
                while let Some(ch) = chars.next() {
                    if ch == c {
                        if chars.peek() == Some(&c) {
                            chars.next();
                            text.push(c);
                        } else {
                            break;
                        }
                    } else if ch == '\\' && c != '`' {
                        if let Some(escaped) = chars.next() {
                            text.push(escaped);
                        }
                    } else {
                        text.push(ch);
                    }
                }
                tokens.push(Tok::Quoted(text));
            }
            c if GRANT_PUNCT.contains(c) => tokens.push(Tok::Punct(c)),
            c => {
                let mut word = String::from(c);
                while let Some(&next) = chars.peek() {
                    if next.is_whitespace() || GRANT_PUNCT.contains(next) || "`'\"".contains(next) {
                        break;
                    }
                    word.push(next);
                    chars.next();
                }
                tokens.push(Tok::Word(word));
            }
        }
    }
    tokens
}

fn is_keyword(token: &Tok, keyword: &str) -> bool {
    matches!(token, Tok::Word(w) if w.eq_ignore_ascii_case(keyword))
}

/// Parses one SHOW GRANTS line; lines that are not grants (`SET DEFAULT ROLE`, MySQL partial
/// `REVOKE`s) give `None`.
fn parse_grant(line: &str) -> Option<Grant> {
    let tokens = lex_grant(line);
    if !is_keyword(tokens.first()?, "GRANT") {
        return None;
    }
    let mut depth = 0usize;
    let mut on = None;
    let mut to = None;
    for (i, token) in tokens.iter().enumerate().skip(1) {
        match token {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth = depth.saturating_sub(1),
            t if depth == 0 && on.is_none() && is_keyword(t, "ON") => on = Some(i),
            t if depth == 0 && is_keyword(t, "TO") => {
                to = Some(i);
                break;
            }
            _ => {}
        }
    }
    let to = to?;
    let grantee = tokens.get(to + 1..).and_then(parse_account);
    match on {
        Some(on) => {
            let privileges = split_top_level(tokens.get(1..on)?)
                .into_iter()
                .map(privilege_name)
                .filter(|p| !p.is_empty())
                .collect();
            let object = tokens.get(on + 1..to)?.iter().map(render).collect();
            Some(Grant::Privileges {
                privileges,
                object,
                grantee,
            })
        }
        None => {
            let roles = split_top_level(tokens.get(1..to)?)
                .into_iter()
                .filter_map(parse_account)
                .collect();
            Some(Grant::Roles { roles, grantee })
        }
    }
}

/// Splits at commas outside parentheses.
fn split_top_level(tokens: &[Tok]) -> Vec<&[Tok]> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, token) in tokens.iter().enumerate() {
        match token {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth = depth.saturating_sub(1),
            Tok::Punct(',') if depth == 0 => {
                parts.push(&tokens[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&tokens[start..]);
    parts
}

/// `SELECT (a, b)` → `SELECT`; `ALL PRIVILEGES` → `ALL PRIVILEGES`; upper case.
fn privilege_name(tokens: &[Tok]) -> String {
    let mut depth = 0usize;
    let mut words = Vec::new();
    for token in tokens {
        match token {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth = depth.saturating_sub(1),
            Tok::Word(w) if depth == 0 => words.push(w.to_ascii_uppercase()),
            _ => {}
        }
    }
    words.join(" ")
}

/// `name` or `name`@`host` at the start of `tokens`.
fn parse_account(tokens: &[Tok]) -> Option<Account> {
    let name = match tokens.first()? {
        Tok::Quoted(s) | Tok::Word(s) => s.clone(),
        Tok::Punct(_) => return None,
    };
    let host = match (tokens.get(1), tokens.get(2)) {
        (Some(Tok::Punct('@')), Some(Tok::Quoted(h) | Tok::Word(h))) => Some(h.clone()),
        _ => None,
    };
    Some(Account { name, host })
}

fn render(token: &Tok) -> String {
    match token {
        Tok::Word(w) => w.clone(),
        Tok::Quoted(q) => format!("`{q}`"),
        Tok::Punct(c) => c.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str, host: Option<&str>) -> Account {
        Account {
            name: name.into(),
            host: host.map(str::to_string),
        }
    }

    #[test]
    fn grant_lines_are_parsed() {
        // MariaDB 10.11 output.
        assert_eq!(
            parse_grant("GRANT ALL PRIVILEGES ON *.* TO `root`@`127.0.0.1` WITH GRANT OPTION"),
            Some(Grant::Privileges {
                privileges: vec!["ALL PRIVILEGES".into()],
                object: "*.*".into(),
                grantee: Some(account("root", Some("127.0.0.1"))),
            })
        );
        assert_eq!(
            parse_grant("GRANT SELECT (`a`), INSERT (`a`, `b`) ON `test`.`al_x` TO `al_r1`"),
            Some(Grant::Privileges {
                privileges: vec!["SELECT".into(), "INSERT".into()],
                object: "`test`.`al_x`".into(),
                grantee: Some(account("al_r1", None)),
            })
        );
        assert_eq!(
            parse_grant("GRANT `al_r1` TO `al_role`@`%`"),
            Some(Grant::Roles {
                roles: vec![account("al_r1", None)],
                grantee: Some(account("al_role", Some("%"))),
            })
        );
        assert_eq!(
            parse_grant("SET DEFAULT ROLE `al_r1` FOR `al_role`@`%`"),
            None
        );
        // MySQL 8 output.
        assert_eq!(
            parse_grant("GRANT `r1`@`%`,`r2`@`localhost` TO `u`@`%` WITH ADMIN OPTION"),
            Some(Grant::Roles {
                roles: vec![account("r1", Some("%")), account("r2", Some("localhost"))],
                grantee: Some(account("u", Some("%"))),
            })
        );
        let Some(Grant::Privileges { privileges, .. }) = parse_grant(
            "GRANT APPLICATION_PASSWORD_ADMIN,AUDIT_ABORT_EXEMPT ON *.* TO `root`@`localhost`",
        ) else {
            panic!("not parsed");
        };
        assert_eq!(
            privileges,
            ["APPLICATION_PASSWORD_ADMIN", "AUDIT_ABORT_EXEMPT"]
        );
        // A quote inside a name survives the round trip.
        let Some(Grant::Roles { roles, .. }) = parse_grant("GRANT `we``ird` TO 'u'@'%'") else {
            panic!("not parsed");
        };
        assert_eq!(roles[0].quoted(), "`we``ird`");
    }

    fn dangerous(line: &str) -> Vec<String> {
        match parse_grant(line) {
            Some(Grant::Privileges {
                privileges, object, ..
            }) => dangerous_privileges(&privileges, &object)
                .into_iter()
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn dangerous_privileges_are_found() {
        assert_eq!(
            dangerous("GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION"),
            ["ALL PRIVILEGES"]
        );
        assert_eq!(dangerous("GRANT FILE ON *.* TO `al_r2`"), ["FILE"]);
        assert_eq!(
            dangerous(
                "GRANT SELECT, RELOAD, FILE, SUPER ON *.* TO 'u'@'%' IDENTIFIED BY PASSWORD '*AB'"
            ),
            ["FILE", "SUPER"]
        );
        assert!(dangerous("GRANT ALL PRIVILEGES ON `shop`.* TO `u`@`%`").is_empty());
        assert!(dangerous("GRANT USAGE ON *.* TO `u`@`%` IDENTIFIED BY PASSWORD '*B2'").is_empty());
        assert!(
            dangerous("GRANT PROXY ON ''@'%' TO 'root'@'localhost' WITH GRANT OPTION").is_empty()
        );
        assert!(dangerous("GRANT SELECT (`file`) ON `db`.`t` TO `u`@`%`").is_empty());
    }
}
