//! What runs is what was inspected, checked on the real servers.
//!
//! - Differential: for each class of lexical trick (comment forms with every Unicode space,
//!   invisible characters, Unicode-escape identifiers and strings, quoting and case, dollar
//!   quoting, nested and executable comments, backslash escapes under both
//!   `NO_BACKSLASH_ESCAPES` settings) an agent allowed only to read `items` either is refused
//!   or gets exactly what it was allowed: the canary table, the sequence and the secret are
//!   checked in the database, not by status code alone.
//! - Precision: benign statements give the same result whether the server runs the agent's
//!   text or Airlock's canonical rendering, and Airlock admits and runs every one of them.

use airlock::config::ConnectionKind;
use mysql_async::prelude::Queryable;
use serde_json::json;

use crate::common::*;

/// The secret no read in this file may return.
const SECRET: &str = "s3cr3t-4711";

/// Every space and invisible character a trick might use in place of an ASCII space.
const ODD_SPACES: &[char] = &[
    '\u{0085}',
    '\u{00A0}',
    '\u{1680}',
    '\u{2000}',
    '\u{2001}',
    '\u{2002}',
    '\u{2003}',
    '\u{2004}',
    '\u{2005}',
    '\u{2006}',
    '\u{2007}',
    '\u{2008}',
    '\u{2009}',
    '\u{200A}',
    '\u{2028}',
    '\u{2029}',
    '\u{202F}',
    '\u{205F}',
    '\u{3000}',
    '\u{180E}',
    '\u{200B}',
    '\u{200C}',
    '\u{200D}',
    '\u{2060}',
    '\u{FEFF}',
    '\u{00AD}',
    '\u{3164}',
    '\u{000B}',
    '\u{000C}',
    '\u{2800}',
    '\u{FFFC}',
    '\u{0600}',
    '\u{1BCA0}',
];

fn config(kind: &str, url: &str, read_only: bool, statements: &str, tables: &str) -> String {
    format!(
        r#"{DEV_ISSUER}
[[connections]]
name = "db"
kind = "{kind}"
url = "{url}"
read_only = {read_only}

[[rules]]
builtin = "deny-catalog-exposure"
[[rules]]
builtin = "deny-unparsed"
[[rules]]
id = "agents"
action = "allow"
connections = ["db"]
principals = ["group:agents"]
match = {{ statements = {statements}, tables = {tables} }}

[[masking]]
connections = ["db"]
columns = [{{ column = "items.card", strategy = "redact" }}]
"#
    )
}

/// Sends every attack; a 200 must not carry the secret or the masked card in clear.
async fn attack(a: &Airlock, attacks: &[String]) -> Vec<String> {
    let t = a.agent();
    let mut failures = Vec::new();
    for sql in attacks {
        let (s, b) = a.query(&t, "db", json!({ "sql": sql })).await;
        let text = b.to_string();
        if s == 200 && (text.contains(SECRET) || text.contains("4111111111111111")) {
            failures.push(format!("leaked: {sql:?}: {b}"));
        } else if s != 200 && !(400..500).contains(&s) {
            failures.push(format!("answered {s}: {sql:?}: {b}"));
        }
    }
    failures
}

