//! Confluent-framed Avro records of the obsflow wire schemas straight into Arrow columns,
//! with a verdict per record: a row, or deferred to the Python reference codec
//! (schemas/codecs/avro_codec.py, fastavro), which then gives the row or the dead letter.
//!
//! A record is `0x00 | schema id (4 bytes, big endian) | Avro binary body`. Each schema id
//! the caller knows comes with a [`Plan`]: the writer schema's fields in order, each with
//! the output column it fills (or none: read and dropped), as the reference resolves that
//! writer schema against the reader (wire) schema; columns no writer field fills are null.
//! Anything the reference might read differently is deferred: an unknown schema id, a
//! short or oversized payload, a wrong magic byte, a truncated body, trailing bytes, a
//! varint beyond 64 bits, a negative or too large length or count, invalid UTF-8, a union
//! branch other than 0 (null) or 1, an enum index out of range, an `int` beyond 32 bits, a
//! boolean byte other than 0 or 1, a negative (sized) array or map block, a map key given
//! twice. Pure Rust: the fuzz target in native/fuzz builds it without Python.

use std::collections::HashSet;

use crate::{new_col, Col, Ty};

/// An Avro type of a wire schema, as the decoder reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Av {
    Str,
    /// `int`: a varint within 32 bits (an Arrow int32)
    Int,
    /// `long` (timestamps too: their raw value, as the reference hands them to Arrow)
    Long,
    Double,
    Bool,
    /// an enum's symbols (an Arrow string)
    Enum(Vec<String>),
    /// `["null", T]`: branch 0 is null, branch 1 a `T`
    Opt(Box<Av>),
    Array(Box<Av>),
    /// `{"type": "map", "values": "string"}` (an Arrow `map<string, string>`)
    Map,
    /// a record's field types in order (an Arrow struct)
    Record(Vec<Av>),
}

impl Av {
    /// The Arrow column type this Avro type is read into.
    pub fn ty(&self) -> Ty {
        match self {
            Av::Str | Av::Enum(_) => Ty::Str,
            Av::Int => Ty::I32,
            Av::Long => Ty::I64,
            Av::Double => Ty::F64,
            Av::Bool => Ty::Bool,
            Av::Opt(t) => t.ty(),
            Av::Array(t) => Ty::List(Box::new(t.ty())),
            Av::Map => Ty::Map,
            Av::Record(fs) => Ty::Struct(fs.iter().map(|f| (String::new(), f.ty())).collect()),
        }
    }

    /// Whether a value of `self` can be appended to a column built for `col` (the same
    /// Arrow layout, nullability aside).
    fn fits(&self, col: &Av) -> bool {
        match (self, col) {
            (Av::Opt(a), b) => a.fits(b),
            (a, Av::Opt(b)) => a.fits(b),
            (Av::Str | Av::Enum(_), Av::Str | Av::Enum(_)) => true,
            (Av::Array(a), Av::Array(b)) => a.fits(b),
            (Av::Record(a), Av::Record(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.fits(y)),
            (a, b) => a == b,
        }
    }
}

/// How to read bodies written with one schema id: the writer's fields in order, each with
/// the output column it fills (`None`: read and dropped).
#[derive(Debug, Clone)]
pub struct Plan {
    pub schema_id: u32,
    pub fields: Vec<(Av, Option<usize>)>,
}

impl Plan {
    /// Whether every target column exists, is filled once, and holds the field's type.
    pub fn fits(&self, columns: &[Av]) -> bool {
        let mut seen = vec![false; columns.len()];
        for (t, target) in &self.fields {
            if let Some(i) = *target {
                if i >= columns.len() || seen[i] || !t.fits(&columns[i]) {
                    return false;
                }
                seen[i] = true;
            }
        }
        true
    }
}

/// Deferred: the reference decides.
type R<T> = Result<T, ()>;

/// A read position in one record's body.
struct Cur<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cur<'a> {
    fn left(&self) -> usize {
        self.b.len() - self.at
    }

    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        if n > self.left() {
            return Err(());
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn byte(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }

    /// A zig-zag varint within 64 bits (fastavro's `read_long` wraps beyond: defer).
    fn long(&mut self) -> R<i64> {
        let mut n: u64 = 0;
        let mut shift = 0u32;
        loop {
            let b = self.byte()?;
            if shift == 63 && b > 1 {
                return Err(());
            }
            n |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err(());
            }
        }
        Ok((n >> 1) as i64 ^ -((n & 1) as i64))
    }

