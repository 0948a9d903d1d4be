"""JSON codec: one JSON object per record, parsed a whole batch at a time with
``pyarrow.json`` against the signal's wire schema.

The fast path joins the batch's records with newlines and parses them in one call. A
batch that contains a bad record fails as a whole in ``pyarrow.json``; the codec then
checks every record of it against the read schema with one ``msgspec`` typed decode
(C-level, about 1.5 µs a record), rejects the records that are not JSON or carry a value
of the wrong type, and parses the rest in one call again. Should ``pyarrow.json`` still
refuse a record, the batch is split at the row its error names (or in halves) until the
bad record stands alone. Each bad record is explained by a per-record check (``orjson``
plus a type walk over the wire schema). Good records are never lost with a bad
neighbour, and every bad record gets a reason and a precise detail.

``pyarrow.json`` only ever sees screened bytes: every record one line that starts with
``{`` and ends with ``}`` (``pyarrow.json`` 25.0.1 segfaults on a batch whose first line is
``null``), no byte order mark, no ``NaN`` / ``Inf`` / ``Infinity`` literal (not JSON; RFC 8259). What
it returns is validated (``RecordBatch.validate(full=True)``, against the open bugs that
build invalid list arrays); a block that fails is re-parsed smaller and a record that
still fails is built from its ``orjson`` parse. Every per-record Python step turns any
failure into a reject of that record: integers beyond 64 bits in a map field, and JSON
nested too deep (:data:`MAX_NESTING`) are ``schema_violation`` / ``format_violation``
dead letters, never exceptions. A number beyond a double's range (``1e400``) is ignored
where the wire schema does not read it and a ``format_violation`` where it does, whichever
parser meets it (:meth:`JsonCodec._readable`, :meth:`JsonCodec._reject_infinite`)."""

from __future__ import annotations

import io
import json
import math
import re
import types
import typing
from itertools import repeat

import numpy as np
import msgspec
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from schemas.wire import arrow_schema
from core.batch import DEFAULT_MAX_BYTES, INDEX, Batch, RawBatch, Rejects

#: ISO-8601 with a zone, as the wire schemas require for timestamps in JSON
ISO_TS = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})$"
_ROW_RE = re.compile(r"in row (\d+)")
_IN_ROW = re.compile(r" in row \d+")
BLOCK_BYTES = 1 << 16  # after a failure: small blocks, so a bad record costs little re-parsing
CLEAN_BLOCK_BYTES = 1 << 22  # first attempt: large blocks parse fastest
BOM = b"\xef\xbb\xbf"
#: deepest JSON nesting a record may have where the codec reads it (orjson's own bound)
MAX_NESTING = 255
BOM_DETAIL = "payload starts with a UTF-8 byte order mark (not allowed in JSON, RFC 8259 section 8.1)"
_I64 = (-(2**63), 2**63)
#: orjson's error for a number literal beyond a double's range (``1e400``)
_INFINITY = "number is infinity when parsed as double"


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


_BLANK_LINE = re.compile(rb"\n[ \t]*\n")


def _has_blank(payloads: list[bytes], joined: bytes) -> bool:
    """Whether some record is blank or only spaces and tabs (``joined``: the records
    newline-joined)."""
    return not payloads[0].strip(b" \t") or not payloads[-1].strip(b" \t") or _BLANK_LINE.search(joined) is not None


class _Bad(Exception):
    """One record's reject: reason code and detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _too_deep(message: str) -> bool:
    """Whether a decoder's error message says the JSON is nested beyond its bound."""
    return "ecursion" in message or "depth limit" in message


def _failure(e: BaseException, what: str) -> tuple[str, str]:
    """Reason and detail for an exception a per-record step raised on ``what``: nesting
    beyond the decoders' bounds is ``format_violation``, anything else a value the wire
    schema cannot hold (``schema_violation``)."""
    text = str(e)
    if isinstance(e, RecursionError) or _too_deep(text):
        return "format_violation", f"{what}: JSON nested too deep (more than {MAX_NESTING} levels)"
    if "64-bit" in text or isinstance(e, OverflowError):
        return "schema_violation", f"{what}: integer beyond 64 bits"
    return "schema_violation", f"{what}: {type(e).__name__}: {text[:160]}"


