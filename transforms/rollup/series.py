"""Series identity and the per-metric cardinality limit.

Consumes a batch's ``kind``, ``name`` and ``labels`` (map<string,string>) columns; emits
two int64 id arrays: ``sid`` (the series as sent, used for counter continuity) and ``oid``
(the output series: ``sid``'s own, or the metric's overflow series
``{"__overflow__": "true"}`` once the metric already has ``max_series_per_metric`` output
series). The canonical key is ``kind \\0 name \\0 k1 \\x1f v1 \\x1e k2 \\x1f v2 ...`` with
label keys sorted, built columnar; only keys not seen before reach Python."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

OVERFLOW_LABELS = (("__overflow__", "true"),)
KINDS = ("counter", "gauge", "histogram", "summary")


def canonical_keys(kind: pa.Array, name: pa.Array, labels: pa.Array) -> pa.Array:
    """One canonical series key string per row (label keys sorted)."""
    n = len(name)
    if isinstance(labels, pa.ChunkedArray):
        labels = labels.combine_chunks()
    if pa.types.is_map(labels.type):
        offs = labels.offsets.to_numpy()
        keys, items = labels.keys, labels.items
        if len(offs) and (offs[0] != 0 or offs[-1] != len(keys)):
            labels = labels.take(pa.array(np.arange(n)))
            offs, keys, items = labels.offsets.to_numpy(), labels.keys, labels.items
        pairs = pc.binary_join_element_wise(keys, pc.fill_null(items, ""), "\x1f")
        if len(keys) > 1:
            parent = np.repeat(np.arange(n), np.diff(offs))
            same = parent[1:] == parent[:-1]
            unsorted = same & ~pc.greater(keys[1:], keys[:-1]).to_numpy(zero_copy_only=False)
            if unsorted.any():
                idx = pc.sort_indices(pa.table({"p": pa.array(parent), "k": keys}), sort_keys=[("p", "ascending"), ("k", "ascending")])
                pairs = pairs.take(idx)
        lst = pa.ListArray.from_arrays(pa.array(offs, pa.int32()), pairs)
        labstr = pc.fill_null(pc.binary_join(lst, "\x1e"), "")
    else:
        labstr = pa.array([""] * n, pa.string())
    return pc.binary_join_element_wise(kind, name, labstr, "\x00")


def parse_key(key: str) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    kind, name, lab = key.split("\x00", 2)
    labels = tuple(tuple(p.split("\x1f", 1)) for p in lab.split("\x1e")) if lab else ()
    return kind, name, labels


class SeriesRegistry:
    """Maps canonical keys to series ids and folds series beyond the per-metric limit."""

    def __init__(self, max_series_per_metric: int):
        self.limit = max_series_per_metric
        self.sid_of: dict[str, int] = {}
        self.oid_of_sid: list[int] = []
        # output series: key, kind, name, labels
        self.out_key: list[str] = []
        self.out_kind: list[str] = []
        self.out_name: list[str] = []
        self.out_labels: list[tuple] = []
        self.per_metric: dict[tuple[str, str], int] = {}
        self.overflow_oid: dict[tuple[str, str], int] = {}
        self.overflowed: dict[str, int] = {}  # metric name -> series folded into overflow
        self._oid_arr = np.zeros(0, np.int64)

    def _new_out(self, key, kind, name, labels) -> int:
        self.out_key.append(key)
        self.out_kind.append(kind)
        self.out_name.append(name)
        self.out_labels.append(labels)
        return len(self.out_key) - 1

    def _register(self, key: str) -> int:
        kind, name, labels = parse_key(key)
        metric = (kind, name)
        n = self.per_metric.get(metric, 0)
        if n < self.limit:
            self.per_metric[metric] = n + 1
            oid = self._new_out(key, kind, name, labels)
        else:
            oid = self.overflow_oid.get(metric)
            if oid is None:
                okey = f"{kind}\x00{name}\x00__overflow__\x1ftrue"
                oid = self.overflow_oid[metric] = self._new_out(okey, kind, name, OVERFLOW_LABELS)
            self.overflowed[name] = self.overflowed.get(name, 0) + 1
        sid = len(self.oid_of_sid)
        self.oid_of_sid.append(oid)
        self.sid_of[key] = sid
        return sid

    def ids(self, keys: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """``(sid, oid)`` arrays for a column of canonical keys."""
        enc = pc.dictionary_encode(keys)
        if isinstance(enc, pa.ChunkedArray):
            enc = enc.combine_chunks()
        get = self.sid_of.get
        uniq = enc.dictionary.to_pylist()
        sids = [get(k) for k in uniq]
        if None in sids:
            sids = [s if s is not None else self._register(k) for s, k in zip(sids, uniq)]
            self._oid_arr = np.asarray(self.oid_of_sid, np.int64)
        sid = np.asarray(sids, np.int64)[enc.indices.to_numpy()]
        return sid, self._oid_arr[sid]

    @property
    def n_series(self) -> int:
        return len(self.oid_of_sid)

    def __getstate__(self):
        d = dict(self.__dict__)
        d.pop("_oid_arr")
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self._oid_arr = np.asarray(self.oid_of_sid, np.int64)
