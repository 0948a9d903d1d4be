//! The scrubber's prefilter: which values of an Arrow string column *may* hold personal
//! data, in one byte scan (transforms/scrub.py runs its exact RE2 rewrite on those only).
//!
//! Guarantee: a superset. Every value that the scrubber's hint regex (``Scrubber._any_hint``:
//! ``@|%40``, ``(?i:earer)|eyJ``, ``(?i:key|secret|token|passw|sk_|pk_|rk_|AKIA|gh[pousr]_|xox|AIza)``,
//! ``\d(?:[ \-]?\d){12}``) matches is flagged; so is every value holding a non-ASCII byte
//! (RE2's case folding maps some non-ASCII letters onto ASCII ones, e.g. the Kelvin sign
//! onto ``k``), and the ASCII words are matched case-insensitively throughout. A value
//! flagged needlessly only costs the exact pass; a value missed would be stored unscrubbed,
//! so the scan errs on the side of flagging.

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::py::Buf;

/// Whether ``rest`` starts with ``word`` (lower-case ASCII letters, digits and ``_%``),
/// ignoring ASCII case. (``b | 0x20`` lower-cases letters; it maps no other byte onto a
/// letter, and leaves ``_``, ``%`` and digits as they are.)
#[inline]
fn starts(rest: &[u8], word: &[u8]) -> bool {
    rest.len() >= word.len() && rest.iter().zip(word).all(|(&a, &w)| if w.is_ascii_lowercase() { a | 0x20 == w } else { a == w })
}

/// Byte classes of the scan: 0 nothing, 1 a digit, 2 a separator of card digits (space,
/// ``-``), 3 flags the value at once (``@``, any non-ASCII byte), 4 may start a word.
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0x80;
    while i < 256 {
        t[i] = 3;
        i += 1;
    }
    t[b'@' as usize] = 3;
    let mut d = b'0';
    while d <= b'9' {
        t[d as usize] = 1;
        d += 1;
    }
    t[b' ' as usize] = 2;
    t[b'-' as usize] = 2;
    let starts = b"eksptraxg%";
    let mut k = 0;
    while k < starts.len() {
        t[starts[k] as usize] = 4;
        if starts[k].is_ascii_lowercase() {
            t[starts[k].to_ascii_uppercase() as usize] = 4;
        }
        k += 1;
    }
    t
};

/// The first two bytes of each word, lower-cased (``| 0x20``), as a 64 Ki-entry table.
static PAIRS: [bool; 65536] = {
    let mut t = [false; 65536];
    let pairs: [&[u8; 2]; 14] = [b"ea", b"ey", b"ke", b"se", b"sk", b"to", b"pa", b"pk", b"rk", b"ak", b"ai", b"xo", b"gh", b"%4"];
    let mut k = 0;
    while k < pairs.len() {
        t[((pairs[k][0] as usize) << 8) | pairs[k][1] as usize] = true;
        k += 1;
    }
    t
};

/// Digit, card-separator and flag bits of each byte for :func:`may_hold`'s branch-free scan:
/// bit 0 a digit, bit 1 a separator of card digits (space, ``-``), bit 2 flags the value at
/// once (``@``, any non-ASCII byte).
const BITS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = match CLASS[i] {
            1 => 1,
            2 => 2,
            3 => 4,
            _ => 0,
        };
        i += 1;
    }
    t
};

/// Bytes a chunk of :func:`may_hold` scans before it looks at what the chunk found.
const CHUNK: usize = 64;

/// Whether the word check of :func:`may_hold_bytewise` hits at ``k`` (``CLASS[v[k]] == 4``).
#[inline]
fn word_at(v: &[u8], k: usize) -> bool {
    let b = v[k];
    match v.get(k + 1) {
        Some(&next) if PAIRS[(((b | 0x20) as usize) << 8) | (next | 0x20) as usize] => {}
        _ => return false,
    }
    let rest = &v[k..];
    match b | 0x20 {
        b'e' => starts(rest, b"earer") || starts(rest, b"eyj"),
        b'k' => starts(rest, b"key"),
        b's' => starts(rest, b"secret") || starts(rest, b"sk_"),
        b't' => starts(rest, b"token"),
        b'p' => starts(rest, b"passw") || starts(rest, b"pk_"),
        b'r' => starts(rest, b"rk_"),
        b'a' => starts(rest, b"akia") || starts(rest, b"aiza"),
        b'x' => starts(rest, b"xox"),
        b'g' => rest.len() >= 4 && rest[1] | 0x20 == b'h'
            && matches!(rest[2] | 0x20, b'p' | b'o' | b'u' | b's' | b'r') && rest[3] == b'_',
        _ => starts(rest, b"%40"),
    }
}

