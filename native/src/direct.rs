//! One JSON record written straight into the column builders while it is parsed (no value
//! tree), with a rollback: when anything in the record is not a plain row (a value that
//! does not convert, a duplicate field, a syntax error, a wide number...), every builder is
//! truncated back to the record's start and the record goes to the tree reader
//! (`record` in lib.rs), which gives its exact verdict.
//!
//! So this reader only has to be *no more permissive* than the tree reader: whatever it
//! accepts, the tree reader accepts as a row with the same values (same parser, same
//! conversions: `parse_ts_ns`, `int_of`, `float_of`, the map texts), and anything else is
//! a fallback, never a verdict.

use crate::json::{float_of, int_of, parse_ts_ns, Defer, Parser, J, R};
use crate::{field_of, Bits, Col, Ty};

impl Bits {
    /// Back to its first `n` bits (no-op when it has `n` or fewer); the bits past `n` in the
    /// last byte are cleared so later pushes start from zero, and the null count follows.
    fn truncate(&mut self, n: usize) {
        if n >= self.len {
            return;
        }
        for i in n..self.len {
            if self.bytes[i / 8] & (1 << (i % 8)) == 0 {
                self.nulls -= 1;
            }
        }
        self.len = n;
        self.bytes.truncate(n.div_ceil(8));
        if !n.is_multiple_of(8) {
            if let Some(last) = self.bytes.last_mut() {
                *last &= (1u8 << (n % 8)) - 1;
            }
        }
    }
}

impl Bits {
    fn reserve_scaled(&mut self, num: usize, den: usize) {
        self.bytes.reserve(self.bytes.len() * num / den + 1);
    }
}

/// Bytes a value of a primitive column takes.
fn width(t: &Ty) -> usize {
    if matches!(t, Ty::I32) {
        4
    } else {
        8
    }
}

impl Col {
    /// Back to its first `n` values (children to the values those hold), whatever a record
    /// left half-written after them. Guarantees the column is as it was when it had `n`.
    pub(crate) fn truncate(&mut self, n: usize, t: &Ty) {
        match (self, t) {
            (Col::Str { valid, offsets, data }, _) => {
                valid.truncate(n);
                offsets.truncate(n + 1);
                data.truncate(offsets[n] as usize);
            }
            (Col::Prim { valid, data }, t) => {
                valid.truncate(n);
                data.truncate(n * width(t));
            }
            (Col::Bool { valid, values }, _) => {
                valid.truncate(n);
                values.truncate(n);
            }
            (Col::List { valid, offsets, child }, Ty::List(inner)) => {
                valid.truncate(n);
                offsets.truncate(n + 1);
                child.truncate(offsets[n] as usize, inner);
            }
            (Col::Struct { valid, children }, Ty::Struct(fields)) => {
                valid.truncate(n);
                for (c, (_, ft)) in children.iter_mut().zip(fields) {
                    c.truncate(n, ft);
                }
            }
            (Col::Map { valid, offsets, keys, values }, _) => {
                valid.truncate(n);
                offsets.truncate(n + 1);
                let m = offsets[n] as usize;
                keys.truncate(m, &Ty::Str);
                values.truncate(m, &Ty::Str);
            }
            _ => unreachable!("column and type out of step"),
        }
    }

    /// Room for `num / den` times what each of its buffers holds now (children included),
    /// so that a batch read at the rate of its first records does not regrow them.
    pub(crate) fn reserve_scaled(&mut self, num: usize, den: usize) {
        let more = |len: usize| len * num / den + 1;
        match self {
            Col::Str { valid, offsets, data } => {
                valid.reserve_scaled(num, den);
                offsets.reserve(more(offsets.len()));
                data.reserve(more(data.len()));
            }
            Col::Prim { valid, data } => {
                valid.reserve_scaled(num, den);
                data.reserve(more(data.len()));
            }
            Col::Bool { valid, values } => {
                valid.reserve_scaled(num, den);
                values.reserve_scaled(num, den);
            }
            Col::List { valid, offsets, child } => {
                valid.reserve_scaled(num, den);
                offsets.reserve(more(offsets.len()));
                child.reserve_scaled(num, den);
            }
            Col::Struct { valid, children } => {
                valid.reserve_scaled(num, den);
                for c in children {
                    c.reserve_scaled(num, den);
                }
            }
            Col::Map { valid, offsets, keys, values } => {
                valid.reserve_scaled(num, den);
                offsets.reserve(more(offsets.len()));
                keys.reserve_scaled(num, den);
                values.reserve_scaled(num, den);
            }
        }
    }

