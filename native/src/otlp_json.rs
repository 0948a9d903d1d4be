//! OTLP/JSON export requests (spans, logs, metrics) read straight into the rows the
//! protobuf readers (otlp.rs, metrics.rs) give: one pass over the bytes, each value read
//! where it stands (no tree, no protobuf re-encoding), strings borrowed from the message
//! unless they hold escapes.
//!
//! It accepts exactly what the earlier transcoding reader (otlp_json_proto.rs, kept as its
//! test oracle) accepted: the shapes the Python reference (schemas/codecs/otlp_codec.py:
//! its own OTLP/JSON reader for spans and logs, protobuf's `json_format.ParseDict` for
//! metrics) certainly reads with the same rows, and *defers* the whole message otherwise:
//! any JSON `null` where a field is read, a key given twice (or in both its lowerCamelCase
//! and its proto spelling), a value of another JSON type, ids that are not plain hex,
//! integers written as floats or beyond their field's range, numbers as strings where a
//! double is expected, enum names or numbers outside the enum, attribute values other than
//! string, bool, int and double, and, in metrics (where `ParseDict` checks every field it
//! knows), any key this reader does not handle; then whatever the protobuf readers defer
//! (ids of the wrong length or all zero, no time, counts beyond int64, duplicate attribute
//! keys, a message without items). What it defers, the reference decodes, so a deferral is
//! never a wrong answer, only a slower one. Keys it does not read (events, links, scope,
//! dropped counts...) are skipped, their JSON still checked.

use std::borrow::Cow;

use crate::json::{float_of, int_of, Defer, Parser, J, R};
use crate::metrics::{Data, Histogram, Metric, MetricResource, Number, Point, Summary};
use crate::otlp::{level, opt_id, push_unique, py_repr, span_ids, Kv, Log, LogResource, Res, Resource, Span, Text};
use crate::{log_rows, metric_rows, span_rows, OtlpOut};

/// The signal of an OTLP/JSON batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Span,
    Log,
    Metric,
}

// -- values ------------------------------------------------------------------------------

/// An integer as a JSON integer literal or a string of ASCII digits (a leading `-` when
/// `signed`): the forms both the reference's reader and ParseDict take with one value.
pub(crate) fn int_text(v: &J<'_>, signed: bool) -> R<i128> {
    let t: &str = match v {
        J::Num(t, true) => t,
        J::Str(s) => s,
        _ => return Err(Defer),
    };
    let (negative, digits) = match t.strip_prefix('-') {
        Some(d) if signed => (true, d),
        _ => (false, t),
    };
    if digits.is_empty() || digits.len() > 20 {
        return Err(Defer);
    }
    let mut n: i128 = 0; // 20 digits fit: below 2^67
    for c in digits.bytes() {
        if !c.is_ascii_digit() {
            return Err(Defer);
        }
        n = n * 10 + (c - b'0') as i128;
    }
    Ok(if negative { -n } else { n })
}

pub(crate) fn int64(v: &J<'_>) -> R<i64> {
    let n = int_text(v, true)?;
    i64::try_from(n).map_err(|_| Defer)
}

/// A double given as a JSON number (integers exactly as Python's `float(int)` reads them;
/// strings such as "NaN" defer, as do underflows to zero and values beyond f64's range).
pub(crate) fn double(v: &J<'_>) -> R<f64> {
    match v {
        J::Num(t, true) => {
            if t.trim_start_matches('-').len() > 15 {
                return Err(Defer);
            }
            Ok(int_of(t)? as f64) // "-0" is the integer 0: 0.0, as float(0)
        }
        J::Num(t, false) => {
            let v = float_of(t, false)?;
            let mantissa = t.split(['e', 'E']).next().unwrap_or("");
            if v == 0.0 && mantissa.bytes().any(|c| (b'1'..=b'9').contains(&c)) {
                return Err(Defer); // underflow to zero: left to the reference's parser
            }
            Ok(v)
        }
        _ => Err(Defer),
    }
}

/// `SEVERITY_NUMBER_<LEVEL>[2-4]` -> its number (1-24), `SEVERITY_NUMBER_UNSPECIFIED` -> 0.
pub(crate) fn severity_name(s: &str) -> Option<u64> {
    const LEVELS: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
    let rest = s.strip_prefix("SEVERITY_NUMBER_")?;
    if rest == "UNSPECIFIED" {
        return Some(0);
    }
    for (n, lvl) in LEVELS.iter().enumerate() {
        if let Some(k) = rest.strip_prefix(lvl) {
            let k = match k {
                "" => 0,
                "2" => 1,
                "3" => 2,
                "4" => 3,
                _ => return None,
            };
            return Some(1 + 4 * n as u64 + k);
        }
    }
    None
}

pub(crate) const fn hex_digit(c: u8) -> R<u8> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(Defer),
    }
}

/// Each byte's value as a hex digit (either case), or 0x10 when it is none.
const HEX: [u8; 256] = {
    let mut t = [0x10u8; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = match hex_digit(c as u8) {
            Ok(v) => v,
            Err(_) => 0x10,
        };
        c += 1;
    }
    t
};