/// 1 when byte ``b`` (followed by ``next``) can take part in a verdict of :func:`may_hold`:
/// it flags at once (``@``, non-ASCII), it is a digit, or it and ``next`` lower-cased are a
/// word's first pair (exactly ``PAIRS``). Written as comparisons only, so a loop over a
/// chunk compiles to vector instructions.
#[inline(always)]
fn loud(b: u8, next: u8) -> u8 {
    let (l, n) = (b | 0x20, next | 0x20);
    let flag = (b >= 0x80) | (b == b'@') | b.is_ascii_digit();
    let pair = (l == b'e' && (n == b'a' || n == b'y'))
        | (l == b'k' && n == b'e')
        | (l == b's' && (n == b'e' || n == b'k'))
        | (l == b't' && n == b'o')
        | (l == b'p' && (n == b'a' || n == b'k'))
        | (l == b'r' && n == b'k')
        | (l == b'a' && (n == b'k' || n == b'i'))
        | (l == b'x' && n == b'o')
        | (l == b'g' && n == b'h')
        | (l == b'%' && n == b'4');
    (flag | pair) as u8
}

/// Whether ``v`` may match the scrubber's hint regex (see the module doc).
///
/// The verdict is an OR over positions: a byte that flags at once, a chain of 13 digits
/// (single separators between them), or a word starting at a byte of class 4. So the scan
/// runs in chunks without a branch per byte: per byte it updates the digit chain with
/// arithmetic (``run + digit``, masked to 0 unless the byte is a digit or a separator
/// after one, as the byte-at-a-time scan's match arms do) and ORs in the flag bit and whether the byte and
/// the next lower-cased form a word's first pair; only a chunk with a pair runs the exact
/// word check on its class-4 bytes. A whole chunk with no :func:`loud` byte (no digit:
/// the chain is 0 after it) is passed over by one vectorized test. Same verdicts as
/// :func:`may_hold_bytewise` (the tests compare the two on random bytes).
pub fn may_hold(v: &[u8]) -> bool {
    let n = v.len();
    let mut run = 0u32;
    let mut prev_digit = 0u32;
    let mut start = 0;
    while start < n {
        let end = (start + CHUNK).min(n);
        if end < n && v[start..end].iter().zip(&v[start + 1..end + 1]).fold(0u8, |a, (&b, &c)| a | loud(b, c)) == 0 {
            run = 0; // CHUNK bytes without a digit end any chain
            prev_digit = 0;
            start = end;
            continue;
        }
        let mut hit = 0u32;
        let mut pair = false;
        for k in start..end {
            let b = v[k];
            let bits = BITS[b as usize] as u32;
            let digit = bits & 1;
            let keep = (bits >> 1) & prev_digit;
            run = (run + digit) & 0u32.wrapping_sub(digit | keep); // kept when 1, else 0
            prev_digit = digit;
            hit |= (bits >> 2) | (run >= 13) as u32;
            let next = if k + 1 < n { v[k + 1] } else { 0 };
            pair |= PAIRS[(((b | 0x20) as usize) << 8) | (next | 0x20) as usize];
        }
        if hit != 0 {
            return true;
        }
        if pair && (start..end).any(|k| CLASS[v[k] as usize] == 4 && word_at(v, k)) {
            return true;
        }
        start = end;
    }
    false
}

/// (pyarrow's buffers export the format ``b``, signed bytes: read as ``u8``.)
///
/// Per slot of a string column (32-bit offsets: ``offsets`` and ``data`` are its Arrow
/// buffers, ``offset``/``length`` the array's slice): 1 when the value may hold personal
/// data (:func:`may_hold`), else 0. Null slots are scanned like any other (their bytes are
/// empty in a valid array); the caller masks them out.
#[pyfunction]
pub fn scrub_hints(py: Python<'_>, offsets: PyBuffer<i8>, data: PyBuffer<i8>, offset: usize, length: usize) -> PyResult<Buf> {
    let offs = readonly(py, &offsets)?;
    let bytes = readonly(py, &data)?;
    if offs.len() < (offset + length + 1) * 4 {
        return Err(PyValueError::new_err("scrub_hints: the offsets buffer is shorter than the array"));
    }
    let at = |i: usize| i32::from_le_bytes([offs[4 * i], offs[4 * i + 1], offs[4 * i + 2], offs[4 * i + 3]]);
    let mut out = Vec::with_capacity(length);
    for i in offset..offset + length {
        let (s, e) = (at(i), at(i + 1));
        if s < 0 || e < s || e as usize > bytes.len() {
            return Err(PyValueError::new_err("scrub_hints: offsets out of the data buffer"));
        }
        out.push(may_hold(&bytes[s as usize..e as usize]) as u8);
    }
    Ok(Buf { data: out })
}