    /// A length or count: not negative, and at most the bytes left (every item takes one).
    fn count(&mut self) -> R<usize> {
        let n = self.long()?;
        if n < 0 || n as u64 > self.left() as u64 {
            return Err(());
        }
        Ok(n as usize)
    }

    fn text(&mut self) -> R<&'a [u8]> {
        let n = self.count()?;
        let s = self.take(n)?;
        std::str::from_utf8(s).map_err(|_| ())?;
        Ok(s)
    }
}

/// Read the blocks of an array or map: `item` once per item. Negative (sized) blocks defer.
fn blocks<'a>(c: &mut Cur<'a>, mut item: impl FnMut(&mut Cur<'a>) -> R<()>) -> R<usize> {
    let mut total = 0;
    loop {
        let n = c.count()?;
        if n == 0 {
            return Ok(total);
        }
        for _ in 0..n {
            item(c)?;
        }
        total += n;
    }
}

/// Read one value of `t` without keeping it: `Ok` when the reference reads it to the value
/// [`put`] appends.
fn skim(c: &mut Cur<'_>, t: &Av) -> R<()> {
    match t {
        Av::Str => c.text().map(|_| ()),
        Av::Int => i32::try_from(c.long()?).map(|_| ()).map_err(|_| ()),
        Av::Long => c.long().map(|_| ()),
        Av::Double => c.take(8).map(|_| ()),
        Av::Bool => match c.byte()? {
            0 | 1 => Ok(()),
            _ => Err(()),
        },
        Av::Enum(symbols) => {
            let i = c.long()?;
            if i < 0 || i as u64 >= symbols.len() as u64 {
                return Err(());
            }
            Ok(())
        }
        Av::Opt(inner) => match c.long()? {
            0 => Ok(()),
            1 => skim(c, inner),
            _ => Err(()),
        },
        Av::Array(inner) => blocks(c, |c| skim(c, inner)).map(|_| ()),
        Av::Map => {
            // a key given twice: the reference's dict keeps the last value at the first key's place
            let mut keys: Vec<&[u8]> = Vec::new();
            let mut many: HashSet<&[u8]> = HashSet::new();
            blocks(c, |c| {
                let k = c.text()?;
                let fresh = if many.is_empty() && keys.len() < 16 {
                    let new = !keys.contains(&k);
                    keys.push(k);
                    new
                } else {
                    many.extend(keys.drain(..));
                    many.insert(k)
                };
                if !fresh {
                    return Err(());
                }
                c.text().map(|_| ())
            })
            .map(|_| ())
        }
        Av::Record(fields) => fields.iter().try_for_each(|f| skim(c, f)),
    }
}

fn push_text(col: &mut Col, s: &[u8]) {
    if let Col::Str { valid, offsets, data } = col {
        valid.push(true);
        data.extend_from_slice(s);
        offsets.push(data.len() as i32);
    }
}

/// Append a null to a column built for `t`.
fn push_null(col: &mut Col, t: &Av) {
    match (col, t) {
        (col, Av::Opt(inner)) => push_null(col, inner),
        (Col::Str { valid, offsets, .. }, _) | (Col::List { valid, offsets, .. }, _) | (Col::Map { valid, offsets, .. }, _) => {
            valid.push(false);
            let last = *offsets.last().unwrap_or(&0);
            offsets.push(last);
        }
        (Col::Prim { valid, data }, t) => {
            valid.push(false);
            let width = if matches!(t, Av::Int) { 4 } else { 8 };
            data.extend_from_slice(&[0u8; 8][..width]);
        }
        (Col::Bool { valid, values }, _) => {
            valid.push(false);
            values.push(false);
        }
        (Col::Struct { valid, children }, Av::Record(fields)) => {
            valid.push(false);
            for (child, f) in children.iter_mut().zip(fields) {
                push_null(child, f);
            }
        }
        (Col::Struct { valid, .. }, _) => valid.push(false),
    }
}

