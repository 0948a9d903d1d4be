"""The compiled JSON decoder (native/) against the Python reference and orjson, in one
process on the same replayed batches, rounds interleaved (each round runs every variant
once, in turn); the best round of each is reported (the machine may be shared).

Variants, on product events (the generator's; ``--bad`` of them malformed, 1% default):
- ``orjson``           baseline: ``orjson.loads`` of every record, nothing else;
- ``decode python``    the Python ``JsonCodec`` alone;
- ``decode native``    the compiled decoder alone (its deferred records through the reference);
- ``path python``      decode → validate → scrub → enrich → shape (``PipelineGraph.process``),
                       Python decoder (``OBSFLOW_DECODER=python``);
- ``path native``      the same with the compiled decoder and the ``native`` hot path after
                       decoding (``transforms.scrub``: compiled prefilter, caches); ``path
                       native cold``: its scrub caches emptied before each round. The Python
                       variant runs the whole reference (``OBSFLOW_DECODER=python`` also
                       picks the reference scrubbing).
                       Both include the ``event_id`` dedupe (on by default); ``path python
                       no dedupe`` / ``path native no dedupe``: the same with it off (the
                       issue's decode → validate → scrub → enrich, then shape).
Signals other than events are measured for decode only (``--signals``), and OTLP protobuf
spans, log records and metric data points (``span otlp python`` / ``span otlp native``,
likewise ``log otlp`` and ``metric otlp``:
the generator's items in messages of ``--otlp-items``, as the Collector's Kafka exporter
batches them), figures per item; and the same messages in OTLP/JSON (``span otlp_json
python`` / ``span otlp_json native``, likewise logs and metrics). ``--otlp-only``: the
OTLP variants alone.

``--gc``: every variant is built as without it (its data alive: the heap the collector
walks), but only ``event orjson`` and ``event path python`` / ``event path native`` are
timed, each under the GC setting of the run processes (``gc run``:
``process.gc_young_threshold``'s default through :func:`core.gc_tuning.tune_gc`, what is
alive frozen) and under Python's defaults (``gc python``: nothing frozen, thresholds 700,
10, 10), alternating in this process; the setting is made before each timed call, off the
clock (the run setting's collection and freeze as a run makes them once; Python's defaults
with no collection out of turn, as a process on them runs). ``--signals event`` builds fewer variants: a
smaller heap.

    python bench/decoder.py [--records 50000] [--rounds 5] [--bad 0.01] [--gc]

The last line of the output is one JSON object with every figure."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, cast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OBSFLOW_PSEUDONYM_KEY", "benchmark-key-0123456789")

START_MS = 1_763_000_000_000


def _batches(signal: str, records: int, bad: float, size: int = 5000):
    from sources.generator import partition_stream
    from transforms.batch import RawBatch

    values = [g.value for g in partition_stream(signal, "bench", 0, records, start_ms=START_MS, bad_fraction=bad)]
    return [
        RawBatch(
            "events",
            "bench",
            0,
            values[k : k + size],
            list(range(k, k + len(values[k : k + size]))),
            [START_MS] * len(values[k : k + size]),
        )
        for k in range(0, len(values), size)
    ]


def _avro_batches(signal: str, records: int, bad: float, size: int = 5000):
    """The generator's ``signal`` records in the Confluent Avro wire format, a ``bad``
    fraction of them replaced by Avro mutants of the fuzz corpus (seeded)."""
    import random

    from schemas.codecs.avro_codec import encode_confluent
    from sources.generator import partition_stream
    from tests.fuzz.corpus import _wire_rows, mutate
    from transforms.batch import RawBatch

    good = [g.value for g in partition_stream(signal, "bench", 0, records, start_ms=START_MS, bad_fraction=0.0)]
    # the mutants may be tombstones (None): the list holds what a raw batch holds
    values: list[Any] = [encode_confluent(signal, r) for r in _wire_rows(signal, cast(list[bytes], good))]
    rng = random.Random(f"bench-avro/{signal}")
    for k in range(len(values)):
        if rng.random() < bad:
            values[k] = mutate(values[k], values[(k + 1) % len(values)], signal, "avro", rng)
    return [
        RawBatch("events", "bench", 0, [*values[k : k + size]], list(range(k, k + len(values[k : k + size]))), [])
        for k in range(0, len(values), size)
    ]


def _otlp_batches(spans: int, per_message: int, size: int = 100, signal: str = "span", encoding: str = "otlp_proto"):
    """The generator's spans (or log records, or metric samples: one data point a metric)
    re-encoded as OTLP protobuf messages of ``per_message`` items (``encoding="otlp_json"``:
    the same messages in OTLP/JSON as the Collector writes it: lowerCamelCase, hex ids,
    int64 as strings, enums as integers)."""
    import orjson
    from google.protobuf import json_format

    from schemas.codecs.otlp_codec import to_otlp_json

    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
    )
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from tests.fuzz.corpus import seeds
    from transforms.batch import RawBatch

    mtypes: dict[str, Any] = {
        "span": ExportTraceServiceRequest,
        "log": ExportLogsServiceRequest,
        "metric": ExportMetricsServiceRequest,
    }
    mtype = mtypes[signal]

    def items(m):
        if signal == "metric":  # the generator's samples: one data point a metric
            return m.resource_metrics[0].scope_metrics[0].metrics
        return (
            m.resource_spans[0].scope_spans[0].spans
            if signal == "span"
            else m.resource_logs[0].scope_logs[0].log_records
        )

    one = [mtype.FromString(s.value) for s in seeds(signal, "otlp_proto", max(40, spans // 4))]
    values: list[bytes] = []
    k = 0
    while len(values) * per_message < spans:
        msg = mtype()
        msg.CopyFrom(one[k % len(one)])
        scope = items(msg)
        while len(scope) < per_message:
            k += 1
            scope.extend(items(one[k % len(one)]))
        del scope[per_message:]
        if encoding == "otlp_proto":
            values.append(msg.SerializeToString())
        elif signal == "metric":  # no ids outside exemplars: json_format's mapping as it is
            values.append(orjson.dumps(json_format.MessageToDict(msg, use_integers_for_enums=True)))
        else:
            values.append(to_otlp_json(msg))
        k += 1
    return [
        RawBatch(
            "spans",
            "bench",
            0,
            [*values[j : j + size]],
            list(range(j, j + len(values[j : j + size]))),
            [START_MS] * len(values[j : j + size]),
        )
        for j in range(0, len(values), size)
    ]


def _graph(decoder: str, dedupe: bool = True):
    import yaml

    from pipelines import DEFAULT_SPEC
    from core.stats import RunStats
    from pipelines.graph import PipelineGraph
    from pipelines.loader import parse_spec

    d = yaml.safe_load(DEFAULT_SPEC.read_text())
    d["storage"]["catalog"]["warehouse"] = "/nonexistent/bench"  # never opened: only the flow runs
    d["sources"] = [s for s in d["sources"] if s["name"] == "events"]
    d["flows"] = [f for f in d["flows"] if f["source"] == "events"]
    d.pop("alerts", None)
    for f in d["flows"]:
        f["steps"] = [st for st in f["steps"] if st["kind"] in ("validate", "scrub", "enrich")]
        if not dedupe:  # the event dedupe is on by default: off, the decode → validate → scrub → enrich
            f["steps"].append({"kind": "dedupe", "enabled": False})
    os.environ["OBSFLOW_DECODER"] = decoder
    try:
        return PipelineGraph(parse_spec(d), counters=RunStats())
    finally:
        del os.environ["OBSFLOW_DECODER"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--bad", type=float, default=0.01)
    ap.add_argument("--signals", default="event,log,span,metric")
    ap.add_argument("--otlp-items", type=int, default=50)
    ap.add_argument("--otlp-only", action="store_true", help="only the OTLP variants (protobuf and OTLP/JSON)")
    ap.add_argument("--avro-only", action="store_true", help="only the Avro and JSON decoders and orjson, per signal")
    ap.add_argument("--gc", action="store_true", help="the event path under the runs' GC setting against Python's")
    args = ap.parse_args()

    import orjson

    from schemas.codecs.avro_codec import AvroCodec
    from schemas.codecs.json_codec import JsonCodec
    from schemas.codecs.native_avro import NativeAvroCodec
    from schemas.codecs.native_json import NativeJsonCodec

    variants: dict[str, tuple] = {}
    events = _batches("event", args.records, args.bad)
    clean = _batches("event", args.records, 0.0)

    def orjson_all(batches) -> int:
        bad = 0
        for b in batches:
            for v in b.values:
                try:
                    orjson.loads(v)
                except (orjson.JSONDecodeError, TypeError):  # malformed, or None (a tombstone)
                    bad += 1
        return bad

    variants["event orjson"] = (lambda: orjson_all(events), args.records)
    for signal in [] if args.otlp_only else args.signals.split(","):
        batches = events if signal == "event" else _batches(signal, args.records, args.bad)
        py, nat = JsonCodec(signal), NativeJsonCodec(signal)
        variants[f"{signal} decode python"] = ((lambda c=py, bs=batches: [c.decode(b) for b in bs]), args.records)
        variants[f"{signal} decode native"] = ((lambda c=nat, bs=batches: [c.decode(b) for b in bs]), args.records)
        if args.avro_only:
            if signal != "event":
                variants[f"{signal} orjson"] = ((lambda bs=batches: orjson_all(bs)), args.records)
            avro = _avro_batches(signal, args.records, args.bad)
            avro_codecs: tuple[tuple[str, Any], ...] = (
                ("python", AvroCodec(signal)),
                ("native", NativeAvroCodec(signal)),
            )
            for name, codec in avro_codecs:
                variants[f"{signal} avro {name}"] = ((lambda c=codec, bs=avro: [c.decode(b) for b in bs]), args.records)
    from schemas.codecs.native_json import NativeOtlpCodec
    from schemas.codecs.otlp_codec import OtlpCodec

    for otlp_signal in () if args.avro_only else ("span", "log", "metric"):
        messages = _otlp_batches(args.records, args.otlp_items, signal=otlp_signal)
        items = sum(NativeOtlpCodec(otlp_signal).decode(b).table.num_rows for b in messages)
        for name, codec in (
            ("python", OtlpCodec(otlp_signal, encoding="otlp_proto")),
            ("native", NativeOtlpCodec(otlp_signal)),
        ):
            variants[f"{otlp_signal} otlp {name}"] = ((lambda c=codec, ms=messages: [c.decode(b) for b in ms]), items)
        jsons = _otlp_batches(args.records, args.otlp_items, signal=otlp_signal, encoding="otlp_json")
        for name, codec in (
            ("python", OtlpCodec(otlp_signal, encoding="otlp_json")),
            ("native", NativeOtlpCodec(otlp_signal, encoding="otlp_json")),
        ):
            variants[f"{otlp_signal} otlp_json {name}"] = ((lambda c=codec, ms=jsons: [c.decode(b) for b in ms]), items)
    graphs = {d: _graph(d) for d in (() if args.otlp_only or args.avro_only else ("python", "native"))}
    for d, g in graphs.items():
        g.process(events[0])  # warm caches and lazy imports outside the clock
        variants[f"event path {d}"] = ((lambda g=g: [g.process(b) for b in events]), args.records)
        variants[f"event path {d} clean"] = ((lambda g=g: [g.process(b) for b in clean]), args.records)

    def cold(g, batches):
        """The native hot path with its scrub caches emptied first (each distinct text and
        user id rewritten / pseudonymized anew, each key judged anew, as on first sight), so replaying the same
        batches every round does not flatter it."""
        s = g.flows["events"].scrubber
        s._text_cache.clear()
        s._pseudonyms.clear()
        for verdicts in ("_key_verdicts", "_raw_key_verdicts"):  # the sensitive-key verdicts, where kept
            getattr(s, verdicts, {}).clear()
        return [g.process(b) for b in batches]

    if graphs:
        variants["event path native cold"] = ((lambda g=graphs["native"]: cold(g, events)), args.records)
        for d in ("python", "native"):
            g = _graph(d, dedupe=False)
            g.process(events[0])
            variants[f"event path {d} no dedupe"] = ((lambda g=g: [g.process(b) for b in events]), args.records)

    if args.gc:  # every variant's data stays alive (the heap the collector walks), only these are timed
        return _gc_measure(args, variants)
    rates, _ = _measure(variants, args.rounds)
    pairs = {
        "path native / path python": ("event path native", "event path python"),
        "path native / orjson": ("event path native", "event orjson"),
        "path native cold / path python": ("event path native cold", "event path python"),
        "path native clean / orjson": ("event path native clean", "event orjson"),
        "path native clean / path python clean": ("event path native clean", "event path python clean"),
        "decode native / decode python (event)": ("event decode native", "event decode python"),
        "path native / path python, no dedupe": ("event path native no dedupe", "event path python no dedupe"),
        "path native / orjson, no dedupe": ("event path native no dedupe", "event orjson"),
    }
    for sig in args.signals.split(","):
        pairs[f"{sig} avro native / python"] = (f"{sig} avro native", f"{sig} avro python")
        pairs[f"{sig} avro native / json native"] = (f"{sig} avro native", f"{sig} decode native")
        pairs[f"{sig} avro native / orjson"] = (f"{sig} avro native", f"{sig} orjson")
    for sig in ("span", "log", "metric"):
        pairs[f"{sig} otlp native / python"] = (f"{sig} otlp native", f"{sig} otlp python")
        pairs[f"{sig} otlp_json native / python"] = (f"{sig} otlp_json native", f"{sig} otlp_json python")
    _report(args, rates, pairs)
    return 0


def _measure(
    variants: dict[str, tuple], rounds: int, setups: dict | None = None
) -> tuple[dict[str, float], dict[str, float]]:
    """Records (items) per CPU-second of each variant: the best and the median of ``rounds``
    interleaved rounds; ``setups[name]``, if any, runs before each timed call of ``name``,
    off the clock."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (fn, _n) in variants.items():
            if setups and name in setups:
                setups[name]()
            t = time.process_time()
            fn()
            times[name].append(time.process_time() - t)
    rates = {name: variants[name][1] / min(ts) for name, ts in times.items()}
    medians = {name: variants[name][1] / statistics.median(ts) for name, ts in times.items()}
    for name, r in rates.items():
        unit = "items" if "otlp" in name else "records"
        print(
            f"{name:28s}{r:>12,.0f} {unit}/s = {1e6 / r:6.2f} us each (CPU time, best of {rounds}; "
            f"median {1e6 / medians[name]:.2f} us)"
        )
    return rates, medians


