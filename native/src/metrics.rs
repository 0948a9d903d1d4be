//! OTLP protobuf `ExportMetricsServiceRequest` messages into data points.
//!
//! As the span and log readers (otlp.rs), this accepts only what the Python reference
//! (schemas/codecs/otlp_codec.py `_proto_metrics`) certainly reads the same way and defers
//! the whole message otherwise: a field it does not expect, a singular field or a `data`
//! oneof given twice, invalid UTF-8, a data point the reference would reject (no name, no
//! time, a count beyond int64), a metric of a kind it rejects (exponential histogram, no
//! data), attribute values the reference formats itself, duplicate attribute keys, a
//! summary quantile that is not finite.

use crate::json::{Defer, R};
use crate::otlp::{attributes, check_message, key_value, request_items, utf8, Kv, Reader, Res, F};

/// What every data point has: its attributes and times.
pub struct Point<'a> {
    pub attrs: Vec<Kv<'a>>,
    pub start: u64,
    pub time: u64,
}

/// A gauge's or a sum's data point: `as_double`, `as_int` (as a double) or neither.
pub struct Number<'a> {
    pub point: Point<'a>,
    pub value: Option<f64>,
}

pub struct Histogram<'a> {
    pub point: Point<'a>,
    pub count: u64,
    pub sum: Option<f64>,
    pub counts: Vec<u64>,
    pub bounds: Vec<f64>,
}

pub struct Summary<'a> {
    pub point: Point<'a>,
    pub count: u64,
    pub sum: f64,
    /// `(quantile, value)` in order
    pub quantiles: Vec<(f64, f64)>,
}

/// A metric's data; `delta` is `aggregation_temporality == DELTA` (anything else reads as
/// cumulative, as the reference reads it).
pub enum Data<'a> {
    Gauge(Vec<Number<'a>>),
    Sum { delta: bool, monotonic: bool, points: Vec<Number<'a>> },
    Histogram { delta: bool, points: Vec<Histogram<'a>> },
    Summary(Vec<Summary<'a>>),
}

pub struct Metric<'a> {
    pub name: std::borrow::Cow<'a, str>,
    pub data: Data<'a>,
}

impl Metric<'_> {
    /// Its data points: the items the reference counts.
    pub fn points(&self) -> usize {
        match &self.data {
            Data::Gauge(p) | Data::Sum { points: p, .. } => p.len(),
            Data::Histogram { points, .. } => points.len(),
            Data::Summary(p) => p.len(),
        }
    }
}

/// A `ResourceMetrics`: metrics under one resource.
pub type MetricResource<'a> = Res<'a, Metric<'a>>;

const EXEMPLAR: &[(u32, F, bool)] = &[(7, F::KeyValue, true), (2, F::Fixed64, false), (3, F::Fixed64, false), (6, F::Fixed64, false),
    (4, F::Bytes, false), (5, F::Bytes, false)];
const VALUE_AT_QUANTILE: (u32, u32) = (1, 2);
const I64_MAX: u64 = i64::MAX as u64;

/// Mark field `num` seen; a singular field seen twice defers (the reference keeps the last
/// or merges).
fn once(seen: &mut u32, num: u32) -> R<()> {
    if num >= 32 || *seen & (1 << num) != 0 {
        return Err(Defer);
    }
    *seen |= 1 << num;
    Ok(())
}

/// A repeated fixed64 field's values, packed (wire type 2) or not (1), appended to `into`.
fn fixed64s(r: &mut Reader<'_>, wt: u8, into: &mut Vec<u64>) -> R<()> {
    match wt {
        1 => into.push(r.fixed64()?),
        2 => {
            let b = r.bytes()?;
            if b.len() % 8 != 0 {
                return Err(Defer);
            }
            into.extend(b.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())));
        }
        _ => return Err(Defer),
    }
    Ok(())
}