def _own(err: BaseException | None) -> str:
    """A parser's error about one record, without the row of the parse block it names
    (`` in row N``: the record's position among its neighbours, not a property of it)."""
    return _IN_ROW.sub("", str(err))[:200]


def _as_text(v, field: str = "value", key: str | None = None) -> str | None:
    """A JSON value as map text: strings as they are, other scalars and nested values as
    JSON. Raises :class:`_Bad` (naming ``field.key``) for an integer beyond 64 bits or
    nesting beyond :data:`MAX_NESTING`."""
    if v is None or isinstance(v, str):
        return v
    where = field if key is None else f"{field}.{key}"
    if isinstance(v, int) and not isinstance(v, bool) and not _I64[0] <= v < 2**64:
        raise _Bad("schema_violation", f"{where}: integer {str(v)[:40]} beyond 64 bits")
    try:
        return orjson.dumps(v).decode()
    except (TypeError, RecursionError) as e:
        raise _Bad(*_failure(e, where)) from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _schema_part(value, t: pa.DataType | pa.Schema):
    """The part of a decoded JSON value that wire type ``t`` reads: object keys the schema
    does not name dropped at every depth (the parsers ignore them); a value of another type
    than ``t`` kept as it is (its type error is reported as for any record)."""
    if isinstance(t, pa.Schema) or pa.types.is_struct(t):
        if not isinstance(value, dict):
            return value
        return {f.name: _schema_part(value[f.name], f.type) for f in t if f.name in value}
    if pa.types.is_list(t) and isinstance(value, list):
        return [_schema_part(x, t.value_type) for x in value]
    return value


def _all_finite(value) -> bool:
    """Whether no float anywhere in a decoded JSON value is infinite or NaN."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(map(_all_finite, value.values()))
    if isinstance(value, list):
        return all(map(_all_finite, value))
    return True


def _has_float(t: pa.DataType) -> bool:
    if pa.types.is_floating(t):
        return True
    if pa.types.is_struct(t):
        return any(_has_float(f.type) for f in t)
    if pa.types.is_list(t):
        return _has_float(t.value_type)
    return False


def _float_leaves(arr, t: pa.DataType):
    """The float values of ``arr`` (wire type ``t``), one array per float field at any depth
    (lists flattened), for a quick look before :func:`_infinite_rows`."""
    if pa.types.is_floating(t):
        yield arr
    elif pa.types.is_struct(t):
        for k, f in enumerate(t):
            if _has_float(f.type):
                yield from _float_leaves(pc.struct_field(arr, [k]), f.type)
    elif pa.types.is_list(t):
        yield from _float_leaves(pc.list_flatten(arr), t.value_type)


def _infinite_rows(arr: pa.Array, t: pa.DataType) -> np.ndarray:
    """Per row of ``arr`` (wire type ``t``), whether a float in it is infinite: a JSON number
    beyond a double's range that ``pyarrow.json`` read as inf (JSON has no infinity)."""
    n = len(arr)
    if pa.types.is_floating(t):
        return pc.is_inf(arr).fill_null(False).to_numpy(zero_copy_only=False)
    mask = np.zeros(n, dtype=bool)
    if pa.types.is_struct(t):
        for k, f in enumerate(t):
            if _has_float(f.type):
                mask |= _infinite_rows(pc.struct_field(arr, [k]), f.type)
    elif pa.types.is_list(t):
        inner = _infinite_rows(arr.flatten(), t.value_type)
        if inner.any():
            mask[pc.list_parent_indices(arr).to_numpy()[inner]] = True
    return mask


def _lenient(t: pa.DataType) -> pa.DataType:
    """The type ``pyarrow.json`` reads for a wire type: timestamps as strings (converted
    afterwards, so one bad timestamp rejects one record, not the batch)."""
    if pa.types.is_timestamp(t):
        return pa.string()
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _lenient(f.type)) for f in t])
    if pa.types.is_list(t):
        return pa.list_(_lenient(t.value_type))
    return t