/// An id of `N` bytes written as plain hex (either case): empty is `[]`; any other length
/// or a non-hex character defers (the protobuf reader then judges the length).
fn hex_id<const N: usize>(s: &str) -> R<([u8; N], usize)> {
    let s = s.as_bytes();
    let mut out = [0u8; N];
    if s.is_empty() {
        return Ok((out, 0));
    }
    if s.len() != 2 * N {
        return Err(Defer);
    }
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let (hi, lo) = (HEX[pair[0] as usize], HEX[pair[1] as usize]);
        bad |= hi | lo;
        *o = hi << 4 | (lo & 0xf);
    }
    if bad & 0x10 != 0 {
        return Err(Defer);
    }
    Ok((out, N))
}

pub(crate) const SPAN_KINDS: [&str; 6] = ["SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER", "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER", "SPAN_KIND_CONSUMER"];
pub(crate) const STATUS_CODES: [&str; 3] = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];
pub(crate) const TEMPORALITIES: [&str; 3] = ["AGGREGATION_TEMPORALITY_UNSPECIFIED", "AGGREGATION_TEMPORALITY_DELTA",
    "AGGREGATION_TEMPORALITY_CUMULATIVE"];
pub(crate) const U64: u128 = 1 << 64;
pub(crate) const U32: u128 = 1 << 32;
const I64_MAX: u64 = i64::MAX as u64;

// -- structure ---------------------------------------------------------------------------

/// Read the object at the parser, calling `field(p, key)` for each key, which must read its
/// value. The object's JSON as the tree reader checks it (same nesting bound).
fn object<'a>(p: &mut Parser<'a>, mut field: impl FnMut(&mut Parser<'a>, &str) -> R<()>) -> R<()> {
    if p.peek() != Some(b'{') {
        return Err(Defer);
    }
    p.enter()?;
    p.i += 1;
    p.ws();
    if p.peek() == Some(b'}') {
        p.i += 1;
        p.leave();
        return Ok(());
    }
    loop {
        p.ws();
        let k = key(p)?;
        p.ws();
        p.eat(b':')?;
        p.ws();
        field(p, &k)?;
        p.ws();
        match p.peek() {
            Some(b',') => p.i += 1,
            Some(b'}') => {
                p.i += 1;
                break;
            }
            _ => return Err(Defer),
        }
    }
    p.leave();
    Ok(())
}

/// An object's key: borrowed when it has no escape (a short scan, the common case), else
/// as the parser reads any string.
#[inline]
fn key<'a>(p: &mut Parser<'a>) -> R<Cow<'a, str>> {
    let s = p.s;
    if s.get(p.i) == Some(&b'"') {
        let start = p.i + 1;
        let mut j = start;
        while j < s.len() && j - start < 32 {
            match s[j] {
                b'"' => {
                    p.i = j + 1;
                    // the payload is UTF-8 and a `"` ends no multi-byte character
                    return Ok(Cow::Borrowed(std::str::from_utf8(&s[start..j]).map_err(|_| Defer)?));
                }
                b'\\' | 0..=0x1f => break,
                _ => j += 1,
            }
        }
    }
    p.string()
}

/// Read the array at the parser, calling `item(p)` for each element, which must read it.
fn array<'a>(p: &mut Parser<'a>, mut item: impl FnMut(&mut Parser<'a>) -> R<()>) -> R<()> {
    if p.peek() != Some(b'[') {
        return Err(Defer);
    }
    p.enter()?;
    p.i += 1;
    p.ws();
    if p.peek() == Some(b']') {
        p.i += 1;
        p.leave();
        return Ok(());
    }
    loop {
        p.ws();
        item(p)?;
        p.ws();
        match p.peek() {
            Some(b',') => p.i += 1,
            Some(b']') => {
                p.i += 1;
                break;
            }
            _ => return Err(Defer),
        }
    }
    p.leave();
    Ok(())
}

/// Read past any JSON value, checking it as the reference's JSON parser (orjson) does
/// (nothing kept): a number whose double is infinite (`1e400`) defers, for orjson rejects
/// the whole message for it wherever it stands.
fn skip(p: &mut Parser<'_>) -> R<()> {
    match p.peek() {
        Some(b'{') => object(p, |p, _| skip(p)),
        Some(b'[') => array(p, skip),
        _ => match p.value()? {
            J::Num(t, false) => finite(t),
            _ => Ok(()),
        },
    }
}

/// Whether a non-integer number literal reads as a finite double below f64::MAX (at the
/// boundary, rounding is left to the reference); integers of the parser's at most 32
/// characters always are (orjson reads those beyond 64 bits as doubles).
pub(crate) fn finite(t: &str) -> R<()> {
    if !t.bytes().any(|c| c == b'e' || c == b'E') {
        return Ok(()); // at most 32 characters without an exponent: far below f64::MAX
    }
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() && v.abs() < f64::MAX => Ok(()),
        _ => Err(Defer),
    }
}

