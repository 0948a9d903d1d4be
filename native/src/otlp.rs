//! OTLP protobuf `ExportTraceServiceRequest` messages into span rows.
//!
//! Like the JSON reader, this accepts only what the Python reference
//! (schemas/codecs/otlp_codec.py, protobuf's own parser underneath) certainly reads the same
//! way, and *defers* the whole message otherwise: a field number or wire type it does not
//! expect, a singular field given twice, invalid UTF-8 in a string, a span the reference
//! would reject (bad ids, kind, status, times), attribute values of kinds whose text the
//! reference formats itself (double, bytes, array, kvlist), duplicate attribute keys.

use std::borrow::Cow;

use crate::json::{Defer, R};

pub(crate) struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Reader { b, i: 0 }
    }

    pub(crate) fn done(&self) -> bool {
        self.i >= self.b.len()
    }

    pub(crate) fn varint(&mut self) -> R<u64> {
        let mut v = 0u64;
        for k in 0..10 {
            let c = *self.b.get(self.i).ok_or(Defer)?;
            self.i += 1;
            if k == 9 && c > 1 {
                return Err(Defer);
            }
            v |= ((c & 0x7f) as u64) << (7 * k);
            if c & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Defer)
    }

    /// The next field: (number, wire type).
    pub(crate) fn tag(&mut self) -> R<(u32, u8)> {
        let t = self.varint()?;
        let num = t >> 3;
        if num == 0 || num > (1 << 29) - 1 {
            return Err(Defer);
        }
        Ok((num as u32, (t & 7) as u8))
    }

    pub(crate) fn bytes(&mut self) -> R<&'a [u8]> {
        let n = self.varint()? as usize;
        let end = self.i.checked_add(n).ok_or(Defer)?;
        if end > self.b.len() {
            return Err(Defer);
        }
        let out = &self.b[self.i..end];
        self.i = end;
        Ok(out)
    }

    pub(crate) fn fixed64(&mut self) -> R<u64> {
        let s = self.b.get(self.i..self.i + 8).ok_or(Defer)?;
        self.i += 8;
        Ok(u64::from_le_bytes(s.try_into().unwrap()))
    }

    pub(crate) fn fixed32(&mut self) -> R<u32> {
        let s = self.b.get(self.i..self.i + 4).ok_or(Defer)?;
        self.i += 4;
        Ok(u32::from_le_bytes(s.try_into().unwrap()))
    }
}

pub(crate) fn utf8(b: &[u8]) -> R<&str> {
    std::str::from_utf8(b).map_err(|_| Defer)
}

/// What a field holds, for messages only checked (scope, events, links).
#[derive(Clone, Copy)]
pub(crate) enum F {
    Varint,
    Fixed64,
    Fixed32,
    Str,
    Bytes,
    KeyValue,
}

/// Check a message of known fields `fields[(number, kind)]` as the reference's parser
/// would read it (repeated fields may repeat; scalar duplicates defer).
pub(crate) fn check_message(b: &[u8], fields: &[(u32, F, bool)]) -> R<()> {
    let mut r = Reader::new(b);
    let mut seen = 0u64;
    while !r.done() {
        let (num, wt) = r.tag()?;
        let &(_, kind, repeated) = fields.iter().find(|(n, _, _)| *n == num).ok_or(Defer)?;
        if !repeated {
            if seen & (1 << num) != 0 {
                return Err(Defer);
            }
            seen |= 1 << num;
        }
        match (kind, wt) {
            (F::Varint, 0) => {
                r.varint()?;
            }
            (F::Fixed64, 1) => {
                r.fixed64()?;
            }
            (F::Fixed32, 5) => {
                r.fixed32()?;
            }
            (F::Str, 2) => {
                utf8(r.bytes()?)?;
            }
            (F::Bytes, 2) => {
                r.bytes()?;
            }
            (F::KeyValue, 2) => {
                key_value(r.bytes()?)?;
            }
            _ => return Err(Defer),
        }
    }
    Ok(())
}

/// An attribute's value as the reference's map text, and its type name when not a string.
pub enum Text<'a> {
    Str(&'a str),
    Owned(String),
    Unset,
}

pub struct Kv<'a> {
    pub key: Cow<'a, str>,
    pub text: Text<'a>,
    pub type_name: Option<&'static str>,
}

