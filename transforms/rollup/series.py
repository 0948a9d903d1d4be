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
                idx = pc.sort_indices(
                    pa.table({"p": pa.array(parent), "k": keys}), sort_keys=[("p", "ascending"), ("k", "ascending")]
                )
                pairs = pairs.take(idx)
        lst = pa.ListArray.from_arrays(pa.array(offs, pa.int32()), pairs)
        labstr = pc.fill_null(pc.binary_join(lst, "\x1e"), "")
    else:
        labstr = pa.array([""] * n, pa.string())
    return pc.binary_join_element_wise(kind, name, labstr, "\x00")


def parse_keys(keys: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array]:
    """Kind, name and labels (map, sorted by key) of canonical keys, columnar."""
    parts = pc.split_pattern(keys, "\x00", max_splits=2)
    kind, name, lab = (pc.list_element(parts, i) for i in range(3))
    pairs = pc.split_pattern(lab, "\x1e")
    lengths = np.where(
        pc.equal(lab, "").to_numpy(zero_copy_only=False), 0, pc.list_value_length(pairs).to_numpy(zero_copy_only=False)
    )
    offsets = np.zeros(len(keys) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = pc.list_flatten(pairs)
    flat = flat.filter(pc.not_equal(flat, ""))
    kv = pc.split_pattern(flat, "\x1f", max_splits=1)
    labels = pa.MapArray.from_arrays(pa.array(offsets), pc.list_element(kv, 0), pc.list_element(kv, 1))
    return kind, name, labels


class SeriesRegistry:
    """Maps canonical keys to series ids and folds series beyond the per-metric limit.

    Output series' keys, kinds, names and labels are kept as Arrow arrays (``out_*``), so
    rows are built with ``take`` rather than per-row Python."""

    def __init__(self, max_series_per_metric: int):
        self.limit = max_series_per_metric
        self.oid_of_sid = np.zeros(0, np.int64)
        self.known: pa.Array = pa.array([], pa.string())  # canonical key per sid
        self.out_key: pa.Array = pa.array([], pa.string())  # canonical key per oid
        self.out_kind: pa.Array = pa.array([], pa.string())
        self.out_name: pa.Array = pa.array([], pa.string())
        self.out_labels: pa.Array = pa.array([], pa.map_(pa.string(), pa.string()))
        self.per_metric: dict[str, int] = {}
        self.overflow_oid: dict[str, int] = {}
        self.overflowed: dict[str, int] = {}  # metric name -> series folded into its overflow series

    def _register(self, new_keys: list[str]) -> None:
        n_out = len(self.out_key)
        oids: list[int] = []
        out_new: list[str] = []
        limit, per_metric = self.limit, self.per_metric
        for key in new_keys:
            metric = key[: key.index("\x00", key.index("\x00") + 1)]
            n = per_metric.get(metric, 0)
            if n < limit:
                per_metric[metric] = n + 1
                oids.append(n_out + len(out_new))
                out_new.append(key)
            else:
                oid = self.overflow_oid.get(metric)
                if oid is None:
                    oid = self.overflow_oid[metric] = n_out + len(out_new)
                    out_new.append(metric + "\x00__overflow__\x1ftrue")
                oids.append(oid)
                name = metric.split("\x00", 1)[1]
                self.overflowed[name] = self.overflowed.get(name, 0) + 1
        self.oid_of_sid = np.concatenate([self.oid_of_sid, np.asarray(oids, np.int64)])
        self.known = pa.concat_arrays([self.known, pa.array(new_keys, pa.string())])
        if out_new:
            keys = pa.array(out_new, pa.string())
            kind, name, labels = parse_keys(keys)
            self.out_key = pa.concat_arrays([self.out_key, keys])
            self.out_kind = pa.concat_arrays([self.out_kind, kind])
            self.out_name = pa.concat_arrays([self.out_name, name])
            self.out_labels = pa.concat_arrays([self.out_labels, labels])

    def ids(self, keys: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """``(sid, oid)`` arrays for a column of canonical keys."""
        idx = pc.index_in(keys, value_set=self.known)
        if idx.null_count:
            miss = pc.is_null(idx)
            new = pc.unique(keys.filter(miss))
            base = len(self.known)
            self._register(new.to_pylist())
            sub = pc.add(pc.index_in(keys.filter(miss), value_set=new), base)
            idx = pc.replace_with_mask(idx, miss, sub.cast(idx.type))
        sid = idx.to_numpy(zero_copy_only=False).astype(np.int64)
        return sid, self.oid_of_sid[sid]

    @property
    def n_series(self) -> int:
        return len(self.oid_of_sid)
