//! Values: request parameters to MySQL values, result values to their JSON forms (see
//! `docs/types.md`), and the type names columns are reported with.
//!
//! What must stay true: parameters are bound through the binary protocol, never spliced
//! into statement text; every result value gets a JSON form (an exact string where a JSON
//! number would lose precision, base64 for binary data), never an error or a silent null.

use base64::Engine as _;
use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::{Row, Value};
use serde_json::Value as Json;

use super::{BINARY_CHARSET, BackendError};

/// A JSON request parameter as a MySQL value (bound through the binary protocol, so it is never
/// part of the statement text).
pub(super) fn json_to_mysql(value: &Json) -> Value {
    match value {
        Json::Null => Value::NULL,
        Json::Bool(b) => Value::Int(i64::from(*b)),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else {
                match n.as_f64() {
                    Some(f) => Value::Double(f),
                    None => Value::Bytes(n.to_string().into_bytes()),
                }
            }
        }
        Json::String(s) => Value::Bytes(s.as_bytes().to_vec()),
        // Arrays and objects travel as JSON text (what JSON columns and functions accept).
        Json::Array(_) | Json::Object(_) => Value::Bytes(value.to_string().into_bytes()),
    }
}

pub(super) fn row_to_json(row: Row) -> Result<Vec<Json>, BackendError> {
    let columns = row.columns();
    let values = row.unwrap_raw();
    if values.len() != columns.len() {
        return Err(BackendError::Internal(format!(
            "row has {} values for {} columns",
            values.len(),
            columns.len()
        )));
    }
    values
        .into_iter()
        .zip(columns.iter())
        .map(|(value, column)| match value {
            Some(value) => Ok(value_to_json(value, column)),
            // Values are only missing after `Row::take`, which is never called here.
            None => Err(BackendError::Internal(format!(
                "value of column `{}` is missing",
                column.name_str()
            ))),
        })
        .collect()
}

/// The JSON form of one value:
///
/// - integers of 32 bits or fewer (TINYINT..INT, MEDIUMINT, YEAR): numbers; BIGINT (signed or
///   unsigned) and any other integer: decimal strings, because JSON readers lose precision
///   above 2^53;
/// - FLOAT/DOUBLE: numbers (FLOAT via its shortest decimal form, so 0.1 stays 0.1); NaN and
///   infinities: the strings `NaN`, `Infinity`, `-Infinity`;
/// - DECIMAL: the exact decimal string;
/// - DATE: `YYYY-MM-DD`; DATETIME and TIMESTAMP: `YYYY-MM-DD HH:MM:SS[.ffffff]` (space, no zone;
///   TIMESTAMP is UTC because sessions use `time_zone = '+00:00'`); TIME: `[-]HH:MM:SS[.ffffff]`
///   with days folded into the hours (`838:59:59`). Fractions show the column's declared
///   digits, or all six when the value needs them;
/// - JSON (MySQL's JSON type): the parsed document, or its text if it does not parse. MariaDB
///   sends JSON columns as LONGTEXT, so they arrive as strings;
/// - text (character set not `binary`), ENUM, SET: strings. Text that is not valid UTF-8 (the
///   session asks for utf8mb4, so only mislabelled data) becomes `{"base64": "..."}`: never
///   a lossy string, and never mistaken for a real string value;
/// - binary strings and BLOBs (character set `binary`), BIT, VECTOR: base64 strings;
/// - GEOMETRY: base64 of the WKB, without MySQL's 4-byte SRID prefix (use `ST_SRID()`);
/// - anything else: its text form (the same rule as text).
fn value_to_json(value: Value, column: &mysql_async::Column) -> Json {
    match value {
        Value::NULL => Json::Null,
        Value::Int(i) if is_small_integer(column.column_type()) => Json::from(i),
        Value::Int(i) => Json::String(i.to_string()),
        Value::UInt(u) if is_small_integer(column.column_type()) => Json::from(u),
        Value::UInt(u) => Json::String(u.to_string()),
        Value::Float(f) => float_json(shortest_f32(f)),
        Value::Double(d) => float_json(d),
        Value::Date(year, month, day, hour, minute, second, micros) => {
            let date_only = matches!(
                column.column_type(),
                ColumnType::MYSQL_TYPE_DATE | ColumnType::MYSQL_TYPE_NEWDATE
            ) && (hour, minute, second, micros) == (0, 0, 0, 0);
            if date_only {
                Json::String(format!("{year:04}-{month:02}-{day:02}"))
            } else {
                Json::String(format!(
                    "{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}{}",
                    fraction(micros, column.decimals())
                ))
            }
        }
        Value::Time(negative, days, hours, minutes, seconds, micros) => {
            let hours = u64::from(days) * 24 + u64::from(hours);
            Json::String(format!(
                "{}{hours:02}:{minutes:02}:{seconds:02}{}",
                if negative { "-" } else { "" },
                fraction(micros, column.decimals())
            ))
        }
        Value::Bytes(bytes) => bytes_to_json(bytes, column),
    }
}

