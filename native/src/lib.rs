//! obsflow's compiled decoder: a batch of raw JSON wire records straight into Arrow
//! buffers, with a verdict per record (a row, or deferred to the Python reference codec,
//! which then gives the row or the dead letter's reason and detail). Never a whole-batch
//! failure: every problem is one record's deferral.
//!
//! The buffers reach pyarrow without copies through the Arrow C data interface (src/cdata.rs
//! builds the `ArrowArray` structs that own them; src/py.rs wraps them in the capsules of the
//! Arrow PyCapsule interface; see docs/decoder.md). The decoders here are pure Rust,
//! callable without Python (the fuzz targets in native/fuzz do).

use std::borrow::Cow;

pub mod avro;
pub mod cdata;
pub mod digest;
mod direct;
pub mod json;
pub mod metrics;
pub mod otlp;
pub mod otlp_json;
pub mod otlp_json_proto;
#[cfg(feature = "python")]
pub mod pseudonym;
#[cfg(feature = "python")]
mod py;
#[cfg(feature = "python")]
pub mod scrub;
use json::{float_of, int_of, map_text, parse_ts_ns, Defer, Parser, J, R};

/// A wire type, as schemas/codecs/native_json.py describes it.
#[derive(Debug, Clone)]
pub enum Ty {
    Str,
    I32,
    I64,
    F64,
    Bool,
    /// timestamp from an ISO-8601 string; the divisor from nanoseconds (ms: 1e6, us: 1e3)
    Ts(i64),
    List(Box<Ty>),
    Struct(Vec<(String, Ty)>),
    Map,
}

/// A validity bitmap being built.
#[derive(Default)]
pub struct Bits {
    bytes: Vec<u8>,
    len: usize,
    nulls: usize,
}

impl Bits {
    #[inline]
    fn push(&mut self, valid: bool) {
        if self.len % 8 == 0 {
            self.bytes.push(0);
        }
        if valid {
            self.bytes[self.len / 8] |= 1 << (self.len % 8);
        } else {
            self.nulls += 1;
        }
        self.len += 1;
    }
}

/// A column being built; `append` is only called with values `check` accepted.
pub enum Col {
    Str { valid: Bits, offsets: Vec<i32>, data: Vec<u8> },
    Prim { valid: Bits, data: Vec<u8> },
    Bool { valid: Bits, values: Bits },
    List { valid: Bits, offsets: Vec<i32>, child: Box<Col> },
    Struct { valid: Bits, children: Vec<Col> },
    Map { valid: Bits, offsets: Vec<i32>, keys: Box<Col>, values: Box<Col> },
}

impl Col {
    /// The column's length after checking that it is a valid Arrow array: bitmaps as long as
    /// the column, offsets starting at 0, non-decreasing and ending at the data's (or
    /// child's) length, string data UTF-8 between offsets, children as long as their
    /// parent says. `Err` names what is wrong (the fuzz targets assert `Ok`).
    pub fn validate(&self) -> Result<usize, String> {
        fn bits(b: &Bits, n: usize, what: &str) -> Result<(), String> {
            if b.len != n || b.bytes.len() != n.div_ceil(8) || b.nulls > n {
                return Err(format!("{what}: bitmap of {} bits ({} bytes, {} nulls) for {n} values", b.len, b.bytes.len(), b.nulls));
            }
            Ok(())
        }
        fn offsets(o: &[i32], n: usize, end: usize, what: &str) -> Result<(), String> {
            if o.len() != n + 1 || o[0] != 0 || o.windows(2).any(|w| w[0] > w[1]) || *o.last().unwrap() as usize != end {
                return Err(format!("{what}: {} offsets for {n} values, ending at {:?} for {end}", o.len(), o.last()));
            }
            Ok(())
        }
        match self {
            Col::Str { valid, offsets: o, data } => {
                let n = valid.len;
                bits(valid, n, "string")?;
                offsets(o, n, data.len(), "string")?;
                for w in o.windows(2) {
                    std::str::from_utf8(&data[w[0] as usize..w[1] as usize]).map_err(|e| format!("string: {e}"))?;
                }
                Ok(n)
            }
            Col::Prim { valid, data } => {
                bits(valid, valid.len, "primitive")?;
                if data.len() != valid.len * 8 && data.len() != valid.len * 4 {
                    return Err(format!("primitive: {} bytes for {} values", data.len(), valid.len));
                }
                Ok(valid.len)
            }
            Col::Bool { valid, values } => {
                bits(valid, valid.len, "bool")?;
                bits(values, valid.len, "bool values")?;
                Ok(valid.len)
            }
            Col::List { valid, offsets: o, child } => {
                bits(valid, valid.len, "list")?;
                offsets(o, valid.len, child.validate()?, "list")?;
                Ok(valid.len)
            }
            Col::Struct { valid, children } => {
                bits(valid, valid.len, "struct")?;
                for c in children {
                    if c.validate()? != valid.len {
                        return Err("struct: a child's length differs".into());
                    }
                }
                Ok(valid.len)
            }
            Col::Map { valid, offsets: o, keys, values } => {
                bits(valid, valid.len, "map")?;
                let n = keys.validate()?;
                if values.validate()? != n {
                    return Err("map: keys and values differ in length".into());
                }
                if let Col::Str { valid: kv, .. } = &**keys {
                    if kv.nulls != 0 {
                        return Err("map: a null key".into());
                    }
                }
                offsets(o, valid.len, n, "map")?;
                Ok(valid.len)
            }
        }
    }
}

fn new_str() -> Col {
    Col::Str { valid: Bits::default(), offsets: vec![0], data: Vec::new() }
}

