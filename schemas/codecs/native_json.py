"""The compiled JSON decoder (``native/``, module ``obsflow_native``) behind the ``json``
codec, with the Python :class:`~schemas.codecs.json_codec.JsonCodec` as its reference.

The extension decodes a whole batch into Arrow buffers and gives each record a verdict: a row, or *deferred*. It defers every record it cannot
decode with certainty exactly as the reference would (empty, oversized, not UTF-8, not
JSON, a value of another type, a duplicate field, a float inside a map...); those records
alone go through the reference codec, which gives them their row or their dead letter's
reason and detail. So the rows and dead letters equal the reference's (the parity test in
tests/codecs/test_native_parity.py holds that), and bad input costs only its own records.

The batch reaches pyarrow through the Arrow C data interface (:func:`import_batch`): the
extension's ``ArrowBatch`` exports its columns as one struct array whose buffers are its
own, and pyarrow imports them without a copy, under the wire schema this side names.

Which decoder runs: the codec option ``decoder`` (``native`` or ``python``), else the
environment variable ``OBSFLOW_DECODER``, else ``native`` when the extension is installed.
Without the extension the reference runs, after one warning line."""

from __future__ import annotations

import logging
import os

import numpy as np
import pyarrow as pa

from schemas.wire import arrow_schema
from core.batch import INDEX, ITEM, Batch, RawBatch, Rejects

from .json_codec import JsonCodec

log = logging.getLogger(__name__)

try:  # the extension is built by `make install` (maturin); a failed build must not stop the pipeline
    import obsflow_native as _native
except ImportError as e:  # pragma: no cover - exercised by test_missing_extension_warns
    _native = None
    _IMPORT_ERROR: str | None = str(e)
else:
    _IMPORT_ERROR = None
    if not hasattr(_native, "ArrowBatch"):  # pragma: no cover - a build older than the C data hand-over
        _native = None
        _IMPORT_ERROR = "the installed build predates the Arrow C data hand-over (rebuild it)"

DECODERS = ("native", "python")
_warned = False


def native_available() -> bool:
    """Whether the compiled decoder is installed."""
    return _native is not None


def chosen_decoder(option: str | None = None) -> str:
    """``native`` or ``python``: ``option`` (the codec's ``decoder`` option), else
    ``$OBSFLOW_DECODER``, else ``native``; ``native`` without the extension gives
    ``python`` and logs one warning line (once per process). ``ValueError`` names a value
    that is neither."""
    global _warned
    choice = option or os.environ.get("OBSFLOW_DECODER") or "native"
    if choice not in DECODERS:
        raise ValueError(f"decoder: expected one of {', '.join(DECODERS)}, got {choice!r}")
    if choice == "native" and _native is None:
        if not _warned:
            log.warning(
                "obsflow_native (the compiled decoder) is not installed (%s): using the Python decoder; "
                "build it with `make install`",
                _IMPORT_ERROR,
            )
            _warned = True
        return "python"
    return choice


def _spec(t: pa.DataType):
    """A wire type as the extension reads it."""
    if pa.types.is_timestamp(t):
        return {"ms": "ts_ms", "us": "ts_us"}[t.unit]
    if pa.types.is_string(t):
        return "string"
    if pa.types.is_int32(t):
        return "int32"
    if pa.types.is_int64(t):
        return "int64"
    if pa.types.is_float64(t):
        return "double"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_map(t):
        if not (pa.types.is_string(t.key_type) and pa.types.is_string(t.item_type)):
            raise TypeError(f"the compiled decoder reads map<string, string> only, not {t}")
        return "map"
    if pa.types.is_list(t):
        return ("list", _spec(t.value_type))
    if pa.types.is_struct(t):
        return ("struct", [(f.name, _spec(f.type)) for f in t])
    raise TypeError(f"the compiled decoder has no reading for wire type {t}")


