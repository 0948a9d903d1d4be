//! The Python face of the decoder (feature `python`, on by default; the fuzz targets in
//! native/fuzz build the crate without it): the `obsflow_native` module, whose functions
//! hand each batch to the pure-Rust decoders of lib.rs with the GIL released and export the
//! columns through the Arrow C data interface (src/cdata.rs, as an [`ArrowBatch`] whose
//! `__arrow_c_array__` pyarrow imports without copies).

use std::ffi::CStr;
use std::os::raw::{c_int, c_void};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::cdata::{check_schema, export_batch, int32_col, int64_col, ArrowArray, ArrowSchema, Exported};
use crate::{json_batch, otlp_logs, otlp_metrics, otlp_spans, Col, OtlpOut, Ty};
use crate::json_decode;

/// An immutable byte buffer owned by Rust, readable from Python without a copy.
#[pyclass(frozen, module = "obsflow_native")]
pub struct Buf {
    pub(crate) data: Vec<u8>,
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

fn buf(py: Python<'_>, data: Vec<u8>) -> PyResult<PyObject> {
    Ok(Py::new(py, Buf { data })?.into_any())
}

/// A decoded batch on its way to pyarrow through the Arrow C data interface (src/cdata.rs):
/// the columns as one struct array whose buffers are the decoder's own. Imported with
/// `pa.record_batch(batch, schema=wire_schema)` (the Arrow PyCapsule interface): the
/// requested schema names the columns' types and is checked against their layouts first.
/// Exported once; dropped without being exported (or its capsule never imported), it
/// releases its buffers all the same.
#[pyclass(module = "obsflow_native")]
pub struct ArrowBatch {
    batch: Option<Exported>,
    rows: usize,
}

impl ArrowBatch {
    pub(crate) fn new(py: Python<'_>, rows: usize, cols: Vec<Col>) -> PyResult<PyObject> {
        Ok(Py::new(py, ArrowBatch { batch: Some(export_batch(rows, cols)), rows })?.into_any())
    }
}

const ARROW_SCHEMA: &CStr = c"arrow_schema";
const ARROW_ARRAY: &CStr = c"arrow_array";

/// The `arrow_array` capsule's destructor: releases the batch unless pyarrow moved it out.
unsafe extern "C" fn drop_array_capsule(capsule: *mut ffi::PyObject) {
    let raw = ffi::PyCapsule_GetPointer(capsule, ARROW_ARRAY.as_ptr()) as *mut ArrowArray;
    if raw.is_null() {
        ffi::PyErr_Clear();
        return;
    }
    drop(Exported::from_raw(raw));
}

#[pymethods]
impl ArrowBatch {
    /// `(schema capsule, array capsule)` of the Arrow PyCapsule interface. The
    /// `requested_schema` (an `arrow_schema` capsule of a struct of the columns' types) is
    /// required, since the columns carry layouts and not types; it is handed back as the
    /// schema. `ValueError` when it does not fit the columns (by path) or the batch was
    /// already exported.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_array__(&mut self, py: Python<'_>, requested_schema: Option<Bound<'_, PyAny>>) -> PyResult<(PyObject, PyObject)> {
        let schema = requested_schema
            .ok_or_else(|| PyTypeError::new_err("obsflow_native.ArrowBatch: a requested schema names the columns' types"))?;
        // SAFETY: GetPointer checks the capsule's type and name (NULL and an error if not)
        let at = unsafe { ffi::PyCapsule_GetPointer(schema.as_ptr(), ARROW_SCHEMA.as_ptr()) } as *const ArrowSchema;
        if at.is_null() {
            return Err(PyErr::fetch(py));
        }
        let batch = self.batch.as_ref().ok_or_else(|| PyValueError::new_err("obsflow_native.ArrowBatch: already exported"))?;
        // SAFETY: the capsule holds an ArrowSchema (its name says so) and is alive while borrowed
        if unsafe { (*at).release.is_none() } {
            return Err(PyValueError::new_err("obsflow_native.ArrowBatch: the requested schema is released"));
        }
        unsafe { check_schema(&*at, batch.array()) }.map_err(|e| PyValueError::new_err(format!("obsflow_native.ArrowBatch: {e}")))?;
        let raw = self.batch.take().expect("checked above").into_raw();
        // SAFETY: on success the capsule owns `raw` (its destructor frees it); else it is ours again
        let capsule = unsafe { ffi::PyCapsule_New(raw as *mut c_void, ARROW_ARRAY.as_ptr(), Some(drop_array_capsule)) };
        if capsule.is_null() {
            drop(unsafe { Exported::from_raw(raw) });
            return Err(PyErr::fetch(py));
        }
        let capsule = unsafe { Bound::from_owned_ptr(py, capsule) };
        Ok((schema.unbind(), capsule.unbind()))
    }