/// Append one value of `t` (already accepted by [`skim`]) to `col`.
fn put(c: &mut Cur<'_>, t: &Av, col: &mut Col) -> R<()> {
    match (t, col) {
        (Av::Str, col) => push_text(col, c.text()?),
        (Av::Enum(symbols), col) => {
            let i = c.long()?;
            push_text(col, symbols.get(i as usize).ok_or(())?.as_bytes());
        }
        (Av::Int, Col::Prim { valid, data }) => {
            valid.push(true);
            data.extend_from_slice(&i32::try_from(c.long()?).map_err(|_| ())?.to_le_bytes());
        }
        (Av::Long, Col::Prim { valid, data }) => {
            valid.push(true);
            data.extend_from_slice(&c.long()?.to_le_bytes());
        }
        (Av::Double, Col::Prim { valid, data }) => {
            valid.push(true);
            data.extend_from_slice(c.take(8)?);
        }
        (Av::Bool, Col::Bool { valid, values }) => {
            valid.push(true);
            values.push(c.byte()? == 1);
        }
        (Av::Opt(inner), col) => {
            if c.long()? == 0 {
                push_null(col, inner);
            } else {
                put(c, inner, col)?;
            }
        }
        (Av::Array(inner), Col::List { valid, offsets, child }) => {
            valid.push(true);
            let n = blocks(c, |c| put(c, inner, child))?;
            let last = *offsets.last().unwrap_or(&0);
            offsets.push(last + n as i32);
        }
        (Av::Map, Col::Map { valid, offsets, keys, values }) => {
            valid.push(true);
            let n = blocks(c, |c| {
                push_text(keys, c.text()?);
                push_text(values, c.text()?);
                Ok(())
            })?;
            let last = *offsets.last().unwrap_or(&0);
            offsets.push(last + n as i32);
        }
        (Av::Record(fields), Col::Struct { valid, children }) => {
            valid.push(true);
            for (f, child) in fields.iter().zip(children.iter_mut()) {
                put(c, f, child)?;
            }
        }
        _ => return Err(()),
    }
    Ok(())
}

/// The schema id of a Confluent frame, if `p` is one the decoder may read (neither empty,
/// nor over `max_bytes`, nor shorter than its header, magic byte 0).
fn frame(p: Option<&[u8]>, max_bytes: usize) -> Option<(u32, &[u8])> {
    let p = p.filter(|p| p.len() >= 5 && p.len() <= max_bytes && p[0] == 0)?;
    Some((u32::from_be_bytes([p[1], p[2], p[3], p[4]]), &p[5..]))
}