def import_batch(batch, schema: pa.Schema) -> pa.Table:
    """The extension's ``batch`` (an ``obsflow_native.ArrowBatch``) as a table of
    ``schema``, over the extension's own buffers (no copy), through the Arrow PyCapsule
    interface. ``schema`` names the columns' types; the extension checks it against their
    layouts (``ValueError`` naming the column that does not fit)."""
    return pa.Table.from_batches([pa.record_batch(batch, schema=schema)])


def _merge_deferred(
    reference,
    raw: RawBatch,
    values: list,
    verdicts: np.ndarray,
    table: pa.Table,
    own: list[tuple[int, str, str]] | None = None,
) -> tuple[pa.Table, Rejects, Batch | None]:
    """The extension's ``table`` (rows of the records whose verdict is 1) merged with what
    ``reference`` gives the records whose verdict is 0 (decoded as one sub-batch, their
    ``_i`` mapped back to the batch's) and with the extension's ``own`` dead letters
    (``(record, reason, detail)`` in record order, verdict 2): ``(table, rejects, reference
    batch or None when nothing was deferred)``. Rows are ordered by record (and item, when
    the table has ``_item``), rejects by record then item (a whole-record reject first), as
    the reference orders its own."""
    rejects = Rejects()
    deferred = np.flatnonzero(verdicts == 0)
    if not len(deferred):
        for i, reason, detail in own or ():
            rejects.add(i, reason, detail)
        return table, rejects, None
    sub = RawBatch(
        raw.source,
        raw.topic,
        raw.partition,
        [values[i] for i in deferred],
        [raw.offsets[i] for i in deferred] if raw.offsets else [],
        [raw.timestamps_ms[i] for i in deferred] if raw.timestamps_ms else [],
    )
    ref = reference.decode(sub)
    ref_table = ref.table
    if ref_table.num_rows:
        orig = deferred[ref_table.column(INDEX).to_numpy()]
        ref_table = ref_table.set_column(ref_table.schema.get_field_index(INDEX), INDEX, pa.array(orig, pa.int64()))
        table = pa.concat_tables([table, ref_table.cast(table.schema)])
        keys = [table.column(INDEX).to_numpy()]
        if ITEM in table.schema.names:
            keys.insert(0, table.column(ITEM).to_numpy())
        table = table.take(np.lexsort(keys))
    r = ref.rejects
    merged = [(int(deferred[r.indices[k]]), r.items[k], r.reasons[k], r.details[k]) for k in range(len(r))]
    merged += [(i, None, reason, detail) for i, reason, detail in own or ()]
    for i, item, reason, detail in sorted(merged, key=lambda m: (m[0], -1 if m[1] is None else m[1])):
        rejects.add(i, reason, detail, item)
    return table, rejects, ref


class NativeJsonCodec:
    """The ``json`` codec on the compiled decoder: same constructor, same :meth:`decode`
    contract and results as :class:`JsonCodec` (which decodes the records it defers)."""

    def __init__(self, signal: str, max_bytes: int = 65536):
        self.signal = signal
        self.max_bytes = max_bytes
        self.reference = JsonCodec(signal=signal, max_bytes=max_bytes)
        wire = arrow_schema(signal)
        self.fields = [(f.name, _spec(f.type)) for f in wire]
        # output types exactly as the reference builds them (nullable fields, map entries)
        empty = self.reference.decode(RawBatch("", "", 0, [], [], []))
        self.schema = empty.table.schema

    def __getattr__(self, name: str):
        """Anything else (``wire``, ``encoding``, ...) is the reference codec's."""
        if name == "reference" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.reference, name)

    def decode(self, raw: RawBatch) -> Batch:
        """Rows and rejects equal to ``JsonCodec.decode(raw)``'s (rows in record order,
        rejects in record order)."""
        values = raw.values if isinstance(raw.values, list) else list(raw.values)
        verdict_buf, own, batch = _native.decode_json_batch(values, self.max_bytes, self.fields)
        verdicts = np.frombuffer(verdict_buf, dtype=np.uint8)
        table = import_batch(batch, self.schema)
        table, rejects, _ref = _merge_deferred(self.reference, raw, values, verdicts, table, own)
        return Batch(raw=raw, table=table, rejects=rejects)