    /// Append a null (a struct's children get a null each, as the tree reader appends them).
    fn push_null(&mut self, t: &Ty) {
        match (self, t) {
            (Col::Str { valid, offsets, .. }, _) => {
                valid.push(false);
                let last = *offsets.last().unwrap();
                offsets.push(last);
            }
            (Col::Prim { valid, data }, t) => {
                valid.push(false);
                data.extend_from_slice(&[0u8; 8][..width(t)]);
            }
            (Col::Bool { valid, values }, _) => {
                valid.push(false);
                values.push(false);
            }
            (Col::List { valid, offsets, .. } | Col::Map { valid, offsets, .. }, _) => {
                valid.push(false);
                let last = *offsets.last().unwrap();
                offsets.push(last);
            }
            (Col::Struct { valid, children }, Ty::Struct(fields)) => {
                valid.push(false);
                for (c, (_, ft)) in children.iter_mut().zip(fields) {
                    c.push_null(ft);
                }
            }
            _ => unreachable!("column and type out of step"),
        }
    }
}

#[inline]
fn push_text(col: &mut Col, s: &str) {
    if let Col::Str { valid, offsets, data } = col {
        valid.push(true);
        data.extend_from_slice(s.as_bytes());
        offsets.push(data.len() as i32);
    }
}

#[inline]
fn push_prim(col: &mut Col, bytes: &[u8]) {
    if let Col::Prim { valid, data } = col {
        valid.push(true);
        data.extend_from_slice(bytes);
    }
}

/// A number literal's text and whether it is an integer (`Err` for anything else).
#[inline]
fn number<'a>(p: &mut Parser<'a>) -> R<(&'a str, bool)> {
    match p.number()? {
        J::Num(n, is_int) => Ok((n, is_int)),
        _ => Err(Defer),
    }
}

