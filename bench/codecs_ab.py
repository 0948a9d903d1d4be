"""A/B of the JSON and OTLP codecs against a baseline commit, in one process: the
baseline's codec modules are loaded from ``git archive <baseline>`` and both decode the
same clean batches, alternating batch by batch; CPU time (``time.process_time``), best
of ``--repeat`` (the machine may be shared: best-of, not mean).

    python bench/codecs_ab.py --baseline 149b424 [--repeat 40]
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from schemas.codecs.json_codec import JsonCodec  # noqa: E402
from schemas.codecs.otlp_codec import OtlpCodec  # noqa: E402
from sources.generator import partition_stream  # noqa: E402
from tests.fuzz.corpus import seeds  # noqa: E402
from transforms.batch import RawBatch  # noqa: E402


def baseline_modules(rev: str, where: Path):
    data = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "schemas/codecs"], capture_output=True, check=True
    ).stdout
    tarfile.open(fileobj=io.BytesIO(data)).extractall(where)
    out = []
    for name in ("json_codec", "otlp_codec"):
        spec = importlib.util.spec_from_file_location(f"baseline_{name}", where / "schemas" / "codecs" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        out.append(mod)
    return out


def _batch_message(signal: str, items: int) -> bytes:
    """One OTLP message of ``items`` spans / log records (as the Collector batches them)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    one = [s.value for s in seeds(signal, "otlp_proto", 60)]
    mtype = ExportTraceServiceRequest if signal == "span" else ExportLogsServiceRequest
    msg = mtype.FromString(one[0])
    scope = (
        msg.resource_spans[0].scope_spans[0].spans
        if signal == "span"
        else msg.resource_logs[0].scope_logs[0].log_records
    )
    k = 1
    while len(scope) < items:
        other = mtype.FromString(one[k % len(one)])
        scope.extend(
            other.resource_spans[0].scope_spans[0].spans
            if signal == "span"
            else other.resource_logs[0].scope_logs[0].log_records
        )
        k += 1
    del scope[items:]
    return msg.SerializeToString()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", required=True)
    ap.add_argument("--repeat", type=int, default=40)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bj, bo = baseline_modules(args.baseline, Path(tmp))
        cases: list[tuple[str, list[bytes | None], Any, Any]] = []
        for signal in ("event", "log", "span", "metric"):
            vals = [
                g.value for g in partition_stream(signal, signal, 0, 5000, start_ms=1_763_000_000_000, bad_fraction=0.0)
            ]
            cases.append((f"json {signal}, 5,000 records", vals, bj.JsonCodec(signal, 65536), JsonCodec(signal, 65536)))
        for signal in ("span", "log"):
            messages: list[bytes | None] = [*[s.value for s in seeds(signal, "otlp_proto", 60)] * 20]
            cases.append(
                (
                    f"otlp_proto {signal}, {len(messages):,} messages of 1-4 items",
                    messages,
                    bo.OtlpCodec(signal, 1 << 20),
                    OtlpCodec(signal, 1 << 20),
                )
            )
            big = _batch_message(signal, 200)
            cases.append(
                (
                    f"otlp_proto {signal}, 20 messages of 200 items",
                    [big] * 20,
                    bo.OtlpCodec(signal, 1 << 20),
                    OtlpCodec(signal, 1 << 20),
                )
            )
        for label, vals, base, new in cases:
            raw = RawBatch("s", "s", 0, vals, list(range(len(vals))), [0] * len(vals))
            best = {"baseline": 1e9, "this": 1e9}
            for _ in range(args.repeat):
                for k, c in (("baseline", base), ("this", new)):
                    t = time.process_time()
                    c.decode(raw)
                    best[k] = min(best[k], time.process_time() - t)
            print(
                f"{label}: baseline {len(vals) / best['baseline']:,.0f}/s, this tree {len(vals) / best['this']:,.0f}/s "
                f"({best['this'] / best['baseline']:.2f}x the CPU time)"
            )


if __name__ == "__main__":
    main()