/// A scalar value (an object or array defers: no field read here takes one).
fn scalar<'a>(p: &mut Parser<'a>) -> R<J<'a>> {
    match p.peek() {
        Some(b'{' | b'[') => Err(Defer),
        _ => p.value(),
    }
}

/// Mark the field of bit `bit` read; a field read twice (in either spelling) defers.
#[inline]
fn once(seen: &mut u32, bit: u32) -> R<()> {
    if *seen & (1 << bit) != 0 {
        return Err(Defer);
    }
    *seen |= 1 << bit;
    Ok(())
}

fn string<'a>(p: &mut Parser<'a>) -> R<Cow<'a, str>> {
    if p.peek() != Some(b'"') {
        return Err(Defer);
    }
    p.string()
}

/// An unsigned integer below `limit`: a plain run of at most 19 digits, quoted or not, read
/// in place; any other form as [`int_text`] reads it.
fn uint(p: &mut Parser<'_>, limit: u128) -> R<u64> {
    let (s, at) = (p.s, p.i);
    let quoted = s.get(at) == Some(&b'"');
    let start = at + quoted as usize;
    let mut j = start;
    let mut v = 0u64;
    while j < s.len() && s[j].is_ascii_digit() && j - start < 19 {
        v = v * 10 + (s[j] - b'0') as u64;
        j += 1;
    }
    let digits = j - start;
    let next = s.get(j).copied();
    let plain = digits > 0 && (digits == 1 || s[start] != b'0') && !matches!(next, Some(b'0'..=b'9'));
    if plain && (if quoted { next == Some(b'"') } else { !matches!(next, Some(b'.' | b'e' | b'E')) }) {
        p.i = j + quoted as usize;
        return if (v as u128) < limit { Ok(v) } else { Err(Defer) };
    }
    let n = int_text(&scalar(p)?, false)?;
    if n < 0 || n as u128 >= limit {
        return Err(Defer);
    }
    Ok(n as u64)
}

fn double_at(p: &mut Parser<'_>) -> R<f64> {
    double(&scalar(p)?)
}

/// An enum: one of `names` (its number is the index) or a JSON integer below `names.len()`.
fn enumeration(p: &mut Parser<'_>, names: &[&str]) -> R<u64> {
    match scalar(p)? {
        J::Str(s) => names.iter().position(|n| *n == s).map(|n| n as u64).ok_or(Defer),
        v @ J::Num(_, true) => {
            let n = int_text(&v, false)?;
            if (n as u128) < names.len() as u128 {
                Ok(n as u64)
            } else {
                Err(Defer)
            }
        }
        _ => Err(Defer),
    }
}

/// Which kinds an AnyValue may be: attributes take double, a log body does not (the
/// reference writes a double body with orjson's own formatting).
#[derive(Clone, Copy, PartialEq)]
enum Values {
    Attribute,
    Body,
}

/// An AnyValue: `{}` (unset) or exactly one of stringValue, boolValue, intValue,
/// doubleValue (other kinds and other keys defer: the protobuf reader defers them too), as
/// its text and type name.
fn any_value<'a>(p: &mut Parser<'a>, allowed: Values) -> R<(Text<'a>, Option<&'static str>)> {
    let mut out = (Text::Unset, None);
    let mut n = 0;
    object(p, |p, k| {
        n += 1;
        if n > 1 {
            return Err(Defer);
        }
        out = match k {
            "stringValue" | "string_value" => match string(p)? {
                Cow::Borrowed(s) => (Text::Str(s), None),
                Cow::Owned(s) => (Text::Owned(s), None),
            },
            "boolValue" | "bool_value" => match scalar(p)? {
                J::Bool(b) => (Text::Str(if b { "true" } else { "false" }), Some("bool")),
                _ => return Err(Defer),
            },
            "intValue" | "int_value" => (Text::Owned(int64(&scalar(p)?)?.to_string()), Some("int")),
            "doubleValue" | "double_value" if allowed == Values::Attribute => (Text::Owned(py_repr(double_at(p)?)), Some("double")),
            _ => return Err(Defer),
        };
        Ok(())
    })?;
    Ok(out)
}

/// A KeyValue: an object of `key` (a string) and `value` (an AnyValue) only.
fn key_value<'a>(p: &mut Parser<'a>) -> R<Kv<'a>> {
    let mut kv = Kv { key: Cow::Borrowed(""), text: Text::Unset, type_name: None };
    let mut seen = 0u32;
    object(p, |p, k| {
        match k {
            "key" => {
                once(&mut seen, 0)?;
                kv.key = string(p)?;
            }
            "value" => {
                once(&mut seen, 1)?;
                (kv.text, kv.type_name) = any_value(p, Values::Attribute)?;
            }
            _ => return Err(Defer),
        }
        Ok(())
    })?;
    Ok(kv)
}