/// The lexical tricks both dialects share, around a read of `items`.
fn shared_attacks(secret_read: &str, write: &str) -> Vec<String> {
    let mut attacks = Vec::new();
    for sp in ODD_SPACES {
        attacks.push(format!(
            "SELECT id FROM items --{sp} UNION SELECT {secret_read}\n"
        ));
        attacks.push(format!(
            "SELECT id FROM items WHERE id = 1 --{sp}\n UNION SELECT {secret_read}"
        ));
        attacks.push(format!("SELECT id FROM items /*{sp}*/ WHERE id = 1"));
        attacks.push(format!("SELECT id{sp}FROM items"));
        attacks.push(format!("SELECT card{sp}AS c FROM items"));
        attacks.push(format!(
            "SELECT id FROM items WHERE 1 = 1 --{sp}\n; {write}"
        ));
    }
    attacks.extend([
        format!("SELECT id FROM items /* a /* b */ UNION SELECT {secret_read} */"),
        format!("SELECT id FROM items WHERE name = 'x' /* ' */ UNION SELECT {secret_read} --'"),
        format!("SELECT 'a\\' UNION SELECT {secret_read} -- '"),
        format!("SELECT 'a\\\\' UNION SELECT {secret_read} -- '"),
        format!("SELECT \"a\\\" UNION SELECT {secret_read} -- \""),
        format!("SELECT id FROM items WHERE name = 'it''s' UNION SELECT {secret_read}"),
        "SELECT CARD FROM ITEMS".to_string(),
        "SELECT lower(card) AS c FROM items".to_string(),
        write.to_string(),
    ]);
    attacks
}

#[tokio::test]
async fn postgres_differentials_are_refused_or_run_as_inspected() {
    let db = PgDb::create().await;
    let admin = db.admin().await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE items (id int, name text, card text);
             INSERT INTO items VALUES (1, 'widget', '4111111111111111'), (2, 'gadget', NULL);
             CREATE TABLE secrets (s text); INSERT INTO secrets VALUES ('{SECRET}');
             CREATE TABLE canary (x int); INSERT INTO canary VALUES (1), (2), (3);
             CREATE SEQUENCE seq;
             ALTER TABLE items OWNER TO {r}; ALTER TABLE secrets OWNER TO {r};
             ALTER TABLE canary OWNER TO {r}; ALTER SEQUENCE seq OWNER TO {r};",
            r = db.role
        ))
        .await
        .unwrap();
    let a = Airlock::start(&config(
        "postgres",
        &db.url(),
        false,
        r#"["select"]"#,
        r#"["items"]"#,
    ))
    .await;
    let mut attacks = shared_attacks("s FROM secrets", "DELETE FROM canary");
    attacks.extend(
        [
            // Unicode-escape identifiers: setval, pg_terminate_backend, secrets, card.
            r#"SELECT U&"\0073etval"('seq', 99) FROM items"#,
            r#"SELECT u&"\0073etval"('seq', 99)"#,
            r#"SELECT U&"\+000073etval"('seq', 99)"#,
            r#"SELECT U&"!0073etval" UESCAPE '!' ('seq', 99)"#,
            r#"SELECT U&"\0070g_terminate_backend"(pg_backend_pid())"#,
            r#"SELECT * FROM U&"\0073ecrets""#,
            r#"SELECT U&"\0063ard" FROM items"#,
            r#"SELECT id FROM items WHERE name = U&'\0077idget'"#,
            // Dollar quoting and escape strings hide quotes from a lexer that does not know them.
            "SELECT $$ ' $$ AS a, s FROM secrets -- '",
            "SELECT $t$ $$ ' $t$, s FROM secrets",
            "SELECT E'\\'' AS a, s FROM secrets --'",
            "SELECT 'a\\' AS a, s FROM secrets --'",
            // Quoting and case.
            "SELECT s FROM \"secrets\"",
            "SELECT s FROM public.\"secrets\"",
            "SELECT \"card\" FROM items",
            "SELECT nextval('seq') FROM items",
            "SELECT setval('seq', 42)",
            "SELECT * FROM items FOR UPDATE",
            "SELECT id FROM items, LATERAL (SELECT s FROM secrets) x",
            "SELECT id FROM items WHERE id = (SELECT count(*) FROM secrets WHERE s LIKE 's%')",
            // Unicode in identifiers that PostgreSQL reads as part of a name.
            "SELECT id FROM items\u{00A0}WHERE id = 1",
        ]
        .map(String::from),
    );
    let failures = attack(&a, &attacks).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let canary: i64 = admin
        .query_one("SELECT count(*) FROM canary", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(canary, 3, "the canary must survive");
    let called: bool = admin
        .query_one("SELECT is_called FROM seq", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!called, "the sequence must not have moved");
    // The benign read still runs, and the comment it carried is not what ran.
    let t = a.agent();
    let (s, b) = a
        .query(
            &t,
            "db",
            json!({ "sql": "SELECT id /* the id */ FROM items -- all\nORDER BY id" }),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["rows"], json!([[1], [2]]));
    let audit = a.audit_of(b["execution_id"].as_str().unwrap()).await;
    let begin = &audit[0];
    assert_eq!(
        begin["statement"], "SELECT id FROM items ORDER BY id",
        "{begin}"
    );
    assert!(
        begin["submitted"]
            .as_str()
            .unwrap()
            .contains("/* the id */")
    );
    a.stop().await;
}