/// Per payload of ``values`` (``bytes`` or ``None``): 1 when it holds a control byte of
/// ``[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]`` (framed binary: Avro, protobuf), else 0 (the same
/// verdict as ``transforms.scrub._CONTROL.search``); ``None`` gives 0.
#[pyfunction]
pub fn control_bytes(values: &Bound<'_, PyList>) -> PyResult<Buf> {
    let mut out = Vec::with_capacity(values.len());
    for v in values.iter() {
        if v.is_none() {
            out.push(0);
            continue;
        }
        let b = v.downcast::<PyBytes>()?.as_bytes();
        out.push(b.iter().any(|&c| c < 0x20 && !matches!(c, 0x09 | 0x0a | 0x0d) || c == 0x7f) as u8);
    }
    Ok(Buf { data: out })
}

/// No end: the string started there is not closed.
const OPEN: usize = usize::MAX;

/// The next position at or after ``from`` holding ``"`` or ``\``, or ``v.len()``: whole
/// 32-byte chunks without either are passed over by one vectorizable test.
#[inline]
fn next_special(v: &[u8], mut from: usize) -> usize {
    const CHUNK: usize = 32;
    while from + CHUNK <= v.len() {
        if v[from..from + CHUNK].iter().fold(false, |a, &b| a | (b == b'"') | (b == b'\\')) {
            break;
        }
        from += CHUNK;
    }
    while from < v.len() && v[from] != b'"' && v[from] != b'\\' {
        from += 1;
    }
    from
}

/// Every ``"`` of ``v`` with the end of the JSON string it opens, as Python's ``re`` reads
/// ``"[^"\\]*+(?:\\.[^"\\]*+)*+"`` (transforms/sensitive_json.py ``JSON_CHARS``) from it:
/// the position of the closing quote, or :data:`OPEN` when that pattern fails (no closing
/// quote; a backslash before a newline or at the end, as ``.`` takes no newline).
///
/// A string's inside starts after a quote, never inside a run of backslashes, so each run
/// pairs up the same way whatever quote opened the string: a run of odd length escapes the
/// byte after it (an escaped quote closes nothing; an escaped newline, or none, fails the
/// pattern). One forward pass finds the quotes, which of them close, and where the pattern
/// fails; one backward pass over the quotes gives each its end.
fn quote_ends(v: &[u8]) -> Vec<(usize, usize)> {
    let n = v.len();
    let mut quotes: Vec<(usize, bool)> = Vec::new(); // (position, closes a string)
    let mut fails: Vec<usize> = Vec::new(); // runs whose escape fails
    let mut k = next_special(v, 0);
    while k < n {
        if v[k] == b'"' {
            quotes.push((k, true));
            k = next_special(v, k + 1);
            continue;
        }
        let run = k;
        while k < n && v[k] == b'\\' {
            k += 1;
        }
        if (k - run) % 2 == 1 {
            if k == n || v[k] == b'\n' {
                fails.push(run);
            } else if v[k] == b'"' {
                quotes.push((k, false));
            }
            if k < n {
                k += 1; // the escaped byte
            }
        }
        k = next_special(v, k);
    }
    let mut out = vec![(0, OPEN); quotes.len()];
    let (mut close, mut fail) = (OPEN, fails.len());
    for (j, &(q, closes)) in quotes.iter().enumerate().rev() {
        while fail > 0 && fails[fail - 1] > q {
            fail -= 1;
        }
        let next_fail = fails.get(fail).copied().unwrap_or(OPEN);
        out[j] = (q, if close < next_fail { close } else { OPEN });
        if closes {
            close = q;
        }
    }
    out
}

/// Whether ``b`` may be a character of Python's ``\s`` (str patterns): ASCII blanks,
/// ``\x1c``–``\x1f``, and any byte of a non-ASCII character (a superset of the Unicode
/// spaces ``\s`` takes).
#[inline]
fn may_be_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0x1c..=0x1f) || b >= 0x80
}

