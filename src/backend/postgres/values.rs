//! Results: every column value of a row, from the server's binary format to its JSON form
//! (see `docs/types.md`).
//!
//! What must stay true: every non-null value gets a JSON form, never an error or a silent
//! null. Known types are decoded here; a type (or a piece of a value: an array element, a
//! range bound, a composite field) the decoder does not know, or data it cannot parse, is
//! rendered by the server itself (`SELECT $1::text` with the raw bytes bound back, inside
//! the request's own transaction), or as `\x` + hex when the type has no binary input
//! function to make that round trip.

use std::collections::HashMap;
use std::fmt::Write as _;

use base64::Engine as _;
use bytes::BytesMut;
use serde_json::{Map, Number, Value};
use tokio_postgres::types::{FromSql, IsNull, Kind, ToSql, Type, to_sql_checked};
use tokio_postgres::{Statement, Transaction};

use super::{Failure, Job, Stage, failed, guard};

/// A column value as the server sent it (binary format), for every type.
struct RawValue<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for RawValue<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue(Some(raw)))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Binary bytes received from the server, sent back unchanged as a parameter of the same
/// type so the server's output function can render them.
#[derive(Debug)]
struct RawParam<'a>(&'a [u8]);

impl ToSql for RawParam<'_> {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// How to render a type the decoder does not know.
#[derive(Clone)]
enum Fallback {
    /// `SELECT $1::text` prepared with `$1` of that type.
    ServerText(Statement),
    /// The type has no binary input function (or is a pseudo-type): `\x` + hex.
    Hex,
}

/// Per-request state of the fallback path.
#[derive(Default)]
pub(super) struct FallbackTexts {
    statements: HashMap<u32, Fallback>,
    /// Server texts for the values of the row being decoded, by type OID and raw bytes.
    texts: HashMap<u32, HashMap<Vec<u8>, String>>,
}

pub(super) async fn decode_row(
    txn: &Transaction<'_>,
    job: &Job,
    row: &tokio_postgres::Row,
    fallback: &mut FallbackTexts,
) -> Result<Vec<Value>, Failure> {
    let during = failed(Stage::Streaming);
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let RawValue(raw) = row.try_get(i).map_err(&during)?;
        let Some(raw) = raw else {
            values.push(Value::Null);
            continue;
        };
        let ty = column.type_();
        let mut decoder = Decoder::new(&fallback.texts);
        let value = decoder.value(ty, raw);
        if decoder.missing.is_empty() {
            values.push(value);
            continue;
        }
        let missing = std::mem::take(&mut decoder.missing);
        for (missing_ty, bytes) in missing {
            let known = fallback
                .texts
                .get(&missing_ty.oid())
                .is_some_and(|texts| texts.contains_key(&bytes));
            if known {
                continue;
            }
            let text = server_text(txn, job, &mut fallback.statements, &missing_ty, &bytes).await?;
            fallback
                .texts
                .entry(missing_ty.oid())
                .or_default()
                .insert(bytes, text);
        }
        // Second pass: every unknown piece now has its server text.
        let mut decoder = Decoder::new(&fallback.texts);
        values.push(decoder.value(ty, raw));
    }
    fallback.texts.clear();
    Ok(values)
}

