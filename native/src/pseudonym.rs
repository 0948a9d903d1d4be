//! Keyed pseudonyms for the scrubber: HMAC-SHA256 (RFC 2104, FIPS 180-4) of each value of
//! an Arrow string column under one key, as lower-case hex cut to 32 characters — the value
//! ``transforms.scrub.Scrubber.pseudonymize`` computes with Python's ``hmac`` (the parity
//! test compares them). The key's inner and outer states are computed once per call.

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::py::Buf;

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01,
    0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc,
    0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08,
    0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];
const H0: [u32; 8] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

fn compress(state: &mut [u32; 8], block: &[u8]) {
    let mut w = [0u32; 64];
    for (i, c) in block.chunks_exact(4).enumerate().take(16) {
        w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
    }
    for i in 16..64 {
        let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
        let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
    }
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
    for i in 0..64 {
        let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
        let ch = (e & f) ^ (!e & g);
        let t1 = h.wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w[i]);
        let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
        let maj = (a & b) ^ (a & c) ^ (b & c);
        let t2 = s0.wrapping_add(maj);
        h = g;
        g = f;
        f = e;
        e = d.wrapping_add(t1);
        d = c;
        c = b;
        b = a;
        a = t1.wrapping_add(t2);
    }
    for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
        *s = s.wrapping_add(v);
    }
}

/// SHA-256 of ``prefix_blocks`` (already compressed into ``state``, ``done`` bytes) then ``msg``.
fn finish(mut state: [u32; 8], done: u64, msg: &[u8]) -> [u8; 32] {
    let mut chunks = msg.chunks_exact(64);
    for block in &mut chunks {
        compress(&mut state, block);
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 128];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let n = if rest.len() + 9 <= 64 { 64 } else { 128 };
    let bits = (done + msg.len() as u64) * 8;
    tail[n - 8..n].copy_from_slice(&bits.to_be_bytes());
    for block in tail[..n].chunks_exact(64) {
        compress(&mut state, block);
    }
    let mut out = [0u8; 32];
    for (o, s) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&s.to_be_bytes());
    }
    out
}

/// SHA-256 of ``data``.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    finish(H0, 0, data)
}

/// HMAC-SHA256 under one key, its padded-key states computed once.
pub struct Hmac {
    inner: [u32; 8],
    outer: [u32; 8],
}

impl Hmac {
    pub fn new(key: &[u8]) -> Self {
        let mut k = [0u8; 64];
        if key.len() > 64 {
            k[..32].copy_from_slice(&sha256(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let (mut inner, mut outer) = (H0, H0);
        compress(&mut inner, &k.map(|b| b ^ 0x36));
        compress(&mut outer, &k.map(|b| b ^ 0x5c));
        Hmac { inner, outer }
    }

    pub fn mac(&self, msg: &[u8]) -> [u8; 32] {
        let inner = finish(self.inner, 64, msg);
        finish(self.outer, 64, &inner)
    }
}

/// Per slot of a string column (``offsets``/``data`` its Arrow buffers, ``offset``/``length``
/// its slice): the first 32 hex characters (lower case) of HMAC-SHA256(``key``, value), all
/// slots one after another (32 bytes each; a null slot's are those of its empty bytes: the
/// caller keeps the column's validity).
#[pyfunction]
pub fn pseudonyms(key: &[u8], offsets: PyBuffer<i8>, data: PyBuffer<i8>, offset: usize, length: usize) -> PyResult<Buf> {
    let offs = bytes_of(&offsets)?;
    let bytes = bytes_of(&data)?;
    if offs.len() < (offset + length + 1) * 4 {
        return Err(PyValueError::new_err("pseudonyms: the offsets buffer is shorter than the array"));
    }
    let at = |i: usize| i32::from_le_bytes([offs[4 * i], offs[4 * i + 1], offs[4 * i + 2], offs[4 * i + 3]]);
    let h = Hmac::new(key);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(length * 32);
    for i in offset..offset + length {
        let (s, e) = (at(i), at(i + 1));
        if s < 0 || e < s || e as usize > bytes.len() {
            return Err(PyValueError::new_err("pseudonyms: offsets out of the data buffer"));
        }
        for b in &h.mac(&bytes[s as usize..e as usize])[..16] {
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 15) as usize]);
        }
    }
    Ok(Buf { data: out })
}

fn bytes_of(b: &PyBuffer<i8>) -> PyResult<&[u8]> {
    if !b.is_c_contiguous() {
        return Err(PyValueError::new_err("pseudonyms: a buffer is not contiguous"));
    }
    // SAFETY: the buffer is held (``b``) for the borrow's lifetime and is contiguous bytes
    Ok(unsafe { std::slice::from_raw_parts(b.buf_ptr() as *const u8, b.len_bytes()) })
}

#[cfg(test)]
mod tests {
    use super::{sha256, Hmac};

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn sha256_vectors() {
        assert_eq!(hex(&sha256(b"")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(hex(&sha256(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(hex(&sha256(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
                   "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    }

    #[test]
    fn hmac_rfc4231_case_2() {
        assert_eq!(hex(&Hmac::new(b"Jefe").mac(b"what do ya want for nothing?")),
                   "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