/// A double as Python's ``repr`` writes it (the reference's map text for a double): the
/// shortest digits that read back the same, fixed notation for exponents -4..16, else
/// scientific with a signed two-digit (at least) exponent.
pub fn py_repr(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let sci = format!("{:e}", v); // shortest round-trip digits: "-1.5e-7"
    let (mant, exp) = sci.split_once('e').expect("LowerExp writes an exponent");
    let exp: i32 = exp.parse().expect("LowerExp writes an integer exponent");
    let (sign, mant) = mant.strip_prefix('-').map_or(("", mant), |m| ("-", m));
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let n = digits.len() as i32;
    let decpt = exp + 1; // value = 0.DIGITS x 10^decpt
    if decpt <= -4 || decpt > 16 {
        let rest = &digits[1..];
        let m = if rest.is_empty() { digits[..1].to_string() } else { format!("{}.{}", &digits[..1], rest) };
        let e = decpt - 1;
        return format!("{sign}{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    }
    if decpt <= 0 {
        format!("{sign}0.{}{digits}", "0".repeat((-decpt) as usize))
    } else if decpt >= n {
        format!("{sign}{digits}{}.0", "0".repeat((decpt - n) as usize))
    } else {
        format!("{sign}{}.{}", &digits[..decpt as usize], &digits[decpt as usize..])
    }
}

fn any_value(b: &[u8]) -> R<(Text<'_>, Option<&'static str>)> {
    let mut r = Reader::new(b);
    let mut out = (Text::Unset, None);
    let mut fields = 0;
    while !r.done() {
        let (num, wt) = r.tag()?;
        fields += 1;
        if fields > 1 {
            return Err(Defer); // a oneof set twice: the reference keeps the last
        }
        out = match (num, wt) {
            (1, 2) => (Text::Str(utf8(r.bytes()?)?), None),
            (2, 0) => {
                let v = r.varint()?;
                (Text::Str(if v != 0 { "true" } else { "false" }), Some("bool"))
            }
            (3, 0) => (Text::Owned((r.varint()? as i64).to_string()), Some("int")),
            (4, 1) => (Text::Owned(py_repr(f64::from_bits(r.fixed64()?))), Some("double")),
            _ => return Err(Defer), // array, kvlist, bytes: the reference's own formatting
        };
    }
    Ok(out)
}

pub(crate) fn key_value(b: &[u8]) -> R<Kv<'_>> {
    let mut r = Reader::new(b);
    let (mut key, mut value, mut seen_key, mut seen_value) = ("", None, false, false);
    while !r.done() {
        match r.tag()? {
            (1, 2) if !seen_key => {
                key = utf8(r.bytes()?)?;
                seen_key = true;
            }
            (2, 2) if !seen_value => {
                value = Some(r.bytes()?);
                seen_value = true;
            }
            _ => return Err(Defer),
        }
    }
    let (text, type_name) = match value {
        Some(v) => any_value(v)?,
        None => (Text::Unset, None),
    };
    Ok(Kv { key: Cow::Borrowed(key), text, type_name })
}

/// Attributes (repeated KeyValue bytes), duplicates deferred.
pub(crate) fn attributes<'a>(raw: &[&'a [u8]]) -> R<Vec<Kv<'a>>> {
    let mut out: Vec<Kv<'a>> = Vec::with_capacity(raw.len());
    for b in raw {
        push_unique(&mut out, key_value(b)?)?;
    }
    Ok(out)
}

/// Append `kv` to `attrs`; a key already there defers (the reference's dict keeps the last).
pub(crate) fn push_unique<'a>(attrs: &mut Vec<Kv<'a>>, kv: Kv<'a>) -> R<()> {
    if attrs.iter().any(|o| o.key == kv.key) {
        return Err(Defer);
    }
    attrs.push(kv);
    Ok(())
}

/// A span the reference accepts: ids of the right length and not all zero (the parent
/// None when empty or all zero), kind 0-5, status code 0-2, start and end not 0.
pub struct Span<'a> {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub trace_state: Cow<'a, str>,
    pub name: Cow<'a, str>,
    pub kind: u64,
    pub start: u64,
    pub end: u64,
    pub attrs: Vec<Kv<'a>>,
    pub status_message: Cow<'a, str>,
    pub status_code: u64,
    pub flags: u32,
}

