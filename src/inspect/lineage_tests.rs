//! Unit tests of `lineage.rs`.

use super::*;
use crate::inspect::sql::RECURSION_LIMIT;
use sqlparser::tokenizer::Tokenizer;

fn schema() -> SchemaInfo {
    let mut tables = HashMap::new();
    for (name, columns) in [
        ("customers", &["id", "email", "name", "ssn", "card"][..]),
        ("orders", &["id", "customer_id", "total", "note"][..]),
        ("users", &["id", "email", "name"][..]),
        ("staging", &["email", "ssn"][..]),
        ("docs", &["id", "data"][..]),
    ] {
        let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
        tables.insert(name.to_string(), columns.clone());
        tables.insert(format!("public.{name}"), columns);
    }
    SchemaInfo { tables }
}

fn col(spec: &str) -> SourceColumn {
    let (table, column) = spec.split_once('.').unwrap();
    SourceColumn {
        table: table.to_string(),
        column: column.to_string(),
    }
}

fn k(specs: &[&str]) -> OutputLineage {
    OutputLineage::Known(specs.iter().map(|s| col(s)).collect())
}

fn set(specs: &[&str]) -> BTreeSet<SourceColumn> {
    specs.iter().map(|s| col(s)).collect()
}

fn run(kind: ConnectionKind, sql: &str, n: usize) -> Lineage {
    lineage(kind, sql, &schema(), n)
}
fn pg(sql: &str, n: usize) -> Lineage {
    run(ConnectionKind::Postgres, sql, n)
}
fn my(sql: &str, n: usize) -> Lineage {
    run(ConnectionKind::Mysql, sql, n)
}
fn lite(sql: &str, n: usize) -> Lineage {
    run(ConnectionKind::Sqlite, sql, n)
}

/// Asserts the outputs, and that everything was followed.
fn outputs(l: &Lineage, expected: &[OutputLineage], sql: &str) {
    assert_eq!(l.outputs, expected, "{sql}");
    assert!(!l.incomplete, "{sql}");
}

#[test]
fn aliases_and_expressions() {
    for sql in [
        "SELECT email AS e, c.name n, lower(email), substr(c.email, 1, 3) || 'x' FROM customers c",
        "SELECT email e, customers.name, LOWER(EMAIL), SUBSTR(email, 1, 3) || 'x' FROM public.customers",
    ] {
        outputs(
            &pg(sql, 4),
            &[
                k(&["customers.email"]),
                k(&["customers.name"]),
                k(&["customers.email"]),
                k(&["customers.email"]),
            ],
            sql,
        );
    }
    let sql = "SELECT CASE WHEN ssn LIKE '1%' THEN 'a' ELSE name END, \
               CAST(card AS text), id + 1, data->>'x', coalesce(email, name), 42, now() \
               FROM customers, docs";
    outputs(
        &pg(sql, 7),
        &[
            k(&["customers.name", "customers.ssn"]),
            k(&["customers.card"]),
            // `id` is in both tables: either may be meant.
            k(&["customers.id", "docs.id"]),
            k(&["docs.data"]),
            k(&["customers.email", "customers.name"]),
            k(&[]),
            k(&[]),
        ],
        sql,
    );
}

#[test]
fn aggregates_and_windows() {
    let sql = "SELECT count(*), count(ssn), string_agg(email, ',' ORDER BY ssn), max(card), \
               count(*) FILTER (WHERE name = 'x'), \
               row_number() OVER (PARTITION BY ssn ORDER BY email), \
               sum(id) OVER w, \
               percentile_cont(0.5) WITHIN GROUP (ORDER BY id) \
               FROM customers WINDOW w AS (ORDER BY card)";
    let l = pg(sql, 8);
    outputs(
        &l,
        &[
            k(&[]),
            k(&["customers.ssn"]),
            k(&["customers.email"]),
            k(&["customers.card"]),
            k(&[]),
            k(&[]),
            k(&["customers.id"]),
            k(&["customers.id"]),
        ],
        sql,
    );
    assert_eq!(
        l.predicate_columns,
        set(&[
            "customers.card",
            "customers.email",
            "customers.name",
            "customers.ssn"
        ])
    );
}