/// Whether every value of type `ty` is decoded without asking the server: the fallback
/// (`SELECT $1::text` on the same connection) cannot run while a streamed result is still
/// arriving, so only such columns may be streamed (see `run_streamed`). Must answer `true`
/// only for types [`Decoder::value`] decodes itself: the arms of [`simple_value`], and
/// containers of those. `record` is `false`: its field types are only known per value.
pub(super) fn decodes_natively(ty: &Type) -> bool {
    match ty.kind() {
        Kind::Domain(inner) | Kind::Array(inner) | Kind::Range(inner) | Kind::Multirange(inner) => {
            decodes_natively(inner)
        }
        Kind::Enum(_) => true,
        Kind::Composite(fields) => fields.iter().all(|f| decodes_natively(f.type_())),
        _ => {
            ty.name() == "citext"
                || matches!(
                    ty.oid(),
                    oid::BOOL
                        | oid::INT2
                        | oid::INT4
                        | oid::INT8
                        | oid::OID
                        | oid::XID
                        | oid::CID
                        | oid::XID8
                        | oid::FLOAT4
                        | oid::FLOAT8
                        | oid::NUMERIC
                        | oid::TEXT
                        | oid::VARCHAR
                        | oid::BPCHAR
                        | oid::NAME
                        | oid::UNKNOWN
                        | oid::XML
                        | oid::REFCURSOR
                        | oid::CHAR
                        | oid::BYTEA
                        | oid::UUID
                        | oid::JSON
                        | oid::JSONB
                        | oid::JSONPATH
                        | oid::DATE
                        | oid::TIME
                        | oid::TIMETZ
                        | oid::TIMESTAMP
                        | oid::TIMESTAMPTZ
                        | oid::INTERVAL
                        | oid::INET
                        | oid::CIDR
                        | oid::MACADDR
                        | oid::MACADDR8
                        | oid::MONEY
                        | oid::BIT
                        | oid::VARBIT
                        | oid::VOID
                        | oid::TID
                        | oid::PG_LSN
                )
        }
    }
}

/// Decodes a row whose column types all pass [`decodes_natively`]. A value the decoder
/// still cannot read (malformed data from the server) is an error, never a guess.
pub(super) fn decode_row_natively(row: &tokio_postgres::Row) -> Result<Vec<Value>, Failure> {
    let during = failed(Stage::Streaming);
    let no_texts = HashMap::new();
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let RawValue(raw) = row.try_get(i).map_err(&during)?;
        let Some(raw) = raw else {
            values.push(Value::Null);
            continue;
        };
        let mut decoder = Decoder::new(&no_texts);
        let value = decoder.value(column.type_(), raw);
        if !decoder.missing.is_empty() {
            return Err(Failure::error(super::BackendError::Internal(format!(
                "the server sent a value of type {} that Airlock cannot decode",
                column.type_().name()
            ))));
        }
        values.push(value);
    }
    Ok(values)
}

/// The server's text form of `raw`, a binary value of type `ty`.
async fn server_text(
    txn: &Transaction<'_>,
    job: &Job,
    statements: &mut HashMap<u32, Fallback>,
    ty: &Type,
    raw: &[u8],
) -> Result<String, Failure> {
    let during = failed(Stage::Streaming);
    let fallback = match statements.get(&ty.oid()) {
        Some(f) => f.clone(),
        None => {
            // A failing statement would abort the transaction (and the agent's portal), so
            // first make sure the round trip can work: a binary input function must exist.
            let usable: Option<bool> = guard(
                job,
                txn.query_opt(
                    "SELECT t.typreceive <> 0 AND t.typtype <> 'p' \
                       FROM pg_catalog.pg_type t WHERE t.oid = $1",
                    &[&ty.oid()],
                ),
            )
            .await?
            .map_err(&during)?
            .map(|row| row.try_get(0))
            .transpose()
            .map_err(&during)?;
            let f = if usable == Some(true) {
                let statement = guard(
                    job,
                    txn.prepare_typed("SELECT $1::text", std::slice::from_ref(ty)),
                )
                .await?
                .map_err(&during)?;
                Fallback::ServerText(statement)
            } else {
                tracing::warn!(
                    type_name = ty.name(),
                    oid = ty.oid(),
                    "type has no binary input function; rendering its values as hex"
                );
                Fallback::Hex
            };
            statements.insert(ty.oid(), f.clone());
            f
        }
    };
    match fallback {
        Fallback::Hex => Ok(format!("\\x{}", hex::encode(raw))),
        Fallback::ServerText(statement) => {
            let row = guard(job, txn.query_one(&statement, &[&RawParam(raw)]))
                .await?
                .map_err(&during)?;
            let text: Option<String> = row.try_get(0).map_err(&during)?;
            Ok(text.unwrap_or_default())
        }
    }
}

