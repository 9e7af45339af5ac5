//! Session setup: the connection URL and TLS options, and the fixed statements every
//! session and every request start with.
//!
//! What must stay true (see the module comment of `mysql`): every session lexes statements
//! the way the inspector does (`SET NAMES utf8mb4`, a `sql_mode` without any mode that
//! changes parsing), read-only connections are read-only by session default as well as per
//! transaction, and nothing in the URL can weaken a guarantee Airlock decides itself.

use std::time::Duration;

use mysql_async::{Opts, SslOpts};

use super::Flavor;
use crate::config::TlsConfig;

/// The `sql_mode` every session runs with. Strict, and free of every mode that changes how the
/// statement text is lexed or parsed (see the `mysql` module comment). `||` stays `OR` here
/// while sqlparser reads it as concatenation: the tables, functions and source columns are
/// the same either way (an output over `a || b` derives from `a` and `b` in both readings),
/// only the computed value differs.
const SQL_MODE: &str = "STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,\
                        ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION";

/// The server-side statement limit is the request's remaining time plus this margin, so our own
/// deadline normally fires first and the server limit only backs it up.
const SERVER_LIMIT_MARGIN: Duration = Duration::from_secs(1);

/// URL query parameters accepted in `url`. Everything else is either decided by Airlock (pool
/// size, reset, statement cache, TLS, socket use) or weakens a guarantee
/// (`enable_cleartext_plugin`, `secure_auth`, `verify_ca`, ...), so it is refused instead of
/// silently overridden.
const ALLOWED_URL_PARAMS: &[&str] = &[
    "tcp_keepalive",
    "tcp_nodelay",
    "conn_ttl",
    "max_allowed_packet",
    "wait_timeout",
    "compression",
];

/// Parses the configured URL into driver options, refusing anything Airlock decides itself.
pub(super) fn parse_url(url: &str) -> Result<Opts, String> {
    let mut parsed = reqwest::Url::parse(url).map_err(|e| format!("url is not valid: {e}"))?;
    match parsed.scheme() {
        "mysql" => {}
        // The driver only knows `mysql://`; `mariadb://` is accepted by the configuration.
        "mariadb" => parsed
            .set_scheme("mysql")
            .map_err(|()| "url: cannot use the `mariadb` scheme".to_string())?,
        other => {
            return Err(format!(
                "url scheme must be mysql or mariadb, got `{other}`"
            ));
        }
    }
    if parsed.password().is_some() {
        return Err("the url carries a password; use `password = \"env:NAME\"` instead".into());
    }
    for (key, _) in parsed.query_pairs() {
        if !ALLOWED_URL_PARAMS.contains(&key.as_ref()) {
            return Err(format!(
                "url parameter `{key}` is not accepted (allowed: {}); TLS is set with `tls`, \
                 pool size with `limits.pool_size`, and connection resets are always on",
                ALLOWED_URL_PARAMS.join(", ")
            ));
        }
    }
    Opts::from_url(parsed.as_str()).map_err(|e| format!("url: {e}"))
}

/// TLS with only the configured CA as trust anchor; hostname verification stays on (the
/// driver's default: neither `skip_domain_validation` nor `accept_invalid_certs` is set).
pub(super) fn ssl_opts(tls: &TlsConfig) -> Result<SslOpts, String> {
    let reference = tls
        .ca
        .as_ref()
        .ok_or_else(|| "tls.mode = verify-full needs tls.ca".to_string())?;
    let pem = reference.resolve().map_err(|e| format!("tls.ca: {e}"))?;
    let bytes = pem.expose().as_bytes().to_vec();
    // Check now, so a wrong file is a startup error and not a failure of every connection
    // (the driver would take a non-PEM buffer for a single DER certificate).
    let mut reader = bytes.as_slice();
    let certs = rustls_pemfile::certs(&mut reader)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.ca is not a valid PEM bundle: {e}"))?;
    if certs.is_empty() {
        return Err("tls.ca contains no PEM certificate".into());
    }
    Ok(SslOpts::default()
        .with_root_certs(vec![bytes.into()])
        .with_disable_built_in_roots(true))
}