#[test]
fn ctes_and_derived_tables() {
    let sql = "WITH a AS (SELECT email AS e, id FROM customers), \
                    b AS (SELECT upper(e) AS u, id FROM a) \
               SELECT u, b.id FROM b";
    outputs(
        &pg(sql, 2),
        &[k(&["customers.email"]), k(&["customers.id"])],
        sql,
    );
    let sql = "SELECT x, s2.z FROM (SELECT y AS x, z FROM \
                 (SELECT ssn AS y, 'lit' AS z FROM customers) s1) s2";
    outputs(&pg(sql, 2), &[k(&["customers.ssn"]), k(&[])], sql);
    // Alias column lists rename by position.
    let sql = "SELECT b, a FROM (SELECT ssn, email FROM customers) AS s(a, b)";
    outputs(
        &pg(sql, 2),
        &[k(&["customers.email"]), k(&["customers.ssn"])],
        sql,
    );
    // sqlparser 0.64 does not parse PostgreSQL's `TABLE name`: fail closed.
    assert_eq!(
        pg("TABLE orders", 4).outputs,
        vec![OutputLineage::Unknown; 4]
    );
    let sql = "WITH c(x) AS (SELECT card FROM customers) SELECT * FROM c";
    outputs(&pg(sql, 1), &[k(&["customers.card"])], sql);
    // A CTE body does not see itself without RECURSIVE: `customers` is the table.
    let sql = "WITH customers AS (SELECT id FROM customers) SELECT * FROM customers";
    outputs(&pg(sql, 1), &[k(&["customers.id"])], sql);
    // An unaliased expression's name is not known: a reference to it takes every
    // unnamed column.
    let sql = "SELECT lower FROM (SELECT lower(email), id FROM customers) s";
    outputs(&pg(sql, 1), &[k(&["customers.email"])], sql);
}

#[test]
fn recursive_cte() {
    let sql = "WITH RECURSIVE r(a, b) AS ( \
                 SELECT id, email FROM customers \
                 UNION ALL SELECT b, ssn FROM r JOIN customers ON customers.id = r.a) \
               SELECT a, b FROM r";
    let l = pg(sql, 2);
    // `a` is fed from `b` in the recursive step: the fixpoint carries email into it.
    outputs(
        &l,
        &[
            k(&["customers.email", "customers.id", "customers.ssn"]),
            k(&["customers.email", "customers.ssn"]),
        ],
        sql,
    );
    assert!(l.predicate_columns.contains(&col("customers.id")));
    // `SELECT *` from the CTE in its own recursive branch takes the anchor's shape.
    let sql = "WITH RECURSIVE r AS (SELECT id, email FROM customers \
               UNION ALL SELECT * FROM r WHERE id < 0) SELECT * FROM r";
    outputs(
        &pg(sql, 2),
        &[k(&["customers.id"]), k(&["customers.email"])],
        sql,
    );
    let sql = "WITH RECURSIVE n AS (SELECT 1 AS x UNION ALL SELECT x + 1 FROM n WHERE x < 5) \
               SELECT x FROM n";
    for l in [pg(sql, 1), my(sql, 1), lite(sql, 1)] {
        outputs(&l, &[k(&[])], sql);
    }
}

#[test]
fn functions_that_read_other_data_are_unknown() {
    let sql = "SELECT my_lookup(id), public.lower(email), \"LOWER\"(email), \
               query_to_xml('select ssn from customers', true, false, ''), \
               pg_catalog.lower(email), ROW(id, email) FROM customers";
    let l = pg(sql, 6);
    assert_eq!(
        l.outputs,
        vec![
            OutputLineage::Unknown,
            OutputLineage::Unknown,
            OutputLineage::Unknown,
            OutputLineage::Unknown,
            k(&["customers.email"]),
            k(&["customers.email", "customers.id"]),
        ]
    );
    assert!(l.incomplete);
    let l = pg("SELECT * FROM my_rows(1) r(a, b)", 2);
    assert_eq!(l.outputs, vec![OutputLineage::Unknown; 2]);
    let l = my(
        "SELECT LOAD_FILE('/etc/passwd'), UPPER(name) FROM customers",
        2,
    );
    assert_eq!(
        l.outputs,
        vec![OutputLineage::Unknown, k(&["customers.name"])]
    );
    // Attribute notation: `c.f` may be a function of the whole row.
    let l = pg("SELECT c.leak, c.id FROM customers c", 2);
    assert_eq!(
        l.outputs,
        vec![OutputLineage::Unknown, k(&["customers.id"])]
    );
    assert!(l.incomplete);
    let l = pg("SELECT current_setting('my.var')", 1);
    assert_eq!(l.outputs, vec![OutputLineage::Unknown]);
    let l = pg("SELECT id FROM customers WHERE my_check(ssn)", 1);
    assert_eq!(l.outputs, vec![k(&["customers.id"])]);
    assert_eq!(l.predicate_columns, set(&["*.*", "customers.ssn"]));
}

