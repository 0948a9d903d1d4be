"""Dictionary encodings of a batch's columns, computed once and shared by its steps.

The scrubber and the enricher both dictionary-encode ``client_ip`` and ``user_agent``
(each to work once per distinct value). :class:`Encodings` remembers the encodings of a
batch: a later step asking for a column whose content is unchanged gets the same
encoding back instead of computing it again.

"Unchanged" is decided by the array's identity in memory: its type, offset, length and
buffer addresses. Each remembered encoding holds a reference to the array it encodes, so
those buffers stay alive and their addresses cannot be taken by other data meanwhile;
Arrow buffers are immutable, so the same buffers hold the same values."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

#: encodings one batch remembers at most (the oldest is forgotten first)
MAX_ENCODINGS = 8


def one_array(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``col`` as one array: its only chunk itself (no copy, so the buffers keep their
    identity), else the chunks concatenated."""
    if isinstance(col, pa.ChunkedArray):
        return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    return col


def _identity(arr: pa.Array) -> tuple:
    return (arr.type, arr.offset, len(arr), tuple(0 if b is None else b.address for b in arr.buffers()))


class Encodings:
    """The dictionary encodings computed for one batch, by the identity of the array."""

    def __init__(self) -> None:
        self._held: dict[tuple, tuple[pa.Array, pa.DictionaryArray]] = {}
        #: encodings computed, and encodings handed out again without computing
        self.computed = 0
        self.reused = 0

    def dictionary_encode(self, arr: pa.Array) -> pa.DictionaryArray:
        """``pc.dictionary_encode(arr)``: equal to it in every case, computed at most once
        per array content while remembered."""
        key = _identity(arr)
        hit = self._held.get(key)
        if hit is not None:
            self.reused += 1
            return hit[1]
        enc = pc.dictionary_encode(arr)
        self.computed += 1
        if len(self._held) >= MAX_ENCODINGS:
            del self._held[next(iter(self._held))]
        self._held[key] = (arr, enc)
        return enc