pub fn new_col(t: &Ty) -> Col {
    match t {
        Ty::Str => new_str(),
        Ty::I32 | Ty::I64 | Ty::F64 | Ty::Ts(_) => Col::Prim { valid: Bits::default(), data: Vec::new() },
        Ty::Bool => Col::Bool { valid: Bits::default(), values: Bits::default() },
        Ty::List(inner) => Col::List { valid: Bits::default(), offsets: vec![0], child: Box::new(new_col(inner)) },
        Ty::Struct(fields) => Col::Struct { valid: Bits::default(), children: fields.iter().map(|(_, t)| new_col(t)).collect() },
        Ty::Map => Col::Map { valid: Bits::default(), offsets: vec![0], keys: Box::new(new_str()), values: Box::new(new_str()) },
    }
}

/// Whether `v` converts to `t` exactly as the reference converts it (else defer).
fn check(v: &J<'_>, t: &Ty) -> R<()> {
    match (v, t) {
        (J::Null, _) => Ok(()),
        (J::Str(_), Ty::Str) => Ok(()),
        (J::Str(s), Ty::Ts(_)) => parse_ts_ns(s).map(|_| ()),
        (J::Num(n, true), Ty::I32) => {
            let i = int_of(n)?;
            if i32::try_from(i).is_ok() {
                Ok(())
            } else {
                Err(Defer)
            }
        }
        (J::Num(n, true), Ty::I64) => int_of(n).map(|_| ()),
        (J::Num(n, is_int), Ty::F64) => float_of(n, *is_int).map(|_| ()),
        (J::Bool(_), Ty::Bool) => Ok(()),
        (J::Arr(items), Ty::List(inner)) => {
            for item in items {
                if matches!(item, J::Null) {
                    return Err(Defer);
                }
                check(item, inner)?;
            }
            Ok(())
        }
        (J::Obj(entries), Ty::Struct(fields)) => {
            let mut seen = 0u64;
            for (k, item) in entries {
                if let Some(f) = fields.iter().position(|(name, _)| name == k.as_ref()) {
                    if f >= 64 || seen & (1 << f) != 0 {
                        return Err(Defer);
                    }
                    seen |= 1 << f;
                    check(item, &fields[f].1)?;
                }
            }
            Ok(())
        }
        (J::Obj(entries), Ty::Map) => {
            for (n, (k, item)) in entries.iter().enumerate() {
                map_text(item)?;
                if entries[..n].iter().any(|(other, _)| other == k) {
                    return Err(Defer);
                }
            }
            Ok(())
        }
        _ => Err(Defer),
    }
}

fn push_str(col: &mut Col, s: Option<&str>) {
    if let Col::Str { valid, offsets, data } = col {
        valid.push(s.is_some());
        if let Some(s) = s {
            data.extend_from_slice(s.as_bytes());
        }
        offsets.push(data.len() as i32);
    }
}

/// Append a value `check` accepted (or None: null).
fn append(col: &mut Col, v: Option<&J<'_>>, t: &Ty) {
    let v = match v {
        Some(J::Null) => None,
        other => other,
    };
    match (col, t) {
        (col @ Col::Str { .. }, _) => push_str(col, v.map(|j| if let J::Str(s) = j { s.as_ref() } else { "" })),
        (Col::Prim { valid, data }, t) => {
            valid.push(v.is_some());
            match t {
                Ty::I32 => {
                    let x = match v {
                        Some(J::Num(n, _)) => int_of(n).unwrap_or(0) as i32,
                        _ => 0,
                    };
                    data.extend_from_slice(&x.to_le_bytes());
                }
                Ty::I64 => {
                    let x = match v {
                        Some(J::Num(n, _)) => int_of(n).unwrap_or(0),
                        _ => 0,
                    };
                    data.extend_from_slice(&x.to_le_bytes());
                }
                Ty::F64 => {
                    let x = match v {
                        Some(J::Num(n, is_int)) => float_of(n, *is_int).unwrap_or(0.0),
                        _ => 0.0,
                    };
                    data.extend_from_slice(&x.to_le_bytes());
                }
                Ty::Ts(div) => {
                    let x = match v {
                        Some(J::Str(s)) => parse_ts_ns(s).unwrap_or(0) / div,
                        _ => 0,
                    };
                    data.extend_from_slice(&x.to_le_bytes());
                }
                _ => unreachable!("primitive column of a non-primitive type"),
            }
        }
        (Col::Bool { valid, values }, _) => {
            valid.push(v.is_some());
            values.push(matches!(v, Some(J::Bool(true))));
        }
        (Col::List { valid, offsets, child }, Ty::List(inner)) => {
            valid.push(v.is_some());
            let mut n = 0;
            if let Some(J::Arr(items)) = v {
                for item in items {
                    append(child, Some(item), inner);
                }
                n = items.len() as i32;
            }
            let last = *offsets.last().unwrap();
            offsets.push(last + n);
        }
        (Col::Struct { valid, children }, Ty::Struct(fields)) => {
            valid.push(v.is_some());
            let entries: &[(Cow<'_, str>, J<'_>)] = match v {
                Some(J::Obj(e)) => e,
                _ => &[],
            };
            for ((name, ft), child) in fields.iter().zip(children.iter_mut()) {
                let found = entries.iter().find(|(k, _)| k == name).map(|(_, j)| j);
                append(child, found, ft);
            }
        }
        (Col::Map { valid, offsets, keys, values }, _) => {
            valid.push(v.is_some());
            let mut n = 0;
            if let Some(J::Obj(entries)) = v {
                for (k, item) in entries {
                    push_str(keys, Some(k));
                    let text = map_text(item).unwrap_or(None);
                    push_str(values, text.as_deref());
                }
                n = entries.len() as i32;
            }
            let last = *offsets.last().unwrap();
            offsets.push(last + n);
        }
        _ => unreachable!("column and type out of step"),
    }
}

