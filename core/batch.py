"""Batches that flow between transforms, and the rejects they collect.

A :class:`RawBatch` is what a source hands over: consecutive records of one topic
partition. Decoding turns it into a :class:`Batch`, an Arrow table with an ``_i`` column
(the record's index in the raw batch), so that any later step can reject a row and the
dead letter still carries the exact raw bytes and source offset.

A record that holds several items (an OTLP export request: spans, log records, data
points) is accepted per item: the table then also has an ``_item`` column (the item's
index in its record), a reject may name an item, and the batch can give an item's own
bytes for its dead letter."""

from __future__ import annotations

from typing import cast
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from core.encodings import Encodings

INDEX = "_i"
#: problems named in one reject's detail at most (see :meth:`Batch.defer_drops`)
MAX_PROBLEMS = 10

#: the one default of the largest record a flow accepts (``validate.max_bytes``; codecs,
#: generator and a flow without a validate step use it too): larger is a ``size_violation``
DEFAULT_MAX_BYTES = 65536
#: index of an item (span, log record, data point) inside its record, for codecs that accept per item
ITEM = "_item"


@dataclass
class RawBatch:
    """Consecutive records from one partition of one source topic.

    ``offsets`` are the records' source offsets (ascending, not necessarily contiguous);
    ``timestamps_ms`` the time each record entered the source (Kafka record timestamp).
    ``keys`` and ``headers`` (Kafka record keys and ``[(name, bytes)]`` headers, aligned
    with ``values``) are carried when the source has them, else ``None``.
    """

    source: str
    topic: str
    partition: int
    values: list[bytes | None]
    offsets: list[int]
    timestamps_ms: list[int]
    keys: list[bytes | None] | None = None
    headers: list[list[tuple[str, bytes | None]] | None] | None = None
    topic_partitions: int | None = None  # partitions of the topic, when the source knows
    lag: int = -1  # records after this batch up to the partition's high watermark when it was read (-1: not known)
    # the reader's position when it began this batch: the previous batch's next_offset when one
    # reader read both (offsets can skip transaction markers in between); -1: not known
    read_from: int = -1
    #: numpy copies of ``offsets`` and ``timestamps_ms`` (:meth:`offsets_array`,
    #: :meth:`timestamps_array`), by attribute name: (the list they copy, the array)
    _arrays: dict[str, tuple[list[int], np.ndarray]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __len__(self) -> int:
        return len(self.values)

    def __getstate__(self) -> dict:
        """Pickled without the numpy copies (rebuilt on demand)."""
        state = dict(self.__dict__)
        state.pop("_arrays", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._arrays = {}

    def _array(self, name: str) -> np.ndarray:
        values = getattr(self, name)
        held = self._arrays.get(name)
        if held is not None and held[0] is values and len(held[1]) == len(values):
            return held[1]
        arr = np.asarray(values, dtype=np.int64)
        arr.flags.writeable = False
        self._arrays[name] = (values, arr)
        return arr

    def offsets_array(self) -> np.ndarray:
        """``offsets`` as a read-only int64 numpy array, equal to ``np.asarray(offsets,
        dtype=np.int64)``; converted once while the same list (of the same length) is
        held, so the steps of one batch share one conversion. The list must not be
        changed in place after the array is read (the batch's steps never do)."""
        return self._array("offsets")

    def timestamps_array(self) -> np.ndarray:
        """``timestamps_ms`` as a read-only int64 numpy array, like :meth:`offsets_array`."""
        return self._array("timestamps_ms")

    @property
    def next_offset(self) -> int:
        """The offset a consumer resumes from after this batch."""
        return self.offsets[-1] + 1 if self.offsets else -1

    def slice_from(self, start_offset: int) -> RawBatch:
        """The records at or after ``start_offset`` (used on resume after a restart)."""
        k = int(np.searchsorted(np.asarray(self.offsets, dtype=np.int64), start_offset))
        if k == 0:
            return self
        return RawBatch(
            self.source,
            self.topic,
            self.partition,
            self.values[k:],
            self.offsets[k:],
            self.timestamps_ms[k:],
            self.keys[k:] if self.keys is not None else None,
            self.headers[k:] if self.headers is not None else None,
            self.topic_partitions,
        )


@dataclass
class Rejects:
    """Records rejected so far in one batch: raw index, reason code, human detail, and the
    item index inside the record (None: the whole record)."""

    indices: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    items: list[int | None] = field(default_factory=list)

    def add(self, index: int, reason: str, detail: str, item: int | None = None) -> None:
        self.indices.append(index)
        self.reasons.append(reason)
        self.details.append(detail)
        self.items.append(item)

    def add_many(self, indices, reason: str, details, items=None) -> None:
        """Reject ``indices`` with one reason; ``details`` is a string or one string per
        index; ``items`` None (whole records) or one item index per index."""
        indices = list(indices)
        self.indices.extend(indices)
        self.reasons.extend([reason] * len(indices))
        if isinstance(details, str):
            self.details.extend([details] * len(indices))
        else:
            self.details.extend(details)
        self.items.extend([None] * len(indices) if items is None else list(items))

    def keys(self) -> list[tuple[int, int | None]]:
        """``(index, item)`` of each reject, in order."""
        return list(zip(self.indices, self.items))

    def __len__(self) -> int:
        return len(self.indices)


#: at most this many runs of dropped rows are cut out by slicing (else Arrow's filter)
_SLICED_DROPS = 64


def without_rows(table: pa.Table, drop: np.ndarray) -> pa.Table:
    """``table`` without the rows where ``drop`` (a boolean mask, one entry per row) is
    true: the same rows, values and schema as ``table.filter(~drop)``, every column in
    one chunk. A few runs of dropped rows (the usual case: rejects are rare) are cut out
    by zero-copy slices concatenated once, about half the CPU of the filter, which picks
    each kept value of every column; many runs go through the filter."""
    gone = np.flatnonzero(drop)
    if len(gone) == 0:
        return table
    # starts of the runs of dropped rows, and where each run ends
    breaks = np.flatnonzero(np.diff(gone) != 1) + 1
    if len(breaks) + 1 > _SLICED_DROPS:
        return table.filter(pa.array(~drop))
    starts = gone[np.concatenate(([0], breaks))].tolist()
    ends = (gone[np.concatenate((breaks - 1, [len(gone) - 1]))] + 1).tolist()
    parts, at = [], 0
    for a, b in zip(starts, ends):
        if a > at:
            parts.append(table.slice(at, a - at))
        at = b
    if at < table.num_rows or not parts:
        parts.append(table.slice(at))
    return pa.concat_tables(parts).combine_chunks()


@dataclass
class Batch:
    """Decoded rows of one raw batch, with the rejects collected on the way."""

    raw: RawBatch
    table: pa.Table
    rejects: Rejects = field(default_factory=Rejects)
    _deferred: np.ndarray | None = None
    _problems: dict | None = None
    #: per-item codecs: number of items each record holds (a record rejected whole counts 1)
    items_in: list[int] | None = None
    #: per-item codecs: the bytes of item ``item`` of record ``index`` (for its dead letter)
    item_raw: Callable[[int, int], bytes] | None = None
    #: dictionary encodings of the table's columns, shared by the steps (scrub, enrich)
    encodings: Encodings = field(default_factory=Encodings)

    def defer_drops(self) -> None:
        """From now on, rejected rows are recorded but stay in the table (so several
        checks can run over one table) until :meth:`drop_rejected` filters them once.
        A row is rejected at most once: the first reason wins, and the details of later
        problems of the same row are appended to its detail (``; `` between them, at most
        :data:`MAX_PROBLEMS`, then how many more), so a reject names every problem."""
        self._deferred = np.zeros(self.table.num_rows, dtype=bool)
        self._problems = {}  # row → [position in rejects, problems named so far]

    def rejected_rows(self) -> np.ndarray:
        """Positions (in the table) of the rows rejected so far while drops are deferred."""
        return np.flatnonzero(self._deferred) if self._deferred is not None else np.zeros(0, np.int64)

    def drop_rejected(self) -> None:
        """Filter the rows rejected while drops were deferred out of the table, and end the
        deferral (a no-op when drops are not deferred)."""
        pending = self.end_deferral()
        if pending is not None:
            self.table = without_rows(self.table, pending)

    def end_deferral(self) -> np.ndarray | None:
        """End the deferral of drops without filtering: the mask (one entry per table row)
        of the rows rejected meanwhile, for a caller that drops them itself (e.g. inside a
        ``take`` it does anyway), or None when no row is pending. The table is left as it
        is: the caller must drop the masked rows before anything else reads it."""
        pending, self._deferred = self._deferred, None
        return pending if pending is not None and pending.any() else None

    def reject_mask(self, mask, reason: str, details) -> None:
        """Reject the rows where ``mask`` is true and drop them from the table.

        ``mask`` is a boolean Arrow array or numpy array (nulls count as false);
        ``details`` is a string, or an Arrow array / sequence aligned with the table's
        rows (only the masked entries are read).
        """
        if isinstance(mask, np.ndarray):
            mask_np = mask.astype(bool, copy=False)
        else:
            if isinstance(mask, pa.ChunkedArray):
                mask = mask.combine_chunks()
            mask_np = mask.fill_null(False).to_numpy(zero_copy_only=False)
        if self._deferred is not None:
            again = np.flatnonzero(mask_np & self._deferred)
            if len(again):
                self._add_problems(again, details)
            mask_np = mask_np & ~self._deferred
        hits = np.flatnonzero(mask_np)
        if len(hits) == 0:
            return
        idx = self.table.column(INDEX).to_numpy()[hits].tolist()
        items = self.table.column(ITEM).to_numpy()[hits].tolist() if ITEM in self.table.column_names else None
        if isinstance(details, str):
            self.rejects.add_many(idx, reason, details, items)
        elif isinstance(details, (pa.Array, pa.ChunkedArray)):
            self.rejects.add_many(idx, reason, details.take(pa.array(hits)).to_pylist(), items)
        else:
            self.rejects.add_many(idx, reason, [details[k] for k in hits], items)
        if self._deferred is not None:
            first = len(self.rejects) - len(hits)
            for k, row in enumerate(hits.tolist()):
                cast(dict, self._problems)[row] = [first + k, 1]
            self._deferred |= mask_np
        else:
            self.table = without_rows(self.table, mask_np)

    def _add_problems(self, rows: np.ndarray, details) -> None:
        """Append ``details`` (a string or per-row values) to the details of rows already rejected."""
        for row in rows.tolist():
            entry = cast(dict, self._problems).get(row)
            if entry is None:
                continue
            if isinstance(details, str):
                detail = details
            elif isinstance(details, (pa.Array, pa.ChunkedArray)):
                detail = details[row].as_py()
            else:
                detail = details[row]
            if detail is None:
                continue
            pos, n = entry
            if detail in self.rejects.details[pos].split("; "):
                continue  # the same problem found by two checks is named once
            entry[1] = n + 1
            if n < MAX_PROBLEMS:
                self.rejects.details[pos] = f"{self.rejects.details[pos]}; {detail}"
            elif n == MAX_PROBLEMS:
                self.rejects.details[pos] += "; … (more problems)"