/// An `attributes` list; a key given twice defers.
fn attributes<'a>(p: &mut Parser<'a>) -> R<Vec<Kv<'a>>> {
    let mut out = Vec::with_capacity(8); // no regrowth for most items' attributes
    array(p, |p| push_unique(&mut out, key_value(p)?))?;
    Ok(out)
}

/// The names of a request's levels (resources, scopes, items) in both spellings.
type Keys = [(&'static str, &'static str); 3];

/// Every resource of an export request: its attributes (`strict`, for metrics: the
/// resource has no other key) and every scope's items in order, each item read by `item`.
fn request<'a, T>(p: &mut Parser<'a>, keys: Keys, strict: bool, item: fn(&mut Parser<'a>) -> R<T>) -> R<Vec<Res<'a, T>>> {
    // room for the items of a message of one resource (few items take under 128 bytes of JSON)
    let hint = (p.s.len() / 128).min(256);
    let mut out = Vec::new();
    let mut seen = 0u32;
    object(p, |p, k| {
        if k != keys[0].0 && k != keys[0].1 {
            return skip(p);
        }
        once(&mut seen, 0)?;
        array(p, |p| {
            let mut res = Res { attrs: Vec::new(), items: Vec::with_capacity(hint) };
            let mut seen = 0u32;
            object(p, |p, k| {
                if k == "resource" {
                    once(&mut seen, 0)?;
                    let mut seen = 0u32;
                    return object(p, |p, k| match k {
                        "attributes" => {
                            once(&mut seen, 0)?;
                            res.attrs = attributes(p)?;
                            Ok(())
                        }
                        _ if strict => Err(Defer),
                        _ => skip(p),
                    });
                }
                if k != keys[1].0 && k != keys[1].1 {
                    return skip(p);
                }
                once(&mut seen, 1)?;
                array(p, |p| {
                    let mut seen = 0u32;
                    object(p, |p, k| {
                        if k != keys[2].0 && k != keys[2].1 {
                            return skip(p);
                        }
                        once(&mut seen, 0)?;
                        array(p, |p| {
                            res.items.push(item(p)?);
                            Ok(())
                        })
                    })
                })
            })?;
            out.push(res);
            Ok(())
        })
    })?;
    Ok(out)
}

// -- spans -------------------------------------------------------------------------------

/// One span: the fields the reference reads (others skipped, as it ignores them), then the
/// protobuf reader's checks.
fn span<'a>(p: &mut Parser<'a>) -> R<Span<'a>> {
    let mut s = Span { trace_id: [0; 16], span_id: [0; 8], parent: None, trace_state: Cow::Borrowed(""), name: Cow::Borrowed(""),
        kind: 0, start: 0, end: 0, attrs: Vec::new(), status_message: Cow::Borrowed(""), status_code: 0, flags: 0 };
    let (mut tid, mut sid, mut parent) = (([0u8; 16], 0), ([0u8; 8], 0), ([0u8; 8], 0));
    let mut seen = 0u32;
    object(p, |p, k| {
        match k {
            "traceId" | "trace_id" => {
                once(&mut seen, 0)?;
                tid = hex_id(&string(p)?)?;
            }
            "spanId" | "span_id" => {
                once(&mut seen, 1)?;
                sid = hex_id(&string(p)?)?;
            }
            "traceState" | "trace_state" => {
                once(&mut seen, 2)?;
                s.trace_state = string(p)?;
            }
            "parentSpanId" | "parent_span_id" => {
                once(&mut seen, 3)?;
                parent = hex_id(&string(p)?)?;
            }
            "name" => {
                once(&mut seen, 4)?;
                s.name = string(p)?;
            }
            "kind" => {
                once(&mut seen, 5)?;
                s.kind = enumeration(p, &SPAN_KINDS)?;
            }
            "startTimeUnixNano" | "start_time_unix_nano" => {
                once(&mut seen, 6)?;
                s.start = uint(p, U64)?;
            }
            "endTimeUnixNano" | "end_time_unix_nano" => {
                once(&mut seen, 7)?;
                s.end = uint(p, U64)?;
            }
            "attributes" => {
                once(&mut seen, 8)?;
                s.attrs = attributes(p)?;
            }
            "status" => {
                once(&mut seen, 9)?;
                let mut seen = 0u32;
                object(p, |p, k| {
                    match k {
                        "message" => {
                            once(&mut seen, 0)?;
                            s.status_message = string(p)?;
                        }
                        "code" => {
                            once(&mut seen, 1)?;
                            s.status_code = enumeration(p, &STATUS_CODES)?;
                        }
                        _ => skip(p)?,
                    }
                    Ok(())
                })?;
            }
            "flags" => {
                once(&mut seen, 10)?;
                s.flags = uint(p, U32)? as u32;
            }
            _ => skip(p)?,
        }
        Ok(())
    })?;
    (s.trace_id, s.span_id, s.parent) = span_ids(&tid.0[..tid.1], &sid.0[..sid.1], &parent.0[..parent.1])?;
    if s.start == 0 || s.end == 0 {
        return Err(Defer);
    }
    Ok(s)
}

