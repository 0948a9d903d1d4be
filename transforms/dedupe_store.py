"""The compact id store of the ``event_id`` dedupe (:mod:`transforms.dedupe`): the ids one
partition holds, as 128-bit digests in numpy arrays, in the order they were taken.

Each id is kept as its BLAKE2b-128 digest (two ``uint64``), with the record time of the
copy that counts as first, and a bit filter: about 26 bytes an id (a Python ``str`` in a
``dict`` and a ``deque`` cost about 185 with the string). Two different ids are confused only if their digests are
equal: for ``n`` ids held at once the probability that any two of them collide is at most
``n**2 / 2**129`` (3,000,000 ids: about 1.3e-26), and a collision can only make a record
look like a copy of an id held at the same time.

The ids live in *runs*: consecutive slices of the taken order (a run is one commit's
new ids, merged with its neighbour while the two are about the same size, up to
:data:`RUN_MAX` ids), each sorted by the digest's high word for a vectorised lookup of a
whole batch (a bit filter on the digest's top bits, then ``np.searchsorted``). Every id taken has a sequence number (its place in the
taken order); eviction moves the first held sequence number forward, exactly one id at a
time as the rule says, and frees a run once all its ids are evicted. An id taken again
(a copy beyond the window: a new first copy) leaves its earlier entry *dead*: still in the
taken order, no longer held."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

#: the most ids one run holds (a run is freed when all of its ids are evicted: at most
#: this many evicted ids are still in memory)
RUN_MAX = 1 << 18

_I32 = (1 << 31) - 1
_NO_DATA = pa.py_buffer(b"")  # the data buffer of an array of empty strings


DIGESTERS = ("native", "python")


def digester(choice: str | None = None) -> str:
    """Which code computes the digests: ``choice``, else ``$OBSFLOW_DECODER``, else
    ``native``; ``native`` only when the extension is installed and has ``id_digests``
    (an older build has not), else ``python``. Both give the same words for every id.
    ``ValueError`` names a value that is neither."""
    choice = choice or os.environ.get("OBSFLOW_DECODER") or "native"
    if choice not in DIGESTERS:
        raise ValueError(f"digester: expected one of {', '.join(DIGESTERS)}, got {choice!r}")
    return "native" if choice == "native" and _native() is not None else "python"


def _native():
    try:
        import obsflow_native
    except ImportError:
        return None
    return getattr(obsflow_native, "id_digests", None)


def _native_arrow():
    try:
        import obsflow_native
    except ImportError:
        return None
    return getattr(obsflow_native, "id_digests_arrow", None)


def array_digests(ids: pa.Array | pa.ChunkedArray, choice: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`digests` of the values of a ``string`` array without nulls, read from its
    buffers by the native extension (no Python ``str`` made), else from ``to_pylist()``.
    ``ValueError`` when the array holds a null."""
    if ids.null_count:
        raise ValueError("array_digests: the ids hold a null (drop them first)")
    native = _native_arrow() if digester(choice) == "native" else None
    if native is None or not pa.types.is_string(ids.type):
        return digests(ids.to_pylist(), choice)
    chunks = ids.chunks if isinstance(ids, pa.ChunkedArray) else [ids]
    parts = []
    for c in chunks:
        _validity, offsets, data = c.buffers()
        parts.append(
            np.frombuffer(native(offsets, data if data is not None else _NO_DATA, c.offset, len(c)), dtype="<u8")
        )
    words = (np.concatenate(parts) if parts else np.empty(0, dtype="<u8")).reshape(-1, 2)
    return np.ascontiguousarray(words[:, 0]), np.ascontiguousarray(words[:, 1])