/// A span's ids as the reference accepts them: a 16-byte trace id and an 8-byte span id,
/// neither all zero, a parent empty (None), all zero (None) or of 8 bytes; else Defer.
pub(crate) fn span_ids(trace_id: &[u8], span_id: &[u8], parent: &[u8]) -> R<([u8; 16], [u8; 8], Option<[u8; 8]>)> {
    let zero = |b: &[u8]| b.iter().all(|&c| c == 0);
    let tid: [u8; 16] = trace_id.try_into().map_err(|_| Defer)?;
    let sid: [u8; 8] = span_id.try_into().map_err(|_| Defer)?;
    if zero(&tid) || zero(&sid) {
        return Err(Defer);
    }
    let parent = match parent.len() {
        0 => None,
        8 if zero(parent) => None,
        8 => Some(parent.try_into().map_err(|_| Defer)?),
        _ => return Err(Defer),
    };
    Ok((tid, sid, parent))
}

const EVENT: &[(u32, F, bool)] = &[(1, F::Fixed64, false), (2, F::Str, false), (3, F::KeyValue, true), (4, F::Varint, false)];
const LINK: &[(u32, F, bool)] = &[(1, F::Bytes, false), (2, F::Bytes, false), (3, F::Str, false), (4, F::KeyValue, true),
    (5, F::Varint, false), (6, F::Fixed32, false)];
const SCOPE: &[(u32, F, bool)] = &[(1, F::Str, false), (2, F::Str, false), (3, F::KeyValue, true), (4, F::Varint, false)];

fn status(b: &[u8]) -> R<(&str, u64)> {
    let mut r = Reader::new(b);
    let (mut msg, mut code, mut seen) = ("", 0, 0u8);
    while !r.done() {
        match r.tag()? {
            (2, 2) if seen & 1 == 0 => {
                msg = utf8(r.bytes()?)?;
                seen |= 1;
            }
            (3, 0) if seen & 2 == 0 => {
                code = r.varint()?;
                seen |= 2;
            }
            _ => return Err(Defer),
        }
    }
    Ok((msg, code))
}

fn span(b: &[u8]) -> R<Span<'_>> {
    let mut r = Reader::new(b);
    let mut s = Span { trace_id: [0; 16], span_id: [0; 8], parent: None, trace_state: Cow::Borrowed(""), name: Cow::Borrowed(""),
        kind: 0, start: 0, end: 0, attrs: Vec::new(), status_message: Cow::Borrowed(""), status_code: 0, flags: 0 };
    let (mut tid, mut sid, mut parent): (&[u8], &[u8], &[u8]) = (&[], &[], &[]);
    let mut raw_attrs = Vec::new();
    let mut seen = 0u32;
    while !r.done() {
        let (num, wt) = r.tag()?;
        if !matches!(num, 9 | 11 | 13) {
            if num > 16 || seen & (1 << num) != 0 {
                return Err(Defer);
            }
            seen |= 1 << num;
        }
        match (num, wt) {
            (1, 2) => tid = r.bytes()?,
            (2, 2) => sid = r.bytes()?,
            (3, 2) => s.trace_state = Cow::Borrowed(utf8(r.bytes()?)?),
            (4, 2) => parent = r.bytes()?,
            (5, 2) => s.name = Cow::Borrowed(utf8(r.bytes()?)?),
            (6, 0) => s.kind = r.varint()?,
            (7, 1) => s.start = r.fixed64()?,
            (8, 1) => s.end = r.fixed64()?,
            (9, 2) => raw_attrs.push(r.bytes()?),
            (10, 0) | (12, 0) | (14, 0) => {
                r.varint()?;
            }
            (11, 2) => check_message(r.bytes()?, EVENT)?,
            (13, 2) => check_message(r.bytes()?, LINK)?,
            (15, 2) => {
                let (m, c) = status(r.bytes()?)?;
                s.status_message = Cow::Borrowed(m);
                s.status_code = c;
            }
            (16, 5) => s.flags = r.fixed32()?,
            _ => return Err(Defer),
        }
    }
    // what the reference rejects (or reads through a 32-bit enum) is its to explain
    (s.trace_id, s.span_id, s.parent) = span_ids(tid, sid, parent)?;
    if s.kind > 5 || s.status_code > 2 || s.start == 0 || s.end == 0 {
        return Err(Defer);
    }
    s.attrs = attributes(&raw_attrs)?;
    Ok(s)
}

