//! The core without a server: every entry path through admission against fake targets and
//! a real embedded store. What is checked is what the audit log holds afterwards.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::admit::{Action, Admission};
use super::command::ExecRequest;
use super::problem::Code;
use super::query::QueryRequest;
use super::shell::ShellRequest;
use super::*;
use crate::audit::{AuditEvent, Outcome, Phase};
use crate::backend::{
    BackendError, ColumnInfo, ExecBackend, ExecEvent, ExecPlan, ExecStream, QueryPlan, RowEvent,
    RowStream, ShellPlan, SqlBackend, TableInfo, Target,
};
use crate::config::{
    ConnectionConfig, ConnectionKind, DatabaseConfig, PrincipalKind, SshConfig, TargetConfig,
};
use crate::store::AuditQuery;

/// Counts what reached the target.
#[derive(Default)]
struct Calls {
    verify: AtomicUsize,
    io: AtomicUsize,
}

struct FakeSql {
    up: bool,
    calls: Arc<Calls>,
}

fn down() -> BackendError {
    BackendError::Unavailable {
        detail: "fake target down".into(),
        retry_after_secs: 1,
    }
}

#[async_trait::async_trait]
impl SqlBackend for FakeSql {
    async fn verify(&self) -> Result<(), BackendError> {
        self.calls.verify.fetch_add(1, Ordering::SeqCst);
        if self.up { Ok(()) } else { Err(down()) }
    }

    async fn query(&self, _: QueryPlan, _: CancellationToken) -> Result<RowStream, BackendError> {
        self.calls.io.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = RowStream::channel();
        tokio::spawn(async move {
            let columns = vec![crate::backend::Column {
                name: "a".into(),
                type_name: "int4".into(),
            }];
            tx.send(Ok(RowEvent::Columns(columns))).await;
            tx.send(Ok(RowEvent::Row(vec![1.into()]))).await;
            tx.send(Ok(RowEvent::End {
                truncated: false,
                affected_rows: None,
            }))
            .await;
        });
        Ok(rx)
    }

    async fn schema(&self) -> Result<Vec<TableInfo>, BackendError> {
        self.calls.io.fetch_add(1, Ordering::SeqCst);
        let table = |name: &str| TableInfo {
            schema: Some("public".into()),
            name: name.into(),
            kind: "table".into(),
            columns: vec![ColumnInfo {
                name: "secret".into(),
                type_name: "text".into(),
                nullable: true,
                ..ColumnInfo::default()
            }],
            ..TableInfo::default()
        };
        Ok(vec![table("t"), table("hidden")])
    }

    fn kind(&self) -> ConnectionKind {
        ConnectionKind::Postgres
    }
}

struct FakeExec {
    calls: Arc<Calls>,
}