fn bytes_to_json(bytes: Vec<u8>, column: &mysql_async::Column) -> Json {
    let binary_charset = column.character_set() == BINARY_CHARSET
        && !column
            .flags()
            .intersects(ColumnFlags::ENUM_FLAG | ColumnFlags::SET_FLAG);
    match column.column_type() {
        // MySQL 8 reports JSON columns with the binary character set; they are text.
        ColumnType::MYSQL_TYPE_JSON => match serde_json::from_slice::<Json>(&bytes) {
            Ok(document) => document,
            Err(_) => text_json(bytes),
        },
        ColumnType::MYSQL_TYPE_GEOMETRY => {
            let wkb = bytes.get(4..).filter(|_| bytes.len() > 4).unwrap_or(&bytes);
            Json::String(base64_encode(wkb))
        }
        ColumnType::MYSQL_TYPE_BIT | ColumnType::MYSQL_TYPE_VECTOR => {
            Json::String(base64_encode(&bytes))
        }
        ColumnType::MYSQL_TYPE_STRING
        | ColumnType::MYSQL_TYPE_VAR_STRING
        | ColumnType::MYSQL_TYPE_VARCHAR
        | ColumnType::MYSQL_TYPE_TINY_BLOB
        | ColumnType::MYSQL_TYPE_MEDIUM_BLOB
        | ColumnType::MYSQL_TYPE_LONG_BLOB
        | ColumnType::MYSQL_TYPE_BLOB
            if binary_charset =>
        {
            Json::String(base64_encode(&bytes))
        }
        _ => text_json(bytes),
    }
}