/// What the reader makes of one record.
enum Rec {
    /// A row: the record's values are in the slots.
    Row,
    /// The reference's dead letter for it: reason and detail, exactly as the reference gives them.
    Reject(&'static str, String),
    /// Left to the reference.
    Defer,
}

/// The wire field named `k`: `hint` first (records come in a stable key order), else a scan.
#[inline]
fn field_of(fields: &[(String, Ty)], k: &str, hint: usize) -> Option<usize> {
    if let Some((name, _)) = fields.get(hint) {
        if name == k {
            return Some(hint);
        }
    }
    fields.iter().position(|(name, _)| name == k)
}

/// One record read into `slots` (its top-level values by field position).
///
/// A row when every value converts exactly as the reference converts it. Otherwise a
/// reject only where the reference's verdict is certain (see [`json_reject`]), else a
/// deferral. The record has been checked to be a sized, UTF-8 payload.
fn record<'a>(text: &'a str, fields: &[(String, Ty)], slots: &mut Vec<Option<J<'a>>>) -> Rec {
    let b = text.as_bytes();
    slots.clear();
    slots.resize_with(fields.len(), || None);
    // the reference re-serializes records that do not start with "{" and end with "}"
    let framed = b.first() == Some(&b'{') && b.last() == Some(&b'}');
    if !framed {
        return not_framed(text);
    }
    let mut p = Parser::new(text);
    // the first top-level value that does not convert here, or a duplicate field: the
    // reference's typed decode may stop there, so a later syntax error is not judged here
    let mut unsure = false;
    let mut twice = false;
    let mut hint = 0;
    p.i = 1;
    let mut first = true;
    loop {
        p.ws();
        match p.peek() {
            None => return Rec::Defer,
            Some(b'}') if first => {
                p.i += 1;
                break;
            }
            Some(b',') if !first => {
                p.i += 1;
                p.ws();
                match p.peek() {
                    None => return Rec::Defer,
                    Some(b'"') => {}
                    Some(b'}') => return syntax(text, unsure, "trailing comma in object", p.i),
                    _ => return syntax(text, unsure, "object keys must be strings", p.i),
                }
            }
            Some(b'"') if first => {}
            _ if first => return syntax(text, unsure, "object keys must be strings", p.i),
            _ => return syntax(text, unsure, "expected ',' or '}'", p.i),
        }
        first = false;
        let Ok(k) = p.string() else { return Rec::Defer };
        p.ws();
        if p.peek().is_none() {
            return Rec::Defer;
        }
        if p.peek() != Some(b':') {
            return syntax(text, unsure, "expected ':'", p.i);
        }
        p.i += 1;
        p.ws();
        let Ok(v) = p.value() else { return Rec::Defer };
        if let Some(f) = field_of(fields, &k, hint) {
            hint = f + 1;
            if slots[f].is_some() {
                unsure = true; // a field given twice
                twice = true;
            } else if check(&v, &fields[f].1).is_err() {
                unsure = true;
            }
            slots[f] = Some(v);
        }
        p.ws();
        if p.peek() == Some(b'}') {
            p.i += 1;
            break;
        }
    }
    if !p.at_end() || p.wide_number {
        return Rec::Defer;
    }
    if !unsure {
        return Rec::Row;
    }
    if twice {
        return Rec::Defer; // the reference's typed decode and its type walk may see different values
    }
    json_reject(text, fields, slots)
}

/// The reference's verdict on a framed record that is not JSON: msgspec's error text when
/// the reference's typed msgspec decode is certain to stop there with it (the bytes before
/// `at` are JSON this reader accepted, every value before it converts, no field was given
/// twice, and nothing sends the record down another path of the reference: a newline, a
/// carriage return, `NaN` or `Inf` anywhere).
fn syntax(text: &str, unsure: bool, what: &str, at: usize) -> Rec {
    if unsure || other_path(text.as_bytes()) {
        return Rec::Defer;
    }
    Rec::Reject("format_violation", format!("invalid JSON: JSON is malformed: {what} (byte {at})"))
}

/// Whether the reference screens this record on a path of its own (re-serializing it, or
/// judging it with msgspec's untyped decoder).
fn other_path(b: &[u8]) -> bool {
    b.iter().any(|&c| c == b'\n' || c == b'\r') || has(b, b"NaN") || has(b, b"Inf")
}

fn has(b: &[u8], needle: &[u8]) -> bool {
    b.windows(needle.len()).any(|w| w == needle)
}

/// A record that does not both start with `{` and end with `}`: the reference judges it
/// with msgspec's untyped decode of its trimmed body; the one verdict given here is a body
/// that starts with `{` (no leading blank), does not end with `}`, and runs out where this
/// reader was still reading JSON it accepted: "Input data was truncated".
fn not_framed(text: &str) -> Rec {
    let body = text.trim_end_matches([' ', '\t', '\r', '\n']);
    if !body.starts_with('{') || body.ends_with('}') {
        return Rec::Defer;
    }
    let mut p = Parser::new(body);
    match p.value() {
        Err(Defer) if p.eof && !p.wide_number => Rec::Reject("format_violation", "invalid JSON: Input data was truncated".into()),
        _ => Rec::Defer,
    }
}

