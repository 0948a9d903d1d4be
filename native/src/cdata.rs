//! The Arrow C data interface, hand-rolled (<https://arrow.apache.org/docs/format/CDataInterface.html>):
//! a decoded batch leaves the extension as one `ArrowArray` struct array (a record batch:
//! the decoder's columns, then any index columns), whose buffers are the decoders' own
//! vectors, moved and never copied. Each `ArrowArray` node owns its buffers through its
//! `private_data`; its `release` callback frees them (and any child not moved away by the
//! consumer). Pure Rust, no pyo3: src/py.rs wraps the structs in the PyCapsules of the
//! Arrow PyCapsule interface.
//!
//! The columns carry layouts, not logical types (an 8-byte column is an int64, a double or
//! a timestamp): the consumer names the types with an `ArrowSchema` (the wire schema, which
//! it owns), and [`check_schema`] holds it against the layouts before the array is handed
//! over, so a schema that does not fit is an error, never an out-of-bounds read.
//!
//! Not the `arrow` crate: it would be built from scratch in CI for two structs and a
//! callback (and its `ffi` module wants its own `ArrayData`, a copy of our buffers' shape).

use std::ffi::{c_char, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{Bits, Col};

/// `struct ArrowSchema` of the C data interface.
#[repr(C)]
pub struct ArrowSchema {
    pub format: *const c_char,
    pub name: *const c_char,
    pub metadata: *const c_char,
    pub flags: i64,
    pub n_children: i64,
    pub children: *mut *mut ArrowSchema,
    pub dictionary: *mut ArrowSchema,
    pub release: Option<unsafe extern "C" fn(*mut ArrowSchema)>,
    pub private_data: *mut c_void,
}

/// `struct ArrowArray` of the C data interface.
#[repr(C)]
pub struct ArrowArray {
    pub length: i64,
    pub null_count: i64,
    pub offset: i64,
    pub n_buffers: i64,
    pub n_children: i64,
    pub buffers: *mut *const c_void,
    pub children: *mut *mut ArrowArray,
    pub dictionary: *mut ArrowArray,
    pub release: Option<unsafe extern "C" fn(*mut ArrowArray)>,
    pub private_data: *mut c_void,
}

/// `ARROW_FLAG_NULLABLE`: the field may hold nulls.
const FLAG_NULLABLE: i64 = 2;

/// Array nodes exported and not yet released, and the bytes their buffers hold.
static LIVE_ARRAYS: AtomicUsize = AtomicUsize::new(0);
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

/// `(array nodes, buffer bytes)` exported and not yet released: both go back to what they
/// were once every batch exported since has been released (imported and dropped, or never
/// imported and its owner dropped).
pub fn live() -> (usize, usize) {
    (LIVE_ARRAYS.load(Ordering::SeqCst), LIVE_BYTES.load(Ordering::SeqCst))
}

/// The layout of a node, as [`check_schema`] holds a schema against it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    Str,
    /// fixed width in bytes (None: no value to tell the width by)
    Prim(Option<usize>),
    Bool,
    List,
    Struct,
    Map,
}

/// A buffer the node owns (its allocation is freed with the node).
enum Store {
    Bytes(Vec<u8>),
    Words(Vec<i32>),
}

impl Store {
    fn bytes(&self) -> usize {
        match self {
            Store::Bytes(v) => v.capacity(),
            Store::Words(v) => v.capacity() * 4,
        }
    }
}

/// What one node's `private_data` points to.
struct Private {
    layout: Layout,
    /// held only to be freed with the node (the buffers point into them)
    _stores: Vec<Store>,
    buffers: Vec<*const c_void>,
    children: Vec<*mut ArrowArray>,
    bytes: usize,
}

/// A valid address for a zero-length buffer (an empty `Vec`'s pointer dangles).
static EMPTY: [u64; 1] = [0];

fn data_ptr(store: &Store) -> *const c_void {
    let (ptr, len) = match store {
        Store::Bytes(v) => (v.as_ptr() as *const c_void, v.len()),
        Store::Words(v) => (v.as_ptr() as *const c_void, v.len()),
    };
    if len == 0 {
        EMPTY.as_ptr() as *const c_void
    } else {
        ptr
    }
}

