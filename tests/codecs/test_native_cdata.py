"""The compiled decoder's hand-over to pyarrow through the Arrow C data interface
(native/src/cdata.rs, ``obsflow_native.ArrowBatch``): every buffer pyarrow reads is the
extension's own (no copy), the requested schema is held against the columns' layouts, and
a batch's memory is freed whether it was imported and dropped, exported and never
imported, or never exported."""

from __future__ import annotations

import gc
import json

import pyarrow as pa
import pytest

from schemas.codecs import JsonCodec, native_json
from schemas.codecs.native_json import NativeJsonCodec, NativeOtlpCodec, import_batch
from schemas.codecs.otlp_codec import OtlpCodec
from tests.fuzz.corpus import seeds
from transforms.batch import RawBatch

pytestmark = [
    pytest.mark.native,
    pytest.mark.skipif(not native_json.native_available(), reason="obsflow_native not built (make install)"),
]

_native = native_json._native


def _raw(values: list) -> RawBatch:
    return RawBatch("src", "topic", 0, list(values), list(range(len(values))), [0] * len(values))


def _live() -> tuple[int, int]:
    gc.collect()
    return _native.live_exports()


def _addresses(arr: pa.Array) -> list[int]:
    return [0 if b is None else b.address for b in arr.buffers()]


def _event(**fields) -> bytes:
    base = json.loads(seeds("event", "json", 1)[0].value)
    base.update(fields)
    return json.dumps(base).encode()


def test_every_buffer_is_the_extensions_own():
    """Every buffer of every column (nested lists of structs, maps and their entries
    included) of a JSON event batch and an OTLP span batch is at the address the extension
    exported, and the import allocates nothing in pyarrow's pool."""
    events = [s.value for s in seeds("event", "json", 30)]
    spans = [s.value for s in seeds("span", "otlp_proto", 12)]
    codec = NativeJsonCodec("event")
    _verdicts, _own, batch = _native.decode_json_batch(events, 65536, codec.fields)
    _v, span_batch = _native.decode_otlp_spans(spans, 1 << 20)
    span_schema = NativeOtlpCodec("span").schema
    for b, schema in ((batch, codec.schema), (span_batch, span_schema)):
        exported = b.addresses()
        before = pa.total_allocated_bytes()
        table = import_batch(b, schema)
        assert pa.total_allocated_bytes() == before
        assert table.num_columns == len(exported) == len(schema)
        for name, want in zip(schema.names, exported):
            assert _addresses(table.column(name).chunk(0)) == want, name
    attributes = table.column("attributes").chunk(0)
    assert (attributes.null_count, attributes.offsets[-1].as_py()) == (3, 11)
    assert len(exported) == 18 + 2 and exported[10][0] != 0 and exported[11][0] == 0  # a bitmap where a null is


def test_imported_batch_freed_when_dropped():
    """A batch imported then dropped frees its memory: the extension's count of live
    exported arrays and bytes returns to where it was; a column kept alive keeps its batch
    alive until it goes too."""
    base = _live()
    codec = NativeJsonCodec("event")
    table = codec.decode(_raw([s.value for s in seeds("event", "json", 50)])).table
    arrays, nbytes = _live()
    # the batch, its 10 columns and _i, the events list's struct and its 8 fields
    assert arrays - base[0] == 1 + 11 + 1 + 8 and nbytes - base[1] > 50 * 32
    kept = table.column("page")
    del table
    assert _live() == (arrays, nbytes)  # pyarrow holds the batch for the column's sake
    del kept
    assert _live() == base


def test_capsule_never_imported_is_released():
    """An ``arrow_array`` capsule dropped without pyarrow importing it releases the batch
    (its destructor calls ``release``); so does an ``ArrowBatch`` never exported."""
    base = _live()
    codec = NativeJsonCodec("log")
    values = [s.value for s in seeds("log", "json", 20)]
    _v, _own, batch = _native.decode_json_batch(values, 65536, codec.fields)
    capsules = batch.__arrow_c_array__(codec.schema.__arrow_c_schema__())
    del batch
    assert _live()[0] > base[0]
    del capsules
    assert _live() == base
    _v, _own, batch = _native.decode_json_batch(values, 65536, codec.fields)
    assert _live()[0] > base[0]
    del batch
    assert _live() == base


