//! `GET /v1/connections/{name}/schema` on PostgreSQL, MariaDB and SQLite: primary keys in key
//! order, foreign keys (composite ones too), table and column comments, and which columns
//! are masked for the caller. A table the caller may not read is not listed, nor named by a
//! foreign key. Each test creates its own database (or file) and tables.

use airlock::config::PrincipalKind;
use mysql_async::prelude::Queryable;
use serde_json::{Value, json};

use crate::common::*;

/// The same tables on every backend (SQL dialect aside):
/// - `customers` (PK id; `email` commented, masked by a `customers.email` rule), commented;
/// - `orders` (FK `customer_id` → customers(id); `note` masked by a `*.note` rule);
/// - `order_lines` (PK (order_id, line_no), declared in the other order than the columns);
/// - `shipments` (composite FK (order_id, line_no) → order_lines);
/// - `hidden` (denied to everyone) and `links` (FK → hidden, which must not show);
/// - `customer_names`, a view.
fn config(kind: &str, target: &str) -> String {
    format!(
        r#"{DEV_ISSUER}
[[connections]]
name = "db"
kind = "{kind}"
{target}

[[rules]]
id = "hide"
action = "deny"
connections = ["db"]
principals = ["*"]
match = {{ tables = ["hidden"] }}

[[rules]]
id = "read"
action = "allow"
connections = ["db"]
principals = ["group:agents", "group:dba"]
match = {{ statements = ["select"] }}

[[masking]]
connections = ["db"]
detectors = ["email"]
columns = [
  {{ column = "customers.email", strategy = "redact" }},
  {{ column = "*.note", strategy = "partial" }},
]
exempt_groups = ["dba"]
"#
    )
}

fn table<'a>(schema: &'a Value, name: &str) -> &'a Value {
    schema["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no table {name} in {schema}"))
}

fn column<'a>(table: &'a Value, name: &str) -> &'a Value {
    table["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no column {name} in {table}"))
}

/// What every backend must answer. `schema`: the expected `schema` of every table (and of
/// every referenced table); `comments`: whether the backend keeps comments (SQLite does
/// not); `named`: whether foreign keys have names (SQLite's do not).
async fn check(a: &Airlock, schema: Value, comments: bool, named: bool) {
    let (status, body) = a.get(&a.agent(), "/v1/connections/db/schema").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["connection"], "db");
    assert_eq!(body["detectors"], json!(["email"]), "{body}");
    let names: Vec<&str> = body["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"hidden"), "{names:?}");

    let customers = table(&body, "customers");
    assert_eq!(customers["schema"], schema);
    assert_eq!(customers["kind"], "table");
    assert_eq!(customers["primary_key"], json!(["id"]));
    assert_eq!(customers["foreign_keys"], json!([]));
    let email = column(customers, "email");
    assert_eq!(email["masked"], true, "{email}");
    assert_eq!(
        email["masking"],
        json!({"column": "customers.email", "strategy": "redact"})
    );
    let name = column(customers, "name");
    assert_eq!(name["masked"], false, "{name}");
    assert_eq!(name["masking"], Value::Null);
    assert_eq!(name["comment"], Value::Null);
    if comments {
        assert_eq!(customers["comment"], "People who order");
        assert_eq!(email["comment"], "Contact address");
    } else {
        assert_eq!(customers["comment"], Value::Null);
        assert_eq!(email["comment"], Value::Null);
    }

    let orders = table(&body, "orders");
    assert_eq!(orders["primary_key"], json!(["id"]));
    let fk_name = |n: &str| if named { json!(n) } else { Value::Null };
    assert_eq!(
        orders["foreign_keys"],
        json!([{
            "name": fk_name("orders_customer_fk"),
            "columns": ["customer_id"],
            "referenced_schema": schema,
            "referenced_table": "customers",
            "referenced_columns": ["id"],
        }])
    );
    let note = column(orders, "note");
    assert_eq!(
        (&note["masked"], &note["masking"]),
        (
            &json!(true),
            &json!({"column": "*.note", "strategy": "partial"})
        )
    );
    assert_eq!(orders["comment"], Value::Null);

    // Key order, not column order.
    let lines = table(&body, "order_lines");
    assert_eq!(lines["primary_key"], json!(["order_id", "line_no"]));
    let fk = &lines["foreign_keys"][0];
    assert_eq!(
        (
            &fk["columns"],
            &fk["referenced_table"],
            &fk["referenced_columns"]
        ),
        (&json!(["order_id"]), &json!("orders"), &json!(["id"])),
        "{lines}"
    );
    let shipments = table(&body, "shipments");
    assert_eq!(
        shipments["foreign_keys"],
        json!([{
            "name": fk_name("shipments_line_fk"),
            "columns": ["order_id", "line_no"],
            "referenced_schema": schema,
            "referenced_table": "order_lines",
            "referenced_columns": ["order_id", "line_no"],
        }])
    );

    // A key to a table the caller may not read would name it: left out.
    let links = table(&body, "links");
    assert_eq!(links["primary_key"], json!(["id"]));
    assert_eq!(links["foreign_keys"], json!([]), "{links}");
    assert!(
        body["tables"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| t["foreign_keys"].as_array().unwrap())
            .all(|fk| fk["referenced_table"] != "hidden"),
        "{body}"
    );

    let view = table(&body, "customer_names");
    assert_eq!(view["kind"], "view");
    assert_eq!(view["primary_key"], json!([]));
    assert_eq!(view["comment"], Value::Null, "{view}");

    // A human DBA is exempt: nothing is masked for it, no detector runs.
    let dba = a.token("alice", &["dba"], PrincipalKind::Human);
    let (status, clear) = a.get(&dba, "/v1/connections/db/schema").await;
    assert_eq!(status, 200, "{clear}");
    assert_eq!(clear["detectors"], json!([]));
    let email = column(table(&clear, "customers"), "email");
    assert_eq!(
        (&email["masked"], &email["masking"]),
        (&json!(false), &Value::Null)
    );
    assert_eq!(
        table(&clear, "orders")["foreign_keys"],
        orders["foreign_keys"],
        "keys do not depend on masking"
    );
    // An agent claiming the exempt group is still an agent.
    let fake = a.token("agent-x", &["agents", "dba"], PrincipalKind::Agent);
    let (_, masked) = a.get(&fake, "/v1/connections/db/schema").await;
    assert_eq!(column(table(&masked, "customers"), "email")["masked"], true);
}