/// Well-known OIDs (stable across PostgreSQL versions).
pub(super) mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const TID: u32 = 27;
    pub const XID: u32 = 28;
    pub const CID: u32 = 29;
    pub const JSON: u32 = 114;
    pub const XML: u32 = 142;
    pub const BOX: u32 = 603;
    pub const CIDR: u32 = 650;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const UNKNOWN: u32 = 705;
    pub const MACADDR8: u32 = 774;
    pub const MONEY: u32 = 790;
    pub const MACADDR: u32 = 829;
    pub const INET: u32 = 869;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const TIMETZ: u32 = 1266;
    pub const BIT: u32 = 1560;
    pub const VARBIT: u32 = 1562;
    pub const NUMERIC: u32 = 1700;
    pub const REFCURSOR: u32 = 1790;
    pub const RECORD: u32 = 2249;
    pub const VOID: u32 = 2278;
    pub const UUID: u32 = 2950;
    pub const PG_LSN: u32 = 3220;
    pub const JSONB: u32 = 3802;
    pub const JSONPATH: u32 = 4072;
    pub const XID8: u32 = 5069;
}

/// Decodes binary values into JSON. A piece it cannot decode (unknown type, malformed data)
/// is looked up in `texts`, the server-rendered forms; when absent it is recorded in
/// `missing` and a placeholder is produced, so the caller resolves `missing` and decodes
/// again.
struct Decoder<'a> {
    texts: &'a HashMap<u32, HashMap<Vec<u8>, String>>,
    missing: Vec<(Type, Vec<u8>)>,
}

impl<'a> Decoder<'a> {
    fn new(texts: &'a HashMap<u32, HashMap<Vec<u8>, String>>) -> Self {
        Decoder {
            texts,
            missing: Vec::new(),
        }
    }

    fn value(&mut self, ty: &Type, raw: &[u8]) -> Value {
        let decoded = match ty.kind() {
            Kind::Domain(inner) => return self.value(inner, raw),
            Kind::Enum(_) => Some(Value::String(utf8(raw))),
            Kind::Array(element) => self.array(element, raw),
            Kind::Range(element) => self.range(element, raw).map(Value::String),
            Kind::Multirange(inner) => self.multirange(inner, raw).map(Value::String),
            Kind::Composite(fields) => self.composite(fields, raw),
            _ if ty.oid() == oid::RECORD => self.record(raw),
            _ => simple_value(ty, raw),
        };
        decoded.unwrap_or_else(|| self.fallback(ty, raw))
    }

    fn fallback(&mut self, ty: &Type, raw: &[u8]) -> Value {
        match self.texts.get(&ty.oid()).and_then(|m| m.get(raw)) {
            Some(text) => Value::String(text.clone()),
            None => {
                // Repeats are skipped when resolving, not here: a scan per element would be
                // quadratic for a large array of an unknown type.
                self.missing.push((ty.clone(), raw.to_vec()));
                Value::Null
            }
        }
    }

    /// Multi-dimensional arrays become nested JSON arrays; lower bounds are dropped.
    fn array(&mut self, element: &Type, raw: &[u8]) -> Option<Value> {
        let mut r = Reader(raw);
        let ndim = r.i32()?;
        let _has_nulls = r.i32()?;
        let _element_oid = r.u32()?;
        // PostgreSQL's MAXDIM.
        if !(0..=6).contains(&ndim) {
            return None;
        }
        if ndim == 0 {
            return r.is_empty().then(|| Value::Array(Vec::new()));
        }
        let mut dims = Vec::with_capacity(ndim as usize);
        let mut total: usize = 1;
        for _ in 0..ndim {
            let len = usize::try_from(r.i32()?).ok()?;
            let _lower_bound = r.i32()?;
            total = total.checked_mul(len)?;
            dims.push(len);
        }
        // Each element takes at least its 4-byte length: refuse counts the data cannot hold.
        if total > r.0.len() / 4 {
            return None;
        }
        let mut elements = Vec::with_capacity(total);
        for _ in 0..total {
            elements.push(match r.value()? {
                None => Value::Null,
                Some(bytes) => self.value(element, bytes),
            });
        }
        if !r.is_empty() {
            return None;
        }
        let mut elements = elements.into_iter();
        Some(nest(&dims, &mut elements))
    }

