//! obsflow's compiled decoder: a batch of raw JSON wire records straight into Arrow
//! buffers, with a verdict per record (a row, or deferred to the Python reference codec,
//! which then gives the row or the dead letter's reason and detail). Never a whole-batch
//! failure: every problem is one record's deferral.
//!
//! The buffers reach pyarrow without copies: each is a [`Buf`] exposing the buffer
//! protocol, wrapped by `pyarrow.py_buffer` and assembled with `pyarrow.Array.from_buffers`
//! (see schemas/codecs/native_json.py).

use std::borrow::Cow;
use std::os::raw::{c_int, c_void};

use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

pub mod json;
pub mod otlp;
pub mod pseudonym;
pub mod scrub;
use json::{float_of, int_of, map_text, parse_ts_ns, Defer, Parser, J, R};

/// An immutable byte buffer owned by Rust, readable from Python without a copy.
#[pyclass(frozen, module = "obsflow_native")]
pub struct Buf {
    data: Vec<u8>,
}

#[pymethods]
impl Buf {
    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        if (flags & ffi::PyBUF_WRITABLE) == ffi::PyBUF_WRITABLE {
            return Err(pyo3::exceptions::PyBufferError::new_err("obsflow_native.Buf is read-only"));
        }
        let data = &slf.get().data;
        // an empty Vec's pointer dangles: hand out a valid one for the zero-length view
        static EMPTY: [u64; 1] = [0];
        let ptr = if data.is_empty() { EMPTY.as_ptr() as *mut c_void } else { data.as_ptr() as *mut c_void };
        if ffi::PyBuffer_FillInfo(view, slf.as_ptr(), ptr, data.len() as ffi::Py_ssize_t, 1, flags) == -1 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}

    fn __len__(&self) -> usize {
        self.data.len()
    }
}