#[tokio::test]
async fn mariadb_differentials_are_refused_or_run_as_inspected() {
    let db = MyDb::create().await;
    let mut admin = db.admin().await;
    admin
        .query_drop(format!(
            "CREATE TABLE items (id INT, name TEXT, card TEXT);
             INSERT INTO items VALUES (1, 'widget', '4111111111111111'), (2, 'gadget', NULL);
             CREATE TABLE secrets (s TEXT); INSERT INTO secrets VALUES ('{SECRET}');
             CREATE TABLE canary (x INT); INSERT INTO canary VALUES (1), (2), (3);"
        ))
        .await
        .unwrap();
    let mut attacks = shared_attacks("s FROM secrets", "UPDATE canary SET x = 0");
    attacks.extend(
        [
            "SELECT id FROM items /*! UNION SELECT s FROM secrets */",
            "SELECT id FROM items /*!50000 UNION SELECT s FROM secrets */",
            "SELECT id FROM items /*M!100000 UNION SELECT s FROM secrets */",
            "SELECT id FROM items # \u{00A0}\n UNION SELECT s FROM secrets",
            "SELECT id FROM items --\tx\n UNION SELECT s FROM secrets",
            "SELECT id FROM items WHERE name = 'a\\' UNION SELECT s FROM secrets -- '",
            "SELECT id FROM items WHERE name = \"a\\\" UNION SELECT s FROM secrets -- \"",
            "SELECT id FROM items WHERE name = 'a\\\\' UNION SELECT s FROM secrets -- '",
            "SELECT `s` FROM `secrets`",
            "SELECT s FROM SECRETS",
            "SELECT `card` FROM items",
            "SELECT id FROM items LOCK IN SHARE MODE",
            "SELECT id FROM items WHERE name = _utf8mb4'x' UNION SELECT s FROM secrets",
            "SELECT id FROM items WHERE name = N'x' UNION SELECT s FROM secrets",
        ]
        .map(String::from),
    );
    let run_all = async |admin: &mut mysql_async::Conn| {
        let a = Airlock::start(&config(
            "mysql",
            &db.url(),
            false,
            r#"["select"]"#,
            r#"["items"]"#,
        ))
        .await;
        let failures = attack(&a, &attacks).await;
        // Airlock's sessions run with backslash escapes on, whatever the server's default.
        let t = a.agent();
        let (s, b) = a
            .query(
                &t,
                "db",
                json!({ "sql": "SELECT id FROM items WHERE name = 'wid\\\\get' OR name = 'widget'" }),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["rows"], json!([[1]]));
        a.stop().await;
        let canary: Option<i64> = admin
            .query_first("SELECT SUM(x) FROM canary")
            .await
            .unwrap();
        assert_eq!(canary, Some(6), "the canary must survive");
        failures
    };
    let failures = run_all(&mut admin).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Again with the server's default sql_mode carrying NO_BACKSLASH_ESCAPES.
    let mut root = my_admin().await;
    let before: Option<String> = root.query_first("SELECT @@GLOBAL.sql_mode").await.unwrap();
    let before = before.unwrap_or_default();
    root.query_drop(format!(
        "SET GLOBAL sql_mode = '{}'",
        if before.is_empty() {
            "NO_BACKSLASH_ESCAPES".to_string()
        } else {
            format!("{before},NO_BACKSLASH_ESCAPES")
        }
    ))
    .await
    .unwrap();
    let failures = run_all(&mut admin).await;
    root.query_drop(format!("SET GLOBAL sql_mode = '{before}'"))
        .await
        .unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn canonical(kind: ConnectionKind, sql: &str) -> String {
    let inspected = airlock::inspect::sql::inspect(kind, sql).unwrap();
    inspected
        .statement
        .unwrap_or_else(|| panic!("unparsed: {sql}: {:?}", inspected.facts))
}

/// PostgreSQL rows as text, as the server renders them.
async fn pg_rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    client.batch_execute("BEGIN").await.unwrap();
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    client.batch_execute("ROLLBACK").await.unwrap();
    messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

const PG_BENIGN: &[&str] = &[
    "SELECT id, name FROM items ORDER BY id",
    "select ID, Name from ITEMS order by 1",
    "SELECT id FROM items -- trailing comment",
    "/* leading */ SELECT count(*) FROM items",
    "WITH c AS (SELECT id, price FROM items) SELECT sum(price) FROM c",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT sum(n) FROM r",
    "SELECT id, row_number() OVER (ORDER BY price DESC), sum(price) OVER (PARTITION BY name) FROM items ORDER BY id",
    "SELECT doc ->> 'color', doc -> 'size', doc #>> '{a,b}' FROM items ORDER BY id",
    "SELECT doc @> '{\"color\": \"red\"}' FROM items ORDER BY id",
    "SELECT name FROM items WHERE name ILIKE 'W%' ORDER BY 1",
    "SELECT name FROM items WHERE name NOT ILIKE '%x%' AND name LIKE '_i%' ORDER BY 1",
    "SELECT tags[1], array_length(tags, 1), ARRAY[1, 2, 3], 2 = ANY(ARRAY[1, 2]) FROM items ORDER BY id",
    "SELECT 'it''s', E'a\\tb\\\\', $$dollar ' quoted$$, $t$x$t$, 'back\\slash', 'ünï''cödé'",
    "SELECT id::text || '-' || name, CAST(price AS int), price::numeric(10,1) FROM items ORDER BY id",
    "SELECT extract(year FROM date '2024-05-06'), date_trunc('month', timestamp '2024-05-06 10:00')",
    "SELECT substring(name, 1, 2), substring(name FROM 2 FOR 2), trim(both ' ' FROM '  x '), position('b' IN 'abc') FROM items ORDER BY id",
    "SELECT upper(name), coalesce(NULL, 1), greatest(1, 2), nullif(1, 1), length(name) FROM items ORDER BY id",
    "SELECT count(*) FILTER (WHERE price > 1), string_agg(name, ',' ORDER BY name) FROM items",
    "SELECT i.name, o.qty FROM items i JOIN orders o ON o.item_id = i.id WHERE o.qty BETWEEN 1 AND 10 ORDER BY o.id LIMIT 2 OFFSET 1",
    "SELECT CASE WHEN price > 2 THEN 'hi' ELSE 'lo' END FROM items ORDER BY id",
    "SELECT \"Mixed Case\" FROM \"Weird Table\"",
    "SELECT x FROM (VALUES (1), (2)) AS v(x) ORDER BY x",
    "SELECT id FROM items WHERE name IN ('widget', 'b') OR name IS NULL OR name ~ '^g' ORDER BY id",
    "SELECT interval '1 day' + date '2024-01-01', 7 / 2, 7 % 3, -id FROM items ORDER BY id",
    "SELECT id FROM items WHERE price > -1 AND NOT (price < 0) ORDER BY id DESC NULLS LAST",
    "SELECT name, count(*) FROM items GROUP BY name HAVING count(*) >= 1 ORDER BY name",
    "SELECT id FROM items UNION SELECT item_id FROM orders ORDER BY 1",
    "SELECT EXISTS (SELECT 1 FROM orders WHERE orders.item_id = items.id) FROM items ORDER BY id",
    "SELECT DISTINCT ON (name) name, id FROM items ORDER BY name, id",
    "SELECT jsonb_build_object('a', 1, 'b', ARRAY[1, 2]), to_char(12.5, '999D9')",
    "INSERT INTO scratch (id, v) VALUES (1, 'x'), (2, 'y''z') RETURNING id, v",
    "UPDATE items SET price = price + 1 WHERE id = 1 RETURNING id, price",
    "DELETE FROM orders WHERE qty > 5 RETURNING id",
    "INSERT INTO scratch (id, v) VALUES (1, 'a') ON CONFLICT (id) DO UPDATE SET v = excluded.v RETURNING v",
];

#[tokio::test]
async fn postgres_benign_statements_run_the_same_after_canonical_rendering() {
    let db = PgDb::create().await;
    let admin = db.admin().await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric, tags text[], doc jsonb);
             INSERT INTO items VALUES
               (1, 'widget', 2.5, ARRAY['a','b'], '{{\"color\": \"red\", \"size\": 3, \"a\": {{\"b\": \"deep\"}}}}'),
               (2, 'gadget', 1.25, ARRAY['c'], '{{\"color\": \"blue\"}}');
             CREATE TABLE orders (id int PRIMARY KEY, item_id int, qty int);
             INSERT INTO orders VALUES (1, 1, 2), (2, 2, 7), (3, 1, 4), (4, 2, 1);
             CREATE TABLE scratch (id int PRIMARY KEY, v text);
             CREATE TABLE \"Weird Table\" (\"Mixed Case\" int); INSERT INTO \"Weird Table\" VALUES (5);
             ALTER TABLE items OWNER TO {r}; ALTER TABLE orders OWNER TO {r};
             ALTER TABLE scratch OWNER TO {r}; ALTER TABLE \"Weird Table\" OWNER TO {r};",
            r = db.role
        ))
        .await
        .unwrap();
    for sql in PG_BENIGN {
        let rendered = canonical(ConnectionKind::Postgres, sql);
        assert_eq!(
            pg_rows(&admin, sql).await,
            pg_rows(&admin, &rendered).await,
            "{sql}\n  ran as: {rendered}"
        );
    }
    let a = Airlock::start(&config(
        "postgres",
        &db.url(),
        false,
        r#"["select", "insert", "update", "delete"]"#,
        r#"["*"]"#,
    ))
    .await;
    let t = a.agent();
    for sql in PG_BENIGN {
        let (s, b) = a.query(&t, "db", json!({ "sql": sql })).await;
        assert_eq!(s, 200, "{sql}: {b}");
    }
    let (s, b) = a
        .query(
            &t,
            "db",
            json!({ "sql": "SELECT name FROM items WHERE id = $1 AND name <> $2", "params": [1, "x"] }),
        )
        .await;
    assert_eq!((s, &b["rows"]), (200, &json!([["widget"]])), "{b}");
    a.stop().await;
}