    /// PostgreSQL's text form: `empty`, `[1,10)`, `(,5]`, bounds quoted when needed.
    fn range(&mut self, element: &Type, raw: &[u8]) -> Option<String> {
        const EMPTY: u8 = 0x01;
        const LB_INC: u8 = 0x02;
        const UB_INC: u8 = 0x04;
        const LB_INF: u8 = 0x08;
        const UB_INF: u8 = 0x10;
        let mut r = Reader(raw);
        let flags = r.u8()?;
        if flags & EMPTY != 0 {
            return r.is_empty().then(|| "empty".to_string());
        }
        let mut out = String::new();
        out.push(if flags & LB_INC != 0 { '[' } else { '(' });
        if flags & LB_INF == 0 {
            let bytes = r.value()??;
            let text = self.bound_text(element, bytes);
            push_range_bound(&text, &mut out);
        }
        out.push(',');
        if flags & UB_INF == 0 {
            let bytes = r.value()??;
            let text = self.bound_text(element, bytes);
            push_range_bound(&text, &mut out);
        }
        out.push(if flags & UB_INC != 0 { ']' } else { ')' });
        r.is_empty().then_some(out)
    }

    fn bound_text(&mut self, element: &Type, raw: &[u8]) -> String {
        match self.value(element, raw) {
            Value::String(s) => s,
            // Only a placeholder: this row is decoded again once the text is known.
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }

    /// `{[1,3),[5,7)}` like PostgreSQL prints it.
    fn multirange(&mut self, inner: &Type, raw: &[u8]) -> Option<String> {
        // postgres-types gives the range's element type; accept the range type too.
        let element = match inner.kind() {
            Kind::Range(element) => element,
            _ => inner,
        };
        let mut r = Reader(raw);
        let count = r.i32()?;
        let mut out = String::from("{");
        for i in 0..count {
            let bytes = r.value()??;
            if i > 0 {
                out.push(',');
            }
            out.push_str(&self.range(element, bytes)?);
        }
        out.push('}');
        r.is_empty().then_some(out)
    }

    /// A named composite type: an object keyed by field name.
    fn composite(&mut self, fields: &[tokio_postgres::types::Field], raw: &[u8]) -> Option<Value> {
        let mut r = Reader(raw);
        let count = usize::try_from(r.i32()?).ok()?;
        if count != fields.len() {
            return None;
        }
        let mut object = Map::new();
        for field in fields {
            let _oid = r.u32()?;
            let value = match r.value()? {
                None => Value::Null,
                Some(bytes) => self.value(field.type_(), bytes),
            };
            object.insert(field.name().to_string(), value);
        }
        r.is_empty().then_some(Value::Object(object))
    }

    /// An anonymous record (`SELECT ROW(1, 'a')`): keys `f1`, `f2`, ... like `row_to_json`;
    /// field types come from the OIDs in the data. The server cannot read anonymous records
    /// back, so this is the only way to render them.
    fn record(&mut self, raw: &[u8]) -> Option<Value> {
        let mut r = Reader(raw);
        let count = r.i32()?;
        let mut object = Map::new();
        for i in 1..=count {
            let field_oid = r.u32()?;
            let value = match r.value()? {
                None => Value::Null,
                Some(bytes) => {
                    let ty = Type::from_oid(field_oid).unwrap_or_else(|| {
                        Type::new(
                            format!("oid:{field_oid}"),
                            field_oid,
                            Kind::Simple,
                            String::new(),
                        )
                    });
                    self.value(&ty, bytes)
                }
            };
            object.insert(format!("f{i}"), value);
        }
        r.is_empty().then_some(Value::Object(object))
    }
}

fn nest(dims: &[usize], elements: &mut impl Iterator<Item = Value>) -> Value {
    match dims {
        [] | [_] => Value::Array(elements.take(dims.first().copied().unwrap_or(0)).collect()),
        [len, rest @ ..] => Value::Array((0..*len).map(|_| nest(rest, elements)).collect()),
    }
}

/// PostgreSQL's `range_bound_escape`: quote empty or special-character bounds, doubling
/// `"` and `\` inside.
fn push_range_bound(text: &str, out: &mut String) {
    let quote = text.is_empty()
        || text.chars().any(|c| {
            matches!(c, '"' | '\\' | '(' | ')' | '[' | ']' | ',') || c.is_ascii_whitespace()
        });
    if quote {
        out.push('"');
    }
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push(c);
        }
        out.push(c);
    }
    if quote {
        out.push('"');
    }
}