def _py_kind(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _expected(t: pa.DataType) -> str:
    if pa.types.is_timestamp(t):
        return "an ISO-8601 timestamp string with a zone"
    if pa.types.is_string(t):
        return "a string"
    if pa.types.is_integer(t):
        return "an integer"
    if pa.types.is_floating(t):
        return "a number"
    if pa.types.is_boolean(t):
        return "a boolean"
    if pa.types.is_list(t):
        return "an array"
    return "an object"


def _type_error(value, t: pa.DataType, path: str) -> str | None:
    """First mismatch between a decoded JSON value and wire type ``t``, as a detail line."""
    if value is None:
        return None
    ok = True
    if pa.types.is_timestamp(t) or pa.types.is_string(t):
        ok = isinstance(value, str)
    elif pa.types.is_integer(t):
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and not (-(2 ** (t.bit_width - 1)) <= value < 2 ** (t.bit_width - 1)):
            return f"{path}: integer {value} out of range for {t}"
    elif pa.types.is_floating(t):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif pa.types.is_boolean(t):
        ok = isinstance(value, bool)
    elif pa.types.is_list(t):
        if not isinstance(value, list):
            ok = False
        else:
            for k, item in enumerate(value):
                err = _type_error(item, t.value_type, f"{path}[{k}]")
                if err:
                    return err
    elif pa.types.is_struct(t):
        if not isinstance(value, dict):
            ok = False
        else:
            for f in t:
                err = _type_error(value.get(f.name), f.type, f"{path}.{f.name}")
                if err:
                    return err
    elif pa.types.is_map(t):
        if not isinstance(value, dict):
            ok = False
    if not ok:  # the kind only: a value in a dead letter's detail is never scrubbed (a user id, an address)
        orjson.dumps(value)  # raises past orjson's depth bound (MAX_NESTING): that record is nested too deep
        return f"{path}: expected {_expected(t)}, got {_py_kind(value)}"
    return None


def _msgspec_type(t: pa.DataType | pa.Schema, name: str = "Record"):
    """The msgspec type that accepts what ``pyarrow.json`` reads as ``t``: every field
    optional (missing and null are both null), unknown fields ignored, integers within
    the column's range, numbers for floats, anything for map-typed fields."""
    if isinstance(t, pa.Schema) or pa.types.is_struct(t):
        fields = [(f.name, typing.Optional[_msgspec_type(f.type, f"{name}_{f.name}")], None) for f in t]
        return msgspec.defstruct(name, fields, gc=False)  # no cycles: skip GC tracking (~12% faster)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return str
    if pa.types.is_boolean(t):
        return bool
    if pa.types.is_integer(t):
        bits = t.bit_width
        if pa.types.is_unsigned_integer(t):
            return (
                typing.Annotated[int, msgspec.Meta(ge=0, le=min(2**bits - 1, 2**63 - 1))]
                if bits < 64
                else typing.Annotated[int, msgspec.Meta(ge=0)]
            )
        return typing.Annotated[int, msgspec.Meta(ge=-(2 ** (bits - 1)), le=2 ** (bits - 1) - 1)]
    if pa.types.is_floating(t):
        return float
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        # built at run time from the item type: list[item | None]
        return types.GenericAlias(list, (_msgspec_type(t.value_type, name + "_item") | None,))
    return typing.Any


class JsonCodec:
    """Decode JSON records of one signal into its wire columns.

    Consumes a :class:`RawBatch`; emits a :class:`Batch` whose table has the wire
    schema's columns (timestamps as ``timestamp[ms|us, UTC]``, maps as
    ``map<string,string>``) plus ``_i``. Rejects: empty payloads and tombstones, payloads
    over ``max_bytes`` (``size_violation``), bytes that are not UTF-8 JSON objects
    (``format_violation``), values of the wrong type and malformed timestamps
    (``schema_violation``). Unknown fields are ignored.
    """

    def __init__(self, signal: str, max_bytes: int = DEFAULT_MAX_BYTES):
        self.signal = signal
        self.max_bytes = max_bytes
        self.wire = arrow_schema(signal)
        self.map_fields = [f.name for f in self.wire if pa.types.is_map(f.type)]
        self.ts_fields = [f for f in self.wire if pa.types.is_timestamp(f.type)]
        read = pa.schema([pa.field(f.name, _lenient(f.type)) for f in self.wire if not pa.types.is_map(f.type)])
        self.read_schema = read
        self._float_fields = [f for f in read if _has_float(f.type)]
        self.parse_options = pj.ParseOptions(explicit_schema=read, unexpected_field_behavior="ignore")
        self._read_opts = pj.ReadOptions(use_threads=False, block_size=BLOCK_BYTES)
        self._read_opts_clean = pj.ReadOptions(use_threads=False, block_size=CLEAN_BLOCK_BYTES)
        # the read schema as msgspec types: one C-level pass over a dirty batch finds every
        # record that is not JSON or that pyarrow.json would refuse for a type
        self._typed = msgspec.json.Decoder(type=_msgspec_type(read, "Record"))
        # whether the last batch held a record pyarrow.json refused: the next batch is then
        # screened first instead of attempted whole (a steady 1% bad rate makes nearly
        # every batch dirty); one clean batch switches back to the optimistic attempt
        self._expect_dirty = False
        if self.map_fields:
            holder = msgspec.defstruct(
                "MapFields", [(m, typing.Optional[dict[str, typing.Any]], None) for m in self.map_fields]
            )
            self._map_decoder = msgspec.json.Decoder(type=holder)
        self.out_names = [f.name for f in self.wire]

    # -- public -------------------------------------------------------------------------

    def decode(self, raw: RawBatch) -> Batch:
        rejects = Rejects()
        payloads, good_idx = self._screen(raw.values, rejects)
        idx = np.asarray(good_idx, dtype=np.int64)
        tables: list[pa.Table] = []
        if payloads:
            self._parse(payloads, idx, tables, rejects)
        if tables:
            table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        else:
            table = self.read_schema.empty_table().append_column(INDEX, pa.array([], pa.int64()))
        batch = Batch(raw=raw, table=table, rejects=rejects)
        if self._float_fields and table.num_rows:
            self._reject_infinite(batch, payloads, idx)
        if self.map_fields:
            self._add_maps(batch, payloads, idx)
        self._convert_timestamps(batch)
        cols = [batch.table.column(n) for n in self.out_names] + [batch.table.column(INDEX)]
        batch.table = pa.Table.from_arrays(cols, names=self.out_names + [INDEX])
        return batch

    # -- internals ----------------------------------------------------------------------

    def _screen(self, values: list, rejects: Rejects) -> tuple[list[bytes], list[int] | range]:
        """Reject what is not worth parsing (tombstones, empty, oversized, not UTF-8) and
        make every record one line. A clean batch is checked with a few C-level passes
        over the whole batch; only a batch that fails them is screened record by record."""
        n = len(values)
        limit = self.max_bytes
        if n and None not in values:
            lens = list(map(len, values))
            sized = min(lens) > 0 and max(lens) <= limit
            joined = b"\n".join(values)
            lines = joined.count(b"\n") == n - 1
            no_cr = joined.count(b"\r") == 0
            ascii_ = joined.isascii()
            # every record one JSON object: starts with "{" and ends with "}" (so no record
            # starts with a byte order mark either)
            objects = all(map(bytes.startswith, values, repeat(b"{"))) and all(
                map(bytes.endswith, values, repeat(b"}"))
            )
            literals = b"NaN" in joined or b"Inf" in joined  # pyarrow.json reads NaN, Inf and Infinity
            if sized and lines and no_cr and objects and not literals and (ascii_ or _utf8(joined)):
                return values, range(n)
            # the records that need a closer look, one cheap pass per check the batch failed
            odd: set[int] = set()
            if not sized:
                odd.update(i for i, m in enumerate(lens) if m == 0 or m > limit)
            if not ascii_:
                odd.update(i for i, v in enumerate(values) if not v.isascii())
            if not lines:
                odd.update(i for i, v in enumerate(values) if b"\n" in v)
            if not no_cr:
                odd.update(i for i, v in enumerate(values) if b"\r" in v)
            if not objects:
                odd.update(i for i, v in enumerate(values) if v[:1] != b"{" or v[-1:] != b"}")
            if literals:
                odd.update(i for i, v in enumerate(values) if b"NaN" in v or b"Inf" in v)
        else:
            # the records that need a closer look; the others pass C-level checks
            odd = {
                i
                for i, v in enumerate(values)
                if not v
                or len(v) > limit
                or not v.isascii()
                or b"\n" in v
                or b"\r" in v
                or v[:1] != b"{"
                or v[-1:] != b"}"
                or b"NaN" in v
                or b"Inf" in v
            }
        if not odd:
            return values, range(n)
        dropped: set[int] = set()
        changed: dict[int, bytes] = {}
        for i in sorted(odd):
            v = values[i]
            if not v or v.isspace():
                rejects.add(i, "format_violation", "tombstone (null value)" if v is None else "empty payload")
                dropped.add(i)
                continue
            if len(v) > limit:
                rejects.add(i, "size_violation", f"payload of {len(v)} bytes exceeds the limit of {limit} bytes")
                dropped.add(i)
                continue
            try:
                v.decode("utf-8")
            except UnicodeDecodeError as e:
                rejects.add(
                    i,
                    "format_violation",
                    f"payload is not UTF-8: invalid byte 0x{v[e.start]:02x} at position {e.start}",
                )
                dropped.add(i)
                continue
            if v.startswith(BOM):
                rejects.add(i, "format_violation", BOM_DETAIL)
                dropped.add(i)
                continue
            problem = self._not_one_object(v)
            if problem is not None:
                rejects.add(i, *problem)
                dropped.add(i)
                continue
            if b"\n" in v or b"\r" in v or v[:1] != b"{" or v[-1:] != b"}":
                # newline-delimited parsing needs one line per record, each starting with "{"
                # and ending with "}": re-serialize compactly
                try:
                    changed[i] = self._readable(v) or orjson.dumps(orjson.loads(v))
                except Exception as e:  # JSONDecodeError, and huge ints or deep nesting on re-encoding
                    rejects.add(
                        i,
                        *(
                            ("format_violation", f"invalid JSON: {e}")
                            if isinstance(e, orjson.JSONDecodeError)
                            else _failure(e, "record")
                        ),
                    )
                    dropped.add(i)
        if not dropped and not changed:
            return values, range(n)
        good_idx = [i for i in range(n) if i not in dropped] if dropped else list(range(n))
        payloads = [changed.get(i, values[i]) for i in good_idx] if changed else [values[i] for i in good_idx]
        return payloads, good_idx

    def _not_one_object(self, v: bytes) -> tuple[str, str] | None:
        """Reason and detail when ``v`` (UTF-8, not blank) is not one JSON object:
        not JSON (including ``NaN`` / ``Inf`` / ``Infinity`` literals), another JSON value, or JSON
        nested too deep for the decoders; None when it is one object."""
        body = v.strip(b" \t\r\n")
        if body[:1] == b"{" and body[-1:] == b"}" and b"NaN" not in body and b"Inf" not in body:
            return None  # the parsers below judge its syntax
        try:
            value = msgspec.json.decode(body)
        except msgspec.DecodeError as e:
            return "format_violation", f"invalid JSON: {e}"
        except Exception as e:  # RecursionError, numbers out of range
            return _failure(e, "record")
        if not isinstance(value, dict):
            return "schema_violation", f"expected a JSON object, got {_py_kind(value)}"
        return None

    def _parse(self, payloads: list[bytes], idx: np.ndarray, out: list[pa.Table], rejects: Rejects) -> None:
        """Parse the batch in one pass when it is clean (not attempted when the previous
        batch was dirty: the screen below runs first then). Otherwise check each record's
        JSON syntax first (msgspec, without building objects), explain and reject the bad
        ones, and stream-parse the rest: once every record is exactly one JSON object,
        ``pyarrow.json``'s "in row N" is the record's position, so a type error rejects
        that record and parsing resumes right after it."""
        if not self._expect_dirty:
            # pyarrow.json skips blank lines and reads two rows from a line holding two
            # objects: with no blank record, a row count equal to the record count means
            # one row per record (else the checked path below sorts the records out)
            data = b"\n".join(payloads)
            if not _has_blank(payloads, data):
                first = len(out)
                got, err = self._stream(payloads, idx, 0, out, self._read_opts_clean, data)
                if err is None and got == len(payloads):
                    return
                del out[first:]
        bad_before = len(rejects.indices)
        keep = []
        decoder = self._typed
        for k, p in enumerate(payloads):
            try:
                decoder.decode(p)
            except msgspec.ValidationError:
                problem = self.type_problem(p)
                if problem is not None:
                    rejects.add(int(idx[k]), *problem)
                    continue
                # msgspec is stricter than the wire types here: let pyarrow.json decide
            except msgspec.DecodeError as e:
                rejects.add(int(idx[k]), "format_violation", "empty payload" if p.isspace() else f"invalid JSON: {e}")
                continue
            except Exception as e:  # RecursionError on absurd nesting: this record only
                rejects.add(int(idx[k]), *_failure(e, "record"))
                continue
            keep.append(k)
        payloads = [payloads[k] for k in keep]
        idx = idx[keep]
        self._expect_dirty = len(rejects.indices) > bad_before
        pos, n = 0, len(payloads)
        opts = self._read_opts_clean  # the records left are very likely all good: large blocks
        while pos < n:
            got, err = self._stream(payloads, idx, pos, out, opts)
            opts = self._read_opts
            if err is None:
                if pos + got != n:  # cannot happen for one-object records; never guess
                    raise RuntimeError(f"pyarrow.json returned {got} rows for {n - pos} records")
                return
            m = _ROW_RE.search(str(err))
            bad = pos + got + int(m.group(1)) if m else -1
            if pos + got <= bad < n:
                self._split(payloads, idx, pos + got, bad, out, rejects)  # rows of the failed block before the bad one
                part = self._readable(payloads[bad])
                if part is not None:  # parse again without the number it cannot hold (which is not read)
                    payloads[bad] = part
                    pos = bad
                    continue
                reason, detail = self.explain(payloads[bad], err)
                rejects.add(int(idx[bad]), reason, detail)
                pos = bad + 1
            else:
                self._split(payloads, idx, pos + got, n, out, rejects)
                return

    def _stream(
        self,
        payloads: list[bytes],
        idx: np.ndarray,
        pos: int,
        out: list[pa.Table],
        opts=None,
        joined: bytes | None = None,
    ) -> tuple[int, Exception | None]:
        """Stream-parse ``payloads[pos:]`` (``joined``: those already newline-joined)
        block by block into ``out``; return the rows parsed and the error that stopped
        it, if any."""
        data = pa.py_buffer(joined if joined is not None else b"\n".join(payloads[pos:]))
        got = 0
        try:
            # open_json parses the first block eagerly, so it too may raise
            reader = pj.open_json(
                pa.BufferReader(data), read_options=opts or self._read_opts, parse_options=self.parse_options
            )
            for rb in reader:
                if rb.num_rows:
                    rb.validate(full=True)  # pyarrow.json has built invalid arrays without an error
                    if pos + got + rb.num_rows > len(idx):
                        return got + rb.num_rows, None  # more rows than records: caller handles
                    out.append(self._chunk(rb, idx[pos + got : pos + got + rb.num_rows]))
                    got += rb.num_rows
        except Exception as e:  # ArrowInvalid, and others on odd input
            return got, e
        return got, None

    def _read(self, payloads: list[bytes]) -> pa.Table:
        data = b"\n".join(payloads)
        opts = pj.ReadOptions(use_threads=False, block_size=max(len(data) + 2, 1 << 16))
        t = pj.read_json(io.BytesIO(data), read_options=opts, parse_options=self.parse_options)
        t.validate(full=True)
        return t

    def _from_python(self, payload: bytes, index: int) -> pa.Table:
        """One conforming record built from its ``orjson`` parse (the reference path, for a
        record ``pyarrow.json`` refuses or reads into an invalid array)."""
        value = orjson.loads(self._readable(payload) or payload)
        t = pa.Table.from_pylist([{n: value.get(n) for n in self.read_schema.names}], schema=self.read_schema)
        t.validate(full=True)
        return t.append_column(INDEX, pa.array([index], pa.int64()))

    def _chunk(self, t, idx: np.ndarray) -> pa.Table:
        cols = [t.column(f.name) for f in self.read_schema] + [pa.array(idx, pa.int64())]
        return pa.Table.from_arrays(cols, names=self.read_schema.names + [INDEX])

    def _split(
        self, payloads: list[bytes], idx: np.ndarray, lo: int, hi: int, out: list[pa.Table], rejects: Rejects
    ) -> None:
        """Parse ``payloads[lo:hi]`` whole, or in halves around failures, explaining each
        record that fails alone."""
        stack = [(lo, hi)]
        while stack:
            a, b = stack.pop()
            if a >= b:
                continue
            try:
                t = self._read(payloads[a:b])
                if t.num_rows != b - a:
                    raise ValueError("a record holds more than one JSON value")
                out.append(self._chunk(t, idx[a:b]))
                continue
            except Exception as e:
                err = e
            if b - a == 1:
                problem = self.type_problem(payloads[a])
                if problem is None:
                    try:
                        out.append(self._from_python(payloads[a], int(idx[a])))
                        continue
                    except Exception as e:
                        err = e
                reason, detail = problem or ("format_violation", f"unparseable record: {_own(err)}")
                rejects.add(int(idx[a]), reason, detail)
                continue
            mid = (a + b) // 2
            stack.append((mid, b))
            stack.append((a, mid))

    def _add_maps(self, batch: Batch, payloads: list[bytes], idx: np.ndarray) -> None:
        """Decode map-typed fields (not expressible for ``pyarrow.json``) with msgspec,
        only reading those fields; a non-object value rejects its record."""
        pos_of = {int(i): k for k, i in enumerate(idx)}
        rows = batch.table.column(INDEX).to_numpy()
        # per map field: offsets, keys, values, null-mask
        columns: dict[str, tuple[list[int], list[str], list[str | None], list[bool]]] = {
            m: ([0], [], [], []) for m in self.map_fields
        }
        bad = np.zeros(len(rows), dtype=bool)
        details: list[str | None] = [None] * len(rows)
        reasons = ["schema_violation"] * len(rows)
        decode = self._map_decoder.decode
        fields = [(m, *columns[m]) for m in self.map_fields]
        for r, i in enumerate(rows):
            payload = payloads[pos_of[int(i)]]
            try:
                rec = decode(payload)
                for m, offsets, keys, vals, nulls in fields:
                    value = getattr(rec, m)
                    if value is None:
                        nulls.append(True)
                    else:
                        nulls.append(False)
                        for k, v in value.items():
                            keys.append(k)
                            vals.append(v if v is None or v.__class__ is str else _as_text(v, m, k))
                    offsets.append(len(keys))
                continue
            except msgspec.ValidationError as e:
                details[r] = (
                    f"{str(e).split('`$.', 1)[-1].rstrip('`')}: expected an object of string keys"
                    if "$." in str(e)
                    else str(e)
                )
            except _Bad as e:
                reasons[r], details[r] = e.reason, e.detail
            except Exception as e:  # DecodeError, RecursionError on absurd nesting: this record only
                reasons[r], details[r] = (
                    ("format_violation", f"invalid JSON: {e}")
                    if isinstance(e, msgspec.DecodeError) and not _too_deep(str(e))
                    else _failure(e, "record")
                )
            bad[r] = True
            for m, offsets, keys, vals, nulls in fields:  # withdraw what this record added: null maps
                del offsets[r + 1 :], nulls[r:]
                del keys[offsets[r] :], vals[offsets[r] :]
                nulls.append(True)
                offsets.append(offsets[r])
        t = batch.table
        for m, (offsets, keys, vals, nulls) in columns.items():
            arr = pa.MapArray.from_arrays(
                pa.array(offsets, pa.int32()),
                pa.array(keys, pa.string()),
                pa.array(vals, pa.string()),
                mask=pa.array(nulls, pa.bool_()),
            )
            t = t.append_column(m, arr)
        batch.table = t
        if bad.any():
            batch.defer_drops()  # one reject_mask per reason, all aligned with these rows
            for reason in sorted(set(reasons[r] for r in np.flatnonzero(bad))):
                batch.reject_mask(bad & np.asarray([x == reason for x in reasons]), reason, details)
            batch.drop_rejected()

    def _readable(self, payload: bytes) -> bytes | None:
        """For a record that orjson refuses for a number beyond a double's range (``1e400``)
        in a part the wire schema does not read: that record without what the schema does
        not read, as compact JSON (one line, every number finite). None for any other
        record, and when such a number is in a part it reads (its verdict is then orjson's,
        a ``format_violation``). So the record's verdict does not depend on which parser
        met it first, nor on its neighbours."""
        if b"e" not in payload and b"E" not in payload and len(payload) < 310:
            return None  # no exponent and too short for 309 digits: every number fits
        try:
            orjson.loads(payload)
            return None
        except orjson.JSONDecodeError as e:
            if _INFINITY not in str(e):
                return None
        try:
            value = json.loads(payload, parse_constant=_no_constant)
            if not isinstance(value, dict):
                return None
            part = _schema_part(value, self.wire)
            return orjson.dumps(part) if _all_finite(part) else None
        except Exception:  # not JSON to the standard library either, nesting, surrogates, huge integers
            return None

    def _reject_infinite(self, batch: Batch, payloads: list[bytes], idx: np.ndarray) -> None:
        """Reject the rows where ``pyarrow.json`` read a number beyond a double's range as
        inf (``2e308``; it refuses ``1e400``), with the verdict orjson gives the record, as
        when that record is explained alone."""
        t = batch.table
        cols = [(t.column(f.name), f.type) for f in self._float_fields]
        if not any(pc.any(pc.is_inf(x)).as_py() for col, ft in cols for x in _float_leaves(col, ft)):
            return
        mask = np.zeros(t.num_rows, dtype=bool)
        for f in self._float_fields:
            col = t.column(f.name)
            mask |= np.concatenate([_infinite_rows(c, f.type) for c in col.chunks]) if col.num_chunks else False
        if not mask.any():
            return
        pos_of = {int(i): k for k, i in enumerate(idx)}
        rows = t.column(INDEX).to_numpy()
        verdicts: dict[int, tuple[str, str]] = {}
        for r in np.flatnonzero(mask):
            payload = payloads[pos_of[int(rows[r])]]
            verdicts[int(r)] = self.type_problem(payload) or ("format_violation", "a number beyond a double's range")
        details = [verdicts[r][1] if r in verdicts else "" for r in range(t.num_rows)]
        for reason in sorted({v[0] for v in verdicts.values()}):
            batch.reject_mask(
                np.array([r in verdicts and verdicts[r][0] == reason for r in range(t.num_rows)]), reason, details
            )

    def explain(self, payload: bytes, err: Exception | None) -> tuple[str, str]:
        """Reason code and detail for one record that ``pyarrow.json`` refused."""
        return self.type_problem(payload) or ("format_violation", f"unparseable record: {_own(err)}")

    def type_problem(self, payload: bytes) -> tuple[str, str] | None:
        """Reason code and detail if ``payload`` is not JSON, not an object, or holds a
        value of the wrong type for the wire schema; None if it conforms."""
        try:
            value = orjson.loads(payload)
        except orjson.JSONDecodeError as e:
            part = self._readable(payload) if _INFINITY in str(e) else None
            if part is not None:
                return self.type_problem(part)
            if _too_deep(str(e)):
                return "format_violation", f"record: JSON nested too deep (more than {MAX_NESTING} levels)"
            return "format_violation", f"invalid JSON: {e}"
        if not isinstance(value, dict):
            return "schema_violation", f"expected a JSON object, got {_py_kind(value)}"
        for f in self.wire:
            try:
                problem = _type_error(value.get(f.name), f.type, f.name)
            except Exception as e:  # RecursionError, orjson's depth bound on showing the value
                return _failure(e, f.name)
            if problem:
                return "schema_violation", problem
        return None

    def _convert_timestamps(self, batch: Batch) -> None:
        """Turn ISO-8601 strings into timestamps; a bad one rejects its record."""
        for f in self.ts_fields:
            col = batch.table.column(f.name)
            bad = pc.and_(pc.is_valid(col), pc.invert(pc.match_substring_regex(col, ISO_TS)))
            if pc.any(bad).as_py():
                # the detail never shows the value (a dead letter's detail is not scrubbed)
                batch.reject_mask(bad, "schema_violation", f"{f.name}: not an ISO-8601 timestamp with a zone")
                col = batch.table.column(f.name)
            try:
                conv = pc.cast(pc.cast(col, pa.timestamp("ns", tz="UTC")), f.type, safe=False)
            except pa.ArrowInvalid:
                vals = col.to_pylist()
                conv_list, bad_mask = [], []
                for v in vals:
                    try:
                        # the scalar only: a Python datetime cannot hold nanoseconds (and raised)
                        conv_list.append(None if v is None else pc.cast(pa.scalar(v), pa.timestamp("ns", tz="UTC")))
                        bad_mask.append(False)
                    except pa.ArrowInvalid:
                        conv_list.append(None)
                        bad_mask.append(True)
                batch.reject_mask(np.array(bad_mask), "schema_violation", f"{f.name}: invalid date or time")
                col = batch.table.column(f.name)
                conv = pc.cast(pc.cast(col, pa.timestamp("ns", tz="UTC")), f.type, safe=False)
            i = batch.table.column_names.index(f.name)
            batch.table = batch.table.set_column(i, f.name, conv)
