"""The compiled JSON decoder's Rust call alone (``obsflow_native.decode_json_batch``), CPU
time per record, over the generator's product events (1% malformed by default) in raw
batches of 5,000: no pyarrow assembly, no reference codec. Meant to compare two builds of
the extension in alternating processes (put a build first on PYTHONPATH) and to run
under callgrind (``--rounds 1``).

    python bench/native_json_call.py [--signal event] [--records 20000] [--rounds 20] [--bad 0.01]

Prints one JSON line: the build's path, the best and median µs a record (CPU)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--signal", default="event")
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--bad", type=float, default=0.01)
    args = ap.parse_args()
    import obsflow_native

    from bench.decoder import _batches
    from schemas.codecs.native_json import NativeJsonCodec

    codec = NativeJsonCodec(args.signal)
    values = [list(b.values) for b in _batches(args.signal, args.records, args.bad)]
    per: list[float] = []
    for _round in range(args.rounds):
        t0 = time.process_time()
        for v in values:
            obsflow_native.decode_json_batch(v, codec.max_bytes, codec.fields)
        per.append((time.process_time() - t0) / args.records * 1e6)
    print(
        json.dumps(
            {
                "build": obsflow_native.__file__,
                "best_us": round(min(per), 4),
                "median_us": round(statistics.median(per), 4),
            }
        )
    )


if __name__ == "__main__":
    main()