#[tokio::test]
async fn postgres_schema_has_keys_comments_and_masking() {
    let db = PgDb::create().await;
    db.owner()
        .await
        .batch_execute(
            "CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, name text);
             COMMENT ON TABLE customers IS 'People who order';
             COMMENT ON COLUMN customers.email IS 'Contact address';
             CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL,
               note text,
               CONSTRAINT orders_customer_fk FOREIGN KEY (customer_id) REFERENCES customers (id));
             CREATE TABLE order_lines (line_no int, order_id bigint REFERENCES orders,
               PRIMARY KEY (order_id, line_no));
             CREATE TABLE shipments (id bigint PRIMARY KEY, order_id bigint, line_no int,
               CONSTRAINT shipments_line_fk FOREIGN KEY (order_id, line_no)
                 REFERENCES order_lines (order_id, line_no));
             CREATE TABLE hidden (id bigint PRIMARY KEY);
             CREATE TABLE links (id bigint PRIMARY KEY, hidden_id bigint REFERENCES hidden);
             CREATE VIEW customer_names AS SELECT id, name FROM customers;",
        )
        .await
        .unwrap();
    let a = Airlock::start(&config("postgres", &format!("url = \"{}\"", db.url()))).await;
    check(&a, json!("public"), true, true).await;
    a.stop().await;
}

#[tokio::test]
async fn mariadb_schema_has_keys_comments_and_masking() {
    let db = MyDb::create().await;
    db.admin()
        .await
        .query_drop(
            "CREATE TABLE customers (id BIGINT PRIMARY KEY,
               email VARCHAR(100) NOT NULL COMMENT 'Contact address', name TEXT)
               COMMENT = 'People who order';
             CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL, note TEXT,
               CONSTRAINT orders_customer_fk FOREIGN KEY (customer_id) REFERENCES customers (id));
             CREATE TABLE order_lines (line_no INT, order_id BIGINT,
               PRIMARY KEY (order_id, line_no),
               FOREIGN KEY (order_id) REFERENCES orders (id));
             CREATE TABLE shipments (id BIGINT PRIMARY KEY, order_id BIGINT, line_no INT,
               CONSTRAINT shipments_line_fk FOREIGN KEY (order_id, line_no)
                 REFERENCES order_lines (order_id, line_no));
             CREATE TABLE hidden (id BIGINT PRIMARY KEY);
             CREATE TABLE links (id BIGINT PRIMARY KEY, hidden_id BIGINT,
               FOREIGN KEY (hidden_id) REFERENCES hidden (id));
             CREATE VIEW customer_names AS SELECT id, name FROM customers;",
        )
        .await
        .unwrap();
    let a = Airlock::start(&config("mysql", &format!("url = \"{}\"", db.url()))).await;
    check(&a, json!(db.name), true, true).await;
    a.stop().await;
}

#[tokio::test]
async fn sqlite_schema_has_keys_and_masking() {
    let data = tempfile::tempdir().unwrap();
    let file = rusqlite::Connection::open(data.path().join("shop.db")).unwrap();
    // Parents named in another case than declared, and a key to the parent's primary key
    // without its columns: SQLite resolves both, so must the listing.
    file.execute_batch(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT NOT NULL, name TEXT);
         CREATE TABLE orders (id INTEGER PRIMARY KEY,
           customer_id INTEGER NOT NULL REFERENCES Customers, note TEXT);
         CREATE TABLE order_lines (line_no INTEGER, order_id INTEGER REFERENCES orders (ID),
           PRIMARY KEY (order_id, line_no));
         CREATE TABLE shipments (id INTEGER PRIMARY KEY, order_id INTEGER, line_no INTEGER,
           FOREIGN KEY (order_id, line_no) REFERENCES order_lines (order_id, line_no));
         CREATE TABLE hidden (id INTEGER PRIMARY KEY);
         CREATE TABLE links (id INTEGER PRIMARY KEY, hidden_id INTEGER REFERENCES hidden);
         CREATE VIEW customer_names AS SELECT id, name FROM customers;",
    )
    .unwrap();
    drop(file);
    let a = Airlock::start_in(&config("sqlite", "path = \"shop.db\""), data).await;
    check(&a, Value::Null, false, false).await;
    a.stop().await;
}