def digests(ids: list[str], choice: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The BLAKE2b-128 digest of each id (UTF-8) as its high and low ``uint64`` words:
    ``hashlib.blake2b(id.encode(), digest_size=16)``'s bytes 0-7 and 8-15, little-endian,
    whichever :func:`digester` computes them (``UnicodeEncodeError`` for an id with a lone
    surrogate, either way)."""
    if digester(choice) == "native":
        buf: bytes | memoryview = memoryview(_native()(ids))
    else:
        blake = hashlib.blake2b
        buf = b"".join([blake(e.encode(), digest_size=16).digest() for e in ids])
    words = np.frombuffer(buf, dtype="<u8").reshape(-1, 2)
    return np.ascontiguousarray(words[:, 0]), np.ascontiguousarray(words[:, 1])


def _stable_order(hi: np.ndarray) -> np.ndarray:
    """``np.argsort(hi, kind="stable")``, by the faster unstable sort when no two values of
    ``hi`` are equal (then every sort is stable)."""
    order = np.argsort(hi)
    s = hi[order]
    return order if not (s[1:] == s[:-1]).any() else np.argsort(hi, kind="stable")


@dataclass
class _Run:
    """Ids ``base .. base + n - 1`` of the taken order: digests sorted by the high word
    (ties in taken order), ``pos`` their place in the run, ``ms`` the record times in
    taken order (``ms_base`` + an ``int32`` when the run's span fits, else ``int64``);
    ``filt``: one bit per value of the high word's top ``bits`` bits (8 to 16 of them an
    id), set where an id of the run has it: a digest whose bit is clear is not in the run
    (most of a batch's digests are not: they skip the binary search)."""

    base: int
    hi: np.ndarray
    lo: np.ndarray
    pos: np.ndarray
    ms: np.ndarray
    ms_base: int
    bits: int = 0
    filt: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.uint8))

    def __post_init__(self) -> None:
        self.bits = max(len(self.hi).bit_length() + 3, 3)
        slots = np.zeros(1 << self.bits, dtype=bool)
        slots[self.hi >> np.uint64(64 - self.bits)] = True
        self.filt = np.packbits(slots, bitorder="little")

    def maybe(self, hi: np.ndarray) -> np.ndarray:
        """False where ``hi`` is surely not a high word of the run."""
        top = hi >> np.uint64(64 - self.bits)
        return ((self.filt[top >> np.uint64(3)] >> (top & np.uint64(7)).astype(np.uint8)) & 1).astype(bool)

    @classmethod
    def build(cls, base: int, hi: np.ndarray, lo: np.ndarray, ms: np.ndarray, order: np.ndarray | None = None) -> _Run:
        """A run of ids taken in the order given (``ms``: their record times, ``int64``);
        ``order``, when given, must sort ``hi`` with ties in the order given (the caller's
        sort, not made again)."""
        if order is None:
            order = _stable_order(hi)
        lo_ms = int(ms.min()) if len(ms) else 0
        if len(ms) and int(ms.max()) - lo_ms <= _I32:
            packed, ms_base = (ms - lo_ms).astype(np.int32), lo_ms
        else:
            packed, ms_base = ms.astype(np.int64), 0
        return cls(base, hi[order], lo[order], order.astype(np.uint32), packed, ms_base)

    def __len__(self) -> int:
        return len(self.ms)

    def times(self) -> np.ndarray:
        """The record times in taken order (``int64``)."""
        return self.ms.astype(np.int64) + self.ms_base

    def merge(self, later: _Run) -> _Run:
        """This run and the one taken right after it, as one (a linear merge: the later run's
        digests go after this one's equal high words, so ties stay in taken order)."""
        n, m = len(self), len(later)
        at = np.searchsorted(self.hi, later.hi, side="right") + np.arange(m)
        mine = np.ones(n + m, dtype=bool)
        mine[at] = False
        hi = np.empty(n + m, dtype=np.uint64)
        lo = np.empty(n + m, dtype=np.uint64)
        pos = np.empty(n + m, dtype=np.uint32)
        hi[mine], hi[at] = self.hi, later.hi
        lo[mine], lo[at] = self.lo, later.lo
        pos[mine], pos[at] = self.pos, later.pos + np.uint32(n)
        times = np.concatenate([self.times(), later.times()])
        lo_ms = int(times.min())
        if int(times.max()) - lo_ms <= _I32:
            return _Run(self.base, hi, lo, pos, (times - lo_ms).astype(np.int32), lo_ms)
        return _Run(self.base, hi, lo, pos, times, 0)


