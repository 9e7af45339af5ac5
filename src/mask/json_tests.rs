//! Unit tests of `json.rs`: JSON paths, JSON-body masking and body fallbacks.

use super::*;
use crate::inspect::lineage::{Lineage, OutputLineage, SourceColumn};
use crate::mask::plan::{ColumnTreatment, Masking, RequestMasking};
use crate::mask::{MaskingConfig, hash_pseudonym};
use serde_json::json;

const KEY: &[u8] = &[7; 32];

fn masking(toml_text: &str) -> RequestMasking {
    let config: MaskingConfig = toml::from_str(toml_text).unwrap();
    config.validate().unwrap();
    Masking::new(&[config], KEY.to_vec())
        .unwrap()
        .for_record("api")
}

fn rules(columns: &str) -> RequestMasking {
    masking(&format!("connections = ['api']\ncolumns = [{columns}]\n"))
}

fn masked(m: &RequestMasking, mut v: Value) -> (Value, MaskedCounts) {
    let mut counts = MaskedCounts::default();
    m.json(&mut v, &mut counts);
    (v, counts)
}

fn body(m: &RequestMasking, ct: Option<&str>, b: &[u8]) -> (MaskedBody, MaskedCounts) {
    let mut counts = MaskedCounts::default();
    let out = m.body(ct, b, &mut counts);
    (out, counts)
}

fn utf8(b: &MaskedBody) -> &str {
    std::str::from_utf8(&b.bytes).unwrap()
}