// -- logs --------------------------------------------------------------------------------

/// A log record's body as the reference's `message` text: unset or absent `""`, a string,
/// a bool or an integer; other kinds defer.
fn body<'a>(p: &mut Parser<'a>) -> R<Text<'a>> {
    Ok(match any_value(p, Values::Body)?.0 {
        Text::Unset => Text::Str(""),
        t => t,
    })
}

fn log_record<'a>(p: &mut Parser<'a>) -> R<Log<'a>> {
    let (mut time, mut observed, mut number, mut text) = (0u64, 0u64, 0u64, Cow::Borrowed(""));
    let (mut message, mut tid, mut sid) = (Text::Str(""), ([0u8; 16], 0), ([0u8; 8], 0));
    let (mut attrs, mut event_name) = (Vec::new(), Cow::Borrowed(""));
    let mut seen = 0u32;
    object(p, |p, k| {
        match k {
            "timeUnixNano" | "time_unix_nano" => {
                once(&mut seen, 0)?;
                time = uint(p, U64)?;
            }
            "severityNumber" | "severity_number" => {
                once(&mut seen, 1)?;
                number = match scalar(p)? {
                    J::Str(s) => severity_name(&s).ok_or(Defer)?,
                    v @ J::Num(_, true) => {
                        let n = int_text(&v, false)?;
                        if n > i32::MAX as i128 {
                            return Err(Defer);
                        }
                        n as u64
                    }
                    _ => return Err(Defer),
                };
            }
            "severityText" | "severity_text" => {
                once(&mut seen, 2)?;
                text = string(p)?;
            }
            "body" => {
                once(&mut seen, 3)?;
                message = body(p)?;
            }
            "attributes" => {
                once(&mut seen, 4)?;
                attrs = attributes(p)?;
            }
            "traceId" | "trace_id" => {
                once(&mut seen, 5)?;
                tid = hex_id(&string(p)?)?;
            }
            "spanId" | "span_id" => {
                once(&mut seen, 6)?;
                sid = hex_id(&string(p)?)?;
            }
            "observedTimeUnixNano" | "observed_time_unix_nano" => {
                once(&mut seen, 7)?;
                observed = uint(p, U64)?;
            }
            "eventName" | "event_name" => {
                once(&mut seen, 8)?;
                event_name = string(p)?;
            }
            _ => skip(p)?,
        }
        Ok(())
    })?;
    if time == 0 && observed == 0 {
        return Err(Defer); // the reference rejects it
    }
    Ok(Log { time, observed, level: level(number, &text)?, message, trace_id: opt_id(&tid.0[..tid.1])?,
        span_id: opt_id(&sid.0[..sid.1])?, attrs, event_name })
}

// -- metrics -----------------------------------------------------------------------------

/// Which data point a metric holds (the keys its points may have differ).
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Gauge,
    Sum,
    Histogram,
    Summary,
}

/// A data point of every kind, as read (the kind's own fields beside the common ones).
struct RawPoint<'a> {
    point: Point<'a>,
    value: Option<f64>,
    count: u64,
    sum: Option<f64>,
    counts: Vec<u64>,
    bounds: Vec<f64>,
    quantiles: Vec<(f64, f64)>,
}

/// A summary's `quantileValues` item: `quantile` and `value` only, both doubles.
fn quantile(p: &mut Parser<'_>) -> R<(f64, f64)> {
    let (mut q, mut v, mut seen) = (0.0, 0.0, 0u32);
    object(p, |p, k| {
        match k {
            "quantile" => {
                once(&mut seen, 0)?;
                q = double_at(p)?;
            }
            "value" => {
                once(&mut seen, 1)?;
                v = double_at(p)?;
            }
            _ => return Err(Defer),
        }
        Ok(())
    })?;
    if !q.is_finite() {
        return Err(Defer);
    }
    Ok((q, v))
}