/// The insides of the JSON strings of ``v`` that may be a key :func:`redact_values` of
/// transforms/sensitive_json.py asks about: for every ``"`` (the search may start at any),
/// the string it opens (:func:`quote_ends`) when a ``:`` (a ``"key": value``) or a ``,``
/// (OTLP JSON's ``"key": "k", "value"``) follows it after blanks. A superset of the keys
/// either scan meets, so a text none of whose candidates is sensitive holds no sensitive
/// key. ``(start, end)`` byte ranges in ``v``; None when their bytes would exceed
/// ``budget`` (many quotes nested in escapes: the caller scans that text itself).
pub fn key_candidates(v: &[u8], budget: usize) -> Option<Vec<(usize, usize)>> {
    let mut out = Vec::new();
    let mut spent = 0usize;
    for (q, e) in quote_ends(v) {
        if e == OPEN {
            continue;
        }
        let mut k = e + 1;
        while k < v.len() && may_be_space(v[k]) {
            k += 1;
        }
        if k < v.len() && (v[k] == b':' || v[k] == b',') {
            spent += e - q;
            if spent > budget {
                return None;
            }
            out.push((q + 1, e));
        }
    }
    Some(out)
}

/// Per slot of a string column (buffers as :func:`scrub_hints` takes them): the key
/// candidates of its value (:func:`key_candidates`, budget 4 bytes a byte of the value plus
/// 256), as three buffers: the candidates' bytes and their offsets (an Arrow string array,
/// int32 offsets), and per candidate its slot (int32, from 0); and per slot a byte, 1 when
/// the budget ran out (the caller scans that value itself).
#[pyfunction]
pub fn json_key_candidates(
    py: Python<'_>, offsets: PyBuffer<i8>, data: PyBuffer<i8>, offset: usize, length: usize,
) -> PyResult<(Buf, Buf, Buf, Buf)> {
    let offs = readonly(py, &offsets)?;
    let bytes = readonly(py, &data)?;
    if offs.len() < (offset + length + 1) * 4 {
        return Err(PyValueError::new_err("json_key_candidates: the offsets buffer is shorter than the array"));
    }
    let at = |i: usize| i32::from_le_bytes([offs[4 * i], offs[4 * i + 1], offs[4 * i + 2], offs[4 * i + 3]]);
    let (mut keys, mut ends, mut slots, mut over) = (Vec::new(), vec![0u8; 4], Vec::new(), Vec::with_capacity(length));
    for i in offset..offset + length {
        let (s, e) = (at(i), at(i + 1));
        if s < 0 || e < s || e as usize > bytes.len() {
            return Err(PyValueError::new_err("json_key_candidates: offsets out of the data buffer"));
        }
        let v = &bytes[s as usize..e as usize];
        match key_candidates(v, 4 * v.len() + 256) {
            None => over.push(1),
            Some(found) => {
                over.push(0);
                for (a, b) in found {
                    keys.extend_from_slice(&v[a..b]);
                    if keys.len() > i32::MAX as usize {
                        return Err(PyValueError::new_err("json_key_candidates: more than 2 GiB of keys"));
                    }
                    ends.extend_from_slice(&(keys.len() as i32).to_le_bytes());
                    slots.extend_from_slice(&((i - offset) as i32).to_le_bytes());
                }
            }
        }
    }
    Ok((Buf { data: keys }, Buf { data: ends }, Buf { data: slots }, Buf { data: over }))
}

/// The framed keys of binary ``v`` that transforms/scrub.py ``_mask_framed_values`` may
/// judge, without its gate: in each printable run (bytes ``0x20``–``0x7e``), at each
/// position after the run's first byte of the payload, the bytes the length byte before it
/// frames (that byte ``n``, or ``n / 2`` when ``n`` is even: protobuf or Avro's zigzag),
/// when they stay in the run, end before the payload does and are all key bytes
/// (``[A-Za-z0-9._\-:/]``). Pushed into ``out`` (each distinct once, with ``seen``); false
/// (the list incomplete) once their bytes exceed ``budget``.
pub fn framed_keys<'v>(v: &'v [u8], budget: usize, seen: &mut std::collections::HashSet<&'v [u8]>, out: &mut Vec<&'v [u8]>) -> bool {
    let key_byte = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'/');
    let n = v.len();
    // where the run of key bytes starting at each position ends (key bytes are printable)
    let mut keys_end = vec![0usize; n + 1];
    keys_end[n] = n;
    for p in (0..n).rev() {
        keys_end[p] = if key_byte(v[p]) { keys_end[p + 1] } else { p };
    }
    let mut spent = 0usize;
    let mut k = 0;
    while k < n {
        if !(0x20..0x7f).contains(&v[k]) {
            k += 1;
            continue;
        }
        let run_start = k;
        while k < n && (0x20..0x7f).contains(&v[k]) {
            k += 1;
        }
        let run_end = k;
        for start in run_start.max(1)..run_end {
            let len = v[start - 1] as usize;
            for length in [len, if len % 2 == 0 { len >> 1 } else { 0 }] {
                let end = start + length;
                if length > 0 && end <= run_end && end < n && keys_end[start] >= end {
                    spent += length;
                    if spent > budget {
                        return false;
                    }
                    let key = &v[start..end];
                    if seen.insert(key) {
                        out.push(key);
                    }
                }
            }
        }
    }
    true
}

