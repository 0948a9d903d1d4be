//! The earlier OTLP/JSON reader, kept as the test oracle of the direct one (otlp_json.rs):
//! each message transcoded to its protobuf form and read with the protobuf decoders
//! (otlp.rs, metrics.rs). The direct reader must give the same verdicts, rows and columns
//! for every input (its unit tests and the `otlp_json` cargo-fuzz target compare them).
//!
//! The transcoder accepts only the shapes the Python reference (schemas/codecs/otlp_codec.py:
//! its own OTLP/JSON reader for spans and logs, protobuf's `json_format.ParseDict` for
//! metrics) certainly reads as the protobuf message written here, and *defers* the whole
//! message otherwise: any JSON `null`, a key given twice (or in both its lowerCamelCase and
//! its proto spelling), a value of another JSON type, ids that are not plain hex, integers
//! written as floats or beyond their field's range, numbers as strings where a double is
//! expected, enum names or numbers outside the enum, attribute values other than string,
//! bool, int and double, and, in metrics (where `ParseDict` checks every field it knows),
//! any key this reader does not handle.

use crate::json::{Defer, Parser, J, R};
use crate::otlp_json::{double, finite, hex_digit, int64, int_text, severity_name, SPAN_KINDS, STATUS_CODES, TEMPORALITIES, U32, U64};
pub use crate::otlp_json::Signal;
use crate::{otlp_logs, otlp_metrics, otlp_spans, Bits, Col, OtlpOut};

type Obj<'a> = [(std::borrow::Cow<'a, str>, J<'a>)];

// -- protobuf writing --------------------------------------------------------------------

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn tag(out: &mut Vec<u8>, num: u32, wt: u8) {
    varint(out, ((num as u64) << 3) | wt as u64);
}