unsafe extern "C" fn release_array(array: *mut ArrowArray) {
    if array.is_null() || (*array).release.is_none() {
        return;
    }
    let private = Box::from_raw((*array).private_data as *mut Private);
    for &child in &private.children {
        // a child the consumer moved away is marked released (release = NULL): its new
        // owner releases it; the struct itself is ours to free either way
        if let Some(release) = (*child).release {
            release(child);
        }
        drop(Box::from_raw(child));
    }
    LIVE_BYTES.fetch_sub(private.bytes, Ordering::SeqCst);
    LIVE_ARRAYS.fetch_sub(1, Ordering::SeqCst);
    drop(private);
    (*array).release = None;
    (*array).private_data = ptr::null_mut();
}

/// One node over `validity` (None when nothing is null), `stores` and `children`.
fn node(layout: Layout, validity: Bits, stores: Vec<Store>, children: Vec<ArrowArray>) -> ArrowArray {
    let (length, nulls) = (validity.len, validity.nulls);
    let mut all = Vec::with_capacity(stores.len() + 1);
    let has_validity = nulls > 0;
    if has_validity {
        all.push(Store::Bytes(validity.bytes));
    }
    all.extend(stores);
    let mut buffers: Vec<*const c_void> = Vec::with_capacity(all.len() + 1);
    if !has_validity {
        buffers.push(ptr::null());
    }
    buffers.extend(all.iter().map(data_ptr));
    let children: Vec<*mut ArrowArray> = children.into_iter().map(|c| Box::into_raw(Box::new(c))).collect();
    let bytes = all.iter().map(Store::bytes).sum();
    let mut private = Box::new(Private { layout, _stores: all, buffers, children, bytes });
    LIVE_ARRAYS.fetch_add(1, Ordering::SeqCst);
    LIVE_BYTES.fetch_add(bytes, Ordering::SeqCst);
    let array = ArrowArray {
        length: length as i64,
        null_count: nulls as i64,
        offset: 0,
        n_buffers: private.buffers.len() as i64,
        n_children: private.children.len() as i64,
        buffers: private.buffers.as_mut_ptr(),
        children: if private.children.is_empty() { ptr::null_mut() } else { private.children.as_mut_ptr() },
        dictionary: ptr::null_mut(),
        release: Some(release_array),
        private_data: ptr::null_mut(),
    };
    ArrowArray { private_data: Box::into_raw(private) as *mut c_void, ..array }
}

fn all_valid(len: usize) -> Bits {
    Bits { bytes: Vec::new(), len, nulls: 0 }
}

/// One column as an `ArrowArray` owning its buffers (moved, not copied).
fn export_col(col: Col) -> ArrowArray {
    match col {
        Col::Str { valid, offsets, data } => node(Layout::Str, valid, vec![Store::Words(offsets), Store::Bytes(data)], vec![]),
        Col::Prim { valid, data } => {
            let width = if valid.len == 0 { None } else { Some(data.len() / valid.len) };
            node(Layout::Prim(width), valid, vec![Store::Bytes(data)], vec![])
        }
        Col::Bool { valid, values } => node(Layout::Bool, valid, vec![Store::Bytes(values.bytes)], vec![]),
        Col::List { valid, offsets, child } => node(Layout::List, valid, vec![Store::Words(offsets)], vec![export_col(*child)]),
        Col::Struct { valid, children } => node(Layout::Struct, valid, vec![], children.into_iter().map(export_col).collect()),
        Col::Map { valid, offsets, keys, values } => {
            let n = offsets.last().copied().unwrap_or(0) as usize;
            let entries = node(Layout::Struct, all_valid(n), vec![], vec![export_col(*keys), export_col(*values)]);
            node(Layout::Map, valid, vec![Store::Words(offsets)], vec![entries])
        }
    }
}

/// An exported batch: the top-level `ArrowArray`, released when dropped unless it was
/// handed on ([`Exported::into_raw`]) or moved by a consumer (its `release` then NULL).
pub struct Exported(Box<ArrowArray>);