#[test]
fn stars() {
    let sql = "SELECT * FROM customers";
    outputs(
        &pg(sql, 5),
        &[
            k(&["customers.id"]),
            k(&["customers.email"]),
            k(&["customers.name"]),
            k(&["customers.ssn"]),
            k(&["customers.card"]),
        ],
        sql,
    );
    let sql = "SELECT c.*, o.total FROM customers c JOIN orders o ON o.customer_id = c.id";
    let l = pg(sql, 6);
    assert_eq!(l.outputs[3], k(&["customers.ssn"]));
    assert_eq!(l.outputs[5], k(&["orders.total"]));
    assert_eq!(
        l.predicate_columns,
        set(&["customers.id", "orders.customer_id"])
    );
    // USING shows the join column once, first, from either side.
    let sql = "SELECT * FROM customers JOIN users USING (email)";
    let l = pg(sql, 7);
    assert_eq!(l.outputs[0], k(&["customers.email", "users.email"]));
    assert_eq!(l.outputs[1], k(&["customers.id"]));
    assert_eq!(l.outputs[6], k(&["users.name"]));
    assert_eq!(
        l.predicate_columns,
        set(&["customers.email", "users.email"])
    );
    assert!(!l.incomplete);
    let sql = "SELECT * FROM users NATURAL JOIN staging";
    let l = pg(sql, 4);
    outputs(
        &l,
        &[
            k(&["staging.email", "users.email"]),
            k(&["users.id"]),
            k(&["users.name"]),
            k(&["staging.ssn"]),
        ],
        sql,
    );
    assert_eq!(l.predicate_columns, set(&["staging.email", "users.email"]));
    // The count the database returned disagrees: nothing can be trusted.
    let l = pg("SELECT * FROM customers", 4);
    assert_eq!(l.outputs, vec![OutputLineage::Unknown; 4]);
    assert!(l.incomplete);
}

#[test]
fn whole_row_references() {
    let all = k(&[
        "customers.card",
        "customers.email",
        "customers.id",
        "customers.name",
        "customers.ssn",
    ]);
    let sql = "SELECT c, to_json(c), row_to_json(c), c::text, ROW(c.*), (c).ssn, \
               json_agg(c.*) FROM customers c";
    outputs(
        &pg(sql, 7),
        &[
            all.clone(),
            all.clone(),
            all.clone(),
            all.clone(),
            all.clone(),
            k(&["customers.ssn"]),
            all.clone(),
        ],
        sql,
    );
    // A column of the same name wins over the table.
    let sql = "SELECT orders FROM orders, (SELECT 1 AS orders) s";
    outputs(&pg(sql, 1), &[k(&[])], sql);
}

#[test]
fn set_operations() {
    let sql = "SELECT email, 1 FROM customers UNION SELECT name, id FROM users \
               EXCEPT SELECT note, total FROM orders ORDER BY 2";
    let l = pg(sql, 2);
    outputs(
        &l,
        &[
            k(&["customers.email", "orders.note", "users.name"]),
            k(&["orders.total", "users.id"]),
        ],
        sql,
    );
    assert_eq!(l.predicate_columns, set(&["orders.total", "users.id"]));
}

