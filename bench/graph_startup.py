"""Graph build start-up and the enrich step's CPU, two source trees in one run.

Each measurement is a fresh process (``--round``) on one tree: it builds the default spec's
``PipelineGraph`` twice (the first build pays the geo and user-agent tables, the second
shows what a process pays per further graph), then runs the product-event flow over the
generator's events twice with the graph's enrich step timed (the first pass with the
lookups' answer caches empty, the second with them full). Wall and CPU time
(``time.process_time``: the whole process, threads included). The working tree (``.``) is
measured twice per round: with an empty ``$OBSFLOW_CACHE`` (``cold``: the country index is
built and written) and with the one written then (``warm``). Rounds interleave the trees:
the baseline first in each round, or last with ``--this-first``.

    python bench/graph_startup.py c83c1a9 . [--records 50000] [--rounds 5] [--this-first]

The last line of the output is one JSON object with every figure (medians over rounds)."""

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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hotpath_ab import export  # noqa: E402 - the same git-archive export

START_MS = 1_760_000_000_000


def one_round(tree: str, records: int) -> dict[str, float]:
    """Seconds of wall and CPU of two graph builds, and CPU seconds per record of the
    enrich step over ``records`` events (cold and warm answer caches), on ``tree``."""
    sys.path.insert(0, tree)
    os.chdir(tree)
    os.environ.setdefault("OBSFLOW_PSEUDONYM_KEY", "benchmark-key-0123456789")
    import yaml

    from core.stats import RunStats
    from pipelines import DEFAULT_SPEC
    from pipelines.graph import PipelineGraph
    from pipelines.loader import parse_spec
    from sources.generator import partition_stream
    from transforms.batch import RawBatch
    from transforms.enrich import Enricher

    d = yaml.safe_load(DEFAULT_SPEC.read_text())
    d["storage"]["catalog"]["warehouse"] = "/nonexistent/bench"  # never opened
    spec = parse_spec(d)
    out: dict[str, float] = {}
    graphs = []
    for name in ("first", "second"):
        w, c = time.perf_counter(), time.process_time()
        graphs.append(PipelineGraph(spec, counters=RunStats()))
        out[f"{name}_build_wall"] = time.perf_counter() - w
        out[f"{name}_build_cpu"] = time.process_time() - c
    values = [g.value for g in partition_stream("event", "bench", 0, records, start_ms=START_MS, bad_fraction=0.01)]
    source = next(f.source for f in spec.flows if spec.source(f.source).signal == "event")
    batches = [
        RawBatch(source, "bench", 0, values[k : k + 5000], list(range(k, k + 5000)), [START_MS] * 5000)
        for k in range(0, len(values), 5000)
    ]
    flow = graphs[1].flows[source]
    spent = [0.0]

    def timed(step):
        def call(batch):
            c = time.process_time()
            try:
                return step(batch)
            finally:
                spent[0] += time.process_time() - c

        return call

    flow.post = [timed(s) if isinstance(s, Enricher) else s for s in flow.post]
    for name in ("cold", "warm"):
        spent[0] = 0.0
        for b in batches:
            graphs[1].process(b)
        out[f"enrich_cpu_us_{name}"] = spent[0] / records * 1e6
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--round", help=argparse.SUPPRESS)  # internal: one measurement on this folder
    ap.add_argument("trees", nargs=2, help="the baseline revision and . (the working tree)")
    for name, default in (("--records", 50_000), ("--rounds", 5)):
        ap.add_argument(name, type=int, default=default)
    ap.add_argument("--this-first", action="store_true", help="measure the working tree first in each round")
    args = ap.parse_args()
    if args.round:
        print(json.dumps(one_round(args.round, args.records)))
        return 0
    base, this = args.trees
    results: dict[str, list[dict[str, float]]] = {"baseline": [], "cold": [], "warm": []}
    with tempfile.TemporaryDirectory(prefix="graph-startup-") as tmp:
        folders = {base: export(base, Path(tmp) / "base"), this: export(this, Path(tmp) / "this")}

        def measure(tree: str, cache: Path) -> dict[str, float]:
            env = dict(os.environ, PYTHONPATH=folders[tree], OBSFLOW_CACHE=str(cache))
            res = subprocess.run(
                [sys.executable, __file__, *args.trees, "--records", str(args.records), "--round", folders[tree]],
                cwd=folders[tree],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            return json.loads(res.stdout.strip().splitlines()[-1])

        for k in range(args.rounds):
            cache = Path(tmp) / f"cache{k}"
            if not args.this_first:
                results["baseline"].append(measure(base, cache))
            results["cold"].append(measure(this, cache))
            results["warm"].append(measure(this, cache))
            if args.this_first:
                results["baseline"].append(measure(base, cache))
    med = {kind: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for kind, rs in results.items()}
    for kind, m in med.items():
        print(
            f"{kind:9s} first build {m['first_build_wall']:.3f} s wall / {m['first_build_cpu']:.3f} s CPU, "
            f"second {m['second_build_wall']:.3f} / {m['second_build_cpu']:.3f} s; enrich "
            f"{m['enrich_cpu_us_cold']:.2f} us/record (cold caches), {m['enrich_cpu_us_warm']:.2f} (warm)"
        )
    load = os.getloadavg()[0]
    print(f"(1-minute load average: {load:.1f} on {os.cpu_count()} cores)")
    meta = {"records": args.records, "rounds": args.rounds, "load_avg_1m": load}
    print(json.dumps({"median": med, "rounds": results, "meta": meta}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
