//! The audit log's hash chain on both stores: events written through a running Airlock
//! verify; an edited, deleted or reordered row is found and named; `airlock audit verify`
//! says so with its exit status; two instances appending to one PostgreSQL store at once
//! keep one chain; a store from before the chain is chained by its migration.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use airlock::audit::chain::{self, ChainHead, Verdict};
use airlock::store::Store;
use serde_json::json;

use crate::common::*;

fn config() -> String {
    config_with("")
}

/// `limits`: lines of the demo connection's `[connections.limits]`.
fn config_with(limits: &str) -> String {
    format!(
        r#"{DEV_ISSUER}
[[connections]]
name = "demo"
kind = "sqlite"
path = "demo.db"
[connections.limits]
{limits}

[[rules]]
id = "agents"
action = "allow"
connections = ["demo"]
principals = ["group:agents"]
"#
    )
}

fn pg_store(db: &PgDb) -> String {
    format!(
        "[store]\nurl = \"postgres://postgres@127.0.0.1:5432/{}\"\n",
        db.name
    )
}

/// Direct write access to a store's tables: the attacker the chain is for.
enum Raw {
    Sqlite(rusqlite::Connection),
    Pg(tokio_postgres::Client),
}

impl Raw {
    fn table(&self) -> &'static str {
        match self {
            Raw::Sqlite(_) => "audit_events",
            Raw::Pg(_) => "airlock_audit_events",
        }
    }

    async fn exec(&self, sql: &str) {
        match self {
            Raw::Sqlite(c) => c.execute_batch(sql).unwrap(),
            Raw::Pg(c) => c.batch_execute(sql).await.unwrap(),
        }
    }

    async fn seqs(&self) -> Vec<i64> {
        let sql = format!("SELECT seq FROM {} ORDER BY seq", self.table());
        match self {
            Raw::Sqlite(c) => {
                let mut stmt = c.prepare(&sql).unwrap();
                stmt.query_map([], |r| r.get(0))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
            }
            Raw::Pg(c) => c
                .query(&sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect(),
        }
    }

    async fn id(&self, seq: i64) -> String {
        let sql = format!("SELECT id FROM {} WHERE seq = {seq}", self.table());
        match self {
            Raw::Sqlite(c) => c.query_row(&sql, [], |r| r.get(0)).unwrap(),
            Raw::Pg(c) => c.query_one(&sql, &[]).await.unwrap().get(0),
        }
    }

    /// Changes what the event at `seq` says, as an attacker covering tracks would.
    fn edit(&self, seq: i64) -> String {
        match self {
            Raw::Sqlite(_) => format!(
                "UPDATE audit_events SET record = json_set(record, '$.operation', 'edited') WHERE seq = {seq}"
            ),
            Raw::Pg(_) => format!(
                "UPDATE airlock_audit_events SET record = jsonb_set(record, '{{operation}}', '\"edited\"') WHERE seq = {seq}"
            ),
        }
    }
}

async fn verdict(store: &Arc<dyn Store>) -> Verdict {
    chain::verify(store.as_ref(), None).await.unwrap()
}

fn broken_at(v: Verdict) -> (i64, Option<String>, String) {
    match v {
        Verdict::Broken(b) => (b.seq, b.id.clone(), b.to_string()),
        Verdict::Intact { events, .. } => panic!("tampering went unnoticed ({events} events)"),
    }
}

async fn assert_intact(store: &Arc<dyn Store>, events: u64) -> ChainHead {
    match verdict(store).await {
        Verdict::Intact { events: n, head } => {
            assert_eq!(n, events);
            head
        }
        Verdict::Broken(b) => panic!("chain broken: {b}"),
    }
}

/// Runs `n` queries through `a`, one after another.
async fn queries(a: &Airlock, n: usize) {
    let token = a.agent();
    for i in 0..n {
        let (s, b) = a
            .query(&token, "demo", json!({"sql": format!("SELECT {i} AS n")}))
            .await;
        assert_eq!(s, 200, "{b}");
    }
}