#[test]
fn joins_and_ambiguity() {
    let sql = "SELECT email, ssn, total FROM customers JOIN users ON customers.id = users.id \
               JOIN orders ON orders.customer_id = customers.id";
    let l = pg(sql, 3);
    outputs(
        &l,
        &[
            k(&["customers.email", "users.email"]),
            k(&["customers.ssn"]),
            k(&["orders.total"]),
        ],
        sql,
    );
    assert_eq!(
        l.predicate_columns,
        set(&["customers.id", "orders.customer_id", "users.id"])
    );
    // A table the schema does not know may hold any unqualified column.
    let l = pg("SELECT email FROM customers, mystery", 1);
    assert_eq!(l.outputs, vec![k(&["customers.email", "mystery.email"])]);
    assert!(l.incomplete);
}

#[test]
fn subqueries() {
    let sql = "SELECT (SELECT max(o.total) FROM orders o WHERE o.customer_id = c.id) AS m, \
               EXISTS (SELECT ssn FROM staging s WHERE s.email = c.email) \
               FROM customers c WHERE c.id IN (SELECT customer_id FROM orders)";
    let l = pg(sql, 2);
    outputs(&l, &[k(&["orders.total"]), k(&[])], sql);
    assert_eq!(
        l.predicate_columns,
        set(&[
            "customers.email",
            "customers.id",
            "orders.customer_id",
            "staging.email"
        ])
    );
    // Correlated: `ssn` is not in orders, so it is the outer customers' column.
    let sql = "SELECT (SELECT ssn FROM orders LIMIT 1) FROM customers";
    outputs(&pg(sql, 1), &[k(&["customers.ssn"])], sql);
    let sql = "SELECT s.x FROM customers c, LATERAL (SELECT c.card AS x) s";
    outputs(&pg(sql, 1), &[k(&["customers.card"])], sql);
}

#[test]
fn predicate_columns() {
    let cases: [(&str, &[&str]); 6] = [
        (
            "SELECT id FROM customers WHERE ssn LIKE '1%'",
            &["customers.ssn"],
        ),
        ("SELECT id FROM customers ORDER BY ssn", &["customers.ssn"]),
        (
            "SELECT a.id FROM customers a JOIN customers b ON a.ssn = b.ssn",
            &["customers.ssn"],
        ),
        (
            "SELECT count(*) FROM customers GROUP BY card",
            &["customers.card"],
        ),
        (
            "SELECT name FROM customers GROUP BY name HAVING max(ssn) > '5'",
            &["customers.name", "customers.ssn"],
        ),
        // An output alias or position in ORDER BY is the column behind it.
        (
            "SELECT ssn AS s, id FROM customers ORDER BY s, 2",
            &["customers.id", "customers.ssn"],
        ),
    ];
    for (sql, expected) in cases {
        for l in [pg(sql, 1), my(sql, 1), lite(sql, 1)] {
            assert_eq!(l.predicate_columns, set(expected), "{sql}");
        }
    }
    let l = pg("SELECT id FROM customers WHERE nosuch = 1", 1);
    assert_eq!(l.predicate_columns, set(&["*.nosuch"]));
    assert!(l.incomplete);
    assert_eq!(l.outputs, vec![k(&["customers.id"])]);
}

#[test]
fn returning() {
    let sql = "INSERT INTO customers (email, ssn) SELECT email, ssn FROM staging \
               WHERE email LIKE '%x' RETURNING id, ssn";
    let l = pg(sql, 2);
    outputs(
        &l,
        &[k(&["customers.id"]), k(&["customers.ssn", "staging.ssn"])],
        sql,
    );
    assert_eq!(l.predicate_columns, set(&["staging.email"]));
    let sql = "INSERT INTO customers (id, email) VALUES (1, 'a') \
               ON CONFLICT (id) DO UPDATE SET email = excluded.email || customers.name \
               RETURNING email";
    outputs(
        &pg(sql, 1),
        &[k(&["customers.email", "customers.name"])],
        sql,
    );
    let sql = "UPDATE customers SET name = o.note FROM orders o \
               WHERE o.customer_id = customers.id RETURNING name, customers.ssn";
    let l = pg(sql, 2);
    outputs(
        &l,
        &[k(&["customers.name", "orders.note"]), k(&["customers.ssn"])],
        sql,
    );
    assert_eq!(
        l.predicate_columns,
        set(&["customers.id", "orders.customer_id"])
    );
    let sql = "DELETE FROM customers WHERE ssn = '1' RETURNING *";
    let l = lite(sql, 5);
    assert_eq!(l.outputs[3], k(&["customers.ssn"]));
    assert_eq!(l.predicate_columns, set(&["customers.ssn"]));
    let sql = "WITH d AS (DELETE FROM customers RETURNING card) SELECT card FROM d";
    outputs(&pg(sql, 1), &[k(&["customers.card"])], sql);
    // No RETURNING: no rows.
    outputs(&pg("INSERT INTO orders (id) VALUES (1)", 0), &[], "insert");
}

