//! obsflow's compiled decoder: a batch of raw JSON wire records straight into Arrow
//! buffers, with a verdict per record (a row, or deferred to the Python reference codec,
//! which then gives the row or the dead letter's reason and detail). Never a whole-batch
//! failure: every problem is one record's deferral.
//!
//! The buffers reach pyarrow without copies (src/py.rs: each is a `Buf` exposing the buffer
//! protocol, wrapped by `pyarrow.py_buffer` and assembled with `pyarrow.Array.from_buffers`
//! (see schemas/codecs/native_json.py)). The decoders here are pure Rust, callable without
//! Python (the fuzz targets in native/fuzz do).

use std::borrow::Cow;

pub mod avro;
pub mod json;
pub mod metrics;
pub mod otlp;
pub mod otlp_json;
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

/// One record's top-level values, by field position, if it can be decoded here.
fn record<'a>(text: &'a str, fields: &[(String, Ty)]) -> R<Vec<Option<J<'a>>>> {
    let b = text.as_bytes();
    // the reference re-serializes records that do not start with "{" and end with "}"
    if b.first() != Some(&b'{') || b.last() != Some(&b'}') {
        return Err(Defer);
    }
    let mut p = Parser::new(text);
    let mut slots: Vec<Option<J<'a>>> = (0..fields.len()).map(|_| None).collect();
    p.eat(b'{')?;
    p.ws();
    if p.peek() == Some(b'}') {
        p.eat(b'}')?;
    } else {
        loop {
            p.ws();
            let k = p.string()?;
            p.ws();
            p.eat(b':')?;
            p.ws();
            let v = p.value()?;
            if let Some(f) = fields.iter().position(|(name, _)| name == k.as_ref()) {
                if slots[f].is_some() {
                    return Err(Defer); // a field given twice
                }
                check(&v, &fields[f].1)?;
                slots[f] = Some(v);
            }
            p.ws();
            match p.peek() {
                Some(b',') => p.eat(b',')?,
                Some(b'}') => {
                    p.eat(b'}')?;
                    break;
                }
                _ => return Err(Defer),
            }
        }
    }
    if !p.at_end() {
        return Err(Defer);
    }
    Ok(slots)
}