/// Waits until the store holds `n` rows (end events land just after the response).
async fn rows(raw: &Raw, n: usize) {
    let mut last = 0;
    for _ in 0..100 {
        last = raw.seqs().await.len();
        if last == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{last} audit rows, expected {n}");
}

/// Edits, reorders and deletes rows of an intact chain of `events` rows, one at a time;
/// each is found and named, and the chain verifies again once the row is put back.
async fn tampering_is_found(store: &Arc<dyn Store>, raw: &Raw, events: u64) {
    let t = raw.table();
    let seqs = raw.seqs().await;
    assert_eq!(seqs.len() as u64, events);
    let (s, next, last) = (
        seqs[seqs.len() / 2],
        seqs[seqs.len() / 2 + 1],
        seqs[seqs.len() - 1],
    );
    let (id_s, id_next) = (raw.id(s).await, raw.id(next).await);

    // An edited record: that row's hash no longer matches it.
    raw.exec(&format!(
        "CREATE TABLE saved AS SELECT * FROM {t} WHERE seq = {s}"
    ))
    .await;
    raw.exec(&raw.edit(s)).await;
    let (seq, id, why) = broken_at(verdict(store).await);
    assert_eq!((seq, id.as_deref()), (s, Some(id_s.as_str())), "{why}");
    assert!(why.contains("edited"), "{why}");
    raw.exec(&format!(
        "UPDATE {t} SET record = (SELECT record FROM saved) WHERE seq = {s}; DROP TABLE saved"
    ))
    .await;
    assert_intact(store, events).await;

    // Two rows swapped: the one moved up does not chain to its new predecessor.
    let swap = format!(
        "UPDATE {t} SET seq = -1 WHERE seq = {s};
         UPDATE {t} SET seq = {s} WHERE seq = {next};
         UPDATE {t} SET seq = {next} WHERE seq = -1;"
    );
    raw.exec(&swap).await;
    let (seq, id, why) = broken_at(verdict(store).await);
    assert_eq!((seq, id.as_deref()), (s, Some(id_next.as_str())), "{why}");
    raw.exec(&swap).await;
    assert_intact(store, events).await;

    // A deleted row: the next one no longer chains.
    raw.exec(&format!(
        "CREATE TABLE saved AS SELECT * FROM {t} WHERE seq = {s}; DELETE FROM {t} WHERE seq = {s};"
    ))
    .await;
    let (seq, id, why) = broken_at(verdict(store).await);
    assert_eq!(
        (seq, id.as_deref()),
        (next, Some(id_next.as_str())),
        "{why}"
    );
    raw.exec(&format!(
        "INSERT INTO {t} SELECT * FROM saved; DROP TABLE saved"
    ))
    .await;
    assert_intact(store, events).await;

    // The newest row deleted: the recorded head still names it.
    raw.exec(&format!(
        "CREATE TABLE saved AS SELECT * FROM {t} WHERE seq = {last}; DELETE FROM {t} WHERE seq = {last};"
    ))
    .await;
    let (seq, id, why) = broken_at(verdict(store).await);
    assert_eq!((seq, id), (last, None), "{why}");
    raw.exec(&format!(
        "INSERT INTO {t} SELECT * FROM saved; DROP TABLE saved"
    ))
    .await;
    assert_intact(store, events).await;
}

async fn open(cfg: &str, data: &Path) -> Arc<dyn Store> {
    let parsed = airlock::config::Config::parse(cfg, "test config").unwrap();
    airlock::store::open(&parsed, data).await.unwrap()
}

/// `airlock audit verify`, the real binary: (exit code, stdout, stderr).
fn verify_cli(config: &Path, data: &Path, pin: Option<&str>) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_airlock"));
    cmd.arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .args(["audit", "verify"])
        .env("RUST_LOG", "warn");
    if let Some(p) = pin {
        cmd.args(["--pin", p]);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn sqlite_store_chain_verifies_and_names_a_tampered_row() {
    let cfg = config();
    let a = Airlock::start(&cfg).await;
    queries(&a, 6).await;
    let Airlock { running, data, .. } = a;
    let raw = Raw::Sqlite(rusqlite::Connection::open(data.path().join("airlock.db")).unwrap());
    rows(&raw, 12).await;
    running.unwrap().shutdown().await;

    let store = open(&cfg, data.path()).await;
    let head = assert_intact(&store, 12).await;
    assert_eq!(head.seq, 12);
    tampering_is_found(&store, &raw, 12).await;

    // The command: exit 0 with the count and the head; 2 naming the row once it is edited.
    let file = data.path().join("airlock.toml");
    std::fs::write(&file, &cfg).unwrap();
    let (code, out, err) = verify_cli(&file, data.path(), None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("audit chain intact: 12 events verified"),
        "{out}"
    );
    assert!(out.contains(&format!("head: {head}")), "{out}");
    let (code, out, err) = verify_cli(&file, data.path(), Some(&head.to_string()));
    assert_eq!(code, 0, "{out}{err}");

    let id = raw.id(5).await;
    raw.exec(&raw.edit(5)).await;
    let (code, out, err) = verify_cli(&file, data.path(), None);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains(&format!("audit chain broken at seq 5 (event {id})")),
        "{err}"
    );
    assert!(!out.contains("intact"), "{out}");

    // A missing store is an error (1), not an empty chain.
    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = verify_cli(&file, empty.path(), None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no audit store"), "{err}");
}

#[tokio::test]
async fn postgres_store_chain_verifies_and_names_a_tampered_row() {
    let store_db = PgDb::create().await;
    let cfg = format!("{}{}", pg_store(&store_db), config());
    let a = Airlock::start(&cfg).await;
    queries(&a, 6).await;
    let raw = Raw::Pg(store_db.admin().await);
    rows(&raw, 12).await;
    a.stop().await;

    let data = tempfile::tempdir().unwrap();
    let store = open(&cfg, data.path()).await;
    let head = assert_intact(&store, 12).await;
    assert_eq!(head.seq, 12);
    tampering_is_found(&store, &raw, 12).await;
}

#[tokio::test]
async fn two_instances_appending_at_once_keep_one_chain_on_postgres() {
    let store_db = PgDb::create().await;
    // Room for every call at once: the point is concurrent appends, not admission limits.
    let cfg = format!(
        "{}{}",
        pg_store(&store_db),
        config_with("pool_size = 256\nprincipal_share = 1.0\npool_wait_timeout_ms = 30000")
    );
    let server = "max_concurrent_per_principal = 256";
    let a = Airlock::start_with(server, &cfg).await;
    let b = Airlock::start_with(server, &cfg).await;
    let (ta, tb) = (a.agent(), b.agent());
    // 200 queries, half through each instance, all in flight together.
    let calls = (0..200).map(|i| {
        let (inst, token) = if i % 2 == 0 { (&a, &ta) } else { (&b, &tb) };
        async move {
            inst.query(token, "demo", json!({"sql": format!("SELECT {i} AS n")}))
                .await
        }
    });
    for (s, body) in futures::future::join_all(calls).await {
        assert_eq!(s, 200, "{body}");
    }
    let raw = Raw::Pg(store_db.admin().await);
    rows(&raw, 400).await;
    a.stop().await;
    b.stop().await;

    let data = tempfile::tempdir().unwrap();
    let store = open(&cfg, data.path()).await;
    let head = assert_intact(&store, 400).await;
    assert_eq!(head.seq, 400);
    let Raw::Pg(admin) = &raw else { unreachable!() };
    let row = admin
        .query_one(
            "SELECT count(DISTINCT prev_hash), count(DISTINCT hash), min(seq), max(seq)
             FROM airlock_audit_events",
            &[],
        )
        .await
        .unwrap();
    // No head was extended twice; `seq` is dense because it is the head's plus one.
    let (prevs, hashes, min, max): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!((prevs, hashes, min, max), (400, 400, 1, 400));
}

#[tokio::test]
async fn a_postgres_store_from_before_the_chain_is_chained_by_its_migration() {
    let store_db = PgDb::create().await;
    let cfg = format!("{}{}", pg_store(&store_db), config());
    let a = Airlock::start(&cfg).await;
    queries(&a, 3).await;
    let raw = Raw::Pg(store_db.admin().await);
    rows(&raw, 6).await;
    a.stop().await;
    let data = tempfile::tempdir().unwrap();
    let head = assert_intact(&open(&cfg, data.path()).await, 6).await;

    // Back to the schema of the release before the chain, rows and all.
    let downgrade = format!(
        "ALTER TABLE airlock_audit_events DROP COLUMN prev_hash, DROP COLUMN hash;
         DROP TABLE airlock_audit_chain_head;
         DELETE FROM airlock_schema_migrations WHERE version = {};",
        airlock::store::postgres::CHAIN_MIGRATION
    );
    raw.exec(&downgrade).await;
    // The upgrade chains the same rows into the same chain: append-time and migration-time
    // hashing read the same bytes.
    let store = open(&cfg, data.path()).await;
    assert_eq!(assert_intact(&store, 6).await, head);

    // Again, with a gap in `seq` and rows the old release wrote after it.
    raw.exec(&downgrade).await;
    raw.exec(
        "DELETE FROM airlock_audit_events WHERE seq = 2;
         INSERT INTO airlock_audit_events (seq, id, time, phase, execution_id, record)
         SELECT seq + 100, id || '-old', time, phase, execution_id, record
         FROM airlock_audit_events WHERE seq <= 3;",
    )
    .await;
    let store = open(&cfg, data.path()).await;
    let head = assert_intact(&store, 7).await;
    assert_eq!(head.seq, 103);
    // Opening again changes nothing; a running Airlock extends the same chain.
    let a = Airlock::start(&cfg).await;
    queries(&a, 1).await;
    rows(&raw, 9).await;
    a.stop().await;
    let store = open(&cfg, data.path()).await;
    assert_eq!(assert_intact(&store, 9).await.seq, 105);
}