#[test]
fn unknown_and_unparsed_fail_closed() {
    let l = pg("SELECT * FROM mystery", 3);
    assert_eq!(l.outputs, vec![OutputLineage::Unknown; 3]);
    assert!(l.incomplete);
    let l = pg("SELECT m.* , c.id FROM mystery m, customers c", 4);
    assert_eq!(l.outputs, vec![OutputLineage::Unknown; 4]);
    let l = pg("SELECT to_json(m) FROM mystery m", 1);
    assert_eq!(l.outputs, vec![OutputLineage::Unknown]);
    // A qualified column of an unknown table is still that table's column.
    let l = pg("SELECT m.ssn FROM mystery m", 1);
    assert_eq!(l.outputs, vec![k(&["mystery.ssn"])]);
    assert!(l.incomplete);
    for sql in [
        "selec garbage from",
        "SELECT 1; SELECT 2",
        "",
        "EXPLAIN SELECT * FROM customers",
        "SELECT 1 END DELETE FROM t",
    ] {
        let l = pg(sql, 2);
        assert_eq!(l.outputs, vec![OutputLineage::Unknown; 2], "{sql}");
        assert!(l.incomplete, "{sql}");
    }
    let l = pg("SELECT nosuch FROM customers", 1);
    assert_eq!(l.outputs, vec![OutputLineage::Unknown]);
    assert!(l.incomplete);
    // An unknown CTE/derived name in a star keeps the positions of the rest honest.
    let l = pg("SELECT f.* FROM generate_series(1, 3) f", 1);
    assert_eq!(l.outputs, vec![k(&[])]);
    assert!(l.incomplete);
}

#[test]
fn mysql_dialect() {
    let sql = "SELECT `email`, CONCAT(c.name, '@'), GROUP_CONCAT(ssn SEPARATOR ','), \
               \"literal\" FROM Customers AS c GROUP BY 1, 2";
    let l = my(sql, 4);
    outputs(
        &l,
        &[
            k(&["customers.email"]),
            k(&["customers.name"]),
            k(&["customers.ssn"]),
            k(&[]),
        ],
        sql,
    );
    assert_eq!(
        l.predicate_columns,
        set(&["customers.email", "customers.name"])
    );
    // Session variables may carry data from earlier statements.
    let l = my("SELECT @v, id FROM customers", 2);
    assert_eq!(
        l.outputs,
        vec![OutputLineage::Unknown, k(&["customers.id"])]
    );
    assert!(l.incomplete);
    // Executable comments are refused, as by the inspector.
    let l = my("SELECT id /*!, ssn */ FROM customers", 2);
    assert_eq!(l.outputs, vec![OutputLineage::Unknown; 2]);
    // MySQL may compare alias case-sensitively: `C.id` might be the outer `C`.
    let l = my(
        "SELECT (SELECT C.id FROM orders AS c LIMIT 1) FROM customers AS C",
        1,
    );
    assert_eq!(l.outputs, vec![k(&["customers.id", "orders.id"])]);
    // MySQL lists USING columns in the left table's order, not the USING list's.
    let l = my("SELECT * FROM users JOIN customers USING (name, id)", 6);
    assert_eq!(l.outputs[0], k(&["customers.id", "users.id"]));
    assert_eq!(l.outputs[1], k(&["customers.name", "users.name"]));
    assert_eq!(l.outputs[2], k(&["users.email"]));
    assert!(!l.incomplete);
    let l = pg("SELECT * FROM users JOIN customers USING (name, id)", 6);
    assert_eq!(l.outputs[0], k(&["customers.name", "users.name"]));
    let l = my("SELECT 1, CURRENT_USER() FROM DUAL", 2);
    outputs(&l, &[k(&[]), k(&[])], "dual");
    let sql = "INSERT INTO orders (id, note) SELECT id, ssn FROM customers \
               ON DUPLICATE KEY UPDATE note = VALUES(note)";
    let l = my(sql, 0);
    assert!(l.outputs.is_empty() && !l.incomplete);
}