/// One `Resource*` of an export request: its attributes and the items (spans, log records,
/// metrics) of all its scopes, in order.
pub struct Res<'a, T> {
    pub attrs: Vec<Kv<'a>>,
    pub items: Vec<T>,
}

/// A `ResourceSpans`: spans under one resource.
pub type Resource<'a> = Res<'a, Span<'a>>;
/// A `ResourceLogs`: log records under one resource.
pub type LogResource<'a> = Res<'a, Log<'a>>;

fn resource_attrs(b: &[u8]) -> R<Vec<&[u8]>> {
    let mut r = Reader::new(b);
    let mut out = Vec::new();
    let mut dropped = false;
    while !r.done() {
        match r.tag()? {
            (1, 2) => out.push(r.bytes()?),
            (2, 0) if !dropped => {
                r.varint()?;
                dropped = true;
            }
            _ => return Err(Defer),
        }
    }
    Ok(out)
}

/// A `Scope*` message (scope = 1, items = 2, schema_url = 3; the same numbers for spans,
/// logs and metrics): each item read by `item` into `into`; the scope is only checked.
fn scope_items<'a, T>(b: &'a [u8], into: &mut Vec<T>, item: fn(&'a [u8]) -> R<T>) -> R<()> {
    let mut r = Reader::new(b);
    let mut seen = 0u8;
    while !r.done() {
        match r.tag()? {
            (1, 2) if seen & 1 == 0 => {
                check_message(r.bytes()?, SCOPE)?;
                seen |= 1;
            }
            (2, 2) => into.push(item(r.bytes()?)?),
            (3, 2) if seen & 2 == 0 => {
                utf8(r.bytes()?)?;
                seen |= 2;
            }
            _ => return Err(Defer),
        }
    }
    Ok(())
}

/// A `Resource*` message (resource = 1, scopes = 2, schema_url = 3; the same numbers for
/// every signal): the resource's attributes (duplicates defer) and every scope's items.
fn resource_items<'a, T>(b: &'a [u8], item: fn(&'a [u8]) -> R<T>) -> R<Res<'a, T>> {
    let mut r = Reader::new(b);
    let mut raw_attrs = Vec::new();
    let mut items = Vec::new();
    let mut seen = 0u8;
    while !r.done() {
        match r.tag()? {
            (1, 2) if seen & 1 == 0 => {
                raw_attrs = resource_attrs(r.bytes()?)?;
                seen |= 1;
            }
            (2, 2) => scope_items(r.bytes()?, &mut items, item)?,
            (3, 2) if seen & 2 == 0 => {
                utf8(r.bytes()?)?;
                seen |= 2;
            }
            _ => return Err(Defer),
        }
    }
    Ok(Res { attrs: attributes(&raw_attrs)?, items })
}

/// Every resource of an export request (field 1, repeated), each read by [`resource_items`].
pub(crate) fn request_items<'a, T>(b: &'a [u8], item: fn(&'a [u8]) -> R<T>) -> R<Vec<Res<'a, T>>> {
    let mut r = Reader::new(b);
    let mut out = Vec::new();
    while !r.done() {
        match r.tag()? {
            (1, 2) => out.push(resource_items(r.bytes()?, item)?),
            _ => return Err(Defer),
        }
    }
    Ok(out)
}

/// Every resource of an `ExportTraceServiceRequest`, or Defer; a message without spans defers
/// (the reference rejects it).
pub fn trace_request(b: &[u8]) -> R<Vec<Resource<'_>>> {
    let out = request_items(b, span)?;
    if out.iter().all(|res| res.items.is_empty()) {
        return Err(Defer);
    }
    Ok(out)
}

/// A log record's body as the reference's `message` text: a string as it is, unset `""`, a
/// bool or an integer as its JSON; other kinds (double, bytes, array, kvlist) defer.
fn body(b: &[u8]) -> R<Text<'_>> {
    let mut r = Reader::new(b);
    let mut out = Text::Str("");
    let mut fields = 0;
    while !r.done() {
        let (num, wt) = r.tag()?;
        fields += 1;
        if fields > 1 {
            return Err(Defer);
        }
        out = match (num, wt) {
            (1, 2) => Text::Str(utf8(r.bytes()?)?),
            (2, 0) => Text::Str(if r.varint()? != 0 { "true" } else { "false" }),
            (3, 0) => Text::Owned((r.varint()? as i64).to_string()),
            _ => return Err(Defer),
        };
    }
    Ok(out)
}