// SAFETY: the nodes own their buffers outright (no shared state but the atomic counters),
// and nothing reachable through `&Exported` mutates them
unsafe impl Send for Exported {}
unsafe impl Sync for Exported {}

impl Exported {
    /// The address of the top-level struct, to be freed by [`Exported::from_raw`].
    pub fn into_raw(self) -> *mut ArrowArray {
        let me = std::mem::ManuallyDrop::new(self);
        // SAFETY: `me` is never dropped, so the box is moved out exactly once
        Box::into_raw(unsafe { ptr::read(&me.0) })
    }

    /// # Safety
    /// `raw` comes from [`Exported::into_raw`] and is taken back once.
    pub unsafe fn from_raw(raw: *mut ArrowArray) -> Self {
        Exported(Box::from_raw(raw))
    }

    /// The top-level struct array.
    pub fn array(&self) -> &ArrowArray {
        &self.0
    }

    /// The rows of the batch.
    pub fn len(&self) -> usize {
        self.0.length as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buffer addresses of each column (0 for an absent validity bitmap), children
    /// after their parent's, depth first: what pyarrow's buffers must point at.
    pub fn addresses(&self) -> Vec<Vec<usize>> {
        fn walk(a: &ArrowArray, out: &mut Vec<usize>) {
            // SAFETY: a live node's buffers and children arrays have n_buffers / n_children entries
            unsafe {
                for k in 0..a.n_buffers as usize {
                    out.push(*a.buffers.add(k) as usize);
                }
                for k in 0..a.n_children as usize {
                    walk(&**a.children.add(k), out);
                }
            }
        }
        (0..self.0.n_children as usize)
            .map(|k| {
                let mut out = Vec::new();
                // SAFETY: as above
                walk(unsafe { &**self.0.children.add(k) }, &mut out);
                out
            })
            .collect()
    }
}

impl Drop for Exported {
    fn drop(&mut self) {
        if let Some(release) = self.0.release {
            // SAFETY: a node not yet released is ours; release marks it released
            unsafe { release(&mut *self.0) };
        }
    }
}

/// The batch `cols` of `rows` rows as one struct array (a record batch), without copying a
/// buffer. Every column has `rows` values ([`Col::validate`]).
pub fn export_batch(rows: usize, cols: Vec<Col>) -> Exported {
    let children = cols.into_iter().map(export_col).collect();
    Exported(Box::new(node(Layout::Struct, all_valid(rows), vec![], children)))
}

/// An int64 column of `values` (no nulls), e.g. the record of each row.
pub fn int64_col(values: Vec<u8>) -> Col {
    let len = values.len() / 8;
    Col::Prim { valid: all_valid(len), data: values }
}

/// An int32 column of `values` (little-endian bytes, no nulls), e.g. the item of each row.
pub fn int32_col(values: Vec<u8>) -> Col {
    let len = values.len() / 4;
    Col::Prim { valid: all_valid(len), data: values }
}

/// Whether an Arrow format string describes `layout` (a fixed width's formats by width).
fn fits(format: &str, layout: Layout) -> bool {
    let four = matches!(format, "i" | "I" | "f" | "tdD" | "tts" | "ttm");
    let eight = matches!(format, "l" | "L" | "g" | "tdm" | "ttu" | "ttn") || format.starts_with("ts") || format.starts_with("tD");
    match layout {
        Layout::Str => format == "u",
        Layout::Prim(Some(4)) => four,
        Layout::Prim(Some(8)) => eight,
        Layout::Prim(None) => four || eight,
        Layout::Prim(Some(_)) => false,
        Layout::Bool => format == "b",
        Layout::List => format == "+l",
        Layout::Struct => format == "+s",
        Layout::Map => format == "+m",
    }
}

/// `Ok` when `schema` describes `array`'s layout node by node (format, number of children,
/// no dictionary, nullable wherever there are nulls); else what does not fit, by path.
///
/// # Safety
/// `schema` is a valid, unreleased `ArrowSchema`; `array` was made by [`export_batch`] and
/// is not released.
pub unsafe fn check_schema(schema: &ArrowSchema, array: &ArrowArray) -> Result<(), String> {
    unsafe fn walk(s: &ArrowSchema, a: &ArrowArray, path: &str) -> Result<(), String> {
        let format = if s.format.is_null() { "" } else { CStr::from_ptr(s.format).to_str().unwrap_or("") };
        let name = if s.name.is_null() { "" } else { CStr::from_ptr(s.name).to_str().unwrap_or("") };
        let path = if path.is_empty() { name.to_string() } else { format!("{path}.{name}") };
        let private = &*(a.private_data as *const Private);
        if !s.dictionary.is_null() || !fits(format, private.layout) {
            return Err(format!("{path}: the schema says {format:?}, the column is {:?}", private.layout));
        }
        if s.n_children != a.n_children {
            return Err(format!("{path}: the schema has {} children, the column {}", s.n_children, a.n_children));
        }
        if a.null_count > 0 && s.flags & FLAG_NULLABLE == 0 {
            return Err(format!("{path}: {} nulls in a field that is not nullable", a.null_count));
        }
        for k in 0..a.n_children as usize {
            walk(&**s.children.add(k), &**a.children.add(k), &path)?;
        }
        Ok(())
    }
    walk(schema, array, "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{new_col, Ty};

    fn strings(values: &[Option<&str>]) -> Col {
        let mut col = new_col(&Ty::Str);
        if let Col::Str { valid, offsets, data } = &mut col {
            for v in values {
                valid.push(v.is_some());
                data.extend_from_slice(v.unwrap_or("").as_bytes());
                offsets.push(data.len() as i32);
            }
        }
        col
    }

    /// One test for the global counters (tests run in parallel threads).
    #[test]
    fn export_moves_buffers_and_release_frees_them() {
        let before = live();
        let col = strings(&[Some("ab"), None, Some("")]);
        let data_at = match &col {
            Col::Str { data, .. } => data.as_ptr() as usize,
            _ => unreachable!(),
        };
        let index = int64_col([0i64, 1, 2].iter().flat_map(|i| i.to_le_bytes()).collect());
        let batch = export_batch(3, vec![col, index]);
        assert_eq!(batch.len(), 3);
        let addresses = batch.addresses();
        assert_eq!(addresses.len(), 2);
        assert_eq!(addresses[0].len(), 3);
        assert_ne!(addresses[0][0], 0); // a null: the bitmap is there
        assert_eq!(addresses[0][2], data_at); // moved, not copied
        assert_eq!(addresses[1][0], 0); // no null: no bitmap
        assert_eq!(live().0, before.0 + 3);
        // a consumer moving the first column away, then releasing it after the batch
        let moved = unsafe {
            let child = *batch.array().children;
            let moved = ptr::read(child);
            (*child).release = None;
            moved
        };
        drop(batch);
        assert_eq!(live().0, before.0 + 1);
        let mut moved = moved;
        unsafe { (moved.release.unwrap())(&mut moved) };
        assert!(moved.release.is_none());
        assert_eq!(live(), before);
        // a map column: the entries struct sits between the map and its keys and values
        let mut map = new_col(&Ty::Map);
        if let Col::Map { valid, offsets, keys, values } = &mut map {
            valid.push(true);
            offsets.push(1);
            *keys = Box::new(strings(&[Some("k")]));
            *values = Box::new(strings(&[None]));
        }
        let batch = export_batch(1, vec![map]);
        assert_eq!(live().0, before.0 + 5);
        assert_eq!(batch.addresses()[0].len(), 2 + 1 + 3 + 3);
        drop(batch);
        assert_eq!(live(), before);
    }

    #[test]
    fn formats_fit_layouts_by_width() {
        assert!(fits("l", Layout::Prim(Some(8))) && fits("tsu:UTC", Layout::Prim(Some(8))) && fits("g", Layout::Prim(None)));
        assert!(!fits("i", Layout::Prim(Some(8))) && !fits("l", Layout::Prim(Some(4))) && !fits("U", Layout::Str));
        assert!(fits("+m", Layout::Map) && !fits("+l", Layout::Map) && fits("b", Layout::Bool));
    }
}