/// The distinct framed keys (:func:`framed_keys`, budget 4 bytes a byte of each payload
/// plus 4,096) of all ``values`` (``bytes``; ``None`` skipped), as an Arrow string array's
/// data and int32 offsets, and whether the list is complete (false: a payload ran over its
/// budget, e.g. a megabyte of one letter: the caller judges the payloads itself).
#[pyfunction]
pub fn framed_key_candidates(values: &Bound<'_, PyList>) -> PyResult<(Buf, Buf, bool)> {
    let owned: Vec<Bound<'_, PyBytes>> =
        values.iter().filter(|v| !v.is_none()).map(|v| v.downcast_into::<PyBytes>()).collect::<Result<_, _>>()?;
    let mut seen = std::collections::HashSet::new();
    let mut keys = Vec::new();
    let mut complete = true;
    for b in &owned {
        let v = b.as_bytes();
        if !framed_keys(v, 4 * v.len() + 4096, &mut seen, &mut keys) {
            complete = false;
            break;
        }
    }
    let (mut data, mut ends) = (Vec::new(), vec![0u8; 4]);
    for key in keys {
        data.extend_from_slice(key);
        if data.len() > i32::MAX as usize {
            return Err(PyValueError::new_err("framed_key_candidates: more than 2 GiB of keys"));
        }
        ends.extend_from_slice(&(data.len() as i32).to_le_bytes());
    }
    Ok((Buf { data }, Buf { data: ends }, complete))
}

fn readonly<'a>(py: Python<'_>, b: &'a PyBuffer<i8>) -> PyResult<&'a [u8]> {
    if !b.is_c_contiguous() {
        return Err(PyValueError::new_err("scrub_hints: a buffer is not contiguous"));
    }
    let _ = py;
    // SAFETY: the buffer is held (``b``) for the borrow's lifetime and is contiguous bytes
    Ok(unsafe { std::slice::from_raw_parts(b.buf_ptr() as *const u8, b.len_bytes()) })
}

#[cfg(test)]
mod tests {
    use super::{may_hold, CLASS, PAIRS, starts};

    /// The byte-at-a-time scan :func:`may_hold` replaced (same verdicts), kept as its test oracle.
    fn may_hold_bytewise(v: &[u8]) -> bool {
        let mut run = 0u32; // digits in the current chain (single separators allowed between digits)
        let mut prev_digit = false;
        for (k, &b) in v.iter().enumerate() {
            match CLASS[b as usize] {
                0 => {
                    run = 0;
                    prev_digit = false;
                }
                1 => {
                    run += 1;
                    if run >= 13 {
                        return true;
                    }
                    prev_digit = true;
                }
                2 => {
                    if prev_digit {
                        prev_digit = false; // one separator; a second non-digit ends the chain
                    } else {
                        run = 0;
                    }
                }
                3 => return true,
                _ => {
                    run = 0;
                    prev_digit = false;
                    if super::word_at(v, k) {
                        return true;
                    }
                }
            }
        }
        false
    }