/// The reference's verdict on a record that is JSON (every number in it plain) with a value
/// that does not convert: its first type error in wire-field order ("page: expected a
/// string, got number 12345"), else its first timestamp field that is not an ISO-8601
/// timestamp with a zone by the reference's regex. Anything else defers.
fn json_reject(text: &str, fields: &[(String, Ty)], slots: &[Option<J<'_>>]) -> Rec {
    if other_path(text.as_bytes()) {
        return Rec::Defer;
    }
    for ((name, t), v) in fields.iter().zip(slots) {
        match type_problem(v.as_ref(), t, name) {
            Err(Defer) => return Rec::Defer,
            Ok(Some(detail)) => return Rec::Reject("schema_violation", detail),
            Ok(None) => {}
        }
    }
    // no type error: the reference parses the record and converts its timestamps, field by
    // field; judged here only when every value but timestamps converts
    let mut first_bad: Option<String> = None;
    for ((name, t), v) in fields.iter().zip(slots) {
        let Some(v) = v else { continue };
        if check(v, t).is_ok() {
            continue;
        }
        match (v, t) {
            (J::Str(s), Ty::Ts(_)) if first_bad.is_none() => {
                if iso_ts(s) {
                    return Rec::Defer; // the regex passes but the date does not: the reference's slow path
                }
                first_bad = Some(format!("{name}: not an ISO-8601 timestamp with a zone"));
            }
            (J::Str(_), Ty::Ts(_)) => {}
            _ => return Rec::Defer,
        }
    }
    match first_bad {
        Some(detail) => Rec::Reject("schema_violation", detail),
        None => Rec::Defer,
    }
}

/// Whether `s` matches the reference's `ISO_TS` regex (RE2: `\d` is an ASCII digit, `$`
/// the end of the text): `^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})$`.
fn iso_ts(s: &str) -> bool {
    let b = s.as_bytes();
    let d = |r: std::ops::Range<usize>| b.get(r).is_some_and(|x| x.iter().all(u8::is_ascii_digit));
    if b.len() < 20 || !d(0..4) || b[4] != b'-' || !d(5..7) || b[7] != b'-' || !d(8..10) || !matches!(b[10], b'T' | b' ') {
        return false;
    }
    if !d(11..13) || b[13] != b':' || !d(14..16) || b[16] != b':' || !d(17..19) {
        return false;
    }
    let mut i = 19;
    if b[i] == b'.' {
        let n = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        // RE2 backtracks into the fraction: the zone may begin with its last digits only if
        // a sign or Z follows them, which a digit run cannot hold; so the run is the fraction
        if n > 9 {
            return false;
        }
        i += 1 + n;
    }
    match &b[i..] {
        [b'Z'] => true,
        [b'+' | b'-', rest @ ..] => match rest {
            [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
            _ => false,
        },
        _ => false,
    }
}

/// What the reference's `_expected` calls a wire type.
fn expected(t: &Ty) -> &'static str {
    match t {
        Ty::Ts(_) => "an ISO-8601 timestamp string with a zone",
        Ty::Str => "a string",
        Ty::I32 | Ty::I64 => "an integer",
        Ty::F64 => "a number",
        Ty::Bool => "a boolean",
        Ty::List(_) => "an array",
        Ty::Struct(_) | Ty::Map => "an object",
    }
}

/// A value's kind as the reference names it (`_py_kind`; the detail never shows the value
/// itself), for the values this reader judges: integers of 64 bits, booleans, strings.
/// Else defer.
fn shown(v: &J<'_>) -> R<String> {
    match v {
        J::Bool(_) => Ok("boolean".to_string()),
        J::Num(n, true) => {
            int_of(n)?;
            Ok("number".to_string())
        }
        J::Str(_) => Ok("string".to_string()),
        _ => Err(Defer),
    }
}

/// The reference's `_type_error` of a value (None: absent or null) at `path`: `Ok(None)`
/// when it has none, `Ok(Some(detail))`, or `Err(Defer)` for a value
/// this reader leaves to the reference (floats, arrays, objects), or one read
/// on another path of the reference (a map field that is not an object).
fn type_problem(v: Option<&J<'_>>, t: &Ty, path: &str) -> R<Option<String>> {
    let Some(v) = v else { return Ok(None) };
    let ok = match (v, t) {
        (J::Null, _) => return Ok(None),
        (J::Str(_), Ty::Str | Ty::Ts(_)) => true,
        (J::Num(n, true), Ty::I32 | Ty::I64) => {
            let i = int_of(n)?;
            if matches!(t, Ty::I32) && i32::try_from(i).is_err() {
                return Ok(Some(format!("{path}: integer {i} out of range for int32")));
            }
            true
        }
        (J::Num(..), Ty::F64) => true,
        (J::Bool(_), Ty::Bool) => true,
        (J::Arr(items), Ty::List(inner)) => {
            for (k, item) in items.iter().enumerate() {
                if let Some(d) = type_problem(Some(item), inner, &format!("{path}[{k}]"))? {
                    return Ok(Some(d));
                }
            }
            true
        }
        (J::Obj(entries), Ty::Struct(sub)) => {
            for (name, ft) in sub {
                let mut found = entries.iter().filter(|(k, _)| k == name);
                let item = found.next().map(|(_, j)| j);
                if found.next().is_some() {
                    return Err(Defer); // a key given twice: orjson keeps the last
                }
                if let Some(d) = type_problem(item, ft, &format!("{path}.{name}"))? {
                    return Ok(Some(d));
                }
            }
            true
        }
        (J::Obj(_), Ty::Map) => true,
        (_, Ty::Map) => return Err(Defer),
        _ => false,
    };
    if ok {
        return Ok(None);
    }
    Ok(Some(format!("{path}: expected {}, got {}", expected(t), shown(v)?)))
}

/// What [`json_decode`] makes of a batch: a verdict per record (1: a row of `cols`, in
/// record order; 2: a dead letter of `rejects`; 0: left to the reference), the dead letters
/// as `(record, reason, detail)` in record order, and the columns.
pub struct JsonOut {
    pub verdicts: Vec<u8>,
    pub rejects: Vec<(usize, &'static str, String)>,
    pub cols: Vec<Col>,
}

/// Records read before [`json_decode`] sizes every column's buffers for the whole batch.
const SIZING_PROBE: usize = 64;

/// Decode a batch of JSON records of one wire schema `fields` (`[(name, type)]`).
///
/// `payloads`: the records (None for a tombstone); `max_bytes`: the size limit. Each record
/// is a row, a dead letter with the reference's exact reason and detail (a tombstone, an
/// empty or blank payload, one over `max_bytes`, one not UTF-8 or starting with a byte order
/// mark, and the syntax and type errors of [`record`]), or left to the reference. Never
/// panics for a record's content (fuzzed: native/fuzz).
pub fn json_decode(payloads: &[Option<&[u8]>], max_bytes: usize, fields: &[(String, Ty)]) -> JsonOut {
    let mut verdicts = vec![0u8; payloads.len()];
    let mut rejects = Vec::new();
    let mut cols: Vec<Col> = fields.iter().map(|(_, t)| new_col(t)).collect();
    let mut slots: Vec<Option<J<'_>>> = Vec::with_capacity(fields.len());
    let mut seen: Vec<bool> = Vec::with_capacity(fields.len());
    let mut rows = 0usize;
    for (k, p) in payloads.iter().enumerate() {
        if k == SIZING_PROBE && payloads.len() > 2 * SIZING_PROBE {
            // the rest of the batch at the rate of its first records, and an eighth more
            let rest = (payloads.len() - k) * 9 / 8;
            for c in cols.iter_mut() {
                c.reserve_scaled(rest, k);
            }
        }
        let rec = match screen(*p, max_bytes) {
            Err(rec) => rec,
            // a plain row is written straight into the columns; anything else is rolled
            // back and judged by the tree reader
            Ok(text) if direct::row(text, fields, &mut cols, rows, &mut seen) => {
                verdicts[k] = 1;
                rows += 1;
                continue;
            }
            Ok(text) => record(text, fields, &mut slots),
        };
        match rec {
            Rec::Row => {
                for ((col, (_, t)), v) in cols.iter_mut().zip(fields.iter()).zip(slots.iter()) {
                    append(col, v.as_ref(), t);
                }
                verdicts[k] = 1;
                rows += 1;
            }
            Rec::Reject(reason, detail) => {
                rejects.push((k, reason, detail));
                verdicts[k] = 2;
            }
            Rec::Defer => {}
        }
        slots.clear();
    }
    JsonOut { verdicts, rejects, cols }
}

/// The reference's screen of one payload (`JsonCodec._screen`, in its order): the text of a
/// payload worth parsing, or its dead letter (a tombstone, empty or blank, oversized, not
/// UTF-8, a byte order mark).
fn screen(p: Option<&[u8]>, max_bytes: usize) -> Result<&str, Rec> {
    let reject = |detail: String| Err(Rec::Reject("format_violation", detail));
    let Some(p) = p else { return reject("tombstone (null value)".into()) };
    // bytes.isspace(): ASCII space, \t, \n, \r, \x0b, \x0c
    if p.iter().all(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)) {
        return reject("empty payload".into());
    }
    if p.len() > max_bytes {
        return Err(Rec::Reject("size_violation", format!("payload of {} bytes exceeds the limit of {max_bytes} bytes", p.len())));
    }
    match std::str::from_utf8(p) {
        Ok(text) if text.starts_with('\u{feff}') => reject(
            "payload starts with a UTF-8 byte order mark (not allowed in JSON, RFC 8259 section 8.1)".into(),
        ),
        Ok(text) => Ok(text),
        Err(e) => {
            let at = e.valid_up_to();
            reject(format!("payload is not UTF-8: invalid byte 0x{:02x} at position {at}", p[at]))
        }
    }
}

/// [`json_decode`]'s verdicts and columns, a verdict being 1 for a row and 0 for any other
/// record (a dead letter included: this is the verdict of the earlier decoder, which left
/// every dead letter to the reference).
pub fn json_batch(payloads: &[Option<&[u8]>], max_bytes: usize, fields: &[(String, Ty)]) -> (Vec<u8>, Vec<Col>) {
    let mut out = json_decode(payloads, max_bytes, fields);
    for v in out.verdicts.iter_mut() {
        *v &= 1;
    }
    (out.verdicts, out.cols)
}

/// The payload when it is neither empty nor over `max_bytes` (those are the reference's to reject).
fn sized(p: Option<&[u8]>, max_bytes: usize) -> Option<&[u8]> {
    p.filter(|p| !p.is_empty() && p.len() <= max_bytes)
}

/// What an OTLP decode builds: a verdict per message, the message (`_i`) and item (`_item`)
/// of each row, and the row columns.
pub struct OtlpOut {
    pub verdicts: Vec<u8>,
    pub index: Vec<u8>,
    pub items: Vec<u8>,
    pub cols: Vec<Col>,
}

impl OtlpOut {
    fn new(messages: usize, types: impl Iterator<Item = Ty>) -> Self {
        OtlpOut { verdicts: vec![0u8; messages], index: Vec::new(), items: Vec::new(), cols: types.map(|t| new_col(&t)).collect() }
    }

    /// The row just appended to every column is item `k` of message `i`.
    fn row(&mut self, i: usize, k: i32) {
        self.index.extend_from_slice(&(i as i64).to_le_bytes());
        self.items.extend_from_slice(&k.to_le_bytes());
    }

}

fn push_map<'k>(col: &mut Col, entries: Option<Vec<(&'k str, Option<&'k str>)>>) {
    if let Col::Map { valid, offsets, keys, values } = col {
        valid.push(entries.is_some());
        let n = entries.as_ref().map_or(0, |e| e.len()) as i32;
        for (k, v) in entries.unwrap_or_default() {
            push_str(keys, Some(k));
            push_str(values, v);
        }
        let last = *offsets.last().unwrap();
        offsets.push(last + n);
    }
}