const MY_BENIGN: &[&str] = &[
    "SELECT `id`, `name` FROM `items` ORDER BY `id`",
    "select ID, Name from items order by 1",
    "SELECT id FROM items ORDER BY id LIMIT 1, 2",
    "SELECT id FROM items ORDER BY id LIMIT 2 OFFSET 1",
    "SELECT id FROM items -- trailing comment",
    "SELECT id FROM items # hash comment",
    "/* leading */ SELECT COUNT(*) FROM items",
    "WITH c AS (SELECT id, price FROM items) SELECT SUM(price) FROM c",
    "SELECT id, ROW_NUMBER() OVER (ORDER BY price DESC) FROM items ORDER BY id",
    "SELECT JSON_EXTRACT(doc, '$.color'), JSON_UNQUOTE(JSON_EXTRACT(doc, '$.color')) FROM items ORDER BY id",
    "SELECT 'it''s', 'it\\'s', \"double\", 'back\\\\slash', 'tab\\there', 'a\\_b', 'ünï''cödé'",
    "SELECT 'a_b' LIKE 'a\\_b', 'axb' LIKE 'a\\_b', 'a%' LIKE 'a\\%'",
    "SELECT name FROM items WHERE name LIKE 'w%' ORDER BY 1",
    "SELECT CONCAT(name, '-', id), CAST(price AS SIGNED), IF(price > 2, 'hi', 'lo'), IFNULL(NULL, 1) FROM items ORDER BY id",
    "SELECT DATE_FORMAT('2024-05-06', '%Y'), DATE_ADD('2024-01-01', INTERVAL 1 DAY)",
    "SELECT i.name, o.qty FROM items i JOIN `order` o ON o.item_id = i.id ORDER BY o.id",
    "SELECT x'41', 0x42, 7 DIV 2, 7 % 3, MOD(7, 3)",
    "SELECT name, COUNT(*) FROM items GROUP BY name HAVING COUNT(*) >= 1 ORDER BY name",
    "SELECT id FROM items UNION SELECT item_id FROM `order` ORDER BY 1",
    "SELECT CASE WHEN price > 2 THEN 'hi' ELSE 'lo' END FROM items ORDER BY id",
    "INSERT INTO scratch (id, v) VALUES (1, 'x'), (2, 'y\\'z')",
    "UPDATE items SET price = price + 1 WHERE id = 1",
    "DELETE FROM `order` WHERE qty > 5",
];