#[async_trait::async_trait]
impl ExecBackend for FakeExec {
    async fn verify(&self) -> Result<(), BackendError> {
        self.calls.verify.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn exec(&self, _: ExecPlan, _: CancellationToken) -> Result<ExecStream, BackendError> {
        self.calls.io.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = ExecStream::channel();
        tokio::spawn(async move {
            tx.send(Ok(ExecEvent::Stdout(bytes::Bytes::from_static(b"hi\n"))))
                .await;
            tx.send(Ok(ExecEvent::Exit {
                code: Some(0),
                signal: None,
            }))
            .await;
        });
        Ok(rx)
    }

    async fn shell(
        &self,
        _: ShellPlan,
        _: CancellationToken,
    ) -> Result<crate::backend::ShellSession, BackendError> {
        self.calls.io.fetch_add(1, Ordering::SeqCst);
        Err(down())
    }
}

const RULES: &str = include_str!("tests_config.toml");

struct Harness {
    gateway: Arc<Gateway>,
    sql: Arc<Calls>,
    down: Arc<Calls>,
    exec: Arc<Calls>,
    _dir: tempfile::TempDir,
}

fn connection_config(name: &str, kind: &str) -> ConnectionConfig {
    let (kind, target) = match kind {
        "ssh" => (
            ConnectionKind::Ssh,
            TargetConfig::Ssh(SshConfig {
                url: "ssh://u@127.0.0.1:1".into(),
                private_key: None,
                password: None,
                host_key: "SHA256:unused".into(),
                connect_timeout_ms: 1000,
                allow_privileged: false,
            }),
        ),
        _ => (
            ConnectionKind::Postgres,
            TargetConfig::Database(DatabaseConfig {
                url: "postgres://u@127.0.0.1:1/d".into(),
                password: None,
                tls: Default::default(),
                read_only: false,
                allow_privileged: false,
            }),
        ),
    };
    ConnectionConfig {
        name: name.into(),
        kind,
        description: String::new(),
        limits: Default::default(),
        target,
    }
}

async fn harness(per_principal: usize) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::config::Config::parse(RULES, "test rules").unwrap();
    let store_config: crate::config::StoreConfig = toml::from_str("").unwrap();
    let store: Arc<dyn crate::store::Store> = Arc::new(
        crate::store::sqlite::SqliteStore::open(&dir.path().join("airlock.db"), &store_config)
            .unwrap(),
    );
    let audit = crate::audit::writer::AuditWriter::start(store.clone(), dir.path()).unwrap();
    let (sql, down_calls, exec) = (
        Arc::new(Calls::default()),
        Arc::new(Calls::default()),
        Arc::new(Calls::default()),
    );
    let mut connections = HashMap::new();
    let mut add = |name: &str, kind: &str, target: Target| {
        let c = Connection::new(connection_config(name, kind), target, format!("v-{name}"));
        connections.insert(name.to_string(), Arc::new(c));
    };
    let fake = |up: bool, calls: &Arc<Calls>| {
        Target::Sql(Arc::new(FakeSql {
            up,
            calls: calls.clone(),
        }))
    };
    add("db", "postgres", fake(true, &sql));
    add("strict", "postgres", fake(false, &down_calls));
    add("down", "postgres", fake(false, &down_calls));
    add(
        "host",
        "ssh",
        Target::Exec(Arc::new(FakeExec {
            calls: exec.clone(),
        })),
    );
    let gateway = Arc::new(Gateway {
        policy: crate::policy::Policy::new(config.rules.clone(), "policy-v".into()),
        connections,
        audit,
        store,
        shutdown: CancellationToken::new(),
        slots: slots::Slots::new(per_principal),
        reviews: Arc::new(crate::review::hub::ReviewHub::default()),
        notifier: None,
        masking: crate::mask::plan::Masking::new(&config.masking, vec![7; 32]).unwrap(),
        shells: shell::Running::default(),
        shells_config: toml::from_str("").unwrap(),
        in_flight: Default::default(),
        memory: super::Gateway::memory_budget(1 << 30).0,
        memory_total: 1 << 20,
        jobs: Default::default(),
        jobs_config: Default::default(),
    });
    Harness {
        gateway,
        sql,
        down: down_calls,
        exec,
        _dir: dir,
    }
}

fn agent(actor: &[&str]) -> Caller {
    Caller {
        principal: crate::identity::Principal {
            issuer: "test".into(),
            subject: "agent-1".into(),
            kind: PrincipalKind::Agent,
            groups: vec!["agents".into()],
            actor: actor.iter().map(|a| a.to_string()).collect(),
        },
        request_id: None,
    }
}

fn query(sql: &str) -> Action {
    Action::Query {
        request: QueryRequest {
            sql: sql.into(),
            params: vec![],
            max_rows: None,
            max_bytes: None,
            timeout_ms: None,
        },
        streaming: false,
    }
}

fn exec(argv: Option<&[&str]>, command: Option<&str>, timeout_ms: Option<u64>) -> Action {
    Action::Exec(ExecRequest {
        argv: argv.map(|a| a.iter().map(|s| s.to_string()).collect()),
        command: command.map(str::to_string),
        stdin: None,
        timeout_ms,
        max_bytes: None,
        target: None,
    })
}

fn shell() -> Action {
    Action::Shell(ShellRequest {
        target: None,
        cols: 80,
        rows: 24,
    })
}