/// The fields every point has (attributes `attr_num`, start 2, time 3) and `flags`
/// (`flags_num`, a varint), read into `point`; Ok(false) when `(num, wt)` is none of them.
fn common<'a>(r: &mut Reader<'a>, num: u32, wt: u8, attr_num: u32, flags_num: u32, raw_attrs: &mut Vec<&'a [u8]>,
              point: &mut Point<'a>) -> R<bool> {
    match (num, wt) {
        (n, 2) if n == attr_num => raw_attrs.push(r.bytes()?),
        (2, 1) => point.start = r.fixed64()?,
        (3, 1) => point.time = r.fixed64()?,
        (n, 0) if n == flags_num => {
            r.varint()?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

fn new_point<'a>() -> Point<'a> {
    Point { attrs: Vec::new(), start: 0, time: 0 }
}

/// The checks of the reference's `_MetricRows.add` that the point passes (else it rejects it).
fn finish<'a>(mut point: Point<'a>, raw_attrs: &[&'a [u8]]) -> R<Point<'a>> {
    if point.time == 0 {
        return Err(Defer);
    }
    point.attrs = attributes(raw_attrs)?;
    Ok(point)
}

fn number_point(b: &[u8]) -> R<Number<'_>> {
    let mut r = Reader::new(b);
    let (mut point, mut raw_attrs, mut value, mut seen) = (new_point(), Vec::new(), None, 0u32);
    while !r.done() {
        let (num, wt) = r.tag()?;
        if num != 7 && num != 5 {
            once(&mut seen, num)?;
        }
        if common(&mut r, num, wt, 7, 8, &mut raw_attrs, &mut point)? {
            continue;
        }
        match (num, wt) {
            (4, 1) | (6, 1) if value.is_none() => {
                let bits = r.fixed64()?;
                value = Some(if num == 4 { f64::from_bits(bits) } else { bits as i64 as f64 });
            }
            (5, 2) => check_message(r.bytes()?, EXEMPLAR)?,
            _ => return Err(Defer),
        }
    }
    Ok(Number { point: finish(point, &raw_attrs)?, value })
}

fn histogram_point(b: &[u8]) -> R<Histogram<'_>> {
    let mut r = Reader::new(b);
    let (mut point, mut raw_attrs, mut seen) = (new_point(), Vec::new(), 0u32);
    let (mut count, mut sum, mut counts, mut bounds) = (0u64, None, Vec::new(), Vec::new());
    while !r.done() {
        let (num, wt) = r.tag()?;
        if !matches!(num, 6 | 7 | 8 | 9) {
            once(&mut seen, num)?;
        }
        if common(&mut r, num, wt, 9, 10, &mut raw_attrs, &mut point)? {
            continue;
        }
        match (num, wt) {
            (4, 1) => count = r.fixed64()?,
            (5, 1) => sum = Some(f64::from_bits(r.fixed64()?)),
            (6, _) => fixed64s(&mut r, wt, &mut counts)?,
            (7, _) => {
                let mut raw = Vec::new();
                fixed64s(&mut r, wt, &mut raw)?;
                bounds.extend(raw.into_iter().map(f64::from_bits));
            }
            (8, 2) => check_message(r.bytes()?, EXEMPLAR)?,
            (11, 1) | (12, 1) => {
                r.fixed64()?; // min, max: not in the metrics table
            }
            _ => return Err(Defer),
        }
    }
    if count > I64_MAX || counts.iter().any(|&c| c > I64_MAX) {
        return Err(Defer); // the reference rejects the point
    }
    Ok(Histogram { point: finish(point, &raw_attrs)?, count, sum, counts, bounds })
}

fn quantile(b: &[u8]) -> R<(f64, f64)> {
    let mut r = Reader::new(b);
    let (mut q, mut v, mut seen) = (0.0, 0.0, 0u32);
    while !r.done() {
        let (num, wt) = r.tag()?;
        once(&mut seen, num)?;
        match (num, wt) {
            (n, 1) if n == VALUE_AT_QUANTILE.0 => q = f64::from_bits(r.fixed64()?),
            (n, 1) if n == VALUE_AT_QUANTILE.1 => v = f64::from_bits(r.fixed64()?),
            _ => return Err(Defer),
        }
    }
    if !q.is_finite() {
        return Err(Defer); // its label: Python's own spelling of nan / inf
    }
    Ok((q, v))
}

fn summary_point(b: &[u8]) -> R<Summary<'_>> {
    let mut r = Reader::new(b);
    let (mut point, mut raw_attrs, mut seen) = (new_point(), Vec::new(), 0u32);
    let (mut count, mut sum, mut quantiles) = (0u64, 0.0, Vec::new());
    while !r.done() {
        let (num, wt) = r.tag()?;
        if num != 6 && num != 7 {
            once(&mut seen, num)?;
        }
        if common(&mut r, num, wt, 7, 8, &mut raw_attrs, &mut point)? {
            continue;
        }
        match (num, wt) {
            (4, 1) => count = r.fixed64()?,
            (5, 1) => sum = f64::from_bits(r.fixed64()?),
            (6, 2) => quantiles.push(quantile(r.bytes()?)?),
            _ => return Err(Defer),
        }
    }
    if count > I64_MAX {
        return Err(Defer);
    }
    Ok(Summary { point: finish(point, &raw_attrs)?, count, sum, quantiles })
}

