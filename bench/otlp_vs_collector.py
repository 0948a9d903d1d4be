"""OTLP spans decoded and tail-sampled: obsflow (the compiled decoder, and the Python decoder
as a same-run baseline, each followed by :class:`TailSampler`) against the OpenTelemetry
Collector contrib's protobuf decoding plus ``tailsamplingprocessor`` (the Go harness of
``infra/otelcol``, v0.161.0). CPU time per span, every side in its own process pinned to
one core (``taskset -c CPU``), rounds interleaved.

    .venv/bin/python bench/otlp_vs_collector.py [--traces 20000] [--rounds 5] [--cpu 1]

Both sides get the same serialized ``ExportTraceServiceRequest`` messages
(:func:`bench.tail_sampler.make_messages`: 8 spans a trace, all traces in flight) and
decide every trace at the end (the Collector at shutdown, its ``decision_wait`` longer
than the run; obsflow at ``flush_all``), with the same policies. The Collector's figure is
the harness's CPU time (user + system, from ``wait4``) minus that of a run with no input
in the same round (process start, configuration, shutdown); obsflow's is
``time.process_time()`` around decode + add + decide, in a fresh process. The kept trace
counts are printed for both (they must agree: these policies are deterministic).
Prints a table, then one JSON line."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: deterministic policies only (no rate limiting, whose decisions depend on the clock), so
#: both sides must keep the same traces
CONFIG = {
    "decision_wait": "600s",
    "num_traces": 1_000_000,
    "policies": [
        {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
        {"name": "slow", "type": "latency", "latency": {"threshold_ms": 50}},
        {"name": "tier-b", "type": "string_attribute", "string_attribute": {"key": "tier", "values": ["b"]}},
        {"name": "one-percent", "type": "probabilistic", "probabilistic": {"sampling_percentage": 1}},
    ],
}


def read_frames(path: str) -> list[bytes]:
    """The messages of a harness input file (4-byte big-endian length, then the bytes)."""
    data = Path(path).read_bytes()
    out, i = [], 0
    while i < len(data):
        n = int.from_bytes(data[i : i + 4], "big")
        out.append(data[i + 4 : i + 4 + n])
        i += 4 + n
    return out


def child(decoder: str, frames_path: str, batch_msgs: int) -> None:
    """One obsflow round in this (pinned) process: decode the messages ``batch_msgs`` at a
    time with the ``otlp_proto`` codec, add each batch to a TailSampler, decide all; print
    the CPU seconds, spans and kept traces as JSON."""
    from schemas.codecs import codec_for
    from core.batch import RawBatch
    from transforms.tail_sampling import TailSampler

    msgs = read_frames(frames_path)
    codec = codec_for("otlp_proto", "span", 1 << 20, {"decoder": decoder})
    want = "NativeOtlpCodec" if decoder == "native" else "OtlpCodec"
    if type(codec).__name__ != want:
        raise SystemExit(f"asked for the {decoder} decoder, got {type(codec).__name__} (is obsflow_native built?)")
    raws = [
        RawBatch(
            "bench",
            "otlp_spans",
            0,
            [*msgs[i : i + batch_msgs]],
            list(range(i, i + len(msgs[i : i + batch_msgs]))),
            [0] * len(msgs[i : i + batch_msgs]),
        )
        for i in range(0, len(msgs), batch_msgs)
    ]
    ts = TailSampler(CONFIG)
    spans = 0
    t0 = time.process_time()
    for raw in raws:
        b = codec.decode(raw)
        spans += b.table.num_rows
        ts.add(b.table, 0)
    d = ts.flush_all(0)
    cpu = time.process_time() - t0
    kept = len(set(d.spans.column("trace_id").to_pylist()))
    print(json.dumps({"cpu_s": cpu, "spans": spans, "kept_traces": kept}))


def run_obsflow(cpu: int, decoder: str, frames_path: str, batch_msgs: int) -> dict:
    out = subprocess.run(
        [
            "taskset",
            "-c",
            str(cpu),
            sys.executable,
            __file__,
            "--child",
            decoder,
            "--frames",
            frames_path,
            "--batch-msgs",
            str(batch_msgs),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"obsflow round ({decoder}) failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_collector(cpu: int, binary: str, config_path: str, frames_path: str) -> tuple[float, int]:
    """(CPU seconds of the whole harness process, kept traces)."""
    with open(frames_path, "rb") as fin, tempfile.TemporaryFile("w+") as fout:
        p = subprocess.Popen(
            ["taskset", "-c", str(cpu), binary, "-config", config_path], stdin=fin, stdout=fout, stderr=subprocess.PIPE
        )
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        err = p.stderr.read().decode(errors="replace") if p.stderr else ""
        if p.returncode != 0:
            raise SystemExit(f"the Collector harness failed (exit {p.returncode}): {err[-2000:]}")
        fout.seek(0)
        kept = sum(1 for line in fout if line.strip())
    return ru.ru_utime + ru.ru_stime, kept


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--traces", type=int, default=20_000)
    ap.add_argument("--spans-per-trace", type=int, default=8)
    ap.add_argument("--per-msg", type=int, default=100, help="spans per OTLP message")
    ap.add_argument("--batch-msgs", type=int, default=50, help="messages per decoded batch on the obsflow side")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cpu", type=int, default=1, help="the core every side is pinned to")
    ap.add_argument("--no-python", action="store_true", help="skip the Python decoder baseline")
    ap.add_argument("--child", choices=["native", "python"], help=argparse.SUPPRESS)
    ap.add_argument("--frames", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.frames, args.batch_msgs)
        return

    from bench.tail_sampler import make_messages
    from infra.otelcol import COLLECTOR_VERSION, build, frames

    binary = str(build())
    msgs, n_spans = make_messages(args.traces, args.spans_per_trace, args.per_msg)
    with tempfile.TemporaryDirectory() as tmp:
        frames_path, empty_path, config_path = (os.path.join(tmp, n) for n in ("frames", "empty", "config.json"))
        Path(frames_path).write_bytes(frames(msgs))
        Path(empty_path).write_bytes(b"")
        Path(config_path).write_text(json.dumps(CONFIG))
        sides = ["collector", "native"] + ([] if args.no_python else ["python"])
        per_span: dict[str, list[float]] = {s: [] for s in sides}
        kept: dict[str, set[int]] = {s: set() for s in sides}
        startup: list[float] = []
        for r in range(args.rounds):
            order = sides if r % 2 == 0 else sides[::-1]
            for side in order:
                if side == "collector":
                    idle, _ = run_collector(args.cpu, binary, config_path, empty_path)
                    total, k = run_collector(args.cpu, binary, config_path, frames_path)
                    startup.append(idle)
                    per_span[side].append((total - idle) / n_spans * 1e6)
                else:
                    res = run_obsflow(args.cpu, side, frames_path, args.batch_msgs)
                    if res["spans"] != n_spans:
                        raise SystemExit(f"obsflow ({side}) decoded {res['spans']} spans of {n_spans}")
                    k = res["kept_traces"]
                    per_span[side].append(res["cpu_s"] / n_spans * 1e6)
                kept[side].add(k)
            print(f"round {r + 1}: " + ", ".join(f"{s} {per_span[s][-1]:.2f} µs/span" for s in sides), file=sys.stderr)

    med = {s: statistics.median(v) for s, v in per_span.items()}
    best = {s: min(v) for s, v in per_span.items()}
    load = os.getloadavg()[0]
    print(
        f"{n_spans:,} spans in {args.traces:,} traces, {len(msgs)} OTLP messages of {args.per_msg} spans; "
        f"{args.rounds} interleaved rounds, each side pinned to CPU {args.cpu}; 1-minute load {load:.1f}"
    )
    print(f"{'side':<52} {'median µs/span':>15} {'best':>8} {'kept traces':>12}")
    names = {
        "collector": f"Collector {COLLECTOR_VERSION}: pdata decode + tailsamplingprocessor",
        "native": "obsflow: compiled decoder + TailSampler",
        "python": "obsflow: Python decoder + TailSampler (baseline)",
    }
    for s in sides:
        print(f"{names[s]:<52} {med[s]:>15.2f} {best[s]:>8.2f} {','.join(str(k) for k in sorted(kept[s])):>12}")
    print(
        f"Collector start + shutdown with no input (subtracted): median {statistics.median(startup) * 1000:.0f} ms CPU"
    )
    ratio = med["collector"] / med["native"]
    verdict = f"{ratio:.2f}x less" if ratio >= 1 else f"{1 / ratio:.2f}x more"
    print(f"obsflow with the compiled decoder uses {verdict} CPU per span than the Collector (target: 1.5x less)")
    print(
        json.dumps(
            {
                "bench": "otlp_vs_collector",
                "spans": n_spans,
                "rounds": args.rounds,
                "load1": round(load, 1),
                "median_us_per_span": {s: round(v, 3) for s, v in med.items()},
                "best_us_per_span": {s: round(v, 3) for s, v in best.items()},
                "kept_traces": {s: sorted(v) for s, v in kept.items()},
                "collector_idle_cpu_ms": round(statistics.median(startup) * 1000, 1),
                "collector_over_native": round(ratio, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
