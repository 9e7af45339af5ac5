//! Gateway overhead benchmark (run by hand: `cargo bench --bench gateway`).
//!
//! Single-row primary-key lookups against the local PostgreSQL, at 1 and 32 concurrent
//! clients, measured in the same run three ways: direct simple-query protocol (what
//! pgbench's default mode sends), direct tokio-postgres prepared statements, and through
//! Airlock (HTTP + JWT + inspect + policy + durable audit begin/end + JSON). Prints
//! throughput, p50/p99 and the ratio to the direct prepared baseline, then a per-step cost
//! breakdown. Nothing here asserts a number: timings are for reading, not for CI.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock::config::{Config, PrincipalKind};
use airlock::identity::dev::{DevIssuer, TokenRequest};
use serde_json::json;

const RUN: Duration = Duration::from_secs(5);
const ROWS: i64 = 10_000;

struct Stats {
    ops: usize,
    p50: Duration,
    p99: Duration,
    secs: f64,
}

impl Stats {
    fn tps(&self) -> f64 {
        self.ops as f64 / self.secs
    }
}

fn stats(mut lat: Vec<Duration>, secs: f64) -> Stats {
    lat.sort();
    let pick = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Stats {
        ops: lat.len(),
        p50: pick(0.50),
        p99: pick(0.99),
        secs,
    }
}

async fn run_clients<F, Fut>(clients: usize, make: F) -> Stats
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Vec<Duration>> + Send + 'static,
{
    let started = Instant::now();
    let handles: Vec<_> = (0..clients).map(|i| tokio::spawn(make(i))).collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("client task"));
    }
    stats(all, started.elapsed().as_secs_f64())
}

async fn connect(db: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 user=postgres dbname={db}"),
        tokio_postgres::NoTls,
    )
    .await
    .expect("PostgreSQL on 127.0.0.1:5432");
    tokio::spawn(conn);
    c
}