fn push_i64(col: &mut Col, v: Option<i64>) {
    if let Col::Prim { valid, data } = col {
        valid.push(v.is_some());
        data.extend_from_slice(&v.unwrap_or(0).to_le_bytes());
    }
}

fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &c in b {
        s.push(D[(c >> 4) as usize] as char);
        s.push(D[(c & 15) as usize] as char);
    }
    s
}

fn text_of<'a>(t: &'a otlp::Text<'a>) -> Option<&'a str> {
    match t {
        otlp::Text::Str(s) => Some(s),
        otlp::Text::Owned(s) => Some(s.as_str()),
        otlp::Text::Unset => None,
    }
}

const SPAN_KINDS: [&str; 6] = ["UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"];
const STATUS_CODES: [&str; 3] = ["UNSET", "OK", "ERROR"];
/// span columns: the wire schema's, then the OTLP codec's extra ones (schemas/codecs/otlp_codec.py)
const SPAN_COLUMNS: usize = 18;

/// Decode a batch of OTLP protobuf `ExportTraceServiceRequest` messages into span rows.
///
/// `payloads`: the messages (None for a value that is not bytes). The result holds a byte
/// per message (1: all its spans are rows here; 0: left to the reference decoder, which
/// accepts or rejects each span itself), the message (`_i`, int64) and span (`_item`,
/// int32) of each row, and the span columns in the reference's column order. Never panics
/// for a message's content (fuzzed: native/fuzz).
pub fn otlp_spans(payloads: &[Option<&[u8]>], max_bytes: usize) -> OtlpOut {
    span_rows(payloads.len(), |i| otlp::trace_request(sized(payloads[i], max_bytes).ok_or(Defer)?))
}

