"""The compiled decoders as the codecs call them (``NativeJsonCodec.decode`` on product
events, ``NativeOtlpCodec.decode`` on OTLP protobuf spans): the Rust call and the hand-over
of its columns to a pyarrow table, CPU time per record (per span for OTLP). Meant to compare
two trees with their builds in alternating processes: ``--root`` imports the codecs of
another checkout (put its build first on PYTHONPATH, or none for the venv's).

    python bench/native_handover.py [--root DIR] [--records 40000] [--rounds 15]

Also the hand-over alone (``... hand-over``): CPU µs per batch of turning the extension's
output into the table, the Rust call excluded; for a tree before the Arrow C data
interface, its buffer-protocol hand-over (``pa.py_buffer`` and ``pa.Array.from_buffers``
per buffer, as its codecs did it).

Prints one JSON line: the build's path, and per variant the best and median µs (CPU)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any


def _handover(native_json: Any, out: tuple, schema: Any, otlp: bool) -> None:
    """The decode's ``out`` as a table of ``schema``, as the tree's codecs make it."""
    if hasattr(native_json, "import_batch"):  # the Arrow C data interface
        native_json.import_batch(out[-1], schema)
        return
    import pyarrow as pa  # the buffer protocol: one py_buffer per buffer, from_buffers per array

    def index(buf: Any, t: Any, width: int) -> Any:
        return pa.Array.from_buffers(t, len(buf) // width, [None, pa.py_buffer(buf)])

    if otlp:
        _v, index_buf, items_buf, cols = out
        extra = [index(index_buf, pa.int64(), 8), index(items_buf, pa.int32(), 4)]
    else:
        _v, rows_buf, _own, cols = out
        extra = [index(rows_buf, pa.int64(), 8)]
    arrays = [native_json._array(f.type, c) for f, c in zip(schema, cols)]
    pa.Table.from_arrays(arrays + extra, schema=schema)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=str(Path(__file__).resolve().parent.parent), help="the checkout to import")
    ap.add_argument("--records", type=int, default=40_000)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--otlp-items", type=int, default=50)
    args = ap.parse_args()
    sys.path.insert(0, args.root)
    import obsflow_native

    from bench.decoder import _batches, _otlp_batches
    from schemas.codecs.native_json import NativeJsonCodec, NativeOtlpCodec

    events = _batches("event", args.records, 0.0)
    spans = _otlp_batches(args.records, args.otlp_items)
    variants: dict[str, tuple[Any, list]] = {
        "event json": (NativeJsonCodec("event"), events),
        "span otlp": (NativeOtlpCodec("span"), spans),
    }
    items = {name: sum(codec.decode(b).table.num_rows for b in batches) for name, (codec, batches) in variants.items()}
    from schemas.codecs import native_json

    native = native_json._native
    calls = {
        "event json hand-over": (
            lambda v: native.decode_json_batch(v, 65536, variants["event json"][0].fields),
            events,
        ),
        "span otlp hand-over": (lambda v: native.decode_otlp_spans(v, 1 << 20), spans),
    }
    per: dict[str, list[float]] = {name: [] for name in [*variants, *calls]}
    for _round in range(args.rounds):
        for name, (codec, batches) in variants.items():  # interleaved
            t0 = time.process_time()
            for b in batches:
                codec.decode(b)
            per[name].append((time.process_time() - t0) / items[name] * 1e6)
        for (name, (call, batches)), codec in zip(calls.items(), [c for c, _ in variants.values()]):
            spent = 0.0
            for b in batches:
                out = call(list(b.values))
                t0 = time.process_time()
                _handover(native_json, out, codec.schema, otlp="span" in name)
                spent += time.process_time() - t0
            per[name].append(spent / len(batches) * 1e6)
    result: dict[str, object] = {"build": obsflow_native.__file__, "items": items}
    for name, us in per.items():
        result[name] = {"best_us": round(min(us), 4), "median_us": round(statistics.median(us), 4)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