#[test]
fn path_forms_parse() {
    let p = |t: &str| JsonPath::parse(t).unwrap().steps;
    assert!(p("$").is_empty());
    let name = |n: &str, descendant| Step {
        descendant,
        selector: Selector::Name(n.into()),
    };
    let any = |descendant| Step {
        descendant,
        selector: Selector::Any,
    };
    assert_eq!(
        p("$.customers[*].email"),
        [name("customers", false), any(false), name("email", false)]
    );
    assert_eq!(p("$..ssn"), [name("ssn", true)]);
    assert_eq!(p("$..*"), [any(true)]);
    assert_eq!(p("$.*"), [any(false)]);
    assert_eq!(p("$..['a b']"), [name("a b", true)]);
    assert_eq!(
        p("$.data.items[12].first-name"),
        [
            name("data", false),
            name("items", false),
            Step {
                descendant: false,
                selector: Selector::Index(12)
            },
            name("first-name", false)
        ]
    );
    assert_eq!(
        p(r#"$['it\'s']["q\"x"]['b\\s']"#),
        [
            name("it's", false),
            name("q\"x", false),
            name("b\\s", false)
        ]
    );
    assert_eq!(p("$['']"), [name("", false)]);
    assert_eq!(p("$.ürün"), [name("ürün", false)]);
}

#[test]
fn path_errors() {
    for bad in [
        "",
        "customers",
        "$.",
        "$..",
        "$ .a",
        "$. a",
        "$.a b",
        "$a",
        "$[?(@.x)]",
        "$[1:2]",
        "$[-1]",
        "$[1,2]",
        "$['a','b']",
        "$['a'",
        "$['a",
        "$[",
        "$[*",
        "$['a\\x']",
        "$[99999999999999999999999]",
        "$.a()",
    ] {
        assert!(JsonPath::parse(bad).is_err(), "{bad:?} parsed");
    }
    let long = format!("$.{}", vec!["a"; MAX_PATH_STEPS + 1].join("."));
    assert!(JsonPath::parse(&long).unwrap_err().contains("steps"));
    let ok = format!("$.{}", vec!["a"; MAX_PATH_STEPS].join("."));
    assert!(JsonPath::parse(&ok).is_ok());
}

#[test]
fn invalid_path_refuses_the_config_naming_the_rule() {
    let config: MaskingConfig = toml::from_str(
        "connections = ['api']\ncolumns = [{ column = 'email', strategy = 'redact' }, { column = '$.a[?(@.b)]', strategy = 'redact' }]\n",
    )
    .unwrap();
    let (key, msg) = config.validate().unwrap_err();
    assert_eq!(key, "columns[1].column");
    assert!(msg.contains("JSON path"), "{msg}");
    let Err(e) = Masking::new(&[config], KEY.to_vec()) else {
        panic!("compiled an invalid path");
    };
    assert!(e.starts_with("masking[0].columns[1].column"), "{e}");
    // Spaces are fine inside a quoted JSON name, not in a SQL glob.
    rules("{ column = \"$['weird key']\", strategy = 'redact' }");
}

#[test]
fn child_index_wildcard_and_quoted_names() {
    let m = rules(
        "{ column = '$.customers[*].email', strategy = 'redact' },
         { column = '$.data.items[1].card.number', strategy = 'partial' },
         { column = \"$['weird key']\", strategy = 'hash' }",
    );
    let (v, counts) = masked(
        &m,
        json!({
            "customers": [{"email": "a", "name": "Ann"}, {"email": "b", "name": "Bob"}, {"name": "Cy"}],
            "data": {"items": [
                {"card": {"number": "4111 1111 1111 1111"}},
                {"card": {"number": "5500 0000 0000 0004"}}
            ]},
            "weird key": "v",
            "email": "top-level email is not under customers[*]"
        }),
    );
    assert_eq!(v["customers"][0]["email"], COLUMN_REDACTED);
    assert_eq!(v["customers"][1]["email"], COLUMN_REDACTED);
    assert_eq!(v["customers"][0]["name"], "Ann");
    assert_eq!(v["customers"][2], json!({"name": "Cy"}));
    // Index 1 only; index 0 is left to the detectors (none enabled here).
    assert_eq!(
        v["data"]["items"][0]["card"]["number"],
        "4111 1111 1111 1111"
    );
    assert_eq!(
        v["data"]["items"][1]["card"]["number"],
        "**** **** **** 0004"
    );
    assert_eq!(v["weird key"], hash_pseudonym(KEY, "v"));
    assert_eq!(v["email"], "top-level email is not under customers[*]");
    assert_eq!(counts.columns["$.customers[*].email"], 2);
    assert_eq!(counts.columns["$.data.items[1].card.number"], 1);
    assert_eq!(counts.columns["$['weird key']"], 1);
    assert!(counts.detectors.is_empty());
}

#[test]
fn recursive_descent() {
    let m = rules("{ column = '$..ssn', strategy = 'redact' }");
    let (v, counts) = masked(
        &m,
        json!({
            "ssn": "1",
            "a": {"ssn": "2", "b": [{"ssn": "3"}, {"c": {"ssn": {"nested": "4"}}}]},
            "ssn_note": "kept",
            "list": ["ssn"]
        }),
    );
    assert_eq!(
        v,
        json!({
            "ssn": COLUMN_REDACTED,
            "a": {"ssn": COLUMN_REDACTED, "b": [{"ssn": COLUMN_REDACTED}, {"c": {"ssn": COLUMN_REDACTED}}]},
            "ssn_note": "kept",
            "list": ["ssn"]
        })
    );
    assert_eq!(counts.columns["$..ssn"], 4);

    // `..*` selects every descendant: the first level is redacted whole.
    let m = rules("{ column = '$.secret..*', strategy = 'redact' }");
    let (v, _) = masked(
        &m,
        json!({"secret": {"a": {"b": 1}, "c": [1, 2]}, "open": 1}),
    );
    assert_eq!(
        v,
        json!({"secret": {"a": COLUMN_REDACTED, "c": COLUMN_REDACTED}, "open": 1})
    );

    // `..[0]`: the first element of every array.
    let m = rules("{ column = '$..[0]', strategy = 'redact' }");
    let (v, _) = masked(&m, json!({"a": [1, 2], "b": {"c": [[3, 4], 5]}}));
    assert_eq!(
        v,
        json!({"a": [COLUMN_REDACTED, 2], "b": {"c": [COLUMN_REDACTED, 5]}})
    );

    // `$` alone: the whole body.
    let m = rules("{ column = '$', strategy = 'redact' }");
    let (v, counts) = masked(&m, json!({"a": 1}));
    assert_eq!(v, json!(COLUMN_REDACTED));
    assert_eq!(counts.columns["$"], 1);
}

#[test]
fn whole_nodes_partial_hash_and_strongest_rule() {
    // Redact replaces an object whole; null stays null.
    let m = rules(
        "{ column = '$.customer', strategy = 'redact' }, { column = '$.gone', strategy = 'redact' }",
    );
    let (v, counts) = masked(
        &m,
        json!({"customer": {"email": "a@b.io", "n": [1]}, "gone": null}),
    );
    assert_eq!(v, json!({"customer": COLUMN_REDACTED, "gone": null}));
    assert_eq!(counts.columns["$.customer"], 1);
    assert!(!counts.columns.contains_key("$.gone"));

    // Partial and hash treat every string and number under the node; booleans are
    // redacted (two values: any rendering gives them away); numbers become strings.
    let m = rules(
        "{ column = '$.card', strategy = 'partial' }, { column = '$.who', strategy = 'hash' }",
    );
    let (v, counts) = masked(
        &m,
        json!({
            "card": {"number": "4111 1111 1111 1111", "cvv": 123, "valid": true, "note": null, "raw": 4111111111111111u64},
            "who": {"email": "alice@example.com", "id": 42}
        }),
    );
    assert_eq!(
        v["card"],
        json!({"number": "**** **** **** 1111", "cvv": "***", "valid": COLUMN_REDACTED, "note": null, "raw": "************1111"})
    );
    assert_eq!(v["who"]["email"], hash_pseudonym(KEY, "alice@example.com"));
    assert_eq!(v["who"]["id"], hash_pseudonym(KEY, "42"));
    assert_eq!(counts.columns["$.card"], 4);
    assert_eq!(counts.columns["$.who"], 2);

    // Strongest wins where rules overlap: redact > hash > partial, at any depth.
    let m = rules(
        "{ column = '$.customer', strategy = 'partial' }, { column = '$..ssn', strategy = 'redact' }, { column = '$.customer.email', strategy = 'hash' }",
    );
    let (v, counts) = masked(
        &m,
        json!({"customer": {"ssn": "123-45-6789", "email": "a@b.io", "name": "Ann Lee"}}),
    );
    assert_eq!(
        v["customer"],
        json!({"ssn": COLUMN_REDACTED, "email": hash_pseudonym(KEY, "a@b.io"), "name": "*** ***"})
    );
    assert_eq!(counts.columns["$..ssn"], 1);
    assert_eq!(counts.columns["$.customer.email"], 1);
    assert_eq!(counts.columns["$.customer"], 1);
}

#[test]
fn detectors_over_leaves_keys_and_numbers() {
    let m = masking("connections = ['api']\ndetectors = ['all']\n");
    let (v, counts) = masked(
        &m,
        json!({
            "note": "mail john.doe@example.com",
            "alice@example.com": {"bob@example.com": 1, "[EMAIL]": 2},
            "card": 4111111111111111u64,
            "list": [4111111111111111u64, 12345678, 42],
            "ssn": "123456789",
            "ok": true
        }),
    );
    assert_eq!(v["note"], "mail [EMAIL]");
    assert_eq!(v["card"], "[CARD]");
    assert_eq!(v["list"], json!(["[CARD]", 12345678, 42]));
    assert_eq!(v["ssn"], "[SSN]");
    assert_eq!(v["ok"], true);
    // Masked keys that collide with a sibling keep both entries.
    assert_eq!(v["[EMAIL]"], json!({"[EMAIL]": 2, "[EMAIL]~2": 1}));
    assert!(!v.to_string().contains("example.com"));
    assert_eq!(counts.detectors.get("email"), 3);
    assert_eq!(counts.detectors.get("card"), 2);
    assert_eq!(counts.detectors.get("ssn"), 1);
    assert!(counts.columns.is_empty());
}

#[test]
fn rules_see_clear_values_and_detectors_skip_what_rules_masked() {
    let m = masking(
        "connections = ['api']\ndetectors = ['all']\ncolumns = [{ column = '$..email', strategy = 'hash' }, { column = '$.card', strategy = 'partial' }]\n",
    );
    let (v, counts) = masked(
        &m,
        json!({
            "email": "alice@example.com",
            "card": "4111 1111 1111 1111",
            "users": {"bob@example.com": {"email": "bob@example.com"}}
        }),
    );
    // The same pseudonym a SQL `hash` rule gives: joins across sources work.
    assert_eq!(v["email"], hash_pseudonym(KEY, "alice@example.com"));
    assert_eq!(v["card"], "**** **** **** 1111");
    // Path matching used the clear key; the key itself then went through the detectors.
    assert_eq!(
        v["users"],
        json!({"[EMAIL]": {"email": hash_pseudonym(KEY, "bob@example.com")}})
    );
    assert_eq!(counts.columns["$..email"], 2);
    assert_eq!(counts.detectors.get("email"), 1);
    assert_eq!(counts.detectors.get("card"), 0);
}

#[test]
fn sql_and_json_rules_do_not_mix() {
    let src = |t: &str, c: &str| SourceColumn {
        table: t.into(),
        column: c.into(),
    };
    // JSON-path rules only: SQL sees no column rules at all.
    let m = rules(
        "{ column = '$..email', strategy = 'redact' }, { column = '$.customers[*]', strategy = 'hash' }",
    );
    assert!(!m.has_column_rules());
    assert!(m.has_json_rules());
    assert_eq!(m.protection(&src("customers", "email")), None);
    assert_eq!(m.protection(&src("*", "email")), None);
    let lineage = Lineage {
        outputs: vec![OutputLineage::Unknown],
        ..Default::default()
    };
    assert_eq!(m.plan(&lineage), [ColumnTreatment::Scan]);
    let mut row = vec![json!("alice@example.com")];
    let mut counts = MaskedCounts::default();
    m.row(&mut row, &["email".into()], &[], &mut counts);
    assert_eq!(row[0], "alice@example.com");
    assert!(counts.is_empty());

    // SQL rules only: JSON bodies see no rule (and no detector: bodies pass).
    let m = rules(
        "{ column = 'email', strategy = 'redact' }, { column = 'customers.*', strategy = 'redact' }",
    );
    assert!(m.has_column_rules() && !m.has_json_rules());
    let (v, counts) = masked(&m, json!({"email": "x", "customers": {"email": "y"}}));
    assert_eq!(v, json!({"email": "x", "customers": {"email": "y"}}));
    assert!(counts.is_empty());
    let (b, _) = body(&m, None, &[0xff, 0x00]);
    assert_eq!(b.form, BodyForm::Unchanged);

    // Both: each applies to its own side.
    let m = rules(
        "{ column = 'ssn', strategy = 'redact' }, { column = '$.email', strategy = 'redact' }",
    );
    assert_eq!(
        m.protection(&src("customers", "ssn")),
        Some(ColumnStrategy::Redact)
    );
    assert_eq!(m.protection(&src("customers", "email")), None);
    let (v, _) = masked(&m, json!({"ssn": "1", "email": "2"}));
    assert_eq!(v, json!({"ssn": "1", "email": COLUMN_REDACTED}));
    // The summary tells the caller about both.
    let cols: Vec<_> = m.summary().columns.into_iter().map(|c| c.column).collect();
    assert_eq!(cols, ["ssn", "$.email"]);
}

#[test]
fn bodies_by_content_type() {
    let m = masking(
        "connections = ['api']\ndetectors = ['email']\ncolumns = [{ column = '$..ssn', strategy = 'redact' }]\n",
    );
    let doc = br#"{"ssn": "123-45-6789", "mail": "a@example.com"}"#;
    for ct in [
        Some("application/json"),
        Some("Application/JSON; charset=utf-8"),
        Some("application/problem+json"),
        Some("text/plain"),
        None,
    ] {
        let (b, counts) = body(&m, ct, doc);
        assert_eq!(b.form, BodyForm::Json, "{ct:?}");
        assert!(b.is_json());
        assert_eq!(utf8(&b), r#"{"mail":"[EMAIL]","ssn":"[REDACTED]"}"#);
        assert_eq!(counts.columns["$..ssn"], 1);
        assert_eq!(counts.detectors.get("email"), 1);
    }
    // Byte order mark.
    let (b, _) = body(
        &m,
        Some("application/json"),
        "\u{feff}{\"ssn\":1}".as_bytes(),
    );
    assert_eq!(utf8(&b), r#"{"ssn":"[REDACTED]"}"#);

    // Text: detectors only.
    let (b, counts) = body(&m, Some("text/html"), b"<p>ssn: x, a@example.com</p>");
    assert_eq!(b.form, BodyForm::Text);
    assert_eq!(utf8(&b), "<p>ssn: x, [EMAIL]</p>");
    assert_eq!(counts.detectors.get("email"), 1);
    let (b, _) = body(
        &m,
        Some("application/x-www-form-urlencoded"),
        b"to=a@example.com",
    );
    assert_eq!(utf8(&b), "to=[EMAIL]");

    // Empty bodies stay empty.
    let (b, counts) = body(&m, Some("application/json"), b"");
    assert_eq!(b.form, BodyForm::Unchanged);
    assert!(b.bytes.is_empty() && counts.is_empty());
}

#[test]
fn ndjson() {
    let m = masking(
        "connections = ['api']\ndetectors = ['email']\ncolumns = [{ column = '$.ssn', strategy = 'redact' }]\n",
    );
    let text = "{\"ssn\":\"1\"}\r\n\n{\"m\": \"a@example.com\"}\nnot json b@example.com\n";
    let (b, counts) = body(&m, Some("application/x-ndjson"), text.as_bytes());
    assert_eq!(b.form, BodyForm::Ndjson);
    assert_eq!(
        utf8(&b),
        "{\"ssn\":\"[REDACTED]\"}\r\n\n{\"m\":\"[EMAIL]\"}\n\"[line withheld: not JSON; JSON-path masking cannot apply]\"\n"
    );
    assert_eq!(counts.columns["$.ssn"], 1);
    assert_eq!(counts.columns[WITHHELD_COUNT_KEY], 1);
    assert_eq!(counts.detectors.get("email"), 1);

    // Without JSON-path rules a bad line is masked as text.
    let m = masking("connections = ['api']\ndetectors = ['email']\n");
    let (b, _) = body(&m, Some("application/jsonl"), text.as_bytes());
    assert!(utf8(&b).ends_with("\nnot json [EMAIL]\n"), "{}", utf8(&b));

    // NDJSON labelled JSON (or not labelled) is recognised when every line parses.
    let (b, _) = body(
        &m,
        Some("application/json"),
        b"{\"a\":\"x@example.com\"}\n[1]\n",
    );
    assert_eq!(b.form, BodyForm::Ndjson);
    assert_eq!(utf8(&b), "{\"a\":\"[EMAIL]\"}\n[1]\n");
}

#[test]
fn invalid_json_declared_json_never_passes() {
    let bad = br#"{"mail": "a@example.com", "ssn": "123-45-6789""#;
    // Detectors only: masked as text.
    let m = masking("connections = ['api']\ndetectors = ['email']\n");
    let (b, counts) = body(&m, Some("application/json"), bad);
    assert_eq!(b.form, BodyForm::Text);
    assert_eq!(utf8(&b), r#"{"mail": "[EMAIL]", "ssn": "123-45-6789""#);
    assert_eq!(counts.detectors.get("email"), 1);

    // JSON-path rules cannot be located in it: withheld.
    let m = masking(
        "connections = ['api']\ndetectors = ['email']\ncolumns = [{ column = '$..ssn', strategy = 'redact' }]\n",
    );
    let (b, counts) = body(&m, Some("application/json"), bad);
    assert_eq!(b.form, BodyForm::Withheld);
    assert!(utf8(&b).starts_with("[body withheld: "));
    assert!(!utf8(&b).contains("6789"));
    assert_eq!(counts.columns[WITHHELD_COUNT_KEY], 1);

    // Not declared JSON and not parsable: text, unless strict.
    let (b, _) = body(&m, Some("text/plain"), bad);
    assert_eq!(b.form, BodyForm::Text);
    let strict = masking(
        "connections = ['api']\nstrict = true\ncolumns = [{ column = '$..ssn', strategy = 'redact' }]\n",
    );
    let (b, _) = body(&strict, Some("text/plain"), bad);
    assert_eq!(b.form, BodyForm::Withheld);
    let (b, _) = body(&strict, Some("text/plain"), b"hello");
    assert_eq!(b.form, BodyForm::Withheld);
}

#[test]
fn binary_bodies_are_withheld() {
    let m = masking("connections = ['api']\ndetectors = ['email']\n");
    let bin = [0x1f, 0x8b, 0x08, 0x00, 0xff, 0xfe, b'a', b'@', b'b'];
    let (b, counts) = body(&m, Some("application/octet-stream"), &bin);
    assert_eq!(b.form, BodyForm::Withheld);
    assert_eq!(utf8(&b), "[body withheld: 9 bytes, not UTF-8 text]");
    assert_eq!(counts.columns[WITHHELD_COUNT_KEY], 1);
    let (b, _) = body(&m, Some("application/json"), &bin);
    assert_eq!(b.form, BodyForm::Withheld);

    // Audit: always text.
    let mut counts = MaskedCounts::default();
    assert_eq!(
        m.body_for_audit(Some("image/png"), &bin, &mut counts),
        "[body withheld: 9 bytes, not UTF-8 text]"
    );
    let none = Masking::none().for_record("api");
    assert_eq!(
        none.body_for_audit(None, &bin, &mut counts),
        "[body withheld: 9 bytes, not UTF-8 text]"
    );
    assert_eq!(
        none.body_for_audit(None, b"a@example.com", &mut counts),
        "a@example.com"
    );
    assert_eq!(
        m.body_for_audit(
            Some("application/json"),
            br#"{"to":"a@example.com"}"#,
            &mut counts
        ),
        r#"{"to":"[EMAIL]"}"#
    );
}

#[test]
fn deep_nesting_does_not_overflow() {
    let m = masking(
        "connections = ['api']\ndetectors = ['email']\ncolumns = [{ column = '$..ssn', strategy = 'redact' }]\n",
    );
    // A 100k-deep body exceeds the parser's nesting limit: not JSON.
    let mut deep = "[".repeat(100_000);
    deep.push_str("\"x@example.com\"");
    deep.push_str(&"]".repeat(100_000));
    let (b, _) = body(&m, Some("application/json"), deep.as_bytes());
    assert_eq!(b.form, BodyForm::Withheld);
    let (b, counts) = body(&m, Some("text/plain"), deep.as_bytes());
    assert_eq!(b.form, BodyForm::Text);
    assert_eq!(counts.detectors.get("email"), 1);
    let (b, _) = body(&m, Some("application/x-ndjson"), deep.as_bytes());
    assert_eq!(b.form, BodyForm::Ndjson);
    assert!(utf8(&b).starts_with("\"[line withheld"));

    // A value built in memory, as deep as you like: walked without recursion.
    let mut v = json!({"ssn": "1", "m": "x@example.com"});
    for _ in 0..100_000 {
        // Not `json!`: it would serialise `v` again, recursively.
        let mut o = serde_json::Map::new();
        o.insert("k".into(), Value::Array(vec![v]));
        v = Value::Object(o);
    }
    let mut counts = MaskedCounts::default();
    m.json(&mut v, &mut counts);
    assert_eq!(counts.columns["$..ssn"], 1);
    assert_eq!(counts.detectors.get("email"), 1);
    // Drop iteratively (serde_json's recursive Drop would overflow).
    let mut cur = v;
    loop {
        cur = match cur {
            Value::Object(mut o) => match o.remove("k") {
                Some(Value::Array(mut a)) => a.pop().unwrap_or(Value::Null),
                _ => break assert_eq!(o["ssn"], COLUMN_REDACTED),
            },
            _ => panic!("lost the innermost object"),
        };
    }
}