/// The session setup: how statements are lexed (`SET NAMES`, `sql_mode`), the time zone and,
/// for read-only connections, the session's default transaction mode.
///
/// It is not a driver *setup* command, which the driver would run in a round trip of its own
/// after every reset: a request sends it in front of its transaction ([`begin_sql`]), and the
/// rare administrative use of a connection (grants, schema) sends it first on its own.
///
/// For read-only connections the session default is READ ONLY as well: on MariaDB (verified)
/// a DDL statement implicitly commits and then runs outside `START TRANSACTION READ ONLY`,
/// while `SET SESSION TRANSACTION READ ONLY` makes the server refuse it (error 1792).
pub(super) fn setup_sql(read_only: bool) -> String {
    session_setup(read_only, None)
}

/// What a request sends first, in one round trip and before its statement is prepared (the
/// server's prepare parses with the session's `sql_mode` and character set): the session
/// setup with the server-side statement time limit (backstop for our own deadline), then the
/// transaction. As few statements as possible: the server answers each one separately. The
/// reset on return to the pool restores every session variable.
pub(super) fn begin_sql(flavor: Flavor, read_only: bool, remaining: Duration) -> String {
    let limit = remaining + SERVER_LIMIT_MARGIN;
    let set_limit = match flavor {
        // Seconds, fractional; applies to every statement. Verified on MariaDB 10.11.
        Flavor::MariaDb => format!("SESSION max_statement_time = {:.3}", limit.as_secs_f64()),
        // Milliseconds; MySQL applies it to read-only SELECT only (not verified here).
        Flavor::MySql => format!(
            "SESSION max_execution_time = {}",
            limit.as_millis().min(u128::from(u32::MAX))
        ),
    };
    let start = if read_only {
        "START TRANSACTION READ ONLY"
    } else {
        "START TRANSACTION"
    };
    format!("{}; {start}", session_setup(read_only, Some(&set_limit)))
}

/// One `SET` of every session variable (plus `extra`), then the read-only default if asked.
fn session_setup(read_only: bool, extra: Option<&str>) -> String {
    let mut sql =
        format!("SET NAMES utf8mb4, SESSION sql_mode = '{SQL_MODE}', SESSION time_zone = '+00:00'");
    if let Some(extra) = extra {
        sql.push_str(", ");
        sql.push_str(extra);
    }
    if read_only {
        sql.push_str("; SET SESSION TRANSACTION READ ONLY");
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_setup_pins_lexing() {
        let setup = setup_sql(false);
        assert!(setup.starts_with("SET NAMES utf8mb4, "));
        assert!(setup.contains("time_zone = '+00:00'"));
        for mode in [
            "ANSI",
            "NO_BACKSLASH_ESCAPES",
            "PIPES_AS_CONCAT",
            "ORACLE",
            "IGNORE_SPACE",
        ] {
            assert!(!SQL_MODE.contains(mode), "{mode}");
        }
        assert!(!setup.contains("READ ONLY"));
        assert!(setup_sql(true).ends_with("; SET SESSION TRANSACTION READ ONLY"));
    }

    #[test]
    fn begin_sets_up_the_session_the_server_limit_and_the_transaction() {
        let sets = format!(
            "SET NAMES utf8mb4, SESSION sql_mode = '{SQL_MODE}', SESSION time_zone = '+00:00'"
        );
        assert_eq!(
            begin_sql(Flavor::MariaDb, true, Duration::from_millis(2500)),
            format!(
                "{sets}, SESSION max_statement_time = 3.500; SET SESSION TRANSACTION READ ONLY; \
                 START TRANSACTION READ ONLY"
            )
        );
        assert_eq!(
            begin_sql(Flavor::MySql, false, Duration::from_secs(2)),
            format!("{sets}, SESSION max_execution_time = 3000; START TRANSACTION")
        );
    }

    #[test]
    fn url_parameters_are_allow_listed() {
        assert!(parse_url("mysql://agent@db.example:3306/shop").is_ok());
        let opts = parse_url("mariadb://agent@db.example/shop?tcp_keepalive=10000");
        assert_eq!(
            opts.map(|o| o.db_name().map(str::to_string)),
            Ok(Some("shop".into()))
        );
        let e = parse_url("mysql://agent@db.example/shop?require_ssl=false").unwrap_err();
        assert!(e.contains("require_ssl"), "{e}");
        let e = parse_url("mysql://agent@db.example/shop?reset_connection=false").unwrap_err();
        assert!(e.contains("reset_connection"), "{e}");
        assert!(parse_url("postgres://agent@db.example/shop").is_err());
        let e = parse_url("mysql://agent:hunter2@db.example/shop").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
