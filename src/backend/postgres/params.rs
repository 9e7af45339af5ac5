//! Parameters: JSON values bound to a prepared statement.
//!
//! What must stay true: every parameter travels in *text* format, so the server's own input
//! function for the parameter's type parses it. Any type works, a wrong value is the
//! server's error (22P02, ...), and no value is ever spliced into SQL text: an array becomes
//! an array literal in which every element is quoted, so no element text can break out.

use std::borrow::Cow;

use bytes::BytesMut;
use serde_json::Value;
use tokio_postgres::types::{Format, IsNull, Kind, ToSql, Type, to_sql_checked};

use super::values::oid;

/// A JSON parameter sent in text format: the server's input function for the parameter's
/// type parses it, so any type works and a wrong value is the server's error (22P02, ...).
#[derive(Debug)]
pub(super) struct JsonParam<'a>(pub(super) &'a Value);

impl ToSql for JsonParam<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match param_text(self.0, ty) {
            None => Ok(IsNull::Yes),
            Some(text) => {
                out.extend_from_slice(text.as_bytes());
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }
}

/// The text a JSON value is sent as for a parameter of type `ty`; `None` is SQL NULL.
fn param_text<'v>(value: &'v Value, ty: &Type) -> Option<Cow<'v, str>> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Array(items) => match array_element_type(ty) {
            Some(element) => {
                let mut literal = String::new();
                array_literal(items, element, &mut literal);
                Some(Cow::Owned(literal))
            }
            None => Some(Cow::Owned(value.to_string())),
        },
        other => Some(Cow::Owned(scalar_text(other))),
    }
}

/// The element type when `ty` (or the domain it is) is an array type.
fn array_element_type(ty: &Type) -> Option<&Type> {
    match ty.kind() {
        Kind::Array(element) => Some(element),
        Kind::Domain(inner) => array_element_type(inner),
        _ => None,
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "true" } else { "false" }.to_string(),
        // Numbers, objects (and arrays in element position) travel as their JSON text.
        other => other.to_string(),
    }
}

fn is_json_type(ty: &Type) -> bool {
    match ty.kind() {
        Kind::Domain(inner) => is_json_type(inner),
        _ => matches!(ty.oid(), oid::JSON | oid::JSONB),
    }
}

/// A PostgreSQL array literal: nested JSON arrays are sub-dimensions (except for json/jsonb
/// elements, where an array is a JSON value), null is NULL, every other element is
/// double-quoted with `"` and `\` backslash-escaped, so no element text can break out.
fn array_literal(items: &[Value], element: &Type, out: &mut String) {
    // `box` is the one built-in type whose array delimiter is not a comma.
    let delimiter = if element.oid() == oid::BOX { ';' } else { ',' };
    out.push('{');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(delimiter);
        }
        match item {
            Value::Null => out.push_str("NULL"),
            Value::Array(inner) if !is_json_type(element) => array_literal(inner, element, out),
            other => {
                out.push('"');
                for ch in scalar_text(other).chars() {
                    if ch == '"' || ch == '\\' {
                        out.push('\\');
                    }
                    out.push(ch);
                }
                out.push('"');
            }
        }
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_parameters_become_quoted_literals() {
        let text = |value: Value, ty: &Type| param_text(&value, ty).map(|c| c.into_owned());
        assert_eq!(
            text(
                serde_json::json!([1, "a\"b\\c", null, true]),
                &Type::TEXT_ARRAY
            )
            .as_deref(),
            Some(r#"{"1","a\"b\\c",NULL,"true"}"#)
        );
        assert_eq!(
            text(serde_json::json!([[1, 2], [3, 4]]), &Type::INT4_ARRAY).as_deref(),
            Some(r#"{{"1","2"},{"3","4"}}"#)
        );
        assert_eq!(
            text(serde_json::json!([[1, 2], {"a": 1}]), &Type::JSONB_ARRAY).as_deref(),
            Some(r#"{"[1,2]","{\"a\":1}"}"#)
        );
        assert_eq!(
            text(serde_json::json!([1, 2]), &Type::JSONB).as_deref(),
            Some("[1,2]")
        );
        assert_eq!(
            text(serde_json::json!({"k": [1]}), &Type::TEXT).as_deref(),
            Some(r#"{"k":[1]}"#)
        );
        assert_eq!(text(Value::Null, &Type::INT4), None);
        assert_eq!(
            text(serde_json::json!(false), &Type::BOOL).as_deref(),
            Some("false")
        );
        assert_eq!(
            text(serde_json::json!(1.5), &Type::NUMERIC).as_deref(),
            Some("1.5")
        );
        assert_eq!(
            text(serde_json::json!([]), &Type::INT4_ARRAY).as_deref(),
            Some("{}")
        );
    }
}