/// Text as a JSON string, or `{"base64": ...}` when it is not valid UTF-8.
fn text_json(bytes: Vec<u8>) -> Json {
    match String::from_utf8(bytes) {
        Ok(text) => Json::String(text),
        Err(e) => serde_json::json!({ "base64": base64_encode(e.as_bytes()) }),
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn is_small_integer(column_type: ColumnType) -> bool {
    matches!(
        column_type,
        ColumnType::MYSQL_TYPE_TINY
            | ColumnType::MYSQL_TYPE_SHORT
            | ColumnType::MYSQL_TYPE_INT24
            | ColumnType::MYSQL_TYPE_LONG
            | ColumnType::MYSQL_TYPE_YEAR
    )
}

/// An f32 widened through its shortest decimal form, so `0.1f32` becomes `0.1` and not
/// `0.10000000149011612`.
fn shortest_f32(f: f32) -> f64 {
    f.to_string().parse::<f64>().unwrap_or(f64::from(f))
}

fn float_json(d: f64) -> Json {
    match serde_json::Number::from_f64(d) {
        Some(n) => Json::Number(n),
        None if d.is_nan() => Json::String("NaN".into()),
        None if d > 0.0 => Json::String("Infinity".into()),
        None => Json::String("-Infinity".into()),
    }
}

/// `.ffffff` for a temporal value: the column's declared fractional digits (1..=6), or all six
/// whenever fewer would drop a non-zero digit (also for columns declared without fraction or
/// with an undetermined scale, e.g. 31 for expressions).
fn fraction(micros: u32, decimals: u8) -> String {
    let declared = match decimals {
        1..=6 => usize::from(decimals),
        _ => 0,
    };
    let digits = format!("{micros:06}");
    let needed = digits.trim_end_matches('0').len();
    let shown = if micros == 0 {
        declared
    } else if needed > declared {
        digits.len()
    } else {
        declared
    };
    match shown {
        0 => String::new(),
        n => format!(".{}", digits.get(..n).unwrap_or(&digits)),
    }
}

/// The type name reported for a result column: MySQL's own names, ` unsigned` where it
/// applies. Binary and text variants of the string types share wire types and are told apart
/// by the character set.
pub(super) fn type_name(column: &mysql_async::Column) -> String {
    let binary = column.character_set() == BINARY_CHARSET;
    let flags = column.flags();
    let unsigned = flags.contains(ColumnFlags::UNSIGNED_FLAG);
    let pick = |b: &'static str, t: &'static str| if binary { b } else { t };
    let base = match column.column_type() {
        ColumnType::MYSQL_TYPE_DECIMAL | ColumnType::MYSQL_TYPE_NEWDECIMAL => "decimal",
        ColumnType::MYSQL_TYPE_TINY => "tinyint",
        ColumnType::MYSQL_TYPE_SHORT => "smallint",
        ColumnType::MYSQL_TYPE_INT24 => "mediumint",
        ColumnType::MYSQL_TYPE_LONG => "int",
        ColumnType::MYSQL_TYPE_LONGLONG => "bigint",
        ColumnType::MYSQL_TYPE_FLOAT => "float",
        ColumnType::MYSQL_TYPE_DOUBLE => "double",
        ColumnType::MYSQL_TYPE_NULL => "null",
        ColumnType::MYSQL_TYPE_TIMESTAMP | ColumnType::MYSQL_TYPE_TIMESTAMP2 => "timestamp",
        ColumnType::MYSQL_TYPE_DATE | ColumnType::MYSQL_TYPE_NEWDATE => "date",
        ColumnType::MYSQL_TYPE_TIME | ColumnType::MYSQL_TYPE_TIME2 => "time",
        ColumnType::MYSQL_TYPE_DATETIME | ColumnType::MYSQL_TYPE_DATETIME2 => "datetime",
        ColumnType::MYSQL_TYPE_YEAR => "year",
        ColumnType::MYSQL_TYPE_BIT => "bit",
        ColumnType::MYSQL_TYPE_JSON => "json",
        ColumnType::MYSQL_TYPE_ENUM => "enum",
        ColumnType::MYSQL_TYPE_SET => "set",
        ColumnType::MYSQL_TYPE_GEOMETRY => "geometry",
        ColumnType::MYSQL_TYPE_VECTOR => "vector",
        ColumnType::MYSQL_TYPE_STRING if flags.contains(ColumnFlags::ENUM_FLAG) => "enum",
        ColumnType::MYSQL_TYPE_STRING if flags.contains(ColumnFlags::SET_FLAG) => "set",
        ColumnType::MYSQL_TYPE_STRING => pick("binary", "char"),
        ColumnType::MYSQL_TYPE_VAR_STRING | ColumnType::MYSQL_TYPE_VARCHAR => {
            pick("varbinary", "varchar")
        }
        ColumnType::MYSQL_TYPE_TINY_BLOB => pick("tinyblob", "tinytext"),
        ColumnType::MYSQL_TYPE_MEDIUM_BLOB => pick("mediumblob", "mediumtext"),
        ColumnType::MYSQL_TYPE_LONG_BLOB => pick("longblob", "longtext"),
        ColumnType::MYSQL_TYPE_BLOB => pick("blob", "text"),
        ColumnType::MYSQL_TYPE_TYPED_ARRAY | ColumnType::MYSQL_TYPE_UNKNOWN => "unknown",
    };
    let numeric = matches!(
        column.column_type(),
        ColumnType::MYSQL_TYPE_TINY
            | ColumnType::MYSQL_TYPE_SHORT
            | ColumnType::MYSQL_TYPE_INT24
            | ColumnType::MYSQL_TYPE_LONG
            | ColumnType::MYSQL_TYPE_LONGLONG
            | ColumnType::MYSQL_TYPE_DECIMAL
            | ColumnType::MYSQL_TYPE_NEWDECIMAL
            | ColumnType::MYSQL_TYPE_FLOAT
            | ColumnType::MYSQL_TYPE_DOUBLE
    );
    if unsigned && numeric {
        format!("{base} unsigned")
    } else {
        base.to_string()
    }
}

/// A text column of our own catalog queries (text protocol: every value arrives as bytes).
pub(super) fn text_value(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Bytes(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const UTF8MB4: u16 = 45;

    fn col(column_type: ColumnType) -> mysql_async::Column {
        mysql_async::Column::new(column_type).with_character_set(BINARY_CHARSET)
    }

    fn text_col(column_type: ColumnType) -> mysql_async::Column {
        mysql_async::Column::new(column_type).with_character_set(UTF8MB4)
    }

    fn json_of(value: Value, column: &mysql_async::Column) -> Json {
        value_to_json(value, column)
    }

    #[test]
    fn small_integers_are_numbers_bigints_are_strings() {
        use ColumnType::*;
        for t in [
            MYSQL_TYPE_TINY,
            MYSQL_TYPE_SHORT,
            MYSQL_TYPE_INT24,
            MYSQL_TYPE_LONG,
            MYSQL_TYPE_YEAR,
        ] {
            assert_eq!(json_of(Value::Int(-7), &col(t)), json!(-7), "{t:?}");
            assert_eq!(
                json_of(Value::UInt(4_294_967_295), &col(t)),
                json!(4_294_967_295u64)
            );
        }
        let bigint = col(MYSQL_TYPE_LONGLONG);
        assert_eq!(
            json_of(Value::Int(i64::MIN), &bigint),
            json!("-9223372036854775808")
        );
        let unsigned = col(MYSQL_TYPE_LONGLONG).with_flags(ColumnFlags::UNSIGNED_FLAG);
        assert_eq!(
            json_of(Value::UInt(u64::MAX), &unsigned),
            json!("18446744073709551615")
        );
        assert_eq!(json_of(Value::NULL, &bigint), Json::Null);
    }

    #[test]
    fn floats_keep_their_shortest_form_and_non_finite_become_strings() {
        let float = col(ColumnType::MYSQL_TYPE_FLOAT);
        assert_eq!(json_of(Value::Float(0.1), &float), json!(0.1));
        assert_eq!(json_of(Value::Float(f32::NAN), &float), json!("NaN"));
        let double = col(ColumnType::MYSQL_TYPE_DOUBLE);
        assert_eq!(json_of(Value::Double(1.5e300), &double), json!(1.5e300));
        assert_eq!(
            json_of(Value::Double(f64::INFINITY), &double),
            json!("Infinity")
        );
        assert_eq!(
            json_of(Value::Double(f64::NEG_INFINITY), &double),
            json!("-Infinity")
        );
    }

    #[test]
    fn decimals_are_exact_strings() {
        let decimal = col(ColumnType::MYSQL_TYPE_NEWDECIMAL);
        assert_eq!(
            json_of(
                Value::Bytes(b"12345678901234567890.0100".to_vec()),
                &decimal
            ),
            json!("12345678901234567890.0100")
        );
    }

    #[test]
    fn dates_and_datetimes() {
        let date = col(ColumnType::MYSQL_TYPE_DATE);
        assert_eq!(
            json_of(Value::Date(2024, 2, 29, 0, 0, 0, 0), &date),
            json!("2024-02-29")
        );
        assert_eq!(
            json_of(Value::Date(0, 0, 0, 0, 0, 0, 0), &date),
            json!("0000-00-00")
        );
        let datetime = col(ColumnType::MYSQL_TYPE_DATETIME);
        assert_eq!(
            json_of(Value::Date(2024, 2, 29, 13, 5, 9, 0), &datetime),
            json!("2024-02-29 13:05:09")
        );
        // Declared without fraction but carrying one: shown, never dropped.
        assert_eq!(
            json_of(Value::Date(2024, 2, 29, 13, 5, 9, 5), &datetime),
            json!("2024-02-29 13:05:09.000005")
        );
        let ms = col(ColumnType::MYSQL_TYPE_TIMESTAMP).with_decimals(3);
        assert_eq!(
            json_of(Value::Date(1999, 12, 31, 23, 59, 59, 120_000), &ms),
            json!("1999-12-31 23:59:59.120")
        );
        assert_eq!(
            json_of(Value::Date(1999, 12, 31, 23, 59, 59, 0), &ms),
            json!("1999-12-31 23:59:59.000")
        );
    }

    #[test]
    fn times_fold_days_into_hours() {
        let time = col(ColumnType::MYSQL_TYPE_TIME);
        assert_eq!(
            json_of(Value::Time(false, 0, 0, 0, 0, 0), &time),
            json!("00:00:00")
        );
        assert_eq!(
            json_of(Value::Time(true, 1, 2, 3, 4, 0), &time),
            json!("-26:03:04")
        );
        assert_eq!(
            json_of(Value::Time(false, 34, 22, 59, 59, 0), &time),
            json!("838:59:59")
        );
        let micro = col(ColumnType::MYSQL_TYPE_TIME).with_decimals(6);
        assert_eq!(
            json_of(Value::Time(true, 0, 1, 2, 3, 4), &micro),
            json!("-01:02:03.000004")
        );
    }

    #[test]
    fn fraction_rules() {
        assert_eq!(fraction(0, 0), "");
        assert_eq!(fraction(0, 31), "");
        assert_eq!(fraction(0, 2), ".00");
        assert_eq!(fraction(500_000, 1), ".5");
        assert_eq!(fraction(500_001, 1), ".500001");
        assert_eq!(fraction(123_456, 31), ".123456");
    }

    #[test]
    fn json_columns_are_parsed_with_fallbacks() {
        let json_col = col(ColumnType::MYSQL_TYPE_JSON);
        assert_eq!(
            json_of(Value::Bytes(br#"{"a":[1,2,null]}"#.to_vec()), &json_col),
            json!({"a": [1, 2, null]})
        );
        assert_eq!(
            json_of(Value::Bytes(b"not json".to_vec()), &json_col),
            json!("not json")
        );
        assert_eq!(
            json_of(Value::Bytes(vec![0xff, 0xfe]), &json_col),
            json!({"base64": "//4="})
        );
    }

    #[test]
    fn text_versus_binary_strings() {
        use ColumnType::*;
        let varchar = text_col(MYSQL_TYPE_VAR_STRING);
        assert_eq!(
            json_of(Value::Bytes("héllo".into()), &varchar),
            json!("héllo")
        );
        assert_eq!(
            json_of(Value::Bytes(vec![b'a', 0xc3]), &varchar),
            json!({"base64": "YcM="})
        );
        assert_eq!(json_of(Value::Bytes(b"".to_vec()), &varchar), json!(""));
        for t in [MYSQL_TYPE_VAR_STRING, MYSQL_TYPE_STRING, MYSQL_TYPE_BLOB] {
            assert_eq!(
                json_of(Value::Bytes(b"\x00\x01ab".to_vec()), &col(t)),
                json!("AAFhYg==")
            );
        }
        assert_eq!(
            json_of(Value::Bytes(b"long".to_vec()), &text_col(MYSQL_TYPE_BLOB)),
            json!("long")
        );
        let enum_col = text_col(MYSQL_TYPE_STRING).with_flags(ColumnFlags::ENUM_FLAG);
        assert_eq!(
            json_of(Value::Bytes(b"red".to_vec()), &enum_col),
            json!("red")
        );
        let set_col = col(MYSQL_TYPE_STRING).with_flags(ColumnFlags::SET_FLAG);
        assert_eq!(
            json_of(Value::Bytes(b"a,b".to_vec()), &set_col),
            json!("a,b")
        );
    }

    #[test]
    fn bits_and_geometry_are_base64() {
        assert_eq!(
            json_of(Value::Bytes(vec![1]), &col(ColumnType::MYSQL_TYPE_BIT)),
            json!("AQ==")
        );
        // SRID 4326 (little endian) followed by a WKB point.
        let mut value = 4326u32.to_le_bytes().to_vec();
        let wkb = [
            1u8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 240, 63, 0, 0, 0, 0, 0, 0, 0, 64,
        ];
        value.extend_from_slice(&wkb);
        assert_eq!(
            json_of(Value::Bytes(value), &col(ColumnType::MYSQL_TYPE_GEOMETRY)),
            json!(base64_encode(&wkb))
        );
    }

    #[test]
    fn type_names() {
        use ColumnType::*;
        let unsigned = ColumnFlags::UNSIGNED_FLAG;
        assert_eq!(type_name(&col(MYSQL_TYPE_LONG)), "int");
        assert_eq!(type_name(&col(MYSQL_TYPE_LONGLONG)), "bigint");
        assert_eq!(
            type_name(&col(MYSQL_TYPE_LONGLONG).with_flags(unsigned)),
            "bigint unsigned"
        );
        assert_eq!(type_name(&col(MYSQL_TYPE_NEWDECIMAL)), "decimal");
        assert_eq!(type_name(&text_col(MYSQL_TYPE_VAR_STRING)), "varchar");
        assert_eq!(type_name(&col(MYSQL_TYPE_VAR_STRING)), "varbinary");
        assert_eq!(type_name(&text_col(MYSQL_TYPE_BLOB)), "text");
        assert_eq!(type_name(&col(MYSQL_TYPE_BLOB)), "blob");
        assert_eq!(type_name(&col(MYSQL_TYPE_DATETIME)), "datetime");
        assert_eq!(type_name(&col(MYSQL_TYPE_JSON)), "json");
        let enum_col = text_col(MYSQL_TYPE_STRING).with_flags(ColumnFlags::ENUM_FLAG);
        assert_eq!(type_name(&enum_col), "enum");
        // UNSIGNED only qualifies numbers.
        assert_eq!(
            type_name(&col(MYSQL_TYPE_DATE).with_flags(unsigned)),
            "date"
        );
    }

    #[test]
    fn parameters_map_to_mysql_values() {
        assert_eq!(json_to_mysql(&json!(null)), Value::NULL);
        assert_eq!(json_to_mysql(&json!(true)), Value::Int(1));
        assert_eq!(json_to_mysql(&json!(false)), Value::Int(0));
        assert_eq!(json_to_mysql(&json!(-5)), Value::Int(-5));
        assert_eq!(json_to_mysql(&json!(u64::MAX)), Value::UInt(u64::MAX));
        assert_eq!(json_to_mysql(&json!(2.5)), Value::Double(2.5));
        assert_eq!(json_to_mysql(&json!("x'y")), Value::Bytes(b"x'y".to_vec()));
        assert_eq!(
            json_to_mysql(&json!({"a": [1]})),
            Value::Bytes(br#"{"a":[1]}"#.to_vec())
        );
    }
}
