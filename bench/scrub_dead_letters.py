"""Cost of scrubbing dead-letter payloads (``Scrubber.scrub_raw``), against the scrubber of
another git revision in the same run.

Payloads: a cut-short 64 kB JSON record of LLM usage rows (``input_tokens`` keys: no
sensitive key, but the word ``token``), the same with ``password`` keys, 1 MB binaries of
one letter and of ``password `` repeated (the worst case of the framed-key search), an
Avro log with sensitive attributes, and a batch of 1,000 such logs (a producer with the
wrong schema: every record a dead letter). Per case, the baseline's scrubber and this
checkout's run in alternating rounds (CPU time, best of ``--rounds``), default patterns,
the ``native`` hot path.

Run: ``python bench/scrub_dead_letters.py [--baseline-rev main] [--rounds 5]``; the last
line is JSON."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def payloads() -> dict[str, list[bytes]]:
    """Each case: the payloads of one ``scrub_raw`` call."""
    from schemas.codecs import encode_confluent

    log = {
        "timestamp": 1,
        "level": "INFO",
        "service": "svc",
        "message": "m",
        "trace_id": None,
        "span_id": None,
        "request_id": None,
        "user_id": None,
        "host": None,
        "env": None,
        "attributes": {"token": "t" * 24, "http.request.header.authorization": "Basic dXNlcjpwYXNz", "route": "/a"},
    }
    avro = [encode_confluent("log", {**log, "timestamp": i}) for i in range(1000)]
    return {
        "64 kB JSON, input_tokens keys": [
            json.dumps({"usage": [{"input_tokens": i, "note": "x" * 50} for i in range(1000)]}).encode()[:-1]
        ],
        "64 kB JSON, password keys": [
            json.dumps({"rows": [{"password": f"p{i}", "note": "x" * 50} for i in range(1000)]}).encode()[:-1]
        ],
        "1 MB binary, one letter": [b"\x00" + b"y" * 1_000_000 + b"\x01"],
        "1 MB binary, 'password ' repeated": [b"\x00" + b"password " * 116_000 + b"\x01"],
        "Avro log, 3 attributes": avro[:1],
        "1,000 Avro logs in one call": avro,
        "a 5,000-event batch's dead letters (1% malformed)": event_dead_letters(),
    }


def event_dead_letters() -> list[bytes]:
    """The payloads the events path (``bench/decoder.py``'s ``path native``) hands to
    ``scrub_raw`` for the generator's first batch of 5,000 events, 1% malformed (about 50,
    four of them 66 kB records)."""
    from bench.decoder import _batches, _graph
    from transforms.scrub import Scrubber

    captured: list[list[bytes]] = []
    scrub_raw = Scrubber.scrub_raw

    def capture(self, values):
        captured.append(list(values))
        return scrub_raw(self, values)

    setattr(Scrubber, "scrub_raw", capture)  # noqa: B010 - patched for this bench process
    try:
        _graph("native").process(_batches("event", 5000, 0.01)[0])
    finally:
        setattr(Scrubber, "scrub_raw", scrub_raw)  # noqa: B010
    return captured[0]


def load_baseline(rev: str):
    """transforms/scrub.py of ``rev`` as a module of its own."""
    src = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:transforms/scrub.py"], check=True, capture_output=True
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="obsflow-bench-")) / "baseline_scrub.py"
    path.write_bytes(src)
    spec = importlib.util.spec_from_file_location("baseline_scrub", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline-rev", default="main")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    from pipelines.spec import PrivacySpec, ScrubStep
    from transforms import scrub

    base = load_baseline(args.baseline_rev)
    privacy = PrivacySpec(pseudonym_key="benchmark-key-0123456789")
    scrubbers = {
        "baseline": base.Scrubber("log", ScrubStep(kind="scrub"), privacy, hotpath="native"),
        "this": scrub.Scrubber("log", ScrubStep(kind="scrub"), privacy, hotpath="native"),
    }
    result: dict[str, dict[str, float]] = {}
    for name, values in payloads().items():
        best = {label: float("inf") for label in scrubbers}
        for _ in range(args.rounds):
            for label, s in scrubbers.items():
                t = time.process_time()
                s.scrub_raw(values)
                best[label] = min(best[label], time.process_time() - t)
        result[name] = {label: round(1000 * v, 2) for label, v in best.items()}
        print(f"{name}: baseline {result[name]['baseline']} ms, this {result[name]['this']} ms (CPU, best)")
    load = os.getloadavg()[0]
    print(f"1-minute load: {load:.2f}")
    print(json.dumps({"ms_cpu_best": result, "load_1m": load, "baseline_rev": args.baseline_rev}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