/// The span rows of `messages` messages, message `i` read by `read(i)` (its resources, or
/// Defer: verdict 0 and no rows), as [`otlp_spans`] returns them.
pub(crate) fn span_rows<'p>(messages: usize, mut read: impl FnMut(usize) -> R<Vec<otlp::Resource<'p>>>) -> OtlpOut {
    let str_cols = [0usize, 1, 2, 3, 4, 5, 8, 9, 16];
    let mut out = OtlpOut::new(messages, (0..SPAN_COLUMNS).map(|c| match c {
        10 | 11 | 12 | 13 => Ty::Map,
        c if str_cols.contains(&c) => Ty::Str,
        _ => Ty::I64,
    }));
    {
        for i in 0..messages {
            let Ok(resources) = read(i) else { continue };
            out.verdicts[i] = 1;
            let mut k = 0i32;
            for res in &resources {
                let service = res.attrs.iter().find(|kv| kv.key == "service.name").and_then(|kv| text_of(&kv.text))
                    .filter(|s| !s.is_empty()).unwrap_or("unknown_service");
                let res_map: Option<Vec<(&str, Option<&str>)>> =
                    if res.attrs.is_empty() { None } else { Some(res.attrs.iter().map(|kv| (&*kv.key, text_of(&kv.text))).collect()) };
                let res_types: Vec<(&str, Option<&str>)> =
                    res.attrs.iter().filter_map(|kv| kv.type_name.map(|t| (&*kv.key, Some(t)))).collect();
                for sp in &res.items {
                    let parent = sp.parent.as_ref().map(|p| hex(p));
                    let (tid, sid) = (hex(&sp.trace_id), hex(&sp.span_id));
                    push_str(&mut out.cols[0], Some(&tid));
                    push_str(&mut out.cols[1], Some(&sid));
                    push_str(&mut out.cols[2], parent.as_deref());
                    push_str(&mut out.cols[3], Some(service));
                    push_str(&mut out.cols[4], Some(&sp.name));
                    push_str(&mut out.cols[5], Some(SPAN_KINDS[sp.kind as usize]));
                    push_i64(&mut out.cols[6], Some((sp.start / 1000) as i64));
                    push_i64(&mut out.cols[7], Some((sp.end / 1000) as i64));
                    push_str(&mut out.cols[8], Some(STATUS_CODES[sp.status_code as usize]));
                    push_str(&mut out.cols[9], if sp.status_message.is_empty() { None } else { Some(&sp.status_message) });
                    let attrs: Option<Vec<(&str, Option<&str>)>> =
                        if sp.attrs.is_empty() { None } else { Some(sp.attrs.iter().map(|kv| (&*kv.key, text_of(&kv.text))).collect()) };
                    push_map(&mut out.cols[10], attrs);
                    push_map(&mut out.cols[11], res_map.clone());
                    let types: Vec<(&str, Option<&str>)> =
                        sp.attrs.iter().filter_map(|kv| kv.type_name.map(|t| (&*kv.key, Some(t)))).collect();
                    push_map(&mut out.cols[12], if types.is_empty() { None } else { Some(types) });
                    push_map(&mut out.cols[13], if res_types.is_empty() { None } else { Some(res_types.clone()) });
                    push_i64(&mut out.cols[14], if sp.start < (1u64 << 63) { Some(sp.start as i64) } else { None });
                    push_i64(&mut out.cols[15], if sp.end < (1u64 << 63) { Some(sp.end as i64) } else { None });
                    push_str(&mut out.cols[16], if sp.trace_state.is_empty() { None } else { Some(&sp.trace_state) });
                    push_i64(&mut out.cols[17], Some(sp.flags as i64));
                    out.row(i, k);
                    k += 1;
                }
            }
        }
    }
    out
}