pub struct Log<'a> {
    pub time: u64,
    pub observed: u64,
    /// the level as the reference derives it from severity_number, else severity_text
    pub level: Cow<'a, str>,
    pub message: Text<'a>,
    pub trace_id: Option<[u8; 16]>,
    pub span_id: Option<[u8; 8]>,
    pub attrs: Vec<Kv<'a>>,
    pub event_name: Cow<'a, str>,
}

const SEVERITIES: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];

/// An optional id as the reference reads it: None when empty or all zero; a length other
/// than `N` defers (the reference rejects the record).
pub(crate) fn opt_id<const N: usize>(b: &[u8]) -> R<Option<[u8; N]>> {
    if b.is_empty() || (b.len() == N && b.iter().all(|&c| c == 0)) {
        return Ok(None);
    }
    b.try_into().map(Some).map_err(|_| Defer)
}

/// `_level(severity_number, severity_text)` of the reference; text that is not printable
/// ASCII defers (Python's Unicode `strip` / `upper`).
pub(crate) fn level(number: u64, text: &str) -> R<Cow<'static, str>> {
    if number > i32::MAX as u64 {
        return Err(Defer); // an int32 enum read from a wider varint: the reference's to judge
    }
    if (1..=24).contains(&number) {
        return Ok(SEVERITIES[((number - 1) / 4) as usize].into());
    }
    if text.is_empty() {
        return Ok("INFO".into());
    }
    if !text.bytes().all(|c| (0x20..0x7f).contains(&c)) {
        return Err(Defer);
    }
    Ok(text.trim_matches(' ').to_ascii_uppercase().into())
}

fn log_record(b: &[u8]) -> R<Log<'_>> {
    let mut r = Reader::new(b);
    let (mut time, mut observed, mut number, mut text) = (0u64, 0u64, 0u64, "");
    let (mut message, mut tid, mut sid, mut event_name) = (Text::Str(""), &b""[..], &b""[..], "");
    let mut raw_attrs = Vec::new();
    let mut seen = 0u32;
    while !r.done() {
        let (num, wt) = r.tag()?;
        if num != 6 {
            if num > 12 || seen & (1 << num) != 0 {
                return Err(Defer);
            }
            seen |= 1 << num;
        }
        match (num, wt) {
            (1, 1) => time = r.fixed64()?,
            (2, 0) => number = r.varint()?,
            (3, 2) => text = utf8(r.bytes()?)?,
            (5, 2) => message = body(r.bytes()?)?,
            (6, 2) => raw_attrs.push(r.bytes()?),
            (7, 0) => {
                r.varint()?;
            }
            (8, 5) => {
                r.fixed32()?;
            }
            (9, 2) => tid = r.bytes()?,
            (10, 2) => sid = r.bytes()?,
            (11, 1) => observed = r.fixed64()?,
            (12, 2) => event_name = utf8(r.bytes()?)?,
            _ => return Err(Defer),
        }
    }
    if time == 0 && observed == 0 {
        return Err(Defer); // the reference rejects it
    }
    Ok(Log { time, observed, level: level(number, text)?, message, trace_id: opt_id(tid)?, span_id: opt_id(sid)?,
        attrs: attributes(&raw_attrs)?, event_name: Cow::Borrowed(event_name) })
}

