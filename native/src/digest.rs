//! BLAKE2b (RFC 7693) with a 16-byte digest, no key: byte for byte Python's
//! `hashlib.blake2b(data, digest_size=16)`, the digest the event dedupe holds its ids as
//! (transforms/dedupe_store.py). Pure Rust and no crate dependency (the algorithm is short,
//! and a store seeded by one build and read by another must agree on every digest).

const IV: [u64; 8] = [
    0x6a09e667f3bcc908,
    0xbb67ae8584caa73b,
    0x3c6ef372fe94f82b,
    0xa54ff53a5f1d36f1,
    0x510e527fade682d1,
    0x9b05688c2b3e6c1f,
    0x1f83d9abfb41bd6b,
    0x5be0cd19137e2179,
];

const SIGMA: [[usize; 16]; 12] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
    [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
    [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
    [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
    [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
    [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
    [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
    [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
    [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
];

#[inline(always)]
fn g(v: &mut [u64; 16], a: usize, b: usize, c: usize, d: usize, x: u64, y: u64) {
    v[a] = v[a].wrapping_add(v[b]).wrapping_add(x);
    v[d] = (v[d] ^ v[a]).rotate_right(32);
    v[c] = v[c].wrapping_add(v[d]);
    v[b] = (v[b] ^ v[c]).rotate_right(24);
    v[a] = v[a].wrapping_add(v[b]).wrapping_add(y);
    v[d] = (v[d] ^ v[a]).rotate_right(16);
    v[c] = v[c].wrapping_add(v[d]);
    v[b] = (v[b] ^ v[c]).rotate_right(63);
}

/// The compression function F on one 128-byte block, `t`: bytes hashed so far (this
/// block's included), `last`: the final block.
fn compress(h: &mut [u64; 8], block: &[u8; 128], t: u128, last: bool) {
    let mut m = [0u64; 16];
    for (i, w) in m.iter_mut().enumerate() {
        *w = u64::from_le_bytes(block[8 * i..8 * i + 8].try_into().unwrap());
    }
    let mut v = [0u64; 16];
    v[..8].copy_from_slice(h);
    v[8..].copy_from_slice(&IV);
    v[12] ^= t as u64;
    v[13] ^= (t >> 64) as u64;
    if last {
        v[14] = !v[14];
    }
    // the twelve rounds unrolled: every message index a constant (no lookups, no bounds checks)
    macro_rules! round {
        ($($r:literal)*) => {$(
            g(&mut v, 0, 4, 8, 12, m[SIGMA[$r][0]], m[SIGMA[$r][1]]);
            g(&mut v, 1, 5, 9, 13, m[SIGMA[$r][2]], m[SIGMA[$r][3]]);
            g(&mut v, 2, 6, 10, 14, m[SIGMA[$r][4]], m[SIGMA[$r][5]]);
            g(&mut v, 3, 7, 11, 15, m[SIGMA[$r][6]], m[SIGMA[$r][7]]);
            g(&mut v, 0, 5, 10, 15, m[SIGMA[$r][8]], m[SIGMA[$r][9]]);
            g(&mut v, 1, 6, 11, 12, m[SIGMA[$r][10]], m[SIGMA[$r][11]]);
            g(&mut v, 2, 7, 8, 13, m[SIGMA[$r][12]], m[SIGMA[$r][13]]);
            g(&mut v, 3, 4, 9, 14, m[SIGMA[$r][14]], m[SIGMA[$r][15]]);
        )*};
    }
    round!(0 1 2 3 4 5 6 7 8 9 10 11);
    for i in 0..8 {
        h[i] ^= v[i] ^ v[i + 8];
    }
}

/// BLAKE2b-128 of `data` as its two little-endian words: the digest's bytes 0..8 and 8..16
/// (what `numpy.frombuffer(hashlib.blake2b(data, digest_size=16).digest(), "<u8")` gives).
pub fn blake2b128(data: &[u8]) -> [u64; 2] {
    let mut h = IV;
    h[0] ^= 0x0101_0000 ^ 16; // depth 1, fanout 1, no key, 16-byte digest
    let n = data.len();
    let mut at = 0;
    while n - at > 128 {
        compress(&mut h, data[at..at + 128].try_into().unwrap(), (at + 128) as u128, false);
        at += 128;
    }
    let mut block = [0u8; 128];
    block[..n - at].copy_from_slice(&data[at..]);
    compress(&mut h, &block, n as u128, true);
    [h[0], h[1]]
}

/// The digests of a batch of ids, two words each, in the order given (`[hi0, lo0, hi1, ...]`).
pub fn digests<'a>(ids: impl IntoIterator<Item = &'a [u8]>) -> Vec<u64> {
    let mut out = Vec::new();
    for id in ids {
        out.extend_from_slice(&blake2b128(id));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(w: [u64; 2]) -> String {
        w.iter().flat_map(|x| x.to_le_bytes()).map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    #[ignore]
    fn timing() {
        // cargo test --release --lib digest::tests::timing -- --ignored --nocapture
        let ids: Vec<String> = (0..200_000).map(|k| format!("{k:08x}-e29b-41d4-a716-446655440000")).collect();
        let t = std::time::Instant::now();
        let w = digests(ids.iter().map(|s| s.as_bytes()));
        eprintln!("{:.1} ns an id ({})", t.elapsed().as_nanos() as f64 / ids.len() as f64, w[0]);
    }

    #[test]
    fn known_digests() {
        // hashlib.blake2b(x, digest_size=16).hexdigest()
        assert_eq!(hex(blake2b128(b"")), "cae66941d9efbd404e4d88758ea67670");
        assert_eq!(hex(blake2b128(b"abc")), "cf4ab791c62b8d2b2109c90275287816");
        // block boundaries: exactly one block, one byte over, two blocks, several
        assert_eq!(hex(blake2b128(&[b'a'; 128])), "1271d28e731afb57bdfba6bdaf3501be");
        assert_eq!(hex(blake2b128(&[b'a'; 129])), "68b7bafbad5055c4ebe6eb170a0f8524");
        assert_eq!(hex(blake2b128(&[b'a'; 256])), "2dbe331c95d600bb74dcd669f0618bd7");
        assert_eq!(hex(blake2b128(&[b'x'; 1000])), "c9b2bd4ff487864c29fb41fab3e8187e");
        assert_eq!(digests([&b""[..], b"abc"]).len(), 4);
    }
}