    /// The rows of the batch.
    fn __len__(&self) -> usize {
        self.rows
    }

    /// The addresses of each column's buffers (0 for an absent validity bitmap; a nested
    /// column's children after it, depth first), before the batch is exported: pyarrow's
    /// buffers of the imported columns point at these (no copy). `ValueError` once exported.
    fn addresses(&self) -> PyResult<Vec<Vec<usize>>> {
        let batch = self.batch.as_ref().ok_or_else(|| PyValueError::new_err("obsflow_native.ArrowBatch: already exported"))?;
        Ok(batch.addresses())
    }
}

/// `(array nodes, buffer bytes)` exported through the C data interface and not yet released
/// (src/cdata.rs): back to 0 once every batch has been imported and dropped, or dropped.
#[pyfunction]
fn live_exports() -> (usize, usize) {
    crate::cdata::live()
}

/// The record (int64, little-endian) of each row: each record whose verdict is 1, in order.
fn rows_of(verdicts: &[u8]) -> Vec<u8> {
    let mut rows = Vec::with_capacity(verdicts.len() * 8);
    for (k, &v) in verdicts.iter().enumerate() {
        if v == 1 {
            rows.extend_from_slice(&(k as i64).to_le_bytes());
        }
    }
    rows
}

/// The batch of `cols` and then the `_i` column `rows` (int64 little-endian).
fn json_rows(py: Python<'_>, mut cols: Vec<Col>, rows: Vec<u8>) -> PyResult<PyObject> {
    let n = rows.len() / 8;
    cols.push(int64_col(rows));
    ArrowBatch::new(py, n, cols)
}

/// Every payload of `values` that is `bytes` (None otherwise), held while the GIL is released.
pub(crate) fn owned_payloads<'py>(values: &Bound<'py, PyList>) -> Vec<Option<Bound<'py, PyBytes>>> {
    values.iter().map(|v| v.downcast_into::<PyBytes>().ok()).collect()
}