/// log columns: the wire schema's (schemas/avro/log_record.avsc), in the reference's order
const LOG_COLUMNS: usize = 11;

/// Take `key` out of an ordered attribute list (as Python's `dict.pop(key, None)`).
fn pop<'k>(attrs: &mut Vec<(&'k str, Option<&'k str>)>, key: &str) -> Option<&'k str> {
    let at = attrs.iter().position(|(k, _)| *k == key)?;
    attrs.remove(at).1
}

/// Set `key` (in place when present, else at the end: Python's `dict[key] = value`).
fn set<'k>(attrs: &mut Vec<(&'k str, Option<&'k str>)>, key: &'k str, value: Option<&'k str>) {
    match attrs.iter_mut().find(|(k, _)| *k == key) {
        Some(e) => e.1 = value,
        None => attrs.push((key, value)),
    }
}

/// Decode a batch of OTLP protobuf `ExportLogsServiceRequest` messages into log rows.
///
/// The result as [`otlp_spans`] gives it: a byte per message (1: all its log records are
/// rows here; 0: left to the reference decoder), the message (`_i`) and record (`_item`) of
/// each row, and the log columns. Never panics for a message's content.
pub fn otlp_logs(payloads: &[Option<&[u8]>], max_bytes: usize) -> OtlpOut {
    log_rows(payloads.len(), |i| otlp::logs_request(sized(payloads[i], max_bytes).ok_or(Defer)?))
}

/// The log rows of `messages` messages, message `i` read by `read(i)` (its resources, or
/// Defer: verdict 0 and no rows), as [`otlp_logs`] returns them.
pub(crate) fn log_rows<'p>(messages: usize, mut read: impl FnMut(usize) -> R<Vec<otlp::LogResource<'p>>>) -> OtlpOut {
    let mut out = OtlpOut::new(messages, (0..LOG_COLUMNS).map(|c| match c {
        0 => Ty::I64,
        10 => Ty::Map,
        _ => Ty::Str,
    }));
    {
        for i in 0..messages {
            let Ok(resources) = read(i) else { continue };
            out.verdicts[i] = 1;
            let mut k = 0i32;
            for res in &resources {
                // the reference's _LogRows.resource: service, host, env taken out, the rest kept in order
                let mut rest: Vec<(&str, Option<&str>)> = res.attrs.iter().map(|kv| (&*kv.key, text_of(&kv.text))).collect();
                let service = pop(&mut rest, "service.name").filter(|s| !s.is_empty()).unwrap_or("unknown_service");
                let host = pop(&mut rest, "host.name");
                let (env_new, env_old) = (pop(&mut rest, "deployment.environment.name"), pop(&mut rest, "deployment.environment"));
                let env = env_new.filter(|s| !s.is_empty()).or(env_old);
                for lr in &res.items {
                    let mut attrs = rest.clone();
                    for kv in &lr.attrs {
                        set(&mut attrs, &kv.key, text_of(&kv.text));
                    }
                    let user_id = pop(&mut attrs, "enduser.id");
                    let request_id = pop(&mut attrs, "http.request_id");
                    if !lr.event_name.is_empty() {
                        set(&mut attrs, "event.name", Some(&lr.event_name));
                    }
                    let t = if lr.time != 0 { lr.time } else { lr.observed };
                    let (tid, sid) = (lr.trace_id.as_ref().map(|b| hex(b)), lr.span_id.as_ref().map(|b| hex(b)));
                    push_i64(&mut out.cols[0], Some((t / 1_000_000) as i64));
                    push_str(&mut out.cols[1], Some(&lr.level));
                    push_str(&mut out.cols[2], Some(service));
                    push_str(&mut out.cols[3], text_of(&lr.message));
                    push_str(&mut out.cols[4], tid.as_deref());
                    push_str(&mut out.cols[5], sid.as_deref());
                    push_str(&mut out.cols[6], request_id);
                    push_str(&mut out.cols[7], user_id);
                    push_str(&mut out.cols[8], host);
                    push_str(&mut out.cols[9], env);
                    push_map(&mut out.cols[10], if attrs.is_empty() { None } else { Some(attrs) });
                    out.row(i, k);
                    k += 1;
                }
            }
        }
    }
    out
}

/// metric columns: the wire schema's (schemas/avro/metric_sample.avsc), in the reference's order
const METRIC_COLUMNS: usize = 11;

fn push_f64(col: &mut Col, v: Option<f64>) {
    if let Col::Prim { valid, data } = col {
        valid.push(v.is_some());
        data.extend_from_slice(&v.unwrap_or(0.0).to_le_bytes());
    }
}

/// A list of 8-byte values (`bits` of each) or null.
fn push_list8(col: &mut Col, values: Option<impl Iterator<Item = u64>>) {
    if let Col::List { valid, offsets, child } = col {
        valid.push(values.is_some());
        let mut n = 0;
        if let (Some(values), Col::Prim { valid: cv, data }) = (values, &mut **child) {
            for v in values {
                cv.push(true);
                data.extend_from_slice(&v.to_le_bytes());
                n += 1;
            }
        }
        let last = *offsets.last().unwrap();
        offsets.push(last + n);
    }
}

