//! How numbers in request bodies are read.
//!
//! The OpenAPI document declares counts and limits as `integer` (`int64`). JSON Schema counts
//! `10.0` as an integer, so a client (or a generated SDK, or a language whose numbers are
//! all floats) may send it; the server reads what the contract allows, and refuses, with
//! the field named, what it does not: a fraction, a negative, or more than `int64` holds.

use serde::{Deserialize, Deserializer};

/// Largest value an `int64` field holds.
const MAX: u64 = i64::MAX as u64;

/// An optional non-negative `int64` in a request body; see the module.
pub(crate) fn opt_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let value = match (n.as_u64(), n.as_f64()) {
        (Some(v), _) => Some(v),
        // `2^63` and up arrive as floats too; they fail the range check below.
        (None, Some(f)) if f.fract() == 0.0 && (0.0..9.3e18).contains(&f) => Some(f as u64),
        _ => None,
    };
    match value {
        Some(v) if v <= MAX => Ok(Some(v)),
        _ => Err(serde::de::Error::custom(format!(
            "expected a whole number from 0 to {MAX}, found {n}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    struct Body {
        #[serde(default, deserialize_with = "opt_count")]
        n: Option<u64>,
    }

    fn read(json: &str) -> Result<Option<u64>, String> {
        serde_json::from_str::<Body>(json)
            .map(|b| b.n)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn whole_numbers_in_range_are_read_and_the_rest_refused() {
        assert_eq!(read("{}"), Ok(None));
        assert_eq!(read(r#"{"n": null}"#), Ok(None));
        assert_eq!(read(r#"{"n": 10}"#), Ok(Some(10)));
        assert_eq!(read(r#"{"n": 10.0}"#), Ok(Some(10)));
        assert_eq!(read(r#"{"n": 1e3}"#), Ok(Some(1000)));
        assert_eq!(read(r#"{"n": 9223372036854775807}"#), Ok(Some(MAX)));
        for bad in [
            "10.5",
            "-1",
            "-1.0",
            "9223372036854775808",
            "1e30",
            "\"10\"",
        ] {
            let e = read(&format!(r#"{{"n": {bad}}}"#)).expect_err(bad);
            assert!(!e.is_empty(), "{bad}");
        }
    }
}