/// One data point of a metric of `kind`: any key its kind does not have defers (ParseDict
/// checks them); `exemplars` skipped (the reference strips them), `flags` checked only.
fn data_point<'a>(p: &mut Parser<'a>, kind: Kind) -> R<RawPoint<'a>> {
    let mut d = RawPoint { point: Point { attrs: Vec::new(), start: 0, time: 0 }, value: None, count: 0, sum: None,
        counts: Vec::new(), bounds: Vec::new(), quantiles: Vec::new() };
    let (number, histogram, summary) = (matches!(kind, Kind::Gauge | Kind::Sum), kind == Kind::Histogram, kind == Kind::Summary);
    let mut seen = 0u32;
    object(p, |p, k| {
        match k {
            "attributes" => {
                once(&mut seen, 0)?;
                d.point.attrs = attributes(p)?;
            }
            "startTimeUnixNano" | "start_time_unix_nano" => {
                once(&mut seen, 1)?;
                d.point.start = uint(p, U64)?;
            }
            "timeUnixNano" | "time_unix_nano" => {
                once(&mut seen, 2)?;
                d.point.time = uint(p, U64)?;
            }
            "flags" => {
                once(&mut seen, 3)?;
                uint(p, U32)?; // not in the metrics table
            }
            "exemplars" => skip(p)?,
            "asDouble" | "as_double" if number => {
                once(&mut seen, 4)?; // asDouble and asInt share the bit: the oneof twice defers
                d.value = Some(double_at(p)?);
            }
            "asInt" | "as_int" if number => {
                once(&mut seen, 4)?;
                d.value = Some(int64(&scalar(p)?)? as f64);
            }
            "count" if !number => {
                once(&mut seen, 5)?;
                d.count = uint(p, U64)?;
            }
            "sum" if !number => {
                once(&mut seen, 6)?;
                d.sum = Some(double_at(p)?);
            }
            "bucketCounts" | "bucket_counts" if histogram => {
                once(&mut seen, 7)?;
                array(p, |p| {
                    d.counts.push(uint(p, U64)?);
                    Ok(())
                })?;
            }
            "explicitBounds" | "explicit_bounds" if histogram => {
                once(&mut seen, 8)?;
                array(p, |p| {
                    d.bounds.push(double_at(p)?);
                    Ok(())
                })?;
            }
            "min" | "max" if histogram => {
                once(&mut seen, if k == "min" { 9 } else { 10 })?;
                double_at(p)?; // not in the metrics table
            }
            "quantileValues" | "quantile_values" if summary => {
                once(&mut seen, 11)?;
                array(p, |p| {
                    d.quantiles.push(quantile(p)?);
                    Ok(())
                })?;
            }
            _ => return Err(Defer),
        }
        Ok(())
    })?;
    if d.point.time == 0 || d.count > I64_MAX || d.counts.iter().any(|&c| c > I64_MAX) {
        return Err(Defer); // the reference rejects the point
    }
    Ok(d)
}

/// A metric's data (`gauge`, `sum`, `histogram` or `summary`): its points, and its
/// temporality and monotonicity where its kind has them; any other key defers.
fn data<'a>(p: &mut Parser<'a>, kind: Kind) -> R<Data<'a>> {
    let (mut points, mut temporality, mut monotonic, mut seen) = (Vec::new(), 0u64, false, 0u32);
    object(p, |p, k| {
        match k {
            "dataPoints" | "data_points" => {
                once(&mut seen, 0)?;
                array(p, |p| {
                    points.push(data_point(p, kind)?);
                    Ok(())
                })?;
            }
            "aggregationTemporality" | "aggregation_temporality" if matches!(kind, Kind::Sum | Kind::Histogram) => {
                once(&mut seen, 1)?;
                temporality = enumeration(p, &TEMPORALITIES)?;
            }
            "isMonotonic" | "is_monotonic" if kind == Kind::Sum => {
                once(&mut seen, 2)?;
                monotonic = match scalar(p)? {
                    J::Bool(b) => b,
                    _ => return Err(Defer),
                };
            }
            _ => return Err(Defer),
        }
        Ok(())
    })?;
    let delta = temporality == 1;
    let number = |d: RawPoint<'a>| Number { point: d.point, value: d.value };
    Ok(match kind {
        Kind::Gauge => Data::Gauge(points.into_iter().map(number).collect()),
        Kind::Sum => Data::Sum { delta, monotonic, points: points.into_iter().map(number).collect() },
        Kind::Histogram => Data::Histogram {
            delta,
            points: points.into_iter()
                .map(|d| Histogram { point: d.point, count: d.count, sum: d.sum, counts: d.counts, bounds: d.bounds })
                .collect(),
        },
        Kind::Summary => Data::Summary(points.into_iter()
            .map(|d| Summary { point: d.point, count: d.count, sum: d.sum.unwrap_or(0.0), quantiles: d.quantiles })
            .collect()),
    })
}

/// One metric: name, description, unit and exactly one of gauge, sum, histogram, summary
/// (any other key, an exponential histogram too, defers; so does a nameless metric with
/// points, or one without data).
fn metric<'a>(p: &mut Parser<'a>) -> R<Metric<'a>> {
    let (mut name, mut found, mut seen) = (Cow::Borrowed(""), None, 0u32);
    object(p, |p, k| {
        let kind = match k {
            "name" => {
                once(&mut seen, 0)?;
                name = string(p)?;
                return Ok(());
            }
            "description" | "unit" => {
                once(&mut seen, if k == "unit" { 1 } else { 2 })?;
                string(p)?;
                return Ok(());
            }
            "gauge" => Kind::Gauge,
            "sum" => Kind::Sum,
            "histogram" => Kind::Histogram,
            "summary" => Kind::Summary,
            _ => return Err(Defer),
        };
        once(&mut seen, 3)?; // the oneof twice defers
        found = Some(data(p, kind)?);
        Ok(())
    })?;
    let m = Metric { name, data: found.ok_or(Defer)? };
    if m.name.is_empty() && m.points() > 0 {
        return Err(Defer);
    }
    Ok(m)
}