/// Decode a batch of JSON records of one wire schema `fields` (`[(name, type)]`).
///
/// `payloads`: the records (None for a value that is not bytes); `max_bytes`: the size
/// limit. Returns `(verdicts, columns)`: one byte per record, 1 when the record is a row of
/// `columns` (in record order), 0 when it is left to the reference decoder (empty, too
/// large, not UTF-8, not certainly decoded the same way). Never panics for a record's
/// content (fuzzed: native/fuzz).
pub fn json_batch(payloads: &[Option<&[u8]>], max_bytes: usize, fields: &[(String, Ty)]) -> (Vec<u8>, Vec<Col>) {
    let mut verdicts = vec![0u8; payloads.len()];
    let mut cols: Vec<Col> = fields.iter().map(|(_, t)| new_col(t)).collect();
    for (k, p) in payloads.iter().enumerate() {
        let Some(p) = sized(*p, max_bytes) else { continue };
        let Ok(text) = std::str::from_utf8(p) else { continue };
        if let Ok(slots) = record(text, fields) {
            for ((col, (_, t)), v) in cols.iter_mut().zip(fields.iter()).zip(slots.iter()) {
                append(col, v.as_ref(), t);
            }
            verdicts[k] = 1;
        }
    }
    (verdicts, cols)
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
    let str_cols = [0usize, 1, 2, 3, 4, 5, 8, 9, 16];
    let mut out = OtlpOut::new(payloads.len(), (0..SPAN_COLUMNS).map(|c| match c {
        10 | 11 | 12 | 13 => Ty::Map,
        c if str_cols.contains(&c) => Ty::Str,
        _ => Ty::I64,
    }));
    {
        for (i, p) in payloads.iter().enumerate() {
            let Some(p) = sized(*p, max_bytes) else { continue };
            let Ok(resources) = otlp::trace_request(p) else { continue };
            out.verdicts[i] = 1;
            let mut k = 0i32;
            for res in &resources {
                let service = res.attrs.iter().find(|kv| kv.key == "service.name").and_then(|kv| text_of(&kv.text))
                    .filter(|s| !s.is_empty()).unwrap_or("unknown_service");
                let res_map: Option<Vec<(&str, Option<&str>)>> =
                    if res.attrs.is_empty() { None } else { Some(res.attrs.iter().map(|kv| (kv.key, text_of(&kv.text))).collect()) };
                let res_types: Vec<(&str, Option<&str>)> =
                    res.attrs.iter().filter_map(|kv| kv.type_name.map(|t| (kv.key, Some(t)))).collect();
                for sp in &res.items {
                    let zero_parent = sp.parent.iter().all(|&c| c == 0);
                    let parent = if sp.parent.is_empty() || zero_parent { None } else { Some(hex(sp.parent)) };
                    let (tid, sid) = (hex(sp.trace_id), hex(sp.span_id));
                    push_str(&mut out.cols[0], Some(&tid));
                    push_str(&mut out.cols[1], Some(&sid));
                    push_str(&mut out.cols[2], parent.as_deref());
                    push_str(&mut out.cols[3], Some(service));
                    push_str(&mut out.cols[4], Some(sp.name));
                    push_str(&mut out.cols[5], Some(SPAN_KINDS[sp.kind as usize]));
                    push_i64(&mut out.cols[6], Some((sp.start / 1000) as i64));
                    push_i64(&mut out.cols[7], Some((sp.end / 1000) as i64));
                    push_str(&mut out.cols[8], Some(STATUS_CODES[sp.status_code as usize]));
                    push_str(&mut out.cols[9], if sp.status_message.is_empty() { None } else { Some(sp.status_message) });
                    let attrs: Option<Vec<(&str, Option<&str>)>> =
                        if sp.attrs.is_empty() { None } else { Some(sp.attrs.iter().map(|kv| (kv.key, text_of(&kv.text))).collect()) };
                    push_map(&mut out.cols[10], attrs);
                    push_map(&mut out.cols[11], res_map.clone());
                    let types: Vec<(&str, Option<&str>)> =
                        sp.attrs.iter().filter_map(|kv| kv.type_name.map(|t| (kv.key, Some(t)))).collect();
                    push_map(&mut out.cols[12], if types.is_empty() { None } else { Some(types) });
                    push_map(&mut out.cols[13], if res_types.is_empty() { None } else { Some(res_types.clone()) });
                    push_i64(&mut out.cols[14], if sp.start < (1u64 << 63) { Some(sp.start as i64) } else { None });
                    push_i64(&mut out.cols[15], if sp.end < (1u64 << 63) { Some(sp.end as i64) } else { None });
                    push_str(&mut out.cols[16], if sp.trace_state.is_empty() { None } else { Some(sp.trace_state) });
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
    let mut out = OtlpOut::new(payloads.len(), (0..LOG_COLUMNS).map(|c| match c {
        0 => Ty::I64,
        10 => Ty::Map,
        _ => Ty::Str,
    }));
    {
        for (i, p) in payloads.iter().enumerate() {
            let Some(p) = sized(*p, max_bytes) else { continue };
            let Ok(resources) = otlp::logs_request(p) else { continue };
            out.verdicts[i] = 1;
            let mut k = 0i32;
            for res in &resources {
                // the reference's _LogRows.resource: service, host, env taken out, the rest kept in order
                let mut rest: Vec<(&str, Option<&str>)> = res.attrs.iter().map(|kv| (kv.key, text_of(&kv.text))).collect();
                let service = pop(&mut rest, "service.name").filter(|s| !s.is_empty()).unwrap_or("unknown_service");
                let host = pop(&mut rest, "host.name");
                let (env_new, env_old) = (pop(&mut rest, "deployment.environment.name"), pop(&mut rest, "deployment.environment"));
                let env = env_new.filter(|s| !s.is_empty()).or(env_old);
                for lr in &res.items {
                    let mut attrs = rest.clone();
                    for kv in &lr.attrs {
                        set(&mut attrs, kv.key, text_of(&kv.text));
                    }
                    let user_id = pop(&mut attrs, "enduser.id");
                    let request_id = pop(&mut attrs, "http.request_id");
                    if !lr.event_name.is_empty() {
                        set(&mut attrs, "event.name", Some(lr.event_name));
                    }
                    let t = if lr.time != 0 { lr.time } else { lr.observed };
                    let (tid, sid) = (lr.trace_id.map(hex), lr.span_id.map(hex));
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
    let mut out: Vec<(&str, Option<&str>)> = attrs.iter().map(|kv| (kv.key, text_of(&kv.text))).collect();
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
    let mut out = OtlpOut::new(payloads.len(), (0..METRIC_COLUMNS).map(|c| match c {
        0 | 1 | 9 => Ty::Str,
        2 | 7 | 10 => Ty::I64,
        3 => Ty::Map,
        4 | 8 => Ty::F64,
        5 => Ty::List(Box::new(Ty::F64)),
        _ => Ty::List(Box::new(Ty::I64)),
    }));
    for (i, p) in payloads.iter().enumerate() {
        let Some(p) = sized(*p, max_bytes) else { continue };
        let Ok(resources) = metrics::metrics_request(p) else { continue };
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
                            metric_row(&mut out, m.name, "GAUGE", pt.time, labels(&pt.attrs, service), dp.value, None, None, None, None,
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
                            metric_row(&mut out, m.name, kind, pt.time, labels(&pt.attrs, service), dp.value, None, None, None, temp, pt.start);
                            out.row(i, k);
                            k += 1;
                        }
                    }
                    metrics::Data::Histogram { delta, points } => {
                        let temp = if *delta { "delta" } else { "cumulative" };
                        for h in points {
                            let pt = &h.point;
                            metric_row(&mut out, m.name, "HISTOGRAM", pt.time, labels(&pt.attrs, service), None, Some(h), Some(h.count),
                                       h.sum, Some(temp), pt.start);
                            out.row(i, k);
                            k += 1;
                        }
                    }
                    metrics::Data::Summary(points) => {
                        for s in points {
                            let pt = &s.point;
                            let base = labels(&pt.attrs, service);
                            metric_row(&mut out, m.name, "SUMMARY", pt.time, base.clone(), None, None, Some(s.count), Some(s.sum),
                                       Some("cumulative"), pt.start);
                            out.row(i, k);
                            for &(q, v) in &s.quantiles {
                                if v.is_nan() {
                                    continue; // no observations behind this quantile
                                }
                                let label = metrics::g15(q);
                                let mut with_q = base.clone();
                                set(&mut with_q, "quantile", Some(&label));
                                metric_row(&mut out, m.name, "GAUGE", pt.time, with_q, Some(v), None, None, None, None, pt.start);
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
