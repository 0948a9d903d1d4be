"""Batches that flow between transforms, and the rejects they collect.

A :class:`RawBatch` is what a source hands over: consecutive records of one topic
partition. Decoding turns it into a :class:`Batch`, an Arrow table with an ``_i`` column
(the record's index in the raw batch), so that any later step can reject a row and the
dead letter still carries the exact raw bytes and source offset."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

INDEX = "_i"
#: problems named in one reject's detail at most (see :meth:`Batch.defer_drops`)
MAX_PROBLEMS = 10


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

    def __len__(self) -> int:
        return len(self.values)

    @property
    def next_offset(self) -> int:
        """The offset a consumer resumes from after this batch."""
        return self.offsets[-1] + 1 if self.offsets else -1

    def slice_from(self, start_offset: int) -> "RawBatch":
        """The records at or after ``start_offset`` (used on resume after a restart)."""
        k = int(np.searchsorted(np.asarray(self.offsets, dtype=np.int64), start_offset))
        if k == 0:
            return self
        return RawBatch(self.source, self.topic, self.partition, self.values[k:], self.offsets[k:], self.timestamps_ms[k:],
                        self.keys[k:] if self.keys is not None else None,
                        self.headers[k:] if self.headers is not None else None, self.topic_partitions)


@dataclass
class Rejects:
    """Records rejected so far in one batch: raw index, reason code, human detail."""

    indices: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    def add(self, index: int, reason: str, detail: str) -> None:
        self.indices.append(index)
        self.reasons.append(reason)
        self.details.append(detail)

    def add_many(self, indices, reason: str, details) -> None:
        """Reject ``indices`` with one reason; ``details`` is a string or one string per index."""
        indices = list(indices)
        self.indices.extend(indices)
        self.reasons.extend([reason] * len(indices))
        if isinstance(details, str):
            self.details.extend([details] * len(indices))
        else:
            self.details.extend(details)

    def __len__(self) -> int:
        return len(self.indices)


@dataclass
class Batch:
    """Decoded rows of one raw batch, with the rejects collected on the way."""

    raw: RawBatch
    table: pa.Table
    rejects: Rejects = field(default_factory=Rejects)
    _deferred: np.ndarray | None = None
    _problems: dict | None = None

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
        if self._deferred is not None:
            if self._deferred.any():
                self.table = self.table.filter(pa.array(~self._deferred))
            self._deferred = None

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
        if isinstance(details, str):
            self.rejects.add_many(idx, reason, details)
        elif isinstance(details, (pa.Array, pa.ChunkedArray)):
            self.rejects.add_many(idx, reason, details.take(pa.array(hits)).to_pylist())
        else:
            self.rejects.add_many(idx, reason, [details[k] for k in hits])
        if self._deferred is not None:
            first = len(self.rejects) - len(hits)
            for k, row in enumerate(hits.tolist()):
                self._problems[row] = [first + k, 1]
            self._deferred |= mask_np
        else:
            self.table = self.table.filter(pa.array(~mask_np))

    def _add_problems(self, rows: np.ndarray, details) -> None:
        """Append ``details`` (a string or per-row values) to the details of rows already rejected."""
        for row in rows.tolist():
            entry = self._problems.get(row)
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
            entry[1] = n + 1
            if n < MAX_PROBLEMS:
                self.rejects.details[pos] = f"{self.rejects.details[pos]}; {detail}"
            elif n == MAX_PROBLEMS:
                self.rejects.details[pos] += "; … (more problems)"