/// The events the store holds for `execution_id` (with `outcome`, if given).
async fn events_of(h: &Harness, execution_id: &str, outcome: Option<&str>) -> Vec<AuditEvent> {
    let query = AuditQuery {
        connection: None,
        issuer: None,
        subject: None,
        outcome: outcome.map(str::to_string),
        execution_id: Some(execution_id.into()),
        since: None,
        until: None,
        before_seq: None,
        limit: 50,
    };
    h.gateway.store.query_audit(&query).await.unwrap()
}

/// The begin and end the store holds for `execution_id`.
async fn audited(h: &Harness, execution_id: &str) -> (AuditEvent, AuditEvent) {
    // Ends of refusals are committed before the refusal returns; others may lag a moment.
    for _ in 0..50 {
        let events = events_of(h, execution_id, None).await;
        let begin = events.iter().find(|e| e.phase == Phase::Begin).cloned();
        let end = events.iter().find(|e| e.phase == Phase::End).cloned();
        if let (Some(b), Some(e)) = (begin, end) {
            return (b, e);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no begin + end audited for {execution_id}");
}

async fn refused(h: &Harness, caller: Caller, connection: &str, action: Action) -> Problem {
    let request = Request::new(caller, connection, action);
    match serve(&h.gateway, request).await {
        Err(p) => p,
        Ok(_) => panic!("expected a refusal on `{connection}`"),
    }
}

/// Each refusal: its code, and a begin + end in the audit log with the rule that refused.
#[tokio::test]
async fn every_refusal_on_every_entry_path_is_audited() {
    let h = harness(8).await;
    let cases: Vec<(&str, Action, Code, Option<&str>, Outcome)> = vec![
        (
            "nope",
            query("SELECT 1"),
            Code::NotFound,
            None,
            Outcome::Denied,
        ),
        (
            "host",
            query("SELECT 1"),
            Code::WrongOperation,
            None,
            Outcome::Denied,
        ),
        (
            "db",
            query("DROP TABLE t"),
            Code::PolicyDenied,
            Some("no-drop"),
            Outcome::Denied,
        ),
        (
            "db",
            query("SELEC 1"),
            Code::SqlSyntax,
            Some("deny-unparsed"),
            Outcome::Denied,
        ),
        (
            "db",
            query("  "),
            Code::InvalidStatement,
            Some("inspect"),
            Outcome::Denied,
        ),
        (
            "db",
            query("SELECT 1; SELECT 2"),
            Code::MultipleStatements,
            Some("single-statement"),
            Outcome::Denied,
        ),
        (
            "down",
            query("SELECT 1"),
            Code::BackendUnavailable,
            None,
            Outcome::Error,
        ),
        (
            "db",
            Action::Schema,
            Code::WrongOperation,
            None,
            Outcome::Denied,
        )
            .tap_schema_on("host"),
        (
            "down",
            Action::Schema,
            Code::BackendUnavailable,
            None,
            Outcome::Error,
        ),
        (
            "db",
            exec(Some(&["ls"]), None, None),
            Code::WrongOperation,
            None,
            Outcome::Denied,
        ),
        (
            "host",
            exec(Some(&["ls"]), None, Some(0)),
            Code::InvalidLimit,
            Some("limits"),
            Outcome::Denied,
        ),
        (
            "host",
            exec(Some(&["rm", "x"]), None, None),
            Code::PolicyDenied,
            Some("default-deny"),
            Outcome::Denied,
        ),
        (
            "host",
            exec(Some(&["ls"]), Some("ls"), None),
            Code::InvalidCommand,
            None,
            Outcome::Denied,
        ),
        (
            "host",
            shell(),
            Code::ReviewRequired,
            Some("shell-reviewed"),
            Outcome::Denied,
        ),
        ("db", shell(), Code::WrongOperation, None, Outcome::Denied),
        (
            "host",
            Action::RunApproved {
                execution_id: "no-such-execution".into(),
            },
            Code::NotFound,
            None,
            Outcome::Denied,
        ),
    ];
    for (connection, action, code, rule, outcome) in cases {
        let p = refused(&h, agent(&[]), connection, action).await;
        assert_eq!(p.code, code, "{connection}: {}", p.detail);
        let id = p.extra["execution_id"].as_str().unwrap().to_string();
        let (begin, end) = audited(&h, &id).await;
        assert_eq!(end.outcome, Some(outcome), "{connection} {code:?}");
        assert_eq!(end.error_class.as_deref(), Some(code.as_str()));
        if outcome == Outcome::Denied {
            assert!(
                matches!(begin.decision.as_deref(), Some("deny") | Some("review")),
                "{code:?}: {:?}",
                begin.decision
            );
        }
        if let Some(rule) = rule {
            assert_eq!(begin.rule.as_deref(), Some(rule), "{code:?}");
            assert_eq!(end.rule.as_deref(), Some(rule), "{code:?}");
        }
    }
    // Nothing refused reached a target's data.
    assert_eq!(h.sql.io.load(Ordering::SeqCst), 0);
    assert_eq!(h.exec.io.load(Ordering::SeqCst), 0);
}

/// Lets the table above say "this action, on that connection" without a second list.
trait TapSchema {
    fn tap_schema_on(self, connection: &'static str) -> Self;
}

impl<'a> TapSchema for (&'a str, Action, Code, Option<&'a str>, Outcome) {
    fn tap_schema_on(self, connection: &'static str) -> Self {
        (connection, self.1, self.2, self.3, self.4)
    }
}

#[tokio::test]
async fn a_slot_is_taken_by_every_entry_and_released_when_it_ends() {
    let h = harness(1).await;
    let held = match admit::admit(
        &h.gateway,
        Request::new(agent(&[]), "db", query("SELECT 1")),
    )
    .await
    .unwrap()
    {
        Admission::Ready(a) => a,
        Admission::Held(_) | Admission::Kept(_) => panic!("not ready"),
    };
    // While the slot is taken, every entry path is refused with 429, audited.
    for (connection, action) in [
        ("db", query("SELECT 1")),
        ("db", Action::Schema),
        ("host", exec(Some(&["ls"]), None, None)),
        ("host", shell()),
    ] {
        let p = refused(&h, agent(&[]), connection, action).await;
        assert_eq!(p.code, Code::TooManyRequests, "{connection}");
        assert_eq!(p.extra["rule"], "principal-concurrency");
        let id = p.extra["execution_id"].as_str().unwrap().to_string();
        let (_, end) = audited(&h, &id).await;
        assert_eq!(end.error_class.as_deref(), Some("too_many_requests"));
    }
    // Running it holds the slot while the backend works; once the result is complete
    // (before the client has read its end) the slot is free again.
    let Answer::Rows(mut rows) = start(held).await.unwrap() else {
        panic!("rows expected")
    };
    while rows.rows.recv().await.is_some() {}
    for _ in 0..50 {
        if h.gateway.slots.acquire(&agent(&[]).principal).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let schema = serve(&h.gateway, Request::new(agent(&[]), "db", Action::Schema)).await;
    assert!(matches!(schema, Ok(Answer::Schema(_))));
}

#[tokio::test]
async fn verification_comes_before_any_target_io() {
    let h = harness(8).await;
    // A target that cannot be verified is never read: not for a schema read, not for the
    // strict-masking lineage lookup, not for a query.
    for (connection, action) in [
        ("down", Action::Schema),
        ("strict", query("SELECT secret FROM t")),
        ("down", query("SELECT 1")),
    ] {
        let p = refused(&h, agent(&[]), connection, action).await;
        assert_eq!(p.code, Code::BackendUnavailable, "{connection}");
    }
    assert!(h.down.verify.load(Ordering::SeqCst) >= 3);
    assert_eq!(
        h.down.io.load(Ordering::SeqCst),
        0,
        "no I/O on an unverified target"
    );
    // A verified one is verified once, then used.
    let ok = serve(&h.gateway, Request::new(agent(&[]), "db", Action::Schema)).await;
    assert!(matches!(ok, Ok(Answer::Schema(_))));
    assert_eq!(h.sql.verify.load(Ordering::SeqCst), 1);
    assert_eq!(h.sql.io.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_stale_approval_is_refused_and_audited() {
    let h = harness(8).await;
    let held = match serve(
        &h.gateway,
        Request::new(agent(&[]), "db", query("DELETE FROM t WHERE a = 1")),
    )
    .await
    .unwrap()
    {
        Answer::Held(view) => view,
        _ => panic!("a write must be held"),
    };
    let dba = crate::identity::Principal {
        issuer: "test".into(),
        subject: "dba-1".into(),
        kind: PrincipalKind::Human,
        groups: vec!["dba".into()],
        actor: vec![],
    };
    review::decide(
        &h.gateway,
        &held.review_id,
        &dba,
        review::Verdict::Approve {
            max_affected_rows: None,
            comment: None,
        },
    )
    .await
    .unwrap();
    // The same requester through another delegation chain: not what was approved.
    let run = Action::RunApproved {
        execution_id: held.execution_id.clone(),
    };
    let p = refused(&h, agent(&["someone-else"]), "", run).await;
    assert_eq!(p.code, Code::ApprovalStale, "{}", p.detail);
    assert_eq!(p.extra["execution_id"], held.execution_id.as_str());
    let events = events_of(&h, &held.execution_id, Some("denied")).await;
    assert!(
        events
            .iter()
            .any(|e| e.error_class.as_deref() == Some("approval_stale")),
        "{events:?}"
    );
    assert_eq!(h.sql.io.load(Ordering::SeqCst), 0, "nothing ran");
    // The approval was not consumed: the requester as approved can still run it once.
    let run = Action::RunApproved {
        execution_id: held.execution_id.clone(),
    };
    let ok = serve(&h.gateway, Request::new(agent(&[]), "", run)).await;
    assert!(matches!(ok, Ok(Answer::Rows(_))));
}

#[tokio::test]
async fn a_dropped_execution_record_ends_as_interrupted() {
    let h = harness(8).await;
    let mut begin = AuditEvent::new(Phase::Begin, "dropped-1", "query");
    begin.connection = Some("db".into());
    let record =
        record::ExecutionRecord::open(h.gateway.clone(), begin, std::time::Instant::now(), None)
            .await
            .unwrap();
    drop(record);
    let (_, end) = audited(&h, "dropped-1").await;
    assert_eq!(end.outcome, Some(Outcome::Interrupted));
}

#[tokio::test]
async fn one_principal_holds_at_most_its_share_of_a_connection() {
    let h = harness(16).await;
    // The pool is 8 and the share one half: four at once on `db`.
    let mut held = Vec::new();
    for _ in 0..4 {
        let request = Request::new(agent(&[]), "db", query("SELECT 1"));
        match admit::admit(&h.gateway, request).await.unwrap() {
            Admission::Ready(a) => held.push(a),
            Admission::Held(_) | Admission::Kept(_) => panic!("not ready"),
        }
    }
    let p = refused(&h, agent(&[]), "db", query("SELECT 1")).await;
    assert_eq!(p.code, Code::TooManyRequests);
    assert_eq!(p.extra["rule"], "principal-pool-share");
    // Another agent still gets through, and so does the first on another connection.
    let mut other = agent(&[]);
    other.principal.subject = "agent-2".into();
    let ok = serve(&h.gateway, Request::new(other, "db", Action::Schema)).await;
    assert!(matches!(ok, Ok(Answer::Schema(_))));
    let ok = serve(
        &h.gateway,
        Request::new(agent(&[]), "host", exec(Some(&["ls"]), None, None)),
    )
    .await;
    assert!(matches!(ok, Ok(Answer::Command(_))));
    // A finished request gives its share back.
    held.pop();
    let ok = serve(&h.gateway, Request::new(agent(&[]), "db", Action::Schema)).await;
    assert!(matches!(ok, Ok(Answer::Schema(_))));
}

#[tokio::test]
async fn a_schema_read_lists_only_tables_the_caller_may_read() {
    let h = harness(8).await;
    let Ok(Answer::Schema(view)) =
        serve(&h.gateway, Request::new(agent(&[]), "db", Action::Schema)).await
    else {
        panic!("a schema read answers with the schema");
    };
    let names: Vec<&str> = view.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, vec!["t"], "`hidden` is denied to this caller");
}