/// A cursor over binary data; every read checks the length.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.array()?))
    }

    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.array()?))
    }

    /// A length-prefixed value: `Some(None)` is NULL (length -1).
    fn value(&mut self) -> Option<Option<&'a [u8]>> {
        let len = self.i32()?;
        if len < 0 {
            return (len == -1).then_some(None);
        }
        self.take(usize::try_from(len).ok()?).map(Some)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn utf8(raw: &[u8]) -> String {
    // The session's client_encoding is UTF8, so this is lossless in practice.
    String::from_utf8_lossy(raw).into_owned()
}

/// Types with a fixed binary layout; `None` sends the value to the fallback.
fn simple_value(ty: &Type, raw: &[u8]) -> Option<Value> {
    let exact = |n: usize| (raw.len() == n).then_some(raw);
    let value = match ty.oid() {
        oid::BOOL => Value::Bool(exact(1)?[0] != 0),
        oid::INT2 => Value::from(i16::from_be_bytes(exact(2)?.try_into().ok()?)),
        oid::INT4 => Value::from(i32::from_be_bytes(exact(4)?.try_into().ok()?)),
        // Beyond 2^53 a JSON number loses precision in most clients: int8 is a string.
        oid::INT8 => Value::String(i64::from_be_bytes(exact(8)?.try_into().ok()?).to_string()),
        oid::OID | oid::XID | oid::CID => {
            Value::from(u32::from_be_bytes(exact(4)?.try_into().ok()?))
        }
        oid::XID8 => Value::String(u64::from_be_bytes(exact(8)?.try_into().ok()?).to_string()),
        oid::FLOAT4 => {
            let f = f32::from_be_bytes(exact(4)?.try_into().ok()?);
            // Via the shortest f32 text, so 0.1f32 becomes 0.1 rather than 0.10000000149...
            float_value(f64::from(f), || f.to_string().parse().ok())
        }
        oid::FLOAT8 => {
            let f = f64::from_be_bytes(exact(8)?.try_into().ok()?);
            float_value(f, || Some(f))
        }
        oid::NUMERIC => Value::String(numeric_text(raw)?),
        oid::TEXT
        | oid::VARCHAR
        | oid::BPCHAR
        | oid::NAME
        | oid::UNKNOWN
        | oid::XML
        | oid::REFCURSOR => Value::String(utf8(raw)),
        oid::CHAR => Value::String(char_text(exact(1)?[0])),
        oid::BYTEA => Value::String(base64::engine::general_purpose::STANDARD.encode(raw)),
        oid::UUID => Value::String(uuid::Uuid::from_slice(raw).ok()?.hyphenated().to_string()),
        oid::JSON => json_value(raw),
        oid::JSONB => match raw.split_first() {
            Some((1, text)) => json_value(text),
            _ => return None,
        },
        oid::JSONPATH => match raw.split_first() {
            Some((1, text)) => Value::String(utf8(text)),
            _ => return None,
        },
        oid::DATE => Value::String(date_value(i32::from_be_bytes(exact(4)?.try_into().ok()?))),
        oid::TIME => Value::String(time_text(i64::from_be_bytes(exact(8)?.try_into().ok()?))?),
        oid::TIMETZ => {
            let mut r = Reader(exact(12)?);
            Value::String(timetz_text(r.i64()?, r.i32()?)?)
        }
        oid::TIMESTAMP => Value::String(timestamp_text(
            i64::from_be_bytes(exact(8)?.try_into().ok()?),
            false,
        )),
        oid::TIMESTAMPTZ => Value::String(timestamp_text(
            i64::from_be_bytes(exact(8)?.try_into().ok()?),
            true,
        )),
        oid::INTERVAL => {
            let mut r = Reader(exact(16)?);
            Value::String(interval_text(r.i64()?, r.i32()?, r.i32()?))
        }
        oid::INET | oid::CIDR => Value::String(inet_text(raw)?),
        oid::MACADDR => Value::String(mac_text(exact(6)?)),
        oid::MACADDR8 => Value::String(mac_text(exact(8)?)),
        oid::MONEY => Value::String(money_text(i64::from_be_bytes(exact(8)?.try_into().ok()?))),
        oid::BIT | oid::VARBIT => Value::String(bit_text(raw)?),
        // `void` (e.g. `SELECT pg_sleep(1)`) has an empty text form.
        oid::VOID => Value::String(String::new()),
        oid::TID => {
            let mut r = Reader(exact(6)?);
            Value::String(format!("({},{})", r.u32()?, r.u16()?))
        }
        oid::PG_LSN => {
            let lsn = u64::from_be_bytes(exact(8)?.try_into().ok()?);
            Value::String(format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF))
        }
        // Extension type with a text binary format, found by name since its OID varies.
        _ if ty.name() == "citext" => Value::String(utf8(raw)),
        _ => return None,
    };
    Some(value)
}