/// One metric row: name, kind, time (ns), labels, value, bounds, counts, count, sum,
/// temporality, start (ns; null when 0), as the reference's `_MetricRows.add` appends it.
#[allow(clippy::too_many_arguments)]
fn metric_row(out: &mut OtlpOut, name: &str, kind: &str, time: u64, labels: Vec<(&str, Option<&str>)>, value: Option<f64>,
              hist: Option<&metrics::Histogram<'_>>, count: Option<u64>, sum: Option<f64>, temporality: Option<&str>, start: u64) {
    let c = &mut out.cols;
    push_str(&mut c[0], Some(name));
    push_str(&mut c[1], Some(kind));
    push_i64(&mut c[2], Some((time / 1_000_000) as i64));
    push_map(&mut c[3], Some(labels));
    push_f64(&mut c[4], value);
    push_list8(&mut c[5], hist.map(|h| h.bounds.iter().map(|b| b.to_bits())));
    push_list8(&mut c[6], hist.map(|h| h.counts.iter().copied()));
    push_i64(&mut c[7], count.map(|n| n as i64));
    push_f64(&mut c[8], sum);
    push_str(&mut c[9], temporality);
    push_i64(&mut c[10], if start != 0 { Some((start / 1_000_000) as i64) } else { None });
}

/// The labels of a data point: its attributes in order, then `service` (set in place when
/// an attribute has that key: Python's `{**attrs, "service": svc}`).
fn labels<'k>(attrs: &'k [otlp::Kv<'k>], service: &'k str) -> Vec<(&'k str, Option<&'k str>)> {
    let mut out: Vec<(&str, Option<&str>)> = attrs.iter().map(|kv| (&*kv.key, text_of(&kv.text))).collect();
    set(&mut out, "service", Some(service));
    out
}

/// Decode a batch of OTLP protobuf `ExportMetricsServiceRequest` messages into metric rows.
///
/// The result as [`otlp_spans`] gives it: a byte per message (1: all its data points are
/// rows here; 0: left to the reference decoder), the message (`_i`) and data point
/// (`_item`) of each row (a summary's quantile rows share their point's), and the metric
/// columns. Never panics for a message's content.
pub fn otlp_metrics(payloads: &[Option<&[u8]>], max_bytes: usize) -> OtlpOut {
    metric_rows(payloads.len(), |i| metrics::metrics_request(sized(payloads[i], max_bytes).ok_or(Defer)?))
}

/// The metric rows of `messages` messages, message `i` read by `read(i)` (its resources, or
/// Defer: verdict 0 and no rows), as [`otlp_metrics`] returns them.
pub(crate) fn metric_rows<'p>(messages: usize, mut read: impl FnMut(usize) -> R<Vec<metrics::MetricResource<'p>>>) -> OtlpOut {
    let mut out = OtlpOut::new(messages, (0..METRIC_COLUMNS).map(|c| match c {
        0 | 1 | 9 => Ty::Str,
        2 | 7 | 10 => Ty::I64,
        3 => Ty::Map,
        4 | 8 => Ty::F64,
        5 => Ty::List(Box::new(Ty::F64)),
        _ => Ty::List(Box::new(Ty::I64)),
    }));
    for i in 0..messages {
        let Ok(resources) = read(i) else { continue };
        out.verdicts[i] = 1;
        let mut k = 0i32;
        for res in &resources {
            let service = res.attrs.iter().find(|kv| kv.key == "service.name").and_then(|kv| text_of(&kv.text))
                .filter(|s| !s.is_empty()).unwrap_or("unknown_service");
            for m in &res.items {
                match &m.data {
                    metrics::Data::Gauge(points) => {
                        for dp in points {
                            let pt = &dp.point;
                            metric_row(&mut out, &m.name, "GAUGE", pt.time, labels(&pt.attrs, service), dp.value, None, None, None, None,
                                       pt.start);
                            out.row(i, k);
                            k += 1;
                        }
                    }
                    metrics::Data::Sum { delta, monotonic, points } => {
                        let level = !monotonic && !delta;
                        let (kind, temp) = if level { ("GAUGE", None) } else { ("COUNTER", Some(if *delta { "delta" } else { "cumulative" })) };
                        for dp in points {
                            let pt = &dp.point;
                            metric_row(&mut out, &m.name, kind, pt.time, labels(&pt.attrs, service), dp.value, None, None, None, temp, pt.start);
                            out.row(i, k);
                            k += 1;
                        }
                    }
                    metrics::Data::Histogram { delta, points } => {
                        let temp = if *delta { "delta" } else { "cumulative" };
                        for h in points {
                            let pt = &h.point;
                            metric_row(&mut out, &m.name, "HISTOGRAM", pt.time, labels(&pt.attrs, service), None, Some(h), Some(h.count),
                                       h.sum, Some(temp), pt.start);
                            out.row(i, k);
                            k += 1;
                        }
                    }
                    metrics::Data::Summary(points) => {
                        for s in points {
                            let pt = &s.point;
                            let base = labels(&pt.attrs, service);
                            metric_row(&mut out, &m.name, "SUMMARY", pt.time, base.clone(), None, None, Some(s.count), Some(s.sum),
                                       Some("cumulative"), pt.start);
                            out.row(i, k);
                            for &(q, v) in &s.quantiles {
                                if v.is_nan() {
                                    continue; // no observations behind this quantile
                                }
                                let label = metrics::g15(q);
                                let mut with_q = base.clone();
                                set(&mut with_q, "quantile", Some(&label));
                                metric_row(&mut out, &m.name, "GAUGE", pt.time, with_q, Some(v), None, None, None, None, pt.start);
                                out.row(i, k);
                            }
                            k += 1;
                        }
                    }
                }
            }
        }
    }
    out
}