// -- requests ----------------------------------------------------------------------------

/// The whole payload as one JSON object read by `read`: UTF-8, nothing but whitespace
/// around it.
fn document<'a, T>(payload: &'a [u8], read: impl FnOnce(&mut Parser<'a>) -> R<T>) -> R<T> {
    let text = std::str::from_utf8(payload).map_err(|_| Defer)?;
    let mut p = Parser::new(text);
    p.ws();
    let out = read(&mut p)?;
    p.ws();
    if !p.at_end() {
        return Err(Defer);
    }
    Ok(out)
}

const SPAN_KEYS: Keys = [("resourceSpans", "resource_spans"), ("scopeSpans", "scope_spans"), ("spans", "spans")];
const LOG_KEYS: Keys = [("resourceLogs", "resource_logs"), ("scopeLogs", "scope_logs"), ("logRecords", "log_records")];
const METRIC_KEYS: Keys = [("resourceMetrics", "resource_metrics"), ("scopeMetrics", "scope_metrics"), ("metrics", "metrics")];

/// Every resource of an OTLP/JSON `ExportTraceServiceRequest`, or Defer (a message without
/// spans too: the reference rejects it).
pub fn trace_request(payload: &[u8]) -> R<Vec<Resource<'_>>> {
    let out = document(payload, |p| request(p, SPAN_KEYS, false, span))?;
    if out.iter().all(|res| res.items.is_empty()) {
        return Err(Defer);
    }
    Ok(out)
}

/// Every resource of an OTLP/JSON `ExportLogsServiceRequest`, or Defer (a message without
/// log records too).
pub fn logs_request(payload: &[u8]) -> R<Vec<LogResource<'_>>> {
    let out = document(payload, |p| request(p, LOG_KEYS, false, log_record))?;
    if out.iter().all(|res| res.items.is_empty()) {
        return Err(Defer);
    }
    Ok(out)
}

/// Every resource of an OTLP/JSON `ExportMetricsServiceRequest`, or Defer (a message
/// without data points too).
pub fn metrics_request(payload: &[u8]) -> R<Vec<MetricResource<'_>>> {
    let out = document(payload, |p| request(p, METRIC_KEYS, true, metric))?;
    if out.iter().all(|res| res.items.iter().all(|m| m.points() == 0)) {
        return Err(Defer);
    }
    Ok(out)
}

