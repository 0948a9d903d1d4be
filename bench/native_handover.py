"""The compiled decoders as the codecs call them (``NativeJsonCodec.decode`` on product
events, ``NativeOtlpCodec.decode`` on OTLP protobuf spans): the Rust call and the hand-over
of its columns to a pyarrow table, CPU time per record (per span for OTLP). Meant to compare
two trees with their builds in alternating processes: ``--root`` imports the codecs of
another checkout (put its build first on PYTHONPATH, or none for the venv's).

    python bench/native_handover.py [--root DIR] [--records 40000] [--rounds 15]

Prints one JSON line: the build's path, and per variant the best and median µs (CPU)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


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
    variants = {
        "event json": (NativeJsonCodec("event"), events),
        "span otlp": (NativeOtlpCodec("span"), spans),
    }
    items = {name: sum(codec.decode(b).table.num_rows for b in batches) for name, (codec, batches) in variants.items()}
    per: dict[str, list[float]] = {name: [] for name in variants}
    for _round in range(args.rounds):
        for name, (codec, batches) in variants.items():  # interleaved
            t0 = time.process_time()
            for b in batches:
                codec.decode(b)
            per[name].append((time.process_time() - t0) / items[name] * 1e6)
    out: dict[str, object] = {"build": obsflow_native.__file__, "items": items}
    for name, us in per.items():
        out[name] = {"best_us": round(min(us), 4), "median_us": round(statistics.median(us), 4)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