/// Every resource of an `ExportLogsServiceRequest`, or Defer; a message without log records
/// defers (the reference rejects it), as does any record the reference would reject.
pub fn logs_request(b: &[u8]) -> R<Vec<LogResource<'_>>> {
    let out = request_items(b, log_record)?;
    if out.iter().all(|res| res.items.is_empty()) {
        return Err(Defer);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(num: u32, wt: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![((num << 3) | wt as u32) as u8];
        if wt == 2 {
            out.push(body.len() as u8);
        }
        out.extend_from_slice(body);
        out
    }

    fn span_bytes(extra: &[u8]) -> Vec<u8> {
        let mut s = field(1, 2, &[1; 16]);
        s.extend(field(2, 2, &[2; 8]));
        s.extend(field(5, 2, b"GET /"));
        s.extend(field(6, 0, &[2]));
        s.extend(field(7, 1, &10u64.to_le_bytes()));
        s.extend(field(8, 1, &20u64.to_le_bytes()));
        s.extend_from_slice(extra);
        s
    }

    fn request(span: &[u8]) -> Vec<u8> {
        let scope = field(2, 2, span);
        let rs = field(2, 2, &scope);
        field(1, 2, &rs)
    }

    #[test]
    fn reads_a_span() {
        let kv = [field(1, 2, b"n"), field(2, 2, &field(3, 0, &[7]))].concat();
        let msg = request(&span_bytes(&field(9, 2, &kv)));
        let res = trace_request(&msg).unwrap();
        let sp = &res[0].items[0];
        assert_eq!((&*sp.name, sp.kind, sp.start, sp.end), ("GET /", 2, 10, 20));
        assert_eq!(&*sp.attrs[0].key, "n");
        assert!(matches!(&sp.attrs[0].text, Text::Owned(t) if t == "7"));
        assert_eq!(sp.attrs[0].type_name, Some("int"));
    }

    fn log_request(record: &[u8]) -> Vec<u8> {
        let scope = field(2, 2, record);
        let rl = field(2, 2, &scope);
        field(1, 2, &rl)
    }

    #[test]
    fn reads_a_log_record() {
        let mut rec = field(1, 1, &5_000_000u64.to_le_bytes());
        rec.extend(field(3, 2, b" warn "));
        rec.extend(field(5, 2, &field(3, 0, &[7])));
        rec.extend(field(10, 2, &[0; 8]));
        let msg = log_request(&rec);
        let res = logs_request(&msg).unwrap();
        let lr = &res[0].items[0];
        assert_eq!((lr.time, lr.observed, &*lr.level, lr.span_id), (5_000_000, 0, "WARN", None));
        assert!(matches!(&lr.message, Text::Owned(t) if t == "7"));
        assert_eq!(level(9, "x").unwrap(), "INFO");
        assert_eq!(level(0, "").unwrap(), "INFO");
        assert_eq!(level(30, "   ").unwrap(), "");
        assert!(level(0, "\u{e9}").is_err() && level(1 << 40, "").is_err());
    }

    #[test]
    fn defers_log_records_the_reference_judges() {
        let time = field(1, 1, &1u64.to_le_bytes());
        for bad in [
            log_request(&field(3, 2, b"no time")),                                  // rejected by the reference
            log_request(&[time.clone(), field(9, 2, &[1; 5])].concat()),            // a short trace id
            log_request(&[time.clone(), field(5, 2, &field(4, 1, &[0; 8]))].concat()), // a double body
            log_request(&[time.clone(), field(4, 0, &[1])].concat()),               // a reserved field
            log_request(&[time.clone(), time.clone()].concat()),                    // a time twice
            Vec::new(),                                                             // no records
        ] {
            assert!(logs_request(&bad).is_err());
        }
    }

    #[test]
    fn doubles_as_python_repr() {
        for (v, want) in [(1.5, "1.5"), (100.0, "100.0"), (1e16, "1e+16"), (1e15, "1000000000000000.0"), (0.0001, "0.0001"),
            (0.00001, "1e-05"), (-0.0, "-0.0"), (0.1 + 0.2, "0.30000000000000004"), (1.5e-300, "1.5e-300"), (f64::MAX, "1.7976931348623157e+308"),
            (-123.456, "-123.456"), (f64::NAN, "nan"), (f64::NEG_INFINITY, "-inf")] {
            assert_eq!(py_repr(v), want);
        }
    }

    #[test]
    fn defers_what_the_reference_judges() {
        let double = [field(1, 2, b"d"), field(2, 2, &field(6, 2, &[]))].concat();
        for bad in [
            request(&span_bytes(&field(6, 0, &[9]))),             // kind given twice
            request(&span_bytes(&field(9, 2, &double))),          // a kvlist attribute
            request(&span_bytes(&field(99, 0, &[1]))),            // an unknown field
            request(&span_bytes(&field(5, 2, b"\xff"))[..]),      // name twice, and not UTF-8
            request(&span_bytes(&[])[..30]),                      // cut
            Vec::new(),                                           // no spans
        ] {
            assert!(trace_request(&bad).is_err());
        }
    }
}