/// NaN and the infinities have no JSON number: they become PostgreSQL's spellings.
fn float_value(f: f64, finite: impl FnOnce() -> Option<f64>) -> Value {
    if f.is_nan() {
        Value::String("NaN".into())
    } else if f.is_infinite() {
        Value::String(if f > 0.0 { "Infinity" } else { "-Infinity" }.into())
    } else {
        finite()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(f.to_string()))
    }
}

fn json_value(text: &[u8]) -> Value {
    // serde_json refuses what PostgreSQL accepts in a few corners (numbers beyond f64):
    // the text itself is the honest answer then.
    serde_json::from_slice(text).unwrap_or_else(|_| Value::String(utf8(text)))
}

/// The internal one-byte `"char"` type, printed like PostgreSQL's `charout`.
fn char_text(byte: u8) -> String {
    match byte {
        0 => String::new(),
        b if b.is_ascii() => char::from(b).to_string(),
        b => format!("\\{b:03o}"),
    }
}

/// The exact decimal text of a binary `numeric`: base-10000 digits, `weight` the power of
/// 10000 of the first digit, `dscale` the number of decimal places shown.
fn numeric_text(raw: &[u8]) -> Option<String> {
    const POSITIVE: u16 = 0x0000;
    const NEGATIVE: u16 = 0x4000;
    const NAN: u16 = 0xC000;
    const PINF: u16 = 0xD000;
    const NINF: u16 = 0xF000;
    let mut r = Reader(raw);
    let ndigits = usize::try_from(r.i16()?).ok()?;
    let weight = i32::from(r.i16()?);
    let sign = r.u16()?;
    let dscale = usize::from(r.u16()?);
    match sign {
        NAN => return Some("NaN".into()),
        PINF => return Some("Infinity".into()),
        NINF => return Some("-Infinity".into()),
        POSITIVE | NEGATIVE => {}
        _ => return None,
    }
    let mut digits = Vec::with_capacity(ndigits);
    for _ in 0..ndigits {
        let d = r.u16()?;
        if d >= 10_000 {
            return None;
        }
        digits.push(d);
    }
    if !r.is_empty() {
        return None;
    }
    let digit = |i: i32| -> u16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut out = String::new();
    if sign == NEGATIVE {
        out.push('-');
    }
    let mut integer = String::new();
    for i in 0..=weight.max(-1) {
        let _ = write!(integer, "{:04}", digit(i));
    }
    let integer = integer.trim_start_matches('0');
    out.push_str(if integer.is_empty() { "0" } else { integer });
    if dscale > 0 {
        out.push('.');
        let mut fraction = String::with_capacity(dscale + 4);
        let mut i = weight + 1;
        while fraction.len() < dscale {
            let _ = write!(fraction, "{:04}", digit(i));
            i += 1;
        }
        out.push_str(&fraction[..dscale]);
    }
    Some(out)
}

const USECS_PER_SEC: i64 = 1_000_000;
const USECS_PER_MINUTE: i64 = 60 * USECS_PER_SEC;
const USECS_PER_HOUR: i64 = 60 * USECS_PER_MINUTE;
const USECS_PER_DAY: i64 = 24 * USECS_PER_HOUR;
/// Days from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_DAYS: i64 = 10_957;