@dataclass
class IdStore:
    """The ids one partition holds, in taken order: sequence numbers ``start .. end - 1``
    less the ``dead`` ones. Guarantees: :meth:`find` sees exactly the held ids;
    :meth:`evict_front` drops ids from the front of the taken order only."""

    runs: list[_Run] = field(default_factory=list)
    start: int = 0  # the first sequence number held (those below are evicted)
    end: int = 0  # the sequence number the next id taken gets
    dead: set[int] = field(default_factory=set)  # entries of ids taken again later

    def __len__(self) -> int:
        """Ids held."""
        return self.end - self.start - len(self.dead)

    def find(
        self, hi: np.ndarray, lo: np.ndarray, order: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each digest: held?, the record time of its first copy, its sequence number
        (both -1 where not held). ``order``, when given, must sort ``hi`` (the caller's
        sort, not made again)."""
        n = len(hi)
        seq = np.full(n, -1, dtype=np.int64)
        ms = np.full(n, -1, dtype=np.int64)
        if not n or self.start >= self.end:
            return np.zeros(n, dtype=bool), ms, seq
        if order is None:
            order = np.argsort(hi)  # sorted needles: each run is read front to back
        hi, lo = hi[order], lo[order]
        for run in self.runs:
            size = len(run)
            if run.base + size <= self.start:
                continue
            cand = np.flatnonzero(run.maybe(hi))
            if not len(cand):
                continue
            h, low = hi[cand], lo[cand]
            idx = np.minimum(np.searchsorted(run.hi, h), size - 1)
            eq = run.hi[idx] == h
            if not eq.any():
                continue
            nxt = np.minimum(idx + 1, size - 1)
            alone = (idx + 1 >= size) | (run.hi[nxt] != h)
            fast = np.flatnonzero(eq & alone & (run.lo[idx] == low))
            if len(fast):
                s = run.base + run.pos[idx[fast]].astype(np.int64)
                ok = self._held(s)
                fast, s = fast[ok], s[ok]
                seq[cand[fast]] = s
                ms[cand[fast]] = run.ms[run.pos[idx[fast]]].astype(np.int64) + run.ms_base
            for k in np.flatnonzero(eq & ~alone).tolist():  # digests sharing a high word: read them all
                j = int(idx[k])
                while j < size and run.hi[j] == h[k]:
                    s1 = run.base + int(run.pos[j])
                    if run.lo[j] == low[k] and self._held(np.array([s1]))[0]:
                        seq[cand[k]] = s1
                        ms[cand[k]] = int(run.ms[run.pos[j]]) + run.ms_base
                    j += 1
        seq[order], ms[order] = seq.copy(), ms.copy()
        return seq >= 0, ms, seq

    def _held(self, seq: np.ndarray) -> np.ndarray:
        ok = seq >= self.start
        if self.dead:
            ok &= ~np.isin(seq, np.fromiter(self.dead, dtype=np.int64, count=len(self.dead)))
        return ok

    def add(
        self, hi: np.ndarray, lo: np.ndarray, ms: np.ndarray, replaced: np.ndarray, order: np.ndarray | None = None
    ) -> None:
        """Take new ids (digests not held, or held at ``replaced``: those entries die), in
        order; ``order``, when given, sorts ``hi`` with ties in the order given."""
        if len(replaced):
            self.dead.update(replaced.tolist())
        if len(hi) > RUN_MAX:
            order = None
        for at in range(0, len(hi), RUN_MAX):  # a seed's many ids: runs of at most RUN_MAX
            part = slice(at, at + RUN_MAX)
            self.runs.append(_Run.build(self.end, hi[part], lo[part], ms[part], order))
            self.end += len(self.runs[-1])
        while len(self.runs) >= 2 and len(self.runs[-2]) <= 2 * len(self.runs[-1]):
            a, b = self.runs[-2], self.runs[-1]
            if len(a) + len(b) > RUN_MAX:
                break
            self.runs[-2:] = [a.merge(b)]

    def evict_front(self, horizon: int, max_ids: int) -> None:
        """Forget ids from the front of the taken order while the front one's record time
        is below ``horizon`` or more than ``max_ids`` are held (a dead entry at the front
        is passed over the same way, without counting as held)."""
        held = len(self)
        step = max(held - max_ids, 0) + 1024  # entries looked at a time: most commits stop in the first
        while self.runs and self.start < self.end:
            run = self.runs[0]
            i0 = self.start - run.base
            i1 = min(i0 + step, len(run))
            times = run.ms[i0:i1].astype(np.int64) + run.ms_base
            alive = np.ones(i1 - i0, dtype=np.int64)
            if self.dead:
                seqs = np.arange(self.start, self.start + (i1 - i0), dtype=np.int64)
                alive[np.isin(seqs, np.fromiter(self.dead, dtype=np.int64, count=len(self.dead)))] = 0
            before = held - (np.cumsum(alive) - alive)  # held just before each entry's turn
            go = (times < horizon) | (before > max_ids)
            stop = int(np.argmin(go)) if not go.all() else len(go)
            held -= int(alive[:stop].sum())
            self.start += stop
            if stop < len(go):
                break
            if i1 == len(run):
                self.runs.pop(0)
            step *= 2
        if self.dead:
            self.dead = {s for s in self.dead if s >= self.start}
        if not self.runs:
            self.start = self.end
