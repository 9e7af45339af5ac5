//! The `airlock` command: serve (default), migrate, audit verify, openapi, token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use airlock::config::{Config, PrincipalKind};
use airlock::identity::dev::{DevIssuer, TokenRequest};

#[derive(Parser)]
#[command(
    name = "airlock",
    version,
    about = "Access gateway for autonomous AI agents"
)]
struct Cli {
    /// Configuration file (TOML). Without it, the embedded quick-start config is used.
    #[arg(long, global = true, env = "AIRLOCK_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory: SQLite store, demo database, dev issuer key.
    #[arg(
        long,
        global = true,
        env = "AIRLOCK_DATA_DIR",
        default_value = "airlock-data"
    )]
    data_dir: PathBuf,
    /// Listen address, overriding `server.listen` (for `serve`, also the default command).
    #[arg(long, global = true, env = "AIRLOCK_LISTEN")]
    listen: Option<SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Apply the store's migrations and exit.
    Migrate,
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Print a token signed by the dev issuer's key in the data directory (the server creates
    /// it on first start; this command never does).
    Token {
        #[arg(long)]
        sub: String,
        /// Comma-separated groups.
        #[arg(long, value_delimiter = ',', default_value = "")]
        groups: Vec<String>,
        #[arg(long, value_enum, default_value = "agent")]
        kind: KindArg,
        /// Subject of the actor this token delegates to (RFC 8693 `act`).
        #[arg(long)]
        act: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        lifetime: u64,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the audit log's hash chain and check every link. Exits 0 and prints the head
    /// (record it outside the store; pass it back as --pin), or exits 2 naming the first
    /// event whose link does not hold.
    Verify {
        /// A head printed by an earlier run (`SEQ:HASH`): the chain must still pass through
        /// it, which catches a chain rewritten from that point on.
        #[arg(long, value_parser = airlock::audit::chain::ChainHead::parse)]
        pin: Option<airlock::audit::chain::Pin>,
    },
}

/// Exit status of `audit verify` when the chain is broken (1 is any other error).
const EXIT_BROKEN: u8 = 2;