/// Decode a batch of OTLP/JSON export requests of `signal` into rows, as
/// [`crate::otlp_spans`], [`crate::otlp_logs`] and [`crate::otlp_metrics`] decode protobuf
/// ones: a verdict per message (1: all its items are rows here; 0: left to the reference),
/// `_i` and `_item` per row, the columns. A message empty or over `max_bytes` defers (the
/// reference then judges it). Never panics for a message's content.
pub fn otlp_json(payloads: &[Option<&[u8]>], max_bytes: usize, signal: Signal) -> OtlpOut {
    let sized = |i: usize| payloads[i].filter(|p| !p.is_empty() && p.len() <= max_bytes).ok_or(Defer);
    match signal {
        Signal::Span => span_rows(payloads.len(), |i| trace_request(sized(i)?)),
        Signal::Log => log_rows(payloads.len(), |i| logs_request(sized(i)?)),
        Signal::Metric => metric_rows(payloads.len(), |i| metrics_request(sized(i)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp_json_proto::{otlp_json_via_proto, same_out};

    const SPAN: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"api"}}]},
        "scopeSpans":[{"scope":{"name":"x"},"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708",
        "name":"GET","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":1700000000001000000,
        "attributes":[{"key":"n","value":{"intValue":"7"}},{"key":"d","value":{"doubleValue":1.5}}],"status":{"code":"STATUS_CODE_ERROR"}}]}]}]}"#;

    /// The direct reader and the transcoding one give the same verdicts, rows and columns.
    fn same(payloads: &[&str], signal: Signal) -> Vec<u8> {
        let batch: Vec<Option<&[u8]>> = payloads.iter().map(|p| Some(p.as_bytes())).collect();
        let (a, b) = (otlp_json(&batch, 1 << 20, signal), otlp_json_via_proto(&batch, 1 << 20, signal));
        assert!(same_out(&a, &b), "{payloads:?}");
        a.verdicts
    }

    #[test]
    fn a_span_reads_as_its_protobuf() {
        let out = otlp_json(&[Some(SPAN.as_bytes())], 1 << 20, Signal::Span);
        assert_eq!(out.verdicts, vec![1]);
        assert_eq!(out.index.len(), 8);
        assert_eq!(same(&[SPAN, SPAN], Signal::Span), vec![1, 1]);
    }

    #[test]
    fn defers_what_it_is_unsure_of() {
        for bad in [
            SPAN.replace("\"kind\":2", "\"kind\":null"),
            SPAN.replace("\"kind\":2", "\"kind\":2.0"),
            SPAN.replace("\"name\":\"GET\"", "\"name\":\"GET\",\"name\":\"x\""),
            SPAN.replace("\"spanId\"", "\"span_id\":\"0102030405060708\",\"spanId\""),
            SPAN.replace("0102030405060708\"", "01020304 05060708\""),
            SPAN.replace("{\"intValue\":\"7\"}", "{\"intValue\":\"+7\"}"),
            SPAN.replace("{\"intValue\":\"7\"}", "{\"bytesValue\":\"AA==\"}"),
            SPAN.replace("{\"doubleValue\":1.5}", "{\"doubleValue\":\"1.5\"}"),
            SPAN.replace("\"kind\":2", "\"kind\":6"),
            SPAN.replace("\"scope\":{\"name\":\"x\"}", "\"scope\":{\"name\":\"x\",}"),
            SPAN.replace("\"status\"", "\"events\":[1,2,],\"status\""),
            SPAN.replace("\"status\"", "\"events\":[{\"x\":1e400}],\"status\""),
            SPAN.replace("\"status\"", "\"events\":-2E+308,\"status\""),
            "[]".into(),
            format!("{SPAN} x"),
            SPAN[..SPAN.len() - 3].to_string(),
        ] {
            assert_eq!(same(&[&bad], Signal::Span), vec![0], "{bad}");
        }
    }

    #[test]
    fn same_as_the_transcoder_for_every_cut_and_byte() {
        // every prefix, and every byte replaced by a few others, of a span, a log and a metric message
        let log = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"api"}},{"key":"host.name","value":{"stringValue":"h"}}]},
            "scopeLogs":[{"logRecords":[{"timeUnixNano":"5","severityNumber":"SEVERITY_NUMBER_WARN2","severityText":"w","body":{"stringValue":"hi\u00e9"},
            "attributes":[{"key":"enduser.id","value":{"intValue":3}}],"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0000000000000000","eventName":"e"}]}]}]}"#;
        let metric = r#"{"resourceMetrics":[{"resource":{"attributes":[]},"scopeMetrics":[{"metrics":[
            {"name":"g","gauge":{"dataPoints":[{"timeUnixNano":"7","asInt":"5","attributes":[{"key":"a","value":{"boolValue":true}}]}]}},
            {"name":"s","sum":{"aggregationTemporality":1,"isMonotonic":true,"dataPoints":[{"timeUnixNano":7,"startTimeUnixNano":"3","asDouble":1.25}]}},
            {"name":"h","histogram":{"aggregationTemporality":"AGGREGATION_TEMPORALITY_CUMULATIVE","dataPoints":[{"timeUnixNano":"9","count":"3","sum":2.5,"bucketCounts":["1",2],"explicitBounds":[1.0],"min":0,"max":2}]}},
            {"name":"q","summary":{"dataPoints":[{"timeUnixNano":"9","count":"3","sum":2,"quantileValues":[{"quantile":0.5,"value":1},{"quantile":0.99}]}]}}]}]}]}"#;
        for (doc, signal) in [(SPAN, Signal::Span), (log, Signal::Log), (metric, Signal::Metric)] {
            assert_eq!(same(&[doc], signal), vec![1]);
            let b = doc.as_bytes();
            let mut inputs: Vec<Vec<u8>> = (0..b.len()).map(|n| b[..n].to_vec()).collect();
            for at in 0..b.len() {
                for c in [b'"', b'0', b'{', b'}', b',', b' ', b'x', 0xff] {
                    let mut m = b.to_vec();
                    m[at] = c;
                    inputs.push(m);
                }
            }
            for chunk in inputs.chunks(64) {
                let batch: Vec<Option<&[u8]>> = chunk.iter().map(|p| Some(&p[..])).collect();
                let (a, o) = (otlp_json(&batch, 1 << 20, signal), otlp_json_via_proto(&batch, 1 << 20, signal));
                assert!(same_out(&a, &o), "{signal:?}");
            }
        }
    }
}

/// Decode a batch of OTLP/JSON export requests of `signal` (`span`, `log` or `metric`) into
/// rows ([`otlp_json`]), returned as `decode_otlp_spans` returns protobuf spans:
/// `(verdicts, batch)`. Never raises for a message's content; an unknown
/// signal is a ValueError.
#[cfg(feature = "python")]
#[pyo3::pyfunction]
pub fn decode_otlp_json(py: pyo3::Python<'_>, values: &pyo3::Bound<'_, pyo3::types::PyList>, max_bytes: usize, signal: &str)
    -> pyo3::PyResult<crate::py::OtlpExport> {
    let signal = match signal {
        "span" => Signal::Span,
        "log" => Signal::Log,
        "metric" => Signal::Metric,
        other => return Err(pyo3::exceptions::PyValueError::new_err(format!("decode_otlp_json: unknown signal {other:?}"))),
    };
    let owned = crate::py::owned_payloads(values);
    let payloads = crate::py::payload_slices(&owned);
    let out = py.allow_threads(|| otlp_json(&payloads, max_bytes, signal));
    crate::py::export_otlp(py, out)
}
