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

/// The digests of a batch of ids, two words each, in the order given (`[hi0, lo0, hi1, ...]`):
/// [`blake2b128`] of each. On a CPU with AVX2, ids of at most one block (128 bytes) are
/// hashed four at a time (the same words; [`blake2b128`] stays the reference).
pub fn digests<'a>(ids: impl IntoIterator<Item = &'a [u8]>) -> Vec<u64> {
    let ids: Vec<&[u8]> = ids.into_iter().collect();
    let mut out = vec![0u64; 2 * ids.len()];
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked just above)
        unsafe { x4::digests(&ids, &mut out) };
        return out;
    }
    for (k, id) in ids.iter().enumerate() {
        out[2 * k..2 * k + 2].copy_from_slice(&blake2b128(id));
    }
    out
}

/// BLAKE2b-128 of four one-block messages at once, one message a 64-bit lane of AVX2 registers.
#[cfg(target_arch = "x86_64")]
mod x4 {
    use super::{blake2b128, IV, SIGMA};
    use std::arch::x86_64::*;

    const ROT24: [i8; 32] =
        [3, 4, 5, 6, 7, 0, 1, 2, 11, 12, 13, 14, 15, 8, 9, 10, 3, 4, 5, 6, 7, 0, 1, 2, 11, 12, 13, 14, 15, 8, 9, 10];
    const ROT16: [i8; 32] =
        [2, 3, 4, 5, 6, 7, 0, 1, 10, 11, 12, 13, 14, 15, 8, 9, 2, 3, 4, 5, 6, 7, 0, 1, 10, 11, 12, 13, 14, 15, 8, 9];

    /// `out[2k..2k+2]` = [`blake2b128`]`(ids[k])` for every `k`: messages of at most 128
    /// bytes four at a time, the others (and the last few) one at a time.
    #[target_feature(enable = "avx2")]
    pub unsafe fn digests(ids: &[&[u8]], out: &mut [u64]) {
        let mut lanes = [0usize; 4];
        let mut full = 0;
        for (k, id) in ids.iter().enumerate() {
            if id.len() > 128 {
                out[2 * k..2 * k + 2].copy_from_slice(&blake2b128(id));
                continue;
            }
            lanes[full] = k;
            full += 1;
            if full == 4 {
                let w = hash4([ids[lanes[0]], ids[lanes[1]], ids[lanes[2]], ids[lanes[3]]]);
                for (j, &at) in lanes.iter().enumerate() {
                    out[2 * at..2 * at + 2].copy_from_slice(&w[j]);
                }
                full = 0;
            }
        }
        for &at in &lanes[..full] {
            out[2 * at..2 * at + 2].copy_from_slice(&blake2b128(ids[at]));
        }
    }