#[derive(Clone, Copy, clap::ValueEnum)]
enum KindArg {
    Agent,
    Human,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn run(cli: Cli) -> Result<ExitCode, String> {
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Openapi = command {
        println!("{}", airlock::api::openapi_json());
        return Ok(ExitCode::SUCCESS);
    }
    let config = Config::load(cli.config.as_deref()).map_err(|e| e.to_string())?;
    match command {
        Command::Openapi => Ok(ExitCode::SUCCESS),
        Command::Migrate => {
            std::fs::create_dir_all(&cli.data_dir)
                .map_err(|e| format!("{}: {e}", cli.data_dir.display()))?;
            airlock::store::open(&config, &cli.data_dir).await?;
            eprintln!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            command: AuditCommand::Verify { pin },
        } => verify_audit(&config, &cli.data_dir, pin).await,
        Command::Token {
            sub,
            groups,
            kind,
            act,
            lifetime,
        } => {
            let issuer = config
                .dev_issuer()
                .ok_or("no dev issuer is configured (an issuer with `dev = true`)")?;
            // Never create the key here: a fresh key would sign tokens the server (which
            // loaded its own key from its data directory) answers with 401.
            let key = DevIssuer::load(&cli.data_dir)?.ok_or_else(|| {
                let path = DevIssuer::key_path(&cli.data_dir);
                let shown = std::path::absolute(&path).unwrap_or(path);
                format!(
                    "no dev issuer key at {}; `airlock token` signs with the key the server \
                     created in its data directory and never creates one. Run it in the \
                     directory where the server runs, pass the server's data directory \
                     (--data-dir or AIRLOCK_DATA_DIR), or start the server once so it creates \
                     the key",
                    shown.display()
                )
            })?;
            let groups: Vec<String> = groups.into_iter().filter(|g| !g.is_empty()).collect();
            warn_dropped_groups(issuer, &groups);
            let token = key.mint(
                issuer,
                &TokenRequest {
                    subject: &sub,
                    groups: &groups,
                    kind: match kind {
                        KindArg::Agent => PrincipalKind::Agent,
                        KindArg::Human => PrincipalKind::Human,
                    },
                    act: act.as_deref(),
                    lifetime_secs: lifetime,
                },
            )?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve => serve(config, cli.data_dir, cli.listen)
            .await
            .map(|()| ExitCode::SUCCESS),
    }
}

/// Warns on stderr about groups the dev issuer's `allowed_groups` would drop when the server
/// verifies the token: they are signed, but the principal would not be in them.
fn warn_dropped_groups(issuer: &airlock::config::IssuerConfig, groups: &[String]) {
    let dropped: Vec<&str> = groups
        .iter()
        .map(String::as_str)
        .filter(|g| !issuer.allows_group(g))
        .collect();
    if dropped.is_empty() {
        return;
    }
    let why = if issuer.allowed_groups.is_empty() {
        format!(
            "issuer `{}` has no `allowed_groups`, so it drops every group",
            issuer.name
        )
    } else {
        format!(
            "issuer `{}` allows only {} (its `allowed_groups`)",
            issuer.name,
            issuer.allowed_groups.join(", ")
        )
    };
    eprintln!(
        "warning: the server will drop group(s) {} from this token: {why}, in the configuration \
         given to this command. Add them to `allowed_groups` of the `[[issuers]]` entry with \
         `dev = true` in the server's configuration to let them through.",
        dropped.join(", ")
    );
}

/// `airlock audit verify`: walks the chain; the head goes to stdout, a break to stderr.
async fn verify_audit(
    config: &Config,
    data_dir: &std::path::Path,
    pin: Option<airlock::audit::chain::Pin>,
) -> Result<ExitCode, String> {
    use airlock::audit::chain::{self, Verdict};
    // Verifying must not create an empty embedded store and call it intact.
    let embedded = data_dir.join("airlock.db");
    if config.store.url.is_none() && !embedded.exists() {
        return Err(format!("no audit store at {}", embedded.display()));
    }
    let store = airlock::store::open(config, data_dir).await?;
    match chain::verify(store.as_ref(), pin)
        .await
        .map_err(|e| e.to_string())?
    {
        Verdict::Intact { events, head } => {
            println!("audit chain intact: {events} events verified");
            println!("head: {head}");
            eprintln!(
                "Record the head outside the store: `airlock audit verify --pin {head}` later checks the log still passes through it."
            );
            Ok(ExitCode::SUCCESS)
        }
        Verdict::Broken(b) => {
            eprintln!("error: audit chain broken at {b}");
            Ok(ExitCode::from(EXIT_BROKEN))
        }
    }
}

async fn serve(
    config: Config,
    data_dir: PathBuf,
    listen: Option<SocketAddr>,
) -> Result<(), String> {
    // The quick start prints a ready-to-use agent token and a curl for the demo.
    let hint = match config.dev_issuer() {
        Some(issuer) if config.connections.iter().any(|c| c.name == "demo") => {
            std::fs::create_dir_all(&data_dir)
                .map_err(|e| format!("{}: {e}", data_dir.display()))?;
            let token = DevIssuer::load_or_create(&data_dir)?.mint(
                issuer,
                &TokenRequest {
                    subject: "agent-1",
                    groups: &["agents".to_string()],
                    kind: PrincipalKind::Agent,
                    act: None,
                    lifetime_secs: 3600,
                },
            )?;
            // And a one-time console sign-in link for a DBA (made once the store is open).
            let approver = airlock::identity::Principal {
                issuer: issuer.name.clone(),
                subject: "dba-1".into(),
                kind: PrincipalKind::Human,
                groups: ["dba"]
                    .iter()
                    .filter(|g| issuer.allows_group(g))
                    .map(|g| g.to_string())
                    .collect(),
                actor: Vec::new(),
            };
            Some((token, approver))
        }
        _ => None,
    };
    let prepared = airlock::server::prepare(config, &data_dir, listen).await?;
    let hint = match hint {
        Some((token, approver)) => {
            let link = airlock::console::sign_in_link(&prepared.state, approver).await?;
            Some((token, link))
        }
        None => None,
    };
    let running = airlock::server::start(prepared, true).await?;
    let addr = running.addr;
    eprintln!(
        "Airlock listening on http://{addr} (data directory: {})",
        data_dir.display()
    );
    eprintln!("API docs: http://{addr}/docs");
    if let Some((token, link)) = hint {
        eprintln!(
            "\nA dev token for agent-1 (group agents), valid 1 hour:\n\n  export AIRLOCK_TOKEN={token}\n"
        );
        eprintln!(
            "Query the demo:\n\n  curl -s http://{addr}/v1/connections/demo/query \\\n    -H \"Authorization: Bearer $AIRLOCK_TOKEN\" -H 'Content-Type: application/json' \\\n    -d '{{\"sql\": \"SELECT id, name, email, city FROM customers ORDER BY id LIMIT 3\"}}'\n"
        );
        eprintln!(
            "Approve, audit and replay in the console: this link signs in dba-1 (group dba) once, \
             within {} minutes:\n\n  http://{addr}{link}\n",
            airlock::console::LINK_TTL_SECS / 60
        );
    }
    running.wait().await;
    Ok(())
}