fn put_bytes(out: &mut Vec<u8>, num: u32, b: &[u8]) {
    tag(out, num, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_fixed64(out: &mut Vec<u8>, num: u32, v: u64) {
    tag(out, num, 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_varint(out: &mut Vec<u8>, num: u32, v: u64) {
    tag(out, num, 0);
    varint(out, v);
}

/// A nested message (field `num`), written by `body` in place; its length is inserted before
/// it afterwards (one move of the body's bytes, no buffer of its own).
fn put_msg(out: &mut Vec<u8>, num: u32, body: impl FnOnce(&mut Vec<u8>) -> R<()>) -> R<()> {
    tag(out, num, 2);
    let at = out.len();
    body(out)?;
    let (mut len, mut k, mut v) = ([0u8; 10], 0, (out.len() - at) as u64);
    while v >= 0x80 {
        len[k] = (v as u8) | 0x80;
        v >>= 7;
        k += 1;
    }
    len[k] = v as u8;
    out.splice(at..at, len[..=k].iter().copied());
    Ok(())
}

// -- JSON reading ------------------------------------------------------------------------

fn obj<'j, 'a>(v: &'j J<'a>) -> R<&'j Obj<'a>> {
    match v {
        J::Obj(o) => Ok(o),
        _ => Err(Defer),
    }
}

fn arr<'j, 'a>(v: &'j J<'a>) -> R<&'j [J<'a>]> {
    match v {
        J::Arr(a) => Ok(a),
        _ => Err(Defer),
    }
}

/// The value under `camel` (or its proto spelling `snake`); a key given twice, given in both
/// spellings, or null defers.
fn get<'j, 'a>(o: &'j Obj<'a>, camel: &str, snake: &str) -> R<Option<&'j J<'a>>> {
    let mut found = None;
    for (k, v) in o {
        if k == camel || k == snake {
            if found.is_some() || matches!(v, J::Null) {
                return Err(Defer);
            }
            found = Some(v);
        }
    }
    Ok(found)
}

/// Every key of `o` is one of `allowed` (ParseDict checks every field it knows: keys this
/// reader does not handle defer).
fn only(o: &Obj<'_>, allowed: &[&str]) -> R<()> {
    if o.iter().all(|(k, _)| allowed.contains(&k.as_ref())) {
        Ok(())
    } else {
        Err(Defer)
    }
}

fn list<'j, 'a>(o: &'j Obj<'a>, camel: &str, snake: &str) -> R<&'j [J<'a>]> {
    match get(o, camel, snake)? {
        None => Ok(&[]),
        Some(v) => arr(v),
    }
}

fn string<'j>(o: &'j Obj<'_>, camel: &str, snake: &str) -> R<&'j str> {
    match get(o, camel, snake)? {
        None => Ok(""),
        Some(J::Str(s)) => Ok(s),
        Some(_) => Err(Defer),
    }
}


/// An unsigned field below `limit`; absent is 0.
fn uint(o: &Obj<'_>, camel: &str, snake: &str, limit: u128) -> R<u64> {
    match get(o, camel, snake)? {
        None => Ok(0),
        Some(v) => {
            let n = int_text(v, false)?;
            if n < 0 || n as u128 >= limit {
                return Err(Defer);
            }
            Ok(n as u64)
        }
    }
}



/// An enum: one of `names` (its number is the index) or a JSON integer below `names.len()`.
fn enumeration(o: &Obj<'_>, camel: &str, snake: &str, names: &[&str]) -> R<u64> {
    match get(o, camel, snake)? {
        None => Ok(0),
        Some(J::Str(s)) => names.iter().position(|n| n == s).map(|n| n as u64).ok_or(Defer),
        Some(v @ J::Num(_, true)) => {
            let n = int_text(v, false)?;
            if (n as u128) < names.len() as u128 {
                Ok(n as u64)
            } else {
                Err(Defer)
            }
        }
        Some(_) => Err(Defer),
    }
}


/// A trace or span id: plain hex (no spaces) written as bytes, when not empty.
fn put_id(out: &mut Vec<u8>, num: u32, o: &Obj<'_>, camel: &str, snake: &str) -> R<()> {
    let s = string(o, camel, snake)?.as_bytes();
    if s.is_empty() {
        return Ok(());
    }
    if s.len() % 2 != 0 {
        return Err(Defer);
    }
    let mut b = Vec::with_capacity(s.len() / 2);
    for pair in s.chunks(2) {
        b.push(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?);
    }
    put_bytes(out, num, &b);
    Ok(())
}

fn put_str(out: &mut Vec<u8>, num: u32, s: &str) {
    if !s.is_empty() {
        put_bytes(out, num, s.as_bytes());
    }
}

/// An AnyValue: `{}` (unset) or exactly one of stringValue, boolValue, intValue, doubleValue
/// (other kinds and other keys defer: the protobuf decoder defers them too).
fn any_value(out: &mut Vec<u8>, v: &J<'_>) -> R<()> {
    let o = obj(v)?;
    match o {
        [] => Ok(()),
        [(k, v)] => match (k.as_ref(), v) {
            ("stringValue" | "string_value", J::Str(s)) => {
                put_bytes(out, 1, s.as_bytes());
                Ok(())
            }
            ("boolValue" | "bool_value", J::Bool(b)) => {
                put_varint(out, 2, *b as u64);
                Ok(())
            }
            ("intValue" | "int_value", v) => {
                put_varint(out, 3, int64(v)? as u64);
                Ok(())
            }
            ("doubleValue" | "double_value", v) => {
                put_fixed64(out, 4, double(v)?.to_bits());
                Ok(())
            }
            _ => Err(Defer),
        },
        _ => Err(Defer),
    }
}

/// The `attributes` of `holder` as repeated KeyValue (field `num`): objects with `key` (a
/// string) and `value` (an AnyValue) only.
fn put_attrs(out: &mut Vec<u8>, num: u32, holder: &Obj<'_>) -> R<()> {
    for kv in list(holder, "attributes", "attributes")? {
        let kv = obj(kv)?;
        only(kv, &["key", "value"])?;
        put_msg(out, num, |m| {
            put_str(m, 1, string(kv, "key", "key")?);
            if let Some(v) = get(kv, "value", "value")? {
                put_msg(m, 2, |a| any_value(a, v))?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// The resource (attributes only) and every scope's items of an export request, written as
/// the protobuf request: `keys` are (resources, scopes, items) in both spellings, `item`
/// writes one item, `strict` (metrics) defers on resource keys other than `attributes`.
fn request(doc: &Obj<'_>, keys: [(&str, &str); 3], strict: bool, item: fn(&mut Vec<u8>, &Obj<'_>) -> R<()>) -> R<Vec<u8>> {
    let mut out = Vec::new();
    for rs in list(doc, keys[0].0, keys[0].1)? {
        let rs = obj(rs)?;
        put_msg(&mut out, 1, |r| {
            if let Some(res) = get(rs, "resource", "resource")? {
                let res = obj(res)?;
                if strict {
                    only(res, &["attributes"])?;
                }
                put_msg(r, 1, |m| put_attrs(m, 1, res))?;
            }
            for ss in list(rs, keys[1].0, keys[1].1)? {
                let ss = obj(ss)?;
                put_msg(r, 2, |s| {
                    for it in list(ss, keys[2].0, keys[2].1)? {
                        put_msg(s, 2, |m| item(m, obj(it)?))?;
                    }
                    Ok(())
                })?;
            }
            Ok(())
        })?;
    }
    Ok(out)
}


/// One span: the fields the reference reads (others are ignored, as it ignores them).
fn span(m: &mut Vec<u8>, sp: &Obj<'_>) -> R<()> {
    put_id(m, 1, sp, "traceId", "trace_id")?;
    put_id(m, 2, sp, "spanId", "span_id")?;
    put_str(m, 3, string(sp, "traceState", "trace_state")?);
    put_id(m, 4, sp, "parentSpanId", "parent_span_id")?;
    put_str(m, 5, string(sp, "name", "name")?);
    let kind = enumeration(sp, "kind", "kind", &SPAN_KINDS)?;
    if kind != 0 {
        put_varint(m, 6, kind);
    }
    let (start, end) = (uint(sp, "startTimeUnixNano", "start_time_unix_nano", U64)?, uint(sp, "endTimeUnixNano", "end_time_unix_nano", U64)?);
    if start != 0 {
        put_fixed64(m, 7, start);
    }
    if end != 0 {
        put_fixed64(m, 8, end);
    }
    put_attrs(m, 9, sp)?;
    if let Some(status) = get(sp, "status", "status")? {
        let st = obj(status)?;
        let (message, code) = (string(st, "message", "message")?, enumeration(st, "code", "code", &STATUS_CODES)?);
        if !message.is_empty() || code != 0 {
            put_msg(m, 15, |s| {
                put_str(s, 2, message);
                if code != 0 {
                    put_varint(s, 3, code);
                }
                Ok(())
            })?;
        }
    }
    let flags = uint(sp, "flags", "flags", U32)?;
    if flags != 0 {
        tag(m, 16, 5);
        m.extend_from_slice(&(flags as u32).to_le_bytes());
    }
    Ok(())
}


/// One log record: the fields the reference reads; a body other than unset, string, bool
/// or int defers.
fn log_record(m: &mut Vec<u8>, lr: &Obj<'_>) -> R<()> {
    let time = uint(lr, "timeUnixNano", "time_unix_nano", U64)?;
    if time != 0 {
        put_fixed64(m, 1, time);
    }
    let number = match get(lr, "severityNumber", "severity_number")? {
        None => 0,
        Some(J::Str(s)) => severity_name(s).ok_or(Defer)?,
        Some(v @ J::Num(_, true)) => {
            let n = int_text(v, false)?;
            if n > i32::MAX as i128 {
                return Err(Defer);
            }
            n as u64
        }
        Some(_) => return Err(Defer),
    };
    if number != 0 {
        put_varint(m, 2, number);
    }
    put_str(m, 3, string(lr, "severityText", "severity_text")?);
    if let Some(body) = get(lr, "body", "body")? {
        if matches!(obj(body)?, [(k, _)] if k == "doubleValue" || k == "double_value") {
            return Err(Defer); // the reference writes a double body with orjson's own formatting
        }
        put_msg(m, 5, |b| any_value(b, body))?;
    }
    put_attrs(m, 6, lr)?;
    put_id(m, 9, lr, "traceId", "trace_id")?;
    put_id(m, 10, lr, "spanId", "span_id")?;
    let observed = uint(lr, "observedTimeUnixNano", "observed_time_unix_nano", U64)?;
    if observed != 0 {
        put_fixed64(m, 11, observed);
    }
    put_str(m, 12, string(lr, "eventName", "event_name")?);
    Ok(())
}

/// The fields every data point has (attributes at `attr_num`, start, time, flags), checked as
/// ParseDict checks them; `exemplars` are dropped (the reference strips them).
fn point_common(m: &mut Vec<u8>, dp: &Obj<'_>, attr_num: u32) -> R<()> {
    put_attrs(m, attr_num, dp)?;
    let start = uint(dp, "startTimeUnixNano", "start_time_unix_nano", U64)?;
    if start != 0 {
        put_fixed64(m, 2, start);
    }
    let time = uint(dp, "timeUnixNano", "time_unix_nano", U64)?;
    if time != 0 {
        put_fixed64(m, 3, time);
    }
    uint(dp, "flags", "flags", U32)?; // not in the metrics table
    Ok(())
}

const POINT_KEYS: [&str; 10] = ["attributes", "startTimeUnixNano", "start_time_unix_nano", "timeUnixNano", "time_unix_nano",
    "flags", "exemplars", "count", "sum", "quantileValues"];

fn number_point(m: &mut Vec<u8>, dp: &Obj<'_>) -> R<()> {
    only(dp, &[&POINT_KEYS[..7], &["asDouble", "as_double", "asInt", "as_int"]].concat())?;
    point_common(m, dp, 7)?;
    match (get(dp, "asDouble", "as_double")?, get(dp, "asInt", "as_int")?) {
        (Some(_), Some(_)) => return Err(Defer), // the oneof twice: ParseDict refuses it
        (Some(v), None) => put_fixed64(m, 4, double(v)?.to_bits()),
        (None, Some(v)) => put_fixed64(m, 6, int64(v)? as u64),
        (None, None) => {}
    }
    Ok(())
}

fn doubles(v: &J<'_>) -> R<Vec<f64>> {
    arr(v)?.iter().map(double).collect()
}

fn histogram_point(m: &mut Vec<u8>, dp: &Obj<'_>) -> R<()> {
    only(dp, &[&POINT_KEYS[..9], &["bucketCounts", "bucket_counts", "explicitBounds", "explicit_bounds", "min", "max"]].concat())?;
    point_common(m, dp, 9)?;
    let count = uint(dp, "count", "count", U64)?;
    if count != 0 {
        put_fixed64(m, 4, count);
    }
    if let Some(v) = get(dp, "sum", "sum")? {
        put_fixed64(m, 5, double(v)?.to_bits()); // optional: present even when 0
    }
    if let Some(v) = get(dp, "bucketCounts", "bucket_counts")? {
        for c in arr(v)? {
            let n = int_text(c, false)?;
            if n < 0 || n as u128 >= U64 {
                return Err(Defer);
            }
            put_fixed64(m, 6, n as u64);
        }
    }
    if let Some(v) = get(dp, "explicitBounds", "explicit_bounds")? {
        for b in doubles(v)? {
            put_fixed64(m, 7, b.to_bits());
        }
    }
    for k in ["min", "max"] {
        if let Some(v) = get(dp, k, k)? {
            double(v)?; // not in the metrics table
        }
    }
    Ok(())
}

fn summary_point(m: &mut Vec<u8>, dp: &Obj<'_>) -> R<()> {
    only(dp, &[&POINT_KEYS[..], &["quantile_values"]].concat())?;
    point_common(m, dp, 7)?;
    let count = uint(dp, "count", "count", U64)?;
    if count != 0 {
        put_fixed64(m, 4, count);
    }
    if let Some(v) = get(dp, "sum", "sum")? {
        put_fixed64(m, 5, double(v)?.to_bits());
    }
    for q in list(dp, "quantileValues", "quantile_values")? {
        let q = obj(q)?;
        only(q, &["quantile", "value"])?;
        put_msg(m, 6, |w| {
            for (num, k) in [(1, "quantile"), (2, "value")] {
                if let Some(v) = get(q, k, k)? {
                    put_fixed64(w, num, double(v)?.to_bits());
                }
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// One metric: name, description, unit and exactly one of gauge, sum, histogram, summary
/// (any other key, an exponential histogram too, defers).
fn metric(m: &mut Vec<u8>, mt: &Obj<'_>) -> R<()> {
    only(mt, &["name", "description", "unit", "gauge", "sum", "histogram", "summary"])?;
    put_str(m, 1, string(mt, "name", "name")?);
    put_str(m, 2, string(mt, "description", "description")?);
    put_str(m, 3, string(mt, "unit", "unit")?);
    let bodies: Vec<&(std::borrow::Cow<'_, str>, J<'_>)> =
        mt.iter().filter(|(k, _)| matches!(k.as_ref(), "gauge" | "sum" | "histogram" | "summary")).collect();
    let [(kind, body)] = bodies.as_slice() else { return Err(Defer) };
    let b = obj(body)?;
    let (num, point, extra): (u32, fn(&mut Vec<u8>, &Obj<'_>) -> R<()>, &[&str]) = match kind.as_ref() {
        "gauge" => (5, number_point, &[]),
        "sum" => (7, number_point, &["aggregationTemporality", "aggregation_temporality", "isMonotonic", "is_monotonic"]),
        "histogram" => (9, histogram_point, &["aggregationTemporality", "aggregation_temporality"]),
        _ => (11, summary_point, &[]),
    };
    only(b, &[&["dataPoints", "data_points"], extra].concat())?;
    put_msg(m, num, |w| {
        for dp in list(b, "dataPoints", "data_points")? {
            put_msg(w, 1, |p| point(p, obj(dp)?))?;
        }
        if !extra.is_empty() {
            let t = enumeration(b, "aggregationTemporality", "aggregation_temporality", &TEMPORALITIES)?;
            if t != 0 {
                put_varint(w, 2, t);
            }
        }
        if extra.len() > 2 {
            match get(b, "isMonotonic", "is_monotonic")? {
                None | Some(J::Bool(false)) => {}
                Some(J::Bool(true)) => put_varint(w, 3, 1),
                Some(_) => return Err(Defer),
            }
        }
        Ok(())
    })
}

/// Whether every number in `v` reads as a finite double (orjson rejects the whole message
/// otherwise, wherever the number stands).
fn numbers_finite(v: &J<'_>) -> bool {
    match v {
        J::Num(t, false) => finite(t).is_ok(),
        J::Arr(a) => a.iter().all(numbers_finite),
        J::Obj(o) => o.iter().all(|(_, v)| numbers_finite(v)),
        _ => true,
    }
}

/// The protobuf form of one OTLP/JSON export request of `signal`, or Defer (see the module
/// docs for what defers).
pub fn to_proto(payload: &[u8], signal: Signal) -> R<Vec<u8>> {
    let text = std::str::from_utf8(payload).map_err(|_| Defer)?;
    let mut p = Parser::new(text);
    p.ws();
    let doc = p.value()?;
    p.ws();
    if !p.at_end() {
        return Err(Defer);
    }
    if !numbers_finite(&doc) {
        return Err(Defer);
    }
    let doc = obj(&doc)?;
    match signal {
        Signal::Span => request(doc, [("resourceSpans", "resource_spans"), ("scopeSpans", "scope_spans"), ("spans", "spans")], false, span),
        Signal::Log => request(doc, [("resourceLogs", "resource_logs"), ("scopeLogs", "scope_logs"), ("logRecords", "log_records")], false, log_record),
        Signal::Metric => request(doc, [("resourceMetrics", "resource_metrics"), ("scopeMetrics", "scope_metrics"), ("metrics", "metrics")], true, metric),
    }
}

/// Decode a batch of OTLP/JSON export requests of `signal` into rows by transcoding, as [`otlp_spans`],
/// [`otlp_logs`] and [`otlp_metrics`] decode protobuf ones: a verdict per message (1: all its
/// items are rows here; 0: left to the reference), `_i` and `_item` per row, the columns.
/// A message over `max_bytes` defers (the reference then checks each item's size). Never
/// panics for a message's content.
pub fn otlp_json_via_proto(payloads: &[Option<&[u8]>], max_bytes: usize, signal: Signal) -> OtlpOut {
    let protos: Vec<Option<Vec<u8>>> = payloads.iter()
        .map(|p| p.filter(|p| !p.is_empty() && p.len() <= max_bytes).and_then(|p| to_proto(p, signal).ok()))
        .collect();
    let slices: Vec<Option<&[u8]>> = protos.iter().map(|p| p.as_deref()).collect();
    match signal {
        Signal::Span => otlp_spans(&slices, usize::MAX),
        Signal::Log => otlp_logs(&slices, usize::MAX),
        Signal::Metric => otlp_metrics(&slices, usize::MAX),
    }
}

/// Whether two decodes are the same: verdicts, `_i`, `_item` and every column's buffers.
pub fn same_out(a: &OtlpOut, b: &OtlpOut) -> bool {
    fn bits(a: &Bits, b: &Bits) -> bool {
        a.bytes == b.bytes && a.len == b.len && a.nulls == b.nulls
    }
    fn col(a: &Col, b: &Col) -> bool {
        match (a, b) {
            (Col::Str { valid: v1, offsets: o1, data: d1 }, Col::Str { valid: v2, offsets: o2, data: d2 }) => {
                bits(v1, v2) && o1 == o2 && d1 == d2
            }
            (Col::Prim { valid: v1, data: d1 }, Col::Prim { valid: v2, data: d2 }) => bits(v1, v2) && d1 == d2,
            (Col::Bool { valid: v1, values: x1 }, Col::Bool { valid: v2, values: x2 }) => bits(v1, v2) && bits(x1, x2),
            (Col::List { valid: v1, offsets: o1, child: c1 }, Col::List { valid: v2, offsets: o2, child: c2 }) => {
                bits(v1, v2) && o1 == o2 && col(c1, c2)
            }
            (Col::Struct { valid: v1, children: c1 }, Col::Struct { valid: v2, children: c2 }) => {
                bits(v1, v2) && c1.len() == c2.len() && c1.iter().zip(c2).all(|(x, y)| col(x, y))
            }
            (Col::Map { valid: v1, offsets: o1, keys: k1, values: x1 }, Col::Map { valid: v2, offsets: o2, keys: k2, values: x2 }) => {
                bits(v1, v2) && o1 == o2 && col(k1, k2) && col(x1, x2)
            }
            _ => false,
        }
    }
    a.verdicts == b.verdicts && a.index == b.index && a.items == b.items && a.cols.len() == b.cols.len()
        && a.cols.iter().zip(&b.cols).all(|(x, y)| col(x, y))
}