def _report(args, rates: dict[str, float], pairs: dict[str, tuple[str, str]]) -> None:
    """Print the ratios of ``pairs``, the load and the JSON line."""
    ratio = {k: rates[a] / rates[b] for k, (a, b) in pairs.items() if a in rates and b in rates}
    for k, v in ratio.items():
        print(f"{k:40s}{v:6.2f}x")
    load = os.getloadavg()[0]
    print(f"(1-minute load average: {load:.1f} on {os.cpu_count()} cores)")
    print(
        json.dumps(
            {
                "records_per_s": rates,
                "ratios": ratio,
                "meta": {"records": args.records, "rounds": args.rounds, "bad": args.bad, "load_avg_1m": load},
            }
        )
    )


def _gc_measure(args, built: dict[str, tuple]) -> int:
    """``--gc``: ``event orjson`` and the event path (both decoders) of ``built`` under the
    run processes' GC setting and under Python's defaults, alternating in this process; the
    other variants are built (their data alive, as in the whole bench) but not timed."""
    import gc

    from core.gc_tuning import tune_gc
    from pipelines.spec import ProcessSpec

    def run_setting() -> None:
        gc.unfreeze()
        tune_gc(ProcessSpec().gc_young_threshold)

    def python_setting() -> None:  # no collection first: a process on the defaults never has one out of turn
        gc.unfreeze()
        gc.set_threshold(700, 10, 10)

    variants: dict[str, tuple] = {}
    setups = {}
    names = [n for n in ("event orjson", "event path python", "event path native") if n in built]
    for setting, setup in (("run", run_setting), ("python", python_setting)):
        for name in names:
            variants[f"{name} gc {setting}"] = built[name]
            setups[f"{name} gc {setting}"] = setup
    live = sum(1 for _ in gc.get_objects())
    print(f"({live:,} objects tracked by the collector before the first round)")
    rates, medians = _measure(variants, args.rounds, setups)
    rates.update({f"{name} (median)": r for name, r in medians.items()})
    pairs = {}
    for setting in ("run", "python"):
        pairs[f"path native / path python, gc {setting}"] = (
            f"event path native gc {setting}",
            f"event path python gc {setting}",
        )
        pairs[f"path native / orjson, gc {setting}"] = (f"event path native gc {setting}", f"event orjson gc {setting}")
    for name in names:
        pairs[f"{name}: gc run / gc python"] = (f"{name} gc run", f"{name} gc python")
        pairs[f"{name}: gc run / gc python (medians)"] = (f"{name} gc run (median)", f"{name} gc python (median)")
    _report(args, rates, pairs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
