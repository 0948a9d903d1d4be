"""The compiled Avro decoder (``native/src/avro.rs``, ``obsflow_native.decode_avro``)
behind the ``avro`` codec, with the Python :class:`~schemas.codecs.avro_codec.AvroCodec`
(fastavro) as its reference.

The extension reads Confluent-framed records whose schema id it has a *plan* for straight
into the wire schema's Arrow columns. A plan is made here, once per schema id, from the
writer schema the reference resolved for that id: the writer's fields in order, each with
the reader (wire) column it fills or none (read and dropped), and the reader columns no
writer field fills, which must default to null. A plan is made only when the reference
would read every value to the same row: field types identical in both schemas (docs
aside), no timestamp unit to scale, no aliases, only the types the extension reads
(string, int, long, double, boolean, enum, ``["null", T]``, arrays, records, maps of
strings). Other schema ids, and every record the extension is unsure of (truncated,
trailing bytes, invalid UTF-8, an int beyond 32 bits, a map key given twice, ...), go
through the reference, which gives them their row or their dead letter. So the rows and
dead letters are the reference's (tests/codecs/test_native_avro_parity.py).

Schema ids of the local registry (``schemas/avro/registry.json``) get their plans when
the codec is made; ids a Schema Registry serves get theirs after the reference first
fetched them (their first records are decoded by the reference)."""

from __future__ import annotations

from typing import Any

import numpy as np

from core.batch import DEFAULT_MAX_BYTES, Batch, RawBatch

from .avro_codec import AvroCodec, LocalSchemas, UnknownSchema, _Reader, _strip_timestamps
from .native_json import _merge_deferred, _native, import_batch

#: Avro primitive types the extension reads (as their names)
_PRIMITIVES = ("string", "int", "long", "double", "boolean")


def native_avro_available() -> bool:
    """Whether the installed extension has the Avro decoder."""
    return _native is not None and hasattr(_native, "decode_avro")


def avro_spec(t: Any) -> Any:
    """An Avro type (as written in a ``.avsc``, top-level timestamps stripped) as the
    extension reads it, or None when it does not read that type."""
    if isinstance(t, str):
        return t if t in _PRIMITIVES else None
    if isinstance(t, list):
        if len(t) != 2 or t[0] != "null":
            return None
        inner = avro_spec(t[1])
        return None if inner is None else ("nullable", inner)
    if not isinstance(t, dict) or "logicalType" in t:
        return None
    kind = t.get("type")
    if kind in _PRIMITIVES:
        return kind
    if kind == "enum":
        symbols = t.get("symbols")
        return (
            ("enum", list(symbols)) if isinstance(symbols, list) and all(isinstance(s, str) for s in symbols) else None
        )
    if kind == "array":
        inner = avro_spec(t.get("items"))
        return None if inner is None else ("array", inner)
    if kind == "map":
        return "map" if t.get("values") == "string" else None
    if kind == "record":
        fields = [avro_spec(f.get("type")) for f in t.get("fields", [])]
        return None if not fields or any(f is None for f in fields) else ("record", fields)
    return None


def _bare(t: Any) -> Any:
    """An Avro type without its ``doc`` strings (which do not change how it is read)."""
    if isinstance(t, dict):
        return {k: _bare(v) for k, v in t.items() if k != "doc"}
    if isinstance(t, list):
        return [_bare(x) for x in t]
    return t


def avro_plan(writer_doc: dict, reader_doc: dict) -> list[tuple[Any, int]] | None:
    """How the extension reads bodies of ``writer_doc`` into the columns of ``reader_doc``
    (both with their top-level timestamps stripped): ``[(type, column or -1)]`` per writer
    field, or None when the reference might read them otherwise (a type the extension does
    not read, a field whose type differs, a reader field without a null default that the
    writer lacks, aliases)."""
    rfields = reader_doc["fields"]
    if any(f.get("aliases") for f in rfields) or any(f.get("aliases") for f in writer_doc.get("fields", [])):
        return None
    at = {f["name"]: k for k, f in enumerate(rfields)}
    plan: list[tuple[Any, int]] = []
    for f in writer_doc.get("fields", []):
        spec = avro_spec(f["type"])
        if spec is None:
            return None
        k = at.get(f["name"], -1)
        if k >= 0 and _bare(f["type"]) != _bare(rfields[k]["type"]):
            return None
        plan.append((spec, k))
    filled = {k for _, k in plan}
    for k, f in enumerate(rfields):
        if k not in filled:
            nullable_first = isinstance(f["type"], list) and f["type"][:1] == ["null"]
            if not (nullable_first and "default" in f and f["default"] is None):
                return None
    return plan


class NativeAvroCodec:
    """The ``avro`` codec on the compiled decoder: same constructor, same :meth:`decode`
    contract and results as :class:`AvroCodec` (which decodes the records it defers,
    fetches writer schemas, and raises ``SchemaRegistryUnavailable`` as it does)."""

    def __init__(
        self,
        signal: str,
        max_bytes: int = DEFAULT_MAX_BYTES,
        schema_registry_url: str | None = None,
        registry_timeout_s: float = 5.0,
    ):
        self.signal = signal
        self.max_bytes = max_bytes
        self.reference = AvroCodec(signal, max_bytes, schema_registry_url, registry_timeout_s)
        self.schema = self.reference.decode(RawBatch("", "", 0, [], [], [])).table.schema
        specs = [avro_spec(f["type"]) for f in self.reference._reader_doc["fields"]]
        #: the reader's column types, or None when the extension cannot read them all
        self.columns: list[Any] | None = None if any(s is None for s in specs) else specs
        self._plans: dict[int, list[tuple[Any, int]] | None] = {}
        if isinstance(self.reference.schemas, LocalSchemas):
            for sid in self.reference.schemas.ids:
                self.reference._resolve(sid)
        self._learn()

    def __getattr__(self, name: str):
        """Anything else (``wire``, ``names``, ``schemas``, ...) is the reference codec's."""
        if name == "reference" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.reference, name)

    def _learn(self) -> None:
        """Make a plan for each schema id the reference resolved since the last call."""
        for sid, rd in list(self.reference._readers.items()):
            if sid in self._plans:
                continue
            plan = None
            if isinstance(rd, _Reader) and not rd.scales and self.columns is not None:
                try:
                    _label, doc = self.reference.schemas.fetch(sid)  # cached by the registry
                except UnknownSchema:
                    doc = None
                if isinstance(doc, dict) and doc.get("type") == "record":
                    plan = avro_plan(_strip_timestamps(doc)[0], self.reference._reader_doc)
            self._plans[sid] = plan

    @property
    def plans(self) -> dict[int, list[tuple[Any, int]]]:
        """The schema ids the extension reads, with their plans."""
        return {sid: p for sid, p in self._plans.items() if p is not None}

    def decode(self, raw: RawBatch) -> Batch:
        """Rows and rejects equal to ``AvroCodec.decode(raw)``'s (rows in record order,
        rejects in record order)."""
        if self.columns is None:
            return self.reference.decode(raw)
        values = raw.values if isinstance(raw.values, list) else list(raw.values)
        plans = list(self.plans.items())
        verdict_buf, batch = _native.decode_avro(values, self.max_bytes, self.columns, plans)
        verdicts = np.frombuffer(verdict_buf, dtype=np.uint8)
        table = import_batch(batch, self.schema)
        table, rejects, _ref = _merge_deferred(self.reference, raw, values, verdicts, table)
        if len(self.reference._readers) != len(self._plans):
            self._learn()
        return Batch(raw=raw, table=table, rejects=rejects)