/// Decode a batch of Confluent-framed Avro records into the columns `columns` (the reader
/// schema's field types, in the reference's column order).
///
/// `payloads`: the records (None for a value that is not bytes); `plans`: how to read each
/// known schema id (a plan that does not [`Plan::fits`] the columns is never used).
/// Returns one byte per record (1: a row of the columns, in record order; 0: left to the
/// reference) and the columns. Never panics for a record's content (fuzzed: native/fuzz).
pub fn avro_batch(payloads: &[Option<&[u8]>], max_bytes: usize, columns: &[Av], plans: &[Plan]) -> (Vec<u8>, Vec<Col>) {
    let mut verdicts = vec![0u8; payloads.len()];
    let mut cols: Vec<Col> = columns.iter().map(|t| new_col(&t.ty())).collect();
    let plans: Vec<&Plan> = plans.iter().filter(|p| p.fits(columns)).collect();
    let mut filled = vec![false; columns.len()];
    for (k, p) in payloads.iter().enumerate() {
        let Some((sid, body)) = frame(*p, max_bytes) else { continue };
        let Some(plan) = plans.iter().find(|pl| pl.schema_id == sid) else { continue };
        let mut c = Cur { b: body, at: 0 };
        if plan.fields.iter().try_for_each(|(t, _)| skim(&mut c, t)).is_err() || c.left() != 0 {
            continue;
        }
        let mut c = Cur { b: body, at: 0 };
        filled.iter_mut().for_each(|f| *f = false);
        for (t, target) in &plan.fields {
            // skim accepted the body, so put reads it to its end as skim did
            let _ = match target {
                Some(i) => {
                    filled[*i] = true;
                    put(&mut c, t, &mut cols[*i])
                }
                None => skim(&mut c, t),
            };
        }
        for (i, done) in filled.iter().enumerate() {
            if !done {
                push_null(&mut cols[i], &columns[i]);
            }
        }
        verdicts[k] = 1;
    }
    (verdicts, cols)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zz(v: i64) -> Vec<u8> {
        let mut n = ((v << 1) ^ (v >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            let b = (n & 0x7F) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    fn s(x: &str) -> Vec<u8> {
        let mut out = zz(x.len() as i64);
        out.extend_from_slice(x.as_bytes());
        out
    }

    fn frame_of(sid: u32, body: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8];
        out.extend_from_slice(&sid.to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn decode(records: &[Vec<u8>], columns: &[Av], plan: &Plan) -> (Vec<u8>, Vec<Col>) {
        let payloads: Vec<Option<&[u8]>> = records.iter().map(|r| Some(r.as_slice())).collect();
        avro_batch(&payloads, 1 << 20, columns, std::slice::from_ref(plan))
    }

    #[test]
    fn varints_within_64_bits() {
        for v in [0i64, -1, 1, 63, -64, 64, i32::MAX as i64, i64::MAX, i64::MIN] {
            let b = zz(v);
            assert_eq!(Cur { b: &b, at: 0 }.long(), Ok(v));
        }
        // eleven bytes, or a tenth byte past bit 63: fastavro wraps, so defer
        let long = [0xFFu8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02];
        assert_eq!(Cur { b: &long, at: 0 }.long(), Err(()));
        assert_eq!(Cur { b: &[0x80u8], at: 0 }.long(), Err(()));
    }

    #[test]
    fn rows_nulls_and_deferrals() {
        let columns = vec![Av::Str, Av::Opt(Box::new(Av::Int)), Av::Map, Av::Opt(Box::new(Av::Str))];
        let plan = Plan { schema_id: 3, fields: vec![(columns[0].clone(), Some(0)), (columns[1].clone(), Some(1)), (Av::Map, Some(2))] };
        let mut good = s("a");
        good.extend(zz(1));
        good.extend(zz(7));
        good.extend(zz(1));
        good.extend(s("k"));
        good.extend(s("v"));
        good.extend(zz(0));
        let mut dup = s("a");
        dup.extend([0u8]);
        dup.extend(zz(2));
        dup.extend(s("k"));
        dup.extend(s("v"));
        dup.extend(s("k"));
        dup.extend(s("w"));
        dup.extend(zz(0));
        let mut trailing = good.clone();
        trailing.push(0);
        let mut big_int = s("a");
        big_int.extend(zz(1));
        big_int.extend(zz(1 << 31));
        big_int.extend(zz(0));
        let records = vec![frame_of(3, &good), frame_of(4, &good), frame_of(3, &dup), frame_of(3, &trailing),
                           frame_of(3, &good[..good.len() - 1]), frame_of(3, &big_int), frame_of(3, &s("\u{ff}")[..2])];
        let (verdicts, cols) = decode(&records, &columns, &plan);
        assert_eq!(verdicts, vec![1, 0, 0, 0, 0, 0, 0]);
        for c in &cols {
            assert_eq!(c.validate(), Ok(1));
        }
        if let Col::Str { valid, .. } = &cols[3] {
            assert_eq!(valid.nulls, 1); // not written: null
        }
    }

    #[test]
    fn unfit_plans_are_not_used() {
        let columns = vec![Av::Str];
        let plan = Plan { schema_id: 1, fields: vec![(Av::Long, Some(0))] };
        let (verdicts, _) = decode(&[frame_of(1, &zz(5))], &columns, &plan);
        assert_eq!(verdicts, vec![0]);
        let twice = Plan { schema_id: 1, fields: vec![(Av::Str, Some(0)), (Av::Str, Some(0))] };
        assert!(!twice.fits(&columns));
    }
}