/// A wire type, as schemas/codecs/native_json.py describes it.
#[derive(Debug, Clone)]
enum Ty {
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

fn ty_of(spec: &Bound<'_, PyAny>) -> PyResult<Ty> {
    if let Ok(name) = spec.extract::<String>() {
        return match name.as_str() {
            "string" => Ok(Ty::Str),
            "int32" => Ok(Ty::I32),
            "int64" => Ok(Ty::I64),
            "double" => Ok(Ty::F64),
            "bool" => Ok(Ty::Bool),
            "ts_ms" => Ok(Ty::Ts(1_000_000)),
            "ts_us" => Ok(Ty::Ts(1_000)),
            "map" => Ok(Ty::Map),
            other => Err(PyValueError::new_err(format!("obsflow_native: unknown wire type {other:?}"))),
        };
    }
    let t = spec.downcast::<PyTuple>().map_err(|_| PyValueError::new_err("obsflow_native: a wire type is a name or a tuple"))?;
    let kind: String = t.get_item(0)?.extract()?;
    match kind.as_str() {
        "list" => Ok(Ty::List(Box::new(ty_of(&t.get_item(1)?)?))),
        "struct" => Ok(Ty::Struct(fields_of(&t.get_item(1)?)?)),
        other => Err(PyValueError::new_err(format!("obsflow_native: unknown wire type {other:?}"))),
    }
}

fn fields_of(spec: &Bound<'_, PyAny>) -> PyResult<Vec<(String, Ty)>> {
    let mut out = Vec::new();
    for item in spec.try_iter()? {
        let item = item?;
        let pair = item.downcast::<PyTuple>().map_err(|_| PyValueError::new_err("obsflow_native: a field is (name, type)"))?;
        out.push((pair.get_item(0)?.extract()?, ty_of(&pair.get_item(1)?)?));
    }
    Ok(out)
}

/// A validity bitmap being built.
#[derive(Default)]
struct Bits {
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
enum Col {
    Str { valid: Bits, offsets: Vec<i32>, data: Vec<u8> },
    Prim { valid: Bits, data: Vec<u8> },
    Bool { valid: Bits, values: Bits },
    List { valid: Bits, offsets: Vec<i32>, child: Box<Col> },
    Struct { valid: Bits, children: Vec<Col> },
    Map { valid: Bits, offsets: Vec<i32>, keys: Box<Col>, values: Box<Col> },
}

fn new_str() -> Col {
    Col::Str { valid: Bits::default(), offsets: vec![0], data: Vec::new() }
}

fn new_col(t: &Ty) -> Col {
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

fn buf(py: Python<'_>, data: Vec<u8>) -> PyResult<PyObject> {
    Ok(Py::new(py, Buf { data })?.into_any())
}

fn bits_buf(py: Python<'_>, b: Bits) -> PyResult<PyObject> {
    if b.nulls == 0 {
        Ok(py.None())
    } else {
        buf(py, b.bytes)
    }
}

fn i32s(v: Vec<i32>) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 4);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// A column as `(length, null_count, [buffers], [children])` for `pa.Array.from_buffers`.
fn export(py: Python<'_>, col: Col) -> PyResult<PyObject> {
    let empty: Vec<PyObject> = Vec::new();
    let (len, nulls, buffers, children): (usize, usize, Vec<PyObject>, Vec<PyObject>) = match col {
        Col::Str { valid, offsets, data } => (valid.len, valid.nulls, vec![bits_buf(py, valid)?, buf(py, i32s(offsets))?, buf(py, data)?], empty),
        Col::Prim { valid, data } => (valid.len, valid.nulls, vec![bits_buf(py, valid)?, buf(py, data)?], empty),
        Col::Bool { valid, values } => (valid.len, valid.nulls, vec![bits_buf(py, valid)?, buf(py, values.bytes)?], empty),
        Col::List { valid, offsets, child } => (valid.len, valid.nulls, vec![bits_buf(py, valid)?, buf(py, i32s(offsets))?], vec![export(py, *child)?]),
        Col::Struct { valid, children } => {
            let (len, nulls) = (valid.len, valid.nulls);
            let kids = children.into_iter().map(|c| export(py, c)).collect::<PyResult<Vec<_>>>()?;
            (len, nulls, vec![bits_buf(py, valid)?], kids)
        }
        Col::Map { valid, offsets, keys, values } => {
            let (len, nulls) = (valid.len, valid.nulls);
            let n = offsets.last().copied().unwrap_or(0) as usize;
            let entries = PyTuple::new(py, [n.into_pyobject(py)?.into_any().unbind(), 0usize.into_pyobject(py)?.into_any().unbind(),
                PyList::new(py, [py.None()])?.into_any().unbind(),
                PyList::new(py, [export(py, *keys)?, export(py, *values)?])?.into_any().unbind()])?;
            (len, nulls, vec![bits_buf(py, valid)?, buf(py, i32s(offsets))?], vec![entries.into_any().unbind()])
        }
    };
    Ok(PyTuple::new(py, [len.into_pyobject(py)?.into_any().unbind(), nulls.into_pyobject(py)?.into_any().unbind(),
        PyList::new(py, buffers)?.into_any().unbind(), PyList::new(py, children)?.into_any().unbind()])?.into_any().unbind())
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

/// Decode a batch of JSON records of one wire schema.
///
/// `values`: the records (bytes or None); `max_bytes`: the size limit; `fields`: the wire
/// schema as `[(name, type)]`. Returns `(verdicts, columns)`: `verdicts` has one byte per
/// record, 1 when the record is a row of `columns` (in record order), 0 when it is left to
/// the reference decoder (empty, too large, not UTF-8, not certainly decoded the same way);
/// `columns` are `(length, null_count, [buffers], [children])` per field. Never raises for
/// a record's content.
#[pyfunction]
fn decode_json(py: Python<'_>, values: &Bound<'_, PyList>, max_bytes: usize, fields: &Bound<'_, PyAny>) -> PyResult<(PyObject, PyObject)> {
    let fields = fields_of(fields)?;
    let n = values.len();
    let mut verdicts = vec![0u8; n];
    let mut cols: Vec<Col> = fields.iter().map(|(_, t)| new_col(t)).collect();
    // hold a reference to every payload while the GIL is released (the list may change)
    let owned: Vec<Option<Bound<'_, PyBytes>>> = values.iter().map(|v| v.downcast_into::<PyBytes>().ok()).collect();
    let payloads: Vec<Option<&[u8]>> = owned.iter().map(|b| b.as_ref().map(|b| b.as_bytes())).collect();
    let fields_ref = &fields;
    let cols_ref = &mut cols;
    let verdicts_ref = &mut verdicts;
    py.allow_threads(move || {
        for (k, p) in payloads.iter().enumerate() {
            let Some(p) = p else { continue };
            if p.is_empty() || p.len() > max_bytes {
                continue;
            }
            let Ok(text) = std::str::from_utf8(p) else { continue };
            if let Ok(slots) = record(text, fields_ref) {
                for ((col, (_, t)), v) in cols_ref.iter_mut().zip(fields_ref.iter()).zip(slots.iter()) {
                    append(col, v.as_ref(), t);
                }
                verdicts_ref[k] = 1;
            }
        }
    });
    let exported = cols.into_iter().map(|c| export(py, c)).collect::<PyResult<Vec<_>>>()?;
    Ok((buf(py, verdicts)?, PyList::new(py, exported)?.into_any().unbind()))
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
/// Returns `(verdicts, index, items, columns)`: a byte per message (1: all its spans are rows
/// here; 0: left to the reference decoder, which accepts or rejects each span itself), the
/// message (`_i`, int64) and span (`_item`, int32) of each row, and the span columns as
/// `(length, null_count, [buffers], [children])` in the reference's column order. Never
/// raises for a message's content.
#[pyfunction]
fn decode_otlp_spans(py: Python<'_>, values: &Bound<'_, PyList>, max_bytes: usize) -> PyResult<(PyObject, PyObject, PyObject, PyObject)> {
    let n = values.len();
    let owned: Vec<Option<Bound<'_, PyBytes>>> = values.iter().map(|v| v.downcast_into::<PyBytes>().ok()).collect();
    let payloads: Vec<Option<&[u8]>> = owned.iter().map(|b| b.as_ref().map(|b| b.as_bytes())).collect();
    let mut verdicts = vec![0u8; n];
    let mut index: Vec<u8> = Vec::new();
    let mut items: Vec<u8> = Vec::new();
    let str_cols = [0usize, 1, 2, 3, 4, 5, 8, 9, 16];
    let mut cols: Vec<Col> = (0..SPAN_COLUMNS)
        .map(|c| match c {
            10 | 11 | 12 | 13 => new_col(&Ty::Map),
            c if str_cols.contains(&c) => new_str(),
            _ => new_col(&Ty::I64),
        })
        .collect();
    py.allow_threads(|| {
        for (i, p) in payloads.iter().enumerate() {
            let Some(p) = p else { continue };
            if p.is_empty() || p.len() > max_bytes {
                continue;
            }
            let Ok(resources) = otlp::trace_request(p) else { continue };
            verdicts[i] = 1;
            let mut k = 0i32;
            for res in &resources {
                let service = res.attrs.iter().find(|kv| kv.key == "service.name").and_then(|kv| text_of(&kv.text))
                    .filter(|s| !s.is_empty()).unwrap_or("unknown_service");
                let res_map: Option<Vec<(&str, Option<&str>)>> =
                    if res.attrs.is_empty() { None } else { Some(res.attrs.iter().map(|kv| (kv.key, text_of(&kv.text))).collect()) };
                let res_types: Vec<(&str, Option<&str>)> =
                    res.attrs.iter().filter_map(|kv| kv.type_name.map(|t| (kv.key, Some(t)))).collect();
                for sp in &res.spans {
                    let zero_parent = sp.parent.iter().all(|&c| c == 0);
                    let parent = if sp.parent.is_empty() || zero_parent { None } else { Some(hex(sp.parent)) };
                    let (tid, sid) = (hex(sp.trace_id), hex(sp.span_id));
                    push_str(&mut cols[0], Some(&tid));
                    push_str(&mut cols[1], Some(&sid));
                    push_str(&mut cols[2], parent.as_deref());
                    push_str(&mut cols[3], Some(service));
                    push_str(&mut cols[4], Some(sp.name));
                    push_str(&mut cols[5], Some(SPAN_KINDS[sp.kind as usize]));
                    push_i64(&mut cols[6], Some((sp.start / 1000) as i64));
                    push_i64(&mut cols[7], Some((sp.end / 1000) as i64));
                    push_str(&mut cols[8], Some(STATUS_CODES[sp.status_code as usize]));
                    push_str(&mut cols[9], if sp.status_message.is_empty() { None } else { Some(sp.status_message) });
                    let attrs: Option<Vec<(&str, Option<&str>)>> =
                        if sp.attrs.is_empty() { None } else { Some(sp.attrs.iter().map(|kv| (kv.key, text_of(&kv.text))).collect()) };
                    push_map(&mut cols[10], attrs);
                    push_map(&mut cols[11], res_map.clone());
                    let types: Vec<(&str, Option<&str>)> =
                        sp.attrs.iter().filter_map(|kv| kv.type_name.map(|t| (kv.key, Some(t)))).collect();
                    push_map(&mut cols[12], if types.is_empty() { None } else { Some(types) });
                    push_map(&mut cols[13], if res_types.is_empty() { None } else { Some(res_types.clone()) });
                    push_i64(&mut cols[14], if sp.start < (1u64 << 63) { Some(sp.start as i64) } else { None });
                    push_i64(&mut cols[15], if sp.end < (1u64 << 63) { Some(sp.end as i64) } else { None });
                    push_str(&mut cols[16], if sp.trace_state.is_empty() { None } else { Some(sp.trace_state) });
                    push_i64(&mut cols[17], Some(sp.flags as i64));
                    index.extend_from_slice(&(i as i64).to_le_bytes());
                    items.extend_from_slice(&k.to_le_bytes());
                    k += 1;
                }
            }
        }
    });
    let exported = cols.into_iter().map(|c| export(py, c)).collect::<PyResult<Vec<_>>>()?;
    Ok((buf(py, verdicts)?, buf(py, index)?, buf(py, items)?, PyList::new(py, exported)?.into_any().unbind()))
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
/// Returns `(verdicts, index, items, columns)` as [`decode_otlp_spans`] does: a byte per
/// message (1: all its log records are rows here; 0: left to the reference decoder), the
/// message (`_i`) and record (`_item`) of each row, and the log columns. Never raises for a
/// message's content.
#[pyfunction]
fn decode_otlp_logs(py: Python<'_>, values: &Bound<'_, PyList>, max_bytes: usize) -> PyResult<(PyObject, PyObject, PyObject, PyObject)> {
    let n = values.len();
    let owned: Vec<Option<Bound<'_, PyBytes>>> = values.iter().map(|v| v.downcast_into::<PyBytes>().ok()).collect();
    let payloads: Vec<Option<&[u8]>> = owned.iter().map(|b| b.as_ref().map(|b| b.as_bytes())).collect();
    let mut verdicts = vec![0u8; n];
    let mut index: Vec<u8> = Vec::new();
    let mut items: Vec<u8> = Vec::new();
    let mut cols: Vec<Col> = (0..LOG_COLUMNS)
        .map(|c| match c {
            0 => new_col(&Ty::I64),
            10 => new_col(&Ty::Map),
            _ => new_str(),
        })
        .collect();
    py.allow_threads(|| {
        for (i, p) in payloads.iter().enumerate() {
            let Some(p) = p else { continue };
            if p.is_empty() || p.len() > max_bytes {
                continue;
            }
            let Ok(resources) = otlp::logs_request(p) else { continue };
            verdicts[i] = 1;
            let mut k = 0i32;
            for res in &resources {
                // the reference's _LogRows.resource: service, host, env taken out, the rest kept in order
                let mut rest: Vec<(&str, Option<&str>)> = res.attrs.iter().map(|kv| (kv.key, text_of(&kv.text))).collect();
                let service = pop(&mut rest, "service.name").filter(|s| !s.is_empty()).unwrap_or("unknown_service");
                let host = pop(&mut rest, "host.name");
                let (env_new, env_old) = (pop(&mut rest, "deployment.environment.name"), pop(&mut rest, "deployment.environment"));
                let env = env_new.filter(|s| !s.is_empty()).or(env_old);
                for lr in &res.logs {
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
                    push_i64(&mut cols[0], Some((t / 1_000_000) as i64));
                    push_str(&mut cols[1], Some(&lr.level));
                    push_str(&mut cols[2], Some(service));
                    push_str(&mut cols[3], text_of(&lr.message));
                    push_str(&mut cols[4], tid.as_deref());
                    push_str(&mut cols[5], sid.as_deref());
                    push_str(&mut cols[6], request_id);
                    push_str(&mut cols[7], user_id);
                    push_str(&mut cols[8], host);
                    push_str(&mut cols[9], env);
                    push_map(&mut cols[10], if attrs.is_empty() { None } else { Some(attrs) });
                    index.extend_from_slice(&(i as i64).to_le_bytes());
                    items.extend_from_slice(&k.to_le_bytes());
                    k += 1;
                }
            }
        }
    });
    let exported = cols.into_iter().map(|c| export(py, c)).collect::<PyResult<Vec<_>>>()?;
    Ok((buf(py, verdicts)?, buf(py, index)?, buf(py, items)?, PyList::new(py, exported)?.into_any().unbind()))
}

#[pymodule]
fn obsflow_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Buf>()?;
    m.add_function(wrap_pyfunction!(decode_json, m)?)?;
    m.add_function(wrap_pyfunction!(scrub::scrub_hints, m)?)?;
    m.add_function(wrap_pyfunction!(scrub::control_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(pseudonym::pseudonyms, m)?)?;
    m.add_function(wrap_pyfunction!(decode_otlp_spans, m)?)?;
    m.add_function(wrap_pyfunction!(decode_otlp_logs, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
