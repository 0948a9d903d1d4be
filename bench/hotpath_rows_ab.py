"""Validation, ``to_rows``, enrichment and ``finish`` CPU per record: a base tree's
``transforms/validate.py``, ``transforms/shape.py`` and ``transforms/enrich.py`` against
this tree's, in one process, on the same decoded generator events (1% malformed unless
``--bad 0``, 5,000 a batch), rounds interleaved, best round of each, per step. The
scrubbing between ``to_rows`` and enrichment is this tree's for both (untimed). The
outputs (finished tables, rejects) are checked equal first.

The base tree is a folder holding the older files (e.g. ``git archive 7c7c0ea | tar -x -C /tmp/base``).

    python bench/hotpath_rows_ab.py /tmp/base [--records 40000] [--rounds 9] [--bad 0.01]"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OBSFLOW_PSEUDONYM_KEY", "benchmark-key-0123456789")

STEPS = ("validate", "to_rows", "enrich", "finish")


def _load(base: Path, name: str):
    """``base``'s ``transforms/<name>.py`` as a module of its own (``base_<name>``)."""
    spec = importlib.util.spec_from_file_location(f"base_{name}", base / "transforms" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"base_{name}"] = module
    spec.loader.exec_module(module)
    return module


def main() -> int:
    from bench import decoder as bd
    from core.encodings import Encodings
    from transforms import enrich, shape, validate
    from transforms.door_verdicts import apply_door_verdicts

    ap = argparse.ArgumentParser()
    ap.add_argument("base", type=Path, help="a folder holding the base tree's files")
    ap.add_argument("--records", type=int, default=40_000)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--bad", type=float, default=0.01)
    args = ap.parse_args()
    flow = bd._graph("native").flows["events"]
    (validator,) = flow.pre
    scrub, enricher = flow.post
    decoded = [apply_door_verdicts(flow.codec.decode(r)) for r in bd._batches("event", args.records, args.bad)]
    modules = {
        "base": (_load(args.base, "validate"), _load(args.base, "shape"), _load(args.base, "enrich")),
        "this": (validate, shape, enrich),
    }
    steps = {}
    for which, (v, s, e) in modules.items():
        steps[which] = (
            v.Validator("event", validator.step, json_hints=True, leave_drops=True),
            s,
            e.Enricher("event", enricher.step, {}),
        )

    def one(which: str) -> tuple[dict[str, float], list]:
        v, s, e = steps[which]
        spent = dict.fromkeys(STEPS, 0.0)
        outs = []
        for d in decoded:
            b = copy.copy(d)
            b.encodings, b.rejects = Encodings(), copy.deepcopy(d.rejects)
            b.raw = copy.copy(d.raw)  # without numpy copies of its lists made in an earlier pass
            t = time.process_time()
            b = v(b)
            t1 = time.process_time()
            b = s.to_rows("event", b)
            t2 = time.process_time()
            b = scrub(b)
            t3 = time.process_time()
            b = e(b)
            t4 = time.process_time()
            out = s.finish(b, flow.table, flow.extra)
            t5 = time.process_time()
            for k, dt in zip(STEPS, (t1 - t, t2 - t1, t4 - t3, t5 - t4)):
                spent[k] += dt
            outs.append((out, b.rejects.indices, b.rejects.reasons, b.rejects.details))
        return spent, outs

    base_out, this_out = one("base")[1], one("this")[1]
    assert all(a[0].equals(b[0]) and a[1:] == b[1:] for a, b in zip(base_out, this_out)), "outputs differ"
    best = {w: dict.fromkeys(STEPS, float("inf")) for w in ("base", "this")}
    for _ in range(args.rounds):
        for which in best:
            spent = one(which)[0]
            for k in STEPS:
                best[which][k] = min(best[which][k], spent[k])
    for k in (*STEPS, "sum"):
        b = sum(best["base"].values()) if k == "sum" else best["base"][k]
        t = sum(best["this"].values()) if k == "sum" else best["this"][k]
        n = args.records
        print(f"{k:9s} base {b / n * 1e6:.3f} us  this {t / n * 1e6:.3f} us a record  ({(b - t) / n * 1e6:+.3f})")
    print(
        f"(CPU time, best of {args.rounds} per step; 1-minute load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