#: OTLP protobuf signal -> the extension's function decoding it
_OTLP_DECODERS = {"span": "decode_otlp_spans", "log": "decode_otlp_logs", "metric": "decode_otlp_metrics"}


def native_otlp_signals(encoding: str = "otlp_proto") -> tuple[str, ...]:
    """The OTLP signals the installed extension decodes in ``encoding`` (``otlp_proto`` or
    ``otlp_json``; an older build may lack logs, metrics or OTLP/JSON: those then go to the
    reference codec)."""
    if _native is None:
        return ()
    if encoding == "otlp_json":
        return tuple(_OTLP_DECODERS) if hasattr(_native, "decode_otlp_json") else ()
    return tuple(s for s, fn in _OTLP_DECODERS.items() if hasattr(_native, fn))


class NativeOtlpCodec:
    """The ``otlp_proto`` and ``otlp_json`` codecs for spans, logs and metrics on the
    compiled decoder: same constructor, same :meth:`decode` contract and results as
    ``OtlpCodec(signal, encoding=encoding)`` (which decodes the messages it defers, with
    their per-item verdicts). OTLP/JSON is transcoded to protobuf in the extension and read
    by the protobuf decoder (native/src/otlp_json.rs); any shape it is unsure of defers."""

    def __init__(self, signal: str = "span", max_bytes: int = 1 << 20, encoding: str = "otlp_proto"):
        from functools import partial

        from .otlp_codec import ENCODINGS, OtlpCodec

        if signal not in _OTLP_DECODERS:
            raise ValueError(f"the compiled OTLP decoder reads spans, logs and metrics, not {signal!r}")
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown OTLP encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}")
        self.signal = signal
        self.max_bytes = max_bytes
        self.encoding = encoding
        self.reference = OtlpCodec(signal=signal, max_bytes=max_bytes, encoding=encoding)
        self.schema = self.reference.decode(RawBatch("", "", 0, [], [], [])).table.schema
        if encoding == "otlp_json":
            self._decode = partial(_native.decode_otlp_json, signal=signal)
        else:
            self._decode = getattr(_native, _OTLP_DECODERS[signal])

    def __getattr__(self, name: str):
        """Anything else (``wire``, ``encoding``, ...) is the reference codec's."""
        if name == "reference" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.reference, name)

    def decode(self, raw: RawBatch) -> Batch:
        """Rows (ordered by message and item), rejects, ``items_in`` and ``item_raw`` equal
        to ``OtlpCodec.decode(raw)``'s."""
        from .otlp_codec import _item_sources

        values = raw.values if isinstance(raw.values, list) else list(raw.values)
        verdict_buf, batch = self._decode(values, self.max_bytes)
        verdicts = np.frombuffer(verdict_buf, dtype=np.uint8)
        table = import_batch(batch, self.schema)
        index = table.column(INDEX).chunk(0).to_numpy()  # the extension's buffer, no copy
        # items per message: its last row's item + 1 (rows are in message and item order; a
        # summary's quantile rows share their point's item)
        counts = np.zeros(len(values), dtype=np.int64)
        if len(index):
            item = table.column(ITEM).chunk(0).to_numpy()
            last = np.flatnonzero(np.diff(index, append=-1) != 0)
            counts[index[last]] = item[last].astype(np.int64) + 1
        items_in: list[int] = counts.tolist()
        table, rejects, ref = _merge_deferred(self.reference, raw, values, verdicts, table)
        if ref is not None:
            assert ref.items_in is not None  # an OTLP decode counts items per record
            for k, i in enumerate(np.flatnonzero(verdicts == 0)):
                items_in[i] = ref.items_in[k]
        codec, signal, encoding = self.reference, self.signal, self.encoding
        return Batch(
            raw=raw,
            table=table,
            rejects=rejects,
            items_in=items_in,
            item_raw=lambda i, k: codec._item_bytes(
                _item_sources(codec._parse(raw.values[i] or b""), signal, encoding)[k]
            ),
        )


#: the span codec's earlier name
NativeOtlpSpanCodec = NativeOtlpCodec