/// An `AggregationTemporality` (an int32 enum): DELTA (1) or not; a value beyond int32 defers.
fn delta(v: u64) -> R<bool> {
    if v > i32::MAX as u64 {
        return Err(Defer);
    }
    Ok(v == 1)
}

/// A `Gauge`, `Sum`, `Histogram` or `Summary` body: its points (field 1, read by `point`),
/// aggregation_temporality (2) and is_monotonic (3) where `extra` allows them.
fn body<'a, T>(b: &'a [u8], point: fn(&'a [u8]) -> R<T>, extra: u32) -> R<(Vec<T>, u64, bool)> {
    let mut r = Reader::new(b);
    let (mut points, mut temporality, mut monotonic, mut seen) = (Vec::new(), 0u64, false, 0u32);
    while !r.done() {
        let (num, wt) = r.tag()?;
        if num != 1 {
            once(&mut seen, num)?;
        }
        match (num, wt) {
            (1, 2) => points.push(point(r.bytes()?)?),
            (2, 0) if extra >= 2 => temporality = r.varint()?,
            (3, 0) if extra >= 3 => monotonic = r.varint()? != 0,
            _ => return Err(Defer),
        }
    }
    Ok((points, temporality, monotonic))
}

fn metric(b: &[u8]) -> R<Metric<'_>> {
    let mut r = Reader::new(b);
    let (mut name, mut data, mut seen) = ("", None, 0u32);
    while !r.done() {
        let (num, wt) = r.tag()?;
        if num != 12 {
            once(&mut seen, num)?;
        }
        let parsed = match (num, wt) {
            (1, 2) => {
                name = utf8(r.bytes()?)?;
                None
            }
            (2, 2) | (3, 2) => {
                utf8(r.bytes()?)?;
                None
            }
            (12, 2) => {
                key_value(r.bytes()?)?;
                None
            }
            (5, 2) => Some(Data::Gauge(body(r.bytes()?, number_point, 1)?.0)),
            (7, 2) => {
                let (points, t, monotonic) = body(r.bytes()?, number_point, 3)?;
                Some(Data::Sum { delta: delta(t)?, monotonic, points })
            }
            (9, 2) => {
                let (points, t, _) = body(r.bytes()?, histogram_point, 2)?;
                Some(Data::Histogram { delta: delta(t)?, points })
            }
            (11, 2) => Some(Data::Summary(body(r.bytes()?, summary_point, 1)?.0)),
            _ => return Err(Defer), // exponential histogram (10) too: the reference rejects it
        };
        if let Some(d) = parsed {
            if data.is_some() {
                return Err(Defer); // the oneof set twice: the reference keeps the last
            }
            data = Some(d);
        }
    }
    let m = Metric { name: std::borrow::Cow::Borrowed(name), data: data.ok_or(Defer)? }; // no data: the reference rejects the metric
    if m.name.is_empty() && m.points() > 0 {
        return Err(Defer);
    }
    Ok(m)
}

/// Every resource of an `ExportMetricsServiceRequest`, or Defer; a message without data
/// points defers (the reference rejects it), as does any item the reference would reject.
pub fn metrics_request(b: &[u8]) -> R<Vec<MetricResource<'_>>> {
    let out = request_items(b, metric)?;
    if out.iter().all(|res| res.items.iter().all(|m| m.points() == 0)) {
        return Err(Defer);
    }
    Ok(out)
}

/// A quantile as Python's `format(q, ".15g")` writes it (the summary's `quantile` label):
/// 15 significant digits, trailing zeros dropped, scientific below 1e-4 or from 1e15.
pub fn g15(q: f64) -> String {
    let sci = format!("{:.14e}", q); // "-1.23450000000000e-5"
    let (mant, exp) = sci.split_once('e').expect("LowerExp writes an exponent");
    let exp: i32 = exp.parse().expect("LowerExp writes an integer exponent");
    if !(-4..15).contains(&exp) {
        let m = if mant.contains('.') { mant.trim_end_matches('0').trim_end_matches('.') } else { mant };
        return format!("{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    let fixed = format!("{:.*}", (14 - exp) as usize, q);
    if fixed.contains('.') {
        fixed.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        fixed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_labels_as_python() {
        for (q, want) in [(0.5, "0.5"), (0.99, "0.99"), (0.0, "0"), (1.0, "1"), (0.999, "0.999"), (0.1 + 0.2, "0.3"),
            (1e-5, "1e-05"), (0.0001, "0.0001"), (1e15, "1e+15"), (123456789012345.0, "123456789012345"), (-0.0, "-0"),
            (0.333333333333333314829616256247, "0.333333333333333"), (2.5e-7, "2.5e-07")] {
            assert_eq!(g15(q), want, "{q}");
        }
    }
}