fn print(label: &str, s: &Stats, base: Option<&Stats>) {
    let ratio = base
        .map(|b| format!("{:6.1} %", 100.0 * s.tps() / b.tps()))
        .unwrap_or_else(|| "    —   ".into());
    println!(
        "{label:<34} {:>9.0} req/s   p50 {:>7.3} ms   p99 {:>7.3} ms   vs direct prepared {ratio}",
        s.tps(),
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() {
    let admin = connect("postgres").await;
    let db = format!("airlock_bench_{}", std::process::id());
    let role = format!("{db}_agent");
    admin
        .batch_execute(&format!("CREATE ROLE {role} LOGIN"))
        .await
        .expect("role");
    admin
        .batch_execute(&format!("CREATE DATABASE {db} OWNER {role}"))
        .await
        .expect("db");
    {
        let c = connect(&db).await;
        c.batch_execute(&format!(
            "CREATE TABLE accounts (id int8 PRIMARY KEY, name text, balance numeric);
             INSERT INTO accounts SELECT g, 'name ' || g, g * 1.5 FROM generate_series(1, {ROWS}) g;
             GRANT SELECT ON accounts TO {role};"
        ))
        .await
        .expect("seed");
    }

    let data = tempfile::tempdir().expect("tempdir");
    let config = format!(
        r#"[server]
listen = "127.0.0.1:0"
max_concurrent_per_principal = 64
[[issuers]]
name = "dev"
issuer = "airlock-dev"
audience = "airlock"
dev = true
kind_claim = "airlock_kind"
allowed_groups = ["*"]
[[connections]]
name = "pg"
kind = "postgres"
url = "postgres://{role}@127.0.0.1:5432/{db}"
[connections.limits]
pool_size = 32
# One bench principal stands for many agents: it may use the whole pool, as the direct
# baseline's 32 connections do.
principal_share = 1.0
[[rules]]
id = "agents"
action = "allow"
connections = ["pg"]
principals = ["group:agents"]
"#
    );
    let parsed = Config::parse(&config, "bench").expect("config");
    let issuer_cfg = Config::parse(&config, "bench").expect("config");
    let prepared = airlock::server::prepare(parsed, data.path(), None)
        .await
        .expect("prepare");
    let running = airlock::server::start(prepared, false)
        .await
        .expect("start");
    let url = format!("http://{}/v1/connections/pg/query", running.addr);
    let token = DevIssuer::load_or_create(data.path())
        .expect("key")
        .mint(
            issuer_cfg.dev_issuer().expect("dev issuer"),
            &TokenRequest {
                subject: "bench",
                groups: &["agents".into()],
                kind: PrincipalKind::Agent,
                act: None,
                lifetime_secs: 3600,
            },
        )
        .expect("token");

    println!(
        "single-row lookup by primary key, {} s per measurement, table of {ROWS} rows\n",
        RUN.as_secs()
    );
    for clients in [1usize, 32] {
        let db1 = db.clone();
        let simple = run_clients(clients, move |i| {
            let db = db1.clone();
            async move {
                let c = connect(&db).await;
                let mut lat = Vec::new();
                let end = Instant::now() + RUN;
                let mut k = i as i64;
                while Instant::now() < end {
                    k = (k * 7919 + 1) % ROWS + 1;
                    let t = Instant::now();
                    c.simple_query(&format!(
                        "SELECT id, name, balance FROM accounts WHERE id = {k}"
                    ))
                    .await
                    .expect("q");
                    lat.push(t.elapsed());
                }
                lat
            }
        })
        .await;
        let db2 = db.clone();
        let prepared = run_clients(clients, move |i| {
            let db = db2.clone();
            async move {
                let c = connect(&db).await;
                let stmt = c
                    .prepare("SELECT id, name, balance::text FROM accounts WHERE id = $1")
                    .await
                    .expect("prep");
                let mut lat = Vec::new();
                let end = Instant::now() + RUN;
                let mut k = i as i64;
                while Instant::now() < end {
                    k = (k * 7919 + 1) % ROWS + 1;
                    let t = Instant::now();
                    c.query(&stmt, &[&k]).await.expect("q");
                    lat.push(t.elapsed());
                }
                lat
            }
        })
        .await;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .expect("client");
        let (url2, token2) = (url.clone(), token.clone());
        let gateway = run_clients(clients, move |i| {
            let (http, url, token) = (http.clone(), url2.clone(), token2.clone());
            async move {
                let mut lat = Vec::new();
                let end = Instant::now() + RUN;
                let mut k = i as i64;
                while Instant::now() < end {
                    k = (k * 7919 + 1) % ROWS + 1;
                    let t = Instant::now();
                    let r = http
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&json!({"sql": "SELECT id, name, balance FROM accounts WHERE id = $1", "params": [k]}))
                        .send()
                        .await
                        .expect("send");
                    assert!(r.status().is_success(), "{}", r.status());
                    r.bytes().await.expect("body");
                    lat.push(t.elapsed());
                }
                lat
            }
        })
        .await;
        println!("{clients} client(s):");
        print(
            "  direct, simple query (pgbench-like)",
            &simple,
            Some(&prepared),
        );
        print("  direct, prepared (tokio-postgres)", &prepared, None);
        print(
            "  through Airlock (durable audit)",
            &gateway,
            Some(&prepared),
        );
        println!();
    }

    // Cost breakdown of the steps Airlock adds, measured in isolation.
    println!("cost breakdown per request (in-process, mean of many):");
    let state = running.state.clone();
    let n = 2000;
    let header = format!("Bearer {token}");
    let t = Instant::now();
    for _ in 0..n {
        state.auth.authenticate(Some(&header)).await.expect("auth");
    }
    println!(
        "  JWT verify (EdDSA)           {:>8.1} µs",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    let t = Instant::now();
    for _ in 0..n {
        airlock::inspect::sql::inspect(
            airlock::config::ConnectionKind::Postgres,
            "SELECT id, name, balance FROM accounts WHERE id = $1",
        )
        .expect("inspect");
    }
    println!(
        "  inspect (both parsers)       {:>8.1} µs",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    let audit = Arc::new(state.gateway.audit.clone());
    let t = Instant::now();
    for _ in 0..200 {
        audit
            .commit(airlock::audit::AuditEvent::new(
                airlock::audit::Phase::Begin,
                "bench",
                "query",
            ))
            .await
            .expect("audit");
    }
    println!(
        "  audit commit, 1 writer       {:>8.1} µs (fsync per commit)",
        t.elapsed().as_secs_f64() * 1e6 / 200.0
    );
    let t = Instant::now();
    let handles: Vec<_> = (0..32)
        .map(|_| {
            let audit = audit.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    audit
                        .commit(airlock::audit::AuditEvent::new(
                            airlock::audit::Phase::Begin,
                            "bench",
                            "query",
                        ))
                        .await
                        .expect("audit");
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("task");
    }
    println!(
        "  audit commit, 32 writers     {:>8.1} µs per event (group commit)",
        t.elapsed().as_secs_f64() * 1e6 / 1600.0
    );
    let row = vec![json!("1234"), json!("name 1234"), json!("1851.0")];
    let t = Instant::now();
    for _ in 0..n * 10 {
        serde_json::value::to_raw_value(&row).expect("json");
    }
    println!(
        "  JSON row serialization       {:>8.2} µs",
        t.elapsed().as_secs_f64() * 1e6 / (n * 10) as f64
    );

    // Guardrails: inspect + decide per statement.
    println!("\ninspect + decide per statement (PostgreSQL dialect, demo policy):");
    let policy_cfg = Config::load(None).expect("embedded config");
    let policy =
        airlock::policy::Policy::new(policy_cfg.rules.clone(), policy_cfg.policy_version());
    let agent = airlock::identity::Principal {
        issuer: "dev".into(),
        subject: "agent-1".into(),
        kind: PrincipalKind::Agent,
        groups: vec!["agents".into()],
        actor: vec![],
    };
    let short = "SELECT id, name FROM customers WHERE id = $1";
    let long = format!(
        "WITH recent AS (SELECT customer_id, sum(amount_cents) AS total FROM orders WHERE ordered_at > now() - interval '30 days' GROUP BY customer_id) \
         SELECT c.id, c.name, lower(c.city), r.total, CASE WHEN r.total > 10000 THEN 'vip' ELSE 'std' END AS tier \
         FROM customers c JOIN recent r ON r.customer_id = c.id \
         WHERE c.city IN ({}) ORDER BY r.total DESC LIMIT 50",
        (0..200)
            .map(|i| format!("'city{i}'"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (label, sql) in [
        ("short (45 bytes)", short.to_string()),
        (&format!("long ({} bytes)", long.len())[..], long.clone()),
    ] {
        let n = 2000;
        let t = Instant::now();
        for _ in 0..n {
            let facts =
                airlock::inspect::sql::inspect(airlock::config::ConnectionKind::Postgres, &sql)
                    .expect("inspect")
                    .facts;
            std::hint::black_box(policy.decide(&agent, "demo", &facts));
        }
        println!(
            "  {label:<22} {:>8.1} µs",
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        );
    }

    // Masking: throughput on mixed rows next to the JSON serialization of the same rows.
    println!("\nmasking vs JSON serialization, same rows, one core:");
    let masking_cfg: Vec<airlock::mask::MaskingConfig> = policy_cfg.masking.clone();
    let masking = airlock::mask::plan::Masking::new(&masking_cfg, vec![7u8; 32]).expect("masking");
    let rm = masking.for_record("demo");
    let rows: Vec<Vec<serde_json::Value>> = (0..50_000)
        .map(|i| {
            vec![
                json!(i.to_string()),
                json!(format!("Customer number {i} from the north-west region")),
                json!(if i % 50 == 0 {
                    format!("contact me at person{i}@example.com")
                } else {
                    format!("order note {i}: delivered on time, no issues reported")
                }),
                json!(format!("2026-0{}-1{} 10:00:00", i % 9 + 1, i % 9)),
                json!(if i % 97 == 0 {
                    "4111 1111 1111 1111".to_string()
                } else {
                    format!("SKU-{:08}", i)
                }),
            ]
        })
        .collect();
    let names: Vec<String> = ["id", "name", "note", "at", "ref"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let plan = vec![airlock::mask::plan::ColumnTreatment::Scan; names.len()];
    let bytes: usize = rows
        .iter()
        .map(|r| serde_json::to_vec(r).map(|v| v.len()).unwrap_or(0))
        .sum();
    let t = Instant::now();
    for r in &rows {
        std::hint::black_box(serde_json::value::to_raw_value(r).expect("json"));
    }
    let json_s = t.elapsed().as_secs_f64();
    let mut counts = airlock::mask::plan::MaskedCounts::default();
    let t = Instant::now();
    for r in &rows {
        let mut r = r.clone();
        rm.row(&mut r, &names, &plan, &mut counts);
        std::hint::black_box(r);
    }
    let mask_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for r in &rows {
        std::hint::black_box(r.clone());
    }
    let clone_s = t.elapsed().as_secs_f64();
    let mask_s = (mask_s - clone_s).max(1e-9);
    let mb = bytes as f64 / 1e6;
    println!(
        "  rows: {} ({mb:.1} MB of JSON), {} values masked",
        rows.len(),
        counts.detectors.total()
    );
    println!("  JSON serialization   {:>8.0} MB/s", mb / json_s);
    println!(
        "  masking              {:>8.0} MB/s   ({:.0} % of the serialization time)",
        mb / mask_s,
        100.0 * mask_s / json_s
    );

    running.shutdown().await;
    let _ = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await;
    let _ = admin
        .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
        .await;
}