#[test]
fn sqlite_dialect() {
    let sql = "SELECT \"ssn\", [email], substr(name, 1, 1) || '.' FROM customers";
    outputs(
        &lite(sql, 3),
        &[
            k(&["customers.ssn"]),
            k(&["customers.email"]),
            k(&["customers.name"]),
        ],
        sql,
    );
    // SQLite keeps the left side's order and drops the right side's copy.
    let l = lite("SELECT * FROM users JOIN customers USING (id)", 7);
    assert_eq!(l.outputs[0], k(&["customers.id", "users.id"]));
    assert_eq!(l.outputs[1], k(&["users.email"]));
    assert_eq!(l.outputs[3], k(&["customers.email"]));
    assert!(!l.incomplete);
    let sql = "INSERT INTO orders (customer_id, note) VALUES (1, 'x') RETURNING note";
    outputs(&lite(sql, 1), &[k(&["orders.note"])], sql);
}

#[test]
fn identifiers_are_normalised_per_dialect() {
    // PostgreSQL: quoted names keep their case and so may be another column than the
    // lowercased schema's; both are taken.
    let l = pg("SELECT \"SSN\" FROM customers", 1);
    assert_eq!(l.outputs, vec![k(&["customers.ssn"])]);
    let l = pg("SELECT C.Email FROM Customers c", 1);
    assert_eq!(l.outputs, vec![k(&["customers.email"])]);
    // A quoted alias is another name.
    let l = pg("SELECT \"C\".email FROM customers c", 1);
    assert_eq!(l.outputs, vec![OutputLineage::Unknown]);
}

#[test]
fn big_input_runs_on_its_own_thread() {
    let n = (MAX_SQL_BYTES - 100) / " UNION SELECT ssn FROM customers".len();
    let sql = format!(
        "SELECT email FROM customers{}",
        " UNION SELECT ssn FROM customers".repeat(n)
    );
    let l = pg(&sql, 1);
    assert_eq!(l.outputs, vec![k(&["customers.email", "customers.ssn"])]);
    let sql = format!("SELECT email{} FROM customers", " || email".repeat(25_000));
    assert_eq!(pg(&sql, 1).outputs, vec![k(&["customers.email"])]);
    let deep = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
    assert_eq!(pg(&deep, 1).outputs, vec![OutputLineage::Unknown]);
}

