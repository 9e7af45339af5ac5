//! Test harness: in-process Airlock servers, real PostgreSQL and MariaDB, dev tokens.
//!
//! A service a test needs that is not running fails the test with how to start it; nothing
//! is silently skipped. Each test gets its own database, dropped afterwards.

use std::path::Path;
use std::time::Duration;

use airlock::config::{Config, PrincipalKind};
use airlock::identity::dev::{DevIssuer, TokenRequest};
use airlock::server::Running;
use serde_json::Value;

pub const PG_ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";
pub const PG_HINT: &str = "PostgreSQL is not reachable on 127.0.0.1:5432. Start it with: \
    pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start";
pub const MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/test";
pub const MYSQL_HINT: &str = "MariaDB is not reachable on 127.0.0.1:3306. Start it with: \
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd";

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Dev-issuer section every test config starts with.
pub const DEV_ISSUER: &str = r#"
[[issuers]]
name = "dev"
issuer = "airlock-dev"
audience = "airlock"
dev = true
kind_claim = "airlock_kind"
allowed_groups = ["*"]
"#;

pub struct Airlock {
    pub running: Option<Running>,
    pub base: String,
    pub data: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl Airlock {
    /// Starts a server on a free loopback port with `config` (TOML) and a fresh data dir.
    pub async fn start(config: &str) -> Airlock {
        Self::start_with("", config).await
    }

    /// `server` holds extra `[server]` keys, one per line.
    pub async fn start_with(server: &str, config: &str) -> Airlock {
        let data = tempfile::tempdir().expect("tempdir");
        Self::start_in_with(server, config, data).await
    }

    pub async fn start_in(config: &str, data: tempfile::TempDir) -> Airlock {
        Self::start_in_with("", config, data).await
    }

    pub async fn start_in_with(server: &str, config: &str, data: tempfile::TempDir) -> Airlock {
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout_ms = 2000\n{server}\n{config}"
        );
        let parsed = Config::parse(&config, "test config").expect("test config is valid");
        let prepared = airlock::server::prepare(parsed, data.path(), None)
            .await
            .expect("server prepares");
        let running = airlock::server::start(prepared, false)
            .await
            .expect("server starts");
        let base = format!("http://{}", running.addr);
        Airlock {
            running: Some(running),
            base,
            data,
            http: reqwest::Client::new(),
        }
    }

    pub fn token(&self, sub: &str, groups: &[&str], kind: PrincipalKind) -> String {
        mint(self.data.path(), sub, groups, kind, None)
    }

    pub fn agent(&self) -> String {
        self.token("agent-1", &["agents"], PrincipalKind::Agent)
    }

