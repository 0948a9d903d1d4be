"""Seed corpora for the cargo-fuzz targets of the compiled decoder (native/fuzz): the fuzz
suite's good records (tests/fuzz/corpus.py ``seeds``) and a fixed sample of their mutants,
one file per input, written where libFuzzer reads its corpus.

``python -m tests.fuzz.native_seeds DIR`` writes ``DIR/json`` (JSON records of every
signal, and OTLP/JSON messages) and ``DIR/otlp`` (OTLP protobuf and OTLP/JSON messages of
spans, logs and metrics: the target runs the OTLP/JSON decoder too), ``DIR/otlp_json``
(OTLP/JSON messages: the direct reader against its transcoding oracle) and ``DIR/avro``
(Confluent-framed Avro records of every signal); files already there
(libFuzzer's own finds) are kept."""

from __future__ import annotations

import hashlib
import pathlib
import random
import sys

from tests.fuzz.corpus import SIGNALS, mutate, seeds

#: fuzz target -> the (signal, codec) pairs whose records seed it
TARGETS = {
    "json": [(s, "json") for s in SIGNALS] + [(s, "otlp_json") for s in ("span", "log", "metric")],
    "otlp": [(s, c) for c in ("otlp_proto", "otlp_json") for s in ("span", "log", "metric")],
    "otlp_json": [(s, "otlp_json") for s in ("span", "log", "metric")],
    "avro": [(s, "avro") for s in SIGNALS],
}


def write_seeds(root: pathlib.Path, per_pair: int = 24, mutants: int = 48) -> dict[str, int]:
    """Write the seeds of every target under ``root/<target>`` (file name: the content's
    SHA-1, so a rerun adds nothing twice); returns the number of seed inputs per target."""
    counts = {}
    for target, pairs in TARGETS.items():
        out = root / target
        out.mkdir(parents=True, exist_ok=True)
        inputs: list[bytes] = []
        for signal, codec in pairs:
            good = [s.value for s in seeds(signal, codec, per_pair)]
            inputs += good
            rng = random.Random(f"{target}/{signal}/{codec}")
            for _ in range(mutants):
                m = mutate(rng.choice(good), rng.choice(good), signal, codec, rng)
                if m:
                    inputs.append(m)
        for data in inputs:
            (out / hashlib.sha1(data).hexdigest()).write_bytes(data)
        counts[target] = len(set(inputs))
    return counts


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.fuzz.native_seeds DIR")
    for name, n in write_seeds(pathlib.Path(sys.argv[1])).items():
        print(f"native fuzz seeds: {n} inputs for target {name}")