#[test]
fn inline_analysis_fits_in_a_small_stack() {
    let w = |sql: &str| {
        sql::weight(
            &Tokenizer::new(&sqlparser::dialect::PostgreSqlDialect {}, sql)
                .tokenize_with_location()
                .unwrap(),
        )
    };
    // As in the inspector's test: the deepest trees the inline path can meet, chains as
    // long as the inline budget allows inside nesting at the parser's recursion limit,
    // here under a projection, a WHERE and a derived table so every walk is exercised.
    let open = "(".repeat(RECURSION_LIMIT / 2);
    let close = ")".repeat(RECURSION_LIMIT / 2);
    let shapes = [
        (
            format!("SELECT {open}ssn"),
            " || 'x'",
            format!("{close} FROM customers"),
        ),
        (
            format!("SELECT {open}ssn"),
            "::text",
            format!("{close} FROM customers"),
        ),
        (
            format!("SELECT {open}card"),
            "[1]",
            format!("{close} FROM customers"),
        ),
        (
            format!("SELECT id FROM customers WHERE {open}ssn = 1"),
            " OR ssn = 1",
            close.clone(),
        ),
        (
            "SELECT s.x FROM (SELECT ssn AS x FROM customers".to_string(),
            " UNION SELECT 1",
            ") s".to_string(),
        ),
        (
            format!("SELECT {open}ssn"),
            " IS NULL",
            format!("{close} FROM customers"),
        ),
    ];
    let mut inputs = Vec::new();
    for (head, link, tail) in &shapes {
        let n = (sql::INLINE_MAX_TOKENS - w(head) - w(tail)) / w(link);
        let sql = format!("{head}{}{tail}", link.repeat(n));
        let weight = w(&sql);
        assert!(weight <= sql::INLINE_MAX_TOKENS && weight + 2 * w(link) > sql::INLINE_MAX_TOKENS);
        inputs.push(sql);
    }
    inputs.push(format!(
        "SELECT {}ssn{} FROM customers",
        "(SELECT ".repeat(20),
        " FROM customers)".repeat(20)
    ));
    inputs.push(format!(
        "SELECT s.ssn FROM {}customers{}",
        "(SELECT * FROM ".repeat(20),
        ") s".repeat(20)
    ));
    let handle = std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(move || {
            let mut followed = 0;
            for sql in &inputs {
                for kind in [
                    ConnectionKind::Postgres,
                    ConnectionKind::Mysql,
                    ConnectionKind::Sqlite,
                ] {
                    let l = lineage(kind, sql, &schema(), 1);
                    followed += usize::from(l.outputs != vec![OutputLineage::Unknown]);
                }
            }
            followed
        })
        .unwrap();
    // The deep shapes were really analysed, not refused (SQLite and MySQL do not parse
    // some of the PostgreSQL-only chains).
    assert!(handle.join().unwrap() >= 20);
}

#[test]
fn garbage_never_panics() {
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let words = [
        "select",
        "from",
        "where",
        "with",
        "recursive",
        "as",
        "(",
        ")",
        "union",
        "join",
        "using",
        "on",
        "lateral",
        "returning",
        "insert",
        "into",
        "values",
        "update",
        "set",
        "delete",
        "c",
        "customers",
        "orders",
        "c.*",
        "*",
        "ssn",
        "email",
        ",",
        "1",
        "=",
        "count(*)",
        "to_json(c)",
        "order",
        "by",
        "group",
        "exists",
        "over",
        "partition",
    ];
    for _ in 0..2000 {
        let len = (next() % 40) as usize;
        let sql = (0..len)
            .map(|_| words[(next() % words.len() as u64) as usize])
            .collect::<Vec<_>>()
            .join(" ");
        for kind in [
            ConnectionKind::Postgres,
            ConnectionKind::Mysql,
            ConnectionKind::Sqlite,
        ] {
            let l = lineage(kind, &sql, &schema(), 2);
            assert_eq!(l.outputs.len(), 2, "{sql}");
        }
    }
}

#[test]
fn only_bare_columns_of_plain_selects_are_unchanged() {
    let schema = schema();
    let unchanged =
        |sql: &str, n: usize| super::lineage(ConnectionKind::Postgres, sql, &schema, n).unchanged;
    assert_eq!(
        unchanged("SELECT card, c.name AS n FROM customers c", 2),
        [true, true]
    );
    assert_eq!(unchanged("SELECT * FROM customers", 5), [true; 5]);
    assert_eq!(
        unchanged(
            "SELECT c.card FROM customers c JOIN orders o ON o.customer_id = c.id",
            1
        ),
        [true]
    );
    for sql in [
        "SELECT '00000' || substr(card, 1, 4) FROM customers",
        "SELECT card FROM customers UNION SELECT 'guess'",
        "SELECT upper(card) FROM customers",
        "SELECT card::text FROM customers",
        "WITH c AS (SELECT substr(card, 1, 4) AS card FROM customers) SELECT card FROM c",
        "SELECT card FROM (SELECT substr(card, 1, 4) AS card FROM customers) d",
        "SELECT max(card) FROM customers",
        "SELECT coalesce(card, 'x') FROM customers",
    ] {
        assert_eq!(unchanged(sql, 1), [false], "{sql}");
    }
    assert_eq!(
        unchanged("SELECT *, upper(card) FROM customers", 6),
        [false; 6]
    );
    assert_eq!(
        unchanged("SELECT card, upper(card) FROM customers", 2),
        [true, false]
    );
}