pub(crate) fn payload_slices<'b>(owned: &'b [Option<Bound<'_, PyBytes>>]) -> Vec<Option<&'b [u8]>> {
    owned.iter().map(|b| b.as_ref().map(|b| b.as_bytes())).collect()
}

/// Decode a batch of JSON records of one wire schema ([`json_batch`]).
///
/// `values`: the records (bytes or None); `max_bytes`: the size limit; `fields`: the wire
/// schema as `[(name, type)]`. Returns `(verdicts, columns)`: `verdicts` has one byte per
/// record, 1 when the record is a row of `columns` (in record order), 0 when it is left to
/// the reference decoder (empty, too large, not UTF-8, not certainly decoded the same way);
/// `batch` is an [`ArrowBatch`] of the fields' columns and then `_i`, the record of each row
/// (int64). Never raises for a record's content.
#[pyfunction]
fn decode_json(py: Python<'_>, values: &Bound<'_, PyList>, max_bytes: usize, fields: &Bound<'_, PyAny>) -> PyResult<(PyObject, PyObject)> {
    let fields = fields_of(fields)?;
    // hold a reference to every payload while the GIL is released (the list may change)
    let owned = owned_payloads(values);
    let payloads = payload_slices(&owned);
    let (verdicts, cols) = py.allow_threads(|| json_batch(&payloads, max_bytes, &fields));
    let rows = rows_of(&verdicts);
    Ok((buf(py, verdicts)?, json_rows(py, cols, rows)?))
}

/// Decode a batch of JSON records of one wire schema, dead letters included
/// ([`json_decode`]).
///
/// `values`: the records (bytes or None, a tombstone; anything else is left to the
/// reference); `max_bytes`: the size limit; `fields`: the wire schema as `[(name, type)]`.
/// Returns `(verdicts, rejects, batch)`: one byte per record (1: a row of `batch`, in
/// record order; 2: a dead letter; 0: left to the reference decoder), the dead letters as
/// `[(record, reason, detail)]` in record order (the reference's reason and detail), and an
/// [`ArrowBatch`] of the fields' columns and then `_i`, the record of each row (int64).
/// Never raises for a record's content.
#[pyfunction]
fn decode_json_batch(
    py: Python<'_>,
    values: &Bound<'_, PyList>,
    max_bytes: usize,
    fields: &Bound<'_, PyAny>,
) -> PyResult<(PyObject, PyObject, PyObject)> {
    let fields = fields_of(fields)?;
    let owned = owned_payloads(values);
    let payloads = payload_slices(&owned);
    // a value neither bytes nor None is the reference's to judge
    let odd: Vec<bool> = values.iter().zip(&owned).map(|(v, b)| b.is_none() && !v.is_none()).collect();
    let mut out = py.allow_threads(|| json_decode(&payloads, max_bytes, &fields));
    if odd.iter().any(|&o| o) {
        out.rejects.retain(|r| !odd[r.0]);
        for (v, &o) in out.verdicts.iter_mut().zip(&odd) {
            if o {
                *v = 0;
            }
        }
    }
    let rows = rows_of(&out.verdicts);
    let rejects = PyList::empty(py);
    for (k, reason, detail) in out.rejects {
        rejects.append((k, reason, detail))?;
    }
    Ok((buf(py, out.verdicts)?, rejects.into_any().unbind(), json_rows(py, out.cols, rows)?))
}

/// `(verdicts, batch)` of an OTLP decode, as Python reads them: a byte per message, and an
/// [`ArrowBatch`] of the row columns and then `_i` (the message, int64) and `_item` (the
/// item, int32) of each row.
pub(crate) type OtlpExport = (PyObject, PyObject);

/// An OTLP decode's [`OtlpExport`].
pub(crate) fn export_otlp(py: Python<'_>, out: OtlpOut) -> PyResult<OtlpExport> {
    let OtlpOut { verdicts, index, items, mut cols } = out;
    let rows = index.len() / 8;
    cols.push(int64_col(index));
    cols.push(int32_col(items));
    Ok((buf(py, verdicts)?, ArrowBatch::new(py, rows, cols)?))
}

/// Decode a batch of OTLP protobuf `ExportTraceServiceRequest` messages into span rows
/// ([`otlp_spans`]): `(verdicts, batch)` ([`OtlpExport`]). Never raises for a message's
/// content.
#[pyfunction]
fn decode_otlp_spans(py: Python<'_>, values: &Bound<'_, PyList>, max_bytes: usize) -> PyResult<OtlpExport> {
    let owned = owned_payloads(values);
    let payloads = payload_slices(&owned);
    let out = py.allow_threads(|| otlp_spans(&payloads, max_bytes));
    export_otlp(py, out)
}

/// Decode a batch of OTLP protobuf `ExportLogsServiceRequest` messages into log rows
/// ([`otlp_logs`]), returned as [`decode_otlp_spans`] returns spans.
#[pyfunction]
fn decode_otlp_logs(py: Python<'_>, values: &Bound<'_, PyList>, max_bytes: usize) -> PyResult<OtlpExport> {
    let owned = owned_payloads(values);
    let payloads = payload_slices(&owned);
    let out = py.allow_threads(|| otlp_logs(&payloads, max_bytes));
    export_otlp(py, out)
}

/// Decode a batch of OTLP protobuf `ExportMetricsServiceRequest` messages into metric rows
/// ([`otlp_metrics`]), returned as [`decode_otlp_spans`] returns spans.
#[pyfunction]
fn decode_otlp_metrics(py: Python<'_>, values: &Bound<'_, PyList>, max_bytes: usize) -> PyResult<OtlpExport> {
    let owned = owned_payloads(values);
    let payloads = payload_slices(&owned);
    let out = py.allow_threads(|| otlp_metrics(&payloads, max_bytes));
    export_otlp(py, out)
}

/// An Avro type as schemas/codecs/native_avro.py describes it: `"string"`, `"int"`,
/// `"long"`, `"double"`, `"boolean"`, `"map"` (string values), or a tuple `("enum",
/// [symbols])`, `("nullable", T)`, `("array", T)`, `("record", [T, ...])`.
fn av_of(spec: &Bound<'_, PyAny>) -> PyResult<crate::avro::Av> {
    use crate::avro::Av;
    let bad = |what: &str| PyValueError::new_err(format!("obsflow_native: unknown Avro type {what}"));
    if let Ok(name) = spec.extract::<String>() {
        return match name.as_str() {
            "string" => Ok(Av::Str),
            "int" => Ok(Av::Int),
            "long" => Ok(Av::Long),
            "double" => Ok(Av::Double),
            "boolean" => Ok(Av::Bool),
            "map" => Ok(Av::Map),
            other => Err(bad(&format!("{other:?}"))),
        };
    }
    let t = spec.downcast::<PyTuple>().map_err(|_| bad("(a name or a tuple expected)"))?;
    let kind: String = t.get_item(0)?.extract()?;
    let arg = t.get_item(1)?;
    match kind.as_str() {
        "enum" => Ok(Av::Enum(arg.extract()?)),
        "nullable" => Ok(Av::Opt(Box::new(av_of(&arg)?))),
        "array" => Ok(Av::Array(Box::new(av_of(&arg)?))),
        "record" => Ok(Av::Record(arg.try_iter()?.map(|f| av_of(&f?)).collect::<PyResult<Vec<_>>>()?)),
        other => Err(bad(&format!("{other:?}"))),
    }
}

/// Decode a batch of Confluent-framed Avro records ([`crate::avro::avro_batch`]).
///
/// `values`: the records (bytes or None); `max_bytes`: the size limit; `columns`: the
/// reader schema's field types in column order; `plans`: `[(schema_id, [(type, column or
/// -1)])]`, the writer fields of each schema id the extension may read. Returns
/// `(verdicts, batch)` as [`decode_json`] does. Raises `ValueError` for a plan that does
/// not fit the columns; never for a record's content.
#[pyfunction]
fn decode_avro(py: Python<'_>, values: &Bound<'_, PyList>, max_bytes: usize, columns: &Bound<'_, PyAny>, plans: &Bound<'_, PyAny>)
    -> PyResult<(PyObject, PyObject)> {
    use crate::avro::{avro_batch, Plan};
    let columns = columns.try_iter()?.map(|c| av_of(&c?)).collect::<PyResult<Vec<_>>>()?;
    let mut read = Vec::new();
    for plan in plans.try_iter()? {
        let plan = plan?;
        let (schema_id, fields): (u32, Bound<'_, PyAny>) = plan.extract()?;
        let mut out = Vec::new();
        for f in fields.try_iter()? {
            let (t, col): (Bound<'_, PyAny>, i64) = f?.extract()?;
            out.push((av_of(&t)?, usize::try_from(col).ok()));
        }
        let plan = Plan { schema_id, fields: out };
        if !plan.fits(&columns) {
            return Err(PyValueError::new_err(format!("obsflow_native: the plan of schema id {schema_id} does not fit the columns")));
        }
        read.push(plan);
    }
    let owned = owned_payloads(values);
    let payloads = payload_slices(&owned);
    let (verdicts, cols) = py.allow_threads(|| avro_batch(&payloads, max_bytes, &columns, &read));
    let rows = rows_of(&verdicts);
    Ok((buf(py, verdicts)?, json_rows(py, cols, rows)?))
}

/// The BLAKE2b-128 digest of each id (a list of `str`, hashed as UTF-8) as two
/// little-endian `uint64` words, `[hi0, lo0, hi1, lo1, ...]`: byte for byte
/// `hashlib.blake2b(id.encode(), digest_size=16).digest()` (transforms/dedupe_store.py).
/// A `str` that is not encodable as UTF-8 (a lone surrogate) raises `UnicodeEncodeError`.
#[pyfunction]
fn id_digests(py: Python<'_>, ids: &Bound<'_, PyList>) -> PyResult<Buf> {
    let owned: Vec<Bound<'_, pyo3::types::PyString>> = ids.iter().map(|v| v.downcast_into().map_err(PyErr::from)).collect::<PyResult<_>>()?;
    let texts: Vec<&str> = owned.iter().map(|s| s.to_str()).collect::<PyResult<_>>()?;
    let words = py.allow_threads(|| crate::digest::digests(texts.iter().map(|t| t.as_bytes())));
    Ok(Buf { data: words.iter().flat_map(|w| w.to_le_bytes()).collect() })
}

/// [`id_digests`] of the values `offset .. offset + length` of an Arrow `string` array,
/// given its offsets (`int32`) and data buffers (validity is not read: nulls are the caller's
/// to drop first). `ValueError` when an offset is out of the buffers' bounds.
#[pyfunction]
fn id_digests_arrow(py: Python<'_>, offsets: pyo3::buffer::PyBuffer<i8>, data: pyo3::buffer::PyBuffer<i8>, offset: usize, length: usize)
    -> PyResult<Buf> {
    fn bytes(b: &pyo3::buffer::PyBuffer<i8>) -> PyResult<&[u8]> {
        if !b.is_c_contiguous() {
            return Err(PyValueError::new_err("id_digests_arrow: a buffer is not contiguous"));
        }
        // SAFETY: the buffer is held (`b`) for the borrow's lifetime and is contiguous bytes
        Ok(unsafe { std::slice::from_raw_parts(b.buf_ptr() as *const u8, b.len_bytes()) })
    }
    let (offs, text) = (bytes(&offsets)?, bytes(&data)?);
    let end = offset.checked_add(length).and_then(|n| n.checked_add(1)).and_then(|n| n.checked_mul(4));
    if end.is_none_or(|e| e > offs.len()) {
        return Err(PyValueError::new_err("id_digests_arrow: the offsets buffer is shorter than the array"));
    }
    let at = |i: usize| i32::from_le_bytes(offs[4 * i..4 * i + 4].try_into().unwrap());
    let mut ids = Vec::with_capacity(length);
    for i in offset..offset + length {
        let (s, e) = (at(i), at(i + 1));
        match (usize::try_from(s), usize::try_from(e)) {
            (Ok(s), Ok(e)) if s <= e && e <= text.len() => ids.push(&text[s..e]),
            _ => return Err(PyValueError::new_err(format!("id_digests_arrow: value {i} has offsets {s}..{e} outside the data"))),
        }
    }
    let words = py.allow_threads(|| crate::digest::digests(ids.iter().copied()));
    Ok(Buf { data: words.iter().flat_map(|w| w.to_le_bytes()).collect() })
}

#[pymodule]
fn obsflow_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Buf>()?;
    m.add_class::<ArrowBatch>()?;
    m.add_function(wrap_pyfunction!(live_exports, m)?)?;
    m.add_function(wrap_pyfunction!(decode_json, m)?)?;
    m.add_function(wrap_pyfunction!(decode_json_batch, m)?)?;
    m.add_function(wrap_pyfunction!(decode_otlp_spans, m)?)?;
    m.add_function(wrap_pyfunction!(decode_otlp_logs, m)?)?;
    m.add_function(wrap_pyfunction!(decode_otlp_metrics, m)?)?;
    m.add_function(wrap_pyfunction!(crate::scrub::scrub_hints, m)?)?;
    m.add_function(wrap_pyfunction!(crate::scrub::control_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(crate::scrub::json_key_candidates, m)?)?;
    m.add_function(wrap_pyfunction!(crate::scrub::framed_key_candidates, m)?)?;
    m.add_function(wrap_pyfunction!(crate::pseudonym::pseudonyms, m)?)?;
    m.add_function(wrap_pyfunction!(crate::otlp_json::decode_otlp_json, m)?)?;
    m.add_function(wrap_pyfunction!(decode_avro, m)?)?;
    m.add_function(wrap_pyfunction!(id_digests, m)?)?;
    m.add_function(wrap_pyfunction!(id_digests_arrow, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
