"""The one hash every sampling decision in obsflow uses, so that workers, engines, the
head sampler, the tail sampler's probabilistic policy and log sampling all agree.

**The hash** (as the OpenTelemetry Collector's tail_sampling ``probabilistic`` policy):
64-bit FNV-1a over the UTF-8 bytes of the salt followed by the 16 raw bytes of the trace
id (the 32 hex characters decoded). Offset basis ``0xcbf29ce484222325``, prime
``0x100000001b3``; default salt ``"default-hash-seed"``. A trace is kept at ``p`` percent
when ``hash <= floor((2**64 - 1) * p / 100)`` (the threshold computed exactly). Trace ids
that are not 32 hex characters are hashed as their UTF-8 bytes instead.

Everything is vectorized over numpy ``uint64`` (multiplication wraps modulo 2**64)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pyarrow as pa

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
DEFAULT_SALT = "default-hash-seed"
MAX_U64 = (1 << 64) - 1

_HEX = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i


def salt_state(salt: str) -> int:
    """FNV-1a state after the salt's bytes (``""`` means the collector's default salt)."""
    h = FNV_OFFSET
    for b in (salt or DEFAULT_SALT).encode():
        h = ((h ^ b) * FNV_PRIME) & MAX_U64
    return h


def threshold(percentage: float) -> int:
    """Largest hash kept at ``percentage`` percent (as the collector's calculateThreshold)."""
    ratio = percentage / 100  # float64 division, as Go does
    return min(MAX_U64, int(Fraction(ratio) * MAX_U64))


def _fnv_rows(h: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Continue FNV-1a states ``h`` over the columns of the uint8 matrix ``rows``."""
    prime = np.uint64(FNV_PRIME)
    with np.errstate(over="ignore"):
        for j in range(rows.shape[1]):
            h ^= rows[:, j].astype(np.uint64)
            h *= prime
    return h


def _string_parts(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int64, data uint8) of a string array (nulls read as empty strings)."""
    arr = arr.cast(pa.large_string()) if not pa.types.is_large_string(arr.type) else arr
    if arr.null_count:
        arr = arr.fill_null("")
    bufs = arr.buffers()
    off = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return off, data


def hash_strings(arr, salt: str = "", max_bytes: int = 256) -> np.ndarray:
    """FNV-1a of salt + the first ``max_bytes`` UTF-8 bytes of each string (nulls as "")."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    elif not isinstance(arr, pa.Array):
        arr = pa.array(list(arr), pa.string())
    n = len(arr)
    h = np.full(n, salt_state(salt), dtype=np.uint64)
    if n == 0:
        return h
    off, data = _string_parts(arr)
    start = off[:-1]
    length = np.minimum(off[1:] - start, max_bytes)
    prime = np.uint64(FNV_PRIME)
    idx = np.arange(n)
    with np.errstate(over="ignore"):
        for j in range(int(length.max()) if n else 0):
            live = idx[length > j] if j else idx[length > 0]
            if not len(live):
                break
            hv = h[live] ^ data[start[live] + j].astype(np.uint64)
            h[live] = hv * prime
    return h


def hash_trace_ids(ids, salt: str = "") -> np.ndarray:
    """The sampling hash of each trace id (hex strings; see the module docstring)."""
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    elif not isinstance(ids, pa.Array):
        ids = pa.array(list(ids), pa.string())
    n = len(ids)
    if n == 0:
        return np.zeros(0, np.uint64)
    if ids.null_count:
        ids = ids.fill_null("")
    off, data = _string_parts(ids)
    lengths = np.diff(off)
    out = np.empty(n, dtype=np.uint64)
    ok = lengths == 32
    if ok.any():
        rows_idx = np.flatnonzero(ok)
        mat = data[off[rows_idx][:, None] + np.arange(32)]
        nib = _HEX[mat]
        good = (nib != 255).all(axis=1)
        raw = (nib[:, 0::2] << 4) | nib[:, 1::2]
        h = np.full(len(rows_idx), salt_state(salt), dtype=np.uint64)
        h = _fnv_rows(h, raw)
        out[rows_idx] = h
        ok[rows_idx[~good]] = False
    if not ok.all():
        bad = np.flatnonzero(~ok)
        out[bad] = hash_strings(ids.take(pa.array(bad)), salt, max_bytes=1 << 16)
    return out


def keep_mask(ids, percentage: float, salt: str = "") -> np.ndarray:
    """True where a trace id is kept at ``percentage`` percent."""
    return hash_trace_ids(ids, salt) <= np.uint64(threshold(percentage))


def fnv1a64(data: bytes, salt: str = "") -> int:
    """Scalar reference implementation (for tests and documentation)."""
    h = salt_state(salt)
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & MAX_U64
    return h


__all__ = ["DEFAULT_SALT", "fnv1a64", "hash_strings", "hash_trace_ids", "keep_mask", "salt_state", "threshold"]