    /// The chunked scan gives the byte-at-a-time scan's verdict on random values drawn
    /// from the bytes that matter (digits, separators, the words' letters in both cases,
    /// ``@``, ``%``, non-ASCII) and any byte, across chunk boundaries (up to 300 bytes).
    #[test]
    fn chunked_scan_agrees_with_the_bytewise_scan() {
        let alphabet: &[u8] = b"0123456789  --eaEAryRYjJkKsScCtToOnNpPwW_iIzZxXgGhHuU%%4040@.b/\xc3\xe2\x7f\x00";
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut flagged, mut cases) = (0, 0);
        for _ in 0..300_000 {
            let len = (next() % 301) as usize;
            let any_byte = next() % 8 == 0;
            let digits_only = next() % 4 == 0;
            let quiet_run = next() % 3 == 0; // long stretches of bytes that are never loud, then the rest
            let v: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    if any_byte && r % 5 == 0 {
                        (r >> 8) as u8
                    } else if digits_only {
                        b"0123456789 -x"[(r % 13) as usize]
                    } else {
                        alphabet[(r % alphabet.len() as u64) as usize]
                    }
                })
                .collect();
            let v: Vec<u8> = if quiet_run {
                let cut = (next() % (len as u64 + 1)) as usize;
                let filler = b"xxbcdfjlmnqvwz/.:,;!()[]{}"[(next() % 26) as usize];
                let mut q = vec![filler; 64 + (next() % 200) as usize];
                q.splice(cut.min(q.len())..cut.min(q.len()), v.iter().copied());
                q
            } else {
                v
            };
            let want = may_hold_bytewise(&v);
            assert_eq!(may_hold(&v), want, "{v:?}");
            flagged += want as u32;
            cases += 1;
        }
        assert!(flagged > 1000 && flagged < cases - 1000, "{flagged} of {cases}: both verdicts drawn often");
    }

    #[test]
    fn key_candidates_cover_keys_escapes_and_cut_strings() {
        let keys = |v: &str| -> Vec<String> {
            super::key_candidates(v.as_bytes(), usize::MAX).unwrap().iter().map(|&(a, b)| v[a..b].to_string()).collect()
        };
        // every quote may open a string: the escaped one before d too
        assert_eq!(keys(r#"{"a": 1, "b" :{"c\"d":[2]}, "e": "f"}"#), ["a", "b", r#"c\"d"#, "d", "e"]);
        assert_eq!(keys(r#"{"key": "pw", "value": {"stringValue": "x"}}"#), ["key", "pw", "value", "stringValue"]);
        // a backslash before a newline fails the string; a non-ASCII space before the colon is skipped
        assert_eq!(keys("{\"a\\\n\": 1, \"b\u{a0}\"\u{3000}: 2"), ["b\u{a0}"]);
        assert_eq!(keys(r#"{"cut": "x"#), ["cut"]);
        assert_eq!(keys(r#"no quote"#), Vec::<String>::new());
        assert_eq!(super::key_candidates(r#"{"a": 1}"#.as_bytes(), 0), None);
    }

    #[test]
    fn framed_keys_follow_their_length_byte() {
        let keys = |v: &[u8]| -> Vec<Vec<u8>> {
            let (mut seen, mut out) = (std::collections::HashSet::new(), Vec::new());
            assert!(super::framed_keys(v, usize::MAX, &mut seen, &mut out));
            out.iter().map(|k| k.to_vec()).collect()
        };
        // Avro: zigzag 10 frames the 5-byte key "token"; protobuf: 0a 05 "token" 12 ..
        assert!(keys(b"\x00\x0atoken\x02ab").contains(&b"token".to_vec()));
        assert!(keys(b"\x0a\x05token\x12\x04").contains(&b"token".to_vec()));
        // a key must end before the payload does, stay in its run and hold key bytes only
        assert!(!keys(b"\x05token").contains(&b"token".to_vec()));
        assert!(!keys(b"\x05to ke\x00").iter().any(|k| k.starts_with(b"to")));
        let (mut seen, mut out) = (std::collections::HashSet::new(), Vec::new());
        assert!(!super::framed_keys(&[b'y'; 1000], 4000, &mut seen, &mut out)); // 121-byte keys everywhere
    }

    #[test]
    fn flags_what_the_hint_regex_matches() {
        for v in ["a@b.c", "x%40y", "Bearer abc", "BEARER", "eyJhbGci", "api_KEY=1", "Secret", "tokens", "PASSWORD",
                  "sk_live", "AKIA1234", "ghp_abc", "GHS_x", "xoxb-1", "AIzaSy", "4111 1111 1111 1111", "4111-1111-1111-1",
                  "1234567890123", "caf\u{e9}", "\u{212a}ey"] {
            assert!(may_hold(v.as_bytes()), "{v}");
        }
    }

    #[test]
    fn passes_what_it_cannot_match() {
        for v in ["", "/pricing", "b64df6cc0982d37bb6c1db345e7a208c", "123456789012", "1234 5678  9012 3", "12--345678901234",
                  "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0", "gh_x", "ghx_", "s-0-6-8046f8dc"] {
            assert!(!may_hold(v.as_bytes()), "{v}");
        }
    }
}