def test_requested_schema_is_held_against_the_layouts():
    """A schema that does not fit the columns (a type of another layout, a non-nullable
    field holding nulls, a missing column) is a ``ValueError`` naming the column, and the
    batch stays exportable; no schema is a ``TypeError``; a second export a ``ValueError``."""
    codec = NativeJsonCodec("event")
    values = [_event(page=None), _event()]
    _v, _own, batch = _native.decode_json_batch(values, 65536, codec.fields)
    wrong_type = codec.schema.set(0, pa.field("event_id", pa.int64()))
    with pytest.raises(ValueError, match="event_id"):
        pa.record_batch(batch, schema=wrong_type)
    not_null = codec.schema.set(2, pa.field("page", pa.string(), nullable=False))
    with pytest.raises(ValueError, match="page: 1 nulls in a field that is not nullable"):
        pa.record_batch(batch, schema=not_null)
    with pytest.raises(ValueError, match="children"):
        pa.record_batch(batch, schema=codec.schema.remove(1))
    with pytest.raises(TypeError):
        batch.__arrow_c_array__()
    page = import_batch(batch, codec.schema).column("page").to_pylist()
    assert page[0] is None and page[1] == json.loads(values[1])["page"]
    with pytest.raises(ValueError, match="already exported"):
        import_batch(batch, codec.schema)


def test_nulls_empty_strings_and_nested_lists_round_trip():
    """Nulls, empty strings, empty and null lists, and structs with null fields come out as
    the reference reads them, value for value."""
    values = [
        _event(page=None, user="", events=[]),
        _event(page="", user=None, events=None),
        _event(events=[{"type": "click", "target": "", "depth": None}, {"type": "scroll", "depth": 0.5}]),
    ]
    nat = NativeJsonCodec("event").decode(_raw(values))
    ref = JsonCodec("event").decode(_raw(values))
    assert nat.table.equals(ref.table)
    assert (nat.table.num_rows, len(nat.rejects)) == (3, 0)
    assert nat.table.column("page").to_pylist() == [None, "", nat.table.column("page")[2].as_py()]
    assert nat.table.column("user").to_pylist()[:2] == ["", None]
    events = nat.table.column("events").to_pylist()
    assert events[0] == [] and events[1] is None
    assert [(e["type"], e["target"], e["depth"]) for e in events[2]] == [("click", "", None), ("scroll", None, 0.5)]
    assert _addresses(nat.table.column("page").chunk(0))[0] != 0  # a null: the bitmap is exported


def test_zero_rows():
    """A batch with no row (no record, or only dead letters) imports as an empty table of
    the wire schema."""
    codec = NativeJsonCodec("event")
    for values in ([], [None, b"", b"{"]):
        batch = codec.decode(_raw(values))
        assert batch.table.num_rows == 0 and batch.table.schema.equals(codec.schema)
        assert len(batch.rejects) == len(values)
    span = NativeOtlpCodec("span")
    empty = span.decode(_raw([]))
    assert empty.table.num_rows == 0 and empty.table.schema.equals(span.schema)


def test_otlp_attributes_round_trip():
    """OTLP spans' attribute maps (list of key/value structs) and the _i/_item index
    columns come out as the reference reads them."""
    values = [s.value for s in seeds("span", "otlp_proto", 12)]
    nat = NativeOtlpCodec("span").decode(_raw(values)).table
    ref = OtlpCodec("span").decode(_raw(values)).table
    assert nat.equals(ref)
    attributes = nat.column("attributes").to_pylist()
    assert nat.num_rows == 13 and attributes.count(None) == 3 and sum(len(a) for a in attributes if a) == 11