    pub async fn query(&self, token: &str, conn: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/v1/connections/{conn}/query", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request sent");
        let status = resp.status().as_u16();
        let v = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, v)
    }

    pub async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent");
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().await.unwrap_or(Value::Null))
    }

    /// A session's recording (asciicast text), fetched as `token`.
    pub async fn recording(&self, token: &str, session_id: &str) -> String {
        self.http
            .get(format!("{}/v1/sessions/{session_id}/recording", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// All audit events of one execution, oldest first.
    pub async fn audit_of(&self, execution_id: &str) -> Vec<Value> {
        let auditor = self.token("auditor", &["auditors"], PrincipalKind::Human);
        // End events are written just after the response; give them a moment.
        for _ in 0..50 {
            let (status, page) = self
                .get(&auditor, &format!("/v1/audit?execution_id={execution_id}"))
                .await;
            assert_eq!(status, 200, "{page}");
            let mut events = page["events"].as_array().cloned().unwrap_or_default();
            if events.iter().any(|e| e["phase"] == "end") {
                events.reverse();
                return events;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no end event for execution {execution_id}");
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

pub fn mint(
    data: &Path,
    sub: &str,
    groups: &[&str],
    kind: PrincipalKind,
    act: Option<&str>,
) -> String {
    let config = Config::parse(DEV_ISSUER, "dev").expect("dev issuer config");
    let issuer = config.dev_issuer().expect("dev issuer");
    let groups: Vec<String> = groups.iter().map(|s| s.to_string()).collect();
    DevIssuer::load_or_create(data)
        .expect("dev key")
        .mint(
            issuer,
            &TokenRequest {
                subject: sub,
                groups: &groups,
                kind,
                act,
                lifetime_secs: 600,
            },
        )
        .expect("token")
}

/// Connects to the local PostgreSQL as the admin, or fails with how to start it.
pub async fn pg_admin() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(PG_ADMIN, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{PG_HINT} ({e})"));
    tokio::spawn(conn);
    client
}

/// A throwaway PostgreSQL database plus an unprivileged role that owns it.
pub struct PgDb {
    pub name: String,
    pub role: String,
}

impl PgDb {
    pub async fn create() -> PgDb {
        let admin = pg_admin().await;
        let name = unique("airlock_t");
        let role = format!("{name}_agent");
        // Separate calls: CREATE DATABASE cannot share an implicit transaction.
        admin
            .batch_execute(&format!("CREATE ROLE {role} LOGIN"))
            .await
            .expect("create test role");
        admin
            .batch_execute(&format!("CREATE DATABASE {name} OWNER {role}"))
            .await
            .expect("create test database");
        PgDb { name, role }
    }

    pub fn url(&self) -> String {
        format!("postgres://{}@127.0.0.1:5432/{}", self.role, self.name)
    }

    /// A client connected to the test database as the admin (superuser).
    pub async fn admin(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port=5432 user=postgres dbname={}",
                self.name
            ),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap_or_else(|e| panic!("{PG_HINT} ({e})"));
        tokio::spawn(conn);
        client
    }

    /// A client connected as the unprivileged role.
    pub async fn owner(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port=5432 user={} dbname={}",
                self.role, self.name
            ),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap_or_else(|e| panic!("{PG_HINT} ({e})"));
        tokio::spawn(conn);
        client
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let (name, role) = (self.name.clone(), self.role.clone());
        // Drop runs outside async context guarantees; use a private runtime on a thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                if let Ok((c, conn)) =
                    tokio_postgres::connect(PG_ADMIN, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = c
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                    let _ = c
                        .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
                        .await;
                }
            });
            Ok::<_, std::io::Error>(())
        })
        .join();
    }
}

/// A throwaway MariaDB database plus an unprivileged user with rights on it only.
pub struct MyDb {
    pub name: String,
    pub user: String,
}

pub async fn my_admin() -> mysql_async::Conn {
    mysql_async::Conn::from_url(MYSQL_URL)
        .await
        .unwrap_or_else(|e| panic!("{MYSQL_HINT} ({e})"))
}

impl MyDb {
    pub async fn create() -> MyDb {
        use mysql_async::prelude::Queryable;
        let mut admin = my_admin().await;
        let name = unique("airlock_t");
        let user = format!("u{}", &name[10..]);
        admin
            .query_drop(format!(
                "CREATE DATABASE {name}; CREATE USER '{user}'@'127.0.0.1'; \
                 CREATE USER '{user}'@'localhost'; \
                 GRANT ALL PRIVILEGES ON {name}.* TO '{user}'@'127.0.0.1'; \
                 GRANT ALL PRIVILEGES ON {name}.* TO '{user}'@'localhost';"
            ))
            .await
            .expect("create test database");
        MyDb { name, user }
    }

    pub fn url(&self) -> String {
        format!("mysql://{}@127.0.0.1:3306/{}", self.user, self.name)
    }

    pub async fn admin(&self) -> mysql_async::Conn {
        mysql_async::Conn::from_url(format!("mysql://root@127.0.0.1:3306/{}", self.name))
            .await
            .unwrap_or_else(|e| panic!("{MYSQL_HINT} ({e})"))
    }
}

impl Drop for MyDb {
    fn drop(&mut self) {
        let (name, user) = (self.name.clone(), self.user.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async move {
                use mysql_async::prelude::Queryable;
                if let Ok(mut c) = mysql_async::Conn::from_url(MYSQL_URL).await {
                    let _ = c
                        .query_drop(format!(
                            "DROP DATABASE IF EXISTS {name}; DROP USER IF EXISTS '{user}'@'127.0.0.1'; \
                             DROP USER IF EXISTS '{user}'@'localhost';"
                        ))
                        .await;
                    let _ = c.disconnect().await;
                }
            });
            Ok::<_, std::io::Error>(())
        })
        .join();
    }
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