    /// The digests of four messages of at most 128 bytes each (one final block each).
    #[target_feature(enable = "avx2")]
    unsafe fn hash4(msgs: [&[u8]; 4]) -> [[u64; 2]; 4] {
        let mut blocks = [[0u64; 16]; 4];
        for (b, m) in blocks.iter_mut().zip(msgs) {
            let mut bytes = [0u8; 128];
            bytes[..m.len()].copy_from_slice(m);
            for (i, w) in b.iter_mut().enumerate() {
                *w = u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().unwrap());
            }
        }
        let word = |i: usize| {
            _mm256_set_epi64x(blocks[3][i] as i64, blocks[2][i] as i64, blocks[1][i] as i64, blocks[0][i] as i64)
        };
        let m: [__m256i; 16] = std::array::from_fn(word);
        let splat = |x: u64| _mm256_set1_epi64x(x as i64);
        let h0 = IV[0] ^ 0x0101_0000 ^ 16;
        let mut v: [__m256i; 16] = [
            splat(h0),
            splat(IV[1]),
            splat(IV[2]),
            splat(IV[3]),
            splat(IV[4]),
            splat(IV[5]),
            splat(IV[6]),
            splat(IV[7]),
            splat(IV[0]),
            splat(IV[1]),
            splat(IV[2]),
            splat(IV[3]),
            _mm256_set_epi64x(
                (IV[4] ^ msgs[3].len() as u64) as i64,
                (IV[4] ^ msgs[2].len() as u64) as i64,
                (IV[4] ^ msgs[1].len() as u64) as i64,
                (IV[4] ^ msgs[0].len() as u64) as i64,
            ),
            splat(IV[5]),
            splat(!IV[6]),
            splat(IV[7]),
        ];
        let r24 = _mm256_loadu_si256(ROT24.as_ptr() as *const __m256i);
        let r16 = _mm256_loadu_si256(ROT16.as_ptr() as *const __m256i);
        macro_rules! g {
            ($a:literal, $b:literal, $c:literal, $d:literal, $x:expr, $y:expr) => {
                v[$a] = _mm256_add_epi64(_mm256_add_epi64(v[$a], v[$b]), $x);
                v[$d] = _mm256_shuffle_epi32(_mm256_xor_si256(v[$d], v[$a]), 0b10_11_00_01);
                v[$c] = _mm256_add_epi64(v[$c], v[$d]);
                v[$b] = _mm256_shuffle_epi8(_mm256_xor_si256(v[$b], v[$c]), r24);
                v[$a] = _mm256_add_epi64(_mm256_add_epi64(v[$a], v[$b]), $y);
                v[$d] = _mm256_shuffle_epi8(_mm256_xor_si256(v[$d], v[$a]), r16);
                v[$c] = _mm256_add_epi64(v[$c], v[$d]);
                let t = _mm256_xor_si256(v[$b], v[$c]);
                v[$b] = _mm256_or_si256(_mm256_srli_epi64(t, 63), _mm256_add_epi64(t, t));
            };
        }
        macro_rules! round {
            ($($r:literal)*) => {$(
                g!(0, 4, 8, 12, m[SIGMA[$r][0]], m[SIGMA[$r][1]]);
                g!(1, 5, 9, 13, m[SIGMA[$r][2]], m[SIGMA[$r][3]]);
                g!(2, 6, 10, 14, m[SIGMA[$r][4]], m[SIGMA[$r][5]]);
                g!(3, 7, 11, 15, m[SIGMA[$r][6]], m[SIGMA[$r][7]]);
                g!(0, 5, 10, 15, m[SIGMA[$r][8]], m[SIGMA[$r][9]]);
                g!(1, 6, 11, 12, m[SIGMA[$r][10]], m[SIGMA[$r][11]]);
                g!(2, 7, 8, 13, m[SIGMA[$r][12]], m[SIGMA[$r][13]]);
                g!(3, 4, 9, 14, m[SIGMA[$r][14]], m[SIGMA[$r][15]]);
            )*};
        }
        round!(0 1 2 3 4 5 6 7 8 9 10 11);
        // h[i] ^= v[i] ^ v[i + 8], only the two words a 16-byte digest keeps
        let w0 = _mm256_xor_si256(splat(h0), _mm256_xor_si256(v[0], v[8]));
        let w1 = _mm256_xor_si256(splat(IV[1]), _mm256_xor_si256(v[1], v[9]));
        let (mut a, mut b) = ([0u64; 4], [0u64; 4]);
        _mm256_storeu_si256(a.as_mut_ptr() as *mut __m256i, w0);
        _mm256_storeu_si256(b.as_mut_ptr() as *mut __m256i, w1);
        [[a[0], b[0]], [a[1], b[1]], [a[2], b[2]], [a[3], b[3]]]
    }
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
        let t = std::time::Instant::now();
        let one: Vec<u64> = ids.iter().flat_map(|s| blake2b128(s.as_bytes())).collect();
        eprintln!("{:.1} ns an id one at a time ({})", t.elapsed().as_nanos() as f64 / ids.len() as f64, one[0]);
        assert_eq!(w, one);
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

    #[test]
    fn batched_digests_equal_one_at_a_time() {
        // every length 0..=300 (one block, one over, several), in batches of every size
        // 0..=9 (four lanes, a remainder), long ones between the short ones
        let msgs: Vec<Vec<u8>> = (0..=300usize).map(|n| (0..n).map(|i| (i * 7 + n) as u8).collect()).collect();
        for size in 0..=9 {
            for start in 0..msgs.len() {
                let batch: Vec<&[u8]> = msgs[start..(start + size).min(msgs.len())].iter().map(|m| &m[..]).collect();
                let want: Vec<u64> = batch.iter().flat_map(|m| blake2b128(m)).collect();
                assert_eq!(digests(batch.iter().copied()), want, "size {size} start {start}");
            }
        }
    }
}