#[tokio::test]
async fn mariadb_benign_statements_run_the_same_after_canonical_rendering() {
    let db = MyDb::create().await;
    let mut admin = db.admin().await;
    admin
        .query_drop(
            "CREATE TABLE items (id INT PRIMARY KEY, name TEXT, price DECIMAL(10,2), doc JSON);
             INSERT INTO items VALUES (1, 'widget', 2.5, '{\"color\": \"red\"}'), (2, 'gadget', 1.25, '{\"color\": \"blue\"}');
             CREATE TABLE `order` (id INT PRIMARY KEY, item_id INT, qty INT);
             INSERT INTO `order` VALUES (1, 1, 2), (2, 2, 7), (3, 1, 4);
             CREATE TABLE scratch (id INT PRIMARY KEY, v TEXT);",
        )
        .await
        .unwrap();
    for sql in MY_BENIGN {
        let rendered = canonical(ConnectionKind::Mysql, sql);
        let mut results = Vec::new();
        for text in [*sql, rendered.as_str()] {
            let mut tx = admin
                .start_transaction(mysql_async::TxOpts::default())
                .await
                .unwrap();
            let rows: Vec<mysql_async::Row> = tx
                .query(text)
                .await
                .unwrap_or_else(|e| panic!("{text}: {e}"));
            let affected = tx.affected_rows();
            tx.rollback().await.unwrap();
            let values: Vec<Vec<mysql_async::Value>> =
                rows.into_iter().map(mysql_async::Row::unwrap).collect();
            results.push((values, affected));
        }
        assert_eq!(results[0], results[1], "{sql}\n  ran as: {rendered}");
    }
    let a = Airlock::start(&config(
        "mysql",
        &db.url(),
        false,
        r#"["select", "insert", "update", "delete"]"#,
        r#"["*"]"#,
    ))
    .await;
    let t = a.agent();
    for sql in MY_BENIGN {
        let (s, b) = a.query(&t, "db", json!({ "sql": sql })).await;
        assert_eq!(s, 200, "{sql}: {b}");
    }
    a.stop().await;
}