/// `.ffffff` without trailing zeros, or nothing for a whole second.
fn fraction_text(micros: u64) -> String {
    if micros == 0 {
        return String::new();
    }
    let mut s = format!(".{micros:06}");
    while s.ends_with('0') {
        s.pop();
    }
    s
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01, for any i64
/// range PostgreSQL can store (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// ISO-8601 date; years outside 0000..=9999 carry a sign (year 0 is 1 BC).
fn date_text(days_since_2000: i64) -> String {
    let (year, month, day) = civil_from_days(days_since_2000 + PG_EPOCH_DAYS);
    if (0..=9999).contains(&year) {
        format!("{year:04}-{month:02}-{day:02}")
    } else if year < 0 {
        format!("-{:04}-{month:02}-{day:02}", year.unsigned_abs())
    } else {
        format!("+{year}-{month:02}-{day:02}")
    }
}

fn date_value(days: i32) -> String {
    match days {
        i32::MAX => "infinity".into(),
        i32::MIN => "-infinity".into(),
        d => date_text(i64::from(d)),
    }
}

/// `HH:MM:SS[.ffffff]`; `24:00:00` is a valid `time`.
fn time_text(micros: i64) -> Option<String> {
    if !(0..=USECS_PER_DAY).contains(&micros) {
        return None;
    }
    Some(clock_text(micros))
}

fn clock_text(micros: i64) -> String {
    let hours = micros / USECS_PER_HOUR;
    let minutes = micros % USECS_PER_HOUR / USECS_PER_MINUTE;
    let seconds = micros % USECS_PER_MINUTE / USECS_PER_SEC;
    let fraction = (micros % USECS_PER_SEC).unsigned_abs();
    format!(
        "{hours:02}:{minutes:02}:{seconds:02}{}",
        fraction_text(fraction)
    )
}

/// `HH:MM:SS[.ffffff]±HH:MM[:SS]`. PostgreSQL stores the zone as seconds *west* of UTC.
fn timetz_text(micros: i64, zone_west: i32) -> Option<String> {
    let mut out = time_text(micros)?;
    let east = -i64::from(zone_west);
    let abs = east.unsigned_abs();
    let _ = write!(
        out,
        "{}{:02}:{:02}",
        if east < 0 { '-' } else { '+' },
        abs / 3600,
        abs / 60 % 60
    );
    if abs % 60 != 0 {
        let _ = write!(out, ":{:02}", abs % 60);
    }
    Some(out)
}

/// `YYYY-MM-DDTHH:MM:SS[.ffffff]`, with `Z` for timestamptz (stored as UTC).
fn timestamp_text(micros: i64, utc: bool) -> String {
    match micros {
        i64::MAX => "infinity".into(),
        i64::MIN => "-infinity".into(),
        m => format!(
            "{}T{}{}",
            date_text(m.div_euclid(USECS_PER_DAY)),
            clock_text(m.rem_euclid(USECS_PER_DAY)),
            if utc { "Z" } else { "" }
        ),
    }
}

/// PostgreSQL's default `IntervalStyle = postgres` output (`EncodeInterval`), e.g.
/// `1 year 2 mons 3 days 04:05:06.5`, `-1 days +02:00:00`, `00:00:00`.
fn interval_text(micros: i64, days: i32, months: i32) -> String {
    // PostgreSQL 17 infinite intervals.
    if months == i32::MAX && days == i32::MAX && micros == i64::MAX {
        return "infinity".into();
    }
    if months == i32::MIN && days == i32::MIN && micros == i64::MIN {
        return "-infinity".into();
    }
    let mut out = String::new();
    let mut is_zero = true;
    let mut is_before = false;
    let mut part = |value: i64, unit: &str, out: &mut String| {
        if value == 0 {
            return;
        }
        let _ = write!(
            out,
            "{}{}{value} {unit}{}",
            if is_zero { "" } else { " " },
            if is_before && value > 0 { "+" } else { "" },
            if value == 1 { "" } else { "s" }
        );
        // Each non-zero field decides whether the next positive one gets a '+'.
        is_before = value < 0;
        is_zero = false;
    };
    part(i64::from(months / 12), "year", &mut out);
    part(i64::from(months % 12), "mon", &mut out);
    part(i64::from(days), "day", &mut out);
    if is_zero || micros != 0 {
        // Truncating division keeps every clock field's sign equal to `micros`' sign.
        let hours = (micros / USECS_PER_HOUR).unsigned_abs();
        let minutes = (micros % USECS_PER_HOUR / USECS_PER_MINUTE).unsigned_abs();
        let seconds = (micros % USECS_PER_MINUTE / USECS_PER_SEC).unsigned_abs();
        let fraction = (micros % USECS_PER_SEC).unsigned_abs();
        let sign = if micros < 0 {
            "-"
        } else if is_before {
            "+"
        } else {
            ""
        };
        let _ = write!(
            out,
            "{}{sign}{hours:02}:{minutes:02}:{seconds:02}{}",
            if is_zero { "" } else { " " },
            fraction_text(fraction)
        );
    }
    out
}

/// inet/cidr like PostgreSQL prints them: the prefix length is shown for cidr always and
/// for inet only when it is not the full address length.
fn inet_text(raw: &[u8]) -> Option<String> {
    const PGSQL_AF_INET: u8 = 2;
    const PGSQL_AF_INET6: u8 = 3;
    let [family, bits, is_cidr, len, address @ ..] = raw else {
        return None;
    };
    if usize::from(*len) != address.len() {
        return None;
    }
    let (mut out, max_bits) = match (*family, address.len()) {
        (PGSQL_AF_INET, 4) => (
            format!(
                "{}.{}.{}.{}",
                address[0], address[1], address[2], address[3]
            ),
            32,
        ),
        (PGSQL_AF_INET6, 16) => (ipv6_text(address.try_into().ok()?), 128),
        _ => return None,
    };
    if *bits > max_bits {
        return None;
    }
    if *is_cidr != 0 || *bits != max_bits {
        let _ = write!(out, "/{bits}");
    }
    Some(out)
}

/// PostgreSQL's `inet_net_ntop_ipv6`: the longest (first on ties) run of two or more zero
/// groups becomes `::`; `::a.b.c.d` and `::ffff:a.b.c.d` keep the dotted IPv4 tail.
fn ipv6_text(address: &[u8; 16]) -> String {
    let mut words = [0u16; 8];
    for (i, word) in words.iter_mut().enumerate() {
        *word = u16::from_be_bytes([address[2 * i], address[2 * i + 1]]);
    }
    let mut best: Option<(usize, usize)> = None;
    let mut current: Option<(usize, usize)> = None;
    for (i, word) in words.iter().enumerate() {
        if *word == 0 {
            current = Some(match current {
                Some((base, len)) => (base, len + 1),
                None => (i, 1),
            });
        } else if let Some(run) = current.take()
            && best.is_none_or(|b| run.1 > b.1)
        {
            best = Some(run);
        }
    }
    if let Some(run) = current
        && best.is_none_or(|b| run.1 > b.1)
    {
        best = Some(run);
    }
    let best = best.filter(|(_, len)| *len >= 2);
    let mut out = String::new();
    let mut i = 0;
    while i < 8 {
        if let Some((base, len)) = best
            && (base..base + len).contains(&i)
        {
            if i == base {
                out.push(':');
            }
            i += 1;
            continue;
        }
        if i != 0 {
            out.push(':');
        }
        let embedded_ipv4 = i == 6
            && best.is_some_and(|(base, len)| {
                base == 0 && (len == 6 || (len == 5 && words[5] == 0xffff))
            });
        if embedded_ipv4 {
            let _ = write!(
                out,
                "{}.{}.{}.{}",
                address[12], address[13], address[14], address[15]
            );
            return out;
        }
        let _ = write!(out, "{:x}", words[i]);
        i += 1;
    }
    if best.is_some_and(|(base, len)| base + len == 8) {
        out.push(':');
    }
    out
}

fn mac_text(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Cents with two decimals (the `C`-locale rendering, without currency symbol or grouping).
fn money_text(cents: i64) -> String {
    let abs = cents.unsigned_abs();
    format!(
        "{}{}.{:02}",
        if cents < 0 { "-" } else { "" },
        abs / 100,
        abs % 100
    )
}

fn bit_text(raw: &[u8]) -> Option<String> {
    let mut r = Reader(raw);
    let len = usize::try_from(r.i32()?).ok()?;
    let bytes = r.0;
    if bytes.len() != len.div_ceil(8) {
        return None;
    }
    Some(
        (0..len)
            .map(|i| {
                if bytes[i / 8] & (0x80 >> (i % 8)) != 0 {
                    '1'
                } else {
                    '0'
                }
            })
            .collect(),
    )
}

#[cfg(test)]
#[path = "values_tests.rs"]
mod tests;