/// The value at the parser (whitespace skipped) written into `col` as type `t`, exactly as
/// the tree reader's `check` then `append` would take it; `Err` for anything they would not
/// take (the caller rolls the record back).
fn value(p: &mut Parser<'_>, col: &mut Col, t: &Ty) -> R<()> {
    let Some(c) = p.peek() else { return Err(Defer) };
    if c == b'n' {
        p.literal(b"null")?;
        col.push_null(t);
        return Ok(());
    }
    match (col, t) {
        (col @ Col::Str { .. }, Ty::Str) => {
            if c != b'"' {
                return Err(Defer);
            }
            let s = p.string()?;
            push_text(col, &s);
        }
        (col @ Col::Prim { .. }, Ty::Ts(div)) => {
            if c != b'"' {
                return Err(Defer);
            }
            let s = p.string()?;
            let ns = parse_ts_ns(&s)?; // parsed once: checked and written
            push_prim(col, &(ns / div).to_le_bytes());
        }
        (col @ Col::Prim { .. }, Ty::I32) => {
            let (n, is_int) = number(p)?;
            if !is_int {
                return Err(Defer);
            }
            let x = i32::try_from(int_of(n)?).map_err(|_| Defer)?;
            push_prim(col, &x.to_le_bytes());
        }
        (col @ Col::Prim { .. }, Ty::I64) => {
            let (n, is_int) = number(p)?;
            if !is_int {
                return Err(Defer);
            }
            push_prim(col, &int_of(n)?.to_le_bytes());
        }
        (col @ Col::Prim { .. }, Ty::F64) => {
            let (n, is_int) = number(p)?;
            push_prim(col, &float_of(n, is_int)?.to_le_bytes());
        }
        (Col::Bool { valid, values }, Ty::Bool) => {
            let x = match c {
                b't' => p.literal(b"true").map(|_| true)?,
                b'f' => p.literal(b"false").map(|_| false)?,
                _ => return Err(Defer),
            };
            valid.push(true);
            values.push(x);
        }
        (Col::List { valid, offsets, child }, Ty::List(inner)) => {
            if c != b'[' {
                return Err(Defer);
            }
            p.enter()?;
            p.i += 1;
            let mut n = 0i32;
            p.ws();
            if p.peek() == Some(b']') {
                p.i += 1;
            } else {
                loop {
                    p.ws();
                    if p.peek() == Some(b'n') {
                        return Err(Defer); // a null item: the reference's own path
                    }
                    value(p, child, inner)?;
                    n += 1;
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
            }
            p.leave();
            valid.push(true);
            let last = *offsets.last().unwrap();
            offsets.push(last + n);
        }
        (Col::Struct { valid, children }, Ty::Struct(fields)) => {
            if c != b'{' || fields.len() > 64 {
                return Err(Defer);
            }
            p.enter()?;
            p.i += 1;
            let mut seen = 0u64;
            object(p, fields, |p, _, f| {
                match f {
                    Some(f) if seen & (1 << f) != 0 => Err(Defer), // a key given twice
                    Some(f) => {
                        seen |= 1 << f;
                        value(p, &mut children[f], &fields[f].1)
                    }
                    None => p.value().map(|_| ()),
                }
            })?;
            p.leave();
            for (f, (c, (_, ft))) in children.iter_mut().zip(fields).enumerate() {
                if seen & (1 << f) == 0 {
                    c.push_null(ft);
                }
            }
            valid.push(true);
        }
        (Col::Map { valid, offsets, keys, values }, Ty::Map) => {
            if c != b'{' {
                return Err(Defer);
            }
            p.enter()?;
            p.i += 1;
            let start = *offsets.last().unwrap() as usize;
            let mut n = 0i32;
            object(p, &[], |p, k, _| {
                if let Col::Str { offsets: ko, data: kd, .. } = &**keys {
                    // a key given twice: the reference keeps the last (the tree reader defers)
                    if ko[start..].windows(2).any(|w| &kd[w[0] as usize..w[1] as usize] == k.as_bytes()) {
                        return Err(Defer);
                    }
                }
                map_value(p, values)?;
                push_text(keys, k);
                n += 1;
                Ok(())
            })?;
            p.leave();
            valid.push(true);
            offsets.push(start as i32 + n);
        }
        _ => return Err(Defer),
    }
    Ok(())
}

/// A map entry's value written as the reference writes it (`map_text`): strings as they
/// are, integers as decimal text, booleans as `true` / `false`, null as null; anything
/// else is `Err`.
fn map_value(p: &mut Parser<'_>, values: &mut Col) -> R<()> {
    match p.peek() {
        Some(b'"') => {
            let s = p.string()?;
            push_text(values, &s);
        }
        Some(b't') => {
            p.literal(b"true")?;
            push_text(values, "true");
        }
        Some(b'f') => {
            p.literal(b"false")?;
            push_text(values, "false");
        }
        Some(b'n') => {
            p.literal(b"null")?;
            values.push_null(&Ty::Str);
        }
        Some(b'-' | b'0'..=b'9') => {
            let (t, is_int) = number(p)?;
            if !is_int {
                return Err(Defer);
            }
            if let Ok(i) = t.parse::<i64>() {
                push_text(values, &i.to_string());
            } else if let Ok(u) = t.parse::<u64>() {
                push_text(values, &u.to_string());
            } else {
                return Err(Defer);
            }
        }
        _ => return Err(Defer),
    }
    Ok(())
}

/// The members of an object whose `{` has been read, up to and past its `}`: for each, its
/// key (unescaped) and its field in `names` (None: not one of them) are handed to `member`
/// with the parser at the value. Keys are expected in `names`' order: the next field's name
/// is tried first, without scanning the key.
fn object<'a>(p: &mut Parser<'a>, names: &[(String, Ty)], mut member: impl FnMut(&mut Parser<'a>, &str, Option<usize>) -> R<()>) -> R<()> {
    p.ws();
    if p.peek() == Some(b'}') {
        p.i += 1;
        return Ok(());
    }
    let mut hint = 0;
    loop {
        p.ws();
        let read;
        let (k, f): (&str, Option<usize>) = match names.get(hint) {
            Some((name, _)) if p.string_is(name) => (name, Some(hint)),
            _ => {
                read = p.string()?;
                let f = field_of(names, &read, hint);
                (&read, f)
            }
        };
        if let Some(f) = f {
            hint = f + 1;
        }
        p.ws();
        if p.peek() != Some(b':') {
            return Err(Defer);
        }
        p.i += 1;
        p.ws();
        member(p, k, f)?;
        p.ws();
        match p.peek() {
            Some(b',') => p.i += 1,
            Some(b'}') => {
                p.i += 1;
                return Ok(());
            }
            _ => return Err(Defer),
        }
    }
}

/// Read `text` as a row of `fields` straight into `cols` (which hold `rows` values each).
///
/// `true`: the record is a row, one value appended to every column, exactly the values the
/// tree reader would append. `false`: every column is back to `rows` values and the record
/// is the tree reader's to judge. `seen` is scratch space.
pub(crate) fn row(text: &str, fields: &[(String, Ty)], cols: &mut [Col], rows: usize, seen: &mut Vec<bool>) -> bool {
    if read(text, fields, cols, seen).is_ok() {
        return true;
    }
    for (c, (_, t)) in cols.iter_mut().zip(fields) {
        c.truncate(rows, t);
    }
    false
}

fn read(text: &str, fields: &[(String, Ty)], cols: &mut [Col], seen: &mut Vec<bool>) -> R<()> {
    let b = text.as_bytes();
    // the reference re-serializes records that do not start with "{" and end with "}"
    if b.first() != Some(&b'{') || b.last() != Some(&b'}') {
        return Err(Defer);
    }
    seen.clear();
    seen.resize(fields.len(), false);
    let mut p = Parser::new(text);
    p.i = 1;
    object(&mut p, fields, |p, _, f| match f {
        Some(f) => {
            if seen[f] {
                return Err(Defer); // a field given twice
            }
            seen[f] = true;
            value(p, &mut cols[f], &fields[f].1)
        }
        None => p.value().map(|_| ()),
    })?;
    if !p.at_end() || p.wide_number {
        return Err(Defer);
    }
    for ((c, (_, t)), &s) in cols.iter_mut().zip(fields).zip(seen.iter()) {
        if !s {
            c.push_null(t);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{append, json_decode, new_col, record, screen, Rec};

    fn s(name: &str, t: Ty) -> (String, Ty) {
        (name.to_string(), t)
    }

    /// A schema with every wire type, nested ones included.
    fn schema() -> Vec<(String, Ty)> {
        let item = Ty::Struct(vec![s("type", Ty::Str), s("depth", Ty::F64), s("step", Ty::I32), s("ok", Ty::Bool)]);
        vec![
            s("id", Ty::Str),
            s("ts", Ty::Ts(1_000_000)),
            s("n", Ty::I64),
            s("flag", Ty::Bool),
            s("events", Ty::List(Box::new(item))),
            s("tags", Ty::List(Box::new(Ty::Str))),
            s("attrs", Ty::Map),
        ]
    }

    fn bits(b: &Bits) -> String {
        (0..b.len).map(|i| if b.bytes[i / 8] & (1 << (i % 8)) != 0 { '1' } else { '0' }).collect::<String>()
            + &format!("/{}/{}", b.nulls, b.bytes.len())
    }

    /// Everything a column holds, for comparing two builds of it.
    fn dump(c: &Col) -> String {
        match c {
            Col::Str { valid, offsets, data } => format!("S[{} {offsets:?} {data:?}]", bits(valid)),
            Col::Prim { valid, data } => format!("P[{} {data:?}]", bits(valid)),
            Col::Bool { valid, values } => format!("B[{} {}]", bits(valid), bits(values)),
            Col::List { valid, offsets, child } => format!("L[{} {offsets:?} {}]", bits(valid), dump(child)),
            Col::Struct { valid, children } => format!("T[{} {}]", bits(valid), children.iter().map(dump).collect::<Vec<_>>().join(" ")),
            Col::Map { valid, offsets, keys, values } => format!("M[{} {offsets:?} {} {}]", bits(valid), dump(keys), dump(values)),
        }
    }

    /// The batch as the tree reader alone decodes it (the decoder before direct writing).
    fn tree(payloads: &[Option<&[u8]>], fields: &[(String, Ty)]) -> (Vec<u8>, Vec<Col>) {
        let mut verdicts = vec![0u8; payloads.len()];
        let mut cols: Vec<Col> = fields.iter().map(|(_, t)| new_col(t)).collect();
        let mut slots = Vec::new();
        for (k, p) in payloads.iter().enumerate() {
            let rec = match screen(*p, 1 << 20) {
                Err(rec) => rec,
                Ok(text) => record(text, fields, &mut slots),
            };
            match rec {
                Rec::Row => {
                    for ((col, (_, t)), v) in cols.iter_mut().zip(fields).zip(slots.iter()) {
                        append(col, v.as_ref(), t);
                    }
                    verdicts[k] = 1;
                }
                Rec::Reject(..) => verdicts[k] = 2,
                Rec::Defer => {}
            }
        }
        (verdicts, cols)
    }

    const RECORDS: &[&str] = &[
        r#"{"id":"a","ts":"2026-11-21T10:00:00.5Z","n":7,"flag":true,"events":[{"type":"x","depth":0.5,"step":1,"ok":false}],"tags":["p","q"],"attrs":{"k":"v","i":12,"b":true,"z":null}}"#,
        // fails in the second list item, after the first was written: rolled back
        r#"{"id":"b","events":[{"type":"x","step":2},{"type":"y","step":"bad"}],"n":1}"#,
        r#"{"n":null,"id":null,"flag":false,"events":null,"attrs":null,"tags":[]}"#,
        // fails in a map (a key given twice) after strings and a list were written
        r#"{"id":"c","tags":["a","b","c"],"attrs":{"k":"1","k":"2"}}"#,
        r#"{"zzz":{"deep":[1,2,{"x":null}]},"id":"d\n\u00e9"}"#,
        // a bad timestamp after nine values of bitmaps past a byte boundary
        r#"{"id":"e","events":[{},{},{},{},{},{},{},{},{"step":3}],"ts":"2026-02-30T00:00:00Z"}"#,
        r#"{"id":"f","events":[{"step":2147483648}]}"#,
        r#"{"id":"g","flag":true,"flag":true}"#,
        r#"{"id":"h","n":1e3}"#,
        r#"{"id":"i","attrs":{"f":1.5}}"#,
        r#"{"id":"j"} "#,
        r#"{"id":"k","events":[null]}"#,
        r#"{"id":"l","tags":["a",]}"#,
        r#"{}"#,
        r#"{"events":[{"type":"t","type":"u"}]}"#,
        r#"{"id":"m","events":[{"ok":true},{"ok":false,"depth":-0.0}],"attrs":{"neg":-12,"u":"\u00e9"}}"#,
        // keys that are a field's name escaped, or start with one
        r#"{"\u0069d":"n","t\u0073":null}"#,
        r#"{"idx":"1","id":"o","events":[{"typ":1,"type":"t","types":2}]}"#,
    ];

    #[test]
    fn writes_what_the_tree_reader_appends_and_rolls_back_the_rest() {
        let fields = schema();
        let payloads: Vec<Option<&[u8]>> = RECORDS.iter().map(|r| Some(r.as_bytes())).collect();
        let out = json_decode(&payloads, 1 << 20, &fields);
        let (verdicts, cols) = tree(&payloads, &fields);
        assert_eq!(out.verdicts, verdicts);
        assert_eq!(out.verdicts.iter().filter(|&&v| v == 1).count(), 7);
        for (a, b) in out.cols.iter().zip(&cols) {
            assert_eq!(a.validate(), Ok(7));
            assert_eq!(dump(a), dump(b));
        }
    }

    #[test]
    fn a_batch_past_the_sizing_probe_gives_the_same_columns() {
        let fields = schema();
        let payloads: Vec<Option<&[u8]>> = RECORDS.iter().cycle().take(RECORDS.len() * 20).map(|r| Some(r.as_bytes())).collect();
        let out = json_decode(&payloads, 1 << 20, &fields);
        let (verdicts, cols) = tree(&payloads, &fields);
        assert_eq!(out.verdicts, verdicts);
        for (a, b) in out.cols.iter().zip(&cols) {
            assert_eq!(a.validate(), Ok(140));
            assert_eq!(dump(a), dump(b));
        }
    }

    #[test]
    fn a_rolled_back_record_leaves_every_column_as_it_was() {
        let fields = schema();
        let mut cols: Vec<Col> = fields.iter().map(|(_, t)| new_col(t)).collect();
        let mut seen = Vec::new();
        assert!(row(RECORDS[0], &fields, &mut cols, 0, &mut seen));
        let before: Vec<String> = cols.iter().map(dump).collect();
        for bad in [RECORDS[1], RECORDS[3], RECORDS[5], RECORDS[6], RECORDS[7], RECORDS[11], RECORDS[14]] {
            assert!(!row(bad, &fields, &mut cols, 1, &mut seen), "{bad}");
            assert_eq!(cols.iter().map(dump).collect::<Vec<_>>(), before, "{bad}");
        }
    }
}
